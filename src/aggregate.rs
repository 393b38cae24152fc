//! `gridmon aggregate`: subscribes one level down, folds, and publishes rollups, node events and
//! alarms one level up, for every scope this instance serves.
//!
//! One task owns every fold. It wakes for a message or for the next window close, whichever comes
//! first, so a rollup leaves within a millisecond or two of its window closing. Every instance
//! computes every window of the scopes it serves; only the leader of a scope publishes it. A
//! standby is therefore warm: on taking over it publishes the windows the old leader never did,
//! from its own recent history, and its alarm and liveness state is already right.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_nats::{Client, Message};
use bytes::Bytes;
use futures::StreamExt;
use gridmon_aggregators::alarm::RuleSet;
use gridmon_aggregators::group::GroupFold;
use gridmon_aggregators::upper::UpperFold;
use gridmon_aggregators::window::Params;
use gridmon_aggregators::Output;
use gridmon_nats::connect::connect;
use gridmon_nats::frame::{now_ms, Framer};
use gridmon_nats::leader::{key_for, LeaderConfig, Leadership};
use gridmon_nats::publish::{Outgoing, Publisher, Spool};
use gridmon_nats::wire::{
    encode, Envelope, InputStats, Kind, ReportRequest, Rollup, Source, WireError, SCHEMA_VERSION,
};
use gridmon_nats::{Config, Family, NodeId, Parsed, Scope, ScopePattern, Subjects};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// Windows of output kept per scope for a successor's hand-over.
const KEEP_WINDOWS: usize = 8;
/// Report requests are sent for groups discovered this many windows after start.
const DISCOVERY_WINDOWS: i64 = 2;

/// What to serve and how, resolved from config and flags before anything connects.
#[derive(Debug)]
pub struct Plan {
    patterns: Vec<ScopePattern>,
    instance: String,
    election: bool,
    rules: Arc<RuleSet>,
    params: Params,
}

impl Plan {
    /// Applies the command-line choices, validates, and compiles the alarm rules.
    pub fn new(
        config: &mut Config,
        serve: &[String],
        instance: Option<String>,
        no_election: bool,
    ) -> Result<Self, String> {
        let a = &mut config.aggregate;
        if !serve.is_empty() {
            a.serve = serve.to_vec();
        }
        if instance.is_some() {
            a.instance = instance;
        }
        if no_election {
            a.leader_election = false;
        }
        config.validate().map_err(|e| e.to_string())?;
        let a = &config.aggregate;
        let window = a.window(config.agent.interval);
        let rules = RuleSet::compile(a, window).map_err(|e| e.to_string())?;
        let patterns = a
            .serve
            .iter()
            .map(|s| ScopePattern::parse(s))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("aggregate.serve: {e}"))?;
        let instance = a.instance.clone().unwrap_or_else(|| {
            format!(
                "{}-{}",
                gridmon_nats::identity::hostname_token(),
                std::process::id()
            )
        });
        Ok(Self {
            patterns,
            instance,
            election: a.leader_election,
            rules: Arc::new(rules),
            params: Params::from_config(a, config.agent.interval),
        })
    }

    fn serves(&self, scope: &Scope) -> bool {
        self.patterns.iter().any(|p| p.matches(scope))
    }
}

