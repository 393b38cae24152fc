//! The metric catalogue and the per-node figures one report contributes to a window.
//!
//! A report is reduced once, on arrival, to a [`NodeSample`]: a fixed array of metric values plus
//! sums, counts and the faults the built-in alarms watch. Folding then touches only these few
//! hundred bytes, never the report again.

use gridmon_nats::wire::{
    FaultCounts, ProgramCounts, ProgramState, ReportView, SensorKind, SensorReading, SensorSource,
    StateCounts, Sums,
};

/// Every per-node metric a rollup summarises (min, mean, max, p50, p95, sum).
///
/// Temperatures are the hottest sensor of each class on the node; fans the slowest fan of each
/// class (a stopped fan is what matters). Network figures leave out the loopback interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Metric {
    CpuPct,
    CpuIowaitPct,
    Load1,
    MemUsedPct,
    SwapUsedPct,
    /// The busiest disk.
    DiskBusyPct,
    DiskReadBytesPs,
    DiskWriteBytesPs,
    /// The fullest filesystem.
    FsUsedPct,
    NetRxBytesPs,
    NetTxBytesPs,
    NetRxPacketsPs,
    NetTxPacketsPs,
    NetErrorsPs,
    NetDropsPs,
    /// The worst probe target.
    ProbeLossPct,
    ProbeRttMs,
    Processes,
    TempCpuC,
    TempGpuC,
    TempDiskC,
    TempBoardC,
    TempAmbientC,
    TempOtherC,
    FanCpuRpm,
    FanChassisRpm,
}

impl Metric {
    pub const COUNT: usize = 26;
    pub const ALL: [Metric; Self::COUNT] = [
        Self::CpuPct,
        Self::CpuIowaitPct,
        Self::Load1,
        Self::MemUsedPct,
        Self::SwapUsedPct,
        Self::DiskBusyPct,
        Self::DiskReadBytesPs,
        Self::DiskWriteBytesPs,
        Self::FsUsedPct,
        Self::NetRxBytesPs,
        Self::NetTxBytesPs,
        Self::NetRxPacketsPs,
        Self::NetTxPacketsPs,
        Self::NetErrorsPs,
        Self::NetDropsPs,
        Self::ProbeLossPct,
        Self::ProbeRttMs,
        Self::Processes,
        Self::TempCpuC,
        Self::TempGpuC,
        Self::TempDiskC,
        Self::TempBoardC,
        Self::TempAmbientC,
        Self::TempOtherC,
        Self::FanCpuRpm,
        Self::FanChassisRpm,
    ];

    /// The name in rollups, alarm rules and ClickHouse.
    pub const fn name(self) -> &'static str {
        match self {
            Self::CpuPct => "cpu_pct",
            Self::CpuIowaitPct => "cpu_iowait_pct",
            Self::Load1 => "load1",
            Self::MemUsedPct => "mem_used_pct",
            Self::SwapUsedPct => "swap_used_pct",
            Self::DiskBusyPct => "disk_busy_pct",
            Self::DiskReadBytesPs => "disk_read_bytes_ps",
            Self::DiskWriteBytesPs => "disk_write_bytes_ps",
            Self::FsUsedPct => "fs_used_pct",
            Self::NetRxBytesPs => "net_rx_bytes_ps",
            Self::NetTxBytesPs => "net_tx_bytes_ps",
            Self::NetRxPacketsPs => "net_rx_packets_ps",
            Self::NetTxPacketsPs => "net_tx_packets_ps",
            Self::NetErrorsPs => "net_errors_ps",
            Self::NetDropsPs => "net_drops_ps",
            Self::ProbeLossPct => "probe_loss_pct",
            Self::ProbeRttMs => "probe_rtt_ms",
            Self::Processes => "processes",
            Self::TempCpuC => "temp_cpu_c",
            Self::TempGpuC => "temp_gpu_c",
            Self::TempDiskC => "temp_disk_c",
            Self::TempBoardC => "temp_board_c",
            Self::TempAmbientC => "temp_ambient_c",
            Self::TempOtherC => "temp_other_c",
            Self::FanCpuRpm => "fan_cpu_rpm",
            Self::FanChassisRpm => "fan_chassis_rpm",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }

