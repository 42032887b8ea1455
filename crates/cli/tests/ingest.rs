//! End-to-end tests of ingestion on the real binary over loopback: bad input
//! answered per row, duplicates, out-of-order events, cardinality limits,
//! backpressure, and durability across `kill -9` and graceful restarts.

mod support;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use support::{Server, unix_now_ms};

fn event(id: &str, model: &str, timestamp_s: f64, class: &str, latency: f64) -> String {
    json!({
        "prediction_id": id, "model": model, "version": "v1", "timestamp": timestamp_s,
        "latency_seconds": latency, "prediction": class,
        "probabilities": {"0": if class == "0" { 0.8 } else { 0.2 }, "1": if class == "1" { 0.8 } else { 0.2 }},
        "features": {"amount": 10.0, "country": "DE"}
    })
    .to_string()
}

fn now_s() -> f64 {
    unix_now_ms() as f64 / 1000.0
}

fn write_config(dir: &Path, yaml: &str) -> String {
    let path = dir.join("modelwatch.yaml");
    std::fs::write(&path, yaml).unwrap();
    path.display().to_string()
}

fn operations(server: &Server, model: &str, query: &str) -> Value {
    let (status, _, body) = server.get(&format!("/v1/models/{model}/operations?{query}"));
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// Decodes every stored event and counts them per predicted class.
fn stored_class_counts(data_dir: &Path) -> std::collections::BTreeMap<String, u64> {
    let store = modelwatch_store::SqliteStore::open(data_dir, modelwatch_store::Synchronous::Normal).unwrap();
    let names = modelwatch_core::codec::Dictionary::from_names(store.load_names().unwrap());
    let mut counts = std::collections::BTreeMap::new();
    store
        .scan_predictions(|row| {
            let (event, _) = modelwatch_core::codec::decode(row.prediction_id, row.body, &names).unwrap();
            if let Some(modelwatch_core::event::Prediction::Class(class)) = event.prediction {
                *counts.entry(class).or_default() += 1;
            }
            Ok(())
        })
        .unwrap();
    counts
}

/// The batches acknowledged so far, and the threads posting them.
type Posting = (Arc<Mutex<Vec<usize>>>, Vec<std::thread::JoinHandle<()>>);

/// Posts `batches` from three threads (each batch fully accepted) until the
/// server stops answering; returns the indexes acknowledged so far and the
/// threads.
fn post_until_killed(server: &Server, path: &'static str, batches: &Arc<Vec<Vec<String>>>) -> Posting {
    let acknowledged = Arc::new(Mutex::new(Vec::<usize>::new()));
    let address = server.address();
    let writers = (0..3)
        .map(|writer| {
            let (batches, acknowledged, address) = (batches.clone(), acknowledged.clone(), address.clone());
            std::thread::spawn(move || {
                let client = support::http_client();
                for index in (writer..batches.len()).step_by(3) {
                    let response = client
                        .post(format!("http://{address}{path}"))
                        .header("content-type", "application/x-ndjson")
                        .body(batches[index].join("\n"))
                        .send();
                    match response {
                        Ok(response) if response.status() == 200 => {
                            let answer: Value = response.json().unwrap();
                            assert_eq!(
                                answer["accepted"].as_u64(),
                                Some(batches[index].len() as u64),
                                "{answer}"
                            );
                            acknowledged.lock().unwrap().push(index);
                        }
                        // The server died under us: stop writing.
                        _ => return,
                    }
                }
            })
        })
        .collect();
    (acknowledged, writers)
}

fn sqlite_prediction_count(data_dir: &Path) -> u64 {
    let connection = rusqlite::Connection::open(data_dir.join("modelwatch.db")).unwrap();
    connection
        .query_row("SELECT count(*) FROM predictions", [], |row| row.get::<_, i64>(0))
        .unwrap() as u64
}

/// Each bad row gets its own rejection naming the field and the reason; the
/// good rows of the same batch are stored; the server stays up.
#[test]
fn bad_rows_are_rejected_with_field_and_reason_and_good_rows_kept() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let now = now_s();
    let cases: Vec<(String, &str, Option<&str>)> = vec![
        ("this is not json".into(), "malformed_json", None),
        (
            r#"{"prediction_id":"b1","model":"m","latency_seconds":"fast"}"#.into(),
            "invalid_type",
            Some("latency_seconds"),
        ),
        (
            r#"{"prediction_id":"b2","model":"m","latency_seconds":NaN}"#.into(),
            "malformed_json",
            Some("latency_seconds"),
        ),
        (
            r#"{"prediction_id":"b3","model":"m","latency_seconds":-0.5}"#.into(),
            "invalid_value",
            Some("latency_seconds"),
        ),
        (
            r#"{"prediction_id":"b4","model":"m","timestamp":"2099-01-01T00:00:00Z"}"#.into(),
            "invalid_value",
            Some("timestamp"),
        ),
        (
            format!(r#"{{"prediction_id":"{}","model":"m"}}"#, "x".repeat(300)),
            "too_long",
            Some("prediction_id"),
        ),
        (
            r#"{"prediction_id":"b6","model":"m","colour":"red"}"#.into(),
            "unknown_field",
            Some("colour"),
        ),
        (r#"{"prediction_id":"b7"}"#.into(), "missing_field", Some("model")),
        (
            r#"{"prediction_id":"b8","model":"m","status":"error"}"#.into(),
            "missing_field",
            Some("error_type"),
        ),
        (
            r#"{"prediction_id":"b9","model":"m","probabilities":{"0":-0.5,"1":1.5}}"#.into(),
            "invalid_value",
            Some("probabilities.0"),
        ),
        (
            r#"{"prediction_id":"b10","model":"m","features":{"amount":[1,2]}}"#.into(),
            "invalid_type",
            Some("features.amount"),
        ),
        (
            r#"{"prediction_id":"b11","model":"m","features":{"amount":"NaN"},"prediction":1e999}"#.into(),
            "malformed_json",
            Some("prediction"),
        ),
    ];
    let mut lines = vec![event("good-0", "m", now, "1", 0.02)];
    lines.extend(cases.iter().map(|(line, _, _)| line.clone()));
    lines.push(event("good-1", "m", now, "0", 0.03));
    let (status, answer) = server.post_ndjson("/v1/predictions", &lines);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["accepted"], 2, "{answer}");
    let rejected = answer["rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), cases.len(), "{answer}");
    for ((line, code, field), rejection) in cases.iter().zip(rejected) {
        let error = &rejection["error"];
        assert_eq!(error["code"], *code, "{line} -> {rejection}");
        assert_eq!(error["field"].as_str(), *field, "{line} -> {rejection}");
        let message = error["message"].as_str().unwrap();
        assert!(!message.is_empty() && !message.ends_with('.'), "{message}");
    }
    let indexes: Vec<u64> = rejected.iter().map(|r| r["index"].as_u64().unwrap()).collect();
    assert_eq!(indexes, (1..=cases.len() as u64).collect::<Vec<_>>());

    // A batch with nothing valid is a 422 as a whole, with the same shape.
    let (status, answer) = server.post_ndjson("/v1/predictions", &[cases[1].0.clone()]);
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["accepted"], 0);

    // Whole-body errors.
    let (status, _, body) = server.post_raw("/v1/predictions", "application/json", b"[{\"a\":1},".to_vec());
    assert_eq!(status, 400, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"]["code"], "malformed_body");
    assert_eq!(body["error"]["field"], "body");
    let (status, _, body) = server.post_raw("/v1/predictions", "text/csv", b"a,b\n".to_vec());
    assert_eq!(status, 415, "{body}");
    assert!(body.contains("unsupported_media_type"));
    // `curl -d` labels JSON as a form: it is read as JSON.
    let (status, _, body) = server.post_raw(
        "/v1/predictions",
        "application/x-www-form-urlencoded",
        br#"[{"prediction_id":"form-1","model":"m"}]"#.to_vec(),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["accepted"], 1);

    assert_eq!(server.get("/readyz").0, 200);
    assert_eq!(operations(&server, "m", "window=1h")["requests"], 3);
}

#[test]
fn oversized_bodies_get_413_with_a_json_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "ingest:\n  max_body_bytes: 2000\n");
    let server = Server::builder(&dir.path().join("data"))
        .arg("--config")
        .arg(config)
        .start();
    let lines: Vec<String> = (0..40)
        .map(|i| event(&format!("p{i}"), "m", now_s(), "1", 0.01))
        .collect();
    let (status, answer) = server.post_ndjson("/v1/predictions", &lines);
    assert_eq!(status, 413, "{answer}");
    assert_eq!(answer["error"]["code"], "body_too_large");
    assert_eq!(answer["error"]["field"], "body");
    assert_eq!(server.get("/readyz").0, 200);
    let (status, _) = server.post_ndjson("/v1/predictions", &lines[..2]);
    assert_eq!(status, 200);
}

#[test]
fn query_parameters_and_unknown_models_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    server.post_ndjson("/v1/predictions", &[event("q1", "m", now_s(), "1", 0.01)]);
    let check = |path: &str, status: u16, code: &str, field: &str| {
        let (got, _, body) = server.get(path);
        assert_eq!(got, status, "{path}: {body}");
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["error"]["code"], code, "{path}: {body}");
        assert_eq!(body["error"]["field"], field, "{path}: {body}");
    };
    check("/v1/models/nope/operations", 404, "unknown_model", "model");
    check(
        "/v1/models/m/operations?window=5x",
        400,
        "invalid_parameter",
        "window",
    );
    check(
        "/v1/models/m/operations?end=yesterday",
        400,
        "invalid_parameter",
        "end",
    );
    check("/v1/models/m/features?version=v9", 404, "not_found", "version");
}

