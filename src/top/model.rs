//! What `gridmon top` knows about the grid: the latest rollup of every scope and the reports of
//! the nodes being looked at, decoded from the bus. No terminal, no NATS client: messages are
//! handed in as (subject, bytes), so every rule here is unit-tested.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use gridmon_nats::wire::{
    self, AlarmAction, AlarmEvent, Kind, MemberLine, NodeReport, ProcessTable, ProgramStatus,
    Rollup,
};
use gridmon_nats::{Family, NodeId, Parsed, Scope, Subjects};

/// Most node states kept; the oldest is dropped beyond it (only watched nodes are ever added).
const MAX_NODES: usize = 32;

/// A value and when it arrived.
#[derive(Debug, Clone)]
pub struct Seen<T> {
    pub value: T,
    pub at: Instant,
}

/// One node's latest report, and its latest process table (which travels only in some reports).
#[derive(Debug, Clone)]
pub struct NodeState {
    /// The latest report, its `processes` taken out into `table`.
    pub report: Seen<NodeReport>,
    pub table: Option<Seen<ProcessTable>>,
}

/// The most recent alarm event, for the status line.
#[derive(Debug, Clone)]
pub struct AlarmNote {
    pub scope: String,
    pub event: AlarmEvent,
    pub at: Instant,
}

/// What a message changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    Rollup(Scope),
    Report(NodeId),
    Alarm,
    /// Not something the view shows (another family, a foreign subject).
    Ignored,
    /// Did not decode, or contradicts its subject: counted in [`Store::bad`] and skipped.
    Bad,
}

#[derive(Debug, Default)]
pub struct Store {
    pub grid: Option<Seen<Rollup>>,
    /// The grid put together from the cluster rollups, for when no aggregator serves the grid
    /// scope (`--serve` without `grid`): shown until a real grid rollup arrives.
    pub grid_from_clusters: Option<Seen<Rollup>>,
    pub clusters: BTreeMap<String, Seen<Rollup>>,
    pub groups: BTreeMap<(String, String), Seen<Rollup>>,
    pub nodes: HashMap<NodeId, NodeState>,
    pub last_alarm: Option<AlarmNote>,
    /// Messages that did not decode (or whose source disagrees with the subject), skipped.
    pub bad: u64,
}

impl Store {
    /// Takes one message from the bus.
    pub fn apply(
        &mut self,
        subjects: &Subjects,
        subject: &str,
        payload: &[u8],
        now: Instant,
    ) -> Applied {
        match subjects.parse(subject) {
            Ok(Parsed::Telemetry(Scope::Node(id))) => self.apply_report(&id, payload, now),
            Ok(Parsed::Telemetry(scope)) => self.apply_rollup(scope, payload, now),
            Ok(Parsed::Other(Family::Alarm, scope)) => self.apply_alarm(scope, payload, now),
            Ok(Parsed::Other(..)) | Err(_) => Applied::Ignored,
        }
    }

    fn apply_rollup(&mut self, scope: Scope, payload: &[u8], now: Instant) -> Applied {
        let env = match wire::decode::<Rollup>(payload, Kind::Rollup) {
            Ok(env) => env,
            Err(e) => return self.bad(&scope.to_string(), &e),
        };
        let seen = Seen {
            value: env.body,
            at: now,
        };
        match &scope {
            Scope::Grid => self.grid = Some(seen),
            Scope::Cluster { cluster } => {
                self.clusters.insert(cluster.clone(), seen);
                if self.grid.is_none() {
                    self.grid_from_clusters = Some(Seen {
                        value: grid_of(self.clusters.iter().map(|(n, r)| (n, &r.value))),
                        at: now,
                    });
                }
            }
            Scope::Group { cluster, group } => {
                self.groups.insert((cluster.clone(), group.clone()), seen);
            }
            Scope::Node(_) => return Applied::Ignored,
        }
        Applied::Rollup(scope)
    }

