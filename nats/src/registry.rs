//! The node registry: a KV bucket with one entry per node, refreshed by its agent, which
//! `gridmon ctl` reads to know who a group or cluster should contain.
//!
//! Keys are `<cluster>.<group>.<node>`, so a scope's members are one wildcard read.

use std::time::Duration;

use async_nats::jetstream::{self, kv};
use futures::StreamExt;

use crate::command::{RegistryEntry, Target};
use crate::NodeId;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("registry bucket {bucket}: {message}")]
    Bucket { bucket: String, message: String },
    #[error("registry read: {0}")]
    Read(String),
    #[error("registry write: {0}")]
    Write(String),
}

/// The key of a node's entry.
pub fn key(id: &NodeId) -> String {
    format!("{}.{}.{}", id.cluster, id.group, id.node)
}

fn filter(t: &Target) -> String {
    match (&t.cluster, &t.group, &t.node) {
        (Some(c), Some(g), Some(n)) => format!("{c}.{g}.{n}"),
        (Some(c), Some(g), None) => format!("{c}.{g}.*"),
        (Some(c), None, _) => format!("{c}.*.*"),
        (None, _, _) => "*.*.*".into(),
    }
}

/// Opens the bucket, creating it (entries forgotten after `keep`) when `create` is set.
pub async fn open(
    js: &jetstream::Context,
    bucket: &str,
    create: bool,
    keep: Duration,
) -> Result<kv::Store, RegistryError> {
    let err = |m: String| RegistryError::Bucket {
        bucket: bucket.into(),
        message: m,
    };
    if !create {
        return js.get_key_value(bucket).await.map_err(|e| {
            err(format!(
                "{e} (no agent has registered yet, or JetStream is off)"
            ))
        });
    }
    crate::leader::ensure_bucket(js, bucket, "gridmon: last-seen nodes", keep)
        .await
        .map_err(|e| err(e.to_string()))
}

/// Writes `entry` under its node's key.
pub async fn put(
    store: &kv::Store,
    id: &NodeId,
    entry: &RegistryEntry,
) -> Result<(), RegistryError> {
    let bytes = entry
        .encode()
        .map_err(|e| RegistryError::Write(e.to_string()))?;
    store
        .put(key(id), bytes.into())
        .await
        .map_err(|e| RegistryError::Write(e.to_string()))?;
    Ok(())
}

/// Every entry within `target`, read in one pass (last value per key). Entries that do not
/// decode are counted in the second value and skipped.
pub async fn load(
    js: &jetstream::Context,
    bucket: &str,
    target: &Target,
) -> Result<(Vec<RegistryEntry>, usize), RegistryError> {
    let stream =
        js.get_stream(format!("KV_{bucket}"))
            .await
            .map_err(|e| RegistryError::Bucket {
                bucket: bucket.into(),
                message: format!("{e} (no agent has registered yet, or JetStream is off)"),
            })?;
    // The keys present, then the last value of each: a fixed snapshot, however often agents
    // refresh meanwhile (a consumer's `pending` can stay above zero for as long as they write).
    let mut names = stream
        .info_with_subjects(format!("$KV.{bucket}.{}", filter(target)))
        .await
        .map_err(|e| RegistryError::Read(e.to_string()))?;
    let mut subjects = Vec::new();
    while let Some(item) = names.next().await {
        let (subject, _) = item.map_err(|e| RegistryError::Read(e.to_string()))?;
        subjects.push(subject);
    }
    let stream = &stream;
    let mut values = futures::stream::iter(subjects)
        .map(|subject| async move { stream.get_last_raw_message_by_subject(&subject).await })
        .buffer_unordered(32);
    let mut out = Vec::new();
    let mut bad = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let next = tokio::time::timeout_at(deadline, values.next())
            .await
            .map_err(|_| RegistryError::Read("timed out reading the registry".into()))?;
        let Some(msg) = next else { break };
        let msg = match msg {
            Ok(m) => m,
            // Purged between the listing and the read.
            Err(e) if e.kind() == jetstream::stream::LastRawMessageErrorKind::NoMessageFound => {
                continue
            }
            Err(e) => return Err(RegistryError::Read(e.to_string())),
        };
        // Deleted or purged keys carry a KV-Operation header and no value.
        if msg.headers.get("KV-Operation").is_some() {
            continue;
        }
        match RegistryEntry::decode(&msg.payload) {
            Ok(e) => out.push(e),
            Err(_) => bad += 1,
        }
    }
    Ok((out, bad))
}

/// How long entries of nodes that stopped refreshing are kept (after that they are forgotten).
pub const KEEP: Duration = Duration::from_secs(7 * 24 * 3600);

/// Puts in flight at once when one process refreshes many entries (the simulator).
const PUT_CONCURRENCY: usize = 64;

/// Refreshes the entries `members` lists (node and its programs) every `every` until `stop`.
/// A bus or JetStream outage is logged once and retried every period.
pub async fn keep_fresh<F>(
    js: jetstream::Context,
    bucket: String,
    every: Duration,
    agent_version: String,
    mut members: F,
    stop: tokio_util::sync::CancellationToken,
) where
    F: FnMut() -> Vec<(NodeId, Vec<String>)>,
{
    let every_ms = u64::try_from(every.as_millis()).unwrap_or(u64::MAX);
    let mut store = None;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => break,
        }
        if store.is_none() {
            match open(&js, &bucket, true, KEEP).await {
                Ok(s) => store = Some(s),
                Err(e) => {
                    if !std::mem::replace(&mut failing, true) {
                        tracing::warn!(error = %e, "cannot open the registry; retrying");
                    }
                    continue;
                }
            }
        }
        let Some(kv) = &store else { continue };
        let seen_ms = crate::frame::now_ms();
        let puts = members().into_iter().map(|(id, programs)| {
            let entry = RegistryEntry {
                schema: crate::wire::SCHEMA_VERSION,
                source: crate::wire::Source::from(&id),
                seen_ms,
                every_ms,
                agent_version: agent_version.clone(),
                programs,
            };
            async move { put(kv, &id, &entry).await }
        });
        let results: Vec<_> = futures::stream::iter(puts)
            .buffer_unordered(PUT_CONCURRENCY)
            .collect()
            .await;
        match results.iter().find_map(|r| r.as_ref().err()) {
            Some(e) => {
                if !std::mem::replace(&mut failing, true) {
                    tracing::warn!(error = %e, "cannot refresh the registry; retrying");
                }
            }
            None => {
                if std::mem::replace(&mut failing, false) {
                    tracing::info!("registry refreshed again");
                }
            }
        }
    }
}
