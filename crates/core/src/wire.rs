//! Wire formats: parsing and validation of ingested JSON into domain events.
//!
//! This is the boundary where untrusted bytes become [`PredictionEvent`]s. Every
//! rejection names the offending field and the reason, so that the HTTP layer
//! can answer a 4xx a user can act on.
//!
//! Parsing is one pass of `serde_json` over the row with hand-written visitors:
//! no intermediate `serde_json::Value`, keys and string values are borrowed
//! from the row until the event needs to own them. The machinery is split in
//! two halves:
//!
//! - the event-specific half ([`parse_prediction`], `PredictionField`,
//!   `PredictionFields`) lists the fields of one event kind, reads each one and
//!   checks the rules that span several fields;
//! - the generic half (`RowContext`, `RowFields`, `ValueSeed`, `EntriesReader`,
//!   [`parse_timestamp`], the string checks) knows nothing about predictions, so
//!   that the label parser can sit beside `parse_prediction` and reuse it.
//!
//! Visitors cannot return our [`RowError`] through `serde_json`, so a rejection
//! is recorded in the `RowContext` owned by the caller and a placeholder error
//! unwinds the parse. When `serde_json` itself fails (a syntax error, such as a
//! bare `NaN`), the visitor that was reading a value records which field it was
//! reading, so that even a malformed row names the field to blame.

use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use crate::event::{
    self, Actual, FeatureValue, LabelEvent, Prediction, PredictionEvent, Status, TimestampMs,
};

pub mod typed;

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
    /// Most entries in `business` of one label.
    pub max_business_values: usize,
}

impl Default for ParseLimits {
    fn default() -> Self {
        Self {
            max_string_bytes: 256,
            max_features: 512,
            max_segments: 32,
            max_probabilities: 1024,
            max_future_skew_ms: 5 * 60 * 1000,
            max_business_values: 32,
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
    let context = RowContext::new(received_at_ms, limits);
    let fields: PredictionFields = parse_row(row, &context)?;
    fields.into_event(received_at_ms)
}

/// A `timestamp` as a row gives it, before validation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum WireTimestamp<'a> {
    /// An RFC 3339 string with a UTC offset, such as `2026-11-28T12:00:00Z`.
    Rfc3339(&'a str),
    /// Seconds since the Unix epoch, fractions allowed.
    UnixSeconds(f64),
}

/// Validates an event time and converts it to milliseconds since the epoch.
///
/// Rejects unparseable strings, non-finite numbers, times before 1970 and
/// times more than `limits.max_future_skew_ms` after `received_at_ms`. The
/// error names the field `timestamp`, the name both event kinds use.
pub fn parse_timestamp(
    timestamp: WireTimestamp<'_>,
    received_at_ms: TimestampMs,
    limits: &ParseLimits,
) -> Result<TimestampMs, RowError> {
    resolve_timestamp(timestamp, received_at_ms, limits)
        .map_err(|problem| problem.at(Some("timestamp".to_owned())))
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
    match format {
        BodyFormat::Ndjson => Ok(split_ndjson(body)),
        BodyFormat::Json => split_json(body),
    }
}

fn split_ndjson(body: &[u8]) -> Vec<&[u8]> {
    let mut rows = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        let (line, after) = match find_newline(rest) {
            Some(newline) => (&rest[..newline], &rest[newline + 1..]),
            None => (rest, &rest[rest.len()..]),
        };
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if !line.iter().all(u8::is_ascii_whitespace) {
            rows.push(line);
        }
        rest = after;
    }
    rows
}

/// Index of the first `\n`. Splitting is a scan of every byte of the body,
/// so it tests a block at a time without branching, which the compiler turns
/// into SIMD compares; a byte-by-byte search costs about as much as a fifth of
/// parsing the row.
fn find_newline(bytes: &[u8]) -> Option<usize> {
    const BLOCK_BYTES: usize = 32;
    let mut block_start = 0;
    for block in bytes.chunks_exact(BLOCK_BYTES) {
        if block.iter().fold(false, |found, &byte| found | (byte == b'\n')) {
            break;
        }
        block_start += BLOCK_BYTES;
    }
    bytes[block_start..]
        .iter()
        .position(|&byte| byte == b'\n')
        .map(|index| block_start + index)
}

fn split_json(body: &[u8]) -> Result<Vec<&[u8]>, BodyError> {
    let Some(first_byte) = body.iter().find(|byte| !byte.is_ascii_whitespace()) else {
        return Ok(Vec::new());
    };
    // One validation of the whole body is cheaper than serde_json's
    // validation of each row it captures from a byte slice.
    let body = std::str::from_utf8(body).map_err(|error| BodyError {
        message: format!("invalid JSON body: invalid UTF-8 at byte {}", error.valid_up_to()),
    })?;
    // The whole body goes to serde_json (not the trimmed one) so that the
    // line and column of a syntax error match what the client sent.
    let unreadable = |error: serde_json::Error| BodyError {
        message: format!("invalid JSON body: {error}"),
    };
    if *first_byte == b'[' {
        let rows: Vec<&RawValue> = serde_json::from_str(body).map_err(unreadable)?;
        return Ok(rows.into_iter().map(|row| row.get().as_bytes()).collect());
    }
    // A single value is read in full too, so that a broken lone object is a
    // body error exactly as a broken array is.
    let single: &RawValue = serde_json::from_str(body).map_err(unreadable)?;
    if *first_byte == b'{' {
        Ok(vec![single.get().as_bytes()])
    } else {
        Err(BodyError {
            message: "expected a JSON array of objects or a single JSON object".to_owned(),
        })
    }
}

// ---------------------------------------------------------------------------
// Prediction events: the fields, how each one is read, and the rules that
// span several fields.
// ---------------------------------------------------------------------------

/// The top-level fields of a prediction's wire object; [`typed`] rows name
/// their fields with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PredictionField {
    PredictionId,
    Model,
    Version,
    Timestamp,
    LatencySeconds,
    Status,
    ErrorType,
    Prediction,
    Probabilities,
    Confidence,
    Features,
    Segments,
}

