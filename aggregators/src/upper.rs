//! The cluster and grid folds: member rollups in (groups for a cluster, clusters for the grid),
//! one rollup per window out. Sketches are merged, counts summed; nothing is averaged twice.

use std::collections::BTreeMap;
use std::sync::Arc;

use gridmon_nats::config::AlarmScope;
use gridmon_nats::wire::{
    AlarmEvent, AlarmSummary, InputStats, Level, MemberLine, MemberStatus, NodeCounts, Rollup,
};
use gridmon_nats::Scope;

use crate::alarm::{AlarmBook, At, RuleSet};
use crate::summary::Merge;
use crate::window::{offer, take, window_containing, Clock, Members, Offered, Params};
use crate::{alarm_summary, Output};

/// A cluster's (members: its groups) or the grid's (members: the clusters) state.
#[derive(Debug)]
pub struct UpperFold {
    /// `None` for the grid.
    cluster: Option<String>,
    level: Level,
    params: Params,
    clock: Clock,
    members: Members<Rollup>,
    stats: InputStats,
    alarms: AlarmBook,
    rules: Arc<RuleSet>,
}

impl UpperFold {
    /// A cluster fold; it closes a window `rollup_grace` after its groups do.
    pub fn cluster(cluster: &str, params: Params, rules: Arc<RuleSet>, now_ms: i64) -> Self {
        Self::new(Some(cluster.into()), Level::Cluster, params, rules, now_ms)
    }

    /// The grid fold; it closes a window `rollup_grace` after the clusters do.
    pub fn grid(params: Params, rules: Arc<RuleSet>, now_ms: i64) -> Self {
        Self::new(None, Level::Grid, params, rules, now_ms)
    }

    fn new(
        cluster: Option<String>,
        level: Level,
        params: Params,
        rules: Arc<RuleSet>,
        now_ms: i64,
    ) -> Self {
        let levels_between = if level == Level::Grid { 2 } else { 1 };
        let close_after = params.grace_ms + params.rollup_grace_ms * levels_between;
        Self {
            cluster,
            level,
            clock: Clock::new(params.window_ms, close_after, now_ms),
            params,
            members: Members::default(),
            stats: InputStats::default(),
            alarms: AlarmBook::default(),
            rules,
        }
    }

    pub fn scope(&self) -> Scope {
        match &self.cluster {
            Some(c) => Scope::Cluster { cluster: c.clone() },
            None => Scope::Grid,
        }
    }

    pub fn stats_mut(&mut self) -> &mut InputStats {
        &mut self.stats
    }

    pub fn next_close_ms(&self) -> i64 {
        self.clock.close_ms()
    }

