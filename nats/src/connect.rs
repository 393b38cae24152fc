//! Opens the NATS connection from config: auth, TLS, name, and reconnect with capped backoff.
//!
//! The connection never gives up: a server that is down at start is retried in the background
//! (`retry_on_initial_connect`), so the agent keeps collecting while the bus is away.

use std::time::Duration;

use async_nats::{Client, ConnectOptions, Event};

use crate::config::NatsConfig;

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot read credentials file {path}: {source}")]
    Creds {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot connect to {servers}: {source}")]
    Connect {
        servers: String,
        source: async_nats::ConnectError,
    },
}

/// Reconnect delay for the `attempt`-th try: 100 ms doubling up to `max`, with ±20 % jitter so a
/// fleet that lost its server does not return in lockstep.
pub fn backoff(attempt: usize, max: Duration) -> Duration {
    let exp = attempt.min(16) as u32;
    let base = Duration::from_millis(100)
        .saturating_mul(2u32.saturating_pow(exp))
        .min(max);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let jitter = 0.8 + f64::from(nanos % 1000) / 2500.0;
    base.mul_f64(jitter)
}

/// Builds the options without connecting.
pub async fn options(cfg: &NatsConfig, default_name: &str) -> Result<ConnectOptions, ConnectError> {
    let mut o = match &cfg.creds_file {
        Some(path) => ConnectOptions::with_credentials_file(path)
            .await
            .map_err(|source| ConnectError::Creds {
                path: path.display().to_string(),
                source,
            })?,
        None => ConnectOptions::new(),
    };
    if let (Some(user), Some(pass)) = (&cfg.user, &cfg.password) {
        o = o.user_and_password(user.clone(), pass.expose().to_string());
    }
    if let Some(t) = &cfg.token {
        o = o.token(t.expose().to_string());
    }
    if let Some(seed) = &cfg.nkey_seed {
        o = o.nkey(seed.expose().to_string());
    }
    if let Some(ca) = &cfg.tls_ca {
        o = o.add_root_certificates(ca.clone());
    }
    if let (Some(cert), Some(key)) = (&cfg.tls_cert, &cfg.tls_key) {
        o = o.add_client_certificate(cert.clone(), key.clone());
    }
    if cfg.tls_required {
        o = o.require_tls(true);
    }
    if let Some(p) = &cfg.inbox_prefix {
        o = o.custom_inbox_prefix(p.clone());
    }
    let max = cfg.reconnect_max_delay;
    Ok(
        o.name(cfg.name.clone().unwrap_or_else(|| default_name.to_string()))
            .connection_timeout(cfg.connect_timeout)
            .retry_on_initial_connect()
            .max_reconnects(None)
            .reconnect_delay_callback(move |attempt| backoff(attempt, max))
            .event_callback(|event| async move {
                match event {
                    Event::Connected => tracing::info!("connected to NATS"),
                    Event::Disconnected => tracing::warn!("disconnected from NATS; retrying"),
                    Event::SlowConsumer(sid) => {
                        tracing::warn!(sid, "slow consumer: messages dropped")
                    }
                    other => tracing::info!(event = %other, "NATS connection event"),
                }
            }),
    )
}

/// Connects (in the background if no server answers yet).
pub async fn connect(cfg: &NatsConfig, default_name: &str) -> Result<Client, ConnectError> {
    let servers = cfg.servers.join(",");
    let opts = options(cfg, default_name).await?;
    opts.connect(servers.as_str())
        .await
        .map_err(|source| ConnectError::Connect { servers, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let max = Duration::from_secs(5);
        assert!(backoff(0, max) <= Duration::from_millis(120));
        assert!(backoff(3, max) >= Duration::from_millis(640));
        for a in [10, 100, usize::MAX] {
            let d = backoff(a, max);
            assert!(d <= max.mul_f64(1.2) && d >= max.mul_f64(0.8), "{d:?}");
        }
    }
}
