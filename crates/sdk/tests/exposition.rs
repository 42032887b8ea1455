//! The SDK's `/metrics`, scraped over real HTTP from its built-in endpoint,
//! passes `promtool check metrics`, in text 0.0.4; OpenMetrics is served
//! when asked for.

mod support;

use std::borrow::Cow;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use modelwatch_sdk::{
    Failure, Fields, Metrics, MetricsServer, Model, MonitoredPredictor, OPENMETRICS_CONTENT_TYPE, Prediction,
    Shipper, TEXT_CONTENT_TYPE,
};

/// Classifies a number by its remainder; fails on multiples of 7, times out
/// on multiples of 11.
struct Remainder;

impl Model for Remainder {
    type Input = u32;
    type Error = &'static str;

    fn predict(&self, value: &u32) -> Result<Prediction, &'static str> {
        if value % 11 == 0 {
            return Err("timeout");
        }
        if value % 7 == 0 {
            return Err("divisible by seven");
        }
        let class: Cow<'static, str> = Cow::Owned(format!("class {}", value % 5));
        Ok(Prediction::class(class).with_confidence(0.5 + f64::from(value % 50) / 100.0))
    }

    fn describe(&self, value: &u32, fields: &mut Fields) {
        fields
            .number("value", f64::from(*value))
            .number("half", f64::from(*value) / 2.0);
    }

    fn failure(&self, error: &&'static str) -> Failure {
        match *error {
            "timeout" => Failure::Timeout,
            _ => Failure::Error(Cow::Borrowed("SevenError")),
        }
    }
}

fn promtool_check(text: &str) -> (bool, String) {
    let promtool = support::require_program("promtool", "apt-get install -y prometheus");
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let output = child.wait_with_output().expect("wait for promtool");
    let report =
        String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), report)
}

#[test]
fn the_built_in_endpoint_passes_promtool() {
    let metrics = Metrics::new();
    // A shipper to nowhere, so that its own metrics (drops included) are
    // exposed too.
    let shipper = Shipper::builder(format!("http://127.0.0.1:{}", support::free_port()))
        .queue_capacity(10)
        .start()
        .expect("start the shipper");
    let mut registry = metrics.registry();
    shipper.register(&mut registry);
    let endpoint = MetricsServer::start("127.0.0.1:0", Arc::new(registry)).expect("start the endpoint");
    let predictor = MonitoredPredictor::builder(Remainder, "remainder", "v1")
        .metrics(&metrics)
        .shipper(&shipper)
        .max_classes(3)
        .build();
    for value in 1..=200 {
        let _ = predictor.predict(&value);
    }

    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let url = format!("http://{}/metrics", endpoint.local_addr());
    let response = client.get(&url).send().expect("scrape");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], TEXT_CONTENT_TYPE);
    let text = response.text().expect("body");
    for expected in [
        "# TYPE ml_prediction_requests_total counter",
        r#"ml_prediction_requests_total{model_name="remainder",model_version="v1"} 200"#,
        r#"ml_prediction_latency_seconds_bucket{le="0.01",model_name="remainder"}"#,
        r#"ml_prediction_confidence_bucket{le="0.95",model_name="remainder",predicted_class="class 1"}"#,
        r#"ml_prediction_class_total{model_name="remainder",predicted_class="__other__"}"#,
        r#"ml_prediction_errors_total{model_name="remainder",error_type="timeout"} 18"#,
        r#"ml_prediction_errors_total{model_name="remainder",error_type="SevenError"} 26"#,
        r#"ml_feature_value{model_name="remainder",feature_name="value",statistic="max"} 200.0"#,
        r#"ml_feature_value{model_name="remainder",feature_name="half",statistic="min"} 0.5"#,
        "# TYPE modelwatch_sdk_events_dropped_total counter",
    ] {
        assert!(text.contains(expected), "missing {expected} in\n{text}");
    }
    let (passed, report) = promtool_check(&text);
    assert!(passed, "promtool check metrics failed:\n{report}\non\n{text}");

    let openmetrics = client
        .get(&url)
        .header("Accept", "application/openmetrics-text; version=1.0.0")
        .send()
        .expect("scrape");
    assert_eq!(openmetrics.headers()["content-type"], OPENMETRICS_CONTENT_TYPE);
    let openmetrics = openmetrics.text().expect("body");
    assert!(openmetrics.ends_with("# EOF\n"), "{openmetrics}");
    assert!(openmetrics.contains("# TYPE ml_prediction_requests counter"));

    let missing = client
        .get(format!("http://{}/nope", endpoint.local_addr()))
        .send()
        .expect("get");
    assert_eq!(missing.status(), 404);
    drop(endpoint);
    shipper.shutdown(Duration::from_millis(100));
}
