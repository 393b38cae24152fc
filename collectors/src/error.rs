//! Errors a collector reports to its caller.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    /// A file every sample needs (e.g. `/proc/stat`) could not be read: the roots are wrong or
    /// the machine is not Linux.
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A file had a shape the reader does not understand.
    #[error("cannot parse {path}: {what}")]
    Parse { path: PathBuf, what: String },
    /// An I2C bus or device could not be opened or read.
    #[error("i2c bus {bus} address {address:#04x}: {what}")]
    I2c { bus: u8, address: u16, what: String },
    /// The binary was built without a feature the config asks for.
    #[error("{0}")]
    Unsupported(String),
}
