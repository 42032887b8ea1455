//! Typed rows: the wire object of an event given field by field as typed
//! values (the cells of a Parquet row, say) instead of JSON text.
//!
//! The values go through the very field readers and rules that read the JSON
//! (`PredictionFields`, `LabelFields` and their `read_field`): a small serde
//! `Deserializer` over [`Value`]s stands where `serde_json` stands for a JSON
//! row, so a typed row is accepted or rejected exactly as the wire object it
//! stands for would be, with the same codes, messages and field paths. Nothing
//! here is serialized or parsed as text, and a row allocates only what its
//! event owns.

use std::ops::Range;

use serde::de::{self, DeserializeSeed, MapAccess, Visitor};

use super::{
    LabelField, LabelFields, PredictionField, PredictionFields, Problem, RowContext, RowError, RowFields,
    WireField,
};
use crate::event::{LabelEvent, PredictionEvent, TimestampMs};
use crate::wire::{FieldPath, ParseLimits};

/// One scalar of a typed row: what a JSON scalar of the wire object is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    /// An absent value (JSON `null`).
    Null,
    Bool(bool),
    Number(f64),
    Text(&'a str),
}

/// The value of one top-level field: a scalar, or an object of named scalars
/// (`features`, `segments`, `probabilities`, `business`) given as a range of
/// the row's entries.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue<'a> {
    Scalar(Value<'a>),
    Entries(Range<usize>),
}

/// One typed row: its top-level fields in the order they are read (the first
/// rejection wins, as in a JSON object read left to right), and the entries
/// the `Entries` fields point into. Both are plain vectors, so that a reader
/// clears and refills them row after row without allocating.
#[derive(Debug, Clone, PartialEq)]
pub struct TypedRow<'a, F> {
    pub fields: Vec<(F, FieldValue<'a>)>,
    pub entries: Vec<(&'a str, Value<'a>)>,
}

impl<F> Default for TypedRow<'_, F> {
    fn default() -> Self {
        Self {
            fields: Vec::new(),
            entries: Vec::new(),
        }
    }
}

impl<'a, F> TypedRow<'a, F> {
    pub fn clear(&mut self) {
        self.fields.clear();
        self.entries.clear();
    }

    pub fn scalar(&mut self, field: F, value: Value<'a>) {
        self.fields.push((field, FieldValue::Scalar(value)));
    }

    /// Adds `field` as an object of the given entries (none: the field is
    /// left out, as an empty CSV group is).
    pub fn entries(&mut self, field: F, entries: impl IntoIterator<Item = (&'a str, Value<'a>)>) {
        let start = self.entries.len();
        self.entries.extend(entries);
        if self.entries.len() > start {
            self.fields
                .push((field, FieldValue::Entries(start..self.entries.len())));
        }
    }
}

/// Validates a typed prediction row, as [`super::parse_prediction`] validates
/// the JSON object it stands for.
pub fn prediction_from_row(
    row: &TypedRow<'_, PredictionField>,
    received_at_ms: TimestampMs,
    limits: &ParseLimits,
) -> Result<PredictionEvent, RowError> {
    let context = RowContext::new(received_at_ms, limits);
    let fields: PredictionFields = read_row(row, &context)?;
    fields.into_event(received_at_ms)
}

/// Validates a typed label row, as [`super::parse_label`] validates the JSON
/// object it stands for.
pub fn label_from_row(
    row: &TypedRow<'_, LabelField>,
    received_at_ms: TimestampMs,
    limits: &ParseLimits,
) -> Result<LabelEvent, RowError> {
    let context = RowContext::new(received_at_ms, limits);
    let fields: LabelFields = read_row(row, &context)?;
    fields.into_event(received_at_ms)
}

/// What `RowReader::read_object` does for a JSON object, with the fields
/// already known: each at most once, each read by `F::read_field`.
fn read_row<'a, F>(row: &TypedRow<'a, F::Field>, context: &RowContext<'_>) -> Result<F, RowError>
where
    F: RowFields<'a>,
    F::Field: PartialEq,
{
    debug_assert!(F::Field::ALL.len() <= 64, "the seen-set is a u64");
    let mut fields = F::default();
    let mut seen: u64 = 0;
    for (field, value) in &row.fields {
        let path = FieldPath::top(field.wire_name());
        let position = F::Field::ALL
            .iter()
            .position(|known| known == field)
            .expect("a field of the row's kind");
        let bit = 1u64 << position;
        if seen & bit != 0 {
            return Err(Problem::invalid_value("duplicate field").at(Some(path.to_string())));
        }
        seen |= bit;
        let mut one_value = OneValue {
            value: Some(ValueDeserializer {
                value: value.clone(),
                entries: &row.entries,
            }),
        };
        if let Err(error) = fields.read_field(*field, &mut one_value, context) {
            context.blame(path);
            return Err(context.row_error(error));
        }
    }
    Ok(fields)
}

