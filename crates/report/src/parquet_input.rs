//! Parquet input: the schema mapped onto wire fields (the CSV column mapping,
//! [`Columns`]), row groups read whole and cut into slices of rows that the
//! workers decode in parallel, and each row handed to `core::wire::typed` as
//! typed values: no text, no JSON, the wire's own rules and errors.
//!
//! Each column chunk of a slice is decoded into a row-aligned vector of the
//! kind its role wants (numbers, booleans, or text in one arena), once per
//! column, and rows then borrow from those vectors. Text columns are read
//! through the `parquet` crate's Arrow reader, which decodes a slice of them
//! into one buffer and offsets, copied into the arena at once; everything
//! else (and a text column the Arrow reader refuses, such as invalid UTF-8,
//! which is read with replacement characters) through its low-level column
//! API, a value at a time.

use std::fmt;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arrow_array::types::ByteArrayType;
use arrow_array::types::Int32Type;
use arrow_array::{
    Array, BinaryArray, DictionaryArray, GenericByteArray, LargeBinaryArray, LargeStringArray, StringArray,
};
use arrow_buffer::ArrowNativeType;
use bytes::{Buf, Bytes};
use modelwatch_core::event::{LabelEvent, PredictionEvent};
use modelwatch_core::wire::typed::{self, TypedRow, Value};
use modelwatch_core::wire::{LabelField, PredictionField, RowError};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder, RowSelection, RowSelector,
};
use parquet::basic::{ConvertedType, LogicalType, TimeUnit, Type as PhysicalType};
use parquet::column::reader::{ColumnReader, ColumnReaderImpl};
use parquet::data_type::{ByteArray, DataType, FixedLenByteArray, Int96};
use parquet::errors::ParquetError;
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use parquet::file::reader::{ChunkReader, Length, RowGroupReader};
use parquet::file::serialized_reader::SerializedRowGroupReader;

use crate::ReportError;
use crate::columnar::{self, ColumnBatch, FastPlan, LabelBatch, LabelPlan, RowKind};
use crate::input::{Chunk, Columns, InputFile, Kind, Parsed, Role, RowProblem, RowReader};

/// Rows per slice: the unit of work of the decoding threads. Small enough
/// that the events of a slice waiting for their turn stay about 100 MB, large
/// enough that the pages a slice shares with its neighbours (and decompresses
/// again) are a small part of it: pyarrow's 1 MB pages hold 131,072 doubles.
/// Over 10M rows, 16Ki-row slices took 25 s, 64Ki 20.6 s, 128Ki 19.3 s and
/// 256Ki 20.7 s (and 1.45 GB).
pub const SLICE_ROWS: usize = 1 << 17;

/// What the report needs of a Parquet file: its footer and how each column
/// is read.
pub struct ParquetLayout {
    path: PathBuf,
    metadata: Arc<ParquetMetaData>,
    columns: Columns,
    plans: Vec<ColumnPlan>,
    /// Rows before each row group (row numbers are counted in the file).
    first_rows: Vec<u64>,
    /// Rows per slice ([`SLICE_ROWS`]; the tests cut finer).
    slice_rows: usize,
    /// Which columns fill which part of a row's wire object, in column order.
    groups: Groups,
    /// The text columns (`BYTE_ARRAY` without a decimal scale), in column
    /// order, and the footer as the Arrow reader wants it (`None` when it
    /// cannot map the schema: every column is then read value by value).
    text_columns: Vec<usize>,
    arrow: Option<ArrowReaderMetadata>,
    /// `arrow` with the dictionary pages of the text columns that fall back
    /// to plain pages (ids) left out of the footer, for slices past a row
    /// group's first rows ([`decode_text_columns`]); `None` when no column
    /// has one.
    arrow_without_dictionaries: Option<ArrowReaderMetadata>,
}

/// Column indices by the part of the wire object they fill.
#[derive(Debug, Default)]
struct Groups {
    prediction_scalars: Vec<(usize, PredictionField)>,
    label_scalars: Vec<(usize, LabelField)>,
    probabilities: Vec<usize>,
    segments: Vec<usize>,
    features: Vec<usize>,
    business: Vec<usize>,
}

impl Groups {
    fn of(roles: &[Role]) -> Self {
        let mut groups = Groups::default();
        for (index, role) in roles.iter().enumerate() {
            if let Some(field) = prediction_field(role) {
                groups.prediction_scalars.push((index, field));
            }
            if let Some(field) = label_field(role) {
                groups.label_scalars.push((index, field));
            }
            match role {
                Role::Probability(_) => groups.probabilities.push(index),
                Role::Segment(_) => groups.segments.push(index),
                Role::Feature(_) => groups.features.push(index),
                Role::Business(_) => groups.business.push(index),
                _ => {}
            }
        }
        groups
    }
}

impl fmt::Debug for ParquetLayout {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("ParquetLayout")
            .field("columns", &self.columns)
            .field("row_groups", &self.first_rows.len())
            .finish()
    }
}

/// How one leaf column is decoded.
#[derive(Debug, Clone, Copy)]
struct ColumnPlan {
    /// Whether the role reads text (ids, names, classes): numbers and booleans
    /// are then written as text, as a CSV cell would read.
    as_text: bool,
    decode: Decode,
}

/// The physical type with what its logical type says about the value.
#[derive(Debug, Clone, Copy)]
enum Decode {
    Bool,
    Int32 {
        unsigned: bool,
        scale: Option<i32>,
        days: bool,
    },
    Int64 {
        unsigned: bool,
        scale: Option<i32>,
        per_second: Option<f64>,
    },
    Int96,
    Float,
    Double,
    Bytes {
        scale: Option<i32>,
    },
    Fixed {
        scale: Option<i32>,
        uuid: bool,
    },
}

impl ParquetLayout {
    /// Reads the footer of `file` and maps its columns for a `kind` file.
    pub fn open(file: &InputFile, kind: Kind) -> Result<Self, ReportError> {
        let input_error = |message: String| ReportError::Input {
            path: file.path.clone(),
            message,
        };
        let handle = File::open(&file.path).map_err(|error| file.io_error(&error))?;
        let metadata = ParquetMetaDataReader::new()
            .parse_and_finish(&handle)
            .map_err(|error| input_error(format!("unreadable Parquet file: {error}")))?;
        let schema = metadata.file_metadata().schema_descr();
        let mut names = Vec::with_capacity(schema.num_columns());
        let mut plans = Vec::with_capacity(schema.num_columns());
        let mut roles_names = Vec::with_capacity(schema.num_columns());
        for column in schema.columns() {
            let name = column.path().string();
            if column.path().parts().len() > 1 || column.max_rep_level() > 0 {
                return Err(input_error(format!(
                    "the column {name:?} is nested or repeated: only flat columns are read"
                )));
            }
            roles_names.push(name.clone());
            names.push((name, column.clone()));
        }
        let columns = Columns::from_names(
            roles_names.iter().map(String::as_str),
            kind,
            &file.path,
            "Parquet schema",
        )?;
        for ((name, column), role) in names.iter().zip(&columns.roles) {
            let as_text = matches!(
                role,
                Role::Text(_) | Role::PredictedClass | Role::Actual | Role::Segment(_)
            );
            let decode = decode_of(column).ok_or_else(|| {
                input_error(format!(
                    "the column {name:?} has a type that is not read ({}{})",
                    column.physical_type(),
                    column
                        .logical_type_ref()
                        .map(|logical| format!(", {logical:?}"))
                        .unwrap_or_default()
                ))
            })?;
            plans.push(ColumnPlan { as_text, decode });
        }
        let mut first_rows = Vec::with_capacity(metadata.num_row_groups());
        let mut rows = 0u64;
        for row_group in metadata.row_groups() {
            first_rows.push(rows);
            rows += row_group.num_rows().max(0) as u64;
        }
        let text_columns: Vec<usize> = text_columns_of(&plans).collect();
        let metadata = Arc::new(metadata);
        // The Parquet schema alone says how text reads (an embedded Arrow
        // schema could ask for dictionaries or views), except that a name
        // column (model, version, class, segment) dictionary-encoded in every
        // page of the file is read as a dictionary: its rows are then coded
        // against its few distinct names rather than each written out.
        let arrow = ArrowReaderMetadata::try_new(
            Arc::clone(&metadata),
            ArrowReaderOptions::new().with_skip_arrow_metadata(true),
        )
        .ok()
        .map(|arrow| {
            let coded: Vec<usize> = text_columns_of(&plans)
                .filter(|index| is_name(&columns.roles[*index]))
                .filter(|index| {
                    metadata
                        .row_groups()
                        .iter()
                        .all(|row_group| dictionary_only(row_group.column(*index)))
                })
                .collect();
            if coded.is_empty() {
                return arrow;
            }
            let fields: Vec<arrow_schema::Field> = arrow
                .schema()
                .fields()
                .iter()
                .enumerate()
                .map(|(index, field)| {
                    let field = field.as_ref().clone();
                    if coded.contains(&index) {
                        let values = field.data_type().clone();
                        field.with_data_type(arrow_schema::DataType::Dictionary(
                            Box::new(arrow_schema::DataType::Int32),
                            Box::new(values),
                        ))
                    } else {
                        field
                    }
                })
                .collect();
            ArrowReaderMetadata::try_new(
                Arc::clone(&metadata),
                ArrowReaderOptions::new()
                    .with_skip_arrow_metadata(true)
                    .with_schema(Arc::new(arrow_schema::Schema::new(fields))),
            )
            .unwrap_or(arrow)
        });
        let arrow_without_dictionaries = arrow
            .as_ref()
            .and_then(|arrow| without_dictionaries(arrow, &text_columns));
        Ok(Self {
            groups: Groups::of(&columns.roles),
            path: file.path.clone(),
            metadata,
            text_columns,
            arrow,
            arrow_without_dictionaries,
            columns,
            plans,
            first_rows,
            slice_rows: SLICE_ROWS,
        })
    }

