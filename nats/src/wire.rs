//! Every message gridmon puts on the bus, and the one encoding: MessagePack maps with field names.
//!
//! Each message is an [`Envelope`] whose `body` depends on `kind`. Fields are documented with their
//! units in `docs/wire.md`. Decoders ignore unknown fields, so a newer publisher can add fields
//! without breaking older readers; a change that breaks readers bumps [`SCHEMA_VERSION`].

use serde::de::{DeserializeOwned, IgnoredAny};
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use crate::sketch::Sketch;
pub use gridmon_collectors::model::*;
pub use gridmon_commands::model::*;

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
    /// [`Rollup`] on `<p>.<cluster>.<group>`, `<p>.<cluster>` or `<p>`.
    Rollup,
    /// [`AlarmEvent`] on `<p>.alarm.<scope…>`.
    Alarm,
    /// [`NodeEvent`] on `<p>.event.<cluster>.<group>.<node>`.
    Event,
    /// [`ReportRequest`] on `<p>.cmd.<cluster>[.<group>[.<node>]]`; agents reply with their
    /// latest `node_report` envelope.
    ReportRequest,
    /// [`CommandReply`](crate::command::CommandReply): an agent's answer to a command.
    CommandReply,
    /// [`AuditRecord`](crate::command::AuditRecord) on `<p>.audit.<cluster>.<group>.<node>`.
    Audit,
    /// [`ProgramEvent`] (a supervised program changed state) on
    /// `<p>.event.<cluster>.<group>.<node>`.
    ProgramEvent,
    /// A kind this build does not know (a newer publisher's).
    #[serde(other)]
    Unknown,
}

impl Kind {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::NodeReport => "node_report",
            Self::Inventory => "inventory",
            Self::Rollup => "rollup",
            Self::Alarm => "alarm",
            Self::Event => "event",
            Self::ReportRequest => "report_request",
            Self::CommandReply => "command_reply",
            Self::Audit => "audit",
            Self::ProgramEvent => "program_event",
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
    /// The supervised worker programs and their states (empty when the node supervises none).
    pub programs: Vec<ProgramStatus>,
    pub agent: AgentStats,
}

/// Count of supervised programs per state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProgramCounts {
    pub starting: u32,
    pub waiting: u32,
    pub running: u32,
    pub busy: u32,
    pub degraded: u32,
    pub deploying: u32,
    pub upgrading: u32,
    pub stopping: u32,
    pub stopped: u32,
    pub crashed: u32,
    pub error: u32,
    pub unknown: u32,
}

impl ProgramCounts {
    fn slot(&mut self, s: ProgramState) -> &mut u32 {
        match s {
            ProgramState::Starting => &mut self.starting,
            ProgramState::Waiting => &mut self.waiting,
            ProgramState::Running => &mut self.running,
            ProgramState::Busy => &mut self.busy,
            ProgramState::Degraded => &mut self.degraded,
            ProgramState::Deploying => &mut self.deploying,
            ProgramState::Upgrading => &mut self.upgrading,
            ProgramState::Stopping => &mut self.stopping,
            ProgramState::Stopped => &mut self.stopped,
            ProgramState::Crashed => &mut self.crashed,
            ProgramState::Error => &mut self.error,
            ProgramState::Unknown => &mut self.unknown,
        }
    }

    pub fn add(&mut self, s: ProgramState, n: u32) {
        let slot = self.slot(s);
        *slot = slot.saturating_add(n);
    }

    pub fn merge(&mut self, o: &Self) {
        for (s, n) in o.iter() {
            self.add(s, n);
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (ProgramState, u32)> + '_ {
        let mut copy = *self;
        ProgramState::ALL
            .into_iter()
            .map(move |s| (s, *copy.slot(s)))
    }

    /// Programs in a failure state (`crashed` + `error`).
    pub fn failed(&self) -> u32 {
        self.crashed.saturating_add(self.error)
    }
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

/// A node report as the aggregators read it: everything but the process rows, which are skipped
/// without being built (they are most of a report's bytes and none of a rollup's inputs).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct ReportView {
    pub interval_ms: u32,
    pub host: Option<HostMetrics>,
    pub processes: Option<ProcessSummary>,
    pub sensors: Vec<SensorReading>,
    pub programs: Vec<ProgramStatus>,
    pub agent: AgentStats,
}

/// The process table without its rows.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct ProcessSummary {
    pub total: u32,
    pub states: StateCounts,
    /// Rows present in the report (the `rows` array is skipped, only counted).
    #[serde(rename = "rows", deserialize_with = "count_array")]
    pub row_count: u32,
    pub vanished_total: u64,
    pub denied_total: u64,
}

