//! The node supervisor: starts, watches, restarts and stops a node's worker programs, captures
//! their logs, deploys their releases, and survives its own restarts by re-adopting them.
//!
//! Shape: one task per program owns that program's process and state machine
//! (`program.rs`); the cloneable [`SupervisorHandle`] sends it commands over an `mpsc` channel and
//! gets answers on a `oneshot`. Every program task publishes its status into a `watch`, so
//! [`SupervisorHandle::status`] reads it without a round trip: it answers in microseconds even
//! while a stop waits out its grace or a deploy unpacks. [`Supervisor::run`] owns the program
//! tasks, the orphan reaper (`reaper.rs`) and log rotation (`logs.rs`), and drains or leaves the
//! programs on shutdown.
//!
//! States: `starting` → `running` (up for `start_secs`) ⇄ `busy` (a health check passes slowly)
//! or `degraded`; `stopping` → `stopped`; an unplanned exit → `crashed` → `waiting` (backoff) →
//! `starting` …, until `start_limit` consecutive failures → `error` (alarm); `deploying` /
//! `upgrading` while a release is switched. Every change is published as a `ProgramEvent`.
//!
//! Persistence: `<dir>/supervisor-state.json` (`adopt.rs`) records each running program's pid,
//! start time in clock ticks, version and degraded flag, rewritten atomically on every spawn and
//! exit. A new supervisor adopts a recorded process whose `/proc/<pid>/stat` start time matches
//! instead of starting a second copy, and watches its exit through a pidfd.
//!
//! Decisions worth knowing:
//! - Restart backoff and the start limit: `policy.rs` (the failure count resets once a process
//!   stayed up `max(start_secs, backoff.max)`).
//! - Logs: the child writes straight into `O_APPEND` files, rotated copy-truncate (`logs.rs`),
//!   so programs keep logging while the agent is down.
//! - When a program's main process exits, whatever is left of its process group is SIGKILLed, so
//!   a restart never competes with leftovers for ports or files.
//! - An adopted process's exit status cannot be known (`ExitStatus::Unknown`); it counts as a
//!   failure, so `on-failure` restarts it.
//! - A deploy or rollback starts the program even if it was stopped; a forced stop (drain)
//!   interrupts a deploy, whose release may already have been switched.
//! - `run` must be running for commands to be answered; `status` works regardless.
//!
//! Knows nothing of NATS.

mod adopt;
mod health;
mod logs;
mod policy;
mod program;
mod reaper;

use std::collections::BTreeMap;
use std::ffi::CString;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

pub use adopt::STATE_FILE;
pub use logs::{LogStream, MAX_LINES};

use crate::model::{ProgramEvent, ProgramState, ProgramStatus};
use crate::release::Releases;
use crate::spec::{self, OnExit, ProgramSpec, SpecError, SupervisorConfig};
use program::{Adopted, Cmd, Program};

/// Why the supervisor cannot start.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("programs.{program}: {message}")]
    Identity { program: String, message: String },
    #[error("cannot create {}: {source}", .path.display())]
    Dir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot become the child subreaper (prctl PR_SET_CHILD_SUBREAPER): {0}")]
    Subreaper(#[source] io::Error),
}

/// Why a command failed; the distinctions a caller (the command layer) answers differently.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpError {
    #[error("unknown program {0:?}")]
    UnknownProgram(String),
    #[error("invalid request: {0}")]
    Invalid(String),
    /// Another operation is in progress (stopping, deploying, upgrading); retry later.
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("failed: {0}")]
    Failed(String),
    /// The supervisor is not running (never started, or shut down).
    #[error("the supervisor is not running")]
    Unavailable,
}

/// A program's resolved user and group.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Ids {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

/// What every program task shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub cfg: SupervisorConfig,
    pub logs_dir: PathBuf,
    events: mpsc::Sender<ProgramEvent>,
    dropped: AtomicU64,
    pub state: adopt::StateStore,
}

impl Shared {
    /// Publishes an event without ever waiting: a full or closed channel drops it (counted).
    pub fn emit(&self, ev: ProgramEvent) {
        if self.events.try_send(ev).is_err() {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!(
                    dropped = n,
                    "program events dropped: the consumer is behind"
                );
            }
        }
    }
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

