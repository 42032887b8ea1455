//! Where each label is, by `prediction_id`, without a B-tree keyed by id.
//!
//! Labels arrive in label order, not id order, so a table keyed by
//! `prediction_id` takes each insert on a random page: at 7M labels a group
//! commit rewrote most of the table (about 11 KB written per label). Here the
//! `labels` rows are appended in commit order (`seq`), and the index from id
//! to `seq` is kept in the way of a log-structured merge tree:
//!
//! - `recent`: the ids of the rows appended since the last flush, in memory.
//!   On start it is rebuilt from the rows past the persisted watermark
//!   (`meta.labels_flushed_seq`).
//! - *runs*: past [`FLUSH_AT`] entries, `recent` is written, sorted by id, as
//!   a run of `label_runs`: rows `(run, first_id, entries, blob)`, each blob a
//!   chunk of up to [`CHUNK`] sorted `(id, seq)` entries that a lookup
//!   binary-searches in place (one SQLite row per entry made flushes and
//!   merges most of the writer's work). Runs are numbered in order, so a run
//!   is appended to the table's right edge. Each run has a Bloom filter in
//!   memory, stored beside it in `label_filters` (so that a start reads the
//!   filters instead of every entry). When the newest [`MERGE_WIDTH`] runs are of one
//!   size class, they are merged into one (dropping entries whose row is
//!   gone), so that there are few runs to look in.
//!
//! A lookup checks `recent`, then the runs whose filter admits the id, newest
//! first; the first entry found decides, and the row it names must still hold
//! that id (a deleted label leaves its entry behind until a merge).
//!
//! All of it changes inside the writer's transaction. If the transaction does
//! not commit, the in-memory part is rebuilt from the database.

use fastbloom::BloomFilter;
use rusqlite::{Connection, OptionalExtension, params};
use rustc_hash::FxHashMap;

use crate::{Result, StoreError};

/// Entries of `recent` that make a run (about 64 bytes of memory each).
pub(crate) const FLUSH_AT: usize = 262_144;
/// How many runs of one size class are merged into one.
const MERGE_WIDTH: usize = 4;
/// The Bloom filters' false-positive rate: the share of absent ids that cost
/// a lookup in a run anyway. Every new label is absent from every run, and
/// a lookup (a chunk read from SQLite, parsed and searched) costs about a
/// hundred times a filter check, so at 1% the writer spent about a tenth of
/// its label time on false positives (8 runs at 7M labels). 0.1% costs
/// 14.4 bits per label instead of 9.6: 12.6 MB of filters at 7M labels.
const FALSE_POSITIVES: f64 = 0.001;
/// One seed for every filter, so that an id is hashed once for all runs.
const SEED: u128 = 0x6d6f_6465_6c77_6174_6368_6c61_6265_6c73;

/// Appends a label row (`seq`, `prediction_id`, `held`, `body`).
pub(crate) const INSERT: &str = "INSERT INTO labels (seq, prediction_id, held, body) VALUES (?1, ?2, ?3, ?4)";

pub(crate) const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS labels (
        seq INTEGER PRIMARY KEY,
        prediction_id TEXT NOT NULL,
        held INTEGER NOT NULL,
        body BLOB NOT NULL
    );
    CREATE TABLE IF NOT EXISTS label_runs (
        run INTEGER NOT NULL,
        first_id TEXT NOT NULL,
        entries INTEGER NOT NULL,
        blob BLOB NOT NULL,
        PRIMARY KEY (run, first_id)
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS label_filters (
        run INTEGER PRIMARY KEY,
        hasher INTEGER NOT NULL,
        hashes INTEGER NOT NULL,
        max_seq INTEGER NOT NULL,
        bits BLOB NOT NULL
    );";

/// Created after a migration may have replaced an older `labels`.
pub(crate) const HELD_INDEX: &str =
    "CREATE INDEX IF NOT EXISTS labels_held_seq ON labels (seq) WHERE held = 1";

const FLUSHED_KEY: &str = "labels_flushed_seq";

/// A stored label row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LabelRow {
    pub seq: i64,
    pub held: bool,
    pub body: Vec<u8>,
}

struct Run {
    run: i64,
    len: usize,
    filter: BloomFilter,
    /// Some of its entries may name deleted rows: a merge must check them.
    /// Unknown (so true) for runs read back on start.
    may_have_dead: bool,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Run")
            .field("run", &self.run)
            .field("len", &self.len)
            .finish()
    }
}

/// The in-memory part of the label index.
#[derive(Debug)]
pub(crate) struct LabelIndex {
    recent: FxHashMap<Box<str>, i64>,
    /// Oldest first.
    runs: Vec<Run>,
    next_seq: i64,
    next_run: i64,
    /// [`FLUSH_AT`], smaller in tests.
    flush_at: usize,
    /// Runs whose filter was rebuilt on load, not stored (a database written
    /// before filters were): (run, its largest `seq`).
    unstored: Vec<(i64, i64)>,
}

/// What a flush (and the merges after it) changed in the database, applied
/// to memory once the transaction has committed.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    new_runs: Vec<Run>,
    /// How many of the newest runs the merges replaced.
    replaced: usize,
}

