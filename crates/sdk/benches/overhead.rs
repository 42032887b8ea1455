//! The cost of instrumentation per `predict()`, in ns per call, around a
//! trivial model, next to the Python anchor measured in the same run.
//!
//! ```sh
//! cargo bench -p modelwatch-sdk --bench overhead            # [-- --calls N --repeats N --no-anchor]
//! ```
//!
//! Modes, interleaved within each repeat so that machine noise hits them all:
//! - `bare_model`: the trivial model alone (subtracted from the others);
//! - `sdk_metrics`: `MonitoredPredictor`, metrics only;
//! - `sdk_metrics_shipping`: the same with a shipper; every event is queued
//!   (the queue is large enough, and its server is down, so the background
//!   thread sleeps in backoff instead of competing for the cores);
//! - `sdk_shipping_queue_full`: the same once the queue is full (events
//!   dropped and counted);
//! - `crate_prebound`: the same four updates as bare `prometheus-client`
//!   calls on handles resolved once, timed with two `Instant::now()`;
//! - `crate_lookup_per_call`: bare crate calls that look the label sets up
//!   on every call, as the seed does in Python.
//!
//! The anchor is `../shared/anchors/bench_instrumentation.py` (seed-style
//! `prometheus_client`), run with `/tmp/anchorvenv` if it exists, otherwise a
//! venv under `target/anchor-venv` that this program creates. It prints one
//! JSON line per mode and a summary line, then a table on stderr.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use modelwatch_sdk::prometheus_client::encoding::EncodeLabelSet;
use modelwatch_sdk::prometheus_client::metrics::counter::Counter;
use modelwatch_sdk::prometheus_client::metrics::family::Family;
use modelwatch_sdk::prometheus_client::metrics::histogram::Histogram;
use modelwatch_sdk::prometheus_client::registry::Registry;
use modelwatch_sdk::{
    CONFIDENCE_BUCKETS, LATENCY_BUCKETS, Metrics, Model, MonitoredPredictor, Prediction, Shipper,
};

/// The anchor's trivial model: a threshold on a float.
struct Threshold;

impl Model for Threshold {
    type Input = f64;
    type Error = std::convert::Infallible;

    #[inline]
    fn predict(&self, x: &f64) -> Result<Prediction, Self::Error> {
        Ok(if *x >= 0.5 {
            Prediction::class("1").with_confidence(*x)
        } else {
            Prediction::class("0").with_confidence(1.0 - *x)
        })
    }
}

struct Options {
    calls: usize,
    repeats: usize,
    anchor: bool,
    anchor_calls: usize,
    anchor_repeats: usize,
}

fn options() -> Options {
    let mut options = Options {
        calls: 2_000_000,
        repeats: 7,
        anchor: true,
        anchor_calls: 300_000,
        anchor_repeats: 3,
    };
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    let mut index = 0;
    while index < arguments.len() {
        let value = arguments
            .get(index + 1)
            .and_then(|value| value.parse::<usize>().ok());
        match (arguments[index].as_str(), value) {
            ("--calls", Some(calls)) => {
                options.calls = calls;
                index += 1;
            }
            ("--repeats", Some(repeats)) => {
                options.repeats = repeats.max(1);
                index += 1;
            }
            ("--anchor-calls", Some(calls)) => {
                options.anchor_calls = calls;
                index += 1;
            }
            ("--no-anchor", _) => options.anchor = false,
            ("--quick", _) => {
                options.calls = 200_000;
                options.repeats = 3;
                options.anchor_calls = 100_000;
                options.anchor_repeats = 2;
            }
            // `cargo bench` passes `--bench`; other flags are not ours.
            _ => {}
        }
        index += 1;
    }
    options
}

/// Uniform floats in [0, 1) from a fixed seed (xorshift), like the anchor's.
fn inputs(count: usize) -> Vec<f64> {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    (0..count)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64
        })
        .collect()
}

