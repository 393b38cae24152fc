//! Drawing: the state of [`App`] and [`Store`] as lines of text on any ratatui backend. Every
//! highlight has a marker character as well as a colour (`!`, `STALE`, `OFFLINE`, `ALARM`), so it
//! reads in a monochrome terminal and in `tmux capture-pane` text. ASCII only.

use std::time::{Duration, Instant};

use gridmon_nats::wire::{
    ActiveAlarm, MemberLine, MemberStatus, ProcState, ProcessRow, ProgramState, ProgramStatus,
    Rollup, SensorKind, SensorReading, Severity,
};
use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Widget};

use super::app::{App, Focus, SortKey, Tone};
use super::model::{alarm_text, Place, Store};

/// Things the view shows that are not in the store.
#[derive(Debug, Clone)]
pub struct Context {
    pub connected: bool,
    /// The subject prefix, for the "waiting for" hints.
    pub prefix: String,
}

/// Alarm events stay on the status line this long.
const ALARM_NOTE_FOR: Duration = Duration::from_secs(30);

fn bold() -> Style {
    Style::default().add_modifier(Modifier::BOLD)
}

fn title() -> Style {
    Style::default()
        .add_modifier(Modifier::BOLD)
        .add_modifier(Modifier::REVERSED)
}

fn red() -> Style {
    Style::default().fg(Color::Red).add_modifier(Modifier::BOLD)
}

fn yellow() -> Style {
    Style::default().fg(Color::Yellow)
}

fn magenta() -> Style {
    Style::default()
        .fg(Color::Magenta)
        .add_modifier(Modifier::BOLD)
}

/// Draws the whole screen into `buf`.
pub fn render(app: &App, store: &Store, ctx: &Context, now: Instant, area: Rect, buf: &mut Buffer) {
    let width = usize::from(area.width);
    let height = usize::from(area.height);
    let mut lines: Vec<Line<'static>> = header(app, store, ctx, now);
    let body_h = height.saturating_sub(lines.len() + 2);
    let mut body = match app.place() {
        Place::Node(_) => node_body(app, store, ctx, now, body_h, width),
        _ => members_body(app, store, ctx, body_h),
    };
    body.truncate(body_h);
    body.resize(body_h, Line::default());
    lines.extend(body);
    lines.push(status_line(app, store, now));
    lines.push(footer(app));
    lines.truncate(height);
    Paragraph::new(lines).render(area, buf);
}

fn path(app: &App) -> String {
    let mut parts: Vec<String> = Vec::new();
    let group_mode = matches!(app.root(), Place::Group(..));
    for level in &app.stack {
        match &level.place {
            Place::Grid => parts.push("grid".into()),
            Place::Cluster(c) => parts.push(c.clone()),
            Place::Group(c, g) if group_mode && parts.is_empty() => {
                parts.push(format!("group {c}/{g}"));
            }
            Place::Group(_, g) => parts.push(g.clone()),
            Place::Node(id) => parts.push(id.node.clone()),
        }
    }
    parts.join(" > ")
}

fn age(at: Instant, now: Instant) -> String {
    let d = now.saturating_duration_since(at);
    if d < Duration::from_secs(60) {
        format!("{:.1}s ago", d.as_secs_f32())
    } else {
        format!("{} ago", duration(d.as_secs()))
    }
}

fn header(app: &App, store: &Store, ctx: &Context, now: Instant) -> Vec<Line<'static>> {
    let place = app.place();
    let mut first = vec![
        Span::styled("gridmon top ", bold()),
        Span::styled(path(app), bold().fg(Color::Cyan)),
    ];
    if matches!(app.root(), Place::Group(..)) {
        first.push(Span::raw(" (local display)"));
    }
    let updated = match place {
        Place::Node(id) => store.nodes.get(id).map(|n| n.report.at),
        _ => store.rollup(place).map(|r| r.at),
    };
    first.push(Span::raw(match updated {
        Some(at) => format!("  updated {}", age(at, now)),
        None => "  waiting for data".into(),
    }));
    if !ctx.connected {
        first.push(Span::styled("  DISCONNECTED", red()));
    }
    if !app.can_act {
        first.push(Span::raw("  read-only"));
    }
    let second = match place {
        Place::Node(id) => {
            let line = store.member_line(id);
            let mut spans = vec![Span::raw("status ")];
            spans.push(match line {
                Some(m) => status_span(m.status),
                None => Span::raw("?"),
            });
            let alarms = node_alarms(store, place);
            if let Some(m) = line {
                spans.push(Span::raw(format!(
                    "  cpu {}%  mem {}%  disk {}%  temp {}",
                    pct(m.cpu_pct),
                    pct(m.mem_used_pct),
                    pct(m.disk_busy_pct),
                    temp(m.temp_max_c)
                )));
                counts_spans(&mut spans, alarms.len() as u32, m.faults, m.programs_failed);
            }
            Line::from(spans)
        }
        _ => match store.rollup(place) {
            Some(r) => rollup_counts(&r.value),
            None => Line::from(format!(
                "no rollup yet for {} (is `gridmon aggregate` running? subject {})",
                if place == &Place::Grid {
                    "the grid".to_string()
                } else {
                    place.scope_string()
                },
                subject_of(ctx, place)
            )),
        },
    };
    vec![Line::from(first), second]
}

