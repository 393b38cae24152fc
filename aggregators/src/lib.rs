//! gridmon's rollups: node reports folded into group, cluster and grid windows, node liveness,
//! and alarms. Pure logic over decoded messages and explicit timestamps; the bus side (subscribing,
//! leadership, publishing) lives in the binary's `aggregate` command.
//!
//! The levels: a [`group::GroupFold`] takes node reports and closes each wall-clock window one
//! `grace` after it ends; an [`upper::UpperFold`] takes the rollups of the level below and closes
//! `rollup_grace` later, merging their sketches so quantiles stay right all the way up.

pub mod alarm;
pub mod group;
pub mod sample;
pub mod summary;
pub mod upper;
pub mod window;

use gridmon_nats::wire::{
    ActiveAlarm, AlarmEvent, AlarmSummary, Event, Rollup, Severity, ALARM_LIST_MAX,
};
use gridmon_nats::{NodeId, Scope};

/// What closing windows produces, in the order it should be published.
// One rollup per scope per window, moved straight to the publisher: boxing it would add an
// allocation for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// A rollup of `scope` for one window; `close_ms` is when the window closed.
    Rollup {
        scope: Scope,
        close_ms: i64,
        rollup: Rollup,
    },
    /// A node liveness change, for `<p>.event.<c>.<g>.<n>`.
    Event {
        node: NodeId,
        ts_ms: i64,
        event: Event,
    },
    /// An alarm raised or cleared, for `<p>.alarm.<scope…>`.
    Alarm { scope: Scope, event: AlarmEvent },
}

/// Counts `own` alarms on top of the members' counts in `below`, and lists them all, most severe
/// and oldest first, up to [`ALARM_LIST_MAX`].
pub(crate) fn alarm_summary(
    below: AlarmSummary,
    own: Vec<ActiveAlarm>,
    listed_below: Vec<ActiveAlarm>,
) -> AlarmSummary {
    let mut s = AlarmSummary {
        list: Vec::new(),
        ..below
    };
    for a in &own {
        s.active = s.active.saturating_add(1);
        let slot = match a.severity {
            Severity::Critical => &mut s.critical,
            Severity::Warning => &mut s.warning,
            Severity::Info => &mut s.info,
        };
        *slot = slot.saturating_add(1);
    }
    let mut list = own;
    list.extend(listed_below);
    list.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then(a.since_ms.cmp(&b.since_ms))
            .then_with(|| a.id.cmp(&b.id))
    });
    list.truncate(ALARM_LIST_MAX);
    s.list = list;
    s
}
