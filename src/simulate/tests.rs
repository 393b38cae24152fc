//! Tests of the simulator without a bus: placement, determinism, value ranges, faults, framing.

use std::time::Duration;

use clap::Parser;
use gridmon_nats::wire::{self, Envelope, Inventory, Kind, NodeReport, ProgramState, SensorKind};
use gridmon_nats::Subjects;

use super::fleet::{fault_order, place, FaultCounts, Fleet, Spec};
use super::sensors::{CHASSIS_FAN_MIN, CORE_TEMP_CRIT, CPU_FAN_MIN};
use super::{fault_plan, next_boundary, publish_connections, Latest, SimulateArgs};

/// Fault start in the fault tests: 10 s after a start at `START_MS`.
const START_MS: i64 = 1_700_000_000_000;

fn spec() -> Spec {
    Spec {
        nodes: 8,
        clusters: 1,
        groups: 2,
        processes: 60,
        process_every: 1,
        interval: Duration::from_secs(1),
        seed: 1,
        programs: 2,
        faults: FaultCounts::default(),
        fault_after: Duration::from_secs(10),
        inventory_every: Duration::from_secs(3600),
    }
}

fn fleet(spec: &Spec) -> Fleet {
    let subjects = Subjects::new("grid").unwrap();
    Fleet::new(spec, &subjects, 1, START_MS).unwrap()
}

/// The report of node `i` at `secs` seconds after the start (1 s ticks).
fn at(f: &mut Fleet, i: usize, secs: i64) -> Option<NodeReport> {
    let ts = START_MS + secs * 1000;
    f.report(i, (ts / 1000) as u64, ts).cloned()
}

fn node_index(f: &Fleet, name: &str) -> usize {
    f.nodes.iter().position(|n| n.id.node == name).unwrap()
}

#[test]
fn placement_is_round_robin_with_padded_names() {
    let s = Spec {
        nodes: 10,
        clusters: 2,
        groups: 2,
        ..spec()
    };
    let (groups, ids) = place(&s).unwrap();
    let names: Vec<String> = groups
        .iter()
        .map(|g| format!("{}/{}", g.cluster, g.group))
        .collect();
    assert_eq!(names, ["c01/g01", "c01/g02", "c02/g01", "c02/g02"]);
    let counts: Vec<usize> = groups.iter().map(|g| g.members.len()).collect();
    assert_eq!(counts, [3, 3, 2, 2]);
    assert_eq!(ids.len(), 10);
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(id.node, format!("n{:04}", i + 1));
        let g = &groups[i % 4];
        assert_eq!((&id.cluster, &id.group), (&g.cluster, &g.group));
        assert!(g.members.contains(&i));
    }
    assert_eq!(groups[3].members, [3, 7]);
    // The last group first, in name order, then the groups before it.
    assert_eq!(fault_order(&groups), [3, 7, 2, 6, 1, 5, 9, 0, 4, 8]);

    let wide = Spec {
        nodes: 12_345,
        clusters: 100,
        groups: 3,
        ..spec()
    };
    let (groups, ids) = place(&wide).unwrap();
    assert_eq!(ids[0].node, "n00001");
    assert_eq!(ids[12_344].node, "n12345");
    assert_eq!(groups[0].cluster, "c001");
    assert_eq!(groups[299].cluster, "c100");
    assert_eq!(groups[299].group, "g03");
    let total: usize = groups.iter().map(|g| g.members.len()).sum();
    assert_eq!(total, 12_345);
    let (min, max) = groups.iter().fold((usize::MAX, 0), |(lo, hi), g| {
        (lo.min(g.members.len()), hi.max(g.members.len()))
    });
    assert!(max - min <= 1, "round-robin spreads evenly: {min}..{max}");
}

