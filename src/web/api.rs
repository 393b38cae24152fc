//! The HTTP surface: embedded pages, the JSON API (`docs/web-api.md`) and the SSE stream.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::Stream;
use gridmon_nats::command::{CommandBody, Op};
use gridmon_nats::config::WebRole;
use gridmon_nats::frame::now_ms;
use gridmon_nats::wire::{ProcessOrder, ProcessRow};
use gridmon_nats::NodeId;
use serde::{Deserialize, Serialize};

use super::auth::{self, Caller};
use super::live::View;
use super::App;

type Shared = State<Arc<App>>;

/// An error answer: `{"error": kind, "message": …}` with a fitting status.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    kind: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            message: message.into(),
        }
    }
    fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid", message)
    }
    fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": self.kind, "message": self.message});
        let mut r = (self.status, Json(body)).into_response();
        r.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        r
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// JSON with `Cache-Control: no-store`.
fn json<T: Serialize>(v: &T) -> Response {
    let mut r = Json(v).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn raw_json(body: Arc<str>) -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body.to_string(),
    )
        .into_response()
}

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/assets/{file}", get(asset))
        .route("/api/session", get(session))
        .route("/api/login", post(login))
        .route("/api/logout", post(logout))
        .route("/api/live", get(live_sse))
        .route("/api/frame", get(frame))
        .route("/api/nodes", get(nodes))
        .route("/api/nodes/{cluster}/{group}/{node}", get(node))
        .route(
            "/api/nodes/{cluster}/{group}/{node}/processes",
            get(processes),
        )
        .route("/api/nodes/{cluster}/{group}/{node}/command", post(command))
        .route("/api/rollup", get(rollup))
        .route("/api/static", get(static_view))
        .route("/api/static/{cluster}", get(static_cluster))
        .route("/api/history", get(history))
        .route("/api/audit", get(audit))
        .route("/api/stats", get(stats))
        .fallback(|| async { ApiError::not_found("no such page or endpoint") })
        .with_state(app)
}

// ---------------------------------------------------------------------------------------------
// Pages
// ---------------------------------------------------------------------------------------------

const INDEX: &str = include_str!("assets/index.html");

/// Scripts and styles only from this server; no frames; no sniffing.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                   img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; \
                   base-uri 'none'; form-action 'self'";

async fn index() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        INDEX,
    )
        .into_response()
}

async fn asset(Path(file): Path<String>) -> Response {
    let (ctype, body): (&str, &'static [u8]) = match file.as_str() {
        "app.js" => (
            "text/javascript; charset=utf-8",
            include_bytes!("assets/app.js"),
        ),
        "app.css" => ("text/css; charset=utf-8", include_bytes!("assets/app.css")),
        "uPlot.iife.min.js" => (
            "text/javascript; charset=utf-8",
            include_bytes!("assets/vendor/uPlot.iife.min.js"),
        ),
        "uPlot.min.css" => (
            "text/css; charset=utf-8",
            include_bytes!("assets/vendor/uPlot.min.css"),
        ),
        "uPlot.LICENSE" => (
            "text/plain; charset=utf-8",
            include_bytes!("assets/vendor/uPlot.LICENSE"),
        ),
        _ => return ApiError::not_found(format!("no asset {file:?}")).into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, ctype),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

// ---------------------------------------------------------------------------------------------
// Sessions
// ---------------------------------------------------------------------------------------------

fn cookie_token(headers: &HeaderMap) -> Option<&str> {
    auth::session_cookie(headers.get(header::COOKIE).and_then(|v| v.to_str().ok()))
}

fn caller(app: &App, headers: &HeaderMap) -> Caller {
    app.auth.caller(cookie_token(headers))
}

/// Reading needs a login when logins exist.
fn viewer(app: &App, headers: &HeaderMap) -> ApiResult<Caller> {
    let c = caller(app, headers);
    if app.auth.enabled() && c.user.is_none() {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "log in first (POST /api/login)",
        ));
    }
    Ok(c)
}

