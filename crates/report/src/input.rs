//! Input files: format detection, streaming in chunks of whole rows, and the
//! parsing of one chunk into events.
//!
//! NDJSON rows go through `core::wire`, exactly as `POST /v1/predictions`
//! and `POST /v1/labels` read them. A CSV row is turned into the wire object
//! it stands for (see the column mapping in the README) and read by the same
//! parser, so that a CSV file is validated by the same rules, with the same
//! error codes and messages. Parquet files map their columns the same way
//! ([`Columns`]), and their rows go to `core::wire::typed` as typed values
//! ([`crate::parquet_input`]).

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use modelwatch_core::event::{LabelEvent, PredictionEvent, TimestampMs};
use modelwatch_core::wire::{self, ParseLimits, RowError};

use crate::ReportError;
use crate::parquet_input::{ParquetLayout, RowSlice};

/// How many bytes of whole rows one chunk holds (about): the unit of work of
/// the parsing threads.
pub const CHUNK_BYTES: usize = 4 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Ndjson,
    Csv,
    Parquet,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Ndjson => "ndjson",
            Format::Csv => "csv",
            Format::Parquet => "parquet",
        }
    }
}

/// What a file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Predictions,
    Labels,
}

/// One input file and how to read it.
#[derive(Debug, Clone)]
pub struct InputFile {
    pub path: PathBuf,
    pub format: Format,
    pub gzip: bool,
}

impl InputFile {
    /// Picks the format from the extension: `.ndjson`, `.jsonl` or `.csv`,
    /// each optionally followed by `.gz`, or `.parquet` (compressed inside).
    pub fn detect(path: &Path) -> Result<Self, ReportError> {
        let name = path
            .file_name()
            .map(|name| name.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        let (stem, gzip) = match name.strip_suffix(".gz") {
            Some(stem) => (stem.to_owned(), true),
            None => (name.clone(), false),
        };
        let format = if stem.ends_with(".ndjson") || stem.ends_with(".jsonl") {
            Format::Ndjson
        } else if stem.ends_with(".csv") {
            Format::Csv
        } else if stem.ends_with(".parquet") && !gzip {
            Format::Parquet
        } else {
            return Err(ReportError::Input {
                path: path.to_owned(),
                message: "unknown format: the name must end in .ndjson, .jsonl or .csv (optionally .gz), \
                          or .parquet"
                    .to_owned(),
            });
        };
        Ok(Self {
            path: path.to_owned(),
            format,
            gzip,
        })
    }

    pub fn display(&self) -> String {
        self.path.display().to_string()
    }

    /// The file's size on disk (compressed, for `.gz`): what the progress
    /// bar counts.
    pub fn size(&self) -> u64 {
        std::fs::metadata(&self.path).map(|meta| meta.len()).unwrap_or(0)
    }

    fn open(&self, on_read: impl FnMut(u64) + Send + 'static) -> Result<Box<dyn Read + Send>, ReportError> {
        let file = File::open(&self.path).map_err(|error| self.io_error(&error))?;
        let counted = CountingReader {
            inner: file,
            on_read: Box::new(on_read),
        };
        Ok(if self.gzip {
            Box::new(flate2::read::MultiGzDecoder::new(io::BufReader::with_capacity(
                1 << 20,
                counted,
            )))
        } else {
            Box::new(counted)
        })
    }

    pub fn io_error(&self, error: &io::Error) -> ReportError {
        ReportError::Input {
            path: self.path.clone(),
            message: error.to_string(),
        }
    }
}

struct CountingReader {
    inner: File,
    on_read: Box<dyn FnMut(u64) + Send>,
}

impl Read for CountingReader {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        let read = self.inner.read(buffer)?;
        (self.on_read)(read as u64);
        Ok(read)
    }
}

/// Whole rows of one file.
#[derive(Debug)]
pub struct Chunk {
    /// Index of the file among the inputs of its pass.
    pub file: usize,
    /// Line number (1-based) of the first byte of `bytes`; for Parquet, the
    /// row number (1-based, in the file) of the first row.
    pub first_line: u64,
    /// The rows of a CSV or NDJSON file.
    pub bytes: Vec<u8>,
    /// The rows of a Parquet file: a slice of one row group.
    pub rows: Option<RowSlice>,
}

