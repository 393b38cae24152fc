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
    if config.programs.is_empty() {
        demo_supervision(&mut config, &dir, &url)?;
    }

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
        // Faults go to the same nodes first (docs/simulate.md): with one silent node, the
        // second of each is what shows.
        silent: 1,
        overheat: 2,
        fan_stop: 0,
        crash: 2,
        flap: 0,
        inventory_every: Duration::from_secs(3600),
        json_stats: false,
        commands: false,
    };
    eprintln!(
        "demo: a simulated fleet of {} nodes in clusters c01, c02 (after 20 s one node goes silent, and another overheats and crash-loops a program)",
        fleet.nodes
    );
    // History: the embedded ClickHouse engine (or CLICKHOUSE_URL's server) and the ingest.
    let mut front = None;
    if config.clickhouse.url.is_empty() {
        let (child, url) = start_front(&dir).await?;
        front = Some(child);
        config.clickhouse.url = url;
    }
    config.ingest.stream.max_bytes = config.ingest.stream.max_bytes.min(1 << 30);
    let ch = config.clickhouse.url.clone();
    eprintln!(
        "demo: ClickHouse at {ch} (database {}), filled by gridmon ingest; try:\n  curl -s {ch} --data-binary \"SELECT cluster, count(DISTINCT node) AS nodes, round(avg(cpu_pct), 1) AS cpu_pct, round(max(mem_used_pct), 1) AS mem_max_pct FROM {}.node_metrics WHERE ts > now() - INTERVAL 5 MINUTE GROUP BY cluster ORDER BY cluster\"",
        config.clickhouse.database, config.clickhouse.database
    );
    let (web_listener, web_note) = demo_web(&mut config, &dir).await?;
    let ingest = tokio::spawn(crate::ingest::run(
        config.clone(),
        crate::ingest::Mode::default(),
        shutdown.clone(),
    ));
    // The agents and the simulator send their inventory once at start: let the ingest's stream
    // exist first, so the static view has it.
    wait_for_stream(&config, &config.ingest.stream.name).await;
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
    let web = tokio::spawn(crate::web::serve(
        config.clone(),
        web_listener,
        shutdown.clone(),
    ));
    eprintln!("{web_note}");
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
        r = ingest => r.context("ingest task")?.context("ingest"),
        r = web => r.context("web task")?.context("web dashboard"),
        _ = server.wait() => Err(anyhow::anyhow!("nats-server exited; see {}", dir.join("nats.log").display())),
    };
    shutdown.cancel();
    if let Some(mut f) = front {
        stop(&mut f).await;
    }
    stop(&mut server).await;
    result
}

