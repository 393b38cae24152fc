//! The simulated fleet: where each node sits, which faults it has, and its reports. No NATS here:
//! a node's report is a kept [`NodeReport`] mutated in place every tick, so a tick allocates only
//! the encoded bytes.

use std::f64::consts::TAU;
use std::time::Duration;

use gridmon_nats::frame::Framer;
use gridmon_nats::identity::TokenError;
use gridmon_nats::publish::Outgoing;
use gridmon_nats::wire::{
    AgentStats, CpuMetrics, DiskMetrics, FsMetrics, HostMetrics, Inventory, Kind, MemoryMetrics,
    NetMetrics, NodeReport, ProcessTable, ProgramState, ProgramStatus, Source, WireError,
};
use gridmon_nats::{Family, NodeId, Scope, Subjects};

use super::inventory;
use super::procs::ProcSim;
use super::rng::Rng;
use super::sensors::SensorSim;

const GIB: u64 = 1 << 30;
const MIB: f64 = 1024.0 * 1024.0;

/// The program `--crash` crashes.
pub const CRASHING_PROGRAM: &str = "worker-1";

/// What to simulate: the validated command line.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    pub nodes: u32,
    pub clusters: u32,
    /// Groups in each cluster.
    pub groups: u32,
    /// Rows in each process table.
    pub processes: u32,
    /// The process table travels in every `process_every`-th report.
    pub process_every: u32,
    /// Time between two reports of a node.
    pub interval: Duration,
    pub seed: u64,
    /// Supervised programs per node.
    pub programs: u32,
    pub faults: FaultCounts,
    /// Faults start this long after the simulator started.
    pub fault_after: Duration,
    /// Each node publishes its inventory at start and then this often.
    pub inventory_every: Duration,
}

/// How many nodes get each fault.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultCounts {
    pub silent: u32,
    pub overheat: u32,
    pub fan_stop: u32,
    pub crash: u32,
    pub flap: u32,
}

impl Spec {
    /// Checks what clap cannot: counts against each other.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("--nodes", self.nodes),
            ("--clusters", self.clusters),
            ("--groups", self.groups),
            ("--process-every", self.process_every),
        ];
        for (flag, v) in positive {
            if v == 0 {
                return Err(format!("{flag} must be at least 1"));
            }
        }
        if self.interval < Duration::from_millis(1) {
            return Err("--rate must be at most 1000 reports per second".into());
        }
        if self.interval > Duration::from_secs(86_401) {
            return Err("--rate must be at least one report a day".into());
        }
        if self.inventory_every.is_zero() {
            return Err("--inventory-every must be longer than 0".into());
        }
        let f = self.faults;
        for (flag, n) in [
            ("--silent", f.silent),
            ("--overheat", f.overheat),
            ("--fan-stop", f.fan_stop),
            ("--crash", f.crash),
            ("--flap", f.flap),
        ] {
            if n > self.nodes {
                return Err(format!(
                    "{flag} {n}: more than the {} simulated nodes",
                    self.nodes
                ));
            }
        }
        if f.crash > 0 && self.programs == 0 {
            return Err("--crash needs at least one program (--programs)".into());
        }
        Ok(())
    }
}

/// Which faults one node has (they show only once the faults started).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    pub silent: bool,
    pub overheat: bool,
    pub fan_stop: bool,
    pub crash: bool,
    pub flap: bool,
}

impl Faults {
    /// Each fault by its flag name, and whether this node has it.
    pub fn by_flag(&self) -> [(&'static str, bool); 5] {
        [
            ("silent", self.silent),
            ("overheat", self.overheat),
            ("fan-stop", self.fan_stop),
            ("crash", self.crash),
            ("flap", self.flap),
        ]
    }
}

/// One simulated group and its nodes (indices into [`Fleet::nodes`], in name order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub cluster: String,
    pub group: String,
    pub members: Vec<usize>,
}

/// One instant of the simulation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tick {
    /// The number of the wall-clock boundary (`ts_ms / interval`): decides which reports carry
    /// the process table and which way a flapping CPU goes.
    pub tick: u64,
    /// The boundary the report is stamped with; it covers the interval ending here.
    pub ts_ms: i64,
    pub faults_active: bool,
}

/// `prefix` + `i` (1-based) zero-padded to at least `min` digits, wider when `count` needs it, so
/// names sort in number order.
fn name(prefix: &str, i: u32, min: usize, count: u32) -> String {
    let width = count.to_string().len().max(min);
    format!("{prefix}{i:0width$}")
}