impl WireField for PredictionField {
    const ALL: &'static [Self] = &[
        Self::PredictionId,
        Self::Model,
        Self::Version,
        Self::Timestamp,
        Self::LatencySeconds,
        Self::Status,
        Self::ErrorType,
        Self::Prediction,
        Self::Probabilities,
        Self::Confidence,
        Self::Features,
        Self::Segments,
    ];

    fn wire_name(self) -> &'static str {
        match self {
            Self::PredictionId => "prediction_id",
            Self::Model => "model",
            Self::Version => "version",
            Self::Timestamp => "timestamp",
            Self::LatencySeconds => "latency_seconds",
            Self::Status => "status",
            Self::ErrorType => "error_type",
            Self::Prediction => "prediction",
            Self::Probabilities => "probabilities",
            Self::Confidence => "confidence",
            Self::Features => "features",
            Self::Segments => "segments",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StatusKind {
    Ok,
    Error,
    Timeout,
}

/// The fields of one prediction row, each validated on its own; `null` in an
/// optional field reads as absent.
#[derive(Default)]
struct PredictionFields {
    prediction_id: Option<String>,
    model: Option<String>,
    version: Option<String>,
    timestamp_ms: Option<TimestampMs>,
    latency_seconds: Option<f64>,
    status: Option<StatusKind>,
    error_type: Option<String>,
    prediction: Option<Prediction>,
    /// Never `Some(empty)`: an empty object is rejected while reading.
    probabilities: Option<Vec<(String, f64)>>,
    confidence: Option<f64>,
    features: Vec<(String, FeatureValue)>,
    segments: Vec<(String, String)>,
}

const MAX_LATENCY_SECONDS: f64 = 86_400.0;

impl<'de> RowFields<'de> for PredictionFields {
    type Field = PredictionField;

    fn read_field<A: MapAccess<'de>>(
        &mut self,
        field: PredictionField,
        map: &mut A,
        context: &RowContext<'_>,
    ) -> Result<(), A::Error> {
        let path = FieldPath::top(field.wire_name());
        let limits = context.limits;
        match field {
            PredictionField::PredictionId => {
                self.prediction_id = next_checked_string(map, context, path, check_non_empty)?;
            }
            PredictionField::Model => {
                self.model = next_checked_string(map, context, path, check_model_name)?;
            }
            PredictionField::Version => {
                self.version = next_checked_string(map, context, path, check_label_value)?;
            }
            PredictionField::ErrorType => {
                self.error_type = next_checked_string(map, context, path, check_label_value)?;
            }
            PredictionField::Timestamp => {
                self.timestamp_ms = next_timestamp(map, context, path)?;
            }
            PredictionField::LatencySeconds => {
                self.latency_seconds = next_number(map, context, path)?;
                if let Some(latency) = self.latency_seconds {
                    let problem = if latency < 0.0 {
                        Some(Problem::invalid_value("must be >= 0"))
                    } else if latency > MAX_LATENCY_SECONDS {
                        Some(Problem::invalid_value("must be <= 86400 (one day)"))
                    } else {
                        None
                    };
                    if let Some(problem) = problem {
                        return Err(context.reject_at(path, problem));
                    }
                }
            }
            PredictionField::Status => {
                self.status = match next_string(map, context, path)?.as_deref() {
                    None => None,
                    Some("ok") => Some(StatusKind::Ok),
                    Some("error") => Some(StatusKind::Error),
                    Some("timeout") => Some(StatusKind::Timeout),
                    Some(_) => {
                        let problem = Problem::invalid_value("must be one of ok, error, timeout");
                        return Err(context.reject_at(path, problem));
                    }
                };
            }
            PredictionField::Prediction => {
                let value = next_scalar(map, context, path, PREDICTION_EXPECTED)?;
                self.prediction = prediction_from_value(value, limits)
                    .map_err(|problem| context.reject_at(path, problem))?;
            }
            PredictionField::Confidence => {
                self.confidence = next_number(map, context, path)?;
                if let Some(confidence) = self.confidence {
                    check_unit_interval(confidence).map_err(|problem| context.reject_at(path, problem))?;
                }
            }
            PredictionField::Probabilities => {
                let reader = EntriesReader {
                    field: "probabilities",
                    key_name: "class name",
                    max_entries: limits.max_probabilities,
                    value_expected: "a number",
                    convert: probability_from_value,
                };
                self.probabilities = next_entries(map, context, path, reader)?;
                if self.probabilities.as_ref().is_some_and(Vec::is_empty) {
                    return Err(context.reject_at(path, Problem::invalid_value("must not be empty")));
                }
            }
            PredictionField::Features => {
                let reader = EntriesReader {
                    field: "features",
                    key_name: "feature name",
                    max_entries: limits.max_features,
                    value_expected: "a number, a string, a boolean or null",
                    convert: feature_from_value,
                };
                self.features = next_entries(map, context, path, reader)?.unwrap_or_default();
            }
            PredictionField::Segments => {
                let reader = EntriesReader {
                    field: "segments",
                    key_name: "segment key",
                    max_entries: limits.max_segments,
                    value_expected: "a string",
                    convert: segment_from_value,
                };
                self.segments = next_entries(map, context, path, reader)?.unwrap_or_default();
            }
        }
        Ok(())
    }
}

