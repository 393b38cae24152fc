//! Leader election for scopes served by several aggregator instances: one lease per scope in a
//! JetStream KV bucket, renewed by compare-and-set and taken over when it stops changing.
//!
//! # How it works
//!
//! Each scope has a key (built with [`key_for`]) whose value is a [`Lease`]. Every round
//! (`ttl / 8`) the task does, per key:
//!
//! - **follower**: reads the key. Absent, deleted, purged or released (a graceful resign) → it
//!   claims the key with a compare-and-set on the revision it read. Held by someone → it notes the
//!   revision and when *it* first saw it (monotonic clock); once that revision has not changed for
//!   longer than `ttl` it claims the key with a compare-and-set on that revision. Only our own
//!   clock is used, so clock skew between hosts does not matter; server-side expiry (bucket
//!   `max_age` = 10 × ttl) is garbage collection only.
//! - **leader**: rewrites the lease with a compare-and-set on its last revision. A wrong revision
//!   means someone else took the key: it steps down at once.
//!
//! The revision is the fencing token: of two instances racing for a key, one compare-and-set
//! fails. [`Leadership::is_leader`] is true only until `ttl` after the *send* time of the last
//! successful write, so a leader cut off from the bus stops claiming leadership before a follower
//! can possibly take over (a follower first sees the revision after it was written, and waits
//! `ttl` more). A crashed leader is therefore replaced `ttl` to `ttl + 2 rounds` after its last
//! renewal, which came at most a round before the crash: with the default `ttl` of two
//! aggregation intervals, within 2.5 intervals (about `ttl` + a quarter interval on average).
//!
//! A graceful resign does not delete the key: it writes a final lease marked `released`
//! (compare-and-set), which followers treat as vacant and claim at their next round, and which
//! still carries the last published window for the successor's [`Handover`].
//!
//! The pure decision logic is [`decide`]; everything else here is I/O around it.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream;
use async_nats::jetstream::context::RequestErrorKind;
use async_nats::jetstream::kv::{self, Operation, UpdateErrorKind};
use async_nats::jetstream::response::Response;
use async_nats::jetstream::stream::{self, DiscardPolicy, StorageType};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// The shortest TTL accepted: rounds are `ttl / 8` and every request must fit in `ttl / 4`.
pub const MIN_TTL: Duration = Duration::from_millis(200);

/// Holder name written for a lease whose value cannot be decoded.
pub const UNKNOWN_HOLDER: &str = "unknown";

/// Where the leases live and who we are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderConfig {
    /// KV bucket name (`[-_a-zA-Z0-9]+`), created if missing.
    pub bucket: String,
    /// How long a lease may go unrenewed before another instance takes it over.
    pub ttl: Duration,
    /// This instance's name as written in leases; unique per process (e.g. `host:pid`).
    pub instance: String,
}

impl LeaderConfig {
    /// Checks the config without touching the bus.
    pub fn validate(&self) -> Result<(), LeaderError> {
        let valid_bucket = !self.bucket.is_empty()
            && self
                .bucket
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid_bucket {
            return Err(LeaderError::Config(format!(
                "bucket {:?} must be non-empty and use only letters, digits, '-' and '_'",
                self.bucket
            )));
        }
        if self.ttl < MIN_TTL {
            return Err(LeaderError::Config(format!(
                "ttl {:?} is below the minimum {MIN_TTL:?}",
                self.ttl
            )));
        }
        if self.instance.trim().is_empty() {
            return Err(LeaderError::Config("instance name is empty".into()));
        }
        Ok(())
    }

    /// How often each key is read or renewed.
    pub fn round(&self) -> Duration {
        self.ttl / 8
    }

    /// Bound on one KV request, so a hung request cannot stall the rounds.
    fn op_timeout(&self) -> Duration {
        (self.ttl / 4).min(Duration::from_secs(5))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("invalid leader election config: {0}")]
    Config(String),
    #[error(
        "JetStream is not available ({0}): enable `jetstream` in the nats-server config and \
         check that this account may use it, or disable leader election"
    )]
    JetStreamUnavailable(String),
    #[error("JetStream did not answer within {0:?}: is the NATS server reachable?")]
    TimedOut(Duration),
    #[error("cannot open or create the leader bucket {bucket:?}: {source}")]
    Bucket {
        bucket: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// The value of a lease key, a MessagePack map with field names.
///
/// Unknown fields are ignored, so later versions can add fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The instance holding (or, if `released`, last holding) the key.
    pub holder: String,
    /// Wall-clock time of the write, ms since the epoch. Informational only: takeover uses the
    /// follower's monotonic clock.
    pub renewed_ms: i64,
    /// Start of the last window the holder published, so a successor knows where to resume.
    pub last_window_ms: Option<i64>,
    /// Written by a graceful resign: the key is free, and `last_window_ms` is final.
    #[serde(default)]
    pub released: bool,
}

