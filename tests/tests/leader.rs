//! Leader election (`gridmon_nats::leader`) against a real nats-server with JetStream: one
//! leader per key, takeover after a crash and after a graceful resign, independent keys.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use async_nats::jetstream;
use gridmon_nats::leader::{key_for, Handover, LeaderConfig, LeaderError, Leadership, Lease};
use gridmon_tests::eventually;
use gridmon_tests::nats_server::NatsServer;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const BUCKET: &str = "gridmon_leaders";

/// One aggregator instance: its own connection, handle, task and shutdown token.
struct Instance {
    name: String,
    leadership: Leadership,
    task: JoinHandle<()>,
    shutdown: CancellationToken,
    _client: async_nats::Client,
}

async fn instance(server: &NatsServer, name: &str, ttl: Duration) -> anyhow::Result<Instance> {
    let client = async_nats::connect(server.url()).await?;
    let shutdown = CancellationToken::new();
    let (leadership, task) = Leadership::start(
        jetstream::new(client.clone()),
        LeaderConfig {
            bucket: BUCKET.into(),
            ttl,
            instance: name.into(),
        },
        shutdown.clone(),
    )
    .await?;
    Ok(Instance {
        name: name.into(),
        leadership,
        task,
        shutdown,
        _client: client,
    })
}

impl Instance {
    fn leads(&self, key: &str) -> bool {
        self.leadership.is_leader(key)
    }
}

/// Whether `a` and `b` lead `key` at the same instant. `a` is sampled before and after `b`:
/// leadership is an interval, so `a` held throughout and `b` held in the middle means an
/// overlap, whichever of them took over from the other.
fn both_at_once(a: &Instance, b: &Instance, key: &str) -> bool {
    let a1 = a.leads(key);
    let bb = b.leads(key);
    let a2 = a.leads(key);
    a1 && bb && a2
}

/// The lease currently stored for `key`, read with a separate client.
async fn stored_lease(server: &NatsServer, key: &str) -> anyhow::Result<Option<Lease>> {
    let client = async_nats::connect(server.url()).await?;
    let kv = jetstream::new(client).get_key_value(BUCKET).await?;
    Ok(match kv.entry(key).await? {
        Some(e) if e.operation == jetstream::kv::Operation::Put => Some(Lease::decode(&e.value)?),
        _ => None,
    })
}

