//! The evaluation: predictions aggregated into per-window buckets, labels
//! joined to them on `prediction_id`, and reference summaries for drift.
//!
//! Files are read in chunks by one thread and parsed by worker threads. Each
//! parsed chunk then takes its turn, in file order, through the one serial
//! step (deduplication on `prediction_id`, cardinality folding and the join
//! map), and goes back to its worker to be aggregated into that worker's own
//! buckets, which merge at the end. So the outcome is the one of reading the
//! files in order, whatever the number of threads.
//!
//! The join map holds, per prediction, the hash of its id (in its table slot)
//! and a few integers (its cell, its segments, what it predicted and the label
//! joined to it), about 60 bytes, not the id itself: ids are told apart by a
//! 64-bit hash, and two distinct ids share one with probability about n²/2⁶⁵
//! (3·10⁻⁶ for 10M ids).

use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};

use modelwatch_core::aggregate::{self, Bucket, FoldedFeature, FoldedNames};
use modelwatch_core::drift::DriftSummary;
use modelwatch_core::event::{
    Actual, FeatureValue, LabelEvent, Prediction, PredictionEvent, Status, TimestampMs,
};
use modelwatch_core::limits::{CardinalityLimits, Dimension, ModelLimits, OTHER};
use modelwatch_core::quality::{Outcome, Quality, QualityBucket, Scored, Sign};
use modelwatch_core::series::{ModelKind, Refusal, observe_drift};
use modelwatch_core::time::bucket_start;
use rustc_hash::FxHashMap;

use crate::ReportError;
use crate::columnar::{
    self, ColumnBatch, FastCommit, FastPlan, LabelBatch, LabelPlan, NO_CLASS, RowKind, UNLISTED,
};
use crate::input::{Batch, Chunk, InputFile, Parsed, RowProblem, RowReader, read_chunks};
use crate::parquet_input::ColumnCells;

/// How many parsed chunks wait for their turn at most, per worker.
const QUEUED_CHUNKS: usize = 2;

/// The id hash: fixed seeds, so that a run is reproducible. Never 0, which
/// marks an empty slot of the join map (the ids hashing to 0 and 1 are told
/// apart no better than any two ids sharing a hash).
pub(crate) fn id_hash(id: &str) -> u64 {
    foldhash::quality::FixedState::with_seed(0x6d6f_6465_6c77_6174)
        .hash_one(id)
        .max(1)
}

/// "Nothing": no prediction to score, or no actual that fits.
const NONE: u64 = u64::MAX;
const UNLABELED: u32 = 0;
const LABELED_WITHOUT_BUSINESS: u32 = 1;

/// One prediction in the join map.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Class index (classifiers) or the output's bits (regression), or NONE.
    predicted: u64,
    /// The joined label's actual, encoded like `predicted`; NONE when it does
    /// not fit the model (text for a regression model).
    actual: u64,
    cell: u32,
    segments: u32,
    /// UNLABELED, LABELED_WITHOUT_BUSINESS, or 2 + the start of the label's
    /// business values in the business arena.
    label: u32,
}

/// One slot of the join map: an id's hash (0: empty) and its prediction's
/// entry packed in one word ([`Packed`]), or, for an entry that does not fit,
/// the index of its full form in `JoinMap::wide`. Plain words, so that the
/// table is allocated zeroed (all empty) by the allocator, whose fresh pages
/// are zero already: a table written slot by slot at creation cost a tenth
/// of a report's CPU. 16 bytes, so that a slot never straddles two cache
/// lines, and the table at 10M predictions is 229 MB: with 32-byte slots
/// (every field in full) it was 457 MB, every fresh page of which the kernel
/// zeroes, and twice the memory that the join's random accesses miss in.
type Slot = [u64; 2];

/// The fields of an [`Entry`] in one word, for the usual entry: a class
/// index (or none) predicted and joined, a cell and a segment set below a
/// few million and 64, and a label without business values. Bits from the
/// lowest: cell 22, segment set 6, predicted 12, actual 12, label 1 (its
/// state: unlabeled, or labeled without business values); the top bit set
/// marks instead an index into `JoinMap::wide` in the low 32 bits.
struct Packed;

impl Packed {
    const CELL_BITS: u32 = 22;
    const SEGMENT_BITS: u32 = 6;
    const CLASS_BITS: u32 = 12;
    /// `NONE` packed; class indices are below it.
    const CLASS_NONE: u64 = (1 << Self::CLASS_BITS) - 1;
    const SEGMENTS_SHIFT: u32 = Self::CELL_BITS;
    const PREDICTED_SHIFT: u32 = Self::SEGMENTS_SHIFT + Self::SEGMENT_BITS;
    const ACTUAL_SHIFT: u32 = Self::PREDICTED_SHIFT + Self::CLASS_BITS;
    const LABEL_SHIFT: u32 = Self::ACTUAL_SHIFT + Self::CLASS_BITS;
    const WIDE: u64 = 1 << 63;

    /// The index into `JoinMap::wide` of a word that holds one.
    fn wide_index(word: u64) -> Option<usize> {
        (word & Self::WIDE != 0).then_some((word & u64::from(u32::MAX)) as usize)
    }

    fn class(value: u64) -> Option<u64> {
        if value == NONE {
            Some(Self::CLASS_NONE)
        } else {
            (value < Self::CLASS_NONE).then_some(value)
        }
    }

    fn unclass(bits: u64) -> u64 {
        let bits = bits & Self::CLASS_NONE;
        if bits == Self::CLASS_NONE { NONE } else { bits }
    }

    /// `entry` in one word, when it fits.
    fn pack(entry: &Entry) -> Option<u64> {
        let cell = u64::from(entry.cell);
        let segments = u64::from(entry.segments);
        if cell >> Self::CELL_BITS != 0
            || segments >> Self::SEGMENT_BITS != 0
            || entry.label > LABELED_WITHOUT_BUSINESS
        {
            return None;
        }
        Some(
            cell | segments << Self::SEGMENTS_SHIFT
                | Self::class(entry.predicted)? << Self::PREDICTED_SHIFT
                | Self::class(entry.actual)? << Self::ACTUAL_SHIFT
                | u64::from(entry.label) << Self::LABEL_SHIFT,
        )
    }

    fn unpack(word: u64) -> Entry {
        Entry {
            predicted: Self::unclass(word >> Self::PREDICTED_SHIFT),
            actual: Self::unclass(word >> Self::ACTUAL_SHIFT),
            cell: (word & ((1 << Self::CELL_BITS) - 1)) as u32,
            segments: ((word >> Self::SEGMENTS_SHIFT) & ((1 << Self::SEGMENT_BITS) - 1)) as u32,
            label: ((word >> Self::LABEL_SHIFT) & 1) as u32,
        }
    }
}

/// The predictions by their ids' hashes: one open-addressing table with
/// linear probing, each slot holding the hash and the entry together. With
/// millions of predictions every lookup is a cache miss, and a lookup here
/// is one (a table of indices beside a vector of entries was two or three,
/// and the serial step spent most of its time waiting on them).
///
/// An index is the slot's position: it holds until the next insertion,
/// which may grow the table.
struct JoinMap {
    slots: Vec<Slot>,
    /// The entries that do not fit in a word ([`Packed`]): regression
    /// outputs and actuals, labels with business values, many cells or
    /// segment sets.
    wide: Vec<Entry>,
    len: usize,
}

impl Default for JoinMap {
    fn default() -> Self {
        Self::with_capacity(0)
    }
}

/// Most filled share of the slots (7/10): linear probing stays short.
const LOAD_NUMERATOR: usize = 7;
const LOAD_DENOMINATOR: usize = 10;

impl JoinMap {
    /// A table for `predictions` at the most filled share: any number of
    /// slots, not a power of two (at 10M predictions, 229 MB rather than
    /// 268), since a hash's home is its range-scaled value
    /// ([`JoinMap::home`]).
    fn with_capacity(predictions: usize) -> Self {
        let slots = (predictions * LOAD_DENOMINATOR / LOAD_NUMERATOR + 1).max(16);
        Self {
            slots: vec![[0; 2]; slots],
            wide: Vec::new(),
            len: 0,
        }
    }

    /// [`JoinMap::with_capacity`], its memory touched by `threads` threads
    /// at once. A fresh table's pages are faulted in (and zeroed by the
    /// kernel) as they are first written, and the first chunk's random
    /// insertions touch nearly all of them: at 10M predictions, a quarter of
    /// a GB zeroed by the serial step while the other workers wait their
    /// turn.
    fn touched(predictions: usize, threads: usize) -> Self {
        let mut map = Self::with_capacity(predictions);
        // One write per 4 KiB page.
        const SLOTS_PER_PAGE: usize = 4096 / std::mem::size_of::<Slot>();
        let part = map.slots.len().div_ceil(threads.max(1)).max(SLOTS_PER_PAGE);
        std::thread::scope(|scope| {
            for slots in map.slots.chunks_mut(part) {
                scope.spawn(move || {
                    for slot in slots.iter_mut().step_by(SLOTS_PER_PAGE) {
                        slot[0] = 0;
                    }
                });
            }
        });
        map
    }

    /// `hash` scaled to the slots' range: `hash * len / 2^64`, which spreads
    /// a uniform hash evenly over any number of slots.
    fn home(&self, hash: u64) -> usize {
        ((u128::from(hash) * self.slots.len() as u128) >> 64) as usize
    }