impl PredictionFields {
    /// Applies the defaults and the rules that span several fields.
    fn into_event(self, received_at_ms: TimestampMs) -> Result<PredictionEvent, RowError> {
        let prediction_id = self.prediction_id.ok_or_else(|| missing_field("prediction_id"))?;
        let model = self.model.ok_or_else(|| missing_field("model"))?;

        let status = match (self.status.unwrap_or(StatusKind::Ok), self.error_type) {
            (StatusKind::Error, Some(error_type)) => Status::Error { error_type },
            (StatusKind::Error, None) => {
                return Err(RowError {
                    code: ErrorCode::MissingField,
                    message: "required when status is error".to_owned(),
                    field: Some("error_type".to_owned()),
                });
            }
            (StatusKind::Ok | StatusKind::Timeout, Some(_)) => {
                return Err(Problem::invalid_value("only allowed when status is error")
                    .at(Some("error_type".to_owned())));
            }
            (StatusKind::Ok, None) => Status::Ok,
            (StatusKind::Timeout, None) => Status::Timeout,
        };

        let probabilities = self.probabilities.unwrap_or_default();
        let (prediction, confidence) = if probabilities.is_empty() {
            (self.prediction, self.confidence)
        } else {
            if self.confidence.is_some() {
                return Err(Problem::invalid_value(
                    "confidence and probabilities are exclusive, give one or the other",
                )
                .at(Some("confidence".to_owned())));
            }
            let (class, probability) = predicted_class(self.prediction, &probabilities)?;
            (Some(Prediction::Class(class)), Some(probability))
        };

        Ok(PredictionEvent {
            prediction_id,
            model,
            version: self.version.unwrap_or_else(|| event::UNVERSIONED.to_owned()),
            timestamp_ms: self.timestamp_ms.unwrap_or(received_at_ms),
            latency_seconds: self.latency_seconds,
            status,
            prediction,
            confidence,
            probabilities,
            features: self.features,
            segments: self.segments,
        })
    }
}

/// The predicted class and its probability: the given class, or the argmax of
/// `probabilities` (the first in wire order on ties) when none was given.
fn predicted_class(
    prediction: Option<Prediction>,
    probabilities: &[(String, f64)],
) -> Result<(String, f64), RowError> {
    debug_assert!(!probabilities.is_empty());
    match prediction {
        None => {
            let mut best = &probabilities[0];
            for candidate in &probabilities[1..] {
                if candidate.1 > best.1 {
                    best = candidate;
                }
            }
            Ok(best.clone())
        }
        Some(Prediction::Class(class)) => match probabilities.iter().find(|(name, _)| *name == class) {
            Some(&(_, probability)) => Ok((class, probability)),
            None => Err(
                Problem::invalid_value("must be one of the classes in probabilities")
                    .at(Some("prediction".to_owned())),
            ),
        },
        Some(Prediction::Value(_)) => Err(Problem::invalid_value(
            "a number is a regression output and cannot come with probabilities, give the class as a string",
        )
        .at(Some("prediction".to_owned()))),
    }
}

const PREDICTION_EXPECTED: &str = "a string (a class) or a number (a regression output)";

fn prediction_from_value(value: Scalar<'_>, limits: &ParseLimits) -> Result<Option<Prediction>, Problem> {
    match value {
        JsonValue::Null => Ok(None),
        JsonValue::String(class) => {
            check_length(&class, limits)?;
            Ok(Some(Prediction::Class(class.into_owned())))
        }
        JsonValue::Number(output) => Ok(Some(Prediction::Value(check_finite(output)?))),
        other => Err(Problem::type_mismatch(PREDICTION_EXPECTED, &other)),
    }
}

fn probability_from_value(value: Scalar<'_>, _limits: &ParseLimits) -> Result<f64, Problem> {
    match value {
        JsonValue::Number(probability) => check_unit_interval(probability),
        other => Err(Problem::type_mismatch("a number", &other)),
    }
}

fn feature_from_value(value: Scalar<'_>, limits: &ParseLimits) -> Result<FeatureValue, Problem> {
    match value {
        JsonValue::Null => Ok(FeatureValue::Missing),
        JsonValue::Bool(flag) => Ok(FeatureValue::Category(
            if flag { "true" } else { "false" }.to_owned(),
        )),
        JsonValue::Number(number) => Ok(FeatureValue::Number(check_finite(number)?)),
        JsonValue::String(category) => {
            check_length(&category, limits)?;
            Ok(FeatureValue::Category(category.into_owned()))
        }
        JsonValue::Object(never) => match never {},
    }
}

fn segment_from_value(value: Scalar<'_>, limits: &ParseLimits) -> Result<String, Problem> {
    match value {
        JsonValue::String(segment) => {
            check_length(&segment, limits)?;
            Ok(segment.into_owned())
        }
        other => Err(Problem::type_mismatch("a string", &other)),
    }
}

// ---------------------------------------------------------------------------
// Label events.
// ---------------------------------------------------------------------------

/// The top-level fields of a label's wire object; [`typed`] rows name their
/// fields with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelField {
    PredictionId,
    Actual,
    Timestamp,
    Business,
}

impl WireField for LabelField {
    const ALL: &'static [Self] = &[Self::PredictionId, Self::Actual, Self::Timestamp, Self::Business];

    fn wire_name(self) -> &'static str {
        match self {
            Self::PredictionId => "prediction_id",
            Self::Actual => "actual",
            Self::Timestamp => "timestamp",
            Self::Business => "business",
        }
    }
}

#[derive(Default)]
struct LabelFields {
    prediction_id: Option<String>,
    actual: Option<Actual>,
    timestamp_ms: Option<TimestampMs>,
    business: Vec<(String, f64)>,
}

const ACTUAL_EXPECTED: &str = "a string (a class) or a number (a true value)";

impl<'de> RowFields<'de> for LabelFields {
    type Field = LabelField;

