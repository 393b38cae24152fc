//! A real `nats-server` on a free loopback port, with its own JetStream directory.
//!
//! Stopped (and its directory removed) on drop. `stop` and `start` keep the port and the store,
//! so tests can take the bus away and bring it back.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::child::terminate;
use crate::SETUP_HINT;

/// Options for [`NatsServer::start_with`].
#[derive(Debug, Clone, Default)]
pub struct NatsOptions {
    /// Require this user and password.
    pub user_password: Option<(String, String)>,
    /// Extra lines appended to the server's config file.
    pub extra_config: String,
    /// Listen on this port instead of a free one.
    pub port: Option<u16>,
}

#[derive(Debug)]
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    config: PathBuf,
}

/// Picks a free loopback port (the listener is closed before the port is used).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl NatsServer {
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with(NatsOptions::default())
    }

    pub fn start_with(opts: NatsOptions) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("gridmon-nats-").tempdir()?;
        let port = match opts.port {
            Some(p) => p,
            None => free_port()?,
        };
        let store = dir.path().join("jetstream");
        let mut conf = format!(
            "listen: 127.0.0.1:{port}\nserver_name: gridmon_test_{port}\njetstream {{\n  store_dir: {store:?}\n  max_memory_store: 256MB\n  max_file_store: 2GB\n}}\nmax_payload: 8MB\n",
        );
        if let Some((u, p)) = &opts.user_password {
            conf.push_str(&format!(
                "authorization {{\n  user: {u:?}\n  password: {p:?}\n}}\n"
            ));
        }
        conf.push_str(&opts.extra_config);
        let config = dir.path().join("nats.conf");
        std::fs::write(&config, conf)?;
        let mut s = Self {
            child: None,
            port,
            dir,
            config,
        };
        s.start_again()?;
        Ok(s)
    }

    /// Starts the server (again) on the same port with the same store.
    pub fn start_again(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.child.is_none(), "nats-server is already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("nats.log"))?;
        let child = spawn_server(&self.config, log)
            .with_context(|| format!("cannot start nats-server: {SETUP_HINT}"))?;
        self.child = Some(child);
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                anyhow::bail!("nats-server exited with {status}; log: {}", self.log_tail());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "nats-server did not listen on {addr} within 15s; log: {}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Stops the server (SIGTERM, then SIGKILL after 5 s) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child, Duration::from_secs(5));
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The end of the server's log, for error messages.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("nats.log")).unwrap_or_default();
        let start = log.len().saturating_sub(2000);
        log.get(start..).unwrap_or_default().to_string()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

#[allow(clippy::disallowed_methods)] // the harness's one place that starts nats-server
fn spawn_server(config: &Path, log: std::fs::File) -> anyhow::Result<Child> {
    use std::os::unix::process::CommandExt;
    let err = log.try_clone()?;
    let child = std::process::Command::new("nats-server")
        .arg("-c")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        .process_group(0)
        .spawn()?;
    Ok(child)
}