/// What the filters' hasher makes of a fixed text: a stored filter is used
/// only if it equals this build's, since a filter read with another hash
/// function would turn away ids it holds (a `fastbloom` upgrade that changed
/// its hashing would then cost one rebuild from the runs, not wrong answers).
fn hasher_fingerprint() -> i64 {
    new_filter(1).source_hash("modelwatch label index") as i64
}

/// A run's filter as stored in `label_filters`, with the largest `seq` of
/// its entries; `None` when there is none, or it is not this build's.
fn stored_filter(connection: &Connection, run: i64) -> Result<Option<(BloomFilter, i64)>> {
    let stored = connection
        .prepare_cached("SELECT hasher, hashes, max_seq, bits FROM label_filters WHERE run = ?1")?
        .query_row([run], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, u32>(1)?,
                row.get::<_, i64>(2)?,
                row.get::<_, Vec<u8>>(3)?,
            ))
        })
        .optional()?;
    let Some((hasher, hashes, max_seq, bytes)) = stored else {
        return Ok(None);
    };
    if hasher != hasher_fingerprint() || bytes.is_empty() || bytes.len() % 8 != 0 {
        return Ok(None);
    }
    let words = bytes
        .chunks_exact(8)
        .map(|word| u64::from_le_bytes(word.try_into().expect("8 bytes")))
        .collect();
    Ok(Some((
        BloomFilter::from_vec(words).seed(&SEED).hashes(hashes),
        max_seq,
    )))
}

