//! `gridmon ctl` and `gridmon keygen`: signed commands to one node or fanned out over a group, a
//! cluster or the grid, in batches, with every expected member accounted for.
//!
//! The expected members come from the registry (`nats/src/registry.rs`), so a node that has gone
//! away is reported `offline` rather than silently missing, and one that is registered but does
//! not answer is `no_answer`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Args;
use futures::StreamExt;
use gridmon_nats::command::{
    encode_request, CommandBody, CommandReply, Encoding, ErrorKind, Op, RegistryEntry, Target,
};
use gridmon_nats::frame::now_ms;
use gridmon_nats::wire::{Envelope, Kind, ProgramStatus};
use gridmon_nats::{Config, Family, NodeId, Scope};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Args)]
pub struct CtlArgs {
    /// The operation: status, list, start, stop, restart, deploy, upgrade, rollback, degrade,
    /// shutdown, logs, collect.
    pub op: String,
    /// The program acted on.
    pub program: Option<String>,
    /// One node: `CLUSTER/GROUP/NODE`.
    #[arg(long, conflicts_with_all = ["group", "cluster", "grid"])]
    pub node: Option<String>,
    /// Every node of a group: `CLUSTER/GROUP`.
    #[arg(long, conflicts_with_all = ["cluster", "grid"])]
    pub group: Option<String>,
    /// Every node of a cluster.
    #[arg(long = "cluster", id = "cluster", conflicts_with = "grid")]
    pub target_cluster: Option<String>,
    /// Every node of the grid.
    #[arg(long)]
    pub grid: bool,
    /// Release version (deploy, upgrade; rollback to a given one).
    #[arg(long)]
    pub version: Option<String>,
    /// degrade: enter the degraded mode (default) or leave it with `--off`.
    #[arg(long)]
    pub off: bool,
    /// shutdown: power the machine off after the drain (only where the agent allows it).
    #[arg(long)]
    pub poweroff: bool,
    /// logs: how many lines.
    #[arg(long)]
    pub lines: Option<u32>,
    /// logs: stdout, stderr or both.
    #[arg(long)]
    pub stream: Option<String>,
    /// Nodes per batch: a number or a percentage (`10%`); default all at once.
    #[arg(long)]
    pub batch: Option<String>,
    /// Pause between batches.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
    pub pause: Duration,
    /// Go on with the next batch after a failure (default: halt).
    #[arg(long)]
    pub continue_on_failure: bool,
    /// How long to wait for the answers of one batch (default `commands.timeout`, four times
    /// that for deploy and upgrade).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub timeout: Option<Duration>,
    /// The operator key (an nkey seed file); default `commands.key_file` or `GRIDMON_KEY_FILE`.
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// Send without a signature (read-only operations, where agents allow it).
    #[arg(long)]
    pub unsigned: bool,
    /// Who this command is issued for (recorded in the audit).
    #[arg(long)]
    pub on_behalf_of: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Where to write the seed (created with mode 0600; never overwritten).
    #[arg(long, short = 'o')]
    pub out: PathBuf,
}

/// What happened with one target node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok,
    Failed,
    /// Not seen recently by the registry, and no answer.
    Offline,
    /// Seen recently, but no answer within the timeout.
    NoAnswer,
    /// Not sent: an earlier batch failed.
    Skipped,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Failed => "failed",
            Self::Offline => "offline",
            Self::NoAnswer => "no answer",
            Self::Skipped => "skipped",
        }
    }
}

#[derive(Debug, Serialize)]
struct NodeResult {
    node: String,
    outcome: Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorKind>,
    message: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    programs: Vec<ProgramStatus>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    logs: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reply: Option<CommandReply>,
    /// Request to reply, µs.
    #[serde(skip_serializing_if = "Option::is_none")]
    rtt_us: Option<u64>,
    /// Last registry refresh, ms since the Unix epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    seen_ms: Option<i64>,
}

#[derive(Debug, Default, Serialize)]
struct Summary {
    targets: usize,
    answered: usize,
    ok: usize,
    failed: usize,
    offline: usize,
    no_answer: usize,
    skipped: usize,
    /// Inside `gridmon ctl`: connect, registry read, every batch, ms.
    elapsed_ms: u64,
    /// Sending the requests and waiting for the answers (all batches, pauses included), ms.
    fanout_ms: u64,
}

#[derive(Debug, Serialize)]
struct Report {
    op: Op,
    target: String,
    results: Vec<NodeResult>,
    summary: Summary,
}

