//! Each built-in rule driven through the native evaluator with synthetic
//! events and an explicit clock: it goes pending when its condition starts to
//! hold, fires after `for`, and resolves when the condition stops.

use modelwatch_core::alerting::{self, AlertState, Evaluator};
use modelwatch_core::event::{Actual, LabelEvent, Prediction, PredictionEvent, ScoredPrediction, Status};
use modelwatch_core::quality::Sign;
use modelwatch_core::series::{Aggregates, AggregationConfig, Changes};
use modelwatch_core::slo::{self, Sli, Slo};
use modelwatch_core::time::{DAY_MS, MINUTE_MS};

const BASE: i64 = 1_764_000_000_000 - 1_764_000_000_000 % DAY_MS;

#[derive(Clone)]
struct Traffic {
    count: usize,
    latency: f64,
    errors: usize,
    class: &'static str,
    /// Events predicting class "0" instead of `class`.
    others: usize,
    confidence: f64,
    /// Labels arriving with the predictions: how many of them are wrong.
    labeled: usize,
    wrong: usize,
}

impl Default for Traffic {
    fn default() -> Self {
        Self {
            count: 100,
            latency: 0.02,
            errors: 0,
            class: "1",
            others: 50,
            confidence: 0.9,
            labeled: 0,
            wrong: 0,
        }
    }
}

fn events(minute: i64, traffic: &Traffic) -> Vec<PredictionEvent> {
    (0..traffic.count)
        .map(|index| {
            let status = if index < traffic.errors {
                Status::Error {
                    error_type: "ValueError".into(),
                }
            } else {
                Status::Ok
            };
            let class = if index % 100 < traffic.others {
                "0"
            } else {
                traffic.class
            };
            PredictionEvent {
                prediction_id: format!("{minute}-{index}"),
                model: "fraud".into(),
                version: "v1".into(),
                timestamp_ms: BASE + minute * MINUTE_MS + (index as i64 * 37) % MINUTE_MS,
                latency_seconds: Some(traffic.latency),
                prediction: (status == Status::Ok).then(|| Prediction::Class(class.into())),
                confidence: (status == Status::Ok).then_some(traffic.confidence),
                status,
                probabilities: Vec::new(),
                features: Vec::new(),
                segments: Vec::new(),
            }
        })
        .collect()
}

/// Runs `minutes` minutes of traffic, evaluating at the start of each next
/// minute, and returns the state of `rule`'s alert after each evaluation.
fn run(
    evaluator: &mut Evaluator,
    rule: &str,
    minutes: i64,
    traffic: impl Fn(i64) -> Option<Traffic>,
) -> Vec<AlertState> {
    let mut aggregates = Aggregates::new(AggregationConfig::default());
    let mut states = Vec::new();
    for minute in 0..minutes {
        if let Some(traffic) = traffic(minute) {
            let mut changes = Changes::default();
            let batch = events(minute, &traffic);
            for event in &batch {
                aggregates.apply(event, &mut changes);
            }
            let classified: Vec<&PredictionEvent> =
                batch.iter().filter(|event| event.prediction.is_some()).collect();
            for (index, event) in classified.iter().take(traffic.labeled).enumerate() {
                let Some(Prediction::Class(predicted)) = &event.prediction else {
                    unreachable!()
                };
                let actual = if index < traffic.wrong {
                    if predicted == "1" { "0" } else { "1" }
                } else {
                    predicted.as_str()
                };
                let label = LabelEvent {
                    prediction_id: event.prediction_id.clone(),
                    actual: Actual::Class(actual.into()),
                    timestamp_ms: event.timestamp_ms,
                    business: Vec::new(),
                };
                aggregates.apply_label(&ScoredPrediction::from(*event), &label, Sign::Add, &mut changes);
            }
        }
        evaluator.evaluate(&aggregates, BASE + (minute + 1) * MINUTE_MS);
        let state = evaluator
            .tracker
            .alerts
            .iter()
            .find(|((rule_id, _), _)| rule_id == rule || rule_id.starts_with(&format!("{rule}{{")))
            .map_or(AlertState::Inactive, |(_, alert)| alert.state);
        states.push(state);
    }
    states
}

fn only(rule: &str) -> Evaluator {
    Evaluator::new(
        alerting::default_rules()
            .into_iter()
            .filter(|candidate| candidate.name == rule)
            .collect(),
        Vec::new(),
    )
}

/// The first step in each state, for compact assertions.
fn first(states: &[AlertState], wanted: AlertState) -> Option<usize> {
    states.iter().position(|state| *state == wanted)
}

#[test]
fn high_latency_fires_after_five_minutes_of_p99_above_half_a_second() {
    let mut evaluator = only(alerting::HIGH_LATENCY);
    let states = run(&mut evaluator, alerting::HIGH_LATENCY, 30, |minute| {
        Some(Traffic {
            latency: if (10..20).contains(&minute) { 0.8 } else { 0.02 },
            ..Traffic::default()
        })
    });
    // Minute 10's slow events count from the evaluation at the end of minute
    // 10 (step 10): pending there, firing 5 minutes later.
    assert_eq!(first(&states, AlertState::Pending), Some(10));
    assert_eq!(first(&states, AlertState::Firing), Some(15));
    // The last slow minute (19) leaves the 5m window after the step of minute 24.
    assert_eq!(first(&states, AlertState::Resolved), Some(24));
    assert!(states[..10].iter().all(|state| *state == AlertState::Inactive));
}

