//! The supervisor against real processes: restarts and backoff, stop escalation, re-adoption,
//! health, logs, degraded mode, drain order, orphan reaping, release deploys, and running as
//! another user and group (as root).

#![allow(clippy::unwrap_used)] // a panic is how a test reports

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gridmon_commands::model::{ExitStatus, ProgramEvent, ProgramState, ProgramStatus};
use gridmon_commands::spec::{
    Backoff, DegradedMode, HealthCheck, HealthKind, OnExit, ProgramSpec, ReleaseSpec, Signal,
    SupervisorConfig,
};
use gridmon_commands::supervisor::{LogStream, OpError, Supervisor, SupervisorHandle};
use tokio_util::sync::CancellationToken;

const DEADLINE: Duration = Duration::from_secs(15);

/// Fast settings so tests take fractions of a second.
fn sh(script: &str) -> ProgramSpec {
    ProgramSpec {
        command: "sh".into(),
        args: vec!["-c".into(), script.into()],
        start_secs: Duration::from_millis(200),
        stop_grace: Duration::from_millis(300),
        backoff: Backoff {
            initial: Duration::from_millis(50),
            max: Duration::from_millis(400),
            factor: 2.0,
        },
        ..ProgramSpec::default()
    }
}

struct Running {
    handle: SupervisorHandle,
    events: Arc<Mutex<Vec<ProgramEvent>>>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    stopped: bool,
}

impl Running {
    fn start(cfg: SupervisorConfig, programs: &[(&str, ProgramSpec)]) -> Running {
        let programs: BTreeMap<String, ProgramSpec> = programs
            .iter()
            .map(|(n, s)| (n.to_string(), s.clone()))
            .collect();
        let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
        let (sup, handle) = Supervisor::new(cfg, programs, tx).expect("supervisor");
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        tokio::spawn(async move {
            while let Some(ev) = rx.recv().await {
                sink.lock().unwrap().push(ev);
            }
        });
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(sup.run(shutdown.clone()));
        Running {
            handle,
            events,
            shutdown,
            task,
            stopped: false,
        }
    }

    async fn stop(mut self) {
        self.stopped = true;
        self.shutdown.cancel();
        tokio::time::timeout(DEADLINE, &mut self.task)
            .await
            .expect("supervisor exits")
            .unwrap();
    }

