//! The agent's command server: `<p>.cmd.…` requests checked by the guard, run by the supervisor,
//! answered, and audited before and after they act (`docs/commands.md`, `docs/security.md`).
//!
//! Each request is handled on its own task, so a deploy in progress never delays a `status`.
//! Report requests from aggregators arrive on the same subjects and are answered from the
//! latest report.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use futures::StreamExt;
use gridmon_commands::spec::validate_argument;
use gridmon_commands::supervisor::{LogStream, OpError, SupervisorHandle};
use gridmon_nats::command::{
    decode_request, is_command, AuditPhase, AuditRecord, CommandReply, Encoding, ErrorKind, Op,
    ReleaseLine, Request, ENCODING_HEADER,
};
use gridmon_nats::frame::{now_ms, Framer};
use gridmon_nats::guard::{Denial, Guard};
use gridmon_nats::publish::Spool;
use gridmon_nats::wire::{Envelope, Kind, NodeReport, ProgramStatus, Source, SCHEMA_VERSION};
use gridmon_nats::{Family, NodeId, Scope, Subjects};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// Audit records to handle once the reply is on its way, each with whether it is already in the
/// local log. An accepted read-only command's `accepted` record is logged locally before it acts
/// but reaches the bus with its `finished` one: publishing it first would put an audit message and
/// the spool's flush in front of every `status` reply.
type Deferred = Vec<(AuditRecord, bool)>;

/// The encoded bytes of the latest report, for report requests.
pub type LastReport = Arc<Mutex<Option<Bytes>>>;

/// Most lines a `logs` command returns.
const MAX_LOG_LINES: u32 = 10_000;

/// Everything a request handler needs; cloned into each handler task.
#[derive(Clone)]
pub struct Control {
    pub client: async_nats::Client,
    pub subjects: Subjects,
    pub id: NodeId,
    pub guard: Option<Arc<Mutex<Guard>>>,
    pub supervisor: Option<SupervisorHandle>,
    pub framer: Arc<Mutex<Framer>>,
    pub spool: Spool,
    pub audit: Arc<AuditLog>,
    pub last_report: LastReport,
    pub releases: gridmon_nats::config::ReleasesConfig,
    /// `<supervisor.dir>/programs`: one folder of releases per program.
    pub programs_dir: PathBuf,
    pub download_dir: PathBuf,
    pub allow_poweroff: bool,
    pub replies_sent: Arc<std::sync::atomic::AtomicU64>,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control").field("id", &self.id).finish()
    }
}

impl Control {
    /// Subscribes to the node's command subjects (and its group's and cluster's, where report
    /// requests arrive) and serves until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let id = &self.id;
        let scopes = [
            Scope::Cluster {
                cluster: id.cluster.clone(),
            },
            Scope::Group {
                cluster: id.cluster.clone(),
                group: id.group.clone(),
            },
            Scope::Node(id.clone()),
        ];
        let mut subs = Vec::new();
        for s in &scopes {
            subs.push(
                self.client
                    .subscribe(self.subjects.family(Family::Cmd, s))
                    .await
                    .context("subscribing to commands")?,
            );
        }
        let mut requests = futures::stream::select_all(subs);
        let tasks = TaskTracker::new();
        loop {
            let msg = tokio::select! {
                m = requests.next() => match m { Some(m) => m, None => break },
                _ = shutdown.cancelled() => break,
            };
            let Some(reply) = msg.reply.clone() else {
                continue;
            };
            let enc_header = msg
                .headers
                .as_ref()
                .and_then(|h| h.get(ENCODING_HEADER))
                .map(|v| v.as_str().to_string());
            let enc = Encoding::from_header(enc_header.as_deref());
            if matches!(enc, Ok(Encoding::MsgPack)) && !is_command(&msg.payload, Encoding::MsgPack)
            {
                if let Ok(h) = gridmon_nats::wire::peek(&msg.payload) {
                    if h.kind == Kind::ReportRequest {
                        self.answer_report_request(reply).await;
                        continue;
                    }
                }
            }
            if self.guard.is_none() {
                // Commands are switched off here; report requests alone are served.
                continue;
            }
            let this = self.clone();
            tasks.spawn(
                async move {
                    let received = Instant::now();
                    let (bytes, deferred) = match enc {
                        Ok(e) => this.handle(e, &msg.payload, received).await,
                        Err(e) => {
                            let reply = this.refuse_undecodable(&e.to_string(), received);
                            (this.encode_reply(Encoding::MsgPack, reply), Vec::new())
                        }
                    };
                    if let Some(bytes) = bytes {
                        if let Err(e) = this.client.publish(reply, bytes).await {
                            tracing::debug!(error = %e, "could not send a command reply");
                        }
                        this.replies_sent
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    // The command has acted; its remaining audit work need not delay the answer. On
                    // the current-thread runtime the reply reaches the socket only once this task
                    // yields.
                    if !deferred.is_empty() {
                        tokio::task::yield_now().await;
                    }
                    for (rec, logged) in deferred {
                        if logged {
                            this.audit_bus(&rec);
                        } else {
                            this.audit(rec);
                        }
                    }
                }
                .instrument(tracing::debug_span!("command")),
            );
        }
        tasks.close();
        // Commands in flight get a moment to answer; a deploy is abandoned with the agent.
        tokio::time::timeout(Duration::from_secs(5), tasks.wait())
            .await
            .ok();
        Ok(())
    }