type Seed = (
    Program,
    mpsc::Receiver<Cmd>,
    mpsc::UnboundedReceiver<program::Internal>,
);

/// The supervisor, before it runs. See the module docs.
#[derive(Debug)]
pub struct Supervisor {
    shared: Arc<Shared>,
    seeds: Vec<(String, Seed)>,
    handle: SupervisorHandle,
}

#[derive(Debug)]
struct Entry {
    tx: mpsc::Sender<Cmd>,
    status: watch::Receiver<ProgramStatus>,
}

#[derive(Debug)]
struct Inner {
    programs: BTreeMap<String, Entry>,
    /// `shutdown_order`, then the others in reverse name order.
    drain_order: Vec<String>,
    shared: Arc<Shared>,
}

/// The cloneable way to talk to a running [`Supervisor`].
#[derive(Debug, Clone)]
pub struct SupervisorHandle {
    inner: Arc<Inner>,
}

/// How often log sizes are checked for rotation.
const ROTATE_EVERY: Duration = Duration::from_secs(1);

impl Supervisor {
    /// Validates the config, resolves users, creates the directories, makes this process the
    /// child subreaper, and decides which recorded programs are adopted; `run` then adopts those
    /// and autostarts the rest. Events go to `events` (never waited on: dropped when full).
    pub fn new(
        cfg: SupervisorConfig,
        programs: BTreeMap<String, ProgramSpec>,
        events: mpsc::Sender<ProgramEvent>,
    ) -> Result<(Supervisor, SupervisorHandle), SupervisorError> {
        spec::validate(&cfg, &programs)?;
        let mut ids = BTreeMap::new();
        for (name, p) in &programs {
            let resolved = resolve_ids(p).map_err(|message| SupervisorError::Identity {
                program: name.clone(),
                message,
            })?;
            ids.insert(name.clone(), resolved);
        }
        let logs_dir = cfg.dir.join("logs");
        for dir in [&cfg.dir, &logs_dir] {
            std::fs::create_dir_all(dir).map_err(|source| SupervisorError::Dir {
                path: dir.clone(),
                source,
            })?;
        }
        reaper::become_subreaper().map_err(SupervisorError::Subreaper)?;

        let state = adopt::StateStore::load(&cfg.dir);
        let records = state.records();
        for (name, r) in &records {
            if !programs.contains_key(name)
                && adopt::is_same_live_process(r.pid, r.start_ticks).is_some()
            {
                tracing::warn!(program = %name, pid = r.pid, "a recorded program is no longer configured; it is left running, unsupervised");
            }
        }
        state.retain(|name| programs.contains_key(name));

        let mut drain_order = cfg.shutdown_order.clone();
        drain_order.extend(
            programs
                .keys()
                .rev()
                .filter(|n| !cfg.shutdown_order.contains(n))
                .cloned(),
        );

        let shared = Arc::new(Shared {
            logs_dir,
            events,
            dropped: AtomicU64::new(0),
            state,
            cfg,
        });
        let mut entries = BTreeMap::new();
        let mut seeds = Vec::new();
        for (name, p) in programs {
            let releases = match &p.release {
                Some(r) => {
                    let root = shared.cfg.dir.join("programs").join(&name);
                    std::fs::create_dir_all(&root).map_err(|source| SupervisorError::Dir {
                        path: root.clone(),
                        source,
                    })?;
                    Some(Releases::new(root, r.keep as usize))
                }
                None => None,
            };
            let adopted = records.get(&name).and_then(|r| {
                adopt::is_same_live_process(r.pid, r.start_ticks).map(|stat| Adopted {
                    pid: r.pid,
                    // Signal the group only if the process still leads it.
                    pgid: (u32::try_from(stat.pgrp).ok() == Some(r.pid)).then_some(stat.pgrp),
                    record: r.clone(),
                })
            });
            let initial = ProgramStatus {
                name: name.clone(),
                state: ProgramState::Unknown,
                since_ms: now_ms(),
                ..ProgramStatus::default()
            };
            let (watch_tx, watch_rx) = watch::channel(initial.clone());
            let (tx, rx) = mpsc::channel(32);
            let (int_tx, int_rx) = mpsc::unbounded_channel();
            let prog = Program::new(
                name.clone(),
                p.clone(),
                ids.get(&name).copied().unwrap_or_default(),
                shared.clone(),
                releases,
                initial,
                watch_tx,
                adopted,
                int_tx,
            );
            entries.insert(
                name.clone(),
                Entry {
                    tx,
                    status: watch_rx,
                },
            );
            seeds.push((name, (prog, rx, int_rx)));
        }
        let handle = SupervisorHandle {
            inner: Arc::new(Inner {
                programs: entries,
                drain_order,
                shared: shared.clone(),
            }),
        };
        Ok((
            Supervisor {
                shared,
                seeds,
                handle: handle.clone(),
            },
            handle,
        ))
    }