    fn read_field<A: MapAccess<'de>>(
        &mut self,
        field: LabelField,
        map: &mut A,
        context: &RowContext<'_>,
    ) -> Result<(), A::Error> {
        let path = FieldPath::top(field.wire_name());
        let limits = context.limits;
        match field {
            LabelField::PredictionId => {
                self.prediction_id = next_checked_string(map, context, path, check_non_empty)?;
            }
            LabelField::Actual => {
                let value = next_scalar(map, context, path, ACTUAL_EXPECTED)?;
                self.actual =
                    actual_from_value(value, limits).map_err(|problem| context.reject_at(path, problem))?;
            }
            LabelField::Timestamp => {
                self.timestamp_ms = next_timestamp(map, context, path)?;
            }
            LabelField::Business => {
                let reader = EntriesReader {
                    field: "business",
                    key_name: "business metric name",
                    max_entries: limits.max_business_values,
                    value_expected: "a number",
                    convert: business_from_value,
                };
                self.business = next_entries(map, context, path, reader)?.unwrap_or_default();
            }
        }
        Ok(())
    }
}

fn actual_from_value(value: Scalar<'_>, limits: &ParseLimits) -> Result<Option<Actual>, Problem> {
    match value {
        JsonValue::Null => Ok(None),
        JsonValue::String(class) => {
            check_length(&class, limits)?;
            Ok(Some(Actual::Class(class.into_owned())))
        }
        JsonValue::Number(value) => Ok(Some(Actual::Value(check_finite(value)?))),
        other => Err(Problem::type_mismatch(ACTUAL_EXPECTED, &other)),
    }
}

fn business_from_value(value: Scalar<'_>, _limits: &ParseLimits) -> Result<f64, Problem> {
    match value {
        JsonValue::Number(number) => check_finite(number),
        // `converted: true` is natural: count it as 1.
        JsonValue::Bool(flag) => Ok(if flag { 1.0 } else { 0.0 }),
        other => Err(Problem::type_mismatch("a number", &other)),
    }
}

/// Parses and validates one label event. `received_at_ms` is its time when the
/// row gives none.
pub fn parse_label(
    row: &[u8],
    received_at_ms: TimestampMs,
    limits: &ParseLimits,
) -> Result<LabelEvent, RowError> {
    let context = RowContext::new(received_at_ms, limits);
    let fields: LabelFields = parse_row(row, &context)?;
    fields.into_event(received_at_ms)
}

impl LabelFields {
    /// Applies the defaults and checks the required fields.
    fn into_event(self, received_at_ms: TimestampMs) -> Result<LabelEvent, RowError> {
        let prediction_id = self.prediction_id.ok_or_else(|| missing_field("prediction_id"))?;
        let actual = self.actual.ok_or_else(|| missing_field("actual"))?;
        let mut business = self.business;
        business.sort_by(|(a, _), (b, _)| a.cmp(b));
        Ok(LabelEvent {
            prediction_id,
            actual,
            timestamp_ms: self.timestamp_ms.unwrap_or(received_at_ms),
            business,
        })
    }
}

fn missing_field(field: &str) -> RowError {
    RowError {
        code: ErrorCode::MissingField,
        message: "required field is missing".to_owned(),
        field: Some(field.to_owned()),
    }
}

// ---------------------------------------------------------------------------
// Value rules shared by every event kind.
// ---------------------------------------------------------------------------

const TIMESTAMP_EXPECTED: &str = "an RFC 3339 string or a number of Unix seconds";

fn timestamp_from_value(
    value: Scalar<'_>,
    received_at_ms: TimestampMs,
    limits: &ParseLimits,
) -> Result<Option<TimestampMs>, Problem> {
    let timestamp = match &value {
        JsonValue::Null => return Ok(None),
        JsonValue::String(text) => WireTimestamp::Rfc3339(text),
        JsonValue::Number(seconds) => WireTimestamp::UnixSeconds(*seconds),
        other => return Err(Problem::type_mismatch(TIMESTAMP_EXPECTED, other)),
    };
    resolve_timestamp(timestamp, received_at_ms, limits).map(Some)
}

fn resolve_timestamp(
    timestamp: WireTimestamp<'_>,
    received_at_ms: TimestampMs,
    limits: &ParseLimits,
) -> Result<TimestampMs, Problem> {
    const BEFORE_EPOCH: &str = "must not be before 1970-01-01T00:00:00Z";
    let timestamp_ms = match timestamp {
        WireTimestamp::Rfc3339(text) => {
            let parsed: jiff::Timestamp = text.parse().map_err(|_| {
                Problem::invalid_value(
                    "expected an RFC 3339 timestamp with a UTC offset, such as \
                     2026-11-28T12:00:00Z, or a number of Unix seconds",
                )
            })?;
            if parsed < jiff::Timestamp::UNIX_EPOCH {
                return Err(Problem::invalid_value(BEFORE_EPOCH));
            }
            parsed.as_millisecond()
        }
        WireTimestamp::UnixSeconds(seconds) => {
            let seconds = check_finite(seconds)?;
            if seconds < 0.0 {
                return Err(Problem::invalid_value(BEFORE_EPOCH));
            }
            unix_seconds_ms(seconds)
        }
    };
    if !not_too_late(timestamp_ms, received_at_ms, limits) {
        let unit_hint = match timestamp {
            WireTimestamp::UnixSeconds(_) => ", numbers are Unix seconds, not milliseconds",
            WireTimestamp::Rfc3339(_) => "",
        };
        return Err(Problem::invalid_value(format!(
            "must not be more than {} ms after the time of receipt{unit_hint}",
            limits.max_future_skew_ms
        )));
    }
    Ok(timestamp_ms)
}

/// Unix seconds (finite, not negative) in milliseconds. Saturates on absurd
/// values, which the future check then rejects.
#[inline]
fn unix_seconds_ms(seconds: f64) -> TimestampMs {
    (seconds * 1000.0).round() as i64
}

/// Whether an event time is at most the allowed skew after its receipt.
#[inline]
fn not_too_late(timestamp_ms: TimestampMs, received_at_ms: TimestampMs, limits: &ParseLimits) -> bool {
    timestamp_ms <= received_at_ms.saturating_add(limits.max_future_skew_ms)
}