    pub fn has_model(&self) -> bool {
        self.columns.has_model()
    }

    pub fn columns(&self) -> &Columns {
        &self.columns
    }

    /// Rows in the file, as its footer says.
    pub fn rows(&self) -> u64 {
        self.first_rows.last().map_or(0, |first| {
            first
                + self
                    .metadata
                    .row_groups()
                    .last()
                    .map_or(0, |group| group.num_rows().max(0) as u64)
        })
    }
}

fn decode_of(column: &parquet::schema::types::ColumnDescriptor) -> Option<Decode> {
    let logical = column.logical_type_ref();
    let converted = column.converted_type();
    let scale = match (logical, converted) {
        (Some(LogicalType::Decimal(decimal)), _) => Some(decimal.scale),
        (None, ConvertedType::DECIMAL) => Some(column.type_scale()),
        _ => None,
    };
    let unsigned = matches!(logical, Some(LogicalType::Integer(int)) if !int.is_signed)
        || matches!(
            converted,
            ConvertedType::UINT_8 | ConvertedType::UINT_16 | ConvertedType::UINT_32 | ConvertedType::UINT_64
        );
    let unit_per_second = |unit: &TimeUnit| match unit {
        TimeUnit::MILLIS => 1e3,
        TimeUnit::MICROS => 1e6,
        TimeUnit::NANOS => 1e9,
    };
    Some(match column.physical_type() {
        PhysicalType::BOOLEAN => Decode::Bool,
        PhysicalType::INT32 => Decode::Int32 {
            unsigned,
            scale,
            days: matches!(logical, Some(LogicalType::Date)) || converted == ConvertedType::DATE,
        },
        PhysicalType::INT64 => Decode::Int64 {
            unsigned,
            scale,
            per_second: match (logical, converted) {
                (Some(LogicalType::Timestamp(timestamp)), _) => Some(unit_per_second(&timestamp.unit)),
                (Some(LogicalType::Time(time)), _) => Some(unit_per_second(&time.unit)),
                (None, ConvertedType::TIMESTAMP_MILLIS | ConvertedType::TIME_MILLIS) => Some(1e3),
                (None, ConvertedType::TIMESTAMP_MICROS | ConvertedType::TIME_MICROS) => Some(1e6),
                _ => None,
            },
        },
        PhysicalType::INT96 => Decode::Int96,
        PhysicalType::FLOAT => Decode::Float,
        PhysicalType::DOUBLE => Decode::Double,
        PhysicalType::BYTE_ARRAY => Decode::Bytes { scale },
        PhysicalType::FIXED_LEN_BYTE_ARRAY => {
            if matches!(logical, Some(LogicalType::Float16)) {
                return None;
            }
            Decode::Fixed {
                scale,
                uuid: matches!(logical, Some(LogicalType::Uuid)),
            }
        }
    })
}

/// The bytes of one row group, shared by the slices cut from it.
pub struct RowGroupData {
    row_group: usize,
    /// File offset of `bytes[0]`.
    start: u64,
    bytes: Bytes,
}

/// A row group buffer whose slices are all decoded, kept for the next row
/// group: a fresh buffer of tens of MB costs a page fault and a zeroed page
/// per 4 KiB as it is first written, and the allocator gives freed ones back
/// to the system.
static RECYCLED: Mutex<Option<Vec<u8>>> = Mutex::new(None);

/// A buffer for the next row group: the recycled one, or a new one. It is
/// read into without being zeroed first (`Read::read_to_end` writes into its
/// spare capacity).
fn recycled_buffer() -> Vec<u8> {
    let mut buffer = RECYCLED
        .lock()
        .expect("recycled buffer lock")
        .take()
        .unwrap_or_default();
    buffer.clear();
    buffer
}

impl Drop for RowGroupData {
    fn drop(&mut self) {
        // The last slice of the row group is done; its buffer is unshared
        // unless a decoder still holds a part of it.
        if let Ok(buffer) = std::mem::take(&mut self.bytes).try_into_mut() {
            let mut recycled = RECYCLED.lock().expect("recycled buffer lock");
            if recycled
                .as_ref()
                .is_none_or(|kept| kept.capacity() < buffer.capacity())
            {
                *recycled = Some(Vec::from(buffer));
            }
        }
    }
}

impl fmt::Debug for RowGroupData {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("RowGroupData")
            .field("row_group", &self.row_group)
            .field("start", &self.start)
            .field("len", &self.bytes.len())
            .finish()
    }
}

/// Rows `first_row..first_row + rows` of a row group.
#[derive(Debug, Clone)]
pub struct RowSlice {
    data: Arc<RowGroupData>,
    first_row: usize,
    rows: usize,
}

/// The column chunks of a row group, in memory, at their file offsets.
#[derive(Clone)]
struct InMemory(Arc<RowGroupData>);

impl InMemory {
    fn slice(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        let data = &self.0;
        let offset = start
            .checked_sub(data.start)
            .map(|offset| offset as usize)
            .filter(|offset| offset.saturating_add(length) <= data.bytes.len())
            .ok_or_else(|| {
                ParquetError::General(format!(
                    "a page at {start} (+{length}) lies outside its column chunk"
                ))
            })?;
        Ok(data.bytes.slice(offset..offset + length))
    }
}

impl Length for InMemory {
    fn len(&self) -> u64 {
        self.0.start + self.0.bytes.len() as u64
    }
}

impl ChunkReader for InMemory {
    type T = bytes::buf::Reader<Bytes>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        let end = self.len();
        let length = end.saturating_sub(start) as usize;
        Ok(self.slice(start, length)?.reader())
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        self.slice(start, length)
    }
}

