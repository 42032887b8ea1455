//! [`MonitoredPredictor`]: a model wrapped so that every prediction records
//! the seed's metrics and, with a shipper, becomes an event for the server.

use std::borrow::Cow;
use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::PredictionId;
use crate::clock::unix_millis_at;
use crate::metrics::{Limits, Metrics, ModelHandles};
use crate::model::{Failure, Fields, Model, Output, Prediction};
use crate::shipper::{Shipper, ShipperHandle};
use crate::wire::{Actual, ModelNames, PredictionRecord, Status};

/// A successful prediction, with its id and how long the model took.
#[derive(Debug, Clone, PartialEq)]
pub struct Predicted {
    /// The id to report the prediction's label with.
    pub id: PredictionId,
    /// What the model predicted.
    pub prediction: Prediction,
    /// How long the model took.
    pub latency: Duration,
}

/// A failed prediction: the model's error, how it was counted, and the id
/// of the shipped error event.
#[derive(Debug)]
pub struct PredictFailed<E> {
    /// The id of the error event.
    pub id: PredictionId,
    /// The model's error.
    pub error: E,
    /// How it was counted in `ml_prediction_errors_total`.
    pub failure: Failure,
    /// How long the model took to fail.
    pub latency: Duration,
}

impl<E: fmt::Display> fmt::Display for PredictFailed<E> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "prediction {} failed: {}", self.id, self.error)
    }
}

impl<E: std::error::Error + 'static> std::error::Error for PredictFailed<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

static GLOBAL_METRICS: OnceLock<Metrics> = OnceLock::new();

impl Metrics {
    /// The process-wide families that predictors use unless
    /// [`PredictorBuilder::metrics`] says otherwise, like the Python client's
    /// default registry.
    pub fn global() -> &'static Metrics {
        GLOBAL_METRICS.get_or_init(Metrics::new)
    }
}

/// Configures a [`MonitoredPredictor`]; from [`MonitoredPredictor::builder`].
pub struct PredictorBuilder<M> {
    model: M,
    model_name: String,
    model_version: String,
    metrics: Option<Metrics>,
    shipper: Option<ShipperHandle>,
    classes: Vec<String>,
    limits: Limits,
}

impl<M> fmt::Debug for PredictorBuilder<M> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("PredictorBuilder")
            .field("model_name", &self.model_name)
            .field("model_version", &self.model_version)
            .field("classes", &self.classes)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl<M: Model> PredictorBuilder<M> {
    /// Records into `metrics` instead of [`Metrics::global`].
    pub fn metrics(mut self, metrics: &Metrics) -> Self {
        self.metrics = Some(metrics.clone());
        self
    }

    /// Ships every prediction (successes and failures) through `shipper`.
    pub fn shipper(mut self, shipper: &Shipper) -> Self {
        self.shipper = Some(shipper.handle());
        self
    }

    /// Ships through a shipper handle.
    pub fn shipper_handle(mut self, shipper: ShipperHandle) -> Self {
        self.shipper = Some(shipper);
        self
    }

    /// The classes the model predicts, when known: their series are resolved
    /// now, and looking one up later takes no lock. Other classes are still
    /// counted.
    pub fn classes<C: Into<String>>(mut self, classes: impl IntoIterator<Item = C>) -> Self {
        self.classes = classes.into_iter().map(Into::into).collect();
        self
    }

    /// At most this many `predicted_class` values (default 64); later ones
    /// are counted as `__other__`.
    pub fn max_classes(mut self, limit: usize) -> Self {
        self.limits.max_classes = limit.max(1);
        self
    }

    /// At most this many `error_type` values (default 32); later ones are
    /// counted as `__other__`.
    pub fn max_error_types(mut self, limit: usize) -> Self {
        self.limits.max_error_types = limit.max(1);
        self
    }

    /// At most this many features in `ml_feature_value` (default 64); later
    /// ones share `__other__`. Every feature is still shipped.
    pub fn max_features(mut self, limit: usize) -> Self {
        self.limits.max_features = limit.max(1);
        self
    }

    /// The window of the `ml_feature_value` statistics (default 1 minute):
    /// the gauges show the last complete window.
    pub fn feature_window(mut self, window: Duration) -> Self {
        self.limits.feature_window = window.max(Duration::from_millis(1));
        self
    }

    /// Resolves the model's series and returns the predictor.
    pub fn build(self) -> MonitoredPredictor<M> {
        let metrics = self.metrics.unwrap_or_else(|| Metrics::global().clone());
        let handles =
            metrics.model_handles(&self.model_name, &self.model_version, &self.limits, &self.classes);
        MonitoredPredictor {
            model: self.model,
            names: Arc::new(ModelNames {
                model: self.model_name.into_boxed_str(),
                version: self.model_version.into_boxed_str(),
            }),
            handles,
            shipper: self.shipper,
        }
    }
}