/// Stores a run's filter, in the transaction that writes the run.
fn store_filter(connection: &Connection, run: i64, filter: &BloomFilter, max_seq: i64) -> Result<()> {
    let bytes: Vec<u8> = filter
        .as_slice()
        .iter()
        .flat_map(|word| word.to_le_bytes())
        .collect();
    connection
        .prepare_cached(
            "INSERT OR REPLACE INTO label_filters (run, hasher, hashes, max_seq, bits) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![run, hasher_fingerprint(), filter.num_hashes(), max_seq, bytes])?;
    Ok(())
}

fn new_filter(expected: usize) -> BloomFilter {
    BloomFilter::with_false_pos(FALSE_POSITIVES)
        .seed(&SEED)
        .expected_items(expected.max(1))
}

/// The size class of a run: runs of one class are merged together.
fn size_class(len: usize, flush_at: usize) -> u32 {
    let mut class = 0;
    let mut bound = flush_at.saturating_mul(MERGE_WIDTH);
    while len >= bound {
        class += 1;
        bound = bound.saturating_mul(MERGE_WIDTH);
    }
    class
}

impl LabelIndex {
    /// Reads the index back: the runs' filters (stored with each run; rebuilt
    /// from its entries for a run stored without one), and `recent` from
    /// the rows past the flush watermark.
    pub(crate) fn load(connection: &Connection) -> Result<Self> {
        let flushed: i64 = connection
            .query_row("SELECT value FROM meta WHERE key = ?1", [FLUSHED_KEY], |row| {
                row.get(0)
            })
            .optional()?
            .unwrap_or(0);
        let mut sizes =
            connection.prepare("SELECT run, sum(entries) FROM label_runs GROUP BY run ORDER BY run")?;
        let sizes: Vec<(i64, i64)> = sizes
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        let mut runs = Vec::with_capacity(sizes.len());
        let mut unstored = Vec::new();
        let mut max_seq = flushed;
        let mut statement = run_statement(connection)?;
        for (run, len) in sizes {
            let len = len as usize;
            let filter = match stored_filter(connection, run)? {
                Some((filter, run_max_seq)) => {
                    max_seq = max_seq.max(run_max_seq);
                    filter
                }
                None => {
                    let mut filter = new_filter(len);
                    let mut run_max_seq = 0;
                    let mut cursor = RunCursor::new(&mut statement, run)?;
                    while cursor.advance()? {
                        filter.insert(utf8(&cursor.id)?);
                        run_max_seq = run_max_seq.max(cursor.seq);
                    }
                    max_seq = max_seq.max(run_max_seq);
                    unstored.push((run, run_max_seq));
                    filter
                }
            };
            runs.push(Run {
                run,
                len,
                filter,
                may_have_dead: true,
            });
        }
        let mut recent = FxHashMap::default();
        let mut rows_after = connection.prepare("SELECT prediction_id, seq FROM labels WHERE seq > ?1")?;
        let mut rows = rows_after.query([flushed])?;
        while let Some(row) = rows.next()? {
            let seq: i64 = row.get(1)?;
            max_seq = max_seq.max(seq);
            recent.insert(row.get::<_, String>(0)?.into_boxed_str(), seq);
        }
        let next_run = runs.last().map_or(1, |run| run.run + 1);
        Ok(Self {
            recent,
            runs,
            next_seq: max_seq + 1,
            next_run,
            flush_at: FLUSH_AT,
            unstored,
        })
    }

    /// Stores the filters that [`LabelIndex::load`] had to rebuild, so that
    /// the next start reads them. In one transaction of its own.
    pub(crate) fn store_rebuilt_filters(&mut self, connection: &Connection) -> Result<()> {
        if self.unstored.is_empty() {
            return Ok(());
        }
        let transaction = connection.unchecked_transaction()?;
        for (run, max_seq) in &self.unstored {
            if let Some(stored) = self.runs.iter().find(|stored| stored.run == *run) {
                store_filter(&transaction, *run, &stored.filter, *max_seq)?;
            }
        }
        transaction.commit()?;
        self.unstored.clear();
        Ok(())
    }

    pub(crate) fn runs(&self) -> usize {
        self.runs.len()
    }

    /// Flushes `recent` from `entries` on instead of [`FLUSH_AT`].
    pub(crate) fn set_flush_at(&mut self, entries: usize) {
        self.flush_at = entries.max(1);
    }

    /// The row that holds the label of `prediction_id`, if any.
    pub(crate) fn get(&self, connection: &Connection, prediction_id: &str) -> Result<Option<LabelRow>> {
        let Some((seq, _)) = self.find(connection, prediction_id)? else {
            return Ok(None);
        };
        let mut statement = connection
            .prepare_cached("SELECT held, body FROM labels WHERE seq = ?1 AND prediction_id = ?2")?;
        Ok(statement
            .query_row(params![seq, prediction_id], |row| {
                Ok(LabelRow {
                    seq,
                    held: row.get::<_, i64>(0)? != 0,
                    body: row.get(1)?,
                })
            })
            .optional()?)
    }

    /// The `seq` of the newest entry for `prediction_id`, and the position of
    /// its run (none when it is in `recent`).
    fn find(&self, connection: &Connection, prediction_id: &str) -> Result<Option<(i64, Option<usize>)>> {
        if let Some(seq) = self.recent.get(prediction_id) {
            return Ok(Some((*seq, None)));
        }
        let Some(newest) = self.runs.last() else {
            return Ok(None);
        };
        let hash = newest.filter.source_hash(prediction_id);
        // The chunk of the run whose first id is the greatest not after
        // `prediction_id`: the first row at or before `(run, id)`, if it is
        // of that run. (Written `run = ?1 AND first_id <= ?2 ORDER BY
        // first_id DESC`, the same plan made SQLite prepare the statement
        // again whenever `run` changed, as STAT4 builds do for parameters
        // that may change a plan.)
        // Prepared when a filter first admits the id: most ids are new, and
        // every filter turns them away.
        let mut statement = None;
        for (position, run) in self.runs.iter().enumerate().rev() {
            if !run.filter.contains_hash(hash) {
                continue;
            }
            let statement = match &mut statement {
                Some(statement) => statement,
                None => statement.insert(connection.prepare_cached(
                    "SELECT run, blob FROM label_runs WHERE (run, first_id) <= (?1, ?2)
                     ORDER BY run DESC, first_id DESC LIMIT 1",
                )?),
            };
            let mut rows = statement.query(params![run.run, prediction_id])?;
            if let Some(row) = rows.next()?
                && row.get::<_, i64>(0)? == run.run
            {
                let blob = row.get_ref(1)?.as_blob().map_err(rusqlite::Error::from)?;
                if let Some(seq) = Chunk::parse(blob)?.find(prediction_id.as_bytes())? {
                    return Ok(Some((seq, Some(position))));
                }
            }
        }
        Ok(None)
    }

    /// Appends a label row with `insert`, [`INSERT`] prepared; the caller
    /// knows that none is stored for the id. A writer appending many labels
    /// in one transaction keeps the statement at hand, instead of finding it
    /// in the statement cache (hashing its text) for each.
    pub(crate) fn append_with(
        &mut self,
        insert: &mut rusqlite::Statement<'_>,
        prediction_id: &str,
        held: bool,
        body: &[u8],
    ) -> Result<()> {
        let seq = self.next_seq;
        insert.execute(params![seq, prediction_id, i64::from(held), body])?;
        self.next_seq += 1;
        self.recent.insert(prediction_id.into(), seq);
        Ok(())
    }

    /// Replaces the content of a stored row, in place.
    pub(crate) fn update(connection: &Connection, seq: i64, held: bool, body: &[u8]) -> Result<()> {
        connection
            .prepare_cached("UPDATE labels SET held = ?2, body = ?3 WHERE seq = ?1")?
            .execute(params![seq, i64::from(held), body])?;
        Ok(())
    }

    /// Deletes the label of `prediction_id`, if there is one.
    pub(crate) fn delete(&mut self, connection: &Connection, prediction_id: &str) -> Result<()> {
        let Some((seq, run)) = self.find(connection, prediction_id)? else {
            return Ok(());
        };
        connection
            .prepare_cached("DELETE FROM labels WHERE seq = ?1 AND prediction_id = ?2")?
            .execute(params![seq, prediction_id])?;
        match run {
            None => {
                self.recent.remove(prediction_id);
            }
            // Marked at once: if the transaction does not commit, the index
            // is read back anyway.
            Some(position) => self.runs[position].may_have_dead = true,
        }
        Ok(())
    }

    /// Writes `recent` as a run once it is large enough, then merges runs of
    /// one size class. Call inside the transaction, before it commits; then
    /// [`LabelIndex::committed`] with the answer.
    pub(crate) fn flush_if_full(&self, connection: &Connection) -> Result<Pending> {
        let mut pending = Pending::default();
        if self.recent.len() < self.flush_at {
            return Ok(pending);
        }
        let mut entries: Vec<(&str, i64)> = self.recent.iter().map(|(id, seq)| (&**id, *seq)).collect();
        entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let run = self.next_run;
        let mut builder = RunBuilder::new(run, entries.len());
        for (id, seq) in &entries {
            builder.push(connection, id, *seq)?;
        }
        let flushed_run = builder.finish(connection)?;
        connection
            .prepare_cached(
                "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )?
            .execute(params![FLUSHED_KEY, self.next_seq - 1])?;
        pending.new_runs.push(flushed_run);
        // Merge while the newest MERGE_WIDTH runs (the new one included) are
        // of one size class.
        let mut sizes: Vec<(i64, usize, bool)> = self
            .runs
            .iter()
            .map(|run| (run.run, run.len, run.may_have_dead))
            .collect();
        sizes.push((run, entries.len(), false));
        let mut next_run = run + 1;
        while sizes.len() >= MERGE_WIDTH {
            let tail = &sizes[sizes.len() - MERGE_WIDTH..];
            if size_class(tail[0].1, self.flush_at) != size_class(tail[MERGE_WIDTH - 1].1, self.flush_at) {
                break;
            }
            let expected = tail.iter().map(|(_, len, _)| len).sum();
            let check_live = tail.iter().any(|(_, _, may_have_dead)| *may_have_dead);
            let merged_runs: Vec<i64> = tail.iter().map(|(run, _, _)| *run).collect();
            let merged = merge_runs(connection, &merged_runs, expected, next_run, check_live)?;
            // The merged runs are the newest: those created by this flush
            // leave `new_runs`, the others are replaced in `runs`.
            let from_pending = pending.new_runs.len().min(MERGE_WIDTH);
            pending.new_runs.truncate(pending.new_runs.len() - from_pending);
            pending.replaced += MERGE_WIDTH - from_pending;
            sizes.truncate(sizes.len() - MERGE_WIDTH);
            sizes.push((next_run, merged.len, false));
            pending.new_runs.push(merged);
            next_run += 1;
        }
        Ok(pending)
    }

    /// Applies a committed flush to memory.
    pub(crate) fn committed(&mut self, pending: Pending) {
        // A flush always leaves a new run: the flushed one, or a merge of it.
        if pending.new_runs.is_empty() {
            return;
        }
        self.recent.clear();
        self.runs.truncate(self.runs.len() - pending.replaced);
        self.runs.extend(pending.new_runs);
        self.next_run = self.runs.last().map_or(self.next_run, |run| run.run + 1);
    }
}

/// Merges `runs` (the newest runs, oldest first) into run `into`: each id
/// keeps the entry of the newest run that has it and, when `check_live`, only
/// if its row still holds that id. Deletes the merged runs.
///
/// The runs are read side by side in id order, chunk by chunk, so memory
/// stays bounded whatever their size.
fn merge_runs(
    connection: &Connection,
    runs: &[i64],
    expected: usize,
    into: i64,
    check_live: bool,
) -> Result<Run> {
    let mut statements = runs
        .iter()
        .map(|_| run_statement(connection))
        .collect::<Result<Vec<_>>>()?;
    let mut cursors = Vec::with_capacity(runs.len());
    let mut has_head = Vec::with_capacity(runs.len());
    for (statement, run) in statements.iter_mut().zip(runs) {
        let mut cursor = RunCursor::new(statement, *run)?;
        has_head.push(cursor.advance()?);
        cursors.push(cursor);
    }
    let mut builder = RunBuilder::new(into, expected);
    let mut live = connection.prepare("SELECT 1 FROM labels WHERE seq = ?1 AND prediction_id = ?2")?;
    loop {
        // The smallest id among the heads; on a tie the newest run wins.
        let mut winner: Option<usize> = None;
        for position in 0..cursors.len() {
            if has_head[position] && winner.is_none_or(|best| cursors[position].id <= cursors[best].id) {
                winner = Some(position);
            }
        }
        let Some(winner) = winner else {
            break;
        };
        let seq = cursors[winner].seq;
        let id = utf8(&cursors[winner].id)?;
        if !check_live || live.exists(params![seq, id])? {
            builder.push(connection, id, seq)?;
        }
        // Older entries of the same id are shadowed: skip them.
        for position in 0..cursors.len() {
            if position != winner && has_head[position] && cursors[position].id == cursors[winner].id {
                has_head[position] = cursors[position].advance()?;
            }
        }
        has_head[winner] = cursors[winner].advance()?;
    }
    drop(cursors);
    let mut delete = connection.prepare_cached("DELETE FROM label_runs WHERE run = ?1")?;
    let mut delete_filter = connection.prepare_cached("DELETE FROM label_filters WHERE run = ?1")?;
    for run in runs {
        delete.execute([run])?;
        delete_filter.execute([run])?;
    }
    builder.finish(connection)
}

/// Entries per row of `label_runs`: a chunk of a run, about 5–12 KB, which
/// stays on its B-tree page.
#[cfg(not(test))]
const CHUNK: usize = 256;
/// Small in unit tests, so that their runs span many chunks.
#[cfg(test)]
const CHUNK: usize = 3;

/// Builds a run chunk by chunk, in id order.
struct RunBuilder {
    run: i64,
    /// The chunk being filled: entry bytes (id, then `seq` as 8 bytes LE).
    data: Vec<u8>,
    /// The end of each entry in `data`.
    ends: Vec<u32>,
    first: String,
    len: usize,
    max_seq: i64,
    filter: BloomFilter,
}

impl RunBuilder {
    fn new(run: i64, expected: usize) -> Self {
        Self {
            run,
            data: Vec::with_capacity(CHUNK * 24),
            ends: Vec::with_capacity(CHUNK),
            first: String::new(),
            len: 0,
            max_seq: 0,
            filter: new_filter(expected),
        }
    }

    /// Adds the next entry; ids must come in increasing order.
    fn push(&mut self, connection: &Connection, id: &str, seq: i64) -> Result<()> {
        if self.ends.is_empty() {
            self.first.clear();
            self.first.push_str(id);
        }
        self.data.extend_from_slice(id.as_bytes());
        self.data.extend_from_slice(&seq.to_le_bytes());
        self.ends.push(self.data.len() as u32);
        self.filter.insert(id);
        self.len += 1;
        self.max_seq = self.max_seq.max(seq);
        if self.ends.len() == CHUNK {
            self.write_chunk(connection)?;
        }
        Ok(())
    }

    /// A chunk is: the entry count (u32 LE), the end of each entry (u32 LE
    /// each, relative to the entries), then the entries.
    fn write_chunk(&mut self, connection: &Connection) -> Result<()> {
        let mut blob = Vec::with_capacity(4 + 4 * self.ends.len() + self.data.len());
        blob.extend_from_slice(&(self.ends.len() as u32).to_le_bytes());
        for end in &self.ends {
            blob.extend_from_slice(&end.to_le_bytes());
        }
        blob.extend_from_slice(&self.data);
        connection
            .prepare_cached("INSERT INTO label_runs (run, first_id, entries, blob) VALUES (?1, ?2, ?3, ?4)")?
            .execute(params![self.run, self.first, self.ends.len() as i64, blob])?;
        self.data.clear();
        self.ends.clear();
        Ok(())
    }

    fn finish(mut self, connection: &Connection) -> Result<Run> {
        if !self.ends.is_empty() {
            self.write_chunk(connection)?;
        }
        store_filter(connection, self.run, &self.filter, self.max_seq)?;
        Ok(Run {
            run: self.run,
            len: self.len,
            filter: self.filter,
            may_have_dead: false,
        })
    }
}

/// A chunk of a run, read in place.
struct Chunk<'a> {
    ends: &'a [u8],
    entries: &'a [u8],
    count: usize,
}

impl<'a> Chunk<'a> {
    fn parse(blob: &'a [u8]) -> Result<Self> {
        let corrupt = || StoreError::Corrupt("a chunk of label_runs is truncated".into());
        let count =
            u32::from_le_bytes(blob.get(..4).ok_or_else(corrupt)?.try_into().expect("4 bytes")) as usize;
        let ends = blob.get(4..4 + 4 * count).ok_or_else(corrupt)?;
        let entries = &blob[4 + 4 * count..];
        let chunk = Self { ends, entries, count };
        if count > 0 && chunk.end(count - 1) != entries.len() {
            return Err(corrupt());
        }
        Ok(chunk)
    }

    fn end(&self, index: usize) -> usize {
        u32::from_le_bytes(self.ends[4 * index..4 * index + 4].try_into().expect("4 bytes")) as usize
    }

    /// Entry `index`: its id bytes and `seq`.
    fn entry(&self, index: usize) -> Result<(&'a [u8], i64)> {
        let start = if index == 0 { 0 } else { self.end(index - 1) };
        let end = self.end(index);
        if end < start + 8 || end > self.entries.len() {
            return Err(StoreError::Corrupt("an entry of label_runs is malformed".into()));
        }
        let seq = i64::from_le_bytes(self.entries[end - 8..end].try_into().expect("8 bytes"));
        Ok((&self.entries[start..end - 8], seq))
    }

    fn find(&self, id: &[u8]) -> Result<Option<i64>> {
        let (mut low, mut high) = (0, self.count);
        while low < high {
            let middle = (low + high) / 2;
            let (entry, seq) = self.entry(middle)?;
            match entry.cmp(id) {
                std::cmp::Ordering::Less => low = middle + 1,
                std::cmp::Ordering::Greater => high = middle,
                std::cmp::Ordering::Equal => return Ok(Some(seq)),
            }
        }
        Ok(None)
    }
}

/// Reads a run's entries in id order, chunk by chunk.
struct RunCursor<'s> {
    rows: rusqlite::Rows<'s>,
    blob: Vec<u8>,
    next: usize,
    count: usize,
    /// The current entry.
    id: Vec<u8>,
    seq: i64,
}

