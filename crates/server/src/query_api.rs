//! The read API under `/v1/models`: windows of the aggregates, as JSON.
//! The answer types here are the wire format; they are built from core
//! aggregates and never stored.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use modelwatch_core::aggregate::Bucket;
use modelwatch_core::quality::{
    AveragedScores, ClassScores, ClassificationReport, ConfusionMatrix, Quality, RegressionReport,
};
use modelwatch_core::series::{Aggregates, ModelKind};
use modelwatch_core::stats::CONFIDENCE_BUCKETS;
use modelwatch_core::time::{Window, parse_duration_ms};
use serde::{Deserialize, Serialize};

use crate::App;
use crate::error::{ApiError, ErrorCode};

/// Confidence at or below this is "low" (a bound of the seed's buckets).
pub const LOW_CONFIDENCE_THRESHOLD: f64 = 0.6;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowParams {
    pub(crate) window: Option<String>,
    pub(crate) end: Option<String>,
    pub(crate) version: Option<String>,
    top: Option<usize>,
}

/// A resolved query window.
pub(crate) struct Resolved {
    pub(crate) window: Window,
    pub(crate) window_text: String,
    pub(crate) version: Option<String>,
}

pub(crate) fn format_time(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|timestamp| timestamp.to_string())
        .unwrap_or_else(|_| ms.to_string())
}

pub(crate) fn parse_end(text: &str) -> Result<i64, ApiError> {
    let invalid = || {
        ApiError::new(
            ErrorCode::InvalidParameter,
            format!("end {text:?} is neither an RFC 3339 time nor Unix seconds"),
        )
        .with_field("end")
    };
    if let Ok(seconds) = text.parse::<f64>() {
        if !seconds.is_finite() {
            return Err(invalid());
        }
        return Ok((seconds * 1000.0).round() as i64);
    }
    text.parse::<jiff::Timestamp>()
        .map(|timestamp| timestamp.as_millisecond())
        .map_err(|_| invalid())
}

pub(crate) fn resolve(
    params: &WindowParams,
    default_window: &str,
    now_ms: i64,
) -> Result<Resolved, ApiError> {
    let window_text = params.window.clone().unwrap_or_else(|| default_window.to_owned());
    let length_ms = parse_duration_ms(&window_text).map_err(|error| {
        ApiError::new(ErrorCode::InvalidParameter, error.to_string()).with_field("window")
    })?;
    let end_ms = match &params.end {
        Some(end) => parse_end(end)?,
        None => now_ms,
    };
    Ok(Resolved {
        window: Window::ending_at(end_ms, length_ms),
        // Echoed as written (`7d` stays `7d`).
        window_text: window_text.trim().to_owned(),
        version: params.version.clone(),
    })
}

fn window_bucket(app: &App, model: &str, resolved: &Resolved) -> Result<Bucket, ApiError> {
    let aggregates = app.shared.aggregates.read().expect("aggregates lock");
    known_model(&aggregates, model)?;
    if let Some(version) = &resolved.version
        && !aggregates.models[model].versions.contains_key(version)
    {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            format!("model {model} has no version {version:?}"),
        )
        .with_field("version"));
    }
    Ok(aggregates
        .window(model, resolved.version.as_deref(), resolved.window)
        .unwrap_or_default())
}

pub(crate) fn known_model(aggregates: &Aggregates, model: &str) -> Result<(), ApiError> {
    if aggregates.models.contains_key(model) {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::UnknownModel,
            format!("no events were ever received for model {model:?}"),
        )
        .with_field("model"))
    }
}

