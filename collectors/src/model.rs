//! The measurements the collectors produce: plain data, no encoding and no transport.
//!
//! Units are in the field names (`_bytes`, `_ps` = per second, `_pct` = percent 0..=100 of one
//! resource, `_ms`, `_s`). Rates are computed over the interval between two samples; the first
//! sample after start has no rates and reports them as 0.

use serde::{Deserialize, Serialize};

/// Host-wide metrics for one interval.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HostMetrics {
    /// Seconds since the machine booted.
    pub uptime_s: f64,
    pub cpu: CpuMetrics,
    pub memory: MemoryMetrics,
    pub disks: Vec<DiskMetrics>,
    pub filesystems: Vec<FsMetrics>,
    pub nets: Vec<NetMetrics>,
    /// Reachability probes (TCP connect) to configured targets; empty when none are configured.
    pub probes: Vec<ProbeResult>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CpuMetrics {
    /// Busy share of all cores together, 0..=100.
    pub total_pct: f32,
    /// Time split of all cores together, 0..=100 each.
    pub user_pct: f32,
    pub system_pct: f32,
    pub iowait_pct: f32,
    pub steal_pct: f32,
    /// Busy share of each logical core, 0..=100, in core order.
    pub per_core_pct: Vec<f32>,
    pub load1: f32,
    pub load5: f32,
    pub load15: f32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MemoryMetrics {
    pub total_bytes: u64,
    /// `total - available`, the figure `free` shows as used.
    pub used_bytes: u64,
    pub available_bytes: u64,
    pub swap_total_bytes: u64,
    pub swap_used_bytes: u64,
}

/// One block device (whole disks and md/dm devices; partitions and loop/ram devices are left out).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DiskMetrics {
    pub name: String,
    pub read_ops_ps: f64,
    pub write_ops_ps: f64,
    pub read_bytes_ps: f64,
    pub write_bytes_ps: f64,
    /// Share of the interval the device had I/O in flight (from io_ticks), 0..=100.
    pub busy_pct: f32,
}

/// One mounted filesystem backed by a device (pseudo filesystems are left out).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FsMetrics {
    pub mount: String,
    pub device: String,
    pub fstype: String,
    pub total_bytes: u64,
    pub used_bytes: u64,
    /// Space available to unprivileged users.
    pub avail_bytes: u64,
    pub inodes_total: u64,
    pub inodes_used: u64,
}

/// One network interface.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NetMetrics {
    pub name: String,
    /// `operstate` is `up` (or `unknown` with carrier, as loopback and some virtual links report).
    pub up: bool,
    /// Physical link present (`carrier` = 1).
    pub carrier: bool,
    pub rx_bytes_ps: f64,
    pub tx_bytes_ps: f64,
    pub rx_packets_ps: f64,
    pub tx_packets_ps: f64,
    pub rx_errors_ps: f64,
    pub tx_errors_ps: f64,
    pub rx_dropped_ps: f64,
    pub tx_dropped_ps: f64,
}

/// Result of the TCP-connect probes to one target during one interval.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProbeResult {
    /// `host:port` as configured.
    pub target: String,
    pub sent: u32,
    pub received: u32,
    /// `100 * (sent - received) / sent`.
    pub loss_pct: f32,
    /// Mean connect time of the successful attempts; absent when none succeeded.
    pub rtt_ms: Option<f32>,
}

/// gridmon's view of an operating-system process state.
///
/// | Linux `state` | gridmon |
/// |---|---|
/// | `R` | `running` (working) |
/// | `S`, `I` | `waiting` |
/// | `D` | `busy` (uninterruptible I/O wait) |
/// | `T`, `t` | `stopped` |
/// | `Z` | `zombie` (exited, not yet reaped: an error sign) |
/// | `X`, `x` | `dead` |
/// | anything else | `unknown` |
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcState {
    Running,
    Waiting,
    Busy,
    Stopped,
    Zombie,
    Dead,
    #[default]
    #[serde(other)]
    Unknown,
}

impl ProcState {
    /// The name on the wire and in ClickHouse.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Waiting => "waiting",
            Self::Busy => "busy",
            Self::Stopped => "stopped",
            Self::Zombie => "zombie",
            Self::Dead => "dead",
            Self::Unknown => "unknown",
        }
    }

    /// Maps the state letter of `/proc/<pid>/stat`.
    pub fn from_linux(c: u8) -> Self {
        match c {
            b'R' => Self::Running,
            b'S' | b'I' => Self::Waiting,
            b'D' => Self::Busy,
            b'T' | b't' => Self::Stopped,
            b'Z' => Self::Zombie,
            b'X' | b'x' => Self::Dead,
            _ => Self::Unknown,
        }
    }
}

/// One row of the process table.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProcessRow {
    pub pid: u32,
    pub ppid: u32,
    /// The kernel's `comm` (at most 15 bytes).
    pub name: String,
    /// Arguments joined by spaces, cut at `ProcessConfig::cmdline_max` bytes; empty for kernel threads.
    pub cmdline: String,
    pub user: String,
    pub uid: u32,
    pub state: ProcState,
    /// CPU used over the interval, in percent of one core (a process may exceed 100).
    pub cpu_pct: f32,
    pub rss_bytes: u64,
    pub vsz_bytes: u64,
    /// Open file descriptors; absent when `/proc/<pid>/fd` may not be read.
    pub fds: Option<u32>,
    pub threads: u32,
    /// Storage I/O over the interval; absent when `/proc/<pid>/io` may not be read.
    pub read_bytes_ps: Option<f64>,
    pub write_bytes_ps: Option<f64>,
    pub nice: i32,
    pub priority: i32,
    /// Start time, ms since the Unix epoch.
    pub start_time_ms: i64,
    /// Wall time since start (total run time), seconds.
    pub run_time_s: f64,
    /// CPU time consumed since start (user + system), seconds.
    pub cpu_time_s: f64,
}

