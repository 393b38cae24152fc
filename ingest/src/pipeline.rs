//! The ingest loop: JetStream stream → rows → ClickHouse, acknowledged only once written.
//!
//! ```text
//!  pull consumer ──▶ Converter ──▶ per-table buffers ──(rows or age)──▶ insert tasks ──▶ ack
//!        ▲                                                                    │
//!        └──── stops pulling while buffered + in-flight rows ≥ max_pending ◀──┘
//! ```
//!
//! Nothing lost: a message is acknowledged only when every table it fed has confirmed its
//! rows. A message held longer (a slow or stopped ClickHouse) is marked in progress before
//! `ack_wait` runs out, so JetStream does not deliver it again to another worker; only a dead
//! worker's messages come back.
//!
//! Nothing doubled:
//! - a batch whose insert failed is retried as it is, with the same
//!   `insert_deduplication_token`, so an attempt that landed after all is not written again;
//! - a message JetStream delivers again (its worker died, or its ack was lost) may have been
//!   written already: before its rows are inserted, each table is asked which of these messages
//!   it holds (by the `msg` column), and those rows are dropped. One message's rows in a table
//!   are one block of one insert (same `ts`, hence the same partition, and a batch never exceeds
//!   `max_insert_block_size`), so they are all there or none is.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use async_nats::jetstream::{self, consumer, stream, AckKind};
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use gridmon_nats::config::{IngestConfig, StreamStorage};
use gridmon_nats::subject::Subjects;
use tokio_util::sync::CancellationToken;

use crate::rows::{Converter, Outcome, Reject, Rows, Table, TableRow};
use crate::store::Store;

/// Counters of one ingest process; logged periodically and at exit.
#[derive(Debug, Default)]
pub struct Stats {
    pub received: AtomicU64,
    pub redelivered: AtomicU64,
    /// Deliveries of a message this process still holds (its in-progress marks came late).
    pub held_again: AtomicU64,
    pub acked: AtomicU64,
    pub skipped: AtomicU64,
    pub rejected_subject: AtomicU64,
    pub rejected_malformed: AtomicU64,
    pub rejected_schema: AtomicU64,
    pub rejected_kind: AtomicU64,
    pub rejected_identity: AtomicU64,
    pub rejected_time: AtomicU64,
    pub rows_written: AtomicU64,
    /// Rows of messages delivered again that were found written already.
    pub rows_already_present: AtomicU64,
    pub batches: AtomicU64,
    pub insert_failures: AtomicU64,
    /// Inserts are failing now (set by the first failure, cleared by the next success).
    pub failing: std::sync::atomic::AtomicBool,
    pub non_finite: AtomicU64,
    pub cut_strings: AtomicU64,
    pub negative: AtomicU64,
}

impl Stats {
    pub fn rejected(&self) -> u64 {
        [
            &self.rejected_subject,
            &self.rejected_malformed,
            &self.rejected_schema,
            &self.rejected_kind,
            &self.rejected_identity,
            &self.rejected_time,
        ]
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .sum()
    }

    fn log(&self, what: &str) {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        tracing::info!(
            received = g(&self.received),
            redelivered = g(&self.redelivered),
            held_again = g(&self.held_again),
            acked = g(&self.acked),
            skipped = g(&self.skipped),
            rejected = self.rejected(),
            rows_written = g(&self.rows_written),
            rows_already_present = g(&self.rows_already_present),
            batches = g(&self.batches),
            insert_failures = g(&self.insert_failures),
            repaired_non_finite = g(&self.non_finite),
            repaired_cut_strings = g(&self.cut_strings),
            repaired_negative = g(&self.negative),
            "{what}"
        );
    }
}

/// The stream's subjects: everything under the prefix. Telemetry wildcards (`grid.*.*.*`)
/// would overlap the family subjects (`grid.alarm.>`), which one stream cannot hold, so the
/// stream takes `<p>` and `<p>.>`, and the ingest skips what is not history (commands).
pub fn stream_subjects(subjects: &Subjects) -> Vec<String> {
    let p = subjects.prefix();
    vec![p.to_string(), format!("{p}.>")]
}

