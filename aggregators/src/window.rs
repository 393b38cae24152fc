//! Wall-clock windows and the members that fill them: which window an input belongs to, late
//! inputs, duplicates, and liveness (online → stale → offline → forgotten).
//!
//! Each member has two slots, one per open window: with `grace` shorter than the window, at most
//! two windows are open at once (the one awaiting its late inputs and the current one).

use std::collections::HashMap;

use gridmon_nats::config::AggregateConfig;
use gridmon_nats::wire::{InputStats, MemberStatus};

use crate::alarm::AlarmBook;

/// The numbers every fold runs by, in ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    pub window_ms: i64,
    pub grace_ms: i64,
    pub rollup_grace_ms: i64,
    pub stale_after: u32,
    pub offline_after: u32,
    pub forget_after_ms: i64,
    pub max_skew_ms: i64,
    pub max_processes: u32,
}

impl Params {
    pub fn from_config(cfg: &AggregateConfig, agent_interval: std::time::Duration) -> Self {
        let window = cfg.window(agent_interval);
        let ms = |d: std::time::Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        Self {
            window_ms: ms(window).max(1),
            grace_ms: ms(cfg.grace_for(window)),
            rollup_grace_ms: ms(cfg.rollup_grace_for(window)),
            stale_after: cfg.stale_after,
            offline_after: cfg.offline_after,
            forget_after_ms: ms(cfg.forget_after),
            max_skew_ms: ms(cfg.max_clock_skew),
            max_processes: cfg.max_processes,
        }
    }

    /// Liveness after `missed` whole windows without input.
    pub fn status(&self, missed: u32) -> MemberStatus {
        if missed >= self.offline_after {
            MemberStatus::Offline
        } else if missed >= self.stale_after {
            MemberStatus::Stale
        } else {
            MemberStatus::Online
        }
    }
}

impl Default for Params {
    fn default() -> Self {
        Self::from_config(
            &AggregateConfig::default(),
            std::time::Duration::from_secs(1),
        )
    }
}

/// The window `ts_ms` falls in. A timestamp on a boundary closes the window ending there: an
/// agent stamps its report with the tick that ends the interval the figures cover.
#[inline]
pub fn window_of_report(ts_ms: i64, window_ms: i64) -> i64 {
    (ts_ms - 1).div_euclid(window_ms) * window_ms
}

/// The start of the window containing `ts_ms`.
#[inline]
pub fn window_containing(ts_ms: i64, window_ms: i64) -> i64 {
    ts_ms.div_euclid(window_ms) * window_ms
}

/// Which windows are open and when the oldest closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clock {
    pub window_ms: i64,
    /// How long after a window's end it closes (one grace per level).
    pub lag_ms: i64,
    /// Start of the oldest open window: the next to close.
    pub open: i64,
}

/// Where an input goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    pub window: i64,
    /// Its own window had closed already.
    pub late: bool,
}

impl Clock {
    pub fn new(window_ms: i64, lag_ms: i64, now_ms: i64) -> Self {
        Self {
            window_ms,
            lag_ms,
            open: window_containing(now_ms - lag_ms, window_ms),
        }
    }

    /// When the oldest open window closes.
    pub fn close_ms(&self) -> i64 {
        self.open + self.window_ms + self.lag_ms
    }

    pub fn due(&self, now_ms: i64) -> bool {
        self.close_ms() <= now_ms
    }

    pub fn advance(&mut self) {
        self.open += self.window_ms;
    }

    /// A late input goes to the oldest open window; one from beyond the newest open window (a
    /// clock ahead, within the skew bound) to the newest.
    pub fn target(&self, window: i64) -> Target {
        if window < self.open {
            Target {
                window: self.open,
                late: true,
            }
        } else {
            Target {
                window: window.min(self.open + self.window_ms),
                late: false,
            }
        }
    }

    #[inline]
    pub fn slot(&self, window: i64) -> usize {
        (window.div_euclid(self.window_ms) & 1) as usize
    }
}

/// An input waiting in a member's slot for its window to close.
#[derive(Debug, Clone, PartialEq)]
pub struct Slot<S> {
    pub window: i64,
    pub ts_ms: i64,
    pub late: bool,
    pub sample: S,
}

