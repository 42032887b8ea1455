//! The aggregate of the prediction events of one model version over one span
//! of event time, and the lifetime counters behind `/metrics`.
//!
//! Both are mergeable: the aggregate of a union of events equals the merge of
//! the aggregates of its parts, whatever the grouping (so buckets roll up into
//! hours, windows sum buckets, and shards sum in Prometheus).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::event::{FeatureValue, Prediction, PredictionEvent, Status};
use crate::quality::QualityBucket;
use crate::stats::{
    BucketCounts, CONFIDENCE_BUCKETS, LATENCY_BUCKETS, Moments, QuantileSketch, SLO_LATENCY_BUCKETS,
};

/// The `error_type` under which timeouts are counted, as in the seed.
pub const TIMEOUT_ERROR_TYPE: &str = "timeout";

/// The names an event is aggregated under, after cardinality folding.
/// Produced by [`crate::limits::ModelLimits::fold`].
#[derive(Debug, Clone, Copy)]
pub struct FoldedNames<'a> {
    pub error_type: Option<&'a str>,
    pub predicted_class: Option<&'a str>,
}

/// Per predicted class: how often, and with what confidence.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ClassCounts {
    pub count: u64,
    /// Confidence in the seed's buckets; `sum` gives the mean.
    pub confidence: BucketCounts,
}

/// Monotonic counters of one model version: what `/metrics` exposes.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Counters {
    pub requests: u64,
    /// Failed requests by error type; timeouts under [`TIMEOUT_ERROR_TYPE`].
    pub errors_by_type: BTreeMap<String, u64>,
    /// Latency in the seed's buckets.
    pub latency: BucketCounts,
    /// Latency in the finer SLO buckets.
    pub slo_latency: BucketCounts,
    pub classes: BTreeMap<String, ClassCounts>,
}

impl Counters {
    pub fn observe(&mut self, event: &PredictionEvent, names: FoldedNames<'_>) {
        self.requests += 1;
        if let Some(error_type) = names.error_type {
            increment(&mut self.errors_by_type, error_type, 1);
        }
        if let Some(latency) = event.latency_seconds {
            self.latency.observe(&LATENCY_BUCKETS, latency);
            self.slo_latency.observe(&SLO_LATENCY_BUCKETS, latency);
        }
        if let Some(class) = names.predicted_class {
            let class_counts = match self.classes.get_mut(class) {
                Some(existing) => existing,
                None => self.classes.entry(class.to_owned()).or_default(),
            };
            class_counts.count += 1;
            if let Some(confidence) = event.confidence {
                class_counts.confidence.observe(&CONFIDENCE_BUCKETS, confidence);
            }
        }
    }

    pub fn merge(&mut self, other: &Counters) {
        self.requests += other.requests;
        for (error_type, count) in &other.errors_by_type {
            increment(&mut self.errors_by_type, error_type, *count);
        }
        self.latency.merge(&other.latency);
        self.slo_latency.merge(&other.slo_latency);
        for (class, counts) in &other.classes {
            let mine = self.classes.entry(class.clone()).or_default();
            mine.count += counts.count;
            mine.confidence.merge(&counts.confidence);
        }
    }

    pub fn errors(&self) -> u64 {
        self.errors_by_type.values().sum()
    }

    pub fn timeouts(&self) -> u64 {
        self.errors_by_type.get(TIMEOUT_ERROR_TYPE).copied().unwrap_or(0)
    }

    /// Confidence of every classified prediction, in the seed's buckets.
    pub fn confidence_all(&self) -> BucketCounts {
        let mut all = BucketCounts::default();
        self.classes
            .values()
            .for_each(|class| all.merge(&class.confidence));
        all
    }
}

/// Statistics of one feature.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct FeatureStats {
    /// Numeric values.
    pub numeric: Moments,
    /// Categorical values and their counts (folded past the category limit).
    pub categories: BTreeMap<String, u64>,
}

impl FeatureStats {
    /// How many events gave this feature a value (not null).
    pub fn present(&self) -> u64 {
        self.numeric.count + self.categories.values().sum::<u64>()
    }

    pub fn merge(&mut self, other: &FeatureStats) {
        self.numeric.merge(&other.numeric);
        for (category, count) in &other.categories {
            increment(&mut self.categories, category, *count);
        }
    }
}

/// Output distribution of a regression model.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RegressionStats {
    pub moments: Moments,
    pub sketch: QuantileSketch,
}

