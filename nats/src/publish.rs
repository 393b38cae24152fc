//! Durable publishing: a bounded spool in front of the bus, drained in order with confirmation.
//!
//! Producers never wait: [`Spool::push`] enqueues and, past the bound, drops the oldest message
//! and counts it (the count travels in the next report). The [`Publisher`] task drains the spool
//! in order. With JetStream each message carries a `Nats-Msg-Id` and is removed from the spool only
//! once the stream acknowledged it, so a retry after a lost ack is de-duplicated by the server.
//! With core NATS a batch is confirmed by a flush round trip. On shutdown what is left is saved to
//! the spool file, if one is configured, and sent after the next start.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_nats::connection::State;
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use async_nats::{Client, HeaderMap};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::{Delivery, SpoolConfig};
use crate::connect::backoff;

/// One message ready for the bus.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outgoing {
    pub subject: String,
    /// JetStream de-duplication id (`Nats-Msg-Id`), see [`crate::wire::Envelope::msg_id`].
    pub msg_id: String,
    #[serde(with = "serde_bytes_compat")]
    pub payload: Bytes,
}

/// The bounded queue of unsent messages; a cheap handle shared by producers and the publisher.
#[derive(Debug, Clone)]
pub struct Spool {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    state: Mutex<Queue>,
    notify: Notify,
    max_messages: usize,
    max_bytes: usize,
    dropped: AtomicU64,
}

#[derive(Debug, Default)]
struct Queue {
    /// Each entry has a spool-local number so the publisher removes exactly what it sent even if
    /// the bound dropped some of the front meanwhile.
    queue: VecDeque<(u64, Outgoing)>,
    bytes: usize,
    next: u64,
}

