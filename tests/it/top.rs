//! `gridmon top` under tmux against a live grid: nats-server, a simulated fleet (2 clusters × 2
//! groups, 16 nodes, one silent and two overheating), the aggregator, and one real agent
//! supervising a real program that trusts the test's operator key. The view is driven with
//! `send-keys` and read with `capture-pane` in an 80×24 pane.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use futures::StreamExt;
use gridmon_nats::command::{AuditPhase, AuditRecord};
use gridmon_nats::wire::{self, Kind};
use gridmon_tests::eventually;
use gridmon_tests::nats_server::NatsServer;

use crate::{spawn_logged as spawn, GRIDMON};

/// Generous: the fleet, the aggregator and the agent all start from nothing.
const WAIT: Duration = Duration::from_secs(45);
const PROGRAM: &str = "demo-worker";

/// A private tmux server (its own socket), killed on drop even when the test fails.
struct Tmux {
    socket: String,
    server_pid: Option<i32>,
}

impl Drop for Tmux {
    fn drop(&mut self) {
        if let Some(pid) = self.server_pid {
            // SAFETY: signals the tmux server this test started, by its pid; no memory is touched.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
    }
}

impl Tmux {
    fn new() -> Self {
        assert!(
            gridmon_commands::child::on_path("tmux"),
            "tmux is needed for this test: apt-get install tmux"
        );
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        Self {
            socket: format!("gridmon-top-{}-{nanos}", std::process::id()),
            server_pid: None,
        }
    }

