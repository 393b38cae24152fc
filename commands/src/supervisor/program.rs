//! One supervised program: the task that owns its process, timers, health checks and state, and
//! publishes every state change (to the status `watch` and as a `ProgramEvent`).
//!
//! The task never waits on anything slow inside a handler: process exits, health probes and
//! release installs run elsewhere and come back as messages, and every delay (start_secs, stop
//! grace, backoff, upgrade window, health interval) is a deadline in the `select!` loop. So the
//! task answers commands at once, and the status (read from the `watch`) is always current.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};

use super::adopt::{self, Record};
use super::{health, logs, now_ms, policy, reaper, Ids, OpError, Shared};
use crate::model::{ExitStatus, ProgramEvent, ProgramState, ProgramStatus};
use crate::release::Releases;
use crate::spec::{validate_argument, ProgramSpec, Signal};

pub(crate) type Reply = oneshot::Sender<Result<ProgramStatus, OpError>>;

/// A request to a program's task.
#[derive(Debug)]
pub(crate) enum Cmd {
    Start(Reply),
    /// `force` interrupts a deploy in progress (drain) instead of refusing.
    Stop {
        force: bool,
        reply: Reply,
    },
    Restart(Reply),
    Degrade(bool, Reply),
    Deploy {
        version: String,
        artifact: PathBuf,
        sha256_hex: String,
        upgrade: bool,
        reply: Reply,
    },
    Rollback {
        to: Option<String>,
        reply: Reply,
    },
    /// Agent exit with `on_exit = leave`: forget the process without touching it.
    Leave(oneshot::Sender<()>),
    /// Agent exit after a drain: stop whatever still runs, then end.
    Quit(oneshot::Sender<()>),
}

/// Results of work done outside the task.
#[derive(Debug)]
pub(crate) enum Internal {
    Health {
        gen: u64,
        idx: usize,
        result: Result<Duration, String>,
    },
    /// A deploy's install + activate finished; `Ok(previous current version)`.
    Switched {
        op: u64,
        result: Result<Option<String>, String>,
    },
}

/// A process recorded by the previous agent and found alive.
#[derive(Debug, Clone)]
pub(crate) struct Adopted {
    pub pid: u32,
    pub pgid: Option<i32>,
    pub record: Record,
}

#[derive(Debug)]
struct Proc {
    pid: u32,
    /// The process group to signal (our programs lead their own group).
    pgid: Option<i32>,
    start_ticks: u64,
    started: Instant,
    exit: oneshot::Receiver<ExitStatus>,
    waiter: JoinHandle<()>,
    /// Spawned by this agent (registered with the reaper), as opposed to adopted.
    owned: bool,
}

