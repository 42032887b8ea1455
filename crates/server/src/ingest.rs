//! Durable ingestion: a dedicated writer thread takes parsed batches from a
//! bounded queue and commits them in groups (one SQLite transaction for many
//! requests), then applies the new events to the in-memory aggregates. A row
//! is acknowledged only after the transaction that stored it has committed.

use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use axum::body::Bytes;
use modelwatch_core::event::PredictionEvent;
use modelwatch_core::series::{Aggregates, AggregationConfig, Changes, PendingModels, Refusal};
use modelwatch_store::{PredictionRow, SqliteStore, StoreError};
use tokio::sync::oneshot;
use tracing::{error, info, warn};

use crate::state::Shared;

/// One validated row of a request, pointing into the request body.
#[derive(Debug)]
pub struct ParsedRow {
    /// Position of the row in the request.
    pub index: usize,
    /// The row's bytes within the body, stored verbatim.
    pub range: Range<usize>,
    pub event: PredictionEvent,
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
    body: Bytes,
    received_ms: i64,
    rows: Vec<ParsedRow>,
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
        body: Bytes,
        received_ms: i64,
        rows: Vec<ParsedRow>,
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
        let job = Job {
            body,
            received_ms,
            rows,
            reply,
        };
        if self.sender.send(job).is_err() {
            queued.fetch_sub(count, Ordering::AcqRel);
            return Err(SubmitError::Closed);
        }
        Ok(receiver)
    }
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
    let handle = std::thread::Builder::new()
        .name("modelwatch-writer".into())
        .spawn(move || run_writer(store, shared, receiver))
        .expect("spawning the writer thread");
    (queue, handle)
}

fn run_writer(mut store: SqliteStore, shared: Arc<Shared>, receiver: mpsc::Receiver<Job>) {
    let max_events = shared.config.ingest.max_events_per_commit;
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
        let result = commit_group(&mut store, &shared.aggregates, &jobs);
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
    if let Err(error) = store.checkpoint() {
        warn!(%error, "final checkpoint failed; the WAL will be replayed on next start");
    }
    info!("writer stopped; every acknowledged event is committed");
}

/// Stores and aggregates a group of jobs in one transaction.
fn commit_group(
    store: &mut SqliteStore,
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
    store.transaction(|writer| {
        let mut outcomes = Vec::with_capacity(jobs.len());
        let mut stored: Vec<&PredictionEvent> = Vec::new();
        for (job, checks) in jobs.iter().zip(checks) {
            let mut job_outcomes = Vec::with_capacity(job.rows.len());
            for (row, check) in job.rows.iter().zip(checks) {
                let outcome = match check {
                    Err(refusal) => RowOutcome::Refused(refusal),
                    Ok(()) => {
                        let inserted = writer.insert_prediction(&PredictionRow {
                            prediction_id: &row.event.prediction_id,
                            model: &row.event.model,
                            timestamp_ms: row.event.timestamp_ms,
                            received_ms: job.received_ms,
                            body: &job.body[row.range.clone()],
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
            outcomes.push(job_outcomes);
        }
        let mut changes = Changes::default();
        let encoded = {
            let mut aggregates = aggregates.write().expect("aggregates lock poisoned");
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
    })
}