    /// The slot of `hash`, or the empty slot where it would go.
    fn probe(&self, hash: u64) -> usize {
        let mut position = self.home(hash);
        loop {
            let slot = self.slots[position][0];
            if slot == hash || slot == 0 {
                return position;
            }
            position += 1;
            if position == self.slots.len() {
                position = 0;
            }
        }
    }

    /// The word of `entry` in a slot: packed, or a new wide entry's index.
    fn word_of(&mut self, entry: Entry) -> u64 {
        Packed::pack(&entry).unwrap_or_else(|| {
            let index = u32::try_from(self.wide.len()).expect("fewer than 2^32 wide entries");
            self.wide.push(entry);
            Packed::WIDE | u64::from(index)
        })
    }

    fn of_word(&self, word: u64) -> Entry {
        match Packed::wide_index(word) {
            Some(index) => self.wide[index],
            None => Packed::unpack(word),
        }
    }

    fn of_slot(&self, slot: &Slot) -> Entry {
        self.of_word(slot[1])
    }

    fn entry(&self, index: u32) -> Entry {
        self.of_slot(&self.slots[index as usize])
    }

    /// Records the label joined to the entry at `index`.
    fn set_label(&mut self, index: u32, actual: u64, label: u32) {
        let word = self.slots[index as usize][1];
        if let Some(wide) = Packed::wide_index(word) {
            let entry = &mut self.wide[wide];
            entry.actual = actual;
            entry.label = label;
            return;
        }
        let entry = Entry {
            actual,
            label,
            ..Packed::unpack(word)
        };
        self.slots[index as usize][1] = self.word_of(entry);
    }

    fn find(&self, hash: u64) -> Option<u32> {
        let position = self.probe(hash);
        (self.slots[position][0] != 0).then_some(position as u32)
    }

    /// Where `hash` goes, or `None` when it is in the map already. Makes
    /// room for one more first, so that the position holds for [`fill`]
    /// (one probe for the duplicate check and the insertion).
    ///
    /// [`fill`]: JoinMap::fill
    fn vacant(&mut self, hash: u64) -> Option<usize> {
        debug_assert_ne!(hash, 0);
        if (self.len + 1) * LOAD_DENOMINATOR > self.slots.len() * LOAD_NUMERATOR {
            self.grow();
        }
        let position = self.probe(hash);
        (self.slots[position][0] == 0).then_some(position)
    }

    /// Adds a prediction at the position [`JoinMap::vacant`] gave for it.
    fn fill(&mut self, position: usize, hash: u64, entry: Entry) {
        debug_assert_eq!(self.slots[position][0], 0, "a hash is inserted once");
        self.slots[position] = [hash, self.word_of(entry)];
        self.len += 1;
    }

    /// Adds a prediction whose hash is not in the map.
    #[cfg(test)]
    fn insert(&mut self, hash: u64, entry: Entry) {
        let position = self.vacant(hash).expect("a hash is inserted once");
        self.fill(position, hash, entry);
    }

    fn grow(&mut self) {
        let mut old = std::mem::replace(self, Self::with_capacity(self.slots.len()));
        self.wide = std::mem::take(&mut old.wide);
        for slot in old.slots.into_iter().filter(|slot| slot[0] != 0) {
            let position = self.probe(slot[0]);
            self.slots[position] = slot;
            self.len += 1;
        }
    }

    #[cfg(test)]
    fn iter(&self) -> impl Iterator<Item = Entry> + '_ {
        self.slots
            .iter()
            .filter(|slot| slot[0] != 0)
            .map(|slot| self.of_slot(slot))
    }

    /// Reads the home slots of `hashes` without using them: with millions of
    /// predictions each is a cache miss, and reads done back to back,
    /// independent of each other, overlap their misses, where the commit's
    /// own lookups, each followed by its work, would wait for them one by
    /// one. The commit then finds the same slots in the cache.
    fn warm(&self, hashes: &[u64]) {
        let mut touched = 0u64;
        for hash in hashes {
            touched ^= self.slots[self.home(*hash)][0];
        }
        std::hint::black_box(touched);
    }
}

/// How many lookups are warmed at once ([`JoinMap::warm`]): enough to keep
/// several misses in flight, few enough that their lines stay in the cache
/// until the commit reads them. With 16-byte slots, 64 used about 1.5% less
/// CPU than 32 or 128 on the 10M report (user time over 8 runs each).
const WARM_BATCH: usize = 64;

/// Names to dense indices.
#[derive(Debug, Default)]
pub struct Interner {
    index: FxHashMap<String, u32>,
    pub names: Vec<String>,
}

impl Interner {
    fn intern(&mut self, name: &str) -> u32 {
        if let Some(index) = self.index.get(name) {
            return *index;
        }
        let index = self.names.len() as u32;
        self.names.push(name.to_owned());
        self.index.insert(name.to_owned(), index);
        index
    }
}

/// What the report knows of one model.
#[derive(Debug, Default)]
pub struct Model {
    pub name: String,
    pub kind: Option<ModelKind>,
    limits: Folding,
    pub classes: Interner,
    pub business: Interner,
    /// Each distinct folded segment set, as `key\u{1f}value\u{1e}...`.
    segment_sets: Interner,
    pub segment_values: Vec<Vec<(String, String)>>,
}

impl Model {
    fn segment_set(&mut self, segments: &[(String, String)]) -> u32 {
        if segments.is_empty() && !self.segment_values.is_empty() {
            return 0;
        }
        let mut key = String::new();
        for (name, value) in segments {
            key.push_str(name);
            key.push('\u{1f}');
            key.push_str(value);
            key.push('\u{1e}');
        }
        let index = self.segment_sets.intern(&key);
        if index as usize == self.segment_values.len() {
            self.segment_values.push(segments.to_vec());
        }
        index
    }
}

/// One model version's window: where a prediction's figures go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CellKey {
    pub series: u32,
    pub window_start_ms: i64,
}

/// Counts of one input file.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct FileCounts {
    pub path: String,
    pub format: &'static str,
    /// Rows read (blank lines aside).
    pub rows: u64,
    /// Rows that were valid and counted.
    pub accepted: u64,
    /// Predictions whose id was seen before (counted once); labels identical
    /// to the joined one.
    pub duplicates: u64,
    /// Rows that could not be read, or that the model refused.
    pub rejected: u64,
}

/// What the labels did, as `/v1/labels/stats` counts it.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct LabelCounts {
    /// Predictions with a label.
    pub joined: u64,
    /// Label rows identical to the label already joined.
    pub duplicates: u64,
    /// Label rows that replaced a different label.
    pub corrected: u64,
    /// Label rows for an id no predictions file holds.
    pub orphaned: u64,
    /// Joined labels that cannot be scored: their prediction failed or
    /// predicted nothing, or the actual does not fit the model.
    pub unscorable: u64,
}

/// Everything the serial step owns.
#[derive(Default)]
pub struct Catalog {
    pub models: Vec<Model>,
    model_index: FxHashMap<String, u32>,
    /// (model, version) of each series.
    pub series: Vec<(u32, String)>,
    /// Per model, its versions' series (a model has few versions).
    series_of_model: Vec<Vec<u32>>,
    pub cells: Vec<CellKey>,
    cell_index: FxHashMap<CellKey, u32>,
    /// The cell and model of the previous event: consecutive events mostly
    /// share them.
    last_cell: Option<(CellKey, u32)>,
    last_model: Option<u32>,
    join: JoinMap,
    /// Business values of labels: (name index, value); the last of a label's
    /// values has the top bit of its name set.
    business_values: Vec<(u32, f64)>,
    pub labels: LabelCounts,
    pub problems: Vec<RowProblem>,
    pub problem_count: u64,
}

/// At most this many row problems are kept (all are counted).
pub const KEPT_PROBLEMS: usize = 1000;
const LAST_BUSINESS_VALUE: u32 = 1 << 31;

impl Catalog {
    fn problem(&mut self, problem: RowProblem) {
        self.problem_count += 1;
        if self.problems.len() < KEPT_PROBLEMS {
            self.problems.push(problem);
        }
    }

    fn model(&mut self, name: &str, limits: &CardinalityLimits) -> Result<u32, Refusal> {
        if let Some(last) = self.last_model
            && self.models[last as usize].name == name
        {
            return Ok(last);
        }
        if let Some(index) = self.model_index.get(name) {
            self.last_model = Some(*index);
            return Ok(*index);
        }
        if self.models.len() >= limits.max_models {
            return Err(Refusal::TooManyModels {
                limit: limits.max_models,
            });
        }
        let index = self.models.len() as u32;
        self.models.push(Model {
            name: name.to_owned(),
            ..Model::default()
        });
        self.series_of_model.push(Vec::new());
        self.model_index.insert(name.to_owned(), index);
        Ok(index)
    }

    fn series(&mut self, model: u32, version: &str) -> u32 {
        // Versions per model are few (and bounded by the limits): a scan.
        let known = &self.series_of_model[model as usize];
        if let Some(index) = known
            .iter()
            .find(|index| self.series[**index as usize].1 == version)
        {
            return *index;
        }
        let index = self.series.len() as u32;
        self.series.push((model, version.to_owned()));
        self.series_of_model[model as usize].push(index);
        index
    }

    fn cell(&mut self, key: CellKey) -> u32 {
        if let Some((last, index)) = self.last_cell
            && last == key
        {
            return index;
        }
        let index = match self.cell_index.get(&key) {
            Some(index) => *index,
            None => {
                let index = self.cells.len() as u32;
                self.cells.push(key);
                self.cell_index.insert(key, index);
                index
            }
        };
        self.last_cell = Some((key, index));
        index
    }