fn subject_of(ctx: &Context, place: &Place) -> String {
    let s = place.scope_string().replace('/', ".");
    if s.is_empty() {
        ctx.prefix.clone()
    } else {
        format!("{}.{s}", ctx.prefix)
    }
}

fn counts_spans(spans: &mut Vec<Span<'static>>, alarms: u32, faults: u32, failed: u32) {
    if alarms > 0 {
        spans.push(Span::styled(format!("  ! ALARMS {alarms}"), magenta()));
    }
    if faults > 0 {
        spans.push(Span::styled(format!("  ! FAULTS {faults}"), red()));
    }
    if failed > 0 {
        spans.push(Span::styled(format!("  ! FAILED PROGRAMS {failed}"), red()));
    }
}

fn rollup_counts(r: &Rollup) -> Line<'static> {
    let n = &r.nodes;
    let mut spans = vec![Span::raw(format!(
        "nodes {}: {} online",
        n.total(),
        n.online
    ))];
    if n.stale > 0 {
        spans.push(Span::styled(format!(", {} STALE", n.stale), yellow()));
    }
    if n.offline > 0 {
        spans.push(Span::styled(format!(", {} OFFLINE", n.offline), red()));
    }
    counts_spans(
        &mut spans,
        r.alarms.active,
        r.faults.nodes_with_faults,
        r.programs.failed(),
    );
    Line::from(spans)
}

fn status_span(s: MemberStatus) -> Span<'static> {
    match s {
        MemberStatus::Online => Span::raw("online"),
        MemberStatus::Stale => Span::styled("STALE", yellow().add_modifier(Modifier::BOLD)),
        MemberStatus::Offline => Span::styled("OFFLINE", red()),
    }
}

fn pct(v: Option<f32>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.1}"))
}

fn temp(v: Option<f32>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.0}C"))
}

/// 1024-based, one decimal below 10.
pub fn bytes(v: f64) -> String {
    const UNITS: [&str; 6] = ["B", "K", "M", "G", "T", "P"];
    let mut v = v.max(0.0);
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{v:.0}B")
    } else if v < 10.0 {
        format!("{v:.1}{}", UNITS[u])
    } else {
        format!("{v:.0}{}", UNITS[u])
    }
}

