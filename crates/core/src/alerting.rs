//! Alert rules, defined once and evaluated two ways: natively here, over the
//! aggregates, and as PromQL (see the server's rule generator) over the
//! `/metrics` series. Both must fire at the same evaluation steps, so the
//! native side computes what PromQL computes: ratios of counts over
//! `[now - range, now)` (a `rate` over a range whose samples sit on the range
//! boundaries), and quantiles interpolated in the seed's histogram buckets the
//! way `histogram_quantile` does, not read off the finer sketches.
//!
//! Rules are evaluated per model (`model_name`), over all of its versions.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::aggregate::Counters;
use crate::event::TimestampMs;
use crate::quality::Quality;
use crate::slo::{BurnWindows, Slo};
use crate::stats::{BucketCounts, CONFIDENCE_BUCKETS, LATENCY_BUCKETS};
use crate::time::{DAY_MS, HOUR_MS, MINUTE_MS, Window};

/// What a rule measures, per model, over its range.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Measure {
    /// `histogram_quantile(q, ml_prediction_latency_seconds)`, in seconds.
    LatencyQuantile { quantile: f64 },
    /// Errors (timeouts included) per request.
    ErrorRatio,
    /// The largest share of one predicted class among classified predictions.
    TopClassShare,
    /// `histogram_quantile(q, ml_prediction_confidence)`.
    ConfidenceQuantile { quantile: f64 },
    /// Requests per second.
    RequestRate,
    /// Labeled accuracy, counted in the window of the predictions' event
    /// time; no value below `min_samples` labeled predictions.
    Accuracy { min_samples: u64 },
    /// An SLO's error-budget burn rate on several window pairs: the rule's
    /// condition holds when, for some pair, the burn rate over both windows
    /// exceeds the pair's factor. The value is the largest long-window burn
    /// rate among the pairs.
    BurnRate { slo: String, windows: Vec<BurnWindows> },
    /// Drift against the baseline over the drift window: with a feature, 1
    /// when it drifted and 0 when not; without, how many features drifted.
    FeatureDrift { feature: Option<String> },
    /// The share of compared features that drifted over the drift window.
    DriftShare,
}

impl Measure {
    pub fn kind(&self) -> &'static str {
        match self {
            Measure::LatencyQuantile { .. } => "latency_quantile",
            Measure::ErrorRatio => "error_ratio",
            Measure::TopClassShare => "top_class_share",
            Measure::ConfidenceQuantile { .. } => "confidence_quantile",
            Measure::RequestRate => "request_rate",
            Measure::Accuracy { .. } => "accuracy",
            Measure::BurnRate { .. } => "burn_rate",
            Measure::FeatureDrift { .. } => "feature_drift",
            Measure::DriftShare => "drift_share",
        }
    }

    /// Whether the measure is a drift measure, evaluated over the drift
    /// window (its range must be that window).
    pub fn is_drift(&self) -> bool {
        matches!(self, Measure::FeatureDrift { .. } | Measure::DriftShare)
    }
}

/// How a rule compares its value with its threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    #[serde(rename = ">")]
    Above,
    #[serde(rename = ">=")]
    AtLeast,
    #[serde(rename = "<")]
    Below,
    #[serde(rename = "<=")]
    AtMost,
    #[serde(rename = "==")]
    Equal,
}

impl Op {
    pub fn as_promql(self) -> &'static str {
        match self {
            Op::Above => ">",
            Op::AtLeast => ">=",
            Op::Below => "<",
            Op::AtMost => "<=",
            Op::Equal => "==",
        }
    }

    /// Whether `value op threshold` holds; never for NaN, as in PromQL.
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Op::Above => value > threshold,
            Op::AtLeast => value >= threshold,
            Op::Below => value < threshold,
            Op::AtMost => value <= threshold,
            Op::Equal => value == threshold,
        }
    }
}

/// One alert rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    /// The alert name (`alertname`).
    pub name: String,
    pub measure: Measure,
    /// The range the measure is taken over (`[5m]` in PromQL); for burn
    /// rates, unused (their windows are in the measure).
    pub range_ms: i64,
    pub op: Op,
    pub threshold: f64,
    /// How long the condition must hold before the alert fires.
    pub for_ms: i64,
    /// Labels added to the alert (`severity`, and `slo` for burn rates).
    pub labels: BTreeMap<String, String>,
    /// Annotation templates; `{{ $labels.NAME }}` and `{{ $value }}` expand.
    pub annotations: BTreeMap<String, String>,
    /// Names of remediation actions to run when the alert fires.
    pub actions: Vec<String>,
    /// Models the rule applies to; all when empty.
    pub models: Vec<String>,
}