/// A state-changing request: an operator's session, its CSRF token in `X-CSRF-Token`, and no
/// foreign `Origin`.
fn operator(app: &App, headers: &HeaderMap) -> ApiResult<String> {
    if !app.auth.enabled() {
        return Err(ApiError::forbidden(
            "the dashboard is read-only: no [[web.users]] are configured",
        ));
    }
    let c = viewer(app, headers)?;
    check_origin(headers)?;
    let sent = headers
        .get(auth::CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    match &c.csrf {
        Some(t) if auth::same_token(t, sent) => {}
        _ => {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "csrf",
                "missing or wrong X-CSRF-Token (GET /api/session gives it)",
            ))
        }
    }
    if c.role != WebRole::Operator {
        return Err(ApiError::forbidden(format!(
            "{} is a viewer; actions need the operator role",
            c.user.as_deref().unwrap_or("?")
        )));
    }
    Ok(c.user.unwrap_or_default())
}

/// Browsers send `Origin` on cross-site POSTs: it must name this server.
fn check_origin(headers: &HeaderMap) -> ApiResult<()> {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return Ok(());
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let origin_host = origin
        .split_once("://")
        .map_or(origin, |(_, rest)| rest)
        .trim_end_matches('/');
    if origin_host != host {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "csrf",
            format!("cross-origin request from {origin}"),
        ));
    }
    Ok(())
}

#[derive(Debug, Serialize)]
struct SessionOut {
    /// Whether this dashboard has logins at all.
    login_enabled: bool,
    user: Option<String>,
    role: WebRole,
    /// Echo in `X-CSRF-Token` on every POST.
    csrf: Option<String>,
    /// Whether actions are possible for this caller.
    can_act: bool,
    /// Whether the dashboard has history (ClickHouse).
    history: bool,
    prefix: String,
    /// The NATS connection: `connected`, `disconnected` or `pending`.
    bus: &'static str,
}

fn session_out(app: &App, c: &Caller) -> SessionOut {
    SessionOut {
        login_enabled: app.auth.enabled(),
        user: c.user.clone(),
        role: c.role,
        csrf: c.csrf.clone(),
        can_act: app.auth.enabled()
            && c.role == WebRole::Operator
            && c.user.is_some()
            && app.key.is_some(),
        history: app.history.is_some(),
        prefix: app.config.nats.prefix.clone(),
        bus: app.bus_state(),
    }
}

async fn session(State(app): Shared, headers: HeaderMap) -> Response {
    json(&session_out(&app, &caller(&app, &headers)))
}

#[derive(Debug, Deserialize)]
struct LoginIn {
    user: String,
    password: String,
}

async fn login(
    State(app): Shared,
    headers: HeaderMap,
    body: Option<Json<LoginIn>>,
) -> ApiResult<Response> {
    if !app.auth.enabled() {
        return Err(ApiError::bad(
            "this dashboard has no logins (no [[web.users]])",
        ));
    }
    check_origin(&headers)?;
    let Some(Json(body)) = body else {
        return Err(ApiError::bad(
            "send JSON {\"user\": …, \"password\": …} with Content-Type: application/json",
        ));
    };
    if body.user.len() > 64 || body.password.len() > 1024 {
        return Err(ApiError::bad("user or password too long"));
    }
    let Some((token, s)) = app.auth.login(&body.user, &body.password).await else {
        tracing::warn!(user = %body.user, "dashboard login failed");
        // A failed guess costs the guesser a moment.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "wrong user or password",
        ));
    };
    tracing::info!(user = %s.user, role = ?s.role, "dashboard login");
    let c = Caller {
        user: Some(s.user.clone()),
        role: s.role,
        csrf: Some(s.csrf.clone()),
    };
    let mut r = json(&session_out(&app, &c));
    let cookie = format!(
        "{}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
        auth::COOKIE,
        app.config.web.session_ttl.as_secs()
    );
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(r)
}