/// Spreads the nodes round-robin over the clusters × groups: node `i` (0-based) goes to group
/// `i mod (clusters × groups)`, groups numbered cluster by cluster.
pub fn place(spec: &Spec) -> Result<(Vec<Group>, Vec<NodeId>), TokenError> {
    let per = spec.groups.max(1);
    let total_groups = spec.clusters.max(1) * per;
    let mut groups: Vec<Group> = (0..total_groups)
        .map(|k| Group {
            cluster: name("c", k / per + 1, 2, spec.clusters),
            group: name("g", k % per + 1, 2, spec.groups),
            members: Vec::new(),
        })
        .collect();
    let mut ids = Vec::with_capacity(spec.nodes as usize);
    for i in 0..spec.nodes {
        let g = &mut groups[(i % total_groups) as usize];
        ids.push(NodeId::new(
            &g.cluster,
            &g.group,
            name("n", i + 1, 4, spec.nodes),
        )?);
        g.members.push(i as usize);
    }
    Ok((groups, ids))
}

/// The order faults are handed out in: the last group's nodes in name order first, then the group
/// before it, and so on. `--overheat 2` hits the first two of this list.
pub fn fault_order(groups: &[Group]) -> Vec<usize> {
    groups
        .iter()
        .rev()
        .flat_map(|g| g.members.iter().copied())
        .collect()
}

/// The whole simulated fleet.
#[derive(Debug)]
pub struct Fleet {
    pub nodes: Vec<SimNode>,
    pub groups: Vec<Group>,
    fault_at_ms: i64,
}

impl Fleet {
    /// `start_ms` anchors uptimes, process start times and `--fault-after`.
    pub fn new(
        spec: &Spec,
        subjects: &Subjects,
        run_id: u64,
        start_ms: i64,
    ) -> Result<Self, TokenError> {
        let (groups, ids) = place(spec)?;
        let order = fault_order(&groups);
        let mut faults = vec![Faults::default(); ids.len()];
        let f = spec.faults;
        for (pos, &i) in order.iter().enumerate() {
            let first = |n: u32| pos < n as usize;
            faults[i] = Faults {
                silent: first(f.silent),
                overheat: first(f.overheat),
                fan_stop: first(f.fan_stop),
                crash: first(f.crash),
                flap: first(f.flap),
            };
        }
        let nodes = ids
            .into_iter()
            .zip(faults)
            .enumerate()
            .map(|(i, (id, faults))| {
                let subjects = NodeSubjects {
                    report: subjects.node_report(&id),
                    inventory: subjects.family(Family::Inventory, &Scope::Node(id.clone())),
                };
                SimNode::new(spec, i, id, subjects, faults, run_id, start_ms)
            })
            .collect();
        let fault_after = i64::try_from(spec.fault_after.as_millis()).unwrap_or(i64::MAX);
        Ok(Self {
            nodes,
            groups,
            fault_at_ms: start_ms.saturating_add(fault_after),
        })
    }

    /// The tick stamped `ts_ms` (`tick` is the boundary number).
    pub fn tick(&self, tick: u64, ts_ms: i64) -> Tick {
        Tick {
            tick,
            ts_ms,
            faults_active: ts_ms >= self.fault_at_ms,
        }
    }

    /// Node `i`'s report for boundary `tick` at `ts_ms`; `None` when the node is silent.
    #[cfg(test)]
    pub fn report(&mut self, i: usize, tick: u64, ts_ms: i64) -> Option<&NodeReport> {
        let t = self.tick(tick, ts_ms);
        self.nodes.get_mut(i)?.report(&t)
    }
}

/// Static per-node parameters, drawn once from the seed.
#[derive(Debug, Clone)]
struct Params {
    cores: u32,
    base_cpu: f64,
    cpu_amp: f64,
    cpu_period_s: f64,
    cpu_phase: f64,
    steal: bool,
    mem_frac: f64,
    mem_amp: f64,
    mem_period_s: f64,
    mem_phase: f64,
    io_base: [f64; 2],
    io_weight: [f64; 2],
    read_mib_per_pct: [f64; 2],
    write_mib_per_pct: [f64; 2],
    fs_frac: [f64; 2],
    net_mibps: f64,
    tx_ratio: f64,
    lo_kibps: f64,
    boot_ms: i64,
}

/// Where one node publishes.
#[derive(Debug, Clone)]
pub struct NodeSubjects {
    pub report: String,
    pub inventory: String,
}

