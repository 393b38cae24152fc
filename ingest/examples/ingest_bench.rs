//! Ingest benchmarks without NATS: row building from encoded node reports, `Store::insert`
//! throughput of 100k-row `process_metrics` batches (in sequence and 2 or 4 at once, LZ4 and
//! uncompressed), where the engine's time goes (the same batches into variants of the table),
//! and bytes per row on disk after `OPTIMIZE … FINAL`.
//!
//! ```text
//! cargo run --release -p gridmon-ingest --example ingest_bench -- \
//!     [--nodes 1000] [--procs 500] [--intervals 3] [--batches 12] \
//!     [--storage-nodes 200] [--storage-minutes 10] [--skip-rate] [--skip-storage] [--keep]
//! ```
//!
//! `--intervals`: process tables timed for row building; `--batches`: 100k-row batches for the
//! insert figures; `--storage-*`: the fleet and time span written for the storage figures, a
//! table every 10 s; `--keep` leaves the storage database in place (useful with
//! `CLICKHOUSE_URL`, whose databases outlive the run).
//!
//! The engine is the embedded one (`scripts/clickhouse-front.py`), or `CLICKHOUSE_URL`; CPU
//! figures of the engine are read from `/proc` for the embedded one only. Every row goes through
//! the real path: a simulated node's process table is framed and encoded as an agent does, and
//! `Converter::add_message` turns it into `ProcessMetricsRow`s. Each process's figures move on
//! from one table to the next as on a real machine (CPU in 10 ms ticks, RSS in 4 KiB pages
//! drifting while the process runs, idle processes unchanged), so the compression figures are
//! not flattered by constant or random columns.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clickhouse::Row;
use gridmon_ingest::rows::{Converter, ProcessMetricsRow, Rows};
use gridmon_ingest::store::Store;
use gridmon_nats::config::{ChCompression, ClickHouseConfig};
use gridmon_nats::frame::Framer;
use gridmon_nats::wire::{
    self, CpuMetrics, DiskMetrics, FsMetrics, HostMetrics, Kind, MemoryMetrics, NetMetrics,
    NodeReport, ProcState, ProcessRow, ProcessTable, SensorKind, SensorReading, Source,
    StateCounts,
};
use gridmon_nats::{NodeId, Subjects};
use gridmon_tests::clickhouse::ClickHouse;
use serde::Deserialize;

const BATCH_ROWS: usize = 100_000;
/// 2026-11-23 10:00:00 UTC: a fixed start, so runs are comparable.
const T0_MS: i64 = 1_795_428_000_000;
const PAGE: u64 = 4096;
const TICKS_PER_S: f64 = 100.0;

// --- A small deterministic PRNG ----------------------------------------------------------

#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn f64(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.f64()
    }
    /// Log-uniform: as many processes near the low end of a range as near the high end.
    fn log_range(&mut self, lo: f64, hi: f64) -> f64 {
        if lo <= 0.0 || hi <= lo {
            return self.range(lo, hi);
        }
        (lo.ln() + (hi.ln() - lo.ln()) * self.f64()).exp()
    }
    fn chance(&mut self, p: f64) -> bool {
        self.f64() < p
    }
    fn normal(&mut self) -> f64 {
        let u = self.f64().max(1e-12);
        let v = self.f64();
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
    /// Poisson for small means, normal beyond.
    fn poisson(&mut self, mean: f64) -> u64 {
        if mean <= 0.0 {
            return 0;
        }
        if mean > 30.0 {
            return (mean + mean.sqrt() * self.normal()).round().max(0.0) as u64;
        }
        let l = (-mean).exp();
        let (mut k, mut p) = (0u64, 1.0);
        loop {
            p *= self.f64();
            if p <= l {
                return k;
            }
            k += 1;
        }
    }
}

// --- What a node's process table is made of ------------------------------------------------

/// A kind of process. In `cmdline`, `{k}` is a per-row number and `{h}` a per-process hex id.
struct Tpl {
    name: &'static str,
    cmdline: &'static str,
    user: &'static str,
    uid: u32,
    /// Mean CPU % of one core while the node is at its base level: (low, high), log-uniform.
    cpu: (f64, f64),
    rss_mib: (f64, f64),
    threads: (u32, u32),
    fds: (u32, u32),
    nice: i32,
    /// Chance per table that the process is replaced by a new one (new pid, start time).
    churn: f64,
    /// RSS grows slowly while it runs (heaps, caches), MiB per hour.
    grow_mib_h: f64,
}

#[allow(clippy::too_many_arguments)]
const fn t(
    name: &'static str,
    cmdline: &'static str,
    user: &'static str,
    uid: u32,
    cpu: (f64, f64),
    rss_mib: (f64, f64),
    threads: (u32, u32),
    fds: (u32, u32),
) -> Tpl {
    Tpl {
        name,
        cmdline,
        user,
        uid,
        cpu,
        rss_mib,
        threads,
        fds,
        nice: 0,
        churn: 0.0,
        grow_mib_h: 0.0,
    }
}

const fn kt(name: &'static str, nice: i32, cpu: f64) -> Tpl {
    Tpl {
        name,
        cmdline: "",
        user: "root",
        uid: 0,
        cpu: (0.0005, cpu),
        rss_mib: (0.0, 0.0),
        threads: (1, 1),
        fds: (0, 0),
        nice,
        churn: 0.0,
        grow_mib_h: 0.0,
    }
}

const fn churning(mut tpl: Tpl, churn: f64) -> Tpl {
    tpl.churn = churn;
    tpl
}

const fn growing(mut tpl: Tpl, mib_h: f64) -> Tpl {
    tpl.grow_mib_h = mib_h;
    tpl
}

