//! The view's state and its keys: where the operator is (a stack of places from the root down),
//! what is selected, the sort order, the name filter, and the confirm step of a program action.
//! Pure: keys come in, [`Effect`]s go out; the caller owns the terminal and the bus.

use gridmon_nats::command::{CommandReply, Op};
use gridmon_nats::wire::{MemberLine, ProcessOrder, ProcessRow, ProgramStatus};
use gridmon_nats::NodeId;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use super::model::{Place, Store};

/// Rows a page key moves.
const PAGE: usize = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    Name,
    Pid,
    Cpu,
    Mem,
}

impl SortKey {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Name => "name",
            Self::Pid => "pid",
            Self::Cpu => "cpu",
            Self::Mem => "mem",
        }
    }

    /// Names and PIDs read best ascending, loads descending (the busiest first).
    fn default_desc(self) -> bool {
        matches!(self, Self::Cpu | Self::Mem)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sort {
    pub key: SortKey,
    pub desc: bool,
}

impl Sort {
    pub fn new(key: SortKey) -> Self {
        Self {
            key,
            desc: key.default_desc(),
        }
    }

    /// The key pressed again reverses the order; another key sorts by it in its natural order.
    pub fn press(&mut self, key: SortKey) {
        if self.key == key {
            self.desc = !self.desc;
        } else {
            *self = Self::new(key);
        }
    }

    pub fn label(self) -> String {
        format!(
            "{} {}",
            self.key.as_str(),
            if self.desc { "desc" } else { "asc" }
        )
    }
}

fn matches(name: &str, filter: &str) -> bool {
    filter.is_empty() || name.to_lowercase().contains(&filter.to_lowercase())
}

/// The process rows shown: those whose name contains `filter` (any case), in `sort` order.
pub fn sorted_rows<'a>(rows: &'a [ProcessRow], sort: Sort, filter: &str) -> Vec<&'a ProcessRow> {
    let mut out: Vec<&ProcessRow> = rows.iter().filter(|r| matches(&r.name, filter)).collect();
    let order = match sort.key {
        SortKey::Name => ProcessOrder::Name,
        SortKey::Pid => ProcessOrder::Pid,
        SortKey::Cpu => ProcessOrder::Cpu,
        SortKey::Mem => ProcessOrder::Mem,
    };
    ProcessRow::sort(&mut out, order, sort.desc);
    out
}

/// The member lines shown: filtered by name, in `sort` order (PID sorts by name here).
pub fn sorted_members<'a>(
    members: &'a [MemberLine],
    sort: Sort,
    filter: &str,
) -> Vec<&'a MemberLine> {
    let mut out: Vec<&MemberLine> = members
        .iter()
        .filter(|m| matches(&m.name, filter))
        .collect();
    let key = |v: Option<f32>| v.unwrap_or(f32::NEG_INFINITY);
    out.sort_by(|a, b| {
        let o = match sort.key {
            SortKey::Name | SortKey::Pid => a.name.cmp(&b.name),
            SortKey::Cpu => key(a.cpu_pct).total_cmp(&key(b.cpu_pct)),
            SortKey::Mem => key(a.mem_used_pct).total_cmp(&key(b.mem_used_pct)),
        };
        let o = if sort.desc { o.reverse() } else { o };
        o.then(a.name.cmp(&b.name))
    });
    out
}

/// One level of the drill-down and what is selected there (by name, so live re-sorting does not
/// move the selection to another member).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Level {
    pub place: Place,
    pub selected: Option<String>,
}

/// The node view's two lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Focus {
    Programs,
    Processes,
}

/// A program action awaiting confirmation or an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionRequest {
    pub node: NodeId,
    pub op: Op,
    pub program: String,
}

impl ActionRequest {
    pub fn describe(&self) -> String {
        format!("{} {} on {}", self.op, self.program, self.node)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    Info,
    Pending,
    Good,
    Bad,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub tone: Tone,
    pub text: String,
}

/// What the caller must do after a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    None,
    Quit,
    /// Send this signed command and report the answer with [`App::finish`].
    Send(ActionRequest),
}

