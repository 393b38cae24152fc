//! The ClickHouse schema as versioned migrations, and the per-table retention the config asks
//! for.
//!
//! Every migration is a list of statements that are safe to run again (`IF NOT EXISTS`), so
//! two ingest workers starting at once, or a worker killed half-way, leave a correct schema:
//! the next start runs the unrecorded migration again and records it. Applied versions are
//! kept in `schema_migrations`. A migration, once released, never changes; new tables and
//! columns come as new migrations (4 added issue 5's `process_events` and `command_audit`).
//!
//! Retention is not part of the migrations: it is configuration, reconciled on every start
//! with `ALTER TABLE … MODIFY TTL` where the table's TTL differs from the config.
//!
//! Column conventions (documented for analysts in `docs/clickhouse.md`):
//! - `ts` is `DateTime64(3, 'UTC')`, the report's (or window's, or event's) time;
//! - `cluster`, `group_name`, `node` are `LowCardinality(String)`;
//! - `msg` is a 64-bit hash of the bus message a row came from; the ingest uses it to find
//!   rows already written when a message is delivered again.

use std::time::Duration;

use gridmon_nats::config::RetentionConfig;

/// One schema step.
#[derive(Debug)]
pub struct Migration {
    pub version: u32,
    pub name: &'static str,
    /// Statements, with `{db}` for the database name.
    pub statements: &'static [&'static str],
}

/// The identity and time columns every telemetry table starts with.
macro_rules! ident_cols {
    () => {
        "ts DateTime64(3, 'UTC') CODEC(DoubleDelta, ZSTD(1)),
        cluster LowCardinality(String),
        group_name LowCardinality(String),
        node LowCardinality(String),
        msg UInt64 CODEC(ZSTD(1)),"
    };
}

