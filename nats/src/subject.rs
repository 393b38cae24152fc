//! Builds and parses every gridmon subject; no other module formats a subject.
//!
//! The grammar (see `docs/subjects.md`), with `<p>` the configured prefix of one or more tokens:
//!
//! | subject | carries |
//! |---|---|
//! | `<p>` | grid rollup |
//! | `<p>.<cluster>` | cluster rollup |
//! | `<p>.<cluster>.<group>` | group rollup |
//! | `<p>.<cluster>.<group>.<node>` | node report |
//! | `<p>.<reserved>.<cluster>[.<group>[.<node>]]` | non-telemetry: `cmd`, `alarm`, `event`, `audit`, `inventory` |

use std::fmt;

use crate::identity::{validate_token, NodeId, TokenError, RESERVED};

/// The non-telemetry families; each is the token right after the prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    Cmd,
    Alarm,
    Event,
    Audit,
    Inventory,
}

impl Family {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Cmd => "cmd",
            Self::Alarm => "alarm",
            Self::Event => "event",
            Self::Audit => "audit",
            Self::Inventory => "inventory",
        }
    }

    fn from_token(t: &str) -> Option<Self> {
        Some(match t {
            "cmd" => Self::Cmd,
            "alarm" => Self::Alarm,
            "event" => Self::Event,
            "audit" => Self::Audit,
            "inventory" => Self::Inventory,
            _ => return None,
        })
    }
}

/// A place in the hierarchy: the grid, a cluster, a group or a node.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    Grid,
    Cluster { cluster: String },
    Group { cluster: String, group: String },
    Node(NodeId),
}

/// Whether the scope written `path` (as [`Scope`] displays it: `cluster[/group[/node]]`) lies
/// within `outer` (same form; empty for the whole grid).
pub fn path_within(path: &str, outer: &str) -> bool {
    outer.is_empty()
        || path == outer
        || path
            .strip_prefix(outer)
            .is_some_and(|rest| rest.starts_with('/'))
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Grid => f.write_str("grid"),
            Self::Cluster { cluster } => f.write_str(cluster),
            Self::Group { cluster, group } => write!(f, "{cluster}/{group}"),
            Self::Node(id) => id.fmt(f),
        }
    }
}

/// What a subject means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// A telemetry subject: a node report or a rollup of the scope.
    Telemetry(Scope),
    /// A non-telemetry subject of a family about a scope (never `Scope::Grid`).
    Other(Family, Scope),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubjectError {
    #[error("subject {0:?} does not start with the prefix {1:?}")]
    ForeignPrefix(String, String),
    #[error("subject {subject:?}: {why}")]
    Malformed { subject: String, why: String },
    #[error(transparent)]
    Token(#[from] TokenError),
}

/// Subject builder and parser for one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subjects {
    prefix: String,
}