#[test]
fn same_seed_same_fleet_other_seed_other_fleet() {
    let run = |seed: u64| {
        let mut f = fleet(&Spec { seed, ..spec() });
        let mut out = Vec::new();
        for secs in 0..5 {
            for i in 0..8 {
                out.push(at(&mut f, i, secs).unwrap());
            }
        }
        out
    };
    let (a, b, c) = (run(7), run(7), run(8));
    assert_eq!(a, b);
    assert_ne!(a, c);
    // Nodes of one fleet differ from each other.
    assert_ne!(a[0].host, a[1].host);
}

#[test]
fn values_stay_valid_over_many_ticks() {
    for seed in 1..=3 {
        values_stay_valid(seed);
    }
}

fn values_stay_valid(seed: u64) {
    let s = Spec {
        seed,
        nodes: 12,
        processes: 80,
        process_every: 3,
        programs: 3,
        faults: FaultCounts {
            flap: 2,
            ..Default::default()
        },
        fault_after: Duration::ZERO,
        ..spec()
    };
    let mut f = fleet(&s);
    let pct = |v: f32, what: &str| assert!((0.0..=100.0).contains(&v), "{what} = {v}");
    for secs in 1..=400 {
        let tick = ((START_MS + secs * 1000) / 1000) as u64;
        for i in 0..s.nodes as usize {
            let flapping = f.nodes[i].faults.flap;
            let r = at(&mut f, i, secs).unwrap();
            let h = r.host.as_ref().unwrap();
            let c = &h.cpu;
            for (v, w) in [
                (c.total_pct, "cpu"),
                (c.user_pct, "user"),
                (c.system_pct, "system"),
                (c.iowait_pct, "iowait"),
                (c.steal_pct, "steal"),
            ] {
                pct(v, w);
            }
            assert!(c.user_pct + c.system_pct + c.steal_pct <= c.total_pct + 0.01);
            assert!((4..=64).contains(&c.per_core_pct.len()));
            c.per_core_pct.iter().for_each(|&v| pct(v, "core"));
            assert!(c.load1 >= 0.0 && c.load5 >= 0.0 && c.load15 >= 0.0);
            assert!(c.load1 <= c.per_core_pct.len() as f32 * 1.2 + 1.0);
            let m = &h.memory;
            assert!([16, 32, 64, 128].contains(&(m.total_bytes >> 30)));
            assert_eq!(m.used_bytes + m.available_bytes, m.total_bytes);
            let used = m.used_bytes as f64 / m.total_bytes as f64;
            assert!((0.05..=0.97).contains(&used), "{used}");
            assert!(m.swap_used_bytes <= m.swap_total_bytes);
            assert_eq!(h.disks.len(), 2);
            for d in &h.disks {
                pct(d.busy_pct, "disk busy");
                assert!(d.read_bytes_ps >= 0.0 && d.write_bytes_ps >= 0.0);
                assert!(d.read_ops_ps >= 0.0 && d.write_ops_ps >= 0.0);
            }
            assert_eq!(h.filesystems.len(), 2);
            for fs in &h.filesystems {
                assert!(fs.used_bytes + fs.avail_bytes <= fs.total_bytes);
                assert!(fs.inodes_used <= fs.inodes_total);
            }
            let nets: Vec<&str> = h.nets.iter().map(|n| n.name.as_str()).collect();
            assert_eq!(nets, ["lo", "eth0"]);
            for n in &h.nets {
                for v in [
                    n.rx_bytes_ps,
                    n.tx_bytes_ps,
                    n.rx_packets_ps,
                    n.tx_packets_ps,
                    n.rx_errors_ps,
                    n.tx_errors_ps,
                    n.rx_dropped_ps,
                    n.tx_dropped_ps,
                ] {
                    assert!(v.is_finite() && v >= 0.0);
                }
            }
            // Healthy sensors stay inside their limits: no spurious alarms in benchmarks.
            assert!((7..=9).contains(&r.sensors.len()));
            for sensor in &r.sensors {
                assert!(sensor.value.is_finite());
                assert!(!sensor.alarm, "{sensor:?}");
            }
            assert_eq!(r.programs.len(), 3);
            assert!(r.programs.iter().all(|p| p.state == ProgramState::Running));
            assert_eq!(r.agent.version, "simulated");
            match &r.processes {
                Some(t) => {
                    assert_eq!(tick % 3, 0, "the table travels every 3rd report");
                    assert_eq!(t.total, 80);
                    assert_eq!(t.rows.len(), 80);
                    let st = t.states;
                    let sum = st.running
                        + st.waiting
                        + st.busy
                        + st.stopped
                        + st.zombie
                        + st.dead
                        + st.unknown;
                    assert_eq!(sum, t.total);
                    assert!(st.waiting > st.running, "{st:?}");
                    for row in &t.rows {
                        assert!(row.cpu_pct >= 0.0 && row.cpu_pct.is_finite());
                        assert!(row.name.len() <= 15, "{}", row.name);
                        assert!(row.start_time_ms <= START_MS + secs * 1000);
                        assert!(row.run_time_s >= 0.0 && row.cpu_time_s >= 0.0);
                    }
                }
                None => assert_ne!(tick % 3, 0),
            }
            if flapping {
                let want_high = tick % 2 == 1;
                assert_eq!(c.total_pct > 50.0, want_high, "{}", c.total_pct);
            }
        }
    }
}

