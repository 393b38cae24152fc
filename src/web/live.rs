//! The dashboard's real-time state, fed by its own NATS subscriptions: per node the latest
//! figures and a short history, the latest rollup per scope, the active alarms and the recent
//! events. Pushed frames are rendered from here once per tick and shared by every browser that
//! shows the same view.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use gridmon_aggregators::sample::{FaultKind, Metric, NodeSample};
use gridmon_nats::subject::path_within;
use gridmon_nats::wire::{
    self, AlarmAction, AlarmEvent, Event, Kind, NodeReport, ProgramEvent, Rollup, Severity,
};
use gridmon_nats::{Family, Parsed, Scope, Subjects};
use serde::Serialize;

/// The four resource classes of the real-time charts, in this order everywhere.
pub const RESOURCES: [&str; 4] = ["cpu", "mem", "swap", "disk"];

/// Most recent events kept for the events panel.
const EVENTS_KEPT: usize = 200;

#[derive(Debug, Clone, Copy)]
pub struct LiveSettings {
    pub points: usize,
    pub forget_after_ms: i64,
    pub stale_after: u32,
    pub offline_after: u32,
}

/// What arrived and what was skipped, since start (`/api/stats`).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct LiveStats {
    pub received: u64,
    pub node_reports: u64,
    pub rollups: u64,
    pub alarms: u64,
    pub events: u64,
    /// Did not decode, or had the wrong kind for their subject.
    pub malformed: u64,
    /// Subjects the dashboard does not show (commands, audit, inventory).
    pub ignored: u64,
    /// Frames rendered (each shared by every browser on the same view).
    pub frames_rendered: u64,
}

#[derive(Debug, Clone, Copy)]
struct Point {
    t_ms: i64,
    v: [f32; 4],
}

#[derive(Debug, Clone, Serialize)]
pub struct FaultLine {
    /// `temperature`, `fan`, `voltage` (hardware) or `crashed`, `error` (programs).
    pub kind: &'static str,
    pub hardware: bool,
    pub instance: String,
    pub value: f64,
}