    fn events(&self, program: &str) -> Vec<ProgramEvent> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.program == program)
            .cloned()
            .collect()
    }

    async fn status(&self, program: &str) -> ProgramStatus {
        self.handle.status(Some(program)).await.unwrap().remove(0)
    }

    /// Waits until `f(status)` holds.
    async fn until(
        &self,
        program: &str,
        what: &str,
        f: impl Fn(&ProgramStatus) -> bool,
    ) -> ProgramStatus {
        let end = Instant::now() + DEADLINE;
        loop {
            let s = self.status(program).await;
            if f(&s) {
                return s;
            }
            assert!(
                Instant::now() < end,
                "timed out waiting for {what}; last {s:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until an event of `program` satisfies `f`.
    async fn event(
        &self,
        program: &str,
        what: &str,
        f: impl Fn(&ProgramEvent) -> bool,
    ) -> ProgramEvent {
        eventually(what, || self.events(program).into_iter().find(|e| f(e))).await
    }
}

/// A failing test must not leave its programs running (they are not killed on drop).
impl Drop for Running {
    fn drop(&mut self) {
        if self.stopped {
            return; // a clean end (and with on_exit = leave, the programs must survive it)
        }
        // `status` never waits, so one poll answers.
        let mut fut = std::pin::pin!(self.handle.status(None));
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        if let std::task::Poll::Ready(Ok(all)) = std::future::Future::poll(fut.as_mut(), &mut cx) {
            for pid in all.iter().filter_map(|s| s.pid) {
                // SAFETY: test cleanup of a process group the test's supervisor started.
                unsafe { libc::killpg(pid as i32, libc::SIGKILL) };
            }
        }
    }
}

fn cfg(dir: &Path) -> SupervisorConfig {
    SupervisorConfig {
        dir: dir.to_path_buf(),
        ..SupervisorConfig::default()
    }
}

async fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether `/proc/<pid>` exists at all (a zombie counts as present).
fn present(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

fn kill(pid: u32, sig: i32) {
    // SAFETY: test helper signalling a process the test started.
    unsafe { libc::kill(pid as i32, sig) };
}

/// Reads a pid printed on the first line of a program's stdout log.
async fn logged_pid(r: &Running, program: &str) -> u32 {
    let h = r.handle.clone();
    let name = program.to_string();
    let mut found = None;
    let end = Instant::now() + DEADLINE;
    while found.is_none() {
        let lines = h.logs(&name, LogStream::Stdout, 100).await.unwrap();
        found = lines.iter().find_map(|l| l.trim().parse::<u32>().ok());
        assert!(Instant::now() < end, "no pid logged by {program}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    found.unwrap_or_default()
}

#[tokio::test]
async fn a_crash_is_restarted_after_its_backoff() {
    let dir = tempfile::tempdir().unwrap();
    let r = Running::start(cfg(dir.path()), &[("w", sh("exec sleep 1000"))]);
    let s = r
        .until("w", "running", |s| s.state == ProgramState::Running)
        .await;
    let first = s.pid.unwrap();
    assert!(s.started_ms.is_some());
    kill(first, libc::SIGKILL);
    let s = r
        .until("w", "restarted", |s| {
            s.state == ProgramState::Running && s.pid.is_some_and(|p| p != first)
        })
        .await;
    assert_eq!(s.restarts, 1);
    assert_eq!(s.last_exit, Some(ExitStatus::Signal(libc::SIGKILL)));
    assert!(s.last_exit_ms.is_some());
    let evs = r.events("w");
    let crashed = evs
        .iter()
        .find(|e| e.to == ProgramState::Crashed)
        .expect("crashed event");
    assert_eq!(crashed.exit, Some(ExitStatus::Signal(libc::SIGKILL)));
    let waiting = evs.iter().find(|e| e.to == ProgramState::Waiting).unwrap();
    let respawn = evs
        .iter()
        .filter(|e| e.to == ProgramState::Starting)
        .nth(1)
        .expect("second start");
    // At least the initial backoff between the crash and the new process.
    assert!(respawn.ts_ms - waiting.ts_ms >= 50, "{evs:#?}");
    assert!(!present(first) || std::fs::read_to_string(format!("/proc/{first}/stat")).is_err());
    r.handle.shutdown().await.unwrap();
    r.stop().await;
}

#[tokio::test]
async fn a_crash_loop_backs_off_then_errors_with_an_alarm() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = sh("exit 7");
    spec.start_limit = 4;
    spec.backoff = Backoff {
        initial: Duration::from_millis(40),
        max: Duration::from_secs(2),
        factor: 2.0,
    };
    let backoff = spec.backoff;
    let r = Running::start(cfg(dir.path()), &[("loop", spec)]);
    let s = r
        .until("loop", "error", |s| s.state == ProgramState::Error)
        .await;
    assert_eq!(s.last_exit, Some(ExitStatus::Code(7)));
    assert!(s.detail.contains("start limit"), "{}", s.detail);
    let evs = r.events("loop");
    let alarm = evs.iter().find(|e| e.to == ProgramState::Error).unwrap();
    assert!(alarm.alarm);
    let spawns: Vec<i64> = evs
        .iter()
        .filter(|e| e.to == ProgramState::Starting)
        .map(|e| e.ts_ms)
        .collect();
    assert_eq!(spawns.len(), 4, "{evs:#?}");
    for (k, w) in spawns.windows(2).enumerate() {
        let delay = backoff.delay(k as u32 + 1).as_millis() as i64;
        assert!(w[1] - w[0] >= delay, "gap {k}: {} < {delay}", w[1] - w[0]);
    }
    // Nothing more happens after giving up.
    let n = r.events("loop").len();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(r.events("loop").len(), n);
    // A start command is a fresh start; it fails again, clearly.
    let err = r.handle.start("loop").await.unwrap_err();
    assert!(matches!(err, OpError::Failed(_)), "{err}");
    r.stop().await;
}

#[tokio::test]
async fn stop_kills_a_group_that_ignores_term_and_leaves_no_zombie() {
    let dir = tempfile::tempdir().unwrap();
    // An ignored signal stays ignored across exec, so the sleep ignores TERM too.
    let r = Running::start(
        cfg(dir.path()),
        &[("stubborn", sh("trap '' TERM; sleep 1000 & echo $!; wait"))],
    );
    let s = r
        .until("stubborn", "running", |s| s.state == ProgramState::Running)
        .await;
    let leader = s.pid.unwrap();
    let sleeper = logged_pid(&r, "stubborn").await;
    assert!(present(sleeper));
    let started = Instant::now();
    let h = r.handle.clone();
    let stopping = tokio::spawn(async move { h.stop("stubborn").await });
    // Status answers while the stop waits out its grace.
    let mid = r
        .until("stubborn", "stopping", |s| {
            s.state == ProgramState::Stopping
        })
        .await;
    assert_eq!(mid.pid, Some(leader));
    let s = stopping.await.unwrap().unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(s.state, ProgramState::Stopped);
    assert_eq!(s.last_exit, Some(ExitStatus::Signal(libc::SIGKILL)));
    eventually("the group is gone and reaped", || {
        (!present(leader) && !present(sleeper)).then_some(())
    })
    .await;
    // Stays stopped.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(r.status("stubborn").await.state, ProgramState::Stopped);
    r.stop().await;
}

fn processes_with_cmdline(needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        if String::from_utf8_lossy(&cmd).replace('\0', " ").trim() == needle {
            let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| {
                    s.rsplit_once(')')
                        .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
                })
                .unwrap_or(true);
            if !zombie {
                out.push(pid);
            }
        }
    }
    out
}

#[tokio::test]
async fn a_new_supervisor_adopts_what_the_old_one_left() {
    let dir = tempfile::tempdir().unwrap();
    let unique = format!("1000.{}", std::process::id());
    let needle = format!("sleep {unique}");
    let spec = ProgramSpec {
        command: "sleep".into(),
        args: vec![unique.clone()],
        ..sh("")
    };
    let leave = SupervisorConfig {
        on_exit: OnExit::Leave,
        ..cfg(dir.path())
    };
    let a = Running::start(leave, &[("keep", spec.clone())]);
    let s = a
        .until("keep", "running", |s| s.state == ProgramState::Running)
        .await;
    let pid = s.pid.unwrap();
    a.stop().await;
    assert_eq!(processes_with_cmdline(&needle), [pid], "left running");
    let state = std::fs::read_to_string(dir.path().join("supervisor-state.json")).unwrap();
    assert!(state.contains(&format!("\"pid\": {pid}")), "{state}");

    let b = Running::start(cfg(dir.path()), &[("keep", spec)]);
    let s = b
        .until("keep", "adopted", |s| s.state == ProgramState::Running)
        .await;
    assert_eq!(s.pid, Some(pid));
    let adopted = b
        .event("keep", "adopted event", |e| e.reason.contains("adopted"))
        .await;
    assert_eq!(adopted.pid, Some(pid));
    assert_eq!(processes_with_cmdline(&needle), [pid], "no second copy");

    kill(pid, libc::SIGKILL);
    let crashed = b
        .event("keep", "exit noticed", |e| e.to == ProgramState::Crashed)
        .await;
    assert_eq!(crashed.exit, Some(ExitStatus::Unknown));
    let s = b
        .until("keep", "restarted", |s| {
            s.state == ProgramState::Running && s.pid.is_some_and(|p| p != pid)
        })
        .await;
    assert_eq!(processes_with_cmdline(&needle), [s.pid.unwrap()]);
    b.stop().await; // on_exit = stop: drained
    assert!(processes_with_cmdline(&needle).is_empty());
    let state = std::fs::read_to_string(dir.path().join("supervisor-state.json")).unwrap();
    assert!(!state.contains("\"keep\""), "{state}");
}

#[tokio::test]
async fn failed_liveness_restarts_the_program() {
    let dir = tempfile::tempdir().unwrap();
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let mut spec = sh("exec sleep 1000");
    spec.health.push(HealthCheck {
        interval: Duration::from_millis(100),
        timeout: Duration::from_millis(50),
        failures: 2,
        ..HealthCheck::new(HealthKind::Tcp { address: closed })
    });
    let r = Running::start(cfg(dir.path()), &[("web", spec)]);
    let first = r
        .until("web", "running", |s| s.pid.is_some())
        .await
        .pid
        .unwrap();
    let ev = r
        .event("web", "liveness failure", |e| {
            e.reason.starts_with("health failed")
        })
        .await;
    assert_eq!(ev.to, ProgramState::Stopping);
    let s = r
        .until("web", "restarted", |s| {
            s.restarts >= 1 && s.pid.is_some_and(|p| p != first)
        })
        .await;
    assert!(s.pid.is_some());
    r.stop().await;
}

#[tokio::test]
async fn a_slow_health_check_marks_the_program_busy() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = sh("exec sleep 1000");
    spec.health.push(HealthCheck {
        interval: Duration::from_millis(300),
        timeout: Duration::from_millis(250),
        failures: 3,
        slow: Some(Duration::from_millis(20)),
        ..HealthCheck::new(HealthKind::Exec {
            command: "sleep".into(),
            args: vec!["0.1".into()],
        })
    });
    let r = Running::start(cfg(dir.path()), &[("slow", spec)]);
    r.until("slow", "busy", |s| s.state == ProgramState::Busy)
        .await;
    r.stop().await;
}

#[tokio::test]
async fn logs_are_captured_rotated_and_tailed() {
    let dir = tempfile::tempdir().unwrap();
    let go = dir.path().join("go");
    let script = format!(
        "i=0; while [ $i -lt 1000 ]; do echo \"line $i\"; i=$((i+1)); done; echo oops >&2; \
         while [ ! -e {} ]; do sleep 0.05; done; echo after; exec sleep 1000",
        go.display()
    );
    let c = SupervisorConfig {
        log_max_bytes: 4096,
        log_keep: 2,
        ..cfg(dir.path())
    };
    let r = Running::start(c, &[("chatty", sh(&script))]);
    let rotated = dir.path().join("logs/chatty.out.log.1");
    eventually("rotation", || rotated.exists().then_some(())).await;
    let last = r.handle.logs("chatty", LogStream::Stdout, 3).await.unwrap();
    assert_eq!(last, ["line 997", "line 998", "line 999"]);
    std::fs::write(&go, b"").unwrap();
    let live = dir.path().join("logs/chatty.out.log");
    // The write after a copy-and-truncate lands at the start of the file (O_APPEND), leaving no
    // hole of NULs. (Under load a rotation can come mid-burst, so what precedes it may vary.)
    eventually("write after truncation", || {
        let text = std::fs::read(&live).ok()?;
        (text.ends_with(b"after\n") && !text.contains(&0)).then_some(())
    })
    .await;
    let last = r.handle.logs("chatty", LogStream::Stdout, 2).await.unwrap();
    assert_eq!(last, ["line 999", "after"]);
    let err = r
        .handle
        .logs("chatty", LogStream::Stderr, 10)
        .await
        .unwrap();
    assert_eq!(err, ["oops"]);
    let both = r.handle.logs("chatty", LogStream::Both, 1).await.unwrap();
    assert_eq!(both, ["out| after", "err| oops"]);
    let all = r
        .handle
        .logs("chatty", LogStream::Stdout, 100_000)
        .await
        .unwrap();
    // Capped by what exists; lines written during a copy may be lost (documented in logs.rs).
    assert!(all.len() <= 1001 && all.len() > 900, "{}", all.len());
    assert_eq!(all.last().map(String::as_str), Some("after"));
    assert!(matches!(
        r.handle.logs("nope", LogStream::Stdout, 1).await,
        Err(OpError::UnknownProgram(_))
    ));
    r.stop().await;
}

#[tokio::test]
async fn degrade_by_restart_and_by_signal() {
    let dir = tempfile::tempdir().unwrap();
    let mut by_env = sh("echo \"mode $MODE\"; exec sleep 1000");
    by_env.env.insert("MODE".into(), "normal".into());
    by_env.degraded = Some(DegradedMode {
        env: [("MODE".to_string(), "lite".to_string())].into(),
        ..DegradedMode::default()
    });
    let mut by_signal =
        sh("trap 'echo got-usr1' USR1; trap 'echo got-usr2' USR2; while true; do sleep 0.05; done");
    by_signal.degraded = Some(DegradedMode {
        signal: Some(Signal::from_name("USR1").unwrap()),
        restore_signal: Some(Signal::from_name("USR2").unwrap()),
        ..DegradedMode::default()
    });
    let r = Running::start(
        cfg(dir.path()),
        &[
            ("env", by_env),
            ("sig", by_signal),
            ("plain", sh("exec sleep 1000")),
        ],
    );
    let first = r
        .until("env", "running", |s| s.state == ProgramState::Running)
        .await;
    let s = r.handle.degrade("env", true).await.unwrap();
    assert_eq!(s.state, ProgramState::Degraded);
    assert!(s.degraded);
    assert_ne!(s.pid, first.pid);
    let lines = r.handle.logs("env", LogStream::Stdout, 10).await.unwrap();
    assert_eq!(lines.last().map(String::as_str), Some("mode lite"));
    let s = r.handle.degrade("env", false).await.unwrap();
    assert_eq!(s.state, ProgramState::Running);
    let lines = r.handle.logs("env", LogStream::Stdout, 10).await.unwrap();
    assert_eq!(lines.last().map(String::as_str), Some("mode normal"));

    let sig = r
        .until("sig", "running", |s| s.state == ProgramState::Running)
        .await;
    let s = r.handle.degrade("sig", true).await.unwrap();
    assert_eq!((s.state, s.pid), (ProgramState::Degraded, sig.pid));
    eventually("usr1 handled", || {
        let log = std::fs::read_to_string(dir.path().join("logs/sig.out.log")).ok()?;
        log.contains("got-usr1").then_some(())
    })
    .await;
    let s = r.handle.degrade("sig", false).await.unwrap();
    assert_eq!((s.state, s.pid), (ProgramState::Running, sig.pid));
    eventually("usr2 handled", || {
        let log = std::fs::read_to_string(dir.path().join("logs/sig.out.log")).ok()?;
        log.contains("got-usr2").then_some(())
    })
    .await;
    assert!(matches!(
        r.handle.degrade("plain", true).await,
        Err(OpError::Invalid(_))
    ));
    r.stop().await;
}

#[tokio::test]
async fn drain_stops_in_shutdown_order_and_they_stay_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let c = SupervisorConfig {
        shutdown_order: vec!["b".into()],
        ..cfg(dir.path())
    };
    let p = sh("exec sleep 1000");
    let r = Running::start(c, &[("a", p.clone()), ("b", p.clone()), ("c", p)]);
    for n in ["a", "b", "c"] {
        r.until(n, "running", |s| s.state == ProgramState::Running)
            .await;
    }
    let pids: Vec<u32> = r
        .handle
        .status(None)
        .await
        .unwrap()
        .iter()
        .filter_map(|s| s.pid)
        .collect();
    let statuses = r.handle.shutdown().await.unwrap();
    let order: Vec<&str> = statuses.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(order, ["b", "c", "a"]);
    assert!(statuses.iter().all(|s| s.state == ProgramState::Stopped));
    let stopped: Vec<String> = r
        .events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.to == ProgramState::Stopped)
        .map(|e| e.program.clone())
        .collect();
    assert_eq!(stopped, ["b", "c", "a"]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    for s in r.handle.status(None).await.unwrap() {
        assert_eq!(s.state, ProgramState::Stopped, "{s:?}");
    }
    eventually("all reaped", || {
        pids.iter().all(|&p| !present(p)).then_some(())
    })
    .await;
    assert_eq!(r.handle.programs(), ["a", "b", "c"]);
    r.stop().await;
}

