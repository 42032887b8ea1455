//! Drift against the scipy/numpy oracle, end to end on the real binary.
//!
//! `tests/oracle/generate_drift.py` generated a baseline day and a drifted day
//! for two models and the expected scores (`tests/oracle/drift/`). This test
//! posts the events, asks `/v1/models/{m}/drift` for the drifted day against
//! the previous window and then against a frozen baseline of the first day
//! (the same numbers), and compares:
//! - exact methods (chi-square, Jensen–Shannon, PSI; on numbers with the
//!   documented binning) within 1e-9 absolute, or 1e-7 relative for the tiny
//!   p-values of a large drift (statrs and scipy compute the chi-square tail
//!   with different series);
//! - KS: scipy's statistic on the raw values lies in `[score, score + bound]`
//!   (the bound modelwatch reports), and the p-value within 0.02 of scipy's
//!   (modelwatch uses Kolmogorov's limit distribution with Stephens'
//!   correction; scipy an exact or finite-n distribution: they differ by at
//!   most 0.015 for samples of 50 or more);
//! - normed Wasserstein: within the reported bound of scipy's value.
//!
//! It also checks the default method selection, the baseline API's answers to
//! bad input, persistence of the frozen baseline across a restart, and the
//! drift gauges on `/metrics`.

mod support;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use support::{Server, parse_exposition_samples, wait_until};

const EXACT_ABSOLUTE: f64 = 1e-9;
const EXACT_RELATIVE: f64 = 1e-7;
const KS_P_VALUE_TOLERANCE: f64 = 0.02;

fn oracle_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oracle/drift")
}

fn expected() -> Value {
    let text = std::fs::read_to_string(oracle_dir().join("expected.json")).expect("read expected.json");
    serde_json::from_str(&text).expect("expected.json is JSON")
}

fn event_lines() -> Vec<String> {
    let file = std::fs::File::open(oracle_dir().join("events.ndjson.gz")).expect("open events");
    let mut text = String::new();
    flate2::read::GzDecoder::new(file)
        .read_to_string(&mut text)
        .expect("gunzip events");
    text.lines().map(str::to_owned).collect()
}

fn config(dir: &Path, methods: &Value) -> String {
    let mut yaml = String::from("alerts:\n  evaluation_interval: 1s\ndrift:\n  features:\n");
    for (name, method) in methods.as_object().expect("config_methods") {
        yaml.push_str(&format!("    {name}: {{method: {}}}\n", method.as_str().unwrap()));
    }
    let path = dir.join("modelwatch.yaml");
    std::fs::write(&path, yaml).unwrap();
    path.display().to_string()
}

fn number(value: &Value, what: &str) -> f64 {
    value
        .as_f64()
        .unwrap_or_else(|| panic!("{what}: expected a number, got {value}"))
}

fn exact_match(actual: f64, expected: f64) -> bool {
    let difference = (actual - expected).abs();
    difference <= EXACT_ABSOLUTE || difference <= EXACT_RELATIVE * expected.abs()
}

/// Compares one variable's answer with the oracle's figures.
fn check_variable(what: &str, expected: &Value, actual: &Value, problems: &mut Vec<String>) {
    let method = expected["method"].as_str().unwrap();
    if actual["method"] != expected["method"] {
        problems.push(format!("{what}: method {} instead of {method}", actual["method"]));
        return;
    }
    let score = number(&actual["score"], &format!("{what}.score"));
    match method {
        "ks" => {
            let statistic = number(&actual["statistic"], &format!("{what}.statistic"));
            let bound = number(&actual["error_bound"], &format!("{what}.error_bound"));
            let scipy = number(&expected["statistic"], "statistic");
            if !(statistic - 1e-12 <= scipy && scipy <= statistic + bound + 1e-12) {
                problems.push(format!(
                    "{what}: scipy's KS statistic {scipy} is outside [{statistic}, {statistic} + {bound}]"
                ));
            }
            let p_value = number(&actual["p_value"], &format!("{what}.p_value"));
            let scipy_p = number(&expected["p_value"], "p_value");
            if (p_value - scipy_p).abs() > KS_P_VALUE_TOLERANCE || score != p_value {
                problems.push(format!(
                    "{what}: KS p-value {p_value} (score {score}), scipy's {scipy_p} (tolerance {KS_P_VALUE_TOLERANCE})"
                ));
            }
        }
        "wasserstein" => {
            let bound = number(&actual["error_bound"], &format!("{what}.error_bound"));
            let scipy = number(&expected["score"], "score");
            if (score - scipy).abs() > bound {
                problems.push(format!(
                    "{what}: normed Wasserstein {score}, scipy's {scipy}: off by {} > bound {bound}",
                    (score - scipy).abs()
                ));
            }
            // The bound is useful: well under the 0.1 threshold.
            if bound > 0.05 {
                problems.push(format!(
                    "{what}: error bound {bound} is too loose to tell drift at 0.1"
                ));
            }
        }
        _ => {
            for field in ["score", "statistic", "p_value"] {
                let Some(wanted) = expected.get(field) else {
                    continue;
                };
                let wanted = number(wanted, field);
                let got = number(&actual[field], &format!("{what}.{field}"));
                if !exact_match(got, wanted) {
                    problems.push(format!(
                        "{what}.{field}: {got:?}, expected {wanted:?} (off by {:e})",
                        (got - wanted).abs()
                    ));
                }
            }
        }
    }
    let threshold = number(&actual["threshold"], "threshold");
    let drifted = if method == "ks" || method == "chi_square" {
        score < threshold
    } else {
        score >= threshold
    };
    if actual["drifted"] != json!(drifted) {
        problems.push(format!(
            "{what}: drifted is {} with score {score} and threshold {threshold}",
            actual["drifted"]
        ));
    }
}

