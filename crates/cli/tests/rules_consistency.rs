//! One rule, two evaluators (SPEC §4): the same synthetic events drive the
//! native evaluator and `promtool test rules` over the generated PromQL, and
//! the alerts firing must be the same at every evaluation step.
//!
//! Each scenario builds per-minute prediction and label events for a few
//! models, applies them to a real [`Aggregates`] in event-time order, and at
//! every minute boundary `T` (after the events with event time `< T`):
//! - records what a scrape of `/metrics` at `T` would read (the lifetime
//!   counters, as `crates/server/src/metrics.rs` exposes them), and
//! - at evaluation steps, evaluates every rule natively with the clock at `T`
//!   and steps the tracker.
//!
//! It then writes a promtool test whose input series are those scrapes
//! (interval 1m, every series present from t=0) and whose `alert_rule_test`
//! expects, at every step and for every alert name, exactly the alerts the
//! native tracker has firing (labels and rendered annotations).
//!
//! Some labels are corrected, which the `/metrics` counters show as a
//! retraction of the old pair beside the new one.
//!
//! Labels arrive in the minute of their prediction, where counting them by
//! arrival (Prometheus) and by prediction time (modelwatch) agree. Scenario
//! values keep clear of thresholds, where the two sides' floating-point
//! arithmetic (rates per second against counts) could round differently.
//!
//! Needs Prometheus 2.x's promtool (`apt-get install -y prometheus`).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::process::Command;

use modelwatch_core::alerting::{self, AlertState, Rule, Tracker};
use modelwatch_core::event::{Actual, LabelEvent, Prediction, PredictionEvent, ScoredPrediction, Status};
use modelwatch_core::quality::Sign;
use modelwatch_core::series::{Aggregates, AggregationConfig, Changes};
use modelwatch_core::slo::{BURN_PAGE_ALERT, BURN_TICKET_ALERT, Slo};
use modelwatch_core::stats::{BucketCounts, CONFIDENCE_BUCKETS, LATENCY_BUCKETS, SLO_LATENCY_BUCKETS};
use modelwatch_server::Config;
use support::{PROMETHEUS_INSTALL, require_program};

const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 60 * MINUTE_MS;
const DAY_MS: i64 = 24 * HOUR_MS;
const VERSION: &str = "v1";

/// What one model does in one minute.
#[derive(Debug, Clone, Copy)]
struct Minute {
    requests: usize,
    /// Failed requests (every third one a timeout); they predict nothing.
    errors: usize,
    /// Requests at `slow_latency` instead of the usual spread.
    slow: usize,
    slow_latency: f64,
    /// Every prediction is class `a` (otherwise a, b, c as 7:7:6).
    one_class: bool,
    /// Predictions with confidence 0.55 (otherwise 0.92).
    low_confidence: usize,
    /// Labeled predictions whose label says another class.
    wrong: usize,
    /// Labeled predictions first labeled with yet another class, then
    /// corrected (the old label retracted, the new one added).
    corrected: usize,
}

impl Minute {
    fn baseline() -> Self {
        Minute {
            requests: 20,
            errors: 0,
            slow: 0,
            slow_latency: 0.0,
            one_class: false,
            low_confidence: 0,
            wrong: 0,
            corrected: 0,
        }
    }
}

