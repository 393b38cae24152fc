//! `gridmon ingest`: the JetStream stream into ClickHouse.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use gridmon_ingest::backup;
use gridmon_ingest::pipeline::{self, Stats};
use gridmon_ingest::store::Store;
use gridmon_nats::config::Config;
use gridmon_nats::connect::connect;
use tokio_util::sync::CancellationToken;

/// What this run does besides (or instead of) ingesting.
#[derive(Debug, Clone, Copy, Default)]
pub struct Mode {
    /// Apply the migrations and the retention, then exit.
    pub migrate_only: bool,
    /// Take one backup, then exit.
    pub backup_now: bool,
}

/// The ClickHouse store of a config, its version checked and its schema up to date.
pub async fn open_store(config: &Config) -> anyhow::Result<Store> {
    let ch = &config.clickhouse;
    if ch.url.is_empty() {
        anyhow::bail!(
            "no ClickHouse server: set clickhouse.url or CLICKHOUSE_URL \
             (scripts/demo starts the embedded engine and sets it)"
        );
    }
    let store = Store::new(ch, &ch.url);
    let version = store
        .check_version()
        .await
        .with_context(|| format!("ClickHouse at {}", ch.url))?;
    tracing::info!(url = %ch.url, %version, database = %ch.database, "ClickHouse");
    let who = format!(
        "{}-{}",
        gridmon_nats::identity::hostname_token(),
        std::process::id()
    );
    let applied = store.migrate(&who).await?;
    let changed = store.apply_retention(&config.ingest.retention).await?;
    tracing::info!(
        migrations_applied = ?applied,
        retention_changed = ?changed,
        "schema up to date"
    );
    Ok(store)
}

pub async fn run(config: Config, mode: Mode, shutdown: CancellationToken) -> anyhow::Result<()> {
    let store = open_store(&config).await?;
    if mode.migrate_only {
        println!("schema of database {} is up to date", store.database());
        return Ok(());
    }
    if mode.backup_now {
        let template = &config.ingest.backup.destination;
        if template.is_empty() {
            anyhow::bail!("--backup-now needs ingest.backup.destination in the config");
        }
        let dest = backup::backup_now(&store, template).await?;
        println!("backup written to {dest}");
        return Ok(());
    }

    let subjects = config.subjects()?;
    let client = connect(&config.nats, "gridmon-ingest").await?;
    let js = async_nats::jetstream::new(client.clone());
    let stream = pipeline::ensure_stream(&js, &subjects, &config.ingest).await?;
    warn_if_sync_is_lax(&client, config.ingest.nats_monitor_url.as_deref()).await;
    let consumer = pipeline::ensure_consumer(&stream, &config.ingest).await?;
    tracing::info!(
        stream = %config.ingest.stream.name,
        consumer = %config.ingest.consumer.durable,
        subjects = ?pipeline::stream_subjects(&subjects),
        "ingesting"
    );
    let backups = match (
        &config.ingest.backup.every,
        config.ingest.backup.destination.is_empty(),
    ) {
        (Some(every), false) => Some(tokio::spawn(backup::schedule(
            store.clone(),
            config.ingest.backup.destination.clone(),
            *every,
            shutdown.clone(),
        ))),
        _ => None,
    };
    let stats = Arc::new(Stats::default());
    let result = pipeline::run(
        config.ingest.clone(),
        subjects,
        consumer,
        store,
        stats,
        shutdown.clone(),
    )
    .await;
    shutdown.cancel();
    if let Some(b) = backups {
        b.await.ok();
    }
    tokio::time::timeout(Duration::from_secs(2), client.flush())
        .await
        .ok();
    result
}

/// JetStream acknowledges what it has in the OS page cache; only `sync_interval: always`
/// (nats-server 2.10 and later) makes an acknowledged message survive an OS crash.
async fn warn_if_sync_is_lax(client: &async_nats::Client, monitor: Option<&str>) {
    let info = client.server_info();
    let version = gridmon_ingest::store::parse_version(&info.version).unwrap_or((0, 0));
    if version < (2, 10) {
        tracing::warn!(
            server = %info.version,
            "nats-server before 2.10 writes JetStream messages to the OS page cache and syncs them \
             to disk only every 2 minutes: an OS crash (not a process crash) can lose messages \
             published shortly before it. nats-server 2.10+ with `jetstream {{ sync_interval: always }}` \
             closes that window"
        );
        return;
    }
    let Some(base) = monitor else {
        tracing::warn!(
            server = %info.version,
            "cannot check JetStream's sync_interval (set ingest.nats_monitor_url): unless the \
             server runs with `sync_interval: always`, an OS crash can lose acknowledged messages"
        );
        return;
    };
    match read_sync_always(base).await {
        Ok(true) => {}
        Ok(false) => tracing::warn!(
            "JetStream syncs to disk periodically: an OS crash can lose acknowledged messages \
             published since the last sync; set `jetstream {{ sync_interval: always }}` to close it"
        ),
        Err(e) => tracing::warn!(error = %e, "cannot read the NATS monitoring endpoint"),
    }
}

/// `jetstream.config.sync_always` from `/varz`, by a plain HTTP/1.0 GET (no client crate for
/// one request).
async fn read_sync_always(base: &str) -> anyhow::Result<bool> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = base
        .strip_prefix("http://")
        .context("ingest.nats_monitor_url must be http://host:port")?;
    let host = rest.trim_end_matches('/');
    let mut s = tokio::time::timeout(Duration::from_secs(3), tokio::net::TcpStream::connect(host))
        .await
        .context("timed out")??;
    s.write_all(format!("GET /varz HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())
        .await?;
    let mut body = Vec::new();
    tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut body))
        .await
        .context("timed out")??;
    let text = String::from_utf8_lossy(&body);
    let json = text.split("\r\n\r\n").nth(1).unwrap_or("");
    let v: serde_json::Value = serde_json::from_str(json).context("reading /varz")?;
    Ok(v.pointer("/jetstream/config/sync_always") == Some(&serde_json::Value::Bool(true)))
}
