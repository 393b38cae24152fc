//! `gridmon agent`: samples the collectors on wall-clock ticks and hands encoded reports to the spool.
//!
//! Collection is blocking file I/O, so each tick runs on the blocking pool with the collectors
//! moved in and back out; the async side only schedules, frames and publishes. The bus being
//! away never stops collection: reports wait in the spool.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use gridmon_collectors::host::HostCollector;
use gridmon_collectors::hwmon::HwmonCollector;
use gridmon_collectors::i2c::I2cCollector;
use gridmon_collectors::inventory::read_inventory;
use gridmon_collectors::model::{HostMetrics, Inventory, ProbeResult, ProcessTable, SensorReading};
use gridmon_collectors::process::ProcessCollector;
use gridmon_collectors::Roots;
use gridmon_nats::connect::connect;
use gridmon_nats::frame::{now_ms, Framer};
use gridmon_nats::publish::{Publisher, Spool};
use gridmon_nats::wire::{AgentStats, Kind, NodeReport, Source};
use gridmon_nats::{Config, Family, NodeId, Scope, Subjects};

use crate::control::{AuditLog, Control, LastReport};
use gridmon_commands::supervisor::{Supervisor, SupervisorHandle};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// How often the inventory is re-read to spot a change (it is published hourly regardless).
const INVENTORY_CHECK: Duration = Duration::from_secs(60);

pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    raise_open_file_limit();
    let id = config.node_id()?;
    let subjects = config.subjects()?;
    let spool = Spool::from_config(&config.spool);
    if let Some(path) = &config.spool.path {
        match spool.load(path) {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                messages = n,
                "resending messages saved at the last shutdown"
            ),
            Err(e) => tracing::warn!(error = %e, "saved messages could not be loaded"),
        }
    }
    let client = connect(&config.nats, &format!("gridmon-agent-{}", id.node)).await?;
    tracing::info!(node = %id, servers = ?config.nats.servers, "agent starting");

    let tracker = TaskTracker::new();
    let publisher = Publisher::new(
        client.clone(),
        spool.clone(),
        config.nats.delivery,
        config.nats.ack_timeout,
        config.nats.reconnect_max_delay,
    );
    // The publisher stops only after everything that produces messages at shutdown (the
    // supervisor's drain events, the last audit records) has handed them to the spool.
    let publisher_stop = CancellationToken::new();
    tracker.spawn(
        publisher
            .run(publisher_stop.clone(), config.spool.path.clone())
            .instrument(tracing::info_span!("publisher")),
    );
    let producers = TaskTracker::new();

    let probes: Arc<Mutex<Vec<ProbeResult>>> = Arc::default();
    if !config.agent.probes.targets.is_empty() {
        let (cfg, out, stop, every) = (
            config.agent.probes.clone(),
            probes.clone(),
            shutdown.clone(),
            config.agent.interval,
        );
        tracker.spawn(
            async move {
                let mut tick = tokio::time::interval(every);
                loop {
                    tokio::select! {
                        _ = tick.tick() => {}
                        _ = stop.cancelled() => break,
                    }
                    let results = gridmon_collectors::probe::probe_all(&cfg).await;
                    *out.lock().unwrap_or_else(|p| p.into_inner()) = results;
                }
            }
            .instrument(tracing::info_span!("probes")),
        );
    }

    let run_id = u64::try_from(now_ms()).unwrap_or(0);
    let framer = Arc::new(Mutex::new(Framer::new(Source::from(&id), run_id)));
    let last_report: LastReport = Arc::default();
    let supervisor = start_supervisor(
        &config, &id, &subjects, &framer, &spool, &producers, &shutdown,
    )?;
    let control = control_server(
        &config,
        &client,
        &id,
        &subjects,
        &framer,
        &spool,
        &last_report,
        supervisor.clone(),
    )?;
    {
        let stop = shutdown.clone();
        producers.spawn(
            async move {
                if let Err(e) = control.run(stop).await {
                    tracing::warn!(error = %e, "commands and report requests will not be answered");
                }
            }
            .instrument(tracing::info_span!("commands")),
        );
    }
    if config.commands.enabled {
        let (client, id, cfg, sup, stop) = (
            client.clone(),
            id.clone(),
            config.commands.clone(),
            supervisor.clone(),
            shutdown.clone(),
        );
        producers.spawn(
            gridmon_nats::registry::keep_fresh(
                async_nats::jetstream::new(client),
                cfg.registry_bucket,
                cfg.registry_every,
                env!("CARGO_PKG_VERSION").into(),
                move || {
                    let programs = sup.as_ref().map(|s| s.programs()).unwrap_or_default();
                    vec![(id.clone(), programs)]
                },
                stop,
            )
            .instrument(tracing::info_span!("registry")),
        );
    }

    let report_subject = subjects.node_report(&id);
    let inventory_subject = subjects.family(Family::Inventory, &Scope::Node(id.clone()));
    let interval = config.agent.interval;
    let process_every = ticks_per(config.agent.process_interval, interval);
    let mut sampler = Some(Sampler::new(&config)?);
    let mut inventory = InventoryState::default();
    let mut tick: u64 = 0;

    loop {
        let (wait, boundary_ms) = next_boundary(interval);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.cancelled() => break,
        }
        // Stamped with the boundary itself, not the wake-up time a few ms later: the report
        // covers the interval that ends there, and aggregators file it in that window.
        let ts_ms = boundary_ms;
        let with_processes = tick % process_every == 0;
        let check_inventory = inventory.due(ts_ms, config.agent.inventory_interval);
        tick += 1;
        let Some(mut s) = sampler.take() else { break };
        let (s, sample) = tokio::task::spawn_blocking(move || {
            let sample = s.sample(with_processes, check_inventory);
            (s, sample)
        })
        .await
        .context("collector thread panicked")?;
        sampler = Some(s);

        let report = NodeReport {
            interval_ms: u32::try_from(interval.as_millis()).unwrap_or(u32::MAX),
            host: sample.host.map(|mut h| {
                h.probes = probes.lock().unwrap_or_else(|p| p.into_inner()).clone();
                h
            }),
            processes: sample.processes,
            sensors: sample.sensors,
            programs: match &supervisor {
                Some(s) => s.status(None).await.unwrap_or_default(),
                None => Vec::new(),
            },
            agent: AgentStats {
                version: env!("CARGO_PKG_VERSION").into(),
                spool_dropped_total: spool.dropped_total(),
                spool_len: u32::try_from(spool.len()).unwrap_or(u32::MAX),
                collect_errors_total: sample.collect_errors_total,
                sensor_errors_total: sample.sensor_errors_total,
                cpu_time_ms: sample.self_usage.0,
                rss_bytes: sample.self_usage.1,
            },
        };
        let framed = lock(&framer).frame(Kind::NodeReport, report_subject.clone(), ts_ms, &report);
        match framed {
            Ok(out) => {
                *last_report.lock().unwrap_or_else(|p| p.into_inner()) = Some(out.payload.clone());
                spool.push(out);
            }
            Err(e) => tracing::error!(error = %e, "cannot encode a report; skipped"),
        }
        if let Some(inv) = sample.inventory {
            if inventory.should_publish(&inv, ts_ms, config.agent.inventory_interval) {
                let framed =
                    lock(&framer).frame(Kind::Inventory, inventory_subject.clone(), ts_ms, &inv);
                match framed {
                    Ok(out) => {
                        spool.push(out);
                        inventory.published(inv, ts_ms);
                    }
                    Err(e) => tracing::error!(error = %e, "cannot encode the inventory; skipped"),
                }
            }
        }
    }
    producers.close();
    producers.wait().await;
    tracing::info!("agent stopping: flushing the spool");
    publisher_stop.cancel();
    tracker.close();
    tracker.wait().await;
    // With the server gone a flush would wait for a reconnect that never comes.
    tokio::time::timeout(Duration::from_secs(2), client.flush())
        .await
        .ok();
    Ok(())
}

