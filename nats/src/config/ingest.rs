//! `[clickhouse]` and `[ingest]`: where history goes and how the ingest moves it there.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{invalid, ConfigError, Secret};

/// The ClickHouse server (`[clickhouse]`); `CLICKHOUSE_URL`, `CLICKHOUSE_USER`,
/// `CLICKHOUSE_PASSWORD` and `CLICKHOUSE_DATABASE` override it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClickHouseConfig {
    /// HTTP interface; empty: the ingest starts the embedded engine (`scripts/clickhouse-front.py`).
    pub url: String,
    pub user: Option<String>,
    pub password: Option<Secret>,
    /// Database holding gridmon's tables; created by the migrations.
    pub database: String,
    /// Compression of inserts: `lz4` or `none`.
    pub compression: ChCompression,
    /// Longest wait for one query or insert before it counts as failed.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for ClickHouseConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            user: None,
            password: None,
            database: "gridmon".into(),
            compression: ChCompression::Lz4,
            timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChCompression {
    #[default]
    Lz4,
    None,
}

/// `[ingest]`: the stream, the consumer, batching, retention and backups.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    /// A table's rows go to ClickHouse when this many are buffered...
    pub batch_rows: usize,
    /// ...or when its oldest buffered row is this old.
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
    /// Rows buffered or in flight, all tables together, before the ingest stops pulling
    /// messages (backpressure on a slow ClickHouse).
    pub max_pending_rows: usize,
    /// Inserts running at once.
    pub insert_concurrency: usize,
    /// Strings longer than this (command lines, messages) are cut and counted.
    pub max_string_bytes: usize,
    pub stream: StreamConfig,
    pub consumer: ConsumerConfig,
    pub retention: RetentionConfig,
    pub backup: BackupConfig,
    /// The NATS monitoring endpoint (`http://host:8222`), read at start-up to warn when
    /// JetStream's sync settings let acknowledged messages be lost on an OS crash.
    pub nats_monitor_url: Option<String>,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            batch_rows: 100_000,
            flush_interval: Duration::from_secs(1),
            max_pending_rows: 1_000_000,
            insert_concurrency: 4,
            max_string_bytes: 4096,
            stream: StreamConfig::default(),
            consumer: ConsumerConfig::default(),
            retention: RetentionConfig::default(),
            backup: BackupConfig::default(),
            nats_monitor_url: None,
        }
    }
}

/// The JetStream stream that captures everything under the prefix (`[ingest.stream]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StreamConfig {
    pub name: String,
    /// Messages older than this are dropped from the stream (ingested or not).
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// Size bound of the stream; the oldest messages go first.
    pub max_bytes: i64,
    /// Replicas in a clustered JetStream.
    pub replicas: usize,
    /// `file` or `memory`.
    pub storage: StreamStorage,
    /// A message re-published with the same `Nats-Msg-Id` within this window is stored once.
    #[serde(with = "humantime_serde")]
    pub duplicate_window: Duration,
}

impl Default for StreamConfig {
    fn default() -> Self {
        Self {
            name: "GRIDMON".into(),
            max_age: Duration::from_secs(24 * 3600),
            max_bytes: 10 << 30,
            replicas: 1,
            storage: StreamStorage::File,
            duplicate_window: Duration::from_secs(120),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamStorage {
    #[default]
    File,
    Memory,
}

/// The durable pull consumer the ingest workers share (`[ingest.consumer]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsumerConfig {
    pub durable: String,
    /// A message not acknowledged within this is delivered again; the ingest marks held
    /// messages as in progress well before, so only a dead worker's messages come back.
    #[serde(with = "humantime_serde")]
    pub ack_wait: Duration,
    /// Messages delivered and not yet acknowledged, all workers together.
    pub max_ack_pending: i64,
    /// Messages asked for per pull.
    pub fetch: usize,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        Self {
            durable: "gridmon-ingest".into(),
            ack_wait: Duration::from_secs(60),
            max_ack_pending: 20_000,
            fetch: 500,
        }
    }
}

/// How long rows are kept, per table (`[ingest.retention]`); `0s` keeps them forever.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    #[serde(with = "humantime_serde")]
    pub node_metrics: Duration,
    #[serde(with = "humantime_serde")]
    pub device_metrics: Duration,
    #[serde(with = "humantime_serde")]
    pub process_metrics: Duration,
    #[serde(with = "humantime_serde")]
    pub sensor_readings: Duration,
    #[serde(with = "humantime_serde")]
    pub rollups: Duration,
    /// Alarms and node liveness events.
    #[serde(with = "humantime_serde")]
    pub events: Duration,
    /// Supervised programs' state transitions.
    #[serde(with = "humantime_serde")]
    pub process_events: Duration,
    /// Commands' audit records (denied, accepted, finished).
    #[serde(with = "humantime_serde")]
    pub command_audit: Duration,
    /// The 1-minute aggregates.
    #[serde(with = "humantime_serde")]
    pub minute: Duration,
    /// The 1-hour aggregates.
    #[serde(with = "humantime_serde")]
    pub hour: Duration,
}

