//! `quality`: ground truth at scale (SPEC §6). One run
//! 1. takes the shared anchors' synthetic `fraud_detector` log (their
//!    `gen_data.py`, seed 42) through `anchors/quality_data.py`, with the
//!    reference figures that the anchors' own functions compute on it;
//! 2. ingests its predictions, then its labels, into a fresh `modelwatch
//!    serve` over HTTP NDJSON (durable before each answer);
//! 3. times `GET /performance?window=7d` (and over the whole log) and checks
//!    its figures against the reference;
//! 4. replays the 14 daily rolling-7d accuracies of the seed's
//!    `monitor_rolling_accuracy` on a second model: each day's labels by
//!    arrival time, then one query, timing only the queries;
//! 5. times the anchors themselves, `bench_join.py` and `bench_rolling.py`,
//!    at the same sizes, and reports the ratios.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use serde_json::{Value, json};

use crate::anchor;
use crate::load::{self, Endpoint, LoadOutcome};
use crate::quality_data::{AnchorLog, Bodies, ExportInfo};
use crate::server::{self, DiskWrites, MachineCpu, ServerProcess, ThreadCpu};
use crate::{emit, grouped, round};

const DEFAULT_PREDICTIONS: usize = 10_000_000;
const QUICK_PREDICTIONS: usize = 1_000_000;
/// The model of the quality query's log, and its prediction id prefix.
const QUALITY_MODEL: &str = "fraud_detector";
const QUALITY_ID_PREFIX: char = 'p';
/// The model of the rolling log: a second model in the same server, so that
/// its labels can arrive day by day while the first model is fully labelled.
const ROLLING_MODEL: &str = "fraud_detector_daily";
const ROLLING_ID_PREFIX: char = 'r';
/// SPEC §6 goals.
const LABELS_GOAL_PER_SECOND: f64 = 250_000.0;
const QUERY_GOAL_SECONDS: f64 = 0.010;
const QUERY_STRETCH_SECONDS: f64 = 0.001;
const QUERY_GOAL_RATIO: f64 = 1000.0;
const ROLLING_GOAL_SECONDS: f64 = 0.1;
/// How close our figures must be to scikit-learn's.
const TOLERANCE: f64 = 1e-9;

#[derive(Args)]
pub struct QualityArgs {
    /// Predictions in the quality query's log; about 70% of them get a label
    /// [default: 10000000, or 1000000 with --quick].
    #[arg(long)]
    predictions: Option<usize>,
    /// Predictions in the rolling-accuracy log (the anchor's own size).
    #[arg(long, default_value_t = 1_000_000)]
    rolling_predictions: usize,
    /// Events per request body (predictions and labels).
    #[arg(long, default_value_t = 10_000)]
    batch: usize,
    /// Concurrent keep-alive connections while ingesting.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Timed quality queries per window, after --warmup untimed ones.
    #[arg(long, default_value_t = 200)]
    queries: usize,
    #[arg(long, default_value_t = 20)]
    warmup: usize,
    /// The server binary [default: <workspace>/target/release/modelwatch].
    #[arg(long)]
    server: Option<PathBuf>,
    /// The shared anchors' folder [default: <workspace>/../shared/anchors].
    #[arg(long)]
    anchors: Option<PathBuf>,
    /// Where the exported log is cached [default: <target>/bench-data/quality].
    #[arg(long)]
    data_cache: Option<PathBuf>,
    /// Python with numpy, pandas, scikit-learn and pyarrow [default:
    /// /tmp/anchorvenv/bin/python, else <target>/quality-venv, created with
    /// the shared anchors' pinned versions on first use].
    #[arg(long)]
    python: Option<PathBuf>,
    /// Runs of each anchor, each in a fresh process (the median is reported)
    /// [default: 3, or 1 with --quick].
    #[arg(long)]
    anchor_repeats: Option<usize>,
    /// Skip timing the Python anchors (the figures are still checked against
    /// the anchors' computation, which runs untimed with the data export).
    #[arg(long)]
    no_anchor: bool,
    /// A smoke run: 1000000 predictions unless --predictions is given.
    #[arg(long)]
    quick: bool,
}

/// One ingestion phase: the load outcome and what the server spent on it.
struct Phase {
    outcome: LoadOutcome,
    server_cpu_seconds: f64,
    disk_writes: DiskWrites,
    /// The largest the data directory and its WAL were during the phase
    /// (sampled every 100 ms), and the directory's size at its end.
    data_dir_peak_bytes: u64,
    wal_peak_bytes: u64,
    data_dir_end_bytes: u64,
    threads: ThreadCpu,
    client_cpu_seconds: f64,
    other_cpu_seconds: f64,
    load_average_before: Option<f64>,
}

impl Phase {
    fn seconds(&self) -> f64 {
        self.outcome.wall.as_secs_f64()
    }
}

