//! `modelwatch dashboard` end to end: the generated Grafana dashboard is well
//! formed (schema version, the `datasource` and `model_name` variables, every
//! panel on the data-source variable and filtered by model, unique ids, grid
//! positions), the committed `deploy/grafana/dashboards/modelwatch.json` is
//! what the command generates today, and every query of every panel, run
//! against a real Prometheus scraping the real binary after real traffic of
//! two models, parses and returns data.
//!
//! `MODELWATCH_GRAFANA_SKIP_PANELS` (comma-separated panel titles) relaxes
//! "returns data" for those panels while their metrics are not exposed yet;
//! their queries must still parse. Unset, nothing is skipped.
//!
//! Needs Prometheus 2.x (`apt-get install -y prometheus`).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Prometheus, Server, percent_encode, wait_until};

const SKIP_PANELS_VARIABLE: &str = "MODELWATCH_GRAFANA_SKIP_PANELS";
const MODEL_FILTER: &str = r#"model_name=~"$model_name""#;
const DATASOURCE_UID: &str = "${datasource}";
/// How long Prometheus may take to show what modelwatch exposes, and to
/// evaluate the rules over it (1 s scrapes and evaluations).
const SCRAPE_DEADLINE: Duration = Duration::from_secs(20);
/// How long every panel query may take to return data, all of them together.
const PANELS_DEADLINE: Duration = Duration::from_secs(30);

/// What Grafana would put in place of its variables when the test runs a
/// query: every model, and ranges that cover the test's traffic.
const SUBSTITUTIONS: [(&str, &str); 4] = [
    ("$model_name", ".*"),
    ("$__rate_interval", "1m"),
    ("$__interval", "15s"),
    ("$__range", "1h"),
];

/// The metrics the dashboard must show (SPEC §1 J, §3).
const REQUIRED_METRICS: [&str; 18] = [
    "ml_prediction_requests_total",
    "ml_prediction_latency_seconds_bucket",
    "ml_prediction_errors_total",
    "ml_prediction_class_total",
    "ml_prediction_confidence_bucket",
    "ml_feature_value",
    "ml_model_accuracy",
    "ml_model_precision",
    "ml_model_recall",
    "ml_model_f1",
    "ml_model_labeled_sample_size",
    "ml_prediction_labeled_total",
    "ml_feature_drift_score",
    "ml_prediction_drift_score",
    "ml_slo_error_budget_remaining_ratio",
    "ml_slo_burn_rate",
    "modelwatch_alerts",
    "ALERTS",
];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs `modelwatch dashboard` with `arguments`; returns stdout.
fn run_dashboard(arguments: &[&std::ffi::OsStr]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_modelwatch"))
        .arg("dashboard")
        .args(arguments)
        .env_remove("MODELWATCH_CONFIG")
        .output()
        .expect("run modelwatch dashboard");
    assert!(
        output.status.success(),
        "modelwatch dashboard failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("the dashboard is UTF-8")
}

fn generate(config: Option<&Path>) -> Value {
    let text = match config {
        Some(config) => run_dashboard(&["--config".as_ref(), config.as_os_str()]),
        None => run_dashboard(&[]),
    };
    serde_json::from_str(&text).unwrap_or_else(|error| panic!("the dashboard is not JSON ({error}):\n{text}"))
}

/// Every panel, rows included, with the panels of collapsed rows.
fn all_panels(dashboard: &Value) -> Vec<&Value> {
    let mut panels = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels is an array") {
        panels.push(panel);
        if let Some(nested) = panel["panels"].as_array() {
            panels.extend(nested);
        }
    }
    panels
}

/// The panels that query: everything but row headers.
fn query_panels(dashboard: &Value) -> Vec<&Value> {
    all_panels(dashboard)
        .into_iter()
        .filter(|panel| panel["type"] != "row")
        .collect()
}

fn title(panel: &Value) -> &str {
    panel["title"].as_str().expect("every panel has a title")
}

fn variable<'a>(dashboard: &'a Value, name: &str) -> &'a Value {
    dashboard["templating"]["list"]
        .as_array()
        .expect("templating.list is an array")
        .iter()
        .find(|variable| variable["name"] == name)
        .unwrap_or_else(|| panic!("no `{name}` variable in {}", dashboard["templating"]))
}

