//! A mergeable relative-error quantile sketch (DDSketch-style logarithmic buckets) and its wire form.
//!
//! Rollups carry one [`Sketch`] per distribution so a cluster can merge its groups' sketches and
//! read p50/p95 of the whole, instead of averaging averages. The sketch is a plain serde struct,
//! written as a MessagePack map like every other wire type (`docs/wire.md`, "Quantile sketch"):
//!
//! - `γ = (1 + α) / (1 − α)`; a magnitude `x ≥ MIN_VALUE` goes to bucket `k = ceil(ln x / ln γ)`,
//!   which holds `(γ^(k−1), γ^k]`; smaller magnitudes are counted in `zeros` as 0.
//! - A bucket reads back as `2·γ^k / (γ + 1)` (= `(1 − α)·γ^k`), within relative error α of every
//!   value in it, so any quantile is within α of the true value at its rank.
//! - Positive values and negative magnitudes keep separate ascending key lists; merging two
//!   sketches of the same α is a bucket-wise sum, exactly what one sketch of all values would hold.
//!
//! Each sign keeps at most [`MAX_BUCKETS`] buckets. Past that, the buckets nearest zero are folded
//! into the lowest kept one: quantiles that land there lose the guarantee and read as that bucket's
//! value (too large in magnitude). With α = 0.01 this needs a dynamic range over ~6·10^17 in one
//! sign, far beyond any metric we carry. Folding is consistent: merging folded sketches gives the
//! same sketch as folding the merge of the unfolded ones.

use serde::{Deserialize, Serialize};

/// Default relative accuracy.
pub const DEFAULT_ALPHA: f64 = 0.01;

/// Most buckets one sign may hold; beyond it the buckets nearest zero are collapsed (module docs).
pub const MAX_BUCKETS: usize = 2048;

/// Magnitudes below this are counted as 0 (in `zeros`, and as 0 for `min`/`max`).
pub const MIN_VALUE: f64 = 1e-9;

/// `ln γ` for [`DEFAULT_ALPHA`], so the common case spends one `ln` per value, not two.
const DEFAULT_LN_GAMMA: f64 = 0.020000666706669435;

/// Why a sketch was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SketchError {
    #[error("relative accuracy α = {0} is outside (0, 1); use a value such as 0.01")]
    BadAlpha(f64),
    #[error("cannot merge a sketch of α = {theirs} into one of α = {ours}; every publisher of a rollup must use the same α")]
    AlphaMismatch { ours: f64, theirs: f64 },
    #[error("malformed sketch: {0}; drop it and count it as a bad message")]
    Invalid(String),
}

/// A relative-error quantile sketch; see the module docs for the bucket mapping.
///
/// Fields are public because this is the wire form; a decoded sketch is untrusted until
/// [`Sketch::validate`] accepts it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Sketch {
    /// Relative accuracy α.
    pub alpha: f64,
    /// Values counted (including zeros).
    pub count: u64,
    /// Values whose magnitude is below [`MIN_VALUE`], counted as 0.
    pub zeros: u64,
    /// Positive values: bucket keys, strictly ascending.
    pub pos_keys: Vec<i32>,
    /// Counts of `pos_keys`, same length.
    pub pos_counts: Vec<u64>,
    /// Negative values by magnitude: bucket keys, strictly ascending.
    pub neg_keys: Vec<i32>,
    /// Counts of `neg_keys`, same length.
    pub neg_counts: Vec<u64>,
    /// Exact smallest value seen (finite; 0 when empty).
    pub min: f64,
    /// Exact largest value seen (finite; 0 when empty).
    pub max: f64,
}

impl Default for Sketch {
    fn default() -> Self {
        Self {
            alpha: DEFAULT_ALPHA,
            count: 0,
            zeros: 0,
            pos_keys: Vec::new(),
            pos_counts: Vec::new(),
            neg_keys: Vec::new(),
            neg_counts: Vec::new(),
            min: 0.0,
            max: 0.0,
        }
    }
}

impl Sketch {
    /// An empty sketch with [`DEFAULT_ALPHA`].
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty sketch with relative accuracy `alpha`, which must lie in (0, 1).
    pub fn with_alpha(alpha: f64) -> Result<Self, SketchError> {
        if !alpha_ok(alpha) {
            return Err(SketchError::BadAlpha(alpha));
        }
        Ok(Self {
            alpha,
            ..Self::default()
        })
    }

