//! The supervisor's configuration (`[supervisor]` and `[programs.<name>]`) and its pure validation.
//!
//! Everything here is plain serde data: `validate` checks it without touching the machine (users
//! and groups are resolved later, by `Supervisor::new`, because that needs the host's databases).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The `[supervisor]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SupervisorConfig {
    /// State directory: `supervisor-state.json` (re-adoption), `logs/`, `programs/<name>/releases`.
    pub dir: PathBuf,
    /// What happens to the programs when the agent exits.
    pub on_exit: OnExit,
    /// Programs stopped first, in this order, on a drain; the others follow in reverse name order.
    pub shutdown_order: Vec<String>,
    /// Whether commands may power the machine off. The supervisor itself never does; the command
    /// layer reads this flag.
    pub allow_poweroff: bool,
    /// Size at which a log file is rotated (checked about once a second, so a file may overshoot
    /// by what a program writes in that time).
    pub log_max_bytes: u64,
    /// Rotated files kept per stream (`<name>.out.log.1` … `.<log_keep>`); 0 keeps none.
    pub log_keep: u32,
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("/var/lib/gridmon"),
            on_exit: OnExit::Stop,
            shutdown_order: Vec::new(),
            allow_poweroff: false,
            log_max_bytes: 10 * 1024 * 1024,
            log_keep: 5,
        }
    }
}

/// What the supervisor does with its programs when the agent exits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnExit {
    /// Drain: stop every program gracefully, in shutdown order.
    #[default]
    Stop,
    /// Keep the programs running; the next agent re-adopts them from the state file.
    Leave,
}

/// One `[programs.<name>]` table.
///
/// Shutdown order is configured once, in `[supervisor] shutdown_order`, rather than with a
/// per-program priority: one list is easier to read than numbers scattered over tables.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProgramSpec {
    /// An absolute path; a bare name looked up on `PATH`; or, with `release`, a path relative to
    /// the program's current release directory (tried first when that file exists).
    pub command: String,
    pub args: Vec<String>,
    /// Working directory; by default the current release directory when releases are used, else
    /// the supervisor directory.
    pub cwd: Option<PathBuf>,
    /// Added to (and overriding) the agent's own environment.
    pub env: BTreeMap<String, String>,
    /// Run as this user (needs the agent to run as root, unless it is the agent's own user).
    pub user: Option<String>,
    /// Run with this group (default: the user's primary group).
    pub group: Option<String>,
    /// Start when the supervisor starts.
    pub autostart: bool,
    pub restart: RestartPolicy,
    pub backoff: Backoff,
    /// How long a process must stay up to count as started (`starting` → `running`).
    #[serde(with = "humantime_serde")]
    pub start_secs: Duration,
    /// Consecutive failures (exits or failed liveness before the process counted as stable) after
    /// which the supervisor gives up and marks the program `error`.
    pub start_limit: u32,
    pub stop_signal: Signal,
    /// Time between the stop signal and SIGKILL to the whole process group.
    #[serde(with = "humantime_serde")]
    pub stop_grace: Duration,
    pub health: Vec<HealthCheck>,
    pub degraded: Option<DegradedMode>,
    pub release: Option<ReleaseSpec>,
}

impl Default for ProgramSpec {
    fn default() -> Self {
        Self {
            command: String::new(),
            args: Vec::new(),
            cwd: None,
            env: BTreeMap::new(),
            user: None,
            group: None,
            autostart: true,
            restart: RestartPolicy::OnFailure,
            backoff: Backoff::default(),
            start_secs: Duration::from_secs(1),
            start_limit: 5,
            stop_signal: Signal::TERM,
            stop_grace: Duration::from_secs(10),
            health: Vec::new(),
            degraded: None,
            release: None,
        }
    }
}

/// When an ended process is started again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// After any exit, even a clean one.
    Always,
    /// After a non-zero exit, a signal, or failed liveness.
    #[default]
    OnFailure,
    Never,
}

