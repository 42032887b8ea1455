//! `GET /v1/models/{model}/timeseries`: a window cut into steps, with the
//! operational and quality figures of each step, for charts.
//!
//! Each point is the merge of the buckets that start inside it, as a window
//! query is, so that the points of a window add up to the window (requests,
//! errors, labels). A point is never finer than the buckets it reads: where
//! the window reaches hour buckets (past `aggregation.minute_retention`), a
//! step shorter than an hour widens to the hour, and rates are taken over
//! each point's own length.

use std::collections::{BTreeMap, BTreeSet};

use axum::Json;
use axum::extract::{Path, Query, State};
use modelwatch_core::aggregate::Counters;
use modelwatch_core::quality::Quality;
use modelwatch_core::series::{Aggregates, ModelKind};
use modelwatch_core::stats::QuantileSketch;
use modelwatch_core::time::{HOUR_MS, MINUTE_MS, Window, bucket_start, parse_duration_ms};
use serde::{Deserialize, Serialize};

use crate::App;
use crate::alerts::window_text;
use crate::error::{ApiError, ErrorCode};
use crate::query_api::{format_time, known_model, known_version, parse_end};

/// The default step is the shortest of these that cuts the window into at
/// most [`TARGET_POINTS`] points.
const STEP_LADDER_MS: [i64; 13] = [
    MINUTE_MS,
    2 * MINUTE_MS,
    5 * MINUTE_MS,
    10 * MINUTE_MS,
    15 * MINUTE_MS,
    30 * MINUTE_MS,
    HOUR_MS,
    2 * HOUR_MS,
    3 * HOUR_MS,
    6 * HOUR_MS,
    12 * HOUR_MS,
    24 * HOUR_MS,
    7 * 24 * HOUR_MS,
];
/// About what a chart a few hundred pixels wide can show.
const TARGET_POINTS: i64 = 120;
/// Past this many points, an explicit `step` is refused.
const MAX_POINTS: i64 = 1000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TimeseriesParams {
    window: Option<String>,
    end: Option<String>,
    version: Option<String>,
    step: Option<String>,
}

#[derive(Serialize)]
pub(crate) struct LatencyQuantiles {
    p50: Option<f64>,
    p95: Option<f64>,
    p99: Option<f64>,
}

/// The figures of one step.
#[derive(Serialize)]
pub(crate) struct Point {
    start: String,
    /// The point's length: the step, shorter at the window's start, an hour
    /// where it reads hour buckets.
    seconds: f64,
    requests: u64,
    requests_per_second: f64,
    /// Failed requests (errors and timeouts) over requests.
    error_rate: Option<f64>,
    timeout_rate: Option<f64>,
    latency_seconds: LatencyQuantiles,
    /// Predictions per predicted class.
    classes: BTreeMap<String, u64>,
    /// Predictions a label can score (successful ones).
    predictions: u64,
    /// Those of them labeled so far.
    labeled: u64,
    label_coverage: Option<f64>,
    /// Classifiers: null until a label arrives.
    accuracy: Option<f64>,
    macro_f1: Option<f64>,
    /// Regression models: null until a label arrives.
    mae: Option<f64>,
    rmse: Option<f64>,
}

#[derive(Serialize)]
pub(crate) struct Timeseries {
    model: String,
    version: Option<String>,
    kind: Option<&'static str>,
    window: String,
    start: String,
    end: String,
    step: String,
    /// Every class predicted in the window, so that a chart knows its series.
    classes: Vec<String>,
    points: Vec<Point>,
}

/// What is merged into a point.
#[derive(Default)]
struct Accumulator {
    counters: Counters,
    latency: QuantileSketch,
    predictions: u64,
    quality: Quality,
}