/// One expected member.
#[derive(Debug, Clone)]
struct Member {
    id: NodeId,
    seen_ms: Option<i64>,
    fresh: bool,
}

/// Runs the command; the exit status is success only if every target succeeded.
pub async fn run(
    config: Config,
    args: CtlArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<bool> {
    let began = Instant::now();
    let op = Op::parse(&args.op).with_context(|| {
        format!(
            "unknown operation {:?}; one of: {}",
            args.op,
            Op::ALL.map(|o| o.as_str()).join(", ")
        )
    })?;
    let target = parse_target(&args)?;
    let key = load_key(&config, &args, op)?;
    let client = gridmon_nats::connect::connect(&config.nats, "gridmon-ctl").await?;
    let js = async_nats::jetstream::new(client.clone());
    let members = expected_members(&js, &config, &target).await?;
    if members.is_empty() {
        bail!(
            "no node of {target} is in the registry {:?}",
            config.commands.registry_bucket
        );
    }
    let timeout = args.timeout.unwrap_or_else(|| command_timeout(&config, op));
    let batch = batch_size(args.batch.as_deref(), members.len())?;
    let subjects = config.subjects()?;
    let mut results = Vec::with_capacity(members.len());
    let mut halted = false;
    let fanout = Instant::now();
    for (i, chunk) in members.chunks(batch).enumerate() {
        if halted || shutdown.is_cancelled() {
            results.extend(chunk.iter().map(skipped));
            continue;
        }
        if i > 0 && !args.pause.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(args.pause) => {}
                _ = shutdown.cancelled() => {}
            }
        }
        let out = send_batch(
            &client,
            &subjects,
            &config,
            &args,
            op,
            key.as_ref(),
            chunk,
            timeout,
        )
        .await?;
        let failed = out.iter().any(|r| r.outcome != Outcome::Ok);
        results.extend(out);
        if failed && !args.continue_on_failure && members.len() > chunk.len() {
            halted = true;
        }
    }
    let fanout_ms = millis(fanout);
    results.sort_by(|a, b| a.node.cmp(&b.node));
    let mut summary = Summary {
        targets: results.len(),
        fanout_ms,
        elapsed_ms: millis(began),
        ..Default::default()
    };
    for r in &results {
        match r.outcome {
            Outcome::Ok => summary.ok += 1,
            Outcome::Failed => summary.failed += 1,
            Outcome::Offline => summary.offline += 1,
            Outcome::NoAnswer => summary.no_answer += 1,
            Outcome::Skipped => summary.skipped += 1,
        }
    }
    summary.answered = summary.ok + summary.failed;
    let all_ok = summary.ok == summary.targets;
    let report = Report {
        op,
        target: target.to_string(),
        results,
        summary,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report, halted);
    }
    Ok(all_ok)
}

