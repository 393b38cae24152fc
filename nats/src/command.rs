//! The command protocol: signed requests to an agent's supervisor, replies, audit records and the
//! node registry. Field by field in `docs/commands.md`.
//!
//! A request is a small map around the **body**, the part the issuer signs:
//!
//! ```text
//! { schema: 1, kind: "command", body: <bytes of the encoded CommandBody> | <CommandBody map>, sig: <64 bytes>? }
//! ```
//!
//! The signature covers [`SIGNING_CONTEXT`] followed by the body's bytes exactly as sent, so a
//! verifier never re-encodes anything. An unsigned request (read-only operations, when allowed)
//! may carry the body inline as a map. MessagePack is the default; a request whose
//! [`ENCODING_HEADER`] says `json` is the same structure in JSON, with `body` a string of JSON text
//! (or an object when unsigned) and `sig` in base64url; the reply then comes back in JSON too.

use std::fmt;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::wire::{NodeReport, ProgramStatus, Source, SCHEMA_VERSION};

/// Prepended to the body bytes before signing: a command signature can never be mistaken for a
/// signature over anything else an operator key signs.
pub const SIGNING_CONTEXT: &[u8] = b"gridmon-command-v1\n";

/// NATS header naming the request's encoding: `json` or `msgpack` (the default when absent).
pub const ENCODING_HEADER: &str = "Gridmon-Encoding";

/// The longest expiry an agent accepts (issue time to expiry).
pub const MAX_LIFETIME_MS: i64 = 60_000;

/// What a command asks for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// The programs' states (all, or `program`).
    Status,
    /// The configured programs and their releases.
    List,
    Start,
    Stop,
    Restart,
    /// Fetch `version` from the release bucket, switch to it, restart.
    Deploy,
    /// Like deploy, gated on health; rolled back automatically if health fails.
    Upgrade,
    /// Back to `version`, or to the previous release.
    Rollback,
    /// `on: true` enters the degraded mode, `on: false` leaves it.
    Degrade,
    /// Drains the node: every program stopped gracefully in the configured order.
    Shutdown,
    /// The last `lines` lines of a program's output.
    Logs,
    /// The node's latest report.
    Collect,
    #[default]
    #[serde(other)]
    Unknown,
}

impl Op {
    pub const ALL: [Op; 12] = [
        Op::Status,
        Op::List,
        Op::Start,
        Op::Stop,
        Op::Restart,
        Op::Deploy,
        Op::Upgrade,
        Op::Rollback,
        Op::Degrade,
        Op::Shutdown,
        Op::Logs,
        Op::Collect,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Status => "status",
            Self::List => "list",
            Self::Start => "start",
            Self::Stop => "stop",
            Self::Restart => "restart",
            Self::Deploy => "deploy",
            Self::Upgrade => "upgrade",
            Self::Rollback => "rollback",
            Self::Degrade => "degrade",
            Self::Shutdown => "shutdown",
            Self::Logs => "logs",
            Self::Collect => "collect",
            Self::Unknown => "unknown",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.as_str() == s)
    }

    /// Operations that change something; these always need a signature.
    pub const fn is_mutating(self) -> bool {
        !matches!(
            self,
            Self::Status | Self::List | Self::Logs | Self::Collect | Self::Unknown
        )
    }

    /// Operations that act on one program (and therefore need `program`).
    pub const fn needs_program(self) -> bool {
        matches!(
            self,
            Self::Start
                | Self::Stop
                | Self::Restart
                | Self::Deploy
                | Self::Upgrade
                | Self::Rollback
                | Self::Degrade
                | Self::Logs
        )
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who a command is for: a node, or every node of a group, a cluster or the grid.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default)]
pub struct Target {
    /// Absent: the whole grid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

impl Target {
    pub fn node(id: &crate::NodeId) -> Self {
        Self {
            cluster: Some(id.cluster.clone()),
            group: Some(id.group.clone()),
            node: Some(id.node.clone()),
        }
    }