/// Restart delays: `initial * factor^(n-1)` before the n-th consecutive restart, capped at `max`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Backoff {
    #[serde(with = "humantime_serde")]
    pub initial: Duration,
    #[serde(with = "humantime_serde")]
    pub max: Duration,
    pub factor: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
            factor: 2.0,
        }
    }
}

impl Backoff {
    /// The delay before restart number `attempt` (1 = the first restart after a failure).
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(64) as i32;
        let secs = self.initial.as_secs_f64() * self.factor.max(1.0).powi(exp);
        if !secs.is_finite() || secs >= self.max.as_secs_f64() {
            self.max
        } else {
            Duration::from_secs_f64(secs)
        }
    }
}

/// A signal, written by name in config (`"TERM"`, `"SIGTERM"`, `"USR1"`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signal(i32);

impl Signal {
    pub const TERM: Signal = Signal(libc::SIGTERM);
    pub const KILL: Signal = Signal(libc::SIGKILL);

    const NAMES: [(&'static str, i32); 8] = [
        ("TERM", libc::SIGTERM),
        ("INT", libc::SIGINT),
        ("QUIT", libc::SIGQUIT),
        ("HUP", libc::SIGHUP),
        ("USR1", libc::SIGUSR1),
        ("USR2", libc::SIGUSR2),
        ("KILL", libc::SIGKILL),
        ("WINCH", libc::SIGWINCH),
    ];

    /// Parses `TERM` or `SIGTERM` (case-insensitive).
    pub fn from_name(name: &str) -> Option<Signal> {
        let upper = name.trim().to_ascii_uppercase();
        let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
        Self::NAMES
            .iter()
            .find(|(n, _)| *n == bare)
            .map(|&(_, s)| Signal(s))
    }

    /// The signal number.
    pub const fn number(self) -> i32 {
        self.0
    }

    pub fn name(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(_, s)| *s == self.0)
            .map_or("?", |(n, _)| n)
    }
}

impl Default for Signal {
    fn default() -> Self {
        Self::TERM
    }
}

impl std::fmt::Display for Signal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SIG{}", self.name())
    }
}

impl Serialize for Signal {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Signal {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Signal::from_name(&name).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown signal {name:?} (expected TERM, INT, QUIT, HUP, USR1, USR2, KILL or WINCH)"
            ))
        })
    }
}

/// A health check: `{ kind = "tcp", address = "127.0.0.1:8080" }`,
/// `{ kind = "http", url = "http://127.0.0.1:8080/health" }` or
/// `{ kind = "exec", command = "/usr/bin/check", args = [] }`.
///
/// `failures` consecutive failures mean liveness failed: the program is restarted under its
/// restart policy. A passing check slower than `slow` marks the program `busy`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "HealthCheckToml", into = "HealthCheckToml")]
pub struct HealthCheck {
    pub kind: HealthKind,
    pub interval: Duration,
    pub timeout: Duration,
    pub failures: u32,
    pub slow: Option<Duration>,
}

/// What a health check probes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthKind {
    /// Passes when the command exits 0 within the timeout (run without a shell).
    Exec { command: String, args: Vec<String> },
    /// Passes when a TCP connection to `host:port` opens.
    Tcp { address: String },
    /// Passes on an HTTP status 200–399. Plain `http://` only: health endpoints are local, and the
    /// agent carries no TLS stack for them (use an exec check for HTTPS).
    Http { url: String },
}

/// The flat TOML shape of a health check; `deny_unknown_fields` does not mix with `flatten`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct HealthCheckToml {
    kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    command: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    args: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<String>,
    #[serde(with = "humantime_serde")]
    interval: Duration,
    #[serde(with = "humantime_serde")]
    timeout: Duration,
    failures: u32,
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    slow: Option<Duration>,
}

impl Default for HealthCheckToml {
    fn default() -> Self {
        Self {
            kind: String::new(),
            command: None,
            args: Vec::new(),
            address: None,
            url: None,
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(2),
            failures: 3,
            slow: None,
        }
    }
}

