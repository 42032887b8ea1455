//! The seed's metric families, their per-model handles, and their exposition.
//!
//! Label sets are resolved once: a model's handles are looked up when its
//! [`MonitoredPredictor`](crate::MonitoredPredictor) is built, and a class's
//! the first time it is predicted (or up front, with
//! [`classes`](crate::PredictorBuilder::classes)). A prediction then costs
//! atomic increments and two short histogram locks, not label hashing.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The buckets of `ml_prediction_latency_seconds`, the seed's.
pub const LATENCY_BUCKETS: [f64; 8] = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];
/// The buckets of `ml_prediction_confidence`, the seed's.
pub const CONFIDENCE_BUCKETS: [f64; 7] = [0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99];
/// The label value that classes, error types and features fold into past
/// their limit.
pub const OTHER: &str = "__other__";

type HistogramFamily<Labels> = Family<Labels, Histogram, fn() -> Histogram>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelVersionLabels {
    model_name: String,
    model_version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabels {
    model_name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    model_name: String,
    error_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabels {
    model_name: String,
    predicted_class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FeatureLabels {
    model_name: String,
    feature_name: String,
    statistic: &'static str,
}

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

fn confidence_histogram() -> Histogram {
    Histogram::new(CONFIDENCE_BUCKETS)
}

/// The seed's six metric families (SPEC §3), shared by every model of the
/// process. Cloning is cheap: clones share the same series.
///
/// Register them into the registry you expose with
/// [`register`](Metrics::register).
#[derive(Clone)]
pub struct Metrics {
    requests: Family<ModelVersionLabels, Counter>,
    latency: HistogramFamily<ModelLabels>,
    errors: Family<ErrorLabels, Counter>,
    confidence: HistogramFamily<ClassLabels>,
    classes: Family<ClassLabels, Counter>,
    features: Family<FeatureLabels, Gauge<f64, AtomicU64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// New, empty families.
    pub fn new() -> Self {
        Self {
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            errors: Family::default(),
            confidence: Family::new_with_constructor(confidence_histogram),
            classes: Family::default(),
            features: Family::default(),
        }
    }

    /// Registers the families in `registry` under the seed's names (a
    /// counter registered as `foo` is exposed as `foo_total`).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "ml_prediction_requests",
            "Total prediction requests",
            self.requests.clone(),
        );
        registry.register(
            "ml_prediction_latency_seconds",
            "Prediction latency",
            self.latency.clone(),
        );
        registry.register(
            "ml_prediction_errors",
            "Total prediction errors",
            self.errors.clone(),
        );
        registry.register(
            "ml_prediction_confidence",
            "Model confidence scores",
            self.confidence.clone(),
        );
        registry.register(
            "ml_prediction_class",
            "Predictions by class",
            self.classes.clone(),
        );
        registry.register(
            "ml_feature_value",
            "Feature statistics (mean, std, min, max) over the last complete feature window",
            self.features.clone(),
        );
    }

    /// A registry holding only these families.
    pub fn registry(&self) -> Registry {
        let mut registry = Registry::default();
        self.register(&mut registry);
        registry
    }

    pub(crate) fn model_handles(
        &self,
        model_name: &str,
        model_version: &str,
        limits: &Limits,
        declared_classes: &[String],
    ) -> ModelHandles {
        let model_name = model_name.to_owned();
        let requests = self.requests.get_or_create_owned(&ModelVersionLabels {
            model_name: model_name.clone(),
            model_version: model_version.to_owned(),
        });
        let latency = self.latency.get_or_create_owned(&ModelLabels {
            model_name: model_name.clone(),
        });
        let mut declared = Vec::with_capacity(declared_classes.len().min(limits.max_classes));
        for class in declared_classes.iter().take(limits.max_classes) {
            if !declared
                .iter()
                .any(|handles: &ClassHandles| handles.class == *class)
            {
                declared.push(self.class_handles(&model_name, class));
            }
        }
        ModelHandles {
            metrics: self.clone(),
            requests,
            latency,
            classes: ClassTable {
                declared: declared.into_boxed_slice(),
                dynamic: RwLock::new(Vec::new()),
                other: OnceLock::new(),
                max_classes: limits.max_classes,
            },
            errors: Mutex::new(HashMap::new()),
            max_error_types: limits.max_error_types,
            features: Mutex::new(FeatureStats::new(limits.feature_window, limits.max_features)),
            model_name,
        }
    }

    fn class_handles(&self, model_name: &str, class: &str) -> ClassHandles {
        let labels = ClassLabels {
            model_name: model_name.to_owned(),
            predicted_class: class.to_owned(),
        };
        ClassHandles {
            class: class.to_owned(),
            count: self.classes.get_or_create_owned(&labels),
            confidence: self.confidence.get_or_create_owned(&labels),
        }
    }
}

/// Cardinality limits and the feature-statistics window of one model.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    pub(crate) max_classes: usize,
    pub(crate) max_error_types: usize,
    pub(crate) max_features: usize,
    pub(crate) feature_window: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_classes: 64,
            max_error_types: 32,
            max_features: 64,
            feature_window: Duration::from_secs(60),
        }
    }
}

