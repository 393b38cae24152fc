//! What the dashboard reads from ClickHouse: the static view (inventory per cluster) and the
//! history view (per-cluster trends from the downsampled tables, fault points and fault
//! frequency per day). Every query is bounded: a range is cut into at most [`MAX_POINTS`] steps
//! and reads the 1-minute or the 1-hour table, never the raw rows.

use clickhouse::Row;
use gridmon_ingest::store::Store;
use serde::{Deserialize, Serialize};

/// Most time steps a trend returns per cluster.
pub const MAX_POINTS: i64 = 400;

/// Most fault points a history answer lists (the per-day counts cover all of them).
pub const MAX_FAULT_POINTS: u64 = 2000;

#[derive(Debug, Clone)]
pub struct History {
    store: Store,
}

#[derive(Debug, Clone, Serialize, Deserialize, Row)]
pub struct ClusterInventory {
    pub cluster: String,
    pub nodes: u64,
    pub cpu_cores: u64,
    pub memory_bytes: u64,
    pub swap_bytes: u64,
    pub disk_capacity_bytes: u64,
    /// Newest inventory message folded in, ms since the Unix epoch.
    pub updated_ms: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, Row)]
pub struct NodeInventory {
    pub group: String,
    pub node: String,
    pub hostname: String,
    pub cpu_model: String,
    pub cpu_cores: u32,
    pub memory_bytes: u64,
    pub disk_capacity_bytes: u64,
    pub os: String,
    pub kernel: String,
    pub agent_version: String,
}

#[derive(Debug, Clone, Deserialize, Row)]
struct TrendRow {
    cluster: String,
    t: i64,
    nodes: u64,
    cpu: f64,
    cpu_max: f32,
    mem: f64,
    mem_max: f32,
    swap: f64,
    swap_max: f32,
    disk: f64,
    disk_max: f32,
}

/// One cluster's trend: parallel arrays, `t` in ms.
#[derive(Debug, Default, Serialize)]
pub struct Trend {
    pub cluster: String,
    pub t: Vec<i64>,
    pub nodes: Vec<u64>,
    /// Mean and max per resource (`cpu`, `mem`, `swap`, `disk`), percent; null where a step has
    /// no samples.
    pub mean: [Vec<Option<f64>>; 4],
    pub max: [Vec<Option<f64>>; 4],
}

#[derive(Debug, Clone, Serialize, Deserialize, Row)]
pub struct FaultPoint {
    pub ts_ms: i64,
    pub cluster: String,
    pub group: String,
    pub node: String,
    pub rule: String,
    pub severity: String,
    pub hardware: u8,
    pub instance: String,
    pub value: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, Row)]
pub struct FaultDay {
    /// `YYYY-MM-DD` (UTC).
    pub day: String,
    pub hardware: u64,
    pub software: u64,
}

#[derive(Debug, Serialize)]
pub struct HistoryAnswer {
    pub from_ms: i64,
    pub to_ms: i64,
    pub step_s: i64,
    /// `node_metrics_1m` or `node_metrics_1h`.
    pub table: &'static str,
    pub trends: Vec<Trend>,
    pub faults: Vec<FaultPoint>,
    pub faults_truncated: bool,
    pub fault_days: Vec<FaultDay>,
    /// Server time spent on the queries, ms.
    pub query_ms: u64,
}

/// The step for a range: whole minutes (or hours past 2 days), at most [`MAX_POINTS`] steps.
pub fn step_for(range_s: i64) -> (i64, &'static str) {
    let raw = (range_s / MAX_POINTS).max(60);
    if range_s > 2 * 86_400 {
        let h = (raw + 3599) / 3600;
        (h * 3600, "node_metrics_1h")
    } else {
        let m = (raw + 59) / 60;
        (m * 60, "node_metrics_1m")
    }
}