pub fn duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d{h}h")
    } else if h > 0 {
        format!("{h}h{m}m")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

fn cut(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

// ---------------------------------------------------------------------------------------------
// Grid, cluster and group: the member list.
// ---------------------------------------------------------------------------------------------

fn members_body(app: &App, store: &Store, ctx: &Context, h: usize) -> Vec<Line<'static>> {
    let place = app.place();
    let Some(r) = store.rollup(place) else {
        return vec![
            Line::default(),
            Line::from(format!(
                "  waiting for the {} rollup on {}",
                match place {
                    Place::Grid => "grid",
                    Place::Cluster(_) => "cluster",
                    _ => "group",
                },
                subject_of(ctx, place)
            )),
        ];
    };
    let r = &r.value;
    let mut out = vec![summary_line(r)];
    let members = app.members(store);
    let alarms: Vec<&ActiveAlarm> = r.alarms.list.iter().collect();
    let alarm_rows = if alarms.is_empty() {
        0
    } else {
        alarms.len().min((h / 4).max(2))
    };
    let table_h = h.saturating_sub(2 + if alarm_rows > 0 { alarm_rows + 1 } else { 0 });
    let kind = place.member_kind();
    let filter = if app.filter.is_empty() {
        String::new()
    } else {
        format!(" filter: {}", app.filter)
    };
    out.push(Line::styled(
        format!(
            "{:<2}{:<14} {:<7} {:>5} {:>5} {:>5} {:>5} {:>5} {:>3} {:>3} {:>3} {:>7}",
            "",
            format!("{}S", kind.to_uppercase()),
            "STATUS",
            "CPU%",
            "MAX%",
            "MEM%",
            "DISK%",
            "TEMP",
            "FLT",
            "ALM",
            "PRG",
            if kind == "node" { "" } else { "NODES" },
        ) + &filter,
        title(),
    ));
    if members.is_empty() {
        out.push(Line::from(if app.filter.is_empty() {
            format!("  no {kind}s in this rollup")
        } else {
            format!("  no {kind} matches {:?}", app.filter)
        }));
    }
    let sel = app.member_index(&members);
    let offset = scroll(sel, table_h);
    for (i, m) in members.iter().enumerate().skip(offset).take(table_h) {
        out.push(member_row(m, i == sel, kind == "node"));
    }
    if alarm_rows > 0 {
        out.resize(table_h + 2, Line::default());
        out.push(Line::styled(
            format!(
                "ALARMS {} active ({} critical, {} warning)",
                r.alarms.active, r.alarms.critical, r.alarms.warning
            ),
            title(),
        ));
        for a in alarms.iter().take(alarm_rows) {
            out.push(alarm_line(a, gridmon_nats::frame::now_ms()));
        }
    }
    out
}

/// The first row to show so that `sel` is visible in `h` rows.
fn scroll(sel: usize, h: usize) -> usize {
    if h == 0 || sel < h {
        0
    } else {
        sel + 1 - h
    }
}

fn summary_line(r: &Rollup) -> Line<'static> {
    let metric = |name: &str| r.metrics.get(name).filter(|m| m.count > 0);
    let mut parts = Vec::new();
    if let Some(m) = metric("cpu_pct") {
        parts.push(format!("cpu mean {:.1}% p95 {:.1}%", m.mean, m.p95));
    }
    let s = &r.sums;
    if s.memory_total_bytes > 0 {
        parts.push(format!(
            "mem {}/{}",
            bytes(s.memory_used_bytes as f64),
            bytes(s.memory_total_bytes as f64)
        ));
    }
    if s.fs_total_bytes > 0 {
        parts.push(format!(
            "fs {}/{}",
            bytes(s.fs_used_bytes as f64),
            bytes(s.fs_total_bytes as f64)
        ));
    }
    parts.push(format!(
        "net {}/s in {}/s out",
        bytes(s.net_rx_bytes_ps),
        bytes(s.net_tx_bytes_ps)
    ));
    Line::from(parts.join(" | "))
}

fn member_row(m: &MemberLine, selected: bool, is_node: bool) -> Line<'static> {
    let flagged = m.faults > 0 || m.alarms > 0 || m.programs_failed > 0;
    let status = match m.status {
        MemberStatus::Online => "online",
        MemberStatus::Stale => "STALE",
        MemberStatus::Offline => "OFFLINE",
    };
    let nodes = if is_node {
        String::new()
    } else {
        format!("{}/{}", m.nodes.online, m.nodes.total())
    };
    let mut style = match m.status {
        MemberStatus::Online => Style::default(),
        MemberStatus::Stale => yellow().add_modifier(Modifier::BOLD),
        MemberStatus::Offline => red(),
    };
    if selected {
        style = style.add_modifier(Modifier::REVERSED);
    }
    let n = |v: u32| {
        if v == 0 {
            ".".to_string()
        } else {
            v.to_string()
        }
    };
    let spans = vec![
        Span::styled(if selected { ">" } else { " " }, style),
        Span::styled(if flagged { "!" } else { " " }, style.patch(red())),
        Span::styled(
            format!(
                "{:<14} {:<7} {:>5} {:>5} {:>5} {:>5} {:>5} ",
                cut(&m.name, 14),
                status,
                pct(m.cpu_pct),
                pct(m.cpu_max_pct),
                pct(m.mem_used_pct),
                pct(m.disk_busy_pct),
                temp(m.temp_max_c),
            ),
            style,
        ),
        Span::styled(
            format!("{:>3} ", n(m.faults)),
            if m.faults > 0 {
                style.patch(red())
            } else {
                style
            },
        ),
        Span::styled(
            format!("{:>3} ", n(m.alarms)),
            if m.alarms > 0 {
                style.patch(magenta())
            } else {
                style
            },
        ),
        Span::styled(
            format!("{:>3} ", n(m.programs_failed)),
            if m.programs_failed > 0 {
                style.patch(red())
            } else {
                style
            },
        ),
        Span::styled(format!("{nodes:>7}"), style),
    ];
    Line::from(spans)
}

fn alarm_line(a: &ActiveAlarm, now_ms: i64) -> Line<'static> {
    let style = match a.severity {
        Severity::Critical => red(),
        Severity::Warning => magenta(),
        Severity::Info => Style::default(),
    };
    let inst = a
        .instance
        .as_deref()
        .map(|i| format!(" {i}"))
        .unwrap_or_default();
    Line::styled(
        format!(
            "! {:<8} {} {}{inst} for {}",
            a.severity.as_str(),
            a.rule,
            a.scope,
            duration(u64::try_from((now_ms - a.since_ms).max(0) / 1000).unwrap_or(0))
        ),
        style,
    )
}

