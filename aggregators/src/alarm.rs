//! Alarm rules (configured and built-in) and the raise/clear state machine with hysteresis.
//!
//! Rules are evaluated once per window close on the figures of that window. A rule raises after
//! its condition has held for `for`, and clears only after the value has been back past the
//! separate clear threshold for `clear_for` (default three intervals). Together these bound the
//! events of any signal, however it oscillates, to one raise and one clear per `for + clear_for`.

use std::time::Duration;

use gridmon_nats::config::{AggregateConfig, AlarmRuleConfig, AlarmScope};
use gridmon_nats::wire::{ActiveAlarm, AlarmAction, AlarmEvent, Rollup, Severity};

use crate::sample::{FaultKind, Metric, NodeSample};

/// What a rule watches.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    /// A node's metric.
    NodeMetric(Metric),
    /// A built-in per-instance fault of a node (one alarm per sensor or program).
    Fault(FaultKind),
    /// Built-in: the node is offline; the value is the intervals missed.
    NodeOffline,
    /// A figure of a group or cluster rollup.
    Rollup(Figure),
}

/// A figure of a rollup that a group or cluster rule may name.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Figure {
    Stat(Metric, Stat),
    NodesOnline,
    NodesStale,
    NodesOffline,
    /// `100 * offline / all nodes`.
    NodesOfflinePct,
    ProgramsFailed,
    ProgramsCrashed,
    ProgramsError,
    FaultsSensors,
    FaultsNodes,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stat {
    Min,
    Mean,
    Max,
    P50,
    P95,
    Sum,
    Count,
}

impl Figure {
    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "nodes.online" => Self::NodesOnline,
            "nodes.stale" => Self::NodesStale,
            "nodes.offline" => Self::NodesOffline,
            "nodes.offline_pct" => Self::NodesOfflinePct,
            "programs.failed" => Self::ProgramsFailed,
            "programs.crashed" => Self::ProgramsCrashed,
            "programs.error" => Self::ProgramsError,
            "faults.sensors_beyond_limits" => Self::FaultsSensors,
            "faults.nodes_with_faults" => Self::FaultsNodes,
            _ => {
                let (m, s) = text.rsplit_once('.')?;
                let stat = match s {
                    "min" => Stat::Min,
                    "mean" => Stat::Mean,
                    "max" => Stat::Max,
                    "p50" => Stat::P50,
                    "p95" => Stat::P95,
                    "sum" => Stat::Sum,
                    "count" => Stat::Count,
                    _ => return None,
                };
                Self::Stat(Metric::from_name(m)?, stat)
            }
        })
    }

    /// The figure's value in a rollup; `None` when the rollup has no such figure this window.
    pub fn value(self, r: &Rollup) -> Option<f64> {
        let n = &r.nodes;
        Some(match self {
            Self::Stat(m, stat) => {
                let s = r.metrics.get(m.name())?;
                match stat {
                    Stat::Min => s.min,
                    Stat::Mean => s.mean,
                    Stat::Max => s.max,
                    Stat::P50 => s.p50,
                    Stat::P95 => s.p95,
                    Stat::Sum => s.sum,
                    Stat::Count => s.count as f64,
                }
            }
            Self::NodesOnline => f64::from(n.online),
            Self::NodesStale => f64::from(n.stale),
            Self::NodesOffline => f64::from(n.offline),
            Self::NodesOfflinePct => {
                let all = n.total();
                if all == 0 {
                    return None;
                }
                100.0 * f64::from(n.offline) / f64::from(all)
            }
            Self::ProgramsFailed => f64::from(r.programs.failed()),
            Self::ProgramsCrashed => f64::from(r.programs.crashed),
            Self::ProgramsError => f64::from(r.programs.error),
            Self::FaultsSensors => f64::from(r.faults.sensors_beyond_limits),
            Self::FaultsNodes => f64::from(r.faults.nodes_with_faults),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Gt,
    Ge,
    Lt,
    Le,
}

impl Op {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            ">" => Self::Gt,
            ">=" => Self::Ge,
            "<" => Self::Lt,
            "<=" => Self::Le,
            _ => return None,
        })
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Gt => ">",
            Self::Ge => ">=",
            Self::Lt => "<",
            Self::Le => "<=",
        }
    }

    #[inline]
    fn holds(self, v: f64, t: f64) -> bool {
        match self {
            Self::Gt => v > t,
            Self::Ge => v >= t,
            Self::Lt => v < t,
            Self::Le => v <= t,
        }
    }
}