/// The process collector keeps `/proc/<pid>/{stat,io}` open between samples (a re-read in place
/// costs about half an open-read-close) within a quarter of the soft open-file limit; raising the
/// soft limit to the hard one lets it keep them for every process.
fn raise_open_file_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            let wanted = libc::rlimit {
                rlim_cur: lim.rlim_max.min(65_536),
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) != 0 {
                tracing::debug!("could not raise the open-file limit");
            }
        }
    }
}

/// How many ticks of `interval` make `every` (at least 1).
fn ticks_per(every: Duration, interval: Duration) -> u64 {
    let n = every
        .as_millis()
        .checked_div(interval.as_millis())
        .unwrap_or(1);
    u64::try_from(n).unwrap_or(u64::MAX).max(1)
}

/// Time until the next multiple of `interval` on the wall clock, and that boundary in ms since
/// the Unix epoch, so every node samples at the same instants and a rollup window holds exactly
/// one report per node.
fn next_boundary(interval: Duration) -> (Duration, i64) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let step = interval.as_nanos().max(1);
    let wait = step - now % step;
    let boundary_ms = i64::try_from((now + wait) / 1_000_000).unwrap_or(i64::MAX);
    (
        Duration::from_nanos(u64::try_from(wait).unwrap_or(u64::MAX)),
        boundary_ms,
    )
}

/// Everything one tick produces.
struct Sample {
    host: Option<HostMetrics>,
    processes: Option<ProcessTable>,
    sensors: Vec<SensorReading>,
    inventory: Option<Inventory>,
    collect_errors_total: u64,
    sensor_errors_total: u64,
    /// (CPU ms, RSS bytes) of the agent itself.
    self_usage: (u64, u64),
}

/// Owns the collectors; lives on the blocking pool during a tick.
struct Sampler {
    roots: Roots,
    host: HostCollector,
    processes: Option<ProcessCollector>,
    hwmon: Option<HwmonCollector>,
    i2c: I2cCollector,
    collect_errors_total: u64,
    /// The last error logged, so a persistent failure is logged once, not every second.
    last_error: Option<String>,
}

impl Sampler {
    fn new(config: &Config) -> anyhow::Result<Self> {
        let a = &config.agent;
        let roots = Roots {
            proc: a.proc_root.clone(),
            sys: a.sys_root.clone(),
            etc: a.etc_root.clone(),
        };
        let i2c = I2cCollector::open(&a.i2c).context("agent.i2c")?;
        Ok(Self {
            host: HostCollector::new(roots.clone()),
            processes: a
                .processes
                .enabled
                .then(|| ProcessCollector::new(roots.clone(), a.processes.clone())),
            hwmon: a.hwmon.enabled.then(|| HwmonCollector::new(roots.clone())),
            i2c,
            roots,
            collect_errors_total: 0,
            last_error: None,
        })
    }

    fn note_error(&mut self, what: &str, e: &dyn std::fmt::Display) {
        self.collect_errors_total += 1;
        let msg = format!("{what}: {e}");
        if self.last_error.as_deref() != Some(msg.as_str()) {
            tracing::warn!(error = %msg, "collection failed (repeats of this error are not logged)");
            self.last_error = Some(msg);
        }
    }