/// Reads `file` in chunks that end at a row boundary and hands each to
/// `emit`. A CSV row boundary is a newline outside quotes (quotes are
/// counted from the start of the file, so quoted newlines stay inside their
/// row). Returns the CSV header line (without its newline), if any.
pub fn read_chunks(
    file: &InputFile,
    row_reader: &RowReader,
    index: usize,
    on_read: impl FnMut(u64) + Send + 'static,
    mut emit: impl FnMut(Chunk) -> bool,
    mut on_header: impl FnMut(&[u8]) -> Result<(), ReportError>,
) -> Result<(), ReportError> {
    if let Some(layout) = &row_reader.parquet {
        return crate::parquet_input::read_row_groups(file, layout, index, on_read, emit);
    }
    let mut reader = file.open(on_read)?;
    let csv = file.format == Format::Csv;
    let mut pending: Vec<u8> = Vec::with_capacity(CHUNK_BYTES + (64 << 10));
    let mut line = 1u64;
    let mut header_done = !csv;
    let mut at_end = false;
    let mut wanted = CHUNK_BYTES;
    while !at_end {
        while pending.len() < wanted {
            // `read_to_end` appends without zero-filling the buffer first.
            let missing = (wanted - pending.len()) as u64;
            let read = (&mut reader)
                .take(missing)
                .read_to_end(&mut pending)
                .map_err(|error| file.io_error(&error))?;
            if read == 0 {
                at_end = true;
                break;
            }
        }
        let boundaries = row_boundaries(&pending, csv);
        let cut_at = match (boundaries, at_end) {
            (_, true) => pending.len(),
            (Some((_, last)), false) => last,
            // No boundary yet: one row is longer than a chunk; read on.
            (None, false) => {
                wanted = pending.len() + CHUNK_BYTES;
                continue;
            }
        };
        wanted = CHUNK_BYTES;
        // The chunk keeps the buffer; the rest (part of a row) starts the next.
        let mut next = Vec::with_capacity(CHUNK_BYTES + (64 << 10));
        next.extend_from_slice(&pending[cut_at..]);
        pending.truncate(cut_at);
        let mut body = std::mem::replace(&mut pending, next);
        if !header_done {
            let header_end = boundaries.map_or(body.len(), |(first, _)| first).min(body.len());
            on_header(trim_line_end(&body[..header_end]))?;
            header_done = true;
            body.drain(..header_end);
            line += 1;
        }
        if body.is_empty() {
            continue;
        }
        let lines_in_body = body.iter().filter(|byte| **byte == b'\n').count() as u64;
        let chunk = Chunk {
            file: index,
            first_line: line,
            bytes: body,
            rows: None,
        };
        line += lines_in_body;
        if !emit(chunk) {
            return Ok(());
        }
    }
    if !header_done {
        on_header(b"")?;
    }
    Ok(())
}

/// The ends (exclusive) of the first and the last complete row of `bytes`:
/// after a newline, outside quotes for CSV. `bytes` starts at a row start,
/// where no quote is open.
fn row_boundaries(bytes: &[u8], csv: bool) -> Option<(usize, usize)> {
    if !csv || !bytes.contains(&b'"') {
        let first = bytes.iter().position(|byte| *byte == b'\n')?;
        let last = bytes.iter().rposition(|byte| *byte == b'\n')?;
        return Some((first + 1, last + 1));
    }
    let mut quoted = false;
    let mut found: Option<(usize, usize)> = None;
    for (position, byte) in bytes.iter().enumerate() {
        match byte {
            b'"' => quoted = !quoted,
            b'\n' if !quoted => {
                let end = position + 1;
                found = Some(found.map_or((end, end), |(first, _)| (first, end)));
            }
            _ => {}
        }
    }
    found
}

/// The header line of a CSV file (the header itself may not hold a quoted
/// newline).
pub fn read_csv_header(file: &InputFile) -> Result<Vec<u8>, ReportError> {
    use std::io::BufRead;
    let mut reader = io::BufReader::new(file.open(|_| {})?);
    let mut header = Vec::new();
    reader
        .read_until(b'\n', &mut header)
        .map_err(|error| file.io_error(&error))?;
    Ok(trim_line_end(&header).to_vec())
}

fn trim_line_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// A row that could not be read: where, and why (the wire's error).
#[derive(Debug, Clone)]
pub struct RowProblem {
    pub file: usize,
    pub line: u64,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
}