/// The map access `read_field` reads its one value from.
struct OneValue<'r, 'a> {
    value: Option<ValueDeserializer<'r, 'a>>,
}

impl<'a> MapAccess<'a> for OneValue<'_, 'a> {
    type Error = serde_json::Error;

    fn next_key_seed<K: DeserializeSeed<'a>>(&mut self, _seed: K) -> Result<Option<K::Value>, Self::Error> {
        Ok(None)
    }

    fn next_value_seed<V: DeserializeSeed<'a>>(&mut self, seed: V) -> Result<V::Value, Self::Error> {
        let value = self
            .value
            .take()
            .ok_or_else(|| de::Error::custom("a field has one value"))?;
        seed.deserialize(value)
    }
}

/// A field's value for the field readers' visitors.
struct ValueDeserializer<'r, 'a> {
    value: FieldValue<'a>,
    entries: &'r [(&'a str, Value<'a>)],
}

impl<'de> de::Deserializer<'de> for ValueDeserializer<'_, 'de> {
    type Error = serde_json::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.value {
            FieldValue::Scalar(value) => ScalarDeserializer(value).deserialize_any(visitor),
            FieldValue::Entries(range) => visitor.visit_map(EntriesAccess {
                entries: self.entries[range].iter(),
                pending: None,
            }),
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

/// One scalar: JSON's visitor calls, without JSON.
struct ScalarDeserializer<'a>(Value<'a>);

impl<'de> de::Deserializer<'de> for ScalarDeserializer<'de> {
    type Error = serde_json::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Null => visitor.visit_unit(),
            Value::Bool(flag) => visitor.visit_bool(flag),
            Value::Number(number) => visitor.visit_f64(number),
            Value::Text(text) => visitor.visit_borrowed_str(text),
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

/// The entries of an object-valued field, key then value.
struct EntriesAccess<'r, 'a> {
    entries: std::slice::Iter<'r, (&'a str, Value<'a>)>,
    pending: Option<Value<'a>>,
}

impl<'a> MapAccess<'a> for EntriesAccess<'_, 'a> {
    type Error = serde_json::Error;

    fn next_key_seed<K: DeserializeSeed<'a>>(&mut self, seed: K) -> Result<Option<K::Value>, Self::Error> {
        let Some((key, value)) = self.entries.next() else {
            return Ok(None);
        };
        self.pending = Some(*value);
        seed.deserialize(ScalarDeserializer(Value::Text(key))).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'a>>(&mut self, seed: V) -> Result<V::Value, Self::Error> {
        let value = self
            .pending
            .take()
            .ok_or_else(|| de::Error::custom("a value follows its key"))?;
        seed.deserialize(ScalarDeserializer(value))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{parse_label, parse_prediction};

    const NOW_MS: TimestampMs = 2_000_000_000_000;