/// Creates the stream, or checks and updates an existing one to the configured limits.
///
/// The stream is `no_ack`: it stores what is published without answering. Command requests
/// under `<p>.cmd` travel through it too, and an answering stream would reply to them before
/// the agent does. Publishers confirm delivery with a flush instead; duplicates of a retried
/// publish are still dropped by `Nats-Msg-Id` within `duplicate_window`.
pub async fn ensure_stream(
    js: &jetstream::Context,
    subjects: &Subjects,
    cfg: &IngestConfig,
) -> anyhow::Result<stream::Stream> {
    let s = &cfg.stream;
    let config = stream::Config {
        name: s.name.clone(),
        subjects: stream_subjects(subjects),
        max_age: s.max_age,
        max_bytes: s.max_bytes,
        num_replicas: s.replicas,
        storage: match s.storage {
            StreamStorage::File => stream::StorageType::File,
            StreamStorage::Memory => stream::StorageType::Memory,
        },
        duplicate_window: s.duplicate_window,
        discard: stream::DiscardPolicy::Old,
        retention: stream::RetentionPolicy::Limits,
        no_ack: true,
        description: Some(
            "gridmon: every report, rollup, alarm and event, for the ClickHouse ingest".into(),
        ),
        ..Default::default()
    };
    match js.get_stream(&s.name).await {
        Ok(mut existing) => {
            let info = existing.info().await?.config.clone();
            if info.subjects != config.subjects || !info.no_ack {
                anyhow::bail!(
                    "JetStream stream {} exists with subjects {:?} (no_ack {}); gridmon needs {:?} with no_ack: \
                     delete it or set ingest.stream.name to another name",
                    s.name,
                    info.subjects,
                    info.no_ack,
                    config.subjects
                );
            }
            if info.max_age != config.max_age
                || info.max_bytes != config.max_bytes
                || info.duplicate_window != config.duplicate_window
            {
                js.update_stream(&config)
                    .await
                    .context("updating the stream's limits")?;
                tracing::info!(stream = %s.name, "stream limits updated");
            }
            Ok(existing)
        }
        Err(e)
            if matches!(
                e.kind(),
                jetstream::context::GetStreamErrorKind::JetStream(ref j)
                    if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
            ) =>
        {
            let created = js.create_stream(config).await.with_context(|| {
                format!(
                    "creating JetStream stream {} on {:?} with max_bytes {} (another stream may \
                     already capture these subjects, or the server's JetStream storage may be \
                     smaller: see ingest.stream.max_bytes)",
                    s.name,
                    stream_subjects(subjects),
                    s.max_bytes
                )
            })?;
            tracing::info!(stream = %s.name, "stream created");
            Ok(created)
        }
        Err(e) => Err(anyhow::anyhow!(e))
            .context("JetStream is not available: run nats-server with JetStream enabled (-js)"),
    }
}

/// The durable pull consumer the workers share.
pub async fn ensure_consumer(
    stream: &stream::Stream,
    cfg: &IngestConfig,
) -> anyhow::Result<consumer::Consumer<consumer::pull::Config>> {
    let c = &cfg.consumer;
    stream
        .get_or_create_consumer(
            &c.durable,
            consumer::pull::Config {
                durable_name: Some(c.durable.clone()),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: c.ack_wait,
                max_ack_pending: c.max_ack_pending,
                deliver_policy: consumer::DeliverPolicy::All,
                max_deliver: -1,
                description: Some("gridmon ingest workers".into()),
                ..Default::default()
            },
        )
        .await
        .with_context(|| format!("creating or binding consumer {}", c.durable))
}

/// A message waiting for its tables.
struct Pending {
    acker: jetstream::message::Acker,
    /// Tables still to confirm, a bit per [`Table::index`].
    left: u16,
    marked_at: Instant,
}

/// Rows of one table on their way to ClickHouse.
struct Batch {
    table: Table,
    seqs: Vec<u64>,
    rows: usize,
}

type InsertResult = (Batch, anyhow::Result<(u64, u64)>);

/// Per-table buffer bookkeeping (the rows themselves are in [`Rows`]).
#[derive(Default)]
struct Buf {
    seqs: Vec<u64>,
    since: Option<Instant>,
    /// Messages delivered again: look them up before inserting.
    suspects: HashSet<u64>,
}