/// One simulated node: its kept report and what moves it.
#[derive(Debug)]
pub struct SimNode {
    pub index: usize,
    pub id: NodeId,
    /// Its node-report subject.
    pub subject: String,
    pub inventory_subject: String,
    pub faults: Faults,
    framer: Framer,
    rng: Rng,
    p: Params,
    /// Load averages (1, 5, 15 min); set from the first sample's CPU level.
    load: Option<[f64; 3]>,
    core_offsets: Vec<f64>,
    sensors: SensorSim,
    procs: ProcSim,
    /// The process table while a report goes without it.
    spare_table: Option<ProcessTable>,
    report: NodeReport,
    process_every: u64,
    interval_s: f64,
    last_ts_ms: Option<i64>,
    agent_cpu_ms: f64,
    inventory: Inventory,
    inventory_every_ms: i64,
    /// When the inventory is next due; `None` until the first one went out.
    next_inventory_ms: Option<i64>,
}

impl SimNode {
    fn new(
        spec: &Spec,
        index: usize,
        id: NodeId,
        subjects: NodeSubjects,
        faults: Faults,
        run_id: u64,
        start_ms: i64,
    ) -> Self {
        let mut rng = Rng::derive(spec.seed, index as u64);
        let cores = *rng.pick(&[4u32, 8, 8, 16, 16, 24, 32, 48, 64]);
        let uptime_ms = (3_600_000.0 * rng.range(1.0, 24.0 * 90.0)) as i64;
        let base_cpu = rng.range(5.0, 60.0);
        let p = Params {
            cores,
            base_cpu,
            cpu_amp: base_cpu * rng.range(0.15, 0.4),
            cpu_period_s: rng.range(300.0, 3600.0),
            cpu_phase: rng.range(0.0, TAU),
            steal: rng.chance(0.3),
            mem_frac: rng.range(0.2, 0.8),
            mem_amp: rng.range(0.01, 0.06),
            mem_period_s: rng.range(600.0, 7200.0),
            mem_phase: rng.range(0.0, TAU),
            io_base: [rng.range(0.5, 10.0), rng.range(0.0, 5.0)],
            io_weight: [rng.range(0.05, 0.5), rng.range(0.0, 0.3)],
            read_mib_per_pct: [rng.range(0.5, 8.0), rng.range(0.1, 2.0)],
            write_mib_per_pct: [rng.range(0.3, 5.0), rng.range(0.1, 3.0)],
            fs_frac: [rng.range(0.15, 0.75), rng.range(0.05, 0.9)],
            net_mibps: rng.range(0.5, 60.0),
            tx_ratio: rng.range(0.2, 1.5),
            lo_kibps: rng.range(5.0, 300.0),
            boot_ms: start_ms - uptime_ms,
        };
        let mem_total = *rng.pick(&[16u64, 32, 32, 64, 64, 128]) * GIB;
        let swap_total = *rng.pick(&[2u64, 4, 8]) * GIB;
        let programs_since_ms = start_ms - (60_000.0 * rng.range(5.0, 60.0 * 24.0 * 7.0)) as i64;
        let (procs, table, pids) = ProcSim::new(
            &mut rng,
            spec.processes as usize,
            spec.programs as usize,
            cores,
            p.boot_ms,
            start_ms,
            programs_since_ms,
        );
        let programs = pids
            .iter()
            .enumerate()
            .map(|(k, pid)| ProgramStatus {
                name: format!("worker-{}", k + 1),
                state: ProgramState::Running,
                pid: *pid,
                restarts: 0,
                since_ms: programs_since_ms,
                version: Some("2.3.1".into()),
                started_ms: Some(programs_since_ms),
                ..Default::default()
            })
            .collect();
        let (sensor_sim, sensors) = SensorSim::new(&mut rng);
        let host = HostMetrics {
            uptime_s: 0.0,
            cpu: CpuMetrics {
                per_core_pct: vec![0.0; cores as usize],
                ..Default::default()
            },
            memory: MemoryMetrics {
                total_bytes: mem_total,
                swap_total_bytes: swap_total,
                ..Default::default()
            },
            disks: ["nvme0n1", "sda"]
                .into_iter()
                .map(|n| DiskMetrics {
                    name: n.into(),
                    ..Default::default()
                })
                .collect(),
            filesystems: vec![
                FsMetrics {
                    mount: "/".into(),
                    device: "/dev/nvme0n1p2".into(),
                    fstype: "ext4".into(),
                    total_bytes: *rng.pick(&[256u64, 512, 1024]) * GIB,
                    ..Default::default()
                },
                FsMetrics {
                    mount: "/data".into(),
                    device: "/dev/sda1".into(),
                    fstype: "xfs".into(),
                    total_bytes: *rng.pick(&[2048u64, 4096, 8192]) * GIB,
                    ..Default::default()
                },
            ],
            nets: ["lo", "eth0"]
                .into_iter()
                .map(|n| NetMetrics {
                    name: n.into(),
                    up: true,
                    carrier: true,
                    ..Default::default()
                })
                .collect(),
            probes: Vec::new(),
        };
        // Zero-mean, so the cores' mean stays at the node's level.
        let mut core_offsets: Vec<f64> = (0..cores).map(|_| rng.noise()).collect();
        let mean = core_offsets.iter().sum::<f64>() / f64::from(cores.max(1));
        core_offsets.iter_mut().for_each(|o| *o -= mean);
        let interval_ms = u32::try_from(spec.interval.as_millis()).unwrap_or(u32::MAX);
        let inventory = inventory::simulated(spec.seed, index, &id, &host, p.boot_ms);
        Self {
            index,
            framer: Framer::new(Source::from(&id), run_id),
            id,
            subject: subjects.report,
            inventory_subject: subjects.inventory,
            faults,
            rng,
            p,
            load: None,
            core_offsets,
            sensors: sensor_sim,
            procs,
            spare_table: Some(table),
            report: NodeReport {
                interval_ms,
                host: Some(host),
                processes: None,
                sensors,
                programs,
                agent: AgentStats {
                    version: "simulated".into(),
                    ..Default::default()
                },
            },
            process_every: u64::from(spec.process_every.max(1)),
            interval_s: spec.interval.as_secs_f64(),
            last_ts_ms: None,
            agent_cpu_ms: 0.0,
            inventory,
            inventory_every_ms: i64::try_from(spec.inventory_every.as_millis())
                .unwrap_or(i64::MAX)
                .max(1),
            next_inventory_ms: None,
        }
    }

