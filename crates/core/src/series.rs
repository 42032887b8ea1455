//! All aggregates of all models: per model version, lifetime counters plus
//! time buckets (1 minute, rolled up into 1 hour past a horizon), with
//! bounded memory. Every event lives in exactly one time bucket, so any window
//! is the plain merge of the buckets that start inside it.

use std::collections::{BTreeMap, BTreeSet};

use crate::aggregate::{Bucket, Counters, FoldedFeature, FoldedNames};
use crate::drift::{DriftAccumulator, DriftHours, DriftSummary, DriftValue};
use crate::event::{LabelEvent, Prediction, PredictionEvent, ScoredPrediction, TimestampMs};
use crate::limits::{CardinalityLimits, Dimension, ModelLimits};
use crate::quality::{LabelCounters, Outcome, Quality, QualityBucket, Scored, Sign};
use crate::time::{HOUR_MS, MINUTE_MS, Window, bucket_start};

/// How long buckets are kept, relative to the newest event of their series.
/// Retention follows event time, not the wall clock, so that a replay of old
/// history keeps its buckets.
#[derive(Debug, Clone)]
pub struct AggregationConfig {
    /// Minute buckets newer than this stay minutes; older ones roll into hours.
    pub minute_retention_ms: i64,
    /// Hour buckets older than this are dropped.
    pub hour_retention_ms: i64,
    /// Drift summaries (hourly) older than this are dropped.
    pub drift_retention_ms: i64,
    pub limits: CardinalityLimits,
}

impl Default for AggregationConfig {
    fn default() -> Self {
        Self {
            minute_retention_ms: 6 * HOUR_MS,
            hour_retention_ms: 35 * 24 * HOUR_MS,
            drift_retention_ms: 15 * 24 * HOUR_MS,
            limits: CardinalityLimits::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Resolution {
    #[default]
    Minute,
    Hour,
    /// The lifetime counters; `start_ms` is 0.
    Lifetime,
}

impl Resolution {
    pub fn as_str(self) -> &'static str {
        match self {
            Resolution::Minute => "minute",
            Resolution::Hour => "hour",
            Resolution::Lifetime => "lifetime",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "minute" => Some(Resolution::Minute),
            "hour" => Some(Resolution::Hour),
            "lifetime" => Some(Resolution::Lifetime),
            _ => None,
        }
    }
}

/// Names one persisted aggregate.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct BucketKey {
    pub model: String,
    pub version: String,
    pub resolution: Resolution,
    pub start_ms: TimestampMs,
}

/// How many recently marked keys `Changes` remembers to skip re-marking.
const RECENT_KEYS: usize = 4;

/// The last keys marked in one of `Changes`' sets: a cache that saves
/// allocating a key (and searching the set) for a bucket marked again.
#[derive(Debug, Default)]
struct RecentKeys {
    keys: [BucketKey; RECENT_KEYS],
    next: usize,
}

impl RecentKeys {
    /// The key to mark, unless it is among the recent ones; remembered then.
    fn new_key(
        &mut self,
        model: &str,
        version: &str,
        resolution: Resolution,
        start_ms: TimestampMs,
    ) -> Option<BucketKey> {
        let recent = self.keys.iter().any(|key| {
            key.start_ms == start_ms
                && key.resolution == resolution
                && key.model == model
                && key.version == version
        });
        if recent {
            return None;
        }
        let key = key_of(model, version, resolution, start_ms);
        self.keys[self.next % RECENT_KEYS] = key.clone();
        self.next += 1;
        Some(key)
    }
}

/// What a batch changed, for the store to persist in the same transaction.
#[derive(Debug, Default)]
pub struct Changes {
    /// Aggregates whose prediction part changed.
    pub upserts: BTreeSet<BucketKey>,
    /// Aggregates whose quality part changed (labels); persisted on their own.
    pub quality_upserts: BTreeSet<BucketKey>,
    /// Aggregates gone, both parts.
    pub deletes: BTreeSet<BucketKey>,
    /// Drift summaries (hour resolution) that changed, and those gone.
    pub drift_upserts: BTreeSet<BucketKey>,
    pub drift_deletes: BTreeSet<BucketKey>,
    /// Keys marked last; caches only, subsets of `upserts` and
    /// `quality_upserts` (`delete` clears them).
    recent: RecentKeys,
    recent_quality: RecentKeys,
}

impl Changes {
    /// Like `upsert`, without allocating a key when it is already marked:
    /// consecutive events mostly touch the same buckets.
    fn upsert_named(&mut self, model: &str, version: &str, resolution: Resolution, start_ms: TimestampMs) {
        if let Some(key) = self.recent.new_key(model, version, resolution, start_ms) {
            self.upsert(key);
        }
    }