/// Runs until `shutdown`; then stops pulling, writes what it holds and returns.
pub async fn run(
    cfg: IngestConfig,
    subjects: Subjects,
    consumer: consumer::Consumer<consumer::pull::Config>,
    store: Store,
    stats: Arc<Stats>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // One pull at a time, asked for only while there is room: every message delivered to
    // this worker is one it holds and marks in progress, never one waiting in a prefetch
    // buffer while its ack_wait runs out. Rows held can exceed max_pending_rows by at most one
    // pull (`fetch` messages).
    let mut batch: Option<jetstream::consumer::pull::Batch> = None;
    let mut pull_failures = 0u32;
    let mut conv = Converter::new(subjects, cfg.max_string_bytes);
    let mut rows = Rows::default();
    let mut bufs: Vec<Buf> = Table::ALL.iter().map(|_| Buf::default()).collect();
    let mut pending: HashMap<u64, Pending> = HashMap::new();
    let mut inflight: FuturesUnordered<tokio::task::JoinHandle<InsertResult>> =
        FuturesUnordered::new();
    let mut inflight_rows = 0usize;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut report = tokio::time::interval(Duration::from_secs(30));
    report.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The consumer as the server has it: an existing one keeps its settings.
    let ack_wait = consumer.cached_info().config.ack_wait;
    if ack_wait != cfg.consumer.ack_wait {
        tracing::warn!(
            server = ?ack_wait,
            config = ?cfg.consumer.ack_wait,
            "the consumer exists with another ack_wait; using the server's (delete the consumer to apply the config's)"
        );
    }
    let progress_every = ack_wait / 3;
    let drain_for = store.timeout() + Duration::from_secs(5);
    let mut busy = [0u8; Table::ALL.len()];
    // nats-server 2.9 sometimes sends no timeout status when a partly filled pull expires, and
    // the client then waits its own fallback (expiry + 5 s); a pull is dropped here instead.
    let mut batch_deadline = tokio::time::Instant::now();
    let mut pull_after = tokio::time::Instant::now();
    let insert_stop = CancellationToken::new();
    let mut draining = false;
    let mut drain_deadline = None;

    loop {
        let room = rows.total() + inflight_rows < cfg.max_pending_rows;
        if batch.is_none() && room && !draining && tokio::time::Instant::now() >= pull_after {
            match consumer
                .batch()
                .max_messages(cfg.consumer.fetch)
                .expires(Duration::from_secs(1))
                .messages()
                .await
            {
                Ok(b) => {
                    batch = Some(b);
                    batch_deadline = tokio::time::Instant::now() + Duration::from_millis(1500);
                }
                Err(e) => {
                    pull_failures += 1;
                    pull_after = tokio::time::Instant::now() + pull_backoff(pull_failures);
                    if pull_failures == 1 || pull_failures.is_multiple_of(60) {
                        tracing::warn!(error = %e, failures = pull_failures, "pulling from the consumer");
                    }
                    // Keep serving inserts and acks meanwhile; the tick retries.
                }
            }
        }
        tokio::select! {
            biased;
            _ = shutdown.cancelled(), if !draining => {
                draining = true;
                // Messages of the current pull not yet taken come back to another worker.
                batch = None;
                drain_deadline = Some(tokio::time::Instant::now() + drain_for);
                for t in Table::ALL {
                    flush(t, &mut rows, &mut bufs, &mut busy, cfg.insert_concurrency, &store, &stats, &insert_stop, &mut inflight, &mut inflight_rows);
                }
            }
            _ = async { tokio::time::sleep_until(drain_deadline.unwrap_or_else(tokio::time::Instant::now)).await }, if drain_deadline.is_some() => {
                tracing::warn!(batches = inflight.len(), "stopping with inserts unfinished; their messages will be delivered again");
                insert_stop.cancel();
                for task in inflight.iter() {
                    task.abort();
                }
                break;
            }
            Some(done) = inflight.next(), if !inflight.is_empty() => {
                let Ok((batch, result)) = done else {
                    // Only an aborted task ends without its batch, and tasks are aborted only
                    // on the way out.
                    continue;
                };
                inflight_rows = inflight_rows.saturating_sub(batch.rows);
                busy[batch.table.index()] = busy[batch.table.index()].saturating_sub(1);
                match result {
                    Ok((written, present)) => {
                        stats.rows_written.fetch_add(written, Ordering::Relaxed);
                        stats.rows_already_present.fetch_add(present, Ordering::Relaxed);
                        stats.batches.fetch_add(1, Ordering::Relaxed);
                        let bit = 1u16 << batch.table.index();
                        for seq in batch.seqs {
                            let done = pending.get_mut(&seq).is_some_and(|p| {
                                p.left &= !bit;
                                p.left == 0
                            });
                            if done {
                                if let Some(p) = pending.remove(&seq) {
                                    ack(&p.acker, &stats).await;
                                }
                            }
                        }
                    }
                    Err(e) => {
                        // Given up (a panic while writing, or shutdown): hand the messages back
                        // at once; whichever worker gets them looks up what landed.
                        tracing::error!(table = batch.table.name(), error = %format!("{e:#}"), "batch given up; its messages go back to the stream");
                        for seq in batch.seqs {
                            if let Some(p) = pending.remove(&seq) {
                                let _ = tokio::time::timeout(Duration::from_secs(1), p.acker.ack_with(AckKind::Nak(None))).await;
                            }
                        }
                    }
                }
                if draining && inflight.is_empty() && rows.total() == 0 {
                    break;
                }
            }
            _ = tokio::time::sleep_until(batch_deadline), if batch.is_some() => {
                batch = None;
            }
            msg = async { batch.as_mut()?.next().await }, if batch.is_some() => {
                let Some(msg) = msg else {
                    batch = None;
                    continue;
                };
                let msg = match msg {
                    Ok(m) => {
                        pull_failures = 0;
                        m
                    }
                    Err(e) => {
                        // A pull refused or cut short (consumer gone, max_ack_pending, JetStream
                        // unavailable): back off rather than asking again at once.
                        batch = None;
                        pull_failures += 1;
                        pull_after = tokio::time::Instant::now() + pull_backoff(pull_failures);
                        if pull_failures == 1 || pull_failures.is_multiple_of(60) {
                            tracing::warn!(error = %e, failures = pull_failures, "pull refused");
                        }
                        continue;
                    }
                };
                let (seq, delivered) = match msg.info() {
                    Ok(i) => (i.stream_sequence, i.delivered),
                    Err(e) => {
                        tracing::warn!(error = %e, "a message without JetStream metadata");
                        continue;
                    }
                };
                stats.received.fetch_add(1, Ordering::Relaxed);
                let (m, acker) = msg.split();
                if let Some(p) = pending.get_mut(&seq) {
                    // Ours already (JetStream gave up waiting for us once): its rows are on the
                    // way; answer for the newest delivery, and keep marking it in progress.
                    stats.held_again.fetch_add(1, Ordering::Relaxed);
                    p.acker = acker;
                    p.marked_at = Instant::now() - progress_every;
                    continue;
                }
                let msg_id = m
                    .headers
                    .as_ref()
                    .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
                    .map(|v| v.as_str().to_string());
                let outcome = conv.add_message(m.subject.as_str(), msg_id.as_deref(), &m.payload, &mut rows);
                sync_repairs(&conv, &stats);
                match outcome {
                    Outcome::Rows(tables) => {
                        let again = delivered > 1;
                        if again {
                            stats.redelivered.fetch_add(1, Ordering::Relaxed);
                        }
                        for t in Table::ALL {
                            if tables & (1 << t.index()) != 0 {
                                let b = &mut bufs[t.index()];
                                b.seqs.push(seq);
                                b.since.get_or_insert_with(Instant::now);
                                if again {
                                    b.suspects.insert(conv.last_msg);
                                }
                            }
                        }
                        pending.insert(seq, Pending { acker, left: tables, marked_at: Instant::now() });
                        for t in Table::ALL {
                            if rows.len(t) >= cfg.batch_rows {
                                flush(t, &mut rows, &mut bufs, &mut busy, cfg.insert_concurrency, &store, &stats, &insert_stop, &mut inflight, &mut inflight_rows);
                            }
                        }
                    }
                    Outcome::Skipped => {
                        stats.skipped.fetch_add(1, Ordering::Relaxed);
                        ack(&acker, &stats).await;
                    }
                    Outcome::Rejected(r) => {
                        let c = match r {
                            Reject::Subject => &stats.rejected_subject,
                            Reject::Malformed => &stats.rejected_malformed,
                            Reject::UnknownSchema => &stats.rejected_schema,
                            Reject::WrongKind => &stats.rejected_kind,
                            Reject::Identity => &stats.rejected_identity,
                            Reject::Time => &stats.rejected_time,
                        };
                        if c.fetch_add(1, Ordering::Relaxed) == 0 {
                            tracing::warn!(subject = %m.subject, reason = ?r, "message rejected (counted; further ones are not logged)");
                        }
                        ack(&acker, &stats).await;
                    }
                }
            }
            _ = tick.tick() => {
                let now = Instant::now();
                for t in Table::ALL {
                    let due = bufs[t.index()].since.is_some_and(|s| now - s >= cfg.flush_interval);
                    if due || (draining && rows.len(t) > 0) || rows.len(t) >= cfg.batch_rows {
                        flush(t, &mut rows, &mut bufs, &mut busy, cfg.insert_concurrency, &store, &stats, &insert_stop, &mut inflight, &mut inflight_rows);
                    }
                }
                // Held messages stay ours: tell JetStream they are in progress.
                // Time-limited: while NATS reconnects, publishes wait; the rest go next tick.
                let _ = tokio::time::timeout(Duration::from_millis(200), async {
                    for p in pending.values_mut() {
                        if now - p.marked_at >= progress_every {
                            if let Err(e) = p.acker.ack_with(AckKind::Progress).await {
                                tracing::debug!(error = %e, "in-progress mark failed");
                            }
                            p.marked_at = now;
                        }
                    }
                })
                .await;
                if draining && inflight.is_empty() && rows.total() == 0 {
                    break;
                }
            }
            _ = report.tick() => stats.log("ingest"),
        }
    }
    stats.log("ingest stopped");
    Ok(())
}

