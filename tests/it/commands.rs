//! Commands end to end: the real agent with a real supervised program, signed requests from the
//! test, `gridmon ctl` fan-out over the registry, re-adoption after `kill -9`, and a Python client.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use futures::StreamExt;
use gridmon_nats::command::{
    encode_request, AuditPhase, AuditRecord, CommandBody, CommandReply, Encoding, ErrorKind, Op,
    Target, ENCODING_HEADER,
};
use gridmon_nats::frame::now_ms;
use gridmon_nats::wire::{self, Envelope, Kind, ProgramState};
use gridmon_nats::NodeId;
use gridmon_tests::eventually;
use gridmon_tests::nats_server::NatsServer;

use crate::{start_agent, Agent, GRIDMON};

/// `[supervisor]`, one program `web` (a shell loop that never exits by itself), and `[commands]`
/// granting `alice` everything on every program.
fn supervised_toml(dir: &Path, alice: &str, extra_commands: &str) -> String {
    format!(
        "[supervisor]\ndir = {dir:?}\non_exit = \"leave\"\n\
         [programs.web]\ncommand = \"sh\"\nargs = [\"-c\", \"echo started; exec sleep 1000\"]\n\
         start_secs = \"200ms\"\nstop_grace = \"2s\"\n\
         [commands]\nregistry_every = \"200ms\"\noffline_after = 3\n{extra_commands}\n\
         [[commands.issuers]]\nname = \"alice\"\nkey = {alice:?}\nops = [\"*\"]\nprograms = [\"*\"]\n",
        dir = dir.join("sup"),
    )
}

fn me(node: &str) -> NodeId {
    NodeId::new("c1", "g1", node).unwrap()
}

fn body(op: Op, node: &str, issuer: &nkeys::KeyPair, program: Option<&str>) -> CommandBody {
    let mut b = CommandBody::new(
        op,
        Target::node(&me(node)),
        issuer.public_key(),
        now_ms(),
        30_000,
    );
    b.program = program.map(Into::into);
    b
}

async fn try_request(
    client: &async_nats::Client,
    node: &str,
    payload: Vec<u8>,
) -> Option<CommandReply> {
    let subject = format!("grid.cmd.c1.g1.{node}");
    let msg = tokio::time::timeout(
        Duration::from_secs(15),
        client.request(subject, payload.into()),
    )
    .await
    .ok()?
    .ok()?;
    let env: Envelope<CommandReply> = wire::decode(&msg.payload, Kind::CommandReply).unwrap();
    assert_eq!(env.source.node.as_deref(), Some(node));
    Some(env.body)
}

async fn request(client: &async_nats::Client, node: &str, payload: Vec<u8>) -> CommandReply {
    try_request(client, node, payload)
        .await
        .expect("a reply in time")
}

async fn signed(
    client: &async_nats::Client,
    node: &str,
    b: &CommandBody,
    key: &nkeys::KeyPair,
) -> CommandReply {
    request(
        client,
        node,
        encode_request(b, Some(key), Encoding::MsgPack).unwrap(),
    )
    .await
}

