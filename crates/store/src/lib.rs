//! The embedded durable store: one SQLite database in WAL mode under the data
//! directory. It holds raw prediction events and the persisted aggregates.
//!
//! The interface is deliberately narrow: a write transaction that inserts
//! events (deduplicated on `prediction_id`) and upserts aggregate states, and
//! read-side scans used on start. Everything a transaction writes becomes
//! durable at once, or not at all.

use std::path::{Path, PathBuf};

use modelwatch_core::series::{BucketKey, Resolution};
pub mod alerts;
mod label_index;

pub use alerts::{AlertStore, AlertWriter, BaselineRow, LogEntry, OutboxEntry};
use label_index::LabelIndex;
use rusqlite::{Connection, OptionalExtension, Transaction, params};

/// Current schema version, kept in `meta`.
/// 2 added labels and the quality aggregates, and changed the bucket form.
/// 3 added the SLO latency buckets to the counters, and the alert tables.
/// 4 added drift and baselines. 5 appends labels in commit order, with an
/// index by id in sorted runs (`label_index`).
const SCHEMA_VERSION: i64 = 5;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create data directory {path}: {source}")]
    CreateDir { path: PathBuf, source: std::io::Error },
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("database schema version {found} is newer than this modelwatch ({supported})")]
    SchemaTooNew { found: i64, supported: i64 },
    #[error(
        "database schema version {found} was written by a development build before {supported}; \
         it cannot be upgraded: move the data directory away and start again"
    )]
    SchemaTooOld { found: i64, supported: i64 },
    #[error("corrupt aggregate row: {0}")]
    Corrupt(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// How hard a commit works to survive power loss. Either way a commit
/// survives a crash of the process (`kill -9`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Synchronous {
    /// fsync on every commit: survives power loss too.
    Full,
    /// fsync at checkpoints only: survives process crashes, may lose the last
    /// commits on power loss.
    Normal,
}

impl Synchronous {
    /// The value of SQLite's `synchronous` pragma.
    pub(crate) fn pragma(self) -> &'static str {
        match self {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        }
    }
}

/// A prediction row as stored.
#[derive(Debug, Clone, Copy)]
pub struct PredictionRow<'a> {
    pub prediction_id: &'a str,
    /// The event in its compact stored form (`modelwatch_core::codec`).
    pub body: &'a [u8],
}