#[inline]
fn in_unit_interval(number: f64) -> bool {
    (0.0..=1.0).contains(&number)
}

#[inline]
fn check_finite(number: f64) -> Result<f64, Problem> {
    if number.is_finite() {
        Ok(number)
    } else {
        Err(Problem::invalid_value("must be a finite number"))
    }
}

fn check_unit_interval(number: f64) -> Result<f64, Problem> {
    if in_unit_interval(number) {
        Ok(number)
    } else {
        Err(Problem::invalid_value("must be between 0 and 1"))
    }
}

#[inline]
fn within_length(text: &str, limits: &ParseLimits) -> bool {
    text.len() <= limits.max_string_bytes
}

fn check_length(text: &str, limits: &ParseLimits) -> Result<(), Problem> {
    if !within_length(text, limits) {
        return Err(Problem::too_long(format!(
            "must be at most {} bytes, found {}",
            limits.max_string_bytes,
            text.len()
        )));
    }
    Ok(())
}

fn check_non_empty(text: &str) -> Result<(), Problem> {
    if text.is_empty() {
        return Err(Problem::invalid_value("must not be empty"));
    }
    Ok(())
}

/// A model name is a Prometheus label value and a URL path segment.
fn check_model_name(name: &str) -> Result<(), Problem> {
    check_non_empty(name)?;
    let allowed = |byte: u8| byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'.' | b':' | b'-');
    if !name.bytes().all(allowed) {
        return Err(Problem::invalid_value(
            "may contain only ASCII letters, digits, '_', '.', ':' and '-'",
        ));
    }
    if name == "." || name == ".." {
        return Err(Problem::invalid_value(
            "must not be '.' or '..', it is a URL path segment",
        ));
    }
    Ok(())
}

/// A version or error type ends up as a Prometheus label value.
fn check_label_value(text: &str) -> Result<(), Problem> {
    check_non_empty(text)?;
    if text.chars().any(char::is_control) {
        return Err(Problem::invalid_value("must not contain control characters"));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Generic row machinery: reading one JSON object of known fields, in one pass.
// ---------------------------------------------------------------------------

/// What is wrong with a value, before it is attached to a field.
struct Problem {
    code: ErrorCode,
    message: String,
}

impl Problem {
    fn invalid_value(message: impl Into<String>) -> Self {
        Self {
            code: ErrorCode::InvalidValue,
            message: message.into(),
        }
    }

    fn too_long(message: String) -> Self {
        Self {
            code: ErrorCode::TooLong,
            message,
        }
    }

    fn type_mismatch<O>(expected: &str, found: &JsonValue<'_, O>) -> Self {
        Self::type_mismatch_kind(expected, found.kind())
    }

    fn type_mismatch_kind(expected: &str, found: &str) -> Self {
        Self {
            code: ErrorCode::InvalidType,
            message: format!("expected {expected}, found {found}"),
        }
    }

    fn at(self, field: Option<String>) -> RowError {
        RowError {
            code: self.code,
            message: self.message,
            field,
        }
    }
}

/// Dotted path of a field: `latency_seconds`, or `features.amount` for an
/// entry of an object-valued field. Rendered only when something goes wrong.
#[derive(Debug, Clone, Copy)]
struct FieldPath<'k> {
    field: &'static str,
    key: Option<&'k str>,
}

impl<'k> FieldPath<'k> {
    fn top(field: &'static str) -> Self {
        Self { field, key: None }
    }

    fn entry(field: &'static str, key: &'k str) -> Self {
        Self {
            field,
            key: Some(key),
        }
    }
}

impl fmt::Display for FieldPath<'_> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.key {
            None => formatter.write_str(self.field),
            Some(key) => write!(formatter, "{}.{key}", self.field),
        }
    }
}

/// State of the parse of one row, shared by all its visitors.
struct RowContext<'a> {
    limits: &'a ParseLimits,
    received_at_ms: TimestampMs,
    /// Side channel out of serde: the first failure seen, if any.
    failure: RefCell<Option<Failure>>,
}

enum Failure {
    /// A visitor rejected a value; this is the error to report.
    Rejected(RowError),
    /// serde_json failed while this field's value was being read.
    MalformedInside(String),
}

impl<'a> RowContext<'a> {
    fn new(received_at_ms: TimestampMs, limits: &'a ParseLimits) -> Self {
        Self {
            limits,
            received_at_ms,
            failure: RefCell::new(None),
        }
    }

    /// Records a rejection and returns the error that unwinds serde; the
    /// first rejection wins.
    fn reject<E: de::Error>(&self, field: Option<String>, problem: Problem) -> E {
        let mut failure = self.failure.borrow_mut();
        if failure.is_none() {
            *failure = Some(Failure::Rejected(problem.at(field)));
        }
        E::custom("row rejected")
    }

    fn reject_at<E: de::Error>(&self, path: FieldPath<'_>, problem: Problem) -> E {
        self.reject(Some(path.to_string()), problem)
    }

    /// Records that reading `path` failed, unless something more precise
    /// (a rejection, or a failure in a nested field) was recorded first.
    fn blame(&self, path: FieldPath<'_>) {
        let mut failure = self.failure.borrow_mut();
        if failure.is_none() {
            *failure = Some(Failure::MalformedInside(path.to_string()));
        }
    }

    /// The error to report for a parse that `serde_json` ended with `error`.
    fn row_error(&self, error: serde_json::Error) -> RowError {
        match self.failure.borrow_mut().take() {
            Some(Failure::Rejected(rejection)) => rejection,
            Some(Failure::MalformedInside(field)) => malformed(error, Some(field)),
            None => malformed(error, None),
        }
    }
}

