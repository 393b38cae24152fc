//! Bus messages to table rows.
//!
//! [`Rows::add_message`] decodes one message (by its subject and envelope kind) and appends its
//! rows to the per-table buffers. Values ClickHouse cannot hold sensibly are repaired and
//! counted, never allowed to fail the batch they travel in: a non-finite float becomes 0, an
//! over-long string is cut at a character boundary, and a message whose own time is outside
//! 1970–2200 is rejected whole (its rows would land in a nonsense partition).
//!
//! Two kinds share `<p>.event.…`: node liveness events (from aggregators) and program state
//! transitions (from agents); the envelope's `kind` tells them apart. A kind this build does
//! not know, on a subject whose kinds it routes this way, is skipped: a newer publisher's
//! message, not a broken one.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use clickhouse::Row;
use gridmon_nats::command::AuditRecord;
use gridmon_nats::identity::NodeId;
use gridmon_nats::subject::{Family, Parsed, Scope, Subjects};
use gridmon_nats::wire::{
    self, AlarmEvent, Envelope, Event, ExitStatus, Inventory, Kind, NodeReport, ProcessRow,
    ProgramEvent, Rollup, Source, WireError,
};
use serde::Serialize;

/// Every table the ingest writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    NodeMetrics,
    DiskMetrics,
    FsMetrics,
    NetMetrics,
    ProcessMetrics,
    Processes,
    SensorReadings,
    Rollups,
    RollupMetrics,
    Alarms,
    NodeEvents,
    Inventory,
    ProcessEvents,
    CommandAudit,
}

impl Table {
    pub const ALL: [Table; 14] = [
        Table::NodeMetrics,
        Table::DiskMetrics,
        Table::FsMetrics,
        Table::NetMetrics,
        Table::ProcessMetrics,
        Table::Processes,
        Table::SensorReadings,
        Table::Rollups,
        Table::RollupMetrics,
        Table::Alarms,
        Table::NodeEvents,
        Table::Inventory,
        Table::ProcessEvents,
        Table::CommandAudit,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Table::NodeMetrics => "node_metrics",
            Table::DiskMetrics => "disk_metrics",
            Table::FsMetrics => "fs_metrics",
            Table::NetMetrics => "net_metrics",
            Table::ProcessMetrics => "process_metrics",
            Table::Processes => "processes",
            Table::SensorReadings => "sensor_readings",
            Table::Rollups => "rollups",
            Table::RollupMetrics => "rollup_metrics",
            Table::Alarms => "alarms",
            Table::NodeEvents => "node_events",
            Table::Inventory => "inventory",
            Table::ProcessEvents => "process_events",
            Table::CommandAudit => "command_audit",
        }
    }

    pub const fn index(self) -> usize {
        self as usize
    }
}

// A message's tables travel as a bit set in a u16 (`Outcome::Rows`, the pipeline's pending).
const _: () = assert!(Table::ALL.len() <= 16);

/// The earliest and latest message time accepted: 1970-01-01 and 2200-01-01, in ms.
pub const MIN_TS_MS: i64 = 0;
pub const MAX_TS_MS: i64 = 7_258_118_400_000;

#[derive(Debug, Clone, Row, Serialize)]
pub struct NodeMetricsRow {
    pub ts: i64,
    pub cluster: String,
    pub group_name: String,
    pub node: String,
    pub msg: u64,
    pub interval_ms: u32,
    pub uptime_s: u32,
    pub cpu_cores: u16,
    pub cpu_pct: f32,
    pub cpu_user_pct: f32,
    pub cpu_system_pct: f32,
    pub cpu_iowait_pct: f32,
    pub cpu_steal_pct: f32,
    pub load1: f32,
    pub load5: f32,
    pub load15: f32,
    pub mem_total_bytes: u64,
    pub mem_used_bytes: u64,
    pub mem_available_bytes: u64,
    pub mem_used_pct: f32,
    pub swap_total_bytes: u64,
    pub swap_used_bytes: u64,
    pub swap_used_pct: f32,
    pub disk_busy_pct: f32,
    pub disk_read_bytes_ps: f64,
    pub disk_write_bytes_ps: f64,
    pub disk_read_ops_ps: f64,
    pub disk_write_ops_ps: f64,
    pub fs_total_bytes: u64,
    pub fs_used_bytes: u64,
    pub fs_used_max_pct: f32,
    pub net_rx_bytes_ps: f64,
    pub net_tx_bytes_ps: f64,
    pub net_rx_packets_ps: f64,
    pub net_tx_packets_ps: f64,
    pub net_errors_ps: f64,
    pub net_dropped_ps: f64,
    pub probe_loss_pct: f32,
    pub processes: u32,
    pub procs_running: u32,
    pub procs_zombie: u32,
    pub sensors_alarm: u16,
    pub programs_failed: u16,
}

#[derive(Debug, Clone, Row, Serialize)]
pub struct DiskRow {
    pub ts: i64,
    pub cluster: String,
    pub group_name: String,
    pub node: String,
    pub msg: u64,
    pub device: String,
    pub busy_pct: f32,
    pub read_bytes_ps: f32,
    pub write_bytes_ps: f32,
    pub read_ops_ps: f32,
    pub write_ops_ps: f32,
}

#[derive(Debug, Clone, Row, Serialize)]
pub struct FsRow {
    pub ts: i64,
    pub cluster: String,
    pub group_name: String,
    pub node: String,
    pub msg: u64,
    pub mount: String,
    pub device: String,
    pub fstype: String,
    pub total_bytes: u64,
    pub used_bytes: u64,
    pub avail_bytes: u64,
    pub inodes_total: u64,
    pub inodes_used: u64,
}

#[derive(Debug, Clone, Row, Serialize)]
pub struct NetRow {
    pub ts: i64,
    pub cluster: String,
    pub group_name: String,
    pub node: String,
    pub msg: u64,
    pub iface: String,
    pub up: u8,
    pub carrier: u8,
    pub rx_bytes_ps: f32,
    pub tx_bytes_ps: f32,
    pub rx_packets_ps: f32,
    pub tx_packets_ps: f32,
    pub rx_errors_ps: f32,
    pub tx_errors_ps: f32,
    pub rx_dropped_ps: f32,
    pub tx_dropped_ps: f32,
}

#[derive(Debug, Clone, Row, Serialize)]
pub struct ProcessMetricsRow {
    pub ts: i64,
    pub cluster: String,
    pub group_name: String,
    pub node: String,
    pub msg: u64,
    pub pid: u32,
    pub start_time: i64,
    pub name: String,
    pub user: String,
    pub state: &'static str,
    pub cpu_pct: f32,
    pub rss_bytes: u64,
    pub vsz_bytes: u64,
    pub fds: Option<u32>,
    pub threads: u32,
    pub read_bytes_ps: Option<f32>,
    pub write_bytes_ps: Option<f32>,
    pub nice: i8,
    pub priority: i16,
    pub run_time_s: u32,
    pub cpu_time_s: f64,
}

/// A process's identity and the facts that stay put while it runs: written when the ingest
/// first sees the process, when one of them changes, and again after
/// [`PROCESS_REWRITE_MS`] (see [`ProcessSeen`]).
#[derive(Debug, Clone, Row, Serialize)]
pub struct ProcessInfoRow {
    pub ts: i64,
    pub cluster: String,
    pub group_name: String,
    pub node: String,
    pub msg: u64,
    pub pid: u32,
    pub start_time: i64,
    pub ppid: u32,
    pub name: String,
    pub cmdline: String,
    pub user: String,
}

#[derive(Debug, Clone, Row, Serialize)]
pub struct SensorRow {
    pub ts: i64,
    pub cluster: String,
    pub group_name: String,
    pub node: String,
    pub msg: u64,
    pub sensor: String,
    pub chip: String,
    pub label: String,
    pub kind: &'static str,
    pub source: &'static str,
    pub value: f32,
    pub min: Option<f32>,
    pub max: Option<f32>,
    pub crit: Option<f32>,
    pub alarm: u8,
}

