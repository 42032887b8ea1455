//! `GET /metrics`: the seed's metric families (names, labels and buckets kept
//! exactly) plus modelwatch's own health, encoded by `prometheus-client`.
//! OpenMetrics when the scraper asks for it, text 0.0.4 otherwise.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use modelwatch_core::aggregate::Counters;
use modelwatch_core::alerting::AlertState;
use modelwatch_core::drift::Score;
use modelwatch_core::limits::OTHER;
use modelwatch_core::quality::{ClassScores, ClassificationReport};
use modelwatch_core::series::Aggregates;
use modelwatch_core::stats::{BucketCounts, CONFIDENCE_BUCKETS, LATENCY_BUCKETS, SLO_LATENCY_BUCKETS};
use modelwatch_core::time::{Window, parse_duration_ms};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::App;
use crate::config::MetricsConfig;
use crate::state::{COMMIT_BUCKETS, Shared};

pub const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Reads modelwatch's state at scrape time.
#[derive(Clone)]
pub struct StateCollector {
    shared: Arc<Shared>,
    quality_cache: Arc<Mutex<Option<QualityGauges>>>,
}

/// How long the quality gauges of a scrape are reused: they sum up to a week
/// of buckets per model, and labels move them slowly.
const QUALITY_GAUGES_TTL_MS: i64 = 5_000;

/// The quality gauges of every model and configured window.
struct QualityGauges {
    computed_at_ms: i64,
    /// (model, window, figures).
    rows: Vec<(String, String, u64, Option<ClassificationReport>)>,
}

impl std::fmt::Debug for StateCollector {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("StateCollector")
    }
}

pub fn registry(shared: Arc<Shared>) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(StateCollector {
        shared,
        quality_cache: Arc::new(Mutex::new(None)),
    }));
    registry
}

struct ConstHistogram<'a> {
    counts: &'a BucketCounts,
    bounds: &'a [f64],
}

impl ConstHistogram<'_> {
    fn encode(&self, encoder: &mut MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        let buckets: Vec<(f64, u64)> = self
            .bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .enumerate()
            .map(|(index, bound)| (bound, self.counts.counts.get(index).copied().unwrap_or(0)))
            .collect();
        encoder.encode_histogram::<NoLabelSet>(self.counts.sum, self.counts.count(), &buckets, None)
    }
}

fn counter(encoder: &mut MetricEncoder<'_>, value: u64) -> Result<(), std::fmt::Error> {
    encoder.encode_counter::<NoLabelSet, _, u64>(&value, None)
}

fn gauge(encoder: &mut MetricEncoder<'_>, value: f64) -> Result<(), std::fmt::Error> {
    encoder.encode_gauge(&value)
}

/// A gauge family's name, help, and how a sample's value is read.
type GaugeFamily<T> = (&'static str, &'static str, fn(&T) -> f64);

impl StateCollector {
    /// The drift gauges, from the reports the evaluator computed last (over
    /// `drift.window`, ending at that evaluation), so that a scrape never
    /// computes drift itself.
    fn encode_drift(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let reports = self.shared.drift.reports.read().expect("drift view lock");
        let features = || {
            reports.iter().flat_map(|(model, report)| {
                report
                    .features
                    .iter()
                    .filter_map(move |(feature, drift)| Some((model, feature, drift.score.as_ref()?)))
            })
        };
        let feature_families: [GaugeFamily<Score>; 2] = [
            (
                "ml_feature_drift_score",
                "Drift of a feature over drift.window against the baseline (p-value for ks and chi_square, else a distance)",
                |score| score.score,
            ),
            (
                "ml_feature_drifted",
                "1 when the feature drifted over drift.window against the baseline, else 0",
                |score| f64::from(u8::from(score.drifted)),
            ),
        ];
        for (name, help, value) in feature_families {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (model, feature, score) in features() {
                let labels = [
                    ("model_name", model.as_str()),
                    ("feature_name", feature.as_str()),
                    ("method", score.method.as_str()),
                ];
                gauge(&mut family.encode_family(&labels)?, value(score))?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "ml_prediction_drift_score",
            "Drift of the predictions (output: class, confidence or value) over drift.window against the baseline",
            None,
            MetricType::Gauge,
        )?;
        for (model, report) in reports.iter() {
            for (output, drift) in &report.predictions {
                let Some(score) = &drift.score else { continue };
                let labels = [
                    ("model_name", model.as_str()),
                    ("output", output.as_str()),
                    ("method", score.method.as_str()),
                ];
                gauge(&mut family.encode_family(&labels)?, score.score)?;
            }
        }
        Ok(())
    }
}

impl Collector for StateCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let now_ms = self.shared.clock.now_ms();
        let aggregates = self.shared.aggregates.read().expect("aggregates lock");
        // Per model: lifetime counters merged over versions (the seed's
        // histograms and class counters carry no version label).
        let per_model: Vec<(&str, Counters)> = aggregates
            .models
            .iter()
            .map(|(name, model)| (name.as_str(), model.totals()))
            .collect();

