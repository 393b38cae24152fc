//! The group fold: node reports in, one group rollup per window out, plus node liveness events
//! and node and group alarms.

use std::sync::Arc;

use gridmon_nats::config::AlarmScope;
use gridmon_nats::wire::{
    AlarmEvent, Event, EventKind, InputStats, Level, MemberLine, MemberStatus, ReportView, Rollup,
};
use gridmon_nats::{NodeId, Scope};

use crate::alarm::{AlarmBook, At, RuleSet};
use crate::sample::{Metric, NodeSample};
use crate::summary::summarize;
use crate::window::{offer, take, window_of_report, Clock, Members, Offered, Params};
use crate::{alarm_summary, Output};

/// Why a report was refused before it reached a window (each is counted in the rollup's
/// `input`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    ClockSkew,
    Duplicate,
    Oversize,
}

/// One group's state across windows.
#[derive(Debug)]
pub struct GroupFold {
    cluster: String,
    group: String,
    /// `cluster/group`.
    path: String,
    params: Params,
    clock: Clock,
    members: Members<NodeSample>,
    stats: InputStats,
    alarms: AlarmBook,
    rules: Arc<RuleSet>,
    /// Per-metric value buffers, reused across windows.
    cols: Vec<Vec<f64>>,
}

impl GroupFold {
    pub fn new(
        cluster: &str,
        group: &str,
        params: Params,
        rules: Arc<RuleSet>,
        now_ms: i64,
    ) -> Self {
        Self {
            cluster: cluster.into(),
            group: group.into(),
            path: format!("{cluster}/{group}"),
            clock: Clock::new(params.window_ms, params.grace_ms, now_ms),
            params,
            members: Members::default(),
            stats: InputStats::default(),
            alarms: AlarmBook::default(),
            rules,
            cols: vec![Vec::new(); Metric::COUNT],
        }
    }

    pub fn scope(&self) -> Scope {
        Scope::Group {
            cluster: self.cluster.clone(),
            group: self.group.clone(),
        }
    }

    /// Counters for inputs refused before they reach the fold (malformed, wrong identity, …).
    pub fn stats_mut(&mut self) -> &mut InputStats {
        &mut self.stats
    }

    pub fn stats(&self) -> &InputStats {
        &self.stats
    }

    pub fn nodes(&self) -> usize {
        self.members.len()
    }

    /// When the next window closes.
    pub fn next_close_ms(&self) -> i64 {
        self.clock.close_ms()
    }

    /// Offers one decoded report of `node` (already checked against its subject).
    pub fn offer(
        &mut self,
        node: &str,
        ts_ms: i64,
        run_id: u64,
        seq: u64,
        report: &ReportView,
        now_ms: i64,
    ) -> Result<Offered, Refused> {
        self.stats.received += 1;
        if ts_ms.abs_diff(now_ms) > self.params.max_skew_ms.unsigned_abs() {
            self.stats.clock_skew += 1;
            return Err(Refused::ClockSkew);
        }
        if let Some(p) = &report.processes {
            if p.total > self.params.max_processes || p.row_count > self.params.max_processes {
                self.stats.oversize += 1;
                return Err(Refused::Oversize);
            }
        }
        let member = self.members.get_or_insert(node);
        match member.run {
            Some((r, s)) if run_id < r || (run_id == r && seq <= s) => {
                self.stats.duplicate += 1;
                return Err(Refused::Duplicate);
            }
            _ => member.run = Some((run_id, seq)),
        }
        let sample = NodeSample::from_report(report);
        let window = window_of_report(ts_ms, self.params.window_ms);
        Ok(offer(
            &self.clock,
            member,
            window,
            ts_ms,
            sample,
            &mut self.stats,
        ))
    }

    /// Closes every window whose time has come, oldest first.
    pub fn close_due(&mut self, now_ms: i64, out: &mut Vec<Output>) {
        while self.clock.due(now_ms) {
            self.close(out);
            self.clock.advance();
        }
    }

