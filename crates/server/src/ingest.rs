//! Durable ingestion: a dedicated writer thread takes parsed batches from a
//! bounded queue and commits them in groups (one SQLite transaction for many
//! requests), then applies the new events to the in-memory aggregates. A row
//! is acknowledged only after the transaction that stored it has committed.

use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use modelwatch_core::codec::{self, Dictionary};
use modelwatch_core::event::{PredictionEvent, ScoredPrediction, TimestampMs};
use modelwatch_core::series::{
    Aggregates, AggregationConfig, Changes, Delta, ModelKind, PendingModels, Refusal,
};
use modelwatch_store::{Checkpointer, PredictionRow, SqliteStore, StoreError};
use tokio::sync::oneshot;
use tracing::{error, info, warn};

use crate::labels::{LabelOutcome, LabelState, ParsedLabel, QualityOp};
use crate::state::Shared;

/// One validated row of a request, as the writer needs it: the parsed event
/// itself is dropped on the parsing thread (its many small allocations are
/// cheapest to free there), and the writer decodes the stored form in the
/// rare cases that need more.
#[derive(Debug)]
pub struct ParsedRow {
    /// Position of the row in the request.
    pub index: usize,
    pub prediction_id: String,
    /// Index into the job's `models`.
    pub model: u32,
    /// What the event says of its model's kind (none for failed requests).
    pub kind: Option<ModelKind>,
    /// The event in its stored form, encoded off the writer thread.
    pub stored: Vec<u8>,
}

/// Names of the stored form, shared by the parsing threads (which assign ids)
/// and the writer (which persists them before any row that uses them).
#[derive(Debug, Default)]
pub struct SharedNames {
    dictionary: RwLock<Dictionary>,
}

impl SharedNames {
    pub fn new(dictionary: Dictionary) -> Self {
        Self {
            dictionary: RwLock::new(dictionary),
        }
    }

    /// A per-request view that caches ids, so that most lookups take no lock.
    pub fn for_request(&self) -> RequestNames<'_> {
        RequestNames {
            shared: self,
            cache: rustc_hash::FxHashMap::default(),
        }
    }

    /// Decodes what the label join needs of a stored prediction.
    pub fn decode_scored(&self, body: &[u8]) -> Result<ScoredPrediction, codec::DecodeError> {
        let dictionary = self.dictionary.read().expect("names lock");
        codec::decode_scored(body, &*dictionary)
    }

    fn names_since(&self, len: usize) -> Vec<String> {
        self.dictionary
            .read()
            .expect("names lock")
            .names_since(len)
            .to_vec()
    }
}

pub struct RequestNames<'a> {
    shared: &'a SharedNames,
    cache: rustc_hash::FxHashMap<String, u32>,
}

impl codec::NameIds for RequestNames<'_> {
    fn id_of(&mut self, name: &str) -> u32 {
        if let Some(id) = self.cache.get(name) {
            return *id;
        }
        let known = self.shared.dictionary.read().expect("names lock").get(name);
        let id = known.unwrap_or_else(|| self.shared.dictionary.write().expect("names lock").id_of(name));
        self.cache.insert(name.to_owned(), id);
        id
    }
}

/// What became of one row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowOutcome {
    Stored,
    /// A prediction with this id was already stored; it is not counted again.
    Duplicate,
    Refused(Refusal),
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct StorageFailure(pub String);

type Reply<T> = oneshot::Sender<Result<Vec<T>, StorageFailure>>;

enum Job {
    Predictions {
        rows: Vec<ParsedRow>,
        /// The models the rows name (most requests name one).
        models: Vec<String>,
        /// The rows aggregated under the names as sent.
        delta: Delta,
        reply: Reply<RowOutcome>,
    },
    Labels {
        rows: Vec<ParsedLabel>,
        /// The rows' positions in the order to process them in: by id, rows
        /// of one id in their order, so that consecutive lookups share pages.
        order: Vec<u32>,
        received_ms: TimestampMs,
        reply: Reply<LabelOutcome>,
    },
    /// Stored predictions past the label horizon, and their labels.
    Prune {
        prediction_ids: Vec<String>,
        reply: Reply<bool>,
    },
}

impl Job {
    fn len(&self) -> usize {
        match self {
            Job::Predictions { rows, .. } => rows.len(),
            Job::Labels { rows, .. } => rows.len(),
            Job::Prune { prediction_ids, .. } => prediction_ids.len(),
        }
    }
}

