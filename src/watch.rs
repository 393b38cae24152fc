//! `gridmon watch`: subscribes under the prefix and prints each message decoded.
//!
//! A summary line per message by default; `--json` prints the whole message as one JSON line
//! (field names as on the wire), for scripts and for debugging other publishers.

use std::io::Write;

use futures::StreamExt;
use gridmon_nats::command::{AuditRecord, CommandReply};
use gridmon_nats::connect::connect;
use gridmon_nats::wire::{
    self, AlarmEvent, Envelope, Event, Inventory, Kind, NodeReport, ProgramEvent, Rollup, WireError,
};
use gridmon_nats::{Config, Parsed};
use tokio_util::sync::CancellationToken;

pub async fn run(
    config: Config,
    json: bool,
    count: Option<u64>,
    only: Vec<String>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let subjects = config.subjects()?;
    let client = connect(&config.nats, "gridmon-watch").await?;
    let mut subs = Vec::new();
    if only.is_empty() {
        subs.push(client.subscribe(subjects.everything()).await?);
        subs.push(client.subscribe(subjects.prefix().to_string()).await?);
    }
    for s in only {
        subs.push(client.subscribe(s).await?);
    }
    client.flush().await?;
    let mut messages = futures::stream::select_all(subs);
    let mut seen = 0u64;
    let mut bad = 0u64;
    loop {
        let msg = tokio::select! {
            m = messages.next() => match m { Some(m) => m, None => break },
            _ = shutdown.cancelled() => break,
        };
        let line = if json {
            render_json(&msg.payload)
        } else {
            render_summary(&subjects, msg.subject.as_str(), &msg.payload)
        };
        let mut out = std::io::stdout().lock();
        match line {
            Ok(l) => writeln!(out, "{l}")?,
            Err(e) => {
                bad += 1;
                writeln!(out, "{} <undecodable: {e}>", msg.subject)?;
            }
        }
        out.flush()?;
        drop(out);
        seen += 1;
        if count.is_some_and(|c| seen >= c) {
            break;
        }
    }
    if bad > 0 {
        tracing::warn!(bad, "some messages could not be decoded");
    }
    Ok(())
}

fn render_json(payload: &[u8]) -> Result<String, WireError> {
    wire::peek(payload)?;
    let value: serde_json::Value = rmp_serde::from_slice(payload)?;
    Ok(value.to_string())
}

fn render_summary(
    subjects: &gridmon_nats::Subjects,
    subject: &str,
    payload: &[u8],
) -> Result<String, WireError> {
    let header = wire::peek(payload)?;
    let place = match subjects.parse(subject) {
        Ok(Parsed::Telemetry(scope)) | Ok(Parsed::Other(_, scope)) => scope.to_string(),
        Err(_) => subject.to_string(),
    };
    Ok(match header.kind {
        Kind::NodeReport => {
            let env: Envelope<NodeReport> = wire::decode(payload, Kind::NodeReport)?;
            summarize_report(&place, &env)
        }
        Kind::Inventory => {
            let env: Envelope<Inventory> = wire::decode(payload, Kind::Inventory)?;
            let i = &env.body;
            format!(
                "{place} inventory seq={} {} | {} cores | mem {} | disk {} | {} {} | kernel {} | agent {}",
                env.seq,
                i.cpu_model,
                i.cpu_logical_cores,
                human_bytes(i.memory_bytes as f64),
                human_bytes(i.disk_capacity_bytes as f64),
                i.os_name,
                i.os_version,
                i.kernel,
                i.agent_version
            )
        }
        Kind::Rollup => {
            let env: Envelope<Rollup> = wire::decode(payload, Kind::Rollup)?;
            summarize_rollup(&place, &env)
        }
        Kind::Alarm => {
            let env: Envelope<AlarmEvent> = wire::decode(payload, Kind::Alarm)?;
            let a = &env.body;
            format!(
                "{place} ALARM {:?} {} [{}] {}",
                a.action,
                a.id,
                a.severity.as_str(),
                a.message
            )
        }
        Kind::Event => {
            let env: Envelope<Event> = wire::decode(payload, Kind::Event)?;
            format!("{place} EVENT {:?}: {}", env.body.event, env.body.message)
        }
        Kind::ReportRequest => format!("{place} report request seq={}", header.seq),
        Kind::CommandReply => {
            let env: Envelope<CommandReply> = wire::decode(payload, Kind::CommandReply)?;
            let r = &env.body;
            format!(
                "{place} reply {} {}{}",
                r.op,
                if r.ok {
                    "ok"
                } else {
                    r.error.map_or("failed", |e| e.as_str())
                },
                if r.message.is_empty() {
                    String::new()
                } else {
                    format!(": {}", r.message)
                }
            )
        }
        Kind::Audit => {
            let env: Envelope<AuditRecord> = wire::decode(payload, Kind::Audit)?;
            let a = &env.body;
            format!(
                "{place} AUDIT {} {} {} by {} ({}){}",
                a.phase.as_str(),
                a.op,
                a.program.as_deref().unwrap_or("-"),
                a.issuer_name.as_deref().unwrap_or(&a.issuer),
                if a.ok {
                    "ok"
                } else {
                    a.error.map_or("", |e| e.as_str())
                },
                if a.message.is_empty() {
                    String::new()
                } else {
                    format!(": {}", a.message)
                }
            )
        }
        Kind::ProgramEvent => {
            let env: Envelope<ProgramEvent> = wire::decode(payload, Kind::ProgramEvent)?;
            let e = &env.body;
            format!(
                "{place} PROGRAM {} {} -> {} ({}){}",
                e.program,
                e.from.as_str(),
                e.to.as_str(),
                e.reason,
                if e.alarm { " ALARM" } else { "" }
            )
        }
        Kind::Unknown => format!(
            "{place} {} seq={} (kind not known to this build)",
            subject, header.seq
        ),
    })
}

