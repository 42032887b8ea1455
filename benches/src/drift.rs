//! `drift`: data drift of 8 numeric features at scale (SPEC §6, issue 5).
//! One run
//! 1. takes the shared anchors' synthetic log (their `gen_data.py`, seed 42)
//!    split at day 7 into reference (week 1) and current (week 2), exactly
//!    as `bench_evidently.py --kinds drift` splits it, through
//!    `anchors/drift_data.py` (untimed, cached): CSV files, raw f64 columns
//!    and the scipy reference figures;
//! 2. times modelwatch end to end from the CSV files: parse and summarize
//!    while streaming (no row is kept), then score every feature with its
//!    default method;
//! 3. times the computation from in-memory columns: a `NumericSummary` per
//!    feature and side (what modelwatch builds at ingest), then the scores;
//! 4. times single statistics on `bench_stats.py`'s samples (1M against 1M):
//!    KS, PSI with a fixed reference, and normed Wasserstein;
//! 5. runs the anchors, `bench_evidently.py` and `bench_stats.py`, in the
//!    same run, and reports the ratios and the SPEC goals.
//!
//! Every score is checked against scipy on the raw values: within the
//! `error_bound` modelwatch reports (Wasserstein, KS), or exactly for PSI,
//! whose binning `drift_data.py` replicates.

use std::ffi::OsString;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use modelwatch_core::drift::{self, Distribution, Method, NumericSummary, Score};
use serde_json::{Value, json};

use crate::anchor::{self, PythonNeeds};
use crate::server::{self, MachineCpu};
use crate::{emit, grouped, round};

const DEFAULT_SIZE: usize = 1_000_000;
const QUICK_SIZE: usize = 100_000;
/// SPEC §6 goals, set at 1M rows (and 10M for the end-to-end).
const GOAL_SIZE: usize = 1_000_000;
const LARGE_GOAL_SIZE: usize = 10_000_000;
const COMPUTATION_GOAL_RATIO: f64 = 100.0;
const END_TO_END_GOAL_RATIO: f64 = 20.0;
const END_TO_END_LARGE_GOAL_RATIO: f64 = 37.0;
const KS_GOAL_SECONDS: f64 = 0.130;
const PSI_GOAL_SECONDS: f64 = 0.005;
/// Repeats of the microsecond-scale measurements (a statistic from summaries).
const MICRO_REPEATS: usize = 101;
/// Slack for floating-point noise when comparing with a bound.
const EPSILON: f64 = 1e-9;
/// PSI on modelwatch's binning is compared with numpy's computation of it.
/// A value exactly on a bin edge could land in the neighbouring bin through
/// numpy's and Rust's `ln` differing in the last bit: one value moves the
/// PSI by about 1e-6 at 100k rows, so this still catches any real error.
const PSI_TOLERANCE: f64 = 1e-5;
/// bench_stats.py's own default.
const STATS_ANCHOR_REPEATS: usize = 7;
/// The CSV parsing on the end-to-end path.
const PARSER: &str = "csv 1 (BurntSushi, ByteRecord) + fast-float2 0.2";

/// Python for the data export: numpy, pandas, scipy and pyarrow.
const DATA_PYTHON: PythonNeeds = PythonNeeds {
    modules: &["numpy", "pandas", "scipy", "pyarrow"],
    packages: &[
        "numpy==2.4.6",
        "pandas==2.3.3",
        "scipy==1.17.1",
        "pyarrow==26.0.1",
    ],
    venv_name: "drift-venv",
};
/// ...and Evidently for the anchor, at the shared anchors' pinned versions.
const ANCHOR_PYTHON: PythonNeeds = PythonNeeds {
    modules: &["numpy", "pandas", "scipy", "pyarrow", "evidently"],
    packages: &[
        "numpy==2.4.6",
        "pandas==2.3.3",
        "scipy==1.17.1",
        "pyarrow==26.0.1",
        "evidently==0.7.23",
    ],
    venv_name: "drift-venv",
};

#[derive(Args)]
pub struct DriftArgs {
    /// Rows of the anchors' log, reference (week 1) and current (week 2)
    /// together [default: 1000000, or 100000 with --quick]. 10000000 is the
    /// SPEC's second point (Evidently then takes about 6 minutes per run).
    #[arg(long)]
    size: Option<usize>,
    /// Values in each of the single-statistic samples (bench_stats.py's
    /// `--n`) [default: 1000000, or 100000 with --quick].
    #[arg(long)]
    stats_size: Option<usize>,
    /// Timed repeats of each of our measurements (medians are reported)
    /// [default: 5, or 3 with --quick].
    #[arg(long)]
    repeats: Option<usize>,
    /// Runs of bench_evidently.py, each in a fresh process (the median is
    /// reported) [default: 3; 1 with --quick or from 10M rows].
    #[arg(long)]
    anchor_repeats: Option<usize>,
    /// Skip timing the Python anchors (the scores are still checked against
    /// scipy, which runs untimed with the data export).
    #[arg(long)]
    no_anchor: bool,
    /// Python with numpy, pandas, scipy, pyarrow (and evidently for the
    /// anchor) [default: /tmp/anchorvenv/bin/python, else <target>/drift-venv,
    /// created with the shared anchors' pinned versions on first use].
    #[arg(long)]
    anchor_python: Option<PathBuf>,
    /// The shared anchors' folder [default: <workspace>/../shared/anchors].
    #[arg(long)]
    anchors: Option<PathBuf>,
    /// Where the exported data is cached [default: <target>/bench-data/drift].
    #[arg(long)]
    data_cache: Option<PathBuf>,
    /// A smoke run: 100000 rows and samples, 3 repeats, one anchor run.
    #[arg(long)]
    quick: bool,
}

/// Wall-clock seconds of the repeats of one measurement.
#[derive(Debug, Clone, Default)]
struct Timings(Vec<f64>);