/// What a group commit answers, per job in order.
enum JobOutcomes {
    Predictions(Vec<RowOutcome>),
    Labels(Vec<LabelOutcome>),
    Pruned(Vec<bool>),
}

/// Why a batch was not queued.
#[derive(Debug, PartialEq, Eq)]
pub enum SubmitError {
    QueueFull,
    Closed,
}

/// The sending side of the writer's queue.
#[derive(Clone)]
pub struct IngestQueue {
    sender: mpsc::Sender<Job>,
    shared: Arc<Shared>,
}

impl IngestQueue {
    /// Queues rows for the writer; the answer arrives once they are durable.
    pub fn submit(
        &self,
        rows: Vec<ParsedRow>,
        models: Vec<String>,
        delta: Delta,
    ) -> Result<oneshot::Receiver<Result<Vec<RowOutcome>, StorageFailure>>, SubmitError> {
        let (reply, receiver) = oneshot::channel();
        self.enqueue(Job::Predictions {
            rows,
            models,
            delta,
            reply,
        })?;
        Ok(receiver)
    }

    /// Queues labels for the writer, to be processed in `order` (each row's
    /// position once; rows of one id in their order); the answer arrives once
    /// they are durable.
    pub fn submit_labels(
        &self,
        rows: Vec<ParsedLabel>,
        order: Vec<u32>,
        received_ms: TimestampMs,
    ) -> Result<oneshot::Receiver<Result<Vec<LabelOutcome>, StorageFailure>>, SubmitError> {
        debug_assert_eq!(order.len(), rows.len());
        let (reply, receiver) = oneshot::channel();
        self.enqueue(Job::Labels {
            rows,
            order,
            received_ms,
            reply,
        })?;
        Ok(receiver)
    }

    /// Queues the deletion of predictions past the label horizon; the answer
    /// says, per id, whether a prediction was deleted.
    pub fn submit_prune(
        &self,
        prediction_ids: Vec<String>,
    ) -> Result<oneshot::Receiver<Result<Vec<bool>, StorageFailure>>, SubmitError> {
        let (reply, receiver) = oneshot::channel();
        self.enqueue(Job::Prune {
            prediction_ids,
            reply,
        })?;
        Ok(receiver)
    }

    fn enqueue(&self, job: Job) -> Result<(), SubmitError> {
        let count = job.len();
        let limit = self.shared.config.ingest.max_queued_events;
        let queued = &self.shared.telemetry.queued_events;
        // Reserve room first, so that concurrent requests cannot overshoot.
        let before = queued.fetch_add(count, Ordering::AcqRel);
        if before > 0 && before + count > limit {
            queued.fetch_sub(count, Ordering::AcqRel);
            return Err(SubmitError::QueueFull);
        }
        if self.sender.send(job).is_err() {
            queued.fetch_sub(count, Ordering::AcqRel);
            return Err(SubmitError::Closed);
        }
        Ok(())
    }
}

/// Loads the stored form's name dictionary.
pub fn load_names(store: &SqliteStore) -> Result<SharedNames, StoreError> {
    Ok(SharedNames::new(Dictionary::from_names(store.load_names()?)))
}

/// Loads every persisted aggregate into memory.
pub fn load_aggregates(store: &SqliteStore, config: AggregationConfig) -> Result<Aggregates, StoreError> {
    let mut aggregates = Aggregates::new(config);
    store.load_aggregates(|key, state| {
        aggregates
            .restore(key.clone(), state)
            .map_err(|error| StoreError::Corrupt(format!("{key:?}: {error}")))
    })?;
    store.load_quality(|key, state| {
        aggregates
            .restore_quality(key.clone(), state)
            .map_err(|error| StoreError::Corrupt(format!("quality {key:?}: {error}")))
    })?;
    store.load_drift(|key, state| {
        aggregates
            .restore_drift(key.clone(), state)
            .map_err(|error| StoreError::Corrupt(format!("drift {key:?}: {error}")))
    })?;
    Ok(aggregates)
}