fn summarize_rollup(place: &str, env: &Envelope<Rollup>) -> String {
    use std::fmt::Write;
    let r = &env.body;
    let mut s = format!(
        "{place} {} rollup window {} | nodes {} online {} stale {} offline",
        r.level.as_str(),
        r.window_start_ms,
        r.nodes.online,
        r.nodes.stale,
        r.nodes.offline
    );
    if let Some(c) = r.metrics.get("cpu_pct") {
        let _ = write!(
            s,
            " | cpu mean {:.1}% p95 {:.1}% max {:.1}%",
            c.mean, c.p95, c.max
        );
    }
    if let Some(m) = r.metrics.get("mem_used_pct") {
        let _ = write!(s, " | mem mean {:.1}%", m.mean);
    }
    let _ = write!(
        s,
        " | net rx {}/s tx {}/s | alarms {} | faults {} | programs failed {}",
        human_bytes(r.sums.net_rx_bytes_ps),
        human_bytes(r.sums.net_tx_bytes_ps),
        r.alarms.active,
        r.faults.sensors_beyond_limits,
        r.programs.failed()
    );
    let dropped = r.input.dropped();
    if dropped > 0 {
        let _ = write!(s, " | dropped inputs {dropped}");
    }
    s
}

fn summarize_report(place: &str, env: &Envelope<NodeReport>) -> String {
    use std::fmt::Write;
    let r = &env.body;
    let mut s = format!("{place} seq={}", env.seq);
    if let Some(h) = &r.host {
        let mem_pct = if h.memory.total_bytes > 0 {
            100.0 * h.memory.used_bytes as f64 / h.memory.total_bytes as f64
        } else {
            0.0
        };
        let rx: f64 = h.nets.iter().map(|n| n.rx_bytes_ps).sum();
        let tx: f64 = h.nets.iter().map(|n| n.tx_bytes_ps).sum();
        let busy = h.disks.iter().map(|d| d.busy_pct).fold(0.0f32, f32::max);
        let _ = write!(
            s,
            " cpu {:5.1}% load {:.2} mem {:4.1}% swap {} disk-busy {:4.1}% net rx {}/s tx {}/s",
            h.cpu.total_pct,
            h.cpu.load1,
            mem_pct,
            human_bytes(h.memory.swap_used_bytes as f64),
            busy,
            human_bytes(rx),
            human_bytes(tx)
        );
    } else {
        s.push_str(" host metrics unavailable");
    }
    if let Some(p) = &r.processes {
        let top = p.rows.iter().max_by(|a, b| a.cpu_pct.total_cmp(&b.cpu_pct));
        let _ = write!(s, " | procs {} (zombie {})", p.total, p.states.zombie);
        if let Some(t) = top {
            let _ = write!(s, " top {}[{}] {:.1}%", t.name, t.pid, t.cpu_pct);
        }
    }
    if !r.sensors.is_empty() {
        let alarms = r.sensors.iter().filter(|x| x.alarm).count();
        let _ = write!(s, " | sensors {} (alarm {alarms})", r.sensors.len());
    }
    if r.agent.spool_dropped_total > 0 {
        let _ = write!(s, " | dropped {}", r.agent.spool_dropped_total);
    }
    s
}

fn human_bytes(v: f64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = v;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{v:.0}{}", UNITS[i])
    } else {
        format!("{v:.1}{}", UNITS[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_human() {
        assert_eq!(human_bytes(0.0), "0B");
        assert_eq!(human_bytes(1536.0), "1.5KiB");
        assert_eq!(human_bytes(3.0 * 1024.0 * 1024.0 * 1024.0), "3.0GiB");
    }

    #[test]
    fn garbage_is_an_error() {
        let s = gridmon_nats::Subjects::new("grid").unwrap();
        assert!(render_summary(&s, "grid.a.b.c", b"\x00\x01").is_err());
        assert!(render_json(b"\xc1").is_err());
    }
}