    fn prediction(
        build: impl FnOnce(&mut TypedRow<'static, PredictionField>),
    ) -> Result<PredictionEvent, RowError> {
        let mut row = TypedRow::default();
        build(&mut row);
        prediction_from_row(&row, NOW_MS, &ParseLimits::default())
    }

    /// A typed row and its JSON object give the same event, or the same error.
    fn check(json: &str, build: impl FnOnce(&mut TypedRow<'static, PredictionField>)) {
        let from_json = parse_prediction(json.as_bytes(), NOW_MS, &ParseLimits::default());
        assert_eq!(prediction(build), from_json, "{json}");
    }

    #[test]
    fn typed_rows_read_as_their_wire_objects() {
        use PredictionField as P;
        check(
            r#"{"prediction_id":"p1","model":"m","version":"v2","timestamp":1700000000.5,"latency_seconds":0.25,
                "prediction":"1","confidence":0.75,"segments":{"region":"eu"},"features":{"amount":12.5,"country":"DE","flag":true}}"#,
            |row| {
                row.scalar(P::PredictionId, Value::Text("p1"));
                row.scalar(P::Model, Value::Text("m"));
                row.scalar(P::Version, Value::Text("v2"));
                row.scalar(P::Timestamp, Value::Number(1_700_000_000.5));
                row.scalar(P::LatencySeconds, Value::Number(0.25));
                row.scalar(P::Prediction, Value::Text("1"));
                row.scalar(P::Confidence, Value::Number(0.75));
                row.entries(P::Segments, [("region", Value::Text("eu"))]);
                row.entries(
                    P::Features,
                    [
                        ("amount", Value::Number(12.5)),
                        ("country", Value::Text("DE")),
                        ("flag", Value::Bool(true)),
                    ],
                );
            },
        );
        check(
            r#"{"prediction_id":"p2","model":"m","probabilities":{"a":0.25,"b":0.75}}"#,
            |row| {
                row.scalar(P::PredictionId, Value::Text("p2"));
                row.scalar(P::Model, Value::Text("m"));
                row.entries(
                    P::Probabilities,
                    [("a", Value::Number(0.25)), ("b", Value::Number(0.75))],
                );
            },
        );
    }

    #[test]
    fn typed_rows_are_rejected_as_their_wire_objects() {
        use PredictionField as P;
        check(r#"{"prediction_id":null,"model":"m"}"#, |row| {
            row.scalar(P::PredictionId, Value::Null);
            row.scalar(P::Model, Value::Text("m"));
        });
        check(r#"{"prediction_id":"p","model":"m","confidence":1.5}"#, |row| {
            row.scalar(P::PredictionId, Value::Text("p"));
            row.scalar(P::Model, Value::Text("m"));
            row.scalar(P::Confidence, Value::Number(1.5));
        });
        check(
            r#"{"prediction_id":"p","model":"m","confidence":"high"}"#,
            |row| {
                row.scalar(P::PredictionId, Value::Text("p"));
                row.scalar(P::Model, Value::Text("m"));
                row.scalar(P::Confidence, Value::Text("high"));
            },
        );
        check(
            r#"{"prediction_id":"p","model":"bad model","status":"error"}"#,
            |row| {
                row.scalar(P::PredictionId, Value::Text("p"));
                row.scalar(P::Model, Value::Text("bad model"));
                row.scalar(P::Status, Value::Text("error"));
            },
        );
        check(
            r#"{"prediction_id":"p","model":"m","timestamp":"yesterday"}"#,
            |row| {
                row.scalar(P::PredictionId, Value::Text("p"));
                row.scalar(P::Model, Value::Text("m"));
                row.scalar(P::Timestamp, Value::Text("yesterday"));
            },
        );
        check(
            r#"{"prediction_id":"p","model":"m","features":{"a":1,"b":true,"a":2}}"#,
            |row| {
                row.scalar(P::PredictionId, Value::Text("p"));
                row.scalar(P::Model, Value::Text("m"));
                row.entries(
                    P::Features,
                    [
                        ("a", Value::Number(1.0)),
                        ("b", Value::Bool(true)),
                        ("a", Value::Number(2.0)),
                    ],
                );
            },
        );
        // NaN cannot be written in JSON; it is refused like infinity would be.
        let error = prediction(|row| {
            row.scalar(P::PredictionId, Value::Text("p"));
            row.scalar(P::Model, Value::Text("m"));
            row.entries(P::Features, [("amount", Value::Number(f64::NAN))]);
        })
        .unwrap_err();
        assert_eq!(error.field.as_deref(), Some("features.amount"));
        assert_eq!(error.message, "must be a finite number");
    }

    #[test]
    fn typed_label_rows_read_as_their_wire_objects() {
        use LabelField as L;
        let limits = ParseLimits::default();
        type Build = fn(&mut TypedRow<'static, LabelField>);
        let cases: [(&str, Build); 3] = [
            (
                r#"{"prediction_id":"p","actual":"1","timestamp":"2026-01-01T00:00:00Z","business":{"z":2,"a":true}}"#,
                |row| {
                    row.scalar(L::PredictionId, Value::Text("p"));
                    row.scalar(L::Actual, Value::Text("1"));
                    row.scalar(L::Timestamp, Value::Text("2026-01-01T00:00:00Z"));
                    row.entries(L::Business, [("z", Value::Number(2.0)), ("a", Value::Bool(true))]);
                },
            ),
            (r#"{"prediction_id":"p"}"#, |row| {
                row.scalar(L::PredictionId, Value::Text("p"));
            }),
            (r#"{"prediction_id":"p","actual":false}"#, |row| {
                row.scalar(L::PredictionId, Value::Text("p"));
                row.scalar(L::Actual, Value::Bool(false));
            }),
        ];
        for (json, build) in cases {
            let mut row = TypedRow::default();
            build(&mut row);
            assert_eq!(
                label_from_row(&row, NOW_MS, &limits),
                parse_label(json.as_bytes(), NOW_MS, &limits),
                "{json}"
            );
        }
    }
}