    fn sample(&mut self, with_processes: bool, with_inventory: bool) -> Sample {
        let host = match self.host.sample() {
            Ok(h) => Some(h),
            Err(e) => {
                self.note_error("host metrics", &e);
                None
            }
        };
        let processes = match (&mut self.processes, with_processes) {
            (Some(p), true) => match p.sample() {
                Ok(t) => Some(t),
                Err(e) => {
                    self.note_error("process table", &e);
                    None
                }
            },
            _ => None,
        };
        let mut sensors = self
            .hwmon
            .as_mut()
            .map(HwmonCollector::read)
            .unwrap_or_default();
        sensors.extend(self.i2c.read());
        let sensor_errors_total =
            self.hwmon.as_ref().map_or(0, HwmonCollector::errors_total) + self.i2c.errors_total();
        let inventory =
            with_inventory.then(|| read_inventory(&self.roots, env!("CARGO_PKG_VERSION")));
        Sample {
            host,
            processes,
            sensors,
            inventory,
            collect_errors_total: self.collect_errors_total,
            sensor_errors_total,
            self_usage: self_usage(),
        }
    }
}

/// CPU time (ms) and RSS (bytes) of this process, from `/proc/self`; zeros if unreadable.
fn self_usage() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_comm = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // After the comm: state is field 0, utime 11, stime 12, rss (pages) 21.
    let num = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // SAFETY: sysconf has no preconditions and reads no memory of ours.
    let (tck, page) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    let (tck, page) = (
        u64::try_from(tck).unwrap_or(100).max(1),
        u64::try_from(page).unwrap_or(4096),
    );
    let cpu_ms = (num(11) + num(12)) * 1000 / tck;
    (cpu_ms, num(21) * page)
}

/// When the inventory was last published and what it said.
#[derive(Default)]
struct InventoryState {
    last: Option<Inventory>,
    last_published_ms: i64,
    last_checked_ms: i64,
}

impl InventoryState {
    fn due(&mut self, now_ms: i64, hourly: Duration) -> bool {
        let check_ms = i64::try_from(INVENTORY_CHECK.min(hourly).as_millis()).unwrap_or(i64::MAX);
        if self.last.is_none() || now_ms - self.last_checked_ms >= check_ms {
            self.last_checked_ms = now_ms;
            return true;
        }
        false
    }

    /// Publish at start, on change (ignoring the ever-moving fields), and every `hourly`.
    fn should_publish(&self, inv: &Inventory, now_ms: i64, hourly: Duration) -> bool {
        let Some(last) = &self.last else { return true };
        let hourly_ms = i64::try_from(hourly.as_millis()).unwrap_or(i64::MAX);
        last != inv || now_ms - self.last_published_ms >= hourly_ms
    }

