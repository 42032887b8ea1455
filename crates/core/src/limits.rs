//! Cardinality limits: past a limit, new label values fold into `__other__`,
//! so that no client can flood Prometheus or memory with unbounded labels.

use std::collections::BTreeMap;

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

use crate::aggregate::{self, Bucket, Counters, FoldedFeature, FoldedNames, TIMEOUT_ERROR_TYPE};
use crate::event::PredictionEvent;

/// The value that every label past its limit folds into.
pub const OTHER: &str = "__other__";

/// How many distinct values each dimension admits, per model. It is also the
/// `limits:` section of the config file, hence the serde derive.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CardinalityLimits {
    /// Distinct models; events of further models are refused, not folded.
    pub max_models: usize,
    pub max_versions_per_model: usize,
    pub max_classes_per_model: usize,
    pub max_error_types_per_model: usize,
    pub max_features_per_model: usize,
    pub max_categories_per_feature: usize,
    pub max_segment_keys_per_model: usize,
    pub max_values_per_segment_key: usize,
    pub max_business_metrics_per_model: usize,
}

impl Default for CardinalityLimits {
    fn default() -> Self {
        Self {
            max_models: 200,
            max_versions_per_model: 20,
            max_classes_per_model: 100,
            max_error_types_per_model: 50,
            max_features_per_model: 200,
            max_categories_per_feature: 100,
            max_segment_keys_per_model: 20,
            max_values_per_segment_key: 100,
            max_business_metrics_per_model: 20,
        }
    }
}

/// The dimensions that fold, as named in `modelwatch_cardinality_folded_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Dimension {
    Version,
    Class,
    ErrorType,
    Feature,
    Category,
    SegmentKey,
    SegmentValue,
    Business,
}

impl Dimension {
    pub fn as_str(self) -> &'static str {
        match self {
            Dimension::Version => "version",
            Dimension::Class => "class",
            Dimension::ErrorType => "error_type",
            Dimension::Feature => "feature",
            Dimension::Category => "category",
            Dimension::SegmentKey => "segment_key",
            Dimension::SegmentValue => "segment_value",
            Dimension::Business => "business",
        }
    }
}

#[derive(Debug, Default, Clone)]
struct AdmittedNames(HashSet<String>);

impl AdmittedNames {
    /// `Some(name)` when the name is, or can still be, admitted.
    fn admit<'a>(&mut self, name: &'a str, limit: usize) -> Option<&'a str> {
        if name == OTHER || self.0.contains(name) {
            return Some(name);
        }
        if self.0.len() < limit {
            self.0.insert(name.to_owned());
            return Some(name);
        }
        None
    }

    fn learn(&mut self, name: &str) {
        if name != OTHER {
            self.0.insert(name.to_owned());
        }
    }
}

/// The admitted label values of one model, and what was folded.
#[derive(Debug, Default, Clone)]
pub struct ModelLimits {
    versions: AdmittedNames,
    classes: AdmittedNames,
    error_types: AdmittedNames,
    features: AdmittedNames,
    categories: HashMap<String, AdmittedNames>,
    segment_keys: AdmittedNames,
    segment_values: HashMap<String, AdmittedNames>,
    business: AdmittedNames,
    /// Values folded into `__other__` since start, per dimension.
    pub folded: BTreeMap<Dimension, u64>,
}

/// An event's names after folding, borrowed from the event or `OTHER`.
#[derive(Debug)]
pub struct FoldedEvent<'a> {
    pub version: &'a str,
    pub names: FoldedNames<'a>,
    pub features: Vec<(&'a str, FoldedFeature<'a>)>,
    pub segments: Vec<(&'a str, &'a str)>,
}

