//! The events the shipper sends, and their NDJSON form (SPEC §2): the only
//! place where the SDK's types meet serde.

use std::borrow::Cow;
use std::sync::Arc;

use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};

use crate::PredictionId;
use crate::model::{FeatureValue, Fields, Output};

/// How a prediction ended, as shipped in `status` (and `error_type`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Status {
    Ok,
    Timeout,
    Error(Cow<'static, str>),
}

/// A model's name and version, as events carry them.
#[derive(Debug)]
pub(crate) struct ModelNames {
    pub(crate) model: Box<str>,
    pub(crate) version: Box<str>,
}

/// One prediction, as it waits in the queue. Serialization happens on the
/// shipper's thread, not in `predict()`.
#[derive(Debug)]
pub(crate) struct PredictionRecord {
    pub(crate) id: PredictionId,
    /// The model's name and version: one shared allocation, so that queueing
    /// an event costs one reference-count increment.
    pub(crate) model: Arc<ModelNames>,
    pub(crate) unix_millis: u64,
    pub(crate) latency_seconds: f64,
    pub(crate) status: Status,
    pub(crate) output: Option<Output>,
    pub(crate) confidence: Option<f64>,
    pub(crate) probabilities: Option<Vec<(Cow<'static, str>, f64)>>,
    pub(crate) fields: Option<Box<Fields>>,
}

/// The ground truth of a prediction: a class or a value.
#[derive(Debug, Clone, PartialEq)]
pub enum Actual {
    /// The true class of a classifier's prediction.
    Class(Cow<'static, str>),
    /// The true value of a regression model's prediction.
    Value(f64),
}

impl From<&'static str> for Actual {
    fn from(class: &'static str) -> Self {
        Self::Class(Cow::Borrowed(class))
    }
}

impl From<String> for Actual {
    fn from(class: String) -> Self {
        Self::Class(Cow::Owned(class))
    }
}

impl From<f64> for Actual {
    fn from(value: f64) -> Self {
        Self::Value(value)
    }
}

/// One label, as it waits in the queue.
#[derive(Debug)]
pub(crate) struct LabelRecord {
    pub(crate) id: PredictionId,
    pub(crate) actual: Actual,
    pub(crate) unix_millis: u64,
    pub(crate) business: Vec<(Cow<'static, str>, f64)>,
}

/// Serializes a list of pairs as a JSON object.
struct PairsAsMap<'a, V>(&'a [(Cow<'static, str>, V)]);

impl<V: Serialize> Serialize for PairsAsMap<'_, V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (key, value) in self.0 {
            map.serialize_entry(key.as_ref(), value)?;
        }
        map.end()
    }
}

impl Serialize for FeatureValue {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            // The server refuses NaN and infinities; they are missing values.
            Self::Number(number) if number.is_finite() => serializer.serialize_f64(*number),
            Self::Number(_) | Self::Missing => serializer.serialize_none(),
            Self::Text(text) => serializer.serialize_str(text),
            Self::Bool(flag) => serializer.serialize_bool(*flag),
        }
    }
}

#[derive(Serialize)]
#[serde(untagged)]
enum WireOutput<'a> {
    Class(&'a str),
    Value(f64),
}

#[derive(Serialize)]
struct PredictionRow<'a> {
    prediction_id: PredictionId,
    model: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<&'a str>,
    timestamp: f64,
    latency_seconds: f64,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_type: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prediction: Option<WireOutput<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    probabilities: Option<PairsAsMap<'a, f64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    confidence: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    features: Option<PairsAsMap<'a, FeatureValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    segments: Option<PairsAsMap<'a, String>>,
}

#[derive(Serialize)]
struct LabelRow<'a> {
    prediction_id: PredictionId,
    actual: WireOutput<'a>,
    timestamp: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    business: Option<PairsAsMap<'a, f64>>,
}

impl Serialize for PredictionId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

fn unix_seconds(unix_millis: u64) -> f64 {
    unix_millis as f64 / 1000.0
}