    #[inline]
    pub const fn index(self) -> usize {
        self as usize
    }
}

/// Which built-in fault a sensor or program shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// A temperature at or above its chip's critical limit.
    SensorCrit,
    /// A fan at 0 RPM while its chip expects it to spin.
    FanStopped,
    /// A voltage outside its chip's limits.
    VoltageRange,
    ProgramCrashed,
    ProgramError,
}

/// One faulty sensor or program: the input to the built-in per-instance alarms.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    pub kind: FaultKind,
    /// The sensor id or the program name.
    pub instance: Box<str>,
    pub value: f64,
}

/// What one report contributes to a window.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeSample {
    /// Metric values by [`Metric::index`]; NaN where the node has no such figure.
    pub values: [f64; Metric::COUNT],
    pub sums: Sums,
    /// Present when the report carried a process table.
    pub process_states: Option<StateCounts>,
    pub programs: ProgramCounts,
    pub faults: FaultCounts,
    /// The faulty sensors and programs, one entry each.
    pub fault_list: Vec<Fault>,
}

impl Default for NodeSample {
    fn default() -> Self {
        Self {
            values: [f64::NAN; Metric::COUNT],
            sums: Sums::default(),
            process_states: None,
            programs: ProgramCounts::default(),
            faults: FaultCounts::default(),
            fault_list: Vec::new(),
        }
    }
}

impl NodeSample {
    #[inline]
    pub fn get(&self, m: Metric) -> Option<f64> {
        let v = self.values[m.index()];
        (!v.is_nan()).then_some(v)
    }

    #[inline]
    fn set(&mut self, m: Metric, v: f64) {
        if v.is_finite() {
            self.values[m.index()] = v;
        }
    }

    /// Keeps the larger (or with `min`, the smaller) of the current and the new value.
    #[inline]
    fn keep(&mut self, m: Metric, v: f64, min: bool) {
        if !v.is_finite() {
            return;
        }
        let cur = &mut self.values[m.index()];
        if cur.is_nan() || (min && v < *cur) || (!min && v > *cur) {
            *cur = v;
        }
    }

    /// Hottest temperature on the node, for member lines.
    pub fn temp_max(&self) -> Option<f64> {
        [
            Metric::TempCpuC,
            Metric::TempGpuC,
            Metric::TempDiskC,
            Metric::TempBoardC,
            Metric::TempAmbientC,
            Metric::TempOtherC,
        ]
        .into_iter()
        .filter_map(|m| self.get(m))
        .reduce(f64::max)
    }

