//! `gridmon top`: the live terminal view.

use clap::Args;
use gridmon_nats::Config;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Args)]
pub struct TopArgs {
    /// Run as one group's local display: `CLUSTER/GROUP`.
    #[arg(long)]
    pub group: Option<String>,
    /// The operator key (an nkey seed file) for program actions; default `commands.key_file` or
    /// `GRIDMON_KEY_FILE`. Without one the view is read-only.
    #[arg(long)]
    pub key: Option<std::path::PathBuf>,
}

/// Logs to `GRIDMON_LOG_FILE` when set; the screen belongs to the view.
pub fn init_logging(_filter: &str) {}

pub async fn run(_config: Config, _args: TopArgs, _shutdown: CancellationToken) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
