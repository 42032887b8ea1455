//! The built-in dashboard: two pages (`/`, the overview, and
//! `/models/{model}`), their scripts and styles, and the vendored uPlot
//! charting library, all compiled into the binary; plus the two endpoints
//! only the dashboard needs: `/v1/dashboard/overview` (every model's health
//! in one request) and `/v1/dashboard/capabilities`.
//!
//! The pages are plain HTML, CSS and JavaScript without a build step. They
//! read the JSON API like any client and draw every chart with uPlot.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use modelwatch_core::alerting::{Alert, AlertState};
use modelwatch_core::series::{Aggregates, ModelKind};
use modelwatch_core::stats::QuantileSketch;
use modelwatch_core::time::{Window, parse_duration_ms};
use serde::{Deserialize, Serialize};

use crate::App;
use crate::error::{ApiError, ErrorCode};
use crate::query_api::{format_time, parse_end};

/// Whether `GET /v1/models/{model}/drift` exists in this build. The model
/// page asks for drift only when it does, so that it never requests a 404.
pub const DRIFT_API: bool = true;

/// The vendored uPlot's version; it is in the assets' URLs, which are
/// therefore cached for good.
const UPLOT_VERSION: &str = "1.6.32";

/// A file served under `/assets/`.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
    /// Versioned URLs never change content; the others are revalidated.
    immutable: bool,
}

const ASSETS: &[Asset] = &[
    Asset {
        path: "dashboard.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../assets/dashboard/dashboard.js"),
        immutable: false,
    },
    Asset {
        path: "overview.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../assets/dashboard/overview.js"),
        immutable: false,
    },
    Asset {
        path: "model.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../assets/dashboard/model.js"),
        immutable: false,
    },
    Asset {
        path: "dashboard.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../assets/dashboard/dashboard.css"),
        immutable: false,
    },
    Asset {
        path: "favicon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("../assets/dashboard/favicon.svg"),
        immutable: false,
    },
    Asset {
        path: "uplot-1.6.32/uPlot.iife.min.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../assets/uplot/uPlot.iife.min.js"),
        immutable: true,
    },
    Asset {
        path: "uplot-1.6.32/uPlot.min.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../assets/uplot/uPlot.min.css"),
        immutable: true,
    },
    Asset {
        path: "uplot-1.6.32/LICENSE",
        content_type: "text/plain; charset=utf-8",
        body: include_bytes!("../assets/uplot/LICENSE"),
        immutable: true,
    },
];

const OVERVIEW_PAGE: &str = include_str!("../assets/dashboard/index.html");
const MODEL_PAGE: &str = include_str!("../assets/dashboard/model.html");

/// Everything the pages load comes from this server; nothing runs inline.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'";

/// An entity tag per page and asset: FNV-1a of the content, computed once.
static ETAGS: LazyLock<BTreeMap<&'static str, String>> = LazyLock::new(|| {
    let mut tags: BTreeMap<&'static str, String> = ASSETS
        .iter()
        .map(|asset| (asset.path, entity_tag(asset.body)))
        .collect();
    tags.insert("index.html", entity_tag(OVERVIEW_PAGE.as_bytes()));
    tags.insert("model.html", entity_tag(MODEL_PAGE.as_bytes()));
    tags
});

fn entity_tag(body: &[u8]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in body {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("\"{hash:016x}\"")
}

fn serve_static(
    request_headers: &HeaderMap,
    key: &str,
    content_type: &'static str,
    body: &'static [u8],
    immutable: bool,
) -> Response {
    let etag = ETAGS.get(key).expect("every page and asset has an entity tag");
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(if immutable {
            "public, max-age=31536000, immutable"
        } else {
            "no-cache"
        }),
    );
    headers.insert(
        header::ETAG,
        HeaderValue::from_str(etag).expect("an entity tag is ASCII"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if content_type.starts_with("text/html") {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        );
    }
    let revalidated = request_headers
        .get(header::IF_NONE_MATCH)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|tag| tag.trim() == etag || tag.trim() == "*"));
    if revalidated {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    (StatusCode::OK, headers, body).into_response()
}

