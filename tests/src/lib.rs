//! Test harness: starts real `nats-server` and ClickHouse engine processes for integration tests.
//!
//! Nothing is skipped: a missing binary is an error that names `scripts/setup`.

pub mod child;
pub mod clickhouse;
pub mod nats_server;
mod wait;

pub use wait::eventually;

/// The command that installs everything the tests need.
pub const SETUP_HINT: &str =
    "run `scripts/setup` (installs nats-server, the Python ClickHouse engine and test clients)";