    /// The serial step of a predictions chunk: drops duplicates and refused
    /// events, folds names past the limits (rewriting the events, so that the
    /// aggregation sees the folded names), and records each prediction in
    /// the join map. Returns the events with the cell each one counts in (or
    /// `DROPPED`): the events stay where they are, since moving them into a
    /// vector of the kept ones alone costs a few percent of a report.
    fn commit_predictions(
        &mut self,
        parsed: Parsed<PredictionEvent>,
        counts: &mut FileCounts,
        settings: &Settings,
    ) -> Committed {
        counts.rows += (parsed.events.len() + parsed.problems.len()) as u64;
        counts.rejected += parsed.problems.len() as u64;
        for problem in parsed.problems {
            self.problem(problem);
        }
        let mut events = parsed.events;
        let mut cells = Vec::with_capacity(events.len());
        let hashes: Vec<u64> = events
            .iter()
            .map(|(_, event)| id_hash(&event.prediction_id))
            .collect();
        for (position, ((line, event), hash)) in events.iter_mut().zip(&hashes).enumerate() {
            if position % WARM_BATCH == 0 {
                self.join
                    .warm(&hashes[position..(position + WARM_BATCH).min(hashes.len())]);
            }
            cells.push(self.commit_event(*line, event, *hash, counts, settings));
        }
        Committed { events, cells }
    }

    /// The serial step of one prediction event: its cell, or `DROPPED`.
    fn commit_event(
        &mut self,
        line: u64,
        event: &mut PredictionEvent,
        hash: u64,
        counts: &mut FileCounts,
        settings: &Settings,
    ) -> u32 {
        let Some(position) = self.join.vacant(hash) else {
            counts.duplicates += 1;
            counts.accepted += 1;
            return DROPPED;
        };
        let model_index = match self.check(event, &settings.limits) {
            Ok(index) => index,
            Err(refusal) => {
                self.refused(line, &refusal, counts);
                return DROPPED;
            }
        };
        counts.accepted += 1;
        let model = &mut self.models[model_index as usize];
        model.limits.fold_in_place(event, &settings.limits);
        let predicted = match (&event.status, &event.prediction) {
            (Status::Ok, Some(Prediction::Class(class))) => u64::from(model.classes.intern(class)),
            (Status::Ok, Some(Prediction::Value(value))) => value.to_bits(),
            _ => NONE,
        };
        let segments = if aggregate::labelable(event) || !event.segments.is_empty() {
            model.segment_set(&event.segments)
        } else {
            0
        };
        let series = self.series(model_index, &event.version);
        self.place(
            position,
            hash,
            series,
            event.timestamp_ms,
            (predicted, segments),
            settings,
        )
    }

    /// Records an accepted prediction in the join map, at the position
    /// `JoinMap::vacant` gave, under the cell of its series and time.
    fn place(
        &mut self,
        position: usize,
        hash: u64,
        series: u32,
        timestamp_ms: TimestampMs,
        (predicted, segments): (u64, u32),
        settings: &Settings,
    ) -> u32 {
        let cell = self.cell(CellKey {
            series,
            window_start_ms: settings.align_ms
                + bucket_start(timestamp_ms - settings.align_ms, settings.window_ms),
        });
        self.join.fill(
            position,
            hash,
            Entry {
                predicted,
                actual: NONE,
                cell,
                segments,
                label: UNLABELED,
            },
        );
        cell
    }

    /// Counts and records a prediction the model checks refused.
    fn refused(&mut self, line: u64, refusal: &Refusal, counts: &mut FileCounts) {
        counts.rejected += 1;
        self.problem(RowProblem {
            file: 0,
            line,
            code: "refused",
            message: refusal.to_string(),
            field: Some(refusal.field().to_owned()),
        });
    }

    /// The serial step of a columnar batch: its slow rows as events, its
    /// fast rows from their columns, in row order. A fast row goes through
    /// the steps of [`Catalog::commit_event`], with the folding decisions of
    /// the batch's few distinct names remembered (a name admitted by
    /// `ModelLimits` stays admitted, a folded one stays folded).
    fn commit_columns(
        &mut self,
        batch: &mut ColumnBatch,
        plan: &FastPlan,
        counts: &mut FileCounts,
        settings: &Settings,
    ) -> (FastCommit, Committed) {
        let rows = batch.rows();
        counts.rows += rows as u64;
        counts.rejected += batch.slow.problems.len() as u64;
        for problem in std::mem::take(&mut batch.slow.problems) {
            self.problem(problem);
        }
        let mut slow_events = std::mem::take(&mut batch.slow.events).into_iter();
        let mut slow = Committed {
            events: Vec::new(),
            cells: Vec::new(),
        };
        let mut names = BatchNames::new(batch, plan);
        let mut commit = FastCommit {
            cells: Vec::with_capacity(rows),
            ..FastCommit::default()
        };
        for row in 0..rows {
            if row % WARM_BATCH == 0 {
                self.join.warm(&batch.hashes[row..(row + WARM_BATCH).min(rows)]);
            }
            let cell = match batch.kinds[row] {
                RowKind::Problem => DROPPED,
                RowKind::Slow => {
                    let (line, mut event) = slow_events.next().expect("one event per slow row");
                    let hash = id_hash(&event.prediction_id);
                    let cell = self.commit_event(line, &mut event, hash, counts, settings);
                    slow.events.push((line, event));
                    slow.cells.push(cell);
                    DROPPED
                }
                RowKind::Fast => self.commit_fast(batch, plan, row, &mut names, counts, settings),
            };
            commit.cells.push(cell);
        }
        let (class_names, feature_names) = names.resolved(batch, plan);
        commit.class_names = class_names;
        commit.feature_names = feature_names;
        (commit, slow)
    }

    /// One fast row of [`Catalog::commit_columns`].
    fn commit_fast(
        &mut self,
        batch: &ColumnBatch,
        plan: &FastPlan,
        row: usize,
        names: &mut BatchNames,
        counts: &mut FileCounts,
        settings: &Settings,
    ) -> u32 {
        let hash = batch.hashes[row];
        let Some(position) = self.join.vacant(hash) else {
            counts.duplicates += 1;
            counts.accepted += 1;
            return DROPPED;
        };
        let line = batch.first_line + row as u64;
        let cells = batch.cells();
        let local_model = batch.model[row] as usize;
        let model_name = &batch.models.names[local_model];
        let class = batch.class[row];
        let value = plan.value.and_then(|column| cells[column].number(row));
        let kind = if class != NO_CLASS {
            Some(ModelKind::Classification)
        } else if value.is_some() {
            Some(ModelKind::Regression)
        } else if plan
            .confidence
            .is_some_and(|column| cells[column].is_present(row))
        {
            Some(ModelKind::Classification)
        } else {
            None
        };
        let known = names.models[local_model];
        let model_index = match known
            .map_or_else(|| self.model(model_name, &settings.limits), Ok)
            .and_then(|index| self.check_kind(index, model_name, kind).map(|()| index))
        {
            Ok(index) => index,
            Err(refusal) => {
                self.refused(line, &refusal, counts);
                return DROPPED;
            }
        };
        counts.accepted += 1;
        names.models[local_model] = Some(model_index);
        let limits = &settings.limits;
        let model = &mut self.models[model_index as usize];
        let folding = &mut model.limits.limits;
        let version = batch.version[row] as usize;
        let version_folded = names.fold(
            folding,
            Dimension::Version,
            local_model * names.versions + version,
            &batch.versions.names[version],
            limits.max_versions_per_model,
        );
        let timeout = batch.timeout[row];
        let predicted = if timeout {
            NONE
        } else if class != NO_CLASS {
            let pair = local_model * names.classes + class as usize;
            let folded = names.fold(
                folding,
                Dimension::Class,
                pair,
                &batch.classes.names[class as usize],
                limits.max_classes_per_model,
            );
            let interned = &mut names.interned[pair];
            if interned.is_none() {
                let name = if folded {
                    OTHER
                } else {
                    &batch.classes.names[class as usize]
                };
                *interned = Some(model.classes.intern(name));
            }
            u64::from(interned.expect("interned above"))
        } else {
            value.map_or(NONE, f64::to_bits)
        };
        if !names.features_settled[local_model] {
            names.fold_features(folding, local_model, plan, cells, row, limits);
        }
        let labelable = !timeout && (class != NO_CLASS || value.is_some());
        let segments = if labelable { model.segment_set(&[]) } else { 0 };
        let pair = local_model * names.versions + version;
        let series = match names.series[pair] {
            Some(series) => series,
            None => {
                let name = if version_folded {
                    OTHER
                } else {
                    batch.versions.names[version].as_str()
                };
                let series = self.series(model_index, name);
                names.series[pair] = Some(series);
                series
            }
        };
        self.place(
            position,
            hash,
            series,
            batch.times[row],
            (predicted, segments),
            settings,
        )
    }

    /// The server's checks: the model limit, and the model's kind.
    fn check(&mut self, event: &PredictionEvent, limits: &CardinalityLimits) -> Result<u32, Refusal> {
        let index = self.model(&event.model, limits)?;
        self.check_kind(index, &event.model, ModelKind::of(event))?;
        Ok(index)
    }