/// The writes of one transaction.
pub trait Writer {
    /// Inserts a prediction; `false` when one with the same `prediction_id`
    /// is already stored (the row is then left untouched).
    fn insert_prediction(&mut self, row: &PredictionRow<'_>) -> Result<bool>;
    /// [`Writer::insert_prediction`] for many rows, through one prepared
    /// statement; `inserted` gets one entry per row.
    fn insert_predictions(&mut self, rows: &[PredictionRow<'_>], inserted: &mut Vec<bool>) -> Result<()>;
    /// Adds an entry to the name dictionary of the stored form.
    fn insert_name(&mut self, id: u32, name: &str) -> Result<()>;
    fn put_aggregate(&mut self, key: &BucketKey, state: &[u8]) -> Result<()>;
    /// Deletes both parts of an aggregate: predictions and quality.
    fn delete_aggregate(&mut self, key: &BucketKey) -> Result<()>;
    fn put_quality(&mut self, key: &BucketKey, state: &[u8]) -> Result<()>;
    fn put_drift(&mut self, key: &BucketKey, state: &[u8]) -> Result<()>;
    fn delete_drift(&mut self, key: &BucketKey) -> Result<()>;
    /// The stored form of a prediction, as committed (or written earlier in
    /// this transaction).
    fn get_prediction(&mut self, prediction_id: &str) -> Result<Option<Vec<u8>>>;
    fn get_label(&mut self, prediction_id: &str) -> Result<Option<StoredLabelRow>>;
    /// Inserts a label unless one is stored for the same prediction; `false`
    /// then (the stored one is left untouched).
    fn insert_label(&mut self, prediction_id: &str, held: bool, body: &[u8]) -> Result<bool>;
    /// Inserts or replaces a label. `held` labels wait for their prediction.
    fn put_label(&mut self, prediction_id: &str, held: bool, body: &[u8]) -> Result<()>;
    fn delete_label(&mut self, prediction_id: &str) -> Result<()>;
    /// Deletes a stored prediction (past retention); `false` if there was none.
    fn delete_prediction(&mut self, prediction_id: &str) -> Result<bool>;
    fn set_meta(&mut self, key: &str, value: i64) -> Result<()>;
}

/// A stored label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredLabelRow {
    /// Waiting for its prediction.
    pub held: bool,
    pub body: Vec<u8>,
}

/// The SQLite store.
pub struct SqliteStore {
    connection: Connection,
    path: PathBuf,
    /// Where each label row is; changed by transactions, so rebuilt from the
    /// database when one does not commit.
    labels: LabelIndex,
    /// A rebuild failed: retried before the next transaction.
    labels_stale: bool,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) `modelwatch.db` under `data_dir`.
    pub fn open(data_dir: &Path, synchronous: Synchronous) -> Result<Self> {
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::CreateDir {
            path: data_dir.to_owned(),
            source,
        })?;
        let path = data_dir.join("modelwatch.db");
        let connection = Connection::open(&path)?;
        // Large pages make group commits of many small rows markedly cheaper
        // (fewer pages, shallower trees). Only takes effect on a new database.
        connection.pragma_update(None, "page_size", 65536)?;
        connection.pragma_update(None, "journal_mode", "WAL")?;
        connection.pragma_update(None, "synchronous", synchronous.pragma())?;
        connection.pragma_update(None, "busy_timeout", 5000)?;
        // Checkpoints run on their own connection (see `Checkpointer`), not
        // inside the writer's commits.
        connection.pragma_update(None, "wal_autocheckpoint", 0)?;
        // 16 MiB: the pages writes go to are few (the right edges of the
        // tables that are appended to, the aggregates a group touches), and a
        // larger cache barely helps random reads of a file of gigabytes. With
        // 64 MiB, labels went no faster at 10M, and RSS was 50 MB higher.
        connection.pragma_update(None, "cache_size", -16384)?;
        connection.pragma_update(None, "temp_store", "MEMORY")?;
        connection.execute_batch(
            "CREATE TABLE IF NOT EXISTS meta (
                 key TEXT PRIMARY KEY,
                 value INTEGER NOT NULL
             ) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS predictions (
                 prediction_id TEXT PRIMARY KEY,
                 body BLOB NOT NULL
             ) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS names (
                 id INTEGER PRIMARY KEY,
                 name TEXT NOT NULL UNIQUE
             );
             CREATE TABLE IF NOT EXISTS aggregates (
                 model TEXT NOT NULL,
                 version TEXT NOT NULL,
                 resolution TEXT NOT NULL,
                 start_ms INTEGER NOT NULL,
                 state BLOB NOT NULL,
                 PRIMARY KEY (model, version, resolution, start_ms)
             ) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS quality (
                 model TEXT NOT NULL,
                 version TEXT NOT NULL,
                 resolution TEXT NOT NULL,
                 start_ms INTEGER NOT NULL,
                 state BLOB NOT NULL,
                 PRIMARY KEY (model, version, resolution, start_ms)
             ) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS drift (
                 model TEXT NOT NULL,
                 version TEXT NOT NULL,
                 resolution TEXT NOT NULL,
                 start_ms INTEGER NOT NULL,
                 state BLOB NOT NULL,
                 PRIMARY KEY (model, version, resolution, start_ms)
             ) WITHOUT ROWID;",
        )?;
        connection.execute_batch(alerts::SCHEMA)?;
        // Versions 2 to 4 kept labels in a table keyed by id.
        let has_labels = connection.query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'labels'",
            [],
            |row| row.get::<_, i64>(0),
        )? == 1;
        let appended_labels = connection.query_row(
            "SELECT count(*) FROM pragma_table_info('labels') WHERE name = 'seq'",
            [],
            |row| row.get::<_, i64>(0),
        )? == 1;
        if has_labels && !appended_labels {
            let transaction = connection.unchecked_transaction()?;
            label_index::migrate_from_keyed(&transaction)?;
            transaction.commit()?;
        }
        connection.execute_batch(label_index::SCHEMA)?;
        connection.execute_batch(label_index::HELD_INDEX)?;
        let found: Option<i64> = connection
            .query_row("SELECT value FROM meta WHERE key = 'schema_version'", [], |row| {
                row.get(0)
            })
            .optional()?;
        match found {
            Some(found) if found > SCHEMA_VERSION => {
                return Err(StoreError::SchemaTooNew {
                    found,
                    supported: SCHEMA_VERSION,
                });
            }
            // Version 4 only added the drift and baselines tables (created
            // above): the data of version 3 stays valid, without drift history.
            // Version 5 changed the labels' layout (migrated above).
            Some(3 | 4) => {
                connection.execute(
                    "UPDATE meta SET value = ?1 WHERE key = 'schema_version'",
                    [SCHEMA_VERSION],
                )?;
            }
            Some(found) if found < SCHEMA_VERSION => {
                return Err(StoreError::SchemaTooOld {
                    found,
                    supported: SCHEMA_VERSION,
                });
            }
            Some(_) => {}
            None => {
                connection.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema_version', ?1)",
                    [SCHEMA_VERSION],
                )?;
            }
        }
        let mut labels = LabelIndex::load(&connection)?;
        // Filters stored now spare the next start reading their runs; if they
        // cannot be, the next start rebuilds them again, as this one did.
        let _ = labels.store_rebuilt_filters(&connection);
        Ok(Self {
            connection,
            path,
            labels,
            labels_stale: false,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `write` in one transaction: committed when it returns `Ok`,
    /// rolled back otherwise.
    pub fn transaction<R>(&mut self, write: impl FnOnce(&mut dyn Writer) -> Result<R>) -> Result<R> {
        if self.labels_stale {
            self.labels = LabelIndex::load(&self.connection)?;
            self.labels_stale = false;
        }
        let outcome = self.try_transaction(write);
        if outcome.is_err() {
            // The transaction rolled back: so must the label index.
            match LabelIndex::load(&self.connection) {
                Ok(labels) => self.labels = labels,
                Err(_) => self.labels_stale = true,
            }
        }
        outcome
    }

    fn try_transaction<R>(&mut self, write: impl FnOnce(&mut dyn Writer) -> Result<R>) -> Result<R> {
        // Immediate: the write lock is taken (waiting for the alert store's
        // short transactions) before the first read. A deferred transaction
        // that reads first cannot write once another connection has committed
        // since its read began: SQLite answers SQLITE_BUSY at once, without
        // waiting, and the whole group would fail.
        let transaction = self
            .connection
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut writer = SqliteWriter {
            transaction: &transaction,
            labels: &mut self.labels,
            label_insert: None,
        };
        let result = write(&mut writer)?;
        // Its prepared statements go back to the connection's cache.
        drop(writer);
        let pending = self.labels.flush_if_full(&transaction)?;
        transaction.commit()?;
        self.labels.committed(pending);
        Ok(result)
    }

    /// How many sorted runs the label index has (read by tests).
    pub fn label_runs(&self) -> usize {
        self.labels.runs()
    }

    /// Makes the label index write a run every `entries` new labels instead
    /// of every 262,144: for tests, which need runs and merges from few labels.
    #[doc(hidden)]
    pub fn set_label_flush_at(&mut self, entries: usize) {
        self.labels.set_flush_at(entries);
    }

    /// Calls `visit` with every persisted aggregate.
    pub fn load_aggregates(&self, visit: impl FnMut(BucketKey, &[u8]) -> Result<()>) -> Result<()> {
        self.load_keyed("aggregates", visit)
    }

    /// Every quality aggregate (labels' part of each bucket, and lifetime
    /// label counters).
    pub fn load_quality(&self, visit: impl FnMut(BucketKey, &[u8]) -> Result<()>) -> Result<()> {
        self.load_keyed("quality", visit)
    }

    /// Every drift summary (hourly).
    pub fn load_drift(&self, visit: impl FnMut(BucketKey, &[u8]) -> Result<()>) -> Result<()> {
        self.load_keyed("drift", visit)
    }

    /// Every label still waiting for its prediction.
    pub fn load_held_labels(&self, mut visit: impl FnMut(&str, &[u8]) -> Result<()>) -> Result<()> {
        let mut statement = self
            .connection
            .prepare("SELECT prediction_id, body FROM labels WHERE held = 1")?;
        let mut rows = statement.query([])?;
        while let Some(row) = rows.next()? {
            visit(
                row.get_ref(0)?.as_str().map_err(rusqlite::Error::from)?,
                row.get_ref(1)?.as_blob().map_err(rusqlite::Error::from)?,
            )?;
        }
        Ok(())
    }

    /// A value of the `meta` table; 0 when absent.
    pub fn meta(&self, key: &str) -> Result<i64> {
        Ok(self
            .connection
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |row| row.get(0))
            .optional()?
            .unwrap_or(0))
    }

    fn load_keyed(&self, table: &str, mut visit: impl FnMut(BucketKey, &[u8]) -> Result<()>) -> Result<()> {
        let mut statement = self.connection.prepare(&format!(
            "SELECT model, version, resolution, start_ms, state FROM {table}"
        ))?;
        let mut rows = statement.query([])?;
        while let Some(row) = rows.next()? {
            let resolution_text: String = row.get(2)?;
            let resolution = Resolution::parse(&resolution_text)
                .ok_or_else(|| StoreError::Corrupt(format!("unknown resolution {resolution_text:?}")))?;
            let key = BucketKey {
                model: row.get(0)?,
                version: row.get(1)?,
                resolution,
                start_ms: row.get(3)?,
            };
            let state = row.get_ref(4)?.as_blob().map_err(rusqlite::Error::from)?;
            visit(key, state)?;
        }
        Ok(())
    }

    /// Calls `visit` with every stored prediction, oldest first.
    pub fn scan_predictions(&self, mut visit: impl FnMut(PredictionRow<'_>) -> Result<()>) -> Result<()> {
        let mut statement = self
            .connection
            .prepare("SELECT prediction_id, body FROM predictions")?;
        let mut rows = statement.query([])?;
        while let Some(row) = rows.next()? {
            visit(PredictionRow {
                prediction_id: row.get_ref(0)?.as_str().map_err(rusqlite::Error::from)?,
                body: row.get_ref(1)?.as_blob().map_err(rusqlite::Error::from)?,
            })?;
        }
        Ok(())
    }

    /// The name dictionary, indexed by id.
    pub fn load_names(&self) -> Result<Vec<String>> {
        let mut statement = self
            .connection
            .prepare("SELECT id, name FROM names ORDER BY id")?;
        let mut names = Vec::new();
        let mut rows = statement.query([])?;
        while let Some(row) = rows.next()? {
            let id: i64 = row.get(0)?;
            if id != names.len() as i64 {
                return Err(StoreError::Corrupt(format!(
                    "name dictionary has a gap at id {id}"
                )));
            }
            names.push(row.get(1)?);
        }
        Ok(names)
    }

    pub fn count_predictions(&self) -> Result<u64> {
        Ok(self
            .connection
            .query_row("SELECT count(*) FROM predictions", [], |row| row.get::<_, i64>(0))? as u64)
    }

    /// Checkpoints the WAL into the database file (on shutdown).
    /// The size of the write-ahead log file, 0 when there is none.
    pub fn wal_bytes(&self) -> u64 {
        let mut wal = self.path.clone().into_os_string();
        wal.push("-wal");
        std::fs::metadata(wal).map(|metadata| metadata.len()).unwrap_or(0)
    }

    /// Copies the whole WAL into the database and truncates it; `false` when
    /// a reader still on an older snapshot kept it from finishing within the
    /// busy timeout (the WAL is then left as it is).
    pub fn checkpoint(&self) -> Result<bool> {
        let busy: i64 = self
            .connection
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| row.get(0))?;
        Ok(busy == 0)
    }
}

