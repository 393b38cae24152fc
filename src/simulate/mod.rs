//! `gridmon simulate`: a fleet of simulated nodes publishing realistic node reports and
//! inventories on the real subjects, with injected faults, and answering report requests as
//! agents do; with `--commands`, each node also registers itself and answers read-only commands
//! (`commands.rs`).
//!
//! The fleet ([`fleet::Fleet`]) is pure: each node keeps its report and mutates it in place every
//! tick. The runtime here moves the nodes to the blocking pool to update and encode the next
//! boundary's reports ahead of it, so encoding never stalls the current-thread runtime (which
//! keeps answering report requests) and uses at most one extra core; at the boundary the batch
//! is published on core NATS and flushed once.

mod commands;
mod fleet;
mod inventory;
mod procs;
mod rng;
mod sensors;
#[cfg(test)]
mod tests;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use async_nats::{Client, HeaderMap, Subject};
use clap::Args;
use futures::StreamExt;
use gridmon_nats::connect::connect;
use gridmon_nats::frame::now_ms;
use gridmon_nats::publish::Outgoing;
use gridmon_nats::wire::{self, Kind, ReportRequest, WireError};
use gridmon_nats::{Config, Family, Scope, Subjects};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::Common;
use fleet::{FaultCounts, Fleet, Group, Spec};

/// How long the end-of-tick flush may take before the tick is left to finish on its own.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the flush at exit may take (the agent's spool drains for as long).
const FINAL_FLUSH_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, Args)]
pub struct SimulateArgs {
    #[command(flatten)]
    pub common: Common,
    /// Simulated nodes, named n0001, n0002, … (unique across the fleet).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..))]
    pub nodes: u32,
    /// Clusters, named c01, c02, …
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub clusters: u32,
    /// Groups per cluster, named g01, g02, …; nodes are spread round-robin over all groups.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
    pub groups: u32,
    /// Rows in each process table.
    #[arg(long, default_value_t = 50)]
    pub processes: u32,
    /// Include the process table in every K-th report.
    #[arg(long, value_name = "K", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub process_every: u32,
    /// Reports per node per second (0.2 = one every 5 s), on wall-clock boundaries of 1/rate.
    #[arg(long, value_name = "HZ", default_value_t = 1.0, value_parser = parse_rate)]
    pub rate: f64,
    /// Stop after this long (e.g. `30s`, `5m`); default: until SIGINT/SIGTERM.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Seed of the per-node variation; the same seed gives the same fleet.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Supervised programs per node (worker-1, worker-2, …), normally running.
    #[arg(long, value_name = "K", default_value_t = 2)]
    pub programs: u32,
    /// Faults start this long after the simulator started.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
    pub fault_after: Duration,
    /// Nodes that stop publishing and stop answering report requests.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub silent: u32,
    /// Nodes whose CPU package temperature sits at or beyond its critical limit (100 °C).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub overheat: u32,
    /// Nodes whose CPU fan (minimum 600 RPM) reads 0 RPM.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub fan_stop: u32,
    /// Nodes whose program worker-1 is crashed, its restart count rising every report.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub crash: u32,
    /// Nodes whose CPU swings between about 10 % and 97 % every report.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub flap: u32,
    /// Each node publishes its inventory at start and then this often.
    #[arg(long, value_name = "D", value_parser = humantime::parse_duration, default_value = "1h")]
    pub inventory_every: Duration,
    /// At exit, print one JSON line of totals to stdout.
    #[arg(long)]
    pub json_stats: bool,
    /// Every node registers itself in the registry (`commands.registry_bucket`, every
    /// `commands.registry_every`) and answers commands on its own subject: read-only ones from
    /// its simulated programs, checked against `[commands]` issuers like an agent's.
    #[arg(long)]
    pub commands: bool,
}

/// Reports per second: from one a day to 1000 a second.
fn parse_rate(text: &str) -> Result<f64, String> {
    let rate: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number"))?;
    if !(1.0 / 86_400.0..=1000.0).contains(&rate) {
        return Err(format!(
            "{text}: must be between 1/86400 (one a day) and 1000 reports per second"
        ));
    }
    Ok(rate)
}