/// Why we asked the process to stop: decides what its exit leads to.
#[derive(Debug, Clone)]
enum Intent {
    Stop,
    Restart(String),
    Liveness(String),
    /// A deploy or rollback continues with a spawn.
    Op,
    Quit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WaitFor {
    /// Running (start_secs passed) or failed.
    Up,
    /// No process and nothing pending.
    Down,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum OpKind {
    Deploy {
        version: String,
        upgrade: bool,
    },
    /// `failed_upgrade`: the message to fail the original upgrade with once this is done.
    Rollback {
        to: String,
        failed_upgrade: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Installing,
    Restarting,
    /// Upgrade: started, waiting for every health check to pass.
    Gate,
}

#[derive(Debug)]
struct Op {
    id: u64,
    kind: OpKind,
    stage: Stage,
    reply: Option<Reply>,
    /// The version current before the switch (the rollback target of an upgrade).
    previous: Option<String>,
    /// Upgrade window end.
    deadline: Option<Instant>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Slot {
    next_at: Option<Instant>,
    in_flight: bool,
    consecutive: u32,
    passed_once: bool,
    slow: bool,
}

/// How the next process is started.
struct Launch {
    program: PathBuf,
    args: Vec<String>,
    cwd: PathBuf,
    env: Vec<(String, String)>,
    /// The release it runs from.
    version: Option<String>,
}

enum SpawnError {
    NoRelease,
    Other(String),
}

/// The task state of one program.
#[derive(Debug)]
pub(crate) struct Program {
    name: String,
    spec: ProgramSpec,
    ids: Ids,
    shared: Arc<Shared>,
    releases: Option<Releases>,
    st: ProgramStatus,
    watch: watch::Sender<ProgramStatus>,
    adopted: Option<Adopted>,
    proc_: Option<Proc>,
    failures: u32,
    intent: Option<Intent>,
    start_deadline: Option<Instant>,
    kill_at: Option<Instant>,
    restart_at: Option<Instant>,
    slots: Vec<Slot>,
    health_tasks: JoinSet<()>,
    gen: u64,
    waiters: Vec<(WaitFor, Reply)>,
    op: Option<Op>,
    next_op: u64,
    internal: mpsc::UnboundedSender<Internal>,
    /// Set when the task should end once the process is gone.
    quit: Option<oneshot::Sender<()>>,
    done: bool,
}

impl Program {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: String,
        spec: ProgramSpec,
        ids: Ids,
        shared: Arc<Shared>,
        releases: Option<Releases>,
        st: ProgramStatus,
        watch: watch::Sender<ProgramStatus>,
        adopted: Option<Adopted>,
        internal: mpsc::UnboundedSender<Internal>,
    ) -> Self {
        let slots = vec![Slot::default(); spec.health.len()];
        Self {
            name,
            spec,
            ids,
            shared,
            releases,
            st,
            watch,
            adopted,
            proc_: None,
            failures: 0,
            intent: None,
            start_deadline: None,
            kill_at: None,
            restart_at: None,
            slots,
            health_tasks: JoinSet::new(),
            gen: 0,
            waiters: Vec::new(),
            op: None,
            next_op: 0,
            internal,
            quit: None,
            done: false,
        }
    }

    pub async fn run(
        mut self,
        mut cmds: mpsc::Receiver<Cmd>,
        mut internal: mpsc::UnboundedReceiver<Internal>,
    ) {
        self.begin();
        while !self.done {
            self.schedule_health();
            let deadline = self
                .next_deadline()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                cmd = cmds.recv() => match cmd {
                    Some(cmd) => self.command(cmd),
                    // Every handle is gone (the supervisor was dropped): leave the process be.
                    None => self.leave(),
                },
                Some(ev) = internal.recv() => self.internal(ev),
                exit = async {
                    match self.proc_.as_mut() {
                        Some(p) => (&mut p.exit).await.unwrap_or(ExitStatus::Unknown),
                        None => std::future::pending().await,
                    }
                } => self.exited(exit),
                () = tokio::time::sleep_until(deadline.into()) => self.timers(),
            }
        }
    }

    /// Adopts the recorded process or autostarts.
    fn begin(&mut self) {
        if let Some(a) = self.adopted.take() {
            let (tx, rx) = oneshot::channel();
            let (pid, ticks) = (a.pid, a.record.start_ticks);
            let waiter = tokio::spawn(async move {
                adopt::wait_foreign_exit(pid, ticks).await;
                let _ = tx.send(ExitStatus::Unknown);
            });
            self.proc_ = Some(Proc {
                pid,
                pgid: a.pgid,
                start_ticks: ticks,
                // Uptime before adoption is unknown to the monotonic clock; count from now.
                started: Instant::now(),
                exit: rx,
                waiter,
                owned: false,
            });
            self.st.pid = Some(pid);
            self.st.started_ms = Some(a.record.started_ms);
            self.st.version = a.record.version.clone();
            self.st.degraded = a.record.degraded;
            self.start_health(Instant::now());
            let to = self.up_state();
            self.transition(to, format!("adopted pid {pid}"), None, false);
            return;
        }
        self.st.version = self.current_release();
        if !self.spec.autostart {
            self.transition(ProgramState::Stopped, "autostart off".into(), None, false);
        } else {
            self.spawn_or_fail("autostart");
        }
    }

    fn command(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Start(reply) => self.cmd_start(reply),
            Cmd::Stop { force, reply } => self.cmd_stop(force, reply),
            Cmd::Restart(reply) => self.cmd_restart(reply),
            Cmd::Degrade(on, reply) => self.cmd_degrade(on, reply),
            Cmd::Deploy {
                version,
                artifact,
                sha256_hex,
                upgrade,
                reply,
            } => self.cmd_deploy(version, artifact, sha256_hex, upgrade, reply),
            Cmd::Rollback { to, reply } => self.cmd_rollback(to, reply),
            Cmd::Leave(done) => {
                self.leave();
                let _ = done.send(());
            }
            Cmd::Quit(done) => {
                self.quit = Some(done);
                self.restart_at = None;
                self.abort_op("the agent is exiting");
                if self.proc_.is_some() {
                    if !matches!(self.intent, Some(Intent::Stop | Intent::Quit)) {
                        self.begin_stop(Intent::Quit, Some("agent exit"));
                    } else {
                        self.intent = Some(Intent::Quit);
                    }
                } else {
                    self.finish();
                }
            }
        }
    }

    fn busy_conflict(&self) -> Option<OpError> {
        if self.op.is_some() || self.st.state.is_transient() {
            Some(OpError::Conflict(format!(
                "{} is {} ({}); try again when it is done",
                self.name,
                self.st.state.as_str(),
                self.st.detail
            )))
        } else {
            None
        }
    }

    fn cmd_start(&mut self, reply: Reply) {
        if let Some(e) = self.busy_conflict() {
            let _ = reply.send(Err(e));
            return;
        }
        if self.proc_.is_some() {
            self.waiters.push((WaitFor::Up, reply));
            self.settle_waiters();
            return;
        }
        // An operator's start is a fresh start: the failure count and any backoff are reset.
        self.failures = 0;
        self.restart_at = None;
        self.waiters.push((WaitFor::Up, reply));
        self.spawn_or_fail("command start");
    }

    fn cmd_stop(&mut self, force: bool, reply: Reply) {
        if self.op.is_some() {
            if !force {
                let _ = reply.send(Err(self.busy_conflict().unwrap_or(OpError::Unavailable)));
                return;
            }
            self.abort_op("interrupted by a stop");
        }
        self.restart_at = None;
        if self.proc_.is_none() {
            if self.st.state != ProgramState::Stopped {
                self.transition(ProgramState::Stopped, "command stop".into(), None, false);
            }
            let _ = reply.send(Ok(self.st.clone()));
            return;
        }
        self.waiters.push((WaitFor::Down, reply));
        match self.intent {
            Some(Intent::Stop | Intent::Quit) => {}
            Some(_) => {
                // Already stopping for another reason: make it a stop.
                self.intent = Some(Intent::Stop);
                self.transition(ProgramState::Stopping, "command stop".into(), None, false);
            }
            None => self.begin_stop(Intent::Stop, Some("command stop")),
        }
    }

    fn cmd_restart(&mut self, reply: Reply) {
        if let Some(e) = self.busy_conflict() {
            let _ = reply.send(Err(e));
            return;
        }
        if self.proc_.is_none() {
            return self.cmd_start(reply);
        }
        self.waiters.push((WaitFor::Up, reply));
        self.begin_stop(
            Intent::Restart("command restart".into()),
            Some("command restart"),
        );
    }

    fn cmd_degrade(&mut self, on: bool, reply: Reply) {
        let Some(mode) = self.spec.degraded.clone() else {
            let _ = reply.send(Err(OpError::Invalid(format!(
                "{} has no degraded mode configured",
                self.name
            ))));
            return;
        };
        if let Some(e) = self.busy_conflict() {
            let _ = reply.send(Err(e));
            return;
        }
        if self.st.degraded == on {
            let _ = reply.send(Ok(self.st.clone()));
            return;
        }
        self.st.degraded = on;
        self.record();
        let reason = if on { "degrade on" } else { "degrade off" };
        let running = self.proc_.is_some() && self.start_deadline.is_none();
        if !mode.restarts() {
            let sig = if on { mode.signal } else { mode.restore_signal };
            if running {
                if let Some(sig) = sig {
                    self.signal_main(sig);
                }
                let to = self.up_state();
                self.transition(to, reason.into(), None, false);
            } else {
                // Applied when the process counts as started.
                self.publish();
            }
            let _ = reply.send(Ok(self.st.clone()));
            return;
        }
        if self.proc_.is_some() {
            self.waiters.push((WaitFor::Up, reply));
            self.begin_stop(Intent::Restart(reason.into()), Some(reason));
        } else {
            self.publish();
            let _ = reply.send(Ok(self.st.clone()));
        }
    }

    fn cmd_deploy(
        &mut self,
        version: String,
        artifact: PathBuf,
        sha256_hex: String,
        upgrade: bool,
        reply: Reply,
    ) {
        let Some(releases) = self.releases.clone() else {
            let _ = reply.send(Err(OpError::Invalid(format!(
                "{} is not deployed from releases (no [programs.{}.release])",
                self.name, self.name
            ))));
            return;
        };
        if let Err(e) = validate_argument(&version) {
            let _ = reply.send(Err(OpError::Invalid(format!("version: {e}"))));
            return;
        }
        if let Some(e) = self.busy_conflict() {
            let _ = reply.send(Err(e));
            return;
        }
        self.next_op += 1;
        let id = self.next_op;
        self.op = Some(Op {
            id,
            kind: OpKind::Deploy {
                version: version.clone(),
                upgrade,
            },
            stage: Stage::Installing,
            reply: Some(reply),
            previous: None,
            deadline: None,
        });
        let to = if upgrade {
            ProgramState::Upgrading
        } else {
            ProgramState::Deploying
        };
        self.transition(to, format!("deploy {version}"), None, false);
        let tx = self.internal.clone();
        // Unpacking can take seconds: off the task, on a blocking thread.
        tokio::task::spawn_blocking(move || {
            let result = releases
                .install(&version, &artifact, &sha256_hex)
                .and_then(|_| {
                    let previous = releases.current()?;
                    releases.activate(&version)?;
                    Ok(previous)
                })
                .map_err(|e| e.to_string());
            if result.is_ok() {
                if let Err(e) = releases.prune() {
                    tracing::warn!(error = %e, "cannot prune old releases");
                }
            }
            let _ = tx.send(Internal::Switched { op: id, result });
        });
    }

    fn cmd_rollback(&mut self, to: Option<String>, reply: Reply) {
        let Some(releases) = self.releases.clone() else {
            let _ = reply.send(Err(OpError::Invalid(format!(
                "{} is not deployed from releases",
                self.name
            ))));
            return;
        };
        if let Some(e) = self.busy_conflict() {
            let _ = reply.send(Err(e));
            return;
        }
        let target = match to {
            Some(v) => {
                if let Err(e) = validate_argument(&v) {
                    let _ = reply.send(Err(OpError::Invalid(format!("version: {e}"))));
                    return;
                }
                v
            }
            None => match releases.previous() {
                Ok(Some(v)) => v,
                Ok(None) => {
                    let _ = reply.send(Err(OpError::Invalid(format!(
                        "{} has no previous release to roll back to",
                        self.name
                    ))));
                    return;
                }
                Err(e) => {
                    let _ = reply.send(Err(OpError::Failed(e.to_string())));
                    return;
                }
            },
        };
        // A symlink switch: quick enough to do here.
        let previous = match releases.current() {
            Ok(p) => p,
            Err(e) => {
                let _ = reply.send(Err(OpError::Failed(e.to_string())));
                return;
            }
        };
        if let Err(e) = releases.activate(&target) {
            let err = match e {
                crate::release::ReleaseError::NotInstalled(_)
                | crate::release::ReleaseError::InvalidVersion(_) => {
                    OpError::Invalid(e.to_string())
                }
                other => OpError::Failed(other.to_string()),
            };
            let _ = reply.send(Err(err));
            return;
        }
        self.next_op += 1;
        self.op = Some(Op {
            id: self.next_op,
            kind: OpKind::Rollback {
                to: target.clone(),
                failed_upgrade: None,
            },
            stage: Stage::Restarting,
            reply: Some(reply),
            previous,
            deadline: None,
        });
        self.transition(
            ProgramState::Deploying,
            format!("rollback to {target}"),
            None,
            false,
        );
        self.restart_op();
    }

    /// Stops the running process for the op (the state stays deploying) or spawns at once.
    fn restart_op(&mut self) {
        self.restart_at = None;
        self.failures = 0;
        if self.proc_.is_some() {
            self.begin_stop(Intent::Op, None);
        } else {
            self.spawn_op();
        }
    }

    fn spawn_op(&mut self) {
        let (state, reason, upgrade) = match &self.op {
            Some(Op {
                kind: OpKind::Deploy { version, upgrade },
                ..
            }) => (
                if *upgrade {
                    ProgramState::Upgrading
                } else {
                    ProgramState::Deploying
                },
                format!("deploy {version}: spawned"),
                *upgrade,
            ),
            Some(Op {
                kind: OpKind::Rollback { to, .. },
                ..
            }) => (
                ProgramState::Deploying,
                format!("rollback to {to}: spawned"),
                false,
            ),
            None => return,
        };
        match self.spawn(&reason, state) {
            Ok(()) => {
                if upgrade {
                    let window = self
                        .spec
                        .release
                        .map(|r| r.upgrade_window)
                        .unwrap_or_default();
                    if let Some(op) = self.op.as_mut() {
                        op.deadline = Some(Instant::now() + window);
                    }
                }
            }
            Err(e) => {
                let msg = spawn_error_text(&e);
                if upgrade {
                    self.rollback_failed_upgrade(format!("cannot start: {msg}"));
                } else {
                    self.finish_op(Err(OpError::Failed(format!("cannot start: {msg}"))));
                    self.failed_spawn(msg);
                }
            }
        }
    }

    fn internal(&mut self, ev: Internal) {
        match ev {
            Internal::Health { gen, idx, result } => self.health_result(gen, idx, result),
            Internal::Switched { op, result } => {
                if self.op.as_ref().map(|o| o.id) != Some(op) {
                    return; // interrupted meanwhile
                }
                match result {
                    Ok(previous) => {
                        if let Some(o) = self.op.as_mut() {
                            o.previous = previous;
                            o.stage = Stage::Restarting;
                        }
                        self.st.version = self.current_release();
                        self.restart_op();
                    }
                    Err(e) => {
                        // Nothing was switched: the program carries on as it was.
                        let to = self.resting_state();
                        let reason = format!("deploy failed: {e}");
                        self.complete_op(to, reason, false, Err(OpError::Failed(e)));
                    }
                }
            }
        }
    }

    /// What state fits when an operation ends without changing the process.
    fn resting_state(&self) -> ProgramState {
        if self.proc_.is_some() {
            if self.start_deadline.is_some() {
                ProgramState::Starting
            } else {
                self.up_state()
            }
        } else if self.restart_at.is_some() {
            ProgramState::Waiting
        } else {
            ProgramState::Stopped
        }
    }

    fn timers(&mut self) {
        let now = Instant::now();
        if self.kill_at.is_some_and(|t| t <= now) {
            self.kill_at = None;
            if let Some(p) = &self.proc_ {
                tracing::warn!(program = %self.name, pid = p.pid, "stop grace passed: SIGKILL to the process group");
                signal(p.pid, p.pgid, libc::SIGKILL);
            }
            self.st.detail = "stop grace passed: SIGKILL".into();
            self.publish();
        }
        if self.start_deadline.is_some_and(|t| t <= now) {
            self.start_deadline = None;
            self.started();
        }
        if self.restart_at.is_some_and(|t| t <= now) {
            self.restart_at = None;
            self.st.restarts += 1;
            self.spawn_or_fail("backoff over");
        }
        let gate_over = self
            .op
            .as_ref()
            .and_then(|o| o.deadline)
            .is_some_and(|t| t <= now);
        if gate_over {
            let window = self
                .spec
                .release
                .map(|r| r.upgrade_window)
                .unwrap_or_default();
            self.rollback_failed_upgrade(format!(
                "health did not pass within {}",
                humantime_serde::re::humantime::format_duration(window)
            ));
        }
    }

    /// The process stayed up for start_secs.
    fn started(&mut self) {
        if self.proc_.is_none() || self.intent.is_some() {
            return;
        }
        self.start_health(Instant::now());
        if self.op.is_some() {
            let kind = self
                .op
                .as_ref()
                .filter(|o| o.stage == Stage::Restarting)
                .map(|o| o.kind.clone());
            match kind {
                Some(OpKind::Deploy { upgrade: true, .. }) => {
                    if let Some(op) = self.op.as_mut() {
                        op.stage = Stage::Gate;
                    }
                    self.check_gate();
                }
                Some(OpKind::Deploy { version, .. }) => {
                    let to = self.up_state();
                    self.complete_op(to, format!("deployed {version}"), false, Ok(()));
                }
                Some(OpKind::Rollback { to, failed_upgrade }) => {
                    let outcome = match failed_upgrade {
                        Some(msg) => Err(OpError::Failed(msg)),
                        None => Ok(()),
                    };
                    let state = self.up_state();
                    self.complete_op(state, format!("rolled back to {to}"), false, outcome);
                }
                None => {}
            }
            return;
        }
        if self.st.state == ProgramState::Starting {
            if self.st.degraded {
                if let Some(sig) = self.spec.degraded.as_ref().and_then(|d| d.signal) {
                    self.signal_main(sig);
                }
            }
            let to = self.up_state();
            self.transition(to, "started".into(), None, false);
        }
    }

    fn check_gate(&mut self) {
        let Some(op) = &self.op else { return };
        if op.stage != Stage::Gate || self.start_deadline.is_some() {
            return;
        }
        if self.slots.iter().all(|s| s.passed_once) {
            let version = match &op.kind {
                OpKind::Deploy { version, .. } => version.clone(),
                OpKind::Rollback { to, .. } => to.clone(),
            };
            let to = self.up_state();
            self.complete_op(to, format!("upgraded to {version}: healthy"), false, Ok(()));
        }
    }

    /// An upgrade failed its gate: put the previous release back and restart it.
    fn rollback_failed_upgrade(&mut self, why: String) {
        let Some(op) = self.op.as_mut() else { return };
        let OpKind::Deploy {
            version,
            upgrade: true,
        } = &op.kind
        else {
            return;
        };
        let version = version.clone();
        let previous = op.previous.clone();
        let Some(previous) = previous else {
            // Nothing to go back to: keep what runs, and say so.
            let msg = format!(
                "upgrade to {version} failed ({why}) and there is no previous release to roll back to"
            );
            let to = self.resting_state();
            self.complete_op(to, msg.clone(), true, Err(OpError::Failed(msg)));
            return;
        };
        let msg = format!("upgrade to {version} failed ({why}); rolled back to {previous}");
        if let Some(r) = &self.releases {
            if let Err(e) = r.activate(&previous) {
                let msg = format!("{msg} FAILED: {e}");
                let to = self.resting_state();
                self.complete_op(to, msg.clone(), true, Err(OpError::Failed(msg)));
                return;
            }
        }
        op.kind = OpKind::Rollback {
            to: previous,
            failed_upgrade: Some(msg.clone()),
        };
        op.stage = Stage::Restarting;
        op.deadline = None;
        self.st.detail = msg;
        self.transition(
            ProgramState::Deploying,
            "rollback: health failed".into(),
            None,
            true,
        );
        self.intent = None;
        self.kill_at = None;
        self.restart_op();
    }

    fn abort_op(&mut self, why: &str) {
        if self.op.is_some() {
            let msg = format!("{}: {why}", self.name);
            self.finish_op(Err(OpError::Failed(msg)));
        }
    }

    /// Ends the op without a state change and answers its caller.
    fn finish_op(&mut self, outcome: Result<(), OpError>) {
        if let Some(reply) = self.op.take().and_then(|o| o.reply) {
            let _ = reply.send(outcome.map(|()| self.st.clone()));
        }
    }

    /// Ends the op with a transition, then answers its caller with the new status.
    fn complete_op(
        &mut self,
        to: ProgramState,
        reason: String,
        alarm: bool,
        outcome: Result<(), OpError>,
    ) {
        let reply = self.op.take().and_then(|o| o.reply);
        self.transition(to, reason, None, alarm);
        if let Some(reply) = reply {
            let _ = reply.send(outcome.map(|()| self.st.clone()));
        }
    }
}

impl Program {
    fn up_state(&self) -> ProgramState {
        if self.st.degraded {
            ProgramState::Degraded
        } else if self.slots.iter().any(|s| s.slow) {
            ProgramState::Busy
        } else {
            ProgramState::Running
        }
    }

