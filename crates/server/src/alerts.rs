//! The alert evaluator thread and the alert and SLO endpoints.
//!
//! Every `alerts.evaluation_interval` the thread evaluates every rule over
//! the aggregates at the wall-clock time, then records, in one transaction
//! of the alert store: the alert instances (so that pending and firing
//! alerts, with their `for` clocks, survive a restart), one history entry per
//! transition, and what the notifier queues. Only then are the new states
//! published to `GET /v1/alerts`.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use modelwatch_core::alerting::{Alert, AlertState, Evaluator, Transition};
use modelwatch_core::event::TimestampMs;
use modelwatch_core::series::Aggregates;
use modelwatch_core::slo::{BURN_RATE_WINDOWS_MS, Sli, Slo};
use modelwatch_core::time::{DAY_MS, HOUR_MS, MINUTE_MS, Window, format_duration_ms};
use modelwatch_store::{AlertStore, StoreError};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::App;
use crate::error::{ApiError, ErrorCode};
use crate::notify::Notifier;
use crate::state::Shared;

/// What the evaluator last published.
#[derive(Debug, Default)]
pub struct AlertView {
    /// Pending and firing alerts.
    pub active: RwLock<Vec<Alert>>,
    /// Evaluations so far (for tests and telemetry).
    pub evaluations: std::sync::atomic::AtomicU64,
}

/// The evaluator with its persistence.
pub struct AlertEngine {
    pub evaluator: Evaluator,
    store: AlertStore,
    notifier: Notifier,
}

impl AlertEngine {
    /// Opens the alert store and restores the persisted alert instances.
    pub fn open(shared: &Shared, database: &std::path::Path) -> Result<Self, String> {
        let rules = shared.config.rules()?;
        let slos = shared.config.slos()?;
        let store = AlertStore::open(database, shared.config.storage.synchronous())
            .map_err(|error| error.to_string())?;
        let mut evaluator = Evaluator::new(rules, slos);
        for (key, body) in store.load_state().map_err(|error| error.to_string())? {
            match serde_json::from_str::<Alert>(&body) {
                Ok(alert) => {
                    evaluator
                        .tracker
                        .alerts
                        .insert((alert.rule.clone(), alert.model.clone()), alert);
                }
                Err(error) => warn!(%key, %error, "dropping an unreadable persisted alert"),
            }
        }
        // Restored alerts are listed at once, not only after the first evaluation.
        *shared.alerts.active.write().expect("alert view lock") =
            evaluator.tracker.active().cloned().collect();
        Ok(Self {
            evaluator,
            store,
            notifier: Notifier::new(Arc::new(shared.config.clone())),
        })
    }