    /// Marks the quality part of a bucket, as `upsert_named` marks the other.
    /// A label marks its series' lifetime key and its bucket's, so one of the
    /// two is always among the recent ones.
    fn quality_upsert_named(
        &mut self,
        model: &str,
        version: &str,
        resolution: Resolution,
        start_ms: TimestampMs,
    ) {
        if let Some(key) = self.recent_quality.new_key(model, version, resolution, start_ms) {
            self.quality_upserts.insert(key);
        }
    }

    fn drift_upsert(&mut self, model: &str, version: &str, start_ms: TimestampMs) {
        let key = BucketKey {
            model: model.to_owned(),
            version: version.to_owned(),
            resolution: Resolution::Hour,
            start_ms,
        };
        if !self.drift_upserts.contains(&key) {
            self.drift_deletes.remove(&key);
            self.drift_upserts.insert(key);
        }
    }

    fn upsert(&mut self, key: BucketKey) {
        self.deletes.remove(&key);
        self.upserts.insert(key);
    }

    fn delete(&mut self, key: BucketKey) {
        self.recent = RecentKeys::default();
        self.recent_quality = RecentKeys::default();
        self.upserts.remove(&key);
        self.quality_upserts.remove(&key);
        self.deletes.insert(key);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    Classification,
    Regression,
}

impl ModelKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ModelKind::Classification => "classification",
            ModelKind::Regression => "regression",
        }
    }

    pub fn of(event: &PredictionEvent) -> Option<ModelKind> {
        match &event.prediction {
            Some(Prediction::Class(_)) => Some(ModelKind::Classification),
            Some(Prediction::Value(_)) => Some(ModelKind::Regression),
            None if event.confidence.is_some() => Some(ModelKind::Classification),
            None => None,
        }
    }
}

/// The aggregates of one model version.
#[derive(Debug, Default, Clone)]
pub struct Series {
    pub totals: Counters,
    pub minutes: BTreeMap<TimestampMs, Bucket>,
    pub hours: BTreeMap<TimestampMs, Bucket>,
    pub newest_event_ms: Option<TimestampMs>,
    /// Lifetime counts of labeled classifications.
    pub labels: LabelCounters,
    /// Drift summaries per hour of event time.
    pub drift: DriftHours,
}

/// Everything about one model.
#[derive(Debug, Default, Clone)]
pub struct ModelState {
    pub kind: Option<ModelKind>,
    pub limits: ModelLimits,
    pub versions: BTreeMap<String, Series>,
}

impl ModelState {
    pub fn newest_event_ms(&self) -> Option<TimestampMs> {
        self.versions
            .values()
            .filter_map(|series| series.newest_event_ms)
            .max()
    }

    /// Lifetime counters of every version of the model, merged.
    pub fn totals(&self) -> Counters {
        let mut totals = Counters::default();
        self.versions
            .values()
            .for_each(|series| totals.merge(&series.totals));
        totals
    }
}

/// Why an event cannot be aggregated; it is then not stored either.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("model limit reached: modelwatch already tracks {limit} models")]
    TooManyModels { limit: usize },
    #[error("model {model} is a {kind} model, so prediction must be {expected}")]
    KindMismatch {
        model: String,
        kind: &'static str,
        expected: &'static str,
    },
}

impl Refusal {
    /// The event field the refusal is about.
    pub fn field(&self) -> &'static str {
        match self {
            Refusal::TooManyModels { .. } => "model",
            Refusal::KindMismatch { .. } => "prediction",
        }
    }
}