#[derive(Debug)]
pub struct App {
    /// `stack[0]` is the root (the grid, or the group of `--group`); the last is shown.
    pub stack: Vec<Level>,
    pub proc_sort: Sort,
    pub member_sort: Sort,
    /// The applied name filter of the current list.
    pub filter: String,
    /// The filter being typed after `/`.
    pub input: Option<String>,
    pub confirm: Option<ActionRequest>,
    pub status: Option<Status>,
    pub focus: Focus,
    pub program_selected: Option<String>,
    pub process_selected: Option<u32>,
    /// An operator key is loaded: actions are possible.
    pub can_act: bool,
    pub in_flight: Option<ActionRequest>,
}

impl App {
    pub fn new(root: Place, can_act: bool) -> Self {
        Self {
            stack: vec![Level {
                place: root,
                selected: None,
            }],
            proc_sort: Sort::new(SortKey::Cpu),
            member_sort: Sort::new(SortKey::Name),
            filter: String::new(),
            input: None,
            confirm: None,
            status: None,
            focus: Focus::Programs,
            program_selected: None,
            process_selected: None,
            can_act,
            in_flight: None,
        }
    }

    pub fn place(&self) -> &Place {
        // The stack is never empty: `up` stops at the root.
        &self.stack[self.stack.len() - 1].place
    }

    pub fn root(&self) -> &Place {
        &self.stack[0].place
    }

    /// The node whose reports are needed now.
    pub fn watched_node(&self) -> Option<&NodeId> {
        match self.place() {
            Place::Node(id) => Some(id),
            _ => None,
        }
    }