fn millis(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

fn skipped(m: &Member) -> NodeResult {
    NodeResult {
        node: m.id.to_string(),
        outcome: Outcome::Skipped,
        error: None,
        message: "not sent: an earlier batch failed".into(),
        programs: Vec::new(),
        logs: Vec::new(),
        reply: None,
        rtt_us: None,
        seen_ms: m.seen_ms,
    }
}

fn parse_target(args: &CtlArgs) -> anyhow::Result<Target> {
    let split = |s: &str, n: usize, what: &str| -> anyhow::Result<Vec<String>> {
        let parts: Vec<String> = s.split('/').map(str::to_string).collect();
        if parts.len() != n || parts.iter().any(|p| p.is_empty()) {
            bail!(
                "--{what} takes {}",
                ["CLUSTER", "CLUSTER/GROUP", "CLUSTER/GROUP/NODE"][n - 1]
            );
        }
        for p in &parts {
            gridmon_nats::identity::validate_token(what, p)?;
        }
        Ok(parts)
    };
    if let Some(n) = &args.node {
        let p = split(n, 3, "node")?;
        return Ok(Target {
            cluster: Some(p[0].clone()),
            group: Some(p[1].clone()),
            node: Some(p[2].clone()),
        });
    }
    if let Some(g) = &args.group {
        let p = split(g, 2, "group")?;
        return Ok(Target {
            cluster: Some(p[0].clone()),
            group: Some(p[1].clone()),
            node: None,
        });
    }
    if let Some(c) = &args.target_cluster {
        let p = split(c, 1, "cluster")?;
        return Ok(Target {
            cluster: Some(p[0].clone()),
            group: None,
            node: None,
        });
    }
    if args.grid {
        return Ok(Target::default());
    }
    bail!("name a target: --node C/G/N, --group C/G, --cluster C or --grid")
}

fn load_key(config: &Config, args: &CtlArgs, op: Op) -> anyhow::Result<Option<nkeys::KeyPair>> {
    if args.unsigned {
        if op.is_mutating() {
            bail!("{op} changes something and must be signed; drop --unsigned");
        }
        return Ok(None);
    }
    let path = args
        .key
        .clone()
        .or_else(|| config.commands.key_file.clone());
    let Some(path) = path else {
        if op.is_mutating() {
            bail!("{op} must be signed: give --key, commands.key_file or GRIDMON_KEY_FILE (create one with `gridmon keygen`)");
        }
        return Ok(None);
    };
    Ok(Some(read_key(&path)?))
}

/// How long to wait for an agent's answer to `op`: `commands.timeout`, four times that for the
/// operations that install or drain.
pub fn command_timeout(config: &Config, op: Op) -> Duration {
    match op {
        Op::Deploy | Op::Upgrade | Op::Shutdown => config.commands.timeout * 4,
        _ => config.commands.timeout,
    }
}

/// Sends one command to one node and waits for its reply: the path of the views (`gridmon top`,
/// `gridmon web`), which act on one node at a time. `body` gets the issuer, the target and a fresh
/// expiry and nonce here; the caller fills in the operation's arguments.
pub async fn request_one(
    client: &async_nats::Client,
    config: &Config,
    node: &NodeId,
    mut body: CommandBody,
    key: Option<&nkeys::KeyPair>,
    timeout: Duration,
) -> anyhow::Result<CommandReply> {
    let lifetime = i64::try_from(config.commands.expiry.as_millis()).unwrap_or(60_000);
    let now = now_ms();
    body.target = Target::node(node);
    if let Some(k) = key {
        body.issuer = k.public_key();
    }
    body.issued_ms = now;
    body.expires_ms = now.saturating_add(lifetime.clamp(1, gridmon_nats::command::MAX_LIFETIME_MS));
    body.nonce = gridmon_nats::command::new_nonce();
    let payload = encode_request(&body, key, Encoding::MsgPack)?;
    let subject = config
        .subjects()?
        .family(Family::Cmd, &Scope::Node(node.clone()));
    let msg = match tokio::time::timeout(timeout, client.request(subject, payload.into())).await {
        Err(_) => bail!(
            "{node} did not answer within {}",
            humantime::format_duration(timeout)
        ),
        Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::NoResponders => {
            bail!("{node} is not listening for commands (no agent answers there)")
        }
        Ok(Err(e)) => {
            return Err(anyhow::anyhow!(e).context(format!("sending {} to {node}", body.op)))
        }
        Ok(Ok(m)) => m,
    };
    let env = gridmon_nats::wire::decode::<CommandReply>(&msg.payload, Kind::CommandReply)
        .with_context(|| format!("{node}'s reply does not decode"))?;
    Ok(env.body)
}

/// Reads an nkey seed file (`gridmon keygen` output); lines starting with `#` are ignored.
pub fn read_key(path: &Path) -> anyhow::Result<nkeys::KeyPair> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the key file {}", path.display()))?;
    let seed = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .with_context(|| format!("{}: no seed in the file", path.display()))?;
    nkeys::KeyPair::from_seed(seed)
        .map_err(|e| anyhow::anyhow!("{}: not an nkey seed: {e}", path.display()))
}

async fn expected_members(
    js: &async_nats::jetstream::Context,
    config: &Config,
    target: &Target,
) -> anyhow::Result<Vec<Member>> {
    let c = &config.commands;
    let now = now_ms();
    let fresh = |e: &RegistryEntry| {
        let every = i64::try_from(e.every_ms.max(1)).unwrap_or(i64::MAX);
        now - e.seen_ms <= every.saturating_mul(i64::from(c.offline_after))
    };
    let loaded = gridmon_nats::registry::load(js, &c.registry_bucket, target).await;
    let (entries, bad) = match loaded {
        Ok(x) => x,
        // One explicit node can be asked without the registry.
        Err(e) if target.node.is_some() => {
            tracing::warn!(error = %e, "registry unavailable; asking the node directly");
            (Vec::new(), 0)
        }
        Err(e) => return Err(e.into()),
    };
    if bad > 0 {
        tracing::warn!(
            entries = bad,
            "registry entries that do not decode were skipped"
        );
    }
    let mut members: Vec<Member> = entries
        .iter()
        .filter_map(|e| {
            let id = NodeId::new(
                &e.source.cluster,
                e.source.group.as_deref()?,
                e.source.node.as_deref()?,
            )
            .ok()?;
            Some(Member {
                fresh: fresh(e),
                seen_ms: Some(e.seen_ms),
                id,
            })
        })
        .filter(|m| target.includes(&m.id))
        .collect();
    if let (Some(c), Some(g), Some(n)) = (&target.cluster, &target.group, &target.node) {
        if members.is_empty() {
            members.push(Member {
                id: NodeId::new(c, g, n)?,
                seen_ms: None,
                fresh: false,
            });
        }
    }
    members.sort_by_key(|m| m.id.to_string());
    Ok(members)
}