impl Lease {
    pub fn encode(&self) -> Result<Vec<u8>, rmp_serde::encode::Error> {
        rmp_serde::to_vec_named(self)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, rmp_serde::decode::Error> {
        rmp_serde::from_slice(bytes)
    }
}

/// What a new leader learns about its predecessor, from the lease it replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handover {
    pub previous_holder: String,
    /// The start of the last window the predecessor published, if it recorded one.
    pub last_window_ms: Option<i64>,
}

/// The KV key for a scope: `parts` joined with `.`.
///
/// Bytes outside `[-/=a-zA-Z0-9]` are escaped as `_XX` (upper-case hex; `_` itself is `_5F`, a
/// `.` inside a part `_2E`), an empty part is `_`, and no parts at all is `__`. Distinct inputs
/// give distinct keys, and every key is valid for a KV bucket.
pub fn key_for(parts: &[&str]) -> String {
    if parts.is_empty() {
        return "__".into();
    }
    let mut key = String::new();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            key.push('.');
        }
        if part.is_empty() {
            key.push('_');
            continue;
        }
        for b in part.bytes() {
            if b.is_ascii_alphanumeric() || b == b'-' || b == b'/' || b == b'=' {
                key.push(char::from(b));
            } else {
                const HEX: &[u8; 16] = b"0123456789ABCDEF";
                key.push('_');
                key.push(char::from(HEX[usize::from(b >> 4)]));
                key.push(char::from(HEX[usize::from(b & 0xf)]));
            }
        }
    }
    key
}

/// Whether `key` is accepted by a KV bucket (`[-/_=.a-zA-Z0-9]+`, no empty `.`-separated token).
pub fn is_valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.split('.').all(|token| !token.is_empty())
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-/_=.".contains(&b))
}

// ---------------------------------------------------------------------------------------------
// The decision logic: pure, driven by fabricated instants in tests.

/// Where one instance stands on one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Follower {
        /// The revision last read and when we first saw it.
        seen: Option<Seen>,
    },
    Leader {
        /// The revision of our last successful write.
        revision: u64,
        /// When that write was sent (before the server stored it).
        renewed: Instant,
    },
}

impl Role {
    pub const FOLLOWER: Self = Self::Follower { seen: None };
}

/// A revision a follower watches, and when it first saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    pub revision: u64,
    pub since: Instant,
}

/// What one read or write of the key showed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observation {
    /// Read: no live lease (absent, deleted, purged or released); claim with this revision
    /// (0 = the key never existed or was removed).
    Vacant { revision: u64 },
    /// Read: a live lease at this revision.
    Held { revision: u64 },
    /// Our compare-and-set write, sent at `sent`, was stored at `revision`.
    Wrote { revision: u64, sent: Instant },
    /// Our compare-and-set write found another revision: someone else wrote.
    Conflict,
    /// The bus did not answer, or answered with an error.
    Failed,
}

/// What the I/O layer does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Nothing this round.
    Wait,
    /// Write our lease with a compare-and-set on `revision`.
    Claim { revision: u64 },
    /// We just became leader.
    Elected,
    /// We stay leader; the lease is good for `ttl` from the write's send time.
    Renewed,
    /// A renewal failed; still leader until `ttl` after the last good one, try again next round.
    Retry,
    /// We are no longer leader.
    StepDown(StepDown),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepDown {
    /// Someone else wrote the key.
    Lost,
    /// No successful renewal for longer than `ttl`.
    Expired,
}

/// One step of the election for one key: the new role and what to do.
pub fn decide(role: Role, obs: Observation, now: Instant, ttl: Duration) -> (Role, Action) {
    use Observation as O;
    let follower = Role::FOLLOWER;
    match (role, obs) {
        (Role::Follower { .. }, O::Vacant { revision }) => (follower, Action::Claim { revision }),
        (Role::Follower { seen: Some(seen) }, O::Held { revision })
            if seen.revision == revision =>
        {
            if now.saturating_duration_since(seen.since) > ttl {
                (role, Action::Claim { revision })
            } else {
                (role, Action::Wait)
            }
        }
        (Role::Follower { .. }, O::Held { revision }) => (
            Role::Follower {
                seen: Some(Seen {
                    revision,
                    since: now,
                }),
            },
            Action::Wait,
        ),
        (Role::Follower { .. }, O::Wrote { revision, sent }) => (
            Role::Leader {
                revision,
                renewed: sent,
            },
            Action::Elected,
        ),
        (Role::Follower { .. }, O::Conflict) => (follower, Action::Wait),
        // Keep watching the same revision: if we cannot read, neither could we see a renewal,
        // but the revision check when we can read again decides.
        (Role::Follower { .. }, O::Failed) => (role, Action::Wait),
        (Role::Leader { .. }, O::Wrote { revision, sent }) => (
            Role::Leader {
                revision,
                renewed: sent,
            },
            Action::Renewed,
        ),
        (Role::Leader { .. }, O::Conflict) => (follower, Action::StepDown(StepDown::Lost)),
        (Role::Leader { renewed, .. }, O::Failed) => {
            if now.saturating_duration_since(renewed) > ttl {
                (follower, Action::StepDown(StepDown::Expired))
            } else {
                (role, Action::Retry)
            }
        }
        (Role::Leader { revision: ours, .. }, O::Held { revision }) if ours == revision => {
            (role, Action::Wait)
        }
        (Role::Leader { .. }, O::Held { revision }) => (
            Role::Follower {
                seen: Some(Seen {
                    revision,
                    since: now,
                }),
            },
            Action::StepDown(StepDown::Lost),
        ),
        (Role::Leader { .. }, O::Vacant { .. }) => (follower, Action::StepDown(StepDown::Lost)),
    }
}