    async fn answer_report_request(&self, reply: async_nats::Subject) {
        let bytes = self
            .last_report
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(b) = bytes {
            if let Err(e) = self.client.publish(reply, b).await {
                tracing::debug!(error = %e, "could not answer a report request");
            }
        }
    }

    /// Decodes, checks, audits, runs and answers one request: the reply (`None` only if it cannot
    /// be encoded) and the audit work left for after the reply is on its way (see [`Deferred`]).
    async fn handle(
        &self,
        enc: Encoding,
        payload: &[u8],
        received: Instant,
    ) -> (Option<Bytes>, Deferred) {
        let req = match decode_request(payload, enc) {
            Ok(r) => r,
            Err(e) => {
                let reply = self.refuse_undecodable(&e.to_string(), received);
                return (self.encode_reply(enc, reply), Vec::new());
            }
        };
        let checked = match &self.guard {
            Some(g) => g
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .check(&req, now_ms()),
            None => Err(Denial::NotAllowed(
                "commands are disabled on this node".into(),
            )),
        };
        let auth = match checked {
            Ok(a) => a,
            Err(denial) => {
                let name = self.guard.as_ref().and_then(|g| {
                    g.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .issuer_name(&req.body.issuer)
                });
                let mut rec = self.record(&req, AuditPhase::Denied, name, received);
                rec.error = Some(ErrorKind::Denied);
                rec.message = denial.to_string();
                self.audit(rec);
                tracing::warn!(op = %req.body.op, issuer = %req.body.issuer, reason = %denial, "command denied");
                let reply = reply_err(&req, ErrorKind::Denied, denial.to_string(), received);
                return (self.encode_reply(enc, reply), Vec::new());
            }
        };
        let mut rec = self.record(
            &req,
            AuditPhase::Accepted,
            auth.issuer_name.clone(),
            received,
        );
        rec.signed = auth.signed;
        rec.ok = true;
        let (kind, message) = match self.validate(&req) {
            Ok(()) => (None, String::new()),
            Err((k, m)) => (Some(k), m),
        };
        if let Some(kind) = kind {
            // Refused after the checks (bad arguments, unknown program): one record, not two.
            rec.phase = AuditPhase::Denied;
            rec.ok = false;
            rec.error = Some(kind);
            rec.message = message.clone();
            self.audit(rec);
            let reply = reply_err(&req, kind, message, received);
            return (self.encode_reply(enc, reply), Vec::new());
        }
        let mut deferred = Vec::with_capacity(2);
        if req.body.op.is_mutating() {
            self.audit(rec.clone());
        } else {
            // In the local log before it acts; on the bus after the reply, with `finished`.
            self.audit.write(&self.id, &rec);
            deferred.push((rec.clone(), true));
        }
        let mut reply = self.run_op(&req).await;
        reply.duration_us = micros(received);
        rec.phase = AuditPhase::Finished;
        rec.ok = reply.ok;
        rec.error = reply.error;
        rec.message = reply.message.clone();
        rec.duration_us = reply.duration_us;
        deferred.push((rec, false));
        (self.encode_reply(enc, reply), deferred)
    }