/// The metric selectors of `expr` for the families that carry `model_name`
/// (`ml_*`, `ALERTS` of the generated rules, and `modelwatch_alerts`):
/// `(metric, matchers)`.
fn model_selectors(expr: &str) -> Vec<(String, String)> {
    let bytes = expr.as_bytes();
    let is_identifier = |byte: u8| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b':';
    let mut selectors = Vec::new();
    let mut in_string = false;
    let mut index = 0;
    while index < bytes.len() {
        let byte = bytes[index];
        if byte == b'\\' && in_string {
            index += 2;
            continue;
        }
        if byte == b'"' {
            in_string = !in_string;
        }
        let starts_identifier = !in_string && (index == 0 || !is_identifier(bytes[index - 1]));
        let rest = &expr[index..];
        if starts_identifier
            && (rest.starts_with("ml_")
                || rest.starts_with("ALERTS")
                || rest.starts_with("modelwatch_alerts"))
        {
            let end = (index..bytes.len())
                .find(|&position| !is_identifier(bytes[position]))
                .unwrap_or(bytes.len());
            let metric = expr[index..end].to_owned();
            let matchers = if bytes.get(end) == Some(&b'{') {
                let close = expr[end..]
                    .find('}')
                    .map(|offset| end + offset)
                    .unwrap_or_else(|| panic!("unclosed selector in {expr}"));
                expr[end + 1..close].to_owned()
            } else {
                String::new()
            };
            selectors.push((metric, matchers));
            index = end;
            continue;
        }
        index += 1;
    }
    selectors
}

