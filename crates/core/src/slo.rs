//! Service-level objectives: their SLIs over the aggregates, the error budget
//! left over the SLO's window, and burn rates (the error ratio over a window
//! divided by the budget's ratio, so 1.0 spends the budget exactly over the
//! SLO's window).
//!
//! The seed's `slo.yaml` gives, per model, `availability` (a target in
//! percent and a window), `latency` (`pNN_target_ms` entries: NN% of requests
//! at or under the threshold) and `accuracy` (a target ratio and a window).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::alerting::{self, Measure, Op, Rule, RuleInputs};
use crate::event::TimestampMs;
use crate::stats::SLO_LATENCY_BUCKETS;
use crate::time::{DAY_MS, HOUR_MS, MINUTE_MS, Window};

/// What an SLO counts as a good event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sli {
    /// Requests without an error or timeout.
    Availability,
    /// Requests whose latency is at or under `threshold_seconds` (a bound of
    /// [`SLO_LATENCY_BUCKETS`]).
    Latency { threshold_seconds: f64 },
    /// Labeled predictions that were right, by the predictions' event time.
    Accuracy,
}

/// One objective of one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Slo {
    pub model: String,
    /// `availability`, `latency_p99`, `accuracy`…
    pub name: String,
    pub sli: Sli,
    /// The share of good events aimed at, in (0, 1).
    pub objective: f64,
    pub window_ms: i64,
}

/// Good and total events over a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Counts {
    pub good: u64,
    pub total: u64,
}

impl Slo {
    /// The budget's error ratio: `1 - objective`.
    pub fn budget_ratio(&self) -> f64 {
        // Rounded like the objective, so that 1 - 0.999 is 0.001 and a burn
        // rate of 500 is not 499.99999999999955.
        ((1.0 - self.objective) * 1e12).round() / 1e12
    }

    pub fn counts(&self, inputs: &impl RuleInputs, window: Window) -> Option<Counts> {
        match &self.sli {
            Sli::Availability => {
                let counters = inputs.counters(&self.model, window)?;
                Some(Counts {
                    good: counters.requests - counters.errors().min(counters.requests),
                    total: counters.requests,
                })
            }
            Sli::Latency { threshold_seconds } => {
                let counters = inputs.counters(&self.model, window)?;
                let cumulative = counters
                    .slo_latency
                    .cumulative(&SLO_LATENCY_BUCKETS)
                    .find(|(bound, _)| bound == threshold_seconds)
                    .map_or(0, |(_, count)| count);
                Some(Counts {
                    good: cumulative,
                    total: counters.slo_latency.count(),
                })
            }
            Sli::Accuracy => {
                let quality = inputs.quality(&self.model, window)?;
                Some(Counts {
                    good: alerting::correct(&quality),
                    total: alerting::classified(&quality),
                })
            }
        }
    }

    /// The error ratio over `[now - length, now)`; `None` without events.
    pub fn error_ratio(&self, inputs: &impl RuleInputs, length_ms: i64, now_ms: TimestampMs) -> Option<f64> {
        let counts = self.counts(inputs, Window::ending_at(now_ms, length_ms))?;
        (counts.total > 0).then(|| (counts.total - counts.good) as f64 / counts.total as f64)
    }

    pub fn burn_rate(&self, inputs: &impl RuleInputs, length_ms: i64, now_ms: TimestampMs) -> Option<f64> {
        Some(self.error_ratio(inputs, length_ms, now_ms)? / self.budget_ratio())
    }

    /// The share of the error budget left over the SLO's window: 1 when no
    /// event was bad, 0 when exactly spent, negative when overspent.
    pub fn budget_remaining(&self, inputs: &impl RuleInputs, now_ms: TimestampMs) -> Option<f64> {
        Some(1.0 - self.burn_rate(inputs, self.window_ms, now_ms)?)
    }
}

/// A multiwindow burn-rate condition: both windows above `factor`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BurnWindows {
    pub long_ms: i64,
    pub short_ms: i64,
    pub factor: f64,
}

/// The windows burn rates are reported over.
pub const BURN_RATE_WINDOWS_MS: [i64; 7] = [
    5 * MINUTE_MS,
    30 * MINUTE_MS,
    HOUR_MS,
    2 * HOUR_MS,
    6 * HOUR_MS,
    DAY_MS,
    3 * DAY_MS,
];

/// Page: 14.4× over 1h and 5m, or 6× over 6h and 30m.
pub const PAGE: [BurnWindows; 2] = [
    BurnWindows {
        long_ms: HOUR_MS,
        short_ms: 5 * MINUTE_MS,
        factor: 14.4,
    },
    BurnWindows {
        long_ms: 6 * HOUR_MS,
        short_ms: 30 * MINUTE_MS,
        factor: 6.0,
    },
];

