//! Turns message bodies into ready-to-send [`Outgoing`] messages: envelope, sequence, encoding.

use std::collections::HashMap;

use bytes::Bytes;
use serde::Serialize;

use crate::publish::Outgoing;
use crate::wire::{encode, Envelope, Kind, Source, WireError, SCHEMA_VERSION};

/// Frames messages for one publisher; keeps one sequence per kind.
#[derive(Debug)]
pub struct Framer {
    source: Source,
    run_id: u64,
    seqs: HashMap<Kind, u64>,
}

impl Framer {
    /// `run_id` tells two runs of one publisher apart; the start time in ms is a good one.
    pub fn new(source: Source, run_id: u64) -> Self {
        Self {
            source,
            run_id,
            seqs: HashMap::new(),
        }
    }

    pub fn run_id(&self) -> u64 {
        self.run_id
    }

    /// Envelopes, numbers and encodes `body`. The sequence advances only when encoding works, so
    /// a gap always means a message that was lost, never one that was never made.
    pub fn frame<B: Serialize>(
        &mut self,
        kind: Kind,
        subject: String,
        ts_ms: i64,
        body: B,
    ) -> Result<Outgoing, WireError> {
        let next = self.seqs.get(&kind).copied().unwrap_or(0) + 1;
        let env = Envelope {
            schema: SCHEMA_VERSION,
            kind,
            source: self.source.clone(),
            ts_ms,
            run_id: self.run_id,
            seq: next,
            body,
        };
        let payload = encode(&env)?;
        self.seqs.insert(kind, next);
        Ok(Outgoing {
            subject,
            msg_id: env.msg_id(),
            payload: Bytes::from(payload),
        })
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{decode, NodeReport};

    #[test]
    fn sequences_per_kind() {
        let mut f = Framer::new(
            Source {
                cluster: "c".into(),
                group: Some("g".into()),
                node: Some("n".into()),
            },
            9,
        );
        let a = f
            .frame(Kind::NodeReport, "s".into(), 1, NodeReport::default())
            .unwrap();
        let b = f
            .frame(Kind::NodeReport, "s".into(), 2, NodeReport::default())
            .unwrap();
        let i = f
            .frame(
                Kind::Inventory,
                "i".into(),
                2,
                crate::wire::Inventory::default(),
            )
            .unwrap();
        let seq = |o: &Outgoing| {
            decode::<serde::de::IgnoredAny>(&o.payload, crate::wire::peek(&o.payload).unwrap().kind)
                .unwrap()
                .seq
        };
        assert_eq!((seq(&a), seq(&b), seq(&i)), (1, 2, 1));
        assert_eq!(b.msg_id, "c.g.n:node_report:9:2");
        assert_eq!(i.subject, "i");
    }
}