/// String equality without a call to `memcmp`: class names are short, and
/// the call costs more than the comparison.
#[inline]
fn same_text(left: &str, right: &str) -> bool {
    left.len() == right.len() && left.bytes().zip(right.bytes()).all(|(a, b)| a == b)
}

/// One class's series.
pub(crate) struct ClassHandles {
    class: String,
    count: Counter,
    confidence: Histogram,
}

impl ClassHandles {
    #[inline]
    pub(crate) fn record(&self, confidence: Option<f64>) {
        self.count.inc();
        if let Some(confidence) = confidence {
            self.confidence.observe(confidence);
        }
    }
}

/// A model's classes: the declared ones in a fixed slice (no lock), the
/// others in a bounded list behind a read-mostly lock, and `__other__` past
/// the limit.
pub(crate) struct ClassTable {
    declared: Box<[ClassHandles]>,
    dynamic: RwLock<Vec<ClassHandles>>,
    other: OnceLock<ClassHandles>,
    max_classes: usize,
}

impl ClassTable {
    /// Counts a prediction of `class`, with its confidence.
    #[inline]
    pub(crate) fn record(&self, metrics: &Metrics, model_name: &str, class: &str, confidence: Option<f64>) {
        if let Some(handles) = self
            .declared
            .iter()
            .find(|handles| same_text(&handles.class, class))
        {
            return handles.record(confidence);
        }
        self.record_undeclared(metrics, model_name, class, confidence);
    }

    /// The classes not declared up front: behind a lock, and bounded.
    #[inline(never)]
    fn record_undeclared(&self, metrics: &Metrics, model_name: &str, class: &str, confidence: Option<f64>) {
        {
            let dynamic = self
                .dynamic
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if let Some(handles) = dynamic.iter().find(|handles| handles.class == class) {
                return handles.record(confidence);
            }
        }
        let mut dynamic = self
            .dynamic
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Another thread may have added it between the two locks.
        if let Some(handles) = dynamic.iter().find(|handles| handles.class == class) {
            return handles.record(confidence);
        }
        if self.declared.len() + dynamic.len() >= self.max_classes || class == OTHER {
            return self
                .other
                .get_or_init(|| metrics.class_handles(model_name, OTHER))
                .record(confidence);
        }
        let handles = metrics.class_handles(model_name, class);
        handles.record(confidence);
        dynamic.push(handles);
    }
}

/// The series of one model, resolved once.
pub(crate) struct ModelHandles {
    metrics: Metrics,
    model_name: String,
    requests: Counter,
    latency: Histogram,
    classes: ClassTable,
    errors: Mutex<HashMap<Cow<'static, str>, Counter>>,
    max_error_types: usize,
    features: Mutex<FeatureStats>,
}

impl ModelHandles {
    #[inline]
    pub(crate) fn record_request(&self, latency_seconds: f64) {
        self.requests.inc();
        self.latency.observe(latency_seconds);
    }

    #[inline]
    pub(crate) fn record_class(&self, class: &str, confidence: Option<f64>) {
        self.classes
            .record(&self.metrics, &self.model_name, class, confidence);
    }