#[tokio::test]
async fn an_orphaned_grandchild_is_reaped() {
    let dir = tempfile::tempdir().unwrap();
    // The subshell exits at once, so the sleep is re-parented to us (the subreaper).
    let r = Running::start(
        cfg(dir.path()),
        &[("forker", sh("( sleep 0.3 & echo $! ); exec sleep 1000"))],
    );
    let grandchild = logged_pid(&r, "forker").await;
    eventually("the grandchild exits and is reaped", || {
        (!present(grandchild)).then_some(())
    })
    .await;
    assert_eq!(r.status("forker").await.state, ProgramState::Running);
    r.stop().await;
}

#[tokio::test]
async fn commands_conflict_and_unknowns_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut manual = sh("exec sleep 1000");
    manual.autostart = false;
    let r = Running::start(cfg(dir.path()), &[("m", manual)]);
    let s = r
        .until("m", "stopped", |s| s.state == ProgramState::Stopped)
        .await;
    assert_eq!(s.pid, None);
    assert!(matches!(
        r.handle.start("x").await,
        Err(OpError::UnknownProgram(_))
    ));
    let s = r.handle.start("m").await.unwrap();
    assert_eq!(s.state, ProgramState::Running);
    let pid = s.pid.unwrap();
    let s = r.handle.restart("m").await.unwrap();
    assert_eq!(s.state, ProgramState::Running);
    assert_ne!(s.pid, Some(pid));
    assert!(
        !present(pid) || {
            eventually("old pid gone", || (!present(pid)).then_some(())).await;
            true
        }
    );
    let s = r.handle.stop("m").await.unwrap();
    assert_eq!(s.state, ProgramState::Stopped);
    let again = r.handle.stop("m").await.unwrap();
    assert_eq!(again.state, ProgramState::Stopped);
    assert!(matches!(
        r.handle
            .deploy(
                "m",
                "1",
                PathBuf::from("/nonexistent"),
                String::new(),
                false
            )
            .await,
        Err(OpError::Invalid(_))
    ));
    r.stop().await;
    assert_eq!(r_unavailable().await, OpError::Unavailable);
}

