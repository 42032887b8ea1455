//! End-to-end tests of modelwatch's Prometheus exposition against the
//! independent oracles: `promtool check metrics` and a real Prometheus that
//! scrapes the real binary and evaluates the seed's "Key Queries" verbatim.
//!
//! Needs Prometheus 2.x (`apt-get install -y prometheus`).

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{
    ExposedSample, Prometheus, Server, assert_relative_eq, content_type, parse_exposition_samples,
    parse_exposition_types, prometheus2_rate, promtool_check_metrics,
};

// The seed's "Key Queries", copied verbatim (line breaks included).
const SEED_REQUEST_RATE: &str = "sum(rate(ml_prediction_requests_total[5m])) by (model_name)";
const SEED_P99_LATENCY: &str = "histogram_quantile(0.99,
  sum(rate(ml_prediction_latency_seconds_bucket[5m])) by (le, model_name)
)";
const SEED_ERROR_RATE: &str = "sum(rate(ml_prediction_errors_total[5m])) by (model_name)
/
sum(rate(ml_prediction_requests_total[5m])) by (model_name)";
const SEED_PREDICTION_DISTRIBUTION: &str = "sum(rate(ml_prediction_class_total[1h])) by (predicted_class)";
const SEED_LOW_CONFIDENCE: &str = "histogram_quantile(0.10,
  sum(rate(ml_prediction_confidence_bucket[1h])) by (le)
)";

const LATENCY_BUCKETS: [f64; 8] = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];
const CONFIDENCE_BUCKETS: [f64; 7] = [0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99];

/// How long Prometheus may take to show something modelwatch already exposes
/// (a few 1 s scrapes).
const SCRAPE_DEADLINE: Duration = Duration::from_secs(15);

fn post_accepting_all(server: &Server, events: &[Value], as_ndjson: bool) -> u64 {
    let (status, answer) = if as_ndjson {
        let lines: Vec<String> = events.iter().map(Value::to_string).collect();
        server.post_ndjson("/v1/predictions", &lines)
    } else {
        server.post_json("/v1/predictions", &Value::Array(events.to_vec()))
    };
    assert_eq!(status, 200, "POST /v1/predictions answered {status}: {answer}");
    assert_eq!(
        answer["accepted"],
        json!(events.len()),
        "not every event was accepted: {answer}"
    );
    assert_eq!(answer["duplicates"], json!(0), "unexpected duplicates: {answer}");
    assert_eq!(answer["rejected"], json!([]), "unexpected rejections: {answer}");
    events.len() as u64
}

// ---------------------------------------------------------------------------
// The harness itself, against a fixture exporter
// ---------------------------------------------------------------------------

/// The rate formula the modelwatch test relies on must be the one the
/// installed Prometheus uses. A fixture series that starts near zero sits
/// exactly where Prometheus 2 and 3 disagree (the zero-point clamp), and a
/// second series has a counter reset.
#[test]
fn harness_rate_formula_matches_the_installed_prometheus() {
    let exporter = support::FixtureExporter::start(|scrape| {
        let with_reset = if scrape <= 3 {
            100 * scrape
        } else {
            5 * (scrape - 3)
        };
        format!(
            "# HELP fixture_events_total Events seen by the fixture.\n\
             # TYPE fixture_events_total counter\n\
             fixture_events_total{{series=\"steady\"}} {steady}\n\
             fixture_events_total{{series=\"with_reset\"}} {with_reset}\n",
            steady = 10 * scrape,
        )
    });
    let prometheus = Prometheus::start(&[exporter.address()], "1s");
    prometheus.wait_for(
        "count_over_time(fixture_events_total{series=\"with_reset\"}[5m])",
        SCRAPE_DEADLINE,
        |vector| vector.first().is_some_and(|(_, samples)| *samples >= 6.0),
    );

    // Evaluate shortly after the newest stored scrape and before the next
    // one (1 s later), so that every query below sees the same samples.
    let newest_sample_ms =
        newest_sample_ms(&prometheus.query_range_raw("fixture_events_total[5m]", support::unix_now_ms()));
    let evaluation_ms = newest_sample_ms + 250;

    for (range, range_ms) in [("5m", 300_000), ("3s", 3_000)] {
        let raw = prometheus.query_range_raw(&format!("fixture_events_total[{range}]"), evaluation_ms);
        let rates = prometheus.query_at(&format!("rate(fixture_events_total[{range}])"), evaluation_ms);
        assert_eq!(
            rates.len(),
            2,
            "one rate per fixture series over [{range}]: {rates:?}"
        );
        for (labels, prometheus_rate) in &rates {
            let samples = samples_of(&raw, labels);
            assert!(samples.len() >= 2, "too few samples over [{range}]: {samples:?}");
            let expected =
                prometheus2_rate(samples, evaluation_ms, range_ms).expect("two samples give a rate");
            assert_relative_eq(
                *prometheus_rate,
                expected,
                1e-9,
                &format!(
                    "rate over [{range}] of {labels:?} from samples {samples:?} (prometheus2_rate \
                     models Prometheus 2.x: see `prometheus --version`)"
                ),
            );
        }
    }
    let raw = prometheus.query_range_raw("fixture_events_total[5m]", evaluation_ms);
    let (_, with_reset) = raw
        .iter()
        .find(|(labels, _)| labels.get("series").map(String::as_str) == Some("with_reset"))
        .unwrap_or_else(|| panic!("no with_reset series in {raw:?}"));
    assert!(
        with_reset.windows(2).any(|pair| pair[1].1 < pair[0].1),
        "the fixture's counter reset is within the range: {with_reset:?}"
    );
    assert!(exporter.scrapes() >= 6, "the fixture was scraped");
}