#[derive(Debug, Clone, Row, Serialize)]
pub struct RollupRow {
    pub ts: i64,
    pub level: &'static str,
    pub cluster: String,
    pub group_name: String,
    pub msg: u64,
    pub window_ms: u32,
    pub nodes_online: u32,
    pub nodes_stale: u32,
    pub nodes_offline: u32,
    pub inputs: u32,
    pub cpu_cores: u64,
    pub memory_total_bytes: u64,
    pub memory_used_bytes: u64,
    pub swap_total_bytes: u64,
    pub swap_used_bytes: u64,
    pub fs_total_bytes: u64,
    pub fs_used_bytes: u64,
    pub disk_read_bytes_ps: f64,
    pub disk_write_bytes_ps: f64,
    pub net_rx_bytes_ps: f64,
    pub net_tx_bytes_ps: f64,
    pub processes: u64,
    pub process_states: Vec<(&'static str, u32)>,
    pub program_states: Vec<(&'static str, u32)>,
    pub sensors_beyond_limits: u32,
    pub sensors_over_crit: u32,
    pub fans_stopped: u32,
    pub voltages_out_of_range: u32,
    pub nodes_with_faults: u32,
    pub alarms_active: u32,
    pub alarms_critical: u32,
    pub input: Vec<(&'static str, u64)>,
}

#[derive(Debug, Clone, Row, Serialize)]
pub struct RollupMetricRow {
    pub ts: i64,
    pub level: &'static str,
    pub cluster: String,
    pub group_name: String,
    pub msg: u64,
    pub metric: String,
    pub count: u64,
    pub min: f64,
    pub mean: f64,
    pub max: f64,
    pub p50: f64,
    pub p95: f64,
    pub sum: f64,
    pub sketch: Blob,
}

/// Bytes for a `String` column (serde's `Vec<u8>` would be an array).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Blob(pub Vec<u8>);

impl Serialize for Blob {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

#[derive(Debug, Clone, Row, Serialize)]
pub struct AlarmRow {
    pub ts: i64,
    pub cluster: String,
    pub group_name: String,
    pub node: String,
    pub msg: u64,
    pub scope: &'static str,
    pub alarm_id: String,
    pub action: &'static str,
    pub rule: String,
    pub severity: &'static str,
    pub hardware: u8,
    pub metric: String,
    pub instance: String,
    pub op: String,
    pub threshold: f64,
    pub clear_threshold: f64,
    pub value: f64,
    pub raised_at: i64,
    pub duration_ms: Option<i64>,
    pub message: String,
}

#[derive(Debug, Clone, Row, Serialize)]
pub struct NodeEventRow {
    pub ts: i64,
    pub cluster: String,
    pub group_name: String,
    pub node: String,
    pub msg: u64,
    pub event: &'static str,
    pub last_seen: Option<i64>,
    pub missed_intervals: u32,
    pub message: String,
}

#[derive(Debug, Clone, Row, Serialize)]
pub struct InventoryRow {
    pub ts: i64,
    pub cluster: String,
    pub group_name: String,
    pub node: String,
    pub msg: u64,
    pub hostname: String,
    pub cpu_model: String,
    pub cpu_logical_cores: u32,
    pub cpu_physical_cores: u32,
    pub memory_bytes: u64,
    pub swap_bytes: u64,
    pub disk_capacity_bytes: u64,
    #[serde(rename = "disks.name")]
    pub disk_names: Vec<String>,
    #[serde(rename = "disks.capacity_bytes")]
    pub disk_capacities: Vec<u64>,
    #[serde(rename = "disks.model")]
    pub disk_models: Vec<String>,
    #[serde(rename = "disks.rotational")]
    pub disk_rotational: Vec<u8>,
    pub os_name: String,
    pub os_version: String,
    pub kernel: String,
    pub arch: String,
    pub agent_version: String,
    pub boot_time: i64,
}

#[derive(Debug, Clone, Row, Serialize)]
pub struct ProcessEventRow {
    pub ts: i64,
    pub cluster: String,
    pub group_name: String,
    pub node: String,
    pub msg: u64,
    pub program: String,
    pub state_from: &'static str,
    pub state_to: &'static str,
    pub reason: String,
    pub pid: Option<u32>,
    /// `code`, `signal`, `unknown`, or empty when the transition was not an exit.
    pub exit_how: &'static str,
    /// The exit code or the signal number.
    pub exit_value: Option<i32>,
    pub restarts: u32,
    /// Empty when the program does not run from releases.
    pub version: String,
    pub alarm: u8,
}

#[derive(Debug, Clone, Row, Serialize)]
pub struct CommandAuditRow {
    pub ts: i64,
    pub cluster: String,
    pub group_name: String,
    pub node: String,
    pub msg: u64,
    pub phase: &'static str,
    pub request_id: String,
    pub issuer: String,
    /// Empty when the issuer has no configured name (likewise the other optional strings).
    pub issuer_name: String,
    pub on_behalf_of: String,
    pub signed: u8,
    pub op: String,
    pub program: String,
    pub args: String,
    pub target: String,
    pub ok: u8,
    /// The [`ErrorKind`](gridmon_nats::command::ErrorKind), empty without an error.
    pub error: &'static str,
    pub message: String,
    pub duration_us: u64,
}

/// A row type of one table; `msg` ties it to the bus message it came from.
pub trait TableRow: for<'a> Row<Value<'a> = Self> + Serialize + Send + Sync + 'static {
    const TABLE: Table;
    fn msg(&self) -> u64;
    fn ts(&self) -> i64;
}

macro_rules! table_row {
    ($t:ty, $table:expr) => {
        impl TableRow for $t {
            const TABLE: Table = $table;
            fn msg(&self) -> u64 {
                self.msg
            }
            fn ts(&self) -> i64 {
                self.ts
            }
        }
    };
}

table_row!(NodeMetricsRow, Table::NodeMetrics);
table_row!(DiskRow, Table::DiskMetrics);
table_row!(FsRow, Table::FsMetrics);
table_row!(NetRow, Table::NetMetrics);
table_row!(ProcessMetricsRow, Table::ProcessMetrics);
table_row!(ProcessInfoRow, Table::Processes);
table_row!(SensorRow, Table::SensorReadings);
table_row!(RollupRow, Table::Rollups);
table_row!(RollupMetricRow, Table::RollupMetrics);
table_row!(AlarmRow, Table::Alarms);
table_row!(NodeEventRow, Table::NodeEvents);
table_row!(InventoryRow, Table::Inventory);
table_row!(ProcessEventRow, Table::ProcessEvents);
table_row!(CommandAuditRow, Table::CommandAudit);

/// What became of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Rows were added to these tables (a bit per [`Table::index`]).
    Rows(u16),
    /// Not history (a command, a report request), or a kind this build does not know on the
    /// event or audit subjects.
    Skipped,
    /// Malformed, of an unknown schema, or with an impossible time: counted, not stored.
    Rejected(Reject),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    Subject,
    Malformed,
    UnknownSchema,
    WrongKind,
    Identity,
    Time,
}

/// Repairs made to values on the way in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Repairs {
    /// NaN or infinite floats stored as 0.
    pub non_finite: u64,
    /// Strings cut to `max_string_bytes`.
    pub cut_strings: u64,
    /// Negative durations or counts stored as 0.
    pub negative: u64,
}

/// One buffer per table.
#[derive(Debug, Default)]
pub struct Rows {
    pub node_metrics: Vec<NodeMetricsRow>,
    pub disk_metrics: Vec<DiskRow>,
    pub fs_metrics: Vec<FsRow>,
    pub net_metrics: Vec<NetRow>,
    pub process_metrics: Vec<ProcessMetricsRow>,
    pub processes: Vec<ProcessInfoRow>,
    pub sensor_readings: Vec<SensorRow>,
    pub rollups: Vec<RollupRow>,
    pub rollup_metrics: Vec<RollupMetricRow>,
    pub alarms: Vec<AlarmRow>,
    pub node_events: Vec<NodeEventRow>,
    pub inventory: Vec<InventoryRow>,
    pub process_events: Vec<ProcessEventRow>,
    pub command_audit: Vec<CommandAuditRow>,
}

impl Rows {
    pub fn len(&self, t: Table) -> usize {
        match t {
            Table::NodeMetrics => self.node_metrics.len(),
            Table::DiskMetrics => self.disk_metrics.len(),
            Table::FsMetrics => self.fs_metrics.len(),
            Table::NetMetrics => self.net_metrics.len(),
            Table::ProcessMetrics => self.process_metrics.len(),
            Table::Processes => self.processes.len(),
            Table::SensorReadings => self.sensor_readings.len(),
            Table::Rollups => self.rollups.len(),
            Table::RollupMetrics => self.rollup_metrics.len(),
            Table::Alarms => self.alarms.len(),
            Table::NodeEvents => self.node_events.len(),
            Table::Inventory => self.inventory.len(),
            Table::ProcessEvents => self.process_events.len(),
            Table::CommandAudit => self.command_audit.len(),
        }
    }