    /// Runs the programs until `shutdown`; then, with `on_exit = stop`, drains them (graceful
    /// stop in shutdown order) and returns once all are down; with `leave`, records them in the
    /// state file and returns without touching them.
    pub async fn run(self, shutdown: CancellationToken) {
        let tracker = TaskTracker::new();
        let aux = CancellationToken::new();
        tracker.spawn(
            reaper::Reaper::default()
                .run(aux.clone())
                .instrument(tracing::info_span!("reaper")),
        );
        let names: Vec<String> = self.seeds.iter().map(|(n, _)| n.clone()).collect();
        tracker.spawn(rotate_logs(self.shared.clone(), names, aux.clone()));
        for (name, (prog, rx, int_rx)) in self.seeds {
            tracker.spawn(
                prog.run(rx, int_rx)
                    .instrument(tracing::info_span!("program", %name)),
            );
        }
        shutdown.cancelled().await;
        let on_exit = self.shared.cfg.on_exit;
        if on_exit == OnExit::Stop {
            if let Err(e) = self.handle.drain().await {
                tracing::warn!(error = %e, "drain incomplete");
            }
        }
        for entry in self.handle.inner.programs.values() {
            let (done, rx) = oneshot::channel();
            let cmd = match on_exit {
                OnExit::Stop => Cmd::Quit(done),
                OnExit::Leave => Cmd::Leave(done),
            };
            if entry.tx.send(cmd).await.is_ok() {
                let _ = rx.await;
            }
        }
        aux.cancel();
        tracker.close();
        tracker.wait().await;
        tracing::info!(?on_exit, "supervisor stopped");
    }
}

/// Rotates every program's log files when they reach `log_max_bytes`.
async fn rotate_logs(shared: Arc<Shared>, names: Vec<String>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(ROTATE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let shared = shared.clone();
        let names = names.clone();
        let _ = tokio::task::spawn_blocking(move || {
            for name in &names {
                for stream in [LogStream::Stdout, LogStream::Stderr] {
                    let path = logs::log_path(&shared.logs_dir, name, stream);
                    if let Err(e) =
                        logs::rotate_if_needed(&path, shared.cfg.log_max_bytes, shared.cfg.log_keep)
                    {
                        tracing::debug!(path = %path.display(), error = %e, "cannot rotate");
                    }
                }
            }
        })
        .await;
    }
}

impl SupervisorHandle {
    fn entry(&self, program: &str) -> Result<&Entry, OpError> {
        self.inner
            .programs
            .get(program)
            .ok_or_else(|| OpError::UnknownProgram(program.to_string()))
    }

    async fn request(
        &self,
        program: &str,
        make: impl FnOnce(program::Reply) -> Cmd,
    ) -> Result<ProgramStatus, OpError> {
        let entry = self.entry(program)?;
        let (tx, rx) = oneshot::channel();
        entry
            .tx
            .send(make(tx))
            .await
            .map_err(|_| OpError::Unavailable)?;
        rx.await.map_err(|_| OpError::Unavailable)?
    }

    /// Configured program names, sorted.
    pub fn programs(&self) -> Vec<String> {
        self.inner.programs.keys().cloned().collect()
    }

    /// Events that could not be delivered because the channel was full or closed.
    pub fn events_dropped(&self) -> u64 {
        self.inner.shared.dropped.load(Ordering::Relaxed)
    }

    /// The status of one program or of all (sorted by name). Never waits on a program's task.
    pub async fn status(&self, program: Option<&str>) -> Result<Vec<ProgramStatus>, OpError> {
        match program {
            Some(name) => Ok(vec![self.entry(name)?.status.borrow().clone()]),
            None => Ok(self
                .inner
                .programs
                .values()
                .map(|e| e.status.borrow().clone())
                .collect()),
        }
    }