impl<'s> RunCursor<'s> {
    fn new(statement: &'s mut rusqlite::Statement<'_>, run: i64) -> Result<Self> {
        Ok(Self {
            rows: statement.query([run])?,
            blob: Vec::new(),
            next: 0,
            count: 0,
            id: Vec::new(),
            seq: 0,
        })
    }

    /// Moves to the next entry; false at the end of the run.
    fn advance(&mut self) -> Result<bool> {
        while self.next == self.count {
            let Some(row) = self.rows.next()? else {
                return Ok(false);
            };
            self.blob.clear();
            self.blob
                .extend_from_slice(row.get_ref(0)?.as_blob().map_err(rusqlite::Error::from)?);
            self.count = Chunk::parse(&self.blob)?.count;
            self.next = 0;
        }
        let chunk = Chunk::parse(&self.blob)?;
        let (id, seq) = chunk.entry(self.next)?;
        self.id.clear();
        self.id.extend_from_slice(id);
        self.seq = seq;
        self.next += 1;
        Ok(true)
    }
}

/// The statement that reads a run for [`RunCursor`].
fn run_statement(connection: &Connection) -> Result<rusqlite::Statement<'_>> {
    Ok(connection.prepare("SELECT blob FROM label_runs WHERE run = ?1 ORDER BY first_id")?)
}