/// The raw samples of the series whose labels (less `__name__`) are `labels`.
fn samples_of<'a>(raw: &'a support::RangeVector, labels: &support::Labels) -> &'a [(i64, f64)] {
    raw.iter()
        .find(|(series_labels, _)| {
            let mut without_name = series_labels.clone();
            without_name.remove("__name__");
            &without_name == labels
        })
        .map(|(_, samples)| samples.as_slice())
        .unwrap_or_else(|| panic!("no raw series with labels {labels:?} in {raw:?}"))
}

fn newest_sample_ms(raw: &support::RangeVector) -> i64 {
    raw.iter()
        .filter_map(|(_, samples)| samples.last().map(|(timestamp_ms, _)| *timestamp_ms))
        .max()
        .unwrap_or_else(|| panic!("no samples at all: {raw:?}"))
}

// ---------------------------------------------------------------------------
// promtool and content negotiation
// ---------------------------------------------------------------------------

/// A batch touching every family: two versions of a classifier with
/// probabilities, errors of two types and timeouts, a classifier reporting
/// `confidence` and no version, and a regression model with numeric output;
/// numeric and categorical features.
fn varied_events() -> Vec<Value> {
    let mut events = Vec::new();
    let latencies = [0.004, 0.012, 0.03, 0.07, 0.2, 0.3, 0.8, 1.7, 3.0];
    for index in 0..30 {
        let fraud_probability = f64::from(index % 10) / 10.0 + 0.05;
        let predicted_class = if fraud_probability > 0.5 { "1" } else { "0" };
        let country = ["DE", "FR", "US"][index as usize % 3];
        let region = ["eu", "us"][index as usize % 2];
        events.push(json!({
            "prediction_id": format!("varied-fd-v2-{index}"),
            "model": "fraud_detector", "version": "v2",
            "latency_seconds": latencies[index as usize % latencies.len()],
            "status": "ok",
            "prediction": predicted_class,
            "probabilities": {"0": 1.0 - fraud_probability, "1": fraud_probability},
            "features": {"amount": 10.0 + f64::from(index) * 7.5, "country": country},
            "segments": {"region": region},
        }));
    }
    for index in 0..27 {
        let (status, error_type) = match index {
            0..=2 => ("error", Some("ValueError")),
            3..=4 => ("error", Some("KeyError")),
            5..=6 => ("timeout", None),
            _ => ("ok", None),
        };
        let mut event = json!({
            "prediction_id": format!("varied-fd-v3-{index}"),
            "model": "fraud_detector", "version": "v3",
            "latency_seconds": if status == "timeout" { 2.0 } else { 0.015 },
            "status": status,
            "features": {"amount": 5.0 + f64::from(index), "country": "DE"},
        });
        if let Some(error_type) = error_type {
            event["error_type"] = json!(error_type);
        }
        if status == "ok" {
            event["prediction"] = json!(if index % 4 == 0 { "1" } else { "0" });
            event["probabilities"] = json!({"0": 0.3, "1": 0.7});
            if index % 4 != 0 {
                event["probabilities"] = json!({"0": 0.92, "1": 0.08});
            }
        }
        events.push(event);
    }
    for index in 0..15 {
        events.push(json!({
            "prediction_id": format!("varied-churn-{index}"),
            "model": "churn_model",
            "latency_seconds": 0.05,
            "status": "ok",
            "prediction": if index % 3 == 0 { "churn" } else { "stay" },
            "confidence": 0.5 + f64::from(index) / 30.0,
            "features": {"tenure_months": f64::from(index * 3)},
        }));
    }
    for index in 0..10 {
        events.push(json!({
            "prediction_id": format!("varied-price-{index}"),
            "model": "price_regressor", "version": "v1",
            "latency_seconds": 0.11,
            "status": "ok",
            "prediction": 100_000.0 + f64::from(index) * 2_500.5,
            "features": {"sqft": 800.0 + f64::from(index) * 40.0, "has_garage": index % 2 == 0},
        }));
    }
    events
}