    fn close(&mut self, out: &mut Vec<Output>) {
        let w = self.clock.open;
        let wms = self.params.window_ms;
        let now = self.clock.close_ms();
        let mut r = Rollup {
            level: Level::Group,
            window_start_ms: w,
            window_ms: u32::try_from(wms).unwrap_or(u32::MAX),
            ..Default::default()
        };
        for c in &mut self.cols {
            c.clear();
        }
        let mut alarm_events: Vec<AlarmEvent> = Vec::new();
        let mut active = Vec::new();
        let mut node_path = String::with_capacity(self.path.len() + 32);
        for m in &mut self.members.list {
            let has = match take(&self.clock, m, w) {
                Some(slot) => {
                    let mut s = slot.sample;
                    // The process table comes less often than the host figures: carry the
                    // last one forward.
                    if s.process_states.is_none() {
                        if let Some(last) = &m.last {
                            s.process_states = last.process_states;
                            s.values[Metric::Processes.index()] =
                                last.values[Metric::Processes.index()];
                            s.sums.processes = last.sums.processes;
                        }
                    }
                    m.last_window = Some(w);
                    m.last_seen_ms = slot.ts_ms;
                    m.last = Some(s);
                    r.inputs += 1;
                    true
                }
                None => false,
            };
            let missed = m.missed(w, wms);
            let status = self.params.status(missed);
            node_path.clear();
            node_path.push_str(&self.path);
            node_path.push('/');
            node_path.push_str(&m.name);
            if status != m.status {
                let event = match status {
                    MemberStatus::Online => EventKind::NodeOnline,
                    MemberStatus::Stale => EventKind::NodeStale,
                    MemberStatus::Offline => EventKind::NodeOffline,
                };
                out.push(Output::Event {
                    node: NodeId {
                        cluster: self.cluster.clone(),
                        group: self.group.clone(),
                        node: m.name.to_string(),
                    },
                    ts_ms: now,
                    event: Event {
                        event,
                        last_seen_ms: m.last_window.map(|_| m.last_seen_ms),
                        missed_intervals: missed,
                        message: format!(
                            "{node_path} is {} after {missed} intervals without a report",
                            match status {
                                MemberStatus::Online => "online",
                                MemberStatus::Stale => "stale",
                                MemberStatus::Offline => "offline",
                            }
                        ),
                    },
                });
                m.status = status;
            }
            match status {
                MemberStatus::Online => r.nodes.online += 1,
                MemberStatus::Stale => r.nodes.stale += 1,
                MemberStatus::Offline => r.nodes.offline += 1,
            }
            let sample = if has { m.last.as_ref() } else { None };
            let at = At {
                path: &node_path,
                now_ms: now,
            };
            m.alarms.evaluate_node(
                &self.rules,
                sample,
                missed,
                status == MemberStatus::Offline,
                &at,
                &mut alarm_events,
            );
            if let Some(s) = sample {
                for (col, v) in self.cols.iter_mut().zip(s.values) {
                    if !v.is_nan() {
                        col.push(v);
                    }
                }
                r.sums.merge(&s.sums);
                if let Some(ps) = &s.process_states {
                    r.process_states.merge(ps);
                }
                r.programs.merge(&s.programs);
                r.faults.merge(&s.faults);
            }
            active.extend(m.alarms.active(&self.rules, &node_path));
            r.members.push(node_line(m, status));
        }
        for (m, col) in Metric::ALL.iter().zip(&self.cols) {
            if !col.is_empty() {
                r.metrics.insert(m.name().to_string(), summarize(col));
            }
        }
        self.forget(now, &mut alarm_events);
        let at = At {
            path: &self.path,
            now_ms: now,
        };
        self.alarms
            .evaluate_rollup(&self.rules, AlarmScope::Group, &r, &at, &mut alarm_events);
        active.extend(self.alarms.active(&self.rules, &self.path));
        r.alarms = alarm_summary(Default::default(), active, Vec::new());
        r.members.sort_by(|a, b| a.name.cmp(&b.name));
        r.input = self.stats;
        for e in alarm_events {
            out.push(Output::Alarm {
                scope: alarm_scope(&self.cluster, &self.group, &e.id),
                event: e,
            });
        }
        out.push(Output::Rollup {
            scope: self.scope(),
            close_ms: now,
            rollup: r,
        });
    }

    /// Drops nodes silent for `forget_after`, clearing their alarms.
    fn forget(&mut self, now: i64, alarm_events: &mut Vec<AlarmEvent>) {
        let (w, p) = (self.clock.open, self.params);
        let gone = self.members.remove_where(|m| {
            i64::from(m.missed(w, p.window_ms)) * p.window_ms >= p.forget_after_ms
        });
        for mut m in gone {
            let path = format!("{}/{}", self.path, m.name);
            let at = At {
                path: &path,
                now_ms: now,
            };
            m.alarms.clear_all(&self.rules, &at, alarm_events);
        }
    }
}

/// Node alarms go to `<p>.alarm.<c>.<g>.<n>`, group alarms to `<p>.alarm.<c>.<g>`; the id's
/// path (`rule:c/g[/n][:instance]`) says which.
fn alarm_scope(cluster: &str, group: &str, id: &str) -> Scope {
    let path = id.split(':').nth(1).unwrap_or("");
    match path.split('/').nth(2) {
        Some(node) => Scope::Node(NodeId {
            cluster: cluster.into(),
            group: group.into(),
            node: node.into(),
        }),
        None => Scope::Group {
            cluster: cluster.into(),
            group: group.into(),
        },
    }
}

fn node_line(m: &crate::window::Member<NodeSample>, status: MemberStatus) -> MemberLine {
    let mut line = MemberLine {
        name: m.name.to_string(),
        status,
        last_seen_ms: m.last_seen_ms,
        alarms: m.alarms.active_count(),
        ..Default::default()
    };
    match status {
        MemberStatus::Online => line.nodes.online = 1,
        MemberStatus::Stale => line.nodes.stale = 1,
        MemberStatus::Offline => line.nodes.offline = 1,
    }
    if let Some(s) = &m.last {
        let f = |m: Metric| s.get(m).map(|v| v as f32);
        line.cpu_pct = f(Metric::CpuPct);
        line.cpu_max_pct = line.cpu_pct;
        line.mem_used_pct = f(Metric::MemUsedPct);
        line.disk_busy_pct = f(Metric::DiskBusyPct);
        line.net_rx_bytes_ps = s.sums.net_rx_bytes_ps;
        line.net_tx_bytes_ps = s.sums.net_tx_bytes_ps;
        line.temp_max_c = s.temp_max().map(|v| v as f32);
        line.faults = s.faults.sensors_beyond_limits;
        line.programs_failed = s.programs.failed();
    }
    line
}
