//! Drift against production baselines: the API
//! (`GET /v1/models/{m}/drift`, `POST|GET|DELETE /v1/models/{m}/baseline`),
//! the frozen baselines (persisted on a connection of their own), and the
//! drift view that the evaluator refreshes for `/metrics` and the drift rules.
//!
//! The statistics are `core::drift`'s. Drift summaries are hourly, so a window
//! covers every hour it overlaps (its start is moved back to the hour), and
//! the previous window is the same length just before that.

use std::collections::BTreeMap;
use std::path::Path as FsPath;
use std::sync::{Arc, Mutex, RwLock};

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use modelwatch_core::aggregate::Counters;
use modelwatch_core::alerting::RuleInputs;
use modelwatch_core::drift::{self, DatasetDrift, DriftSummary, DriftVerdict, NumericSummary};
use modelwatch_core::event::TimestampMs;
use modelwatch_core::quality::Quality;
use modelwatch_core::series::Aggregates;
use modelwatch_core::time::{HOUR_MS, Window, bucket_start, format_duration_ms};
use modelwatch_store::{AlertStore, BaselineRow, StoreError, Synchronous};
use serde::{Deserialize, Serialize};

use crate::App;
use crate::config::{BaselineSetting, Config};
use crate::error::{ApiError, ErrorCode};
use crate::query_api::{WindowParams, format_time, known_model, parse_end, resolve};

pub use modelwatch_core::drift::{DATASET_DRIFT_SHARE, VariableDrift};

/// A frozen baseline: the merged summary of a window of production traffic.
#[derive(Debug, Clone)]
pub struct Baseline {
    pub version: Option<String>,
    pub from_ms: TimestampMs,
    pub to_ms: TimestampMs,
    pub created_ms: TimestampMs,
    pub summary: DriftSummary,
}

#[derive(Serialize, Deserialize)]
struct BaselineBody {
    version: Option<String>,
    from_ms: TimestampMs,
    to_ms: TimestampMs,
    created_ms: TimestampMs,
}

/// The frozen baselines, in memory and in the store.
pub struct Baselines {
    frozen: RwLock<BTreeMap<String, Arc<Baseline>>>,
    store: Mutex<AlertStore>,
}

impl std::fmt::Debug for Baselines {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("Baselines")
    }
}

impl Baselines {
    /// Opens the baselines of the database at `path` and loads them.
    pub fn open(path: &FsPath, synchronous: Synchronous) -> Result<Self, StoreError> {
        let store = AlertStore::open(path, synchronous)?;
        let mut frozen = BTreeMap::new();
        for row in store.load_baselines()? {
            let body: BaselineBody = serde_json::from_str(&row.body)
                .map_err(|error| StoreError::Corrupt(format!("baseline {}: {error}", row.model)))?;
            let summary: DriftSummary = postcard::from_bytes(&row.state)
                .map_err(|error| StoreError::Corrupt(format!("baseline {}: {error}", row.model)))?;
            frozen.insert(
                row.model,
                Arc::new(Baseline {
                    version: body.version,
                    from_ms: body.from_ms,
                    to_ms: body.to_ms,
                    created_ms: body.created_ms,
                    summary,
                }),
            );
        }
        Ok(Self {
            frozen: RwLock::new(frozen),
            store: Mutex::new(store),
        })
    }

    pub fn get(&self, model: &str) -> Option<Arc<Baseline>> {
        self.frozen.read().expect("baselines lock").get(model).cloned()
    }

    /// Persists `baseline` for `model`, then makes it the one in use.
    fn put(&self, model: &str, baseline: Baseline) -> Result<(), StoreError> {
        let body = BaselineBody {
            version: baseline.version.clone(),
            from_ms: baseline.from_ms,
            to_ms: baseline.to_ms,
            created_ms: baseline.created_ms,
        };
        let row = BaselineRow {
            model: model.to_owned(),
            body: serde_json::to_string(&body).expect("baselines serialize"),
            state: postcard::to_stdvec(&baseline.summary).expect("summaries serialize"),
        };
        let mut store = self.store.lock().expect("baseline store lock");
        store.put_baseline(&row)?;
        self.frozen
            .write()
            .expect("baselines lock")
            .insert(model.to_owned(), Arc::new(baseline));
        Ok(())
    }

    fn delete(&self, model: &str) -> Result<bool, StoreError> {
        let mut store = self.store.lock().expect("baseline store lock");
        let existed = store.delete_baseline(model)?;
        self.frozen.write().expect("baselines lock").remove(model);
        Ok(existed)
    }
}

