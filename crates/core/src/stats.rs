//! Mergeable statistics: fixed-bucket histograms, numeric moments and
//! quantile sketches. Merging any of them is associative and commutative
//! (exactly for counts, up to floating-point rounding for sums and moments).

use serde::{Deserialize, Serialize};
use sketches_ddsketch::{Config, DDSketch};

/// The seed's latency buckets (`ml_prediction_latency_seconds`), upper bounds.
pub const LATENCY_BUCKETS: [f64; 8] = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];
/// The seed's confidence buckets (`ml_prediction_confidence`), upper bounds.
pub const CONFIDENCE_BUCKETS: [f64; 7] = [0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99];
/// Finer latency buckets (`+ ml_slo_latency_seconds`), upper bounds. A latency
/// SLO's threshold must be one of them, so that its SLI (the share of requests
/// at or under the threshold) is an exact count, natively and in PromQL.
pub const SLO_LATENCY_BUCKETS: [f64; 25] = [
    0.001, 0.002, 0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4,
    0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0,
];

/// Counts of observations per bucket, Prometheus-style: bucket `i` holds
/// values `<= bounds[i]` and `> bounds[i-1]`; the last slot holds values above
/// every bound (`+Inf`). Counts are per bucket, not cumulative.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct BucketCounts {
    pub counts: Vec<u64>,
    pub sum: f64,
}

impl BucketCounts {
    pub fn observe(&mut self, bounds: &[f64], value: f64) {
        if self.counts.is_empty() {
            self.counts = vec![0; bounds.len() + 1];
        }
        debug_assert_eq!(self.counts.len(), bounds.len() + 1);
        // `partition_point` finds the first bound >= value: `le` semantics.
        let index = bounds.partition_point(|bound| *bound < value);
        self.counts[index] += 1;
        self.sum += value;
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    pub fn merge(&mut self, other: &BucketCounts) {
        if other.counts.is_empty() {
            return;
        }
        if self.counts.is_empty() {
            self.counts = vec![0; other.counts.len()];
        }
        debug_assert_eq!(self.counts.len(), other.counts.len());
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.sum += other.sum;
    }

    /// Cumulative counts paired with their upper bound, ending with `+Inf`.
    pub fn cumulative<'a>(&'a self, bounds: &'a [f64]) -> impl Iterator<Item = (f64, u64)> + 'a {
        let mut running = 0;
        bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .enumerate()
            .map(move |(index, bound)| {
                running += self.counts.get(index).copied().unwrap_or(0);
                (bound, running)
            })
    }

    /// Share of observations `<= bound`, where `bound` must be one of `bounds`.
    pub fn share_at_most(&self, bounds: &[f64], bound: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let (_, at_most) = self.cumulative(bounds).find(|(upper, _)| *upper >= bound)?;
        Some(at_most as f64 / total as f64)
    }
}

/// Count, mean, variance, min and max of a stream of numbers, mergeable with
/// Chan et al.'s parallel update so that shards and buckets combine exactly
/// as one pass would (up to rounding).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Moments {
    pub count: u64,
    pub mean: f64,
    /// Sum of squared deviations from the mean.
    pub m2: f64,
    pub min: f64,
    pub max: f64,
}

impl Default for Moments {
    fn default() -> Self {
        Self {
            count: 0,
            mean: 0.0,
            m2: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }
}

impl Moments {
    /// The moments of `values` at once: the mean from their sum, then the
    /// squared deviations from it (two passes, each with independent
    /// accumulators). It is what observing them one by one gives, to
    /// rounding (the two-pass sum is the more accurate), without the
    /// division per value that chains each step on the last.
    pub fn of(values: &[f64]) -> Moments {
        if values.is_empty() {
            return Moments::default();
        }
        const LANES: usize = 4;
        let lanes = values.chunks_exact(LANES);
        let rest = lanes.remainder();
        let mut sums = [0.0f64; LANES];
        let mut minima = [f64::INFINITY; LANES];
        let mut maxima = [f64::NEG_INFINITY; LANES];
        for chunk in lanes.clone() {
            for lane in 0..LANES {
                sums[lane] += chunk[lane];
                minima[lane] = minima[lane].min(chunk[lane]);
                maxima[lane] = maxima[lane].max(chunk[lane]);
            }
        }
        let mut sum = sums.iter().sum::<f64>();
        let mut min = minima.iter().copied().fold(f64::INFINITY, f64::min);
        let mut max = maxima.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        for value in rest {
            sum += value;
            min = min.min(*value);
            max = max.max(*value);
        }
        let mean = sum / values.len() as f64;
        let mut squares = [0.0f64; LANES];
        for chunk in lanes {
            for lane in 0..LANES {
                let deviation = chunk[lane] - mean;
                squares[lane] += deviation * deviation;
            }
        }
        let m2 = squares.iter().sum::<f64>()
            + rest
                .iter()
                .map(|value| (value - mean) * (value - mean))
                .sum::<f64>();
        Moments {
            count: values.len() as u64,
            mean,
            m2,
            min,
            max,
        }
    }

