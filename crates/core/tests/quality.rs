//! Properties of the quality aggregates: corrections leave exactly what the
//! final labels give, whatever the order; the persisted quality round-trips;
//! and segments partition the whole.

use std::collections::BTreeMap;

use modelwatch_core::event::{Actual, LabelEvent, Prediction, PredictionEvent, ScoredPrediction, Status};
use modelwatch_core::quality::Sign;
use modelwatch_core::series::{Aggregates, AggregationConfig, BucketKey, Changes, Resolution, Scoring};
use modelwatch_core::time::{HOUR_MS, Window};
use proptest::prelude::*;

const BASE_MS: i64 = 1_764_000_000_000;

fn scored(event: &PredictionEvent) -> ScoredPrediction {
    ScoredPrediction::from(event)
}

fn prediction(id: u32, offset_ms: i64, class: u8, region: u8) -> PredictionEvent {
    PredictionEvent {
        prediction_id: format!("p{id}"),
        model: "m".into(),
        version: if id.is_multiple_of(2) {
            "v1".into()
        } else {
            "v2".into()
        },
        timestamp_ms: BASE_MS + offset_ms,
        latency_seconds: Some(0.01),
        status: Status::Ok,
        prediction: Some(Prediction::Class(format!("c{class}"))),
        confidence: Some(0.9),
        probabilities: Vec::new(),
        features: Vec::new(),
        segments: vec![("region".into(), format!("r{region}"))],
    }
}

fn label(id: u32, class: u8, revenue: f64) -> LabelEvent {
    LabelEvent {
        prediction_id: format!("p{id}"),
        actual: Actual::Class(format!("c{class}")),
        timestamp_ms: BASE_MS,
        business: vec![("revenue".into(), revenue)],
    }
}

/// Predictions, then a sequence of labels (with repeats: corrections).
fn scenario() -> impl Strategy<Value = (Vec<PredictionEvent>, Vec<(usize, u8, f64)>)> {
    prop::collection::vec((0i64..(10 * HOUR_MS), 0u8..3, 0u8..3), 1..80).prop_flat_map(|specs| {
        let predictions: Vec<PredictionEvent> = specs
            .iter()
            .enumerate()
            .map(|(index, (offset, class, region))| prediction(index as u32, *offset, *class, *region))
            .collect();
        let count = predictions.len();
        let labels = prop::collection::vec((0..count, 0u8..3, 0u32..100), 0..120).prop_map(|labels| {
            labels
                .into_iter()
                .map(|(index, class, revenue)| (index, class, f64::from(revenue) / 4.0))
                .collect::<Vec<_>>()
        });
        (Just(predictions), labels)
    })
}

