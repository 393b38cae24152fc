//! The `gridmon` binary: parses the command line, loads config, installs logging, runs a subcommand.

mod agent;
mod aggregate;
mod control;
mod ctl;
mod demo;
mod ingest;
mod release;
mod simulate;
mod top;
mod watch;
mod web;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use gridmon_nats::{Config, Overrides};

/// Exit status for a bad command line or a bad config.
const EXIT_CONFIG: u8 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "gridmon",
    version,
    about = "Fleet monitoring and process supervision over NATS"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the node agent: collect host, process and sensor metrics and publish them.
    Agent(Common),
    /// Fold node reports into group, cluster and grid rollups; detect stale nodes; raise alarms.
    Aggregate(AggregateArgs),
    /// Publish realistic reports for a simulated fleet, with injected faults.
    Simulate(simulate::SimulateArgs),
    /// Write everything on the bus into ClickHouse (JetStream stream, durable consumer).
    Ingest(IngestArgs),
    /// Print the messages on the bus, decoded.
    Watch(WatchArgs),
    /// Start a local nats-server and an agent, and show their reports live.
    Demo(DemoArgs),
    /// Send a signed command to a node, or to every node of a group, a cluster or the grid.
    Ctl(CtlCmd),
    /// Create an operator key for signing commands.
    Keygen(ctl::KeygenArgs),
    /// Upload and list program releases in the NATS object store.
    Release(ReleaseCmd),
    /// The live terminal view: grid → cluster → group → node, process table, program actions.
    Top(TopCmd),
    /// The web dashboard: static, real-time and history views, and process management.
    Web(WebArgs),
    /// Hash a dashboard password (read from stdin) for `[[web.users]]`.
    HashPassword,
}

#[derive(Debug, Args)]
struct TopCmd {
    #[command(flatten)]
    bus: BusArgs,
    #[command(flatten)]
    args: top::TopArgs,
}

#[derive(Debug, Args)]
struct WebArgs {
    #[command(flatten)]
    common: Common,
    /// Address to listen on (default `web.listen`, `127.0.0.1:8080`).
    #[arg(long)]
    listen: Option<String>,
}

#[derive(Debug, Args)]
struct ReleaseCmd {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    action: ReleaseAction,
}

#[derive(Debug, Subcommand)]
enum ReleaseAction {
    /// Upload FILE (a tar or tar.gz archive) as PROGRAM's release VERSION.
    Push {
        program: String,
        version: String,
        file: PathBuf,
        /// Sign the release with this nkey seed file (see `releases.signing_keys`).
        #[arg(long)]
        sign_key: Option<PathBuf>,
    },
    /// List the releases in the bucket.
    List { program: Option<String> },
}

#[derive(Debug, Args)]
struct CtlCmd {
    #[command(flatten)]
    bus: BusArgs,
    #[command(flatten)]
    args: ctl::CtlArgs,
}

/// The options of commands that talk to the bus without being a node (their `--cluster`,
/// `--group` and `--node` name targets instead).
#[derive(Debug, Args, Clone)]
struct BusArgs {
    /// Config file (TOML). Also `GRIDMON_CONFIG`.
    #[arg(long, short = 'c', env = "GRIDMON_CONFIG")]
    config: Option<PathBuf>,
    /// NATS server URL(s), comma-separated.
    #[arg(long)]
    nats_url: Option<String>,
    /// Subject prefix (default `grid`).
    #[arg(long)]
    prefix: Option<String>,
    /// Log filter (`RUST_LOG` syntax).
    #[arg(long, env = "GRIDMON_LOG", default_value = "warn")]
    log: String,
}

impl BusArgs {
    fn common(&self) -> Common {
        Common {
            config: self.config.clone(),
            nats_url: self.nats_url.clone(),
            prefix: self.prefix.clone(),
            cluster: None,
            group: None,
            node: None,
            interval: None,
            process_interval: None,
            log: self.log.clone(),
        }
    }
}

/// Options every bus-facing subcommand takes; they override the config file and the environment.
#[derive(Debug, Args, Clone)]
struct Common {
    /// Config file (TOML). Also `GRIDMON_CONFIG`.
    #[arg(long, short = 'c', env = "GRIDMON_CONFIG")]
    config: Option<PathBuf>,
    /// NATS server URL(s), comma-separated.
    #[arg(long)]
    nats_url: Option<String>,
    /// Subject prefix (default `grid`).
    #[arg(long)]
    prefix: Option<String>,
    #[arg(long)]
    cluster: Option<String>,
    #[arg(long)]
    group: Option<String>,
    /// Node name (default: the host name).
    #[arg(long)]
    node: Option<String>,
    /// Host-metrics interval, e.g. `1s`, `500ms`.
    #[arg(long, value_parser = humantime::parse_duration)]
    interval: Option<Duration>,
    /// Process-table interval.
    #[arg(long, value_parser = humantime::parse_duration)]
    process_interval: Option<Duration>,
    /// Log filter (`RUST_LOG` syntax), default `info`.
    #[arg(long, env = "GRIDMON_LOG", default_value = "info,async_nats=warn")]
    log: String,
}

#[derive(Debug, Args)]
struct WatchArgs {
    #[command(flatten)]
    common: Common,
    /// Print each message as one JSON line instead of a summary.
    #[arg(long)]
    json: bool,
    /// Exit after this many messages.
    #[arg(long)]
    count: Option<u64>,
    /// Subject to subscribe to, repeatable (default: everything under the prefix).
    #[arg(long)]
    subject: Vec<String>,
}