/// Decisions of the events checked earlier in one group commit.
#[derive(Debug, Default)]
pub struct PendingModels {
    kinds: std::collections::HashMap<String, Option<ModelKind>>,
    new_models: BTreeSet<String>,
}

/// The aggregates of a group of events (one request), built off the writer
/// thread under the names as sent. The writer folds names while merging it
/// with [`Aggregates::merge_delta`]; the result equals applying the events
/// one by one (as long as no limit is reached inside the group, the admitted
/// names are the same too).
#[derive(Debug, Default)]
pub struct Delta {
    series: Vec<SeriesDelta>,
}

#[derive(Debug)]
struct SeriesDelta {
    model: String,
    version: String,
    kind: Option<ModelKind>,
    events: u64,
    newest_ms: TimestampMs,
    /// Every event of the series is in exactly one of these, so the lifetime
    /// counters' share is the merge of their counters.
    minutes: BTreeMap<TimestampMs, Bucket>,
    drift: BTreeMap<TimestampMs, DriftAccumulator>,
}

impl Delta {
    pub fn observe(&mut self, event: &PredictionEvent) {
        let index = match self
            .series
            .iter()
            .position(|series| series.model == event.model && series.version == event.version)
        {
            Some(index) => index,
            None => {
                self.series.push(SeriesDelta {
                    model: event.model.clone(),
                    version: event.version.clone(),
                    kind: None,
                    events: 0,
                    newest_ms: event.timestamp_ms,
                    minutes: BTreeMap::new(),
                    drift: BTreeMap::new(),
                });
                self.series.len() - 1
            }
        };
        let series = &mut self.series[index];
        if series.kind.is_none() {
            series.kind = ModelKind::of(event);
        }
        series.events += 1;
        series.newest_ms = series.newest_ms.max(event.timestamp_ms);
        let names = FoldedNames {
            error_type: crate::aggregate::error_type(event),
            predicted_class: crate::aggregate::predicted_class(event),
        };
        let features: Vec<(&str, FoldedFeature<'_>)> = event
            .features
            .iter()
            .map(|(name, value)| (name.as_str(), crate::aggregate::unfolded_feature(value)))
            .collect();
        let segments: Vec<(&str, &str)> = event
            .segments
            .iter()
            .map(|(key, value)| (key.as_str(), value.as_str()))
            .collect();
        series
            .minutes
            .entry(bucket_start(event.timestamp_ms, MINUTE_MS))
            .or_default()
            .observe(event, names, &features, &segments);
        let (values, class, confidence, regression) = drift_inputs(event, names.predicted_class, &features);
        series
            .drift
            .entry(bucket_start(event.timestamp_ms, HOUR_MS))
            .or_default()
            .observe(values, class, confidence, regression);
    }

    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }
}

/// A restored aggregate, as decoded from the store.
#[derive(Debug)]
pub enum Restored {
    Bucket(Box<Bucket>),
    /// The lifetime counters and the newest event time of a series.
    Counters(Option<TimestampMs>, Counters),
}

#[derive(Debug, Default)]
pub struct Aggregates {
    pub config: AggregationConfig,
    pub models: BTreeMap<String, ModelState>,
}

impl Aggregates {
    pub fn new(config: AggregationConfig) -> Self {
        Self {
            config,
            models: BTreeMap::new(),
        }
    }

    /// Whether `event` may be stored and aggregated. `pending` carries what
    /// earlier events of the same group commit decided (new models, kinds),
    /// since they are checked before any of them is applied.
    pub fn check(&self, event: &PredictionEvent, pending: &mut PendingModels) -> Result<(), Refusal> {
        self.check_model(&event.model, ModelKind::of(event), pending)
    }

