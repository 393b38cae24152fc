//! Integration tests of the pure fold: group windows over many nodes, quantiles merged up through
//! cluster and grid, liveness, late and bad input, alarms through the fold, carried-forward
//! process tables. Time is explicit: every test drives the folds with made-up clocks.
#![allow(clippy::unwrap_used)] // a panic is how a test reports

use std::sync::Arc;
use std::time::Duration;

use gridmon_aggregators::alarm::RuleSet;
use gridmon_aggregators::group::{GroupFold, Refused};
use gridmon_aggregators::upper::UpperFold;
use gridmon_aggregators::window::{Offered, Params};
use gridmon_aggregators::Output;
use gridmon_nats::sketch::{Sketch, DEFAULT_ALPHA};
use gridmon_nats::wire::{
    AlarmAction, AlarmEvent, CpuMetrics, Event, EventKind, HostMetrics, InputStats, Level,
    MemberStatus, MemoryMetrics, NetMetrics, NodeCounts, ProcessSummary, ProgramState,
    ProgramStatus, ReportView, Rollup, SensorKind, SensorReading, Severity, StateCounts,
};
use gridmon_nats::{Config, NodeId, Scope};
use proptest::prelude::*;

const W: i64 = 1000;
const GRACE: i64 = 500;
/// How much longer each level up waits: `rollup_grace`.
const RG: i64 = 100;
/// A window boundary far from the epoch.
const BASE: i64 = 1_700_000_000_000;
/// When every fold is made: late enough in window 0 that group, cluster and grid all start with
/// window 0 open (each lags one more rollup grace).
const START: i64 = BASE + 900;
const MEM_TOTAL: u64 = 64 << 30;
const CORES: usize = 4;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn params() -> Params {
    let p = Params::default();
    assert_eq!(
        (p.window_ms, p.grace_ms, p.rollup_grace_ms),
        (W, GRACE, RG),
        "the tests assume 1 s windows"
    );
    assert_eq!((p.stale_after, p.offline_after), (3, 10));
    p
}

/// The rule set of `[aggregate]` TOML (built-ins included).
fn rules(toml: &str) -> Arc<RuleSet> {
    let cfg = Config::from_toml(toml).unwrap();
    Arc::new(RuleSet::compile(&cfg.aggregate, Duration::from_millis(W as u64)).unwrap())
}

fn builtin_rules() -> Arc<RuleSet> {
    rules("")
}

/// The report stamp of window `k`: the boundary that ends it.
fn stamp(k: i64) -> i64 {
    BASE + (k + 1) * W
}

/// When group window `k` closes (cluster: one grace later, grid: two).
fn group_close(k: i64) -> i64 {
    stamp(k) + GRACE
}

fn mem_used(pct: f64) -> u64 {
    (MEM_TOTAL as f64 * pct / 100.0) as u64
}