/// A compiled rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub name: String,
    pub scope: AlarmScope,
    /// The metric as written in the config (or the built-in's name).
    pub metric: String,
    pub target: Target,
    pub op: Op,
    pub threshold: f64,
    pub clear: f64,
    pub for_ms: i64,
    pub clear_for_ms: i64,
    pub severity: Severity,
}

impl Rule {
    fn fires(&self, v: f64) -> bool {
        self.op.holds(v, self.threshold)
    }

    /// Back on the healthy side of the clear threshold.
    fn clears(&self, v: f64) -> bool {
        !self.op.holds(v, self.clear)
    }
}

/// The names of the built-in rules.
pub const BUILTIN: [&str; 6] = [
    "sensor_crit",
    "fan_stopped",
    "voltage_range",
    "node_offline",
    "program_crashed",
    "program_error",
];

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RuleError {
    #[error(
        "aggregate.alarms: rule {rule:?}: unknown metric {metric:?} for scope {scope}; {hint}"
    )]
    UnknownMetric {
        rule: String,
        metric: String,
        scope: &'static str,
        hint: &'static str,
    },
    #[error("aggregate.alarms: rule {0:?}: op must be one of > >= < <=")]
    BadOp(String),
    #[error("aggregate.alarms: rule {0:?} has the name of a built-in rule")]
    Shadows(String),
    #[error("aggregate.disable_alarms: no rule is called {0:?}")]
    UnknownDisabled(String),
}

/// All rules of an aggregator, by scope.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RuleSet {
    pub rules: Vec<Rule>,
}

impl RuleSet {
    /// Compiles the configured rules and the built-ins, minus the disabled ones.
    pub fn compile(cfg: &AggregateConfig, window: Duration) -> Result<Self, RuleError> {
        let window_ms = ms(window);
        let default_clear_for = 3 * window_ms;
        let mut rules = Vec::new();
        if cfg.builtin_alarms {
            let builtin = |name: &str, target, severity| Rule {
                name: name.into(),
                scope: AlarmScope::Node,
                metric: name.into(),
                target,
                op: Op::Ge,
                threshold: 1.0,
                clear: 1.0,
                for_ms: 0,
                clear_for_ms: default_clear_for,
                severity,
            };
            rules.push(builtin(
                "sensor_crit",
                Target::Fault(FaultKind::SensorCrit),
                Severity::Critical,
            ));
            rules.push(builtin(
                "fan_stopped",
                Target::Fault(FaultKind::FanStopped),
                Severity::Critical,
            ));
            rules.push(builtin(
                "voltage_range",
                Target::Fault(FaultKind::VoltageRange),
                Severity::Warning,
            ));
            rules.push(Rule {
                // Offline is already `offline_after` intervals of silence: no extra delay, and
                // it clears on the first report.
                clear_for_ms: 0,
                ..builtin("node_offline", Target::NodeOffline, Severity::Critical)
            });
            rules.push(builtin(
                "program_crashed",
                Target::Fault(FaultKind::ProgramCrashed),
                Severity::Warning,
            ));
            rules.push(builtin(
                "program_error",
                Target::Fault(FaultKind::ProgramError),
                Severity::Critical,
            ));
        }
        for r in &cfg.alarms {
            if BUILTIN.contains(&r.name.as_str()) {
                return Err(RuleError::Shadows(r.name.clone()));
            }
            rules.push(compile_rule(r, default_clear_for)?);
        }
        for d in &cfg.disable_alarms {
            let before = rules.len();
            rules.retain(|r| &r.name != d);
            if rules.len() == before && !BUILTIN.contains(&d.as_str()) {
                return Err(RuleError::UnknownDisabled(d.clone()));
            }
        }
        Ok(Self { rules })
    }

    pub fn of_scope(&self, scope: AlarmScope) -> impl Iterator<Item = (RuleId, &Rule)> {
        self.rules
            .iter()
            .enumerate()
            .filter(move |(_, r)| r.scope == scope)
            .map(|(i, r)| (RuleId(i as u16), r))
    }

    fn get(&self, id: RuleId) -> Option<&Rule> {
        self.rules.get(usize::from(id.0))
    }
}