    /// [`Aggregates::check`] for an event of `model` whose prediction says
    /// `this_kind` (`None` for a failed request).
    pub fn check_model(
        &self,
        model: &str,
        this_kind: Option<ModelKind>,
        pending: &mut PendingModels,
    ) -> Result<(), Refusal> {
        let existing = self.models.get(model);
        let known_kind = existing
            .and_then(|model| model.kind)
            .or_else(|| pending.kinds.get(model).copied().flatten());
        if existing.is_none() && !pending.new_models.contains(model) {
            let limit = self.config.limits.max_models;
            if self.models.len() + pending.new_models.len() >= limit {
                return Err(Refusal::TooManyModels { limit });
            }
            pending.new_models.insert(model.to_owned());
        }
        match (known_kind, this_kind) {
            (Some(known), Some(this)) if known != this => {
                return Err(Refusal::KindMismatch {
                    model: model.to_owned(),
                    kind: known.as_str(),
                    expected: match known {
                        ModelKind::Classification => "a class string",
                        ModelKind::Regression => "a number",
                    },
                });
            }
            (None, Some(_)) => {
                pending.kinds.insert(model.to_owned(), this_kind);
            }
            _ => {}
        }
        Ok(())
    }

    /// Adds a stored event. Call [`Aggregates::check`] first.
    pub fn apply(&mut self, event: &PredictionEvent, changes: &mut Changes) {
        let limits = &self.config.limits;
        let model = match self.models.get_mut(&event.model) {
            Some(model) => model,
            None => self.models.entry(event.model.clone()).or_default(),
        };
        if model.kind.is_none() {
            model.kind = ModelKind::of(event);
        }
        let folded = model.limits.fold(event, limits);
        let series = match model.versions.get_mut(folded.version) {
            Some(series) => series,
            None => model.versions.entry(folded.version.to_owned()).or_default(),
        };
        series.totals.observe(event, folded.names);
        let newest = series
            .newest_event_ms
            .map_or(event.timestamp_ms, |newest| newest.max(event.timestamp_ms));
        series.newest_event_ms = Some(newest);

        let minute_horizon = newest - self.config.minute_retention_ms;
        let hour_horizon = newest - self.config.hour_retention_ms;
        let target = if event.timestamp_ms >= bucket_start(minute_horizon, MINUTE_MS) {
            let start = bucket_start(event.timestamp_ms, MINUTE_MS);
            Some((
                Resolution::Minute,
                series.minutes.entry(start).or_default(),
                start,
            ))
        } else if event.timestamp_ms >= bucket_start(hour_horizon, HOUR_MS) {
            let start = bucket_start(event.timestamp_ms, HOUR_MS);
            Some((Resolution::Hour, series.hours.entry(start).or_default(), start))
        } else {
            // Older than any window modelwatch answers: only the lifetime counters.
            None
        };
        if let Some((resolution, bucket, start)) = target {
            bucket.observe(event, folded.names, &folded.features, &folded.segments);
            changes.upsert_named(&event.model, folded.version, resolution, start);
        }
        if event.timestamp_ms >= bucket_start(newest - self.config.drift_retention_ms, HOUR_MS) {
            let hour = bucket_start(event.timestamp_ms, HOUR_MS);
            observe_drift(
                series.drift.open(hour),
                event,
                folded.names.predicted_class,
                &folded.features,
            );
            changes.drift_upsert(&event.model, folded.version, hour);
        }
        changes.upsert_named(&event.model, folded.version, Resolution::Lifetime, 0);
    }

