//! Metric summaries: built from node values at the group level, merged (never averaged) above.

use gridmon_nats::sketch::{Sketch, DEFAULT_ALPHA};
use gridmon_nats::wire::MetricSummary;

/// Summarises one metric's node values (NaN-free).
pub fn summarize(values: &[f64]) -> MetricSummary {
    let mut s = MetricSummary {
        count: values.len() as u64,
        min: f64::INFINITY,
        max: f64::NEG_INFINITY,
        sketch: Sketch::from_values(DEFAULT_ALPHA, values),
        ..Default::default()
    };
    for &v in values {
        s.min = s.min.min(v);
        s.max = s.max.max(v);
        s.sum += v;
    }
    finish(&mut s);
    s
}

fn finish(s: &mut MetricSummary) {
    if s.count == 0 {
        *s = MetricSummary::default();
        return;
    }
    s.mean = s.sum / s.count as f64;
    s.p50 = s.sketch.quantile(0.5).unwrap_or(f64::NAN);
    s.p95 = s.sketch.quantile(0.95).unwrap_or(f64::NAN);
}

/// Merges member summaries of one metric.
#[derive(Debug, Clone, Default)]
pub struct Merge {
    acc: Option<MetricSummary>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("metric summary rejected: {0}")]
pub struct Rejected(pub String);

impl Merge {
    /// Adds a member's summary; an inconsistent one (its sketch fails validation or disagrees
    /// with its count) is rejected whole.
    pub fn add(&mut self, s: &MetricSummary) -> Result<(), Rejected> {
        s.sketch.validate().map_err(|e| Rejected(e.to_string()))?;
        if s.count == 0 {
            // Nothing to merge; its min and max are placeholders that must not count.
            return Ok(());
        }
        if s.sketch.count() != s.count
            || !(s.min.is_finite() && s.max.is_finite() && s.sum.is_finite())
        {
            return Err(Rejected(
                "count, min, max or sum disagree with the sketch or are not finite".into(),
            ));
        }
        match &mut self.acc {
            None => self.acc = Some(s.clone()),
            Some(a) => {
                a.sketch
                    .merge(&s.sketch)
                    .map_err(|e| Rejected(e.to_string()))?;
                a.count += s.count;
                a.min = a.min.min(s.min);
                a.max = a.max.max(s.max);
                a.sum += s.sum;
            }
        }
        Ok(())
    }

    pub fn finish(self) -> Option<MetricSummary> {
        let mut s = self.acc?;
        finish(&mut s);
        Some(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summarizes() {
        let s = summarize(&[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(
            (s.count, s.min, s.max, s.sum, s.mean),
            (4, 1.0, 4.0, 10.0, 2.5)
        );
        assert!((s.p50 - 2.0).abs() <= 0.02 * 2.0, "{}", s.p50);
        assert_eq!(summarize(&[]), MetricSummary::default());
    }

    #[test]
    fn merging_equals_summarizing_the_union() {
        let a: Vec<f64> = (0..100).map(|i| f64::from(i) * 1.5).collect();
        let b: Vec<f64> = (0..37).map(|i| 200.0 + f64::from(i)).collect();
        let mut m = Merge::default();
        m.add(&summarize(&a)).unwrap();
        m.add(&summarize(&b)).unwrap();
        let merged = m.finish().unwrap();
        let all: Vec<f64> = a.iter().chain(&b).copied().collect();
        let direct = summarize(&all);
        assert_eq!(merged.count, direct.count);
        assert_eq!(merged.min, direct.min);
        assert_eq!(merged.max, direct.max);
        assert!((merged.sum - direct.sum).abs() < 1e-9);
        assert_eq!(merged.p95, direct.p95);
        assert_eq!(merged.sketch, direct.sketch);
    }

    #[test]
    fn rejects_inconsistent_members() {
        let mut bad = summarize(&[1.0, 2.0]);
        bad.count = 5;
        let mut m = Merge::default();
        assert!(m.add(&bad).is_err());
        assert!(m.finish().is_none());
    }
}
