//! The columnar path of Parquet predictions: a slice's columns checked a
//! column at a time with the wire's own rules (`core::wire::accept`),
//! committed row by row through the serial step without building an event,
//! and aggregated a column at a time into the cells' buckets.
//!
//! A file takes this path when its columns have a shape it covers
//! ([`FastPlan::of`]): the scalar fields, a class or a regression output,
//! numeric features; no probabilities, no segments. Within such a file, a row
//! that any test does not pass (a null id, a NaN, a status `error`, a text
//! timestamp, too many distinct names in one slice...) goes through
//! `core::wire::typed` as every Parquet row used to, which accepts it as an
//! event or names its error, and that event goes through the row path. So
//! the outcome is the row path's: the same rows accepted, refused, folded
//! and counted, with the same errors.

use modelwatch_core::aggregate::TIMEOUT_ERROR_TYPE;
use modelwatch_core::drift::DriftValue;
use modelwatch_core::event::{LabelEvent, PredictionEvent, TimestampMs, UNVERSIONED};
use modelwatch_core::stats::{CONFIDENCE_BUCKETS, LATENCY_BUCKETS, Moments, SLO_LATENCY_BUCKETS};
use modelwatch_core::wire::ParseLimits;
use modelwatch_core::wire::accept;

use crate::engine::{CellAggregates, DROPPED};
use crate::input::{Columns, Parsed, Role};
use crate::parquet_input::{Buffers, CellKind, ColumnCells};

/// Which columns fill which field, for a file the columnar path covers.
#[derive(Debug, Clone)]
pub struct FastPlan {
    id: usize,
    model: Option<usize>,
    version: Option<usize>,
    timestamp: Option<usize>,
    latency: Option<usize>,
    status: Option<usize>,
    error_type: Option<usize>,
    class: Option<usize>,
    pub(crate) value: Option<usize>,
    pub(crate) confidence: Option<usize>,
    /// Feature columns, in file order (the order of the wire object's keys).
    pub features: Vec<usize>,
    pub feature_names: Vec<String>,
}

impl FastPlan {
    /// The plan of a predictions file, or `None` when a column has a role
    /// the columnar path does not cover, or the feature names would not pass
    /// the wire's key checks (every row then takes the row path).
    pub fn of(columns: &Columns, limits: &ParseLimits) -> Option<Self> {
        let mut plan = FastPlan {
            id: usize::MAX,
            model: None,
            version: None,
            timestamp: None,
            latency: None,
            status: None,
            error_type: None,
            class: None,
            value: None,
            confidence: None,
            features: Vec::new(),
            feature_names: Vec::new(),
        };
        for (index, role) in columns.roles.iter().enumerate() {
            match role {
                Role::Text("prediction_id") => plan.id = index,
                Role::Text("model") => plan.model = Some(index),
                Role::Text("version") => plan.version = Some(index),
                Role::Text("status") => plan.status = Some(index),
                Role::Text("error_type") => plan.error_type = Some(index),
                Role::Number("latency_seconds") => plan.latency = Some(index),
                Role::Number("confidence") => plan.confidence = Some(index),
                Role::Timestamp => plan.timestamp = Some(index),
                Role::PredictedClass => plan.class = Some(index),
                Role::PredictedValue => plan.value = Some(index),
                Role::Feature(name) => {
                    plan.features.push(index);
                    plan.feature_names.push(name.clone());
                }
                _ => return None,
            }
        }
        let names_pass = accept::entry_names(
            plan.feature_names.iter().map(String::as_str),
            limits.max_features,
            limits,
        );
        (plan.id != usize::MAX && names_pass).then_some(plan)
    }