/// The orders a process table can be shown in (the terminal view and the dashboard).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessOrder {
    Name,
    Pid,
    Cpu,
    /// Resident memory.
    Mem,
}

impl ProcessOrder {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "name" => Self::Name,
            "pid" => Self::Pid,
            "cpu" => Self::Cpu,
            "mem" => Self::Mem,
            _ => return None,
        })
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Name => "name",
            Self::Pid => "pid",
            Self::Cpu => "cpu",
            Self::Mem => "mem",
        }
    }

    /// Whether the natural direction is highest first (CPU and memory).
    pub const fn desc_by_default(self) -> bool {
        matches!(self, Self::Cpu | Self::Mem)
    }
}

impl ProcessRow {
    /// Compares by `order`'s key alone, ascending.
    pub fn cmp_by(&self, other: &Self, order: ProcessOrder) -> std::cmp::Ordering {
        match order {
            ProcessOrder::Name => self.name.cmp(&other.name),
            ProcessOrder::Pid => self.pid.cmp(&other.pid),
            ProcessOrder::Cpu => self.cpu_pct.total_cmp(&other.cpu_pct),
            ProcessOrder::Mem => self.rss_bytes.cmp(&other.rss_bytes),
        }
    }

    /// Sorts `rows` by `order`, highest first with `desc`; ties by pid, lowest first.
    pub fn sort(rows: &mut [&Self], order: ProcessOrder, desc: bool) {
        rows.sort_by(|a, b| {
            let o = a.cmp_by(b, order);
            let o = if desc { o.reverse() } else { o };
            o.then(a.pid.cmp(&b.pid))
        });
    }
}

/// The process table of one interval.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProcessTable {
    /// Processes seen on the machine this interval.
    pub total: u32,
    /// Count per state over all processes seen, not only the selected rows.
    pub states: StateCounts,
    /// The selected rows.
    pub rows: Vec<ProcessRow>,
    /// Processes that vanished mid-read since the agent started (cumulative).
    pub vanished_total: u64,
    /// `/proc` files that could not be read for lack of permission since start (cumulative).
    pub denied_total: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StateCounts {
    pub running: u32,
    pub waiting: u32,
    pub busy: u32,
    pub stopped: u32,
    pub zombie: u32,
    pub dead: u32,
    pub unknown: u32,
}

impl StateCounts {
    pub fn add(&mut self, s: ProcState) {
        let slot = match s {
            ProcState::Running => &mut self.running,
            ProcState::Waiting => &mut self.waiting,
            ProcState::Busy => &mut self.busy,
            ProcState::Stopped => &mut self.stopped,
            ProcState::Zombie => &mut self.zombie,
            ProcState::Dead => &mut self.dead,
            ProcState::Unknown => &mut self.unknown,
        };
        *slot += 1;
    }

    /// Adds another table's counts (a rollup sums its nodes').
    pub fn merge(&mut self, o: &Self) {
        self.running = self.running.saturating_add(o.running);
        self.waiting = self.waiting.saturating_add(o.waiting);
        self.busy = self.busy.saturating_add(o.busy);
        self.stopped = self.stopped.saturating_add(o.stopped);
        self.zombie = self.zombie.saturating_add(o.zombie);
        self.dead = self.dead.saturating_add(o.dead);
        self.unknown = self.unknown.saturating_add(o.unknown);
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SensorKind {
    /// Degrees Celsius.
    Temperature,
    /// Volts.
    Voltage,
    /// Amperes.
    Current,
    /// Watts.
    Power,
    /// Revolutions per minute.
    Fan,
    #[default]
    #[serde(other)]
    Unknown,
}

impl SensorKind {
    /// The name on the wire and in ClickHouse.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Temperature => "temperature",
            Self::Voltage => "voltage",
            Self::Current => "current",
            Self::Power => "power",
            Self::Fan => "fan",
            Self::Unknown => "unknown",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SensorSource {
    #[default]
    Hwmon,
    I2c,
}

impl SensorSource {
    /// The name on the wire and in ClickHouse.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Hwmon => "hwmon",
            Self::I2c => "i2c",
        }
    }
}

/// One hardware sensor reading, in the unit its kind names.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SensorReading {
    /// Stable id, unique on the node: `<chip>/<input>` for hwmon (e.g. `coretemp.0/temp2`),
    /// `i2c-<bus>-<addr>/<quantity>` for I2C sensors.
    pub id: String,
    /// Chip name with its device (e.g. `coretemp.0`, `nct6775.656`, `i2c-1-48`).
    pub chip: String,
    /// Human label (the chip's `*_label`, or the input name where it has none).
    pub label: String,
    pub kind: SensorKind,
    pub source: SensorSource,
    pub value: f64,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub crit: Option<f64>,
    /// Beyond a limit, or the chip's own `*_alarm`/`*_fault` flag is set.
    pub alarm: bool,
}

/// Static facts about the node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Inventory {
    pub hostname: String,
    pub cpu_model: String,
    pub cpu_logical_cores: u32,
    pub cpu_physical_cores: u32,
    pub memory_bytes: u64,
    pub swap_bytes: u64,
    /// Sum of the whole-disk capacities.
    pub disk_capacity_bytes: u64,
    pub disks: Vec<DiskInfo>,
    pub os_name: String,
    pub os_version: String,
    pub kernel: String,
    pub arch: String,
    pub agent_version: String,
    /// Boot time, ms since the Unix epoch.
    pub boot_time_ms: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DiskInfo {
    pub name: String,
    pub capacity_bytes: u64,
    pub model: String,
    pub rotational: bool,
}
