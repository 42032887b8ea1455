//! The compact stored form of a prediction event: postcard, with feature
//! names and segment keys replaced by ids from a dictionary that the store
//! keeps durably. About 40% of the JSON it came from, which is what lets one
//! SQLite writer keep up with ingestion.

use serde::{Deserialize, Serialize};

use crate::event::{
    Actual, FeatureValue, LabelEvent, Prediction, PredictionEvent, ScoredPrediction, Status, TimestampMs,
};

/// Maps names to dictionary ids while encoding; assigns new ids as needed.
pub trait NameIds {
    fn id_of(&mut self, name: &str) -> u32;
}

/// Looks dictionary ids up while decoding.
pub trait Names {
    fn name_of(&self, id: u32) -> Option<&str>;
}

#[derive(Serialize, Deserialize)]
enum StoredStatus<'a> {
    Ok,
    Error(&'a str),
    Timeout,
}

#[derive(Serialize, Deserialize)]
enum StoredPrediction<'a> {
    None,
    Class(&'a str),
    Value(f64),
}

#[derive(Serialize, Deserialize)]
enum StoredFeature<'a> {
    Number(f64),
    Category(&'a str),
    Missing,
}

#[derive(Serialize, Deserialize)]
struct StoredEvent<'a> {
    #[serde(borrow)]
    model: &'a str,
    version: &'a str,
    timestamp_ms: TimestampMs,
    received_ms: TimestampMs,
    latency_seconds: Option<f64>,
    status: StoredStatus<'a>,
    prediction: StoredPrediction<'a>,
    confidence: Option<f64>,
    probabilities: Vec<(&'a str, f64)>,
    features: Vec<(u32, StoredFeature<'a>)>,
    segments: Vec<(u32, &'a str)>,
}

/// The stored form of a label event (its id is the row key).
#[derive(Serialize, Deserialize)]
struct StoredLabel<'a> {
    actual: StoredActual<'a>,
    timestamp_ms: TimestampMs,
    received_ms: TimestampMs,
    #[serde(borrow)]
    business: Vec<(&'a str, f64)>,
}

#[derive(Serialize, Deserialize)]
enum StoredActual<'a> {
    Class(&'a str),
    Value(f64),
}

/// Encodes a label in its stored form. Labels are few beside predictions, so
/// their names are kept as they are, not in the dictionary.
pub fn encode_label(label: &LabelEvent, received_ms: TimestampMs) -> Vec<u8> {
    let stored = StoredLabel {
        actual: match &label.actual {
            Actual::Class(class) => StoredActual::Class(class),
            Actual::Value(value) => StoredActual::Value(*value),
        },
        timestamp_ms: label.timestamp_ms,
        received_ms,
        business: label
            .business
            .iter()
            .map(|(name, value)| (name.as_str(), *value))
            .collect(),
    };
    postcard::to_stdvec(&stored).expect("labels always serialize")
}

/// Decodes a stored label; also gives its time of receipt.
pub fn decode_label(prediction_id: &str, bytes: &[u8]) -> Result<(LabelEvent, TimestampMs), DecodeError> {
    let stored: StoredLabel<'_> = postcard::from_bytes(bytes)?;
    let label = LabelEvent {
        prediction_id: prediction_id.to_owned(),
        actual: match stored.actual {
            StoredActual::Class(class) => Actual::Class(class.to_owned()),
            StoredActual::Value(value) => Actual::Value(value),
        },
        timestamp_ms: stored.timestamp_ms,
        business: stored
            .business
            .into_iter()
            .map(|(name, value)| (name.to_owned(), value))
            .collect(),
    };
    Ok((label, stored.received_ms))
}

/// The first fields of a stored event: enough to decide its retention
/// without decoding the rest.
#[derive(Deserialize)]
struct StoredHeader<'a> {
    #[serde(borrow)]
    model: &'a str,
    #[allow(dead_code)]
    version: &'a str,
    timestamp_ms: TimestampMs,
}

/// The model and event time of a stored event, read from the front of its
/// stored form only.
pub fn decode_model_and_time(bytes: &[u8]) -> Result<(&str, TimestampMs), DecodeError> {
    let (header, _): (StoredHeader<'_>, _) = postcard::take_from_bytes(bytes)?;
    Ok((header.model, header.timestamp_ms))
}

/// Why a stored body cannot be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("corrupt stored event: {0}")]
    Corrupt(#[from] postcard::Error),
    #[error("stored event names unknown dictionary id {0}")]
    UnknownName(u32),
}

/// Encodes `event` (without its `prediction_id`, which the store keys on).
pub fn encode(event: &PredictionEvent, received_ms: TimestampMs, names: &mut impl NameIds) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    encode_into(event, received_ms, names, &mut out);
    out
}

/// Like [`encode`], appending to `out` (reused across rows).
pub fn encode_into(
    event: &PredictionEvent,
    received_ms: TimestampMs,
    names: &mut impl NameIds,
    out: &mut Vec<u8>,
) {
    let stored = StoredEvent {
        model: &event.model,
        version: &event.version,
        timestamp_ms: event.timestamp_ms,
        received_ms,
        latency_seconds: event.latency_seconds,
        status: match &event.status {
            Status::Ok => StoredStatus::Ok,
            Status::Error { error_type } => StoredStatus::Error(error_type),
            Status::Timeout => StoredStatus::Timeout,
        },
        prediction: match &event.prediction {
            None => StoredPrediction::None,
            Some(Prediction::Class(class)) => StoredPrediction::Class(class),
            Some(Prediction::Value(value)) => StoredPrediction::Value(*value),
        },
        confidence: event.confidence,
        probabilities: event
            .probabilities
            .iter()
            .map(|(class, probability)| (class.as_str(), *probability))
            .collect(),
        features: event
            .features
            .iter()
            .map(|(name, value)| {
                let value = match value {
                    FeatureValue::Number(number) => StoredFeature::Number(*number),
                    FeatureValue::Category(category) => StoredFeature::Category(category),
                    FeatureValue::Missing => StoredFeature::Missing,
                };
                (names.id_of(name), value)
            })
            .collect(),
        segments: event
            .segments
            .iter()
            .map(|(key, value)| (names.id_of(key), value.as_str()))
            .collect(),
    };
    postcard::to_io(&stored, out).expect("stored events always serialize into memory");
}

/// Decodes what the label join needs of a stored event.
pub fn decode_scored(bytes: &[u8], names: &impl Names) -> Result<ScoredPrediction, DecodeError> {
    let stored: StoredEvent<'_> = postcard::from_bytes(bytes)?;
    let segments = stored
        .segments
        .iter()
        .map(|(key, value)| {
            let key = names.name_of(*key).ok_or(DecodeError::UnknownName(*key))?;
            Ok((key.to_owned(), (*value).to_owned()))
        })
        .collect::<Result<_, DecodeError>>()?;
    Ok(ScoredPrediction {
        model: stored.model.to_owned(),
        version: stored.version.to_owned(),
        timestamp_ms: stored.timestamp_ms,
        prediction: match (stored.status, stored.prediction) {
            (StoredStatus::Ok, StoredPrediction::Class(class)) => Some(Prediction::Class(class.to_owned())),
            (StoredStatus::Ok, StoredPrediction::Value(value)) => Some(Prediction::Value(value)),
            _ => None,
        },
        segments,
    })
}

/// Decodes a stored event; returns it with its time of receipt.
pub fn decode(
    prediction_id: &str,
    bytes: &[u8],
    names: &impl Names,
) -> Result<(PredictionEvent, TimestampMs), DecodeError> {
    let stored: StoredEvent<'_> = postcard::from_bytes(bytes)?;
    let name = |id: u32| {
        names
            .name_of(id)
            .map(str::to_owned)
            .ok_or(DecodeError::UnknownName(id))
    };
    let event = PredictionEvent {
        prediction_id: prediction_id.to_owned(),
        model: stored.model.to_owned(),
        version: stored.version.to_owned(),
        timestamp_ms: stored.timestamp_ms,
        latency_seconds: stored.latency_seconds,
        status: match stored.status {
            StoredStatus::Ok => Status::Ok,
            StoredStatus::Error(error_type) => Status::Error {
                error_type: error_type.to_owned(),
            },
            StoredStatus::Timeout => Status::Timeout,
        },
        prediction: match stored.prediction {
            StoredPrediction::None => None,
            StoredPrediction::Class(class) => Some(Prediction::Class(class.to_owned())),
            StoredPrediction::Value(value) => Some(Prediction::Value(value)),
        },
        confidence: stored.confidence,
        probabilities: stored
            .probabilities
            .into_iter()
            .map(|(class, probability)| (class.to_owned(), probability))
            .collect(),
        features: stored
            .features
            .into_iter()
            .map(|(id, value)| {
                let value = match value {
                    StoredFeature::Number(number) => FeatureValue::Number(number),
                    StoredFeature::Category(category) => FeatureValue::Category(category.to_owned()),
                    StoredFeature::Missing => FeatureValue::Missing,
                };
                Ok((name(id)?, value))
            })
            .collect::<Result<_, DecodeError>>()?,
        segments: stored
            .segments
            .into_iter()
            .map(|(id, value)| Ok((name(id)?, value.to_owned())))
            .collect::<Result<_, DecodeError>>()?,
    };
    Ok((event, stored.received_ms))
}

/// An in-memory dictionary: the writer's copy of the stored one.
#[derive(Debug, Default, Clone)]
pub struct Dictionary {
    ids: rustc_hash::FxHashMap<String, u32>,
    names: Vec<String>,
}

impl Dictionary {
    pub fn from_names(names: Vec<String>) -> Self {
        let ids = names
            .iter()
            .enumerate()
            .map(|(id, name)| (name.clone(), id as u32))
            .collect();
        Self { ids, names }
    }

    /// Names added since the dictionary had `len` entries.
    pub fn names_since(&self, len: usize) -> &[String] {
        &self.names[len.min(self.names.len())..]
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Forgets names added since the dictionary had `len` entries (after a
    /// failed commit that would have stored them).
    pub fn truncate(&mut self, len: usize) {
        for name in self.names.drain(len.min(self.names.len())..) {
            self.ids.remove(&name);
        }
    }
}

impl Dictionary {
    /// The id of `name`, if it has one.
    pub fn get(&self, name: &str) -> Option<u32> {
        self.ids.get(name).copied()
    }
}

impl NameIds for Dictionary {
    fn id_of(&mut self, name: &str) -> u32 {
        if let Some(id) = self.ids.get(name) {
            return *id;
        }
        let id = self.names.len() as u32;
        self.names.push(name.to_owned());
        self.ids.insert(name.to_owned(), id);
        id
    }
}

impl Names for Dictionary {
    fn name_of(&self, id: u32) -> Option<&str> {
        self.names.get(id as usize).map(String::as_str)
    }
}

#[cfg(test)]
mod header_tests {
    use super::*;

    #[test]
    fn the_header_is_the_front_of_the_stored_form() {
        let event = PredictionEvent {
            prediction_id: "p".into(),
            model: "fraud".into(),
            version: "v1".into(),
            timestamp_ms: 1_764_000_000_123,
            latency_seconds: Some(0.1),
            status: Status::Ok,
            prediction: Some(Prediction::Class("1".into())),
            confidence: Some(0.9),
            probabilities: Vec::new(),
            features: vec![("amount".into(), FeatureValue::Number(3.0))],
            segments: vec![("region".into(), "eu".into())],
        };
        let mut names = Dictionary::default();
        let bytes = encode(&event, 5, &mut names);
        assert_eq!(
            decode_model_and_time(&bytes).unwrap(),
            ("fraud", 1_764_000_000_123)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_through_the_stored_form() {
        let event = PredictionEvent {
            prediction_id: "p-1".into(),
            model: "fraud_detector".into(),
            version: "v3".into(),
            timestamp_ms: 1_764_331_200_000,
            latency_seconds: Some(0.012),
            status: Status::Error {
                error_type: "ValueError".into(),
            },
            prediction: Some(Prediction::Class("1".into())),
            confidence: Some(0.92),
            probabilities: vec![("0".into(), 0.08), ("1".into(), 0.92)],
            features: vec![
                ("amount".into(), FeatureValue::Number(120.5)),
                ("country".into(), FeatureValue::Category("DE".into())),
                ("age".into(), FeatureValue::Missing),
            ],
            segments: vec![("region".into(), "eu".into())],
        };
        let mut dictionary = Dictionary::default();
        let bytes = encode(&event, 42, &mut dictionary);
        assert_eq!(dictionary.len(), 4);
        let (decoded, received_ms) = decode("p-1", &bytes, &dictionary).unwrap();
        assert_eq!((decoded, received_ms), (event, 42));
        dictionary.truncate(1);
        assert!(matches!(
            decode("p-1", &bytes, &dictionary),
            Err(DecodeError::UnknownName(1))
        ));
    }
}
