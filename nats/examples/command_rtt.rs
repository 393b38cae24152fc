//! Round trip of a `status` command to a running agent, against bare NATS request/reply.
//!
//! ```sh
//! cargo run --release -p gridmon-nats --example command_rtt -- \
//!     --url nats://127.0.0.1:4222 --node c1/g1/n1 --key operator.nk [--count 5000] [--prefix grid]
//! ```
//!
//! Sends `--count` sequential requests of each kind, after a warm-up, and prints p50/p90/p99/max
//! in µs: bare request/reply to an echo responder this program runs itself (same payload size
//! as a signed status), signed `status` (each request freshly signed; signing is outside the
//! timed span and printed apart), and unsigned `status` when the agent allows it. The agent's own
//! share is its reply's `duration_us`. `scripts/bench-commands` starts the agent and the server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use gridmon_nats::command::{
    decode_request, encode_request, signing_input, verify_signature, CommandBody, CommandReply,
    Encoding, ErrorKind, Op, Target,
};
use gridmon_nats::config::{CommandsConfig, IssuerConfig};
use gridmon_nats::frame::now_ms;
use gridmon_nats::guard::{Guard, NonceStore};
use gridmon_nats::wire::{self, Kind};
use gridmon_nats::{Family, NodeId, Scope, Subjects};

const WARMUP: usize = 200;

struct Opts {
    url: String,
    node: NodeId,
    key: Option<nkeys::KeyPair>,
    count: usize,
    prefix: String,
}

fn opts() -> Opts {
    let mut url = "nats://127.0.0.1:4222".to_string();
    let mut node = None;
    let mut key = None;
    let mut count = 5000;
    let mut prefix = "grid".to_string();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--url" => url = val(),
            "--node" => node = Some(val()),
            "--key" => key = Some(val()),
            "--count" => count = val().parse().expect("--count N"),
            "--prefix" => prefix = val(),
            other => panic!("unknown argument {other}"),
        }
    }
    let node = node.expect("--node C/G/N");
    let parts: Vec<&str> = node.split('/').collect();
    assert_eq!(parts.len(), 3, "--node C/G/N");
    let key = key.map(|path| {
        let text = std::fs::read_to_string(&path).expect("reading the key file");
        let seed = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .expect("a seed in the key file");
        nkeys::KeyPair::from_seed(seed).expect("an nkey seed")
    });
    Opts {
        url,
        node: NodeId::new(parts[0], parts[1], parts[2]).expect("a valid node id"),
        key,
        count,
        prefix,
    }
}

/// Percentiles of a sample, µs.
fn summary(name: &str, mut v: Vec<u64>) {
    v.sort_unstable();
    let at = |q: f64| v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1];
    let mean = v.iter().sum::<u64>() as f64 / v.len() as f64;
    println!(
        "{name:<34} {:>6} {:>8.0} {:>6} {:>6} {:>6} {:>7}",
        v.len(),
        mean,
        at(0.50),
        at(0.90),
        at(0.99),
        v[v.len() - 1]
    );
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

struct Sample {
    rtt: Vec<u64>,
    agent: Vec<u64>,
    sign: Vec<u64>,
}

/// `n` sequential status requests; `None` if the first is refused (the refusal is printed).
async fn status_run(
    client: &async_nats::Client,
    subject: &str,
    node: &NodeId,
    key: Option<&nkeys::KeyPair>,
    n: usize,
) -> Option<Sample> {
    let issuer = key.map_or_else(|| "bench".to_string(), |k| k.public_key());
    let mut s = Sample {
        rtt: Vec::with_capacity(n),
        agent: Vec::with_capacity(n),
        sign: Vec::with_capacity(n),
    };
    for _ in 0..n {
        let t = Instant::now();
        let body = CommandBody::new(
            Op::Status,
            Target::node(node),
            issuer.clone(),
            now_ms(),
            30_000,
        );
        let payload = Bytes::from(encode_request(&body, key, Encoding::MsgPack).unwrap());
        s.sign.push(micros(t.elapsed()));
        let t = Instant::now();
        let msg = client
            .request(subject.to_string(), payload)
            .await
            .expect("a reply (is the agent running?)");
        s.rtt.push(micros(t.elapsed()));
        let reply: CommandReply = wire::decode(&msg.payload, Kind::CommandReply)
            .expect("a command reply")
            .body;
        if !reply.ok {
            if reply.error == Some(ErrorKind::Denied) && s.rtt.len() == 1 {
                println!(
                    "{:<34} refused by the agent: {}",
                    if key.is_some() {
                        "status, signed"
                    } else {
                        "status, unsigned"
                    },
                    reply.message
                );
                return None;
            }
            panic!("status failed: {reply:?}");
        }
        s.agent.push(reply.duration_us);
    }
    Some(s)
}