impl Subjects {
    /// `prefix` is one or more dot-separated tokens, each a valid token (`grid`, `acme.grid`).
    pub fn new(prefix: impl Into<String>) -> Result<Self, TokenError> {
        let prefix = prefix.into();
        if prefix.is_empty() {
            return Err(TokenError::Empty {
                field: "nats.prefix".into(),
            });
        }
        for t in prefix.split('.') {
            validate_token("nats.prefix", t)?;
        }
        Ok(Self { prefix })
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The telemetry subject of a scope: a node report or a rollup.
    pub fn telemetry(&self, scope: &Scope) -> String {
        let mut s = self.prefix.clone();
        push_scope(&mut s, scope);
        s
    }

    /// `<p>.<cluster>.<group>.<node>`.
    pub fn node_report(&self, id: &NodeId) -> String {
        self.join(&[&id.cluster, &id.group, &id.node])
    }

    /// `<p>.<family>.<scope…>`, e.g. `grid.inventory.c.g.n` or `grid.alarm.c.g`.
    pub fn family(&self, family: Family, scope: &Scope) -> String {
        let mut s = self.prefix.clone();
        s.push('.');
        s.push_str(family.as_str());
        push_scope(&mut s, scope);
        s
    }

    /// Node reports of one group: `<p>.<cluster>.<group>.*`.
    pub fn group_members(&self, cluster: &str, group: &str) -> String {
        self.join(&[cluster, group, "*"])
    }

    /// Group rollups of one cluster: `<p>.<cluster>.*`.
    pub fn cluster_members(&self, cluster: &str) -> String {
        self.join(&[cluster, "*"])
    }

    /// Cluster rollups: `<p>.*`.
    pub fn grid_members(&self) -> String {
        self.join(&["*"])
    }

    /// Every node report of the grid: `<p>.*.*.*` (also matches 3-token non-telemetry
    /// subjects such as `<p>.alarm.<c>.<g>`: parse and skip those).
    pub fn all_node_reports(&self) -> String {
        self.join(&["*", "*", "*"])
    }

    /// Everything under the prefix: `<p>.>` (the bare `<p>` grid rollup is not included).
    pub fn everything(&self) -> String {
        self.join(&[">"])
    }

    /// What an operator's overview shows: every rollup (`<p>`, `<p>.*`, `<p>.*.*`), every alarm
    /// and every node event, without node reports; no message matches two of these.
    pub fn overview(&self) -> Vec<String> {
        let alarm = Family::Alarm.as_str();
        vec![
            self.prefix.clone(),
            self.join(&["*"]),
            self.join(&["*", "*"]),
            self.join(&[alarm, "*", "*"]),
            self.join(&[alarm, "*", "*", "*"]),
            self.family_all(Family::Event),
        ]
    }

    /// All subjects of one family: `<p>.<family>.>`.
    pub fn family_all(&self, family: Family) -> String {
        self.join(&[family.as_str(), ">"])
    }

    fn join(&self, tokens: &[&str]) -> String {
        let mut s = String::with_capacity(
            self.prefix.len() + tokens.iter().map(|t| t.len() + 1).sum::<usize>(),
        );
        s.push_str(&self.prefix);
        for t in tokens {
            s.push('.');
            s.push_str(t);
        }
        s
    }

    /// Parses a subject under this prefix; every token is validated.
    pub fn parse(&self, subject: &str) -> Result<Parsed, SubjectError> {
        let rest = match subject.strip_prefix(self.prefix.as_str()) {
            Some("") => return Ok(Parsed::Telemetry(Scope::Grid)),
            Some(r) if r.starts_with('.') => &r[1..],
            _ => {
                return Err(SubjectError::ForeignPrefix(
                    subject.into(),
                    self.prefix.clone(),
                ))
            }
        };
        let malformed = |why: &str| SubjectError::Malformed {
            subject: subject.into(),
            why: why.into(),
        };
        let tokens: Vec<&str> = rest.split('.').collect();
        if let Some(family) = Family::from_token(tokens[0]) {
            let scope = scope_of(&tokens[1..]).map_err(|e| match e {
                ScopeErr::Count => malformed("expected 1 to 3 tokens after the family word"),
                ScopeErr::Token(t) => SubjectError::Token(t),
            })?;
            if scope == Scope::Grid {
                return Err(malformed("a family word must be followed by a cluster"));
            }
            return Ok(Parsed::Other(family, scope));
        }
        let scope = scope_of(&tokens).map_err(|e| match e {
            ScopeErr::Count => malformed("expected at most 3 tokens after the prefix"),
            ScopeErr::Token(t) => SubjectError::Token(t),
        })?;
        Ok(Parsed::Telemetry(scope))
    }
}

enum ScopeErr {
    Count,
    Token(TokenError),
}

fn scope_of(tokens: &[&str]) -> Result<Scope, ScopeErr> {
    let check = |field: &str, t: &str| validate_token(field, t).map_err(ScopeErr::Token);
    Ok(match tokens {
        [] => Scope::Grid,
        [c] => {
            check("cluster", c)?;
            Scope::Cluster {
                cluster: (*c).into(),
            }
        }
        [c, g] => {
            check("cluster", c)?;
            check("group", g)?;
            Scope::Group {
                cluster: (*c).into(),
                group: (*g).into(),
            }
        }
        [c, g, n] => {
            check("cluster", c)?;
            check("group", g)?;
            check("node", n)?;
            Scope::Node(NodeId {
                cluster: (*c).into(),
                group: (*g).into(),
                node: (*n).into(),
            })
        }
        _ => return Err(ScopeErr::Count),
    })
}

fn push_scope(s: &mut String, scope: &Scope) {
    let mut push = |t: &str| {
        s.push('.');
        s.push_str(t);
    };
    match scope {
        Scope::Grid => {}
        Scope::Cluster { cluster } => push(cluster),
        Scope::Group { cluster, group } => {
            push(cluster);
            push(group);
        }
        Scope::Node(id) => {
            push(&id.cluster);
            push(&id.group);
            push(&id.node);
        }
    }
}

/// A scope an aggregator serves, from `aggregate.serve`: `grid`, `<cluster>` (also
/// `cluster:<cluster>`) or `<cluster>/<group>` (also `group:<cluster>/<group>`); `*` in place of a
/// name stands for any.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ScopePattern {
    Grid,
    Cluster {
        cluster: Option<String>,
    },
    Group {
        cluster: Option<String>,
        group: Option<String>,
    },
}

