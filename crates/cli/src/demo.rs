//! `modelwatch demo`: the server on the embedded default, fed by a simulated
//! `fraud_detector` in simulated time, with a degradation that makes the
//! alerts fire and a remediation webhook get called.
//!
//! Timeline (simulated time from the start):
//! - 0h–2h: normal traffic with a daily pattern; v1 (stable) takes 80% and
//!   v2 (canary) 20%. Labels arrive minutes later with business values.
//! - 1h: the first hour is frozen as the drift baseline.
//! - 2h: degradation. The canary ramps to 40% and its accuracy collapses,
//!   the inputs drift (larger amounts, younger accounts, new countries),
//!   and latency spikes ×40 until 2h45.
//!
//! Alerts expected: `MLModelHighLatency` (its action calls `rollback`),
//! `MLModelAccuracyDrop` (calls `retrain`) and `MLModelDataDrift`.
//!
//! The simulated clock is the server's and never waits for the simulation:
//! at `--speed 600` every 100 ms that a batch takes to be committed is a
//! simulated minute in which the server sees no traffic. The alert rules
//! look at the last 5 simulated minutes, so a sender that falls half a wall
//! second behind makes `MLModelDown` fire and leaves the latency spike out of
//! the windows that `MLModelHighLatency` evaluates. Hence the demo keeps its
//! commits cheap (no fsync per commit), paces its ticks on deadlines, never
//! drops a batch, and says so when it falls behind anyway.

use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use modelwatch_core::time::{HOUR_MS, MINUTE_MS, parse_duration_ms};
use modelwatch_server::state::Clock;
use modelwatch_server::{Config, ServeOptions};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Exp, LogNormal, Normal};
use serde_json::{Value, json};

pub const MODEL: &str = "fraud_detector";
/// Requests per simulated second at the daily mean.
const BASE_RATE: f64 = 2.0;
const BASELINE_AT_MS: i64 = HOUR_MS + 5 * MINUTE_MS;
const DEGRADE_AT_MS: i64 = 2 * HOUR_MS;
const SPIKE_UNTIL_MS: i64 = 2 * HOUR_MS + 45 * MINUTE_MS;
const TICK: Duration = Duration::from_millis(50);
/// How far (in simulated time) the newest sent event may trail the clock
/// before the demo warns that alerts may fire for its own lag: the alert
/// rules' shortest range is 5 minutes.
const LAG_WARNING_MS: i64 = 2 * MINUTE_MS;
/// Attempts at a POST before its batch is given up.
const POST_ATTEMPTS: u32 = 5;
/// The wait before the first retry of a failed POST; it doubles after each.
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(100);
/// The longest wait a `Retry-After` may impose between two attempts.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(2);

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Address of the server (and its dashboard).
    #[arg(long, env = "MODELWATCH_LISTEN", default_value = "127.0.0.1:9400")]
    listen: SocketAddr,
    /// Directory of the embedded database [default: a temporary directory,
    /// deleted on exit].
    #[arg(long, env = "MODELWATCH_DATA")]
    data: Option<PathBuf>,
    /// Simulated time runs this many times faster than the wall clock.
    #[arg(long, default_value_t = 60.0)]
    speed: f64,
    /// Stop after this much simulated time (such as `5h`) [default: run until
    /// Ctrl-C].
    #[arg(long)]
    duration: Option<String>,
    /// Seed of the simulation.
    #[arg(long, default_value_t = 7)]
    seed: u64,
}

/// The demo's config: the built-in rules with shorter windows (a demo lasts
/// hours, not weeks), remediation actions and a webhook that point at the
/// demo's own receiver, and the seed's SLOs.
///
/// Commits skip the fsync (`synchronous: normal`): they still survive a crash
/// of the demo, and a demo's data is not worth a power loss guarantee, while
/// an fsync that stalls behind other disk writers stalls the simulation's
/// traffic for simulated minutes (see the module docs).
fn demo_config(receiver: SocketAddr) -> String {
    format!(
        r#"storage:
  synchronous: normal
alerts:
  evaluation_interval: 1s
  rules:
    MLModelHighLatency:
      actions: [rollback]
    MLModelAccuracyDrop:
      range: 1h
      min_samples: 100
      actions: [retrain]
    MLModelDataDrift:
      for: 15m
    MLModelDown:
      for: 15m
drift:
  window: 1h
  baseline: auto
slos:
  {MODEL}:
    availability: {{target: 99.9, window: 30d}}
    latency: {{p99_target_ms: 100, p50_target_ms: 20}}
    accuracy: {{target: 0.9, window: 7d}}
receivers:
  - name: demo-webhook
    webhook: http://{receiver}/alerts
remediation:
  allowlist: ["http://{receiver}/"]
  actions:
    rollback:
      url: http://{receiver}/rollback
      body: '{{"model": "{{{{ model }}}}", "version": "{{{{ version }}}}", "alert": "{{{{ alert }}}}"}}'
      cooldown: 1h
    retrain:
      url: http://{receiver}/retrain
      body: '{{"model": "{{{{ model }}}}", "alert": "{{{{ alert }}}}"}}'
      cooldown: 1h
"#
    )
}

pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    // reqwest is built with rustls and no default crypto provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    if !(args.speed.is_finite() && args.speed >= 1.0) {
        anyhow::bail!("--speed must be a number ≥ 1");
    }
    let duration_ms = args
        .duration
        .as_deref()
        .map(|text| parse_duration_ms(text).map_err(|error| anyhow::anyhow!("--duration: {error}")))
        .transpose()?;
    let temporary = match &args.data {
        Some(_) => None,
        None => Some(tempfile::tempdir().context("creating a temporary data directory")?),
    };
    let data_dir = args
        .data
        .clone()
        .unwrap_or_else(|| temporary.as_ref().expect("created above").path().to_owned());

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("modelwatch-http")
        .build()
        .context("starting the async runtime")?;
    let receiver_listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .context("binding the demo's webhook receiver")?;
    let receiver = receiver_listener.local_addr()?;
    runtime.spawn(async move {
        let _ = axum::serve(receiver_listener, receiver_app()).await;
    });
    let config = Config::parse(&demo_config(receiver)).map_err(anyhow::Error::msg)?;

    let start_ms = jiff::Timestamp::now().as_millisecond();
    let clock = Clock::simulated(start_ms, args.speed);
    let (ready_sender, ready) = std::sync::mpsc::channel::<SocketAddr>();
    let (stop_sender, stop) = tokio::sync::oneshot::channel::<()>();
    let stopping = Arc::new(AtomicBool::new(false));
    let simulator = {
        let stopping = stopping.clone();
        let seed = args.seed;
        let speed = args.speed;
        std::thread::Builder::new()
            .name("modelwatch-demo".into())
            .spawn(move || {
                let Ok(address) = ready.recv() else { return };
                print_guide(address, speed, receiver);
                let mut simulation = Simulation::new(address, clock, start_ms, seed);
                simulation.run(&stopping, duration_ms);
                let _ = stop_sender.send(());
            })?
    };
    let shutdown = async move {
        tokio::select! {
            _ = modelwatch_server::shutdown_signal() => {}
            _ = stop => println!("demo: the simulated {} are over; stopping", args.duration.unwrap_or_default()),
        }
    };
    let served = runtime.block_on(modelwatch_server::serve_with(
        config,
        ServeOptions {
            listen: args.listen,
            data_dir,
        },
        clock,
        move |address| {
            let _ = ready_sender.send(address);
        },
        shutdown,
    ));
    stopping.store(true, Ordering::Release);
    let _ = simulator.join();
    served?;
    Ok(())
}

fn print_guide(address: SocketAddr, speed: f64, receiver: SocketAddr) {
    let minutes_per_second = speed / 60.0;
    println!(
        "\nmodelwatch demo: a simulated {MODEL} in simulated time ({speed}x: {minutes_per_second:.1} simulated minutes per second)\n\
         \n  dashboard:  http://{address}/\n  alerts:     http://{address}/v1/alerts\n  metrics:    http://{address}/metrics\n  webhook receiver (logs remediation calls here): http://{receiver}/\n\
         \nWhat to look at:\n\
         \x20 0h    traffic starts: v1 (stable, 80%) and v2 (canary, 20%), labels arrive minutes later\n\
         \x20 1h    the first hour is frozen as the drift baseline (POST /v1/models/{MODEL}/baseline)\n\
         \x20 2h    degradation: the canary ramps to 40% and its accuracy collapses, inputs drift,\n\
         \x20       and latency spikes until 2h45\n\
         \x20 then  MLModelHighLatency fires (and calls rollback), MLModelAccuracyDrop (calls retrain),\n\
         \x20       MLModelDataDrift; the dashboard shows each, and this log shows the webhook calls.\n\
         \x20       Compare the versions: /v1/models/{MODEL}/performance?window=1h&version=v2\n"
    );
}

