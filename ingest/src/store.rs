//! ClickHouse: the connection, the version check, migrations, retention, inserts and the
//! look-up of rows already written.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::Context;
use clickhouse::{Client, Compression};
use gridmon_nats::config::{ChCompression, ClickHouseConfig, RetentionConfig};

use crate::rows::{Table, TableRow};
use crate::schema::{self, MIGRATIONS, MIGRATIONS_TABLE};

/// The oldest ClickHouse release the schema and the ingest are written for.
pub const MIN_VERSION: (u32, u32) = (23, 8);

/// A client for gridmon's database.
#[derive(Clone)]
pub struct Store {
    client: Client,
    database: String,
    timeout: Duration,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("database", &self.database)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// A client for `url` (the resolved URL: the config's, or the embedded engine's).
    pub fn new(cfg: &ClickHouseConfig, url: &str) -> Self {
        let mut client = Client::default()
            .with_url(url)
            .with_compression(match cfg.compression {
                ChCompression::Lz4 => Compression::Lz4,
                ChCompression::None => Compression::None,
            })
            .with_validation(true);
        if let Some(u) = &cfg.user {
            client = client.with_user(u);
        }
        if let Some(p) = &cfg.password {
            client = client.with_password(p.expose());
        }
        Self {
            client,
            database: cfg.database.clone(),
            timeout: cfg.timeout,
        }
    }

    pub fn database(&self) -> &str {
        &self.database
    }

    /// The longest wait for one query or insert.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// A client bound to gridmon's database.
    pub fn client(&self) -> Client {
        self.client.clone().with_database(&self.database)
    }

    /// Runs a query with the configured timeout; `what` names it in the error.
    pub async fn timed<T>(
        &self,
        what: &str,
        f: impl std::future::Future<Output = clickhouse::error::Result<T>>,
    ) -> anyhow::Result<T> {
        match tokio::time::timeout(self.timeout, f).await {
            Ok(r) => r.with_context(|| what.to_string()),
            Err(_) => anyhow::bail!("{what}: no answer within {:?}", self.timeout),
        }
    }

    /// The server's version, refused below [`MIN_VERSION`].
    pub async fn check_version(&self) -> anyhow::Result<String> {
        let v: String = self
            .timed(
                "asking ClickHouse for its version",
                self.client.query("SELECT version()").fetch_one(),
            )
            .await?;
        let parsed = parse_version(&v)
            .with_context(|| format!("ClickHouse reports an unreadable version {v:?}"))?;
        if parsed < MIN_VERSION {
            anyhow::bail!(
                "ClickHouse {v} is too old: gridmon needs {}.{} or later",
                MIN_VERSION.0,
                MIN_VERSION.1
            );
        }
        Ok(v)
    }

    async fn execute(&self, sql: &str) -> anyhow::Result<()> {
        self.timed(sql, self.client.query(sql).execute()).await
    }

    /// Creates the database and applies the migrations not yet recorded. Returns the versions
    /// applied by this call.
    pub async fn migrate(&self, applied_by: &str) -> anyhow::Result<Vec<u32>> {
        let db = &self.database;
        self.execute(&format!("CREATE DATABASE IF NOT EXISTS `{db}`"))
            .await?;
        self.execute(&schema::render(MIGRATIONS_TABLE, db)).await?;
        let done: Vec<u32> = self
            .timed(
                "reading schema_migrations",
                self.client
                    .query(&format!(
                        "SELECT DISTINCT version FROM `{db}`.schema_migrations"
                    ))
                    .fetch_all(),
            )
            .await?;
        let mut applied = Vec::new();
        for m in MIGRATIONS {
            if done.contains(&m.version) {
                continue;
            }
            for s in m.statements {
                let sql = schema::render(s, db);
                let mut q = self.client.query(&sql);
                if sql.contains(" MODIFY QUERY ") {
                    // Experimental before 24.1, a no-op since.
                    q = q.with_setting("allow_experimental_alter_materialized_view_structure", "1");
                }
                self.timed(&sql, q.execute())
                    .await
                    .with_context(|| format!("migration {} ({})", m.version, m.name))?;
            }
            self.timed(
                "recording a migration",
                self.client
                    .query(&format!(
                        "INSERT INTO `{db}`.schema_migrations (version, name, applied_by) VALUES (?, ?, ?)"
                    ))
                    .bind(m.version)
                    .bind(m.name)
                    .bind(applied_by)
                    .execute(),
            )
            .await?;
            tracing::info!(version = m.version, name = m.name, "migration applied");
            applied.push(m.version);
        }
        Ok(applied)
    }