    /// Reduces a report. Never fails: absent parts leave their metrics absent.
    pub fn from_report(r: &ReportView) -> Self {
        let mut s = Self::default();
        if let Some(h) = &r.host {
            s.set(Metric::CpuPct, f64::from(h.cpu.total_pct));
            s.set(Metric::CpuIowaitPct, f64::from(h.cpu.iowait_pct));
            s.set(Metric::Load1, f64::from(h.cpu.load1));
            s.sums.cpu_cores = h.cpu.per_core_pct.len() as u64;
            let m = &h.memory;
            if m.total_bytes > 0 {
                s.set(
                    Metric::MemUsedPct,
                    100.0 * m.used_bytes as f64 / m.total_bytes as f64,
                );
            }
            if m.swap_total_bytes > 0 {
                s.set(
                    Metric::SwapUsedPct,
                    100.0 * m.swap_used_bytes as f64 / m.swap_total_bytes as f64,
                );
            }
            s.sums.memory_total_bytes = m.total_bytes;
            s.sums.memory_used_bytes = m.used_bytes;
            s.sums.swap_total_bytes = m.swap_total_bytes;
            s.sums.swap_used_bytes = m.swap_used_bytes;
            if !h.disks.is_empty() {
                let (mut rd, mut wr) = (0.0, 0.0);
                for d in &h.disks {
                    s.keep(Metric::DiskBusyPct, f64::from(d.busy_pct), false);
                    rd += d.read_bytes_ps;
                    wr += d.write_bytes_ps;
                }
                s.set(Metric::DiskReadBytesPs, rd);
                s.set(Metric::DiskWriteBytesPs, wr);
                s.sums.disk_read_bytes_ps = finite_or_zero(rd);
                s.sums.disk_write_bytes_ps = finite_or_zero(wr);
            }
            for f in &h.filesystems {
                if f.total_bytes > 0 {
                    s.keep(
                        Metric::FsUsedPct,
                        100.0 * f.used_bytes as f64 / f.total_bytes as f64,
                        false,
                    );
                }
                s.sums.fs_total_bytes = s.sums.fs_total_bytes.saturating_add(f.total_bytes);
                s.sums.fs_used_bytes = s.sums.fs_used_bytes.saturating_add(f.used_bytes);
            }
            let mut net = [0.0f64; 6];
            let mut any_net = false;
            for n in h.nets.iter().filter(|n| n.name != "lo") {
                any_net = true;
                net[0] += n.rx_bytes_ps;
                net[1] += n.tx_bytes_ps;
                net[2] += n.rx_packets_ps;
                net[3] += n.tx_packets_ps;
                net[4] += n.rx_errors_ps + n.tx_errors_ps;
                net[5] += n.rx_dropped_ps + n.tx_dropped_ps;
            }
            if any_net {
                for (m, v) in [
                    Metric::NetRxBytesPs,
                    Metric::NetTxBytesPs,
                    Metric::NetRxPacketsPs,
                    Metric::NetTxPacketsPs,
                    Metric::NetErrorsPs,
                    Metric::NetDropsPs,
                ]
                .into_iter()
                .zip(net)
                {
                    s.set(m, v);
                }
                s.sums.net_rx_bytes_ps = finite_or_zero(net[0]);
                s.sums.net_tx_bytes_ps = finite_or_zero(net[1]);
            }
            for p in &h.probes {
                s.keep(Metric::ProbeLossPct, f64::from(p.loss_pct), false);
                if let Some(rtt) = p.rtt_ms {
                    s.keep(Metric::ProbeRttMs, f64::from(rtt), false);
                }
            }
        }
        if let Some(p) = &r.processes {
            s.set(Metric::Processes, f64::from(p.total));
            s.sums.processes = u64::from(p.total);
            s.process_states = Some(p.states);
        }
        for sensor in &r.sensors {
            s.add_sensor(sensor);
        }
        for p in &r.programs {
            s.programs.add(p.state, 1);
            let kind = match p.state {
                ProgramState::Crashed => FaultKind::ProgramCrashed,
                ProgramState::Error => FaultKind::ProgramError,
                _ => continue,
            };
            s.fault_list.push(Fault {
                kind,
                instance: p.name.as_str().into(),
                value: f64::from(p.restarts),
            });
        }
        s
    }

    fn add_sensor(&mut self, r: &SensorReading) {
        let v = r.value;
        if !v.is_finite() {
            return;
        }
        let below_min = r.min.is_some_and(|m| v < m);
        let above_max = r.max.is_some_and(|m| v > m);
        let mut fault = None;
        match r.kind {
            SensorKind::Temperature => {
                self.keep(temperature_class(r), v, false);
                if r.crit.is_some_and(|c| v >= c) {
                    self.faults.over_crit += 1;
                    fault = Some(FaultKind::SensorCrit);
                }
            }
            SensorKind::Fan => {
                self.keep(fan_class(r), v, true);
                if v <= 0.0 && (r.min.is_some_and(|m| m > 0.0) || r.alarm) {
                    self.faults.fans_stopped += 1;
                    fault = Some(FaultKind::FanStopped);
                }
            }
            SensorKind::Voltage if below_min || above_max => {
                self.faults.voltages_out_of_range += 1;
                fault = Some(FaultKind::VoltageRange);
            }
            _ => {}
        }
        let beyond = below_min || above_max || r.alarm || fault.is_some();
        if beyond {
            if self.faults.sensors_beyond_limits == 0 {
                self.faults.nodes_with_faults = 1;
            }
            self.faults.sensors_beyond_limits += 1;
        }
        if let Some(kind) = fault {
            self.fault_list.push(Fault {
                kind,
                instance: r.id.as_str().into(),
                value: v,
            });
        }
    }
}

fn finite_or_zero(v: f64) -> f64 {
    if v.is_finite() {
        v
    } else {
        0.0
    }
}