impl SimulateArgs {
    /// The validated simulation spec.
    fn spec(&self) -> Result<Spec, String> {
        let spec = Spec {
            nodes: self.nodes,
            clusters: self.clusters,
            groups: self.groups,
            processes: self.processes,
            process_every: self.process_every,
            interval: Duration::from_secs_f64(1.0 / self.rate),
            seed: self.seed,
            programs: self.programs,
            faults: FaultCounts {
                silent: self.silent,
                overheat: self.overheat,
                fan_stop: self.fan_stop,
                crash: self.crash,
                flap: self.flap,
            },
            fault_after: self.fault_after,
            inventory_every: self.inventory_every,
        };
        spec.validate()?;
        Ok(spec)
    }
}

/// Totals of one run.
#[derive(Debug, Default, Clone, Copy)]
struct Stats {
    /// Node reports.
    published: u64,
    inventories: u64,
    /// Payload bytes of both.
    bytes: u64,
    errors: u64,
    ticks: u64,
    /// Boundaries passed while the previous tick was still being published.
    missed_ticks: u64,
    replies: u64,
}

pub async fn run(
    config: Config,
    args: SimulateArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let spec = args
        .spec()
        .map_err(|e| anyhow::anyhow!("bad simulate flags: {e}"))?;
    let subjects = config.subjects()?;
    let start_ms = now_ms();
    let run_id = u64::try_from(start_ms).unwrap_or(0);
    let fleet = Fleet::new(&spec, &subjects, run_id, start_ms)?;
    if spec.processes > 3000 {
        tracing::warn!(
            processes = spec.processes,
            "reports with this many processes may exceed the server's max_payload (1 MB default)"
        );
    }
    let faulty = fault_plan(&fleet);
    let client = connect(&config.nats, "gridmon-simulate").await?;
    tracing::info!(
        nodes = spec.nodes,
        clusters = spec.clusters,
        groups = spec.clusters * spec.groups,
        processes = spec.processes,
        rate = args.rate,
        servers = ?config.nats.servers,
        "simulating a fleet"
    );
    if !faulty.is_empty() {
        tracing::info!(
            after = %humantime::format_duration(spec.fault_after),
            plan = %faulty,
            "faults planned"
        );
    }

    let latest = Latest::new(fleet.nodes.len());
    let stop = shutdown.child_token();
    let tracker = TaskTracker::new();
    let responder = {
        let subs = subscribe_requests(&client, &subjects, &fleet.groups).await?;
        tracker.spawn(
            answer_requests(
                client.clone(),
                subs,
                fleet.groups.clone(),
                latest.clone(),
                stop.clone(),
            )
            .instrument(tracing::info_span!("report_requests")),
        )
    };
    let programs = args.commands.then(|| {
        commands::Programs::new(
            fleet
                .nodes
                .iter()
                .map(|n| Some(n.programs().to_vec()))
                .collect(),
        )
    });
    let command_responder = match &programs {
        Some(programs) => {
            // Its own connection: replies never queue behind a tick's reports.
            let cmd_client = connect(&config.nats, "gridmon-simulate-commands").await?;
            let ids: Vec<_> = fleet.nodes.iter().map(|n| n.id.clone()).collect();
            let responder = commands::Responder::new(
                cmd_client.clone(),
                subjects.clone(),
                &ids,
                &config.commands,
                programs.clone(),
                latest.clone(),
                run_id,
            );
            tracker.spawn(
                {
                    let programs = programs.clone();
                    gridmon_nats::registry::keep_fresh(
                        async_nats::jetstream::new(cmd_client),
                        config.commands.registry_bucket.clone(),
                        config.commands.registry_every,
                        "simulated".into(),
                        move || {
                            programs
                                .names()
                                .into_iter()
                                .filter_map(|(i, names)| Some((ids.get(i)?.clone(), names)))
                                .collect()
                        },
                        stop.clone(),
                    )
                }
                .instrument(tracing::info_span!("registry")),
            );
            Some(
                tracker.spawn(
                    responder
                        .run(stop.clone())
                        .instrument(tracing::info_span!("commands")),
                ),
            )
        }
        None => None,
    };
    tracker.close();

    let started = Instant::now();
    let deadline = args.duration.map(|d| tokio::time::Instant::now() + d);
    let mut publishers = vec![client.clone()];
    for _ in 1..publish_connections(spec.nodes) {
        publishers.push(connect(&config.nats, "gridmon-simulate").await?);
    }
    let stats = publish_loop(
        &publishers,
        fleet,
        &spec,
        &latest,
        programs.as_ref(),
        &shutdown,
        deadline,
    )
    .await;
    stop.cancel();
    tracker.wait().await;
    let mut replies = responder.await.unwrap_or(0);
    if let Some(r) = command_responder {
        match r.await {
            Ok(Ok(n)) => replies += n,
            Ok(Err(e)) => tracing::warn!(error = %e, "commands were not answered"),
            Err(e) => tracing::warn!(error = %e, "the command responder failed"),
        }
    }
    let stats = Stats { replies, ..stats? };
    if tokio::time::timeout(FINAL_FLUSH_TIMEOUT, flush_all(&publishers))
        .await
        .is_err()
    {
        tracing::warn!("the final flush timed out");
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu_s = self_cpu_seconds();
    tracing::info!(
        published = stats.published,
        inventories = stats.inventories,
        bytes = stats.bytes,
        errors = stats.errors,
        seconds = format_args!("{seconds:.1}"),
        nodes = spec.nodes,
        ticks = stats.ticks,
        missed_ticks = stats.missed_ticks,
        replies = stats.replies,
        reports_per_s = format_args!("{:.1}", stats.published as f64 / seconds.max(0.001)),
        mb_per_s = format_args!("{:.1}", stats.bytes as f64 / 1e6 / seconds.max(0.001)),
        cpu_pct = format_args!("{:.1}", 100.0 * cpu_s / seconds.max(0.001)),
        "simulation finished"
    );
    if args.json_stats {
        let line = serde_json::json!({
            "published": stats.published,
            "bytes": stats.bytes,
            "errors": stats.errors,
            "seconds": seconds,
            "nodes": spec.nodes,
        });
        println!("{line}");
    }
    Ok(())
}

/// `silent: c01/g02/n0002, c01/g02/n0004; overheat: …` for the start-up log; empty without faults.
fn fault_plan(fleet: &Fleet) -> String {
    let mut parts = Vec::new();
    for (k, (flag, _)) in fleet::Faults::default().by_flag().iter().enumerate() {
        let nodes: Vec<String> = fleet
            .nodes
            .iter()
            .filter(|n| n.faults.by_flag()[k].1)
            .map(|n| n.id.to_string())
            .collect();
        if !nodes.is_empty() {
            parts.push(format!("{flag}: {}", nodes.join(", ")));
        }
    }
    parts.join("; ")
}

/// The wall-clock boundary after `now_ns` on a grid of `step_ns`: its number and its time in ns.
fn next_boundary(now_ns: u128, step_ns: u128) -> (u128, u128) {
    let step = step_ns.max(1);
    let idx = now_ns / step + 1;
    (idx, idx * step)
}

fn wall_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos()
}