fn nan_none(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

impl History {
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    pub async fn clusters(&self) -> anyhow::Result<Vec<ClusterInventory>> {
        let q = self.store.client().query(
            "SELECT cluster, count() AS nodes, sum(cpu_logical_cores) AS cpu_cores, \
             sum(memory_bytes) AS memory_bytes, sum(swap_bytes) AS swap_bytes, \
             sum(disk_capacity_bytes) AS disk_capacity_bytes, \
             toInt64(toUnixTimestamp64Milli(max(ts))) AS updated_ms \
             FROM inventory FINAL GROUP BY cluster ORDER BY cluster",
        );
        self.store
            .timed("the inventory per cluster", q.fetch_all())
            .await
    }

    pub async fn cluster_nodes(&self, cluster: &str) -> anyhow::Result<Vec<NodeInventory>> {
        let q = self
            .store
            .client()
            .query(
                "SELECT toString(group_name) AS group, toString(node) AS node, hostname, \
                 toString(cpu_model) AS cpu_model, cpu_logical_cores AS cpu_cores, memory_bytes, \
                 disk_capacity_bytes, concat(toString(os_name), ' ', toString(os_version)) AS os, \
                 toString(kernel) AS kernel, toString(agent_version) AS agent_version \
                 FROM inventory FINAL WHERE cluster = ? ORDER BY group_name, node LIMIT 10000",
            )
            .bind(cluster);
        self.store
            .timed("a cluster's inventory", q.fetch_all())
            .await
    }

    /// Trends of every cluster (or one) over `[from_ms, to_ms)`, with the faults of the range.
    pub async fn history(
        &self,
        cluster: Option<&str>,
        from_ms: i64,
        to_ms: i64,
    ) -> anyhow::Result<HistoryAnswer> {
        let started = std::time::Instant::now();
        let (step_s, table) = step_for((to_ms - from_ms) / 1000);
        let from_s = from_ms.div_euclid(1000);
        let to_s = to_ms.div_euclid(1000) + 1;
        let cluster_filter = if cluster.is_some() {
            " AND cluster = ?"
        } else {
            ""
        };
        let sql = format!(
            "SELECT toString(cluster) AS cluster, \
             toInt64(toUnixTimestamp(toStartOfInterval(ts, INTERVAL {step_s} SECOND))) * 1000 AS t, \
             uniqExact(node) AS nodes, \
             sum(cpu_pct_sum) / sum(samples) AS cpu, max(cpu_pct_max) AS cpu_max, \
             sum(mem_used_pct_sum) / sum(samples) AS mem, max(mem_used_pct_max) AS mem_max, \
             sum(swap_used_pct_sum) / sum(samples) AS swap, max(swap_used_pct_max) AS swap_max, \
             sum(disk_busy_pct_sum) / sum(samples) AS disk, max(disk_busy_pct_max) AS disk_max \
             FROM {table} \
             WHERE ts >= toDateTime(?, 'UTC') AND ts < toDateTime(?, 'UTC'){cluster_filter} \
             GROUP BY cluster, t ORDER BY cluster, t"
        );
        let mut q = self.store.client().query(&sql).bind(from_s).bind(to_s);
        if let Some(c) = cluster {
            q = q.bind(c);
        }
        let rows: Vec<TrendRow> = self.store.timed("the trends", q.fetch_all()).await?;
        let mut trends: Vec<Trend> = Vec::new();
        for r in rows {
            if trends.last().is_none_or(|t| t.cluster != r.cluster) {
                trends.push(Trend {
                    cluster: r.cluster.clone(),
                    ..Default::default()
                });
            }
            let Some(t) = trends.last_mut() else { continue };
            t.t.push(r.t);
            t.nodes.push(r.nodes);
            for (i, (mean, max)) in [
                (r.cpu, r.cpu_max),
                (r.mem, r.mem_max),
                (r.swap, r.swap_max),
                (r.disk, r.disk_max),
            ]
            .into_iter()
            .enumerate()
            {
                t.mean[i].push(nan_none(mean));
                t.max[i].push(nan_none(f64::from(max)));
            }
        }

        let range =
            "ts >= fromUnixTimestamp64Milli(?, 'UTC') AND ts < fromUnixTimestamp64Milli(?, 'UTC')";
        let sql = format!(
            "SELECT toInt64(toUnixTimestamp64Milli(ts)) AS ts_ms, toString(cluster) AS cluster, \
             toString(group_name) AS group, toString(node) AS node, toString(rule) AS rule, \
             toString(severity) AS severity, hardware, instance, value \
             FROM alarms WHERE action = 'raise' AND {range}{cluster_filter} \
             ORDER BY ts DESC LIMIT {}",
            MAX_FAULT_POINTS + 1
        );
        let mut q = self.store.client().query(&sql).bind(from_ms).bind(to_ms);
        if let Some(c) = cluster {
            q = q.bind(c);
        }
        let mut faults: Vec<FaultPoint> =
            self.store.timed("the fault points", q.fetch_all()).await?;
        let faults_truncated = faults.len() as u64 > MAX_FAULT_POINTS;
        faults.truncate(MAX_FAULT_POINTS as usize);
        faults.reverse();

        let sql = format!(
            "SELECT day, hw AS hardware, sw AS software FROM ( \
             SELECT toString(toDate(ts)) AS day, countIf(hardware = 1) AS hw, \
             countIf(hardware = 0) AS sw \
             FROM alarms WHERE action = 'raise' AND {range}{cluster_filter} \
             GROUP BY day) ORDER BY day"
        );
        let mut q = self.store.client().query(&sql).bind(from_ms).bind(to_ms);
        if let Some(c) = cluster {
            q = q.bind(c);
        }
        let fault_days: Vec<FaultDay> = self
            .store
            .timed("the faults per day", q.fetch_all())
            .await?;
        Ok(HistoryAnswer {
            from_ms,
            to_ms,
            step_s,
            table,
            trends,
            faults,
            faults_truncated,
            fault_days,
            query_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        })
    }

    /// The dashboard's own commands as the agents audited them (`command_audit`), newest first.
    pub async fn audit(&self, node: Option<&str>, limit: u64) -> anyhow::Result<Vec<AuditLine>> {
        let mut sql = String::from(
            "SELECT toInt64(toUnixTimestamp64Milli(ts)) AS ts_ms, \
             concat(toString(cluster), '/', toString(group_name), '/', toString(node)) AS node, \
             toString(phase) AS phase, toString(op) AS op, toString(program) AS program, \
             toString(issuer_name) AS issuer_name, toString(on_behalf_of) AS on_behalf_of, \
             ok, toString(error) AS error, message FROM command_audit",
        );
        // Qualified names: `node` alone would be the alias above.
        if node.is_some() {
            sql.push_str(
                " WHERE command_audit.cluster = ? AND command_audit.group_name = ? \
                 AND command_audit.node = ?",
            );
        }
        sql.push_str(&format!(" ORDER BY ts DESC LIMIT {}", limit.min(1000)));
        let mut q = self.store.client().query(&sql);
        if let Some(n) = node {
            for part in n.splitn(3, '/') {
                q = q.bind(part);
            }
        }
        self.store.timed("the command audit", q.fetch_all()).await
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, Row)]
pub struct AuditLine {
    pub ts_ms: i64,
    pub node: String,
    pub phase: String,
    pub op: String,
    pub program: String,
    pub issuer_name: String,
    pub on_behalf_of: String,
    pub ok: u8,
    pub error: String,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_stay_under_the_point_budget() {
        for range in [
            60,
            3600,
            6 * 3600,
            86_400,
            2 * 86_400,
            7 * 86_400,
            90 * 86_400,
        ] {
            let (step, table) = step_for(range);
            assert!(range / step <= MAX_POINTS, "{range}s in {step}s steps");
            assert_eq!(step % 60, 0);
            if range > 2 * 86_400 {
                assert_eq!(table, "node_metrics_1h");
                assert_eq!(step % 3600, 0);
            } else {
                assert_eq!(table, "node_metrics_1m");
            }
        }
    }
}