#[test]
fn reports_are_mutated_in_place() {
    let mut f = fleet(&spec());
    // The node's own table (not a clone) keeps its allocation from tick to tick.
    let t = f.tick(1, START_MS + 1000);
    let a = f.nodes[0]
        .report(&t)
        .unwrap()
        .processes
        .as_ref()
        .unwrap()
        .rows
        .as_ptr();
    let t = f.tick(2, START_MS + 2000);
    let b = f.nodes[0]
        .report(&t)
        .unwrap()
        .processes
        .as_ref()
        .unwrap()
        .rows
        .as_ptr();
    assert_eq!(a, b);
}

/// Every report of node `name` at 1..=20 s, with the given faults from 10 s.
fn faulted(faults: FaultCounts, name: &str) -> Vec<Option<NodeReport>> {
    let mut f = fleet(&Spec { faults, ..spec() });
    let i = node_index(&f, name);
    (1..=20).map(|secs| at(&mut f, i, secs)).collect()
}

#[test]
fn faults_hit_the_first_nodes_of_the_last_group_after_fault_after() {
    // 8 nodes over g01/g02: g02 holds n0002, n0004, n0006, n0008.
    let f = fleet(&Spec {
        faults: FaultCounts {
            overheat: 2,
            ..Default::default()
        },
        ..spec()
    });
    let hit: Vec<&str> = f
        .nodes
        .iter()
        .filter(|n| n.faults.overheat)
        .map(|n| n.id.node.as_str())
        .collect();
    assert_eq!(hit, ["n0002", "n0004"]);
    assert!(f.nodes.iter().all(|n| n.id.cluster == "c01"));
    assert_eq!(f.nodes[1].id.group, "g02");
}

#[test]
fn overheat_puts_the_package_temperature_at_or_beyond_crit() {
    let faults = FaultCounts {
        overheat: 1,
        ..Default::default()
    };
    for (secs, r) in (1..).zip(faulted(faults, "n0002")) {
        let r = r.unwrap();
        let pkg = r
            .sensors
            .iter()
            .find(|s| s.id == "coretemp.0/temp1")
            .unwrap();
        assert_eq!(pkg.kind, SensorKind::Temperature);
        assert_eq!(pkg.crit, Some(CORE_TEMP_CRIT));
        if secs >= 10 {
            assert!(pkg.value >= 100.0, "{pkg:?}");
            assert!(pkg.alarm);
        } else {
            assert!(pkg.value < 80.0 && !pkg.alarm, "{pkg:?}");
        }
    }
    // Another node of the fleet is unaffected.
    for r in faulted(faults, "n0004") {
        assert!(r.unwrap().sensors.iter().all(|s| !s.alarm));
    }
}