fn compile_rule(r: &AlarmRuleConfig, default_clear_for: i64) -> Result<Rule, RuleError> {
    let op = Op::parse(&r.op).ok_or_else(|| RuleError::BadOp(r.name.clone()))?;
    let target = match r.scope {
        AlarmScope::Node => Metric::from_name(&r.metric).map(Target::NodeMetric),
        AlarmScope::Group | AlarmScope::Cluster => Figure::parse(&r.metric).map(Target::Rollup),
    };
    let target = target.ok_or_else(|| RuleError::UnknownMetric {
        rule: r.name.clone(),
        metric: r.metric.clone(),
        scope: match r.scope {
            AlarmScope::Node => "node",
            AlarmScope::Group => "group",
            AlarmScope::Cluster => "cluster",
        },
        hint: match r.scope {
            AlarmScope::Node => "node rules name a metric such as cpu_pct (docs/aggregation.md)",
            _ => {
                "group and cluster rules name <metric>.<min|mean|max|p50|p95|sum|count>, \
                 nodes.<online|stale|offline|offline_pct>, programs.<failed|crashed|error> or \
                 faults.<sensors_beyond_limits|nodes_with_faults>"
            }
        },
    })?;
    Ok(Rule {
        name: r.name.clone(),
        scope: r.scope,
        metric: r.metric.clone(),
        target,
        op,
        threshold: r.threshold,
        clear: r.clear.unwrap_or(r.threshold),
        for_ms: r.for_.map_or(0, ms),
        clear_for_ms: r.clear_for.map_or(default_clear_for, ms),
        severity: r.severity,
    })
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Index of a rule in its [`RuleSet`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RuleId(pub u16);

#[derive(Debug, Clone, PartialEq)]
struct Entry {
    rule: RuleId,
    instance: Option<Box<str>>,
    /// When the condition started to hold (not yet raised).
    pending_since: Option<i64>,
    /// (raised at, value at the raise).
    raised: Option<(i64, f64)>,
    /// When the clear condition started to hold (raised).
    clearing_since: Option<i64>,
    /// Latest value seen while raised.
    last_value: f64,
}

/// The alarms of one subject: a node, a group or a cluster.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AlarmBook {
    entries: Vec<Entry>,
}

/// The context an event needs: whose alarms these are and when the window closed.
#[derive(Debug, Clone, Copy)]
pub struct At<'a> {
    /// `cluster[/group[/node]]`.
    pub path: &'a str,
    pub now_ms: i64,
}

impl AlarmBook {
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Feeds one observation of one rule (and instance). `value` is `None` when the figure is
    /// missing this window: the alarm then neither advances nor clears.
    fn observe(
        &mut self,
        rules: &RuleSet,
        rule: RuleId,
        instance: Option<&str>,
        value: Option<f64>,
        at: &At,
        out: &mut Vec<AlarmEvent>,
    ) {
        let Some(r) = rules.get(rule) else { return };
        let pos = self
            .entries
            .iter()
            .position(|e| e.rule == rule && e.instance.as_deref() == instance);
        let Some(v) = value else { return };
        let fires = r.fires(v);
        let i = match pos {
            Some(i) => i,
            None if fires => {
                self.entries.push(Entry {
                    rule,
                    instance: instance.map(Into::into),
                    pending_since: None,
                    raised: None,
                    clearing_since: None,
                    last_value: v,
                });
                self.entries.len() - 1
            }
            None => return,
        };
        let e = &mut self.entries[i];
        match e.raised {
            None => {
                if fires {
                    let since = *e.pending_since.get_or_insert(at.now_ms);
                    if at.now_ms - since >= r.for_ms {
                        e.pending_since = None;
                        e.raised = Some((at.now_ms, v));
                        e.last_value = v;
                        out.push(event(r, e, AlarmAction::Raise, v, at));
                    }
                } else {
                    self.entries.swap_remove(i);
                }
            }
            Some(_) => {
                e.last_value = v;
                if r.clears(v) {
                    let since = *e.clearing_since.get_or_insert(at.now_ms);
                    if at.now_ms - since >= r.clear_for_ms {
                        out.push(event(r, e, AlarmAction::Clear, v, at));
                        self.entries.swap_remove(i);
                    }
                } else {
                    e.clearing_since = None;
                }
            }
        }
    }