// ---------------------------------------------------------------------------------------------
// The handle and the task.

/// What the handle and the task share per key; never locked across an await.
#[derive(Debug, Default)]
struct KeyShared {
    /// Leader until this instant (send time of the last good write + ttl).
    valid_until: Option<Instant>,
    last_window_ms: Option<i64>,
    handover: Option<Handover>,
}

type SharedMap = Arc<Mutex<HashMap<String, KeyShared>>>;

fn lock(map: &Mutex<HashMap<String, KeyShared>>) -> MutexGuard<'_, HashMap<String, KeyShared>> {
    // The map stays consistent even if a holder panicked: every update is a single assignment.
    map.lock().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Debug)]
enum Command {
    Campaign(String),
}

#[derive(Debug, Clone)]
struct Handle {
    tx: mpsc::UnboundedSender<Command>,
    shared: SharedMap,
}

/// A cloneable handle on the election task; see the module docs.
#[derive(Clone)]
pub struct Leadership {
    /// `None`: election disabled, always leader.
    inner: Option<Handle>,
}

impl fmt::Debug for Leadership {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner {
            None => f.write_str("Leadership::always"),
            Some(h) => {
                let map = lock(&h.shared);
                let now = Instant::now();
                let held: Vec<&str> = map
                    .iter()
                    .filter(|(_, s)| s.valid_until.is_some_and(|t| now < t))
                    .map(|(k, _)| k.as_str())
                    .collect();
                f.debug_struct("Leadership")
                    .field("keys", &map.len())
                    .field("leader_of", &held)
                    .finish()
            }
        }
    }
}

impl Leadership {
    /// Opens or creates the bucket and starts the task. Fails with a clear error if JetStream is
    /// unavailable. The task resigns every key it holds and ends when `shutdown` is cancelled (or
    /// every handle is dropped).
    pub async fn start(
        js: jetstream::Context,
        cfg: LeaderConfig,
        shutdown: CancellationToken,
    ) -> Result<(Self, JoinHandle<()>), LeaderError> {
        cfg.validate()?;
        let store = open_bucket(&js, &cfg).await?;
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = SharedMap::default();
        let span = tracing::info_span!("leader", bucket = %cfg.bucket, instance = %cfg.instance);
        let task = Task {
            ctx: Ctx {
                store,
                cfg,
                shared: shared.clone(),
            },
            keys: Vec::new(),
            rx,
        };
        let join = tokio::spawn(task.run(shutdown).instrument(span));
        Ok((
            Self {
                inner: Some(Handle { tx, shared }),
            },
            join,
        ))
    }

    /// A standalone mode for when election is disabled: `is_leader` is always true, no bus use.
    pub fn always() -> Self {
        Self { inner: None }
    }

    /// Starts campaigning for `key` (idempotent). Until the first round completes, `is_leader`
    /// is false. An invalid key (see [`is_valid_key`]; use [`key_for`]) is logged and ignored.
    pub fn campaign(&self, key: &str) {
        let Some(h) = &self.inner else { return };
        if !is_valid_key(key) {
            tracing::error!(
                key,
                "not a valid leader key; build keys with leader::key_for"
            );
            return;
        }
        lock(&h.shared).entry(key.to_string()).or_default();
        if h.tx.send(Command::Campaign(key.to_string())).is_err() {
            tracing::warn!(key, "leader election task has ended; cannot campaign");
        }
    }

    /// Whether this instance holds `key` right now.
    pub fn is_leader(&self, key: &str) -> bool {
        let Some(h) = &self.inner else { return true };
        let now = Instant::now();
        lock(&h.shared)
            .get(key)
            .and_then(|s| s.valid_until)
            .is_some_and(|until| now < until)
    }

    /// Records the last window published for `key`; carried in the next renewal.
    pub fn published(&self, key: &str, window_start_ms: i64) {
        let Some(h) = &self.inner else { return };
        lock(&h.shared)
            .entry(key.to_string())
            .or_default()
            .last_window_ms = Some(window_start_ms);
    }

