//! Deploys, upgrades with automatic rollback, drains, logs and crash loops end to end: releases
//! pushed with `gridmon release push`, commands sent with `gridmon ctl`, a real agent supervising
//! real processes, and its program events watched on the bus.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use gridmon_nats::wire::{self, Kind, ProgramEvent, ProgramState};
use gridmon_tests::eventually;
use gridmon_tests::nats_server::NatsServer;
use serde_json::Value;

use crate::{start_agent, Agent, GRIDMON};

/// One test's world: a nats-server, a temp dir, an operator key granted everything, and the
/// config `gridmon ctl` and `gridmon release` use.
struct World {
    server: NatsServer,
    dir: tempfile::TempDir,
    key_file: PathBuf,
    public: String,
    cli_config: PathBuf,
}

impl World {
    fn new() -> Self {
        let server = NatsServer::start().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let key = nkeys::KeyPair::new_user();
        let key_file = dir.path().join("alice.nk");
        std::fs::write(&key_file, format!("{}\n", key.seed().unwrap())).unwrap();
        let cli_config = dir.path().join("cli.toml");
        std::fs::write(
            &cli_config,
            format!(
                "[nats]\nservers = [{:?}]\n[identity]\ncluster = \"ops\"\ngroup = \"ops\"\nnode = \"ctl\"\n\
                 [commands]\ntimeout = \"5s\"\n",
                server.url()
            ),
        )
        .unwrap();
        Self {
            server,
            dir,
            key_file,
            public: key.public_key(),
            cli_config,
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn sup(&self) -> PathBuf {
        self.path().join("sup")
    }

    /// `[supervisor]` (with `supervisor_extra` lines), the programs, and `[commands]` granting
    /// the operator every op on every program.
    ///
    /// The registry refresh keeps its default (10 s), so the agent writes its entry once per
    /// test: `registry::load` can keep reading while the one key it filters on is rewritten
    /// faster than it drains it, and then `gridmon ctl` never gets to send its command.
    fn agent_toml(&self, supervisor_extra: &str, programs: &str) -> String {
        format!(
            "[supervisor]\ndir = {:?}\n{supervisor_extra}\n{programs}\n\
             [commands]\n\
             [[commands.issuers]]\nname = \"alice\"\nkey = {:?}\nops = [\"*\"]\nprograms = [\"*\"]\n",
            self.sup(),
            self.public,
        )
    }

    fn start(&self, node: &str, toml: &str) -> Agent {
        start_agent(self.path(), &self.server.url(), node, "", toml)
    }

    fn agent_log(&self, node: &str) -> String {
        std::fs::read_to_string(self.path().join(format!("{node}.log"))).unwrap_or_default()
    }

    /// `gridmon ctl ARGS --json`: whether it exited 0, and the report.
    async fn ctl(&self, args: &[&str]) -> (bool, Value) {
        // stderr goes to a file so that a hung ctl can still be diagnosed.
        let log = self.path().join("ctl.log");
        let stderr = std::fs::File::create(&log).unwrap();
        let child = gridmon_commands::child::command(GRIDMON)
            .arg("ctl")
            .arg("--config")
            .arg(&self.cli_config)
            .args(args)
            .arg("--json")
            .env("GRIDMON_KEY_FILE", &self.key_file)
            .env_remove("GRIDMON_CONFIG")
            .env("GRIDMON_LOG", "debug")
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let pid = child.id().unwrap();
        let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output()).await;
        let stderr = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<&str> = stderr.lines().collect();
        let stderr = lines[lines.len().saturating_sub(30)..].join("\n");
        let out = out
            .unwrap_or_else(|_| {
                let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
                    .unwrap_or_default();
                let wchan = std::fs::read_to_string(format!("/proc/{pid}/wchan"))
                    .unwrap_or_default();
                let stack = std::fs::read_to_string(format!("/proc/{pid}/stack"))
                    .unwrap_or_default();
                panic!("ctl {args:?} (pid {pid}) did not finish within 30 s:\n{status}\nwchan {wchan}\n{stack}\nlog: {stderr}")
            })
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let v: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("ctl {args:?}: {e}: {text} {stderr}"));
        (out.status.success(), v)
    }