impl RowProblem {
    pub(crate) fn from_wire(file: usize, line: u64, error: RowError, columns: Option<&Columns>) -> Self {
        let field = match (error.field, columns) {
            (Some(field), Some(columns)) => Some(columns.column_of(&field)),
            (field, _) => field,
        };
        Self {
            file,
            line,
            code: error.code.as_str(),
            message: error.message,
            field,
        }
    }
}

/// How the columns of a CSV or Parquet file map onto the wire fields.
#[derive(Debug, Clone, Default)]
pub struct Columns {
    pub(crate) names: Vec<String>,
    pub(crate) roles: Vec<Role>,
    /// A predictions file (which takes `--model`), not a labels file.
    predictions: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Role {
    /// A top-level string field of the wire object (`prediction_id`, `model`, ...).
    Text(&'static str),
    /// A top-level number field (`latency_seconds`, `confidence`).
    Number(&'static str),
    /// `timestamp`: Unix seconds when it reads as a number, else RFC 3339.
    Timestamp,
    /// `prediction`: a class.
    PredictedClass,
    /// `prediction_value`: a regression output.
    PredictedValue,
    /// `actual`: a class, or a number for regression models (read as text).
    Actual,
    Probability(String),
    Segment(String),
    Business(String),
    Feature(String),
}

const PREDICTION_TEXT: [&str; 5] = ["prediction_id", "model", "version", "status", "error_type"];
const PREDICTION_NUMBERS: [&str; 2] = ["latency_seconds", "confidence"];

impl Columns {
    /// Reads the header of a predictions or labels file. Prediction files
    /// take every column they do not name otherwise as a feature; label
    /// files refuse unknown columns.
    pub fn from_header(header: &[u8], kind: Kind, path: &Path) -> Result<Self, ReportError> {
        let header_error = |message: String| ReportError::Input {
            path: path.to_owned(),
            message,
        };
        let mut reader = csv::ReaderBuilder::new().has_headers(false).from_reader(header);
        let mut record = csv::StringRecord::new();
        let read = reader
            .read_record(&mut record)
            .map_err(|error| header_error(format!("unreadable CSV header: {error}")))?;
        if !read {
            return Err(header_error("the CSV file has no header line".to_owned()));
        }
        let names = record
            .iter()
            .map(|name| name.trim().trim_start_matches('\u{feff}'));
        Self::from_names(names, kind, path, "CSV header")
    }

    /// Maps column names onto wire fields (`source` names where they come
    /// from, for messages: `CSV header`, `Parquet schema`).
    pub fn from_names<'n>(
        names: impl IntoIterator<Item = &'n str>,
        kind: Kind,
        path: &Path,
        source: &str,
    ) -> Result<Self, ReportError> {
        let header_error = |message: String| ReportError::Input {
            path: path.to_owned(),
            message,
        };
        let mut columns = Columns {
            predictions: kind == Kind::Predictions,
            ..Columns::default()
        };
        for name in names {
            let role = match kind {
                Kind::Predictions => {
                    if let Some(field) = PREDICTION_TEXT.iter().find(|field| **field == name) {
                        Role::Text(field)
                    } else if let Some(field) = PREDICTION_NUMBERS.iter().find(|field| **field == name) {
                        Role::Number(field)
                    } else if name == "timestamp" {
                        Role::Timestamp
                    } else if name == "prediction" {
                        Role::PredictedClass
                    } else if name == "prediction_value" {
                        Role::PredictedValue
                    } else if let Some(class) = name.strip_prefix("probability.") {
                        Role::Probability(class.to_owned())
                    } else if let Some(key) = name.strip_prefix("segment.") {
                        Role::Segment(key.to_owned())
                    } else {
                        Role::Feature(name.to_owned())
                    }
                }
                Kind::Labels => match name {
                    "prediction_id" => Role::Text("prediction_id"),
                    "actual" => Role::Actual,
                    "timestamp" => Role::Timestamp,
                    _ => match name.strip_prefix("business.") {
                        Some(metric) => Role::Business(metric.to_owned()),
                        None => {
                            return Err(header_error(format!(
                                "unknown column {name:?} in a labels file: expected prediction_id, \
                                 actual, timestamp and business.NAME columns"
                            )));
                        }
                    },
                },
            };
            if columns.names.iter().any(|existing| existing == name) {
                return Err(header_error(format!("the column {name:?} appears twice")));
            }
            columns.names.push(name.to_owned());
            columns.roles.push(role);
        }
        let has = |wanted: &Role| columns.roles.iter().any(|role| role == wanted);
        if !has(&Role::Text("prediction_id")) {
            return Err(header_error(format!("the {source} has no prediction_id column")));
        }
        if kind == Kind::Labels && !has(&Role::Actual) {
            return Err(header_error(format!("the {source} has no actual column")));
        }
        if has(&Role::PredictedClass) && has(&Role::PredictedValue) {
            return Err(header_error(
                "give prediction (a class) or prediction_value (a number), not both".to_owned(),
            ));
        }
        Ok(columns)
    }

    /// The name a column gives its entry in a wire object: the class of
    /// `probability.CLASS`, the key of `segment.KEY`, the feature's name.
    pub(crate) fn entry_name(&self, column: usize) -> &str {
        match &self.roles[column] {
            Role::Probability(name) | Role::Segment(name) | Role::Business(name) | Role::Feature(name) => {
                name
            }
            _ => &self.names[column],
        }
    }

    pub fn has_model(&self) -> bool {
        self.roles.contains(&Role::Text("model"))
    }

    /// The column a wire field path came from.
    pub(crate) fn column_of(&self, field: &str) -> String {
        if let Some(name) = field.strip_prefix("features.") {
            name.to_owned()
        } else if let Some(class) = field.strip_prefix("probabilities.") {
            format!("probability.{class}")
        } else if let Some(key) = field.strip_prefix("segments.") {
            format!("segment.{key}")
        } else if let Some(name) = field.strip_prefix("business.") {
            format!("business.{name}")
        } else if field == "prediction" && self.roles.contains(&Role::PredictedValue) {
            "prediction_value".to_owned()
        } else {
            field.to_owned()
        }
    }

    /// Writes the wire object of one record into `out`. `default_model` fills
    /// in `model` when the file has no such column.
    fn to_wire(&self, record: &csv::ByteRecord, default_model: Option<&str>, out: &mut Vec<u8>) {
        out.clear();
        out.push(b'{');
        let mut first = true;
        let mut key = |out: &mut Vec<u8>, name: &str| {
            if !first {
                out.push(b',');
            }
            first = false;
            write_json_string(out, name);
            out.push(b':');
        };
        if let (true, false, Some(model)) = (self.predictions, self.has_model(), default_model) {
            key(out, "model");
            write_json_string(out, model);
        }
        let mut groups: [(&str, Vec<(usize, &str)>); 4] = [
            ("probabilities", Vec::new()),
            ("segments", Vec::new()),
            ("business", Vec::new()),
            ("features", Vec::new()),
        ];
        for (index, role) in self.roles.iter().enumerate() {
            let Some(cell) = record.get(index) else { continue };
            // An empty cell is an absent value (null).
            if cell.is_empty() {
                continue;
            }
            let cell = cell_text(cell);
            match role {
                Role::Text(field) => {
                    key(out, field);
                    write_json_string(out, &cell);
                }
                Role::Number(field) => {
                    key(out, field);
                    write_json_number_or_string(out, &cell);
                }
                Role::Timestamp => {
                    key(out, "timestamp");
                    write_json_number_or_string(out, &cell);
                }
                Role::PredictedClass | Role::Actual => {
                    key(
                        out,
                        if *role == Role::Actual {
                            "actual"
                        } else {
                            "prediction"
                        },
                    );
                    write_json_string(out, &cell);
                }
                Role::PredictedValue => {
                    key(out, "prediction");
                    write_json_number_or_string(out, &cell);
                }
                Role::Probability(_) => groups[0].1.push((index, "")),
                Role::Segment(_) => groups[1].1.push((index, "")),
                Role::Business(_) => groups[2].1.push((index, "")),
                Role::Feature(_) => groups[3].1.push((index, "")),
            }
        }
        for (group, members) in &groups {
            if members.is_empty() {
                continue;
            }
            key(out, group);
            out.push(b'{');
            for (position, (index, _)) in members.iter().enumerate() {
                if position > 0 {
                    out.push(b',');
                }
                let name = match &self.roles[*index] {
                    Role::Probability(name)
                    | Role::Segment(name)
                    | Role::Business(name)
                    | Role::Feature(name) => name,
                    _ => unreachable!("only grouped roles are listed"),
                };
                write_json_string(out, name);
                out.push(b':');
                let cell = cell_text(record.get(*index).unwrap_or_default());
                match self.roles[*index] {
                    Role::Segment(_) => write_json_string(out, &cell),
                    Role::Feature(_) => write_feature(out, &cell),
                    _ => write_json_number_or_string(out, &cell),
                }
            }
            out.push(b'}');
        }
        out.push(b'}');
    }
}

/// A cell as text; invalid UTF-8 is replaced (U+FFFD), as a lossy read.
fn cell_text(cell: &[u8]) -> std::borrow::Cow<'_, str> {
    match std::str::from_utf8(cell) {
        Ok(text) => std::borrow::Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(cell),
    }
}

/// Whether `text` is a JSON number literal: `-?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?`.
fn is_json_number(text: &[u8]) -> bool {
    let digits = |bytes: &[u8], at: usize| {
        bytes[at..]
            .iter()
            .take_while(|byte| byte.is_ascii_digit())
            .count()
    };
    let mut at = usize::from(text.first() == Some(&b'-'));
    match text.get(at) {
        Some(b'0') => at += 1,
        Some(b'1'..=b'9') => at += digits(text, at),
        _ => return false,
    }
    if text.get(at) == Some(&b'.') {
        let fraction = digits(text, at + 1);
        if fraction == 0 {
            return false;
        }
        at += 1 + fraction;
    }
    if matches!(text.get(at), Some(b'e' | b'E')) {
        at += 1;
        if matches!(text.get(at), Some(b'+' | b'-')) {
            at += 1;
        }
        let exponent = digits(text, at);
        if exponent == 0 {
            return false;
        }
        at += exponent;
    }
    at == text.len()
}

fn write_json_string(out: &mut Vec<u8>, text: &str) {
    serde_json::to_writer(&mut *out, text).expect("writing to a Vec cannot fail");
}

/// A cell that reads as a finite number is written as that number (exactly:
/// the shortest form that reads back the same), anything else as a string,
/// which the wire then refuses with `invalid_type` naming the column.
fn write_json_number_or_string(out: &mut Vec<u8>, cell: &str) {
    // Most cells are JSON number literals already: copied as they are, the
    // wire parser reads them once.
    if is_json_number(cell.as_bytes()) {
        out.extend_from_slice(cell.as_bytes());
        return;
    }
    match cell.trim().parse::<f64>() {
        Ok(number) if number.is_finite() => {
            serde_json::to_writer(&mut *out, &number).expect("writing to a Vec cannot fail")
        }
        _ => write_json_string(out, cell),
    }
}

/// A feature cell: a number, a boolean (`true`/`false`, a category as in
/// JSON), or a category.
fn write_feature(out: &mut Vec<u8>, cell: &str) {
    match cell {
        "true" | "false" => out.extend_from_slice(cell.as_bytes()),
        _ if is_json_number(cell.as_bytes()) => out.extend_from_slice(cell.as_bytes()),
        _ => match cell.trim().parse::<f64>() {
            Ok(number) if number.is_finite() => {
                serde_json::to_writer(&mut *out, &number).expect("writing to a Vec cannot fail")
            }
            _ => write_json_string(out, cell),
        },
    }
}

/// What parsing a chunk of rows gives.
#[derive(Debug)]
pub struct Parsed<E> {
    /// Events with their line numbers, in file order.
    pub events: Vec<(u64, E)>,
    pub problems: Vec<RowProblem>,
}

impl<E> Default for Parsed<E> {
    fn default() -> Self {
        Self {
            events: Vec::new(),
            problems: Vec::new(),
        }
    }
}

/// A parsed chunk: events, or a columnar batch (a Parquet slice the
/// columnar path reads: `ColumnBatch`, `LabelBatch`).
#[derive(Debug)]
pub enum Batch<E, C> {
    Rows(Parsed<E>),
    Columns(Box<C>),
}

impl<E, C> Default for Batch<E, C> {
    fn default() -> Self {
        Batch::Rows(Parsed::default())
    }
}

/// How to read the rows of one file.
#[derive(Debug, Clone)]
pub struct RowReader {
    pub file: usize,
    pub format: Format,
    pub columns: Option<Columns>,
    /// The schema of a Parquet file, read once.
    pub parquet: Option<Arc<ParquetLayout>>,
    /// The columnar plan of a Parquet predictions file it covers.
    pub fast: Option<Arc<crate::columnar::FastPlan>>,
    /// The columnar plan of a Parquet labels file it covers.
    pub fast_labels: Option<Arc<crate::columnar::LabelPlan>>,
    pub default_model: Option<String>,
    pub limits: ParseLimits,
    /// The time of receipt: a row without `timestamp` gets it, as the server
    /// gives the time of receipt, and timestamps may be at most
    /// `limits.max_future_skew_ms` past it.
    pub now_ms: TimestampMs,
}

impl RowReader {
    /// Parses every row of `chunk` with `parse` (the wire parser of one
    /// event kind).
    pub fn parse<E>(
        &self,
        chunk: &Chunk,
        parse: fn(&[u8], TimestampMs, &ParseLimits) -> Result<E, RowError>,
    ) -> Parsed<E> {
        let mut parsed = Parsed::default();
        match self.format {
            Format::Ndjson => {
                for (offset, line) in chunk.bytes.split(|byte| *byte == b'\n').enumerate() {
                    let line = line.strip_suffix(b"\r").unwrap_or(line);
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    let line_number = chunk.first_line + offset as u64;
                    match parse(line, self.now_ms, &self.limits) {
                        Ok(event) => parsed.events.push((line_number, event)),
                        Err(error) => {
                            parsed
                                .problems
                                .push(RowProblem::from_wire(self.file, line_number, error, None))
                        }
                    }
                }
            }
            Format::Parquet => unreachable!("Parquet rows are typed, not text"),
            Format::Csv => {
                let columns = self.columns.as_ref().expect("a CSV file has columns");
                let mut reader = csv::ReaderBuilder::new()
                    .has_headers(false)
                    .flexible(true)
                    .from_reader(chunk.bytes.as_slice());
                let mut record = csv::ByteRecord::new();
                let mut wire_row = Vec::with_capacity(512);
                loop {
                    let line_number = chunk.first_line + reader.position().line() - 1;
                    match reader.read_byte_record(&mut record) {
                        Ok(false) => break,
                        Ok(true) => {}
                        Err(error) => {
                            parsed.problems.push(RowProblem {
                                file: self.file,
                                line: line_number,
                                code: "malformed_csv",
                                message: format!("invalid CSV: {error}"),
                                field: None,
                            });
                            continue;
                        }
                    }
                    if record.iter().all(|cell| cell.is_empty()) {
                        continue;
                    }
                    if record.len() != columns.names.len() {
                        parsed.problems.push(RowProblem {
                            file: self.file,
                            line: line_number,
                            code: "malformed_csv",
                            message: format!(
                                "the row has {} cells, the header {} columns",
                                record.len(),
                                columns.names.len()
                            ),
                            field: None,
                        });
                        continue;
                    }
                    columns.to_wire(&record, self.default_model.as_deref(), &mut wire_row);
                    match parse(&wire_row, self.now_ms, &self.limits) {
                        Ok(event) => parsed.events.push((line_number, event)),
                        Err(error) => parsed.problems.push(RowProblem::from_wire(
                            self.file,
                            line_number,
                            error,
                            Some(columns),
                        )),
                    }
                }
            }
        }
        parsed
    }

