//! `report`: `modelwatch report` over the shared anchors' log as Parquet
//! (SPEC §6: at 10M rows, at least 20x the seed's pandas approach). One run
//! 1. exports the anchors' synthetic `fraud_detector` log (their
//!    `gen_data.py`, seed 42) as Parquet through `anchors/report_data.py`
//!    (untimed, reused when present);
//! 2. times the release binary's `report --format json` on it, each repeat a
//!    fresh process, with its peak RSS and CPU from GNU `time`;
//! 3. checks the report's whole-range sample size, accuracy and class-`1`
//!    precision, recall and F1 against what the anchor prints;
//! 4. times the anchor, `bench_join.py` (the seed's pandas merge plus four
//!    scikit-learn metrics), at the same size in the same run, and reports
//!    the ratios against its operation alone and with its parquet load.

use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use serde_json::{Value, json};

use crate::anchor;
use crate::server::{self, MachineCpu};
use crate::{emit, grouped, round};

const DEFAULT_SIZE: usize = 10_000_000;
const QUICK_SIZE: usize = 1_000_000;
const MODEL: &str = "fraud_detector";
/// SPEC §6: the report over 10M rows at least this many times faster than the
/// seed's pandas approach.
const GOAL_RATIO: f64 = 20.0;
const GOAL_SIZE: usize = 10_000_000;
/// GNU time gives the child's own rusage (wait4): exact peak RSS and CPU.
const GNU_TIME: &str = "/usr/bin/time";
/// bench_join.py prints its metrics rounded to 6 places.
const PRINTED_TOLERANCE: f64 = 5e-7 + 1e-12;
/// How often the child is polled: the resolution of the wall time when GNU
/// time is absent, and the delay before we notice its exit.
const POLL_INTERVAL: Duration = Duration::from_millis(2);

#[derive(Args)]
pub struct ReportArgs {
    /// Predictions in the anchors' log; about 70% of them get a label
    /// [default: 10000000, or 1000000 with --quick].
    #[arg(long)]
    size: Option<usize>,
    /// Timed runs of `modelwatch report`, each a fresh process (the median is
    /// reported) [default: 3, or 1 with --quick].
    #[arg(long)]
    repeats: Option<usize>,
    /// Runs of the anchor, each a fresh process [default: --repeats].
    #[arg(long)]
    anchor_repeats: Option<usize>,
    /// Passed to `modelwatch report --threads` [default: its own, the cores].
    #[arg(long)]
    threads: Option<usize>,
    /// The binary under test [default: <workspace>/target/release/modelwatch].
    #[arg(long)]
    binary: Option<PathBuf>,
    /// The shared anchors' folder [default: <workspace>/../shared/anchors].
    #[arg(long)]
    anchors: Option<PathBuf>,
    /// Where the Parquet files are written, and reused when both exist
    /// [default: <target>/bench-data/report_n{N}].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Python with numpy, pandas, scikit-learn and pyarrow [default:
    /// /tmp/anchorvenv/bin/python, else <target>/quality-venv, created with
    /// the shared anchors' pinned versions on first use].
    #[arg(long)]
    python: Option<PathBuf>,
    /// Skip the anchor: no ratio, and the report's figures go unchecked.
    #[arg(long)]
    no_anchor: bool,
    /// A smoke run: 1000000 predictions and one run of each side.
    #[arg(long)]
    quick: bool,
}

/// What one `modelwatch report` process took.
struct Run {
    wall_seconds: f64,
    cpu_seconds: f64,
    /// The split of `cpu_seconds`, known under GNU time only.
    user_seconds: Option<f64>,
    system_seconds: Option<f64>,
    peak_rss_mb: f64,
    /// CPU seconds the rest of the machine spent while it ran.
    other_processes_cpu_seconds: f64,
    load_average_before: Option<f64>,
    report: Value,
}

