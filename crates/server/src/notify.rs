//! Notifications and remediation: what each evaluation calls for is queued in
//! the durable outbox, and a thread of its own delivers it.
//!
//! The evaluator calls [`Notifier::record`] after every evaluation, inside the
//! transaction that records the alert state and history, so that what is to
//! be sent is durable exactly when the state change is. [`start_delivery`]
//! runs a thread that delivers the outbox with retries.
//!
//! - Alertmanagers (API v2) get each alert when it fires, again every
//!   `resend_interval` while it fires (Alertmanager deduplicates), and once
//!   more with `endsAt` when it resolves. Pending alerts are not sent.
//! - Webhooks get an Alertmanager webhook payload (version 4) once per firing
//!   and once per resolution.
//! - Remediation actions: see [`crate::remediation`].
//!
//! Invariants of the outbox:
//! - Nothing is dropped while a receiver is down: an entry leaves the outbox
//!   when it was delivered (2xx), or refused for good (a 4xx other than 408
//!   and 429: retrying cannot help), and for remediations after
//!   [`remediation::MAX_ATTEMPTS`].
//! - Each receiver gets its entries in the order they were queued, so a
//!   resolution never overtakes its firing.
//! - No storm: a re-send is queued only when nothing for the same alert and
//!   receiver is still undelivered, so a long outage leaves at most one
//!   re-send per alert and receiver behind.
//! - Secrets (action headers) stay in the config: they are neither queued
//!   nor logged.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use modelwatch_core::alerting::{Alert, AlertState, Transition};
use modelwatch_store::{AlertStore, AlertWriter, OutboxEntry, StoreError, Synchronous};
use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use crate::config::{Config, ReceiverConfig};
use crate::remediation::{self, AuditRecord, Decision};

/// The first retry waits this long; each further one twice as long as the
/// one before, up to [`MAX_BACKOFF_MS`], less up to a fifth of jitter.
pub const INITIAL_BACKOFF_MS: i64 = 1_000;
pub const MAX_BACKOFF_MS: i64 = 5 * 60_000;
/// How often the delivery thread looks for due entries when idle.
const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// One request may take this long before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The Alertmanager webhook payload version we produce.
const WEBHOOK_VERSION: &str = "4";

pub(crate) fn format_time(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|timestamp| timestamp.to_string())
        .unwrap_or_else(|_| ms.to_string())
}

/// Decides what to send for each evaluation: one notification per
/// transition and receiver, re-sends of firing alerts to Alertmanagers, and
/// remediation actions (deduplicated, with a cooldown).
pub struct Notifier {
    config: Arc<Config>,
    /// The remediation actions of each rule, by rule id.
    actions_by_rule: HashMap<String, Vec<String>>,
    /// When each firing alert was last queued for each Alertmanager, by
    /// receiver and alert key. Lost on restart, which costs one early re-send.
    last_queued_ms: HashMap<(String, String), i64>,
}

/// Leaves the config out: it holds the actions' secret headers.
impl std::fmt::Debug for Notifier {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Notifier")
            .field("actions_by_rule", &self.actions_by_rule)
            .field("last_queued_ms", &self.last_queued_ms)
            .finish_non_exhaustive()
    }
}

impl Notifier {
    pub fn new(config: Arc<Config>) -> Self {
        let rules = config.rules().unwrap_or_else(|error| {
            // `Config::parse` has validated the rules already.
            warn!(%error, "invalid alert rules: no remediation actions will run");
            Vec::new()
        });
        let actions_by_rule = rules
            .into_iter()
            .filter(|rule| !rule.actions.is_empty())
            .map(|rule| (rule.id(), rule.actions))
            .collect();
        Self {
            config,
            actions_by_rule,
            last_queued_ms: HashMap::new(),
        }
    }