/// The prediction events of one model's minute, each with its labels (if it
/// predicted a class) in the order the label join applies them, all within
/// the minute.
fn events_of_minute(
    model: &str,
    minute: i64,
    profile: &Minute,
) -> Vec<(PredictionEvent, Vec<(LabelEvent, Sign)>)> {
    let spacing_ms = MINUTE_MS / (profile.requests as i64 + 1);
    (0..profile.requests)
        .map(|index| {
            let timestamp_ms = minute * MINUTE_MS + index as i64 * spacing_ms;
            let failed = index < profile.errors;
            let status = match (failed, index % 3) {
                (false, _) => Status::Ok,
                (true, 2) => Status::Timeout,
                (true, _) => Status::Error {
                    error_type: "ValueError".to_owned(),
                },
            };
            let latency = if index >= profile.requests - profile.slow {
                profile.slow_latency
            } else {
                match index % 20 {
                    0..12 => 0.015,
                    12..18 => 0.04,
                    _ => 0.07,
                }
            };
            let class = match (profile.one_class, index % 20) {
                (true, _) | (false, 0..7) => "a",
                (false, 7..14) => "b",
                _ => "c",
            };
            let prediction_id = format!("{model}-{minute}-{index}");
            let event = PredictionEvent {
                prediction_id: prediction_id.clone(),
                model: model.to_owned(),
                version: VERSION.to_owned(),
                timestamp_ms,
                latency_seconds: Some(latency),
                status,
                prediction: (!failed).then(|| Prediction::Class(class.to_owned())),
                confidence: (!failed).then_some(if index < profile.low_confidence {
                    0.55
                } else {
                    0.92
                }),
                probabilities: Vec::new(),
                features: Vec::new(),
                segments: Vec::new(),
            };
            let label = |actual: &str, delay_ms: i64| LabelEvent {
                prediction_id: prediction_id.clone(),
                actual: Actual::Class(actual.to_owned()),
                timestamp_ms: timestamp_ms + delay_ms,
                business: Vec::new(),
            };
            let mut labels = Vec::new();
            if !failed {
                let wrong = index >= profile.requests - profile.wrong;
                let actual = match (wrong, class) {
                    (false, class) => class,
                    (true, "a") => "b",
                    (true, _) => "a",
                };
                if index < profile.errors + profile.corrected {
                    let mistaken = if class == "c" { "b" } else { "c" };
                    labels.push((label(mistaken, 1), Sign::Add));
                    labels.push((label(mistaken, 2), Sign::Retract));
                }
                labels.push((label(actual, 2), Sign::Add));
            }
            (event, labels)
        })
        .collect()
}

/// What a model does in each minute of a scenario.
type Profile = fn(i64) -> Minute;

/// A scenario: a config, the models' minutes, how long, and how often rules
/// are evaluated.
struct Scenario {
    name: &'static str,
    config: &'static str,
    models: Vec<(&'static str, Profile)>,
    minutes: i64,
    evaluation_interval_ms: i64,
    /// Alert names that must fire at some step and not fire at another.
    exercised: Vec<&'static str>,
}

/// One firing alert, as promtool compares it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Firing {
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
}

/// What a scrape of `/metrics` reads from the aggregates, for the families
/// the rules use: (series selector, value).
fn scrape(aggregates: &Aggregates) -> Vec<(String, u64)> {
    fn series(metric: &str, labels: &[(&str, &str)]) -> String {
        let labels: Vec<String> = labels
            .iter()
            .map(|(name, value)| format!("{name}={value:?}"))
            .collect();
        format!("{metric}{{{}}}", labels.join(", "))
    }
    fn le(bound: f64) -> String {
        if bound.is_infinite() {
            "+Inf".to_owned()
        } else {
            format!("{bound:?}")
        }
    }
    fn histogram(
        out: &mut Vec<(String, u64)>,
        metric: &str,
        labels: &[(&str, &str)],
        bounds: &[f64],
        counts: &BucketCounts,
    ) {
        for (bound, count) in counts.cumulative(bounds) {
            let le = le(bound);
            let mut with_le = labels.to_vec();
            with_le.push(("le", &le));
            out.push((series(&format!("{metric}_bucket"), &with_le), count));
        }
        out.push((series(&format!("{metric}_count"), labels), counts.count()));
    }
    let mut out = Vec::new();
    for (model_name, model) in &aggregates.models {
        let model_label = ("model_name", model_name.as_str());
        for (version, versioned) in &model.versions {
            let labels = [model_label, ("model_version", version.as_str())];
            out.push((
                series("ml_prediction_requests_total", &labels),
                versioned.totals.requests,
            ));
            histogram(
                &mut out,
                "ml_slo_latency_seconds",
                &labels,
                &SLO_LATENCY_BUCKETS,
                &versioned.totals.slo_latency,
            );
            for (predicted, row) in &versioned.labels.applied {
                for (actual, applied) in row {
                    let retracted = versioned
                        .labels
                        .retracted
                        .get(predicted)
                        .and_then(|row| row.get(actual))
                        .copied()
                        .unwrap_or(0);
                    let labels = [
                        model_label,
                        ("model_version", version.as_str()),
                        ("predicted_class", predicted.as_str()),
                        ("actual_class", actual.as_str()),
                    ];
                    out.push((series("ml_prediction_labeled_total", &labels), *applied));
                    out.push((series("ml_prediction_label_retracted_total", &labels), retracted));
                }
            }
        }
        let totals = model.totals();
        histogram(
            &mut out,
            "ml_prediction_latency_seconds",
            &[model_label],
            &LATENCY_BUCKETS,
            &totals.latency,
        );
        for (error_type, count) in &totals.errors_by_type {
            let labels = [model_label, ("error_type", error_type.as_str())];
            out.push((series("ml_prediction_errors_total", &labels), *count));
        }
        for (class, counts) in &totals.classes {
            let labels = [model_label, ("predicted_class", class.as_str())];
            out.push((series("ml_prediction_class_total", &labels), counts.count));
            histogram(
                &mut out,
                "ml_prediction_confidence",
                &labels,
                &CONFIDENCE_BUCKETS,
                &counts.confidence,
            );
        }
    }
    out
}