/// One node of a group, or one group or cluster of the level above.
#[derive(Debug, Clone)]
pub struct Member<S> {
    pub name: Box<str>,
    /// (run id, last sequence) of node reports, for duplicate detection.
    pub run: Option<(u64, u64)>,
    /// Start of the last window this member had input in.
    pub last_window: Option<i64>,
    /// Timestamp of the last input folded.
    pub last_seen_ms: i64,
    pub status: MemberStatus,
    pub slots: [Option<Slot<S>>; 2],
    /// The last input folded, for member lines while the member is silent.
    pub last: Option<S>,
    pub alarms: AlarmBook,
}

impl<S> Member<S> {
    fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            run: None,
            last_window: None,
            last_seen_ms: 0,
            status: MemberStatus::Online,
            slots: [None, None],
            last: None,
            alarms: AlarmBook::default(),
        }
    }

    /// Whole windows without input as of closing `window`.
    pub fn missed(&self, window: i64, window_ms: i64) -> u32 {
        self.last_window.map_or(0, |l| {
            u32::try_from(((window - l) / window_ms).max(0)).unwrap_or(u32::MAX)
        })
    }
}

/// The outcome of offering an input to its member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offered {
    Folded,
    /// Late and folded into the next open window.
    Late,
    /// Late, and the member already had input in the next open window.
    LateDropped,
    /// Same member, same window, and not newer than what the slot holds.
    Duplicate,
}

/// The members of one scope, by name, with their slots.
#[derive(Debug, Clone)]
pub struct Members<S> {
    pub list: Vec<Member<S>>,
    index: HashMap<Box<str>, usize>,
}

impl<S> Default for Members<S> {
    fn default() -> Self {
        Self {
            list: Vec::new(),
            index: HashMap::new(),
        }
    }
}

impl<S> Members<S> {
    pub fn get_or_insert(&mut self, name: &str) -> &mut Member<S> {
        let i = match self.index.get(name) {
            Some(&i) => i,
            None => {
                self.list.push(Member::new(name));
                self.index.insert(name.into(), self.list.len() - 1);
                self.list.len() - 1
            }
        };
        &mut self.list[i]
    }