    /// Queues, in the evaluator's transaction, what this evaluation's
    /// `transitions` and still-`active` alerts call for.
    pub fn record(
        &mut self,
        writer: &mut AlertWriter<'_>,
        transitions: &[Transition],
        active: &[Alert],
        now_ms: i64,
    ) -> Result<(), StoreError> {
        for transition in transitions {
            let alert = &transition.alert;
            let key = alert_key(alert);
            match (transition.from, alert.state) {
                (from, AlertState::Firing) if from != AlertState::Firing => {
                    for receiver in &self.config.receivers {
                        writer.enqueue_keyed(&receiver.name, &key, &notification(receiver, alert), now_ms)?;
                        self.last_queued_ms
                            .insert((receiver.name.clone(), key.clone()), now_ms);
                    }
                    if let Some(actions) = self.actions_by_rule.get(&alert.rule) {
                        remediation::decide(writer, &self.config.remediation, actions, alert, now_ms)?;
                    }
                }
                (AlertState::Firing, AlertState::Resolved) => {
                    for receiver in &self.config.receivers {
                        writer.enqueue_keyed(&receiver.name, &key, &notification(receiver, alert), now_ms)?;
                        self.last_queued_ms.remove(&(receiver.name.clone(), key.clone()));
                    }
                }
                // Pending alerts, and pending ones that ended, are not sent.
                _ => {}
            }
        }
        let firing: Vec<&Alert> = active
            .iter()
            .filter(|alert| alert.state == AlertState::Firing)
            .collect();
        for receiver in self
            .config
            .receivers
            .iter()
            .filter(|receiver| receiver.alertmanager.is_some())
        {
            for alert in &firing {
                let slot = (receiver.name.clone(), alert_key(alert));
                let resend_due = self
                    .last_queued_ms
                    .get(&slot)
                    .is_none_or(|&queued_ms| now_ms - queued_ms >= receiver.resend_interval.ms);
                if resend_due && !writer.is_queued(&slot.0, &slot.1)? {
                    writer.enqueue_keyed(&slot.0, &slot.1, &notification(receiver, alert), now_ms)?;
                    self.last_queued_ms.insert(slot, now_ms);
                }
            }
        }
        // Forget alerts that no longer fire.
        let firing_keys: std::collections::HashSet<String> =
            firing.iter().map(|alert| alert_key(alert)).collect();
        self.last_queued_ms
            .retain(|(_, key), _| firing_keys.contains(key));
        Ok(())
    }
}

/// Names an alert instance's series in the outbox: its rule and model.
fn alert_key(alert: &Alert) -> String {
    serde_json::json!([alert.rule, alert.model]).to_string()
}

/// The outbox body of `alert` (firing or resolved) for `receiver`.
fn notification(receiver: &ReceiverConfig, alert: &Alert) -> String {
    let outgoing = if receiver.alertmanager.is_some() {
        Outgoing::Alertmanager {
            alert: alertmanager_alert(alert),
        }
    } else {
        Outgoing::Webhook {
            message: webhook_message(&receiver.name, alert),
        }
    };
    outgoing.to_json()
}

// ---------------------------------------------------------------------------
// Wire types: the outbox body, and what receivers get
// ---------------------------------------------------------------------------

/// What an outbox entry holds (as JSON). Receivers' URLs and actions' URLs
/// and headers are looked up in the config when the entry is sent, so that
/// secrets never reach the database.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outgoing {
    Alertmanager {
        /// `endsAt` is empty while the alert fires: it is set when the entry
        /// is sent (see [`alertmanager_ends_at_ms`]).
        alert: AlertmanagerAlert,
    },
    Webhook {
        message: WebhookMessage,
    },
    Remediation {
        action: String,
        /// The audit-log row that records the outcome.
        audit_id: i64,
        audit: AuditRecord,
        /// The rendered body.
        body: String,
    },
}

impl Outgoing {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("an outbox entry serializes")
    }
}

/// One alert as Alertmanager's API v2 (`POST /api/v2/alerts`) takes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AlertmanagerAlert {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub starts_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<String>,
    #[serde(rename = "generatorURL")]
    pub generator_url: String,
}

/// Alertmanager's webhook payload, version 4.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookMessage {
    pub version: String,
    pub group_key: String,
    pub truncated_alerts: u64,
    pub status: String,
    pub receiver: String,
    pub group_labels: BTreeMap<String, String>,
    pub common_labels: BTreeMap<String, String>,
    pub common_annotations: BTreeMap<String, String>,
    #[serde(rename = "externalURL")]
    pub external_url: String,
    pub alerts: Vec<WebhookAlert>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookAlert {
    pub status: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub starts_at: String,
    pub ends_at: String,
    #[serde(rename = "generatorURL")]
    pub generator_url: String,
    pub fingerprint: String,
}

/// Where an alert can be looked at. Relative until the server knows the URL
/// it is reached at.
fn generator_url() -> String {
    "/v1/alerts".to_owned()
}

fn alertmanager_alert(alert: &Alert) -> AlertmanagerAlert {
    AlertmanagerAlert {
        labels: alert.labels.clone(),
        annotations: alert.annotations.clone(),
        starts_at: format_time(alert.active_since_ms),
        ends_at: match alert.state {
            AlertState::Resolved => Some(format_time(
                alert.resolved_at_ms.unwrap_or(alert.last_evaluated_ms),
            )),
            _ => None,
        },
        generator_url: generator_url(),
    }
}