    /// Starts a stopped, crashed, waiting or failed program (resetting its failure count);
    /// returns once it has been up for `start_secs`, or failed. Already up: returns at once.
    pub async fn start(&self, program: &str) -> Result<ProgramStatus, OpError> {
        self.request(program, Cmd::Start).await
    }

    /// Stops the program (stop signal, SIGKILL to its group after `stop_grace`); returns once
    /// it is stopped. A pending restart is cancelled.
    pub async fn stop(&self, program: &str) -> Result<ProgramStatus, OpError> {
        self.request(program, |reply| Cmd::Stop {
            force: false,
            reply,
        })
        .await
    }

    /// Stops then starts; returns once it is up again.
    pub async fn restart(&self, program: &str) -> Result<ProgramStatus, OpError> {
        self.request(program, Cmd::Restart).await
    }

    /// Enters (`on`) or leaves the degraded mode: restart with the degraded args/env, or send
    /// the degrade (restore) signal. When the program is down, the mode applies at its next start.
    pub async fn degrade(&self, program: &str, on: bool) -> Result<ProgramStatus, OpError> {
        self.request(program, |reply| Cmd::Degrade(on, reply)).await
    }

    /// The last `lines` lines (at most [`MAX_LINES`]) of a stream, reading rotated files when
    /// needed. `Both` gives the stdout lines then the stderr lines, prefixed `out| ` / `err| `.
    pub async fn logs(
        &self,
        program: &str,
        stream: LogStream,
        lines: u32,
    ) -> Result<Vec<String>, OpError> {
        self.entry(program)?;
        let n = lines.min(MAX_LINES) as usize;
        let dir = self.inner.shared.logs_dir.clone();
        let keep = self.inner.shared.cfg.log_keep;
        let name = program.to_string();
        tokio::task::spawn_blocking(move || {
            let read = |s: LogStream| {
                logs::tail(&logs::log_path(&dir, &name, s), keep, n)
                    .map_err(|e| OpError::Failed(format!("cannot read the {s:?} log: {e}")))
            };
            match stream {
                LogStream::Both => {
                    let mut out: Vec<String> = read(LogStream::Stdout)?
                        .into_iter()
                        .map(|l| format!("out| {l}"))
                        .collect();
                    out.extend(
                        read(LogStream::Stderr)?
                            .into_iter()
                            .map(|l| format!("err| {l}")),
                    );
                    Ok(out)
                }
                s => read(s),
            }
        })
        .await
        .map_err(|_| OpError::Unavailable)?
    }

    /// Installs `artifact` (already fetched and digest-checked by the caller; checked again
    /// while unpacking) as release `version`, switches `current` to it and restarts the program
    /// from it. With `upgrade`, the program is `upgrading` until every health check has passed
    /// (or, without checks, it stayed up `start_secs`) within `release.upgrade_window`; otherwise
    /// the previous release is restored and restarted (event reason `rollback: health failed`)
    /// and this returns `Failed`.
    pub async fn deploy(
        &self,
        program: &str,
        version: &str,
        artifact: PathBuf,
        sha256_hex: String,
        upgrade: bool,
    ) -> Result<ProgramStatus, OpError> {
        let version = version.to_string();
        self.request(program, |reply| Cmd::Deploy {
            version,
            artifact,
            sha256_hex,
            upgrade,
            reply,
        })
        .await
    }

    /// Switches back to release `to` (default: the previous one) and restarts from it.
    pub async fn rollback(
        &self,
        program: &str,
        to: Option<String>,
    ) -> Result<ProgramStatus, OpError> {
        self.request(program, |reply| Cmd::Rollback { to, reply })
            .await
    }

    /// Drains: stops every program gracefully (interrupting deploys), `shutdown_order` first,
    /// one at a time, then the rest in reverse name order. They stay stopped.
    pub async fn shutdown(&self) -> Result<Vec<ProgramStatus>, OpError> {
        self.drain().await
    }