/// Waits until exactly one of `pair` leads `key`; returns its index.
async fn one_leader(pair: [&Instance; 2], key: &str) -> anyhow::Result<usize> {
    eventually(Duration::from_secs(10), "one leader", || async {
        match (pair[0].leads(key), pair[1].leads(key)) {
            (true, false) => Some(0),
            (false, true) => Some(1),
            _ => None,
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_one_of_two_instances_leads() -> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let ttl = Duration::from_secs(1);
    let a = instance(&server, "agg-a", ttl).await?;
    let b = instance(&server, "agg-b", ttl).await?;
    let key = key_for(&["group", "c1", "g1"]);
    a.leadership.campaign(&key);
    b.leadership.campaign(&key);
    a.leadership.campaign(&key); // idempotent
    one_leader([&a, &b], &key).await?;

    // Two TTLs of samples: never both, and (bar scheduling hiccups) always one.
    let (mut samples, mut leaderless) = (0u32, 0u32);
    let end = Instant::now() + 2 * ttl;
    while Instant::now() < end {
        assert!(!both_at_once(&a, &b, &key), "both lead {key}");
        assert!(!both_at_once(&b, &a, &key), "both lead {key}");
        samples += 1;
        if !a.leads(&key) && !b.leads(&key) {
            leaderless += 1;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!("{samples} samples, {leaderless} without a leader");
    assert!(
        leaderless * 10 <= samples,
        "{leaderless} of {samples} samples had no leader"
    );

    let leader = &[&a, &b][one_leader([&a, &b], &key).await?];
    let lease = stored_lease(&server, &key)
        .await?
        .expect("a lease is stored");
    assert_eq!(lease.holder, leader.name);
    assert!(!lease.released);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_leader_is_replaced_and_its_last_window_handed_over() -> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let ttl = Duration::from_secs(1);
    let a = instance(&server, "agg-a", ttl).await?;
    let b = instance(&server, "agg-b", ttl).await?;
    let key = key_for(&["group", "c1", "g1"]);
    a.leadership.campaign(&key);
    b.leadership.campaign(&key);
    let i = one_leader([&a, &b], &key).await?;
    let (leader, follower) = if i == 0 { (&a, &b) } else { (&b, &a) };

    let window = 1_700_000_010_000;
    leader.leadership.published(&key, window);
    eventually(
        Duration::from_secs(5),
        "the window in a renewal",
        || async {
            let lease = stored_lease(&server, &key).await.ok()??;
            (lease.holder == leader.name && lease.last_window_ms == Some(window)).then_some(())
        },
    )
    .await?;

    // A crash: the task is gone without resigning; its connection and token are untouched.
    let killed = Instant::now();
    leader.task.abort();
    let took = eventually(
        Duration::from_secs(3),
        "the follower takes over",
        || async {
            assert!(!both_at_once(follower, leader, &key), "both lead {key}");
            follower.leads(&key).then(|| killed.elapsed())
        },
    )
    .await?;
    println!("takeover after a crash: {took:?} (ttl {ttl:?})");
    assert!(!leader.leads(&key), "the crashed leader's claim has ended");

    assert_eq!(
        follower.leadership.take_handover(&key),
        Some(Handover {
            previous_holder: leader.name.clone(),
            last_window_ms: Some(window),
        })
    );
    assert_eq!(follower.leadership.take_handover(&key), None, "cleared");
    // The successor carries the window forward until it publishes one of its own.
    let lease = stored_lease(&server, &key)
        .await?
        .expect("a lease is stored");
    assert_eq!(lease.holder, follower.name);
    assert_eq!(lease.last_window_ms, Some(window));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_shutdown_hands_over_without_waiting_for_the_ttl() -> anyhow::Result<()> {
    let server = NatsServer::start()?;
    // A long TTL: a takeover within it can only come from the resign.
    let ttl = Duration::from_secs(4);
    let a = instance(&server, "agg-a", ttl).await?;
    let b = instance(&server, "agg-b", ttl).await?;
    let key = key_for(&["cluster", "c1"]);
    a.leadership.campaign(&key);
    b.leadership.campaign(&key);
    let i = one_leader([&a, &b], &key).await?;
    let (leader, follower) = if i == 0 { (a, b) } else { (b, a) };

    // Published after the last renewal: the resign itself must carry it.
    let window = 1_700_000_020_000;
    leader.leadership.published(&key, window);
    let stopped = Instant::now();
    leader.shutdown.cancel();
    leader.task.await?;
    assert!(!leader.leadership.is_leader(&key));
    let resigned = stored_lease(&server, &key)
        .await?
        .expect("a lease is stored");
    assert!(resigned.released, "{resigned:?}");
    assert_eq!(resigned.last_window_ms, Some(window));

    let took = eventually(ttl / 2, "the follower takes over", || async {
        follower.leads(&key).then(|| stopped.elapsed())
    })
    .await?;
    println!(
        "takeover after a graceful shutdown: {took:?} (ttl {ttl:?}, round {:?})",
        ttl / 8
    );
    assert_eq!(
        follower.leadership.take_handover(&key),
        Some(Handover {
            previous_holder: leader.name.clone(),
            last_window_ms: Some(window),
        })
    );
    follower.shutdown.cancel();
    follower.task.await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn different_keys_are_independent() -> anyhow::Result<()> {
    let server = NatsServer::start()?;
    let ttl = Duration::from_secs(1);
    let a = instance(&server, "agg-a", ttl).await?;
    let b = instance(&server, "agg-b", ttl).await?;
    // Names KV keys do not allow, escaped.
    let k1 = key_for(&["group", "c 1", "g*1"]);
    let k2 = key_for(&["group", "c 1", "g_2"]);
    a.leadership.campaign(&k1);
    b.leadership.campaign(&k2);
    eventually(
        Duration::from_secs(10),
        "a leads k1, b leads k2",
        || async { (a.leads(&k1) && b.leads(&k2)).then_some(()) },
    )
    .await?;

    // Both now campaign for both: the live holders keep their keys.
    a.leadership.campaign(&k2);
    b.leadership.campaign(&k1);
    let end = Instant::now() + 2 * ttl;
    while Instant::now() < end {
        for k in [&k1, &k2] {
            assert!(!both_at_once(&a, &b, k), "both lead {k}");
            assert!(!both_at_once(&b, &a, k), "both lead {k}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eventually(Duration::from_secs(5), "a still leads k1, b k2", || async {
        (a.leads(&k1) && !b.leads(&k1) && b.leads(&k2) && !a.leads(&k2)).then_some(())
    })
    .await?;
    assert_eq!(stored_lease(&server, &k1).await?.unwrap().holder, "agg-a");
    assert_eq!(stored_lease(&server, &k2).await?.unwrap().holder, "agg-b");

    // One resigning leaves the other key alone.
    a.shutdown.cancel();
    a.task.await?;
    eventually(Duration::from_secs(5), "b leads both", || async {
        (b.leads(&k1) && b.leads(&k2)).then_some(())
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_bucket_is_reused_and_missing_jetstream_is_a_clear_error() -> anyhow::Result<()>
{
    let server = NatsServer::start()?;
    let client = async_nats::connect(server.url()).await?;
    // Created elsewhere with another config (history, max_age): used as it is. (As a stream:
    // `create_key_value` cannot parse a 2.9 server's account info.)
    jetstream::new(client.clone())
        .create_stream(jetstream::stream::Config {
            name: format!("KV_{BUCKET}"),
            subjects: vec![format!("$KV.{BUCKET}.>")],
            max_messages_per_subject: 3,
            max_age: Duration::from_secs(3600),
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: jetstream::stream::DiscardPolicy::New,
            ..Default::default()
        })
        .await?;
    let a = instance(&server, "agg-a", Duration::from_secs(1)).await?;
    a.leadership.campaign("grid");
    eventually(Duration::from_secs(10), "a leads grid", || async {
        a.leads("grid").then_some(())
    })
    .await?;

    // No JetStream behind this API prefix: no responders.
    let err = Leadership::start(
        jetstream::with_prefix(client, "$NOJS.API"),
        LeaderConfig {
            bucket: BUCKET.into(),
            ttl: Duration::from_secs(1),
            instance: "agg-b".into(),
        },
        CancellationToken::new(),
    )
    .await
    .expect_err("no JetStream");
    println!("{err}");
    assert!(
        matches!(err, LeaderError::JetStreamUnavailable(_)),
        "{err:?}"
    );
    assert!(err.to_string().contains("enable `jetstream`"), "{err}");
    Ok(())
}