impl TryFrom<HealthCheckToml> for HealthCheck {
    type Error = String;

    fn try_from(t: HealthCheckToml) -> Result<Self, String> {
        let kind = match t.kind.as_str() {
            "exec" => {
                if t.address.is_some() || t.url.is_some() {
                    return Err("an exec check takes command and args only".into());
                }
                HealthKind::Exec {
                    command: t.command.ok_or("an exec check needs `command`")?,
                    args: t.args,
                }
            }
            "tcp" => {
                if t.command.is_some() || !t.args.is_empty() || t.url.is_some() {
                    return Err("a tcp check takes address only".into());
                }
                HealthKind::Tcp {
                    address: t.address.ok_or("a tcp check needs `address`")?,
                }
            }
            "http" => {
                if t.command.is_some() || !t.args.is_empty() || t.address.is_some() {
                    return Err("an http check takes url only".into());
                }
                HealthKind::Http {
                    url: t.url.ok_or("an http check needs `url`")?,
                }
            }
            other => {
                return Err(format!(
                    "unknown health check kind {other:?} (expected exec, tcp or http)"
                ))
            }
        };
        Ok(HealthCheck {
            kind,
            interval: t.interval,
            timeout: t.timeout,
            failures: t.failures,
            slow: t.slow,
        })
    }
}

impl From<HealthCheck> for HealthCheckToml {
    fn from(h: HealthCheck) -> Self {
        let mut t = HealthCheckToml {
            interval: h.interval,
            timeout: h.timeout,
            failures: h.failures,
            slow: h.slow,
            ..HealthCheckToml::default()
        };
        match h.kind {
            HealthKind::Exec { command, args } => {
                t.kind = "exec".into();
                t.command = Some(command);
                t.args = args;
            }
            HealthKind::Tcp { address } => {
                t.kind = "tcp".into();
                t.address = Some(address);
            }
            HealthKind::Http { url } => {
                t.kind = "http".into();
                t.url = Some(url);
            }
        }
        t
    }
}

impl HealthCheck {
    /// A check of `kind` with the default interval (10s), timeout (2s) and failures (3).
    pub fn new(kind: HealthKind) -> Self {
        let d = HealthCheckToml::default();
        Self {
            kind,
            interval: d.interval,
            timeout: d.timeout,
            failures: d.failures,
            slow: d.slow,
        }
    }
}

/// The degraded mode: either restart with other args/env, or send a signal.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DegradedMode {
    /// Replaces `args` while degraded (restart).
    pub args: Option<Vec<String>>,
    /// Added to `env` while degraded (restart).
    pub env: BTreeMap<String, String>,
    /// Sent to the program's main process to enter the degraded mode (no restart).
    pub signal: Option<Signal>,
    /// Sent to leave it (if unset, leaving is only recorded).
    pub restore_signal: Option<Signal>,
}

impl DegradedMode {
    /// Whether degrading restarts the program (args/env) rather than signalling it.
    pub fn restarts(&self) -> bool {
        self.signal.is_none()
    }
}

/// Releases: `programs/<name>/releases/<version>` with a `current` pointer.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReleaseSpec {
    /// Releases kept on disk (the current and previous ones are never removed).
    pub keep: u32,
    /// After an upgrade, health must pass within this window, else the previous release is
    /// restored automatically.
    #[serde(with = "humantime_serde")]
    pub upgrade_window: Duration,
}

impl Default for ReleaseSpec {
    fn default() -> Self {
        Self {
            keep: 5,
            upgrade_window: Duration::from_secs(30),
        }
    }
}

/// Everything wrong with a configuration, one line per problem, each naming its key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid supervisor configuration: {}", .problems.join("; "))]
pub struct SpecError {
    pub problems: Vec<String>,
}

/// An argument from a command (program name, version, stream name) that is unsafe to use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgumentError {
    #[error("empty argument")]
    Empty,
    #[error("argument longer than {max} bytes")]
    TooLong { max: usize },
    #[error("argument contains a control character")]
    Control,
    #[error("argument contains the forbidden character {0:?}")]
    Forbidden(char),
}

