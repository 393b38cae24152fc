//! `[web]`: the dashboard (`gridmon web`): where it listens, who may log in, and with which key it
//! signs the commands its operators send.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{invalid, ConfigError};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebConfig {
    /// Address and port. Without `users` it must be a loopback address (the dashboard is then
    /// read-only and open to anyone on the machine).
    pub listen: String,
    /// Who may log in. Empty: no login, read-only, loopback only.
    pub users: Vec<WebUser>,
    /// The dashboard's operator key (an nkey seed file) for the commands its operators send;
    /// default `commands.key_file`. Agents must list its public key in `commands.issuers`.
    pub key_file: Option<PathBuf>,
    /// How long a login lasts without activity.
    #[serde(with = "humantime_serde")]
    pub session_ttl: Duration,
    /// How often the real-time view is pushed to each browser.
    #[serde(with = "humantime_serde")]
    pub push_every: Duration,
    /// Points of per-node history kept in memory for the real-time line charts.
    pub live_points: usize,
    /// How long a node's last report is kept after it goes quiet (then it leaves the live view).
    #[serde(with = "humantime_serde")]
    pub forget_after: Duration,
    /// Longest range the history view may ask for.
    #[serde(with = "humantime_serde")]
    pub history_max_range: Duration,
}

impl Default for WebConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            users: Vec::new(),
            key_file: None,
            session_ttl: Duration::from_secs(12 * 3600),
            push_every: Duration::from_secs(1),
            live_points: 120,
            forget_after: Duration::from_secs(3600),
            history_max_range: Duration::from_secs(90 * 86_400),
        }
    }
}

/// One dashboard user, `[[web.users]]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebUser {
    pub name: String,
    /// An Argon2 hash in PHC form (`$argon2id$…`), as `gridmon hash-password` prints it.
    pub password_hash: String,
    pub role: WebRole,
}

/// `viewer` sees everything; `operator` may also act (start, stop, restart, degrade, deploy,
/// upgrade) through signed commands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebRole {
    #[default]
    Viewer,
    Operator,
}

impl WebConfig {
    /// Checks the address against the login rule: no users, loopback only.
    pub fn check_listen(&self, listen: &str) -> Result<SocketAddr, String> {
        let addr: SocketAddr = listen
            .parse()
            .map_err(|_| format!("{listen:?} is not an address:port (e.g. 127.0.0.1:8080)"))?;
        if self.users.is_empty() && !addr.ip().is_loopback() {
            return Err(format!(
                "{listen} is not a loopback address: without [[web.users]] the dashboard is \
                 read-only and serves this machine only; add users to listen elsewhere"
            ));
        }
        Ok(addr)
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        self.check_listen(&self.listen)
            .map_err(|m| invalid("web.listen", m))?;
        if self.session_ttl < Duration::from_secs(60) {
            return Err(invalid("web.session_ttl", "at least 1m"));
        }
        if self.push_every < Duration::from_millis(100) {
            return Err(invalid("web.push_every", "at least 100ms"));
        }
        if !(2..=3600).contains(&self.live_points) {
            return Err(invalid("web.live_points", "between 2 and 3600"));
        }
        if self.history_max_range < Duration::from_secs(3600) {
            return Err(invalid("web.history_max_range", "at least 1h"));
        }
        let mut names = std::collections::HashSet::new();
        for (i, u) in self.users.iter().enumerate() {
            let field = format!("web.users[{i}]");
            if u.name.trim().is_empty()
                || u.name.len() > 64
                || !u
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '@'))
            {
                return Err(invalid(
                    &format!("{field}.name"),
                    "1 to 64 of letters, digits, `_`, `-`, `.` and `@`",
                ));
            }
            if !names.insert(u.name.as_str()) {
                return Err(invalid(&format!("{field}.name"), "listed twice"));
            }
            if !u.password_hash.starts_with("$argon2") {
                return Err(invalid(
                    &format!("{field}.password_hash"),
                    "an Argon2 PHC string ($argon2id$…); `gridmon hash-password` makes one",
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_users_means_loopback_only() {
        let w = WebConfig::default();
        assert!(w.check_listen("127.0.0.1:9000").is_ok());
        assert!(w.check_listen("[::1]:9000").is_ok());
        let e = w.check_listen("0.0.0.0:8080").unwrap_err();
        assert!(e.contains("loopback"), "{e}");
        let with_users = WebConfig {
            users: vec![WebUser {
                name: "alice".into(),
                password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
                role: WebRole::Operator,
            }],
            ..Default::default()
        };
        assert!(with_users.check_listen("0.0.0.0:8080").is_ok());
        assert!(with_users.validate().is_ok());
    }

    #[test]
    fn bad_users_are_named() {
        let mut w = WebConfig {
            users: vec![WebUser {
                name: "bob".into(),
                password_hash: "plaintext".into(),
                role: WebRole::Viewer,
            }],
            ..Default::default()
        };
        let e = w.validate().unwrap_err().to_string();
        assert!(e.contains("web.users[0].password_hash"), "{e}");
        w.users[0].password_hash = "$argon2id$x".into();
        w.users.push(w.users[0].clone());
        let e = w.validate().unwrap_err().to_string();
        assert!(
            e.contains("web.users[1].name") && e.contains("twice"),
            "{e}"
        );
    }
}
