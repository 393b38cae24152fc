//! Running one health check: exec (exit 0), TCP connect, or plain HTTP GET (status 200–399).
//!
//! Each probe is bounded by the check's timeout and returns how long it took, so the caller can
//! mark a slow but passing program `busy`.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::reaper;
use crate::spec::{parse_http_url, HealthCheck, HealthKind};

/// Runs `check` once: `Ok(elapsed)` when it passed, `Err(why)` otherwise.
pub(crate) async fn probe(check: &HealthCheck) -> Result<Duration, String> {
    let started = Instant::now();
    let outcome = tokio::time::timeout(check.timeout, run(&check.kind)).await;
    match outcome {
        Ok(Ok(())) => Ok(started.elapsed()),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(format!(
            "timed out after {}",
            humantime_serde::re::humantime::format_duration(check.timeout)
        )),
    }
}

async fn run(kind: &HealthKind) -> Result<(), String> {
    match kind {
        HealthKind::Exec { command, args } => exec(command, args).await,
        HealthKind::Tcp { address } => tokio::net::TcpStream::connect(address.as_str())
            .await
            .map(drop)
            .map_err(|e| format!("tcp {address}: {e}")),
        HealthKind::Http { url } => http(url).await,
    }
}

async fn exec(command: &str, args: &[String]) -> Result<(), String> {
    let mut cmd = crate::child::command(command);
    cmd.args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = reaper::spawn_registered(&mut cmd).map_err(|e| format!("{command}: {e}"))?;
    let pid = child.id();
    // On timeout this future is dropped: the guard kills the check's whole group, and
    // kill_on_drop lets tokio reap it.
    let _guard = KillGroup(pid);
    let status = child.wait().await;
    if let Some(pid) = pid {
        reaper::unregister(pid);
    }
    match status {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!(
            "{command}: {}",
            crate::model::ExitStatus::from_std(s)
        )),
        Err(e) => Err(format!("{command}: {e}")),
    }
}

/// Kills a check's process group when dropped (a check that timed out may have children).
struct KillGroup(Option<u32>);

impl Drop for KillGroup {
    fn drop(&mut self) {
        if let Some(pgid) = self.0.and_then(|p| libc::pid_t::try_from(p).ok()) {
            // SAFETY: signals a process group we created; ESRCH (already gone) is fine.
            unsafe { libc::killpg(pgid, libc::SIGKILL) };
        }
    }
}

async fn http(url: &str) -> Result<(), String> {
    let (address, host, path) =
        parse_http_url(url).ok_or_else(|| format!("{url}: not an http:// url"))?;
    let mut stream = tokio::net::TcpStream::connect(address.as_str())
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let request = format!(
        "GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: gridmon-health\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    // Only the status line matters; read until it is complete.
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 256];
    while !head.contains(&b'\n') && head.len() < 4096 {
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let status: Option<u16> = line
        .lines()
        .next()
        .filter(|l| l.starts_with("HTTP/"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok());
    match status {
        Some(code) if (200..400).contains(&code) => Ok(()),
        Some(code) => Err(format!("{url}: HTTP {code}")),
        None => Err(format!("{url}: not an HTTP response")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(kind: HealthKind) -> HealthCheck {
        HealthCheck {
            timeout: Duration::from_millis(500),
            ..HealthCheck::new(kind)
        }
    }

    #[tokio::test]
    async fn probes() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                let reply: &[u8] = if req.starts_with("GET /ok ") {
                    b"HTTP/1.0 200 OK\r\n\r\nfine"
                } else {
                    b"HTTP/1.0 503 Busy\r\n\r\n"
                };
                let _ = s.write_all(reply).await;
            }
        });
        assert!(probe(&check(HealthKind::Tcp {
            address: addr.clone()
        }))
        .await
        .is_ok());
        let ok = HealthKind::Http {
            url: format!("http://{addr}/ok"),
        };
        assert!(probe(&check(ok)).await.is_ok());
        let bad = HealthKind::Http {
            url: format!("http://{addr}/bad"),
        };
        assert!(probe(&check(bad)).await.unwrap_err().contains("HTTP 503"));
        let exec = |c: &str| HealthKind::Exec {
            command: "sh".into(),
            args: vec!["-c".into(), c.into()],
        };
        assert!(probe(&check(exec("exit 0"))).await.is_ok());
        assert!(probe(&check(exec("exit 3")))
            .await
            .unwrap_err()
            .contains("exit 3"));
        assert!(probe(&check(exec("sleep 5")))
            .await
            .unwrap_err()
            .contains("timed out"));
    }
}