/// Reads each row group of `file` whole (one read: the progress bar advances
/// by row group) and hands it on in slices of [`SLICE_ROWS`] rows.
pub fn read_row_groups(
    file: &InputFile,
    layout: &ParquetLayout,
    index: usize,
    mut on_read: impl FnMut(u64) + Send + 'static,
    mut emit: impl FnMut(Chunk) -> bool,
) -> Result<(), ReportError> {
    let handle = File::open(&file.path).map_err(|error| file.io_error(&error))?;
    let byte_range = |metadata: &parquet::file::metadata::RowGroupMetaData| {
        metadata
            .columns()
            .iter()
            .map(|column| {
                let (start, length) = column.byte_range();
                (start, start + length)
            })
            .fold((u64::MAX, 0), |(low, high), (start, end)| {
                (low.min(start), high.max(end))
            })
    };
    // Every buffer is made large enough for the largest row group, so that a
    // recycled one never grows (into fresh memory) for a slightly larger one.
    let largest = layout
        .metadata
        .row_groups()
        .iter()
        .map(|metadata| {
            let (start, end) = byte_range(metadata);
            end.saturating_sub(start)
        })
        .max()
        .unwrap_or(0);
    for (row_group, metadata) in layout.metadata.row_groups().iter().enumerate() {
        let rows = metadata.num_rows().max(0) as usize;
        if rows == 0 {
            continue;
        }
        let (start, end) = byte_range(metadata);
        let length = end.saturating_sub(start);
        let mut bytes = recycled_buffer();
        bytes.reserve_exact(largest.max(length) as usize);
        (&handle)
            .seek(SeekFrom::Start(start))
            .and_then(|_| (&handle).take(length).read_to_end(&mut bytes))
            .map_err(|error| file.io_error(&error))?;
        if bytes.len() as u64 != length {
            return Err(file.io_error(&std::io::Error::from(std::io::ErrorKind::UnexpectedEof)));
        }
        on_read(bytes.len() as u64);
        let data = Arc::new(RowGroupData {
            row_group,
            start,
            bytes: Bytes::from(bytes),
        });
        for first_row in (0..rows).step_by(layout.slice_rows) {
            let chunk = Chunk {
                file: index,
                first_line: layout.first_rows[row_group] + first_row as u64 + 1,
                bytes: Vec::new(),
                rows: Some(RowSlice {
                    data: Arc::clone(&data),
                    first_row,
                    rows: layout.slice_rows.min(rows - first_row),
                }),
            };
            if !emit(chunk) {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// The values of one column over a slice, one per row.
#[derive(Debug, Default)]
pub struct ColumnCells {
    pub(crate) kind: CellKind,
    pub(crate) numbers: Vec<f64>,
    flags: Vec<bool>,
    text: String,
    /// End of each row's text in `text`.
    text_ends: Vec<u32>,
    /// A text column of few distinct values (integers read as text: the
    /// classes of a model), coded: each row's index into `dictionary`, and
    /// `text` and `text_ends` empty. Readers then look each distinct text up
    /// once, not each row's.
    codes: Vec<u16>,
    dictionary: Vec<String>,
    /// Per row, whether it has a value; empty when every row has one.
    pub(crate) present: Vec<bool>,
}

/// Most distinct values of a coded text column in one slice; past them the
/// column's text is kept row by row.
const MAX_CODES: usize = 64;

#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub enum CellKind {
    #[default]
    Numbers,
    Flags,
    Text,
}

impl ColumnCells {
    pub(crate) fn is_present(&self, row: usize) -> bool {
        self.present.is_empty() || self.present[row]
    }

    /// The text of a row of a text column, `None` for a null.
    pub(crate) fn text(&self, row: usize) -> Option<&str> {
        if !self.is_present(row) {
            return None;
        }
        if !self.dictionary.is_empty() {
            return Some(&self.dictionary[usize::from(self.codes[row])]);
        }
        let start = if row == 0 {
            0
        } else {
            self.text_ends[row - 1] as usize
        };
        Some(&self.text[start..self.text_ends[row] as usize])
    }

    /// The number of a row of a numbers column, `None` for a null.
    pub(crate) fn number(&self, row: usize) -> Option<f64> {
        self.is_present(row).then(|| self.numbers[row])
    }

    fn value(&self, row: usize) -> Value<'_> {
        if !self.is_present(row) {
            return Value::Null;
        }
        match self.kind {
            CellKind::Numbers => Value::Number(self.numbers[row]),
            CellKind::Flags => Value::Bool(self.flags[row]),
            CellKind::Text => Value::Text(self.text(row).expect("a present row")),
        }
    }

    /// A coded text column's distinct texts and each row's index into them
    /// (a null row's index means nothing); `None` for any other column.
    pub(crate) fn coded(&self) -> Option<(&[String], &[u16])> {
        (!self.dictionary.is_empty()).then_some((&self.dictionary, &self.codes))
    }

    fn clear(&mut self, kind: CellKind) {
        self.kind = kind;
        self.numbers.clear();
        self.flags.clear();
        self.text.clear();
        self.text_ends.clear();
        self.codes.clear();
        self.dictionary.clear();
        self.present.clear();
    }

    /// Integers read as text (a class column): coded while they have few
    /// distinct values, else written out row by row.
    fn fill_integer_text(&mut self, values: impl Iterator<Item = i128> + Clone) {
        self.clear(CellKind::Text);
        let mut keys: Vec<i128> = Vec::new();
        let mut last: Option<(i128, u16)> = None;
        for value in values.clone() {
            let code = match last {
                Some((key, code)) if key == value => code,
                _ => {
                    let code = match keys.iter().position(|key| *key == value) {
                        Some(position) => position,
                        None if keys.len() < MAX_CODES => {
                            keys.push(value);
                            keys.len() - 1
                        }
                        None => {
                            self.codes.clear();
                            for value in values {
                                self.push_integer(value, None, true);
                            }
                            return;
                        }
                    } as u16;
                    last = Some((value, code));
                    code
                }
            };
            self.codes.push(code);
        }
        // No values (every row null) leave nothing to code.
        let mut buffer = itoa::Buffer::new();
        self.dictionary = keys
            .iter()
            .map(|key| integer_text(&mut buffer, *key).to_owned())
            .collect();
    }

    fn push_text(&mut self, text: &str) {
        self.text.push_str(text);
        self.text_ends.push(self.text.len() as u32);
    }

    fn push_bytes_as_text(&mut self, bytes: &[u8]) {
        match std::str::from_utf8(bytes) {
            Ok(text) => self.push_text(text),
            // Invalid UTF-8 is replaced (U+FFFD), as a CSV cell is read.
            Err(_) => self.push_text(&String::from_utf8_lossy(bytes)),
        }
    }

    fn push_number(&mut self, number: f64, as_text: bool) {
        if as_text {
            self.push_text(&format_number(number));
        } else {
            self.numbers.push(number);
        }
    }

    fn push_integer(&mut self, integer: i128, scale: Option<i32>, as_text: bool) {
        match (scale, as_text) {
            (None, true) => self.push_text(integer_text(&mut itoa::Buffer::new(), integer)),
            (None, false) => self.numbers.push(integer as f64),
            (Some(scale), _) => self.push_number(integer as f64 / 10f64.powi(scale), as_text),
        }
    }

    fn push_flag(&mut self, flag: bool, as_text: bool) {
        if as_text {
            self.push_text(if flag { "true" } else { "false" });
        } else {
            self.flags.push(flag);
        }
    }

    /// Spreads the `values` non-null values over the rows whose definition
    /// level says they have one, so that every vector has one entry per row.
    fn spread(&mut self, levels: &[i16], max_level: i16) {
        if levels.iter().all(|level| *level == max_level) {
            return;
        }
        self.present.clear();
        self.present
            .extend(levels.iter().map(|level| *level == max_level));
        let rows = levels.len();
        match self.kind {
            CellKind::Numbers => spread_values(&mut self.numbers, &self.present, rows, 0.0),
            CellKind::Flags => spread_values(&mut self.flags, &self.present, rows, false),
            CellKind::Text if !self.dictionary.is_empty() => {
                spread_values(&mut self.codes, &self.present, rows, 0);
            }
            CellKind::Text => {
                let mut ends = Vec::with_capacity(rows);
                let mut values = self.text_ends.iter();
                let mut last = 0;
                for present in &self.present {
                    if *present {
                        last = *values.next().expect("one value per present row");
                    }
                    ends.push(last);
                }
                self.text_ends = ends;
            }
        }
    }
}

fn spread_values<T: Copy>(values: &mut Vec<T>, present: &[bool], rows: usize, filler: T) {
    let mut spread = Vec::with_capacity(rows);
    let mut packed = values.iter();
    for present in present {
        spread.push(if *present {
            *packed.next().expect("one value per present row")
        } else {
            filler
        });
    }
    *values = spread;
}

/// An integer's decimal text (64-bit formatting when it fits: several times
/// faster than 128-bit).
fn integer_text(buffer: &mut itoa::Buffer, integer: i128) -> &str {
    match i64::try_from(integer) {
        Ok(integer) => buffer.format(integer),
        Err(_) => buffer.format(integer),
    }
}

/// Integers without a fraction (`1`, not `1.0`), other numbers in their
/// shortest form: how a float column reads as a class, like `Actual::class`.
fn format_number(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else {
        format!("{value}")
    }
}

/// Reusable decoding buffers.
#[derive(Default)]
struct Scratch {
    levels: Vec<i16>,
    bools: Vec<bool>,
    ints32: Vec<i32>,
    ints64: Vec<i64>,
    ints96: Vec<Int96>,
    floats: Vec<f32>,
    doubles: Vec<f64>,
    bytes: Vec<ByteArray>,
    fixed: Vec<FixedLenByteArray>,
}

/// Decoding buffers kept by each thread from slice to slice: reusing them
/// spares the allocator (and the kernel, which zeroes every fresh page) tens
/// of MB per slice.
#[derive(Default)]
pub struct Buffers {
    scratch: Scratch,
    pub(crate) cells: Vec<ColumnCells>,
}

impl fmt::Debug for Buffers {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "Buffers({} columns)", self.cells.len())
    }
}

/// Gives a batch's buffers back to the thread that decodes the next slice.
pub fn give_back(buffers: Buffers) {
    BUFFERS.with(|kept| kept.replace(buffers));
}

thread_local! {
    static BUFFERS: std::cell::RefCell<Buffers> = std::cell::RefCell::default();
}

/// Decodes every column of `slice` into one `ColumnCells` per column
/// (`cells`, reused).
fn decode_slice(
    layout: &ParquetLayout,
    slice: &RowSlice,
    path: &Path,
    buffers: &mut Buffers,
) -> Result<(), ReportError> {
    let unreadable = |error: ParquetError| ReportError::Input {
        path: path.to_owned(),
        message: format!("unreadable Parquet data: {error}"),
    };
    let row_group_metadata = layout.metadata.row_group(slice.data.row_group);
    let reader = SerializedRowGroupReader::new(
        Arc::new(InMemory(Arc::clone(&slice.data))),
        row_group_metadata,
        None,
        Arc::new(parquet::file::properties::ReaderProperties::builder().build()),
    )
    .map_err(unreadable)?;
    let schema = layout.metadata.file_metadata().schema_descr();
    let Buffers { scratch, cells } = buffers;
    cells.resize_with(layout.plans.len(), ColumnCells::default);
    let text_done = decode_text_columns(layout, slice, cells);
    for (index, (plan, column)) in layout.plans.iter().zip(cells.iter_mut()).enumerate() {
        if text_done && layout.text_columns.binary_search(&index).is_ok() {
            continue;
        }
        let descriptor = schema.column(index);
        let max_level = descriptor.max_def_level();
        // Past the first rows, a column chunk's data pages are usually plain:
        // the writer's dictionary filled up and it fell back. Each slice
        // would decompress and decode the dictionary page again (pyarrow's
        // hold up to 1 MB) for nothing, so it is dropped, and the column read
        // again with it if one of the slice's pages turns out to need it.
        let mut decoded = false;
        if slice.first_row > 0 && may_skip_dictionary(row_group_metadata.column(index)) {
            let pages = WithoutDictionary::new(reader.get_column_page_reader(index).map_err(unreadable)?);
            let column_reader = parquet::column::reader::get_column_reader(descriptor, Box::new(pages));
            match decode_column(column_reader, plan, slice, max_level, scratch, column) {
                Ok(()) => decoded = true,
                Err(error) if WithoutDictionary::needed_it(&error) => {}
                Err(error) => return Err(unreadable(error)),
            }
        }
        if !decoded {
            let column_reader = reader.get_column_reader(index).map_err(unreadable)?;
            decode_column(column_reader, plan, slice, max_level, scratch, column).map_err(unreadable)?;
        }
        if max_level > 0 {
            column.spread(&scratch.levels, max_level);
        }
    }
    Ok(())
}