    /// One evaluation at `now_ms`: evaluate, persist, then publish.
    pub fn evaluate(
        &mut self,
        shared: &Shared,
        view: &AlertView,
        now_ms: TimestampMs,
    ) -> Result<(), StoreError> {
        // The read lock is taken per model, so that a long evaluation (many
        // models, SLO windows of weeks) never holds up the writer for long.
        let models: Vec<String> = shared
            .aggregates
            .read()
            .expect("aggregates lock")
            .models
            .keys()
            .cloned()
            .collect();
        let mut transitions = Vec::new();
        let config = &shared.config;
        let drift_window = Window::ending_at(now_ms, config.drift.window.ms);
        let drift_text = format_duration_ms(config.drift.window.ms);
        let mut drift_reports = BTreeMap::new();
        for model in &models {
            let aggregates = shared.aggregates.read().expect("aggregates lock");
            let report = crate::drift::report(
                config,
                &aggregates,
                &shared.baselines,
                model,
                None,
                drift_window,
                &drift_text,
            )
            .ok();
            let inputs = crate::drift::WithDrift {
                aggregates: &aggregates,
                window: drift_window,
                verdict: report.as_ref().map(crate::drift::DriftReport::verdict),
            };
            transitions.extend(self.evaluator.evaluate_model(&aggregates, &inputs, model, now_ms));
            if let Some(report) = report {
                drift_reports.insert(model.clone(), report);
            }
        }
        *shared.drift.reports.write().expect("drift view lock") = drift_reports;
        let known: Vec<&str> = models.iter().map(String::as_str).collect();
        transitions.extend(self.evaluator.end_unknown(&known, now_ms));
        let state: Vec<(String, String)> = self
            .evaluator
            .tracker
            .alerts
            .values()
            .map(|alert| {
                (
                    format!("{}\u{1f}{}", alert.rule, alert.model),
                    serde_json::to_string(alert).expect("alerts serialize"),
                )
            })
            .collect();
        let active: Vec<Alert> = self.evaluator.tracker.active().cloned().collect();
        let notifier = &mut self.notifier;
        self.store.transaction(|writer| {
            writer.replace_state(&state)?;
            for transition in &transitions {
                writer.append_history(now_ms, &history_body(transition))?;
            }
            notifier.record(writer, &transitions, &active, now_ms)
        })?;
        for transition in &transitions {
            info!(
                alert = %transition.alert.rule,
                model = %transition.alert.model,
                from = ?transition.from,
                to = ?transition.alert.state,
                value = transition.alert.value,
                "alert state changed"
            );
        }
        *view.active.write().expect("alert view lock") = active;
        view.evaluations.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

fn history_body(transition: &Transition) -> String {
    serde_json::to_string(&HistoryBody {
        from: transition.from,
        to: transition.alert.state,
        alert: &transition.alert,
    })
    .expect("history serializes")
}

#[derive(Serialize, Deserialize)]
struct HistoryBody<A> {
    from: AlertState,
    to: AlertState,
    alert: A,
}

/// Starts the evaluator thread; it stops once `shared.stopping` is set.
pub fn start_evaluator(shared: Arc<Shared>, mut engine: AlertEngine) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("modelwatch-alerts".into())
        .spawn(move || {
            let interval = Duration::from_millis(shared.config.alerts.evaluation_interval.ms as u64);
            let mut next = Instant::now();
            while !shared.stopping.load(Ordering::Acquire) {
                if Instant::now() < next {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
                next += interval;
                let now_ms = shared.clock.now_ms();
                if let Err(error) = engine.evaluate(&shared, &shared.alerts, now_ms) {
                    warn!(%error, "recording an alert evaluation failed; the next one retries");
                }
            }
        })
        .expect("spawning the alert evaluator")
}

fn alert_json(alert: &Alert) -> serde_json::Value {
    serde_json::json!({
        "name": alert.name,
        "model": alert.model,
        "version": alert.version,
        "state": alert.state,
        "value": finite(alert.value),
        "labels": alert.labels,
        "annotations": alert.annotations,
        "active_since": rfc3339(alert.active_since_ms),
        "fired_at": alert.fired_at_ms.map(rfc3339),
        "resolved_at": alert.resolved_at_ms.map(rfc3339),
        "last_evaluated": rfc3339(alert.last_evaluated_ms),
    })
}

fn finite(value: f64) -> Option<f64> {
    value.is_finite().then_some(value)
}

fn rfc3339(ms: TimestampMs) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|timestamp| timestamp.to_string())
        .unwrap_or_default()
}

/// `GET /v1/alerts`: pending and firing alerts.
pub(crate) async fn active(State(app): State<App>) -> Response {
    let active = app.shared.alerts.active.read().expect("alert view lock").clone();
    let alerts: Vec<serde_json::Value> = active.iter().map(alert_json).collect();
    Json(serde_json::json!({ "alerts": alerts })).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HistoryQuery {
    limit: Option<usize>,
    before: Option<i64>,
}

/// `GET /v1/alerts/history?limit=&before=`: transitions, newest first.
pub(crate) async fn history(
    State(app): State<App>,
    query: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) =
        query.map_err(|rejection| ApiError::new(ErrorCode::InvalidParameter, rejection.body_text()))?;
    let (entries, next_before) = crate::notify_api::read_log_page(
        &app,
        query.limit,
        query.before,
        modelwatch_store::Reader::alert_history,
    )
    .await?;
    let entries: Vec<serde_json::Value> = entries
        .iter()
        .filter_map(|entry| {
            let body: HistoryBody<Alert> = serde_json::from_str(&entry.body).ok()?;
            Some(serde_json::json!({
                "id": entry.id,
                "at": rfc3339(entry.at_ms),
                "from": body.from,
                "to": body.to,
                "alert": alert_json(&body.alert),
            }))
        })
        .collect();
    Ok(Json(serde_json::json!({ "entries": entries, "next_before": next_before })).into_response())
}

