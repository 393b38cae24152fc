//! `gridmon top`: the live terminal view. Grid → cluster → group → node from the rollups, the
//! node view from that node's own reports, and start/stop/restart of supervised programs as
//! signed commands after a confirmation. See `docs/top.md`.
//!
//! `model` holds what the bus said, `app` the operator's place and keys, `view` draws both,
//! `term` owns the terminal; this module wires them to NATS.

mod app;
mod model;
mod term;
mod view;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use clap::Args;
use futures::StreamExt;
use gridmon_nats::command::{CommandBody, CommandReply};
use gridmon_nats::frame::now_ms;
use gridmon_nats::wire::{self, Envelope, Kind, ReportRequest, Source, SCHEMA_VERSION};
use gridmon_nats::{Config, Family, NodeId, Scope, Subjects};
use ratatui::crossterm::event::Event;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use app::{ActionRequest, App, Effect};
use model::{Place, Store};

#[derive(Debug, Args)]
pub struct TopArgs {
    /// Run as one group's local display: `CLUSTER/GROUP`.
    #[arg(long)]
    pub group: Option<String>,
    /// The operator key (an nkey seed file) for program actions; default `commands.key_file` or
    /// `GRIDMON_KEY_FILE`. Without one the view is read-only.
    #[arg(long)]
    pub key: Option<std::path::PathBuf>,
}

/// How often the screen is redrawn when nothing is pressed (ages tick, rollups arrive).
const REFRESH: Duration = Duration::from_millis(250);
/// How long to wait for the answer to a report request when a node view opens.
const FETCH_TIMEOUT: Duration = Duration::from_secs(2);

/// Logs to `GRIDMON_LOG_FILE` when set; the screen belongs to the view.
pub fn init_logging(filter: &str) {
    let Some(path) = std::env::var_os("GRIDMON_LOG_FILE") else {
        return;
    };
    let file = match std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) => {
            eprintln!(
                "gridmon: cannot open GRIDMON_LOG_FILE {}: {e}; not logging",
                path.to_string_lossy()
            );
            return;
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(filter))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(std::sync::Mutex::new(file))
        .try_init();
}

/// What arrives from the tasks the loop starts.
#[derive(Debug)]
enum Incoming {
    /// The answer to a report request sent at the instant given.
    Report(NodeId, Instant, Bytes),
    Outcome(ActionRequest, Box<Result<CommandReply, String>>),
}

