//! `modelwatch report` on the real binary: offline figures from files.
//!
//! - The quality oracle (`tests/oracle/quality/`, scikit-learn) through the
//!   report: every oracle query that is one of the report's tumbling windows
//!   must match to 1e-9, and the label bookkeeping must match the server's.
//! - The same data as CSV gives the same report as NDJSON.
//! - Drift against a reference file matches the scipy/numpy drift oracle
//!   (`tests/oracle/drift/`) with the tolerances of `tests/drift.rs`.
//! - Bad rows are reported with their line and field, and do not stop the
//!   report.
//! - The HTML report is one self-contained file with SVG charts.
//! - Parquet files that take the columnar path give the report of the same
//!   rows as NDJSON (the row path), ugly rows included.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const ABSOLUTE_TOLERANCE: f64 = 1e-9;
/// For large magnitudes (a MAPE over a true value of 0 is about 1e12).
const RELATIVE_TOLERANCE: f64 = 1e-12;

fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_modelwatch")
}

fn oracle(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/oracle")
        .join(path)
}

fn run(arguments: &[&str]) -> Output {
    let output = Command::new(binary())
        .arg("report")
        .args(arguments)
        .output()
        .expect("run modelwatch report");
    assert!(
        output.status.success(),
        "modelwatch report {arguments:?} failed with {}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Runs the report with `--format json` and parses it.
fn json_report(arguments: &[&str]) -> Value {
    let mut all = arguments.to_vec();
    all.extend(["--format", "json", "--threads", "2"]);
    let output = run(&all);
    serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
        panic!(
            "the JSON report is not JSON ({error}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

fn floats_match(actual: f64, expected: f64) -> bool {
    let difference = (actual - expected).abs();
    difference <= ABSOLUTE_TOLERANCE || difference <= RELATIVE_TOLERANCE * expected.abs()
}

/// Records every difference between `expected` and `actual` at `field`:
/// integers equal, floats within tolerance, objects with the same keys,
/// arrays of the same length.
fn compare(field: &str, expected: &Value, actual: Option<&Value>, problems: &mut Vec<String>) {
    let Some(actual) = actual else {
        problems.push(format!("{field}: missing, expected {expected}"));
        return;
    };
    match (expected, actual) {
        (Value::Number(wanted), Value::Number(got)) if wanted.is_f64() || got.is_f64() => {
            let (wanted, got) = (wanted.as_f64().unwrap(), got.as_f64().unwrap());
            if !floats_match(got, wanted) {
                problems.push(format!("{field}: expected {wanted:?}, got {got:?}"));
            }
        }
        (Value::Array(wanted), Value::Array(got)) if wanted.len() == got.len() => {
            for (index, (wanted, got)) in wanted.iter().zip(got).enumerate() {
                compare(&format!("{field}[{index}]"), wanted, Some(got), problems);
            }
        }
        (Value::Object(wanted), Value::Object(got)) => {
            let wanted_keys: Vec<&String> = wanted.keys().collect();
            let got_keys: Vec<&String> = got.keys().collect();
            if wanted_keys != got_keys {
                problems.push(format!(
                    "{field}: expected the keys {wanted_keys:?}, got {got_keys:?}"
                ));
            }
            for (key, value) in wanted {
                if got.contains_key(key) {
                    compare(&format!("{field}.{key}"), value, got.get(key), problems);
                }
            }
        }
        _ => {
            if expected != actual {
                problems.push(format!("{field}: expected {expected}, got {actual}"));
            }
        }
    }
}

fn quality_files() -> [PathBuf; 4] {
    [
        oracle("quality/2_predictions.ndjson"),
        oracle("quality/1_early_labels.ndjson"),
        oracle("quality/3_labels.ndjson"),
        oracle("quality/4_corrections.ndjson"),
    ]
}

fn quality_report(window: &str, predictions: &[PathBuf], labels: &[PathBuf]) -> Value {
    aligned_quality_report(window, None, predictions, labels)
}

fn aligned_quality_report(
    window: &str,
    align: Option<i64>,
    predictions: &[PathBuf],
    labels: &[PathBuf],
) -> Value {
    let mut arguments: Vec<String> = vec!["--window".into(), window.into()];
    if let Some(align_ms) = align {
        arguments.push("--align".into());
        arguments.push(format!("{}", align_ms as f64 / 1000.0));
    }
    for path in predictions {
        arguments.push("--predictions".into());
        arguments.push(path.display().to_string());
    }
    for path in labels {
        arguments.push("--labels".into());
        arguments.push(path.display().to_string());
    }
    let arguments: Vec<&str> = arguments.iter().map(String::as_str).collect();
    json_report(&arguments)
}

fn millis(text: &str) -> i64 {
    match text.parse::<f64>() {
        Ok(seconds) => (seconds * 1000.0).round() as i64,
        Err(_) => text
            .parse::<jiff::Timestamp>()
            .expect("an RFC 3339 end")
            .as_millisecond(),
    }
}

fn end_text(query: &Value) -> String {
    match &query["end"] {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// The report's section for one oracle query, when the query is one of the
/// report's windows: same length, same start. `None` otherwise, with why.
fn section_for<'a>(report: &'a Value, query: &Value) -> Result<&'a Value, String> {
    let model = &report["models"][query["model"].as_str().unwrap()];
    let scope = match query["version"].as_str() {
        Some(version) => &model["by_version"][version],
        None => model,
    };
    let end = millis(&end_text(query));
    let window = query["window"].as_str().unwrap();
    let length = modelwatch_length(window);
    let start = end - length;
    let windows = scope["windows"].as_array().expect("windows");
    windows
        .iter()
        .find(|section| {
            millis(section["start"].as_str().unwrap()) == start
                && millis(section["end"].as_str().unwrap()) == end
        })
        .ok_or_else(|| format!("no {window} window of the report starts at {start} ms"))
}

fn modelwatch_length(window: &str) -> i64 {
    let (number, unit) = window.split_at(window.len() - 1);
    let number: i64 = number.parse().unwrap();
    number
        * match unit {
            "h" => 3_600_000,
            "d" => 86_400_000,
            other => panic!("unexpected unit {other}"),
        }
}

/// The figure fields of a `/performance` answer (the rest describes the
/// query: model, version, window, start, end, segment).
const FIGURE_FIELDS: [&str; 11] = [
    "kind",
    "sample_size",
    "predictions",
    "label_coverage",
    "accuracy",
    "per_class",
    "macro",
    "weighted",
    "confusion_matrix",
    "regression",
    "business",
];

#[test]
fn the_report_matches_the_scikit_learn_quality_oracle() {
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(oracle("quality/expected.json")).unwrap()).unwrap();
    let [predictions, early, main, corrections] = quality_files();
    let labels = [early, main, corrections];
    let reports: BTreeMap<&str, Value> = ["1h", "1d"]
        .into_iter()
        .map(|window| {
            (
                window,
                quality_report(window, std::slice::from_ref(&predictions), &labels),
            )
        })
        .collect();
    // The other queries' spans are windows of a report with windows of their
    // length starting at their start (`--align`).
    let mut aligned: BTreeMap<(String, i64), Value> = BTreeMap::new();

    // The label bookkeeping equals the server's once the early-label TTL has
    // passed: every early label found its prediction, the labels of ids never
    // predicted are orphans. (`held` does not exist offline: every label is
    // joined whatever the order of the files.)
    let report = &reports["1h"];
    let stats = &expected["final_stats"];
    for key in ["joined", "orphaned", "duplicates", "corrected"] {
        assert_eq!(
            report["labels"][key], stats[key],
            "labels.{key}: {}",
            report["labels"]
        );
    }
    let predictions_file = &report["inputs"]["predictions"][0];
    assert_eq!(
        predictions_file["accepted"],
        expected["phases"][1]["expect"]["accepted"]
    );
    assert_eq!(predictions_file["rejected"], 0);
    assert_eq!(report["problems"]["total"], 0);

    let mut compared = Vec::new();
    let mut not_comparable = Vec::new();
    let mut problems = Vec::new();
    for query in expected["queries"].as_array().unwrap() {
        let name = query["name"].as_str().unwrap();
        let window = query["window"].as_str().unwrap();
        let start = millis(&end_text(query)) - modelwatch_length(window);
        let report = match reports.get(window) {
            Some(report) if section_for(report, query).is_ok() => report,
            _ => aligned.entry((window.to_owned(), start)).or_insert_with(|| {
                aligned_quality_report(window, Some(start), std::slice::from_ref(&predictions), &labels)
            }),
        };
        let section = match section_for(report, query) {
            Ok(section) => section,
            Err(why) => {
                not_comparable.push(format!("{name} ({why})"));
                continue;
            }
        };
        let performance = &section["performance"];
        let actual = match query["segment"].as_str() {
            Some(segment) => {
                let (key, value) = segment.split_once(':').unwrap();
                &performance["segments"][key][value]
            }
            None => performance,
        };
        let expect = &query["expect"];
        for field in FIGURE_FIELDS {
            match (expect.get(field), actual.get(field)) {
                (Some(wanted), got) => compare(&format!("{name}.{field}"), wanted, got, &mut problems),
                (None, Some(got)) if field == "regression" || field == "business" => {
                    problems.push(format!("{name}.{field}: expected no such field, got {got}"))
                }
                _ => {}
            }
        }
        compared.push(name.to_owned());
    }
    assert!(
        problems.is_empty(),
        "{} mismatches with the scikit-learn oracle:\n{}",
        problems.len(),
        problems.join("\n")
    );
    // Every query is a window of some report, except the two that end where
    // the data starts (`1d` ending at the first event): the report's range
    // begins with the window of the first event, so it has no such window.
    assert!(
        compared.len() >= 26 && not_comparable.len() <= 2,
        "compared only {compared:?}; not comparable: {not_comparable:?}"
    );
    eprintln!("compared {compared:?}; not comparable: {not_comparable:?}");
}

/// Writes the oracle's NDJSON predictions and labels as CSV files: one file
/// per model for predictions (a classifier's `prediction` is a class, a
/// regression model's output goes in `prediction_value`), one for labels.
fn write_quality_csv(dir: &Path) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let [predictions, early, main, corrections] = quality_files();
    let lines = |path: &Path| -> Vec<Value> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .filter(|line| !line.trim().is_empty())
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    };
    let cell = |value: &Value| -> String {
        match value {
            Value::Null => String::new(),
            Value::String(text) => text.clone(),
            other => other.to_string(),
        }
    };
    let events = lines(&predictions);
    let by_model = group_by_model(&events);
    let mut prediction_files = Vec::new();
    for (model, events) in by_model {
        let regression = events.iter().any(|event| event["prediction"].is_number());
        let groups: BTreeMap<&str, Vec<String>> = ["probabilities", "segments", "features"]
            .into_iter()
            .map(|group| (group, keys_in_order(&events, group)))
            .collect();
        let plain = [
            "prediction_id",
            "model",
            "version",
            "timestamp",
            "latency_seconds",
            "status",
            "error_type",
        ];
        let mut header: Vec<String> = plain.iter().map(|name| (*name).to_owned()).collect();
        header.push(
            if regression {
                "prediction_value"
            } else {
                "prediction"
            }
            .to_owned(),
        );
        let prefixes = [
            ("probabilities", "probability."),
            ("segments", "segment."),
            ("features", ""),
        ];
        for (group, prefix) in prefixes {
            for name in groups.get(group).into_iter().flatten() {
                header.push(format!("{prefix}{name}"));
            }
        }
        let path = dir.join(format!("{model}.csv"));
        let mut writer = csv::Writer::from_path(&path).unwrap();
        writer.write_record(&header).unwrap();
        for event in events {
            let mut record: Vec<String> = plain.iter().map(|name| cell(&event[*name])).collect();
            record.push(cell(&event["prediction"]));
            for (group, _) in prefixes {
                for name in groups.get(group).into_iter().flatten() {
                    record.push(cell(&event[group][name.as_str()]));
                }
            }
            writer.write_record(&record).unwrap();
        }
        writer.flush().unwrap();
        prediction_files.push(path);
    }
    let mut label_files = Vec::new();
    for (index, source) in [early, main, corrections].iter().enumerate() {
        let labels = lines(source);
        let business = keys_in_order(&labels, "business");
        let path = dir.join(format!("labels_{index}.csv"));
        let mut writer = csv::Writer::from_path(&path).unwrap();
        let mut header = vec![
            "prediction_id".to_owned(),
            "actual".to_owned(),
            "timestamp".to_owned(),
        ];
        header.extend(business.iter().map(|name| format!("business.{name}")));
        writer.write_record(&header).unwrap();
        for label in &labels {
            let mut record = vec![
                cell(&label["prediction_id"]),
                cell(&label["actual"]),
                cell(&label["timestamp"]),
            ];
            record.extend(
                business
                    .iter()
                    .map(|name| cell(&label["business"][name.as_str()])),
            );
            writer.write_record(&record).unwrap();
        }
        writer.flush().unwrap();
        label_files.push(path);
    }
    (prediction_files, label_files)
}

#[test]
fn csv_input_gives_the_same_report_as_ndjson() {
    let dir = tempfile::tempdir().unwrap();
    let (csv_predictions, csv_labels) = write_quality_csv(dir.path());
    let [predictions, early, main, corrections] = quality_files();
    let from_ndjson = quality_report("1d", &[predictions], &[early, main, corrections]);
    let from_csv = quality_report("1d", &csv_predictions, &csv_labels);
    assert_eq!(from_csv["problems"]["total"], 0, "{}", from_csv["problems"]);
    assert_eq!(from_csv["labels"], from_ndjson["labels"]);
    // An explicit null feature in NDJSON is an empty cell in CSV: the
    // feature is absent from that row rather than present and missing. Both
    // count the row as missing the feature; only windows where a feature has
    // no value at all list it in one and not the other.
    let problems = compare_models_but_features(&from_ndjson, &from_csv);
    assert_no_differences(&problems, "the CSV and the NDJSON report");
}

/// The differences between two reports' models, features left out (see
/// `strip_features`).
fn compare_models_but_features(wanted: &Value, got: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    for (model, wanted) in wanted["models"].as_object().unwrap() {
        let mut wanted = wanted.clone();
        let mut got = got["models"][model].clone();
        for report in [&mut wanted, &mut got] {
            strip_features(report);
        }
        compare(&format!("models.{model}"), &wanted, Some(&got), &mut problems);
    }
    problems
}

fn assert_no_differences(problems: &[String], between: &str) {
    assert!(
        problems.is_empty(),
        "{} differences between {between}:\n{}",
        problems.len(),
        problems.iter().take(40).cloned().collect::<Vec<_>>().join("\n")
    );
}

/// Drops the features that have no value in a section.
/// The events of each model, in file order.
/// The keys of the object `field` across `rows`, in the order first seen:
/// the columns a file of these rows has for that field.
fn keys_in_order<V: std::borrow::Borrow<Value>>(rows: &[V], field: &str) -> Vec<String> {
    let mut keys: Vec<String> = Vec::new();
    for row in rows {
        for key in row.borrow()[field]
            .as_object()
            .into_iter()
            .flat_map(|object| object.keys())
        {
            if !keys.contains(key) {
                keys.push(key.clone());
            }
        }
    }
    keys
}

fn group_by_model(events: &[Value]) -> BTreeMap<String, Vec<&Value>> {
    let mut by_model: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for event in events {
        by_model
            .entry(event["model"].as_str().unwrap().to_owned())
            .or_default()
            .push(event);
    }
    by_model
}

fn strip_features(value: &mut Value) {
    match value {
        Value::Object(object) => {
            if let Some(Value::Object(features)) = object.get_mut("features")
                && let Some(Value::Object(listed)) = features.get_mut("features")
            {
                listed.retain(|_, feature| feature["count"] != 0);
            }
            object.values_mut().for_each(strip_features);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_features),
        _ => {}
    }
}

fn drift_events() -> Vec<String> {
    let file = std::fs::File::open(oracle("drift/events.ndjson.gz")).unwrap();
    let mut text = String::new();
    flate2::read::GzDecoder::new(file)
        .read_to_string(&mut text)
        .unwrap();
    text.lines().map(str::to_owned).collect()
}

#[test]
fn drift_against_a_reference_file_matches_the_scipy_oracle() {
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(oracle("drift/expected.json")).unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // The reference is the baseline day; the predictions are both days.
    let baseline_to = expected["baseline_to"].as_f64().unwrap();
    let events = drift_events();
    let reference: Vec<&String> = events
        .iter()
        .filter(|line| {
            let event: Value = serde_json::from_str(line).unwrap();
            event["timestamp"].as_f64().unwrap() < baseline_to
        })
        .collect();
    let reference_path = dir.path().join("reference.ndjson");
    std::fs::write(
        &reference_path,
        reference
            .iter()
            .map(|line| format!("{line}\n"))
            .collect::<String>(),
    )
    .unwrap();
    let mut config = String::from("drift:\n  features:\n");
    for (name, method) in expected["config_methods"].as_object().unwrap() {
        config.push_str(&format!("    {name}: {{method: {}}}\n", method.as_str().unwrap()));
    }
    let config_path = dir.path().join("modelwatch.yaml");
    std::fs::write(&config_path, config).unwrap();
    let report = json_report(&[
        "--predictions",
        oracle("drift/events.ndjson.gz").to_str().unwrap(),
        "--reference",
        reference_path.to_str().unwrap(),
        "--config",
        config_path.to_str().unwrap(),
        "--window",
        "1d",
    ]);
    let current_start = expected["baseline_to"].as_i64().unwrap() * 1000;
    let mut problems = Vec::new();
    for model in expected["models"].as_array().unwrap() {
        let name = model["model"].as_str().unwrap();
        let report_model = &report["models"][name];
        assert_eq!(report_model["reference_rows"], model["reference_rows"], "{name}");
        let window = report_model["windows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|window| millis(window["start"].as_str().unwrap()) == current_start)
            .unwrap_or_else(|| panic!("{name}: no window starts at the current day"));
        let drift = &window["drift"];
        assert_eq!(drift["rows"], model["current_rows"], "{name}");
        for part in ["features", "predictions"] {
            for (variable, wanted) in model[part].as_object().unwrap() {
                check_drift(
                    &format!("{name}.{part}.{variable}"),
                    wanted,
                    &drift[part][variable],
                    &mut problems,
                );
            }
        }
        // The baseline day against itself: nothing drifts.
        let first = &report_model["windows"][0]["drift"];
        assert_eq!(
            first["drifted_features"], 0,
            "{name}: the reference day against itself: {first}"
        );
    }
    assert!(problems.is_empty(), "drift mismatches:\n{}", problems.join("\n"));
}

/// The tolerances of `tests/drift.rs`: exact methods to 1e-9 (1e-7
/// relative), KS and Wasserstein within the bound modelwatch reports, the KS
/// p-value within 0.02.
fn check_drift(what: &str, expected: &Value, actual: &Value, problems: &mut Vec<String>) {
    let method = expected["method"].as_str().unwrap();
    if actual["method"] != expected["method"] {
        problems.push(format!("{what}: method {} instead of {method}", actual["method"]));
        return;
    }
    let get = |value: &Value, field: &str| value[field].as_f64().unwrap_or(f64::NAN);
    match method {
        "ks" => {
            let (statistic, bound) = (get(actual, "statistic"), get(actual, "error_bound"));
            let scipy = get(expected, "statistic");
            if !(statistic - 1e-12 <= scipy && scipy <= statistic + bound + 1e-12) {
                problems.push(format!(
                    "{what}: scipy's KS {scipy} outside [{statistic}, +{bound}]"
                ));
            }
            if (get(actual, "p_value") - get(expected, "p_value")).abs() > 0.02 {
                problems.push(format!(
                    "{what}: KS p-value {} vs {}",
                    actual["p_value"], expected["p_value"]
                ));
            }
        }
        "wasserstein" => {
            let (score, bound) = (get(actual, "score"), get(actual, "error_bound"));
            if (score - get(expected, "score")).abs() > bound {
                problems.push(format!(
                    "{what}: Wasserstein {score} vs {} (bound {bound})",
                    expected["score"]
                ));
            }
        }
        _ => {
            for field in ["score", "statistic", "p_value"] {
                let Some(wanted) = expected.get(field).and_then(Value::as_f64) else {
                    continue;
                };
                let got = get(actual, field);
                let difference = (got - wanted).abs();
                if !(difference <= 1e-9 || difference <= 1e-7 * wanted.abs()) {
                    problems.push(format!("{what}.{field}: {got} vs scipy's {wanted}"));
                }
            }
        }
    }
}

#[test]
fn bad_rows_are_reported_with_their_line_and_field_and_the_rest_counts() {
    let dir = tempfile::tempdir().unwrap();
    let ndjson = dir.path().join("predictions.ndjson");
    std::fs::write(
        &ndjson,
        concat!(
            r#"{"prediction_id":"a1","model":"m","timestamp":"2026-11-01T00:00:00Z","prediction":"x","confidence":0.9}"#,
            "\n",
            r#"{"prediction_id":"a2","model":"m","timestamp":"2026-11-01T00:01:00Z","latency_seconds":-1}"#,
            "\n\n",
            r#"{"prediction_id":"a3","model":"m","timestamp":"2026-11-01T00:02:00Z","prediction":"y","colour":1}"#,
            "\n",
            r#"{"prediction_id":"a4","model":"m","timestamp":"2026-11-01T00:03:00Z","prediction":"y","confidence":NaN}"#,
            "\n",
            r#"{"prediction_id":"a5","model":"m","timestamp":"2026-11-01T00:04:00Z","prediction":"y"}"#,
            "\n",
        ),
    )
    .unwrap();
    let csv = dir.path().join("more.csv");
    std::fs::write(
        &csv,
        "prediction_id,timestamp,latency_seconds,prediction,amount\n\
         c1,2026-11-01T00:05:00Z,0.01,x,3\n\
         c2,2026-11-01T00:06:00Z,fast,x,3\n\
         c3,not-a-time,0.01,x,3\n\
         c4,2026-11-01T00:07:00Z,0.01,x\n\
         c5,2026-11-01T00:08:00Z,0.01,y,4\n",
    )
    .unwrap();
    let labels = dir.path().join("labels.ndjson");
    std::fs::write(
        &labels,
        concat!(
            r#"{"prediction_id":"a1","actual":"x"}"#,
            "\n",
            r#"{"prediction_id":"a5"}"#,
            "\n",
            r#"{"prediction_id":"c5","actual":"x"}"#,
            "\n",
            r#"{"prediction_id":"zz","actual":"x"}"#,
            "\n",
        ),
    )
    .unwrap();
    let output = run(&[
        "--predictions",
        ndjson.to_str().unwrap(),
        "--predictions",
        csv.to_str().unwrap(),
        "--labels",
        labels.to_str().unwrap(),
        "--model",
        "m",
        "--format",
        "json",
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    let listed: Vec<(String, u64, String, Option<String>)> = report["problems"]["listed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|problem| {
            (
                Path::new(problem["file"].as_str().unwrap())
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
                problem["line"].as_u64().unwrap(),
                problem["code"].as_str().unwrap().to_owned(),
                problem["field"].as_str().map(str::to_owned),
            )
        })
        .collect();
    let expected = [
        ("predictions.ndjson", 2, "invalid_value", Some("latency_seconds")),
        ("predictions.ndjson", 4, "unknown_field", Some("colour")),
        ("predictions.ndjson", 5, "malformed_json", Some("confidence")),
        ("more.csv", 3, "invalid_type", Some("latency_seconds")),
        ("more.csv", 4, "invalid_value", Some("timestamp")),
        ("more.csv", 5, "malformed_csv", None),
        ("labels.ndjson", 2, "missing_field", Some("actual")),
    ];
    let expected: Vec<(String, u64, String, Option<String>)> = expected
        .iter()
        .map(|(file, line, code, field)| {
            (
                (*file).to_owned(),
                *line,
                (*code).to_owned(),
                field.map(str::to_owned),
            )
        })
        .collect();
    assert_eq!(listed, expected, "{}", report["problems"]);
    assert_eq!(report["problems"]["total"], 7);
    assert!(
        stderr.contains("predictions.ndjson:2: invalid_value latency_seconds"),
        "stderr: {stderr}"
    );
    // The good rows count: a1, a5 (NDJSON), c1, c5 (CSV).
    assert_eq!(report["models"]["m"]["whole"]["operations"]["requests"], 4);
    assert_eq!(report["inputs"]["predictions"][0]["rejected"], 3);
    assert_eq!(report["inputs"]["predictions"][1]["accepted"], 2);
    assert_eq!(report["labels"]["joined"], 2);
    assert_eq!(report["labels"]["orphaned"], 1);
    assert_eq!(report["models"]["m"]["whole"]["performance"]["accuracy"], 0.5);
}

#[test]
fn the_html_report_is_self_contained_with_svg_charts() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("report.html");
    let [predictions, early, main, corrections] = quality_files();
    let paths: Vec<String> = [&predictions, &early, &main, &corrections]
        .iter()
        .map(|path| path.display().to_string())
        .collect();
    run(&[
        "--predictions",
        &paths[0],
        "--labels",
        &paths[1],
        "--labels",
        &paths[2],
        "--labels",
        &paths[3],
        "--format",
        "html",
        "--out",
        out.to_str().unwrap(),
    ]);
    let html = std::fs::read_to_string(&out).unwrap();
    assert!(
        html.starts_with("<!DOCTYPE html>"),
        "{}",
        &html[..100.min(html.len())]
    );
    assert!(html.contains("<svg"), "no SVG chart in the report");
    assert!(
        html.matches("<svg").count() >= 8,
        "expected charts for both models"
    );
    for external in ["http://", "https://", "src=", "<link", "<script"] {
        assert!(
            !html.contains(external),
            "the HTML report refers to something outside it: {external}"
        );
    }
    assert!(html.contains("fraud_detector") && html.contains("price_model"));

    // The text summary names every model, and the windows.
    let text = run(&[
        "--predictions",
        &paths[0],
        "--labels",
        &paths[1],
        "--window",
        "1d",
    ]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("== fraud_detector") && text.contains("== price_model"),
        "{text}"
    );
    assert!(text.contains("2026-11-05T00:00:00Z"), "{text}");
}

// ---------------------------------------------------------------------------
// Parquet input: files written here with the `parquet` crate's writer.
// ---------------------------------------------------------------------------

mod parquet_files {
    use std::path::Path;
    use std::sync::Arc;

    use parquet::basic::{Compression, LogicalType, Repetition, TimeUnit, Type as PhysicalType};
    use parquet::data_type::{BoolType, ByteArray, ByteArrayType, DataType, DoubleType, Int64Type};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedColumnWriter;
    use parquet::file::writer::SerializedFileWriter;
    use parquet::schema::types::Type;

    /// The values of one column, `None` for null.
    pub enum Values {
        Text(Vec<Option<String>>),
        Double(Vec<Option<f64>>),
        Int64(Vec<Option<i64>>),
        Bool(Vec<Option<bool>>),
        /// A TIMESTAMP column (UTC) in the given unit.
        Timestamp(TimeUnit, Vec<Option<i64>>),
    }

    impl Values {
        fn len(&self) -> usize {
            match self {
                Values::Text(values) => values.len(),
                Values::Double(values) => values.len(),
                Values::Int64(values) | Values::Timestamp(_, values) => values.len(),
                Values::Bool(values) => values.len(),
            }
        }
    }

    /// Definition levels and the non-null values of `values[range]`.
    /// Writes the rows `range` of an optional column as Parquet type `P`:
    /// definition levels, then the present values, converted.
    fn write_values<P: DataType, T>(
        column: &mut SerializedColumnWriter<'_>,
        values: &[Option<T>],
        range: std::ops::Range<usize>,
        convert: impl Fn(&T) -> P::T,
    ) {
        let slice = &values[range];
        let definition: Vec<i16> = slice.iter().map(|value| i16::from(value.is_some())).collect();
        let present: Vec<P::T> = slice.iter().flatten().map(convert).collect();
        column
            .typed::<P>()
            .write_batch(&present, Some(&definition), None)
            .unwrap();
    }

    /// Writes `columns` (all optional) as a Parquet file, `rows_per_group`
    /// rows per row group.
    pub fn write(path: &Path, columns: &[(String, Values)], rows_per_group: usize, compression: Compression) {
        let fields = columns
            .iter()
            .map(|(name, values)| {
                let (physical, logical) = match values {
                    Values::Text(_) => (PhysicalType::BYTE_ARRAY, Some(LogicalType::String)),
                    Values::Double(_) => (PhysicalType::DOUBLE, None),
                    Values::Int64(_) => (PhysicalType::INT64, None),
                    Values::Bool(_) => (PhysicalType::BOOLEAN, None),
                    Values::Timestamp(unit, _) => {
                        (PhysicalType::INT64, Some(LogicalType::timestamp(true, *unit)))
                    }
                };
                Arc::new(
                    Type::primitive_type_builder(name, physical)
                        .with_repetition(Repetition::OPTIONAL)
                        .with_logical_type(logical)
                        .build()
                        .unwrap(),
                )
            })
            .collect();
        let schema = Arc::new(
            Type::group_type_builder("schema")
                .with_fields(fields)
                .build()
                .unwrap(),
        );
        let properties = Arc::new(WriterProperties::builder().set_compression(compression).build());
        let file = std::fs::File::create(path).unwrap();
        let mut writer = SerializedFileWriter::new(file, schema, properties).unwrap();
        let rows = columns.first().map_or(0, |(_, values)| values.len());
        for start in (0..rows).step_by(rows_per_group.max(1)) {
            let range = start..rows.min(start + rows_per_group);
            let mut group = writer.next_row_group().unwrap();
            for (_, values) in columns {
                let mut column = group.next_column().unwrap().unwrap();
                let range = range.clone();
                match values {
                    Values::Text(values) => {
                        write_values::<ByteArrayType, _>(&mut column, values, range, |text| {
                            ByteArray::from(text.as_str())
                        })
                    }
                    Values::Double(values) => {
                        write_values::<DoubleType, _>(&mut column, values, range, |value| *value)
                    }
                    Values::Int64(values) | Values::Timestamp(_, values) => {
                        write_values::<Int64Type, _>(&mut column, values, range, |value| *value)
                    }
                    Values::Bool(values) => {
                        write_values::<BoolType, _>(&mut column, values, range, |value| *value)
                    }
                }
                column.close().unwrap();
            }
            group.close().unwrap();
        }
        writer.close().unwrap();
    }
}

use parquet::basic::{Compression, TimeUnit};
use parquet_files::Values;

/// A wire timestamp (RFC 3339 or Unix seconds) in milliseconds.
fn timestamp_ms(value: &Value) -> Option<i64> {
    match value {
        Value::Null => None,
        Value::String(text) => Some(text.parse::<jiff::Timestamp>().unwrap().as_millisecond()),
        number => Some((number.as_f64().unwrap() * 1000.0).round() as i64),
    }
}

/// Writes the oracle's NDJSON predictions and labels as Parquet files, typed
/// as pandas would type them: one predictions file per model (each feature
/// a double, int64, boolean or string column by its values; timestamps a
/// TIMESTAMP(MILLIS) column), and per labels file one file of class labels
/// (string `actual`) and one of regression labels (double `actual`), their
/// timestamps in micro- then nanoseconds. The files are cut in row groups of
/// 500 rows, and each uses another codec.
fn write_quality_parquet(dir: &Path) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let [predictions, early, main, corrections] = quality_files();
    let lines = |path: &Path| -> Vec<Value> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .filter(|line| !line.trim().is_empty())
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    };
    let text = |value: &Value| value.as_str().map(str::to_owned);
    let codecs = [
        Compression::SNAPPY,
        Compression::ZSTD(Default::default()),
        Compression::GZIP(Default::default()),
        Compression::LZ4_RAW,
        Compression::UNCOMPRESSED,
    ];
    let mut codec = codecs.iter().cycle();
    let events = lines(&predictions);
    let by_model = group_by_model(&events);
    let mut prediction_files = Vec::new();
    for (model, events) in by_model {
        let mut columns: Vec<(String, Values)> = Vec::new();
        for name in ["prediction_id", "model", "version", "status", "error_type"] {
            columns.push((
                name.to_owned(),
                Values::Text(events.iter().map(|event| text(&event[name])).collect()),
            ));
        }
        columns.push((
            "timestamp".to_owned(),
            Values::Timestamp(
                TimeUnit::MILLIS,
                events
                    .iter()
                    .map(|event| timestamp_ms(&event["timestamp"]))
                    .collect(),
            ),
        ));
        columns.push((
            "latency_seconds".to_owned(),
            Values::Double(
                events
                    .iter()
                    .map(|event| event["latency_seconds"].as_f64())
                    .collect(),
            ),
        ));
        if events.iter().any(|event| event["prediction"].is_number()) {
            columns.push((
                "prediction_value".to_owned(),
                Values::Double(events.iter().map(|event| event["prediction"].as_f64()).collect()),
            ));
        } else {
            columns.push((
                "prediction".to_owned(),
                Values::Text(events.iter().map(|event| text(&event["prediction"])).collect()),
            ));
        }
        for (group, prefix) in [
            ("probabilities", "probability."),
            ("segments", "segment."),
            ("features", ""),
        ] {
            for name in keys_in_order(&events, group) {
                let cells: Vec<&Value> = events.iter().map(|event| &event[group][name.as_str()]).collect();
                let values = if cells.iter().any(|cell| cell.is_string()) {
                    Values::Text(cells.iter().map(|cell| text(cell)).collect())
                } else if cells.iter().any(|cell| cell.is_boolean()) {
                    Values::Bool(cells.iter().map(|cell| cell.as_bool()).collect())
                } else if cells.iter().all(|cell| cell.is_null() || cell.is_i64()) {
                    Values::Int64(cells.iter().map(|cell| cell.as_i64()).collect())
                } else {
                    Values::Double(cells.iter().map(|cell| cell.as_f64()).collect())
                };
                columns.push((format!("{prefix}{name}"), values));
            }
        }
        let path = dir.join(format!("{model}.parquet"));
        parquet_files::write(&path, &columns, 500, *codec.next().unwrap());
        prediction_files.push(path);
    }
    let mut label_files = Vec::new();
    for (index, source) in [early, main, corrections].iter().enumerate() {
        let labels = lines(source);
        for classes in [true, false] {
            let labels: Vec<&Value> = labels
                .iter()
                .filter(|label| label["actual"].is_string() == classes)
                .collect();
            let mut columns = vec![(
                "prediction_id".to_owned(),
                Values::Text(labels.iter().map(|label| text(&label["prediction_id"])).collect()),
            )];
            columns.push((
                "actual".to_owned(),
                if classes {
                    Values::Text(labels.iter().map(|label| text(&label["actual"])).collect())
                } else {
                    Values::Double(labels.iter().map(|label| label["actual"].as_f64()).collect())
                },
            ));
            let (unit, per_ms) = if index % 2 == 0 {
                (TimeUnit::MICROS, 1_000)
            } else {
                (TimeUnit::NANOS, 1_000_000)
            };
            columns.push((
                "timestamp".to_owned(),
                Values::Timestamp(
                    unit,
                    labels
                        .iter()
                        .map(|label| timestamp_ms(&label["timestamp"]).map(|ms| ms * per_ms))
                        .collect(),
                ),
            ));
            for name in keys_in_order(&labels, "business") {
                columns.push((
                    format!("business.{name}"),
                    Values::Double(
                        labels
                            .iter()
                            .map(|label| label["business"][name.as_str()].as_f64())
                            .collect(),
                    ),
                ));
            }
            let path = dir.join(format!(
                "labels_{index}_{}.parquet",
                if classes { "classes" } else { "values" }
            ));
            parquet_files::write(&path, &columns, 500, *codec.next().unwrap());
            label_files.push(path);
        }
    }
    (prediction_files, label_files)
}