    /// Arguments: the program must be configured, and nothing may look like shell syntax.
    fn validate(&self, req: &Request) -> Result<(), (ErrorKind, String)> {
        let b = &req.body;
        let invalid = |m: String| Err((ErrorKind::Invalid, m));
        if b.op == Op::Unknown {
            return invalid("unknown operation".into());
        }
        for (name, value) in [
            ("program", &b.program),
            ("version", &b.version),
            ("stream", &b.stream),
        ] {
            if let Some(v) = value {
                if let Err(e) = validate_argument(v) {
                    return invalid(format!("{name}: {e}"));
                }
            }
        }
        if let Some(v) = &b.version {
            if let Err(e) = gridmon_commands::release::validate_version(v) {
                return invalid(format!("version: {e}"));
            }
        }
        if let Some(s) = &b.stream {
            if !matches!(s.as_str(), "stdout" | "stderr" | "both") {
                return invalid("stream: stdout, stderr or both".into());
            }
        }
        if b.lines.is_some_and(|n| n > MAX_LOG_LINES) {
            return invalid(format!("lines: at most {MAX_LOG_LINES}"));
        }
        if matches!(b.op, Op::Deploy | Op::Upgrade) && b.version.is_none() {
            return invalid(format!("{} needs a version", b.op));
        }
        if b.op == Op::Degrade && b.on.is_none() {
            return invalid("degrade needs on (true or false)".into());
        }
        match &b.program {
            None if b.op.needs_program() => invalid(format!("{} needs a program", b.op)),
            Some(p) => {
                let known = self
                    .supervisor
                    .as_ref()
                    .is_some_and(|s| s.programs().iter().any(|n| n == p));
                if known {
                    Ok(())
                } else {
                    Err((
                        ErrorKind::UnknownProgram,
                        format!("no program {p:?} is configured on {}", self.id),
                    ))
                }
            }
            None => Ok(()),
        }
    }

    async fn run_op(&self, req: &Request) -> CommandReply {
        let b = &req.body;
        let mut reply = CommandReply {
            ok: true,
            op: b.op,
            program: b.program.clone(),
            request_id: b.nonce.clone(),
            ..Default::default()
        };
        let program = b.program.as_deref().unwrap_or_default();
        let sup = self.supervisor.as_ref();
        let one = |r: Result<ProgramStatus, OpError>| r.map(|s| vec![s]);
        let result: Result<Vec<ProgramStatus>, OpError> = match (b.op, sup) {
            (Op::Collect, _) => {
                reply.report = self.latest_report();
                if reply.report.is_none() {
                    Err(OpError::Failed("no report has been made yet".into()))
                } else {
                    Ok(Vec::new())
                }
            }
            (Op::Status | Op::List | Op::Shutdown, None) => Ok(Vec::new()),
            (_, None) => Err(OpError::UnknownProgram(program.into())),
            (Op::Status, Some(s)) => s.status(b.program.as_deref()).await,
            (Op::List, Some(s)) => {
                reply.releases = self.release_lines(s);
                s.status(None).await
            }
            (Op::Start, Some(s)) => one(s.start(program).await),
            (Op::Stop, Some(s)) => one(s.stop(program).await),
            (Op::Restart, Some(s)) => one(s.restart(program).await),
            (Op::Degrade, Some(s)) => one(s.degrade(program, b.on.unwrap_or(true)).await),
            (Op::Rollback, Some(s)) => one(s.rollback(program, b.version.clone()).await),
            (Op::Deploy | Op::Upgrade, Some(s)) => {
                let version = b.version.clone().unwrap_or_default();
                one(self.deploy(s, program, &version, b.op == Op::Upgrade).await)
            }
            (Op::Logs, Some(s)) => {
                let stream = match b.stream.as_deref() {
                    Some("stdout") => LogStream::Stdout,
                    Some("stderr") => LogStream::Stderr,
                    _ => LogStream::Both,
                };
                match s.logs(program, stream, b.lines.unwrap_or(100)).await {
                    Ok(lines) => {
                        reply.logs = lines;
                        s.status(Some(program)).await
                    }
                    Err(e) => Err(e),
                }
            }
            (Op::Shutdown, Some(s)) => s.shutdown().await,
            (Op::Unknown, _) => Err(OpError::Invalid("unknown operation".into())),
        };
        match result {
            Ok(programs) => reply.programs = programs,
            Err(e) => {
                reply.ok = false;
                reply.error = Some(error_kind(&e));
                reply.message = e.to_string();
                if let (Some(s), Some(p)) = (sup, b.program.as_deref()) {
                    reply.programs = s.status(Some(p)).await.unwrap_or_default();
                }
            }
        }
        if b.op == Op::Shutdown && reply.ok && b.on == Some(true) {
            self.power_off(&mut reply).await;
        }
        reply
    }