pub async fn run(config: Config, plan: Plan, shutdown: CancellationToken) -> anyhow::Result<()> {
    let subjects = config.subjects()?;
    let client = connect(
        &config.nats,
        &format!("gridmon-aggregate-{}", plan.instance),
    )
    .await?;
    let tracker = TaskTracker::new();
    let leadership = if plan.election {
        let js = async_nats::jetstream::new(client.clone());
        let cfg = LeaderConfig {
            bucket: config.aggregate.leader_bucket.clone(),
            ttl: config
                .aggregate
                .leader_ttl_for(config.aggregate.window(config.agent.interval)),
            instance: plan.instance.clone(),
        };
        let (l, task) = Leadership::start(js, cfg, shutdown.clone())
            .await
            .context("leader election needs JetStream (run nats-server with -js), or pass --no-leader-election for a single instance")?;
        tracker.spawn(async move {
            let _ = task.await;
        });
        l
    } else {
        Leadership::always()
    };
    // Rollups go out as soon as they are made; a short outage is bridged by the spool.
    let spool = Spool::from_config(&config.spool);
    let publisher = Publisher::new(
        client.clone(),
        spool.clone(),
        config.nats.delivery,
        config.nats.ack_timeout,
        config.nats.reconnect_max_delay,
    );
    tracker.spawn(
        publisher
            .run(shutdown.clone(), None)
            .instrument(tracing::info_span!("publisher")),
    );

    // Inputs, and our own outputs: a standby learns from them which windows the leader has
    // published, so after a take-over it neither repeats nor skips one.
    let mut input_subjects: Vec<String> = plan
        .patterns
        .iter()
        .flat_map(|p| [p.inputs(&subjects), p.outputs(&subjects)])
        .collect();
    input_subjects.sort();
    input_subjects.dedup();
    let mut subs = Vec::new();
    for s in &input_subjects {
        subs.push(
            client
                .subscribe(s.clone())
                .await
                .with_context(|| format!("subscribing to {s}"))?,
        );
    }
    let reply_prefix = client.new_inbox();
    subs.push(
        client
            .subscribe(format!("{reply_prefix}.*"))
            .await
            .context("subscribing to the report-request inbox")?,
    );
    let mut inputs = futures::stream::select_all(subs);
    tracing::info!(
        instance = %plan.instance,
        serve = %plan.patterns.iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
        subjects = ?input_subjects,
        election = plan.election,
        "aggregator starting"
    );

    let started_ms = now_ms();
    let mut agg = Aggregator {
        subjects,
        client: client.clone(),
        spool,
        leadership,
        rules: plan.rules.clone(),
        params: plan.params,
        max_report_bytes: config.aggregate.max_report_bytes,
        request_reports: config.aggregate.request_reports,
        groups: HashMap::new(),
        clusters: HashMap::new(),
        grid: None,
        framers: HashMap::new(),
        seen_published: HashMap::new(),
        recent: HashMap::new(),
        run_id: u64::try_from(started_ms).unwrap_or(0),
        started_ms,
        reply_prefix,
        requested: Vec::new(),
        unattributed: 0,
        logged: HashSet::new(),
        out: Vec::new(),
        plan,
    };
    agg.start_explicit_scopes(started_ms).await;

    // One timer per close instant, kept across the messages that arrive meanwhile.
    let mut timer: Option<(i64, std::pin::Pin<Box<CloseSleep>>)> = None;
    loop {
        let due_ms = agg.next_close_ms();
        if due_ms.is_some() && timer.as_ref().map(|(t, _)| *t) != due_ms {
            timer = None;
        }
        // With nothing to close yet, look again within a second.
        let (_, sleep) = timer.get_or_insert_with(|| {
            let at = due_ms.unwrap_or_else(|| now_ms() + 1000);
            (at, Box::pin(sleep_until_wall_ms(at)))
        });
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            _ = sleep => timer = None,
            msg = inputs.next() => match msg {
                Some(m) => agg.handle(m).await,
                None => {
                    tracing::error!("the input subscriptions ended");
                    break;
                }
            },
        }
        agg.close_due(now_ms()).await;
    }
    tracing::info!("aggregator stopping");
    tracker.close();
    tracker.wait().await;
    // With the server gone a flush would wait for a reconnect that never comes.
    tokio::time::timeout(Duration::from_secs(2), client.flush())
        .await
        .ok();
    Ok(())
}

/// How much of a wait the runtime's timer covers; the rest is slept on a blocking thread.
const COARSE_MARGIN: Duration = Duration::from_millis(3);

type CloseSleep = dyn std::future::Future<Output = ()> + Send;

