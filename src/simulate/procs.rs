//! The simulated process table of one node: rows built once, then updated in place each sample.

use gridmon_nats::wire::{ProcState, ProcessRow, ProcessTable, StateCounts};

use super::rng::Rng;

const MIB: f64 = 1024.0 * 1024.0;
const PID_MAX: u32 = 4_194_304;

/// A kind of process the table is filled with; `{k}` in a name or command line is replaced by a
/// per-row number.
struct Template {
    name: &'static str,
    cmdline: &'static str,
    user: &'static str,
    uid: u32,
    /// CPU % of one core at a node CPU level of 30 %: (low, high).
    weight: (f64, f64),
    rss_mib: (f64, f64),
    threads: (u32, u32),
    fds: (u32, u32),
    nice: i32,
}

// A row of the tables below; named arguments would triple their length.
#[allow(clippy::too_many_arguments)]
const fn t(
    name: &'static str,
    cmdline: &'static str,
    user: &'static str,
    uid: u32,
    weight: (f64, f64),
    rss_mib: (f64, f64),
    threads: (u32, u32),
    fds: (u32, u32),
) -> Template {
    Template {
        name,
        cmdline,
        user,
        uid,
        weight,
        rss_mib,
        threads,
        fds,
        nice: 0,
    }
}

/// Kernel thread: no command line, no memory, no descriptors.
const fn kt(name: &'static str, nice: i32, weight: f64) -> Template {
    Template {
        name,
        cmdline: "",
        user: "root",
        uid: 0,
        weight: (0.0, weight),
        rss_mib: (0.0, 0.0),
        threads: (1, 1),
        fds: (0, 0),
        nice,
    }
}

/// Every node starts with these, in this order (pid 1 first).
const SYSTEM: &[Template] = &[
    t("systemd", "/sbin/init splash", "root", 0, (0.02, 0.2), (9.0, 14.0), (1, 1), (90, 140)),
    kt("kthreadd", 0, 0.01),
    kt("rcu_sched", 0, 0.3),
    kt("ksoftirqd/0", 0, 0.4),
    kt("migration/0", 0, 0.05),
    t("systemd-journal", "/lib/systemd/systemd-journald", "root", 0, (0.05, 0.8), (20.0, 120.0), (1, 1), (30, 60)),
    t("systemd-udevd", "/lib/systemd/systemd-udevd", "root", 0, (0.0, 0.1), (6.0, 9.0), (1, 1), (15, 25)),
    t("systemd-network", "/lib/systemd/systemd-networkd", "systemd-network", 100, (0.0, 0.05), (7.0, 9.0), (1, 1), (20, 30)),
    t("systemd-resolve", "/lib/systemd/systemd-resolved", "systemd-resolve", 101, (0.0, 0.2), (11.0, 14.0), (1, 1), (20, 30)),
    t("systemd-logind", "/lib/systemd/systemd-logind", "root", 0, (0.0, 0.05), (6.0, 8.0), (1, 1), (20, 30)),
    t("dbus-daemon", "@dbus-daemon --system --address=systemd: --nofork --nopidfile --systemd-activation --syslog-only", "messagebus", 102, (0.0, 0.1), (4.0, 6.0), (1, 1), (20, 40)),
    t("rsyslogd", "/usr/sbin/rsyslogd -n -iNONE", "syslog", 104, (0.0, 0.3), (4.0, 10.0), (4, 4), (10, 14)),
    t("cron", "/usr/sbin/cron -f -P", "root", 0, (0.0, 0.01), (2.5, 3.5), (1, 1), (6, 8)),
    t("chronyd", "/usr/sbin/chronyd -F 1", "_chrony", 110, (0.0, 0.02), (2.0, 3.0), (1, 1), (6, 8)),
    t("sshd", "sshd: /usr/sbin/sshd -D [listener] 0 of 10-100 startups", "root", 0, (0.0, 0.02), (8.0, 10.0), (1, 1), (5, 7)),
    t("containerd", "/usr/bin/containerd", "root", 0, (0.1, 1.5), (40.0, 70.0), (12, 20), (40, 90)),
    t("dockerd", "/usr/bin/dockerd -H fd:// --containerd=/run/containerd/containerd.sock", "root", 0, (0.05, 1.0), (70.0, 120.0), (14, 30), (50, 120)),
    t("gridmon", "/usr/local/bin/gridmon agent", "root", 0, (0.5, 2.0), (7.0, 9.0), (3, 3), (12, 16)),
    t("agetty", "/sbin/agetty -o -p -- \\u --noclear tty1 linux", "root", 0, (0.0, 0.0), (1.5, 2.5), (1, 1), (4, 6)),
];

