//! `gridmon web` against a live pipeline: nats-server, the ClickHouse engine with `gridmon
//! ingest`, `gridmon aggregate`, a simulated fleet, and one real agent supervising a real
//! program. The JSON API is checked over plain HTTP; the pages in headless Chromium
//! (`tests/browser/dashboard.mjs`, Playwright driving Debian's `chromium`).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use gridmon_tests::clickhouse::{ClickHouse, TestDb};
use gridmon_tests::eventually;
use gridmon_tests::nats_server::{free_port, NatsServer};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{spawn_logged as spawn, start_agent, Agent, GRIDMON};

const OPERATOR: (&str, &str) = ("olga", "operator-password-1");
const VIEWER: (&str, &str) = ("vic", "viewer-password-1");
const PROGRAM: &str = "web";
const AGENT_NODE: &str = "c1/g1/webagent";

/// Days before today (UTC) the test writes history for.
const HISTORY_DAYS: [i64; 3] = [1, 3, 5];

// ---------------------------------------------------------------------------------------------
// A small HTTP/1.1 client: one request per connection.
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {}: body is not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

async fn http(
    base: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> Resp {
    let addr = base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(&body);
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut raw))
        .await
        .expect("the dashboard answers within 30 s")
        .unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete HTTP head");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .expect("a status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    if chunked {
        let mut out = Vec::new();
        let mut rest = &body[..];
        while let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") {
            let size = usize::from_str_radix(std::str::from_utf8(&rest[..eol]).unwrap().trim(), 16)
                .unwrap();
            if size == 0 {
                break;
            }
            out.extend_from_slice(&rest[eol + 2..eol + 2 + size]);
            rest = &rest[eol + 2 + size + 2..];
        }
        body = out;
    }
    Resp {
        status,
        headers,
        body,
    }
}

/// A logged-in caller: the cookie header and the CSRF token.
#[derive(Debug, Clone)]
struct Login {
    cookie: String,
    csrf: String,
}

async fn login(base: &str, user: &str, password: &str) -> Login {
    let r = http(
        base,
        "POST",
        "/api/login",
        &[],
        Some(&json!({"user": user, "password": password})),
    )
    .await;
    assert_eq!(
        r.status,
        200,
        "login {user}: {}",
        String::from_utf8_lossy(&r.body)
    );
    let set = r
        .header("set-cookie")
        .expect("a session cookie")
        .to_string();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    let cookie = set.split(';').next().unwrap().to_string();
    let csrf = r.json()["csrf"].as_str().unwrap().to_string();
    Login { cookie, csrf }
}

async fn get(base: &str, path: &str, who: &Login) -> Resp {
    http(base, "GET", path, &[("Cookie", &who.cookie)], None).await
}

// ---------------------------------------------------------------------------------------------
// The live pipeline
// ---------------------------------------------------------------------------------------------

struct Pipeline {
    _nats: NatsServer,
    db: TestDb,
    dir: tempfile::TempDir,
    children: Vec<tokio::process::Child>,
    agent: Option<Agent>,
    base: String,
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.start_kill();
        }
        if let Some(a) = &mut self.agent {
            let _ = a.child.start_kill();
        }
    }
}