/// `arrow`'s footer without the dictionary pages that [`may_skip_dictionary`]
/// allows to leave out, of the text columns not read as dictionaries; `None`
/// when there are none.
fn without_dictionaries(arrow: &ArrowReaderMetadata, text_columns: &[usize]) -> Option<ArrowReaderMetadata> {
    let metadata = arrow.metadata();
    let fields = arrow.schema().fields();
    let skipped = |index: usize, column: &parquet::file::metadata::ColumnChunkMetaData| {
        text_columns.contains(&index)
            && !matches!(fields[index].data_type(), arrow_schema::DataType::Dictionary(..))
            && may_skip_dictionary(column)
            && column
                .dictionary_page_offset()
                .is_some_and(|offset| offset < column.data_page_offset())
    };
    let mut any = false;
    let row_groups = metadata
        .row_groups()
        .iter()
        .map(|row_group| {
            let columns = row_group
                .columns()
                .iter()
                .enumerate()
                .map(|(index, column)| {
                    if !skipped(index, column) {
                        return Ok(column.clone());
                    }
                    any = true;
                    let dictionary =
                        column.data_page_offset() - column.dictionary_page_offset().unwrap_or_default();
                    column
                        .clone()
                        .into_builder()
                        .set_dictionary_page_offset(None)
                        .set_total_compressed_size(column.compressed_size() - dictionary)
                        .build()
                })
                .collect::<parquet::errors::Result<Vec<_>>>()?;
            row_group
                .clone()
                .into_builder()
                .set_column_metadata(columns)
                .build()
        })
        .collect::<parquet::errors::Result<Vec<_>>>()
        .ok()?;
    if !any {
        return None;
    }
    let stripped = ParquetMetaData::new(metadata.file_metadata().clone(), row_groups);
    ArrowReaderMetadata::try_new(
        Arc::new(stripped),
        ArrowReaderOptions::new()
            .with_skip_arrow_metadata(true)
            .with_schema(Arc::clone(arrow.schema())),
    )
    .ok()
}

/// The text columns: `BYTE_ARRAY` without a decimal scale.
fn text_columns_of(plans: &[ColumnPlan]) -> impl Iterator<Item = usize> + '_ {
    plans
        .iter()
        .enumerate()
        .filter(|(_, plan)| matches!(plan.decode, Decode::Bytes { scale: None }))
        .map(|(index, _)| index)
}

/// Whether a column holds names, of which a file usually has few.
fn is_name(role: &Role) -> bool {
    matches!(
        role,
        Role::Text("model" | "version" | "status" | "error_type")
            | Role::PredictedClass
            | Role::Actual
            | Role::Segment(_)
    )
}

/// Whether the footer says that every data page of the chunk is
/// dictionary-encoded.
fn dictionary_only(column: &parquet::file::metadata::ColumnChunkMetaData) -> bool {
    use parquet::basic::Encoding;
    column.dictionary_page_offset().is_some()
        && column.page_encoding_stats_mask().is_some_and(|mask| {
            mask.encodings()
                .all(|encoding| matches!(encoding, Encoding::PLAIN_DICTIONARY | Encoding::RLE_DICTIONARY))
        })
}

/// Whether a slice may read the chunk without its dictionary page: it has
/// one, and its footer does not say that every data page is
/// dictionary-encoded (a low-cardinality column, which would only be read
/// twice).
fn may_skip_dictionary(column: &parquet::file::metadata::ColumnChunkMetaData) -> bool {
    column.dictionary_page_offset().is_some() && !dictionary_only(column)
}

/// A column chunk's pages without its dictionary page, which is skipped
/// unread. A data page that needs the dictionary is refused with an error
/// that [`WithoutDictionary::needed_it`] recognizes (the column reader
/// itself would panic), before the reader decodes anything of it; pages that
/// are only skipped whole never need it.
struct WithoutDictionary {
    pages: Box<dyn parquet::column::page::PageReader>,
    /// Whether the first page was looked at (and skipped if a dictionary).
    started: bool,
    dropped: bool,
}

#[derive(Debug)]
struct NeedsDictionary;

impl fmt::Display for NeedsDictionary {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a dictionary-encoded page, read without its dictionary")
    }
}

impl std::error::Error for NeedsDictionary {}

impl WithoutDictionary {
    fn new(pages: Box<dyn parquet::column::page::PageReader>) -> Self {
        Self {
            pages,
            started: false,
            dropped: false,
        }
    }

    fn needed_it(error: &ParquetError) -> bool {
        matches!(error, ParquetError::External(inner) if inner.is::<NeedsDictionary>())
    }

    fn start(&mut self) -> parquet::errors::Result<()> {
        if !self.started {
            self.started = true;
            if self.pages.peek_next_page()?.is_some_and(|page| page.is_dict) {
                self.pages.skip_next_page()?;
                self.dropped = true;
            }
        }
        Ok(())
    }
}

impl Iterator for WithoutDictionary {
    type Item = parquet::errors::Result<parquet::column::page::Page>;

    fn next(&mut self) -> Option<Self::Item> {
        use parquet::column::page::PageReader;
        self.get_next_page().transpose()
    }
}

impl parquet::column::page::PageReader for WithoutDictionary {
    fn get_next_page(&mut self) -> parquet::errors::Result<Option<parquet::column::page::Page>> {
        use parquet::basic::Encoding;
        self.start()?;
        let page = self.pages.get_next_page()?;
        if self.dropped
            && let Some(page) = &page
            && matches!(
                page.encoding(),
                Encoding::PLAIN_DICTIONARY | Encoding::RLE_DICTIONARY
            )
        {
            return Err(ParquetError::External(Box::new(NeedsDictionary)));
        }
        Ok(page)
    }

    fn peek_next_page(&mut self) -> parquet::errors::Result<Option<parquet::column::page::PageMetadata>> {
        self.start()?;
        self.pages.peek_next_page()
    }

    fn skip_next_page(&mut self) -> parquet::errors::Result<()> {
        self.start()?;
        self.pages.skip_next_page()
    }

    fn at_record_boundary(&mut self) -> parquet::errors::Result<bool> {
        self.pages.at_record_boundary()
    }
}

/// Decodes the slice's text columns through the Arrow reader, all at once.
/// `false` when there are none, or when the reader refused them (a text
/// column that is not UTF-8, a corrupt page): they are then read value by
/// value, which replaces invalid UTF-8 and reports corrupt pages.
fn decode_text_columns(layout: &ParquetLayout, slice: &RowSlice, cells: &mut [ColumnCells]) -> bool {
    let Some(arrow) = &layout.arrow else {
        return false;
    };
    if layout.text_columns.is_empty() {
        return false;
    }
    let schema = layout.metadata.file_metadata().schema_descr();
    let mut selectors = Vec::with_capacity(2);
    if slice.first_row > 0 {
        selectors.push(RowSelector::skip(slice.first_row));
    }
    selectors.push(RowSelector::select(slice.rows));
    let read = |arrow: &ArrowReaderMetadata| {
        let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(
            InMemory(Arc::clone(&slice.data)),
            arrow.clone(),
        )
        .with_row_groups(vec![slice.data.row_group])
        .with_projection(ProjectionMask::leaves(
            schema,
            layout.text_columns.iter().copied(),
        ))
        .with_row_selection(RowSelection::from(selectors.clone()))
        .with_batch_size(slice.rows)
        .build();
        reader
            .ok()
            .and_then(|mut reader| reader.next())
            .and_then(Result::ok)
    };
    // Past the first rows, as for the other columns, a text column's
    // dictionary page is left out (pyarrow's hold up to 1 MB of ids, which
    // each slice would decompress and decode again), and the slice read again
    // with it if one of its pages needs it.
    let without_dictionaries = layout
        .arrow_without_dictionaries
        .as_ref()
        .filter(|_| slice.first_row > 0)
        .and_then(read);
    let Some(batch) = without_dictionaries.or_else(|| read(arrow)) else {
        return false;
    };
    if batch.num_rows() != slice.rows || batch.num_columns() != layout.text_columns.len() {
        return false;
    }
    layout
        .text_columns
        .iter()
        .zip(batch.columns())
        .all(|(column, array)| fill_text(&mut cells[*column], array.as_ref()))
}

/// Copies an Arrow string or binary array into a text column's arena. `false`
/// (the cells untouched) when it is not valid UTF-8 as a whole, or a value
/// boundary falls inside a character. A slice whose text columns are then
/// read value by value has paid for the Arrow attempt too.
fn fill_text(cells: &mut ColumnCells, array: &dyn Array) -> bool {
    let any = array.as_any();
    if let Some(array) = any.downcast_ref::<DictionaryArray<Int32Type>>() {
        fill_dictionary(cells, array)
    } else if let Some(array) = any.downcast_ref::<StringArray>() {
        fill_bytes(cells, array)
    } else if let Some(array) = any.downcast_ref::<BinaryArray>() {
        fill_bytes(cells, array)
    } else if let Some(array) = any.downcast_ref::<LargeStringArray>() {
        fill_bytes(cells, array)
    } else if let Some(array) = any.downcast_ref::<LargeBinaryArray>() {
        fill_bytes(cells, array)
    } else {
        false
    }
}

/// A name column read as a dictionary: coded against its distinct names
/// when they are few, else written out row by row. `false` (the cells
/// untouched) when a row's name is not valid UTF-8, as [`fill_text`] says (a
/// name that no row of the slice uses may be anything).
fn fill_dictionary(cells: &mut ColumnCells, array: &DictionaryArray<Int32Type>) -> bool {
    let Some(names) = dictionary_names(array.values().as_ref()) else {
        return false;
    };
    let keys = array.keys();
    let name_of = |row: usize| -> Option<&str> {
        let key = usize::try_from(keys.value(row)).ok()?;
        names.get(key)?.as_deref()
    };
    let present = |row: usize| array.is_valid(row);
    if (0..keys.len()).any(|row| present(row) && name_of(row).is_none()) {
        return false;
    }
    cells.clear(CellKind::Text);
    if !names.is_empty() && names.len() <= MAX_CODES {
        cells.dictionary = names
            .iter()
            .map(|name| name.clone().unwrap_or_default())
            .collect();
        cells
            .codes
            .extend(keys.values().iter().map(|key| u16::try_from(*key).unwrap_or(0)));
    } else {
        for row in 0..keys.len() {
            cells.push_text(if present(row) {
                name_of(row).unwrap_or("")
            } else {
                ""
            });
        }
    }
    if array.null_count() > 0 {
        cells.present.extend((0..keys.len()).map(present));
    }
    true
}