        let mut family = encoder.encode_descriptor(
            "ml_prediction_requests",
            "Total prediction requests",
            None,
            MetricType::Counter,
        )?;
        for (model_name, model) in &aggregates.models {
            for (version, series) in &model.versions {
                let labels = [
                    ("model_name", model_name.as_str()),
                    ("model_version", version.as_str()),
                ];
                counter(&mut family.encode_family(&labels)?, series.totals.requests)?;
            }
        }

        let mut family = encoder.encode_descriptor(
            "ml_prediction_latency_seconds",
            "Prediction latency",
            None,
            MetricType::Histogram,
        )?;
        for (model_name, totals) in &per_model {
            let labels = [("model_name", *model_name)];
            ConstHistogram {
                counts: &totals.latency,
                bounds: &LATENCY_BUCKETS,
            }
            .encode(&mut family.encode_family(&labels)?)?;
        }

        let mut family = encoder.encode_descriptor(
            "ml_prediction_errors",
            "Total prediction errors",
            None,
            MetricType::Counter,
        )?;
        for (model_name, totals) in &per_model {
            for (error_type, count) in &totals.errors_by_type {
                let labels = [("model_name", *model_name), ("error_type", error_type.as_str())];
                counter(&mut family.encode_family(&labels)?, *count)?;
            }
        }

        let mut family = encoder.encode_descriptor(
            "ml_prediction_confidence",
            "Model confidence scores",
            None,
            MetricType::Histogram,
        )?;
        for (model_name, totals) in &per_model {
            for (class, counts) in &totals.classes {
                let labels = [("model_name", *model_name), ("predicted_class", class.as_str())];
                ConstHistogram {
                    counts: &counts.confidence,
                    bounds: &CONFIDENCE_BUCKETS,
                }
                .encode(&mut family.encode_family(&labels)?)?;
            }
        }

        let mut family = encoder.encode_descriptor(
            "ml_prediction_class",
            "Predictions by class",
            None,
            MetricType::Counter,
        )?;
        for (model_name, totals) in &per_model {
            for (class, counts) in &totals.classes {
                let labels = [("model_name", *model_name), ("predicted_class", class.as_str())];
                counter(&mut family.encode_family(&labels)?, counts.count)?;
            }
        }

        let mut family = encoder.encode_descriptor(
            "ml_slo_latency_seconds",
            "Prediction latency in finer buckets: the latency SLIs (share of requests at or under a bound)",
            None,
            MetricType::Histogram,
        )?;
        for (model_name, model) in &aggregates.models {
            for (version, series) in &model.versions {
                let labels = [
                    ("model_name", model_name.as_str()),
                    ("model_version", version.as_str()),
                ];
                ConstHistogram {
                    counts: &series.totals.slo_latency,
                    bounds: &SLO_LATENCY_BUCKETS,
                }
                .encode(&mut family.encode_family(&labels)?)?;
            }
        }

