//! Notifications and remediation against real peers: Debian's Alertmanager,
//! and small HTTP receivers inside the test. The notifier is driven the way
//! the evaluator drives it (`Notifier::record` in an alert-store transaction,
//! with transitions from the core's `Tracker`), and delivered by the real
//! delivery thread from a real SQLite outbox.
//!
//! Needs Alertmanager (`apt-get install -y prometheus-alertmanager`).

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use modelwatch_core::alerting::{Alert, AlertState, Rule, Tracker, Transition};
use modelwatch_server::Config;
use modelwatch_server::notify::{self, Notifier};
use modelwatch_server::remediation::{AuditRecord, Decision};
use modelwatch_store::{AlertStore, OutboxEntry, SqliteStore, Synchronous};
use serde_json::Value;
use support::{free_port, http_client, require_program, unix_now_ms, wait_until};

const ALERTMANAGER_INSTALL: &str = "apt-get install -y prometheus-alertmanager";
const MINUTE_MS: i64 = 60_000;
/// How long a notification may take to come through Alertmanager (group_wait
/// and group_interval are 1s here).
const DELIVERY_DEADLINE: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------
// A tiny HTTP receiver
// ---------------------------------------------------------------------------

/// One request a [`Hook`] received.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    headers: BTreeMap<String, String>,
    body: Value,
}

/// An HTTP server on a loopback port that records every request and answers
/// each with the status in `status`.
struct Hook {
    port: u16,
    received: Arc<Mutex<Vec<Received>>>,
    status: Arc<AtomicU16>,
    stopping: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Hook {
    fn start() -> Hook {
        Hook::start_on(0)
    }

    fn start_on(port: u16) -> Hook {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .unwrap_or_else(|error| panic!("bind 127.0.0.1:{port} for the test receiver: {error}"));
        let port = listener.local_addr().unwrap().port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let status = Arc::new(AtomicU16::new(200));
        let stopping = Arc::new(AtomicBool::new(false));
        let thread = {
            let (received, status, stopping) = (received.clone(), status.clone(), stopping.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stopping.load(Ordering::Acquire) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    if let Some(request) = read_request(&stream) {
                        received.lock().unwrap().push(request);
                    }
                    let status = status.load(Ordering::Acquire);
                    let _ = (&stream).write_all(
                        format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                            .as_bytes(),
                    );
                }
            })
        };
        Hook {
            port,
            received,
            status,
            stopping,
            thread: Some(thread),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    fn answer_with(&self, status: u16) {
        self.status.store(status, Ordering::Release);
    }
}

impl Drop for Hook {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::Release);
        // Wakes the accept loop up so that it sees `stopping`.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn read_request(stream: &TcpStream) -> Option<Received> {
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut reader = BufReader::new(stream);
    let mut request_line = String::new();
    reader.read_line(&mut request_line).ok()?;
    let path = request_line.split_whitespace().nth(1)?.to_owned();
    let mut headers = BTreeMap::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':')?;
        headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
    }
    let length: usize = headers.get("content-length")?.parse().ok()?;
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Received {
        path,
        headers,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    })
}

// ---------------------------------------------------------------------------
// Alertmanager
// ---------------------------------------------------------------------------

struct Alertmanager {
    child: Child,
    port: u16,
    directory: tempfile::TempDir,
}