/// Returns at the wall-clock instant `at_ms`, to within tens of microseconds.
///
/// The runtime's timer has a granularity of a millisecond and fires after the deadline's
/// millisecond has passed, so alone it wakes a close 1–2 ms late, more when the machine is busy.
/// It covers the wait up to `COARSE_MARGIN` before the close; the rest is a plain thread sleep on
/// the blocking pool, which the kernel ends on time.
async fn sleep_until_wall_ms(at_ms: i64) {
    let wait = |at_ms: i64| {
        let now_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros());
        let us = (i128::from(at_ms) * 1000 - i128::try_from(now_us).unwrap_or(i128::MAX)).max(0);
        Duration::from_micros(u64::try_from(us).unwrap_or(u64::MAX))
    };
    let w = wait(at_ms);
    if w > COARSE_MARGIN {
        tokio::time::sleep(w - COARSE_MARGIN).await;
    }
    let rest = wait(at_ms);
    if !rest.is_zero() {
        // If the blocking pool is gone (shutting down), fall back to the runtime's timer.
        if tokio::task::spawn_blocking(move || std::thread::sleep(rest))
            .await
            .is_err()
        {
            tokio::time::sleep(rest).await;
        }
    }
}

/// Which fold a message feeds.
enum Route {
    Report(NodeId),
    GroupRollup { cluster: String, group: String },
    ClusterRollup { cluster: String },
}

struct Aggregator {
    plan: Plan,
    subjects: Subjects,
    client: Client,
    spool: Spool,
    leadership: Leadership,
    rules: Arc<RuleSet>,
    params: Params,
    max_report_bytes: usize,
    request_reports: bool,
    groups: HashMap<(String, String), GroupFold>,
    clusters: HashMap<String, UpperFold>,
    grid: Option<UpperFold>,
    framers: HashMap<Scope, Framer>,
    /// The latest window seen published on the bus, per scope we serve.
    seen_published: HashMap<Scope, i64>,
    /// Recent output per scope, by window start, for the hand-over to a successor.
    recent: HashMap<Scope, VecDeque<(i64, Vec<Outgoing>)>>,
    run_id: u64,
    started_ms: i64,
    reply_prefix: String,
    /// The groups asked for reports; the reply subject's last token indexes this.
    requested: Vec<(String, String)>,
    unattributed: u64,
    /// (scope, reason) already logged, so a bad publisher is logged once, not per message.
    logged: HashSet<(String, &'static str)>,
    out: Vec<Output>,
}

impl Aggregator {
    /// Folds for the scopes named without wildcards exist from the start, so they publish (and
    /// ask for reports) even before any input.
    async fn start_explicit_scopes(&mut self, now: i64) {
        let patterns = self.plan.patterns.clone();
        for p in patterns {
            match p {
                ScopePattern::Grid => {
                    self.grid_fold(now);
                }
                ScopePattern::Cluster {
                    cluster: Some(c), ..
                } => {
                    self.cluster_fold(&c, now);
                }
                ScopePattern::Group {
                    cluster: Some(c),
                    group: Some(g),
                } => {
                    self.group_fold(&c, &g, now);
                    self.request_reports(&c, &g).await;
                }
                _ => {}
            }
        }
    }

    fn group_fold(&mut self, c: &str, g: &str, now: i64) -> &mut GroupFold {
        let (params, rules) = (self.params, self.rules.clone());
        let leadership = &self.leadership;
        self.groups
            .entry((c.to_string(), g.to_string()))
            .or_insert_with(|| {
                leadership.campaign(&scope_key(&Scope::Group {
                    cluster: c.into(),
                    group: g.into(),
                }));
                tracing::info!(group = %format!("{c}/{g}"), "serving group");
                GroupFold::new(c, g, params, rules, now)
            })
    }

    fn cluster_fold(&mut self, c: &str, now: i64) -> &mut UpperFold {
        let (params, rules) = (self.params, self.rules.clone());
        let leadership = &self.leadership;
        self.clusters.entry(c.to_string()).or_insert_with(|| {
            leadership.campaign(&scope_key(&Scope::Cluster { cluster: c.into() }));
            tracing::info!(cluster = %c, "serving cluster");
            UpperFold::cluster(c, params, rules, now)
        })
    }