    fn published(&mut self, inv: Inventory, now_ms: i64) {
        self.last = Some(inv);
        self.last_published_ms = now_ms;
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Starts the supervisor when programs are configured, and forwards its state transitions to
/// `<p>.event.<cluster>.<group>.<node>` through the spool.
fn start_supervisor(
    config: &Config,
    id: &NodeId,
    subjects: &Subjects,
    framer: &Arc<Mutex<Framer>>,
    spool: &Spool,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) -> anyhow::Result<Option<SupervisorHandle>> {
    if config.programs.is_empty() {
        return Ok(None);
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
    let (sup, handle) = Supervisor::new(config.supervisor.clone(), config.programs.clone(), tx)
        .context("starting the supervisor")?;
    // The event forwarder outlives the supervisor's drain (its stop events are published), then
    // ends: program tasks may keep sender clones alive, so the channel alone never closes.
    let done = CancellationToken::new();
    {
        let (stop, done) = (shutdown.clone(), done.clone());
        tracker.spawn(
            async move {
                sup.run(stop).await;
                done.cancel();
            }
            .instrument(tracing::info_span!("supervisor")),
        );
    }
    let (subject, framer, spool) = (
        subjects.family(Family::Event, &Scope::Node(id.clone())),
        framer.clone(),
        spool.clone(),
    );
    tracker.spawn(
        async move {
            loop {
                let ev = tokio::select! {
                    ev = rx.recv() => ev,
                    _ = done.cancelled() => rx.try_recv().ok(),
                };
                let Some(ev) = ev else { break };
                tracing::info!(
                    program = %ev.program,
                    from = ev.from.as_str(),
                    to = ev.to.as_str(),
                    reason = %ev.reason,
                    "program state"
                );
                let framed =
                    lock(&framer).frame(Kind::ProgramEvent, subject.clone(), ev.ts_ms, &ev);
                match framed {
                    Ok(out) => spool.push(out),
                    Err(e) => tracing::error!(error = %e, "cannot encode a program event"),
                }
            }
        }
        .instrument(tracing::info_span!("program_events")),
    );
    Ok(Some(handle))
}

#[allow(clippy::too_many_arguments)]
fn control_server(
    config: &Config,
    client: &async_nats::Client,
    id: &NodeId,
    subjects: &Subjects,
    framer: &Arc<Mutex<Framer>>,
    spool: &Spool,
    last_report: &LastReport,
    supervisor: Option<SupervisorHandle>,
) -> anyhow::Result<Control> {
    let c = &config.commands;
    let dir = &config.supervisor.dir;
    let guard = if c.enabled {
        // Signed commands need a nonce record that outlives the agent; without issuers only
        // unsigned reads can pass, and those need none.
        let nonces = if c.issuers.is_empty() {
            gridmon_nats::guard::NonceStore::in_memory()
        } else {
            let path = c
                .nonce_file
                .clone()
                .unwrap_or_else(|| dir.join("command-nonces"));
            gridmon_nats::guard::NonceStore::open(&path, now_ms()).with_context(|| {
                format!(
                    "opening the command nonce record {} (set commands.nonce_file or supervisor.dir)",
                    path.display()
                )
            })?
        };
        Some(Arc::new(Mutex::new(gridmon_nats::guard::Guard::new(
            id.clone(),
            c,
            nonces,
        ))))
    } else {
        None
    };
    let audit_path = match (&c.audit_file, c.issuers.is_empty() && supervisor.is_none()) {
        (Some(p), _) => Some(p.clone()),
        (None, false) => Some(dir.join("audit.log")),
        (None, true) => None,
    };
    Ok(Control {
        client: client.clone(),
        subjects: subjects.clone(),
        id: id.clone(),
        guard,
        supervisor,
        framer: framer.clone(),
        spool: spool.clone(),
        audit: Arc::new(AuditLog::open(audit_path)?),
        last_report: last_report.clone(),
        releases: config.releases.clone(),
        programs_dir: dir.join("programs"),
        download_dir: dir.join("downloads"),
        allow_poweroff: config.supervisor.allow_poweroff,
        replies_sent: Arc::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks() {
        assert_eq!(ticks_per(Duration::from_secs(5), Duration::from_secs(1)), 5);
        assert_eq!(
            ticks_per(Duration::from_millis(2500), Duration::from_secs(1)),
            2
        );
        assert_eq!(ticks_per(Duration::from_secs(1), Duration::from_secs(1)), 1);
        let (wait, boundary) = next_boundary(Duration::from_secs(1));
        assert!(wait <= Duration::from_secs(1));
        assert_eq!(boundary % 1000, 0, "on a whole second");
        assert!(boundary >= now_ms());
    }

    #[test]
    fn inventory_publishing() {
        let hour = Duration::from_secs(3600);
        let mut s = InventoryState::default();
        let inv = Inventory {
            hostname: "a".into(),
            ..Default::default()
        };
        assert!(s.due(0, hour));
        assert!(s.should_publish(&inv, 0, hour));
        s.published(inv.clone(), 0);
        assert!(!s.due(1_000, hour), "checked at most once a minute");
        assert!(s.due(60_000, hour));
        assert!(!s.should_publish(&inv, 60_000, hour));
        let changed = Inventory {
            memory_bytes: 1,
            ..inv.clone()
        };
        assert!(s.should_publish(&changed, 60_000, hour));
        assert!(s.should_publish(&inv, 3_600_000, hour));
    }

    #[test]
    fn self_usage_reads_this_process() {
        let (_cpu, rss) = self_usage();
        assert!(rss > 0);
    }
}