/// The demo's receiver: logs every webhook and remediation call.
fn receiver_app() -> axum::Router {
    use axum::routing::post;
    async fn log(path: axum::extract::Path<String>, body: String) -> &'static str {
        let value: Value = serde_json::from_str(&body).unwrap_or(Value::String(body));
        match path.0.as_str() {
            "alerts" => {
                let status = value["status"].as_str().unwrap_or("?");
                for alert in value["alerts"].as_array().into_iter().flatten() {
                    println!(
                        "receiver: alert {} is {status} for {}",
                        alert["labels"]["alertname"].as_str().unwrap_or("?"),
                        alert["labels"]["model_name"].as_str().unwrap_or("?")
                    );
                }
            }
            action => println!("receiver: remediation {action} called: {value}"),
        }
        "ok"
    }
    axum::Router::new().route("/{path}", post(log))
}

/// A label due at `due_ms` (simulated).
#[derive(PartialEq, Eq)]
struct PendingLabel {
    due_ms: i64,
    body: String,
}

impl Ord for PendingLabel {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        other.due_ms.cmp(&self.due_ms)
    }
}

impl PartialOrd for PendingLabel {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

struct Simulation {
    client: reqwest::blocking::Client,
    base: String,
    clock: Clock,
    start_ms: i64,
    rng: StdRng,
    next_id: u64,
    carry: f64,
    labels: BinaryHeap<PendingLabel>,
    baseline_frozen: bool,
    announced_degradation: bool,
    seen_alerts: std::collections::BTreeSet<String>,
}

impl Simulation {
    fn new(address: SocketAddr, clock: Clock, start_ms: i64, seed: u64) -> Self {
        Self {
            client: reqwest::blocking::Client::new(),
            base: format!("http://{address}"),
            clock,
            start_ms,
            rng: StdRng::seed_from_u64(seed),
            next_id: 0,
            carry: 0.0,
            labels: BinaryHeap::new(),
            baseline_frozen: false,
            announced_degradation: false,
            seen_alerts: Default::default(),
        }
    }

    fn run(&mut self, stopping: &AtomicBool, duration_ms: Option<i64>) {
        let mut last_ms = self.clock.now_ms();
        let mut last_poll = std::time::Instant::now();
        // Ticks are paced on deadlines, not by sleeping after the work: a
        // slow tick is followed at once by the next, which catches up.
        let mut next_tick = std::time::Instant::now();
        let mut warned_lag_ms = 0;
        while !stopping.load(Ordering::Acquire) {
            next_tick += TICK;
            let now = std::time::Instant::now();
            if next_tick > now {
                std::thread::sleep(next_tick - now);
            } else {
                next_tick = now;
            }
            let now_ms = self.clock.now_ms();
            if duration_ms.is_some_and(|duration| now_ms - self.start_ms >= duration) {
                return;
            }
            // What the server has gone without: the events since the last
            // tick were sent only now.
            let lag_ms = now_ms - last_ms;
            if lag_ms >= LAG_WARNING_MS && lag_ms > warned_lag_ms {
                warned_lag_ms = lag_ms;
                eprintln!(
                    "demo: {} the simulation fell {} s of simulated time behind the clock \
                     (the machine is too busy for --speed {}); alerts such as MLModelDown may fire for it",
                    self.elapsed_text(now_ms),
                    lag_ms / 1000,
                    self.clock.speed()
                );
            }
            let predictions = self.predictions(last_ms, now_ms);
            last_ms = now_ms;
            self.post("/v1/predictions", predictions, stopping);
            let mut due = Vec::new();
            while self.labels.peek().is_some_and(|label| label.due_ms <= now_ms) {
                due.push(self.labels.pop().expect("peeked").body);
            }
            self.post("/v1/labels", due, stopping);
            let elapsed = now_ms - self.start_ms;
            if !self.baseline_frozen && elapsed >= BASELINE_AT_MS {
                self.freeze_baseline();
            }
            if !self.announced_degradation && elapsed >= DEGRADE_AT_MS {
                self.announced_degradation = true;
                println!(
                    "demo: {} degradation injected: canary accuracy collapses, inputs drift, latency spikes",
                    self.elapsed_text(now_ms)
                );
            }
            if last_poll.elapsed() >= Duration::from_millis(200) {
                last_poll = std::time::Instant::now();
                self.report_alerts(now_ms);
            }
        }
    }

