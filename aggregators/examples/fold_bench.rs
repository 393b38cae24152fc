//! Fold throughput on one core: host-only node reports offered into 8 groups of 128 nodes over
//! many windows, window closes (rollup building) included; the cluster merge of the 8 group
//! rollups; the encoded size of a group rollup; and, for comparison, what decoding a report
//! costs (the fold is handed decoded reports, so decode is timed apart).
//!
//! `cargo run --release -p gridmon-aggregators --example fold_bench -- [WINDOWS]` (default 300).
#![allow(clippy::unwrap_used)] // a benchmark: a panic is how it reports

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gridmon_aggregators::alarm::RuleSet;
use gridmon_aggregators::group::GroupFold;
use gridmon_aggregators::upper::UpperFold;
use gridmon_aggregators::window::Params;
use gridmon_aggregators::Output;
use gridmon_nats::config::AggregateConfig;
use gridmon_nats::wire::*;
use gridmon_nats::NodeId;

const GROUPS: usize = 8;
const NODES: usize = 128;
const VARIANTS: usize = 4;
const W: i64 = 1000;
const BASE: i64 = 1_700_000_000_000;

/// splitmix64, for varied but repeatable figures.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [lo, hi).
    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn sensor(id: &str, label: &str, kind: SensorKind, value: f64) -> SensorReading {
    SensorReading {
        id: id.into(),
        chip: id.split('/').next().unwrap_or(id).into(),
        label: label.into(),
        kind,
        value,
        ..Default::default()
    }
}

