//! gridmon's bus layer: config, identity, subjects, the wire encoding, connection and publishing.
//!
//! This is the only crate that knows the wire encoding (MessagePack maps, [`wire`]) and the
//! subject grammar ([`subject`]). The collectors produce plain data; this crate frames and ships it.

pub mod command;
pub mod config;
pub mod connect;
pub mod frame;
pub mod guard;
pub mod identity;
pub mod leader;
pub mod publish;
pub mod registry;
pub mod sketch;
pub mod skim;
pub mod subject;
pub mod wire;

pub use config::{Config, ConfigError, Overrides};
pub use identity::NodeId;
pub use subject::{Family, Parsed, Scope, ScopePattern, Subjects};