    /// A model takes predictions of one kind: the first one's.
    fn check_kind(&mut self, index: u32, name: &str, kind: Option<ModelKind>) -> Result<(), Refusal> {
        let model = &mut self.models[index as usize];
        match (model.kind, kind) {
            (Some(known), Some(this)) if known != this => Err(Refusal::KindMismatch {
                model: name.to_owned(),
                kind: known.as_str(),
                expected: match known {
                    ModelKind::Classification => "a class string",
                    ModelKind::Regression => "a number",
                },
            }),
            (None, Some(this)) => {
                model.kind = Some(this);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// The serial step of a labels chunk: joins each label to its prediction
    /// (or counts it an orphan), a different label for the same id replacing
    /// the one joined before.
    fn commit_labels(&mut self, parsed: Parsed<LabelEvent>, counts: &mut FileCounts, settings: &Settings) {
        counts.rows += (parsed.events.len() + parsed.problems.len()) as u64;
        counts.rejected += parsed.problems.len() as u64;
        for problem in parsed.problems {
            self.problem(problem);
        }
        let mut business: Vec<(u32, f64)> = Vec::new();
        let hashes: Vec<u64> = parsed
            .events
            .iter()
            .map(|(_, label)| id_hash(&label.prediction_id))
            .collect();
        for (position, ((_, label), hash)) in parsed.events.into_iter().zip(&hashes).enumerate() {
            if position % WARM_BATCH == 0 {
                self.join
                    .warm(&hashes[position..(position + WARM_BATCH).min(hashes.len())]);
            }
            self.commit_label(&label, *hash, counts, settings, &mut business);
        }
    }

    /// The serial step of one label event.
    fn commit_label(
        &mut self,
        label: &LabelEvent,
        hash: u64,
        counts: &mut FileCounts,
        settings: &Settings,
        business: &mut Vec<(u32, f64)>,
    ) {
        counts.accepted += 1;
        let Some((index, model_index)) = self.joined(hash) else {
            return;
        };
        let model = &mut self.models[model_index as usize];
        let actual = match model.kind {
            Some(ModelKind::Regression) => label.actual.value().map_or(NONE, f64::to_bits),
            _ => {
                let class = label.actual.class();
                let folded = model.limits.limits.fold_class(&class, &settings.limits, 1);
                u64::from(model.classes.intern(folded))
            }
        };
        business.clear();
        for (name, value) in &label.business {
            let folded = model.limits.limits.fold_business(name, &settings.limits, 0);
            business.push((model.business.intern(folded), *value));
        }
        self.apply_label(index, actual, business, counts);
    }

    /// The model of a cell.
    fn model_of(&self, cell: u32) -> u32 {
        self.series[self.cells[cell as usize].series as usize].0
    }

    /// The join map's entry of a label's prediction and its model; `None`
    /// (counted) for an orphan.
    fn joined(&mut self, hash: u64) -> Option<(u32, u32)> {
        let Some(index) = self.join.find(hash) else {
            self.labels.orphaned += 1;
            return None;
        };
        let cell = self.join.entry(index).cell;
        Some((index, self.model_of(cell)))
    }

    /// Joins a label (its actual encoded as the entry's `predicted` is, its
    /// business values by interned name) to the prediction at `index`.
    fn apply_label(&mut self, index: u32, actual: u64, business: &[(u32, f64)], counts: &mut FileCounts) {
        let entry = self.join.entry(index);
        if entry.label != UNLABELED {
            let same = entry.actual == actual && self.business_of(entry.label) == business;
            if same {
                self.labels.duplicates += 1;
                counts.duplicates += 1;
                return;
            }
            self.labels.corrected += 1;
        } else {
            self.labels.joined += 1;
        }
        let label_state = if business.is_empty() {
            LABELED_WITHOUT_BUSINESS
        } else {
            let start = self.business_values.len() as u32;
            let last = business.len() - 1;
            self.business_values
                .extend(business.iter().enumerate().map(|(position, (name, value))| {
                    let flag = if position == last { LAST_BUSINESS_VALUE } else { 0 };
                    (name | flag, *value)
                }));
            2 + start
        };
        self.join.set_label(index, actual, label_state);
    }

    /// The serial step of a columnar labels batch, in row order: slow rows
    /// as events, fast rows from their columns, with each model's reading of
    /// the batch's distinct actuals remembered (a class admitted stays
    /// admitted; a folded one is folded again, to count it).
    fn commit_label_batch(
        &mut self,
        batch: &mut LabelBatch,
        plan: &LabelPlan,
        counts: &mut FileCounts,
        settings: &Settings,
    ) {
        let rows = batch.rows();
        counts.rows += rows as u64;
        counts.rejected += batch.slow.problems.len() as u64;
        for problem in std::mem::take(&mut batch.slow.problems) {
            self.problem(problem);
        }
        let mut slow_events = std::mem::take(&mut batch.slow.events).into_iter();
        let mut business: Vec<(u32, f64)> = Vec::new();
        let actuals = batch.actuals.names.len();
        // Per (model, actual): the encoded actual, when it is settled.
        let mut settled: Vec<Option<u64>> = vec![None; self.models.len() * actuals];
        // Per (model, business column): the interned name.
        let mut business_names: Vec<Option<u32>> = vec![None; self.models.len() * plan.business.len()];
        let cells = &batch.buffers.cells;
        for row in 0..rows {
            if row % WARM_BATCH == 0 {
                self.join.warm(&batch.hashes[row..(row + WARM_BATCH).min(rows)]);
            }
            match batch.kinds[row] {
                RowKind::Problem => {}
                RowKind::Slow => {
                    let (_, label) = slow_events.next().expect("one event per slow row");
                    let hash = id_hash(&label.prediction_id);
                    self.commit_label(&label, hash, counts, settings, &mut business);
                }
                RowKind::Fast => {
                    counts.accepted += 1;
                    let Some((index, model_index)) = self.joined(batch.hashes[row]) else {
                        continue;
                    };
                    let model = &mut self.models[model_index as usize];
                    let local = batch.actual[row];
                    let pair = (model_index as usize * actuals).wrapping_add(usize::from(local));
                    let actual = match (local != UNLISTED).then(|| settled[pair]).flatten() {
                        Some(actual) => actual,
                        None => {
                            let text = plan.actual(cells, row);
                            let (actual, admitted) = match model.kind {
                                Some(ModelKind::Regression) => {
                                    (Actual::value_of_text(text).map_or(NONE, f64::to_bits), true)
                                }
                                _ => {
                                    let folded = model.limits.limits.fold_class(text, &settings.limits, 1);
                                    let admitted = folded != OTHER || text == OTHER;
                                    (u64::from(model.classes.intern(folded)), admitted)
                                }
                            };
                            if local != UNLISTED && admitted {
                                settled[pair] = Some(actual);
                            }
                            actual
                        }
                    };
                    business.clear();
                    for (position, column) in plan.business.iter().enumerate() {
                        let Some(value) = cells[*column].number(row) else {
                            continue;
                        };
                        let slot = &mut business_names[model_index as usize * plan.business.len() + position];
                        let name = *slot.get_or_insert_with(|| {
                            let name = &plan.business_names[position];
                            let folded = model.limits.limits.fold_business(name, &settings.limits, 0);
                            model.business.intern(folded)
                        });
                        business.push((name, value));
                    }
                    self.apply_label(index, actual, &business, counts);
                }
            }
        }
    }

    /// The labeled entries of the join map's slots `range`: classifications
    /// without business values counted into `confusion`, the slots of the
    /// others (regression, business values) in slot order, and how many
    /// cannot be scored (no prediction, or an actual that does not fit).
    fn scan_labeled(
        &self,
        range: std::ops::Range<usize>,
        mut confusion: Confusion,
    ) -> (Confusion, Vec<u32>, u64) {
        let mut others = Vec::new();
        let mut unscorable = 0;
        for (index, slot) in self.join.slots[range.clone()].iter().enumerate() {
            if slot[0] == 0 {
                continue;
            }
            let entry = self.join.of_slot(slot);
            if entry.label == UNLABELED {
                continue;
            }
            if entry.predicted == NONE || entry.actual == NONE {
                unscorable += 1;
                continue;
            }
            let model_index = self.model_of(entry.cell);
            let model = &self.models[model_index as usize];
            if entry.label == LABELED_WITHOUT_BUSINESS && model.kind != Some(ModelKind::Regression) {
                confusion.add(
                    entry.cell,
                    entry.segments,
                    entry.predicted as u32,
                    entry.actual as u32,
                );
            } else {
                others.push((range.start + index) as u32);
            }
        }
        (confusion, others, unscorable)
    }

    fn business_of(&self, label: u32) -> Vec<(u32, f64)> {
        if label < 2 {
            return Vec::new();
        }
        let mut values = Vec::new();
        for (name, value) in &self.business_values[(label - 2) as usize..] {
            values.push((name & !LAST_BUSINESS_VALUE, *value));
            if name & LAST_BUSINESS_VALUE != 0 {
                break;
            }
        }
        values
    }

    /// The quality of every joined label, per cell and segment set: each
    /// label's outcome added to the quality of its prediction's cell with
    /// `core::quality`, as the server adds it to its prediction's bucket.
    fn quality(&mut self, threads: usize) -> BTreeMap<(u32, u32), Quality> {
        // In key order: the qualities of a cell's segment sets are merged into
        // its bucket one after the other, and float sums depend on the order.
        let mut qualities: BTreeMap<(u32, u32), Quality> = BTreeMap::new();
        // Classifications without business values, counted per (cell,
        // segment set, predicted, actual) and added as confusion counts
        // below: the same confusion matrices as adding each outcome, which
        // looks up both class names in the matrix's maps (millions of
        // labels, on the one thread, after everything else).
        let (cells, segment_sets, classes) = (
            self.cells.len(),
            self.models
                .iter()
                .map(|model| model.segment_values.len())
                .max()
                .unwrap_or(0),
            self.models
                .iter()
                .map(|model| model.classes.names.len())
                .max()
                .unwrap_or(0),
        );
        // The scan of the join map is split between the threads: at 10M
        // predictions it was a tenth of a report's time on one core, after
        // everything else. Each part counts its classifications without
        // business values in its own matrix (counts add exactly) and lists
        // its other labeled entries, which are then added in slot order, as
        // one scan would: their float sums stay the same whatever the number
        // of threads.
        let parts = threads.max(1);
        let part_slots = self.join.slots.len().div_ceil(parts).max(1);
        let scanned: Vec<(Confusion, Vec<u32>, u64)> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..parts)
                .map(|part| {
                    let catalog = &*self;
                    scope.spawn(move || {
                        let start = (part * part_slots).min(catalog.join.slots.len());
                        let end = (start + part_slots).min(catalog.join.slots.len());
                        catalog.scan_labeled(start..end, Confusion::new(cells, segment_sets, classes))
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|handle| handle.join().expect("a quality scan thread"))
                .collect()
        });
        let mut confusion = Confusion::new(cells, segment_sets, classes);
        let mut unscorable = 0;
        for (part_confusion, others, part_unscorable) in scanned {
            confusion.merge(part_confusion);
            unscorable += part_unscorable;
            for index in others {
                let entry = self.join.entry(index);
                let model_index = self.model_of(entry.cell);
                let model = &self.models[model_index as usize];
                let scored = match model.kind {
                    Some(ModelKind::Regression) => Scored::Value {
                        predicted: f64::from_bits(entry.predicted),
                        actual: f64::from_bits(entry.actual),
                    },
                    _ => Scored::Class {
                        predicted: &model.classes.names[entry.predicted as usize],
                        actual: &model.classes.names[entry.actual as usize],
                    },
                };
                let business = self
                    .business_of(entry.label)
                    .into_iter()
                    .map(|(name, value)| (model.business.names[name as usize].as_str(), value))
                    .collect();
                let outcome = Outcome {
                    scored,
                    business,
                    segments: Vec::new(),
                };
                qualities
                    .entry((entry.cell, entry.segments))
                    .or_default()
                    .add(&outcome, Sign::Add);
            }
        }
        for ((cell, segments, predicted, actual), count) in confusion.counts() {
            let model_index = self.model_of(cell);
            let classes = &self.models[model_index as usize].classes.names;
            let counted = Quality {
                labeled: count,
                confusion: BTreeMap::from([(
                    classes[predicted as usize].clone(),
                    BTreeMap::from([(classes[actual as usize].clone(), count)]),
                )]),
                ..Quality::default()
            };
            qualities.entry((cell, segments)).or_default().merge(&counted);
        }
        self.labels.unscorable = unscorable;
        qualities
    }
}

/// Labels counted per (cell, segment set, predicted class, actual class):
/// in a dense table when the four sizes multiply to a few million at most
/// (a report's cells times its classes squared, usually), else in a map.
/// Millions of labels are counted on one thread at the end of a report, and
/// a map entry per label was most of it.
enum Confusion {
    Dense {
        counts: Vec<u64>,
        segment_sets: usize,
        classes: usize,
    },
    Sparse(FxHashMap<(u32, u32, u32, u32), u64>),
}

/// Most entries of a dense [`Confusion`] (32 MB).
const DENSE_CONFUSION: usize = 1 << 22;

impl Confusion {
    fn new(cells: usize, segment_sets: usize, classes: usize) -> Self {
        let segment_sets = segment_sets.max(1);
        match cells
            .checked_mul(segment_sets)
            .and_then(|size| size.checked_mul(classes))
            .and_then(|size| size.checked_mul(classes))
            .filter(|size| *size <= DENSE_CONFUSION)
        {
            Some(size) => Confusion::Dense {
                counts: vec![0; size],
                segment_sets,
                classes,
            },
            None => Confusion::Sparse(FxHashMap::default()),
        }
    }

    fn add(&mut self, cell: u32, segments: u32, predicted: u32, actual: u32) {
        match self {
            Confusion::Dense {
                counts,
                segment_sets,
                classes,
            } => {
                let index = ((cell as usize * *segment_sets + segments as usize) * *classes
                    + predicted as usize)
                    * *classes
                    + actual as usize;
                counts[index] += 1;
            }
            Confusion::Sparse(counts) => *counts.entry((cell, segments, predicted, actual)).or_default() += 1,
        }
    }

    /// Adds `other`'s counts (a matrix of the same sizes).
    fn merge(&mut self, other: Confusion) {
        match (self, other) {
            (Confusion::Dense { counts, .. }, Confusion::Dense { counts: other, .. }) => {
                for (count, added) in counts.iter_mut().zip(other) {
                    *count += added;
                }
            }
            (Confusion::Sparse(counts), Confusion::Sparse(other)) => {
                for (key, added) in other {
                    *counts.entry(key).or_default() += added;
                }
            }
            _ => unreachable!("confusion matrices of one report have the same sizes"),
        }
    }

    /// The non-zero counts.
    fn counts(self) -> Vec<((u32, u32, u32, u32), u64)> {
        match self {
            Confusion::Dense {
                counts,
                segment_sets,
                classes,
            } => counts
                .into_iter()
                .enumerate()
                .filter(|(_, count)| *count > 0)
                .map(|(index, count)| {
                    let actual = index % classes;
                    let predicted = index / classes % classes;
                    let segments = index / classes / classes % segment_sets;
                    let cell = index / classes / classes / segment_sets;
                    (
                        (cell as u32, segments as u32, predicted as u32, actual as u32),
                        count,
                    )
                })
                .collect(),
            Confusion::Sparse(counts) => counts.into_iter().collect(),
        }
    }
}

/// What `ModelLimits` decided for a name: a name it admitted stays
/// admitted, a folded one stays folded (its occurrences still counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fold {
    Unknown,
    Admitted,
    Folded,
}

/// The folding decisions (and interned indices) of a columnar batch's
/// distinct names, per model of the batch: each name goes through
/// `ModelLimits` once, not once per row.
struct BatchNames {
    /// Per model of the batch, its index, once known.
    models: Vec<Option<u32>>,
    /// Strides: the batch's distinct versions and classes.
    versions: usize,
    classes: usize,
    /// Per (model, version) and (model, class) of the batch.
    version_state: Vec<Fold>,
    class_state: Vec<Fold>,
    interned: Vec<Option<u32>>,
    series: Vec<Option<u32>>,
    /// Per model of the batch, per feature of the plan.
    feature_state: Vec<Vec<Fold>>,
    /// Per model: every feature admitted, nothing left to decide.
    features_settled: Vec<bool>,
}

impl BatchNames {
    fn new(batch: &ColumnBatch, plan: &FastPlan) -> Self {
        let models = batch.models.names.len();
        let versions = batch.versions.names.len().max(1);
        let classes = batch.classes.names.len().max(1);
        Self {
            models: vec![None; models],
            versions,
            classes,
            version_state: vec![Fold::Unknown; models * versions],
            class_state: vec![Fold::Unknown; models * classes],
            interned: vec![None; models * classes],
            series: vec![None; models * versions],
            feature_state: vec![vec![Fold::Unknown; plan.features.len()]; models],
            features_settled: vec![plan.features.is_empty(); models],
        }
    }

    /// Folds `name` as `ModelLimits::fold` folds it for an event; true when
    /// it is folded into `__other__`.
    fn fold(
        &mut self,
        folding: &mut ModelLimits,
        dimension: Dimension,
        pair: usize,
        name: &str,
        limit: usize,
    ) -> bool {
        let states = match dimension {
            Dimension::Version => &mut self.version_state,
            _ => &mut self.class_state,
        };
        if states[pair] == Fold::Admitted {
            return false;
        }
        let folded = folding.fold_counted(dimension, name, limit, 1) == OTHER && name != OTHER;
        states[pair] = if folded { Fold::Folded } else { Fold::Admitted };
        folded
    }

    /// Folds the names of the row's present features, in column order.
    fn fold_features(
        &mut self,
        folding: &mut ModelLimits,
        model: usize,
        plan: &FastPlan,
        cells: &[ColumnCells],
        row: usize,
        limits: &CardinalityLimits,
    ) {
        let states = &mut self.feature_state[model];
        for (position, column) in plan.features.iter().enumerate() {
            if states[position] == Fold::Admitted || !cells[*column].is_present(row) {
                continue;
            }
            let name = &plan.feature_names[position];
            let folded = folding.fold_counted(Dimension::Feature, name, limits.max_features_per_model, 1)
                == OTHER
                && name != OTHER;
            states[position] = if folded { Fold::Folded } else { Fold::Admitted };
        }
        self.features_settled[model] = states.iter().all(|state| *state == Fold::Admitted);
    }

    /// The folded class names per (model, class), and feature names per model.
    fn resolved(&self, batch: &ColumnBatch, plan: &FastPlan) -> (Vec<Option<String>>, Vec<Vec<String>>) {
        let classes = self
            .class_state
            .iter()
            .enumerate()
            .map(|(pair, state)| match state {
                Fold::Unknown => None,
                Fold::Admitted => Some(batch.classes.names[pair % self.classes].clone()),
                Fold::Folded => Some(OTHER.to_owned()),
            })
            .collect();
        let features = self
            .feature_state
            .iter()
            .map(|states| {
                states
                    .iter()
                    .zip(&plan.feature_names)
                    .map(|(state, name)| match state {
                        Fold::Folded => OTHER.to_owned(),
                        _ => name.clone(),
                    })
                    .collect()
            })
            .collect();
        (classes, features)
    }
}

/// A model's cardinality limits, and the names they are known to have
/// admitted.
#[derive(Debug, Default)]
struct Folding {
    limits: ModelLimits,
    known: KnownNames,
}

/// Names that a model's `ModelLimits` has admitted (some of them: those seen
/// on predictions that folded nothing). Admission is for good, so folding an
/// event whose names are all known changes nothing, and is skipped:
/// `ModelLimits::fold` hashes every name of every event (SipHash), which is
/// most of the serial step's time over millions of rows.
#[derive(Debug, Default)]
struct KnownNames {
    versions: rustc_hash::FxHashSet<String>,
    classes: rustc_hash::FxHashSet<String>,
    /// The feature names of the last event learnt, in order: the rows of a
    /// file mostly carry the same ones.
    features: Vec<String>,
    /// Per feature, its known categories.
    categories: FxHashMap<String, rustc_hash::FxHashSet<String>>,
}

impl KnownNames {
    fn cover(&self, event: &PredictionEvent) -> bool {
        if !event.segments.is_empty() || aggregate::error_type(event).is_some() {
            return false;
        }
        if !self.versions.contains(event.version.as_str()) {
            return false;
        }
        if let Some(class) = aggregate::predicted_class(event)
            && !self.classes.contains(class)
        {
            return false;
        }
        if event.features.len() != self.features.len()
            || !event
                .features
                .iter()
                .zip(&self.features)
                .all(|((name, _), known)| name == known)
        {
            return false;
        }
        event.features.iter().all(|(name, value)| match value {
            FeatureValue::Category(category) => self
                .categories
                .get(name.as_str())
                .is_some_and(|known| known.contains(category.as_str())),
            FeatureValue::Number(_) | FeatureValue::Missing => true,
        })
    }

    /// Learns the names of an event that was just folded (its names are now
    /// admitted, or `__other__`, which always is).
    fn learn(&mut self, event: &PredictionEvent) {
        if !self.versions.contains(event.version.as_str()) {
            self.versions.insert(event.version.clone());
        }
        if let Some(class) = aggregate::predicted_class(event)
            && !self.classes.contains(class)
        {
            self.classes.insert(class.to_owned());
        }
        if event.features.len() != self.features.len()
            || event
                .features
                .iter()
                .zip(&self.features)
                .any(|((name, _), known)| name != known)
        {
            self.features = event.features.iter().map(|(name, _)| name.clone()).collect();
        }
        for (name, value) in &event.features {
            if let FeatureValue::Category(category) = value {
                self.categories
                    .entry(name.clone())
                    .or_default()
                    .insert(category.clone());
            }
        }
    }
}

impl Folding {
    /// Folds the names of `event` past the limits of its model, in place:
    /// names past a limit become `__other__`, as the server aggregates them.
    fn fold_in_place(&mut self, event: &mut PredictionEvent, cardinality: &CardinalityLimits) {
        if self.known.cover(event) {
            return;
        }
        fold_in_place(&mut self.limits, event, cardinality);
        self.known.learn(event);
    }
}

/// Folds the names of `event` past the limits of its model, in place: names
/// past a limit become `__other__`, as the server aggregates them.
fn fold_in_place(limits: &mut ModelLimits, event: &mut PredictionEvent, cardinality: &CardinalityLimits) {
    let folded = limits.fold(event, cardinality);
    let version_folded = folded.version == OTHER && event.version != OTHER;
    let class_folded = folded.names.predicted_class == Some(OTHER)
        && aggregate::predicted_class(event).is_some_and(|class| class != OTHER);
    let error_folded = folded.names.error_type == Some(OTHER)
        && aggregate::error_type(event).is_some_and(|error| error != OTHER);
    let mut feature_changes: Vec<(usize, bool, bool)> = Vec::new();
    for (index, ((name, value), (original_name, original_value))) in
        folded.features.iter().zip(&event.features).enumerate()
    {
        let name_folded = *name == OTHER && original_name != OTHER;
        let category_folded = matches!(value, FoldedFeature::Category(category) if *category == OTHER)
            && !matches!(original_value, modelwatch_core::event::FeatureValue::Category(category) if category == OTHER);
        if name_folded || category_folded {
            feature_changes.push((index, name_folded, category_folded));
        }
    }
    let segment_changes: Vec<(usize, bool, bool)> = folded
        .segments
        .iter()
        .zip(&event.segments)
        .enumerate()
        .filter_map(|(index, ((key, value), (original_key, original_value)))| {
            let key_folded = *key == OTHER && original_key != OTHER;
            let value_folded = *value == OTHER && original_value != OTHER;
            (key_folded || value_folded).then_some((index, key_folded, value_folded))
        })
        .collect();
    if version_folded {
        event.version = OTHER.to_owned();
    }
    if class_folded {
        event.prediction = Some(Prediction::Class(OTHER.to_owned()));
    }
    if error_folded {
        event.status = Status::Error {
            error_type: OTHER.to_owned(),
        };
    }
    for (index, name_folded, category_folded) in feature_changes {
        let (name, value) = &mut event.features[index];
        if name_folded {
            *name = OTHER.to_owned();
        }
        if category_folded {
            *value = modelwatch_core::event::FeatureValue::Category(OTHER.to_owned());
        }
    }
    for (index, key_folded, value_folded) in segment_changes {
        let (key, value) = &mut event.segments[index];
        if key_folded {
            *key = OTHER.to_owned();
        }
        if value_folded {
            *value = OTHER.to_owned();
        }
    }
}

/// A predictions chunk after the serial step.
enum CommittedBatch {
    Rows(Committed),
    Columns {
        batch: Box<ColumnBatch>,
        plan: Arc<FastPlan>,
        fast: FastCommit,
        /// The batch's rows that took the row path.
        slow: Committed,
    },
}

/// A chunk's prediction events after the serial step, each with the cell it
/// counts in, or `DROPPED` (a duplicate, or refused).
pub struct Committed {
    events: Vec<(u64, PredictionEvent)>,
    cells: Vec<u32>,
}

pub(crate) const DROPPED: u32 = u32::MAX;

/// A worker's aggregates: per cell, the bucket and the drift summary.
#[derive(Default)]
pub struct CellAggregates {
    pub buckets: Vec<Option<Box<(Bucket, DriftSummary)>>>,
}

impl CellAggregates {
    pub(crate) fn slot(&mut self, cell: u32) -> &mut (Bucket, DriftSummary) {
        let cell = cell as usize;
        if self.buckets.len() <= cell {
            self.buckets.resize_with(cell + 1, || None);
        }
        self.buckets[cell].get_or_insert_with(Default::default)
    }

    /// `features` is a buffer the caller keeps from event to event.
    fn observe<'e>(
        &mut self,
        cell: u32,
        event: &'e PredictionEvent,
        with_drift: bool,
        features: &mut Vec<(&'e str, FoldedFeature<'e>)>,
    ) {
        let names = FoldedNames {
            error_type: aggregate::error_type(event),
            predicted_class: aggregate::predicted_class(event),
        };
        features.clear();
        features.extend(
            event
                .features
                .iter()
                .map(|(name, value)| (name.as_str(), aggregate::unfolded_feature(value))),
        );
        let features = features.as_slice();
        let segments: Vec<(&str, &str)> = event
            .segments
            .iter()
            .map(|(key, value)| (key.as_str(), value.as_str()))
            .collect();
        let (bucket, drift) = self.slot(cell);
        bucket.observe(event, names, features, &segments);
        if with_drift {
            observe_drift(drift, event, names.predicted_class, features);
        }
    }

    fn merge(&mut self, other: CellAggregates) {
        for (cell, slot) in other.buckets.into_iter().enumerate() {
            if let Some(theirs) = slot {
                let (bucket, drift) = self.slot(cell as u32);
                bucket.merge(&theirs.0);
                drift.merge(&theirs.1);
            }
        }
    }
}

/// The knobs of an evaluation.
#[derive(Debug, Clone)]
pub struct Settings {
    pub window_ms: i64,
    /// Windows start at `align_ms + k * window_ms`.
    pub align_ms: i64,
    pub limits: CardinalityLimits,
    pub threads: usize,
    /// Whether to keep drift summaries (a reference was given).
    pub drift: bool,
}

/// Reads `files` chunk by chunk: one reader thread, `threads` workers that
/// parse (`parse`), take their turn in file order through `commit` (with the
/// shared state `shared`), and then `aggregate` what the commit gave back
/// into their own state. Returns the workers' states.
#[allow(clippy::too_many_arguments)]
fn pipeline<S, P, C, W>(
    files: &[InputFile],
    readers: &[RowReader],
    threads: usize,
    shared: &Mutex<S>,
    progress: &crate::Progress,
    parse: impl Fn(&RowReader, &Chunk) -> Result<P, ReportError> + Sync,
    commit: impl Fn(&mut S, usize, P) -> C + Sync,
    aggregate: impl Fn(&mut W, C) + Sync,
) -> Result<Vec<W>, ReportError>
where
    S: Send,
    P: Default + Send,
    C: Send,
    W: Default + Send,
{
    // Chunk `i` goes to worker `i % threads`: which chunks a worker adds
    // into its state is then the same from run to run, and so are the
    // merged states (floating-point sums depend on their grouping).
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..threads)
        .map(|_| mpsc::sync_channel::<(usize, Chunk)>(QUEUED_CHUNKS))
        .unzip();
    let turn = (Mutex::new(0usize), Condvar::new());
    let stop = AtomicBool::new(false);
    // The first chunk that could not be decoded (a corrupt Parquet page):
    // the pass stops, and reports it.
    let failure: Mutex<Option<ReportError>> = Mutex::new(None);
    std::thread::scope(|scope| {
        let reader = scope.spawn(|| {
            let mut sequence = 0usize;
            for (index, file) in files.iter().enumerate() {
                let bar = progress.clone();
                let outcome = read_chunks(
                    file,
                    &readers[index],
                    index,
                    move |bytes| bar.advance(bytes),
                    |chunk| {
                        let sent = senders[sequence % senders.len()].send((sequence, chunk)).is_ok();
                        sequence += 1;
                        sent && !stop.load(Ordering::Relaxed)
                    },
                    |_| Ok(()),
                );
                if let Err(error) = outcome {
                    drop(senders);
                    return Err(error);
                }
            }
            drop(senders);
            Ok(())
        });
        let workers: Vec<_> = receivers
            .into_iter()
            .map(|receiver| {
                let (parse, commit, aggregate) = (&parse, &commit, &aggregate);
                let (turn, stop, failure) = (&turn, &stop, &failure);
                scope.spawn(move || {
                    let mut state = W::default();
                    loop {
                        let next = receiver.recv();
                        let Ok((sequence, chunk)) = next else { break };
                        let parsed = if stop.load(Ordering::Relaxed) {
                            P::default()
                        } else {
                            parse(&readers[chunk.file], &chunk).unwrap_or_else(|error| {
                                failure.lock().expect("failure lock").get_or_insert(error);
                                stop.store(true, Ordering::Relaxed);
                                P::default()
                            })
                        };
                        let file = chunk.file;
                        drop(chunk);
                        let committed = {
                            let (next_turn, turn_changed) = &turn;
                            let mut current = next_turn.lock().expect("turn lock");
                            while *current != sequence {
                                current = turn_changed.wait(current).expect("turn lock");
                            }
                            let committed = {
                                let mut shared = shared.lock().expect("catalog lock");
                                commit(&mut shared, file, parsed)
                            };
                            *current += 1;
                            turn_changed.notify_all();
                            committed
                        };
                        aggregate(&mut state, committed);
                    }
                    state
                })
            })
            .collect();
        let states: Vec<W> = workers
            .into_iter()
            .map(|worker| worker.join().expect("a report worker panicked"))
            .collect();
        stop.store(true, Ordering::Relaxed);
        reader.join().expect("the report reader panicked")?;
        if let Some(error) = failure.lock().expect("failure lock").take() {
            return Err(error);
        }
        Ok(states)
    })
}