pub(crate) async fn timeseries(
    State(app): State<App>,
    Path(model): Path<String>,
    Query(params): Query<TimeseriesParams>,
) -> Result<Json<Timeseries>, ApiError> {
    let window_text_given = params.window.clone().unwrap_or_else(|| "1h".to_owned());
    let length_ms = parse_duration_ms(&window_text_given).map_err(|error| {
        ApiError::new(ErrorCode::InvalidParameter, error.to_string()).with_field("window")
    })?;
    let end_ms = match &params.end {
        Some(end) => parse_end(end)?,
        None => app.shared.clock.now_ms(),
    };
    let window = Window::ending_at(end_ms, length_ms);
    let step_ms = match &params.step {
        None => default_step_ms(length_ms),
        Some(text) => explicit_step_ms(text, length_ms)?,
    };
    // Merging up to a few thousand buckets: off the async threads.
    tokio::task::spawn_blocking(move || {
        let aggregates = app.shared.aggregates.read().expect("aggregates lock");
        known_model(&aggregates, &model)?;
        known_version(&aggregates, &model, params.version.as_deref())?;
        Ok(Json(build(
            &aggregates,
            &model,
            params.version,
            window,
            window_text_given.trim().to_owned(),
            step_ms,
        )))
    })
    .await
    .map_err(|error| {
        ApiError::new(
            ErrorCode::StorageUnavailable,
            format!("query task failed: {error}"),
        )
    })?
}

fn default_step_ms(length_ms: i64) -> i64 {
    STEP_LADDER_MS
        .iter()
        .copied()
        .find(|step| (length_ms + step - 1) / step <= TARGET_POINTS)
        .unwrap_or(STEP_LADDER_MS[STEP_LADDER_MS.len() - 1])
}

/// A step must line up with buckets: whole minutes that divide an hour, or
/// whole hours.
fn explicit_step_ms(text: &str, length_ms: i64) -> Result<i64, ApiError> {
    let invalid = |message: String| ApiError::new(ErrorCode::InvalidParameter, message).with_field("step");
    let step_ms = parse_duration_ms(text).map_err(|error| invalid(error.to_string()))?;
    let aligned = step_ms % MINUTE_MS == 0 && (HOUR_MS % step_ms == 0 || step_ms % HOUR_MS == 0);
    if !aligned {
        return Err(invalid(format!(
            "step {text:?} must be whole minutes that divide an hour (1m, 5m, 15m…) or whole hours"
        )));
    }
    if (length_ms + step_ms - 1) / step_ms > MAX_POINTS {
        return Err(invalid(format!(
            "step {text:?} cuts the window into more than {MAX_POINTS} points"
        )));
    }
    Ok(step_ms)
}

fn build(
    aggregates: &Aggregates,
    model: &str,
    version: Option<String>,
    window: Window,
    window_text_given: String,
    step_ms: i64,
) -> Timeseries {
    let state = &aggregates.models[model];
    let selected: Vec<_> = state
        .versions
        .iter()
        .filter(|(name, _)| version.as_ref().is_none_or(|wanted| wanted == *name))
        .map(|(_, series)| series)
        .collect();
    // Hour buckets are older than minute buckets within a series; up to the
    // end of the newest hour bucket, points are at least an hour long.
    let coarse_until = selected
        .iter()
        .filter_map(|series| series.hours.range(window.start_ms..window.end_ms).next_back())
        .map(|(start, _)| start + HOUR_MS)
        .max()
        .unwrap_or(window.start_ms);
    let starts = point_starts(window, step_ms, coarse_until);
    let mut accumulators: Vec<Accumulator> = starts.iter().map(|_| Accumulator::default()).collect();
    for series in &selected {
        let buckets = series
            .minutes
            .range(window.start_ms..window.end_ms)
            .chain(series.hours.range(window.start_ms..window.end_ms));
        for (bucket_start_ms, bucket) in buckets {
            // The last point that starts at or before the bucket.
            let index = starts.partition_point(|start| start <= bucket_start_ms) - 1;
            let accumulator = &mut accumulators[index];
            accumulator.counters.merge(&bucket.counters);
            accumulator.latency.merge(&bucket.latency_sketch);
            accumulator.predictions += bucket.labelable_predictions();
            if let Some(quality) = bucket.quality.of_segment(None) {
                accumulator.quality.merge(quality);
            }
        }
    }
    let mut classes = BTreeSet::new();
    let points = accumulators
        .into_iter()
        .enumerate()
        .map(|(index, accumulator)| {
            let start_ms = starts[index];
            let end_ms = starts.get(index + 1).copied().unwrap_or(window.end_ms);
            classes.extend(accumulator.counters.classes.keys().cloned());
            point(start_ms, end_ms, accumulator)
        })
        .collect();
    Timeseries {
        model: model.to_owned(),
        version,
        kind: state.kind.map(ModelKind::as_str),
        window: window_text_given,
        start: format_time(window.start_ms),
        end: format_time(window.end_ms),
        step: window_text(step_ms),
        classes: classes.into_iter().collect(),
        points,
    }
}