    async fn run(&self, args: &[&str]) -> String {
        let out = gridmon_commands::child::command("tmux")
            .args(["-L", &self.socket, "-f", "/dev/null"])
            .args(args)
            .env_remove("TMUX")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A detached 80×24 session running the shell script `script`.
    async fn start(&mut self, session: &str, script: &str) {
        self.run(&[
            "new-session",
            "-d",
            "-x",
            "80",
            "-y",
            "24",
            "-s",
            session,
            "sh",
            "-c",
            script,
        ])
        .await;
        if self.server_pid.is_none() {
            let pid = self.run(&["display-message", "-p", "#{pid}"]).await;
            self.server_pid = pid.trim().parse().ok();
        }
    }

    async fn keys(&self, session: &str, keys: &[&str]) {
        let target = format!("={session}:");
        let mut args = vec!["send-keys", "-t", &target];
        args.extend_from_slice(keys);
        self.run(&args).await;
    }

    /// Literal text (`/` followed by a filter, say).
    async fn type_text(&self, session: &str, text: &str) {
        self.run(&["send-keys", "-t", &format!("={session}:"), "-l", text])
            .await;
    }

    async fn screen(&self, session: &str) -> Vec<String> {
        self.run(&["capture-pane", "-p", "-t", &format!("={session}:")])
            .await
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Waits until the screen satisfies `check`; fails with the last screen.
    async fn wait<T>(
        &self,
        session: &str,
        what: &str,
        check: impl Fn(&[String]) -> Option<T>,
    ) -> T {
        let last = std::sync::Mutex::new(Vec::new());
        let r = eventually(WAIT, what, || async {
            let s = self.screen(session).await;
            let out = check(&s);
            *last.lock().unwrap() = s;
            out
        })
        .await;
        match r {
            Ok(v) => v,
            Err(e) => panic!(
                "{e}; the screen of {session}:\n{}",
                last.lock().unwrap().join("\n")
            ),
        }
    }

    async fn wait_text(&self, session: &str, needle: &str) -> Vec<String> {
        self.wait(session, needle, |s| {
            s.iter().any(|l| l.contains(needle)).then(|| s.to_vec())
        })
        .await
    }

    /// Moves the selection of a member list onto `name` and waits until it is there.
    async fn select(&self, session: &str, name: &str) {
        for _ in 0..40 {
            let s = self.screen(session).await;
            let at = |pred: &dyn Fn(&str) -> bool| s.iter().position(|l| pred(l));
            let target = at(&|l| member_name(l) == Some(name));
            let cursor = at(&|l| l.starts_with('>'));
            match (target, cursor) {
                (Some(t), Some(c)) if t == c => return,
                (Some(t), Some(c)) => {
                    self.keys(session, &[if t > c { "j" } else { "k" }]).await;
                }
                _ => {}
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        panic!(
            "could not select {name}:\n{}",
            self.screen(session).await.join("\n")
        );
    }
}

/// The name on a member row (`>!name  status ...`).
fn member_name(line: &str) -> Option<&str> {
    let rest = line.get(2..)?;
    let name = rest.split_whitespace().next()?;
    let status = rest.split_whitespace().nth(1)?;
    matches!(status, "online" | "STALE" | "OFFLINE").then_some(name)
}

fn row<'a>(screen: &'a [String], name: &str) -> Option<&'a String> {
    screen.iter().find(|l| member_name(l) == Some(name))
}

/// The process rows under the table header: (pid, cpu, name).
fn processes(screen: &[String]) -> Vec<(u32, f32, String)> {
    let Some(at) = screen
        .iter()
        .position(|l| l.contains("PID") && l.contains("CPU%"))
    else {
        return Vec::new();
    };
    screen[at + 1..]
        .iter()
        .map_while(|l| {
            let f: Vec<&str> = l.trim_start_matches('>').split_whitespace().collect();
            let pid = f.first()?.parse().ok()?;
            let cpu = f.get(3)?.parse().ok()?;
            Some((pid, cpu, f.get(7)?.to_string()))
        })
        .collect()
}

/// The program's row in the node view: (state, pid).
fn program(screen: &[String]) -> Option<(String, String)> {
    let l = screen
        .iter()
        .find(|l| l.get(2..).is_some_and(|r| r.starts_with(PROGRAM)))?;
    let f: Vec<&str> = l[2..].split_whitespace().collect();
    Some((f.get(1)?.to_string(), f.get(3)?.to_string()))
}

fn has_line(screen: &[String], text: &str) -> bool {
    screen.iter().any(|l| l.trim_end() == text)
}

/// The shell line of a pane: the view, then its exit status and whether the tty is sane again.
fn pane_command(env: &str, args: &str) -> String {
    format!(
        "{env} '{GRIDMON}' top {args}; echo \"top exited $?\"; \
         if stty -a | grep -qE '(^| )-(icanon|echo)( |;|$)'; then echo TTY-RAW; else echo TTY-SANE; fi; \
         exec sleep 100000"
    )
}

/// The real agent; on drop (a failed test too) SIGTERM, so it stops its program before it goes.
struct AgentGuard(tokio::process::Child);

impl Drop for AgentGuard {
    fn drop(&mut self) {
        let Some(pid) = self.0.id() else { return };
        // SAFETY: signals the agent's own process group (it leads it); no memory is touched.
        unsafe {
            libc::kill(-(pid as i32), libc::SIGTERM);
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if !matches!(self.0.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The real agent `c1/g1/topagent`: one supervised program, commands from `operator` allowed.
fn start_agent(dir: &Path, url: &str, operator: &str) -> AgentGuard {
    let config = dir.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[nats]\nservers = [{url:?}]\n\
             [identity]\ncluster = \"c1\"\ngroup = \"g1\"\nnode = \"topagent\"\n\
             [agent]\ninterval = \"1s\"\nprocess_interval = \"1s\"\n\
             [supervisor]\ndir = {sup:?}\non_exit = \"stop\"\n\
             [programs.{PROGRAM}]\ncommand = \"sh\"\nargs = [\"-c\", \"echo started; exec sleep 300\"]\n\
             start_secs = \"200ms\"\nstop_grace = \"2s\"\n\
             [commands]\nregistry_every = \"500ms\"\n\
             [[commands.issuers]]\nname = \"operator\"\nkey = {operator:?}\nops = [\"*\"]\nprograms = [\"*\"]\n",
            sup = dir.join("sup"),
        ),
    )
    .unwrap();
    let child = spawn(
        dir,
        "agent",
        &["agent", "--config", config.to_str().unwrap()],
    );
    AgentGuard(child)
}

#[tokio::test]
async fn top_under_tmux_drills_down_sorts_filters_restarts_and_restores_the_terminal() {
    let server = NatsServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let url = server.url();
    let operator = nkeys::KeyPair::new_user();
    let key_file = d.join("operator.nk");
    std::fs::write(&key_file, operator.seed().unwrap()).unwrap();
    let config = d.join("grid.toml");
    std::fs::write(&config, format!("[nats]\nservers = [{url:?}]\n")).unwrap();
    let cfg = config.to_str().unwrap();

    let client = async_nats::connect(&url).await.unwrap();
    let mut audit = client.subscribe("grid.audit.>").await.unwrap();
    client.flush().await.unwrap();
    // n0004 (c02/g02) goes silent once it has been seen; n0004 and n0008 overheat.
    let _sim = spawn(
        d,
        "simulate",
        &[
            "simulate",
            "--config",
            cfg,
            "--nodes",
            "16",
            "--clusters",
            "2",
            "--groups",
            "2",
            "--processes",
            "40",
            "--fault-after",
            "4s",
            "--silent",
            "1",
            "--overheat",
            "2",
        ],
    );
    let _agg = spawn(
        d,
        "aggregate",
        &["aggregate", "--config", cfg, "--no-leader-election"],
    );
    let agent = start_agent(d, &url, &operator.public_key());

    let mut tmux = Tmux::new();
    let top_log = d.join("top.log");
    let env = format!(
        "env USER=tester GRIDMON_LOG_FILE='{}' GRIDMON_LOG=debug,async_nats=warn",
        top_log.display()
    );
    tmux.start(
        "main",
        &pane_command(
            &env,
            &format!("--config '{cfg}' --key '{}'", key_file.display()),
        ),
    )
    .await;
    // The group's local display runs beside it, read-only (no key anywhere).
    tmux.start(
        "grp",
        &pane_command(&env, &format!("--config '{cfg}' --group c01/g01")),
    )
    .await;

    // The grid lists the clusters, the first selected.
    let s = tmux
        .wait("main", "the grid's clusters", |s| {
            ["c01", "c02", "c1"]
                .iter()
                .all(|c| row(s, c).is_some())
                .then(|| s.to_vec())
        })
        .await;
    assert!(s[0].starts_with("gridmon top grid "), "{}", s.join("\n"));
    assert!(row(&s, "c01").unwrap().starts_with('>'), "{}", s.join("\n"));
    assert!(s[23].contains("Enter:open"), "{}", s.join("\n"));

    // Down to c02/g02: the silent node is STALE (then OFFLINE), the hot one is marked.
    tmux.select("main", "c02").await;
    tmux.keys("main", &["Enter"]).await;
    tmux.wait_text("main", "grid > c02 ").await;
    tmux.wait("main", "c02's groups", |s| row(s, "g02").map(|_| ()))
        .await;
    tmux.select("main", "g02").await;
    tmux.keys("main", &["Enter"]).await;
    tmux.wait_text("main", "grid > c02 > g02 ").await;
    tmux.wait("main", "n0004 stale, n0008 flagged", |s| {
        let silent = row(s, "n0004")?;
        let hot = row(s, "n0008")?;
        ((silent.contains("STALE") || silent.contains("OFFLINE")) && hot.get(1..2) == Some("!"))
            .then_some(())
    })
    .await;

    // Into n0008: host metrics, the faulted sensor, the process table.
    tmux.select("main", "n0008").await;
    tmux.keys("main", &["Enter"]).await;
    let s = tmux
        .wait("main", "n0008's process table", |s| {
            (s[0].contains("grid > c02 > g02 > n0008") && processes(s).len() >= 5)
                .then(|| s.to_vec())
        })
        .await;
    let all = s.join("\n");
    assert!(all.contains("CPU "), "{all}");
    assert!(all.contains("MEM "), "{all}");
    assert!(
        s.iter().any(|l| l.starts_with('!') && l.contains(" crit ")),
        "a sensor beyond its limits is marked:\n{all}"
    );
    assert!(all.contains("sort cpu desc"), "{all}");

    // Sorting: name, PID, then CPU descending and again ascending.
    tmux.keys("main", &["n"]).await;
    tmux.wait("main", "sorted by name", |s| {
        let rows = processes(s);
        (s.iter().any(|l| l.contains("sort name asc"))
            && rows.len() >= 5
            && rows.windows(2).all(|w| w[0].2 <= w[1].2))
        .then_some(())
    })
    .await;
    tmux.keys("main", &["p"]).await;
    tmux.wait("main", "sorted by pid", |s| {
        let rows = processes(s);
        (s.iter().any(|l| l.contains("sort pid asc"))
            && rows.len() >= 5
            && rows.windows(2).all(|w| w[0].0 < w[1].0))
        .then_some(())
    })
    .await;
    tmux.keys("main", &["c"]).await;
    let cpus = tmux
        .wait("main", "sorted by CPU, descending", |s| {
            let rows = processes(s);
            (s.iter().any(|l| l.contains("sort cpu desc")) && rows.len() >= 5)
                .then(|| rows.iter().map(|r| r.1).collect::<Vec<f32>>())
        })
        .await;
    assert!(
        cpus.windows(2).all(|w| w[0] >= w[1]),
        "not in descending CPU order: {cpus:?}"
    );
    tmux.keys("main", &["c"]).await;
    let cpus = tmux
        .wait("main", "sorted by CPU, ascending", |s| {
            let rows = processes(s);
            (s.iter().any(|l| l.contains("sort cpu asc")) && rows.len() >= 5)
                .then(|| rows.iter().map(|r| r.1).collect::<Vec<f32>>())
        })
        .await;
    assert!(
        cpus.windows(2).all(|w| w[0] <= w[1]),
        "not in ascending CPU order: {cpus:?}"
    );

    // The name filter: only matching rows, and Esc clears it.
    tmux.keys("main", &["/"]).await;
    tmux.type_text("main", "systemd").await;
    tmux.wait_text("main", "filter by name: systemd_").await;
    tmux.keys("main", &["Enter"]).await;
    let names = tmux
        .wait("main", "the filter applied", |s| {
            let rows = processes(s);
            (s.iter().any(|l| l.contains("filter: systemd")) && rows.len() >= 2)
                .then(|| rows.into_iter().map(|r| r.2).collect::<Vec<String>>())
        })
        .await;
    assert!(
        names.iter().all(|n| n.contains("systemd")),
        "the filter let through {names:?}"
    );
    tmux.keys("main", &["Escape"]).await;
    tmux.wait("main", "the filter cleared", |s| {
        (!s.iter().any(|l| l.contains("filter:")) && processes(s).len() >= 5).then_some(())
    })
    .await;

    // Back to the grid by the three keys that go up (one at a time: an Esc followed at once by
    // more bytes would read as Alt+key), and down to the real agent.
    for (key, at) in [
        ("Escape", "gridmon top grid > c02 > g02  "),
        ("BSpace", "gridmon top grid > c02  "),
        ("Left", "gridmon top grid  "),
    ] {
        tmux.keys("main", &[key]).await;
        tmux.wait("main", at, |s| s[0].starts_with(at).then_some(()))
            .await;
    }
    tmux.select("main", "c1").await;
    tmux.keys("main", &["Enter"]).await;
    tmux.wait("main", "c1's groups", |s| row(s, "g1").map(|_| ()))
        .await;
    tmux.select("main", "g1").await;
    tmux.keys("main", &["Enter"]).await;
    tmux.wait("main", "g1's nodes", |s| row(s, "topagent").map(|_| ()))
        .await;
    tmux.select("main", "topagent").await;
    tmux.keys("main", &["Enter"]).await;
    let (state, old_pid) = tmux
        .wait("main", "the agent's program running", |s| {
            let (state, pid) = program(s)?;
            (state == "running" && pid != "-").then_some((state, pid))
        })
        .await;
    assert_eq!(state, "running");

    // Restart, with the confirmation; a "no" first changes nothing.
    tmux.keys("main", &["r"]).await;
    tmux.wait_text("main", &format!("restart {PROGRAM} on c1/g1/topagent? y/n"))
        .await;
    tmux.keys("main", &["n"]).await;
    tmux.wait_text("main", "cancelled").await;
    tmux.keys("main", &["r"]).await;
    tmux.wait_text("main", &format!("restart {PROGRAM} on c1/g1/topagent? y/n"))
        .await;
    tmux.keys("main", &["y"]).await;
    let s = tmux
        .wait_text("main", &format!("restart {PROGRAM} on c1/g1/topagent: ok"))
        .await;
    let outcome = s.iter().find(|l| l.contains(": ok")).unwrap();
    assert!(outcome.contains("running pid"), "{outcome}");
    let new_pid = tmux
        .wait("main", "a new pid for the program", |s| {
            let (state, pid) = program(s)?;
            (state == "running" && pid != "-" && pid != old_pid).then_some(pid)
        })
        .await;
    assert_ne!(new_pid, old_pid);
    // The agent's audit records who acted, through the operator's key.
    let record = tokio::time::timeout(WAIT, async {
        while let Some(m) = audit.next().await {
            let Ok(env) = wire::decode::<AuditRecord>(&m.payload, Kind::Audit) else {
                continue;
            };
            let r = env.body;
            if r.op == "restart" && r.phase == AuditPhase::Finished {
                return r;
            }
        }
        panic!("the audit subscription ended");
    })
    .await
    .expect("a finished restart in the audit");
    assert!(record.ok, "{record:?}");
    assert!(record.signed, "{record:?}");
    assert_eq!(record.program.as_deref(), Some(PROGRAM));
    assert_eq!(record.on_behalf_of.as_deref(), Some("tester"));
    assert_eq!(record.issuer, operator.public_key());

    // The group display: starts at its group, never goes above it, and is read-only.
    let s = tmux
        .wait("grp", "the group's nodes", |s| {
            ["n0001", "n0005", "n0009", "n0013"]
                .iter()
                .all(|n| row(s, n).is_some())
                .then(|| s.to_vec())
        })
        .await;
    assert!(
        s[0].contains("group c01/g01 (local display)"),
        "{}",
        s.join("\n")
    );
    tmux.keys("grp", &["Escape"]).await;
    tmux.wait_text("grp", "this is the group's local display")
        .await;
    let s = tmux.screen("grp").await;
    assert!(s[0].contains("group c01/g01"), "{}", s.join("\n"));
    tmux.keys("grp", &["Enter"]).await;
    tmux.wait("grp", "n0001's view", |s| {
        (s[0].contains("group c01/g01 > n0001") && processes(s).len() >= 5).then_some(())
    })
    .await;
    tmux.keys("grp", &["r"]).await;
    tmux.wait_text("grp", "read-only: no operator key").await;
    tmux.keys("grp", &["Escape"]).await;
    tmux.wait("grp", "back at the group", |s| {
        (s[0].contains("group c01/g01 (local display)") && row(s, "n0001").is_some()).then_some(())
    })
    .await;

    // q quits with status 0 and leaves a sane terminal (cooked mode, normal screen).
    for session in ["main", "grp"] {
        tmux.keys(session, &["q"]).await;
        tmux.wait(session, "the view to exit", |s| {
            (has_line(s, "top exited 0") && has_line(s, "TTY-SANE")).then_some(())
        })
        .await;
        let alt = tmux
            .run(&[
                "display-message",
                "-p",
                "-t",
                &format!("={session}:"),
                "#{alternate_on}",
            ])
            .await;
        assert_eq!(alt.trim(), "0", "{session} left the alternate screen");
    }

    // A panic (a debug-build test key) restores the terminal before the message is printed.
    if cfg!(debug_assertions) {
        tmux.start(
            "crash",
            &pane_command(
                &format!("{env} GRIDMON_TOP_TEST_PANIC=P RUST_BACKTRACE=0"),
                &format!("--config '{cfg}'"),
            ),
        )
        .await;
        tmux.wait_text("crash", "gridmon top grid").await;
        tmux.keys("crash", &["P"]).await;
        let s = tmux
            .wait("crash", "the panic to be reported", |s| {
                (has_line(s, "top exited 101") && has_line(s, "TTY-SANE")).then(|| s.to_vec())
            })
            .await;
        assert!(
            s.iter().any(|l| l.contains("panicking on request")),
            "the panic message is on the normal screen:\n{}",
            s.join("\n")
        );
        let alt = tmux
            .run(&["display-message", "-p", "-t", "=crash:", "#{alternate_on}"])
            .await;
        assert_eq!(alt.trim(), "0");
    }

    tmux.run(&["kill-server"]).await;
    tmux.server_pid = None;
    drop(agent);
}