impl Timings {
    fn push(&mut self, elapsed: Duration) {
        self.0.push(elapsed.as_secs_f64());
    }

    /// The median, averaging the middle two of an even count (as Python's
    /// `statistics.median`, which the anchors use).
    fn median(&self) -> f64 {
        median(&self.0)
    }

    fn json_ms(&self) -> Value {
        let mut sorted = self.0.clone();
        sorted.sort_by(f64::total_cmp);
        json!({
            "median_ms": round(self.median() * 1e3, 4),
            "min_ms": sorted.first().map(|s| round(s * 1e3, 4)),
            "max_ms": sorted.last().map(|s| round(s * 1e3, 4)),
            "repeats": sorted.len(),
        })
    }
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

/// Peak and current resident memory of this process, in MB.
fn own_memory() -> server::Memory {
    server::read_memory(std::process::id()).unwrap_or(server::Memory {
        peak_rss_mb: f64::NAN,
        rss_mb: f64::NAN,
    })
}

/// Resets this process's peak-RSS counter (VmHWM) to its current RSS, as the
/// anchors do before their measured operation; false where the kernel refuses.
fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// What the rest of the machine did while we measured: other work on the
/// shared cores slows both sides.
struct Busy {
    machine: MachineCpu,
    own_cpu: f64,
    started: Instant,
    load_average: Option<f64>,
}

impl Busy {
    fn start() -> Busy {
        Busy {
            machine: MachineCpu::now(),
            own_cpu: server::own_cpu_seconds(),
            started: Instant::now(),
            load_average: server::load_average(),
        }
    }

    /// Cores that other processes kept busy on average, and the load average before.
    fn json(&self) -> Value {
        let wall = self.started.elapsed().as_secs_f64();
        let own = server::own_cpu_seconds() - self.own_cpu;
        let other = (MachineCpu::now().busy_seconds_since(&self.machine) - own).max(0.0);
        json!({
            "load_average_1m_before": self.load_average,
            "other_processes_cores_busy": round(other / wall, 2),
        })
    }
}

fn summarize(values: &[f64]) -> NumericSummary {
    let mut summary = NumericSummary::default();
    for value in values {
        summary.observe(*value);
    }
    summary
}

/// Scores every feature with its default method (Evidently's choice).
fn score_all(reference: &[NumericSummary], current: &[NumericSummary]) -> anyhow::Result<Vec<Score>> {
    reference
        .iter()
        .zip(current)
        .map(|(reference, current)| {
            let (reference, current) = (Distribution::Numeric(reference), Distribution::Numeric(current));
            drift::score(
                drift::default_method(reference, current),
                None,
                reference,
                current,
            )
            .map_err(anyhow::Error::from)
        })
        .collect()
}

fn score_one(method: Method, reference: &NumericSummary, current: &NumericSummary) -> anyhow::Result<Score> {
    Ok(drift::score(
        method,
        None,
        Distribution::Numeric(reference),
        Distribution::Numeric(current),
    )?)
}

/// A raw little-endian f64 file of `expected` values.
fn read_f64s(path: &Path, expected: usize) -> anyhow::Result<Vec<f64>> {
    let raw = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if raw.len() != expected * 8 {
        bail!(
            "{} holds {} bytes, expected {expected} float64 values: delete the cache to re-export",
            path.display(),
            raw.len()
        );
    }
    Ok(raw
        .chunks_exact(8)
        .map(|chunk| f64::from_le_bytes(chunk.try_into().expect("chunks of 8 bytes")))
        .collect())
}

/// Streams a CSV file with a header line, summarizing the named columns as
/// it goes: memory stays that of the reader's buffer and the summaries.
/// An empty field is a missing value and is skipped.
fn summarize_csv(path: &Path, features: &[String]) -> anyhow::Result<(Vec<NumericSummary>, u64)> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut reader = csv::ReaderBuilder::new()
        .buffer_capacity(1 << 20)
        .from_reader(file);
    let header = reader
        .byte_headers()
        .with_context(|| format!("reading the header of {}", path.display()))?
        .clone();
    let columns: Vec<usize> = features
        .iter()
        .map(|feature| {
            header
                .iter()
                .position(|name| name == feature.as_bytes())
                .with_context(|| format!("{} has no column {feature}", path.display()))
        })
        .collect::<anyhow::Result<_>>()?;
    let mut summaries = vec![NumericSummary::default(); features.len()];
    let mut record = csv::ByteRecord::new();
    let mut rows = 0u64;
    while reader
        .read_byte_record(&mut record)
        .with_context(|| format!("reading {}", path.display()))?
    {
        rows += 1;
        for (summary, column) in summaries.iter_mut().zip(&columns) {
            let field = record.get(*column).unwrap_or_default();
            if field.is_empty() {
                continue;
            }
            let value: f64 = fast_float2::parse(field).map_err(|_| {
                anyhow::anyhow!(
                    "{} line {}: {:?} is not a number",
                    path.display(),
                    rows + 1,
                    String::from_utf8_lossy(field)
                )
            })?;
            summary.observe(value);
        }
    }
    Ok((summaries, rows))
}

/// What the end-to-end path computes from the two files.
struct FromFiles {
    reference: Vec<NumericSummary>,
    current: Vec<NumericSummary>,
    scores: Vec<Score>,
    reference_rows: u64,
    current_rows: u64,
}

/// The end-to-end path: both files streamed into summaries, then the scores.
fn from_files(reference: &Path, current: &Path, features: &[String]) -> anyhow::Result<FromFiles> {
    let (reference, reference_rows) = summarize_csv(reference, features)?;
    let (current, current_rows) = summarize_csv(current, features)?;
    let scores = score_all(&reference, &current)?;
    Ok(FromFiles {
        reference,
        current,
        scores,
        reference_rows,
        current_rows,
    })
}

