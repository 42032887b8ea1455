//! The event shipper: a bounded queue in front of one background thread that
//! batches prediction and label events as NDJSON and posts them to a
//! modelwatch server, with retries.
//!
//! Enqueueing never blocks: when the queue is full the event is dropped and
//! counted (`modelwatch_sdk_events_dropped_total`). While the server is
//! unreachable the thread retries its current batch with exponential backoff
//! and stops reading the queue, so memory stays bounded by the queue's
//! capacity plus one batch; when the server is back, shipping resumes.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tracing::{debug, info, warn};

use crate::PredictionId;
use crate::wire::{self, Actual, BatchAnswer, LabelRecord, PredictionRecord};

/// Why a [`Shipper`] could not start.
#[derive(Debug, thiserror::Error)]
pub enum ShipperError {
    /// The server address is not an `http://` or `https://` URL.
    #[error("invalid server url {url:?}: {reason}")]
    InvalidUrl {
        /// The address as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The HTTP client could not be built.
    #[error("cannot build the http client: {0}")]
    Client(String),
    /// The background thread could not be spawned.
    #[error("cannot spawn the shipper thread: {0}")]
    Spawn(#[from] std::io::Error),
}

/// The two kinds of events, as the `kind` label of the shipper's metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Prediction,
    Label,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Self::Prediction => "prediction",
            Self::Label => "label",
        }
    }

    fn path(self) -> &'static str {
        match self {
            Self::Prediction => "v1/predictions",
            Self::Label => "v1/labels",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DropLabels {
    kind: &'static str,
    reason: &'static str,
}

/// The shipper's own metrics (`modelwatch_sdk_*`), with their label sets
/// resolved once. Label values are bounded: two kinds, three reasons.
#[derive(Clone)]
struct Telemetry {
    sent_family: Family<KindLabels, Counter>,
    rejected_family: Family<KindLabels, Counter>,
    dropped_family: Family<DropLabels, Counter>,
    retries: Counter,
    /// Per kind: sent, rejected by the server, dropped with the queue full,
    /// dropped after shutdown, given up at the shutdown deadline.
    per_kind: [KindTelemetry; 2],
}

#[derive(Clone)]
struct KindTelemetry {
    sent: Counter,
    rejected: Counter,
    dropped_queue_full: Counter,
    dropped_closed: Counter,
    dropped_deadline: Counter,
}

impl Telemetry {
    fn new() -> Self {
        let sent_family = Family::<KindLabels, Counter>::default();
        let rejected_family = Family::<KindLabels, Counter>::default();
        let dropped_family = Family::<DropLabels, Counter>::default();
        let per_kind = [Kind::Prediction, Kind::Label].map(|kind| {
            let kind = kind.label();
            let dropped = |reason| dropped_family.get_or_create_owned(&DropLabels { kind, reason });
            KindTelemetry {
                sent: sent_family.get_or_create_owned(&KindLabels { kind }),
                rejected: rejected_family.get_or_create_owned(&KindLabels { kind }),
                dropped_queue_full: dropped("queue_full"),
                dropped_closed: dropped("closed"),
                dropped_deadline: dropped("shutdown_deadline"),
            }
        });
        Self {
            sent_family,
            rejected_family,
            dropped_family,
            retries: Counter::default(),
            per_kind,
        }
    }

    fn of(&self, kind: Kind) -> &KindTelemetry {
        &self.per_kind[kind as usize]
    }

    fn register(&self, registry: &mut Registry) {
        registry.register(
            "modelwatch_sdk_events_sent",
            "Events the server accepted (duplicates of a retried batch included)",
            self.sent_family.clone(),
        );
        registry.register(
            "modelwatch_sdk_events_rejected",
            "Events the server refused as invalid; they are not retried",
            self.rejected_family.clone(),
        );
        registry.register(
            "modelwatch_sdk_events_dropped",
            "Events never delivered: queue full, shipper closed, or still undelivered at the shutdown deadline",
            self.dropped_family.clone(),
        );
        registry.register(
            "modelwatch_sdk_ship_retries",
            "Failed batch posts that were retried",
            self.retries.clone(),
        );
    }
}

/// Counts of what a shipper did, from [`Shipper::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShipperStats {
    /// Predictions the server accepted.
    pub predictions_sent: u64,
    /// Labels the server accepted.
    pub labels_sent: u64,
    /// Events (both kinds) the server refused as invalid.
    pub rejected: u64,
    /// Predictions never delivered (queue full, closed, or shutdown deadline).
    pub predictions_dropped: u64,
    /// Labels never delivered.
    pub labels_dropped: u64,
    /// Failed posts that were retried.
    pub retries: u64,
}