        if let Ok(slos) = self.shared.config.slos()
            && !slos.is_empty()
        {
            let statuses = crate::alerts::slo_statuses(&aggregates, &slos, None, now_ms);
            let mut family = encoder.encode_descriptor(
                "ml_slo_error_budget_remaining_ratio",
                "Share of the SLO's error budget left over its window (1 untouched, 0 spent, negative overspent)",
                None,
                MetricType::Gauge,
            )?;
            for (slo, status) in &statuses {
                if let Some(remaining) = status.error_budget_remaining {
                    let labels = [("model_name", slo.model.as_str()), ("slo", slo.name.as_str())];
                    gauge(&mut family.encode_family(&labels)?, remaining)?;
                }
            }
            let mut family = encoder.encode_descriptor(
                "ml_slo_burn_rate",
                "Error-budget burn rate over the window (1 spends the budget exactly over the SLO's window)",
                None,
                MetricType::Gauge,
            )?;
            for (slo, status) in &statuses {
                for (window, burn) in &status.burn_rates {
                    let Some(burn) = burn else { continue };
                    let labels = [
                        ("model_name", slo.model.as_str()),
                        ("slo", slo.name.as_str()),
                        ("window", window.as_str()),
                    ];
                    gauge(&mut family.encode_family(&labels)?, *burn)?;
                }
            }
        }

        self.encode_drift(&mut encoder)?;

        let feature_window = Window::ending_at(now_ms, self.shared.config.metrics.feature_window.ms);
        let mut family = encoder.encode_descriptor(
            "ml_feature_value",
            "Feature statistics over the configured feature window, ending now",
            None,
            MetricType::Gauge,
        )?;
        for model_name in aggregates.models.keys() {
            let Some(bucket) = aggregates.window(model_name, None, feature_window) else {
                continue;
            };
            for (feature, stats) in &bucket.features {
                let moments = &stats.numeric;
                let statistics = [
                    ("mean", moments.mean()),
                    ("std", moments.std()),
                    ("min", moments.min()),
                    ("max", moments.max()),
                ];
                for (statistic, value) in statistics {
                    let Some(value) = value else { continue };
                    let labels = [
                        ("model_name", model_name.as_str()),
                        ("feature_name", feature.as_str()),
                        ("statistic", statistic),
                    ];
                    gauge(&mut family.encode_family(&labels)?, value)?;
                }
            }
        }

        let mut family = encoder.encode_descriptor(
            "modelwatch_cardinality_folded",
            "Label values folded into __other__ past a cardinality limit",
            None,
            MetricType::Counter,
        )?;
        for (model_name, model) in &aggregates.models {
            for (dimension, count) in &model.limits.folded {
                let labels = [
                    ("model_name", model_name.as_str()),
                    ("dimension", dimension.as_str()),
                ];
                counter(&mut family.encode_family(&labels)?, *count)?;
            }
        }
        let mut applied = encoder.encode_descriptor(
            "ml_prediction_labeled",
            "Labeled predictions by predicted and actual class (corrected labels also count in ml_prediction_label_retracted_total)",
            None,
            MetricType::Counter,
        )?;
        encode_label_counters(&aggregates, &mut applied, false)?;
        let mut retracted = encoder.encode_descriptor(
            "ml_prediction_label_retracted",
            "Labels replaced by a correction, by predicted and the replaced actual class; subtract from ml_prediction_labeled_total",
            None,
            MetricType::Counter,
        )?;
        encode_label_counters(&aggregates, &mut retracted, true)?;