/// Appends `record` to `body` as one NDJSON line.
pub(crate) fn write_prediction(body: &mut Vec<u8>, record: &PredictionRecord) {
    let (status, error_type) = match &record.status {
        Status::Ok => ("ok", None),
        Status::Timeout => ("timeout", None),
        Status::Error(error_type) => ("error", Some(error_type.as_ref())),
    };
    let fields = record.fields.as_deref();
    let row = PredictionRow {
        prediction_id: record.id,
        model: &record.model.model,
        // An empty version is no version.
        version: (!record.model.version.is_empty()).then_some(&*record.model.version),
        timestamp: unix_seconds(record.unix_millis),
        latency_seconds: record.latency_seconds,
        status,
        error_type,
        prediction: record.output.as_ref().map(|output| match output {
            Output::Class(class) => WireOutput::Class(class),
            Output::Value(value) => WireOutput::Value(*value),
        }),
        probabilities: record.probabilities.as_deref().map(PairsAsMap),
        // The server takes either, and probabilities say more.
        confidence: record.confidence.filter(|_| record.probabilities.is_none()),
        features: fields
            .filter(|fields| !fields.features.is_empty())
            .map(|fields| PairsAsMap(&fields.features)),
        segments: fields
            .filter(|fields| !fields.segments.is_empty())
            .map(|fields| PairsAsMap(&fields.segments)),
    };
    serde_json::to_writer(&mut *body, &row).expect("writing JSON to a Vec cannot fail");
    body.push(b'\n');
}

/// Appends `record` to `body` as one NDJSON line.
pub(crate) fn write_label(body: &mut Vec<u8>, record: &LabelRecord) {
    let row = LabelRow {
        prediction_id: record.id,
        actual: match &record.actual {
            Actual::Class(class) => WireOutput::Class(class),
            Actual::Value(value) => WireOutput::Value(*value),
        },
        timestamp: unix_seconds(record.unix_millis),
        business: (!record.business.is_empty()).then_some(PairsAsMap(&record.business)),
    };
    serde_json::to_writer(&mut *body, &row).expect("writing JSON to a Vec cannot fail");
    body.push(b'\n');
}

/// The part of the server's answer to a batch that the shipper reads.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct BatchAnswer {
    pub(crate) accepted: u64,
    #[serde(default)]
    pub(crate) rejected: Vec<serde_json::Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prediction_is_one_line_of_the_wire_format() {
        let mut fields = Fields::default();
        fields
            .number("amount", 120.5)
            .text("country", "DE")
            .number("bad", f64::NAN);
        fields.segment("region", "eu");
        let record = PredictionRecord {
            id: "01900000-0000-7000-8000-000000000001".parse().expect("uuid"),
            model: Arc::new(ModelNames {
                model: "fraud_detector".into(),
                version: "v3".into(),
            }),
            unix_millis: 1_764_331_200_123,
            latency_seconds: 0.012,
            status: Status::Ok,
            output: Some(Output::Class(Cow::Borrowed("1"))),
            confidence: Some(0.92),
            probabilities: Some(vec![(Cow::Borrowed("0"), 0.08), (Cow::Borrowed("1"), 0.92)]),
            fields: Some(Box::new(fields)),
        };
        let mut body = Vec::new();
        write_prediction(&mut body, &record);
        assert_eq!(
            String::from_utf8(body).expect("utf-8"),
            r#"{"prediction_id":"01900000-0000-7000-8000-000000000001","model":"fraud_detector","version":"v3","timestamp":1764331200.123,"latency_seconds":0.012,"status":"ok","prediction":"1","probabilities":{"0":0.08,"1":0.92},"features":{"amount":120.5,"country":"DE","bad":null},"segments":{"region":"eu"}}"#
                .to_owned()
                + "\n"
        );
    }

    #[test]
    fn errors_and_labels() {
        let record = PredictionRecord {
            id: "01900000-0000-7000-8000-000000000002".parse().expect("uuid"),
            model: Arc::new(ModelNames {
                model: "m".into(),
                version: "".into(),
            }),
            unix_millis: 1_000,
            latency_seconds: 1.5,
            status: Status::Error(Cow::Borrowed("ValueError")),
            output: None,
            confidence: None,
            probabilities: None,
            fields: None,
        };
        let mut body = Vec::new();
        write_prediction(&mut body, &record);
        write_label(
            &mut body,
            &LabelRecord {
                id: record.id,
                actual: Actual::from("0"),
                unix_millis: 2_000,
                business: vec![(Cow::Borrowed("revenue"), 42.5)],
            },
        );
        assert_eq!(
            String::from_utf8(body).expect("utf-8"),
            "{\"prediction_id\":\"01900000-0000-7000-8000-000000000002\",\"model\":\"m\",\"timestamp\":1.0,\
             \"latency_seconds\":1.5,\"status\":\"error\",\"error_type\":\"ValueError\"}\n\
             {\"prediction_id\":\"01900000-0000-7000-8000-000000000002\",\"actual\":\"0\",\"timestamp\":2.0,\
             \"business\":{\"revenue\":42.5}}\n"
        );
    }
}
