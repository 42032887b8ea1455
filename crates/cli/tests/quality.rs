//! End-to-end test of model quality (ground truth joined on `prediction_id`)
//! on the real binary, against an independent oracle: scikit-learn.
//!
//! `tests/oracle/generate_quality.py` generated the dataset and every expected
//! figure in `tests/oracle/quality/` (see its README). This test posts the
//! four phases in order (early labels, predictions, delayed labels with
//! resends and orphans, corrections), checks each label answer's counts, waits
//! for the held orphans to expire, checks `/v1/labels/stats`, then checks
//! every field of every `/performance` query, the labelled-prediction counters
//! on `/metrics`, and the same queries again after a restart.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Server, parse_exposition_samples, percent_encode, wait_until};

/// How long the held labels of ids that never get a prediction may take to be
/// counted as orphans (the config's TTL is 5 s).
const ORPHAN_DEADLINE: Duration = Duration::from_secs(30);
/// Floats must match the oracle within this absolute tolerance...
const ABSOLUTE_TOLERANCE: f64 = 1e-9;
/// ...or, for large magnitudes (a MAPE over a true value of 0 is about 1e12,
/// since both sides divide by f64::EPSILON there), within this relative one.
const RELATIVE_TOLERANCE: f64 = 1e-12;
/// Answer fields that must be absent, not null, when the oracle leaves them
/// out (`regression` for a classifier, `business` without business values).
const ABSENT_UNLESS_EXPECTED: [&str; 2] = ["regression", "business"];

fn oracle_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oracle/quality")
}

fn read_oracle_file(name: &str) -> String {
    let path = oracle_dir().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("read {}: {error}", path.display()))
}

fn expected() -> Value {
    serde_json::from_str(&read_oracle_file("expected.json")).expect("expected.json is JSON")
}

fn ndjson_lines(name: &str) -> Vec<String> {
    read_oracle_file(name)
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

fn write_config(dir: &Path, yaml: &str) -> String {
    let path = dir.join("modelwatch.yaml");
    std::fs::write(&path, yaml).unwrap();
    path.display().to_string()
}

fn text(value: &Value, what: &str) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Number(number) => number.to_string(),
        other => panic!("expected.json: {what} should be a string or a number, is {other}"),
    }
}

/// `/v1/models/{model}/performance?…` for one oracle query.
fn performance_path(query: &Value) -> String {
    let model = text(&query["model"], "model");
    let mut path = format!(
        "/v1/models/{}/performance?window={}&end={}",
        percent_encode(&model),
        percent_encode(&text(&query["window"], "window")),
        percent_encode(&text(&query["end"], "end")),
    );
    for parameter in ["version", "segment"] {
        if let Some(value) = query.get(parameter).filter(|value| !value.is_null()) {
            path.push_str(&format!(
                "&{parameter}={}",
                percent_encode(&text(value, parameter))
            ));
        }
    }
    path
}

fn floats_match(actual: f64, expected: f64) -> bool {
    let difference = (actual - expected).abs();
    difference <= ABSOLUTE_TOLERANCE || difference <= RELATIVE_TOLERANCE * expected.abs()
}

/// Compares `actual` (None when the key is missing) with `expected` at
/// `field`, recording each mismatch in `problems`. Integers must be equal
/// integers, floats within tolerance, objects must have exactly the expected
/// keys, arrays the expected length.
fn compare(field: &str, expected: &Value, actual: Option<&Value>, problems: &mut Vec<String>) {
    let Some(actual) = actual else {
        problems.push(format!("{field}: missing, expected {expected}"));
        return;
    };
    match expected {
        Value::Number(number) if number.is_u64() || number.is_i64() => {
            let equal = match (actual.as_i64(), actual.as_u64()) {
                (Some(got), _) => Some(got) == number.as_i64(),
                (None, Some(got)) => Some(got) == number.as_u64(),
                (None, None) => false,
            };
            if !equal {
                problems.push(format!("{field}: expected the integer {expected}, got {actual}"));
            }
        }
        Value::Number(number) => {
            let expected_float = number.as_f64().expect("a JSON number is an f64");
            match actual.as_f64() {
                Some(got) if floats_match(got, expected_float) => {}
                _ => problems.push(format!(
                    "{field}: expected {expected_float:?} (tolerance {ABSOLUTE_TOLERANCE:e} absolute or \
                     {RELATIVE_TOLERANCE:e} relative), got {actual}"
                )),
            }
        }
        Value::Array(expected_items) => match actual.as_array() {
            Some(actual_items) if actual_items.len() == expected_items.len() => {
                for (index, (expected_item, actual_item)) in
                    expected_items.iter().zip(actual_items).enumerate()
                {
                    compare(
                        &format!("{field}[{index}]"),
                        expected_item,
                        Some(actual_item),
                        problems,
                    );
                }
            }
            _ => problems.push(format!("{field}: expected {expected}, got {actual}")),
        },
        Value::Object(expected_map) => match actual.as_object() {
            Some(actual_map) => {
                let expected_keys: Vec<&String> = expected_map.keys().collect();
                let actual_keys: Vec<&String> = actual_map.keys().collect();
                let mut expected_sorted = expected_keys.clone();
                let mut actual_sorted = actual_keys.clone();
                expected_sorted.sort();
                actual_sorted.sort();
                if expected_sorted != actual_sorted {
                    problems.push(format!(
                        "{field}: expected exactly the keys {expected_sorted:?}, got {actual_sorted:?}"
                    ));
                }
                for (key, expected_value) in expected_map {
                    if let Some(actual_value) = actual_map.get(key) {
                        compare(
                            &format!("{field}.{key}"),
                            expected_value,
                            Some(actual_value),
                            problems,
                        );
                    }
                }
            }
            None => problems.push(format!("{field}: expected {expected}, got {actual}")),
        },
        // null, booleans and strings: equal as they are
        _ => {
            if actual != expected {
                problems.push(format!("{field}: expected {expected}, got {actual}"));
            }
        }
    }
}

