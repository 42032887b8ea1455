//! What a model is to the SDK: the [`Model`] trait, what it predicts
//! ([`Prediction`]), how it fails ([`Failure`]) and what it says about its
//! input ([`Fields`]).

use std::borrow::Cow;

/// A model that [`MonitoredPredictor`](crate::MonitoredPredictor) can wrap.
///
/// Only [`predict`](Model::predict) is required. [`describe`](Model::describe)
/// reports the features (and segments) of an input, for `ml_feature_value` and
/// for the shipped event; [`failure`](Model::failure) says how an error is
/// counted in `ml_prediction_errors_total`.
pub trait Model {
    /// What the model predicts from, for example a feature struct or a slice.
    type Input: ?Sized;
    /// How a prediction fails.
    type Error;

    /// Predicts from one input.
    fn predict(&self, input: &Self::Input) -> Result<Prediction, Self::Error>;

    /// Writes the features of `input` (and its segments, if any) into
    /// `fields`. The default reports nothing.
    fn describe(&self, input: &Self::Input, fields: &mut Fields) {
        let _ = (input, fields);
    }

    /// How `error` is counted: as a timeout, or as an error of some type. The
    /// default counts every error under the error type's own name (the last
    /// segment of its Rust path), as the seed counts Python exceptions.
    fn failure(&self, error: &Self::Error) -> Failure {
        let _ = error;
        Failure::Error(Cow::Borrowed(short_type_name::<Self::Error>()))
    }
}

/// The last path segment of a type's name, generics stripped:
/// `std::io::Error` gives `Error`.
fn short_type_name<T: ?Sized>() -> &'static str {
    let full_name = std::any::type_name::<T>();
    let without_generics = full_name.split('<').next().unwrap_or(full_name);
    without_generics.rsplit("::").next().unwrap_or(without_generics)
}

/// How a failed prediction is counted in `ml_prediction_errors_total` and
/// shipped (`status` `timeout` or `error`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The model ran out of time; counted with `error_type="timeout"`.
    Timeout,
    /// Any other failure, with its error type (for example `ValueError`).
    Error(Cow<'static, str>),
}

/// What a model predicted: a class or a number, with the model's confidence
/// for a class.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    output: Output,
    confidence: Option<f64>,
    probabilities: Option<Vec<(Cow<'static, str>, f64)>>,
}

/// The output of a prediction.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// A classifier's predicted class.
    Class(Cow<'static, str>),
    /// A regression model's predicted value.
    Value(f64),
}

impl Prediction {
    /// A predicted class, without confidence. A `&'static str` costs no
    /// allocation.
    #[inline]
    pub fn class(class: impl Into<Cow<'static, str>>) -> Self {
        Self {
            output: Output::Class(class.into()),
            confidence: None,
            probabilities: None,
        }
    }

    /// A predicted value (regression).
    #[inline]
    pub fn value(value: f64) -> Self {
        Self {
            output: Output::Value(value),
            confidence: None,
            probabilities: None,
        }
    }

