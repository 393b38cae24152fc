//! `gridmon aggregate` against a real nats-server: rollups up three levels with 130 nodes in one
//! group, liveness events and alarms, bad input, report requests at start-up, and fail-over when
//! the leader is killed.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use gridmon_nats::frame::now_ms;
use gridmon_nats::wire::{
    self, AlarmAction, AlarmEvent, CpuMetrics, Envelope, Event, EventKind, HostMetrics, Kind,
    MemoryMetrics, NodeReport, ProcessRow, ProcessTable, Rollup, Source, SCHEMA_VERSION,
};
use gridmon_tests::nats_server::{NatsOptions, NatsServer};
use tokio_util::sync::CancellationToken;

use crate::GRIDMON;

/// Window length of these tests.
const W: i64 = 500;

/// CPU % node `i` reports for window `k`: spread out, and different every window.
fn cpu_of(i: usize, k: i64) -> f32 {
    ((i as i64 * 37 + k * 11) % 97) as f32 + 0.5
}

fn report(cpu: f32) -> NodeReport {
    NodeReport {
        interval_ms: W as u32,
        host: Some(HostMetrics {
            cpu: CpuMetrics {
                total_pct: cpu,
                per_core_pct: vec![cpu; 4],
                ..Default::default()
            },
            memory: MemoryMetrics {
                total_bytes: 16 << 30,
                used_bytes: 4 << 30,
                ..Default::default()
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn envelope<B>(c: &str, g: &str, n: &str, ts_ms: i64, seq: u64, body: B) -> Envelope<B> {
    Envelope {
        schema: SCHEMA_VERSION,
        kind: Kind::NodeReport,
        source: Source {
            cluster: c.into(),
            group: Some(g.into()),
            node: Some(n.into()),
        },
        ts_ms,
        run_id: 1,
        seq,
        body,
    }
}

/// Publishes a report for each node on every window boundary, like agents with interval `W`,
/// until cancelled. Nodes in `silent` skip their turn.
struct Fleet {
    silent: Arc<Mutex<HashSet<String>>>,
    stop: CancellationToken,
}

impl Fleet {
    fn start(client: async_nats::Client, nodes: Vec<(String, String, String)>) -> Self {
        let silent: Arc<Mutex<HashSet<String>>> = Arc::default();
        let stop = CancellationToken::new();
        let (s, st) = (silent.clone(), stop.clone());
        tokio::spawn(async move {
            let mut seq = 0u64;
            loop {
                let now = now_ms();
                let next = (now / W + 1) * W;
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis((next - now) as u64)) => {}
                    _ = st.cancelled() => break,
                }
                seq += 1;
                let k = next / W;
                let silent = s.lock().unwrap().clone();
                for (i, (c, g, n)) in nodes.iter().enumerate() {
                    if silent.contains(n) {
                        continue;
                    }
                    let env = envelope(c, g, n, next, seq, report(cpu_of(i, k)));
                    let bytes = wire::encode(&env).unwrap();
                    let _ = client
                        .publish(format!("grid.{c}.{g}.{n}"), bytes.into())
                        .await;
                }
                let _ = client.flush().await;
            }
        });
        Self { silent, stop }
    }

    fn silence(&self, node: &str, on: bool) {
        let mut s = self.silent.lock().unwrap();
        if on {
            s.insert(node.into());
        } else {
            s.remove(node);
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A running `gridmon aggregate`, killed (process group) on drop.
struct Aggregator {
    child: tokio::process::Child,
}

impl Aggregator {
    fn start(dir: &Path, url: &str, name: &str, args: &[&str], extra_toml: &str) -> Self {
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                "[nats]\nservers = [{url:?}]\n\
                 [aggregate]\ninterval = \"{W}ms\"\ngrace = \"100ms\"\nstale_after = 2\noffline_after = 4\nforget_after = \"1h\"\n{extra_toml}"
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
        let child = gridmon_commands::child::command(GRIDMON)
            .arg("aggregate")
            .arg("--config")
            .arg(&config)
            .arg("--instance")
            .arg(name)
            .args(args)
            .env("GRIDMON_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Self { child }
    }

    fn kill(&mut self) {
        if let Some(pid) = self.child.id() {
            // SAFETY: signals the child's own process group.
            unsafe {
                libc::kill(-(pid as i32), libc::SIGKILL);
            }
        }
    }
}

/// Everything the aggregators publish, decoded, as it arrives.
#[derive(Default)]
struct Seen {
    /// (subject, arrival ms, rollup)
    rollups: Vec<(String, i64, Rollup)>,
    events: Vec<(String, Event)>,
    alarms: Vec<(String, AlarmEvent)>,
}

fn collect(client: async_nats::Client) -> Arc<Mutex<Seen>> {
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let s = seen.clone();
    tokio::spawn(async move {
        let subs = vec![
            client.subscribe("grid").await.unwrap(),
            client.subscribe("grid.*").await.unwrap(),
            client.subscribe("grid.*.*").await.unwrap(),
            client.subscribe("grid.event.>").await.unwrap(),
            client.subscribe("grid.alarm.>").await.unwrap(),
        ];
        let mut all = futures::stream::select_all(subs);
        while let Some(m) = all.next().await {
            let subject = m.subject.to_string();
            let Ok(h) = wire::peek(&m.payload) else {
                continue;
            };
            let mut seen = s.lock().unwrap();
            match h.kind {
                Kind::Rollup => {
                    let e: Envelope<Rollup> = wire::decode(&m.payload, Kind::Rollup).unwrap();
                    seen.rollups.push((subject, now_ms(), e.body));
                }
                Kind::Event => {
                    let e: Envelope<Event> = wire::decode(&m.payload, Kind::Event).unwrap();
                    seen.events.push((subject, e.body));
                }
                Kind::Alarm => {
                    let e: Envelope<AlarmEvent> = wire::decode(&m.payload, Kind::Alarm).unwrap();
                    seen.alarms.push((subject, e.body));
                }
                _ => {}
            }
        }
    });
    seen
}

fn rollups_on(seen: &Arc<Mutex<Seen>>, subject: &str) -> Vec<Rollup> {
    seen.lock()
        .unwrap()
        .rollups
        .iter()
        .filter(|(s, _, _)| s == subject)
        .map(|(_, _, r)| r.clone())
        .collect()
}

fn nodes(c: &str, g: &str, n: usize) -> Vec<(String, String, String)> {
    (0..n)
        .map(|i| (c.to_string(), g.to_string(), format!("n{i:03}")))
        .collect()
}

fn assert_clean_log(dir: &Path, name: &str) {
    let log = std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default();
    assert!(!log.contains("panicked"), "{name} log: {log}");
}

/// The exact value at rank floor(q·(n−1)), the definition the sketch approximates.
fn exact_quantile(mut v: Vec<f64>, q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[(q * (v.len() - 1) as f64).floor() as usize]
}

#[tokio::test]
async fn a_group_of_130_nodes_rolls_up_to_cluster_and_grid() {
    let server = NatsServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let client = async_nats::connect(server.url()).await.unwrap();
    let seen = collect(client.clone());
    // c1/g1 has 130 nodes, c1/g2 and c2/g1 have 10 each; node indexes run across the fleet.
    let mut fleet_nodes = nodes("c1", "g1", 130);
    fleet_nodes.extend(nodes("c1", "g2", 10));
    fleet_nodes.extend(nodes("c2", "g1", 10));
    let all_nodes = fleet_nodes.clone();
    let _fleet = Fleet::start(client.clone(), fleet_nodes);
    let mut agg = Aggregator::start(dir.path(), &server.url(), "agg", &[], "");

    // A grid rollup whose window every node reported in.
    let grid = gridmon_tests::eventually(Duration::from_secs(20), "a complete grid rollup", || {
        let r = rollups_on(&seen, "grid");
        async move {
            r.into_iter()
                .find(|r| r.nodes.online == 150 && r.inputs == 2)
        }
    })
    .await
    .unwrap();
    let w = grid.window_start_ms;
    let group = rollups_on(&seen, "grid.c1.g1")
        .into_iter()
        .find(|r| r.window_start_ms == w)
        .expect("the group rollup of the same window");
    let cluster = rollups_on(&seen, "grid.c1")
        .into_iter()
        .find(|r| r.window_start_ms == w)
        .expect("the cluster rollup of the same window");

    // Group: 130 nodes, one member line each, exact min/max/sum.
    assert_eq!(group.nodes.online, 130);
    assert_eq!(group.inputs, 130);
    assert_eq!(group.members.len(), 130);
    assert_eq!(group.sums.memory_total_bytes, 130 * (16 << 30));
    assert_eq!(group.sums.cpu_cores, 130 * 4);
    // Reports stamped at the boundary w + W belong to window w.
    let k = (w + W) / W;
    let values = |range: std::ops::Range<usize>| -> Vec<f64> {
        range.map(|i| f64::from(cpu_of(i, k))).collect()
    };
    let g_cpu = &group.metrics["cpu_pct"];
    let g_values = values(0..130);
    assert_eq!(g_cpu.count, 130);
    assert_eq!(g_cpu.min, g_values.iter().copied().fold(f64::MAX, f64::min));
    assert_eq!(g_cpu.max, g_values.iter().copied().fold(f64::MIN, f64::max));

    // Cluster c1: 140 nodes; its p95 merged from the group sketches is within 1 % of the p95
    // over all 140 node values.
    assert_eq!(cluster.nodes.online, 140);
    assert_eq!(cluster.members.len(), 2);
    let c_values = values(0..140);
    let c_cpu = &cluster.metrics["cpu_pct"];
    assert_eq!(c_cpu.count, 140);
    for (q, got) in [(0.5, c_cpu.p50), (0.95, c_cpu.p95)] {
        let exact = exact_quantile(c_values.clone(), q);
        assert!(
            (got - exact).abs() <= 0.01 * exact.abs() + 1e-9,
            "cluster q{q}: {got} vs exact {exact}"
        );
    }
    // Grid: both clusters, 150 nodes, p95 over every node.
    assert_eq!(grid.members.len(), 2);
    let exact = exact_quantile(values(0..all_nodes.len()), 0.95);
    let got = grid.metrics["cpu_pct"].p95;
    assert!(
        (got - exact).abs() <= 0.01 * exact,
        "grid p95 {got} vs {exact}"
    );
    agg.kill();
    assert_clean_log(dir.path(), "agg");
}

#[tokio::test]
async fn a_silent_node_goes_stale_then_offline_raises_an_alarm_and_comes_back() {
    let server = NatsServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let client = async_nats::connect(server.url()).await.unwrap();
    let seen = collect(client.clone());
    let fleet = Fleet::start(client.clone(), nodes("c1", "g1", 3));
    let mut agg = Aggregator::start(dir.path(), &server.url(), "agg", &["--serve", "c1/g1"], "");
    gridmon_tests::eventually(Duration::from_secs(15), "three nodes online", || {
        let r = rollups_on(&seen, "grid.c1.g1");
        async move { r.iter().any(|r| r.nodes.online == 3).then_some(()) }
    })
    .await
    .unwrap();

    fleet.silence("n002", true);
    let offline = gridmon_tests::eventually(Duration::from_secs(15), "node offline", || {
        let r = rollups_on(&seen, "grid.c1.g1");
        async move { r.into_iter().find(|r| r.nodes.offline == 1) }
    })
    .await
    .unwrap();
    assert_eq!(offline.nodes.online, 2);
    let line = offline.members.iter().find(|m| m.name == "n002").unwrap();
    assert_eq!(line.status, wire::MemberStatus::Offline);
    assert!(offline
        .alarms
        .list
        .iter()
        .any(|a| a.id == "node_offline:c1/g1/n002"));

    fleet.silence("n002", false);
    gridmon_tests::eventually(Duration::from_secs(15), "node back, alarm cleared", || {
        let s = seen.clone();
        async move {
            let s = s.lock().unwrap();
            s.alarms
                .iter()
                .any(|(_, a)| a.action == AlarmAction::Clear && a.rule == "node_offline")
                .then_some(())
        }
    })
    .await
    .unwrap();
    let s = seen.lock().unwrap();
    let kinds: Vec<EventKind> = s
        .events
        .iter()
        .filter(|(subj, _)| subj == "grid.event.c1.g1.n002")
        .map(|(_, e)| e.event)
        .collect();
    assert_eq!(
        kinds,
        vec![
            EventKind::NodeStale,
            EventKind::NodeOffline,
            EventKind::NodeOnline
        ]
    );
    let alarms: Vec<(&str, AlarmAction, &str)> = s
        .alarms
        .iter()
        .map(|(subj, a)| (subj.as_str(), a.action, a.id.as_str()))
        .collect();
    assert_eq!(
        alarms,
        vec![
            (
                "grid.alarm.c1.g1.n002",
                AlarmAction::Raise,
                "node_offline:c1/g1/n002"
            ),
            (
                "grid.alarm.c1.g1.n002",
                AlarmAction::Clear,
                "node_offline:c1/g1/n002"
            ),
        ]
    );
    drop(s);
    agg.kill();
    assert_clean_log(dir.path(), "agg");
}

#[tokio::test]
async fn bad_input_is_dropped_counted_and_survived() {
    // Room for a report with 100,000 processes (about 30 MB).
    let server = NatsServer::start_with(NatsOptions {
        extra_config: "max_payload: 67108864\n".into(),
        ..Default::default()
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let client = async_nats::connect(server.url()).await.unwrap();
    let seen = collect(client.clone());
    let _fleet = Fleet::start(client.clone(), nodes("c1", "g1", 2));
    let mut agg = Aggregator::start(dir.path(), &server.url(), "agg", &["--serve", "c1/g1"], "");
    gridmon_tests::eventually(Duration::from_secs(15), "first rollup", || {
        let r = rollups_on(&seen, "grid.c1.g1");
        async move { r.iter().any(|r| r.nodes.online == 2).then_some(()) }
    })
    .await
    .unwrap();

    let publish = |subject: &str, bytes: Vec<u8>| {
        let (c, s) = (client.clone(), subject.to_string());
        async move {
            c.publish(s, bytes.into()).await.unwrap();
            c.flush().await.unwrap();
        }
    };
    let now = now_ms();
    // Malformed MessagePack.
    publish("grid.c1.g1.bad", b"\xc1\xc1 not msgpack".to_vec()).await;
    // An unknown schema version.
    let mut env = envelope("c1", "g1", "bad", now, 1, report(1.0));
    env.schema = 99;
    publish("grid.c1.g1.bad", wire::encode(&env).unwrap()).await;
    // The payload says another node than the subject.
    let env = envelope("c1", "g1", "someone-else", now, 1, report(1.0));
    publish("grid.c1.g1.bad", wire::encode(&env).unwrap()).await;
    // A timestamp a day in the future, and one a day in the past.
    for ts in [now + 86_400_000, now - 86_400_000] {
        let env = envelope("c1", "g1", "skewed", ts, 1, report(1.0));
        publish("grid.c1.g1.skewed", wire::encode(&env).unwrap()).await;
    }
    // The same sequence number twice.
    for _ in 0..2 {
        let env = envelope("c1", "g1", "dup", now, 7, report(1.0));
        publish("grid.c1.g1.dup", wire::encode(&env).unwrap()).await;
    }
    // A report with 100,000 processes.
    let mut big = report(1.0);
    big.processes = Some(ProcessTable {
        total: 100_000,
        rows: (0..100_000u32)
            .map(|pid| ProcessRow {
                pid,
                name: "worker".into(),
                cmdline: "/usr/bin/worker --serve".into(),
                user: "nobody".into(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    });
    let env = envelope("c1", "g1", "huge", now, 1, big);
    let bytes = wire::encode(&env).unwrap();
    assert!(bytes.len() > 8 << 20, "{} bytes", bytes.len());
    publish("grid.c1.g1.huge", bytes).await;

    let counted = gridmon_tests::eventually(Duration::from_secs(15), "drops counted", || {
        let r = rollups_on(&seen, "grid.c1.g1");
        async move {
            r.into_iter().rev().find(|r| {
                let i = &r.input;
                i.malformed >= 1
                    && i.unknown_schema >= 1
                    && i.identity_mismatch >= 1
                    && i.clock_skew >= 2
                    && i.duplicate >= 1
                    && i.oversize >= 1
            })
        }
    })
    .await
    .unwrap();
    let i = counted.input;
    assert_eq!(
        (
            i.malformed,
            i.unknown_schema,
            i.identity_mismatch,
            i.clock_skew,
            i.oversize
        ),
        (1, 1, 1, 2, 1),
        "{i:?}"
    );
    // Still folding the good nodes afterwards.
    let after = counted.window_start_ms;
    gridmon_tests::eventually(
        Duration::from_secs(10),
        "rollups after the bad input",
        || {
            let r = rollups_on(&seen, "grid.c1.g1");
            async move {
                r.iter()
                    .any(|r| r.window_start_ms > after && r.nodes.online >= 2)
                    .then_some(())
            }
        },
    )
    .await
    .unwrap();
    agg.kill();
    assert_clean_log(dir.path(), "agg");
}

/// Starts three real agents with a 2 s interval and an aggregator just after a boundary has
/// gone by: only the report request can fill its first window.
async fn first_rollup_inputs(request_reports: bool) -> u32 {
    let server = NatsServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let client = async_nats::connect(server.url()).await.unwrap();
    let seen = collect(client.clone());
    let mut agents = Vec::new();
    for n in ["a1", "a2", "a3"] {
        let config = dir.path().join(format!("{n}.toml"));
        std::fs::write(
            &config,
            format!(
                "[nats]\nservers = [{:?}]\n[identity]\ncluster = \"c1\"\ngroup = \"g1\"\nnode = {n:?}\n\
                 [agent]\ninterval = \"2s\"\n[agent.processes]\nenabled = false\n",
                server.url()
            ),
        )
        .unwrap();
        agents.push(
            gridmon_commands::child::command(GRIDMON)
                .arg("agent")
                .arg("--config")
                .arg(&config)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
    }
    // Every agent has a report to give.
    let mut reports = client.subscribe("grid.c1.g1.*").await.unwrap();
    let mut reporting = HashSet::new();
    while reporting.len() < 3 {
        let m = tokio::time::timeout(Duration::from_secs(15), reports.next())
            .await
            .expect("agents reporting")
            .unwrap();
        reporting.insert(m.subject.to_string());
    }
    // 300–900 ms after a 2 s boundary: the boundary's reports have gone by.
    loop {
        let phase = now_ms() % 2000;
        if (300..900).contains(&phase) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let toml = format!(
        "[agent]\ninterval = \"2s\"\n[aggregate]\ngrace = \"1500ms\"\nrequest_reports = {request_reports}\nleader_election = false\n[identity]\ncluster = \"c1\"\n"
    );
    // The interval and grace come from this file, not the defaults of the helper's.
    let config = dir.path().join("agg.toml");
    std::fs::write(
        &config,
        format!("[nats]\nservers = [{:?}]\n{toml}", server.url()),
    )
    .unwrap();
    let log = std::fs::File::create(dir.path().join("agg.log")).unwrap();
    let mut child = gridmon_commands::child::command(GRIDMON)
        .args(["aggregate", "--serve", "c1/g1", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let first = gridmon_tests::eventually(Duration::from_secs(10), "the first rollup", || {
        let r = rollups_on(&seen, "grid.c1.g1");
        async move { r.into_iter().next() }
    })
    .await
    .unwrap();
    let _ = child.start_kill();
    for mut a in agents {
        let _ = a.start_kill();
    }
    first.inputs
}

#[tokio::test]
async fn report_requests_complete_the_first_rollup() {
    assert_eq!(first_rollup_inputs(true).await, 3);
    // The same start without asking: the first window is empty. (This is what makes the check
    // above mean something.)
    assert_eq!(first_rollup_inputs(false).await, 0);
}

#[derive(serde::Deserialize)]
struct Lease {
    holder: String,
}

async fn leader_of(client: &async_nats::Client, key: &str) -> Option<String> {
    let js = async_nats::jetstream::new(client.clone());
    let kv = js.get_key_value("gridmon_leaders").await.ok()?;
    let bytes = kv.get(key).await.ok()??;
    rmp_serde::from_slice::<Lease>(&bytes)
        .ok()
        .map(|l| l.holder)
}

#[tokio::test]
async fn killing_the_leader_hands_over_without_losing_or_repeating_a_window() {
    let server = NatsServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let client = async_nats::connect(server.url()).await.unwrap();
    let seen = collect(client.clone());
    let _fleet = Fleet::start(client.clone(), nodes("c1", "g1", 5));
    let args = ["--serve", "c1/g1"];
    let mut a = Aggregator::start(dir.path(), &server.url(), "agg-a", &args, "");
    let mut b = Aggregator::start(dir.path(), &server.url(), "agg-b", &args, "");

    let leader = gridmon_tests::eventually(Duration::from_secs(15), "a leader", || {
        let c = client.clone();
        async move { leader_of(&c, "group.c1.g1").await }
    })
    .await
    .unwrap();
    // Let it publish a few windows, then kill it without a goodbye.
    let before = gridmon_tests::eventually(Duration::from_secs(15), "rollups", || {
        let r = rollups_on(&seen, "grid.c1.g1");
        async move { (r.len() >= 4).then_some(r.len()) }
    })
    .await
    .unwrap();
    let killed_at = now_ms();
    let (dead, survivor) = if leader == "agg-a" {
        (&mut a, "agg-b")
    } else {
        (&mut b, "agg-a")
    };
    dead.kill();
    let _ = dead.child.wait().await;

    gridmon_tests::eventually(Duration::from_secs(15), "the survivor leads", || {
        let c = client.clone();
        async move { (leader_of(&c, "group.c1.g1").await? == survivor).then_some(()) }
    })
    .await
    .unwrap();
    let n = before + 8;
    gridmon_tests::eventually(
        Duration::from_secs(15),
        "rollups after the take-over",
        || {
            let r = rollups_on(&seen, "grid.c1.g1");
            async move { (r.len() >= n).then_some(()) }
        },
    )
    .await
    .unwrap();

    let all: Vec<(i64, Rollup)> = seen
        .lock()
        .unwrap()
        .rollups
        .iter()
        .filter(|(s, _, _)| s == "grid.c1.g1")
        .map(|(_, at, r)| (*at, r.clone()))
        .collect();
    let mut by_window: BTreeMap<i64, Vec<&Rollup>> = BTreeMap::new();
    for (_, r) in &all {
        by_window.entry(r.window_start_ms).or_default().push(r);
    }
    // No window twice with different content, and none missing from first to last.
    for (w, rs) in &by_window {
        for r in &rs[1..] {
            assert_eq!(
                (&r.nodes, &r.metrics, &r.members),
                (&rs[0].nodes, &rs[0].metrics, &rs[0].members),
                "window {w} published twice with different content"
            );
        }
    }
    let windows: Vec<i64> = by_window.keys().copied().collect();
    for pair in windows.windows(2) {
        assert_eq!(pair[1] - pair[0], W, "a window is missing: {windows:?}");
    }
    let first_after = all
        .iter()
        .find(|(at, _)| *at > killed_at)
        .map(|(at, _)| at - killed_at);
    println!(
        "take-over: first rollup {first_after:?} ms after the kill (interval {W} ms); windows {}..{}",
        windows[0],
        windows[windows.len() - 1]
    );
    a.kill();
    b.kill();
    assert_clean_log(dir.path(), "agg-a");
    assert_clean_log(dir.path(), "agg-b");
}