/// `GET /`: the overview of every model.
pub(crate) async fn overview_page(headers: HeaderMap) -> Response {
    serve_static(
        &headers,
        "index.html",
        "text/html; charset=utf-8",
        OVERVIEW_PAGE.as_bytes(),
        false,
    )
}

/// `GET /models/{model}`: one model's page (the script reads the name from
/// the URL, so the page is the same for every model).
pub(crate) async fn model_page(headers: HeaderMap, Path(_model): Path<String>) -> Response {
    serve_static(
        &headers,
        "model.html",
        "text/html; charset=utf-8",
        MODEL_PAGE.as_bytes(),
        false,
    )
}

/// `GET /assets/{*path}`.
pub(crate) async fn asset(headers: HeaderMap, Path(path): Path<String>) -> Response {
    match ASSETS.iter().find(|asset| asset.path == path) {
        Some(asset) => serve_static(
            &headers,
            asset.path,
            asset.content_type,
            asset.body,
            asset.immutable,
        ),
        None => ApiError::new(ErrorCode::NotFound, format!("no asset {path:?}")).into_response(),
    }
}

/// `GET /v1/dashboard/capabilities`: which optional APIs this build has.
pub(crate) async fn capabilities() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "drift": DRIFT_API, "uplot": UPLOT_VERSION }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct OverviewParams {
    /// The window of the operational figures (default 1h).
    window: Option<String>,
    /// The window of accuracy (default 7d, as `MLModelAccuracyDrop`'s).
    quality_window: Option<String>,
    end: Option<String>,
}

/// How a model is doing, worst first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Health {
    /// A critical alert fires, or an SLO's error budget is spent.
    Critical,
    /// Another alert fires or is pending, or an SLO has under a quarter of
    /// its error budget left.
    Warning,
    Ok,
}

/// Below this share of its error budget left, an SLO makes a model `warning`.
const LOW_BUDGET: f64 = 0.25;

#[derive(Serialize)]
pub(crate) struct OverviewAlert {
    name: String,
    state: AlertState,
    severity: Option<String>,
    value: Option<f64>,
    active_since: String,
}

#[derive(Serialize)]
pub(crate) struct OverviewSlo {
    name: String,
    objective: f64,
    error_budget_remaining: Option<f64>,
}

#[derive(Serialize)]
pub(crate) struct OverviewModel {
    model: String,
    kind: Option<&'static str>,
    versions: Vec<String>,
    last_event: Option<String>,
    health: Health,
    /// Why the health is not `ok`, for people.
    reasons: Vec<String>,
    requests: u64,
    requests_per_second: f64,
    error_rate: Option<f64>,
    latency_p99_seconds: Option<f64>,
    /// Labeled accuracy over `quality_window`, by prediction time.
    accuracy: Option<f64>,
    sample_size: u64,
    label_coverage: Option<f64>,
    slos: Vec<OverviewSlo>,
    /// Pending and firing alerts of the model.
    alerts: Vec<OverviewAlert>,
}

#[derive(Serialize)]
pub(crate) struct Overview {
    window: String,
    quality_window: String,
    end: String,
    /// Whether the drift API exists (see [`DRIFT_API`]).
    drift: bool,
    firing: usize,
    pending: usize,
    models: Vec<OverviewModel>,
}