/// The driver part of a chip id (`coretemp` of `coretemp.0`).
fn driver(chip: &str) -> &str {
    chip.split(['.', '-']).next().unwrap_or(chip)
}

/// Temperature classes by driver; I2C thermometers measure the air around the board.
fn temperature_class(r: &SensorReading) -> Metric {
    if r.source == SensorSource::I2c {
        return Metric::TempAmbientC;
    }
    match driver(&r.chip) {
        "coretemp" | "k10temp" | "k8temp" | "zenpower" | "cpu_thermal" | "cpu" | "soc_thermal"
        | "via_cputemp" | "fam15h_power" => Metric::TempCpuC,
        "amdgpu" | "radeon" | "nouveau" | "nvidia" | "i915" | "xe" => Metric::TempGpuC,
        "nvme" | "drivetemp" | "sata" => Metric::TempDiskC,
        d if d.starts_with("nvme") => Metric::TempDiskC,
        "acpitz" | "pch_skylake" | "pch_cannonlake" | "pch_cometlake" | "thinkpad" | "dell_smm"
        | "asus" | "nct6775" | "nct6683" | "it87" | "w83627ehf" | "f71882fg" => Metric::TempBoardC,
        d if d.starts_with("nct") || d.starts_with("it8") || d.starts_with("w83") => {
            Metric::TempBoardC
        }
        _ => Metric::TempOtherC,
    }
}