    fn grid_fold(&mut self, now: i64) -> &mut UpperFold {
        let (params, rules) = (self.params, self.rules.clone());
        let leadership = &self.leadership;
        self.grid.get_or_insert_with(|| {
            leadership.campaign(&scope_key(&Scope::Grid));
            tracing::info!("serving the grid");
            UpperFold::grid(params, rules, now)
        })
    }

    fn next_close_ms(&self) -> Option<i64> {
        self.groups
            .values()
            .map(GroupFold::next_close_ms)
            .chain(self.clusters.values().map(UpperFold::next_close_ms))
            .chain(self.grid.iter().map(UpperFold::next_close_ms))
            .min()
    }

    /// Logs a dropped input once per scope and reason.
    fn note(&mut self, scope: &str, reason: &'static str, detail: &dyn std::fmt::Display) {
        if self.logged.len() < 10_000 && self.logged.insert((scope.to_string(), reason)) {
            tracing::warn!(%scope, reason, %detail, "input dropped (counted in the rollup's input stats; further drops of this kind are not logged)");
        }
    }

    async fn handle(&mut self, msg: Message) {
        let now = now_ms();
        if let Some(idx) = msg
            .subject
            .strip_prefix(self.reply_prefix.as_str())
            .and_then(|s| s.strip_prefix('.'))
        {
            // A status (503: nobody in that group answers) is not a reply.
            if msg.status.is_none() {
                self.handle_reply(idx, &msg.payload, now);
            }
            return;
        }
        let route = match self.subjects.parse(&msg.subject) {
            Ok(Parsed::Telemetry(Scope::Node(id))) => Route::Report(id),
            Ok(Parsed::Telemetry(Scope::Group { cluster, group })) => {
                Route::GroupRollup { cluster, group }
            }
            Ok(Parsed::Telemetry(Scope::Cluster { cluster })) => Route::ClusterRollup { cluster },
            Ok(Parsed::Telemetry(Scope::Grid)) => {
                self.observe_published(&Scope::Grid, &msg.payload);
                return;
            }
            // Wildcard overlap with non-telemetry subjects.
            Ok(_) => return,
            Err(e) => {
                self.unattributed += 1;
                self.note("?", "bad subject", &e);
                return;
            }
        };
        match route {
            Route::Report(id) => {
                let group = Scope::Group {
                    cluster: id.cluster.clone(),
                    group: id.group.clone(),
                };
                if !self.plan.serves(&group) {
                    return;
                }
                let discovered = !self
                    .groups
                    .contains_key(&(id.cluster.clone(), id.group.clone()));
                self.fold_report(&id, &msg.payload, now);
                if discovered
                    && self.request_reports
                    && now < self.started_ms + DISCOVERY_WINDOWS * self.params.window_ms
                {
                    self.request_reports(&id.cluster, &id.group).await;
                }
            }
            Route::GroupRollup { cluster, group } => {
                let scope = Scope::Group {
                    cluster: cluster.clone(),
                    group: group.clone(),
                };
                if self.plan.serves(&scope) {
                    self.observe_published(&scope, &msg.payload);
                }
                if !self.plan.serves(&Scope::Cluster {
                    cluster: cluster.clone(),
                }) {
                    return;
                }
                let expected = Source {
                    cluster: cluster.clone(),
                    group: Some(group.clone()),
                    node: None,
                };
                let fold = self.cluster_fold(&cluster, now);
                if let Some(r) = check_rollup(fold.stats_mut(), &msg.payload, &expected) {
                    fold.offer(&group, r, now);
                }
            }
            Route::ClusterRollup { cluster } => {
                let scope = Scope::Cluster {
                    cluster: cluster.clone(),
                };
                if self.plan.serves(&scope) {
                    self.observe_published(&scope, &msg.payload);
                }
                if !self.plan.serves(&Scope::Grid) {
                    return;
                }
                let expected = Source {
                    cluster: cluster.clone(),
                    group: None,
                    node: None,
                };
                let fold = self.grid_fold(now);
                if let Some(r) = check_rollup(fold.stats_mut(), &msg.payload, &expected) {
                    fold.offer(&cluster, r, now);
                }
            }
        }
    }