/// When a firing alert sent to an Alertmanager at `sent_ms` ends unless it is
/// sent again: as Prometheus does, four re-send intervals later, so that a
/// few lost re-sends do not resolve it, and a modelwatch that stopped
/// does not leave it firing for ever.
pub fn alertmanager_ends_at_ms(sent_ms: i64, resend_interval_ms: i64) -> i64 {
    sent_ms + 4 * resend_interval_ms.max(1000)
}

fn webhook_message(receiver: &str, alert: &Alert) -> WebhookMessage {
    let status = if alert.state == AlertState::Resolved {
        "resolved"
    } else {
        "firing"
    };
    let group_labels: BTreeMap<String, String> = alert
        .labels
        .iter()
        .filter(|(name, _)| matches!(name.as_str(), "alertname" | "model_name"))
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect();
    let group_key = format!(
        "{{}}:{{{}}}",
        group_labels
            .iter()
            .map(|(name, value)| format!("{name}={value:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    WebhookMessage {
        version: WEBHOOK_VERSION.to_owned(),
        group_key,
        truncated_alerts: 0,
        status: status.to_owned(),
        receiver: receiver.to_owned(),
        group_labels,
        common_labels: alert.labels.clone(),
        common_annotations: alert.annotations.clone(),
        external_url: String::new(),
        alerts: vec![WebhookAlert {
            status: status.to_owned(),
            labels: alert.labels.clone(),
            annotations: alert.annotations.clone(),
            starts_at: format_time(alert.active_since_ms),
            // Alertmanager's "not ended" time.
            ends_at: match alert.state {
                AlertState::Resolved => format_time(alert.resolved_at_ms.unwrap_or(alert.last_evaluated_ms)),
                _ => "0001-01-01T00:00:00Z".to_owned(),
            },
            generator_url: generator_url(),
            fingerprint: fingerprint(&alert.labels),
        }],
    }
}

/// The fingerprint Prometheus and Alertmanager give a label set (FNV-1a over
/// the sorted names and values, each followed by the byte 0xff), as 16 hex
/// digits, so that our webhook payloads name alerts as Alertmanager would.
pub fn fingerprint(labels: &BTreeMap<String, String>) -> String {
    const OFFSET: u64 = 14695981039346656037;
    const PRIME: u64 = 1099511628211;
    let mut hash = OFFSET;
    let mut add = |bytes: &[u8]| {
        for &byte in bytes {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(PRIME);
        }
    };
    for (name, value) in labels {
        add(name.as_bytes());
        add(&[0xff]);
        add(value.as_bytes());
        add(&[0xff]);
    }
    format!("{hash:016x}")
}

// ---------------------------------------------------------------------------
// Delivery
// ---------------------------------------------------------------------------

/// Starts the delivery thread; it stops once `stopping` is set.
pub fn start_delivery(
    config: Arc<Config>,
    database: PathBuf,
    synchronous: Synchronous,
    stopping: Arc<AtomicBool>,
    clock: crate::state::Clock,
) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("modelwatch-notify".into())
        .spawn(move || {
            // https receivers: rustls with the ring provider (installed once per process).
            let _ = rustls::crypto::ring::default_provider().install_default();
            let client = match reqwest::blocking::Client::builder()
                .timeout(REQUEST_TIMEOUT)
                .connect_timeout(REQUEST_TIMEOUT / 2)
                .build()
            {
                Ok(client) => client,
                Err(error) => {
                    warn!(%error, "cannot build the HTTP client: no notification will be delivered");
                    return;
                }
            };
            Delivery {
                config,
                client,
                clock,
            }
            .run(&database, synchronous, &stopping);
        })
        .expect("spawning the notification thread")
}

struct Delivery {
    config: Arc<Config>,
    client: reqwest::blocking::Client,
    /// The server's clock: the evaluator schedules the outbox on it.
    clock: crate::state::Clock,
}

/// What sending one entry came to.
enum Outcome {
    Delivered {
        status: u16,
    },
    /// Worth trying again later (the receiver is down, overloaded, failing).
    Retry {
        reason: String,
    },
    /// Retrying cannot help (refused with a 4xx, no longer configured).
    Drop {
        reason: String,
    },
}

impl Delivery {
    fn run(&self, database: &std::path::Path, synchronous: Synchronous, stopping: &AtomicBool) {
        let mut store: Option<AlertStore> = None;
        while !stopping.load(Ordering::Acquire) {
            let alerts = match &mut store {
                Some(alerts) => alerts,
                None => match AlertStore::open(database, synchronous) {
                    Ok(alerts) => store.insert(alerts),
                    Err(error) => {
                        warn!(%error, "cannot open the outbox; trying again");
                        pause(stopping, Duration::from_secs(1));
                        continue;
                    }
                },
            };
            match self.deliver_due(alerts, stopping) {
                Ok(0) => pause(stopping, POLL_INTERVAL),
                Ok(_) => {}
                Err(error) => {
                    warn!(%error, "outbox read or update failed; reopening it");
                    store = None;
                    pause(stopping, Duration::from_secs(1));
                }
            }
        }
    }

    /// Sends the oldest due entry of each receiver; returns how many it sent.
    fn deliver_due(&self, alerts: &mut AlertStore, stopping: &AtomicBool) -> Result<usize, StoreError> {
        let heads = alerts.due_heads(self.clock.now_ms())?;
        for entry in &heads {
            if stopping.load(Ordering::Acquire) {
                break;
            }
            let outgoing = serde_json::from_str::<Outgoing>(&entry.body);
            let outcome = match &outgoing {
                Ok(outgoing) => self.send(entry, outgoing),
                Err(error) => Outcome::Drop {
                    reason: format!("unreadable outbox entry: {error}"),
                },
            };
            self.settle(alerts, entry, outgoing.ok(), outcome)?;
        }
        Ok(heads.len())
    }

    fn send(&self, entry: &OutboxEntry, outgoing: &Outgoing) -> Outcome {
        match outgoing {
            Outgoing::Alertmanager { alert } => {
                let Some(receiver) = self.receiver(&entry.receiver) else {
                    return gone(&entry.receiver);
                };
                let Some(base) = &receiver.alertmanager else {
                    return gone(&entry.receiver);
                };
                let mut alert = alert.clone();
                if alert.ends_at.is_none() {
                    alert.ends_at = Some(format_time(alertmanager_ends_at_ms(
                        self.clock.now_ms(),
                        receiver.resend_interval.ms,
                    )));
                }
                let url = format!("{}/api/v2/alerts", base.trim_end_matches('/'));
                classify(self.client.post(url).json(&[alert]).send())
            }
            Outgoing::Webhook { message } => {
                let Some(url) = self
                    .receiver(&entry.receiver)
                    .and_then(|receiver| receiver.webhook.as_ref())
                else {
                    return gone(&entry.receiver);
                };
                classify(self.client.post(url).json(message).send())
            }
            Outgoing::Remediation { action, body, .. } => {
                let Some(config) = self.config.remediation.actions.get(action) else {
                    return Outcome::Drop {
                        reason: "the action is no longer configured".to_owned(),
                    };
                };
                if !remediation::allowlisted(&config.url, &self.config.remediation.allowlist) {
                    return Outcome::Drop {
                        reason: "the URL is not under any remediation.allowlist prefix".to_owned(),
                    };
                }
                let method = if config.method == "PUT" {
                    reqwest::Method::PUT
                } else {
                    reqwest::Method::POST
                };
                let mut request = self
                    .client
                    .request(method, &config.url)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.clone());
                for (name, value) in &config.headers {
                    request = request.header(name, value);
                }
                // The URL may carry a token: errors are reported without it.
                classify(request.send().map_err(reqwest::Error::without_url))
            }
        }
    }

    fn receiver(&self, name: &str) -> Option<&ReceiverConfig> {
        self.config
            .receivers
            .iter()
            .find(|receiver| receiver.name == name)
    }

    /// Records `outcome`: removes the entry, or schedules its retry; and for
    /// a remediation, writes the outcome to its audit row.
    fn settle(
        &self,
        alerts: &mut AlertStore,
        entry: &OutboxEntry,
        outgoing: Option<Outgoing>,
        outcome: Outcome,
    ) -> Result<(), StoreError> {
        let now = self.clock.now_ms();
        let attempts = entry.attempts + 1;
        let remediation = match outgoing {
            Some(Outgoing::Remediation { audit_id, audit, .. }) => Some((audit_id, audit)),
            _ => None,
        };
        alerts.transaction(|writer| {
            let audit = |decision: Decision, detail: Option<String>| {
                remediation
                    .as_ref()
                    .map(|(id, queued)| (*id, remediation::outcome(queued, decision, attempts, detail, now)))
            };
            let update = match outcome {
                Outcome::Delivered { status } => {
                    writer.delivered(entry.id)?;
                    debug!(receiver = %entry.receiver, attempts, status, "delivered");
                    audit(Decision::Delivered, Some(format!("answered {status}")))
                }
                Outcome::Drop { reason } => {
                    writer.delivered(entry.id)?;
                    warn!(receiver = %entry.receiver, attempts, %reason, "notification dropped: retrying cannot help");
                    audit(Decision::Failed, Some(reason))
                }
                Outcome::Retry { reason } if remediation.is_some() && attempts >= remediation::MAX_ATTEMPTS => {
                    writer.delivered(entry.id)?;
                    warn!(receiver = %entry.receiver, attempts, %reason, "remediation failed: out of attempts");
                    audit(Decision::Failed, Some(reason))
                }
                Outcome::Retry { reason } => {
                    let delay_ms = backoff_ms(attempts, entry.id ^ now);
                    writer.postpone(entry.id, attempts, now + delay_ms)?;
                    warn!(
                        receiver = %entry.receiver,
                        attempts,
                        retry_in_ms = delay_ms,
                        %reason,
                        "delivery failed; will retry"
                    );
                    audit(Decision::Retrying, Some(reason))
                }
            };
            if let Some((audit_id, body)) = update {
                writer.update_remediation(audit_id, &body)?;
            }
            Ok(())
        })
    }
}