    /// Counts an error of `error_type`. Errors are the cold path: a map
    /// under a mutex, bounded, folding into `__other__`.
    pub(crate) fn record_error(&self, error_type: Cow<'static, str>) {
        let mut errors = self
            .errors
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(counter) = errors.get(&error_type) {
            counter.inc();
            return;
        }
        let label_value: Cow<'static, str> = if errors.len() >= self.max_error_types {
            Cow::Borrowed(OTHER)
        } else {
            error_type
        };
        let counter = self.metrics.errors.get_or_create_owned(&ErrorLabels {
            model_name: self.model_name.clone(),
            error_type: label_value.clone().into_owned(),
        });
        counter.inc();
        errors.insert(label_value, counter);
    }

    pub(crate) fn record_features(
        &self,
        now: Instant,
        features: &[(Cow<'static, str>, crate::FeatureValue)],
    ) {
        let mut stats = self
            .features
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        stats.record(now, features, &self.metrics, &self.model_name);
    }
}

/// Running moments of one numeric feature over the current window.
#[derive(Debug, Clone, Copy)]
struct Moments {
    count: u64,
    mean: f64,
    m2: f64,
    min: f64,
    max: f64,
}

impl Moments {
    const EMPTY: Self = Self {
        count: 0,
        mean: 0.0,
        m2: 0.0,
        min: f64::INFINITY,
        max: f64::NEG_INFINITY,
    };

    /// Welford's update: stable for long windows.
    fn add(&mut self, value: f64) {
        self.count += 1;
        let delta = value - self.mean;
        self.mean += delta / self.count as f64;
        self.m2 += delta * (value - self.mean);
        self.min = self.min.min(value);
        self.max = self.max.max(value);
    }

    /// Population standard deviation, as the server reports it.
    fn std(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            (self.m2 / self.count as f64).sqrt()
        }
    }
}

struct FeatureSeries {
    moments: Moments,
    mean: Gauge<f64, AtomicU64>,
    std: Gauge<f64, AtomicU64>,
    min: Gauge<f64, AtomicU64>,
    max: Gauge<f64, AtomicU64>,
}

impl FeatureSeries {
    fn publish(&self) {
        if self.moments.count == 0 {
            return;
        }
        self.mean.set(self.moments.mean);
        self.std.set(self.moments.std());
        self.min.set(self.moments.min);
        self.max.set(self.moments.max);
    }
}

/// Statistics of a model's numeric features over tumbling windows. The
/// gauges show the last complete window; during the first window they follow
/// it live, so that a fresh process has something to show.
struct FeatureStats {
    window: Duration,
    window_end: Option<Instant>,
    first_window: bool,
    max_features: usize,
    series: HashMap<Cow<'static, str>, FeatureSeries>,
}

impl FeatureStats {
    fn new(window: Duration, max_features: usize) -> Self {
        Self {
            window,
            window_end: None,
            first_window: true,
            max_features,
            series: HashMap::new(),
        }
    }