impl Spool {
    pub fn new(max_messages: usize, max_bytes: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                state: Mutex::new(Queue::default()),
                notify: Notify::new(),
                max_messages: max_messages.max(1),
                max_bytes: max_bytes.max(1),
                dropped: AtomicU64::new(0),
            }),
        }
    }

    pub fn from_config(c: &SpoolConfig) -> Self {
        Self::new(c.max_messages, c.max_bytes)
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A panic while holding this lock cannot leave the queue half-updated, so poisoning is ignored.
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Enqueues; past the bound the oldest messages are dropped and counted.
    pub fn push(&self, msg: Outgoing) {
        let mut st = self.lock();
        st.bytes += msg.payload.len();
        let n = st.next;
        st.next += 1;
        st.queue.push_back((n, msg));
        while st.queue.len() > self.inner.max_messages
            || (st.bytes > self.inner.max_bytes && st.queue.len() > 1)
        {
            if let Some((_, old)) = st.queue.pop_front() {
                st.bytes -= old.payload.len();
                self.inner.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        drop(st);
        self.inner.notify.notify_one();
    }

    pub fn len(&self) -> usize {
        self.lock().queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Messages dropped by the bound since this spool was made.
    pub fn dropped_total(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    fn front(&self, n: usize) -> Vec<(u64, Outgoing)> {
        self.lock().queue.iter().take(n).cloned().collect()
    }

    /// Removes every entry up to and including spool number `last`.
    fn remove_through(&self, last: u64) {
        let mut st = self.lock();
        while st.queue.front().is_some_and(|(n, _)| *n <= last) {
            if let Some((_, m)) = st.queue.pop_front() {
                st.bytes -= m.payload.len();
            }
        }
    }

    /// Takes everything out, oldest first.
    pub fn drain_all(&self) -> Vec<Outgoing> {
        let mut st = self.lock();
        st.bytes = 0;
        st.queue.drain(..).map(|(_, m)| m).collect()
    }

    /// Saves the unsent messages; an empty spool removes the file.
    pub fn save(&self, path: &Path) -> std::io::Result<usize> {
        let msgs = self.drain_all();
        if msgs.is_empty() {
            match std::fs::remove_file(path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => return Ok(0),
            }
        }
        let bytes = rmp_serde::to_vec_named(&SpoolFile {
            version: 1,
            messages: msgs.clone(),
        })
        .map_err(std::io::Error::other)?;
        let tmp = path.with_extension("tmp");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, path)?;
        Ok(msgs.len())
    }

    /// Loads messages saved by [`Spool::save`] and removes the file. A corrupt file is renamed
    /// aside (`.corrupt`) and reported, never fatal.
    pub fn load(&self, path: &Path) -> Result<usize, SpoolLoadError> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(SpoolLoadError::Io(path.into(), e)),
        };
        let file: SpoolFile = match rmp_serde::from_slice(&bytes) {
            Ok(f) => f,
            Err(e) => {
                let aside = path.with_extension("corrupt");
                let _ = std::fs::rename(path, &aside);
                return Err(SpoolLoadError::Corrupt(aside, e.to_string()));
            }
        };
        let n = file.messages.len();
        for m in file.messages {
            self.push(m);
        }
        std::fs::remove_file(path).map_err(|e| SpoolLoadError::Io(path.into(), e))?;
        Ok(n)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SpoolLoadError {
    #[error("cannot read spool file {0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("spool file was corrupt and was moved to {0}: {1}")]
    Corrupt(PathBuf, String),
}

#[derive(Serialize, Deserialize)]
struct SpoolFile {
    version: u16,
    messages: Vec<Outgoing>,
}

mod serde_bytes_compat {
    use bytes::Bytes;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &Bytes, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(b)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Bytes;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<Bytes, E> {
                Ok(Bytes::copy_from_slice(v))
            }
            fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Bytes, E> {
                Ok(Bytes::from(v))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Bytes, A::Error> {
                let mut out = Vec::new();
                while let Some(b) = seq.next_element::<u8>()? {
                    out.push(b);
                }
                Ok(Bytes::from(out))
            }
        }
        d.deserialize_bytes(V)
    }
}

/// Counters of the publisher, cumulative since start.
#[derive(Debug, Default)]
pub struct PublishStats {
    pub sent: AtomicU64,
    pub retries: AtomicU64,
}

/// Drains a [`Spool`] onto the bus.
#[derive(Debug)]
pub struct Publisher {
    client: Client,
    spool: Spool,
    delivery: Delivery,
    ack_timeout: Duration,
    max_backoff: Duration,
    /// Largest number of messages in flight at once.
    batch: usize,
    stats: Arc<PublishStats>,
}

/// How long shutdown waits for the bus before saving what is left.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(3);
/// In `auto` mode, how long to keep to core NATS after finding no stream, before asking again.
const JETSTREAM_RECHECK: Duration = Duration::from_secs(30);

/// In `auto` mode: whether a JetStream stream captures what we publish, asked of the server
/// rather than probed with a publish (a probe would reach core subscribers twice, and with a
/// subscriber present and no stream the server sends no "no responders" status, only silence).
///
/// Only the first question is waited for; later ones run beside the publishing, which keeps
/// the last answer meanwhile, so a slow JetStream API never delays a message.
struct Route {
    auto_js: bool,
    answered: bool,
    recheck_at: Instant,
    asking: Option<tokio::task::JoinHandle<Option<Result<String, String>>>>,
}

/// The stream that captures `subject` and acknowledges what it stores. A `no_ack` stream
/// (such as the ingest's, which also holds command requests) stores without answering:
/// publishing to it is core NATS.
async fn acknowledging_stream(
    js: &async_nats::jetstream::Context,
    subject: String,
) -> Result<String, String> {
    let name = js
        .stream_by_subject(subject)
        .await
        .map_err(|e| e.to_string())?;
    let mut stream = js.get_stream(&name).await.map_err(|e| e.to_string())?;
    let info = stream.info().await.map_err(|e| e.to_string())?;
    if info.config.no_ack {
        return Err(format!(
            "stream {name} is no_ack: it stores without acknowledging"
        ));
    }
    Ok(name)
}

impl Route {
    async fn use_jetstream(
        &mut self,
        js: &async_nats::jetstream::Context,
        subject: &str,
        timeout: Duration,
    ) -> bool {
        if self.asking.is_none() && Instant::now() >= self.recheck_at {
            self.recheck_at = Instant::now() + JETSTREAM_RECHECK;
            let (js, subject) = (js.clone(), subject.to_string());
            self.asking = Some(tokio::spawn(async move {
                tokio::time::timeout(timeout, acknowledging_stream(&js, subject))
                    .await
                    .ok()
            }));
        }
        let done = self.asking.as_ref().is_some_and(|h| h.is_finished());
        if let Some(handle) = self.asking.take_if(|_| done || !self.answered) {
            match handle.await.ok().flatten() {
                Some(Ok(stream)) => {
                    if !self.auto_js {
                        tracing::info!(%stream, "a JetStream stream captures the subjects: publishing with acknowledgement");
                    }
                    self.auto_js = true;
                    self.answered = true;
                }
                Some(Err(e)) => {
                    if self.auto_js {
                        tracing::info!(error = %e, "no JetStream stream captures the subjects any more: publishing with core NATS");
                    }
                    self.auto_js = false;
                    self.answered = true;
                }
                // Unanswered: keep the last answer and ask again soon.
                None => self.recheck_at = Instant::now() + Duration::from_secs(1),
            }
        }
        self.auto_js
    }

    fn stream_gone(&mut self) {
        tracing::info!("the JetStream stream went away: publishing with core NATS");
        self.auto_js = false;
        self.recheck_at = Instant::now() + JETSTREAM_RECHECK;
    }
}

enum Sent {
    /// Everything up to and including this spool number is confirmed.
    Through(u64),
    /// Nothing confirmed; try again after a backoff.
    Failed(String),
    NoStream,
}

impl Publisher {
    pub fn new(
        client: Client,
        spool: Spool,
        delivery: Delivery,
        ack_timeout: Duration,
        max_backoff: Duration,
    ) -> Self {
        Self {
            client,
            spool,
            delivery,
            ack_timeout,
            max_backoff,
            batch: 64,
            stats: Arc::default(),
        }
    }

    pub fn stats(&self) -> Arc<PublishStats> {
        self.stats.clone()
    }

    /// Runs until `shutdown`; then drains for a moment and saves the rest to `save_to`.
    pub async fn run(self, shutdown: CancellationToken, save_to: Option<PathBuf>) {
        let js = async_nats::jetstream::ContextBuilder::new()
            .timeout(self.ack_timeout)
            .build(self.client.clone());
        let mut route = Route {
            auto_js: false,
            answered: false,
            recheck_at: Instant::now(),
            asking: None,
        };
        let mut failures = 0usize;
        let mut deadline: Option<Instant> = None;
        loop {
            if deadline.is_some_and(|d| Instant::now() >= d)
                || (deadline.is_some() && self.spool.is_empty())
            {
                break;
            }
            if deadline.is_none() && self.spool.is_empty() {
                tokio::select! {
                    _ = self.spool.inner.notify.notified() => {}
                    _ = shutdown.cancelled() => { deadline = Some(Instant::now() + SHUTDOWN_DRAIN); }
                }
                continue;
            }
            if self.client.connection_state() != State::Connected {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    _ = shutdown.cancelled(), if deadline.is_none() => { deadline = Some(Instant::now() + SHUTDOWN_DRAIN); }
                }
                continue;
            }
            let batch = self.spool.front(self.batch);
            let Some(&(last, _)) = batch.last() else {
                continue;
            };
            let want_js = match self.delivery {
                Delivery::Core => false,
                Delivery::Jetstream => true,
                Delivery::Auto => {
                    route
                        .use_jetstream(&js, &batch[0].1.subject, self.ack_timeout)
                        .await
                }
            };
            let result = if want_js {
                self.send_js(&js, &batch).await
            } else {
                self.send_core(&batch, last).await
            };
            match result {
                Sent::Through(n) => {
                    failures = 0;
                    let before = self.spool.len();
                    self.spool.remove_through(n);
                    self.stats.sent.fetch_add(
                        before.saturating_sub(self.spool.len()) as u64,
                        Ordering::Relaxed,
                    );
                }
                Sent::NoStream if self.delivery == Delivery::Auto => route.stream_gone(),
                Sent::NoStream | Sent::Failed(_) => {
                    if let Sent::Failed(why) = &result {
                        tracing::debug!(%why, "publish failed; will retry");
                    } else {
                        tracing::warn!("delivery = \"jetstream\" but no stream captures the subjects; retrying");
                    }
                    self.stats.retries.fetch_add(1, Ordering::Relaxed);
                    failures += 1;
                    tokio::select! {
                        _ = tokio::time::sleep(backoff(failures, self.max_backoff)) => {}
                        _ = shutdown.cancelled(), if deadline.is_none() => { deadline = Some(Instant::now() + SHUTDOWN_DRAIN); }
                    }
                }
            }
        }
        let left = self.spool.len();
        match (&save_to, left) {
            (_, 0) => {}
            (Some(path), _) => match self.spool.save(path) {
                Ok(n) => {
                    tracing::info!(messages = n, path = %path.display(), "saved unsent messages for the next start")
                }
                Err(e) => {
                    tracing::error!(messages = left, path = %path.display(), error = %e, "could not save unsent messages")
                }
            },
            (None, n) => tracing::warn!(
                messages = n,
                "exiting with unsent messages and no spool.path configured"
            ),
        }
    }

    async fn send_js(
        &self,
        js: &async_nats::jetstream::Context,
        batch: &[(u64, Outgoing)],
    ) -> Sent {
        let mut acks = Vec::with_capacity(batch.len());
        for (n, m) in batch {
            let publish = PublishMessage::build()
                .payload(m.payload.clone())
                .message_id(&m.msg_id);
            match js.send_publish(m.subject.clone(), publish).await {
                Ok(ack) => acks.push((*n, ack)),
                Err(e) => {
                    if acks.is_empty() {
                        return Sent::Failed(e.to_string());
                    }
                    break;
                }
            }
        }
        let mut confirmed = None;
        for (n, ack) in acks {
            match ack.await {
                Ok(_) => confirmed = Some(n),
                Err(e) if e.kind() == PublishErrorKind::StreamNotFound && confirmed.is_none() => {
                    return Sent::NoStream
                }
                Err(e) => {
                    if confirmed.is_none() {
                        return Sent::Failed(e.to_string());
                    }
                    break;
                }
            }
        }
        confirmed.map_or_else(|| Sent::Failed("no acknowledgement".into()), Sent::Through)
    }

    async fn send_core(&self, batch: &[(u64, Outgoing)], last: u64) -> Sent {
        for (_, m) in batch {
            let mut headers = HeaderMap::new();
            headers.insert(async_nats::header::NATS_MESSAGE_ID, m.msg_id.as_str());
            if let Err(e) = self
                .client
                .publish_with_headers(m.subject.clone(), headers, m.payload.clone())
                .await
            {
                return Sent::Failed(e.to_string());
            }
        }
        // The flush's PONG proves the server read everything before it.
        match tokio::time::timeout(self.ack_timeout, self.client.flush()).await {
            Ok(Ok(())) => Sent::Through(last),
            Ok(Err(e)) => Sent::Failed(e.to_string()),
            Err(_) => Sent::Failed("flush timed out".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(i: u32, size: usize) -> Outgoing {
        Outgoing {
            subject: "s".into(),
            msg_id: i.to_string(),
            payload: Bytes::from(vec![0u8; size]),
        }
    }

    #[test]
    fn bound_drops_oldest_and_counts() {
        let s = Spool::new(3, 1 << 20);
        for i in 0..5 {
            s.push(msg(i, 10));
        }
        assert_eq!(s.len(), 3);
        assert_eq!(s.dropped_total(), 2);
        let ids: Vec<_> = s.drain_all().into_iter().map(|m| m.msg_id).collect();
        assert_eq!(ids, ["2", "3", "4"]);
    }

    #[test]
    fn byte_bound_keeps_at_least_the_newest() {
        let s = Spool::new(100, 25);
        s.push(msg(0, 10));
        s.push(msg(1, 10));
        s.push(msg(2, 10));
        assert_eq!(s.len(), 2);
        s.push(msg(3, 100));
        assert_eq!(s.len(), 1, "an oversized message is kept alone");
        assert_eq!(s.dropped_total(), 3);
    }

    #[test]
    fn remove_through_is_exact_when_front_was_dropped_meanwhile() {
        let s = Spool::new(3, 1 << 20);
        for i in 0..3 {
            s.push(msg(i, 1));
        }
        let sending = s.front(2); // spool numbers 0 and 1
        s.push(msg(3, 1)); // drops 0
        s.remove_through(sending[1].0);
        let ids: Vec<_> = s.drain_all().into_iter().map(|m| m.msg_id).collect();
        assert_eq!(ids, ["2", "3"]);
    }

    #[test]
    fn save_and_load_round_trip() {
        let dir = std::env::temp_dir().join(format!("gridmon-spool-{}", std::process::id()));
        let path = dir.join("spool.msgpack");
        let s = Spool::new(10, 1 << 20);
        s.push(msg(1, 3));
        s.push(msg(2, 4));
        assert_eq!(s.save(&path).unwrap(), 2);
        assert!(s.is_empty());
        let t = Spool::new(10, 1 << 20);
        assert_eq!(t.load(&path).unwrap(), 2);
        assert!(!path.exists());
        let back = t.drain_all();
        assert_eq!(back, vec![msg(1, 3), msg(2, 4)]);
        std::fs::write(&path, b"\xc1garbage").unwrap();
        assert!(matches!(t.load(&path), Err(SpoolLoadError::Corrupt(..))));
        assert!(!path.exists());
        let _ = std::fs::remove_dir_all(dir);
    }
}