#[rustfmt::skip]
const SYSTEM: &[Tpl] = &[
    t("systemd", "/sbin/init splash", "root", 0, (0.01, 0.2), (9.0, 14.0), (1, 1), (90, 140)),
    kt("kthreadd", 0, 0.01),
    kt("rcu_sched", 0, 0.3),
    kt("ksoftirqd/0", 0, 0.4),
    kt("ksoftirqd/1", 0, 0.4),
    kt("migration/0", 0, 0.05),
    kt("kcompactd0", 0, 0.01),
    kt("khugepaged", 39, 0.01),
    kt("jbd2/nvme0n1p2-", 0, 0.05),
    t("systemd-journal", "/lib/systemd/systemd-journald", "root", 0, (0.05, 0.8), (20.0, 120.0), (1, 1), (30, 60)),
    t("systemd-udevd", "/lib/systemd/systemd-udevd", "root", 0, (0.001, 0.1), (6.0, 9.0), (1, 1), (15, 25)),
    t("systemd-network", "/lib/systemd/systemd-networkd", "systemd-network", 100, (0.001, 0.05), (7.0, 9.0), (1, 1), (20, 30)),
    t("systemd-resolve", "/lib/systemd/systemd-resolved", "systemd-resolve", 101, (0.005, 0.2), (11.0, 14.0), (1, 1), (20, 30)),
    t("systemd-logind", "/lib/systemd/systemd-logind", "root", 0, (0.001, 0.05), (6.0, 8.0), (1, 1), (20, 30)),
    t("dbus-daemon", "@dbus-daemon --system --address=systemd: --nofork --nopidfile --systemd-activation --syslog-only", "messagebus", 102, (0.001, 0.1), (4.0, 6.0), (1, 1), (20, 40)),
    t("rsyslogd", "/usr/sbin/rsyslogd -n -iNONE", "syslog", 104, (0.01, 0.3), (4.0, 10.0), (4, 4), (10, 14)),
    t("cron", "/usr/sbin/cron -f -P", "root", 0, (0.0005, 0.01), (2.5, 3.5), (1, 1), (6, 8)),
    t("chronyd", "/usr/sbin/chronyd -F 1", "_chrony", 110, (0.001, 0.02), (2.0, 3.0), (1, 1), (6, 8)),
    t("sshd", "sshd: /usr/sbin/sshd -D [listener] 0 of 10-100 startups", "root", 0, (0.0005, 0.02), (8.0, 10.0), (1, 1), (5, 7)),
    growing(t("containerd", "/usr/bin/containerd", "root", 0, (0.1, 1.5), (40.0, 70.0), (12, 20), (40, 90)), 0.5),
    growing(t("dockerd", "/usr/bin/dockerd -H fd:// --containerd=/run/containerd/containerd.sock", "root", 0, (0.05, 1.0), (70.0, 120.0), (14, 30), (50, 120)), 0.5),
    t("gridmon", "/usr/local/bin/gridmon agent --config /etc/gridmon/gridmon.toml", "root", 0, (0.5, 2.0), (7.0, 9.0), (3, 3), (12, 16)),
    t("node_exporter", "/usr/local/bin/node_exporter --collector.systemd --web.listen-address=:9100", "prometheus", 998, (0.05, 0.5), (15.0, 25.0), (6, 9), (8, 12)),
    t("agetty", "/sbin/agetty -o -p -- \\u --noclear tty1 linux", "root", 0, (0.0, 0.0), (1.5, 2.5), (1, 1), (4, 6)),
    growing(t("worker-1", "/opt/app/bin/worker --id 1 --config /etc/app/worker.toml", "app", 1000, (5.0, 60.0), (200.0, 1500.0), (8, 32), (40, 400)), 20.0),
    growing(t("worker-2", "/opt/app/bin/worker --id 2 --config /etc/app/worker.toml", "app", 1000, (5.0, 60.0), (200.0, 1500.0), (8, 32), (40, 400)), 20.0),
];

#[rustfmt::skip]
const FILLERS: &[Tpl] = &[
    kt("kworker/{k}:1", 0, 0.3),
    t("nginx", "nginx: worker process", "www-data", 33, (0.05, 5.0), (8.0, 40.0), (1, 1), (30, 300)),
    t("postgres", "postgres: 15/main: app appdb 10.0.{k}.{h}(5{k}{h}) idle", "postgres", 113, (0.01, 20.0), (30.0, 400.0), (1, 1), (15, 60)),
    growing(t("java", "java -Xms2g -Xmx8g -XX:+UseG1GC -XX:MaxGCPauseMillis=200 -Dlog.dir=/var/log/app -jar /opt/app/service-{k}.jar --spring.profiles.active=prod", "app", 1000, (2.0, 80.0), (800.0, 6000.0), (40, 200), (150, 900)), 60.0),
    kt("kworker/{k}:0H", -20, 0.1),
    churning(growing(t("python3", "python3 /opt/app/jobs/etl.py --batch {k} --source s3://data-lake/raw/{h}", "app", 1000, (1.0, 40.0), (60.0, 900.0), (1, 8), (8, 40)), 120.0), 0.02),
    t("node", "node /srv/api/server.js --port 30{k}", "app", 1000, (0.5, 20.0), (80.0, 500.0), (7, 11), (25, 120)),
    growing(t("redis-server", "redis-server 127.0.0.1:6{k}", "redis", 114, (0.1, 6.0), (20.0, 2000.0), (5, 6), (30, 200)), 10.0),
    kt("irq/{k}-nvme0q{k}", -51, 0.05),
    t("bash", "-bash", "app", 1000, (0.0005, 0.01), (4.0, 6.0), (1, 1), (4, 5)),
    churning(t("sleep", "sleep 300", "app", 1000, (0.0, 0.0), (0.8, 1.2), (1, 1), (3, 3)), 0.03),
    t("containerd-shim", "/usr/bin/containerd-shim-runc-v2 -namespace moby -id {h}{h}{h}{h} -address /run/containerd/containerd.sock", "root", 0, (0.005, 0.3), (9.0, 14.0), (10, 12), (12, 20)),
    t("sshd", "sshd: app@pts/{k}", "app", 1000, (0.0005, 0.05), (6.0, 8.0), (1, 1), (8, 12)),
    t("tail", "tail -F /var/log/app/service-{k}.log", "app", 1000, (0.0005, 0.05), (1.0, 2.0), (1, 1), (4, 5)),
    t("php-fpm8.2", "php-fpm: pool www", "www-data", 33, (0.01, 8.0), (20.0, 90.0), (1, 1), (10, 20)),
    t("gunicorn", "/opt/venv/bin/python3 /opt/venv/bin/gunicorn app.wsgi:application --workers 4 --bind 0.0.0.0:80{k}", "app", 1000, (0.05, 10.0), (70.0, 300.0), (1, 3), (12, 30)),
];

