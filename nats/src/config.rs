//! gridmon's configuration: the TOML file, then `GRIDMON_*`/`NATS_URL` variables, then CLI flags.
//!
//! [`Config::load`] does the layering; [`Config::validate`] is a pure function that tests call
//! directly. Every key is documented in `docs/configuration.md`.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use gridmon_collectors::config::{HwmonConfig, I2cConfig, ProbeConfig, ProcessConfig};
use serde::{Deserialize, Serialize};

use crate::identity::{hostname_token, validate_token, NodeId, TokenError};
use crate::subject::Subjects;

mod commands;
mod ingest;
mod releases;
mod web;
pub use commands::*;
pub use gridmon_commands::spec::{ProgramSpec, SupervisorConfig};
pub use ingest::*;
pub use releases::*;
pub use web::*;

/// A secret from config: never printed by `Debug` or `Display`.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() {
            "\"\""
        } else {
            "\"<redacted>\""
        })
    }
}

/// How messages are delivered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// JetStream with acknowledgement where a stream captures the subject, core NATS otherwise.
    #[default]
    Auto,
    /// Always JetStream; a missing stream is retried as an outage.
    Jetstream,
    /// Core NATS publish, confirmed by a flush round trip.
    Core,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatsConfig {
    /// Server URLs; `NATS_URL` (comma-separated) overrides.
    pub servers: Vec<String>,
    pub user: Option<String>,
    pub password: Option<Secret>,
    pub token: Option<Secret>,
    /// An nkey seed (`SU…`).
    pub nkey_seed: Option<Secret>,
    /// A `.creds` file (JWT + nkey seed) as issued by `nsc`.
    pub creds_file: Option<PathBuf>,
    /// CA bundle (PEM) to verify the server.
    pub tls_ca: Option<PathBuf>,
    /// Client certificate and key (PEM) for mutual TLS.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Refuse to talk to a server that does not offer TLS.
    pub tls_required: bool,
    /// The connection name shown by the server's monitoring; defaults to `gridmon-<role>-<node>`.
    pub name: Option<String>,
    /// Where replies to this client's requests arrive (default `_INBOX`). Give each identity its
    /// own (`_INBOX.alice`) so permissions can keep others' replies private (`docs/security.md`).
    pub inbox_prefix: Option<String>,
    /// The first token(s) of every subject.
    pub prefix: String,
    pub delivery: Delivery,
    /// How long to wait for a JetStream acknowledgement or a flush.
    #[serde(with = "humantime_serde")]
    pub ack_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Reconnect backoff doubles from 100 ms up to this.
    #[serde(with = "humantime_serde")]
    pub reconnect_max_delay: Duration,
}