impl Rule {
    /// Identifies the rule among rules of the same name (burn-rate rules of
    /// several SLOs share theirs): the name and its labels.
    pub fn id(&self) -> String {
        if self.labels.is_empty() {
            return self.name.clone();
        }
        let labels: Vec<String> = self
            .labels
            .iter()
            .map(|(key, value)| format!("{key}={value:?}"))
            .collect();
        format!("{}{{{}}}", self.name, labels.join(","))
    }

    pub fn applies_to(&self, model: &str) -> bool {
        self.models.is_empty() || self.models.iter().any(|wanted| wanted == model)
    }
}

pub const HIGH_LATENCY: &str = "MLModelHighLatency";
pub const HIGH_ERROR_RATE: &str = "MLModelHighErrorRate";
pub const PREDICTION_SKEW: &str = "MLModelPredictionSkew";
pub const LOW_CONFIDENCE: &str = "MLModelLowConfidence";
pub const MODEL_DOWN: &str = "MLModelDown";
pub const ACCURACY_DROP: &str = "MLModelAccuracyDrop";
pub const DATA_DRIFT: &str = "MLModelDataDrift";

/// A built-in rule: `measure op threshold` over `range`, held for `for`.
struct Builtin {
    name: &'static str,
    measure: Measure,
    range_ms: i64,
    op: Op,
    threshold: f64,
    for_ms: i64,
    severity: &'static str,
    summary: &'static str,
}

impl Builtin {
    fn rule(self) -> Rule {
        Rule {
            name: self.name.to_owned(),
            measure: self.measure,
            range_ms: self.range_ms,
            op: self.op,
            threshold: self.threshold,
            for_ms: self.for_ms,
            labels: BTreeMap::from([("severity".to_owned(), self.severity.to_owned())]),
            annotations: BTreeMap::from([("summary".to_owned(), self.summary.to_owned())]),
            actions: Vec::new(),
            models: Vec::new(),
        }
    }
}

/// The seed's five alerts, with its thresholds and `for` durations, and the
/// accuracy-drop rule of its ground-truth monitor.
pub fn default_rules() -> Vec<Rule> {
    vec![
        Builtin {
            name: HIGH_LATENCY,
            measure: Measure::LatencyQuantile { quantile: 0.99 },
            range_ms: 5 * MINUTE_MS,
            op: Op::Above,
            threshold: 0.5,
            for_ms: 5 * MINUTE_MS,
            severity: "warning",
            summary: "Model {{ $labels.model_name }} p99 latency > 500ms",
        }
        .rule(),
        Builtin {
            name: HIGH_ERROR_RATE,
            measure: Measure::ErrorRatio,
            range_ms: 5 * MINUTE_MS,
            op: Op::Above,
            threshold: 0.01,
            for_ms: 5 * MINUTE_MS,
            severity: "critical",
            summary: "Model {{ $labels.model_name }} error rate > 1%",
        }
        .rule(),
        Builtin {
            name: PREDICTION_SKEW,
            measure: Measure::TopClassShare,
            range_ms: HOUR_MS,
            op: Op::Above,
            threshold: 0.95,
            for_ms: HOUR_MS,
            severity: "warning",
            summary: "Model predictions heavily skewed to one class",
        }
        .rule(),
        Builtin {
            name: LOW_CONFIDENCE,
            measure: Measure::ConfidenceQuantile { quantile: 0.25 },
            range_ms: HOUR_MS,
            op: Op::Below,
            threshold: 0.6,
            for_ms: HOUR_MS,
            severity: "warning",
            summary: "25% of predictions have confidence < 60%",
        }
        .rule(),
        Builtin {
            name: MODEL_DOWN,
            measure: Measure::RequestRate,
            range_ms: 5 * MINUTE_MS,
            op: Op::Equal,
            threshold: 0.0,
            for_ms: 5 * MINUTE_MS,
            severity: "critical",
            summary: "Model {{ $labels.model_name }} not receiving requests",
        }
        .rule(),
        Builtin {
            name: ACCURACY_DROP,
            measure: Measure::Accuracy { min_samples: 100 },
            range_ms: 7 * DAY_MS,
            op: Op::Below,
            threshold: 0.85,
            for_ms: 0,
            severity: "critical",
            summary: "Model {{ $labels.model_name }} 7d accuracy < 85%",
        }
        .rule(),
        Builtin {
            name: DATA_DRIFT,
            measure: Measure::DriftShare,
            range_ms: DAY_MS,
            op: Op::AtLeast,
            threshold: 0.5,
            for_ms: HOUR_MS,
            severity: "warning",
            summary: "Model {{ $labels.model_name }}: half or more of its features drifted from the baseline",
        }
        .rule(),
    ]
}

