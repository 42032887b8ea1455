//! Deterministic synthetic prediction events for a `fraud_detector`
//! classifier, serialized up front into NDJSON request bodies.
//!
//! Every event draws from its own generator seeded by `(seed, index)`, so the
//! events do not depend on how the work is split across threads, and a run
//! with the same seed sends the same values (only the timestamps move with
//! the clock, because the server accepts recent events only).

use std::fmt::Write as _;

use bytes::Bytes;

/// The fraud model's numeric features, in the order the seed's anchors use.
pub const FEATURE_NAMES: [&str; 8] = [
    "amount",
    "account_age_days",
    "tx_count_24h",
    "distance_km",
    "merchant_risk",
    "hour_of_day",
    "velocity_1h",
    "device_score",
];

/// Model name every event carries; the benchmark queries it afterwards.
pub const MODEL_NAME: &str = "fraud_detector";

/// Error types of the ~1% failed predictions (the seed records
/// `type(e).__name__`).
const ERROR_TYPES: [&str; 2] = ["ValueError", "RuntimeError"];
/// One event in this many is a failed prediction.
const ERROR_ONE_IN: u64 = 100;
/// One event in this many comes from the canary version.
const CANARY_ONE_IN: u64 = 10;

/// What to generate.
#[derive(Debug, Clone)]
pub struct EventSpec {
    pub events: usize,
    pub batch: usize,
    pub features: usize,
    pub seed: u64,
    /// Event times are spread evenly over `[now - span, now)`, oldest first.
    pub now_seconds: f64,
    pub span_seconds: f64,
    /// Ids in no particular order (like UUIDv4) instead of a sequence that
    /// follows event time (like UUIDv7 or ULID).
    pub random_ids: bool,
}

/// The request bodies and what they contain.
#[derive(Debug)]
pub struct Workload {
    pub bodies: Vec<Bytes>,
    pub errors: usize,
    pub bytes: usize,
}

/// SplitMix64 (Steele, Lea and Flood): tiny, fast and good enough to draw
/// synthetic values from.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    pub(crate) fn for_event(seed: u64, index: u64) -> Self {
        let mut mixer = SplitMix64(seed ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03));
        // Decorrelate neighbouring indexes before the first draw.
        mixer.next_u64();
        mixer
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound
    }

    /// Approximately standard normal (Irwin–Hall with 4 terms, rescaled).
    fn normal(&mut self) -> f64 {
        let sum: f64 = (0..4).map(|_| self.unit()).sum();
        (sum - 2.0) * 3.0f64.sqrt()
    }
}