    /// When we became leader of `key` by replacing someone's lease: that holder and its last
    /// published window. Cleared by the call.
    pub fn take_handover(&self, key: &str) -> Option<Handover> {
        let h = self.inner.as_ref()?;
        lock(&h.shared).get_mut(key)?.handover.take()
    }
}

async fn open_bucket(
    js: &jetstream::Context,
    cfg: &LeaderConfig,
) -> Result<kv::Store, LeaderError> {
    check_jetstream(js).await?;
    if let Ok(store) = js.get_key_value(cfg.bucket.as_str()).await {
        return Ok(store);
    }
    ensure_bucket(
        js,
        &cfg.bucket,
        "gridmon leader leases",
        cfg.ttl.saturating_mul(10),
    )
    .await
    .map_err(|source| LeaderError::Bucket {
        bucket: cfg.bucket.clone(),
        source,
    })
}

/// Opens a KV bucket, creating it (one value per key, entries dropped after `max_age`) if needed.
///
/// `Context::create_key_value` cannot be used with a 2.9 server: it first asks for the account
/// info, which async-nats 0.51 cannot parse without the 2.10 fields `reserved_memory` and
/// `reserved_storage`. So the bucket's stream is created as async-nats would create it
/// (`kv_to_stream_config`: `KV_<bucket>` over `$KV.<bucket>.>`); these are the bucket's own
/// stream subjects, not gridmon subjects.
pub async fn ensure_bucket(
    js: &jetstream::Context,
    bucket: &str,
    description: &str,
    max_age: Duration,
) -> Result<kv::Store, Box<dyn std::error::Error + Send + Sync>> {
    if let Ok(store) = js.get_key_value(bucket).await {
        return Ok(store);
    }
    let created = js
        .create_stream(stream::Config {
            name: format!("KV_{bucket}"),
            description: Some(description.into()),
            subjects: vec![format!("$KV.{bucket}.>")],
            max_messages_per_subject: 1,
            max_age,
            storage: StorageType::File,
            num_replicas: 1,
            discard: DiscardPolicy::New,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            ..Default::default()
        })
        .await;
    match created {
        Ok(_) => Ok(js.get_key_value(bucket).await?),
        // A peer created it at the same time with another config: use theirs.
        Err(e) => js.get_key_value(bucket).await.map_err(|_| e.into()),
    }
}

/// Asks for the account info (parsed loosely, see [`open_bucket`]) to tell "no JetStream" apart
/// from other failures.
async fn check_jetstream(js: &jetstream::Context) -> Result<(), LeaderError> {
    let wait = Duration::from_secs(5);
    // An empty JSON object: the server refuses any other body for this request.
    let body = serde_json::Map::new();
    let info = tokio::time::timeout(
        wait,
        js.request::<_, _, Response<serde::de::IgnoredAny>>("INFO", &body),
    )
    .await;
    match info {
        Err(_) => Err(LeaderError::TimedOut(wait)),
        Ok(Ok(Response::Ok(_))) => Ok(()),
        Ok(Ok(Response::Err { error })) => {
            Err(LeaderError::JetStreamUnavailable(error.to_string()))
        }
        Ok(Err(e)) => match e.kind() {
            RequestErrorKind::TimedOut => Err(LeaderError::TimedOut(wait)),
            RequestErrorKind::NoResponders => Err(LeaderError::JetStreamUnavailable(
                "no JetStream API responds".into(),
            )),
            RequestErrorKind::InvalidSubject | RequestErrorKind::Other => {
                Err(LeaderError::JetStreamUnavailable(e.to_string()))
            }
        },
    }
}

/// What every key's I/O needs.
struct Ctx {
    store: kv::Store,
    cfg: LeaderConfig,
    shared: SharedMap,
}

impl Ctx {
    async fn bounded<T>(&self, fut: impl std::future::Future<Output = T>) -> Option<T> {
        tokio::time::timeout(self.cfg.op_timeout(), fut).await.ok()
    }

    fn lease(&self, key: &str, last_window_ms: Option<i64>, released: bool) -> Bytes {
        let lease = Lease {
            holder: self.cfg.instance.clone(),
            renewed_ms: wall_ms(),
            last_window_ms: max_window(
                lock(&self.shared).get(key).and_then(|s| s.last_window_ms),
                last_window_ms,
            ),
            released,
        };
        // Encoding a struct of strings and integers cannot fail; an empty value would read as an
        // undecodable lease held by "unknown", which the revision logic still handles.
        Bytes::from(lease.encode().unwrap_or_default())
    }
}