    /// Notes the window of a rollup seen on the bus for a scope we serve (ours or a peer's).
    fn observe_published(&mut self, scope: &Scope, payload: &Bytes) {
        // Byte jumps to the one field wanted: the leader reads its own 41 KB rollups back here
        // at the busiest instant of the window.
        if let Some(start) = gridmon_nats::skim::rollup_window_start(payload) {
            let seen = self.seen_published.entry(scope.clone()).or_insert(i64::MIN);
            *seen = (*seen).max(start);
        }
    }

    /// A reply to a report request: a node report from the group asked.
    fn handle_reply(&mut self, idx: &str, payload: &Bytes, now: i64) {
        let Some((c, g)) = idx
            .parse::<usize>()
            .ok()
            .and_then(|i| self.requested.get(i).cloned())
        else {
            return;
        };
        // The reply's subject is our inbox, so the identity comes from the payload and must be
        // a node of the group asked.
        let node = match gridmon_nats::wire::peek(payload) {
            Ok(h) if h.source.cluster == c && h.source.group.as_deref() == Some(g.as_str()) => {
                h.source.node.clone()
            }
            _ => None,
        };
        match node.and_then(|n| NodeId::new(c.clone(), g.clone(), n).ok()) {
            Some(id) => self.fold_report(&id, payload, now),
            None => {
                let fold = self.group_fold(&c, &g, now);
                fold.stats_mut().received += 1;
                fold.stats_mut().identity_mismatch += 1;
            }
        }
    }

    fn fold_report(&mut self, id: &NodeId, payload: &Bytes, now: i64) {
        let max = self.max_report_bytes;
        let path = format!("{}/{}", id.cluster, id.group);
        let fold = self.group_fold(&id.cluster, &id.group, now);
        if payload.len() > max {
            fold.stats_mut().received += 1;
            fold.stats_mut().oversize += 1;
            let d = format!("{} bytes from {}", payload.len(), id.node);
            self.note(&path, "oversize", &d);
            return;
        }
        match gridmon_nats::skim::decode_report_view(payload) {
            Ok(env) => {
                let s = &env.source;
                if s.cluster != id.cluster
                    || s.group.as_deref() != Some(id.group.as_str())
                    || s.node.as_deref() != Some(id.node.as_str())
                {
                    fold.stats_mut().received += 1;
                    fold.stats_mut().identity_mismatch += 1;
                    let d = format!("subject says {id}, payload says {s:?}");
                    self.note(&path, "identity mismatch", &d);
                    return;
                }
                if let Err(why) =
                    fold.offer(&id.node, env.ts_ms, env.run_id, env.seq, &env.body, now)
                {
                    if why != gridmon_aggregators::group::Refused::Duplicate {
                        let d = format!("{:?} from {}", why, id.node);
                        self.note(&path, "refused", &d);
                    }
                }
            }
            Err(e) => {
                count_wire_error(fold.stats_mut(), &e);
                let d = format!("{}: {e}", id.node);
                self.note(&path, "undecodable", &d);
            }
        }
    }

    /// Asks the agents of a group for their latest report; replies arrive on our inbox.
    async fn request_reports(&mut self, c: &str, g: &str) {
        if !self.request_reports {
            return;
        }
        let idx = self.requested.len();
        self.requested.push((c.to_string(), g.to_string()));
        let env = Envelope {
            schema: SCHEMA_VERSION,
            kind: Kind::ReportRequest,
            source: Source {
                cluster: c.into(),
                group: Some(g.into()),
                node: None,
            },
            ts_ms: now_ms(),
            run_id: self.run_id,
            seq: idx as u64 + 1,
            body: ReportRequest {
                requester: self.plan.instance.clone(),
            },
        };
        let Ok(payload) = encode(&env) else { return };
        let subject = self.subjects.family(
            Family::Cmd,
            &Scope::Group {
                cluster: c.into(),
                group: g.into(),
            },
        );
        let reply = format!("{}.{idx}", self.reply_prefix);
        if let Err(e) = self
            .client
            .publish_with_reply(subject, reply, payload.into())
            .await
        {
            tracing::warn!(error = %e, group = %format!("{c}/{g}"), "could not ask for reports");
        }
    }