    /// The node's inventory, the same in every message.
    #[cfg(test)]
    pub fn inventory(&self) -> &Inventory {
        &self.inventory
    }

    /// Frames the inventory when it is due at `t` (the first tick, then every
    /// `inventory_every`); `None` when it is not, or the node is silent.
    pub fn frame_inventory(&mut self, t: &Tick) -> Option<Result<Outgoing, WireError>> {
        if self.is_silent(t) || self.next_inventory_ms.is_some_and(|next| t.ts_ms < next) {
            return None;
        }
        self.next_inventory_ms = Some(t.ts_ms.saturating_add(self.inventory_every_ms));
        Some(self.framer.frame(
            Kind::Inventory,
            self.inventory_subject.clone(),
            t.ts_ms,
            &self.inventory,
        ))
    }

    /// Its supervised programs as of its latest report.
    pub fn programs(&self) -> &[ProgramStatus] {
        &self.report.programs
    }

    /// Whether this node publishes nothing at `t`.
    pub fn is_silent(&self, t: &Tick) -> bool {
        self.faults.silent && t.faults_active
    }

    /// Moves the node on to `t` and returns its report, or `None` when it is silent.
    #[cfg(test)]
    pub fn report(&mut self, t: &Tick) -> Option<&NodeReport> {
        if self.is_silent(t) {
            return None;
        }
        self.update(t);
        Some(&self.report)
    }

    /// Moves the node on to `t` and frames its report; `None` when the node is silent.
    pub fn frame(&mut self, t: &Tick) -> Option<Result<Outgoing, WireError>> {
        if self.is_silent(t) {
            return None;
        }
        self.update(t);
        Some(self.framer.frame(
            Kind::NodeReport,
            self.subject.clone(),
            t.ts_ms,
            &self.report,
        ))
    }