        let mut cache = self.quality_cache.lock().expect("quality cache lock");
        if cache.as_ref().is_none_or(|cached| {
            now_ms - cached.computed_at_ms >= QUALITY_GAUGES_TTL_MS || now_ms < cached.computed_at_ms
        }) {
            *cache = Some(quality_gauges(&aggregates, &self.shared.config.metrics, now_ms));
        }
        let model_names: Vec<String> = aggregates.models.keys().cloned().collect();
        drop(aggregates);
        let gauges = cache.as_ref().expect("computed above");
        let mut family = encoder.encode_descriptor(
            "ml_model_accuracy",
            "Accuracy of the labeled predictions made in the window, ending now",
            None,
            MetricType::Gauge,
        )?;
        for (model_name, window, _, report) in &gauges.rows {
            if let Some(report) = report {
                let labels = [("model_name", model_name.as_str()), ("window", window.as_str())];
                gauge(&mut family.encode_family(&labels)?, report.accuracy)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "ml_model_labeled_sample_size",
            "Labeled predictions made in the window, ending now",
            None,
            MetricType::Gauge,
        )?;
        for (model_name, window, sample_size, _) in &gauges.rows {
            let labels = [("model_name", model_name.as_str()), ("window", window.as_str())];
            gauge(&mut family.encode_family(&labels)?, *sample_size as f64)?;
        }
        type Pick = fn(&ClassScores) -> f64;
        let per_class: [(&str, &str, Pick); 3] = [
            (
                "ml_model_precision",
                "Precision per class over the window, ending now",
                |scores| scores.precision,
            ),
            (
                "ml_model_recall",
                "Recall per class over the window, ending now",
                |scores| scores.recall,
            ),
            (
                "ml_model_f1",
                "F1 per class over the window, ending now",
                |scores| scores.f1,
            ),
        ];
        for (name, help, pick) in per_class {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (model_name, window, _, report) in &gauges.rows {
                let Some(report) = report else { continue };
                for (class, scores) in &report.per_class {
                    let labels = [
                        ("model_name", model_name.as_str()),
                        ("window", window.as_str()),
                        ("class", class.as_str()),
                    ];
                    gauge(&mut family.encode_family(&labels)?, pick(scores))?;
                }
            }
        }
        drop(cache);
        debug_assert!(!OTHER.is_empty());

        let telemetry = &self.shared.telemetry;
        let mut family = encoder.encode_descriptor(
            "modelwatch_events_ingested",
            "Prediction events stored durably",
            None,
            MetricType::Counter,
        )?;
        counter(&mut family, telemetry.events_stored.load(Ordering::Relaxed))?;
        let mut family = encoder.encode_descriptor(
            "modelwatch_events_duplicate",
            "Events acknowledged as duplicates of stored prediction ids",
            None,
            MetricType::Counter,
        )?;
        counter(&mut family, telemetry.events_duplicate.load(Ordering::Relaxed))?;
        let rejected = telemetry.events_rejected.lock().expect("telemetry lock").clone();
        let mut family = encoder.encode_descriptor(
            "modelwatch_events_rejected",
            "Events rejected, by error code",
            None,
            MetricType::Counter,
        )?;
        for (code, count) in rejected {
            counter(&mut family.encode_family(&[("code", code)])?, count)?;
        }
        let mut family = encoder.encode_descriptor(
            "modelwatch_requests_overloaded",
            "Ingestion requests answered 429 because the write queue was full",
            None,
            MetricType::Counter,
        )?;
        counter(&mut family, telemetry.requests_overloaded.load(Ordering::Relaxed))?;
        let mut family = encoder.encode_descriptor(
            "modelwatch_write_queue_events",
            "Events parsed and waiting for the writer",
            None,
            MetricType::Gauge,
        )?;
        gauge(
            &mut family,
            telemetry.queued_events.load(Ordering::Relaxed) as f64,
        )?;
        let labels = &telemetry.labels;
        let label_counters = [
            (
                "modelwatch_labels_joined",
                "Labels joined to their prediction",
                &labels.joined,
                MetricType::Gauge,
            ),
            (
                "modelwatch_labels_held",
                "Labels waiting for their prediction",
                &labels.held,
                MetricType::Gauge,
            ),
            (
                "modelwatch_labels_orphaned",
                "Labels whose prediction did not arrive within labels.early_label_ttl",
                &labels.orphaned,
                MetricType::Counter,
            ),
            (
                "modelwatch_labels_duplicate",
                "Labels identical to the stored label of their prediction",
                &labels.duplicates,
                MetricType::Counter,
            ),
            (
                "modelwatch_labels_corrected",
                "Labels that replaced a different stored label",
                &labels.corrected,
                MetricType::Counter,
            ),
        ];
        for (name, help, value, metric_type) in label_counters {
            let mut family = encoder.encode_descriptor(name, help, None, metric_type)?;
            let value = value.load(Ordering::Relaxed);
            match metric_type {
                MetricType::Counter => counter(&mut family, value)?,
                _ => gauge(&mut family, value as f64)?,
            }
        }
        let mut family = encoder.encode_descriptor(
            "modelwatch_predictions_pruned",
            "Stored predictions deleted past labels.horizon (their aggregates stay)",
            None,
            MetricType::Counter,
        )?;
        counter(&mut family, telemetry.predictions_pruned.load(Ordering::Relaxed))?;
        let mut family = encoder.encode_descriptor(
            "modelwatch_wal_truncations",
            "Times the writer checkpointed and truncated a write-ahead log past 512 MiB",
            None,
            MetricType::Counter,
        )?;
        counter(&mut family, telemetry.wal_truncations.load(Ordering::Relaxed))?;
        let active = self.shared.alerts.active.read().expect("alert view lock").clone();
        let mut family = encoder.encode_descriptor(
            "modelwatch_alerts",
            "Alerts pending or firing now per model, as the native evaluator last found them",
            None,
            MetricType::Gauge,
        )?;
        // Every known model has both series, at 0 without alerts, so that a
        // sum over a model selection is 0 rather than empty.
        let models: std::collections::BTreeSet<&str> = model_names
            .iter()
            .map(String::as_str)
            .chain(active.iter().map(|alert| alert.model.as_str()))
            .collect();
        for model in models {
            for (state, name) in [(AlertState::Pending, "pending"), (AlertState::Firing, "firing")] {
                let count = active
                    .iter()
                    .filter(|alert| alert.state == state && alert.model == model)
                    .count();
                let labels = [("model_name", model), ("state", name)];
                gauge(&mut family.encode_family(&labels)?, count as f64)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "modelwatch_alert_evaluations",
            "Evaluations of every alert rule",
            None,
            MetricType::Counter,
        )?;
        counter(
            &mut family,
            self.shared.alerts.evaluations.load(Ordering::Relaxed),
        )?;
        if let Some(Ok(pending)) = self.shared.readers.with(|reader| reader.outbox_pending()) {
            let mut family = encoder.encode_descriptor(
                "modelwatch_notifications_pending",
                "Notifications and remediation calls queued and not delivered yet (retried with backoff)",
                None,
                MetricType::Gauge,
            )?;
            gauge(&mut family, pending as f64)?;
        }
        let commit_seconds = telemetry.commit_seconds.lock().expect("telemetry lock").clone();
        let mut family = encoder.encode_descriptor(
            "modelwatch_commit_duration_seconds",
            "Duration of group commits",
            None,
            MetricType::Histogram,
        )?;
        ConstHistogram {
            counts: &commit_seconds,
            bounds: &COMMIT_BUCKETS,
        }
        .encode(&mut family)?;
        Ok(())
    }
}

/// Whether the scraper asked for OpenMetrics.
fn wants_openmetrics(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|accept| accept.contains("application/openmetrics-text"))
}