impl Default for NatsConfig {
    fn default() -> Self {
        Self {
            servers: vec!["nats://127.0.0.1:4222".into()],
            user: None,
            password: None,
            token: None,
            nkey_seed: None,
            creds_file: None,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            tls_required: false,
            name: None,
            inbox_prefix: None,
            prefix: "grid".into(),
            delivery: Delivery::Auto,
            ack_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            reconnect_max_delay: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IdentityConfig {
    pub cluster: String,
    pub group: String,
    /// Empty means the host name.
    pub node: String,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        Self {
            cluster: "local".into(),
            group: "default".into(),
            node: String::new(),
        }
    }
}

/// Bounds of the outgoing spool that holds messages while the bus is unreachable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SpoolConfig {
    pub max_messages: usize,
    pub max_bytes: usize,
    /// Where unsent messages are saved on shutdown and picked up at the next start; none = not saved.
    pub path: Option<PathBuf>,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        Self {
            max_messages: 10_000,
            max_bytes: 8 << 20,
            path: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentConfig {
    /// Host metrics and sensors are reported every `interval`.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// The process table is sampled every `process_interval` (rounded to a multiple of `interval`).
    #[serde(with = "humantime_serde")]
    pub process_interval: Duration,
    /// Inventory is republished this often even when it did not change.
    #[serde(with = "humantime_serde")]
    pub inventory_interval: Duration,
    pub processes: ProcessConfig,
    pub hwmon: HwmonConfig,
    pub i2c: I2cConfig,
    pub probes: ProbeConfig,
    /// Roots of the machine's pseudo filesystems (for containers that mount the host's elsewhere).
    pub proc_root: PathBuf,
    pub sys_root: PathBuf,
    pub etc_root: PathBuf,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(1),
            process_interval: Duration::from_secs(5),
            inventory_interval: Duration::from_secs(3600),
            processes: ProcessConfig::default(),
            hwmon: HwmonConfig::default(),
            i2c: I2cConfig::default(),
            probes: ProbeConfig::default(),
            proc_root: "/proc".into(),
            sys_root: "/sys".into(),
            etc_root: "/etc".into(),
        }
    }
}

/// `gridmon aggregate`: what it serves, its windows, liveness, input bounds, leadership, alarms.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AggregateConfig {
    /// Scopes served: `grid`, `<cluster>` or `<cluster>/<group>`, where `*` stands for any
    /// cluster or group (`*/*` = every group seen). Default: every group, every cluster and the
    /// grid.
    pub serve: Vec<String>,
    /// Window length; default `agent.interval`.
    #[serde(with = "humantime_serde")]
    pub interval: Option<Duration>,
    /// How long after a window ends a group waits for its nodes' reports before it closes; default
    /// half the interval, at most 500ms. It must outlast the burst of reports at each boundary.
    #[serde(with = "humantime_serde")]
    pub grace: Option<Duration>,
    /// How much longer each level up waits for the rollups of the level below (a cluster closes
    /// `grace + rollup_grace` after the window ends, the grid `grace + 2 × rollup_grace`);
    /// default a tenth of the interval, at most 100ms.
    #[serde(with = "humantime_serde")]
    pub rollup_grace: Option<Duration>,
    /// Whole intervals without a report after which a node is stale, and offline.
    pub stale_after: u32,
    pub offline_after: u32,
    /// An offline node is dropped from rollups after this long.
    #[serde(with = "humantime_serde")]
    pub forget_after: Duration,
    /// Reports stamped further than this from the aggregator's clock are dropped and counted.
    #[serde(with = "humantime_serde")]
    pub max_clock_skew: Duration,
    /// Reports larger than this are dropped and counted.
    pub max_report_bytes: usize,
    /// Reports with more processes than this are dropped and counted.
    pub max_processes: u32,
    /// Ask the agents for their latest report at start-up, so the first rollup is complete.
    pub request_reports: bool,
    /// JetStream KV bucket that holds leadership when several instances serve one scope.
    pub leader_bucket: String,
    /// A leader that has not renewed for this long is replaced; default 2 intervals.
    #[serde(with = "humantime_serde")]
    pub leader_ttl: Option<Duration>,
    /// Off: publish without asking the KV bucket (a single instance, or no JetStream).
    pub leader_election: bool,
    /// This instance's name in the leadership bucket; default `<host>-<pid>`.
    pub instance: Option<String>,
    /// The built-in alarms (hardware faults, offline nodes, failed programs).
    pub builtin_alarms: bool,
    /// Rule names (built-in or configured) to leave out.
    pub disable_alarms: Vec<String>,
    pub alarms: Vec<AlarmRuleConfig>,
}

impl Default for AggregateConfig {
    fn default() -> Self {
        Self {
            serve: vec!["*/*".into(), "*".into(), "grid".into()],
            interval: None,
            grace: None,
            rollup_grace: None,
            stale_after: 3,
            offline_after: 10,
            forget_after: Duration::from_secs(24 * 3600),
            max_clock_skew: Duration::from_secs(300),
            max_report_bytes: 8 << 20,
            max_processes: 50_000,
            request_reports: true,
            leader_bucket: "gridmon_leaders".into(),
            leader_ttl: None,
            leader_election: true,
            instance: None,
            builtin_alarms: true,
            disable_alarms: Vec::new(),
            alarms: Vec::new(),
        }
    }
}

