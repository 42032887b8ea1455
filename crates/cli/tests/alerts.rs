//! Alerts and SLOs end to end on the real binary: the example config passes
//! `modelwatch check`, an alert goes pending, fires and resolves as events
//! arrive, its history and state survive a restart, and the SLO endpoint and
//! gauges report the budgets of the seed's `slo.yaml`.

mod support;

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use support::{Server, parse_exposition_samples, wait_until};

const DEADLINE: Duration = Duration::from_secs(30);

fn modelwatch(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_modelwatch"))
        .args(args)
        .env_remove("MODELWATCH_CONFIG")
        .output()
        .expect("run modelwatch")
}

#[test]
fn the_example_config_passes_the_check() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../modelwatch.example.yaml");
    let output = modelwatch(&["check", "--config", example.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("MLModelSlowMedian"), "{stdout}");
    assert!(
        stdout.contains("fraud_detector latency_p50 (objective 0.5)"),
        "{stdout}"
    );
}

#[test]
fn check_reports_line_and_column() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("bad.yaml");
    std::fs::write(
        &path,
        "alerts:\n  rules:\n    MLModelHighLatency:\n      treshold: 0.3\n",
    )
    .unwrap();
    let output = modelwatch(&["check", "--config", path.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("line 4 column 7") && stderr.contains("treshold"),
        "{stderr}"
    );
}

fn event(id: usize, error: bool, latency: f64) -> String {
    let mut event = json!({
        "prediction_id": format!("p{id}"),
        "model": "fraud_detector",
        "version": "v3",
        "latency_seconds": latency,
    });
    if error {
        event["status"] = json!("error");
        event["error_type"] = json!("ValueError");
    } else {
        event["prediction"] = json!(if id.is_multiple_of(2) { "0" } else { "1" });
        event["confidence"] = json!(0.9);
    }
    event.to_string()
}

fn alerts(server: &Server) -> Vec<Value> {
    let (status, _, body) = server.get("/v1/alerts");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str::<Value>(&body).unwrap()["alerts"]
        .as_array()
        .unwrap()
        .clone()
}

fn alert_state(server: &Server, name: &str) -> Option<String> {
    alerts(server)
        .iter()
        .find(|alert| alert["name"] == name)
        .map(|alert| alert["state"].as_str().unwrap().to_owned())
}

