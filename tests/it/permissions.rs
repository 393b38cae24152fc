//! The NATS permissions example of `docs/security.md` works: an agent restricted to its own
//! subjects reports, registers and answers commands; an operator restricted to commands and its
//! own inbox drives it with `gridmon ctl`; neither can act for another node.

use std::process::Stdio;
use std::time::Duration;

use futures::StreamExt;
use gridmon_tests::eventually;
use gridmon_tests::nats_server::{NatsOptions, NatsServer};

use crate::{start_agent, GRIDMON};

/// The users of `docs/security.md`, for node `c1/g1/web-01` and operator `alice`.
const USERS: &str = r#"
authorization {
  users = [
    { user: "web-01", password: "agent-pw",
      permissions: {
        publish: {
          allow: [
            "grid.c1.g1.web-01",
            "grid.inventory.c1.g1.web-01",
            "grid.event.c1.g1.web-01",
            "grid.audit.c1.g1.web-01",
            "$KV.gridmon-registry.c1.g1.web-01",
            "$JS.API.INFO", "$JS.API.STREAM.NAMES",
            "$JS.API.STREAM.INFO.KV_gridmon-registry",
            "$JS.API.STREAM.CREATE.KV_gridmon-registry",
            "$JS.API.STREAM.INFO.OBJ_gridmon-releases",
            "$JS.API.CONSUMER.CREATE.OBJ_gridmon-releases", "$JS.API.CONSUMER.CREATE.OBJ_gridmon-releases.>",
            "$JS.API.STREAM.MSG.GET.OBJ_gridmon-releases", "$JS.API.DIRECT.GET.OBJ_gridmon-releases.>"
          ]
        }
        subscribe: {
          allow: [ "grid.cmd.c1", "grid.cmd.c1.g1", "grid.cmd.c1.g1.web-01", "_INBOX.web-01.>" ]
        }
        allow_responses: true
      }
    }
    { user: "alice", password: "alice-pw",
      permissions: {
        publish: { allow: [ "grid.cmd.>", "$JS.API.STREAM.INFO.KV_gridmon-registry",
                            "$JS.API.STREAM.MSG.GET.KV_gridmon-registry" ] }
        subscribe: { allow: [ "_INBOX.alice.>", "grid", "grid.>" ] }
      }
    }
    { user: "observer", password: "observer-pw" }
  ]
}
"#;

#[tokio::test]
async fn the_documented_permissions_are_enough_and_keep_nodes_apart() {
    let server = NatsServer::start_with(NatsOptions {
        extra_config: USERS.into(),
        ..Default::default()
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("alice.nk");
    let out = gridmon_commands::child::command(GRIDMON)
        .args(["keygen", "-o"])
        .arg(&key_file)
        .output()
        .await
        .unwrap();
    let public = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let url = server.url();
    let observer =
        async_nats::ConnectOptions::with_user_and_password("observer".into(), "observer-pw".into())
            .connect(&url)
            .await
            .unwrap();
    let mut reports = observer.subscribe("grid.c1.g1.>").await.unwrap();
    observer.flush().await.unwrap();

    let agent = start_agent(
        dir.path(),
        &url,
        "web-01",
        "user = \"web-01\"\npassword = \"agent-pw\"\ninbox_prefix = \"_INBOX.web-01\"",
        &format!(
            "[supervisor]\ndir = {:?}\n[commands]\nregistry_every = \"200ms\"\n\
             [[commands.issuers]]\nname = \"alice\"\nkey = {public:?}\nops = [\"status\"]\nprograms = [\"*\"]\n",
            dir.path().join("sup")
        ),
    );
    // Its reports get through.
    let first = tokio::time::timeout(Duration::from_secs(20), reports.next())
        .await
        .expect("a report within 20 s")
        .unwrap();
    assert_eq!(first.subject.as_str(), "grid.c1.g1.web-01");

    // alice, with her own inbox prefix, reads the registry and gets an answer.
    let config = dir.path().join("alice.toml");
    std::fs::write(
        &config,
        format!(
            "[nats]\nservers = [{url:?}]\nuser = \"alice\"\npassword = \"alice-pw\"\ninbox_prefix = \"_INBOX.alice\"\n\
             [commands]\ntimeout = \"3s\"\n"
        ),
    )
    .unwrap();
    let out = eventually(Duration::from_secs(20), "ctl status answered", || async {
        let out = gridmon_commands::child::command(GRIDMON)
            .args(["ctl", "status", "--group", "c1/g1", "--json", "--config"])
            .arg(&config)
            .env("GRIDMON_KEY_FILE", &key_file)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .await
            .ok()?;
        out.status.success().then_some(out)
    })
    .await
    .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["summary"]["ok"], 1, "{v}");

    // The agent's credentials cannot speak for another node, nor hear its commands.
    let web01 =
        async_nats::ConnectOptions::with_user_and_password("web-01".into(), "agent-pw".into())
            .connect(&url)
            .await
            .unwrap();
    let mut forged = observer.subscribe("grid.c1.g1.db-01").await.unwrap();
    observer.flush().await.unwrap();
    web01
        .publish("grid.c1.g1.db-01", "forged".into())
        .await
        .unwrap();
    web01.flush().await.unwrap();
    let mut other_cmds = web01.subscribe("grid.cmd.c1.g1.db-01").await.unwrap();
    let _ = web01.flush().await;
    observer
        .publish("grid.cmd.c1.g1.db-01", "for db-01 only".into())
        .await
        .unwrap();
    observer.flush().await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(500), forged.next())
            .await
            .is_err(),
        "a forged report went through"
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(500), other_cmds.next())
            .await
            .map(|m| m.is_none())
            .unwrap_or(true),
        "another node's command was delivered"
    );
    agent.stop().await;
}