/// A model wrapped to record the seed's metrics on every prediction and, with
/// a [`Shipper`], to ship every prediction to a modelwatch server.
///
/// Per call it counts `ml_prediction_requests_total`, observes the model's
/// time in `ml_prediction_latency_seconds`, and then either counts the class
/// (`ml_prediction_class_total`) and observes its confidence
/// (`ml_prediction_confidence`), or counts the error
/// (`ml_prediction_errors_total`). Numeric features from
/// [`Model::describe`] feed `ml_feature_value`. Shipping only enqueues: it
/// never waits for the network.
///
/// It is `Sync` when the model is: share one across threads.
pub struct MonitoredPredictor<M> {
    model: M,
    names: Arc<ModelNames>,
    handles: ModelHandles,
    shipper: Option<ShipperHandle>,
}

impl<M> fmt::Debug for MonitoredPredictor<M> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("MonitoredPredictor")
            .field("model_name", &self.names.model)
            .field("model_version", &self.names.version)
            .field("shipper", &self.shipper)
            .finish_non_exhaustive()
    }
}

impl<M: Model> MonitoredPredictor<M> {
    /// Wraps `model`, named and versioned as in the metrics' `model_name` and
    /// `model_version` labels and the events' `model` and `version`.
    pub fn builder(
        model: M,
        model_name: impl Into<String>,
        model_version: impl Into<String>,
    ) -> PredictorBuilder<M> {
        PredictorBuilder {
            model,
            model_name: model_name.into(),
            model_version: model_version.into(),
            metrics: None,
            shipper: None,
            classes: Vec::new(),
            limits: Limits::default(),
        }
    }

    /// Predicts, records the metrics and, with a shipper, queues the event.
    pub fn predict(&self, input: &M::Input) -> Result<Predicted, PredictFailed<M::Error>> {
        let started = Instant::now();
        let result = self.model.predict(input);
        let finished = Instant::now();
        let latency = finished - started;
        self.handles.record_request(latency.as_secs_f64());
        let unix_millis = unix_millis_at(finished);
        let id = PredictionId::new(unix_millis);

        let mut fields = Fields::default();
        self.model.describe(input, &mut fields);
        if !fields.features.is_empty() {
            self.handles.record_features(finished, &fields.features);
        }

        match result {
            Ok(prediction) => {
                if let Output::Class(class) = prediction.output() {
                    self.handles.record_class(class, prediction.confidence());
                }
                if let Some(shipper) = &self.shipper {
                    shipper.enqueue_prediction(PredictionRecord {
                        id,
                        model: self.names.clone(),
                        unix_millis,
                        latency_seconds: latency.as_secs_f64(),
                        status: Status::Ok,
                        output: Some(prediction.output().clone()),
                        confidence: prediction.confidence(),
                        probabilities: prediction.probabilities().map(<[_]>::to_vec),
                        fields: (!fields.is_empty()).then(|| Box::new(fields)),
                    });
                }
                Ok(Predicted {
                    id,
                    prediction,
                    latency,
                })
            }
            Err(error) => {
                let failure = self.model.failure(&error);
                let error_type = match &failure {
                    Failure::Timeout => Cow::Borrowed("timeout"),
                    Failure::Error(error_type) => error_type.clone(),
                };
                self.handles.record_error(error_type);
                if let Some(shipper) = &self.shipper {
                    shipper.enqueue_prediction(PredictionRecord {
                        id,
                        model: self.names.clone(),
                        unix_millis,
                        latency_seconds: latency.as_secs_f64(),
                        status: match &failure {
                            Failure::Timeout => Status::Timeout,
                            Failure::Error(error_type) => Status::Error(error_type.clone()),
                        },
                        output: None,
                        confidence: None,
                        probabilities: None,
                        fields: (!fields.is_empty()).then(|| Box::new(fields)),
                    });
                }
                Err(PredictFailed {
                    id,
                    error,
                    failure,
                    latency,
                })
            }
        }
    }

    /// Queues the ground truth of an earlier prediction of this model.
    /// Returns whether it was queued: `false` without a shipper, or when the
    /// queue is full (the drop is counted).
    pub fn report_label(&self, prediction_id: PredictionId, actual: impl Into<Actual>) -> bool {
        match &self.shipper {
            Some(shipper) => shipper.report_label(prediction_id, actual),
            None => false,
        }
    }

    /// The wrapped model.
    pub fn model(&self) -> &M {
        &self.model
    }

    /// The model's name.
    pub fn model_name(&self) -> &str {
        &self.names.model
    }

    /// The model's version.
    pub fn model_version(&self) -> &str {
        &self.names.version
    }

    /// The shipper, if the predictor ships events.
    pub fn shipper(&self) -> Option<&ShipperHandle> {
        self.shipper.as_ref()
    }
}