fn series<'a>(samples: &'a [ExposedSample], name: &str) -> Vec<&'a ExposedSample> {
    samples.iter().filter(|sample| sample.name == name).collect()
}

fn value_of(samples: &[ExposedSample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let wanted: BTreeMap<String, String> = labels
        .iter()
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect();
    samples
        .iter()
        .find(|sample| sample.name == name && sample.labels == wanted)
        .map(|sample| sample.value)
}

/// Each series of histogram `name` has exactly the buckets `bounds` plus `+Inf`.
fn assert_histogram_buckets(samples: &[ExposedSample], name: &str, bounds: &[f64]) {
    let mut bounds_by_series: BTreeMap<Vec<(String, String)>, Vec<f64>> = BTreeMap::new();
    for sample in series(samples, &format!("{name}_bucket")) {
        let mut labels = sample.labels.clone();
        let le = labels
            .remove("le")
            .unwrap_or_else(|| panic!("{name}_bucket without le: {sample:?}"));
        let le = support::parse_prometheus_float(&le)
            .unwrap_or_else(|| panic!("{name}_bucket with an unreadable le: {sample:?}"));
        bounds_by_series
            .entry(labels.into_iter().collect())
            .or_default()
            .push(le);
    }
    assert!(!bounds_by_series.is_empty(), "no {name}_bucket series at all");
    let mut expected: Vec<f64> = bounds.to_vec();
    expected.push(f64::INFINITY);
    for (labels, mut found) in bounds_by_series {
        found.sort_by(f64::total_cmp);
        assert_eq!(found, expected, "buckets of {name}{labels:?}");
    }
}

#[test]
fn exposition_passes_promtool_and_negotiates_openmetrics() {
    let data_dir = tempfile::tempdir().expect("data directory");
    let server = Server::start(data_dir.path());
    post_accepting_all(&server, &varied_events(), true);

    let (status, headers, text_exposition) = server.get("/metrics");
    assert_eq!(status, 200, "GET /metrics: {text_exposition}");
    let text_content_type = content_type(&headers);
    assert!(
        text_content_type.starts_with("text/plain") && text_content_type.contains("version=0.0.4"),
        "the default exposition is Prometheus text 0.0.4, got Content-Type {text_content_type:?}"
    );

    let report = promtool_check_metrics(&text_exposition);
    assert!(
        report.exit_status.success() && !report.output.contains("ml_"),
        "promtool check metrics failed ({}):\n{}\n--- exposition ---\n{text_exposition}",
        report.exit_status,
        report.output
    );

    // promtool passes an empty page too: the families must be there, typed,
    // with the seed's labels and buckets.
    let types = parse_exposition_types(&text_exposition);
    for (family, expected_type) in [
        ("ml_prediction_requests_total", "counter"),
        ("ml_prediction_latency_seconds", "histogram"),
        ("ml_prediction_errors_total", "counter"),
        ("ml_prediction_confidence", "histogram"),
        ("ml_prediction_class_total", "counter"),
        ("ml_feature_value", "gauge"),
    ] {
        assert_eq!(
            types.get(family).map(String::as_str),
            Some(expected_type),
            "# TYPE of {family} in the text exposition"
        );
    }
    let samples = parse_exposition_samples(&text_exposition);
    assert_histogram_buckets(&samples, "ml_prediction_latency_seconds", &LATENCY_BUCKETS);
    assert_histogram_buckets(&samples, "ml_prediction_confidence", &CONFIDENCE_BUCKETS);
    for (model, version, requests) in [
        ("fraud_detector", "v2", 30.0),
        ("fraud_detector", "v3", 27.0),
        ("churn_model", "unversioned", 15.0),
        ("price_regressor", "v1", 10.0),
    ] {
        assert_eq!(
            value_of(
                &samples,
                "ml_prediction_requests_total",
                &[("model_name", model), ("model_version", version)]
            ),
            Some(requests),
            "requests of {model} {version}"
        );
    }
    for (error_type, errors) in [("ValueError", 3.0), ("KeyError", 2.0), ("timeout", 2.0)] {
        assert_eq!(
            value_of(
                &samples,
                "ml_prediction_errors_total",
                &[("model_name", "fraud_detector"), ("error_type", error_type)]
            ),
            Some(errors),
            "errors of type {error_type}"
        );
    }
    for (model, class, predictions) in [
        ("churn_model", "churn", 5.0),
        ("churn_model", "stay", 10.0),
        // v2 predicts "1" for 15 of its 30 events, v3 for 5 of its 20 ok ones.
        ("fraud_detector", "1", 15.0 + 5.0),
        ("fraud_detector", "0", 15.0 + 15.0),
    ] {
        assert_eq!(
            value_of(
                &samples,
                "ml_prediction_class_total",
                &[("model_name", model), ("predicted_class", class)]
            ),
            Some(predictions),
            "predictions of class {class} by {model}"
        );
    }
    for (model, feature) in [
        ("fraud_detector", "amount"),
        ("churn_model", "tenure_months"),
        ("price_regressor", "sqft"),
    ] {
        let statistic = |name: &str| {
            value_of(
                &samples,
                "ml_feature_value",
                &[
                    ("model_name", model),
                    ("feature_name", feature),
                    ("statistic", name),
                ],
            )
            .unwrap_or_else(|| panic!("no ml_feature_value {model}/{feature} statistic={name}"))
        };
        let (mean, std, min, max) = (
            statistic("mean"),
            statistic("std"),
            statistic("min"),
            statistic("max"),
        );
        assert!(
            min <= mean && mean <= max && std >= 0.0 && std.is_finite(),
            "statistics of {model}/{feature}: mean {mean}, std {std}, min {min}, max {max}"
        );
    }

    let (status, headers, openmetrics_exposition) = server.get_with_headers(
        "/metrics",
        &[("Accept", "application/openmetrics-text; version=1.0.0")],
    );
    assert_eq!(
        status, 200,
        "GET /metrics as OpenMetrics: {openmetrics_exposition}"
    );
    let openmetrics_content_type = content_type(&headers);
    assert!(
        openmetrics_content_type.starts_with("application/openmetrics-text")
            && openmetrics_content_type.contains("version=1.0.0"),
        "Accept: application/openmetrics-text is answered with OpenMetrics 1.0.0, got Content-Type {openmetrics_content_type:?}"
    );
    assert!(
        openmetrics_exposition.trim_end_matches('\n').ends_with("\n# EOF")
            && openmetrics_exposition.matches("# EOF").count() == 1,
        "an OpenMetrics exposition ends with its only `# EOF` line:\n{openmetrics_exposition}"
    );
    // OpenMetrics names a counter family without `_total`; its samples keep it.
    let openmetrics_types = parse_exposition_types(&openmetrics_exposition);
    for family in [
        "ml_prediction_requests",
        "ml_prediction_errors",
        "ml_prediction_class",
    ] {
        assert_eq!(
            openmetrics_types.get(family).map(String::as_str),
            Some("counter"),
            "# TYPE of {family} in the OpenMetrics exposition"
        );
    }
    // Same data in both formats (OpenMetrics may add `_created` samples).
    let openmetrics_samples = parse_exposition_samples(&openmetrics_exposition);
    for sample in samples.iter().filter(|sample| sample.name.starts_with("ml_")) {
        let twin = openmetrics_samples
            .iter()
            .find(|candidate| candidate.name == sample.name && candidate.labels == sample.labels);
        assert_eq!(
            twin.map(|twin| twin.value),
            Some(sample.value),
            "the OpenMetrics twin of {sample:?}"
        );
    }
}

// ---------------------------------------------------------------------------
// The seed's Key Queries through a real Prometheus
// ---------------------------------------------------------------------------

const MODEL: &str = "fraud_detector";
const VERSION: &str = "v3";
/// Events per batch, and the fixed composition of every batch.
const BATCH_SIZE: u64 = 1000;
const ERRORS_PER_BATCH: u64 = 20; // status "error", error_type "ValueError"
const TIMEOUTS_PER_BATCH: u64 = 10;
const OK_PER_BATCH: u64 = BATCH_SIZE - ERRORS_PER_BATCH - TIMEOUTS_PER_BATCH; // 970
/// Latencies: every event has one (as in the seed, whose `track_latency`
/// observes failed requests too). The timeouts and 10 ok events are slow.
const SLOW_PER_BATCH: u64 = 20; // 0.4 s, in (0.25, 0.5]
const FAST_PER_BATCH: u64 = BATCH_SIZE - SLOW_PER_BATCH; // 0.02 s, in (0.01, 0.025]
/// Classes of the ok events: 70% "0", 30% "1".
const CLASS_0_PER_BATCH: u64 = 679;
/// Confidences of the ok events: every fifth one 0.55, in (0.5, 0.6]; the
/// others 0.97, in (0.95, 0.99].
const LOW_CONFIDENCE_PER_BATCH: u64 = OK_PER_BATCH / 5; // 194
const BATCHES: u64 = 24;
/// 24 batches 250 ms apart span 6 s, that is about six 1 s scrapes.
const BATCH_PERIOD: Duration = Duration::from_millis(250);

fn composed_batch(batch: u64) -> Vec<Value> {
    (0..BATCH_SIZE)
        .map(|index| {
            let prediction_id = format!("keyq-{batch}-{index}");
            if index < ERRORS_PER_BATCH {
                return json!({
                    "prediction_id": prediction_id, "model": MODEL, "version": VERSION,
                    "latency_seconds": 0.02, "status": "error", "error_type": "ValueError",
                });
            }
            if index < ERRORS_PER_BATCH + TIMEOUTS_PER_BATCH {
                return json!({
                    "prediction_id": prediction_id, "model": MODEL, "version": VERSION,
                    "latency_seconds": 0.4, "status": "timeout",
                });
            }
            let ok_index = index - ERRORS_PER_BATCH - TIMEOUTS_PER_BATCH;
            // The timeouts and the first 10 ok events make the 20 slow ones.
            let latency_seconds = if ok_index < SLOW_PER_BATCH - TIMEOUTS_PER_BATCH {
                0.4
            } else {
                0.02
            };
            let predicted_class = if ok_index < CLASS_0_PER_BATCH { "0" } else { "1" };
            let confidence: f64 = if ok_index.is_multiple_of(5) { 0.55 } else { 0.97 };
            let mut event = json!({
                "prediction_id": prediction_id, "model": MODEL, "version": VERSION,
                "latency_seconds": latency_seconds, "status": "ok",
                "prediction": predicted_class,
            });
            // Half report `confidence`, half `probabilities` (whose largest is
            // the confidence of the predicted class).
            if ok_index.is_multiple_of(2) {
                event["confidence"] = json!(confidence);
            } else {
                let other_class = if predicted_class == "0" { "1" } else { "0" };
                event["probabilities"] = json!({predicted_class: confidence, other_class: 1.0 - confidence});
            }
            event
        })
        .collect()
}

/// Why the ratios below are exact, whatever the scrape timing: each batch has
/// the same composition and is applied as a whole, so every scrape sees
/// whole batches and every counter and bucket series holds (its share per
/// batch) × (batches so far), at the same timestamps. `rate()` then scales
/// each series' increase by the same extrapolation factor (it depends only on
/// the timestamps and on first value / increase, which is the same for all),
/// so ratios of rates are ratios of the per-batch composition.
#[test]
fn seed_key_queries_through_prometheus_match_the_batch_composition() {
    let data_dir = tempfile::tempdir().expect("data directory");
    let server = Server::start(data_dir.path());
    let prometheus = Prometheus::start(&[server.address()], "1s");
    prometheus.wait_for_targets_up(1, SCRAPE_DEADLINE);

    let ingestion_started = Instant::now();
    let mut acknowledged: u64 = 0;
    for batch in 0..BATCHES {
        // Pace the load generator to a fixed schedule so that the batches
        // span several scrapes (a rate, not a wait for a condition).
        let post_at = ingestion_started + BATCH_PERIOD * batch as u32;
        if let Some(until_post) = post_at.checked_duration_since(Instant::now()) {
            std::thread::sleep(until_post);
        }
        acknowledged += post_accepting_all(&server, &composed_batch(batch), batch % 2 == 0);
    }
    assert_eq!(acknowledged, BATCHES * BATCH_SIZE);

    prometheus.wait_for("ml_prediction_requests_total", SCRAPE_DEADLINE, |vector| {
        vector.len() == 1 && vector[0].1 == acknowledged as f64
    });
    // Evaluate shortly after the newest stored scrape and before the next
    // one (1 s later): every query below then sees exactly the same samples.
    let requests_raw_selector = "ml_prediction_requests_total[5m]";
    let evaluation_ms =
        newest_sample_ms(&prometheus.query_range_raw(requests_raw_selector, support::unix_now_ms())) + 250;
    let requests_raw = prometheus.query_range_raw(requests_raw_selector, evaluation_ms);

    // The raw samples: one series, whole batches only, ending at the total
    // modelwatch acknowledged, spread over several scrapes.
    assert_eq!(requests_raw.len(), 1, "one requests series: {requests_raw:?}");
    let (requests_labels, requests_samples) = &requests_raw[0];
    assert_eq!(requests_labels.get("model_name").map(String::as_str), Some(MODEL));
    assert_eq!(
        requests_labels.get("model_version").map(String::as_str),
        Some(VERSION)
    );
    for (timestamp_ms, value) in requests_samples {
        assert!(
            value % BATCH_SIZE as f64 == 0.0,
            "the scrape at {timestamp_ms} ms saw {value} requests, not a whole number of \
             {BATCH_SIZE}-event batches: /metrics exposed part of a batch; samples: {requests_samples:?}"
        );
    }
    assert!(
        requests_samples.windows(2).all(|pair| pair[0].1 <= pair[1].1),
        "a lifetime counter never decreases: {requests_samples:?}"
    );
    assert_eq!(
        requests_samples.last().map(|(_, value)| *value),
        Some(acknowledged as f64),
        "the last scraped total is the acknowledged total: {requests_samples:?}"
    );
    assert!(
        requests_samples.len() >= 3,
        "ingestion spans several scrapes: {requests_samples:?}"
    );

    // Request rate: what Prometheus 2's extrapolation gives from those samples.
    let request_rate = prometheus.query_at(SEED_REQUEST_RATE, evaluation_ms);
    assert_eq!(request_rate.len(), 1, "one model: {request_rate:?}");
    assert_eq!(
        request_rate[0].0.get("model_name").map(String::as_str),
        Some(MODEL)
    );
    let expected_request_rate =
        prometheus2_rate(requests_samples, evaluation_ms, 300_000).expect("several samples give a rate");
    assert_relative_eq(
        request_rate[0].1,
        expected_request_rate,
        1e-9,
        &format!("request rate from samples {requests_samples:?}"),
    );

    // Error rate: errors (ValueError and timeout) per request.
    let error_rate = prometheus.query_at(SEED_ERROR_RATE, evaluation_ms);
    assert_eq!(error_rate.len(), 1, "one model: {error_rate:?}");
    assert_eq!(error_rate[0].0.get("model_name").map(String::as_str), Some(MODEL));
    let expected_error_rate = (ERRORS_PER_BATCH + TIMEOUTS_PER_BATCH) as f64 / BATCH_SIZE as f64;
    assert!(
        (error_rate[0].1 - expected_error_rate).abs() <= 1e-9,
        "error rate: got {}, expected {expected_error_rate}",
        error_rate[0].1
    );

    // P99 latency: rank 0.99 × N falls in (0.25, 0.5], above the 98% fast
    // events; histogram_quantile interpolates linearly inside that bucket.
    let p99 = prometheus.query_at(SEED_P99_LATENCY, evaluation_ms);
    assert_eq!(p99.len(), 1, "one model: {p99:?}");
    let rank = 0.99 * BATCH_SIZE as f64;
    let expected_p99 = 0.25 + (0.5 - 0.25) * (rank - FAST_PER_BATCH as f64) / SLOW_PER_BATCH as f64;
    assert!(
        (p99[0].1 - expected_p99).abs() <= 1e-9,
        "p99 latency: got {}, expected {expected_p99}",
        p99[0].1
    );

    // Prediction distribution: the share of class "0".
    let distribution = prometheus.query_at(SEED_PREDICTION_DISTRIBUTION, evaluation_ms);
    let class_rate = |class: &str| {
        distribution
            .iter()
            .find(|(labels, _)| labels.get("predicted_class").map(String::as_str) == Some(class))
            .map(|(_, rate)| *rate)
            .unwrap_or_else(|| panic!("no class {class} in {distribution:?}"))
    };
    assert_eq!(distribution.len(), 2, "two classes: {distribution:?}");
    let class_0_share = class_rate("0") / (class_rate("0") + class_rate("1"));
    assert!(
        (class_0_share - 0.7).abs() <= 1e-9,
        "share of class 0: got {class_0_share}, expected 0.7 ({distribution:?})"
    );

    // Low confidence: rank 0.10 × ok falls in (0.5, 0.6], which holds the
    // 20% low-confidence events and nothing below it.
    let low_confidence = prometheus.query_at(SEED_LOW_CONFIDENCE, evaluation_ms);
    assert_eq!(low_confidence.len(), 1, "{low_confidence:?}");
    let expected_p10_confidence =
        0.5 + (0.6 - 0.5) * (0.10 * OK_PER_BATCH as f64) / LOW_CONFIDENCE_PER_BATCH as f64;
    assert!(
        (low_confidence[0].1 - expected_p10_confidence).abs() <= 1e-9,
        "p10 confidence: got {}, expected {expected_p10_confidence}",
        low_confidence[0].1
    );

    // Nothing was appended at or before the evaluation time meanwhile.
    assert_eq!(
        prometheus.query_range_raw(requests_raw_selector, evaluation_ms),
        requests_raw,
        "the queries all saw the same samples"
    );
}

// ---------------------------------------------------------------------------
// Labels: the labeled counters of two shards, summed by Prometheus, give the
// precision and recall of one instance that saw everything
// ---------------------------------------------------------------------------

/// The README's recall query, for class `CLASS`.
const README_RECALL: &str =
    "  (sum(ml_prediction_labeled_total{predicted_class=\"CLASS\", actual_class=\"CLASS\"})
 - sum(ml_prediction_label_retracted_total{predicted_class=\"CLASS\", actual_class=\"CLASS\"}))
/ (sum(ml_prediction_labeled_total{actual_class=\"CLASS\"})
 - sum(ml_prediction_label_retracted_total{actual_class=\"CLASS\"}))";

fn labeled_events() -> (Vec<Value>, Vec<Value>, Vec<Value>) {
    let classes = ["a", "b", "c"];
    let now_s = support::unix_now_ms() / 1000;
    let mut predictions = Vec::new();
    let mut labels = Vec::new();
    let mut corrections = Vec::new();
    for index in 0..300u64 {
        let predicted = classes[(index * 7 % 3) as usize];
        predictions.push(json!({
            "prediction_id": format!("q-{index}"),
            "model": MODEL,
            "version": if index % 4 == 0 { "v2" } else { "v1" },
            "timestamp": now_s - 60 - (index as i64 % 600),
            "latency_seconds": 0.01,
            "prediction": predicted,
            "confidence": 0.8,
        }));
        if index % 10 < 7 {
            // Right two times in three.
            let actual = if index % 3 == 0 {
                classes[((index * 7 + 1) % 3) as usize]
            } else {
                predicted
            };
            labels.push(json!({"prediction_id": format!("q-{index}"), "actual": actual}));
            // Every tenth label of a wrong prediction was a mistake: corrected.
            if index % 30 == 0 {
                corrections.push(json!({"prediction_id": format!("q-{index}"), "actual": predicted}));
            }
        }
    }
    (predictions, labels, corrections)
}

fn post_rows(server: &Server, path: &str, rows: &[Value]) {
    if rows.is_empty() {
        return;
    }
    let lines: Vec<String> = rows.iter().map(Value::to_string).collect();
    let (status, answer) = server.post_ndjson(path, &lines);
    assert_eq!(status, 200, "POST {path}: {answer}");
    assert_eq!(answer["accepted"], json!(rows.len()), "POST {path}: {answer}");
}

#[test]
fn shard_label_counters_summed_by_prometheus_give_one_instances_precision_and_recall() {
    let (predictions, labels, corrections) = labeled_events();
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let whole = Server::start(dirs[0].path());
    let shards = [Server::start(dirs[1].path()), Server::start(dirs[2].path())];
    // Shard by prediction id, as a partitioned log would.
    let shard_of = |row: &Value| {
        let id = row["prediction_id"].as_str().unwrap();
        (id.bytes().map(u64::from).sum::<u64>() % 2) as usize
    };
    for (path, rows) in [
        ("/v1/predictions", &predictions),
        ("/v1/labels", &labels),
        ("/v1/labels", &corrections),
    ] {
        post_rows(&whole, path, rows);
        for (index, shard) in shards.iter().enumerate() {
            let part: Vec<Value> = rows
                .iter()
                .filter(|row| shard_of(row) == index)
                .cloned()
                .collect();
            post_rows(shard, path, &part);
        }
    }
    let (status, _, body) = whole.get(&format!("/v1/models/{MODEL}/performance?window=1d"));
    assert_eq!(status, 200, "{body}");
    let performance: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(performance["sample_size"], json!(labels.len()), "{performance}");

    let prometheus = Prometheus::start(&[shards[0].address(), shards[1].address()], "1s");
    prometheus.wait_for_targets_up(2, SCRAPE_DEADLINE);
    prometheus.wait_for("sum(ml_prediction_labeled_total)", SCRAPE_DEADLINE, |vector| {
        vector.len() == 1 && vector[0].1 == (labels.len() + corrections.len()) as f64
    });
    for class in ["a", "b", "c"] {
        let recall = prometheus.query(&README_RECALL.replace("CLASS", class));
        assert_eq!(recall.len(), 1, "recall of {class}: {recall:?}");
        let expected = performance["per_class"][class]["recall"].as_f64().unwrap();
        assert!(
            (recall[0].1 - expected).abs() <= 1e-12,
            "recall of {class}: PromQL over two shards gives {}, one instance's /performance {expected}",
            recall[0].1
        );
        let precision_query = format!(
            "(sum(ml_prediction_labeled_total{{predicted_class=\"{class}\", actual_class=\"{class}\"}}) \
              - sum(ml_prediction_label_retracted_total{{predicted_class=\"{class}\", actual_class=\"{class}\"}})) \
             / (sum(ml_prediction_labeled_total{{predicted_class=\"{class}\"}}) \
              - sum(ml_prediction_label_retracted_total{{predicted_class=\"{class}\"}}))"
        );
        let precision = prometheus.query(&precision_query);
        let expected = performance["per_class"][class]["precision"].as_f64().unwrap();
        assert!(
            (precision[0].1 - expected).abs() <= 1e-12,
            "precision of {class}: PromQL over two shards gives {}, one instance's /performance {expected}",
            precision[0].1
        );
    }
    // The gauges of the instance that saw everything agree with its API.
    let (_, _, exposition) = whole.get("/metrics");
    let samples = parse_exposition_samples(&exposition);
    let accuracy = value_of(
        &samples,
        "ml_model_accuracy",
        &[("model_name", MODEL), ("window", "1d")],
    );
    assert_eq!(
        accuracy,
        performance["accuracy"].as_f64(),
        "ml_model_accuracy{{window=\"1d\"}}"
    );
    let sample_size = value_of(
        &samples,
        "ml_model_labeled_sample_size",
        &[("model_name", MODEL), ("window", "7d")],
    );
    assert_eq!(sample_size, Some(labels.len() as f64));
}
