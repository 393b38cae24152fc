//! A ClickHouse engine for tests: the embedded one (`scripts/clickhouse-front.py` over chDB)
//! or, with `CLICKHOUSE_URL` set, a real server; one fresh database per test.
//!
//! The embedded engine is a child process speaking ClickHouse's HTTP interface, so tests
//! use the same `clickhouse::Client` code against either. It holds a pipe to our process
//! and exits when that closes, so no engine outlives a test process, however it ends.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;

use crate::child::terminate;
use crate::SETUP_HINT;

/// How long the front may take to import chDB and open its data directory.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// The front finishes in-flight requests on SIGTERM (it gives them 30 s itself).
const STOP_GRACE: Duration = Duration::from_secs(35);

/// One ClickHouse engine per test process (started lazily, shared by all its tests), or the
/// real server at `CLICKHOUSE_URL` with `CLICKHOUSE_USER` / `CLICKHOUSE_PASSWORD`.
#[derive(Debug)]
pub struct ClickHouse {
    url: String,
    user: Option<String>,
    password: Option<String>,
    /// `None` for a real server. Never dropped (it lives in a static): the front's data
    /// directory is removed by the front itself when it sees our end of its stdin close.
    process: Option<ClickHouseProcess>,
}

/// A database created for one test, and a client bound to it.
#[derive(Debug)]
pub struct TestDb {
    pub name: String,
    pub client: clickhouse::Client,
}

static SHARED: OnceLock<Result<ClickHouse, String>> = OnceLock::new();
static NEXT_DB: AtomicU64 = AtomicU64::new(0);

impl ClickHouse {
    /// The process-wide engine; the first call starts it (about half a second).
    pub fn shared() -> anyhow::Result<&'static ClickHouse> {
        SHARED
            .get_or_init(|| Self::connect_or_start().map_err(|e| format!("{e:#}")))
            .as_ref()
            .map_err(|e| anyhow::anyhow!("{e}"))
    }

    fn connect_or_start() -> anyhow::Result<Self> {
        if let Some(url) = std::env::var("CLICKHOUSE_URL")
            .ok()
            .filter(|u| !u.is_empty())
        {
            return Ok(Self {
                url,
                user: std::env::var("CLICKHOUSE_USER").ok(),
                password: std::env::var("CLICKHOUSE_PASSWORD").ok(),
                process: None,
            });
        }
        let dir = tempfile::Builder::new()
            .prefix("gridmon-clickhouse-")
            .tempdir()
            .context("cannot create a data directory for the embedded ClickHouse")?;
        // The front deletes the directory when it exits, which is after this process.
        let path = dir.keep();
        let process = ClickHouseProcess::spawn(path.clone(), 0, true).inspect_err(|_| {
            let _ = std::fs::remove_dir_all(&path);
        })?;
        Ok(Self {
            url: process.url(),
            user: None,
            password: None,
            process: Some(process),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The `[clickhouse]` keys of a gridmon config for this engine and `database`.
    pub fn config_toml(&self, database: &str) -> String {
        let mut t = format!(
            "[clickhouse]\nurl = {:?}\ndatabase = {database:?}\n",
            self.url
        );
        if let Some(u) = &self.user {
            t.push_str(&format!("user = {u:?}\n"));
        }
        if let Some(p) = &self.password {
            t.push_str(&format!("password = {p:?}\n"));
        }
        t
    }

    /// A backup destination template (`{name}` for each backup's name) this engine accepts:
    /// under the embedded engine's backups directory, or `CLICKHOUSE_BACKUP_DESTINATION` for a
    /// real server (which must allow it, e.g. `Disk('backups', '{name}')`).
    pub fn backup_destination(&self) -> anyhow::Result<String> {
        match &self.process {
            Some(p) => Ok(format!(
                "File('{}/{{name}}')",
                p.data_dir().join("backups").display()
            )),
            None => std::env::var("CLICKHOUSE_BACKUP_DESTINATION").map_err(|_| {
                anyhow::anyhow!(
                    "with CLICKHOUSE_URL, set CLICKHOUSE_BACKUP_DESTINATION to a destination the \
                     server allows, with {{name}} for the backup's name, e.g. Disk('backups', '{{name}}')"
                )
            }),
        }
    }

    /// Whether this is the embedded engine (chDB behind `scripts/clickhouse-front.py`).
    pub fn is_embedded(&self) -> bool {
        self.process.is_some()
    }

    /// A client with no database set (ClickHouse's `default`).
    pub fn client(&self) -> clickhouse::Client {
        let mut client = clickhouse::Client::default().with_url(&self.url);
        if let Some(user) = &self.user {
            client = client.with_user(user);
        }
        if let Some(password) = &self.password {
            client = client.with_password(password);
        }
        client
    }

    /// Creates a fresh, uniquely named database for one test and returns a client bound to
    /// it. Nothing is dropped afterwards: databases are cheap, and a failed test's data stays
    /// there to look at.
    pub async fn test_db(&self, test_name: &str) -> anyhow::Result<TestDb> {
        let name = unique_db_name(test_name);
        self.client()
            .query(&format!("CREATE DATABASE {name}"))
            .execute()
            .await
            .with_context(|| format!("cannot create database {name} on {}", self.url))?;
        Ok(TestDb {
            client: self.client().with_database(&name),
            name,
        })
    }
}

/// `t_<test name>_<pid>_<n>_<unix seconds>`: unique across tests, processes and runs against
/// one long-lived server, and only `[a-z0-9_]`, so it never needs quoting.
fn unique_db_name(test_name: &str) -> String {
    let mut base: String = test_name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(40)
        .collect();
    if base.is_empty() {
        base.push('x');
    }
    let n = NEXT_DB.fetch_add(1, Ordering::Relaxed);
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!("t_{base}_{}_{n}_{secs}", std::process::id())
}

/// The embedded engine as a process that tests can stop and start again (same port, same
/// data). Killed on drop.
#[derive(Debug)]
pub struct ClickHouseProcess {
    child: Option<Child>,
    /// The front stops when this pipe closes: on drop, or when our process dies.
    stdin: Option<ChildStdin>,
    data_dir: PathBuf,
    port: u16,
    remove_data_on_exit: bool,
}

impl ClickHouseProcess {
    /// Starts the front on `port` (0: a free one, kept for restarts) with its data in
    /// `data_dir`, and waits until it accepts requests.
    pub fn start(data_dir: impl Into<PathBuf>, port: u16) -> anyhow::Result<Self> {
        Self::spawn(data_dir.into(), port, false)
    }

    fn spawn(data_dir: PathBuf, port: u16, remove_data_on_exit: bool) -> anyhow::Result<Self> {
        let mut process = Self {
            child: None,
            stdin: None,
            data_dir,
            port,
            remove_data_on_exit,
        };
        process.start_again()?;
        Ok(process)
    }

    /// Starts a stopped front again on the same port with the same data.
    pub fn start_again(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.child.is_none(),
            "the ClickHouse front is already running"
        );
        std::fs::create_dir_all(&self.data_dir)
            .with_context(|| format!("cannot create {}", self.data_dir.display()))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .with_context(|| format!("cannot open {}", self.log_path().display()))?;
        let mut child = spawn_front(&self.data_dir, self.port, self.remove_data_on_exit, log)?;
        let stdin = child.stdin.take();
        let stdout = child
            .stdout
            .take()
            .context("the front's stdout was not captured")?;
        self.child = Some(child);
        self.stdin = stdin;
        match wait_ready(stdout, START_TIMEOUT) {
            Ok(port) => {
                self.port = port;
                Ok(())
            }
            Err(e) => {
                let status = self
                    .child
                    .as_mut()
                    .and_then(|c| c.try_wait().ok().flatten());
                self.stop();
                let exited = status
                    .map(|s| format!(" (it exited with {s})"))
                    .unwrap_or_default();
                Err(e.context(format!(
                    "the embedded ClickHouse (scripts/clickhouse-front.py) did not start{exited}; {SETUP_HINT}; its log:\n{}",
                    self.log_tail()
                )))
            }
        }
    }

    /// Stops the front (SIGTERM: it finishes in-flight requests) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child, STOP_GRACE);
        }
        self.stdin = None;
    }

    /// Stops the front if it runs, then starts it again on the same port with the same data.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.start_again()
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    fn log_path(&self) -> PathBuf {
        self.data_dir.join("clickhouse-front.log")
    }

    /// The end of the front's log, for error messages.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read(self.log_path()).unwrap_or_default();
        let start = log.len().saturating_sub(3000);
        String::from_utf8_lossy(&log[start..]).into_owned()
    }
}

