//! Finds the process rows inside an encoded node report (and the member lines inside an encoded
//! rollup) by jumping over MessagePack values, so the aggregators can decode everything else
//! without walking (or UTF-8-checking) them.
//!
//! A 500-process report is about 160 KB, nearly all of it rows. Serde's `IgnoredAny` still visits
//! every row field and validates every string; jumping from marker to marker costs a fraction of
//! that. The skipper is iterative (no recursion for hostile nesting to exhaust) and every value
//! consumes at least one byte, so any input ends in at most `len` steps.

use crate::wire::{decode, Envelope, Kind, ReportView, Rollup, WireError, SCHEMA_VERSION};

/// Position just past the MessagePack value that starts at `pos`; `None` if the bytes end first
/// or hold the never-used marker `0xc1`.
pub fn skip(buf: &[u8], mut pos: usize) -> Option<usize> {
    let mut remaining: u64 = 1;
    while remaining > 0 {
        remaining -= 1;
        let m = *buf.get(pos)?;
        pos += 1;
        let (len_bytes, extra, items) = match m {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (0, 0, 0),
            0x80..=0x8f => (0, 0, 2 * u64::from(m & 0x0f)),
            0x90..=0x9f => (0, 0, u64::from(m & 0x0f)),
            0xa0..=0xbf => (0, usize::from(m & 0x1f), 0),
            0xca | 0xce | 0xd2 => (0, 4, 0),
            0xcb | 0xcf | 0xd3 => (0, 8, 0),
            0xcc | 0xd0 => (0, 1, 0),
            0xcd | 0xd1 => (0, 2, 0),
            0xd4 => (0, 2, 0),
            0xd5 => (0, 3, 0),
            0xd6 => (0, 5, 0),
            0xd7 => (0, 9, 0),
            0xd8 => (0, 17, 0),
            // bin and str: a length, then that many bytes.
            0xc4 | 0xd9 => (1, 0, 0),
            0xc5 | 0xda => (2, 0, 0),
            0xc6 | 0xdb => (4, 0, 0),
            // ext: a length, a type byte, then the data.
            0xc7 => (1, 1, 0),
            0xc8 => (2, 1, 0),
            0xc9 => (4, 1, 0),
            0xdc => {
                remaining += be(buf, pos, 2)?;
                pos += 2;
                continue;
            }
            0xdd => {
                remaining += be(buf, pos, 4)?;
                pos += 4;
                continue;
            }
            0xde => {
                remaining += 2 * be(buf, pos, 2)?;
                pos += 2;
                continue;
            }
            0xdf => {
                remaining += 2 * be(buf, pos, 4)?;
                pos += 4;
                continue;
            }
            0xc1 => return None,
        };
        remaining += items;
        let data = if len_bytes > 0 {
            let n = usize::try_from(be(buf, pos, len_bytes)?).ok()?;
            pos += len_bytes;
            n
        } else {
            0
        };
        pos = pos.checked_add(extra)?.checked_add(data)?;
        if pos > buf.len() {
            return None;
        }
    }
    Some(pos)
}