    /// Whether the decoded columns have the kinds the tests read (a numeric
    /// role decoded as numbers, say); a slice whose columns do not takes the
    /// row path, which names each row's type error.
    fn kinds_fit(&self, cells: &[ColumnCells]) -> bool {
        let is =
            |column: Option<usize>, kind: CellKind| column.is_none_or(|column| cells[column].kind == kind);
        is(Some(self.id), CellKind::Text)
            && is(self.model, CellKind::Text)
            && is(self.version, CellKind::Text)
            && is(self.status, CellKind::Text)
            && is(self.error_type, CellKind::Text)
            && is(self.class, CellKind::Text)
            && is(self.value, CellKind::Numbers)
            && is(self.latency, CellKind::Numbers)
            && is(self.confidence, CellKind::Numbers)
            && is(self.timestamp, CellKind::Numbers)
            && self
                .features
                .iter()
                .all(|column| cells[*column].kind == CellKind::Numbers)
    }
}

/// How a row of a batch is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowKind {
    /// Every test passed: the columns hold it.
    Fast,
    /// Read by `core::wire::typed`: the next event of `slow.events`.
    Slow,
    /// Refused by `core::wire::typed`: one of `slow.problems`.
    Problem,
}

/// Distinct names within one slice, each row pointing at its name.
#[derive(Debug, Default)]
pub struct Names {
    pub names: Vec<String>,
    last: Option<u16>,
}

/// Beyond this many distinct values of one field in one slice, rows take the
/// row path (the slice-local tables are scanned).
const MAX_NAMES: usize = 64;

impl Names {
    /// The index of `name`, added when it is new and passes `accepted`;
    /// `None` when it does not, or the table is full.
    fn index(&mut self, name: &str, accepted: impl FnOnce(&str) -> bool) -> Option<u16> {
        if let Some(index) = self.last
            && self.names[index as usize] == name
        {
            return Some(index);
        }
        let index = match self.names.iter().position(|known| known == name) {
            Some(index) => index,
            None if self.names.len() < MAX_NAMES && accepted(name) => {
                self.names.push(name.to_owned());
                self.names.len() - 1
            }
            None => return None,
        };
        self.last = Some(index as u16);
        Some(index as u16)
    }
}

/// `class` of a row without a predicted class.
pub const NO_CLASS: u16 = u16::MAX;

/// A slice of a predictions file, tested column by column.
#[derive(Debug, Default)]
pub struct ColumnBatch {
    /// The decoded columns (the worker's buffers, which go back to it once
    /// the batch is aggregated).
    pub buffers: Buffers,
    pub first_line: u64,
    pub kinds: Vec<RowKind>,
    /// The rows that took the row path.
    pub slow: Parsed<PredictionEvent>,
    /// Per row: the id's hash, the event time, the model, version and class
    /// (indices into the names below), and whether it timed out. Only fast
    /// rows' values mean anything.
    pub hashes: Vec<u64>,
    pub times: Vec<TimestampMs>,
    pub model: Vec<u16>,
    pub version: Vec<u16>,
    pub class: Vec<u16>,
    pub timeout: Vec<bool>,
    pub models: Names,
    pub versions: Names,
    pub classes: Names,
}

impl ColumnBatch {
    pub fn rows(&self) -> usize {
        self.kinds.len()
    }

    pub fn cells(&self) -> &[ColumnCells] {
        &self.buffers.cells
    }
}

