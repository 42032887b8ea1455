//! The Rust SDK against the real `modelwatch` binary: predictions and labels
//! shipped by a `MonitoredPredictor` show up in the server's figures, and
//! while the server is down `predict()` keeps answering, and shipping
//! resumes once the server is back. (`crates/sdk/tests` run the same server
//! code in-process; this runs the binary a user runs.)

mod support;

use std::time::Duration;

use modelwatch_sdk::{Metrics, Model, MonitoredPredictor, Prediction, Shipper};
use serde_json::Value;
use support::{Server, free_port};

const DEADLINE: Duration = Duration::from_secs(30);

/// Predicts fraud (class "1") for amounts above 100.
struct Threshold;

impl Model for Threshold {
    type Input = f64;
    type Error = std::convert::Infallible;

    fn predict(&self, amount: &f64) -> Result<Prediction, Self::Error> {
        let fraud = (amount / 200.0).min(0.99);
        Ok(Prediction::from_probabilities([("0", 1.0 - fraud), ("1", fraud)]).expect("two probabilities"))
    }
}

fn json(server: &Server, path: &str) -> Value {
    let (status, _, body) = server.get(path);
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

#[test]
fn sdk_predictions_and_labels_reach_the_binary() {
    let directory = tempfile::tempdir().unwrap();
    let server = Server::start(directory.path());
    let shipper = Shipper::builder(format!("http://{}", server.address()))
        .flush_interval(Duration::from_millis(20))
        .start()
        .expect("start the shipper");
    let metrics = Metrics::new();
    let predictor = MonitoredPredictor::builder(Threshold, "fraud_detector", "v3")
        .metrics(&metrics)
        .shipper(&shipper)
        .build();
    // Amounts 10, 30, ..., 390; the truth is fraud above 150, so the model is
    // wrong on 110, 130 and 150.
    let mut correct = 0;
    for step in 0..20 {
        let amount = f64::from(step) * 20.0 + 10.0;
        let predicted = predictor.predict(&amount).unwrap();
        let actual = if amount > 150.0 { "1" } else { "0" };
        correct += usize::from(predicted.prediction.predicted_class() == Some(actual));
        assert!(shipper.report_label(predicted.id, actual));
    }
    assert!(shipper.flush(DEADLINE), "not delivered in time");
    let operations = json(&server, "/v1/models/fraud_detector/operations?window=1h");
    assert_eq!(operations["requests"], 20, "{operations}");
    let performance = json(&server, "/v1/models/fraud_detector/performance?window=1h");
    assert_eq!(performance["sample_size"], 20, "{performance}");
    assert_eq!(correct, 17);
    let accuracy = performance["accuracy"].as_f64().unwrap();
    assert!((accuracy - 17.0 / 20.0).abs() < 1e-12, "{performance}");
    assert_eq!(shipper.shutdown(Duration::from_secs(5)).dropped(), 0);
}

#[test]
fn with_the_binary_down_predict_answers_and_shipping_resumes() {
    let directory = tempfile::tempdir().unwrap();
    let port = free_port();
    let shipper = Shipper::builder(format!("http://127.0.0.1:{port}"))
        .flush_interval(Duration::from_millis(20))
        .start()
        .expect("start the shipper");
    let predictor = MonitoredPredictor::builder(Threshold, "fraud_detector", "v3")
        .shipper(&shipper)
        .build();
    for step in 0..50 {
        predictor
            .predict(&f64::from(step))
            .expect("predict works with the server down");
    }
    // The shipper has tried and failed at least once before the server starts.
    let tried = std::time::Instant::now();
    while shipper.stats().retries == 0 && tried.elapsed() < DEADLINE {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(shipper.stats().retries > 0, "{:?}", shipper.stats());
    let server = Server::builder(directory.path()).port(port).start();
    assert!(shipper.flush(DEADLINE), "shipping did not resume");
    let stats = shipper.stats();
    let operations = json(&server, "/v1/models/fraud_detector/operations?window=1h");
    assert_eq!(
        operations["requests"].as_u64(),
        Some(stats.predictions_sent),
        "{operations} {stats:?}"
    );
    // The queue (65,536 events by default) held all 50 while the server was down.
    assert_eq!((stats.predictions_sent, stats.dropped()), (50, 0), "{stats:?}");
}