#[derive(Debug, Args)]
struct AggregateArgs {
    #[command(flatten)]
    common: Common,
    /// Scopes to serve (repeat or comma-separate): `grid`, `<cluster>`, `<cluster>/<group>`, with
    /// `*` for any name. Default: every group, every cluster and the grid.
    #[arg(long, value_delimiter = ',')]
    serve: Vec<String>,
    /// This instance's name for leadership (default `<host>-<pid>`).
    #[arg(long)]
    instance: Option<String>,
    /// Publish without leader election (a single instance, or a server without JetStream).
    #[arg(long)]
    no_leader_election: bool,
}

#[derive(Debug, Args)]
struct IngestArgs {
    #[command(flatten)]
    common: Common,
    /// Apply the schema migrations and the retention settings, then exit.
    #[arg(long)]
    migrate_only: bool,
    /// Take one backup to `ingest.backup.destination` now, then exit.
    #[arg(long, conflicts_with = "migrate_only")]
    backup_now: bool,
}

#[derive(Debug, Args)]
struct DemoArgs {
    #[command(flatten)]
    common: Common,
    /// Port for the demo's nats-server (default 4222, or a free one if that is taken).
    #[arg(long)]
    port: Option<u16>,
    /// Where the demo keeps its state (JetStream store, logs).
    #[arg(long, default_value = ".demo")]
    dir: PathBuf,
}

impl Common {
    fn overrides(&self) -> Overrides {
        Overrides {
            servers: self
                .nats_url
                .as_ref()
                .map(|u| u.split(',').map(|s| s.trim().to_string()).collect()),
            prefix: self.prefix.clone(),
            cluster: self.cluster.clone(),
            group: self.group.clone(),
            node: self.node.clone(),
            interval: self.interval,
            process_interval: self.process_interval,
        }
    }

    fn load(&self) -> Result<Config, gridmon_nats::ConfigError> {
        let env: HashMap<String, String> = std::env::vars().collect();
        Config::load(self.config.as_deref(), &env, &self.overrides())
    }
}

fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(filter))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::HashPassword = &cli.command {
        return match web::hash_password_from_stdin() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("gridmon: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    if let Command::Keygen(k) = &cli.command {
        return match ctl::keygen(k) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("gridmon: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let ctl_common;
    let common = match &cli.command {
        Command::Ctl(c) => {
            ctl_common = c.bus.common();
            &ctl_common
        }
        Command::Release(r) => &r.common,
        Command::Top(t) => {
            ctl_common = t.bus.common();
            &ctl_common
        }
        Command::Keygen(_) | Command::HashPassword => return ExitCode::SUCCESS,
        Command::Agent(c) => c,
        Command::Web(w) => &w.common,
        Command::Aggregate(a) => &a.common,
        Command::Simulate(s) => &s.common,
        Command::Ingest(i) => &i.common,
        Command::Watch(w) => &w.common,
        Command::Demo(d) => &d.common,
    };
    // The terminal view owns the screen: it logs only where GRIDMON_LOG_FILE says.
    if matches!(cli.command, Command::Top(_)) {
        top::init_logging(&common.log);
    } else {
        init_logging(&common.log);
    }
    let mut config = match common.load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("gridmon: bad configuration: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let mut aggregate_plan = None;
    if let Command::Aggregate(a) = &cli.command {
        match aggregate::Plan::new(
            &mut config,
            &a.serve,
            a.instance.clone(),
            a.no_leader_election,
        ) {
            Ok(p) => aggregate_plan = Some(p),
            Err(e) => {
                eprintln!("gridmon: bad configuration: {e}");
                return ExitCode::from(EXIT_CONFIG);
            }
        }
    }
    // The ingest encodes rows beside its pipeline; everything else is light on one thread.
    let runtime = if matches!(cli.command, Command::Ingest(_)) {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("gridmon: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Ctl(c) => match ctl::run(config, c.args, shutdown_on_signal()).await {
                Ok(true) => Ok(()),
                Ok(false) => Err(anyhow::anyhow!("not every target succeeded")),
                Err(e) => Err(e),
            },
            Command::Keygen(_) | Command::HashPassword => Ok(()),
            Command::Top(t) => top::run(config, t.args, shutdown_on_signal()).await,
            Command::Web(w) => web::run(config, w.listen, shutdown_on_signal()).await,
            Command::Release(r) => match r.action {
                ReleaseAction::Push {
                    program,
                    version,
                    file,
                    sign_key,
                } => {
                    let seed = match &sign_key {
                        Some(p) => Some(release::load_seed(p)?),
                        None => None,
                    };
                    release::run_push(&config, &program, &version, &file, seed.as_deref()).await
                }
                ReleaseAction::List { program } => {
                    release::run_list(&config, program.as_deref()).await
                }
            },
            Command::Agent(_) => agent::run(config, shutdown_on_signal()).await,
            Command::Aggregate(_) => match aggregate_plan {
                Some(plan) => aggregate::run(config, plan, shutdown_on_signal()).await,
                None => Ok(()),
            },
            Command::Simulate(s) => simulate::run(config, s, shutdown_on_signal()).await,
            Command::Ingest(i) => {
                let mode = ingest::Mode {
                    migrate_only: i.migrate_only,
                    backup_now: i.backup_now,
                };
                ingest::run(config, mode, shutdown_on_signal()).await
            }
            Command::Watch(w) => {
                watch::run(config, w.json, w.count, w.subject, shutdown_on_signal()).await
            }
            Command::Demo(d) => {
                demo::run(config, d.port, d.dir, d.common, shutdown_on_signal()).await
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gridmon: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A token cancelled on SIGINT or SIGTERM.
fn shutdown_on_signal() -> tokio_util::sync::CancellationToken {
    let token = tokio_util::sync::CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::error!("cannot install signal handlers");
            return;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
        t.cancel();
    });
    token
}
