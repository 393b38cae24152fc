//! Every message gridmon puts on the bus, and the one encoding: MessagePack maps with field names.
//!
//! Each message is an [`Envelope`] whose `body` depends on `kind`. Fields are documented with their
//! units in `docs/wire.md`. Decoders ignore unknown fields, so a newer publisher can add fields
//! without breaking older readers; a change that breaks readers bumps [`SCHEMA_VERSION`].

use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Serialize};

pub use gridmon_collectors::model::*;

use crate::identity::NodeId;

/// The schema version this build writes and reads.
pub const SCHEMA_VERSION: u16 = 1;

/// What the envelope carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// [`NodeReport`] on `<p>.<cluster>.<group>.<node>`.
    NodeReport,
    /// [`Inventory`] on `<p>.inventory.<cluster>.<group>.<node>`.
    Inventory,
    /// A kind this build does not know (a newer publisher's).
    #[serde(other)]
    Unknown,
}

impl Kind {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::NodeReport => "node_report",
            Self::Inventory => "inventory",
            Self::Unknown => "unknown",
        }
    }
}

/// Who published: the node for node messages; rollups leave the lower levels out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default)]
pub struct Source {
    pub cluster: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

impl From<&NodeId> for Source {
    fn from(id: &NodeId) -> Self {
        Self {
            cluster: id.cluster.clone(),
            group: Some(id.group.clone()),
            node: Some(id.node.clone()),
        }
    }
}

/// The frame of every message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope<B> {
    /// Schema version of the whole message.
    pub schema: u16,
    pub kind: Kind,
    pub source: Source,
    /// When the message was made, ms since the Unix epoch.
    pub ts_ms: i64,
    /// The publisher's start time in ms since the Unix epoch: tells two runs of one node apart.
    pub run_id: u64,
    /// 1, 2, 3… per (source, kind) within one run; a gap means messages were lost.
    pub seq: u64,
    pub body: B,
}

impl<B> Envelope<B> {
    /// The JetStream de-duplication id: unique per message, identical for a retried one.
    pub fn msg_id(&self) -> String {
        let s = &self.source;
        format!(
            "{}.{}.{}:{}:{}:{}",
            s.cluster,
            s.group.as_deref().unwrap_or("-"),
            s.node.as_deref().unwrap_or("-"),
            self.kind.as_str(),
            self.run_id,
            self.seq
        )
    }
}

/// The envelope without its body, for routing and checks before a full decode.
pub type Header = Envelope<IgnoredAny>;

/// One node's report for one interval.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeReport {
    /// The host-metrics interval, ms.
    pub interval_ms: u32,
    /// Absent only when host collection failed this interval (see `agent.collect_errors_total`).
    pub host: Option<HostMetrics>,
    /// Present on the intervals the process table was sampled (its own, slower interval).
    pub processes: Option<ProcessTable>,
    /// hwmon and I2C readings.
    pub sensors: Vec<SensorReading>,
    pub agent: AgentStats,
}

/// The agent's own health, reported with every report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AgentStats {
    /// Agent version.
    pub version: String,
    /// Messages the spool dropped (oldest first) because its bound was hit, since start.
    pub spool_dropped_total: u64,
    /// Messages waiting in the spool when this report was made.
    pub spool_len: u32,
    /// Collection cycles that failed (host or process table), since start.
    pub collect_errors_total: u64,
    /// Sensor inputs that could not be read, since start.
    pub sensor_errors_total: u64,
    /// CPU time the agent process used since start, ms.
    pub cpu_time_ms: u64,
    /// Resident memory of the agent process, bytes.
    pub rss_bytes: u64,
}

/// Why bytes did not decode.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("malformed message: {0}")]
    Malformed(#[from] rmp_serde::decode::Error),
    #[error("unsupported schema version {0} (this build reads {SCHEMA_VERSION})")]
    UnsupportedSchema(u16),
    #[error("expected a {expected} message, got {got}")]
    UnexpectedKind {
        expected: &'static str,
        got: &'static str,
    },
    #[error("cannot encode: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
}

/// Encodes as a MessagePack map with field names.
pub fn encode<B: Serialize>(env: &Envelope<B>) -> Result<Vec<u8>, WireError> {
    Ok(rmp_serde::to_vec_named(env)?)
}

