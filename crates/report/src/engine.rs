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
use std::sync::{Condvar, Mutex};

use hashbrown::HashTable;
use modelwatch_core::aggregate::{self, Bucket, FoldedFeature, FoldedNames};
use modelwatch_core::drift::DriftSummary;
use modelwatch_core::event::{FeatureValue, LabelEvent, Prediction, PredictionEvent, Status};
use modelwatch_core::limits::{CardinalityLimits, ModelLimits, OTHER};
use modelwatch_core::quality::{Outcome, Quality, QualityBucket, Scored, Sign};
use modelwatch_core::series::{ModelKind, Refusal, observe_drift};
use modelwatch_core::time::bucket_start;
use rustc_hash::FxHashMap;

use crate::ReportError;
use crate::input::{Chunk, InputFile, Parsed, RowProblem, RowReader, read_chunks};

/// How many parsed chunks wait for their turn at most, per worker.
const QUEUED_CHUNKS: usize = 2;

/// The id hash: fixed seeds, so that a run is reproducible.
fn id_hash(id: &str) -> u64 {
    foldhash::quality::FixedState::with_seed(0x6d6f_6465_6c77_6174).hash_one(id)
}

/// "Nothing": no prediction to score, or no actual that fits.
const NONE: u64 = u64::MAX;
const UNLABELED: u32 = 0;
const LABELED_WITHOUT_BUSINESS: u32 = 1;

/// One prediction in the join map (its id's hash is in the table).
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

const ENTRY_CHUNK_BITS: u32 = 16;

/// Prediction entries, in chunks (no copy of the whole when it grows), and a
/// hash table of their ids' hashes and indices. The hash is in the table, so
/// that a lookup reads one slot of the table, not also an entry elsewhere in
/// memory: with millions of predictions, each of those reads is a cache miss.
#[derive(Default)]
struct JoinMap {
    table: HashTable<(u64, u32)>,
    chunks: Vec<Vec<Entry>>,
    len: u32,
}

impl JoinMap {
    fn entry(&self, index: u32) -> &Entry {
        &self.chunks[(index >> ENTRY_CHUNK_BITS) as usize][(index & ((1 << ENTRY_CHUNK_BITS) - 1)) as usize]
    }

    fn entry_mut(&mut self, index: u32) -> &mut Entry {
        &mut self.chunks[(index >> ENTRY_CHUNK_BITS) as usize]
            [(index & ((1 << ENTRY_CHUNK_BITS) - 1)) as usize]
    }

    fn with_capacity(predictions: usize) -> Self {
        Self {
            table: HashTable::with_capacity(predictions),
            ..Self::default()
        }
    }

    fn find(&self, hash: u64) -> Option<u32> {
        self.table
            .find(hash, |(slot_hash, _)| *slot_hash == hash)
            .map(|(_, index)| *index)
    }

    fn insert(&mut self, hash: u64, entry: Entry) {
        let index = self.len;
        if self
            .chunks
            .last()
            .is_none_or(|chunk| chunk.len() == 1 << ENTRY_CHUNK_BITS)
        {
            self.chunks.push(Vec::with_capacity(1 << ENTRY_CHUNK_BITS));
        }
        self.chunks
            .last_mut()
            .expect("a chunk was just ensured")
            .push(entry);
        self.len += 1;
        self.table
            .insert_unique(hash, (hash, index), |(slot_hash, _)| *slot_hash);
    }

    fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.chunks.iter().flatten()
    }

    /// Looks up `hashes` (and reads their entries, with `entries`) without
    /// using the answers: with millions of predictions each lookup is a
    /// cache miss or two, and lookups done back to back, independent of each
    /// other, overlap their misses, where the commit's own lookups, each
    /// followed by its work, would wait for them one by one. The commit
    /// then finds the same slots in the cache.
    fn warm(&self, hashes: &[u64], entries: bool) {
        let mut touched = 0u64;
        for hash in hashes {
            if let Some(index) = self.find(*hash) {
                touched ^= if entries {
                    self.entry(index).predicted
                } else {
                    u64::from(index)
                };
            }
        }
        std::hint::black_box(touched);
    }
}