fn history(server: &Server) -> Vec<Value> {
    let (status, _, body) = server.get("/v1/alerts/history?limit=100");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str::<Value>(&body).unwrap()["entries"]
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn an_alert_fires_resolves_and_survives_a_restart() {
    let directory = tempfile::tempdir().unwrap();
    let config = directory.path().join("config.yaml");
    std::fs::write(
        &config,
        "alerts:\n  evaluation_interval: 1s\n  rules:\n    MLModelHighErrorRate:\n      for: 3s\n\
         slos:\n  fraud_detector:\n    availability:\n      target: 99.9\n      window: 30d\n\
         \x20   latency:\n      p99_target_ms: 100\n      p50_target_ms: 20\n",
    )
    .unwrap();
    let data = directory.path().join("data");
    let mut server = Server::builder(&data)
        .arg("--config")
        .arg(config.to_str().unwrap())
        .start();

    // 200 events, 20 of them errors (10%); latencies: 120 at 10 ms, 80 at 30 ms.
    let lines: Vec<String> = (0..200)
        .map(|id| event(id, id % 10 == 0, if id < 120 { 0.01 } else { 0.03 }))
        .collect();
    let (status, answer) = server.post_ndjson("/v1/predictions", &lines);
    assert_eq!(
        (status, answer["accepted"].as_u64()),
        (200, Some(200)),
        "{answer}"
    );

    // Pending first (for: 3s), then firing.
    assert!(
        wait_until(DEADLINE, || alert_state(&server, "MLModelHighErrorRate")
            .as_deref()
            == Some("firing")),
        "never fired: {:?}",
        alerts(&server)
    );
    let firing = alerts(&server)
        .into_iter()
        .find(|alert| alert["name"] == "MLModelHighErrorRate")
        .unwrap();
    assert_eq!(firing["model"], "fraud_detector");
    assert_eq!(firing["version"], "v3");
    assert_eq!(firing["labels"]["severity"], "critical");
    assert_eq!(
        firing["annotations"]["summary"],
        "Model fraud_detector error rate > 1%"
    );
    assert!(
        (firing["value"].as_f64().unwrap() - 0.1).abs() < 1e-12,
        "{firing}"
    );
    let transitions: Vec<(String, String)> = history(&server)
        .iter()
        .filter(|entry| entry["alert"]["name"] == "MLModelHighErrorRate")
        .map(|entry| {
            (
                entry["from"].as_str().unwrap().to_owned(),
                entry["to"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    // Newest first.
    assert_eq!(
        transitions,
        [
            ("pending".into(), "firing".into()),
            ("inactive".into(), "pending".into())
        ],
        "{transitions:?}"
    );

    // The SLOs of this traffic, computed by hand: 20 of 200 requests failed
    // against a 0.1% budget; 120 of 200 are at or under 20 ms, all under 100 ms.
    let (status, _, body) = server.get("/v1/models/fraud_detector/slo");
    assert_eq!(status, 200, "{body}");
    let slo: Value = serde_json::from_str(&body).unwrap();
    let by_name = |name: &str| {
        slo["slos"]
            .as_array()
            .unwrap()
            .iter()
            .find(|entry| entry["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in {slo}"))
            .clone()
    };
    let availability = by_name("availability");
    assert_eq!(
        (availability["good"].as_u64(), availability["total"].as_u64()),
        (Some(180), Some(200))
    );
    let burn = availability["burn_rates"]["5m"].as_f64().unwrap();
    assert!((burn - 0.1 / 0.001).abs() < 1e-6, "{availability}");
    let remaining = availability["error_budget_remaining"].as_f64().unwrap();
    assert!((remaining - (1.0 - 100.0)).abs() < 1e-6, "{availability}");
    let p50 = by_name("latency_p50");
    assert_eq!(
        (p50["good"].as_u64(), p50["total"].as_u64()),
        (Some(120), Some(200))
    );
    // 40% of requests over 20 ms against a 50% budget: burn 0.8.
    assert!(
        (p50["burn_rates"]["1h"].as_f64().unwrap() - 0.8).abs() < 1e-9,
        "{p50}"
    );
    let p99 = by_name("latency_p99");
    assert_eq!(p99["error_budget_remaining"].as_f64(), Some(1.0), "{p99}");

    // The same figures on /metrics.
    let (_, _, exposition) = server.get("/metrics");
    let samples = parse_exposition_samples(&exposition);
    let sample = |name: &str, labels: &[(&str, &str)]| {
        samples
            .iter()
            .find(|sample| {
                sample.name == name
                    && labels
                        .iter()
                        .all(|(key, value)| sample.labels.get(*key).map(String::as_str) == Some(*value))
            })
            .map(|sample| sample.value)
            .unwrap_or_else(|| panic!("no {name} {labels:?} in\n{exposition}"))
    };
    let remaining_gauge = sample(
        "ml_slo_error_budget_remaining_ratio",
        &[("model_name", "fraud_detector"), ("slo", "availability")],
    );
    assert!((remaining_gauge - remaining).abs() < 1e-6);
    let p50_burn = sample(
        "ml_slo_burn_rate",
        &[
            ("model_name", "fraud_detector"),
            ("slo", "latency_p50"),
            ("window", "1h"),
        ],
    );
    assert!((p50_burn - 0.8).abs() < 1e-9);
    assert_eq!(
        sample(
            "ml_slo_latency_seconds_bucket",
            &[
                ("model_name", "fraud_detector"),
                ("model_version", "v3"),
                ("le", "0.02")
            ]
        ),
        120.0
    );

    // modelwatch's own view of its alerting.
    assert!(
        sample(
            "modelwatch_alerts",
            &[("model_name", "fraud_detector"), ("state", "firing")]
        ) >= 1.0
    );
    assert!(sample("modelwatch_alert_evaluations_total", &[]) >= 1.0);
    assert_eq!(
        sample("modelwatch_notifications_pending", &[]),
        0.0,
        "no receiver is configured"
    );

    // A restart keeps the history and the firing alert (with its start time).
    let fired_at = firing["fired_at"].clone();
    server.stop();
    server.restart();
    assert_eq!(
        alert_state(&server, "MLModelHighErrorRate").as_deref(),
        Some("firing")
    );
    assert!(
        wait_until(DEADLINE, || {
            alerts(&server)
                .iter()
                .any(|alert| alert["name"] == "MLModelHighErrorRate" && alert["fired_at"] == fired_at)
        }),
        "{:?}",
        alerts(&server)
    );
    assert!(history(&server).len() >= 2);

    // 2000 good events bring the error rate to 20/2200 < 1%: resolved.
    let lines: Vec<String> = (1000..3000).map(|id| event(id, false, 0.01)).collect();
    let (status, _) = server.post_ndjson("/v1/predictions", &lines);
    assert_eq!(status, 200);
    assert!(
        wait_until(DEADLINE, || alert_state(&server, "MLModelHighErrorRate")
            .is_none()),
        "never resolved: {:?}",
        alerts(&server)
    );
    let newest = history(&server)
        .into_iter()
        .find(|entry| entry["alert"]["name"] == "MLModelHighErrorRate")
        .unwrap();
    assert_eq!(
        (newest["from"].as_str(), newest["to"].as_str()),
        (Some("firing"), Some("resolved"))
    );
    assert!(newest["alert"]["resolved_at"].is_string(), "{newest}");
}

#[test]
fn bad_queries_are_answered_with_the_field() {
    let directory = tempfile::tempdir().unwrap();
    let server = Server::start(directory.path());
    let (status, _, body) = server.get("/v1/alerts/history?limit=0");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("\"field\":\"limit\""), "{body}");
    let (status, _, body) = server.get("/v1/models/nobody/slo");
    assert_eq!(status, 404, "{body}");
    let (status, _, body) = server.get("/v1/models/nobody/slo?end=yesterday");
    assert_eq!(status, 400, "{body}");
}
