//! Who a publisher is: the cluster, group and node tokens, and the rules every token obeys.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Words that follow the prefix for non-telemetry subjects; no cluster may take one.
pub const RESERVED: [&str; 5] = ["cmd", "alarm", "event", "audit", "inventory"];

/// Longest token accepted; keeps subjects and database keys bounded.
pub const MAX_TOKEN_LEN: usize = 128;

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("{field} is empty")]
    Empty { field: String },
    #[error("{field} = {value:?} contains {found:?}; tokens may not contain '.', '*', '>', whitespace or control characters")]
    BadChar {
        field: String,
        value: String,
        found: char,
    },
    #[error(
        "{field} = {value:?} is a reserved word (reserved: cmd, alarm, event, audit, inventory)"
    )]
    Reserved { field: String, value: String },
    #[error("{field} is {len} bytes long; at most {MAX_TOKEN_LEN} are allowed")]
    TooLong { field: String, len: usize },
}

/// Checks one subject token; `field` names the config key in the error.
pub fn validate_token(field: &str, value: &str) -> Result<(), TokenError> {
    if value.is_empty() {
        return Err(TokenError::Empty {
            field: field.into(),
        });
    }
    if value.len() > MAX_TOKEN_LEN {
        return Err(TokenError::TooLong {
            field: field.into(),
            len: value.len(),
        });
    }
    if let Some(found) = value
        .chars()
        .find(|c| matches!(c, '.' | '*' | '>') || c.is_whitespace() || c.is_control())
    {
        return Err(TokenError::BadChar {
            field: field.into(),
            value: value.into(),
            found,
        });
    }
    if RESERVED.contains(&value) {
        return Err(TokenError::Reserved {
            field: field.into(),
            value: value.into(),
        });
    }
    Ok(())
}

/// A node's place in the hierarchy. Construct through [`NodeId::new`], which validates.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeId {
    pub cluster: String,
    pub group: String,
    pub node: String,
}

impl NodeId {
    pub fn new(
        cluster: impl Into<String>,
        group: impl Into<String>,
        node: impl Into<String>,
    ) -> Result<Self, TokenError> {
        let id = Self {
            cluster: cluster.into(),
            group: group.into(),
            node: node.into(),
        };
        validate_token("identity.cluster", &id.cluster)?;
        validate_token("identity.group", &id.group)?;
        validate_token("identity.node", &id.node)?;
        Ok(id)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.cluster, self.group, self.node)
    }
}

/// The machine's host name, made into a valid node token (dots of a FQDN become `-`).
pub fn hostname_token() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let cleaned: String = raw
        .trim()
        .chars()
        .map(|c| {
            if matches!(c, '.' | '*' | '>') || c.is_whitespace() || c.is_control() {
                '-'
            } else {
                c
            }
        })
        .collect();
    if cleaned.is_empty() || RESERVED.contains(&cleaned.as_str()) {
        format!("node-{cleaned}")
    } else {
        cleaned
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(value: &str, ok: bool) {
        assert_eq!(validate_token("f", value).is_ok(), ok, "{value:?}");
    }

    #[test]
    fn tokens() {
        check("web-01", true);
        check("rack_7", true);
        check("节点", true);
        check("", false);
        check("a.b", false);
        check("a*", false);
        check(">", false);
        check("a b", false);
        check("a\tb", false);
        check("a\u{0}", false);
        check("cmd", false);
        check("inventory", false);
        check("Cmd", true);
        check(&"x".repeat(MAX_TOKEN_LEN), true);
        check(&"x".repeat(MAX_TOKEN_LEN + 1), false);
    }

    #[test]
    fn error_names_the_field() {
        let e = NodeId::new("c", "bad.group", "n").unwrap_err();
        assert!(e.to_string().contains("identity.group"), "{e}");
        let e = NodeId::new("alarm", "g", "n").unwrap_err();
        assert!(
            e.to_string().contains("identity.cluster") && e.to_string().contains("reserved"),
            "{e}"
        );
    }

    #[test]
    fn hostname_is_a_valid_token() {
        let h = hostname_token();
        validate_token("node", &h).unwrap();
    }
}