/// Tests every row of the decoded `buffers` (`rows` of them), a column at a
/// time. Rows that do not pass are read by `slow_row` (the typed row path),
/// in row order.
#[allow(clippy::too_many_arguments)]
pub fn test_rows(
    plan: &FastPlan,
    buffers: Buffers,
    rows: usize,
    first_line: u64,
    default_model: Option<&str>,
    now_ms: TimestampMs,
    limits: &ParseLimits,
    mut slow_row: impl FnMut(&[ColumnCells], usize, &mut Parsed<PredictionEvent>) -> RowKind,
) -> ColumnBatch {
    let mut batch = ColumnBatch {
        buffers,
        first_line,
        ..ColumnBatch::default()
    };
    let cells = &batch.buffers.cells;
    let fits = plan.kinds_fit(cells) && default_model.is_none_or(|model| accept::model(model, limits));
    let mut pass = vec![fits; rows];
    batch.hashes = vec![0; rows];
    batch.times = vec![now_ms; rows];
    batch.model = vec![0; rows];
    batch.version = vec![0; rows];
    batch.class = vec![NO_CLASS; rows];
    batch.timeout = vec![false; rows];
    if fits {
        for column in &plan.features {
            numbers_pass(&cells[*column], &mut pass, accept::finite);
        }
        if let Some(column) = plan.latency {
            numbers_pass(&cells[column], &mut pass, accept::latency);
        }
        if let Some(column) = plan.confidence {
            numbers_pass(&cells[column], &mut pass, accept::confidence);
        }
        if let Some(column) = plan.value {
            numbers_pass(&cells[column], &mut pass, accept::finite);
        }
        if let Some(column) = plan.timestamp {
            let column = &cells[column];
            for (row, (pass, time)) in pass.iter_mut().zip(&mut batch.times).enumerate() {
                if let Some(seconds) = column.number(row) {
                    match accept::timestamp_seconds(seconds, now_ms, limits) {
                        Some(ms) => *time = ms,
                        None => *pass = false,
                    }
                }
            }
        }
        if let Some(column) = plan.status {
            let column = &cells[column];
            for (row, (pass, timeout)) in pass.iter_mut().zip(&mut batch.timeout).enumerate() {
                match column.text(row) {
                    None | Some("ok") => {}
                    Some("timeout") => *timeout = true,
                    Some(_) => *pass = false,
                }
            }
        }
        if let Some(column) = plan.error_type {
            let column = &cells[column];
            for (row, pass) in pass.iter_mut().enumerate() {
                *pass &= !column.is_present(row);
            }
        }
        let ids = &cells[plan.id];
        for (row, (pass, hash)) in pass.iter_mut().zip(&mut batch.hashes).enumerate() {
            match ids.text(row) {
                Some(id) if *pass && accept::prediction_id(id, limits) => *hash = crate::engine::id_hash(id),
                _ => *pass = false,
            }
        }
        let names = |column: Option<usize>,
                     table: &mut Names,
                     indices: &mut [u16],
                     pass: &mut [bool],
                     null: Null<'_>,
                     test: &dyn Fn(&str) -> bool| {
            // A coded column's distinct names are each looked up once, when a
            // row first needs it (the table learns names in row order).
            let coded = column.and_then(|column| cells[column].coded());
            let mut looked_up: Vec<Option<Option<u16>>> =
                vec![None; coded.map_or(0, |(names, _)| names.len())];
            for (row, (pass, index)) in pass.iter_mut().zip(indices).enumerate() {
                if !*pass {
                    continue;
                }
                if let Some((names, codes)) = coded
                    && cells[column.expect("a coded column")].is_present(row)
                {
                    let code = usize::from(codes[row]);
                    match *looked_up[code].get_or_insert_with(|| table.index(&names[code], test)) {
                        Some(found) => *index = found,
                        None => *pass = false,
                    }
                    continue;
                }
                let name = match (column.and_then(|column| cells[column].text(row)), null) {
                    (Some(name), _) | (None, Null::Reads(name)) => name,
                    (None, Null::Fails) => {
                        *pass = false;
                        continue;
                    }
                    (None, Null::Leaves) => continue,
                };
                match table.index(name, test) {
                    Some(found) => *index = found,
                    None => *pass = false,
                }
            }
        };
        names(
            plan.model,
            &mut batch.models,
            &mut batch.model,
            &mut pass,
            match (plan.model, default_model) {
                (None, Some(model)) => Null::Reads(model),
                _ => Null::Fails,
            },
            &|name| accept::model(name, limits),
        );
        names(
            plan.version,
            &mut batch.versions,
            &mut batch.version,
            &mut pass,
            Null::Reads(UNVERSIONED),
            &|name| accept::label_value(name, limits),
        );
        if plan.class.is_some() {
            names(
                plan.class,
                &mut batch.classes,
                &mut batch.class,
                &mut pass,
                Null::Leaves,
                &|name| accept::class(name, limits),
            );
        }
    }
    batch.kinds = pass
        .iter()
        .enumerate()
        .map(|(row, pass)| {
            if *pass {
                RowKind::Fast
            } else {
                slow_row(cells, row, &mut batch.slow)
            }
        })
        .collect();
    batch
}