#[test]
fn duplicates_are_acknowledged_but_counted_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let now = now_s();
    let lines: Vec<String> = (0..50)
        .map(|i| event(&format!("d{i}"), "m", now, "1", 0.01))
        .collect();
    let (status, first) = server.post_ndjson("/v1/predictions", &lines);
    assert_eq!(
        (status, first["accepted"].clone(), first["duplicates"].clone()),
        (200, json!(50), json!(0))
    );
    // A retry of the same batch, plus duplicates inside one batch.
    let mut retry = lines.clone();
    retry.push(event("d-new", "m", now, "0", 0.01));
    retry.push(event("d-new", "m", now, "0", 0.01));
    let (status, second) = server.post_ndjson("/v1/predictions", &retry);
    assert_eq!(status, 200);
    assert_eq!(second["accepted"], 52, "{second}");
    assert_eq!(second["duplicates"], 51, "{second}");
    assert_eq!(operations(&server, "m", "window=1h")["requests"], 51);
    let (_, _, metrics) = server.get("/metrics");
    assert!(
        metrics.contains("ml_prediction_requests_total{model_name=\"m\",model_version=\"v1\"} 51"),
        "{metrics}"
    );
    assert!(
        metrics.contains("modelwatch_events_duplicate_total 51"),
        "{metrics}"
    );
}