    /// The class of highest probability, with that probability as the
    /// confidence; the probabilities are shipped with the event. Returns
    /// `None` when `probabilities` is empty or holds a NaN.
    pub fn from_probabilities<C: Into<Cow<'static, str>>>(
        probabilities: impl IntoIterator<Item = (C, f64)>,
    ) -> Option<Self> {
        let probabilities: Vec<(Cow<'static, str>, f64)> = probabilities
            .into_iter()
            .map(|(class, probability)| (class.into(), probability))
            .collect();
        if probabilities.iter().any(|(_, probability)| probability.is_nan()) {
            return None;
        }
        let (best_class, best_probability) = probabilities
            .iter()
            .max_by(|left, right| left.1.total_cmp(&right.1))
            .map(|(class, probability)| (class.clone(), *probability))?;
        Some(Self {
            output: Output::Class(best_class),
            confidence: Some(best_probability),
            probabilities: Some(probabilities),
        })
    }

    /// Sets the confidence of the predicted class, in [0, 1]. A value outside
    /// that range (or NaN) is recorded as no confidence.
    #[must_use]
    #[inline]
    pub fn with_confidence(mut self, confidence: f64) -> Self {
        self.confidence = (0.0..=1.0).contains(&confidence).then_some(confidence);
        self
    }

    /// The output: a class or a value.
    #[inline]
    pub fn output(&self) -> &Output {
        &self.output
    }

    /// The predicted class, if the model is a classifier.
    #[inline]
    pub fn predicted_class(&self) -> Option<&str> {
        match &self.output {
            Output::Class(class) => Some(class),
            Output::Value(_) => None,
        }
    }

    /// The predicted value, if the model is a regression model.
    pub fn predicted_value(&self) -> Option<f64> {
        match self.output {
            Output::Value(value) => Some(value),
            Output::Class(_) => None,
        }
    }

    /// The confidence in the predicted class, if the model gave one.
    #[inline]
    pub fn confidence(&self) -> Option<f64> {
        self.confidence
    }

    /// The class probabilities, if the prediction was built from them.
    #[inline]
    pub fn probabilities(&self) -> Option<&[(Cow<'static, str>, f64)]> {
        self.probabilities.as_deref()
    }
}

/// A feature's value as shipped in a prediction event.
#[derive(Debug, Clone, PartialEq)]
pub enum FeatureValue {
    /// A numeric feature; its mean, std, min and max go to `ml_feature_value`.
    Number(f64),
    /// A categorical feature.
    Text(String),
    /// A boolean feature.
    Bool(bool),
    /// A feature that the input lacks (`null` on the wire).
    Missing,
}

/// The features and segments of one input, filled by
/// [`Model::describe`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fields {
    pub(crate) features: Vec<(Cow<'static, str>, FeatureValue)>,
    pub(crate) segments: Vec<(Cow<'static, str>, String)>,
}

impl Fields {
    /// A numeric feature.
    pub fn number(&mut self, name: impl Into<Cow<'static, str>>, value: f64) -> &mut Self {
        self.features.push((name.into(), FeatureValue::Number(value)));
        self
    }

    /// A categorical feature.
    pub fn text(&mut self, name: impl Into<Cow<'static, str>>, value: impl Into<String>) -> &mut Self {
        self.features
            .push((name.into(), FeatureValue::Text(value.into())));
        self
    }

    /// A boolean feature.
    pub fn boolean(&mut self, name: impl Into<Cow<'static, str>>, value: bool) -> &mut Self {
        self.features.push((name.into(), FeatureValue::Bool(value)));
        self
    }

    /// A feature that this input lacks.
    pub fn missing(&mut self, name: impl Into<Cow<'static, str>>) -> &mut Self {
        self.features.push((name.into(), FeatureValue::Missing));
        self
    }

    /// A segment (for example `region` = `eu`), by which the server can
    /// narrow quality figures.
    pub fn segment(&mut self, key: impl Into<Cow<'static, str>>, value: impl Into<String>) -> &mut Self {
        self.segments.push((key.into(), value.into()));
        self
    }

    /// Whether neither a feature nor a segment was written.
    pub fn is_empty(&self) -> bool {
        self.features.is_empty() && self.segments.is_empty()
    }

    /// The features written so far, in order.
    pub fn features(&self) -> &[(Cow<'static, str>, FeatureValue)] {
        &self.features
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probabilities_pick_the_most_likely_class() {
        let prediction = Prediction::from_probabilities([("0", 0.08), ("1", 0.92)]).expect("not empty");
        assert_eq!(prediction.predicted_class(), Some("1"));
        assert_eq!(prediction.confidence(), Some(0.92));
        assert!(Prediction::from_probabilities(Vec::<(&'static str, f64)>::new()).is_none());
        assert!(Prediction::from_probabilities([("0", f64::NAN)]).is_none());
    }

    #[test]
    fn confidence_outside_the_unit_interval_is_dropped() {
        assert_eq!(Prediction::class("a").with_confidence(1.5).confidence(), None);
        assert_eq!(
            Prediction::class("a").with_confidence(f64::NAN).confidence(),
            None
        );
        assert_eq!(
            Prediction::class("a").with_confidence(0.7).confidence(),
            Some(0.7)
        );
    }

    #[test]
    fn default_error_type_is_the_short_type_name() {
        assert_eq!(short_type_name::<std::io::Error>(), "Error");
        assert_eq!(short_type_name::<std::num::ParseFloatError>(), "ParseFloatError");
        assert_eq!(short_type_name::<Vec<std::num::ParseIntError>>(), "Vec");
    }
}