/// Everything modelwatch keeps about the predictions of one model version in
/// one span of event time.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Bucket {
    pub counters: Counters,
    /// Latency quantiles, more precise than the seed's buckets.
    pub latency_sketch: QuantileSketch,
    /// Confidence of every classified prediction.
    pub confidence_sketch: QuantileSketch,
    pub regression: RegressionStats,
    /// Events that carried a `features` object: the denominator of missing rates.
    pub feature_rows: u64,
    pub features: BTreeMap<String, FeatureStats>,
    /// Predictions that can be labeled, per segment key and value: the
    /// denominator of label coverage within a segment.
    pub segment_predictions: BTreeMap<String, BTreeMap<String, u64>>,
    /// The quality of this bucket's labeled predictions. It is persisted on
    /// its own (labels arrive long after their predictions), not with the rest.
    #[serde(skip)]
    pub quality: QualityBucket,
}

/// A feature value after cardinality folding.
#[derive(Debug, Clone, Copy)]
pub enum FoldedFeature<'a> {
    Number(f64),
    Category(&'a str),
    Missing,
}

impl Bucket {
    /// Adds one event. `features` are the event's features with folded names
    /// and categories, in the event's order.
    pub fn observe(
        &mut self,
        event: &PredictionEvent,
        names: FoldedNames<'_>,
        features: &[(&str, FoldedFeature<'_>)],
        segments: &[(&str, &str)],
    ) {
        if labelable(event) {
            for (key, value) in segments {
                increment_segment(&mut self.segment_predictions, key, value, 1);
            }
        }
        self.counters.observe(event, names);
        if let Some(latency) = event.latency_seconds {
            self.latency_sketch.observe(latency);
        }
        if event.status == Status::Ok {
            match &event.prediction {
                Some(Prediction::Value(value)) => {
                    self.regression.moments.observe(*value);
                    self.regression.sketch.observe(*value);
                }
                Some(Prediction::Class(_)) | None => {
                    if let (Some(_), Some(confidence)) = (names.predicted_class, event.confidence) {
                        self.confidence_sketch.observe(confidence);
                    }
                }
            }
        }
        if !event.features.is_empty() {
            self.feature_rows += 1;
        }
        for (name, value) in features {
            let stats = match self.features.get_mut(*name) {
                Some(existing) => existing,
                None => self.features.entry((*name).to_owned()).or_default(),
            };
            match value {
                FoldedFeature::Number(number) => stats.numeric.observe(*number),
                FoldedFeature::Category(category) => increment(&mut stats.categories, category, 1),
                FoldedFeature::Missing => {}
            }
        }
    }

    pub fn merge(&mut self, other: &Bucket) {
        self.counters.merge(&other.counters);
        self.latency_sketch.merge(&other.latency_sketch);
        self.confidence_sketch.merge(&other.confidence_sketch);
        self.regression.moments.merge(&other.regression.moments);
        self.regression.sketch.merge(&other.regression.sketch);
        self.feature_rows += other.feature_rows;
        for (name, stats) in &other.features {
            self.features.entry(name.clone()).or_default().merge(stats);
        }
        for (key, values) in &other.segment_predictions {
            for (value, count) in values {
                increment_segment(&mut self.segment_predictions, key, value, *count);
            }
        }
        self.quality.merge(&other.quality);
    }

    /// Predictions that can be labeled: successful ones with a prediction.
    pub fn labelable_predictions(&self) -> u64 {
        self.counters
            .classes
            .values()
            .map(|class| class.count)
            .sum::<u64>()
            + self.regression.moments.count
    }
}

/// Whether a label can score this event: it succeeded and predicted something.
pub fn labelable(event: &PredictionEvent) -> bool {
    event.status == Status::Ok && event.prediction.is_some()
}

/// Whether an event's prediction counts toward the class distribution: only
/// successful classifications do.
pub fn predicted_class(event: &PredictionEvent) -> Option<&str> {
    match (&event.status, &event.prediction) {
        (Status::Ok, Some(Prediction::Class(class))) => Some(class),
        _ => None,
    }
}

/// The error type an event counts under, if it failed.
pub fn error_type(event: &PredictionEvent) -> Option<&str> {
    match &event.status {
        Status::Ok => None,
        Status::Error { error_type } => Some(error_type),
        Status::Timeout => Some(TIMEOUT_ERROR_TYPE),
    }
}

/// Numeric view of a feature value, before folding.
pub fn unfolded_feature(value: &FeatureValue) -> FoldedFeature<'_> {
    match value {
        FeatureValue::Number(number) => FoldedFeature::Number(*number),
        FeatureValue::Category(category) => FoldedFeature::Category(category),
        FeatureValue::Missing => FoldedFeature::Missing,
    }
}

pub(crate) fn increment_segment(
    map: &mut BTreeMap<String, BTreeMap<String, u64>>,
    key: &str,
    value: &str,
    by: u64,
) {
    let values = match map.get_mut(key) {
        Some(values) => values,
        None => map.entry(key.to_owned()).or_default(),
    };
    increment(values, value, by);
}

pub(crate) fn increment(map: &mut BTreeMap<String, u64>, key: &str, by: u64) {
    match map.get_mut(key) {
        Some(count) => *count += by,
        None => {
            map.insert(key.to_owned(), by);
        }
    }
}