fn aggregates_of(predictions: &[PredictionEvent]) -> Aggregates {
    let mut aggregates = Aggregates::new(AggregationConfig {
        minute_retention_ms: 3 * HOUR_MS,
        ..AggregationConfig::default()
    });
    let mut changes = Changes::default();
    for event in predictions {
        aggregates.apply(event, &mut changes);
    }
    aggregates.maintain(&mut changes);
    aggregates
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Applying labels as the writer does (a correction retracts the stored
    /// label and adds the new one) leaves every bucket as if only the final
    /// label of each prediction had ever been applied.
    #[test]
    fn corrections_leave_what_the_final_labels_give((predictions, labels) in scenario()) {
        let mut incremental = aggregates_of(&predictions);
        let mut stored: BTreeMap<usize, LabelEvent> = BTreeMap::new();
        let mut changes = Changes::default();
        for (index, class, revenue) in &labels {
            let new = label(*index as u32, *class, *revenue);
            if let Some(old) = stored.get(index) {
                if old.same_content(&new) {
                    continue;
                }
                incremental.apply_label(&scored(&predictions[*index]), old, Sign::Retract, &mut changes);
            }
            let scoring = incremental.apply_label(&scored(&predictions[*index]), &new, Sign::Add, &mut changes);
            prop_assert_eq!(scoring, Scoring::Scored);
            stored.insert(*index, new);
        }
        let mut direct = aggregates_of(&predictions);
        let mut direct_changes = Changes::default();
        for (index, final_label) in &stored {
            direct.apply_label(&scored(&predictions[*index]), final_label, Sign::Add, &mut direct_changes);
        }
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * (1.0 + a.abs().max(b.abs()));
        for (version, series) in &direct.models["m"].versions {
            let other = &incremental.models["m"].versions[version];
            for (start, bucket) in series.minutes.iter().chain(&series.hours) {
                let theirs = other.minutes.get(start).or_else(|| other.hours.get(start)).unwrap();
                let (mine, theirs) = (&bucket.quality, &theirs.quality);
                prop_assert_eq!(mine.all.labeled, theirs.all.labeled);
                prop_assert_eq!(&mine.all.confusion, &theirs.all.confusion);
                prop_assert_eq!(mine.segments.keys().collect::<Vec<_>>(), theirs.segments.keys().collect::<Vec<_>>());
                for (name, sum) in &mine.all.business {
                    prop_assert!(close(*sum, theirs.all.business.get(name).copied().unwrap_or(0.0)));
                }
                for (key, values) in &mine.segments {
                    for (value, quality) in values {
                        let other = &theirs.segments[key][value];
                        prop_assert_eq!(&quality.confusion, &other.confusion);
                    }
                }
            }
            // Lifetime counters: applied minus retracted is the final labels.
            let net = |counters: &modelwatch_core::quality::LabelCounters| {
                let mut net: BTreeMap<(String, String), i64> = BTreeMap::new();
                for (sign, counts) in [(1, &counters.applied), (-1, &counters.retracted)] {
                    for (predicted, row) in counts {
                        for (actual, count) in row {
                            *net.entry((predicted.clone(), actual.clone())).or_default() += sign * *count as i64;
                        }
                    }
                }
                net.retain(|_, count| *count != 0);
                net
            };
            prop_assert_eq!(net(&series.labels), net(&other.labels));
        }
    }

    /// The quality of a segment key's values sums to the whole, and the
    /// window query agrees with a direct count.
    #[test]
    fn segments_partition_the_window((predictions, labels) in scenario()) {
        let mut aggregates = aggregates_of(&predictions);
        let mut changes = Changes::default();
        let mut latest: BTreeMap<usize, (u8, f64)> = BTreeMap::new();
        for (index, class, revenue) in &labels {
            if let Some((old_class, old_revenue)) = latest.get(index) {
                let old = label(*index as u32, *old_class, *old_revenue);
                aggregates.apply_label(&scored(&predictions[*index]), &old, Sign::Retract, &mut changes);
            }
            aggregates.apply_label(&scored(&predictions[*index]), &label(*index as u32, *class, *revenue), Sign::Add, &mut changes);
            latest.insert(*index, (*class, *revenue));
        }
        let window = Window::ending_at(BASE_MS + 11 * HOUR_MS, 12 * HOUR_MS);
        let (predicted, whole) = aggregates.quality_window("m", None, None, window).unwrap();
        prop_assert_eq!(predicted, predictions.len() as u64);
        prop_assert_eq!(whole.labeled, latest.len() as u64);
        let mut by_region = 0;
        let mut predicted_by_region = 0;
        for region in 0..3 {
            let value = format!("r{region}");
            let (predictions_in, quality) = aggregates
                .quality_window("m", None, Some(("region", &value)), window)
                .unwrap();
            by_region += quality.labeled;
            predicted_by_region += predictions_in;
            let expected = latest
                .keys()
                .filter(|index| predictions[**index].segments[0].1 == value)
                .count() as u64;
            prop_assert_eq!(quality.labeled, expected);
        }
        prop_assert_eq!(by_region, whole.labeled);
        prop_assert_eq!(predicted_by_region, predicted);
        let correct = latest
            .iter()
            .filter(|(index, (class, _))| predictions[**index].prediction == Some(Prediction::Class(format!("c{class}"))))
            .count();
        if let Some(report) = whole.classification() {
            prop_assert!((report.accuracy - correct as f64 / latest.len() as f64).abs() < 1e-12);
        }
    }
}

/// The quality part persists on its own and restores into the buckets,
/// whichever part is loaded first.
#[test]
fn quality_round_trips_through_its_persisted_form() {
    let predictions: Vec<PredictionEvent> = (0..40)
        .map(|id| prediction(id, i64::from(id) * 20 * 60_000, (id % 3) as u8, (id % 2) as u8))
        .collect();
    let mut aggregates = aggregates_of(&predictions);
    let mut changes = Changes::default();
    for id in (0..40).step_by(3) {
        aggregates.apply_label(
            &scored(&predictions[id as usize]),
            &label(id, (id % 2) as u8, 1.5),
            Sign::Add,
            &mut changes,
        );
    }
    assert!(
        changes
            .quality_upserts
            .iter()
            .any(|key| key.resolution == Resolution::Hour)
    );
    assert!(
        changes
            .quality_upserts
            .iter()
            .any(|key| key.resolution == Resolution::Lifetime)
    );
    let mut keys: Vec<BucketKey> = Vec::new();
    for (version, series) in &aggregates.models["m"].versions {
        for (resolution, buckets) in [
            (Resolution::Minute, &series.minutes),
            (Resolution::Hour, &series.hours),
        ] {
            keys.extend(buckets.keys().map(|start| BucketKey {
                model: "m".into(),
                version: version.clone(),
                resolution,
                start_ms: *start,
            }));
        }
        keys.push(BucketKey {
            model: "m".into(),
            version: version.clone(),
            resolution: Resolution::Lifetime,
            start_ms: 0,
        });
    }
    // Quality first, then the prediction parts.
    let mut restored = Aggregates::new(aggregates.config.clone());
    for key in &keys {
        restored
            .restore_quality(key.clone(), &aggregates.encode_quality(key).unwrap())
            .unwrap();
    }
    for key in &keys {
        restored
            .restore(key.clone(), &aggregates.encode(key).unwrap())
            .unwrap();
    }
    let window = Window::ending_at(BASE_MS + 20 * HOUR_MS, 30 * HOUR_MS);
    let original = aggregates.quality_window("m", None, None, window).unwrap();
    let back = restored.quality_window("m", None, None, window).unwrap();
    assert_eq!(original, back);
    assert!(original.1.labeled > 0);
    for (version, series) in &aggregates.models["m"].versions {
        assert_eq!(series.labels, restored.models["m"].versions[version].labels);
    }
}

#[test]
fn labels_of_failed_predictions_and_text_for_regression_are_unscorable() {
    let mut failed = prediction(1, 0, 0, 0);
    failed.status = Status::Timeout;
    failed.prediction = None;
    let mut regression = prediction(2, 0, 0, 0);
    regression.model = "r".into();
    regression.prediction = Some(Prediction::Value(3.0));
    regression.confidence = None;
    let mut aggregates = aggregates_of(&[failed.clone(), regression.clone()]);
    let mut changes = Changes::default();
    assert_eq!(
        aggregates.apply_label(&scored(&failed), &label(1, 0, 0.0), Sign::Add, &mut changes),
        Scoring::Unscorable
    );
    let text = LabelEvent {
        actual: Actual::Class("high".into()),
        ..label(2, 0, 0.0)
    };
    assert_eq!(
        aggregates.apply_label(&scored(&regression), &text, Sign::Add, &mut changes),
        Scoring::Unscorable
    );
    let number = LabelEvent {
        actual: Actual::Value(5.0),
        ..label(2, 0, 0.0)
    };
    assert_eq!(
        aggregates.apply_label(&scored(&regression), &number, Sign::Add, &mut changes),
        Scoring::Scored
    );
    let window = Window::ending_at(BASE_MS + HOUR_MS, 2 * HOUR_MS);
    let (_, quality) = aggregates.quality_window("r", None, None, window).unwrap();
    let report = quality.regression().unwrap();
    assert_eq!((report.mae, report.rmse), (2.0, 2.0));
    assert!((report.mape - 0.4).abs() < 1e-15);
}