/// Reads the envelope's header fields and skips the body.
pub fn peek(bytes: &[u8]) -> Result<Header, WireError> {
    let h: Header = rmp_serde::from_slice(bytes)?;
    if h.schema != SCHEMA_VERSION {
        return Err(WireError::UnsupportedSchema(h.schema));
    }
    Ok(h)
}

/// Decodes a message whose kind must be `kind`.
pub fn decode<B: DeserializeOwned>(bytes: &[u8], kind: Kind) -> Result<Envelope<B>, WireError> {
    // The header is checked first so an unknown schema is reported as such, not as a body error.
    let h = peek(bytes)?;
    if h.kind != kind {
        return Err(WireError::UnexpectedKind {
            expected: kind.as_str(),
            got: h.kind.as_str(),
        });
    }
    Ok(rmp_serde::from_slice(bytes)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn report() -> Envelope<NodeReport> {
        let id = NodeId::new("c", "g", "n").unwrap();
        Envelope {
            schema: SCHEMA_VERSION,
            kind: Kind::NodeReport,
            source: Source::from(&id),
            ts_ms: 1_700_000_000_000,
            run_id: 42,
            seq: 7,
            body: NodeReport {
                interval_ms: 1000,
                host: Some(HostMetrics {
                    uptime_s: 5.0,
                    ..Default::default()
                }),
                processes: Some(ProcessTable {
                    total: 1,
                    rows: vec![ProcessRow {
                        pid: 1,
                        name: "init".into(),
                        state: ProcState::Waiting,
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                sensors: vec![],
                agent: AgentStats::default(),
            },
        }
    }

    #[test]
    fn round_trip() {
        let env = report();
        let bytes = encode(&env).unwrap();
        let back: Envelope<NodeReport> = decode(&bytes, Kind::NodeReport).unwrap();
        assert_eq!(back, env);
        assert_eq!(env.msg_id(), "c.g.n:node_report:42:7");
    }

    #[test]
    fn written_as_maps_with_names_and_strings_for_enums() {
        let bytes = encode(&report()).unwrap();
        // A map, and the field names and enum values appear as strings for other languages.
        assert_eq!(bytes[0] & 0xf0, 0x80, "top level is a fixmap");
        for needle in [
            &b"schema"[..],
            b"kind",
            b"node_report",
            b"ts_ms",
            b"run_id",
            b"waiting",
            b"processes",
        ] {
            assert!(
                bytes.windows(needle.len()).any(|w| w == needle),
                "{:?} missing",
                String::from_utf8_lossy(needle)
            );
        }
    }

    #[test]
    fn unknown_fields_are_ignored_and_unknown_kind_is_reported() {
        #[derive(Serialize)]
        struct Newer<'a> {
            schema: u16,
            kind: &'a str,
            source: Source,
            ts_ms: i64,
            run_id: u64,
            seq: u64,
            extra: &'a str,
            body: NodeReport,
        }
        let newer = Newer {
            schema: 1,
            kind: "node_report",
            source: Source::default(),
            ts_ms: 1,
            run_id: 1,
            seq: 1,
            extra: "future",
            body: NodeReport::default(),
        };
        let bytes = rmp_serde::to_vec_named(&newer).unwrap();
        decode::<NodeReport>(&bytes, Kind::NodeReport).unwrap();
        let bytes = rmp_serde::to_vec_named(&Newer {
            kind: "hologram",
            ..newer
        })
        .unwrap();
        assert_eq!(peek(&bytes).unwrap().kind, Kind::Unknown);
        assert!(matches!(
            decode::<NodeReport>(&bytes, Kind::NodeReport),
            Err(WireError::UnexpectedKind { .. })
        ));
    }

    #[test]
    fn unknown_schema_is_refused() {
        let mut env = report();
        env.schema = 99;
        let bytes = encode(&env).unwrap();
        assert!(matches!(
            decode::<NodeReport>(&bytes, Kind::NodeReport),
            Err(WireError::UnsupportedSchema(99))
        ));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_give_an_error_not_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            // A valid envelope needs the named fields, which random bytes never spell out.
            prop_assert!(peek(&bytes).is_err());
            prop_assert!(decode::<NodeReport>(&bytes, Kind::NodeReport).is_err());
        }

        #[test]
        fn mutated_reports_never_panic(flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
            let mut bytes = encode(&report()).unwrap();
            for (at, v) in flips {
                let i = at % bytes.len();
                bytes[i] = v;
            }
            let _ = decode::<NodeReport>(&bytes, Kind::NodeReport);
        }
    }
}