/// A read-only connection for lookups off the writer thread. In WAL mode it
/// sees what was committed when each statement starts, never a partial
/// transaction.
pub struct Reader {
    connection: Connection,
    /// Lookups since the database file was last mapped afresh.
    lookups_mapped: std::cell::Cell<u32>,
}

/// How much of the database file a reader maps: all of it, in practice
/// (`SQLITE_MAX_MMAP_SIZE`, set in `.cargo/config.toml`, caps it).
const READER_MMAP_BYTES: i64 = 1 << 40;

/// Lookups after which a reader maps the file afresh. Every page a lookup
/// touches stays mapped, and counts in the process's RSS, until then (64 KiB
/// each, the kernel's fault-around): at most about 8 MiB per reader.
const READER_REMAP_EVERY: u32 = 128;

/// How [`Reader::with_predictions_in_order`] went through the table.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Walk {
    /// Descents from the B-tree's root.
    pub lookups: u64,
    /// Rows read by stepping from one row to the next.
    pub steps: u64,
}

/// Steps along the table, in [`Reader::with_predictions_in_order`], that
/// may find nothing: a credit, in eighths of a step, that a step spends and
/// a step that finds a wanted row earns back several times over, so that
/// stepping goes on while it pays. A lookup earns an eighth: with sparse
/// ids, one step in eight lookups tries whether they have become dense. A
/// step costs a small part of a lookup, so dense ids are found for much
/// less, and sparse ones for little more.
#[derive(Debug)]
struct StepBudget {
    credit: u32,
}

