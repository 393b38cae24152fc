//! Surviving an agent restart: the state file, `/proc/<pid>/stat` identity checks, and waiting
//! for the exit of a process that is not our child (pidfd, or polling `/proc`).
//!
//! A pid alone is not an identity (pids are reused), so every record carries the process start
//! time in clock ticks (field 22 of `/proc/<pid>/stat`); a process is adopted only when both
//! match.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The name of the state file under the supervisor directory.
pub const STATE_FILE: &str = "supervisor-state.json";

/// What `/proc/<pid>/stat` tells about a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProcStat {
    /// `R`, `S`, `D`, `Z`, …
    pub state: u8,
    pub ppid: i32,
    pub pgrp: i32,
    /// Start time after boot, in clock ticks (field 22).
    pub start_ticks: u64,
}

/// Parses the text of `/proc/<pid>/stat`. The command name (field 2) may hold spaces and
/// parentheses, so fields are counted from the last `)`.
pub(crate) fn parse_stat(text: &str) -> Option<ProcStat> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut f = rest.split_ascii_whitespace();
    let state = *f.next()?.as_bytes().first()?;
    let ppid = f.next()?.parse().ok()?;
    let pgrp = f.next()?.parse().ok()?;
    // Fields 6..=21 are skipped; field 22 is the 20th after the `)`.
    let start_ticks = f.nth(16)?.parse().ok()?;
    Some(ProcStat {
        state,
        ppid,
        pgrp,
        start_ticks,
    })
}

/// Reads `/proc/<pid>/stat`; `None` when the process is gone or the file is unreadable.
pub(crate) fn read_stat(pid: u32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

/// Whether `pid` is the process recorded with `start_ticks` and has not exited.
pub(crate) fn is_same_live_process(pid: u32, start_ticks: u64) -> Option<ProcStat> {
    read_stat(pid).filter(|s| s.start_ticks == start_ticks && s.state != b'Z' && s.state != b'X')
}

/// One program's running process, as recorded for the next agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Record {
    pub pid: u32,
    pub start_ticks: u64,
    /// ms since the Unix epoch.
    pub started_ms: i64,
    pub version: Option<String>,
    pub degraded: bool,
}

/// The file: `{"version": 1, "programs": {"<name>": Record}}`.
#[derive(Debug, Default, Serialize, Deserialize)]
struct StateFile {
    version: u32,
    programs: BTreeMap<String, Record>,
}

const STATE_VERSION: u32 = 1;

/// The state file, rewritten whole (temporary file + rename) on every change so a reader never
/// sees a torn file. Not fsynced: it must survive the agent dying, not the machine (after a
/// reboot no recorded process is alive anyway).
#[derive(Debug)]
pub(crate) struct StateStore {
    path: PathBuf,
    programs: Mutex<BTreeMap<String, Record>>,
}

