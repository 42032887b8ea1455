//! The load generator: sends pre-built NDJSON bodies (prediction or label
//! events) over a fixed number of keep-alive connections, one blocking client
//! per thread, and checks every answer.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Barrier, Mutex, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, RETRY_AFTER};
use serde::Deserialize;

/// The server's answer to `POST /v1/predictions` and `POST /v1/labels` (only
/// labels are `corrected` or `held`).
#[derive(Debug, Deserialize)]
struct IngestAnswer {
    accepted: u64,
    duplicates: u64,
    #[serde(default)]
    corrected: u64,
    #[serde(default)]
    held: u64,
    rejected: Vec<serde_json::Value>,
}

/// Totals over every answer of a run.
#[derive(Debug, Default)]
pub struct LoadOutcome {
    /// From the first send to the last acknowledgement.
    pub wall: Duration,
    pub requests: usize,
    pub accepted: u64,
    pub duplicates: u64,
    /// Labels that replaced a different stored label.
    pub corrected: u64,
    /// Labels whose prediction was not stored yet.
    pub held: u64,
    pub rejected: u64,
    /// Up to a few rejections as the server wrote them.
    pub rejection_examples: Vec<serde_json::Value>,
    /// Answers 429 (each retried after a short backoff).
    pub overloaded_retries: usize,
    /// Round trip of each successful request (the last attempt), in seconds.
    pub request_seconds: Vec<f64>,
}

const MAX_REJECTION_EXAMPLES: usize = 5;
const MAX_OVERLOADED_RETRIES_PER_BODY: u32 = 1000;

/// Backoff after the `attempt`-th 429 for one body: short, growing, capped,
/// and never longer than the server's `Retry-After`.
fn overload_backoff(attempt: u32, retry_after: Option<Duration>) -> Duration {
    let backoff = Duration::from_millis(10 * u64::from(attempt.min(20)));
    match retry_after {
        Some(hint) => backoff.min(hint.max(Duration::from_millis(10))),
        None => backoff,
    }
}

struct Worker<'a> {
    client: reqwest::blocking::Client,
    url: &'a str,
    outcome: LoadOutcome,
}

impl Worker<'_> {
    fn send(&mut self, body: &Bytes) -> anyhow::Result<()> {
        let mut attempt = 0;
        loop {
            let sent = Instant::now();
            let response = self
                .client
                .post(self.url)
                .header(CONTENT_TYPE, "application/x-ndjson")
                .body(body.clone())
                .send()
                .with_context(|| format!("POST {}", self.url))?;
            let status = response.status();
            if status == StatusCode::TOO_MANY_REQUESTS {
                attempt += 1;
                self.outcome.overloaded_retries += 1;
                if attempt > MAX_OVERLOADED_RETRIES_PER_BODY {
                    bail!("the server answered 429 {attempt} times in a row for one batch");
                }
                let retry_after = response
                    .headers()
                    .get(RETRY_AFTER)
                    .and_then(|value| value.to_str().ok())
                    .and_then(|value| value.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                // Read the answer so the connection can be reused.
                let _ = response.bytes();
                std::thread::sleep(overload_backoff(attempt, retry_after));
                continue;
            }
            let text = response.text().context("reading the ingest answer")?;
            if status != StatusCode::OK {
                let snippet: String = text.chars().take(2000).collect();
                bail!("POST {} answered {status}: {snippet}", self.url);
            }
            self.outcome.request_seconds.push(sent.elapsed().as_secs_f64());
            let answer: IngestAnswer = serde_json::from_str(&text)
                .with_context(|| format!("the ingest answer is not the documented JSON: {text:.500}"))?;
            self.outcome.requests += 1;
            self.outcome.accepted += answer.accepted;
            self.outcome.duplicates += answer.duplicates;
            self.outcome.corrected += answer.corrected;
            self.outcome.held += answer.held;
            self.outcome.rejected += answer.rejected.len() as u64;
            for rejection in answer.rejected {
                if self.outcome.rejection_examples.len() >= MAX_REJECTION_EXAMPLES {
                    break;
                }
                self.outcome.rejection_examples.push(rejection);
            }
            return Ok(());
        }
    }
}

/// Where a body goes.
#[derive(Debug, Clone, Copy)]
pub enum Endpoint {
    Predictions,
    Labels,
}

impl Endpoint {
    fn path(self) -> &'static str {
        match self {
            Endpoint::Predictions => "/v1/predictions",
            Endpoint::Labels => "/v1/labels",
        }
    }
}

/// Sends every body to `endpoint` over `connections` concurrent keep-alive
/// connections.
pub fn run(
    base_url: &str,
    endpoint: Endpoint,
    bodies: &[Bytes],
    connections: usize,
) -> anyhow::Result<LoadOutcome> {
    let url = format!("{base_url}{}", endpoint.path());
    let next_body = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let first_error: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    // Every client is built before the clock starts; the connection itself
    // is opened by the first request, as any client's would be.
    let ready = Barrier::new(connections + 1);
    let (finished_sender, finished) = mpsc::channel::<LoadOutcome>();

    let (wall, outcomes) = std::thread::scope(|scope| {
        for _ in 0..connections {
            let finished_sender = finished_sender.clone();
            let (url, next_body, failed, first_error, ready) =
                (&url, &next_body, &failed, &first_error, &ready);
            scope.spawn(move || {
                let client = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(600))
                    .pool_max_idle_per_host(1)
                    .build();
                ready.wait();
                let mut outcome = LoadOutcome::default();
                match client {
                    Ok(client) => {
                        let mut worker = Worker { client, url, outcome };
                        while !failed.load(Ordering::Relaxed) {
                            let index = next_body.fetch_add(1, Ordering::Relaxed);
                            let Some(body) = bodies.get(index) else { break };
                            if let Err(error) = worker.send(body) {
                                failed.store(true, Ordering::Relaxed);
                                first_error.lock().expect("lock").get_or_insert(error);
                                break;
                            }
                        }
                        outcome = worker.outcome;
                    }
                    Err(error) => {
                        failed.store(true, Ordering::Relaxed);
                        first_error.lock().expect("lock").get_or_insert(error.into());
                    }
                }
                // The receiver outlives the scope; a send cannot fail.
                let _ = finished_sender.send(outcome);
            });
        }
        drop(finished_sender);
        ready.wait();
        let started = Instant::now();
        // The clock stops when the last connection has its last answer, not
        // when the threads are joined.
        let outcomes: Vec<LoadOutcome> = finished.iter().take(connections).collect();
        (started.elapsed(), outcomes)
    });
    if outcomes.len() < connections {
        bail!("a sender thread panicked");
    }

    if let Some(error) = first_error.into_inner().expect("lock") {
        return Err(error);
    }
    let mut total = LoadOutcome {
        wall,
        ..LoadOutcome::default()
    };
    for outcome in outcomes {
        total.requests += outcome.requests;
        total.accepted += outcome.accepted;
        total.duplicates += outcome.duplicates;
        total.corrected += outcome.corrected;
        total.held += outcome.held;
        total.rejected += outcome.rejected;
        total.overloaded_retries += outcome.overloaded_retries;
        total.request_seconds.extend(outcome.request_seconds);
        for example in outcome.rejection_examples {
            if total.rejection_examples.len() < MAX_REJECTION_EXAMPLES {
                total.rejection_examples.push(example);
            }
        }
    }
    Ok(total)
}

/// The `q` quantile (nearest rank) of `values`, which it sorts.
pub fn quantile(values: &mut [f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((values.len() as f64 * q).ceil() as usize).clamp(1, values.len());
    Some(values[rank - 1])
}