    async fn deploy(
        &self,
        sup: &SupervisorHandle,
        program: &str,
        version: &str,
        upgrade: bool,
    ) -> Result<ProgramStatus, OpError> {
        let js = async_nats::jetstream::new(self.client.clone());
        let fetched =
            crate::release::fetch(&js, &self.releases, program, version, &self.download_dir)
                .await
                .map_err(|e| OpError::Failed(format!("fetching {program} {version}: {e}")))?;
        let result = sup
            .deploy(
                program,
                version,
                fetched.path.clone(),
                fetched.sha256_hex.clone(),
                upgrade,
            )
            .await;
        if let Err(e) = tokio::fs::remove_file(&fetched.path).await {
            tracing::debug!(error = %e, "could not remove a fetched artifact");
        }
        result
    }

    async fn power_off(&self, reply: &mut CommandReply) {
        if !self.allow_poweroff {
            reply.ok = false;
            reply.error = Some(ErrorKind::Denied);
            reply.message =
                "programs drained; power-off is not allowed by supervisor.allow_poweroff".into();
            return;
        }
        tracing::warn!("power-off requested by command after the drain");
        match gridmon_commands::child::command("systemctl")
            .arg("poweroff")
            .status()
            .await
        {
            Ok(s) if s.success() => reply.message = "drained; powering off".into(),
            Ok(s) => {
                reply.ok = false;
                reply.error = Some(ErrorKind::Failed);
                reply.message = format!("systemctl poweroff: {s}");
            }
            Err(e) => {
                reply.ok = false;
                reply.error = Some(ErrorKind::Failed);
                reply.message = format!("systemctl poweroff: {e}");
            }
        }
    }

    fn release_lines(&self, sup: &SupervisorHandle) -> Vec<ReleaseLine> {
        let mut out = Vec::new();
        for program in sup.programs() {
            let r = gridmon_commands::release::Releases::new(self.programs_dir.join(&program), 1);
            for info in r.list().unwrap_or_default() {
                out.push(ReleaseLine {
                    program: program.clone(),
                    version: info.version,
                    installed_ms: info.installed_ms,
                    current: info.current,
                });
            }
        }
        out
    }

    fn latest_report(&self) -> Option<NodeReport> {
        let bytes = self
            .last_report
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()?;
        gridmon_nats::wire::decode::<NodeReport>(&bytes, Kind::NodeReport)
            .ok()
            .map(|e| e.body)
    }

    fn record(
        &self,
        req: &Request,
        phase: AuditPhase,
        issuer_name: Option<String>,
        received: Instant,
    ) -> AuditRecord {
        let b = &req.body;
        let mut args = Vec::new();
        if let Some(v) = &b.version {
            args.push(format!("version={v}"));
        }
        if let Some(v) = b.on {
            args.push(format!("on={v}"));
        }
        if let Some(v) = b.lines {
            args.push(format!("lines={v}"));
        }
        if let Some(v) = &b.stream {
            args.push(format!("stream={v}"));
        }
        AuditRecord {
            phase,
            request_id: b.nonce.clone(),
            issuer: b.issuer.clone(),
            issuer_name,
            on_behalf_of: b.on_behalf_of.clone(),
            signed: req.sig.is_some(),
            op: b.op.as_str().into(),
            program: b.program.clone(),
            args: args.join(" "),
            target: b.target.to_string(),
            ok: false,
            error: None,
            message: String::new(),
            duration_us: micros(received),
        }
    }

    fn refuse_undecodable(&self, why: &str, received: Instant) -> CommandReply {
        self.audit(AuditRecord {
            phase: AuditPhase::Denied,
            op: "unknown".into(),
            error: Some(ErrorKind::Invalid),
            message: why.into(),
            duration_us: micros(received),
            ..Default::default()
        });
        CommandReply {
            ok: false,
            error: Some(ErrorKind::Invalid),
            message: why.into(),
            duration_us: micros(received),
            ..Default::default()
        }
    }