    fn record(
        &mut self,
        now: Instant,
        features: &[(Cow<'static, str>, crate::FeatureValue)],
        metrics: &Metrics,
        model_name: &str,
    ) {
        let window_end = *self.window_end.get_or_insert(now + self.window);
        if now >= window_end {
            for series in self.series.values_mut() {
                series.publish();
                series.moments = Moments::EMPTY;
            }
            self.first_window = false;
            self.window_end = Some(now + self.window);
        }
        for (name, value) in features {
            let crate::FeatureValue::Number(value) = value else {
                continue;
            };
            if !value.is_finite() {
                continue;
            }
            let series = match self.series.get_mut(name) {
                Some(series) => series,
                None => {
                    let folded_name: Cow<'static, str> = if self.series.len() >= self.max_features {
                        Cow::Borrowed(OTHER)
                    } else {
                        name.clone()
                    };
                    let gauge = |statistic| {
                        metrics.features.get_or_create_owned(&FeatureLabels {
                            model_name: model_name.to_owned(),
                            feature_name: folded_name.clone().into_owned(),
                            statistic,
                        })
                    };
                    let series = FeatureSeries {
                        moments: Moments::EMPTY,
                        mean: gauge("mean"),
                        std: gauge("std"),
                        min: gauge("min"),
                        max: gauge("max"),
                    };
                    self.series.entry(folded_name).or_insert(series)
                }
            };
            series.moments.add(*value);
            if self.first_window {
                series.publish();
            }
        }
    }
}

/// The registry as OpenMetrics text.
pub fn encode_openmetrics(registry: &Registry) -> String {
    let mut text = String::with_capacity(16 * 1024);
    prometheus_client::encoding::text::encode(&mut text, registry).expect("writing to a String cannot fail");
    text
}

/// The registry as Prometheus text format 0.0.4, which every scraper and
/// `promtool check metrics` read: counters are declared under their `_total`
/// sample name, and OpenMetrics' `# EOF`, `# UNIT` and `_created` lines are
/// left out.
pub fn encode_text(registry: &Registry) -> String {
    openmetrics_to_text_004(&encode_openmetrics(registry))
}

fn openmetrics_to_text_004(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    // OpenMetrics writes HELP before TYPE; the HELP line waits for the TYPE
    // line, which says whether the family is a counter.
    let mut pending_help: Option<(&str, &str)> = None;
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            pending_help = Some(rest.split_once(' ').unwrap_or((rest, "")));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let suffix = if kind == "counter" { "_total" } else { "" };
            if let Some((help_name, help)) = pending_help.take() {
                debug_assert_eq!(help_name, name);
                out.push_str(&format!("# HELP {name}{suffix} {help}\n"));
            }
            out.push_str(&format!("# TYPE {name}{suffix} {kind}\n"));
            continue;
        }
        let sample_name = line.split(['{', ' ']).next().unwrap_or("");
        if sample_name.ends_with("_created") {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FeatureValue;

    fn handles(metrics: &Metrics, limits: Limits) -> ModelHandles {
        metrics.model_handles("m", "v1", &limits, &["0".to_owned(), "1".to_owned()])
    }

    #[test]
    fn classes_past_the_limit_fold_into_other() {
        let metrics = Metrics::new();
        let limits = Limits {
            max_classes: 3,
            ..Limits::default()
        };
        let model = handles(&metrics, limits);
        for class in ["0", "1", "2", "3", "4", "2"] {
            model.record_class(class, Some(0.9));
        }
        let text = encode_text(&metrics.registry());
        assert!(text.contains(r#"ml_prediction_class_total{model_name="m",predicted_class="2"} 2"#));
        assert!(text.contains(r#"ml_prediction_class_total{model_name="m",predicted_class="__other__"} 2"#));
        assert!(!text.contains(r#"predicted_class="3""#));
    }

    #[test]
    fn error_types_past_the_limit_fold_into_other() {
        let metrics = Metrics::new();
        let limits = Limits {
            max_error_types: 1,
            ..Limits::default()
        };
        let model = handles(&metrics, limits);
        for error_type in ["timeout", "ValueError", "KeyError", "timeout"] {
            model.record_error(Cow::Borrowed(error_type));
        }
        let text = encode_text(&metrics.registry());
        assert!(text.contains(r#"ml_prediction_errors_total{model_name="m",error_type="timeout"} 2"#));
        assert!(text.contains(r#"ml_prediction_errors_total{model_name="m",error_type="__other__"} 2"#));
    }

    #[test]
    fn feature_gauges_show_the_last_complete_window() {
        let metrics = Metrics::new();
        let model = handles(&metrics, Limits::default());
        let start = Instant::now();
        let amount = |value| [(Cow::Borrowed("amount"), FeatureValue::Number(value))];
        for value in [1.0, 2.0, 3.0, 4.0] {
            model.record_features(start, &amount(value));
        }
        let text = encode_text(&metrics.registry());
        assert!(
            text.contains(r#"ml_feature_value{model_name="m",feature_name="amount",statistic="mean"} 2.5"#)
        );
        assert!(
            text.contains(r#"ml_feature_value{model_name="m",feature_name="amount",statistic="max"} 4.0"#)
        );
        // The first window closes: its figures stay until the next one closes.
        let second_window = start + Duration::from_secs(61);
        model.record_features(second_window, &amount(100.0));
        let text = encode_text(&metrics.registry());
        assert!(text.contains(r#"statistic="mean"} 2.5"#), "{text}");
        model.record_features(second_window + Duration::from_secs(61), &amount(0.0));
        let text = encode_text(&metrics.registry());
        assert!(text.contains(r#"statistic="mean"} 100.0"#), "{text}");
        assert!(text.contains(r#"statistic="std"} 0.0"#), "{text}");
    }

    #[test]
    fn text_004_declares_counters_under_their_sample_name() {
        let openmetrics = "# HELP a Requests.\n# TYPE a counter\na_total{m=\"x\"} 3\na_created 1.0\n\
                           # HELP b Latency.\n# TYPE b histogram\n# UNIT b seconds\nb_count 1\n# EOF\n";
        assert_eq!(
            openmetrics_to_text_004(openmetrics),
            "# HELP a_total Requests.\n# TYPE a_total counter\na_total{m=\"x\"} 3\n\
             # HELP b Latency.\n# TYPE b histogram\nb_count 1\n"
        );
    }
}