fn fan_class(r: &SensorReading) -> Metric {
    // Case-insensitive "cpu" without allocating: this runs for every fan of every report.
    if r.label
        .as_bytes()
        .windows(3)
        .any(|w| w.eq_ignore_ascii_case(b"cpu"))
    {
        Metric::FanCpuRpm
    } else {
        Metric::FanChassisRpm
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gridmon_nats::wire::{
        CpuMetrics, DiskMetrics, HostMetrics, MemoryMetrics, NetMetrics, ProcessSummary,
        ProgramStatus,
    };

    fn sensor(chip: &str, kind: SensorKind, value: f64) -> SensorReading {
        SensorReading {
            id: format!("{chip}/x"),
            chip: chip.into(),
            label: "x".into(),
            kind,
            value,
            ..Default::default()
        }
    }

    #[test]
    fn catalogue_is_consistent() {
        for (i, m) in Metric::ALL.iter().enumerate() {
            assert_eq!(m.index(), i);
            assert_eq!(Metric::from_name(m.name()), Some(*m));
        }
        assert_eq!(Metric::from_name("nope"), None);
    }

    #[test]
    fn reduces_a_report() {
        let r = ReportView {
            host: Some(HostMetrics {
                cpu: CpuMetrics {
                    total_pct: 50.0,
                    per_core_pct: vec![40.0, 60.0],
                    ..Default::default()
                },
                memory: MemoryMetrics {
                    total_bytes: 1000,
                    used_bytes: 250,
                    ..Default::default()
                },
                disks: vec![
                    DiskMetrics {
                        busy_pct: 10.0,
                        read_bytes_ps: 5.0,
                        ..Default::default()
                    },
                    DiskMetrics {
                        busy_pct: 30.0,
                        read_bytes_ps: 7.0,
                        ..Default::default()
                    },
                ],
                nets: vec![
                    NetMetrics {
                        name: "lo".into(),
                        rx_bytes_ps: 1e9,
                        ..Default::default()
                    },
                    NetMetrics {
                        name: "eth0".into(),
                        rx_bytes_ps: 100.0,
                        rx_dropped_ps: 1.0,
                        tx_dropped_ps: 2.0,
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }),
            processes: Some(ProcessSummary {
                total: 7,
                ..Default::default()
            }),
            sensors: vec![
                sensor("coretemp.0", SensorKind::Temperature, 60.0),
                sensor("coretemp.0", SensorKind::Temperature, 70.0),
                sensor("nvme0", SensorKind::Temperature, 40.0),
            ],
            programs: vec![
                ProgramStatus {
                    name: "web".into(),
                    state: ProgramState::Crashed,
                    restarts: 3,
                    ..Default::default()
                },
                ProgramStatus {
                    name: "db".into(),
                    state: ProgramState::Running,
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let s = NodeSample::from_report(&r);
        assert_eq!(s.get(Metric::CpuPct), Some(50.0));
        assert_eq!(s.get(Metric::MemUsedPct), Some(25.0));
        assert_eq!(s.get(Metric::SwapUsedPct), None, "no swap: no figure");
        assert_eq!(s.get(Metric::DiskBusyPct), Some(30.0));
        assert_eq!(s.get(Metric::DiskReadBytesPs), Some(12.0));
        assert_eq!(
            s.get(Metric::NetRxBytesPs),
            Some(100.0),
            "loopback left out"
        );
        assert_eq!(s.get(Metric::NetDropsPs), Some(3.0));
        assert_eq!(s.get(Metric::TempCpuC), Some(70.0));
        assert_eq!(s.get(Metric::TempDiskC), Some(40.0));
        assert_eq!(s.get(Metric::Processes), Some(7.0));
        assert_eq!(s.sums.cpu_cores, 2);
        assert_eq!(s.programs.crashed, 1);
        assert_eq!(s.programs.running, 1);
        assert_eq!(
            s.fault_list,
            vec![Fault {
                kind: FaultKind::ProgramCrashed,
                instance: "web".into(),
                value: 3.0
            }]
        );
        assert_eq!(s.faults, FaultCounts::default());
    }

    fn check_sensor(r: SensorReading, expected: Option<FaultKind>, beyond: bool) {
        let mut s = NodeSample::default();
        s.add_sensor(&r);
        assert_eq!(s.fault_list.first().map(|f| f.kind), expected, "{r:?}");
        assert_eq!(s.faults.sensors_beyond_limits > 0, beyond, "{r:?}");
        assert_eq!(s.faults.nodes_with_faults, u32::from(beyond));
    }

    #[test]
    fn hardware_faults() {
        let t = sensor("coretemp.0", SensorKind::Temperature, 100.0);
        check_sensor(t.clone(), None, false);
        check_sensor(
            SensorReading {
                crit: Some(100.0),
                ..t.clone()
            },
            Some(FaultKind::SensorCrit),
            true,
        );
        check_sensor(
            SensorReading {
                max: Some(90.0),
                crit: Some(105.0),
                ..t.clone()
            },
            None,
            true,
        );
        let fan = sensor("nct6775.656", SensorKind::Fan, 0.0);
        check_sensor(fan.clone(), None, false);
        check_sensor(
            SensorReading {
                min: Some(300.0),
                ..fan.clone()
            },
            Some(FaultKind::FanStopped),
            true,
        );
        check_sensor(
            SensorReading { alarm: true, ..fan },
            Some(FaultKind::FanStopped),
            true,
        );
        let v = sensor("nct6775.656", SensorKind::Voltage, 11.0);
        check_sensor(
            SensorReading {
                min: Some(11.4),
                max: Some(12.6),
                ..v.clone()
            },
            Some(FaultKind::VoltageRange),
            true,
        );
        check_sensor(
            SensorReading {
                min: Some(10.0),
                max: Some(12.6),
                ..v
            },
            None,
            false,
        );
    }

    #[test]
    fn classes() {
        let class = |chip: &str| temperature_class(&sensor(chip, SensorKind::Temperature, 1.0));
        assert_eq!(class("coretemp.0"), Metric::TempCpuC);
        assert_eq!(class("k10temp.24"), Metric::TempCpuC);
        assert_eq!(class("nvme0"), Metric::TempDiskC);
        assert_eq!(class("amdgpu.3"), Metric::TempGpuC);
        assert_eq!(class("nct6798.656"), Metric::TempBoardC);
        assert_eq!(class("mystery"), Metric::TempOtherC);
        let i2c = SensorReading {
            source: SensorSource::I2c,
            ..sensor("i2c-1-48", SensorKind::Temperature, 20.0)
        };
        assert_eq!(temperature_class(&i2c), Metric::TempAmbientC);
        let mut cpu_fan = sensor("nct6775.656", SensorKind::Fan, 900.0);
        cpu_fan.label = "CPU Fan".into();
        assert_eq!(fan_class(&cpu_fan), Metric::FanCpuRpm);
        assert_eq!(
            fan_class(&sensor("nct6775.656", SensorKind::Fan, 900.0)),
            Metric::FanChassisRpm
        );
    }
}