/// The `web` program's pid and restarts, once it is running.
async fn running_web(client: &async_nats::Client, node: &str, key: &nkeys::KeyPair) -> (u32, u32) {
    eventually(Duration::from_secs(20), "web running", || async {
        let b = body(Op::Status, node, key, Some("web"));
        let r = try_request(
            client,
            node,
            encode_request(&b, Some(key), Encoding::MsgPack).unwrap(),
        )
        .await?;
        let p = r.programs.first()?;
        (r.ok && p.state == ProgramState::Running).then_some((p.pid?, p.restarts))
    })
    .await
    .unwrap()
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

#[tokio::test]
async fn hostile_commands_are_denied_audited_and_nothing_runs() {
    let server = NatsServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let alice = nkeys::KeyPair::new_user();
    let mallory = nkeys::KeyPair::new_user();
    let client = async_nats::connect(server.url()).await.unwrap();
    let mut audit = client.subscribe("grid.audit.>").await.unwrap();
    client.flush().await.unwrap();
    let toml = supervised_toml(dir.path(), &alice.public_key(), "");
    let agent = start_agent(dir.path(), &server.url(), "sec", "", &toml);
    let (pid, restarts) = running_web(&client, "sec", &alice).await;

    // A valid restart, kept to be replayed later.
    let restart = body(Op::Restart, "sec", &alice, Some("web"));
    let replay_bytes = encode_request(&restart, Some(&alice), Encoding::MsgPack).unwrap();
    let r = request(&client, "sec", replay_bytes.clone()).await;
    assert!(r.ok, "{r:?}");
    let (pid, restarts) = {
        let (p2, r2) = running_web(&client, "sec", &alice).await;
        assert_ne!(p2, pid, "restart replaced the process");
        assert_eq!(r2, restarts, "a commanded restart is not a crash restart");
        (p2, r2)
    };

    let mut cases: Vec<(&str, Vec<u8>, ErrorKind)> = Vec::new();
    cases.push((
        "unsigned",
        encode_request(
            &body(Op::Restart, "sec", &alice, Some("web")),
            None,
            Encoding::MsgPack,
        )
        .unwrap(),
        ErrorKind::Denied,
    ));
    cases.push((
        "unknown key",
        encode_request(
            &body(Op::Restart, "sec", &mallory, Some("web")),
            Some(&mallory),
            Encoding::MsgPack,
        )
        .unwrap(),
        ErrorKind::Denied,
    ));
    cases.push((
        "wrong key",
        encode_request(
            &body(Op::Restart, "sec", &alice, Some("web")),
            Some(&mallory),
            Encoding::MsgPack,
        )
        .unwrap(),
        ErrorKind::Denied,
    ));
    {
        let mut b = encode_request(
            &body(Op::Restart, "sec", &alice, Some("web")),
            Some(&alice),
            Encoding::MsgPack,
        )
        .unwrap();
        // A bit in the middle of the signed body (the program name's last byte: "web" → "wec").
        let at = b.windows(3).position(|w| w == b"web").unwrap() + 2;
        b[at] ^= 0x01;
        cases.push(("bit flipped", b, ErrorKind::Denied));
    }
    {
        let mut b = body(Op::Restart, "sec", &alice, Some("web"));
        b.issued_ms = now_ms() - 120_000;
        b.expires_ms = b.issued_ms + 30_000;
        cases.push((
            "expired",
            encode_request(&b, Some(&alice), Encoding::MsgPack).unwrap(),
            ErrorKind::Denied,
        ));
    }
    cases.push(("replay", replay_bytes.clone(), ErrorKind::Denied));
    {
        let mut b = body(Op::Restart, "sec", &alice, Some("web"));
        b.target.node = Some("other".into());
        cases.push((
            "another node",
            encode_request(&b, Some(&alice), Encoding::MsgPack).unwrap(),
            ErrorKind::Denied,
        ));
    }
    cases.push((
        "unlisted program",
        encode_request(
            &body(Op::Restart, "sec", &alice, Some("db")),
            Some(&alice),
            Encoding::MsgPack,
        )
        .unwrap(),
        ErrorKind::UnknownProgram,
    ));
    cases.push((
        "shell metacharacters",
        encode_request(
            &body(
                Op::Restart,
                "sec",
                &alice,
                Some("web;touch /tmp/gridmon-pwned"),
            ),
            Some(&alice),
            Encoding::MsgPack,
        )
        .unwrap(),
        ErrorKind::Invalid,
    ));
    {
        let mut b = body(Op::Deploy, "sec", &alice, Some("web"));
        b.version = Some("1.0$(reboot)".into());
        cases.push((
            "metacharacters in a version",
            encode_request(&b, Some(&alice), Encoding::MsgPack).unwrap(),
            ErrorKind::Invalid,
        ));
    }
    cases.push(("garbage", b"\x93\x01\x02".to_vec(), ErrorKind::Invalid));

    for (name, bytes, kind) in &cases {
        let r = request(&client, "sec", bytes.clone()).await;
        assert!(!r.ok, "{name}: accepted: {r:?}");
        assert_eq!(r.error, Some(*kind), "{name}: {r:?}");
    }
    // Nothing ran: the same process, no restarts.
    let (p, n) = running_web(&client, "sec", &alice).await;
    assert_eq!(
        (p, n),
        (pid, restarts),
        "a refused command changed the program"
    );
    assert!(!Path::new("/tmp/gridmon-pwned").exists());

    // A replay across an agent restart is refused too (the program is left running: on_exit = leave).
    agent.stop().await;
    let agent = start_agent(dir.path(), &server.url(), "sec", "", &toml);
    let (p, _) = running_web(&client, "sec", &alice).await;
    assert_eq!(p, pid, "re-adopted after a clean agent restart");
    let r = request(&client, "sec", replay_bytes).await;
    assert_eq!(
        r.error,
        Some(ErrorKind::Denied),
        "replay after restart: {r:?}"
    );
    assert!(r.message.contains("replay"), "{}", r.message);

    // Every case was audited on the bus, denied, with nothing accepted for them.
    let mut denied = 0;
    let mut accepted = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while denied < cases.len() + 1 {
        let Ok(Some(msg)) = tokio::time::timeout_at(deadline, audit.next()).await else {
            break;
        };
        let env: Envelope<AuditRecord> = wire::decode(&msg.payload, Kind::Audit).unwrap();
        match env.body.phase {
            AuditPhase::Denied => {
                assert!(!env.body.ok);
                denied += 1;
            }
            AuditPhase::Accepted => accepted += 1,
            _ => {}
        }
    }
    assert_eq!(denied, cases.len() + 1, "denied audit records");
    // The accepted records are the status polls and the one real restart.
    assert!(accepted >= 1);
    let local = std::fs::read_to_string(dir.path().join("sup/audit.log")).unwrap();
    assert!(
        local
            .lines()
            .filter(|l| l.contains("\"phase\":\"denied\""))
            .count()
            > cases.len()
    );
    agent.stop().await;
    // on_exit = leave: the program outlives the agent; clean it up.
    // SAFETY: signals the program's own process group.
    unsafe {
        libc::kill(-(pid as i32), libc::SIGKILL);
    }
}

#[tokio::test]
async fn kill_9_agent_readopts_its_programs() {
    let server = NatsServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let alice = nkeys::KeyPair::new_user();
    let client = async_nats::connect(server.url()).await.unwrap();
    let toml = supervised_toml(dir.path(), &alice.public_key(), "");
    let mut agent = start_agent(dir.path(), &server.url(), "adopt", "", &toml);
    let (pid, _) = running_web(&client, "adopt", &alice).await;
    // kill -9 the agent only (programs are in their own process groups).
    agent.child.start_kill().unwrap();
    agent.child.wait().await.unwrap();
    assert!(alive(pid), "the program survives its agent");
    let agent = start_agent(dir.path(), &server.url(), "adopt", "", &toml);
    let (p, _) = running_web(&client, "adopt", &alice).await;
    assert_eq!(p, pid, "re-adopted, not started again");
    // Exactly one `sleep 1000` child of that program: no second copy.
    let copies = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            std::fs::read(e.path().join("cmdline"))
                .map(|c| c == b"sleep\x001000\x00")
                .unwrap_or(false)
        })
        .filter(|e| {
            // Only ours: in the program's process group.
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            let after = stat.rsplit(')').next().unwrap_or("");
            after.split_whitespace().nth(2) == Some(&pid.to_string())
        })
        .count();
    assert_eq!(copies, 1);
    // The adopted program is still supervised: a stop reaches it.
    let r = signed(
        &client,
        "adopt",
        &body(Op::Stop, "adopt", &alice, Some("web")),
        &alice,
    )
    .await;
    assert!(r.ok, "{r:?}");
    assert_eq!(r.programs[0].state, ProgramState::Stopped);
    eventually(Duration::from_secs(10), "program gone", || async {
        (!alive(pid)).then_some(())
    })
    .await
    .unwrap();
    agent.stop().await;
}