/// The supervised programs' processes (`{k}` is the program number).
const PROGRAM: Template = t(
    "worker-{k}",
    "/opt/app/bin/worker --id {k} --config /etc/app/worker.toml",
    "app",
    1000,
    (5.0, 60.0),
    (200.0, 1500.0),
    (8, 32),
    (40, 400),
);

/// The rest of the table is filled with these, in turn.
const FILLERS: &[Template] = &[
    kt("kworker/{k}:1", 0, 0.3),
    t("nginx", "nginx: worker process", "www-data", 33, (0.2, 5.0), (8.0, 40.0), (1, 1), (30, 300)),
    t("postgres", "postgres: 15/main: app appdb 10.0.3.{k}(5{k}) idle", "postgres", 113, (0.1, 20.0), (30.0, 400.0), (1, 1), (15, 60)),
    t("java", "java -Xms2g -Xmx8g -XX:+UseG1GC -jar /opt/app/service-{k}.jar --spring.profiles.active=prod", "app", 1000, (5.0, 80.0), (800.0, 6000.0), (40, 200), (150, 900)),
    kt("kworker/{k}:0H", -20, 0.1),
    t("python3", "python3 /opt/app/jobs/etl.py --batch {k}", "app", 1000, (1.0, 40.0), (60.0, 900.0), (1, 8), (8, 40)),
    t("node", "node /srv/api/server.js --port 30{k}", "app", 1000, (1.0, 20.0), (80.0, 500.0), (7, 11), (25, 120)),
    t("redis-server", "redis-server 127.0.0.1:6{k}", "redis", 114, (0.2, 6.0), (20.0, 2000.0), (5, 6), (30, 200)),
    kt("irq/{k}-nvme0q{k}", -51, 0.05),
    t("bash", "-bash", "app", 1000, (0.0, 0.01), (4.0, 6.0), (1, 1), (4, 5)),
    t("sleep", "sleep 300", "app", 1000, (0.0, 0.0), (0.8, 1.2), (1, 1), (3, 3)),
    t("containerd-shim", "/usr/bin/containerd-shim-runc-v2 -namespace moby -id 7f3a{k}c2e91 -address /run/containerd/containerd.sock", "root", 0, (0.0, 0.3), (9.0, 14.0), (10, 12), (12, 20)),
    t("sshd", "sshd: app@pts/{k}", "app", 1000, (0.0, 0.05), (6.0, 8.0), (1, 1), (8, 12)),
    t("tail", "tail -F /var/log/app/service-{k}.log", "app", 1000, (0.0, 0.05), (1.0, 2.0), (1, 1), (4, 5)),
];

/// The static facts of one row that are not on the wire.
#[derive(Debug, Clone)]
struct Meta {
    /// CPU % of one core at a node CPU level of 30 %.
    weight: f64,
    rss_base: f64,
    vsz_factor: f64,
    fds_base: u32,
    kernel: bool,
    zombie: bool,
    /// Short-lived kinds are occasionally replaced by a new process (new pid and start time).
    churns: bool,
}

/// The process-table simulation of one node.
#[derive(Debug)]
pub struct ProcSim {
    meta: Vec<Meta>,
    /// The row of each supervised program's process, in program order.
    program_rows: Vec<usize>,
    next_pid: u32,
    last_ts_ms: Option<i64>,
    cores: u32,
}

