//! Properties of the aggregates: incremental equals batch, merging is
//! associative and commutative, shards merged equal one instance, and a
//! window is the merge of its buckets wherever the events were split.

use modelwatch_core::aggregate::{Bucket, FoldedFeature, FoldedNames, error_type, predicted_class};
use modelwatch_core::event::{FeatureValue, Prediction, PredictionEvent, Status};
use modelwatch_core::series::{Aggregates, AggregationConfig, BucketKey, Changes, PendingModels};
use modelwatch_core::time::{HOUR_MS, MINUTE_MS, Window};
use proptest::prelude::*;

fn event_strategy() -> impl Strategy<Value = PredictionEvent> {
    (
        0u32..1_000_000,
        0i64..(3 * HOUR_MS),
        prop::option::of(0.0f64..3.0),
        0u8..10,
        0u8..3,
        0.5f64..1.0,
        prop::collection::vec(prop::option::of(-1e3f64..1e3), 0..3),
        prop::option::of(0u8..4),
    )
        .prop_map(
            |(id, offset, latency, status, class, confidence, numbers, category)| {
                let status = match status {
                    0 => Status::Error {
                        error_type: "ValueError".into(),
                    },
                    1 => Status::Timeout,
                    _ => Status::Ok,
                };
                let mut features: Vec<(String, FeatureValue)> = numbers
                    .into_iter()
                    .enumerate()
                    .map(|(index, number)| {
                        (
                            format!("f{index}"),
                            number.map_or(FeatureValue::Missing, FeatureValue::Number),
                        )
                    })
                    .collect();
                if let Some(category) = category {
                    features.push(("country".into(), FeatureValue::Category(format!("c{category}"))));
                }
                PredictionEvent {
                    prediction_id: format!("p{id}"),
                    model: "m".into(),
                    version: if class == 2 { "v2".into() } else { "v1".into() },
                    timestamp_ms: 1_764_000_000_000 + offset,
                    latency_seconds: latency,
                    status,
                    prediction: Some(Prediction::Class(class.to_string())),
                    confidence: Some(confidence),
                    probabilities: Vec::new(),
                    features,
                    segments: vec![("region".into(), format!("r{}", id % 3))],
                }
            },
        )
}