/// One step, in the budget's eighths.
const STEP: u32 = 8;
/// Steps allowed at first.
const STEPS_ALLOWED: u32 = 8;
/// Steps earned by a step that found a wanted row (besides its own).
const STEPS_PER_FOUND: u32 = 4;
/// The most steps that may go unrewarded in a row.
const STEPS_AT_MOST: u32 = 64;
/// Steps that touch about as many new pages as one lookup: a 64 KiB leaf
/// holds a few hundred predictions.
const STEPS_PER_MAPPED_LOOKUP: u32 = 16;

impl Default for StepBudget {
    fn default() -> Self {
        Self {
            credit: STEPS_ALLOWED * STEP,
        }
    }
}

impl StepBudget {
    fn looked_up(&mut self) {
        self.credit = (self.credit + 1).min(STEPS_AT_MOST * STEP);
    }

    fn stepped(&mut self, found: bool) {
        self.credit = if found {
            (self.credit + STEPS_PER_FOUND * STEP).min(STEPS_AT_MOST * STEP)
        } else {
            self.credit.saturating_sub(STEP)
        };
    }

    fn may_step(&self) -> bool {
        self.credit >= STEP
    }
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("Reader")
    }
}

impl Reader {
    pub fn open_path(path: &Path) -> Result<Self> {
        let connection = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        connection.pragma_update(None, "busy_timeout", 5000)?;
        // A new snapshot drops the cache when the writer has committed since,
        // which it almost always has: only the upper B-tree levels stay warm
        // within one snapshot, and they are small.
        connection.pragma_update(None, "cache_size", -4096)?;
        // Lookups by id land on random pages: read through a memory map, a
        // lookup touches the few 4 KiB parts of a page it needs, where `pread`
        // copies the whole 64 KiB page (most of a label's cost, before).
        connection.pragma_update(None, "mmap_size", READER_MMAP_BYTES)?;
        Ok(Self {
            connection,
            lookups_mapped: std::cell::Cell::new(0),
        })
    }

    /// Runs `read` in one read transaction: one snapshot, one lock, and a page
    /// cache that stays valid across its lookups (a new snapshot drops the
    /// cache when the writer has committed since).
    pub fn snapshot<R>(&self, read: impl FnOnce(&Self) -> Result<R>) -> Result<R> {
        let transaction = self.connection.unchecked_transaction()?;
        let result = read(self)?;
        transaction.commit()?;
        Ok(result)
    }

