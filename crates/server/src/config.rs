//! The configuration file (`--config FILE`, YAML). One type, unknown fields
//! refused, units in names, durations written like `5m` and `7d`.

use std::path::Path;

use modelwatch_core::limits::CardinalityLimits;
use modelwatch_core::series::AggregationConfig;
use modelwatch_core::time::{MINUTE_MS, parse_duration_ms};
use modelwatch_core::wire::ParseLimits;
use modelwatch_store::Synchronous;
use std::collections::BTreeMap;

use modelwatch_core::alerting::{Rule, RuleSpec, resolve_rules};
use modelwatch_core::slo::{Slo, SloSpec};
use serde::Deserialize;

/// A Prometheus-style duration (`5m`, `7d`) read from the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Duration {
    pub ms: i64,
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse_duration_ms(&text)
            .map(|ms| Duration { ms })
            .map_err(serde::de::Error::custom)
    }
}

impl std::fmt::Display for Duration {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&modelwatch_core::time::format_duration_ms(self.ms))
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub ingest: IngestConfig,
    pub storage: StorageConfig,
    pub aggregation: AggregationSettings,
    pub limits: CardinalityLimits,
    pub metrics: MetricsConfig,
    pub labels: LabelsConfig,
    pub alerts: AlertsConfig,
    /// The seed's `slo.yaml` block, verbatim: per model, `availability`,
    /// `latency` and `accuracy`.
    pub slos: BTreeMap<String, SloSpec>,
    /// Where alerts are sent.
    pub receivers: Vec<ReceiverConfig>,
    pub remediation: RemediationConfig,
    pub drift: DriftConfig,
}

/// Which distribution a window is compared against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BaselineSetting {
    /// The frozen baseline when one was set, else the previous window.
    #[default]
    Auto,
    /// Only the frozen baseline (`POST /v1/models/{m}/baseline`).
    Frozen,
    /// The window of the same length just before the query window.
    PreviousWindow,
}

/// A drift method chosen for one variable (defined in core, where the
/// comparison that reads it lives).
pub use modelwatch_core::drift::MethodOverride;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DriftConfig {
    /// How long hourly drift summaries are kept (event time).
    pub retention: Duration,
    /// The window of the drift gauges, of the drift alerts, and the API's
    /// default.
    pub window: Duration,
    pub baseline: BaselineSetting,
    /// Method per feature name, instead of the default selection.
    pub features: BTreeMap<String, MethodOverride>,
    /// Method per prediction output: `class`, `confidence`, `value`.
    pub predictions: BTreeMap<String, MethodOverride>,
}

impl Default for DriftConfig {
    fn default() -> Self {
        Self {
            retention: Duration {
                ms: AggregationConfig::default().drift_retention_ms,
            },
            window: Duration {
                ms: 24 * 60 * MINUTE_MS,
            },
            baseline: BaselineSetting::Auto,
            features: BTreeMap::new(),
            predictions: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// How often every rule is evaluated.
    pub evaluation_interval: Duration,
    /// Overrides of the built-in rules (by name, `enabled: false` to turn one
    /// off), and rules of your own.
    pub rules: BTreeMap<String, RuleSpec>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            evaluation_interval: Duration { ms: 15_000 },
            rules: BTreeMap::new(),
        }
    }
}

/// A notification receiver: an Alertmanager (API v2) or a generic webhook
/// (Alertmanager's webhook payload, version 4).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiverConfig {
    pub name: String,
    /// Base URL of an Alertmanager, such as `http://127.0.0.1:9093`.
    #[serde(default)]
    pub alertmanager: Option<String>,
    /// URL a webhook payload is POSTed to.
    #[serde(default)]
    pub webhook: Option<String>,
    /// While an alert fires, how often it is sent again to an Alertmanager
    /// (which deduplicates); webhooks get each transition once.
    #[serde(default = "default_resend_interval")]
    pub resend_interval: Duration,
}