#[test]
fn fan_stop_stops_the_cpu_fan() {
    let faults = FaultCounts {
        fan_stop: 1,
        ..Default::default()
    };
    for (secs, r) in (1..).zip(faulted(faults, "n0002")) {
        let r = r.unwrap();
        let fans: Vec<_> = r
            .sensors
            .iter()
            .filter(|s| s.kind == SensorKind::Fan)
            .collect();
        assert_eq!(fans.len(), 2);
        assert_eq!(fans[0].label, "CPU Fan");
        assert_eq!(fans[0].chip, "nct6775.656");
        assert_eq!(fans[0].min, Some(CPU_FAN_MIN));
        assert_eq!(fans[1].label, "Chassis Fan 1");
        assert_eq!(fans[1].min, Some(CHASSIS_FAN_MIN));
        assert!(fans[1].value > CHASSIS_FAN_MIN);
        if secs >= 10 {
            assert_eq!(fans[0].value, 0.0);
            assert!(fans[0].alarm);
        } else {
            assert!(fans[0].value > CPU_FAN_MIN && !fans[0].alarm);
        }
    }
}

#[test]
fn crash_crashes_worker_1_with_rising_restarts() {
    let faults = FaultCounts {
        crash: 1,
        ..Default::default()
    };
    let mut last_restarts = 0;
    for (secs, r) in (1..).zip(faulted(faults, "n0002")) {
        let r = r.unwrap();
        let w1 = &r.programs[0];
        assert_eq!(w1.name, "worker-1");
        assert_eq!(r.programs[1].state, ProgramState::Running);
        if secs >= 10 {
            assert_eq!(w1.state, ProgramState::Crashed);
            assert!(w1.pid.is_none());
            assert_eq!(w1.since_ms, START_MS + 10_000);
            assert!(w1.restarts > last_restarts);
            last_restarts = w1.restarts;
        } else {
            assert_eq!(w1.state, ProgramState::Running);
            assert!(w1.pid.is_some());
        }
    }
}

#[test]
fn a_crash_loop_restarts_the_process_in_every_table() {
    let faults = FaultCounts {
        crash: 1,
        ..Default::default()
    };
    let runs: Vec<(u32, i64, f64, f64)> = faulted(faults, "n0002")
        .into_iter()
        .map(|r| {
            let table = r.unwrap().processes.unwrap();
            let row = table.rows.iter().find(|p| p.name == "worker-1").unwrap();
            (row.pid, row.start_time_ms, row.run_time_s, row.cpu_time_s)
        })
        .collect();
    // Before the fault (1..=9 s) one run; from 10 s a new process (pid, start time) every report.
    assert!(runs[..9]
        .iter()
        .all(|r| (r.0, r.1) == (runs[0].0, runs[0].1)));
    let crashed = &runs[9..];
    for (k, &(pid, start, run_s, cpu_s)) in crashed.iter().enumerate() {
        let ts = START_MS + (10 + k as i64) * 1000;
        assert!(
            (ts - 1000..=ts).contains(&start),
            "started within the last interval"
        );
        assert!(
            (0.0..=1.0).contains(&run_s) && cpu_s <= run_s,
            "{run_s} {cpu_s}"
        );
        assert_ne!(pid, runs[0].0);
    }
    let distinct: std::collections::HashSet<(u32, i64)> =
        crashed.iter().map(|r| (r.0, r.1)).collect();
    assert_eq!(distinct.len(), crashed.len());
    // The other program keeps its one run.
    let mut f = fleet(&Spec { faults, ..spec() });
    let i = node_index(&f, "n0002");
    let w2: std::collections::HashSet<u32> = (1..=20)
        .map(|secs| {
            let r = at(&mut f, i, secs).unwrap();
            let t = r.processes.unwrap();
            t.rows.iter().find(|p| p.name == "worker-2").unwrap().pid
        })
        .collect();
    assert_eq!(w2.len(), 1);
}