/// The Parquet files of the log, written by `report_data.py` unless both exist.
fn ensure_data(
    python: &Path,
    anchors: &Path,
    data_dir: &Path,
    size: usize,
) -> anyhow::Result<(PathBuf, PathBuf)> {
    let predictions = data_dir.join("predictions.parquet");
    let labels = data_dir.join("labels.parquet");
    if predictions.is_file() && labels.is_file() {
        eprintln!("reusing the Parquet files in {}", data_dir.display());
        return Ok((predictions, labels));
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("anchors")
        .join("report_data.py");
    let script_args: Vec<OsString> = vec![
        "--anchors".into(),
        anchors.into(),
        "--n".into(),
        size.to_string().into(),
        "--out".into(),
        data_dir.into(),
        "--parquet".into(),
    ];
    eprintln!(
        "writing the anchors' log of {} predictions as Parquet into {} (not timed)",
        grouped(size as f64),
        data_dir.display()
    );
    anchor::run_script(python, &script, &script_args, Duration::from_secs(7200), "data")?;
    if !(predictions.is_file() && labels.is_file()) {
        bail!(
            "report_data.py wrote no Parquet files into {}",
            data_dir.display()
        );
    }
    Ok((predictions, labels))
}

/// Waits for `child` until `timeout`, polling; kills it past the deadline.
fn wait_with_deadline(
    child: &mut Child,
    timeout: Duration,
    mut on_poll: impl FnMut(),
) -> anyhow::Result<ExitStatus> {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            bail!("modelwatch report did not finish within {timeout:?} and was killed");
        }
        on_poll();
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// `%e %U %S %M` from GNU time's output file: the last line (a failed command
/// is preceded by a line saying so).
fn parse_gnu_time(text: &str) -> Option<(f64, f64, f64)> {
    let fields: Vec<f64> = text
        .lines()
        .last()?
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    match fields[..] {
        [_elapsed, user, system, max_rss_kilobytes] => Some((user, system, max_rss_kilobytes / 1024.0)),
        _ => None,
    }
}

/// One timed `modelwatch report` process. Under GNU time when present: its
/// rusage is the child's own, exact. Otherwise `/proc` is polled: VmHWM is
/// exact too, but the CPU is the last sample before the exit.
fn run_report(binary: &Path, report_args: &[OsString], timeout: Duration) -> anyhow::Result<Run> {
    let scratch = tempfile::Builder::new()
        .prefix("modelwatch-bench-report-")
        .tempdir()
        .context("creating a scratch directory")?;
    let out = scratch.path().join("report.json");
    let stderr_path = scratch.path().join("stderr.txt");
    let rusage_path = scratch.path().join("rusage.txt");
    let gnu_time = Path::new(GNU_TIME).is_file();
    let mut command = if gnu_time {
        let mut command = Command::new(GNU_TIME);
        command
            .arg("-f")
            .arg("%e %U %S %M")
            .arg("-o")
            .arg(&rusage_path)
            .arg(binary);
        command
    } else {
        Command::new(binary)
    };
    command
        .args(report_args)
        .arg("--out")
        .arg(&out)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(&stderr_path).context("creating the child's stderr file")?);

    let load_average_before = server::load_average();
    let machine_before = MachineCpu::now();
    let started = Instant::now();
    let mut child = command
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let pid = child.id();
    let (mut polled_peak_rss_mb, mut polled_cpu_seconds) = (0.0_f64, 0.0_f64);
    let status = wait_with_deadline(&mut child, timeout, || {
        if !gnu_time {
            if let Ok(memory) = server::read_memory(pid) {
                polled_peak_rss_mb = polled_peak_rss_mb.max(memory.peak_rss_mb);
            }
            polled_cpu_seconds = polled_cpu_seconds.max(server::process_cpu_seconds(pid));
        }
    })?;
    let wall_seconds = started.elapsed().as_secs_f64();
    let machine_busy = MachineCpu::now().busy_seconds_since(&machine_before);
    if !status.success() {
        let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
        bail!(
            "{} {} failed with {status}:\n{}",
            binary.display(),
            report_args
                .iter()
                .map(|arg| arg.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" "),
            tail(&stderr, 4000)
        );
    }
    let (user_seconds, system_seconds, peak_rss_mb) = if gnu_time {
        let text = std::fs::read_to_string(&rusage_path).context("reading GNU time's output")?;
        let (user, system, peak) =
            parse_gnu_time(&text).with_context(|| format!("GNU time printed {text:?}"))?;
        (Some(user), Some(system), peak)
    } else {
        (None, None, polled_peak_rss_mb)
    };
    let cpu_seconds = match (user_seconds, system_seconds) {
        (Some(user), Some(system)) => user + system,
        _ => polled_cpu_seconds,
    };
    let text = std::fs::read_to_string(&out).with_context(|| format!("reading {}", out.display()))?;
    let report = serde_json::from_str(&text).context("the report is not JSON")?;
    Ok(Run {
        wall_seconds,
        cpu_seconds,
        user_seconds,
        system_seconds,
        peak_rss_mb,
        other_processes_cpu_seconds: (machine_busy - cpu_seconds).max(0.0),
        load_average_before,
        report,
    })
}