/// Publishes every node's report on every boundary until shutdown or the deadline.
///
/// The reports for a boundary are made and encoded *before* it, on the blocking pool: simulated
/// values need not wait for the interval to pass, and this way the whole fleet goes out right at
/// the boundary, as a real fleet's reports do, instead of trickling out while encoding runs
/// (aggregators close a window a short grace after its end).
async fn publish_loop(
    clients: &[Client],
    fleet: Fleet,
    spec: &Spec,
    latest: &Latest,
    programs: Option<&commands::Programs>,
    shutdown: &CancellationToken,
    deadline: Option<tokio::time::Instant>,
) -> anyhow::Result<Stats> {
    let want_programs = programs.is_some();
    let step_ns = spec.interval.as_nanos().max(1);
    let mut stats = Stats::default();
    let mut fleet = fleet;
    let mut nodes = std::mem::take(&mut fleet.nodes);
    let mut logged_error = false;
    let mut last_overrun_log: Option<Instant> = None;
    let mut idx = next_boundary(wall_ns(), step_ns).0;
    loop {
        let at_ns = idx * step_ns;
        let ts_ms = i64::try_from(at_ns / 1_000_000).unwrap_or(i64::MAX);
        let t = fleet.tick(u64::try_from(idx).unwrap_or(u64::MAX), ts_ms);
        let began = Instant::now();
        let job = tokio::task::spawn_blocking(move || {
            let out: Vec<Produced> = nodes
                .iter_mut()
                .map(|n| {
                    let out = n.frame(&t);
                    let programs = (want_programs && out.is_some()).then(|| n.programs().to_vec());
                    Produced {
                        node: n.index,
                        out,
                        inventory: n.frame_inventory(&t),
                        programs,
                    }
                })
                .collect();
            (nodes, out)
        });
        let batch = tokio::select! {
            r = job => {
                let (back, batch) = r.context("the report generator panicked")?;
                nodes = back;
                batch
            }
            _ = shutdown.cancelled() => break,
            _ = until(deadline) => break,
        };
        let encode_ms = began.elapsed().as_millis() as u64;
        let wait =
            Duration::from_nanos(u64::try_from(at_ns.saturating_sub(wall_ns())).unwrap_or(0));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.cancelled() => break,
            _ = until(deadline) => break,
        }
        let late_ms = u64::try_from(wall_ns().saturating_sub(at_ns) / 1_000_000).unwrap_or(0);
        let publishing = Instant::now();
        // Publishing waits when the bus is away (the client's queue is full): stay stoppable. The
        // deadline does not cut a tick short unless the tick is stuck.
        let publish = async {
            publish_batch(
                clients,
                batch,
                latest,
                programs,
                &mut stats,
                &mut logged_error,
            )
            .await;
            if tokio::time::timeout(FLUSH_TIMEOUT, flush_all(clients))
                .await
                .is_err()
            {
                tracing::warn!("flush timed out");
            }
        };
        tokio::select! {
            _ = publish => {}
            _ = shutdown.cancelled() => break,
            _ = until(deadline.map(|d| d + FLUSH_TIMEOUT)) => break,
        }
        stats.ticks += 1;
        tracing::debug!(
            tick = t.tick,
            encode_ms,
            late_ms,
            publish_ms = publishing.elapsed().as_millis() as u64,
            published = stats.published,
            "tick published"
        );
        let want = idx + 1;
        let next = next_boundary(wall_ns(), step_ns).0;
        if next > want {
            stats.missed_ticks += u64::try_from(next - want).unwrap_or(u64::MAX);
            if last_overrun_log.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                tracing::warn!(
                    missed = stats.missed_ticks,
                    encode_ms,
                    "making and publishing a tick took longer than the interval: boundaries were skipped"
                );
                last_overrun_log = Some(Instant::now());
            }
        }
        idx = next.max(want);
    }
    Ok(stats)
}