    /// Whether `id` is (within) this target. A target with a lower level but no upper one
    /// (a node without its group) matches nothing: it is ambiguous.
    pub fn includes(&self, id: &crate::NodeId) -> bool {
        let level = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        // A lower level without the ones above it is ambiguous and matches nothing.
        let shape_ok = !matches!(
            (&self.cluster, &self.group, &self.node),
            (None, Some(_), _) | (None, _, Some(_)) | (Some(_), None, Some(_))
        );
        shape_ok
            && level(&self.cluster, &id.cluster)
            && level(&self.group, &id.group)
            && level(&self.node, &id.node)
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.cluster, &self.group, &self.node) {
            (None, _, _) => f.write_str("grid"),
            (Some(c), None, _) => f.write_str(c),
            (Some(c), Some(g), None) => write!(f, "{c}/{g}"),
            (Some(c), Some(g), Some(n)) => write!(f, "{c}/{g}/{n}"),
        }
    }
}

/// The signed part of a command.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CommandBody {
    pub op: Op,
    pub target: Target,
    /// The program acted on (operations on one program; optional for `status`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub program: Option<String>,
    /// Release version for `deploy`, `upgrade` and `rollback`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// `degrade`: true to enter, false to leave the degraded mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on: Option<bool>,
    /// `logs`: how many lines (at most 10,000; default 100).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lines: Option<u32>,
    /// `logs`: `stdout`, `stderr` or `both` (default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    /// The issuer's public key (an nkey, `U…`); for unsigned requests a free-form name.
    pub issuer: String,
    /// When the command was issued and when it stops being valid, ms since the Unix epoch.
    /// `expires_ms - issued_ms` is at most [`MAX_LIFETIME_MS`].
    pub issued_ms: i64,
    pub expires_ms: i64,
    /// A random value, unique per command: a replay is refused.
    pub nonce: String,
    /// Who the issuer acts for (a web user, a pipeline): recorded in the audit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_behalf_of: Option<String>,
}

impl CommandBody {
    /// A body for `op` on `target`, valid for `lifetime` from `now_ms`, with a fresh nonce.
    pub fn new(
        op: Op,
        target: Target,
        issuer: impl Into<String>,
        now_ms: i64,
        lifetime_ms: i64,
    ) -> Self {
        Self {
            op,
            target,
            issuer: issuer.into(),
            issued_ms: now_ms,
            expires_ms: now_ms.saturating_add(lifetime_ms.clamp(1, MAX_LIFETIME_MS)),
            nonce: new_nonce(),
            ..Default::default()
        }
    }
}

/// 128 random bits, hex.
pub fn new_nonce() -> String {
    let b: [u8; 16] = rand::random();
    let mut s = String::with_capacity(32);
    for x in b {
        s.push_str(&format!("{x:02x}"));
    }
    s
}

/// How a request (and its reply) is encoded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Encoding {
    #[default]
    MsgPack,
    Json,
}

impl Encoding {
    /// From the value of [`ENCODING_HEADER`] (absent: MessagePack).
    pub fn from_header(value: Option<&str>) -> Result<Self, CommandError> {
        match value.map(|v| v.trim().to_ascii_lowercase()) {
            None => Ok(Self::MsgPack),
            Some(v) if v.is_empty() || v == "msgpack" => Ok(Self::MsgPack),
            Some(v) if v == "json" => Ok(Self::Json),
            Some(v) => Err(CommandError::Invalid(format!(
                "unknown {ENCODING_HEADER} {v:?} (json or msgpack)"
            ))),
        }
    }
}