/// The drift reports the evaluator computed last (window `drift.window`,
/// ending at the evaluation): what `/metrics` exposes.
#[derive(Debug, Default)]
pub struct DriftView {
    pub reports: RwLock<BTreeMap<String, DriftReport>>,
}

// ---------------------------------------------------------------------------
// Reports
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Serialize)]
pub struct BaselineInfo {
    /// `frozen` or `previous_window`.
    pub kind: &'static str,
    pub version: Option<String>,
    pub from: String,
    pub to: String,
    pub rows: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct DriftReport {
    pub model: String,
    pub version: Option<String>,
    pub window: String,
    pub start: String,
    pub end: String,
    pub baseline: BaselineInfo,
    /// Events in the window.
    pub rows: u64,
    pub features: BTreeMap<String, VariableDrift>,
    /// `class`, `confidence` (classifiers) and `value` (regressions).
    pub predictions: BTreeMap<String, VariableDrift>,
    /// Features with a score (both sides have values).
    pub features_compared: usize,
    pub drifted_features: usize,
    pub share_drifted: Option<f64>,
    /// Evidently's dataset drift: `share_drifted >= 0.5`.
    pub dataset_drift: bool,
}

impl DriftReport {
    pub fn verdict(&self) -> DriftVerdict {
        DriftVerdict {
            features: self
                .features
                .iter()
                .filter(|(_, drift)| drift.score.is_some())
                .map(|(name, drift)| (name.clone(), drift.drifted()))
                .collect(),
        }
    }
}

/// Compares `current` with `reference` for every feature and output, with
/// the config's method overrides.
pub fn compare_summaries(
    config: &Config,
    reference: &DriftSummary,
    current: &DriftSummary,
) -> (BTreeMap<String, VariableDrift>, BTreeMap<String, VariableDrift>) {
    drift::compare_summaries(
        &config.drift.features,
        &config.drift.predictions,
        reference,
        current,
    )
}

/// The drift of `model` over `window` against its baseline (the config's
/// choice). `window_text` is echoed.
pub fn report(
    config: &Config,
    aggregates: &Aggregates,
    baselines: &Baselines,
    model: &str,
    version: Option<&str>,
    window: Window,
    window_text: &str,
) -> Result<DriftReport, ApiError> {
    known_model(aggregates, model)?;
    if let Some(version) = version
        && !aggregates.models[model].versions.contains_key(version)
    {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            format!("model {model} has no version {version:?}"),
        )
        .with_field("version"));
    }
    // Drift summaries are hourly: the window takes every hour it overlaps, so
    // that a window never holds only the first minutes of an hour.
    let length = window.end_ms - window.start_ms;
    let window = Window {
        start_ms: bucket_start(window.start_ms, HOUR_MS),
        end_ms: window.end_ms,
    };
    let current = aggregates
        .drift_window(model, version, window)
        .unwrap_or_default();
    let frozen = match config.drift.baseline {
        BaselineSetting::PreviousWindow => None,
        BaselineSetting::Auto => baselines.get(model),
        BaselineSetting::Frozen => Some(baselines.get(model).ok_or_else(|| {
            ApiError::new(
                ErrorCode::NoBaseline,
                format!(
                    "model {model} has no frozen baseline (drift.baseline is frozen): \
                     POST /v1/models/{model}/baseline first"
                ),
            )
        })?),
    };
    let previous;
    let (reference, info) = match &frozen {
        Some(baseline) => (
            &baseline.summary,
            BaselineInfo {
                kind: "frozen",
                version: baseline.version.clone(),
                from: format_time(baseline.from_ms),
                to: format_time(baseline.to_ms),
                rows: baseline.summary.rows,
            },
        ),
        None => {
            let before = Window {
                start_ms: window.start_ms - length,
                end_ms: window.start_ms,
            };
            previous = aggregates
                .drift_window(model, version, before)
                .unwrap_or_default();
            (
                &previous,
                BaselineInfo {
                    kind: "previous_window",
                    version: version.map(str::to_owned),
                    from: format_time(before.start_ms),
                    to: format_time(before.end_ms),
                    rows: previous.rows,
                },
            )
        }
    };
    let (features, predictions) = compare_summaries(config, reference, &current);
    let dataset = DatasetDrift::of(&features);
    Ok(DriftReport {
        model: model.to_owned(),
        version: version.map(str::to_owned),
        window: window_text.to_owned(),
        start: format_time(window.start_ms),
        end: format_time(window.end_ms),
        baseline: info,
        rows: current.rows,
        features,
        predictions,
        features_compared: dataset.features_compared,
        drifted_features: dataset.drifted_features,
        share_drifted: dataset.share_drifted,
        dataset_drift: dataset.dataset_drift,
    })
}

