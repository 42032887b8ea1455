//! Drift: mergeable summaries of the distributions of features and
//! predictions, and the statistics that compare a window against a baseline.
//!
//! A numeric distribution is kept as a [`LogHistogram`]: counts in bins whose
//! edges are powers of [`BIN_GROWTH`] (each bin spans 0.2% of its values'
//! magnitude), mirrored for negative values, with one bin for zero. Any two
//! histograms merge exactly, whichever shard or hour built them, and a bin
//! count is bounded by the range of magnitudes, not by the number of events.
//! Categorical distributions (features, predicted classes) are exact counts.
//!
//! The statistics are Evidently's (chi-square as it calls scipy's
//! `chisquare`, Jensen–Shannon, PSI with empty shares at 0.0001, Wasserstein
//! normed by the baseline's std, KS), computed from the summaries in O(bins):
//! - chi-square, Jensen–Shannon and PSI on categories are exact;
//! - PSI and Jensen–Shannon on numbers use [decile groups](decile_groups) of
//!   histogram bins, and are exact for that binning. This is not Evidently's
//!   binning (equal-width bins over both samples' range, which summaries
//!   cannot reproduce and outliers distort): on the anchors' 'amount' the two
//!   PSIs are 0.1527 and 0.1573;
//! - KS and normed Wasserstein are computed on the bins, and every score
//!   carries an `error_bound`: the true value over the raw data lies within
//!   it (KS: `[score, score + bound]`; Wasserstein: `score ± bound`), as long
//!   as no histogram folded bins past [`MAX_BINS_PER_SIGN`].
//!
//! The default method is SPEC §4's: with more than [`SMALL_REFERENCE`]
//! baseline values, a number gets Wasserstein even when it takes few values
//! (Evidently would treat it as a category and use Jensen–Shannon).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::stats::Moments;

mod accumulate;
mod hours;

pub use accumulate::DriftAccumulator;
pub use hours::DriftHours;

/// Ratio between consecutive bin edges of a [`LogHistogram`].
pub const BIN_GROWTH: f64 = 1.002;
/// `ln(BIN_GROWTH)`, spelled out so that other implementations (the oracle
/// script) bin with the very same number.
pub const LN_BIN_GROWTH: f64 = 0.001_998_002_662_673_058;
/// Bins per sign at most. Past it the smallest magnitudes share the lowest
/// kept bin (the histogram stays bounded even for values spanning 1e-300 to
/// 1e300). 8192 bins of 0.2% cover 7 decades.
pub const MAX_BINS_PER_SIGN: usize = 8192;
/// A baseline of at most this many values uses the small-sample tests (KS,
/// chi-square), as Evidently does.
pub const SMALL_REFERENCE: u64 = 1000;
/// With a small baseline, numeric features with at most this many distinct
/// values (occupied bins) get chi-square rather than KS.
pub const FEW_VALUES: usize = 5;
/// Number of quantile groups for PSI and Jensen–Shannon on numbers.
pub const PSI_GROUPS: usize = 10;
/// What an empty group's share becomes in PSI, as Evidently does.
pub const PSI_EMPTY_SHARE: f64 = 0.0001;

/// Dense counts of consecutive bin indices of one sign.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Store {
    offset: i32,
    counts: Vec<u64>,
}

impl Store {
    fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    fn highest(&self) -> i32 {
        self.offset + self.counts.len() as i32 - 1
    }

    /// Widens the store to hold `lo..=hi`, folding the lowest bins together
    /// when the span passes the bin limit. Returns the lowest index kept.
    fn extend(&mut self, lo: i32, hi: i32) -> i32 {
        if self.counts.is_empty() {
            let lo = lo.max(hi - MAX_BINS_PER_SIGN as i32 + 1);
            self.offset = lo;
            self.counts = vec![0; (hi - lo + 1) as usize];
            return lo;
        }
        let new_hi = hi.max(self.highest());
        let mut new_lo = lo.min(self.offset);
        new_lo = new_lo.max(new_hi - MAX_BINS_PER_SIGN as i32 + 1);
        if new_lo != self.offset || new_hi != self.highest() {
            let mut counts = vec![0; (new_hi - new_lo + 1) as usize];
            for (position, count) in self.counts.iter().enumerate() {
                let index = (self.offset + position as i32).max(new_lo);
                counts[(index - new_lo) as usize] += count;
            }
            self.offset = new_lo;
            self.counts = counts;
        }
        new_lo
    }

    fn add(&mut self, index: i32, count: u64) {
        let lowest = if self.counts.is_empty() || index < self.offset || index > self.highest() {
            self.extend(index, index)
        } else {
            self.offset
        };
        let index = index.max(lowest);
        self.counts[(index - self.offset) as usize] += count;
    }