fn malformed(error: serde_json::Error, field: Option<String>) -> RowError {
    RowError {
        code: ErrorCode::MalformedJson,
        // serde_json's messages may start uppercase ("EOF while parsing");
        // the prefix keeps ours lowercase.
        message: format!("invalid JSON: {error}"),
        field,
    }
}

/// The fields of one event kind, as `Copy` names matched against the wire.
trait WireField: Copy + 'static {
    /// Every field, in the order the error message lists them; at most 64.
    const ALL: &'static [Self];
    fn wire_name(self) -> &'static str;
}

/// The accumulator of one event kind's fields while its row is read.
trait RowFields<'de>: Default {
    type Field: WireField;

    /// Reads the value of `field`, which comes next in `map`. Rejections go
    /// through `context.reject*`.
    fn read_field<A: MapAccess<'de>>(
        &mut self,
        field: Self::Field,
        map: &mut A,
        context: &RowContext<'_>,
    ) -> Result<(), A::Error>;
}

/// Reads one row as an object of `F`'s fields; the rules that span several
/// fields are the caller's.
fn parse_row<'de, F: RowFields<'de>>(row: &'de [u8], context: &RowContext<'_>) -> Result<F, RowError> {
    // One validation of the whole row is much cheaper than serde_json's
    // validation of each string from a byte slice; and JSON is UTF-8 outside
    // strings too, so nothing is lost by checking first.
    let row = std::str::from_utf8(row).map_err(|error| RowError {
        code: ErrorCode::MalformedJson,
        message: format!("invalid JSON: invalid UTF-8 at byte {}", error.valid_up_to()),
        field: None,
    })?;
    let mut deserializer = serde_json::Deserializer::from_str(row);
    let seed = ValueSeed {
        context,
        path: None,
        expected: "a JSON object",
        object_reader: RowReader::<F>(PhantomData),
    };
    let parsed = seed
        .deserialize(&mut deserializer)
        .and_then(|value| deserializer.end().map(|()| value));
    match parsed {
        Ok(JsonValue::Object(fields)) => Ok(fields),
        Ok(other) => Err(Problem::type_mismatch("a JSON object", &other).at(None)),
        Err(error) => Err(context.row_error(error)),
    }
}

/// A JSON value as the visitors see it. Arrays are never wanted, so they are
/// rejected while reading; `O` is what an object becomes.
enum JsonValue<'de, O> {
    Null,
    Bool(bool),
    Number(f64),
    String(Cow<'de, str>),
    Object(O),
}

/// Objects are not wanted here either.
enum Never {}

type Scalar<'de> = JsonValue<'de, Never>;

impl<O> JsonValue<'_, O> {
    fn kind(&self) -> &'static str {
        match self {
            JsonValue::Null => "null",
            JsonValue::Bool(_) => "a boolean",
            JsonValue::Number(_) => "a number",
            JsonValue::String(_) => "a string",
            JsonValue::Object(_) => "an object",
        }
    }
}

/// What reading an object means at one place of the row.
trait ObjectReader<'de> {
    type Output;

    fn read_object<A: MapAccess<'de>>(
        self,
        map: A,
        context: &RowContext<'_>,
        path: Option<FieldPath<'_>>,
        expected: &'static str,
    ) -> Result<Self::Output, A::Error>;
}

/// For places that want a scalar.
struct NoObject;

impl<'de> ObjectReader<'de> for NoObject {
    type Output = Never;

    fn read_object<A: MapAccess<'de>>(
        self,
        _map: A,
        context: &RowContext<'_>,
        path: Option<FieldPath<'_>>,
        expected: &'static str,
    ) -> Result<Never, A::Error> {
        let problem = Problem::type_mismatch_kind(expected, "an object");
        Err(context.reject(path.map(|path| path.to_string()), problem))
    }
}

/// Reads one JSON value of any type; `expected` and `path` serve the message
/// when the value is an array or an unwanted object.
struct ValueSeed<'c, 'k, R> {
    context: &'c RowContext<'c>,
    path: Option<FieldPath<'k>>,
    expected: &'static str,
    object_reader: R,
}

