//! Child processes, the supervisor of a node's worker programs and its releases.
//!
//! Knows nothing of NATS: the bus layer hands it decoded requests and publishes what it reports.

pub mod child;
pub mod model;
pub mod release;
pub mod spec;
pub mod supervisor;