/// The inventories node `i` publishes at 1..=`secs` s: (second, decoded message).
fn inventories(f: &mut Fleet, i: usize, secs: i64) -> Vec<(i64, Envelope<Inventory>)> {
    let mut out = Vec::new();
    for s in 1..=secs {
        let t = f.tick(s as u64, START_MS + s * 1000);
        let node = &mut f.nodes[i];
        node.frame(&t);
        if let Some(o) = node.frame_inventory(&t) {
            let o = o.unwrap();
            let id = &node.id;
            assert_eq!(
                o.subject,
                format!("grid.inventory.{}.{}.{}", id.cluster, id.group, id.node)
            );
            assert_eq!(
                o.msg_id,
                format!(
                    "{}.{}.{}:inventory:1:{}",
                    node.id.cluster,
                    node.id.group,
                    node.id.node,
                    out.len() + 1
                )
            );
            out.push((s, wire::decode(&o.payload, Kind::Inventory).unwrap()));
        }
    }
    out
}

#[test]
fn inventory_at_start_then_every_inventory_every_matching_the_reports() {
    let s = Spec {
        nodes: 16,
        inventory_every: Duration::from_secs(10),
        ..spec()
    };
    let mut f = fleet(&s);
    let mut models = std::collections::HashSet::new();
    let mut oses = std::collections::HashSet::new();
    for i in 0..16 {
        let sent = inventories(&mut f, i, 25);
        let when: Vec<i64> = sent.iter().map(|(s, _)| *s).collect();
        assert_eq!(when, [1, 11, 21]);
        let env = &sent[0].1;
        assert_eq!(env.ts_ms, START_MS + 1000);
        assert!(sent.iter().all(|(_, e)| e.body == env.body), "static");
        let inv = &env.body;
        let r = at(&mut f, i, 26).unwrap();
        let h = r.host.as_ref().unwrap();
        assert_eq!(inv.hostname, f.nodes[i].id.node);
        assert_eq!(inv.cpu_logical_cores as usize, h.cpu.per_core_pct.len());
        assert!(inv.cpu_physical_cores <= inv.cpu_logical_cores);
        assert!(inv.cpu_logical_cores <= 2 * inv.cpu_physical_cores);
        assert!(!inv.cpu_model.is_empty());
        assert_eq!(inv.memory_bytes, h.memory.total_bytes);
        assert_eq!(inv.swap_bytes, h.memory.swap_total_bytes);
        let names: Vec<&str> = inv.disks.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["nvme0n1", "sda"]);
        for (d, fs) in inv.disks.iter().zip(&h.filesystems) {
            assert!(fs.device.starts_with(&format!("/dev/{}", d.name)));
            assert!(d.capacity_bytes > fs.total_bytes);
            assert!(d.capacity_bytes < fs.total_bytes + (2 << 30));
            assert_eq!(d.rotational, d.name == "sda");
            assert!(!d.model.is_empty());
        }
        assert_eq!(
            inv.disk_capacity_bytes,
            inv.disks.iter().map(|d| d.capacity_bytes).sum::<u64>()
        );
        assert!(!inv.os_name.is_empty() && !inv.os_version.is_empty() && !inv.kernel.is_empty());
        assert_eq!(
            (inv.arch.as_str(), inv.agent_version.as_str()),
            ("x86_64", "simulated")
        );
        let booted = START_MS + 26_000 - (h.uptime_s * 1000.0).round() as i64;
        assert!(
            (inv.boot_time_ms - booted).abs() <= 1,
            "{} {booted}",
            inv.boot_time_ms
        );
        models.insert(inv.cpu_model.clone());
        oses.insert(inv.os_name.clone());
    }
    assert!(models.len() >= 4, "{models:?}");
    assert!(oses.len() >= 2, "{oses:?}");
    // The same seed gives the same inventories, another seed others.
    let (a, b) = (
        fleet(&s),
        fleet(&Spec {
            seed: 2,
            ..s.clone()
        }),
    );
    assert_eq!(a.nodes[3].inventory(), fleet(&s).nodes[3].inventory());
    assert_ne!(a.nodes[3].inventory(), b.nodes[3].inventory());
    // Publishing inventories leaves the reports as they are.
    let (mut with, mut without) = (fleet(&s), fleet(&s));
    for secs in 1..=12 {
        let ts = START_MS + secs as i64 * 1000;
        let t = with.tick(secs, ts);
        if let Some(o) = with.nodes[3].frame_inventory(&t) {
            o.unwrap();
        }
        assert_eq!(
            with.nodes[3].report(&t).cloned(),
            without.report(3, secs, ts).cloned()
        );
    }
}