    fn update(&mut self, t: &Tick) {
        let dt = match self.last_ts_ms {
            Some(prev) if t.ts_ms > prev => (t.ts_ms - prev) as f64 / 1000.0,
            _ => self.interval_s,
        };
        self.last_ts_ms = Some(t.ts_ms);
        let secs = t.ts_ms as f64 / 1000.0;
        let active = |f: bool| f && t.faults_active;
        let rng = &mut self.rng;
        let p = &self.p;
        let cpu = cpu_level(p, rng, secs, t.tick, active(self.faults.flap));
        let mut disk_busy = 0.0;
        if let Some(host) = self.report.host.as_mut() {
            host.uptime_s = ((t.ts_ms - p.boot_ms) as f64 / 1000.0).max(0.0);
            update_cpu(
                &mut host.cpu,
                p,
                rng,
                &self.core_offsets,
                &mut self.load,
                cpu,
                dt,
            );
            update_memory(&mut host.memory, p, rng, secs);
            disk_busy = update_disks(&mut host.disks, p, rng, cpu);
            update_filesystems(&mut host.filesystems, p, secs);
            update_nets(&mut host.nets, p, rng, cpu, dt);
        }
        self.sensors.update(
            &mut self.report.sensors,
            rng,
            cpu,
            disk_busy,
            active(self.faults.overheat),
            active(self.faults.fan_stop),
        );
        let crash = active(self.faults.crash);
        let crashing = self
            .report
            .programs
            .iter_mut()
            .find(|p| p.name == CRASHING_PROGRAM);
        if let Some(prog) = crashing {
            if crash {
                if prog.state != ProgramState::Crashed {
                    prog.state = ProgramState::Crashed;
                    prog.since_ms = t.ts_ms;
                    prog.pid = None;
                }
                // Crash-looping: the supervisor restarts it and it crashes again.
                prog.restarts = prog.restarts.saturating_add(1);
            }
        }
        if t.tick % self.process_every == 0 {
            if self.report.processes.is_none() {
                self.report.processes = self.spare_table.take();
            }
            if let Some(table) = self.report.processes.as_mut() {
                self.procs.update(
                    table,
                    rng,
                    t.ts_ms,
                    self.interval_s * self.process_every as f64,
                    cpu,
                );
                if crash {
                    // A crash loop: the supervisor restarted it since the last report.
                    self.procs
                        .respawn_program(table, 0, rng, t.ts_ms, self.interval_s);
                }
            }
        } else if let Some(table) = self.report.processes.take() {
            self.spare_table = Some(table);
        }
        let a = &mut self.report.agent;
        self.agent_cpu_ms += dt * (8.0 + 6.0 * rng.f64());
        a.cpu_time_ms = self.agent_cpu_ms as u64;
        a.rss_bytes = ((7.2 + 0.6 * rng.f64()) * MIB) as u64;
    }
}

/// The node's CPU busy % at `secs`: a base level, a slow sine drift, noise and rare spikes; or,
/// flapping, about 10 % and 97 % on alternate ticks.
fn cpu_level(p: &Params, rng: &mut Rng, secs: f64, tick: u64, flap: bool) -> f64 {
    if flap {
        let level = if tick % 2 == 0 { 10.0 } else { 97.0 };
        return level + 0.5 * rng.noise();
    }
    let mut c = p.base_cpu
        + p.cpu_amp * (TAU * secs / p.cpu_period_s + p.cpu_phase).sin()
        + 3.0 * rng.noise();
    if rng.chance(0.02) {
        c += rng.range(10.0, 35.0);
    }
    c.clamp(0.5, 99.5)
}

fn update_cpu(
    m: &mut CpuMetrics,
    p: &Params,
    rng: &mut Rng,
    offsets: &[f64],
    load: &mut Option<[f64; 3]>,
    cpu: f64,
    dt: f64,
) {
    let c = cpu / 100.0;
    // Cores spread around the node's level, least at the ends of the scale (so a node at 97 %
    // has every core near 97 %).
    let spread = 60.0 * c * (1.0 - c);
    let mut sum = 0.0;
    for (v, off) in m.per_core_pct.iter_mut().zip(offsets) {
        let x = (cpu + spread * (off + 0.5 * rng.noise())).clamp(0.0, 100.0);
        *v = x as f32;
        sum += x;
    }
    let total = if m.per_core_pct.is_empty() {
        cpu
    } else {
        sum / m.per_core_pct.len() as f64
    };
    let steal = if p.steal { total * 0.02 } else { 0.0 };
    m.total_pct = total as f32;
    m.user_pct = (total * 0.74) as f32;
    m.system_pct = (total * 0.22) as f32;
    m.steal_pct = steal as f32;
    m.iowait_pct = (0.3 + total * 0.02 + 0.2 * rng.noise()).clamp(0.0, 100.0) as f32;
    let runnable = f64::from(p.cores) * c * (1.0 + 0.08 * rng.noise()) + 0.05;
    // The kernel's exponential moving averages; a node "booted" long ago starts in equilibrium.
    let load = load.get_or_insert([runnable; 3]);
    for (l, tau) in load.iter_mut().zip([60.0, 300.0, 900.0]) {
        let e = (-dt / tau).exp();
        *l = *l * e + runnable * (1.0 - e);
    }
    m.load1 = load[0] as f32;
    m.load5 = load[1] as f32;
    m.load15 = load[2] as f32;
}