#[derive(Debug)]
struct NodeLive {
    cluster: String,
    group: String,
    node: String,
    interval_ms: u32,
    /// Local clock when the last report arrived.
    seen_ms: i64,
    points: VecDeque<Point>,
    temp_max: Option<f32>,
    faults: Vec<FaultLine>,
    programs_failed: u32,
    report: Bytes,
    /// The last report that carried a process table.
    table: Option<Bytes>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AlarmLine {
    pub id: String,
    pub scope: String,
    pub rule: String,
    pub severity: Severity,
    pub metric: String,
    pub instance: Option<String>,
    pub value: f64,
    pub raised_ms: i64,
    pub message: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct EventLine {
    pub ts_ms: i64,
    pub scope: String,
    pub kind: String,
    pub message: String,
}

/// One tick of a cluster: time, then mean and max of each resource.
type ClusterPoint = (i64, [Option<f32>; 4], [Option<f32>; 4]);

/// Sums, counts and maxima of the resources over a cluster's online nodes.
#[derive(Debug, Clone, Copy)]
struct Acc {
    sum: [f64; 4],
    count: [u32; 4],
    max: [f32; 4],
}

#[derive(Debug)]
pub struct Live {
    settings: LiveSettings,
    subjects: Subjects,
    nodes: BTreeMap<String, NodeLive>,
    rollups: BTreeMap<String, Rollup>,
    alarms: BTreeMap<String, AlarmLine>,
    events: VecDeque<EventLine>,
    /// Per cluster: time, mean and max of each resource over its online nodes, one per tick.
    series: BTreeMap<String, VecDeque<ClusterPoint>>,
    pub stats: LiveStats,
    tick: u64,
    cache: HashMap<String, (u64, Arc<str>)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Liveness {
    Online,
    Stale,
    Offline,
}

fn opt(v: f32) -> Option<f32> {
    v.is_finite().then_some(v)
}

fn key(cluster: &str, group: &str, node: &str) -> String {
    format!("{cluster}/{group}/{node}")
}

impl Live {
    pub fn new(settings: LiveSettings, subjects: Subjects) -> Self {
        Self {
            settings,
            subjects,
            nodes: BTreeMap::new(),
            rollups: BTreeMap::new(),
            alarms: BTreeMap::new(),
            events: VecDeque::new(),
            series: BTreeMap::new(),
            stats: LiveStats::default(),
            tick: 0,
            cache: HashMap::new(),
        }
    }

    /// Takes one message from the bus. Never fails: what does not decode is counted.
    /// `telemetry`: it came from a telemetry wildcard, which also matches some non-telemetry
    /// subjects; those are taken from their own family subscription instead.
    pub fn accept(&mut self, subject: &str, payload: Bytes, telemetry: bool, now_ms: i64) {
        self.stats.received += 1;
        let parsed = match self.subjects.parse(subject) {
            Ok(p) => p,
            Err(_) => {
                self.stats.ignored += 1;
                return;
            }
        };
        let ok = match parsed {
            Parsed::Other(..) if telemetry => {
                self.stats.ignored += 1;
                true
            }
            Parsed::Telemetry(_) if !telemetry => {
                self.stats.ignored += 1;
                true
            }
            Parsed::Telemetry(Scope::Node(id)) => {
                self.node_report(&id.cluster, &id.group, &id.node, payload, now_ms)
            }
            Parsed::Telemetry(scope) => self.take_rollup(&scope, &payload),
            Parsed::Other(Family::Alarm, scope) => self.alarm(&scope, &payload),
            Parsed::Other(Family::Event, scope) => self.event(&scope, &payload),
            Parsed::Other(..) => {
                self.stats.ignored += 1;
                true
            }
        };
        if !ok {
            self.stats.malformed += 1;
        }
    }

    fn node_report(
        &mut self,
        cluster: &str,
        group: &str,
        node: &str,
        payload: Bytes,
        now_ms: i64,
    ) -> bool {
        // The skim cuts the process rows out before decoding (docs/benchmarks.md: 4× faster on
        // a 500-process report than serde skipping them).
        let Ok(env) = gridmon_nats::skim::decode_report_view(&payload) else {
            return false;
        };
        if env.source.group.as_deref() != Some(group)
            || env.source.node.as_deref() != Some(node)
            || env.source.cluster != cluster
        {
            return false;
        }
        self.stats.node_reports += 1;
        let r = &env.body;
        let s = NodeSample::from_report(r);
        let get = |m: Metric| s.get(m).map_or(f32::NAN, |v| v as f32);
        let point = Point {
            t_ms: env.ts_ms,
            v: [
                get(Metric::CpuPct),
                get(Metric::MemUsedPct),
                get(Metric::SwapUsedPct),
                get(Metric::DiskBusyPct),
            ],
        };
        let faults = s
            .fault_list
            .iter()
            .map(|f| {
                let (kind, hardware) = match f.kind {
                    FaultKind::SensorCrit => ("temperature", true),
                    FaultKind::FanStopped => ("fan", true),
                    FaultKind::VoltageRange => ("voltage", true),
                    FaultKind::ProgramCrashed => ("crashed", false),
                    FaultKind::ProgramError => ("error", false),
                };
                FaultLine {
                    kind,
                    hardware,
                    instance: f.instance.to_string(),
                    value: f.value,
                }
            })
            .collect();
        let points = self.settings.points;
        let k = key(cluster, group, node);
        let n = self.nodes.entry(k).or_insert_with(|| NodeLive {
            cluster: cluster.into(),
            group: group.into(),
            node: node.into(),
            interval_ms: 1000,
            seen_ms: now_ms,
            points: VecDeque::with_capacity(points),
            temp_max: None,
            faults: Vec::new(),
            programs_failed: 0,
            report: Bytes::new(),
            table: None,
        });
        n.interval_ms = r.interval_ms.max(1);
        n.seen_ms = now_ms;
        // Reports out of order (a spool flushing) go into the history where they belong.
        let at = n.points.partition_point(|p| p.t_ms <= point.t_ms);
        if at == n.points.len() || n.points[at].t_ms != point.t_ms {
            n.points.insert(at, point);
        }
        while n.points.len() > points {
            n.points.pop_front();
        }
        n.temp_max = s.temp_max().map(|t| t as f32);
        n.faults = faults;
        n.programs_failed = s.programs.failed();
        // A copy: the payload is a slice of the client's read buffer, and keeping a slice alive
        // per node would pin whole buffers (the RSS grew with the size of the reads).
        let own = Bytes::copy_from_slice(&payload);
        if r.processes.is_some() {
            n.table = Some(own.clone());
        }
        n.report = own;
        true
    }

    fn take_rollup(&mut self, scope: &Scope, payload: &[u8]) -> bool {
        let Ok(env) = wire::decode::<Rollup>(payload, Kind::Rollup) else {
            return false;
        };
        self.stats.rollups += 1;
        let k = match scope {
            Scope::Grid => String::new(),
            other => other.to_string(),
        };
        if matches!(scope, Scope::Grid) {
            self.alarms_from_rollup(&env.body);
        }
        self.rollups.insert(k, env.body);
        true
    }

    /// The grid rollup lists every active alarm (when there are at most `ALARM_LIST_MAX`): it
    /// is the truth at its window's close, so a dashboard started after an alarm was raised
    /// shows it, and one that missed a clear drops it. Raises newer than the window are kept.
    fn alarms_from_rollup(&mut self, r: &Rollup) {
        if r.alarms.list.len() != r.alarms.active as usize {
            return;
        }
        let closed = r.window_start_ms.saturating_add(i64::from(r.window_ms));
        self.alarms.retain(|_, a| a.raised_ms >= closed);
        for a in &r.alarms.list {
            self.alarms
                .entry(a.id.clone())
                .or_insert_with(|| AlarmLine {
                    id: a.id.clone(),
                    scope: a.scope.clone(),
                    rule: a.rule.clone(),
                    severity: a.severity,
                    metric: a.rule.clone(),
                    instance: a.instance.clone(),
                    value: a.value,
                    raised_ms: a.since_ms,
                    message: match &a.instance {
                        Some(i) => format!("{}: {} {i}", a.scope, a.rule),
                        None => format!("{}: {}", a.scope, a.rule),
                    },
                });
        }
    }

    fn alarm(&mut self, scope: &Scope, payload: &[u8]) -> bool {
        let Ok(env) = wire::decode::<AlarmEvent>(payload, Kind::Alarm) else {
            return false;
        };
        self.stats.alarms += 1;
        let a = env.body;
        self.push_event(EventLine {
            ts_ms: a.ts_ms,
            scope: scope.to_string(),
            kind: format!("alarm_{}", a.action.as_str()),
            message: a.message.clone(),
        });
        match a.action {
            AlarmAction::Raise => {
                self.alarms.insert(
                    a.id.clone(),
                    AlarmLine {
                        id: a.id,
                        scope: scope.to_string(),
                        rule: a.rule,
                        severity: a.severity,
                        metric: a.metric,
                        instance: a.instance,
                        value: a.value,
                        raised_ms: a.raised_ms,
                        message: a.message,
                    },
                );
            }
            AlarmAction::Clear => {
                self.alarms.remove(&a.id);
            }
        }
        true
    }

    fn event(&mut self, scope: &Scope, payload: &[u8]) -> bool {
        let Ok(h) = wire::peek(payload) else {
            return false;
        };
        let line = match h.kind {
            Kind::Event => match wire::decode::<Event>(payload, Kind::Event) {
                Ok(e) => EventLine {
                    ts_ms: e.ts_ms,
                    scope: scope.to_string(),
                    kind: e.body.event.as_str().into(),
                    message: e.body.message,
                },
                Err(_) => return false,
            },
            Kind::ProgramEvent => match wire::decode::<ProgramEvent>(payload, Kind::ProgramEvent) {
                Ok(e) => EventLine {
                    ts_ms: e.ts_ms,
                    scope: scope.to_string(),
                    kind: "program".into(),
                    message: format!(
                        "{}: {} → {}",
                        e.body.program,
                        e.body.from.as_str(),
                        e.body.to.as_str()
                    ),
                },
                Err(_) => return false,
            },
            _ => return false,
        };
        self.stats.events += 1;
        self.push_event(line);
        true
    }

    fn push_event(&mut self, e: EventLine) {
        if self.events.len() == EVENTS_KEPT {
            self.events.pop_front();
        }
        self.events.push_back(e);
    }

    fn liveness(&self, n: &NodeLive, now_ms: i64) -> Liveness {
        let age = now_ms.saturating_sub(n.seen_ms);
        let iv = i64::from(n.interval_ms);
        if age > iv * i64::from(self.settings.offline_after) {
            Liveness::Offline
        } else if age > iv * i64::from(self.settings.stale_after) {
            Liveness::Stale
        } else {
            Liveness::Online
        }
    }

    /// Once per push period: forgets long-silent nodes, appends a point to each cluster's
    /// series, and starts a new frame generation.
    pub fn tick(&mut self, now_ms: i64) {
        let forget = self.settings.forget_after_ms;
        self.nodes
            .retain(|_, n| now_ms.saturating_sub(n.seen_ms) <= forget);
        let mut acc: BTreeMap<&str, Acc> = BTreeMap::new();
        for n in self.nodes.values() {
            let e = acc.entry(n.cluster.as_str()).or_insert(Acc {
                sum: [0.0; 4],
                count: [0; 4],
                max: [f32::NAN; 4],
            });
            if self.liveness(n, now_ms) != Liveness::Online {
                continue;
            }
            let Some(p) = n.points.back() else { continue };
            for i in 0..4 {
                if p.v[i].is_finite() {
                    e.sum[i] += f64::from(p.v[i]);
                    e.count[i] += 1;
                    e.max[i] = if e.max[i].is_nan() {
                        p.v[i]
                    } else {
                        e.max[i].max(p.v[i])
                    };
                }
            }
        }
        let points = self.settings.points;
        for (cluster, a) in acc {
            let mean = std::array::from_fn(|i| {
                (a.count[i] > 0).then(|| (a.sum[i] / f64::from(a.count[i])) as f32)
            });
            let max = std::array::from_fn(|i| opt(a.max[i]));
            let s = self.series.entry(cluster.to_string()).or_default();
            s.push_back((now_ms, mean, max));
            while s.len() > points {
                s.pop_front();
            }
        }
        let nodes = &self.nodes;
        self.series
            .retain(|c, _| nodes.values().any(|n| &n.cluster == c));
        self.tick += 1;
        self.cache.retain(|_, (t, _)| *t + 1 >= self.tick);
    }

    /// The frame for `view` at the current tick, rendered once and shared.
    pub fn frame(&mut self, view: &View, now_ms: i64) -> Arc<str> {
        let k = view.cache_key();
        if let Some((t, f)) = self.cache.get(&k) {
            if *t == self.tick {
                return f.clone();
            }
        }
        let json = match view {
            View::Grid => serde_json::to_string(&self.grid_frame(now_ms)),
            View::Cluster(c) => serde_json::to_string(&self.cluster_frame(c, now_ms)),
            View::Node(id) => serde_json::to_string(&self.node_frame(id, now_ms)),
        };
        let f: Arc<str> = json
            .unwrap_or_else(|e| format!("{{\"error\":{:?}}}", e.to_string()))
            .into();
        self.stats.frames_rendered += 1;
        self.cache.insert(k, (self.tick, f.clone()));
        f
    }

    fn alarms_under(&self, prefix: &str) -> Vec<&AlarmLine> {
        let mut v: Vec<&AlarmLine> = self
            .alarms
            .values()
            .filter(|a| path_within(&a.scope, prefix))
            .collect();
        v.sort_by(|a, b| {
            b.severity
                .cmp(&a.severity)
                .then(b.raised_ms.cmp(&a.raised_ms))
        });
        v.truncate(200);
        v
    }

    fn events_under(&self, prefix: &str) -> Vec<&EventLine> {
        self.events
            .iter()
            .rev()
            .filter(|e| path_within(&e.scope, prefix))
            .take(50)
            .collect()
    }

    fn faults_of<'a>(&'a self, nodes: impl Iterator<Item = &'a NodeLive>) -> Vec<NodeFault<'a>> {
        let mut out = Vec::new();
        for n in nodes {
            for f in &n.faults {
                out.push(NodeFault {
                    node: key(&n.cluster, &n.group, &n.node),
                    fault: f,
                });
                if out.len() >= 500 {
                    return out;
                }
            }
        }
        out
    }

    pub fn grid_frame(&self, now_ms: i64) -> GridFrame<'_> {
        let mut clusters: BTreeMap<&str, ClusterLine> = BTreeMap::new();
        for n in self.nodes.values() {
            let c = clusters
                .entry(n.cluster.as_str())
                .or_insert_with(|| ClusterLine {
                    name: n.cluster.clone(),
                    ..Default::default()
                });
            match self.liveness(n, now_ms) {
                Liveness::Online => c.online += 1,
                Liveness::Stale => c.stale += 1,
                Liveness::Offline => c.offline += 1,
            }
            c.faults += n.faults.iter().filter(|f| f.hardware).count() as u32;
            c.programs_failed += n.programs_failed;
        }
        for (name, c) in clusters.iter_mut() {
            if let Some(last) = self.series.get(*name).and_then(|s| s.back()) {
                c.mean = last.1;
                c.max = last.2;
            }
            c.alarms = self.alarms_under(name).len() as u32;
        }
        GridFrame {
            ts_ms: now_ms,
            resources: RESOURCES,
            clusters: clusters.into_values().collect(),
            faults: self.faults_of(self.nodes.values()),
            alarms: self.alarms_under(""),
            events: self.events_under(""),
        }
    }

    pub fn cluster_frame(&self, cluster: &str, now_ms: i64) -> ClusterFrame<'_> {
        let members = self.nodes.values().filter(|n| n.cluster == cluster);
        let nodes = members
            .clone()
            .map(|n| {
                let last = n.points.back().map_or([f32::NAN; 4], |p| p.v);
                NodeBar {
                    id: format!("{}/{}", n.group, n.node),
                    status: self.liveness(n, now_ms),
                    v: last.map(opt),
                    temp_max: n.temp_max,
                    faults: n.faults.iter().filter(|f| f.hardware).count() as u32,
                    programs_failed: n.programs_failed,
                }
            })
            .collect();
        let series = self.series.get(cluster);
        let t = series.map_or_else(Vec::new, |s| s.iter().map(|p| p.0).collect());
        let col = |i: usize, max: bool| -> Vec<Option<f32>> {
            series.map_or_else(Vec::new, |s| {
                s.iter()
                    .map(|p| if max { p.2[i] } else { p.1[i] })
                    .collect()
            })
        };
        ClusterFrame {
            ts_ms: now_ms,
            cluster: cluster.to_string(),
            resources: RESOURCES,
            nodes,
            series: SeriesOut {
                t,
                mean: (0..4).map(|i| col(i, false)).collect(),
                max: (0..4).map(|i| col(i, true)).collect(),
            },
            faults: self.faults_of(members),
            alarms: self.alarms_under(cluster),
            events: self.events_under(cluster),
        }
    }

    pub fn node_frame(&self, id: &str, now_ms: i64) -> NodeFrame<'_> {
        let Some(n) = self.nodes.get(id) else {
            return NodeFrame {
                ts_ms: now_ms,
                node: id.to_string(),
                found: false,
                status: Liveness::Offline,
                seen_ms: None,
                series: SeriesOut::default(),
                report: None,
                faults: Vec::new(),
                alarms: self.alarms_under(id),
                events: self.events_under(id),
            };
        };
        let report = wire::decode::<NodeReport>(&n.report, Kind::NodeReport)
            .ok()
            .map(|mut e| {
                // The table comes with its own (slower) reports; the charts need no rows.
                e.body.processes = None;
                e
            });
        NodeFrame {
            ts_ms: now_ms,
            node: id.to_string(),
            found: true,
            status: self.liveness(n, now_ms),
            seen_ms: Some(n.seen_ms),
            series: SeriesOut {
                t: n.points.iter().map(|p| p.t_ms).collect(),
                mean: (0..4)
                    .map(|i| n.points.iter().map(|p| opt(p.v[i])).collect())
                    .collect(),
                max: Vec::new(),
            },
            report,
            faults: n.faults.iter().collect(),
            alarms: self.alarms_under(id),
            events: self.events_under(id),
        }
    }

