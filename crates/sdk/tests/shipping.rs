//! End to end: predictions and labels sent through the SDK reach a real
//! modelwatch server and show in its figures; with the server down,
//! `predict()` keeps working, drops are counted once the queue is full, and
//! shipping resumes when the server is back.

mod support;

use std::borrow::Cow;
use std::time::{Duration, Instant};

use modelwatch_sdk::{Failure, Fields, Metrics, Model, MonitoredPredictor, Prediction, Shipper, encode_text};
use support::{DEADLINE, TestServer, free_port};

/// A transaction to score.
struct Transaction {
    amount: f64,
    country: &'static str,
    region: &'static str,
}

#[derive(Debug)]
enum ScoringError {
    InvalidAmount,
    TimedOut,
}

/// Fraud above 100; refuses negative amounts, and "times out" on 0.
struct FraudRule;

impl Model for FraudRule {
    type Input = Transaction;
    type Error = ScoringError;

    fn predict(&self, transaction: &Transaction) -> Result<Prediction, ScoringError> {
        if transaction.amount < 0.0 {
            return Err(ScoringError::InvalidAmount);
        }
        if transaction.amount == 0.0 {
            return Err(ScoringError::TimedOut);
        }
        let fraud_probability = (transaction.amount / 200.0).min(0.99);
        Ok(
            Prediction::from_probabilities([("0", 1.0 - fraud_probability), ("1", fraud_probability)])
                .expect("two probabilities"),
        )
    }

    fn describe(&self, transaction: &Transaction, fields: &mut Fields) {
        fields
            .number("amount", transaction.amount)
            .text("country", transaction.country)
            .segment("region", transaction.region);
    }

    fn failure(&self, error: &ScoringError) -> Failure {
        match error {
            ScoringError::InvalidAmount => Failure::Error(Cow::Borrowed("InvalidAmount")),
            ScoringError::TimedOut => Failure::Timeout,
        }
    }
}

/// `value` is a number within 1e-12 of `expected`.
fn assert_close(value: &serde_json::Value, expected: f64) {
    let number = value
        .as_f64()
        .unwrap_or_else(|| panic!("{value} is not a number"));
    assert!((number - expected).abs() < 1e-12, "{number} != {expected}");
}

fn transaction(amount: f64) -> Transaction {
    Transaction {
        amount,
        country: if amount > 50.0 { "DE" } else { "FR" },
        region: if amount > 150.0 { "us" } else { "eu" },
    }
}

#[test]
fn predictions_and_labels_reach_the_server_figures() {
    let data = tempfile::tempdir().expect("temp dir");
    let server = TestServer::start(free_port(), data.path());
    let shipper = Shipper::builder(server.base_url())
        .flush_interval(Duration::from_millis(20))
        .start()
        .expect("start the shipper");
    let metrics = Metrics::new();
    let predictor = MonitoredPredictor::builder(FraudRule, "fraud_detector", "v3")
        .metrics(&metrics)
        .shipper(&shipper)
        .classes(["0", "1"])
        .build();

    // 16 predictions (amounts 25, 45, ..., 325), 3 errors, 2 timeouts.
    let mut predicted = Vec::new();
    for step in 1..=16 {
        let amount = f64::from(step) * 20.0 + 5.0;
        predicted.push((
            amount,
            predictor.predict(&transaction(amount)).expect("a prediction"),
        ));
    }
    for amount in [-1.0, -2.0, -3.0, 0.0, 0.0] {
        predictor.predict(&transaction(amount)).expect_err("a failure");
    }
    // Truth: fraud above 150. The rule (fraud above 100) is wrong for 105,
    // 125 and 145. Business value: revenue from the legitimate ones.
    let mut expected_correct = 0;
    for (amount, outcome) in &predicted {
        let actual = if *amount > 150.0 { "1" } else { "0" };
        if outcome.prediction.predicted_class() == Some(actual) {
            expected_correct += 1;
        }
        let revenue = if actual == "0" { *amount } else { 0.0 };
        assert!(shipper.report_label_with_business(outcome.id, actual, [("revenue", revenue)]));
    }
    assert!(shipper.flush(DEADLINE), "the events were not delivered in time");

    let stats = shipper.stats();
    assert_eq!(stats.predictions_sent, 21, "{stats:?}");
    assert_eq!(stats.labels_sent, 16, "{stats:?}");
    assert_eq!((stats.rejected, stats.dropped()), (0, 0), "{stats:?}");

    let operations = server.get_json("/v1/models/fraud_detector/operations?window=1h");
    assert_eq!(operations["requests"], 21, "{operations}");
    assert_eq!(operations["errors_by_type"]["InvalidAmount"], 3, "{operations}");
    assert_eq!(operations["errors_by_type"]["timeout"], 2, "{operations}");
    assert_close(&operations["timeout_rate"], 2.0 / 21.0);

    let performance = server.get_json("/v1/models/fraud_detector/performance?window=1h");
    assert_eq!(performance["sample_size"], 16, "{performance}");
    assert_eq!(performance["label_coverage"], 1.0, "{performance}");
    assert_close(&performance["accuracy"], f64::from(expected_correct) / 16.0);
    assert_eq!(expected_correct, 13);
    // Legitimate amounts 25..=145: their revenue sums to 595.
    assert_eq!(performance["business"]["revenue"]["sum"], 595.0, "{performance}");
    let in_eu = server.get_json("/v1/models/fraud_detector/performance?window=1h&segment=region:eu");
    assert_eq!(in_eu["sample_size"], 7, "{in_eu}");

    let predictions = server.get_json("/v1/models/fraud_detector/predictions?window=1h");
    assert_eq!(predictions["classes"]["1"]["count"], 12, "{predictions}");
    let features = server.get_json("/v1/models/fraud_detector/features?window=1h");
    assert_eq!(features["features"]["amount"]["max"], 325.0, "{features}");
    assert_eq!(features["features"]["country"]["distinct"], 2, "{features}");

    let models = server.get_json("/v1/models");
    assert_eq!(models["models"][0]["versions"][0], "v3", "{models}");

    // The same predictions in the SDK's own metrics.
    let text = encode_text(&metrics.registry());
    for expected in [
        r#"ml_prediction_requests_total{model_name="fraud_detector",model_version="v3"} 21"#,
        r#"ml_prediction_errors_total{model_name="fraud_detector",error_type="timeout"} 2"#,
        r#"ml_prediction_errors_total{model_name="fraud_detector",error_type="InvalidAmount"} 3"#,
        r#"ml_prediction_class_total{model_name="fraud_detector",predicted_class="1"} 12"#,
        r#"ml_prediction_confidence_count{model_name="fraud_detector",predicted_class="0"} 4"#,
        r#"ml_prediction_latency_seconds_count{model_name="fraud_detector"} 21"#,
    ] {
        assert!(text.contains(expected), "missing {expected} in\n{text}");
    }
    let final_stats = shipper.shutdown(Duration::from_secs(5));
    assert_eq!(final_stats.dropped(), 0);
}