/// `GET /v1/dashboard/overview?window=1h&quality_window=7d&end=`: every
/// model's figures, alerts, SLO budgets and health in one answer, so that the
/// overview makes one request whatever the number of models.
pub(crate) async fn overview(
    State(app): State<App>,
    Query(params): Query<OverviewParams>,
) -> Result<Json<Overview>, ApiError> {
    let window_text = params.window.as_deref().unwrap_or("1h").trim().to_owned();
    let quality_window_text = params.quality_window.as_deref().unwrap_or("7d").trim().to_owned();
    let length_ms = parse_duration_ms(&window_text).map_err(|error| {
        ApiError::new(ErrorCode::InvalidParameter, error.to_string()).with_field("window")
    })?;
    let quality_length_ms = parse_duration_ms(&quality_window_text).map_err(|error| {
        ApiError::new(ErrorCode::InvalidParameter, error.to_string()).with_field("quality_window")
    })?;
    let end_ms = match &params.end {
        Some(end) => parse_end(end)?,
        None => app.shared.clock.now_ms(),
    };
    let slos = app
        .shared
        .config
        .slos()
        .map_err(|error| ApiError::new(ErrorCode::StorageUnavailable, error))?;
    let active: Vec<Alert> = app.shared.alerts.active.read().expect("alert view lock").clone();
    let count = |state: AlertState| active.iter().filter(|alert| alert.state == state).count();
    let (firing, pending) = (count(AlertState::Firing), count(AlertState::Pending));
    // A few window merges per model: off the async threads, and the read
    // lock taken per model so that the writer never waits long.
    let models = tokio::task::spawn_blocking(move || {
        let names: Vec<String> = app
            .shared
            .aggregates
            .read()
            .expect("aggregates lock")
            .models
            .keys()
            .cloned()
            .collect();
        let window = Window::ending_at(end_ms, length_ms);
        let quality_window = Window::ending_at(end_ms, quality_length_ms);
        let mut models: Vec<OverviewModel> = names
            .iter()
            .filter_map(|name| {
                let aggregates = app.shared.aggregates.read().expect("aggregates lock");
                let alerts = active.iter().filter(|alert| &alert.model == name);
                let model_slos = slos
                    .iter()
                    .filter(|slo| &slo.model == name)
                    .map(|slo| OverviewSlo {
                        name: slo.name.clone(),
                        objective: slo.objective,
                        error_budget_remaining: slo.budget_remaining(&*aggregates, end_ms),
                    });
                model_overview(
                    &aggregates,
                    name,
                    window,
                    quality_window,
                    alerts,
                    model_slos.collect(),
                )
            })
            .collect();
        models.sort_by(|a, b| a.health.cmp(&b.health).then_with(|| a.model.cmp(&b.model)));
        models
    })
    .await
    .map_err(|error| {
        ApiError::new(
            ErrorCode::StorageUnavailable,
            format!("query task failed: {error}"),
        )
    })?;
    Ok(Json(Overview {
        window: window_text,
        quality_window: quality_window_text,
        end: format_time(end_ms),
        drift: DRIFT_API,
        firing,
        pending,
        models,
    }))
}

fn model_overview<'a>(
    aggregates: &Aggregates,
    name: &str,
    window: Window,
    quality_window: Window,
    alerts: impl Iterator<Item = &'a Alert>,
    slos: Vec<OverviewSlo>,
) -> Option<OverviewModel> {
    let state = aggregates.models.get(name)?;
    // Counters and the latency sketch only: no feature statistics.
    let mut requests = 0;
    let mut errors = 0;
    let mut latency = QuantileSketch::default();
    for series in state.versions.values() {
        let buckets = series
            .minutes
            .range(window.start_ms..window.end_ms)
            .chain(series.hours.range(window.start_ms..window.end_ms));
        for (_, bucket) in buckets {
            requests += bucket.counters.requests;
            errors += bucket.counters.errors();
            latency.merge(&bucket.latency_sketch);
        }
    }
    let (predictions, quality) = aggregates.quality_window(name, None, None, quality_window)?;
    let accuracy = quality.classification().map(|report| report.accuracy);
    let alerts: Vec<OverviewAlert> = alerts
        .map(|alert| OverviewAlert {
            name: alert.name.clone(),
            state: alert.state,
            severity: alert.labels.get("severity").cloned(),
            value: alert.value.is_finite().then_some(alert.value),
            active_since: format_time(alert.active_since_ms),
        })
        .collect();
    let (health, reasons) = health(&alerts, &slos);
    Some(OverviewModel {
        model: name.to_owned(),
        kind: state.kind.map(ModelKind::as_str),
        versions: state.versions.keys().cloned().collect(),
        last_event: state.newest_event_ms().map(format_time),
        health,
        reasons,
        requests,
        requests_per_second: requests as f64 / (window.length_ms() as f64 / 1000.0),
        error_rate: (requests > 0).then(|| errors as f64 / requests as f64),
        latency_p99_seconds: latency.quantile(0.99),
        accuracy,
        sample_size: quality.labeled,
        label_coverage: (predictions > 0).then(|| quality.labeled as f64 / predictions as f64),
        slos,
        alerts,
    })
}

