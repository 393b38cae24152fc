//! The analyst queries of `docs/queries.md`, run against the history of a simulated fleet that went
//! through the real aggregator and ingest. Every answer is compared with what the JetStream
//! stream holds: the expectations are computed here, from the messages, not from ClickHouse.
//!
//! The fleet: 6 nodes in `c01/g01` (n0001, n0003, n0005) and `c02/g01` (n0002, n0004, n0006).
//! Run A injects faults in c02: n0002 goes silent (offline), n0004 overheats, loses its CPU fan
//! and crash-loops `worker-1` (a new process every report), n0006 loses its CPU fan. Run B
//! follows with 5 nodes and no faults: n0002 comes back online, n0006 is gone for good.
//!
//! The simulator has no supervisor, so the test itself publishes what agents' supervisors
//! would: program state transitions and command audit records (`publish_supervision`), framed
//! and addressed like the agent's, for the `process_events` and `command_audit` queries.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream;
use futures::StreamExt;
use gridmon_nats::command::{AuditPhase, AuditRecord, ErrorKind};
use gridmon_nats::frame::{now_ms, Framer};
use gridmon_nats::identity::NodeId;
use gridmon_nats::subject::{Family, Scope, Subjects};
use gridmon_nats::wire::{
    self, AlarmAction, AlarmEvent, Envelope, Event, EventKind, ExitStatus, Inventory, Kind,
    NodeReport, ProgramEvent, ProgramState, Source,
};
use gridmon_tests::clickhouse::{ClickHouse, TestDb};
use gridmon_tests::eventually;
use gridmon_tests::nats_server::NatsServer;
use serde_json::Value;

use crate::{day, spawn_logged as spawn};

/// The flags both simulator runs share.
const FLEET: &[&str] = &[
    "--clusters",
    "2",
    "--groups",
    "1",
    "--processes",
    "30",
    "--programs",
    "2",
];

/// The rules the docs count as hardware faults (the built-in sensor, fan and voltage alarms).
fn is_hardware(rule: &str) -> bool {
    matches!(rule, "sensor_crit" | "fan_stopped" | "voltage_range")
}