/// Counts the elements of an array without building them.
fn count_array<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    struct Counter;
    impl<'de> serde::de::Visitor<'de> for Counter {
        type Value = u32;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an array")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<u32, A::Error> {
            let mut n = 0u32;
            while seq.next_element::<IgnoredAny>()?.is_some() {
                n = n.saturating_add(1);
            }
            Ok(n)
        }
    }
    d.deserialize_seq(Counter)
}

// ---------------------------------------------------------------------------------------------
// Rollups, alarms and events: what the aggregators publish.
// ---------------------------------------------------------------------------------------------

/// The level of the hierarchy a rollup summarises.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    #[default]
    Group,
    Cluster,
    Grid,
}

impl Level {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Group => "group",
            Self::Cluster => "cluster",
            Self::Grid => "grid",
        }
    }
}

/// One window of one group, cluster or the grid.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Rollup {
    pub level: Level,
    /// The window `[window_start_ms, window_start_ms + window_ms)` on the wall clock, aligned to
    /// multiples of `window_ms` since the Unix epoch.
    pub window_start_ms: i64,
    pub window_ms: u32,
    pub nodes: NodeCounts,
    /// Node reports (group) or member rollups (cluster, grid) folded into this window.
    pub inputs: u32,
    /// Per-metric summaries over the nodes that reported in the window, keyed by metric name
    /// (`cpu_pct`, `mem_used_pct`, `temp_cpu_c`, … see `docs/aggregation.md`).
    pub metrics: BTreeMap<String, MetricSummary>,
    pub sums: Sums,
    /// Operating-system process states summed over the nodes' latest process tables.
    pub process_states: StateCounts,
    /// Supervised program states summed over the nodes.
    pub programs: ProgramCounts,
    pub faults: FaultCounts,
    pub alarms: AlarmSummary,
    /// One line per member: per node in a group rollup, per group in a cluster rollup, per
    /// cluster in the grid rollup; sorted by name.
    pub members: Vec<MemberLine>,
    /// What the aggregator of this scope received and dropped, cumulative since it started.
    pub input: InputStats,
}

/// Nodes by liveness. `online`: heard from within `stale_after` intervals; `stale`: not heard
/// from for `stale_after` intervals; `offline`: not for `offline_after` intervals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeCounts {
    pub online: u32,
    pub stale: u32,
    pub offline: u32,
}

impl NodeCounts {
    pub fn merge(&mut self, o: &Self) {
        self.online = self.online.saturating_add(o.online);
        self.stale = self.stale.saturating_add(o.stale);
        self.offline = self.offline.saturating_add(o.offline);
    }

    pub fn total(&self) -> u32 {
        self.online
            .saturating_add(self.stale)
            .saturating_add(self.offline)
    }
}

/// Distribution of one metric over the nodes of a scope in one window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MetricSummary {
    /// Node values summarised.
    pub count: u64,
    pub min: f64,
    pub mean: f64,
    pub max: f64,
    /// Quantiles from the sketch: within `sketch.alpha` (1 %) of the exact value.
    pub p50: f64,
    pub p95: f64,
    pub sum: f64,
    /// The mergeable summary the next level up merges; see `docs/wire.md#sketch`.
    pub sketch: Sketch,
}

/// Totals where a total means something.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Sums {
    pub cpu_cores: u64,
    pub memory_total_bytes: u64,
    pub memory_used_bytes: u64,
    pub swap_total_bytes: u64,
    pub swap_used_bytes: u64,
    /// Filesystem capacity and use (device-backed filesystems).
    pub fs_total_bytes: u64,
    pub fs_used_bytes: u64,
    pub disk_read_bytes_ps: f64,
    pub disk_write_bytes_ps: f64,
    pub net_rx_bytes_ps: f64,
    pub net_tx_bytes_ps: f64,
    pub processes: u64,
}