fn health(alerts: &[OverviewAlert], slos: &[OverviewSlo]) -> (Health, Vec<String>) {
    let mut health = Health::Ok;
    let mut reasons = Vec::new();
    let mut worsen = |to: Health, reason: String| {
        health = health.min(to);
        reasons.push(reason);
    };
    for alert in alerts {
        match (alert.state, alert.severity.as_deref()) {
            (AlertState::Firing, Some("critical")) => {
                worsen(Health::Critical, format!("{} firing", alert.name))
            }
            (AlertState::Firing, _) => worsen(Health::Warning, format!("{} firing", alert.name)),
            (AlertState::Pending, _) => worsen(Health::Warning, format!("{} pending", alert.name)),
            _ => {}
        }
    }
    for slo in slos {
        match slo.error_budget_remaining {
            Some(left) if left <= 0.0 => worsen(Health::Critical, format!("{} error budget spent", slo.name)),
            Some(left) if left < LOW_BUDGET => worsen(
                Health::Warning,
                format!("{} error budget at {:.0}%", slo.name, left * 100.0),
            ),
            _ => {}
        }
    }
    (health, reasons)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(name: &str, state: AlertState, severity: &str) -> OverviewAlert {
        OverviewAlert {
            name: name.to_owned(),
            state,
            severity: Some(severity.to_owned()),
            value: None,
            active_since: String::new(),
        }
    }

    fn slo(left: Option<f64>) -> OverviewSlo {
        OverviewSlo {
            name: "availability".to_owned(),
            objective: 0.999,
            error_budget_remaining: left,
        }
    }

    #[test]
    fn health_is_the_worst_of_alerts_and_budgets() {
        let check = |alerts: &[OverviewAlert], slos: &[OverviewSlo], expected: Health| {
            assert_eq!(health(alerts, slos).0, expected);
        };
        check(&[], &[], Health::Ok);
        check(&[], &[slo(None), slo(Some(0.9))], Health::Ok);
        check(&[], &[slo(Some(0.2))], Health::Warning);
        check(&[], &[slo(Some(-3.0))], Health::Critical);
        check(
            &[alert("A", AlertState::Pending, "critical")],
            &[],
            Health::Warning,
        );
        check(&[alert("A", AlertState::Firing, "warning")], &[], Health::Warning);
        check(
            &[
                alert("A", AlertState::Firing, "warning"),
                alert("B", AlertState::Firing, "critical"),
            ],
            &[slo(Some(0.9))],
            Health::Critical,
        );
        let (_, reasons) = health(&[alert("A", AlertState::Firing, "critical")], &[slo(Some(0.1))]);
        assert_eq!(reasons, ["A firing", "availability error budget at 10%"]);
    }

    #[test]
    fn every_asset_has_a_content_type_and_the_pages_load_only_served_assets() {
        for page in [OVERVIEW_PAGE, MODEL_PAGE] {
            for reference in page.split("\"/assets/").skip(1) {
                let path = &reference[..reference.find('"').expect("a closing quote")];
                assert!(
                    ASSETS.iter().any(|asset| asset.path == path),
                    "a page loads /assets/{path}, which is not served"
                );
            }
        }
        assert!(ASSETS.iter().all(|asset| !asset.content_type.is_empty()));
        assert!(
            ASSETS
                .iter()
                .filter(|asset| asset.immutable)
                .all(|asset| asset.path.starts_with(&format!("uplot-{UPLOT_VERSION}/")))
        );
    }
}