/// The rule inputs of one evaluation: the aggregates, and the drift verdict
/// over the drift window ending at the evaluation.
pub struct WithDrift<'a> {
    pub aggregates: &'a Aggregates,
    pub window: Window,
    pub verdict: Option<DriftVerdict>,
}

impl RuleInputs for WithDrift<'_> {
    fn counters(&self, model: &str, window: Window) -> Option<Counters> {
        RuleInputs::counters(self.aggregates, model, window)
    }

    fn quality(&self, model: &str, window: Window) -> Option<Quality> {
        RuleInputs::quality(self.aggregates, model, window)
    }

    fn drift(&self, _model: &str, window: Window) -> Option<DriftVerdict> {
        (window == self.window).then(|| self.verdict.clone()).flatten()
    }
}

// ---------------------------------------------------------------------------
// Handlers
// ---------------------------------------------------------------------------

pub async fn drift(
    State(app): State<App>,
    Path(model): Path<String>,
    Query(params): Query<WindowParams>,
) -> Result<Json<DriftReport>, ApiError> {
    let config = &app.shared.config;
    let resolved = resolve(
        &params,
        &format_duration_ms(config.drift.window.ms),
        app.shared.clock.now_ms(),
    )?;
    if resolved.window.end_ms - resolved.window.start_ms <= 0 {
        return Err(
            ApiError::new(ErrorCode::InvalidParameter, "window must be positive").with_field("window"),
        );
    }
    let aggregates = app.shared.aggregates.read().expect("aggregates lock");
    report(
        config,
        &aggregates,
        &app.shared.baselines,
        &model,
        resolved.version.as_deref(),
        resolved.window,
        &resolved.window_text,
    )
    .map(Json)
}

fn time_field(body: &serde_json::Value, field: &str) -> Result<Option<TimestampMs>, ApiError> {
    match body.get(field) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(text)) => parse_end(text).map(Some).map_err(|error| ApiError {
            field: Some(field.to_owned()),
            ..error
        }),
        Some(serde_json::Value::Number(number)) => match number.as_f64() {
            Some(seconds) if seconds.is_finite() => Ok(Some((seconds * 1000.0).round() as i64)),
            _ => Err(
                ApiError::new(ErrorCode::InvalidParameter, format!("{field} is not a time"))
                    .with_field(field),
            ),
        },
        Some(_) => Err(ApiError::new(
            ErrorCode::InvalidParameter,
            format!("{field} must be an RFC 3339 time or Unix seconds"),
        )
        .with_field(field)),
    }
}

/// `POST /v1/models/{model}/baseline {"from", "to", "version"?}`: freezes the
/// summary of the hours that start in `[from, to)` as the model's baseline.
pub async fn set_baseline(
    State(app): State<App>,
    Path(model): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let body: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|error| ApiError::new(ErrorCode::MalformedBody, format!("the body is not JSON: {error}")))?;
    let Some(object) = body.as_object() else {
        return Err(ApiError::new(
            ErrorCode::MalformedBody,
            "the body must be an object like {\"from\": \"…\", \"to\": \"…\"}",
        ));
    };
    if let Some(unknown) = object
        .keys()
        .find(|key| !["from", "to", "version"].contains(&key.as_str()))
    {
        return Err(
            ApiError::new(ErrorCode::InvalidParameter, format!("unknown field {unknown:?}"))
                .with_field(unknown),
        );
    }
    let from = time_field(&body, "from")?
        .ok_or_else(|| ApiError::new(ErrorCode::InvalidParameter, "from is required").with_field("from"))?;
    let now = app.shared.clock.now_ms();
    let to = time_field(&body, "to")?.unwrap_or(now);
    if from >= to {
        return Err(ApiError::new(ErrorCode::InvalidParameter, "from must be before to").with_field("from"));
    }
    let version = match body.get("version") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(version)) => Some(version.clone()),
        Some(_) => {
            return Err(
                ApiError::new(ErrorCode::InvalidParameter, "version must be a string").with_field("version"),
            );
        }
    };
    let summary = {
        let aggregates = app.shared.aggregates.read().expect("aggregates lock");
        known_model(&aggregates, &model)?;
        if let Some(version) = &version
            && !aggregates.models[&model].versions.contains_key(version)
        {
            return Err(ApiError::new(
                ErrorCode::NotFound,
                format!("model {model} has no version {version:?}"),
            )
            .with_field("version"));
        }
        aggregates
            .drift_window(
                &model,
                version.as_deref(),
                Window {
                    start_ms: from,
                    end_ms: to,
                },
            )
            .unwrap_or_default()
    };
    if summary.is_empty() {
        return Err(ApiError::new(
            ErrorCode::EmptyWindow,
            format!(
                "model {model} has no drift data in [{}, {}) (drift summaries are kept for {})",
                format_time(from),
                format_time(to),
                app.shared.config.drift.retention
            ),
        )
        .with_field("from"));
    }
    let baseline = Baseline {
        version,
        from_ms: from,
        to_ms: to,
        created_ms: now,
        summary,
    };
    let description = describe(&model, &baseline);
    let shared = app.shared.clone();
    let model_name = model.clone();
    tokio::task::spawn_blocking(move || shared.baselines.put(&model_name, baseline))
        .await
        .expect("baseline task")
        .map_err(|error| {
            ApiError::new(
                ErrorCode::StorageUnavailable,
                format!("the baseline was not stored: {error}"),
            )
        })?;
    Ok((StatusCode::CREATED, Json(description)).into_response())
}