/// The `SELECT` of `node_metrics`'s downsampling views, bucketed by `$bucket`.
macro_rules! node_metrics_view {
    ($bucket:literal) => {
        concat!("
                SELECT ", $bucket, "(ts) AS ts, cluster, group_name, node,
                    count() AS samples,
                    sum(cpu_pct) AS cpu_pct_sum, max(cpu_pct) AS cpu_pct_max,
                    sum(mem_used_pct) AS mem_used_pct_sum, max(mem_used_pct) AS mem_used_pct_max,
                    sum(swap_used_pct) AS swap_used_pct_sum, max(swap_used_pct) AS swap_used_pct_max,
                    sum(disk_busy_pct) AS disk_busy_pct_sum, max(disk_busy_pct) AS disk_busy_pct_max,
                    sum(load1) AS load1_sum,
                    sum(net_rx_bytes_ps) AS net_rx_bytes_ps_sum, sum(net_tx_bytes_ps) AS net_tx_bytes_ps_sum,
                    max(mem_total_bytes) AS mem_total_bytes, max(fs_total_bytes) AS fs_total_bytes
                FROM {db}.node_metrics
                GROUP BY ts, cluster, group_name, node")
    };
}

/// The `SELECT` of `process_metrics`'s downsampling views, bucketed by `$bucket`.
macro_rules! process_metrics_view {
    ($bucket:literal) => {
        concat!(
            "
                SELECT ",
            $bucket,
            "(ts) AS ts, cluster, group_name, node, name, start_time, pid,
                    any(user) AS user, count() AS samples,
                    sum(cpu_pct) AS cpu_pct_sum, max(cpu_pct) AS cpu_pct_max,
                    sum(rss_bytes) AS rss_bytes_sum, max(rss_bytes) AS rss_bytes_max,
                    max(threads) AS threads_max, max(fds) AS fds_max
                FROM {db}.process_metrics
                GROUP BY ts, cluster, group_name, node, name, start_time, pid"
        )
    };
}

/// The `SELECT` of `sensor_readings`'s downsampling views, bucketed by `$bucket`.
macro_rules! sensor_readings_view {
    ($bucket:literal) => {
        concat!(
            "
                SELECT ",
            $bucket,
            "(ts) AS ts, cluster, group_name, node, sensor, kind,
                    count() AS samples, sum(value) AS value_sum, min(value) AS value_min,
                    max(value) AS value_max, sum(alarm) AS alarm_samples
                FROM {db}.sensor_readings
                GROUP BY ts, cluster, group_name, node, sensor, kind"
        )
    };
}

/// The rows of `node_metrics`'s downsampling views from migration 5 on: one partial aggregate
/// per raw row, without a `GROUP BY`. The target `AggregatingMergeTree` folds the rows of one
/// key as it writes each block (`optimize_on_insert`, on by default) and again when it merges
/// parts, so the tables hold what the `GROUP BY` views wrote, for about two thirds of the
/// engine's work per row (docs/benchmarks.md).
macro_rules! node_metrics_rows {
    ($bucket:literal) => {
        concat!(
            "SELECT ",
            $bucket,
            "(ts) AS ts, cluster, group_name, node, toUInt64(1) AS samples,
                toFloat64(cpu_pct) AS cpu_pct_sum, cpu_pct AS cpu_pct_max,
                toFloat64(mem_used_pct) AS mem_used_pct_sum, mem_used_pct AS mem_used_pct_max,
                toFloat64(swap_used_pct) AS swap_used_pct_sum, swap_used_pct AS swap_used_pct_max,
                toFloat64(disk_busy_pct) AS disk_busy_pct_sum, disk_busy_pct AS disk_busy_pct_max,
                toFloat64(load1) AS load1_sum,
                net_rx_bytes_ps AS net_rx_bytes_ps_sum, net_tx_bytes_ps AS net_tx_bytes_ps_sum,
                mem_total_bytes, fs_total_bytes
            FROM {db}.node_metrics"
        )
    };
}

/// `process_metrics`'s view rows from migration 5 on (see [`node_metrics_rows`]).
macro_rules! process_metrics_rows {
    ($bucket:literal) => {
        concat!(
            "SELECT ",
            $bucket,
            "(ts) AS ts, cluster, group_name, node, name, start_time, pid, user,
                toUInt64(1) AS samples,
                toFloat64(cpu_pct) AS cpu_pct_sum, cpu_pct AS cpu_pct_max,
                toFloat64(rss_bytes) AS rss_bytes_sum, rss_bytes AS rss_bytes_max,
                threads AS threads_max, fds AS fds_max
            FROM {db}.process_metrics"
        )
    };
}

/// `sensor_readings`'s view rows from migration 5 on (see [`node_metrics_rows`]).
macro_rules! sensor_readings_rows {
    ($bucket:literal) => {
        concat!(
            "SELECT ",
            $bucket,
            "(ts) AS ts, cluster, group_name, node, sensor, kind, toUInt64(1) AS samples,
                toFloat64(value) AS value_sum, value AS value_min, value AS value_max,
                toUInt64(alarm) AS alarm_samples
            FROM {db}.sensor_readings"
        )
    };
}

pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "telemetry, rollups, alarms, events, inventory",
        statements: &[
            concat!(
                "CREATE TABLE IF NOT EXISTS {db}.node_metrics (",
                ident_cols!(),
                "interval_ms UInt32 CODEC(T64, ZSTD(1)),
                uptime_s UInt32 CODEC(DoubleDelta, ZSTD(1)),
                cpu_cores UInt16 CODEC(T64, ZSTD(1)),
                cpu_pct Float32 CODEC(Gorilla, ZSTD(1)),
                cpu_user_pct Float32 CODEC(Gorilla, ZSTD(1)),
                cpu_system_pct Float32 CODEC(Gorilla, ZSTD(1)),
                cpu_iowait_pct Float32 CODEC(Gorilla, ZSTD(1)),
                cpu_steal_pct Float32 CODEC(Gorilla, ZSTD(1)),
                load1 Float32 CODEC(Gorilla, ZSTD(1)),
                load5 Float32 CODEC(Gorilla, ZSTD(1)),
                load15 Float32 CODEC(Gorilla, ZSTD(1)),
                mem_total_bytes UInt64 CODEC(T64, ZSTD(1)),
                mem_used_bytes UInt64 CODEC(T64, ZSTD(1)),
                mem_available_bytes UInt64 CODEC(T64, ZSTD(1)),
                mem_used_pct Float32 CODEC(Gorilla, ZSTD(1)),
                swap_total_bytes UInt64 CODEC(T64, ZSTD(1)),
                swap_used_bytes UInt64 CODEC(T64, ZSTD(1)),
                swap_used_pct Float32 CODEC(Gorilla, ZSTD(1)),
                disk_busy_pct Float32 CODEC(Gorilla, ZSTD(1)),
                disk_read_bytes_ps Float64 CODEC(Gorilla, ZSTD(1)),
                disk_write_bytes_ps Float64 CODEC(Gorilla, ZSTD(1)),
                disk_read_ops_ps Float64 CODEC(Gorilla, ZSTD(1)),
                disk_write_ops_ps Float64 CODEC(Gorilla, ZSTD(1)),
                fs_total_bytes UInt64 CODEC(T64, ZSTD(1)),
                fs_used_bytes UInt64 CODEC(T64, ZSTD(1)),
                fs_used_max_pct Float32 CODEC(Gorilla, ZSTD(1)),
                net_rx_bytes_ps Float64 CODEC(Gorilla, ZSTD(1)),
                net_tx_bytes_ps Float64 CODEC(Gorilla, ZSTD(1)),
                net_rx_packets_ps Float64 CODEC(Gorilla, ZSTD(1)),
                net_tx_packets_ps Float64 CODEC(Gorilla, ZSTD(1)),
                net_errors_ps Float64 CODEC(Gorilla, ZSTD(1)),
                net_dropped_ps Float64 CODEC(Gorilla, ZSTD(1)),
                probe_loss_pct Float32 CODEC(Gorilla, ZSTD(1)),
                processes UInt32 CODEC(T64, ZSTD(1)),
                procs_running UInt32 CODEC(T64, ZSTD(1)),
                procs_zombie UInt32 CODEC(T64, ZSTD(1)),
                sensors_alarm UInt16 CODEC(T64, ZSTD(1)),
                programs_failed UInt16 CODEC(T64, ZSTD(1))
                ) ENGINE = MergeTree
                PARTITION BY toDate(ts)
                ORDER BY (cluster, node, ts)
                SETTINGS non_replicated_deduplication_window = 1000"
            ),
            concat!(
                "CREATE TABLE IF NOT EXISTS {db}.disk_metrics (",
                ident_cols!(),
                "device LowCardinality(String),
                busy_pct Float32 CODEC(Gorilla, ZSTD(1)),
                read_bytes_ps Float32 CODEC(Gorilla, ZSTD(1)),
                write_bytes_ps Float32 CODEC(Gorilla, ZSTD(1)),
                read_ops_ps Float32 CODEC(Gorilla, ZSTD(1)),
                write_ops_ps Float32 CODEC(Gorilla, ZSTD(1))
                ) ENGINE = MergeTree
                PARTITION BY toDate(ts)
                ORDER BY (cluster, node, device, ts)
                SETTINGS non_replicated_deduplication_window = 1000"
            ),
            concat!(
                "CREATE TABLE IF NOT EXISTS {db}.fs_metrics (",
                ident_cols!(),
                "mount LowCardinality(String),
                device LowCardinality(String),
                fstype LowCardinality(String),
                total_bytes UInt64 CODEC(T64, ZSTD(1)),
                used_bytes UInt64 CODEC(T64, ZSTD(1)),
                avail_bytes UInt64 CODEC(T64, ZSTD(1)),
                inodes_total UInt64 CODEC(T64, ZSTD(1)),
                inodes_used UInt64 CODEC(T64, ZSTD(1))
                ) ENGINE = MergeTree
                PARTITION BY toDate(ts)
                ORDER BY (cluster, node, mount, ts)
                SETTINGS non_replicated_deduplication_window = 1000"
            ),
            concat!(
                "CREATE TABLE IF NOT EXISTS {db}.net_metrics (",
                ident_cols!(),
                "iface LowCardinality(String),
                up UInt8,
                carrier UInt8,
                rx_bytes_ps Float32 CODEC(Gorilla, ZSTD(1)),
                tx_bytes_ps Float32 CODEC(Gorilla, ZSTD(1)),
                rx_packets_ps Float32 CODEC(Gorilla, ZSTD(1)),
                tx_packets_ps Float32 CODEC(Gorilla, ZSTD(1)),
                rx_errors_ps Float32 CODEC(Gorilla, ZSTD(1)),
                tx_errors_ps Float32 CODEC(Gorilla, ZSTD(1)),
                rx_dropped_ps Float32 CODEC(Gorilla, ZSTD(1)),
                tx_dropped_ps Float32 CODEC(Gorilla, ZSTD(1))
                ) ENGINE = MergeTree
                PARTITION BY toDate(ts)
                ORDER BY (cluster, node, iface, ts)
                SETTINGS non_replicated_deduplication_window = 1000"
            ),
            // One row per process per table report. A process is (node, pid, start_time): a
            // pid reused after a restart has another start_time. Rows of one process sit
            // together in the sort order, so its strings and slowly moving figures compress
            // to almost nothing.
            concat!(
                "CREATE TABLE IF NOT EXISTS {db}.process_metrics (",
                ident_cols!(),
                "pid UInt32 CODEC(ZSTD(1)),
                start_time DateTime64(3, 'UTC') CODEC(ZSTD(1)),
                ppid UInt32 CODEC(ZSTD(1)),
                name LowCardinality(String),
                cmdline String CODEC(ZSTD(3)),
                user LowCardinality(String),
                state LowCardinality(String),
                cpu_pct Float32 CODEC(Gorilla, ZSTD(1)),
                rss_bytes UInt64 CODEC(Delta, ZSTD(1)),
                vsz_bytes UInt64 CODEC(Delta, ZSTD(1)),
                fds Nullable(UInt32) CODEC(ZSTD(1)),
                threads UInt32 CODEC(ZSTD(1)),
                read_bytes_ps Nullable(Float32) CODEC(ZSTD(1)),
                write_bytes_ps Nullable(Float32) CODEC(ZSTD(1)),
                nice Int8 CODEC(ZSTD(1)),
                priority Int16 CODEC(ZSTD(1)),
                run_time_s UInt32 CODEC(Delta, ZSTD(1)),
                cpu_time_s Float64 CODEC(Delta, ZSTD(1))
                ) ENGINE = MergeTree
                PARTITION BY toDate(ts)
                ORDER BY (cluster, node, name, start_time, pid, ts)
                SETTINGS non_replicated_deduplication_window = 1000"
            ),
            concat!(
                "CREATE TABLE IF NOT EXISTS {db}.sensor_readings (",
                ident_cols!(),
                "sensor LowCardinality(String),
                chip LowCardinality(String),
                label LowCardinality(String),
                kind LowCardinality(String),
                source LowCardinality(String),
                value Float32 CODEC(Gorilla, ZSTD(1)),
                min Nullable(Float32),
                max Nullable(Float32),
                crit Nullable(Float32),
                alarm UInt8
                ) ENGINE = MergeTree
                PARTITION BY toDate(ts)
                ORDER BY (cluster, node, sensor, ts)
                SETTINGS non_replicated_deduplication_window = 1000"
            ),
            // One row per rollup: group, cluster or grid, per window. `ts` is the window's
            // start; the per-metric figures are in rollup_metrics.
            "CREATE TABLE IF NOT EXISTS {db}.rollups (
                ts DateTime64(3, 'UTC') CODEC(DoubleDelta, ZSTD(1)),
                level LowCardinality(String),
                cluster LowCardinality(String),
                group_name LowCardinality(String),
                msg UInt64 CODEC(ZSTD(1)),
                window_ms UInt32,
                nodes_online UInt32,
                nodes_stale UInt32,
                nodes_offline UInt32,
                inputs UInt32,
                cpu_cores UInt64,
                memory_total_bytes UInt64,
                memory_used_bytes UInt64,
                swap_total_bytes UInt64,
                swap_used_bytes UInt64,
                fs_total_bytes UInt64,
                fs_used_bytes UInt64,
                disk_read_bytes_ps Float64,
                disk_write_bytes_ps Float64,
                net_rx_bytes_ps Float64,
                net_tx_bytes_ps Float64,
                processes UInt64,
                process_states Map(LowCardinality(String), UInt32),
                program_states Map(LowCardinality(String), UInt32),
                sensors_beyond_limits UInt32,
                sensors_over_crit UInt32,
                fans_stopped UInt32,
                voltages_out_of_range UInt32,
                nodes_with_faults UInt32,
                alarms_active UInt32,
                alarms_critical UInt32,
                input Map(LowCardinality(String), UInt64)
                ) ENGINE = MergeTree
                PARTITION BY toDate(ts)
                ORDER BY (level, cluster, group_name, ts)
                SETTINGS non_replicated_deduplication_window = 1000",
            // The merged per-metric figures of each rollup. p50/p95 come from the rollup's
            // mergeable sketch (relative error 1%); `sketch` keeps it, encoded as on the bus,
            // for exact re-merging.
            "CREATE TABLE IF NOT EXISTS {db}.rollup_metrics (
                ts DateTime64(3, 'UTC') CODEC(DoubleDelta, ZSTD(1)),
                level LowCardinality(String),
                cluster LowCardinality(String),
                group_name LowCardinality(String),
                msg UInt64 CODEC(ZSTD(1)),
                metric LowCardinality(String),
                count UInt64,
                min Float64,
                mean Float64,
                max Float64,
                p50 Float64,
                p95 Float64,
                sum Float64,
                sketch String CODEC(ZSTD(3))
                ) ENGINE = MergeTree
                PARTITION BY toDate(ts)
                ORDER BY (level, cluster, group_name, metric, ts)
                SETTINGS non_replicated_deduplication_window = 1000",
            // Raise and clear events. A clear carries how long the alarm was active.
            "CREATE TABLE IF NOT EXISTS {db}.alarms (
                ts DateTime64(3, 'UTC') CODEC(DoubleDelta, ZSTD(1)),
                cluster LowCardinality(String),
                group_name LowCardinality(String),
                node LowCardinality(String),
                msg UInt64 CODEC(ZSTD(1)),
                scope LowCardinality(String),
                alarm_id String,
                action LowCardinality(String),
                rule LowCardinality(String),
                severity LowCardinality(String),
                hardware UInt8,
                metric LowCardinality(String),
                instance String,
                op LowCardinality(String),
                threshold Float64,
                clear_threshold Float64,
                value Float64,
                raised_at DateTime64(3, 'UTC'),
                duration_ms Nullable(Int64),
                message String CODEC(ZSTD(3))
                ) ENGINE = MergeTree
                PARTITION BY toDate(ts)
                ORDER BY (cluster, group_name, node, ts)
                SETTINGS non_replicated_deduplication_window = 1000",
            // Liveness transitions: stale, offline, and back online.
            "CREATE TABLE IF NOT EXISTS {db}.node_events (
                ts DateTime64(3, 'UTC') CODEC(DoubleDelta, ZSTD(1)),
                cluster LowCardinality(String),
                group_name LowCardinality(String),
                node LowCardinality(String),
                msg UInt64 CODEC(ZSTD(1)),
                event LowCardinality(String),
                last_seen Nullable(DateTime64(3, 'UTC')),
                missed_intervals UInt32,
                message String CODEC(ZSTD(3))
                ) ENGINE = MergeTree
                PARTITION BY toDate(ts)
                ORDER BY (cluster, group_name, node, ts)
                SETTINGS non_replicated_deduplication_window = 1000",
            // Static facts, latest per node (`FINAL` or argMax for the newest row only).
            "CREATE TABLE IF NOT EXISTS {db}.inventory (
                ts DateTime64(3, 'UTC'),
                cluster LowCardinality(String),
                group_name LowCardinality(String),
                node LowCardinality(String),
                msg UInt64,
                hostname String,
                cpu_model LowCardinality(String),
                cpu_logical_cores UInt32,
                cpu_physical_cores UInt32,
                memory_bytes UInt64,
                swap_bytes UInt64,
                disk_capacity_bytes UInt64,
                disks Nested(name String, capacity_bytes UInt64, model String, rotational UInt8),
                os_name LowCardinality(String),
                os_version LowCardinality(String),
                kernel LowCardinality(String),
                arch LowCardinality(String),
                agent_version LowCardinality(String),
                boot_time DateTime64(3, 'UTC')
                ) ENGINE = ReplacingMergeTree(ts)
                ORDER BY (cluster, group_name, node)",
        ],
    },
    Migration {
        version: 2,
        name: "1-minute and 1-hour aggregates of host, process and sensor metrics",
        statements: &[
            // Plain columns an analyst can sum and max without -Merge combinators:
            // average = sum(x_sum) / sum(samples).
            "CREATE TABLE IF NOT EXISTS {db}.node_metrics_1m (
                ts DateTime('UTC'),
                cluster LowCardinality(String),
                group_name LowCardinality(String),
                node LowCardinality(String),
                samples SimpleAggregateFunction(sum, UInt64),
                cpu_pct_sum SimpleAggregateFunction(sum, Float64),
                cpu_pct_max SimpleAggregateFunction(max, Float32),
                mem_used_pct_sum SimpleAggregateFunction(sum, Float64),
                mem_used_pct_max SimpleAggregateFunction(max, Float32),
                swap_used_pct_sum SimpleAggregateFunction(sum, Float64),
                swap_used_pct_max SimpleAggregateFunction(max, Float32),
                disk_busy_pct_sum SimpleAggregateFunction(sum, Float64),
                disk_busy_pct_max SimpleAggregateFunction(max, Float32),
                load1_sum SimpleAggregateFunction(sum, Float64),
                net_rx_bytes_ps_sum SimpleAggregateFunction(sum, Float64),
                net_tx_bytes_ps_sum SimpleAggregateFunction(sum, Float64),
                mem_total_bytes SimpleAggregateFunction(max, UInt64),
                fs_total_bytes SimpleAggregateFunction(max, UInt64)
                ) ENGINE = AggregatingMergeTree
                PARTITION BY toYYYYMM(ts)
                ORDER BY (cluster, group_name, node, ts)
                SETTINGS non_replicated_deduplication_window = 1000",
            concat!(
                "CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.node_metrics_1m_mv TO {db}.node_metrics_1m AS",
                node_metrics_view!("toStartOfMinute")
            ),
            "CREATE TABLE IF NOT EXISTS {db}.node_metrics_1h AS {db}.node_metrics_1m",
            concat!(
                "CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.node_metrics_1h_mv TO {db}.node_metrics_1h AS",
                node_metrics_view!("toStartOfHour")
            ),
            "CREATE TABLE IF NOT EXISTS {db}.process_metrics_1m (
                ts DateTime('UTC'),
                cluster LowCardinality(String),
                group_name LowCardinality(String),
                node LowCardinality(String),
                name LowCardinality(String),
                start_time DateTime64(3, 'UTC'),
                pid UInt32,
                user SimpleAggregateFunction(any, LowCardinality(String)),
                samples SimpleAggregateFunction(sum, UInt64),
                cpu_pct_sum SimpleAggregateFunction(sum, Float64),
                cpu_pct_max SimpleAggregateFunction(max, Float32),
                rss_bytes_sum SimpleAggregateFunction(sum, Float64),
                rss_bytes_max SimpleAggregateFunction(max, UInt64),
                threads_max SimpleAggregateFunction(max, UInt32),
                fds_max SimpleAggregateFunction(max, Nullable(UInt32))
                ) ENGINE = AggregatingMergeTree
                PARTITION BY toYYYYMM(ts)
                ORDER BY (cluster, group_name, node, name, start_time, pid, ts)
                SETTINGS non_replicated_deduplication_window = 1000",
            concat!(
                "CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.process_metrics_1m_mv TO {db}.process_metrics_1m AS",
                process_metrics_view!("toStartOfMinute")
            ),
            "CREATE TABLE IF NOT EXISTS {db}.process_metrics_1h AS {db}.process_metrics_1m",
            concat!(
                "CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.process_metrics_1h_mv TO {db}.process_metrics_1h AS",
                process_metrics_view!("toStartOfHour")
            ),
            "CREATE TABLE IF NOT EXISTS {db}.sensor_readings_1m (
                ts DateTime('UTC'),
                cluster LowCardinality(String),
                group_name LowCardinality(String),
                node LowCardinality(String),
                sensor LowCardinality(String),
                kind LowCardinality(String),
                samples SimpleAggregateFunction(sum, UInt64),
                value_sum SimpleAggregateFunction(sum, Float64),
                value_min SimpleAggregateFunction(min, Float32),
                value_max SimpleAggregateFunction(max, Float32),
                alarm_samples SimpleAggregateFunction(sum, UInt64)
                ) ENGINE = AggregatingMergeTree
                PARTITION BY toYYYYMM(ts)
                ORDER BY (cluster, group_name, node, sensor, kind, ts)
                SETTINGS non_replicated_deduplication_window = 1000",
            concat!(
                "CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.sensor_readings_1m_mv TO {db}.sensor_readings_1m AS",
                sensor_readings_view!("toStartOfMinute")
            ),
            "CREATE TABLE IF NOT EXISTS {db}.sensor_readings_1h AS {db}.sensor_readings_1m",
            concat!(
                "CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.sensor_readings_1h_mv TO {db}.sensor_readings_1h AS",
                sensor_readings_view!("toStartOfHour")
            ),
        ],
    },
    Migration {
        version: 3,
        name: "backup log",
        statements: &[
            // Every backup the ingest takes, so a restarted ingest knows when the last one was.
            "CREATE TABLE IF NOT EXISTS {db}.backup_log (
                ts DateTime64(3, 'UTC'),
                name String,
                ok UInt8,
                seconds Float64,
                error String
                ) ENGINE = MergeTree
                ORDER BY ts",
        ],
    },
    Migration {
        version: 4,
        name: "program state transitions and the command audit",
        statements: &[
            // One row per state transition of a supervised program. Read per program over
            // time ("what happened to worker-1 on n0004"), so a program's transitions sit
            // together; the states, reasons and versions are a small vocabulary.
            concat!(
                "CREATE TABLE IF NOT EXISTS {db}.process_events (",
                ident_cols!(),
                "program LowCardinality(String),
                state_from LowCardinality(String),
                state_to LowCardinality(String),
                reason LowCardinality(String),
                pid Nullable(UInt32) CODEC(ZSTD(1)),
                exit_how LowCardinality(String),
                exit_value Nullable(Int32) CODEC(ZSTD(1)),
                restarts UInt32 CODEC(T64, ZSTD(1)),
                version LowCardinality(String),
                alarm UInt8
                ) ENGINE = MergeTree
                PARTITION BY toDate(ts)
                ORDER BY (cluster, group_name, node, program, ts)
                SETTINGS non_replicated_deduplication_window = 1000"
            ),
            // Every audit record agents publish: denied, accepted and finished commands. Few
            // rows; read per node ("what was done to n0004") or fleet-wide over a time range,
            // which the day partitions serve. request_id last keeps one command's records in
            // their order of arrival.
            concat!(
                "CREATE TABLE IF NOT EXISTS {db}.command_audit (",
                ident_cols!(),
                "phase LowCardinality(String),
                request_id String CODEC(ZSTD(1)),
                issuer LowCardinality(String),
                issuer_name LowCardinality(String),
                on_behalf_of LowCardinality(String),
                signed UInt8,
                op LowCardinality(String),
                program LowCardinality(String),
                args String CODEC(ZSTD(3)),
                target LowCardinality(String),
                ok UInt8,
                error LowCardinality(String),
                message String CODEC(ZSTD(3)),
                duration_us UInt64 CODEC(T64, ZSTD(1))
                ) ENGINE = MergeTree
                PARTITION BY toDate(ts)
                ORDER BY (cluster, group_name, node, ts, request_id)
                SETTINGS non_replicated_deduplication_window = 1000"
            ),
        ],
    },
    Migration {
        version: 5,
        name: "downsampling views without GROUP BY",
        // `MODIFY QUERY` swaps a view's query atomically: no insert of another worker misses
        // the view or passes through it twice meanwhile. Run with
        // `allow_experimental_alter_materialized_view_structure` (required before 24.1).
        statements: &[
            concat!("ALTER TABLE {db}.node_metrics_1m_mv MODIFY QUERY ", node_metrics_rows!("toStartOfMinute")),
            concat!("ALTER TABLE {db}.node_metrics_1h_mv MODIFY QUERY ", node_metrics_rows!("toStartOfHour")),
            concat!("ALTER TABLE {db}.process_metrics_1m_mv MODIFY QUERY ", process_metrics_rows!("toStartOfMinute")),
            concat!("ALTER TABLE {db}.process_metrics_1h_mv MODIFY QUERY ", process_metrics_rows!("toStartOfHour")),
            concat!("ALTER TABLE {db}.sensor_readings_1m_mv MODIFY QUERY ", sensor_readings_rows!("toStartOfMinute")),
            concat!("ALTER TABLE {db}.sensor_readings_1h_mv MODIFY QUERY ", sensor_readings_rows!("toStartOfHour")),
        ],
    },
    Migration {
        version: 6,
        name: "processes: what a process is, written once per process",
        statements: &[
            // A process's identity and the facts that do not move while it runs, written when
            // the ingest first sees the process (and again when they change, or a day later, so
            // a long-lived process outlives the retention of its first row). Rows of one
            // process collapse to the latest on merge; read with `FINAL` (docs/clickhouse.md).
            // No partitions: one message's rows are one part, so they land together.
            "CREATE TABLE IF NOT EXISTS {db}.processes (
                ts DateTime64(3, 'UTC') CODEC(DoubleDelta, ZSTD(1)),
                cluster LowCardinality(String),
                group_name LowCardinality(String),
                node LowCardinality(String),
                msg UInt64 CODEC(ZSTD(1)),
                pid UInt32 CODEC(ZSTD(1)),
                start_time DateTime64(3, 'UTC') CODEC(ZSTD(1)),
                ppid UInt32 CODEC(ZSTD(1)),
                name LowCardinality(String),
                cmdline String CODEC(ZSTD(3)),
                user LowCardinality(String)
                ) ENGINE = ReplacingMergeTree(ts)
                ORDER BY (cluster, group_name, node, start_time, pid)
                SETTINGS non_replicated_deduplication_window = 1000",
            // The processes already in process_metrics. Running it twice writes the same rows
            // again, which the replacing engine collapses.
            "INSERT INTO {db}.processes
                (ts, cluster, group_name, node, msg, pid, start_time, ppid, name, cmdline, user)
                SELECT max(ts), cluster, group_name, node, argMax(msg, ts), pid, start_time,
                    argMax(ppid, ts), argMax(name, ts), argMax(cmdline, ts), argMax(user, ts)
                FROM {db}.process_metrics
                GROUP BY cluster, group_name, node, pid, start_time",
        ],
    },
    Migration {
        version: 7,
        name: "narrow process_metrics",
        // The command line and the parent pid live in `processes` now. The identity strings
        // become plain `String`: the engine parses a LowCardinality value from RowBinary at
        // about a quarter of a microsecond, a third of a narrow row's whole cost, while rows
        // sorted by process compress a repeated String to nothing either way, with ZSTD(3)
        // (ZSTD(1) leaves a quarter of a byte per row for each; docs/benchmarks.md). Changing a
        // type again to itself, or dropping with `IF EXISTS`,
        // does nothing, so this runs twice safely.
        statements: &["ALTER TABLE {db}.process_metrics
            MODIFY COLUMN cluster String CODEC(ZSTD(3)),
            MODIFY COLUMN group_name String CODEC(ZSTD(3)),
            MODIFY COLUMN node String CODEC(ZSTD(3)),
            MODIFY COLUMN name String CODEC(ZSTD(3)),
            MODIFY COLUMN user String CODEC(ZSTD(3)),
            MODIFY COLUMN state String CODEC(ZSTD(3)),
            DROP COLUMN IF EXISTS cmdline,
            DROP COLUMN IF EXISTS ppid"],
    },
];