impl ShipperStats {
    /// Events of both kinds never delivered.
    pub fn dropped(&self) -> u64 {
        self.predictions_dropped + self.labels_dropped
    }
}

enum Message {
    Prediction(PredictionRecord),
    Label(LabelRecord),
    /// Ship what is pending now, then answer.
    Flush(mpsc::Sender<()>),
    /// Wakes the thread to notice that it is stopping.
    Wake,
}

/// How to reach the server and how to batch: see [`Shipper::builder`].
#[derive(Debug, Clone)]
pub struct ShipperBuilder {
    base_url: String,
    queue_capacity: usize,
    batch_size: usize,
    flush_interval: Duration,
    initial_backoff: Duration,
    max_backoff: Duration,
    request_timeout: Duration,
    shutdown_deadline: Duration,
}

impl ShipperBuilder {
    /// How many events may wait in the queue (default 65,536). Past that,
    /// events are dropped and counted.
    pub fn queue_capacity(mut self, events: usize) -> Self {
        self.queue_capacity = events.max(1);
        self
    }

    /// The largest batch, in events (default 2,000).
    pub fn batch_size(mut self, events: usize) -> Self {
        self.batch_size = events.max(1);
        self
    }

    /// How long an event may wait for its batch to fill (default 250 ms).
    pub fn flush_interval(mut self, interval: Duration) -> Self {
        self.flush_interval = interval;
        self
    }

    /// The first and the largest wait between two attempts to post a batch
    /// (default 100 ms, doubling up to 10 s, with jitter).
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.initial_backoff = initial.max(Duration::from_millis(1));
        self.max_backoff = max.max(self.initial_backoff);
        self
    }

    /// How long one post may take (default 10 s).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// How long dropping the shipper may spend delivering what is queued
    /// (default 5 s). [`Shipper::shutdown`] takes its own deadline.
    pub fn shutdown_deadline(mut self, deadline: Duration) -> Self {
        self.shutdown_deadline = deadline;
        self
    }

    /// Starts the background thread.
    pub fn start(self) -> Result<Shipper, ShipperError> {
        let invalid = |reason: &str| ShipperError::InvalidUrl {
            url: self.base_url.clone(),
            reason: reason.to_owned(),
        };
        let mut base = reqwest::Url::parse(&self.base_url).map_err(|error| invalid(&error.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(invalid("the scheme must be http or https"));
        }
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let urls = [Kind::Prediction, Kind::Label].map(|kind| base.join(kind.path()));
        let [Ok(predictions_url), Ok(labels_url)] = urls else {
            return Err(invalid("cannot append the endpoint paths"));
        };
        let (sender, receiver) = mpsc::sync_channel(self.queue_capacity);
        let shared = Arc::new(Shared {
            telemetry: Telemetry::new(),
            stop: Stop::default(),
        });
        let (ready_sender, ready_receiver) = mpsc::channel();
        let worker = Worker {
            receiver,
            shared: shared.clone(),
            predictions_url,
            labels_url,
            batch_size: self.batch_size,
            flush_interval: self.flush_interval,
            initial_backoff: self.initial_backoff,
            max_backoff: self.max_backoff,
            request_timeout: self.request_timeout,
            jitter_state: jitter_seed(),
            failing_since: None,
        };
        let thread = std::thread::Builder::new()
            .name("modelwatch-shipper".to_owned())
            .spawn(move || worker.run(ready_sender))?;
        // The client is built, used and dropped on the shipper's thread: a
        // blocking client must not be dropped inside an async runtime.
        match ready_receiver.recv() {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                let _ = thread.join();
                return Err(ShipperError::Client(error));
            }
            Err(_) => {
                let _ = thread.join();
                return Err(ShipperError::Client("the shipper thread exited".to_owned()));
            }
        }
        Ok(Shipper {
            handle: ShipperHandle { sender, shared },
            thread: Mutex::new(Some(thread)),
            shutdown_deadline: self.shutdown_deadline,
        })
    }
}

fn jitter_seed() -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(0x6a69_u64) | 1
}