    /// Adds one value; NaN and infinities are ignored and return false.
    pub fn add(&mut self, v: f64) -> bool {
        if !v.is_finite() {
            return false;
        }
        let v = if v.abs() < MIN_VALUE { 0.0 } else { v };
        if self.count == 0 {
            self.min = v;
            self.max = v;
        } else {
            self.min = self.min.min(v);
            self.max = self.max.max(v);
        }
        self.count = self.count.saturating_add(1);
        if v > 0.0 {
            let k = key_of(v, ln_gamma(self.alpha));
            insert(&mut self.pos_keys, &mut self.pos_counts, k);
            collapse_sign(&mut self.pos_keys, &mut self.pos_counts, MAX_BUCKETS);
        } else if v < 0.0 {
            let k = key_of(-v, ln_gamma(self.alpha));
            insert(&mut self.neg_keys, &mut self.neg_counts, k);
            collapse_sign(&mut self.neg_keys, &mut self.neg_counts, MAX_BUCKETS);
        } else {
            self.zeros = self.zeros.saturating_add(1);
        }
        true
    }

    /// Builds a sketch of a batch; NaN and infinities are skipped. An `alpha` outside (0, 1)
    /// falls back to [`DEFAULT_ALPHA`]. Equal to adding the values one by one, only faster.
    pub fn from_values(alpha: f64, values: &[f64]) -> Self {
        let alpha = if alpha_ok(alpha) {
            alpha
        } else {
            DEFAULT_ALPHA
        };
        let ln_g = ln_gamma(alpha);
        let mut s = Self {
            alpha,
            ..Self::default()
        };
        // Keys are gathered unsorted into the key vectors themselves, then sorted and
        // run-length encoded in place: no scratch buffer. Most metrics are positive.
        s.pos_keys.reserve(values.len());
        let (mut min, mut max) = (f64::INFINITY, f64::NEG_INFINITY);
        for &v in values {
            if !v.is_finite() {
                continue;
            }
            let v = if v.abs() < MIN_VALUE { 0.0 } else { v };
            s.count += 1;
            min = min.min(v);
            max = max.max(v);
            if v > 0.0 {
                s.pos_keys.push(key_of(v, ln_g));
            } else if v < 0.0 {
                s.neg_keys.push(key_of(-v, ln_g));
            } else {
                s.zeros += 1;
            }
        }
        if s.count > 0 {
            s.min = min;
            s.max = max;
        }
        run_length(&mut s.pos_keys, &mut s.pos_counts);
        run_length(&mut s.neg_keys, &mut s.neg_counts);
        s.collapse_to(MAX_BUCKETS);
        s
    }

    /// Merges `other` into this sketch: an exact bucket-wise sum, linear in the bucket counts.
    ///
    /// Refuses (and leaves `self` unchanged) if `other` fails [`Sketch::validate`] or has a
    /// different α. `self` is trusted; if it is malformed the result is meaningless but nothing
    /// panics.
    pub fn merge(&mut self, other: &Sketch) -> Result<(), SketchError> {
        other.validate()?;
        if other.alpha != self.alpha {
            return Err(SketchError::AlphaMismatch {
                ours: self.alpha,
                theirs: other.alpha,
            });
        }
        self.merge_unchecked(other, MAX_BUCKETS);
        Ok(())
    }