    fn merge(&mut self, other: &Store) {
        if other.counts.is_empty() {
            return;
        }
        let lowest = self.extend(other.offset, other.highest());
        for (position, count) in other.counts.iter().enumerate() {
            if *count > 0 {
                let index = (other.offset + position as i32).max(lowest);
                self.counts[(index - self.offset) as usize] += count;
            }
        }
    }

    fn occupied(&self) -> impl DoubleEndedIterator<Item = (i32, u64)> + '_ {
        self.counts
            .iter()
            .enumerate()
            .filter(|(_, count)| **count > 0)
            .map(|(position, count)| (self.offset + position as i32, *count))
    }
}

/// One bin of a [`LogHistogram`], in value order by `key`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bin {
    /// Orders bins by value across signs.
    pub key: i64,
    /// The bin holds values in `(lower, upper]` (positive), `[lower, upper)`
    /// (negative), or exactly 0 (`lower == upper == 0`).
    pub lower: f64,
    pub upper: f64,
    pub count: u64,
}

/// The bin index of a positive magnitude: bin `i` holds `(γ^(i-1), γ^i]`.
pub fn bin_index(magnitude: f64) -> i32 {
    let position = (magnitude.ln() / LN_BIN_GROWTH).clamp(i32::MIN as f64 / 4.0, i32::MAX as f64 / 4.0);
    // `f64::ceil`, without the call to libm it compiles to on x86-64
    // without SSE4.1 (the truncation is exact: |position| < 2^31).
    let truncated = position as i32;
    if f64::from(truncated) < position {
        truncated + 1
    } else {
        truncated
    }
}

/// The value-ordered key of a number's bin (what [`Bin::key`] holds).
pub fn bin_key(value: f64) -> i64 {
    const SIGN_OFFSET: i64 = 1 << 32;
    if value > 0.0 {
        SIGN_OFFSET + i64::from(bin_index(value))
    } else if value < 0.0 {
        -(SIGN_OFFSET + i64::from(bin_index(-value)))
    } else {
        0
    }
}

fn edge(index: i32) -> f64 {
    (f64::from(index) * LN_BIN_GROWTH).exp()
}

/// A mergeable histogram with logarithmic bins (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogHistogram {
    zero: u64,
    positive: Store,
    negative: Store,
}

impl LogHistogram {
    /// Adds a value; NaN and infinities are not numbers a feature can drift
    /// on, and are ignored (the wire boundary refuses them anyway).
    pub fn observe(&mut self, value: f64) {
        if !value.is_finite() {
            return;
        }
        if value > 0.0 {
            self.positive.add(bin_index(value), 1);
        } else if value < 0.0 {
            self.negative.add(bin_index(-value), 1);
        } else {
            self.zero += 1;
        }
    }

    /// The bytes its bins take in memory.
    pub fn approximate_bytes(&self) -> usize {
        (self.positive.counts.len() + self.negative.counts.len()) * std::mem::size_of::<u64>()
    }

    pub fn merge(&mut self, other: &LogHistogram) {
        self.zero += other.zero;
        self.positive.merge(&other.positive);
        self.negative.merge(&other.negative);
    }

    pub fn count(&self) -> u64 {
        self.zero + self.positive.counts.iter().sum::<u64>() + self.negative.counts.iter().sum::<u64>()
    }

    pub fn is_empty(&self) -> bool {
        self.zero == 0 && self.positive.is_empty() && self.negative.is_empty()
    }

    /// The occupied bins, in increasing value order.
    pub fn bins(&self) -> Vec<Bin> {
        const SIGN_OFFSET: i64 = 1 << 32;
        let mut bins = Vec::new();
        for (index, count) in self.negative.occupied().rev() {
            bins.push(Bin {
                key: -(SIGN_OFFSET + i64::from(index)),
                lower: -edge(index),
                upper: -edge(index - 1),
                count,
            });
        }
        if self.zero > 0 {
            bins.push(Bin {
                key: 0,
                lower: 0.0,
                upper: 0.0,
                count: self.zero,
            });
        }
        for (index, count) in self.positive.occupied() {
            bins.push(Bin {
                key: SIGN_OFFSET + i64::from(index),
                lower: edge(index - 1),
                upper: edge(index),
                count,
            });
        }
        bins
    }
}

/// The distribution of one numeric variable: exact moments and a histogram.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NumericSummary {
    pub moments: Moments,
    pub histogram: LogHistogram,
}

impl NumericSummary {
    pub fn observe(&mut self, value: f64) {
        if value.is_finite() {
            self.moments.observe(value);
            self.histogram.observe(value);
        }
    }

    pub fn merge(&mut self, other: &NumericSummary) {
        self.moments.merge(&other.moments);
        self.histogram.merge(&other.histogram);
    }

    pub fn count(&self) -> u64 {
        self.moments.count
    }
}