/// A decoded request: the body, the exact bytes the signature covers, and the signature.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub body: CommandBody,
    /// The body bytes as received (empty when the body came inline, unsigned).
    pub signed_bytes: Vec<u8>,
    pub sig: Option<Vec<u8>>,
    pub encoding: Encoding,
}

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("unsupported schema version {0} (this build reads {SCHEMA_VERSION})")]
    UnsupportedSchema(u16),
    #[error("cannot encode: {0}")]
    Encode(String),
    #[error("cannot sign: {0}")]
    Sign(String),
}

#[derive(Serialize, Deserialize)]
struct MpRequest {
    schema: u16,
    kind: String,
    body: MpBody,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_bytes")]
    sig: Option<Vec<u8>>,
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum MpBody {
    Signed(#[serde(with = "serde_bytes")] Vec<u8>),
    Inline(Box<CommandBody>),
}

#[derive(Serialize, Deserialize)]
struct JsonRequest {
    schema: u16,
    kind: String,
    body: JsonBody,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sig: Option<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum JsonBody {
    Signed(String),
    Inline(Box<CommandBody>),
}

mod opt_bytes {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(b) => serde_bytes::serialize(b, s),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        Ok(Option::<serde_bytes::ByteBuf>::deserialize(d)?.map(|b| b.into_vec()))
    }
}

const KIND: &str = "command";

fn encode_body(body: &CommandBody, enc: Encoding) -> Result<Vec<u8>, CommandError> {
    match enc {
        Encoding::MsgPack => {
            rmp_serde::to_vec_named(body).map_err(|e| CommandError::Encode(e.to_string()))
        }
        Encoding::Json => serde_json::to_vec(body).map_err(|e| CommandError::Encode(e.to_string())),
    }
}

/// The bytes a signature covers.
pub fn signing_input(body_bytes: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(SIGNING_CONTEXT.len() + body_bytes.len());
    v.extend_from_slice(SIGNING_CONTEXT);
    v.extend_from_slice(body_bytes);
    v
}

/// Encodes a request, signed with `key` when given (its public key should be `body.issuer`).
pub fn encode_request(
    body: &CommandBody,
    key: Option<&nkeys::KeyPair>,
    enc: Encoding,
) -> Result<Vec<u8>, CommandError> {
    let Some(key) = key else {
        return match enc {
            Encoding::MsgPack => rmp_serde::to_vec_named(&MpRequest {
                schema: SCHEMA_VERSION,
                kind: KIND.into(),
                body: MpBody::Inline(Box::new(body.clone())),
                sig: None,
            })
            .map_err(|e| CommandError::Encode(e.to_string())),
            Encoding::Json => serde_json::to_vec(&JsonRequest {
                schema: SCHEMA_VERSION,
                kind: KIND.into(),
                body: JsonBody::Inline(Box::new(body.clone())),
                sig: None,
            })
            .map_err(|e| CommandError::Encode(e.to_string())),
        };
    };
    let bytes = encode_body(body, enc)?;
    let sig = key
        .sign(&signing_input(&bytes))
        .map_err(|e| CommandError::Sign(e.to_string()))?;
    match enc {
        Encoding::MsgPack => rmp_serde::to_vec_named(&MpRequest {
            schema: SCHEMA_VERSION,
            kind: KIND.into(),
            body: MpBody::Signed(bytes),
            sig: Some(sig),
        })
        .map_err(|e| CommandError::Encode(e.to_string())),
        Encoding::Json => {
            let text = String::from_utf8(bytes).map_err(|e| CommandError::Encode(e.to_string()))?;
            serde_json::to_vec(&JsonRequest {
                schema: SCHEMA_VERSION,
                kind: KIND.into(),
                body: JsonBody::Signed(text),
                sig: Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sig)),
            })
            .map_err(|e| CommandError::Encode(e.to_string()))
        }
    }
}

