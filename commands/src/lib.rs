//! Child processes and, with the supervisor issue, the supervisor state machine and signed commands.
//!
//! Knows nothing of NATS: the bus layer hands it decoded requests.

pub mod child;