/// Ticket: 3× over 1d and 2h, or 1× over 3d and 6h.
pub const TICKET: [BurnWindows; 2] = [
    BurnWindows {
        long_ms: DAY_MS,
        short_ms: 2 * HOUR_MS,
        factor: 3.0,
    },
    BurnWindows {
        long_ms: 3 * DAY_MS,
        short_ms: 6 * HOUR_MS,
        factor: 1.0,
    },
];

pub const BURN_PAGE_ALERT: &str = "MLModelErrorBudgetBurn";
pub const BURN_TICKET_ALERT: &str = "MLModelErrorBudgetBurnTicket";

/// The two burn-rate rules of an SLO: page (critical) and ticket (warning).
pub fn burn_rules(slo: &Slo) -> Vec<Rule> {
    let make = |name: &str, severity: &str, windows: &[BurnWindows], speed: &str| Rule {
        name: name.to_owned(),
        measure: Measure::BurnRate {
            slo: slo.name.clone(),
            windows: windows.to_vec(),
        },
        range_ms: windows.iter().map(|pair| pair.long_ms).max().unwrap_or(HOUR_MS),
        op: Op::Above,
        threshold: windows
            .iter()
            .map(|pair| pair.factor)
            .fold(f64::INFINITY, f64::min),
        // The short window is the guard against noise: no extra `for`.
        for_ms: 0,
        labels: BTreeMap::from([
            ("severity".to_owned(), severity.to_owned()),
            ("slo".to_owned(), slo.name.clone()),
        ]),
        annotations: BTreeMap::from([(
            "summary".to_owned(),
            format!(
                "Model {{{{ $labels.model_name }}}} burns its {} error budget {speed}",
                slo.name
            ),
        )]),
        actions: Vec::new(),
        models: vec![slo.model.clone()],
    };
    vec![
        make(
            BURN_PAGE_ALERT,
            "critical",
            &PAGE,
            "fast (14.4x over 1h, or 6x over 6h)",
        ),
        make(
            BURN_TICKET_ALERT,
            "warning",
            &TICKET,
            "steadily (3x over 1d, or 1x over 3d)",
        ),
    ]
}

/// The seed's `slo.yaml`, per model.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SloSpec {
    #[serde(default)]
    pub availability: Option<TargetSpec>,
    /// `pNN_target_ms: threshold`, plus an optional `window`.
    #[serde(default)]
    pub latency: Option<BTreeMap<String, serde_yaml_value::Scalar>>,
    #[serde(default)]
    pub accuracy: Option<TargetSpec>,
}

/// A target (in percent when above 1, as the seed's `99.9`, or as a ratio)
/// and a window.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetSpec {
    pub target: f64,
    #[serde(default)]
    pub window: Option<String>,
}

/// Scalars of the `latency` block, which mixes numbers and a window string.
pub mod serde_yaml_value {
    use serde::Deserialize;

    #[derive(Debug, Clone, PartialEq, Deserialize)]
    #[serde(untagged)]
    pub enum Scalar {
        Number(f64),
        Text(String),
    }
}

/// The default window of an SLO that names none.
pub const DEFAULT_SLO_WINDOW_MS: i64 = 30 * DAY_MS;

fn objective(target: f64, field: &str) -> Result<f64, String> {
    // Rounded so that a target of 99.9 (percent) is the objective 0.999, not
    // 0.9990000000000001.
    let ratio = if target > 1.0 { target / 100.0 } else { target };
    let ratio = (ratio * 1e12).round() / 1e12;
    if !(ratio > 0.0 && ratio < 1.0) {
        return Err(format!(
            "{field}: target {target} must be a percentage below 100 or a ratio in (0, 1)"
        ));
    }
    Ok(ratio)
}

fn window(text: Option<&str>, field: &str) -> Result<i64, String> {
    match text {
        None => Ok(DEFAULT_SLO_WINDOW_MS),
        Some(text) => match crate::time::parse_duration_ms(text) {
            Ok(ms) if ms > 0 => Ok(ms),
            _ => Err(format!(
                "{field}.window: {text:?} is not a positive duration like 30d"
            )),
        },
    }
}