/// Decodes a request. Never panics on arbitrary bytes.
pub fn decode_request(bytes: &[u8], enc: Encoding) -> Result<Request, CommandError> {
    let bad = |what: &str, e: &dyn fmt::Display| CommandError::Invalid(format!("{what}: {e}"));
    match enc {
        Encoding::MsgPack => {
            let r: MpRequest =
                rmp_serde::from_slice(bytes).map_err(|e| bad("malformed request", &e))?;
            check_header(r.schema, &r.kind)?;
            let (body, signed_bytes) = match r.body {
                MpBody::Signed(b) => (
                    rmp_serde::from_slice(&b).map_err(|e| bad("malformed body", &e))?,
                    b,
                ),
                MpBody::Inline(body) => (*body, Vec::new()),
            };
            Ok(Request {
                body,
                signed_bytes,
                sig: r.sig,
                encoding: enc,
            })
        }
        Encoding::Json => {
            let r: JsonRequest =
                serde_json::from_slice(bytes).map_err(|e| bad("malformed request", &e))?;
            check_header(r.schema, &r.kind)?;
            let (body, signed_bytes) = match r.body {
                JsonBody::Signed(text) => (
                    serde_json::from_str(&text).map_err(|e| bad("malformed body", &e))?,
                    text.into_bytes(),
                ),
                JsonBody::Inline(body) => (*body, Vec::new()),
            };
            let sig = match r.sig {
                None => None,
                Some(s) => Some(
                    base64::engine::general_purpose::URL_SAFE_NO_PAD
                        .decode(s.trim_end_matches('='))
                        .map_err(|e| bad("sig is not base64url", &e))?,
                ),
            };
            Ok(Request {
                body,
                signed_bytes,
                sig,
                encoding: enc,
            })
        }
    }
}

fn check_header(schema: u16, kind: &str) -> Result<(), CommandError> {
    if schema != SCHEMA_VERSION {
        return Err(CommandError::UnsupportedSchema(schema));
    }
    if kind != KIND {
        return Err(CommandError::Invalid(format!(
            "kind {kind:?} is not a command"
        )));
    }
    Ok(())
}

/// Whether the first bytes look like a command request rather than another envelope (a
/// `report_request`), without a full decode: both are maps with a `kind`.
pub fn is_command(bytes: &[u8], enc: Encoding) -> bool {
    #[derive(Deserialize)]
    struct K {
        #[serde(default)]
        kind: String,
    }
    match enc {
        Encoding::MsgPack => rmp_serde::from_slice::<K>(bytes).is_ok_and(|k| k.kind == KIND),
        Encoding::Json => serde_json::from_slice::<K>(bytes).is_ok_and(|k| k.kind == KIND),
    }
}

/// Checks the signature of a signed request against `issuer` (a public nkey).
pub fn verify_signature(req: &Request, issuer: &str) -> Result<(), String> {
    let key = nkeys::KeyPair::from_public_key(issuer).map_err(|e| format!("issuer key: {e}"))?;
    verify_signature_with(req, &key)
}

/// [`verify_signature`] with the issuer's key already parsed (parsing decompresses a curve point:
/// about a tenth of the verification; the guard parses each configured key once).
pub fn verify_signature_with(req: &Request, key: &nkeys::KeyPair) -> Result<(), String> {
    let Some(sig) = &req.sig else {
        return Err("unsigned".into());
    };
    if req.signed_bytes.is_empty() {
        return Err("a signed request carries its body as bytes".into());
    }
    key.verify(&signing_input(&req.signed_bytes), sig)
        .map_err(|_| "signature does not verify".to_string())
}

/// Why a command did not succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// Refused by the security checks (unknown issuer, bad signature, wrong target, expired,
    /// replayed, or not allowed by policy).
    Denied,
    /// Malformed, or arguments that fail validation.
    Invalid,
    /// The program is not configured on this node.
    UnknownProgram,
    /// Another operation on the program is in progress.
    Conflict,
    /// Accepted, but the action failed.
    Failed,
    #[serde(other)]
    Unknown,
}

impl ErrorKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Denied => "denied",
            Self::Invalid => "invalid",
            Self::UnknownProgram => "unknown_program",
            Self::Conflict => "conflict",
            Self::Failed => "failed",
            Self::Unknown => "unknown",
        }
    }
}