impl<'de, R: ObjectReader<'de>> DeserializeSeed<'de> for ValueSeed<'_, '_, R> {
    type Value = JsonValue<'de, R::Output>;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de, R: ObjectReader<'de>> Visitor<'de> for ValueSeed<'_, '_, R> {
    type Value = JsonValue<'de, R::Output>;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.expected)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(JsonValue::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(JsonValue::Null)
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<Self::Value, E> {
        Ok(JsonValue::Bool(value))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Self::Value, E> {
        Ok(JsonValue::Number(value as f64))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Self::Value, E> {
        Ok(JsonValue::Number(value as f64))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Self::Value, E> {
        Ok(JsonValue::Number(value))
    }

    fn visit_borrowed_str<E: de::Error>(self, value: &'de str) -> Result<Self::Value, E> {
        Ok(JsonValue::String(Cow::Borrowed(value)))
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Self::Value, E> {
        Ok(JsonValue::String(Cow::Owned(value.to_owned())))
    }

    fn visit_string<E: de::Error>(self, value: String) -> Result<Self::Value, E> {
        Ok(JsonValue::String(Cow::Owned(value)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, _seq: A) -> Result<Self::Value, A::Error> {
        let problem = Problem::type_mismatch_kind(self.expected, "an array");
        Err(self
            .context
            .reject(self.path.map(|path| path.to_string()), problem))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        self.object_reader
            .read_object(map, self.context, self.path, self.expected)
            .map(JsonValue::Object)
    }
}

/// Reads a whole row: an object of `F`'s fields, each at most once.
struct RowReader<F>(PhantomData<F>);

impl<'de, F: RowFields<'de>> ObjectReader<'de> for RowReader<F> {
    type Output = F;

    fn read_object<A: MapAccess<'de>>(
        self,
        mut map: A,
        context: &RowContext<'_>,
        _path: Option<FieldPath<'_>>,
        _expected: &'static str,
    ) -> Result<F, A::Error> {
        debug_assert!(F::Field::ALL.len() <= 64, "the seen-set is a u64");
        let mut fields = F::default();
        let mut seen: u64 = 0;
        let key_seed = FieldNameSeed::<F::Field> {
            context,
            field: PhantomData,
        };
        while let Some((position, field)) = map.next_key_seed(key_seed)? {
            let path = FieldPath::top(field.wire_name());
            let bit = 1u64 << position;
            if seen & bit != 0 {
                return Err(context.reject_at(path, Problem::invalid_value("duplicate field")));
            }
            seen |= bit;
            if let Err(error) = fields.read_field(field, &mut map, context) {
                context.blame(path);
                return Err(error);
            }
        }
        Ok(fields)
    }
}

/// Matches a key against the fields of `F`; unknown keys are rejected.
struct FieldNameSeed<'c, F> {
    context: &'c RowContext<'c>,
    field: PhantomData<F>,
}

impl<F> Clone for FieldNameSeed<'_, F> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<F> Copy for FieldNameSeed<'_, F> {}

impl<'de, F: WireField> DeserializeSeed<'de> for FieldNameSeed<'_, F> {
    type Value = (usize, F);

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de, F: WireField> Visitor<'de> for FieldNameSeed<'_, F> {
    type Value = (usize, F);

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, name: &str) -> Result<Self::Value, E> {
        if let Some(position) = F::ALL.iter().position(|field| field.wire_name() == name) {
            return Ok((position, F::ALL[position]));
        }
        let known: Vec<&str> = F::ALL.iter().map(|field| field.wire_name()).collect();
        let problem = Problem {
            code: ErrorCode::UnknownField,
            message: format!("unknown field, expected one of {}", known.join(", ")),
        };
        // The key is echoed back to the client: bound it.
        let shown = truncate_at_char_boundary(name, self.context.limits.max_string_bytes);
        Err(self.context.reject(Some(shown.to_owned()), problem))
    }
}

fn truncate_at_char_boundary(text: &str, max_bytes: usize) -> &str {
    if text.len() <= max_bytes {
        return text;
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Reads a key as borrowed text when it has no escapes.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a string key")
    }

    fn visit_borrowed_str<E: de::Error>(self, key: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(key))
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(key.to_owned()))
    }

    fn visit_string<E: de::Error>(self, key: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(key))
    }
}

/// Reads an object-valued field whose keys are free names (`features`,
/// `segments`, `probabilities`): keys in wire order, each at most once, each
/// value a scalar turned into `V` by `convert`.
struct EntriesReader<C> {
    field: &'static str,
    /// What a key is, for messages: `feature name`.
    key_name: &'static str,
    max_entries: usize,
    value_expected: &'static str,
    convert: C,
}

impl<'de, V, C> ObjectReader<'de> for EntriesReader<C>
where
    C: FnMut(Scalar<'de>, &ParseLimits) -> Result<V, Problem>,
{
    type Output = Vec<(String, V)>;

    fn read_object<A: MapAccess<'de>>(
        mut self,
        mut map: A,
        context: &RowContext<'_>,
        _path: Option<FieldPath<'_>>,
        _expected: &'static str,
    ) -> Result<Self::Output, A::Error> {
        let limits = context.limits;
        let field_path = FieldPath::top(self.field);
        // Most events have a handful of entries: skip the first regrowths.
        let mut entries = Vec::with_capacity(8);
        while let Some(key) = map.next_key_seed(KeySeed)? {
            if key.len() > limits.max_string_bytes {
                let problem = Problem::too_long(format!(
                    "{} must be at most {} bytes, found {}",
                    self.key_name,
                    limits.max_string_bytes,
                    key.len()
                ));
                return Err(context.reject_at(field_path, problem));
            }
            if entries.len() == self.max_entries {
                let problem = Problem::too_long(format!("must have at most {} entries", self.max_entries));
                return Err(context.reject_at(field_path, problem));
            }
            let path = FieldPath::entry(self.field, &key);
            let value = match next_scalar(&mut map, context, path, self.value_expected) {
                Ok(value) => value,
                Err(error) => {
                    context.blame(path);
                    return Err(error);
                }
            };
            let value = (self.convert)(value, limits).map_err(|problem| context.reject_at(path, problem))?;
            entries.push((key.into_owned(), value));
        }
        if let Some(duplicate) = first_duplicate_key(&entries) {
            let path = FieldPath::entry(self.field, duplicate);
            return Err(context.reject_at(path, Problem::invalid_value("duplicate field")));
        }
        Ok(entries)
    }
}

fn first_duplicate_key<V>(entries: &[(String, V)]) -> Option<&str> {
    // Pairwise comparison beats sorting for the handful of entries of a
    // typical event; sorting bounds the cost of the large ones.
    const PAIRWISE_UP_TO: usize = 16;
    if entries.len() <= PAIRWISE_UP_TO {
        for (index, (key, _)) in entries.iter().enumerate() {
            if entries[..index].iter().any(|(earlier, _)| earlier == key) {
                return Some(key);
            }
        }
        return None;
    }
    let mut keys: Vec<&str> = entries.iter().map(|(key, _)| key.as_str()).collect();
    keys.sort_unstable();
    keys.windows(2)
        .find(|pair| pair[0] == pair[1])
        .map(|pair| pair[0])
}

fn next_scalar<'de, A: MapAccess<'de>>(
    map: &mut A,
    context: &RowContext<'_>,
    path: FieldPath<'_>,
    expected: &'static str,
) -> Result<Scalar<'de>, A::Error> {
    map.next_value_seed(ValueSeed {
        context,
        path: Some(path),
        expected,
        object_reader: NoObject,
    })
}