fn node_alarms<'a>(store: &'a Store, place: &Place) -> Vec<&'a ActiveAlarm> {
    let Place::Node(id) = place else {
        return Vec::new();
    };
    let scope = place.scope_string();
    store
        .groups
        .get(&(id.cluster.clone(), id.group.clone()))
        .map(|r| {
            r.value
                .alarms
                .list
                .iter()
                .filter(|a| gridmon_nats::subject::path_within(&a.scope, &scope))
                .collect()
        })
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// One node.
// ---------------------------------------------------------------------------------------------

fn node_body(
    app: &App,
    store: &Store,
    ctx: &Context,
    now: Instant,
    h: usize,
    width: usize,
) -> Vec<Line<'static>> {
    let place = app.place();
    let Place::Node(id) = place else {
        return Vec::new();
    };
    let Some(state) = store.nodes.get(id) else {
        return vec![
            Line::default(),
            Line::from(format!(
                "  waiting for a report from {id} (subject {})",
                subject_of(ctx, place)
            )),
        ];
    };
    let report = &state.report.value;
    let mut out = Vec::new();
    match &report.host {
        Some(host) => {
            let c = &host.cpu;
            out.push(Line::from(format!(
                "CPU {:>5.1}% usr {:.1} sys {:.1} io {:.1}  load {:.2} {:.2} {:.2}  {} cores  up {}",
                c.total_pct,
                c.user_pct,
                c.system_pct,
                c.iowait_pct,
                c.load1,
                c.load5,
                c.load15,
                c.per_core_pct.len(),
                duration(host.uptime_s.max(0.0) as u64)
            )));
            let m = &host.memory;
            let mem_pct = if m.total_bytes > 0 {
                100.0 * m.used_bytes as f64 / m.total_bytes as f64
            } else {
                0.0
            };
            let disk = host
                .disks
                .iter()
                .max_by(|a, b| a.busy_pct.total_cmp(&b.busy_pct))
                .map_or_else(
                    || "-".into(),
                    |d| format!("{:.0}% {}", d.busy_pct, cut(&d.name, 8)),
                );
            let (rx, tx) = host
                .nets
                .iter()
                .filter(|n| n.name != "lo")
                .fold((0.0, 0.0), |(r, t), n| {
                    (r + n.rx_bytes_ps, t + n.tx_bytes_ps)
                });
            out.push(Line::from(format!(
                "MEM {}/{} {mem_pct:.0}%  SWAP {}/{}  DISK busy {disk}  NET {}/s in {}/s out",
                bytes(m.used_bytes as f64),
                bytes(m.total_bytes as f64),
                bytes(m.swap_used_bytes as f64),
                bytes(m.swap_total_bytes as f64),
                bytes(rx),
                bytes(tx),
            )));
        }
        None => out.push(Line::from("host metrics missing from the last report")),
    }

    // Sensors, faults first, two to a line.
    let mut sensors: Vec<&SensorReading> = report.sensors.iter().collect();
    sensors.sort_by(|a, b| sensor_fault(b).cmp(&sensor_fault(a)).then(a.id.cmp(&b.id)));
    let faults = sensors.iter().filter(|s| sensor_fault(s)).count();
    let programs = &report.programs;
    let alarms = node_alarms(store, place);
    // What is left for the process table decides how much the rest may take.
    let roomy = h >= 30;
    let sensor_lines = sensors.len().div_ceil(2).min(if roomy { 6 } else { 2 });
    if !sensors.is_empty() {
        let mut t = format!("SENSORS {}", sensors.len());
        if faults > 0 {
            t.push_str(&format!(" (! {faults} beyond limits)"));
        }
        out.push(Line::styled(t, title()));
        let col = (width / 2).max(20);
        for pair in sensors.chunks(2).take(sensor_lines) {
            let mut spans = Vec::new();
            for s in pair {
                let (text, style) = sensor_cell(s);
                spans.push(Span::styled(
                    format!("{:<col$}", cut(&text, col - 1)),
                    style,
                ));
            }
            out.push(Line::from(spans));
        }
    }
    if !alarms.is_empty() {
        for a in alarms.iter().take(if roomy { 4 } else { 2 }) {
            out.push(alarm_line(a, gridmon_nats::frame::now_ms()));
        }
    }
    let focus = app.effective_focus(store);
    if !programs.is_empty() {
        let mark = if focus == Focus::Programs {
            " [keys act here]"
        } else {
            ""
        };
        out.push(Line::styled(
            format!("PROGRAMS {}{mark}", programs.len()),
            title(),
        ));
        let sel = app.program_index(programs);
        let max = if roomy { 8 } else { 3 };
        let offset = scroll(sel, max);
        for (i, p) in programs.iter().enumerate().skip(offset).take(max) {
            out.push(program_row(
                p,
                i == sel && focus == Focus::Programs,
                i == sel,
                now,
            ));
        }
    }

    // The process table takes the rest.
    let mut t = String::from("PROCESSES");
    match &state.table {
        Some(table) => {
            let rows = app.rows(store);
            t.push_str(&format!(
                " {} total, {} shown | sort {}",
                table.value.total,
                rows.len(),
                app.proc_sort.label()
            ));
            if !app.filter.is_empty() {
                t.push_str(&format!(" | filter: {}", app.filter));
            }
            t.push_str(&format!(" | {}", age(table.at, now)));
            out.push(Line::styled(t, title()));
            // The sorted column's title ends in `-` (descending) or `+` (ascending).
            let title_of = |name: &str, k: SortKey| {
                let mut t = name.to_string();
                if app.proc_sort.key == k {
                    t.push(if app.proc_sort.desc { '-' } else { '+' });
                }
                t
            };
            let (pid, cpu, rss, name) = (
                title_of("PID", SortKey::Pid),
                title_of("CPU%", SortKey::Cpu),
                title_of("RSS", SortKey::Mem),
                title_of("NAME", SortKey::Name),
            );
            out.push(Line::styled(
                format!(
                    " {pid:>7} {:<8} S {cpu:>6} {rss:>7} {:>5} {:>4} {name:<15}  COMMAND",
                    "USER", "MEM%", "THR",
                ),
                bold(),
            ));
            let total_mem = report.host.as_ref().map_or(0, |h| h.memory.total_bytes);
            let room = h.saturating_sub(out.len());
            if rows.is_empty() {
                out.push(Line::from(if app.filter.is_empty() {
                    "  no rows in the last process table".to_string()
                } else {
                    format!("  no process matches {:?}", app.filter)
                }));
            }
            let sel = app.process_index(&rows);
            let offset = if focus == Focus::Processes {
                scroll(sel, room)
            } else {
                0
            };
            for (i, r) in rows.iter().enumerate().skip(offset).take(room) {
                out.push(process_row(
                    r,
                    focus == Focus::Processes && i == sel,
                    total_mem,
                ));
            }
        }
        None => {
            out.push(Line::styled(t, title()));
            out.push(Line::from(
                "  waiting for a process table (it travels in every few reports)",
            ));
        }
    }
    out
}