    /// Brings every table's TTL to the configured retention; returns the tables changed.
    pub async fn apply_retention(&self, r: &RetentionConfig) -> anyhow::Result<Vec<String>> {
        let db = &self.database;
        let mut changed = Vec::new();
        for (table, keep) in schema::retention_plan(r) {
            let engine: String = self
                .timed(
                    "reading a table's TTL",
                    self.client
                        .query(
                            "SELECT engine_full FROM system.tables WHERE database = ? AND name = ?",
                        )
                        .bind(db)
                        .bind(table)
                        .fetch_one(),
                )
                .await?;
            let current = current_ttl(&engine);
            let wanted = schema::ttl_expression(keep);
            if current.as_deref() == wanted.as_deref() {
                continue;
            }
            let sql = match &wanted {
                Some(ttl) => format!("ALTER TABLE `{db}`.`{table}` MODIFY TTL {ttl}"),
                None => format!("ALTER TABLE `{db}`.`{table}` REMOVE TTL"),
            };
            self.execute(&sql).await?;
            tracing::info!(
                table,
                ttl = wanted.as_deref().unwrap_or("none"),
                "retention changed"
            );
            changed.push(table.to_string());
        }
        Ok(changed)
    }

    /// Inserts one batch. The token makes a retry of the same batch a no-op where the first
    /// attempt landed after all (a timeout, a dropped connection).
    pub async fn insert<R: TableRow>(&self, rows: &[R], token: &str) -> anyhow::Result<()> {
        let table = R::TABLE.name();
        let client = self.client();
        let fut = async {
            let mut insert = client
                .insert::<R>(table)
                .await?
                .with_setting("insert_deduplication_token", token)
                .with_setting("deduplicate_blocks_in_dependent_materialized_views", "1")
                // A batch holds one sample per process (or node, or sensor), so the downsampling
                // tables would fold nothing while writing it; they fold on merge instead, which
                // saves the engine a pass over every row (docs/benchmarks.md).
                .with_setting("optimize_on_insert", "0")
                // The views of a batch are written side by side, not one after the other.
                .with_setting("parallel_view_processing", "1")
                // One batch is one block (a profile's lower value would split a message).
                .with_setting("max_insert_block_size", "1048576");
            for r in rows {
                insert.write(r).await?;
            }
            insert.end().await
        };
        self.timed(&format!("inserting {} rows into {table}", rows.len()), fut)
            .await
    }

    /// Of the messages `msgs` (hashes), those with rows in `table` already, between `lo` and
    /// `hi` (ms). Used for messages delivered again: their first delivery may have landed.
    pub async fn present(
        &self,
        table: Table,
        msgs: &[u64],
        lo: i64,
        hi: i64,
    ) -> anyhow::Result<HashSet<u64>> {
        let mut found = HashSet::new();
        // In chunks: each value is about 20 bytes of query text, and max_query_size is 256 KiB.
        for chunk in msgs.chunks(2000) {
            found.extend(self.present_chunk(table, chunk, lo, hi).await?);
        }
        Ok(found)
    }

    async fn present_chunk(
        &self,
        table: Table,
        msgs: &[u64],
        lo: i64,
        hi: i64,
    ) -> anyhow::Result<Vec<u64>> {
        let sql = format!(
            "SELECT DISTINCT msg FROM `{}`.`{}` WHERE ts >= fromUnixTimestamp64Milli(?) AND ts <= fromUnixTimestamp64Milli(?) AND msg IN ?",
            self.database,
            table.name()
        );
        let found: Vec<u64> = self
            .timed(
                "looking up rows already written",
                self.client
                    .query(&sql)
                    .bind(lo)
                    .bind(hi)
                    .bind(msgs)
                    .fetch_all(),
            )
            .await?;
        Ok(found)
    }
}

/// `major.minor` of a version string such as `24.3.2.23` or `26.9.2.1`.
pub fn parse_version(v: &str) -> Option<(u32, u32)> {
    let mut it = v.trim().split('.');
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    Some((major, minor))
}

/// The TTL expression in a table's `engine_full`, as ClickHouse prints it.
pub fn current_ttl(engine_full: &str) -> Option<String> {
    let start = engine_full.find(" TTL ")? + 5;
    let rest = &engine_full[start..];
    let end = rest.find(" SETTINGS ").unwrap_or(rest.len());
    Some(rest[..end].trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(parse_version("26.9.2.1"), Some((26, 9)));
        assert_eq!(parse_version("23.8.1"), Some((23, 8)));
        assert_eq!(parse_version("banana"), None);
        assert!(parse_version("23.3.1").unwrap() < MIN_VERSION);
        assert!(parse_version("24.1").unwrap() >= MIN_VERSION);
    }

    #[test]
    fn ttl_is_read_from_engine_full() {
        let e = "MergeTree PARTITION BY toDate(ts) ORDER BY (cluster, node, ts) TTL toDateTime(ts) + toIntervalDay(30) SETTINGS index_granularity = 8192";
        assert_eq!(
            current_ttl(e).as_deref(),
            Some("toDateTime(ts) + toIntervalDay(30)")
        );
        assert_eq!(current_ttl("MergeTree ORDER BY x SETTINGS a = 1"), None);
        assert_eq!(
            current_ttl("MergeTree ORDER BY x TTL toDateTime(ts) + toIntervalSecond(90)")
                .as_deref(),
            Some("toDateTime(ts) + toIntervalSecond(90)")
        );
    }
}