/// What a real agent sends between process-table samples: host metrics (8–32 cores, 2 disks,
/// 2 filesystems, lo + eth0), 4 temperatures, 2 fans, 2 voltages, a process summary without
/// rows, 2 supervised programs.
fn host_report(rng: &mut Rng, node: usize) -> ReportView {
    let cores = 8 * (1 + node % 4);
    let cpu = rng.range(2.0, 95.0);
    let gib = 1u64 << 30;
    let mem_total = [32, 64, 128, 256][node % 4] * gib;
    let disk = |name: &str, rng: &mut Rng| DiskMetrics {
        name: name.into(),
        read_ops_ps: rng.range(0.0, 500.0),
        write_ops_ps: rng.range(0.0, 500.0),
        read_bytes_ps: rng.range(0.0, 2e8),
        write_bytes_ps: rng.range(0.0, 2e8),
        busy_pct: rng.range(0.0, 100.0) as f32,
    };
    let fs = |mount: &str, device: &str, total: u64, rng: &mut Rng| {
        let used = (total as f64 * rng.range(0.05, 0.95)) as u64;
        FsMetrics {
            mount: mount.into(),
            device: device.into(),
            fstype: "ext4".into(),
            total_bytes: total,
            used_bytes: used,
            avail_bytes: total - used,
            inodes_total: 60_000_000,
            inodes_used: 1_000_000,
        }
    };
    let net = |name: &str, scale: f64, rng: &mut Rng| NetMetrics {
        name: name.into(),
        up: true,
        carrier: true,
        rx_bytes_ps: rng.range(0.0, scale),
        tx_bytes_ps: rng.range(0.0, scale),
        rx_packets_ps: rng.range(0.0, scale / 1000.0),
        tx_packets_ps: rng.range(0.0, scale / 1000.0),
        rx_errors_ps: 0.0,
        tx_errors_ps: 0.0,
        rx_dropped_ps: rng.range(0.0, 1.0),
        tx_dropped_ps: 0.0,
    };
    let host = HostMetrics {
        uptime_s: 1e6 + node as f64,
        cpu: CpuMetrics {
            total_pct: cpu as f32,
            user_pct: (cpu * 0.7) as f32,
            system_pct: (cpu * 0.25) as f32,
            iowait_pct: rng.range(0.0, 5.0) as f32,
            steal_pct: 0.0,
            per_core_pct: (0..cores)
                .map(|_| (cpu * rng.range(0.5, 1.5)).min(100.0) as f32)
                .collect(),
            load1: (cpu / 100.0 * cores as f64) as f32,
            load5: (cpu / 110.0 * cores as f64) as f32,
            load15: (cpu / 120.0 * cores as f64) as f32,
        },
        memory: MemoryMetrics {
            total_bytes: mem_total,
            used_bytes: (mem_total as f64 * rng.range(0.1, 0.9)) as u64,
            available_bytes: mem_total / 3,
            swap_total_bytes: 8 * gib,
            swap_used_bytes: (rng.range(0.0, 0.1) * (8 * gib) as f64) as u64,
        },
        disks: vec![disk("nvme0n1", rng), disk("sda", rng)],
        filesystems: vec![
            fs("/", "/dev/nvme0n1p2", 500 * gib, rng),
            fs("/data", "/dev/sda1", 4000 * gib, rng),
        ],
        nets: vec![net("lo", 1e6, rng), net("eth0", 1e9, rng)],
        probes: Vec::new(),
    };
    let temp = |id: &str, v: f64| SensorReading {
        max: Some(85.0),
        crit: Some(100.0),
        ..sensor(id, "Core", SensorKind::Temperature, v)
    };
    let sensors = vec![
        temp("coretemp.0/temp1", rng.range(35.0, 80.0)),
        temp("coretemp.0/temp2", rng.range(35.0, 80.0)),
        temp("coretemp.0/temp3", rng.range(35.0, 80.0)),
        temp("nvme0/temp1", rng.range(30.0, 60.0)),
        SensorReading {
            min: Some(300.0),
            ..sensor(
                "nct6775.656/fan1",
                "CPU Fan",
                SensorKind::Fan,
                rng.range(800.0, 2000.0),
            )
        },
        SensorReading {
            min: Some(300.0),
            ..sensor(
                "nct6775.656/fan2",
                "Chassis",
                SensorKind::Fan,
                rng.range(600.0, 1500.0),
            )
        },
        SensorReading {
            min: Some(11.4),
            max: Some(12.6),
            ..sensor(
                "nct6775.656/in0",
                "+12V",
                SensorKind::Voltage,
                rng.range(11.8, 12.2),
            )
        },
        SensorReading {
            min: Some(3.1),
            max: Some(3.5),
            ..sensor(
                "nct6775.656/in1",
                "+3.3V",
                SensorKind::Voltage,
                rng.range(3.25, 3.35),
            )
        },
    ];
    let total = 300 + (node % 200) as u32;
    let running = 1 + (node % 5) as u32;
    ReportView {
        interval_ms: W as u32,
        host: Some(host),
        processes: Some(ProcessSummary {
            total,
            states: StateCounts {
                running,
                waiting: total - running,
                ..Default::default()
            },
            row_count: 0,
            vanished_total: 3,
            denied_total: 0,
        }),
        sensors,
        programs: ["web", "worker"]
            .iter()
            .map(|name| ProgramStatus {
                name: (*name).into(),
                state: ProgramState::Running,
                pid: Some(4000 + node as u32),
                restarts: 0,
                since_ms: BASE - 86_400_000,
                version: Some("1.4.2".into()),
                ..Default::default()
            })
            .collect(),
        agent: AgentStats {
            version: "0.1.0".into(),
            cpu_time_ms: 12_345,
            rss_bytes: 20 << 20,
            ..Default::default()
        },
    }
}