    /// Visits up to `limit` stored predictions whose id sorts after `after`,
    /// in id order; returns how many it visited.
    pub fn scan_predictions_after(
        &self,
        after: &str,
        limit: usize,
        mut visit: impl FnMut(&str, &[u8]),
    ) -> Result<usize> {
        let mut statement = self.connection.prepare_cached(
            "SELECT prediction_id, body FROM predictions WHERE prediction_id > ?1 ORDER BY prediction_id LIMIT ?2",
        )?;
        let mut rows = statement.query(params![after, limit as i64])?;
        let mut visited = 0;
        while let Some(row) = rows.next()? {
            visit(
                row.get_ref(0)?.as_str().map_err(rusqlite::Error::from)?,
                row.get_ref(1)?.as_blob().map_err(rusqlite::Error::from)?,
            );
            visited += 1;
        }
        Ok(visited)
    }

    /// The stored form of a committed prediction, copied: one lookup, what
    /// the tests check [`Reader::with_predictions_in_order`] against.
    #[cfg(test)]
    fn get_prediction(&self, prediction_id: &str) -> Result<Option<Vec<u8>>> {
        let read_back = self
            .connection
            .prepare_cached("SELECT body FROM predictions WHERE prediction_id = ?1")?
            .query_row([prediction_id], |row| row.get(0))
            .optional()?;
        self.count_mapped_lookups(1)?;
        Ok(read_back)
    }

    /// Reads the stored form of each committed prediction of `ids`, which
    /// are sorted (bytewise, as SQLite orders text), where it lies: `found`
    /// gets the position in `ids` and the body of each one stored. An id
    /// given twice is found twice.
    ///
    /// One lookup descends the B-tree from its root: about a third of a
    /// label's cost at 10M predictions, most of it first touches of a leaf.
    /// After one, the rows that follow it in key order are read in turn
    /// while they keep being wanted, a step within the same leaf: ids that
    /// are dense in key order (sequential, time-ordered, labels arriving in
    /// about the order of their predictions) are found a step apart. Steps
    /// that find nothing spend a credit that steps finding wanted rows earn
    /// (`StepBudget`), so that sparse ids (random UUIDs) cost about a
    /// lookup each.
    pub fn with_predictions_in_order(
        &self,
        ids: &[&str],
        mut found: impl FnMut(usize, &[u8]),
    ) -> Result<Walk> {
        debug_assert!(ids.is_sorted_by(|a, b| a.as_bytes() <= b.as_bytes()));
        let mut statement = self.connection.prepare_cached(
            "SELECT prediction_id, body FROM predictions WHERE prediction_id >= ?1 ORDER BY prediction_id",
        )?;
        let mut budget = StepBudget::default();
        let mut walk = Walk::default();
        let mut next = 0;
        while next < ids.len() {
            walk.lookups += 1;
            budget.looked_up();
            let mut steps = 0u32;
            {
                let mut rows = statement.query([ids[next]])?;
                loop {
                    let Some(row) = rows.next()? else {
                        // Every id left sorts after the last stored one.
                        next = ids.len();
                        break;
                    };
                    let id = row.get_ref(0)?.as_bytes().map_err(rusqlite::Error::from)?;
                    while next < ids.len() && ids[next].as_bytes() < id {
                        next += 1;
                    }
                    let mut wanted = false;
                    while next < ids.len() && ids[next].as_bytes() == id {
                        found(next, row.get_ref(1)?.as_blob().map_err(rusqlite::Error::from)?);
                        next += 1;
                        wanted = true;
                    }
                    // The first row is the lookup's own.
                    if steps > 0 {
                        budget.stepped(wanted);
                    }
                    if next == ids.len() || !budget.may_step() {
                        break;
                    }
                    steps += 1;
                }
            }
            walk.steps += u64::from(steps);
            self.count_mapped_lookups(1 + steps / STEPS_PER_MAPPED_LOOKUP)?;
        }
        Ok(walk)
    }

    /// Maps the file afresh every `READER_REMAP_EVERY` lookups, which unmaps
    /// the pages the earlier ones touched: they are the OS's page cache
    /// either way, but mapped they count in the process's RSS.
    fn count_mapped_lookups(&self, lookups: u32) -> Result<()> {
        let lookups = self.lookups_mapped.get() + lookups;
        if lookups < READER_REMAP_EVERY {
            self.lookups_mapped.set(lookups);
            return Ok(());
        }
        self.lookups_mapped.set(0);
        self.connection.pragma_update(None, "mmap_size", 0)?;
        self.connection
            .pragma_update(None, "mmap_size", READER_MMAP_BYTES)?;
        Ok(())
    }
}

/// Copies the WAL back into the database file from its own connection, so
/// that the writer's commits never pay for it.
pub struct Checkpointer {
    connection: Connection,
}

impl std::fmt::Debug for Checkpointer {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("Checkpointer")
    }
}

impl Checkpointer {
    pub fn open(store: &SqliteStore) -> Result<Self> {
        let connection = Connection::open(&store.path)?;
        connection.pragma_update(None, "busy_timeout", 5000)?;
        Ok(Self { connection })
    }

    /// Checkpoints as much as possible without blocking the writer; returns
    /// the WAL size in frames and how many were copied.
    pub fn passive(&self) -> Result<(i64, i64)> {
        Ok(self
            .connection
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
                Ok((row.get(1)?, row.get(2)?))
            })?)
    }
}

