//! `gridmon simulate --commands`: every simulated node registers itself in the registry and
//! answers commands on its own `<p>.cmd.<c>.<g>.<n>` subject as an agent does for read-only
//! operations, so `gridmon ctl` fan-out can be exercised against a thousand nodes.
//!
//! One wildcard subscription serves the whole fleet; each node has its own [`Guard`] (issuers
//! from `[commands]`, nonces in memory), so signatures, targets, expiry, replays and policy are
//! checked for real. Read-only operations answer from the node's simulated programs; mutating
//! ones are accepted or denied like an agent's, then fail with "simulated node". Nothing is
//! audited. Silent nodes neither answer nor refresh their registry entry.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Context as _;
use async_nats::Client;
use futures::StreamExt;
use gridmon_nats::command::{
    decode_request, is_command, CommandReply, Encoding, ErrorKind, Op, Request, ENCODING_HEADER,
};
use gridmon_nats::config::CommandsConfig;
use gridmon_nats::frame::now_ms;
use gridmon_nats::guard::{Guard, NonceStore};
use gridmon_nats::wire::{self, Envelope, Kind, ProgramStatus, Source, SCHEMA_VERSION};
use gridmon_nats::{Family, NodeId, Parsed, Scope, Subjects};
use tokio_util::sync::CancellationToken;

use super::Latest;

/// Each node's supervised programs as of its latest report; `None` while the node is silent.
#[derive(Debug, Clone)]
pub struct Programs(Arc<Mutex<Vec<Option<Vec<ProgramStatus>>>>>);

impl Programs {
    pub fn new(initial: Vec<Option<Vec<ProgramStatus>>>) -> Self {
        Self(Arc::new(Mutex::new(initial)))
    }

    pub fn set(&self, updates: Vec<(usize, Option<Vec<ProgramStatus>>)>) {
        let mut v = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for (i, p) in updates {
            if let Some(slot) = v.get_mut(i) {
                *slot = p;
            }
        }
    }

    fn of(&self, i: usize) -> Option<Vec<ProgramStatus>> {
        let v = self.0.lock().unwrap_or_else(|p| p.into_inner());
        v.get(i).cloned().flatten()
    }

    /// The names of the programs of every node that is not silent, by node index.
    pub fn names(&self) -> Vec<(usize, Vec<String>)> {
        let v = self.0.lock().unwrap_or_else(|p| p.into_inner());
        v.iter()
            .enumerate()
            .filter_map(|(i, p)| {
                p.as_ref()
                    .map(|p| (i, p.iter().map(|s| s.name.clone()).collect()))
            })
            .collect()
    }
}

/// The command side of one simulated node.
#[derive(Debug)]
struct NodeState {
    id: NodeId,
    guard: Guard,
    /// Replies sent, for the envelope's `seq`.
    seq: u64,
}

/// Answers commands for the whole fleet until `stop`; returns the number of replies sent.
pub struct Responder {
    client: Client,
    subjects: Subjects,
    nodes: Vec<NodeState>,
    /// `cluster.group.node` to node index.
    index: HashMap<NodeId, usize>,
    programs: Programs,
    latest: Latest,
    run_id: u64,
}

impl std::fmt::Debug for Responder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Responder")
            .field("nodes", &self.nodes.len())
            .finish()
    }
}

impl Responder {
    pub fn new(
        client: Client,
        subjects: Subjects,
        ids: &[NodeId],
        cfg: &CommandsConfig,
        programs: Programs,
        latest: Latest,
        run_id: u64,
    ) -> Self {
        let nodes = ids
            .iter()
            .map(|id| NodeState {
                id: id.clone(),
                guard: Guard::new(id.clone(), cfg, NonceStore::in_memory()),
                seq: 0,
            })
            .collect();
        let index = ids
            .iter()
            .enumerate()
            .map(|(i, id)| (id.clone(), i))
            .collect();
        Self {
            client,
            subjects,
            nodes,
            index,
            programs,
            latest,
            run_id,
        }
    }

    /// Subscribes to `<p>.cmd.>` (group and cluster subjects are skipped: report requests there
    /// are the group responder's) and serves until `stop`.
    pub async fn run(mut self, stop: CancellationToken) -> anyhow::Result<u64> {
        let subject = self.subjects.family_all(Family::Cmd);
        let mut sub = self
            .client
            .subscribe(subject.clone())
            .await
            .with_context(|| format!("cannot subscribe to {subject}"))?;
        let mut replies = 0u64;
        let mut ignored = 0u64;
        loop {
            let msg = tokio::select! {
                m = sub.next() => match m { Some(m) => m, None => break },
                _ = stop.cancelled() => break,
            };
            match self.answer(msg).await {
                Some(n) => replies += n,
                None => ignored += 1,
            }
        }
        tracing::debug!(replies, ignored, "command responder stopped");
        Ok(replies)
    }