    /// Adds a group of stored events aggregated off the writer thread. Call
    /// [`Aggregates::check`] on each of its events first.
    pub fn merge_delta(&mut self, delta: &Delta, changes: &mut Changes) {
        let limits = &self.config.limits;
        for source in &delta.series {
            let model = match self.models.get_mut(&source.model) {
                Some(model) => model,
                None => self.models.entry(source.model.clone()).or_default(),
            };
            if model.kind.is_none() {
                model.kind = source.kind;
            }
            let ModelState {
                limits: model_limits,
                versions,
                ..
            } = model;
            let version = model_limits.fold_counted(
                Dimension::Version,
                &source.version,
                limits.max_versions_per_model,
                source.events,
            );
            let series = match versions.get_mut(version) {
                Some(series) => series,
                None => versions.entry(version.to_owned()).or_default(),
            };
            for bucket in source.minutes.values() {
                model_limits.fold_counters_into(&mut series.totals, &bucket.counters, limits, true);
            }
            let newest = series
                .newest_event_ms
                .map_or(source.newest_ms, |newest| newest.max(source.newest_ms));
            series.newest_event_ms = Some(newest);
            let minute_horizon = bucket_start(newest - self.config.minute_retention_ms, MINUTE_MS);
            let hour_horizon = bucket_start(newest - self.config.hour_retention_ms, HOUR_MS);
            for (minute, bucket) in &source.minutes {
                let (resolution, start, target) = if *minute >= minute_horizon {
                    (
                        Resolution::Minute,
                        *minute,
                        series.minutes.entry(*minute).or_default(),
                    )
                } else if *minute >= hour_horizon {
                    let hour = bucket_start(*minute, HOUR_MS);
                    (Resolution::Hour, hour, series.hours.entry(hour).or_default())
                } else {
                    // Too old for any window: folded (and counted) all the
                    // same, as one-by-one application does, then dropped.
                    model_limits.fold_bucket_into(&mut Bucket::default(), bucket, limits);
                    continue;
                };
                model_limits.fold_bucket_into(target, bucket, limits);
                changes.upsert_named(&source.model, version, resolution, start);
            }
            let drift_horizon = bucket_start(newest - self.config.drift_retention_ms, HOUR_MS);
            for (hour, accumulator) in source.drift.range(drift_horizon..) {
                let summary = accumulator.finish();
                model_limits.fold_drift_into(series.drift.open(*hour), &summary, limits);
                changes.drift_upsert(&source.model, version, *hour);
            }
            changes.upsert_named(&source.model, version, Resolution::Lifetime, 0);
        }
    }

    /// Rolls minute buckets past the horizon into hours and drops hours past
    /// retention, for every series named in `changes`.
    pub fn maintain(&mut self, changes: &mut Changes) {
        let touched: BTreeSet<(String, String)> = changes
            .upserts
            .iter()
            .map(|key| (key.model.clone(), key.version.clone()))
            .collect();
        for (model_name, version) in touched {
            let Some(series) = self
                .models
                .get_mut(&model_name)
                .and_then(|model| model.versions.get_mut(&version))
            else {
                continue;
            };
            let Some(newest) = series.newest_event_ms else {
                continue;
            };
            let key = |resolution, start_ms| BucketKey {
                model: model_name.clone(),
                version: version.clone(),
                resolution,
                start_ms,
            };
            let minute_horizon = bucket_start(newest - self.config.minute_retention_ms, MINUTE_MS);
            let expired_minutes: Vec<TimestampMs> = series
                .minutes
                .range(..minute_horizon)
                .map(|(start, _)| *start)
                .collect();
            for minute in expired_minutes {
                let bucket = series.minutes.remove(&minute).expect("listed above");
                let hour = bucket_start(minute, HOUR_MS);
                series.hours.entry(hour).or_default().merge(&bucket);
                changes.delete(key(Resolution::Minute, minute));
                if !bucket.quality.is_empty() {
                    changes.quality_upserts.insert(key(Resolution::Hour, hour));
                }
                changes.upsert(key(Resolution::Hour, hour));
            }
            let hour_horizon = bucket_start(newest - self.config.hour_retention_ms, HOUR_MS);
            let expired_hours: Vec<TimestampMs> = series
                .hours
                .range(..hour_horizon)
                .map(|(start, _)| *start)
                .collect();
            for hour in expired_hours {
                series.hours.remove(&hour);
                changes.delete(key(Resolution::Hour, hour));
            }
            let drift_horizon = bucket_start(newest - self.config.drift_retention_ms, HOUR_MS);
            for hour in series.drift.remove_before(drift_horizon) {
                let key = key(Resolution::Hour, hour);
                changes.drift_upserts.remove(&key);
                changes.drift_deletes.insert(key);
            }
            // Only the newest two hours usually still receive events.
            series.drift.seal_before(bucket_start(newest, HOUR_MS) - HOUR_MS);
        }
    }

    /// The persisted form of the aggregate named by `key`, if it exists.
    pub fn encode(&self, key: &BucketKey) -> Option<Vec<u8>> {
        let series = self.models.get(&key.model)?.versions.get(&key.version)?;
        let encoded = match key.resolution {
            Resolution::Lifetime => postcard::to_stdvec(&(series.newest_event_ms, &series.totals)),
            Resolution::Minute => postcard::to_stdvec(series.minutes.get(&key.start_ms)?),
            Resolution::Hour => postcard::to_stdvec(series.hours.get(&key.start_ms)?),
        };
        Some(encoded.expect("aggregates always serialize"))
    }