async fn ack(acker: &jetstream::message::Acker, stats: &Stats) {
    // A lost ack (or one not sent while NATS reconnects) means one more delivery, which the
    // look-up makes harmless.
    match tokio::time::timeout(Duration::from_secs(1), acker.ack()).await {
        Ok(Ok(())) => {
            stats.acked.fetch_add(1, Ordering::Relaxed);
        }
        Ok(Err(e)) => tracing::debug!(error = %e, "ack failed"),
        Err(_) => tracing::debug!("ack timed out"),
    }
}

/// Batches of one table in flight at once.
const MAX_PER_TABLE: u8 = 2;

/// Wait before pulling again after `n` refused pulls: 100 ms doubling to 5 s.
fn pull_backoff(n: u32) -> Duration {
    Duration::from_millis(100u64.saturating_mul(1 << n.min(6))).min(Duration::from_secs(5))
}

fn sync_repairs(conv: &Converter, stats: &Stats) {
    let r = conv.repairs;
    stats.non_finite.store(r.non_finite, Ordering::Relaxed);
    stats.cut_strings.store(r.cut_strings, Ordering::Relaxed);
    stats.negative.store(r.negative, Ordering::Relaxed);
}

/// Moves a table's buffered rows into an insert task.
#[allow(clippy::too_many_arguments)]
fn flush(
    table: Table,
    rows: &mut Rows,
    bufs: &mut [Buf],
    busy: &mut [u8],
    concurrency: usize,
    store: &Store,
    stats: &Arc<Stats>,
    stop: &CancellationToken,
    inflight: &mut FuturesUnordered<tokio::task::JoinHandle<InsertResult>>,
    inflight_rows: &mut usize,
) {
    // At most two batches per table in flight (two overlap the engine's parsing of one with the
    // sending of the next), and at most `concurrency` in all: during an outage the rows wait in
    // the buffer (bounded by max_pending_rows), not in a pile of retrying tasks.
    let n = rows.len(table);
    if n == 0 || busy[table.index()] >= MAX_PER_TABLE || inflight.len() >= concurrency {
        return;
    }
    busy[table.index()] += 1;
    let buf = std::mem::take(&mut bufs[table.index()]);
    let batch = Batch {
        table,
        seqs: buf.seqs,
        rows: n,
    };
    *inflight_rows += n;
    let token = batch_token(table, &batch.seqs);
    let (store, stats, stop) = (store.clone(), stats.clone(), stop.clone());
    let suspects = buf.suspects;
    macro_rules! spawn {
        ($field:ident) => {{
            let taken = std::mem::take(&mut rows.$field);
            tokio::spawn(async move {
                use futures::FutureExt;
                let write = write_batch(&store, taken, suspects, &token, &stats, &stop);
                let r = match std::panic::AssertUnwindSafe(write).catch_unwind().await {
                    Ok(r) => r,
                    Err(_) => Err(anyhow::anyhow!("the insert task panicked")),
                };
                (batch, r)
            })
        }};
    }
    let handle = match table {
        Table::NodeMetrics => spawn!(node_metrics),
        Table::DiskMetrics => spawn!(disk_metrics),
        Table::FsMetrics => spawn!(fs_metrics),
        Table::NetMetrics => spawn!(net_metrics),
        Table::ProcessMetrics => spawn!(process_metrics),
        Table::Processes => spawn!(processes),
        Table::SensorReadings => spawn!(sensor_readings),
        Table::Rollups => spawn!(rollups),
        Table::RollupMetrics => spawn!(rollup_metrics),
        Table::Alarms => spawn!(alarms),
        Table::NodeEvents => spawn!(node_events),
        Table::Inventory => spawn!(inventory),
        Table::ProcessEvents => spawn!(process_events),
        Table::CommandAudit => spawn!(command_audit),
    };
    inflight.push(handle);
}