    fn elapsed_text(&self, now_ms: i64) -> String {
        let minutes = (now_ms - self.start_ms) / MINUTE_MS;
        format!("[sim {}h{:02}]", minutes / 60, minutes % 60)
    }

    /// Sends a batch, retrying while the server is busy (429) or
    /// unreachable: a lost batch is simulated minutes without traffic. A
    /// retry cannot double anything: the server drops predictions and labels
    /// it already stored.
    fn post(&self, path: &str, lines: Vec<String>, stopping: &AtomicBool) {
        if lines.is_empty() {
            return;
        }
        let body = lines.join("\n");
        let mut retry_delay = FIRST_RETRY_DELAY;
        for attempt in 1..=POST_ATTEMPTS {
            let result = self
                .client
                .post(format!("{}{path}", self.base))
                .header("Content-Type", "application/x-ndjson")
                .body(body.clone())
                .send();
            let delay = match result {
                Ok(response) if response.status().is_success() => return,
                Ok(response)
                    if response.status() == reqwest::StatusCode::TOO_MANY_REQUESTS
                        && attempt < POST_ATTEMPTS =>
                {
                    let retry_after = response
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|value| value.to_str().ok())
                        .and_then(|text| text.trim().parse::<u64>().ok())
                        .map(Duration::from_secs);
                    retry_after.unwrap_or(retry_delay).min(MAX_RETRY_DELAY)
                }
                Ok(response) => {
                    // Still busy after every attempt, or a refused batch (a
                    // bug of the simulation, which retrying cannot help).
                    let status = response.status();
                    let answer = response.text().unwrap_or_default();
                    eprintln!("demo: POST {path} answered {status}: {answer}");
                    return;
                }
                Err(error) if attempt == POST_ATTEMPTS => {
                    eprintln!("demo: POST {path} failed {POST_ATTEMPTS} times, dropping its batch: {error}");
                    return;
                }
                Err(error) => {
                    eprintln!("demo: POST {path} failed (attempt {attempt}), retrying: {error}");
                    retry_delay
                }
            };
            if stopping.load(Ordering::Acquire) {
                return;
            }
            std::thread::sleep(delay);
            retry_delay = (retry_delay * 2).min(MAX_RETRY_DELAY);
        }
    }

    fn freeze_baseline(&mut self) {
        self.baseline_frozen = true;
        let body =
            json!({"from": self.start_ms as f64 / 1000.0, "to": (self.start_ms + HOUR_MS) as f64 / 1000.0});
        match self
            .client
            .post(format!("{}/v1/models/{MODEL}/baseline", self.base))
            .json(&body)
            .send()
        {
            Ok(response) if response.status().is_success() => println!(
                "demo: {} froze the first hour as the drift baseline",
                self.elapsed_text(self.clock.now_ms())
            ),
            Ok(response) => eprintln!("demo: freezing the baseline answered {}", response.status()),
            Err(error) => eprintln!("demo: freezing the baseline failed: {error}"),
        }
    }

    fn report_alerts(&mut self, now_ms: i64) {
        let Ok(response) = self.client.get(format!("{}/v1/alerts", self.base)).send() else {
            return;
        };
        let Ok(answer) = response.json::<Value>() else {
            return;
        };
        let alerts = answer["alerts"].as_array().cloned().unwrap_or_default();
        for alert in alerts {
            if alert["state"] != "firing" {
                continue;
            }
            let name = alert["name"].as_str().unwrap_or("?").to_owned();
            if self.seen_alerts.insert(name.clone()) {
                println!("demo: {} alert firing: {name}", self.elapsed_text(now_ms));
            }
        }
    }