async fn logout(State(app): Shared, headers: HeaderMap) -> ApiResult<Response> {
    check_origin(&headers)?;
    if let Some(t) = cookie_token(&headers) {
        app.auth.logout(t);
    }
    let mut r = json(&serde_json::json!({"ok": true}));
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("gridmon_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    Ok(r)
}

// ---------------------------------------------------------------------------------------------
// Real time
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
struct ViewQuery {
    /// `grid` (default), `cluster` or `node`.
    view: Option<String>,
    cluster: Option<String>,
    /// `cluster/group/node`.
    node: Option<String>,
}

fn parse_view(q: &ViewQuery) -> ApiResult<View> {
    match q.view.as_deref().unwrap_or("grid") {
        "grid" => Ok(View::Grid),
        "cluster" => {
            let c = q
                .cluster
                .as_deref()
                .ok_or_else(|| ApiError::bad("view=cluster needs cluster="))?;
            gridmon_nats::identity::validate_token("cluster", c)
                .map_err(|e| ApiError::bad(e.to_string()))?;
            Ok(View::Cluster(c.to_string()))
        }
        "node" => {
            let n = q
                .node
                .as_deref()
                .ok_or_else(|| ApiError::bad("view=node needs node=cluster/group/node"))?;
            Ok(View::Node(parse_node(n)?.to_string()))
        }
        other => Err(ApiError::bad(format!(
            "view {other:?}: one of grid, cluster, node"
        ))),
    }
}

fn parse_node(s: &str) -> ApiResult<NodeId> {
    let mut it = s.split('/');
    match (it.next(), it.next(), it.next(), it.next()) {
        (Some(c), Some(g), Some(n), None) => {
            NodeId::new(c, g, n).map_err(|e| ApiError::bad(format!("node {s:?}: {e}")))
        }
        _ => Err(ApiError::bad(format!(
            "node {s:?}: expected cluster/group/node"
        ))),
    }
}

fn node_id(cluster: &str, group: &str, node: &str) -> ApiResult<NodeId> {
    NodeId::new(cluster, group, node).map_err(|e| ApiError::bad(e.to_string()))
}

/// The real-time view as Server-Sent Events: one `frame` event per push period.
async fn live_sse(
    State(app): Shared,
    headers: HeaderMap,
    Query(q): Query<ViewQuery>,
) -> ApiResult<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    viewer(&app, &headers)?;
    let view = parse_view(&q)?;
    let rx = app.tick.clone();
    let stream = futures::stream::unfold(
        (app, rx, view, true),
        |(app, mut rx, view, first)| async move {
            if !first {
                // The ticker stops at shutdown: the stream ends and the connection closes.
                rx.changed().await.ok()?;
            }
            let f = app.live().frame(&view, now_ms());
            let ev = SseEvent::default().event("frame").data(&*f);
            Some((Ok(ev), (app, rx, view, false)))
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// One frame of the real-time view, as the stream would push it.
async fn frame(
    State(app): Shared,
    headers: HeaderMap,
    Query(q): Query<ViewQuery>,
) -> ApiResult<Response> {
    viewer(&app, &headers)?;
    let view = parse_view(&q)?;
    let f = app.live().frame(&view, now_ms());
    Ok(raw_json(f))
}

async fn nodes(State(app): Shared, headers: HeaderMap) -> ApiResult<Response> {
    viewer(&app, &headers)?;
    let live = app.live();
    let ids: Vec<&str> = live.node_ids().collect();
    Ok(json(&serde_json::json!({ "nodes": ids })))
}

async fn node(
    State(app): Shared,
    headers: HeaderMap,
    Path((cluster, group, node)): Path<(String, String, String)>,
) -> ApiResult<Response> {
    viewer(&app, &headers)?;
    let id = node_id(&cluster, &group, &node)?;
    let mut live = app.live();
    let key = id.to_string();
    if !live.has_node(&key) {
        return Err(ApiError::not_found(format!("no report from {id}")));
    }
    let f = live.frame(&View::Node(key), now_ms());
    Ok(raw_json(f))
}

#[derive(Debug, Deserialize)]
struct ProcQuery {
    /// `name`, `pid`, `cpu` (default) or `mem`.
    sort: Option<String>,
    /// `asc` or `desc` (default: desc for cpu and mem, asc for name and pid).
    order: Option<String>,
    /// Keep rows whose name or command line contains this (case-insensitive).
    filter: Option<String>,
    limit: Option<usize>,
}

#[derive(Debug, Serialize)]
struct ProcOut<'a> {
    node: String,
    ts_ms: i64,
    total: u32,
    /// Rows in the table before the filter.
    rows_in_table: usize,
    sort: &'static str,
    order: &'static str,
    rows: Vec<&'a ProcessRow>,
}

async fn processes(
    State(app): Shared,
    headers: HeaderMap,
    Path((cluster, group, node)): Path<(String, String, String)>,
    Query(q): Query<ProcQuery>,
) -> ApiResult<Response> {
    viewer(&app, &headers)?;
    let id = node_id(&cluster, &group, &node)?;
    let Some((ts_ms, table)) = app.live().process_table(&id.to_string()) else {
        return Err(ApiError::not_found(format!(
            "no process table from {id} yet"
        )));
    };
    let sort = q.sort.as_deref().unwrap_or("cpu");
    let order = ProcessOrder::parse(sort)
        .ok_or_else(|| ApiError::bad(format!("sort {sort:?}: one of name, pid, cpu, mem")))?;
    let desc = match q.order.as_deref() {
        Some("asc") => false,
        Some("desc") => true,
        None => order.desc_by_default(),
        Some(other) => return Err(ApiError::bad(format!("order {other:?}: asc or desc"))),
    };
    let rows_in_table = table.rows.len();
    let mut rows = table.rows;
    if let Some(f) = q.filter.as_deref().filter(|f| !f.is_empty()) {
        let f = f.to_lowercase();
        rows.retain(|r| {
            r.name.to_lowercase().contains(&f) || r.cmdline.to_lowercase().contains(&f)
        });
    }
    let mut sorted: Vec<&ProcessRow> = rows.iter().collect();
    ProcessRow::sort(&mut sorted, order, desc);
    sorted.truncate(q.limit.unwrap_or(1000).min(10_000));
    Ok(json(&ProcOut {
        node: id.to_string(),
        ts_ms,
        total: table.total,
        rows_in_table,
        sort: order.as_str(),
        order: if desc { "desc" } else { "asc" },
        rows: sorted,
    }))
}

#[derive(Debug, Deserialize)]
struct RollupQuery {
    /// `grid` (default), `CLUSTER` or `CLUSTER/GROUP`.
    scope: Option<String>,
}

async fn rollup(
    State(app): Shared,
    headers: HeaderMap,
    Query(q): Query<RollupQuery>,
) -> ApiResult<Response> {
    viewer(&app, &headers)?;
    let scope = match q.scope.as_deref() {
        None | Some("grid") | Some("") => String::new(),
        Some(s) => s.to_string(),
    };
    let live = app.live();
    let r = live
        .rollup(&scope)
        .ok_or_else(|| ApiError::not_found(format!("no rollup for {scope:?} yet")))?;
    Ok(json(r))
}

// ---------------------------------------------------------------------------------------------
// Actions
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CommandIn {
    /// start, stop, restart, degrade, deploy, upgrade, rollback.
    op: String,
    program: String,
    version: Option<String>,
    /// degrade: true to enter (default), false to leave.
    on: Option<bool>,
}

const WEB_OPS: [Op; 7] = [
    Op::Start,
    Op::Stop,
    Op::Restart,
    Op::Degrade,
    Op::Deploy,
    Op::Upgrade,
    Op::Rollback,
];

async fn command(
    State(app): Shared,
    headers: HeaderMap,
    Path((cluster, group, node)): Path<(String, String, String)>,
    body: Option<Json<CommandIn>>,
) -> ApiResult<Response> {
    let user = operator(&app, &headers)?;
    let id = node_id(&cluster, &group, &node)?;
    let Some(Json(input)) = body else {
        return Err(ApiError::bad(
            "send JSON {\"op\": …, \"program\": …} with Content-Type: application/json",
        ));
    };
    let op = Op::parse(&input.op)
        .filter(|o| WEB_OPS.contains(o))
        .ok_or_else(|| {
            ApiError::bad(format!(
                "op {:?}: one of start, stop, restart, degrade, deploy, upgrade, rollback",
                input.op
            ))
        })?;
    gridmon_commands::spec::validate_argument(&input.program)
        .map_err(|e| ApiError::bad(format!("program: {e}")))?;
    if let Some(v) = &input.version {
        gridmon_commands::spec::validate_argument(v)
            .map_err(|e| ApiError::bad(format!("version: {e}")))?;
    }
    if matches!(op, Op::Deploy | Op::Upgrade) && input.version.is_none() {
        return Err(ApiError::bad(format!("{op} needs a version")));
    }
    let Some(key) = app.key.as_ref() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_key",
            "the dashboard has no operator key: set web.key_file (or commands.key_file)",
        ));
    };
    let body = CommandBody {
        op,
        program: Some(input.program.clone()),
        version: input.version.clone(),
        on: (op == Op::Degrade).then(|| input.on.unwrap_or(true)),
        on_behalf_of: Some(user.clone()),
        ..Default::default()
    };
    let timeout = crate::ctl::command_timeout(&app.config, op);
    let started = std::time::Instant::now();
    let reply = crate::ctl::request_one(&app.client, &app.config, &id, body, Some(key), timeout)
        .await
        .map_err(|e| {
            tracing::warn!(%user, %op, node = %id, program = %input.program, error = %format!("{e:#}"), "dashboard action: no answer");
            ApiError::new(StatusCode::BAD_GATEWAY, "no_answer", format!("{e:#}"))
        })?;
    tracing::info!(%user, %op, node = %id, program = %input.program, ok = reply.ok, message = %reply.message, "dashboard action");
    Ok(json(&serde_json::json!({
        "node": id.to_string(),
        "op": op.as_str(),
        "program": input.program,
        "user": user,
        "elapsed_ms": started.elapsed().as_millis() as u64,
        "reply": reply,
    })))
}