/// A host-only report.
fn report(cpu: f32, mem_used_pct: f64) -> ReportView {
    ReportView {
        interval_ms: W as u32,
        host: Some(HostMetrics {
            cpu: CpuMetrics {
                total_pct: cpu,
                per_core_pct: vec![cpu; CORES],
                ..Default::default()
            },
            memory: MemoryMetrics {
                total_bytes: MEM_TOTAL,
                used_bytes: mem_used(mem_used_pct),
                ..Default::default()
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A host-only report with network traffic; the loopback's huge figure must be left out.
fn report_net(cpu: f32, rx_bytes_ps: f64) -> ReportView {
    let mut r = report(cpu, 50.0);
    if let Some(h) = &mut r.host {
        h.nets = vec![
            NetMetrics {
                name: "lo".into(),
                rx_bytes_ps: 1e12,
                ..Default::default()
            },
            NetMetrics {
                name: "eth0".into(),
                rx_bytes_ps,
                ..Default::default()
            },
        ];
    }
    r
}

/// The value at 0-based rank `floor(q * (n - 1))`: the sketch's documented rank.
fn exact(values: &[f64], q: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v[(q * (v.len() - 1) as f64).floor() as usize]
}

fn within_alpha(est: f64, exact: f64) -> bool {
    (est - exact).abs() <= DEFAULT_ALPHA * exact.abs() * (1.0 + 1e-9) + 1e-12
}

fn assert_quantiles(what: &str, r: &Rollup, metric: &str, values: &[f64]) {
    let s = &r.metrics[metric];
    for (q, got) in [(0.5, s.p50), (0.95, s.p95)] {
        let e = exact(values, q);
        assert!(
            within_alpha(got, e),
            "{what} {metric} p{}: {got} vs exact {e}",
            q * 100.0
        );
    }
}

/// What one window close produced.
#[derive(Debug, Default)]
struct Closed {
    rollups: Vec<(Scope, i64, Rollup)>,
    events: Vec<(NodeId, i64, Event)>,
    alarms: Vec<(Scope, AlarmEvent)>,
}

impl Closed {
    fn of(out: Vec<Output>) -> Self {
        let mut c = Self::default();
        for o in out {
            match o {
                Output::Rollup {
                    scope,
                    close_ms,
                    rollup,
                } => c.rollups.push((scope, close_ms, rollup)),
                Output::Event { node, ts_ms, event } => c.events.push((node, ts_ms, event)),
                Output::Alarm { scope, event } => c.alarms.push((scope, event)),
            }
        }
        c
    }

    /// The one rollup this close made.
    fn rollup(&self) -> &Rollup {
        assert_eq!(
            self.rollups.len(),
            1,
            "one window closed: {:?}",
            self.rollups
        );
        &self.rollups[0].2
    }
}

/// One group driven window by window; every node's reports carry one run and rising sequence
/// numbers.
struct Group {
    fold: GroupFold,
    seq: u64,
}

impl Group {
    fn new(cluster: &str, group: &str, rules: Arc<RuleSet>) -> Self {
        Self {
            fold: GroupFold::new(cluster, group, params(), rules, START),
            seq: 0,
        }
    }

    /// Offers `node`'s report for window `k`, delivered at `now`.
    fn offer_at(
        &mut self,
        node: &str,
        k: i64,
        r: &ReportView,
        now: i64,
    ) -> Result<Offered, Refused> {
        self.seq += 1;
        self.fold.offer(node, stamp(k), 1, self.seq, r, now)
    }

    /// Window `k`: each report on time (just after its stamp), then the close.
    fn window<'a>(
        &mut self,
        k: i64,
        reports: impl IntoIterator<Item = (&'a str, ReportView)>,
    ) -> Closed {
        for (node, r) in reports {
            assert_eq!(
                self.offer_at(node, k, &r, stamp(k) + 10),
                Ok(Offered::Folded)
            );
        }
        self.close(k)
    }

    fn close(&mut self, k: i64) -> Closed {
        assert_eq!(self.fold.next_close_ms(), group_close(k));
        let mut out = Vec::new();
        self.fold.close_due(group_close(k) - 1, &mut out);
        assert!(out.is_empty(), "nothing closes before its time");
        self.fold.close_due(group_close(k), &mut out);
        let c = Closed::of(out);
        let r = c.rollup();
        assert_eq!(
            (r.level, r.window_start_ms, r.window_ms),
            (Level::Group, BASE + k * W, W as u32)
        );
        assert_eq!(c.rollups[0].1, group_close(k));
        c
    }
}

fn node_names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("n{i:03}")).collect()
}

// ---------------------------------------------------------------------------------------------
// 1. A group of 150 nodes
// ---------------------------------------------------------------------------------------------

#[test]
fn a_group_of_150_nodes_has_exact_figures() {
    let names = node_names(150);
    let mut g = Group::new("c", "g", builtin_rules());
    let cpu_of = |i: usize, k: i64| ((i + 3 * k as usize) % 100) as f32;
    let mem_of = |i: usize, k: i64| 20.0 + ((i * 7 + k as usize) % 50) as f64 + 0.25;
    for k in 0..5 {
        // Offered in reverse name order: members must still come out sorted.
        let c = g.window(
            k,
            names
                .iter()
                .enumerate()
                .rev()
                .map(|(i, n)| (n.as_str(), report(cpu_of(i, k), mem_of(i, k)))),
        );
        let r = c.rollup();
        assert!(c.events.is_empty() && c.alarms.is_empty(), "{c:?}");
        assert_eq!(
            r.nodes,
            NodeCounts {
                online: 150,
                stale: 0,
                offline: 0
            }
        );
        assert_eq!(r.inputs, 150);
        let n = (k as u64 + 1) * 150;
        assert_eq!(
            r.input,
            InputStats {
                received: n,
                folded: n,
                ..Default::default()
            }
        );

        let cpu: Vec<f64> = (0..150).map(|i| f64::from(cpu_of(i, k))).collect();
        let s = &r.metrics["cpu_pct"];
        let sum: f64 = cpu.iter().sum();
        assert_eq!(s.count, 150);
        assert_eq!(s.min, 0.0);
        assert_eq!(s.max, 99.0);
        assert_eq!(s.sum, sum, "integers add exactly in any order");
        assert_eq!(s.mean, sum / 150.0);
        assert_eq!(s.sketch.count, 150);
        assert_quantiles("group", r, "cpu_pct", &cpu);
        if k == 0 {
            // 0..49 twice and 50..99 once: rank 74 is 37, rank 141 is 91.
            assert_eq!((exact(&cpu, 0.5), exact(&cpu, 0.95)), (37.0, 91.0));
        }

        let used: Vec<u64> = (0..150).map(|i| mem_used(mem_of(i, k))).collect();
        let mem_pct: Vec<f64> = used
            .iter()
            .map(|&u| 100.0 * u as f64 / MEM_TOTAL as f64)
            .collect();
        let m = &r.metrics["mem_used_pct"];
        assert_eq!(m.count, 150);
        let lo = mem_pct.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = mem_pct.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        assert_eq!((m.min, m.max), (lo, hi));
        let mem_sum: f64 = mem_pct.iter().sum();
        assert!(
            (m.sum - mem_sum).abs() <= 1e-9 * mem_sum,
            "{} vs {mem_sum}",
            m.sum
        );
        assert_quantiles("group", r, "mem_used_pct", &mem_pct);

        assert_eq!(r.sums.memory_total_bytes, 150 * MEM_TOTAL);
        assert_eq!(r.sums.memory_used_bytes, used.iter().sum::<u64>());
        assert_eq!(r.sums.cpu_cores, 150 * CORES as u64);
        assert!(
            !r.metrics.contains_key("net_rx_bytes_ps"),
            "no node has a NIC"
        );

        assert_eq!(r.members.len(), 150);
        let listed: Vec<&str> = r.members.iter().map(|l| l.name.as_str()).collect();
        let mut sorted = listed.clone();
        sorted.sort_unstable();
        assert_eq!(listed, sorted, "member lines sorted by name");
        for (i, line) in r.members.iter().enumerate() {
            assert_eq!(line.name, names[i]);
            assert_eq!(line.status, MemberStatus::Online);
            assert_eq!(line.nodes.online, 1);
            assert_eq!(line.cpu_pct, Some(cpu_of(i, k)));
            assert_eq!(line.last_seen_ms, stamp(k));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Quantiles up the hierarchy
// ---------------------------------------------------------------------------------------------

/// splitmix64: a deterministic generator good enough for test data.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1).
    fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller).
    fn normal(&mut self) -> f64 {
        let (u, v) = (self.unit(), self.unit());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

/// Per node of one group: (cpu %, rx bytes/s).
type GroupData = Vec<(f32, f64)>;

/// `groups` groups of `nodes` nodes. CPU is lognormal around a few percent, except in the `hot`
/// groups, which sit at 85–100 %. Received bytes/s are lognormal with a median of 10^(2+g) in
/// group g: seven decades across eight groups.
fn cluster_data(rng: &mut Rng, groups: usize, nodes: usize, hot: &[usize]) -> Vec<GroupData> {
    (0..groups)
        .map(|g| {
            let median = 3.0 + 2.0 * rng.unit();
            (0..nodes)
                .map(|_| {
                    let cpu = if hot.contains(&g) {
                        85.0 + 15.0 * rng.unit()
                    } else {
                        (median * (0.5 * rng.normal()).exp()).min(100.0)
                    };
                    let rx = 10f64.powi(2 + g as i32) * (0.8 * rng.normal()).exp();
                    (cpu as f32, rx)
                })
                .collect()
        })
        .collect()
}

/// Folds one cluster's groups for window 0 and returns (group rollups, cluster rollup).
fn fold_cluster(cluster: &str, data: &[GroupData], rules: &Arc<RuleSet>) -> (Vec<Rollup>, Rollup) {
    let mut up = UpperFold::cluster(cluster, params(), rules.clone(), START);
    let mut groups = Vec::new();
    for (gi, nodes) in data.iter().enumerate() {
        let group = format!("g{gi}");
        let mut g = Group::new(cluster, &group, rules.clone());
        let names = node_names(nodes.len());
        let c = g.window(
            0,
            names
                .iter()
                .zip(nodes)
                .map(|(n, &(cpu, rx))| (n.as_str(), report_net(cpu, rx))),
        );
        let r = c.rollup().clone();
        assert_eq!(
            up.offer(&group, r.clone(), group_close(0) + 5),
            Some(Offered::Folded)
        );
        groups.push(r);
    }
    let mut out = Vec::new();
    up.close_due(group_close(0) + RG - 1, &mut out);
    assert!(out.is_empty());
    up.close_due(group_close(0) + RG, &mut out);
    let c = Closed::of(out);
    let r = c.rollup().clone();
    assert_eq!(
        c.rollups[0].0,
        Scope::Cluster {
            cluster: cluster.into()
        }
    );
    assert_eq!((r.level, r.window_start_ms), (Level::Cluster, BASE));
    (groups, r)
}

/// Folds the clusters' rollups into the grid for window 0.
fn fold_grid(clusters: &[(String, Rollup)], rules: &Arc<RuleSet>) -> Rollup {
    let mut grid = UpperFold::grid(params(), rules.clone(), START);
    for (name, r) in clusters {
        assert_eq!(
            grid.offer(name, r.clone(), group_close(0) + RG + 5),
            Some(Offered::Folded)
        );
    }
    let mut out = Vec::new();
    grid.close_due(group_close(0) + 2 * RG - 1, &mut out);
    assert!(out.is_empty());
    grid.close_due(group_close(0) + 2 * RG, &mut out);
    let c = Closed::of(out);
    assert_eq!(c.rollups[0].0, Scope::Grid);
    let r = c.rollup().clone();
    assert_eq!((r.level, r.window_start_ms), (Level::Grid, BASE));
    r
}

fn cpu_values(data: &[GroupData]) -> Vec<f64> {
    data.iter().flatten().map(|&(c, _)| f64::from(c)).collect()
}

fn rx_values(data: &[GroupData]) -> Vec<f64> {
    data.iter().flatten().map(|&(_, rx)| rx).collect()
}

/// Checks a merged rollup against every node value below it: exact count, min, max and sum;
/// quantiles within α of the exact rank values; and the merged sketch equal to one built from
/// all the values at once.
fn check_merged(what: &str, r: &Rollup, cpu: &[f64], rx: &[f64]) {
    let n = cpu.len() as u64;
    assert_eq!(r.nodes.online as u64, n, "{what}");
    for (metric, values) in [("cpu_pct", cpu), ("net_rx_bytes_ps", rx)] {
        let s = &r.metrics[metric];
        assert_eq!(s.count, n, "{what} {metric}");
        let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        assert_eq!((s.min, s.max), (lo, hi), "{what} {metric}");
        let sum: f64 = values.iter().sum();
        assert!((s.sum - sum).abs() <= 1e-9 * sum, "{what} {metric}");
        assert!(
            (s.mean - sum / n as f64).abs() <= 1e-9 * s.mean,
            "{what} {metric}"
        );
        assert_quantiles(what, r, metric, values);
        assert_eq!(
            s.sketch,
            Sketch::from_values(DEFAULT_ALPHA, values),
            "{what} {metric}: merging is exact"
        );
    }
    let rx_sum: f64 = rx.iter().sum();
    assert!(
        (r.sums.net_rx_bytes_ps - rx_sum).abs() <= 1e-9 * rx_sum,
        "{what}: loopback left out"
    );
    assert_eq!(r.sums.memory_total_bytes, n * MEM_TOTAL);
    assert_eq!(r.sums.cpu_cores, n * CORES as u64);
}

#[test]
fn quantiles_stay_right_up_the_hierarchy() {
    let rules = builtin_rules();
    let mut rng = Rng(0x5eed);
    // Cluster a: one hot group of eight. Cluster b: two.
    let a = cluster_data(&mut rng, 8, 128, &[5]);
    let b = cluster_data(&mut rng, 8, 128, &[0, 3]);

    let (groups, ca) = fold_cluster("a", &a, &rules);
    let (cpu_a, rx_a) = (cpu_values(&a), rx_values(&a));
    assert_eq!(cpu_a.len(), 1024);
    for (g, (r, data)) in groups.iter().zip(&a).enumerate() {
        let one = std::slice::from_ref(data);
        check_merged(
            &format!("group a/g{g}"),
            r,
            &cpu_values(one),
            &rx_values(one),
        );
    }
    check_merged("cluster a", &ca, &cpu_a, &rx_a);
    assert_eq!(ca.inputs, 8);
    assert_eq!(
        ca.members
            .iter()
            .map(|m| m.name.as_str())
            .collect::<Vec<_>>(),
        ["g0", "g1", "g2", "g3", "g4", "g5", "g6", "g7"]
    );
    assert!(ca.members.iter().all(|m| m.nodes.online == 128));
    assert_eq!(
        ca.input,
        InputStats {
            received: 8,
            folded: 8,
            ..Default::default()
        }
    );

    // Why merging matters: the mean of the groups' p95 (and p50) is far off for skewed groups.
    for (metric, q, values) in [
        ("cpu_pct", 0.95, &cpu_a),
        ("cpu_pct", 0.5, &cpu_a),
        ("net_rx_bytes_ps", 0.95, &rx_a),
    ] {
        let pick = |r: &Rollup| {
            let s = &r.metrics[metric];
            if q == 0.5 {
                s.p50
            } else {
                s.p95
            }
        };
        let naive = groups.iter().map(pick).sum::<f64>() / groups.len() as f64;
        let e = exact(values, q);
        let err = (naive - e).abs() / e;
        assert!(
            err > 10.0 * DEFAULT_ALPHA,
            "{metric} q{q}: averaging group quantiles gives {naive}, exact {e} (error {err:.3})"
        );
        assert!(
            within_alpha(pick(&ca), e),
            "{metric} q{q}: merged {}",
            pick(&ca)
        );
    }

    let (_, cb) = fold_cluster("b", &b, &rules);
    let grid = fold_grid(&[("a".into(), ca), ("b".into(), cb.clone())], &rules);
    check_merged("cluster b", &cb, &cpu_values(&b), &rx_values(&b));
    let all: Vec<GroupData> = a.iter().chain(&b).cloned().collect();
    check_merged("grid", &grid, &cpu_values(&all), &rx_values(&all));
    assert_eq!(grid.inputs, 2);
    assert_eq!(grid.nodes.online, 2048);
    assert_eq!(
        grid.members
            .iter()
            .map(|m| (m.name.as_str(), m.nodes.online))
            .collect::<Vec<_>>(),
        [("a", 1024), ("b", 1024)]
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    /// Any seed, any hot groups: cluster and grid quantiles are within α of the exact ones.
    #[test]
    fn merged_quantiles_are_within_alpha(
        seed in any::<u64>(),
        hot_a in proptest::collection::vec(0usize..8, 0..3),
        hot_b in proptest::collection::vec(0usize..8, 0..3),
        nodes in 1usize..130,
    ) {
        let rules = builtin_rules();
        let mut rng = Rng(seed);
        let a = cluster_data(&mut rng, 8, nodes, &hot_a);
        let b = cluster_data(&mut rng, 8, nodes, &hot_b);
        let (_, ca) = fold_cluster("a", &a, &rules);
        let (_, cb) = fold_cluster("b", &b, &rules);
        check_merged("cluster a", &ca, &cpu_values(&a), &rx_values(&a));
        let grid = fold_grid(&[("a".into(), ca), ("b".into(), cb)], &rules);
        let all: Vec<GroupData> = a.iter().chain(&b).cloned().collect();
        check_merged("grid", &grid, &cpu_values(&all), &rx_values(&all));
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Stale and offline
// ---------------------------------------------------------------------------------------------

#[test]
fn a_silent_node_goes_stale_then_offline_once_and_comes_back() {
    let mut g = Group::new("c", "g", builtin_rules());
    let (last_before, back) = (4, 35);
    let mut events = Vec::new();
    let mut alarms = Vec::new();
    for k in 0..=40 {
        let silent = k > last_before && k < back;
        let nodes: &[&str] = if silent {
            &["a", "c"]
        } else {
            &["a", "b", "c"]
        };
        let c = g.window(k, nodes.iter().map(|&n| (n, report(10.0, 30.0))));
        let r = c.rollup();
        events.extend(
            c.events
                .iter()
                .map(|(n, t, e)| (k, n.clone(), *t, e.clone())),
        );
        alarms.extend(c.alarms.iter().map(|(s, e)| (k, s.clone(), e.clone())));
        let missed = if silent { k - last_before } else { 0 };
        let (online, stale, offline, status) = match missed {
            0..=2 => (3, 0, 0, MemberStatus::Online),
            3..=9 => (2, 1, 0, MemberStatus::Stale),
            _ => (2, 0, 1, MemberStatus::Offline),
        };
        assert_eq!(
            r.nodes,
            NodeCounts {
                online,
                stale,
                offline
            },
            "window {k}"
        );
        assert_eq!(r.inputs, nodes.len() as u32, "window {k}");
        let b = &r.members[1];
        assert_eq!((b.name.as_str(), b.status), ("b", status), "window {k}");
        // The silent node's line keeps its last figures and when it was last heard from.
        assert_eq!(b.cpu_pct, Some(10.0));
        assert_eq!(b.last_seen_ms, stamp(if silent { last_before } else { k }));
        let offline_alarm = (last_before + 10..back).contains(&k);
        assert_eq!(r.alarms.active, u32::from(offline_alarm), "window {k}");
        assert_eq!(r.alarms.critical, u32::from(offline_alarm), "window {k}");
        if offline_alarm {
            assert_eq!(r.alarms.list[0].id, "node_offline:c/g/b");
            assert_eq!(r.alarms.list[0].since_ms, group_close(last_before + 10));
            assert_eq!(b.alarms, 1);
        }
    }

    let b = NodeId::new("c", "g", "b").unwrap();
    let summary: Vec<(i64, EventKind, u32, Option<i64>)> = events
        .iter()
        .map(|(k, n, t, e)| {
            assert_eq!(n, &b);
            assert_eq!(*t, group_close(*k), "events are stamped with the close");
            (*k, e.event, e.missed_intervals, e.last_seen_ms)
        })
        .collect();
    assert_eq!(
        summary,
        [
            (7, EventKind::NodeStale, 3, Some(stamp(4))),
            (14, EventKind::NodeOffline, 10, Some(stamp(4))),
            (35, EventKind::NodeOnline, 0, Some(stamp(35))),
        ],
        "one event per transition over 30 silent windows"
    );

    let summary: Vec<(i64, &str, AlarmAction, Severity, f64)> = alarms
        .iter()
        .map(|(k, scope, e)| {
            assert_eq!(scope, &Scope::Node(b.clone()));
            assert_eq!(e.id, "node_offline:c/g/b");
            assert_eq!(e.raised_ms, group_close(14));
            (*k, e.rule.as_str(), e.action, e.severity, e.value)
        })
        .collect();
    assert_eq!(
        summary,
        [
            (
                14,
                "node_offline",
                AlarmAction::Raise,
                Severity::Critical,
                10.0
            ),
            (
                35,
                "node_offline",
                AlarmAction::Clear,
                Severity::Critical,
                0.0
            ),
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// 4. Late reports
// ---------------------------------------------------------------------------------------------

#[test]
fn late_reports_are_counted_once() {
    let mut g = Group::new("c", "g", builtin_rules());
    // Node a's cpu says which window its report is for: 10 + k.
    let a = |k: i64| report(10.0 + k as f32, 30.0);
    let b = || report(50.0, 30.0);
    let mut rollups: Vec<Rollup> = Vec::new();
    let take = |c: Closed| {
        let r = c.rollup().clone();
        // One line per node, and never more values than inputs.
        assert_eq!(r.members.len(), 2);
        assert_eq!(r.metrics["cpu_pct"].count, u64::from(r.inputs));
        r
    };
    let a_cpu = |r: &Rollup| r.members[0].cpu_pct;

    rollups.push(take(g.window(0, [("a", a(0)), ("b", b())])));

    // Window 1 closes without a; its report then arrives and goes to window 2, where a's
    // on-time report replaces it.
    rollups.push(take(g.window(1, [("b", b())])));
    assert_eq!(rollups[1].inputs, 1);
    assert_eq!(
        g.offer_at("a", 1, &a(1), group_close(1) + 10),
        Ok(Offered::Late)
    );
    assert_eq!(
        g.offer_at("a", 2, &a(2), stamp(2) + 10),
        Ok(Offered::Folded)
    );
    rollups.push(take(g.window(2, [("b", b())])));
    let r = &rollups[2];
    assert_eq!(r.inputs, 2);
    assert_eq!(
        a_cpu(r),
        Some(12.0),
        "the on-time report replaced the late one"
    );
    assert_eq!((r.input.late, r.input.late_dropped), (1, 0));

    // Window 3's report is late and a sends nothing on time for window 4: it fills window 4.
    rollups.push(take(g.window(3, [("b", b())])));
    assert_eq!(
        g.offer_at("a", 3, &a(3), group_close(3) + 10),
        Ok(Offered::Late)
    );
    rollups.push(take(g.window(4, [("b", b())])));
    let r = &rollups[4];
    assert_eq!(r.inputs, 2);
    assert_eq!(a_cpu(r), Some(13.0));
    assert_eq!(r.metrics["cpu_pct"].sum, 63.0);

    // Windows 5 and 6 close without a; both reports then arrive: the first fills window 7, the
    // second is dropped; the on-time report for 7 replaces the first.
    rollups.push(take(g.window(5, [("b", b())])));
    rollups.push(take(g.window(6, [("b", b())])));
    assert_eq!(
        g.offer_at("a", 5, &a(5), group_close(6) + 10),
        Ok(Offered::Late)
    );
    assert_eq!(
        g.offer_at("a", 6, &a(6), group_close(6) + 20),
        Ok(Offered::LateDropped)
    );
    assert_eq!(
        g.offer_at("a", 7, &a(7), stamp(7) + 10),
        Ok(Offered::Folded)
    );
    rollups.push(take(g.window(7, [("b", b())])));
    let r = &rollups[7];
    assert_eq!(r.inputs, 2);
    assert_eq!(a_cpu(r), Some(17.0));
    assert_eq!(r.metrics["cpu_pct"].sum, 67.0);

    let inputs: Vec<u32> = rollups.iter().map(|r| r.inputs).collect();
    assert_eq!(inputs, [2, 1, 2, 1, 2, 1, 1, 2]);
    let s = rollups[7].input;
    // 8 reports of b, 7 of a (a(0)..a(7) but a(4)): 15 received.
    assert_eq!(
        s,
        InputStats {
            received: 15,
            folded: 14,
            late: 4,
            late_dropped: 1,
            ..Default::default()
        }
    );
    // Every report is folded or dropped; the two replaced ones were folded but count nowhere.
    assert_eq!(s.received, s.folded + s.dropped());
    let replaced = 2;
    assert_eq!(
        inputs.iter().map(|&i| u64::from(i)).sum::<u64>(),
        s.folded - replaced
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Reports delayed at random (in order per node, as one connection delivers them): no node
    /// counts twice in a window, nothing is lost from the books, nothing panics.
    #[test]
    fn random_delays_never_count_a_node_twice(
        delays in proptest::collection::vec(proptest::collection::vec(0i64..2500, 20), 1..6),
    ) {
        let nodes = delays.len();
        let names = node_names(nodes);
        let mut fold = GroupFold::new("c", "g", params(), builtin_rules(), START);
        // (arrival, node, window); a node's reports arrive in order.
        let mut arrivals = Vec::new();
        for (n, ds) in delays.iter().enumerate() {
            let mut prev = 0;
            for (k, d) in ds.iter().enumerate() {
                let at = (stamp(k as i64) + d).max(prev);
                prev = at;
                arrivals.push((at, n, k as i64));
            }
        }
        arrivals.sort();
        let mut seq = vec![0u64; nodes];
        let mut out = Vec::new();
        for &(at, n, k) in &arrivals {
            fold.close_due(at, &mut out);
            seq[n] += 1;
            // The value says which report it is: node n, window k.
            let r = report((n * 100 + k as usize) as f32, 10.0);
            prop_assert!(fold.offer(&names[n], stamp(k), 1, seq[n], &r, at).is_ok());
        }
        fold.close_due(stamp(25), &mut out);
        let rollups: Vec<Rollup> = Closed::of(out).rollups.into_iter().map(|(_, _, r)| r).collect();
        let mut total = 0u64;
        for r in &rollups {
            prop_assert!(r.inputs as usize <= nodes);
            prop_assert_eq!(r.metrics.get("cpu_pct").map_or(0, |s| s.count), u64::from(r.inputs));
            total += u64::from(r.inputs);
        }
        let s = rollups.last().map(|r| r.input).unwrap_or_default();
        prop_assert_eq!(s.received, (nodes * 20) as u64);
        prop_assert_eq!(s.received, s.folded + s.dropped());
        prop_assert_eq!(s.duplicate, 0);
        prop_assert!(total <= s.folded);
        // Each window holds at most one report per node, so at most one per window overall.
        prop_assert!(total <= (nodes * rollups.len()) as u64);
    }
}

// ---------------------------------------------------------------------------------------------
// 5. Bad input
// ---------------------------------------------------------------------------------------------

#[test]
fn bad_input_is_refused_and_counted() {
    let mut g = Group::new("c", "g", builtin_rules());
    let f = &mut g.fold;
    let ok = report(10.0, 20.0);
    let now = stamp(0) + 10;
    let ts = stamp(0);
    assert_eq!(f.offer("a", ts, 100, 5, &ok, now), Ok(Offered::Folded));
    assert_eq!(
        f.offer("a", ts, 100, 5, &ok, now),
        Err(Refused::Duplicate),
        "same sequence number"
    );
    assert_eq!(
        f.offer("a", ts + 1, 100, 4, &ok, now),
        Err(Refused::Duplicate),
        "older sequence number"
    );
    assert_eq!(
        f.offer("a", ts + 2, 99, 50, &ok, now),
        Err(Refused::Duplicate),
        "older run"
    );
    let skew = 300_001;
    assert_eq!(
        f.offer("a", now + skew, 100, 6, &ok, now),
        Err(Refused::ClockSkew)
    );
    assert_eq!(
        f.offer("a", now - skew, 100, 7, &ok, now),
        Err(Refused::ClockSkew)
    );
    assert_eq!(
        f.offer("a", now + skew - 1, 100, 8, &ok, now),
        Ok(Offered::Folded),
        "within the bound: goes to the newest open window"
    );
    // Timestamps from the wire can be anything.
    for ts in [i64::MIN, i64::MIN + 1, i64::MAX, -1, 0] {
        assert_eq!(
            f.offer("ghost", ts, 1, 1, &ok, now),
            Err(Refused::ClockSkew),
            "{ts}"
        );
    }
    let mut big = ok.clone();
    big.processes = Some(ProcessSummary {
        total: 100_000,
        ..Default::default()
    });
    assert_eq!(
        f.offer("ghost", ts, 1, 1, &big, now),
        Err(Refused::Oversize)
    );
    big.processes = Some(ProcessSummary {
        total: 10,
        row_count: 100_000,
        ..Default::default()
    });
    assert_eq!(
        f.offer("ghost", ts, 1, 1, &big, now),
        Err(Refused::Oversize)
    );
    // Counted by the bus side (a message that did not decode).
    f.stats_mut().malformed += 1;

    let c = g.close(0);
    let r = c.rollup();
    assert_eq!(r.inputs, 1);
    assert_eq!(
        r.members.len(),
        1,
        "refused input makes no member: {:?}",
        r.members
    );
    let expected = InputStats {
        received: 14,
        folded: 2,
        duplicate: 3,
        clock_skew: 7,
        oversize: 2,
        malformed: 1,
        ..Default::default()
    };
    assert_eq!(r.input, expected);
    assert_eq!(expected.received + 1, expected.folded + expected.dropped());

    // Window 1 holds the report stamped ahead; window 2: the agent restarted with a new run.
    let c = g.close(1);
    assert_eq!(c.rollup().inputs, 1);
    assert_eq!(
        g.fold.offer("a", stamp(2), 200, 1, &ok, stamp(2) + 10),
        Ok(Offered::Folded),
        "a new run starts again at 1"
    );
    let c = g.close(2);
    let r = c.rollup();
    assert_eq!(r.inputs, 1);
    assert_eq!((r.input.received, r.input.folded), (15, 3));
    assert!(c.events.is_empty());
}

proptest! {
    /// Whatever the envelope says, the fold refuses or folds, counts it, and never panics.
    #[test]
    fn arbitrary_headers_never_panic(
        inputs in proptest::collection::vec(
            (
                prop_oneof![
                    any::<i64>(),
                    Just(i64::MIN),
                    Just(i64::MAX),
                    (-400_000i64..400_000).prop_map(|d| stamp(0) + d),
                ],
                any::<u64>(),
                prop_oneof![any::<u64>(), 0u64..4],
                prop_oneof![any::<u32>(), 0u32..100],
                0u8..3,
            ),
            1..40,
        ),
    ) {
        let mut fold = GroupFold::new("c", "g", params(), builtin_rules(), START);
        let mut out = Vec::new();
        let now = stamp(0) + 10;
        for (i, &(ts, run, seq, procs, node)) in inputs.iter().enumerate() {
            let mut r = report(i as f32, 10.0);
            r.processes = Some(ProcessSummary { total: procs, row_count: procs, ..Default::default() });
            let _ = fold.offer(&format!("n{node}"), ts, run, seq, &r, now);
        }
        fold.close_due(group_close(3), &mut out);
        let rollups: Vec<Rollup> = Closed::of(out).rollups.into_iter().map(|(_, _, r)| r).collect();
        prop_assert_eq!(rollups.len(), 4);
        let s = rollups[3].input;
        prop_assert_eq!(s.received, inputs.len() as u64);
        prop_assert_eq!(s.received, s.folded + s.dropped());
        let total: u64 = rollups.iter().map(|r| u64::from(r.inputs)).sum();
        prop_assert!(total <= s.folded);
    }
}

#[test]
fn upper_folds_refuse_wrong_levels_and_corrupt_sketches() {
    let rules = builtin_rules();
    let mut groups = Vec::new();
    for (gi, base_cpu) in [10.0f32, 20.0, 30.0].into_iter().enumerate() {
        let mut g = Group::new("c", &format!("g{gi}"), rules.clone());
        let names = node_names(4);
        let c = g.window(
            0,
            names
                .iter()
                .enumerate()
                .map(|(i, n)| (n.as_str(), report(base_cpu + i as f32, 40.0))),
        );
        groups.push(c.rollup().clone());
    }
    let mut up = UpperFold::cluster("c", params(), rules.clone(), START);
    let now = group_close(0) + 5;
    let mut cluster_level = groups[0].clone();
    cluster_level.level = Level::Cluster;
    assert_eq!(up.offer("g0", cluster_level.clone(), now), None);
    // g1's cpu sketch no longer adds up to its count.
    let mut corrupt = groups[1].clone();
    let s = corrupt.metrics.get_mut("cpu_pct").unwrap();
    s.sketch.pos_counts[0] += 7;
    assert!(s.sketch.validate().is_err());
    assert_eq!(
        up.offer("g0", groups[0].clone(), now),
        Some(Offered::Folded)
    );
    assert_eq!(up.offer("g1", corrupt, now), Some(Offered::Folded));
    assert_eq!(
        up.offer("g2", groups[2].clone(), now),
        Some(Offered::Folded)
    );
    assert_eq!(
        up.offer("g2", groups[2].clone(), now),
        Some(Offered::Duplicate),
        "a republished rollup"
    );
    let mut far = groups[2].clone();
    far.window_start_ms = i64::MIN;
    assert_eq!(up.offer("g2", far, now), None);
    let mut out = Vec::new();
    up.close_due(group_close(0) + RG, &mut out);
    let c = Closed::of(out);
    let r = c.rollup();
    assert_eq!(r.inputs, 3);
    assert_eq!(r.nodes.online, 12, "the corrupt member's nodes still count");
    let cpu = &r.metrics["cpu_pct"];
    assert_eq!(cpu.count, 8, "g1's cpu summary is left out");
    assert_eq!((cpu.min, cpu.max, cpu.sum), (10.0, 33.0, 46.0 + 126.0));
    assert_eq!(
        r.metrics["mem_used_pct"].count, 12,
        "g1's other metrics merged"
    );
    assert_eq!(
        r.input,
        InputStats {
            received: 6,
            folded: 3,
            malformed: 1,
            wrong_kind: 1,
            duplicate: 1,
            clock_skew: 1,
            ..Default::default()
        }
    );

    // The grid takes clusters only.
    let mut grid = UpperFold::grid(params(), rules, START);
    assert_eq!(grid.offer("c", groups[0].clone(), now), None);
    assert_eq!(grid.offer("c", r.clone(), now), Some(Offered::Folded));
    let mut out = Vec::new();
    grid.close_due(group_close(0) + 2 * RG, &mut out);
    let c = Closed::of(out);
    assert_eq!(c.rollup().input.wrong_kind, 1);
    assert_eq!(c.rollup().metrics["cpu_pct"].count, 8);
}

// ---------------------------------------------------------------------------------------------
// 6. Alarms through the fold
// ---------------------------------------------------------------------------------------------

const CPU_HOT: &str = r#"
[[aggregate.alarms]]
name = "cpu_hot"
metric = "cpu_pct"
op = ">"
threshold = 90
clear = 80

[[aggregate.alarms]]
name = "offline_in_cluster"
scope = "cluster"
metric = "nodes.offline"
op = ">="
threshold = 1
"#;

#[test]
fn flapping_cpu_raises_once_per_node() {
    let mut g = Group::new("c", "g", rules(CPU_HOT));
    let mut alarms = Vec::new();
    for k in 0..300 {
        let odd = k % 2 == 1;
        let c = g.window(
            k,
            [
                // Across the threshold, never below the clear one.
                ("flap", report(if odd { 95.0 } else { 85.0 }, 30.0)),
                // Across both thresholds, never below the clear one for three windows.
                ("spike", report(if odd { 99.0 } else { 50.0 }, 30.0)),
                ("calm", report(10.0, 30.0)),
            ],
        );
        alarms.extend(c.alarms.iter().map(|(s, e)| (k, s.clone(), e.clone())));
        let r = c.rollup();
        if k >= 1 {
            let ids: Vec<&str> = r.alarms.list.iter().map(|a| a.id.as_str()).collect();
            assert_eq!(ids, ["cpu_hot:c/g/flap", "cpu_hot:c/g/spike"], "window {k}");
            assert_eq!((r.alarms.active, r.alarms.warning), (2, 2));
            assert!(r.alarms.list.iter().all(|a| a.since_ms == group_close(1)));
            let per_node: Vec<(&str, u32)> = r
                .members
                .iter()
                .map(|m| (m.name.as_str(), m.alarms))
                .collect();
            assert_eq!(per_node, [("calm", 0), ("flap", 1), ("spike", 1)]);
        } else {
            assert_eq!(r.alarms.active, 0);
        }
    }
    let got: Vec<(i64, Scope, &str, AlarmAction, f64)> = alarms
        .iter()
        .map(|(k, s, e)| (*k, s.clone(), e.id.as_str(), e.action, e.value))
        .collect();
    let node = |n: &str| Scope::Node(NodeId::new("c", "g", n).unwrap());
    assert_eq!(
        got,
        [
            (
                1,
                node("flap"),
                "cpu_hot:c/g/flap",
                AlarmAction::Raise,
                95.0
            ),
            (
                1,
                node("spike"),
                "cpu_hot:c/g/spike",
                AlarmAction::Raise,
                99.0
            ),
        ],
        "300 windows of flapping: one raise per node, no clear"
    );
    let e = &alarms[0].2;
    assert_eq!(
        (
            e.rule.as_str(),
            e.metric.as_str(),
            e.op.as_str(),
            e.threshold,
            e.clear_threshold
        ),
        ("cpu_hot", "cpu_pct", ">", 90.0, 80.0)
    );
}

fn sensor(id: &str, kind: SensorKind, value: f64) -> SensorReading {
    SensorReading {
        id: id.into(),
        chip: id.split('/').next().unwrap_or(id).into(),
        label: "x".into(),
        kind,
        value,
        ..Default::default()
    }
}

#[test]
fn hardware_faults_and_failed_programs_raise_builtin_alarms() {
    let mut g = Group::new("c", "g", builtin_rules());
    let faulty = |hot: bool| {
        let mut r = report(20.0, 30.0);
        r.sensors = vec![
            SensorReading {
                crit: Some(100.0),
                max: Some(90.0),
                ..sensor(
                    "coretemp.0/temp1",
                    SensorKind::Temperature,
                    if hot { 101.0 } else { 60.0 },
                )
            },
            SensorReading {
                crit: Some(100.0),
                ..sensor("coretemp.0/temp2", SensorKind::Temperature, 55.0)
            },
            SensorReading {
                min: Some(300.0),
                ..sensor("nct6775.656/fan1", SensorKind::Fan, 0.0)
            },
            SensorReading {
                min: Some(300.0),
                ..sensor("nct6775.656/fan2", SensorKind::Fan, 1200.0)
            },
        ];
        r.programs = vec![
            ProgramStatus {
                name: "worker".into(),
                state: ProgramState::Error,
                restarts: 5,
                ..Default::default()
            },
            ProgramStatus {
                name: "web".into(),
                state: ProgramState::Running,
                ..Default::default()
            },
        ];
        r
    };
    let c = g.window(0, [("hw", faulty(true)), ("ok", report(20.0, 30.0))]);
    let r = c.rollup();
    let hw = Scope::Node(NodeId::new("c", "g", "hw").unwrap());
    let mut raised: Vec<(&str, Option<&str>, &str, Severity)> = c
        .alarms
        .iter()
        .map(|(s, e)| {
            assert_eq!(s, &hw);
            assert_eq!(e.action, AlarmAction::Raise);
            (
                e.rule.as_str(),
                e.instance.as_deref(),
                e.id.as_str(),
                e.severity,
            )
        })
        .collect();
    raised.sort();
    assert_eq!(
        raised,
        [
            (
                "fan_stopped",
                Some("nct6775.656/fan1"),
                "fan_stopped:c/g/hw:nct6775.656/fan1",
                Severity::Critical
            ),
            (
                "program_error",
                Some("worker"),
                "program_error:c/g/hw:worker",
                Severity::Critical
            ),
            (
                "sensor_crit",
                Some("coretemp.0/temp1"),
                "sensor_crit:c/g/hw:coretemp.0/temp1",
                Severity::Critical
            ),
        ]
    );
    assert_eq!(r.faults.over_crit, 1);
    assert_eq!(r.faults.fans_stopped, 1);
    assert_eq!(r.faults.sensors_beyond_limits, 2);
    assert_eq!(r.faults.nodes_with_faults, 1);
    assert_eq!(
        (r.programs.error, r.programs.running, r.programs.failed()),
        (1, 1, 1)
    );
    assert_eq!((r.alarms.active, r.alarms.critical), (3, 3));
    assert_eq!(r.metrics["temp_cpu_c"].max, 101.0);
    assert_eq!(r.metrics["fan_chassis_rpm"].min, 0.0, "the slowest fan");
    let line = &r.members[0];
    assert_eq!(
        (
            line.name.as_str(),
            line.faults,
            line.programs_failed,
            line.alarms
        ),
        ("hw", 2, 1, 3)
    );

    // The temperature recovers: its alarm clears after three intervals healthy, the others
    // stay up; nothing is raised twice.
    let mut later = Vec::new();
    for k in 1..=8 {
        let c = g.window(k, [("hw", faulty(false)), ("ok", report(20.0, 30.0))]);
        assert_eq!(c.rollup().faults.over_crit, 0);
        later.extend(c.alarms.iter().map(|(_, e)| (k, e.id.clone(), e.action)));
        let active = if k >= 4 { 2 } else { 3 };
        assert_eq!(c.rollup().alarms.active, active, "window {k}");
    }
    assert_eq!(
        later,
        [(
            4,
            "sensor_crit:c/g/hw:coretemp.0/temp1".to_string(),
            AlarmAction::Clear
        )]
    );
}

#[test]
fn a_cluster_rule_raises_on_an_offline_node_below() {
    let rules = rules(CPU_HOT);
    let mut g = Group::new("c", "g", rules.clone());
    let mut up = UpperFold::cluster("c", params(), rules, START);
    let mut cluster_alarms = Vec::new();
    for k in 0..15 {
        let nodes: &[&str] = if k == 0 { &["a", "b"] } else { &["a"] };
        let c = g.window(k, nodes.iter().map(|&n| (n, report(10.0, 30.0))));
        let gr = c.rollup().clone();
        let offline = u32::from(k >= 10);
        assert_eq!(gr.nodes.offline, offline, "window {k}");
        assert_eq!(up.offer("g", gr, group_close(k) + 5), Some(Offered::Folded));
        let mut out = Vec::new();
        up.close_due(group_close(k) + RG, &mut out);
        let c = Closed::of(out);
        let r = c.rollup();
        assert_eq!(r.window_start_ms, BASE + k * W);
        assert_eq!(r.nodes.offline, offline);
        cluster_alarms.extend(c.alarms.iter().map(|(s, e)| (k, s.clone(), e.clone())));
        // The cluster's list holds its own alarm and the node's, from the group rollup.
        let ids: Vec<&str> = r.alarms.list.iter().map(|a| a.id.as_str()).collect();
        if k >= 10 {
            assert_eq!(
                ids,
                ["node_offline:c/g/b", "offline_in_cluster:c"],
                "window {k}"
            );
            assert_eq!(r.alarms.active, 2);
        } else {
            assert!(ids.is_empty(), "window {k}: {ids:?}");
        }
    }
    assert_eq!(cluster_alarms.len(), 1, "{cluster_alarms:?}");
    let (k, scope, e) = &cluster_alarms[0];
    assert_eq!(*k, 10);
    assert_eq!(
        scope,
        &Scope::Cluster {
            cluster: "c".into()
        }
    );
    assert_eq!(
        (e.id.as_str(), e.action, e.value, e.ts_ms),
        (
            "offline_in_cluster:c",
            AlarmAction::Raise,
            1.0,
            group_close(10) + RG
        )
    );
}

// ---------------------------------------------------------------------------------------------
// 7. Process tables carried forward
// ---------------------------------------------------------------------------------------------

#[test]
fn a_process_table_is_carried_forward_between_samples() {
    let mut g = Group::new("c", "g", builtin_rules());
    let states = StateCounts {
        running: 3,
        waiting: 290,
        zombie: 2,
        ..Default::default()
    };
    for k in 0..12 {
        let mut sampled = report(10.0, 30.0);
        if k % 5 == 0 {
            sampled.processes = Some(ProcessSummary {
                total: 295 + k as u32,
                states,
                ..Default::default()
            });
        }
        // Node b always sends its table.
        let mut every = report(10.0, 30.0);
        every.processes = Some(ProcessSummary {
            total: 100,
            states: StateCounts {
                running: 1,
                waiting: 99,
                ..Default::default()
            },
            ..Default::default()
        });
        let c = g.window(k, [("a", sampled), ("b", every)]);
        let r = c.rollup();
        let a_total = 295 + (k - k % 5) as u64;
        assert_eq!(
            r.process_states,
            StateCounts {
                running: 4,
                waiting: 389,
                zombie: 2,
                ..Default::default()
            },
            "window {k}"
        );
        assert_eq!(r.sums.processes, a_total + 100, "window {k}");
        let p = &r.metrics["processes"];
        assert_eq!((p.count, p.max), (2, a_total as f64), "window {k}");
    }
}

#[test]
fn an_empty_member_summary_does_not_move_min_or_max() {
    let rules = builtin_rules();
    let mut groups = Vec::new();
    for (gi, base_cpu) in [10.0f32, 20.0].into_iter().enumerate() {
        let mut g = Group::new("c", &format!("g{gi}"), rules.clone());
        let c = g.window(0, [("n", report(base_cpu, 40.0))]);
        groups.push(c.rollup().clone());
    }
    // A publisher that writes a metric with no values (an older or foreign aggregator, or a
    // decode that filled in defaults): count 0, min 0, max 0, an empty sketch. Consistent, so
    // not malformed, but it holds no value either.
    groups[0]
        .metrics
        .insert("cpu_pct".into(), Default::default());
    let mut up = UpperFold::cluster("c", params(), rules, START);
    for (gi, r) in groups.into_iter().enumerate() {
        let got = up.offer(&format!("g{gi}"), r, group_close(0) + 5);
        assert_eq!(got, Some(Offered::Folded));
    }
    let mut out = Vec::new();
    up.close_due(group_close(0) + RG, &mut out);
    let c = Closed::of(out);
    let s = &c.rollup().metrics["cpu_pct"];
    assert_eq!((s.count, s.min, s.max, s.sum), (1, 20.0, 20.0, 20.0));
    assert_eq!((s.p50, s.p95), (20.0, 20.0));
    assert_eq!(c.rollup().input.malformed, 0);
}