fn check_report(model: &Value, report: &Value, baseline_kind: &str, problems: &mut Vec<String>) {
    let name = model["model"].as_str().unwrap();
    let what = format!("{name} ({baseline_kind})");
    if report["baseline"]["kind"] != json!(baseline_kind) {
        problems.push(format!("{what}: baseline {}", report["baseline"]));
    }
    if report["baseline"]["rows"] != model["reference_rows"] || report["rows"] != model["current_rows"] {
        problems.push(format!(
            "{what}: rows {} against {}, expected {} against {}",
            report["rows"], report["baseline"]["rows"], model["current_rows"], model["reference_rows"]
        ));
    }
    let expected_features = model["features"].as_object().unwrap();
    let features = report["features"].as_object().expect("features");
    if features.len() != expected_features.len() {
        problems.push(format!(
            "{what}: {} features, expected {}",
            features.len(),
            expected_features.len()
        ));
    }
    for (feature, figures) in expected_features {
        check_variable(
            &format!("{what} {feature}"),
            figures,
            &features[feature],
            problems,
        );
    }
    for (output, figures) in model["predictions"].as_object().unwrap() {
        check_variable(
            &format!("{what} prediction {output}"),
            figures,
            &report["predictions"][output],
            problems,
        );
    }
    let drifted = features
        .values()
        .filter(|feature| feature["drifted"] == json!(true))
        .count();
    if report["drifted_features"] != json!(drifted)
        || (number(&report["share_drifted"], "share") - drifted as f64 / features.len() as f64).abs() > 1e-12
    {
        problems.push(format!(
            "{what}: drifted_features/share_drifted disagree with the features"
        ));
    }
}

fn drift_report(server: &Server, model: &str, expected: &Value) -> Value {
    let (status, _, body) = server.get(&format!(
        "/v1/models/{model}/drift?window={}&end={}",
        expected["window"].as_str().unwrap(),
        expected["end"]
    ));
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

#[test]
fn drift_scores_match_scipy_and_numpy_against_both_kinds_of_baseline() {
    let expected = expected();
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &expected["config_methods"]);
    let mut server = Server::builder(&dir.path().join("data"))
        .arg("--config")
        .arg(config)
        .start();
    let lines = event_lines();
    for chunk in lines.chunks(2000) {
        let (status, answer) = server.post_ndjson("/v1/predictions", chunk);
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["accepted"], json!(chunk.len()), "{answer}");
    }

    let mut problems = Vec::new();
    for model in expected["models"].as_array().unwrap() {
        let name = model["model"].as_str().unwrap();
        let report = drift_report(&server, name, &expected);
        check_report(model, &report, "previous_window", &mut problems);
    }

    // Freeze the first day as the baseline: the same scores, now "frozen".
    for model in expected["models"].as_array().unwrap() {
        let name = model["model"].as_str().unwrap();
        let (status, answer) = server.post_json(
            &format!("/v1/models/{name}/baseline"),
            &json!({"from": expected["baseline_from"], "to": expected["baseline_to"]}),
        );
        assert_eq!(status, 201, "{answer}");
        assert_eq!(answer["rows"], model["reference_rows"], "{answer}");
        assert_eq!(answer["kind"], "frozen");
        // Bounded size: a summary, not rows (4000 rows of 12 features would
        // take far more).
        assert!(answer["bytes"].as_u64().unwrap() < 64 * 1024, "{answer}");
    }
    // It survives a restart.
    assert!(server.stop().success());
    server.restart();
    for model in expected["models"].as_array().unwrap() {
        let name = model["model"].as_str().unwrap();
        let report = drift_report(&server, name, &expected);
        check_report(model, &report, "frozen", &mut problems);
        let (status, _, body) = server.get(&format!("/v1/models/{name}/baseline"));
        assert_eq!(status, 200, "{body}");
        let baseline: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(baseline["rows"], model["reference_rows"]);
        assert_eq!(
            baseline["features"].as_object().unwrap().len(),
            model["features"].as_object().unwrap().len()
        );
    }
    assert!(
        problems.is_empty(),
        "{} mismatches:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn the_baseline_api_answers_bad_input_with_the_field_and_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    let (status, _) = server.post_ndjson(
        "/v1/predictions",
        &[
            json!({"prediction_id": "a", "model": "m", "timestamp": 1790812800, "status": "ok",
                 "prediction": "1", "features": {"x": 1.5}})
            .to_string(),
        ],
    );
    assert_eq!(status, 200);
    let cases = [
        (
            "unknown",
            json!({"from": 0, "to": 1}),
            404,
            "unknown_model",
            "model",
        ),
        ("m", json!({"to": 1}), 400, "invalid_parameter", "from"),
        (
            "m",
            json!({"from": "yesterday"}),
            400,
            "invalid_parameter",
            "from",
        ),
        (
            "m",
            json!({"from": 10, "to": 5}),
            400,
            "invalid_parameter",
            "from",
        ),
        (
            "m",
            json!({"from": 0, "to": 10, "versions": "v1"}),
            400,
            "invalid_parameter",
            "versions",
        ),
        (
            "m",
            json!({"from": 0, "to": 10, "version": "nope"}),
            404,
            "not_found",
            "version",
        ),
        ("m", json!({"from": 0, "to": 10}), 422, "empty_window", "from"),
        ("m", json!([1, 2]), 400, "malformed_body", ""),
    ];
    for (model, body, status, code, field) in cases {
        let (got, answer) = server.post_json(&format!("/v1/models/{model}/baseline"), &body);
        assert_eq!(got, status, "{body} -> {answer}");
        assert_eq!(answer["error"]["code"], code, "{body} -> {answer}");
        if !field.is_empty() {
            assert_eq!(answer["error"]["field"], field, "{body} -> {answer}");
        }
    }
    let (status, _, body) = server.get("/v1/models/m/baseline");
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("previous window"), "{body}");
    let (status, _, body) = server.get("/v1/models/m/drift?window=10x");
    assert_eq!(status, 400, "{body}");
    // A window with nothing before it: no scores, said per feature (an empty
    // baseline is a small one, so the default method is chi-square).
    let (status, _, body) = server.get("/v1/models/m/drift?window=1h&end=1790816400");
    assert_eq!(status, 200, "{body}");
    let report: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        report["features"]["x"]["error"], "chi_square: the baseline has no values for it",
        "{report}"
    );
    assert_eq!(report["features_compared"], 0);
    assert_eq!(report["share_drifted"], Value::Null);
}