#[test]
fn high_error_rate_fires_above_one_percent() {
    let mut evaluator = only(alerting::HIGH_ERROR_RATE);
    let states = run(&mut evaluator, alerting::HIGH_ERROR_RATE, 30, |minute| {
        Some(Traffic {
            // 1% exactly is not above the threshold; 2% is.
            errors: if (10..20).contains(&minute) { 2 } else { 1 },
            ..Traffic::default()
        })
    });
    assert_eq!(first(&states, AlertState::Pending), Some(10));
    assert_eq!(first(&states, AlertState::Firing), Some(15));
    assert_eq!(first(&states, AlertState::Resolved), Some(24));
}

#[test]
fn prediction_skew_fires_after_an_hour_above_95_percent() {
    let mut evaluator = only(alerting::PREDICTION_SKEW);
    let states = run(&mut evaluator, alerting::PREDICTION_SKEW, 200, |minute| {
        Some(Traffic {
            others: if minute >= 30 { 2 } else { 50 },
            ..Traffic::default()
        })
    });
    // Shares over the last hour pass 95% once enough skewed minutes are in it.
    let pending = first(&states, AlertState::Pending).expect("pending");
    assert!((30..90).contains(&pending), "{pending}");
    assert_eq!(first(&states, AlertState::Firing), Some(pending + 60));
}

#[test]
fn low_confidence_fires_when_the_25th_percentile_drops_below_0_6() {
    let mut evaluator = only(alerting::LOW_CONFIDENCE);
    let states = run(&mut evaluator, alerting::LOW_CONFIDENCE, 200, |minute| {
        Some(Traffic {
            confidence: if (30..150).contains(&minute) { 0.55 } else { 0.92 },
            ..Traffic::default()
        })
    });
    let pending = first(&states, AlertState::Pending).expect("pending");
    assert!((30..60).contains(&pending), "{pending}");
    assert_eq!(first(&states, AlertState::Firing), Some(pending + 60));
    let resolved = first(&states, AlertState::Resolved).expect("resolved");
    assert!(resolved > 150, "{resolved}");
}

#[test]
fn model_down_fires_five_minutes_after_requests_stop() {
    let mut evaluator = only(alerting::MODEL_DOWN);
    let states = run(&mut evaluator, alerting::MODEL_DOWN, 40, |minute| {
        (!(10..30).contains(&minute)).then(Traffic::default)
    });
    // Minutes 10..=14 empty: the window [10, 15) is empty at step 14.
    assert_eq!(first(&states, AlertState::Pending), Some(14));
    assert_eq!(first(&states, AlertState::Firing), Some(19));
    assert_eq!(first(&states, AlertState::Resolved), Some(30));
}

#[test]
fn accuracy_drop_needs_enough_labels_and_fires_below_85_percent() {
    let mut evaluator = only(alerting::ACCURACY_DROP);
    let states = run(&mut evaluator, alerting::ACCURACY_DROP, 60, |minute| {
        Some(Traffic {
            // 20 labels a minute: the 100-label minimum is met at step 4.
            labeled: 20,
            // 50% wrong from minute 0 to 2 (too few labels to judge), then
            // right, then 30% wrong from minute 20.
            wrong: match minute {
                0..3 => 10,
                3..20 => 0,
                _ => 6,
            },
            ..Traffic::default()
        })
    });
    // Steps 0..=3 have under 100 labels; at step 4 accuracy is 70/100 < 85%:
    // fires at once (`for: 0`).
    assert!(
        states[..4].iter().all(|state| *state == AlertState::Inactive),
        "{states:?}"
    );
    assert_eq!(first(&states, AlertState::Firing), Some(4));
    let resolved = first(&states, AlertState::Resolved).expect("resolved");
    // Then accuracy recovers (right labels dilute the early errors), and from
    // minute 20 it sinks toward 70% again.
    assert!(resolved > 4 && resolved < 20, "{resolved}");
    assert_eq!(states.last(), Some(&AlertState::Firing));
}

#[test]
fn burn_rate_pages_when_both_windows_burn_fast() {
    let availability = Slo {
        model: "fraud".into(),
        name: "availability".into(),
        sli: Sli::Availability,
        objective: 0.999,
        window_ms: 30 * DAY_MS,
    };
    let rules = slo::burn_rules(&availability);
    let mut evaluator = Evaluator::new(rules, vec![availability]);
    let states = run(&mut evaluator, slo::BURN_PAGE_ALERT, 3 * 60, |minute| {
        Some(Traffic {
            // 2% errors for an hour: a burn rate of 20 over 5m at once, and
            // over 1h once enough of the hour is erroring.
            errors: if (60..120).contains(&minute) { 2 } else { 0 },
            ..Traffic::default()
        })
    });
    // The 6h pair fires first: with s + 1 minutes of history, the 6h burn is
    // 20 (s - 59) / (s + 1) > 6 from step 85 (the 1h pair would need step
    // 103: 20 (s - 59) / 60 > 14.4), and the 30m window burns at 20.
    assert!(states[..85].iter().all(|state| *state == AlertState::Inactive));
    assert_eq!(first(&states, AlertState::Firing), Some(85));
    // Errors stop after minute 119. The 30m burn, 20 (149 - s) / 30, falls to
    // 6 or less at step 140, while the 1h pair stopped with its 5m window.
    assert_eq!(first(&states, AlertState::Resolved), Some(140));
    // The ticket (3d and 6h above 1x) fires within minutes of the errors.
    let mut evaluator = Evaluator::new(evaluator.rules.clone(), evaluator.slos.clone());
    let states = run(&mut evaluator, slo::BURN_TICKET_ALERT, 70, |minute| {
        Some(Traffic {
            errors: if minute >= 60 { 2 } else { 0 },
            ..Traffic::default()
        })
    });
    // Step s has (s - 59) erroring minutes of (s + 1): burn 20 (s - 59)/(s + 1) > 1 from s = 63.
    assert_eq!(first(&states, AlertState::Firing), Some(63));
    assert!(states[..63].iter().all(|state| *state == AlertState::Inactive));
}
