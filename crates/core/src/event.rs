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

/// The ground truth of one prediction, as a label event gives it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Actual {
    /// A class label; for classifiers.
    Class(String),
    /// A number: the true value for regression models (for a classifier it
    /// names the class whose label is its decimal form, see [`Actual::class`]).
    Value(f64),
}

impl Actual {
    /// The class this actual names, for a classifier. Numbers name the class
    /// spelled as the number (`1` names `"1"`, `0.5` names `"0.5"`), since
    /// clients often send integer classes as JSON numbers.
    pub fn class(&self) -> std::borrow::Cow<'_, str> {
        match self {
            Actual::Class(class) => std::borrow::Cow::Borrowed(class),
            Actual::Value(value) => std::borrow::Cow::Owned(format_number(*value)),
        }
    }

    /// The true value, for a regression model. A string is parsed as a number;
    /// `None` when it is not one.
    pub fn value(&self) -> Option<f64> {
        match self {
            Actual::Value(value) => Some(*value),
            Actual::Class(text) => Actual::value_of_text(text),
        }
    }

    /// The true value a class text reads as, for a regression model: what
    /// [`Actual::value`] gives for `Actual::Class(text)`.
    pub fn value_of_text(text: &str) -> Option<f64> {
        text.trim().parse::<f64>().ok().filter(|value| value.is_finite())
    }

    /// Same ground truth, bit for bit (so that a resend is a duplicate).
    pub fn same_as(&self, other: &Actual) -> bool {
        match (self, other) {
            (Actual::Class(a), Actual::Class(b)) => a == b,
            (Actual::Value(a), Actual::Value(b)) => a.to_bits() == b.to_bits(),
            _ => false,
        }
    }
}

/// Integers without a fraction (`1`, not `1.0`); other numbers as Rust's
/// shortest round-trip form.
fn format_number(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else {
        format!("{value}")
    }
}

/// A validated label event: the ground truth of a prediction, known later.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelEvent {
    pub prediction_id: String,
    pub actual: Actual,
    /// When the ground truth became known; the time of receipt when absent.
    /// Quality is attributed to the prediction's time, not this one.
    pub timestamp_ms: TimestampMs,
    /// Business values attributed to the prediction (`revenue`, `converted`),
    /// sorted by name.
    pub business: Vec<(String, f64)>,
}

impl LabelEvent {
    /// Whether `other` carries the same ground truth and business values, so
    /// that storing it again changes nothing (the timestamp does not count).
    pub fn same_content(&self, other: &LabelEvent) -> bool {
        self.actual.same_as(&other.actual)
            && self.business.len() == other.business.len()
            && self
                .business
                .iter()
                .zip(&other.business)
                .all(|((a, x), (b, y))| a == b && x.to_bits() == y.to_bits())
    }
}

/// What the label join needs of a stored prediction: not its features, so
/// that decoding one for a join allocates little.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoredPrediction {
    pub model: String,
    pub version: String,
    pub timestamp_ms: TimestampMs,
    /// What a label scores: `None` when the prediction failed or predicted
    /// nothing.
    pub prediction: Option<Prediction>,
    pub segments: Vec<(String, String)>,
}

impl From<&PredictionEvent> for ScoredPrediction {
    fn from(event: &PredictionEvent) -> Self {
        Self {
            model: event.model.clone(),
            version: event.version.clone(),
            timestamp_ms: event.timestamp_ms,
            prediction: match event.status {
                Status::Ok => event.prediction.clone(),
                _ => None,
            },
            segments: event.segments.clone(),
        }
    }
}