type Json = serde_json::Map<String, Value>;
/// (cluster, group, node)
type Place = (String, String, String);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_query_in_the_docs_answers_what_the_fleet_published() {
    let nats = NatsServer::start().unwrap();
    let ch = ClickHouse::shared().unwrap();
    let db = ch.test_db("queries").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let config = write_config(dir, &nats.url(), ch, &db.name);
    let cfg = config.to_str().unwrap();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = jetstream::new(client.clone());

    let mut ingest = spawn(dir, "ingest", &["ingest", "--config", cfg]);
    // The consumer is made after the migrations and the stream: then everything is ready.
    eventually(Duration::from_secs(60), "the ingest's consumer", || async {
        let stream = js.get_stream("GRIDMON").await.ok()?;
        stream
            .get_consumer::<jetstream::consumer::pull::Config>("gridmon-ingest")
            .await
            .ok()
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", logs(dir)));

    let seen = watch_events_and_alarms(client.clone()).await;
    let mut aggregate = spawn(
        dir,
        "aggregate",
        &["aggregate", "--config", cfg, "--no-leader-election"],
    );

    // Run A: faults 3 s in, until the silent node is offline and every fault raised its alarm.
    let mut sim_a = spawn(
        dir,
        "simulate-a",
        &[
            &["simulate", "--config", cfg, "--nodes", "6"][..],
            FLEET,
            &[
                "--fault-after",
                "3s",
                "--silent",
                "1",
                "--overheat",
                "2",
                "--fan-stop",
                "3",
                "--crash",
                "2",
            ],
        ]
        .concat(),
    );
    let faults_seen = |s: &Seen| {
        s.has_event("c02", "n0002", EventKind::NodeOffline)
            && s.has_raise("n0002", "node_offline")
            && s.has_raise("n0004", "sensor_crit")
            && s.has_raise("n0004", "fan_stopped")
            && s.has_raise("n0004", "program_crashed")
            && s.has_raise("n0006", "fan_stopped")
    };
    wait_seen(
        &seen,
        "run A's faults: n0002 offline, alarms",
        faults_seen,
        dir,
    )
    .await;
    stop(&mut sim_a).await;

    // Run B: n0002 back, n0006 gone.
    let mut sim_b = spawn(
        dir,
        "simulate-b",
        &[&["simulate", "--config", cfg, "--nodes", "5"][..], FLEET].concat(),
    );
    let back = |s: &Seen| {
        s.has_event("c02", "n0002", EventKind::NodeOnline)
            && s.has_event("c02", "n0006", EventKind::NodeOffline)
    };
    wait_seen(&seen, "run B: n0002 online, n0006 offline", back, dir).await;
    // The aggregator first, so no node goes stale for want of reports once B stops.
    stop(&mut aggregate).await;
    stop(&mut sim_b).await;
    let published_at = now_ms();
    publish_supervision(&client, published_at).await;

    let last = eventually(
        Duration::from_secs(30),
        "the ingest to acknowledge the whole stream",
        || async {
            let mut stream = js.get_stream("GRIDMON").await.ok()?;
            let last = stream.info().await.ok()?.state.last_sequence;
            let mut c = stream
                .get_consumer::<jetstream::consumer::pull::Config>("gridmon-ingest")
                .await
                .ok()?;
            let i = c.info().await.ok()?;
            (i.num_pending == 0 && i.num_ack_pending == 0 && i.delivered.stream_sequence == last)
                .then_some(last)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", logs(dir)));
    let p = read_stream(&js, last).await;
    wait_for_rows(&db, &p, dir).await;

    let queries = doc_queries();
    let names: BTreeSet<&str> = queries.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        BTreeSet::from([
            "cluster_trend",
            "command_history",
            "denied_commands",
            "fault_frequency",
            "fault_points",
            "inventory_per_cluster",
            "offline_periods",
            "process_runs",
            "program_restarts",
            "programs_in_error",
            "top_cpu_nodes",
        ]),
        "the queries of docs/queries.md"
    );
    let sql = |name: &str| in_db(&queries[name], &db.name);

    check_cluster_trend(&run(&db, &sql("cluster_trend")).await, &p);
    let top3 = replace(&sql("top_cpu_nodes"), "LIMIT 10", "LIMIT 3");
    check_top_cpu_nodes(&run(&db, &top3).await, &p, 3);
    let runs = sql("process_runs");
    let filter = "cluster = 'c02' AND node = 'n0004' AND name = 'worker-1'";
    let crashing = check_process_runs(&run(&db, &runs).await, &p, "c02", "n0004", "worker-1");
    // Before the fault, one run per report of the crash loop, and run B's.
    assert!(crashing.len() >= 4, "{crashing:?}");
    let other = replace(
        &runs,
        filter,
        "cluster = 'c01' AND node = 'n0003' AND name = 'worker-2'",
    );
    let steady = check_process_runs(&run(&db, &other).await, &p, "c01", "n0003", "worker-2");
    // Runs A and B: the same pid again, another start time, so another run.
    assert_eq!(steady.len(), 2, "{steady:?}");
    assert_eq!(steady[0].0, steady[1].0);
    check_fault_frequency(&run(&db, &sql("fault_frequency")).await, &p);
    check_fault_points(&run(&db, &sql("fault_points")).await, &p);
    check_inventory(&run(&db, &sql("inventory_per_cluster")).await, &p);
    let before = now_ms();
    check_offline_periods(&run(&db, &sql("offline_periods")).await, &p, before);
    check_program_restarts(&run(&db, &sql("program_restarts")).await, &p, published_at);
    check_programs_in_error(
        &run(&db, &sql("programs_in_error")).await,
        &p,
        published_at,
        now_ms(),
    );
    check_denied_commands(
        &run(&db, &sql("denied_commands")).await,
        &p,
        published_at,
        now_ms(),
    );
    let history = sql("command_history");
    check_command_history(&run(&db, &history).await, &p, published_at, now_ms());
    let restarts_only = replace(
        &history,
        "AND ts >= now()",
        "AND op = 'restart' AND ts >= now()",
    );
    let restarts = run(&db, &restarts_only).await;
    assert_eq!(
        restarts
            .iter()
            .map(|r| text(&r["request_id"]))
            .filter(|id| id.starts_with("r-"))
            .collect::<Vec<_>>(),
        ["r-1"],
        "the doc's restarts-only variant: {restarts:?}"
    );

    stop(&mut ingest).await;
    let all = logs(dir);
    assert!(!all.contains("panicked"), "{all}");
}

// ---- running the processes ----

fn write_config(dir: &Path, nats: &str, ch: &ClickHouse, database: &str) -> std::path::PathBuf {
    let mut creds = String::new();
    // A real server (CLICKHOUSE_URL) may need them; the embedded engine ignores them.
    if std::env::var("CLICKHOUSE_URL").is_ok_and(|u| !u.is_empty()) {
        for (key, var) in [
            ("user", "CLICKHOUSE_USER"),
            ("password", "CLICKHOUSE_PASSWORD"),
        ] {
            if let Ok(v) = std::env::var(var) {
                creds.push_str(&format!("{key} = {v:?}\n"));
            }
        }
    }
    let path = dir.join("gridmon.toml");
    std::fs::write(
        &path,
        format!(
            "[nats]\nservers = [{nats:?}]\n\
             [clickhouse]\nurl = {url:?}\ndatabase = {database:?}\n{creds}\
             [ingest]\nflush_interval = \"300ms\"\n\
             [ingest.stream]\nmax_bytes = 268435456\n\
             [ingest.consumer]\nack_wait = \"5s\"\n\
             [aggregate]\ninterval = \"1s\"\nstale_after = 2\noffline_after = 3\nforget_after = \"1h\"\n",
            url = ch.url()
        ),
    )
    .unwrap();
    path
}

/// SIGTERM to the process group, then wait for it to exit (it flushes what it holds).
async fn stop(child: &mut tokio::process::Child) {
    if let Some(pid) = child.id() {
        // SAFETY: signals the child's own process group.
        unsafe {
            libc::kill(-(pid as i32), libc::SIGTERM);
        }
    }
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("a gridmon process did not stop within 30 s of SIGTERM")
        .unwrap();
    assert!(status.success(), "{status}");
}

/// Every process's log, for failure messages.
fn logs(dir: &Path) -> String {
    let mut out = String::new();
    for name in ["ingest", "aggregate", "simulate-a", "simulate-b"] {
        let log = std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default();
        let tail: String = log.lines().rev().take(40).collect::<Vec<_>>().join("\n");
        out.push_str(&format!("--- {name} (last lines, newest first)\n{tail}\n"));
    }
    out
}

/// Liveness events and alarm raises as they go by, to know when a phase is complete.
#[derive(Debug, Default)]
struct Seen {
    /// (cluster, node, event)
    events: Vec<(String, String, EventKind)>,
    /// (node, rule) of raises
    raises: Vec<(String, String)>,
}

impl Seen {
    fn has_event(&self, cluster: &str, node: &str, kind: EventKind) -> bool {
        self.events
            .iter()
            .any(|(c, n, k)| c == cluster && n == node && *k == kind)
    }

    fn has_raise(&self, node: &str, rule: &str) -> bool {
        self.raises.iter().any(|(n, r)| n == node && r == rule)
    }
}

async fn watch_events_and_alarms(client: async_nats::Client) -> Arc<Mutex<Seen>> {
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let subs = vec![
        client.subscribe("grid.event.>").await.unwrap(),
        client.subscribe("grid.alarm.>").await.unwrap(),
    ];
    client.flush().await.unwrap();
    let s = seen.clone();
    tokio::spawn(async move {
        let mut all = futures::stream::select_all(subs);
        while let Some(m) = all.next().await {
            let t: Vec<&str> = m.subject.as_str().split('.').collect();
            let (Some(c), Some(n)) = (t.get(2), t.get(4)) else {
                continue;
            };
            let mut seen = s.lock().unwrap();
            if let Ok(e) = wire::decode::<Event>(&m.payload, Kind::Event) {
                seen.events
                    .push((c.to_string(), n.to_string(), e.body.event));
            } else if let Ok(a) = wire::decode::<AlarmEvent>(&m.payload, Kind::Alarm) {
                if a.body.action == AlarmAction::Raise {
                    seen.raises.push((n.to_string(), a.body.rule));
                }
            }
        }
    });
    seen
}

async fn wait_seen(seen: &Arc<Mutex<Seen>>, what: &str, done: impl Fn(&Seen) -> bool, dir: &Path) {
    eventually(Duration::from_secs(30), what, || async {
        done(&seen.lock().unwrap()).then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}: {:?}\n{}", seen.lock().unwrap(), logs(dir)));
}

// ---- what agents' supervisors would publish ----

const DAY_MS: i64 = 86_400_000;

/// Program transitions and audit records on nodes of the simulated fleet, published as an agent
/// publishes them: one framer per node, `<p>.event.…` and `<p>.audit.…`, with `Nats-Msg-Id`.
/// The program names and issuers are not the simulator's, so the checks below can name them.
///
/// - `ledger` on c02/n0004 crash-loops: killed by a signal, backoff, restarted, crashes twice
///   more and ends in `error`;
/// - `api` on c01/n0001 crashes into `error` (health), and an operator brings it back; two days
///   earlier it was in `error` once (outside the 24-hour query, inside the 30-day one);
/// - `cache` on c01/n0003 only starts, in order (in neither program query).
/// - Audit: `UEVE` is refused twice (unknown issuer, on n0004 and n0002), alice once (policy);
///   a denial ten days old is outside the 7-day window; alice restarts `ledger` for carol
///   (`r-1`, ok), bob's deploy of `api` fails (`r-2`); a `status` (`r-3`) is not a change.
async fn publish_supervision(client: &async_nats::Client, now: i64) {
    use ProgramState as S;
    let mut agents = Agents::new(now);
    let secs = |ago: i64| now - ago * 1000;
    #[rustfmt::skip]
    let transitions = [
        ("c02", "n0004", "ledger", secs(600), S::Running, S::Crashed, "exited", Some(5001), Some(ExitStatus::Signal(9)), 0, false),
        ("c02", "n0004", "ledger", secs(590), S::Crashed, S::Waiting, "backoff", None, None, 0, false),
        ("c02", "n0004", "ledger", secs(580), S::Waiting, S::Starting, "spawned", Some(5002), None, 1, false),
        ("c02", "n0004", "ledger", secs(570), S::Starting, S::Running, "started", Some(5002), None, 1, false),
        ("c02", "n0004", "ledger", secs(560), S::Running, S::Crashed, "exited", Some(5002), Some(ExitStatus::Code(1)), 1, false),
        ("c02", "n0004", "ledger", secs(550), S::Crashed, S::Starting, "spawned", Some(5003), None, 2, false),
        ("c02", "n0004", "ledger", secs(540), S::Starting, S::Crashed, "exited", Some(5003), Some(ExitStatus::Code(1)), 2, true),
        ("c02", "n0004", "ledger", secs(530), S::Crashed, S::Error, "start limit", None, None, 2, true),
        ("c01", "n0001", "api", now - 2 * DAY_MS, S::Running, S::Error, "start limit", None, None, 7, true),
        ("c01", "n0001", "api", secs(500), S::Running, S::Crashed, "exited", Some(7001), Some(ExitStatus::Code(2)), 4, false),
        ("c01", "n0001", "api", secs(495), S::Crashed, S::Error, "health failed", None, None, 4, true),
        ("c01", "n0001", "api", secs(480), S::Error, S::Starting, "command restart", Some(7002), None, 4, false),
        ("c01", "n0001", "api", secs(475), S::Starting, S::Running, "started", Some(7002), None, 4, false),
        ("c01", "n0003", "cache", secs(460), S::Stopped, S::Starting, "spawned", Some(8001), None, 0, false),
        ("c01", "n0003", "cache", secs(455), S::Starting, S::Running, "started", Some(8001), None, 0, false),
        ("c01", "n0003", "cache", secs(450), S::Running, S::Stopping, "command stop", Some(8001), None, 0, false),
        ("c01", "n0003", "cache", secs(445), S::Stopping, S::Stopped, "exited", None, Some(ExitStatus::Code(0)), 0, false),
    ];
    for (c, n, program, ts_ms, from, to, reason, pid, exit, restarts, alarm) in transitions {
        let e = ProgramEvent {
            program: program.into(),
            from,
            to,
            reason: reason.into(),
            pid,
            exit,
            restarts,
            version: (program == "api").then(|| "1.2.2".to_string()),
            ts_ms,
            alarm,
        };
        agents.frame(c, n, Family::Event, Kind::ProgramEvent, ts_ms, e);
    }

    let record = |phase, id: &str, issuer: &str, name: Option<&str>, op: &str| AuditRecord {
        phase,
        request_id: id.into(),
        issuer: issuer.into(),
        issuer_name: name.map(Into::into),
        signed: true,
        op: op.into(),
        ..Default::default()
    };
    let denied = |(id, issuer, name, op, program, target, why): (
        &str,
        &str,
        Option<&str>,
        &str,
        Option<&str>,
        &str,
        &str,
    )| AuditRecord {
        program: program.map(Into::into),
        target: target.into(),
        error: Some(ErrorKind::Denied),
        message: why.into(),
        duration_us: 40,
        ..record(AuditPhase::Denied, id, issuer, name, op)
    };
    #[rustfmt::skip]
    let denials = [
        ("c01", "n0001", now - 10 * DAY_MS, ("d-0", "UEVE", None, "restart", Some("api"), "c01/g01/n0001", "unknown issuer")),
        ("c02", "n0004", secs(420), ("d-1", "UEVE", None, "restart", Some("ledger"), "c02/g01/n0004", "unknown issuer")),
        ("c02", "n0002", secs(415), ("d-2", "UEVE", None, "stop", Some("ledger"), "c02/g01", "unknown issuer")),
        ("c01", "n0001", secs(410), ("d-3", "UALICE", Some("alice"), "shutdown", None, "c01/g01/n0001", "not allowed by policy")),
    ];
    for (c, n, ts_ms, d) in denials {
        agents.frame(c, n, Family::Audit, Kind::Audit, ts_ms, denied(d));
    }
    let restart = AuditRecord {
        program: Some("ledger".into()),
        target: "c02/g01/n0004".into(),
        on_behalf_of: Some("web:carol".into()),
        ..record(
            AuditPhase::Accepted,
            "r-1",
            "UALICE",
            Some("alice"),
            "restart",
        )
    };
    let deploy = AuditRecord {
        program: Some("api".into()),
        args: "version=1.2.3".into(),
        target: "c01/g01/n0001".into(),
        ..record(AuditPhase::Accepted, "r-2", "UBOB", Some("bob"), "deploy")
    };
    let status = AuditRecord {
        target: "c01/g01/n0003".into(),
        ..record(AuditPhase::Accepted, "r-3", "UBOB", Some("bob"), "status")
    };
    let finished =
        |accepted: &AuditRecord, ok: bool, error, message: &str, duration_us| AuditRecord {
            phase: AuditPhase::Finished,
            ok,
            error,
            message: message.into(),
            duration_us,
            ..accepted.clone()
        };
    let failed = "health check failed; rolled back to 1.2.2";
    let records = [
        ("c02", "n0004", secs(400), restart.clone()),
        (
            "c02",
            "n0004",
            secs(399),
            finished(&restart, true, None, "restarted", 850_000),
        ),
        ("c01", "n0001", secs(300), deploy.clone()),
        (
            "c01",
            "n0001",
            secs(290),
            finished(&deploy, false, Some(ErrorKind::Failed), failed, 9_876_543),
        ),
        ("c01", "n0003", secs(281), status.clone()),
        (
            "c01",
            "n0003",
            secs(280),
            finished(&status, true, None, "", 95),
        ),
    ];
    for (c, n, ts_ms, a) in records {
        agents.frame(c, n, Family::Audit, Kind::Audit, ts_ms, a);
    }
    agents.publish(client).await;
}

/// Frames messages as the agents of the fleet would: one framer (one sequence per kind) per node.
struct Agents {
    subjects: Subjects,
    run_id: u64,
    framers: BTreeMap<NodeId, Framer>,
    out: Vec<gridmon_nats::publish::Outgoing>,
}

impl Agents {
    fn new(run_id_ms: i64) -> Self {
        Self {
            subjects: Subjects::new("grid").unwrap(),
            run_id: run_id_ms as u64,
            framers: BTreeMap::new(),
            out: Vec::new(),
        }
    }

    fn frame<B: serde::Serialize>(
        &mut self,
        cluster: &str,
        node: &str,
        family: Family,
        kind: Kind,
        ts_ms: i64,
        body: B,
    ) {
        let id = NodeId::new(cluster, "g01", node).unwrap();
        let subject = self.subjects.family(family, &Scope::Node(id.clone()));
        let run_id = self.run_id;
        let framer = self
            .framers
            .entry(id.clone())
            .or_insert_with(|| Framer::new(Source::from(&id), run_id));
        self.out
            .push(framer.frame(kind, subject, ts_ms, body).unwrap());
    }

    /// With `Nats-Msg-Id`, then a flush: how agents publish to the ingest's `no_ack` stream.
    async fn publish(self, client: &async_nats::Client) {
        for o in self.out {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(async_nats::header::NATS_MESSAGE_ID, o.msg_id.as_str());
            client
                .publish_with_headers(o.subject, headers, o.payload)
                .await
                .unwrap();
        }
        client.flush().await.unwrap();
    }
}

// ---- what was published ----

/// Everything the stream holds that the queries read, decoded, in stream order.
#[derive(Debug, Default)]
struct Published {
    reports: Vec<(Place, Envelope<NodeReport>)>,
    inventories: Vec<(Place, Envelope<Inventory>)>,
    /// Place of the alarm's scope (group and node empty above them).
    alarms: Vec<(Place, AlarmEvent)>,
    events: Vec<(Place, Envelope<Event>)>,
    program_events: Vec<(Place, Envelope<ProgramEvent>)>,
    audits: Vec<(Place, Envelope<AuditRecord>)>,
}

impl Published {
    fn process_rows(&self) -> u64 {
        self.reports
            .iter()
            .map(|(_, e)| e.body.processes.as_ref().map_or(0, |t| t.rows.len() as u64))
            .sum()
    }

    /// The newest inventory of each node (the later message on equal times).
    fn latest_inventories(&self) -> BTreeMap<Place, &Envelope<Inventory>> {
        let mut latest: BTreeMap<Place, &Envelope<Inventory>> = BTreeMap::new();
        for (place, env) in &self.inventories {
            let newer = latest.get(place).is_none_or(|old| env.ts_ms >= old.ts_ms);
            if newer {
                latest.insert(place.clone(), env);
            }
        }
        latest
    }
}

async fn read_stream(js: &jetstream::Context, last: u64) -> Published {
    let stream = js.get_stream("GRIDMON").await.unwrap();
    let mut p = Published::default();
    for seq in 1..=last {
        let m = stream.get_raw_message(seq).await.unwrap();
        let t: Vec<String> = m.subject.as_str().split('.').map(str::to_string).collect();
        let place = |from: usize| {
            let at = |i: usize| t.get(i).cloned().unwrap_or_default();
            (at(from), at(from + 1), at(from + 2))
        };
        match wire::peek(&m.payload).unwrap().kind {
            Kind::NodeReport => {
                assert_eq!(t.len(), 4, "{}", m.subject);
                p.reports.push((
                    place(1),
                    wire::decode(&m.payload, Kind::NodeReport).unwrap(),
                ));
            }
            Kind::Inventory => {
                assert_eq!(t[1], "inventory");
                p.inventories
                    .push((place(2), wire::decode(&m.payload, Kind::Inventory).unwrap()));
            }
            Kind::Alarm => {
                assert_eq!(t[1], "alarm");
                let e: Envelope<AlarmEvent> = wire::decode(&m.payload, Kind::Alarm).unwrap();
                p.alarms.push((place(2), e.body));
            }
            Kind::Event => {
                assert_eq!(t[1], "event");
                p.events
                    .push((place(2), wire::decode(&m.payload, Kind::Event).unwrap()));
            }
            Kind::ProgramEvent => {
                assert_eq!(t[1], "event");
                p.program_events.push((
                    place(2),
                    wire::decode(&m.payload, Kind::ProgramEvent).unwrap(),
                ));
            }
            Kind::Audit => {
                assert_eq!(t[1], "audit");
                p.audits
                    .push((place(2), wire::decode(&m.payload, Kind::Audit).unwrap()));
            }
            _ => {}
        }
    }
    let nodes: BTreeSet<&str> = p.reports.iter().map(|(pl, _)| pl.2.as_str()).collect();
    assert_eq!(nodes.len(), 6, "{nodes:?}");
    assert_eq!(p.latest_inventories().len(), 6);
    // At least what publish_supervision sent.
    assert!(p.program_events.len() >= 17, "{:?}", p.program_events);
    assert!(p.audits.len() >= 10, "{:?}", p.audits);
    p
}

/// Waits until every table the queries read holds what the stream holds.
async fn wait_for_rows(db: &TestDb, p: &Published, dir: &Path) {
    let inventory_ts: i64 = p.latest_inventories().values().map(|e| e.ts_ms).sum();
    let want = (
        p.reports.len() as u64,
        p.process_rows(),
        p.alarms.len() as u64,
        p.events.len() as u64,
        inventory_ts,
        p.program_events.len() as u64,
        p.audits.len() as u64,
    );
    let sql = format!(
        "SELECT
            (SELECT count() FROM {db}.node_metrics) AS reports,
            (SELECT sum(samples) FROM {db}.node_metrics_1m) AS minute_samples,
            (SELECT sum(samples) FROM {db}.node_metrics_1h) AS hour_samples,
            (SELECT count() FROM {db}.process_metrics) AS process_rows,
            (SELECT count() FROM {db}.alarms) AS alarms,
            (SELECT count() FROM {db}.node_events) AS events,
            (SELECT sum(toUnixTimestamp64Milli(ts)) FROM {db}.inventory FINAL) AS inventory_ts,
            (SELECT count() FROM {db}.process_events) AS program_events,
            (SELECT count() FROM {db}.command_audit) AS audits",
        db = db.name
    );
    let got = eventually(
        Duration::from_secs(30),
        "every message in ClickHouse",
        || async {
            let rows = query(db, &sql).await.ok()?;
            let r = rows.first()?;
            let got = (
                uint(&r["reports"]),
                uint(&r["process_rows"]),
                uint(&r["alarms"]),
                uint(&r["events"]),
                int(&r["inventory_ts"]),
                uint(&r["program_events"]),
                uint(&r["audits"]),
            );
            (got == want).then_some(r.clone())
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}: want {want:?}\n{}", logs(dir)));
    // The downsampling views saw every report.
    assert_eq!(uint(&got["minute_samples"]), want.0);
    assert_eq!(uint(&got["hour_samples"]), want.0);
}

// ---- the queries ----

/// The `-- query: <name>` blocks of docs/queries.md, by name, without the final `;`.
fn doc_queries() -> BTreeMap<String, String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/queries.md");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut out = BTreeMap::new();
    for block in text.split("```sql\n").skip(1) {
        let sql = block.split("```").next().unwrap().trim();
        let first = sql.lines().next().unwrap_or("");
        let name = first
            .strip_prefix("-- query: ")
            .unwrap_or_else(|| panic!("a sql block without a `-- query: <name>` line: {first}"));
        let sql = sql.trim_end_matches(';').to_string();
        assert!(!sql.contains(';'), "{name}: one statement per block");
        assert!(
            out.insert(name.trim().to_string(), sql).is_none(),
            "{name} twice"
        );
    }
    out
}

/// The doc's `gridmon.` tables in the test's database.
fn in_db(sql: &str, db: &str) -> String {
    assert!(sql.contains("FROM gridmon."), "{sql}");
    sql.replace("gridmon.", &format!("{db}."))
}

fn replace(sql: &str, from: &str, to: &str) -> String {
    assert!(sql.contains(from), "{from:?} is not in {sql}");
    sql.replace(from, to)
}

/// Runs a query; times come back as Unix seconds (with milliseconds for `DateTime64`).
async fn query(db: &TestDb, sql: &str) -> anyhow::Result<Vec<Json>> {
    let bytes = db
        .client
        .query(sql)
        .with_setting("date_time_output_format", "unix_timestamp")
        .fetch_bytes("JSONEachRow")?
        .collect()
        .await?;
    let text = std::str::from_utf8(&bytes)?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| Ok(serde_json::from_str(l)?))
        .collect()
}

async fn run(db: &TestDb, sql: &str) -> Vec<Json> {
    query(db, sql)
        .await
        .unwrap_or_else(|e| panic!("{e:#}\nin\n{sql}"))
}

// ---- reading the answers (64-bit integers may come quoted) ----

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn uint(v: &Value) -> u64 {
    text(v)
        .parse()
        .unwrap_or_else(|_| panic!("not an integer: {v}"))
}

fn int(v: &Value) -> i64 {
    text(v)
        .parse()
        .unwrap_or_else(|_| panic!("not an integer: {v}"))
}

fn float(v: &Value) -> f64 {
    text(v)
        .parse()
        .unwrap_or_else(|_| panic!("not a number: {v}"))
}

/// `1700000000.123` (a `DateTime64(3)`) or `1700000000` (a `DateTime`) as ms.
fn ms(v: &Value) -> i64 {
    let t = text(v);
    let (secs, frac) = t.split_once('.').unwrap_or((&t, ""));
    let frac = format!("{frac:0<3}");
    secs.parse::<i64>().unwrap() * 1000 + frac[..3].parse::<i64>().unwrap()
}

fn opt_ms(v: &Value) -> Option<i64> {
    (!v.is_null()).then(|| ms(v))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().unwrap().iter().map(text).collect()
}

fn close(got: f64, want: f64, tol: f64, what: &str) {
    assert!(
        (got - want).abs() <= tol,
        "{what}: got {got}, expected {want}"
    );
}

/// Memory or swap used, % of total, as the schema documents `mem_used_pct`.
fn used_pct(used: u64, total: u64) -> f32 {
    if total == 0 {
        0.0
    } else {
        (used as f64 * 100.0 / total as f64) as f32
    }
}

/// Sums and maxima of a set of reports.
#[derive(Debug, Default)]
struct Acc {
    nodes: BTreeSet<String>,
    samples: u64,
    cpu: f64,
    cpu_max: f32,
    mem: f64,
    mem_max: f32,
    swap: f64,
    swap_max: f32,
    load1: f64,
}

impl Acc {
    fn add(&mut self, node: &str, r: &NodeReport) {
        let h = r.host.as_ref().unwrap();
        let mem = used_pct(h.memory.used_bytes, h.memory.total_bytes);
        let swap = used_pct(h.memory.swap_used_bytes, h.memory.swap_total_bytes);
        self.nodes.insert(node.to_string());
        self.samples += 1;
        self.cpu += f64::from(h.cpu.total_pct);
        self.cpu_max = self.cpu_max.max(h.cpu.total_pct);
        self.mem += f64::from(mem);
        self.mem_max = self.mem_max.max(mem);
        self.swap += f64::from(swap);
        self.swap_max = self.swap_max.max(swap);
        self.load1 += f64::from(h.cpu.load1);
    }

    fn avg(&self, sum: f64) -> f64 {
        sum / self.samples as f64
    }
}

fn check_cluster_trend(rows: &[Json], p: &Published) {
    let mut want: BTreeMap<(String, i64), Acc> = BTreeMap::new();
    for ((c, _, n), e) in &p.reports {
        let hour = e.ts_ms.div_euclid(3_600_000) * 3_600_000;
        want.entry((c.clone(), hour)).or_default().add(n, &e.body);
    }
    assert_eq!(rows.len(), want.len(), "{rows:?}");
    for (r, ((cluster, hour), a)) in rows.iter().zip(&want) {
        assert_eq!((&text(&r["cluster"]), ms(&r["hour"])), (cluster, *hour));
        assert_eq!(uint(&r["nodes"]), a.nodes.len() as u64);
        close(float(&r["cpu_avg_pct"]), a.avg(a.cpu), 0.006, "cpu avg");
        close(float(&r["cpu_max_pct"]), a.cpu_max.into(), 1e-3, "cpu max");
        close(
            float(&r["mem_used_avg_pct"]),
            a.avg(a.mem),
            0.006,
            "mem avg",
        );
        close(
            float(&r["mem_used_max_pct"]),
            a.mem_max.into(),
            1e-3,
            "mem max",
        );
        close(
            float(&r["swap_used_avg_pct"]),
            a.avg(a.swap),
            0.006,
            "swap avg",
        );
        close(
            float(&r["swap_used_max_pct"]),
            a.swap_max.into(),
            1e-3,
            "swap max",
        );
    }
    let clusters: BTreeSet<String> = rows.iter().map(|r| text(&r["cluster"])).collect();
    assert_eq!(clusters, BTreeSet::from(["c01".into(), "c02".into()]));
}

fn check_top_cpu_nodes(rows: &[Json], p: &Published, limit: usize) {
    let mut per: BTreeMap<Place, Acc> = BTreeMap::new();
    for (place, e) in &p.reports {
        per.entry(place.clone()).or_default().add(&place.2, &e.body);
    }
    assert_eq!(rows.len(), limit, "{rows:?}");
    let mut listed = BTreeSet::new();
    let mut previous = f64::INFINITY;
    for r in rows {
        let place = (
            text(&r["cluster"]),
            text(&r["group_name"]),
            text(&r["node"]),
        );
        let a = &per[&place];
        let avg = float(&r["cpu_avg_pct"]);
        close(avg, a.avg(a.cpu), 0.006, "cpu avg");
        close(float(&r["cpu_max_pct"]), a.cpu_max.into(), 1e-3, "cpu max");
        close(float(&r["load1_avg"]), a.avg(a.load1), 0.006, "load1 avg");
        assert_eq!(uint(&r["reports"]), a.samples);
        assert!(avg <= previous, "highest first: {rows:?}");
        previous = avg;
        listed.insert(place);
    }
    // No node left out was busier than one listed (beyond the rounding to 2 decimals).
    let lowest_listed = listed
        .iter()
        .map(|pl| per[pl].avg(per[pl].cpu))
        .fold(f64::INFINITY, f64::min);
    for (pl, a) in &per {
        if !listed.contains(pl) {
            assert!(a.avg(a.cpu) <= lowest_listed + 0.01, "{pl:?} is missing");
        }
    }
}

/// Checks the runs of one process and returns them: (pid, start time ms).
fn check_process_runs(
    rows: &[Json],
    p: &Published,
    cluster: &str,
    node: &str,
    name: &str,
) -> Vec<(u32, i64)> {
    #[derive(Debug, Default)]
    struct Run {
        first: i64,
        last: i64,
        samples: u64,
        cpu: f64,
        rss_max: u64,
        cpu_time_max: f64,
        cmdline: String,
    }
    let mut want: BTreeMap<(i64, u32), Run> = BTreeMap::new();
    for ((c, _, n), e) in &p.reports {
        if c != cluster || n != node {
            continue;
        }
        let Some(table) = &e.body.processes else {
            continue;
        };
        for row in table.rows.iter().filter(|r| r.name == name) {
            let run = want
                .entry((row.start_time_ms, row.pid))
                .or_insert_with(|| Run {
                    first: e.ts_ms,
                    ..Default::default()
                });
            run.first = run.first.min(e.ts_ms);
            run.last = run.last.max(e.ts_ms);
            run.samples += 1;
            run.cpu += f64::from(row.cpu_pct);
            run.rss_max = run.rss_max.max(row.rss_bytes);
            run.cpu_time_max = run.cpu_time_max.max(row.cpu_time_s);
            run.cmdline = row.cmdline.clone();
        }
    }
    assert_eq!(rows.len(), want.len(), "{name} on {node}: {rows:?}");
    for (k, (r, ((start, pid), w))) in rows.iter().zip(&want).enumerate() {
        assert_eq!(uint(&r["run"]), k as u64 + 1);
        assert_eq!(
            (uint(&r["pid"]), ms(&r["start_time"])),
            (u64::from(*pid), *start)
        );
        assert_eq!(
            (ms(&r["first_seen"]), ms(&r["last_seen"])),
            (w.first, w.last)
        );
        assert_eq!(uint(&r["samples"]), w.samples);
        close(
            float(&r["cpu_avg_pct"]),
            w.cpu / w.samples as f64,
            0.006,
            "cpu avg",
        );
        assert_eq!(uint(&r["rss_max_bytes"]), w.rss_max);
        close(float(&r["cpu_time_s"]), w.cpu_time_max, 1e-9, "cpu time");
        assert_eq!(text(&r["cmdline"]), w.cmdline);
    }
    want.keys().map(|&(start, pid)| (pid, start)).collect()
}

/// Raises by (day, cluster, kind) → (count, nodes, rules).
type Frequency =
    BTreeMap<(String, String, &'static str), (u64, BTreeSet<String>, BTreeSet<String>)>;

fn check_fault_frequency(rows: &[Json], p: &Published) {
    let mut want: Frequency = BTreeMap::new();
    for ((c, _, n), a) in &p.alarms {
        if a.action != AlarmAction::Raise {
            continue;
        }
        let kind = if is_hardware(&a.rule) {
            "hardware"
        } else {
            "software"
        };
        let e = want.entry((day(a.ts_ms), c.clone(), kind)).or_default();
        e.0 += 1;
        if !n.is_empty() {
            e.1.insert(n.clone());
        }
        e.2.insert(a.rule.clone());
    }
    assert_eq!(rows.len(), want.len(), "{rows:?}");
    for (r, ((d, c, kind), (faults, nodes, rules))) in rows.iter().zip(&want) {
        assert_eq!(
            (text(&r["day"]), text(&r["cluster"]), text(&r["kind"])),
            (d.clone(), c.clone(), kind.to_string())
        );
        assert_eq!(uint(&r["faults"]), *faults);
        assert_eq!(uint(&r["nodes"]), nodes.len() as u64);
        assert_eq!(
            strings(&r["rules"]),
            rules.iter().cloned().collect::<Vec<_>>()
        );
    }
    // The faults injected: hardware in c02 only (n0004 overheats and loses its fan, n0006 its
    // fan); software: n0004's crash loop, n0002 and n0006 offline.
    let of = |c: &str, kind: &str| -> (u64, BTreeSet<String>, BTreeSet<String>) {
        let mut t = (0, BTreeSet::new(), BTreeSet::new());
        for ((_, cc, k), (n, nodes, rules)) in &want {
            if cc == c && *k == kind {
                t.0 += n;
                t.1.extend(nodes.iter().cloned());
                t.2.extend(rules.iter().cloned());
            }
        }
        t
    };
    let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    let hw = of("c02", "hardware");
    assert!(hw.0 >= 3, "{hw:?}");
    assert_eq!(hw.1, set(&["n0004", "n0006"]));
    assert_eq!(hw.2, set(&["fan_stopped", "sensor_crit"]));
    let sw = of("c02", "software");
    assert!(
        sw.1.is_superset(&set(&["n0002", "n0004", "n0006"])),
        "{sw:?}"
    );
    assert!(
        sw.2.is_superset(&set(&["node_offline", "program_crashed"])),
        "{sw:?}"
    );
    assert_eq!(of("c01", "hardware").0, 0);
}

fn check_fault_points(rows: &[Json], p: &Published) {
    type Key = (String, String, String, String, &'static str, String, String);
    let mut want: BTreeMap<Key, (u64, i64, i64)> = BTreeMap::new();
    for ((c, g, n), a) in &p.alarms {
        if a.action != AlarmAction::Raise {
            continue;
        }
        let kind = if is_hardware(&a.rule) {
            "hardware"
        } else {
            "software"
        };
        let key = (
            day(a.ts_ms),
            c.clone(),
            g.clone(),
            n.clone(),
            kind,
            a.rule.clone(),
            a.instance.clone().unwrap_or_default(),
        );
        let e = want.entry(key).or_insert((0, i64::MAX, i64::MIN));
        e.0 += 1;
        e.1 = e.1.min(a.ts_ms);
        e.2 = e.2.max(a.ts_ms);
    }
    let mut want: Vec<(Key, (u64, i64, i64))> = want.into_iter().collect();
    // day, cluster, raises DESC, node, rule, instance
    want.sort_by(|(a, x), (b, y)| {
        (&a.0, &a.1, std::cmp::Reverse(x.0), &a.3, &a.5, &a.6).cmp(&(
            &b.0,
            &b.1,
            std::cmp::Reverse(y.0),
            &b.3,
            &b.5,
            &b.6,
        ))
    });
    assert_eq!(rows.len(), want.len(), "{rows:?}");
    for (r, ((d, c, g, n, kind, rule, instance), (raises, first, last))) in rows.iter().zip(&want) {
        let got: Vec<String> = [
            "day",
            "cluster",
            "group_name",
            "node",
            "kind",
            "rule",
            "instance",
        ]
        .iter()
        .map(|k| text(&r[*k]))
        .collect();
        assert_eq!(got, [d, c, g, n, *kind, rule, instance]);
        assert_eq!(uint(&r["raises"]), *raises);
        assert_eq!(
            (ms(&r["first_raised"]), ms(&r["last_raised"])),
            (*first, *last)
        );
    }
    // The overheating package sensor and both stopped CPU fans are among the points.
    let points: BTreeSet<(String, String, String)> = want
        .iter()
        .map(|(k, _)| (k.3.clone(), k.5.clone(), k.6.clone()))
        .collect();
    for (n, rule, instance) in [
        ("n0004", "sensor_crit", "coretemp.0/temp1"),
        ("n0004", "fan_stopped", "nct6775.656/fan1"),
        ("n0006", "fan_stopped", "nct6775.656/fan1"),
        ("n0004", "program_crashed", "worker-1"),
    ] {
        assert!(
            points.contains(&(n.into(), rule.into(), instance.into())),
            "{n} {rule} {instance}: {points:?}"
        );
    }
}

fn check_inventory(rows: &[Json], p: &Published) {
    #[derive(Debug, Default, PartialEq)]
    struct Cluster {
        nodes: u64,
        threads: u64,
        cores: u64,
        memory: u64,
        disk: u64,
        models: BTreeSet<String>,
        os: BTreeSet<String>,
    }
    let mut want: BTreeMap<String, Cluster> = BTreeMap::new();
    for ((c, _, _), env) in p.latest_inventories() {
        let i = &env.body;
        let w = want.entry(c).or_default();
        w.nodes += 1;
        w.threads += u64::from(i.cpu_logical_cores);
        w.cores += u64::from(i.cpu_physical_cores);
        w.memory += i.memory_bytes;
        w.disk += i.disk_capacity_bytes;
        w.models.insert(i.cpu_model.clone());
        w.os.insert(format!("{} {}", i.os_name, i.os_version));
    }
    let got: BTreeMap<String, Cluster> = rows
        .iter()
        .map(|r| {
            assert!(!text(&r["memory"]).is_empty() && !text(&r["disk"]).is_empty());
            let c = Cluster {
                nodes: uint(&r["nodes"]),
                threads: uint(&r["cpu_threads"]),
                cores: uint(&r["cpu_cores"]),
                memory: uint(&r["memory_total_bytes"]),
                disk: uint(&r["disk_total_bytes"]),
                models: strings(&r["cpu_models"]).into_iter().collect(),
                os: strings(&r["os"]).into_iter().collect(),
            };
            (text(&r["cluster"]), c)
        })
        .collect();
    assert_eq!(got, want);
    let order: Vec<String> = rows.iter().map(|r| text(&r["cluster"])).collect();
    assert_eq!(order, ["c01", "c02"]);
    // The inventories agree with the reports: the nodes, their cores and memory per cluster.
    let mut reported: BTreeMap<String, BTreeMap<String, (u64, u64)>> = BTreeMap::new();
    for ((c, _, n), e) in &p.reports {
        let h = e.body.host.as_ref().unwrap();
        reported.entry(c.clone()).or_default().insert(
            n.clone(),
            (h.cpu.per_core_pct.len() as u64, h.memory.total_bytes),
        );
    }
    for (c, nodes) in &reported {
        let g = &got[c];
        assert_eq!(g.nodes, nodes.len() as u64, "{c}");
        assert_eq!(g.threads, nodes.values().map(|v| v.0).sum::<u64>(), "{c}");
        assert_eq!(g.memory, nodes.values().map(|v| v.1).sum::<u64>(), "{c}");
    }
}

fn check_offline_periods(rows: &[Json], p: &Published, queried_at_ms: i64) {
    #[derive(Debug, PartialEq)]
    struct Period {
        place: Place,
        last_report: Option<i64>,
        went_offline: i64,
        back_online: Option<i64>,
    }
    let mut by_node: HashMap<Place, Vec<&Envelope<Event>>> = HashMap::new();
    for (place, e) in &p.events {
        if matches!(e.body.event, EventKind::NodeOffline | EventKind::NodeOnline) {
            by_node.entry(place.clone()).or_default().push(e);
        }
    }
    let mut want = Vec::new();
    for (place, mut events) in by_node {
        events.sort_by_key(|e| e.ts_ms);
        for (k, e) in events.iter().enumerate() {
            let repeat = k > 0 && events[k - 1].body.event == EventKind::NodeOffline;
            if e.body.event != EventKind::NodeOffline || repeat {
                continue;
            }
            want.push(Period {
                place: place.clone(),
                last_report: e.body.last_seen_ms,
                went_offline: e.ts_ms,
                back_online: events[k + 1..]
                    .iter()
                    .find(|x| x.body.event == EventKind::NodeOnline)
                    .map(|x| x.ts_ms),
            });
        }
    }
    want.sort_by(|a, b| {
        (a.went_offline, &a.place.0, &a.place.2).cmp(&(b.went_offline, &b.place.0, &b.place.2))
    });
    let got: Vec<Period> = rows
        .iter()
        .map(|r| {
            let period = Period {
                place: (
                    text(&r["cluster"]),
                    text(&r["group_name"]),
                    text(&r["node"]),
                ),
                last_report: opt_ms(&r["last_report"]),
                went_offline: ms(&r["went_offline"]),
                back_online: opt_ms(&r["back_online"]),
            };
            let secs = float(&r["offline_s"]);
            let still = matches!(text(&r["still_offline"]).as_str(), "1" | "true");
            assert_eq!(still, period.back_online.is_none(), "{r:?}");
            let until = period.back_online.unwrap_or(queried_at_ms);
            let span = (until - period.went_offline) as f64 / 1000.0;
            if still {
                assert!(secs >= span - 1.0, "{r:?}");
            } else {
                close(secs, span, 1.0, "offline_s");
            }
            period
        })
        .collect();
    assert_eq!(got, want);
    // n0002 went silent in run A and was back in run B; n0006 never came back.
    let node = |n: &str| got.iter().filter(|p| p.place.2 == n).collect::<Vec<_>>();
    let n2 = node("n0002");
    assert!(
        n2.first()
            .is_some_and(|p| p.place.0 == "c02" && p.back_online.is_some()),
        "{got:?}"
    );
    let n6 = node("n0006");
    assert!(
        n6.last()
            .is_some_and(|p| p.back_online.is_none() && p.last_report.is_some()),
        "{got:?}"
    );
}

/// A transition's `ts` as the ingest stores it: its own time, else the envelope's.
fn transition_ts(e: &Envelope<ProgramEvent>) -> i64 {
    if e.body.ts_ms > 0 {
        e.body.ts_ms
    } else {
        e.ts_ms
    }
}

/// The program events of the stream: (place, program, ts, event).
fn transitions(p: &Published) -> Vec<(&Place, &str, i64, &ProgramEvent)> {
    p.program_events
        .iter()
        .map(|(place, e)| (place, e.body.program.as_str(), transition_ts(e), &e.body))
        .collect()
}

fn flag(v: &Value) -> bool {
    match text(v).as_str() {
        "1" | "true" => true,
        "0" | "false" => false,
        other => panic!("not a flag: {other}"),
    }
}

fn check_program_restarts(rows: &[Json], p: &Published, published_at: i64) {
    #[derive(Debug, Default, Clone, PartialEq)]
    struct Day {
        crashes: u64,
        auto_restarts: u64,
        errors: u64,
        signal_exits: u64,
        restart_counter: u64,
    }
    impl Day {
        fn trouble(&self) -> u64 {
            self.crashes + self.auto_restarts + self.errors
        }
    }
    type Key = (String, String, String, String, String);
    let mut want: BTreeMap<Key, Day> = BTreeMap::new();
    for ((c, g, n), program, ts, e) in transitions(p) {
        // Everything published is well within the query's 30 days.
        assert!(ts > published_at - 29 * DAY_MS);
        let d = want
            .entry((day(ts), c.clone(), g.clone(), n.clone(), program.into()))
            .or_default();
        d.crashes += u64::from(e.to == ProgramState::Crashed);
        d.auto_restarts += u64::from(
            e.to == ProgramState::Starting
                && matches!(e.from, ProgramState::Crashed | ProgramState::Waiting),
        );
        d.errors += u64::from(e.to == ProgramState::Error);
        d.signal_exits += u64::from(matches!(e.exit, Some(ExitStatus::Signal(_))));
        d.restart_counter = d.restart_counter.max(u64::from(e.restarts));
    }
    let mut want: Vec<(Key, Day)> = want.into_iter().filter(|(_, d)| d.trouble() > 0).collect();
    want.sort_by(|(a, x), (b, y)| {
        (&a.0, std::cmp::Reverse(x.trouble()), &a.1, &a.2, &a.3, &a.4).cmp(&(
            &b.0,
            std::cmp::Reverse(y.trouble()),
            &b.1,
            &b.2,
            &b.3,
            &b.4,
        ))
    });
    let got: Vec<(Key, Day)> = rows
        .iter()
        .map(|r| {
            let key = (
                text(&r["day"]),
                text(&r["cluster"]),
                text(&r["group_name"]),
                text(&r["node"]),
                text(&r["program"]),
            );
            let d = Day {
                crashes: uint(&r["crashes"]),
                auto_restarts: uint(&r["auto_restarts"]),
                errors: uint(&r["errors"]),
                signal_exits: uint(&r["signal_exits"]),
                restart_counter: uint(&r["restart_counter"]),
            };
            (key, d)
        })
        .collect();
    assert_eq!(got, want);

    // What publish_supervision sent, summed over days (the last ten minutes may straddle one).
    let recent = |node: &str, program: &str| {
        let old = day(published_at - 2 * DAY_MS);
        got.iter()
            .filter(|(k, _)| k.3 == node && k.4 == program && k.0 != old)
            .fold(Day::default(), |mut a, (_, d)| {
                a.crashes += d.crashes;
                a.auto_restarts += d.auto_restarts;
                a.errors += d.errors;
                a.signal_exits += d.signal_exits;
                a.restart_counter = a.restart_counter.max(d.restart_counter);
                a
            })
    };
    assert_eq!(
        recent("n0004", "ledger"),
        Day {
            crashes: 3,
            auto_restarts: 2,
            errors: 1,
            signal_exits: 1,
            restart_counter: 2,
        }
    );
    // The operator's restart out of error is not an automatic one.
    assert_eq!(
        recent("n0001", "api"),
        Day {
            crashes: 1,
            auto_restarts: 0,
            errors: 1,
            signal_exits: 0,
            restart_counter: 4,
        }
    );
    let old_api: Vec<_> = got
        .iter()
        .filter(|(k, _)| k.0 == day(published_at - 2 * DAY_MS) && k.4 == "api")
        .collect();
    assert_eq!(old_api.len(), 1, "{got:?}");
    assert_eq!((old_api[0].1.errors, old_api[0].1.restart_counter), (1, 7));
    assert!(
        got.iter().all(|(k, _)| k.4 != "cache"),
        "orderly starts and stops are left out: {got:?}"
    );
}

fn check_programs_in_error(rows: &[Json], p: &Published, published_at: i64, queried_at: i64) {
    #[derive(Debug, PartialEq)]
    struct InError {
        place: Place,
        program: String,
        times: u64,
        first_error: i64,
        last_error: i64,
        error_reason: String,
        state_now: String,
        still_in_error: bool,
    }
    let mut by_program: BTreeMap<(Place, String), Vec<(i64, &ProgramEvent)>> = BTreeMap::new();
    for (place, program, ts, e) in transitions(p) {
        // The query's window is `now() - 1 day` when it runs: nothing published sits near
        // either end of it.
        if ts >= queried_at - DAY_MS {
            by_program
                .entry((place.clone(), program.into()))
                .or_default()
                .push((ts, e));
        }
    }
    let mut want = Vec::new();
    for ((place, program), mut events) in by_program {
        events.sort_by_key(|(ts, _)| *ts);
        let errors: Vec<&(i64, &ProgramEvent)> = events
            .iter()
            .filter(|(_, e)| e.to == ProgramState::Error)
            .collect();
        let (Some(first), Some(last), Some(now)) = (errors.first(), errors.last(), events.last())
        else {
            continue;
        };
        want.push(InError {
            place,
            program,
            times: errors.len() as u64,
            first_error: first.0,
            last_error: last.0,
            error_reason: last.1.reason.clone(),
            state_now: now.1.to.as_str().into(),
            still_in_error: now.1.to == ProgramState::Error,
        });
    }
    want.sort_by(|a, b| {
        (std::cmp::Reverse(a.last_error), &a.place, &a.program).cmp(&(
            std::cmp::Reverse(b.last_error),
            &b.place,
            &b.program,
        ))
    });
    let got: Vec<InError> = rows
        .iter()
        .map(|r| InError {
            place: (
                text(&r["cluster"]),
                text(&r["group_name"]),
                text(&r["node"]),
            ),
            program: text(&r["program"]),
            times: uint(&r["times"]),
            first_error: ms(&r["first_error"]),
            last_error: ms(&r["last_error"]),
            error_reason: text(&r["error_reason"]),
            state_now: text(&r["state_now"]),
            still_in_error: flag(&r["still_in_error"]),
        })
        .collect();
    assert_eq!(got, want);

    let find = |node: &str, program: &str| {
        got.iter()
            .find(|e| e.place.2 == node && e.program == program)
            .unwrap_or_else(|| panic!("{program} on {node} is missing: {got:?}"))
    };
    let ledger = find("n0004", "ledger");
    assert_eq!(
        (
            ledger.times,
            ledger.last_error,
            ledger.error_reason.as_str(),
            ledger.still_in_error
        ),
        (1, published_at - 530_000, "start limit", true)
    );
    // In error two days ago too, but only this day's counts; back to running since.
    let api = find("n0001", "api");
    assert_eq!(
        (
            api.times,
            api.first_error,
            api.error_reason.as_str(),
            api.state_now.as_str(),
            api.still_in_error
        ),
        (1, published_at - 495_000, "health failed", "running", false)
    );
    assert!(got.iter().all(|e| e.program != "cache"), "{got:?}");
}

fn check_denied_commands(rows: &[Json], p: &Published, published_at: i64, queried_at: i64) {
    #[derive(Debug, Default, PartialEq)]
    struct Denials {
        denials: u64,
        nodes: BTreeSet<Place>,
        ops: BTreeSet<String>,
        first: i64,
        last: i64,
    }
    type Key = (String, String, String, String);
    let mut want: BTreeMap<Key, Denials> = BTreeMap::new();
    for (place, e) in &p.audits {
        let a = &e.body;
        if a.phase != AuditPhase::Denied || e.ts_ms < queried_at - 7 * DAY_MS {
            continue;
        }
        let key = (
            a.issuer.clone(),
            a.issuer_name.clone().unwrap_or_default(),
            a.error.map_or("", |k| k.as_str()).to_string(),
            a.message.clone(),
        );
        let d = want.entry(key).or_insert_with(|| Denials {
            first: i64::MAX,
            last: i64::MIN,
            ..Default::default()
        });
        d.denials += 1;
        d.nodes.insert(place.clone());
        d.ops.insert(a.op.clone());
        d.first = d.first.min(e.ts_ms);
        d.last = d.last.max(e.ts_ms);
    }
    let mut want: Vec<(Key, Denials)> = want.into_iter().collect();
    want.sort_by(|(a, x), (b, y)| {
        (std::cmp::Reverse(x.denials), a).cmp(&(std::cmp::Reverse(y.denials), b))
    });
    assert_eq!(rows.len(), want.len(), "{rows:?}");
    for (r, (key, d)) in rows.iter().zip(&want) {
        let got_key = (
            text(&r["issuer"]),
            text(&r["issuer_name"]),
            text(&r["error"]),
            text(&r["reason"]),
        );
        assert_eq!(&got_key, key);
        assert_eq!(uint(&r["denials"]), d.denials);
        assert_eq!(uint(&r["nodes"]), d.nodes.len() as u64);
        assert_eq!(
            strings(&r["ops"]),
            d.ops.iter().cloned().collect::<Vec<_>>()
        );
        assert_eq!(
            (ms(&r["first_denied"]), ms(&r["last_denied"])),
            (d.first, d.last)
        );
    }

    // UEVE was refused on two nodes (the ten-day-old refusal is outside the window), alice once.
    let row = |issuer: &str| {
        rows.iter()
            .find(|r| text(&r["issuer"]) == issuer)
            .unwrap_or_else(|| panic!("{issuer}: {rows:?}"))
    };
    let eve = row("UEVE");
    assert_eq!(
        (
            uint(&eve["denials"]),
            uint(&eve["nodes"]),
            strings(&eve["ops"]),
            text(&eve["reason"]),
            text(&eve["error"]),
        ),
        (
            2,
            2,
            vec!["restart".to_string(), "stop".to_string()],
            "unknown issuer".to_string(),
            "denied".to_string()
        )
    );
    assert_eq!(ms(&eve["first_denied"]), published_at - 420_000);
    let alice = row("UALICE");
    assert_eq!(
        (
            text(&alice["issuer_name"]),
            uint(&alice["denials"]),
            text(&alice["reason"])
        ),
        ("alice".to_string(), 1, "not allowed by policy".to_string())
    );
}

fn check_command_history(rows: &[Json], p: &Published, published_at: i64, queried_at: i64) {
    const CHANGES: [&str; 8] = [
        "start", "stop", "restart", "deploy", "upgrade", "rollback", "degrade", "shutdown",
    ];
    let mut want: Vec<(&Place, &Envelope<AuditRecord>)> = p
        .audits
        .iter()
        .filter(|(_, e)| {
            e.body.phase == AuditPhase::Finished
                && CHANGES.contains(&e.body.op.as_str())
                && e.ts_ms >= queried_at - 7 * DAY_MS
        })
        .map(|(place, e)| (place, e))
        .collect();
    want.sort_by(|(pa, a), (pb, b)| {
        (std::cmp::Reverse(a.ts_ms), pa, &a.body.request_id).cmp(&(
            std::cmp::Reverse(b.ts_ms),
            pb,
            &b.body.request_id,
        ))
    });
    assert_eq!(rows.len(), want.len(), "{rows:?}");
    for (r, (place, e)) in rows.iter().zip(&want) {
        let a = &e.body;
        let who = a
            .issuer_name
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| a.issuer.clone());
        assert_eq!(ms(&r["finished"]), e.ts_ms);
        let got: Vec<String> = [
            "who",
            "on_behalf_of",
            "op",
            "program",
            "args",
            "target",
            "cluster",
            "group_name",
            "node",
            "error",
            "message",
            "request_id",
        ]
        .iter()
        .map(|k| text(&r[*k]))
        .collect();
        let expected = [
            who,
            a.on_behalf_of.clone().unwrap_or_default(),
            a.op.clone(),
            a.program.clone().unwrap_or_default(),
            a.args.clone(),
            a.target.clone(),
            place.0.clone(),
            place.1.clone(),
            place.2.clone(),
            a.error.map_or("", |k| k.as_str()).to_string(),
            a.message.clone(),
            a.request_id.clone(),
        ];
        assert_eq!(got, expected);
        assert_eq!(flag(&r["ok"]), a.ok);
        close(
            float(&r["duration_ms"]),
            a.duration_us as f64 / 1000.0,
            0.05,
            "duration_ms",
        );
    }

    // Newest first: bob's failed deploy, then alice's restart for carol; the status is not a
    // change.
    let ours: Vec<&Json> = rows
        .iter()
        .filter(|r| text(&r["request_id"]).starts_with("r-"))
        .collect();
    let ids: Vec<String> = ours.iter().map(|r| text(&r["request_id"])).collect();
    assert_eq!(ids, ["r-2", "r-1"]);
    let (deploy, restart) = (ours[0], ours[1]);
    assert_eq!(
        (
            text(&deploy["who"]),
            flag(&deploy["ok"]),
            text(&deploy["error"]),
            float(&deploy["duration_ms"]),
            text(&deploy["args"])
        ),
        (
            "bob".to_string(),
            false,
            "failed".to_string(),
            9876.5,
            "version=1.2.3".to_string()
        )
    );
    assert_eq!(
        (
            text(&restart["who"]),
            text(&restart["on_behalf_of"]),
            text(&restart["program"]),
            text(&restart["node"]),
            flag(&restart["ok"]),
            float(&restart["duration_ms"]),
        ),
        (
            "alice".to_string(),
            "web:carol".to_string(),
            "ledger".to_string(),
            "n0004".to_string(),
            true,
            850.0
        )
    );
    assert_eq!(ms(&restart["finished"]), published_at - 399_000);
}