/// Compares one `/performance` answer with the oracle's: every expected
/// field, and the absence of the fields the oracle leaves out. Other extra
/// top-level fields are tolerated; nested objects must match key for key.
fn answer_problems(expected: &Value, actual: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let expected_map = expected.as_object().expect("an expected answer is an object");
    let Some(actual_map) = actual.as_object() else {
        return vec![format!("the answer is not a JSON object: {actual}")];
    };
    for (key, expected_value) in expected_map {
        compare(key, expected_value, actual_map.get(key), &mut problems);
    }
    for key in ABSENT_UNLESS_EXPECTED {
        if expected_map.contains_key(key) {
            continue;
        }
        if let Some(actual_value) = actual_map.get(key) {
            problems.push(format!("{key}: expected no such field, got {actual_value}"));
        }
    }
    problems
}

/// Runs every oracle query and panics with every mismatch, each naming the
/// query and the field.
fn assert_queries(server: &Server, queries: &[Value], when: &str) {
    let mut failures = Vec::new();
    for query in queries {
        let name = query["name"].as_str().unwrap_or("?");
        let path = performance_path(query);
        let (status, _, body) = server.get(&path);
        if status != 200 {
            failures.push(format!(
                "query {name} (GET {path}) {when}: status {status}, body {body}"
            ));
            continue;
        }
        let actual: Value = match serde_json::from_str(&body) {
            Ok(actual) => actual,
            Err(error) => {
                failures.push(format!(
                    "query {name} (GET {path}) {when}: not JSON ({error}): {body}"
                ));
                continue;
            }
        };
        for problem in answer_problems(&query["expect"], &actual) {
            failures.push(format!("query {name} (GET {path}) {when}: field {problem}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatch(es) with the scikit-learn oracle {when}:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn label_stats(server: &Server) -> Value {
    let (status, _, body) = server.get("/v1/labels/stats");
    assert_eq!(status, 200, "GET /v1/labels/stats: {body}");
    serde_json::from_str(&body)
        .unwrap_or_else(|error| panic!("GET /v1/labels/stats is not JSON ({error}): {body}"))
}

/// Sum of the samples of `name` whose `model_name` is `model`, and how many
/// there were.
fn counter_sum(samples: &[support::ExposedSample], name: &str, model: &str) -> (f64, usize) {
    let matching: Vec<f64> = samples
        .iter()
        .filter(|sample| {
            sample.name == name && sample.labels.get("model_name").map(String::as_str) == Some(model)
        })
        .map(|sample| sample.value)
        .collect();
    (matching.iter().sum(), matching.len())
}

#[test]
fn quality_matches_the_scikit_learn_oracle() {
    let expected = expected();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        expected["config"].as_str().expect("expected.json: config"),
    );
    let mut server = Server::builder(&dir.path().join("data"))
        .arg("--config")
        .arg(config)
        .start();

    // The phases in order. Phase 2 follows phase 1 at once: its predictions
    // must arrive well within the 5 s TTL of the held early labels.
    let mut timings = Vec::new();
    for phase in expected["phases"].as_array().expect("expected.json: phases") {
        let file = phase["file"].as_str().expect("phase file");
        let path = phase["path"].as_str().expect("phase path");
        let lines = ndjson_lines(file);
        assert_eq!(
            Some(lines.len() as u64),
            phase["lines"].as_u64(),
            "{file} does not have the line count expected.json gives: regenerate the oracle"
        );
        let posted_at = Instant::now();
        let (status, answer) = server.post_ndjson(path, &lines);
        // Shown on failure: a slow phase 2 lets the early labels expire.
        timings.push(format!("{file}: {:?}", posted_at.elapsed()));
        assert_eq!(status, 200, "POST {path} with {file} answered {status}: {answer}");
        assert_eq!(
            answer.get("rejected"),
            Some(&Value::Array(Vec::new())),
            "POST {path} with {file}: rows were rejected: {answer}"
        );
        for (key, count) in phase["expect"].as_object().expect("phase expect") {
            assert_eq!(
                answer.get(key),
                Some(count),
                "POST {path} with {file}: `{key}` should be {count}; the whole answer: {answer} \
                 (posting times so far: {timings:?})"
            );
        }
    }

    // Labels for ids that never got a prediction are orphans once the TTL
    // has passed.
    let final_stats = &expected["final_stats"];
    let mut stats = Value::Null;
    let settled = wait_until(ORPHAN_DEADLINE, || {
        stats = label_stats(&server);
        stats["orphaned"] == final_stats["orphaned"] && stats["held"] == final_stats["held"]
    });
    assert!(
        settled,
        "the held orphan labels were not counted as orphans within {ORPHAN_DEADLINE:?}: \
         /v1/labels/stats is {stats}, expected {final_stats} (posting times: {timings:?})"
    );
    for (key, count) in final_stats.as_object().expect("final_stats") {
        assert_eq!(
            stats.get(key),
            Some(count),
            "/v1/labels/stats: `{key}` should be {count}; the whole answer: {stats} \
             (posting times: {timings:?})"
        );
    }

    let queries = expected["queries"].as_array().expect("expected.json: queries");
    assert!(queries.len() >= 20, "the oracle should have at least 20 queries");
    assert_queries(&server, queries, "before the restart");

    assert_labeled_counters(&server, &expected, "before the restart");

    // Durability: the same answers from a restarted process.
    let exit_status = server.stop();
    assert!(
        exit_status.success(),
        "modelwatch exited with {exit_status} on SIGTERM"
    );
    server.restart();
    // Every figure is durable, totals included.
    let stats = label_stats(&server);
    assert_eq!(&stats, final_stats, "/v1/labels/stats after the restart");
    assert_queries(&server, queries, "after the restart");
    assert_labeled_counters(&server, &expected, "after the restart");
}

/// The labeled-prediction counter, net of retractions (corrections), counts
/// each joined classification label once.
fn assert_labeled_counters(server: &Server, expected: &Value, when: &str) {
    let (status, _, exposition) = server.get("/metrics");
    assert_eq!(status, 200, "GET /metrics: {exposition}");
    let samples = parse_exposition_samples(&exposition);
    let model = "fraud_detector";
    let (labeled, labeled_series) = counter_sum(&samples, "ml_prediction_labeled_total", model);
    let (retracted, _) = counter_sum(&samples, "ml_prediction_label_retracted_total", model);
    if labeled_series == 0 {
        let mut names: Vec<&str> = samples.iter().map(|sample| sample.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        panic!("/metrics has no ml_prediction_labeled_total series for {model}; it has {names:?}");
    }
    let joined = expected["joined_by_model"][model]
        .as_f64()
        .expect("expected.json: joined_by_model.fraud_detector");
    assert_eq!(
        labeled - retracted,
        joined,
        "sum(ml_prediction_labeled_total{{model_name=\"{model}\"}}) = {labeled} minus \
         sum(ml_prediction_label_retracted_total{{model_name=\"{model}\"}}) = {retracted} \
         should be the {joined} joined labels of {model} ({when})"
    );
}

/// The oracle's own comparison is strict where it should be: integers are
/// not floats, keys are exact, and the fields the oracle leaves out must be
/// absent.
#[test]
fn the_answer_comparison_names_each_mismatch() {
    let expected: Value = serde_json::json!({
        "sample_size": 3, "label_coverage": 0.5, "accuracy": null,
        "per_class": {"a": {"precision": 1.0, "support": 2}},
        "confusion_matrix": {"labels": ["a"], "matrix": [[2]]}
    });
    let good: Value = serde_json::json!({
        "sample_size": 3, "label_coverage": 0.5 + 1e-12, "accuracy": null, "extra": 1,
        "per_class": {"a": {"precision": 1.0, "support": 2}},
        "confusion_matrix": {"labels": ["a"], "matrix": [[2]]}
    });
    assert_eq!(answer_problems(&expected, &good), Vec::<String>::new());
    let bad: Value = serde_json::json!({
        "sample_size": 3.0, "label_coverage": 0.51, "business": {},
        "per_class": {"a": {"precision": 1.0, "support": 2}, "b": {}},
        "confusion_matrix": {"labels": ["a"], "matrix": [[1]]}
    });
    let problems = answer_problems(&expected, &bad);
    for field in [
        "sample_size:",
        "label_coverage:",
        "accuracy:",
        "per_class:",
        "confusion_matrix.matrix[0][0]:",
        "business:",
    ] {
        assert!(
            problems.iter().any(|problem| problem.starts_with(field)),
            "no problem reported for {field} in {problems:#?}"
        );
    }
    assert!(floats_match(1.0e12 * (1.0 + 1e-13), 1.0e12));
    assert!(!floats_match(1.0e-3 + 1e-8, 1.0e-3));
}