struct SqliteWriter<'t> {
    transaction: &'t Transaction<'t>,
    labels: &'t mut LabelIndex,
    /// The label index's insert, prepared at the transaction's first label.
    label_insert: Option<rusqlite::CachedStatement<'t>>,
}

impl SqliteWriter<'_> {
    fn append_label(&mut self, prediction_id: &str, held: bool, body: &[u8]) -> Result<()> {
        let insert = match &mut self.label_insert {
            Some(insert) => insert,
            None => self
                .label_insert
                .insert(self.transaction.prepare_cached(label_index::INSERT)?),
        };
        self.labels.append_with(insert, prediction_id, held, body)
    }

    /// Upserts one blob of a table keyed like `aggregates`.
    fn put_keyed(&mut self, table: &str, key: &BucketKey, state: &[u8]) -> Result<()> {
        let mut statement = self.transaction.prepare_cached(&format!(
            "INSERT INTO {table} (model, version, resolution, start_ms, state) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (model, version, resolution, start_ms) DO UPDATE SET state = excluded.state"
        ))?;
        statement.execute(params![
            key.model,
            key.version,
            key.resolution.as_str(),
            key.start_ms,
            state
        ])?;
        Ok(())
    }
}

impl Writer for SqliteWriter<'_> {
    fn insert_prediction(&mut self, row: &PredictionRow<'_>) -> Result<bool> {
        let mut statement = self.transaction.prepare_cached(
            "INSERT INTO predictions (prediction_id, body) VALUES (?1, ?2) ON CONFLICT (prediction_id) DO NOTHING",
        )?;
        let inserted = statement.execute(params![row.prediction_id, row.body])?;
        Ok(inserted == 1)
    }

    fn insert_predictions(&mut self, rows: &[PredictionRow<'_>], inserted: &mut Vec<bool>) -> Result<()> {
        let mut statement = self.transaction.prepare_cached(
            "INSERT INTO predictions (prediction_id, body) VALUES (?1, ?2) ON CONFLICT (prediction_id) DO NOTHING",
        )?;
        inserted.reserve(rows.len());
        for row in rows {
            inserted.push(statement.execute(params![row.prediction_id, row.body])? == 1);
        }
        Ok(())
    }

    fn insert_name(&mut self, id: u32, name: &str) -> Result<()> {
        let mut statement = self
            .transaction
            .prepare_cached("INSERT INTO names (id, name) VALUES (?1, ?2)")?;
        statement.execute(params![id, name])?;
        Ok(())
    }

    fn put_aggregate(&mut self, key: &BucketKey, state: &[u8]) -> Result<()> {
        self.put_keyed("aggregates", key, state)
    }

    fn delete_aggregate(&mut self, key: &BucketKey) -> Result<()> {
        for table in ["aggregates", "quality"] {
            let mut statement = self.transaction.prepare_cached(&format!(
                "DELETE FROM {table} WHERE model = ?1 AND version = ?2 AND resolution = ?3 AND start_ms = ?4"
            ))?;
            statement.execute(params![
                key.model,
                key.version,
                key.resolution.as_str(),
                key.start_ms
            ])?;
        }
        Ok(())
    }

    fn put_quality(&mut self, key: &BucketKey, state: &[u8]) -> Result<()> {
        self.put_keyed("quality", key, state)
    }

    fn put_drift(&mut self, key: &BucketKey, state: &[u8]) -> Result<()> {
        self.put_keyed("drift", key, state)
    }

    fn delete_drift(&mut self, key: &BucketKey) -> Result<()> {
        self.transaction
            .prepare_cached(
                "DELETE FROM drift WHERE model = ?1 AND version = ?2 AND resolution = ?3 AND start_ms = ?4",
            )?
            .execute(params![
                key.model,
                key.version,
                key.resolution.as_str(),
                key.start_ms
            ])?;
        Ok(())
    }

    fn get_prediction(&mut self, prediction_id: &str) -> Result<Option<Vec<u8>>> {
        let mut statement = self
            .transaction
            .prepare_cached("SELECT body FROM predictions WHERE prediction_id = ?1")?;
        Ok(statement
            .query_row([prediction_id], |row| row.get::<_, Vec<u8>>(0))
            .optional()?)
    }

    fn get_label(&mut self, prediction_id: &str) -> Result<Option<StoredLabelRow>> {
        Ok(self
            .labels
            .get(self.transaction, prediction_id)?
            .map(|row| StoredLabelRow {
                held: row.held,
                body: row.body,
            }))
    }

    fn insert_label(&mut self, prediction_id: &str, held: bool, body: &[u8]) -> Result<bool> {
        if self.labels.get(self.transaction, prediction_id)?.is_some() {
            return Ok(false);
        }
        self.append_label(prediction_id, held, body)?;
        Ok(true)
    }

    fn put_label(&mut self, prediction_id: &str, held: bool, body: &[u8]) -> Result<()> {
        match self.labels.get(self.transaction, prediction_id)? {
            Some(row) => LabelIndex::update(self.transaction, row.seq, held, body),
            None => self.append_label(prediction_id, held, body),
        }
    }

    fn delete_label(&mut self, prediction_id: &str) -> Result<()> {
        self.labels.delete(self.transaction, prediction_id)
    }

    fn delete_prediction(&mut self, prediction_id: &str) -> Result<bool> {
        let mut statement = self
            .transaction
            .prepare_cached("DELETE FROM predictions WHERE prediction_id = ?1")?;
        Ok(statement.execute([prediction_id])? == 1)
    }

    fn set_meta(&mut self, key: &str, value: i64) -> Result<()> {
        let mut statement = self.transaction.prepare_cached(
            "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )?;
        statement.execute(params![key, value])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row<'a>(id: &'a str, body: &'a [u8]) -> PredictionRow<'a> {
        PredictionRow {
            prediction_id: id,
            body,
        }
    }

    #[test]
    fn duplicates_are_ignored_and_commits_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(dir.path(), Synchronous::Full).unwrap();
        let inserted = store
            .transaction(|writer| {
                Ok([
                    writer.insert_prediction(&row("a", b"{}"))?,
                    writer.insert_prediction(&row("b", b"{}"))?,
                    writer.insert_prediction(&row("a", b"{\"x\":1}"))?,
                ])
            })
            .unwrap();
        assert_eq!(inserted, [true, true, false]);
        drop(store);
        let store = SqliteStore::open(dir.path(), Synchronous::Full).unwrap();
        assert_eq!(store.count_predictions().unwrap(), 2);
        let mut bodies = Vec::new();
        store
            .scan_predictions(|row| {
                bodies.push((row.prediction_id.to_owned(), row.body.to_vec()));
                Ok(())
            })
            .unwrap();
        assert_eq!(
            bodies,
            vec![("a".into(), b"{}".to_vec()), ("b".into(), b"{}".to_vec())]
        );
    }

    /// Another connection writing while a group reads (the alert store, say)
    /// must not fail the group.
    #[test]
    fn a_transaction_that_reads_first_still_writes_when_another_connection_tries_to() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(dir.path(), Synchronous::Normal).unwrap();
        let other = Connection::open(dir.path().join("modelwatch.db")).unwrap();
        let other_wrote = store
            .transaction(|writer| {
                assert_eq!(writer.get_prediction("a")?, None);
                // Without waiting: while the group holds the write lock, the
                // other connection is told to retry.
                other.pragma_update(None, "busy_timeout", 0)?;
                let other_wrote = other
                    .execute("INSERT INTO meta (key, value) VALUES ('other', 1)", [])
                    .is_ok();
                writer.insert_prediction(&row("a", b"{}"))?;
                Ok(other_wrote)
            })
            .unwrap();
        assert!(!other_wrote);
        assert_eq!(store.count_predictions().unwrap(), 1);
        // And once the group has committed, the other connection writes.
        other.pragma_update(None, "busy_timeout", 1000).unwrap();
        other
            .execute("INSERT INTO meta (key, value) VALUES ('other', 1)", [])
            .unwrap();
    }

    #[test]
    fn a_checkpoint_held_up_by_a_reader_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(dir.path(), Synchronous::Normal).unwrap();
        store.connection.pragma_update(None, "busy_timeout", 100).unwrap();
        let reader = Reader::open_path(&dir.path().join("modelwatch.db")).unwrap();
        store
            .transaction(|writer| writer.insert_prediction(&row("a", b"{}")))
            .unwrap();
        reader
            .snapshot(|reader| {
                // The snapshot starts with the first read; the commit below
                // leaves it older than the WAL's end.
                assert!(reader.get_prediction("a")?.is_some());
                store.transaction(|writer| writer.insert_prediction(&row("b", b"{}")))?;
                assert!(!store.checkpoint()?, "a reader on an old snapshot holds the WAL");
                Ok(())
            })
            .unwrap();
        assert!(store.checkpoint().unwrap());
        assert_eq!(store.wal_bytes(), 0);
    }

    /// Lookups read the file through a map of all of it (which needs the
    /// build's `SQLITE_MAX_MMAP_SIZE`), mapped afresh every
    /// `READER_REMAP_EVERY` lookups, and still see rows that are only in
    /// the WAL, and rows the file grew by after it was mapped.
    #[test]
    fn a_reader_maps_the_whole_file_and_finds_every_row_across_remaps() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(dir.path(), Synchronous::Normal).unwrap();
        let body = |index: usize| format!("{index:0>300}").into_bytes();
        let id = |index: usize| format!("p{:08}", index * 7919 % 100_003);
        let write = |store: &mut SqliteStore, range: std::ops::Range<usize>| {
            store
                .transaction(|writer| {
                    for index in range {
                        assert!(writer.insert_prediction(&row(&id(index), &body(index)))?);
                    }
                    Ok(())
                })
                .unwrap();
        };
        write(&mut store, 0..2_000);
        assert!(store.checkpoint().unwrap());
        let reader = Reader::open_path(&dir.path().join("modelwatch.db")).unwrap();
        let mapped: i64 = reader
            .connection
            .pragma_query_value(None, "mmap_size", |row| row.get(0))
            .unwrap();
        assert_eq!(mapped, READER_MMAP_BYTES, "SQLITE_MAX_MMAP_SIZE caps the map");
        let check = |reader: &Reader, range: std::ops::Range<usize>| {
            reader
                .snapshot(|reader| {
                    for index in range {
                        let found = reader.get_prediction(&id(index))?;
                        assert_eq!(found.as_deref(), Some(&body(index)[..]), "row {index}");
                    }
                    assert_eq!(reader.get_prediction("absent")?, None);
                    Ok(())
                })
                .unwrap();
        };
        check(&reader, 0..2_000);
        // Past the file's mapped end: first in the WAL only, then checkpointed.
        write(&mut store, 2_000..4_000);
        check(&reader, 0..4_000);
        assert!(store.checkpoint().unwrap());
        check(&reader, 1_000..4_000);
        assert!(reader.lookups_mapped.get() < READER_REMAP_EVERY);
    }

    /// Sorted lookups find what one lookup per id finds, ids given twice
    /// included; dense ids take one descent for a run of them, and sparse
    /// ones a descent each with few steps spent on rows nobody wants.
    #[test]
    fn sorted_lookups_step_through_dense_ids_and_descend_to_sparse_ones() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(dir.path(), Synchronous::Normal).unwrap();
        let id = |number: usize| format!("p{number:07}");
        let body = |number: usize| format!("body {number}").into_bytes();
        // Every even number below 20,000 is stored: every other id in key order.
        store
            .transaction(|writer| {
                for number in (0..20_000).step_by(2) {
                    assert!(writer.insert_prediction(&row(&id(number), &body(number)))?);
                }
                Ok(())
            })
            .unwrap();
        let reader = Reader::open_path(&dir.path().join("modelwatch.db")).unwrap();
        let walk = |numbers: &[usize]| {
            let ids: Vec<String> = numbers.iter().map(|number| id(*number)).collect();
            let mut ids: Vec<&str> = ids.iter().map(String::as_str).collect();
            ids.push("a before every id");
            ids.push("q after every id");
            ids.sort_unstable();
            let mut found = vec![None; ids.len()];
            let walk = reader
                .snapshot(|reader| {
                    reader.with_predictions_in_order(&ids, |position, body| {
                        assert!(found[position].is_none(), "{} found twice", ids[position]);
                        found[position] = Some(body.to_vec());
                    })
                })
                .unwrap();
            for (id, found) in ids.iter().zip(&found) {
                let expected = reader.snapshot(|reader| reader.get_prediction(id)).unwrap();
                assert_eq!(found, &expected, "{id}");
            }
            (walk, found.iter().filter(|found| found.is_some()).count())
        };
        // Dense: a run of consecutive numbers, half of them stored, one given twice.
        let mut dense: Vec<usize> = (5_000..6_000).collect();
        dense.push(5_500);
        let (dense_walk, found) = walk(&dense);
        assert_eq!(found, 501);
        // The lookup of the id before every stored one spends the first
        // steps allowed; after a few lookups a step is tried, finds, and
        // stepping goes on to the end.
        assert!(dense_walk.lookups <= 2 + u64::from(STEP), "{dense_walk:?}");
        // Past the run, steps go on until the credit it earned is spent.
        assert!(
            dense_walk.steps <= 500 + u64::from(STEPS_ALLOWED + STEPS_AT_MOST),
            "{dense_walk:?}"
        );
        // Sparse: one stored id in 50.
        let sparse: Vec<usize> = (0..20_000).step_by(100).collect();
        let (sparse_walk, found) = walk(&sparse);
        assert_eq!(found, 200);
        assert!(sparse_walk.lookups >= 200, "{sparse_walk:?}");
        assert!(
            sparse_walk.steps <= u64::from(STEPS_ALLOWED) + sparse_walk.lookups / u64::from(STEP) + 1,
            "{sparse_walk:?}"
        );
        // Nothing asked, nothing found.
        let walk = reader
            .snapshot(|reader| reader.with_predictions_in_order(&[], |_, _| panic!("nothing was asked")))
            .unwrap();
        assert_eq!(walk, Walk::default());
    }

    #[test]
    fn a_failed_transaction_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(dir.path(), Synchronous::Normal).unwrap();
        let outcome: Result<()> = store.transaction(|writer| {
            writer.insert_prediction(&row("a", b"{}"))?;
            Err(StoreError::Corrupt("abort".into()))
        });
        assert!(outcome.is_err());
        assert_eq!(store.count_predictions().unwrap(), 0);
    }

    #[test]
    fn aggregates_upsert_delete_and_load() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(dir.path(), Synchronous::Normal).unwrap();
        let key = |start_ms| BucketKey {
            model: "m".into(),
            version: "v".into(),
            resolution: Resolution::Minute,
            start_ms,
        };
        store
            .transaction(|writer| {
                writer.put_aggregate(&key(0), b"one")?;
                writer.put_aggregate(&key(0), b"two")?;
                writer.put_aggregate(&key(60_000), b"three")?;
                writer.delete_aggregate(&key(60_000))
            })
            .unwrap();
        let mut loaded = Vec::new();
        store
            .load_aggregates(|key, state| {
                loaded.push((key, state.to_vec()));
                Ok(())
            })
            .unwrap();
        assert_eq!(loaded, vec![(key(0), b"two".to_vec())]);
    }
}