/// `gridmon ctl` with a key file and a config pointing at `url`.
fn ctl(dir: &Path, url: &str, key: &Path, args: &[&str]) -> tokio::process::Command {
    let config = dir.join("ctl.toml");
    std::fs::write(
        &config,
        format!(
            "[nats]\nservers = [{url:?}]\n[identity]\ncluster = \"ops\"\ngroup = \"ops\"\nnode = \"ctl\"\n\
             [commands]\nregistry_every = \"200ms\"\noffline_after = 3\ntimeout = \"2s\"\n"
        ),
    )
    .unwrap();
    let mut cmd = gridmon_commands::child::command(GRIDMON);
    cmd.arg("ctl")
        .arg("--config")
        .arg(&config)
        .args(args)
        .env("GRIDMON_KEY_FILE", key)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

#[tokio::test]
async fn fan_out_counts_answered_and_offline() {
    let server = NatsServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("alice.nk");
    let out = gridmon_commands::child::command(GRIDMON)
        .args(["keygen", "-o"])
        .arg(&key_file)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let public = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(public.starts_with('U'), "{public}");
    let commands = format!(
        "[commands]\nregistry_every = \"200ms\"\n[[commands.issuers]]\nname = \"alice\"\nkey = {public:?}\nops = [\"status\"]\nprograms = [\"*\"]\n[supervisor]\ndir = {:?}\n",
        dir.path().join("sup")
    );
    let mut agents: Vec<Agent> = Vec::new();
    for n in ["n1", "n2", "n3", "n4", "n5"] {
        let d = dir.path().join(n);
        std::fs::create_dir_all(&d).unwrap();
        let toml = commands.replace("/sup\"", &format!("/sup-{n}\""));
        agents.push(start_agent(&d, &server.url(), n, "", &toml));
    }
    // All five registered.
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    let group = Target {
        cluster: Some("c1".into()),
        group: Some("g1".into()),
        node: None,
    };
    eventually(Duration::from_secs(20), "5 registered", || async {
        let (e, _) = gridmon_nats::registry::load(&js, "gridmon-registry", &group)
            .await
            .ok()?;
        (e.len() == 5).then_some(())
    })
    .await
    .unwrap();
    // Two go away.
    for a in agents.drain(3..) {
        a.stop().await;
    }
    // Until their entries are older than offline_after (3) × registry_every (200 ms).
    eventually(Duration::from_secs(10), "2 entries stale", || async {
        let (e, _) = gridmon_nats::registry::load(&js, "gridmon-registry", &group)
            .await
            .ok()?;
        let stale = e.iter().filter(|e| now_ms() - e.seen_ms > 800).count();
        (stale == 2).then_some(())
    })
    .await
    .unwrap();

    let out = ctl(
        dir.path(),
        &server.url(),
        &key_file,
        &["status", "--group", "c1/g1", "--json"],
    )
    .output()
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success(),
        "two targets are offline: exit status must say so"
    );
    let v: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{e}: {text} {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(v["summary"]["targets"], 5, "{text}");
    assert_eq!(v["summary"]["answered"], 3, "{text}");
    assert_eq!(v["summary"]["ok"], 3, "{text}");
    assert_eq!(v["summary"]["offline"], 2, "{text}");
    assert_eq!(v["summary"]["no_answer"], 0, "{text}");
    let offline: Vec<&str> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["outcome"] == "offline")
        .map(|r| r["node"].as_str().unwrap())
        .collect();
    assert_eq!(offline, ["c1/g1/n4", "c1/g1/n5"]);

    // One node alone, human output, success.
    let out = ctl(
        dir.path(),
        &server.url(),
        &key_file,
        &["status", "--node", "c1/g1/n2"],
    )
    .output()
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("1 answered (1 ok"), "{text}");
    // Not granted: restart is denied, and ctl says so with a failing exit status.
    let out = ctl(
        dir.path(),
        &server.url(),
        &key_file,
        &["restart", "web", "--node", "c1/g1/n2"],
    )
    .output()
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(text.contains("failed") && text.contains("denied"), "{text}");

    // Rolling, one node per batch: the first batch fails (restart is not granted), so ctl halts
    // and the rest are skipped; with --continue-on-failure every batch is tried.
    let rolling = |extra: &'static [&'static str]| {
        let mut args = vec![
            "restart", "web", "--group", "c1/g1", "--batch", "1", "--json",
        ];
        args.extend_from_slice(extra);
        let dir = dir.path().to_path_buf();
        let (url, key_file) = (server.url(), key_file.clone());
        async move {
            let out = ctl(&dir, &url, &key_file, &args).output().await.unwrap();
            assert!(!out.status.success());
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            v["summary"].clone()
        }
    };
    let s = rolling(&[]).await;
    assert_eq!(
        (s["failed"].as_u64(), s["skipped"].as_u64()),
        (Some(1), Some(4)),
        "{s}"
    );
    let s = rolling(&["--continue-on-failure"]).await;
    assert_eq!(
        (
            s["failed"].as_u64(),
            s["offline"].as_u64(),
            s["skipped"].as_u64()
        ),
        (Some(3), Some(2), Some(0)),
        "{s}"
    );
    for a in agents {
        a.stop().await;
    }
}