fn sensor_fault(s: &SensorReading) -> bool {
    s.alarm
        || s.crit.is_some_and(|c| s.value >= c)
        || s.max.is_some_and(|m| s.value > m)
        || s.min.is_some_and(|m| s.value < m)
}

fn sensor_cell(s: &SensorReading) -> (String, Style) {
    let unit = match s.kind {
        SensorKind::Temperature => "C",
        SensorKind::Voltage => "V",
        SensorKind::Current => "A",
        SensorKind::Power => "W",
        SensorKind::Fan => "rpm",
        SensorKind::Unknown => "",
    };
    let num = |v: f64| {
        if s.kind == SensorKind::Voltage || s.kind == SensorKind::Current {
            format!("{v:.2}")
        } else {
            format!("{v:.0}")
        }
    };
    let mut limits = Vec::new();
    if let Some(v) = s.min {
        limits.push(format!("min {}", num(v)));
    }
    if let Some(v) = s.max {
        limits.push(format!("max {}", num(v)));
    }
    if let Some(v) = s.crit {
        limits.push(format!("crit {}", num(v)));
    }
    let fault = sensor_fault(s);
    let label = if s.label.is_empty() { &s.id } else { &s.label };
    let text = format!(
        "{}{:<12} {:>6}{unit:<3} {}",
        if fault { "!" } else { " " },
        cut(label, 12),
        num(s.value),
        limits.join(" ")
    );
    (text, if fault { red() } else { Style::default() })
}

fn program_row(p: &ProgramStatus, focused: bool, selected: bool, _now: Instant) -> Line<'static> {
    let failed = matches!(p.state, ProgramState::Crashed | ProgramState::Error);
    let mut style = if failed {
        red()
    } else if p.state.is_up() {
        Style::default()
    } else {
        yellow()
    };
    if focused {
        style = style.add_modifier(Modifier::REVERSED);
    }
    let up = match (p.started_ms, p.state.is_up()) {
        (Some(start), true) => {
            let secs = (gridmon_nats::frame::now_ms() - start).max(0) / 1000;
            format!("up {}", duration(secs.unsigned_abs()))
        }
        _ => String::new(),
    };
    let pid = p.pid.map_or_else(|| "-".into(), |p| p.to_string());
    let mut text = format!(
        "{}{}{:<16} {:<9} pid {:<8} restarts {:<3} {:<8}",
        if selected { ">" } else { " " },
        if failed { "!" } else { " " },
        cut(&p.name, 16),
        if failed {
            p.state.as_str().to_uppercase()
        } else {
            p.state.as_str().to_string()
        },
        pid,
        p.restarts,
        up,
    );
    if let Some(v) = &p.version {
        text.push_str(&format!(" v{v}"));
    }
    if !p.detail.is_empty() {
        text.push(' ');
        text.push_str(&p.detail);
    }
    Line::styled(text, style)
}