    /// Closes what is due, handing each scope's rollup to the publisher as soon as it is made:
    /// with many groups in one process, the first is on the bus before the last is folded.
    async fn close_due(&mut self, now: i64) {
        let mut out = std::mem::take(&mut self.out);
        let groups: Vec<_> = self
            .groups
            .iter()
            .filter(|(_, f)| f.next_close_ms() <= now)
            .map(|(k, _)| k.clone())
            .collect();
        if groups.len() > 1 {
            // Several groups close at this instant: fold them side by side on the blocking
            // pool and send each rollup as soon as it is made, so the last group of a process
            // serving many does not wait for all the others.
            let mut jobs: futures::stream::FuturesUnordered<_> = groups
                .into_iter()
                .filter_map(|k| self.groups.remove(&k).map(|f| (k, f)))
                .map(|(k, mut f)| {
                    tokio::task::spawn_blocking(move || {
                        let mut out = Vec::new();
                        f.close_due(now, &mut out);
                        (k, f, out)
                    })
                })
                .collect();
            while let Some(done) = jobs.next().await {
                match done {
                    Ok((k, f, mut group_out)) => {
                        self.groups.insert(k, f);
                        self.emit(&mut group_out);
                        // Let the publisher send it before the next one is framed.
                        tokio::task::yield_now().await;
                    }
                    // A bug that panicked in the fold, or the runtime shutting down: the
                    // group's state is gone and is rebuilt from its next reports.
                    Err(e) => tracing::error!(error = %e, "a group's window could not be closed"),
                }
            }
        } else {
            for k in groups {
                if let Some(f) = self.groups.get_mut(&k) {
                    f.close_due(now, &mut out);
                    self.emit(&mut out);
                }
            }
        }
        let clusters: Vec<_> = self
            .clusters
            .iter()
            .filter(|(_, f)| f.next_close_ms() <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for k in clusters {
            if let Some(f) = self.clusters.get_mut(&k) {
                f.close_due(now, &mut out);
                self.emit(&mut out);
            }
        }
        if let Some(f) = &mut self.grid {
            f.close_due(now, &mut out);
        }
        self.emit(&mut out);
        self.out = out;
    }

    /// Frames the outputs, files them under their scope's window, and publishes those of the
    /// scopes this instance leads (first, after a take-over, the windows the old leader missed).
    fn emit(&mut self, out: &mut Vec<Output>) {
        // Group outputs per rollup scope: events and alarms travel with their window's rollup.
        let mut pending: Vec<Outgoing> = Vec::new();
        for o in out.drain(..) {
            match o {
                Output::Event { node, ts_ms, event } => {
                    let scope = Scope::Node(node.clone());
                    let subject = self.subjects.family(Family::Event, &scope);
                    if let Some(m) = self.frame(&scope, Kind::Event, subject, ts_ms, &event, None) {
                        pending.push(m);
                    }
                }
                Output::Alarm { scope, event } => {
                    let subject = self.subjects.family(Family::Alarm, &scope);
                    let id = format!("{}:{:?}:{}", event.id, event.action, event.raised_ms);
                    if let Some(m) =
                        self.frame(&scope, Kind::Alarm, subject, event.ts_ms, &event, Some(id))
                    {
                        pending.push(m);
                    }
                }
                Output::Rollup {
                    scope,
                    close_ms,
                    rollup,
                } => {
                    let subject = self.subjects.telemetry(&scope);
                    let key = scope_key(&scope);
                    let id = format!("{key}:rollup:{}", rollup.window_start_ms);
                    let window = rollup.window_start_ms;
                    if let Some(m) =
                        self.frame(&scope, Kind::Rollup, subject, close_ms, &rollup, Some(id))
                    {
                        pending.push(m);
                    }
                    self.file(&scope, &key, window, std::mem::take(&mut pending));
                }
            }
        }
    }

    fn frame<B: serde::Serialize>(
        &mut self,
        scope: &Scope,
        kind: Kind,
        subject: String,
        ts_ms: i64,
        body: &B,
        msg_id: Option<String>,
    ) -> Option<Outgoing> {
        let run_id = self.run_id;
        let framer = self
            .framers
            .entry(scope.clone())
            .or_insert_with(|| Framer::new(source_of(scope), run_id));
        match framer.frame(kind, subject, ts_ms, body) {
            Ok(mut m) => {
                if let Some(id) = msg_id {
                    m.msg_id = id;
                }
                Some(m)
            }
            Err(e) => {
                tracing::error!(error = %e, %scope, "cannot encode; skipped");
                None
            }
        }
    }

    /// Keeps a window's messages and publishes them if we lead the scope.
    fn file(&mut self, scope: &Scope, key: &str, window: i64, msgs: Vec<Outgoing>) {
        let recent = self.recent.entry(scope.clone()).or_default();
        recent.push_back((window, msgs));
        while recent.len() > KEEP_WINDOWS {
            recent.pop_front();
        }
        if !self.leadership.is_leader(key) {
            return;
        }
        // After a take-over: resume after the last window the previous leader published, as
        // its lease says or as seen on the bus, whichever is later.
        let resume_after = match self.leadership.take_handover(key) {
            Some(h) => {
                let seen = self.seen_published.get(scope).copied();
                tracing::info!(scope = %scope, previous = %h.previous_holder, last_window = ?h.last_window_ms, seen_on_bus = ?seen, "took over");
                h.last_window_ms
                    .into_iter()
                    .chain(seen)
                    .max()
                    .unwrap_or(window - 1)
            }
            None => window - 1,
        };
        let mut last = None;
        for (w, msgs) in recent.iter_mut().filter(|(w, _)| *w > resume_after) {
            for m in msgs.drain(..) {
                self.spool.push(m);
            }
            last = Some(*w);
        }
        if let Some(w) = last {
            self.leadership.published(key, w);
        }
    }
}

/// Decodes and checks a member rollup, without its member lines (no upper fold reads them);
/// counts what it drops.
fn check_rollup(stats: &mut InputStats, payload: &Bytes, expected: &Source) -> Option<Rollup> {
    match gridmon_nats::skim::decode_rollup_summary(payload) {
        Ok(env) if env.source == *expected => Some(env.body),
        Ok(_) => {
            stats.received += 1;
            stats.identity_mismatch += 1;
            None
        }
        Err(e) => {
            count_wire_error(stats, &e);
            None
        }
    }
}

fn count_wire_error(stats: &mut InputStats, e: &WireError) {
    stats.received += 1;
    match e {
        WireError::UnsupportedSchema(_) => stats.unknown_schema += 1,
        WireError::UnexpectedKind { .. } => stats.wrong_kind += 1,
        WireError::Malformed(_) | WireError::Encode(_) => stats.malformed += 1,
    }
}

fn source_of(scope: &Scope) -> Source {
    match scope {
        Scope::Grid => Source::default(),
        Scope::Cluster { cluster } => Source {
            cluster: cluster.clone(),
            group: None,
            node: None,
        },
        Scope::Group { cluster, group } => Source {
            cluster: cluster.clone(),
            group: Some(group.clone()),
            node: None,
        },
        Scope::Node(id) => Source::from(id),
    }
}

/// The leadership key of a scope.
fn scope_key(scope: &Scope) -> String {
    match scope {
        Scope::Grid => key_for(&["grid"]),
        Scope::Cluster { cluster } => key_for(&["cluster", cluster]),
        Scope::Group { cluster, group } => key_for(&["group", cluster, group]),
        Scope::Node(id) => key_for(&["node", &id.cluster, &id.group, &id.node]),
    }
}
