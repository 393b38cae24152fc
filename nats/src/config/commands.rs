//! `[commands]`: who may command this node's supervisor, and how `gridmon ctl` finds and signs.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{invalid, ConfigError};
use crate::command::Op;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CommandsConfig {
    /// Whether the agent answers commands at all (report requests are always answered).
    pub enabled: bool,
    /// Lets `status`, `list`, `logs` and `collect` run without a signature.
    pub allow_unsigned_read: bool,
    /// How far an issuer's clock may be from the agent's.
    #[serde(with = "humantime_serde")]
    pub max_clock_skew: Duration,
    /// Where seen nonces are kept across restarts; default `<supervisor.dir>/command-nonces`.
    pub nonce_file: Option<PathBuf>,
    /// The local audit log (JSON lines); default `<supervisor.dir>/audit.log`.
    pub audit_file: Option<PathBuf>,
    /// Operator keys and what each may do (default deny).
    pub issuers: Vec<IssuerConfig>,
    /// The KV bucket of last-seen nodes, refreshed by agents and read by `gridmon ctl`.
    pub registry_bucket: String,
    /// How often an agent refreshes its registry entry.
    #[serde(with = "humantime_serde")]
    pub registry_every: Duration,
    /// `gridmon ctl`: a node whose entry is older than this many refresh periods is offline.
    pub offline_after: u32,
    /// `gridmon ctl`: the operator's key (an nkey seed file, from `gridmon keygen`);
    /// `GRIDMON_KEY_FILE` overrides.
    pub key_file: Option<PathBuf>,
    /// `gridmon ctl`: how long to wait for answers (deploy and upgrade wait 4 times as long).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// `gridmon ctl`: lifetime of a signed command (at most 60 s).
    #[serde(with = "humantime_serde")]
    pub expiry: Duration,
}

impl Default for CommandsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            allow_unsigned_read: false,
            max_clock_skew: Duration::from_secs(5),
            nonce_file: None,
            audit_file: None,
            issuers: Vec::new(),
            registry_bucket: "gridmon-registry".into(),
            registry_every: Duration::from_secs(10),
            offline_after: 3,
            key_file: None,
            timeout: Duration::from_secs(5),
            expiry: Duration::from_secs(30),
        }
    }
}

/// One operator key and its grants.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IssuerConfig {
    /// A name for audit records.
    pub name: String,
    /// The public nkey (`U…`), as `gridmon keygen` prints it.
    pub key: String,
    /// Operations allowed (`status`, `restart`, …), or `*`.
    pub ops: Vec<String>,
    /// Programs allowed: names, `prefix*` patterns, or `*`.
    pub programs: Vec<String>,
}

impl CommandsConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_clock_skew > Duration::from_secs(60) {
            return Err(invalid("commands.max_clock_skew", "at most 60s"));
        }
        if self.expiry.is_zero() || self.expiry > Duration::from_secs(60) {
            return Err(invalid("commands.expiry", "between 1ms and 60s"));
        }
        if self.registry_every < Duration::from_millis(100) {
            return Err(invalid("commands.registry_every", "at least 100ms"));
        }
        if self.offline_after == 0 {
            return Err(invalid("commands.offline_after", "at least 1"));
        }
        if self.timeout.is_zero() {
            return Err(invalid("commands.timeout", "must be positive"));
        }
        if self.registry_bucket.is_empty()
            || !self
                .registry_bucket
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(invalid(
                "commands.registry_bucket",
                "a bucket name is letters, digits, `_` and `-`",
            ));
        }
        let mut keys = std::collections::HashSet::new();
        for (i, is) in self.issuers.iter().enumerate() {
            let field = format!("commands.issuers[{i}]");
            if is.name.trim().is_empty() {
                return Err(invalid(&field, "name is empty"));
            }
            if !is.key.starts_with('U') || nkeys::KeyPair::from_public_key(&is.key).is_err() {
                return Err(invalid(
                    &format!("{field}.key"),
                    "not a public user nkey (U…); `gridmon keygen` prints one",
                ));
            }
            if !keys.insert(is.key.as_str()) {
                return Err(invalid(&format!("{field}.key"), "listed twice"));
            }
            for op in &is.ops {
                if op != "*" && Op::parse(op).is_none() {
                    return Err(invalid(
                        &format!("{field}.ops"),
                        format!("unknown operation {op:?}"),
                    ));
                }
            }
            for p in &is.programs {
                let body = p.strip_suffix('*').unwrap_or(p);
                if body.contains('*')
                    || !body
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                {
                    return Err(invalid(
                        &format!("{field}.programs"),
                        format!("{p:?}: a name, a `prefix*` pattern or `*`"),
                    ));
                }
            }
        }
        Ok(())
    }
}