impl ProcSim {
    /// Builds `count` rows; the first `programs` rows after the system ones are the supervised
    /// programs (their pids are returned, in order, as far as the table has room for them).
    pub fn new(
        rng: &mut Rng,
        count: usize,
        programs: usize,
        cores: u32,
        boot_ms: i64,
        start_ms: i64,
        programs_since_ms: i64,
    ) -> (Self, ProcessTable, Vec<Option<u32>>) {
        let mut meta = Vec::with_capacity(count);
        let mut rows = Vec::with_capacity(count);
        let mut program_pids = vec![None; programs];
        let mut program_rows = Vec::with_capacity(programs);
        let mut pid = 1u32;
        let uptime_ms = (start_ms - boot_ms).max(1);
        // Zombies are an error sign: about one node in seven has one.
        let zombie_row = (count > SYSTEM.len() + programs + 4 && rng.chance(0.15))
            .then(|| SYSTEM.len() + programs + 1 + rng.below(3) as usize);
        for i in 0..count {
            let (tpl, k, start_time_ms, kind) = if let Some(tpl) = SYSTEM.get(i) {
                let start = boot_ms + 200 * i as i64 + rng.below(3000) as i64;
                (tpl, i as u64, start, RowKind::System)
            } else if i < SYSTEM.len() + programs {
                (
                    &PROGRAM,
                    (i - SYSTEM.len() + 1) as u64,
                    programs_since_ms,
                    RowKind::Program,
                )
            } else {
                let f = i - SYSTEM.len() - programs;
                let start = boot_ms + rng.below(uptime_ms as u64) as i64;
                (
                    &FILLERS[f % FILLERS.len()],
                    (f / FILLERS.len()) as u64,
                    start,
                    RowKind::Filler,
                )
            };
            pid += match kind {
                RowKind::System => 1,
                _ => 1 + rng.below(400) as u32,
            };
            if kind == RowKind::Program {
                if let Some(slot) = program_pids.get_mut(i - SYSTEM.len()) {
                    *slot = Some(pid);
                }
                program_rows.push(i);
            }
            let zombie = zombie_row == Some(i);
            let kernel = tpl.cmdline.is_empty();
            let weight = rng.range(tpl.weight.0, tpl.weight.1.max(tpl.weight.0));
            let rss_base = rng.range(tpl.rss_mib.0, tpl.rss_mib.1.max(tpl.rss_mib.0)) * MIB;
            let fds_base = tpl.fds.0 + rng.below(u64::from(tpl.fds.1 - tpl.fds.0) + 1) as u32;
            let threads =
                tpl.threads.0 + rng.below(u64::from(tpl.threads.1 - tpl.threads.0) + 1) as u32;
            let run_time_s = (start_ms - start_time_ms).max(0) as f64 / 1000.0;
            let m = Meta {
                weight: if zombie { 0.0 } else { weight },
                rss_base: if zombie { 0.0 } else { rss_base },
                vsz_factor: if kernel || zombie {
                    0.0
                } else {
                    rng.range(1.5, 6.0)
                },
                fds_base: if zombie { 0 } else { fds_base },
                kernel,
                zombie,
                churns: kind == RowKind::Filler && !zombie,
            };
            rows.push(ProcessRow {
                pid,
                ppid: match (i, kind) {
                    (0, _) => 0,
                    (_, _) if kernel => 2,
                    _ => 1,
                },
                name: comm(&expand(tpl.name, k)),
                cmdline: if zombie {
                    String::new()
                } else {
                    expand(tpl.cmdline, k)
                },
                user: tpl.user.to_string(),
                uid: tpl.uid,
                state: ProcState::Waiting,
                cpu_pct: 0.0,
                rss_bytes: m.rss_base as u64,
                vsz_bytes: (m.rss_base * m.vsz_factor) as u64,
                fds: Some(m.fds_base),
                threads: if zombie { 1 } else { threads },
                read_bytes_ps: Some(0.0),
                write_bytes_ps: Some(0.0),
                // Below -20 the template gives a real-time priority (irq threads); nice is 0.
                nice: if tpl.nice < -20 { 0 } else { tpl.nice },
                priority: if tpl.nice < -20 {
                    tpl.nice
                } else {
                    20 + tpl.nice
                },
                start_time_ms,
                run_time_s,
                cpu_time_s: weight / 100.0 * run_time_s * 0.3,
            });
            meta.push(m);
        }
        let table = ProcessTable {
            total: u32::try_from(rows.len()).unwrap_or(u32::MAX),
            states: StateCounts::default(),
            rows,
            vanished_total: 0,
            denied_total: 0,
        };
        let sim = Self {
            meta,
            program_rows,
            next_pid: pid + 1 + rng.below(1000) as u32,
            last_ts_ms: None,
            cores: cores.max(1),
        };
        (sim, table, program_pids)
    }