/// Everything drift needs about a span of predictions of one model version:
/// a mergeable summary of each feature and of the outputs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DriftSummary {
    /// Events summarized.
    pub rows: u64,
    pub numeric: BTreeMap<String, NumericSummary>,
    pub categorical: BTreeMap<String, BTreeMap<String, u64>>,
    /// Predicted classes of successful classifications.
    pub classes: BTreeMap<String, u64>,
    /// Confidence of successful classifications.
    pub confidence: NumericSummary,
    /// Outputs of successful regressions.
    pub regression: NumericSummary,
}

/// One feature value, as drift sees it.
#[derive(Debug, Clone, Copy)]
pub enum DriftValue<'a> {
    Number(f64),
    Category(&'a str),
}

fn increment(counts: &mut BTreeMap<String, u64>, name: &str, by: u64) {
    match counts.get_mut(name) {
        Some(count) => *count += by,
        None => {
            counts.insert(name.to_owned(), by);
        }
    }
}

impl DriftSummary {
    /// Adds one event: its (folded) features, its predicted class or output,
    /// and its confidence.
    pub fn observe<'a>(
        &mut self,
        features: impl IntoIterator<Item = (&'a str, DriftValue<'a>)>,
        class: Option<&str>,
        confidence: Option<f64>,
        regression: Option<f64>,
    ) {
        self.rows += 1;
        for (name, value) in features {
            match value {
                DriftValue::Number(number) => match self.numeric.get_mut(name) {
                    Some(summary) => summary.observe(number),
                    None => self.numeric.entry(name.to_owned()).or_default().observe(number),
                },
                DriftValue::Category(category) => match self.categorical.get_mut(name) {
                    Some(counts) => increment(counts, category, 1),
                    None => increment(self.categorical.entry(name.to_owned()).or_default(), category, 1),
                },
            }
        }
        if let Some(class) = class {
            increment(&mut self.classes, class, 1);
        }
        if let Some(confidence) = confidence {
            self.confidence.observe(confidence);
        }
        if let Some(value) = regression {
            self.regression.observe(value);
        }
    }

    /// The bytes its histograms and counts take in memory, roughly.
    pub fn approximate_bytes(&self) -> usize {
        let counts = |counts: &BTreeMap<String, u64>| counts.keys().map(|name| name.len() + 8).sum::<usize>();
        self.numeric
            .iter()
            .map(|(name, summary)| name.len() + summary.histogram.approximate_bytes())
            .chain(
                self.categorical
                    .iter()
                    .map(|(name, categories)| name.len() + counts(categories)),
            )
            .sum::<usize>()
            + counts(&self.classes)
            + self.confidence.histogram.approximate_bytes()
            + self.regression.histogram.approximate_bytes()
    }

    pub fn merge(&mut self, other: &DriftSummary) {
        self.rows += other.rows;
        for (name, summary) in &other.numeric {
            self.numeric.entry(name.clone()).or_default().merge(summary);
        }
        for (name, counts) in &other.categorical {
            let mine = self.categorical.entry(name.clone()).or_default();
            for (category, count) in counts {
                increment(mine, category, *count);
            }
        }
        for (class, count) in &other.classes {
            increment(&mut self.classes, class, *count);
        }
        self.confidence.merge(&other.confidence);
        self.regression.merge(&other.regression);
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }
}

// ---------------------------------------------------------------------------
// Methods
// ---------------------------------------------------------------------------

/// A drift method (SPEC §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Two-sample Kolmogorov–Smirnov; the score is the p-value.
    Ks,
    /// Pearson's chi-square goodness of fit of the window to the baseline's
    /// shares; the score is the p-value.
    ChiSquare,
    /// Population stability index.
    Psi,
    /// Jensen–Shannon distance (natural log, as scipy's default).
    JensenShannon,
    /// Wasserstein-1 distance divided by the baseline's standard deviation.
    Wasserstein,
}

impl Method {
    pub const ALL: [Method; 5] = [
        Method::Ks,
        Method::ChiSquare,
        Method::Psi,
        Method::JensenShannon,
        Method::Wasserstein,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Method::Ks => "ks",
            Method::ChiSquare => "chi_square",
            Method::Psi => "psi",
            Method::JensenShannon => "jensen_shannon",
            Method::Wasserstein => "wasserstein",
        }
    }

    pub fn parse(text: &str) -> Option<Method> {
        Method::ALL.into_iter().find(|method| method.as_str() == text)
    }

    /// Whether the score is a p-value (drift when below the threshold) rather
    /// than a distance (drift at or above it).
    pub fn is_p_value(self) -> bool {
        matches!(self, Method::Ks | Method::ChiSquare)
    }

    /// Evidently's default threshold.
    pub fn default_threshold(self) -> f64 {
        match self {
            Method::Ks | Method::ChiSquare => 0.05,
            Method::Psi | Method::JensenShannon | Method::Wasserstein => 0.1,
        }
    }

    /// Whether the method compares numbers only (it needs an order).
    pub fn numeric_only(self) -> bool {
        matches!(self, Method::Ks | Method::Wasserstein)
    }
}