/// Starts the writer thread; it exits when every queue handle is dropped and
/// the queue is drained.
pub fn start_writer(store: SqliteStore, shared: Arc<Shared>) -> (IngestQueue, std::thread::JoinHandle<()>) {
    let (sender, receiver) = mpsc::channel::<Job>();
    let queue = IngestQueue {
        sender,
        shared: shared.clone(),
    };
    let checkpointer = Checkpointer::open(&store);
    let handle = std::thread::Builder::new()
        .name("modelwatch-writer".into())
        .spawn(move || {
            let (stop_checkpoints, stopped) = mpsc::channel::<()>();
            let checkpoints = match checkpointer {
                Ok(checkpointer) => Some(
                    std::thread::Builder::new()
                        .name("modelwatch-checkpoint".into())
                        .spawn(move || run_checkpoints(checkpointer, stopped))
                        .expect("spawning the checkpoint thread"),
                ),
                Err(error) => {
                    warn!(%error, "no checkpoint connection; the WAL is checkpointed on shutdown only");
                    None
                }
            };
            run_writer(store, shared, receiver);
            drop(stop_checkpoints);
            if let Some(checkpoints) = checkpoints {
                let _ = checkpoints.join();
            }
        })
        .expect("spawning the writer thread");
    (queue, handle)
}

/// Copies the WAL into the database every few hundred milliseconds, until
/// `stop` is dropped.
fn run_checkpoints(checkpointer: Checkpointer, stop: mpsc::Receiver<()>) {
    while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(CHECKPOINT_INTERVAL) {
        if let Err(error) = checkpointer.passive() {
            warn!(%error, "WAL checkpoint failed; retrying");
        }
    }
}

const CHECKPOINT_INTERVAL: std::time::Duration = std::time::Duration::from_millis(250);

/// Past this size, the writer checkpoints the WAL itself (blocking new
/// commits meanwhile). The checkpoint thread's passive checkpoints cannot
/// reset the WAL while commits keep coming, and a WAL that only grows makes
/// every read slower and can fill the disk.
const WAL_LIMIT_BYTES: u64 = 512 * 1024 * 1024;

fn bound_wal(store: &SqliteStore, shared: &Shared) {
    if store.wal_bytes() <= WAL_LIMIT_BYTES {
        return;
    }
    let started = Instant::now();
    match store.checkpoint() {
        Ok(false) => warn!(
            "the WAL passed {} MiB, but a reader kept the checkpoint from truncating it; retrying after the next commit",
            WAL_LIMIT_BYTES >> 20
        ),
        Ok(true) => {
            shared.telemetry.wal_truncations.fetch_add(1, Ordering::Relaxed);
            info!(
                seconds = started.elapsed().as_secs_f64(),
                "the WAL passed {} MiB: checkpointed and truncated it",
                WAL_LIMIT_BYTES >> 20
            );
        }
        Err(error) => warn!(%error, "cannot checkpoint the oversized WAL; retrying after the next commit"),
    }
}

/// How often held labels are checked against their TTL.
const EXPIRY_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);