/// Which chunks a worker adds up must not depend on timing: floating-point
/// sums (feature means, say) depend on their grouping, and a report read
/// twice from the same files is the same report, to the last digit.
#[test]
fn a_report_is_byte_identical_from_run_to_run() {
    let dir = tempfile::tempdir().unwrap();
    // Row groups of 500 rows: dozens of chunks for the 2 workers.
    let (predictions, labels) = write_quality_parquet(dir.path());
    let mut arguments: Vec<String> = Vec::new();
    for path in &predictions {
        arguments.extend(["--predictions".to_owned(), path.display().to_string()]);
    }
    for path in &labels {
        arguments.extend(["--labels".to_owned(), path.display().to_string()]);
    }
    arguments.extend(["--window", "1h", "--format", "json", "--threads", "2"].map(str::to_owned));
    let arguments: Vec<&str> = arguments.iter().map(String::as_str).collect();
    let first = run(&arguments).stdout;
    let report: Value = serde_json::from_slice(&first).unwrap();
    assert!(
        report["models"]
            .as_object()
            .is_some_and(|models| !models.is_empty()),
        "{report}"
    );
    for attempt in 1..6 {
        let again = run(&arguments).stdout;
        assert!(again == first, "run {attempt} gave another report");
    }
}

#[test]
fn parquet_input_gives_the_same_report_as_ndjson_and_csv() {
    let dir = tempfile::tempdir().unwrap();
    let (parquet_predictions, parquet_labels) = write_quality_parquet(dir.path());
    let (csv_predictions, csv_labels) = write_quality_csv(dir.path());
    let [predictions, early, main, corrections] = quality_files();
    let from_ndjson = quality_report(
        "1d",
        std::slice::from_ref(&predictions),
        &[early, main, corrections],
    );
    let from_csv = quality_report("1d", &csv_predictions, &csv_labels);
    let from_parquet = quality_report("1d", &parquet_predictions, &parquet_labels);
    assert_eq!(
        from_parquet["problems"]["total"], 0,
        "{}",
        from_parquet["problems"]
    );
    for file in from_parquet["inputs"]["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .chain(from_parquet["inputs"]["labels"].as_array().unwrap())
    {
        assert_eq!(file["format"], "parquet", "{file}");
    }
    assert_eq!(from_parquet["labels"], from_ndjson["labels"]);
    assert_eq!(from_parquet["labels"], from_csv["labels"]);
    // The CSV files hold the same rows per model, and leave out null cells
    // as the Parquet files do: the reports are the same, counts exactly and
    // sums to rounding (row groups are aggregated on both threads, the CSV
    // file on one).
    let mut problems = Vec::new();
    compare(
        "models",
        &from_csv["models"],
        Some(&from_parquet["models"]),
        &mut problems,
    );
    assert_no_differences(&problems, "the Parquet and the CSV report");
    let problems = compare_models_but_features(&from_ndjson, &from_parquet);
    assert_no_differences(&problems, "the Parquet and the NDJSON report");

    // The same rows as a drift reference: Parquet or NDJSON, the same drift.
    let reference_arguments = vec!["--predictions".to_owned(), predictions.display().to_string()];
    let drift_of = |reference: &[PathBuf]| {
        let mut arguments = reference_arguments.clone();
        for path in reference {
            arguments.extend(["--reference".to_owned(), path.display().to_string()]);
        }
        let arguments: Vec<&str> = arguments.iter().map(String::as_str).collect();
        json_report(&arguments)
    };
    let parquet_drift = drift_of(&parquet_predictions);
    let ndjson_drift = drift_of(std::slice::from_ref(&predictions));
    assert_eq!(parquet_drift["inputs"]["reference"][0]["format"], "parquet");
    let mut problems = Vec::new();
    for (model, wanted) in ndjson_drift["models"].as_object().unwrap() {
        assert!(
            wanted["whole"]["drift"]["features_compared"].as_u64().unwrap() > 0,
            "{model}"
        );
        for section in ["whole", "windows"] {
            compare(
                &format!("models.{model}.{section}"),
                &wanted[section],
                Some(&parquet_drift["models"][model][section]),
                &mut problems,
            );
        }
    }
    assert_no_differences(&problems, "the drift against a Parquet and an NDJSON reference");
}

fn texts(values: &[Option<&str>]) -> Values {
    Values::Text(values.iter().map(|value| value.map(str::to_owned)).collect())
}

#[test]
fn bad_parquet_rows_are_reported_with_their_row_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let predictions = dir.path().join("predictions.parquet");
    let second = 1_793_491_200_000i64;
    let timestamps = (0..7).map(|minute| Some(second + minute * 60_000)).collect();
    parquet_files::write(
        &predictions,
        &[
            (
                "prediction_id".to_owned(),
                texts(&[
                    Some("p1"),
                    None,
                    Some("p3"),
                    Some("p4"),
                    Some("p5"),
                    Some("p6"),
                    Some("p7"),
                ]),
            ),
            (
                "timestamp".to_owned(),
                Values::Timestamp(TimeUnit::MILLIS, timestamps),
            ),
            (
                "prediction".to_owned(),
                Values::Int64(vec![
                    Some(1),
                    Some(0),
                    Some(1),
                    Some(1),
                    Some(0),
                    Some(0),
                    Some(1),
                ]),
            ),
            (
                "confidence".to_owned(),
                Values::Double(vec![
                    Some(0.9),
                    Some(0.8),
                    Some(f64::NAN),
                    Some(1.5),
                    Some(0.7),
                    Some(0.6),
                    None,
                ]),
            ),
            // A string column where a number is expected: each row that has
            // a value is refused, as the same JSON field would be.
            (
                "latency_seconds".to_owned(),
                texts(&[None, None, None, None, Some("fast"), None, None]),
            ),
            (
                "amount".to_owned(),
                Values::Double(vec![
                    Some(1.0),
                    Some(2.0),
                    Some(3.0),
                    Some(4.0),
                    Some(5.0),
                    Some(f64::INFINITY),
                    None,
                ]),
            ),
        ],
        3,
        Compression::SNAPPY,
    );
    let labels = dir.path().join("labels.parquet");
    parquet_files::write(
        &labels,
        &[
            (
                "prediction_id".to_owned(),
                texts(&[Some("p1"), Some("p7"), Some("p3")]),
            ),
            ("actual".to_owned(), Values::Int64(vec![Some(1), None, Some(1)])),
        ],
        10,
        Compression::SNAPPY,
    );
    let output = run(&[
        "--predictions",
        predictions.to_str().unwrap(),
        "--labels",
        labels.to_str().unwrap(),
        "--model",
        "m",
        "--format",
        "json",
    ]);
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    let listed: Vec<(u64, &str, Option<&str>, &str)> = report["problems"]["listed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|problem| {
            (
                problem["line"].as_u64().unwrap(),
                problem["code"].as_str().unwrap(),
                problem["field"].as_str(),
                problem["message"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        [
            (
                2,
                "missing_field",
                Some("prediction_id"),
                "required field is missing"
            ),
            (3, "invalid_value", Some("confidence"), "must be a finite number"),
            (4, "invalid_value", Some("confidence"), "must be between 0 and 1"),
            (
                5,
                "invalid_type",
                Some("latency_seconds"),
                "expected a number, found a string"
            ),
            (6, "invalid_value", Some("amount"), "must be a finite number"),
            (2, "missing_field", Some("actual"), "required field is missing"),
        ],
        "{}",
        report["problems"]
    );
    for problem in report["problems"]["listed"].as_array().unwrap() {
        let file = problem["file"].as_str().unwrap();
        let expected = if problem == &report["problems"]["listed"][5] {
            "labels.parquet"
        } else {
            "predictions.parquet"
        };
        assert!(file.ends_with(expected), "{problem}");
    }
    assert_eq!(report["inputs"]["predictions"][0]["rows"], 7);
    assert_eq!(report["inputs"]["predictions"][0]["rejected"], 5);
    let whole = &report["models"]["m"]["whole"];
    assert_eq!(whole["operations"]["requests"], 2);
    // Integer classes read as their text, as the CSV cell `1` does.
    assert_eq!(
        whole["predictions"]["classes"]["1"]["count"], 2,
        "{}",
        whole["predictions"]
    );
    assert_eq!(report["labels"]["joined"], 1);
    assert_eq!(whole["performance"]["accuracy"], 1.0);
}

#[test]
fn unusable_parquet_files_stop_the_report_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let predictions = dir.path().join("p.parquet");
    parquet_files::write(
        &predictions,
        &[
            ("prediction_id".to_owned(), texts(&[Some("p1")])),
            ("prediction".to_owned(), texts(&[Some("a")])),
        ],
        10,
        Compression::SNAPPY,
    );
    let labels = dir.path().join("l.parquet");
    parquet_files::write(
        &labels,
        &[
            ("prediction_id".to_owned(), texts(&[Some("p1")])),
            ("actual".to_owned(), texts(&[Some("a")])),
            ("colour".to_owned(), texts(&[Some("red")])),
        ],
        10,
        Compression::SNAPPY,
    );
    let not_parquet = dir.path().join("broken.parquet");
    std::fs::write(&not_parquet, b"prediction_id,model\np1,m\n").unwrap();
    let cases: [(Vec<&str>, &str); 3] = [
        (
            vec![
                "--predictions",
                predictions.to_str().unwrap(),
                "--labels",
                labels.to_str().unwrap(),
                "--model",
                "m",
            ],
            "unknown column \"colour\" in a labels file",
        ),
        (
            vec!["--predictions", predictions.to_str().unwrap()],
            "the Parquet file has no model column: name the model with --model",
        ),
        (
            vec!["--predictions", not_parquet.to_str().unwrap(), "--model", "m"],
            "unreadable Parquet file",
        ),
    ];
    for (arguments, message) in cases {
        let output = Command::new(binary())
            .arg("report")
            .args(&arguments)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{arguments:?} succeeded");
        assert!(stderr.contains(message), "{arguments:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{arguments:?}: {stderr}");
    }
}

// ---------------------------------------------------------------------------
// The columnar Parquet path against the row path, on ugly rows.
// ---------------------------------------------------------------------------

/// A tiny linear congruential generator (Knuth's MMIX constants): the same
/// rows on every run, with no random-number crate.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound as u64) as usize
    }

    fn percent(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    /// A number of thousandths in [0, whole): short in decimal, so that the
    /// NDJSON text and the Parquet double are the same number.
    fn thousandths(&mut self, whole: u64) -> f64 {
        (self.next() % (whole * 1000)) as f64 / 1000.0
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

/// One cell of a generated table: a null is a key left out of the NDJSON
/// object and a null Parquet cell.
#[derive(Debug, Clone, PartialEq)]
enum Cell {
    Null,
    Text(String),
    /// For timestamp columns, Unix seconds.
    Number(f64),
}

fn text(value: &str) -> Cell {
    Cell::Text(value.to_owned())
}

#[derive(Debug, Clone, Copy)]
enum ColumnType {
    Text,
    Double,
    Int64,
    Timestamp(TimeUnit),
}

/// Where a column's value goes in the wire object.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Slot {
    Field,
    Feature,
    /// `business.NAME` is `business: {NAME: ...}`.
    Business,
}

type Row = BTreeMap<&'static str, Cell>;

/// Rows written both as NDJSON (one wire object per line) and as Parquet
/// (one flat column per field, feature and business value).
struct Table {
    columns: Vec<(&'static str, ColumnType, Slot)>,
    /// The model that `--model` gives the rows of a Parquet file without a
    /// `model` column: the NDJSON rows name it.
    implied_model: Option<&'static str>,
    rows: Vec<Row>,
}

impl Table {
    fn cell<'a>(row: &'a Row, name: &str) -> &'a Cell {
        row.get(name).unwrap_or(&Cell::Null)
    }

    /// One object per line, keys in column order (the order the Parquet
    /// reader gives the fields in, so that a row with two faults is refused
    /// for the same one), no blank line: NDJSON lines are Parquet rows.
    fn write_ndjson(&self, path: &Path) {
        let mut lines = String::new();
        for row in &self.rows {
            let mut fields: Vec<String> = self
                .implied_model
                .map(|model| format!("\"model\":\"{model}\""))
                .into_iter()
                .collect();
            let mut features = Vec::new();
            let mut business = Vec::new();
            for (name, _, slot) in &self.columns {
                let Some(json) = Self::json(name, Self::cell(row, name)) else {
                    continue;
                };
                match slot {
                    Slot::Field => {
                        // A regression output is the wire's `prediction`, a number.
                        let key = if *name == "prediction_value" {
                            "prediction"
                        } else {
                            name
                        };
                        fields.push(format!("\"{key}\":{json}"));
                    }
                    Slot::Feature => features.push(format!("\"{name}\":{json}")),
                    Slot::Business => {
                        let key = name.strip_prefix("business.").unwrap();
                        business.push(format!("\"{key}\":{json}"));
                    }
                }
            }
            for (key, entries) in [("features", features), ("business", business)] {
                if !entries.is_empty() {
                    fields.push(format!("\"{key}\":{{{}}}", entries.join(",")));
                }
            }
            lines.push_str(&format!("{{{}}}\n", fields.join(",")));
        }
        std::fs::write(path, lines).unwrap();
    }

    fn json(name: &str, cell: &Cell) -> Option<String> {
        match cell {
            Cell::Null => None,
            Cell::Text(text) => Some(Value::String(text.clone()).to_string()),
            // A float `actual` column reads as text, `NaN` and `inf` too.
            Cell::Number(number) if !number.is_finite() && name == "actual" => {
                Some(Value::String(number.to_string()).to_string())
            }
            // No JSON carries a NaN or an infinity: a number out of range
            // stands for one (see `non_finite_lines`).
            Cell::Number(number) if !number.is_finite() => {
                Some(if *number < 0.0 { "-1e999" } else { "1e999" }.to_owned())
            }
            Cell::Number(number) => Some(number.to_string()),
        }
    }

    fn write_parquet(&self, path: &Path, rows_per_group: usize, compression: Compression) {
        let number = |cell: &Cell| match cell {
            Cell::Number(number) => Some(*number),
            _ => None,
        };
        let columns: Vec<(String, Values)> = self
            .columns
            .iter()
            .map(|(name, column_type, _)| {
                let cells = self.rows.iter().map(|row| Self::cell(row, name));
                let values = match column_type {
                    ColumnType::Text => Values::Text(
                        cells
                            .map(|cell| match cell {
                                Cell::Text(text) => Some(text.clone()),
                                _ => None,
                            })
                            .collect(),
                    ),
                    ColumnType::Double => Values::Double(cells.map(number).collect()),
                    ColumnType::Int64 => {
                        Values::Int64(cells.map(|cell| number(cell).map(|value| value as i64)).collect())
                    }
                    ColumnType::Timestamp(unit) => {
                        let per_second = match unit {
                            TimeUnit::MILLIS => 1e3,
                            TimeUnit::MICROS => 1e6,
                            TimeUnit::NANOS => 1e9,
                        };
                        Values::Timestamp(
                            *unit,
                            cells
                                .map(|cell| number(cell).map(|seconds| (seconds * per_second).round() as i64))
                                .collect(),
                        )
                    }
                };
                ((*name).to_owned(), values)
            })
            .collect();
        parquet_files::write(path, &columns, rows_per_group, compression);
    }

    /// The lines whose row holds a NaN or an infinity in a number field:
    /// Parquet refuses them as not finite, and NDJSON, which cannot carry
    /// them, as malformed (its number out of range).
    fn non_finite_lines(&self) -> Vec<u64> {
        let mut lines = Vec::new();
        for (index, row) in self.rows.iter().enumerate() {
            let non_finite = row.iter().any(|(name, cell)| {
                *name != "actual" && matches!(cell, Cell::Number(number) if !number.is_finite())
            });
            if non_finite {
                lines.push(index as u64 + 1);
            }
        }
        lines
    }
}