#[test]
fn silent_nodes_send_no_inventory() {
    let mut f = fleet(&Spec {
        faults: FaultCounts {
            silent: 1,
            ..Default::default()
        },
        inventory_every: Duration::from_secs(5),
        fault_after: Duration::from_secs(8),
        ..spec()
    });
    let i = node_index(&f, "n0002");
    let when: Vec<i64> = inventories(&mut f, i, 20).iter().map(|(s, _)| *s).collect();
    assert_eq!(when, [1, 6]);
    let j = node_index(&f, "n0001");
    let when: Vec<i64> = inventories(&mut f, j, 20).iter().map(|(s, _)| *s).collect();
    assert_eq!(when, [1, 6, 11, 16]);
}

#[test]
fn flap_swings_the_cpu_every_report() {
    let faults = FaultCounts {
        flap: 1,
        ..Default::default()
    };
    let cpus: Vec<f32> = faulted(faults, "n0002")
        .into_iter()
        .map(|r| r.unwrap().host.unwrap().cpu.total_pct)
        .collect();
    for (secs, pair) in (11..).zip(cpus[10..].windows(2)) {
        let (lo, hi) = if pair[0] < pair[1] {
            (pair[0], pair[1])
        } else {
            (pair[1], pair[0])
        };
        assert!(lo < 15.0 && hi > 90.0, "at {secs} s: {pair:?}");
    }
}

#[test]
fn silent_nodes_publish_nothing_after_fault_after() {
    let mut f = fleet(&Spec {
        faults: FaultCounts {
            silent: 2,
            ..Default::default()
        },
        ..spec()
    });
    for secs in 1..=20 {
        let t = f.tick(secs as u64, START_MS + secs * 1000);
        let mut published: Vec<&str> = Vec::new();
        for n in f.nodes.iter_mut() {
            if let Some(out) = n.frame(&t) {
                out.unwrap();
                published.push(n.id.node.as_str());
            }
        }
        if secs >= 10 {
            assert_eq!(published.len(), 6);
            assert!(!published.contains(&"n0002") && !published.contains(&"n0004"));
        } else {
            assert_eq!(published.len(), 8);
        }
    }
}

#[test]
fn frames_decode_to_the_report_on_the_node_subject() {
    let mut f = fleet(&spec());
    for secs in 1..=3 {
        let t = f.tick(secs, START_MS + secs as i64 * 1000);
        let out = f.nodes[0].frame(&t).unwrap().unwrap();
        assert_eq!(out.subject, "grid.c01.g01.n0001");
        assert_eq!(out.msg_id, format!("c01.g01.n0001:node_report:1:{secs}"));
        let env: Envelope<NodeReport> = wire::decode(&out.payload, Kind::NodeReport).unwrap();
        assert_eq!(env.ts_ms, t.ts_ms);
        assert_eq!(env.seq, secs);
        assert_eq!(env.source.node.as_deref(), Some("n0001"));
        assert_eq!(env.body.interval_ms, 1000);
        assert_eq!(env.body.processes.as_ref().unwrap().rows.len(), 60);
    }
}