fn run_writer(mut store: SqliteStore, shared: Arc<Shared>, receiver: mpsc::Receiver<Job>) {
    let max_events = shared.config.ingest.max_events_per_commit;
    let mut persisted_names = shared.names.dictionary.read().expect("names lock").len();
    let mut labels = match LabelState::load(&store) {
        Ok(labels) => labels,
        Err(error) => {
            error!(%error, "cannot load held labels; marking not ready");
            shared.ready.store(false, Ordering::Release);
            LabelState::default()
        }
    };
    labels.publish(&shared.telemetry);
    let mut last_expiry = Instant::now();
    // Freeing parsed events costs as much as a good part of the commit: it
    // happens on its own thread, off the serial write path.
    let (garbage, garbage_receiver) = mpsc::channel::<Box<dyn std::any::Any + Send>>();
    let janitor = std::thread::Builder::new()
        .name("modelwatch-free".into())
        .spawn(move || garbage_receiver.into_iter().for_each(drop))
        .expect("spawning the janitor thread");
    loop {
        if last_expiry.elapsed() >= EXPIRY_INTERVAL {
            last_expiry = Instant::now();
            expire_held_labels(&mut store, &shared, &mut labels);
        }
        let first = match receiver.recv_timeout(EXPIRY_INTERVAL) {
            Ok(job) => job,
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        let mut group_events = first.len();
        let mut jobs = vec![first];
        while group_events < max_events {
            match receiver.try_recv() {
                Ok(job) => {
                    group_events += job.len();
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        let started = Instant::now();
        let result = commit_group(
            &mut store,
            &shared.names,
            &mut persisted_names,
            &shared.aggregates,
            &mut labels,
            &jobs,
        );
        shared.telemetry.record_commit(started.elapsed().as_secs_f64());
        bound_wal(&store, &shared);
        shared
            .telemetry
            .queued_events
            .fetch_sub(group_events, Ordering::AcqRel);
        match result {
            Ok(outcomes) => {
                labels.publish(&shared.telemetry);
                for (job, outcomes) in jobs.into_iter().zip(outcomes) {
                    // The client may have gone away; its rows are stored anyway.
                    match (job, outcomes) {
                        (
                            Job::Predictions {
                                rows, delta, reply, ..
                            },
                            JobOutcomes::Predictions(outcomes),
                        ) => {
                            shared.telemetry.record_outcomes(&outcomes);
                            let _ = reply.send(Ok(outcomes));
                            let _ = garbage.send(Box::new((rows, delta)));
                        }
                        (Job::Labels { reply, rows, .. }, JobOutcomes::Labels(outcomes)) => {
                            let _ = reply.send(Ok(outcomes));
                            let _ = garbage.send(Box::new(rows));
                        }
                        (Job::Prune { reply, .. }, JobOutcomes::Pruned(outcomes)) => {
                            let deleted = outcomes.iter().filter(|deleted| **deleted).count();
                            shared
                                .telemetry
                                .predictions_pruned
                                .fetch_add(deleted as u64, Ordering::Relaxed);
                            let _ = reply.send(Ok(outcomes));
                        }
                        _ => unreachable!("outcomes follow their jobs"),
                    }
                }
            }
            Err(failure) => {
                error!(error = %failure, events = group_events, "group commit failed; nothing of it was acknowledged");
                let failure = StorageFailure(failure.to_string());
                for job in jobs {
                    match job {
                        Job::Predictions { reply, .. } => {
                            let _ = reply.send(Err(failure.clone()));
                        }
                        Job::Labels { reply, .. } => {
                            let _ = reply.send(Err(failure.clone()));
                        }
                        Job::Prune { reply, .. } => {
                            let _ = reply.send(Err(failure.clone()));
                        }
                    }
                }
                // Memory may be ahead of the store now: reload what is durable.
                let reloaded =
                    load_aggregates(&store, shared.aggregates.read().expect("lock").config.clone())
                        .and_then(|aggregates| Ok((aggregates, LabelState::load(&store)?)));
                match reloaded {
                    Ok((reloaded, reloaded_labels)) => {
                        *shared.aggregates.write().expect("lock") = reloaded;
                        labels = reloaded_labels;
                        labels.publish(&shared.telemetry);
                    }
                    Err(error) => {
                        error!(%error, "cannot reload aggregates; marking not ready");
                        shared.ready.store(false, Ordering::Release);
                    }
                }
            }
        }
    }
    drop(garbage);
    let _ = janitor.join();
    match store.checkpoint() {
        Ok(true) => {}
        Ok(false) => {
            warn!("a reader kept the final checkpoint from finishing; the WAL will be replayed on next start")
        }
        Err(error) => warn!(%error, "final checkpoint failed; the WAL will be replayed on next start"),
    }
    info!("writer stopped; every acknowledged event is committed");
}

/// Turns held labels past their TTL into orphans, in a transaction of its own.
fn expire_held_labels(store: &mut SqliteStore, shared: &Shared, labels: &mut LabelState) {
    if labels.held() == 0 {
        return;
    }
    let config = &shared.config.labels;
    let now_ms = jiff::Timestamp::now().as_millisecond();
    let before = labels.totals;
    let result = store.transaction(|writer| {
        let expired = labels.expire(writer, now_ms, config.early_label_ttl.ms, config.max_held_labels)?;
        labels.persist(writer)?;
        Ok(expired)
    });
    match result {
        Ok(0) => {}
        Ok(expired) => {
            info!(expired, "held labels past early_label_ttl are orphans");
            labels.publish(&shared.telemetry);
        }
        Err(error) => {
            warn!(%error, "expiring held labels failed; retrying later");
            labels.totals = before;
            if let Ok(reloaded) = LabelState::load(store) {
                *labels = reloaded;
            }
        }
    }
}

/// Stores and aggregates a group of jobs in one transaction.
fn commit_group(
    store: &mut SqliteStore,
    names: &SharedNames,
    persisted_names: &mut usize,
    aggregates: &RwLock<Aggregates>,
    labels: &mut LabelState,
    jobs: &[Job],
) -> Result<Vec<JobOutcomes>, StoreError> {
    // Refusals depend only on state, so they are decided before writing.
    let mut pending = PendingModels::default();
    let checks: Vec<Vec<Result<(), Refusal>>> = {
        let aggregates = aggregates.read().expect("aggregates lock poisoned");
        jobs.iter()
            .map(|job| match job {
                Job::Predictions { rows, models, .. } => rows
                    .iter()
                    .map(|row| aggregates.check_model(&models[row.model as usize], row.kind, &mut pending))
                    .collect(),
                Job::Labels { .. } | Job::Prune { .. } => Vec::new(),
            })
            .collect()
    };
    // Every name a row of this group uses was assigned before the row was
    // queued, so it is among these.
    let new_names = names.names_since(*persisted_names);
    let dictionary = names.dictionary.read().expect("names lock");
    let result = store.transaction(|writer| {
        for (offset, name) in new_names.iter().enumerate() {
            writer.insert_name((*persisted_names + offset) as u32, name)?;
        }
        let mut outcomes = Vec::with_capacity(jobs.len());
        // What to aggregate: a job's delta when all of its rows were stored
        // (the common case), its stored events one by one otherwise.
        let mut whole_jobs: Vec<&Delta> = Vec::new();
        let mut stored: Vec<PredictionEvent> = Vec::new();
        // Label joins, applied once the group's predictions are aggregated.
        let mut quality_ops: Vec<QualityOp> = Vec::new();
        for (job, checks) in jobs.iter().zip(checks) {
            match job {
                Job::Predictions { rows, delta, .. } => {
                    let admitted: Vec<PredictionRow<'_>> = rows
                        .iter()
                        .zip(&checks)
                        .filter(|(_, check)| check.is_ok())
                        .map(|(row, _)| PredictionRow {
                            prediction_id: &row.prediction_id,
                            body: &row.stored,
                        })
                        .collect();
                    let mut inserted = Vec::with_capacity(admitted.len());
                    writer.insert_predictions(&admitted, &mut inserted)?;
                    let mut inserted = inserted.into_iter();
                    let mut job_outcomes = Vec::with_capacity(rows.len());
                    for (row, check) in rows.iter().zip(checks) {
                        let outcome = match check {
                            Err(refusal) => RowOutcome::Refused(refusal),
                            Ok(()) => {
                                if inserted.next().expect("one per admitted row") {
                                    labels.on_prediction_stored(
                                        writer,
                                        &dictionary,
                                        &row.prediction_id,
                                        &row.stored,
                                        &mut quality_ops,
                                    )?;
                                    RowOutcome::Stored
                                } else {
                                    RowOutcome::Duplicate
                                }
                            }
                        };
                        job_outcomes.push(outcome);
                    }
                    if job_outcomes.iter().all(|outcome| *outcome == RowOutcome::Stored) {
                        whole_jobs.push(delta);
                    } else {
                        // Rare (duplicates, refusals): the stored rows are
                        // decoded and applied one by one.
                        for (row, outcome) in rows.iter().zip(&job_outcomes) {
                            if *outcome == RowOutcome::Stored {
                                let (event, _) = codec::decode(&row.prediction_id, &row.stored, &*dictionary)
                                    .map_err(|error| {
                                        StoreError::Corrupt(format!("{:?}: {error}", row.prediction_id))
                                    })?;
                                stored.push(event);
                            }
                        }
                    }
                    outcomes.push(JobOutcomes::Predictions(job_outcomes));
                }
                Job::Labels {
                    rows,
                    order,
                    received_ms,
                    ..
                } => {
                    let mut job_outcomes = vec![LabelOutcome::Duplicate; rows.len()];
                    for index in order.iter().map(|index| *index as usize) {
                        job_outcomes[index] = labels.process(
                            writer,
                            &dictionary,
                            &rows[index],
                            *received_ms,
                            &mut quality_ops,
                        )?;
                    }
                    outcomes.push(JobOutcomes::Labels(job_outcomes));
                }
                Job::Prune { prediction_ids, .. } => {
                    let mut deleted = Vec::with_capacity(prediction_ids.len());
                    for id in prediction_ids {
                        let was_stored = writer.delete_prediction(id)?;
                        if was_stored {
                            // Its label (if any) goes with it; a held label
                            // has no stored prediction, so it is never here.
                            writer.delete_label(id)?;
                        }
                        deleted.push(was_stored);
                    }
                    outcomes.push(JobOutcomes::Pruned(deleted));
                }
            }
        }
        labels.persist(writer)?;
        let mut changes = Changes::default();
        let (encoded, encoded_quality, encoded_drift) = {
            let mut aggregates = aggregates.write().expect("aggregates lock poisoned");
            for delta in whole_jobs {
                aggregates.merge_delta(delta, &mut changes);
            }
            for event in &stored {
                aggregates.apply(event, &mut changes);
            }
            for op in &quality_ops {
                aggregates.apply_label(&op.prediction, &op.label, op.sign, &mut changes);
            }
            aggregates.maintain(&mut changes);
            let encoded = changes
                .upserts
                .iter()
                .filter_map(|key| aggregates.encode(key).map(|bytes| (key, bytes)))
                .collect::<Vec<_>>();
            let encoded_quality = changes
                .quality_upserts
                .iter()
                .filter_map(|key| aggregates.encode_quality(key).map(|bytes| (key, bytes)))
                .collect::<Vec<_>>();
            let encoded_drift = changes
                .drift_upserts
                .iter()
                .filter_map(|key| aggregates.encode_drift(key).map(|bytes| (key, bytes)))
                .collect::<Vec<_>>();
            (encoded, encoded_quality, encoded_drift)
        };
        for (key, bytes) in encoded {
            writer.put_aggregate(key, &bytes)?;
        }
        for (key, bytes) in encoded_quality {
            writer.put_quality(key, &bytes)?;
        }
        for key in &changes.deletes {
            writer.delete_aggregate(key)?;
        }
        for (key, bytes) in encoded_drift {
            writer.put_drift(key, &bytes)?;
        }
        for key in &changes.drift_deletes {
            writer.delete_drift(key)?;
        }
        Ok(outcomes)
    });
    drop(dictionary);
    if result.is_ok() {
        *persisted_names += new_names.len();
    }
    result
}

/// Deletes stored predictions (and their labels) whose event time is more
/// than `labels.horizon` before their model's newest event, every
/// `labels.prune_interval`, until `shared.stopping` is set. It reads on a
/// pooled connection in id order, a chunk at a time, and has the writer
/// delete, so that it never holds the write lock for long.
pub fn start_pruner(shared: Arc<Shared>, queue: IngestQueue) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("modelwatch-prune".into())
        .spawn(move || {
            let interval = std::time::Duration::from_millis(shared.config.labels.prune_interval.ms as u64);
            let mut next = Instant::now() + interval;
            while !shared.stopping.load(Ordering::Acquire) {
                if Instant::now() < next {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                    continue;
                }
                if let Err(error) = prune_pass(&shared, &queue) {
                    warn!(%error, "pruning predictions past the label horizon failed; retrying later");
                }
                next = Instant::now() + interval;
            }
        })
        .expect("spawning the pruning thread")
}

const PRUNE_CHUNK: usize = 10_000;

fn prune_pass(shared: &Shared, queue: &IngestQueue) -> Result<(), String> {
    let horizon_ms = shared.config.labels.horizon.ms;
    let mut cursor = String::new();
    let mut pruned = 0usize;
    loop {
        if shared.stopping.load(Ordering::Acquire) {
            return Ok(());
        }
        let cutoffs: rustc_hash::FxHashMap<String, TimestampMs> = {
            let aggregates = shared.aggregates.read().expect("aggregates lock");
            aggregates
                .models
                .iter()
                .filter_map(|(name, model)| Some((name.clone(), model.newest_event_ms()? - horizon_ms)))
                .collect()
        };
        let mut expired = Vec::new();
        let mut last = None;
        let visited = shared
            .readers
            .with(|reader| {
                reader.scan_predictions_after(&cursor, PRUNE_CHUNK, |id, body| {
                    last = Some(id.to_owned());
                    if let Ok((model, timestamp_ms)) = codec::decode_model_and_time(body)
                        && cutoffs.get(model).is_some_and(|cutoff| timestamp_ms < *cutoff)
                    {
                        expired.push(id.to_owned());
                    }
                })
            })
            .ok_or("no read connection")?
            .map_err(|error| error.to_string())?;
        if !expired.is_empty() {
            let count = expired.len();
            let waiting = queue
                .submit_prune(expired)
                .map_err(|error| format!("{error:?}"))?;
            waiting
                .blocking_recv()
                .map_err(|_| "the writer stopped".to_owned())?
                .map_err(|failure| failure.to_string())?;
            pruned += count;
        }
        match last {
            Some(last) if visited == PRUNE_CHUNK => cursor = last,
            _ => break,
        }
        // Leave room for ingestion between chunks.
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    if pruned > 0 {
        info!(pruned, "deleted stored predictions past the label horizon");
    }
    Ok(())
}
