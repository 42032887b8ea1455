//! The configuration file (`--config FILE`, YAML). One type, unknown fields
//! refused, units in names, durations written like `5m` and `7d`.

use std::path::Path;

use modelwatch_core::limits::CardinalityLimits;
use modelwatch_core::series::AggregationConfig;
use modelwatch_core::time::{MINUTE_MS, parse_duration_ms};
use modelwatch_core::wire::ParseLimits;
use modelwatch_store::Synchronous;
use serde::Deserialize;

/// A Prometheus-style duration (`5m`, `7d`) read from the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Duration {
    pub ms: i64,
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse_duration_ms(&text)
            .map(|ms| Duration { ms })
            .map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub ingest: IngestConfig,
    pub storage: StorageConfig,
    pub aggregation: AggregationSettings,
    pub limits: CardinalityLimits,
    pub metrics: MetricsConfig,
    pub labels: LabelsConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LabelsConfig {
    /// How long a label whose prediction has not arrived yet is held; past
    /// this it is an orphan.
    pub early_label_ttl: Duration,
    /// Most labels held at once; past this the oldest become orphans.
    pub max_held_labels: usize,
    /// How long stored predictions wait for their label: older ones (by event
    /// time, against their model's newest event) are deleted from the store.
    /// Their aggregates stay.
    pub horizon: Duration,
    /// How often the store is swept for predictions past the horizon.
    pub prune_interval: Duration,
}

impl Default for LabelsConfig {
    fn default() -> Self {
        Self {
            early_label_ttl: Duration {
                ms: 6 * 60 * MINUTE_MS,
            },
            max_held_labels: 200_000,
            horizon: Duration {
                ms: 30 * 24 * 60 * MINUTE_MS,
            },
            // A pass reads every stored prediction's header (about 1 s of CPU
            // per million): hourly is cheap and plenty for a horizon of days.
            prune_interval: Duration { ms: 60 * MINUTE_MS },
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Largest accepted request body; larger ones get 413.
    pub max_body_bytes: usize,
    /// Events parsed but not yet committed; past this, 429.
    pub max_queued_events: usize,
    /// Most events one group commit takes.
    pub max_events_per_commit: usize,
    pub max_string_bytes: usize,
    pub max_features_per_event: usize,
    pub max_future_skew: Duration,
}

impl Default for IngestConfig {
    fn default() -> Self {
        let parse = ParseLimits::default();
        Self {
            max_body_bytes: 32 * 1024 * 1024,
            max_queued_events: 250_000,
            max_events_per_commit: 100_000,
            max_string_bytes: parse.max_string_bytes,
            max_features_per_event: parse.max_features,
            max_future_skew: Duration {
                ms: parse.max_future_skew_ms,
            },
        }
    }
}

impl IngestConfig {
    pub fn parse_limits(&self) -> ParseLimits {
        ParseLimits {
            max_string_bytes: self.max_string_bytes,
            max_features: self.max_features_per_event,
            max_future_skew_ms: self.max_future_skew.ms,
            ..ParseLimits::default()
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SynchronousSetting {
    Full,
    Normal,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// `full` (default): a commit survives power loss. `normal`: survives a
    /// process crash only.
    pub synchronous: SynchronousSetting,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            synchronous: SynchronousSetting::Full,
        }
    }
}

impl StorageConfig {
    pub fn synchronous(&self) -> Synchronous {
        match self.synchronous {
            SynchronousSetting::Full => Synchronous::Full,
            SynchronousSetting::Normal => Synchronous::Normal,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AggregationSettings {
    pub minute_retention: Duration,
    pub hour_retention: Duration,
}

impl Default for AggregationSettings {
    fn default() -> Self {
        let defaults = AggregationConfig::default();
        Self {
            minute_retention: Duration {
                ms: defaults.minute_retention_ms,
            },
            hour_retention: Duration {
                ms: defaults.hour_retention_ms,
            },
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// The window, ending now, that `ml_feature_value` describes.
    pub feature_window: Duration,
    /// The windows, ending now, of `ml_model_accuracy` and the other quality
    /// gauges (their `window` label).
    pub quality_windows: Vec<String>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            feature_window: Duration { ms: 60 * MINUTE_MS },
            quality_windows: vec!["1d".to_owned(), "7d".to_owned()],
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text).map_err(|message| ConfigError::Invalid {
            path: path.display().to_string(),
            message,
        })
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        let config: Config = serde_saphyr::from_str(text).map_err(|error| error.to_string())?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        if self.aggregation.minute_retention.ms > self.aggregation.hour_retention.ms {
            return Err("aggregation.minute_retention must not exceed aggregation.hour_retention".into());
        }
        if self.labels.horizon.ms <= 0 || self.labels.prune_interval.ms <= 0 {
            return Err("labels.horizon and labels.prune_interval must be positive".into());
        }
        for window in &self.metrics.quality_windows {
            match parse_duration_ms(window) {
                Ok(ms) if ms > 0 => {}
                _ => {
                    return Err(format!(
                        "metrics.quality_windows: {window:?} is not a positive duration like 7d"
                    ));
                }
            }
        }
        if self.ingest.max_body_bytes == 0 || self.ingest.max_queued_events == 0 {
            return Err("ingest limits must be positive".into());
        }
        Ok(())
    }

    pub fn aggregation(&self) -> AggregationConfig {
        AggregationConfig {
            minute_retention_ms: self.aggregation.minute_retention.ms,
            hour_retention_ms: self.aggregation.hour_retention.ms,
            limits: self.limits.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_is_the_default() {
        let config = Config::parse("").unwrap();
        assert_eq!(config.ingest.max_body_bytes, 32 * 1024 * 1024);
    }

    #[test]
    fn durations_and_limits_parse() {
        let config = Config::parse(
            "aggregation:\n  minute_retention: 2h\n  hour_retention: 30d\nlimits:\n  max_classes_per_model: 3\n",
        )
        .unwrap();
        assert_eq!(config.aggregation().minute_retention_ms, 2 * 60 * MINUTE_MS);
        assert_eq!(config.aggregation().limits.max_classes_per_model, 3);
    }

    #[test]
    fn typos_are_errors_that_name_the_field() {
        let error = Config::parse("ingest:\n  max_body_byte: 10\n").unwrap_err();
        assert!(error.contains("max_body_byte"), "{error}");
        let error = Config::parse("aggregation:\n  minute_retention: 5 minutes\n").unwrap_err();
        assert!(error.contains("invalid duration"), "{error}");
    }
}