/// The structure Grafana needs, and what the dashboard promises: a data-source
/// variable every query uses, a model variable every model selector honours.
fn assert_well_formed(dashboard: &Value) {
    let schema_version = dashboard["schemaVersion"]
        .as_u64()
        .expect("schemaVersion is a number");
    assert!(schema_version >= 39, "schemaVersion {schema_version} < 39");

    let datasource = variable(dashboard, "datasource");
    assert_eq!(datasource["type"], "datasource", "{datasource}");
    assert_eq!(datasource["query"], "prometheus", "{datasource}");
    let model = variable(dashboard, "model_name");
    assert_eq!(model["type"], "query", "{model}");
    let model_query = model["query"]
        .as_str()
        .or_else(|| model["query"]["query"].as_str())
        .unwrap_or_default();
    assert_eq!(
        model_query, "label_values(ml_prediction_requests_total, model_name)",
        "{model}"
    );
    assert_eq!(model["multi"], true, "{model}");
    assert_eq!(model["includeAll"], true, "{model}");
    assert_eq!(model["datasource"]["uid"], DATASOURCE_UID, "{model}");

    let mut ids = BTreeSet::new();
    for panel in all_panels(dashboard) {
        let id = panel["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("panel without a numeric id: {panel}"));
        assert!(ids.insert(id), "panel id {id} is used twice");
        let grid = &panel["gridPos"];
        let coordinates: Vec<u64> = ["h", "w", "x", "y"]
            .iter()
            .map(|key| {
                grid[*key]
                    .as_u64()
                    .unwrap_or_else(|| panic!("gridPos.{key} missing in {}", title(panel)))
            })
            .collect();
        let (height, width, x) = (coordinates[0], coordinates[1], coordinates[2]);
        assert!(height > 0 && width > 0, "empty gridPos in {}", title(panel));
        assert!(x + width <= 24, "{} overflows the 24-column grid", title(panel));
    }

    let panels = query_panels(dashboard);
    assert!(panels.len() >= 15, "only {} panels", panels.len());
    let mut metrics_shown = BTreeSet::new();
    for panel in &panels {
        let name = title(panel);
        assert_eq!(panel["datasource"]["uid"], DATASOURCE_UID, "{name}");
        let targets = panel["targets"]
            .as_array()
            .unwrap_or_else(|| panic!("{name} has no targets"));
        assert!(!targets.is_empty(), "{name} has no targets");
        for target in targets {
            assert_eq!(target["datasource"]["uid"], DATASOURCE_UID, "{name}: {target}");
            let expr = target["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("{name}: a target without expr: {target}"));
            let selectors = model_selectors(expr);
            for (metric, matchers) in &selectors {
                assert!(
                    matchers.contains(MODEL_FILTER),
                    "{name}: {metric} is not filtered by {MODEL_FILTER} in\n{expr}"
                );
                metrics_shown.insert(metric.clone());
            }
            assert!(
                !selectors.is_empty(),
                "{name}: a query that reads no model's series: {expr}"
            );
        }
    }
    for metric in REQUIRED_METRICS {
        assert!(
            metrics_shown.contains(metric),
            "no panel shows {metric}; shown: {metrics_shown:?}"
        );
    }
}

#[test]
fn the_dashboards_of_the_default_and_the_seeds_config_are_well_formed() {
    // Without SLOs there is no SLO row (its gauges would never exist).
    let default = generate(None);
    let titles: Vec<&str> = query_panels(&default).into_iter().map(title).collect();
    assert!(!titles.contains(&"Burn rate"), "{titles:?}");

    let seeds = generate(Some(&repo_root().join("rules/config.yaml")));
    assert_well_formed(&seeds);
    // The seed's alert thresholds are drawn where they apply.
    let latency = query_panels(&seeds)
        .into_iter()
        .find(|panel| title(panel).starts_with("Latency"))
        .expect("a latency panel");
    assert_eq!(
        latency["fieldConfig"]["defaults"]["thresholds"]["steps"],
        json!([{"color": "green", "value": null}, {"color": "orange", "value": 0.5}])
    );
}

#[test]
fn out_writes_what_stdout_prints() {
    let config = repo_root().join("rules/config.yaml");
    let directory = tempfile::tempdir().expect("temp dir");
    let out = directory.path().join("dashboard.json");
    let printed = run_dashboard(&[
        "--config".as_ref(),
        config.as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
    ]);
    assert!(printed.is_empty(), "--out also printed: {printed}");
    let written = std::fs::read_to_string(&out).expect("--out wrote the file");
    assert_eq!(written, run_dashboard(&["--config".as_ref(), config.as_os_str()]));
}

/// The committed dashboard, which the provisioning example loads, is what
/// `modelwatch dashboard` generates now.
#[test]
fn the_committed_dashboard_is_up_to_date() {
    let root = repo_root();
    let config = root.join("rules/config.yaml");
    let generated = run_dashboard(&["--config".as_ref(), config.as_os_str()]);
    let committed =
        std::fs::read_to_string(root.join("deploy/grafana/dashboards/modelwatch.json")).unwrap_or_default();
    assert!(
        generated == committed,
        "deploy/grafana/dashboards/modelwatch.json is stale; regenerate it with\n  \
         cargo run -p modelwatch -- dashboard --config rules/config.yaml --out deploy/grafana/dashboards/modelwatch.json"
    );
}

// ---------------------------------------------------------------------------
// Every panel query against Prometheus scraping modelwatch
// ---------------------------------------------------------------------------

/// Two models with SLOs; rules evaluated every second, so that the accuracy
/// rule (which has no `for`) fires during the test.
const CONFIG: &str = "\
alerts:
  evaluation_interval: 1s
slos:
  fraud_detector:
    availability: {target: 99.9, window: 30d}
    latency: {p99_target_ms: 100, p50_target_ms: 20}
    accuracy: {target: 0.95, window: 7d}
  churn_model:
    availability: {target: 99, window: 7d}
";

struct Model {
    name: &'static str,
    classes: &'static [&'static str],
    /// Every `wrong_every`-th labeled prediction is labeled with another class.
    wrong_every: u64,
}

const MODELS: [Model; 2] = [
    Model {
        name: "fraud_detector",
        classes: &["0", "1"],
        wrong_every: 10,
    },
    // 60% accurate: below the accuracy rule's 0.85, with more than its 100 labels.
    Model {
        name: "churn_model",
        classes: &["stay", "leave", "maybe"],
        wrong_every: 2,
    },
];
const BATCHES: u64 = 8;
const EVENTS_PER_BATCH: u64 = 50;
/// 8 batches 500 ms apart span 3.5 s: several 1 s scrapes see the counters grow.
const BATCH_PERIOD: Duration = Duration::from_millis(500);

/// One batch of a model's predictions (errors, timeouts, classes, confidences,
/// latencies, numeric and categorical features) and the labels of its
/// successful ones.
fn batch(model: &Model, batch: u64) -> (Vec<Value>, Vec<Value>) {
    let mut predictions = Vec::new();
    let mut labels = Vec::new();
    for index in 0..EVENTS_PER_BATCH {
        let prediction_id = format!("{}-{batch}-{index}", model.name);
        let version = if index % 5 == 0 { "v2" } else { "v1" };
        let latency_seconds = [0.004, 0.02, 0.04, 0.09, 0.2, 0.7][(index % 6) as usize];
        match index % 25 {
            0 => {
                predictions.push(json!({
                    "prediction_id": prediction_id, "model": model.name, "version": version,
                    "latency_seconds": latency_seconds, "status": "error", "error_type": "ValueError",
                }));
                continue;
            }
            1 => {
                predictions.push(json!({
                    "prediction_id": prediction_id, "model": model.name, "version": version,
                    "latency_seconds": 1.5, "status": "timeout",
                }));
                continue;
            }
            _ => {}
        }
        let class_index = (index % model.classes.len() as u64) as usize;
        let predicted = model.classes[class_index];
        let confidence = [0.55, 0.65, 0.75, 0.85, 0.92, 0.97][(index % 6) as usize];
        let country = ["DE", "FR", "US"][(index % 3) as usize];
        predictions.push(json!({
            "prediction_id": prediction_id, "model": model.name, "version": version,
            "latency_seconds": latency_seconds, "prediction": predicted, "confidence": confidence,
            "features": {
                "amount": 10.0 + (index * 7 % 90) as f64,
                "tenure_months": (index % 36) as f64,
                "country": country,
            },
        }));
        let actual = if index % model.wrong_every == 0 {
            model.classes[(class_index + 1) % model.classes.len()]
        } else {
            predicted
        };
        labels.push(json!({"prediction_id": prediction_id, "actual": actual}));
    }
    (predictions, labels)
}

fn post_all(server: &Server, path: &str, rows: &[Value]) {
    let lines: Vec<String> = rows.iter().map(Value::to_string).collect();
    let (status, answer) = server.post_ndjson(path, &lines);
    assert_eq!(status, 200, "POST {path}: {answer}");
    assert_eq!(answer["accepted"], json!(rows.len()), "POST {path}: {answer}");
}

enum Outcome {
    /// Parsed and returned this many series.
    Series(usize),
    /// Prometheus refused or failed the query.
    Failed(String),
}

fn run_query(prometheus: &Prometheus, client: &reqwest::blocking::Client, promql: &str) -> Outcome {
    let url = prometheus.url(&format!("/api/v1/query?query={}", percent_encode(promql)));
    let answer = client
        .get(&url)
        .send()
        .and_then(|response| response.json::<Value>());
    let answer = match answer {
        Ok(answer) => answer,
        Err(error) => return Outcome::Failed(format!("GET {url}: {error}")),
    };
    if answer["status"] != "success" {
        return Outcome::Failed(answer.to_string());
    }
    match answer["data"]["resultType"].as_str() {
        Some("vector") | Some("matrix") => {
            Outcome::Series(answer["data"]["result"].as_array().map_or(0, Vec::len))
        }
        Some("scalar") => Outcome::Series(1),
        other => Outcome::Failed(format!("unexpected result type {other:?}: {answer}")),
    }
}

fn substitute(expr: &str) -> String {
    let mut promql = expr.to_owned();
    // Longest names first: `$__rate_interval` before `$__interval`.
    for (variable, value) in SUBSTITUTIONS {
        promql = promql.replace(variable, value);
    }
    assert!(
        !promql.contains('$'),
        "a Grafana variable the test does not substitute in\n{expr}"
    );
    promql
}

fn skipped_panels() -> BTreeSet<String> {
    std::env::var(SKIP_PANELS_VARIABLE)
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|title| !title.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Whether `vector` holds each `(model, class, value)` of the 1d window.
fn matches_performance(expected: &[(&str, Option<&str>, f64)], vector: &support::InstantVector) -> bool {
    expected.iter().all(|(model, class, value)| {
        vector.iter().any(|(labels, actual)| {
            labels.get("model_name").map(String::as_str) == Some(*model)
                && labels.get("window").map(String::as_str) == Some("1d")
                && labels.get("class").map(String::as_str) == *class
                && (actual - value).abs() <= 1e-12 * value.abs().max(1.0)
        })
    })
}

#[test]
fn every_panel_query_returns_data_from_prometheus_scraping_modelwatch() {
    let directory = tempfile::tempdir().expect("temp dir");
    let config_path = directory.path().join("modelwatch.yaml");
    std::fs::write(&config_path, CONFIG).expect("write the config");
    let dashboard = generate(Some(&config_path));
    assert_well_formed(&dashboard);
    let rules = {
        let output = Command::new(env!("CARGO_BIN_EXE_modelwatch"))
            .arg("rules")
            .arg("--config")
            .arg(&config_path)
            .output()
            .expect("run modelwatch rules");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("rules are UTF-8")
    };

    let data = tempfile::tempdir().expect("data directory");
    let server = Server::builder(data.path())
        .arg("--config")
        .arg(config_path.display().to_string())
        .start();
    // Prometheus also evaluates `modelwatch rules`, for the ALERTS panel.
    let prometheus = Prometheus::start_with_rules(&[server.address()], "1s", &rules);
    prometheus.wait_for_targets_up(1, SCRAPE_DEADLINE);

    // Yesterday's traffic: the previous window that drift (drift.window 1d,
    // no frozen baseline) compares today's with, so that the drift gauges
    // have series. Not counted in the requests awaited below.
    let yesterday_s = support::unix_now_ms() as f64 / 1000.0 - 30.0 * 3600.0;
    for model in &MODELS {
        let (predictions, _) = batch(model, BATCHES);
        let predictions: Vec<Value> = predictions
            .into_iter()
            .map(|mut prediction| {
                prediction["timestamp"] = json!(yesterday_s);
                prediction["prediction_id"] = json!(format!(
                    "yesterday-{}",
                    prediction["prediction_id"].as_str().unwrap()
                ));
                prediction
            })
            .collect();
        post_all(&server, "/v1/predictions", &predictions);
    }
    let yesterday_requests = (MODELS.len() as u64 * EVENTS_PER_BATCH) as f64;

    let started = Instant::now();
    for batch_index in 0..BATCHES {
        let post_at = started + BATCH_PERIOD * batch_index as u32;
        if let Some(until_post) = post_at.checked_duration_since(Instant::now()) {
            // Pacing the load over several scrapes (a schedule, not a wait for a condition).
            std::thread::sleep(until_post);
        }
        for model in &MODELS {
            let (predictions, labels) = batch(model, batch_index);
            post_all(&server, "/v1/predictions", &predictions);
            post_all(&server, "/v1/labels", &labels);
        }
    }
    let total_requests = (MODELS.len() as u64 * BATCHES * EVENTS_PER_BATCH) as f64 + yesterday_requests;
    prometheus.wait_for("sum(ml_prediction_requests_total)", SCRAPE_DEADLINE, |vector| {
        vector.len() == 1 && vector[0].1 == total_requests
    });

    let skipped = skipped_panels();
    let panels = query_panels(&dashboard);
    let titles: BTreeSet<String> = panels.iter().map(|panel| title(panel).to_owned()).collect();
    for title in &skipped {
        assert!(
            titles.contains(title),
            "{SKIP_PANELS_VARIABLE} names {title:?}, which is no panel; panels: {titles:?}"
        );
    }
    // (panel, target ref, PromQL) → the last outcome.
    let mut queries: BTreeMap<(String, String), (String, Option<Outcome>)> = BTreeMap::new();
    for panel in &panels {
        for target in panel["targets"].as_array().expect("targets") {
            let key = (
                title(panel).to_owned(),
                target["refId"].as_str().unwrap_or("?").to_owned(),
            );
            let promql = substitute(target["expr"].as_str().expect("expr"));
            assert!(
                queries.insert(key.clone(), (promql, None)).is_none(),
                "two targets {key:?}"
            );
        }
    }
    let client = support::http_client();
    let needs_data = |panel: &str| !skipped.contains(panel);
    let settled = |outcome: &Option<Outcome>, panel: &str| match outcome {
        Some(Outcome::Failed(_)) => true,
        Some(Outcome::Series(count)) => *count > 0 || !needs_data(panel),
        None => false,
    };
    // Quality gauges, rule evaluations and the ALERTS series appear a scrape
    // or an evaluation after the traffic: poll what has no data yet.
    wait_until(PANELS_DEADLINE, || {
        for ((panel, _), (promql, outcome)) in queries.iter_mut() {
            if !settled(outcome, panel) {
                *outcome = Some(run_query(&prometheus, &client, promql));
            }
        }
        queries
            .iter()
            .all(|((panel, _), (_, outcome))| settled(outcome, panel))
    });

    let mut failures = Vec::new();
    for ((panel, ref_id), (promql, outcome)) in &queries {
        match outcome {
            Some(Outcome::Failed(error)) => {
                failures.push(format!("{panel} [{ref_id}] failed: {error}\n  {promql}"))
            }
            Some(Outcome::Series(0)) if needs_data(panel) => failures.push(format!(
                "{panel} [{ref_id}] returned no series within {PANELS_DEADLINE:?}\n  {promql}"
            )),
            Some(Outcome::Series(0)) => {
                eprintln!(
                    "SKIPPED ({SKIP_PANELS_VARIABLE}): {panel} [{ref_id}] parses but returned no series"
                )
            }
            Some(Outcome::Series(_)) => {}
            None => failures.push(format!("{panel} [{ref_id}] was never run")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} panel queries failed:\n{}\nexposition:\n{}",
        failures.len(),
        queries.len(),
        failures.join("\n"),
        server.get("/metrics").2
    );
    if !skipped.is_empty() {
        eprintln!("{SKIP_PANELS_VARIABLE} relaxed the data check for: {skipped:?}");
    }

    // On one instance the sample-weighted quality queries give the
    // instance's own figures, which are /performance's (once a scrape has
    // seen the last labels: the gauges are recomputed at most every 5 s).
    let query_of = |panel: &str| {
        queries
            .get(&(panel.to_owned(), "A".to_owned()))
            .map(|(promql, _)| promql.clone())
            .unwrap_or_else(|| panic!("no panel {panel}"))
    };
    let mut expected_accuracy = Vec::new();
    let mut expected_precision = Vec::new();
    for model in &MODELS {
        let (status, _, body) = server.get(&format!("/v1/models/{}/performance?window=1d", model.name));
        assert_eq!(status, 200, "{body}");
        let performance: Value = serde_json::from_str(&body).expect("performance is JSON");
        expected_accuracy.push((
            model.name,
            None,
            performance["accuracy"].as_f64().expect("an accuracy"),
        ));
        for class in model.classes {
            let precision = performance["per_class"][class]["precision"].as_f64();
            expected_precision.push((model.name, Some(*class), precision.expect("a precision")));
        }
    }
    prometheus.wait_for(&query_of("Accuracy"), SCRAPE_DEADLINE, |vector| {
        matches_performance(&expected_accuracy, vector)
    });
    prometheus.wait_for(&query_of("Precision by class"), SCRAPE_DEADLINE, |vector| {
        matches_performance(&expected_precision, vector)
    });
    // The accuracy rule fires in Prometheus for the 60%-accurate model only.
    let is_accuracy_alert =
        |labels: &support::Labels| labels.get("alertname").map(String::as_str) == Some("MLModelAccuracyDrop");
    let firing = prometheus.wait_for(
        &query_of("Firing alerts (Prometheus rules)"),
        SCRAPE_DEADLINE,
        |vector| vector.iter().any(|(labels, _)| is_accuracy_alert(labels)),
    );
    let accuracy_alerts: Vec<&str> = firing
        .iter()
        .filter(|(labels, _)| is_accuracy_alert(labels))
        .filter_map(|(labels, _)| labels.get("model_name").map(String::as_str))
        .collect();
    assert_eq!(accuracy_alerts, ["churn_model"], "{firing:?}");
}