/// What a null (or absent) name column means for a row.
#[derive(Clone, Copy)]
enum Null<'a> {
    /// The row reads as this name (`--model`, the unversioned version).
    Reads(&'a str),
    /// The row fails (a missing model): the row path names the error.
    Fails,
    /// The row has none (no predicted class).
    Leaves,
}

/// Fails the rows of a numbers column whose value is present and does not
/// pass `test`.
fn numbers_pass(column: &ColumnCells, pass: &mut [bool], test: impl Fn(f64) -> bool) {
    if column.present.is_empty() {
        for (pass, value) in pass.iter_mut().zip(&column.numbers) {
            *pass &= test(*value);
        }
    } else {
        for ((pass, value), present) in pass.iter_mut().zip(&column.numbers).zip(&column.present) {
            *pass &= !*present || test(*value);
        }
    }
}

/// What the serial step made of a batch's fast rows, for their aggregation.
#[derive(Debug, Default)]
pub struct FastCommit {
    /// Per row, the cell it counts in, or `DROPPED`.
    pub cells: Vec<u32>,
    /// Per (model, class) pair of the batch (`model * classes + class`), the
    /// class's name after folding.
    pub class_names: Vec<Option<String>>,
    /// Per model of the batch, its feature names after folding (in plan
    /// order).
    pub feature_names: Vec<Vec<String>>,
}

/// Adds a batch's fast rows to the buckets, a column at a time: what
/// `Bucket::observe` (and, with `drift`, `observe_drift`) does row by row.
pub fn aggregate(
    plan: &FastPlan,
    batch: &ColumnBatch,
    commit: &FastCommit,
    drift: bool,
    aggregates: &mut CellAggregates,
) {
    let cells = batch.cells();
    // The rows of each cell: a slice spans few cells.
    let mut groups: Vec<(u32, Vec<u32>)> = Vec::new();
    let mut last = usize::MAX;
    for (row, cell) in commit.cells.iter().enumerate() {
        if *cell == DROPPED {
            continue;
        }
        if last == usize::MAX || groups[last].0 != *cell {
            last = match groups.iter().position(|(known, _)| known == cell) {
                Some(index) => index,
                None => {
                    groups.push((*cell, Vec::new()));
                    groups.len() - 1
                }
            };
        }
        groups[last].1.push(row as u32);
    }
    let classes = batch.classes.names.len().max(1);
    let mut values: Vec<f64> = Vec::new();
    for (cell, rows) in &groups {
        let (bucket, summary) = aggregates.slot(*cell);
        let model = batch.model[rows[0] as usize] as usize;
        let class_name = |row: usize| -> Option<&str> {
            let class = batch.class[row];
            if class == NO_CLASS || batch.timeout[row] {
                return None;
            }
            commit.class_names[model * classes + class as usize].as_deref()
        };
        bucket.counters.requests += rows.len() as u64;
        let timeouts = rows.iter().filter(|row| batch.timeout[**row as usize]).count() as u64;
        if timeouts > 0 {
            *bucket
                .counters
                .errors_by_type
                .entry(TIMEOUT_ERROR_TYPE.to_owned())
                .or_default() += timeouts;
        }
        if let Some(column) = plan.latency {
            let column = &cells[column];
            for row in rows {
                if let Some(latency) = column.number(*row as usize) {
                    bucket.counters.latency.observe(&LATENCY_BUCKETS, latency);
                    bucket.counters.slo_latency.observe(&SLO_LATENCY_BUCKETS, latency);
                    bucket.latency_sketch.observe(latency);
                }
            }
        }
        let confidence = plan.confidence.map(|column| &cells[column]);
        if plan.class.is_some() {
            // Rows per predicted class, then each class's counts at once.
            let mut by_class: Vec<Vec<u32>> = vec![Vec::new(); classes];
            for row in rows {
                if class_name(*row as usize).is_some() {
                    by_class[batch.class[*row as usize] as usize].push(*row);
                }
            }
            for (class, class_rows) in by_class.iter().enumerate() {
                if class_rows.is_empty() {
                    continue;
                }
                let Some(name) = commit.class_names[model * classes + class].as_deref() else {
                    continue;
                };
                let counts = match bucket.counters.classes.get_mut(name) {
                    Some(counts) => counts,
                    None => bucket.counters.classes.entry(name.to_owned()).or_default(),
                };
                counts.count += class_rows.len() as u64;
                if let Some(confidence) = confidence {
                    for row in class_rows {
                        if let Some(value) = confidence.number(*row as usize) {
                            counts.confidence.observe(&CONFIDENCE_BUCKETS, value);
                            bucket.confidence_sketch.observe(value);
                        }
                    }
                }
            }
        }
        if let Some(column) = plan.value {
            let column = &cells[column];
            for row in rows {
                let row = *row as usize;
                if let Some(value) = column.number(row)
                    && !batch.timeout[row]
                {
                    bucket.regression.moments.observe(value);
                    bucket.regression.sketch.observe(value);
                }
            }
        }
        if !plan.features.is_empty() {
            // A column without nulls gives every row a feature.
            let every_row_has_one = plan
                .features
                .iter()
                .any(|column| cells[*column].present.is_empty());
            bucket.feature_rows += if every_row_has_one {
                rows.len() as u64
            } else {
                rows.iter()
                    .filter(|row| {
                        plan.features
                            .iter()
                            .any(|column| cells[*column].is_present(**row as usize))
                    })
                    .count() as u64
            };
        }
        for (position, column) in plan.features.iter().enumerate() {
            let column = &cells[*column];
            values.clear();
            if column.present.is_empty() {
                values.extend(rows.iter().map(|row| column.numbers[*row as usize]));
            } else {
                values.extend(rows.iter().filter_map(|row| column.number(*row as usize)));
            }
            // A feature's statistics exist once a row has given it a value.
            if values.is_empty() {
                continue;
            }
            let name = &commit.feature_names[model][position];
            let stats = match bucket.features.get_mut(name.as_str()) {
                Some(stats) => stats,
                None => bucket.features.entry(name.clone()).or_default(),
            };
            stats.numeric.merge(&Moments::of(&values));
        }
        if drift {
            let names = &commit.feature_names[model];
            for row in rows {
                let row = *row as usize;
                let values = plan.features.iter().zip(names).filter_map(|(column, name)| {
                    cells[*column]
                        .number(row)
                        .map(|value| (name.as_str(), DriftValue::Number(value)))
                });
                let class = class_name(row);
                let confidence = class.and(confidence.and_then(|column| column.number(row)));
                let regression = plan
                    .value
                    .and_then(|column| cells[column].number(row))
                    .filter(|_| !batch.timeout[row]);
                summary.observe(values, class, confidence, regression);
            }
        }
    }
}

