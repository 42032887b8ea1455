//! State shared by the HTTP handlers, the writer thread and `/metrics`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, RwLock};

use modelwatch_core::series::Aggregates;
use modelwatch_core::stats::BucketCounts;

use crate::config::Config;
use crate::ingest::{RowOutcome, SharedNames};

pub struct Shared {
    pub config: Config,
    pub aggregates: RwLock<Aggregates>,
    pub names: SharedNames,
    /// Read connections for lookups off the writer thread.
    pub readers: ReaderPool,
    pub telemetry: Telemetry,
    /// False when the store failed and state could not be reloaded.
    pub ready: AtomicBool,
    /// Set on shutdown: background threads stop.
    pub stopping: AtomicBool,
    /// What the alert evaluator last published.
    pub alerts: crate::alerts::AlertView,
    /// Frozen drift baselines.
    pub baselines: crate::drift::Baselines,
    /// Drift over `drift.window`, as the evaluator last computed it.
    pub drift: crate::drift::DriftView,
    pub clock: Clock,
}

/// What "now" is for windows, alert evaluation and ingestion: the wall
/// clock, or (for `modelwatch demo --speed N`) simulated time that started
/// at `origin_ms` and runs `speed` times faster than the wall clock.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Clock {
    origin_wall_ms: i64,
    origin_ms: i64,
    speed: f64,
}

impl Default for Clock {
    fn default() -> Self {
        Self::wall()
    }
}

impl Clock {
    pub fn wall() -> Self {
        Self {
            origin_wall_ms: 0,
            origin_ms: 0,
            speed: 1.0,
        }
    }

    /// Simulated time: `start_ms` now, then `speed` simulated milliseconds per
    /// wall millisecond.
    pub fn simulated(start_ms: i64, speed: f64) -> Self {
        Self {
            origin_wall_ms: wall_now_ms(),
            origin_ms: start_ms,
            speed,
        }
    }

    pub fn now_ms(&self) -> i64 {
        let wall = wall_now_ms();
        if self.speed == 1.0 && self.origin_ms == self.origin_wall_ms {
            return wall;
        }
        self.origin_ms + ((wall - self.origin_wall_ms) as f64 * self.speed) as i64
    }

    /// How many simulated milliseconds pass per wall millisecond.
    pub fn speed(&self) -> f64 {
        self.speed
    }
}

fn wall_now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// Upper bounds of `modelwatch_commit_duration_seconds`.
pub const COMMIT_BUCKETS: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

/// modelwatch's own health counters. Updated per batch, not per event.
#[derive(Default)]
pub struct Telemetry {
    pub events_stored: AtomicU64,
    pub events_duplicate: AtomicU64,
    /// Rejected rows by error code (a small, fixed set of codes).
    pub events_rejected: Mutex<BTreeMap<&'static str, u64>>,
    pub queued_events: AtomicUsize,
    pub requests_overloaded: AtomicU64,
    pub commit_seconds: Mutex<BucketCounts>,
    pub labels: LabelTelemetry,
    /// Stored predictions deleted past the label horizon.
    pub predictions_pruned: AtomicU64,
    /// Times the writer truncated an oversized WAL.
    pub wal_truncations: AtomicU64,
}

/// The label join's state as the writer last published it.
#[derive(Default)]
pub struct LabelTelemetry {
    /// Labels joined to their prediction now.
    pub joined: AtomicU64,
    /// Labels waiting for their prediction now.
    pub held: AtomicU64,
    /// Totals since the store was created.
    pub orphaned: AtomicU64,
    pub duplicates: AtomicU64,
    pub corrected: AtomicU64,
}

impl Telemetry {
    pub fn record_commit(&self, seconds: f64) {
        self.commit_seconds
            .lock()
            .expect("telemetry lock")
            .observe(&COMMIT_BUCKETS, seconds);
    }

    pub fn record_outcomes(&self, outcomes: &[RowOutcome]) {
        let mut stored = 0;
        let mut duplicates = 0;
        let mut refused = 0;
        for outcome in outcomes {
            match outcome {
                RowOutcome::Stored => stored += 1,
                RowOutcome::Duplicate => duplicates += 1,
                RowOutcome::Refused(_) => refused += 1,
            }
        }
        self.events_stored.fetch_add(stored, Ordering::Relaxed);
        self.events_duplicate.fetch_add(duplicates, Ordering::Relaxed);
        if refused > 0 {
            self.record_rejected("refused", refused);
        }
    }

    pub fn record_rejected(&self, code: &'static str, count: u64) {
        *self
            .events_rejected
            .lock()
            .expect("telemetry lock")
            .entry(code)
            .or_default() += count;
    }
}

/// Read-only store connections, opened on first use and reused.
pub struct ReaderPool {
    path: std::path::PathBuf,
    idle: Mutex<Vec<modelwatch_store::Reader>>,
}

impl ReaderPool {
    pub fn new(path: std::path::PathBuf) -> Self {
        Self {
            path,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// The database file.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Runs `read` on an idle connection (or a new one); `None` when no
    /// connection can be opened.
    pub fn with<R>(&self, read: impl FnOnce(&modelwatch_store::Reader) -> R) -> Option<R> {
        let reader = self.idle.lock().expect("reader pool lock").pop();
        let reader = match reader {
            Some(reader) => reader,
            None => match modelwatch_store::Reader::open_path(&self.path) {
                Ok(reader) => reader,
                Err(error) => {
                    tracing::warn!(%error, "cannot open a read connection");
                    return None;
                }
            },
        };
        let result = read(&reader);
        self.idle.lock().expect("reader pool lock").push(reader);
        Some(result)
    }
}