fn expand(pattern: &str, k: u64, rng: &mut Rng) -> String {
    let mut s = pattern.replace("{k}", &k.to_string());
    while let Some(i) = s.find("{h}") {
        s.replace_range(i..i + 3, &format!("{:04x}", rng.below(0x10000)));
    }
    s
}

/// The kernel keeps at most 15 bytes of a name.
fn comm(name: &str) -> String {
    name[..name.len().min(15)].to_string()
}

/// One process and what the row does not show.
struct Proc {
    tpl: &'static Tpl,
    k: u64,
    kernel: bool,
    cpu_mean: f64,
    rss_base_pages: f64,
    rss_pages: f64,
    fds_base: u32,
    io_share: f64,
    ticks: u64,
}

/// One simulated node: its process table, moved on in place from one report to the next.
struct Node {
    subject: String,
    framer: Framer,
    rng: Rng,
    procs: Vec<Proc>,
    report: NodeReport,
    boot_ms: i64,
    next_pid: u32,
    cpu_base: f64,
    cpu_period_s: f64,
    cores: u32,
    mem_total: u64,
}

impl Node {
    fn new(subjects: &Subjects, index: usize, groups: usize, procs: usize, seed: u64) -> Self {
        let mut rng = Rng(seed ^ (index as u64).wrapping_mul(0x2545_f491_4f6c_dd1d));
        let id = NodeId::new(
            "c01",
            format!("g{:02}", index % groups + 1),
            format!("n{:04}", index + 1),
        )
        .unwrap_or_else(|e| panic!("node name: {e}"));
        let subject = subjects.node_report(&id);
        let framer = Framer::new(Source::from(&id), T0_MS as u64 - 3_600_000);
        let boot_ms =
            T0_MS - 86_400_000 * (1 + rng.below(60) as i64) - rng.below(86_400_000) as i64;
        let cores = [4u32, 8, 16, 32, 64][rng.below(5) as usize];
        let mut node = Self {
            subject,
            framer,
            rng,
            procs: Vec::with_capacity(procs),
            report: NodeReport::default(),
            boot_ms,
            next_pid: 1,
            cpu_base: 0.0,
            cpu_period_s: 0.0,
            cores,
            mem_total: [16u64, 32, 64, 128][(index * 7) % 4] << 30,
        };
        node.cpu_base = node.rng.range(0.3, 2.0);
        node.cpu_period_s = node.rng.range(300.0, 3600.0);
        let mut rows = Vec::with_capacity(procs);
        for i in 0..procs {
            let (tpl, k) = match SYSTEM.get(i) {
                Some(tpl) => (tpl, i as u64),
                None => {
                    let f = i - SYSTEM.len();
                    (&FILLERS[f % FILLERS.len()], (f / FILLERS.len()) as u64)
                }
            };
            let system = i < SYSTEM.len();
            let start = if system {
                node.boot_ms + 300 * i as i64 + node.rng.below(3000) as i64
            } else {
                node.boot_ms + node.rng.below((T0_MS - node.boot_ms) as u64) as i64
            };
            let (p, row) = node.spawn(tpl, k, start, system);
            node.procs.push(p);
            rows.push(row);
        }
        node.report = NodeReport {
            interval_ms: 10_000,
            host: Some(node.host(T0_MS, 30.0)),
            processes: Some(ProcessTable {
                total: procs as u32,
                states: StateCounts::default(),
                rows,
                vanished_total: 0,
                denied_total: 0,
            }),
            sensors: sensors(),
            programs: Vec::new(),
            agent: Default::default(),
        };
        node
    }

    fn spawn(
        &mut self,
        tpl: &'static Tpl,
        k: u64,
        start_ms: i64,
        system: bool,
    ) -> (Proc, ProcessRow) {
        let rng = &mut self.rng;
        let kernel = tpl.cmdline.is_empty();
        self.next_pid += if system { 1 } else { 1 + rng.below(300) as u32 };
        let pid = self.next_pid;
        let cpu_mean = rng.log_range(tpl.cpu.0, tpl.cpu.1);
        let rss_base_pages = rng.range(tpl.rss_mib.0, tpl.rss_mib.1) * 256.0;
        let fds_base = tpl.fds.0 + rng.below(u64::from(tpl.fds.1 - tpl.fds.0) + 1) as u32;
        let threads =
            tpl.threads.0 + rng.below(u64::from(tpl.threads.1 - tpl.threads.0) + 1) as u32;
        let run_s = ((T0_MS.max(start_ms) - start_ms) as f64 / 1000.0).max(0.0);
        // CPU so far: a fraction of the mean over the run time, in ticks.
        let ticks = (cpu_mean / 100.0 * run_s * TICKS_PER_S * rng.range(0.3, 1.0)) as u64;
        let vsz_factor = if kernel { 0.0 } else { rng.range(1.5, 6.0) };
        let p = Proc {
            tpl,
            k,
            kernel,
            cpu_mean,
            rss_base_pages,
            rss_pages: rss_base_pages,
            fds_base,
            io_share: rng.range(0.05, 0.6),
            ticks,
        };
        let row = ProcessRow {
            pid,
            ppid: if pid == 1 {
                0
            } else if kernel {
                2
            } else {
                1
            },
            name: comm(&expand(tpl.name, k, rng)),
            cmdline: expand(tpl.cmdline, k, rng),
            user: tpl.user.to_string(),
            uid: tpl.uid,
            state: ProcState::Waiting,
            cpu_pct: 0.0,
            rss_bytes: rss_base_pages as u64 * PAGE,
            vsz_bytes: ((rss_base_pages * vsz_factor) as u64 + 2048) * PAGE,
            fds: Some(fds_base),
            threads,
            read_bytes_ps: Some(0.0),
            write_bytes_ps: Some(0.0),
            nice: if tpl.nice < -20 { 0 } else { tpl.nice },
            priority: if tpl.nice < -20 {
                tpl.nice
            } else {
                20 + tpl.nice
            },
            start_time_ms: start_ms,
            run_time_s: run_s,
            cpu_time_s: ticks as f64 / TICKS_PER_S,
        };
        (p, row)
    }