/// A variable's distribution in the baseline or in the window.
#[derive(Debug, Clone, Copy)]
pub enum Distribution<'a> {
    Numeric(&'a NumericSummary),
    Categorical(&'a BTreeMap<String, u64>),
}

impl Distribution<'_> {
    pub fn count(&self) -> u64 {
        match self {
            Distribution::Numeric(summary) => summary.count(),
            Distribution::Categorical(counts) => counts.values().sum(),
        }
    }
}

/// Evidently's default method for a variable with a baseline of
/// `reference_count` values (SPEC §4).
pub fn default_method(reference: Distribution<'_>, current: Distribution<'_>) -> Method {
    let small = reference.count() <= SMALL_REFERENCE;
    match (reference, current) {
        (Distribution::Numeric(reference), Distribution::Numeric(current)) => {
            if small {
                let mut keys: Vec<i64> = reference.histogram.bins().iter().map(|bin| bin.key).collect();
                keys.extend(current.histogram.bins().iter().map(|bin| bin.key));
                keys.sort_unstable();
                keys.dedup();
                if keys.len() > FEW_VALUES {
                    Method::Ks
                } else {
                    Method::ChiSquare
                }
            } else {
                Method::Wasserstein
            }
        }
        _ if small => Method::ChiSquare,
        _ => Method::JensenShannon,
    }
}

/// A drift score, with what it means.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Score {
    pub method: Method,
    pub score: f64,
    pub threshold: f64,
    pub drifted: bool,
    /// For KS and chi-square: the test statistic (the score is the p-value).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub statistic: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p_value: Option<f64>,
    /// For scores computed on histogram bins (KS, Wasserstein), how far the
    /// score on the raw values may be (see the module docs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_bound: Option<f64>,
}

/// Why a score cannot be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScoreError {
    #[error("the baseline has no values for it")]
    EmptyReference,
    #[error("the window has no values for it")]
    EmptyCurrent,
    #[error("{0} needs numeric values")]
    NeedsNumbers(&'static str),
}

/// Compares `current` against `reference` with `method` (its default
/// threshold unless `threshold` is given).
pub fn score(
    method: Method,
    threshold: Option<f64>,
    reference: Distribution<'_>,
    current: Distribution<'_>,
) -> Result<Score, ScoreError> {
    if reference.count() == 0 {
        return Err(ScoreError::EmptyReference);
    }
    if current.count() == 0 {
        return Err(ScoreError::EmptyCurrent);
    }
    let threshold = threshold.unwrap_or(method.default_threshold());
    let mut result = Score {
        method,
        score: 0.0,
        threshold,
        drifted: false,
        statistic: None,
        p_value: None,
        error_bound: None,
    };
    match (method, reference, current) {
        (Method::Ks, Distribution::Numeric(reference), Distribution::Numeric(current)) => {
            let ks = ks(&reference.histogram, &current.histogram);
            result.statistic = Some(ks.statistic);
            result.p_value = Some(ks.p_value);
            result.score = ks.p_value;
            result.error_bound = Some(ks.bound);
        }
        (Method::Wasserstein, Distribution::Numeric(reference), Distribution::Numeric(current)) => {
            let norm = reference.moments.std().unwrap_or(0.0).max(0.001);
            let (distance, bound) = wasserstein(&reference.histogram, &current.histogram);
            result.score = distance / norm;
            result.error_bound = Some(bound / norm);
        }
        (Method::Ks | Method::Wasserstein, _, _) => {
            return Err(ScoreError::NeedsNumbers(method.as_str()));
        }
        (method, reference, current) => {
            let (expected, observed) = match (method, reference, current) {
                // Chi-square on numbers compares values (bins), as Evidently
                // compares value counts; PSI and Jensen–Shannon use groups.
                (Method::ChiSquare, Distribution::Numeric(reference), Distribution::Numeric(current)) => {
                    bin_counts(&reference.histogram, &current.histogram)
                }
                _ => paired_counts(reference, current),
            };
            match method {
                Method::ChiSquare => {
                    let (statistic, p_value) = chi_square(&expected, &observed);
                    result.statistic = Some(statistic);
                    result.p_value = Some(p_value);
                    result.score = p_value;
                }
                Method::Psi => result.score = psi(&expected, &observed),
                Method::JensenShannon => result.score = jensen_shannon(&expected, &observed),
                Method::Ks | Method::Wasserstein => unreachable!("handled above"),
            }
        }
    }
    result.drifted = if method.is_p_value() {
        result.score < threshold
    } else {
        result.score >= threshold
    };
    Ok(result)
}