fn gone(receiver: &str) -> Outcome {
    Outcome::Drop {
        reason: format!("receiver {receiver:?} is no longer configured"),
    }
}

fn classify(result: Result<reqwest::blocking::Response, reqwest::Error>) -> Outcome {
    match result {
        Ok(response) => {
            let status = response.status();
            if status.is_success() {
                return Outcome::Delivered {
                    status: status.as_u16(),
                };
            }
            let answer: String = response.text().unwrap_or_default().chars().take(200).collect();
            let reason = format!("answered {status}: {}", answer.trim());
            let retryable = !status.is_client_error()
                || status == reqwest::StatusCode::REQUEST_TIMEOUT
                || status == reqwest::StatusCode::TOO_MANY_REQUESTS;
            if retryable {
                Outcome::Retry { reason }
            } else {
                Outcome::Drop { reason }
            }
        }
        Err(error) => Outcome::Retry {
            reason: error.to_string(),
        },
    }
}

/// The wait before retry number `attempts` (1 for the first retry): doubling
/// from [`INITIAL_BACKOFF_MS`] to [`MAX_BACKOFF_MS`], less up to a fifth so
/// that entries that failed together do not retry in lockstep.
pub fn backoff_ms(attempts: i64, seed: i64) -> i64 {
    let doublings = (attempts - 1).clamp(0, 30) as u32;
    let full = INITIAL_BACKOFF_MS
        .saturating_mul(1 << doublings)
        .min(MAX_BACKOFF_MS);
    let jitter = (splitmix64(seed as u64) % 1000) as i64;
    full - full / 5 * jitter / 1000
}