/// A big-endian unsigned integer of `n` bytes at `pos`.
fn be(buf: &[u8], pos: usize, n: usize) -> Option<u64> {
    let bytes = buf.get(pos..pos.checked_add(n)?)?;
    Some(bytes.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
}

/// (entries, position of the first key) of the map at `pos`.
fn map_header(buf: &[u8], pos: usize) -> Option<(u64, usize)> {
    match *buf.get(pos)? {
        m @ 0x80..=0x8f => Some((u64::from(m & 0x0f), pos + 1)),
        0xde => Some((be(buf, pos + 1, 2)?, pos + 3)),
        0xdf => Some((be(buf, pos + 1, 4)?, pos + 5)),
        _ => None,
    }
}

/// (elements, position of the first) of the array at `pos`.
fn array_header(buf: &[u8], pos: usize) -> Option<(u64, usize)> {
    match *buf.get(pos)? {
        m @ 0x90..=0x9f => Some((u64::from(m & 0x0f), pos + 1)),
        0xdc => Some((be(buf, pos + 1, 2)?, pos + 3)),
        0xdd => Some((be(buf, pos + 1, 4)?, pos + 5)),
        _ => None,
    }
}

/// The bytes of the string at `pos` and the position after it.
fn str_at(buf: &[u8], pos: usize) -> Option<(&[u8], usize)> {
    let (len, start) = match *buf.get(pos)? {
        m @ 0xa0..=0xbf => (usize::from(m & 0x1f), pos + 1),
        0xd9 => (usize::try_from(be(buf, pos + 1, 1)?).ok()?, pos + 2),
        0xda => (usize::try_from(be(buf, pos + 1, 2)?).ok()?, pos + 3),
        0xdb => (usize::try_from(be(buf, pos + 1, 4)?).ok()?, pos + 5),
        _ => return None,
    };
    let end = start.checked_add(len)?;
    Some((buf.get(start..end)?, end))
}

/// Where the value of `key` starts in the map at `pos`.
fn find(buf: &[u8], pos: usize, key: &[u8]) -> Option<usize> {
    let (n, mut at) = map_header(buf, pos)?;
    for _ in 0..n {
        let (k, value) = match str_at(buf, at) {
            Some(kv) => kv,
            // A non-string key: not ours; skip it.
            None => (&[][..], skip(buf, at)?),
        };
        if k == key {
            return Some(value);
        }
        at = skip(buf, value)?;
    }
    None
}

/// (start, end, elements) of `body.processes.rows` in an encoded report, if it has rows.
pub fn locate_rows(buf: &[u8]) -> Option<(usize, usize, u64)> {
    let body = find(buf, 0, b"body")?;
    let processes = find(buf, body, b"processes")?;
    let rows = find(buf, processes, b"rows")?;
    let (n, _) = array_header(buf, rows)?;
    Some((rows, skip(buf, rows)?, n))
}

/// Decodes a node report as [`ReportView`]: the rows are cut out by byte jumps first, and only
/// counted. Gives the same result as `decode::<ReportView>` on well-formed input.
pub fn decode_report_view(bytes: &[u8]) -> Result<Envelope<ReportView>, WireError> {
    let Some((start, end, n)) = locate_rows(bytes) else {
        return decode(bytes, Kind::NodeReport);
    };
    let mut env: Envelope<ReportView> = decode(&emptied(bytes, start, end), Kind::NodeReport)?;
    if let Some(p) = &mut env.body.processes {
        p.row_count = u32::try_from(n).unwrap_or(u32::MAX);
    }
    Ok(env)
}

/// The MessagePack integer at `pos`, if it is one that fits an `i64`.
fn int_at(buf: &[u8], pos: usize) -> Option<i64> {
    let m = *buf.get(pos)?;
    match m {
        0x00..=0x7f => Some(i64::from(m)),
        0xe0..=0xff => Some(i64::from(m as i8)),
        0xcc => i64::try_from(be(buf, pos + 1, 1)?).ok(),
        0xcd => i64::try_from(be(buf, pos + 1, 2)?).ok(),
        0xce => i64::try_from(be(buf, pos + 1, 4)?).ok(),
        0xcf => i64::try_from(be(buf, pos + 1, 8)?).ok(),
        0xd0 => Some(i64::from(be(buf, pos + 1, 1)? as u8 as i8)),
        0xd1 => Some(i64::from(be(buf, pos + 1, 2)? as u16 as i16)),
        0xd2 => Some(i64::from(be(buf, pos + 1, 4)? as u32 as i32)),
        0xd3 => Some(be(buf, pos + 1, 8)? as i64),
        _ => None,
    }
}

/// The window start of an encoded rollup of this schema, read by byte jumps without decoding
/// anything else: how a standby aggregator follows what the leader publishes. `None` for
/// anything that is not a well-formed rollup envelope of [`SCHEMA_VERSION`] as far as read.
pub fn rollup_window_start(buf: &[u8]) -> Option<i64> {
    if int_at(buf, find(buf, 0, b"schema")?)? != i64::from(SCHEMA_VERSION) {
        return None;
    }
    if str_at(buf, find(buf, 0, b"kind")?)?.0 != Kind::Rollup.as_str().as_bytes() {
        return None;
    }
    int_at(buf, find(buf, find(buf, 0, b"body")?, b"window_start_ms")?)
}

/// (start, end, elements) of `body.members` in an encoded rollup, if it has member lines.
pub fn locate_members(buf: &[u8]) -> Option<(usize, usize, u64)> {
    let body = find(buf, 0, b"body")?;
    let members = find(buf, body, b"members")?;
    let (n, _) = array_header(buf, members)?;
    Some((members, skip(buf, members)?, n))
}

/// Decodes a rollup without its member lines (`members` comes back empty): what an upper-level
/// fold reads of the rollups below it. The member lines are most of a group rollup (128 of them
/// in 41 KB) and nothing above the group uses them; they are cut out by byte jumps before the
/// serde decode. Otherwise the same result as `decode::<Rollup>` on well-formed input.
pub fn decode_rollup_summary(bytes: &[u8]) -> Result<Envelope<Rollup>, WireError> {
    match locate_members(bytes) {
        Some((start, end, _)) => decode(&emptied(bytes, start, end), Kind::Rollup),
        None => decode(bytes, Kind::Rollup),
    }
}

/// A copy of `bytes` with the array at `start..end` replaced by an empty one.
fn emptied(bytes: &[u8], start: usize, end: usize) -> Vec<u8> {
    let mut cut = Vec::with_capacity(bytes.len() - (end - start) + 1);
    cut.extend_from_slice(&bytes[..start]);
    cut.push(0x90);
    cut.extend_from_slice(&bytes[end..]);
    cut
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{encode, NodeReport, ProcessRow, ProcessTable, Source, SCHEMA_VERSION};
    use proptest::prelude::*;

    fn report(rows: usize, name: &str) -> Vec<u8> {
        let env = Envelope {
            schema: SCHEMA_VERSION,
            kind: Kind::NodeReport,
            source: Source {
                cluster: "c".into(),
                group: Some("g".into()),
                node: Some("n".into()),
            },
            ts_ms: 1,
            run_id: 2,
            seq: 3,
            body: NodeReport {
                interval_ms: 1000,
                processes: Some(ProcessTable {
                    total: rows as u32 + 5,
                    rows: (0..rows)
                        .map(|i| ProcessRow {
                            pid: i as u32,
                            name: name.into(),
                            cmdline: name.repeat(40),
                            cpu_pct: 1.5,
                            fds: Some(7),
                            read_bytes_ps: None,
                            start_time_ms: -5,
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }),
                ..Default::default()
            },
        };
        encode(&env).unwrap()
    }

    #[test]
    fn skim_equals_the_full_view_decode() {
        for rows in [0, 1, 15, 16, 500, 70_000] {
            let bytes = report(rows, "wörker");
            let fast = decode_report_view(&bytes).unwrap();
            let slow: Envelope<ReportView> = decode(&bytes, Kind::NodeReport).unwrap();
            assert_eq!(fast, slow, "{rows} rows");
            assert_eq!(fast.body.processes.as_ref().unwrap().row_count, rows as u32);
        }
    }

    fn rollup(members: usize) -> Vec<u8> {
        use crate::wire::{Level, MemberLine};
        let env = Envelope {
            schema: SCHEMA_VERSION,
            kind: Kind::Rollup,
            source: Source {
                cluster: "c".into(),
                group: Some("g".into()),
                node: None,
            },
            ts_ms: 1,
            run_id: 2,
            seq: 3,
            body: Rollup {
                level: Level::Group,
                window_start_ms: 1000,
                window_ms: 1000,
                inputs: members as u32,
                members: (0..members)
                    .map(|i| MemberLine {
                        name: format!("n{i:04}"),
                        cpu_pct: Some(i as f32),
                        last_seen_ms: 999,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            },
        };
        encode(&env).unwrap()
    }

    #[test]
    fn rollup_summary_equals_the_full_decode_without_members() {
        for members in [0, 1, 15, 16, 128, 70_000] {
            let bytes = rollup(members);
            let fast = decode_rollup_summary(&bytes).unwrap();
            let mut slow: Envelope<Rollup> = decode(&bytes, Kind::Rollup).unwrap();
            assert_eq!(slow.body.members.len(), members);
            slow.body.members.clear();
            assert_eq!(fast, slow, "{members} members");
        }
        for start in [
            0i64,
            1,
            127,
            128,
            -1,
            -33,
            1_795_473_360_000,
            -1_795_473_360_000,
        ] {
            let mut env: Envelope<Rollup> = decode(&rollup(3), Kind::Rollup).unwrap();
            env.body.window_start_ms = start;
            let bytes = encode(&env).unwrap();
            assert_eq!(rollup_window_start(&bytes), Some(start));
            env.schema = SCHEMA_VERSION + 1;
            assert_eq!(rollup_window_start(&encode(&env).unwrap()), None);
        }
        assert_eq!(rollup_window_start(&report(3, "w")), None, "not a rollup");
        // Damaged bytes are an error, not a panic.
        let bytes = rollup(128);
        assert!(decode_rollup_summary(&bytes[..bytes.len() / 2]).is_err());
    }

    #[test]
    fn no_process_table_decodes_normally() {
        let env = Envelope {
            schema: SCHEMA_VERSION,
            kind: Kind::NodeReport,
            source: Source::default(),
            ts_ms: 1,
            run_id: 1,
            seq: 1,
            body: NodeReport::default(),
        };
        let bytes = encode(&env).unwrap();
        assert_eq!(locate_rows(&bytes), None);
        assert!(decode_report_view(&bytes).unwrap().body.processes.is_none());
    }

    #[test]
    fn skips_every_marker() {
        // One value of each family, checked against a full decode's idea of where it ends.
        let values: Vec<rmpv_like::V> = rmpv_like::samples();
        for v in values {
            let bytes = v.bytes();
            assert_eq!(skip(&bytes, 0), Some(bytes.len()), "{v:?}");
            assert_eq!(skip(&bytes[..bytes.len() - 1], 0), None, "{v:?} truncated");
        }
    }

    /// Hand-assembled MessagePack values covering the marker table.
    mod rmpv_like {
        #[derive(Debug)]
        pub struct V(pub Vec<u8>);
        impl V {
            pub fn bytes(&self) -> Vec<u8> {
                self.0.clone()
            }
        }
        pub fn samples() -> Vec<V> {
            let mut out = vec![
                V(vec![0x05]),
                V(vec![0xe5]),
                V(vec![0xcc, 1]),
                V(vec![0xcd, 1, 2]),
                V(vec![0xce, 1, 2, 3, 4]),
                V(vec![0xcf, 0, 0, 0, 0, 0, 0, 0, 1]),
                V(vec![0xd0, 1]),
                V(vec![0xd3, 0, 0, 0, 0, 0, 0, 0, 1]),
                V(vec![0xca, 0, 0, 0, 0]),
                V(vec![0xcb, 0, 0, 0, 0, 0, 0, 0, 0]),
                V(vec![0xa3, b'a', b'b', b'c']),
                V(vec![0xd9, 2, b'a', b'b']),
                V(vec![0xda, 0, 1, b'a']),
                V(vec![0xdb, 0, 0, 0, 1, b'a']),
                V(vec![0xc4, 1, 9]),
                V(vec![0xc5, 0, 1, 9]),
                V(vec![0xc6, 0, 0, 0, 1, 9]),
                V(vec![0xd4, 1, 2]),
                V(vec![
                    0xd8, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                ]),
                V(vec![0xc7, 1, 5, 9]),
                V(vec![0xc8, 0, 1, 5, 9]),
                V(vec![0xc9, 0, 0, 0, 1, 5, 9]),
                V(vec![0x92, 0x01, 0xa1, b'x']),
                V(vec![0xdc, 0, 2, 0x01, 0x02]),
                V(vec![0xdd, 0, 0, 0, 1, 0x01]),
                V(vec![0x81, 0xa1, b'k', 0x91, 0x80]),
                V(vec![0xde, 0, 1, 0x01, 0x02]),
                V(vec![0xdf, 0, 0, 0, 1, 0x01, 0x02]),
            ];
            out.push(V(vec![0x91, 0x91, 0x91, 0xc0]));
            out
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = skip(&bytes, 0);
            let _ = locate_rows(&bytes);
            // A valid envelope needs the named fields, which random bytes never spell out.
            prop_assert!(decode_report_view(&bytes).is_err());
        }

        #[test]
        fn mutated_rollups_never_panic(flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
            let mut bytes = rollup(20);
            for (at, v) in flips {
                let i = at % bytes.len();
                bytes[i] = v;
            }
            let _ = decode_rollup_summary(&bytes);
            let _ = rollup_window_start(&bytes);
        }

        #[test]
        fn mutated_reports_never_panic(flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
            let mut bytes = report(20, "w");
            for (at, v) in flips {
                let i = at % bytes.len();
                bytes[i] = v;
            }
            let _ = decode_report_view(&bytes);
        }

        #[test]
        fn skim_agrees_with_serde_on_random_tables(rows in 0usize..40, name in "[a-zé]{0,20}") {
            let bytes = report(rows, &name);
            let fast = decode_report_view(&bytes).unwrap();
            let slow: Envelope<ReportView> = decode(&bytes, Kind::NodeReport).unwrap();
            prop_assert_eq!(fast, slow);
        }
    }
}