impl ScopePattern {
    pub fn parse(text: &str) -> Result<Self, String> {
        let name = |field: &str, t: &str| -> Result<Option<String>, String> {
            if t == "*" {
                return Ok(None);
            }
            validate_token(field, t).map_err(|e| format!("{text:?}: {e}"))?;
            Ok(Some(t.to_string()))
        };
        let group = |rest: &str| -> Result<Self, String> {
            let (c, g) = rest
                .split_once('/')
                .filter(|(_, g)| !g.contains('/'))
                .ok_or_else(|| format!("{text:?}: a group is written <cluster>/<group>"))?;
            Ok(Self::Group {
                cluster: name("cluster", c)?,
                group: name("group", g)?,
            })
        };
        if text == "grid" {
            return Ok(Self::Grid);
        }
        if let Some(c) = text.strip_prefix("cluster:") {
            return Ok(Self::Cluster {
                cluster: name("cluster", c)?,
            });
        }
        if let Some(rest) = text.strip_prefix("group:") {
            return group(rest);
        }
        if text.contains('/') {
            return group(text);
        }
        Ok(Self::Cluster {
            cluster: name("cluster", text)?,
        })
    }

    /// Whether a scope (a group, a cluster or the grid) is served by this pattern.
    pub fn matches(&self, scope: &Scope) -> bool {
        let is = |want: &Option<String>, got: &str| want.as_deref().is_none_or(|w| w == got);
        match (self, scope) {
            (Self::Grid, Scope::Grid) => true,
            (Self::Cluster { cluster }, Scope::Cluster { cluster: c }) => is(cluster, c),
            (
                Self::Group { cluster, group },
                Scope::Group {
                    cluster: c,
                    group: g,
                },
            ) => is(cluster, c) && is(group, g),
            _ => false,
        }
    }

    /// The subject carrying this pattern's inputs: node reports for groups, group rollups for
    /// clusters, cluster rollups for the grid. Wildcard subscriptions also match non-telemetry
    /// subjects of the same length; parse and skip those.
    pub fn inputs(&self, subjects: &Subjects) -> String {
        let t = |o: &Option<String>| o.clone().unwrap_or_else(|| "*".into());
        match self {
            Self::Grid => subjects.grid_members(),
            Self::Cluster { cluster } => subjects.cluster_members(&t(cluster)),
            Self::Group { cluster, group } => subjects.group_members(&t(cluster), &t(group)),
        }
    }