/// The values of a dictionary: each as text, `None` for a null or invalid
/// UTF-8; `None` for values that are not strings or bytes.
fn dictionary_names(array: &dyn Array) -> Option<Vec<Option<String>>> {
    fn names<T: ByteArrayType>(array: &GenericByteArray<T>) -> Vec<Option<String>>
    where
        T::Native: AsRef<[u8]>,
    {
        (0..array.len())
            .map(|index| {
                array
                    .is_valid(index)
                    .then(|| {
                        std::str::from_utf8(array.value(index).as_ref())
                            .ok()
                            .map(str::to_owned)
                    })
                    .flatten()
            })
            .collect()
    }
    let any = array.as_any();
    if let Some(array) = any.downcast_ref::<StringArray>() {
        Some(names(array))
    } else if let Some(array) = any.downcast_ref::<BinaryArray>() {
        Some(names(array))
    } else if let Some(array) = any.downcast_ref::<LargeStringArray>() {
        Some(names(array))
    } else {
        any.downcast_ref::<LargeBinaryArray>().map(names)
    }
}

fn fill_bytes<T: ByteArrayType>(cells: &mut ColumnCells, array: &GenericByteArray<T>) -> bool {
    let offsets = array.value_offsets();
    let (Some(first), Some(last)) = (offsets.first(), offsets.last()) else {
        return false;
    };
    let (start, end) = (first.as_usize(), last.as_usize());
    let Some(bytes) = array.value_data().get(start..end) else {
        return false;
    };
    let Ok(text) = std::str::from_utf8(bytes) else {
        return false;
    };
    if u32::try_from(text.len()).is_err()
        || !offsets
            .iter()
            .all(|offset| text.is_char_boundary(offset.as_usize() - start))
    {
        return false;
    }
    cells.clear(CellKind::Text);
    cells.text.push_str(text);
    cells.text_ends.extend(
        offsets[1..]
            .iter()
            .map(|offset| (offset.as_usize() - start) as u32),
    );
    if let Some(nulls) = array.nulls().filter(|nulls| nulls.null_count() > 0) {
        cells.present.extend(nulls.iter());
    }
    true
}

/// Reads the slice's rows of one column (skipping the rows before it) into
/// `values`, and their definition levels into `levels` when the column is
/// nullable.
fn read_rows<T: DataType>(
    mut reader: ColumnReaderImpl<T>,
    slice: &RowSlice,
    nullable: bool,
    levels: &mut Vec<i16>,
    values: &mut Vec<T::T>,
) -> parquet::errors::Result<()> {
    levels.clear();
    values.clear();
    if slice.first_row > 0 {
        let skipped = reader.skip_records(slice.first_row)?;
        if skipped != slice.first_row {
            return Err(ParquetError::General(
                "a column chunk has fewer rows than its row group".to_owned(),
            ));
        }
    }
    let mut read = 0;
    while read < slice.rows {
        let (records, _, _) =
            reader.read_records(slice.rows - read, nullable.then_some(&mut *levels), None, values)?;
        if records == 0 {
            return Err(ParquetError::General(
                "a column chunk has fewer rows than its row group".to_owned(),
            ));
        }
        read += records;
    }
    Ok(())
}

fn decode_column(
    reader: ColumnReader,
    plan: &ColumnPlan,
    slice: &RowSlice,
    max_level: i16,
    scratch: &mut Scratch,
    cells: &mut ColumnCells,
) -> parquet::errors::Result<()> {
    let nullable = max_level > 0;
    let as_text = plan.as_text;
    let numbers_or_text = if as_text {
        CellKind::Text
    } else {
        CellKind::Numbers
    };
    let levels = &mut scratch.levels;
    match (reader, plan.decode) {
        (ColumnReader::BoolColumnReader(reader), _) => {
            read_rows(reader, slice, nullable, levels, &mut scratch.bools)?;
            cells.clear(if as_text { CellKind::Text } else { CellKind::Flags });
            for flag in &scratch.bools {
                cells.push_flag(*flag, as_text);
            }
        }
        (
            ColumnReader::Int32ColumnReader(reader),
            Decode::Int32 {
                unsigned,
                scale,
                days,
            },
        ) => {
            read_rows(reader, slice, nullable, levels, &mut scratch.ints32)?;
            if as_text && scale.is_none() && !days {
                cells.fill_integer_text(scratch.ints32.iter().map(|value| widen_int32(*value, unsigned)));
                return Ok(());
            }
            cells.clear(numbers_or_text);
            for value in &scratch.ints32 {
                let integer = widen_int32(*value, unsigned);
                if days {
                    cells.push_number(integer as f64 * 86_400.0, as_text);
                } else {
                    cells.push_integer(integer, scale, as_text);
                }
            }
        }
        (
            ColumnReader::Int64ColumnReader(reader),
            Decode::Int64 {
                unsigned,
                scale,
                per_second,
            },
        ) => {
            read_rows(reader, slice, nullable, levels, &mut scratch.ints64)?;
            if as_text && scale.is_none() && per_second.is_none() {
                cells.fill_integer_text(scratch.ints64.iter().map(|value| widen_int64(*value, unsigned)));
                return Ok(());
            }
            cells.clear(numbers_or_text);
            for value in &scratch.ints64 {
                match per_second {
                    // Unix seconds: what a number reads as in `timestamp`.
                    Some(per_second) => cells.push_number(*value as f64 / per_second, as_text),
                    None => cells.push_integer(widen_int64(*value, unsigned), scale, as_text),
                }
            }
        }
        (ColumnReader::Int96ColumnReader(reader), _) => {
            read_rows(reader, slice, nullable, levels, &mut scratch.ints96)?;
            cells.clear(numbers_or_text);
            for value in &scratch.ints96 {
                cells.push_number(value.to_nanos() as f64 / 1e9, as_text);
            }
        }
        (ColumnReader::FloatColumnReader(reader), _) => {
            read_rows(reader, slice, nullable, levels, &mut scratch.floats)?;
            cells.clear(numbers_or_text);
            for value in &scratch.floats {
                cells.push_number(f64::from(*value), as_text);
            }
        }
        (ColumnReader::DoubleColumnReader(reader), _) => {
            cells.clear(numbers_or_text);
            if as_text {
                read_rows(reader, slice, nullable, levels, &mut scratch.doubles)?;
                for value in &scratch.doubles {
                    cells.push_number(*value, true);
                }
            } else {
                // Straight into the cells: no copy.
                read_rows(reader, slice, nullable, levels, &mut cells.numbers)?;
            }
        }
        (ColumnReader::ByteArrayColumnReader(reader), Decode::Bytes { scale }) => {
            read_rows(reader, slice, nullable, levels, &mut scratch.bytes)?;
            match scale {
                Some(scale) => {
                    cells.clear(numbers_or_text);
                    for value in &scratch.bytes {
                        cells.push_integer(big_endian_integer(value.data()), Some(scale), as_text);
                    }
                }
                None => {
                    cells.clear(CellKind::Text);
                    for value in &scratch.bytes {
                        cells.push_bytes_as_text(value.data());
                    }
                }
            }
        }
        (ColumnReader::FixedLenByteArrayColumnReader(reader), Decode::Fixed { scale, uuid }) => {
            read_rows(reader, slice, nullable, levels, &mut scratch.fixed)?;
            match (scale, uuid) {
                (Some(scale), _) => {
                    cells.clear(numbers_or_text);
                    for value in &scratch.fixed {
                        cells.push_integer(big_endian_integer(value.data()), Some(scale), as_text);
                    }
                }
                (None, true) => {
                    cells.clear(CellKind::Text);
                    for value in &scratch.fixed {
                        cells.push_text(&format_uuid(value.data()));
                    }
                }
                (None, false) => {
                    cells.clear(CellKind::Text);
                    for value in &scratch.fixed {
                        cells.push_bytes_as_text(value.data());
                    }
                }
            }
        }
        (_, decode) => {
            return Err(ParquetError::General(format!(
                "a column's reader does not match its type ({decode:?})"
            )));
        }
    }
    Ok(())
}

/// An INT32 value as its logical type reads it (`unsigned`: UINT_32).
fn widen_int32(value: i32, unsigned: bool) -> i128 {
    if unsigned {
        i128::from(value as u32)
    } else {
        i128::from(value)
    }
}

/// An INT64 value as its logical type reads it (`unsigned`: UINT_64).
fn widen_int64(value: i64, unsigned: bool) -> i128 {
    if unsigned {
        i128::from(value as u64)
    } else {
        i128::from(value)
    }
}

/// A two's complement big-endian integer (decimals), at most 16 bytes.
fn big_endian_integer(bytes: &[u8]) -> i128 {
    let bytes = &bytes[bytes.len().saturating_sub(16)..];
    let negative = bytes.first().is_some_and(|byte| byte & 0x80 != 0);
    let mut value: i128 = if negative { -1 } else { 0 };
    for byte in bytes {
        value = (value << 8) | i128::from(*byte);
    }
    value
}

fn format_uuid(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(36);
    for (index, byte) in bytes.iter().enumerate() {
        if matches!(index, 4 | 6 | 8 | 10) {
            text.push('-');
        }
        text.push_str(&format!("{byte:02x}"));
    }
    text
}