    /// The latest process table of a node, decoded.
    pub fn process_table(&self, id: &str) -> Option<(i64, wire::ProcessTable)> {
        let n = self.nodes.get(id)?;
        let e = wire::decode::<NodeReport>(n.table.as_ref()?, Kind::NodeReport).ok()?;
        Some((e.ts_ms, e.body.processes?))
    }

    pub fn rollup(&self, scope: &str) -> Option<&Rollup> {
        self.rollups.get(scope)
    }

    /// The known nodes, `cluster/group/node`, sorted.
    pub fn node_ids(&self) -> impl Iterator<Item = &str> {
        self.nodes.keys().map(String::as_str)
    }

    pub fn has_node(&self, id: &str) -> bool {
        self.nodes.contains_key(id)
    }

    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }
}

/// What a browser watches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum View {
    Grid,
    Cluster(String),
    /// `cluster/group/node`.
    Node(String),
}

impl View {
    fn cache_key(&self) -> String {
        match self {
            Self::Grid => "g".into(),
            Self::Cluster(c) => format!("c:{c}"),
            Self::Node(n) => format!("n:{n}"),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct NodeFault<'a> {
    pub node: String,
    #[serde(flatten)]
    pub fault: &'a FaultLine,
}

#[derive(Debug, Default, Serialize)]
pub struct ClusterLine {
    pub name: String,
    pub online: u32,
    pub stale: u32,
    pub offline: u32,
    /// Mean and max of [`RESOURCES`] over the online nodes, latest tick.
    pub mean: [Option<f32>; 4],
    pub max: [Option<f32>; 4],
    pub faults: u32,
    pub programs_failed: u32,
    pub alarms: u32,
}

#[derive(Debug, Serialize)]
pub struct GridFrame<'a> {
    pub ts_ms: i64,
    pub resources: [&'static str; 4],
    pub clusters: Vec<ClusterLine>,
    pub faults: Vec<NodeFault<'a>>,
    pub alarms: Vec<&'a AlarmLine>,
    pub events: Vec<&'a EventLine>,
}

#[derive(Debug, Serialize)]
pub struct NodeBar {
    /// `group/node`.
    pub id: String,
    pub status: Liveness,
    /// Latest [`RESOURCES`] values, percent.
    pub v: [Option<f32>; 4],
    pub temp_max: Option<f32>,
    pub faults: u32,
    pub programs_failed: u32,
}

/// Time series for uPlot: `t` in ms, then one array per resource.
#[derive(Debug, Default, Serialize)]
pub struct SeriesOut {
    pub t: Vec<i64>,
    pub mean: Vec<Vec<Option<f32>>>,
    pub max: Vec<Vec<Option<f32>>>,
}

#[derive(Debug, Serialize)]
pub struct ClusterFrame<'a> {
    pub ts_ms: i64,
    pub cluster: String,
    pub resources: [&'static str; 4],
    pub nodes: Vec<NodeBar>,
    pub series: SeriesOut,
    pub faults: Vec<NodeFault<'a>>,
    pub alarms: Vec<&'a AlarmLine>,
    pub events: Vec<&'a EventLine>,
}

#[derive(Debug, Serialize)]
pub struct NodeFrame<'a> {
    pub ts_ms: i64,
    pub node: String,
    pub found: bool,
    pub status: Liveness,
    pub seen_ms: Option<i64>,
    /// `mean` holds the node's own values.
    pub series: SeriesOut,
    /// The latest report without its process rows (`/api/nodes/…/processes` has them).
    pub report: Option<wire::Envelope<NodeReport>>,
    pub faults: Vec<&'a FaultLine>,
    pub alarms: Vec<&'a AlarmLine>,
    pub events: Vec<&'a EventLine>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use gridmon_nats::wire::{
        CpuMetrics, DiskMetrics, Envelope, HostMetrics, MemoryMetrics, SensorKind, SensorReading,
        Source, SCHEMA_VERSION,
    };
    use gridmon_nats::NodeId;

