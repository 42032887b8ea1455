//! Wire formats: parsing and validation of ingested JSON into domain events.
//!
//! This is the boundary where untrusted bytes become [`PredictionEvent`]s. Every
//! rejection names the offending field and the reason, so that the HTTP layer
//! can answer a 4xx a user can act on.

use crate::event::{PredictionEvent, TimestampMs};

/// Limits applied while parsing one row. Defaults are what `modelwatch serve`
/// uses when the config says nothing.
#[derive(Debug, Clone)]
pub struct ParseLimits {
    /// Longest accepted string (ids, names, classes, categorical values), in bytes.
    pub max_string_bytes: usize,
    /// Most entries in `features` of one event.
    pub max_features: usize,
    /// Most entries in `segments` of one event.
    pub max_segments: usize,
    /// Most entries in `probabilities` of one event.
    pub max_probabilities: usize,
    /// How far past the time of receipt an event timestamp may lie.
    pub max_future_skew_ms: i64,
}

impl Default for ParseLimits {
    fn default() -> Self {
        Self {
            max_string_bytes: 256,
            max_features: 512,
            max_segments: 32,
            max_probabilities: 1024,
            max_future_skew_ms: 5 * 60 * 1000,
        }
    }
}

/// Machine-readable reason of a rejection. Stable: clients match on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The bytes are not valid JSON.
    MalformedJson,
    /// A field the format does not define.
    UnknownField,
    /// A required field is absent.
    MissingField,
    /// A field has the wrong JSON type.
    InvalidType,
    /// A field has the right type but a value outside its domain
    /// (NaN, infinity, negative latency, probability > 1, far-future time...).
    InvalidValue,
    /// A string or collection longer than the limit.
    TooLong,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::MalformedJson => "malformed_json",
            ErrorCode::UnknownField => "unknown_field",
            ErrorCode::MissingField => "missing_field",
            ErrorCode::InvalidType => "invalid_type",
            ErrorCode::InvalidValue => "invalid_value",
            ErrorCode::TooLong => "too_long",
        }
    }
}

/// Why one row was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    pub code: ErrorCode,
    /// Lowercase, no trailing period, says what was expected.
    pub message: String,
    /// Dotted path of the offending field, such as `latency_seconds` or
    /// `features.amount`; `None` when the row as a whole is at fault.
    pub field: Option<String>,
}

/// Parses and validates one prediction event.
///
/// `received_at_ms` is the time of receipt: it becomes the event time when the
/// row has no `timestamp`, and bounds how far in the future a timestamp may be.
pub fn parse_prediction(
    row: &[u8],
    received_at_ms: TimestampMs,
    limits: &ParseLimits,
) -> Result<PredictionEvent, RowError> {
    let _ = (row, received_at_ms, limits);
    unimplemented!("wire::parse_prediction")
}

/// How a request body frames its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    /// A JSON array of objects (a single object is a batch of one).
    Json,
    /// One JSON object per line; blank lines are skipped.
    Ndjson,
}

/// A body that cannot be split into rows at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyError {
    pub message: String,
}

/// Splits a body into the raw bytes of each row, without validating the rows.
///
/// For NDJSON a malformed line is still a row (it is rejected on its own by
/// [`parse_prediction`]); for a JSON array, a syntax error anywhere makes the
/// whole body unreadable.
pub fn split_rows(body: &[u8], format: BodyFormat) -> Result<Vec<&[u8]>, BodyError> {
    let _ = (body, format);
    unimplemented!("wire::split_rows")
}
