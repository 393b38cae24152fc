//! The ClickHouse HTTP front (`scripts/clickhouse-front.py`), driven through the real
//! `clickhouse` crate as gridmon's ingest uses it: RowBinary inserts (LZ4 and plain),
//! fetches with row validation, errors, concurrency, restarts.
//!
//! With `CLICKHOUSE_URL` set, the same tests run against that server (except the restart
//! test, which needs a process of its own).

use std::time::Duration;

use anyhow::Context;
use clickhouse::{Client, Compression, Row};
use gridmon_tests::clickhouse::{ClickHouse, ClickHouseProcess, TestDb};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Row, Serialize, Deserialize)]
struct Sample {
    id: u64,
    host: String,
    seq: u32,
    value: f32,
    /// DateTime64(3) as milliseconds since the epoch (its RowBinary form is an Int64).
    ts: i64,
    tags: Vec<String>,
    note: Option<String>,
}

const SAMPLE_TABLE: &str = "CREATE TABLE samples (
    id UInt64, host LowCardinality(String), seq UInt32, value Float32, ts DateTime64(3),
    tags Array(String), note Nullable(String)
) ENGINE = MergeTree ORDER BY id";

fn samples(n: u64) -> Vec<Sample> {
    (0..n)
        .map(|i| Sample {
            id: i,
            host: format!("host-{}", i % 7),
            seq: u32::try_from(i * 3).unwrap_or(u32::MAX),
            value: i as f32 * 0.25 - 3.5,
            ts: 1_700_000_000_000 + i as i64 * 1_001,
            tags: (0..i % 3).map(|t| format!("tag{t} \t'\"\\ ünï")).collect(),
            note: (i % 2 == 0).then(|| format!("note {i}")),
        })
        .collect()
}

async fn db(test: &str) -> anyhow::Result<TestDb> {
    let db = ClickHouse::shared()?.test_db(test).await?;
    db.client
        .query(SAMPLE_TABLE)
        .execute()
        .await
        .context("create table")?;
    Ok(db)
}

async fn insert_all(client: &Client, rows: &[Sample]) -> anyhow::Result<()> {
    insert_into(client, "samples", rows).await
}

async fn insert_into(client: &Client, table: &str, rows: &[Sample]) -> anyhow::Result<()> {
    let mut insert = client.insert::<Sample>(table).await?;
    for row in rows {
        insert.write(row).await?;
    }
    insert.end().await?;
    Ok(())
}

async fn fetch_all(client: &Client) -> anyhow::Result<Vec<Sample>> {
    Ok(client
        .query("SELECT ?fields FROM samples ORDER BY id")
        .fetch_all::<Sample>()
        .await?)
}

#[tokio::test]
async fn version_is_26() -> anyhow::Result<()> {
    let ch = ClickHouse::shared()?;
    let version: String = ch.client().query("SELECT version()").fetch_one().await?;
    let major: u32 = version
        .split('.')
        .next()
        .unwrap_or_default()
        .parse()
        .context(version.clone())?;
    if ch.is_embedded() {
        assert_eq!(major, 26, "chDB engine version {version}");
    } else {
        assert!(major >= 23, "server version {version}");
    }
    Ok(())
}

#[tokio::test]
async fn insert_lz4_round_trips() -> anyhow::Result<()> {
    let db = db("insert_lz4_round_trips").await?;
    // Enough rows for several compressed blocks (the crate sends one per ~256 KiB).
    let rows = samples(30_000);
    insert_all(&db.client.clone().with_compression(Compression::Lz4), &rows).await?;
    assert_eq!(fetch_all(&db.client).await?, rows);
    Ok(())
}

#[tokio::test]
async fn insert_uncompressed_round_trips() -> anyhow::Result<()> {
    let db = db("insert_uncompressed_round_trips").await?;
    let client = db.client.clone().with_compression(Compression::None);
    let rows = samples(2_000);
    insert_all(&client, &rows).await?;
    assert_eq!(fetch_all(&client).await?, rows);
    Ok(())
}

#[tokio::test]
async fn insert_without_validation_uses_plain_rowbinary() -> anyhow::Result<()> {
    let db = db("insert_without_validation").await?;
    let client = db.client.clone().with_validation(false);
    let rows = samples(500);
    insert_all(&client, &rows).await?;
    assert_eq!(fetch_all(&client).await?, rows);
    Ok(())
}

#[tokio::test]
async fn inserter_commits_in_several_requests() -> anyhow::Result<()> {
    let db = db("inserter_commits").await?;
    let rows = samples(1_000);
    let mut inserter = db.client.inserter::<Sample>("samples").with_max_rows(300);
    let mut committed = 0;
    for row in &rows {
        inserter.write(row).await?;
        committed += inserter.commit().await?.rows;
    }
    committed += inserter.end().await?.rows;
    assert_eq!(committed, 1_000);
    assert_eq!(fetch_all(&db.client).await?, rows);
    Ok(())
}

#[tokio::test]
async fn validation_rejects_a_mismatched_row_type() -> anyhow::Result<()> {
    #[derive(Debug, Row, Deserialize)]
    #[allow(dead_code)] // only its shape matters
    struct Wrong {
        id: String,
    }
    let db = db("validation_rejects").await?;
    insert_all(&db.client, &samples(3)).await?;
    // Validation is on by default: fetches ask for RowBinaryWithNamesAndTypes and check
    // the columns' types against the struct.
    let err = db
        .client
        .query("SELECT ?fields FROM samples")
        .fetch_all::<Wrong>()
        .await
        .err()
        .context("a String field for a UInt64 column was accepted")?;
    assert!(err.to_string().contains("UInt64"), "{err}");
    Ok(())
}