/// What the evaluator reads: the counters and quality of one model (all
/// versions) over a window of event time.
pub trait RuleInputs {
    fn counters(&self, model: &str, window: Window) -> Option<Counters>;
    fn quality(&self, model: &str, window: Window) -> Option<Quality>;
    /// Which features drifted over `window` against the model's baseline;
    /// `None` when drift cannot be told (no baseline, no data).
    fn drift(&self, _model: &str, _window: Window) -> Option<crate::drift::DriftVerdict> {
        None
    }
}

/// The value of `measure` for `model` over `[now - range, now)`: `None` when
/// PromQL would have no sample either (no requests to divide by, an empty
/// histogram, too few labels).
pub fn measure_value(
    inputs: &impl RuleInputs,
    slos: &[Slo],
    measure: &Measure,
    model: &str,
    range_ms: i64,
    now_ms: TimestampMs,
) -> Option<f64> {
    let window = Window::ending_at(now_ms, range_ms);
    match measure {
        Measure::LatencyQuantile { quantile } => {
            let counters = inputs.counters(model, window)?;
            histogram_quantile(*quantile, &LATENCY_BUCKETS, &counters.latency)
        }
        Measure::ErrorRatio => {
            let counters = inputs.counters(model, window)?;
            ratio(counters.errors(), counters.requests)
        }
        Measure::TopClassShare => {
            let counters = inputs.counters(model, window)?;
            let total: u64 = counters.classes.values().map(|class| class.count).sum();
            let top = counters.classes.values().map(|class| class.count).max()?;
            ratio(top, total)
        }
        Measure::ConfidenceQuantile { quantile } => {
            let counters = inputs.counters(model, window)?;
            histogram_quantile(*quantile, &CONFIDENCE_BUCKETS, &counters.confidence_all())
        }
        Measure::RequestRate => {
            let counters = inputs.counters(model, window)?;
            Some(counters.requests as f64 / (range_ms as f64 / 1000.0))
        }
        Measure::Accuracy { min_samples } => {
            let quality = inputs.quality(model, window)?;
            let labeled = classified(&quality);
            if labeled == 0 || labeled < *min_samples {
                return None;
            }
            ratio(correct(&quality), labeled)
        }
        Measure::FeatureDrift { feature } => {
            let verdict = inputs.drift(model, window)?;
            match feature {
                Some(feature) => verdict
                    .features
                    .get(feature)
                    .map(|drifted| f64::from(u8::from(*drifted))),
                None => Some(verdict.drifted() as f64),
            }
        }
        Measure::DriftShare => inputs.drift(model, window)?.share(),
        Measure::BurnRate { slo, windows } => {
            let slo = slos
                .iter()
                .find(|candidate| candidate.model == model && candidate.name == *slo)?;
            windows
                .iter()
                .filter_map(|pair| slo.burn_rate(inputs, pair.long_ms, now_ms))
                .fold(None, |largest: Option<f64>, burn| {
                    Some(largest.map_or(burn, |l| l.max(burn)))
                })
        }
    }
}

/// Whether `rule`'s condition holds for `model` at `now_ms`, and its value.
pub fn evaluate(
    inputs: &impl RuleInputs,
    slos: &[Slo],
    rule: &Rule,
    model: &str,
    now_ms: TimestampMs,
) -> Option<f64> {
    match &rule.measure {
        Measure::BurnRate { slo, windows } => {
            let slo = slos
                .iter()
                .find(|candidate| candidate.model == model && candidate.name == *slo)?;
            let mut firing = false;
            let mut value: Option<f64> = None;
            for pair in windows {
                let long = slo.burn_rate(inputs, pair.long_ms, now_ms);
                let short = slo.burn_rate(inputs, pair.short_ms, now_ms);
                if let Some(long) = long {
                    value = Some(value.map_or(long, |largest| largest.max(long)));
                }
                if let (Some(long), Some(short)) = (long, short) {
                    firing |= long > pair.factor && short > pair.factor;
                }
            }
            if firing { value } else { None }
        }
        measure => {
            let value = measure_value(inputs, slos, measure, model, rule.range_ms, now_ms)?;
            rule.op.holds(value, rule.threshold).then_some(value)
        }
    }
}

fn ratio(numerator: u64, denominator: u64) -> Option<f64> {
    (denominator > 0).then(|| numerator as f64 / denominator as f64)
}

/// Labeled classifications (regression labels have no accuracy).
pub fn classified(quality: &Quality) -> u64 {
    quality
        .confusion
        .values()
        .flat_map(|actuals| actuals.values())
        .sum()
}

/// Labeled classifications whose predicted class was the actual one.
pub fn correct(quality: &Quality) -> u64 {
    quality
        .confusion
        .iter()
        .filter_map(|(predicted, actuals)| actuals.get(predicted))
        .sum()
}