/// A handle whose supervisor has exited answers `Unavailable`.
async fn r_unavailable() -> OpError {
    let dir = tempfile::tempdir().unwrap();
    let r = Running::start(cfg(dir.path()), &[("u", sh("exec sleep 1000"))]);
    let h = r.handle.clone();
    r.stop().await;
    h.start("u").await.unwrap_err()
}

/// A release archive with `run.sh` (prints its version, sleeps) and, for a bad release, `BAD`.
fn artifact(dir: &Path, version: &str, bad: bool) -> (PathBuf, String) {
    let path = dir.join(format!("r{version}.tar"));
    let file = std::fs::File::create(&path).unwrap();
    let mut b = tar::Builder::new(file);
    let script = format!("#!/bin/sh\necho \"version {version}\"\nexec sleep 1000\n");
    let mut h = tar::Header::new_gnu();
    h.set_size(script.len() as u64);
    h.set_mode(0o755);
    h.set_cksum();
    b.append_data(&mut h, "run.sh", script.as_bytes()).unwrap();
    if bad {
        let mut h = tar::Header::new_gnu();
        h.set_size(0);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "BAD", &[][..]).unwrap();
    }
    b.into_inner().unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let digest = ring::digest::digest(&ring::digest::SHA256, &bytes);
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    (path, hex)
}