fn postcard_bytes(summary: &NumericSummary) -> usize {
    postcard::to_allocvec(summary)
        .map(|bytes| bytes.len())
        .unwrap_or(0)
}

fn score_json(score: &Score) -> Value {
    json!({
        "method": score.method.as_str(),
        "score": score.score,
        "error_bound": score.error_bound,
        "statistic": score.statistic,
        "p_value": score.p_value,
        "drifted": score.drifted,
    })
}

/// Runs `drift_data.py` (untimed): exports the data or reads it back from its cache.
fn export_data(
    python: &Path,
    anchors: &Path,
    cache: &Path,
    size: usize,
    stats_size: usize,
) -> anyhow::Result<Value> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("anchors")
        .join("drift_data.py");
    let args: Vec<OsString> = vec![
        "--anchors".into(),
        anchors.into(),
        "--out".into(),
        cache.into(),
        "--n".into(),
        size.to_string().into(),
        "--stats-n".into(),
        stats_size.to_string().into(),
    ];
    anchor::run_script(python, &script, &args, Duration::from_secs(7200), "data")?
        .pop()
        .context("drift_data.py printed no JSON")
}

/// The feature a key of Evidently's result summary is about:
/// `ValueDrift(column=amount,method=...)` gives `amount`.
fn evidently_column(key: &str) -> Option<&str> {
    if !key.starts_with("ValueDrift") {
        return None;
    }
    let rest = &key[key.find("column=")? + "column=".len()..];
    let end = rest.find([',', ')']).unwrap_or(rest.len());
    Some(&rest[..end])
}

/// Runs one shared anchor script; returns its JSON object.
fn run_anchor(
    python: &Path,
    anchors: &Path,
    script: &str,
    args: &[&str],
    timeout: Duration,
) -> anyhow::Result<Value> {
    let path = anchors.join(script);
    eprintln!("running the anchor {} {}", path.display(), args.join(" "));
    let args: Vec<OsString> = args.iter().map(OsString::from).collect();
    anchor::run_script(python, &path, &args, timeout, "anchor")?
        .pop()
        .with_context(|| format!("{script} printed no JSON"))
}

fn pass_or_miss(met: bool) -> &'static str {
    if met { "PASS" } else { "MISS" }
}

/// A goal's verdict, or why it does not apply at this size.
fn verdict(applies: bool, met: bool, goal_size: usize) -> String {
    if applies {
        pass_or_miss(met).to_owned()
    } else {
        format!("n/a, the goal is set at {}", grouped(goal_size as f64))
    }
}

/// Checks a Wasserstein score against a figure on the raw values: within
/// the score's error bound.
fn within_bound(score: &Score, raw: f64) -> bool {
    (score.score - raw).abs() <= score.error_bound.unwrap_or(0.0) + EPSILON
}