fn prediction_field(role: &Role) -> Option<PredictionField> {
    Some(match role {
        Role::Text("prediction_id") => PredictionField::PredictionId,
        Role::Text("model") => PredictionField::Model,
        Role::Text("version") => PredictionField::Version,
        Role::Text("status") => PredictionField::Status,
        Role::Text("error_type") => PredictionField::ErrorType,
        Role::Number("latency_seconds") => PredictionField::LatencySeconds,
        Role::Number("confidence") => PredictionField::Confidence,
        Role::Timestamp => PredictionField::Timestamp,
        Role::PredictedClass | Role::PredictedValue => PredictionField::Prediction,
        _ => return None,
    })
}

fn label_field(role: &Role) -> Option<LabelField> {
    Some(match role {
        Role::Text("prediction_id") => LabelField::PredictionId,
        Role::Actual => LabelField::Actual,
        Role::Timestamp => LabelField::Timestamp,
        _ => return None,
    })
}

/// Decodes a slice and validates each row with `validate`, as the CSV path
/// validates the wire object of each record.
fn parse_rows<E, F: Copy>(
    reader: &RowReader,
    layout: &ParquetLayout,
    chunk: &Chunk,
    fill: impl for<'a> Fn(&mut TypedRow<'a, F>, &'a [ColumnCells], usize, &'a ParquetLayout, Option<&'a str>),
    validate: impl Fn(&TypedRow<'_, F>, &RowReader) -> Result<E, RowError>,
) -> Result<Parsed<E>, ReportError> {
    let slice = chunk.rows.as_ref().expect("a Parquet chunk holds rows");
    let mut buffers = BUFFERS.with(|buffers| buffers.take());
    let parsed = validate_slice(reader, layout, chunk, slice, &mut buffers, fill, validate);
    BUFFERS.with(|kept| kept.replace(buffers));
    parsed
}

fn validate_slice<E, F: Copy>(
    reader: &RowReader,
    layout: &ParquetLayout,
    chunk: &Chunk,
    slice: &RowSlice,
    buffers: &mut Buffers,
    fill: impl for<'a> Fn(&mut TypedRow<'a, F>, &'a [ColumnCells], usize, &'a ParquetLayout, Option<&'a str>),
    validate: impl Fn(&TypedRow<'_, F>, &RowReader) -> Result<E, RowError>,
) -> Result<Parsed<E>, ReportError> {
    decode_slice(layout, slice, &layout.path, buffers)?;
    let cells = &buffers.cells[..layout.plans.len()];
    let mut parsed = Parsed {
        events: Vec::with_capacity(slice.rows),
        problems: Vec::new(),
    };
    let default_model = match layout.has_model() {
        true => None,
        false => reader.default_model.as_deref(),
    };
    let mut row = TypedRow::default();
    for index in 0..slice.rows {
        row.clear();
        fill(&mut row, cells, index, layout, default_model);
        let line = chunk.first_line + index as u64;
        match validate(&row, reader) {
            Ok(event) => parsed.events.push((line, event)),
            Err(error) => parsed.problems.push(RowProblem::from_wire(
                reader.file,
                line,
                error,
                Some(&layout.columns),
            )),
        }
    }
    Ok(parsed)
}

/// The events of a slice of a predictions file.
pub fn parse_predictions(
    reader: &RowReader,
    layout: &ParquetLayout,
    chunk: &Chunk,
) -> Result<Parsed<PredictionEvent>, ReportError> {
    parse_rows(reader, layout, chunk, fill_prediction, |row, reader| {
        typed::prediction_from_row(row, reader.now_ms, &reader.limits)
    })
}

/// A slice of a predictions file for the columnar path: decoded, and each
/// row tested (`columnar::test_rows`); rows that fail a test are read by
/// `core::wire::typed`, as [`parse_predictions`] reads every row.
pub fn parse_prediction_batch(
    reader: &RowReader,
    layout: &ParquetLayout,
    plan: &FastPlan,
    chunk: &Chunk,
) -> Result<ColumnBatch, ReportError> {
    let slice = chunk.rows.as_ref().expect("a Parquet chunk holds rows");
    let mut buffers = BUFFERS.with(|buffers| buffers.take());
    decode_slice(layout, slice, &layout.path, &mut buffers)?;
    let default_model = match layout.has_model() {
        true => None,
        false => reader.default_model.as_deref(),
    };
    let batch = columnar::test_rows(
        plan,
        buffers,
        slice.rows,
        chunk.first_line,
        default_model,
        reader.now_ms,
        &reader.limits,
        |cells, index, slow| {
            let mut row = TypedRow::default();
            fill_prediction(&mut row, cells, index, layout, default_model);
            let read = typed::prediction_from_row(&row, reader.now_ms, &reader.limits);
            slow_row(read, chunk.first_line + index as u64, reader, layout, slow)
        },
    );
    Ok(batch)
}

/// Keeps what the row path made of a row that failed a columnar test: its
/// event, or its problem.
fn slow_row<E>(
    read: Result<E, RowError>,
    line: u64,
    reader: &RowReader,
    layout: &ParquetLayout,
    slow: &mut Parsed<E>,
) -> RowKind {
    match read {
        Ok(event) => {
            slow.events.push((line, event));
            RowKind::Slow
        }
        Err(error) => {
            slow.problems.push(RowProblem::from_wire(
                reader.file,
                line,
                error,
                Some(&layout.columns),
            ));
            RowKind::Problem
        }
    }
}

/// A slice of a labels file for the columnar path (see
/// [`parse_prediction_batch`]).
pub fn parse_label_batch(
    reader: &RowReader,
    layout: &ParquetLayout,
    plan: &LabelPlan,
    chunk: &Chunk,
) -> Result<LabelBatch, ReportError> {
    let slice = chunk.rows.as_ref().expect("a Parquet chunk holds rows");
    let mut buffers = BUFFERS.with(|buffers| buffers.take());
    decode_slice(layout, slice, &layout.path, &mut buffers)?;
    let batch = columnar::test_labels(
        plan,
        buffers,
        slice.rows,
        reader.now_ms,
        &reader.limits,
        |cells, index, slow| {
            let mut row = TypedRow::default();
            fill_label(&mut row, cells, index, layout, None);
            let read = typed::label_from_row(&row, reader.now_ms, &reader.limits);
            slow_row(read, chunk.first_line + index as u64, reader, layout, slow)
        },
    );
    Ok(batch)
}

/// The events of a slice of a labels file.
pub fn parse_labels(
    reader: &RowReader,
    layout: &ParquetLayout,
    chunk: &Chunk,
) -> Result<Parsed<LabelEvent>, ReportError> {
    parse_rows(reader, layout, chunk, fill_label, |row, reader| {
        typed::label_from_row(row, reader.now_ms, &reader.limits)
    })
}

/// The wire object of one prediction row, in the CSV path's order: `model`
/// from `--model` first, the scalar columns in file order, then the
/// probabilities, segments and features objects. Null cells are left out,
/// as empty CSV cells are.
fn fill_prediction<'a>(
    row: &mut TypedRow<'a, PredictionField>,
    cells: &'a [ColumnCells],
    index: usize,
    layout: &'a ParquetLayout,
    default_model: Option<&'a str>,
) {
    if let Some(model) = default_model {
        row.scalar(PredictionField::Model, Value::Text(model));
    }
    let groups = &layout.groups;
    for (column, field) in &groups.prediction_scalars {
        let value = cells[*column].value(index);
        if value != Value::Null {
            row.scalar(*field, value);
        }
    }
    let entries = |columns: &'a [usize]| {
        columns.iter().filter_map(move |column| {
            let value = cells[*column].value(index);
            (value != Value::Null).then(|| (layout.columns.entry_name(*column), value))
        })
    };
    row.entries(PredictionField::Probabilities, entries(&groups.probabilities));
    row.entries(PredictionField::Segments, entries(&groups.segments));
    row.entries(PredictionField::Features, entries(&groups.features));
}

fn fill_label<'a>(
    row: &mut TypedRow<'a, LabelField>,
    cells: &'a [ColumnCells],
    index: usize,
    layout: &'a ParquetLayout,
    _default_model: Option<&'a str>,
) {
    let groups = &layout.groups;
    for (column, field) in &groups.label_scalars {
        let value = cells[*column].value(index);
        if value != Value::Null {
            row.scalar(*field, value);
        }
    }
    row.entries(
        LabelField::Business,
        groups.business.iter().filter_map(|column| {
            let value = cells[*column].value(index);
            (value != Value::Null).then(|| (layout.columns.entry_name(*column), value))
        }),
    );
}

#[cfg(test)]
mod tests {
    use parquet::basic::{Compression, Repetition};
    use parquet::data_type::{ByteArrayType, DoubleType, Int64Type};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    use parquet::schema::types::Type;

    use super::*;
    use crate::input::Format;
    use modelwatch_core::event::{FeatureValue, Prediction};
    use modelwatch_core::wire::ParseLimits;

    const ROWS: usize = 1000;

    /// A snappy file writer with pages of 64 rows, written 16 rows at a
    /// time, whose dictionaries fall back to plain pages past
    /// `dictionary_bytes`.
    fn small_pages_writer(path: &Path, schema: Type, dictionary_bytes: usize) -> SerializedFileWriter<File> {
        let properties = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_data_page_row_count_limit(64)
            .set_write_batch_size(16)
            .set_dictionary_page_size_limit(dictionary_bytes)
            .build();
        SerializedFileWriter::new(
            File::create(path).unwrap(),
            Arc::new(schema),
            Arc::new(properties),
        )
        .unwrap()
    }

    /// A flat column of a test file's schema.
    fn leaf(
        name: &str,
        physical: PhysicalType,
        logical: Option<LogicalType>,
        repetition: Repetition,
    ) -> Arc<Type> {
        Arc::new(
            Type::primitive_type_builder(name, physical)
                .with_repetition(repetition)
                .with_logical_type(logical)
                .build()
                .unwrap(),
        )
    }