/// The values of one series in promtool's expanding notation: runs of equal
/// increments as `start+incrementxN`.
fn expanding_notation(values: &[u64]) -> String {
    let mut parts = Vec::new();
    let mut start = 0;
    while start < values.len() {
        let mut end = start;
        if start + 1 < values.len() {
            let increment = values[start + 1] as i128 - values[start] as i128;
            end = start + 1;
            while end + 1 < values.len() && values[end + 1] as i128 - values[end] as i128 == increment {
                end += 1;
            }
            if increment < 0 {
                parts.push(format!("{}-{}x{}", values[start], -increment, end - start));
            } else {
                parts.push(format!("{}+{}x{}", values[start], increment, end - start));
            }
        } else {
            parts.push(values[start].to_string());
        }
        start = end + 1;
    }
    parts.join(" ")
}

fn yaml_string(text: &str) -> String {
    serde_json::to_string(text).expect("a string serializes")
}

fn yaml_map(map: &BTreeMap<String, String>) -> String {
    let entries: Vec<String> = map
        .iter()
        .map(|(key, value)| format!("{}: {}", yaml_string(key), yaml_string(value)))
        .collect();
    format!("{{{}}}", entries.join(", "))
}

struct Outcome {
    /// Labels retracted by corrections, over the whole scenario.
    retracted: u64,
    /// Per evaluation step (ms), per alert name, the firing alerts.
    firing: BTreeMap<i64, BTreeMap<String, BTreeSet<Firing>>>,
    test_file: String,
    rule_file: String,
}

fn run(scenario: &Scenario) -> Outcome {
    let config = Config::parse(scenario.config).expect("the scenario's config is valid");
    let slos: Vec<Slo> = config.slos().expect("SLOs");
    let rules: Vec<Rule> = config.rules().expect("rules");
    let rule_file = modelwatch_server::promql::rule_file(&rules, &slos);
    let alert_names: BTreeSet<String> = rules.iter().map(|rule| rule.name.clone()).collect();

    // Everything stays in minute buckets, so that windows are exact.
    let mut aggregates = Aggregates::new(AggregationConfig {
        minute_retention_ms: 30 * DAY_MS,
        hour_retention_ms: 60 * DAY_MS,
        ..Default::default()
    });
    let mut tracker = Tracker::default();
    let mut changes = Changes::default();
    // Per series, its value at every minute boundary so far.
    let mut samples: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut firing = BTreeMap::new();
    for minute in 0..=scenario.minutes {
        let now_ms = minute * MINUTE_MS;
        let scraped = scrape(&aggregates);
        for (series, value) in scraped {
            // A series first exposed now was 0 before: present from t=0.
            let values = samples.entry(series).or_insert_with(|| vec![0; minute as usize]);
            values.push(value);
        }
        for values in samples.values_mut() {
            debug_assert_eq!(
                values.len(),
                minute as usize + 1,
                "every series is scraped every minute"
            );
        }
        if now_ms % scenario.evaluation_interval_ms == 0 {
            let models: Vec<String> = aggregates.models.keys().cloned().collect();
            for rule in &rules {
                for model in &models {
                    if !rule.applies_to(model) {
                        continue;
                    }
                    let outcome = alerting::evaluate(&aggregates, &slos, rule, model, now_ms);
                    tracker.step(rule, model, outcome, now_ms);
                }
            }
            let mut at_step: BTreeMap<String, BTreeSet<Firing>> = alert_names
                .iter()
                .map(|name| (name.clone(), BTreeSet::new()))
                .collect();
            for alert in tracker.alerts.values() {
                if alert.state == AlertState::Firing {
                    at_step.entry(alert.name.clone()).or_default().insert(Firing {
                        labels: alert.labels.clone(),
                        annotations: alert.annotations.clone(),
                    });
                }
            }
            firing.insert(now_ms, at_step);
        }
        if minute == scenario.minutes {
            break;
        }
        for (model, profile) in &scenario.models {
            for (event, labels) in events_of_minute(model, minute, &profile(minute)) {
                aggregates.apply(&event, &mut changes);
                for (label, sign) in labels {
                    aggregates.apply_label(&ScoredPrediction::from(&event), &label, sign, &mut changes);
                }
            }
        }
        changes = Changes::default();
    }

    let mut test_file = String::new();
    let _ = writeln!(
        test_file,
        "# Generated by crates/cli/tests/rules_consistency.rs (scenario {}): the alerts\n\
         # modelwatch's native evaluator fires, step by step, over the same series.\n\
         rule_files:\n  - rules.yml\nevaluation_interval: {}m\ntests:\n  - interval: 1m\n    input_series:",
        scenario.name,
        scenario.evaluation_interval_ms / MINUTE_MS
    );
    for (series, values) in &samples {
        let _ = writeln!(
            test_file,
            "      - series: {}\n        values: {}",
            yaml_string(series),
            yaml_string(&expanding_notation(values))
        );
    }
    test_file.push_str("    alert_rule_test:\n");
    for (at_ms, by_name) in &firing {
        for (name, alerts) in by_name {
            let _ = write!(
                test_file,
                "      - eval_time: {}m\n        alertname: {}\n        exp_alerts:",
                at_ms / MINUTE_MS,
                yaml_string(name)
            );
            if alerts.is_empty() {
                test_file.push_str(" []\n");
                continue;
            }
            test_file.push('\n');
            for alert in alerts {
                let mut labels = alert.labels.clone();
                // promtool adds `alertname` itself.
                labels.remove("alertname");
                let _ = writeln!(
                    test_file,
                    "          - exp_labels: {}\n            exp_annotations: {}",
                    yaml_map(&labels),
                    yaml_map(&alert.annotations)
                );
            }
        }
    }
    let retracted = samples
        .iter()
        .filter(|(series, _)| series.starts_with("ml_prediction_label_retracted_total"))
        .filter_map(|(_, values)| values.last())
        .sum();
    Outcome {
        retracted,
        firing,
        test_file,
        rule_file,
    }
}

