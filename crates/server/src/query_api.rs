//! The read API under `/v1/models`: windows of the aggregates, as JSON.
//! The answer types here are the wire format; they are built from core
//! aggregates and never stored.

use axum::Json;
use axum::extract::{Path, Query, State};
use modelwatch_core::aggregate::Bucket;
use modelwatch_core::figures;
use modelwatch_core::quality::{ClassificationReport, Quality};
use modelwatch_core::series::{Aggregates, ModelKind};
use modelwatch_core::time::{Window, parse_duration_ms};
use serde::{Deserialize, Serialize};

use crate::App;
use crate::error::{ApiError, ErrorCode};

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
pub struct Operations {
    #[serde(flatten)]
    info: WindowInfo,
    #[serde(flatten)]
    figures: figures::Operations,
}

pub(crate) async fn operations(
    State(app): State<App>,
    Path(model): Path<String>,
    Query(params): Query<WindowParams>,
) -> Result<Json<Operations>, ApiError> {
    let resolved = resolve(&params, "5m", app.shared.clock.now_ms())?;
    let bucket = window_bucket(&app, &model, &resolved)?;
    Ok(Json(Operations {
        info: WindowInfo::new(&model, &resolved),
        figures: figures::Operations::of(&bucket, resolved.window.length_ms()),
    }))
}

#[derive(Serialize)]
pub struct Predictions {
    #[serde(flatten)]
    info: WindowInfo,
    #[serde(flatten)]
    figures: figures::Predictions,
}

pub(crate) async fn predictions(
    State(app): State<App>,
    Path(model): Path<String>,
    Query(params): Query<WindowParams>,
) -> Result<Json<Predictions>, ApiError> {
    let resolved = resolve(&params, "1h", app.shared.clock.now_ms())?;
    let bucket = window_bucket(&app, &model, &resolved)?;
    let kind = app.shared.aggregates.read().expect("aggregates lock").models[&model].kind;
    Ok(Json(Predictions {
        info: WindowInfo::new(&model, &resolved),
        figures: figures::Predictions::of(&bucket, kind),
    }))
}

#[derive(Serialize)]
pub struct Features {
    #[serde(flatten)]
    info: WindowInfo,
    #[serde(flatten)]
    figures: figures::Features,
}

pub(crate) async fn features(
    State(app): State<App>,
    Path(model): Path<String>,
    Query(params): Query<WindowParams>,
) -> Result<Json<Features>, ApiError> {
    let resolved = resolve(&params, "1h", app.shared.clock.now_ms())?;
    let top_k = params.top.unwrap_or(10);
    let bucket = window_bucket(&app, &model, &resolved)?;
    Ok(Json(Features {
        info: WindowInfo::new(&model, &resolved),
        figures: figures::Features::of(&bucket, top_k),
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

/// `GET /v1/models/{model}/performance`: quality from the labels joined so
/// far, attributed to the time of their predictions.
#[derive(Serialize)]
pub struct Performance {
    #[serde(flatten)]
    info: WindowInfo,
    segment: Option<String>,
    #[serde(flatten)]
    figures: figures::Performance,
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
    Ok(Json(Performance {
        info: WindowInfo::new(&model, &resolved),
        segment: params.segment.clone(),
        figures: figures::Performance::of(figures.kind, figures.predictions, &figures.quality),
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