pub async fn run(config: Config, args: TopArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let subjects = config.subjects()?;
    let root = match &args.group {
        Some(g) => parse_group(g)?,
        None => Place::Grid,
    };
    let key = match args.key.as_ref().or(config.commands.key_file.as_ref()) {
        Some(path) => Some(Arc::new(crate::ctl::read_key(path)?)),
        None => None,
    };
    let client = gridmon_nats::connect::connect(&config.nats, "gridmon-top").await?;
    let mut subs = Vec::new();
    // Every rollup and alarm; no node reports (those only for the node looked at).
    for s in subjects.overview() {
        subs.push(
            client
                .subscribe(s.clone())
                .await
                .with_context(|| format!("subscribing to {s}"))?,
        );
    }
    let mut bus = futures::stream::select_all(subs);
    let config = Arc::new(config);
    let (tx, mut rx) = mpsc::unbounded_channel::<Incoming>();
    let mut store = Store::default();
    let mut app = App::new(root, key.is_some());
    let ctx = |client: &async_nats::Client| view::Context {
        connected: client.connection_state() == async_nats::connection::State::Connected,
        prefix: subjects.prefix().to_string(),
    };

    // Debug builds only: a key that panics, so the tests can see the terminal restored.
    let test_panic_key: Option<char> = if cfg!(debug_assertions) {
        std::env::var("GRIDMON_TOP_TEST_PANIC")
            .ok()
            .and_then(|v| v.chars().next())
    } else {
        None
    };
    let mut screen = term::Screen::enter().context("cannot set up the terminal")?;
    let mut keys = term::Keys::spawn().context("cannot read the keyboard")?;
    let mut node_sub: Option<(NodeId, async_nats::Subscriber)> = None;
    let mut tick = tokio::time::interval(REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tracing::info!(root = ?app.root(), read_only = key.is_none(), "gridmon top started");
    let result: anyhow::Result<()> = loop {
        // The node view's reports: subscribed while it is open, and asked for at once.
        let want = app.watched_node().cloned();
        if want.as_ref() != node_sub.as_ref().map(|(id, _)| id) {
            if let Some((_, mut s)) = node_sub.take() {
                let _ = s.unsubscribe().await;
            }
            if let Some(id) = want {
                match client.subscribe(subjects.node_report(&id)).await {
                    Ok(s) => node_sub = Some((id.clone(), s)),
                    Err(e) => break Err(anyhow::anyhow!(e).context("subscribing to a node")),
                }
                tokio::spawn(fetch_latest(
                    client.clone(),
                    subjects.clone(),
                    id,
                    tx.clone(),
                ));
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => break Ok(()),
            ev = keys.events.recv() => {
                let Some(ev) = ev else { break Err(anyhow::anyhow!("the keyboard reader stopped")) };
                let Event::Key(k) = ev else {
                    // A resize (or anything else) redraws.
                    draw(&mut screen, &app, &store, &ctx(&client))?;
                    continue;
                };
                if test_panic_key.is_some_and(|c| k.code == ratatui::crossterm::event::KeyCode::Char(c)) {
                    panic!("GRIDMON_TOP_TEST_PANIC: panicking on request");
                }
                match app.handle_key(k, &store) {
                    Effect::Quit => break Ok(()),
                    Effect::Send(req) => send(&client, &config, key.clone(), req, tx.clone()),
                    Effect::None => {}
                }
                draw(&mut screen, &app, &store, &ctx(&client))?;
            }
            m = bus.next() => {
                let Some(m) = m else { break Err(anyhow::anyhow!("the NATS connection closed")) };
                store.apply(&subjects, m.subject.as_str(), &m.payload, Instant::now());
            }
            m = next_node(&mut node_sub) => {
                let Some(m) = m else { break Err(anyhow::anyhow!("the NATS connection closed")) };
                store.apply(&subjects, m.subject.as_str(), &m.payload, Instant::now());
            }
            inc = rx.recv() => match inc {
                // Unless a report came on the subject since the question was asked.
                Some(Incoming::Report(id, asked, bytes))
                    if store.nodes.get(&id).is_none_or(|n| n.report.at < asked) =>
                {
                    store.apply_report(&id, &bytes, Instant::now());
                }
                Some(Incoming::Outcome(req, result)) => {
                    if let Ok(reply) = result.as_ref() {
                        store.update_programs(&req.node, &reply.programs);
                    }
                    app.finish(&req, *result);
                    draw(&mut screen, &app, &store, &ctx(&client))?;
                }
                Some(Incoming::Report(..)) | None => {}
            },
            _ = tick.tick() => draw(&mut screen, &app, &store, &ctx(&client))?,
        }
    };
    drop(keys);
    drop(screen);
    tracing::info!(undecodable = store.bad, "gridmon top stopped");
    result
}

fn draw(
    screen: &mut term::Screen,
    app: &App,
    store: &Store,
    ctx: &view::Context,
) -> anyhow::Result<()> {
    let now = Instant::now();
    screen
        .terminal
        .draw(|f| view::render(app, store, ctx, now, f.area(), f.buffer_mut()))
        .context("drawing")?;
    Ok(())
}

async fn next_node(
    sub: &mut Option<(NodeId, async_nats::Subscriber)>,
) -> Option<async_nats::Message> {
    match sub {
        Some((_, s)) => s.next().await,
        None => std::future::pending().await,
    }
}

/// `CLUSTER/GROUP`, each a valid token.
fn parse_group(s: &str) -> anyhow::Result<Place> {
    let Some((c, g)) = s.split_once('/') else {
        anyhow::bail!("--group takes CLUSTER/GROUP, got {s:?}");
    };
    gridmon_nats::identity::validate_token("cluster", c)?;
    gridmon_nats::identity::validate_token("group", g)?;
    Ok(Place::Group(c.to_string(), g.to_string()))
}

/// Who acts: the local user, recorded in the agent's audit.
fn local_user() -> Option<String> {
    ["USER", "LOGNAME"]
        .into_iter()
        .filter_map(|v| std::env::var(v).ok())
        .find(|u| !u.is_empty())
}

/// Sends the confirmed action in the background; the outcome comes back on `tx`.
fn send(
    client: &async_nats::Client,
    config: &Arc<Config>,
    key: Option<Arc<nkeys::KeyPair>>,
    req: ActionRequest,
    tx: mpsc::UnboundedSender<Incoming>,
) {
    let (client, config) = (client.clone(), config.clone());
    tokio::spawn(async move {
        let body = CommandBody {
            op: req.op,
            program: Some(req.program.clone()),
            on_behalf_of: local_user(),
            ..Default::default()
        };
        tracing::info!(op = %req.op, program = %req.program, node = %req.node, "sending");
        let timeout = crate::ctl::command_timeout(&config, req.op);
        let result =
            crate::ctl::request_one(&client, &config, &req.node, body, key.as_deref(), timeout)
                .await
                .map_err(|e| format!("{e:#}"));
        tracing::info!(op = %req.op, program = %req.program, node = %req.node, ?result, "answered");
        let _ = tx.send(Incoming::Outcome(req, Box::new(result)));
    });
}

/// Asks for a node's latest report so the node view fills at once: on the node's own command
/// subject (agents), or else on its group's (the simulator answers there, once per node).
async fn fetch_latest(
    client: async_nats::Client,
    subjects: Subjects,
    id: NodeId,
    tx: mpsc::UnboundedSender<Incoming>,
) {
    let env = Envelope {
        schema: SCHEMA_VERSION,
        kind: Kind::ReportRequest,
        source: Source::from(&id),
        ts_ms: now_ms(),
        run_id: u64::try_from(now_ms()).unwrap_or(0),
        seq: 1,
        body: ReportRequest {
            requester: "gridmon-top".into(),
        },
    };
    let Ok(payload) = wire::encode(&env) else {
        return;
    };
    let asked = Instant::now();
    let payload = Bytes::from(payload);
    let node_subject = subjects.family(Family::Cmd, &Scope::Node(id.clone()));
    match tokio::time::timeout(FETCH_TIMEOUT, client.request(node_subject, payload.clone())).await {
        Ok(Ok(m)) => {
            let _ = tx.send(Incoming::Report(id, asked, m.payload));
            return;
        }
        Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::NoResponders => {}
        _ => return,
    }
    let group = Scope::Group {
        cluster: id.cluster.clone(),
        group: id.group.clone(),
    };
    let inbox = client.new_inbox();
    let Ok(mut replies) = client.subscribe(inbox.clone()).await else {
        return;
    };
    if client
        .publish_with_reply(subjects.family(Family::Cmd, &group), inbox, payload)
        .await
        .is_err()
    {
        return;
    }
    let deadline = tokio::time::sleep(FETCH_TIMEOUT);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = &mut deadline => return,
            m = replies.next() => {
                let Some(m) = m else { return };
                let mine = wire::peek(&m.payload)
                    .is_ok_and(|h| h.source.node.as_deref() == Some(id.node.as_str()));
                if mine {
                    let _ = tx.send(Incoming::Report(id, asked, m.payload));
                    return;
                }
            }
        }
    }
}