fn observe(bucket: &mut Bucket, event: &PredictionEvent) {
    let features: Vec<(&str, FoldedFeature<'_>)> = event
        .features
        .iter()
        .map(|(name, value)| (name.as_str(), modelwatch_core::aggregate::unfolded_feature(value)))
        .collect();
    let segments: Vec<(&str, &str)> = event
        .segments
        .iter()
        .map(|(key, value)| (key.as_str(), value.as_str()))
        .collect();
    bucket.observe(
        event,
        FoldedNames {
            error_type: error_type(event),
            predicted_class: predicted_class(event),
        },
        &features,
        &segments,
    );
}

fn bucket_of(events: &[PredictionEvent]) -> Bucket {
    let mut bucket = Bucket::default();
    events.iter().for_each(|event| observe(&mut bucket, event));
    bucket
}

/// Compares two buckets: counts exactly, floating-point sums and moments to a
/// relative 1e-9, sketches by count and quantiles.
fn assert_same(left: &Bucket, right: &Bucket) {
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * (1.0 + a.abs().max(b.abs()));
    assert_eq!(left.counters.requests, right.counters.requests);
    assert_eq!(left.counters.errors_by_type, right.counters.errors_by_type);
    assert_eq!(left.counters.latency.counts, right.counters.latency.counts);
    assert!(close(left.counters.latency.sum, right.counters.latency.sum));
    assert_eq!(
        left.counters.classes.keys().collect::<Vec<_>>(),
        right.counters.classes.keys().collect::<Vec<_>>()
    );
    for (class, counts) in &left.counters.classes {
        let other = &right.counters.classes[class];
        assert_eq!(counts.count, other.count);
        assert_eq!(counts.confidence.counts, other.confidence.counts);
        assert!(close(counts.confidence.sum, other.confidence.sum));
    }
    assert_eq!(left.latency_sketch.count(), right.latency_sketch.count());
    for q in [0.5, 0.95, 0.99] {
        assert_eq!(left.latency_sketch.quantile(q), right.latency_sketch.quantile(q));
        assert_eq!(
            left.confidence_sketch.quantile(q),
            right.confidence_sketch.quantile(q)
        );
    }
    assert_eq!(left.feature_rows, right.feature_rows);
    assert_eq!(left.segment_predictions, right.segment_predictions);
    assert_eq!(
        left.features.keys().collect::<Vec<_>>(),
        right.features.keys().collect::<Vec<_>>()
    );
    for (name, stats) in &left.features {
        let other = &right.features[name];
        assert_eq!(stats.categories, other.categories);
        assert_eq!(stats.numeric.count, other.numeric.count);
        if stats.numeric.count > 0 {
            assert!(close(stats.numeric.mean, other.numeric.mean), "{name} mean");
            assert!(close(stats.numeric.m2, other.numeric.m2), "{name} m2");
            assert_eq!(stats.numeric.min, other.numeric.min);
            assert_eq!(stats.numeric.max, other.numeric.max);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn incremental_equals_merged_parts(events in prop::collection::vec(event_strategy(), 0..200), cut in 0usize..200) {
        let cut = cut.min(events.len());
        let whole = bucket_of(&events);
        let mut merged = bucket_of(&events[..cut]);
        merged.merge(&bucket_of(&events[cut..]));
        assert_same(&whole, &merged);
    }

    #[test]
    fn merging_is_associative_and_commutative(
        a in prop::collection::vec(event_strategy(), 0..60),
        b in prop::collection::vec(event_strategy(), 0..60),
        c in prop::collection::vec(event_strategy(), 0..60),
    ) {
        let (a, b, c) = (bucket_of(&a), bucket_of(&b), bucket_of(&c));
        let mut left = a.clone();
        left.merge(&b);
        left.merge(&c);
        let mut right_inner = b.clone();
        right_inner.merge(&c);
        let mut right = a.clone();
        right.merge(&right_inner);
        assert_same(&left, &right);
        let mut swapped = c.clone();
        swapped.merge(&a);
        swapped.merge(&b);
        assert_same(&left, &swapped);
    }

    /// A window is exactly the events whose minute starts inside it, and N
    /// shards merged equal one instance.
    #[test]
    fn windows_and_shards_equal_direct_computation(
        events in prop::collection::vec(event_strategy(), 1..300),
        shard_count in 1usize..4,
        window_start in 0i64..(3 * HOUR_MS),
        window_length in 1i64..(3 * HOUR_MS),
    ) {
        // Retention long enough that every event stays in its minute bucket.
        let config = AggregationConfig { minute_retention_ms: 24 * HOUR_MS, ..AggregationConfig::default() };
        let mut single = Aggregates::new(config.clone());
        let mut shards: Vec<Aggregates> = (0..shard_count).map(|_| Aggregates::new(config.clone())).collect();
        for (index, event) in events.iter().enumerate() {
            for aggregates in [&mut single, &mut shards[index % shard_count]] {
                let mut changes = Changes::default();
                prop_assert!(aggregates.check(event, &mut PendingModels::default()).is_ok());
                aggregates.apply(event, &mut changes);
                aggregates.maintain(&mut changes);
            }
        }
        let base = 1_764_000_000_000;
        let window = Window { start_ms: base + window_start, end_ms: base + window_start + window_length };
        let in_window: Vec<PredictionEvent> = events
            .iter()
            .filter(|event| window.holds_bucket(event.timestamp_ms.div_euclid(MINUTE_MS) * MINUTE_MS))
            .cloned()
            .collect();
        let got = single.window("m", None, window).unwrap();
        assert_same(&got, &bucket_of(&in_window));
        let mut from_shards = Bucket::default();
        for shard in &shards {
            if let Some(bucket) = shard.window("m", None, window) {
                from_shards.merge(&bucket);
            }
        }
        assert_same(&got, &from_shards);
        let v1: Vec<PredictionEvent> = in_window.iter().filter(|event| event.version == "v1").cloned().collect();
        assert_same(&single.window("m", Some("v1"), window).unwrap(), &bucket_of(&v1));
        let lifetime: u64 = single.models["m"].versions.values().map(|series| series.totals.requests).sum();
        prop_assert_eq!(lifetime, events.len() as u64);
    }
}

#[test]
fn minute_buckets_roll_into_hours_past_the_horizon() {
    let config = AggregationConfig {
        minute_retention_ms: 10 * MINUTE_MS,
        ..AggregationConfig::default()
    };
    let mut aggregates = Aggregates::new(config);
    let base = 1_764_000_000_000 - 1_764_000_000_000 % HOUR_MS;
    let mut event = PredictionEvent {
        prediction_id: "a".into(),
        model: "m".into(),
        version: "v1".into(),
        timestamp_ms: base + MINUTE_MS,
        latency_seconds: Some(0.1),
        status: Status::Ok,
        prediction: Some(Prediction::Class("1".into())),
        confidence: Some(0.9),
        probabilities: Vec::new(),
        features: Vec::new(),
        segments: Vec::new(),
    };
    let mut changes = Changes::default();
    aggregates.apply(&event, &mut changes);
    event.timestamp_ms = base + 50 * MINUTE_MS;
    aggregates.apply(&event, &mut changes);
    aggregates.maintain(&mut changes);
    let series = &aggregates.models["m"].versions["v1"];
    assert_eq!(series.minutes.len(), 1, "the newest minute stays a minute");
    assert_eq!(series.hours.len(), 1, "the old minute rolled into its hour");
    assert_eq!(series.hours[&base].counters.requests, 1);
    assert!(changes.deletes.iter().any(|key| key.start_ms == base + MINUTE_MS));
    // A late event older than the horizon goes straight to its hour.
    event.timestamp_ms = base + 2 * MINUTE_MS;
    aggregates.apply(&event, &mut changes);
    assert_eq!(
        aggregates.models["m"].versions["v1"].hours[&base]
            .counters
            .requests,
        2
    );
}

fn assert_same_counters(
    left: &modelwatch_core::aggregate::Counters,
    right: &modelwatch_core::aggregate::Counters,
) {
    let left_bucket = Bucket {
        counters: left.clone(),
        ..Bucket::default()
    };
    let right_bucket = Bucket {
        counters: right.clone(),
        ..Bucket::default()
    };
    assert_same(&left_bucket, &right_bucket);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(100))]

    /// Aggregating a request off the writer thread and merging it equals
    /// applying its events one by one, buckets, rollups and folding included.
    #[test]
    fn merging_request_deltas_equals_applying_events(
        events in prop::collection::vec(event_strategy(), 1..300),
        group_sizes in prop::collection::vec(1usize..60, 1..20),
        minute_retention_minutes in 5i64..200,
    ) {
        let config = AggregationConfig {
            minute_retention_ms: minute_retention_minutes * MINUTE_MS,
            ..AggregationConfig::default()
        };
        let mut one_by_one = Aggregates::new(config.clone());
        let mut by_delta = Aggregates::new(config);
        let mut remaining = &events[..];
        let mut sizes = group_sizes.iter().cycle();
        let mut persisted_one_by_one = std::collections::BTreeSet::new();
        let mut persisted_by_delta = std::collections::BTreeSet::new();
        while !remaining.is_empty() {
            let size = (*sizes.next().unwrap()).min(remaining.len());
            let (group, rest) = remaining.split_at(size);
            remaining = rest;
            let mut changes = Changes::default();
            for event in group {
                one_by_one.apply(event, &mut changes);
            }
            one_by_one.maintain(&mut changes);
            let mut delta = modelwatch_core::series::Delta::default();
            group.iter().for_each(|event| delta.observe(event));
            let mut delta_changes = Changes::default();
            by_delta.merge_delta(&delta, &mut delta_changes);
            by_delta.maintain(&mut delta_changes);
            // What the store holds after each group is the same either way
            // (a delta may skip a minute bucket that the one-by-one path
            // creates and rolls up within the same group).
            for (persisted, changes) in [(&mut persisted_one_by_one, &changes), (&mut persisted_by_delta, &delta_changes)] {
                persisted.extend(changes.upserts.iter().cloned());
                changes.deletes.iter().for_each(|key| { persisted.remove(key); });
                // Drift rows live in their own table: tag their keys apart.
                let drift_row = |key: &BucketKey| BucketKey { version: format!("{}#drift", key.version), ..key.clone() };
                persisted.extend(changes.drift_upserts.iter().map(drift_row));
                changes.drift_deletes.iter().for_each(|key| { persisted.remove(&drift_row(key)); });
            }
            prop_assert_eq!(&persisted_one_by_one, &persisted_by_delta);
        }
        let (left, right) = (&one_by_one.models["m"], &by_delta.models["m"]);
        prop_assert_eq!(left.kind, right.kind);
        prop_assert_eq!(&left.limits.folded, &right.limits.folded);
        prop_assert_eq!(left.versions.keys().collect::<Vec<_>>(), right.versions.keys().collect::<Vec<_>>());
        for (version, series) in &left.versions {
            let other = &right.versions[version];
            prop_assert_eq!(series.newest_event_ms, other.newest_event_ms);
            assert_same_counters(&series.totals, &other.totals);
            prop_assert_eq!(series.minutes.keys().collect::<Vec<_>>(), other.minutes.keys().collect::<Vec<_>>());
            prop_assert_eq!(series.hours.keys().collect::<Vec<_>>(), other.hours.keys().collect::<Vec<_>>());
            for (start, bucket) in &series.minutes {
                assert_same(bucket, &other.minutes[start]);
            }
            for (start, bucket) in &series.hours {
                assert_same(bucket, &other.hours[start]);
            }
            // Drift summaries too: counts and histograms exactly, moments up
            // to rounding.
            prop_assert_eq!(series.drift.hours().collect::<Vec<_>>(), other.drift.hours().collect::<Vec<_>>());
            for start in series.drift.hours() {
                let (summary, theirs) = (series.drift.get(start).unwrap(), other.drift.get(start).unwrap());
                prop_assert_eq!(summary.rows, theirs.rows);
                prop_assert_eq!(&summary.classes, &theirs.classes);
                prop_assert_eq!(&summary.categorical, &theirs.categorical);
                prop_assert_eq!(summary.numeric.keys().collect::<Vec<_>>(), theirs.numeric.keys().collect::<Vec<_>>());
                let numbers = summary.numeric.iter().map(|(name, numeric)| (numeric, &theirs.numeric[name]));
                for (mine, theirs) in numbers.chain([(&summary.confidence, &theirs.confidence), (&summary.regression, &theirs.regression)]) {
                    prop_assert_eq!(&mine.histogram, &theirs.histogram);
                    prop_assert_eq!(mine.moments.count, theirs.moments.count);
                    prop_assert!((mine.moments.mean - theirs.moments.mean).abs() <= 1e-9 * (1.0 + mine.moments.mean.abs()));
                }
            }
        }
    }
}

#[test]
fn deltas_fold_past_limits_and_count_every_folded_occurrence() {
    let config = AggregationConfig {
        limits: modelwatch_core::limits::CardinalityLimits {
            max_classes_per_model: 2,
            max_categories_per_feature: 1,
            ..Default::default()
        },
        ..AggregationConfig::default()
    };
    let mut aggregates = Aggregates::new(config);
    let mut delta = modelwatch_core::series::Delta::default();
    for i in 0..10 {
        let event = PredictionEvent {
            prediction_id: format!("p{i}"),
            model: "m".into(),
            version: "v1".into(),
            timestamp_ms: 1_764_000_000_000,
            latency_seconds: None,
            status: Status::Ok,
            prediction: Some(Prediction::Class(format!("c{}", i % 5))),
            confidence: None,
            probabilities: Vec::new(),
            features: vec![("country".into(), FeatureValue::Category(format!("k{}", i % 3)))],
            segments: Vec::new(),
        };
        delta.observe(&event);
    }
    aggregates.merge_delta(&delta, &mut Changes::default());
    let model = &aggregates.models["m"];
    let classes = &model.versions["v1"].totals.classes;
    assert_eq!(classes.len(), 3, "two admitted classes and __other__");
    assert_eq!(classes["__other__"].count, 6);
    assert_eq!(model.limits.folded[&modelwatch_core::limits::Dimension::Class], 6);
    let minute = model.versions["v1"].minutes.values().next().unwrap();
    assert_eq!(minute.features["country"].categories["__other__"], 6);
    assert_eq!(
        model.limits.folded[&modelwatch_core::limits::Dimension::Category],
        6
    );
}