impl AggregateConfig {
    /// The window length.
    pub fn window(&self, agent_interval: Duration) -> Duration {
        self.interval.unwrap_or(agent_interval)
    }

    pub fn grace_for(&self, window: Duration) -> Duration {
        self.grace
            .unwrap_or_else(|| (window / 2).min(Duration::from_millis(500)))
    }

    pub fn rollup_grace_for(&self, window: Duration) -> Duration {
        self.rollup_grace
            .unwrap_or_else(|| (window / 10).min(Duration::from_millis(100)))
    }

    pub fn leader_ttl_for(&self, window: Duration) -> Duration {
        self.leader_ttl.unwrap_or(window * 2)
    }
}

/// One alarm rule, `[[aggregate.alarms]]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlarmRuleConfig {
    /// Unique rule name; part of every alarm id the rule raises.
    pub name: String,
    /// A node metric (`cpu_pct`) for `scope = "node"`; a rollup figure (`cpu_pct.p95`,
    /// `nodes.offline`, `programs.failed`) for `group` and `cluster`.
    pub metric: String,
    #[serde(default)]
    pub scope: AlarmScope,
    /// `>`, `>=`, `<` or `<=`.
    pub op: String,
    pub threshold: f64,
    /// Cleared when the value is back past this (on the other side of `threshold` for
    /// hysteresis); default `threshold`.
    pub clear: Option<f64>,
    /// The condition must hold this long before the alarm is raised.
    #[serde(default, rename = "for", with = "humantime_serde")]
    pub for_: Option<Duration>,
    /// The clear condition must hold this long before the alarm is cleared; default 3 intervals.
    #[serde(default, with = "humantime_serde")]
    pub clear_for: Option<Duration>,
    #[serde(default)]
    pub severity: crate::wire::Severity,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlarmScope {
    #[default]
    Node,
    Group,
    Cluster,
}

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub nats: NatsConfig,
    pub identity: IdentityConfig,
    pub agent: AgentConfig,
    pub spool: SpoolConfig,
    pub aggregate: AggregateConfig,
    pub clickhouse: ClickHouseConfig,
    pub ingest: IngestConfig,
    pub commands: CommandsConfig,
    pub supervisor: SupervisorConfig,
    /// The supervised worker programs, by name (`[programs.<name>]`).
    pub programs: std::collections::BTreeMap<String, ProgramSpec>,
    pub releases: ReleasesConfig,
    /// The dashboard (`gridmon web`).
    pub web: WebConfig,
}

/// Settings given on the command line; `None` leaves the layer below in force.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    pub servers: Option<Vec<String>>,
    pub prefix: Option<String>,
    pub cluster: Option<String>,
    pub group: Option<String>,
    pub node: Option<String>,
    pub interval: Option<Duration>,
    pub process_interval: Option<Duration>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
}