    /// Moves every row on to `ts_ms`, with the node's CPU level at `node_cpu_pct`.
    pub fn update(
        &mut self,
        table: &mut ProcessTable,
        rng: &mut Rng,
        ts_ms: i64,
        default_dt: f64,
        node_cpu_pct: f64,
    ) {
        let dt = match self.last_ts_ms {
            Some(prev) if ts_ms > prev => (ts_ms - prev) as f64 / 1000.0,
            _ => default_dt,
        };
        self.last_ts_ms = Some(ts_ms);
        let scale = node_cpu_pct / 30.0;
        let cpu_cap = f64::from(self.cores) * 100.0;
        let mut states = StateCounts::default();
        for (row, m) in table.rows.iter_mut().zip(&self.meta) {
            if m.churns && rng.chance(0.0005) {
                // The process exited and another of the same kind took its place.
                respawn(&mut self.next_pid, row, rng, ts_ms, dt);
            }
            let cpu = if m.weight > 0.0 {
                (m.weight * scale * (1.0 + 0.3 * rng.noise())).clamp(0.0, cpu_cap)
            } else {
                0.0
            };
            row.cpu_pct = cpu as f32;
            row.cpu_time_s += cpu / 100.0 * dt;
            row.run_time_s = (ts_ms - row.start_time_ms).max(0) as f64 / 1000.0;
            row.state = if m.zombie {
                ProcState::Zombie
            } else if (cpu > 15.0 && rng.chance(0.5)) || rng.chance(0.004) {
                ProcState::Running
            } else if !m.kernel && rng.chance(0.002) {
                ProcState::Busy
            } else {
                ProcState::Waiting
            };
            states.add(row.state);
            if !m.kernel && !m.zombie {
                let rss = m.rss_base * (1.0 + 0.03 * rng.noise());
                row.rss_bytes = rss as u64;
                row.vsz_bytes = (m.rss_base * m.vsz_factor) as u64;
                row.fds = Some(m.fds_base + rng.below(u64::from(m.fds_base / 10) + 1) as u32);
                let io = cpu * 40_000.0 * rng.f64();
                row.read_bytes_ps = Some(if rng.chance(0.3) { io.round() } else { 0.0 });
                row.write_bytes_ps = Some(if rng.chance(0.4) {
                    (io * 0.6).round()
                } else {
                    0.0
                });
            }
        }
        table.total = u32::try_from(table.rows.len()).unwrap_or(u32::MAX);
        table.states = states;
        if rng.chance(0.01) {
            table.vanished_total += 1;
        }
    }

    /// Program `k`'s (0-based) process was restarted within the last `dt` seconds: a new pid and
    /// start time, and only the CPU time of its new run. Call after [`ProcSim::update`].
    pub fn respawn_program(
        &mut self,
        table: &mut ProcessTable,
        k: usize,
        rng: &mut Rng,
        ts_ms: i64,
        dt: f64,
    ) {
        let Some(row) = self
            .program_rows
            .get(k)
            .and_then(|&i| table.rows.get_mut(i))
        else {
            return;
        };
        respawn(&mut self.next_pid, row, rng, ts_ms, dt);
        row.run_time_s = (ts_ms - row.start_time_ms).max(0) as f64 / 1000.0;
        row.cpu_time_s = row.run_time_s * f64::from(row.cpu_pct) / 100.0;
    }
}

/// A new process in `row`'s place: the next pid, started within the last `dt` seconds.
fn respawn(next_pid: &mut u32, row: &mut ProcessRow, rng: &mut Rng, ts_ms: i64, dt: f64) {
    row.pid = *next_pid;
    *next_pid = if *next_pid >= PID_MAX - 1000 {
        300
    } else {
        *next_pid + 1 + rng.below(50) as u32
    };
    row.start_time_ms = ts_ms - rng.below((dt * 1000.0) as u64 + 1) as i64;
    row.cpu_time_s = 0.0;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RowKind {
    System,
    Program,
    Filler,
}

fn expand(pattern: &str, k: u64) -> String {
    if pattern.contains("{k}") {
        pattern.replace("{k}", &k.to_string())
    } else {
        pattern.to_string()
    }
}

/// The kernel keeps at most 15 bytes of a process name.
fn comm(name: &str) -> String {
    let mut end = name.len().min(15);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name[..end].to_string()
}