/// Appends event `index` as one NDJSON line; returns whether it is an error.
fn write_event(line: &mut String, spec: &EventSpec, index: usize) -> bool {
    let mut random = SplitMix64::for_event(spec.seed, index as u64);
    let step = spec.span_seconds / spec.events.max(1) as f64;
    let timestamp = spec.now_seconds - spec.span_seconds + index as f64 * step;
    let version = if random.below(CANARY_ONE_IN) == 0 {
        "v1.5.0"
    } else {
        "v1.4.2"
    };
    // Log-uniform from 3 ms to 3 s: every bucket of the seed's latency
    // histogram (0.01 .. 2.5 s) receives events.
    let latency_seconds = 0.003 * (1000.0f64).powf(random.unit());
    let is_error = random.below(ERROR_ONE_IN) == 0;

    let id = if spec.random_ids {
        // The SplitMix64 finalizer is a bijection: distinct indexes, distinct ids.
        format!("r{:016x}", SplitMix64(index as u64).next_u64())
    } else {
        format!("p{index:09}")
    };
    write!(
        line,
        r#"{{"prediction_id":"{id}","model":"{MODEL_NAME}","version":"{version}","timestamp":{timestamp:.3},"latency_seconds":{latency_seconds:.6},"#
    )
    .expect("writing to a String");
    if is_error {
        let error_type = ERROR_TYPES[random.below(ERROR_TYPES.len() as u64) as usize];
        write!(line, r#""status":"error","error_type":"{error_type}","#).expect("writing to a String");
    } else {
        // About 12% fraud predictions, as in the anchors' synthetic data.
        let fraud_probability = if random.unit() < 0.12 {
            0.5 + 0.5 * random.unit()
        } else {
            0.4999 * random.unit()
        };
        let fraud_probability = (fraud_probability * 10_000.0).round() / 10_000.0;
        let predicted_class = if fraud_probability >= 0.5 { "1" } else { "0" };
        write!(
            line,
            r#""status":"ok","prediction":"{predicted_class}","probabilities":{{"0":{:.4},"1":{fraud_probability:.4}}},"#,
            1.0 - fraud_probability
        )
        .expect("writing to a String");
    }
    line.push_str(r#""features":{"#);
    for feature in 0..spec.features {
        if feature > 0 {
            line.push(',');
        }
        let value = feature_value(&mut random, feature);
        match FEATURE_NAMES.get(feature) {
            Some(name) => write!(line, r#""{name}":{value}"#),
            None => write!(line, r#""feature_{feature}":{value}"#),
        }
        .expect("writing to a String");
    }
    line.push_str("}}\n");
    is_error
}

/// A plausible value for feature number `feature`, already rounded as a
/// client would send it.
fn feature_value(random: &mut SplitMix64, feature: usize) -> f64 {
    let round = |value: f64, places: i32| {
        let scale = 10f64.powi(places);
        (value * scale).round() / scale
    };
    match feature {
        0 => round((3.5 + 1.2 * random.normal()).exp().min(50_000.0), 2), // amount
        1 => round(3650.0 * random.unit(), 1),                            // account_age_days
        2 => random.below(30) as f64,                                     // tx_count_24h
        3 => round(-50.0 * (1.0 - random.unit()).ln(), 2),                // distance_km
        4 => round(random.unit(), 3),                                     // merchant_risk
        5 => random.below(24) as f64,                                     // hour_of_day
        6 => round(10.0 * random.unit(), 2),                              // velocity_1h
        7 => round(random.unit(), 3),                                     // device_score
        _ => round(random.normal(), 4),
    }
}

/// Serializes one body of events `range`; returns (body, errors).
fn build_body(spec: &EventSpec, range: std::ops::Range<usize>) -> (Bytes, usize) {
    let mut body = String::with_capacity(range.len() * (200 + 28 * spec.features));
    let mut errors = 0;
    for index in range {
        errors += usize::from(write_event(&mut body, spec, index));
    }
    (Bytes::from(body.into_bytes()), errors)
}

/// Generates every event into bodies of `spec.batch` events, on all cores.
pub fn generate(spec: &EventSpec) -> Workload {
    assert!(spec.batch > 0, "the batch size must be positive");
    let body_count = spec.events.div_ceil(spec.batch);
    let threads = std::thread::available_parallelism()
        .map(usize::from)
        .unwrap_or(1)
        .min(body_count.max(1));
    let bodies_per_thread = body_count.div_ceil(threads.max(1));
    let mut slots: Vec<(Bytes, usize)> = Vec::with_capacity(body_count);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|thread| {
                scope.spawn(move || {
                    let first_body = thread * bodies_per_thread;
                    let last_body = ((thread + 1) * bodies_per_thread).min(body_count);
                    (first_body..last_body)
                        .map(|body| {
                            let start = body * spec.batch;
                            let end = (start + spec.batch).min(spec.events);
                            build_body(spec, start..end)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for worker in workers {
            slots.extend(worker.join().expect("event generator thread panicked"));
        }
    });
    let errors = slots.iter().map(|(_, errors)| errors).sum();
    let bytes = slots.iter().map(|(body, _)| body.len()).sum();
    Workload {
        bodies: slots.into_iter().map(|(body, _)| body).collect(),
        errors,
        bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(events: usize, batch: usize) -> EventSpec {
        EventSpec {
            events,
            batch,
            features: 8,
            seed: 42,
            now_seconds: 1_764_331_200.0,
            span_seconds: 3600.0,
            random_ids: false,
        }
    }

    #[test]
    fn random_ids_are_unique_and_unordered() {
        let workload = generate(&EventSpec {
            random_ids: true,
            ..spec(2000, 500)
        });
        let mut ids = Vec::new();
        for body in &workload.bodies {
            for line in std::str::from_utf8(body).unwrap().lines() {
                let event: serde_json::Value = serde_json::from_str(line).unwrap();
                ids.push(event["prediction_id"].as_str().unwrap().to_owned());
            }
        }
        let unique: std::collections::BTreeSet<&String> = ids.iter().collect();
        assert_eq!(unique.len(), 2000);
        assert!(
            ids.windows(2).filter(|pair| pair[0] < pair[1]).count() < 1500,
            "ids look sorted"
        );
    }

    #[test]
    fn bodies_do_not_depend_on_batching() {
        let whole = generate(&spec(1000, 1000));
        let split = generate(&spec(1000, 7));
        let joined: Vec<u8> = split
            .bodies
            .iter()
            .flat_map(|body| body.iter().copied())
            .collect();
        assert_eq!(whole.bodies[0].as_ref(), joined.as_slice());
        assert_eq!(whole.errors, split.errors);
        assert_eq!(split.bodies.len(), 143);
    }

    #[test]
    fn every_line_is_json_with_the_expected_shape() {
        let workload = generate(&spec(2000, 500));
        let mut ids = std::collections::HashSet::new();
        let mut errors = 0;
        for body in &workload.bodies {
            for line in body.split(|&byte| byte == b'\n').filter(|line| !line.is_empty()) {
                let event: serde_json::Value = serde_json::from_slice(line).expect("valid JSON");
                assert!(ids.insert(event["prediction_id"].as_str().unwrap().to_owned()));
                assert_eq!(event["features"].as_object().unwrap().len(), 8);
                if event["status"] == "error" {
                    errors += 1;
                    assert!(event.get("prediction").is_none());
                } else {
                    let probabilities = event["probabilities"].as_object().unwrap();
                    let sum: f64 = probabilities.values().map(|p| p.as_f64().unwrap()).sum();
                    assert!((sum - 1.0).abs() < 1e-9, "{line:?}");
                }
            }
        }
        assert_eq!(ids.len(), 2000);
        assert_eq!(errors, workload.errors);
        assert!((5..=45).contains(&errors), "about 1% errors, got {errors}");
    }
}