fn max_window(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// One key's election state, owned by the task.
struct Campaign {
    key: String,
    role: Role,
    /// The lease at the revision last read (`None`: vacant by absence, delete or purge).
    last_read: Option<Lease>,
    /// Our last write whose outcome we never heard (timed out): its value.
    unconfirmed: Option<Bytes>,
    /// A read or write has failed since the last success (logged once per episode).
    failing: bool,
}

impl Campaign {
    fn new(key: String) -> Self {
        Self {
            key,
            role: Role::FOLLOWER,
            last_read: None,
            unconfirmed: None,
            failing: false,
        }
    }

    async fn round(&mut self, ctx: &Ctx) {
        match self.role {
            Role::Leader { revision, .. } => {
                let obs = self.write(ctx, revision).await;
                if self.step(ctx, obs) == Action::StepDown(StepDown::Lost) {
                    // Learn who took it (for the log) and start watching their revision.
                    let obs = self.read(ctx).await;
                    self.step(ctx, obs);
                    let holder = self
                        .last_read
                        .as_ref()
                        .map_or("nobody", |l| l.holder.as_str());
                    tracing::info!(key = %self.key, holder, "lost {} to {holder}", self.key);
                }
            }
            Role::Follower { .. } => {
                let obs = self.read(ctx).await;
                if let Action::Claim { revision } = self.step(ctx, obs) {
                    let obs = self.write(ctx, revision).await;
                    self.step(ctx, obs);
                }
            }
        }
    }

    /// Applies `decide` and its effects on the shared state; returns the action.
    fn step(&mut self, ctx: &Ctx, obs: Observation) -> Action {
        let ttl = ctx.cfg.ttl;
        let (role, action) = decide(self.role, obs, Instant::now(), ttl);
        self.role = role;
        let key = self.key.as_str();
        match action {
            Action::Elected => {
                let Role::Leader { renewed, .. } = role else {
                    return action;
                };
                let previous = self.last_read.take();
                let mut map = lock(&ctx.shared);
                let s = map.entry(self.key.clone()).or_default();
                s.valid_until = Some(renewed + ttl);
                if let Some(prev) = &previous {
                    s.last_window_ms = max_window(s.last_window_ms, prev.last_window_ms);
                    s.handover = Some(Handover {
                        previous_holder: prev.holder.clone(),
                        last_window_ms: prev.last_window_ms,
                    });
                }
                drop(map);
                match previous {
                    Some(prev) => tracing::info!(
                        key,
                        previous = %prev.holder,
                        last_window_ms = prev.last_window_ms,
                        "leader of {key} (took over from {})",
                        prev.holder
                    ),
                    None => tracing::info!(key, "leader of {key}"),
                }
            }
            Action::Renewed => {
                if let Role::Leader { renewed, .. } = role {
                    if let Some(s) = lock(&ctx.shared).get_mut(key) {
                        s.valid_until = Some(renewed + ttl);
                    }
                }
            }
            Action::StepDown(why) => {
                if let Some(s) = lock(&ctx.shared).get_mut(key) {
                    s.valid_until = None;
                }
                if why == StepDown::Expired {
                    tracing::warn!(key, "gave up {key}: no successful renewal for {ttl:?}");
                }
            }
            Action::Wait | Action::Claim { .. } | Action::Retry => {}
        }
        action
    }

    async fn read(&mut self, ctx: &Ctx) -> Observation {
        let entry = match ctx.bounded(ctx.store.entry(self.key.as_str())).await {
            Some(Ok(entry)) => entry,
            Some(Err(e)) => return self.failed(format_args!("cannot read lease: {e}")),
            None => return self.failed(format_args!("reading the lease timed out")),
        };
        self.recovered();
        let Some(entry) = entry else {
            self.last_read = None;
            return Observation::Vacant { revision: 0 };
        };
        if entry.operation != Operation::Put {
            self.last_read = None;
            return Observation::Vacant {
                revision: entry.revision,
            };
        }
        let lease = Lease::decode(&entry.value).unwrap_or_else(|e| {
            if self.last_read.as_ref().is_none_or(|l| l.holder != UNKNOWN_HOLDER) {
                tracing::warn!(key = %self.key, revision = entry.revision, "undecodable lease ({e}); treating it as held by {UNKNOWN_HOLDER:?}");
            }
            Lease {
                holder: UNKNOWN_HOLDER.into(),
                renewed_ms: 0,
                last_window_ms: None,
                released: false,
            }
        });
        let released = lease.released;
        self.last_read = Some(lease);
        if released {
            Observation::Vacant {
                revision: entry.revision,
            }
        } else {
            Observation::Held {
                revision: entry.revision,
            }
        }
    }

    /// Writes our lease with a compare-and-set on `revision`.
    async fn write(&mut self, ctx: &Ctx, revision: u64) -> Observation {
        let carried = self.last_read.as_ref().and_then(|l| l.last_window_ms);
        let value = ctx.lease(&self.key, carried, false);
        let sent = Instant::now();
        let result = ctx
            .bounded(ctx.store.update(self.key.as_str(), value.clone(), revision))
            .await;
        match result {
            Some(Ok(revision)) => {
                self.recovered();
                self.unconfirmed = None;
                Observation::Wrote { revision, sent }
            }
            Some(Err(e)) if e.kind() == UpdateErrorKind::WrongLastRevision => {
                self.recovered();
                // A write that timed out may have been stored after all: if the key still holds
                // exactly that value, nobody wrote since and the key is ours.
                if let Some(mine) = self.unconfirmed.take() {
                    if let Some(Ok(Some(entry))) =
                        ctx.bounded(ctx.store.entry(self.key.as_str())).await
                    {
                        if entry.operation == Operation::Put && entry.value == mine {
                            let sent = Instant::now();
                            if let Some(Ok(revision)) = ctx
                                .bounded(ctx.store.update(self.key.as_str(), value, entry.revision))
                                .await
                            {
                                return Observation::Wrote { revision, sent };
                            }
                        }
                    }
                }
                Observation::Conflict
            }
            Some(Err(e)) => {
                if e.kind() == UpdateErrorKind::TimedOut {
                    self.unconfirmed = Some(value);
                }
                self.failed(format_args!("cannot write lease: {e}"))
            }
            None => {
                self.unconfirmed = Some(value);
                self.failed(format_args!("writing the lease timed out"))
            }
        }
    }

    fn failed(&mut self, what: fmt::Arguments<'_>) -> Observation {
        if !self.failing {
            self.failing = true;
            tracing::warn!(key = %self.key, "{what}; retrying every round");
        }
        Observation::Failed
    }

    fn recovered(&mut self) {
        if self.failing {
            self.failing = false;
            tracing::info!(key = %self.key, "lease reads and writes work again");
        }
    }

    /// Frees the key if we hold it, keeping our last window for the successor.
    async fn resign(&mut self, ctx: &Ctx) {
        let Role::Leader { revision, .. } = self.role else {
            return;
        };
        self.role = Role::FOLLOWER;
        if let Some(s) = lock(&ctx.shared).get_mut(&self.key) {
            s.valid_until = None;
        }
        let value = ctx.lease(&self.key, None, true);
        let key = self.key.as_str();
        match ctx.bounded(ctx.store.update(key, value, revision)).await {
            Some(Ok(_)) => tracing::info!(key, "resigned {key}"),
            Some(Err(e)) => {
                tracing::warn!(
                    key,
                    "could not resign {key} ({e}); peers take over after the ttl"
                )
            }
            None => tracing::warn!(
                key,
                "resigning {key} timed out; peers take over after the ttl"
            ),
        }
    }
}

struct Task {
    ctx: Ctx,
    keys: Vec<Campaign>,
    rx: mpsc::UnboundedReceiver<Command>,
}

impl Task {
    async fn run(mut self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.ctx.cfg.round());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                cmd = self.rx.recv() => match cmd {
                    Some(Command::Campaign(key)) => {
                        if self.keys.iter().all(|c| c.key != key) {
                            tracing::debug!(key, "campaigning");
                            let mut campaign = Campaign::new(key);
                            campaign.round(&self.ctx).await;
                            self.keys.push(campaign);
                        }
                    }
                    // Every handle is gone: nobody can act on leadership any more.
                    None => break,
                },
                _ = tick.tick() => {
                    let ctx = &self.ctx;
                    futures::future::join_all(self.keys.iter_mut().map(|c| c.round(ctx))).await;
                }
            }
        }
        let ctx = &self.ctx;
        futures::future::join_all(self.keys.iter_mut().map(|c| c.resign(ctx))).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // --- key_for ---

    /// Inverse of `key_for`, to prove distinct inputs give distinct keys.
    fn parts_of(key: &str) -> Vec<Vec<u8>> {
        if key == "__" {
            return Vec::new();
        }
        key.split('.')
            .map(|token| {
                if token == "_" {
                    return Vec::new();
                }
                let bytes = token.as_bytes();
                let mut out = Vec::new();
                let mut i = 0;
                while i < bytes.len() {
                    if bytes[i] == b'_' {
                        let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                        out.push(u8::from_str_radix(hex, 16).unwrap());
                        i += 3;
                    } else {
                        out.push(bytes[i]);
                        i += 1;
                    }
                }
                out
            })
            .collect()
    }

    fn check_key(parts: &[&str], expected: &str) {
        let key = key_for(parts);
        assert_eq!(key, expected, "{parts:?}");
        assert!(is_valid_key(&key), "{key:?}");
        let back: Vec<Vec<u8>> = parts.iter().map(|p| p.as_bytes().to_vec()).collect();
        assert_eq!(parts_of(&key), back, "{key:?}");
    }

    #[test]
    fn keys_escape_what_kv_does_not_allow() {
        check_key(&["group", "c1", "g1"], "group.c1.g1");
        check_key(&["cluster", "c1"], "cluster.c1");
        check_key(&["grid"], "grid");
        check_key(&["a-b/c=d"], "a-b/c=d");
        check_key(&["a_b"], "a_5Fb");
        check_key(&["a.b"], "a_2Eb");
        check_key(&["a b*>"], "a_20b_2A_3E");
        check_key(&["é"], "_C3_A9");
        check_key(&[".lead", "trail."], "_2Elead.trail_2E");
        check_key(&["", "x", ""], "_.x._");
        check_key(&[""], "_");
        check_key(&[], "__");
    }

    #[test]
    fn lookalike_inputs_give_distinct_keys() {
        let inputs: &[&[&str]] = &[
            &["a.b"],
            &["a", "b"],
            &["a_2Eb"],
            &["a_b"],
            &["a_5Fb"],
            &["_"],
            &[""],
            &[],
            &["", ""],
            &["__"],
        ];
        let keys: std::collections::HashSet<String> = inputs.iter().map(|p| key_for(p)).collect();
        assert_eq!(keys.len(), inputs.len(), "{keys:?}");
    }

    #[test]
    fn key_validity_matches_the_kv_rules() {
        for (key, ok) in [
            ("a.b", true),
            ("a/b=c-d_e", true),
            ("", false),
            (".a", false),
            ("a.", false),
            ("a..b", false),
            ("a b", false),
            ("a*", false),
            ("a>", false),
        ] {
            assert_eq!(is_valid_key(key), ok, "{key:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_parts_give_a_valid_reversible_key(parts in proptest::collection::vec(".{0,12}", 0..5)) {
            let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
            let key = key_for(&refs);
            proptest::prop_assert!(is_valid_key(&key), "{:?}", key);
            let back: Vec<Vec<u8>> = parts.iter().map(|p| p.as_bytes().to_vec()).collect();
            proptest::prop_assert_eq!(parts_of(&key), back);
        }

        #[test]
        fn arbitrary_bytes_never_panic_the_lease_decoder(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            let _ = Lease::decode(&bytes);
        }
    }

    #[test]
    fn lease_is_a_named_map_and_ignores_unknown_fields() {
        let lease = Lease {
            holder: "agg-1".into(),
            renewed_ms: 1_700_000_000_000,
            last_window_ms: Some(1_699_999_990_000),
            released: false,
        };
        let bytes = lease.encode().unwrap();
        assert_eq!(Lease::decode(&bytes).unwrap(), lease);
        // A writer without `released` and with a field from the future.
        #[derive(Serialize)]
        struct Other {
            holder: &'static str,
            renewed_ms: i64,
            last_window_ms: Option<i64>,
            future: u8,
        }
        let other = rmp_serde::to_vec_named(&Other {
            holder: "agg-2",
            renewed_ms: 5,
            last_window_ms: None,
            future: 1,
        })
        .unwrap();
        let decoded = Lease::decode(&other).unwrap();
        assert_eq!(decoded.holder, "agg-2");
        assert!(!decoded.released);
    }

    #[test]
    fn config_is_validated() {
        let ok = LeaderConfig {
            bucket: "gridmon_leaders".into(),
            ttl: Duration::from_secs(2),
            instance: "host:1".into(),
        };
        assert!(ok.validate().is_ok());
        assert_eq!(ok.round(), Duration::from_millis(250));
        for bad in [
            LeaderConfig {
                bucket: "a.b".into(),
                ..ok.clone()
            },
            LeaderConfig {
                bucket: String::new(),
                ..ok.clone()
            },
            LeaderConfig {
                ttl: Duration::from_millis(10),
                ..ok.clone()
            },
            LeaderConfig {
                instance: " ".into(),
                ..ok.clone()
            },
        ] {
            assert!(
                matches!(bad.validate(), Err(LeaderError::Config(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn always_leads_without_a_bus() {
        let l = Leadership::always();
        l.campaign("group.c1.g1");
        l.published("group.c1.g1", 5);
        assert!(l.is_leader("group.c1.g1"));
        assert!(l.is_leader("anything"));
        assert_eq!(l.take_handover("group.c1.g1"), None);
    }

    // --- decide ---

    const TTL: Duration = Duration::from_secs(2);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Feeds `steps` (offset from t0, observation) and checks each resulting action.
    fn check(start: Role, t0: Instant, steps: &[(u64, Observation, Action)]) -> Role {
        let mut role = start;
        for (i, (at, obs, expected)) in steps.iter().enumerate() {
            let (next, action) = decide(role, *obs, t0 + ms(*at), TTL);
            assert_eq!(action, *expected, "step {i}: {role:?} + {obs:?}");
            role = next;
        }
        role
    }

    #[test]
    fn follower_claims_an_absent_or_released_key_at_once() {
        let t0 = Instant::now();
        use Observation::*;
        let role = check(
            Role::FOLLOWER,
            t0,
            &[
                (0, Vacant { revision: 0 }, Action::Claim { revision: 0 }),
                (
                    1,
                    Wrote {
                        revision: 7,
                        sent: t0,
                    },
                    Action::Elected,
                ),
            ],
        );
        assert_eq!(
            role,
            Role::Leader {
                revision: 7,
                renewed: t0
            }
        );
        // A deleted or released lease is claimed over its revision.
        check(
            Role::FOLLOWER,
            t0,
            &[(0, Vacant { revision: 9 }, Action::Claim { revision: 9 })],
        );
    }

    #[test]
    fn follower_waits_while_the_revision_changes() {
        let t0 = Instant::now();
        use Observation::*;
        let steps: Vec<_> = (0..40)
            .map(|i| (i * 250, Held { revision: 10 + i }, Action::Wait))
            .collect();
        check(Role::FOLLOWER, t0, &steps);
    }

    #[test]
    fn follower_takes_over_after_ttl_without_change_on_its_own_clock() {
        let t0 = Instant::now();
        use Observation::*;
        let role = check(
            Role::FOLLOWER,
            t0,
            &[
                (0, Held { revision: 3 }, Action::Wait),
                (1000, Held { revision: 3 }, Action::Wait),
                // Read failures keep the clock running on the same revision.
                (1500, Failed, Action::Wait),
                (2000, Held { revision: 3 }, Action::Wait),
                (2001, Held { revision: 3 }, Action::Claim { revision: 3 }),
            ],
        );
        // The clock restarts when the revision moves.
        check(
            role,
            t0,
            &[
                (2100, Held { revision: 4 }, Action::Wait),
                (4000, Held { revision: 4 }, Action::Wait),
                (4101, Held { revision: 4 }, Action::Claim { revision: 4 }),
            ],
        );
    }

    #[test]
    fn follower_that_loses_the_race_starts_watching_again() {
        let t0 = Instant::now();
        use Observation::*;
        check(
            Role::FOLLOWER,
            t0,
            &[
                (0, Held { revision: 3 }, Action::Wait),
                (2500, Held { revision: 3 }, Action::Claim { revision: 3 }),
                (2501, Conflict, Action::Wait),
                (2600, Held { revision: 5 }, Action::Wait),
                (4600, Held { revision: 5 }, Action::Wait),
            ],
        );
    }

    #[test]
    fn leader_renews_and_steps_down_when_someone_else_wrote() {
        let t0 = Instant::now();
        use Observation::*;
        let leader = Role::Leader {
            revision: 7,
            renewed: t0,
        };
        let role = check(
            leader,
            t0,
            &[
                (
                    250,
                    Wrote {
                        revision: 8,
                        sent: t0 + ms(240),
                    },
                    Action::Renewed,
                ),
                (500, Conflict, Action::StepDown(StepDown::Lost)),
            ],
        );
        assert_eq!(role, Role::FOLLOWER);
    }

    #[test]
    fn leader_steps_down_after_ttl_without_a_renewal() {
        let t0 = Instant::now();
        use Observation::*;
        let leader = Role::Leader {
            revision: 7,
            renewed: t0,
        };
        let role = check(
            leader,
            t0,
            &[
                (250, Failed, Action::Retry),
                (1750, Failed, Action::Retry),
                (2000, Failed, Action::Retry),
                (2001, Failed, Action::StepDown(StepDown::Expired)),
            ],
        );
        assert_eq!(role, Role::FOLLOWER);
        // A renewal that gets through in time keeps the lease.
        check(
            leader,
            t0,
            &[
                (1900, Failed, Action::Retry),
                (
                    1990,
                    Wrote {
                        revision: 9,
                        sent: t0 + ms(1950),
                    },
                    Action::Renewed,
                ),
                (3900, Failed, Action::Retry),
                (3951, Failed, Action::StepDown(StepDown::Expired)),
            ],
        );
    }

    #[test]
    fn leader_that_reads_another_lease_steps_down() {
        let t0 = Instant::now();
        use Observation::*;
        let leader = Role::Leader {
            revision: 7,
            renewed: t0,
        };
        check(leader, t0, &[(1, Held { revision: 7 }, Action::Wait)]);
        check(
            leader,
            t0,
            &[(1, Held { revision: 8 }, Action::StepDown(StepDown::Lost))],
        );
        check(
            leader,
            t0,
            &[(1, Vacant { revision: 8 }, Action::StepDown(StepDown::Lost))],
        );
    }

    /// The safety argument in numbers: a follower claims no earlier than `ttl` after it first
    /// read the leader's last revision, which is after that write was sent; the leader's claim
    /// ends exactly `ttl` after the send.
    #[test]
    fn takeover_never_overlaps_the_old_leaders_validity() {
        let t0 = Instant::now();
        let sent = t0 + ms(100);
        let valid_until = sent + TTL;
        // The follower reads the revision as early as possible: the instant it was stored.
        let first_seen = sent;
        let follower = Role::Follower {
            seen: Some(Seen {
                revision: 8,
                since: first_seen,
            }),
        };
        let (_, at_expiry) = decide(
            follower,
            Observation::Held { revision: 8 },
            valid_until,
            TTL,
        );
        assert_eq!(at_expiry, Action::Wait);
    }
}