// ---------------------------------------------------------------------------------------------
// History (ClickHouse)
// ---------------------------------------------------------------------------------------------

fn history_of(app: &App) -> ApiResult<&super::history::History> {
    app.history.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_history",
            "no ClickHouse configured (clickhouse.url / CLICKHOUSE_URL)",
        )
    })
}

fn db_error(e: anyhow::Error) -> ApiError {
    ApiError::new(StatusCode::BAD_GATEWAY, "clickhouse", format!("{e:#}"))
}

async fn static_view(State(app): Shared, headers: HeaderMap) -> ApiResult<Response> {
    viewer(&app, &headers)?;
    let clusters = history_of(&app)?.clusters().await.map_err(db_error)?;
    Ok(json(&serde_json::json!({ "clusters": clusters })))
}

async fn static_cluster(
    State(app): Shared,
    headers: HeaderMap,
    Path(cluster): Path<String>,
) -> ApiResult<Response> {
    viewer(&app, &headers)?;
    gridmon_nats::identity::validate_token("cluster", &cluster)
        .map_err(|e| ApiError::bad(e.to_string()))?;
    let nodes = history_of(&app)?
        .cluster_nodes(&cluster)
        .await
        .map_err(db_error)?;
    Ok(json(
        &serde_json::json!({ "cluster": cluster, "nodes": nodes }),
    ))
}