#[tokio::test]
async fn bad_query_is_bad_response_with_the_exception_code() -> anyhow::Result<()> {
    let db = db("bad_query").await?;
    let err = db
        .client
        .query("SELECT no_such_column FROM samples")
        .fetch_all::<u64>()
        .await;
    match err {
        Err(clickhouse::error::Error::BadResponse(msg)) => {
            assert!(msg.starts_with("Code: 47."), "{msg}");
            assert!(msg.contains("UNKNOWN_IDENTIFIER"), "{msg}");
        }
        other => anyhow::bail!("expected BadResponse, got {other:?}"),
    }
    let err = db
        .client
        .query("CREATE TABLE samples (x UInt8) ENGINE = Memory")
        .execute()
        .await;
    assert!(
        matches!(&err, Err(clickhouse::error::Error::BadResponse(m)) if m.contains("Code: 57.")),
        "{err:?}"
    );
    Ok(())
}

#[tokio::test]
async fn insert_into_a_missing_table_fails() -> anyhow::Result<()> {
    let db = db("insert_missing_table").await?;
    // Without validation the crate skips its DESCRIBE, so the INSERT itself must fail.
    let err = insert_into(
        &db.client.clone().with_validation(false),
        "missing",
        &samples(10),
    )
    .await;
    let msg = format!(
        "{:#}",
        err.err().context("insert into a missing table succeeded")?
    );
    // ClickHouse 26 words it "Table ... does not exist" with code 60 (UNKNOWN_TABLE).
    assert!(msg.contains("Code: 60."), "{msg}");
    Ok(())
}

#[tokio::test]
async fn parameters_and_binds_reach_the_engine() -> anyhow::Result<()> {
    let db = db("parameters").await?;
    insert_all(&db.client, &samples(10)).await?;
    let tricky = "it's \t a \\ \"test\" ünï";
    // `param` travels as a multipart form field, `bind` inline in the SQL text.
    let (host, echoed): (String, String) = db
        .client
        .query("SELECT host, {s: String} FROM samples WHERE id = {id: UInt64}")
        .param("s", tricky)
        .param("id", 3u64)
        .fetch_one()
        .await?;
    assert_eq!((host.as_str(), echoed.as_str()), ("host-3", tricky));
    let count: u64 = db
        .client
        .query("SELECT count() FROM samples WHERE host = ? AND id < ?")
        .bind("host-1")
        .bind(9)
        .fetch_one()
        .await?;
    assert_eq!(count, 2);
    Ok(())
}

#[tokio::test]
async fn settings_apply_to_their_request_only() -> anyhow::Result<()> {
    let ch = ClickHouse::shared()?;
    let get = "SELECT getSetting('max_threads') = 3";
    let with: bool = ch
        .client()
        .with_setting("max_threads", "3")
        .query(get)
        .fetch_one()
        .await?;
    let without: bool = ch.client().query(get).fetch_one().await?;
    assert!(with && !without, "with: {with}, without: {without}");
    Ok(())
}

#[tokio::test]
async fn concurrent_inserts_to_two_databases_both_land() -> anyhow::Result<()> {
    let (a, b) = (db("concurrent_a").await?, db("concurrent_b").await?);
    let rows_a = samples(20_000);
    let rows_b: Vec<Sample> = samples(15_000)
        .into_iter()
        .map(|s| Sample { seq: 7, ..s })
        .collect();
    let (ra, rb) = tokio::join!(
        insert_all(&a.client, &rows_a),
        insert_all(&b.client, &rows_b)
    );
    ra?;
    rb?;
    let (fa, fb) = tokio::join!(fetch_all(&a.client), fetch_all(&b.client));
    assert_eq!(fa?, rows_a);
    assert_eq!(fb?, rows_b);
    Ok(())
}

#[tokio::test]
async fn a_slow_query_does_not_hold_up_others() -> anyhow::Result<()> {
    let ch = ClickHouse::shared()?;
    let slow = ch
        .client()
        .query("SELECT sum(sleepEachRow(0.1)) FROM numbers(20) SETTINGS max_block_size = 1")
        .execute();
    let quick = async {
        // Give the slow one a head start, then expect an answer long before it ends.
        tokio::time::sleep(Duration::from_millis(200)).await;
        tokio::time::timeout(
            Duration::from_millis(1_500),
            ch.client().query("SELECT 1").fetch_one::<u8>(),
        )
        .await
    };
    let (slow, quick) = tokio::join!(slow, quick);
    slow?;
    assert_eq!(quick.context("a quick query waited for the slow one")??, 1);
    Ok(())
}

#[tokio::test]
async fn data_survives_a_restart() -> anyhow::Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("gridmon-clickhouse-restart-")
        .tempdir()?;
    let mut ch = ClickHouseProcess::start(dir.path().join("data"), 0)?;
    let client = Client::default().with_url(ch.url());
    client.query("CREATE DATABASE keep").execute().await?;
    let client = client.with_database("keep");
    client.query(SAMPLE_TABLE).execute().await?;
    let rows = samples(1_000);
    insert_all(&client, &rows).await?;

    let url = ch.url();
    ch.stop();
    assert!(!ch.is_running());
    assert!(
        client.query("SELECT 1").execute().await.is_err(),
        "a stopped engine answered"
    );
    ch.restart()?;
    assert_eq!(ch.url(), url, "the port changed across the restart");
    assert_eq!(fetch_all(&client).await?, rows);
    Ok(())
}