    /// Answers one message; `None` when it is not for a simulated node (or the node is silent).
    async fn answer(&mut self, msg: async_nats::Message) -> Option<u64> {
        let reply_to = msg.reply.clone()?;
        let Ok(Parsed::Other(Family::Cmd, Scope::Node(id))) = self.subjects.parse(&msg.subject)
        else {
            return None;
        };
        let i = *self.index.get(&id)?;
        let programs = self.programs.of(i)?;
        let enc_header = msg
            .headers
            .as_ref()
            .and_then(|h| h.get(ENCODING_HEADER))
            .map(|v| v.as_str().to_string());
        let enc = Encoding::from_header(enc_header.as_deref());
        if matches!(enc, Ok(Encoding::MsgPack)) && !is_command(&msg.payload, Encoding::MsgPack) {
            // A report request on the node's own subject: its latest report, byte for byte.
            let h = wire::peek(&msg.payload).ok()?;
            if h.kind != Kind::ReportRequest {
                return None;
            }
            let report = self.latest.of(&[i]).pop()?;
            return match self.client.publish(reply_to, report.payload).await {
                Ok(()) => Some(1),
                Err(e) => {
                    tracing::debug!(error = %e, "cannot answer a report request");
                    Some(0)
                }
            };
        }
        let received = Instant::now();
        let (enc, reply) = match enc {
            Ok(enc) => (enc, self.handle(i, enc, &msg.payload, programs, received)),
            Err(e) => (
                Encoding::MsgPack,
                refused(ErrorKind::Invalid, e.to_string()),
            ),
        };
        let bytes = self.encode_reply(i, enc, reply)?;
        match self.client.publish(reply_to, bytes.into()).await {
            Ok(()) => Some(1),
            Err(e) => {
                tracing::debug!(error = %e, "cannot send a command reply");
                Some(0)
            }
        }
    }

    fn handle(
        &mut self,
        i: usize,
        enc: Encoding,
        payload: &[u8],
        programs: Vec<ProgramStatus>,
        received: Instant,
    ) -> CommandReply {
        let req = match decode_request(payload, enc) {
            Ok(r) => r,
            Err(e) => return refused(ErrorKind::Invalid, e.to_string()),
        };
        let Some(node) = self.nodes.get_mut(i) else {
            return refused(ErrorKind::Failed, "no such simulated node".into());
        };
        let mut reply = match node.guard.check(&req, now_ms()) {
            Ok(_) => run_op(&req, programs, &node.id),
            Err(denial) => CommandReply::error(&req.body, ErrorKind::Denied, denial.to_string()),
        };
        reply.duration_us = u64::try_from(received.elapsed().as_micros()).unwrap_or(u64::MAX);
        reply
    }

    fn encode_reply(&mut self, i: usize, enc: Encoding, body: CommandReply) -> Option<Vec<u8>> {
        let node = self.nodes.get_mut(i)?;
        node.seq += 1;
        let env = Envelope {
            schema: SCHEMA_VERSION,
            kind: Kind::CommandReply,
            source: Source::from(&node.id),
            ts_ms: now_ms(),
            run_id: self.run_id,
            seq: node.seq,
            body,
        };
        let bytes = match enc {
            Encoding::MsgPack => wire::encode(&env).map_err(|e| e.to_string()),
            Encoding::Json => serde_json::to_vec(&env).map_err(|e| e.to_string()),
        };
        match bytes {
            Ok(b) => Some(b),
            Err(e) => {
                tracing::error!(error = %e, "cannot encode a command reply");
                None
            }
        }
    }
}

/// What an accepted command does on a simulated node.
fn run_op(req: &Request, programs: Vec<ProgramStatus>, id: &NodeId) -> CommandReply {
    let b = &req.body;
    if b.op == Op::Unknown {
        return CommandReply::error(&req.body, ErrorKind::Invalid, "unknown operation".into());
    }
    if let Some(p) = &b.program {
        if !programs.iter().any(|s| &s.name == p) {
            return CommandReply::error(
                &req.body,
                ErrorKind::UnknownProgram,
                format!("no program {p:?} is configured on {id}"),
            );
        }
    }
    let mut reply = CommandReply {
        ok: true,
        op: b.op,
        program: b.program.clone(),
        request_id: b.nonce.clone(),
        ..Default::default()
    };
    match b.op {
        Op::Status | Op::List | Op::Logs => {
            reply.programs = match &b.program {
                Some(p) => programs.into_iter().filter(|s| &s.name == p).collect(),
                None => programs,
            };
        }
        _ => {
            let mut r = CommandReply::error(&req.body, ErrorKind::Failed, "simulated node".into());
            if let Some(p) = &b.program {
                r.programs = programs.into_iter().filter(|s| &s.name == p).collect();
            }
            return r;
        }
    }
    reply
}

fn refused(kind: ErrorKind, message: String) -> CommandReply {
    CommandReply {
        ok: false,
        error: Some(kind),
        message,
        ..Default::default()
    }
}