/// The counts of both distributions over the same categories: the union of
/// categories, or for numbers, the decile groups of bins.
fn paired_counts(reference: Distribution<'_>, current: Distribution<'_>) -> (Vec<u64>, Vec<u64>) {
    match (reference, current) {
        (Distribution::Numeric(reference), Distribution::Numeric(current)) => {
            decile_groups(&reference.histogram, &current.histogram)
        }
        (Distribution::Categorical(reference), Distribution::Categorical(current)) => {
            let mut keys: Vec<&String> = reference.keys().chain(current.keys()).collect();
            keys.sort_unstable();
            keys.dedup();
            keys.iter()
                .map(|key| {
                    (
                        reference.get(*key).copied().unwrap_or(0),
                        current.get(*key).copied().unwrap_or(0),
                    )
                })
                .unzip()
        }
        // A variable numeric on one side and categorical on the other:
        // compare what each side has as categories (numbers by bin).
        (reference, current) => {
            let as_categories = |distribution: Distribution<'_>| -> BTreeMap<String, u64> {
                match distribution {
                    Distribution::Categorical(counts) => counts.clone(),
                    Distribution::Numeric(summary) => summary
                        .histogram
                        .bins()
                        .iter()
                        .map(|bin| (format!("bin:{}", bin.key), bin.count))
                        .collect(),
                }
            };
            let (reference, current) = (as_categories(reference), as_categories(current));
            paired_counts(
                Distribution::Categorical(&reference),
                Distribution::Categorical(&current),
            )
        }
    }
}

/// The counts of both histograms per occupied bin (of either).
pub fn bin_counts(reference: &LogHistogram, current: &LogHistogram) -> (Vec<u64>, Vec<u64>) {
    let (mut expected, mut observed) = (Vec::new(), Vec::new());
    walk(reference, current, |_, a, b| {
        expected.push(a);
        observed.push(b);
    });
    (expected, observed)
}

/// Groups the bins of both histograms into at most [`PSI_GROUPS`] ranges of
/// about equal baseline mass, and counts each side per group.
///
/// The binning, exactly (the oracle script does the same): list the
/// baseline's occupied bins in value order with their cumulative counts
/// `c_1 ≤ … ≤ c_m = n`. For `k = 1..PSI_GROUPS-1`, the `k`-th edge is the
/// first bin whose cumulative count reaches `k·n/PSI_GROUPS`; repeated edges
/// count once. A value belongs to the first group whose edge bin is at or
/// above its bin (by [`Bin::key`]), or to the last group.
pub fn decile_groups(reference: &LogHistogram, current: &LogHistogram) -> (Vec<u64>, Vec<u64>) {
    let reference_bins = reference.bins();
    let total = reference_bins.iter().map(|bin| bin.count).sum::<u64>() as f64;
    let mut edges: Vec<i64> = Vec::with_capacity(PSI_GROUPS);
    let mut cumulative = 0u64;
    let mut next = 1;
    for bin in &reference_bins {
        cumulative += bin.count;
        while next < PSI_GROUPS && cumulative as f64 >= next as f64 * total / PSI_GROUPS as f64 {
            if edges.last() != Some(&bin.key) {
                edges.push(bin.key);
            }
            next += 1;
        }
    }
    let group = |key: i64| edges.partition_point(|edge| *edge < key);
    let groups = edges.len() + 1;
    let mut counts_reference = vec![0u64; groups];
    let mut counts_current = vec![0u64; groups];
    for bin in &reference_bins {
        counts_reference[group(bin.key)] += bin.count;
    }
    for bin in current.bins() {
        counts_current[group(bin.key)] += bin.count;
    }
    (counts_reference, counts_current)
}

fn shares(counts: &[u64]) -> Vec<f64> {
    let total = counts.iter().sum::<u64>() as f64;
    counts.iter().map(|count| *count as f64 / total).collect()
}

/// PSI of the shares, empty shares replaced by [`PSI_EMPTY_SHARE`].
pub fn psi(reference: &[u64], current: &[u64]) -> f64 {
    let fill = |share: f64| if share == 0.0 { PSI_EMPTY_SHARE } else { share };
    shares(reference)
        .into_iter()
        .zip(shares(current))
        .map(|(r, c)| {
            let (r, c) = (fill(r), fill(c));
            (r - c) * (r / c).ln()
        })
        .sum()
}

/// Jensen–Shannon distance of the shares (natural logarithm), as
/// `scipy.spatial.distance.jensenshannon`.
pub fn jensen_shannon(reference: &[u64], current: &[u64]) -> f64 {
    let relative_entropy = |p: f64, q: f64| if p > 0.0 { p * (p / q).ln() } else { 0.0 };
    let divergence: f64 = shares(reference)
        .into_iter()
        .zip(shares(current))
        .map(|(p, q)| {
            let m = (p + q) / 2.0;
            relative_entropy(p, m) + relative_entropy(q, m)
        })
        .sum();
    (divergence / 2.0).max(0.0).sqrt()
}