    /// A node report, from the node's subject or as the answer to a report request.
    pub fn apply_report(&mut self, id: &NodeId, payload: &[u8], now: Instant) -> Applied {
        let env = match wire::decode::<NodeReport>(payload, Kind::NodeReport) {
            Ok(env) => env,
            Err(e) => return self.bad(&id.to_string(), &e),
        };
        let s = &env.source;
        if s.cluster != id.cluster
            || s.group.as_deref() != Some(id.group.as_str())
            || s.node.as_deref() != Some(id.node.as_str())
        {
            return self.bad(&id.to_string(), &"the source disagrees with the subject");
        }
        let mut report = env.body;
        let table = report.processes.take().map(|t| Seen { value: t, at: now });
        let report = Seen {
            value: report,
            at: now,
        };
        match self.nodes.get_mut(id) {
            Some(state) => {
                state.report = report;
                if table.is_some() {
                    state.table = table;
                }
            }
            None => {
                if self.nodes.len() >= MAX_NODES {
                    let oldest = self
                        .nodes
                        .iter()
                        .min_by_key(|(_, s)| s.report.at)
                        .map(|(k, _)| k.clone());
                    if let Some(k) = oldest {
                        self.nodes.remove(&k);
                    }
                }
                self.nodes.insert(id.clone(), NodeState { report, table });
            }
        }
        Applied::Report(id.clone())
    }

    fn apply_alarm(&mut self, scope: Scope, payload: &[u8], now: Instant) -> Applied {
        let env = match wire::decode::<AlarmEvent>(payload, Kind::Alarm) {
            Ok(env) => env,
            Err(e) => return self.bad(&scope.to_string(), &e),
        };
        self.last_alarm = Some(AlarmNote {
            scope: scope.to_string(),
            event: env.body,
            at: now,
        });
        Applied::Alarm
    }

    fn bad(&mut self, what: &str, e: &dyn std::fmt::Display) -> Applied {
        self.bad += 1;
        if self.bad == 1 {
            tracing::warn!(scope = what, error = %e, "undecodable message skipped (counted from now on)");
        } else {
            tracing::debug!(scope = what, error = %e, "undecodable message skipped");
        }
        Applied::Bad
    }

    /// A command's reply carries the programs' new states: shown before the next report.
    pub fn update_programs(&mut self, id: &NodeId, programs: &[ProgramStatus]) {
        let Some(state) = self.nodes.get_mut(id) else {
            return;
        };
        for p in programs {
            if let Some(old) = state
                .report
                .value
                .programs
                .iter_mut()
                .find(|o| o.name == p.name)
            {
                *old = p.clone();
            }
        }
    }

    /// The rollup a place's member list comes from (a node has none).
    pub fn rollup(&self, place: &Place) -> Option<&Seen<Rollup>> {
        match place {
            Place::Grid => self.grid.as_ref().or(self.grid_from_clusters.as_ref()),
            Place::Cluster(c) => self.clusters.get(c),
            Place::Group(c, g) => self.groups.get(&(c.clone(), g.clone())),
            Place::Node(_) => None,
        }
    }

    /// The members listed at a place (clusters, groups or nodes), as the rollup orders them.
    pub fn members(&self, place: &Place) -> &[MemberLine] {
        self.rollup(place)
            .map_or(&[], |r| r.value.members.as_slice())
    }

    /// A node's line in its group's rollup: its liveness and summary.
    pub fn member_line(&self, id: &NodeId) -> Option<&MemberLine> {
        self.groups
            .get(&(id.cluster.clone(), id.group.clone()))?
            .value
            .members
            .iter()
            .find(|m| m.name == id.node)
    }
}