    /// 1000 rows in row groups of 600 and 400, pages of at most 64 rows, a
    /// required id column, a dictionary-encoded version column and nulls in
    /// a feature.
    fn write_file(path: &Path) {
        let column = |name: &str, physical, logical: Option<LogicalType>| {
            // The ids are a required column (no definition levels), the
            // others optional.
            let repetition = if name == "prediction_id" {
                Repetition::REQUIRED
            } else {
                Repetition::OPTIONAL
            };
            leaf(name, physical, logical, repetition)
        };
        let schema = Type::group_type_builder("schema")
            .with_fields(vec![
                column(
                    "prediction_id",
                    PhysicalType::BYTE_ARRAY,
                    Some(LogicalType::String),
                ),
                column("version", PhysicalType::BYTE_ARRAY, Some(LogicalType::String)),
                column(
                    "timestamp",
                    PhysicalType::INT64,
                    Some(LogicalType::timestamp(true, TimeUnit::MICROS)),
                ),
                column("prediction", PhysicalType::INT64, None),
                column("amount", PhysicalType::DOUBLE, None),
            ])
            .build()
            .unwrap();
        // Dictionaries that fill up after a few pages, as pyarrow's do at
        // scale: the ids, times and amounts fall back to plain pages.
        let mut writer = small_pages_writer(path, schema, 512);
        for rows in [0..600, 600..ROWS] {
            let mut group = writer.next_row_group().unwrap();
            let all = vec![1i16; rows.len()];
            let ids: Vec<ByteArray> = rows
                .clone()
                .map(|row| ByteArray::from(format!("p{row}").as_str()))
                .collect();
            let versions: Vec<ByteArray> = rows
                .clone()
                .map(|row| ByteArray::from(if row % 3 == 0 { "v2" } else { "v1" }))
                .collect();
            let micros: Vec<i64> = rows
                .clone()
                .map(|row| 1_700_000_000_000_000 + row as i64 * 1_000 + 300)
                .collect();
            let classes: Vec<i64> = rows.clone().map(|row| (row % 2) as i64).collect();
            let amount_levels: Vec<i16> = rows.clone().map(|row| i16::from(row % 5 != 0)).collect();
            let amounts: Vec<f64> = rows
                .clone()
                .filter(|row| row % 5 != 0)
                .map(|row| row as f64 / 4.0)
                .collect();
            let mut next = |write: &mut dyn FnMut(&mut parquet::file::writer::SerializedColumnWriter<'_>)| {
                let mut column = group.next_column().unwrap().unwrap();
                write(&mut column);
                column.close().unwrap();
            };
            next(&mut |column| {
                column
                    .typed::<ByteArrayType>()
                    .write_batch(&ids, None, None)
                    .unwrap();
            });
            next(&mut |column| {
                column
                    .typed::<ByteArrayType>()
                    .write_batch(&versions, Some(&all), None)
                    .unwrap();
            });
            next(&mut |column| {
                column
                    .typed::<Int64Type>()
                    .write_batch(&micros, Some(&all), None)
                    .unwrap();
            });
            next(&mut |column| {
                column
                    .typed::<Int64Type>()
                    .write_batch(&classes, Some(&all), None)
                    .unwrap();
            });
            next(&mut |column| {
                column
                    .typed::<DoubleType>()
                    .write_batch(&amounts, Some(&amount_levels), None)
                    .unwrap();
            });
            group.close().unwrap();
        }
        writer.close().unwrap();
    }

    fn events(path: &Path, slice_rows: usize) -> Vec<(u64, PredictionEvent)> {
        let input = InputFile::detect(path).unwrap();
        let mut layout = ParquetLayout::open(&input, Kind::Predictions).unwrap();
        layout.slice_rows = slice_rows;
        let layout = Arc::new(layout);
        let reader = RowReader {
            file: 0,
            format: Format::Parquet,
            columns: None,
            parquet: Some(Arc::clone(&layout)),
            fast: None,
            fast_labels: None,
            default_model: Some("m".to_owned()),
            limits: ParseLimits::default(),
            now_ms: 2_000_000_000_000,
        };
        let mut chunks = Vec::new();
        read_row_groups(
            &input,
            &layout,
            0,
            |_| {},
            |chunk| {
                chunks.push(chunk);
                true
            },
        )
        .unwrap();
        let mut all = Vec::new();
        for chunk in &chunks {
            let parsed = reader.parse_predictions(chunk).unwrap();
            assert!(parsed.problems.is_empty(), "{:?}", parsed.problems);
            all.extend(parsed.events);
        }
        all
    }

    /// Integer classes read as text: coded with few distinct values, written
    /// out with many, and either way each row reads as its integer's text,
    /// nulls as none.
    #[test]
    fn integer_text_cells_read_as_each_rows_integer_coded_or_not() {
        let cases: [(&str, Vec<i128>); 4] = [
            (
                "two classes",
                (0..1000).map(|row| i128::from(row % 3 == 0)).collect(),
            ),
            (
                "64 classes",
                (0..1000).map(|row| i128::from(row % 64) - 7).collect(),
            ),
            (
                "65 classes, past the codes",
                (0..1000).map(|row| i128::from(row % 65)).collect(),
            ),
            ("wider than 64 bits", vec![i128::MAX, 0, i128::MIN, 0]),
        ];
        for (case, values) in cases {
            for nulls in [false, true] {
                // With nulls, every fourth row has none and the others take
                // the values in order.
                let rows = if nulls {
                    values.len() * 4 / 3 + 1
                } else {
                    values.len()
                };
                let levels: Vec<i16> = (0..rows).map(|row| i16::from(!nulls || row % 4 != 0)).collect();
                let present = levels.iter().filter(|level| **level == 1).count();
                let values = &values[..present.min(values.len())];
                let levels: Vec<i16> = {
                    let mut given = 0;
                    levels
                        .iter()
                        .map(|level| {
                            let level = if given < values.len() { *level } else { 0 };
                            given += usize::from(level == 1);
                            level
                        })
                        .collect()
                };
                let mut cells = ColumnCells::default();
                cells.fill_integer_text(values.iter().copied());
                if nulls {
                    cells.spread(&levels, 1);
                }
                assert_eq!(
                    cells.coded().is_some(),
                    case != "65 classes, past the codes",
                    "{case}: coded only with at most {MAX_CODES} distinct values"
                );
                let mut next = values.iter();
                for (row, level) in levels.iter().enumerate() {
                    let wanted =
                        (*level == 1).then(|| next.next().expect("a value per present row").to_string());
                    assert_eq!(
                        cells.text(row),
                        wanted.as_deref(),
                        "{case}, nulls {nulls}, row {row}"
                    );
                }
            }
        }
        let mut cells = ColumnCells::default();
        cells.fill_integer_text(std::iter::empty());
        cells.spread(&[0, 0, 0], 1);
        assert!(cells.coded().is_none());
        assert_eq!(
            (0..3).map(|row| cells.text(row)).collect::<Vec<_>>(),
            [None, None, None]
        );
    }