/// Prometheus's `histogram_quantile` (as of 2.x) over per-bucket counts:
/// linear interpolation within the bucket that holds the rank, the lowest
/// bucket starting at 0, and the highest finite bound when the rank falls in
/// `+Inf`. `None` (NaN in PromQL) for an empty histogram.
pub fn histogram_quantile(quantile: f64, bounds: &[f64], counts: &BucketCounts) -> Option<f64> {
    if quantile.is_nan() {
        return None;
    }
    if quantile < 0.0 {
        return Some(f64::NEG_INFINITY);
    }
    if quantile > 1.0 {
        return Some(f64::INFINITY);
    }
    let cumulative: Vec<(f64, f64)> = counts
        .cumulative(bounds)
        .map(|(bound, count)| (bound, count as f64))
        .collect();
    let total = cumulative.last()?.1;
    if total == 0.0 || cumulative.len() < 2 {
        return None;
    }
    let rank = quantile * total;
    let index = cumulative.partition_point(|(_, count)| *count < rank);
    if index == cumulative.len() - 1 {
        // The rank lies in the +Inf bucket: the highest finite bound.
        return Some(cumulative[cumulative.len() - 2].0);
    }
    if index == 0 && cumulative[0].0 <= 0.0 {
        return Some(cumulative[0].0);
    }
    let (start, below) = if index == 0 {
        (0.0, 0.0)
    } else {
        cumulative[index - 1]
    };
    let (end, through) = cumulative[index];
    let in_bucket = through - below;
    Some(start + (end - start) * ((rank - below) / in_bucket))
}

/// Where an alert instance is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    Inactive,
    Pending,
    Firing,
    Resolved,
}

/// One alert: a rule for one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub rule: String,
    pub name: String,
    pub model: String,
    /// The model's newest version when the alert was last evaluated (what a
    /// rollback would act on); not a label, so that it does not split the alert.
    #[serde(default)]
    pub version: Option<String>,
    pub state: AlertState,
    /// The last value that met the condition.
    pub value: f64,
    /// `alertname`, `model_name` and the rule's labels.
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// When the condition first held (the start of pending).
    pub active_since_ms: TimestampMs,
    pub fired_at_ms: Option<TimestampMs>,
    pub resolved_at_ms: Option<TimestampMs>,
    pub last_evaluated_ms: TimestampMs,
}

/// A change of state worth recording and notifying.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub from: AlertState,
    pub alert: Alert,
}

/// The alert instances of every rule, stepped on each evaluation.
#[derive(Debug, Clone, Default)]
pub struct Tracker {
    /// Keyed by rule id and model. Resolved alerts stay until the next step.
    pub alerts: BTreeMap<(String, String), Alert>,
}

impl Tracker {
    /// Advances the instance of `rule` for `model` given this evaluation's
    /// outcome (`Some(value)` when the condition holds), and returns the
    /// transition, if any. As in Prometheus: a new condition goes pending
    /// (firing at once when `for` is 0), fires once it has held for `for`,
    /// and a firing alert whose condition stops holding is resolved; a
    /// pending one just ends.
    pub fn step(
        &mut self,
        rule: &Rule,
        model: &str,
        outcome: Option<f64>,
        now_ms: TimestampMs,
    ) -> Option<Transition> {
        let key = (rule.id(), model.to_owned());
        match (self.alerts.get_mut(&key), outcome) {
            (None, None) => None,
            (None, Some(value)) => {
                let state = if rule.for_ms == 0 {
                    AlertState::Firing
                } else {
                    AlertState::Pending
                };
                let mut labels = rule.labels.clone();
                labels.insert("alertname".to_owned(), rule.name.clone());
                labels.insert("model_name".to_owned(), model.to_owned());
                let alert = Alert {
                    rule: rule.id(),
                    name: rule.name.clone(),
                    model: model.to_owned(),
                    version: None,
                    state,
                    value,
                    annotations: render_annotations(&rule.annotations, &labels, value),
                    labels,
                    active_since_ms: now_ms,
                    fired_at_ms: (state == AlertState::Firing).then_some(now_ms),
                    resolved_at_ms: None,
                    last_evaluated_ms: now_ms,
                };
                self.alerts.insert(key, alert.clone());
                Some(Transition {
                    from: AlertState::Inactive,
                    alert,
                })
            }
            (Some(alert), Some(value)) => {
                let from = alert.state;
                alert.value = value;
                alert.annotations = render_annotations(&rule.annotations, &alert.labels, value);
                alert.last_evaluated_ms = now_ms;
                match from {
                    AlertState::Pending if now_ms - alert.active_since_ms >= rule.for_ms => {
                        alert.state = AlertState::Firing;
                        alert.fired_at_ms = Some(now_ms);
                    }
                    AlertState::Resolved | AlertState::Inactive => {
                        // The condition is back: a new instance.
                        alert.active_since_ms = now_ms;
                        alert.resolved_at_ms = None;
                        alert.fired_at_ms = None;
                        alert.state = AlertState::Pending;
                        if rule.for_ms == 0 {
                            alert.state = AlertState::Firing;
                            alert.fired_at_ms = Some(now_ms);
                        }
                    }
                    _ => {}
                }
                (alert.state != from).then(|| Transition {
                    from,
                    alert: alert.clone(),
                })
            }
            (Some(alert), None) => {
                let from = alert.state;
                alert.last_evaluated_ms = now_ms;
                match from {
                    AlertState::Firing => {
                        alert.state = AlertState::Resolved;
                        alert.resolved_at_ms = Some(now_ms);
                        Some(Transition {
                            from,
                            alert: alert.clone(),
                        })
                    }
                    AlertState::Pending => {
                        let mut alert = self.alerts.remove(&key).expect("present");
                        alert.state = AlertState::Inactive;
                        Some(Transition { from, alert })
                    }
                    AlertState::Resolved | AlertState::Inactive => {
                        self.alerts.remove(&key);
                        None
                    }
                }
            }
        }
    }