impl StateStore {
    /// Loads `<dir>/supervisor-state.json`; a missing or unreadable file is an empty state (the
    /// worst outcome is starting a program that was still running, which the log reports).
    pub fn load(dir: &Path) -> Self {
        let path = dir.join(STATE_FILE);
        let programs = match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<StateFile>(&bytes) {
                Ok(f) if f.version == STATE_VERSION => f.programs,
                Ok(f) => {
                    tracing::warn!(path = %path.display(), version = f.version, "unknown state file version; ignored");
                    BTreeMap::new()
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "unreadable state file; ignored");
                    BTreeMap::new()
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot read the state file; ignored");
                BTreeMap::new()
            }
        };
        Self {
            path,
            programs: Mutex::new(programs),
        }
    }

    pub fn records(&self) -> BTreeMap<String, Record> {
        self.programs.lock().map(|p| p.clone()).unwrap_or_default()
    }

    /// Sets (or with `None` removes) a program's record and rewrites the file.
    pub fn set(&self, program: &str, record: Option<Record>) {
        let Ok(mut programs) = self.programs.lock() else {
            return;
        };
        let changed = match record {
            Some(r) => programs.insert(program.to_string(), r.clone()) != Some(r),
            None => programs.remove(program).is_some(),
        };
        if changed {
            // Written under the lock so two programs' updates cannot reorder on disk.
            if let Err(e) = self.write(&programs) {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot write the state file");
            }
        }
    }

    /// Drops records of programs that are not configured (after they were logged).
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        if let Ok(mut programs) = self.programs.lock() {
            let before = programs.len();
            programs.retain(|name, _| keep(name));
            if programs.len() != before {
                if let Err(e) = self.write(&programs) {
                    tracing::warn!(path = %self.path.display(), error = %e, "cannot write the state file");
                }
            }
        }
    }

    fn write(&self, programs: &BTreeMap<String, Record>) -> io::Result<()> {
        let file = StateFile {
            version: STATE_VERSION,
            programs: programs.clone(),
        };
        let bytes = serde_json::to_vec_pretty(&file).map_err(io::Error::other)?;
        let tmp = self.path.with_extension("json.tmp");
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, &self.path)
    }
}

/// Opens a pidfd for `pid` (Linux 5.3+).
fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    let pid = libc::pid_t::try_from(pid).map_err(io::Error::other)?;
    // SAFETY: plain syscall with integer arguments; a non-negative result is a new descriptor
    // that nobody else owns.
    let rc = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = i32::try_from(rc).map_err(io::Error::other)?;
    // SAFETY: `fd` was just returned by the kernel and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// How often `/proc` is polled when pidfds are unavailable.
const POLL_EVERY: Duration = Duration::from_millis(500);

/// Resolves when the process `pid` started at `start_ticks` has exited (or was never there).
/// The process need not be our child: a pidfd becomes readable at its exit; without pidfds,
/// `/proc` is polled.
pub(crate) async fn wait_foreign_exit(pid: u32, start_ticks: u64) {
    if let Ok(fd) = pidfd_open(pid) {
        // The pid may have been reused between the identity check and the open.
        if is_same_live_process(pid, start_ticks).is_none() {
            return;
        }
        // SAFETY: `fd` is an owned, open pidfd that the AsyncFd keeps (and closes) for its whole
        // lifetime; its raw value never changes.
        let registered = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
        };
        if let Ok(afd) = registered {
            // Readable means exited; an error means the fd is unusable, so fall back to polling.
            if afd.readable().await.is_ok() {
                return;
            }
        }
    }
    while is_same_live_process(pid, start_ticks).is_some() {
        tokio::time::sleep(POLL_EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_awkward_names() {
        let line =
            "4242 (a) b (c)) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        let s = parse_stat(line).unwrap();
        assert_eq!(
            s,
            ProcStat {
                state: b'S',
                ppid: 1,
                pgrp: 4242,
                start_ticks: 987654
            }
        );
        assert_eq!(parse_stat("12 (x) S 1"), None);
        assert_eq!(parse_stat(""), None);
        let me = read_stat(std::process::id()).unwrap();
        assert!(me.start_ticks > 0);
    }

    #[test]
    fn state_file_round_trips_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::load(dir.path());
        assert!(store.records().is_empty());
        let r = Record {
            pid: 7,
            start_ticks: 99,
            started_ms: 1,
            version: Some("1.0".into()),
            degraded: true,
        };
        store.set("web", Some(r.clone()));
        store.set(
            "db",
            Some(Record {
                pid: 8,
                ..r.clone()
            }),
        );
        store.set("db", None);
        let again = StateStore::load(dir.path());
        assert_eq!(
            again.records().into_iter().collect::<Vec<_>>(),
            [("web".to_string(), r)]
        );
        assert!(!dir.path().join("supervisor-state.json.tmp").exists());
        std::fs::write(dir.path().join(STATE_FILE), b"{not json").unwrap();
        assert!(StateStore::load(dir.path()).records().is_empty());
    }
}