/// Samples the data directory's size and its WAL's every 100 ms until
/// `done`; returns the largest of each.
fn sample_data_dir(data_dir: &Path, done: &AtomicBool) -> (u64, u64) {
    let (mut directory_peak, mut wal_peak) = (0, 0);
    loop {
        directory_peak = directory_peak.max(server::directory_bytes(data_dir));
        wal_peak = wal_peak.max(server::wal_bytes(data_dir));
        if done.load(Ordering::Relaxed) {
            return (directory_peak, wal_peak);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn send_measured(
    server: &ServerProcess,
    data_dir: &Path,
    endpoint: Endpoint,
    bodies: &Bodies,
    connections: usize,
) -> anyhow::Result<Phase> {
    let load_average_before = server::load_average();
    let machine_before = MachineCpu::now();
    let server_cpu_before = server.cpu_seconds();
    let threads_before = server.thread_cpu()?;
    let disk_before = server.disk_writes()?;
    let client_cpu_before = server::own_cpu_seconds();
    let done = AtomicBool::new(false);
    let (result, (data_dir_peak_bytes, wal_peak_bytes)) = std::thread::scope(|scope| {
        let sampler = scope.spawn(|| sample_data_dir(data_dir, &done));
        let result = load::run(&server.base_url, endpoint, &bodies.bodies, connections);
        done.store(true, Ordering::Relaxed);
        (result, sampler.join().expect("the sampler thread panicked"))
    });
    let client_cpu_seconds = server::own_cpu_seconds() - client_cpu_before;
    let server_cpu_seconds = server.cpu_seconds() - server_cpu_before;
    let machine_busy = MachineCpu::now().busy_seconds_since(&machine_before);
    let threads = server.thread_cpu()?.since(&threads_before);
    let disk_writes = server.disk_writes()?.since(&disk_before);
    let outcome =
        result.map_err(|error| error.context(format!("the server's log:\n{}", server.log_tail())))?;
    Ok(Phase {
        outcome,
        server_cpu_seconds,
        disk_writes,
        data_dir_peak_bytes,
        wal_peak_bytes,
        data_dir_end_bytes: server::directory_bytes(data_dir),
        threads,
        client_cpu_seconds,
        other_cpu_seconds: (machine_busy - server_cpu_seconds - client_cpu_seconds).max(0.0),
        load_average_before,
    })
}

/// The JSON line of an ingestion phase; `unit` is `events` or `labels`.
fn phase_line(name: &str, unit: &str, phase: &mut Phase, bodies: &Bodies, args: &QualityArgs) -> Value {
    let seconds = phase.seconds();
    let count = bodies.events as f64;
    let outcome = &mut phase.outcome;
    let cpu_by_thread: serde_json::Map<String, Value> = phase
        .threads
        .seconds_by_name
        .iter()
        .map(|(name, cpu_seconds)| (name.clone(), json!(round(*cpu_seconds, 2))))
        .collect();
    json!({
        "name": name,
        unit: bodies.events,
        "batch": args.batch,
        "connections": args.connections,
        "requests": outcome.requests,
        "seconds": round(seconds, 3),
        format!("{unit}_per_second"): round(count / seconds, 1),
        "megabytes": round(bodies.bytes as f64 / 1e6, 1),
        "request_p50_ms": load::quantile(&mut outcome.request_seconds, 0.5).map(|s| round(s * 1000.0, 2)),
        "request_p99_ms": load::quantile(&mut outcome.request_seconds, 0.99).map(|s| round(s * 1000.0, 2)),
        "accepted": outcome.accepted,
        "duplicates": outcome.duplicates,
        "corrected": outcome.corrected,
        "held": outcome.held,
        "rejected": outcome.rejected,
        "retries_429": outcome.overloaded_retries,
        "server_cpu_seconds": round(phase.server_cpu_seconds, 2),
        "server_cpu_cores_busy": round(phase.server_cpu_seconds / seconds, 2),
        "server_cpu_microseconds_per_event": round(phase.server_cpu_seconds / count * 1e6, 2),
        "server_cpu_seconds_by_thread": cpu_by_thread,
        "server_written_mb": round(phase.disk_writes.written_bytes as f64 / 1e6, 1),
        "server_written_bytes_per_event": round(phase.disk_writes.written_bytes as f64 / count, 0),
        "server_storage_write_mb": round(phase.disk_writes.storage_bytes as f64 / 1e6, 1),
        "data_dir_peak_mb": round(phase.data_dir_peak_bytes as f64 / 1e6, 1),
        "wal_peak_mb": round(phase.wal_peak_bytes as f64 / 1e6, 1),
        "data_dir_mb_after": round(phase.data_dir_end_bytes as f64 / 1e6, 1),
        "client_cpu_seconds": round(phase.client_cpu_seconds, 2),
        "other_processes_cpu_seconds": round(phase.other_cpu_seconds, 2),
        "load_average_1m_before": phase.load_average_before,
        "durability": "acknowledged after the SQLite group commit (server default synchronous=full)",
    })
}

/// Checks that every row of a phase was accepted once and nothing else happened.
fn check_phase(what: &str, outcome: &LoadOutcome, sent: usize, problems: &mut Vec<String>) {
    if outcome.accepted != sent as u64 {
        problems.push(format!("{what}: accepted {} of {sent}", outcome.accepted));
    }
    if outcome.rejected != 0 {
        problems.push(format!(
            "{what}: {} rejected, for example {}",
            outcome.rejected,
            Value::from(outcome.rejection_examples.clone())
        ));
    }
    for (count, kind) in [
        (outcome.duplicates, "duplicates"),
        (outcome.corrected, "corrected"),
        (outcome.held, "held"),
    ] {
        if count != 0 {
            problems.push(format!("{what}: {count} {kind}, expected none"));
        }
    }
}

/// `GET url`: the round trip (send to the last byte of the answer) and the
/// answer, parsed after the clock stopped.
fn get_json(client: &reqwest::blocking::Client, url: &str) -> anyhow::Result<(f64, Value)> {
    let started = Instant::now();
    let response = client.get(url).send().with_context(|| format!("GET {url}"))?;
    let status = response.status();
    let body = response
        .bytes()
        .with_context(|| format!("reading the answer to GET {url}"))?;
    let seconds = started.elapsed().as_secs_f64();
    if !status.is_success() {
        bail!("GET {url} answered {status}: {}", String::from_utf8_lossy(&body));
    }
    let answer = serde_json::from_slice(&body).with_context(|| format!("GET {url} did not answer JSON"))?;
    Ok((seconds, answer))
}

fn rfc3339(nanoseconds: i64) -> anyhow::Result<String> {
    Ok(jiff::Timestamp::from_nanosecond(i128::from(nanoseconds))?.to_string())
}

fn performance_url(base_url: &str, model: &str, window: &str, end_ns: i64) -> anyhow::Result<String> {
    Ok(format!(
        "{base_url}/v1/models/{model}/performance?window={window}&end={}",
        rfc3339(end_ns)?
    ))
}

/// Latency statistics of a set of round trips, in milliseconds.
fn latency_summary(seconds: &[f64]) -> Value {
    let mut sorted = seconds.to_vec();
    let milliseconds = |q: f64, sorted: &mut [f64]| load::quantile(sorted, q).map(|s| round(s * 1000.0, 4));
    json!({
        "p50_ms": milliseconds(0.5, &mut sorted),
        "p90_ms": milliseconds(0.9, &mut sorted),
        "p99_ms": milliseconds(0.99, &mut sorted),
        "min_ms": milliseconds(0.0, &mut sorted),
        "max_ms": milliseconds(1.0, &mut sorted),
        "mean_ms": round(seconds.iter().sum::<f64>() / seconds.len().max(1) as f64 * 1000.0, 4),
    })
}

/// The confusion matrix of an answer as `[[tn, fp], [fn, tp]]` (rows actual,
/// columns predicted, classes "0" then "1"), whatever order it lists them in.
fn binary_confusion(answer: &Value) -> Option<[[u64; 2]; 2]> {
    let labels: Vec<&str> = answer["confusion_matrix"]["labels"]
        .as_array()?
        .iter()
        .map(|label| label.as_str())
        .collect::<Option<_>>()?;
    let matrix = answer["confusion_matrix"]["matrix"].as_array()?;
    let position = |class: &str| labels.iter().position(|label| *label == class);
    let mut out = [[0; 2]; 2];
    for (actual_index, actual) in ["0", "1"].into_iter().enumerate() {
        for (predicted_index, predicted) in ["0", "1"].into_iter().enumerate() {
            if let (Some(row), Some(column)) = (position(actual), position(predicted)) {
                out[actual_index][predicted_index] = matrix.get(row)?.get(column)?.as_u64()?;
            }
        }
    }
    Some(out)
}

/// Our figures for the positive class "1" (scikit-learn's default
/// `pos_label=1` for the anchor's 0/1 classes).
fn our_scores(answer: &Value) -> [(&'static str, Option<f64>); 4] {
    let positive = &answer["per_class"]["1"];
    [
        ("accuracy", answer["accuracy"].as_f64()),
        ("precision", positive["precision"].as_f64()),
        ("recall", positive["recall"].as_f64()),
        ("f1", positive["f1"].as_f64()),
    ]
}

/// Compares a performance answer with the reference of its window.
fn compare_window(what: &str, answer: &Value, reference: &Value, problems: &mut Vec<String>) -> Value {
    let on_boundary = reference["predictions_on_a_boundary"].as_u64().unwrap_or(0);
    // The anchor selects (start, end], we select [start, end): they differ
    // only for predictions exactly on a bound, and then our convention is
    // compared (the anchor's figure is still reported).
    let expected = if on_boundary > 0 {
        &reference["ours_convention"]
    } else {
        &reference["anchor"]
    };
    let mut ours = serde_json::Map::new();
    let mut max_difference: f64 = 0.0;
    let mut matches = true;
    for (name, value) in our_scores(answer) {
        ours.insert(name.into(), json!(value));
        match (value, expected[name].as_f64()) {
            (Some(value), Some(anchor)) => {
                let difference = (value - anchor).abs();
                max_difference = max_difference.max(difference);
                if difference > TOLERANCE {
                    matches = false;
                    problems.push(format!(
                        "{what}: {name} {value} differs from the anchor's {anchor} by {difference:e}"
                    ));
                }
            }
            _ => {
                matches = false;
                problems.push(format!(
                    "{what}: {name} missing (ours {value:?}, anchor {})",
                    expected[name]
                ));
            }
        }
    }
    let sample_size = answer["sample_size"].as_u64();
    if sample_size != expected["n"].as_u64() {
        matches = false;
        problems.push(format!(
            "{what}: sample_size {sample_size:?}, the anchor's merge has {} rows",
            expected["n"]
        ));
    }
    let predictions = answer["predictions"].as_u64();
    if predictions != reference["predictions_in_window_ours"].as_u64() {
        matches = false;
        problems.push(format!(
            "{what}: {predictions:?} predictions in the window, the log has {}",
            reference["predictions_in_window_ours"]
        ));
    }
    let confusion = binary_confusion(answer);
    let expected_confusion: Option<[[u64; 2]; 2]> =
        serde_json::from_value(reference["confusion_matrix"].clone()).ok();
    if confusion.is_none() || confusion != expected_confusion {
        matches = false;
        problems.push(format!(
            "{what}: confusion matrix {confusion:?}, the anchor's is {expected_confusion:?}"
        ));
    }
    json!({
        "ours": ours,
        "anchor": reference["anchor"],
        "compared_with": if on_boundary > 0 { "anchor computation with [start, end)" } else { "anchor" },
        "predictions_on_a_window_bound": on_boundary,
        "max_abs_difference": max_difference,
        "tolerance": TOLERANCE,
        "sample_size": sample_size,
        "predictions": predictions,
        "label_coverage": answer["label_coverage"],
        "confusion_matrix_tn_fp_fn_tp": confusion,
        "matches": matches,
    })
}

/// Runs `quality_data.py` (untimed): exports the log of `n` predictions and
/// computes the `expect` reference figures, or reads them from its cache.
fn export_log(
    python: &Path,
    anchors: &Path,
    cache: &Path,
    n: usize,
    expect: &[&str],
) -> anyhow::Result<Value> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("anchors")
        .join("quality_data.py");
    let mut script_args: Vec<OsString> = vec![
        "--anchors".into(),
        anchors.into(),
        "--n".into(),
        n.to_string().into(),
        "--out".into(),
        cache.into(),
    ];
    for part in expect {
        script_args.extend(["--expect".into(), (*part).into()]);
    }
    anchor::run_script(python, &script, &script_args, Duration::from_secs(7200), "data")?
        .pop()
        .context("quality_data.py printed no JSON")
}

fn load_log(export: &Value) -> anyhow::Result<AnchorLog> {
    let dir = PathBuf::from(
        export["dir"]
            .as_str()
            .context("quality_data.py named no directory")?,
    );
    let info: ExportInfo =
        serde_json::from_value(export["export"].clone()).context("quality_data.py's export.json")?;
    AnchorLog::load(&dir, info)
}

/// Runs one shared anchor script at one size; returns its result for that
/// size and its package versions.
fn run_anchor(
    python: &Path,
    anchors: &Path,
    script: &str,
    n: usize,
    repeats: usize,
) -> anyhow::Result<(Value, Value)> {
    let script_path = anchors.join(script);
    let script_args: Vec<OsString> = vec![
        "--sizes".into(),
        n.to_string().into(),
        "--repeats".into(),
        repeats.to_string().into(),
    ];
    // Each run loads the parquet log and joins it: about 2 minutes at 10M.
    let timeout = Duration::from_secs(600) + Duration::from_micros(30) * (n * repeats) as u32;
    eprintln!(
        "running the anchor {} --sizes {n} --repeats {repeats}",
        script_path.display()
    );
    let mut output = anchor::run_script(python, &script_path, &script_args, timeout, "anchor")?
        .pop()
        .with_context(|| format!("{script} printed no JSON"))?;
    let result = output["results"][n.to_string()].take();
    if result.is_null() {
        bail!("{script} printed no result for N={n}");
    }
    Ok((result, output["versions"].take()))
}

/// A number of seconds (or megabytes) from an anchor, to 3 places.
fn rounded(value: &Value) -> Value {
    json!(value.as_f64().map(|number| round(number, 3)))
}

fn runs_seconds(result: &Value, pick: impl Fn(&Value) -> Option<f64>) -> Vec<Value> {
    result["runs"]
        .as_array()
        .map(|runs| {
            runs.iter()
                .map(|run| json!(pick(run).map(|s| round(s, 3))))
                .collect()
        })
        .unwrap_or_default()
}

pub fn run(args: QualityArgs, workspace_root: &Path, target_dir: &Path) -> anyhow::Result<bool> {
    let predictions = args.predictions.unwrap_or(if args.quick {
        QUICK_PREDICTIONS
    } else {
        DEFAULT_PREDICTIONS
    });
    let rolling_predictions = args.rolling_predictions;
    let anchor_repeats = args.anchor_repeats.unwrap_or(if args.quick { 1 } else { 3 });
    if predictions == 0
        || rolling_predictions == 0
        || args.batch == 0
        || args.connections == 0
        || args.queries == 0
        || anchor_repeats == 0
    {
        bail!(
            "--predictions, --rolling-predictions, --batch, --connections, --queries and --anchor-repeats must be positive"
        );
    }
    let binary = args
        .server
        .clone()
        .unwrap_or_else(|| target_dir.join("release").join("modelwatch"));
    if !binary.is_file() {
        bail!(
            "the server binary {} does not exist: build it first with `cargo build --release -p modelwatch` \
             (the benchmark builds nothing itself), or pass --server PATH",
            binary.display()
        );
    }
    let anchors = anchor::anchors_dir(
        args.anchors.as_deref(),
        workspace_root,
        &["gen_data.py", "bench_join.py", "bench_rolling.py"],
    )?;
    let cache = args
        .data_cache
        .clone()
        .unwrap_or_else(|| crate::quality_data::default_cache_dir(target_dir));
    // The data needs Python even when the anchors are not timed.
    let python = anchor::find_python(args.python.as_deref(), target_dir, &anchor::QUALITY_PYTHON)?;

    // 1. The anchors' log and their reference figures (untimed, cached).
    let prepared = Instant::now();
    let same_log = predictions == rolling_predictions;
    let quality_export = export_log(
        &python,
        &anchors,
        &cache,
        predictions,
        if same_log {
            &["quality", "rolling"]
        } else {
            &["quality"]
        },
    )?;
    let rolling_export = if same_log {
        quality_export.clone()
    } else {
        export_log(&python, &anchors, &cache, rolling_predictions, &["rolling"])?
    };
    let quality_reference = quality_export["quality"].clone();
    let rolling_reference = rolling_export["rolling"].clone();
    let rolling_days = rolling_reference["days"]
        .as_array()
        .cloned()
        .context("quality_data.py gave no rolling days")?;

    let quality_log = load_log(&quality_export)?;
    let prediction_bodies = quality_log.prediction_bodies(QUALITY_MODEL, QUALITY_ID_PREFIX, args.batch);
    let label_bodies = quality_log.label_bodies(QUALITY_ID_PREFIX, 0..quality_log.info.labels, args.batch);
    drop(quality_log);
    let rolling_log = load_log(&rolling_export)?;
    let rolling_prediction_bodies =
        rolling_log.prediction_bodies(ROLLING_MODEL, ROLLING_ID_PREFIX, args.batch);
    let mut day_label_bodies = Vec::with_capacity(rolling_days.len());
    let mut labels_arrived = Vec::with_capacity(rolling_days.len());
    let mut previous = 0;
    for day in &rolling_days {
        let end_ns = day["end_ns"].as_i64().context("a rolling day without end_ns")?;
        let arrived = rolling_log.labels_arrived_by(end_ns);
        day_label_bodies.push(rolling_log.label_bodies(ROLLING_ID_PREFIX, previous..arrived, args.batch));
        labels_arrived.push(arrived);
        previous = arrived;
    }
    drop(rolling_log);
    eprintln!(
        "prepared {} predictions ({:.0} MB of NDJSON) and {} labels of the anchors' log, plus {} predictions \
         for the rolling accuracy, in {:.1} s (not timed)",
        grouped(prediction_bodies.events as f64),
        prediction_bodies.bytes as f64 / 1e6,
        grouped(label_bodies.events as f64),
        grouped(rolling_prediction_bodies.events as f64),
        prepared.elapsed().as_secs_f64()
    );

    // 2. Ingest into a fresh server.
    let server::FreshServer {
        scratch: _scratch, // kept until the end: it holds the data directory
        data_dir,
        server,
        idle_memory,
    } = server::FreshServer::start(&binary, "modelwatch-bench-quality-", args.connections)?;
    let mut problems = Vec::new();

    let mut prediction_phase = send_measured(
        &server,
        &data_dir,
        Endpoint::Predictions,
        &prediction_bodies,
        args.connections,
    )?;
    check_phase(
        "predictions",
        &prediction_phase.outcome,
        prediction_bodies.events,
        &mut problems,
    );
    let predictions_per_second = prediction_bodies.events as f64 / prediction_phase.seconds();
    eprintln!(
        "predictions: {} in {:.1} s = {} events/s",
        grouped(prediction_bodies.events as f64),
        prediction_phase.seconds(),
        grouped(predictions_per_second)
    );
    let mut label_phase = send_measured(
        &server,
        &data_dir,
        Endpoint::Labels,
        &label_bodies,
        args.connections,
    )?;
    check_phase("labels", &label_phase.outcome, label_bodies.events, &mut problems);
    let labels_per_second = label_bodies.events as f64 / label_phase.seconds();
    eprintln!(
        "labels: {} in {:.1} s = {} labels/s",
        grouped(label_bodies.events as f64),
        label_phase.seconds(),
        grouped(labels_per_second)
    );

    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?;
    let (_, label_stats) = get_json(&client, &format!("{}/v1/labels/stats", server.base_url))?;
    if label_stats["joined"].as_u64() != Some(label_bodies.events as u64) {
        problems.push(format!(
            "/v1/labels/stats counts {} joined labels for {} sent",
            label_stats["joined"], label_bodies.events
        ));
    }
    let prediction_line = phase_line(
        "quality_ingest_predictions",
        "events",
        &mut prediction_phase,
        &prediction_bodies,
        &args,
    );
    let mut label_line = phase_line(
        "quality_ingest_labels",
        "labels",
        &mut label_phase,
        &label_bodies,
        &args,
    );
    label_line["label_stats_after"] = label_stats;
    label_line["goal_labels_per_second"] = json!(LABELS_GOAL_PER_SECOND);
    label_line["goal_met"] = json!(labels_per_second >= LABELS_GOAL_PER_SECOND);
    drop((prediction_bodies, label_bodies));

    // 3. The quality query, 7d (SPEC) and over the whole log (the anchor's scope).
    let mut query_lines = Vec::new();
    for (key, name) in [("7d", "quality_query"), ("whole_log", "quality_query_whole_log")] {
        let reference = &quality_reference[key];
        let window = reference["window"]
            .as_str()
            .context("a reference without window")?;
        let end_ns = reference["end_ns"]
            .as_i64()
            .context("a reference without end_ns")?;
        let url = performance_url(&server.base_url, QUALITY_MODEL, window, end_ns)?;
        for _ in 0..args.warmup {
            get_json(&client, &url)?;
        }
        let mut seconds = Vec::with_capacity(args.queries);
        let mut last_answer = Value::Null;
        for _ in 0..args.queries {
            let (round_trip, answer) = get_json(&client, &url)?;
            seconds.push(round_trip);
            last_answer = answer;
        }
        let comparison = compare_window(name, &last_answer, reference, &mut problems);
        query_lines.push(json!({
            "name": name,
            "model": QUALITY_MODEL,
            "window": window,
            "start": rfc3339(reference["start_ns"].as_i64().unwrap_or_default())?,
            "end": rfc3339(end_ns)?,
            "log_predictions": predictions,
            "log_labels": quality_export["export"]["labels"],
            "queries": args.queries,
            "warmup": args.warmup,
            "latency": latency_summary(&seconds),
            "over": "HTTP/1.1 keep-alive on loopback, one client, round trip to the last byte",
            "check": comparison,
        }));
    }

    // 4. Rolling 7d accuracy, day by day.
    let rolling_ingest = send_measured(
        &server,
        &data_dir,
        Endpoint::Predictions,
        &rolling_prediction_bodies,
        args.connections,
    )?;
    check_phase(
        "rolling predictions",
        &rolling_ingest.outcome,
        rolling_prediction_bodies.events,
        &mut problems,
    );
    drop(rolling_prediction_bodies);
    let mut daily = Vec::new();
    let mut query_seconds = Vec::new();
    let mut label_post_seconds = 0.0;
    let mut rolling_matches = true;
    for ((day, bodies), arrived) in rolling_days.iter().zip(&day_label_bodies).zip(&labels_arrived) {
        let end_ns = day["end_ns"].as_i64().unwrap_or_default();
        let end = rfc3339(end_ns)?;
        if !bodies.bodies.is_empty() {
            let outcome = load::run(
                &server.base_url,
                Endpoint::Labels,
                &bodies.bodies,
                args.connections,
            )?;
            check_phase(
                &format!("labels arrived by {end}"),
                &outcome,
                bodies.events,
                &mut problems,
            );
            label_post_seconds += outcome.wall.as_secs_f64();
        }
        if day["labels_arrived"].as_u64() != Some(*arrived as u64) {
            problems.push(format!(
                "{arrived} labels arrived by {end}, the anchor counts {}",
                day["labels_arrived"]
            ));
        }
        let url = performance_url(&server.base_url, ROLLING_MODEL, "7d", end_ns)?;
        let (seconds, answer) = get_json(&client, &url)?;
        query_seconds.push(seconds);
        let on_boundary = day["predictions_on_a_boundary"].as_u64().unwrap_or(0);
        let expected = if on_boundary > 0 {
            day["ours_convention_accuracy"].as_f64()
        } else {
            day["anchor_accuracy"].as_f64()
        };
        let accuracy = answer["accuracy"].as_f64();
        let same = matches!((accuracy, expected), (Some(a), Some(b)) if (a - b).abs() <= TOLERANCE)
            && answer["sample_size"].as_u64() == day["sample_size_ours"].as_u64();
        if !same {
            rolling_matches = false;
            problems.push(format!(
                "rolling accuracy as of {end}: ours {accuracy:?} over {} labels, the anchor's {expected:?} over {}",
                answer["sample_size"], day["sample_size_ours"]
            ));
        }
        daily.push(json!({
            "end": end,
            "labels_arrived": arrived,
            "sample_size": answer["sample_size"],
            "accuracy": accuracy,
            "anchor_accuracy": day["anchor_accuracy"],
            "predictions_on_a_window_bound": on_boundary,
            "query_ms": round(seconds * 1000.0, 4),
        }));
    }
    let rolling_seconds: f64 = query_seconds.iter().sum();
    let rolling_labels: usize = day_label_bodies.iter().map(|bodies| bodies.events).sum();
    drop(day_label_bodies);
    let rolling_line = json!({
        "name": "quality_rolling",
        "model": ROLLING_MODEL,
        "log_predictions": rolling_predictions,
        "labels_posted": rolling_labels,
        "window": "7d",
        "days": daily.len(),
        "queries_seconds_total": round(rolling_seconds, 6),
        "query_latency": latency_summary(&query_seconds),
        "label_posting_seconds_untimed": round(label_post_seconds, 2),
        "prediction_ingest_seconds_untimed": round(rolling_ingest.seconds(), 2),
        "daily": daily,
        "accuracies_match_anchor": rolling_matches,
        "tolerance": TOLERANCE,
        "goal_seconds": ROLLING_GOAL_SECONDS,
        "goal_met": rolling_seconds <= ROLLING_GOAL_SECONDS,
    });

    // The server after everything.
    let telemetry = crate::scrape_self_telemetry(&client, &server.base_url).unwrap_or_else(|error| {
        eprintln!("warning: {error:#}");
        Value::Null
    });
    let memory = server.memory()?;
    let server_cpu_total = server.cpu_seconds();
    let startup = server.startup;
    let shutdown = server.stop(Duration::from_secs(300))?;
    let database_bytes = server::directory_bytes(&data_dir);
    let server_line = json!({
        "name": "quality_server",
        "events_ingested": predictions + rolling_predictions,
        "labels_ingested": label_line["labels"].as_u64().unwrap_or(0) + rolling_labels as u64,
        "server_startup_ms": round(startup.as_secs_f64() * 1000.0, 1),
        "server_idle_rss_mb": round(idle_memory.rss_mb, 1),
        "server_peak_rss_mb": round(memory.peak_rss_mb, 1),
        "server_rss_mb_end": round(memory.rss_mb, 1),
        "server_cpu_seconds_total": round(server_cpu_total, 1),
        "server_telemetry": telemetry,
        "shutdown_seconds": round(shutdown.as_secs_f64(), 2),
        "database_mb": round(database_bytes as f64 / 1e6, 1),
        "cores": std::thread::available_parallelism().map(usize::from).ok(),
    });
    for line in [&prediction_line, &label_line]
        .into_iter()
        .chain(&query_lines)
        .chain([&rolling_line, &server_line])
    {
        emit(line);
    }

    // 5. The anchors, same sizes, same machine, now.
    let mut join_line = Value::Null;
    let mut rolling_anchor_line = Value::Null;
    if !args.no_anchor {
        let (join, versions) = run_anchor(&python, &anchors, "bench_join.py", predictions, anchor_repeats)?;
        let seed = &join["seed"];
        // The same run's anchor prints its metrics rounded to 6 places.
        let whole_log_ours = &query_lines[1]["check"]["ours"];
        let printed_metrics_agree = ["accuracy", "precision", "recall", "f1"].iter().all(|name| {
            matches!(
                (whole_log_ours[name].as_f64(), seed["metrics"][name].as_f64()),
                (Some(a), Some(b)) if (a - b).abs() <= 5e-7 + 1e-12
            )
        }) && seed["metrics"]["n"] == query_lines[1]["check"]["sample_size"];
        if !printed_metrics_agree {
            problems.push(format!(
                "bench_join.py printed {} for the whole log, ours are {whole_log_ours}",
                seed["metrics"]
            ));
        }
        join_line = json!({
            "name": "anchor_join",
            "script": anchors.join("bench_join.py"),
            "what": "the seed's predictions.merge(labels, on='prediction_id') and 4 sklearn metrics over the whole log (pandas, one process each run)",
            "predictions": predictions,
            "repeats": anchor_repeats,
            "seconds": rounded(&seed["total_s"]),
            "merge_seconds": rounded(&seed["merge_s"]),
            "sklearn_seconds": rounded(&seed["metrics_s"]),
            "rss_before_mb": rounded(&seed["rss_before_mb"]),
            "peak_rss_mb": rounded(&seed["peak_rss_mb"]),
            "runs_seconds": runs_seconds(&join, |run| run["seed"]["total_s"].as_f64()),
            "slim_numpy_seconds": rounded(&join["slim_numpy"]["total_s"]),
            "slim_numpy_peak_rss_mb": rounded(&join["slim_numpy"]["peak_rss_mb"]),
            "load_parquet_seconds_untimed": rounded(&join["load_parquet_s"]),
            "metrics": seed["metrics"],
            "metrics_agree_with_ours": printed_metrics_agree,
            "versions": versions,
        });
        emit(&join_line);

        let (rolling, versions) = run_anchor(
            &python,
            &anchors,
            "bench_rolling.py",
            rolling_predictions,
            anchor_repeats,
        )?;
        let printed: Vec<Option<f64>> = rolling["accuracies"]
            .as_array()
            .map(|values| values.iter().map(Value::as_f64).collect())
            .unwrap_or_default();
        let ours: Vec<Option<f64>> = rolling_line["daily"]
            .as_array()
            .map(|days| days.iter().map(|day| day["accuracy"].as_f64()).collect())
            .unwrap_or_default();
        // Printed rounded to 4 places.
        let accuracies_agree = printed.len() == ours.len()
            && printed
                .iter()
                .zip(&ours)
                .all(|pair| matches!(pair, (Some(a), Some(b)) if (a - b).abs() <= 5e-5 + 1e-12));
        if !accuracies_agree {
            problems.push(format!(
                "bench_rolling.py printed accuracies {printed:?}, ours are {ours:?}"
            ));
        }
        rolling_anchor_line = json!({
            "name": "anchor_rolling",
            "script": anchors.join("bench_rolling.py"),
            "what": "14 x the seed's monitor_rolling_accuracy(predictions, labels, as_of=day end): merge, arrived labels, last 7 days, sklearn accuracy",
            "predictions": rolling_predictions,
            "repeats": anchor_repeats,
            "seconds": rounded(&rolling["seed_total_s"]),
            "per_call_seconds": rounded(&rolling["seed_per_call_median_s"]),
            "rss_before_mb": rounded(&rolling["seed_rss_before_mb"]),
            "peak_rss_mb": rounded(&rolling["seed_peak_rss_mb"]),
            "runs_seconds": runs_seconds(&rolling, |run| run["seed"]["total_s"].as_f64()),
            "merge_once_seconds": rounded(&rolling["merge_once_total_s"]),
            "accuracies": rolling["accuracies"],
            "accuracies_agree_with_ours": accuracies_agree,
            "versions": versions,
        });
        emit(&rolling_anchor_line);
    }

    // Ratios and goals.
    let query_p50 = |line: &Value| line["latency"]["p50_ms"].as_f64().map(|ms| ms / 1000.0);
    let query_7d_p50 = query_p50(&query_lines[0]).unwrap_or(f64::NAN);
    let query_7d_p99 = query_lines[0]["latency"]["p99_ms"].as_f64().unwrap_or(f64::NAN) / 1000.0;
    let whole_log_p50 = query_p50(&query_lines[1]).unwrap_or(f64::NAN);
    let anchor_join_seconds = join_line["seconds"].as_f64();
    let anchor_slim_seconds = join_line["slim_numpy_seconds"].as_f64();
    let anchor_rolling_seconds = rolling_anchor_line["seconds"].as_f64();
    let query_ratio = anchor_join_seconds.map(|anchor| anchor / query_7d_p50);
    let ratio_line = json!({
        "name": "quality_ratio",
        "predictions": predictions,
        "query_7d_p50_ms": round(query_7d_p50 * 1000.0, 4),
        "query_7d_p99_ms": round(query_7d_p99 * 1000.0, 4),
        "query_whole_log_p50_ms": round(whole_log_p50 * 1000.0, 4),
        "anchor_join_seconds": anchor_join_seconds,
        "query_ratio": query_ratio.map(|ratio| round(ratio, 0)),
        "query_ratio_vs_slim_numpy": anchor_slim_seconds.map(|anchor| round(anchor / query_7d_p50, 0)),
        "whole_log_query_ratio": anchor_join_seconds.map(|anchor| round(anchor / whole_log_p50, 0)),
        "goal_query_ms": QUERY_GOAL_SECONDS * 1000.0,
        "goal_query_met_p50": query_7d_p50 < QUERY_GOAL_SECONDS,
        "goal_query_met_p99": query_7d_p99 < QUERY_GOAL_SECONDS,
        "stretch_query_ms": QUERY_STRETCH_SECONDS * 1000.0,
        "stretch_query_met_p50": query_7d_p50 < QUERY_STRETCH_SECONDS,
        "goal_query_ratio": QUERY_GOAL_RATIO,
        "goal_query_ratio_met": query_ratio.map(|ratio| ratio >= QUERY_GOAL_RATIO),
        "rolling_seconds": round(rolling_seconds, 6),
        "anchor_rolling_seconds": anchor_rolling_seconds,
        "rolling_ratio": anchor_rolling_seconds.map(|anchor| round(anchor / rolling_seconds, 0)),
        "goal_rolling_seconds": ROLLING_GOAL_SECONDS,
        "goal_rolling_met": rolling_seconds <= ROLLING_GOAL_SECONDS,
        "predictions_per_second": round(predictions_per_second, 0),
        "labels_per_second": round(labels_per_second, 0),
        "goal_labels_per_second": LABELS_GOAL_PER_SECOND,
        "goal_labels_met": labels_per_second >= LABELS_GOAL_PER_SECOND,
        "server_peak_rss_mb": round(memory.peak_rss_mb, 1),
        "anchor_join_peak_rss_mb": join_line["peak_rss_mb"],
        "checks_passed": problems.is_empty(),
    });
    emit(&ratio_line);

    // The human summary.
    eprintln!();
    eprintln!(
        "== quality: {} predictions, {} labels (the shared anchors' fraud_detector log); rolling over {} predictions ==",
        grouped(predictions as f64),
        grouped(label_line["labels"].as_f64().unwrap_or(f64::NAN)),
        grouped(rolling_predictions as f64)
    );
    eprintln!(
        "ingest, durable over HTTP NDJSON ({} connections, {} per body): predictions {} /s, labels {} /s \
         (SPEC goal >= {} labels/s: {}); server CPU {:.1} us per label",
        args.connections,
        args.batch,
        grouped(predictions_per_second),
        grouped(labels_per_second),
        grouped(LABELS_GOAL_PER_SECOND),
        pass_or_miss(labels_per_second >= LABELS_GOAL_PER_SECOND),
        label_line["server_cpu_microseconds_per_event"]
            .as_f64()
            .unwrap_or(f64::NAN)
    );
    for line in [&prediction_line, &label_line] {
        let number = |key: &str| line[key].as_f64().unwrap_or(f64::NAN);
        eprintln!(
            "  {}: server CPU {:.1} s ({:.1} us/event; writer thread {:.1} s), other processes {:.1} CPU-s; \
             server wrote {:.0} MB ({:.0} bytes/event), WAL peaked at {:.0} MB",
            line["name"].as_str().unwrap_or("?"),
            number("server_cpu_seconds"),
            number("server_cpu_microseconds_per_event"),
            line["server_cpu_seconds_by_thread"]["modelwatch-writ"]
                .as_f64()
                .unwrap_or(f64::NAN),
            number("other_processes_cpu_seconds"),
            number("server_written_mb"),
            number("server_written_bytes_per_event"),
            number("wal_peak_mb")
        );
    }
    for line in &query_lines {
        eprintln!(
            "{} window={} end={}: p50 {:.3} ms, p99 {:.3} ms over {} queries; sample {} of {} predictions; figures {}",
            line["name"].as_str().unwrap_or("?"),
            line["window"].as_str().unwrap_or("?"),
            line["end"].as_str().unwrap_or("?"),
            line["latency"]["p50_ms"].as_f64().unwrap_or(f64::NAN),
            line["latency"]["p99_ms"].as_f64().unwrap_or(f64::NAN),
            args.queries,
            line["check"]["sample_size"],
            line["check"]["predictions"],
            if line["check"]["matches"] == true {
                "match the anchor's (sklearn) within 1e-9"
            } else {
                "DIFFER from the anchor's"
            }
        );
    }
    eprintln!(
        "rolling 7d accuracy, 14 daily queries: {:.2} ms in total (goal <= {:.0} ms: {}); accuracies {}",
        rolling_seconds * 1000.0,
        ROLLING_GOAL_SECONDS * 1000.0,
        pass_or_miss(rolling_seconds <= ROLLING_GOAL_SECONDS),
        if rolling_matches {
            "match the anchor's within 1e-9"
        } else {
            "DIFFER from the anchor's"
        }
    );
    eprintln!(
        "server: peak RSS {:.0} MB (idle {:.1} MB), database {:.0} MB, shutdown {:.1} s",
        memory.peak_rss_mb,
        idle_memory.rss_mb,
        database_bytes as f64 / 1e6,
        shutdown.as_secs_f64()
    );
    if let (Some(join_seconds), Some(ratio)) = (anchor_join_seconds, query_ratio) {
        eprintln!(
            "anchor bench_join.py (seed merge + sklearn, whole log): {join_seconds:.2} s, peak RSS {} MB; \
             slim numpy variant {:.2} s",
            join_line["peak_rss_mb"]
                .as_f64()
                .map_or("?".into(), |mb| format!("{mb:.0}")),
            anchor_slim_seconds.unwrap_or(f64::NAN)
        );
        eprintln!(
            "ratio quality query (7d p50) / anchor join: {}x (goal >= {}x: {}); whole-log query: {}x",
            grouped(ratio),
            grouped(QUERY_GOAL_RATIO),
            pass_or_miss(ratio >= QUERY_GOAL_RATIO),
            grouped(join_seconds / whole_log_p50)
        );
    }
    if let Some(anchor_seconds) = anchor_rolling_seconds {
        eprintln!(
            "anchor bench_rolling.py (14 x monitor_rolling_accuracy): {anchor_seconds:.2} s; ratio {}x",
            grouped(anchor_seconds / rolling_seconds)
        );
    }
    eprintln!(
        "SPEC goals: query < 10 ms {} (p50) / {} (p99), stretch < 1 ms {}; rolling <= 0.1 s {}; labels >= 250,000/s {}",
        pass_or_miss(query_7d_p50 < QUERY_GOAL_SECONDS),
        pass_or_miss(query_7d_p99 < QUERY_GOAL_SECONDS),
        pass_or_miss(query_7d_p50 < QUERY_STRETCH_SECONDS),
        pass_or_miss(rolling_seconds <= ROLLING_GOAL_SECONDS),
        pass_or_miss(labels_per_second >= LABELS_GOAL_PER_SECOND)
    );
    if problems.is_empty() {
        eprintln!(
            "checks: every prediction and label accepted once; sample sizes, confusion matrices, accuracy, \
             precision, recall and f1 equal the anchor's"
        );
    } else {
        for problem in &problems {
            eprintln!("CHECK FAILED: {problem}");
        }
    }
    Ok(problems.is_empty())
}

fn pass_or_miss(met: bool) -> &'static str {
    if met { "PASS" } else { "MISS" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confusion_follows_the_answers_label_order() {
        let answer = json!({"confusion_matrix": {"labels": ["1", "0"], "matrix": [[5, 2], [3, 7]]}});
        // rows actual, columns predicted: actual 1 -> predicted 1: 5, predicted 0: 2
        assert_eq!(binary_confusion(&answer), Some([[7, 3], [2, 5]]));
    }

    #[test]
    fn a_window_matches_only_within_the_tolerance() {
        let reference = json!({
            "anchor": {"accuracy": 0.75, "precision": 0.5, "recall": 1.0, "f1": 2.0 / 3.0, "n": 4},
            "confusion_matrix": [[2, 1], [0, 1]],
            "predictions_in_window_ours": 6,
            "predictions_on_a_boundary": 0,
        });
        let mut answer = json!({
            "sample_size": 4, "predictions": 6, "accuracy": 0.75,
            "per_class": {"1": {"precision": 0.5, "recall": 1.0, "f1": 0.6666666666666666}},
            "confusion_matrix": {"labels": ["0", "1"], "matrix": [[2, 1], [0, 1]]},
        });
        let mut problems = Vec::new();
        assert_eq!(
            compare_window("t", &answer, &reference, &mut problems)["matches"],
            true
        );
        assert!(problems.is_empty(), "{problems:?}");
        answer["accuracy"] = json!(0.75 + 1e-8);
        assert_eq!(
            compare_window("t", &answer, &reference, &mut problems)["matches"],
            false
        );
        assert_eq!(problems.len(), 1);
    }
}