    /// Alerts pending or firing.
    pub fn active(&self) -> impl Iterator<Item = &Alert> {
        self.alerts
            .values()
            .filter(|alert| matches!(alert.state, AlertState::Pending | AlertState::Firing))
    }

    /// Forgets instances of rules that no longer exist.
    pub fn retain_rules(&mut self, rule_ids: &[String]) {
        self.alerts.retain(|(rule, _), _| rule_ids.contains(rule));
    }
}

/// Expands `{{ $labels.NAME }}` and `{{ $value }}` (the subset of Prometheus
/// templating the seed's annotations use).
pub fn render_annotations(
    templates: &BTreeMap<String, String>,
    labels: &BTreeMap<String, String>,
    value: f64,
) -> BTreeMap<String, String> {
    templates
        .iter()
        .map(|(key, template)| (key.clone(), render(template, labels, value)))
        .collect()
}

fn render(template: &str, labels: &BTreeMap<String, String>, value: f64) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let Some(close) = rest[open..].find("}}") else {
            out.push_str(&rest[open..]);
            return out;
        };
        let inner = rest[open + 2..open + close].trim();
        if inner == "$value" {
            out.push_str(&format!("{value}"));
        } else if let Some(name) = inner.strip_prefix("$labels.") {
            out.push_str(labels.get(name).map(String::as_str).unwrap_or(""));
        } else {
            out.push_str(&rest[open..open + close + 2]);
        }
        rest = &rest[open + close + 2..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(per_bucket: &[u64]) -> BucketCounts {
        BucketCounts {
            counts: per_bucket.to_vec(),
            sum: 0.0,
        }
    }

    #[test]
    fn histogram_quantile_interpolates_like_prometheus() {
        // 10 in (0, 0.01], 10 in (0.01, 0.025]: the median is the top of the first.
        let latency = counts(&[10, 10, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(histogram_quantile(0.5, &LATENCY_BUCKETS, &latency), Some(0.01));
        // rank 15 is halfway through the second bucket.
        let value = histogram_quantile(0.75, &LATENCY_BUCKETS, &latency).unwrap();
        assert!((value - 0.0175).abs() < 1e-12, "{value}");
        // Ranks in +Inf answer the highest finite bound.
        let slow = counts(&[0, 0, 0, 0, 0, 0, 0, 0, 5]);
        assert_eq!(histogram_quantile(0.99, &LATENCY_BUCKETS, &slow), Some(2.5));
        assert_eq!(histogram_quantile(0.99, &LATENCY_BUCKETS, &counts(&[0; 9])), None);
        assert_eq!(
            histogram_quantile(0.99, &LATENCY_BUCKETS, &BucketCounts::default()),
            None
        );
    }

    #[test]
    fn annotations_expand_labels_and_value() {
        let labels = BTreeMap::from([("model_name".to_owned(), "fraud".to_owned())]);
        let rendered = render(
            "Model {{ $labels.model_name }} at {{ $value }} {{ other }}",
            &labels,
            0.5,
        );
        assert_eq!(rendered, "Model fraud at 0.5 {{ other }}");
    }

    #[test]
    fn tracker_honours_for_and_resolves() {
        let rule = default_rules().remove(1); // error ratio, for 5m
        let mut tracker = Tracker::default();
        let minute = MINUTE_MS;
        let step = |tracker: &mut Tracker, at: i64, value: Option<f64>| {
            tracker
                .step(&rule, "m", value, at)
                .map(|t| (t.from, t.alert.state))
        };
        assert_eq!(step(&mut tracker, 0, None), None);
        assert_eq!(
            step(&mut tracker, minute, Some(0.5)),
            Some((AlertState::Inactive, AlertState::Pending))
        );
        assert_eq!(step(&mut tracker, 5 * minute, Some(0.5)), None);
        assert_eq!(
            step(&mut tracker, 6 * minute, Some(0.5)),
            Some((AlertState::Pending, AlertState::Firing))
        );
        assert_eq!(tracker.active().count(), 1);
        assert_eq!(
            step(&mut tracker, 7 * minute, None),
            Some((AlertState::Firing, AlertState::Resolved))
        );
        assert_eq!(tracker.active().count(), 0);
        assert_eq!(step(&mut tracker, 8 * minute, None), None);
        assert!(tracker.alerts.is_empty());
        // A pending alert whose condition stops just ends.
        step(&mut tracker, 9 * minute, Some(0.5));
        assert_eq!(
            step(&mut tracker, 10 * minute, None),
            Some((AlertState::Pending, AlertState::Inactive))
        );
    }
}

/// A rule as the config gives it, under its name: for a built-in rule, the
/// fields to override; for a new one, the whole rule.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// `false` turns the rule off.
    pub enabled: Option<bool>,
    /// `latency_quantile`, `error_ratio`, `top_class_share`,
    /// `confidence_quantile`, `request_rate` or `accuracy`.
    pub measure: Option<String>,
    /// For the quantile measures.
    pub quantile: Option<f64>,
    /// For `accuracy`.
    pub min_samples: Option<u64>,
    /// For `feature_drift`: the feature (all features when absent).
    pub feature: Option<String>,
    /// A duration such as `5m`.
    pub range: Option<String>,
    pub op: Option<Op>,
    pub threshold: Option<f64>,
    #[serde(rename = "for")]
    pub for_: Option<String>,
    pub labels: Option<BTreeMap<String, String>>,
    pub annotations: Option<BTreeMap<String, String>>,
    pub actions: Option<Vec<String>>,
    pub models: Option<Vec<String>>,
}

fn duration_field(text: &str, field: &str) -> Result<i64, String> {
    match crate::time::parse_duration_ms(text) {
        Ok(ms) if ms > 0 => Ok(ms),
        _ => Err(format!("{field}: {text:?} is not a positive duration like 5m")),
    }
}

/// A `for`, where `0s` (fire at once) is allowed, as in Prometheus.
fn for_field(text: &str, field: &str) -> Result<i64, String> {
    let zero = text
        .strip_prefix('0')
        .map(|unit| unit.trim_start_matches('0'))
        .is_some_and(|unit| ["", "ms", "s", "m", "h", "d", "w", "y"].contains(&unit));
    if zero { Ok(0) } else { duration_field(text, field) }
}

/// The rules in force: the defaults with the config's overrides, the config's
/// own rules, and two burn-rate rules per SLO (which the config can override
/// or disable by their name, like the others: overriding a burn-rate name
/// applies to every SLO's rule of that name).
pub fn resolve_rules(specs: &BTreeMap<String, RuleSpec>, slos: &[Slo]) -> Result<Vec<Rule>, String> {
    let mut rules = default_rules();
    rules.extend(slos.iter().flat_map(crate::slo::burn_rules));
    for (name, spec) in specs {
        let field = format!("alerts.rules.{name}");
        let matching: Vec<usize> = (0..rules.len())
            .filter(|index| rules[*index].name == *name)
            .collect();
        if matching.is_empty() {
            if spec.enabled == Some(false) {
                continue;
            }
            rules.push(new_rule(name, spec, &field)?);
        } else {
            for index in matching {
                override_rule(&mut rules[index], spec, &field)?;
            }
        }
    }
    rules.retain(|rule| specs.get(&rule.name).and_then(|spec| spec.enabled) != Some(false));
    for rule in &rules {
        if !rule.threshold.is_finite() {
            return Err(format!(
                "alerts.rules.{}.threshold must be a finite number",
                rule.name
            ));
        }
    }
    Ok(rules)
}

fn measure_of(spec: &RuleSpec, kind: &str, field: &str) -> Result<Measure, String> {
    let quantile = || -> Result<f64, String> {
        let quantile = spec
            .quantile
            .ok_or_else(|| format!("{field}.quantile is required by measure {kind}"))?;
        if !(0.0..=1.0).contains(&quantile) {
            return Err(format!("{field}.quantile: {quantile} is not within [0, 1]"));
        }
        Ok(quantile)
    };
    Ok(match kind {
        "latency_quantile" => Measure::LatencyQuantile {
            quantile: quantile()?,
        },
        "error_ratio" => Measure::ErrorRatio,
        "top_class_share" => Measure::TopClassShare,
        "confidence_quantile" => Measure::ConfidenceQuantile {
            quantile: quantile()?,
        },
        "request_rate" => Measure::RequestRate,
        "accuracy" => Measure::Accuracy {
            min_samples: spec.min_samples.unwrap_or(100),
        },
        "feature_drift" => Measure::FeatureDrift {
            feature: spec.feature.clone(),
        },
        "drift_share" => Measure::DriftShare,
        other => {
            return Err(format!(
                "{field}.measure: unknown measure {other:?}; expected latency_quantile, error_ratio, \
                 top_class_share, confidence_quantile, request_rate, accuracy, feature_drift or \
                 drift_share"
            ));
        }
    })
}

fn new_rule(name: &str, spec: &RuleSpec, field: &str) -> Result<Rule, String> {
    let kind = spec
        .measure
        .as_deref()
        .ok_or_else(|| format!("{field}: a new rule needs measure, range, op and threshold"))?;
    let measure = measure_of(spec, kind, field)?;
    // Drift is measured over the drift window: the range may be left out.
    let range = match spec.range.as_deref() {
        Some(range) => range,
        None if measure.is_drift() => "1d",
        None => return Err(format!("{field}.range is required (a duration like 5m)")),
    };
    let mut rule = Rule {
        name: name.to_owned(),
        measure,
        range_ms: duration_field(range, &format!("{field}.range"))?,
        op: spec
            .op
            .ok_or_else(|| format!("{field}.op is required (>, >=, <, <= or ==)"))?,
        threshold: spec
            .threshold
            .ok_or_else(|| format!("{field}.threshold is required"))?,
        for_ms: 0,
        labels: BTreeMap::from([("severity".to_owned(), "warning".to_owned())]),
        annotations: BTreeMap::new(),
        actions: Vec::new(),
        models: Vec::new(),
    };
    if rule.range_ms == 0 {
        return Err(format!("{field}.range must be positive"));
    }
    override_rule(&mut rule, spec, field)?;
    Ok(rule)
}

fn override_rule(rule: &mut Rule, spec: &RuleSpec, field: &str) -> Result<(), String> {
    if let Some(kind) = &spec.measure {
        if matches!(rule.measure, Measure::BurnRate { .. }) {
            return Err(format!(
                "{field}.measure: a burn-rate rule's measure comes from its SLO"
            ));
        }
        rule.measure = measure_of(spec, kind, field)?;
    } else {
        match &mut rule.measure {
            Measure::LatencyQuantile { quantile } | Measure::ConfidenceQuantile { quantile } => {
                if let Some(wanted) = spec.quantile {
                    *quantile = wanted;
                }
            }
            Measure::Accuracy { min_samples } => {
                if let Some(wanted) = spec.min_samples {
                    *min_samples = wanted;
                }
            }
            Measure::FeatureDrift { feature } if spec.feature.is_some() => {
                feature.clone_from(&spec.feature);
            }
            _ if spec.quantile.is_some() || spec.min_samples.is_some() || spec.feature.is_some() => {
                return Err(format!(
                    "{field}: quantile, min_samples and feature do not apply to this rule's measure"
                ));
            }
            _ => {}
        }
    }
    if let Some(range) = &spec.range {
        rule.range_ms = duration_field(range, &format!("{field}.range"))?;
    }
    if let Some(op) = spec.op {
        rule.op = op;
    }
    if let Some(threshold) = spec.threshold {
        rule.threshold = threshold;
    }
    if let Some(for_) = &spec.for_ {
        rule.for_ms = for_field(for_, &format!("{field}.for"))?;
    }
    if let Some(labels) = &spec.labels {
        for reserved in ["alertname", "model_name"] {
            if labels.contains_key(reserved) {
                return Err(format!("{field}.labels: {reserved} is set by modelwatch"));
            }
        }
        rule.labels.extend(labels.clone());
    }
    if let Some(annotations) = &spec.annotations {
        rule.annotations.extend(annotations.clone());
    }
    if let Some(actions) = &spec.actions {
        rule.actions = actions.clone();
    }
    if let Some(models) = &spec.models {
        rule.models = models.clone();
    }
    Ok(())
}

#[cfg(test)]
mod spec_tests {
    use super::*;

    #[test]
    fn overrides_disables_and_new_rules() {
        let specs: BTreeMap<String, RuleSpec> = serde_saphyr::from_str(
            "MLModelHighLatency:\n  threshold: 0.3\n  for: 10m\nMLModelPredictionSkew:\n  enabled: false\n\
             SlowP50:\n  measure: latency_quantile\n  quantile: 0.5\n  range: 10m\n  op: '>'\n  threshold: 0.1\n",
        )
        .unwrap();
        let rules = resolve_rules(&specs, &[]).unwrap();
        let names: Vec<&str> = rules.iter().map(|rule| rule.name.as_str()).collect();
        assert!(!names.contains(&PREDICTION_SKEW));
        let latency = rules.iter().find(|rule| rule.name == HIGH_LATENCY).unwrap();
        assert_eq!((latency.threshold, latency.for_ms), (0.3, 10 * MINUTE_MS));
        let specs: BTreeMap<String, RuleSpec> =
            serde_saphyr::from_str("MLModelDown:\n  for: 0s\nMLModelHighLatency:\n  for: '0'\n").unwrap();
        let immediate = resolve_rules(&specs, &[]).unwrap();
        assert!(
            immediate
                .iter()
                .filter(|rule| rule.name == MODEL_DOWN || rule.name == HIGH_LATENCY)
                .all(|rule| rule.for_ms == 0)
        );
        let custom = rules.iter().find(|rule| rule.name == "SlowP50").unwrap();
        assert_eq!(custom.measure, Measure::LatencyQuantile { quantile: 0.5 });
        assert_eq!(custom.op, Op::Above);
    }

    #[test]
    fn incomplete_new_rules_are_errors_naming_the_field() {
        let specs: BTreeMap<String, RuleSpec> =
            serde_saphyr::from_str("Mine:\n  measure: error_ratio\n  op: '>'\n  threshold: 0.1\n").unwrap();
        let error = resolve_rules(&specs, &[]).unwrap_err();
        assert!(error.contains("alerts.rules.Mine.range"), "{error}");
    }
}

/// The native evaluator: every rule for every model it applies to, stepped
/// through the tracker at an explicit time.
#[derive(Debug, Clone, Default)]
pub struct Evaluator {
    pub rules: Vec<Rule>,
    pub slos: Vec<Slo>,
    pub tracker: Tracker,
}

impl Evaluator {
    pub fn new(rules: Vec<Rule>, slos: Vec<Slo>) -> Self {
        Self {
            rules,
            slos,
            tracker: Tracker::default(),
        }
    }

    /// Evaluates every rule at `now_ms` and returns the transitions. Models
    /// are those the aggregates know (a model seen before that stops sending
    /// is how `MLModelDown` fires).
    pub fn evaluate(
        &mut self,
        aggregates: &crate::series::Aggregates,
        now_ms: TimestampMs,
    ) -> Vec<Transition> {
        let mut transitions = Vec::new();
        for model in aggregates.models.keys() {
            transitions.extend(self.evaluate_model(aggregates, aggregates, model, now_ms));
        }
        let known: Vec<&str> = aggregates.models.keys().map(String::as_str).collect();
        transitions.extend(self.end_unknown(&known, now_ms));
        transitions
    }

    /// Evaluates every rule that applies to `model` (a model the aggregates
    /// know). Callers that hold a lock over the aggregates can take it per
    /// model, so that writers are not held up by a long evaluation. `inputs`
    /// answers the rules (the aggregates, with drift when the caller can tell
    /// it).
    pub fn evaluate_model(
        &mut self,
        aggregates: &crate::series::Aggregates,
        inputs: &impl RuleInputs,
        model: &str,
        now_ms: TimestampMs,
    ) -> Vec<Transition> {
        let mut transitions = Vec::new();
        let Some(state) = aggregates.models.get(model) else {
            return transitions;
        };
        let newest_version = state
            .versions
            .iter()
            .max_by_key(|(_, series)| series.newest_event_ms)
            .map(|(version, _)| version.clone());
        for rule in &self.rules {
            if !rule.applies_to(model) {
                continue;
            }
            let outcome = evaluate(inputs, &self.slos, rule, model, now_ms);
            let transition = self.tracker.step(rule, model, outcome, now_ms);
            if let Some(alert) = self.tracker.alerts.get_mut(&(rule.id(), model.to_owned())) {
                alert.version = newest_version.clone();
            }
            if let Some(mut transition) = transition {
                transition.alert.version = newest_version.clone();
                transitions.push(transition);
            }
        }
        transitions
    }

    /// Ends the instances of models not in `known` and of rules that no
    /// longer exist.
    pub fn end_unknown(&mut self, known: &[&str], now_ms: TimestampMs) -> Vec<Transition> {
        let mut transitions = Vec::new();
        let stale: Vec<(String, String)> = self
            .tracker
            .alerts
            .keys()
            .filter(|(_, model)| !known.contains(&model.as_str()))
            .cloned()
            .collect();
        for (rule_id, model) in stale {
            if let Some(rule) = self.rules.iter().find(|rule| rule.id() == rule_id) {
                transitions.extend(self.tracker.step(rule, &model, None, now_ms));
            }
        }
        let ids: Vec<String> = self.rules.iter().map(Rule::id).collect();
        self.tracker.retain_rules(&ids);
        transitions
    }
}