/// A string within the length limit, or `None` for `null`.
fn next_string<'de, A: MapAccess<'de>>(
    map: &mut A,
    context: &RowContext<'_>,
    path: FieldPath<'_>,
) -> Result<Option<Cow<'de, str>>, A::Error> {
    match next_scalar(map, context, path, "a string")? {
        JsonValue::Null => Ok(None),
        JsonValue::String(text) => {
            check_length(&text, context.limits).map_err(|problem| context.reject_at(path, problem))?;
            Ok(Some(text))
        }
        other => Err(context.reject_at(path, Problem::type_mismatch("a string", &other))),
    }
}

/// [`next_string`], owned and passed through `check`.
fn next_checked_string<'de, A: MapAccess<'de>>(
    map: &mut A,
    context: &RowContext<'_>,
    path: FieldPath<'_>,
    check: fn(&str) -> Result<(), Problem>,
) -> Result<Option<String>, A::Error> {
    let Some(text) = next_string(map, context, path)? else {
        return Ok(None);
    };
    check(&text).map_err(|problem| context.reject_at(path, problem))?;
    Ok(Some(text.into_owned()))
}

/// A validated event time, or `None` for `null`.
fn next_timestamp<'de, A: MapAccess<'de>>(
    map: &mut A,
    context: &RowContext<'_>,
    path: FieldPath<'_>,
) -> Result<Option<TimestampMs>, A::Error> {
    let value = next_scalar(map, context, path, TIMESTAMP_EXPECTED)?;
    timestamp_from_value(value, context.received_at_ms, context.limits)
        .map_err(|problem| context.reject_at(path, problem))
}

/// A finite number, or `None` for `null`.
fn next_number<'de, A: MapAccess<'de>>(
    map: &mut A,
    context: &RowContext<'_>,
    path: FieldPath<'_>,
) -> Result<Option<f64>, A::Error> {
    match next_scalar(map, context, path, "a number")? {
        JsonValue::Null => Ok(None),
        JsonValue::Number(number) => check_finite(number)
            .map(Some)
            .map_err(|problem| context.reject_at(path, problem)),
        other => Err(context.reject_at(path, Problem::type_mismatch("a number", &other))),
    }
}

/// An object-valued field read by `reader`, or `None` for `null`.
fn next_entries<'de, A, V, C>(
    map: &mut A,
    context: &RowContext<'_>,
    path: FieldPath<'_>,
    reader: EntriesReader<C>,
) -> Result<Option<Vec<(String, V)>>, A::Error>
where
    A: MapAccess<'de>,
    C: FnMut(Scalar<'de>, &ParseLimits) -> Result<V, Problem>,
{
    let seed = ValueSeed {
        context,
        path: Some(path),
        expected: "an object",
        object_reader: reader,
    };
    match map.next_value_seed(seed)? {
        JsonValue::Null => Ok(None),
        JsonValue::Object(entries) => Ok(Some(entries)),
        other => Err(context.reject_at(path, Problem::type_mismatch("an object", &other))),
    }
}

/// The wire's rules as yes-or-no tests on single values, for readers that
/// check a column at a time (the report's Parquet path). Each test is built
/// from the same checks the field readers apply, and says yes only when the
/// field reader would accept the value and read it as given: a reader that
/// gets a no sends the row through the field readers, which name the error.
pub mod accept {
    use super::{
        ParseLimits, check_label_value, check_length, check_model_name, in_unit_interval, not_too_late,
        unix_seconds_ms, within_length,
    };
    use crate::event::TimestampMs;

    /// `prediction_id`.
    #[inline]
    pub fn prediction_id(text: &str, limits: &ParseLimits) -> bool {
        within_length(text, limits) && !text.is_empty()
    }

    /// `model`.
    pub fn model(text: &str, limits: &ParseLimits) -> bool {
        check_length(text, limits).is_ok() && check_model_name(text).is_ok()
    }

    /// `version` and `error_type`.
    pub fn label_value(text: &str, limits: &ParseLimits) -> bool {
        check_length(text, limits).is_ok() && check_label_value(text).is_ok()
    }

    /// A class given as text: `prediction` or `actual`.
    #[inline]
    pub fn class(text: &str, limits: &ParseLimits) -> bool {
        within_length(text, limits)
    }

    /// A number that must be finite: a regression output or actual, a
    /// numeric feature, a business value.
    #[inline]
    pub fn finite(number: f64) -> bool {
        number.is_finite()
    }

    /// `confidence`.
    #[inline]
    pub fn confidence(number: f64) -> bool {
        number.is_finite() && in_unit_interval(number)
    }

    /// `latency_seconds`.
    #[inline]
    pub fn latency(number: f64) -> bool {
        number.is_finite() && (0.0..=super::MAX_LATENCY_SECONDS).contains(&number)
    }

    /// `timestamp` given as Unix seconds: its time in milliseconds, when it is
    /// accepted for an event received at `received_at_ms`.
    #[inline]
    pub fn timestamp_seconds(
        seconds: f64,
        received_at_ms: TimestampMs,
        limits: &ParseLimits,
    ) -> Option<TimestampMs> {
        if !(seconds.is_finite() && seconds >= 0.0) {
            return None;
        }
        let timestamp_ms = unix_seconds_ms(seconds);
        not_too_late(timestamp_ms, received_at_ms, limits).then_some(timestamp_ms)
    }

    /// The names of an entries object (`features`, `business`) that always
    /// carries the same keys: the reader's key checks pass for every subset
    /// of them in this order.
    pub fn entry_names<'a>(
        names: impl ExactSizeIterator<Item = &'a str> + Clone,
        max_entries: usize,
        limits: &ParseLimits,
    ) -> bool {
        names.len() <= max_entries
            && names.clone().all(|name| name.len() <= limits.max_string_bytes)
            && names
                .clone()
                .enumerate()
                .all(|(index, name)| names.clone().take(index).all(|earlier| earlier != name))
    }
}