    fn current_release(&self) -> Option<String> {
        self.releases
            .as_ref()
            .and_then(|r| r.current().ok().flatten())
    }

    /// Spawns the program; on failure counts a failure (backoff, then error).
    fn spawn_or_fail(&mut self, reason: &str) {
        match self.spawn(reason, ProgramState::Starting) {
            Ok(()) => {}
            Err(SpawnError::NoRelease) => {
                self.transition(
                    ProgramState::Stopped,
                    "no release installed: deploy one first".into(),
                    None,
                    false,
                );
            }
            Err(SpawnError::Other(e)) => self.failed_spawn(e),
        }
    }

    fn failed_spawn(&mut self, e: String) {
        tracing::warn!(program = %self.name, error = %e, "cannot start");
        self.after_failure(format!("spawn failed: {e}"), None, true, Duration::ZERO);
    }

    /// The command line, directory and environment of the next process.
    fn launch(&self) -> Result<Launch, SpawnError> {
        let (release_dir, version) = match &self.releases {
            Some(r) => {
                let v = r
                    .current()
                    .map_err(|e| SpawnError::Other(e.to_string()))?
                    .ok_or(SpawnError::NoRelease)?;
                // The versioned directory, not `current`: the process keeps its tree even
                // when another version is activated while it runs.
                (Some(r.release_dir(&v)), Some(v))
            }
            None => (None, None),
        };
        let cmd = &self.spec.command;
        let program = if cmd.starts_with('/') {
            PathBuf::from(cmd)
        } else if let Some(found) = release_dir
            .as_ref()
            .map(|d| d.join(cmd))
            .filter(|p| p.exists())
        {
            found
        } else if !cmd.contains('/') {
            PathBuf::from(cmd) // looked up on PATH by exec
        } else {
            return Err(SpawnError::Other(format!(
                "{cmd} not found in release {}",
                version.as_deref().unwrap_or("?")
            )));
        };
        let cwd = self
            .spec
            .cwd
            .clone()
            .or(release_dir)
            .unwrap_or_else(|| self.shared.cfg.dir.clone());
        let mut args = self.spec.args.clone();
        let mut env: Vec<(String, String)> = self
            .spec
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if self.st.degraded {
            if let Some(d) = self.spec.degraded.as_ref().filter(|d| d.restarts()) {
                if let Some(a) = &d.args {
                    args = a.clone();
                }
                env.extend(d.env.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
        }
        Ok(Launch {
            program,
            args,
            cwd,
            env,
            version,
        })
    }

    fn spawn(&mut self, reason: &str, state: ProgramState) -> Result<(), SpawnError> {
        let Launch {
            program,
            args,
            cwd,
            env,
            version,
        } = self.launch()?;
        let other = |what: &str, e: std::io::Error| SpawnError::Other(format!("{what}: {e}"));
        let out_path = logs::log_path(&self.shared.logs_dir, &self.name, logs::LogStream::Stdout);
        let err_path = logs::log_path(&self.shared.logs_dir, &self.name, logs::LogStream::Stderr);
        let out = logs::open_for_child(&out_path)
            .map_err(|e| other(&out_path.display().to_string(), e))?;
        let err = logs::open_for_child(&err_path)
            .map_err(|e| other(&err_path.display().to_string(), e))?;
        let mut cmd = crate::child::command(&program);
        // kill_on_drop(false): a supervised program must outlive this handle (on_exit = leave,
        // or an agent crash) so the next agent can re-adopt it; its end is always explicit
        // (stop signal, then SIGKILL to its group).
        cmd.kill_on_drop(false)
            .args(&args)
            .current_dir(&cwd)
            .envs(env)
            .stdout(out)
            .stderr(err);
        if let Some(uid) = self.ids.uid {
            cmd.uid(uid);
        }
        if let Some(gid) = self.ids.gid {
            cmd.gid(gid);
        }
        let mut child = reaper::spawn_registered(&mut cmd)
            .map_err(|e| other(&program.display().to_string(), e))?;
        let Some(pid) = child.id() else {
            return Err(SpawnError::Other("the process vanished at once".into()));
        };
        let start_ticks = adopt::read_stat(pid).map_or(0, |s| s.start_ticks);
        let (tx, rx) = oneshot::channel();
        let waiter = tokio::spawn(async move {
            let status = child.wait().await;
            reaper::unregister(pid);
            let _ = tx.send(status.map_or(ExitStatus::Unknown, ExitStatus::from_std));
        });
        let now = Instant::now();
        self.gen += 1;
        self.proc_ = Some(Proc {
            pid,
            pgid: libc::pid_t::try_from(pid).ok(),
            start_ticks,
            started: now,
            exit: rx,
            waiter,
            owned: true,
        });
        self.intent = None;
        self.kill_at = None;
        self.start_deadline = Some(now + self.spec.start_secs);
        self.st.pid = Some(pid);
        self.st.started_ms = Some(now_ms());
        self.st.version = version;
        self.st.health_failures = 0;
        for s in &mut self.slots {
            *s = Slot::default();
        }
        self.record();
        tracing::info!(program = %self.name, pid, "spawned");
        self.transition(state, reason.to_string(), None, false);
        Ok(())
    }

    /// Writes (or clears) this program's line in the state file.
    fn record(&self) {
        let record = self.proc_.as_ref().map(|p| Record {
            pid: p.pid,
            start_ticks: p.start_ticks,
            started_ms: self.st.started_ms.unwrap_or_default(),
            version: self.st.version.clone(),
            degraded: self.st.degraded,
        });
        self.shared.state.set(&self.name, record);
    }

    /// Sends the stop signal to the process group and arms the SIGKILL deadline.
    fn begin_stop(&mut self, intent: Intent, reason: Option<&str>) {
        let Some(p) = &self.proc_ else { return };
        signal(p.pid, p.pgid, self.spec.stop_signal.number());
        self.intent = Some(intent);
        self.kill_at = Some(Instant::now() + self.spec.stop_grace);
        self.start_deadline = None;
        self.restart_at = None;
        self.stop_health();
        if let Some(reason) = reason {
            self.transition(ProgramState::Stopping, reason.to_string(), None, false);
        }
    }

    fn signal_main(&self, sig: Signal) {
        if let Some(p) = &self.proc_ {
            // The degrade signals go to the main process only: its children are its business.
            signal(p.pid, None, sig.number());
        }
    }

    fn exited(&mut self, exit: ExitStatus) {
        let Some(p) = self.proc_.take() else { return };
        // Whatever is left of the group (children that ignored the stop signal, or orphans of a
        // crash) would hold ports and files the next process needs.
        if let Some(pgid) = p.pgid {
            // SAFETY: signals a group our program led; ESRCH when it is empty is fine.
            unsafe { libc::killpg(pgid, libc::SIGKILL) };
        }
        let uptime = p.started.elapsed();
        tracing::info!(program = %self.name, pid = p.pid, %exit, "exited");
        self.st.pid = None;
        self.st.started_ms = None;
        self.st.last_exit = Some(exit);
        self.st.last_exit_ms = Some(now_ms());
        self.st.health_failures = 0;
        self.start_deadline = None;
        self.kill_at = None;
        self.stop_health();
        self.record();
        match self.intent.take() {
            Some(Intent::Stop) => {
                self.transition(ProgramState::Stopped, "stopped".into(), Some(exit), false);
            }
            Some(Intent::Quit) => {
                self.transition(
                    ProgramState::Stopped,
                    "agent exit".into(),
                    Some(exit),
                    false,
                );
                self.finish();
            }
            Some(Intent::Restart(reason)) => {
                // Straight from stopping to starting: a waiting `restart` must not see `stopped`.
                self.failures = 0;
                self.spawn_or_fail(&reason);
            }
            Some(Intent::Op) => self.spawn_op(),
            Some(Intent::Liveness(why)) => self.after_failure(why, Some(exit), true, uptime),
            None => {
                if self
                    .op
                    .as_ref()
                    .is_some_and(|o| o.stage != Stage::Installing)
                {
                    let why = format!("exited ({exit}) while starting the new release");
                    if matches!(
                        self.op.as_ref().map(|o| &o.kind),
                        Some(OpKind::Deploy { upgrade: true, .. })
                    ) {
                        self.st.last_exit = Some(exit);
                        return self.rollback_failed_upgrade(why);
                    }
                    self.finish_op(Err(OpError::Failed(why)));
                }
                self.after_failure(
                    format!("exited ({exit})"),
                    Some(exit),
                    !exit.success(),
                    uptime,
                );
            }
        }
    }

    /// An unplanned end: crashed, then restarted after a backoff, or given up.
    fn after_failure(
        &mut self,
        why: String,
        exit: Option<ExitStatus>,
        failed: bool,
        uptime: Duration,
    ) {
        use policy::AfterExit;
        match policy::after_exit(&self.spec, &mut self.failures, failed, uptime) {
            AfterExit::Stopped => self.transition(ProgramState::Stopped, why, exit, false),
            AfterExit::Crashed => self.transition(ProgramState::Crashed, why, exit, false),
            AfterExit::Restart { delay, attempt } => {
                self.transition(ProgramState::Crashed, why, exit, false);
                self.restart_at = Some(Instant::now() + delay);
                let reason = format!(
                    "backoff {} (failure {attempt} of {})",
                    humantime_serde::re::humantime::format_duration(delay),
                    self.spec.start_limit
                );
                self.transition(ProgramState::Waiting, reason, None, false);
            }
            AfterExit::GiveUp { failures } => {
                self.transition(ProgramState::Crashed, why.clone(), exit, false);
                let reason = format!("start limit: {failures} consecutive failures, last: {why}");
                tracing::error!(program = %self.name, %reason, "giving up");
                self.transition(ProgramState::Error, reason, None, true);
            }
        }
    }

    /// Forgets the process without touching it (agent exit with `on_exit = leave`).
    fn leave(&mut self) {
        if let Some(p) = self.proc_.take() {
            // Dropping the aborted waiter drops the `Child` (kill_on_drop is off): tokio's orphan
            // queue reaps it if it ends while we still run; the reaper may do so too.
            p.waiter.abort();
            if p.owned {
                reaper::unregister(p.pid);
            }
            self.record_left(&p);
        }
        self.stop_health();
        self.done = true;
    }

    fn record_left(&self, p: &Proc) {
        self.shared.state.set(
            &self.name,
            Some(Record {
                pid: p.pid,
                start_ticks: p.start_ticks,
                started_ms: self.st.started_ms.unwrap_or_default(),
                version: self.st.version.clone(),
                degraded: self.st.degraded,
            }),
        );
    }

    fn finish(&mut self) {
        if let Some(done) = self.quit.take() {
            let _ = done.send(());
        }
        self.done = true;
    }

    fn next_deadline(&self) -> Option<Instant> {
        let health = self
            .slots
            .iter()
            .filter(|s| !s.in_flight)
            .filter_map(|s| s.next_at);
        [
            self.start_deadline,
            self.kill_at,
            self.restart_at,
            self.op.as_ref().and_then(|o| o.deadline),
        ]
        .into_iter()
        .flatten()
        .chain(health)
        .min()
    }

    fn start_health(&mut self, at: Instant) {
        for s in &mut self.slots {
            s.next_at = Some(at);
            s.in_flight = false;
        }
    }

    fn stop_health(&mut self) {
        self.health_tasks.abort_all();
        for s in &mut self.slots {
            *s = Slot::default();
        }
        self.gen += 1;
    }

    /// Launches the checks that are due.
    fn schedule_health(&mut self) {
        while self.health_tasks.try_join_next().is_some() {}
        if self.proc_.is_none() || self.intent.is_some() {
            return;
        }
        let now = Instant::now();
        for (idx, slot) in self.slots.iter_mut().enumerate() {
            if slot.in_flight || slot.next_at.is_none_or(|t| t > now) {
                continue;
            }
            let Some(check) = self.spec.health.get(idx).cloned() else {
                continue;
            };
            slot.in_flight = true;
            slot.next_at = Some(now + check.interval);
            let tx = self.internal.clone();
            let gen = self.gen;
            self.health_tasks.spawn(async move {
                let result = health::probe(&check).await;
                let _ = tx.send(Internal::Health { gen, idx, result });
            });
        }
    }

    fn health_result(&mut self, gen: u64, idx: usize, result: Result<Duration, String>) {
        if gen != self.gen || self.proc_.is_none() || self.intent.is_some() {
            return; // a result about a previous process
        }
        let Some(check) = self.spec.health.get(idx) else {
            return;
        };
        let limit = check.failures;
        let slow_limit = check.slow;
        let Some(slot) = self.slots.get_mut(idx) else {
            return;
        };
        slot.in_flight = false;
        match result {
            Ok(took) => {
                slot.consecutive = 0;
                slot.passed_once = true;
                slot.slow = slow_limit.is_some_and(|s| took > s);
                let slow = slot.slow;
                self.st.health_failures =
                    self.slots.iter().map(|s| s.consecutive).max().unwrap_or(0);
                if matches!(self.st.state, ProgramState::Running | ProgramState::Busy) {
                    let to = self.up_state();
                    if to != self.st.state {
                        let reason = if slow {
                            format!("health slow: {}ms", took.as_millis())
                        } else {
                            "health fast again".into()
                        };
                        self.transition(to, reason, None, false);
                    }
                }
                self.check_gate();
            }
            Err(why) => {
                slot.consecutive += 1;
                let consecutive = slot.consecutive;
                self.st.health_failures =
                    self.slots.iter().map(|s| s.consecutive).max().unwrap_or(0);
                self.st.detail = format!("health: {why}");
                self.publish();
                if consecutive >= limit {
                    let reason = format!("health failed: {why}");
                    tracing::warn!(program = %self.name, %reason, "liveness failed");
                    if matches!(
                        self.op.as_ref().map(|o| &o.kind),
                        Some(OpKind::Deploy { upgrade: true, .. })
                    ) {
                        self.rollback_failed_upgrade(reason);
                    } else if self.op.is_none() {
                        self.begin_stop(Intent::Liveness(reason.clone()), Some(&reason));
                    }
                }
            }
        }
    }

    /// Enters `to`: updates the status, publishes an event when the state changed, and answers
    /// the callers waiting for this.
    fn transition(
        &mut self,
        to: ProgramState,
        reason: String,
        exit: Option<ExitStatus>,
        alarm: bool,
    ) {
        let from = self.st.state;
        let now = now_ms();
        if from != to {
            self.st.since_ms = now;
        }
        self.st.state = to;
        self.st.detail = reason.clone();
        self.publish();
        if from != to || alarm {
            tracing::debug!(program = %self.name, from = from.as_str(), to = to.as_str(), %reason, "transition");
            self.shared.emit(ProgramEvent {
                program: self.name.clone(),
                from,
                to,
                reason,
                pid: self.st.pid.or(self.proc_.as_ref().map(|p| p.pid)),
                exit,
                restarts: self.st.restarts,
                version: self.st.version.clone(),
                ts_ms: now,
                alarm,
            });
        }
        self.settle_waiters();
    }

    fn publish(&self) {
        self.watch.send_replace(self.st.clone());
    }

    fn settle_waiters(&mut self) {
        if self.waiters.is_empty() {
            return;
        }
        let state = self.st.state;
        let alive = self.proc_.is_some();
        let starting = self.start_deadline.is_some() || self.op.is_some();
        for (want, reply) in std::mem::take(&mut self.waiters) {
            use ProgramState as S;
            let outcome = match want {
                WaitFor::Up => match state {
                    S::Running | S::Busy | S::Degraded if alive && !starting => Some(Ok(())),
                    S::Crashed | S::Waiting | S::Error | S::Stopped if self.intent.is_none() => {
                        Some(Err(OpError::Failed(format!(
                            "{} is {}: {}",
                            self.name,
                            state.as_str(),
                            self.st.detail
                        ))))
                    }
                    _ => None,
                },
                WaitFor::Down => match state {
                    S::Stopped | S::Crashed | S::Error if !alive => Some(Ok(())),
                    _ => None,
                },
            };
            match outcome {
                Some(o) => {
                    let _ = reply.send(o.map(|()| self.st.clone()));
                }
                None => self.waiters.push((want, reply)),
            }
        }
    }
}

fn spawn_error_text(e: &SpawnError) -> String {
    match e {
        SpawnError::NoRelease => "no release installed".into(),
        SpawnError::Other(s) => s.clone(),
    }
}

/// Sends `sig` to the process group `pgid` if known, else to `pid`.
fn signal(pid: u32, pgid: Option<i32>, sig: i32) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: plain signal delivery to a process (group) we started or adopted; a vanished
    // target (ESRCH) is harmless and the exit is observed separately.
    unsafe {
        match pgid {
            Some(g) => libc::killpg(g, sig),
            None => libc::kill(pid, sig),
        };
    }
}