#[derive(Debug, Deserialize)]
struct HistoryQuery {
    /// Range start and end, ms since the Unix epoch; default: `range` back from now.
    from: Option<i64>,
    to: Option<i64>,
    /// A duration back from `to` (`24h`, `7d`); default 24h.
    range: Option<String>,
    cluster: Option<String>,
}

async fn history(
    State(app): Shared,
    headers: HeaderMap,
    Query(q): Query<HistoryQuery>,
) -> ApiResult<Response> {
    viewer(&app, &headers)?;
    let h = history_of(&app)?;
    let to = q.to.unwrap_or_else(now_ms);
    let from = match (q.from, q.range.as_deref()) {
        (Some(f), _) => f,
        (None, r) => {
            let d = humantime::parse_duration(r.unwrap_or("24h"))
                .map_err(|e| ApiError::bad(format!("range: {e}")))?;
            to - i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2)
        }
    };
    if from >= to {
        return Err(ApiError::bad("from must be before to"));
    }
    let max = i64::try_from(app.config.web.history_max_range.as_millis()).unwrap_or(i64::MAX);
    if to - from > max {
        return Err(ApiError::bad(format!(
            "the range is longer than web.history_max_range ({})",
            humantime::format_duration(app.config.web.history_max_range)
        )));
    }
    if let Some(c) = &q.cluster {
        gridmon_nats::identity::validate_token("cluster", c)
            .map_err(|e| ApiError::bad(e.to_string()))?;
    }
    let answer = h
        .history(q.cluster.as_deref(), from, to)
        .await
        .map_err(db_error)?;
    Ok(json(&answer))
}

#[derive(Debug, Deserialize)]
struct AuditQuery {
    node: Option<String>,
    limit: Option<u64>,
}

async fn audit(
    State(app): Shared,
    headers: HeaderMap,
    Query(q): Query<AuditQuery>,
) -> ApiResult<Response> {
    viewer(&app, &headers)?;
    if let Some(n) = &q.node {
        parse_node(n)?;
    }
    let rows = history_of(&app)?
        .audit(q.node.as_deref(), q.limit.unwrap_or(50))
        .await
        .map_err(db_error)?;
    Ok(json(&serde_json::json!({ "records": rows })))
}

async fn stats(State(app): Shared, headers: HeaderMap) -> ApiResult<Response> {
    viewer(&app, &headers)?;
    let live = app.live();
    Ok(json(&serde_json::json!({
        "uptime_s": app.started.elapsed().as_secs(),
        "bus": app.bus_state(),
        "nodes": live.node_count(),
        "live": live.stats,
    })))
}