/// Which columns fill which field of a labels file the columnar path covers:
/// `prediction_id`, `actual`, `timestamp` and numeric `business.NAME`.
#[derive(Debug, Clone)]
pub struct LabelPlan {
    id: usize,
    actual: usize,
    timestamp: Option<usize>,
    /// Business columns sorted by name, as a label's values are.
    pub business: Vec<usize>,
    pub business_names: Vec<String>,
}

impl LabelPlan {
    pub fn of(columns: &Columns, limits: &ParseLimits) -> Option<Self> {
        let mut id = None;
        let mut actual = None;
        let mut timestamp = None;
        let mut business: Vec<(String, usize)> = Vec::new();
        for (index, role) in columns.roles.iter().enumerate() {
            match role {
                Role::Text("prediction_id") => id = Some(index),
                Role::Actual => actual = Some(index),
                Role::Timestamp => timestamp = Some(index),
                Role::Business(name) => business.push((name.clone(), index)),
                _ => return None,
            }
        }
        let names_pass = accept::entry_names(
            business.iter().map(|(name, _)| name.as_str()),
            limits.max_business_values,
            limits,
        );
        business.sort();
        names_pass.then_some(LabelPlan {
            id: id?,
            actual: actual?,
            timestamp,
            business: business.iter().map(|(_, column)| *column).collect(),
            business_names: business.into_iter().map(|(name, _)| name).collect(),
        })
    }

