//! `modelwatch report`: the figures of modelwatch computed offline, from
//! prediction and label files, with no server and no database.
//!
//! [`evaluate`] reads the files ([`input`]), aggregates and joins them
//! ([`engine`]) and turns the aggregates into a [`Report`]: per model, the
//! whole range and each tumbling window of the data's event time, with the
//! same operational, prediction, feature, quality and drift figures as the
//! server's API, computed by the same code (`core::figures`,
//! `core::quality`, `core::drift`). [`render`] writes it as text, JSON or a
//! self-contained HTML page.

pub mod columnar;
pub mod engine;
pub mod input;
pub mod parquet_input;
pub mod render;

use std::collections::BTreeMap;
use std::path::PathBuf;

use modelwatch_core::aggregate::Bucket;
use modelwatch_core::drift::{DatasetDrift, DriftSummary, MethodOverride, VariableDrift, compare_summaries};
use modelwatch_core::figures;
use modelwatch_core::limits::CardinalityLimits;
use modelwatch_core::series::ModelKind;
use modelwatch_core::wire::ParseLimits;
use serde::Serialize;

use crate::engine::{FileCounts, LabelCounts, Settings};
use crate::input::{Columns, Format, InputFile, Kind, RowProblem, RowReader, read_csv_header};
use crate::parquet_input::ParquetLayout;

/// Windows per model at most: a longer `--window` is needed past it.
pub const MAX_WINDOWS: i64 = 100_000;

/// What stops a report (row problems do not: they are counted and listed).
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{}: {message}", path.display())]
    Input { path: PathBuf, message: String },
    #[error("{0}")]
    Usage(String),
}

/// What to evaluate, and how.
#[derive(Debug, Clone)]
pub struct Options {
    pub predictions: Vec<PathBuf>,
    pub labels: Vec<PathBuf>,
    pub reference: Vec<PathBuf>,
    pub window_ms: i64,
    /// Windows start at `align_ms + k * window_ms` (0: aligned on the epoch).
    pub align_ms: i64,
    /// `--window` as written, echoed in the report.
    pub window_text: String,
    /// The model of CSV rows when the file has no `model` column.
    pub default_model: Option<String>,
    pub limits: CardinalityLimits,
    pub parse_limits: ParseLimits,
    /// Drift methods per feature and per output (the config's `drift:`).
    pub feature_methods: BTreeMap<String, MethodOverride>,
    pub prediction_methods: BTreeMap<String, MethodOverride>,
    pub threads: usize,
    pub progress: bool,
    /// The time of receipt of every row (rows without a timestamp get it).
    pub now_ms: i64,
    /// Categories listed per categorical feature.
    pub top_categories: usize,
}

/// A progress bar over the bytes of the input files, on stderr; drawn only
/// when stderr is a terminal.
#[derive(Clone)]
pub struct Progress(Option<indicatif::ProgressBar>);