/// Flushes every connection at once; failures are left to the reconnect logic.
async fn flush_all(clients: &[Client]) {
    let flushes = clients.iter().map(|c| c.flush());
    for r in futures::future::join_all(flushes).await {
        if let Err(e) = r {
            tracing::debug!(error = %e, "flush failed");
        }
    }
}

/// Connections the reports are spread over. A real fleet publishes over one connection per
/// node and the server reads them in parallel; one connection for the whole simulated fleet
/// would serialise the server's work and stretch the boundary burst.
fn publish_connections(nodes: u32) -> usize {
    (nodes as usize).div_ceil(250).clamp(1, 4)
}

async fn until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// What one node produced in one tick.
struct Produced {
    node: usize,
    /// The report; `None`: the node is silent.
    out: Option<Result<Outgoing, WireError>>,
    /// The inventory, when it is due.
    inventory: Option<Result<Outgoing, WireError>>,
    /// Its programs after this tick, with `--commands`; `None` also when the node is silent.
    programs: Option<Vec<gridmon_nats::wire::ProgramStatus>>,
}

/// Publishes one tick's reports and inventories (core NATS, with the `Nats-Msg-Id` header like
/// the agent's) and remembers the reports for report requests; silent nodes are forgotten.
async fn publish_batch(
    clients: &[Client],
    batch: Vec<Produced>,
    latest: &Latest,
    programs: Option<&commands::Programs>,
    stats: &mut Stats,
    logged_error: &mut bool,
) {
    let mut updates: Vec<(usize, Option<Outgoing>)> = Vec::with_capacity(batch.len());
    let mut program_updates = Vec::new();
    for p in batch {
        if programs.is_some() {
            program_updates.push((p.node, p.programs));
        }
        let Some(client) = clients.get(p.node % clients.len().max(1)) else {
            continue;
        };
        match p.out {
            None => updates.push((p.node, None)),
            Some(out) => {
                if let Some(o) = publish_one(client, out, stats, logged_error).await {
                    stats.published += 1;
                    updates.push((p.node, Some(o)));
                }
            }
        }
        if let Some(out) = p.inventory {
            if publish_one(client, out, stats, logged_error)
                .await
                .is_some()
            {
                stats.inventories += 1;
            }
        }
    }
    latest.set(updates);
    if let Some(programs) = programs {
        programs.set(program_updates);
    }
}

