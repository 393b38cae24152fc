//! The child subreaper: orphaned descendants of supervised programs are re-parented to the agent
//! and reaped here, without stealing the exit statuses of the children tokio waits for.
//!
//! Tokio reaps only the pids it spawned (`waitpid(pid)`), never `waitpid(-1)`, so a grandchild
//! re-parented to us would stay a zombie forever. Reaping them with `waitpid(-1)` would race
//! tokio for its own children, so instead every child spawned through tokio by the supervisor is
//! registered in one process-wide set (registration happens under the same lock as the scan, so
//! a child that exits before `spawn` returns cannot be mistaken for an orphan), and the scan
//! reaps only zombies whose parent is us and which are not registered. Children spawned by other
//! code in the process are not registered; a zombie is therefore reaped only after it was seen
//! on an earlier scan at least `GRACE` ago, time in which tokio reaps its own children (it does
//! so on the same SIGCHLD).

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::adopt::parse_stat;

/// Pids spawned through tokio by the supervisor (programs, exec health checks).
static SPAWNED: Mutex<BTreeSet<u32>> = Mutex::new(BTreeSet::new());

/// How long an unregistered zombie child is left for its owner before we reap it.
const GRACE: Duration = Duration::from_millis(250);
/// Scan period without SIGCHLD (signals coalesce, and a grace may be pending).
const SCAN_EVERY: Duration = Duration::from_millis(500);

/// Spawns `cmd` and registers its pid, atomically with respect to the zombie scan.
pub(crate) fn spawn_registered(
    cmd: &mut tokio::process::Command,
) -> io::Result<tokio::process::Child> {
    let mut set = SPAWNED.lock().unwrap_or_else(|p| p.into_inner());
    let child = cmd.spawn()?;
    if let Some(pid) = child.id() {
        set.insert(pid);
    }
    Ok(child)
}

/// Forgets a pid once tokio has reaped it (or given it up).
pub(crate) fn unregister(pid: u32) {
    SPAWNED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&pid);
}

/// Makes this process the subreaper of its descendants (`PR_SET_CHILD_SUBREAPER`).
pub(crate) fn become_subreaper() -> io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Zombie children first seen at these instants.
#[derive(Debug, Default)]
pub(crate) struct Reaper {
    seen: HashMap<u32, Instant>,
    /// Orphans reaped so far.
    pub reaped: u64,
}

impl Reaper {
    /// One scan of `/proc`: reaps unregistered zombie children seen at least `GRACE` ago.
    pub fn scan(&mut self) {
        let me = i32::try_from(std::process::id()).unwrap_or(i32::MAX);
        let now = Instant::now();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return;
        };
        let mut zombies = Vec::new();
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue; // gone meanwhile
            };
            if let Some(s) = parse_stat(&text) {
                if s.ppid == me && s.state == b'Z' {
                    zombies.push(pid);
                }
            }
        }
        self.seen.retain(|pid, _| zombies.contains(pid));
        let set = SPAWNED.lock().unwrap_or_else(|p| p.into_inner());
        for pid in zombies {
            if set.contains(&pid) {
                continue;
            }
            let first = *self.seen.entry(pid).or_insert(now);
            if now.duration_since(first) < GRACE {
                continue;
            }
            let Ok(raw) = libc::pid_t::try_from(pid) else {
                continue;
            };
            let mut status = 0;
            // SAFETY: waits for one specific pid, without blocking.
            let rc = unsafe { libc::waitpid(raw, &mut status, libc::WNOHANG) };
            if rc == raw {
                self.reaped += 1;
                self.seen.remove(&pid);
                tracing::debug!(pid, "reaped an orphaned descendant");
            }
        }
    }

    /// Scans on every SIGCHLD and every `SCAN_EVERY` until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut sigchld = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child())
        {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "no SIGCHLD stream; reaping orphans by polling only");
                None
            }
        };
        let mut tick = tokio::time::interval(SCAN_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {}
                Some(()) = async {
                    match sigchld.as_mut() {
                        Some(s) => s.recv().await,
                        None => std::future::pending().await,
                    }
                } => {}
            }
            // A few hundred small reads: cheap, but not on a runtime worker.
            let mut me = std::mem::take(&mut self);
            self = tokio::task::spawn_blocking(move || {
                me.scan();
                me
            })
            .await
            .unwrap_or_default();
        }
    }
}
