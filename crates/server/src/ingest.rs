//! Durable ingestion: a dedicated writer thread takes parsed batches from a
//! bounded queue and commits them in groups (one SQLite transaction for many
//! requests), then applies the new events to the in-memory aggregates. A row
//! is acknowledged only after the transaction that stored it has committed.

use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use modelwatch_core::codec::{self, Dictionary};
use modelwatch_core::event::PredictionEvent;
use modelwatch_core::series::{Aggregates, AggregationConfig, Changes, Delta, PendingModels, Refusal};
use modelwatch_store::{Checkpointer, PredictionRow, SqliteStore, StoreError};
use tokio::sync::oneshot;
use tracing::{error, info, warn};

use crate::state::Shared;

/// One validated row of a request.
#[derive(Debug)]
pub struct ParsedRow {
    /// Position of the row in the request.
    pub index: usize,
    pub event: PredictionEvent,
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

struct Job {
    rows: Vec<ParsedRow>,
    /// The rows aggregated under the names as sent.
    delta: Delta,
    reply: oneshot::Sender<Result<Vec<RowOutcome>, StorageFailure>>,
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
        delta: Delta,
    ) -> Result<oneshot::Receiver<Result<Vec<RowOutcome>, StorageFailure>>, SubmitError> {
        let count = rows.len();
        let limit = self.shared.config.ingest.max_queued_events;
        let queued = &self.shared.telemetry.queued_events;
        // Reserve room first, so that concurrent requests cannot overshoot.
        let before = queued.fetch_add(count, Ordering::AcqRel);
        if before > 0 && before + count > limit {
            queued.fetch_sub(count, Ordering::AcqRel);
            return Err(SubmitError::QueueFull);
        }
        let (reply, receiver) = oneshot::channel();
        let job = Job { rows, delta, reply };
        if self.sender.send(job).is_err() {
            queued.fetch_sub(count, Ordering::AcqRel);
            return Err(SubmitError::Closed);
        }
        Ok(receiver)
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

fn run_writer(mut store: SqliteStore, shared: Arc<Shared>, receiver: mpsc::Receiver<Job>) {
    let max_events = shared.config.ingest.max_events_per_commit;
    let mut persisted_names = shared.names.dictionary.read().expect("names lock").len();
    // Freeing parsed events costs as much as a good part of the commit: it
    // happens on its own thread, off the serial write path.
    let (garbage, garbage_receiver) = mpsc::channel::<(Vec<ParsedRow>, Delta)>();
    let janitor = std::thread::Builder::new()
        .name("modelwatch-free".into())
        .spawn(move || garbage_receiver.into_iter().for_each(drop))
        .expect("spawning the janitor thread");
    while let Ok(first) = receiver.recv() {
        let mut group_events = first.rows.len();
        let mut jobs = vec![first];
        while group_events < max_events {
            match receiver.try_recv() {
                Ok(job) => {
                    group_events += job.rows.len();
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
            &jobs,
        );
        shared.telemetry.record_commit(started.elapsed().as_secs_f64());
        shared
            .telemetry
            .queued_events
            .fetch_sub(group_events, Ordering::AcqRel);
        match result {
            Ok(outcomes) => {
                for (job, outcomes) in jobs.into_iter().zip(outcomes) {
                    shared.telemetry.record_outcomes(&outcomes);
                    // The client may have gone away; its rows are stored anyway.
                    let _ = job.reply.send(Ok(outcomes));
                    let _ = garbage.send((job.rows, job.delta));
                }
            }
            Err(failure) => {
                error!(error = %failure, events = group_events, "group commit failed; nothing of it was acknowledged");
                let failure = StorageFailure(failure.to_string());
                for job in jobs {
                    let _ = job.reply.send(Err(failure.clone()));
                }
                // Memory may be ahead of the store now: reload what is durable.
                match load_aggregates(&store, shared.aggregates.read().expect("lock").config.clone()) {
                    Ok(reloaded) => *shared.aggregates.write().expect("lock") = reloaded,
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
    if let Err(error) = store.checkpoint() {
        warn!(%error, "final checkpoint failed; the WAL will be replayed on next start");
    }
    info!("writer stopped; every acknowledged event is committed");
}

/// Stores and aggregates a group of jobs in one transaction.
fn commit_group(
    store: &mut SqliteStore,
    names: &SharedNames,
    persisted_names: &mut usize,
    aggregates: &RwLock<Aggregates>,
    jobs: &[Job],
) -> Result<Vec<Vec<RowOutcome>>, StoreError> {
    // Refusals depend only on state, so they are decided before writing.
    let mut pending = PendingModels::default();
    let checks: Vec<Vec<Result<(), Refusal>>> = {
        let aggregates = aggregates.read().expect("aggregates lock poisoned");
        jobs.iter()
            .map(|job| {
                job.rows
                    .iter()
                    .map(|row| aggregates.check(&row.event, &mut pending))
                    .collect()
            })
            .collect()
    };
    // Every name a row of this group uses was assigned before the row was
    // queued, so it is among these.
    let new_names = names.names_since(*persisted_names);
    let result = store.transaction(|writer| {
        for (offset, name) in new_names.iter().enumerate() {
            writer.insert_name((*persisted_names + offset) as u32, name)?;
        }
        let mut outcomes = Vec::with_capacity(jobs.len());
        // What to aggregate: a job's delta when all of its rows were stored
        // (the common case), its stored events one by one otherwise.
        let mut whole_jobs: Vec<&Delta> = Vec::new();
        let mut stored: Vec<&PredictionEvent> = Vec::new();
        for (job, checks) in jobs.iter().zip(checks) {
            let stored_before = stored.len();
            let mut job_outcomes = Vec::with_capacity(job.rows.len());
            for (row, check) in job.rows.iter().zip(checks) {
                let outcome = match check {
                    Err(refusal) => RowOutcome::Refused(refusal),
                    Ok(()) => {
                        let inserted = writer.insert_prediction(&PredictionRow {
                            prediction_id: &row.event.prediction_id,
                            body: &row.stored,
                        })?;
                        if inserted {
                            stored.push(&row.event);
                            RowOutcome::Stored
                        } else {
                            RowOutcome::Duplicate
                        }
                    }
                };
                job_outcomes.push(outcome);
            }
            if stored.len() - stored_before == job.rows.len() {
                stored.truncate(stored_before);
                whole_jobs.push(&job.delta);
            }
            outcomes.push(job_outcomes);
        }
        let mut changes = Changes::default();
        let encoded = {
            let mut aggregates = aggregates.write().expect("aggregates lock poisoned");
            for delta in whole_jobs {
                aggregates.merge_delta(delta, &mut changes);
            }
            for event in &stored {
                aggregates.apply(event, &mut changes);
            }
            aggregates.maintain(&mut changes);
            changes
                .upserts
                .iter()
                .filter_map(|key| aggregates.encode(key).map(|bytes| (key, bytes)))
                .collect::<Vec<_>>()
        };
        for (key, bytes) in encoded {
            writer.put_aggregate(key, &bytes)?;
        }
        for key in &changes.deletes {
            writer.delete_aggregate(key)?;
        }
        Ok(outcomes)
    });
    if result.is_ok() {
        *persisted_names += new_names.len();
    }
    result
}
