//! Decides whether an agent obeys a command: the ordered security checks and the nonce record.
//!
//! The order is fixed (`docs/security.md`): a known issuer, a valid signature, this node is the
//! target, not expired (with bounded clock skew), a nonce never seen, then the default-deny
//! policy. The first failing check names the denial. Pure apart from the nonce file, and the
//! time is an argument, so every branch is unit-tested.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use crate::command::{verify_signature_with, Op, Request, MAX_LIFETIME_MS};
use crate::config::{CommandsConfig, IssuerConfig};
use crate::NodeId;

/// Why a command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denial {
    #[error("unsigned: {0} needs a signature")]
    Unsigned(Op),
    #[error("unknown issuer {0}")]
    UnknownIssuer(String),
    #[error("bad signature: {0}")]
    BadSignature(String),
    #[error("addressed to {0}, not this node")]
    WrongTarget(String),
    #[error("expired or not yet valid: {0}")]
    Expired(String),
    #[error("replayed: nonce {0} was already used")]
    Replay(String),
    #[error("policy: {0}")]
    NotAllowed(String),
}

/// An accepted command's issuer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorized {
    /// The configured name; `None` for an unsigned read-only request.
    pub issuer_name: Option<String>,
    pub signed: bool,
}

#[derive(Debug)]
struct Grant {
    name: String,
    /// The public key, parsed once; why not, when it does not parse.
    key: Result<nkeys::KeyPair, String>,
    all_ops: bool,
    ops: Vec<Op>,
    programs: Vec<String>,
}

impl Grant {
    fn from_config(c: &IssuerConfig) -> Self {
        Self {
            name: c.name.clone(),
            key: nkeys::KeyPair::from_public_key(&c.key).map_err(|e| format!("issuer key: {e}")),
            all_ops: c.ops.iter().any(|o| o == "*"),
            ops: c.ops.iter().filter_map(|o| Op::parse(o)).collect(),
            programs: c.programs.clone(),
        }
    }

    fn allows_op(&self, op: Op) -> bool {
        self.all_ops || self.ops.contains(&op)
    }

    fn allows_program(&self, program: &str) -> bool {
        self.programs.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => program.starts_with(prefix),
            None => p == program,
        })
    }
}

/// The checks, with the issuers from config and the nonces seen.
#[derive(Debug)]
pub struct Guard {
    me: NodeId,
    grants: HashMap<String, Grant>,
    allow_unsigned_read: bool,
    skew_ms: i64,
    nonces: NonceStore,
}

impl Guard {
    pub fn new(me: NodeId, cfg: &CommandsConfig, nonces: NonceStore) -> Self {
        Self {
            me,
            grants: cfg
                .issuers
                .iter()
                .map(|i| (i.key.clone(), Grant::from_config(i)))
                .collect(),
            allow_unsigned_read: cfg.allow_unsigned_read,
            skew_ms: i64::try_from(cfg.max_clock_skew.as_millis()).unwrap_or(60_000),
            nonces,
        }
    }