    /// `ctl` against one node, expecting its single result; returns (exit ok, that result).
    async fn ctl_node(&self, node: &str, args: &[&str]) -> (bool, Value) {
        let target = format!("c1/g1/{node}");
        let mut all = args.to_vec();
        all.extend(["--node", &target]);
        let (ok, v) = self.ctl(&all).await;
        assert_eq!(v["results"].as_array().map(Vec::len), Some(1), "{v}");
        (ok, v["results"][0].clone())
    }

    /// Waits until `ctl status` answers and `pred` holds for the named program's status.
    async fn wait_program(
        &self,
        node: &str,
        program: &str,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let found = eventually(Duration::from_secs(20), what, || async {
            let (ok, r) = self.ctl_node(node, &["status", program]).await;
            let p = r["programs"].get(0)?.clone();
            (ok && pred(&p)).then_some(p)
        })
        .await;
        match found {
            Ok(p) => p,
            Err(e) => panic!("{e}\nagent log:\n{}", self.agent_log(node)),
        }
    }

    /// `gridmon release push PROGRAM VERSION FILE`.
    async fn push(&self, program: &str, version: &str, file: &Path) {
        let out = gridmon_commands::child::command(GRIDMON)
            .arg("release")
            .arg("--config")
            .arg(&self.cli_config)
            .args(["push", program, version])
            .arg(file)
            .env_remove("GRIDMON_CONFIG")
            .env("GRIDMON_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "push {program} {version}: {} {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for World {
    /// After a failed assertion the agent is SIGKILLed (kill-on-drop) without draining, and its
    /// programs, each in its own process group, would outlive the test: end them here.
    fn drop(&mut self) {
        for (pid, _) in processes_under(self.path()) {
            if let Ok(pid) = libc::pid_t::try_from(pid) {
                // SAFETY: a process started under this test's own temp dir.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
    }
}

/// Program events of one node, collected from the bus as they come.
struct Events {
    seen: Arc<Mutex<Vec<ProgramEvent>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Events {
    /// Subscribes (and flushes, so nothing published after this returns is missed).
    async fn watch(url: &str, node: &str) -> Self {
        let client = async_nats::connect(url).await.unwrap();
        let mut sub = client
            .subscribe(format!("grid.event.c1.g1.{node}"))
            .await
            .unwrap();
        client.flush().await.unwrap();
        let seen: Arc<Mutex<Vec<ProgramEvent>>> = Arc::default();
        let sink = seen.clone();
        let task = tokio::spawn(async move {
            let _client = client;
            while let Some(msg) = sub.next().await {
                let env = wire::decode::<ProgramEvent>(&msg.payload, Kind::ProgramEvent)
                    .expect("a program event");
                sink.lock().unwrap().push(env.body);
            }
        });
        Self { seen, task }
    }

    fn all(&self) -> Vec<ProgramEvent> {
        self.seen.lock().unwrap().clone()
    }

    /// Waits for an event matching `pred` and returns it.
    async fn wait(&self, what: &str, pred: impl Fn(&ProgramEvent) -> bool) -> ProgramEvent {
        let found = eventually(Duration::from_secs(20), what, || async {
            self.all().into_iter().find(&pred)
        })
        .await;
        found.unwrap_or_else(|e| panic!("{e}; events so far: {:#?}", self.all()))
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
}

fn pid_of(p: &Value) -> u32 {
    p["pid"].as_u64().expect("a pid") as u32
}

fn cwd_of(pid: u32) -> PathBuf {
    std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap()
}

/// Live processes whose working directory lies under `root`: every supervised program here runs
/// in the supervisor dir or in a release tree, so after a drain this must be empty.
fn processes_under(root: &Path) -> Vec<(u32, PathBuf)> {
    let Ok(root) = root.canonicalize() else {
        return Vec::new();
    };
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| alive(*pid))
        .filter_map(|pid| {
            let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).ok()?;
            cwd.starts_with(&root).then_some((pid, cwd))
        })
        .collect()
}

/// Stops the agent (SIGTERM: with `on_exit = stop` it drains) and checks nothing it ran is left.
async fn stop_and_check_clean(world: &World, agent: Agent) {
    agent.stop().await;
    eventually(Duration::from_secs(10), "no program left", || async {
        processes_under(world.path()).is_empty().then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}: {:?}", processes_under(world.path())));
}

/// Writes an executable shell script.
fn script(path: &Path, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A release tree (`bin/run`, `bin/health`) packed with the system `tar` as `<name>.tar.gz`.
async fn release_artifact(dir: &Path, name: &str, health: &str) -> PathBuf {
    let tree = dir.join(format!("tree-{name}"));
    script(
        &tree.join("bin/run"),
        &format!("echo {name} started\nexec sleep 1000"),
    );
    script(&tree.join("bin/health"), health);
    let file = dir.join(format!("{name}.tar.gz"));
    let out = gridmon_commands::child::command("tar")
        .arg("czf")
        .arg(&file)
        .arg("-C")
        .arg(&tree)
        .arg(".")
        .output()
        .await
        .expect("the system tar");
    assert!(
        out.status.success(),
        "tar: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    file
}

#[tokio::test]
async fn deploy_upgrade_rolls_back_on_failed_health() {
    let w = World::new();
    let node = "dep";
    let events = Events::watch(&w.server.url(), node).await;
    // v3's health check fails until the test creates this file: the upgrade to v3 must roll back,
    // and later an operator "fixes the environment" so v3 can be rolled to by hand.
    let v3_fixed = w.path().join("v3-fixed");
    let v2 = release_artifact(w.path(), "v2", "exit 0").await;
    let v3 = release_artifact(w.path(), "v3", &format!("test -e {v3_fixed:?}")).await;
    w.push("web", "v2", &v2).await;
    w.push("web", "v3", &v3).await;

    let programs_dir = w.sup().join("programs/web");
    // Exec checks run in the agent's working directory: point at the active tree absolutely.
    let health = programs_dir.join("current/bin/health");
    // The default `autostart = true` is kept on purpose: a release-managed program with nothing
    // installed does not fail or crash-loop, it rests in `stopped` ("no release installed")
    // until the first deploy.
    let programs = format!(
        "[programs.web]\ncommand = \"bin/run\"\nstart_secs = \"300ms\"\nstop_grace = \"2s\"\n\
         backoff = {{ initial = \"200ms\", max = \"1s\" }}\n\
         [programs.web.release]\nkeep = 3\nupgrade_window = \"3s\"\n\
         [[programs.web.health]]\nkind = \"exec\"\ncommand = {health:?}\n\
         interval = \"300ms\"\ntimeout = \"250ms\"\nfailures = 1\n"
    );
    let agent = w.start(node, &w.agent_toml("", &programs));

    let p = w
        .wait_program(node, "web", "web stopped, nothing installed", |p| {
            p["state"] == "stopped"
        })
        .await;
    assert!(p["detail"].as_str().unwrap().contains("no release"), "{p}");
    assert!(p.get("version").is_none_or(Value::is_null), "{p}");

    // Deploy v2.
    let (ok, r) = w
        .ctl_node(node, &["deploy", "web", "--version", "v2"])
        .await;
    assert!(ok, "{r}\n{}", w.agent_log(node));
    assert_eq!(r["outcome"], "ok", "{r}");
    let p = &r["programs"][0];
    assert_eq!(p["version"], "v2", "{r}");
    assert_eq!(p["state"], "running", "{r}");
    let pid_v2 = pid_of(p);
    let v2_dir = programs_dir.join("releases/v2").canonicalize().unwrap();
    assert_eq!(cwd_of(pid_v2), v2_dir, "runs from the v2 tree");
    assert_eq!(
        std::fs::read(format!("/proc/{pid_v2}/cmdline")).unwrap(),
        b"sleep\x001000\x00",
        "bin/run exec'd its payload"
    );

    // Upgrade to v3: its health fails, so v2 comes back and the command fails.
    let (ok, r) = w
        .ctl_node(node, &["upgrade", "web", "--version", "v3"])
        .await;
    assert!(!ok, "a rolled-back upgrade must fail the exit status: {r}");
    assert_eq!(r["outcome"], "failed", "{r}");
    assert_eq!(r["error"], "failed", "{r}");
    let msg = r["message"].as_str().unwrap();
    assert!(
        msg.contains("upgrade to v3 failed") && msg.contains("rolled back to v2"),
        "{msg}"
    );
    assert_eq!(r["programs"][0]["version"], "v2", "{r}");
    assert!(
        !alive(pid_v2),
        "the v2 process was replaced for the upgrade"
    );
    let p = w
        .wait_program(node, "web", "v2 running again", |p| {
            p["state"] == "running" && p["version"] == "v2"
        })
        .await;
    let pid_back = pid_of(&p);
    assert_ne!(pid_back, pid_v2);
    assert_eq!(
        cwd_of(pid_back),
        v2_dir,
        "the rollback runs from the v2 tree"
    );
    let ev = events
        .wait("a rollback event", |e| {
            e.program == "web" && e.reason.contains("rollback")
        })
        .await;
    assert!(ev.alarm, "an automatic rollback raises an alarm: {ev:?}");
    assert_eq!(ev.to, ProgramState::Deploying, "{ev:?}");
    // It is about the v3 process that failed its health check.
    assert_eq!(ev.version.as_deref(), Some("v3"), "{ev:?}");
    let pid_v3 = ev.pid.expect("the failed process's pid");
    assert!(pid_v3 != pid_v2 && pid_v3 != pid_back, "{ev:?}");
    assert!(!alive(pid_v3), "the failed v3 process is gone");

    // Both releases are installed; v2 is current.
    let (ok, r) = w.ctl_node(node, &["list"]).await;
    assert!(ok, "{r}");
    let mut releases: Vec<(String, String, bool)> = r["reply"]["releases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["program"].as_str().unwrap().to_string(),
                l["version"].as_str().unwrap().to_string(),
                l["current"].as_bool().unwrap(),
            )
        })
        .collect();
    releases.sort();
    assert_eq!(
        releases,
        [
            ("web".to_string(), "v2".to_string(), true),
            ("web".to_string(), "v3".to_string(), false)
        ],
        "{r}"
    );

    // `rollback` activates `previous`. The automatic rollback made v3 (the release it left) the
    // previous one (docs/releases.md: rolling back makes the rolled-back version the new
    // previous), so a plain rollback now goes to v3 — ungated. With its environment fixed, v3
    // runs healthy; a second rollback toggles back to v2.
    std::fs::write(&v3_fixed, b"").unwrap();
    let (ok, r) = w.ctl_node(node, &["rollback", "web"]).await;
    assert!(ok, "{r}\n{}", w.agent_log(node));
    assert_eq!(r["programs"][0]["version"], "v3", "{r}");
    assert_eq!(r["programs"][0]["state"], "running", "{r}");
    let pid_v3 = pid_of(&r["programs"][0]);
    assert_eq!(
        cwd_of(pid_v3),
        programs_dir.join("releases/v3").canonicalize().unwrap()
    );
    let (ok, r) = w.ctl_node(node, &["rollback", "web"]).await;
    assert!(ok, "{r}");
    assert_eq!(r["programs"][0]["version"], "v2", "{r}");
    let pid_v2 = pid_of(&r["programs"][0]);
    assert_eq!(cwd_of(pid_v2), v2_dir);
    // To a release that is not installed: refused, nothing changes.
    let (ok, r) = w
        .ctl_node(node, &["rollback", "web", "--version", "v9"])
        .await;
    assert!(!ok, "{r}");
    assert_eq!(r["error"], "invalid", "{r}");
    let p = w
        .wait_program(node, "web", "still v2", |p| p["state"] == "running")
        .await;
    assert_eq!((pid_of(&p), p["version"].clone()), (pid_v2, "v2".into()));

    stop_and_check_clean(&w, agent).await;
    assert!(!alive(pid_v2));
}

#[tokio::test]
async fn shutdown_drains_in_shutdown_order() {
    let w = World::new();
    let node = "drain";
    let events = Events::watch(&w.server.url(), node).await;
    let mut programs = String::new();
    for name in ["a", "b", "c"] {
        programs.push_str(&format!(
            "[programs.{name}]\ncommand = \"sh\"\nargs = [\"-c\", \"exec sleep 1000\"]\n\
             start_secs = \"200ms\"\nstop_grace = \"2s\"\n"
        ));
    }
    let agent = w.start(
        node,
        &w.agent_toml("shutdown_order = [\"b\", \"a\"]", &programs),
    );
    let mut pids = Vec::new();
    for name in ["a", "b", "c"] {
        let p = w
            .wait_program(node, name, "running", |p| p["state"] == "running")
            .await;
        pids.push(pid_of(&p));
    }

    let (ok, r) = w.ctl_node(node, &["shutdown"]).await;
    assert!(ok, "{r}\n{}", w.agent_log(node));
    let states: Vec<(&str, &str)> = r["programs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap(), p["state"].as_str().unwrap()))
        .collect();
    // `shutdown_order` first, then the rest in reverse name order.
    assert_eq!(
        states,
        [("b", "stopped"), ("a", "stopped"), ("c", "stopped")],
        "{r}"
    );
    for pid in &pids {
        assert!(!alive(*pid), "pid {pid} survived the drain");
    }
    assert!(
        processes_under(w.path()).is_empty(),
        "{:?}",
        processes_under(w.path())
    );

    // The events tell the same order, one program at a time.
    let expected = [
        ("b", ProgramState::Stopping),
        ("b", ProgramState::Stopped),
        ("a", ProgramState::Stopping),
        ("a", ProgramState::Stopped),
        ("c", ProgramState::Stopping),
        ("c", ProgramState::Stopped),
    ];
    let order = |all: Vec<ProgramEvent>| -> Vec<(String, ProgramState)> {
        all.into_iter()
            .filter(|e| matches!(e.to, ProgramState::Stopping | ProgramState::Stopped))
            .map(|e| (e.program, e.to))
            .collect()
    };
    let got = eventually(Duration::from_secs(10), "six drain events", || async {
        let got = order(events.all());
        (got.len() >= expected.len()).then_some(got)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}: {:#?}", events.all()));
    let expected: Vec<(String, ProgramState)> =
        expected.iter().map(|(n, s)| (n.to_string(), *s)).collect();
    assert_eq!(got, expected);

    // Drained programs stay stopped.
    let (ok, r) = w.ctl_node(node, &["status"]).await;
    assert!(ok, "{r}");
    assert!(
        r["programs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["state"] == "stopped"),
        "{r}"
    );
    stop_and_check_clean(&w, agent).await;
}

#[tokio::test]
async fn logs_returns_the_last_lines() {
    let w = World::new();
    let node = "logs";
    let programs = "[programs.web]\ncommand = \"sh\"\n\
         args = [\"-c\", \"i=1; while [ $i -le 12 ]; do echo line-$i; i=$((i+1)); done; echo oops >&2; exec sleep 1000\"]\n\
         start_secs = \"200ms\"\nstop_grace = \"2s\"\n";
    let agent = w.start(node, &w.agent_toml("", programs));
    w.wait_program(node, "web", "web running", |p| p["state"] == "running")
        .await;

    let want: Vec<String> = (8..=12).map(|i| format!("line-{i}")).collect();
    let logs = eventually(Duration::from_secs(10), "12 lines logged", || async {
        let (ok, r) = w
            .ctl_node(node, &["logs", "web", "--lines", "5", "--stream", "stdout"])
            .await;
        let logs: Vec<String> = serde_json::from_value(r["logs"].clone()).ok()?;
        (ok && logs == want).then_some(logs)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", w.agent_log(node)));
    assert_eq!(logs.len(), 5);

    // Both streams: the stdout lines, then the stderr lines, each marked.
    let (ok, r) = w
        .ctl_node(node, &["logs", "web", "--lines", "2", "--stream", "both"])
        .await;
    assert!(ok, "{r}");
    assert_eq!(
        r["logs"],
        serde_json::json!(["out| line-11", "out| line-12", "err| oops"]),
        "{r}"
    );
    assert_eq!(r["programs"][0]["state"], "running", "{r}");
    stop_and_check_clean(&w, agent).await;
}

#[tokio::test]
async fn crash_loop_backs_off_then_gives_up_with_an_alarm() {
    let w = World::new();
    let node = "crash";
    let events = Events::watch(&w.server.url(), node).await;
    // start_secs is longer than the process lives, so every run is a failed start.
    let programs = "[programs.web]\ncommand = \"sh\"\nargs = [\"-c\", \"sleep 0.1; exit 1\"]\n\
         start_secs = \"1s\"\nstart_limit = 3\nstop_grace = \"2s\"\n\
         backoff = { initial = \"200ms\", max = \"1s\" }\n";
    let agent = w.start(node, &w.agent_toml("", programs));

    let last = events
        .wait("the program gives up", |e| e.to == ProgramState::Error)
        .await;
    assert!(last.alarm, "{last:?}");
    assert!(last.reason.contains("start limit"), "{last:?}");
    let all: Vec<ProgramEvent> = events
        .all()
        .into_iter()
        .filter(|e| e.program == "web")
        .collect();
    let path: Vec<ProgramState> = all.iter().map(|e| e.to).collect();
    use ProgramState as S;
    assert_eq!(
        path,
        [
            S::Starting,
            S::Crashed,
            S::Waiting,
            S::Starting,
            S::Crashed,
            S::Waiting,
            S::Starting,
            S::Crashed,
            S::Error
        ],
        "{all:#?}"
    );
    assert_eq!(
        all.iter().filter(|e| e.alarm).count(),
        1,
        "only giving up raises an alarm: {all:#?}"
    );
    for e in all.iter().filter(|e| e.to == S::Crashed) {
        assert_eq!(e.exit, Some(wire::ExitStatus::Code(1)), "{e:?}");
    }
    let waits: Vec<&str> = all
        .iter()
        .filter(|e| e.to == S::Waiting)
        .map(|e| e.reason.as_str())
        .collect();
    assert!(
        waits[0].contains("200ms") && waits[0].contains("1 of 3"),
        "{waits:?}"
    );
    assert!(
        waits[1].contains("400ms") && waits[1].contains("2 of 3"),
        "{waits:?}"
    );
    // The gaps between a crash and the next start grow with the backoff.
    let gaps: Vec<i64> = all
        .windows(3)
        .filter(|w| w[0].to == S::Crashed && w[2].to == S::Starting)
        .map(|w| w[2].ts_ms - w[0].ts_ms)
        .collect();
    assert_eq!(gaps.len(), 2, "{all:#?}");
    assert!(gaps[0] >= 190, "{gaps:?}");
    assert!(gaps[1] >= 390 && gaps[1] > gaps[0], "{gaps:?}");

    let p = w
        .wait_program(node, "web", "status error", |p| p["state"] == "error")
        .await;
    assert!(p.get("pid").is_none_or(Value::is_null), "{p}");
    assert_eq!(p["restarts"], 2, "{p}");
    stop_and_check_clean(&w, agent).await;
}
