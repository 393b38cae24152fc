//! The agent's reports and inventory arrive on the right subjects with the documented fields.

use std::time::Duration;

use futures::StreamExt;
use gridmon_nats::wire::{self, Envelope, Inventory, Kind, NodeReport};
use gridmon_tests::nats_server::NatsServer;

use crate::start_agent;

#[tokio::test]
async fn reports_arrive_on_the_node_subject_and_decode() {
    let server = NatsServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let client = async_nats::connect(server.url()).await.unwrap();
    let mut reports = client.subscribe("grid.c1.g1.n1").await.unwrap();
    let mut inventory = client.subscribe("grid.inventory.c1.g1.n1").await.unwrap();
    client.flush().await.unwrap();
    let agent = start_agent(dir.path(), &server.url(), "n1", "", "");
    let agent_pid = agent.child.id().unwrap();

    let mut got: Vec<Envelope<NodeReport>> = Vec::new();
    while got.len() < 4 {
        let msg = tokio::time::timeout(Duration::from_secs(10), reports.next())
            .await
            .expect("a report within 10s")
            .unwrap();
        assert_eq!(msg.subject.as_str(), "grid.c1.g1.n1");
        got.push(wire::decode(&msg.payload, Kind::NodeReport).unwrap());
    }
    let seqs: Vec<u64> = got.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [1, 2, 3, 4]);
    let ncpu = std::thread::available_parallelism().unwrap().get();
    for e in &got {
        assert_eq!(e.schema, wire::SCHEMA_VERSION);
        assert_eq!(
            (
                e.source.cluster.as_str(),
                e.source.group.as_deref(),
                e.source.node.as_deref()
            ),
            ("c1", Some("g1"), Some("n1"))
        );
        assert_eq!(e.body.interval_ms, 200);
        let h = e.body.host.as_ref().expect("host metrics");
        assert!(h.memory.total_bytes > 0 && h.memory.available_bytes <= h.memory.total_bytes);
        assert_eq!(h.cpu.per_core_pct.len(), ncpu);
        assert!((0.0..=100.0).contains(&h.cpu.total_pct));
        assert!(h.uptime_s > 0.0);
        assert!(
            h.nets.iter().any(|n| n.name == "lo"),
            "loopback interface listed"
        );
        assert!(!h.filesystems.is_empty());
        assert_eq!(e.body.agent.version, env!("CARGO_PKG_VERSION"));
        assert!(e.body.agent.rss_bytes > 0);
    }
    // Timestamps advance by the interval, on wall-clock boundaries.
    for w in got.windows(2) {
        let d = w[1].ts_ms - w[0].ts_ms;
        assert!((150..=450).contains(&d), "reports {d} ms apart");
    }
    // The process table comes every other report (400 ms / 200 ms) and lists the agent itself.
    let tables: Vec<_> = got
        .iter()
        .filter_map(|e| e.body.processes.as_ref())
        .collect();
    assert!(
        (1..=3).contains(&tables.len()),
        "{} tables in 4 reports",
        tables.len()
    );
    let t = tables[0];
    assert!(t.total as usize >= t.rows.len() && !t.rows.is_empty());
    let me = t
        .rows
        .iter()
        .find(|r| r.pid == agent_pid)
        .expect("the agent's own row");
    assert_eq!(me.name, "gridmon");
    assert!(me.cmdline.contains("agent --config"));
    assert!(me.rss_bytes > 0 && me.threads >= 1 && me.start_time_ms > 0);

    let msg = tokio::time::timeout(Duration::from_secs(10), inventory.next())
        .await
        .expect("inventory")
        .unwrap();
    let inv: Envelope<Inventory> = wire::decode(&msg.payload, Kind::Inventory).unwrap();
    assert_eq!(inv.seq, 1);
    assert_eq!(inv.body.agent_version, env!("CARGO_PKG_VERSION"));
    assert!(inv.body.memory_bytes > 0);
    assert_eq!(inv.body.cpu_logical_cores as usize, ncpu);
    assert!(!inv.body.kernel.is_empty());
    agent.stop().await;
}

#[tokio::test]
async fn agent_keeps_collecting_while_nats_is_down_at_start() {
    let port = gridmon_tests::nats_server::free_port().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("nats://127.0.0.1:{port}");
    // delivery = "jetstream": reports wait until a stream takes them.
    let mut agent = start_agent(dir.path(), &url, "n2", "delivery = \"jetstream\"", "");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        agent.child.try_wait().unwrap().is_none(),
        "the agent must not exit while NATS is unreachable"
    );

    let server = gridmon_tests::nats_server::NatsServer::start_with(
        gridmon_tests::nats_server::NatsOptions {
            port: Some(port),
            ..Default::default()
        },
    )
    .unwrap();
    let client = async_nats::connect(server.url()).await.unwrap();
    crate::create_stream(&client).await;
    let reports = gridmon_tests::eventually(
        Duration::from_secs(20),
        "reports made before the server started",
        || {
            let client = client.clone();
            async move {
                let r = crate::stored_reports(&client, "grid.c1.g1.n2").await;
                (r.len() >= 12).then_some(r)
            }
        },
    )
    .await
    .unwrap();
    // The first reports were made while the bus was away and are delivered in order.
    let seqs: Vec<u64> = reports.iter().map(|e| e.seq).collect();
    let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
    assert_eq!(
        seqs, expected,
        "spooled reports arrive complete and in order"
    );
    assert!(reports[0].ts_ms < reports.last().unwrap().ts_ms - 1500);
    agent.stop().await;
}