    /// The persisted form of the quality part of the aggregate named by `key`
    /// (for `Lifetime`, the labeled counters), if it exists.
    pub fn encode_quality(&self, key: &BucketKey) -> Option<Vec<u8>> {
        let series = self.models.get(&key.model)?.versions.get(&key.version)?;
        let encoded = match key.resolution {
            Resolution::Lifetime => postcard::to_stdvec(&series.labels),
            Resolution::Minute => postcard::to_stdvec(&series.minutes.get(&key.start_ms)?.quality),
            Resolution::Hour => postcard::to_stdvec(&series.hours.get(&key.start_ms)?.quality),
        };
        Some(encoded.expect("aggregates always serialize"))
    }

    /// The persisted form of the drift summary named by `key` (an hour).
    pub fn encode_drift(&self, key: &BucketKey) -> Option<Vec<u8>> {
        let series = self.models.get(&key.model)?.versions.get(&key.version)?;
        series.drift.encoded(key.start_ms)
    }

    /// Loads one drift summary back, on start.
    pub fn restore_drift(&mut self, key: BucketKey, bytes: &[u8]) -> Result<(), postcard::Error> {
        let model = self.models.entry(key.model).or_default();
        model.limits.learn_version(&key.version);
        let series = model.versions.entry(key.version).or_default();
        series.drift.load(key.start_ms, bytes)
    }

    /// The merge of the drift summaries of `model` (one version, or all)
    /// whose hour starts inside `window`. `None` when the model is unknown.
    pub fn drift_window(&self, model: &str, version: Option<&str>, window: Window) -> Option<DriftSummary> {
        let model = self.models.get(model)?;
        let mut merged = DriftSummary::default();
        for (name, series) in &model.versions {
            if version.is_some_and(|wanted| wanted != name) {
                continue;
            }
            series
                .drift
                .merge_into(window.start_ms..window.end_ms, &mut merged);
        }
        Some(merged)
    }

    /// Loads the quality part of one aggregate back, on start.
    pub fn restore_quality(&mut self, key: BucketKey, bytes: &[u8]) -> Result<(), postcard::Error> {
        let model = self.models.entry(key.model).or_default();
        model.limits.learn_version(&key.version);
        let series = model.versions.entry(key.version).or_default();
        match key.resolution {
            Resolution::Lifetime => {
                let labels: LabelCounters = postcard::from_bytes(bytes)?;
                series.labels = labels;
            }
            resolution => {
                let quality: QualityBucket = postcard::from_bytes(bytes)?;
                model.limits.learn_quality(&quality);
                let buckets = if resolution == Resolution::Minute {
                    &mut series.minutes
                } else {
                    &mut series.hours
                };
                buckets.entry(key.start_ms).or_default().quality = quality;
            }
        }
        Ok(())
    }

    /// Loads one persisted aggregate back, on start.
    pub fn restore(&mut self, key: BucketKey, bytes: &[u8]) -> Result<(), postcard::Error> {
        let restored = match key.resolution {
            Resolution::Lifetime => {
                let (newest_event_ms, counters) = postcard::from_bytes(bytes)?;
                Restored::Counters(newest_event_ms, counters)
            }
            _ => Restored::Bucket(Box::new(postcard::from_bytes(bytes)?)),
        };
        let model = self.models.entry(key.model).or_default();
        model.limits.learn_version(&key.version);
        let series = model.versions.entry(key.version).or_default();
        match restored {
            Restored::Counters(newest_event_ms, counters) => {
                model.limits.learn_counters(&counters);
                series.totals = counters;
                // Every applied event rewrites the lifetime row, so its
                // newest event time is exact.
                series.newest_event_ms = newest_event_ms;
            }
            Restored::Bucket(bucket) => {
                model.limits.learn_bucket(&bucket);
                if model.kind.is_none() {
                    model.kind = if bucket.regression.moments.count > 0 {
                        Some(ModelKind::Regression)
                    } else if !bucket.counters.classes.is_empty() {
                        Some(ModelKind::Classification)
                    } else {
                        None
                    };
                }
                let buckets = if key.resolution == Resolution::Minute {
                    &mut series.minutes
                } else {
                    &mut series.hours
                };
                // The quality part may have been restored first.
                let slot = buckets.entry(key.start_ms).or_default();
                let quality = std::mem::take(&mut slot.quality);
                *slot = *bucket;
                slot.quality = quality;
            }
        }
        Ok(())
    }

