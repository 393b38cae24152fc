//! Backups with ClickHouse's own `BACKUP DATABASE`, to the configured destination.
//!
//! `ingest.backup.destination` is a ClickHouse backup destination with `{name}` where each
//! backup's name goes, e.g. `File('/var/backups/gridmon/{name}')`,
//! `Disk('backups', '{name}')` or `S3('https://bucket.s3.amazonaws.com/gridmon/{name}', 'key',
//! 'secret')`. The server must allow it (`backups.allowed_path` or a disk named in
//! `backups.allowed_disk`). Restoring is `RESTORE DATABASE gridmon [AS other] FROM <destination>`
//! (docs/clickhouse.md).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;

use crate::store::Store;

/// The name of a backup taken at `unix_ms`: `gridmon-<db>-YYYYMMDDTHHMMSSZ`.
pub fn backup_name(db: &str, unix_ms: i64) -> String {
    let secs = unix_ms.div_euclid(1000);
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    format!(
        "gridmon-{db}-{y:04}{mo:02}{d:02}T{:02}{:02}{:02}Z",
        s / 3600,
        (s / 60) % 60,
        s % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let m = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// The destination of one backup: the template with `{name}` filled in.
pub fn destination(template: &str, name: &str) -> anyhow::Result<String> {
    if !template.contains("{name}") {
        anyhow::bail!(
            "ingest.backup.destination must contain {{name}}, e.g. File('/var/backups/gridmon/{{name}}')"
        );
    }
    Ok(template.replace("{name}", name))
}

/// The destination with every quoted argument after the first hidden (S3 keys and secrets).
pub fn redact(destination: &str) -> String {
    let mut out = String::with_capacity(destination.len());
    let mut quoted = 0;
    let mut inside = false;
    for c in destination.chars() {
        if c == '\'' {
            if inside {
                quoted += 1;
            }
            inside = !inside;
            out.push(c);
        } else if inside && quoted >= 1 {
            if !out.ends_with('…') {
                out.push('…');
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(0))
}

/// Takes one backup of the whole database now, records it in `backup_log`, and returns the
/// destination written (with secrets hidden).
pub async fn backup_now(store: &Store, template: &str) -> anyhow::Result<String> {
    let now = now_ms();
    let name = backup_name(store.database(), now);
    let dest = destination(template, &name)?;
    let shown = redact(&dest);
    let sql = format!("BACKUP DATABASE `{}` TO {dest}", store.database());
    let started = std::time::Instant::now();
    // A backup takes as long as it takes: no query timeout here.
    let result = store.client().query(&sql).execute().await;
    let seconds = started.elapsed().as_secs_f64();
    let error = result
        .as_ref()
        .err()
        .map(ToString::to_string)
        .unwrap_or_default();
    let logged = store
        .client()
        .query("INSERT INTO backup_log (ts, name, ok, seconds, error) VALUES (fromUnixTimestamp64Milli(?), ?, ?, ?, ?)")
        .bind(now)
        .bind(&name)
        .bind(u8::from(result.is_ok()))
        .bind(seconds)
        .bind(&error)
        .execute()
        .await;
    if let Err(e) = logged {
        tracing::warn!(error = %e, "cannot record the backup in backup_log");
    }
    result.with_context(|| {
        format!("BACKUP DATABASE to {shown} (does the server allow this destination? see backups.allowed_path)")
    })?;
    tracing::info!(destination = %shown, seconds, "backup taken");
    Ok(shown)
}

/// When the last successful backup was taken (ms), from `backup_log`.
async fn last_backup_ms(store: &Store) -> Option<i64> {
    store
        .client()
        .query("SELECT toUnixTimestamp64Milli(max(ts)) FROM backup_log WHERE ok = 1 HAVING count() > 0")
        .fetch_optional::<i64>()
        .await
        .ok()
        .flatten()
}

/// Takes a backup every `every` until `shutdown`: the first as soon as the last one recorded
/// is `every` old (at once if there is none), so restarts do not postpone backups forever.
pub async fn schedule(
    store: Store,
    template: String,
    every: Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let every_ms = i64::try_from(every.as_millis()).unwrap_or(i64::MAX);
    loop {
        let wait_ms = match last_backup_ms(&store).await {
            Some(last) => (last.saturating_add(every_ms) - now_ms()).max(0),
            None => 0,
        };
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(u64::try_from(wait_ms).unwrap_or(0))) => {}
            _ = shutdown.cancelled() => return,
        }
        tokio::select! {
            r = backup_now(&store, &template) => {
                if let Err(e) = r {
                    tracing::error!(error = %format!("{e:#}"), "scheduled backup failed; next try in one period");
                    tokio::select! {
                        _ = tokio::time::sleep(every) => {}
                        _ = shutdown.cancelled() => return,
                    }
                }
            }
            // The server finishes a backup under way by itself.
            _ = shutdown.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_dated() {
        assert_eq!(
            backup_name("gridmon", 0),
            "gridmon-gridmon-19700101T000000Z"
        );
        // 2026-11-23 15:04:05 UTC
        assert_eq!(
            backup_name("g", 1_795_446_245_000),
            "gridmon-g-20261123T150405Z"
        );
        assert_eq!(
            backup_name("g", 951_782_400_000),
            "gridmon-g-20000229T000000Z"
        );
    }

    #[test]
    fn secrets_are_hidden() {
        assert_eq!(
            redact("S3('https://b/x/n', 'KEY', 'SECRET')"),
            "S3('https://b/x/n', '…', '…')"
        );
        assert_eq!(redact("File('/b/n')"), "File('/b/n')");
    }

    #[test]
    fn destination_needs_a_name_slot() {
        assert!(destination("File('/b')", "x").is_err());
        assert_eq!(
            destination("Disk('backups', '{name}')", "x").unwrap(),
            "Disk('backups', 'x')"
        );
    }
}
