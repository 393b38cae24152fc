//! Taking the bus away for 10 s loses no report: sequences stay contiguous, or the gap equals the
//! drop count the agent reports.

use std::time::Duration;

use gridmon_nats::wire::{Envelope, NodeReport};
use gridmon_tests::nats_server::NatsServer;

use crate::{create_stream, start_agent, stored_reports};

/// Runs an agent through a 10 s outage and returns what the stream holds for it afterwards.
async fn through_outage(node: &str, extra_toml: &str) -> Vec<Envelope<NodeReport>> {
    let mut server = NatsServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let subject = format!("grid.c1.g1.{node}");
    {
        let client = async_nats::connect(server.url()).await.unwrap();
        create_stream(&client).await;
    }
    let agent = start_agent(
        dir.path(),
        &server.url(),
        node,
        "delivery = \"jetstream\"",
        extra_toml,
    );
    let client = async_nats::connect(server.url()).await.unwrap();
    let before =
        gridmon_tests::eventually(Duration::from_secs(15), "reports before the outage", || {
            let (client, subject) = (client.clone(), subject.clone());
            async move {
                let n = stored_reports(&client, &subject).await.len();
                (n >= 5).then_some(n)
            }
        })
        .await
        .unwrap();
    drop(client);

    server.stop();
    // The outage itself is the point of the test: 10 s without a bus (50 intervals of 200 ms).
    tokio::time::sleep(Duration::from_secs(10)).await;
    server.start_again().unwrap();

    let client = async_nats::connect(server.url()).await.unwrap();
    let after =
        gridmon_tests::eventually(Duration::from_secs(30), "reports after the outage", || {
            let (client, subject) = (client.clone(), subject.clone());
            async move {
                let r = stored_reports(&client, &subject).await;
                // 10 s of outage is 50 reports; wait for well past it.
                (r.last().is_some_and(|e| e.seq > before as u64 + 60)).then_some(r)
            }
        })
        .await
        .unwrap();
    agent.stop().await;
    let log = std::fs::read_to_string(dir.path().join(format!("{node}.log"))).unwrap_or_default();
    assert!(!log.contains("panicked"), "agent log: {log}");
    after
}

#[tokio::test]
async fn outage_of_ten_seconds_loses_no_report() {
    let reports = through_outage("steady", "").await;
    let seqs: Vec<u64> = reports.iter().map(|e| e.seq).collect();
    let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
    assert_eq!(seqs, expected, "contiguous, no duplicates");
    assert!(reports
        .iter()
        .all(|e| e.body.agent.spool_dropped_total == 0));
    // Reports made during the outage kept their own timestamps: there is no hole in time.
    for w in reports.windows(2) {
        let gap = w[1].ts_ms - w[0].ts_ms;
        assert!(
            gap <= 1000,
            "a {gap} ms hole between seq {} and {}",
            w[0].seq,
            w[1].seq
        );
    }
}

#[tokio::test]
async fn outage_beyond_the_spool_counts_exactly_what_it_dropped() {
    let reports = through_outage("small", "[spool]\nmax_messages = 10\n").await;
    let mut missing = 0u64;
    for w in reports.windows(2) {
        assert!(w[1].seq > w[0].seq, "in order, no duplicates");
        missing += w[1].seq - w[0].seq - 1;
    }
    missing += reports[0].seq - 1;
    let dropped = reports.last().unwrap().body.agent.spool_dropped_total;
    assert!(
        missing > 0,
        "a 10-message spool cannot hold 10 s of reports"
    );
    // The spool holds reports and inventory messages; what it dropped is all reports here, since
    // the only inventory message went out before the outage.
    assert_eq!(missing, dropped, "the gap equals the reported drop count");
}