fn process_row(r: &ProcessRow, selected: bool, total_mem: u64) -> Line<'static> {
    let state = match r.state {
        ProcState::Running => 'R',
        ProcState::Waiting => 'S',
        ProcState::Busy => 'D',
        ProcState::Stopped => 'T',
        ProcState::Zombie => 'Z',
        ProcState::Dead => 'X',
        ProcState::Unknown => '?',
    };
    let mem = if total_mem > 0 {
        format!("{:.1}", 100.0 * r.rss_bytes as f64 / total_mem as f64)
    } else {
        "-".into()
    };
    let user = if r.user.is_empty() {
        r.uid.to_string()
    } else {
        r.user.clone()
    };
    let mut text = format!(
        "{}{:>7} {:<8} {state} {:>6.1} {:>7} {:>5} {:>4} {:<15}",
        if selected { ">" } else { " " },
        r.pid,
        cut(&user, 8),
        r.cpu_pct,
        bytes(r.rss_bytes as f64),
        mem,
        r.threads,
        r.name,
    );
    if !r.cmdline.is_empty() {
        text.push_str("  ");
        text.push_str(&r.cmdline);
    }
    let mut style = if r.state == ProcState::Zombie {
        red()
    } else {
        Style::default()
    };
    if selected {
        style = style.add_modifier(Modifier::REVERSED);
    }
    Line::styled(text, style)
}

// ---------------------------------------------------------------------------------------------
// The last two lines.
// ---------------------------------------------------------------------------------------------

fn status_line(app: &App, store: &Store, now: Instant) -> Line<'static> {
    if let Some(text) = &app.input {
        return Line::from(vec![
            Span::styled("filter by name: ", bold()),
            Span::raw(format!("{text}_")),
            Span::raw("   (Enter apply, Esc clear)"),
        ]);
    }
    if let Some(s) = &app.status {
        let style = match s.tone {
            Tone::Info => Style::default(),
            Tone::Pending => yellow(),
            Tone::Good => Style::default()
                .fg(Color::Green)
                .add_modifier(Modifier::BOLD),
            Tone::Bad => red(),
        };
        let style = if app.confirm.is_some() {
            yellow().add_modifier(Modifier::BOLD | Modifier::REVERSED)
        } else {
            style
        };
        return Line::styled(s.text.clone(), style);
    }
    if let Some(note) = store
        .last_alarm
        .as_ref()
        .filter(|n| now.saturating_duration_since(n.at) < ALARM_NOTE_FOR)
    {
        return Line::styled(alarm_text(note), magenta());
    }
    if store.bad > 0 {
        return Line::from(format!("{} undecodable messages skipped", store.bad));
    }
    Line::default()
}

fn footer(app: &App) -> Line<'static> {
    let keys: &[(&str, &str)] = if app.confirm.is_some() {
        &[("y", "confirm"), ("any other key", "cancel")]
    } else if app.input.is_some() {
        &[("Enter", "apply"), ("Esc", "clear"), ("Backspace", "erase")]
    } else if app.watched_node().is_some() {
        &[
            ("Tab", "pane"),
            ("j/k", "move"),
            ("n/p/c/m", "sort"),
            ("/", "filter"),
            ("s", "start"),
            ("x", "stop"),
            ("r", "restart"),
            ("Esc", "up"),
            ("q", "quit"),
        ]
    } else {
        &[
            ("Enter", "open"),
            ("Esc", "up"),
            ("j/k", "move"),
            ("n/c/m", "sort"),
            ("/", "filter"),
            ("q", "quit"),
        ]
    };
    let mut spans = Vec::new();
    for (i, (k, what)) in keys.iter().enumerate() {
        if i > 0 {
            spans.push(Span::raw(" "));
        }
        spans.push(Span::styled(k.to_string(), title()));
        spans.push(Span::raw(format!(":{what}")));
    }
    Line::from(spans)
}