    async fn drain(&self) -> Result<Vec<ProgramStatus>, OpError> {
        let mut out = Vec::new();
        let mut first_err = None;
        for name in &self.inner.drain_order {
            match self
                .request(name, |reply| Cmd::Stop { force: true, reply })
                .await
            {
                Ok(s) => out.push(s),
                Err(e) => {
                    tracing::warn!(program = %name, error = %e, "cannot stop");
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }
}

/// Resolves `user`/`group` to ids; refuses a switch this process is not allowed to make.
fn resolve_ids(p: &ProgramSpec) -> Result<Ids, String> {
    let mut ids = Ids::default();
    if let Some(user) = &p.user {
        let (uid, gid) = lookup_user(user)?;
        ids.uid = Some(uid);
        ids.gid = Some(gid);
    }
    if let Some(group) = &p.group {
        ids.gid = Some(lookup_group(group)?);
    }
    // SAFETY: getters without arguments.
    let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let switches = ids.uid.is_some_and(|u| u != euid) || ids.gid.is_some_and(|g| g != egid);
    if switches && euid != 0 {
        return Err(format!(
            "running as another user or group needs the agent to run as root (it runs as uid {euid}); \
             remove user/group or run the agent as root"
        ));
    }
    Ok(ids)
}

/// Calls a `get*nam_r` function, growing the buffer on ERANGE.
fn lookup<T>(
    name: &str,
    what: &str,
    call: impl Fn(*const libc::c_char, &mut T, &mut [u8], &mut *mut T) -> libc::c_int,
) -> Result<T, String> {
    let cname = CString::new(name).map_err(|_| format!("{what} {name:?} contains NUL"))?;
    let mut size = 4096;
    loop {
        let mut buf = vec![0u8; size];
        // SAFETY: an all-zero passwd/group struct is a valid "empty" value; it is only read
        // after the call filled it.
        let mut entry: T = unsafe { std::mem::zeroed() };
        let mut result: *mut T = std::ptr::null_mut();
        let rc = call(cname.as_ptr(), &mut entry, &mut buf, &mut result);
        if rc == libc::ERANGE && size < 1 << 20 {
            size *= 4;
            continue;
        }
        if rc != 0 {
            return Err(format!(
                "cannot look up {what} {name:?}: {}",
                io::Error::from_raw_os_error(rc)
            ));
        }
        if result.is_null() {
            return Err(format!("unknown {what} {name:?}"));
        }
        return Ok(entry);
    }
}

fn lookup_user(name: &str) -> Result<(u32, u32), String> {
    if let Ok(uid) = name.parse::<u32>() {
        // SAFETY: see `lookup`.
        let pw = lookup::<libc::passwd>(name, "user", |_, e, buf, res| unsafe {
            libc::getpwuid_r(uid, e, buf.as_mut_ptr().cast(), buf.len(), res)
        })?;
        return Ok((pw.pw_uid, pw.pw_gid));
    }
    // SAFETY: `n` is a NUL-terminated string and `buf` outlives the call.
    let pw = lookup::<libc::passwd>(name, "user", |n, e, buf, res| unsafe {
        libc::getpwnam_r(n, e, buf.as_mut_ptr().cast(), buf.len(), res)
    })?;
    Ok((pw.pw_uid, pw.pw_gid))
}

fn lookup_group(name: &str) -> Result<u32, String> {
    if let Ok(gid) = name.parse::<u32>() {
        return Ok(gid);
    }
    // SAFETY: `n` is a NUL-terminated string and `buf` outlives the call.
    let gr = lookup::<libc::group>(name, "group", |n, e, buf, res| unsafe {
        libc::getgrnam_r(n, e, buf.as_mut_ptr().cast(), buf.len(), res)
    })?;
    Ok(gr.gr_gid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_users() {
        // SAFETY: getter.
        let me = unsafe { libc::geteuid() };
        let (uid, _) = lookup_user(&me.to_string()).unwrap();
        assert_eq!(uid, me);
        assert!(lookup_user("no-such-gridmon-user")
            .unwrap_err()
            .contains("unknown user"));
        assert!(lookup_group("no-such-gridmon-group").is_err());
        let p = ProgramSpec {
            command: "sleep".into(),
            user: Some("root".into()),
            ..ProgramSpec::default()
        };
        let r = resolve_ids(&p);
        if me == 0 {
            assert_eq!(r.unwrap().uid, Some(0));
        } else {
            assert!(r.unwrap_err().contains("needs the agent to run as root"));
        }
    }
}