fn default_resend_interval() -> Duration {
    Duration { ms: 60_000 }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RemediationConfig {
    /// URL prefixes an action may call; an action whose URL matches none is a
    /// config error.
    pub allowlist: Vec<String>,
    /// Named actions, referred to by the rules' `actions`.
    pub actions: BTreeMap<String, ActionConfig>,
}

/// A remediation webhook, such as a rollback or a retrain trigger.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionConfig {
    pub url: String,
    #[serde(default = "default_method")]
    pub method: String,
    /// The body template; `{{ model }}`, `{{ version }}`, `{{ alert }}`,
    /// `{{ value }}` and `{{ severity }}` expand (JSON-escaped).
    #[serde(default = "default_action_body")]
    pub body: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// After running for a model, the action does not run again for that
    /// model within this time.
    #[serde(default = "default_cooldown")]
    pub cooldown: Duration,
}

fn default_method() -> String {
    "POST".to_owned()
}

fn default_action_body() -> String {
    r#"{"model": "{{ model }}", "version": "{{ version }}", "alert": "{{ alert }}", "value": {{ value }}}"#
        .to_owned()
}

fn default_cooldown() -> Duration {
    Duration { ms: 30 * MINUTE_MS }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LabelsConfig {
    /// How long a label whose prediction has not arrived yet is held; past
    /// this it is an orphan.
    pub early_label_ttl: Duration,
    /// Most labels held at once; past this the oldest become orphans.
    pub max_held_labels: usize,
    /// How long stored predictions wait for their label: older ones (by event
    /// time, against their model's newest event) are deleted from the store.
    /// Their aggregates stay.
    pub horizon: Duration,
    /// How often the store is swept for predictions past the horizon.
    pub prune_interval: Duration,
}

impl Default for LabelsConfig {
    fn default() -> Self {
        Self {
            early_label_ttl: Duration {
                ms: 6 * 60 * MINUTE_MS,
            },
            max_held_labels: 200_000,
            horizon: Duration {
                ms: 30 * 24 * 60 * MINUTE_MS,
            },
            // A pass reads every stored prediction's header (about 1 s of CPU
            // per million): hourly is cheap and plenty for a horizon of days.
            prune_interval: Duration { ms: 60 * MINUTE_MS },
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Largest accepted request body; larger ones get 413.
    pub max_body_bytes: usize,
    /// Events parsed but not yet committed; past this, 429.
    pub max_queued_events: usize,
    /// Most events one group commit takes.
    pub max_events_per_commit: usize,
    pub max_string_bytes: usize,
    pub max_features_per_event: usize,
    pub max_future_skew: Duration,
}

impl Default for IngestConfig {
    fn default() -> Self {
        let parse = ParseLimits::default();
        Self {
            max_body_bytes: 32 * 1024 * 1024,
            max_queued_events: 250_000,
            max_events_per_commit: 100_000,
            max_string_bytes: parse.max_string_bytes,
            max_features_per_event: parse.max_features,
            max_future_skew: Duration {
                ms: parse.max_future_skew_ms,
            },
        }
    }
}

impl IngestConfig {
    pub fn parse_limits(&self) -> ParseLimits {
        ParseLimits {
            max_string_bytes: self.max_string_bytes,
            max_features: self.max_features_per_event,
            max_future_skew_ms: self.max_future_skew.ms,
            ..ParseLimits::default()
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SynchronousSetting {
    Full,
    Normal,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// `full` (default): a commit survives power loss. `normal`: survives a
    /// process crash only.
    pub synchronous: SynchronousSetting,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            synchronous: SynchronousSetting::Full,
        }
    }
}

impl StorageConfig {
    pub fn synchronous(&self) -> Synchronous {
        match self.synchronous {
            SynchronousSetting::Full => Synchronous::Full,
            SynchronousSetting::Normal => Synchronous::Normal,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AggregationSettings {
    pub minute_retention: Duration,
    pub hour_retention: Duration,
}

impl Default for AggregationSettings {
    fn default() -> Self {
        let defaults = AggregationConfig::default();
        Self {
            minute_retention: Duration {
                ms: defaults.minute_retention_ms,
            },
            hour_retention: Duration {
                ms: defaults.hour_retention_ms,
            },
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// The window, ending now, that `ml_feature_value` describes.
    pub feature_window: Duration,
    /// The windows, ending now, of `ml_model_accuracy` and the other quality
    /// gauges (their `window` label).
    pub quality_windows: Vec<String>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            feature_window: Duration { ms: 60 * MINUTE_MS },
            quality_windows: vec!["1d".to_owned(), "7d".to_owned()],
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text).map_err(|message| ConfigError::Invalid {
            path: path.display().to_string(),
            message,
        })
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        let config: Config = serde_saphyr::from_str(text).map_err(|error| error.to_string())?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        if self.aggregation.minute_retention.ms > self.aggregation.hour_retention.ms {
            return Err("aggregation.minute_retention must not exceed aggregation.hour_retention".into());
        }
        if self.drift.window.ms < 60 * MINUTE_MS || self.drift.retention.ms < self.drift.window.ms {
            return Err("drift.window must be at least 1h (drift summaries are hourly) and drift.retention at least drift.window".into());
        }
        for output in self.drift.predictions.keys() {
            if !["class", "confidence", "value"].contains(&output.as_str()) {
                return Err(format!(
                    "drift.predictions: {output:?} is not an output (class, confidence or value)"
                ));
            }
        }
        for (name, choice) in self.drift.features.iter().chain(&self.drift.predictions) {
            if let Some(threshold) = choice.threshold
                && !(threshold.is_finite() && threshold >= 0.0)
            {
                return Err(format!(
                    "drift: the threshold of {name:?} must be a non-negative number"
                ));
            }
        }
        if self.labels.horizon.ms <= 0 || self.labels.prune_interval.ms <= 0 {
            return Err("labels.horizon and labels.prune_interval must be positive".into());
        }
        for window in &self.metrics.quality_windows {
            match parse_duration_ms(window) {
                Ok(ms) if ms > 0 => {}
                _ => {
                    return Err(format!(
                        "metrics.quality_windows: {window:?} is not a positive duration like 7d"
                    ));
                }
            }
        }
        if self.ingest.max_body_bytes == 0 || self.ingest.max_queued_events == 0 {
            return Err("ingest limits must be positive".into());
        }
        if self.alerts.evaluation_interval.ms < 1000 {
            return Err("alerts.evaluation_interval must be at least 1s".into());
        }
        let rules = self.rules()?;
        self.validate_receivers()?;
        self.validate_remediation(&rules)?;
        Ok(())
    }

    /// The SLOs in force.
    pub fn slos(&self) -> Result<Vec<Slo>, String> {
        modelwatch_core::slo::resolve(&self.slos)
    }

    /// The alert rules in force: built-ins with overrides, the config's own,
    /// and the SLOs' burn-rate rules.
    pub fn rules(&self) -> Result<Vec<Rule>, String> {
        let mut rules = resolve_rules(&self.alerts.rules, &self.slos()?)?;
        // Drift rules read the drift computed over drift.window.
        for rule in rules.iter_mut().filter(|rule| rule.measure.is_drift()) {
            let explicit = self
                .alerts
                .rules
                .get(&rule.name)
                .and_then(|spec| spec.range.as_deref());
            if let Some(range) = explicit
                && parse_duration_ms(range) != Ok(self.drift.window.ms)
            {
                return Err(format!(
                    "alerts.rules.{}.range: a drift rule is evaluated over drift.window ({}); \
                     leave range out or set it to that",
                    rule.name, self.drift.window
                ));
            }
            rule.range_ms = self.drift.window.ms;
        }
        Ok(rules)
    }

    fn validate_receivers(&self) -> Result<(), String> {
        let mut names = std::collections::BTreeSet::new();
        for (index, receiver) in self.receivers.iter().enumerate() {
            let field = format!("receivers[{index}]");
            if !names.insert(receiver.name.as_str()) {
                return Err(format!("{field}.name: {:?} is used twice", receiver.name));
            }
            let urls = [&receiver.alertmanager, &receiver.webhook];
            if urls.iter().filter(|url| url.is_some()).count() != 1 {
                return Err(format!("{field}: give exactly one of alertmanager or webhook"));
            }
            for url in urls.into_iter().flatten() {
                check_url(url, &field)?;
            }
            // Every outbound webhook goes through the allowlist, not only
            // remediation actions.
            if let Some(url) = &receiver.webhook
                && !crate::remediation::allowlisted(url, &self.remediation.allowlist)
            {
                return Err(format!(
                    "{field}.webhook: {url} is not under any remediation.allowlist prefix \
                     (the allowlist applies to every webhook: receivers and actions)"
                ));
            }
        }
        Ok(())
    }

    fn validate_remediation(&self, rules: &[Rule]) -> Result<(), String> {
        for (name, action) in &self.remediation.actions {
            let field = format!("remediation.actions.{name}");
            check_url(&action.url, &field)?;
            if !crate::remediation::allowlisted(&action.url, &self.remediation.allowlist) {
                return Err(format!(
                    "{field}.url: {} is not under any remediation.allowlist prefix",
                    action.url
                ));
            }
            if !["POST", "PUT"].contains(&action.method.as_str()) {
                return Err(format!("{field}.method: {} is not POST or PUT", action.method));
            }
        }
        for rule in rules {
            for action in &rule.actions {
                if !self.remediation.actions.contains_key(action) {
                    return Err(format!(
                        "alerts.rules.{}.actions: no remediation action named {action:?}",
                        rule.name
                    ));
                }
            }
        }
        Ok(())
    }

    pub fn aggregation(&self) -> AggregationConfig {
        AggregationConfig {
            minute_retention_ms: self.aggregation.minute_retention.ms,
            hour_retention_ms: self.aggregation.hour_retention.ms,
            drift_retention_ms: self.drift.retention.ms,
            limits: self.limits.clone(),
        }
    }
}

fn check_url(url: &str, field: &str) -> Result<(), String> {
    if url.starts_with("http://") || url.starts_with("https://") {
        Ok(())
    } else {
        Err(format!("{field}: {url:?} is not an http:// or https:// URL"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_is_the_default() {
        let config = Config::parse("").unwrap();
        assert_eq!(config.ingest.max_body_bytes, 32 * 1024 * 1024);
    }

    #[test]
    fn durations_and_limits_parse() {
        let config = Config::parse(
            "aggregation:\n  minute_retention: 2h\n  hour_retention: 30d\nlimits:\n  max_classes_per_model: 3\n",
        )
        .unwrap();
        assert_eq!(config.aggregation().minute_retention_ms, 2 * 60 * MINUTE_MS);
        assert_eq!(config.aggregation().limits.max_classes_per_model, 3);
    }

    #[test]
    fn typos_are_errors_that_name_the_field() {
        let error = Config::parse("ingest:\n  max_body_byte: 10\n").unwrap_err();
        assert!(error.contains("max_body_byte"), "{error}");
        let error = Config::parse("aggregation:\n  minute_retention: 5 minutes\n").unwrap_err();
        assert!(error.contains("invalid duration"), "{error}");
    }
}

#[cfg(test)]
mod alert_config_tests {
    use super::*;

    #[test]
    fn the_seeds_slo_yaml_is_accepted_verbatim() {
        let config = Config::parse(
            "# slo.yaml\nslos:\n  fraud_detector:\n    availability:\n      target: 99.9\n      window: 30d\n    latency:\n      p99_target_ms: 100\n      p50_target_ms: 20\n    accuracy:\n      target: 0.95\n      window: 7d\n",
        )
        .unwrap();
        assert_eq!(config.slos().unwrap().len(), 4);
        // Six built-in rules and two burn-rate rules per SLO.
        assert_eq!(config.rules().unwrap().len(), 7 + 2 * 4);
    }

    #[test]
    fn errors_carry_line_and_column() {
        let error =
            Config::parse("alerts:\n  rules:\n    MLModelHighLatency:\n      treshold: 0.3\n").unwrap_err();
        assert!(error.contains("treshold") && error.contains("line 4"), "{error}");
    }

    #[test]
    fn webhook_receivers_must_be_allowlisted() {
        let error =
            Config::parse("receivers:\n  - name: hook\n    webhook: http://evil.example/x\n").unwrap_err();
        assert!(
            error.contains("receivers[0].webhook") && error.contains("allowlist"),
            "{error}"
        );
        Config::parse(
            "receivers:\n  - name: hook\n    webhook: http://hooks.internal/x\n\
             remediation:\n  allowlist: ['http://hooks.internal/']\n",
        )
        .unwrap();
    }

    #[test]
    fn actions_must_be_allowlisted_and_known() {
        let error = Config::parse(
            "remediation:\n  actions:\n    rollback:\n      url: http://deploy.internal/rollback\n",
        )
        .unwrap_err();
        assert!(error.contains("allowlist"), "{error}");
        let error =
            Config::parse("alerts:\n  rules:\n    MLModelDown:\n      actions: [page]\n").unwrap_err();
        assert!(error.contains("no remediation action named \"page\""), "{error}");
    }
}