    fn settings() -> LiveSettings {
        LiveSettings {
            points: 3,
            forget_after_ms: 60_000,
            stale_after: 3,
            offline_after: 10,
        }
    }

    fn report(node: &str, ts_ms: i64, cpu: f32, hot: bool) -> Bytes {
        let id = NodeId::new("c1", "g1", node).unwrap();
        let env = Envelope {
            schema: SCHEMA_VERSION,
            kind: Kind::NodeReport,
            source: Source::from(&id),
            ts_ms,
            run_id: 1,
            seq: 1,
            body: NodeReport {
                interval_ms: 1000,
                host: Some(HostMetrics {
                    cpu: CpuMetrics {
                        total_pct: cpu,
                        ..Default::default()
                    },
                    memory: MemoryMetrics {
                        total_bytes: 100,
                        used_bytes: 25,
                        swap_total_bytes: 10,
                        swap_used_bytes: 1,
                        ..Default::default()
                    },
                    disks: vec![DiskMetrics {
                        name: "sda".into(),
                        busy_pct: 40.0,
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                sensors: vec![SensorReading {
                    id: "coretemp.0/temp1".into(),
                    kind: SensorKind::Temperature,
                    value: if hot { 105.0 } else { 50.0 },
                    crit: Some(100.0),
                    alarm: hot,
                    ..Default::default()
                }],
                ..Default::default()
            },
        };
        wire::encode(&env).unwrap().into()
    }

    #[test]
    fn reports_become_points_faults_and_frames() {
        let mut live = Live::new(settings(), Subjects::new("grid").unwrap());
        for (i, t) in [1000, 2000, 3000, 4000].into_iter().enumerate() {
            live.accept(
                "grid.c1.g1.a",
                report("a", t, 10.0 * i as f32, false),
                true,
                t,
            );
        }
        live.accept("grid.c1.g1.b", report("b", 4000, 90.0, true), true, 4000);
        // Out of order: lands in its place, and only `points` are kept.
        live.accept("grid.c1.g1.a", report("a", 3500, 99.0, false), true, 4100);
        live.tick(4500);
        let f = live.cluster_frame("c1", 4500);
        assert_eq!(f.nodes.len(), 2);
        assert_eq!(
            f.nodes[0].v,
            [Some(30.0), Some(25.0), Some(10.0), Some(40.0)]
        );
        assert_eq!(f.series.t, vec![4500]);
        assert_eq!(f.series.mean[0], vec![Some(60.0)]);
        assert_eq!(f.series.max[0], vec![Some(90.0)]);
        assert_eq!(f.faults.len(), 1);
        assert_eq!(
            (f.faults[0].node.as_str(), f.faults[0].fault.kind),
            ("c1/g1/b", "temperature")
        );
        let n = live.node_frame("c1/g1/a", 4500);
        assert_eq!(n.series.t, vec![3000, 3500, 4000]);
        assert_eq!(n.series.mean[0], vec![Some(20.0), Some(99.0), Some(30.0)]);
        // Liveness by each node's own interval: b is stale after 3 s, offline after 10 s.
        assert_eq!(
            live.cluster_frame("c1", 8000).nodes[1].status,
            Liveness::Stale
        );
        assert_eq!(
            live.cluster_frame("c1", 15_000).nodes[1].status,
            Liveness::Offline
        );
        let g = live.grid_frame(8000);
        assert_eq!((g.clusters[0].online, g.clusters[0].stale), (0, 2));
    }

    #[test]
    fn bad_and_foreign_messages_are_counted_not_kept() {
        let mut live = Live::new(settings(), Subjects::new("grid").unwrap());
        live.accept("grid.c1.g1.a", Bytes::from_static(b"\xc1garbage"), true, 1);
        // The payload names node `a`, the subject node `b`.
        live.accept("grid.c1.g1.b", report("a", 1, 1.0, false), true, 1);
        live.accept("other.c1.g1.a", report("a", 1, 1.0, false), true, 1);
        live.accept("grid.alarm.c1.g1", report("a", 1, 1.0, false), true, 1);
        assert_eq!(live.stats.malformed, 2);
        assert_eq!(live.stats.ignored, 2);
        assert_eq!(live.node_count(), 0);
        // Frames are rendered once per tick and shared.
        live.tick(10);
        let a = live.frame(&View::Grid, 10);
        let b = live.frame(&View::Grid, 11);
        assert!(Arc::ptr_eq(&a, &b));
        live.tick(20);
        assert!(!Arc::ptr_eq(&a, &live.frame(&View::Grid, 20)));
        assert_eq!(live.stats.frames_rendered, 2);
    }

    #[test]
    fn the_grid_rollup_is_the_truth_about_active_alarms() {
        use gridmon_nats::wire::{ActiveAlarm, AlarmSummary, Level};
        let mut live = Live::new(settings(), Subjects::new("grid").unwrap());
        let alarm = |id: &str| ActiveAlarm {
            id: id.into(),
            rule: "sensor_crit".into(),
            severity: Severity::Critical,
            scope: "c1/g1/a".into(),
            instance: Some("t1".into()),
            value: 1.0,
            since_ms: 500,
        };
        let rollup = |list: Vec<ActiveAlarm>| {
            let env = Envelope {
                schema: SCHEMA_VERSION,
                kind: Kind::Rollup,
                source: Source::default(),
                ts_ms: 2000,
                run_id: 1,
                seq: 1,
                body: Rollup {
                    level: Level::Grid,
                    window_start_ms: 1000,
                    window_ms: 1000,
                    alarms: AlarmSummary {
                        active: list.len() as u32,
                        list,
                        ..Default::default()
                    },
                    ..Default::default()
                },
            };
            Bytes::from(wire::encode(&env).unwrap())
        };
        // Raised before this dashboard started: known from the rollup alone.
        live.accept("grid", rollup(vec![alarm("x")]), true, 2000);
        assert_eq!(live.alarms_under("").len(), 1);
        // Its clear was missed: the next rollup no longer lists it.
        live.accept("grid", rollup(vec![]), true, 3000);
        assert!(live.alarms_under("").is_empty());
    }

    #[test]
    fn silent_nodes_are_forgotten() {
        let mut live = Live::new(settings(), Subjects::new("grid").unwrap());
        live.accept("grid.c1.g1.a", report("a", 0, 1.0, false), true, 0);
        live.tick(30_000);
        assert_eq!(live.node_count(), 1);
        live.tick(61_000);
        assert_eq!(live.node_count(), 0);
        assert!(live.grid_frame(61_000).clusters.is_empty());
    }
}