/// Events arrive in any order; each lands in the bucket of its own event time.
#[test]
fn out_of_order_events_land_in_their_event_time_windows() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    // Minute-aligned base an hour ago; events at minutes 0..30, sent shuffled.
    let base_s = ((unix_now_ms() / 1000 - 3600) / 60 * 60) as f64;
    let mut minutes: Vec<u32> = (0..30).flat_map(|minute| [minute, minute]).collect();
    let mut state = 12345u64;
    for index in (1..minutes.len()).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        minutes.swap(index, (state % (index as u64 + 1)) as usize);
    }
    let lines: Vec<String> = minutes
        .iter()
        .enumerate()
        .map(|(i, minute)| {
            event(
                &format!("o{i}"),
                "m",
                base_s + *minute as f64 * 60.0 + 5.0,
                "1",
                0.01,
            )
        })
        .collect();
    for chunk in lines.chunks(7) {
        assert_eq!(server.post_ndjson("/v1/predictions", chunk).0, 200);
    }
    // The 10 minutes [base+10m, base+20m) hold 20 events.
    let end = base_s as i64 + 20 * 60;
    let answer = operations(&server, "m", &format!("window=10m&end={end}"));
    assert_eq!(answer["requests"], 20, "{answer}");
    let rfc3339_end = answer["end"].as_str().unwrap().to_owned();
    let answer = operations(&server, "m", &format!("window=10m&end={rfc3339_end}"));
    assert_eq!(answer["requests"], 20, "{answer}");
    assert_eq!(
        operations(&server, "m", &format!("window=1h&end={}", base_s as i64 + 3600))["requests"],
        60
    );
}

