//! A subscriber in another language (Python, nats-py + msgpack) decodes a report by field names.

use std::process::Stdio;
use std::time::Duration;

use futures::StreamExt;
use gridmon_nats::wire::{self, Envelope, Kind, NodeReport};
use gridmon_tests::nats_server::NatsServer;

#[tokio::test]
async fn python_reads_a_report_by_field_names() {
    let server = NatsServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let client = async_nats::connect(server.url()).await.unwrap();
    let mut reports = client.subscribe("grid.c1.g1.py").await.unwrap();
    client.flush().await.unwrap();

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/read_report.py");
    let python = gridmon_commands::child::command("python3")
        .arg(script)
        .arg(server.url())
        .arg("grid.c1.g1.py")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect(gridmon_tests::SETUP_HINT);
    // The script prints READY once subscribed; only then start the agent.
    let mut python = python;
    let stdout = python.stdout.take().unwrap();
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    let ready = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        ready.as_deref(),
        Some("READY"),
        "python subscriber did not start; {}",
        gridmon_tests::SETUP_HINT
    );

    let agent = crate::start_agent(dir.path(), &server.url(), "py", "", "");
    let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .expect("a line from python");
    let out = python.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: serde_json::Value = serde_json::from_str(&line).unwrap();

    // Find the same report on the Rust side and compare field by field.
    let seq = seen["seq"].as_u64().unwrap();
    let mine: Envelope<NodeReport> = loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), reports.next())
            .await
            .unwrap()
            .unwrap();
        let env: Envelope<NodeReport> = wire::decode(&msg.payload, Kind::NodeReport).unwrap();
        if env.seq == seq {
            break env;
        }
    };
    agent.stop().await;
    let host = mine.body.host.as_ref().unwrap();
    assert_eq!(seen["kind"], "node_report");
    assert_eq!(seen["schema"], u64::from(mine.schema));
    assert_eq!(seen["node"], "py");
    assert_eq!(seen["cluster"], "c1");
    assert_eq!(seen["ts_ms"].as_i64().unwrap(), mine.ts_ms);
    assert_eq!(
        seen["memory_total_bytes"].as_u64().unwrap(),
        host.memory.total_bytes
    );
    assert_eq!(
        seen["cores"].as_u64().unwrap() as usize,
        host.cpu.per_core_pct.len()
    );
    assert_eq!(
        seen["interfaces"].as_array().unwrap().len(),
        host.nets.len()
    );
    assert_eq!(seen["interfaces"][0], host.nets[0].name.as_str());
    assert!((seen["cpu_total_pct"].as_f64().unwrap() - f64::from(host.cpu.total_pct)).abs() < 1e-3);
    assert_eq!(seen["agent_version"], mine.body.agent.version.as_str());
}