    fn host(&mut self, ts_ms: i64, cpu_pct: f64) -> HostMetrics {
        let rng = &mut self.rng;
        let used = (self.mem_total as f64 * rng.range(0.35, 0.45)) as u64;
        HostMetrics {
            uptime_s: (ts_ms - self.boot_ms) as f64 / 1000.0,
            cpu: CpuMetrics {
                total_pct: cpu_pct as f32,
                user_pct: (cpu_pct * 0.74) as f32,
                system_pct: (cpu_pct * 0.22) as f32,
                iowait_pct: (cpu_pct * 0.03) as f32,
                steal_pct: 0.0,
                per_core_pct: (0..self.cores)
                    .map(|_| (cpu_pct * rng.range(0.7, 1.3)).min(100.0) as f32)
                    .collect(),
                load1: (cpu_pct / 100.0 * f64::from(self.cores)) as f32,
                load5: (cpu_pct / 100.0 * f64::from(self.cores) * 0.95) as f32,
                load15: (cpu_pct / 100.0 * f64::from(self.cores) * 0.9) as f32,
            },
            memory: MemoryMetrics {
                total_bytes: self.mem_total,
                used_bytes: used,
                available_bytes: self.mem_total - used,
                swap_total_bytes: 4 << 30,
                swap_used_bytes: 40 << 20,
            },
            disks: ["nvme0n1", "sda"]
                .iter()
                .map(|d| DiskMetrics {
                    name: (*d).into(),
                    busy_pct: (cpu_pct * 0.1) as f32,
                    read_bytes_ps: rng.range(0.0, 4e6).round(),
                    write_bytes_ps: rng.range(0.0, 8e6).round(),
                    read_ops_ps: rng.range(0.0, 60.0).round(),
                    write_ops_ps: rng.range(0.0, 250.0).round(),
                })
                .collect(),
            filesystems: vec![FsMetrics {
                mount: "/".into(),
                device: "/dev/nvme0n1p2".into(),
                fstype: "ext4".into(),
                total_bytes: 512 << 30,
                used_bytes: 120 << 30,
                avail_bytes: 366 << 30,
                inodes_total: 33_554_432,
                inodes_used: 812_345,
            }],
            nets: ["lo", "eth0"]
                .iter()
                .map(|n| NetMetrics {
                    name: (*n).into(),
                    up: true,
                    carrier: true,
                    rx_bytes_ps: rng.range(1e4, 6e7).round(),
                    tx_bytes_ps: rng.range(1e4, 6e7).round(),
                    rx_packets_ps: rng.range(10.0, 4e4).round(),
                    tx_packets_ps: rng.range(10.0, 4e4).round(),
                    ..Default::default()
                })
                .collect(),
            probes: Vec::new(),
        }
    }

    /// Moves the table on to `ts_ms` (`dt_s` since the last one) and encodes the report.
    fn next_report(
        &mut self,
        ts_ms: i64,
        dt_s: f64,
    ) -> anyhow::Result<gridmon_nats::publish::Outgoing> {
        // The agent measures the interval on the monotonic clock: never exactly 10 s.
        let dt = dt_s + self.rng.range(-0.004, 0.004);
        let phase = (ts_ms - T0_MS) as f64 / 1000.0 / self.cpu_period_s * std::f64::consts::TAU;
        let level = (self.cpu_base * (1.0 + 0.3 * phase.sin())).max(0.05);
        let mut table = self
            .report
            .processes
            .take()
            .context("the node lost its process table")?;
        let mut states = StateCounts::default();
        let mut busy_total = 0.0;
        for i in 0..self.procs.len() {
            let churn = self.procs[i].tpl.churn;
            if churn > 0.0 && self.rng.chance(churn) {
                let (tpl, k) = (self.procs[i].tpl, self.procs[i].k);
                let start = ts_ms - self.rng.below((dt * 1000.0) as u64) as i64;
                let (p, row) = self.spawn(tpl, k, start, false);
                self.procs[i] = p;
                table.rows[i] = row;
            }
            let (p, row, rng) = (&mut self.procs[i], &mut table.rows[i], &mut self.rng);
            let ticks = rng.poisson(p.cpu_mean * level * dt);
            p.ticks += ticks;
            let cpu = ticks as f64 / TICKS_PER_S / dt * 100.0;
            busy_total += cpu;
            row.cpu_pct = cpu as f32;
            row.cpu_time_s = p.ticks as f64 / TICKS_PER_S;
            row.run_time_s = ((ts_ms - row.start_time_ms) as f64 / 1000.0).max(0.0);
            row.state = if cpu > 20.0 && rng.chance(0.5) || rng.chance(0.003) {
                ProcState::Running
            } else if !p.kernel && ticks > 0 && rng.chance(0.002) {
                ProcState::Busy
            } else {
                ProcState::Waiting
            };
            states.add(row.state);
            if p.kernel || ticks == 0 {
                // An idle process: memory, descriptors and threads stay as they were.
                row.read_bytes_ps = Some(0.0);
                row.write_bytes_ps = Some(0.0);
                continue;
            }
            // Drift around a base that grows for heap-heavy kinds, in whole pages.
            let grow = p.tpl.grow_mib_h * 256.0 / 3600.0 * dt * rng.range(0.0, 2.0);
            p.rss_base_pages += grow;
            p.rss_pages = (p.rss_pages
                + grow
                + 0.05 * (p.rss_base_pages - p.rss_pages)
                + p.rss_base_pages * 0.004 * rng.normal())
            .max(p.rss_base_pages * 0.5);
            row.rss_bytes = p.rss_pages as u64 * PAGE;
            if rng.chance(0.02) {
                row.vsz_bytes += (1 + rng.below(16)) * 1024 * 1024 * 4;
            }
            if rng.chance(0.2) {
                let spread = p.fds_base / 10 + 1;
                row.fds = Some(p.fds_base + rng.below(u64::from(spread)) as u32);
            }
            if p.tpl.threads.1 > p.tpl.threads.0 && rng.chance(0.05) {
                row.threads = (row.threads + rng.below(3) as u32)
                    .saturating_sub(1)
                    .clamp(p.tpl.threads.0, p.tpl.threads.1);
            }
            let io = |rng: &mut Rng| {
                if rng.chance(p.io_share) {
                    let bytes = (ticks as f64 * rng.range(0.0, 400.0)).round() as u64 * PAGE;
                    bytes as f64 / dt
                } else {
                    0.0
                }
            };
            row.read_bytes_ps = Some(io(rng));
            row.write_bytes_ps = Some(io(rng));
        }
        table.states = states;
        let node_cpu = (busy_total / f64::from(self.cores)).min(100.0);
        self.report.host = Some(self.host(ts_ms, node_cpu));
        self.report.processes = Some(table);
        self.framer
            .frame(Kind::NodeReport, self.subject.clone(), ts_ms, &self.report)
            .context("encoding a report")
    }
}