#[test]
fn cardinality_limits_fold_into_other_and_refuse_extra_models() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "limits:\n  max_models: 2\n  max_classes_per_model: 3\n  max_categories_per_feature: 2\n",
    );
    let server = Server::builder(&dir.path().join("data"))
        .arg("--config")
        .arg(config)
        .start();
    let now = now_s();
    let lines: Vec<String> = (0..10)
        .map(|i| {
            json!({"prediction_id": format!("c{i}"), "model": "m", "prediction": format!("class{i}"),
                   "confidence": 0.9, "timestamp": now, "features": {"country": format!("country{i}")}})
            .to_string()
        })
        .collect();
    let (status, answer) = server.post_ndjson("/v1/predictions", &lines);
    assert_eq!((status, answer["accepted"].clone()), (200, json!(10)), "{answer}");
    let (_, _, metrics) = server.get("/metrics");
    let class_lines: Vec<&str> = metrics
        .lines()
        .filter(|line| line.starts_with("ml_prediction_class_total{"))
        .collect();
    assert_eq!(class_lines.len(), 4, "{metrics}");
    assert!(metrics.contains("ml_prediction_class_total{model_name=\"m\",predicted_class=\"__other__\"} 7"));
    assert!(metrics.contains("modelwatch_cardinality_folded_total{model_name=\"m\",dimension=\"class\"} 7"));
    assert!(
        metrics.contains("modelwatch_cardinality_folded_total{model_name=\"m\",dimension=\"category\"} 8")
    );

    // A regression model's output must stay numeric.
    let (status, answer) = server.post_ndjson(
        "/v1/predictions",
        &[json!({"prediction_id": "r1", "model": "reg", "prediction": 3.5, "timestamp": now}).to_string()],
    );
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = server.post_ndjson(
        "/v1/predictions",
        &[
            json!({"prediction_id": "r2", "model": "reg", "prediction": "a", "timestamp": now}).to_string(),
            json!({"prediction_id": "x1", "model": "third", "prediction": "a", "timestamp": now}).to_string(),
        ],
    );
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["rejected"][0]["error"]["code"], "refused");
    assert_eq!(answer["rejected"][0]["error"]["field"], "prediction");
    assert_eq!(answer["rejected"][1]["error"]["field"], "model");
    assert!(
        answer["rejected"][1]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("model limit")
    );
}

/// With a tiny write queue, concurrent writers get 429 with Retry-After, and
/// exactly the acknowledged events are counted.
#[test]
fn a_full_write_queue_answers_429_and_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "ingest:\n  max_queued_events: 1\n");
    let server = Arc::new(
        Server::builder(&dir.path().join("data"))
            .arg("--config")
            .arg(config)
            .start(),
    );
    let acknowledged = Arc::new(AtomicU64::new(0));
    let overloaded = Arc::new(AtomicU64::new(0));
    let retry_after_seen = Arc::new(AtomicBool::new(false));
    let now = now_s();
    let threads: Vec<_> = (0..8)
        .map(|thread| {
            let (server, acknowledged, overloaded, retry_after_seen) = (
                server.clone(),
                acknowledged.clone(),
                overloaded.clone(),
                retry_after_seen.clone(),
            );
            std::thread::spawn(move || {
                for batch in 0..15 {
                    let lines: Vec<String> = (0..200)
                        .map(|i| event(&format!("t{thread}-{batch}-{i}"), "m", now, "1", 0.01))
                        .collect();
                    let body = lines.join("\n").into_bytes();
                    let (status, headers, answer) =
                        server.post_raw("/v1/predictions", "application/x-ndjson", body);
                    match status {
                        200 => {
                            let answer: Value = serde_json::from_str(&answer).unwrap();
                            acknowledged.fetch_add(answer["accepted"].as_u64().unwrap(), Ordering::Relaxed);
                        }
                        429 => {
                            overloaded.fetch_add(1, Ordering::Relaxed);
                            if headers.get("retry-after").is_some() && answer.contains("\"overloaded\"") {
                                retry_after_seen.store(true, Ordering::Relaxed);
                            }
                        }
                        other => panic!("unexpected status {other}: {answer}"),
                    }
                }
            })
        })
        .collect();
    threads.into_iter().for_each(|thread| thread.join().unwrap());
    assert!(
        overloaded.load(Ordering::Relaxed) > 0,
        "no request was ever refused with 429"
    );
    assert!(
        retry_after_seen.load(Ordering::Relaxed),
        "429 answers lacked Retry-After or the error code"
    );
    let acknowledged = acknowledged.load(Ordering::Relaxed);
    assert!(acknowledged > 0);
    assert_eq!(operations(&server, "m", "window=1h")["requests"], acknowledged);
}

