//! Integration tests: the real `gridmon` binary against a real `nats-server` (and ClickHouse engine).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod agent;
mod aggregate;
mod commands;
mod config;
mod deploy;
mod ingest;
mod outage;
mod permissions;
mod python;
mod queries;
mod releases;
mod simulate;
mod top;
mod web;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use async_nats::jetstream;
use gridmon_nats::wire::{self, Envelope, Kind, NodeReport};

/// The binary under test.
pub const GRIDMON: &str = env!("CARGO_BIN_EXE_gridmon");

/// `YYYY-MM-DD` of a time in ms (UTC), as ClickHouse prints a `Date`.
pub fn day(ts_ms: i64) -> String {
    // Howard Hinnant's civil_from_days.
    let z = ts_ms.div_euclid(86_400_000) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Starts `gridmon ARGS` with its log in `DIR/NAME.log`, in its own process group, killed on drop.
/// The config names the database, so an inherited `CLICKHOUSE_DATABASE` is dropped.
pub fn spawn_logged(dir: &Path, name: &str, args: &[&str]) -> tokio::process::Child {
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    gridmon_commands::child::command(GRIDMON)
        .args(args)
        .env("GRIDMON_LOG", "info,async_nats=warn")
        .env_remove("CLICKHOUSE_DATABASE")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

/// A running `gridmon agent`, killed on drop.
#[derive(Debug)]
pub struct Agent {
    pub child: tokio::process::Child,
}

/// Starts `gridmon agent` for node `c1/g1/<node>` with a fast interval; `nats_keys` go in the
/// `[nats]` table and `extra_toml` (whole tables) at the end.
pub fn start_agent(dir: &Path, url: &str, node: &str, nats_keys: &str, extra_toml: &str) -> Agent {
    let config = dir.join(format!("{node}.toml"));
    std::fs::write(
        &config,
        format!(
            "[nats]\nservers = [{url:?}]\nreconnect_max_delay = \"500ms\"\nack_timeout = \"2s\"\n{nats_keys}\n\
             [identity]\ncluster = \"c1\"\ngroup = \"g1\"\nnode = {node:?}\n\
             [agent]\ninterval = \"200ms\"\nprocess_interval = \"400ms\"\n{extra_toml}"
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.join(format!("{node}.log"))).unwrap();
    let child = gridmon_commands::child::command(GRIDMON)
        .arg("agent")
        .arg("--config")
        .arg(&config)
        .env("GRIDMON_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    Agent { child }
}

impl Agent {
    /// SIGTERM and wait: the agent flushes its spool on the way out.
    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            // SAFETY: signals the child's own process group.
            unsafe {
                libc::kill(-(pid as i32), libc::SIGTERM);
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
    }
}

/// Creates a file-backed stream capturing everything under `grid.`.
pub async fn create_stream(client: &async_nats::Client) -> jetstream::stream::Stream {
    let js = jetstream::new(client.clone());
    js.get_or_create_stream(jetstream::stream::Config {
        name: "GRIDTEST".into(),
        subjects: vec!["grid.>".into()],
        storage: jetstream::stream::StorageType::File,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    })
    .await
    .unwrap()
}

/// Every node report of `subject` stored in the stream, decoded, in stream order.
pub async fn stored_reports(
    client: &async_nats::Client,
    subject: &str,
) -> Vec<Envelope<NodeReport>> {
    let js = jetstream::new(client.clone());
    let mut stream = js.get_stream("GRIDTEST").await.unwrap();
    let last = stream.info().await.unwrap().state.last_sequence;
    let mut out = Vec::new();
    for seq in 1..=last {
        let Ok(msg) = stream.get_raw_message(seq).await else {
            continue;
        };
        if msg.subject.as_str() == subject {
            out.push(wire::decode(&msg.payload, Kind::NodeReport).unwrap());
        }
    }
    out
}