    /// Offers a member's rollup (already checked against its subject). The level must be the
    /// one below ours and the window length ours (else `wrong_kind`).
    pub fn offer(&mut self, member: &str, rollup: Rollup, now_ms: i64) -> Option<Offered> {
        self.stats.received += 1;
        let expected = match self.level {
            Level::Grid => Level::Cluster,
            _ => Level::Group,
        };
        if rollup.level != expected || i64::from(rollup.window_ms) != self.params.window_ms {
            self.stats.wrong_kind += 1;
            return None;
        }
        if rollup.window_start_ms.abs_diff(now_ms) > self.params.max_skew_ms.unsigned_abs() {
            self.stats.clock_skew += 1;
            return None;
        }
        let window = window_containing(rollup.window_start_ms, self.params.window_ms);
        let ts = rollup.window_start_ms;
        let m = self.members.get_or_insert(member);
        Some(offer(&self.clock, m, window, ts, rollup, &mut self.stats))
    }

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
            level: self.level,
            window_start_ms: w,
            window_ms: u32::try_from(wms).unwrap_or(u32::MAX),
            ..Default::default()
        };
        let mut merges: BTreeMap<String, Merge> = BTreeMap::new();
        let mut listed_below = Vec::new();
        let mut below = AlarmSummary::default();
        let path = self.cluster.clone().unwrap_or_else(|| "grid".into());
        let mut rejected = 0u64;
        for m in &mut self.members.list {
            let has = match take(&self.clock, m, w) {
                Some(slot) => {
                    m.last_window = Some(w);
                    m.last_seen_ms = now;
                    m.last = Some(slot.sample);
                    r.inputs += 1;
                    true
                }
                None => false,
            };
            let status = self.params.status(m.missed(w, wms));
            m.status = status;
            let Some(last) = &m.last else { continue };
            // A silent member's nodes count as stale, then offline, with it.
            let nodes = match status {
                MemberStatus::Online => last.nodes,
                MemberStatus::Stale => NodeCounts {
                    online: 0,
                    stale: last.nodes.online + last.nodes.stale,
                    offline: last.nodes.offline,
                },
                MemberStatus::Offline => NodeCounts {
                    offline: last.nodes.total(),
                    ..Default::default()
                },
            };
            r.nodes.merge(&nodes);
            if has {
                for (name, s) in &last.metrics {
                    if merges.entry(name.clone()).or_default().add(s).is_err() {
                        rejected += 1;
                    }
                }
                r.sums.merge(&last.sums);
                r.process_states.merge(&last.process_states);
                r.programs.merge(&last.programs);
                r.faults.merge(&last.faults);
                below.active = below.active.saturating_add(last.alarms.active);
                below.critical = below.critical.saturating_add(last.alarms.critical);
                below.warning = below.warning.saturating_add(last.alarms.warning);
                below.info = below.info.saturating_add(last.alarms.info);
                listed_below.extend(last.alarms.list.iter().cloned());
            }
            r.members
                .push(member_line(&m.name, status, m.last_seen_ms, nodes, last));
        }
        self.stats.malformed += rejected;
        for (name, m) in merges {
            if let Some(s) = m.finish() {
                r.metrics.insert(name, s);
            }
        }
        let mut alarm_events: Vec<AlarmEvent> = Vec::new();
        if self.level == Level::Cluster {
            let at = At {
                path: &path,
                now_ms: now,
            };
            self.alarms.evaluate_rollup(
                &self.rules,
                AlarmScope::Cluster,
                &r,
                &at,
                &mut alarm_events,
            );
        }
        let own: Vec<_> = self.alarms.active(&self.rules, &path).collect();
        r.alarms = alarm_summary(below, own, listed_below);
        r.members.sort_by(|a, b| a.name.cmp(&b.name));
        let p = self.params;
        self.members.remove_where(|m| {
            i64::from(m.missed(w, p.window_ms)) * p.window_ms >= p.forget_after_ms
        });
        r.input = self.stats;
        for e in alarm_events {
            out.push(Output::Alarm {
                scope: self.scope(),
                event: e,
            });
        }
        out.push(Output::Rollup {
            scope: self.scope(),
            close_ms: now,
            rollup: r,
        });
    }
}

fn member_line(
    name: &str,
    status: MemberStatus,
    last_seen_ms: i64,
    nodes: NodeCounts,
    r: &Rollup,
) -> MemberLine {
    let stat = |m: &str, f: fn(&gridmon_nats::wire::MetricSummary) -> f64| {
        r.metrics.get(m).map(|s| f(s) as f32)
    };
    let temp_max = r
        .metrics
        .iter()
        .filter(|(k, _)| k.starts_with("temp_"))
        .map(|(_, s)| s.max)
        .reduce(f64::max);
    MemberLine {
        name: name.into(),
        status,
        last_seen_ms,
        nodes,
        cpu_pct: stat("cpu_pct", |s| s.mean),
        cpu_max_pct: stat("cpu_pct", |s| s.max),
        mem_used_pct: stat("mem_used_pct", |s| s.mean),
        disk_busy_pct: stat("disk_busy_pct", |s| s.max),
        net_rx_bytes_ps: r.sums.net_rx_bytes_ps,
        net_tx_bytes_ps: r.sums.net_tx_bytes_ps,
        temp_max_c: temp_max.map(|v| v as f32),
        faults: r.faults.sensors_beyond_limits,
        programs_failed: r.programs.failed(),
        alarms: r.alarms.active,
    }
}