    /// The events of a chunk of a predictions file. Only an unreadable
    /// Parquet page fails the whole chunk.
    pub fn parse_predictions(&self, chunk: &Chunk) -> Result<Parsed<PredictionEvent>, ReportError> {
        match &self.parquet {
            Some(layout) => crate::parquet_input::parse_predictions(self, layout, chunk),
            None => Ok(self.parse(chunk, wire::parse_prediction)),
        }
    }

    /// A predictions chunk, columnar when the file's columns allow it.
    pub fn parse_prediction_batch(
        &self,
        chunk: &Chunk,
    ) -> Result<Batch<PredictionEvent, crate::columnar::ColumnBatch>, ReportError> {
        match (&self.parquet, &self.fast) {
            (Some(layout), Some(plan)) => {
                crate::parquet_input::parse_prediction_batch(self, layout, plan, chunk)
                    .map(|batch| Batch::Columns(Box::new(batch)))
            }
            _ => self.parse_predictions(chunk).map(Batch::Rows),
        }
    }

    /// A labels chunk, columnar when the file's columns allow it.
    pub fn parse_label_batch(
        &self,
        chunk: &Chunk,
    ) -> Result<Batch<LabelEvent, crate::columnar::LabelBatch>, ReportError> {
        match (&self.parquet, &self.fast_labels) {
            (Some(layout), Some(plan)) => crate::parquet_input::parse_label_batch(self, layout, plan, chunk)
                .map(|batch| Batch::Columns(Box::new(batch))),
            _ => self.parse_labels(chunk).map(Batch::Rows),
        }
    }