    /// Evaluates a node's rules at a window close. `sample` is the node's report in the window
    /// (none when it sent none); `missed` the whole intervals since its last report.
    pub fn evaluate_node(
        &mut self,
        rules: &RuleSet,
        sample: Option<&NodeSample>,
        missed: u32,
        offline: bool,
        at: &At,
        out: &mut Vec<AlarmEvent>,
    ) {
        for (id, r) in rules.of_scope(AlarmScope::Node) {
            match r.target {
                Target::NodeMetric(m) => {
                    self.observe(rules, id, None, sample.and_then(|s| s.get(m)), at, out);
                }
                Target::NodeOffline => {
                    let v = if offline {
                        f64::from(missed.max(1))
                    } else {
                        0.0
                    };
                    self.observe(rules, id, None, Some(v), at, out);
                }
                Target::Fault(kind) => {
                    // Without a report the faults are unknown: hold.
                    let Some(s) = sample else { continue };
                    for f in s.fault_list.iter().filter(|f| f.kind == kind) {
                        self.observe(rules, id, Some(&f.instance), Some(1.0), at, out);
                    }
                    // Instances raised before and healthy now.
                    let gone: Vec<Box<str>> = self
                        .entries
                        .iter()
                        .filter(|e| e.rule == id)
                        .filter_map(|e| e.instance.clone())
                        .filter(|inst| {
                            !s.fault_list
                                .iter()
                                .any(|f| f.kind == kind && f.instance == *inst)
                        })
                        .collect();
                    for inst in gone {
                        self.observe(rules, id, Some(&inst), Some(0.0), at, out);
                    }
                }
                Target::Rollup(_) => {}
            }
        }
    }

    /// Evaluates the group or cluster rules on a finished rollup.
    pub fn evaluate_rollup(
        &mut self,
        rules: &RuleSet,
        scope: AlarmScope,
        rollup: &Rollup,
        at: &At,
        out: &mut Vec<AlarmEvent>,
    ) {
        for (id, r) in rules.of_scope(scope) {
            if let Target::Rollup(fig) = r.target {
                self.observe(rules, id, None, fig.value(rollup), at, out);
            }
        }
    }

    /// Clears every raised alarm (the subject is gone) and forgets the rest.
    pub fn clear_all(&mut self, rules: &RuleSet, at: &At, out: &mut Vec<AlarmEvent>) {
        for e in self.entries.drain(..) {
            if let (Some(r), Some(_)) = (rules.get(e.rule), e.raised) {
                out.push(event(r, &e, AlarmAction::Clear, f64::NAN, at));
            }
        }
    }

    /// The raised alarms.
    pub fn active<'a>(
        &'a self,
        rules: &'a RuleSet,
        path: &'a str,
    ) -> impl Iterator<Item = ActiveAlarm> + 'a {
        self.entries.iter().filter_map(move |e| {
            let (since, _) = e.raised?;
            let r = rules.get(e.rule)?;
            Some(ActiveAlarm {
                id: alarm_id(&r.name, path, e.instance.as_deref()),
                rule: r.name.clone(),
                severity: r.severity,
                scope: path.into(),
                instance: e.instance.as_deref().map(Into::into),
                value: e.last_value,
                since_ms: since,
            })
        })
    }

    pub fn active_count(&self) -> u32 {
        self.entries.iter().filter(|e| e.raised.is_some()).count() as u32
    }
}

/// `<rule>:<cluster>[/<group>[/<node>]][:<instance>]`: the same for the raise and the clear.
pub fn alarm_id(rule: &str, path: &str, instance: Option<&str>) -> String {
    match instance {
        Some(i) => format!("{rule}:{path}:{i}"),
        None => format!("{rule}:{path}"),
    }
}