/// The table that records applied migrations.
pub const MIGRATIONS_TABLE: &str = "CREATE TABLE IF NOT EXISTS {db}.schema_migrations (
    version UInt32,
    name String,
    applied_at DateTime64(3, 'UTC') DEFAULT now64(3),
    applied_by String
    ) ENGINE = ReplacingMergeTree(applied_at)
    ORDER BY version";

/// The raw tables and their retention key; the downsampled ones follow `minute` and `hour`.
pub fn retention_plan(r: &RetentionConfig) -> Vec<(&'static str, Duration)> {
    vec![
        ("node_metrics", r.node_metrics),
        ("disk_metrics", r.device_metrics),
        ("fs_metrics", r.device_metrics),
        ("net_metrics", r.device_metrics),
        ("process_metrics", r.process_metrics),
        // Processes are named by the hourly tables too, so they are kept as long.
        ("processes", r.hour),
        ("sensor_readings", r.sensor_readings),
        ("rollups", r.rollups),
        ("rollup_metrics", r.rollups),
        ("alarms", r.events),
        ("node_events", r.events),
        ("process_events", r.process_events),
        ("command_audit", r.command_audit),
        ("node_metrics_1m", r.minute),
        ("process_metrics_1m", r.minute),
        ("sensor_readings_1m", r.minute),
        ("node_metrics_1h", r.hour),
        ("process_metrics_1h", r.hour),
        ("sensor_readings_1h", r.hour),
    ]
}

