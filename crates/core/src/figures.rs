//! The figures of one window, computed from its merged [`Bucket`] and
//! [`Quality`]: what `GET /v1/models/{m}/{operations,predictions,features,
//! performance}` answer and what `modelwatch report` prints.
//!
//! These structs are wire types (they derive `Serialize`): the server
//! flattens them next to the window it answered for, and the offline report
//! nests them per window, so both give the same figures from the same code.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::aggregate::Bucket;
use crate::quality::{AveragedScores, ClassScores, ConfusionMatrix, Quality, RegressionReport};
use crate::series::ModelKind;
use crate::stats::CONFIDENCE_BUCKETS;

/// Confidence at or below this is "low" (a bound of the seed's buckets).
pub const LOW_CONFIDENCE_THRESHOLD: f64 = 0.6;

fn ratio(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

#[derive(Debug, Clone, Serialize)]
pub struct Quantiles {
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
    pub mean: Option<f64>,
}

/// Operational figures: requests, throughput, errors and latency.
#[derive(Debug, Clone, Serialize)]
pub struct Operations {
    pub requests: u64,
    pub requests_per_second: f64,
    /// Failed requests (errors and timeouts) over requests, as the seed's
    /// PromQL error rate.
    pub error_rate: Option<f64>,
    pub timeout_rate: Option<f64>,
    pub errors_by_type: BTreeMap<String, u64>,
    pub latency_seconds: Quantiles,
}

impl Operations {
    /// The figures of `bucket`, a window `window_length_ms` long.
    pub fn of(bucket: &Bucket, window_length_ms: i64) -> Self {
        let counters = &bucket.counters;
        let latency_count = bucket.latency_sketch.count();
        Self {
            requests: counters.requests,
            requests_per_second: counters.requests as f64 / (window_length_ms as f64 / 1000.0),
            error_rate: ratio(counters.errors(), counters.requests),
            timeout_rate: ratio(counters.timeouts(), counters.requests),
            errors_by_type: counters.errors_by_type.clone(),
            latency_seconds: Quantiles {
                p50: bucket.latency_sketch.quantile(0.5),
                p95: bucket.latency_sketch.quantile(0.95),
                p99: bucket.latency_sketch.quantile(0.99),
                mean: (latency_count > 0).then(|| counters.latency.sum / latency_count as f64),
            },
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ClassSummary {
    pub count: u64,
    pub share: f64,
    pub mean_confidence: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConfidenceBucket {
    pub le: f64,
    pub count: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConfidenceSummary {
    pub count: u64,
    pub mean: Option<f64>,
    pub p10: Option<f64>,
    pub p25: Option<f64>,
    pub p50: Option<f64>,
    /// Share of predictions with confidence <= 0.6.
    pub low_confidence_share: Option<f64>,
    /// Cumulative counts in the seed's buckets.
    pub buckets: Vec<ConfidenceBucket>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RegressionSummary {
    pub count: u64,
    pub mean: Option<f64>,
    pub std: Option<f64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
}

/// Prediction figures: the class distribution and confidence, or the
/// distribution of a regression output.
#[derive(Debug, Clone, Serialize)]
pub struct Predictions {
    pub kind: Option<&'static str>,
    pub requests: u64,
    pub classes: BTreeMap<String, ClassSummary>,
    pub confidence: Option<ConfidenceSummary>,
    pub regression: Option<RegressionSummary>,
}

impl Predictions {
    pub fn of(bucket: &Bucket, kind: Option<ModelKind>) -> Self {
        let classified: u64 = bucket.counters.classes.values().map(|class| class.count).sum();
        let classes = bucket
            .counters
            .classes
            .iter()
            .map(|(name, class)| {
                let confidence_count = class.confidence.count();
                (
                    name.clone(),
                    ClassSummary {
                        count: class.count,
                        share: class.count as f64 / classified.max(1) as f64,
                        mean_confidence: (confidence_count > 0)
                            .then(|| class.confidence.sum / confidence_count as f64),
                    },
                )
            })
            .collect();
        let all_confidence = bucket.counters.confidence_all();
        let confidence_count = all_confidence.count();
        let confidence = (confidence_count > 0).then(|| ConfidenceSummary {
            count: confidence_count,
            mean: Some(all_confidence.sum / confidence_count as f64),
            p10: bucket.confidence_sketch.quantile(0.10),
            p25: bucket.confidence_sketch.quantile(0.25),
            p50: bucket.confidence_sketch.quantile(0.50),
            low_confidence_share: all_confidence.share_at_most(&CONFIDENCE_BUCKETS, LOW_CONFIDENCE_THRESHOLD),
            buckets: all_confidence
                .cumulative(&CONFIDENCE_BUCKETS)
                .filter(|(le, _)| le.is_finite())
                .map(|(le, count)| ConfidenceBucket { le, count })
                .collect(),
        });
        let moments = &bucket.regression.moments;
        let regression = (moments.count > 0).then(|| RegressionSummary {
            count: moments.count,
            mean: moments.mean(),
            std: moments.std(),
            min: moments.min(),
            max: moments.max(),
            p50: bucket.regression.sketch.quantile(0.5),
            p95: bucket.regression.sketch.quantile(0.95),
            p99: bucket.regression.sketch.quantile(0.99),
        });
        Self {
            kind: kind.map(ModelKind::as_str),
            requests: bucket.counters.requests,
            classes,
            confidence,
            regression,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct CategoryCount {
    pub value: String,
    pub count: u64,
    pub share: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct FeatureSummary {
    /// Events that gave this feature a value.
    pub count: u64,
    /// Events with a `features` object that lacked this feature or gave null.
    pub missing: u64,
    pub missing_rate: Option<f64>,
    pub mean: Option<f64>,
    pub std: Option<f64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// Distinct categorical values seen (past the limit, folded into `__other__`).
    pub distinct: Option<usize>,
    pub top: Option<Vec<CategoryCount>>,
}

/// Feature statistics: numbers' moments, categories' top values.
#[derive(Debug, Clone, Serialize)]
pub struct Features {
    /// Events in the window that carried features.
    pub rows: u64,
    pub features: BTreeMap<String, FeatureSummary>,
}

impl Features {
    /// The figures of `bucket`, with the `top_k` most frequent categories.
    pub fn of(bucket: &Bucket, top_k: usize) -> Self {
        let rows = bucket.feature_rows;
        let features = bucket
            .features
            .iter()
            .map(|(name, stats)| {
                let present = stats.present();
                let missing = rows.saturating_sub(present);
                let numeric = &stats.numeric;
                let categorical_total: u64 = stats.categories.values().sum();
                let top = (!stats.categories.is_empty()).then(|| {
                    let mut counts: Vec<(&String, &u64)> = stats.categories.iter().collect();
                    counts.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
                    counts
                        .into_iter()
                        .take(top_k)
                        .map(|(value, count)| CategoryCount {
                            value: value.clone(),
                            count: *count,
                            share: *count as f64 / categorical_total as f64,
                        })
                        .collect()
                });
                (
                    name.clone(),
                    FeatureSummary {
                        count: present,
                        missing,
                        missing_rate: ratio(missing, rows),
                        mean: numeric.mean(),
                        std: numeric.std(),
                        min: numeric.min(),
                        max: numeric.max(),
                        distinct: (!stats.categories.is_empty()).then_some(stats.categories.len()),
                        top,
                    },
                )
            })
            .collect();
        Self { rows, features }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct BusinessValue {
    pub sum: f64,
    /// The sum over the labeled predictions (`sample_size`).
    pub per_prediction: f64,
}

/// Quality from the labels joined so far, attributed to the time of their
/// predictions.
#[derive(Debug, Clone, Serialize)]
pub struct Performance {
    pub kind: Option<&'static str>,
    /// Labeled predictions in the window.
    pub sample_size: u64,
    /// Predictions in the window that a label can score (successful ones).
    pub predictions: u64,
    pub label_coverage: f64,
    pub accuracy: Option<f64>,
    pub per_class: BTreeMap<String, ClassScores>,
    #[serde(rename = "macro")]
    pub macro_average: Option<AveragedScores>,
    #[serde(rename = "weighted")]
    pub weighted_average: Option<AveragedScores>,
    /// Rows are actual classes, columns predicted ones (scikit-learn's
    /// layout); null for regression models.
    pub confusion_matrix: Option<ConfusionMatrix>,
    /// Regression models only (null until a label arrives); absent for
    /// classifiers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub regression: Option<Option<RegressionReport>>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub business: BTreeMap<String, BusinessValue>,
}

impl Performance {
    /// The figures of `quality`, the labels of a window with `predictions`
    /// labelable predictions, for a model of `kind`.
    pub fn of(kind: Option<ModelKind>, predictions: u64, quality: &Quality) -> Self {
        let sample_size = quality.labeled;
        let classifier = kind != Some(ModelKind::Regression);
        let classification = quality.classification();
        let business = quality
            .business
            .iter()
            .map(|(name, sum)| {
                let value = BusinessValue {
                    sum: *sum,
                    per_prediction: if sample_size == 0 {
                        0.0
                    } else {
                        sum / sample_size as f64
                    },
                };
                (name.clone(), value)
            })
            .collect();
        Self {
            kind: kind.map(ModelKind::as_str),
            sample_size,
            predictions,
            label_coverage: ratio(sample_size, predictions).unwrap_or(0.0),
            accuracy: classification.as_ref().map(|report| report.accuracy),
            macro_average: classification.as_ref().map(|report| report.macro_average),
            weighted_average: classification.as_ref().map(|report| report.weighted_average),
            confusion_matrix: classifier.then(|| {
                classification
                    .as_ref()
                    .map(|report| report.confusion.clone())
                    .unwrap_or(ConfusionMatrix {
                        labels: Vec::new(),
                        matrix: Vec::new(),
                    })
            }),
            per_class: classification.map(|report| report.per_class).unwrap_or_default(),
            regression: (!classifier).then(|| quality.regression()),
            business,
        }
    }
}