/// A grid rollup from cluster rollups: one member line per cluster, the node counts, faults,
/// programs and alarms summed. Means are of the clusters' figures (the sketches are not merged:
/// this is a stand-in for the grid aggregator, not a replacement).
fn grid_of<'a>(clusters: impl Iterator<Item = (&'a String, &'a Rollup)>) -> Rollup {
    let mut g = Rollup {
        level: wire::Level::Grid,
        ..Default::default()
    };
    for (name, r) in clusters {
        let mean = |m: &str| r.metrics.get(m).map(|s| s.mean as f32);
        let max = |m: &str| r.metrics.get(m).map(|s| s.max as f32);
        g.window_start_ms = g.window_start_ms.max(r.window_start_ms);
        g.window_ms = r.window_ms;
        g.nodes.merge(&r.nodes);
        g.faults.merge(&r.faults);
        g.programs.merge(&r.programs);
        g.alarms.active += r.alarms.active;
        g.alarms.critical += r.alarms.critical;
        g.alarms.warning += r.alarms.warning;
        g.alarms.info += r.alarms.info;
        g.alarms.list.extend(r.alarms.list.iter().cloned());
        g.members.push(MemberLine {
            name: name.clone(),
            status: if r.nodes.online > 0 {
                wire::MemberStatus::Online
            } else if r.nodes.stale > 0 {
                wire::MemberStatus::Stale
            } else {
                wire::MemberStatus::Offline
            },
            last_seen_ms: r.window_start_ms.saturating_add(i64::from(r.window_ms)),
            nodes: r.nodes,
            cpu_pct: mean("cpu_pct"),
            cpu_max_pct: max("cpu_pct"),
            mem_used_pct: mean("mem_used_pct"),
            disk_busy_pct: mean("disk_busy_pct"),
            net_rx_bytes_ps: r.sums.net_rx_bytes_ps,
            net_tx_bytes_ps: r.sums.net_tx_bytes_ps,
            temp_max_c: max("temp_cpu_c"),
            faults: r.faults.nodes_with_faults,
            programs_failed: r.programs.failed(),
            alarms: r.alarms.active,
        });
    }
    g.alarms.list.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then(a.since_ms.cmp(&b.since_ms))
    });
    g.alarms.list.truncate(wire::ALARM_LIST_MAX);
    g
}

/// Where the view is: the grid, a cluster, a group or one node.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Place {
    Grid,
    Cluster(String),
    Group(String, String),
    Node(NodeId),
}

impl Place {
    /// The place one level down, through member `name`.
    pub fn child(&self, name: &str) -> Option<Place> {
        Some(match self {
            Place::Grid => Place::Cluster(name.to_string()),
            Place::Cluster(c) => Place::Group(c.clone(), name.to_string()),
            Place::Group(c, g) => Place::Node(NodeId::new(c.clone(), g.clone(), name).ok()?),
            Place::Node(_) => return None,
        })
    }

    /// `cluster[/group[/node]]`, the way alarm scopes are written; empty for the grid.
    pub fn scope_string(&self) -> String {
        match self {
            Place::Grid => String::new(),
            Place::Cluster(c) => c.clone(),
            Place::Group(c, g) => format!("{c}/{g}"),
            Place::Node(id) => id.to_string(),
        }
    }

    /// What the members at this place are called.
    pub fn member_kind(&self) -> &'static str {
        match self {
            Place::Grid => "cluster",
            Place::Cluster(_) => "group",
            Place::Group(..) => "node",
            Place::Node(_) => "process",
        }
    }
}