/// The TTL clause for a retention, as ClickHouse prints it back in `engine_full`; `None` keeps
/// rows forever. Whole days when the retention is a whole number of days, seconds otherwise.
pub fn ttl_expression(keep: Duration) -> Option<String> {
    let secs = keep.as_secs();
    if secs == 0 {
        return None;
    }
    Some(if secs.is_multiple_of(86_400) {
        format!("toDateTime(ts) + toIntervalDay({})", secs / 86_400)
    } else {
        format!("toDateTime(ts) + toIntervalSecond({secs})")
    })
}

/// Substitutes the database name.
pub fn render(statement: &str, db: &str) -> String {
    statement.replace("{db}", &format!("`{db}`"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_increase_and_statements_are_rerunnable() {
        let mut last = 0;
        for m in MIGRATIONS {
            assert!(m.version > last, "migration {} out of order", m.version);
            last = m.version;
            for s in m.statements {
                // `MODIFY QUERY` sets the same query again when run twice, `MODIFY COLUMN` the
                // same type; the replacing engine of `processes` collapses a second backfill.
                assert!(
                    s.contains("IF NOT EXISTS")
                        || s.contains(" MODIFY QUERY ")
                        || s.starts_with("ALTER TABLE {db}.process_metrics\n")
                            && s.lines().skip(1).all(|l| {
                                let l = l.trim();
                                l.starts_with("MODIFY COLUMN ")
                                    || l.starts_with("DROP COLUMN IF EXISTS ")
                            })
                        || s.starts_with("INSERT INTO {db}.processes\n"),
                    "migration {} has a statement that cannot run twice: {s}",
                    m.version
                );
            }
        }
    }

    #[test]
    fn every_retention_table_is_created() {
        let all: String = MIGRATIONS
            .iter()
            .flat_map(|m| m.statements.iter().copied())
            .collect();
        for (table, _) in retention_plan(&RetentionConfig::default()) {
            assert!(
                all.contains(&format!("{{db}}.{table} ")),
                "{table} is not created by any migration"
            );
        }
    }

    #[test]
    fn ttl_forms() {
        assert_eq!(ttl_expression(Duration::ZERO), None);
        assert_eq!(
            ttl_expression(Duration::from_secs(7 * 86_400)).as_deref(),
            Some("toDateTime(ts) + toIntervalDay(7)")
        );
        assert_eq!(
            ttl_expression(Duration::from_secs(90)).as_deref(),
            Some("toDateTime(ts) + toIntervalSecond(90)")
        );
    }
}