#[derive(Serialize)]
struct BaselineDescription {
    model: String,
    kind: &'static str,
    version: Option<String>,
    from: String,
    to: String,
    created: String,
    rows: u64,
    /// Size of the stored summary.
    bytes: usize,
    features: BTreeMap<String, serde_json::Value>,
    predictions: BTreeMap<String, serde_json::Value>,
}

fn describe_numeric(summary: &NumericSummary) -> serde_json::Value {
    let moments = &summary.moments;
    serde_json::json!({
        "type": "numeric",
        "count": moments.count,
        "mean": moments.mean(),
        "std": moments.std(),
        "min": moments.min(),
        "max": moments.max(),
        "bins": summary.histogram.bins().len(),
    })
}

fn describe_categories(counts: &BTreeMap<String, u64>) -> serde_json::Value {
    serde_json::json!({
        "type": "categorical",
        "count": counts.values().sum::<u64>(),
        "categories": counts,
    })
}

fn describe(model: &str, baseline: &Baseline) -> BaselineDescription {
    let summary = &baseline.summary;
    let mut features = BTreeMap::new();
    for (name, numeric) in &summary.numeric {
        features.insert(name.clone(), describe_numeric(numeric));
    }
    for (name, counts) in &summary.categorical {
        // A feature with both kinds of values shows its numbers.
        features
            .entry(name.clone())
            .or_insert_with(|| describe_categories(counts));
    }
    let mut predictions = BTreeMap::new();
    if !summary.classes.is_empty() {
        predictions.insert("class".to_owned(), describe_categories(&summary.classes));
    }
    if summary.confidence.count() > 0 {
        predictions.insert("confidence".to_owned(), describe_numeric(&summary.confidence));
    }
    if summary.regression.count() > 0 {
        predictions.insert("value".to_owned(), describe_numeric(&summary.regression));
    }
    BaselineDescription {
        model: model.to_owned(),
        kind: "frozen",
        version: baseline.version.clone(),
        from: format_time(baseline.from_ms),
        to: format_time(baseline.to_ms),
        created: format_time(baseline.created_ms),
        rows: summary.rows,
        bytes: postcard::to_stdvec(summary).map(|bytes| bytes.len()).unwrap_or(0),
        features,
        predictions,
    }
}

/// `GET /v1/models/{model}/baseline`: what the frozen baseline holds.
pub async fn get_baseline(State(app): State<App>, Path(model): Path<String>) -> Result<Response, ApiError> {
    match app.shared.baselines.get(&model) {
        Some(baseline) => Ok(Json(describe(&model, &baseline)).into_response()),
        None => Err(ApiError::new(
            ErrorCode::NotFound,
            format!(
                "model {model:?} has no frozen baseline{}",
                if app.shared.config.drift.baseline == BaselineSetting::Frozen {
                    ""
                } else {
                    "; its drift is measured against the previous window"
                }
            ),
        )),
    }
}

/// `DELETE /v1/models/{model}/baseline`.
pub async fn delete_baseline(
    State(app): State<App>,
    Path(model): Path<String>,
) -> Result<Response, ApiError> {
    let shared = app.shared.clone();
    let name = model.clone();
    let existed = tokio::task::spawn_blocking(move || shared.baselines.delete(&name))
        .await
        .expect("baseline task")
        .map_err(|error| {
            ApiError::new(
                ErrorCode::StorageUnavailable,
                format!("the baseline was not deleted: {error}"),
            )
        })?;
    if existed {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError::new(
            ErrorCode::NotFound,
            format!("model {model:?} has no frozen baseline"),
        ))
    }
}