fn invalid(field: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

impl Config {
    /// File (if any), then the environment, then `overrides`; then fills defaults and validates.
    pub fn load(
        path: Option<&Path>,
        env: &HashMap<String, String>,
        overrides: &Overrides,
    ) -> Result<Self, ConfigError> {
        let mut config = match path {
            Some(p) => Self::from_file(p)?,
            None => Self::default(),
        };
        config.apply_env(env)?;
        config.apply_overrides(overrides);
        config.fill_defaults();
        config.validate()?;
        Ok(config)
    }

    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        Self::from_toml(&text).map_err(|message| ConfigError::Parse {
            path: path.into(),
            message,
        })
    }

    pub fn from_toml(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// `NATS_URL` and the `GRIDMON_*` variables listed in `docs/configuration.md`.
    pub fn apply_env(&mut self, env: &HashMap<String, String>) -> Result<(), ConfigError> {
        let get = |k: &str| env.get(k).filter(|v| !v.is_empty()).cloned();
        if let Some(v) = get("NATS_URL") {
            self.nats.servers = split_list(&v);
        }
        if let Some(v) = get("GRIDMON_KEY_FILE") {
            self.commands.key_file = Some(v.into());
        }
        if let Some(v) = get("GRIDMON_INBOX_PREFIX") {
            self.nats.inbox_prefix = Some(v);
        }
        if let Some(v) = get("GRIDMON_NATS_USER") {
            self.nats.user = Some(v);
        }
        if let Some(v) = get("GRIDMON_NATS_PASSWORD") {
            self.nats.password = Some(Secret(v));
        }
        if let Some(v) = get("GRIDMON_NATS_TOKEN") {
            self.nats.token = Some(Secret(v));
        }
        if let Some(v) = get("GRIDMON_NATS_NKEY_SEED") {
            self.nats.nkey_seed = Some(Secret(v));
        }
        if let Some(v) = get("GRIDMON_NATS_CREDS") {
            self.nats.creds_file = Some(v.into());
        }
        if let Some(v) = get("GRIDMON_PREFIX") {
            self.nats.prefix = v;
        }
        if let Some(v) = get("GRIDMON_CLUSTER") {
            self.identity.cluster = v;
        }
        if let Some(v) = get("GRIDMON_GROUP") {
            self.identity.group = v;
        }
        if let Some(v) = get("GRIDMON_NODE") {
            self.identity.node = v;
        }
        if let Some(v) = get("CLICKHOUSE_URL") {
            self.clickhouse.url = v;
        }
        if let Some(v) = get("CLICKHOUSE_USER") {
            self.clickhouse.user = Some(v);
        }
        if let Some(v) = get("CLICKHOUSE_PASSWORD") {
            self.clickhouse.password = Some(Secret(v));
        }
        if let Some(v) = get("CLICKHOUSE_DATABASE") {
            self.clickhouse.database = v;
        }
        if let Some(v) = get("GRIDMON_INTERVAL") {
            self.agent.interval = humantime::parse_duration(&v).map_err(|e| ConfigError::Env {
                var: "GRIDMON_INTERVAL".into(),
                message: e.to_string(),
            })?;
        }
        Ok(())
    }

    pub fn apply_overrides(&mut self, o: &Overrides) {
        if let Some(v) = &o.servers {
            self.nats.servers = v.clone();
        }
        if let Some(v) = &o.prefix {
            self.nats.prefix = v.clone();
        }
        if let Some(v) = &o.cluster {
            self.identity.cluster = v.clone();
        }
        if let Some(v) = &o.group {
            self.identity.group = v.clone();
        }
        if let Some(v) = &o.node {
            self.identity.node = v.clone();
        }
        if let Some(v) = o.interval {
            self.agent.interval = v;
        }
        if let Some(v) = o.process_interval {
            self.agent.process_interval = v;
        }
    }

    /// Values that default to facts of the machine.
    pub fn fill_defaults(&mut self) {
        if self.identity.node.is_empty() {
            self.identity.node = hostname_token();
        }
    }

    /// Every rule a config must meet; the error names the offending key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        Subjects::new(&self.nats.prefix)?;
        self.node_id()?;
        self.clickhouse.validate()?;
        self.ingest.validate()?;
        self.commands.validate()?;
        self.web.validate()?;
        self.releases
            .validate()
            .map_err(|m| invalid("releases", m))?;
        gridmon_commands::spec::validate(&self.supervisor, &self.programs)
            .map_err(|e| invalid("programs", e.to_string()))?;
        let n = &self.nats;
        if n.servers.is_empty() {
            return Err(invalid("nats.servers", "at least one server URL is needed"));
        }
        for s in &n.servers {
            validate_server_url(s).map_err(|m| invalid("nats.servers", m))?;
        }
        let auth_methods = [
            n.user.is_some(),
            n.token.is_some(),
            n.nkey_seed.is_some(),
            n.creds_file.is_some(),
        ];
        if auth_methods.iter().filter(|b| **b).count() > 1 {
            return Err(invalid(
                "nats",
                "choose one of user/password, token, nkey_seed and creds_file",
            ));
        }
        if n.user.is_some() != n.password.is_some() {
            return Err(invalid("nats.password", "user and password go together"));
        }
        if let Some(seed) = &n.nkey_seed {
            if !seed.expose().starts_with("SU") {
                return Err(invalid(
                    "nats.nkey_seed",
                    "a user nkey seed starts with \"SU\"",
                ));
            }
        }
        if let Some(p) = &n.inbox_prefix {
            if p.is_empty()
                || p.split('.').any(|t| {
                    t.is_empty() || t.contains(['*', '>']) || t.contains(char::is_whitespace)
                })
            {
                return Err(invalid(
                    "nats.inbox_prefix",
                    "dot-separated tokens without wildcards or spaces",
                ));
            }
        }
        if n.tls_cert.is_some() != n.tls_key.is_some() {
            return Err(invalid("nats.tls_key", "tls_cert and tls_key go together"));
        }
        for (field, path) in [
            ("nats.creds_file", &n.creds_file),
            ("nats.tls_ca", &n.tls_ca),
            ("nats.tls_cert", &n.tls_cert),
            ("nats.tls_key", &n.tls_key),
        ] {
            if let Some(p) = path {
                if !p.is_file() {
                    return Err(invalid(
                        field,
                        format!("{} is not a readable file", p.display()),
                    ));
                }
            }
        }
        positive("nats.ack_timeout", n.ack_timeout)?;
        positive("nats.connect_timeout", n.connect_timeout)?;
        positive("nats.reconnect_max_delay", n.reconnect_max_delay)?;
        let a = &self.agent;
        if a.interval < Duration::from_millis(100) {
            return Err(invalid("agent.interval", "must be at least 100ms"));
        }
        if a.process_interval < a.interval {
            return Err(invalid(
                "agent.process_interval",
                "must be at least agent.interval",
            ));
        }
        if a.inventory_interval < a.interval {
            return Err(invalid(
                "agent.inventory_interval",
                "must be at least agent.interval",
            ));
        }
        if a.processes.select == gridmon_collectors::config::ProcessSelect::Top
            && a.processes.top_n == 0
            && a.processes.patterns.is_empty()
        {
            return Err(invalid(
                "agent.processes.top_n",
                "select = \"top\" needs top_n > 0 or some patterns",
            ));
        }
        if a.processes.cmdline_max > 64 * 1024 {
            return Err(invalid(
                "agent.processes.cmdline_max",
                "at most 65536 bytes",
            ));
        }
        if a.probes.attempts == 0 && !a.probes.targets.is_empty() {
            return Err(invalid("agent.probes.attempts", "must be at least 1"));
        }
        for t in &a.probes.targets {
            if t.rsplit_once(':')
                .and_then(|(_, p)| p.parse::<u16>().ok())
                .is_none()
            {
                return Err(invalid(
                    "agent.probes.targets",
                    format!("{t:?} is not host:port"),
                ));
            }
        }
        for s in &a.i2c.sensors {
            if s.address > 0x7f {
                return Err(invalid(
                    "agent.i2c.sensors.address",
                    format!("{:#x} is not a 7-bit address", s.address),
                ));
            }
            if s.shunt_ohms.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
                return Err(invalid(
                    "agent.i2c.sensors.shunt_ohms",
                    "must be a positive number",
                ));
            }
        }
        self.validate_aggregate()?;
        if self.spool.max_messages == 0 || self.spool.max_bytes == 0 {
            return Err(invalid(
                "spool",
                "max_messages and max_bytes must be positive",
            ));
        }
        Ok(())
    }

    fn validate_aggregate(&self) -> Result<(), ConfigError> {
        let g = &self.aggregate;
        let window = g.window(self.agent.interval);
        if window < Duration::from_millis(100) {
            return Err(invalid("aggregate.interval", "must be at least 100ms"));
        }
        if g.grace_for(window) + g.rollup_grace_for(window) * 2 >= window {
            return Err(invalid(
                "aggregate.grace",
                "grace + 2 × rollup_grace must be shorter than the interval",
            ));
        }
        if g.stale_after == 0 || g.offline_after <= g.stale_after {
            return Err(invalid(
                "aggregate.offline_after",
                "need 0 < stale_after < offline_after",
            ));
        }
        if g.forget_after < window * g.offline_after {
            return Err(invalid(
                "aggregate.forget_after",
                "must be at least offline_after intervals",
            ));
        }
        positive("aggregate.max_clock_skew", g.max_clock_skew)?;
        if g.max_report_bytes == 0 || g.max_processes == 0 {
            return Err(invalid(
                "aggregate",
                "max_report_bytes and max_processes must be positive",
            ));
        }
        if g.leader_ttl_for(window) < window {
            return Err(invalid(
                "aggregate.leader_ttl",
                "must be at least one interval",
            ));
        }
        if g.serve.is_empty() {
            return Err(invalid("aggregate.serve", "serve at least one scope"));
        }
        for s in &g.serve {
            crate::subject::ScopePattern::parse(s).map_err(|m| invalid("aggregate.serve", m))?;
        }
        if let Some(i) = &g.instance {
            validate_token("aggregate.instance", i)?;
        }
        let mut names = std::collections::HashSet::new();
        for r in &g.alarms {
            if r.name.is_empty() || !names.insert(r.name.as_str()) {
                return Err(invalid(
                    "aggregate.alarms.name",
                    format!("{:?}: names must be present and unique", r.name),
                ));
            }
            if !matches!(r.op.as_str(), ">" | ">=" | "<" | "<=") {
                return Err(invalid(
                    "aggregate.alarms.op",
                    format!("rule {:?}: {:?} is not one of > >= < <=", r.name, r.op),
                ));
            }
            if !r.threshold.is_finite() || r.clear.is_some_and(|c| !c.is_finite()) {
                return Err(invalid(
                    "aggregate.alarms.threshold",
                    format!("rule {:?}: thresholds must be finite numbers", r.name),
                ));
            }
            if let Some(c) = r.clear {
                let wrong_side = match r.op.as_str() {
                    ">" | ">=" => c > r.threshold,
                    _ => c < r.threshold,
                };
                if wrong_side {
                    return Err(invalid(
                        "aggregate.alarms.clear",
                        format!(
                            "rule {:?}: the clear threshold must be on the healthy side of the threshold",
                            r.name
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The validated identity of this node.
    pub fn node_id(&self) -> Result<NodeId, TokenError> {
        NodeId::new(
            &self.identity.cluster,
            &self.identity.group,
            &self.identity.node,
        )
    }

    pub fn subjects(&self) -> Result<Subjects, TokenError> {
        Subjects::new(&self.nats.prefix)
    }
}

fn positive(field: &str, d: Duration) -> Result<(), ConfigError> {
    if d.is_zero() {
        return Err(invalid(field, "must be more than zero"));
    }
    Ok(())
}

fn split_list(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

fn validate_server_url(s: &str) -> Result<(), String> {
    let rest = match s.split_once("://") {
        Some(("nats" | "tls" | "ws" | "wss", rest)) => rest,
        Some((scheme, _)) => {
            return Err(format!(
                "{s:?}: unknown scheme {scheme:?} (nats, tls, ws, wss)"
            ))
        }
        None => s,
    };
    let hostport = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    if hostport.is_empty() || hostport.contains(char::is_whitespace) {
        return Err(format!("{s:?} has no host"));
    }
    if let Some((_, port)) = hostport.rsplit_once(':') {
        if !port.is_empty() && !port.contains(']') && port.parse::<u16>().is_err() {
            return Err(format!("{s:?}: port {port:?} is not a number"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_valid() {
        let c = Config::load(None, &env(&[]), &Overrides::default()).unwrap();
        assert_eq!(c.identity.cluster, "local");
        assert_eq!(c.identity.group, "default");
        assert!(!c.identity.node.is_empty());
        assert_eq!(c.nats.prefix, "grid");
        assert_eq!(c.agent.interval, Duration::from_secs(1));
    }

    #[test]
    fn layering_file_then_env_then_flags() {
        let mut c = Config::from_toml(
            r#"
            [nats]
            servers = ["nats://file:4222"]
            prefix = "acme.grid"
            [identity]
            cluster = "eu"
            group = "rack1"
            node = "n1"
            [agent]
            interval = "2s"
            process_interval = "10s"
            [agent.processes]
            select = "top"
            top_n = 5
            patterns = ["nginx*"]
            "#,
        )
        .unwrap();
        assert_eq!(c.agent.interval, Duration::from_secs(2));
        c.apply_env(&env(&[
            ("NATS_URL", "nats://a:1, nats://b:2"),
            ("GRIDMON_GROUP", "rack2"),
        ]))
        .unwrap();
        assert_eq!(c.nats.servers, vec!["nats://a:1", "nats://b:2"]);
        c.apply_overrides(&Overrides {
            node: Some("n9".into()),
            ..Default::default()
        });
        c.validate().unwrap();
        assert_eq!(
            c.node_id().unwrap(),
            NodeId::new("eu", "rack2", "n9").unwrap()
        );
        assert_eq!(
            c.subjects().unwrap().node_report(&c.node_id().unwrap()),
            "acme.grid.eu.rack2.n9"
        );
    }

    fn check_invalid(toml_text: &str, field: &str) {
        let c = Config::from_toml(toml_text);
        let err = match c {
            Err(parse) => parse,
            Ok(mut c) => {
                c.fill_defaults();
                c.validate().expect_err(toml_text).to_string()
            }
        };
        assert!(err.contains(field), "error {err:?} should name {field:?}");
    }

    #[test]
    fn bad_configs_name_the_field() {
        check_invalid("[identity]\ncluster = \"a.b\"", "identity.cluster");
        check_invalid("[identity]\ngroup = \"\"", "identity.group");
        check_invalid("[identity]\nnode = \"x y\"", "identity.node");
        check_invalid("[identity]\ncluster = \"audit\"", "identity.cluster");
        check_invalid("[nats]\nprefix = \"g*\"", "nats.prefix");
        check_invalid("[nats]\nservers = []", "nats.servers");
        check_invalid("[nats]\nservers = [\"http://x:1\"]", "nats.servers");
        check_invalid("[nats]\nservers = [\"nats://x:port\"]", "nats.servers");
        check_invalid("[nats]\nuser = \"u\"", "nats.password");
        check_invalid(
            "[nats]\nuser = \"u\"\npassword = \"p\"\ntoken = \"t\"",
            "nats",
        );
        check_invalid("[nats]\nnkey_seed = \"UABC\"", "nats.nkey_seed");
        check_invalid(
            "[nats]\ncreds_file = \"/nonexistent/x.creds\"",
            "nats.creds_file",
        );
        check_invalid("[nats]\ntls_cert = \"/etc/hostname\"", "nats.tls_key");
        check_invalid("[agent]\ninterval = \"10ms\"", "agent.interval");
        check_invalid(
            "[agent]\ninterval = \"5s\"\nprocess_interval = \"1s\"",
            "agent.process_interval",
        );
        check_invalid("[agent]\ninterval = \"soon\"", "interval");
        check_invalid(
            "[agent.processes]\nselect = \"top\"\ntop_n = 0",
            "agent.processes.top_n",
        );
        check_invalid(
            "[agent.probes]\ntargets = [\"nohost\"]",
            "agent.probes.targets",
        );
        check_invalid(
            "[agent.i2c]\nsensors = [{ bus = 1, address = 0x90, model = \"lm75\" }]",
            "agent.i2c.sensors.address",
        );
        check_invalid("[spool]\nmax_messages = 0", "spool");
        check_invalid("[nats]\nsurprise = 1", "surprise");
        check_invalid("[agnet]\n", "agnet");
    }

    #[test]
    fn secrets_are_redacted() {
        let c = Config::from_toml("[nats]\ntoken = \"hunter2\"").unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("<redacted>"));
        assert_eq!(c.nats.token.unwrap().expose(), "hunter2");
    }

    #[test]
    fn bad_env_is_an_error() {
        let mut c = Config::default();
        let e = c
            .apply_env(&env(&[("GRIDMON_INTERVAL", "often")]))
            .unwrap_err();
        assert!(e.to_string().contains("GRIDMON_INTERVAL"));
    }
}