/// What the predictors and the shipper's thread share.
struct Shared {
    telemetry: Telemetry,
    stop: Stop,
}

/// Set once by [`Shipper::shutdown`]: from then on the thread drains the
/// queue and gives up on what is undelivered at the deadline.
#[derive(Default)]
struct Stop {
    requested: AtomicBool,
    /// Milliseconds after [`Stop::epoch`] at which undelivered events are
    /// given up.
    deadline_ms: AtomicU64,
    epoch: std::sync::OnceLock<Instant>,
}

impl Stop {
    fn request(&self, deadline: Instant) {
        let epoch = *self.epoch.get_or_init(Instant::now);
        let millis = deadline.saturating_duration_since(epoch).as_millis();
        self.deadline_ms
            .store(u64::try_from(millis).unwrap_or(u64::MAX), Ordering::Release);
        self.requested.store(true, Ordering::Release);
    }

    fn deadline(&self) -> Option<Instant> {
        if !self.requested.load(Ordering::Acquire) {
            return None;
        }
        let epoch = *self.epoch.get()?;
        Some(epoch + Duration::from_millis(self.deadline_ms.load(Ordering::Acquire)))
    }
}

/// A cheap clone of a [`Shipper`]'s sending side, for predictors and for
/// code that reports labels.
#[derive(Clone)]
pub struct ShipperHandle {
    sender: SyncSender<Message>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ShipperHandle {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ShipperHandle")
            .field("stats", &self.stats())
            .finish()
    }
}

impl ShipperHandle {
    /// Queues a prediction event; never blocks. Returns whether it was
    /// queued; a dropped event is counted.
    pub(crate) fn enqueue_prediction(&self, record: PredictionRecord) -> bool {
        self.enqueue(Kind::Prediction, Message::Prediction(record))
    }