/// A generated prediction a label can name.
struct KnownPrediction {
    id: String,
    model: &'static str,
    value: Option<f64>,
}

const HOUR_MS: i64 = 3_600_000;

/// Timestamp cell of a time in milliseconds.
fn seconds(ms: i64) -> Cell {
    Cell::Number(ms as f64 / 1000.0)
}

/// Sets the status and error type: mostly ok (given or not), some timeouts,
/// some errors with a type (three types for a limit of two).
fn set_status(rng: &mut Lcg, row: &mut Row) {
    match rng.below(100) {
        0..40 => {}
        40..80 => {
            row.insert("status", text("ok"));
        }
        80..90 => {
            row.insert("status", text("timeout"));
        }
        _ => {
            row.insert("status", text("error"));
            row.insert("error_type", text(rng.pick(&["db", "oom", "net"])));
        }
    }
}

fn set_latency(rng: &mut Lcg, row: &mut Row) {
    let latency = match rng.below(100) {
        0..5 => return,
        5 => 0.0,
        6 => 86_400.0,
        _ => rng.thousandths(2),
    };
    row.insert("latency_seconds", Cell::Number(latency));
}

/// Gives a prediction row one fault, of the many a row can have.
fn spoil_prediction(
    rng: &mut Lcg,
    row: &mut Row,
    output: &'static str,
    features: &[&'static str],
    now_ms: i64,
) {
    let fault = rng.below(27);
    let (field, cell) = match fault {
        0 => ("prediction_id", Cell::Null),
        1 => ("prediction_id", text("")),
        2 => ("prediction_id", text(&"x".repeat(300))),
        3 => ("model", Cell::Null),
        4 => ("model", text("bad model!")),
        5 => ("model", text(&"m".repeat(300))),
        6 => ("latency_seconds", Cell::Number(f64::NAN)),
        7 => ("latency_seconds", Cell::Number(f64::INFINITY)),
        8 => ("latency_seconds", Cell::Number(-1.5)),
        9 => ("latency_seconds", Cell::Number(90_000.0)),
        10 => ("confidence", Cell::Number(f64::NAN)),
        11 => ("confidence", Cell::Number(1.5)),
        12 => ("confidence", Cell::Number(-0.25)),
        13 => (features[rng.below(features.len())], Cell::Number(f64::NAN)),
        14 => (
            features[rng.below(features.len())],
            Cell::Number(f64::NEG_INFINITY),
        ),
        15 => ("status", text("crashed")),
        16 => {
            row.remove("error_type");
            ("status", text("error"))
        }
        17 => {
            row.insert("status", text("ok"));
            ("error_type", text("db"))
        }
        18 => {
            row.remove("status");
            ("error_type", text("db"))
        }
        19 => {
            row.insert("status", text("timeout"));
            ("error_type", text("db"))
        }
        20 => ("timestamp", seconds(now_ms + 24 * HOUR_MS)),
        21 => ("timestamp", seconds(-5_000)),
        22 => ("version", text("")),
        23 => ("version", text("v\u{7}")),
        24 if output == "prediction" => ("prediction", text(&"k".repeat(300))),
        25 if output == "prediction" => ("confidence", Cell::Number(f64::INFINITY)),
        24 => (output, Cell::Number(f64::NAN)),
        25 => (output, Cell::Number(f64::INFINITY)),
        _ if output == "prediction" => ("timestamp", seconds(-1)),
        // A float timestamp column can hold a NaN.
        _ => ("timestamp", Cell::Number(f64::NAN)),
    };
    row.insert(field, cell);
}

/// The first predictions file: classes (`prediction` as text), timestamps as
/// TIMESTAMP(MILLIS), an Int64 feature, and `f_late`, null for the first
/// half of the rows, so that it comes after four other features have taken
/// the model's feature slots.
fn ugly_class_predictions(
    rng: &mut Lcg,
    base_ms: i64,
    now_ms: i64,
    known: &mut Vec<KnownPrediction>,
) -> Table {
    const FEATURES: [&str; 6] = ["f_late", "f1", "f2", "f3", "f4", "f5"];
    let mut columns = vec![
        ("prediction_id", ColumnType::Text, Slot::Field),
        ("model", ColumnType::Text, Slot::Field),
        ("version", ColumnType::Text, Slot::Field),
        ("status", ColumnType::Text, Slot::Field),
        ("error_type", ColumnType::Text, Slot::Field),
        ("timestamp", ColumnType::Timestamp(TimeUnit::MILLIS), Slot::Field),
        ("latency_seconds", ColumnType::Double, Slot::Field),
        ("prediction", ColumnType::Text, Slot::Field),
        ("confidence", ColumnType::Double, Slot::Field),
    ];
    columns.extend(FEATURES.map(|name| (name, ColumnType::Double, Slot::Feature)));
    columns.push(("f6", ColumnType::Int64, Slot::Feature));
    let rows_count = 3000;
    let mut rows = Vec::with_capacity(rows_count);
    for index in 0..rows_count {
        // `price` comes third, before the models past the limit: it is the
        // regression model of the second file, and must be admitted.
        let model = match (index, rng.below(100)) {
            (0, _) => "fraud",
            (1, _) => "churn",
            (2, _) => "price",
            (_, 0..55) => "fraud",
            (_, 55..85) => "churn",
            (_, 85..96) => "price",
            _ => rng.pick(&["x1", "x2", "x3"]),
        };
        let mut row = Row::new();
        // A prediction id seen before, in an earlier row group.
        let id = if index > 600 && rng.percent(3) {
            known[rng.below(known.len() / 2)].id.clone()
        } else if index > 10 && rng.percent(2) {
            // ... or a few rows before, in the same slice mostly.
            match Table::cell(&rows[index - 1 - rng.below(10)], "prediction_id") {
                Cell::Text(id) => id.clone(),
                _ => format!("p{index}"),
            }
        } else {
            format!("p{index}")
        };
        row.insert("prediction_id", Cell::Text(id));
        row.insert("model", text(model));
        let version = match model {
            "fraud" if rng.percent(2) => Some("__other__"),
            "fraud" => Some(rng.pick(&["v1", "v2", "v3", "v4", "v1", "v2"])),
            "churn" => Some(rng.pick(&["v1", "v2"])),
            "price" => None,
            _ => Some("v1"),
        };
        if let Some(version) = version.filter(|_| !rng.percent(10)) {
            row.insert("version", text(version));
        }
        set_status(rng, &mut row);
        if !rng.percent(3) {
            row.insert(
                "timestamp",
                seconds(base_ms + index as i64 * 25_000 + rng.below(1000) as i64),
            );
        }
        set_latency(rng, &mut row);
        // `price` has neither class nor confidence here: a model of no kind
        // yet, which the second file makes a regression model.
        if model != "price" {
            let class = match model {
                "fraud" if rng.percent(2) => "__other__".to_owned(),
                "fraud" => rng.pick(&["a", "a", "b", "b", "c", "d", "e"]).to_owned(),
                // More distinct classes than a slice's name table holds.
                "churn" => format!("c{}", rng.below(130)),
                _ => "a".to_owned(),
            };
            if !rng.percent(5) {
                row.insert("prediction", Cell::Text(class));
            }
            let confidence = match rng.below(100) {
                0..8 => None,
                8..10 => Some(1.0),
                10 => Some(0.0),
                _ => Some(rng.thousandths(1)),
            };
            if let Some(confidence) = confidence {
                row.insert("confidence", Cell::Number(confidence));
            }
        }
        for name in FEATURES {
            let present = match name {
                "f_late" => index >= rows_count / 2 && rng.percent(70),
                // The last row groups have a column without nulls.
                "f1" if index >= 2100 => true,
                _ => rng.percent(90),
            };
            if present {
                row.insert(name, Cell::Number(rng.thousandths(10) - 5.0));
            }
        }
        if rng.percent(80) {
            row.insert("f6", Cell::Number(rng.below(100) as f64));
        }
        if rng.percent(6) {
            spoil_prediction(rng, &mut row, "prediction", &FEATURES, now_ms);
        }
        remember(&row, None, None, known);
        rows.push(row);
    }
    Table {
        columns,
        implied_model: None,
        rows,
    }
}

/// Records a row's id and model for the labels, when it has usable ones.
fn remember(
    row: &Row,
    implied_model: Option<&'static str>,
    value: Option<f64>,
    known: &mut Vec<KnownPrediction>,
) {
    let Cell::Text(id) = Table::cell(row, "prediction_id") else {
        return;
    };
    let model = match Table::cell(row, "model") {
        Cell::Text(model) => ["fraud", "churn", "price", "x1", "x2", "x3"]
            .into_iter()
            .find(|known| known == model),
        _ => implied_model,
    };
    let Some(model) = model else {
        return;
    };
    if !id.is_empty() && id.len() <= 256 {
        known.push(KnownPrediction {
            id: id.clone(),
            model,
            value,
        });
    }
}

/// The second predictions file, read after the first: regression outputs
/// (`prediction_value`), timestamps as float seconds, a new feature `g1`
/// first. Its rows of `churn` and `fraud` (classifiers by then) are refused
/// for their kind, as are `price` rows with a confidence and no output.
fn ugly_value_predictions(
    rng: &mut Lcg,
    base_ms: i64,
    now_ms: i64,
    known: &mut Vec<KnownPrediction>,
) -> Table {
    const FEATURES: [&str; 3] = ["g1", "f2", "f1"];
    let mut columns = vec![
        ("prediction_id", ColumnType::Text, Slot::Field),
        ("model", ColumnType::Text, Slot::Field),
        ("version", ColumnType::Text, Slot::Field),
        ("status", ColumnType::Text, Slot::Field),
        ("error_type", ColumnType::Text, Slot::Field),
        ("timestamp", ColumnType::Double, Slot::Field),
        ("latency_seconds", ColumnType::Double, Slot::Field),
        ("prediction_value", ColumnType::Double, Slot::Field),
        ("confidence", ColumnType::Double, Slot::Field),
    ];
    columns.extend(FEATURES.map(|name| (name, ColumnType::Double, Slot::Feature)));
    let rows_count = 1000;
    let mut rows = Vec::with_capacity(rows_count);
    for index in 0..rows_count {
        let model = match rng.below(100) {
            0..85 => "price",
            85..91 => "churn",
            91..95 => "fraud",
            _ => rng.pick(&["x1", "x2", "x3"]),
        };
        let mut row = Row::new();
        let id = if rng.percent(5) {
            known[rng.below(known.len())].id.clone()
        } else {
            format!("q{index}")
        };
        row.insert("prediction_id", Cell::Text(id));
        row.insert("model", text(model));
        let version = match model {
            "price" => rng.pick(&["v1", "v2", "v3"]),
            _ => "v1",
        };
        if !rng.percent(10) {
            row.insert("version", text(version));
        }
        set_status(rng, &mut row);
        if !rng.percent(3) {
            row.insert(
                "timestamp",
                seconds(base_ms + index as i64 * 75_000 + rng.below(1000) as i64),
            );
        }
        set_latency(rng, &mut row);
        let value = (!rng.percent(5)).then(|| rng.thousandths(100));
        if let Some(value) = value {
            row.insert("prediction_value", Cell::Number(value));
        }
        if rng.percent(10) {
            row.insert("confidence", Cell::Number(rng.thousandths(1)));
        }
        for name in FEATURES {
            if rng.percent(if name == "g1" { 60 } else { 90 }) {
                row.insert(name, Cell::Number(rng.thousandths(20)));
            }
        }
        if rng.percent(6) {
            spoil_prediction(rng, &mut row, "prediction_value", &FEATURES, now_ms);
        }
        remember(&row, None, value, known);
        rows.push(row);
    }
    Table {
        columns,
        implied_model: None,
        rows,
    }
}

/// A third predictions file with the fewest columns the columnar path
/// takes, read last: no `model` column (`--model churn` names the model), no
/// timestamp (its rows take the time of the report), no version (its rows
/// are `unversioned`, admitted or folded as the first file left churn).
fn minimal_predictions(rng: &mut Lcg, known: &mut Vec<KnownPrediction>) -> Table {
    let columns = vec![
        ("prediction_id", ColumnType::Text, Slot::Field),
        ("prediction", ColumnType::Text, Slot::Field),
        ("f1", ColumnType::Double, Slot::Feature),
    ];
    let mut rows = Vec::new();
    for index in 0..600 {
        let mut row = Row::new();
        let id = if rng.percent(4) {
            known[rng.below(known.len())].id.clone()
        } else {
            format!("r{index}")
        };
        row.insert("prediction_id", Cell::Text(id));
        if !rng.percent(5) {
            row.insert("prediction", Cell::Text(format!("c{}", rng.below(130))));
        }
        if rng.percent(80) {
            row.insert("f1", Cell::Number(rng.thousandths(10)));
        }
        if rng.percent(5) {
            let (field, cell) = match rng.below(4) {
                0 => ("prediction_id", Cell::Null),
                1 => ("prediction_id", text("")),
                2 => ("prediction", text(&"k".repeat(300))),
                _ => ("f1", Cell::Number(f64::NAN)),
            };
            row.insert(field, cell);
        }
        remember(&row, Some("churn"), None, known);
        rows.push(row);
    }
    Table {
        columns,
        implied_model: Some("churn"),
        rows,
    }
}

/// A labels file of `prediction_id` and `actual` alone.
fn minimal_labels(rng: &mut Lcg, known: &[KnownPrediction]) -> Table {
    let columns = vec![
        ("prediction_id", ColumnType::Text, Slot::Field),
        ("actual", ColumnType::Text, Slot::Field),
    ];
    let mut rows: Vec<Row> = Vec::new();
    for index in 0..300 {
        let row = if index > 20 && rng.percent(5) {
            rows[rng.below(index)].clone()
        } else {
            let prediction = &known[known.len() - 1 - rng.below(known.len() / 3)];
            let mut row = Row::new();
            row.insert("prediction_id", Cell::Text(prediction.id.clone()));
            if !rng.percent(3) {
                row.insert("actual", actual_for(rng, prediction, true));
            }
            row
        };
        rows.push(row);
    }
    Table {
        columns,
        implied_model: None,
        rows,
    }
}

/// An actual for a prediction of `model`: for classifiers a class (some
/// unknown to the model, some past its class limit), for `price` a number
/// (given as text in the classes file: a regression model parses it).
fn actual_for(rng: &mut Lcg, prediction: &KnownPrediction, as_text: bool) -> Cell {
    match prediction.model {
        "price" => {
            let value = prediction.value.unwrap_or(50.0) + rng.thousandths(4) - 2.0;
            match (as_text, rng.percent(20)) {
                (true, true) => text("not a number"),
                (true, false) => Cell::Text(value.to_string()),
                (false, _) => Cell::Number(value),
            }
        }
        "fraud" if as_text => text(rng.pick(&["a", "b", "c", "d", "e", "zz", "__other__"])),
        "churn" if as_text => Cell::Text(format!("c{}", rng.below(130))),
        // A number for a classifier names the class spelled as the number.
        "fraud" | "churn" => Cell::Number(rng.pick(&["1", "2", "2.5"]).parse().unwrap()),
        _ if as_text => text("a"),
        _ => Cell::Number(1.0),
    }
}

/// A labels file: joined labels, orphans, identical resends, corrections
/// (a different actual for an id labeled before), and faults. `as_text`:
/// a string `actual` column (else a double one) and two business columns
/// for a limit of one.
fn ugly_labels(rng: &mut Lcg, as_text: bool, base_ms: i64, now_ms: i64, known: &[KnownPrediction]) -> Table {
    let mut columns = vec![
        ("prediction_id", ColumnType::Text, Slot::Field),
        (
            "actual",
            if as_text {
                ColumnType::Text
            } else {
                ColumnType::Double
            },
            Slot::Field,
        ),
        (
            "timestamp",
            ColumnType::Timestamp(if as_text {
                TimeUnit::MICROS
            } else {
                TimeUnit::NANOS
            }),
            Slot::Field,
        ),
        ("business.revenue", ColumnType::Double, Slot::Business),
    ];
    if as_text {
        columns.push(("business.cost", ColumnType::Double, Slot::Business));
    }
    let rows_count = if as_text { 1500 } else { 600 };
    let regression: Vec<&KnownPrediction> = known.iter().filter(|known| known.model == "price").collect();
    let mut rows: Vec<Row> = Vec::with_capacity(rows_count);
    for index in 0..rows_count {
        let row = match rng.below(100) {
            // The same label again, rows later.
            0..8 if index > 300 => rows[rng.below(index - 250)].clone(),
            8..14 if index > 300 => {
                let mut row = rows[rng.below(index - 250)].clone();
                let prediction = match Table::cell(&row, "prediction_id") {
                    Cell::Text(id) => known.iter().find(|known| known.id == *id),
                    _ => None,
                };
                if let Some(prediction) = prediction {
                    row.insert("actual", actual_for(rng, prediction, as_text));
                }
                row
            }
            percent => {
                let mut row = Row::new();
                let prediction = if !as_text && percent < 75 {
                    regression[rng.below(regression.len())]
                } else {
                    &known[rng.below(known.len())]
                };
                if percent < 24 {
                    row.insert("prediction_id", Cell::Text(format!("orphan{index}")));
                } else {
                    row.insert("prediction_id", Cell::Text(prediction.id.clone()));
                }
                let actual = match rng.below(200) {
                    0 if !as_text => Cell::Number(f64::NAN),
                    1 if !as_text => Cell::Number(f64::INFINITY),
                    _ => actual_for(rng, prediction, as_text),
                };
                row.insert("actual", actual);
                if !rng.percent(5) {
                    row.insert(
                        "timestamp",
                        seconds(base_ms + rng.below(20 * 3_600) as i64 * 1000),
                    );
                }
                if !rng.percent(15) {
                    row.insert("business.revenue", Cell::Number(rng.thousandths(500)));
                }
                if as_text && rng.percent(30) {
                    row.insert("business.cost", Cell::Number(rng.thousandths(50)));
                }
                if rng.percent(6) {
                    let (field, cell) = match rng.below(if as_text { 10 } else { 8 }) {
                        0 => ("actual", Cell::Null),
                        1 => ("prediction_id", Cell::Null),
                        2 => ("prediction_id", text("")),
                        3 => ("prediction_id", text(&"y".repeat(300))),
                        4 => ("timestamp", seconds(now_ms + 24 * HOUR_MS)),
                        5 => ("timestamp", seconds(-5_000)),
                        6 => ("business.revenue", Cell::Number(f64::NAN)),
                        7 => ("business.revenue", Cell::Number(f64::INFINITY)),
                        8 => ("business.cost", Cell::Number(f64::NEG_INFINITY)),
                        _ => ("actual", text(&"z".repeat(300))),
                    };
                    row.insert(field, cell);
                }
                row
            }
        };
        rows.push(row);
    }
    Table {
        columns,
        implied_model: None,
        rows,
    }
}

/// Each file's listed problems by line: its (code, message) pairs, sorted.
/// The file is named by its stem, which the NDJSON and the Parquet file
/// share; the `field` is left out, since NDJSON names wire fields
/// (`features.f1`) and Parquet its columns (`f1`).
fn problems_by_line(report: &Value) -> BTreeMap<(String, u64), Vec<(String, String)>> {
    let mut by_line: BTreeMap<(String, u64), Vec<(String, String)>> = BTreeMap::new();
    for problem in report["problems"]["listed"].as_array().unwrap() {
        let file = Path::new(problem["file"].as_str().unwrap())
            .file_stem()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        by_line
            .entry((file, problem["line"].as_u64().unwrap()))
            .or_default()
            .push((
                problem["code"].as_str().unwrap().to_owned(),
                problem["message"].as_str().unwrap().to_owned(),
            ));
    }
    by_line.values_mut().for_each(|problems| problems.sort());
    by_line
}

/// The Parquet files of this test have the shapes the columnar path covers,
/// and rows of every kind it must send down the row path (nulls, NaNs,
/// faults of each field, names past the limits, more distinct classes than
/// a slice's table holds, duplicates across row groups, a model's kind
/// changing between files): the report is the one of the same rows as
/// NDJSON, which only the row path reads.
#[test]
fn columnar_parquet_gives_the_row_path_report_on_ugly_rows() {
    let dir = tempfile::tempdir().unwrap();
    let now_ms = jiff::Timestamp::now().as_millisecond();
    // The data fills the day before the current hour; rows without a
    // timestamp take the time of the report.
    let base_ms = (now_ms / HOUR_MS - 25) * HOUR_MS;
    let mut rng = Lcg(0x6d6f_6465_6c77);
    let mut known = Vec::new();
    let class_predictions = ugly_class_predictions(&mut rng, base_ms, now_ms, &mut known);
    let value_predictions = ugly_value_predictions(&mut rng, base_ms, now_ms, &mut known);
    let minimal_predictions = minimal_predictions(&mut rng, &mut known);
    let class_labels = ugly_labels(&mut rng, true, base_ms, now_ms, &known);
    let value_labels = ugly_labels(&mut rng, false, base_ms, now_ms, &known);
    let minimal_labels = minimal_labels(&mut rng, &known);
    let tables = [
        (
            "predictions_classes",
            &class_predictions,
            300,
            Compression::SNAPPY,
        ),
        (
            "predictions_values",
            &value_predictions,
            300,
            Compression::ZSTD(Default::default()),
        ),
        (
            "predictions_minimal",
            &minimal_predictions,
            300,
            Compression::LZ4_RAW,
        ),
        ("labels_classes", &class_labels, 250, Compression::SNAPPY),
        ("labels_values", &value_labels, 250, Compression::UNCOMPRESSED),
        ("labels_minimal", &minimal_labels, 100, Compression::SNAPPY),
    ];
    let mut non_finite: Vec<(String, u64)> = Vec::new();
    for (stem, table, rows_per_group, compression) in &tables {
        table.write_ndjson(&dir.path().join(format!("{stem}.ndjson")));
        table.write_parquet(
            &dir.path().join(format!("{stem}.parquet")),
            *rows_per_group,
            *compression,
        );
        non_finite.extend(
            table
                .non_finite_lines()
                .into_iter()
                .map(|line| ((*stem).to_owned(), line)),
        );
    }
    let config = dir.path().join("limits.yaml");
    std::fs::write(
        &config,
        "limits:\n  max_models: 4\n  max_versions_per_model: 2\n  max_classes_per_model: 3\n  \
         max_error_types_per_model: 2\n  max_features_per_model: 4\n  max_business_metrics_per_model: 1\n",
    )
    .unwrap();
    let report_of = |extension: &str, reference: bool| {
        let mut arguments = Vec::new();
        for (stem, ..) in &tables {
            let option = if stem.starts_with("predictions") {
                "--predictions"
            } else {
                "--labels"
            };
            let path = dir.path().join(format!("{stem}.{extension}"));
            arguments.extend([option.to_owned(), path.display().to_string()]);
        }
        arguments.extend(["--window", "1h", "--config"].map(str::to_owned));
        arguments.push(config.display().to_string());
        // For the minimal predictions file, which has no model column.
        arguments.extend(["--model", "churn"].map(str::to_owned));
        if reference {
            let path = dir.path().join(format!("predictions_classes.{extension}"));
            arguments.extend(["--reference".to_owned(), path.display().to_string()]);
        }
        let arguments: Vec<&str> = arguments.iter().map(String::as_str).collect();
        json_report(&arguments)
    };
    // Rows without a timestamp count in the hour of each run: the runs must
    // fall in the same hour (run again when the hour turned in between).
    let current_hour = || jiff::Timestamp::now().as_millisecond() / HOUR_MS;
    let mut runs = 0;
    let (from_ndjson, from_parquet, drift_from_ndjson, drift_from_parquet) = loop {
        runs += 1;
        let hour = current_hour();
        let reports = (
            report_of("ndjson", false),
            report_of("parquet", false),
            report_of("ndjson", true),
            report_of("parquet", true),
        );
        if current_hour() == hour {
            break reports;
        }
        assert!(runs < 3, "the hour turned during each of {runs} runs");
    };

    for (report, format) in [(&from_ndjson, "ndjson"), (&from_parquet, "parquet")] {
        for group in ["predictions", "labels"] {
            for file in report["inputs"][group].as_array().unwrap() {
                assert_eq!(file["format"], format, "{file}");
            }
        }
    }
    let counts = |report: &Value| -> Vec<Value> {
        ["predictions", "labels"]
            .iter()
            .flat_map(|group| report["inputs"][group].as_array().unwrap().clone())
            .map(|file| {
                serde_json::json!([
                    file["rows"],
                    file["accepted"],
                    file["duplicates"],
                    file["rejected"]
                ])
            })
            .collect()
    };
    assert_eq!(
        counts(&from_parquet),
        counts(&from_ndjson),
        "rows, accepted, duplicates, rejected per file"
    );
    assert_eq!(from_parquet["labels"], from_ndjson["labels"]);

    let total = from_ndjson["problems"]["total"].as_u64().unwrap();
    assert!(total > 0);
    assert_eq!(from_parquet["problems"]["total"], total);
    // Every problem is listed (the report lists the first 1000 of a pass),
    // so the lists compare whole.
    assert!(total < 1000, "{total} problems: fewer faults are needed");
    let expected = problems_by_line(&from_ndjson);
    let got = problems_by_line(&from_parquet);
    let mut differences = Vec::new();
    let lines: std::collections::BTreeSet<&(String, u64)> = expected.keys().chain(got.keys()).collect();
    for line in lines {
        let (wanted, found) = (expected.get(line), got.get(line));
        if non_finite.contains(line) {
            let codes = |problems: Option<&Vec<(String, String)>>| -> Vec<String> {
                problems
                    .into_iter()
                    .flatten()
                    .map(|(code, _)| code.clone())
                    .collect()
            };
            if codes(wanted) != ["malformed_json"] || codes(found) != ["invalid_value"] {
                differences.push(format!(
                    "{line:?} (a NaN or an infinity): NDJSON {wanted:?}, Parquet {found:?}"
                ));
            }
        } else if wanted != found {
            differences.push(format!("{line:?}: NDJSON {wanted:?}, Parquet {found:?}"));
        }
    }
    assert_no_differences(&differences, "the NDJSON and the Parquet problems");

    let mut differences = Vec::new();
    compare(
        "models",
        &from_ndjson["models"],
        Some(&from_parquet["models"]),
        &mut differences,
    );
    assert_no_differences(&differences, "the NDJSON and the Parquet report");

    // With a reference (read by the row path either way), the columnar
    // path also keeps the drift summaries of the rows it aggregates.
    let mut differences = Vec::new();
    compare(
        "models",
        &drift_from_ndjson["models"],
        Some(&drift_from_parquet["models"]),
        &mut differences,
    );
    assert_no_differences(&differences, "the NDJSON and the Parquet report with a reference");
    let fraud_drift = &drift_from_ndjson["models"]["fraud"]["whole"]["drift"];
    assert!(
        fraud_drift["features_compared"].as_u64().unwrap() > 0,
        "{fraud_drift}"
    );

    // The rows did what they are here for.
    let models = &from_ndjson["models"];
    let model_names: Vec<&String> = models.as_object().unwrap().keys().collect();
    assert_eq!(model_names.len(), 4, "{model_names:?}");
    assert_eq!(models["price"]["kind"], "regression");
    assert_eq!(models["fraud"]["kind"], "classification");
    for model in ["fraud", "churn", "price"] {
        assert!(
            models[model]["versions"]
                .as_array()
                .unwrap()
                .contains(&Value::from("__other__")),
            "{model}: {}",
            models[model]["versions"]
        );
        let features = &models[model]["whole"]["features"]["features"];
        assert!(features.get("__other__").is_some(), "{model}: {features}");
    }
    for model in ["fraud", "churn"] {
        let classes = &models[model]["whole"]["predictions"]["classes"];
        assert!(classes.get("__other__").is_some(), "{model}: {classes}");
    }
    let labels = &from_ndjson["labels"];
    for count in ["joined", "duplicates", "corrected", "orphaned", "unscorable"] {
        assert!(labels[count].as_u64().unwrap() > 0, "{count}: {labels}");
    }
    let messages: Vec<&str> = from_ndjson["problems"]["listed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|problem| problem["message"].as_str().unwrap())
        .collect();
    for wanted in [
        "model limit reached",
        "is a classification model",
        "is a regression model",
        "required when status is error",
        "only allowed when status is error",
        "must be one of ok, error, timeout",
        "must be at most 256 bytes",
        "must not be before 1970",
        "after the time of receipt",
    ] {
        assert!(
            messages.iter().any(|message| message.contains(wanted)),
            "no problem says {wanted:?}"
        );
    }
}