/// `kill -9` while writers are busy: after restart every acknowledged event
/// is counted, and resending everything counts nothing twice.
#[test]
fn kill_9_mid_ingest_loses_nothing_acknowledged_and_counts_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = Server::start(&data);
    let now = now_s();
    let batches: Vec<Vec<String>> = (0..400)
        .map(|batch| {
            (0..250)
                .map(|i| {
                    event(
                        &format!("k{batch}-{i}"),
                        "m",
                        now,
                        if i % 3 == 0 { "0" } else { "1" },
                        0.02,
                    )
                })
                .collect()
        })
        .collect();
    let batches = Arc::new(batches);
    let (acknowledged, writers) = post_until_killed(&server, "/v1/predictions", &batches);
    assert!(
        support::wait_until(std::time::Duration::from_secs(60), || acknowledged
            .lock()
            .unwrap()
            .len()
            >= 30),
        "writers never got 30 batches acknowledged"
    );
    server.kill9();
    writers.into_iter().for_each(|writer| writer.join().unwrap());
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(
        acknowledged.len() < batches.len(),
        "the kill came too late to interrupt ingestion"
    );

    server.restart();
    let stored = sqlite_prediction_count(&data);
    let counted = operations(&server, "m", "window=1d")["requests"]
        .as_u64()
        .unwrap();
    assert_eq!(
        counted, stored,
        "aggregates disagree with the raw events after recovery"
    );
    assert!(
        stored >= acknowledged.len() as u64 * 250,
        "acknowledged events were lost"
    );
    assert_eq!(stored % 250, 0, "a batch was stored in part");
    let (_, _, metrics) = server.get("/metrics");
    for (class, count) in stored_class_counts(&data) {
        let line =
            format!("ml_prediction_class_total{{model_name=\"m\",predicted_class=\"{class}\"}} {count}");
        assert!(
            metrics.contains(&line),
            "recovered aggregates disagree with the stored events: {line}\n{metrics}"
        );
    }

    // Resend everything: only what was never stored is new.
    let mut duplicates = 0;
    for batch in batches.iter() {
        let (status, answer) = server.post_ndjson("/v1/predictions", batch);
        assert_eq!(status, 200, "{answer}");
        duplicates += answer["duplicates"].as_u64().unwrap();
    }
    assert_eq!(duplicates, stored);
    let total = (batches.len() * 250) as u64;
    assert_eq!(operations(&server, "m", "window=1d")["requests"], total);
    assert_eq!(sqlite_prediction_count(&data), total);
    let (_, _, metrics) = server.get("/metrics");
    assert!(metrics.contains(&format!(
        "ml_prediction_requests_total{{model_name=\"m\",model_version=\"v1\"}} {total}"
    )));
}

/// SIGTERM drains and exits cleanly; every answer is the same after restart.
#[test]
fn graceful_restart_rebuilds_identical_answers() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path());
    let now = now_s();
    let lines: Vec<String> = (0..300)
        .map(|i| {
            let mut value: Value = serde_json::from_str(&event(
                &format!("g{i}"),
                "m",
                now - (i % 120) as f64 * 60.0,
                if i % 4 == 0 { "0" } else { "1" },
                0.001 * i as f64,
            ))
            .unwrap();
            if i % 10 == 0 {
                value["status"] = json!("error");
                value["error_type"] = json!("ValueError");
            }
            if i % 7 == 0 {
                value["features"]["amount"] = Value::Null;
            }
            value.to_string()
        })
        .collect();
    assert_eq!(server.post_ndjson("/v1/predictions", &lines).0, 200);
    let end = (now as i64) + 60;
    let paths = [
        format!("/v1/models/m/operations?window=3h&end={end}"),
        format!("/v1/models/m/predictions?window=3h&end={end}"),
        format!("/v1/models/m/features?window=3h&end={end}"),
        format!("/v1/models/m/operations?window=10m&end={end}&version=v1"),
        "/v1/models".to_owned(),
    ];
    let before: Vec<String> = paths.iter().map(|path| server.get(path).2).collect();
    let features: Value = serde_json::from_str(&before[2]).unwrap();
    assert_eq!(features["rows"], 300);
    assert_eq!(features["features"]["amount"]["missing"], 43);
    let status = server.stop();
    assert!(status.success(), "modelwatch exited with {status} on SIGTERM");
    server.restart();
    let after: Vec<String> = paths.iter().map(|path| server.get(path).2).collect();
    for ((path, before), after) in paths.iter().zip(&before).zip(&after) {
        let (before, after): (Value, Value) = (
            serde_json::from_str(before).unwrap(),
            serde_json::from_str(after).unwrap(),
        );
        assert_eq!(before, after, "{path} changed across a restart");
    }
}