    /// The subject this pattern's rollups are published on (a wildcard for a wildcard pattern);
    /// a standby watches it to learn which windows the leader has published.
    pub fn outputs(&self, subjects: &Subjects) -> String {
        let t = |o: &Option<String>| o.clone().unwrap_or_else(|| "*".into());
        match self {
            Self::Grid => subjects.prefix().to_string(),
            Self::Cluster { cluster } => subjects.join(&[&t(cluster)]),
            Self::Group { cluster, group } => subjects.join(&[&t(cluster), &t(group)]),
        }
    }
}

impl fmt::Display for ScopePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = |o: &Option<String>| o.clone().unwrap_or_else(|| "*".into());
        match self {
            Self::Grid => f.write_str("grid"),
            Self::Cluster { cluster } => write!(f, "cluster:{}", t(cluster)),
            Self::Group { cluster, group } => write!(f, "group:{}/{}", t(cluster), t(group)),
        }
    }
}

/// True when `word` may not be used as a cluster name.
pub fn is_reserved(word: &str) -> bool {
    RESERVED.contains(&word)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_within_scopes() {
        assert!(path_within("c01/g01/n1", ""));
        assert!(path_within("c01/g01/n1", "c01"));
        assert!(path_within("c01/g01/n1", "c01/g01/n1"));
        assert!(!path_within("c011/g01/n1", "c01"));
        assert!(!path_within("c01", "c01/g01"));
    }

    fn id() -> NodeId {
        NodeId::new("eu", "rack1", "web-01").unwrap()
    }

    #[test]
    fn builds() {
        let s = Subjects::new("grid").unwrap();
        assert_eq!(s.node_report(&id()), "grid.eu.rack1.web-01");
        assert_eq!(s.telemetry(&Scope::Node(id())), "grid.eu.rack1.web-01");
        assert_eq!(
            s.telemetry(&Scope::Group {
                cluster: "eu".into(),
                group: "rack1".into()
            }),
            "grid.eu.rack1"
        );
        assert_eq!(
            s.telemetry(&Scope::Cluster {
                cluster: "eu".into()
            }),
            "grid.eu"
        );
        assert_eq!(s.telemetry(&Scope::Grid), "grid");
        assert_eq!(
            s.family(Family::Inventory, &Scope::Node(id())),
            "grid.inventory.eu.rack1.web-01"
        );
        assert_eq!(
            s.family(
                Family::Alarm,
                &Scope::Cluster {
                    cluster: "eu".into()
                }
            ),
            "grid.alarm.eu"
        );
        assert_eq!(s.group_members("eu", "rack1"), "grid.eu.rack1.*");
        assert_eq!(s.cluster_members("eu"), "grid.eu.*");
        assert_eq!(s.grid_members(), "grid.*");
        assert_eq!(s.everything(), "grid.>");
        assert_eq!(s.family_all(Family::Cmd), "grid.cmd.>");
        assert_eq!(
            s.overview(),
            [
                "grid",
                "grid.*",
                "grid.*.*",
                "grid.alarm.*.*",
                "grid.alarm.*.*.*",
                "grid.event.>"
            ]
        );
    }

    fn check(prefix: &str, subject: &str, expected: Result<Parsed, ()>) {
        let s = Subjects::new(prefix).unwrap();
        let got = s.parse(subject).map_err(|_| ());
        assert_eq!(got, expected, "{subject:?}");
    }

    #[test]
    fn scope_patterns() {
        let s = Subjects::new("grid").unwrap();
        let group = |c: &str, g: &str| Scope::Group {
            cluster: c.into(),
            group: g.into(),
        };
        let cluster = |c: &str| Scope::Cluster { cluster: c.into() };
        let p = |t: &str| ScopePattern::parse(t).unwrap();
        assert_eq!(p("grid"), ScopePattern::Grid);
        assert!(p("*/*").matches(&group("eu", "r1")));
        assert!(!p("*/*").matches(&cluster("eu")));
        assert!(p("eu/*").matches(&group("eu", "r1")));
        assert!(!p("eu/*").matches(&group("us", "r1")));
        assert!(p("eu").matches(&cluster("eu")));
        assert!(p("cluster:grid").matches(&cluster("grid")));
        assert!(p("*").matches(&cluster("us")));
        assert!(p("group:eu/r1").matches(&group("eu", "r1")));
        assert_eq!(p("*/*").inputs(&s), "grid.*.*.*");
        assert_eq!(p("eu/r1").inputs(&s), "grid.eu.r1.*");
        assert_eq!(p("eu").inputs(&s), "grid.eu.*");
        assert_eq!(p("grid").inputs(&s), "grid.*");
        assert_eq!(p("*/*").outputs(&s), "grid.*.*");
        assert_eq!(p("eu/r1").outputs(&s), "grid.eu.r1");
        assert_eq!(p("*").outputs(&s), "grid.*");
        assert_eq!(p("grid").outputs(&s), "grid");
        assert_eq!(p("eu/*").to_string(), "group:eu/*");
        for bad in ["eu/", "/r1", "a b", "eu/r1/n", "cluster:", "a.b"] {
            assert!(ScopePattern::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn parses() {
        let node = Scope::Node(id());
        check("grid", "grid", Ok(Parsed::Telemetry(Scope::Grid)));
        check(
            "grid",
            "grid.eu",
            Ok(Parsed::Telemetry(Scope::Cluster {
                cluster: "eu".into(),
            })),
        );
        check(
            "grid",
            "grid.eu.rack1",
            Ok(Parsed::Telemetry(Scope::Group {
                cluster: "eu".into(),
                group: "rack1".into(),
            })),
        );
        check(
            "grid",
            "grid.eu.rack1.web-01",
            Ok(Parsed::Telemetry(node.clone())),
        );
        check(
            "grid",
            "grid.inventory.eu.rack1.web-01",
            Ok(Parsed::Other(Family::Inventory, node.clone())),
        );
        check(
            "grid",
            "grid.alarm.eu.rack1",
            Ok(Parsed::Other(
                Family::Alarm,
                Scope::Group {
                    cluster: "eu".into(),
                    group: "rack1".into(),
                },
            )),
        );
        check(
            "acme.grid",
            "acme.grid.eu.rack1.web-01",
            Ok(Parsed::Telemetry(node)),
        );
        check("grid", "grid.cmd", Err(()));
        check("grid", "grid.eu.rack1.web-01.extra", Err(()));
        check("grid", "gridx.eu", Err(()));
        check("grid", "other.eu", Err(()));
        check("grid", "grid.", Err(()));
        check("grid", "grid..x", Err(()));
        check("grid", "grid.eu.*", Err(()));
        check("acme.grid", "grid.eu", Err(()));
    }

    #[test]
    fn round_trip() {
        let s = Subjects::new("a.b").unwrap();
        for scope in [
            Scope::Grid,
            Scope::Cluster {
                cluster: "c".into(),
            },
            Scope::Group {
                cluster: "c".into(),
                group: "g".into(),
            },
            Scope::Node(id()),
        ] {
            assert_eq!(
                s.parse(&s.telemetry(&scope)).unwrap(),
                Parsed::Telemetry(scope.clone())
            );
            if scope != Scope::Grid {
                for f in [
                    Family::Cmd,
                    Family::Alarm,
                    Family::Event,
                    Family::Audit,
                    Family::Inventory,
                ] {
                    assert_eq!(
                        s.parse(&s.family(f, &scope)).unwrap(),
                        Parsed::Other(f, scope.clone())
                    );
                }
            }
        }
    }

    #[test]
    fn bad_prefix() {
        assert!(Subjects::new("").is_err());
        assert!(Subjects::new("a..b").is_err());
        assert!(Subjects::new("a.>").is_err());
        assert!(Subjects::new("cmd").is_err());
    }
}
