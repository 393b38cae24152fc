//! Encoded size and encode/decode time of a node report carrying a process table.
//!
//! `cargo run --release -p gridmon-nats --example encode_report -- [PROCESSES]` (default 500).
#![allow(clippy::unwrap_used)]

use std::time::Instant;

use gridmon_nats::frame::Framer;
use gridmon_nats::wire::*;
use gridmon_nats::NodeId;

fn report(processes: usize) -> NodeReport {
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

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(500);
    let body = report(n);
    let id = NodeId::new("eu", "rack1", "web-01").unwrap();
    let mut framer = Framer::new(Source::from(&id), 1);
    let iters = 2000;
    let t = Instant::now();
    let mut size = 0;
    for _ in 0..iters {
        size = framer
            .frame(Kind::NodeReport, "grid.eu.rack1.web-01".into(), 0, &body)
            .unwrap()
            .payload
            .len();
    }
    let enc = t.elapsed() / iters;
    let bytes = framer
        .frame(Kind::NodeReport, "s".into(), 0, &body)
        .unwrap()
        .payload;
    let t = Instant::now();
    for _ in 0..iters {
        let e: Envelope<NodeReport> = decode(&bytes, Kind::NodeReport).unwrap();
        std::hint::black_box(e);
    }
    let dec = t.elapsed() / iters;
    let host_only = NodeReport {
        processes: None,
        ..body
    };
    let host_size = framer
        .frame(Kind::NodeReport, "s".into(), 0, &host_only)
        .unwrap()
        .payload
        .len();
    println!("report with {n} processes: {size} bytes ({:.0} bytes/process), encode {enc:?}, decode {dec:?}", (size - host_size) as f64 / n.max(1) as f64);
    println!("report without the process table: {host_size} bytes");
}