/// A model that answers at once.
struct Constant;

impl Model for Constant {
    type Input = ();
    type Error = std::convert::Infallible;

    fn predict(&self, _: &()) -> Result<Prediction, Self::Error> {
        Ok(Prediction::class("ok").with_confidence(0.9))
    }
}

#[test]
fn with_the_server_down_predict_works_drops_are_counted_and_shipping_resumes() {
    let port = free_port();
    let queue_capacity = 100;
    let batch_size = 50;
    let shipper = Shipper::builder(format!("http://127.0.0.1:{port}"))
        .queue_capacity(queue_capacity)
        .batch_size(batch_size)
        .flush_interval(Duration::from_millis(10))
        .backoff(Duration::from_millis(10), Duration::from_millis(100))
        .start()
        .expect("start the shipper");
    let metrics = Metrics::new();
    let mut registry = metrics.registry();
    shipper.register(&mut registry);
    let predictor = MonitoredPredictor::builder(Constant, "always_ok", "v1")
        .metrics(&metrics)
        .shipper(&shipper)
        .build();

    // Nothing listens on the port: every prediction still succeeds, and
    // returns without waiting for the network.
    let calls = 2_000;
    let started = Instant::now();
    for _ in 0..calls {
        predictor.predict(&()).expect("the model answers");
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(2),
        "{calls} predictions took {elapsed:?}"
    );
    assert!(
        support::wait_until(DEADLINE, || shipper.stats().retries >= 2),
        "no retries"
    );

    // At most the queue and the batch being retried are kept.
    let dropped = shipper.stats().predictions_dropped;
    assert!(
        dropped >= calls - (queue_capacity + batch_size) as u64,
        "only {dropped} of {calls} dropped"
    );
    let text = encode_text(&registry);
    let drop_line =
        format!(r#"modelwatch_sdk_events_dropped_total{{kind="prediction",reason="queue_full"}} {dropped}"#);
    assert!(text.contains(&drop_line), "missing {drop_line} in\n{text}");
    assert!(text.contains(r#"ml_prediction_requests_total{model_name="always_ok",model_version="v1"} 2000"#));

    // The server comes up on that port: the retried batch and the queue go
    // through, then new predictions flow again.
    let data = tempfile::tempdir().expect("temp dir");
    let server = TestServer::start(port, data.path());
    assert!(shipper.flush(DEADLINE), "shipping did not resume");
    let kept = calls - dropped;
    assert_eq!(shipper.stats().predictions_sent, kept);
    let operations = server.get_json("/v1/models/always_ok/operations?window=1h");
    assert_eq!(operations["requests"], kept, "{operations}");

    for _ in 0..10 {
        predictor.predict(&()).expect("the model answers");
    }
    assert!(shipper.flush(DEADLINE));
    let operations = server.get_json("/v1/models/always_ok/operations?window=1h");
    assert_eq!(operations["requests"], kept + 10, "{operations}");
    assert_eq!(
        shipper.stats().predictions_dropped,
        dropped,
        "nothing dropped once the server is up"
    );
}

#[test]
fn shutdown_gives_up_at_its_deadline_and_counts_the_rest() {
    let port = free_port();
    let shipper = Shipper::builder(format!("http://127.0.0.1:{port}"))
        .backoff(Duration::from_millis(10), Duration::from_millis(50))
        .start()
        .expect("start the shipper");
    let predictor = MonitoredPredictor::builder(Constant, "orphan", "v1")
        .metrics(&Metrics::new())
        .shipper(&shipper)
        .build();
    for _ in 0..25 {
        predictor.predict(&()).expect("the model answers");
    }
    let started = Instant::now();
    let stats = shipper.shutdown(Duration::from_millis(300));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "shutdown took {:?}",
        started.elapsed()
    );
    assert_eq!(stats.predictions_dropped, 25, "{stats:?}");
    // After shutdown, predictions still work; their events are counted as dropped.
    predictor.predict(&()).expect("the model answers");
    assert_eq!(shipper.stats().predictions_dropped, 26);
}
