//! Domain types of the events modelwatch ingests, after validation.
//!
//! These are plain data: they do not derive `Serialize`/`Deserialize`. Wire
//! parsing and validation live in [`crate::wire`], which produces them.

/// Milliseconds since the Unix epoch, UTC. Event time everywhere in modelwatch.
pub type TimestampMs = i64;

/// The version label used when an event names no `version`.
pub const UNVERSIONED: &str = "unversioned";

/// Outcome of one prediction request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Ok,
    /// The model failed; `error_type` is the error's class name, as the seed's
    /// `type(e).__name__`.
    Error {
        error_type: String,
    },
    Timeout,
}

/// What the model predicted.
#[derive(Debug, Clone, PartialEq)]
pub enum Prediction {
    /// A class label of a classifier, always a string on the wire.
    Class(String),
    /// The output of a regression model.
    Value(f64),
}

/// One feature value of a prediction's input.
#[derive(Debug, Clone, PartialEq)]
pub enum FeatureValue {
    /// A finite number.
    Number(f64),
    /// A categorical value (strings, and booleans as `"true"`/`"false"`).
    Category(String),
    /// An explicit `null`: counted as missing.
    Missing,
}

/// A validated prediction event. Every field that was optional on the wire and
/// has a defined default is already resolved (timestamp, version).
#[derive(Debug, Clone, PartialEq)]
pub struct PredictionEvent {
    pub prediction_id: String,
    pub model: String,
    /// `UNVERSIONED` when the event named none.
    pub version: String,
    /// Event time; the time of receipt when the event gave none.
    pub timestamp_ms: TimestampMs,
    pub latency_seconds: Option<f64>,
    pub status: Status,
    pub prediction: Option<Prediction>,
    /// Confidence of the predicted class: the given `confidence`, or the
    /// probability of the predicted class in `probabilities`.
    pub confidence: Option<f64>,
    /// Class probabilities as given, in wire order.
    pub probabilities: Vec<(String, f64)>,
    pub features: Vec<(String, FeatureValue)>,
    pub segments: Vec<(String, String)>,
}