/// A batch's deduplication token: its table and the stream sequences of its messages.
fn batch_token(table: Table, seqs: &[u64]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for s in seqs {
        for b in s.to_le_bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!(
        "gridmon:{}:{}:{}:{h:016x}",
        table.name(),
        seqs.first().copied().unwrap_or(0),
        seqs.len()
    )
}

/// Writes one batch, retrying until it lands or the ingest gives up at shutdown. Returns the
/// rows written and the rows found written already.
async fn write_batch<R: TableRow>(
    store: &Store,
    mut rows: Vec<R>,
    mut suspects: HashSet<u64>,
    token: &str,
    stats: &Stats,
    stop: &CancellationToken,
) -> anyhow::Result<(u64, u64)> {
    let mut present_rows = 0u64;
    let mut failures = 0u32;
    loop {
        let attempt = async {
            if !suspects.is_empty() {
                let (lo, hi) = rows
                    .iter()
                    .filter(|r| suspects.contains(&r.msg()))
                    .fold((i64::MAX, i64::MIN), |(lo, hi), r| {
                        (lo.min(r.ts()), hi.max(r.ts()))
                    });
                let list: Vec<u64> = suspects.iter().copied().collect();
                let present = store.present(R::TABLE, &list, lo, hi).await?;
                if !present.is_empty() {
                    let before = rows.len();
                    rows.retain(|r| !present.contains(&r.msg()));
                    present_rows += (before - rows.len()) as u64;
                }
                suspects.clear();
            }
            if rows.is_empty() {
                return Ok(());
            }
            store.insert(&rows, token).await
        };
        match attempt.await {
            Ok(()) => {
                if stats.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(
                        failures_so_far = stats.insert_failures.load(Ordering::Relaxed),
                        "inserts succeed again"
                    );
                }
                return Ok((rows.len() as u64, present_rows));
            }
            Err(e) => {
                failures += 1;
                let total = stats.insert_failures.fetch_add(1, Ordering::Relaxed) + 1;
                // One line when inserts start failing, then one per 100 failures, whatever the
                // number of batches waiting.
                if !stats.failing.swap(true, Ordering::Relaxed) || total.is_multiple_of(100) {
                    tracing::warn!(table = R::TABLE.name(), rows = rows.len(), failures_total = total, error = %format!("{e:#}"), "insert failed; retrying");
                }
                // It may have landed: look before the next attempt, as for a redelivery.
                suspects.extend(rows.iter().map(TableRow::msg));
                let wait = Duration::from_millis(200 * 2u64.pow(failures.min(5)));
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.cancelled() => anyhow::bail!("stopped after {failures} failed attempts: {e:#}"),
                }
            }
        }
    }
}