/// The start of every point: the window's start, then each step boundary
/// (each hour boundary before `coarse_until`).
fn point_starts(window: Window, step_ms: i64, coarse_until: i64) -> Vec<i64> {
    let mut starts = Vec::new();
    let mut start = window.start_ms;
    while start < window.end_ms {
        starts.push(start);
        let width = if start < coarse_until {
            step_ms.max(HOUR_MS)
        } else {
            step_ms
        };
        start = bucket_start(start, width) + width;
    }
    starts
}

fn point(start_ms: i64, end_ms: i64, accumulator: Accumulator) -> Point {
    let Accumulator {
        counters,
        latency,
        predictions,
        quality,
    } = accumulator;
    let seconds = (end_ms - start_ms) as f64 / 1000.0;
    let ratio = |part: u64, whole: u64| (whole > 0).then(|| part as f64 / whole as f64);
    let classification = quality.classification();
    let regression = quality.regression();
    Point {
        start: format_time(start_ms),
        seconds,
        requests: counters.requests,
        requests_per_second: counters.requests as f64 / seconds,
        error_rate: ratio(counters.errors(), counters.requests),
        timeout_rate: ratio(counters.timeouts(), counters.requests),
        latency_seconds: LatencyQuantiles {
            p50: latency.quantile(0.5),
            p95: latency.quantile(0.95),
            p99: latency.quantile(0.99),
        },
        classes: counters
            .classes
            .iter()
            .map(|(name, class)| (name.clone(), class.count))
            .collect(),
        predictions,
        labeled: quality.labeled,
        label_coverage: ratio(quality.labeled, predictions),
        accuracy: classification.as_ref().map(|report| report.accuracy),
        macro_f1: classification.as_ref().map(|report| report.macro_average.f1),
        mae: regression.as_ref().map(|report| report.mae),
        rmse: regression.as_ref().map(|report| report.rmse),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_steps_give_at_most_120_points() {
        for (window, step) in [
            ("1h", "1m"),
            ("24h", "15m"),
            ("7d", "2h"),
            ("30d", "6h"),
            ("5m", "1m"),
        ] {
            let length_ms = parse_duration_ms(window).unwrap();
            assert_eq!(window_text(default_step_ms(length_ms)), step, "{window}");
        }
    }

    #[test]
    fn points_follow_the_step_then_widen_to_hours_over_hour_buckets() {
        let window = Window {
            start_ms: 10 * HOUR_MS + 7 * MINUTE_MS,
            end_ms: 13 * HOUR_MS + 20 * MINUTE_MS,
        };
        // Only minute buckets: the first point is cut at the window's start.
        let starts = point_starts(window, 30 * MINUTE_MS, window.start_ms);
        assert_eq!(starts.len(), 7);
        assert_eq!(starts[0], window.start_ms);
        assert_eq!(starts[1], 10 * HOUR_MS + 30 * MINUTE_MS);
        assert_eq!(starts[6], 13 * HOUR_MS);
        // Hour buckets up to 12:00: hours, then 30 minutes.
        let starts = point_starts(window, 30 * MINUTE_MS, 12 * HOUR_MS);
        let expected: Vec<i64> = vec![
            window.start_ms,
            11 * HOUR_MS,
            12 * HOUR_MS,
            12 * HOUR_MS + 30 * MINUTE_MS,
            13 * HOUR_MS,
        ];
        assert_eq!(starts, expected);
    }

    fn event(
        id: &str,
        timestamp_ms: i64,
        status: modelwatch_core::event::Status,
    ) -> modelwatch_core::event::PredictionEvent {
        modelwatch_core::event::PredictionEvent {
            prediction_id: id.to_owned(),
            model: "m".to_owned(),
            version: "v1".to_owned(),
            timestamp_ms,
            latency_seconds: Some(0.1),
            status,
            prediction: Some(modelwatch_core::event::Prediction::Class("a".to_owned())),
            confidence: Some(0.9),
            probabilities: Vec::new(),
            features: Vec::new(),
            segments: Vec::new(),
        }
    }

    #[test]
    fn points_add_up_to_the_window_and_hour_buckets_make_hour_points() {
        use modelwatch_core::event::Status;
        let newest = 1_764_000_000_000 - 1_764_000_000_000 % HOUR_MS + 30 * MINUTE_MS;
        let mut aggregates = Aggregates::default();
        let mut changes = modelwatch_core::series::Changes::default();
        // The newest event first: the older ones, past the 6h of minute
        // buckets, go straight into hour buckets.
        for (id, timestamp_ms, status) in [
            ("new", newest, Status::Ok),
            ("recent", newest - 20 * MINUTE_MS, Status::Timeout),
            ("old-1", newest - 10 * HOUR_MS, Status::Ok),
            ("old-2", newest - 10 * HOUR_MS + 20 * MINUTE_MS, Status::Ok),
        ] {
            aggregates.apply(&event(id, timestamp_ms, status), &mut changes);
        }
        let window = Window::ending_at(newest + MINUTE_MS, 24 * HOUR_MS);
        let series = build(
            &aggregates,
            "m",
            None,
            window,
            "24h".to_owned(),
            default_step_ms(24 * HOUR_MS),
        );
        assert_eq!(series.step, "15m");
        assert_eq!(series.points.iter().map(|point| point.requests).sum::<u64>(), 4);
        let old_hour = format_time(bucket_start(newest - 10 * HOUR_MS, HOUR_MS));
        let old = series
            .points
            .iter()
            .find(|point| point.start == old_hour)
            .unwrap();
        assert_eq!((old.requests, old.seconds), (2, 3600.0));
        assert_eq!(old.requests_per_second, 2.0 / 3600.0);
        // After the last hour bucket, points are 15 minutes long.
        let recent = series
            .points
            .iter()
            .find(|point| point.requests == 1 && point.timeout_rate == Some(1.0));
        assert_eq!(recent.map(|point| point.seconds), Some(900.0));
        assert!(series.points.len() <= 120, "{}", series.points.len());
        assert_eq!(series.points.first().unwrap().start, format_time(window.start_ms));
    }

    #[test]
    fn explicit_steps_must_line_up_with_buckets() {
        let day = parse_duration_ms("1d").unwrap();
        assert_eq!(explicit_step_ms("5m", day).unwrap(), 5 * MINUTE_MS);
        assert_eq!(explicit_step_ms("2h", day).unwrap(), 2 * HOUR_MS);
        assert!(explicit_step_ms("7m", day).is_err());
        assert!(explicit_step_ms("90m", day).is_err());
        assert!(explicit_step_ms("30s", day).is_err());
        // 1d in 1m steps is 1440 points.
        assert!(explicit_step_ms("1m", day).is_err());
    }
}