impl Pipeline {
    fn logs(&self) -> String {
        let mut out = String::new();
        for name in ["web", "ingest", "aggregate", "simulate", "webagent"] {
            let p = self.dir.path().join(format!("{name}.log"));
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            out.push_str(&format!("--- {name}.log (tail)\n"));
            for l in tail.into_iter().rev() {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }
}

async fn hash(password: &str) -> String {
    let mut child = gridmon_commands::child::command(GRIDMON)
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(format!("{password}\n").as_bytes())
        .await
        .unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    assert!(out.status.success());
    let h = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(h.starts_with("$argon2id$"), "{h}");
    h
}

/// `YYYY-MM-DD` (UTC) of the day `days_ago` days before today.
fn day(days_ago: i64) -> String {
    crate::day((gridmon_nats::frame::now_ms() / 86_400_000 - days_ago) * 86_400_000)
}

/// Past history the views must show: node metrics (through the downsampling views) and alarm
/// raises for [`HISTORY_DAYS`]: per day, 2 hardware and 1 software fault in c01.
async fn load_history(db: &TestDb) {
    let client = &db.client;
    for ago in HISTORY_DAYS {
        let d = day(ago);
        client
            .query(&format!(
                "INSERT INTO node_metrics (ts, cluster, group_name, node, cpu_pct, mem_used_pct, \
                 swap_used_pct, disk_busy_pct) \
                 SELECT toDateTime64('{d} 00:00:00', 3, 'UTC') + INTERVAL number * 10 MINUTE, \
                 if(number % 2 = 0, 'c01', 'c02'), 'g01', concat('h', toString(number % 6)), \
                 20 + number % 50, 40, 5, 10 FROM numbers(144)"
            ))
            .execute()
            .await
            .unwrap();
        client
            .query(&format!(
                "INSERT INTO alarms (ts, cluster, group_name, node, scope, alarm_id, action, rule, \
                 severity, hardware, metric, instance, value, raised_at) \
                 SELECT toDateTime64('{d} 12:00:00', 3, 'UTC') + INTERVAL number MINUTE, 'c01', 'g01', 'h1', \
                 'c01/g01/h1', concat('old-', toString(number)), 'raise', \
                 if(number < 2, 'sensor_crit', 'program_crashed'), 'critical', \
                 if(number < 2, 1, 0), 'x', 'i', 1, toDateTime64('{d} 12:00:00', 3, 'UTC') \
                 FROM numbers(3)"
            ))
            .execute()
            .await
            .unwrap();
    }
    for table in ["node_metrics", "node_metrics_1h", "alarms"] {
        let days: Vec<String> = db
            .client
            .query(&format!(
                "SELECT DISTINCT toString(toDate(ts)) FROM {table} WHERE ts < today() ORDER BY 1"
            ))
            .fetch_all()
            .await
            .unwrap();
        let mut want: Vec<String> = HISTORY_DAYS.iter().map(|a| day(*a)).collect();
        want.sort();
        assert_eq!(days, want, "{table}");
    }
}

async fn pipeline(name: &str) -> Pipeline {
    let nats = NatsServer::start().unwrap();
    let ch = ClickHouse::shared().unwrap();
    let db = ch.test_db(name).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let url = nats.url();

    // The dashboard's operator key, which the agent trusts.
    let key = nkeys::KeyPair::new_user();
    let key_file = d.join("web.nk");
    std::fs::write(&key_file, key.seed().unwrap()).unwrap();
    let port = free_port().unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let config = d.join("grid.toml");
    std::fs::write(
        &config,
        format!(
            "[nats]\nservers = [{url:?}]\n\
             [identity]\ncluster = \"c1\"\ngroup = \"g1\"\nnode = \"webctl\"\n\
             {ch_toml}\n\
             [ingest]\nflush_interval = \"300ms\"\n[ingest.stream]\nmax_bytes = 268435456\n\
             [web]\nlisten = \"127.0.0.1:{port}\"\nkey_file = {key_file:?}\n\
             [[web.users]]\nname = {op:?}\npassword_hash = {op_hash:?}\nrole = \"operator\"\n\
             [[web.users]]\nname = {vi:?}\npassword_hash = {vi_hash:?}\nrole = \"viewer\"\n",
            ch_toml = ch.config_toml(&db.name),
            op = OPERATOR.0,
            op_hash = hash(OPERATOR.1).await,
            vi = VIEWER.0,
            vi_hash = hash(VIEWER.1).await,
        ),
    )
    .unwrap();
    let cfg = config.to_str().unwrap().to_string();

    let mut children = vec![spawn(d, "ingest", &["ingest", "--config", &cfg])];
    // The stream and the consumer come after the migrations: then every table and view exists,
    // and the fleet's first messages (the inventory goes out once, at start) are captured.
    let js = async_nats::jetstream::new(async_nats::connect(&url).await.unwrap());
    eventually(Duration::from_secs(90), "the ingest's consumer", || async {
        let stream = js.get_stream("GRIDMON").await.ok()?;
        stream
            .get_consumer::<async_nats::jetstream::consumer::pull::Config>("gridmon-ingest")
            .await
            .ok()
    })
    .await
    .unwrap();
    load_history(&db).await;
    children.push(spawn(
        d,
        "aggregate",
        &["aggregate", "--config", &cfg, "--no-leader-election"],
    ));
    children.push(spawn(
        d,
        "simulate",
        &[
            "simulate",
            "--config",
            &cfg,
            "--nodes",
            "12",
            "--clusters",
            "2",
            "--groups",
            "2",
            "--processes",
            "40",
            "--process-every",
            "2",
            "--overheat",
            "1",
            "--crash",
            "1",
            "--fault-after",
            "2s",
        ],
    ));
    let agent = start_agent(
        d,
        &url,
        "webagent",
        "",
        &format!(
            "[supervisor]\ndir = {sup:?}\non_exit = \"leave\"\n\
             [programs.{PROGRAM}]\ncommand = \"sh\"\nargs = [\"-c\", \"echo started; exec sleep 1000\"]\n\
             start_secs = \"200ms\"\nstop_grace = \"2s\"\n\
             [commands]\nregistry_every = \"200ms\"\n\
             [[commands.issuers]]\nname = \"dashboard\"\nkey = {pk:?}\nops = [\"*\"]\nprograms = [\"*\"]\n",
            sup = d.join("sup"),
            pk = key.public_key(),
        ),
    );
    children.push(spawn(d, "web", &["web", "--config", &cfg]));
    let p = Pipeline {
        _nats: nats,
        db,
        dir,
        children,
        agent: Some(agent),
        base,
    };
    let ready = eventually(
        Duration::from_secs(60),
        "the dashboard sees the fleet",
        || async {
            let who = login_quiet(&p.base).await?;
            let nodes = get(&p.base, "/api/nodes", &who).await.json();
            let nodes = nodes["nodes"].as_array()?.clone();
            (nodes.len() >= 13 && nodes.iter().any(|n| n == AGENT_NODE)).then_some(())
        },
    )
    .await;
    if let Err(e) = ready {
        panic!("{e}\n{}", p.logs());
    }
    p
}

/// Logs in without asserting (the server may still be starting).
async fn login_quiet(base: &str) -> Option<Login> {
    let addr = base.trim_start_matches("http://");
    tokio::net::TcpStream::connect(addr).await.ok()?;
    Some(login(base, OPERATOR.0, OPERATOR.1).await)
}

/// A simulated node of c01 with a process table in the dashboard.
async fn sim_node_with_table(p: &Pipeline, who: &Login) -> String {
    eventually(
        Duration::from_secs(30),
        "a process table from c01",
        || async {
            let nodes = get(&p.base, "/api/nodes", who).await.json();
            for n in nodes["nodes"].as_array()? {
                let n = n.as_str()?;
                if !n.starts_with("c01/") {
                    continue;
                }
                let r = get(&p.base, &format!("/api/nodes/{n}/processes"), who).await;
                if r.status == 200 && r.json()["rows"].as_array()?.len() > 5 {
                    return Some(n.to_string());
                }
            }
            None
        },
    )
    .await
    .unwrap()
}

// ---------------------------------------------------------------------------------------------
// The API without a browser
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_api_serves_views_and_guards_actions() {
    let p = pipeline("web_api").await;
    let base = p.base.as_str();

    // Without a session: the session says who may log in; data needs a login.
    let s = http(base, "GET", "/api/session", &[], None).await.json();
    assert_eq!(s["login_enabled"], true);
    assert!(s["user"].is_null());
    assert_eq!(http(base, "GET", "/api/frame", &[], None).await.status, 401);
    let bad = http(
        base,
        "POST",
        "/api/login",
        &[],
        Some(&json!({"user": OPERATOR.0, "password": "nope"})),
    )
    .await;
    assert_eq!(bad.status, 401);
    let unknown = http(
        base,
        "POST",
        "/api/login",
        &[],
        Some(&json!({"user": "mallory", "password": OPERATOR.1})),
    )
    .await;
    assert_eq!(unknown.status, 401);
    let op = login(base, OPERATOR.0, OPERATOR.1).await;
    let vi = login(base, VIEWER.0, VIEWER.1).await;
    let s = get(base, "/api/session", &op).await.json();
    assert_eq!(
        (s["user"].as_str(), s["role"].as_str()),
        (Some("olga"), Some("operator"))
    );
    assert_eq!(s["can_act"], true);
    assert_eq!(
        get(base, "/api/session", &vi).await.json()["can_act"],
        false
    );

    // The real-time frames: the grid, a cluster's nodes, one node in full.
    let grid = get(base, "/api/frame?view=grid", &op).await.json();
    let clusters: Vec<&str> = grid["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(clusters, ["c01", "c02", "c1"], "{grid}");
    let c01 = get(base, "/api/frame?view=cluster&cluster=c01", &op)
        .await
        .json();
    assert_eq!(c01["nodes"].as_array().unwrap().len(), 6, "{c01}");
    assert!(c01["nodes"][0]["v"][0].as_f64().is_some(), "{c01}");
    let agent = eventually(
        Duration::from_secs(20),
        "the agent's program running",
        || async {
            let n = get(base, &format!("/api/nodes/{AGENT_NODE}"), &op)
                .await
                .json();
            let programs = n["report"]["body"]["programs"].as_array()?.clone();
            programs
                .iter()
                .find(|p| p["name"] == PROGRAM && p["state"] == "running")
                .cloned()
        },
    )
    .await
    .unwrap();
    let pid_before = agent["pid"].as_u64().unwrap();
    assert_eq!(get(base, "/api/nodes/c1/g1/nobody", &op).await.status, 404);

    // Hardware faults reach the frames (the simulator overheats one node after 2 s).
    eventually(
        Duration::from_secs(30),
        "an overheating node in the faults",
        || async {
            let g = get(base, "/api/frame?view=grid", &op).await.json();
            g["faults"]
                .as_array()?
                .iter()
                .any(|f| f["kind"] == "temperature" && f["hardware"] == true)
                .then_some(())
        },
    )
    .await
    .unwrap();

    // The process table, sorted and filtered on the server.
    let node = sim_node_with_table(&p, &op).await;
    let t = get(base, &format!("/api/nodes/{node}/processes?sort=cpu"), &op)
        .await
        .json();
    let cpu: Vec<f64> = t["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["cpu_pct"].as_f64().unwrap())
        .collect();
    assert!(cpu.windows(2).all(|w| w[0] >= w[1]), "{cpu:?}");
    assert!(cpu.first() > cpu.last(), "{cpu:?}");
    let t = get(
        base,
        &format!("/api/nodes/{node}/processes?sort=name&order=asc"),
        &op,
    )
    .await
    .json();
    let names: Vec<&str> = t["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert!(names.windows(2).all(|w| w[0] <= w[1]), "{names:?}");
    let first = names[0];
    let t = get(
        base,
        &format!("/api/nodes/{node}/processes?filter={first}"),
        &op,
    )
    .await
    .json();
    let filtered = t["rows"].as_array().unwrap();
    assert!(!filtered.is_empty() && filtered.len() < names.len(), "{t}");

    // Bad input: clear 400s.
    for path in [
        "/api/frame?view=bogus",
        "/api/frame?view=node&node=a/b",
        "/api/frame?view=cluster&cluster=a.b",
        "/api/history?from=10&to=5",
        "/api/history?range=1000d",
        "/api/nodes/c01/g01/n0001/processes?sort=colour",
    ] {
        let r = get(base, path, &op).await;
        assert_eq!(
            r.status,
            400,
            "{path}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(r.json()["error"], "invalid");
    }

    // The static view: inventory per cluster from ClickHouse (the simulator's, via the ingest).
    let st = eventually(
        Duration::from_secs(60),
        "inventory for c01 and c02",
        || async {
            let s = get(base, "/api/static", &op).await.json();
            let cl = s["clusters"].as_array()?.clone();
            (cl.len() >= 2 && cl.iter().all(|c| c["cpu_cores"].as_u64() > Some(0))).then_some(cl)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", p.logs()));
    let c01 = st.iter().find(|c| c["cluster"] == "c01").unwrap();
    assert_eq!(c01["nodes"], 6, "{c01}");
    assert!(
        c01["memory_bytes"].as_u64().unwrap() > 0
            && c01["disk_capacity_bytes"].as_u64().unwrap() > 0
    );
    let nodes = get(base, "/api/static/c01", &op).await.json();
    assert_eq!(nodes["nodes"].as_array().unwrap().len(), 6);

    // History: the days loaded above, in the trends and in the faults per day.
    let h = get(base, "/api/history?range=7d", &op).await.json();
    assert_eq!(h["table"], "node_metrics_1h", "{h}");
    let trend = h["trends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["cluster"] == "c01")
        .unwrap_or_else(|| panic!("{h}"));
    let today = gridmon_nats::frame::now_ms() / 86_400_000;
    let days_with_points: std::collections::BTreeSet<String> = trend["t"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| day(today - t.as_i64().unwrap() / 86_400_000))
        .collect();
    for ago in HISTORY_DAYS {
        assert!(
            days_with_points.contains(&day(ago)),
            "{} not in {days_with_points:?}",
            day(ago)
        );
    }
    let days = h["fault_days"].as_array().unwrap();
    for ago in HISTORY_DAYS {
        let d = day(ago);
        let row = days
            .iter()
            .find(|r| r["day"] == d.as_str())
            .unwrap_or_else(|| panic!("{d} not in {days:?}"));
        assert_eq!(
            (row["hardware"].as_u64(), row["software"].as_u64()),
            (Some(2), Some(1)),
            "{row}"
        );
    }
    assert!(h["faults"].as_array().unwrap().len() >= 9);
    let one = get(base, "/api/history?range=7d&cluster=c02", &op)
        .await
        .json();
    assert!(one["trends"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["cluster"] == "c02"));
    assert!(one["fault_days"]
        .as_array()
        .unwrap()
        .iter()
        .all(|d| !HISTORY_DAYS.iter().any(|a| d["day"] == day(*a).as_str())));

    // Actions: refused for a viewer, without the CSRF token, from a foreign origin, or with bad
    // arguments; done for an operator, and audited under the operator's name.
    let cmd_path = format!("/api/nodes/{AGENT_NODE}/command");
    let restart = json!({"op": "restart", "program": PROGRAM});
    let post = |who: Login, extra: Vec<(&'static str, String)>, body: Value| {
        let path = cmd_path.clone();
        async move {
            let mut headers: Vec<(&str, String)> = vec![("Cookie", who.cookie.clone())];
            headers.extend(extra);
            let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            http(base, "POST", &path, &h, Some(&body)).await
        }
    };
    let r = post(
        vi.clone(),
        vec![("X-CSRF-Token", vi.csrf.clone())],
        restart.clone(),
    )
    .await;
    assert_eq!(r.status, 403, "viewer");
    assert_eq!(r.json()["error"], "forbidden");
    let r = post(op.clone(), vec![], restart.clone()).await;
    assert_eq!((r.status, r.json()["error"].as_str()), (403, Some("csrf")));
    let r = post(
        op.clone(),
        vec![("X-CSRF-Token", "0".repeat(64))],
        restart.clone(),
    )
    .await;
    assert_eq!((r.status, r.json()["error"].as_str()), (403, Some("csrf")));
    let r = post(
        op.clone(),
        vec![
            ("X-CSRF-Token", op.csrf.clone()),
            ("Origin", "http://evil.example".into()),
        ],
        restart.clone(),
    )
    .await;
    assert_eq!((r.status, r.json()["error"].as_str()), (403, Some("csrf")));
    for bad in [
        json!({"op": "shutdown", "program": PROGRAM}),
        json!({"op": "restart", "program": "web; rm -rf /"}),
        json!({"op": "deploy", "program": PROGRAM}),
        json!({"op": "restart", "program": PROGRAM, "extra": 1}),
    ] {
        let r = post(
            op.clone(),
            vec![("X-CSRF-Token", op.csrf.clone())],
            bad.clone(),
        )
        .await;
        assert!(r.status == 400 || r.status == 422, "{bad}: {}", r.status);
    }
    let r = post(
        op.clone(),
        vec![("X-CSRF-Token", op.csrf.clone())],
        restart.clone(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let out = r.json();
    assert_eq!(out["reply"]["ok"], true, "{out}");
    assert_eq!(out["user"], OPERATOR.0);
    eventually(Duration::from_secs(20), "the program restarted", || async {
        let n = get(base, &format!("/api/nodes/{AGENT_NODE}"), &op)
            .await
            .json();
        let p = n["report"]["body"]["programs"]
            .as_array()?
            .iter()
            .find(|p| p["name"] == PROGRAM)?
            .clone();
        (p["state"] == "running" && p["pid"].as_u64()? != pid_before).then_some(())
    })
    .await
    .unwrap();
    let audit = eventually(
        Duration::from_secs(60),
        "the restart in command_audit",
        || async {
            let a = get(base, &format!("/api/audit?node={AGENT_NODE}"), &op)
                .await
                .json();
            let recs = a["records"].as_array()?.clone();
            recs.iter()
                .any(|r| {
                    r["op"] == "restart"
                        && r["on_behalf_of"] == OPERATOR.0
                        && r["phase"] == "finished"
                        && r["ok"] == 1
                })
                .then_some(recs)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", p.logs()));
    assert!(
        audit.iter().all(|r| r["issuer_name"] == "dashboard"),
        "{audit:?}"
    );
    let n: u64 = p
        .db
        .client
        .query("SELECT count() FROM command_audit WHERE on_behalf_of = ? AND op = 'restart' AND phase = 'finished' AND ok = 1")
        .bind(OPERATOR.0)
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(n, 1);

    // Logging out ends the session.
    let r = http(base, "POST", "/api/logout", &[("Cookie", &op.cookie)], None).await;
    assert_eq!(r.status, 200);
    assert_eq!(get(base, "/api/frame", &op).await.status, 401);
    let stats = get(base, "/api/stats", &vi).await.json();
    assert!(
        stats["live"]["node_reports"].as_u64().unwrap() > 13,
        "{stats}"
    );
    assert_eq!(stats["live"]["malformed"], 0, "{stats}");
}

/// Without users the dashboard is read-only and refuses to listen beyond loopback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_without_users_is_read_only_and_local() {
    let nats = NatsServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = gridmon_commands::child::command(GRIDMON)
        .args(["web", "--nats-url", &nats.url(), "--listen", "0.0.0.0:0"])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("loopback"), "{err}");

    let port = free_port().unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let _web = spawn(
        dir.path(),
        "web",
        &[
            "web",
            "--nats-url",
            &nats.url(),
            "--listen",
            &format!("127.0.0.1:{port}"),
        ],
    );
    eventually(Duration::from_secs(20), "the dashboard", || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()
    })
    .await
    .unwrap();
    let s = http(&base, "GET", "/api/session", &[], None).await.json();
    assert_eq!(
        (s["login_enabled"].as_bool(), s["can_act"].as_bool()),
        (Some(false), Some(false))
    );
    assert_eq!(
        http(&base, "GET", "/api/frame", &[], None).await.status,
        200
    );
    let r = http(
        &base,
        "POST",
        "/api/nodes/c1/g1/n1/command",
        &[],
        Some(&json!({"op": "restart", "program": "x"})),
    )
    .await;
    assert_eq!(r.status, 403);
    assert!(r.json()["message"].as_str().unwrap().contains("read-only"));
    // No history without ClickHouse: a clear 503.
    let r = http(&base, "GET", "/api/history", &[], None).await;
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (503, Some("no_history"))
    );
    let page = http(&base, "GET", "/", &[], None).await;
    assert_eq!(page.status, 200);
    assert!(page
        .header("content-security-policy")
        .unwrap()
        .contains("default-src 'self'"));
    for asset in [
        "app.js",
        "app.css",
        "uPlot.iife.min.js",
        "uPlot.min.css",
        "uPlot.LICENSE",
    ] {
        assert_eq!(
            http(&base, "GET", &format!("/assets/{asset}"), &[], None)
                .await
                .status,
            200,
            "{asset}"
        );
    }
    assert_eq!(
        http(&base, "GET", "/assets/../Cargo.toml", &[], None)
            .await
            .status,
        404
    );
    eventually(Duration::from_secs(20), "the bus connected", || async {
        let s = http(&base, "GET", "/api/session", &[], None).await.json();
        (s["bus"] == "connected").then_some(())
    })
    .await
    .unwrap();

    // With the bus down the dashboard still serves, and says so.
    let dead = free_port().unwrap();
    let port = free_port().unwrap();
    let _down = spawn(
        dir.path(),
        "web-down",
        &[
            "web",
            "--nats-url",
            &format!("nats://127.0.0.1:{dead}"),
            "--listen",
            &format!("127.0.0.1:{port}"),
        ],
    );
    let base = format!("http://127.0.0.1:{port}");
    eventually(
        Duration::from_secs(20),
        "the dashboard without a bus",
        || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
        },
    )
    .await
    .unwrap();
    let s = http(&base, "GET", "/api/session", &[], None).await.json();
    assert_eq!(s["bus"], "pending", "{s}");
    let g = http(&base, "GET", "/api/frame", &[], None).await.json();
    assert_eq!(g["clusters"].as_array().map(Vec::len), Some(0), "{g}");
}

// ---------------------------------------------------------------------------------------------
// The pages in headless Chromium
// ---------------------------------------------------------------------------------------------

fn browser_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_pages_in_headless_chromium() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists()
            && browser_dir().join("node_modules/playwright-core").exists(),
        "Chromium ({chromium}) and tests/browser/node_modules are needed: run scripts/setup"
    );
    let p = pipeline("web_browser").await;
    let op = login(&p.base, OPERATOR.0, OPERATOR.1).await;
    let sim = sim_node_with_table(&p, &op).await;
    // The static view needs the inventory in ClickHouse first.
    eventually(Duration::from_secs(60), "inventory", || async {
        let s = get(&p.base, "/api/static", &op).await.json();
        (s["clusters"].as_array()?.len() >= 2).then_some(())
    })
    .await
    .unwrap();
    let shots = std::env::var("GRIDMON_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| p.dir.path().join("shots"));
    std::fs::create_dir_all(&shots).unwrap();
    let days: Vec<String> = HISTORY_DAYS.iter().map(|a| day(*a)).collect();
    let out = gridmon_commands::child::command("node")
        .arg("dashboard.mjs")
        .current_dir(browser_dir())
        .env("BASE_URL", &p.base)
        .env("OPERATOR", OPERATOR.0)
        .env("OPERATOR_PASSWORD", OPERATOR.1)
        .env("VIEWER", VIEWER.0)
        .env("VIEWER_PASSWORD", VIEWER.1)
        .env("AGENT_NODE", AGENT_NODE)
        .env("PROGRAM", PROGRAM)
        .env("SIM_NODE", &sim)
        .env("CLUSTER", "c01")
        .env("EXPECT_DAYS", days.join(","))
        .env("SCREENSHOT_DIR", &shots)
        .env("CHROMIUM", &chromium)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(300), out)
        .await
        .expect("the browser run ends within 5 minutes")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "browser checks failed:\n{stdout}\n{stderr}\n{}",
        p.logs()
    );
    // Every check ran and passed (the script stops at nothing, so count them).
    let passed = stdout.lines().filter(|l| l.starts_with("ok ")).count();
    assert!(passed >= 17, "only {passed} checks passed:\n{stdout}");
    for view in ["grid", "cluster", "node", "processes", "history"] {
        let png = shots.join(format!("{view}.png"));
        assert!(
            std::fs::metadata(&png)
                .map(|m| m.len() > 10_000)
                .unwrap_or(false),
            "{png:?}"
        );
    }
}