#[cfg(test)]
mod tests {
    use super::super::app::App;
    use super::super::model::tests::envelope;
    use super::*;
    use gridmon_nats::wire::{
        self, AlarmSummary, CpuMetrics, HostMetrics, Kind, MemoryMetrics, NodeCounts, NodeReport,
        ProcessTable, Source,
    };
    use gridmon_nats::{NodeId, Subjects};
    use ratatui::backend::TestBackend;
    use ratatui::crossterm::event::{KeyCode, KeyEvent};
    use ratatui::Terminal;

    fn text(app: &App, store: &Store, w: u16, h: u16) -> Vec<String> {
        let mut term = Terminal::new(TestBackend::new(w, h)).unwrap();
        let ctx = Context {
            connected: true,
            prefix: "grid".into(),
        };
        term.draw(|f| render(app, store, &ctx, Instant::now(), f.area(), f.buffer_mut()))
            .unwrap();
        let buf = term.backend().buffer();
        (0..h)
            .map(|y| {
                (0..w)
                    .map(|x| buf.cell((x, y)).map_or(" ", |c| c.symbol()))
                    .collect::<String>()
            })
            .collect()
    }

    fn line(name: &str, status: MemberStatus, cpu: f32) -> MemberLine {
        MemberLine {
            name: name.into(),
            status,
            cpu_pct: Some(cpu),
            mem_used_pct: Some(50.0),
            nodes: NodeCounts {
                online: 1,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn fleet() -> (Store, NodeId) {
        let sub = Subjects::new("grid").unwrap();
        let now = Instant::now();
        let mut s = Store::default();
        let publish = |s: &mut Store, subject: &str, r: Rollup| {
            let bytes = wire::encode(&envelope(Kind::Rollup, Source::default(), r)).unwrap();
            s.apply(&sub, subject, &bytes, now);
        };
        publish(
            &mut s,
            "grid",
            Rollup {
                nodes: NodeCounts {
                    online: 14,
                    stale: 1,
                    offline: 1,
                },
                members: vec![
                    line("c01", MemberStatus::Online, 20.0),
                    MemberLine {
                        faults: 2,
                        alarms: 1,
                        ..line("c02", MemberStatus::Online, 30.0)
                    },
                ],
                alarms: AlarmSummary {
                    active: 1,
                    critical: 1,
                    list: vec![ActiveAlarm {
                        id: "x".into(),
                        rule: "sensor_crit".into(),
                        severity: Severity::Critical,
                        scope: "c02/g02/n0008".into(),
                        instance: Some("coretemp.0/temp1".into()),
                        value: 101.0,
                        since_ms: 0,
                    }],
                    ..Default::default()
                },
                ..Default::default()
            },
        );
        publish(
            &mut s,
            "grid.c02.g02",
            Rollup {
                members: vec![
                    line("n0004", MemberStatus::Stale, 0.0),
                    line("n0012", MemberStatus::Offline, 0.0),
                    MemberLine {
                        faults: 1,
                        ..line("n0008", MemberStatus::Online, 40.0)
                    },
                ],
                ..Default::default()
            },
        );
        let id = NodeId::new("c02", "g02", "n0008").unwrap();
        let rows = (1..=40)
            .map(|i| ProcessRow {
                pid: i,
                name: format!("proc{i}"),
                user: "app".into(),
                cpu_pct: (i * 7 % 41) as f32,
                rss_bytes: u64::from(i) << 20,
                ..Default::default()
            })
            .collect();
        let body = NodeReport {
            host: Some(HostMetrics {
                cpu: CpuMetrics {
                    total_pct: 42.5,
                    per_core_pct: vec![42.5; 8],
                    ..Default::default()
                },
                memory: MemoryMetrics {
                    total_bytes: 16 << 30,
                    used_bytes: 4 << 30,
                    ..Default::default()
                },
                ..Default::default()
            }),
            processes: Some(ProcessTable {
                total: 40,
                rows,
                ..Default::default()
            }),
            sensors: vec![
                SensorReading {
                    id: "coretemp.0/temp1".into(),
                    label: "Package id 0".into(),
                    kind: SensorKind::Temperature,
                    value: 101.0,
                    max: Some(80.0),
                    crit: Some(100.0),
                    ..Default::default()
                },
                SensorReading {
                    id: "nct/fan1".into(),
                    label: "CPU fan".into(),
                    kind: SensorKind::Fan,
                    value: 1200.0,
                    min: Some(300.0),
                    ..Default::default()
                },
            ],
            programs: vec![ProgramStatus {
                name: "demo-worker".into(),
                state: ProgramState::Running,
                pid: Some(4242),
                ..Default::default()
            }],
            ..Default::default()
        };
        let bytes = wire::encode(&envelope(Kind::NodeReport, Source::from(&id), body)).unwrap();
        s.apply_report(&id, &bytes, now);
        (s, id)
    }

    fn find<'a>(screen: &'a [String], needle: &str) -> &'a str {
        screen
            .iter()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("{needle:?} not on screen:\n{}", screen.join("\n")))
    }

