//! `gridmon demo`: the whole local pipeline with embedded defaults, stopped together by Ctrl-C.
//!
//! Starts a private `nats-server` (JetStream on, store under the demo directory), the node agent
//! for this machine, a simulated fleet around it (with a crashed program, an overheating node and
//! a node that goes silent), the aggregator for every group, cluster and the grid, and a watcher
//! that prints the rollups, alarms and node events as they come.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use gridmon_commands::child;
use gridmon_nats::Config;
use tokio_util::sync::CancellationToken;

const SETUP_HINT: &str = "run `scripts/setup` to install it";

pub async fn run(
    mut config: Config,
    port: Option<u16>,
    dir: PathBuf,
    common: crate::Common,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    if !child::on_path("nats-server") {
        bail!("nats-server is not installed: {SETUP_HINT}");
    }
    let port = match port {
        Some(p) => p,
        None if port_free(4222) => 4222,
        None => TcpListener::bind("127.0.0.1:0")?.local_addr()?.port(),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let dir = dir.canonicalize()?;
    let mut server = start_nats(&dir, port).await?;
    let url = format!("nats://127.0.0.1:{port}");
    config.nats.servers = vec![url.clone()];
    config.spool.path = Some(dir.join("agent-spool.msgpack"));
    eprintln!(
        "demo: nats-server at {url} (JetStream store in {})",
        dir.join("jetstream").display()
    );
    eprintln!(
        "demo: agent {} publishing on {}",
        config.node_id()?,
        config.subjects()?.node_report(&config.node_id()?)
    );
    eprintln!("demo: from another terminal: gridmon watch --nats-url {url}   (Ctrl-C here stops everything)");

    let fleet = crate::simulate::SimulateArgs {
        common,
        nodes: 24,
        clusters: 2,
        groups: 2,
        processes: 40,
        process_every: 5,
        rate: 1.0,
        duration: None,
        seed: 1,
        programs: 2,
        fault_after: Duration::from_secs(20),
        silent: 1,
        overheat: 1,
        fan_stop: 0,
        crash: 1,
        flap: 0,
        json_stats: false,
    };
    eprintln!(
        "demo: a simulated fleet of {} nodes in clusters c01, c02 (after 20 s one node goes silent, one overheats, one program crashes)",
        fleet.nodes
    );
    let mut agg_config = config.clone();
    let plan = crate::aggregate::Plan::new(&mut agg_config, &[], None, false)
        .map_err(|e| anyhow::anyhow!("aggregate config: {e}"))?;
    let overview = config.subjects()?.overview();
    let agent = tokio::spawn(crate::agent::run(config.clone(), shutdown.clone()));
    let sim = tokio::spawn(crate::simulate::run(
        config.clone(),
        fleet,
        shutdown.clone(),
    ));
    let agg = tokio::spawn(crate::aggregate::run(agg_config, plan, shutdown.clone()));
    let watch = tokio::spawn(crate::watch::run(
        config,
        false,
        None,
        overview,
        shutdown.clone(),
    ));
    let result = tokio::select! {
        r = agent => r.context("agent task")?.context("agent"),
        r = sim => r.context("simulator task")?.context("simulator"),
        r = agg => r.context("aggregator task")?.context("aggregator"),
        r = watch => r.context("watch task")?.context("watch"),
        _ = server.wait() => Err(anyhow::anyhow!("nats-server exited; see {}", dir.join("nats.log").display())),
    };
    shutdown.cancel();
    stop(&mut server).await;
    result
}

fn port_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

async fn start_nats(dir: &Path, port: u16) -> anyhow::Result<tokio::process::Child> {
    let conf = dir.join("nats.conf");
    let store = dir.join("jetstream");
    std::fs::write(&conf, format!("listen: 127.0.0.1:{port}\nserver_name: gridmon_demo\njetstream {{\n  store_dir: {store:?}\n}}\n"))?;
    let log = std::fs::File::create(dir.join("nats.log"))?;
    let mut server = child::command("nats-server")
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log))
        .spawn()
        .with_context(|| format!("cannot start nats-server: {SETUP_HINT}"))?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if let Some(status) = server.try_wait()? {
            bail!(
                "nats-server exited with {status}; see {}",
                dir.join("nats.log").display()
            );
        }
        if Instant::now() > deadline {
            bail!("nats-server did not listen on {addr} within 10s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(server)
}

async fn stop(server: &mut tokio::process::Child) {
    if let Some(pid) = server.id().and_then(|p| i32::try_from(p).ok()) {
        // SAFETY: signals the process group the spawn helper created for the server.
        unsafe {
            libc::kill(-pid, libc::SIGTERM);
        }
    }
    if tokio::time::timeout(Duration::from_secs(5), server.wait())
        .await
        .is_err()
    {
        let _ = server.kill().await;
    }
}