    pub fn get(&self, name: &str) -> Option<&Member<S>> {
        self.index.get(name).map(|&i| &self.list[i])
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Removes the members `drop` selects, keeping the index right.
    pub fn remove_where(&mut self, mut drop: impl FnMut(&Member<S>) -> bool) -> Vec<Member<S>> {
        let mut gone = Vec::new();
        let mut kept = Vec::with_capacity(self.list.len());
        for m in self.list.drain(..) {
            if drop(&m) {
                gone.push(m);
            } else {
                kept.push(m);
            }
        }
        self.list = kept;
        if !gone.is_empty() {
            self.index = self
                .list
                .iter()
                .enumerate()
                .map(|(i, m)| (m.name.clone(), i))
                .collect();
        }
        gone
    }
}

/// Puts an input into its member's slot by the late/duplicate rules: within a window the newest
/// input wins; a late input only fills an empty slot. Nothing is ever counted in two windows.
pub fn offer<S>(
    clock: &Clock,
    member: &mut Member<S>,
    input_window: i64,
    ts_ms: i64,
    sample: S,
    stats: &mut InputStats,
) -> Offered {
    let t = clock.target(input_window);
    let slot = &mut member.slots[clock.slot(t.window)];
    let current = slot.as_ref().filter(|s| s.window == t.window);
    let outcome = match (current, t.late) {
        (None, false) => Offered::Folded,
        (None, true) => Offered::Late,
        (Some(_), true) => Offered::LateDropped,
        (Some(s), false) if s.late || ts_ms > s.ts_ms => Offered::Folded,
        (Some(_), false) => Offered::Duplicate,
    };
    match outcome {
        Offered::Folded | Offered::Late => {
            *slot = Some(Slot {
                window: t.window,
                ts_ms,
                late: t.late,
                sample,
            });
            stats.folded += 1;
            if t.late {
                stats.late += 1;
            }
        }
        Offered::LateDropped => {
            stats.late += 1;
            stats.late_dropped += 1;
        }
        Offered::Duplicate => stats.duplicate += 1,
    }
    outcome
}

/// Takes a member's input for `window`, if it has one.
pub fn take<S>(clock: &Clock, member: &mut Member<S>, window: i64) -> Option<Slot<S>> {
    let slot = &mut member.slots[clock.slot(window)];
    if slot.as_ref().is_some_and(|s| s.window == window) {
        return slot.take();
    }
    // A stale leftover of a window that closed without it (cannot happen with two slots and
    // in-order closes, but never let one linger into a later window).
    if slot.as_ref().is_some_and(|s| s.window < window) {
        *slot = None;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: i64 = 1000;

    #[test]
    fn windows() {
        assert_eq!(
            window_of_report(5000, W),
            4000,
            "a boundary closes the window before it"
        );
        assert_eq!(window_of_report(5001, W), 5000);
        assert_eq!(window_of_report(5999, W), 5000);
        assert_eq!(window_containing(5000, W), 5000);
        assert_eq!(window_of_report(0, W), -1000);
    }

    #[test]
    fn clock() {
        let mut c = Clock::new(W, 250, 10_100);
        // At 10.1 s with 250 ms of lag, the window [9 s, 10 s) is still open until 10.25 s.
        assert_eq!(c.open, 9000);
        assert_eq!(c.close_ms(), 10_250);
        assert!(!c.due(10_249));
        assert!(c.due(10_250));
        assert_eq!(
            c.target(8000),
            Target {
                window: 9000,
                late: true
            }
        );
        assert_eq!(
            c.target(10_000),
            Target {
                window: 10_000,
                late: false
            }
        );
        assert_eq!(
            c.target(50_000),
            Target {
                window: 10_000,
                late: false
            },
            "ahead: the newest open window"
        );
        c.advance();
        assert_eq!(c.open, 10_000);
        assert_ne!(c.slot(10_000), c.slot(11_000));
        assert_eq!(c.slot(10_000), c.slot(12_000));
    }

    fn check(inputs: &[(i64, i64)], expected: &[Offered], folded_ts: Option<i64>) {
        let c = Clock::new(W, 250, 10_100);
        let mut m: Member<i64> = Member::new("n");
        let mut stats = InputStats::default();
        let got: Vec<Offered> = inputs
            .iter()
            .map(|&(w, ts)| offer(&c, &mut m, w, ts, ts, &mut stats))
            .collect();
        assert_eq!(got, expected, "{inputs:?}");
        assert_eq!(take(&c, &mut m, 9000).map(|s| s.sample), folded_ts);
        assert_eq!(
            stats.folded,
            expected
                .iter()
                .filter(|o| matches!(o, Offered::Folded | Offered::Late))
                .count() as u64
        );
    }

    #[test]
    fn late_and_duplicate_rules() {
        use Offered::*;
        check(&[(9000, 9500)], &[Folded], Some(9500));
        // Newer replaces, an equal or older one is a duplicate.
        check(&[(9000, 9500), (9000, 9900)], &[Folded, Folded], Some(9900));
        check(
            &[(9000, 9500), (9000, 9500)],
            &[Folded, Duplicate],
            Some(9500),
        );
        // A late input fills the open window once; an on-time one replaces it; a second late
        // one is dropped.
        check(&[(8000, 8500)], &[Late], Some(8500));
        check(&[(8000, 8500), (9000, 9100)], &[Late, Folded], Some(9100));
        check(
            &[(9000, 9100), (8000, 8500)],
            &[Folded, LateDropped],
            Some(9100),
        );
        check(
            &[(8000, 8500), (7000, 7500)],
            &[Late, LateDropped],
            Some(8500),
        );
        // The next window has its own slot.
        check(&[(10_000, 10_050)], &[Folded], None);
    }

    #[test]
    fn members_index_survives_removal() {
        let mut ms: Members<()> = Members::default();
        for n in ["a", "b", "c"] {
            ms.get_or_insert(n);
        }
        let gone = ms.remove_where(|m| &*m.name == "a");
        assert_eq!(gone.len(), 1);
        assert_eq!(ms.len(), 2);
        assert_eq!(&*ms.get("c").unwrap().name, "c");
        assert!(ms.get("a").is_none());
        ms.get_or_insert("a");
        assert_eq!(ms.len(), 3);
    }

    #[test]
    fn liveness() {
        let p = Params::default();
        assert_eq!(p.status(0), MemberStatus::Online);
        assert_eq!(p.status(2), MemberStatus::Online);
        assert_eq!(p.status(3), MemberStatus::Stale);
        assert_eq!(p.status(10), MemberStatus::Offline);
    }
}