    pub fn total(&self) -> usize {
        Table::ALL.iter().map(|t| self.len(*t)).sum()
    }
}

/// Turns messages into rows.
#[derive(Debug)]
pub struct Converter {
    subjects: Subjects,
    max_string: usize,
    pub repairs: Repairs,
    /// The `msg` hash of the last message that produced rows.
    pub last_msg: u64,
    seen: ProcessSeen,
}

/// A running process's `processes` row is written again after this long (a day), so a process
/// that outlives the table's retention keeps its row.
pub const PROCESS_REWRITE_MS: i64 = 86_400_000;
/// A process missing from its node's reports for this long is forgotten (the agent may send a
/// selection of its processes, so one absence is not an exit).
const PROCESS_FORGET_MS: i64 = 600_000;
/// A node silent for this long is forgotten, with its processes.
const NODE_FORGET_MS: i64 = 3_600_000;

/// The processes this converter has written a `processes` row for, so a process table of 500
/// processes yields 500 narrow `process_metrics` rows and a `processes` row only for the new
/// (or changed) ones.
///
/// Losing it costs nothing but rows written again (a restarted worker writes each process once
/// more, which the replacing engine collapses), and it never hides a row that was not written:
/// an entry is made by a message whose rows are acknowledged only once inserted, and if that
/// message comes back, it is because its rows may not have landed.
#[derive(Debug, Default)]
pub struct ProcessSeen {
    nodes: HashMap<NodeId, NodeProcesses>,
    /// The latest report time seen, for forgetting silent nodes.
    latest_ms: i64,
    reports: u64,
}

#[derive(Debug, Default)]
pub struct NodeProcesses {
    last_ms: i64,
    /// (pid, start time ms) → what was written.
    procs: HashMap<(u32, i64), Written>,
}

#[derive(Debug, Clone, Copy)]
struct Written {
    /// Hash of the facts written (ppid, name, command line, user).
    facts: u64,
    written_ms: i64,
    seen_ms: i64,
}

impl ProcessSeen {
    /// The processes known on `id`, which has just reported at `ts`.
    pub fn node(&mut self, id: &NodeId, ts: i64) -> &mut NodeProcesses {
        self.reports += 1;
        self.latest_ms = self.latest_ms.max(ts);
        if !self.nodes.contains_key(id) {
            self.nodes.insert(id.clone(), NodeProcesses::default());
        }
        let node = self.nodes.get_mut(id).expect("inserted above");
        node.last_ms = node.last_ms.max(ts);
        node
    }

    /// Now and then, forgets nodes that stopped reporting.
    fn sweep(&mut self, _ts: i64) {
        if !self.reports.is_multiple_of(4096) {
            return;
        }
        let cutoff = self.latest_ms - NODE_FORGET_MS;
        self.nodes.retain(|_, n| n.last_ms >= cutoff);
    }