    #[test]
    fn the_grid_at_80x24_lists_clusters_with_markers() {
        let (s, _) = fleet();
        let app = App::new(Place::Grid, true);
        let screen = text(&app, &s, 80, 24);
        assert_eq!(screen.len(), 24);
        assert!(screen[0].starts_with("gridmon top grid"), "{}", screen[0]);
        assert!(
            screen[1].contains("nodes 16: 14 online, 1 STALE, 1 OFFLINE"),
            "{}",
            screen[1]
        );
        assert!(screen[1].contains("! ALARMS 1"), "{}", screen[1]);
        let c01 = find(&screen, "c01 ");
        assert!(c01.starts_with("> c01"), "{c01}");
        let c02 = find(&screen, "c02 ");
        assert!(c02.starts_with(" !c02"), "{c02}");
        find(
            &screen,
            "! critical sensor_crit c02/g02/n0008 coretemp.0/temp1 for ",
        );
        assert!(screen[23].contains("Enter:open"), "{}", screen[23]);
    }

    #[test]
    fn stale_and_offline_nodes_say_so() {
        let (s, _) = fleet();
        let app = App::new(Place::Group("c02".into(), "g02".into()), true);
        let screen = text(&app, &s, 80, 24);
        assert!(
            screen[0].contains("group c02/g02 (local display)"),
            "{}",
            screen[0]
        );
        assert!(find(&screen, "n0004").contains("STALE"));
        assert!(find(&screen, "n0012").contains("OFFLINE"));
        assert!(find(&screen, "n0008").starts_with(" !n0008"));
    }

    #[test]
    fn the_node_view_at_80x24_shows_everything_sorted() {
        let (s, id) = fleet();
        let mut app = App::new(Place::Node(id), true);
        let screen = text(&app, &s, 80, 24);
        let all = screen.join("\n");
        assert!(screen[0].contains("n0008"), "{all}");
        find(&screen, "CPU  42.5%");
        find(&screen, "MEM 4.0G/16G 25%");
        let temp = find(&screen, "Package id 0");
        assert!(temp.contains("!Package id 0"), "{temp}");
        assert!(temp.contains("101C"), "{temp}");
        assert!(find(&screen, "CPU fan").contains(" CPU fan"));
        assert!(find(&screen, "demo-worker").contains("running"), "{all}");
        assert!(find(&screen, "demo-worker").contains("4242"), "{all}");
        find(&screen, "PROCESSES 40 total, 40 shown | sort cpu desc");
        // The rows under the header, CPU descending, filling the screen to the status line.
        let cpus = |screen: &[String]| -> Vec<f32> {
            let at = screen.iter().position(|l| l.contains("CPU%")).unwrap();
            screen[at + 1..22]
                .iter()
                .map(|l| {
                    let f: Vec<&str> = l.trim_start_matches('>').split_whitespace().collect();
                    f[3].parse::<f32>().unwrap_or_else(|_| panic!("{l}"))
                })
                .collect()
        };
        let got = cpus(&screen);
        assert!(got.len() >= 8, "{all}");
        assert!(got.windows(2).all(|w| w[0] >= w[1]), "{got:?}");
        assert_eq!(got[0], 40.0);
        app.handle_key(KeyEvent::from(KeyCode::Char('c')), &s);
        let got = cpus(&text(&app, &s, 80, 24));
        assert!(got.windows(2).all(|w| w[0] <= w[1]), "{got:?}");
        assert!(screen[23].contains("r:restart"), "{}", screen[23]);
        assert!(screen[23].len() <= 80);
    }

    #[test]
    fn small_and_empty_screens_do_not_panic() {
        let (s, id) = fleet();
        let empty = Store::default();
        for place in [
            Place::Grid,
            Place::Cluster("c09".into()),
            Place::Group("c02".into(), "g02".into()),
            Place::Node(id),
        ] {
            let app = App::new(place, false);
            for (w, h) in [(80, 24), (20, 5), (1, 1), (200, 60)] {
                text(&app, &s, w, h);
                text(&app, &empty, w, h);
            }
        }
        let app = App::new(Place::Cluster("c09".into()), false);
        let screen = text(&app, &empty, 80, 24);
        find(&screen, "waiting for the cluster rollup on grid.c09");
    }

    #[test]
    fn units() {
        assert_eq!(bytes(0.0), "0B");
        assert_eq!(bytes(1536.0), "1.5K");
        assert_eq!(bytes(16.0 * 1024.0 * 1024.0 * 1024.0), "16G");
        assert_eq!(duration(59), "59s");
        assert_eq!(duration(3 * 86_400 + 7200), "3d2h");
    }
}