    /// The value at 0-based rank `floor(q * (count - 1))` of the sorted values (computed in
    /// f64), within relative error α, clamped to `[min, max]`; rank 0 and the last rank give
    /// `min` and `max` exactly. `q` is clamped to [0, 1]; `None` when empty or `q` is NaN.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 || q.is_nan() {
            return None;
        }
        let last = self.count - 1;
        // `as` saturates, and f64 rounding of a huge `last` may overshoot: cap at `last`.
        let rank = ((q.clamp(0.0, 1.0) * last as f64).floor() as u64).min(last);
        if rank == 0 {
            return Some(self.min);
        }
        if rank == last {
            return Some(self.max);
        }
        let ln_g = ln_gamma(self.alpha);
        // f64::clamp panics when min > max; a malformed sketch must not take us down.
        let clamp = |v: f64| v.max(self.min).min(self.max);
        let mut seen = 0u64;
        // Ascending order of value: negatives from the largest magnitude, zeros, positives.
        for (&k, &c) in self.neg_keys.iter().zip(&self.neg_counts).rev() {
            seen = seen.saturating_add(c);
            if seen > rank {
                return Some(clamp(-bucket_value(k, self.alpha, ln_g)));
            }
        }
        seen = seen.saturating_add(self.zeros);
        if seen > rank {
            return Some(clamp(0.0));
        }
        for (&k, &c) in self.pos_keys.iter().zip(&self.pos_counts) {
            seen = seen.saturating_add(c);
            if seen > rank {
                return Some(clamp(bucket_value(k, self.alpha, ln_g)));
            }
        }
        // Only a malformed sketch (buckets short of `count`) gets here.
        Some(self.max)
    }

    /// Values counted, including zeros.
    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Checks a decoded (untrusted) sketch: α in (0, 1); each sign's key and count vectors of
    /// equal length, at most [`MAX_BUCKETS`], keys strictly ascending; bucket counts plus
    /// `zeros` equal to `count`; `min` and `max` finite with `min <= max`.
    pub fn validate(&self) -> Result<(), SketchError> {
        if !alpha_ok(self.alpha) {
            return Err(SketchError::BadAlpha(self.alpha));
        }
        let pos = check_sign("pos", &self.pos_keys, &self.pos_counts)?;
        let neg = check_sign("neg", &self.neg_keys, &self.neg_counts)?;
        let total = pos
            .checked_add(neg)
            .and_then(|t| t.checked_add(self.zeros))
            .ok_or_else(|| SketchError::Invalid("bucket counts overflow u64".into()))?;
        if total != self.count {
            return Err(SketchError::Invalid(format!(
                "pos_counts ({pos}) + neg_counts ({neg}) + zeros ({}) = {total}, but count is {}",
                self.zeros, self.count
            )));
        }
        if !self.min.is_finite() || !self.max.is_finite() || self.min > self.max {
            return Err(SketchError::Invalid(format!(
                "min {} and max {} must be finite with min <= max",
                self.min, self.max
            )));
        }
        Ok(())
    }

    /// [`Sketch::merge`] without the checks, keeping at most `max_buckets` per sign.
    /// Never panics, whatever either side holds.
    fn merge_unchecked(&mut self, other: &Sketch, max_buckets: usize) {
        if other.count > 0 {
            if self.count == 0 {
                self.min = other.min;
                self.max = other.max;
            } else {
                self.min = self.min.min(other.min);
                self.max = self.max.max(other.max);
            }
        }
        self.count = self.count.saturating_add(other.count);
        self.zeros = self.zeros.saturating_add(other.zeros);
        merge_sign(
            &mut self.pos_keys,
            &mut self.pos_counts,
            &other.pos_keys,
            &other.pos_counts,
        );
        merge_sign(
            &mut self.neg_keys,
            &mut self.neg_counts,
            &other.neg_keys,
            &other.neg_counts,
        );
        self.collapse_to(max_buckets);
    }

    /// Keeps at most `max` (at least 1) buckets per sign by folding those nearest zero into the
    /// lowest kept one.
    fn collapse_to(&mut self, max: usize) {
        collapse_sign(&mut self.pos_keys, &mut self.pos_counts, max);
        collapse_sign(&mut self.neg_keys, &mut self.neg_counts, max);
    }
}

fn alpha_ok(alpha: f64) -> bool {
    alpha > 0.0 && alpha < 1.0
}

/// `ln γ` with `γ = (1 + α) / (1 − α)`.
#[inline]
fn ln_gamma(alpha: f64) -> f64 {
    if alpha == DEFAULT_ALPHA {
        DEFAULT_LN_GAMMA
    } else {
        ((1.0 + alpha) / (1.0 - alpha)).ln()
    }
}

/// The bucket of a magnitude `abs >= MIN_VALUE`: `ceil(ln abs / ln γ)`.
#[inline]
fn key_of(abs: f64, ln_gamma: f64) -> i32 {
    // `as` saturates (NaN gives 0): that is the clamp extreme magnitudes and odd α need.
    (abs.ln() / ln_gamma).ceil() as i32
}

/// What bucket `key` reads back as: `2·γ^k / (γ + 1)`, which equals `(1 − α)·γ^k`.
#[inline]
fn bucket_value(key: i32, alpha: f64, ln_gamma: f64) -> f64 {
    (1.0 - alpha) * (f64::from(key) * ln_gamma).exp()
}

/// Checks one sign's buckets and returns their total.
fn check_sign(sign: &str, keys: &[i32], counts: &[u64]) -> Result<u64, SketchError> {
    if keys.len() != counts.len() {
        return Err(SketchError::Invalid(format!(
            "{sign}_keys has {} entries but {sign}_counts has {}",
            keys.len(),
            counts.len()
        )));
    }
    if keys.len() > MAX_BUCKETS {
        return Err(SketchError::Invalid(format!(
            "{sign}_keys has {} buckets; at most {MAX_BUCKETS} are allowed",
            keys.len()
        )));
    }
    if let Some(w) = keys.windows(2).find(|w| w[0] >= w[1]) {
        return Err(SketchError::Invalid(format!(
            "{sign}_keys not strictly ascending ({} then {})",
            w[0], w[1]
        )));
    }
    counts
        .iter()
        .try_fold(0u64, |t, &c| t.checked_add(c))
        .ok_or_else(|| SketchError::Invalid(format!("{sign}_counts overflow u64")))
}

