//! `modelwatch demo` at high speed: the injected degradation makes the
//! expected alerts fire, the remediation webhooks reach the demo's receiver,
//! and what happened is in the data directory afterwards.

mod support;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Server, free_port};

/// 4 simulated hours at 600x: 24 s of wall time.
const SPEED: &str = "600";
const DURATION: &str = "4h";
const DEADLINE: Duration = Duration::from_secs(120);

#[test]
fn the_demo_degrades_and_the_expected_alerts_fire_and_call_their_webhooks() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_modelwatch"))
        .args([
            "demo",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--speed",
            SPEED,
            "--duration",
            DURATION,
        ])
        .arg("--data")
        .arg(&data)
        .env("MODELWATCH_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start modelwatch demo");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > DEADLINE {
            let _ = child.kill();
            panic!("the demo did not stop after its simulated {DURATION}");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut stdout = String::new();
    let mut stderr = String::new();
    child.stdout.take().unwrap().read_to_string(&mut stdout).unwrap();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert!(status.success(), "demo failed:\n{stdout}\n{stderr}");

    // What a newcomer reads first: where the dashboard is.
    assert!(
        stdout.contains(&format!("dashboard:  http://127.0.0.1:{port}/")),
        "{stdout}\n{stderr}"
    );
    for alert in ["MLModelHighLatency", "MLModelAccuracyDrop", "MLModelDataDrift"] {
        assert!(
            stdout.contains(&format!("alert firing: {alert}")),
            "{alert} did not fire:\n{stdout}\n{stderr}"
        );
    }
    // The receiver inside the demo logged the remediation calls.
    assert!(
        stdout.contains("receiver: remediation rollback called"),
        "{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("receiver: remediation retrain called"),
        "{stdout}\n{stderr}"
    );
    // Nothing fired before the degradation but the SLO burn of the
    // accuracy objective: the healthy first two hours are quiet. (When the
    // machine is too busy for the speed, the demo's stderr says how far its
    // traffic fell behind the simulated clock.)
    let degradation = stdout
        .find("degradation injected")
        .expect("degradation announced");
    for quiet in [
        "MLModelHighLatency",
        "MLModelAccuracyDrop",
        "MLModelDataDrift",
        "MLModelDown",
    ] {
        assert!(
            !stdout[..degradation].contains(&format!("alert firing: {quiet}")),
            "{quiet} fired before the degradation:\n{stdout}\n{stderr}"
        );
    }

    // The data directory keeps it all: served again, history and audit log
    // show the alerts and the delivered calls.
    let server = Server::start(&data);
    let (status, _, body) = server.get("/v1/alerts/history?limit=500");
    assert_eq!(status, 200, "{body}");
    let history: Value = serde_json::from_str(&body).unwrap();
    let fired: Vec<&str> = history["entries"]
        .as_array()
        .expect("history entries")
        .iter()
        .filter(|entry| entry["to"] == "firing")
        .filter_map(|entry| entry["alert"]["name"].as_str())
        .collect();
    for alert in ["MLModelHighLatency", "MLModelAccuracyDrop", "MLModelDataDrift"] {
        assert!(
            fired.iter().any(|name| name.starts_with(alert)),
            "{alert} not in {body}"
        );
    }
    let (status, _, body) = server.get("/v1/remediations");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("rollback") && body.contains("retrain"), "{body}");
    assert!(body.contains("\"delivered\""), "{body}");
    // The baseline the demo froze is there too.
    let (status, _, body) = server.get("/v1/models/fraud_detector/baseline");
    assert_eq!(status, 200, "{body}");
}