const DAY: u64 = 24 * 3600;

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            node_metrics: Duration::from_secs(30 * DAY),
            device_metrics: Duration::from_secs(30 * DAY),
            process_metrics: Duration::from_secs(7 * DAY),
            sensor_readings: Duration::from_secs(30 * DAY),
            rollups: Duration::from_secs(90 * DAY),
            events: Duration::from_secs(365 * DAY),
            process_events: Duration::from_secs(90 * DAY),
            command_audit: Duration::from_secs(365 * DAY),
            minute: Duration::from_secs(90 * DAY),
            hour: Duration::from_secs(730 * DAY),
        }
    }
}

/// Scheduled backups with ClickHouse's own `BACKUP` (`[ingest.backup]`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackupConfig {
    /// A ClickHouse backup destination, e.g. `Disk('backups')` or `S3('https://…/gridmon', 'key', 'secret')`;
    /// each backup goes to a new name under it. Empty: no scheduled backups.
    pub destination: String,
    /// Time between scheduled backups, the first this long after start-up; none without it
    /// (`gridmon ingest --backup-now` still takes one).
    #[serde(with = "humantime_serde")]
    pub every: Option<Duration>,
}

impl IngestConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.batch_rows == 0 || self.batch_rows > 1_000_000 {
            // One insert must stay one block, so a message's rows land all or none.
            return Err(invalid(
                "ingest.batch_rows",
                "must be between 1 and 1000000 (ClickHouse's max_insert_block_size)",
            ));
        }
        if self.max_pending_rows < self.batch_rows || self.max_pending_rows > 1_000_000 {
            // A table's batch can grow to this while its previous batch is in flight.
            return Err(invalid(
                "ingest.max_pending_rows",
                "must be between batch_rows and 1000000 (one batch must stay one insert block)",
            ));
        }
        if self.flush_interval < Duration::from_millis(10) {
            return Err(invalid("ingest.flush_interval", "must be at least 10ms"));
        }
        if self.insert_concurrency == 0 {
            return Err(invalid("ingest.insert_concurrency", "must be at least 1"));
        }
        if self.max_string_bytes < 64 {
            return Err(invalid("ingest.max_string_bytes", "must be at least 64"));
        }
        if self.stream.name.is_empty()
            || self
                .stream
                .name
                .contains(|c: char| matches!(c, '.' | '*' | '>') || c.is_whitespace())
        {
            return Err(invalid(
                "ingest.stream.name",
                "must be a non-empty name without '.', '*', '>' or spaces",
            ));
        }
        if self.consumer.durable.is_empty()
            || self
                .consumer
                .durable
                .contains(|c: char| matches!(c, '.' | '*' | '>') || c.is_whitespace())
        {
            return Err(invalid(
                "ingest.consumer.durable",
                "must be a non-empty name without '.', '*', '>' or spaces",
            ));
        }
        if self.consumer.ack_wait < Duration::from_secs(5) {
            return Err(invalid("ingest.consumer.ack_wait", "must be at least 5s"));
        }
        if self.consumer.fetch == 0 || self.consumer.max_ack_pending < 1 {
            return Err(invalid(
                "ingest.consumer",
                "fetch and max_ack_pending must be at least 1",
            ));
        }
        if i64::try_from(self.consumer.fetch).unwrap_or(i64::MAX) > self.consumer.max_ack_pending {
            return Err(invalid(
                "ingest.consumer.fetch",
                "must not exceed max_ack_pending (the server refuses such pulls)",
            ));
        }
        if !self.backup.destination.is_empty() && !self.backup.destination.contains("{name}") {
            return Err(invalid(
                "ingest.backup.destination",
                "must contain {name}, where each backup's name goes, e.g. File('/var/backups/gridmon/{name}')",
            ));
        }
        if self
            .backup
            .every
            .is_some_and(|d| d < Duration::from_secs(60))
        {
            return Err(invalid("ingest.backup.every", "must be at least 1m"));
        }
        Ok(())
    }
}

impl ClickHouseConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !(self.url.is_empty()
            || self.url.starts_with("http://")
            || self.url.starts_with("https://"))
        {
            return Err(invalid(
                "clickhouse.url",
                "must be an http:// or https:// URL (ClickHouse's HTTP interface, port 8123 or 8443)",
            ));
        }
        if self.database.is_empty()
            || !self
                .database
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(invalid(
                "clickhouse.database",
                "must be a non-empty name of letters, digits and '_'",
            ));
        }
        Ok(())
    }
}