/// An SLO's figures at one time.
#[derive(Debug, Clone, Serialize)]
pub struct SloStatus {
    pub name: String,
    pub sli: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threshold_seconds: Option<f64>,
    pub objective: f64,
    pub window: String,
    pub good: u64,
    pub total: u64,
    /// Bad events over the window per event; `None` without events.
    pub error_ratio: Option<f64>,
    /// The share of the budget left (1 untouched, 0 spent, negative overspent).
    pub error_budget_remaining: Option<f64>,
    /// Burn rate per window (`5m` … `3d`); `None` without events in it.
    pub burn_rates: BTreeMap<String, Option<f64>>,
}

/// The status of every SLO of `model` (all when `None`) at `now_ms`.
pub fn slo_statuses(
    aggregates: &Aggregates,
    slos: &[Slo],
    model: Option<&str>,
    now_ms: TimestampMs,
) -> Vec<(Slo, SloStatus)> {
    slos.iter()
        .filter(|slo| model.is_none_or(|model| slo.model == model))
        .map(|slo| {
            let counts = slo
                .counts(aggregates, Window::ending_at(now_ms, slo.window_ms))
                .unwrap_or_default();
            let status = SloStatus {
                name: slo.name.clone(),
                sli: match slo.sli {
                    Sli::Availability => "availability",
                    Sli::Latency { .. } => "latency",
                    Sli::Accuracy => "accuracy",
                },
                threshold_seconds: match slo.sli {
                    Sli::Latency { threshold_seconds } => Some(threshold_seconds),
                    _ => None,
                },
                objective: slo.objective,
                window: window_text(slo.window_ms),
                good: counts.good,
                total: counts.total,
                error_ratio: slo.error_ratio(aggregates, slo.window_ms, now_ms),
                error_budget_remaining: slo.budget_remaining(aggregates, now_ms),
                burn_rates: BURN_RATE_WINDOWS_MS
                    .iter()
                    .map(|window| (window_text(*window), slo.burn_rate(aggregates, *window, now_ms)))
                    .collect(),
            };
            (slo.clone(), status)
        })
        .collect()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SloQuery {
    end: Option<String>,
}

/// `GET /v1/models/{model}/slo?end=`: error budgets and burn rates.
pub(crate) async fn model_slo(
    State(app): State<App>,
    Path(model): Path<String>,
    query: Result<Query<SloQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) =
        query.map_err(|rejection| ApiError::new(ErrorCode::InvalidParameter, rejection.body_text()))?;
    let now_ms = match &query.end {
        None => app.shared.clock.now_ms(),
        Some(text) => text
            .parse::<jiff::Timestamp>()
            .map_err(|error| {
                ApiError::new(
                    ErrorCode::InvalidParameter,
                    format!("end: {error}; expected RFC 3339"),
                )
                .with_field("end")
            })?
            .as_millisecond(),
    };
    let slos = app
        .shared
        .config
        .slos()
        .map_err(|error| ApiError::new(ErrorCode::StorageUnavailable, error))?;
    let aggregates = app.shared.aggregates.read().expect("aggregates lock");
    let known = aggregates.models.contains_key(&model);
    let statuses = slo_statuses(&aggregates, &slos, Some(&model), now_ms);
    drop(aggregates);
    if !known && statuses.is_empty() {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            format!("no model {model:?} and no SLO for it"),
        ));
    }
    let slos: Vec<SloStatus> = statuses.into_iter().map(|(_, status)| status).collect();
    Ok(Json(serde_json::json!({ "model": model, "end": rfc3339(now_ms), "slos": slos })).into_response())
}

/// A window as people write it: `30d`, `6h`, `5m` (not `4w2d`).
pub fn window_text(ms: i64) -> String {
    for (unit, suffix) in [(DAY_MS, "d"), (HOUR_MS, "h"), (MINUTE_MS, "m"), (1000, "s")] {
        if ms % unit == 0 {
            return format!("{}{suffix}", ms / unit);
        }
    }
    format!("{ms}ms")
}