fn batch_size(spec: Option<&str>, total: usize) -> anyhow::Result<usize> {
    let Some(s) = spec else {
        return Ok(total.max(1));
    };
    let n = if let Some(p) = s.strip_suffix('%') {
        let pct: f64 = p.trim().parse().context("--batch N or N%")?;
        if !(pct > 0.0 && pct <= 100.0) {
            bail!("--batch percentage must be in (0, 100]");
        }
        ((total as f64) * pct / 100.0).ceil() as usize
    } else {
        s.trim().parse::<usize>().context("--batch N or N%")?
    };
    if n == 0 {
        bail!("--batch must be at least 1");
    }
    Ok(n.min(total.max(1)))
}

/// Sends one signed request per member to its own command subject, all at once, replies to one
/// private inbox, and waits for every answer or the deadline.
#[allow(clippy::too_many_arguments)]
async fn send_batch(
    client: &async_nats::Client,
    subjects: &gridmon_nats::Subjects,
    config: &Config,
    args: &CtlArgs,
    op: Op,
    key: Option<&nkeys::KeyPair>,
    members: &[Member],
    timeout: Duration,
) -> anyhow::Result<Vec<NodeResult>> {
    let inbox = client.new_inbox();
    let mut sub = client
        .subscribe(format!("{inbox}.*"))
        .await
        .context("subscribing to the reply inbox")?;
    let lifetime = i64::try_from(config.commands.expiry.as_millis()).unwrap_or(60_000);
    let issuer = key
        .map(|k| k.public_key())
        .unwrap_or_else(|| std::env::var("USER").unwrap_or_else(|_| "gridmon-ctl".into()));
    let mut sent_at = HashMap::with_capacity(members.len());
    for (i, m) in members.iter().enumerate() {
        let mut body =
            CommandBody::new(op, Target::node(&m.id), issuer.clone(), now_ms(), lifetime);
        body.program = args.program.clone();
        body.version = args.version.clone();
        body.lines = args.lines;
        body.stream = args.stream.clone();
        body.on_behalf_of = args.on_behalf_of.clone();
        body.on = match op {
            Op::Degrade => Some(!args.off),
            Op::Shutdown if args.poweroff => Some(true),
            _ => None,
        };
        let payload = encode_request(&body, key, Encoding::MsgPack)?;
        let subject = subjects.family(Family::Cmd, &Scope::Node(m.id.clone()));
        let reply = format!("{inbox}.{i}");
        client
            .publish_with_reply(subject, reply, payload.into())
            .await
            .context("sending a command")?;
        sent_at.insert(i, Instant::now());
    }
    client.flush().await.context("sending commands")?;
    let mut replies: HashMap<usize, (CommandReply, u64)> = HashMap::with_capacity(members.len());
    let deadline = tokio::time::Instant::now() + timeout;
    let mut absent = std::collections::HashSet::new();
    while replies.len() + absent.len() < members.len() {
        let msg = match tokio::time::timeout_at(deadline, sub.next()).await {
            Ok(Some(m)) => m,
            Ok(None) | Err(_) => break,
        };
        let Some(i) = msg
            .subject
            .rsplit('.')
            .next()
            .and_then(|t| t.parse::<usize>().ok())
            .filter(|i| *i < members.len())
        else {
            continue;
        };
        // "No responders" (status 503, empty): nobody is subscribed there; the node is absent,
        // which the registry then calls offline or no answer.
        if msg.payload.is_empty() {
            absent.insert(i);
            continue;
        }
        let rtt = sent_at
            .get(&i)
            .map(|t| u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        match gridmon_nats::wire::decode::<CommandReply>(&msg.payload, Kind::CommandReply) {
            Ok(Envelope { body, .. }) => {
                replies.insert(i, (body, rtt));
            }
            Err(e) => {
                let bad = CommandReply {
                    ok: false,
                    error: Some(ErrorKind::Failed),
                    message: format!("reply does not decode: {e}"),
                    ..Default::default()
                };
                replies.insert(i, (bad, rtt));
            }
        }
    }
    let _ = sub.unsubscribe().await;
    Ok(members
        .iter()
        .enumerate()
        .map(|(i, m)| match replies.remove(&i) {
            Some((reply, rtt)) => NodeResult {
                node: m.id.to_string(),
                outcome: if reply.ok {
                    Outcome::Ok
                } else {
                    Outcome::Failed
                },
                error: reply.error,
                message: reply.message.clone(),
                programs: reply.programs.clone(),
                logs: reply.logs.clone(),
                rtt_us: Some(rtt),
                seen_ms: m.seen_ms,
                reply: Some(reply),
            },
            None => NodeResult {
                node: m.id.to_string(),
                outcome: if m.fresh {
                    Outcome::NoAnswer
                } else {
                    Outcome::Offline
                },
                error: None,
                message: if m.fresh {
                    format!("no answer within {}", humantime::format_duration(timeout))
                } else {
                    "not seen recently".into()
                },
                programs: Vec::new(),
                logs: Vec::new(),
                reply: None,
                rtt_us: None,
                seen_ms: m.seen_ms,
            },
        })
        .collect())
}

fn print_table(report: &Report, halted: bool) {
    println!("{:<32} {:<10} {:<40} MESSAGE", "NODE", "RESULT", "PROGRAMS");
    for r in &report.results {
        let programs = r
            .programs
            .iter()
            .map(|p| match &p.version {
                Some(v) => format!("{}={}@{v}", p.name, p.state.as_str()),
                None => format!("{}={}", p.name, p.state.as_str()),
            })
            .collect::<Vec<_>>()
            .join(",");
        let mut msg = r.message.clone();
        if let Some(k) = r.error {
            msg = format!("{}: {msg}", k.as_str());
        }
        println!(
            "{:<32} {:<10} {:<40} {}",
            r.node,
            r.outcome.as_str(),
            programs,
            msg
        );
        for line in &r.logs {
            println!("    {line}");
        }
    }
    let s = &report.summary;
    println!(
        "{} {}: {} targets, {} answered ({} ok, {} failed), {} offline, {} no answer, {} skipped{}",
        report.op,
        report.target,
        s.targets,
        s.answered,
        s.ok,
        s.failed,
        s.offline,
        s.no_answer,
        s.skipped,
        if halted {
            " (halted after a failed batch)"
        } else {
            ""
        }
    );
}

/// `gridmon keygen`: a new operator key pair; the seed goes to `out` (0600), the public key to
/// stdout with the config lines that grant it.
pub fn keygen(args: &KeygenArgs) -> anyhow::Result<()> {
    let kp = write_key(&args.out)?;
    println!("{}", kp.public_key());
    eprintln!(
        "wrote the seed to {}. Grant it on the agents with:\n\n[[commands.issuers]]\nname = \"{}\"\nkey = \"{}\"\nops = [\"status\", \"list\", \"logs\", \"restart\"]\nprograms = [\"*\"]\n",
        args.out.display(),
        std::env::var("USER").unwrap_or_else(|_| "operator".into()),
        kp.public_key()
    );
    Ok(())
}

/// Creates a new key pair and writes its seed to `path` (mode 0600; an existing file is an error).
pub fn write_key(path: &Path) -> anyhow::Result<nkeys::KeyPair> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let kp = nkeys::KeyPair::new_user();
    let seed = kp
        .seed()
        .map_err(|e| anyhow::anyhow!("cannot encode the seed: {e}"))?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {} (it must not exist yet)", path.display()))?;
    writeln!(
        f,
        "# gridmon operator key; public key {}\n{seed}",
        kp.public_key()
    )?;
    f.sync_all()?;
    Ok(kp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_sizes() {
        let check = |spec: Option<&str>, total, want: Option<usize>| {
            assert_eq!(batch_size(spec, total).ok(), want, "{spec:?} of {total}");
        };
        check(None, 5, Some(5));
        check(Some("2"), 5, Some(2));
        check(Some("10"), 5, Some(5));
        check(Some("34%"), 3, Some(2));
        check(Some("100%"), 7, Some(7));
        check(Some("1%"), 1000, Some(10));
        check(Some("0"), 5, None);
        check(Some("0%"), 5, None);
        check(Some("150%"), 5, None);
        check(Some("x"), 5, None);
    }
}