pub fn run(args: DriftArgs, workspace_root: &Path, target_dir: &Path) -> anyhow::Result<bool> {
    let size = args
        .size
        .unwrap_or(if args.quick { QUICK_SIZE } else { DEFAULT_SIZE });
    let stats_size = args
        .stats_size
        .unwrap_or(if args.quick { QUICK_SIZE } else { DEFAULT_SIZE });
    let repeats = args.repeats.unwrap_or(if args.quick { 3 } else { 5 });
    let anchor_repeats = args
        .anchor_repeats
        .unwrap_or(if args.quick || size >= LARGE_GOAL_SIZE {
            1
        } else {
            3
        });
    if size < 2 || stats_size == 0 || repeats == 0 || anchor_repeats == 0 {
        bail!("--size, --stats-size, --repeats and --anchor-repeats must be positive");
    }
    let anchors = anchor::anchors_dir(
        args.anchors.as_deref(),
        workspace_root,
        &["gen_data.py", "bench_evidently.py", "bench_stats.py"],
    )?;
    let cache = args
        .data_cache
        .clone()
        .unwrap_or_else(|| target_dir.join("bench-data").join("drift"));
    std::fs::create_dir_all(&cache).with_context(|| format!("creating {}", cache.display()))?;
    let needs = if args.no_anchor {
        &DATA_PYTHON
    } else {
        &ANCHOR_PYTHON
    };
    let python = anchor::find_python(args.anchor_python.as_deref(), target_dir, needs)?;

    // 1. Data and reference figures (untimed, cached).
    let started = Instant::now();
    let data = export_data(&python, &anchors, &cache, size, stats_size)?;
    let log = &data["log"];
    let stats = &data["stats"];
    let log_dir = PathBuf::from(log["dir"].as_str().context("drift_data.py named no directory")?);
    let features: Vec<String> =
        serde_json::from_value(log["features"].clone()).context("drift_data.py's feature list")?;
    let rows = |side: &str| log["files"][side]["rows"].as_u64().unwrap_or(0) as usize;
    let (reference_rows, current_rows) = (rows("reference"), rows("current"));
    let csv_bytes: u64 = ["reference", "current"]
        .iter()
        .filter_map(|side| log["files"][*side]["csv_bytes"].as_u64())
        .sum();
    let csv_path = |side: &str| log_dir.join(format!("{side}.csv"));
    eprintln!(
        "data: {} reference and {} current rows of {} features ({:.0} MB of CSV), bench_stats samples of {}, \
         ready in {:.1} s (not timed)",
        grouped(reference_rows as f64),
        grouped(current_rows as f64),
        features.len(),
        csv_bytes as f64 / 1e6,
        grouped(stats_size as f64),
        started.elapsed().as_secs_f64()
    );
    let mut problems: Vec<String> = Vec::new();

    // 2. End to end from the files, first, while this process holds no data:
    //    its peak RSS is then that of streaming.
    let e2e_pass = || from_files(&csv_path("reference"), &csv_path("current"), &features);
    // One untimed pass: the files into the page cache, as Evidently's
    // timing starts with its frames already in memory.
    black_box(e2e_pass()?);
    let memory_before_e2e = own_memory();
    let peak_reset = reset_peak();
    let busy = Busy::start();
    let mut e2e_times = Timings::default();
    let mut e2e_result = None;
    for _ in 0..repeats {
        let clock = Instant::now();
        let result = e2e_pass()?;
        e2e_times.push(clock.elapsed());
        e2e_result = Some(black_box(result));
    }
    let e2e_busy = busy.json();
    let e2e_memory = own_memory();
    let FromFiles {
        reference: csv_reference,
        current: csv_current,
        scores: csv_scores,
        reference_rows: reference_read,
        current_rows: current_read,
    } = e2e_result.expect("at least one repeat");
    if reference_read as usize != reference_rows || current_read as usize != current_rows {
        problems.push(format!(
            "the CSV files hold {reference_read} and {current_read} rows, the export says {reference_rows} and {current_rows}"
        ));
    }
    let e2e_seconds = e2e_times.median();
    eprintln!("end to end from CSV: {:.3} s (median of {repeats})", e2e_seconds);

    // 3. The computation from in-memory columns.
    let read_side = |side: &str, rows: usize| -> anyhow::Result<Vec<Vec<f64>>> {
        features
            .iter()
            .map(|feature| read_f64s(&log_dir.join(format!("{side}.{feature}.f64")), rows))
            .collect()
    };
    let reference_columns = read_side("reference", reference_rows)?;
    let current_columns = read_side("current", current_rows)?;
    let columns_mb = ((reference_rows + current_rows) * features.len() * 8) as f64 / 1e6;
    let memory_before_computation = own_memory();
    reset_peak();
    let busy = Busy::start();
    let (mut summarize_times, mut score_times, mut total_times) =
        (Timings::default(), Timings::default(), Timings::default());
    let mut computed = None;
    // Repeat 0 is a warm-up (first touches of the columns, the allocator).
    for repeat in 0..=repeats {
        let clock = Instant::now();
        let reference: Vec<NumericSummary> =
            reference_columns.iter().map(|column| summarize(column)).collect();
        let current: Vec<NumericSummary> = current_columns.iter().map(|column| summarize(column)).collect();
        let summarized = clock.elapsed();
        let scores = score_all(black_box(&reference), black_box(&current))?;
        let total = clock.elapsed();
        if repeat > 0 {
            summarize_times.push(summarized);
            score_times.push(total - summarized);
            total_times.push(total);
        }
        computed = Some(black_box((reference, current, scores)));
    }
    let computation_busy = busy.json();
    let computation_memory = own_memory();
    let (reference_summaries, current_summaries, scores) = computed.expect("at least one repeat");
    // The score alone, many times (it is microseconds).
    let mut score_alone = Timings::default();
    for _ in 0..MICRO_REPEATS {
        let clock = Instant::now();
        black_box(score_all(
            black_box(&reference_summaries),
            black_box(&current_summaries),
        )?);
        score_alone.push(clock.elapsed());
    }
    drop((reference_columns, current_columns));
    if csv_reference != reference_summaries || csv_current != current_summaries {
        problems.push(
            "the summaries streamed from the CSV files differ from those of the raw columns (parsing is not exact)"
                .into(),
        );
    }
    if csv_scores != scores {
        problems.push("the scores from the CSV files differ from those of the raw columns".into());
    }
    let postcard: Vec<usize> = reference_summaries
        .iter()
        .chain(&current_summaries)
        .map(postcard_bytes)
        .collect();
    let bins: Vec<usize> = reference_summaries
        .iter()
        .chain(&current_summaries)
        .map(|summary| summary.histogram.bins().len())
        .collect();

    // Every score against scipy on the raw values.
    let mut per_feature = serde_json::Map::new();
    for ((feature, score), (reference, current)) in features
        .iter()
        .zip(&scores)
        .zip(reference_summaries.iter().zip(&current_summaries))
    {
        let expected = &log["reference"][feature];
        let raw = expected["normed_wasserstein"].as_f64();
        let mut entry = score_json(score);
        entry["scipy_normed_wasserstein"] = json!(raw);
        entry["scipy_drifted"] = expected["drifted"].clone();
        entry["reference_count"] = json!(reference.count());
        entry["current_count"] = json!(current.count());
        if reference.count() != reference_rows as u64 || current.count() != current_rows as u64 {
            problems.push(format!(
                "{feature}: summarized {} and {} values of {reference_rows} and {current_rows} rows",
                reference.count(),
                current.count()
            ));
        }
        if score.method != Method::Wasserstein {
            problems.push(format!(
                "{feature}: default method {} where Evidently picks the normed Wasserstein distance",
                score.method.as_str()
            ));
        }
        match raw {
            Some(raw) => {
                let difference = (score.score - raw).abs();
                entry["abs_difference"] = json!(difference);
                entry["within_error_bound"] = json!(within_bound(score, raw));
                if !within_bound(score, raw) {
                    problems.push(format!(
                        "{feature}: normed Wasserstein {} is {difference:e} from scipy's {raw}, more than its error bound {:?}",
                        score.score, score.error_bound
                    ));
                }
                if expected["drifted"].as_bool() != Some(score.drifted) {
                    problems.push(format!(
                        "{feature}: drifted={} but scipy's {raw} says {}",
                        score.drifted, expected["drifted"]
                    ));
                }
            }
            None => problems.push(format!("{feature}: drift_data.py has no reference figure")),
        }
        per_feature.insert(feature.clone(), entry);
    }
    let drifted: Vec<&str> = features
        .iter()
        .zip(&scores)
        .filter(|(_, score)| score.drifted)
        .map(|(feature, _)| feature.as_str())
        .collect();
    let computation_seconds = total_times.median();
    eprintln!(
        "computation from columns: {:.1} ms (median of {repeats})",
        computation_seconds * 1e3
    );

    // 4. Single statistics on bench_stats.py's samples.
    let stats_dir = PathBuf::from(
        stats["dir"]
            .as_str()
            .context("drift_data.py named no stats directory")?,
    );
    let sample_reference = read_f64s(&stats_dir.join("amount.reference.f64"), stats_size)?;
    let sample_current = read_f64s(&stats_dir.join("amount.current.f64"), stats_size)?;
    let busy = Busy::start();
    let (mut ks_total, mut psi_total, mut wasserstein_total) =
        (Timings::default(), Timings::default(), Timings::default());
    let mut ks_last = None;
    // In each loop, repeat 0 is an untimed warm-up.
    for repeat in 0..=repeats {
        let clock = Instant::now();
        let reference = summarize(black_box(&sample_reference));
        let current = summarize(black_box(&sample_current));
        let score = score_one(Method::Ks, &reference, &current)?;
        if repeat > 0 {
            ks_total.push(clock.elapsed());
        }
        ks_last = Some(black_box((reference, current, score)));
    }
    let (fixed_reference, sample_summary, ks_score) = ks_last.expect("at least one repeat");
    let mut psi_last = None;
    for repeat in 0..=repeats {
        // The reference summary is fixed (the baseline); a window pays for
        // its own summary and the comparison.
        let clock = Instant::now();
        let current = summarize(black_box(&sample_current));
        let score = score_one(Method::Psi, black_box(&fixed_reference), &current)?;
        if repeat > 0 {
            psi_total.push(clock.elapsed());
        }
        psi_last = Some(black_box(score));
    }
    let psi_score = psi_last.expect("at least one repeat");
    let mut wasserstein_last = None;
    for repeat in 0..=repeats {
        let clock = Instant::now();
        let reference = summarize(black_box(&sample_reference));
        let current = summarize(black_box(&sample_current));
        let score = score_one(Method::Wasserstein, &reference, &current)?;
        if repeat > 0 {
            wasserstein_total.push(clock.elapsed());
        }
        wasserstein_last = Some(black_box(score));
    }
    let wasserstein_score = wasserstein_last.expect("at least one repeat");
    let (mut summarize_one, mut ks_alone, mut psi_alone, mut wasserstein_alone) = (
        Timings::default(),
        Timings::default(),
        Timings::default(),
        Timings::default(),
    );
    for repeat in 0..=repeats {
        let clock = Instant::now();
        black_box(summarize(black_box(&sample_current)));
        if repeat > 0 {
            summarize_one.push(clock.elapsed());
        }
    }
    for _ in 0..MICRO_REPEATS {
        for (method, timings) in [
            (Method::Ks, &mut ks_alone),
            (Method::Psi, &mut psi_alone),
            (Method::Wasserstein, &mut wasserstein_alone),
        ] {
            let clock = Instant::now();
            black_box(score_one(
                method,
                black_box(&fixed_reference),
                black_box(&sample_summary),
            )?);
            timings.push(clock.elapsed());
        }
    }
    let stats_busy = busy.json();
    drop((sample_reference, sample_current));
    let scipy_ks = stats["ks_statistic"].as_f64();
    let ks_statistic = ks_score.statistic.unwrap_or(f64::NAN);
    let ks_bound = ks_score.error_bound.unwrap_or(0.0);
    let ks_within = scipy_ks
        .is_some_and(|scipy| ks_statistic - EPSILON <= scipy && scipy <= ks_statistic + ks_bound + EPSILON);
    if !ks_within {
        problems.push(format!(
            "KS: scipy's statistic {scipy_ks:?} is outside [{ks_statistic}, {ks_statistic} + {ks_bound}]"
        ));
    }
    let expected_psi = stats["psi_modelwatch_binning"].as_f64();
    let psi_matches =
        expected_psi.is_some_and(|expected| (psi_score.score - expected).abs() <= PSI_TOLERANCE);
    if !psi_matches {
        problems.push(format!(
            "PSI {} differs from numpy's computation of the same binning, {expected_psi:?}",
            psi_score.score
        ));
    }
    let scipy_wasserstein = stats["normed_wasserstein"].as_f64();
    let wasserstein_within = scipy_wasserstein.is_some_and(|raw| within_bound(&wasserstein_score, raw));
    if !wasserstein_within {
        problems.push(format!(
            "single Wasserstein: {} against scipy's {scipy_wasserstein:?}, error bound {:?}",
            wasserstein_score.score, wasserstein_score.error_bound
        ));
    }

    // 5. The anchors, same data, same machine, now.
    let mut evidently = Value::Null;
    let mut evidently_versions = Value::Null;
    let mut stats_anchor = Value::Null;
    if !args.no_anchor {
        let size_text = size.to_string();
        let repeats_text = anchor_repeats.to_string();
        let per_run = Duration::from_secs(120) + Duration::from_micros(80) * size as u32;
        let mut output = run_anchor(
            &python,
            &anchors,
            "bench_evidently.py",
            &[
                "--sizes",
                &size_text,
                "--kinds",
                "drift",
                "--repeats",
                &repeats_text,
            ],
            Duration::from_secs(300) + per_run * anchor_repeats as u32,
        )?;
        evidently = output["results"][format!("{size}_drift")].take();
        evidently_versions = output["versions"].take();
        if evidently.is_null() {
            bail!("bench_evidently.py printed no result for {size}_drift");
        }
        let stats_text = stats_size.to_string();
        let stats_repeats = STATS_ANCHOR_REPEATS.to_string();
        stats_anchor = run_anchor(
            &python,
            &anchors,
            "bench_stats.py",
            &["--n", &stats_text, "--repeats", &stats_repeats],
            Duration::from_secs(600) + Duration::from_micros(20) * (stats_size * STATS_ANCHOR_REPEATS) as u32,
        )?;
    }
    // Evidently's own scores, checked like scipy's.
    let mut evidently_scores = serde_json::Map::new();
    if let Some(summary) = evidently["summary"].as_object() {
        for (key, value) in summary {
            let (Some(column), Some(value)) = (evidently_column(key), value.as_f64()) else {
                continue;
            };
            let Some(position) = features.iter().position(|feature| feature == column) else {
                continue;
            };
            let within = within_bound(&scores[position], value);
            if !within {
                problems.push(format!(
                    "{column}: normed Wasserstein {} against Evidently's {value}, error bound {:?}",
                    scores[position].score, scores[position].error_bound
                ));
            }
            per_feature[column]["evidently_score"] = json!(value);
            evidently_scores.insert(column.to_owned(), json!(value));
        }
        if evidently_scores.len() != features.len() {
            eprintln!(
                "note: Evidently's summary named {} of {} features' scores",
                evidently_scores.len(),
                features.len()
            );
        }
    }

    let evidently_run = evidently["run_s"].as_f64();
    let evidently_total = evidently["total_s"].as_f64();
    let computation_ratio = evidently_total.map(|anchor| anchor / computation_seconds);
    let computation_ratio_run = evidently_run.map(|anchor| anchor / computation_seconds);
    let e2e_ratio = evidently_total.map(|anchor| anchor / e2e_seconds);
    let e2e_goal = if size >= LARGE_GOAL_SIZE {
        END_TO_END_LARGE_GOAL_RATIO
    } else {
        END_TO_END_GOAL_RATIO
    };
    let stat_ms = |name: &str| stats_anchor["results"][name]["median_ms"].as_f64();
    let scipy_ks_ms = stat_ms("ks_2samp");
    let numpy_psi_ms = stat_ms("psi_numpy_10q_precomputed_ref");
    let scipy_wasserstein_ms = stat_ms("wasserstein_distance");
    let stats_goal_applies = stats_size == GOAL_SIZE;

    let computation_line = json!({
        "name": "drift_computation",
        "rows": reference_rows + current_rows,
        "reference_rows": reference_rows,
        "current_rows": current_rows,
        "features": features.len(),
        "threads": 1,
        "what": "a NumericSummary (moments + 0.2% log-bin histogram) per feature and side from in-memory f64 columns, then each feature scored with its default method",
        "summarize": summarize_times.json_ms(),
        "score": score_times.json_ms(),
        "score_alone": score_alone.json_ms(),
        "total": total_times.json_ms(),
        "nanoseconds_per_value_summarized": round(
            summarize_times.median() * 1e9 / ((reference_rows + current_rows) * features.len()) as f64, 2),
        "summaries_postcard_bytes_total": postcard.iter().sum::<usize>(),
        "summaries_postcard_bytes_max": postcard.iter().max(),
        "histogram_bins_max": bins.iter().max(),
        "columns_mb": round(columns_mb, 1),
        "rss_before_mb": round(memory_before_computation.rss_mb, 1),
        "peak_rss_mb": round(computation_memory.peak_rss_mb, 1),
        "scores": per_feature,
        "drifted": drifted,
        "machine": computation_busy,
    });
    emit(&computation_line);
    let e2e_line = json!({
        "name": "drift_end_to_end",
        "rows": reference_rows + current_rows,
        "features": features.len(),
        "threads": 1,
        "what": "parse both CSV files while summarizing (no row kept), then score; files in the page cache",
        "parser": PARSER,
        "csv_bytes": csv_bytes,
        "seconds": e2e_times.json_ms(),
        "megabytes_per_second": round(csv_bytes as f64 / 1e6 / e2e_seconds, 1),
        "rows_per_second": round((reference_rows + current_rows) as f64 / e2e_seconds, 0),
        "rss_before_mb": round(memory_before_e2e.rss_mb, 1),
        "peak_rss_mb": round(e2e_memory.peak_rss_mb, 1),
        "peak_reset": peak_reset,
        "summaries_equal_in_memory": csv_reference == reference_summaries && csv_current == current_summaries,
        "machine": e2e_busy,
    });
    emit(&e2e_line);
    if !evidently.is_null() {
        let mut line = json!({
            "name": "anchor_evidently_drift",
            "script": anchors.join("bench_evidently.py"),
            "versions": evidently_versions,
        });
        for (key, value) in evidently.as_object().into_iter().flatten() {
            line[key] = value.clone();
        }
        emit(&line);
    }
    let single_line = json!({
        "name": "drift_single_statistics",
        "feature": "amount",
        "n_reference": stats_size,
        "n_current": stats_size,
        "summarize_one_sample": summarize_one.json_ms(),
        "ks": {
            "both_summaries_and_test": ks_total.json_ms(),
            "test_from_summaries": ks_alone.json_ms(),
            "statistic": ks_statistic,
            "error_bound": ks_bound,
            "p_value": ks_score.p_value,
            "scipy_statistic": scipy_ks,
            "scipy_p_value": stats["ks_pvalue"],
            "scipy_within_bound": ks_within,
        },
        "psi_fixed_reference": {
            "current_summary_and_psi": psi_total.json_ms(),
            "psi_from_summaries": psi_alone.json_ms(),
            "psi": psi_score.score,
            "numpy_same_binning": expected_psi,
            "numpy_10_quantile_bins": stats["psi_numpy_10q"],
            "binning": "decile groups of 0.2% log bins (bench_stats.py: 10 exact reference-quantile bins)",
        },
        "normed_wasserstein": {
            "both_summaries_and_distance": wasserstein_total.json_ms(),
            "distance_from_summaries": wasserstein_alone.json_ms(),
            "score": wasserstein_score.score,
            "error_bound": wasserstein_score.error_bound,
            "scipy": scipy_wasserstein,
            "scipy_within_bound": wasserstein_within,
        },
        "machine": stats_busy,
    });
    emit(&single_line);
    if !stats_anchor.is_null() {
        let mut line = stats_anchor.clone();
        line["name"] = json!("anchor_stats");
        line["script"] = json!(anchors.join("bench_stats.py"));
        emit(&line);
    }
    let computation_met = computation_ratio.map(|ratio| ratio >= COMPUTATION_GOAL_RATIO);
    let e2e_met = e2e_ratio.map(|ratio| ratio >= e2e_goal);
    let ks_met = ks_total.median() <= KS_GOAL_SECONDS;
    let psi_met = psi_total.median() <= PSI_GOAL_SECONDS;
    emit(&json!({
        "name": "drift_ratio",
        "rows": reference_rows + current_rows,
        "computation_seconds": round(computation_seconds, 6),
        "evidently_run_seconds": evidently_run,
        "evidently_total_seconds": evidently_total,
        "computation_ratio_vs_total": computation_ratio.map(|ratio| round(ratio, 1)),
        "computation_ratio_vs_run": computation_ratio_run.map(|ratio| round(ratio, 1)),
        "computation_goal_ratio": COMPUTATION_GOAL_RATIO,
        "computation_goal_met": if size == GOAL_SIZE { json!(computation_met) } else { Value::Null },
        "end_to_end_seconds": round(e2e_seconds, 6),
        "end_to_end_ratio_vs_total": e2e_ratio.map(|ratio| round(ratio, 1)),
        "end_to_end_goal_ratio": e2e_goal,
        "end_to_end_goal_met": if size == GOAL_SIZE || size == LARGE_GOAL_SIZE { json!(e2e_met) } else { Value::Null },
        "end_to_end_note": "Evidently's total_s excludes loading its parquet; ours includes parsing CSV text",
        "our_peak_rss_mb_in_memory": round(computation_memory.peak_rss_mb, 1),
        "our_peak_rss_mb_streaming": round(e2e_memory.peak_rss_mb, 1),
        "evidently_peak_rss_mb": evidently["peak_rss_mb"],
        "evidently_rss_before_mb": evidently["rss_before_mb"],
        "ks_seconds": round(ks_total.median(), 6),
        "scipy_ks_seconds": scipy_ks_ms.map(|ms| ms / 1e3),
        "ks_ratio": scipy_ks_ms.map(|ms| round(ms / 1e3 / ks_total.median(), 2)),
        "ks_goal_seconds": KS_GOAL_SECONDS,
        "ks_goal_met": if stats_goal_applies { json!(ks_met) } else { Value::Null },
        "psi_seconds": round(psi_total.median(), 6),
        "psi_from_summaries_seconds": round(psi_alone.median(), 9),
        "numpy_psi_precomputed_ref_seconds": numpy_psi_ms.map(|ms| ms / 1e3),
        "psi_ratio": numpy_psi_ms.map(|ms| round(ms / 1e3 / psi_total.median(), 2)),
        "psi_goal_seconds": PSI_GOAL_SECONDS,
        "psi_goal_met": if stats_goal_applies { json!(psi_met) } else { Value::Null },
        "checks_passed": problems.is_empty(),
    }));

    // The human summary.
    eprintln!();
    eprintln!(
        "== drift: {} features, reference {} (week 1) against current {} (week 2) rows: the anchors' log of {} ==",
        features.len(),
        grouped(reference_rows as f64),
        grouped(current_rows as f64),
        grouped(size as f64)
    );
    eprintln!(
        "machine: load average {} before; other processes kept {} / {} / {} cores busy during our end-to-end / computation / statistics phases (2 cores; the anchors ran afterwards)",
        e2e_busy["load_average_1m_before"],
        e2e_busy["other_processes_cores_busy"],
        computation_busy["other_processes_cores_busy"],
        stats_busy["other_processes_cores_busy"]
    );
    eprintln!(
        "computation (in memory, 1 thread): summarize {} summaries {:.1} ms ({:.1} ns/value) + score {} features {:.2} ms = {:.1} ms (median of {repeats})",
        reference_summaries.len() + current_summaries.len(),
        summarize_times.median() * 1e3,
        summarize_times.median() * 1e9 / ((reference_rows + current_rows) * features.len()) as f64,
        features.len(),
        score_times.median() * 1e3,
        computation_seconds * 1e3
    );
    match (evidently_run, evidently_total) {
        (Some(run), Some(total)) => {
            eprintln!(
                "  Evidently DataDriftPreset (same run, median of {anchor_repeats}): run {run:.2} s, total {total:.2} s (build + run + dict), peak RSS {} MB ({} MB before)",
                evidently["peak_rss_mb"]
                    .as_f64()
                    .map_or("?".into(), |mb| format!("{mb:.0}")),
                evidently["rss_before_mb"]
                    .as_f64()
                    .map_or("?".into(), |mb| format!("{mb:.0}")),
            );
            eprintln!(
                "  ratio: {}x Evidently's total, {}x its report.run alone; SPEC goal >= {COMPUTATION_GOAL_RATIO:.0}x: {}",
                grouped(computation_ratio.unwrap_or(0.0)),
                grouped(computation_ratio_run.unwrap_or(0.0)),
                verdict(size == GOAL_SIZE, computation_met == Some(true), GOAL_SIZE)
            );
        }
        _ => eprintln!("  ratio: n/a (no anchor measured)"),
    }
    eprintln!(
        "end to end from CSV files (1 thread, {PARSER}): {:.3} s for {:.0} MB ({:.0} MB/s), summaries identical to the in-memory ones: {}",
        e2e_seconds,
        csv_bytes as f64 / 1e6,
        csv_bytes as f64 / 1e6 / e2e_seconds,
        csv_reference == reference_summaries && csv_current == current_summaries
    );
    if let Some(ratio) = e2e_ratio {
        eprintln!(
            "  ratio: {}x Evidently's total (which excludes loading its parquet, so this is conservative); SPEC goal >= {e2e_goal:.0}x: {}",
            grouped(ratio),
            verdict(
                size == GOAL_SIZE || size == LARGE_GOAL_SIZE,
                e2e_met == Some(true),
                GOAL_SIZE
            )
        );
    }
    eprintln!(
        "memory: our peak RSS {:.0} MB streaming from files, {:.0} MB with the {:.0} MB of columns in memory; Evidently {}",
        e2e_memory.peak_rss_mb,
        computation_memory.peak_rss_mb,
        columns_mb,
        evidently["peak_rss_mb"]
            .as_f64()
            .map_or("not measured".into(), |mb| format!("{mb:.0} MB peak"))
    );
    eprintln!(
        "summaries: {} of them, {:.1} KB in postcard (largest {} B, {} bins at most): bounded by the range of magnitudes, not by rows",
        postcard.len(),
        postcard.iter().sum::<usize>() as f64 / 1e3,
        postcard.iter().max().unwrap_or(&0),
        bins.iter().max().unwrap_or(&0)
    );
    eprintln!(
        "drifted (normed Wasserstein >= 0.1): {} of {}: {}",
        drifted.len(),
        features.len(),
        drifted.join(", ")
    );
    for (feature, score) in features.iter().zip(&scores) {
        eprintln!(
            "  {feature:>16}: {:.5} ± {:.5}; scipy {:.5}{}",
            score.score,
            score.error_bound.unwrap_or(0.0),
            log["reference"][feature]["normed_wasserstein"]
                .as_f64()
                .unwrap_or(f64::NAN),
            evidently_scores
                .get(feature)
                .and_then(Value::as_f64)
                .map_or(String::new(), |value| format!(", Evidently {value:.5}"))
        );
    }
    let anchor_ms = |ms: Option<f64>, what: &str| {
        ms.map_or(format!("{what}: not measured"), |ms| format!("{what} {ms:.1} ms"))
    };
    eprintln!(
        "KS {} vs {} ('amount'): both summaries + test {:.1} ms, the test from summaries {:.3} ms; {}{}; SPEC <= 130 ms: {}",
        grouped(stats_size as f64),
        grouped(stats_size as f64),
        ks_total.median() * 1e3,
        ks_alone.median() * 1e3,
        anchor_ms(scipy_ks_ms, "scipy ks_2samp"),
        scipy_ks_ms.map_or(String::new(), |ms| format!(
            " ({:.1}x)",
            ms / 1e3 / ks_total.median()
        )),
        verdict(stats_goal_applies, ks_met, GOAL_SIZE)
    );
    eprintln!(
        "PSI, fixed reference: the current sample's summary + PSI {:.1} ms, PSI from summaries {:.3} ms; {}{}; SPEC <= 5 ms: {} (O(bins) from summaries: {})",
        psi_total.median() * 1e3,
        psi_alone.median() * 1e3,
        anchor_ms(numpy_psi_ms, "numpy (reference bins precomputed)"),
        numpy_psi_ms.map_or(String::new(), |ms| format!(
            " ({:.1}x)",
            ms / 1e3 / psi_total.median()
        )),
        verdict(stats_goal_applies, psi_met, GOAL_SIZE),
        pass_or_miss(psi_alone.median() <= PSI_GOAL_SECONDS)
    );
    eprintln!(
        "  PSI {:.5} on modelwatch's binning (numpy on the same binning {:.5}; bench_stats.py's 10 quantile bins {:.5})",
        psi_score.score,
        expected_psi.unwrap_or(f64::NAN),
        stats["psi_numpy_10q"].as_f64().unwrap_or(f64::NAN)
    );
    eprintln!(
        "normed Wasserstein {0} vs {0}: both summaries + distance {1:.1} ms, from summaries {2:.3} ms; {3}{4}",
        grouped(stats_size as f64),
        wasserstein_total.median() * 1e3,
        wasserstein_alone.median() * 1e3,
        anchor_ms(scipy_wasserstein_ms, "scipy wasserstein_distance"),
        scipy_wasserstein_ms.map_or(String::new(), |ms| format!(
            " ({:.1}x)",
            ms / 1e3 / wasserstein_total.median()
        ))
    );
    if problems.is_empty() {
        eprintln!(
            "checks: every normed Wasserstein within its error bound of scipy's{}, KS statistic bound holds, PSI equals numpy's on the same binning, \
             the CSV path gives the very summaries of the raw columns, drift flags agree",
            if evidently_scores.is_empty() {
                ""
            } else {
                " and Evidently's"
            }
        );
    } else {
        for problem in &problems {
            eprintln!("CHECK FAILED: {problem}");
        }
    }
    Ok(problems.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evidently_keys_name_their_column() {
        assert_eq!(
            evidently_column("ValueDrift(column=amount,method=Wasserstein distance (normed),threshold=0.1)"),
            Some("amount")
        );
        assert_eq!(
            evidently_column("ValueDrift(column=hour_of_day)"),
            Some("hour_of_day")
        );
        assert_eq!(evidently_column("DriftedColumnsCount(drift_share=0.5)"), None);
    }

    #[test]
    fn medians_average_the_middle_pair() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    }

    #[test]
    fn csv_streaming_finds_columns_by_name_and_skips_empty_fields() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.csv");
        std::fs::write(&path, "\"b\",\"a\"\n1.5,-2\n,3e-7\n0.1,4\n").unwrap();
        let (summaries, rows) = summarize_csv(&path, &["a".into(), "b".into()]).unwrap();
        assert_eq!(rows, 3);
        assert_eq!(summaries[0], summarize(&[-2.0, 3e-7, 4.0]));
        assert_eq!(summaries[1], summarize(&[1.5, 0.1]));
        std::fs::write(&path, "a\nnope\n").unwrap();
        assert!(summarize_csv(&path, &["a".into()]).is_err());
    }
}