/// The outcome of an evaluation, before it is turned into figures.
pub struct Evaluation {
    pub catalog: Catalog,
    pub cells: CellAggregates,
    pub prediction_files: Vec<FileCounts>,
    pub label_files: Vec<FileCounts>,
}

/// Reads every predictions file, then every labels file, in order.
pub fn evaluate(
    predictions: (&[InputFile], &[RowReader]),
    labels: (&[InputFile], &[RowReader]),
    settings: &Settings,
    progress: &crate::Progress,
) -> Result<Evaluation, ReportError> {
    // The number of predictions is known for Parquet files: the join map's
    // table is sized once instead of growing (and rehashing) all along.
    let known_predictions: u64 = predictions
        .1
        .iter()
        .filter_map(|reader| reader.parquet.as_ref())
        .map(|layout| layout.rows())
        .sum();
    let catalog = Mutex::new((
        Catalog {
            join: JoinMap::touched(known_predictions as usize, settings.threads),
            ..Catalog::default()
        },
        vec![FileCounts::default(); predictions.0.len()],
        vec![FileCounts::default(); labels.0.len()],
    ));
    let with_drift = settings.drift;
    let states: Vec<CellAggregates> = pipeline(
        predictions.0,
        predictions.1,
        settings.threads,
        &catalog,
        progress,
        |reader, chunk| reader.parse_prediction_batch(chunk),
        |(catalog, counts, _), file, parsed| {
            let before = catalog.problems.len();
            let committed = match parsed {
                Batch::Rows(parsed) => {
                    CommittedBatch::Rows(catalog.commit_predictions(parsed, &mut counts[file], settings))
                }
                Batch::Columns(mut batch) => {
                    let plan = Arc::clone(
                        predictions.1[file]
                            .fast
                            .as_ref()
                            .expect("a columnar batch comes from a file with a plan"),
                    );
                    let (fast, slow) = catalog.commit_columns(&mut batch, &plan, &mut counts[file], settings);
                    CommittedBatch::Columns {
                        batch,
                        plan,
                        fast,
                        slow,
                    }
                }
            };
            catalog.problems[before..]
                .iter_mut()
                .for_each(|problem| problem.file = file);
            committed
        },
        |state: &mut CellAggregates, committed: CommittedBatch| {
            let mut features = Vec::new();
            let rows = match &committed {
                CommittedBatch::Rows(rows) => rows,
                CommittedBatch::Columns { slow, .. } => slow,
            };
            for ((_, event), cell) in rows.events.iter().zip(&rows.cells) {
                if *cell != DROPPED {
                    state.observe(*cell, event, with_drift, &mut features);
                }
            }
            if let CommittedBatch::Columns {
                batch, plan, fast, ..
            } = committed
            {
                columnar::aggregate(&plan, &batch, &fast, with_drift, state);
                crate::parquet_input::give_back(batch.buffers);
            }
        },
    )?;
    let mut cells = CellAggregates::default();
    for state in states {
        cells.merge(state);
    }
    let label_files_offset = predictions.0.len();
    pipeline(
        labels.0,
        labels.1,
        settings.threads,
        &catalog,
        progress,
        |reader, chunk| reader.parse_label_batch(chunk),
        |(catalog, _, counts), file, parsed| {
            let before = catalog.problems.len();
            let buffers = match parsed {
                Batch::Rows(parsed) => {
                    catalog.commit_labels(parsed, &mut counts[file], settings);
                    None
                }
                Batch::Columns(mut batch) => {
                    let plan = labels.1[file]
                        .fast_labels
                        .as_ref()
                        .expect("a columnar batch comes from a file with a plan");
                    catalog.commit_label_batch(&mut batch, plan, &mut counts[file], settings);
                    Some(batch.buffers)
                }
            };
            catalog.problems[before..]
                .iter_mut()
                .for_each(|problem| problem.file = label_files_offset + file);
            buffers
        },
        |_: &mut (), buffers| {
            if let Some(buffers) = buffers {
                crate::parquet_input::give_back(buffers);
            }
        },
    )?;
    let (mut catalog, mut prediction_files, mut label_files) = catalog.into_inner().expect("catalog lock");
    for (counts, file) in prediction_files.iter_mut().zip(predictions.0) {
        counts.path = file.display();
        counts.format = file.format.as_str();
    }
    for (counts, file) in label_files.iter_mut().zip(labels.0) {
        counts.path = file.display();
        counts.format = file.format.as_str();
    }
    let qualities = catalog.quality(settings.threads);
    for ((cell, segment_set), quality) in qualities {
        let series = catalog.cells[cell as usize].series;
        let model = &catalog.models[catalog.series[series as usize].0 as usize];
        let (bucket, _) = cells.slot(cell);
        add_quality(
            &mut bucket.quality,
            &quality,
            &model.segment_values[segment_set as usize],
        );
    }
    Ok(Evaluation {
        catalog,
        cells,
        prediction_files,
        label_files,
    })
}