/// The agent's answer, in an [`Envelope`](crate::wire::Envelope) of kind `command_reply` from the
/// node (in the request's encoding).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CommandReply {
    pub ok: bool,
    /// Set when `ok` is false.
    pub error: Option<ErrorKind>,
    pub message: String,
    pub op: Op,
    pub program: Option<String>,
    /// The request's nonce (empty when the request did not decode).
    pub request_id: String,
    /// The resulting state of the programs concerned (all of them for `status` and `list`).
    pub programs: Vec<ProgramStatus>,
    /// `list`: installed releases per program.
    pub releases: Vec<ReleaseLine>,
    /// `logs`: the lines, oldest first.
    pub logs: Vec<String>,
    /// `collect`: the node's latest report.
    pub report: Option<NodeReport>,
    /// Time the agent spent on the command, µs.
    pub duration_us: u64,
}

impl CommandReply {
    /// A refusal or failure of the command `body`.
    pub fn error(body: &CommandBody, kind: ErrorKind, message: String) -> Self {
        Self {
            ok: false,
            error: Some(kind),
            message,
            op: body.op,
            program: body.program.clone(),
            request_id: body.nonce.clone(),
            ..Default::default()
        }
    }
}

/// One installed release, in a `list` reply.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ReleaseLine {
    pub program: String,
    pub version: String,
    pub installed_ms: i64,
    pub current: bool,
}

/// When an audit record is written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditPhase {
    /// Refused before acting (the only record of a denied command).
    Denied,
    /// Accepted, about to act.
    Accepted,
    /// Done: `ok` or the error.
    Finished,
    #[default]
    #[serde(other)]
    Unknown,
}

impl AuditPhase {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Denied => "denied",
            Self::Accepted => "accepted",
            Self::Finished => "finished",
            Self::Unknown => "unknown",
        }
    }
}

/// One audit record, on `<p>.audit.<cluster>.<group>.<node>` (an envelope of kind `audit`) and
/// in the agent's local audit log; stored in `command_audit`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AuditRecord {
    pub phase: AuditPhase,
    /// The request's nonce; joins the records of one command.
    pub request_id: String,
    /// The issuer's public key as claimed (empty when the request did not decode).
    pub issuer: String,
    /// The issuer's configured name, when known.
    pub issuer_name: Option<String>,
    pub on_behalf_of: Option<String>,
    pub signed: bool,
    pub op: String,
    pub program: Option<String>,
    /// The other arguments, `key=value` separated by spaces.
    pub args: String,
    pub target: String,
    pub ok: bool,
    pub error: Option<ErrorKind>,
    pub message: String,
    /// From receipt to this record, µs.
    pub duration_us: u64,
}

/// The registry: one value per node in a KV bucket, refreshed by the agents, so `gridmon ctl`
/// knows which members a group or cluster is expected to have.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RegistryEntry {
    pub schema: u16,
    pub source: Source,
    /// When the agent last refreshed its entry, ms since the Unix epoch.
    pub seen_ms: i64,
    /// How often it refreshes, ms.
    pub every_ms: u64,
    pub agent_version: String,
    pub programs: Vec<String>,
}