    pub fn members<'a>(&self, store: &'a Store) -> Vec<&'a MemberLine> {
        sorted_members(store.members(self.place()), self.member_sort, &self.filter)
    }

    pub fn rows<'a>(&self, store: &'a Store) -> Vec<&'a ProcessRow> {
        let Some(id) = self.watched_node() else {
            return Vec::new();
        };
        store
            .nodes
            .get(id)
            .and_then(|n| n.table.as_ref())
            .map_or_else(Vec::new, |t| {
                sorted_rows(&t.value.rows, self.proc_sort, &self.filter)
            })
    }

    pub fn programs<'a>(&self, store: &'a Store) -> &'a [ProgramStatus] {
        self.watched_node()
            .and_then(|id| store.nodes.get(id))
            .map_or(&[], |n| n.report.value.programs.as_slice())
    }

    /// Which list the arrows move in: the programs only when there are some.
    pub fn effective_focus(&self, store: &Store) -> Focus {
        if self.focus == Focus::Programs && self.programs(store).is_empty() {
            Focus::Processes
        } else {
            self.focus
        }
    }

    /// Index of the selected member in [`Self::members`].
    pub fn member_index(&self, members: &[&MemberLine]) -> usize {
        let sel = self.stack[self.stack.len() - 1].selected.as_deref();
        index_of(members.iter().map(|m| m.name.as_str()), sel)
    }

    pub fn process_index(&self, rows: &[&ProcessRow]) -> usize {
        rows.iter()
            .position(|r| Some(r.pid) == self.process_selected)
            .unwrap_or(0)
    }

    pub fn program_index(&self, programs: &[ProgramStatus]) -> usize {
        index_of(
            programs.iter().map(|p| p.name.as_str()),
            self.program_selected.as_deref(),
        )
    }

    fn say(&mut self, tone: Tone, text: impl Into<String>) {
        self.status = Some(Status {
            tone,
            text: text.into(),
        });
    }

    /// One key.
    pub fn handle_key(&mut self, key: KeyEvent, store: &Store) -> Effect {
        if key.kind == KeyEventKind::Release {
            return Effect::None;
        }
        if key.modifiers.contains(KeyModifiers::CONTROL)
            && matches!(key.code, KeyCode::Char('c') | KeyCode::Char('d'))
        {
            return Effect::Quit;
        }
        if let Some(text) = &mut self.input {
            match key.code {
                KeyCode::Enter => {
                    self.filter = std::mem::take(text);
                    self.input = None;
                }
                KeyCode::Esc => {
                    self.input = None;
                    self.filter.clear();
                }
                KeyCode::Backspace => {
                    text.pop();
                }
                KeyCode::Char(c) if !c.is_control() => text.push(c),
                _ => {}
            }
            return Effect::None;
        }
        if let Some(req) = self.confirm.take() {
            return match key.code {
                KeyCode::Char('y') | KeyCode::Char('Y') => {
                    self.say(Tone::Pending, format!("{}: sending...", req.describe()));
                    self.in_flight = Some(req.clone());
                    Effect::Send(req)
                }
                _ => {
                    self.say(Tone::Info, format!("{}: cancelled", req.describe()));
                    Effect::None
                }
            };
        }
        match key.code {
            KeyCode::Char('q') => return Effect::Quit,
            KeyCode::Up | KeyCode::Char('k') => self.step(store, -1),
            KeyCode::Down | KeyCode::Char('j') => self.step(store, 1),
            KeyCode::PageUp => self.step(store, -(PAGE as isize)),
            KeyCode::PageDown => self.step(store, PAGE as isize),
            KeyCode::Home | KeyCode::Char('g') => self.step(store, isize::MIN / 2),
            KeyCode::End | KeyCode::Char('G') => self.step(store, isize::MAX / 2),
            KeyCode::Enter | KeyCode::Right | KeyCode::Char('l') => self.down(store),
            KeyCode::Esc if !self.filter.is_empty() => self.filter.clear(),
            KeyCode::Esc | KeyCode::Backspace | KeyCode::Left | KeyCode::Char('h') => self.up(),
            KeyCode::Tab | KeyCode::BackTab => {
                self.focus = match self.effective_focus(store) {
                    Focus::Programs => Focus::Processes,
                    Focus::Processes => Focus::Programs,
                };
            }
            KeyCode::Char('/') => self.input = Some(self.filter.clone()),
            KeyCode::Char('n') => self.sort(SortKey::Name),
            KeyCode::Char('p') => self.sort(SortKey::Pid),
            KeyCode::Char('c') => self.sort(SortKey::Cpu),
            KeyCode::Char('m') => self.sort(SortKey::Mem),
            KeyCode::Char('s') => self.ask(store, Op::Start),
            KeyCode::Char('x') => self.ask(store, Op::Stop),
            KeyCode::Char('r') => self.ask(store, Op::Restart),
            _ => {}
        }
        Effect::None
    }

    fn sort(&mut self, key: SortKey) {
        if self.watched_node().is_some() {
            self.proc_sort.press(key);
        } else if key != SortKey::Pid {
            self.member_sort.press(key);
        }
    }

    /// Moves the selection of the current list by `delta` rows.
    fn step(&mut self, store: &Store, delta: isize) {
        let moved = |len: usize, at: usize| -> usize {
            if len == 0 {
                return 0;
            }
            at.saturating_add_signed(delta).min(len - 1)
        };
        if self.watched_node().is_none() {
            let members = self.members(store);
            let at = moved(members.len(), self.member_index(&members));
            let name = members.get(at).map(|m| m.name.clone());
            if let Some(level) = self.stack.last_mut() {
                level.selected = name;
            }
            return;
        }
        match self.effective_focus(store) {
            Focus::Programs => {
                let programs = self.programs(store);
                let at = moved(programs.len(), self.program_index(programs));
                self.program_selected = programs.get(at).map(|p| p.name.clone());
            }
            Focus::Processes => {
                let rows = self.rows(store);
                let at = moved(rows.len(), self.process_index(&rows));
                self.process_selected = rows.get(at).map(|r| r.pid);
            }
        }
    }

    /// Enter: the selected member's own view.
    fn down(&mut self, store: &Store) {
        let members = self.members(store);
        let Some(m) = members.get(self.member_index(&members)) else {
            return;
        };
        let Some(place) = self.place().child(&m.name) else {
            if self.watched_node().is_none() {
                self.say(Tone::Bad, format!("{:?} is not a valid name", m.name));
            }
            return;
        };
        let name = m.name.clone();
        if let Some(level) = self.stack.last_mut() {
            level.selected = Some(name);
        }
        self.stack.push(Level {
            place,
            selected: None,
        });
        self.left_view();
    }

    /// Esc: one level up, never above the root.
    fn up(&mut self) {
        if self.stack.len() > 1 {
            self.stack.pop();
            self.left_view();
        } else if matches!(self.root(), Place::Group(..)) {
            self.say(Tone::Info, "this is the group's local display (--group)");
        }
    }

    fn left_view(&mut self) {
        self.filter.clear();
        self.focus = Focus::Programs;
        self.program_selected = None;
        self.process_selected = None;
        self.confirm = None;
    }

    /// s, x, r: asks to confirm an action on the selected program.
    fn ask(&mut self, store: &Store, op: Op) {
        let Some(node) = self.watched_node().cloned() else {
            return;
        };
        if !self.can_act {
            self.say(
                Tone::Bad,
                "read-only: no operator key (give --key, commands.key_file or GRIDMON_KEY_FILE)",
            );
            return;
        }
        if let Some(busy) = &self.in_flight {
            let text = format!("{}: still waiting for the answer", busy.describe());
            self.say(Tone::Info, text);
            return;
        }
        let programs = self.programs(store);
        let Some(p) = programs.get(self.program_index(programs)) else {
            self.say(Tone::Info, "no supervised program on this node");
            return;
        };
        let req = ActionRequest {
            node,
            op,
            program: p.name.clone(),
        };
        self.program_selected = Some(p.name.clone());
        self.focus = Focus::Programs;
        self.say(Tone::Info, format!("{}? y/n", req.describe()));
        self.confirm = Some(req);
    }

    /// The answer to a sent action (or why there was none).
    pub fn finish(&mut self, req: &ActionRequest, result: Result<CommandReply, String>) {
        self.in_flight = None;
        let what = req.describe();
        match result {
            Ok(r) if r.ok => {
                let state = r
                    .programs
                    .iter()
                    .find(|p| p.name == req.program)
                    .map(|p| {
                        let pid = p.pid.map(|p| format!(" pid {p}")).unwrap_or_default();
                        format!(" ({}{pid})", p.state.as_str())
                    })
                    .unwrap_or_default();
                let msg = if r.message.is_empty() {
                    String::new()
                } else {
                    format!(": {}", r.message)
                };
                self.say(Tone::Good, format!("{what}: ok{state}{msg}"));
            }
            Ok(r) => {
                let kind = r.error.map_or("failed", |e| e.as_str());
                self.say(Tone::Bad, format!("{what}: {kind}: {}", r.message));
            }
            Err(e) => self.say(Tone::Bad, format!("{what}: error: {e}")),
        }
    }
}

