//! Reachability probes: TCP connects to the configured `host:port` targets, all targets at once.
//!
//! A name is resolved once per round, outside the timed part, so the round-trip time is the
//! connect alone; a target that does not parse or resolve (within the timeout) counts every
//! attempt as lost. The attempts to one target run one after the other, each bounded by the
//! timeout, and the connection is closed as soon as it is established.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::timeout;

use crate::config::ProbeConfig;
use crate::model::ProbeResult;

/// Probes every target concurrently; the results are in the order of `config.targets`.
///
/// A round lasts at most about `(attempts + 1) × timeout` (resolution, then the attempts). With
/// `attempts = 0` nothing is sent and the target reports 100 % loss: a probe that never ran
/// must not look healthy.
pub async fn probe_all(config: &ProbeConfig) -> Vec<ProbeResult> {
    let mut tasks = JoinSet::new();
    for (i, target) in config.targets.iter().enumerate() {
        let (target, attempts, limit) = (target.clone(), config.attempts, config.timeout);
        tasks.spawn(async move { (i, probe(target, attempts, limit).await) });
    }
    let mut results: Vec<Option<ProbeResult>> = vec![None; config.targets.len()];
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((i, result)) => {
                if let Some(slot) = results.get_mut(i) {
                    *slot = Some(result);
                }
            }
            Err(e) => tracing::warn!(error = %e, "probe task failed"),
        }
    }
    // A task that died leaves its target with nothing received, which is what it reports.
    results
        .into_iter()
        .zip(&config.targets)
        .map(|(r, target)| r.unwrap_or_else(|| summarize(target.clone(), config.attempts, &[])))
        .collect()
}

async fn probe(target: String, attempts: u32, limit: Duration) -> ProbeResult {
    let addrs = match timeout(limit, tokio::net::lookup_host(target.as_str())).await {
        Ok(Ok(addrs)) => addrs.collect::<Vec<SocketAddr>>(),
        Ok(Err(e)) => {
            tracing::debug!(%target, error = %e, "probe target does not resolve");
            Vec::new()
        }
        Err(_) => {
            tracing::debug!(%target, "probe target resolution timed out");
            Vec::new()
        }
    };
    let mut rtts = Vec::new();
    if !addrs.is_empty() {
        for _ in 0..attempts {
            let start = Instant::now();
            // Tries the addresses in resolver order, as a client of the target would.
            if let Ok(Ok(stream)) = timeout(limit, TcpStream::connect(addrs.as_slice())).await {
                rtts.push(start.elapsed());
                drop(stream);
            }
        }
    }
    summarize(target, attempts, &rtts)
}

fn summarize(target: String, sent: u32, rtts: &[Duration]) -> ProbeResult {
    let received = u32::try_from(rtts.len()).unwrap_or(u32::MAX).min(sent);
    let loss_pct = if sent == 0 {
        100.0
    } else {
        100.0 * (sent - received) as f32 / sent as f32
    };
    let rtt_ms = (!rtts.is_empty())
        .then(|| rtts.iter().map(|d| d.as_secs_f64() * 1e3).sum::<f64>() / rtts.len() as f64)
        .map(|ms| ms as f32);
    ProbeResult {
        target,
        sent,
        received,
        loss_pct,
        rtt_ms,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a panic is how a test reports
mod tests {
    use tokio::net::TcpListener;

    use super::*;

    fn config(targets: &[String], attempts: u32) -> ProbeConfig {
        ProbeConfig {
            targets: targets.to_vec(),
            attempts,
            timeout: Duration::from_secs(2),
        }
    }

    /// A port nothing listens on: bound, then released.
    async fn closed_port() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        addr.to_string()
    }

    #[tokio::test]
    async fn listening_port_is_reached() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open = listener.local_addr().unwrap().to_string();
        let results = probe_all(&config(std::slice::from_ref(&open), 3)).await;
        assert_eq!(results.len(), 1);
        let r = &results[0];
        assert_eq!(
            (r.target.as_str(), r.sent, r.received, r.loss_pct),
            (open.as_str(), 3, 3, 0.0)
        );
        assert!(r.rtt_ms.is_some_and(|ms| ms >= 0.0), "{r:?}");
    }

    #[tokio::test]
    async fn closed_port_is_all_lost() {
        let closed = closed_port().await;
        let results = probe_all(&config(std::slice::from_ref(&closed), 2)).await;
        assert_eq!(
            results,
            [ProbeResult {
                target: closed,
                sent: 2,
                received: 0,
                loss_pct: 100.0,
                rtt_ms: None
            }]
        );
    }

    #[tokio::test]
    async fn results_keep_target_order_and_bad_targets_are_lost() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open = listener.local_addr().unwrap().to_string();
        let targets = [
            "no port here".to_owned(),
            open.clone(),
            closed_port().await,
            "127.0.0.1:99999".to_owned(),
        ];
        let results = probe_all(&config(&targets, 2)).await;
        let summary: Vec<(&str, u32, f32, bool)> = results
            .iter()
            .map(|r| {
                (
                    r.target.as_str(),
                    r.received,
                    r.loss_pct,
                    r.rtt_ms.is_some(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (targets[0].as_str(), 0, 100.0, false),
                (targets[1].as_str(), 2, 0.0, true),
                (targets[2].as_str(), 0, 100.0, false),
                (targets[3].as_str(), 0, 100.0, false),
            ]
        );
    }

    #[tokio::test]
    async fn no_targets_no_results() {
        assert!(probe_all(&ProbeConfig::default()).await.is_empty());
    }

    #[test]
    fn summary_arithmetic() {
        let ms = Duration::from_millis;
        let r = summarize("t".into(), 4, &[ms(2), ms(4)]);
        assert_eq!((r.received, r.loss_pct, r.rtt_ms), (2, 50.0, Some(3.0)));
        let r = summarize("t".into(), 0, &[]);
        assert_eq!(
            (r.sent, r.received, r.loss_pct, r.rtt_ms),
            (0, 0, 100.0, None)
        );
    }
}
