//! The Rust SDK of modelwatch: instrument a model server in-process.
//!
//! [`MonitoredPredictor`] wraps a [`Model`]. Every prediction records the
//! seed's Prometheus metrics, under its names, labels and buckets:
//!
//! | metric | labels |
//! |---|---|
//! | `ml_prediction_requests_total` | model_name, model_version |
//! | `ml_prediction_latency_seconds` (0.01 … 2.5) | model_name |
//! | `ml_prediction_errors_total` | model_name, error_type (`timeout` for timeouts) |
//! | `ml_prediction_confidence` (0.5 … 0.99) | model_name, predicted_class |
//! | `ml_prediction_class_total` | model_name, predicted_class |
//! | `ml_feature_value` | model_name, feature_name, statistic (mean, std, min, max) |
//!
//! Label sets are resolved once per model and class, so a prediction costs a
//! few atomic operations. Classes, error types and features are bounded per
//! model; past the limit they fold into `__other__`.
//!
//! With a [`Shipper`], every prediction also becomes an event (SPEC §2) that a
//! background thread posts, in NDJSON batches, to a modelwatch server's
//! `POST /v1/predictions`. `predict()` only enqueues, into a bounded queue;
//! when it is full the event is dropped and counted
//! (`modelwatch_sdk_events_dropped_total`, [`ShipperHandle::dropped`]). Each
//! prediction gets a time-ordered [`PredictionId`] (UUIDv7), with which its
//! label is reported later ([`ShipperHandle::report_label`], to
//! `POST /v1/labels`).
//!
//! [`MetricsServer`] serves a registry at `/metrics` from a background
//! thread, like the Python client's `start_http_server(8000)`.
//!
//! # Example
//!
//! ```
//! use modelwatch_sdk::{Metrics, Model, MonitoredPredictor, Prediction, encode_text};
//!
//! /// Flags a transaction as fraud above a threshold.
//! struct Threshold;
//!
//! impl Model for Threshold {
//!     type Input = f64;
//!     type Error = std::convert::Infallible;
//!
//!     fn predict(&self, score: &f64) -> Result<Prediction, Self::Error> {
//!         let class = if *score >= 0.5 { "1" } else { "0" };
//!         Ok(Prediction::class(class).with_confidence(score.max(1.0 - score)))
//!     }
//! }
//!
//! let metrics = Metrics::new();
//! let predictor = MonitoredPredictor::builder(Threshold, "fraud_detector", "v3")
//!     .metrics(&metrics)
//!     .classes(["0", "1"])
//!     .build();
//!
//! let predicted = predictor.predict(&0.92).unwrap();
//! assert_eq!(predicted.prediction.predicted_class(), Some("1"));
//!
//! let text = encode_text(&metrics.registry());
//! assert!(text.contains(r#"ml_prediction_class_total{model_name="fraud_detector",predicted_class="1"} 1"#));
//! assert!(text.contains(r#"ml_prediction_requests_total{model_name="fraud_detector",model_version="v3"} 1"#));
//! ```
//!
//! Shipping to a server, exposing `/metrics`, and reporting a label later:
//!
//! ```no_run
//! # use modelwatch_sdk::{Metrics, Model, MonitoredPredictor, Prediction};
//! # struct Threshold;
//! # impl Model for Threshold {
//! #     type Input = f64;
//! #     type Error = std::convert::Infallible;
//! #     fn predict(&self, score: &f64) -> Result<Prediction, Self::Error> {
//! #         Ok(Prediction::class(if *score >= 0.5 { "1" } else { "0" }))
//! #     }
//! # }
//! use std::sync::Arc;
//! use std::time::Duration;
//! use modelwatch_sdk::{MetricsServer, Shipper};
//!
//! let shipper = Shipper::builder("http://127.0.0.1:9400").start()?;
//! let metrics = Metrics::new();
//! let mut registry = metrics.registry();
//! shipper.register(&mut registry);
//! let _endpoint = MetricsServer::start("0.0.0.0:8000", Arc::new(registry))?;
//!
//! let predictor = MonitoredPredictor::builder(Threshold, "fraud_detector", "v3")
//!     .metrics(&metrics)
//!     .shipper(&shipper)
//!     .build();
//! let predicted = predictor.predict(&0.92).unwrap();
//! // ... days later, the truth is known:
//! shipper.report_label(predicted.id, "0");
//! shipper.shutdown(Duration::from_secs(5));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![deny(missing_docs)]

mod clock;
mod exposition;
mod id;
mod metrics;
mod model;
mod predictor;
mod shipper;
mod wire;

pub use crate::exposition::{MetricsServer, OPENMETRICS_CONTENT_TYPE, TEXT_CONTENT_TYPE};
pub use crate::id::PredictionId;
pub use crate::metrics::{
    CONFIDENCE_BUCKETS, LATENCY_BUCKETS, Metrics, OTHER, encode_openmetrics, encode_text,
};
pub use crate::model::{Failure, FeatureValue, Fields, Model, Output, Prediction};
pub use crate::predictor::{MonitoredPredictor, PredictFailed, Predicted, PredictorBuilder};
pub use crate::shipper::{Shipper, ShipperBuilder, ShipperError, ShipperHandle, ShipperStats};
pub use crate::wire::Actual;
/// The `prometheus-client` crate, whose [`Registry`](prometheus_client::registry::Registry)
/// the SDK registers into.
pub use prometheus_client;