fn sensors() -> Vec<SensorReading> {
    let mut s: Vec<SensorReading> = (0..4)
        .map(|i| SensorReading {
            id: format!("coretemp.0/temp{}", i + 1),
            chip: "coretemp.0".into(),
            label: if i == 0 {
                "Package id 0".into()
            } else {
                format!("Core {}", i - 1)
            },
            kind: SensorKind::Temperature,
            value: 45.0 + f64::from(i),
            max: Some(80.0),
            crit: Some(100.0),
            ..Default::default()
        })
        .collect();
    s.push(SensorReading {
        id: "nct6775.656/fan1".into(),
        chip: "nct6775.656".into(),
        label: "CPU Fan".into(),
        kind: SensorKind::Fan,
        value: 1200.0,
        min: Some(600.0),
        ..Default::default()
    });
    s
}

struct Fleet {
    nodes: Vec<Node>,
}

impl Fleet {
    fn new(subjects: &Subjects, nodes: usize, procs: usize, seed: u64) -> Self {
        Self {
            nodes: (0..nodes)
                .map(|i| Node::new(subjects, i, 8, procs, seed))
                .collect(),
        }
    }

    /// Every node's encoded report for the table at `ts_ms`.
    fn tick(
        &mut self,
        ts_ms: i64,
        dt_s: f64,
    ) -> anyhow::Result<Vec<gridmon_nats::publish::Outgoing>> {
        self.nodes
            .iter_mut()
            .map(|n| n.next_report(ts_ms, dt_s))
            .collect()
    }
}

// --- CPU of this process and of the engine ------------------------------------------------

fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// The embedded engine: our child process running `clickhouse-front.py`.
fn engine_pid() -> Option<u32> {
    let me = std::process::id();
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let ppid: Option<u32> = stat[close + 2..]
            .split(' ')
            .nth(1)
            .and_then(|p| p.parse().ok());
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if ppid == Some(me) && String::from_utf8_lossy(&cmd).contains("clickhouse-front") {
            return Some(pid);
        }
    }
    None
}

/// `sysconf(_SC_CLK_TCK)`: 100 on every Linux build this runs on.
const CLK_TCK: f64 = 100.0;

struct CpuMeter {
    engine: Option<u32>,
    me: u64,
    them: u64,
    wall: Instant,
}

impl CpuMeter {
    fn start(engine: Option<u32>) -> Self {
        Self {
            engine,
            me: cpu_ticks(std::process::id()).unwrap_or(0),
            them: engine.and_then(cpu_ticks).unwrap_or(0),
            wall: Instant::now(),
        }
    }
    /// (wall, our CPU seconds, the engine's CPU seconds)
    fn stop(&self) -> (Duration, f64, Option<f64>) {
        let me = cpu_ticks(std::process::id()).unwrap_or(0);
        let them = self
            .engine
            .and_then(cpu_ticks)
            .map(|t| (t - self.them) as f64 / CLK_TCK);
        (self.wall.elapsed(), (me - self.me) as f64 / CLK_TCK, them)
    }
}

// --- Phases --------------------------------------------------------------------------------