    /// Writes an audit record locally, then queues it for `<p>.audit.…` through the spool (it
    /// waits there while the bus is away).
    fn audit(&self, rec: AuditRecord) {
        self.audit.write(&self.id, &rec);
        self.audit_bus(&rec);
    }

    /// Queues an audit record for `<p>.audit.…` (already in the local log).
    fn audit_bus(&self, rec: &AuditRecord) {
        let subject = self
            .subjects
            .family(Family::Audit, &Scope::Node(self.id.clone()));
        let framed = self.framer.lock().unwrap_or_else(|p| p.into_inner()).frame(
            Kind::Audit,
            subject,
            now_ms(),
            rec,
        );
        match framed {
            Ok(out) => self.spool.push(out),
            Err(e) => tracing::error!(error = %e, "cannot encode an audit record"),
        }
    }

    fn encode_reply(&self, enc: Encoding, body: CommandReply) -> Option<Bytes> {
        let env = Envelope {
            schema: SCHEMA_VERSION,
            kind: Kind::CommandReply,
            source: Source::from(&self.id),
            ts_ms: now_ms(),
            run_id: self
                .framer
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .run_id(),
            seq: self
                .replies_sent
                .load(std::sync::atomic::Ordering::Relaxed)
                .wrapping_add(1),
            body,
        };
        let bytes = match enc {
            Encoding::MsgPack => gridmon_nats::wire::encode(&env).map_err(|e| e.to_string()),
            Encoding::Json => serde_json::to_vec(&env).map_err(|e| e.to_string()),
        };
        match bytes {
            Ok(b) => Some(Bytes::from(b)),
            Err(e) => {
                tracing::error!(error = %e, "cannot encode a command reply");
                None
            }
        }
    }
}

fn reply_err(req: &Request, kind: ErrorKind, message: String, received: Instant) -> CommandReply {
    CommandReply {
        duration_us: micros(received),
        ..CommandReply::error(&req.body, kind, message)
    }
}

fn error_kind(e: &OpError) -> ErrorKind {
    match e {
        OpError::UnknownProgram(_) => ErrorKind::UnknownProgram,
        OpError::Invalid(_) => ErrorKind::Invalid,
        OpError::Conflict(_) => ErrorKind::Conflict,
        OpError::Failed(_) | OpError::Unavailable => ErrorKind::Failed,
    }
}

fn micros(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// The local audit log: one JSON object per line, appended; rotated once at 64 MiB.
#[derive(Debug)]
pub struct AuditLog {
    path: Option<PathBuf>,
    /// The open file and its size (kept here: no `stat` per record).
    file: Mutex<Option<(std::fs::File, u64)>>,
}

const AUDIT_ROTATE_BYTES: u64 = 64 << 20;

impl AuditLog {
    pub fn open(path: Option<PathBuf>) -> anyhow::Result<Self> {
        let file = match &path {
            Some(p) => {
                if let Some(d) = p.parent() {
                    std::fs::create_dir_all(d)
                        .with_context(|| format!("creating {}", d.display()))?;
                }
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .with_context(|| format!("opening the audit log {}", p.display()))?;
                let size = f.metadata().map(|m| m.len()).unwrap_or(0);
                Some((f, size))
            }
            None => None,
        };
        Ok(Self {
            path,
            file: Mutex::new(file),
        })
    }

    fn write(&self, id: &NodeId, rec: &AuditRecord) {
        use std::io::Write;
        let Some(path) = &self.path else { return };
        #[derive(serde::Serialize)]
        struct Line<'a> {
            ts_ms: i64,
            node: String,
            #[serde(flatten)]
            rec: &'a AuditRecord,
        }
        let Ok(mut text) = serde_json::to_string(&Line {
            ts_ms: now_ms(),
            node: id.to_string(),
            rec,
        }) else {
            return;
        };
        text.push('\n');
        let mut guard = self.file.lock().unwrap_or_else(|p| p.into_inner());
        let too_big = guard
            .as_ref()
            .is_some_and(|(_, size)| *size > AUDIT_ROTATE_BYTES);
        if too_big {
            let _ = std::fs::rename(path, path.with_extension("log.1"));
            *guard = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .ok()
                .map(|f| (f, 0));
        }
        if let Some((f, size)) = guard.as_mut() {
            match f.write_all(text.as_bytes()) {
                Ok(()) => *size += text.len() as u64,
                Err(e) => tracing::warn!(error = %e, "cannot write the local audit log"),
            }
        }
    }
}