    pub fn observe(&mut self, value: f64) {
        self.count += 1;
        let delta = value - self.mean;
        self.mean += delta / self.count as f64;
        self.m2 += delta * (value - self.mean);
        self.min = self.min.min(value);
        self.max = self.max.max(value);
    }

    pub fn merge(&mut self, other: &Moments) {
        if other.count == 0 {
            return;
        }
        if self.count == 0 {
            *self = other.clone();
            return;
        }
        let count = self.count + other.count;
        let delta = other.mean - self.mean;
        let other_weight = other.count as f64 / count as f64;
        self.mean += delta * other_weight;
        self.m2 += other.m2 + delta * delta * self.count as f64 * other_weight;
        self.count = count;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    /// Population standard deviation (numpy's default, `ddof=0`).
    pub fn std(&self) -> Option<f64> {
        (self.count > 0).then(|| (self.m2 / self.count as f64).max(0.0).sqrt())
    }

    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then_some(self.mean)
    }

    pub fn min(&self) -> Option<f64> {
        (self.count > 0).then_some(self.min)
    }

    pub fn max(&self) -> Option<f64> {
        (self.count > 0).then_some(self.max)
    }
}

/// Relative accuracy of every quantile sketch: a reported quantile lies within
/// 1% of a value of the true rank.
pub const SKETCH_RELATIVE_ACCURACY: f64 = 0.01;

/// A mergeable quantile sketch (DDSketch) with modelwatch's fixed parameters,
/// so that any two sketches can merge.
#[derive(Clone, Serialize, Deserialize)]
pub struct QuantileSketch(DDSketch);

impl std::fmt::Debug for QuantileSketch {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("QuantileSketch")
            .field("count", &self.0.count())
            .finish()
    }
}

impl Default for QuantileSketch {
    fn default() -> Self {
        // 1% relative error; 2048 bins cover 1e-9..1e9 without collapsing.
        Self(DDSketch::new(Config::new(SKETCH_RELATIVE_ACCURACY, 2048, 1e-9)))
    }
}

impl QuantileSketch {
    pub fn observe(&mut self, value: f64) {
        self.0.add(value);
    }

    pub fn merge(&mut self, other: &QuantileSketch) {
        if other.0.count() == 0 {
            return;
        }
        // Every sketch is built with the same config, so merging cannot fail.
        self.0
            .merge(&other.0)
            .expect("quantile sketches share one configuration");
    }

    pub fn count(&self) -> u64 {
        self.0.count() as u64
    }

    /// The `q`-quantile, `q` in [0, 1]; `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        self.0.quantile(q.clamp(0.0, 1.0)).ok().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moments_of_values_at_once_are_the_moments_of_observing_them() {
        let values: Vec<f64> = (0..1003)
            .map(|index| ((index * 7919) % 1009) as f64 * 0.37 - 120.0 + (index as f64).sin())
            .collect();
        for length in [0, 1, 2, 3, 4, 5, 7, 64, 1003] {
            let values = &values[..length];
            let mut observed = Moments::default();
            values.iter().for_each(|value| observed.observe(*value));
            let at_once = Moments::of(values);
            assert_eq!(at_once.count, observed.count);
            assert_eq!(at_once.min, observed.min);
            assert_eq!(at_once.max, observed.max);
            let close = |a: f64, b: f64| (a - b).abs() <= 1e-12 * a.abs().max(b.abs()).max(1.0);
            assert!(
                close(at_once.mean, observed.mean),
                "{length}: {at_once:?} {observed:?}"
            );
            assert!(
                close(at_once.m2, observed.m2),
                "{length}: {at_once:?} {observed:?}"
            );
        }
    }

    #[test]
    fn buckets_use_le_semantics() {
        let mut histogram = BucketCounts::default();
        for value in [0.01, 0.010_000_1, 2.5, 3.0, 0.0] {
            histogram.observe(&LATENCY_BUCKETS, value);
        }
        let cumulative: Vec<_> = histogram.cumulative(&LATENCY_BUCKETS).collect();
        assert_eq!(cumulative[0], (0.01, 2));
        assert_eq!(cumulative[1], (0.025, 3));
        assert_eq!(cumulative[7], (2.5, 4));
        assert_eq!(cumulative[8], (f64::INFINITY, 5));
    }

    #[test]
    fn moments_match_two_pass_statistics() {
        let values = [3.0, 7.0, 7.0, 19.0, -2.5];
        let mut moments = Moments::default();
        values.iter().for_each(|value| moments.observe(*value));
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        let variance = values.iter().map(|value| (value - mean).powi(2)).sum::<f64>() / values.len() as f64;
        assert!((moments.mean().unwrap() - mean).abs() < 1e-12);
        assert!((moments.std().unwrap() - variance.sqrt()).abs() < 1e-12);
        assert_eq!(moments.min(), Some(-2.5));
        assert_eq!(moments.max(), Some(19.0));
    }

    #[test]
    fn sketch_quantiles_are_within_relative_accuracy() {
        let mut sketch = QuantileSketch::default();
        (1..=10_000).for_each(|i| sketch.observe(i as f64 / 1000.0));
        let p99 = sketch.quantile(0.99).unwrap();
        assert!((p99 - 9.9).abs() / 9.9 <= 0.011, "{p99}");
    }
}