/// Chi-square statistic and p-value of `observed` against the baseline's
/// shares scaled to the window's size, as Evidently calls
/// `scipy.stats.chisquare`. A category absent from the baseline but present
/// in the window makes the statistic infinite (p = 0).
pub fn chi_square(reference: &[u64], observed: &[u64]) -> (f64, f64) {
    let scale = observed.iter().sum::<u64>() as f64 / reference.iter().sum::<u64>() as f64;
    let statistic: f64 = reference
        .iter()
        .zip(observed)
        .map(|(expected, observed)| {
            let expected = *expected as f64 * scale;
            let difference = *observed as f64 - expected;
            if expected == 0.0 {
                if *observed == 0 { 0.0 } else { f64::INFINITY }
            } else {
                difference * difference / expected
            }
        })
        .sum();
    let degrees = reference.len().saturating_sub(1);
    let p_value = if degrees == 0 {
        1.0
    } else if statistic.is_infinite() {
        0.0
    } else {
        use statrs::distribution::{ChiSquared, ContinuousCDF};
        ChiSquared::new(degrees as f64)
            .expect("degrees of freedom are positive")
            .sf(statistic)
    };
    (statistic, p_value)
}

/// Two-sample KS on histograms.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KsResult {
    /// The largest CDF difference at a bin edge.
    pub statistic: f64,
    /// The raw-data statistic lies in `[statistic, statistic + bound]`.
    pub bound: f64,
    pub p_value: f64,
}

/// Walks the bins of both histograms in value order, calling `visit` with
/// each bin's counts on either side.
fn walk(reference: &LogHistogram, current: &LogHistogram, mut visit: impl FnMut(&Bin, u64, u64)) {
    let (a, b) = (reference.bins(), current.bins());
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        let take_a = j >= b.len() || (i < a.len() && a[i].key <= b[j].key);
        let take_b = i >= a.len() || (j < b.len() && b[j].key <= a[i].key);
        let bin = if take_a { a[i] } else { b[j] };
        let ca = if take_a { a[i].count } else { 0 };
        let cb = if take_b { b[j].count } else { 0 };
        visit(&bin, ca, cb);
        i += usize::from(take_a);
        j += usize::from(take_b);
    }
}

pub fn ks(reference: &LogHistogram, current: &LogHistogram) -> KsResult {
    let (na, nb) = (reference.count() as f64, current.count() as f64);
    let (mut ca, mut cb) = (0u64, 0u64);
    let (mut statistic, mut bound) = (0.0f64, 0.0f64);
    walk(reference, current, |_, a, b| {
        // Cumulative counts stay exact; only the shares are rounded.
        ca += a;
        cb += b;
        let (fa, fb) = (ca as f64 / na, cb as f64 / nb);
        let (pa, pb) = (a as f64 / na, b as f64 / nb);
        statistic = statistic.max((fa - fb).abs());
        bound = bound.max(pa.max(pb));
    });
    KsResult {
        statistic,
        bound,
        p_value: kolmogorov_p_value(statistic, na * nb / (na + nb)),
    }
}

/// The asymptotic p-value of a two-sample KS statistic `d` with effective
/// size `en = n·m/(n+m)`: Kolmogorov's distribution at Stephens' corrected
/// `λ = (√en + 0.12 + 0.11/√en)·d`.
pub fn kolmogorov_p_value(d: f64, en: f64) -> f64 {
    let root = en.sqrt();
    let lambda = (root + 0.12 + 0.11 / root) * d;
    if lambda < 0.2 {
        return 1.0;
    }
    let mut sum = 0.0;
    let mut sign = 1.0;
    for k in 1..=100 {
        let k = f64::from(k);
        let term = (-2.0 * k * k * lambda * lambda).exp();
        sum += sign * term;
        sign = -sign;
        if term < 1e-17 {
            break;
        }
    }
    (2.0 * sum).clamp(0.0, 1.0)
}

/// Wasserstein-1 distance between the histograms, each bin's mass spread
/// evenly over the bin, and a bound on the distance between the raw values:
/// within a bin of width `w` the CDF difference can deviate from the even
/// spread by at most the larger of the bin's two shares, so the error is at
/// most `Σ w·max(p_ref, p_cur)`.
pub fn wasserstein(reference: &LogHistogram, current: &LogHistogram) -> (f64, f64) {
    let mut difference = 0.0f64; // F_ref - F_cur at the current position
    let mut position: Option<f64> = None;
    let (mut distance, mut bound) = (0.0f64, 0.0f64);
    let (na, nb) = (reference.count() as f64, current.count() as f64);
    let (mut ca, mut cb) = (0u64, 0u64);
    walk(reference, current, |bin, a, b| {
        if let Some(position) = position {
            // Between bins both CDFs are flat.
            distance += difference.abs() * (bin.lower - position).max(0.0);
        }
        let width = bin.upper - bin.lower;
        let (pa, pb) = (a as f64 / na, b as f64 / nb);
        ca += a;
        cb += b;
        let after = ca as f64 / na - cb as f64 / nb;
        distance += width * linear_abs_integral(difference, after);
        bound += width * pa.max(pb);
        difference = after;
        position = Some(bin.upper);
    });
    (distance, bound)
}

