//! `gridmon simulate --commands`: simulated nodes register and answer `gridmon ctl` like agents,
//! with the signatures checked for real.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use gridmon_tests::eventually;
use gridmon_tests::nats_server::NatsServer;

use crate::GRIDMON;

/// A new operator key in `path`; its public key.
async fn keygen(path: &Path) -> String {
    let out = gridmon_commands::child::command(GRIDMON)
        .args(["keygen", "-o"])
        .arg(path)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Runs `gridmon ctl --json` with `key`; the exit status and the parsed output, or the error text
/// when there is no JSON (no registry yet).
async fn try_ctl(
    config: &Path,
    key: &Path,
    args: &[&str],
) -> Result<(bool, serde_json::Value), String> {
    let out = gridmon_commands::child::command(GRIDMON)
        .arg("ctl")
        .arg("--config")
        .arg(config)
        .args(args)
        .arg("--json")
        .env("GRIDMON_KEY_FILE", key)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    match serde_json::from_str(&text) {
        Ok(v) => Ok((out.status.success(), v)),
        Err(e) => Err(format!(
            "{e}: {text} {}",
            String::from_utf8_lossy(&out.stderr).trim_end()
        )),
    }
}

async fn ctl(config: &Path, key: &Path, args: &[&str]) -> (bool, serde_json::Value) {
    try_ctl(config, key, args).await.unwrap()
}

#[tokio::test]
async fn simulated_nodes_answer_signed_commands_and_deny_a_wrong_key() {
    let server = NatsServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let alice_key = dir.path().join("alice.nk");
    let mallory_key = dir.path().join("mallory.nk");
    let alice = keygen(&alice_key).await;
    keygen(&mallory_key).await;
    let url = server.url();
    let config = dir.path().join("sim.toml");
    std::fs::write(
        &config,
        format!(
            "[nats]\nservers = [{url:?}]\n\
             [commands]\nregistry_every = \"200ms\"\noffline_after = 5\ntimeout = \"3s\"\n\
             [[commands.issuers]]\nname = \"alice\"\nkey = {alice:?}\nops = [\"status\", \"restart\"]\nprograms = [\"*\"]\n"
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.path().join("simulate.log")).unwrap();
    // Four nodes: c01/g01 holds n0001 and n0003.
    let _sim = gridmon_commands::child::command(GRIDMON)
        .arg("simulate")
        .arg("--config")
        .arg(&config)
        .args(["--nodes", "4", "--groups", "2", "--processes", "5"])
        .args(["--programs", "2", "--commands", "--log", "info"])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();

    let v = eventually(Duration::from_secs(30), "c01/g01 answers", || async {
        let (ok, v) = try_ctl(&config, &alice_key, &["status", "--group", "c01/g01"])
            .await
            .ok()?;
        (ok && v["summary"]["ok"] == 2).then_some(v)
    })
    .await
    .unwrap_or_else(|e| {
        panic!(
            "{e}\n{}",
            std::fs::read_to_string(dir.path().join("simulate.log")).unwrap_or_default()
        )
    });
    assert_eq!(v["summary"]["targets"], 2, "{v}");
    let results = v["results"].as_array().unwrap();
    let nodes: Vec<&str> = results
        .iter()
        .map(|r| r["node"].as_str().unwrap())
        .collect();
    assert_eq!(nodes, ["c01/g01/n0001", "c01/g01/n0003"]);
    for r in results {
        let programs: Vec<(&str, &str)> = r["programs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p["name"].as_str().unwrap(), p["state"].as_str().unwrap()))
            .collect();
        assert_eq!(
            programs,
            [("worker-1", "running"), ("worker-2", "running")],
            "{r}"
        );
        assert_eq!(r["reply"]["op"], "status", "{r}");
    }

    // A key no node trusts: every node answers, and denies.
    let (ok, v) = ctl(&config, &mallory_key, &["status", "--group", "c01/g01"]).await;
    assert!(!ok, "{v}");
    assert_eq!(v["summary"]["answered"], 2, "{v}");
    assert_eq!(v["summary"]["failed"], 2, "{v}");
    for r in v["results"].as_array().unwrap() {
        assert_eq!(r["error"], "denied", "{r}");
        assert!(
            r["message"].as_str().unwrap().contains("unknown issuer"),
            "{r}"
        );
    }

    // Mutating: accepted by the checks, then refused by the simulated node.
    let (ok, v) = ctl(
        &config,
        &alice_key,
        &["restart", "worker-1", "--node", "c01/g02/n0002"],
    )
    .await;
    assert!(!ok, "{v}");
    let r = &v["results"][0];
    assert_eq!(r["error"], "failed", "{r}");
    assert_eq!(r["message"], "simulated node", "{r}");
}