#[test]
fn latest_forgets_silent_nodes() {
    let mut f = fleet(&spec());
    let t = f.tick(1, START_MS + 1000);
    let a = f.nodes[0].frame(&t).unwrap().unwrap();
    let b = f.nodes[2].frame(&t).unwrap().unwrap();
    let latest = Latest::new(8);
    latest.set(vec![(0, Some(a.clone())), (2, Some(b.clone()))]);
    let got: Vec<_> = latest
        .of(&[0, 2, 4])
        .into_iter()
        .map(|o| o.payload)
        .collect();
    assert_eq!(got, [a.payload.clone(), b.payload]);
    latest.set(vec![(2, None)]);
    assert_eq!(latest.of(&[0, 2, 4]).len(), 1);
    assert!(latest.of(&[1, 3, 99]).is_empty());
}

#[test]
fn boundaries() {
    assert_eq!(next_boundary(0, 1000), (1, 1000));
    assert_eq!(next_boundary(999, 1000), (1, 1000));
    assert_eq!(next_boundary(1000, 1000), (2, 2000));
    assert_eq!(next_boundary(12_345, 5000), (3, 15_000));
}

#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    args: SimulateArgs,
}

fn parse(line: &str) -> Result<Spec, String> {
    let cli = Cli::try_parse_from(line.split_whitespace()).map_err(|e| e.to_string())?;
    cli.args.spec()
}

#[test]
fn flags_and_defaults() {
    let s = parse("sim").unwrap();
    assert_eq!(
        (s.nodes, s.clusters, s.groups, s.processes, s.process_every),
        (16, 1, 2, 50, 1)
    );
    assert_eq!(
        (s.interval, s.seed, s.programs),
        (Duration::from_secs(1), 1, 2)
    );
    assert_eq!(s.fault_after, Duration::ZERO);
    assert_eq!(s.faults, FaultCounts::default());
    assert_eq!(s.inventory_every, Duration::from_secs(3600));
    assert_eq!(
        parse("sim --inventory-every 30m").unwrap().inventory_every,
        Duration::from_secs(1800)
    );
    let s = parse(
        "sim --nodes 40 --clusters 2 --groups 5 --processes 500 --process-every 5 --rate 0.2 \
         --seed 9 --programs 3 --silent 1 --overheat 2 --fan-stop 3 --crash 4 --flap 5 \
         --fault-after 1m --duration 10s --json-stats",
    )
    .unwrap();
    assert_eq!(s.interval, Duration::from_secs(5));
    let daily = parse("sim --rate 0.0000115741").unwrap().interval.as_secs();
    assert!((86_399..=86_400).contains(&daily), "{daily}");
    assert_eq!(
        parse("sim --rate 1000").unwrap().interval,
        Duration::from_millis(1)
    );
    assert_eq!(s.fault_after, Duration::from_secs(60));
    assert_eq!(
        s.faults,
        FaultCounts {
            silent: 1,
            overheat: 2,
            fan_stop: 3,
            crash: 4,
            flap: 5
        }
    );
    for bad in [
        "sim --nodes 0",
        "sim --groups 0",
        "sim --rate 0",
        "sim --rate -1",
        "sim --rate nan",
        "sim --process-every 0",
        "sim --nodes 4 --silent 5",
        "sim --programs 0 --crash 1",
        "sim --rate 1001",
        "sim --rate 0.00001",
        "sim --clusters 0",
        "sim --inventory-every 0s",
        "sim --inventory-every soon",
    ] {
        assert!(parse(bad).is_err(), "{bad} accepted");
    }
}

#[test]
fn the_fault_plan_names_the_nodes() {
    let f = fleet(&Spec {
        faults: FaultCounts {
            silent: 1,
            crash: 2,
            ..Default::default()
        },
        ..spec()
    });
    assert_eq!(
        fault_plan(&f),
        "silent: c01/g02/n0002; crash: c01/g02/n0002, c01/g02/n0004"
    );
    assert_eq!(fault_plan(&fleet(&spec())), "");
}

#[test]
fn publish_connections_grow_with_the_fleet() {
    assert_eq!(publish_connections(1), 1);
    assert_eq!(publish_connections(250), 1);
    assert_eq!(publish_connections(251), 2);
    assert_eq!(publish_connections(1000), 4);
    assert_eq!(publish_connections(100_000), 4);
}