/// Runs `bench_join.py` at one size; returns its result for that size and its
/// package versions.
fn run_anchor(python: &Path, anchors: &Path, size: usize, repeats: usize) -> anyhow::Result<(Value, Value)> {
    let script = anchors.join("bench_join.py");
    let script_args: Vec<OsString> = vec![
        "--sizes".into(),
        size.to_string().into(),
        "--repeats".into(),
        repeats.to_string().into(),
    ];
    // Each run loads the parquet log and joins it: about a minute at 10M.
    let timeout = Duration::from_secs(600) + Duration::from_micros(30) * (size * repeats) as u32;
    eprintln!(
        "running the anchor {} --sizes {size} --repeats {repeats}",
        script.display()
    );
    let mut output = anchor::run_script(python, &script, &script_args, timeout, "anchor")?
        .pop()
        .context("bench_join.py printed no JSON")?;
    let result = output["results"][size.to_string()].take();
    if result.is_null() {
        bail!("bench_join.py printed no result for N={size}");
    }
    Ok((result, output["versions"].take()))
}

/// The last `max_bytes` of `text` or a little less, cut on a character boundary.
fn tail(text: &str, max_bytes: usize) -> &str {
    let mut start = text.len().saturating_sub(max_bytes);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// The figures of the whole range that the anchor also computes: sample size,
/// accuracy, and precision, recall and F1 of class `"1"` (scikit-learn's
/// `pos_label=1` for the anchor's 0/1 classes).
fn whole_range_figures(report: &Value) -> Value {
    let performance = &report["models"][MODEL]["whole"]["performance"];
    let positive = &performance["per_class"]["1"];
    json!({
        "n": performance["sample_size"],
        "accuracy": performance["accuracy"],
        "precision": positive["precision"],
        "recall": positive["recall"],
        "f1": positive["f1"],
    })
}

/// Problems with `ours` against the metrics bench_join.py printed (rounded to
/// 6 places) and its merged row count.
fn compare_with_anchor(ours: &Value, anchor_metrics: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    if ours["n"].as_u64().is_none() || ours["n"] != anchor_metrics["n"] {
        problems.push(format!(
            "sample_size {} differs from the anchor's merged rows {}",
            ours["n"], anchor_metrics["n"]
        ));
    }
    for name in ["accuracy", "precision", "recall", "f1"] {
        let agree = matches!(
            (ours[name].as_f64(), anchor_metrics[name].as_f64()),
            (Some(a), Some(b)) if (a - b).abs() <= PRINTED_TOLERANCE
        );
        if !agree {
            problems.push(format!(
                "{name} {} differs from the anchor's {} (printed to 6 places)",
                ours[name], anchor_metrics[name]
            ));
        }
    }
    problems
}

fn file_megabytes(path: &Path) -> Value {
    json!(
        std::fs::metadata(path)
            .ok()
            .map(|metadata| round(metadata.len() as f64 / 1e6, 1))
    )
}

pub fn run(args: ReportArgs, workspace_root: &Path, target_dir: &Path) -> anyhow::Result<bool> {
    let size = args
        .size
        .unwrap_or(if args.quick { QUICK_SIZE } else { DEFAULT_SIZE });
    let repeats = args.repeats.unwrap_or(if args.quick { 1 } else { 3 });
    let anchor_repeats = args.anchor_repeats.unwrap_or(repeats);
    if size == 0 || repeats == 0 || anchor_repeats == 0 || args.threads == Some(0) {
        bail!("--size, --repeats, --anchor-repeats and --threads must be positive");
    }
    let binary = args
        .binary
        .clone()
        .unwrap_or_else(|| target_dir.join("release").join("modelwatch"));
    if !binary.is_file() {
        bail!(
            "the binary {} does not exist: build it first with `cargo build --release -p modelwatch` \
             (the benchmark builds nothing itself), or pass --binary PATH",
            binary.display()
        );
    }
    let anchors = anchor::anchors_dir(
        args.anchors.as_deref(),
        workspace_root,
        &["gen_data.py", "bench_join.py"],
    )?;
    // The data needs Python even when the anchor is not timed.
    let python = anchor::find_python(args.python.as_deref(), target_dir, &anchor::QUALITY_PYTHON)?;
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| target_dir.join("bench-data").join(format!("report_n{size}")));

    // 1. The inputs (untimed).
    let (predictions_path, labels_path) = ensure_data(&python, &anchors, &data_dir, size)?;

    // 2. modelwatch report, each repeat a fresh process.
    let mut report_args: Vec<OsString> = vec![
        "report".into(),
        "--predictions".into(),
        predictions_path.clone().into(),
        "--model".into(),
        MODEL.into(),
        "--labels".into(),
        labels_path.clone().into(),
        "--format".into(),
        "json".into(),
        "--no-progress".into(),
    ];
    if let Some(threads) = args.threads {
        report_args.extend(["--threads".into(), threads.to_string().into()]);
    }
    // About 2 s per million rows on a quiet 2-core machine.
    let timeout = Duration::from_secs(600) + Duration::from_micros(100) * size as u32;
    let mut runs = Vec::with_capacity(repeats);
    for repeat in 0..repeats {
        let run = run_report(&binary, &report_args, timeout)?;
        eprintln!(
            "modelwatch report, run {}/{repeats}: {:.2} s wall, {:.1} CPU-s, peak RSS {:.0} MB (load {})",
            repeat + 1,
            run.wall_seconds,
            run.cpu_seconds,
            run.peak_rss_mb,
            run.load_average_before
                .map_or("?".into(), |load| format!("{load:.2}"))
        );
        runs.push(run);
    }
    let wall_seconds = median(&runs.iter().map(|run| run.wall_seconds).collect::<Vec<_>>());
    let median_of = |pick: fn(&Run) -> f64| median(&runs.iter().map(pick).collect::<Vec<_>>());
    let median_of_known = |pick: fn(&Run) -> Option<f64>| {
        let known: Option<Vec<f64>> = runs.iter().map(pick).collect();
        known.map(|values| median(&values))
    };
    let user_seconds = median_of_known(|run| run.user_seconds);
    let system_seconds = median_of_known(|run| run.system_seconds);
    let ours = whole_range_figures(&runs[0].report);
    let mut problems = Vec::new();
    // Every run must give the same figures: the report is deterministic.
    for (index, run) in runs.iter().enumerate().skip(1) {
        let figures = whole_range_figures(&run.report);
        if figures != ours {
            problems.push(format!("run {} gave {figures}, run 1 gave {ours}", index + 1));
        }
    }
    let first_report = &runs[0].report;
    let report_problems = first_report["problems"]["total"].as_u64();
    let labels_joined = first_report["labels"]["joined"].as_u64();
    let windows = first_report["models"][MODEL]["windows"].as_array().map(Vec::len);
    let rusage_source = if Path::new(GNU_TIME).is_file() {
        "GNU time (the child's rusage)"
    } else {
        "/proc polled every 2 ms (CPU is the last sample before the exit)"
    };
    let report_line = json!({
        "name": "modelwatch_report",
        "predictions": size,
        "input": "parquet",
        "predictions_file": predictions_path,
        "predictions_file_mb": file_megabytes(&predictions_path),
        "labels_file_mb": file_megabytes(&labels_path),
        "threads": args.threads,
        "repeats": repeats,
        "seconds": round(wall_seconds, 3),
        "runs_seconds": runs.iter().map(|run| round(run.wall_seconds, 3)).collect::<Vec<_>>(),
        "cpu_seconds": round(median_of(|run| run.cpu_seconds), 2),
        // Below the threads it runs means it waited: for the disk, or for cores other processes held.
        "cores_busy": round(median_of(|run| run.cpu_seconds / run.wall_seconds), 2),
        "user_cpu_seconds": user_seconds.map(|s| round(s, 2)),
        "system_cpu_seconds": system_seconds.map(|s| round(s, 2)),
        "peak_rss_mb": round(median_of(|run| run.peak_rss_mb), 1),
        "runs_peak_rss_mb": runs.iter().map(|run| round(run.peak_rss_mb, 1)).collect::<Vec<_>>(),
        "other_processes_cpu_seconds": runs.iter().map(|run| round(run.other_processes_cpu_seconds, 2)).collect::<Vec<_>>(),
        "load_average_1m_before": runs.iter().map(|run| run.load_average_before).collect::<Vec<_>>(),
        "rusage": rusage_source,
        "labels_joined": labels_joined,
        "rows_refused": report_problems,
        "daily_windows": windows,
        "whole_range": ours,
        "cores": std::thread::available_parallelism().map(usize::from).ok(),
    });
    emit(&report_line);

    // 3 and 4. The anchor, same size, same machine, now; and the check.
    let mut join_line = Value::Null;
    if !args.no_anchor {
        let (join, versions) = run_anchor(&python, &anchors, size, anchor_repeats)?;
        let seed = &join["seed"];
        problems.extend(compare_with_anchor(&ours, &seed["metrics"]));
        let run_seconds = |run: &Value, with_load: bool| {
            let operation = run["seed"]["total_s"].as_f64()?;
            let load = if with_load {
                run["load_parquet_s"].as_f64()?
            } else {
                0.0
            };
            Some(operation + load)
        };
        let anchor_runs = join["runs"].as_array().cloned().unwrap_or_default();
        let with_load: Vec<f64> = anchor_runs
            .iter()
            .filter_map(|run| run_seconds(run, true))
            .collect();
        join_line = json!({
            "name": "anchor_join",
            "script": anchors.join("bench_join.py"),
            "what": "the seed's predictions.merge(labels, on='prediction_id') and 4 sklearn metrics over the whole log, the parquet already loaded (pandas, one process each run)",
            "predictions": size,
            "repeats": anchor_repeats,
            "seconds": seed["total_s"].as_f64().map(|s| round(s, 3)),
            "seconds_with_load": (!with_load.is_empty()).then(|| round(median(&with_load), 3)),
            "load_parquet_seconds": join["load_parquet_s"].as_f64().map(|s| round(s, 3)),
            "runs_seconds": anchor_runs.iter().map(|run| run_seconds(run, false).map(|s| round(s, 3))).collect::<Vec<_>>(),
            "merge_seconds": seed["merge_s"].as_f64().map(|s| round(s, 3)),
            "sklearn_seconds": seed["metrics_s"].as_f64().map(|s| round(s, 3)),
            "peak_rss_mb": seed["peak_rss_mb"].as_f64().map(|mb| round(mb, 1)),
            "process_peak_rss_mb": join["proc_peak_mb"].as_f64().map(|mb| round(mb, 1)),
            "slim_numpy_seconds": join["slim_numpy"]["total_s"].as_f64().map(|s| round(s, 3)),
            "metrics": seed["metrics"],
            "versions": versions,
        });
        emit(&join_line);
    }

    // 5. Ratios and the goal.
    let anchor_seconds = join_line["seconds"].as_f64();
    let anchor_with_load_seconds = join_line["seconds_with_load"].as_f64();
    let ratio = anchor_seconds.map(|anchor| anchor / wall_seconds);
    let ratio_with_load = anchor_with_load_seconds.map(|anchor| anchor / wall_seconds);
    let goal_applies = size == GOAL_SIZE;
    let goal_met = ratio.map(|ratio| ratio >= GOAL_RATIO);
    let checked = !args.no_anchor;
    emit(&json!({
        "name": "report_ratio",
        "predictions": size,
        "modelwatch_seconds": round(wall_seconds, 3),
        "anchor_seconds": anchor_seconds,
        "anchor_with_load_seconds": anchor_with_load_seconds,
        "ratio": ratio.map(|ratio| round(ratio, 2)),
        "ratio_with_load": ratio_with_load.map(|ratio| round(ratio, 2)),
        "ratio_vs_slim_numpy": join_line["slim_numpy_seconds"].as_f64().map(|anchor| round(anchor / wall_seconds, 2)),
        "goal_ratio": GOAL_RATIO,
        "goal_size": GOAL_SIZE,
        // The goal is set at 10M rows; at other sizes it is reported but does not apply.
        "goal_met": if goal_applies { json!(goal_met) } else { Value::Null },
        "goal_met_at_this_size": goal_met,
        "peak_rss_mb": report_line["peak_rss_mb"],
        "anchor_peak_rss_mb": join_line["process_peak_rss_mb"],
        "figures_checked": checked,
        "checks_passed": problems.is_empty(),
    }));

    // The human summary.
    eprintln!();
    eprintln!(
        "== report: {} predictions, {} labels joined (the shared anchors' fraud_detector log as Parquet) ==",
        grouped(size as f64),
        labels_joined.map_or("?".into(), |joined| grouped(joined as f64))
    );
    eprintln!(
        "modelwatch report --format json: {:.2} s wall (median of {repeats}; runs {}), {:.1} CPU-s ({}), \
         peak RSS {:.0} MB; {} daily windows; {} rows refused",
        wall_seconds,
        runs.iter()
            .map(|run| format!("{:.2}", run.wall_seconds))
            .collect::<Vec<_>>()
            .join(", "),
        median_of(|run| run.cpu_seconds),
        match (user_seconds, system_seconds) {
            (Some(user), Some(system)) => format!("{user:.1} user + {system:.1} system"),
            _ => "user + system".to_owned(),
        },
        median_of(|run| run.peak_rss_mb),
        windows.map_or("?".into(), |count| count.to_string()),
        report_problems.map_or("?".into(), |count| count.to_string())
    );
    if let (Some(anchor), Some(ratio)) = (anchor_seconds, ratio) {
        eprintln!(
            "anchor bench_join.py (seed merge + 4 sklearn metrics, parquet loaded): {anchor:.2} s, \
             peak RSS {} MB; with its parquet load {:.2} s",
            join_line["process_peak_rss_mb"]
                .as_f64()
                .map_or("?".into(), |mb| format!("{mb:.0}")),
            anchor_with_load_seconds.unwrap_or(f64::NAN)
        );
        eprintln!(
            "ratio anchor / modelwatch: {ratio:.2}x against the operation alone (headline), {:.2}x counting its load",
            ratio_with_load.unwrap_or(f64::NAN)
        );
        eprintln!(
            "SPEC goal >= {GOAL_RATIO:.0}x at {} rows: {}",
            grouped(GOAL_SIZE as f64),
            match (goal_applies, ratio >= GOAL_RATIO) {
                (true, true) => "PASS".to_owned(),
                (true, false) => "MISS".to_owned(),
                (false, met) => format!(
                    "n/a at this size ({} here)",
                    if met { "would pass" } else { "would miss" }
                ),
            }
        );
    } else {
        eprintln!("ratio: n/a (no anchor measured)");
    }
    if !checked {
        eprintln!("checks: the figures were NOT checked (--no-anchor)");
    } else if problems.is_empty() {
        eprintln!(
            "checks: sample size {}, accuracy and class-1 precision, recall and f1 equal the anchor's (to its 6 places)",
            ours["n"]
        );
    }
    for problem in &problems {
        eprintln!("CHECK FAILED: {problem}");
    }
    Ok(problems.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gnu_time_output_reads_its_last_line() {
        assert_eq!(
            parse_gnu_time("2.31 3.50 0.42 524288\n"),
            Some((3.5, 0.42, 512.0))
        );
        assert_eq!(
            parse_gnu_time("Command exited with non-zero status 1\n0.01 0.00 0.00 4096\n"),
            Some((0.0, 0.0, 4.0))
        );
        assert_eq!(parse_gnu_time("garbage"), None);
    }

    #[test]
    fn figures_match_the_anchor_only_to_its_printed_places() {
        let anchor = json!({"accuracy": 0.912345, "precision": 0.5, "recall": 0.25, "f1": 0.333333, "n": 7});
        let ours = json!({"accuracy": 0.9123454, "precision": 0.5, "recall": 0.25, "f1": 1.0 / 3.0, "n": 7});
        assert!(compare_with_anchor(&ours, &anchor).is_empty());
        let off = json!({"accuracy": 0.912346, "precision": 0.5, "recall": 0.25, "f1": 1.0 / 3.0, "n": 8});
        assert_eq!(compare_with_anchor(&off, &anchor).len(), 2);
    }
}