    /// Runs the checks in order. An accepted signed command's nonce is recorded (durably for a
    /// mutating one) before this returns, so it can never run twice.
    pub fn check(&mut self, req: &Request, now_ms: i64) -> Result<Authorized, Denial> {
        let b = &req.body;
        if req.sig.is_none() {
            if !b.op.is_mutating() && self.allow_unsigned_read {
                return if b.target.includes(&self.me) {
                    Ok(Authorized {
                        issuer_name: None,
                        signed: false,
                    })
                } else {
                    Err(Denial::WrongTarget(b.target.to_string()))
                };
            }
            return Err(Denial::Unsigned(b.op));
        }
        let grant = self
            .grants
            .get(&b.issuer)
            .ok_or_else(|| Denial::UnknownIssuer(b.issuer.clone()))?;
        let key = grant
            .key
            .as_ref()
            .map_err(|e| Denial::BadSignature(e.clone()))?;
        verify_signature_with(req, key).map_err(Denial::BadSignature)?;
        if !b.target.includes(&self.me) {
            return Err(Denial::WrongTarget(b.target.to_string()));
        }
        if b.expires_ms <= b.issued_ms || b.expires_ms - b.issued_ms > MAX_LIFETIME_MS {
            return Err(Denial::Expired(format!(
                "lifetime must be between 1 ms and {} s",
                MAX_LIFETIME_MS / 1000
            )));
        }
        if now_ms > b.expires_ms.saturating_add(self.skew_ms) {
            return Err(Denial::Expired(format!(
                "expired {} ms ago",
                now_ms - b.expires_ms
            )));
        }
        if b.issued_ms > now_ms.saturating_add(self.skew_ms) {
            return Err(Denial::Expired(format!(
                "issued {} ms in the future (clock skew?)",
                b.issued_ms - now_ms
            )));
        }
        if !valid_nonce(&b.nonce) {
            return Err(Denial::Replay(
                "missing or malformed (16 to 64 letters and digits)".into(),
            ));
        }
        // Kept until it could no longer pass the expiry check anyway.
        let keep_until = b.expires_ms.saturating_add(self.skew_ms);
        if !self
            .nonces
            .insert(&b.nonce, keep_until, now_ms, b.op.is_mutating())
        {
            return Err(Denial::Replay(b.nonce.clone()));
        }
        if !grant.allows_op(b.op) {
            return Err(Denial::NotAllowed(format!(
                "{} may not {}",
                grant.name, b.op
            )));
        }
        if let Some(p) = &b.program {
            if !grant.allows_program(p) {
                return Err(Denial::NotAllowed(format!(
                    "{} may not act on program {p}",
                    grant.name
                )));
            }
        }
        Ok(Authorized {
            issuer_name: Some(grant.name.clone()),
            signed: true,
        })
    }

    /// The configured name of a public key, for audit records of denied commands.
    pub fn issuer_name(&self, key: &str) -> Option<String> {
        self.grants.get(key).map(|g| g.name.clone())
    }

    /// Nonce-file write failures since start (each one refused its command).
    pub fn nonce_errors(&self) -> u64 {
        self.nonces.errors
    }
}

fn valid_nonce(n: &str) -> bool {
    (16..=64).contains(&n.len()) && n.bytes().all(|c| c.is_ascii_alphanumeric())
}

/// Nonces of commands that have not expired yet, kept in memory and in an append-only file that
/// survives restarts. The file is rewritten without the expired entries when it has grown to
/// twice the live set.
#[derive(Debug)]
pub struct NonceStore {
    path: Option<PathBuf>,
    live: HashMap<String, i64>,
    file: Option<File>,
    lines: usize,
    errors: u64,
}

impl NonceStore {
    /// Memory only (tests and tools).
    pub fn in_memory() -> Self {
        Self {
            path: None,
            live: HashMap::new(),
            file: None,
            lines: 0,
            errors: 0,
        }
    }