    /// The merge of every bucket of `model` (one version, or all) that starts
    /// inside `window`. `None` when the model is unknown.
    pub fn window(&self, model: &str, version: Option<&str>, window: Window) -> Option<Bucket> {
        let model = self.models.get(model)?;
        let mut merged = Bucket::default();
        for (name, series) in &model.versions {
            if version.is_some_and(|wanted| wanted != name) {
                continue;
            }
            for (_, bucket) in series.minutes.range(window.start_ms..window.end_ms) {
                merged.merge(bucket);
            }
            for (_, bucket) in series.hours.range(window.start_ms..window.end_ms) {
                merged.merge(bucket);
            }
        }
        Some(merged)
    }
}

/// What a label did to the aggregates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scoring {
    /// Counted in the bucket of its prediction (and the lifetime counters).
    Scored,
    /// Counted in the lifetime counters only: the prediction's bucket is past
    /// retention.
    Expired,
    /// Nothing to score: the prediction failed or predicted nothing, or the
    /// actual does not fit the model (text for a regression model).
    Unscorable,
}

impl Aggregates {
    /// Adds (or, with [`Sign::Retract`], takes back) the quality of a labeled
    /// prediction, in the bucket that holds the prediction's event time. The
    /// prediction must have been applied earlier, so that its names are
    /// admitted and its bucket exists (unless retention dropped it).
    pub fn apply_label(
        &mut self,
        prediction: &ScoredPrediction,
        label: &LabelEvent,
        sign: Sign,
        changes: &mut Changes,
    ) -> Scoring {
        let limits = &self.config.limits;
        let Some(model) = self.models.get_mut(&prediction.model) else {
            return Scoring::Unscorable;
        };
        // Folding again gives the names the prediction was aggregated under:
        // admitted names stay admitted. Occurrences are 0: nothing new is seen.
        let ModelState {
            limits: model_limits,
            versions,
            ..
        } = model;
        let version = model_limits.fold_counted(
            Dimension::Version,
            &prediction.version,
            limits.max_versions_per_model,
            0,
        );
        let actual_class;
        let scored = match &prediction.prediction {
            Some(Prediction::Class(predicted)) => {
                actual_class = label.actual.class();
                Scored::Class {
                    predicted: model_limits.fold_class(predicted, limits, 0),
                    actual: model_limits.fold_class(&actual_class, limits, u64::from(sign == Sign::Add)),
                }
            }
            Some(Prediction::Value(predicted)) => match label.actual.value() {
                Some(actual) => Scored::Value {
                    predicted: *predicted,
                    actual,
                },
                None => return Scoring::Unscorable,
            },
            None => return Scoring::Unscorable,
        };
        let business = label
            .business
            .iter()
            .map(|(name, value)| (model_limits.fold_business(name, limits, 0), *value))
            .collect();
        let segments = prediction
            .segments
            .iter()
            .map(|(key, value)| model_limits.fold_segment(key, value, limits, 0))
            .collect();
        let outcome = Outcome {
            scored,
            business,
            segments,
        };
        let Some(series) = versions.get_mut(version) else {
            return Scoring::Unscorable;
        };
        if let Scored::Class { predicted, actual } = outcome.scored {
            series.labels.observe(predicted, actual, sign);
        }
        changes.quality_upsert_named(&prediction.model, version, Resolution::Lifetime, 0);
        let minute = bucket_start(prediction.timestamp_ms, MINUTE_MS);
        let hour = bucket_start(prediction.timestamp_ms, HOUR_MS);
        let (resolution, start, bucket) = if let Some(bucket) = series.minutes.get_mut(&minute) {
            (Resolution::Minute, minute, bucket)
        } else if let Some(bucket) = series.hours.get_mut(&hour) {
            (Resolution::Hour, hour, bucket)
        } else {
            return Scoring::Expired;
        };
        bucket.quality.add(&outcome, sign);
        changes.quality_upsert_named(&prediction.model, version, resolution, start);
        Scoring::Scored
    }