/// A short text for an alarm event.
pub fn alarm_text(note: &AlarmNote) -> String {
    let e = &note.event;
    let verb = match e.action {
        AlarmAction::Raise => "ALARM",
        AlarmAction::Clear => "cleared",
    };
    let inst = e
        .instance
        .as_deref()
        .map(|i| format!(" {i}"))
        .unwrap_or_default();
    format!(
        "{verb} {} {} {}{inst}: {}",
        e.severity.as_str(),
        e.rule,
        note.scope,
        e.message
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use gridmon_nats::wire::{Envelope, ProcessRow, Source, SCHEMA_VERSION};

    pub fn envelope<B>(kind: Kind, source: Source, body: B) -> Envelope<B> {
        Envelope {
            schema: SCHEMA_VERSION,
            kind,
            source,
            ts_ms: 1_700_000_000_000,
            run_id: 1,
            seq: 1,
            body,
        }
    }

    pub fn member(name: &str) -> MemberLine {
        MemberLine {
            name: name.into(),
            ..Default::default()
        }
    }

    pub fn rollup(members: &[&str]) -> Vec<u8> {
        let r = Rollup {
            members: members.iter().map(|m| member(m)).collect(),
            ..Default::default()
        };
        wire::encode(&envelope(Kind::Rollup, Source::default(), r)).unwrap()
    }

    pub fn report(id: &NodeId, rows: Option<Vec<ProcessRow>>) -> Vec<u8> {
        let body = NodeReport {
            processes: rows.map(|rows| ProcessTable {
                total: rows.len() as u32,
                rows,
                ..Default::default()
            }),
            ..Default::default()
        };
        wire::encode(&envelope(Kind::NodeReport, Source::from(id), body)).unwrap()
    }

    fn subjects() -> Subjects {
        Subjects::new("grid").unwrap()
    }

    #[test]
    fn rollups_land_at_their_level() {
        let mut s = Store::default();
        let now = Instant::now();
        let sub = subjects();
        assert_eq!(
            s.apply(&sub, "grid", &rollup(&["c01", "c02"]), now),
            Applied::Rollup(Scope::Grid)
        );
        s.apply(&sub, "grid.c01", &rollup(&["g01"]), now);
        s.apply(&sub, "grid.c01.g01", &rollup(&["n1", "n2"]), now);
        let names =
            |p: &Place| -> Vec<String> { s.members(p).iter().map(|m| m.name.clone()).collect() };
        assert_eq!(names(&Place::Grid), ["c01", "c02"]);
        assert_eq!(names(&Place::Cluster("c01".into())), ["g01"]);
        assert_eq!(
            names(&Place::Group("c01".into(), "g01".into())),
            ["n1", "n2"]
        );
        assert!(names(&Place::Cluster("c02".into())).is_empty());
        let id = NodeId::new("c01", "g01", "n2").unwrap();
        assert_eq!(s.member_line(&id).unwrap().name, "n2");
    }

    #[test]
    fn without_a_grid_rollup_the_grid_is_put_together_from_the_clusters() {
        let mut s = Store::default();
        let now = Instant::now();
        let sub = subjects();
        s.apply(&sub, "grid.c02", &rollup(&["g01"]), now);
        s.apply(&sub, "grid.c01", &rollup(&["g01", "g02"]), now);
        let names: Vec<String> = s
            .members(&Place::Grid)
            .iter()
            .map(|m| m.name.clone())
            .collect();
        assert_eq!(names, ["c01", "c02"]);
        // A real grid rollup wins from then on.
        s.apply(&sub, "grid", &rollup(&["c09"]), now);
        s.apply(&sub, "grid.c03", &rollup(&[]), now);
        let names: Vec<String> = s
            .members(&Place::Grid)
            .iter()
            .map(|m| m.name.clone())
            .collect();
        assert_eq!(names, ["c09"]);
    }

    #[test]
    fn garbage_is_counted_and_skipped() {
        let mut s = Store::default();
        let now = Instant::now();
        let sub = subjects();
        assert_eq!(
            s.apply(&sub, "grid.c01", b"\xc1nonsense", now),
            Applied::Bad
        );
        assert_eq!(s.apply(&sub, "grid.c01.g01.n1", b"", now), Applied::Bad);
        // A report on the wrong node's subject.
        let other = NodeId::new("c01", "g01", "n9").unwrap();
        assert_eq!(
            s.apply(&sub, "grid.c01.g01.n1", &report(&other, None), now),
            Applied::Bad
        );
        // Foreign subjects and other families are not errors.
        assert_eq!(s.apply(&sub, "other.x", b"", now), Applied::Ignored);
        assert_eq!(
            s.apply(&sub, "grid.audit.c01.g01.n1", b"", now),
            Applied::Ignored
        );
        assert_eq!(s.bad, 3);
        assert!(s.clusters.is_empty() && s.nodes.is_empty());
    }

    #[test]
    fn the_last_process_table_is_kept_across_reports_without_one() {
        let mut s = Store::default();
        let sub = subjects();
        let id = NodeId::new("c", "g", "n").unwrap();
        let row = ProcessRow {
            pid: 7,
            name: "seven".into(),
            ..Default::default()
        };
        let now = Instant::now();
        s.apply(&sub, "grid.c.g.n", &report(&id, Some(vec![row])), now);
        s.apply(&sub, "grid.c.g.n", &report(&id, None), now);
        let st = &s.nodes[&id];
        assert!(st.report.value.processes.is_none());
        assert_eq!(st.table.as_ref().unwrap().value.rows[0].pid, 7);
    }

    #[test]
    fn drilling_names_the_child() {
        let g = Place::Group("c".into(), "g".into());
        assert_eq!(
            g.child("n"),
            Some(Place::Node(NodeId::new("c", "g", "n").unwrap()))
        );
        assert_eq!(g.child("bad.name"), None);
        assert_eq!(Place::Grid.child("c"), Some(Place::Cluster("c".into())));
    }
}
