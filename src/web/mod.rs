//! `gridmon web`: the dashboard.

use gridmon_nats::Config;
use tokio_util::sync::CancellationToken;

pub async fn run(_config: Config, _listen: Option<String>, _shutdown: CancellationToken) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}

pub fn hash_password_from_stdin() -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