impl RegistryEntry {
    pub fn encode(&self) -> Result<Vec<u8>, CommandError> {
        rmp_serde::to_vec_named(self).map_err(|e| CommandError::Encode(e.to_string()))
    }
    pub fn decode(bytes: &[u8]) -> Result<Self, CommandError> {
        let e: Self =
            rmp_serde::from_slice(bytes).map_err(|e| CommandError::Invalid(e.to_string()))?;
        if e.schema != SCHEMA_VERSION {
            return Err(CommandError::UnsupportedSchema(e.schema));
        }
        Ok(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NodeId;
    use proptest::prelude::*;

    fn body(key: &nkeys::KeyPair) -> CommandBody {
        let id = NodeId::new("c", "g", "n").unwrap();
        let mut b = CommandBody::new(
            Op::Restart,
            Target::node(&id),
            key.public_key(),
            1_000,
            30_000,
        );
        b.program = Some("web".into());
        b
    }

    #[test]
    fn signed_round_trip_in_both_encodings() {
        let key = nkeys::KeyPair::new_user();
        for enc in [Encoding::MsgPack, Encoding::Json] {
            let b = body(&key);
            let bytes = encode_request(&b, Some(&key), enc).unwrap();
            assert!(is_command(&bytes, enc));
            let req = decode_request(&bytes, enc).unwrap();
            assert_eq!(req.body, b);
            verify_signature(&req, &key.public_key()).unwrap();
            let other = nkeys::KeyPair::new_user();
            assert!(verify_signature(&req, &other.public_key()).is_err());
        }
    }

    #[test]
    fn any_flipped_bit_breaks_the_signature_or_the_decode() {
        let key = nkeys::KeyPair::new_user();
        let bytes = encode_request(&body(&key), Some(&key), Encoding::MsgPack).unwrap();
        for i in 0..bytes.len() * 8 {
            let mut b = bytes.clone();
            b[i / 8] ^= 1 << (i % 8);
            if let Ok(req) = decode_request(&b, Encoding::MsgPack) {
                assert!(
                    verify_signature(&req, &key.public_key()).is_err(),
                    "bit {i} flipped and still verifies"
                );
            }
        }
    }

    #[test]
    fn unsigned_inline_body_is_read_in_both_encodings() {
        let key = nkeys::KeyPair::new_user();
        let mut b = body(&key);
        b.op = Op::Status;
        for enc in [Encoding::MsgPack, Encoding::Json] {
            let req = decode_request(&encode_request(&b, None, enc).unwrap(), enc).unwrap();
            assert_eq!(req.body, b);
            assert!(req.sig.is_none() && req.signed_bytes.is_empty());
            assert!(verify_signature(&req, &key.public_key()).is_err());
        }
        // What a script writes by hand.
        let req = decode_request(
            br#"{"schema":1,"kind":"command","body":{"op":"status","target":{"cluster":"c"}}}"#,
            Encoding::Json,
        )
        .unwrap();
        assert_eq!(req.body.op, Op::Status);
    }

    #[test]
    fn targets() {
        let id = NodeId::new("c", "g", "n").unwrap();
        let t = |c: Option<&str>, g: Option<&str>, n: Option<&str>| Target {
            cluster: c.map(Into::into),
            group: g.map(Into::into),
            node: n.map(Into::into),
        };
        assert!(t(None, None, None).includes(&id));
        assert!(t(Some("c"), None, None).includes(&id));
        assert!(t(Some("c"), Some("g"), None).includes(&id));
        assert!(t(Some("c"), Some("g"), Some("n")).includes(&id));
        assert!(!t(Some("c"), Some("g"), Some("m")).includes(&id));
        assert!(!t(Some("d"), None, None).includes(&id));
        assert!(!t(None, None, Some("n")).includes(&id), "ambiguous shape");
        assert!(
            !t(Some("c"), None, Some("n")).includes(&id),
            "ambiguous shape"
        );
    }

    #[test]
    fn ops_and_encodings_parse() {
        for op in Op::ALL {
            assert_eq!(Op::parse(op.as_str()), Some(op));
        }
        assert!(Op::Restart.is_mutating() && !Op::Status.is_mutating());
        assert_eq!(Encoding::from_header(Some("JSON")).unwrap(), Encoding::Json);
        assert!(Encoding::from_header(Some("xml")).is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_request(&bytes, Encoding::MsgPack);
            let _ = decode_request(&bytes, Encoding::Json);
            let _ = RegistryEntry::decode(&bytes);
        }
    }
}