fn ns_per_call(inputs: &[f64], mut call: impl FnMut(f64)) -> f64 {
    let started = Instant::now();
    for &x in inputs {
        call(black_box(x));
    }
    started.elapsed().as_nanos() as f64 / inputs.len() as f64
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelVersion {
    model_name: &'static str,
    model_version: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelOnly {
    model_name: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelClass {
    model_name: &'static str,
    predicted_class: &'static str,
}

type Histograms<Labels> = Family<Labels, Histogram, fn() -> Histogram>;

/// The seed's four updates as bare crate calls.
struct BareCrate {
    requests: Family<ModelVersion, Counter>,
    latency: Histograms<ModelOnly>,
    classes: Family<ModelClass, Counter>,
    confidence: Histograms<ModelClass>,
}

impl BareCrate {
    fn new(registry: &mut Registry) -> Self {
        let bare = Self {
            requests: Family::default(),
            latency: Family::new_with_constructor(|| Histogram::new(LATENCY_BUCKETS)),
            classes: Family::default(),
            confidence: Family::new_with_constructor(|| Histogram::new(CONFIDENCE_BUCKETS)),
        };
        registry.register("bare_requests", "", bare.requests.clone());
        registry.register("bare_latency_seconds", "", bare.latency.clone());
        registry.register("bare_class", "", bare.classes.clone());
        registry.register("bare_confidence", "", bare.confidence.clone());
        bare
    }
}

const MODEL: &str = "fraud_detector";
const VERSION: &str = "v1.4.2";

fn class_labels(class: &'static str) -> ModelClass {
    ModelClass {
        model_name: MODEL,
        predicted_class: class,
    }
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let middle = sorted.len() / 2;
    if sorted.len() % 2 == 0 {
        (sorted[middle - 1] + sorted[middle]) / 2.0
    } else {
        sorted[middle]
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The anchor's Python: `/tmp/anchorvenv`, else `target/anchor-venv`
/// (created with the pinned `prometheus_client` and `numpy`).
fn anchor_python() -> Result<PathBuf, String> {
    let shared = PathBuf::from("/tmp/anchorvenv/bin/python");
    if shared.exists() {
        return Ok(shared);
    }
    let venv = workspace_root().join("target/anchor-venv");
    let python = venv.join("bin/python");
    let ready_marker = venv.join(".modelwatch-ready");
    if !ready_marker.exists() {
        eprintln!(
            "creating {} (prometheus_client 0.26.0, numpy 2.4.6)",
            venv.display()
        );
        let created = Command::new("python3").arg("-m").arg("venv").arg(&venv).status();
        if !created.is_ok_and(|status| status.success()) {
            return Err("python3 -m venv failed".to_owned());
        }
        let installed = Command::new(venv.join("bin/pip"))
            .args(["install", "-q", "prometheus_client==0.26.0", "numpy==2.4.6"])
            .status();
        if !installed.is_ok_and(|status| status.success()) {
            return Err("pip install prometheus_client numpy failed".to_owned());
        }
        std::fs::write(&ready_marker, b"").map_err(|error| error.to_string())?;
    }
    Ok(python)
}

fn run_anchor(options: &Options) -> Result<serde_json::Value, String> {
    let script = std::env::var_os("MODELWATCH_ANCHORS")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("../shared/anchors"))
        .join("bench_instrumentation.py");
    if !script.exists() {
        return Err(format!("{} not found", script.display()));
    }
    let python = anchor_python()?;
    eprintln!(
        "running the anchor: {} {} --calls {} --repeats {}",
        python.display(),
        script.display(),
        options.anchor_calls,
        options.anchor_repeats
    );
    let output = Command::new(python)
        .arg(&script)
        .args(["--calls", &options.anchor_calls.to_string()])
        .args(["--repeats", &options.anchor_repeats.to_string()])
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .map_err(|error| error.to_string())?;
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|line| line.starts_with('{'))
        .ok_or("the anchor printed no JSON")?;
    serde_json::from_str(line).map_err(|error| error.to_string())
}

fn main() {
    let options = options();
    let xs = inputs(options.calls);
    let load_before = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();

    let metrics = Metrics::new();
    let monitored = MonitoredPredictor::builder(Threshold, MODEL, VERSION)
        .metrics(&metrics)
        .classes(["0", "1"])
        .build();

    let mut registry = Registry::default();
    let bare = BareCrate::new(&mut registry);
    let requests = bare.requests.get_or_create_owned(&ModelVersion {
        model_name: MODEL,
        model_version: VERSION,
    });
    let latency = bare.latency.get_or_create_owned(&ModelOnly { model_name: MODEL });
    let class_counters = [
        bare.classes.get_or_create_owned(&class_labels("0")),
        bare.classes.get_or_create_owned(&class_labels("1")),
    ];
    let confidences = [
        bare.confidence.get_or_create_owned(&class_labels("0")),
        bare.confidence.get_or_create_owned(&class_labels("1")),
    ];

    // Shipping against a closed port: the thread retries its first batch
    // in backoff, asleep, and every other event waits in the queue.
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("find a free port");
    // Batches of one event: the thread takes the first event, fails to post
    // it, and sleeps in backoff before the measurement starts.
    let shipping_predictor = |queue_capacity: usize| {
        let shipper = Shipper::builder(format!("http://127.0.0.1:{closed_port}"))
            .queue_capacity(queue_capacity)
            .batch_size(1)
            .flush_interval(Duration::ZERO)
            .backoff(Duration::from_secs(60), Duration::from_secs(60))
            .start()
            .expect("start the shipper");
        let predictor = MonitoredPredictor::builder(Threshold, MODEL, VERSION)
            .metrics(&metrics)
            .classes(["0", "1"])
            .shipper(&shipper)
            .build();
        predictor.predict(&0.5).expect("infallible");
        let asleep_by = Instant::now() + Duration::from_secs(30);
        while shipper.stats().retries == 0 {
            assert!(Instant::now() < asleep_by, "the shipper never tried to post");
            std::thread::sleep(Duration::from_millis(1));
        }
        (shipper, predictor)
    };

    let modes = [
        "bare_model",
        "sdk_metrics",
        "sdk_metrics_shipping",
        "sdk_shipping_queue_full",
        "crate_prebound",
        "crate_lookup_per_call",
    ];
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
    // Warm-up, then interleaved repeats.
    for repeat in 0..=options.repeats {
        let warm_up = repeat == 0;
        let inputs = if warm_up {
            &xs[..xs.len().min(50_000)]
        } else {
            &xs[..]
        };
        let mut results = [0.0; 6];
        results[0] = ns_per_call(inputs, |x| {
            black_box(Threshold.predict(&x).ok());
        });
        results[1] = ns_per_call(inputs, |x| {
            black_box(monitored.predict(&x).ok());
        });
        {
            let (shipper, predictor) = shipping_predictor(inputs.len() + 16);
            results[2] = ns_per_call(inputs, |x| {
                black_box(predictor.predict(&x).ok());
            });
            let dropped_while_measured = shipper.stats().dropped();
            assert_eq!(
                dropped_while_measured, 0,
                "the queue was meant to hold every event"
            );
            // Frees the queue: everything left is counted as dropped.
            shipper.shutdown(Duration::ZERO);
        }
        {
            let (shipper, predictor) = shipping_predictor(1);
            results[3] = ns_per_call(inputs, |x| {
                black_box(predictor.predict(&x).ok());
            });
            assert!(
                shipper.stats().dropped() >= inputs.len() as u64 - 1,
                "the queue was meant to be full"
            );
            shipper.shutdown(Duration::ZERO);
        }
        results[4] = ns_per_call(inputs, |x| {
            let started = Instant::now();
            let prediction = Threshold.predict(&x).ok();
            let elapsed = started.elapsed();
            requests.inc();
            latency.observe(elapsed.as_secs_f64());
            if let Some(prediction) = &prediction {
                let index = usize::from(prediction.predicted_class() == Some("1"));
                class_counters[index].inc();
                if let Some(confidence) = prediction.confidence() {
                    confidences[index].observe(confidence);
                }
            }
            black_box(prediction);
        });
        results[5] = ns_per_call(inputs, |x| {
            let started = Instant::now();
            let prediction = Threshold.predict(&x).ok();
            let elapsed = started.elapsed();
            bare.requests
                .get_or_create(&ModelVersion {
                    model_name: MODEL,
                    model_version: VERSION,
                })
                .inc();
            bare.latency
                .get_or_create(&ModelOnly { model_name: MODEL })
                .observe(elapsed.as_secs_f64());
            if let Some(prediction) = &prediction {
                let class = if prediction.predicted_class() == Some("1") {
                    "1"
                } else {
                    "0"
                };
                bare.classes.get_or_create(&class_labels(class)).inc();
                if let Some(confidence) = prediction.confidence() {
                    bare.confidence
                        .get_or_create(&class_labels(class))
                        .observe(confidence);
                }
            }
            black_box(prediction);
        });
        if !warm_up {
            for (mode, result) in results.iter().enumerate() {
                samples[mode].push(*result);
            }
            eprintln!(
                "repeat {repeat}: {}",
                modes
                    .iter()
                    .zip(results)
                    .map(|(mode, ns)| format!("{mode}={ns:.1}ns"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }

    let medians: Vec<f64> = samples.iter().map(|values| median(values)).collect();
    let bare_model = medians[0];
    for (index, mode) in modes.iter().enumerate() {
        let line = serde_json::json!({
            "bench": "sdk_overhead",
            "mode": mode,
            "calls": options.calls,
            "ns_per_call": medians[index],
            "overhead_ns": medians[index] - bare_model,
            "all_ns": samples[index],
        });
        println!("{line}");
    }

    let anchor = if options.anchor {
        match run_anchor(&options) {
            Ok(anchor) => Some(anchor),
            Err(error) => {
                eprintln!("the anchor did not run: {error}");
                None
            }
        }
    } else {
        None
    };
    let overhead = |index: usize| medians[index] - bare_model;
    let sdk_overhead = overhead(1);
    let ratio = |numerator: f64, denominator: f64| (denominator > 0.0).then(|| numerator / denominator);
    let python = |key: &str| {
        anchor
            .as_ref()
            .and_then(|anchor| anchor["ns_per_call"][key].as_f64())
    };
    let python_overhead = |key: &str| {
        anchor
            .as_ref()
            .and_then(|anchor| anchor["overhead_ns"][key].as_f64())
    };
    let summary = serde_json::json!({
        "bench": "sdk_overhead_summary",
        "calls": options.calls,
        "repeats": options.repeats,
        "sdk_metrics_ns": medians[1],
        "sdk_metrics_overhead_ns": sdk_overhead,
        "sdk_metrics_shipping_ns": medians[2],
        "sdk_metrics_shipping_overhead_ns": overhead(2),
        "sdk_shipping_queue_full_ns": medians[3],
        "crate_prebound_ns": medians[4],
        "crate_prebound_overhead_ns": overhead(4),
        "crate_lookup_per_call_ns": medians[5],
        "sdk_over_crate_prebound": ratio(sdk_overhead, overhead(4)),
        "python_seed_ns": python("seed"),
        "python_prebound_ns": python("prebound"),
        "python_bare_ns": python("bare"),
        "python_seed_over_sdk_metrics": python("seed").and_then(|seed| ratio(seed, medians[1])),
        "python_seed_overhead_over_sdk_overhead": python_overhead("seed").and_then(|seed| ratio(seed, sdk_overhead)),
        "python_prebound_overhead_over_sdk_overhead": python_overhead("prebound").and_then(|prebound| ratio(prebound, sdk_overhead)),
        "python_seed_over_sdk_metrics_shipping": python("seed").and_then(|seed| ratio(seed, medians[2])),
        "loadavg_before": load_before.trim(),
        "loadavg_after": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
    });
    println!("{summary}");

    eprintln!();
    eprintln!("{:<28} {:>12} {:>14}", "mode (median)", "ns/call", "overhead ns");
    for (index, mode) in modes.iter().enumerate() {
        eprintln!("{mode:<28} {:>12.1} {:>14.1}", medians[index], overhead(index));
    }
    if let (Some(seed), Some(prebound)) = (python("seed"), python("prebound")) {
        eprintln!("{:<28} {seed:>12.1}", "python seed-style");
        eprintln!("{:<28} {prebound:>12.1}", "python prebound");
        eprintln!(
            "python seed-style / sdk_metrics = {:.0}x; / sdk_metrics_shipping = {:.0}x",
            seed / medians[1],
            seed / medians[2]
        );
    }
    eprintln!(
        "sdk_metrics overhead / crate_prebound overhead = {:.2} (goal <= 1.5); SPEC goal <= 200 ns per call",
        sdk_overhead / overhead(4)
    );
}