/// The most a single command argument may hold.
pub const MAX_ARGUMENT_LEN: usize = 256;

/// Refuses what could be abused if an argument ever reached a shell or a path: shell
/// metacharacters, quotes, globs, backslash and control characters. Nothing in gridmon runs a
/// shell; this is defence in depth for values that arrive in commands.
pub fn validate_argument(s: &str) -> Result<(), ArgumentError> {
    const FORBIDDEN: &[char] = &[
        ';', '|', '&', '$', '`', '<', '>', '(', ')', '{', '}', '\'', '"', '*', '?', '!', '~', '\\',
    ];
    if s.is_empty() {
        return Err(ArgumentError::Empty);
    }
    if s.len() > MAX_ARGUMENT_LEN {
        return Err(ArgumentError::TooLong {
            max: MAX_ARGUMENT_LEN,
        });
    }
    for c in s.chars() {
        if c.is_control() {
            return Err(ArgumentError::Control);
        }
        if FORBIDDEN.contains(&c) {
            return Err(ArgumentError::Forbidden(c));
        }
    }
    Ok(())
}

/// Whether `name` is a program name: `[A-Za-z0-9_-]{1,64}`.
pub fn is_program_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

const MAX_STOP_GRACE: Duration = Duration::from_secs(600);

/// Checks the supervisor table and every program; returns all problems at once.
pub fn validate(
    sup: &SupervisorConfig,
    programs: &BTreeMap<String, ProgramSpec>,
) -> Result<(), SpecError> {
    let mut p = Vec::new();
    if sup.dir.as_os_str().is_empty() {
        p.push("supervisor.dir: must not be empty".to_string());
    }
    if sup.log_max_bytes < 4096 {
        p.push(format!(
            "supervisor.log_max_bytes: {} is below the minimum of 4096",
            sup.log_max_bytes
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for name in &sup.shutdown_order {
        if !programs.contains_key(name) {
            p.push(format!(
                "supervisor.shutdown_order: {name:?} is not a configured program"
            ));
        }
        if !seen.insert(name) {
            p.push(format!("supervisor.shutdown_order: {name:?} listed twice"));
        }
    }
    for (name, spec) in programs {
        validate_program(name, spec, &mut p);
    }
    if p.is_empty() {
        Ok(())
    } else {
        Err(SpecError { problems: p })
    }
}

fn validate_program(name: &str, s: &ProgramSpec, p: &mut Vec<String>) {
    let key = format!("programs.{name}");
    if !is_program_name(name) {
        p.push(format!(
            "{key}: program names are 1-64 characters of A-Z a-z 0-9 _ -"
        ));
    }
    if s.command.is_empty() {
        p.push(format!("{key}.command: must not be empty"));
    } else if s.command.contains('\0') {
        p.push(format!("{key}.command: contains NUL"));
    } else if s.release.is_none() && !s.command.starts_with('/') && s.command.contains('/') {
        p.push(format!(
            "{key}.command: a relative path needs `release` (use an absolute path or a bare name on PATH)"
        ));
    }
    if s.args.iter().any(|a| a.contains('\0')) {
        p.push(format!("{key}.args: contains NUL"));
    }
    check_env(&format!("{key}.env"), &s.env, p);
    for (k, v) in [("user", &s.user), ("group", &s.group)] {
        if let Some(v) = v {
            if v.is_empty() || v.contains(['\0', ':', '/']) || v.chars().any(char::is_whitespace) {
                p.push(format!("{key}.{k}: {v:?} is not a valid name"));
            }
        }
    }
    let b = &s.backoff;
    if b.initial.is_zero() {
        p.push(format!("{key}.backoff.initial: must be above zero"));
    }
    if b.initial > b.max {
        p.push(format!(
            "{key}.backoff: initial {} is above max {}",
            humantime_serde::re::humantime::format_duration(b.initial),
            humantime_serde::re::humantime::format_duration(b.max)
        ));
    }
    if !(b.factor >= 1.0 && b.factor.is_finite()) {
        p.push(format!(
            "{key}.backoff.factor: {} must be at least 1",
            b.factor
        ));
    }
    if s.start_limit == 0 {
        p.push(format!("{key}.start_limit: must be at least 1"));
    }
    if s.stop_grace > MAX_STOP_GRACE {
        p.push(format!("{key}.stop_grace: at most 10m"));
    }
    for (i, h) in s.health.iter().enumerate() {
        validate_health(&format!("{key}.health[{i}]"), h, p);
    }
    if let Some(d) = &s.degraded {
        let restarts = d.args.is_some() || !d.env.is_empty();
        if restarts == d.signal.is_some() {
            p.push(format!(
                "{key}.degraded: set either args/env (restart degraded) or signal, not both and not neither"
            ));
        }
        if d.restore_signal.is_some() && d.signal.is_none() {
            p.push(format!("{key}.degraded.restore_signal: needs signal"));
        }
        if let Some(args) = &d.args {
            if args.iter().any(|a| a.contains('\0')) {
                p.push(format!("{key}.degraded.args: contains NUL"));
            }
        }
        check_env(&format!("{key}.degraded.env"), &d.env, p);
    }
    if let Some(r) = &s.release {
        if r.keep < 2 {
            p.push(format!(
                "{key}.release.keep: at least 2 (the current release and one to roll back to)"
            ));
        }
        if r.upgrade_window.is_zero() {
            p.push(format!("{key}.release.upgrade_window: must be above zero"));
        }
    }
}

fn check_env(key: &str, env: &BTreeMap<String, String>, p: &mut Vec<String>) {
    for (k, v) in env {
        if k.is_empty() || k.contains(['=', '\0']) {
            p.push(format!("{key}: bad variable name {k:?}"));
        }
        if v.contains('\0') {
            p.push(format!("{key}.{k}: contains NUL"));
        }
    }
}

fn validate_health(key: &str, h: &HealthCheck, p: &mut Vec<String>) {
    if h.timeout.is_zero() {
        p.push(format!("{key}.timeout: must be above zero"));
    }
    if h.interval <= h.timeout {
        p.push(format!(
            "{key}: interval {} must be longer than timeout {}",
            humantime_serde::re::humantime::format_duration(h.interval),
            humantime_serde::re::humantime::format_duration(h.timeout)
        ));
    }
    if h.failures == 0 {
        p.push(format!("{key}.failures: must be at least 1"));
    }
    match &h.kind {
        HealthKind::Exec { command, args } => {
            if command.is_empty() || command.contains('\0') || args.iter().any(|a| a.contains('\0'))
            {
                p.push(format!("{key}.command: must be non-empty, without NUL"));
            }
        }
        HealthKind::Tcp { address } => {
            if split_host_port(address).is_none() {
                p.push(format!("{key}.address: {address:?} is not host:port"));
            }
        }
        HealthKind::Http { url } => {
            if url.starts_with("https://") {
                p.push(format!(
                    "{key}.url: https is not supported (no TLS for health checks; use an exec check)"
                ));
            } else if parse_http_url(url).is_none() {
                p.push(format!("{key}.url: {url:?} is not http://host:port/path"));
            }
        }
    }
}

/// Splits `host:port` (`[v6]:port` too); `None` when the port is missing or not a number.
pub(crate) fn split_host_port(address: &str) -> Option<(&str, u16)> {
    let (host, port) = address.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() || host.contains(char::is_whitespace) {
        return None;
    }
    Some((host, port))
}

/// `http://host[:port][/path]` → (`host:port`, host, path).
pub(crate) fn parse_http_url(url: &str) -> Option<(String, String, String)> {
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains('@') || path.contains(char::is_whitespace) {
        return None;
    }
    let address = if split_host_port(authority).is_some() {
        authority.to_string()
    } else if authority.contains(':') && !authority.ends_with(']') {
        return None;
    } else {
        format!("{authority}:80")
    };
    Some((address, authority.to_string(), path.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn program(cmd: &str) -> ProgramSpec {
        ProgramSpec {
            command: cmd.into(),
            ..ProgramSpec::default()
        }
    }

    /// Validates `programs` (with `sup`) and expects either success (`""`) or an error whose text
    /// contains `expected`.
    fn check(sup: SupervisorConfig, programs: &[(&str, ProgramSpec)], expected: &str) {
        let map: BTreeMap<String, ProgramSpec> = programs
            .iter()
            .map(|(n, s)| (n.to_string(), s.clone()))
            .collect();
        match validate(&sup, &map) {
            Ok(()) => assert!(expected.is_empty(), "expected an error with {expected:?}"),
            Err(e) => {
                let text = e.to_string();
                assert!(
                    !expected.is_empty() && text.contains(expected),
                    "{text:?} should contain {expected:?}"
                );
            }
        }
    }

    fn one(name: &str, s: ProgramSpec, expected: &str) {
        check(SupervisorConfig::default(), &[(name, s)], expected);
    }

    #[test]
    fn names_and_commands() {
        one("web", program("/usr/bin/web"), "");
        one("web-2_x", program("sleep"), "");
        one("bad.name", program("sleep"), "program names are");
        one(&"a".repeat(65), program("sleep"), "program names are");
        one("", program("sleep"), "program names are");
        one(
            "web",
            program(""),
            "programs.web.command: must not be empty",
        );
        one("web", program("a\0b"), "contains NUL");
        one("web", program("bin/web"), "a relative path needs `release`");
        let mut with_release = program("bin/web");
        with_release.release = Some(ReleaseSpec::default());
        one("web", with_release, "");
    }

    #[test]
    fn backoff_grace_and_limits() {
        let mut s = program("sleep");
        s.backoff.initial = Duration::from_secs(5);
        s.backoff.max = Duration::from_secs(1);
        one("w", s, "initial 5s is above max 1s");
        let mut s = program("sleep");
        s.backoff.factor = 0.5;
        one("w", s, "factor: 0.5 must be at least 1");
        let mut s = program("sleep");
        s.stop_grace = Duration::from_secs(601);
        one("w", s, "stop_grace: at most 10m");
        let mut s = program("sleep");
        s.start_limit = 0;
        one("w", s, "start_limit");
    }

    #[test]
    fn health_checks() {
        let mut s = program("sleep");
        s.health.push(HealthCheck::new(HealthKind::Http {
            url: "https://x/".into(),
        }));
        one("w", s, "https is not supported");
        let mut s = program("sleep");
        s.health.push(HealthCheck::new(HealthKind::Http {
            url: "http://127.0.0.1:8080/health".into(),
        }));
        one("w", s, "");
        let mut s = program("sleep");
        s.health.push(HealthCheck::new(HealthKind::Tcp {
            address: "localhost".into(),
        }));
        one("w", s, "is not host:port");
        let mut s = program("sleep");
        let mut h = HealthCheck::new(HealthKind::Tcp {
            address: "127.0.0.1:1".into(),
        });
        h.interval = Duration::from_secs(2);
        s.health.push(h);
        one("w", s, "interval 2s must be longer than timeout 2s");
    }

    #[test]
    fn degraded_and_order() {
        let mut s = program("sleep");
        s.degraded = Some(DegradedMode {
            args: Some(vec!["--lite".into()]),
            signal: Some(Signal::TERM),
            ..DegradedMode::default()
        });
        one("w", s, "either args/env");
        let mut s = program("sleep");
        s.degraded = Some(DegradedMode::default());
        one("w", s, "either args/env");
        let mut s = program("sleep");
        s.degraded = Some(DegradedMode {
            signal: Signal::from_name("usr1"),
            restore_signal: Signal::from_name("SIGUSR2"),
            ..DegradedMode::default()
        });
        one("w", s, "");
        let sup = SupervisorConfig {
            shutdown_order: vec!["db".into(), "nope".into()],
            ..SupervisorConfig::default()
        };
        check(
            sup,
            &[("db", program("sleep"))],
            "\"nope\" is not a configured program",
        );
    }

    #[test]
    fn arguments() {
        let ok = |s: &str| assert_eq!(validate_argument(s), Ok(()), "{s:?}");
        let bad = |s: &str| assert!(validate_argument(s).is_err(), "{s:?}");
        ok("web-1");
        ok("1.2.3+build.7");
        ok("stdout");
        for s in [
            "", "a;b", "a|b", "a&b", "$x", "`x`", "a<b", "a>b", "(a)", "{a}", "a\nb", "a\rb",
            "a\0b", "'a'", "\"a\"", "a*", "a?", "!a", "~a", "a\\b", "a\tb",
        ] {
            bad(s);
        }
        bad(&"x".repeat(MAX_ARGUMENT_LEN + 1));
    }

    #[test]
    fn backoff_delays_grow_and_cap() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(1000),
            factor: 2.0,
        };
        let d: Vec<u128> = (1..=6).map(|n| b.delay(n).as_millis()).collect();
        assert_eq!(d, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(b.delay(0).as_millis(), 100);
        assert_eq!(b.delay(u32::MAX), b.max);
    }

    #[test]
    fn decodes_with_defaults_and_refuses_unknown_keys() {
        let s: ProgramSpec = serde_json::from_value(serde_json::json!({
            "command": "/bin/web",
            "restart": "always",
            "stop_signal": "SIGINT",
            "backoff": { "initial": "50ms" },
            "health": [{ "kind": "tcp", "address": "127.0.0.1:80", "slow": "1s" }],
            "degraded": { "signal": "USR1" },
            "release": {}
        }))
        .unwrap();
        assert_eq!(s.restart, RestartPolicy::Always);
        assert_eq!(s.stop_signal.number(), libc::SIGINT);
        assert_eq!(s.backoff.initial, Duration::from_millis(50));
        assert_eq!(s.backoff.max, Duration::from_secs(60));
        assert_eq!(s.health[0].interval, Duration::from_secs(10));
        assert_eq!(s.health[0].slow, Some(Duration::from_secs(1)));
        assert_eq!(s.release.unwrap().keep, 5);
        assert!(s.autostart);
        // Round trip through the flat health shape.
        let back: ProgramSpec = serde_json::from_value(serde_json::to_value(&s).unwrap()).unwrap();
        assert_eq!(back, s);

        let err = serde_json::from_value::<ProgramSpec>(serde_json::json!({"comand": "x"}));
        assert!(err.is_err());
        let err = serde_json::from_value::<ProgramSpec>(serde_json::json!({
            "command": "x", "health": [{ "kind": "tcp", "url": "http://x/" }]
        }));
        assert!(err.is_err());
        let err = serde_json::from_value::<ProgramSpec>(serde_json::json!({
            "command": "x", "stop_signal": "BOGUS"
        }));
        assert!(err.unwrap_err().to_string().contains("unknown signal"));
        let sup: SupervisorConfig =
            serde_json::from_value(serde_json::json!({"on_exit": "leave"})).unwrap();
        assert_eq!(sup.on_exit, OnExit::Leave);
        assert_eq!(sup.log_keep, 5);
    }

    #[test]
    fn http_urls() {
        assert_eq!(
            parse_http_url("http://127.0.0.1:8080/health"),
            Some((
                "127.0.0.1:8080".into(),
                "127.0.0.1:8080".into(),
                "/health".into()
            ))
        );
        assert_eq!(
            parse_http_url("http://localhost"),
            Some(("localhost:80".into(), "localhost".into(), "/".into()))
        );
        assert_eq!(parse_http_url("http://:80/"), None);
        assert_eq!(parse_http_url("ftp://x/"), None);
    }
}