impl Progress {
    pub fn new(total_bytes: u64, enabled: bool) -> Self {
        use std::io::IsTerminal;
        if !enabled || !std::io::stderr().is_terminal() {
            return Self(None);
        }
        let bar = indicatif::ProgressBar::with_draw_target(
            Some(total_bytes),
            indicatif::ProgressDrawTarget::stderr(),
        );
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{msg:12} [{bar:40}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        Self(Some(bar))
    }

    pub fn hidden() -> Self {
        Self(None)
    }

    fn stage(&self, name: &str) {
        if let Some(bar) = &self.0 {
            bar.set_message(name.to_owned());
        }
    }

    pub fn advance(&self, bytes: u64) {
        if let Some(bar) = &self.0 {
            bar.inc(bytes);
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}

/// The report: see the README's `report` section for its JSON shape.
#[derive(Debug, Serialize)]
pub struct Report {
    pub window: String,
    pub inputs: Inputs,
    pub labels: LabelCounts,
    pub problems: Problems,
    pub models: BTreeMap<String, ModelReport>,
}

#[derive(Debug, Serialize)]
pub struct Inputs {
    pub predictions: Vec<FileCounts>,
    pub labels: Vec<FileCounts>,
    pub reference: Vec<FileCounts>,
}

/// Rows that could not be used: every one is counted, the first
/// [`engine::KEPT_PROBLEMS`] of each pass are listed.
#[derive(Debug, Serialize)]
pub struct Problems {
    pub total: u64,
    pub listed: Vec<Problem>,
}

#[derive(Debug, Serialize)]
pub struct Problem {
    pub file: String,
    pub line: u64,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct ModelReport {
    pub kind: Option<&'static str>,
    pub versions: Vec<String>,
    /// Event time covered: from the start of the first window to the end of
    /// the last.
    pub start: String,
    pub end: String,
    /// Rows of the reference that drift compares with (null without one).
    pub reference_rows: Option<u64>,
    /// Everything in the range.
    pub whole: Section,
    /// Each tumbling window of the range, in order, empty ones included.
    pub windows: Vec<Section>,
    /// The same per version (drift is per model only).
    pub by_version: BTreeMap<String, VersionReport>,
}

#[derive(Debug, Serialize)]
pub struct VersionReport {
    pub whole: Section,
    pub windows: Vec<Section>,
}

/// The figures of one span of event time, as the API answers them.
#[derive(Debug, Serialize)]
pub struct Section {
    pub start: String,
    pub end: String,
    pub operations: figures::Operations,
    pub predictions: figures::Predictions,
    pub features: figures::Features,
    pub performance: PerformanceSection,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drift: Option<DriftSection>,
}

#[derive(Debug, Serialize)]
pub struct PerformanceSection {
    #[serde(flatten)]
    pub all: figures::Performance,
    /// The same within each segment value (`/performance?segment=key:value`).
    pub segments: BTreeMap<String, BTreeMap<String, figures::Performance>>,
}

/// The window against the reference, as `/v1/models/{m}/drift` compares a
/// window with a frozen baseline.
#[derive(Debug, Serialize)]
pub struct DriftSection {
    pub rows: u64,
    pub features: BTreeMap<String, VariableDrift>,
    pub predictions: BTreeMap<String, VariableDrift>,
    #[serde(flatten)]
    pub dataset: DatasetDrift,
}

pub fn format_time(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|timestamp| timestamp.to_string())
        .unwrap_or_else(|_| ms.to_string())
}

fn readers(
    files: &[InputFile],
    kind: Kind,
    options: &Options,
    offset: usize,
) -> Result<Vec<RowReader>, ReportError> {
    files
        .iter()
        .enumerate()
        .map(|(index, file)| {
            let no_model = |what: &str| ReportError::Input {
                path: file.path.clone(),
                message: format!("the {what} file has no model column: name the model with --model"),
            };
            let needs_model = kind == Kind::Predictions && options.default_model.is_none();
            let (columns, parquet) = match file.format {
                Format::Csv => {
                    let columns = Columns::from_header(&read_csv_header(file)?, kind, &file.path)?;
                    if needs_model && !columns.has_model() {
                        return Err(no_model("CSV"));
                    }
                    (Some(columns), None)
                }
                Format::Parquet => {
                    let layout = ParquetLayout::open(file, kind)?;
                    if needs_model && !layout.has_model() {
                        return Err(no_model("Parquet"));
                    }
                    (None, Some(std::sync::Arc::new(layout)))
                }
                Format::Ndjson => (None, None),
            };
            // The columnar path reads the predictions files it covers.
            let fast = match (&parquet, kind) {
                (Some(layout), Kind::Predictions) => {
                    columnar::FastPlan::of(layout.columns(), &options.parse_limits).map(std::sync::Arc::new)
                }
                _ => None,
            };
            let fast_labels = match (&parquet, kind) {
                (Some(layout), Kind::Labels) => {
                    columnar::LabelPlan::of(layout.columns(), &options.parse_limits).map(std::sync::Arc::new)
                }
                _ => None,
            };
            Ok(RowReader {
                file: offset + index,
                format: file.format,
                columns,
                parquet,
                fast,
                fast_labels,
                default_model: options.default_model.clone(),
                limits: options.parse_limits.clone(),
                now_ms: options.now_ms,
            })
        })
        .collect()
}

/// Reads the files and computes the report.
pub fn evaluate(options: &Options) -> Result<Report, ReportError> {
    if options.predictions.is_empty() {
        return Err(ReportError::Usage(
            "at least one predictions file is needed".to_owned(),
        ));
    }
    let detect = |paths: &[PathBuf]| -> Result<Vec<InputFile>, ReportError> {
        paths.iter().map(|path| InputFile::detect(path)).collect()
    };
    let prediction_files = detect(&options.predictions)?;
    let label_files = detect(&options.labels)?;
    let reference_files = detect(&options.reference)?;
    let prediction_readers = readers(&prediction_files, Kind::Predictions, options, 0)?;
    let label_readers = readers(&label_files, Kind::Labels, options, prediction_files.len())?;
    let reference_offset = prediction_files.len() + label_files.len();
    let reference_readers = readers(&reference_files, Kind::Predictions, options, reference_offset)?;
    let all_files: Vec<&InputFile> = prediction_files
        .iter()
        .chain(&label_files)
        .chain(&reference_files)
        .collect();
    let total_bytes = all_files.iter().map(|file| file.size()).sum();
    let progress = Progress::new(total_bytes, options.progress);
    let settings = Settings {
        window_ms: options.window_ms,
        align_ms: options.align_ms,
        limits: options.limits.clone(),
        threads: options.threads.max(1),
        drift: !reference_files.is_empty(),
    };

    progress.stage("reference");
    let (references, reference_counts, reference_problems, reference_problem_count) =
        engine::reference_summaries(&reference_files, &reference_readers, &settings, &progress)?;
    progress.stage("evaluating");
    let evaluation = engine::evaluate(
        (&prediction_files, &prediction_readers),
        (&label_files, &label_readers),
        &settings,
        &progress,
    )?;
    progress.finish();

    let mut listed: Vec<Problem> = Vec::new();
    let problem_of = |problem: &RowProblem| Problem {
        file: all_files
            .get(problem.file)
            .map(|file| file.display())
            .unwrap_or_default(),
        line: problem.line,
        code: problem.code,
        message: problem.message.clone(),
        field: problem.field.clone(),
    };
    listed.extend(reference_problems.iter().map(&problem_of));
    listed.extend(evaluation.catalog.problems.iter().map(&problem_of));
    let problems = Problems {
        total: reference_problem_count + evaluation.catalog.problem_count,
        listed,
    };
    let models = model_reports(&evaluation, &references, options, settings.drift)?;
    Ok(Report {
        window: options.window_text.clone(),
        inputs: Inputs {
            predictions: evaluation.prediction_files.clone(),
            labels: evaluation.label_files.clone(),
            reference: reference_counts,
        },
        labels: evaluation.catalog.labels.clone(),
        problems,
        models,
    })
}

/// The aggregates of one span: merged bucket and drift summary.
#[derive(Default)]
struct Span {
    bucket: Bucket,
    drift: DriftSummary,
}

impl Span {
    fn add(&mut self, bucket: &Bucket, drift: &DriftSummary) {
        self.bucket.merge(bucket);
        self.drift.merge(drift);
    }
}

struct SectionContext<'a> {
    kind: Option<ModelKind>,
    reference: Option<&'a DriftSummary>,
    options: &'a Options,
}

impl SectionContext<'_> {
    fn section(&self, span: &Span, start_ms: i64, end_ms: i64, with_drift: bool) -> Section {
        let bucket = &span.bucket;
        let mut segments: BTreeMap<String, BTreeMap<String, figures::Performance>> = BTreeMap::new();
        for (key, values) in &bucket.segment_predictions {
            for (value, predictions) in values {
                let quality = bucket
                    .quality
                    .of_segment(Some((key.as_str(), value.as_str())))
                    .cloned()
                    .unwrap_or_default();
                segments.entry(key.clone()).or_default().insert(
                    value.clone(),
                    figures::Performance::of(self.kind, *predictions, &quality),
                );
            }
        }
        let drift = match (with_drift, self.reference) {
            (true, Some(reference)) => {
                let (features, predictions) = compare_summaries(
                    &self.options.feature_methods,
                    &self.options.prediction_methods,
                    reference,
                    &span.drift,
                );
                let dataset = DatasetDrift::of(&features);
                Some(DriftSection {
                    rows: span.drift.rows,
                    features,
                    predictions,
                    dataset,
                })
            }
            _ => None,
        };
        Section {
            start: format_time(start_ms),
            end: format_time(end_ms),
            operations: figures::Operations::of(bucket, end_ms - start_ms),
            predictions: figures::Predictions::of(bucket, self.kind),
            features: figures::Features::of(bucket, self.options.top_categories),
            performance: PerformanceSection {
                all: figures::Performance::of(self.kind, bucket.labelable_predictions(), &bucket.quality.all),
                segments,
            },
            drift,
        }
    }
}

fn model_reports(
    evaluation: &engine::Evaluation,
    references: &BTreeMap<String, DriftSummary>,
    options: &Options,
    with_drift: bool,
) -> Result<BTreeMap<String, ModelReport>, ReportError> {
    let catalog = &evaluation.catalog;
    let window_ms = options.window_ms;
    let mut reports = BTreeMap::new();
    for (model_index, model) in catalog.models.iter().enumerate() {
        // Per version: window start -> the cell's aggregates.
        let mut versions: BTreeMap<&str, BTreeMap<i64, (&Bucket, &DriftSummary)>> = BTreeMap::new();
        for (cell_index, cell) in catalog.cells.iter().enumerate() {
            let (series_model, version) = &catalog.series[cell.series as usize];
            if *series_model as usize != model_index {
                continue;
            }
            let Some(Some(aggregates)) = evaluation.cells.buckets.get(cell_index) else {
                continue;
            };
            versions
                .entry(version.as_str())
                .or_default()
                .insert(cell.window_start_ms, (&aggregates.0, &aggregates.1));
        }
        let starts = versions.values().flat_map(|windows| windows.keys().copied());
        let (Some(first), Some(last)) = (starts.clone().min(), starts.max()) else {
            continue;
        };
        let window_count = (last - first) / window_ms + 1;
        if window_count > MAX_WINDOWS {
            return Err(ReportError::Usage(format!(
                "model {}: {window_count} windows of {} between {} and {}; choose a longer --window",
                model.name,
                options.window_text,
                format_time(first),
                format_time(last + window_ms)
            )));
        }
        let context = SectionContext {
            kind: model.kind,
            reference: references.get(&model.name),
            options,
        };
        let window_starts: Vec<i64> = (0..window_count).map(|index| first + index * window_ms).collect();
        let spans_of = |only: Option<&str>| -> (Span, Vec<Span>) {
            let mut whole = Span::default();
            let windows: Vec<Span> = window_starts
                .iter()
                .map(|start| {
                    let mut span = Span::default();
                    for (version, windows) in &versions {
                        if only.is_some_and(|wanted| wanted != *version) {
                            continue;
                        }
                        if let Some((bucket, drift)) = windows.get(start) {
                            span.add(bucket, drift);
                            whole.add(bucket, drift);
                        }
                    }
                    span
                })
                .collect();
            (whole, windows)
        };
        let sections = |only: Option<&str>| -> (Section, Vec<Section>) {
            let (whole, windows) = spans_of(only);
            let with_drift = with_drift && only.is_none();
            let whole = context.section(&whole, first, last + window_ms, with_drift);
            let windows = windows
                .iter()
                .zip(&window_starts)
                .map(|(span, start)| context.section(span, *start, start + window_ms, with_drift))
                .collect();
            (whole, windows)
        };
        let (whole, windows) = sections(None);
        let by_version = versions
            .keys()
            .map(|version| {
                let (whole, windows) = sections(Some(version));
                ((*version).to_owned(), VersionReport { whole, windows })
            })
            .collect();
        reports.insert(
            model.name.clone(),
            ModelReport {
                kind: model.kind.map(ModelKind::as_str),
                versions: versions.keys().map(|version| (*version).to_owned()).collect(),
                start: format_time(first),
                end: format_time(last + window_ms),
                reference_rows: with_drift.then(|| context.reference.map_or(0, |reference| reference.rows)),
                whole,
                windows,
                by_version,
            },
        );
    }
    Ok(reports)
}