#[tokio::test]
async fn deploy_upgrade_with_automatic_rollback_and_manual_rollback() {
    let dir = tempfile::tempdir().unwrap();
    let art = tempfile::tempdir().unwrap();
    let current = dir.path().join("programs/app/current");
    let mut spec = ProgramSpec {
        command: "run.sh".into(),
        args: vec![],
        release: Some(ReleaseSpec {
            keep: 3,
            upgrade_window: Duration::from_secs(5),
        }),
        ..sh("")
    };
    // Generous timeout: a passing check must not time out on a loaded machine.
    spec.health.push(HealthCheck {
        interval: Duration::from_millis(300),
        timeout: Duration::from_millis(250),
        failures: 2,
        ..HealthCheck::new(HealthKind::Exec {
            command: "sh".into(),
            args: vec!["-c".into(), format!("test ! -e {}/BAD", current.display())],
        })
    });
    let r = Running::start(cfg(dir.path()), &[("app", spec)]);
    let s = r
        .until("app", "no release yet", |s| {
            s.state == ProgramState::Stopped
        })
        .await;
    assert!(s.detail.contains("no release"), "{}", s.detail);

    let (a1, d1) = artifact(art.path(), "1", false);
    let s = r.handle.deploy("app", "1", a1, d1, false).await.unwrap();
    assert_eq!(s.state, ProgramState::Running);
    assert_eq!(s.version.as_deref(), Some("1"));
    let v1_pid = s.pid.unwrap();

    // Wrong digest: nothing changes.
    let (a2, d2) = artifact(art.path(), "2", true);
    let err = r
        .handle
        .deploy("app", "2", a2.clone(), "00".repeat(32), true)
        .await
        .unwrap_err();
    assert!(matches!(err, OpError::Failed(_)), "{err}");
    let s = r.status("app").await;
    assert_eq!((s.state, s.pid), (ProgramState::Running, Some(v1_pid)));

    // A release that fails its health check is rolled back.
    let h = r.handle.clone();
    let upgrading = tokio::spawn(async move { h.deploy("app", "2", a2, d2, true).await });
    r.until("app", "upgrading", |s| s.state == ProgramState::Upgrading)
        .await;
    assert!(matches!(
        r.handle.stop("app").await,
        Err(OpError::Conflict(_))
    ));
    let err = upgrading.await.unwrap().unwrap_err();
    assert!(
        matches!(&err, OpError::Failed(m) if m.contains("rolled back to 1")),
        "{err}"
    );
    r.event("app", "rollback event", |e| {
        e.reason == "rollback: health failed" && e.alarm
    })
    .await;
    let s = r.status("app").await;
    assert_eq!(s.state, ProgramState::Running, "{s:?}");
    assert_eq!(s.version.as_deref(), Some("1"));
    let lines = r.handle.logs("app", LogStream::Stdout, 1).await.unwrap();
    assert_eq!(lines, ["version 1"]);

    // A healthy upgrade.
    let (a3, d3) = artifact(art.path(), "3", false);
    let s = r.handle.deploy("app", "3", a3, d3, true).await.unwrap();
    assert_eq!(
        (s.state, s.version.as_deref()),
        (ProgramState::Running, Some("3"))
    );
    assert!(r
        .events("app")
        .iter()
        .any(|e| e.to == ProgramState::Upgrading));

    // Manual rollback to the previous release.
    let s = r.handle.rollback("app", None).await.unwrap();
    assert_eq!(
        (s.state, s.version.as_deref()),
        (ProgramState::Running, Some("1"))
    );
    assert!(matches!(
        r.handle.rollback("app", Some("9".into())).await,
        Err(OpError::Invalid(_))
    ));
    assert!(matches!(
        r.handle.rollback("app", Some("a;b".into())).await,
        Err(OpError::Invalid(_))
    ));
    r.stop().await;
}