impl ModelLimits {
    pub fn fold<'a>(&mut self, event: &'a PredictionEvent, limits: &CardinalityLimits) -> FoldedEvent<'a> {
        let version = self.fold_one(Dimension::Version, &event.version, limits.max_versions_per_model);
        let predicted_class = aggregate::predicted_class(event)
            .map(|class| self.fold_one(Dimension::Class, class, limits.max_classes_per_model));
        let error_type = aggregate::error_type(event).map(|error_type| {
            if error_type == TIMEOUT_ERROR_TYPE {
                error_type
            } else {
                self.fold_one(Dimension::ErrorType, error_type, limits.max_error_types_per_model)
            }
        });
        let mut features = Vec::with_capacity(event.features.len());
        for (name, value) in &event.features {
            let value = aggregate::unfolded_feature(value);
            // Only values count as folded occurrences: a null carries nothing.
            let occurrences = u64::from(!matches!(value, FoldedFeature::Missing));
            let name = self.fold_counted(
                Dimension::Feature,
                name,
                limits.max_features_per_model,
                occurrences,
            );
            let value = match value {
                FoldedFeature::Category(category) => FoldedFeature::Category(self.fold_category(
                    name,
                    category,
                    limits.max_categories_per_feature,
                    1,
                )),
                other => other,
            };
            features.push((name, value));
        }
        // Segments count predictions that can be labeled; others fold uncounted.
        let occurrences = u64::from(aggregate::labelable(event));
        let segments = event
            .segments
            .iter()
            .map(|(key, value)| self.fold_segment(key, value, limits, occurrences))
            .collect();
        FoldedEvent {
            version,
            names: FoldedNames {
                error_type,
                predicted_class,
            },
            features,
            segments,
        }
    }

    fn fold_one<'a>(&mut self, dimension: Dimension, name: &'a str, limit: usize) -> &'a str {
        self.fold_counted(dimension, name, limit, 1)
    }

    /// Folds `name` as if `occurrences` events carried it: the folded counter
    /// grows by that many when the name is past the limit.
    pub fn fold_counted<'a>(
        &mut self,
        dimension: Dimension,
        name: &'a str,
        limit: usize,
        occurrences: u64,
    ) -> &'a str {
        let admitted = match dimension {
            Dimension::Version => &mut self.versions,
            Dimension::Class => &mut self.classes,
            Dimension::ErrorType => &mut self.error_types,
            Dimension::Feature => &mut self.features,
            Dimension::SegmentKey => &mut self.segment_keys,
            Dimension::Business => &mut self.business,
            Dimension::Category | Dimension::SegmentValue => {
                unreachable!("categories and segment values are admitted per feature or key")
            }
        };
        match admitted.admit(name, limit) {
            Some(name) => name,
            None => {
                if occurrences > 0 {
                    *self.folded.entry(dimension).or_default() += occurrences;
                }
                OTHER
            }
        }
    }

    /// Folds a categorical value of `feature` (a folded feature name).
    pub fn fold_category<'a>(
        &mut self,
        feature: &str,
        category: &'a str,
        limit: usize,
        occurrences: u64,
    ) -> &'a str {
        let admitted = match self.categories.get_mut(feature) {
            Some(admitted) => admitted,
            None => self.categories.entry(feature.to_owned()).or_default(),
        };
        match admitted.admit(category, limit) {
            Some(category) => category,
            None => {
                if occurrences > 0 {
                    *self.folded.entry(Dimension::Category).or_default() += occurrences;
                }
                OTHER
            }
        }
    }

    /// Folds a segment: its key past the key limit, then its value past the
    /// value limit of that key.
    pub fn fold_segment<'a>(
        &mut self,
        key: &'a str,
        value: &'a str,
        limits: &CardinalityLimits,
        occurrences: u64,
    ) -> (&'a str, &'a str) {
        let key = self.fold_counted(
            Dimension::SegmentKey,
            key,
            limits.max_segment_keys_per_model,
            occurrences,
        );
        let admitted = match self.segment_values.get_mut(key) {
            Some(admitted) => admitted,
            None => self.segment_values.entry(key.to_owned()).or_default(),
        };
        let value = match admitted.admit(value, limits.max_values_per_segment_key) {
            Some(value) => value,
            None => {
                if occurrences > 0 {
                    *self.folded.entry(Dimension::SegmentValue).or_default() += occurrences;
                }
                OTHER
            }
        };
        (key, value)
    }

    /// Folds a class named by a label, like a predicted class.
    pub fn fold_class<'a>(
        &mut self,
        class: &'a str,
        limits: &CardinalityLimits,
        occurrences: u64,
    ) -> &'a str {
        self.fold_counted(Dimension::Class, class, limits.max_classes_per_model, occurrences)
    }

    /// Folds the name of a business value.
    pub fn fold_business<'a>(
        &mut self,
        name: &'a str,
        limits: &CardinalityLimits,
        occurrences: u64,
    ) -> &'a str {
        self.fold_counted(
            Dimension::Business,
            name,
            limits.max_business_metrics_per_model,
            occurrences,
        )
    }

    /// Re-admits every name found in restored state, so that folding after a
    /// restart continues as before it.
    pub fn learn_version(&mut self, version: &str) {
        self.versions.learn(version);
    }

    pub fn learn_counters(&mut self, counters: &Counters) {
        counters
            .classes
            .keys()
            .for_each(|class| self.classes.learn(class));
        counters
            .errors_by_type
            .keys()
            .filter(|error_type| *error_type != TIMEOUT_ERROR_TYPE)
            .for_each(|error_type| self.error_types.learn(error_type));
    }

    pub fn learn_segments<'a>(&mut self, segments: impl Iterator<Item = (&'a String, &'a String)>) {
        for (key, value) in segments {
            self.segment_keys.learn(key);
            self.segment_values.entry(key.clone()).or_default().learn(value);
        }
    }

    /// Re-admits the names of restored quality: classes and business values.
    pub fn learn_quality(&mut self, quality: &crate::quality::QualityBucket) {
        for (predicted, row) in &quality.all.confusion {
            self.classes.learn(predicted);
            row.keys().for_each(|actual| self.classes.learn(actual));
        }
        quality
            .all
            .business
            .keys()
            .for_each(|name| self.business.learn(name));
        self.learn_segments(
            quality
                .segments
                .iter()
                .flat_map(|(key, values)| values.keys().map(move |value| (key, value))),
        );
    }

    pub fn learn_bucket(&mut self, bucket: &Bucket) {
        self.learn_counters(&bucket.counters);
        self.learn_segments(
            bucket
                .segment_predictions
                .iter()
                .flat_map(|(key, values)| values.keys().map(move |value| (key, value))),
        );
        for (feature, stats) in &bucket.features {
            self.features.learn(feature);
            let admitted = self.categories.entry(feature.clone()).or_default();
            stats
                .categories
                .keys()
                .for_each(|category| admitted.learn(category));
        }
    }
}