/// `∫₀¹ |a + (b − a)t| dt`.
fn linear_abs_integral(a: f64, b: f64) -> f64 {
    if (a >= 0.0) == (b >= 0.0) {
        (a.abs() + b.abs()) / 2.0
    } else {
        (a * a + b * b) / (2.0 * (a.abs() + b.abs()))
    }
}

// ---------------------------------------------------------------------------
// Comparing two summaries, variable by variable
// ---------------------------------------------------------------------------

/// Evidently's "dataset drift": at least this share of features drifted.
pub const DATASET_DRIFT_SHARE: f64 = 0.5;

/// A drift method chosen for one variable instead of the default selection
/// (the config's `drift.features.NAME` and `drift.predictions.OUTPUT`).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MethodOverride {
    pub method: Method,
    /// The method's default threshold when absent.
    #[serde(default)]
    pub threshold: Option<f64>,
}

/// The drift of one variable.
#[derive(Debug, Clone, Serialize)]
pub struct VariableDrift {
    /// `numeric` or `categorical`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub reference_count: u64,
    pub current_count: u64,
    #[serde(flatten)]
    pub score: Option<Score>,
    /// Why there is no score.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl VariableDrift {
    pub fn drifted(&self) -> bool {
        self.score.as_ref().is_some_and(|score| score.drifted)
    }
}

fn numeric_or_categorical<'a>(
    numeric: Option<&'a NumericSummary>,
    categorical: Option<&'a BTreeMap<String, u64>>,
    prefer_numeric: bool,
) -> Option<Distribution<'a>> {
    let numeric = numeric
        .filter(|summary| summary.count() > 0)
        .map(Distribution::Numeric);
    let categorical = categorical
        .filter(|counts| !counts.is_empty())
        .map(Distribution::Categorical);
    if prefer_numeric {
        numeric.or(categorical)
    } else {
        categorical.or(numeric)
    }
}

static EMPTY_COUNTS: BTreeMap<String, u64> = BTreeMap::new();

fn compare(
    reference: Option<Distribution<'_>>,
    current: Option<Distribution<'_>>,
    choice: Option<&MethodOverride>,
) -> VariableDrift {
    let numeric = matches!(reference.or(current), Some(Distribution::Numeric(_)));
    let empty = Distribution::Categorical(&EMPTY_COUNTS);
    let (reference, current) = (reference.unwrap_or(empty), current.unwrap_or(empty));
    let method = choice.map_or_else(|| default_method(reference, current), |choice| choice.method);
    let outcome = score(
        method,
        choice.and_then(|choice| choice.threshold),
        reference,
        current,
    );
    VariableDrift {
        kind: if numeric { "numeric" } else { "categorical" },
        reference_count: reference.count(),
        current_count: current.count(),
        error: outcome
            .as_ref()
            .err()
            .map(|error| format!("{}: {error}", method.as_str())),
        score: outcome.ok(),
    }
}

/// The drift of every variable of `current` against `reference`: per
/// feature, and per output (`class`, `confidence`, `value`). `features` and
/// `predictions` choose methods by name; the others get [`default_method`].
pub fn compare_summaries(
    features_methods: &BTreeMap<String, MethodOverride>,
    predictions_methods: &BTreeMap<String, MethodOverride>,
    reference: &DriftSummary,
    current: &DriftSummary,
) -> (BTreeMap<String, VariableDrift>, BTreeMap<String, VariableDrift>) {
    let mut names: Vec<&String> = reference
        .numeric
        .keys()
        .chain(reference.categorical.keys())
        .chain(current.numeric.keys())
        .chain(current.categorical.keys())
        .collect();
    names.sort_unstable();
    names.dedup();
    let mut features = BTreeMap::new();
    for name in names {
        // A feature is numeric when the baseline (or, without values there,
        // the window) has numbers for it.
        let prefer_numeric = reference
            .numeric
            .get(name)
            .is_some_and(|summary| summary.count() > 0)
            || (!reference.categorical.contains_key(name) && current.numeric.contains_key(name));
        fn side<'a>(summary: &'a DriftSummary, name: &str, prefer_numeric: bool) -> Option<Distribution<'a>> {
            numeric_or_categorical(
                summary.numeric.get(name),
                summary.categorical.get(name),
                prefer_numeric,
            )
        }
        let drift = compare(
            side(reference, name, prefer_numeric),
            side(current, name, prefer_numeric),
            features_methods.get(name),
        );
        features.insert(name.clone(), drift);
    }
    let mut predictions = BTreeMap::new();
    if !reference.classes.is_empty() || !current.classes.is_empty() {
        predictions.insert(
            "class".to_owned(),
            compare(
                Some(Distribution::Categorical(&reference.classes)),
                Some(Distribution::Categorical(&current.classes)),
                predictions_methods.get("class"),
            ),
        );
    }
    for (output, reference, current) in [
        ("confidence", &reference.confidence, &current.confidence),
        ("value", &reference.regression, &current.regression),
    ] {
        if reference.count() > 0 || current.count() > 0 {
            predictions.insert(
                output.to_owned(),
                compare(
                    Some(Distribution::Numeric(reference)),
                    Some(Distribution::Numeric(current)),
                    predictions_methods.get(output),
                ),
            );
        }
    }
    (features, predictions)
}