impl Drop for ClickHouseProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

fn front_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/clickhouse-front.py")
}

#[allow(clippy::disallowed_methods)] // the harness's one place that starts the ClickHouse front
fn spawn_front(
    data_dir: &Path,
    port: u16,
    remove_data_on_exit: bool,
    log: std::fs::File,
) -> anyhow::Result<Child> {
    use std::os::unix::process::CommandExt;
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_string());
    let script = front_script();
    let mut command = std::process::Command::new(&python);
    command
        .arg(&script)
        .arg("--data")
        .arg(data_dir)
        .arg("--port")
        .arg(port.to_string())
        .arg("--stop-on-stdin-eof")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(log)
        // Our terminal's Ctrl-C must not reach it before we stop it ourselves.
        .process_group(0);
    if remove_data_on_exit {
        command.arg("--remove-data-on-exit");
    }
    command
        .spawn()
        .with_context(|| format!("cannot run `{python} {}`; {SETUP_HINT}", script.display()))
}

/// Reads the front's stdout until `READY <port>`; keeps draining it afterwards so the
/// front never blocks on a full pipe.
fn wait_ready(stdout: impl Read + Send + 'static, timeout: Duration) -> anyhow::Result<u16> {
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("clickhouse-front-stdout".into())
        .spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            for line in lines.by_ref() {
                let Ok(line) = line else { break };
                if let Some(port) = line.strip_prefix("READY ") {
                    let _ = tx.send(
                        port.trim()
                            .parse::<u16>()
                            .map_err(|e| format!("bad READY line {line:?}: {e}")),
                    );
                    break;
                }
            }
            drop(tx);
            for _ in lines {}
        })?;
    let deadline = Instant::now() + timeout;
    match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        Ok(Ok(port)) => Ok(port),
        Ok(Err(e)) => anyhow::bail!(e),
        Err(mpsc::RecvTimeoutError::Timeout) => anyhow::bail!("no READY line within {timeout:?}"),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            anyhow::bail!("it closed stdout without a READY line")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn db_names_are_plain_identifiers_and_unique() {
        let a = unique_db_name("insert::Round-trip Ünïcode");
        let b = unique_db_name("insert::Round-trip Ünïcode");
        assert_ne!(a, b);
        assert!(a.starts_with("t_insert__round_trip__n_code_"), "{a}");
        assert!(
            a.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
            "{a}"
        );
        assert!(unique_db_name("").starts_with("t_x_"));
    }
}
