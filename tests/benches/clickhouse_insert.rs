//! Insert throughput through the `clickhouse` crate into the test engine (the embedded
//! front, or `CLICKHOUSE_URL`): prints rows/s for narrow rows, LZ4 and uncompressed.
//!
//! `cargo bench -p gridmon-tests --bench clickhouse_insert [-- ROWS]`

use std::time::Instant;

use anyhow::Context;
use clickhouse::{Client, Compression, Row};
use gridmon_tests::clickhouse::ClickHouse;
use serde::Serialize;

#[derive(Row, Serialize)]
struct Narrow {
    id: u64,
    seq: u32,
    value: f32,
    /// DateTime64(3), milliseconds.
    ts: i64,
}

async fn run(client: &Client, label: &str, rows: u64) -> anyhow::Result<()> {
    client.query("CREATE TABLE narrow (id UInt64, seq UInt32, value Float32, ts DateTime64(3)) ENGINE = MergeTree ORDER BY id").execute().await?;
    let started = Instant::now();
    let mut insert = client.insert::<Narrow>("narrow").await?;
    for i in 0..rows {
        let row = Narrow {
            id: i,
            seq: (i % 1_000) as u32,
            value: i as f32 * 0.5,
            ts: 1_700_000_000_000 + i as i64,
        };
        insert.write(&row).await?;
    }
    insert.end().await?;
    let elapsed = started.elapsed();
    let count: u64 = client
        .query("SELECT count() FROM narrow")
        .fetch_one()
        .await?;
    anyhow::ensure!(count == rows, "{label}: {count} rows landed, {rows} sent");
    println!(
        "{label:>5}: {rows} rows in {:.2} s = {:.0} rows/s",
        elapsed.as_secs_f64(),
        rows as f64 / elapsed.as_secs_f64()
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; a bare number overrides the row count.
    let rows = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1_000_000u64);
    let started = Instant::now();
    let ch = ClickHouse::shared()?;
    println!(
        "engine at {} ready in {:.2} s",
        ch.url(),
        started.elapsed().as_secs_f64()
    );
    for (label, compression) in [("lz4", Compression::Lz4), ("none", Compression::None)] {
        let db = ch.test_db(&format!("bench_insert_{label}")).await?;
        run(&db.client.with_compression(compression), label, rows)
            .await
            .context(label)?;
    }
    Ok(())
}