/// How many features were compared (both sides have values) and drifted,
/// the share drifted, and Evidently's dataset drift (`share >= 0.5`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct DatasetDrift {
    pub features_compared: usize,
    pub drifted_features: usize,
    pub share_drifted: Option<f64>,
    pub dataset_drift: bool,
}

impl DatasetDrift {
    pub fn of(features: &BTreeMap<String, VariableDrift>) -> Self {
        let compared = features.values().filter(|drift| drift.score.is_some()).count();
        let drifted = features.values().filter(|drift| drift.drifted()).count();
        let share = (compared > 0).then(|| drifted as f64 / compared as f64);
        Self {
            features_compared: compared,
            drifted_features: drifted,
            share_drifted: share,
            dataset_drift: share.is_some_and(|share| share >= DATASET_DRIFT_SHARE),
        }
    }
}

/// Which features drifted: what drift alert rules read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DriftVerdict {
    /// Every feature compared, and whether it drifted.
    pub features: BTreeMap<String, bool>,
}

impl DriftVerdict {
    pub fn drifted(&self) -> usize {
        self.features.values().filter(|drifted| **drifted).count()
    }

    /// The share of compared features that drifted; `None` when none was
    /// compared.
    pub fn share(&self) -> Option<f64> {
        (!self.features.is_empty()).then(|| self.drifted() as f64 / self.features.len() as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_hold_their_values() {
        for value in [1e-9, 0.5, 1.0, 1.0025, 3.7, 1234.5, 9.9e12] {
            let mut histogram = LogHistogram::default();
            histogram.observe(value);
            histogram.observe(-value);
            let bins = histogram.bins();
            assert_eq!(bins.len(), 2);
            assert!(
                bins[1].lower < value && value <= bins[1].upper * (1.0 + 1e-12),
                "{value}: {bins:?}"
            );
            assert!(bins[0].lower <= -value && -value < bins[0].upper);
            assert!(bins[1].upper / bins[1].lower - BIN_GROWTH < 1e-9);
        }
        assert_eq!(BIN_GROWTH.ln(), LN_BIN_GROWTH);
    }

    #[test]
    fn merging_equals_observing_everything() {
        let values: Vec<f64> = (0..2000)
            .map(|i| ((i * 7919) % 1000) as f64 / 10.0 - 30.0)
            .collect();
        let mut whole = LogHistogram::default();
        values.iter().for_each(|value| whole.observe(*value));
        let mut left = LogHistogram::default();
        let mut right = LogHistogram::default();
        values[..700].iter().for_each(|value| left.observe(*value));
        values[700..].iter().for_each(|value| right.observe(*value));
        right.merge(&left);
        assert_eq!(right.bins(), whole.bins());
        assert_eq!(whole.count(), 2000);
    }

    #[test]
    fn the_bin_count_is_bounded() {
        let mut histogram = LogHistogram::default();
        for exponent in -300..300 {
            histogram.observe(10f64.powi(exponent));
        }
        assert!(histogram.positive.counts.len() <= MAX_BINS_PER_SIGN);
        assert_eq!(histogram.count(), 600);
    }

    #[test]
    fn identical_distributions_do_not_drift() {
        let mut summary = NumericSummary::default();
        (0..5000).for_each(|i| summary.observe(f64::from(i % 97)));
        let same = Distribution::Numeric(&summary);
        for method in Method::ALL {
            let score = score(method, None, same, same).unwrap();
            assert!(!score.drifted, "{method:?}: {score:?}");
        }
    }

    #[test]
    fn chi_square_of_a_new_category_is_certain_drift() {
        let (statistic, p_value) = chi_square(&[10, 0], &[5, 5]);
        assert!(statistic.is_infinite());
        assert_eq!(p_value, 0.0);
    }
}