/// The uid and gid on the `Uid:`/`Gid:` lines of `/proc/<pid>/status` (real ids).
fn ids_of(pid: u32) -> (u32, u32) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> u32 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap()
    };
    (field("Uid:"), field("Gid:"))
}

/// The id of a name in an `/etc/passwd`-style file (third field).
fn id_in(file: &str, name: &str) -> Option<u32> {
    std::fs::read_to_string(file)
        .ok()?
        .lines()
        .find(|l| l.split(':').next() == Some(name))?
        .split(':')
        .nth(2)?
        .parse()
        .ok()
}

#[tokio::test]
async fn a_program_runs_as_its_configured_user_and_group() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: switching users needs root");
        return;
    }
    let (Some(uid), Some(gid)) = (
        id_in("/etc/passwd", "nobody"),
        id_in("/etc/group", "nogroup"),
    ) else {
        eprintln!("skipped: no nobody/nogroup on this machine");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut spec = sh("exec sleep 1000");
    spec.user = Some("nobody".into());
    spec.group = Some("nogroup".into());
    spec.cwd = Some("/".into());
    let r = Running::start(cfg(dir.path()), &[("w", spec)]);
    let s = r
        .until("w", "running as nobody", |s| {
            s.state == ProgramState::Running
        })
        .await;
    assert_eq!(ids_of(s.pid.unwrap()), (uid, gid));
    // A user that does not exist: the program does not start, and says why.
    let mut bad = sh("exec sleep 1000");
    bad.user = Some("no-such-user-gridmon".into());
    let dir2 = tempfile::tempdir().unwrap();
    let refused = Supervisor::new(
        cfg(dir2.path()),
        [("b".to_string(), bad)].into_iter().collect(),
        tokio::sync::mpsc::channel(8).0,
    );
    let Err(e) = refused else {
        panic!("an unknown user is refused")
    };
    let e = e.to_string();
    assert!(e.contains("no-such-user-gridmon"), "{e}");
    r.stop().await;
}