    /// The predictions of `(from_ms, to_ms]`, with their labels scheduled.
    fn predictions(&mut self, from_ms: i64, to_ms: i64) -> Vec<String> {
        let seconds = (to_ms - from_ms) as f64 / 1000.0;
        let hour_of_day = ((to_ms / HOUR_MS) % 24) as f64;
        let daily = 1.0 + 0.5 * (std::f64::consts::TAU * (hour_of_day - 8.0) / 24.0).sin();
        let expected = BASE_RATE * daily * seconds + self.carry;
        let count = expected.floor() as usize;
        self.carry = expected - count as f64;
        (0..count)
            .map(|_| {
                let at = self.rng.random_range(from_ms + 1..=to_ms.max(from_ms + 1));
                self.prediction(at)
            })
            .collect()
    }

    fn prediction(&mut self, at_ms: i64) -> String {
        let elapsed = at_ms - self.start_ms;
        let degraded = elapsed >= DEGRADE_AT_MS;
        let spike = degraded && elapsed < SPIKE_UNTIL_MS;
        let rng = &mut self.rng;
        let canary = rng.random::<f64>() < if degraded { 0.4 } else { 0.2 };
        let version = if canary { "v2" } else { "v1" };
        self.next_id += 1;
        let id = format!("demo-{:09}", self.next_id);
        let amount: f64 = LogNormal::new(if degraded { 4.5 } else { 4.0 }, 0.7)
            .expect("valid")
            .sample(rng);
        let age: f64 = Normal::new(if degraded { 200.0f64 } else { 420.0 }, 150.0)
            .expect("valid")
            .sample(rng);
        let age = age.max(0.0);
        let device: f64 = Normal::new(0.0, 1.0).expect("valid").sample(rng);
        let countries: &[&str] = if degraded {
            &["DE", "FR", "US", "BR", "NG", "NG"]
        } else {
            &["DE", "FR", "US", "GB"]
        };
        let country = countries[rng.random_range(0..countries.len())];
        let latency: f64 =
            LogNormal::new((0.012f64).ln(), 0.4).expect("valid").sample(rng) * if spike { 40.0 } else { 1.0 };
        let roll = rng.random::<f64>();
        let mut event = json!({
            "prediction_id": id, "model": MODEL, "version": version,
            "timestamp": at_ms as f64 / 1000.0,
            "features": {"amount": (amount * 100.0).round() / 100.0, "account_age_days": age.round(),
                         "device_score": device, "country": country},
            "segments": {"region": if country == "US" || country == "BR" { "americas" } else { "emea" }},
        });
        if roll < 0.0004 {
            event["status"] = json!("error");
            event["error_type"] = json!("FeatureStoreError");
            event["latency_seconds"] = json!(latency);
            return event.to_string();
        }
        if roll < 0.0006 {
            event["status"] = json!("timeout");
            event["latency_seconds"] = json!(2.0);
            return event.to_string();
        }
        // The truth, and the model's view of it.
        let logit =
            3.0 * (-1.2 + 0.9 * ((amount.ln() - 4.0) / 0.7) - 0.6 * ((age - 420.0) / 150.0) + 0.8 * device);
        let truth = rng.random::<f64>() < 1.0 / (1.0 + (-logit).exp());
        let noise: f64 = Normal::new(0.0, 0.6).expect("valid").sample(rng);
        let score = 1.0 / (1.0 + (-(logit + noise)).exp());
        let mut predicted = score >= 0.5;
        // The degraded canary answers at random half the time.
        if canary && degraded && rng.random::<f64>() < 0.5 {
            predicted = rng.random::<bool>();
        }
        let confidence = if predicted {
            score.max(0.5)
        } else {
            (1.0 - score).max(0.5)
        };
        event["status"] = json!("ok");
        event["latency_seconds"] = json!(latency);
        event["prediction"] = json!(if predicted { "1" } else { "0" });
        event["confidence"] = json!((confidence * 1e4).round() / 1e4);
        if rng.random::<f64>() < 0.7 {
            let delay: f64 = Exp::new(1.0 / (15.0 * 60_000.0)).expect("valid").sample(rng);
            let due_ms = at_ms + 2 * MINUTE_MS + delay as i64;
            let caught = truth && predicted;
            let loss = if truth && !predicted { amount } else { 0.0 };
            let label = json!({
                "prediction_id": event["prediction_id"], "actual": if truth { "1" } else { "0" },
                "timestamp": due_ms as f64 / 1000.0,
                "business": {"fraud_caught": u8::from(caught), "fraud_loss": (loss * 100.0).round() / 100.0},
            });
            self.labels.push(PendingLabel {
                due_ms,
                body: label.to_string(),
            });
        }
        event.to_string()
    }
}