fn ratio(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

#[derive(Serialize)]
pub struct WindowInfo {
    model: String,
    version: Option<String>,
    window: String,
    start: String,
    end: String,
}

impl WindowInfo {
    fn new(model: &str, resolved: &Resolved) -> Self {
        Self {
            model: model.to_owned(),
            version: resolved.version.clone(),
            window: resolved.window_text.clone(),
            start: format_time(resolved.window.start_ms),
            end: format_time(resolved.window.end_ms),
        }
    }
}

#[derive(Serialize)]
pub struct Quantiles {
    p50: Option<f64>,
    p95: Option<f64>,
    p99: Option<f64>,
    mean: Option<f64>,
}

#[derive(Serialize)]
pub struct Operations {
    #[serde(flatten)]
    info: WindowInfo,
    requests: u64,
    requests_per_second: f64,
    /// Failed requests (errors and timeouts) over requests, as the seed's
    /// PromQL error rate.
    error_rate: Option<f64>,
    timeout_rate: Option<f64>,
    errors_by_type: BTreeMap<String, u64>,
    latency_seconds: Quantiles,
}

pub(crate) async fn operations(
    State(app): State<App>,
    Path(model): Path<String>,
    Query(params): Query<WindowParams>,
) -> Result<Json<Operations>, ApiError> {
    let resolved = resolve(&params, "5m", app.shared.clock.now_ms())?;
    let bucket = window_bucket(&app, &model, &resolved)?;
    let counters = &bucket.counters;
    let latency_count = bucket.latency_sketch.count();
    Ok(Json(Operations {
        info: WindowInfo::new(&model, &resolved),
        requests: counters.requests,
        requests_per_second: counters.requests as f64 / (resolved.window.length_ms() as f64 / 1000.0),
        error_rate: ratio(counters.errors(), counters.requests),
        timeout_rate: ratio(counters.timeouts(), counters.requests),
        errors_by_type: counters.errors_by_type.clone(),
        latency_seconds: Quantiles {
            p50: bucket.latency_sketch.quantile(0.5),
            p95: bucket.latency_sketch.quantile(0.95),
            p99: bucket.latency_sketch.quantile(0.99),
            mean: (latency_count > 0).then(|| counters.latency.sum / latency_count as f64),
        },
    }))
}

#[derive(Serialize)]
pub struct ClassSummary {
    count: u64,
    share: f64,
    mean_confidence: Option<f64>,
}

#[derive(Serialize)]
pub struct ConfidenceBucket {
    le: f64,
    count: u64,
}

#[derive(Serialize)]
pub struct ConfidenceSummary {
    count: u64,
    mean: Option<f64>,
    p10: Option<f64>,
    p25: Option<f64>,
    p50: Option<f64>,
    /// Share of predictions with confidence <= 0.6.
    low_confidence_share: Option<f64>,
    /// Cumulative counts in the seed's buckets.
    buckets: Vec<ConfidenceBucket>,
}

#[derive(Serialize)]
pub struct RegressionSummary {
    count: u64,
    mean: Option<f64>,
    std: Option<f64>,
    min: Option<f64>,
    max: Option<f64>,
    p50: Option<f64>,
    p95: Option<f64>,
    p99: Option<f64>,
}

#[derive(Serialize)]
pub struct Predictions {
    #[serde(flatten)]
    info: WindowInfo,
    kind: Option<&'static str>,
    requests: u64,
    classes: BTreeMap<String, ClassSummary>,
    confidence: Option<ConfidenceSummary>,
    regression: Option<RegressionSummary>,
}

pub(crate) async fn predictions(
    State(app): State<App>,
    Path(model): Path<String>,
    Query(params): Query<WindowParams>,
) -> Result<Json<Predictions>, ApiError> {
    let resolved = resolve(&params, "1h", app.shared.clock.now_ms())?;
    let bucket = window_bucket(&app, &model, &resolved)?;
    let kind = app.shared.aggregates.read().expect("aggregates lock").models[&model]
        .kind
        .map(|kind| kind.as_str());
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
    Ok(Json(Predictions {
        info: WindowInfo::new(&model, &resolved),
        kind,
        requests: bucket.counters.requests,
        classes,
        confidence,
        regression,
    }))
}

#[derive(Serialize)]
pub struct CategoryCount {
    value: String,
    count: u64,
    share: f64,
}

#[derive(Serialize)]
pub struct FeatureSummary {
    /// Events that gave this feature a value.
    count: u64,
    /// Events with a `features` object that lacked this feature or gave null.
    missing: u64,
    missing_rate: Option<f64>,
    mean: Option<f64>,
    std: Option<f64>,
    min: Option<f64>,
    max: Option<f64>,
    /// Distinct categorical values seen (past the limit, folded into `__other__`).
    distinct: Option<usize>,
    top: Option<Vec<CategoryCount>>,
}

#[derive(Serialize)]
pub struct Features {
    #[serde(flatten)]
    info: WindowInfo,
    /// Events in the window that carried features.
    rows: u64,
    features: BTreeMap<String, FeatureSummary>,
}

pub(crate) async fn features(
    State(app): State<App>,
    Path(model): Path<String>,
    Query(params): Query<WindowParams>,
) -> Result<Json<Features>, ApiError> {
    let resolved = resolve(&params, "1h", app.shared.clock.now_ms())?;
    let top_k = params.top.unwrap_or(10);
    let bucket = window_bucket(&app, &model, &resolved)?;
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
    Ok(Json(Features {
        info: WindowInfo::new(&model, &resolved),
        rows,
        features,
    }))
}

#[derive(Serialize)]
pub struct ModelEntry {
    model: String,
    kind: Option<&'static str>,
    versions: Vec<String>,
    /// Lifetime request count.
    requests: u64,
    last_event: Option<String>,
}

#[derive(Serialize)]
pub struct Models {
    models: Vec<ModelEntry>,
}

pub(crate) async fn models(State(app): State<App>) -> Json<Models> {
    let aggregates = app.shared.aggregates.read().expect("aggregates lock");
    let models = aggregates
        .models
        .iter()
        .map(|(name, model)| ModelEntry {
            model: name.clone(),
            kind: model.kind.map(|kind| kind.as_str()),
            versions: model.versions.keys().cloned().collect(),
            requests: model.versions.values().map(|series| series.totals.requests).sum(),
            last_event: model.newest_event_ms().map(format_time),
        })
        .collect();
    Json(Models { models })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PerformanceParams {
    window: Option<String>,
    end: Option<String>,
    version: Option<String>,
    /// `key:value`: only predictions of that segment.
    segment: Option<String>,
}

#[derive(Serialize)]
pub struct BusinessValue {
    sum: f64,
    /// The sum over the labeled predictions (`sample_size`).
    per_prediction: f64,
}

/// `GET /v1/models/{model}/performance`: quality from the labels joined so
/// far, attributed to the time of their predictions.
#[derive(Serialize)]
pub struct Performance {
    #[serde(flatten)]
    info: WindowInfo,
    segment: Option<String>,
    kind: Option<&'static str>,
    /// Labeled predictions in the window.
    sample_size: u64,
    /// Predictions in the window that a label can score (successful ones).
    predictions: u64,
    label_coverage: f64,
    accuracy: Option<f64>,
    per_class: BTreeMap<String, ClassScores>,
    #[serde(rename = "macro")]
    macro_average: Option<AveragedScores>,
    #[serde(rename = "weighted")]
    weighted_average: Option<AveragedScores>,
    /// Rows are actual classes, columns predicted ones (scikit-learn's
    /// layout); null for regression models.
    confusion_matrix: Option<ConfusionMatrix>,
    /// Regression models only (null until a label arrives); absent for
    /// classifiers.
    #[serde(skip_serializing_if = "Option::is_none")]
    regression: Option<Option<RegressionReport>>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    business: BTreeMap<String, BusinessValue>,
}

/// The quality figures of one window, for the API and the quality gauges.
pub(crate) struct QualityFigures {
    pub kind: Option<ModelKind>,
    pub predictions: u64,
    pub quality: Quality,
    pub classification: Option<ClassificationReport>,
}

pub(crate) fn quality_figures(
    aggregates: &Aggregates,
    model: &str,
    version: Option<&str>,
    segment: Option<(&str, &str)>,
    window: Window,
) -> Option<QualityFigures> {
    let kind = aggregates.models.get(model)?.kind;
    let (predictions, quality) = aggregates.quality_window(model, version, segment, window)?;
    let classification = quality.classification();
    Some(QualityFigures {
        kind,
        predictions,
        quality,
        classification,
    })
}

pub(crate) async fn performance(
    State(app): State<App>,
    Path(model): Path<String>,
    Query(params): Query<PerformanceParams>,
) -> Result<Json<Performance>, ApiError> {
    let window_params = WindowParams {
        window: params.window.clone(),
        end: params.end.clone(),
        version: params.version.clone(),
        top: None,
    };
    let resolved = resolve(&window_params, "7d", app.shared.clock.now_ms())?;
    let segment = match &params.segment {
        None => None,
        Some(text) => Some(
            text.split_once(':')
                .filter(|(key, _)| !key.is_empty())
                .ok_or_else(|| {
                    ApiError::new(
                        ErrorCode::InvalidParameter,
                        format!("segment {text:?} must be key:value, such as region:eu"),
                    )
                    .with_field("segment")
                })?,
        ),
    };
    let figures = {
        let aggregates = app.shared.aggregates.read().expect("aggregates lock");
        known_model(&aggregates, &model)?;
        known_version(&aggregates, &model, resolved.version.as_deref())?;
        quality_figures(
            &aggregates,
            &model,
            resolved.version.as_deref(),
            segment,
            resolved.window,
        )
        .expect("the model is known")
    };
    let sample_size = figures.quality.labeled;
    let classifier = figures.kind != Some(ModelKind::Regression);
    let classification = figures.classification;
    let business = figures
        .quality
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
    Ok(Json(Performance {
        info: WindowInfo::new(&model, &resolved),
        segment: params.segment.clone(),
        kind: figures.kind.map(ModelKind::as_str),
        sample_size,
        predictions: figures.predictions,
        label_coverage: ratio(sample_size, figures.predictions).unwrap_or(0.0),
        accuracy: classification.as_ref().map(|report| report.accuracy),
        per_class: classification
            .as_ref()
            .map(|report| report.per_class.clone())
            .unwrap_or_default(),
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
        regression: (!classifier).then(|| figures.quality.regression()),
        business,
    }))
}

pub(crate) fn known_version(
    aggregates: &Aggregates,
    model: &str,
    version: Option<&str>,
) -> Result<(), ApiError> {
    match version {
        Some(version) if !aggregates.models[model].versions.contains_key(version) => Err(ApiError::new(
            ErrorCode::NotFound,
            format!("model {model} has no version {version:?}"),
        )
        .with_field("version")),
        _ => Ok(()),
    }
}

/// `GET /v1/labels/stats`.
#[derive(Serialize)]
pub struct LabelStats {
    /// Labels joined to their prediction.
    joined: u64,
    /// Labels waiting for their prediction (within `labels.early_label_ttl`).
    held: u64,
    /// Labels whose prediction never arrived within the TTL (total).
    orphaned: u64,
    /// Resent labels identical to the stored one (total).
    duplicates: u64,
    /// Labels that replaced a different stored label (total).
    corrected: u64,
}

pub(crate) async fn label_stats(State(app): State<App>) -> Json<LabelStats> {
    use std::sync::atomic::Ordering::Relaxed;
    let labels = &app.shared.telemetry.labels;
    Json(LabelStats {
        joined: labels.joined.load(Relaxed),
        held: labels.held.load(Relaxed),
        orphaned: labels.orphaned.load(Relaxed),
        duplicates: labels.duplicates.load(Relaxed),
        corrected: labels.corrected.load(Relaxed),
    })
}