/// Cuts a malformed sign down to its matched pairs so later indexing stays in bounds.
fn trim(keys: &mut Vec<i32>, counts: &mut Vec<u64>) {
    let n = keys.len().min(counts.len());
    keys.truncate(n);
    counts.truncate(n);
}

/// Counts one value in bucket `key`, keeping the keys ascending.
fn insert(keys: &mut Vec<i32>, counts: &mut Vec<u64>, key: i32) {
    trim(keys, counts);
    match keys.binary_search(&key) {
        Ok(i) => counts[i] = counts[i].saturating_add(1),
        Err(i) => {
            keys.insert(i, key);
            counts.insert(i, 1);
        }
    }
}

/// Sorts `keys` and turns it into distinct keys with their multiplicities in `counts`.
fn run_length(keys: &mut Vec<i32>, counts: &mut Vec<u64>) {
    keys.sort_unstable();
    let distinct = keys.windows(2).filter(|w| w[0] != w[1]).count() + usize::from(!keys.is_empty());
    counts.clear();
    counts.reserve_exact(distinct);
    let mut w = 0;
    for r in 0..keys.len() {
        if w > 0 && keys[w - 1] == keys[r] {
            counts[w - 1] += 1;
        } else {
            keys[w] = keys[r];
            counts.push(1);
            w += 1;
        }
    }
    keys.truncate(w);
    // A big batch would otherwise pin its whole key buffer for the sketch's lifetime.
    if keys.capacity() - keys.len() > 1024 {
        keys.shrink_to_fit();
    }
}

/// Adds buckets `(ok, oc)` into `(keys, counts)`; both lists ascending.
///
/// A linear merge done in place from the back: the first pass counts the keys `self` lacks, the
/// second grows the vectors by that much and fills them from the end, so a merge that brings no
/// new keys allocates nothing. Both passes take the same walk, so even unsorted input keeps the
/// write index at or above the read index and every index in bounds.
fn merge_sign(keys: &mut Vec<i32>, counts: &mut Vec<u64>, ok: &[i32], oc: &[u64]) {
    trim(keys, counts);
    let m = ok.len().min(oc.len());
    let (ok, oc) = (&ok[..m], &oc[..m]);
    let n = keys.len();

    let mut new = 0;
    let (mut i, mut j) = (n, m);
    while j > 0 {
        if i > 0 && keys[i - 1] > ok[j - 1] {
            i -= 1;
        } else if i > 0 && keys[i - 1] == ok[j - 1] {
            i -= 1;
            j -= 1;
        } else {
            new += 1;
            j -= 1;
        }
    }

    keys.resize(n + new, 0);
    counts.resize(n + new, 0);
    // Invariant: w == i + (new keys still to write), so w >= i and keys[..i] are unread.
    let (mut i, mut j, mut w) = (n, m, n + new);
    while j > 0 {
        w -= 1;
        if i > 0 && keys[i - 1] > ok[j - 1] {
            i -= 1;
            keys[w] = keys[i];
            counts[w] = counts[i];
        } else if i > 0 && keys[i - 1] == ok[j - 1] {
            i -= 1;
            j -= 1;
            keys[w] = keys[i];
            counts[w] = counts[i].saturating_add(oc[j]);
        } else {
            j -= 1;
            keys[w] = ok[j];
            counts[w] = oc[j];
        }
    }
}