impl ModelLimits {
    /// Merges counters aggregated under the names as sent into `target`,
    /// folding every name on the way (a request's delta into a series).
    /// Each folded occurrence is counted once per event: callers fold the
    /// lifetime counters with `count_folds` and the bucket of the same events
    /// without.
    pub fn fold_counters_into(
        &mut self,
        target: &mut Counters,
        source: &Counters,
        limits: &CardinalityLimits,
        count_folds: bool,
    ) {
        let counted = |count: u64| if count_folds { count } else { 0 };
        target.requests += source.requests;
        for (error_type, count) in &source.errors_by_type {
            let error_type = if error_type == TIMEOUT_ERROR_TYPE {
                error_type.as_str()
            } else {
                self.fold_counted(
                    Dimension::ErrorType,
                    error_type,
                    limits.max_error_types_per_model,
                    counted(*count),
                )
            };
            aggregate::increment(&mut target.errors_by_type, error_type, *count);
        }
        target.latency.merge(&source.latency);
        target.slo_latency.merge(&source.slo_latency);
        for (class, counts) in &source.classes {
            let class = self.fold_counted(
                Dimension::Class,
                class,
                limits.max_classes_per_model,
                counted(counts.count),
            );
            let mine = match target.classes.get_mut(class) {
                Some(mine) => mine,
                None => target.classes.entry(class.to_owned()).or_default(),
            };
            mine.count += counts.count;
            mine.confidence.merge(&counts.confidence);
        }
    }

    /// Folds the names of a drift summary built under the names as sent
    /// (features, categories, classes) into `target`. Folded occurrences are
    /// not counted again: the event's bucket already counted them.
    pub fn fold_drift_into(
        &mut self,
        target: &mut crate::drift::DriftSummary,
        source: &crate::drift::DriftSummary,
        limits: &CardinalityLimits,
    ) {
        target.rows += source.rows;
        for (name, summary) in &source.numeric {
            let name = self.fold_counted(Dimension::Feature, name, limits.max_features_per_model, 0);
            target.numeric.entry(name.to_owned()).or_default().merge(summary);
        }
        for (name, counts) in &source.categorical {
            let name = self.fold_counted(Dimension::Feature, name, limits.max_features_per_model, 0);
            for (category, count) in counts {
                let category = self.fold_category(name, category, limits.max_categories_per_feature, 0);
                let mine = target.categorical.entry(name.to_owned()).or_default();
                aggregate::increment(mine, category, *count);
            }
        }
        for (class, count) in &source.classes {
            let class = self.fold_class(class, limits, 0);
            aggregate::increment(&mut target.classes, class, *count);
        }
        target.confidence.merge(&source.confidence);
        target.regression.merge(&source.regression);
    }

    /// Like [`ModelLimits::fold_counters_into`], for a whole bucket.
    pub fn fold_bucket_into(&mut self, target: &mut Bucket, source: &Bucket, limits: &CardinalityLimits) {
        self.fold_counters_into(&mut target.counters, &source.counters, limits, false);
        target.latency_sketch.merge(&source.latency_sketch);
        target.confidence_sketch.merge(&source.confidence_sketch);
        target.regression.moments.merge(&source.regression.moments);
        target.regression.sketch.merge(&source.regression.sketch);
        target.feature_rows += source.feature_rows;
        for (name, stats) in &source.features {
            let name = self.fold_counted(
                Dimension::Feature,
                name,
                limits.max_features_per_model,
                stats.present(),
            );
            let mine = match target.features.get_mut(name) {
                Some(mine) => mine,
                None => target.features.entry(name.to_owned()).or_default(),
            };
            mine.numeric.merge(&stats.numeric);
            for (category, count) in &stats.categories {
                let category = self.fold_category(name, category, limits.max_categories_per_feature, *count);
                aggregate::increment(&mut mine.categories, category, *count);
            }
        }
        for (key, values) in &source.segment_predictions {
            for (value, count) in values {
                let (key, value) = self.fold_segment(key, value, limits, *count);
                aggregate::increment_segment(&mut target.segment_predictions, key, value, *count);
            }
        }
    }
}
