//! `modelwatch rules` against the real `promtool`: the generated rules pass
//! `promtool check rules` (defaults, the seed's slo.yaml, overrides and
//! custom rules of every measure), the committed `rules/modelwatch.rules.yml`
//! is what the command generates from `rules/config.yaml` today, and the
//! committed unit tests `rules/tests.yml` pass `promtool test rules`.
//!
//! Needs Prometheus 2.x's promtool (`apt-get install -y prometheus`).

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::{PROMETHEUS_INSTALL, require_program};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs `modelwatch rules`, with `--config` when given; returns stdout.
fn generate(config: Option<&Path>) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_modelwatch"));
    command.arg("rules").env_remove("MODELWATCH_CONFIG");
    if let Some(config) = config {
        command.arg("--config").arg(config);
    }
    let output = command.output().expect("run modelwatch rules");
    assert!(
        output.status.success(),
        "modelwatch rules failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("rules are UTF-8")
}

/// Runs promtool with `arguments` in `directory`; panics with its output unless it succeeds.
fn promtool(arguments: &[&str], directory: &Path) -> String {
    let promtool = require_program("promtool", PROMETHEUS_INSTALL);
    let output = Command::new(promtool)
        .args(arguments)
        .current_dir(directory)
        .output()
        .expect("run promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "promtool {arguments:?} failed:\n{text}");
    text
}

fn check_rules(rules: &str) -> String {
    let directory = tempfile::tempdir().expect("temp dir");
    std::fs::write(directory.path().join("rules.yml"), rules).expect("write rules");
    promtool(&["check", "rules", "rules.yml"], directory.path())
}

#[test]
fn default_rules_pass_promtool() {
    let rules = generate(None);
    let report = check_rules(&rules);
    assert!(report.contains("SUCCESS: 7 rules found"), "{report}");
    for name in [
        "MLModelHighLatency",
        "MLModelHighErrorRate",
        "MLModelPredictionSkew",
        "MLModelLowConfidence",
        "MLModelDown",
        "MLModelAccuracyDrop",
        "MLModelDataDrift",
    ] {
        assert!(
            rules.contains(&format!("- alert: {name}\n")),
            "{name} missing:\n{rules}"
        );
    }
    // The seed's thresholds, ranges and quantiles, per model.
    assert!(rules.contains(
        "histogram_quantile(0.99, sum by (le, model_name) (rate(ml_prediction_latency_seconds_bucket[5m])))"
    ));
    assert!(rules.contains(") > 0.5\n"), "{rules}");
    assert!(rules.contains(
        "histogram_quantile(0.25, sum by (le, model_name) (rate(ml_prediction_confidence_bucket[1h])))"
    ));
    assert!(rules.contains(
        "max by (model_name) (sum by (model_name, predicted_class) (rate(ml_prediction_class_total[1h])))"
    ));
    assert!(rules.contains("increase(ml_prediction_labeled_total[7d])"));
}

#[test]
fn the_seeds_slo_yaml_gives_recording_rules_and_burn_alerts_that_pass_promtool() {
    let rules = generate(Some(&repo_root().join("rules/config.yaml")));
    let report = check_rules(&rules);
    // 6 alerts, 4 SLOs × (8 error ratios + 5), 4 SLOs × 2 burn alerts.
    assert!(report.contains("SUCCESS: 67 rules found"), "{report}");
    for record in [
        "slo:sli_error:ratio_rate5m",
        "slo:sli_error:ratio_rate30m",
        "slo:sli_error:ratio_rate1h",
        "slo:sli_error:ratio_rate2h",
        "slo:sli_error:ratio_rate6h",
        "slo:sli_error:ratio_rate1d",
        "slo:sli_error:ratio_rate3d",
        "slo:sli_error:ratio_rate30d",
        "slo:sli_error:ratio_rate7d",
        "slo:objective:ratio",
        "slo:error_budget:ratio",
        "slo:current_burn_rate:ratio",
        "slo:period_burn_rate:ratio",
        "slo:period_error_budget_remaining:ratio",
    ] {
        assert!(
            rules.contains(&format!("- record: {record}\n")),
            "{record} missing"
        );
    }
    assert!(rules.contains("ml_slo_latency_seconds_bucket{model_name=\"fraud_detector\", le=\"0.1\"}[5m]"));
    assert!(rules.contains("ml_slo_latency_seconds_bucket{model_name=\"fraud_detector\", le=\"0.02\"}[5m]"));
    assert!(rules.contains("- alert: MLModelErrorBudgetBurn\n"));
    assert!(rules.contains("- alert: MLModelErrorBudgetBurnTicket\n"));
}

#[test]
fn overrides_and_custom_rules_of_every_measure_pass_promtool() {
    let rules = generate(Some(&repo_root().join("rules/custom-rules.yaml")));
    check_rules(&rules);
    assert!(
        !rules.contains("MLModelPredictionSkew"),
        "a disabled rule was generated"
    );
    // A rule's models become a matcher; several models an escaped alternation.
    assert!(rules.contains("ml_prediction_latency_seconds_bucket{model_name=\"fraud_detector\"}[5m]"));
    assert!(
        rules.contains(r#"{model_name=~"churn|fraud\\.v2"}[10m]"#),
        "{rules}"
    );
    assert!(rules.contains("for: 10m"));
    // Drift rules read the drift gauge; a named feature becomes a matcher.
    assert!(
        rules.contains(
            r#"max by (model_name) (ml_feature_drifted{model_name="fraud_detector", feature_name="amount"})"#
        ),
        "{rules}"
    );
    assert!(
        rules.contains("sum by (model_name) (ml_feature_drifted)\n          ) >= 3"),
        "{rules}"
    );
    assert!(rules.contains(r#"team: "ml \"platform\"""#));
    // An SLO window that is not a burn-rate window gets its own error ratio.
    assert!(rules.contains("- record: slo:sli_error:ratio_rate28d\n"));
    assert!(rules.contains("- record: slo:sli_error:ratio_rate14d\n"));
}

#[test]
fn the_config_file_can_come_from_the_environment() {
    let config = repo_root().join("rules/config.yaml");
    let output = Command::new(env!("CARGO_BIN_EXE_modelwatch"))
        .arg("rules")
        .env("MODELWATCH_CONFIG", &config)
        .output()
        .expect("run modelwatch rules");
    assert!(output.status.success());
    assert_eq!(String::from_utf8(output.stdout).unwrap(), generate(Some(&config)));
}

/// The committed rule file is what `modelwatch rules` generates now, so the
/// unit tests below run against the rules modelwatch ships.
#[test]
fn the_committed_rule_file_is_up_to_date() {
    let root = repo_root();
    let generated = generate(Some(&root.join("rules/config.yaml")));
    let committed = std::fs::read_to_string(root.join("rules/modelwatch.rules.yml")).unwrap_or_default();
    assert!(
        generated == committed,
        "rules/modelwatch.rules.yml is stale; regenerate it with\n  \
         cargo run -p modelwatch -- rules --config rules/config.yaml > rules/modelwatch.rules.yml"
    );
}

#[test]
fn the_committed_rule_unit_tests_pass_promtool() {
    let report = promtool(&["test", "rules", "tests.yml"], &repo_root().join("rules"));
    assert!(report.contains("SUCCESS"), "{report}");
}

#[test]
fn a_config_error_is_reported_with_its_field_and_no_rules() {
    let directory = tempfile::tempdir().expect("temp dir");
    let config = directory.path().join("bad.yaml");
    std::fs::write(
        &config,
        "alerts:\n  rules:\n    Mine:\n      measure: error_ratio\n      op: '>'\n      threshold: 0.1\n",
    )
    .expect("write config");
    let output = Command::new(env!("CARGO_BIN_EXE_modelwatch"))
        .args(["rules", "--config"])
        .arg(&config)
        .output()
        .expect("run modelwatch rules");
    assert!(!output.status.success(), "an invalid config was accepted");
    assert!(
        output.stdout.is_empty(),
        "rules were printed for an invalid config"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("alerts.rules.Mine.range"), "{stderr}");
}