/// Folds the lowest buckets into one so at most `max` (at least 1) remain.
fn collapse_sign(keys: &mut Vec<i32>, counts: &mut Vec<u64>, max: usize) {
    let max = max.max(1);
    if keys.len() <= max && counts.len() <= max {
        return;
    }
    trim(keys, counts);
    let n = keys.len();
    if n <= max {
        return;
    }
    let cut = n - max;
    counts[cut] = counts[..=cut]
        .iter()
        .fold(0u64, |t, &c| t.saturating_add(c));
    keys.drain(..cut);
    counts.drain(..cut);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The exact value at the sketch's rank, with sub-MIN_VALUE magnitudes as 0.
    fn exact(values: &[f64], q: f64) -> Option<f64> {
        let mut v: Vec<f64> = values
            .iter()
            .filter(|v| v.is_finite())
            .map(|&v| if v.abs() < MIN_VALUE { 0.0 } else { v })
            .collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let rank = (q * (v.len() - 1) as f64).floor() as usize;
        Some(v[rank])
    }

    fn close(est: f64, exact: f64, alpha: f64) -> bool {
        (est - exact).abs() <= alpha * exact.abs() * (1.0 + 1e-9) + 1e-12
    }

    const QS: [f64; 7] = [0.0, 0.25, 0.5, 0.95, 0.99, 0.999, 1.0];

    fn value() -> impl Strategy<Value = f64> {
        prop_oneof![
            6 => (-3.0f64..9.0, any::<bool>())
                .prop_map(|(e, neg)| if neg { -(10f64.powf(e)) } else { 10f64.powf(e) }),
            1 => Just(0.0),
            1 => -2e-9f64..2e-9,
            1 => Just(f64::NAN),
            1 => Just(f64::INFINITY),
        ]
    }

    fn alpha() -> impl Strategy<Value = f64> {
        prop_oneof![Just(DEFAULT_ALPHA), Just(0.05), 1e-4f64..0.5]
    }

    fn sketch(keys: &[(i32, u64)]) -> Sketch {
        let mut s = Sketch::new();
        for &(k, c) in keys {
            s.pos_keys.push(k);
            s.pos_counts.push(c);
            s.count = s.count.saturating_add(c);
        }
        s.min = 1.0;
        s.max = 2.0;
        s
    }

    #[test]
    fn default_ln_gamma_is_the_formula() {
        let computed = ((1.0 + DEFAULT_ALPHA) / (1.0 - DEFAULT_ALPHA)).ln();
        assert!((DEFAULT_LN_GAMMA - computed).abs() <= f64::EPSILON * computed);
    }

    #[test]
    fn quantiles_of_small_sets() {
        fn check(values: &[f64], q: f64, expected: Option<f64>) {
            let got = Sketch::from_values(DEFAULT_ALPHA, values).quantile(q);
            match (got, expected) {
                (Some(g), Some(e)) => {
                    assert!(close(g, e, DEFAULT_ALPHA), "{values:?} q={q}: {g} vs {e}")
                }
                _ => assert_eq!(got, expected, "{values:?} q={q}"),
            }
        }
        check(&[], 0.5, None);
        check(&[f64::NAN, f64::INFINITY], 0.5, None);
        check(&[1.0], 0.5, Some(1.0));
        check(&[3.0, 1.0, 2.0], 0.0, Some(1.0));
        check(&[3.0, 1.0, 2.0], 0.5, Some(2.0));
        check(&[3.0, 1.0, 2.0], 1.0, Some(3.0));
        check(&[3.0, 1.0, 2.0], 7.0, Some(3.0));
        check(&[3.0, 1.0, 2.0], -1.0, Some(1.0));
        check(&[3.0, 1.0, 2.0], f64::NAN, None);
        check(&[-5.0, -1.0, 0.0, 1e-12, 7.0], 0.25, Some(-1.0));
        check(&[-5.0, -1.0, 0.0, 1e-12, 7.0], 0.5, Some(0.0));
        check(&[-5.0, -1.0, 0.0, 1e-12, 7.0], 0.75, Some(0.0));
        check(&[1e-12, -1e-12], 1.0, Some(0.0));
        // "Lower" nearest rank: floor(0.5 * 3) = 1.
        check(&[10.0, 20.0, 30.0, 40.0], 0.5, Some(20.0));
        check(&[f64::MAX, f64::MIN_POSITIVE, 1.0], 0.5, Some(1.0));
    }

    #[test]
    fn extreme_magnitudes_and_alphas_do_not_break() {
        for alpha in [1e-12, 1e-6, DEFAULT_ALPHA, 0.5, 0.999_999] {
            let values = [f64::MAX, -f64::MAX, 1e-9, -1e-9, 1.0, 1e300, 1e-300];
            let s = Sketch::from_values(alpha, &values);
            s.validate().unwrap();
            for q in QS {
                let e = exact(&values, q).unwrap();
                let g = s.quantile(q).unwrap();
                assert!(g.is_finite(), "alpha {alpha} q {q}: {g}");
                // Keys saturate at i32 for tiny α, so only the finite-ness is promised there.
                if alpha >= 1e-6 {
                    assert!(close(g, e, alpha), "alpha {alpha} q {q}: {g} vs {e}");
                }
            }
        }
    }

    #[test]
    fn alpha_is_checked() {
        for bad in [0.0, 1.0, -0.1, 1.5, f64::NAN, f64::INFINITY] {
            assert!(
                matches!(Sketch::with_alpha(bad), Err(SketchError::BadAlpha(_))),
                "{bad}"
            );
            assert_eq!(Sketch::from_values(bad, &[1.0]).alpha, DEFAULT_ALPHA);
        }
        assert_eq!(Sketch::with_alpha(0.02).unwrap().alpha, 0.02);
    }

    #[test]
    fn alpha_mismatch_is_an_error_and_leaves_self_alone() {
        let mut a = Sketch::from_values(0.01, &[1.0, 2.0]);
        let b = Sketch::from_values(0.02, &[3.0]);
        let before = a.clone();
        assert_eq!(
            a.merge(&b),
            Err(SketchError::AlphaMismatch {
                ours: 0.01,
                theirs: 0.02
            })
        );
        assert_eq!(a, before);
    }

    #[test]
    fn validate_rejects_malformed() {
        fn check(s: Sketch, expected: Result<(), &str>) {
            match (s.validate(), expected) {
                (Ok(()), Ok(())) => {}
                (Err(e), Err(want)) => assert!(e.to_string().contains(want), "{e} lacks {want:?}"),
                (got, want) => panic!("{s:?}: got {got:?}, want {want:?}"),
            }
        }
        check(sketch(&[(1, 2), (5, 1)]), Ok(()));
        check(Sketch::new(), Ok(()));
        check(sketch(&[(5, 1), (1, 2)]), Err("not strictly ascending"));
        check(sketch(&[(1, 1), (1, 1)]), Err("not strictly ascending"));
        check(
            Sketch {
                neg_keys: vec![1, 2],
                neg_counts: vec![1],
                count: 1,
                ..Sketch::new()
            },
            Err("neg_keys has 2 entries but neg_counts has 1"),
        );
        check(
            Sketch {
                count: 4,
                ..sketch(&[(1, 2)])
            },
            Err("count is 4"),
        );
        check(
            Sketch {
                zeros: 1,
                ..sketch(&[(1, 2)])
            },
            Err("count is 2"),
        );
        check(sketch(&[(1, u64::MAX), (2, 1)]), Err("overflow"));
        check(
            Sketch {
                alpha: 1.0,
                ..Sketch::new()
            },
            Err("outside (0, 1)"),
        );
        check(
            Sketch {
                alpha: f64::NAN,
                ..Sketch::new()
            },
            Err("outside (0, 1)"),
        );
        check(
            Sketch {
                min: 3.0,
                ..sketch(&[(1, 1)])
            },
            Err("min <= max"),
        );
        check(
            Sketch {
                max: f64::INFINITY,
                ..sketch(&[(1, 1)])
            },
            Err("finite"),
        );
        let many: Vec<(i32, u64)> = (0..=MAX_BUCKETS as i32).map(|k| (k, 1)).collect();
        check(sketch(&many), Err("at most 2048"));
    }

    #[test]
    fn merge_rejects_an_invalid_sketch_and_leaves_self_alone() {
        let mut a = Sketch::from_values(DEFAULT_ALPHA, &[1.0, 2.0]);
        let before = a.clone();
        let bad = sketch(&[(5, 1), (1, 2)]);
        assert!(matches!(a.merge(&bad), Err(SketchError::Invalid(_))));
        assert_eq!(a, before);
    }

    #[test]
    fn msgpack_round_trip_uses_field_names() {
        let s = Sketch::from_values(DEFAULT_ALPHA, &[-3.0, 0.0, 1.5, 1.5, 1e6]);
        let bytes = rmp_serde::to_vec_named(&s).unwrap();
        for name in [
            "alpha",
            "count",
            "zeros",
            "pos_keys",
            "pos_counts",
            "neg_keys",
            "neg_counts",
            "min",
            "max",
        ] {
            assert!(
                bytes.windows(name.len()).any(|w| w == name.as_bytes()),
                "{name} missing"
            );
        }
        let back: Sketch = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(back, s);
        back.validate().unwrap();
    }

    #[test]
    fn decode_fills_missing_fields_and_ignores_unknown_ones() {
        #[derive(Serialize)]
        struct Partial {
            count: u64,
            zeros: u64,
            extra: &'static str,
        }
        let bytes = rmp_serde::to_vec_named(&Partial {
            count: 2,
            zeros: 2,
            extra: "x",
        })
        .unwrap();
        let s: Sketch = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(s.alpha, DEFAULT_ALPHA);
        s.validate().unwrap();
        assert_eq!(s.quantile(0.5), Some(0.0));
    }

    #[test]
    fn collapse_folds_the_buckets_nearest_zero() {
        fn check(buckets: &[(i32, u64)], max: usize, expected: &[(i32, u64)]) {
            let mut s = sketch(buckets);
            s.neg_keys = s.pos_keys.clone();
            s.neg_counts = s.pos_counts.clone();
            s.collapse_to(max);
            let want: (Vec<i32>, Vec<u64>) = expected.iter().copied().unzip();
            assert_eq!(
                (s.pos_keys, s.pos_counts),
                want.clone(),
                "pos {buckets:?} max {max}"
            );
            assert_eq!(
                (s.neg_keys, s.neg_counts),
                want,
                "neg {buckets:?} max {max}"
            );
        }
        check(&[], 2, &[]);
        check(&[(1, 1), (2, 2)], 2, &[(1, 1), (2, 2)]);
        check(&[(1, 1), (2, 2), (3, 3)], 2, &[(2, 3), (3, 3)]);
        check(&[(-9, 1), (2, 2), (3, 3), (7, 4)], 2, &[(3, 6), (7, 4)]);
        check(&[(1, 1), (2, 2), (3, 3)], 1, &[(3, 6)]);
        check(&[(1, 1), (2, 2), (3, 3)], 0, &[(3, 6)]);
        check(&[(1, u64::MAX), (2, 2), (3, 3)], 1, &[(3, u64::MAX)]);
    }

    #[test]
    fn public_paths_cap_buckets_and_keep_the_top_accurate() {
        // 10 000 values log-spaced over 1e-8..1e300 need far more than MAX_BUCKETS keys.
        let values: Vec<f64> = (0..10_000)
            .map(|i| 10f64.powf(-8.0 + 308.0 * f64::from(i) / 10_000.0))
            .collect();
        let whole = Sketch::from_values(DEFAULT_ALPHA, &values);
        assert_eq!(whole.pos_keys.len(), MAX_BUCKETS);
        whole.validate().unwrap();
        assert_eq!(whole.count, 10_000);
        for q in [0.9, 0.99, 1.0] {
            let (g, e) = (whole.quantile(q).unwrap(), exact(&values, q).unwrap());
            assert!(close(g, e, DEFAULT_ALPHA), "q {q}: {g} vs {e}");
        }
        let mut added = Sketch::new();
        let mut merged = Sketch::new();
        for chunk in values.chunks(777) {
            for &v in chunk {
                added.add(v);
            }
            merged
                .merge(&Sketch::from_values(DEFAULT_ALPHA, chunk))
                .unwrap();
        }
        assert_eq!(added, whole);
        assert_eq!(merged, whole);
    }

    fn bucket_list() -> impl Strategy<Value = Vec<(i32, u64)>> {
        proptest::collection::btree_map(-40i32..40, 1u64..5, 0..20)
            .prop_map(|m| m.into_iter().collect())
    }

    proptest! {
        #[test]
        fn quantiles_are_within_alpha(
            alpha in alpha(),
            values in proptest::collection::vec(value(), 1..300),
            extra_q in 0.0f64..=1.0,
        ) {
            let s = Sketch::from_values(alpha, &values);
            for q in QS.into_iter().chain([extra_q]) {
                match exact(&values, q) {
                    None => prop_assert_eq!(s.quantile(q), None),
                    Some(e) => {
                        let g = s.quantile(q).unwrap();
                        prop_assert!(close(g, e, alpha), "q {} est {} exact {}", q, g, e);
                    }
                }
            }
        }

        #[test]
        fn merge_equals_building_from_the_concatenation(
            alpha in alpha(),
            values in proptest::collection::vec(value(), 0..300),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..4),
        ) {
            let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(values.len() + 1)).collect();
            cuts.push(0);
            cuts.push(values.len());
            cuts.sort_unstable();
            let whole = Sketch::from_values(alpha, &values);
            let mut merged = Sketch::with_alpha(alpha).unwrap();
            let mut reversed = Sketch::with_alpha(alpha).unwrap();
            let parts: Vec<Sketch> = cuts.windows(2).map(|w| Sketch::from_values(alpha, &values[w[0]..w[1]])).collect();
            for p in &parts {
                merged.merge(p).unwrap();
            }
            for p in parts.iter().rev() {
                reversed.merge(p).unwrap();
            }
            prop_assert_eq!(&merged, &whole);
            prop_assert_eq!(&reversed, &whole);
            merged.validate().unwrap();
        }

        #[test]
        fn merge_is_commutative(
            alpha in alpha(),
            a in proptest::collection::vec(value(), 0..200),
            b in proptest::collection::vec(value(), 0..200),
        ) {
            let (a, b) = (Sketch::from_values(alpha, &a), Sketch::from_values(alpha, &b));
            let mut ab = a.clone();
            ab.merge(&b).unwrap();
            let mut ba = b.clone();
            ba.merge(&a).unwrap();
            prop_assert_eq!(ab, ba);
        }

        #[test]
        fn from_values_equals_repeated_add(
            alpha in alpha(),
            values in proptest::collection::vec(value(), 0..300),
        ) {
            let mut s = Sketch::with_alpha(alpha).unwrap();
            for &v in &values {
                prop_assert_eq!(s.add(v), v.is_finite());
            }
            prop_assert_eq!(s, Sketch::from_values(alpha, &values));
        }

        /// Folded sketches merge to the fold of the merge, so the cap never depends on how a
        /// rollup was split.
        #[test]
        fn collapse_commutes_with_merge(
            a in bucket_list(),
            b in bucket_list(),
            max in 1usize..8,
        ) {
            let (mut sa, mut sb) = (sketch(&a), sketch(&b));
            let mut whole = sa.clone();
            whole.merge_unchecked(&sb, usize::MAX);
            whole.collapse_to(max);
            sa.collapse_to(max);
            sb.collapse_to(max);
            sa.merge_unchecked(&sb, max);
            prop_assert_eq!(sa, whole);
        }

        /// Valid but extreme sketches: saturating counts, keys at the i32 ends.
        #[test]
        fn valid_extremes_never_panic(
            keys in proptest::collection::btree_set(prop_oneof![any::<i32>(), Just(i32::MIN), Just(i32::MAX)], 0..10),
            counts in proptest::collection::vec(prop_oneof![any::<u64>(), Just(u64::MAX), 1u64..3], 10),
            zeros in prop_oneof![any::<u64>(), 0u64..3],
        ) {
            let mut s = Sketch { zeros, count: zeros, ..Sketch::new() };
            for (&k, &c) in keys.iter().zip(&counts) {
                s.pos_keys.push(k);
                s.pos_counts.push(c);
                s.neg_keys.push(k);
                s.neg_counts.push(c);
                s.count = s.count.saturating_add(c).saturating_add(c);
            }
            s.min = -1.0;
            s.max = 1.0;
            let _ = s.validate();
            let mut m = s.clone();
            m.merge_unchecked(&s, MAX_BUCKETS);
            let _ = m.merge(&s);
            for q in QS {
                let _ = s.quantile(q);
                let _ = m.quantile(q);
            }
        }

        /// Anything a decoder could produce: no method panics on it.
        #[test]
        fn arbitrary_sketches_never_panic(
            a in arbitrary_sketch(),
            b in arbitrary_sketch(),
            v in any::<f64>(),
            max in 0usize..4,
        ) {
            let valid = b.validate().is_ok();
            for q in QS.into_iter().chain([f64::NAN, -1.0, 2.0]) {
                let _ = a.quantile(q);
            }
            let mut m = a.clone();
            let before = m.clone();
            let r = m.merge(&b);
            if r.is_err() {
                // Debug, not PartialEq: NaN fields never compare equal.
                prop_assert_eq!(format!("{m:?}"), format!("{before:?}"));
            }
            if !valid {
                prop_assert!(r.is_err());
            }
            let mut m = a.clone();
            m.merge_unchecked(&b, MAX_BUCKETS);
            for q in QS {
                let _ = m.quantile(q);
            }
            let mut m = a.clone();
            m.add(v);
            m.add(1.0);
            m.add(-1.0);
            m.collapse_to(max);
            let _ = m.quantile(0.5);
            let bytes = rmp_serde::to_vec_named(&a).unwrap();
            let back: Result<Sketch, _> = rmp_serde::from_slice(&bytes);
            if let Ok(back) = back {
                let _ = back.validate();
            }
        }

        #[test]
        fn arbitrary_bytes_decode_or_fail_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            if let Ok(s) = rmp_serde::from_slice::<Sketch>(&bytes) {
                let _ = s.validate();
                let _ = s.quantile(0.5);
                let mut m = Sketch::new();
                let _ = m.merge(&s);
            }
        }
    }

    fn arbitrary_sketch() -> impl Strategy<Value = Sketch> {
        let key = || prop_oneof![-3i32..3, any::<i32>()];
        let count = || prop_oneof![0u64..4, any::<u64>()];
        let keys = move || proptest::collection::vec(key(), 0..8);
        let counts = move || proptest::collection::vec(count(), 0..8);
        (
            prop_oneof![Just(DEFAULT_ALPHA), any::<f64>(), 0.0f64..1.0],
            count(),
            count(),
            keys(),
            counts(),
            keys(),
            counts(),
            any::<f64>(),
            any::<f64>(),
        )
            .prop_map(
                |(alpha, count, zeros, pos_keys, pos_counts, neg_keys, neg_counts, min, max)| {
                    Sketch {
                        alpha,
                        count,
                        zeros,
                        pos_keys,
                        pos_counts,
                        neg_keys,
                        neg_counts,
                        min,
                        max,
                    }
                },
            )
    }
}