/// Waits up to a minute for the ingest to create its stream (it goes on regardless).
async fn wait_for_stream(config: &Config, name: &str) {
    let Ok(client) = gridmon_nats::connect::connect(&config.nats, "gridmon-demo").await else {
        return;
    };
    let js = async_nats::jetstream::new(client);
    let deadline = Instant::now() + Duration::from_secs(60);
    while js.get_stream(name).await.is_err() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The dashboard on 127.0.0.1:8080 (or a free port), with an `operator` and a `viewer` login
/// whose passwords are made now and printed, signing with the demo operator key. A `[web]`
/// section with users in the config is used as it is.
async fn demo_web(
    config: &mut Config,
    dir: &Path,
) -> anyhow::Result<(tokio::net::TcpListener, String)> {
    let addr = if config.web.listen == gridmon_nats::config::WebConfig::default().listen
        && !port_free(8080)
    {
        "127.0.0.1:0".to_string()
    } else {
        config.web.listen.clone()
    };
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .with_context(|| format!("the dashboard cannot listen on {addr}"))?;
    let url = format!("http://{}/", listener.local_addr()?);
    if !config.web.users.is_empty() {
        return Ok((listener, format!("demo: dashboard at {url}")));
    }
    let key_file = dir.join("operator.nk");
    if config.web.key_file.is_none() && key_file.exists() {
        config.web.key_file = Some(key_file);
    }
    let mut logins = Vec::new();
    for (name, role) in [
        ("operator", gridmon_nats::config::WebRole::Operator),
        ("viewer", gridmon_nats::config::WebRole::Viewer),
    ] {
        let password = crate::web::random_password();
        config.web.users.push(gridmon_nats::config::WebUser {
            name: name.into(),
            password_hash: crate::web::hash_password(&password)?,
            role,
        });
        logins.push(format!("{name} / {password}"));
    }
    let file = dir.join("dashboard-logins.txt");
    std::fs::write(&file, format!("{url}\n{}\n", logins.join("\n")))
        .with_context(|| format!("writing {}", file.display()))?;
    Ok((
        listener,
        format!(
            "demo: dashboard at {url}  log in as {} (also in {})",
            logins.join(" or "),
            file.display()
        ),
    ))
}

/// The ClickHouse front script: `GRIDMON_CLICKHOUSE_FRONT`, or `scripts/` of the source tree
/// the binary was built in or is run from.
/// Gives the demo agent one supervised program and an operator key allowed everything, so the
/// command path can be tried at once with `gridmon ctl`.
fn demo_supervision(config: &mut Config, dir: &Path, url: &str) -> anyhow::Result<()> {
    let key_file = dir.join("operator.nk");
    let key = if key_file.exists() {
        crate::ctl::read_key(&key_file)?
    } else {
        crate::ctl::write_key(&key_file)?
    };
    config.supervisor.dir = dir.join("supervisor");
    let spec: gridmon_nats::config::ProgramSpec = toml::from_str(
        r#"command = "sh"
args = ["-c", "while :; do echo demo-worker tick; sleep 5; done"]
start_secs = "500ms"
stop_grace = "2s""#,
    )
    .context("the demo program")?;
    config.programs.insert("demo-worker".into(), spec);
    config
        .commands
        .issuers
        .push(gridmon_nats::config::IssuerConfig {
            name: "demo-operator".into(),
            key: key.public_key(),
            ops: vec!["*".into()],
            programs: vec!["*".into()],
        });
    let id = config.node_id()?;
    eprintln!(
        "demo: the agent supervises `demo-worker`; try: gridmon ctl restart demo-worker --node {}/{}/{} --nats-url {url} --key {}",
        id.cluster,
        id.group,
        id.node,
        key_file.display()
    );
    Ok(())
}

fn front_script() -> anyhow::Result<PathBuf> {
    if let Ok(p) = std::env::var("GRIDMON_CLICKHOUSE_FRONT") {
        return Ok(PathBuf::from(p));
    }
    let candidates = [
        PathBuf::from("scripts/clickhouse-front.py"),
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/clickhouse-front.py"),
    ];
    candidates.into_iter().find(|p| p.exists()).ok_or_else(|| {
        anyhow::anyhow!(
            "cannot find scripts/clickhouse-front.py: run the demo from the source tree, set \
             GRIDMON_CLICKHOUSE_FRONT, or point CLICKHOUSE_URL at a ClickHouse server"
        )
    })
}

/// Starts the embedded ClickHouse engine with its data under `dir`; returns it and its URL.
async fn start_front(dir: &Path) -> anyhow::Result<(tokio::process::Child, String)> {
    use tokio::io::AsyncBufReadExt;
    let script = front_script()?;
    let log = std::fs::File::create(dir.join("clickhouse.log"))?;
    let mut front = child::command("python3")
        .arg(&script)
        .arg("--data")
        .arg(dir.join("clickhouse"))
        .args(["--port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
        .with_context(|| format!("cannot start {}: {SETUP_HINT}", script.display()))?;
    let stdout = front.stdout.take().context("the front's stdout")?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let ready = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await? {
            if let Some(port) = line.strip_prefix("READY ") {
                return Ok::<_, std::io::Error>(Some(port.trim().to_string()));
            }
        }
        Ok(None)
    })
    .await;
    match ready {
        Ok(Ok(Some(port))) => Ok((front, format!("http://127.0.0.1:{port}"))),
        _ => bail!(
            "the embedded ClickHouse engine did not start; see {} ({SETUP_HINT})",
            dir.join("clickhouse.log").display()
        ),
    }
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