/// Adds the quality of labeled predictions sharing one segment set to a
/// bucket: overall, and under each of their segment values.
fn add_quality(bucket: &mut QualityBucket, quality: &Quality, segments: &[(String, String)]) {
    bucket.all.merge(quality);
    for (key, value) in segments {
        bucket
            .segments
            .entry(key.clone())
            .or_default()
            .entry(value.clone())
            .or_default()
            .merge(quality);
    }
}

/// What a reference pass gives: per model its summary, the files' counts,
/// the listed problems and how many there were.
pub type References = (
    BTreeMap<String, DriftSummary>,
    Vec<FileCounts>,
    Vec<RowProblem>,
    u64,
);

/// The drift summary of every model in a reference file: its events folded
/// and summarized as the server summarizes the hours of a frozen baseline.
pub fn reference_summaries(
    files: &[InputFile],
    readers: &[RowReader],
    settings: &Settings,
    progress: &crate::Progress,
) -> Result<References, ReportError> {
    #[derive(Default)]
    struct Reference {
        models: HashMap<String, Folding>,
        counts: Vec<FileCounts>,
        problems: Vec<RowProblem>,
        problem_count: u64,
    }
    let shared = Mutex::new(Reference {
        counts: vec![FileCounts::default(); files.len()],
        ..Reference::default()
    });
    let states: Vec<BTreeMap<String, DriftSummary>> = pipeline(
        files,
        readers,
        settings.threads,
        &shared,
        progress,
        |reader, chunk| reader.parse_predictions(chunk),
        |reference: &mut Reference, file, parsed| {
            let counts = &mut reference.counts[file];
            counts.rows += (parsed.events.len() + parsed.problems.len()) as u64;
            counts.rejected += parsed.problems.len() as u64;
            counts.accepted += parsed.events.len() as u64;
            reference.problem_count += parsed.problems.len() as u64;
            for problem in parsed.problems {
                if reference.problems.len() < KEPT_PROBLEMS {
                    reference.problems.push(problem);
                }
            }
            let mut events = parsed.events;
            for (_, event) in &mut events {
                let limits = match reference.models.get_mut(&event.model) {
                    Some(limits) => limits,
                    None => reference.models.entry(event.model.clone()).or_default(),
                };
                limits.fold_in_place(event, &settings.limits);
            }
            events
        },
        |summaries: &mut BTreeMap<String, DriftSummary>, events: Vec<(u64, PredictionEvent)>| {
            for (_, event) in &events {
                let names = FoldedNames {
                    error_type: aggregate::error_type(event),
                    predicted_class: aggregate::predicted_class(event),
                };
                let features: Vec<(&str, FoldedFeature<'_>)> = event
                    .features
                    .iter()
                    .map(|(name, value)| (name.as_str(), aggregate::unfolded_feature(value)))
                    .collect();
                let summary = match summaries.get_mut(&event.model) {
                    Some(summary) => summary,
                    None => summaries.entry(event.model.clone()).or_default(),
                };
                observe_drift(summary, event, names.predicted_class, &features);
            }
        },
    )?;
    let mut merged: BTreeMap<String, DriftSummary> = BTreeMap::new();
    for state in states {
        for (model, summary) in state {
            merged.entry(model).or_default().merge(&summary);
        }
    }
    let reference = shared.into_inner().expect("reference lock");
    let mut counts = reference.counts;
    for (count, file) in counts.iter_mut().zip(files) {
        count.path = file.display();
        count.format = file.format.as_str();
    }
    Ok((merged, counts, reference.problems, reference.problem_count))
}

#[cfg(test)]
mod tests {
    use modelwatch_core::event::{FeatureValue, Prediction, PredictionEvent, Status};
    use proptest::prelude::*;

    use super::*;

    fn event(version: u8, class: u8, features: &[(u8, Option<u8>)], error: bool) -> PredictionEvent {
        PredictionEvent {
            prediction_id: String::new(),
            model: "m".to_owned(),
            version: format!("v{version}"),
            timestamp_ms: 0,
            latency_seconds: None,
            status: if error {
                Status::Error {
                    error_type: format!("E{class}"),
                }
            } else {
                Status::Ok
            },
            prediction: Some(Prediction::Class(format!("c{class}"))),
            confidence: None,
            probabilities: Vec::new(),
            features: features
                .iter()
                .map(|(name, category)| {
                    let value = match category {
                        Some(category) => FeatureValue::Category(format!("k{category}")),
                        None => FeatureValue::Number(1.0),
                    };
                    (format!("f{name}"), value)
                })
                .collect(),
            segments: Vec::new(),
        }
    }

    proptest! {
        /// Skipping the folding of events whose names are all known gives
        /// the same events, and the same folded counts, as folding each one.
        #[test]
        fn known_names_fold_as_model_limits(
            events in prop::collection::vec(
                (0..4u8, 0..4u8, prop::collection::vec((0..4u8, prop::option::of(0..4u8)), 0..4), any::<bool>()),
                1..60,
            ),
        ) {
            let cardinality = CardinalityLimits {
                max_versions_per_model: 2,
                max_classes_per_model: 2,
                max_error_types_per_model: 1,
                max_features_per_model: 2,
                max_categories_per_feature: 2,
                ..CardinalityLimits::default()
            };
            let mut plain = ModelLimits::default();
            let mut folding = Folding::default();
            for (version, class, features, error) in &events {
                let mut expected = event(*version, *class, features, *error);
                let mut got = expected.clone();
                fold_in_place(&mut plain, &mut expected, &cardinality);
                folding.fold_in_place(&mut got, &cardinality);
                prop_assert_eq!(&got, &expected);
            }
            prop_assert_eq!(&folding.limits.folded, &plain.folded);
        }
    }

    /// A class index for even cells, a regression output's bits (wide) for
    /// odd ones.
    fn predicted(cell: u32) -> u64 {
        if cell.is_multiple_of(2) {
            u64::from(cell) * 3
        } else {
            (f64::from(cell) + 0.5).to_bits()
        }
    }

    /// Segment sets past what a packed slot holds for one cell in 50.
    fn segments_of(cell: u32) -> u32 {
        if cell.is_multiple_of(50) {
            64 + cell
        } else {
            cell % 64
        }
    }

    /// A label with business values (2 + their start) for one cell in 6.
    fn label_of(cell: u32) -> u32 {
        if cell.is_multiple_of(2) {
            2 + cell
        } else {
            LABELED_WITHOUT_BUSINESS
        }
    }

    fn entry(cell: u32) -> Entry {
        Entry {
            predicted: predicted(cell),
            actual: NONE,
            cell,
            segments: segments_of(cell),
            label: UNLABELED,
        }
    }

    /// Every field at the edge of what a packed slot holds, and one past it
    /// (a wide entry), reads back as it was written, before and after its
    /// label.
    #[test]
    fn entries_at_the_edges_of_a_packed_slot_read_back_whole() {
        let cells = [0, (1 << Packed::CELL_BITS) - 1, 1 << Packed::CELL_BITS, u32::MAX];
        let segment_sets = [0, (1 << Packed::SEGMENT_BITS) - 1, 1 << Packed::SEGMENT_BITS];
        let classes = [0, Packed::CLASS_NONE - 1, Packed::CLASS_NONE, NONE - 1, NONE];
        let labels = [LABELED_WITHOUT_BUSINESS, 2, u32::MAX];
        let mut entries = Vec::new();
        for cell in cells {
            for segments in segment_sets {
                for predicted in classes {
                    entries.push(Entry {
                        predicted,
                        actual: NONE,
                        cell,
                        segments,
                        label: UNLABELED,
                    });
                }
            }
        }
        let mut map = JoinMap::with_capacity(0);
        for (position, entry) in entries.iter().enumerate() {
            map.insert(position as u64 + 1, *entry);
        }
        let same = |found: Entry, wanted: &Entry| {
            (
                found.predicted,
                found.actual,
                found.cell,
                found.segments,
                found.label,
            ) == (
                wanted.predicted,
                wanted.actual,
                wanted.cell,
                wanted.segments,
                wanted.label,
            )
        };
        for (position, entry) in entries.iter_mut().enumerate() {
            let index = map.find(position as u64 + 1).expect("inserted");
            assert!(same(map.entry(index), entry), "{entry:?} before its label");
            entry.actual = classes[position % classes.len()];
            entry.label = labels[position % labels.len()];
            map.set_label(index, entry.actual, entry.label);
        }
        for (position, entry) in entries.iter().enumerate() {
            let index = map.find(position as u64 + 1).expect("inserted");
            assert!(same(map.entry(index), entry), "{entry:?} after its label");
        }
    }

    proptest! {
        /// The join map holds what a `HashMap` of the same hashes holds,
        /// through its growths, whatever the hashes (clustered in one home
        /// slot or spread).
        #[test]
        fn the_join_map_finds_what_a_hash_map_finds(
            hashes in proptest::collection::vec(prop_oneof![1u64..64, any::<u64>().prop_map(|hash| hash.max(1))], 0..3000),
            capacity in 0usize..100,
        ) {
            let mut map = JoinMap::with_capacity(capacity);
            let mut wanted: HashMap<u64, u32> = HashMap::new();
            for (cell, hash) in hashes.iter().enumerate() {
                if map.find(*hash).is_none() {
                    prop_assert!(!wanted.contains_key(hash));
                    map.insert(*hash, entry(cell as u32));
                    wanted.insert(*hash, cell as u32);
                } else {
                    prop_assert!(wanted.contains_key(hash));
                }
            }
            // Labels on a third of them, narrow and wide actuals, some with
            // business values (which do not fit in a packed slot), some
            // corrected.
            for (hash, cell) in &wanted {
                if cell.is_multiple_of(3) {
                    let index = map.find(*hash).expect("an inserted hash is found");
                    map.set_label(index, predicted(cell + 2), 2 + cell);
                    map.set_label(index, predicted(cell + 1), label_of(*cell));
                }
            }
            for (hash, cell) in &wanted {
                let index = map.find(*hash).expect("an inserted hash is found");
                let entry = map.entry(index);
                prop_assert_eq!(entry.cell, *cell);
                prop_assert_eq!(entry.predicted, predicted(*cell));
                prop_assert_eq!(entry.segments, segments_of(*cell));
                if cell.is_multiple_of(3) {
                    prop_assert_eq!(entry.actual, predicted(cell + 1));
                    prop_assert_eq!(entry.label, label_of(*cell));
                } else {
                    prop_assert_eq!(entry.actual, NONE);
                    prop_assert_eq!(entry.label, UNLABELED);
                }
            }
            prop_assert!(map.find(u64::MAX - 1).is_none() || wanted.contains_key(&(u64::MAX - 1)));
            let mut cells: Vec<u32> = map.iter().map(|entry| entry.cell).collect();
            cells.sort_unstable();
            let mut expected: Vec<u32> = wanted.values().copied().collect();
            expected.sort_unstable();
            prop_assert_eq!(cells, expected);
        }
    }
}