fn event(r: &Rule, e: &Entry, action: AlarmAction, value: f64, at: &At) -> AlarmEvent {
    let raised_ms = e.raised.map_or(at.now_ms, |(t, _)| t);
    let what = match &e.instance {
        Some(i) => format!("{} {i}", r.metric),
        None => r.metric.clone(),
    };
    let message = match action {
        AlarmAction::Raise => match r.target {
            Target::Fault(_) | Target::NodeOffline => format!("{}: {what} ({value})", at.path),
            _ => format!(
                "{}: {what} = {value} {} {}",
                at.path,
                r.op.as_str(),
                r.threshold
            ),
        },
        AlarmAction::Clear if value.is_nan() => format!("{}: {what} cleared (forgotten)", at.path),
        AlarmAction::Clear => format!("{}: {what} back to normal ({value})", at.path),
    };
    AlarmEvent {
        id: alarm_id(&r.name, at.path, e.instance.as_deref()),
        action,
        rule: r.name.clone(),
        severity: r.severity,
        metric: r.metric.clone(),
        instance: e.instance.as_deref().map(Into::into),
        op: r.op.as_str().into(),
        threshold: r.threshold,
        clear_threshold: r.clear,
        value,
        raised_ms,
        ts_ms: at.now_ms,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::Fault;

    const W: i64 = 1000;

    fn rules(extra: &str) -> RuleSet {
        let cfg: gridmon_nats::Config =
            gridmon_nats::Config::from_toml(&format!("[aggregate]\n{extra}")).unwrap();
        RuleSet::compile(&cfg.aggregate, Duration::from_millis(W as u64)).unwrap()
    }

    fn cpu_rule(extra: &str) -> RuleSet {
        rules(&format!(
            "[[aggregate.alarms]]\nname = \"cpu_hot\"\nmetric = \"cpu_pct\"\nop = \">\"\nthreshold = 90\n{extra}"
        ))
    }

    fn sample(cpu: f64) -> NodeSample {
        let mut s = NodeSample::default();
        s.values[Metric::CpuPct.index()] = cpu;
        s
    }

    /// Feeds one value per window and returns (window index, action) of every event.
    fn run(rules: &RuleSet, values: &[f64]) -> Vec<(usize, AlarmAction)> {
        let mut book = AlarmBook::default();
        let mut out = Vec::new();
        let mut seen = Vec::new();
        for (i, v) in values.iter().enumerate() {
            let at = At {
                path: "c/g/n",
                now_ms: i as i64 * W,
            };
            book.evaluate_node(rules, Some(&sample(*v)), 0, false, &at, &mut out);
            seen.extend(out.drain(..).map(|e| (i, e.action)));
        }
        seen
    }

    #[test]
    fn raises_and_clears_after_clear_for() {
        let r = cpu_rule("clear = 80");
        let got = run(&r, &[50.0, 95.0, 95.0, 85.0, 70.0, 70.0, 70.0, 70.0, 70.0]);
        // Raised at once (no `for`); 85 is above the clear threshold; cleared after 3 intervals
        // below it.
        assert_eq!(got, vec![(1, AlarmAction::Raise), (7, AlarmAction::Clear)]);
    }

    #[test]
    fn for_delays_the_raise() {
        let r = cpu_rule("for = \"2s\"");
        let got = run(&r, &[95.0, 95.0, 50.0, 95.0, 95.0, 95.0]);
        assert_eq!(got, vec![(5, AlarmAction::Raise)]);
    }

    #[test]
    fn a_flapping_signal_makes_no_storm() {
        // Around the threshold, and across both thresholds, every window for 10 minutes.
        let r = cpu_rule("clear = 80");
        let around: Vec<f64> = (0..600)
            .map(|i| if i % 2 == 0 { 89.0 } else { 91.0 })
            .collect();
        assert_eq!(run(&r, &around), vec![(1, AlarmAction::Raise)]);
        let across: Vec<f64> = (0..600)
            .map(|i| if i % 2 == 0 { 70.0 } else { 95.0 })
            .collect();
        assert_eq!(run(&r, &across), vec![(1, AlarmAction::Raise)]);
        // Even with no hysteresis and no clear delay, `for` bounds the raises.
        let r = cpu_rule("for = \"3s\"\nclear_for = \"0s\"");
        assert!(run(&r, &across).is_empty());
    }

    #[test]
    fn missing_values_hold_the_state() {
        let r = cpu_rule("clear_for = \"0s\"");
        let got = run(&r, &[95.0, f64::NAN, f64::NAN, 10.0]);
        assert_eq!(got, vec![(0, AlarmAction::Raise), (3, AlarmAction::Clear)]);
    }

    #[test]
    fn per_instance_faults_raise_and_clear_separately() {
        let r = rules("disable_alarms = [\"node_offline\"]");
        let mut book = AlarmBook::default();
        let mut out = Vec::new();
        let fault = |inst: &str| Fault {
            kind: FaultKind::SensorCrit,
            instance: inst.into(),
            value: 101.0,
        };
        let mut s = NodeSample {
            fault_list: vec![fault("coretemp.0/temp1"), fault("coretemp.0/temp2")],
            ..Default::default()
        };
        let at = |t| At {
            path: "c/g/n",
            now_ms: t,
        };
        book.evaluate_node(&r, Some(&s), 0, false, &at(0), &mut out);
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(|e| e.action == AlarmAction::Raise));
        assert_eq!(out[0].id, "sensor_crit:c/g/n:coretemp.0/temp1");
        out.clear();
        s.fault_list.remove(0);
        for t in 1..=4 {
            book.evaluate_node(&r, Some(&s), 0, false, &at(t * W), &mut out);
        }
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].action, AlarmAction::Clear);
        assert_eq!(out[0].id, "sensor_crit:c/g/n:coretemp.0/temp1");
        assert_eq!(out[0].raised_ms, 0);
        assert_eq!(book.active(&r, "c/g/n").count(), 1);
    }

    #[test]
    fn offline_raises_and_the_first_report_clears() {
        let r = rules("");
        let mut book = AlarmBook::default();
        let mut out = Vec::new();
        let at = |t| At {
            path: "c/g/n",
            now_ms: t,
        };
        book.evaluate_node(&r, None, 10, true, &at(0), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].rule, "node_offline");
        assert_eq!(out[0].severity, Severity::Critical);
        book.evaluate_node(&r, Some(&NodeSample::default()), 0, false, &at(W), &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].action, AlarmAction::Clear);
    }

    #[test]
    fn rollup_rules() {
        let r = rules(
            "[[aggregate.alarms]]\nname = \"many_down\"\nscope = \"group\"\nmetric = \"nodes.offline_pct\"\nop = \">=\"\nthreshold = 50\nclear_for = \"0s\"\n",
        );
        let mut rollup = Rollup::default();
        rollup.nodes.online = 1;
        rollup.nodes.offline = 1;
        let mut book = AlarmBook::default();
        let mut out = Vec::new();
        let at = At {
            path: "c/g",
            now_ms: 0,
        };
        book.evaluate_rollup(&r, AlarmScope::Cluster, &rollup, &at, &mut out);
        assert!(out.is_empty(), "a group rule is not a cluster rule");
        book.evaluate_rollup(&r, AlarmScope::Group, &rollup, &at, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].id, "many_down:c/g");
        assert_eq!(out[0].value, 50.0);
    }

    #[test]
    fn compile_errors() {
        let cfg = |t: &str| gridmon_nats::Config::from_toml(t).unwrap().aggregate;
        let w = Duration::from_secs(1);
        let bad_metric = cfg(
            "[[aggregate.alarms]]\nname = \"x\"\nmetric = \"cpu\"\nop = \">\"\nthreshold = 1\n",
        );
        assert!(matches!(
            RuleSet::compile(&bad_metric, w),
            Err(RuleError::UnknownMetric { .. })
        ));
        let group_needs_stat = cfg("[[aggregate.alarms]]\nname = \"x\"\nscope = \"group\"\nmetric = \"cpu_pct\"\nop = \">\"\nthreshold = 1\n");
        assert!(RuleSet::compile(&group_needs_stat, w).is_err());
        let ok = cfg("[[aggregate.alarms]]\nname = \"x\"\nscope = \"cluster\"\nmetric = \"cpu_pct.p95\"\nop = \">\"\nthreshold = 1\n");
        assert!(RuleSet::compile(&ok, w).is_ok());
        let shadow = cfg("[[aggregate.alarms]]\nname = \"node_offline\"\nmetric = \"cpu_pct\"\nop = \">\"\nthreshold = 1\n");
        assert_eq!(
            RuleSet::compile(&shadow, w),
            Err(RuleError::Shadows("node_offline".into()))
        );
        let typo = cfg("[aggregate]\ndisable_alarms = [\"fan_stoped\"]\n");
        assert!(matches!(
            RuleSet::compile(&typo, w),
            Err(RuleError::UnknownDisabled(_))
        ));
        let off = cfg("[aggregate]\nbuiltin_alarms = false\n");
        assert!(RuleSet::compile(&off, w).unwrap().rules.is_empty());
    }
}