fn update_memory(m: &mut MemoryMetrics, p: &Params, rng: &mut Rng, secs: f64) {
    let frac = (p.mem_frac
        + p.mem_amp * (TAU * secs / p.mem_period_s + p.mem_phase).sin()
        + 0.004 * rng.noise())
    .clamp(0.05, 0.97);
    m.used_bytes = (m.total_bytes as f64 * frac) as u64;
    m.available_bytes = m.total_bytes - m.used_bytes.min(m.total_bytes);
    let swap = (0.01 + (frac - 0.7).max(0.0) * 1.2 + 0.002 * rng.noise()).clamp(0.0, 1.0);
    m.swap_used_bytes = (m.swap_total_bytes as f64 * swap) as u64;
}

/// Returns the busiest disk's busy %.
fn update_disks(disks: &mut [DiskMetrics], p: &Params, rng: &mut Rng, cpu: f64) -> f64 {
    let mut max: f64 = 0.0;
    for (i, d) in disks.iter_mut().enumerate().take(2) {
        let busy = (p.io_base[i] + p.io_weight[i] * cpu + 4.0 * rng.noise()).clamp(0.0, 100.0);
        let rb = (busy * p.read_mib_per_pct[i] * MIB * (1.0 + 0.2 * rng.noise())).max(0.0);
        let wb = (busy * p.write_mib_per_pct[i] * MIB * (1.0 + 0.2 * rng.noise())).max(0.0);
        d.busy_pct = busy as f32;
        d.read_bytes_ps = rb.round();
        d.write_bytes_ps = wb.round();
        d.read_ops_ps = (rb / 65_536.0).round();
        d.write_ops_ps = (wb / 32_768.0).round();
        max = max.max(busy);
    }
    max
}

fn update_filesystems(fss: &mut [FsMetrics], p: &Params, secs: f64) {
    for (i, fs) in fss.iter_mut().enumerate().take(2) {
        // Slow fill and clean-up over about a day.
        let frac =
            (p.fs_frac[i] + 0.01 * (TAU * secs / 86_400.0 + i as f64).sin()).clamp(0.01, 0.99);
        let total = fs.total_bytes as f64;
        fs.used_bytes = (total * frac) as u64;
        // ext4 keeps 5 % for root; xfs reserves nothing that unprivileged users would miss.
        let usable = if fs.fstype == "ext4" {
            total * 0.95
        } else {
            total
        };
        fs.avail_bytes = (usable - fs.used_bytes as f64).max(0.0) as u64;
        fs.inodes_total = fs.total_bytes / 16_384;
        fs.inodes_used = (fs.inodes_total as f64 * frac * 0.3) as u64;
    }
}

fn update_nets(nets: &mut [NetMetrics], p: &Params, rng: &mut Rng, cpu: f64, dt: f64) {
    let per_s = |n: u64| n as f64 / dt.max(0.001);
    for n in nets.iter_mut() {
        if n.name == "lo" {
            let b = (p.lo_kibps * 1024.0 * (1.0 + 0.3 * rng.noise())).round();
            n.rx_bytes_ps = b;
            n.tx_bytes_ps = b;
            n.rx_packets_ps = (b / 400.0).round();
            n.tx_packets_ps = n.rx_packets_ps;
            continue;
        }
        let rx = (p.net_mibps * MIB * (0.4 + cpu / 100.0) * (1.0 + 0.15 * rng.noise())).max(0.0);
        let tx = (rx * p.tx_ratio * (1.0 + 0.1 * rng.noise())).max(0.0);
        n.rx_bytes_ps = rx.round();
        n.tx_bytes_ps = tx.round();
        n.rx_packets_ps = (rx / 1100.0).round();
        n.tx_packets_ps = (tx / 700.0).round();
        // Now and then a bad frame or a full ring buffer.
        n.rx_errors_ps = if rng.chance(0.003) {
            per_s(1 + rng.below(3))
        } else {
            0.0
        };
        n.tx_errors_ps = if rng.chance(0.001) { per_s(1) } else { 0.0 };
        n.rx_dropped_ps = if rng.chance(0.02) {
            per_s(1 + rng.below(20))
        } else {
            0.0
        };
        n.tx_dropped_ps = if rng.chance(0.002) {
            per_s(1 + rng.below(5))
        } else {
            0.0
        };
    }
}