    /// Loads `path` (creating it), keeping the entries still live at `now_ms`. Lines that do not
    /// parse are skipped (a torn last line after a crash).
    pub fn open(path: &Path, now_ms: i64) -> std::io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut live = HashMap::new();
        let mut lines = 0;
        if let Ok(f) = File::open(path) {
            for line in BufReader::new(f).lines() {
                let line = line?;
                lines += 1;
                let mut it = line.split(' ');
                if let (Some(t), Some(n), None) = (it.next(), it.next(), it.next()) {
                    if let Ok(t) = t.parse::<i64>() {
                        if t >= now_ms && valid_nonce(n) {
                            live.insert(n.to_string(), t);
                        }
                    }
                }
            }
        }
        let mut s = Self {
            path: Some(path.to_path_buf()),
            live,
            file: None,
            lines,
            errors: 0,
        };
        s.compact()?;
        Ok(s)
    }

    /// Records `nonce`; false if it is already recorded (a replay) or cannot be recorded.
    fn insert(&mut self, nonce: &str, keep_until: i64, now_ms: i64, durable: bool) -> bool {
        if self.live.contains_key(nonce) {
            return false;
        }
        if self.live.len() > 1024 {
            self.live.retain(|_, t| *t >= now_ms);
        }
        if self.file.is_some() {
            if let Err(e) = self.append(nonce, keep_until, durable) {
                // Refuse rather than run a command whose replay could not be prevented.
                self.errors += 1;
                tracing::error!(error = %e, "cannot record a command nonce; command refused");
                return false;
            }
        }
        self.live.insert(nonce.to_string(), keep_until);
        true
    }

    fn append(&mut self, nonce: &str, keep_until: i64, durable: bool) -> std::io::Result<()> {
        if self.lines > 1024 && self.lines > 2 * self.live.len() {
            self.compact()?;
        }
        let Some(f) = self.file.as_mut() else {
            return Ok(());
        };
        f.write_all(format!("{keep_until} {nonce}\n").as_bytes())?;
        if durable {
            f.sync_data()?;
        }
        self.lines += 1;
        Ok(())
    }

    /// Rewrites the file with the live entries only (tmp + rename), then reopens it to append.
    fn compact(&mut self) -> std::io::Result<()> {
        let Some(path) = self.path.clone() else {
            return Ok(());
        };
        let tmp = path.with_extension("tmp");
        {
            let mut f = File::create(&tmp)?;
            let mut text = String::new();
            for (n, t) in &self.live {
                text.push_str(&format!("{t} {n}\n"));
            }
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &path)?;
        self.lines = self.live.len();
        self.file = Some(OpenOptions::new().append(true).open(&path)?);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{decode_request, encode_request, CommandBody, Encoding, Target};

    const NOW: i64 = 1_700_000_000_000;

    fn me() -> NodeId {
        NodeId::new("c", "g", "n").unwrap()
    }

    fn config(key: &nkeys::KeyPair, ops: &[&str], programs: &[&str]) -> CommandsConfig {
        CommandsConfig {
            issuers: vec![IssuerConfig {
                name: "alice".into(),
                key: key.public_key(),
                ops: ops.iter().map(|s| s.to_string()).collect(),
                programs: programs.iter().map(|s| s.to_string()).collect(),
            }],
            ..Default::default()
        }
    }

    fn body(key: &nkeys::KeyPair, op: Op, program: &str) -> CommandBody {
        let mut b = CommandBody::new(op, Target::node(&me()), key.public_key(), NOW, 30_000);
        b.program = Some(program.into());
        b
    }

    fn signed(b: &CommandBody, key: &nkeys::KeyPair) -> Request {
        decode_request(
            &encode_request(b, Some(key), Encoding::MsgPack).unwrap(),
            Encoding::MsgPack,
        )
        .unwrap()
    }

    #[test]
    fn checks_in_order() {
        let alice = nkeys::KeyPair::new_user();
        let mallory = nkeys::KeyPair::new_user();
        let cfg = config(&alice, &["restart", "status"], &["web", "batch-*"]);
        let mut g = Guard::new(me(), &cfg, NonceStore::in_memory());
        let ok = body(&alice, Op::Restart, "web");

        assert_eq!(
            g.check(&signed(&ok, &alice), NOW)
                .unwrap()
                .issuer_name
                .as_deref(),
            Some("alice")
        );
        // Replay of the very same request.
        assert!(matches!(
            g.check(&signed(&ok, &alice), NOW),
            Err(Denial::Replay(_))
        ));
        // Unsigned mutating.
        let mut unsigned = signed(&body(&alice, Op::Restart, "web"), &alice);
        unsigned.sig = None;
        assert!(matches!(
            g.check(&unsigned, NOW),
            Err(Denial::Unsigned(Op::Restart))
        ));
        // Signed by a key nobody configured, claiming to be itself.
        let b = body(&mallory, Op::Restart, "web");
        assert!(matches!(
            g.check(&signed(&b, &mallory), NOW),
            Err(Denial::UnknownIssuer(_))
        ));
        // Claims alice, signed by mallory.
        let b = body(&alice, Op::Restart, "web");
        assert!(matches!(
            g.check(&signed(&b, &mallory), NOW),
            Err(Denial::BadSignature(_))
        ));
        // Another node.
        let mut b = body(&alice, Op::Restart, "web");
        b.target.node = Some("m".into());
        assert!(matches!(
            g.check(&signed(&b, &alice), NOW),
            Err(Denial::WrongTarget(_))
        ));
        // Expired, beyond the skew.
        let b = body(&alice, Op::Restart, "web");
        assert!(matches!(
            g.check(&signed(&b, &alice), NOW + 30_000 + 5_001),
            Err(Denial::Expired(_))
        ));
        // Within the skew it passes.
        let b = body(&alice, Op::Restart, "web");
        assert!(g.check(&signed(&b, &alice), NOW + 30_000 + 4_000).is_ok());
        // Lifetime over 60 s.
        let mut b = body(&alice, Op::Restart, "web");
        b.expires_ms = b.issued_ms + 61_000;
        assert!(matches!(
            g.check(&signed(&b, &alice), NOW),
            Err(Denial::Expired(_))
        ));
        // From the future.
        let mut b = body(&alice, Op::Restart, "web");
        b.issued_ms = NOW + 10_000;
        b.expires_ms = NOW + 20_000;
        assert!(matches!(
            g.check(&signed(&b, &alice), NOW),
            Err(Denial::Expired(_))
        ));
        // Policy: operation and program.
        let b = body(&alice, Op::Stop, "web");
        assert!(matches!(
            g.check(&signed(&b, &alice), NOW),
            Err(Denial::NotAllowed(_))
        ));
        let b = body(&alice, Op::Restart, "db");
        assert!(matches!(
            g.check(&signed(&b, &alice), NOW),
            Err(Denial::NotAllowed(_))
        ));
        let b = body(&alice, Op::Restart, "batch-7");
        assert!(g.check(&signed(&b, &alice), NOW).is_ok());
    }

    #[test]
    fn unsigned_reads_only_when_allowed() {
        let alice = nkeys::KeyPair::new_user();
        let mut cfg = config(&alice, &["*"], &["*"]);
        let mut status = signed(&body(&alice, Op::Status, "web"), &alice);
        status.sig = None;
        let mut g = Guard::new(me(), &cfg, NonceStore::in_memory());
        assert!(matches!(
            g.check(&status, NOW),
            Err(Denial::Unsigned(Op::Status))
        ));
        cfg.allow_unsigned_read = true;
        let mut g = Guard::new(me(), &cfg, NonceStore::in_memory());
        let a = g.check(&status, NOW).unwrap();
        assert!(!a.signed && a.issuer_name.is_none());
        let mut stop = signed(&body(&alice, Op::Stop, "web"), &alice);
        stop.sig = None;
        assert!(matches!(
            g.check(&stop, NOW),
            Err(Denial::Unsigned(Op::Stop))
        ));
    }

    #[test]
    fn nonces_survive_a_restart_and_expire() {
        let dir = tempfile_dir();
        let path = dir.join("nonces");
        let alice = nkeys::KeyPair::new_user();
        let cfg = config(&alice, &["*"], &["*"]);
        let b = body(&alice, Op::Restart, "web");
        {
            let mut g = Guard::new(me(), &cfg, NonceStore::open(&path, NOW).unwrap());
            g.check(&signed(&b, &alice), NOW).unwrap();
        }
        let mut g = Guard::new(me(), &cfg, NonceStore::open(&path, NOW).unwrap());
        assert!(matches!(
            g.check(&signed(&b, &alice), NOW),
            Err(Denial::Replay(_))
        ));
        // After expiry + skew the entry is dropped at load, and the command is expired anyway.
        let later = NOW + 60_000;
        let store = NonceStore::open(&path, later).unwrap();
        assert!(store.live.is_empty());
        // A torn line is skipped.
        std::fs::write(&path, "123").unwrap();
        assert!(NonceStore::open(&path, NOW).unwrap().live.is_empty());
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn compaction_keeps_live_nonces() {
        let dir = tempfile_dir();
        let path = dir.join("nonces");
        let mut s = NonceStore::open(&path, NOW).unwrap();
        for i in 0..3000 {
            let n = format!("{i:032}");
            // Most expire immediately; every tenth lives on.
            let until = if i % 10 == 0 { NOW + 100_000 } else { NOW + 1 };
            assert!(s.insert(&n, until, NOW + 2, false));
        }
        let lines = std::fs::read_to_string(&path).unwrap().lines().count();
        assert!(lines < 3000, "compacted: {lines} lines");
        let s = NonceStore::open(&path, NOW + 2).unwrap();
        assert_eq!(s.live.len(), 300);
        std::fs::remove_dir_all(&dir).ok();
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "gridmon-guard-{}-{}",
            std::process::id(),
            crate::command::new_nonce()
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
