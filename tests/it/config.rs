//! A bad config or command line is a clear error naming the problem, with exit status 2.

use std::process::Stdio;

use crate::GRIDMON;

async fn run(args: &[&str], toml_text: Option<&str>) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = gridmon_commands::child::command(GRIDMON);
    cmd.args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .env_remove("GRIDMON_CONFIG")
        .env_remove("NATS_URL");
    if let Some(t) = toml_text {
        let p = dir.path().join("bad.toml");
        std::fs::write(&p, t).unwrap();
        cmd.arg("--config").arg(p);
    }
    let out = tokio::time::timeout(std::time::Duration::from_secs(20), cmd.output())
        .await
        .unwrap()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn check(args: &[&str], toml_text: Option<&str>, mentions: &str) {
    let (code, err) = run(args, toml_text).await;
    assert_eq!(code, 2, "{args:?} {toml_text:?}: {err}");
    assert!(
        err.contains(mentions),
        "stderr should mention {mentions:?}: {err}"
    );
}

#[tokio::test]
async fn bad_configs_exit_2_naming_the_problem() {
    check(
        &["agent"],
        Some("[identity]\ncluster = \"eu.west\""),
        "identity.cluster",
    )
    .await;
    check(
        &["agent"],
        Some("[identity]\ngroup = \"event\""),
        "reserved",
    )
    .await;
    check(
        &["agent"],
        Some("[nats]\nservers = [\"http://x\"]"),
        "nats.servers",
    )
    .await;
    check(&["agent"], Some("[agent]\nintervall = \"1s\""), "intervall").await;
    check(&["agent"], Some("not toml at all ["), "config file").await;
    check(
        &["agent"],
        Some("[agent]\ninterval = \"5ms\""),
        "agent.interval",
    )
    .await;
    check(&["agent", "--node", "a b"], None, "identity.node").await;
    check(&["agent", "--cluster", "cmd"], None, "identity.cluster").await;
    check(&["agent", "--prefix", "g>"], None, "nats.prefix").await;
    check(&["agent", "--interval", "soon"], None, "--interval").await;
    check(
        &["agent", "--config", "/nonexistent/gridmon.toml"],
        None,
        "/nonexistent/gridmon.toml",
    )
    .await;
    check(&["frobnicate"], None, "frobnicate").await;
}