#[tokio::test]
async fn python_calls_status_in_msgpack_and_json() {
    let server = NatsServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let alice = nkeys::KeyPair::new_user();
    let toml = supervised_toml(
        dir.path(),
        &alice.public_key(),
        "allow_unsigned_read = true",
    );
    let client = async_nats::connect(server.url()).await.unwrap();
    let agent = start_agent(dir.path(), &server.url(), "py", "", &toml);
    let (pid, _) = running_web(&client, "py", &alice).await;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/it/scripts/ctl_status.py"
    );
    for enc in ["msgpack", "json"] {
        let out = gridmon_commands::child::command("python3")
            .arg(script)
            .arg(server.url())
            .arg("grid.cmd.c1.g1.py")
            .arg(enc)
            .output()
            .await
            .expect(gridmon_tests::SETUP_HINT);
        assert!(
            out.status.success(),
            "python ({enc}) failed: {} {}",
            String::from_utf8_lossy(&out.stderr),
            gridmon_tests::SETUP_HINT
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["ok"], true, "{v}");
        assert_eq!(v["programs"][0]["name"], "web", "{v}");
        assert_eq!(v["programs"][0]["state"], "running", "{v}");
        assert_eq!(v["programs"][0]["pid"], pid, "{v}");
    }
    // A mutating command without a signature is refused, whatever the encoding.
    let mut b = body(Op::Stop, "py", &alice, Some("web"));
    b.issuer = "script".into();
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(ENCODING_HEADER, "json");
    let msg = client
        .request_with_headers(
            "grid.cmd.c1.g1.py",
            headers,
            encode_request(&b, None, Encoding::Json).unwrap().into(),
        )
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&msg.payload).unwrap();
    assert_eq!(v["body"]["ok"], false);
    assert_eq!(v["body"]["error"], "denied");
    agent.stop().await;
    // SAFETY: signals the program's own process group.
    unsafe {
        libc::kill(-(pid as i32), libc::SIGKILL);
    }
}

