//! Close-to-bus latency of rollups, as a subscriber on the bus sees it.
//!
//! ```sh
//! cargo run --release -p gridmon-nats --example rollup_latency -- \
//!     --url nats://127.0.0.1:4222 --secs 60 [--grace-ms 500] [--rollup-grace-ms 100] \
//!     [--prefix grid] [--skip-secs 6]
//! ```
//!
//! Subscribes to the group, cluster and grid rollup subjects and stamps each message's arrival
//! on the wall clock as the subscription yields it; the payloads are decoded only after the run,
//! so decoding never delays a stamp. A rollup's close is its window's end plus `grace`, plus one
//! `rollup_grace` per level above the group. Prints p50/p99/max per level, the latency by arrival
//! order within a window (which shows whether rollups closing at one instant queue behind each
//! other), and the input drops the group rollups report. `scripts/bench-aggregate` runs it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::StreamExt;
use gridmon_nats::wire::{self, Kind, Level, Rollup};

struct Opts {
    url: String,
    prefix: String,
    secs: f64,
    skip_secs: f64,
    grace_ms: f64,
    rollup_grace_ms: f64,
}

fn opts() -> Opts {
    let mut o = Opts {
        url: "nats://127.0.0.1:4222".into(),
        prefix: "grid".into(),
        secs: 60.0,
        skip_secs: 6.0,
        grace_ms: 500.0,
        rollup_grace_ms: 100.0,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--url" => o.url = val(),
            "--prefix" => o.prefix = val(),
            "--secs" => o.secs = val().parse().expect("--secs S"),
            "--skip-secs" => o.skip_secs = val().parse().expect("--skip-secs S"),
            "--grace-ms" => o.grace_ms = val().parse().expect("--grace-ms MS"),
            "--rollup-grace-ms" => o.rollup_grace_ms = val().parse().expect("--rollup-grace-ms MS"),
            other => panic!("unknown argument {other}"),
        }
    }
    o
}

fn wall_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
        * 1000.0
}

fn pct(xs: &[f64], q: f64) -> f64 {
    let i = ((q * xs.len() as f64) as usize).min(xs.len() - 1);
    xs[i]
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let o = opts();
    let client = async_nats::connect(&o.url).await.expect("connect");
    let mut subs = Vec::new();
    for s in [
        format!("{}.*.*", o.prefix),
        format!("{}.*", o.prefix),
        o.prefix.clone(),
    ] {
        subs.push(client.subscribe(s).await.expect("subscribe"));
    }
    client.flush().await.expect("flush");
    let mut inputs = futures::stream::select_all(subs);
    let started = wall_ms();
    let end = tokio::time::sleep(Duration::from_secs_f64(o.secs));
    tokio::pin!(end);
    let mut raw: Vec<(f64, Bytes)> = Vec::new();
    loop {
        tokio::select! {
            _ = &mut end => break,
            m = inputs.next() => match m {
                Some(m) => raw.push((wall_ms(), m.payload)),
                None => break,
            },
        }
    }

    // (level, window start) -> arrivals' latencies in arrival order.
    let mut windows: BTreeMap<(u8, i64), Vec<f64>> = BTreeMap::new();
    let mut drops: BTreeMap<String, u64> = BTreeMap::new();
    let mut online = None;
    for (at, payload) in &raw {
        let Ok(h) = wire::peek(payload) else { continue };
        if h.kind != Kind::Rollup {
            continue;
        }
        let Ok(env) = wire::decode::<Rollup>(payload, Kind::Rollup) else {
            continue;
        };
        let r = env.body;
        let level = match r.level {
            Level::Group => 0u8,
            Level::Cluster => 1,
            Level::Grid => 2,
        };
        let window_end = (r.window_start_ms + i64::from(r.window_ms)) as f64;
        if window_end < started + o.skip_secs * 1000.0 {
            continue;
        }
        let close = window_end + o.grace_ms + f64::from(level) * o.rollup_grace_ms;
        windows
            .entry((level, r.window_start_ms))
            .or_default()
            .push(at - close);
        if level == 0 {
            for (k, v) in r.input.counters() {
                if k == "received" || k == "folded" {
                    continue;
                }
                let e = drops.entry(k.to_string()).or_default();
                *e = (*e).max(v);
            }
        } else if level == 1 {
            online = Some(r.nodes.online);
        }
    }
    for (level, name) in [(0u8, "group"), (1, "cluster"), (2, "grid")] {
        let mut all: Vec<f64> = Vec::new();
        let mut by_order: Vec<Vec<f64>> = Vec::new();
        for ((_, _), lats) in windows.range((level, i64::MIN)..=(level, i64::MAX)) {
            for (i, l) in lats.iter().enumerate() {
                all.push(*l);
                if by_order.len() <= i {
                    by_order.push(Vec::new());
                }
                by_order[i].push(*l);
            }
        }
        if all.is_empty() {
            continue;
        }
        all.sort_by(f64::total_cmp);
        println!(
            "{name} rollups: {}, close-to-bus latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            all.len(),
            pct(&all, 0.5),
            pct(&all, 0.99),
            all[all.len() - 1]
        );
        if by_order.len() > 1 {
            let line: Vec<String> = by_order
                .iter_mut()
                .map(|xs| {
                    xs.sort_by(f64::total_cmp);
                    format!("{:.1}", pct(xs, 0.5))
                })
                .collect();
            println!(
                "  {name} p50 by arrival order within a window (ms): {}",
                line.join(" ")
            );
        }
    }
    if let Some(n) = online {
        println!("cluster nodes online (last): {n}");
    }
    let listed: Vec<String> = drops
        .iter()
        .filter(|(_, v)| **v > 0)
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    println!(
        "group inputs late or dropped, since start (max over groups): {}",
        if listed.is_empty() {
            "none".to_string()
        } else {
            listed.join(", ")
        }
    );
}