fn check(scenario: &Scenario) {
    let outcome = run(scenario);
    // Not vacuous: each exercised alert fires at some step and not at another.
    for name in &scenario.exercised {
        let steps_firing: Vec<i64> = outcome
            .firing
            .iter()
            .filter(|(_, by_name)| by_name.get(*name).is_some_and(|alerts| !alerts.is_empty()))
            .map(|(at_ms, _)| *at_ms / MINUTE_MS)
            .collect();
        assert!(
            !steps_firing.is_empty(),
            "{name} never fired natively in {}",
            scenario.name
        );
        assert!(
            steps_firing.len() < outcome.firing.len(),
            "{name} fired at every step in {}",
            scenario.name
        );
    }
    assert!(
        outcome.retracted > 0,
        "no label was corrected in {}",
        scenario.name
    );
    let directory = tempfile::tempdir().expect("temp dir");
    std::fs::write(directory.path().join("rules.yml"), &outcome.rule_file).expect("write rules");
    std::fs::write(directory.path().join("test.yml"), &outcome.test_file).expect("write test");
    let promtool = require_program("promtool", PROMETHEUS_INSTALL);
    let output = Command::new(promtool)
        .args(["test", "rules", "test.yml"])
        .current_dir(directory.path())
        .output()
        .expect("run promtool test rules");
    if !output.status.success() {
        let kept = std::env::temp_dir().join(format!("modelwatch-rules-consistency-{}", scenario.name));
        let _ = std::fs::create_dir_all(&kept);
        let _ = std::fs::write(kept.join("rules.yml"), &outcome.rule_file);
        let _ = std::fs::write(kept.join("test.yml"), &outcome.test_file);
        let report =
            String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
        let shown: String = report.chars().take(20_000).collect();
        panic!(
            "PromQL and the native evaluator disagree in scenario {} (files kept in {}):\n{shown}",
            scenario.name,
            kept.display()
        );
    }
}