fn index_of<'a>(names: impl Iterator<Item = &'a str>, selected: Option<&str>) -> usize {
    let Some(sel) = selected else { return 0 };
    names.into_iter().position(|n| n == sel).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::super::model::tests::{report, rollup};
    use super::*;
    use gridmon_nats::command::ErrorKind;
    use gridmon_nats::wire::{
        self, Envelope, Kind, NodeReport, ProcessTable, ProgramState, Source, SCHEMA_VERSION,
    };
    use gridmon_nats::Subjects;
    use std::time::Instant;

    fn key(c: char) -> KeyEvent {
        KeyEvent::from(KeyCode::Char(c))
    }

    fn code(c: KeyCode) -> KeyEvent {
        KeyEvent::from(c)
    }

    fn row(pid: u32, name: &str, cpu: f32, rss: u64) -> ProcessRow {
        ProcessRow {
            pid,
            name: name.into(),
            cpu_pct: cpu,
            rss_bytes: rss,
            ..Default::default()
        }
    }

    fn rows() -> Vec<ProcessRow> {
        vec![
            row(30, "nginx", 5.0, 300),
            row(10, "postgres", 40.0, 100),
            row(20, "bash", 0.5, 900),
            row(40, "nginx", 12.0, 50),
        ]
    }

    fn pids(rows: &[&ProcessRow]) -> Vec<u32> {
        rows.iter().map(|r| r.pid).collect()
    }

    #[test]
    fn sorting_by_each_key_and_reversing() {
        let rows = rows();
        let check = |sort: Sort, want: [u32; 4]| {
            assert_eq!(pids(&sorted_rows(&rows, sort, "")), want, "{sort:?}");
        };
        let mut s = Sort::new(SortKey::Cpu);
        check(s, [10, 40, 30, 20]);
        s.press(SortKey::Cpu);
        check(s, [20, 30, 40, 10]);
        s.press(SortKey::Name);
        check(s, [20, 30, 40, 10]);
        s.press(SortKey::Name);
        check(s, [10, 30, 40, 20]);
        s.press(SortKey::Pid);
        check(s, [10, 20, 30, 40]);
        s.press(SortKey::Mem);
        check(s, [20, 30, 10, 40]);
        s.press(SortKey::Mem);
        check(s, [40, 10, 30, 20]);
    }

    #[test]
    fn the_filter_keeps_only_matching_names() {
        let rows = rows();
        let sort = Sort::new(SortKey::Pid);
        assert_eq!(pids(&sorted_rows(&rows, sort, "NGI")), [30, 40]);
        assert_eq!(pids(&sorted_rows(&rows, sort, "zzz")), Vec::<u32>::new());
        assert_eq!(sorted_rows(&rows, sort, "").len(), 4);
    }

    fn store() -> (Store, NodeId) {
        let mut s = Store::default();
        let sub = Subjects::new("grid").unwrap();
        let now = Instant::now();
        s.apply(&sub, "grid", &rollup(&["c01", "c02"]), now);
        s.apply(&sub, "grid.c02", &rollup(&["g01", "g02"]), now);
        s.apply(&sub, "grid.c02.g02", &rollup(&["n0004", "n0008"]), now);
        let id = NodeId::new("c02", "g02", "n0008").unwrap();
        let body = NodeReport {
            processes: Some(ProcessTable {
                rows: rows(),
                ..Default::default()
            }),
            programs: vec![
                ProgramStatus {
                    name: "demo-worker".into(),
                    state: ProgramState::Running,
                    pid: Some(99),
                    ..Default::default()
                },
                ProgramStatus {
                    name: "other".into(),
                    state: ProgramState::Crashed,
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let env = Envelope {
            schema: SCHEMA_VERSION,
            kind: Kind::NodeReport,
            source: Source::from(&id),
            ts_ms: 1,
            run_id: 1,
            seq: 1,
            body,
        };
        s.apply_report(&id, &wire::encode(&env).unwrap(), now);
        (s, id)
    }

    #[test]
    fn drill_down_and_back_up_keeps_the_path() {
        let (s, id) = store();
        let mut app = App::new(Place::Grid, true);
        app.handle_key(code(KeyCode::Down), &s);
        app.handle_key(code(KeyCode::Enter), &s);
        assert_eq!(app.place(), &Place::Cluster("c02".into()));
        app.handle_key(key('j'), &s);
        app.handle_key(code(KeyCode::Enter), &s);
        assert_eq!(app.place(), &Place::Group("c02".into(), "g02".into()));
        app.handle_key(code(KeyCode::Down), &s);
        app.handle_key(code(KeyCode::Enter), &s);
        assert_eq!(app.place(), &Place::Node(id.clone()));
        assert_eq!(app.watched_node(), Some(&id));
        // Enter in the node view goes nowhere.
        app.handle_key(code(KeyCode::Enter), &s);
        assert_eq!(app.stack.len(), 4);
        app.handle_key(code(KeyCode::Esc), &s);
        app.handle_key(code(KeyCode::Backspace), &s);
        assert_eq!(app.place(), &Place::Cluster("c02".into()));
        // The selection made on the way down is still there.
        assert_eq!(app.stack[1].selected.as_deref(), Some("g02"));
        app.handle_key(code(KeyCode::Esc), &s);
        app.handle_key(code(KeyCode::Esc), &s);
        assert_eq!(app.place(), &Place::Grid);
        assert_eq!(app.handle_key(key('q'), &s), Effect::Quit);
    }

    #[test]
    fn a_group_display_never_goes_above_its_group() {
        let (s, id) = store();
        let mut app = App::new(Place::Group("c02".into(), "g02".into()), false);
        app.handle_key(code(KeyCode::Esc), &s);
        assert_eq!(app.place(), &Place::Group("c02".into(), "g02".into()));
        assert!(app.status.as_ref().unwrap().text.contains("--group"));
        app.handle_key(key('j'), &s);
        app.handle_key(code(KeyCode::Enter), &s);
        assert_eq!(app.place(), &Place::Node(id));
        app.handle_key(code(KeyCode::Left), &s);
        app.handle_key(code(KeyCode::Left), &s);
        assert_eq!(app.place(), &Place::Group("c02".into(), "g02".into()));
    }

    fn node_app(s: &Store, can_act: bool) -> App {
        let mut app = App::new(Place::Group("c02".into(), "g02".into()), can_act);
        app.handle_key(key('j'), s);
        app.handle_key(code(KeyCode::Enter), s);
        app
    }

    #[test]
    fn sort_keys_and_the_filter_in_the_node_view() {
        let (s, _) = store();
        let mut app = node_app(&s, true);
        assert_eq!(pids(&app.rows(&s)), [10, 40, 30, 20], "cpu desc by default");
        app.handle_key(key('c'), &s);
        assert_eq!(pids(&app.rows(&s)), [20, 30, 40, 10]);
        app.handle_key(key('p'), &s);
        assert_eq!(pids(&app.rows(&s)), [10, 20, 30, 40]);
        app.handle_key(key('/'), &s);
        for c in "ngx".chars() {
            app.handle_key(key(c), &s);
        }
        app.handle_key(code(KeyCode::Backspace), &s);
        app.handle_key(key('i'), &s);
        // Not applied until Enter; typed letters are not commands.
        assert_eq!(app.rows(&s).len(), 4);
        assert_eq!(app.proc_sort.key, SortKey::Pid);
        app.handle_key(code(KeyCode::Enter), &s);
        assert_eq!(pids(&app.rows(&s)), [30, 40]);
        // Esc clears the filter first, then goes up.
        app.handle_key(code(KeyCode::Esc), &s);
        assert_eq!(app.rows(&s).len(), 4);
        assert!(app.watched_node().is_some());
        app.handle_key(key('/'), &s);
        app.handle_key(key('b'), &s);
        app.handle_key(code(KeyCode::Esc), &s);
        assert_eq!(app.filter, "");
        assert!(app.input.is_none());
    }

    #[test]
    fn actions_ask_first_and_report_the_outcome() {
        let (s, id) = store();
        let mut app = node_app(&s, true);
        app.handle_key(key('r'), &s);
        assert_eq!(
            app.status.as_ref().unwrap().text,
            "restart demo-worker on c02/g02/n0008? y/n"
        );
        // Anything but y cancels.
        assert_eq!(app.handle_key(key('n'), &s), Effect::None);
        assert!(app.confirm.is_none());
        assert!(app.status.as_ref().unwrap().text.contains("cancelled"));
        // The second program, stopped.
        app.handle_key(key('j'), &s);
        app.handle_key(key('x'), &s);
        let want = ActionRequest {
            node: id.clone(),
            op: Op::Stop,
            program: "other".into(),
        };
        assert_eq!(app.handle_key(key('y'), &s), Effect::Send(want.clone()));
        // One at a time.
        app.handle_key(key('s'), &s);
        assert!(app.confirm.is_none());
        app.finish(
            &want,
            Ok(CommandReply {
                ok: false,
                error: Some(ErrorKind::Denied),
                message: "unknown issuer".into(),
                ..Default::default()
            }),
        );
        assert_eq!(
            app.status.as_ref().unwrap().text,
            "stop other on c02/g02/n0008: denied: unknown issuer"
        );
        assert_eq!(app.status.as_ref().unwrap().tone, Tone::Bad);
        app.handle_key(key('s'), &s);
        app.handle_key(key('y'), &s);
        app.finish(
            &ActionRequest {
                op: Op::Start,
                ..want
            },
            Ok(CommandReply {
                ok: true,
                programs: vec![ProgramStatus {
                    name: "other".into(),
                    state: ProgramState::Running,
                    pid: Some(123),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        );
        assert_eq!(
            app.status.as_ref().unwrap().text,
            "start other on c02/g02/n0008: ok (running pid 123)"
        );
    }

    #[test]
    fn without_a_key_actions_explain_themselves() {
        let (s, _) = store();
        let mut app = node_app(&s, false);
        assert_eq!(app.handle_key(key('r'), &s), Effect::None);
        assert!(app.confirm.is_none());
        assert!(app.status.as_ref().unwrap().text.starts_with("read-only"));
    }

    #[test]
    fn the_selection_follows_the_member_not_the_row() {
        let (mut s, _) = store();
        let mut app = App::new(Place::Grid, false);
        app.handle_key(key('j'), &s);
        assert_eq!(app.stack[0].selected.as_deref(), Some("c02"));
        let sub = Subjects::new("grid").unwrap();
        s.apply(
            &sub,
            "grid",
            &rollup(&["c00", "c01", "c02"]),
            Instant::now(),
        );
        let m = app.members(&s);
        assert_eq!(m[app.member_index(&m)].name, "c02");
        // A node that has no report yet has no programs: the arrows move in the processes.
        let id = NodeId::new("c02", "g02", "n0004").unwrap();
        s.apply_report(&id, &report(&id, None), Instant::now());
        let mut app = App::new(Place::Node(id), true);
        assert_eq!(app.effective_focus(&s), Focus::Processes);
        app.handle_key(key('r'), &s);
        assert!(app
            .status
            .as_ref()
            .unwrap()
            .text
            .contains("no supervised program"));
    }
}