#[derive(Debug)]
struct Args {
    nodes: usize,
    procs: usize,
    intervals: usize,
    batches: usize,
    storage_nodes: usize,
    storage_minutes: u64,
    skip_rate: bool,
    skip_storage: bool,
    keep: bool,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        nodes: 1000,
        procs: 500,
        intervals: 3,
        batches: 12,
        storage_nodes: 200,
        storage_minutes: 10,
        skip_rate: false,
        skip_storage: false,
        keep: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut num = || -> anyhow::Result<u64> {
            it.next()
                .with_context(|| format!("{flag} needs a value"))?
                .parse()
                .with_context(|| format!("{flag} needs a number"))
        };
        match flag.as_str() {
            "--nodes" => a.nodes = num()? as usize,
            "--procs" => a.procs = num()? as usize,
            "--intervals" => a.intervals = num()? as usize,
            "--batches" => a.batches = num()? as usize,
            "--storage-nodes" => a.storage_nodes = num()? as usize,
            "--storage-minutes" => a.storage_minutes = num()?,
            "--skip-rate" => a.skip_rate = true,
            "--skip-storage" => a.skip_storage = true,
            "--keep" => a.keep = true,
            "--bench" => {}
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    Ok(a)
}

/// Row building from encoded reports; returns the process rows in 100k batches.
fn convert_phase(
    a: &Args,
    subjects: &Subjects,
) -> anyhow::Result<Vec<Arc<Vec<ProcessMetricsRow>>>> {
    println!(
        "\n## Row building: {} nodes x {} processes, {} tables 10 s apart (one thread)",
        a.nodes, a.procs, a.intervals
    );
    let t = Instant::now();
    let mut fleet = Fleet::new(subjects, a.nodes, a.procs, 7);
    println!("fleet built in {:.2} s", t.elapsed().as_secs_f64());
    let mut conv = Converter::new(subjects.clone(), 4096);
    let mut rows = Rows::default();
    let mut batches = Vec::new();
    println!("table  reports  bytes/report  decode only/report  add_message/report  add_message/row  rows/s (one core)  `processes` rows");
    for i in 0..a.intervals {
        let ts = T0_MS + 10_000 * (i as i64 + 1);
        let msgs = fleet.tick(ts, 10.0)?;
        let bytes: usize = msgs.iter().map(|m| m.payload.len()).sum();
        let t = Instant::now();
        for m in &msgs {
            let env = wire::decode::<NodeReport>(&m.payload, Kind::NodeReport)?;
            std::hint::black_box(&env);
        }
        let decode = t.elapsed();
        let mut process_rows = 0usize;
        let mut info_rows = 0usize;
        let mut conv_time = Duration::ZERO;
        for m in &msgs {
            let t = Instant::now();
            let out = conv.add_message(&m.subject, Some(m.msg_id.as_str()), &m.payload, &mut rows);
            conv_time += t.elapsed();
            anyhow::ensure!(
                matches!(out, gridmon_ingest::rows::Outcome::Rows(_)),
                "a report was not converted: {out:?}"
            );
            info_rows += rows.processes.len();
            rows.processes.clear();
            if rows.process_metrics.len() >= BATCH_ROWS {
                process_rows += rows.process_metrics.len();
                let batch = std::mem::take(&mut rows.process_metrics);
                if batches.len() < a.batches {
                    batches.push(Arc::new(batch));
                }
            }
            info_rows += rows.processes.len();
            rows.processes.clear();
            rows.node_metrics.clear();
            rows.disk_metrics.clear();
            rows.fs_metrics.clear();
            rows.net_metrics.clear();
            rows.sensor_readings.clear();
        }
        process_rows += rows.process_metrics.len();
        let n = msgs.len() as f64;
        println!(
            "{:>5}  {:>7}  {:>12.0}  {:>15.1} µs  {:>15.1} µs  {:>12.0} ns  {:>10.0}  {:>10}",
            i + 1,
            msgs.len(),
            bytes as f64 / n,
            decode.as_secs_f64() * 1e6 / n,
            conv_time.as_secs_f64() * 1e6 / n,
            conv_time.as_secs_f64() * 1e9 / process_rows as f64,
            process_rows as f64 / conv_time.as_secs_f64(),
            info_rows,
        );
    }
    anyhow::ensure!(
        conv.repairs.cut_strings == 0 && conv.repairs.non_finite == 0,
        "repairs: {:?}",
        conv.repairs
    );
    // Batches must be full for the rate figures; top up from later tables.
    let mut ts = T0_MS + 10_000 * (a.intervals as i64 + 1);
    while batches.len() < a.batches {
        for m in fleet.tick(ts, 10.0)? {
            conv.add_message(&m.subject, Some(m.msg_id.as_str()), &m.payload, &mut rows);
            if rows.process_metrics.len() >= BATCH_ROWS && batches.len() < a.batches {
                batches.push(Arc::new(std::mem::take(&mut rows.process_metrics)));
            }
        }
        ts += 10_000;
    }
    Ok(batches)
}

fn store_for(url: &str, database: &str, compression: ChCompression) -> Store {
    let cfg = ClickHouseConfig {
        url: url.to_string(),
        database: database.to_string(),
        compression,
        timeout: Duration::from_secs(600),
        ..Default::default()
    };
    Store::new(&cfg, url)
}

async fn rate_phase(
    ch: &ClickHouse,
    batches: &[Arc<Vec<ProcessMetricsRow>>],
    engine: Option<u32>,
) -> anyhow::Result<()> {
    let rows: usize = batches.iter().map(|b| b.len()).sum();
    println!(
        "\n## Store::insert into process_metrics: {} batches of {} rows ({} rows), fresh database per line",
        batches.len(),
        BATCH_ROWS,
        rows
    );
    println!("compression  views    at once  wall      rows/s      bench CPU/row  engine CPU/row  (CPU % of one core: bench, engine)");
    let runs = [
        ("lz4", ChCompression::Lz4, true),
        ("lz4", ChCompression::Lz4, false),
        ("none", ChCompression::None, true),
    ];
    for (label, comp, views) in runs {
        for conc in [1usize, 2, 4] {
            let db = format!(
                "ingest_bench_rate_{label}_{views}_{conc}_{}",
                std::process::id()
            );
            let store = store_for(ch.url(), &db, comp);
            store.migrate("ingest_bench").await?;
            if !views {
                // The table alone: what the narrow rows cost without the downsampling views.
                for v in ["process_metrics_1m_mv", "process_metrics_1h_mv"] {
                    store
                        .client()
                        .query(&format!("DROP VIEW {v}"))
                        .execute()
                        .await?;
                }
            }
            let sem = Arc::new(tokio::sync::Semaphore::new(conc));
            let meter = CpuMeter::start(engine);
            let mut tasks = Vec::new();
            for (i, b) in batches.iter().enumerate() {
                let permit = sem.clone().acquire_owned().await?;
                let (store, b) = (store.clone(), b.clone());
                let token = format!("bench:{db}:{i}");
                tasks.push(tokio::spawn(async move {
                    let r = store.insert(b.as_slice(), &token).await;
                    drop(permit);
                    r
                }));
            }
            for t in tasks {
                t.await??;
            }
            let (wall, me, them) = meter.stop();
            let count: u64 = store
                .client()
                .query("SELECT count() FROM process_metrics")
                .fetch_one()
                .await?;
            anyhow::ensure!(
                count == rows as u64,
                "{db}: {count} rows landed, {rows} sent"
            );
            let w = wall.as_secs_f64();
            let views = if views { "1m, 1h" } else { "none" };
            println!(
                "{label:>11}  {views:<7}  {conc:>7}  {:>6.2} s  {:>9.0}  {:>10.0} ns  {:>11} ns  ({:.0} %, {})",
                w,
                rows as f64 / w,
                me * 1e9 / rows as f64,
                them.map_or("-".into(), |t| format!("{:.0}", t * 1e9 / rows as f64)),
                100.0 * me / w,
                them.map_or("-".into(), |t| format!("{:.0} %", 100.0 * t / w)),
            );
            store
                .client()
                .query(&format!("DROP DATABASE `{db}`"))
                .execute()
                .await?;
        }
    }
    breakdown(ch, batches, engine).await
}

/// Where the engine's time goes: the same batches, in sequence with LZ4, into variants of the
/// table, written the way `Store::insert` writes (same client, same settings).
async fn breakdown(
    ch: &ClickHouse,
    batches: &[Arc<Vec<ProcessMetricsRow>>],
    engine: Option<u32>,
) -> anyhow::Result<()> {
    let db = format!("ingest_bench_breakdown_{}", std::process::id());
    let store = store_for(ch.url(), &db, ChCompression::Lz4);
    store.migrate("ingest_bench").await?;
    let client = store.client();
    let columns: Vec<(String, String)> = client
        .query("SELECT name, type FROM system.columns WHERE database = ? AND table = 'process_metrics' ORDER BY position")
        .bind(&db)
        .fetch_all()
        .await?;
    let schema = columns
        .iter()
        .map(|(n, t)| format!("`{n}` {t}"))
        .collect::<Vec<_>>()
        .join(", ");
    let bare = columns
        .iter()
        .map(|(n, t)| {
            // The type without its codec.
            let t = t.split(" CODEC").next().unwrap_or(t);
            format!("`{n}` {t}")
        })
        .collect::<Vec<_>>()
        .join(", ");
    let order = "ORDER BY (cluster, node, name, start_time, pid, ts)";
    let view_1m: String = client
        .query("SELECT as_select FROM system.tables WHERE database = ? AND name = 'process_metrics_1m_mv'")
        .bind(&db)
        .fetch_one()
        .await?;
    let view_1m = view_1m
        .replace(&format!("`{db}`.process_metrics"), "{v}")
        .replace(&format!("{db}.process_metrics"), "{v}");
    let with_views = vec![
        "CREATE TABLE {v} AS process_metrics".to_string(),
        "CREATE TABLE {v}_1m AS process_metrics_1m".into(),
        "CREATE TABLE {v}_1h AS process_metrics_1m".into(),
        format!("CREATE MATERIALIZED VIEW {{v}}_mv TO {{v}}_1m AS {view_1m}"),
        format!(
            "CREATE MATERIALIZED VIEW {{v}}_mv2 TO {{v}}_1h AS {}",
            view_1m.replace("toStartOfMinute", "toStartOfHour")
        ),
    ];
    // Store::insert's own settings.
    let store_settings: &[(&str, &str)] = &[("optimize_on_insert", "0")];
    // (label, statements, table written, settings), `{v}` standing for the variant's own name
    // (the client caches each table's column types by name). Each variant's tables are dropped
    // before the next, so its background merges do not run into the next measurement.
    #[allow(clippy::type_complexity)]
    let variants: Vec<(&str, Vec<String>, &str, &[(&str, &str)])> = vec![
        (
            "Null engine, the schema's column types (RowBinary parse only)",
            vec![format!("CREATE TABLE {{v}} ({schema}) ENGINE = Null")],
            "{v}",
            &[],
        ),
        (
            "process_metrics without its materialized views",
            vec!["CREATE TABLE {v} AS process_metrics".into()],
            "{v}",
            &[],
        ),
        (
            "same, no codecs",
            vec![format!(
                "CREATE TABLE {{v}} ({bare}) ENGINE = MergeTree PARTITION BY toDate(ts) {order}"
            )],
            "{v}",
            &[],
        ),
        (
            "process_metrics + 1m and 1h views, optimize_on_insert = 1 (default)",
            with_views.clone(),
            "{v}",
            &[],
        ),
        (
            "same, optimize_on_insert = 0 and parallel_view_processing = 1",
            with_views.clone(),
            "{v}",
            &[
                ("optimize_on_insert", "0"),
                ("parallel_view_processing", "1"),
            ],
        ),
        (
            "process_metrics as migrated, Store::insert's settings",
            vec![],
            "process_metrics",
            store_settings,
        ),
    ];
    let rows: usize = batches.iter().map(|b| b.len()).sum();
    println!("\n## Where the engine's time goes: {rows} rows in sequence, LZ4, per table variant");
    println!(
        "variant                                                          rows/s  engine CPU/row"
    );
    for (i, (label, ddl, table, settings)) in variants.iter().enumerate() {
        let v = format!("v{i}");
        let table = table.replace("{v}", &v);
        for sql in ddl {
            client.query(&sql.replace("{v}", &v)).execute().await?;
        }
        let meter = CpuMeter::start(engine);
        for (j, b) in batches.iter().enumerate() {
            let mut insert = client
                .insert::<ProcessMetricsRow>(&table)
                .await?
                .with_setting("insert_deduplication_token", format!("breakdown:{i}:{j}"))
                .with_setting("deduplicate_blocks_in_dependent_materialized_views", "1");
            for (k, val) in settings.iter() {
                insert = insert.with_setting(*k, *val);
            }
            for r in b.iter() {
                insert.write(r).await?;
            }
            insert.end().await?;
        }
        let (wall, _, them) = meter.stop();
        println!(
            "{label:<61} {:>8.0}  {:>10} ns",
            rows as f64 / wall.as_secs_f64(),
            them.map_or("-".into(), |t| format!("{:.0}", t * 1e9 / rows as f64)),
        );
        for t in ["_mv", "_mv2", "_1m", "_1h", ""] {
            client
                .query(&format!("DROP TABLE IF EXISTS {v}{t} SYNC"))
                .execute()
                .await?;
        }
    }
    client
        .query(&format!("DROP DATABASE `{db}`"))
        .execute()
        .await?;
    Ok(())
}

#[derive(Row, Deserialize)]
struct PartsSum {
    parts: u64,
    rows: u64,
    on_disk: u64,
    compressed: u64,
    uncompressed: u64,
}

#[derive(Row, Deserialize)]
struct ColumnSize {
    name: String,
    compressed: u64,
    uncompressed: u64,
}

#[derive(Row, Deserialize)]
struct TableSize {
    table: String,
    table_rows: u64,
    on_disk: u64,
}

async fn parts(store: &Store) -> anyhow::Result<PartsSum> {
    Ok(store
        .client()
        .query(
            "SELECT toUInt64(count()) AS parts, toUInt64(sum(rows)) AS rows, toUInt64(sum(bytes_on_disk)) AS on_disk, \
             toUInt64(sum(data_compressed_bytes)) AS compressed, toUInt64(sum(data_uncompressed_bytes)) AS uncompressed \
             FROM system.parts WHERE database = ? AND table = 'process_metrics' AND active",
        )
        .bind(store.database())
        .fetch_one()
        .await?)
}

async fn storage_phase(a: &Args, ch: &ClickHouse, subjects: &Subjects) -> anyhow::Result<()> {
    let tables = a.storage_minutes * 6;
    println!(
        "\n## Storage: {} nodes x {} processes, a table every 10 s for {} min ({} tables, {} rows), LZ4 inserts of {} rows",
        a.storage_nodes,
        a.procs,
        a.storage_minutes,
        tables,
        tables as usize * a.storage_nodes * a.procs,
        BATCH_ROWS
    );
    let db = format!("ingest_bench_storage_{}", std::process::id());
    let store = store_for(ch.url(), &db, ChCompression::Lz4);
    store.migrate("ingest_bench").await?;
    let mut fleet = Fleet::new(subjects, a.storage_nodes, a.procs, 11);
    let mut conv = Converter::new(subjects.clone(), 4096);
    let mut rows = Rows::default();
    let mut infos = Vec::new();
    let mut inflight: Option<tokio::task::JoinHandle<anyhow::Result<()>>> = None;
    let mut n = 0usize;
    let mut encoded = 0usize;
    let t = Instant::now();
    for i in 0..tables {
        let ts = T0_MS + 10_000 * (i as i64 + 1);
        for m in fleet.tick(ts, 10.0)? {
            encoded += m.payload.len();
            conv.add_message(&m.subject, Some(m.msg_id.as_str()), &m.payload, &mut rows);
            infos.append(&mut rows.processes);
            rows.node_metrics.clear();
            rows.disk_metrics.clear();
            rows.fs_metrics.clear();
            rows.net_metrics.clear();
            rows.sensor_readings.clear();
            if rows.process_metrics.len() >= BATCH_ROWS {
                if let Some(h) = inflight.take() {
                    h.await??;
                }
                let batch = std::mem::take(&mut rows.process_metrics);
                n += batch.len();
                let (s, token) = (store.clone(), format!("storage:{n}"));
                inflight = Some(tokio::spawn(async move {
                    s.insert(batch.as_slice(), &token).await
                }));
            }
        }
    }
    if let Some(h) = inflight.take() {
        h.await??;
    }
    if !rows.process_metrics.is_empty() {
        n += rows.process_metrics.len();
        store
            .insert(rows.process_metrics.as_slice(), "storage:last")
            .await?;
    }
    // Each process's `processes` row: one per process (and per restart), not per sample.
    for (k, chunk) in infos.chunks(BATCH_ROWS).enumerate() {
        store
            .insert(chunk, &format!("storage:processes:{k}"))
            .await?;
    }
    println!(
        "{} `processes` rows (one per process run; {:.4} per process_metrics row)",
        infos.len(),
        infos.len() as f64 / n.max(1) as f64
    );
    println!(
        "{n} rows generated, encoded ({:.0} bytes per row on the bus), converted and inserted in {:.1} s",
        encoded as f64 / n as f64,
        t.elapsed().as_secs_f64()
    );
    let before = parts(&store).await?;
    let t = Instant::now();
    store
        .client()
        .query("OPTIMIZE TABLE process_metrics FINAL")
        .execute()
        .await?;
    let optimize = t.elapsed();
    let after = parts(&store).await?;
    anyhow::ensure!(
        after.rows == n as u64,
        "{} rows in the table, {n} inserted",
        after.rows
    );
    for (what, p) in [
        ("as inserted (active parts)", &before),
        ("after OPTIMIZE FINAL", &after),
    ] {
        println!(
            "{what:<27} {:>4} parts, {:>6.2} bytes/row on disk ({:.1} MB), compressed {:.2} bytes/row, uncompressed {:.1} bytes/row (ratio {:.1})",
            p.parts,
            p.on_disk as f64 / p.rows as f64,
            p.on_disk as f64 / 1e6,
            p.compressed as f64 / p.rows as f64,
            p.uncompressed as f64 / p.rows as f64,
            p.uncompressed as f64 / p.compressed as f64,
        );
    }
    println!(
        "OPTIMIZE TABLE process_metrics FINAL took {:.1} s",
        optimize.as_secs_f64()
    );
    let cols: Vec<ColumnSize> = store
        .client()
        .query(
            "SELECT name, toUInt64(data_compressed_bytes) AS compressed, toUInt64(data_uncompressed_bytes) AS uncompressed \
             FROM system.columns WHERE database = ? AND table = 'process_metrics' ORDER BY data_compressed_bytes DESC",
        )
        .bind(store.database())
        .fetch_all()
        .await?;
    println!("column          compressed bytes/row  share   uncompressed bytes/row");
    let total: u64 = cols.iter().map(|c| c.compressed).sum();
    for c in &cols {
        println!(
            "{:<15} {:>10.3}           {:>5.1} %  {:>8.2}",
            c.name,
            c.compressed as f64 / n as f64,
            100.0 * c.compressed as f64 / total as f64,
            c.uncompressed as f64 / n as f64,
        );
    }
    let others: Vec<TableSize> = store
        .client()
        .query(
            "SELECT table, toUInt64(sum(rows)) AS table_rows, toUInt64(sum(bytes_on_disk)) AS on_disk \
             FROM system.parts WHERE database = ? AND active AND table != 'process_metrics' GROUP BY table \
             HAVING table_rows > 0 ORDER BY table",
        )
        .bind(store.database())
        .fetch_all()
        .await?;
    for o in others {
        println!(
            "{:<24} {:>8} rows, {:.1} MB on disk (not merged), {:.2} bytes per process_metrics row",
            o.table,
            o.table_rows,
            o.on_disk as f64 / 1e6,
            o.on_disk as f64 / n as f64
        );
    }
    if a.keep {
        println!("database {db} kept");
    } else {
        store
            .client()
            .query(&format!("DROP DATABASE `{db}`"))
            .execute()
            .await?;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = args()?;
    let subjects = Subjects::new("grid")?;
    let started = Instant::now();
    let ch = ClickHouse::shared()?;
    let engine = if ch.is_embedded() { engine_pid() } else { None };
    println!(
        "engine at {} ready in {:.2} s (pid {})",
        ch.url(),
        started.elapsed().as_secs_f64(),
        engine.map_or("-".into(), |p| p.to_string())
    );
    if !a.skip_rate {
        let batches = convert_phase(&a, &subjects)?;
        rate_phase(ch, &batches, engine).await?;
    }
    if !a.skip_storage {
        storage_phase(&a, ch, &subjects).await?;
    }
    Ok(())
}