#[test]
fn drift_gauges_follow_the_evaluator_and_a_drift_rule_fires() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("modelwatch.yaml");
    std::fs::write(
        &config,
        "alerts:\n  evaluation_interval: 1s\n  rules:\n    MLModelDataDrift:\n      for: 0s\n",
    )
    .unwrap();
    let server = Server::builder(&dir.path().join("data"))
        .arg("--config")
        .arg(config.display().to_string())
        .start();
    // Yesterday: amounts around 100; today: around 200. Countries unchanged.
    let now = support::unix_now_ms() as f64 / 1000.0;
    let lines: Vec<String> = (0..4000)
        .map(|index| {
            let today = index % 2 == 0;
            let offset = 3600.0 + (index / 2) as f64 * 20.0;
            let timestamp = if today {
                now - offset
            } else {
                now - 86400.0 - offset
            };
            let amount = (if today { 200.0 } else { 100.0 }) + (index % 37) as f64;
            let country = ["DE", "FR"][index % 4 / 2];
            json!({"prediction_id": format!("g{index}"), "model": "shop", "timestamp": timestamp,
                   "status": "ok", "prediction": "1", "confidence": 0.9,
                   "features": {"amount": amount, "country": country}})
            .to_string()
        })
        .collect();
    let (status, answer) = server.post_ndjson("/v1/predictions", &lines);
    assert_eq!(status, 200, "{answer}");
    let mut exposition = String::new();
    let shown = wait_until(Duration::from_secs(20), || {
        exposition = server.get("/metrics").2;
        exposition.contains("ml_feature_drift_score{")
    });
    assert!(shown, "no drift gauges:\n{exposition}");
    let samples = parse_exposition_samples(&exposition);
    let sample = |name: &str, feature: &str| {
        samples
            .iter()
            .find(|sample| {
                sample.name == name
                    && sample.labels.get("model_name").map(String::as_str) == Some("shop")
                    && sample.labels.get("feature_name").map(String::as_str) == Some(feature)
            })
            .unwrap_or_else(|| panic!("no {name} for {feature}:\n{exposition}"))
            .clone()
    };
    assert_eq!(sample("ml_feature_drifted", "amount").value, 1.0);
    assert_eq!(sample("ml_feature_drifted", "country").value, 0.0);
    let amount = sample("ml_feature_drift_score", "amount");
    assert_eq!(amount.labels["method"], "wasserstein");
    assert!(amount.value > 1.0, "{exposition}");
    // Half the features drifted: the data-drift rule (for: 0s here) fires.
    let fired = wait_until(Duration::from_secs(20), || {
        server.get("/v1/alerts").2.contains("MLModelDataDrift")
    });
    assert!(fired, "{}", server.get("/v1/alerts").2);
}