fn utf8(id: &[u8]) -> Result<&str> {
    std::str::from_utf8(id).map_err(|_| StoreError::Corrupt("an id in label_runs is not UTF-8".into()))
}

/// Moves the labels of a version 4 database (a table keyed by id) into the
/// appended form, as one run.
pub(crate) fn migrate_from_keyed(connection: &Connection) -> Result<()> {
    connection.execute_batch(
        "ALTER TABLE labels RENAME TO labels_keyed;
         DROP INDEX IF EXISTS labels_held;",
    )?;
    connection.execute_batch(SCHEMA)?;
    connection.execute_batch(
        "INSERT INTO labels (prediction_id, held, body)
             SELECT prediction_id, held, body FROM labels_keyed ORDER BY prediction_id;
         DROP TABLE labels_keyed;",
    )?;
    // Sized to the labels so that its filter is a normal one, though it is
    // dropped: `LabelIndex::load` reads the run back on open.
    let count: i64 = connection.query_row("SELECT count(*) FROM labels", [], |row| row.get(0))?;
    let mut builder = RunBuilder::new(1, count as usize);
    let mut statement = connection.prepare("SELECT prediction_id, seq FROM labels ORDER BY prediction_id")?;
    let mut rows = statement.query([])?;
    while let Some(row) = rows.next()? {
        let id = row.get_ref(0)?.as_str().map_err(rusqlite::Error::from)?;
        builder.push(connection, id, row.get(1)?)?;
    }
    builder.finish(connection)?;
    connection.execute(
        "INSERT INTO meta (key, value) VALUES (?1, (SELECT coalesce(max(seq), 0) FROM labels))
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        [FLUSHED_KEY],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use crate::{SqliteStore, StoreError, StoredLabelRow, Synchronous};

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u8, bool, u8),
        Put(u8, bool, u8),
        Delete(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u8..40, any::<bool>(), any::<u8>()).prop_map(|(id, held, body)| Op::Insert(id, held, body)),
            2 => (0u8..40, any::<bool>(), any::<u8>()).prop_map(|(id, held, body)| Op::Put(id, held, body)),
            1 => (0u8..40).prop_map(Op::Delete),
        ]
    }

    /// What ends a group of operations.
    #[derive(Debug, Clone, Copy)]
    enum End {
        Commit,
        /// The transaction fails: nothing of the group is kept.
        Abort,
        /// Commit, then reopen the store.
        Reopen,
    }

    fn end() -> impl Strategy<Value = End> {
        prop_oneof![6 => Just(End::Commit), 1 => Just(End::Abort), 1 => Just(End::Reopen)]
    }

    fn id(number: u8) -> String {
        format!("p{number:03}")
    }

    type Model = BTreeMap<String, (bool, Vec<u8>)>;

    fn check(store: &mut SqliteStore, model: &Model) {
        let ids: Vec<String> = (0..40).map(id).collect();
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        check_ids(store, model, &ids);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Through flushes, merges, failed transactions and restarts, the
        /// label index answers as a plain map of id to label would.
        #[test]
        fn the_index_behaves_as_a_map(
            groups in proptest::collection::vec((proptest::collection::vec(op(), 1..12), end()), 1..40),
            flush_at in 1usize..6,
        ) {
            let dir = tempfile::tempdir().unwrap();
            let mut store = SqliteStore::open(dir.path(), Synchronous::Normal).unwrap();
            store.set_label_flush_at(flush_at);
            let mut model = Model::new();
            for (ops, end) in groups {
                let mut next = model.clone();
                let outcome = store.transaction(|writer| {
                    for op in &ops {
                        match *op {
                            Op::Insert(number, held, body) => {
                                let inserted = writer.insert_label(&id(number), held, &[body])?;
                                assert_eq!(inserted, !next.contains_key(&id(number)));
                                next.entry(id(number)).or_insert((held, vec![body]));
                            }
                            Op::Put(number, held, body) => {
                                writer.put_label(&id(number), held, &[body])?;
                                next.insert(id(number), (held, vec![body]));
                            }
                            Op::Delete(number) => {
                                writer.delete_label(&id(number))?;
                                next.remove(&id(number));
                            }
                        }
                    }
                    match end {
                        End::Abort => Err(StoreError::Corrupt("abort".into())),
                        End::Commit | End::Reopen => Ok(()),
                    }
                });
                match end {
                    End::Abort => prop_assert!(outcome.is_err()),
                    End::Commit => {
                        outcome.unwrap();
                        model = next;
                    }
                    End::Reopen => {
                        outcome.unwrap();
                        model = next;
                        drop(store);
                        store = SqliteStore::open(dir.path(), Synchronous::Normal).unwrap();
                        store.set_label_flush_at(flush_at);
                    }
                }
                check(&mut store, &model);
            }
        }
    }

    /// A version 4 database (labels in a table keyed by id) is upgraded in
    /// place: every label is found again, held ones included.
    #[test]
    fn labels_of_a_version_4_database_are_migrated() {
        let dir = tempfile::tempdir().unwrap();
        {
            let connection = rusqlite::Connection::open(dir.path().join("modelwatch.db")).unwrap();
            connection
                .execute_batch(
                    "PRAGMA page_size = 65536;
                     PRAGMA journal_mode = WAL;
                     CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
                     INSERT INTO meta VALUES ('schema_version', 4), ('labels_joined', 2);
                     CREATE TABLE labels (
                         prediction_id TEXT PRIMARY KEY,
                         held INTEGER NOT NULL,
                         body BLOB NOT NULL
                     ) WITHOUT ROWID;
                     CREATE INDEX labels_held ON labels (prediction_id) WHERE held = 1;
                     INSERT INTO labels VALUES ('b', 0, x'02'), ('a', 0, x'01'), ('c', 1, x'03');",
                )
                .unwrap();
        }
        let mut store = SqliteStore::open(dir.path(), Synchronous::Normal).unwrap();
        assert_eq!(store.meta("schema_version").unwrap(), 5);
        assert_eq!(store.meta("labels_joined").unwrap(), 2);
        let mut model = Model::new();
        model.insert("a".into(), (false, vec![1]));
        model.insert("b".into(), (false, vec![2]));
        model.insert("c".into(), (true, vec![3]));
        let found: Vec<Option<StoredLabelRow>> = store
            .transaction(|writer| {
                ["a", "b", "c", "d"]
                    .iter()
                    .map(|id| writer.get_label(id))
                    .collect()
            })
            .unwrap();
        let expected: Vec<Option<StoredLabelRow>> = ["a", "b", "c", "d"]
            .iter()
            .map(|id| {
                model.get(*id).map(|(held, body)| StoredLabelRow {
                    held: *held,
                    body: body.clone(),
                })
            })
            .collect();
        assert_eq!(found, expected);
        // New labels go after the migrated ones, and a restart finds all.
        store
            .transaction(|writer| {
                assert!(!writer.insert_label("a", false, b"\x09")?);
                assert!(writer.insert_label("d", true, b"\x04")?);
                Ok(())
            })
            .unwrap();
        drop(store);
        let mut store = SqliteStore::open(dir.path(), Synchronous::Normal).unwrap();
        model.insert("d".into(), (true, vec![4]));
        check_ids(&mut store, &model, &["a", "b", "c", "d", "e"]);
    }

    fn check_ids(store: &mut SqliteStore, model: &Model, ids: &[&str]) {
        let found: Vec<Option<StoredLabelRow>> = store
            .transaction(|writer| ids.iter().map(|id| writer.get_label(id)).collect())
            .unwrap();
        for (id, found) in ids.iter().zip(found) {
            let expected = model.get(*id).map(|(held, body)| StoredLabelRow {
                held: *held,
                body: body.clone(),
            });
            assert_eq!(found, expected, "label {id}");
        }
        let mut held = Vec::new();
        store
            .load_held_labels(|id, _| {
                held.push(id.to_owned());
                Ok(())
            })
            .unwrap();
        held.sort();
        let expected: Vec<String> = model
            .iter()
            .filter(|(_, (held, _))| *held)
            .map(|(id, _)| id.clone())
            .collect();
        assert_eq!(held, expected);
    }

    /// A merge drops the entries of deleted labels.
    #[test]
    fn runs_keep_their_filters_beside_them_and_a_missing_or_foreign_one_is_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("modelwatch.db");
        let open = || {
            let mut store = SqliteStore::open(dir.path(), Synchronous::Normal).unwrap();
            store.set_label_flush_at(10);
            store
        };
        let ids: Vec<String> = (0..35).map(|number| format!("id{number:04}")).collect();
        let mut store = open();
        for batch in ids.chunks(10) {
            store
                .transaction(|writer| {
                    for id in batch {
                        writer.insert_label(id, false, id.as_bytes())?;
                    }
                    Ok(())
                })
                .unwrap();
        }
        assert_eq!(store.label_runs(), 3);
        let runs_and_filters = || {
            let connection = rusqlite::Connection::open(&path).unwrap();
            let list = |sql: &str| -> Vec<i64> {
                let mut statement = connection.prepare(sql).unwrap();
                statement
                    .query_map([], |row| row.get(0))
                    .unwrap()
                    .collect::<rusqlite::Result<_>>()
                    .unwrap()
            };
            (
                list("SELECT DISTINCT run FROM label_runs ORDER BY run"),
                list("SELECT run FROM label_filters ORDER BY run"),
            )
        };
        let (runs, filters) = runs_and_filters();
        assert_eq!(runs.len(), 3);
        assert_eq!(filters, runs, "one stored filter per run");
        let found =
            |store: &mut SqliteStore, id: &str| store.transaction(|writer| writer.get_label(id)).unwrap();
        let all_found = |store: &mut SqliteStore| {
            for id in &ids {
                let row = found(store, id).unwrap_or_else(|| panic!("{id} is lost"));
                assert_eq!(row.body, id.as_bytes());
            }
            assert_eq!(found(store, "absent"), None);
        };
        drop(store);
        let mut store = open();
        all_found(&mut store);
        drop(store);

        // The stored filter is the one used: emptied, it turns its run's ids away.
        let connection = rusqlite::Connection::open(&path).unwrap();
        let (first, last) = (runs[0], runs[2]);
        let bits: Vec<u8> = connection
            .query_row("SELECT bits FROM label_filters WHERE run = ?1", [first], |row| {
                row.get(0)
            })
            .unwrap();
        connection
            .execute(
                "UPDATE label_filters SET bits = ?1 WHERE run = ?2",
                rusqlite::params![vec![0u8; bits.len()], first],
            )
            .unwrap();
        let mut store = open();
        assert_eq!(found(&mut store, &ids[0]), None, "the emptied filter was read");
        drop(store);

        // A filter from another hasher, and a missing one, are rebuilt from
        // their runs' entries.
        connection
            .execute(
                "UPDATE label_filters SET hasher = hasher + 1 WHERE run = ?1",
                [first],
            )
            .unwrap();
        connection
            .execute("DELETE FROM label_filters WHERE run = ?1", [last])
            .unwrap();
        drop(connection);
        let mut store = open();
        all_found(&mut store);
        assert_eq!(runs_and_filters().1, runs, "the rebuilt filters are stored again");

        // A merge replaces its runs' filters with the merged run's.
        store
            .transaction(|writer| {
                for number in 35..45 {
                    writer.insert_label(&format!("id{number:04}"), false, b"x")?;
                }
                Ok(())
            })
            .unwrap();
        assert_eq!(store.label_runs(), 1, "four runs of 10 merged into one");
        let (runs, filters) = runs_and_filters();
        assert_eq!(runs.len(), 1);
        assert_eq!(filters, runs);
        drop(store);
        let mut store = open();
        all_found(&mut store);
    }

    #[test]
    fn merges_forget_deleted_labels() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(dir.path(), Synchronous::Normal).unwrap();
        store.set_label_flush_at(10);
        let insert = |store: &mut SqliteStore, numbers: std::ops::Range<u32>| {
            store
                .transaction(|writer| {
                    for number in numbers.clone() {
                        writer.insert_label(&format!("id{number:04}"), false, b"x")?;
                    }
                    Ok(())
                })
                .unwrap();
        };
        for start in (0..40).step_by(10) {
            insert(&mut store, start..start + 10);
        }
        assert_eq!(store.label_runs(), 1, "four runs of 10 merged into one");
        store
            .transaction(|writer| {
                for number in (0..40).step_by(2) {
                    writer.delete_label(&format!("id{number:04}"))?;
                }
                Ok(())
            })
            .unwrap();
        for start in (40..160).step_by(10) {
            insert(&mut store, start..start + 10);
        }
        assert_eq!(store.label_runs(), 1, "four runs of 40 merged into one");
        let connection = rusqlite::Connection::open(dir.path().join("modelwatch.db")).unwrap();
        let entries: i64 = connection
            .query_row("SELECT sum(entries) FROM label_runs", [], |row| row.get(0))
            .unwrap();
        assert_eq!(entries, 140, "the 20 deleted labels left the index");
    }

    #[test]
    fn runs_are_merged_by_size_class() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(dir.path(), Synchronous::Normal).unwrap();
        store.set_label_flush_at(10);
        let mut most_runs = 0;
        for batch in 0..100 {
            store
                .transaction(|writer| {
                    for row in 0..10 {
                        // Ids in no particular order, as labels arrive.
                        let number = (batch * 10 + row) * 7919 % 1000;
                        assert!(writer.insert_label(&format!("id{number:04}"), false, b"x")?);
                    }
                    Ok(())
                })
                .unwrap();
            most_runs = most_runs.max(store.label_runs());
        }
        // 1000 labels in runs of 10: 10 merged 4 at a time, then 40 and 160.
        assert!(most_runs <= 3 * 3 + 1, "{most_runs} runs");
        let found = store
            .transaction(|writer| {
                (0..1000)
                    .map(|number| Ok(writer.get_label(&format!("id{number:04}"))?.is_some()))
                    .collect::<crate::Result<Vec<bool>>>()
            })
            .unwrap();
        assert!(found.iter().all(|found| *found));
    }
}