    fn enqueue(&self, kind: Kind, message: Message) -> bool {
        match self.sender.try_send(message) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                self.shared.telemetry.of(kind).dropped_queue_full.inc();
                false
            }
            Err(TrySendError::Disconnected(_)) => {
                self.shared.telemetry.of(kind).dropped_closed.inc();
                false
            }
        }
    }

    /// Queues the ground truth of a prediction, for `POST /v1/labels`. Never
    /// blocks; returns whether the label was queued (a dropped label is
    /// counted).
    pub fn report_label(&self, prediction_id: PredictionId, actual: impl Into<Actual>) -> bool {
        self.report_label_with_business(prediction_id, actual, std::iter::empty::<(&'static str, f64)>())
    }

    /// Like [`report_label`](Self::report_label), with business values
    /// (for example `revenue`, `converted`) that the server sums per model.
    pub fn report_label_with_business<K: Into<Cow<'static, str>>>(
        &self,
        prediction_id: PredictionId,
        actual: impl Into<Actual>,
        business: impl IntoIterator<Item = (K, f64)>,
    ) -> bool {
        let record = LabelRecord {
            id: prediction_id,
            actual: actual.into(),
            unix_millis: unix_millis_now(),
            business: business
                .into_iter()
                .map(|(name, value)| (name.into(), value))
                .collect(),
        };
        self.enqueue(Kind::Label, Message::Label(record))
    }

    /// Waits until every event queued before this call has been delivered
    /// (or refused by the server), or `timeout` has passed. Returns whether
    /// they were.
    pub fn flush(&self, timeout: Duration) -> bool {
        let give_up_at = Instant::now() + timeout;
        let (done_sender, done_receiver) = mpsc::channel();
        let mut message = Message::Flush(done_sender);
        // The queue may be full while the thread retries; wait for room.
        loop {
            match self.sender.try_send(message) {
                Ok(()) => break,
                Err(TrySendError::Disconnected(_)) => return false,
                Err(TrySendError::Full(returned)) => {
                    if Instant::now() >= give_up_at {
                        return false;
                    }
                    message = returned;
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
        done_receiver
            .recv_timeout(give_up_at.saturating_duration_since(Instant::now()))
            .is_ok()
    }

    /// What the shipper did so far.
    pub fn stats(&self) -> ShipperStats {
        let telemetry = &self.shared.telemetry;
        let dropped = |kind| {
            let counts = telemetry.of(kind);
            counts.dropped_queue_full.get() + counts.dropped_closed.get() + counts.dropped_deadline.get()
        };
        ShipperStats {
            predictions_sent: telemetry.of(Kind::Prediction).sent.get(),
            labels_sent: telemetry.of(Kind::Label).sent.get(),
            rejected: telemetry.of(Kind::Prediction).rejected.get()
                + telemetry.of(Kind::Label).rejected.get(),
            predictions_dropped: dropped(Kind::Prediction),
            labels_dropped: dropped(Kind::Label),
            retries: telemetry.retries.get(),
        }
    }

    /// Events never delivered so far (both kinds).
    pub fn dropped(&self) -> u64 {
        self.stats().dropped()
    }

    /// Registers the shipper's own metrics in `registry`:
    /// `modelwatch_sdk_events_sent_total{kind}`,
    /// `modelwatch_sdk_events_rejected_total{kind}`,
    /// `modelwatch_sdk_events_dropped_total{kind, reason}` and
    /// `modelwatch_sdk_ship_retries_total`.
    pub fn register(&self, registry: &mut Registry) {
        self.shared.telemetry.register(registry);
    }
}

/// Ships prediction and label events to a modelwatch server from a
/// background thread. See the [module docs](self).
///
/// Dropping it delivers what is queued, for at most the
/// [`shutdown_deadline`](ShipperBuilder::shutdown_deadline).
pub struct Shipper {
    handle: ShipperHandle,
    thread: Mutex<Option<JoinHandle<()>>>,
    shutdown_deadline: Duration,
}

impl std::fmt::Debug for Shipper {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Shipper")
            .field("stats", &self.stats())
            .finish()
    }
}

impl std::ops::Deref for Shipper {
    type Target = ShipperHandle;

    fn deref(&self) -> &ShipperHandle {
        &self.handle
    }
}

impl Shipper {
    /// A shipper to the modelwatch server at `base_url`, for example
    /// `http://127.0.0.1:9400`: events go to `{base_url}/v1/predictions` and
    /// `{base_url}/v1/labels`.
    pub fn builder(base_url: impl Into<String>) -> ShipperBuilder {
        ShipperBuilder {
            base_url: base_url.into(),
            queue_capacity: 65_536,
            batch_size: 2_000,
            flush_interval: Duration::from_millis(250),
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
            shutdown_deadline: Duration::from_secs(5),
        }
    }

    /// A handle for predictors and label reporters.
    pub fn handle(&self) -> ShipperHandle {
        self.handle.clone()
    }

    /// Stops accepting events, delivers what is queued until `deadline` has
    /// passed, counts the rest as dropped, and returns the final counts.
    /// Later calls return at once.
    pub fn shutdown(&self, deadline: Duration) -> ShipperStats {
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(thread) = thread {
            self.handle.shared.stop.request(Instant::now() + deadline);
            // Wakes the thread if it waits for events; if the queue is full
            // it is not waiting. `unpark` cuts a backoff short.
            let _ = self.handle.sender.try_send(Message::Wake);
            thread.thread().unpark();
            if thread.join().is_err() {
                warn!("the modelwatch shipper thread panicked");
            }
        }
        self.stats()
    }
}

impl Drop for Shipper {
    fn drop(&mut self) {
        self.shutdown(self.shutdown_deadline);
    }
}

pub(crate) fn unix_millis_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|since_epoch| u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// What became of one post.
enum PostOutcome {
    /// The server answered for every row.
    Answered { accepted: u64, rejected: u64 },
    /// The server refused the whole batch for a reason a retry cannot fix.
    Refused { status: u16 },
    /// The server is unreachable, overloaded or failing: retry, after at
    /// least `after` if it said so.
    Retry { reason: String, after: Option<Duration> },
}

struct Worker {
    receiver: Receiver<Message>,
    shared: Arc<Shared>,
    predictions_url: reqwest::Url,
    labels_url: reqwest::Url,
    batch_size: usize,
    flush_interval: Duration,
    initial_backoff: Duration,
    max_backoff: Duration,
    request_timeout: Duration,
    jitter_state: u64,
    failing_since: Option<Instant>,
}

#[derive(Default)]
struct Pending {
    predictions: Vec<PredictionRecord>,
    labels: Vec<LabelRecord>,
    oldest: Option<Instant>,
}

impl Pending {
    fn len(&self) -> usize {
        self.predictions.len() + self.labels.len()
    }
}

impl Worker {
    fn run(mut self, ready: mpsc::Sender<Result<(), String>>) {
        // https servers: rustls with the ring provider (installed once per process;
        // an application that installed its own keeps it).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = match reqwest::blocking::Client::builder()
            .timeout(self.request_timeout)
            .build()
        {
            Ok(client) => {
                let _ = ready.send(Ok(()));
                client
            }
            Err(error) => {
                let _ = ready.send(Err(error.to_string()));
                return;
            }
        };
        let mut pending = Pending::default();
        loop {
            if self.shared.stop.deadline().is_some() {
                break;
            }
            let wait = match pending.oldest {
                Some(oldest) => self.flush_interval.saturating_sub(oldest.elapsed()),
                None => Duration::from_secs(3600),
            };
            match self.receiver.recv_timeout(wait) {
                Ok(Message::Prediction(record)) => {
                    pending.predictions.push(record);
                    pending.oldest.get_or_insert_with(Instant::now);
                }
                Ok(Message::Label(record)) => {
                    pending.labels.push(record);
                    pending.oldest.get_or_insert_with(Instant::now);
                }
                Ok(Message::Flush(done)) => {
                    self.ship(&client, &mut pending);
                    let _ = done.send(());
                    continue;
                }
                Ok(Message::Wake) | Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            let batch_is_due = pending
                .oldest
                .is_some_and(|oldest| oldest.elapsed() >= self.flush_interval);
            if pending.len() >= self.batch_size || batch_is_due {
                self.ship(&client, &mut pending);
            }
        }
        // Stopping: deliver everything queued, batch by batch, until the
        // deadline; `post` gives up (and counts) what is left then.
        loop {
            match self.receiver.try_recv() {
                Ok(Message::Prediction(record)) => pending.predictions.push(record),
                Ok(Message::Label(record)) => pending.labels.push(record),
                Ok(Message::Flush(done)) => {
                    self.ship(&client, &mut pending);
                    let _ = done.send(());
                }
                Ok(Message::Wake) => {}
                Err(_) => break,
            }
            let deadline_passed = self
                .shared
                .stop
                .deadline()
                .is_some_and(|deadline| Instant::now() >= deadline);
            // Past the deadline, the rest is counted at once below.
            if pending.len() >= self.batch_size && !deadline_passed {
                self.ship(&client, &mut pending);
            }
        }
        self.ship(&client, &mut pending);
        debug!("modelwatch shipper stopped");
    }

    /// Posts the pending predictions, then the pending labels (a label may
    /// refer to a prediction of the same round).
    fn ship(&mut self, client: &reqwest::blocking::Client, pending: &mut Pending) {
        pending.oldest = None;
        if self
            .shared
            .stop
            .deadline()
            .is_some_and(|deadline| Instant::now() >= deadline)
        {
            // Past the shutdown deadline: count, without serializing.
            let telemetry = &self.shared.telemetry;
            let prediction_count = pending.predictions.len() as u64;
            let label_count = pending.labels.len() as u64;
            telemetry
                .of(Kind::Prediction)
                .dropped_deadline
                .inc_by(prediction_count);
            telemetry.of(Kind::Label).dropped_deadline.inc_by(label_count);
            if prediction_count + label_count > 0 {
                warn!(
                    predictions = prediction_count,
                    labels = label_count,
                    "shutdown deadline passed, events dropped"
                );
            }
            pending.predictions.clear();
            pending.labels.clear();
            return;
        }
        for chunk in pending.predictions.chunks(self.batch_size) {
            let mut body = Vec::with_capacity(chunk.len() * 256);
            for record in chunk {
                wire::write_prediction(&mut body, record);
            }
            self.post(client, Kind::Prediction, body, chunk.len() as u64);
        }
        pending.predictions.clear();
        for chunk in pending.labels.chunks(self.batch_size) {
            let mut body = Vec::with_capacity(chunk.len() * 128);
            for record in chunk {
                wire::write_label(&mut body, record);
            }
            self.post(client, Kind::Label, body, chunk.len() as u64);
        }
        pending.labels.clear();
    }

    /// Posts one batch until the server answers for it, retrying with
    /// exponential backoff; once stopping, gives up at the deadline.
    fn post(&mut self, client: &reqwest::blocking::Client, kind: Kind, body: Vec<u8>, rows: u64) {
        let telemetry = self.shared.telemetry.of(kind).clone();
        let url = match kind {
            Kind::Prediction => self.predictions_url.clone(),
            Kind::Label => self.labels_url.clone(),
        };
        let mut backoff = self.initial_backoff;
        loop {
            let deadline = self.shared.stop.deadline();
            let mut timeout = self.request_timeout;
            if let Some(deadline) = deadline {
                timeout = timeout.min(deadline.saturating_duration_since(Instant::now()));
                if timeout.is_zero() {
                    telemetry.dropped_deadline.inc_by(rows);
                    warn!(
                        kind = kind.label(),
                        events = rows,
                        "shutdown deadline passed, events dropped"
                    );
                    return;
                }
            }
            let outcome = post_once(client, &url, body.clone(), timeout);
            let (reason, after) = match outcome {
                PostOutcome::Answered { accepted, rejected } => {
                    if let Some(failing_since) = self.failing_since.take() {
                        info!(
                            down_seconds = failing_since.elapsed().as_secs_f64(),
                            "modelwatch server reachable again, shipping resumed"
                        );
                    }
                    telemetry.sent.inc_by(accepted);
                    telemetry.rejected.inc_by(rejected);
                    if rejected > 0 {
                        warn!(kind = kind.label(), rejected, "the server rejected events");
                    }
                    return;
                }
                PostOutcome::Refused { status } => {
                    telemetry.rejected.inc_by(rows);
                    warn!(
                        kind = kind.label(),
                        status,
                        events = rows,
                        "the server refused a batch"
                    );
                    return;
                }
                PostOutcome::Retry { reason, after } => (reason, after),
            };
            self.shared.telemetry.retries.inc();
            if self.failing_since.is_none() {
                self.failing_since = Some(Instant::now());
                warn!(%reason, kind = kind.label(), "cannot ship to the modelwatch server, retrying with backoff");
            } else {
                debug!(%reason, kind = kind.label(), "shipping still failing");
            }
            let wait = after.unwrap_or_else(|| self.jittered(backoff));
            backoff = (backoff * 2).min(self.max_backoff);
            self.sleep(wait);
        }
    }

    /// Between half and all of `backoff`, so that many clients do not retry
    /// in step after an outage.
    fn jittered(&mut self, backoff: Duration) -> Duration {
        // xorshift64: good enough to spread retries.
        self.jitter_state ^= self.jitter_state << 13;
        self.jitter_state ^= self.jitter_state >> 7;
        self.jitter_state ^= self.jitter_state << 17;
        let fraction = 0.5 + (self.jitter_state >> 11) as f64 / (1u64 << 53) as f64 / 2.0;
        backoff.mul_f64(fraction)
    }

    /// Sleeps for `wait`, or until the deadline once stopping. `shutdown`
    /// unparks the thread to cut a sleep short.
    fn sleep(&self, wait: Duration) {
        let wake_at = Instant::now() + wait;
        loop {
            let mut wake_at = wake_at;
            if let Some(deadline) = self.shared.stop.deadline() {
                wake_at = wake_at.min(deadline);
            }
            let now = Instant::now();
            if now >= wake_at {
                return;
            }
            std::thread::park_timeout(wake_at - now);
        }
    }
}

fn post_once(
    client: &reqwest::blocking::Client,
    url: &reqwest::Url,
    body: Vec<u8>,
    timeout: Duration,
) -> PostOutcome {
    let response = client
        .post(url.clone())
        .header(reqwest::header::CONTENT_TYPE, "application/x-ndjson")
        .timeout(timeout)
        .body(body)
        .send();
    let response = match response {
        Ok(response) => response,
        Err(error) => {
            return PostOutcome::Retry {
                reason: error.to_string(),
                after: None,
            };
        }
    };
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    match status {
        // 422 has the same shape as 200: every row was rejected.
        200 | 422 => match response.json::<BatchAnswer>() {
            Ok(answer) => PostOutcome::Answered {
                accepted: answer.accepted,
                rejected: answer.rejected.len() as u64,
            },
            Err(error) => PostOutcome::Retry {
                reason: format!("unreadable answer ({status}): {error}"),
                after: None,
            },
        },
        408 | 429 | 500..=599 => PostOutcome::Retry {
            reason: format!("server answered {status}"),
            after: retry_after,
        },
        _ => PostOutcome::Refused { status },
    }
}