    /// The labelable predictions and the quality of the buckets of `model`
    /// (one version, or all) that start inside `window`, within one segment
    /// value or overall. `None` when the model is unknown.
    pub fn quality_window(
        &self,
        model: &str,
        version: Option<&str>,
        segment: Option<(&str, &str)>,
        window: Window,
    ) -> Option<(u64, Quality)> {
        let model = self.models.get(model)?;
        let mut predictions = 0;
        let mut quality = Quality::default();
        for (name, series) in &model.versions {
            if version.is_some_and(|wanted| wanted != name) {
                continue;
            }
            let buckets = series
                .minutes
                .range(window.start_ms..window.end_ms)
                .chain(series.hours.range(window.start_ms..window.end_ms));
            for (_, bucket) in buckets {
                predictions += match segment {
                    None => bucket.labelable_predictions(),
                    Some((key, value)) => bucket
                        .segment_predictions
                        .get(key)
                        .and_then(|values| values.get(value))
                        .copied()
                        .unwrap_or(0),
                };
                if let Some(part) = bucket.quality.of_segment(segment) {
                    quality.merge(part);
                }
            }
        }
        Some((predictions, quality))
    }
}

fn key_of(model: &str, version: &str, resolution: Resolution, start_ms: TimestampMs) -> BucketKey {
    BucketKey {
        model: model.to_owned(),
        version: version.to_owned(),
        resolution,
        start_ms,
    }
}

impl Aggregates {
    /// The merged counters of the buckets of `model` (all versions) that start
    /// inside `window`: what rules and SLOs read, without the feature
    /// statistics and sketches a full [`Aggregates::window`] merges.
    pub fn counters_window(&self, model: &str, window: Window) -> Option<Counters> {
        let model = self.models.get(model)?;
        let mut merged = Counters::default();
        for series in model.versions.values() {
            let buckets = series
                .minutes
                .range(window.start_ms..window.end_ms)
                .chain(series.hours.range(window.start_ms..window.end_ms));
            for (_, bucket) in buckets {
                merged.merge(&bucket.counters);
            }
        }
        Some(merged)
    }
}

impl crate::alerting::RuleInputs for Aggregates {
    fn counters(&self, model: &str, window: Window) -> Option<Counters> {
        self.counters_window(model, window)
    }

    fn quality(&self, model: &str, window: Window) -> Option<Quality> {
        self.quality_window(model, None, None, window)
            .map(|(_, quality)| quality)
    }
}

/// Adds an event to a drift summary, with its names already folded (or as
/// sent, in a [`Delta`]).
pub fn observe_drift(
    summary: &mut DriftSummary,
    event: &PredictionEvent,
    predicted_class: Option<&str>,
    features: &[(&str, FoldedFeature<'_>)],
) {
    let (values, class, confidence, regression) = drift_inputs(event, predicted_class, features);
    summary.observe(values, class, confidence, regression);
}

/// What drift takes of an event: its features, predicted class, confidence
/// and regression output.
fn drift_inputs<'a>(
    event: &PredictionEvent,
    predicted_class: Option<&'a str>,
    features: &'a [(&'a str, FoldedFeature<'a>)],
) -> (
    impl Iterator<Item = (&'a str, DriftValue<'a>)>,
    Option<&'a str>,
    Option<f64>,
    Option<f64>,
) {
    let values = features.iter().filter_map(|(name, value)| match value {
        FoldedFeature::Number(number) => Some((*name, DriftValue::Number(*number))),
        FoldedFeature::Category(category) => Some((*name, DriftValue::Category(category))),
        FoldedFeature::Missing => None,
    });
    let ok = event.status == crate::event::Status::Ok;
    let confidence = predicted_class.and(event.confidence).filter(|_| ok);
    let regression = match (&event.prediction, ok) {
        (Some(Prediction::Value(value)), true) => Some(*value),
        _ => None,
    };
    (values, predicted_class, confidence, regression)
}