/// Turns the `slos:` block into objectives, rejecting what cannot be
/// measured exactly (a latency threshold that is not an SLO bucket bound).
pub fn resolve(specs: &BTreeMap<String, SloSpec>) -> Result<Vec<Slo>, String> {
    let mut slos = Vec::new();
    for (model, spec) in specs {
        if let Some(availability) = &spec.availability {
            let field = format!("slos.{model}.availability");
            slos.push(Slo {
                model: model.clone(),
                name: "availability".to_owned(),
                sli: Sli::Availability,
                objective: objective(availability.target, &field)?,
                window_ms: window(availability.window.as_deref(), &field)?,
            });
        }
        if let Some(latency) = &spec.latency {
            let field = format!("slos.{model}.latency");
            let window_ms = match latency.get("window") {
                None => DEFAULT_SLO_WINDOW_MS,
                Some(serde_yaml_value::Scalar::Text(text)) => window(Some(text), &field)?,
                Some(other) => return Err(format!("{field}.window: {other:?} is not a duration like 30d")),
            };
            for (key, value) in latency {
                if key == "window" {
                    continue;
                }
                let percentile = key
                    .strip_prefix('p')
                    .and_then(|rest| rest.strip_suffix("_target_ms"))
                    .and_then(|number| number.parse::<f64>().ok())
                    .filter(|percentile| *percentile > 0.0 && *percentile < 100.0)
                    .ok_or_else(|| {
                        format!("{field}.{key}: expected pNN_target_ms (such as p99_target_ms) or window")
                    })?;
                let serde_yaml_value::Scalar::Number(milliseconds) = value else {
                    return Err(format!("{field}.{key}: expected a number of milliseconds"));
                };
                let threshold_seconds = milliseconds / 1000.0;
                if !SLO_LATENCY_BUCKETS
                    .iter()
                    .any(|bound| (bound - threshold_seconds).abs() < 1e-12)
                {
                    let allowed: Vec<String> = SLO_LATENCY_BUCKETS
                        .iter()
                        .map(|bound| format!("{}", bound * 1000.0))
                        .collect();
                    return Err(format!(
                        "{field}.{key}: {milliseconds} ms is not one of the SLO latency buckets \
                         (ms: {}), so the share of requests under it cannot be counted exactly",
                        allowed.join(", ")
                    ));
                }
                let threshold_seconds = *SLO_LATENCY_BUCKETS
                    .iter()
                    .find(|bound| (*bound - threshold_seconds).abs() < 1e-12)
                    .expect("checked above");
                slos.push(Slo {
                    model: model.clone(),
                    name: format!("latency_{}", key.trim_end_matches("_target_ms")),
                    sli: Sli::Latency { threshold_seconds },
                    objective: percentile / 100.0,
                    window_ms,
                });
            }
        }
        if let Some(accuracy) = &spec.accuracy {
            let field = format!("slos.{model}.accuracy");
            slos.push(Slo {
                model: model.clone(),
                name: "accuracy".to_owned(),
                sli: Sli::Accuracy,
                objective: objective(accuracy.target, &field)?,
                window_ms: window(accuracy.window.as_deref(), &field)?,
            });
        }
    }
    Ok(slos)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::Counters;
    use crate::quality::Quality;

    struct Fixed {
        counters: Counters,
        quality: Quality,
    }

    impl RuleInputs for Fixed {
        fn counters(&self, _: &str, _: Window) -> Option<Counters> {
            Some(self.counters.clone())
        }
        fn quality(&self, _: &str, _: Window) -> Option<Quality> {
            Some(self.quality.clone())
        }
    }

    fn seed_slos() -> Vec<Slo> {
        let spec: SloSpec = serde_saphyr::from_str(
            "availability:\n  target: 99.9\n  window: 30d\nlatency:\n  p99_target_ms: 100\n  p50_target_ms: 20\naccuracy:\n  target: 0.95\n  window: 7d\n",
        )
        .unwrap();
        resolve(&BTreeMap::from([("fraud_detector".to_owned(), spec)])).unwrap()
    }

    #[test]
    fn the_seeds_slo_yaml_resolves() {
        let slos = seed_slos();
        let names: Vec<&str> = slos.iter().map(|slo| slo.name.as_str()).collect();
        assert_eq!(names, ["availability", "latency_p50", "latency_p99", "accuracy"]);
        assert!((slos[0].objective - 0.999).abs() < 1e-12);
        assert_eq!(
            slos[1].sli,
            Sli::Latency {
                threshold_seconds: 0.02
            }
        );
        assert_eq!(slos[1].objective, 0.5);
        assert_eq!(slos[3].window_ms, 7 * DAY_MS);
    }

    #[test]
    fn thresholds_off_the_buckets_are_refused() {
        let spec: SloSpec = serde_saphyr::from_str("latency:\n  p99_target_ms: 123\n").unwrap();
        let error = resolve(&BTreeMap::from([("m".to_owned(), spec)])).unwrap_err();
        assert!(error.contains("slos.m.latency.p99_target_ms"), "{error}");
    }

    #[test]
    fn budget_and_burn_rate() {
        let mut counters = Counters {
            requests: 10_000,
            ..Counters::default()
        };
        counters.errors_by_type.insert("timeout".to_owned(), 5);
        let inputs = Fixed {
            counters,
            quality: Quality::default(),
        };
        let availability = &seed_slos()[0];
        // 0.05% errors against a 0.1% budget: burn 0.5, half the budget left.
        let burn = availability.burn_rate(&inputs, HOUR_MS, 0).unwrap();
        assert!((burn - 0.5).abs() < 1e-9, "{burn}");
        let remaining = availability.budget_remaining(&inputs, 0).unwrap();
        assert!((remaining - 0.5).abs() < 1e-9, "{remaining}");
    }
}