    fn kinds_fit(&self, cells: &[ColumnCells]) -> bool {
        cells[self.id].kind == CellKind::Text
            && cells[self.actual].kind == CellKind::Text
            && self
                .timestamp
                .is_none_or(|column| cells[column].kind == CellKind::Numbers)
            && self
                .business
                .iter()
                .all(|column| cells[*column].kind == CellKind::Numbers)
    }

    /// The actual of a fast row.
    pub fn actual<'c>(&self, cells: &'c [ColumnCells], row: usize) -> &'c str {
        cells[self.actual].text(row).expect("a fast label has an actual")
    }
}

/// `actual` of a fast label whose actual is not in the batch's table.
pub const UNLISTED: u16 = u16::MAX;

/// A slice of a labels file, tested column by column.
#[derive(Debug, Default)]
pub struct LabelBatch {
    pub buffers: Buffers,
    pub kinds: Vec<RowKind>,
    pub slow: Parsed<LabelEvent>,
    pub hashes: Vec<u64>,
    /// Per fast row, its actual in `actuals`, or `UNLISTED` (regression
    /// outputs are mostly distinct: they are read from the column).
    pub actual: Vec<u16>,
    pub actuals: Names,
}

impl LabelBatch {
    pub fn rows(&self) -> usize {
        self.kinds.len()
    }

    pub fn cells(&self) -> &[ColumnCells] {
        &self.buffers.cells
    }
}

/// Tests every row of a labels slice; rows that do not pass are read by
/// `slow_row` (the typed row path), in row order.
pub fn test_labels(
    plan: &LabelPlan,
    buffers: Buffers,
    rows: usize,
    now_ms: TimestampMs,
    limits: &ParseLimits,
    mut slow_row: impl FnMut(&[ColumnCells], usize, &mut Parsed<LabelEvent>) -> RowKind,
) -> LabelBatch {
    let mut batch = LabelBatch {
        buffers,
        ..LabelBatch::default()
    };
    let cells = &batch.buffers.cells;
    let fits = plan.kinds_fit(cells);
    // Per distinct actual of a coded column: its index, once a row needed it.
    let mut looked_up: Vec<Option<u16>> =
        vec![None; cells[plan.actual].coded().map_or(0, |(names, _)| names.len())];
    for row in 0..rows {
        let fast = fits
            .then(|| {
                fast_label(
                    plan,
                    cells,
                    row,
                    now_ms,
                    limits,
                    &mut batch.actuals,
                    &mut looked_up,
                )
            })
            .flatten();
        let (kind, (hash, actual)) = match fast {
            Some(fast) => (RowKind::Fast, fast),
            None => (slow_row(cells, row, &mut batch.slow), (0, UNLISTED)),
        };
        batch.kinds.push(kind);
        batch.hashes.push(hash);
        batch.actual.push(actual);
    }
    batch
}

fn fast_label(
    plan: &LabelPlan,
    cells: &[ColumnCells],
    row: usize,
    now_ms: TimestampMs,
    limits: &ParseLimits,
    actuals: &mut Names,
    looked_up: &mut [Option<u16>],
) -> Option<(u64, u16)> {
    let id = cells[plan.id].text(row)?;
    if !accept::prediction_id(id, limits) {
        return None;
    }
    let actual = cells[plan.actual].text(row)?;
    if !accept::class(actual, limits) {
        return None;
    }
    if let Some(seconds) = plan.timestamp.and_then(|column| cells[column].number(row)) {
        accept::timestamp_seconds(seconds, now_ms, limits)?;
    }
    for column in &plan.business {
        if let Some(value) = cells[*column].number(row)
            && !accept::finite(value)
        {
            return None;
        }
    }
    let actual = match cells[plan.actual].coded() {
        Some((_, codes)) => *looked_up[usize::from(codes[row])]
            .get_or_insert_with(|| actuals.index(actual, |_| true).unwrap_or(UNLISTED)),
        None => actuals.index(actual, |_| true).unwrap_or(UNLISTED),
    };
    Some((crate::engine::id_hash(id), actual))
}