/// A full report with `processes` rows, built like `nats/examples/encode_report.rs`.
fn full_report(processes: usize) -> NodeReport {
    let names = [
        "nginx",
        "postgres",
        "java",
        "python3",
        "sshd",
        "systemd-journal",
        "containerd",
        "worker",
    ];
    let rows = (0..processes)
        .map(|i| ProcessRow {
            pid: 1000 + i as u32,
            ppid: 1,
            name: names[i % names.len()].into(),
            cmdline: format!(
                "/usr/bin/{} --config /etc/{}/main.conf --worker {}",
                names[i % names.len()],
                names[i % names.len()],
                i
            ),
            user: if i % 3 == 0 {
                "root".into()
            } else {
                "www-data".into()
            },
            uid: if i % 3 == 0 { 0 } else { 33 },
            state: if i % 10 == 0 {
                ProcState::Running
            } else {
                ProcState::Waiting
            },
            cpu_pct: (i % 17) as f32 * 0.7,
            rss_bytes: 20_000_000 + i as u64 * 4096,
            vsz_bytes: 900_000_000 + i as u64 * 8192,
            fds: Some(12 + (i % 40) as u32),
            threads: 1 + (i % 8) as u32,
            read_bytes_ps: Some((i * 100) as f64),
            write_bytes_ps: Some((i * 37) as f64),
            nice: 0,
            priority: 20,
            start_time_ms: 1_763_900_000_000 + i as i64,
            run_time_s: 86_400.0 + i as f64,
            cpu_time_s: 120.5 + i as f64,
        })
        .collect();
    let host = HostMetrics {
        uptime_s: 1e6,
        cpu: CpuMetrics {
            total_pct: 12.5,
            per_core_pct: vec![10.0; 8],
            load1: 1.2,
            load5: 1.0,
            load15: 0.8,
            ..Default::default()
        },
        memory: MemoryMetrics {
            total_bytes: 64 << 30,
            used_bytes: 20 << 30,
            available_bytes: 44 << 30,
            ..Default::default()
        },
        disks: (0..2)
            .map(|i| DiskMetrics {
                name: format!("nvme{i}n1"),
                busy_pct: 3.0,
                ..Default::default()
            })
            .collect(),
        filesystems: vec![FsMetrics {
            mount: "/".into(),
            device: "/dev/nvme0n1p2".into(),
            fstype: "ext4".into(),
            ..Default::default()
        }],
        nets: (0..3)
            .map(|i| NetMetrics {
                name: format!("eth{i}"),
                up: true,
                carrier: true,
                ..Default::default()
            })
            .collect(),
        probes: vec![],
    };
    let sensors = (0..12)
        .map(|i| SensorReading {
            id: format!("coretemp.0/temp{i}"),
            chip: "coretemp.0".into(),
            label: format!("Core {i}"),
            kind: SensorKind::Temperature,
            value: 45.0,
            max: Some(80.0),
            crit: Some(100.0),
            ..Default::default()
        })
        .collect();
    NodeReport {
        interval_ms: 1000,
        host: Some(host),
        processes: Some(ProcessTable {
            total: processes as u32,
            rows,
            ..Default::default()
        }),
        sensors,
        programs: Vec::new(),
        agent: AgentStats::default(),
    }
}

fn envelope<B>(kind: Kind, source: Source, body: B) -> Envelope<B> {
    Envelope {
        schema: SCHEMA_VERSION,
        kind,
        source,
        ts_ms: BASE,
        run_id: 1,
        seq: 1,
        body,
    }
}