fn splitmix64(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E3779B97F4A7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
    z ^ (z >> 31)
}

/// Sleeps for `duration`, or less once `stopping` is set.
fn pause(stopping: &AtomicBool, duration: Duration) {
    let slice = Duration::from_millis(50);
    let mut left = duration;
    while !left.is_zero() && !stopping.load(Ordering::Acquire) {
        let step = left.min(slice);
        std::thread::sleep(step);
        left -= step;
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        info!("notification delivery stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_fnv1a_like_prometheus() {
        // prometheus/common: the empty label set's fingerprint is the FNV-1a
        // offset basis. (The Alertmanager test compares real fingerprints.)
        assert_eq!(fingerprint(&BTreeMap::new()), "cbf29ce484222325");
        let labels = BTreeMap::from([("alertname".to_owned(), "Test".to_owned())]);
        assert_ne!(fingerprint(&labels), fingerprint(&BTreeMap::new()));
    }

    #[test]
    fn backoff_doubles_to_the_cap_with_bounded_jitter() {
        for seed in 0..200 {
            let delays: Vec<i64> = (1..=12).map(|attempts| backoff_ms(attempts, seed)).collect();
            for (index, delay) in delays.iter().enumerate() {
                let full = (INITIAL_BACKOFF_MS << index).min(MAX_BACKOFF_MS);
                assert!(*delay <= full && *delay >= full - full / 5, "{delays:?}");
            }
        }
        assert_ne!(backoff_ms(3, 1), backoff_ms(3, 2));
    }
}