/// The seed's five, the accuracy drop and custom rules (one model, several
/// models), over 10 hours of two models, evaluated every minute.
#[test]
fn alerts_fire_at_the_same_steps_natively_and_in_promql() {
    fn fraud(minute: i64) -> Minute {
        let mut profile = Minute {
            wrong: 1,
            corrected: 2,
            ..Minute::baseline()
        };
        match minute {
            // p99 above 0.5 s: 10% of requests at 0.8 s.
            30..50 => {
                profile.slow = 2;
                profile.slow_latency = 0.8;
            }
            // 15% errors.
            70..90 => profile.errors = 3,
            // Down.
            110..125 => profile.requests = 0,
            _ => {}
        }
        if (150..300).contains(&minute) {
            profile.one_class = true;
        }
        if (200..230).contains(&minute) {
            profile.wrong = 10;
        }
        if (330..480).contains(&minute) {
            profile.low_confidence = 19;
        }
        if minute >= 500 {
            profile.wrong = 20;
        }
        profile
    }
    fn churn(minute: i64) -> Minute {
        let mut profile = Minute::baseline();
        match minute {
            400..420 => {
                profile.slow = 20;
                profile.slow_latency = 0.07;
            }
            440..450 => profile.requests = 60,
            _ => {}
        }
        profile
    }
    check(&Scenario {
        name: "rules",
        config: "alerts:\n  rules:\n    SlowMedian:\n      measure: latency_quantile\n      quantile: 0.5\n      \
                 range: 10m\n      op: '>'\n      threshold: 0.04\n      models: [churn]\n      annotations:\n        \
                 summary: 'Model {{ $labels.model_name }} median latency is high'\n    BusyModel:\n      \
                 measure: request_rate\n      range: 5m\n      op: '>'\n      threshold: 0.5\n      for: 2m\n      \
                 models: [churn, fraud]\n    HourlyAccuracy:\n      measure: accuracy\n      range: 1h\n      \
                 op: '<'\n      threshold: 0.9\n      min_samples: 200\n      for: 10m\n",
        models: vec![("churn", churn), ("fraud", fraud)],
        minutes: 600,
        evaluation_interval_ms: MINUTE_MS,
        exercised: vec![
            "MLModelHighLatency",
            "MLModelHighErrorRate",
            "MLModelPredictionSkew",
            "MLModelLowConfidence",
            "MLModelDown",
            "MLModelAccuracyDrop",
            "SlowMedian",
            "BusyModel",
            "HourlyAccuracy",
        ],
    });
}

/// The seed's slo.yaml: availability, p99 and p50 latency and accuracy burn
/// rates over four days, evaluated hourly (series still every minute; hourly
/// steps keep promtool's 3-day and 30-day ranges tractable).
#[test]
fn burn_rate_alerts_fire_at_the_same_steps_natively_and_in_promql() {
    fn fraud_detector(minute: i64) -> Minute {
        let hour = minute / 60;
        let mut profile = Minute::baseline();
        // 0.05% errors: burn 0.5 against 99.9%.
        profile.errors = usize::from(minute % 100 == 0);
        profile.corrected = 1;
        // 3% wrong: burn 0.6 against 0.95.
        profile.wrong = if minute % 5 == 0 { 3 } else { 0 };
        // Availability incident, 5% errors (burn 50): pages, then tickets.
        if (30 * 60..32 * 60 + 30).contains(&minute) {
            profile.errors = 1;
        }
        // p99 incident: 3.5% of requests over 100 ms (burn 3.5), for 30 hours: tickets.
        if (50..80).contains(&hour) {
            profile.slow = usize::from(minute % 10 < 7);
            profile.slow_latency = 0.2;
        }
        // Accuracy incident: 80% wrong (burn 16): pages.
        if (60..66).contains(&hour) {
            profile.wrong = 16;
        }
        profile
    }
    check(&Scenario {
        name: "slo",
        config: "slos:\n  fraud_detector:\n    availability:\n      target: 99.9\n      window: 30d\n    \
                 latency:\n      p99_target_ms: 100\n      p50_target_ms: 20\n    accuracy:\n      \
                 target: 0.95\n      window: 7d\n",
        models: vec![("fraud_detector", fraud_detector)],
        minutes: 4 * 24 * 60,
        evaluation_interval_ms: HOUR_MS,
        exercised: vec![BURN_PAGE_ALERT, BURN_TICKET_ALERT],
    });
}

#[test]
fn expanding_notation_round_trips_runs() {
    assert_eq!(expanding_notation(&[0, 0, 0]), "0+0x2");
    assert_eq!(expanding_notation(&[0, 20, 40, 45, 50]), "0+20x2 45+5x1");
    assert_eq!(expanding_notation(&[7]), "7");
    assert_eq!(expanding_notation(&[1, 2, 2]), "1+1x1 2");
}