#[tokio::test]
async fn agent_sigterm_drains_programs_and_publishes_their_stop() {
    let server = NatsServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let alice = nkeys::KeyPair::new_user();
    let client = async_nats::connect(server.url()).await.unwrap();
    let mut events = client.subscribe("grid.event.c1.g1.drain").await.unwrap();
    client.flush().await.unwrap();
    // on_exit = "stop" (the default): the agent stops its programs on the way out.
    let toml =
        supervised_toml(dir.path(), &alice.public_key(), "").replace("on_exit = \"leave\"\n", "");
    let agent = start_agent(dir.path(), &server.url(), "drain", "", &toml);
    let (pid, _) = running_web(&client, "drain", &alice).await;
    agent.stop().await;
    assert!(!alive(pid), "drained with the agent");
    let mut seen = Vec::new();
    while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_secs(5), events.next()).await {
        let env: Envelope<gridmon_nats::wire::ProgramEvent> =
            wire::decode(&msg.payload, Kind::ProgramEvent).unwrap();
        seen.push(env.body.to);
        if env.body.to == ProgramState::Stopped {
            break;
        }
    }
    assert_eq!(
        seen.last(),
        Some(&ProgramState::Stopped),
        "the drain's stop event reached the bus before the agent exited: {seen:?}"
    );
}