/// What the agent's checks cost without the bus: decode, then the guard (issuer lookup, signature,
/// target, expiry, nonce; an in-memory nonce record, as for a read-only op, which is not fsynced).
fn checks_in_process(node: &NodeId, key: &nkeys::KeyPair, n: usize) {
    let cfg = CommandsConfig {
        issuers: vec![IssuerConfig {
            name: "bench".into(),
            key: key.public_key(),
            ops: vec!["status".into()],
            programs: vec!["*".into()],
        }],
        ..Default::default()
    };
    let mut guard = Guard::new(node.clone(), &cfg, NonceStore::in_memory());
    let requests: Vec<Vec<u8>> = (0..n)
        .map(|_| {
            let body = CommandBody::new(
                Op::Status,
                Target::node(node),
                key.public_key(),
                now_ms(),
                30_000,
            );
            encode_request(&body, Some(key), Encoding::MsgPack).unwrap()
        })
        .collect();
    let (mut decode, mut check, mut verify) = (Vec::new(), Vec::new(), Vec::new());
    let (mut parse_key, mut verify_parsed) = (Vec::new(), Vec::new());
    for bytes in &requests {
        let t = Instant::now();
        let req = decode_request(bytes, Encoding::MsgPack).unwrap();
        decode.push(micros(t.elapsed()));
        let t = Instant::now();
        verify_signature(&req, &req.body.issuer).unwrap();
        verify.push(micros(t.elapsed()));
        let t = Instant::now();
        let pk = nkeys::KeyPair::from_public_key(&req.body.issuer).unwrap();
        parse_key.push(micros(t.elapsed()));
        let t = Instant::now();
        pk.verify(
            &signing_input(&req.signed_bytes),
            req.sig.as_deref().unwrap(),
        )
        .unwrap();
        verify_parsed.push(micros(t.elapsed()));
        let t = Instant::now();
        guard.check(&req, now_ms()).unwrap();
        check.push(micros(t.elapsed()));
    }
    summary("in process: decode_request", decode);
    summary("in process: verify_signature", verify);
    summary("  of which parsing the issuer key", parse_key);
    summary("  of which ed25519 verify", verify_parsed);
    summary("in process: guard.check (all)", check);
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let o = opts();
    let subjects = Subjects::new(o.prefix.clone()).expect("a valid prefix");
    let subject = subjects.family(Family::Cmd, &Scope::Node(o.node.clone()));
    let client = async_nats::connect(&o.url).await.expect("connecting");

    // The echo responder, on its own connection as the agent is.
    let echo = async_nats::connect(&o.url).await.expect("connecting");
    let echo_subject = format!("bench.echo.{}", client.new_inbox().replace('.', "_"));
    let mut sub = echo.subscribe(echo_subject.clone()).await.unwrap();
    echo.flush().await.unwrap();
    tokio::spawn(async move {
        while let Some(m) = sub.next().await {
            if let Some(r) = m.reply {
                let _ = echo.publish(r, m.payload).await;
            }
        }
    });

    // A payload as large as a signed status request.
    let sample = CommandBody::new(
        Op::Status,
        Target::node(&o.node),
        "U".repeat(56),
        now_ms(),
        30_000,
    );
    let mut size = encode_request(&sample, None, Encoding::MsgPack)
        .unwrap()
        .len();
    if let Some(k) = &o.key {
        size = encode_request(&sample, Some(k), Encoding::MsgPack)
            .unwrap()
            .len();
    }
    let payload = Bytes::from(vec![0x5a_u8; size]);
    let bare = |n: usize| {
        let (client, subject, payload) = (client.clone(), echo_subject.clone(), payload.clone());
        async move {
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                let t = Instant::now();
                client
                    .request(subject.clone(), payload.clone())
                    .await
                    .expect("an echo");
                v.push(micros(t.elapsed()));
            }
            v
        }
    };

    println!(
        "command_rtt: {} sequential requests each after {WARMUP} warm-up, to {subject} at {} ({size}-byte requests)",
        o.count, o.url
    );
    println!(
        "{:<34} {:>6} {:>8} {:>6} {:>6} {:>6} {:>7}",
        "µs", "n", "mean", "p50", "p90", "p99", "max"
    );
    bare(WARMUP).await;
    summary("bare request/reply (echo)", bare(o.count).await);
    if let Some(k) = &o.key {
        if status_run(&client, &subject, &o.node, Some(k), WARMUP)
            .await
            .is_some()
        {
            let s = status_run(&client, &subject, &o.node, Some(k), o.count)
                .await
                .expect("accepted after the warm-up");
            summary("status, signed: round trip", s.rtt);
            summary("  of which in the agent", s.agent);
            summary("  signing (client, not in rtt)", s.sign);
        }
    }
    if status_run(&client, &subject, &o.node, None, 1)
        .await
        .is_some()
    {
        status_run(&client, &subject, &o.node, None, WARMUP).await;
        let s = status_run(&client, &subject, &o.node, None, o.count)
            .await
            .expect("accepted after the warm-up");
        summary("status, unsigned: round trip", s.rtt);
        summary("  of which in the agent", s.agent);
    }
    if let Some(k) = &o.key {
        checks_in_process(&o.node, k, o.count);
    }
    // Bare again: the machine's noise between the first and the last run.
    summary("bare request/reply (again)", bare(o.count).await);
}