impl Sums {
    pub fn merge(&mut self, o: &Self) {
        self.cpu_cores = self.cpu_cores.saturating_add(o.cpu_cores);
        self.memory_total_bytes = self.memory_total_bytes.saturating_add(o.memory_total_bytes);
        self.memory_used_bytes = self.memory_used_bytes.saturating_add(o.memory_used_bytes);
        self.swap_total_bytes = self.swap_total_bytes.saturating_add(o.swap_total_bytes);
        self.swap_used_bytes = self.swap_used_bytes.saturating_add(o.swap_used_bytes);
        self.fs_total_bytes = self.fs_total_bytes.saturating_add(o.fs_total_bytes);
        self.fs_used_bytes = self.fs_used_bytes.saturating_add(o.fs_used_bytes);
        self.disk_read_bytes_ps += o.disk_read_bytes_ps;
        self.disk_write_bytes_ps += o.disk_write_bytes_ps;
        self.net_rx_bytes_ps += o.net_rx_bytes_ps;
        self.net_tx_bytes_ps += o.net_tx_bytes_ps;
        self.processes = self.processes.saturating_add(o.processes);
    }
}

/// Hardware faults seen in the window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FaultCounts {
    /// Sensors beyond a limit of their chip (min, max or crit) or flagged by the chip.
    pub sensors_beyond_limits: u32,
    /// Temperatures at or above their chip's critical limit.
    pub over_crit: u32,
    /// Fans at 0 RPM while the chip expects them to spin (a minimum above 0, or its alarm flag).
    pub fans_stopped: u32,
    /// Voltages outside the chip's min/max.
    pub voltages_out_of_range: u32,
    /// Nodes with at least one of the above.
    pub nodes_with_faults: u32,
}

impl FaultCounts {
    pub fn merge(&mut self, o: &Self) {
        self.sensors_beyond_limits = self
            .sensors_beyond_limits
            .saturating_add(o.sensors_beyond_limits);
        self.over_crit = self.over_crit.saturating_add(o.over_crit);
        self.fans_stopped = self.fans_stopped.saturating_add(o.fans_stopped);
        self.voltages_out_of_range = self
            .voltages_out_of_range
            .saturating_add(o.voltages_out_of_range);
        self.nodes_with_faults = self.nodes_with_faults.saturating_add(o.nodes_with_faults);
    }
}

/// Alarms active at the window close, in this scope and below.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AlarmSummary {
    pub active: u32,
    pub critical: u32,
    pub warning: u32,
    pub info: u32,
    /// The active alarms, most severe first, at most [`ALARM_LIST_MAX`]; `active` has the count.
    pub list: Vec<ActiveAlarm>,
}

/// Most alarms a rollup lists one by one.
pub const ALARM_LIST_MAX: usize = 100;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ActiveAlarm {
    /// Stable id: the same for the raise and the clear of one alarm (`docs/aggregation.md`).
    pub id: String,
    pub rule: String,
    pub severity: Severity,
    /// `cluster[/group[/node]]` the alarm is about.
    pub scope: String,
    /// The sensor id or program name for per-instance rules.
    pub instance: Option<String>,
    /// The value that raised it.
    pub value: f64,
    pub since_ms: i64,
}

/// Compact state of one member, so a viewer can drill down without subscribing below.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MemberLine {
    pub name: String,
    pub status: MemberStatus,
    /// Last report (node) or rollup (group, cluster) received, ms since the Unix epoch.
    pub last_seen_ms: i64,
    /// The member's nodes (for a node member, one of the three is 1).
    pub nodes: NodeCounts,
    /// CPU busy %: the node's value, or the mean over a group's or cluster's nodes.
    pub cpu_pct: Option<f32>,
    /// Highest node CPU % (equals `cpu_pct` for a node).
    pub cpu_max_pct: Option<f32>,
    pub mem_used_pct: Option<f32>,
    /// Busiest disk.
    pub disk_busy_pct: Option<f32>,
    /// Network totals.
    pub net_rx_bytes_ps: f64,
    pub net_tx_bytes_ps: f64,
    /// Hottest temperature sensor.
    pub temp_max_c: Option<f32>,
    /// Hardware faults (sensors beyond limits).
    pub faults: u32,
    pub programs_failed: u32,
    pub alarms: u32,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberStatus {
    #[default]
    Online,
    Stale,
    Offline,
}

