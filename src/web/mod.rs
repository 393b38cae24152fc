//! `gridmon web`: the dashboard. One process serves the pages (embedded in the binary), a JSON
//! API (`docs/web-api.md`), and the real-time view as Server-Sent Events fed by its own NATS
//! subscriptions. The static and history views read ClickHouse; actions go to the agents as
//! signed commands, each recorded with the web user's name.

mod api;
mod auth;
mod history;
mod live;

use std::sync::{Arc, Mutex};

use anyhow::Context;
use futures::StreamExt;
use gridmon_nats::frame::now_ms;
use gridmon_nats::{Config, Family};
use tokio_util::sync::CancellationToken;

pub use auth::hash_password;

/// A password for generated logins (the demo's): 16 letters and digits.
pub fn random_password() -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    (0..16)
        .map(|_| char::from(ALPHABET[rand::random_range(0..ALPHABET.len())]))
        .collect()
}

/// Shared by every request.
#[derive(Debug)]
pub struct App {
    config: Config,
    live: Mutex<live::Live>,
    auth: auth::Auth,
    history: Option<history::History>,
    client: async_nats::Client,
    key: Option<nkeys::KeyPair>,
    tick: tokio::sync::watch::Receiver<u64>,
    started: std::time::Instant,
}

impl App {
    /// `connected`, `disconnected` or `pending` (never connected yet).
    fn bus_state(&self) -> &'static str {
        match self.client.connection_state() {
            async_nats::connection::State::Connected => "connected",
            async_nats::connection::State::Disconnected => "disconnected",
            async_nats::connection::State::Pending => "pending",
        }
    }

    fn live(&self) -> std::sync::MutexGuard<'_, live::Live> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub async fn run(
    config: Config,
    listen: Option<String>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let listen = listen.unwrap_or_else(|| config.web.listen.clone());
    let addr = config
        .web
        .check_listen(&listen)
        .map_err(|m| anyhow::anyhow!("web.listen: {m}"))?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    serve(config, listener, shutdown).await
}

/// Serves on an open listener until `shutdown` (the demo binds its own).
pub async fn serve(
    config: Config,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    let key_path = config
        .web
        .key_file
        .clone()
        .or_else(|| config.commands.key_file.clone());
    let key = match (&key_path, config.web.users.is_empty()) {
        (Some(p), false) => Some(crate::ctl::read_key(p)?),
        _ => None,
    };
    let history = if config.clickhouse.url.is_empty() {
        tracing::warn!("clickhouse.url is not set: the static and history views are off");
        None
    } else {
        let store = gridmon_ingest::store::Store::new(&config.clickhouse, &config.clickhouse.url);
        Some(history::History::new(store))
    };
    let subjects = config.subjects()?;
    let client = gridmon_nats::connect::connect(&config.nats, "gridmon-web").await?;
    let settings = live::LiveSettings {
        points: config.web.live_points,
        forget_after_ms: i64::try_from(config.web.forget_after.as_millis()).unwrap_or(i64::MAX),
        stale_after: config.aggregate.stale_after,
        offline_after: config.aggregate.offline_after,
    };
    let (tick_tx, tick_rx) = tokio::sync::watch::channel(0u64);
    let app = Arc::new(App {
        auth: auth::Auth::new(&config.web.users, config.web.session_ttl),
        live: Mutex::new(live::Live::new(settings, subjects.clone())),
        history,
        client: client.clone(),
        key,
        tick: tick_rx,
        started: std::time::Instant::now(),
        config,
    });

    // The bus: node reports, rollups, alarms and events.
    // The telemetry wildcards also match some 3- and 4-token alarm and command subjects; those
    // are taken only from the family subscriptions, so none is counted twice.
    let mut subs = Vec::new();
    for (s, telemetry) in [
        (subjects.all_node_reports(), true),
        (subjects.prefix().to_string(), true),
        (subjects.grid_members(), true),
        (subjects.cluster_members("*"), true),
        (subjects.family_all(Family::Alarm), false),
        (subjects.family_all(Family::Event), false),
    ] {
        let sub = client
            .subscribe(s.clone())
            .await
            .with_context(|| format!("subscribing to {s}"))?;
        subs.push(sub.map(move |m| (telemetry, m)));
    }
    // No flush here: with the bus down the dashboard still starts (and says so), and the
    // subscriptions go out when the connection comes.
    let feeder = {
        let app = app.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut messages = futures::stream::select_all(subs);
            loop {
                tokio::select! {
                    m = messages.next() => match m {
                        Some((telemetry, m)) => {
                            app.live().accept(m.subject.as_str(), m.payload, telemetry, now_ms());
                        }
                        None => break,
                    },
                    _ = shutdown.cancelled() => break,
                }
            }
        })
    };
    let ticker = {
        let app = app.clone();
        let every = app.config.web.push_every;
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut iv = tokio::time::interval(every);
            iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut n = 0u64;
            loop {
                tokio::select! {
                    _ = iv.tick() => {}
                    _ = shutdown.cancelled() => break,
                }
                app.live().tick(now_ms());
                n += 1;
                let _ = tick_tx.send(n);
            }
        })
    };

    let mode = if app.auth.enabled() {
        format!("{} users, login required", app.config.web.users.len())
    } else {
        "no users configured: read-only, this machine only".into()
    };
    eprintln!("web: dashboard at http://{addr}/ ({mode})");
    tracing::info!(%addr, "dashboard listening");
    let router = api::router(app.clone());
    let stop = shutdown.clone();
    let served = axum::serve(listener, router)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
        .context("serving HTTP");
    shutdown.cancel();
    let _ = feeder.await;
    let _ = ticker.await;
    served
}

/// `gridmon hash-password`: reads a password from stdin (one line) and prints its hash.
pub fn hash_password_from_stdin() -> anyhow::Result<()> {
    use std::io::BufRead;
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the password from stdin")?;
    let pw = line.trim_end_matches(['\r', '\n']);
    if pw.len() < 8 {
        anyhow::bail!("the password is shorter than 8 characters");
    }
    println!("{}", hash_password(pw)?);
    Ok(())
}