/// Encodes the registry as OpenMetrics text.
pub fn encode_openmetrics(registry: &Registry) -> String {
    let mut text = String::with_capacity(64 * 1024);
    prometheus_client::encoding::text::encode(&mut text, registry).expect("writing to a String cannot fail");
    text
}

/// Rewrites OpenMetrics text into Prometheus text format 0.0.4: counters are
/// declared under their `_total` sample name, and `# UNIT`/`# EOF` lines and
/// `_created` samples (absent in 0.0.4) are dropped.
pub fn openmetrics_to_text_004(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    // OpenMetrics writes HELP before TYPE; the HELP line waits for the TYPE
    // line to learn whether the family is a counter.
    let mut pending_help: Option<(&str, &str)> = None;
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            pending_help = Some(rest.split_once(' ').unwrap_or((rest, "")));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let suffix = if kind == "counter" { "_total" } else { "" };
            if let Some((help_name, help)) = pending_help.take() {
                debug_assert_eq!(help_name, name);
                out.push_str("# HELP ");
                out.push_str(name);
                out.push_str(suffix);
                out.push(' ');
                out.push_str(help);
                out.push('\n');
            }
            out.push_str("# TYPE ");
            out.push_str(name);
            out.push_str(suffix);
            out.push(' ');
            out.push_str(kind);
            out.push('\n');
            continue;
        }
        let sample_name = line.split(['{', ' ']).next().unwrap_or("");
        if sample_name.ends_with("_created") {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

pub(crate) async fn metrics(State(app): State<App>, headers: HeaderMap) -> Response {
    let openmetrics = wants_openmetrics(&headers);
    let registry = app.registry.clone();
    let (body, content_type) = tokio::task::spawn_blocking(move || {
        let text = encode_openmetrics(&registry);
        if openmetrics {
            (text, OPENMETRICS_CONTENT_TYPE)
        } else {
            (openmetrics_to_text_004(&text), TEXT_CONTENT_TYPE)
        }
    })
    .await
    .expect("metrics encoding does not panic");
    let mut response = body.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// One series per (predicted, actual) pair ever labeled, in both families:
/// the retracted counter starts at 0 beside its applied one, so that
/// `applied - retracted` in PromQL always finds both sides.
fn encode_label_counters(
    aggregates: &Aggregates,
    family: &mut MetricEncoder<'_>,
    retracted: bool,
) -> Result<(), std::fmt::Error> {
    for (model_name, model) in &aggregates.models {
        for (version, series) in &model.versions {
            for (predicted, row) in &series.labels.applied {
                for (actual, applied) in row {
                    let count = if retracted {
                        series
                            .labels
                            .retracted
                            .get(predicted)
                            .and_then(|row| row.get(actual))
                            .copied()
                            .unwrap_or(0)
                    } else {
                        *applied
                    };
                    let labels = [
                        ("model_name", model_name.as_str()),
                        ("model_version", version.as_str()),
                        ("predicted_class", predicted.as_str()),
                        ("actual_class", actual.as_str()),
                    ];
                    counter(&mut family.encode_family(&labels)?, count)?;
                }
            }
        }
    }
    Ok(())
}

fn quality_gauges(aggregates: &Aggregates, config: &MetricsConfig, now_ms: i64) -> QualityGauges {
    let mut rows = Vec::new();
    for model_name in aggregates.models.keys() {
        for window_text in &config.quality_windows {
            let Ok(window_ms) = parse_duration_ms(window_text) else {
                continue; // refused when the config was loaded
            };
            let figures = crate::query_api::quality_figures(
                aggregates,
                model_name,
                None,
                None,
                Window::ending_at(now_ms, window_ms),
            );
            let Some(figures) = figures else { continue };
            if figures.quality.labeled == 0 {
                continue;
            }
            rows.push((
                model_name.clone(),
                window_text.clone(),
                figures.quality.labeled,
                figures.classification,
            ));
        }
    }
    QualityGauges {
        computed_at_ms: now_ms,
        rows,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_004_declares_counters_under_their_sample_name() {
        let openmetrics = "# HELP a Requests.\n# TYPE a counter\na_total{m=\"x\"} 3\na_created 1.0\n\
                           # HELP h Latency.\n# TYPE h histogram\nh_sum 1.0\n# UNIT h seconds\n# EOF\n";
        assert_eq!(
            openmetrics_to_text_004(openmetrics),
            "# HELP a_total Requests.\n# TYPE a_total counter\na_total{m=\"x\"} 3\n\
             # HELP h Latency.\n# TYPE h histogram\nh_sum 1.0\n"
        );
    }
}