#[test]
fn check_validates_config_files() {
    let dir = tempfile::tempdir().unwrap();
    let good = write_config(dir.path(), "aggregation:\n  minute_retention: 2h\n");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_modelwatch"))
        .args(["check", "--config", &good])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "ingest:\n  max_body_byte: 5\n").unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_modelwatch"))
        .args(["check", "--config", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("max_body_byte"), "{stderr}");
}

fn performance(server: &Server, model: &str, query: &str) -> Value {
    let (status, _, body) = server.get(&format!("/v1/models/{model}/performance?{query}"));
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// The ids of the stored labels.
fn stored_label_ids(data_dir: &Path) -> Vec<String> {
    let connection = rusqlite::Connection::open(data_dir.join("modelwatch.db")).unwrap();
    let mut statement = connection.prepare("SELECT prediction_id FROM labels").unwrap();
    statement
        .query_map([], |row| row.get::<_, String>(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// Labels are durable like predictions: after `kill -9` mid-ingest, every
/// acknowledged label is stored and counted once, the quality aggregates
/// match the stored labels, and a resend counts nothing twice.
#[test]
fn kill_9_mid_label_ingest_loses_no_acknowledged_label() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = Server::start(&data);
    let now = now_s();
    let class_of = |index: usize| if index.is_multiple_of(3) { "0" } else { "1" };
    for batch in 0..20 {
        let lines: Vec<String> = (0..2_500)
            .map(|i| {
                let index = batch * 2_500 + i;
                event(&format!("k{index}"), "m", now - 60.0, class_of(index), 0.02)
            })
            .collect();
        let (status, answer) = server.post_ndjson("/v1/predictions", &lines);
        assert_eq!(
            (status, answer["accepted"].as_u64()),
            (200, Some(2_500)),
            "{answer}"
        );
    }
    // Labels in shuffled batches: every prediction is labeled "1".
    let batches: Vec<Vec<String>> = (0..200)
        .map(|batch| {
            (0..250)
                .map(|i| {
                    let index = i * 200 + batch;
                    json!({"prediction_id": format!("k{index}"), "actual": "1", "business": {"revenue": 2.0}})
                        .to_string()
                })
                .collect()
        })
        .collect();
    let batches = Arc::new(batches);
    let (acknowledged, writers) = post_until_killed(&server, "/v1/labels", &batches);
    assert!(
        support::wait_until(std::time::Duration::from_secs(60), || acknowledged
            .lock()
            .unwrap()
            .len()
            >= 10),
        "writers never got 10 label batches acknowledged"
    );
    server.kill9();
    writers.into_iter().for_each(|writer| writer.join().unwrap());
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(
        acknowledged.len() < batches.len(),
        "the kill came too late to interrupt ingestion"
    );

    server.restart();
    let stored = stored_label_ids(&data);
    let stored_set: std::collections::HashSet<&String> = stored.iter().collect();
    for batch in &acknowledged {
        for line in &batches[*batch] {
            let id = serde_json::from_str::<Value>(line).unwrap()["prediction_id"]
                .as_str()
                .unwrap()
                .to_owned();
            assert!(stored_set.contains(&id), "acknowledged label {id} was lost");
        }
    }
    assert_eq!(stored.len() % 250, 0, "a label batch was stored in part");
    let quality = performance(&server, "m", "window=1d");
    assert_eq!(
        quality["sample_size"].as_u64(),
        Some(stored.len() as u64),
        "the quality aggregates disagree with the stored labels after recovery: {quality}"
    );
    let correct = stored
        .iter()
        .filter(|id| class_of(id[1..].parse().unwrap()) == "1")
        .count();
    let accuracy = quality["accuracy"].as_f64().unwrap();
    assert!(
        (accuracy - correct as f64 / stored.len() as f64).abs() < 1e-12,
        "{quality}"
    );
    assert_eq!(
        quality["business"]["revenue"]["sum"].as_f64(),
        Some(2.0 * stored.len() as f64)
    );

    // Resend everything (50 batches a request): what was stored is a
    // duplicate, the rest is new.
    let mut duplicates = 0;
    for chunk in batches.chunks(50) {
        let lines: Vec<String> = chunk.iter().flatten().cloned().collect();
        let (status, answer) = server.post_ndjson("/v1/labels", &lines);
        assert_eq!(status, 200, "{answer}");
        duplicates += answer["duplicates"].as_u64().unwrap();
    }
    assert_eq!(duplicates, stored.len() as u64);
    let quality = performance(&server, "m", "window=1d");
    assert_eq!(quality["sample_size"].as_u64(), Some(50_000), "{quality}");
    assert_eq!(quality["label_coverage"].as_f64(), Some(1.0), "{quality}");
    let (_, _, metrics) = server.get("/metrics");
    assert!(
        metrics.contains("ml_prediction_labeled_total{model_name=\"m\",model_version=\"v1\",predicted_class=\"1\",actual_class=\"1\"} 33333"),
        "{metrics}"
    );
}

/// Stored predictions older than the label horizon (against their model's
/// newest event) are deleted with their labels; their aggregates stay, and a
/// label that comes for one later finds nothing to join.
#[test]
fn predictions_past_the_label_horizon_are_pruned_but_stay_counted() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "labels:\n  horizon: 1d\n  prune_interval: 1s\n  early_label_ttl: 1h\n",
    );
    let data = dir.path().join("data");
    let server = Server::builder(&data).arg("--config").arg(config).start();
    let now = now_s();
    let old: Vec<String> = (0..100)
        .map(|i| event(&format!("old{i}"), "m", now - 3.0 * 86_400.0, "1", 0.02))
        .collect();
    let recent: Vec<String> = (0..100)
        .map(|i| event(&format!("new{i}"), "m", now - 3_600.0, "1", 0.02))
        .collect();
    for lines in [&old, &recent] {
        let (status, answer) = server.post_ndjson("/v1/predictions", lines);
        assert_eq!(
            (status, answer["accepted"].as_u64()),
            (200, Some(100)),
            "{answer}"
        );
    }
    // Label one old prediction before the pruning: its label goes with it.
    let (status, answer) = server.post_ndjson(
        "/v1/labels",
        &[json!({"prediction_id": "old0", "actual": "1"}).to_string()],
    );
    assert_eq!((status, answer["held"].as_u64()), (200, Some(0)), "{answer}");
    assert!(
        support::wait_until(std::time::Duration::from_secs(30), || sqlite_prediction_count(
            &data
        ) == 100),
        "the old predictions were not pruned: {} stored",
        sqlite_prediction_count(&data)
    );
    assert_eq!(
        stored_label_ids(&data),
        Vec::<String>::new(),
        "the pruned prediction's label stayed"
    );
    let (_, _, metrics) = server.get("/metrics");
    assert!(
        metrics.contains("modelwatch_predictions_pruned_total 100"),
        "{metrics}"
    );
    // The aggregates keep every event, and the label joined before pruning.
    assert_eq!(operations(&server, "m", "window=7d")["requests"], 200);
    assert_eq!(performance(&server, "m", "window=7d")["sample_size"], 1);
    // A label for a pruned prediction waits for it; one for a stored one joins.
    let labels = [
        json!({"prediction_id": "old1", "actual": "1"}).to_string(),
        json!({"prediction_id": "new1", "actual": "0"}).to_string(),
    ];
    let (status, answer) = server.post_ndjson("/v1/labels", &labels);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["held"], 1, "{answer}");
    assert_eq!(performance(&server, "m", "window=7d")["sample_size"], 2);
}