impl Alertmanager {
    /// Starts Alertmanager with one route to a webhook at `webhook_url`,
    /// grouping by alert and model and flushing every second.
    fn start(webhook_url: &str) -> Alertmanager {
        let binary = require_program("prometheus-alertmanager", ALERTMANAGER_INSTALL);
        let directory = tempfile::Builder::new()
            .prefix("alertmanager-")
            .tempdir()
            .unwrap();
        let config_path = directory.path().join("alertmanager.yml");
        std::fs::write(
            &config_path,
            format!(
                "route:\n  receiver: hook\n  group_by: [alertname, model_name]\n  group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1h\nreceivers:\n  - name: hook\n    webhook_configs:\n      - url: '{webhook_url}'\n        send_resolved: true\n"
            ),
        )
        .unwrap();
        let client = http_client();
        for _attempt in 0..5 {
            let port = free_port();
            let log = std::fs::File::create(directory.path().join("alertmanager.log")).unwrap();
            let mut child = Command::new(&binary)
                .arg(format!("--config.file={}", config_path.display()))
                .arg(format!(
                    "--storage.path={}",
                    directory.path().join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                // No gossip: a single instance, and no port 9094 to fight over.
                .arg("--cluster.listen-address=")
                .arg("--log.level=debug")
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|error| panic!("spawn {}: {error}", binary.display()));
            let ready_url = format!("http://127.0.0.1:{port}/-/ready");
            let mut exited = false;
            wait_until(Duration::from_secs(20), || {
                exited = child.try_wait().unwrap().is_some();
                exited
                    || client
                        .get(&ready_url)
                        .send()
                        .is_ok_and(|response| response.status().is_success())
            });
            // Answering is not enough: another process might hold the port.
            if !exited && child.try_wait().unwrap().is_none() {
                return Alertmanager {
                    child,
                    port,
                    directory,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
            let log = read_log(directory.path());
            if !log.contains("address already in use") {
                panic!("alertmanager did not start; its log:\n{log}");
            }
        }
        panic!("alertmanager lost the race for a free port five times")
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn log(&self) -> String {
        read_log(self.directory.path())
    }
}

fn read_log(directory: &Path) -> String {
    std::fs::read_to_string(directory.join("alertmanager.log")).unwrap_or_default()
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------
// The notifier, driven as the evaluator drives it
// ---------------------------------------------------------------------------

struct Harness {
    _directory: tempfile::TempDir,
    database: PathBuf,
    config: Arc<Config>,
    alerts: AlertStore,
    notifier: Notifier,
    tracker: Tracker,
    rule: Rule,
    delivery: Option<(Arc<AtomicBool>, JoinHandle<()>)>,
}

impl Harness {
    /// `config_yaml` is a modelwatch config; the alerts come from its
    /// `MLModelHighErrorRate` rule for model `fraud`.
    fn new(config_yaml: &str) -> Harness {
        let config = Arc::new(Config::parse(config_yaml).unwrap_or_else(|error| panic!("{error}")));
        let directory = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(directory.path(), Synchronous::Normal).unwrap();
        let database = store.path().to_owned();
        drop(store);
        let rule = config
            .rules()
            .unwrap()
            .into_iter()
            .find(|rule| rule.name == "MLModelHighErrorRate")
            .unwrap();
        Harness {
            alerts: AlertStore::open(&database, Synchronous::Normal).unwrap(),
            notifier: Notifier::new(config.clone()),
            _directory: directory,
            database,
            config,
            tracker: Tracker::default(),
            rule,
            delivery: None,
        }
    }

    /// Stops the delivery thread, as a shutdown does.
    fn stop_delivery(&mut self) {
        let (stopping, thread) = self.delivery.take().expect("delivery was started");
        stopping.store(true, Ordering::Release);
        thread.join().unwrap();
    }

    fn start_delivery(&mut self) {
        let stopping = Arc::new(AtomicBool::new(false));
        let thread = notify::start_delivery(
            self.config.clone(),
            self.database.clone(),
            Synchronous::Normal,
            stopping.clone(),
            modelwatch_server::state::Clock::wall(),
        );
        self.delivery = Some((stopping, thread));
    }

    /// One evaluation at `now_ms` whose condition holds (`Some(value)`) or
    /// not; returns its transition.
    fn evaluate(&mut self, outcome: Option<f64>, now_ms: i64) -> Option<Transition> {
        let transition = self.tracker.step(&self.rule, "fraud", outcome, now_ms);
        let active: Vec<Alert> = self.tracker.active().cloned().collect();
        let transitions: Vec<Transition> = transition.iter().cloned().collect();
        let notifier = &mut self.notifier;
        self.alerts
            .transaction(|writer| notifier.record(writer, &transitions, &active, now_ms))
            .unwrap();
        transition
    }

    /// Evaluations from `start_ms` until the alert fires (`for` is 5m).
    fn fire(&mut self, start_ms: i64) -> Alert {
        let pending = self.evaluate(Some(0.2), start_ms).unwrap();
        assert_eq!(pending.alert.state, AlertState::Pending);
        assert!(
            self.alerts.pending().unwrap().is_empty(),
            "pending alerts are not sent"
        );
        let firing = self.evaluate(Some(0.25), start_ms + 5 * MINUTE_MS).unwrap();
        assert_eq!(firing.alert.state, AlertState::Firing);
        firing.alert
    }

    fn outbox(&self) -> Vec<OutboxEntry> {
        self.alerts.pending().unwrap()
    }

    fn audit(&self) -> Vec<AuditRecord> {
        self.alerts
            .remediations(100, None)
            .unwrap()
            .iter()
            .rev()
            .map(|entry| serde_json::from_str(&entry.body).unwrap())
            .collect()
    }

    fn wait_for_empty_outbox(&self, what: &str) {
        assert!(
            wait_until(DELIVERY_DEADLINE, || self.outbox().is_empty()),
            "{what}: the outbox still holds {:?}",
            self.outbox()
        );
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some((stopping, thread)) = self.delivery.take() {
            stopping.store(true, Ordering::Release);
            let _ = thread.join();
        }
    }
}

/// Webhook payloads (version 4) `hook` received, as `(status, alertname,
/// model_name)` of their one alert, with their fingerprint checked.
fn webhook_alerts(hook: &Hook) -> Vec<(String, String, String)> {
    hook.received()
        .iter()
        .map(|request| {
            let message = &request.body;
            assert_eq!(message["version"], "4", "{message}");
            let alerts = message["alerts"].as_array().expect("alerts");
            assert_eq!(alerts.len(), 1, "{message}");
            let alert = &alerts[0];
            let labels: BTreeMap<String, String> = serde_json::from_value(alert["labels"].clone()).unwrap();
            assert_eq!(alert["fingerprint"], notify::fingerprint(&labels), "{message}");
            assert_eq!(message["status"], alert["status"], "{message}");
            (
                alert["status"].as_str().unwrap().to_owned(),
                labels["alertname"].clone(),
                labels["model_name"].clone(),
            )
        })
        .collect()
}

fn row(status: &str) -> (String, String, String) {
    (
        status.to_owned(),
        "MLModelHighErrorRate".to_owned(),
        "fraud".to_owned(),
    )
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[test]
fn alertmanager_notifies_the_firing_alert_and_then_its_resolution() {
    let hook = Hook::start();
    let alertmanager = Alertmanager::start(&hook.url("/from-alertmanager"));
    let mut harness = Harness::new(&format!(
        "receivers:\n  - name: am\n    alertmanager: {}\n    resend_interval: 1m\n",
        alertmanager.url()
    ));
    harness.start_delivery();
    let start_ms = unix_now_ms() - 6 * MINUTE_MS;
    let firing = harness.fire(start_ms);

    let saw = |wanted: &[(String, String, String)]| {
        wait_until(DELIVERY_DEADLINE, || webhook_alerts(&hook) == wanted)
    };
    assert!(
        saw(&[row("firing")]),
        "Alertmanager did not notify the firing alert; the receiver got {:?}; Alertmanager's log:\n{}",
        hook.received(),
        alertmanager.log()
    );
    // Alertmanager computed the same fingerprint (checked in webhook_alerts)
    // and kept our start time.
    let notified = &hook.received()[0].body["alerts"][0];
    let started: jiff::Timestamp = notified["startsAt"].as_str().unwrap().parse().unwrap();
    assert_eq!(started.as_millisecond(), firing.active_since_ms);
    assert_eq!(notified["annotations"]["summary"], "Model fraud error rate > 1%");

    let resolution = harness.evaluate(None, unix_now_ms()).unwrap();
    assert_eq!(resolution.alert.state, AlertState::Resolved);
    assert!(
        saw(&[row("firing"), row("resolved")]),
        "Alertmanager did not notify the resolution; the receiver got {:?}; Alertmanager's log:\n{}",
        hook.received(),
        alertmanager.log()
    );
    harness.wait_for_empty_outbox("after the resolution");
}

#[test]
fn a_down_receiver_loses_nothing_gets_backoff_and_no_storm() {
    let webhook_port = free_port();
    let alertmanager_port = free_port();
    let mut harness = Harness::new(&format!(
        "receivers:\n  - name: hook\n    webhook: http://127.0.0.1:{webhook_port}/hook\n  - name: am\n    alertmanager: http://127.0.0.1:{alertmanager_port}\n    resend_interval: 1s\n\
         remediation:\n  allowlist: ['http://127.0.0.1:{webhook_port}/']\n"
    ));
    let start_ms = unix_now_ms() - 10 * MINUTE_MS;
    harness.fire(start_ms);
    // Many evaluations while it keeps firing, with the receivers down and
    // re-sends due at each: still one entry per receiver.
    for step in 1..=100 {
        harness.evaluate(Some(0.3), start_ms + 5 * MINUTE_MS + step * 1000);
    }
    let per_receiver = |harness: &Harness| {
        let mut counts = BTreeMap::new();
        for entry in harness.outbox() {
            *counts.entry(entry.receiver).or_insert(0) += 1;
        }
        counts
    };
    assert_eq!(
        per_receiver(&harness),
        BTreeMap::from([("am".to_owned(), 1), ("hook".to_owned(), 1)])
    );

    // Delivery fails (nothing listens) and is retried with growing waits.
    harness.start_delivery();
    let started = Instant::now();
    let mut schedule: Vec<(i64, i64)> = Vec::new(); // (attempts, next attempt) of the webhook entry
    let retried_thrice = wait_until(Duration::from_secs(20), || {
        harness.evaluate(Some(0.3), unix_now_ms());
        let entries = harness.outbox();
        let Some(entry) = entries.iter().find(|entry| entry.receiver == "hook") else {
            return false;
        };
        if schedule
            .last()
            .is_none_or(|&(attempts, _)| attempts != entry.attempts)
        {
            schedule.push((entry.attempts, entry.next_attempt_ms));
        }
        entry.attempts >= 3
    });
    assert!(retried_thrice, "not retried three times: {schedule:?}");
    // 1s, 2s, 4s less up to a fifth of jitter: three attempts take at least
    // 2.4s, and there is no hot loop.
    assert!(started.elapsed() >= Duration::from_millis(2400), "{schedule:?}");
    let waits: Vec<i64> = schedule
        .windows(2)
        .filter(|pair| pair[0].0 >= 1)
        .map(|pair| pair[1].1 - pair[0].1)
        .collect();
    assert!(!waits.is_empty(), "{schedule:?}");
    for wait in &waits {
        assert!(
            *wait >= 1600,
            "retries closer than the backoff allows: {schedule:?}"
        );
    }
    assert_eq!(
        per_receiver(&harness),
        BTreeMap::from([("am".to_owned(), 1), ("hook".to_owned(), 1)])
    );

    // The receivers come back: what was queued arrives, once.
    let hook = Hook::start_on(webhook_port);
    let fake_alertmanager = Hook::start_on(alertmanager_port);
    harness.wait_for_empty_outbox("once the receivers are back");
    assert_eq!(webhook_alerts(&hook), [row("firing")]);
    let posts = fake_alertmanager.received();
    assert_eq!(posts.len(), 1, "{posts:?}");
    assert_eq!(posts[0].path, "/api/v2/alerts");
    let sent = &posts[0].body[0];
    assert_eq!(sent["labels"]["alertname"], "MLModelHighErrorRate");
    assert!(
        sent["endsAt"].is_string() && sent["startsAt"].is_string(),
        "{sent}"
    );

    // A receiver that refuses (400) is not retried for ever: the resolution
    // is dropped after one attempt; the Alertmanager still gets it.
    hook.answer_with(400);
    harness.evaluate(None, unix_now_ms());
    harness.wait_for_empty_outbox("after the refused resolution");
    assert_eq!(webhook_alerts(&hook), [row("firing"), row("resolved")]);
    let posts = fake_alertmanager.received();
    assert_eq!(
        posts.last().unwrap().body[0]["labels"]["alertname"],
        "MLModelHighErrorRate"
    );
    let ends_at: jiff::Timestamp = posts.last().unwrap().body[0]["endsAt"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(ends_at.as_millisecond() <= unix_now_ms());
}

#[test]
fn the_outbox_and_its_retry_state_survive_a_restart() {
    let webhook_port = free_port();
    let config = format!(
        "receivers:\n  - name: hook\n    webhook: http://127.0.0.1:{webhook_port}/hook\n\
         remediation:\n  allowlist: ['http://127.0.0.1:{webhook_port}/']\n"
    );
    let mut harness = Harness::new(&config);
    harness.fire(unix_now_ms() - 6 * MINUTE_MS);
    harness.start_delivery();
    assert!(
        wait_until(Duration::from_secs(10), || harness.outbox()[0].attempts >= 1),
        "{:?}",
        harness.outbox()
    );
    harness.stop_delivery();
    let before_restart = harness.outbox();
    // A new process: a new notifier, store connection and delivery thread
    // over the same database file.
    harness.notifier = Notifier::new(harness.config.clone());
    harness.alerts = AlertStore::open(&harness.database, Synchronous::Normal).unwrap();
    assert_eq!(
        harness.outbox(),
        before_restart,
        "the entry and its attempts are kept"
    );
    let hook = Hook::start_on(webhook_port);
    harness.start_delivery();
    harness.wait_for_empty_outbox("after the restart");
    assert_eq!(webhook_alerts(&hook), [row("firing")]);
}

#[test]
fn remediation_is_sent_with_its_headers_and_audited() {
    let target = Hook::start();
    let mut harness = Harness::new(&format!(
        "alerts:\n  rules:\n    MLModelHighErrorRate:\n      actions: [rollback, retrain]\nremediation:\n  allowlist: ['{allowed}']\n  actions:\n    rollback:\n      url: {rollback}\n      headers: {{Authorization: Bearer s3cret}}\n      cooldown: 1h\n    retrain:\n      url: {retrain}\n      method: PUT\n      body: '{{\"model\": \"{{{{ model }}}}\", \"why\": \"{{{{ alert }}}} at {{{{ value }}}}\"}}'\n",
        allowed = target.url("/"),
        rollback = target.url("/rollback"),
        retrain = target.url("/retrain"),
    ));
    harness.start_delivery();
    let start_ms = unix_now_ms() - 6 * MINUTE_MS;
    harness.fire(start_ms);
    harness.wait_for_empty_outbox("remediations");
    let mut requests = target.received();
    requests.sort_by(|a, b| a.path.cmp(&b.path));
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert_eq!(requests[0].path, "/retrain");
    assert_eq!(
        requests[0].body,
        serde_json::json!({"model": "fraud", "why": "MLModelHighErrorRate at 0.25"})
    );
    assert_eq!(requests[1].path, "/rollback");
    assert_eq!(requests[1].headers["authorization"], "Bearer s3cret");
    assert_eq!(requests[1].body["model"], "fraud");
    assert_eq!(requests[1].body["value"], 0.25);
    let audit = harness.audit();
    let decisions: Vec<(&str, Decision, i64)> = audit
        .iter()
        .map(|record| (record.action.as_str(), record.decision, record.attempts))
        .collect();
    assert_eq!(
        decisions,
        [
            ("rollback", Decision::Delivered, 1),
            ("retrain", Decision::Delivered, 1)
        ]
    );
    assert!(!serde_json::to_string(&audit).unwrap().contains("s3cret"));

    // It resolves and fires again within rollback's cooldown; retrain has
    // the default cooldown (30m) too. The target now refuses.
    target.answer_with(403);
    harness.evaluate(None, start_ms + 6 * MINUTE_MS);
    harness.fire(start_ms + 7 * MINUTE_MS);
    let decisions: Vec<Decision> = harness.audit().iter().map(|record| record.decision).collect();
    assert_eq!(
        decisions[2..],
        [Decision::SkippedCooldown, Decision::SkippedCooldown]
    );
    assert_eq!(target.received().len(), 2);
}

#[test]
fn a_refused_remediation_is_audited_as_failed() {
    let target = Hook::start();
    target.answer_with(422);
    let mut harness = Harness::new(&format!(
        "alerts:\n  rules:\n    MLModelHighErrorRate:\n      actions: [rollback]\nremediation:\n  allowlist: ['{allowed}']\n  actions:\n    rollback:\n      url: {rollback}\n",
        allowed = target.url("/"),
        rollback = target.url("/rollback"),
    ));
    harness.start_delivery();
    harness.fire(unix_now_ms() - 6 * MINUTE_MS);
    harness.wait_for_empty_outbox("the refused remediation");
    let audit = harness.audit();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].decision, Decision::Failed);
    assert!(audit[0].detail.as_deref().unwrap().contains("422"), "{audit:?}");
    assert!(audit[0].finished_at.is_some());
    assert_eq!(target.received().len(), 1);
}

/// The whole path on the real binary: events make `modelwatch serve`'s own
/// evaluator fire; it notifies a real Alertmanager (which forwards to a
/// receiver here), a generic webhook and a remediation endpoint; then the
/// alert resolves and both receivers hear of it.
#[test]
fn the_server_notifies_alertmanager_webhooks_and_remediation_end_to_end() {
    let from_alertmanager = Hook::start();
    let direct = Hook::start();
    let alertmanager = Alertmanager::start(&from_alertmanager.url("/from-alertmanager"));
    let directory = tempfile::tempdir().unwrap();
    let config = directory.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "alerts:\n  evaluation_interval: 1s\n  rules:\n    MLModelHighErrorRate:\n      for: 1s\n      actions: [rollback]\n\
             receivers:\n  - name: am\n    alertmanager: {am}\n    resend_interval: 1m\n  - name: hook\n    webhook: {hook}\n\
             remediation:\n  allowlist: ['{allow}']\n  actions:\n    rollback:\n      url: {rollback}\n      cooldown: 1h\n",
            am = alertmanager.url(),
            hook = direct.url("/alerts"),
            allow = direct.url("/"),
            rollback = direct.url("/rollback"),
        ),
    )
    .unwrap();
    let server = support::Server::builder(&directory.path().join("data"))
        .arg("--config")
        .arg(config.to_str().unwrap())
        .start();
    let event = |id: usize, error: bool| {
        let mut event = serde_json::json!({
            "prediction_id": format!("p{id}"), "model": "fraud", "version": "v7", "latency_seconds": 0.01,
        });
        if error {
            event["status"] = "error".into();
            event["error_type"] = "ValueError".into();
        } else {
            event["prediction"] = "1".into();
            event["confidence"] = 0.9.into();
        }
        event.to_string()
    };
    // 10% errors: MLModelHighErrorRate fires after its 1s `for`.
    let lines: Vec<String> = (0..100).map(|id| event(id, id % 10 == 0)).collect();
    assert_eq!(server.post_ndjson("/v1/predictions", &lines).0, 200);

    let high_error = |hook: &Hook| -> Vec<String> {
        hook.received()
            .iter()
            .filter(|request| request.path != "/rollback")
            .flat_map(|request| request.body["alerts"].as_array().cloned().unwrap_or_default())
            .filter(|alert| alert["labels"]["alertname"] == "MLModelHighErrorRate")
            .map(|alert| alert["status"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    for (name, hook) in [("Alertmanager", &from_alertmanager), ("the webhook", &direct)] {
        assert!(
            wait_until(DELIVERY_DEADLINE, || high_error(hook).first().map(String::as_str)
                == Some("firing")),
            "{name} did not get the firing alert: {:?}\nAlertmanager's log:\n{}\nmodelwatch's log:\n{}",
            hook.received(),
            alertmanager.log(),
            server.log()
        );
    }
    assert!(
        wait_until(DELIVERY_DEADLINE, || {
            direct
                .received()
                .iter()
                .any(|request| request.path == "/rollback")
        }),
        "no rollback call: {:?}",
        direct.received()
    );
    let rollback = direct
        .received()
        .into_iter()
        .find(|request| request.path == "/rollback")
        .unwrap();
    assert_eq!(rollback.body["model"], "fraud");
    assert_eq!(rollback.body["version"], "v7");
    assert_eq!(rollback.body["alert"], "MLModelHighErrorRate");
    assert!(
        (rollback.body["value"].as_f64().unwrap() - 0.1).abs() < 1e-12,
        "{:?}",
        rollback.body
    );
    let audit_delivered = || {
        let (status, _, body) = server.get("/v1/remediations");
        assert_eq!(status, 200, "{body}");
        body.contains("\"delivered\"")
    };
    assert!(
        wait_until(DELIVERY_DEADLINE, audit_delivered),
        "{:?}",
        server.get("/v1/remediations")
    );

    // 2000 good events: 10/2100 < 1%, so the alert resolves.
    let lines: Vec<String> = (1000..3000).map(|id| event(id, false)).collect();
    assert_eq!(server.post_ndjson("/v1/predictions", &lines).0, 200);
    for (name, hook) in [("Alertmanager", &from_alertmanager), ("the webhook", &direct)] {
        assert!(
            wait_until(DELIVERY_DEADLINE, || high_error(hook).last().map(String::as_str)
                == Some("resolved")),
            "{name} did not get the resolution: {:?}\nAlertmanager's log:\n{}",
            high_error(hook),
            alertmanager.log()
        );
    }
    // The webhook got each transition once: no storm.
    assert_eq!(high_error(&direct), ["firing", "resolved"]);
}