    #[test]
    fn slices_of_row_groups_read_every_row_once_in_order() {
        let dir = std::env::temp_dir().join(format!("modelwatch-parquet-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("p.parquet");
        write_file(&path);
        // The ids fall back to plain pages, so slices past a row group's
        // first rows read them without their dictionary page (and again with
        // it when a slice starts among the dictionary-encoded pages: slices of
        // 7 and 64 rows do).
        let layout = ParquetLayout::open(&InputFile::detect(&path).unwrap(), Kind::Predictions).unwrap();
        assert!(layout.arrow_without_dictionaries.is_some());
        let whole = events(&path, SLICE_ROWS);
        assert_eq!(whole.len(), ROWS);
        for (row, (line, event)) in whole.iter().enumerate() {
            assert_eq!(*line, row as u64 + 1);
            assert_eq!(event.prediction_id, format!("p{row}"));
            assert_eq!(event.model, "m");
            assert_eq!(event.version, if row % 3 == 0 { "v2" } else { "v1" });
            // Microseconds to milliseconds, rounded as the wire rounds seconds.
            assert_eq!(event.timestamp_ms, 1_700_000_000_000 + row as i64);
            assert_eq!(event.prediction, Some(Prediction::Class((row % 2).to_string())));
            let expected_features = if row % 5 == 0 {
                vec![]
            } else {
                vec![("amount".to_owned(), FeatureValue::Number(row as f64 / 4.0))]
            };
            assert_eq!(event.features, expected_features, "row {row}");
        }
        for slice_rows in [7, 64, 599, 600] {
            assert_eq!(events(&path, slice_rows), whole, "slices of {slice_rows} rows");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A slice past a column's dictionary-encoded pages is read without the
    /// dictionary page; one that starts among them is refused (and read
    /// again with it by `decode_slice`), never misread.
    #[test]
    fn a_slice_past_the_dictionary_encoded_pages_skips_the_dictionary() {
        use parquet::basic::Encoding;
        use parquet::column::page::Page;
        use parquet::data_type::DoubleType;
        let dir = std::env::temp_dir().join(format!("modelwatch-parquet-dictionary-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // A file of one double column `x`, in small pages with a 1 KiB
        // dictionary, opened for reading.
        let write = |name: &str, values: &[f64]| {
            let path = dir.join(name);
            let schema = Type::group_type_builder("schema")
                .with_fields(vec![leaf("x", PhysicalType::DOUBLE, None, Repetition::REQUIRED)])
                .build()
                .unwrap();
            let mut writer = small_pages_writer(&path, schema, 1024);
            let mut group = writer.next_row_group().unwrap();
            let mut column = group.next_column().unwrap().unwrap();
            column
                .typed::<DoubleType>()
                .write_batch(values, None, None)
                .unwrap();
            column.close().unwrap();
            group.close().unwrap();
            writer.close().unwrap();
            parquet::file::serialized_reader::SerializedFileReader::new(File::open(&path).unwrap()).unwrap()
        };
        let values: Vec<f64> = (0..ROWS).map(|row| row as f64 * 0.5).collect();
        let reader = write("d.parquet", &values);
        let group = parquet::file::reader::FileReader::get_row_group(&reader, 0).unwrap();
        // The rows of the dictionary-encoded pages, which come first.
        let mut encoded_rows = 0;
        let mut plain_pages = 0;
        let mut pages = group.get_column_page_reader(0).unwrap();
        while let Some(page) = pages.get_next_page().unwrap() {
            match page {
                Page::DictionaryPage { .. } => {}
                Page::DataPage {
                    num_values, encoding, ..
                } => {
                    if encoding == Encoding::RLE_DICTIONARY || encoding == Encoding::PLAIN_DICTIONARY {
                        assert_eq!(plain_pages, 0, "dictionary-encoded pages come first");
                        encoded_rows += num_values as usize;
                    } else {
                        plain_pages += 1;
                    }
                }
                Page::DataPageV2 { .. } => panic!("v1 pages expected"),
            }
        }
        assert!(
            encoded_rows > 0 && plain_pages > 0,
            "{encoded_rows} rows encoded, {plain_pages} plain pages"
        );
        assert!(may_skip_dictionary(group.metadata().column(0)));
        let descriptor = parquet::file::reader::FileReader::metadata(&reader)
            .file_metadata()
            .schema_descr()
            .column(0);
        for first_row in [
            1,
            63,
            64,
            encoded_rows - 1,
            encoded_rows,
            encoded_rows + 1,
            700,
            ROWS - 1,
        ] {
            let slice = RowSlice {
                data: Arc::new(RowGroupData {
                    row_group: 0,
                    start: 0,
                    bytes: Bytes::new(),
                }),
                first_row,
                rows: (ROWS - first_row).min(100),
            };
            let pages = WithoutDictionary::new(group.get_column_page_reader(0).unwrap());
            let column_reader =
                parquet::column::reader::get_column_reader(Arc::clone(&descriptor), Box::new(pages));
            let parquet::column::reader::ColumnReader::DoubleColumnReader(column_reader) = column_reader
            else {
                panic!("a double column");
            };
            let (mut levels, mut read) = (Vec::new(), Vec::new());
            match read_rows(column_reader, &slice, false, &mut levels, &mut read) {
                Ok(()) => {
                    assert!(
                        first_row >= encoded_rows,
                        "row {first_row} read without its dictionary"
                    );
                    assert_eq!(
                        read,
                        values[first_row..first_row + slice.rows],
                        "from row {first_row}"
                    );
                }
                Err(error) => {
                    assert!(WithoutDictionary::needed_it(&error), "{error}");
                    assert!(first_row < encoded_rows, "row {first_row} refused: {error}");
                }
            }
        }
        // A column whose every page is dictionary-encoded is not tried
        // without its dictionary.
        let repeated: Vec<f64> = (0..ROWS).map(|row| (row % 3) as f64).collect();
        let reader = write("few.parquet", &repeated);
        let metadata = parquet::file::reader::FileReader::metadata(&reader);
        assert!(!may_skip_dictionary(metadata.row_group(0).column(0)));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Writes ids (required, UTF-8), `version` (optional, plain bytes: no
    /// UTF-8 annotation, `bad` rows not UTF-8) and `error_type` (optional,
    /// UTF-8, dictionary-encoded) in row groups of 300, with nulls.
    fn write_text_file(path: &Path, versions: usize, bad: impl Fn(usize) -> bool) {
        let column = |name: &str, logical: Option<LogicalType>, repetition| {
            leaf(name, PhysicalType::BYTE_ARRAY, logical, repetition)
        };
        let schema = Type::group_type_builder("schema")
            .with_fields(vec![
                column("prediction_id", Some(LogicalType::String), Repetition::REQUIRED),
                column("version", None, Repetition::OPTIONAL),
                column("error_type", Some(LogicalType::String), Repetition::OPTIONAL),
            ])
            .build()
            .unwrap();
        let properties = WriterProperties::builder()
            .set_data_page_row_count_limit(50)
            .set_write_batch_size(10)
            .build();
        let file = File::create(path).unwrap();
        let mut writer = SerializedFileWriter::new(file, Arc::new(schema), Arc::new(properties)).unwrap();
        for rows in [0..300, 300..ROWS] {
            let mut group = writer.next_row_group().unwrap();
            let ids: Vec<ByteArray> = rows
                .clone()
                .map(|row| ByteArray::from(format!("p{row}é").as_str()))
                .collect();
            let version_levels: Vec<i16> = rows.clone().map(|row| i16::from(row % 7 != 0)).collect();
            let versions: Vec<ByteArray> = rows
                .clone()
                .filter(|row| row % 7 != 0)
                .map(|row| {
                    if bad(row) {
                        ByteArray::from(vec![b'v', 0xff, b'0' + (row % 10) as u8])
                    } else {
                        ByteArray::from(format!("v{}", row % versions).as_str())
                    }
                })
                .collect();
            let error_levels: Vec<i16> = rows.clone().map(|row| i16::from(row % 3 == 0)).collect();
            let errors: Vec<ByteArray> = rows
                .clone()
                .filter(|row| row % 3 == 0)
                .map(|row| ByteArray::from(if row % 2 == 0 { "Timeout" } else { "" }))
                .collect();
            for (values, levels) in [
                (&ids, None),
                (&versions, Some(&version_levels)),
                (&errors, Some(&error_levels)),
            ] {
                let mut column = group.next_column().unwrap().unwrap();
                column
                    .typed::<ByteArrayType>()
                    .write_batch(values, levels.map(Vec::as_slice), None)
                    .unwrap();
                column.close().unwrap();
            }
            group.close().unwrap();
        }
        writer.close().unwrap();
    }

    /// Each slice's text columns, decoded with the Arrow reader when the
    /// layout has it, with whether it was used.
    fn text_cells(layout: &ParquetLayout, input: &InputFile) -> Vec<(bool, Vec<Vec<Option<String>>>)> {
        let mut chunks = Vec::new();
        read_row_groups(
            input,
            layout,
            0,
            |_| {},
            |chunk| {
                chunks.push(chunk);
                true
            },
        )
        .unwrap();
        chunks
            .iter()
            .map(|chunk| {
                let slice = chunk.rows.as_ref().unwrap();
                let mut probe: Vec<ColumnCells> = std::iter::repeat_with(ColumnCells::default)
                    .take(layout.plans.len())
                    .collect();
                let arrow = decode_text_columns(layout, slice, &mut probe);
                let mut buffers = Buffers::default();
                decode_slice(layout, slice, &input.path, &mut buffers).unwrap();
                let columns = buffers
                    .cells
                    .iter()
                    .map(|cells| {
                        (0..slice.rows)
                            .map(|row| cells.text(row).map(str::to_owned))
                            .collect()
                    })
                    .collect();
                (arrow, columns)
            })
            .collect()
    }

    #[test]
    fn text_columns_read_through_arrow_read_as_value_by_value() {
        let dir = tempfile_dir("text");
        // 100 versions: more than a coded column holds, written out.
        for (name, bad, versions) in [("utf8", false, 4), ("invalid", true, 4), ("many", false, 100)] {
            let path = dir.join(format!("{name}.parquet"));
            write_text_file(&path, versions, |row| bad && row % 50 == 1);
            let input = InputFile::detect(&path).unwrap();
            for slice_rows in [SLICE_ROWS, 7, 64, 299, 300] {
                let mut layout = ParquetLayout::open(&input, Kind::Predictions).unwrap();
                layout.slice_rows = slice_rows;
                assert_eq!(layout.text_columns, [0, 1, 2]);
                // The names (version, error type) are dictionary-encoded in
                // every page and read as dictionaries, coded; the ids are not.
                let types: Vec<bool> = layout
                    .arrow
                    .as_ref()
                    .expect("an Arrow schema")
                    .schema()
                    .fields()
                    .iter()
                    .map(|field| matches!(field.data_type(), arrow_schema::DataType::Dictionary(..)))
                    .collect();
                assert_eq!(types, [false, true, true]);
                let through_arrow = text_cells(&layout, &input);
                layout.arrow = None;
                let by_value = text_cells(&layout, &input);
                assert_eq!(through_arrow.len(), by_value.len());
                for (slice, ((arrow, columns), (_, expected))) in
                    through_arrow.iter().zip(&by_value).enumerate()
                {
                    // Invalid UTF-8 is left to the value-by-value path, which
                    // replaces it; a slice without any goes through Arrow.
                    let has_bad = expected[1].iter().flatten().any(|text| text.contains('\u{fffd}'));
                    assert_eq!(*arrow, !has_bad, "{name}, slices of {slice_rows}, slice {slice}");
                    assert_eq!(columns, expected, "{name}, slices of {slice_rows}, slice {slice}");
                }
                let rows: usize = by_value.iter().map(|(_, columns)| columns[0].len()).sum();
                assert_eq!(rows, ROWS);
                let first = &by_value[0].1;
                assert_eq!(first[0][0].as_deref(), Some("p0é"));
                assert_eq!(first[1][0], None);
                assert_eq!(first[2][0].as_deref(), Some("Timeout"));
                assert_eq!(first[2][1], None);
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn tempfile_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("modelwatch-parquet-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
