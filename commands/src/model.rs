//! The supervisor's plain data: program states, per-program status and state transitions.
//!
//! These are what node reports, command replies and `process_events` carry; `gridmon-nats`
//! re-exports them in its wire module, as it does the collectors' model. Nothing here knows how
//! they are encoded.

use serde::{Deserialize, Serialize};

/// The state of a supervised worker program (the "application running status").
///
/// `crashed` (exited unexpectedly; a restart is pending or under way) and `error` (gave up: the
/// start limit was hit, health keeps failing, or it cannot be started) are the failure states
/// alarms watch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProgramState {
    /// Spawned; not yet up for `start_secs` or not yet healthy.
    Starting,
    /// Waiting to be started again: a restart backoff is running.
    Waiting,
    Running,
    /// Running, but health checks are slow (or it reports saturation).
    Busy,
    /// Running with reduced function (its degraded args/env, or the degrade signal).
    Degraded,
    /// A release is being fetched, unpacked and switched to.
    Deploying,
    /// Like deploying, gated on health, rolled back if health fails.
    Upgrading,
    /// The stop signal was sent; waiting for the exit or the grace deadline.
    Stopping,
    Stopped,
    Crashed,
    Error,
    #[default]
    #[serde(other)]
    Unknown,
}

impl ProgramState {
    pub const ALL: [ProgramState; 12] = [
        Self::Starting,
        Self::Waiting,
        Self::Running,
        Self::Busy,
        Self::Degraded,
        Self::Deploying,
        Self::Upgrading,
        Self::Stopping,
        Self::Stopped,
        Self::Crashed,
        Self::Error,
        Self::Unknown,
    ];

    /// The name on the wire and in ClickHouse.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Waiting => "waiting",
            Self::Running => "running",
            Self::Busy => "busy",
            Self::Degraded => "degraded",
            Self::Deploying => "deploying",
            Self::Upgrading => "upgrading",
            Self::Stopping => "stopping",
            Self::Stopped => "stopped",
            Self::Crashed => "crashed",
            Self::Error => "error",
            Self::Unknown => "unknown",
        }
    }

    /// States in which the program's process is alive.
    pub const fn is_up(self) -> bool {
        matches!(
            self,
            Self::Starting | Self::Running | Self::Busy | Self::Degraded | Self::Stopping
        )
    }

    /// States owned by an operation in progress; another mutating command is a conflict.
    pub const fn is_transient(self) -> bool {
        matches!(self, Self::Deploying | Self::Upgrading | Self::Stopping)
    }
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "how", content = "value")]
pub enum ExitStatus {
    /// Exited with this code.
    Code(i32),
    /// Killed by this signal number.
    Signal(i32),
    /// Ended while not our child (a re-adopted process): the status cannot be known. Also what
    /// a `how` this build does not know decodes to.
    #[serde(other)]
    Unknown,
}

impl ExitStatus {
    pub fn from_std(s: std::process::ExitStatus) -> Self {
        use std::os::unix::process::ExitStatusExt;
        match (s.code(), s.signal()) {
            (Some(c), _) => Self::Code(c),
            (None, Some(sig)) => Self::Signal(sig),
            (None, None) => Self::Unknown,
        }
    }

    pub fn success(self) -> bool {
        self == Self::Code(0)
    }
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Code(c) => write!(f, "exit {c}"),
            Self::Signal(s) => write!(f, "signal {s}"),
            Self::Unknown => f.write_str("unknown"),
        }
    }
}

/// One supervised program, as node reports and command replies carry it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProgramStatus {
    pub name: String,
    pub state: ProgramState,
    pub pid: Option<u32>,
    /// Restarts after a crash or failed liveness since the supervisor started.
    pub restarts: u32,
    /// When the program entered `state`, ms since the Unix epoch.
    pub since_ms: i64,
    /// The running release's version, when the program is deployed from releases.
    pub version: Option<String>,
    /// When the current process started, ms since the Unix epoch.
    pub started_ms: Option<i64>,
    /// When the previous process ended, ms since the Unix epoch.
    pub last_exit_ms: Option<i64>,
    pub last_exit: Option<ExitStatus>,
    /// Consecutive failed health checks (0 when healthy or unchecked).
    pub health_failures: u32,
    /// Whether the program runs in its degraded mode.
    pub degraded: bool,
    /// Why it is in this state, for people (`backoff 4s`, `start limit hit`, `health: …`).
    pub detail: String,
}

/// A program changed state: published on `<p>.event.<cluster>.<group>.<node>` and stored in
/// `process_events`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProgramEvent {
    pub program: String,
    pub from: ProgramState,
    pub to: ProgramState,
    /// Why: `spawned`, `exited`, `backoff`, `start limit`, `health failed`, `command restart`, …
    pub reason: String,
    pub pid: Option<u32>,
    /// Set when the transition was caused by the process ending.
    pub exit: Option<ExitStatus>,
    pub restarts: u32,
    pub version: Option<String>,
    /// When it happened, ms since the Unix epoch.
    pub ts_ms: i64,
    /// Whether this transition should raise an alarm (entering `error`, or a crash loop).
    pub alarm: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_status_round_trips_and_tolerates_a_newer_how() {
        for e in [
            ExitStatus::Code(3),
            ExitStatus::Signal(9),
            ExitStatus::Unknown,
        ] {
            let text = serde_json::to_string(&e).unwrap();
            assert_eq!(
                serde_json::from_str::<ExitStatus>(&text).unwrap(),
                e,
                "{text}"
            );
        }
        let newer: ExitStatus = serde_json::from_str(r#"{"how":"oom_killed"}"#).unwrap();
        assert_eq!(newer, ExitStatus::Unknown);
    }
}