/// What one scope's aggregator received and why it dropped what it dropped, since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct InputStats {
    pub received: u64,
    pub folded: u64,
    /// Arrived after their window closed: folded into the next window, or dropped when the
    /// member already had a newer input there.
    pub late: u64,
    pub late_dropped: u64,
    pub malformed: u64,
    pub unknown_schema: u64,
    pub wrong_kind: u64,
    /// The payload's source disagrees with the subject.
    pub identity_mismatch: u64,
    /// Timestamp beyond `aggregate.max_clock_skew` of the aggregator's clock.
    pub clock_skew: u64,
    /// A sequence number already seen in the same run.
    pub duplicate: u64,
    /// Beyond `aggregate.max_report_bytes` or `aggregate.max_processes`.
    pub oversize: u64,
}

impl InputStats {
    /// Every counter with its wire name, in declaration order.
    pub fn counters(&self) -> [(&'static str, u64); 11] {
        [
            ("received", self.received),
            ("folded", self.folded),
            ("late", self.late),
            ("late_dropped", self.late_dropped),
            ("malformed", self.malformed),
            ("unknown_schema", self.unknown_schema),
            ("wrong_kind", self.wrong_kind),
            ("identity_mismatch", self.identity_mismatch),
            ("clock_skew", self.clock_skew),
            ("duplicate", self.duplicate),
            ("oversize", self.oversize),
        ]
    }

    pub fn dropped(&self) -> u64 {
        self.late_dropped
            + self.malformed
            + self.unknown_schema
            + self.wrong_kind
            + self.identity_mismatch
            + self.clock_skew
            + self.duplicate
            + self.oversize
    }
}

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    #[default]
    Warning,
    Critical,
}

impl Severity {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Critical => "critical",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlarmAction {
    #[default]
    Raise,
    Clear,
}

impl AlarmAction {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Raise => "raise",
            Self::Clear => "clear",
        }
    }
}

/// An alarm raised or cleared, on `<p>.alarm.<cluster>[.<group>[.<node>]]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AlarmEvent {
    /// Stable id: the same for the raise and the clear.
    pub id: String,
    pub action: AlarmAction,
    pub rule: String,
    pub severity: Severity,
    /// The metric the rule watches (`cpu_pct`, `cpu_pct.p95`, `sensor_crit`, …).
    pub metric: String,
    /// The sensor id or program name for per-instance rules.
    pub instance: Option<String>,
    /// `>`, `>=`, `<`, `<=`.
    pub op: String,
    pub threshold: f64,
    pub clear_threshold: f64,
    /// The value at the raise or the clear.
    pub value: f64,
    /// When the alarm was raised (on a clear: the raise it ends), ms since the Unix epoch.
    pub raised_ms: i64,
    /// The window close that decided it, ms since the Unix epoch.
    pub ts_ms: i64,
    /// One line for people.
    pub message: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// Heard from again after being stale or offline.
    NodeOnline,
    NodeStale,
    NodeOffline,
    #[default]
    #[serde(other)]
    Unknown,
}

impl EventKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::NodeOnline => "node_online",
            Self::NodeStale => "node_stale",
            Self::NodeOffline => "node_offline",
            Self::Unknown => "unknown",
        }
    }
}

/// Something that happened to a node, on `<p>.event.<cluster>.<group>.<node>`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Event {
    pub event: EventKind,
    /// Last report received, ms since the Unix epoch (absent: never heard from).
    pub last_seen_ms: Option<i64>,
    /// Whole intervals without a report when the event was decided.
    pub missed_intervals: u32,
    pub message: String,
}

/// Asks agents for their latest report (no signature: it changes nothing).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ReportRequest {
    /// Who asks, for the agents' logs.
    pub requester: String,
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
    // One pass on the common path; only a failure pays for a second look at the header, so an
    // unknown schema or kind is reported as such rather than as a body that does not parse.
    match rmp_serde::from_slice::<Envelope<B>>(bytes) {
        Ok(env) => {
            check_header(env.schema, env.kind, kind)?;
            Ok(env)
        }
        Err(e) => {
            let h = peek(bytes)?;
            check_header(h.schema, h.kind, kind)?;
            Err(WireError::Malformed(e))
        }
    }
}

fn check_header(schema: u16, got: Kind, expected: Kind) -> Result<(), WireError> {
    if schema != SCHEMA_VERSION {
        return Err(WireError::UnsupportedSchema(schema));
    }
    if got != expected {
        return Err(WireError::UnexpectedKind {
            expected: expected.as_str(),
            got: got.as_str(),
        });
    }
    Ok(())
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
                programs: vec![],
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