    /// Processes remembered, over all nodes.
    pub fn len(&self) -> usize {
        self.nodes.values().map(|n| n.procs.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl NodeProcesses {
    /// Whether `p`, seen in a report at `ts`, needs a `processes` row; remembers it as written
    /// when it does.
    fn needs_row(&mut self, p: &ProcessRow, ts: i64) -> bool {
        let facts = {
            let mut h = std::hash::DefaultHasher::new();
            (p.ppid, &p.name, &p.cmdline, &p.user).hash(&mut h);
            h.finish()
        };
        match self.procs.entry((p.pid, p.start_time_ms)) {
            Entry::Occupied(mut e) => {
                let w = e.get_mut();
                w.seen_ms = w.seen_ms.max(ts);
                if w.facts == facts && ts - w.written_ms < PROCESS_REWRITE_MS {
                    return false;
                }
                w.facts = facts;
                w.written_ms = ts;
                true
            }
            Entry::Vacant(e) => {
                e.insert(Written {
                    facts,
                    written_ms: ts,
                    seen_ms: ts,
                });
                true
            }
        }
    }

    /// Forgets processes not seen for [`PROCESS_FORGET_MS`] before `ts`.
    fn forget_gone(&mut self, ts: i64) {
        let cutoff = ts - PROCESS_FORGET_MS;
        if self.procs.values().any(|w| w.seen_ms < cutoff) {
            self.procs.retain(|_, w| w.seen_ms >= cutoff);
        }
    }
}

/// FNV-1a, 64 bits: a stable hash of a message's identity (stable across builds and
/// versions, unlike std's hasher), stored in every row's `msg`.
pub fn msg_hash(id: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

impl Converter {
    pub fn new(subjects: Subjects, max_string: usize) -> Self {
        Self {
            subjects,
            max_string,
            repairs: Repairs::default(),
            last_msg: 0,
            seen: ProcessSeen::default(),
        }
    }

    /// Adds the rows of one message. `msg_id` is its `Nats-Msg-Id` header, when it has one.
    pub fn add_message(
        &mut self,
        subject: &str,
        msg_id: Option<&str>,
        payload: &[u8],
        out: &mut Rows,
    ) -> Outcome {
        let scope_kind = match self.subjects.parse(subject) {
            Ok(Parsed::Telemetry(scope)) => {
                let kind = if matches!(scope, Scope::Node(_)) {
                    Kind::NodeReport
                } else {
                    Kind::Rollup
                };
                (scope, kind)
            }
            Ok(Parsed::Other(Family::Alarm, scope)) => (scope, Kind::Alarm),
            // Node events (aggregators) and program events (agents) share the subject.
            Ok(Parsed::Other(Family::Event, scope)) => match peek_kind(payload) {
                Ok(Kind::ProgramEvent) => (scope, Kind::ProgramEvent),
                Ok(Kind::Unknown) => return Outcome::Skipped,
                // Any other kind is refused by the decode as the wrong one.
                Ok(_) => (scope, Kind::Event),
                Err(r) => return Outcome::Rejected(r),
            },
            Ok(Parsed::Other(Family::Audit, scope)) => match peek_kind(payload) {
                Ok(Kind::Unknown) => return Outcome::Skipped,
                Ok(_) => (scope, Kind::Audit),
                Err(r) => return Outcome::Rejected(r),
            },
            Ok(Parsed::Other(Family::Inventory, scope)) => (scope, Kind::Inventory),
            // Commands and their requests are not history.
            Ok(Parsed::Other(Family::Cmd, _)) => return Outcome::Skipped,
            Err(_) => return Outcome::Rejected(Reject::Subject),
        };
        let (scope, kind) = scope_kind;
        match kind {
            Kind::NodeReport => self.report(&scope, msg_id, payload, out),
            Kind::Rollup => self.rollup(&scope, msg_id, payload, out),
            Kind::Alarm => self.alarm(&scope, msg_id, payload, out),
            Kind::Event => self.event(&scope, msg_id, payload, out),
            Kind::ProgramEvent => self.program_event(&scope, msg_id, payload, out),
            Kind::Audit => self.audit(&scope, msg_id, payload, out),
            Kind::Inventory => self.inventory(&scope, msg_id, payload, out),
            _ => Outcome::Skipped,
        }
    }

    fn decode<B: serde::de::DeserializeOwned>(
        &self,
        payload: &[u8],
        kind: Kind,
    ) -> Result<Envelope<B>, Reject> {
        match wire::decode::<B>(payload, kind) {
            Ok(env) if (MIN_TS_MS..MAX_TS_MS).contains(&env.ts_ms) => Ok(env),
            Ok(_) => Err(Reject::Time),
            Err(WireError::UnsupportedSchema(_)) => Err(Reject::UnknownSchema),
            Err(WireError::UnexpectedKind { .. }) => Err(Reject::WrongKind),
            Err(_) => Err(Reject::Malformed),
        }
    }

    fn report(
        &mut self,
        scope: &Scope,
        msg_id: Option<&str>,
        payload: &[u8],
        out: &mut Rows,
    ) -> Outcome {
        let Scope::Node(id) = scope else {
            return Outcome::Rejected(Reject::Subject);
        };
        let env: Envelope<NodeReport> = match self.decode(payload, Kind::NodeReport) {
            Ok(e) => e,
            Err(r) => return Outcome::Rejected(r),
        };
        if !is_node(&env.source, id) {
            return Outcome::Rejected(Reject::Identity);
        }
        let msg = self.identify(msg_id, &env);
        let ts = env.ts_ms;
        let (c, g, n) = (id.cluster.as_str(), id.group.as_str(), id.node.as_str());
        let r = &env.body;
        let mut tables = 0u16;
        let mut mark = |t: Table| tables |= 1 << t.index();
        let programs_failed = r
            .programs
            .iter()
            .filter(|p| {
                matches!(
                    p.state,
                    wire::ProgramState::Crashed | wire::ProgramState::Error
                )
            })
            .count();
        let sensors_alarm = r.sensors.iter().filter(|s| s.alarm).count();
        if let Some(h) = &r.host {
            let m = &h.memory;
            let pct = |used: u64, total: u64| {
                if total == 0 {
                    0.0
                } else {
                    (used as f64 * 100.0 / total as f64) as f32
                }
            };
            let (processes, running, zombie) = r
                .processes
                .as_ref()
                .map_or((0, 0, 0), |p| (p.total, p.states.running, p.states.zombie));
            let row = NodeMetricsRow {
                ts,
                cluster: c.into(),
                group_name: g.into(),
                node: n.into(),
                msg,
                interval_ms: r.interval_ms,
                uptime_s: self.secs(h.uptime_s),
                cpu_cores: u16::try_from(h.cpu.per_core_pct.len()).unwrap_or(u16::MAX),
                cpu_pct: self.f32(h.cpu.total_pct),
                cpu_user_pct: self.f32(h.cpu.user_pct),
                cpu_system_pct: self.f32(h.cpu.system_pct),
                cpu_iowait_pct: self.f32(h.cpu.iowait_pct),
                cpu_steal_pct: self.f32(h.cpu.steal_pct),
                load1: self.f32(h.cpu.load1),
                load5: self.f32(h.cpu.load5),
                load15: self.f32(h.cpu.load15),
                mem_total_bytes: m.total_bytes,
                mem_used_bytes: m.used_bytes,
                mem_available_bytes: m.available_bytes,
                mem_used_pct: pct(m.used_bytes, m.total_bytes),
                swap_total_bytes: m.swap_total_bytes,
                swap_used_bytes: m.swap_used_bytes,
                swap_used_pct: pct(m.swap_used_bytes, m.swap_total_bytes),
                disk_busy_pct: self.f32(h.disks.iter().map(|d| d.busy_pct).fold(
                    0.0,
                    |a: f32, b| {
                        if b.is_finite() {
                            a.max(b)
                        } else {
                            a
                        }
                    },
                )),
                disk_read_bytes_ps: self.f64(h.disks.iter().map(|d| d.read_bytes_ps).sum()),
                disk_write_bytes_ps: self.f64(h.disks.iter().map(|d| d.write_bytes_ps).sum()),
                disk_read_ops_ps: self.f64(h.disks.iter().map(|d| d.read_ops_ps).sum()),
                disk_write_ops_ps: self.f64(h.disks.iter().map(|d| d.write_ops_ps).sum()),
                fs_total_bytes: h
                    .filesystems
                    .iter()
                    .fold(0u64, |a, f| a.saturating_add(f.total_bytes)),
                fs_used_bytes: h
                    .filesystems
                    .iter()
                    .fold(0u64, |a, f| a.saturating_add(f.used_bytes)),
                fs_used_max_pct: h
                    .filesystems
                    .iter()
                    .map(|f| pct(f.used_bytes, f.total_bytes))
                    .fold(0.0, f32::max),
                net_rx_bytes_ps: self.f64(h.nets.iter().map(|x| x.rx_bytes_ps).sum()),
                net_tx_bytes_ps: self.f64(h.nets.iter().map(|x| x.tx_bytes_ps).sum()),
                net_rx_packets_ps: self.f64(h.nets.iter().map(|x| x.rx_packets_ps).sum()),
                net_tx_packets_ps: self.f64(h.nets.iter().map(|x| x.tx_packets_ps).sum()),
                net_errors_ps: self
                    .f64(h.nets.iter().map(|x| x.rx_errors_ps + x.tx_errors_ps).sum()),
                net_dropped_ps: self.f64(
                    h.nets
                        .iter()
                        .map(|x| x.rx_dropped_ps + x.tx_dropped_ps)
                        .sum(),
                ),
                probe_loss_pct: self.f32(h.probes.iter().map(|p| p.loss_pct).fold(
                    0.0,
                    |a: f32, b| {
                        if b.is_finite() {
                            a.max(b)
                        } else {
                            a
                        }
                    },
                )),
                processes,
                procs_running: running,
                procs_zombie: zombie,
                sensors_alarm: u16::try_from(sensors_alarm).unwrap_or(u16::MAX),
                programs_failed: u16::try_from(programs_failed).unwrap_or(u16::MAX),
            };
            out.node_metrics.push(row);
            mark(Table::NodeMetrics);
            for d in &h.disks {
                let row = DiskRow {
                    ts,
                    cluster: c.into(),
                    group_name: g.into(),
                    node: n.into(),
                    msg,
                    device: self.string(&d.name),
                    busy_pct: self.f32(d.busy_pct),
                    read_bytes_ps: self.f64_32(d.read_bytes_ps),
                    write_bytes_ps: self.f64_32(d.write_bytes_ps),
                    read_ops_ps: self.f64_32(d.read_ops_ps),
                    write_ops_ps: self.f64_32(d.write_ops_ps),
                };
                out.disk_metrics.push(row);
                mark(Table::DiskMetrics);
            }
            for f in &h.filesystems {
                let row = FsRow {
                    ts,
                    cluster: c.into(),
                    group_name: g.into(),
                    node: n.into(),
                    msg,
                    mount: self.string(&f.mount),
                    device: self.string(&f.device),
                    fstype: self.string(&f.fstype),
                    total_bytes: f.total_bytes,
                    used_bytes: f.used_bytes,
                    avail_bytes: f.avail_bytes,
                    inodes_total: f.inodes_total,
                    inodes_used: f.inodes_used,
                };
                out.fs_metrics.push(row);
                mark(Table::FsMetrics);
            }
            for x in &h.nets {
                let row = NetRow {
                    ts,
                    cluster: c.into(),
                    group_name: g.into(),
                    node: n.into(),
                    msg,
                    iface: self.string(&x.name),
                    up: u8::from(x.up),
                    carrier: u8::from(x.carrier),
                    rx_bytes_ps: self.f64_32(x.rx_bytes_ps),
                    tx_bytes_ps: self.f64_32(x.tx_bytes_ps),
                    rx_packets_ps: self.f64_32(x.rx_packets_ps),
                    tx_packets_ps: self.f64_32(x.tx_packets_ps),
                    rx_errors_ps: self.f64_32(x.rx_errors_ps),
                    tx_errors_ps: self.f64_32(x.tx_errors_ps),
                    rx_dropped_ps: self.f64_32(x.rx_dropped_ps),
                    tx_dropped_ps: self.f64_32(x.tx_dropped_ps),
                };
                out.net_metrics.push(row);
                mark(Table::NetMetrics);
            }
        }
        if let Some(p) = &r.processes {
            out.process_metrics.reserve(p.rows.len());
            let mut seen = std::mem::take(&mut self.seen);
            let known = seen.node(id, ts);
            for row in &p.rows {
                if known.needs_row(row, ts) {
                    let info = ProcessInfoRow {
                        ts,
                        cluster: c.into(),
                        group_name: g.into(),
                        node: n.into(),
                        msg,
                        pid: row.pid,
                        start_time: row.start_time_ms.clamp(MIN_TS_MS, MAX_TS_MS),
                        ppid: row.ppid,
                        name: self.string(&row.name),
                        cmdline: self.string(&row.cmdline),
                        user: self.string(&row.user),
                    };
                    out.processes.push(info);
                    mark(Table::Processes);
                }
                let row = self.process_row(ts, c, g, n, msg, row);
                out.process_metrics.push(row);
                mark(Table::ProcessMetrics);
            }
            known.forget_gone(ts);
            seen.sweep(ts);
            self.seen = seen;
        }
        for s in &r.sensors {
            let row = SensorRow {
                ts,
                cluster: c.into(),
                group_name: g.into(),
                node: n.into(),
                msg,
                sensor: self.string(&s.id),
                chip: self.string(&s.chip),
                label: self.string(&s.label),
                kind: s.kind.as_str(),
                source: s.source.as_str(),
                value: self.f64_32(s.value),
                min: s.min.map(|v| self.f64_32(v)),
                max: s.max.map(|v| self.f64_32(v)),
                crit: s.crit.map(|v| self.f64_32(v)),
                alarm: u8::from(s.alarm),
            };
            out.sensor_readings.push(row);
            mark(Table::SensorReadings);
        }
        if tables == 0 {
            Outcome::Skipped
        } else {
            Outcome::Rows(tables)
        }
    }

    fn process_row(
        &mut self,
        ts: i64,
        c: &str,
        g: &str,
        n: &str,
        msg: u64,
        p: &ProcessRow,
    ) -> ProcessMetricsRow {
        ProcessMetricsRow {
            ts,
            cluster: c.into(),
            group_name: g.into(),
            node: n.into(),
            msg,
            pid: p.pid,
            start_time: p.start_time_ms.clamp(MIN_TS_MS, MAX_TS_MS),
            name: self.string(&p.name),
            user: self.string(&p.user),
            state: p.state.as_str(),
            cpu_pct: self.f32(p.cpu_pct),
            rss_bytes: p.rss_bytes,
            vsz_bytes: p.vsz_bytes,
            fds: p.fds,
            threads: p.threads,
            read_bytes_ps: p.read_bytes_ps.map(|v| self.f64_32(v)),
            write_bytes_ps: p.write_bytes_ps.map(|v| self.f64_32(v)),
            nice: i8::try_from(p.nice.clamp(-128, 127)).unwrap_or(0),
            priority: i16::try_from(p.priority.clamp(-32768, 32767)).unwrap_or(0),
            run_time_s: self.secs(p.run_time_s),
            cpu_time_s: self.f64(p.cpu_time_s),
        }
    }

    fn rollup(
        &mut self,
        scope: &Scope,
        msg_id: Option<&str>,
        payload: &[u8],
        out: &mut Rows,
    ) -> Outcome {
        let env: Envelope<Rollup> = match self.decode(payload, Kind::Rollup) {
            Ok(e) => e,
            Err(r) => return Outcome::Rejected(r),
        };
        let (cluster, group) = match scope {
            Scope::Grid => (String::new(), String::new()),
            Scope::Cluster { cluster } => (cluster.clone(), String::new()),
            Scope::Group { cluster, group } => (cluster.clone(), group.clone()),
            Scope::Node(_) => return Outcome::Rejected(Reject::Subject),
        };
        if !env.source.cluster.is_empty() && env.source.cluster != cluster
            || env.source.group.as_deref().unwrap_or("") != group
        {
            return Outcome::Rejected(Reject::Identity);
        }
        let msg = self.identify(msg_id, &env);
        let b = &env.body;
        let ts = b.window_start_ms.clamp(MIN_TS_MS, MAX_TS_MS);
        let level = b.level.as_str();
        let s = &b.sums;
        let ps = &b.process_states;
        let process_states = vec![
            ("running", ps.running),
            ("waiting", ps.waiting),
            ("busy", ps.busy),
            ("stopped", ps.stopped),
            ("zombie", ps.zombie),
            ("dead", ps.dead),
            ("unknown", ps.unknown),
        ];
        let program_states = b.programs.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let input = b.input.counters().to_vec();
        out.rollups.push(RollupRow {
            ts,
            level,
            cluster: cluster.clone(),
            group_name: group.clone(),
            msg,
            window_ms: b.window_ms,
            nodes_online: b.nodes.online,
            nodes_stale: b.nodes.stale,
            nodes_offline: b.nodes.offline,
            inputs: b.inputs,
            cpu_cores: s.cpu_cores,
            memory_total_bytes: s.memory_total_bytes,
            memory_used_bytes: s.memory_used_bytes,
            swap_total_bytes: s.swap_total_bytes,
            swap_used_bytes: s.swap_used_bytes,
            fs_total_bytes: s.fs_total_bytes,
            fs_used_bytes: s.fs_used_bytes,
            disk_read_bytes_ps: self.f64(s.disk_read_bytes_ps),
            disk_write_bytes_ps: self.f64(s.disk_write_bytes_ps),
            net_rx_bytes_ps: self.f64(s.net_rx_bytes_ps),
            net_tx_bytes_ps: self.f64(s.net_tx_bytes_ps),
            processes: s.processes,
            process_states,
            program_states,
            sensors_beyond_limits: b.faults.sensors_beyond_limits,
            sensors_over_crit: b.faults.over_crit,
            fans_stopped: b.faults.fans_stopped,
            voltages_out_of_range: b.faults.voltages_out_of_range,
            nodes_with_faults: b.faults.nodes_with_faults,
            alarms_active: b.alarms.active,
            alarms_critical: b.alarms.critical,
            input,
        });
        let mut tables = 1u16 << Table::Rollups.index();
        for (name, m) in &b.metrics {
            let sketch = Blob(rmp_serde::to_vec_named(&m.sketch).unwrap_or_default());
            let row = RollupMetricRow {
                ts,
                level,
                cluster: cluster.clone(),
                group_name: group.clone(),
                msg,
                metric: self.string(name),
                count: m.count,
                min: self.f64(m.min),
                mean: self.f64(m.mean),
                max: self.f64(m.max),
                p50: self.f64(m.p50),
                p95: self.f64(m.p95),
                sum: self.f64(m.sum),
                sketch,
            };
            out.rollup_metrics.push(row);
            tables |= 1 << Table::RollupMetrics.index();
        }
        Outcome::Rows(tables)
    }

    fn alarm(
        &mut self,
        scope: &Scope,
        msg_id: Option<&str>,
        payload: &[u8],
        out: &mut Rows,
    ) -> Outcome {
        let env: Envelope<AlarmEvent> = match self.decode(payload, Kind::Alarm) {
            Ok(e) => e,
            Err(r) => return Outcome::Rejected(r),
        };
        let msg = self.identify(msg_id, &env);
        let (cluster, group, node, level) = scope_parts(scope);
        let a = &env.body;
        let ts = if (MIN_TS_MS..MAX_TS_MS).contains(&a.ts_ms) {
            a.ts_ms
        } else {
            env.ts_ms
        };
        let raised_at = a.raised_ms.clamp(MIN_TS_MS, MAX_TS_MS);
        let duration_ms = match a.action {
            wire::AlarmAction::Clear => Some((ts - raised_at).max(0)),
            wire::AlarmAction::Raise => None,
        };
        out.alarms.push(AlarmRow {
            ts,
            cluster,
            group_name: group,
            node,
            msg,
            scope: level,
            alarm_id: self.string(&a.id),
            action: a.action.as_str(),
            rule: self.string(&a.rule),
            severity: a.severity.as_str(),
            hardware: u8::from(is_hardware_rule(&a.rule, &a.metric)),
            metric: self.string(&a.metric),
            instance: self.string(a.instance.as_deref().unwrap_or("")),
            op: self.string(&a.op),
            threshold: self.f64(a.threshold),
            clear_threshold: self.f64(a.clear_threshold),
            value: self.f64(a.value),
            raised_at,
            duration_ms,
            message: self.string(&a.message),
        });
        Outcome::Rows(1 << Table::Alarms.index())
    }

    fn event(
        &mut self,
        scope: &Scope,
        msg_id: Option<&str>,
        payload: &[u8],
        out: &mut Rows,
    ) -> Outcome {
        let Scope::Node(id) = scope else {
            return Outcome::Rejected(Reject::Subject);
        };
        let env: Envelope<Event> = match self.decode(payload, Kind::Event) {
            Ok(e) => e,
            Err(r) => return Outcome::Rejected(r),
        };
        let msg = self.identify(msg_id, &env);
        let e = &env.body;
        out.node_events.push(NodeEventRow {
            ts: env.ts_ms,
            cluster: id.cluster.clone(),
            group_name: id.group.clone(),
            node: id.node.clone(),
            msg,
            event: e.event.as_str(),
            last_seen: e.last_seen_ms.map(|t| t.clamp(MIN_TS_MS, MAX_TS_MS)),
            missed_intervals: e.missed_intervals,
            message: self.string(&e.message),
        });
        Outcome::Rows(1 << Table::NodeEvents.index())
    }

    fn program_event(
        &mut self,
        scope: &Scope,
        msg_id: Option<&str>,
        payload: &[u8],
        out: &mut Rows,
    ) -> Outcome {
        let Scope::Node(id) = scope else {
            return Outcome::Rejected(Reject::Subject);
        };
        let env: Envelope<ProgramEvent> = match self.decode(payload, Kind::ProgramEvent) {
            Ok(e) => e,
            Err(r) => return Outcome::Rejected(r),
        };
        // Agents publish these about themselves.
        if !is_node(&env.source, id) {
            return Outcome::Rejected(Reject::Identity);
        }
        let msg = self.identify(msg_id, &env);
        let e = &env.body;
        // The transition's own time; a missing (0) or impossible one falls back to the
        // envelope's, which decode has checked.
        let ts = if e.ts_ms > MIN_TS_MS && e.ts_ms < MAX_TS_MS {
            e.ts_ms
        } else {
            env.ts_ms
        };
        let (exit_how, exit_value) = match e.exit {
            None => ("", None),
            Some(ExitStatus::Code(c)) => ("code", Some(c)),
            Some(ExitStatus::Signal(s)) => ("signal", Some(s)),
            Some(ExitStatus::Unknown) => ("unknown", None),
        };
        out.process_events.push(ProcessEventRow {
            ts,
            cluster: id.cluster.clone(),
            group_name: id.group.clone(),
            node: id.node.clone(),
            msg,
            program: self.string(&e.program),
            state_from: e.from.as_str(),
            state_to: e.to.as_str(),
            reason: self.string(&e.reason),
            pid: e.pid,
            exit_how,
            exit_value,
            restarts: e.restarts,
            version: self.string(e.version.as_deref().unwrap_or("")),
            alarm: u8::from(e.alarm),
        });
        Outcome::Rows(1 << Table::ProcessEvents.index())
    }

    fn audit(
        &mut self,
        scope: &Scope,
        msg_id: Option<&str>,
        payload: &[u8],
        out: &mut Rows,
    ) -> Outcome {
        let Scope::Node(id) = scope else {
            return Outcome::Rejected(Reject::Subject);
        };
        let env: Envelope<AuditRecord> = match self.decode(payload, Kind::Audit) {
            Ok(e) => e,
            Err(r) => return Outcome::Rejected(r),
        };
        // The agent that acted (or refused) writes the record about itself.
        if !is_node(&env.source, id) {
            return Outcome::Rejected(Reject::Identity);
        }
        let msg = self.identify(msg_id, &env);
        let a = &env.body;
        out.command_audit.push(CommandAuditRow {
            ts: env.ts_ms,
            cluster: id.cluster.clone(),
            group_name: id.group.clone(),
            node: id.node.clone(),
            msg,
            phase: a.phase.as_str(),
            request_id: self.string(&a.request_id),
            issuer: self.string(&a.issuer),
            issuer_name: self.string(a.issuer_name.as_deref().unwrap_or("")),
            on_behalf_of: self.string(a.on_behalf_of.as_deref().unwrap_or("")),
            signed: u8::from(a.signed),
            op: self.string(&a.op),
            program: self.string(a.program.as_deref().unwrap_or("")),
            args: self.string(&a.args),
            target: self.string(&a.target),
            ok: u8::from(a.ok),
            error: a.error.map_or("", |e| e.as_str()),
            message: self.string(&a.message),
            duration_us: a.duration_us,
        });
        Outcome::Rows(1 << Table::CommandAudit.index())
    }

    fn inventory(
        &mut self,
        scope: &Scope,
        msg_id: Option<&str>,
        payload: &[u8],
        out: &mut Rows,
    ) -> Outcome {
        let Scope::Node(id) = scope else {
            return Outcome::Rejected(Reject::Subject);
        };
        let env: Envelope<Inventory> = match self.decode(payload, Kind::Inventory) {
            Ok(e) => e,
            Err(r) => return Outcome::Rejected(r),
        };
        if env.source.node.as_deref() != Some(id.node.as_str()) {
            return Outcome::Rejected(Reject::Identity);
        }
        let msg = self.identify(msg_id, &env);
        let i = &env.body;
        let disk_names = i.disks.iter().map(|d| self.string(&d.name)).collect();
        let disk_models = i.disks.iter().map(|d| self.string(&d.model)).collect();
        let disk_capacities = i.disks.iter().map(|d| d.capacity_bytes).collect();
        let disk_rotational = i.disks.iter().map(|d| u8::from(d.rotational)).collect();
        out.inventory.push(InventoryRow {
            ts: env.ts_ms,
            cluster: id.cluster.clone(),
            group_name: id.group.clone(),
            node: id.node.clone(),
            msg,
            hostname: self.string(&i.hostname),
            cpu_model: self.string(&i.cpu_model),
            cpu_logical_cores: i.cpu_logical_cores,
            cpu_physical_cores: i.cpu_physical_cores,
            memory_bytes: i.memory_bytes,
            swap_bytes: i.swap_bytes,
            disk_capacity_bytes: i.disk_capacity_bytes,
            disk_names,
            disk_capacities,
            disk_models,
            disk_rotational,
            os_name: self.string(&i.os_name),
            os_version: self.string(&i.os_version),
            kernel: self.string(&i.kernel),
            arch: self.string(&i.arch),
            agent_version: self.string(&i.agent_version),
            boot_time: i.boot_time_ms.clamp(MIN_TS_MS, MAX_TS_MS),
        });
        Outcome::Rows(1 << Table::Inventory.index())
    }

    /// The `msg` of a message: its `Nats-Msg-Id`, or the envelope's own id; remembered as
    /// [`Converter::last_msg`].
    fn identify<B>(&mut self, msg_id: Option<&str>, env: &Envelope<B>) -> u64 {
        let msg = match msg_id {
            Some(id) => msg_hash(id.as_bytes()),
            None => msg_hash(env.msg_id().as_bytes()),
        };
        self.last_msg = msg;
        msg
    }

    fn f32(&mut self, v: f32) -> f32 {
        if v.is_finite() {
            v
        } else {
            self.repairs.non_finite += 1;
            0.0
        }
    }

    fn f64(&mut self, v: f64) -> f64 {
        if v.is_finite() {
            v
        } else {
            self.repairs.non_finite += 1;
            0.0
        }
    }

    /// An f64 stored as Float32; values beyond its range count as non-finite.
    fn f64_32(&mut self, v: f64) -> f32 {
        let x = v as f32;
        if x.is_finite() {
            x
        } else {
            self.repairs.non_finite += 1;
            0.0
        }
    }

    /// Whole seconds of a duration.
    fn secs(&mut self, v: f64) -> u32 {
        if !v.is_finite() {
            self.repairs.non_finite += 1;
            return 0;
        }
        if v < 0.0 {
            self.repairs.negative += 1;
            return 0;
        }
        v.min(f64::from(u32::MAX)) as u32
    }

    fn string(&mut self, s: &str) -> String {
        if s.len() <= self.max_string {
            return s.to_string();
        }
        self.repairs.cut_strings += 1;
        let mut end = self.max_string;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s[..end].to_string()
    }
}

/// The envelope's kind, read before the body where one subject carries several kinds.
fn peek_kind(payload: &[u8]) -> Result<Kind, Reject> {
    match wire::peek(payload) {
        Ok(h) => Ok(h.kind),
        Err(WireError::UnsupportedSchema(_)) => Err(Reject::UnknownSchema),
        Err(_) => Err(Reject::Malformed),
    }
}

/// Whether a message's source is the node its subject names.
fn is_node(source: &Source, id: &NodeId) -> bool {
    source.cluster == id.cluster
        && source.group.as_deref() == Some(id.group.as_str())
        && source.node.as_deref() == Some(id.node.as_str())
}

/// Cluster, group, node and level name of an alarm's scope.
fn scope_parts(scope: &Scope) -> (String, String, String, &'static str) {
    match scope {
        Scope::Grid => (String::new(), String::new(), String::new(), "grid"),
        Scope::Cluster { cluster } => (cluster.clone(), String::new(), String::new(), "cluster"),
        Scope::Group { cluster, group } => (cluster.clone(), group.clone(), String::new(), "group"),
        Scope::Node(id) => (
            id.cluster.clone(),
            id.group.clone(),
            id.node.clone(),
            "node",
        ),
    }
}

/// Hardware rules (the built-in sensor, fan and voltage alarms, and any rule on a sensor
/// metric) against software ones, for the fault views' split.
pub fn is_hardware_rule(rule: &str, metric: &str) -> bool {
    matches!(rule, "sensor_crit" | "fan_stopped" | "voltage_range")
        || metric.starts_with("temp")
        || metric.starts_with("fan")
        || metric.starts_with("sensor")
        || metric.starts_with("voltage")
}

#[cfg(test)]
mod tests {
    use super::*;
    use gridmon_nats::command::{AuditPhase, ErrorKind};
    use gridmon_nats::wire::{
        AlarmAction, CpuMetrics, HostMetrics, Level, MemoryMetrics, MetricSummary, ProcessTable,
        SCHEMA_VERSION,
    };

    fn conv() -> Converter {
        Converter::new(Subjects::new("grid").unwrap(), 64)
    }

    fn env<B>(kind: Kind, source: Source, ts_ms: i64, body: B) -> Vec<u8>
    where
        B: Serialize,
    {
        wire::encode(&Envelope {
            schema: SCHEMA_VERSION,
            kind,
            source,
            ts_ms,
            run_id: 1,
            seq: 1,
            body,
        })
        .unwrap()
    }

    fn node_source(n: &str) -> Source {
        Source::from(&NodeId::new("c", "g", n).unwrap())
    }

    fn report() -> NodeReport {
        NodeReport {
            interval_ms: 1000,
            host: Some(HostMetrics {
                cpu: CpuMetrics {
                    total_pct: 50.0,
                    per_core_pct: vec![50.0; 8],
                    ..Default::default()
                },
                memory: MemoryMetrics {
                    total_bytes: 1000,
                    used_bytes: 250,
                    ..Default::default()
                },
                ..Default::default()
            }),
            processes: Some(ProcessTable {
                total: 2,
                rows: vec![
                    ProcessRow {
                        pid: 1,
                        name: "init".into(),
                        cmdline: "é".repeat(100),
                        ..Default::default()
                    },
                    ProcessRow {
                        pid: 2,
                        name: "sh".into(),
                        run_time_s: -3.0,
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_report_fills_node_and_process_rows() {
        let mut c = conv();
        let mut rows = Rows::default();
        let payload = env(Kind::NodeReport, node_source("n1"), 1_000, report());
        let out = c.add_message("grid.c.g.n1", Some("id-1"), &payload, &mut rows);
        assert_eq!(
            out,
            Outcome::Rows(
                (1 << Table::NodeMetrics.index())
                    | (1 << Table::ProcessMetrics.index())
                    | (1 << Table::Processes.index())
            )
        );
        let n = &rows.node_metrics[0];
        assert_eq!((n.cpu_cores, n.cpu_pct, n.mem_used_pct), (8, 50.0, 25.0));
        assert_eq!(n.msg, msg_hash(b"id-1"));
        assert_eq!(c.last_msg, n.msg);
        assert_eq!(rows.process_metrics.len(), 2);
        assert_eq!(rows.processes.len(), 2);
        // 100 two-byte characters cut to at most 64 bytes, on a character boundary.
        assert_eq!(rows.processes[0].cmdline, "é".repeat(32));
        assert_eq!(
            (rows.processes[1].pid, rows.processes[1].name.as_str()),
            (2, "sh")
        );
        assert_eq!(rows.process_metrics[1].run_time_s, 0);
        assert_eq!(c.repairs.cut_strings, 1);
        assert_eq!(c.repairs.negative, 1);
    }

    /// Feeds `report` as node `n` at `ts`; returns the pids given a `processes` row.
    fn processes_written(c: &mut Converter, n: &str, ts: i64, report: NodeReport) -> Vec<u32> {
        let mut rows = Rows::default();
        let payload = env(Kind::NodeReport, node_source(n), ts, report);
        let subject = format!("grid.c.g.{n}");
        assert!(matches!(
            c.add_message(&subject, None, &payload, &mut rows),
            Outcome::Rows(_)
        ));
        let table = &payload_rows(&payload);
        assert_eq!(
            table,
            &rows.process_metrics.len(),
            "every process has its metrics row"
        );
        rows.processes.iter().map(|p| p.pid).collect()
    }

    /// The process rows a report carries.
    fn payload_rows(payload: &[u8]) -> usize {
        let e: Envelope<NodeReport> = wire::decode(payload, Kind::NodeReport).unwrap();
        e.body.processes.map_or(0, |p| p.rows.len())
    }

    fn with_procs(procs: &[(u32, i64, &str)]) -> NodeReport {
        let mut r = report();
        r.processes.as_mut().unwrap().rows = procs
            .iter()
            .map(|&(pid, start, cmd)| ProcessRow {
                pid,
                start_time_ms: start,
                name: "w".into(),
                cmdline: cmd.into(),
                ..Default::default()
            })
            .collect();
        r
    }

    #[test]
    fn a_process_row_is_written_once_then_on_change_restart_or_after_a_day() {
        let mut c = conv();
        let base = [(10, 5, "a"), (11, 5, "b")];
        assert_eq!(
            processes_written(&mut c, "n1", 1_000, with_procs(&base)),
            [10, 11]
        );
        // Seen again: metrics rows only.
        assert!(processes_written(&mut c, "n1", 11_000, with_procs(&base)).is_empty());
        // Another node with the same pids is other processes.
        assert_eq!(
            processes_written(&mut c, "n2", 11_000, with_procs(&base)),
            [10, 11]
        );
        // A changed command line, and pid 11 reused by a new process (another start time).
        let changed = [(10, 5, "a --reloaded"), (11, 9, "b")];
        assert_eq!(
            processes_written(&mut c, "n1", 21_000, with_procs(&changed)),
            [10, 11]
        );
        assert!(processes_written(&mut c, "n1", 31_000, with_procs(&changed)).is_empty());
        // A day after its row was written, a running process gets it again.
        let day = 21_000 + PROCESS_REWRITE_MS;
        assert!(processes_written(&mut c, "n1", day - 1, with_procs(&changed)).is_empty());
        assert_eq!(
            processes_written(&mut c, "n1", day, with_procs(&changed)),
            [10, 11]
        );
    }

    #[test]
    fn processes_long_absent_are_forgotten_and_written_again() {
        let mut c = conv();
        let both = [(10, 5, "a"), (11, 5, "b")];
        let one = [(10, 5, "a")];
        assert_eq!(
            processes_written(&mut c, "n1", 1_000, with_procs(&both)).len(),
            2
        );
        assert_eq!(c.seen.len(), 2);
        // Absent from one report (a selection of processes): still remembered.
        assert!(processes_written(&mut c, "n1", 11_000, with_procs(&one)).is_empty());
        assert!(processes_written(&mut c, "n1", 21_000, with_procs(&both)).is_empty());
        // Absent for longer than the forget time: forgotten, then written on return.
        let later = 21_000 + PROCESS_FORGET_MS + 1;
        assert!(processes_written(&mut c, "n1", later, with_procs(&one)).is_empty());
        assert_eq!(c.seen.len(), 1);
        assert_eq!(
            processes_written(&mut c, "n1", later + 10_000, with_procs(&both)),
            [11]
        );
        // An old message delivered again does not make the map forget recent processes.
        assert!(processes_written(&mut c, "n1", 1_000, with_procs(&[])).is_empty());
        assert_eq!(c.seen.len(), 2);
    }

    #[test]
    fn mismatches_and_non_history_are_refused_or_skipped() {
        let mut c = conv();
        let mut rows = Rows::default();
        let payload = env(Kind::NodeReport, node_source("n1"), 1_000, report());
        assert_eq!(
            c.add_message("grid.c.g.other", None, &payload, &mut rows),
            Outcome::Rejected(Reject::Identity)
        );
        assert_eq!(
            c.add_message("grid.cmd.c.g", None, b"anything", &mut rows),
            Outcome::Skipped
        );
        assert_eq!(
            c.add_message("grid.c.g.n1", None, b"\xc1", &mut rows),
            Outcome::Rejected(Reject::Malformed)
        );
        let old = env(Kind::NodeReport, node_source("n1"), -1, report());
        assert_eq!(
            c.add_message("grid.c.g.n1", None, &old, &mut rows),
            Outcome::Rejected(Reject::Time)
        );
        assert_eq!(
            c.add_message("other.c.g.n1", None, &payload, &mut rows),
            Outcome::Rejected(Reject::Subject)
        );
        assert_eq!(rows.total(), 0);
    }

    #[test]
    fn rollups_keep_merged_quantiles_and_clears_carry_a_duration() {
        let mut c = conv();
        let mut rows = Rows::default();
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        let sketch = gridmon_nats::sketch::Sketch::from_values(0.01, &values);
        let mut metrics = std::collections::BTreeMap::new();
        metrics.insert(
            "cpu_pct".to_string(),
            MetricSummary {
                count: 100,
                min: 1.0,
                mean: 50.5,
                max: 100.0,
                p50: sketch.quantile(0.5).unwrap(),
                p95: sketch.quantile(0.95).unwrap(),
                sum: 5050.0,
                sketch,
            },
        );
        let rollup = Rollup {
            level: Level::Group,
            window_start_ms: 5_000,
            window_ms: 1000,
            metrics,
            ..Default::default()
        };
        let source = Source {
            cluster: "c".into(),
            group: Some("g".into()),
            node: None,
        };
        let payload = env(Kind::Rollup, source.clone(), 6_000, rollup);
        assert!(matches!(
            c.add_message("grid.c.g", None, &payload, &mut rows),
            Outcome::Rows(_)
        ));
        let m = &rows.rollup_metrics[0];
        assert_eq!(
            (m.level, m.group_name.as_str(), m.ts),
            ("group", "g", 5_000)
        );
        assert!((m.p95 - 95.0).abs() <= 95.0 * 0.01, "p95 {}", m.p95);
        assert!(!m.sketch.0.is_empty());

        let clear = AlarmEvent {
            id: "a1".into(),
            action: AlarmAction::Clear,
            rule: "fan_stopped".into(),
            raised_ms: 10_000,
            ts_ms: 70_000,
            ..Default::default()
        };
        let payload = env(Kind::Alarm, node_source("n1"), 70_000, clear);
        c.add_message("grid.alarm.c.g.n1", None, &payload, &mut rows);
        let a = &rows.alarms[0];
        assert_eq!(
            (a.duration_ms, a.hardware, a.scope),
            (Some(60_000), 1, "node")
        );
    }

    fn program_event() -> ProgramEvent {
        ProgramEvent {
            program: "worker-1".into(),
            from: wire::ProgramState::Running,
            to: wire::ProgramState::Crashed,
            reason: "exited".into(),
            pid: Some(4242),
            exit: Some(ExitStatus::Signal(9)),
            restarts: 3,
            version: Some("1.4.2".into()),
            ts_ms: 9_000,
            alarm: true,
        }
    }

    fn audit_record() -> AuditRecord {
        AuditRecord {
            phase: AuditPhase::Finished,
            request_id: "0f1e2d".into(),
            issuer: "UABC".into(),
            issuer_name: Some("alice".into()),
            on_behalf_of: None,
            signed: true,
            op: "restart".into(),
            program: Some("worker-1".into()),
            args: "x".repeat(100),
            target: "c/g/n1".into(),
            ok: false,
            error: Some(ErrorKind::Failed),
            message: "did not come up".into(),
            duration_us: 1_500_000,
        }
    }

    #[test]
    fn program_events_and_node_events_share_the_event_subject() {
        let mut c = conv();
        let mut rows = Rows::default();
        let payload = env(
            Kind::ProgramEvent,
            node_source("n1"),
            10_000,
            program_event(),
        );
        assert_eq!(
            c.add_message("grid.event.c.g.n1", Some("pe-1"), &payload, &mut rows),
            Outcome::Rows(1 << Table::ProcessEvents.index())
        );
        let e = &rows.process_events[0];
        assert_eq!(
            (
                e.ts,
                e.cluster.as_str(),
                e.group_name.as_str(),
                e.node.as_str()
            ),
            (9_000, "c", "g", "n1"),
            "ts is the transition's own time"
        );
        assert_eq!(e.msg, msg_hash(b"pe-1"));
        assert_eq!(
            (
                e.program.as_str(),
                e.state_from,
                e.state_to,
                e.reason.as_str()
            ),
            ("worker-1", "running", "crashed", "exited")
        );
        assert_eq!(
            (e.pid, e.exit_how, e.exit_value, e.restarts),
            (Some(4242), "signal", Some(9), 3)
        );
        assert_eq!((e.version.as_str(), e.alarm), ("1.4.2", 1));

        // No exit, no version, no time of its own: empty, NULL, the envelope's time.
        let started = ProgramEvent {
            program: "api".into(),
            from: wire::ProgramState::Waiting,
            to: wire::ProgramState::Starting,
            ts_ms: 0,
            ..Default::default()
        };
        let payload = env(Kind::ProgramEvent, node_source("n1"), 11_000, started);
        c.add_message("grid.event.c.g.n1", None, &payload, &mut rows);
        let e = &rows.process_events[1];
        assert_eq!(
            (
                e.ts,
                e.exit_how,
                e.exit_value,
                e.pid,
                e.version.as_str(),
                e.alarm
            ),
            (11_000, "", None, None, "", 0)
        );
        let exited = ProgramEvent {
            exit: Some(ExitStatus::Code(0)),
            ts_ms: 12_000,
            ..Default::default()
        };
        let payload = env(Kind::ProgramEvent, node_source("n1"), 12_000, exited);
        c.add_message("grid.event.c.g.n1", None, &payload, &mut rows);
        assert_eq!(
            (
                rows.process_events[2].exit_how,
                rows.process_events[2].exit_value
            ),
            ("code", Some(0))
        );

        // The aggregators' liveness events still go to node_events.
        let offline = Event {
            event: wire::EventKind::NodeOffline,
            last_seen_ms: Some(7_000),
            missed_intervals: 3,
            message: "gone".into(),
        };
        let source = Source {
            cluster: "c".into(),
            group: Some("g".into()),
            node: None,
        };
        let payload = env(Kind::Event, source, 10_000, offline);
        assert_eq!(
            c.add_message("grid.event.c.g.n1", None, &payload, &mut rows),
            Outcome::Rows(1 << Table::NodeEvents.index())
        );
        assert_eq!(
            (rows.node_events[0].event, rows.node_events[0].node.as_str()),
            ("node_offline", "n1")
        );
        assert_eq!(rows.process_events.len(), 3);
    }

    #[test]
    fn audit_records_keep_every_field() {
        let mut c = conv();
        let mut rows = Rows::default();
        let payload = env(Kind::Audit, node_source("n1"), 20_000, audit_record());
        assert_eq!(
            c.add_message("grid.audit.c.g.n1", None, &payload, &mut rows),
            Outcome::Rows(1 << Table::CommandAudit.index())
        );
        let a = &rows.command_audit[0];
        assert_eq!(
            (
                a.ts,
                a.cluster.as_str(),
                a.group_name.as_str(),
                a.node.as_str()
            ),
            (20_000, "c", "g", "n1")
        );
        assert_eq!(
            a.msg,
            msg_hash(b"c.g.n1:audit:1:1"),
            "the envelope's own id"
        );
        assert_eq!(
            (a.phase, a.request_id.as_str(), a.issuer.as_str()),
            ("finished", "0f1e2d", "UABC")
        );
        assert_eq!(
            (a.issuer_name.as_str(), a.on_behalf_of.as_str(), a.signed),
            ("alice", "", 1)
        );
        assert_eq!(
            (a.op.as_str(), a.program.as_str(), a.target.as_str()),
            ("restart", "worker-1", "c/g/n1")
        );
        assert_eq!(
            (a.ok, a.error, a.message.as_str(), a.duration_us),
            (0, "failed", "did not come up", 1_500_000)
        );
        // 100 bytes of args cut to max_string_bytes (64).
        assert_eq!(a.args, "x".repeat(64));
        assert_eq!(c.repairs.cut_strings, 1);

        let denied = AuditRecord {
            phase: AuditPhase::Denied,
            error: Some(ErrorKind::Denied),
            program: None,
            issuer_name: None,
            on_behalf_of: Some("web:bob".into()),
            ..audit_record()
        };
        let payload = env(Kind::Audit, node_source("n1"), 21_000, denied);
        c.add_message("grid.audit.c.g.n1", None, &payload, &mut rows);
        let a = &rows.command_audit[1];
        assert_eq!(
            (a.phase, a.error, a.program.as_str(), a.issuer_name.as_str()),
            ("denied", "denied", "", "")
        );
        assert_eq!(a.on_behalf_of, "web:bob");
    }

    /// An envelope whose kind is a name this build does not know.
    fn env_of_kind(kind: &str, body: impl Serialize) -> Vec<u8> {
        #[derive(Serialize)]
        struct Raw<'a, B> {
            schema: u16,
            kind: &'a str,
            source: Source,
            ts_ms: i64,
            run_id: u64,
            seq: u64,
            body: B,
        }
        rmp_serde::to_vec_named(&Raw {
            schema: SCHEMA_VERSION,
            kind,
            source: node_source("n1"),
            ts_ms: 1_000,
            run_id: 1,
            seq: 1,
            body,
        })
        .unwrap()
    }

    #[test]
    fn bad_program_events_and_audit_records_are_refused_or_skipped() {
        let mut c = conv();
        let mut rows = Rows::default();
        let check = |c: &mut Converter, rows: &mut Rows, subject: &str, payload: &[u8], want| {
            assert_eq!(
                c.add_message(subject, None, payload, rows),
                want,
                "{subject}"
            );
        };
        // A newer publisher's kind on either subject: skipped (counted by the pipeline).
        let newer = env_of_kind("program_event_v9", program_event());
        check(
            &mut c,
            &mut rows,
            "grid.event.c.g.n1",
            &newer,
            Outcome::Skipped,
        );
        check(
            &mut c,
            &mut rows,
            "grid.audit.c.g.n1",
            &newer,
            Outcome::Skipped,
        );
        // A known kind that does not belong there.
        let report = env(Kind::NodeReport, node_source("n1"), 1_000, report());
        let wrong = Outcome::Rejected(Reject::WrongKind);
        check(&mut c, &mut rows, "grid.event.c.g.n1", &report, wrong);
        check(&mut c, &mut rows, "grid.audit.c.g.n1", &report, wrong);
        // Another node's event, or one on a group subject.
        let pe = env(
            Kind::ProgramEvent,
            node_source("n2"),
            1_000,
            program_event(),
        );
        let identity = Outcome::Rejected(Reject::Identity);
        check(&mut c, &mut rows, "grid.event.c.g.n1", &pe, identity);
        let au = env(Kind::Audit, node_source("n2"), 1_000, audit_record());
        check(&mut c, &mut rows, "grid.audit.c.g.n1", &au, identity);
        check(
            &mut c,
            &mut rows,
            "grid.audit.c.g",
            &au,
            Outcome::Rejected(Reject::Subject),
        );
        // Garbage, a body of the wrong shape, a time before 1970.
        let malformed = Outcome::Rejected(Reject::Malformed);
        check(&mut c, &mut rows, "grid.event.c.g.n1", b"\xc1", malformed);
        check(&mut c, &mut rows, "grid.audit.c.g.n1", b"", malformed);
        let shapeless = env(Kind::ProgramEvent, node_source("n1"), 1_000, "not a map");
        check(
            &mut c,
            &mut rows,
            "grid.event.c.g.n1",
            &shapeless,
            malformed,
        );
        let old = env(Kind::Audit, node_source("n1"), -1, audit_record());
        check(
            &mut c,
            &mut rows,
            "grid.audit.c.g.n1",
            &old,
            Outcome::Rejected(Reject::Time),
        );
        assert_eq!(rows.total(), 0);
    }
}
