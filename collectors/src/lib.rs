//! Reads the machine: host metrics, the process table, hwmon and I2C sensors, inventory.
//!
//! Nothing here knows about NATS or any wire encoding: readers return the plain types of
//! [`model`]. Every reader takes its `/proc` and `/sys` roots from [`Roots`], so tests run
//! against fixture trees.

pub mod config;
pub mod error;
pub mod host;
pub mod hwmon;
pub mod i2c;
pub mod inventory;
pub mod model;
pub mod probe;
pub mod process;
mod procfs;

pub use error::CollectError;

use std::path::PathBuf;

/// Where the machine's pseudo filesystems are mounted. The host's are `/proc`, `/sys`, `/etc`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roots {
    pub proc: PathBuf,
    pub sys: PathBuf,
    pub etc: PathBuf,
}

impl Default for Roots {
    fn default() -> Self {
        Self {
            proc: "/proc".into(),
            sys: "/sys".into(),
            etc: "/etc".into(),
        }
    }
}

impl Roots {
    /// A fixture tree with `proc/`, `sys/` and `etc/` below `dir`.
    pub fn under(dir: impl Into<PathBuf>) -> Self {
        let dir = dir.into();
        Self {
            proc: dir.join("proc"),
            sys: dir.join("sys"),
            etc: dir.join("etc"),
        }
    }
}