/// Mean time of one `f()` over `iters` calls.
fn time_per<T>(iters: u32, mut f: impl FnMut() -> T) -> Duration {
    for _ in 0..iters.div_ceil(10) {
        black_box(f());
    }
    let t = Instant::now();
    for _ in 0..iters {
        black_box(f());
    }
    t.elapsed() / iters
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn main() {
    let windows: i64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(300);
    let warmup = 5;
    let cfg = AggregateConfig::default();
    let params = Params::from_config(&cfg, Duration::from_millis(W as u64));
    let rules = Arc::new(RuleSet::compile(&cfg, Duration::from_millis(W as u64)).unwrap());

    let mut rng = Rng(7);
    let names: Vec<String> = (0..NODES).map(|i| format!("node-{i:03}")).collect();
    // [group][node][variant]: the figures change from window to window.
    let reports: Vec<Vec<Vec<ReportView>>> = (0..GROUPS)
        .map(|g| {
            (0..NODES)
                .map(|i| {
                    (0..VARIANTS)
                        .map(|_| host_report(&mut rng, g * NODES + i))
                        .collect()
                })
                .collect()
        })
        .collect();

    let start = BASE + W - 100;
    let mut groups: Vec<GroupFold> = (0..GROUPS)
        .map(|g| GroupFold::new("eu", &format!("rack{g}"), params, rules.clone(), start))
        .collect();
    let mut cluster = UpperFold::cluster("eu", params, rules.clone(), start);

    let (mut offer_t, mut close_t, mut cluster_t) =
        (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let (mut offered, mut group_closes, mut cluster_closes) = (0u64, 0u64, 0u64);
    let mut rollup_bytes = 0;
    let mut rollup_encoded: Vec<u8> = Vec::new();
    let mut rollup_members = 0;
    let mut rollup_metrics = 0;
    let mut cluster_bytes = 0;
    let mut seq = 0u64;
    let mut out = Vec::with_capacity(64);
    for k in 0..windows + warmup {
        let measured = k >= warmup;
        let ts = BASE + (k + 1) * W;
        let now = ts + 10;
        seq += 1;
        // Interleaved across the groups, as reports arrive from a whole cluster.
        let t = Instant::now();
        for i in 0..NODES {
            for (g, fold) in groups.iter_mut().enumerate() {
                let r = &reports[g][i][k as usize % VARIANTS];
                let res = fold.offer(&names[i], ts, 1, seq, r, now);
                black_box(res).unwrap();
            }
        }
        let dt = t.elapsed();

        let close = ts + params.grace_ms;
        out.clear();
        let t = Instant::now();
        for fold in &mut groups {
            fold.close_due(close, &mut out);
        }
        let dc = t.elapsed();

        let rollups: Vec<(String, Rollup)> = out
            .drain(..)
            .filter_map(|o| match o {
                Output::Rollup {
                    scope: gridmon_nats::Scope::Group { group, .. },
                    rollup,
                    ..
                } => Some((group, rollup)),
                _ => None,
            })
            .collect();
        assert_eq!(rollups.len(), GROUPS);
        if k == warmup {
            let r = &rollups[0].1;
            assert_eq!(r.inputs as usize, NODES);
            rollup_members = r.members.len();
            rollup_metrics = r.metrics.len();
            let source = Source {
                cluster: "eu".into(),
                group: Some(rollups[0].0.clone()),
                node: None,
            };
            rollup_encoded = encode(&envelope(Kind::Rollup, source, r.clone())).unwrap();
            rollup_bytes = rollup_encoded.len();
        }

        let t = Instant::now();
        for (g, r) in rollups {
            cluster.offer(&g, r, close + 5).unwrap();
        }
        cluster.close_due(close + params.grace_ms, &mut out);
        let dm = t.elapsed();
        let cr = out.iter().find_map(|o| match o {
            Output::Rollup { rollup, .. } => Some(rollup),
            _ => None,
        });
        let cr = cr.unwrap();
        assert_eq!(cr.nodes.online as usize, GROUPS * NODES);
        if k == warmup {
            let source = Source {
                cluster: "eu".into(),
                ..Default::default()
            };
            cluster_bytes = encode(&envelope(Kind::Rollup, source, cr.clone()))
                .unwrap()
                .len();
        }
        out.clear();

        if measured {
            offer_t += dt;
            close_t += dc;
            cluster_t += dm;
            offered += (GROUPS * NODES) as u64;
            group_closes += GROUPS as u64;
            cluster_closes += 1;
        }
    }

    let fold_t = offer_t + close_t;
    let ns = |d: Duration, n: u64| d.as_secs_f64() * 1e9 / n as f64;
    println!(
        "fold: {:.0} reports/s ({:.0} ns/report) on one core, closes included: {offered} host-only \
         reports into {GROUPS} groups x {NODES} nodes over {windows} windows",
        offered as f64 / fold_t.as_secs_f64(),
        ns(fold_t, offered),
    );
    println!(
        "  offer alone: {:.0} ns/report ({:.0} reports/s)",
        ns(offer_t, offered),
        offered as f64 / offer_t.as_secs_f64()
    );
    println!(
        "  group close: {:.1} us per {NODES}-node window = {:.0} ns/report amortised",
        us(close_t) / group_closes as f64,
        ns(close_t, offered)
    );
    println!(
        "  group rollup: {rollup_bytes} bytes encoded ({rollup_members} member lines, \
         {rollup_metrics} metrics)"
    );
    println!(
        "cluster close: {:.1} us per window (merging {GROUPS} group rollups, offers included); \
         cluster rollup {cluster_bytes} bytes encoded",
        us(cluster_t) / cluster_closes as f64
    );

    // Decode: what the bus side pays per report before the fold sees it.
    let id = NodeId::new("eu", "rack1", "web-01").unwrap();
    let full = full_report(500);
    let host_only = NodeReport {
        processes: None,
        ..full.clone()
    };
    let full_bytes = encode(&envelope(Kind::NodeReport, Source::from(&id), full)).unwrap();
    let host_bytes = encode(&envelope(Kind::NodeReport, Source::from(&id), host_only)).unwrap();
    let view = decode::<ReportView>(&full_bytes, Kind::NodeReport).unwrap();
    assert_eq!(view.body.processes.as_ref().unwrap().row_count, 500);
    let big = 500;
    let small = 20_000;
    let view_full = time_per(big, || {
        decode::<ReportView>(&full_bytes, Kind::NodeReport).unwrap()
    });
    let report_full = time_per(big, || {
        decode::<NodeReport>(&full_bytes, Kind::NodeReport).unwrap()
    });
    let skim_full = time_per(big, || {
        gridmon_nats::skim::decode_report_view(&full_bytes).unwrap()
    });
    let skim_host = time_per(small, || {
        gridmon_nats::skim::decode_report_view(&host_bytes).unwrap()
    });
    let view_host = time_per(small, || {
        decode::<ReportView>(&host_bytes, Kind::NodeReport).unwrap()
    });
    let report_host = time_per(small, || {
        decode::<NodeReport>(&host_bytes, Kind::NodeReport).unwrap()
    });
    println!(
        "decode, 500-process report ({} bytes): ReportView {:.1} us/report, NodeReport {:.1} \
         us/report",
        full_bytes.len(),
        us(view_full),
        us(report_full)
    );
    println!(
        "decode, host-only report ({} bytes): ReportView {:.2} us/report, NodeReport {:.2} \
         us/report",
        host_bytes.len(),
        us(view_host),
        us(report_host)
    );
    println!(
        "decode as the aggregator does (rows cut out by byte jumps, gridmon_nats::skim): \
         500-process report {:.1} us/report, host-only {:.2} us/report",
        us(skim_full),
        us(skim_host)
    );
    // What a cluster aggregator pays per group rollup it receives.
    let rollup_full = time_per(small / 10, || {
        decode::<gridmon_nats::wire::Rollup>(&rollup_encoded, Kind::Rollup).unwrap()
    });
    let rollup_summary = time_per(small / 10, || {
        gridmon_nats::skim::decode_rollup_summary(&rollup_encoded).unwrap()
    });
    #[derive(serde::Deserialize)]
    struct WindowOnly {
        #[allow(dead_code)]
        window_start_ms: i64,
    }
    let rollup_window_serde = time_per(small / 10, || {
        decode::<WindowOnly>(&rollup_encoded, Kind::Rollup).unwrap()
    });
    let rollup_window = time_per(small, || {
        gridmon_nats::skim::rollup_window_start(&rollup_encoded).unwrap()
    });
    println!(
        "decode, group rollup ({} bytes): whole {:.1} us, without member lines (as the cluster \
         aggregator does, gridmon_nats::skim) {:.1} us, window start only (a group aggregator \
         reading its own output) {:.2} us (through serde, the rest ignored: {:.1} us)",
        rollup_encoded.len(),
        us(rollup_full),
        us(rollup_summary),
        us(rollup_window),
        us(rollup_window_serde)
    );
    let per_report = view_host.as_secs_f64() + fold_t.as_secs_f64() / offered as f64;
    println!(
        "decode (ReportView, host-only) + fold: {:.0} reports/s per core",
        1.0 / per_report
    );
}