/// How many lookups are warmed at once ([`JoinMap::warm`]): enough to keep
/// several misses in flight, few enough that their lines stay in the cache
/// until the commit reads them.
const WARM_BATCH: usize = 32;

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
                self.join.warm(
                    &hashes[position..(position + WARM_BATCH).min(hashes.len())],
                    false,
                );
            }
            let hash = *hash;
            if self.join.find(hash).is_some() {
                counts.duplicates += 1;
                counts.accepted += 1;
                cells.push(DROPPED);
                continue;
            }
            let model_index = match self.check(event, &settings.limits) {
                Ok(index) => index,
                Err(refusal) => {
                    counts.rejected += 1;
                    cells.push(DROPPED);
                    self.problem(RowProblem {
                        file: 0,
                        line: *line,
                        code: "refused",
                        message: refusal.to_string(),
                        field: Some(refusal.field().to_owned()),
                    });
                    continue;
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
            let cell = self.cell(CellKey {
                series,
                window_start_ms: settings.align_ms
                    + bucket_start(event.timestamp_ms - settings.align_ms, settings.window_ms),
            });
            self.join.insert(
                hash,
                Entry {
                    predicted,
                    actual: NONE,
                    cell,
                    segments,
                    label: UNLABELED,
                },
            );
            cells.push(cell);
        }
        Committed { events, cells }
    }

    /// The server's checks: the model limit, and the model's kind.
    fn check(&mut self, event: &PredictionEvent, limits: &CardinalityLimits) -> Result<u32, Refusal> {
        let index = self.model(&event.model, limits)?;
        let model = &mut self.models[index as usize];
        match (model.kind, ModelKind::of(event)) {
            (Some(known), Some(this)) if known != this => Err(Refusal::KindMismatch {
                model: event.model.clone(),
                kind: known.as_str(),
                expected: match known {
                    ModelKind::Classification => "a class string",
                    ModelKind::Regression => "a number",
                },
            }),
            (None, Some(this)) => {
                model.kind = Some(this);
                Ok(index)
            }
            _ => Ok(index),
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
                    .warm(&hashes[position..(position + WARM_BATCH).min(hashes.len())], true);
            }
            counts.accepted += 1;
            let Some(index) = self.join.find(*hash) else {
                self.labels.orphaned += 1;
                continue;
            };
            let entry = *self.join.entry(index);
            let model_index = self.series[self.cells[entry.cell as usize].series as usize].0;
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
            if entry.label != UNLABELED {
                let same = entry.actual == actual && self.business_of(entry.label) == business;
                if same {
                    self.labels.duplicates += 1;
                    counts.duplicates += 1;
                    continue;
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
            let stored = self.join.entry_mut(index);
            stored.actual = actual;
            stored.label = label_state;
        }
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
    fn quality(&mut self) -> HashMap<(u32, u32), Quality> {
        let mut qualities: HashMap<(u32, u32), Quality> = HashMap::new();
        let mut unscorable = 0;
        for entry in self.join.iter() {
            if entry.label == UNLABELED {
                continue;
            }
            if entry.predicted == NONE || entry.actual == NONE {
                unscorable += 1;
                continue;
            }
            let model_index = self.series[self.cells[entry.cell as usize].series as usize].0;
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
        self.labels.unscorable = unscorable;
        qualities
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

/// A chunk's prediction events after the serial step, each with the cell it
/// counts in, or `DROPPED` (a duplicate, or refused).
pub struct Committed {
    events: Vec<(u64, PredictionEvent)>,
    cells: Vec<u32>,
}

const DROPPED: u32 = u32::MAX;

/// A worker's aggregates: per cell, the bucket and the drift summary.
#[derive(Default)]
pub struct CellAggregates {
    pub buckets: Vec<Option<Box<(Bucket, DriftSummary)>>>,
}

impl CellAggregates {
    fn slot(&mut self, cell: u32) -> &mut (Bucket, DriftSummary) {
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
    let (sender, receiver) = mpsc::sync_channel::<(usize, Chunk)>(threads * QUEUED_CHUNKS);
    let receiver = Mutex::new(receiver);
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
                        let sent = sender.send((sequence, chunk)).is_ok();
                        sequence += 1;
                        sent && !stop.load(Ordering::Relaxed)
                    },
                    |_| Ok(()),
                );
                if let Err(error) = outcome {
                    drop(sender);
                    return Err(error);
                }
            }
            drop(sender);
            Ok(())
        });
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut state = W::default();
                    loop {
                        let next = receiver.lock().expect("chunk queue lock").recv();
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
            join: JoinMap::with_capacity(known_predictions as usize),
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
        |reader, chunk| reader.parse_predictions(chunk),
        |(catalog, counts, _), file, parsed| {
            let mut parsed = parsed;
            parsed.problems.iter_mut().for_each(|problem| problem.file = file);
            let before = catalog.problems.len();
            let kept = catalog.commit_predictions(parsed, &mut counts[file], settings);
            catalog.problems[before..]
                .iter_mut()
                .for_each(|problem| problem.file = file);
            kept
        },
        |state: &mut CellAggregates, committed: Committed| {
            let mut features = Vec::new();
            for ((_, event), cell) in committed.events.iter().zip(&committed.cells) {
                if *cell != DROPPED {
                    state.observe(*cell, event, with_drift, &mut features);
                }
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
        |reader, chunk| reader.parse_labels(chunk),
        |(catalog, _, counts), file, parsed| {
            let before = catalog.problems.len();
            catalog.commit_labels(parsed, &mut counts[file], settings);
            catalog.problems[before..]
                .iter_mut()
                .for_each(|problem| problem.file = label_files_offset + file);
        },
        |_: &mut (), ()| {},
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
    let qualities = catalog.quality();
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
}