/// Publishes one framed message; returns it when it was handed to the client. Failures are
/// counted, and the first one logged.
async fn publish_one(
    client: &Client,
    out: Result<Outgoing, WireError>,
    stats: &mut Stats,
    logged_error: &mut bool,
) -> Option<Outgoing> {
    let o = match out {
        Ok(o) => o,
        Err(e) => {
            stats.errors += 1;
            if !std::mem::replace(logged_error, true) {
                tracing::error!(error = %e, "cannot encode a message (further errors are only counted)");
            }
            return None;
        }
    };
    let mut headers = HeaderMap::new();
    headers.insert(async_nats::header::NATS_MESSAGE_ID, o.msg_id.as_str());
    let subject = Subject::from(o.subject.as_str());
    match client
        .publish_with_headers(subject, headers, o.payload.clone())
        .await
    {
        Ok(()) => {
            stats.bytes += o.payload.len() as u64;
            Some(o)
        }
        Err(e) => {
            stats.errors += 1;
            if !std::mem::replace(logged_error, true) {
                tracing::error!(error = %e, "publish failed (further errors are only counted)");
            }
            None
        }
    }
}

/// Each node's last published report, exactly as sent, for report requests.
#[derive(Debug, Clone)]
struct Latest(Arc<Mutex<Vec<Option<Outgoing>>>>);

impl Latest {
    fn new(nodes: usize) -> Self {
        Self(Arc::new(Mutex::new(vec![None; nodes])))
    }

    fn set(&self, updates: Vec<(usize, Option<Outgoing>)>) {
        let mut v = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for (i, b) in updates {
            if let Some(slot) = v.get_mut(i) {
                *slot = b;
            }
        }
    }

    fn of(&self, members: &[usize]) -> Vec<Outgoing> {
        let v = self.0.lock().unwrap_or_else(|p| p.into_inner());
        members
            .iter()
            .filter_map(|&i| v.get(i).cloned().flatten())
            .collect()
    }
}

type Requests =
    futures::stream::SelectAll<futures::stream::BoxStream<'static, (usize, async_nats::Message)>>;

/// Subscribes to `<p>.cmd.<cluster>.<group>` for every simulated group.
async fn subscribe_requests(
    client: &Client,
    subjects: &Subjects,
    groups: &[Group],
) -> anyhow::Result<Requests> {
    let mut all = futures::stream::SelectAll::new();
    for (gi, g) in groups.iter().enumerate() {
        let subject = subjects.family(
            Family::Cmd,
            &Scope::Group {
                cluster: g.cluster.clone(),
                group: g.group.clone(),
            },
        );
        let sub = client
            .subscribe(subject.clone())
            .await
            .with_context(|| format!("cannot subscribe to {subject}"))?;
        all.push(sub.map(move |m| (gi, m)).boxed());
    }
    Ok(all)
}

/// Answers each group's report requests with its nodes' latest reports, as agents do; returns the
/// number of replies sent.
async fn answer_requests(
    client: Client,
    mut requests: Requests,
    groups: Vec<Group>,
    latest: Latest,
    stop: CancellationToken,
) -> u64 {
    let mut replies = 0u64;
    let mut ignored = 0u64;
    loop {
        let (gi, msg) = tokio::select! {
            m = requests.next() => match m { Some(m) => m, None => break },
            _ = stop.cancelled() => break,
        };
        let Some(reply) = msg.reply else {
            ignored += 1;
            continue;
        };
        match wire::peek(&msg.payload) {
            Ok(h) if h.kind == Kind::ReportRequest => {}
            Ok(_) | Err(_) => {
                ignored += 1;
                continue;
            }
        }
        let requester = wire::decode::<ReportRequest>(&msg.payload, Kind::ReportRequest)
            .map(|e| e.body.requester)
            .unwrap_or_default();
        let Some(g) = groups.get(gi) else { continue };
        let payloads = latest.of(&g.members);
        tracing::debug!(
            requester,
            group = %format_args!("{}/{}", g.cluster, g.group),
            reports = payloads.len(),
            "answering a report request"
        );
        for p in payloads {
            match client.publish(reply.clone(), p.payload).await {
                Ok(()) => replies += 1,
                Err(e) => tracing::debug!(error = %e, "cannot reply to a report request"),
            }
        }
    }
    if ignored > 0 {
        tracing::debug!(
            ignored,
            "messages on the command subjects that were not report requests"
        );
    }
    replies
}

/// CPU time (user + system) this process used, seconds; 0 if unreadable.
fn self_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_comm = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    let num = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // SAFETY: sysconf has no preconditions and reads no memory of ours.
    let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let tck = u64::try_from(tck).unwrap_or(100).max(1);
    (num(11) + num(12)) as f64 / tck as f64
}