    pub fn parse_labels(&self, chunk: &Chunk) -> Result<Parsed<LabelEvent>, ReportError> {
        match &self.parquet {
            Some(layout) => crate::parquet_input::parse_labels(self, layout, chunk),
            None => Ok(self.parse(chunk, wire::parse_label)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(header: &str, kind: Kind) -> RowReader {
        RowReader {
            file: 0,
            format: Format::Csv,
            columns: Some(Columns::from_header(header.as_bytes(), kind, Path::new("t.csv")).unwrap()),
            parquet: None,
            fast: None,
            fast_labels: None,
            default_model: Some("m".to_owned()),
            limits: ParseLimits::default(),
            now_ms: 2_000_000_000_000,
        }
    }

    impl RowReader {
        fn parse_predictions_ok(&self, chunk: &Chunk) -> Parsed<PredictionEvent> {
            self.parse_predictions(chunk).unwrap()
        }

        fn parse_labels_ok(&self, chunk: &Chunk) -> Parsed<LabelEvent> {
            self.parse_labels(chunk).unwrap()
        }
    }

    fn chunk(text: &str) -> Chunk {
        Chunk {
            file: 0,
            first_line: 2,
            bytes: text.as_bytes().to_vec(),
            rows: None,
        }
    }

    #[test]
    fn a_csv_row_reads_as_its_wire_object() {
        let reader = reader(
            "prediction_id,timestamp,latency_seconds,prediction,probability.a,probability.b,segment.region,amount,country,flag",
            Kind::Predictions,
        );
        let parsed = reader.parse_predictions_ok(&chunk(
            "p1,2026-11-01T00:00:00Z,0.5,a,0.75,0.25,eu,12.5,DE,true\np2,1793491200,,b,,,,,,\n",
        ));
        assert!(parsed.problems.is_empty(), "{:?}", parsed.problems);
        let (line, event) = &parsed.events[0];
        assert_eq!(*line, 2);
        assert_eq!(event.model, "m");
        assert_eq!(event.confidence, Some(0.75));
        assert_eq!(event.segments, vec![("region".to_owned(), "eu".to_owned())]);
        assert_eq!(event.features.len(), 3);
        assert_eq!(parsed.events[1].1.timestamp_ms, 1_793_491_200_000);
        assert!(parsed.events[1].1.features.is_empty());
    }

    #[test]
    fn a_bad_cell_names_its_column_and_line() {
        let reader = reader("prediction_id,latency_seconds,amount", Kind::Predictions);
        let parsed = reader.parse_predictions_ok(&chunk("p1,0.1,3\np2,-1,3\np3,0.1,\"x\ny\"\np4,abc,1\n"));
        assert_eq!(parsed.events.len(), 2, "{:?}", parsed.problems);
        assert_eq!(parsed.problems.len(), 2);
        assert_eq!(parsed.problems[0].line, 3);
        assert_eq!(parsed.problems[0].field.as_deref(), Some("latency_seconds"));
        assert_eq!(parsed.problems[0].code, "invalid_value");
        // The quoted newline keeps p3 on lines 4-5: p4 is on line 6.
        assert_eq!(parsed.problems[1].line, 6);
        assert_eq!(parsed.problems[1].code, "invalid_type");
    }

    #[test]
    fn json_number_literals_are_recognized() {
        for good in ["0", "-0", "12", "1.5", "-3.25e-7", "1E+10", "83.897951653473612"] {
            assert!(is_json_number(good.as_bytes()), "{good}");
        }
        for bad in [
            "", "-", "01", ".5", "1.", "1e", "+1", "NaN", "inf", "1,5", " 1", "0x10",
        ] {
            assert!(!is_json_number(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn label_files_refuse_unknown_columns() {
        let error = Columns::from_header(b"prediction_id,actual,colour", Kind::Labels, Path::new("l.csv"));
        assert!(error.is_err());
        let reader = reader("prediction_id,actual,business.revenue", Kind::Labels);
        let parsed = reader.parse_labels_ok(&chunk("p1,1,2.5\n"));
        assert!(parsed.problems.is_empty(), "{:?}", parsed.problems);
        assert_eq!(parsed.events[0].1.business, vec![("revenue".to_owned(), 2.5)]);
    }
}
