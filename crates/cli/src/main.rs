//! The `modelwatch` command: `serve` runs the monitoring server, `rules`
//! prints the equivalent Prometheus rules, `dashboard` a Grafana dashboard,
//! `check` validates a config file, `demo` runs the server fed by a
//! simulated model, `report` evaluates prediction and label files offline.

mod allocator;
mod demo;

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use modelwatch_server::{Config, ServeOptions};

// Ingestion allocates many small strings per event on several threads;
// mimalloc handles that pattern markedly faster than glibc malloc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "modelwatch",
    version,
    about = "Monitoring for machine-learning models in production"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the monitoring server on the embedded store.
    Serve {
        /// Address to listen on.
        #[arg(long, env = "MODELWATCH_LISTEN", default_value = "127.0.0.1:9400")]
        listen: SocketAddr,
        /// Directory of the embedded database (created if absent).
        #[arg(long, env = "MODELWATCH_DATA", default_value = "./modelwatch-data")]
        data: PathBuf,
        /// YAML config file; defaults apply without one.
        #[arg(long, env = "MODELWATCH_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Print the alert rules and SLOs in force as Prometheus rules (YAML).
    Rules {
        /// YAML config file; the default rules without one.
        #[arg(long, env = "MODELWATCH_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Print a Grafana dashboard (JSON) of the metrics, with the alert thresholds and SLOs in force.
    Dashboard {
        /// YAML config file; the default rules and no SLOs without one.
        #[arg(long, env = "MODELWATCH_CONFIG")]
        config: Option<PathBuf>,
        /// Write the dashboard to this file instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Validate a config file and print the effective settings.
    Check {
        #[arg(long, env = "MODELWATCH_CONFIG")]
        config: PathBuf,
    },
    /// Run the server fed by a simulated fraud detector that degrades after
    /// two simulated hours: watch the alerts fire on the dashboard.
    Demo(demo::DemoArgs),
    /// Evaluate prediction and label files offline (no server, no database):
    /// the server's figures per model, over the whole range and per window.
    Report(ReportArgs),
}

#[derive(clap::Args)]
struct ReportArgs {
    /// Prediction events: .ndjson, .jsonl or .csv, optionally .gz. Repeat
    /// for several files, read in order.
    #[arg(long, required = true)]
    predictions: Vec<PathBuf>,
    /// Label events, joined on prediction_id (a later label for the same id
    /// replaces the earlier one). Repeatable.
    #[arg(long)]
    labels: Vec<PathBuf>,
    /// Predictions to measure drift against (each window and the whole range
    /// are compared with them). Repeatable.
    #[arg(long)]
    reference: Vec<PathBuf>,
    /// Length of the tumbling windows, aligned on the Unix epoch (1d windows
    /// are UTC days).
    #[arg(long, default_value = "1d")]
    window: String,
    /// A time windows start at (RFC 3339 or Unix seconds), instead of the
    /// epoch: `--window 7d --align 2026-11-02T00:00:00Z` gives weeks from Monday.
    #[arg(long)]
    align: Option<String>,
    #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
    format: ReportFormat,
    /// Write the report here instead of to stdout.
    #[arg(long)]
    out: Option<PathBuf>,
    /// The model of CSV prediction rows, for files without a model column.
    #[arg(long)]
    model: Option<String>,
    /// YAML config: its limits, ingest limits and drift methods apply.
    #[arg(long, env = "MODELWATCH_CONFIG")]
    config: Option<PathBuf>,
    /// Parsing threads (default: the number of cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Never draw the progress bar (it is drawn only on a terminal anyway).
    #[arg(long)]
    no_progress: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ReportFormat {
    Text,
    Json,
    Html,
}

/// Niceness +5 (the crate maps 0..=99 onto nice 19..=-20): a request thread
/// gets about a third of the writer's share of a contended core.
const REQUEST_THREAD_PRIORITY: u8 = 35;

fn lower_priority() {
    if let Ok(value) = thread_priority::ThreadPriorityValue::try_from(REQUEST_THREAD_PRIORITY) {
        // Without the right to change it, threads keep the default priority.
        let _ = thread_priority::ThreadPriority::Crossplatform(value).set_for_current();
    }
}

fn load_config(path: Option<&PathBuf>) -> anyhow::Result<Config> {
    match path {
        Some(path) => Ok(Config::load(path)?),
        None => Ok(Config::default()),
    }
}

fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MODELWATCH_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

fn report(args: ReportArgs) -> anyhow::Result<()> {
    let config = load_config(args.config.as_ref())?;
    let window_ms = modelwatch_core::time::parse_duration_ms(&args.window)?;
    let align_ms = match &args.align {
        None => 0,
        Some(text) => match text.parse::<f64>() {
            Ok(seconds) if seconds.is_finite() => (seconds * 1000.0).round() as i64,
            _ => text
                .parse::<jiff::Timestamp>()
                .with_context(|| format!("--align {text:?} is neither an RFC 3339 time nor Unix seconds"))?
                .as_millisecond(),
        },
    };
    let threads = args.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|cores| cores.get())
            .unwrap_or(2)
    });
    let options = modelwatch_report::Options {
        predictions: args.predictions,
        labels: args.labels,
        reference: args.reference,
        window_ms,
        align_ms,
        window_text: args.window.trim().to_owned(),
        default_model: args.model,
        limits: config.limits.clone(),
        parse_limits: config.ingest.parse_limits(),
        feature_methods: config.drift.features.clone(),
        prediction_methods: config.drift.predictions.clone(),
        threads,
        progress: !args.no_progress,
        now_ms: jiff::Timestamp::now().as_millisecond(),
        top_categories: 10,
    };
    let report = modelwatch_report::evaluate(&options)?;
    if report.problems.total > 0 {
        eprintln!(
            "warning: {} rows could not be used (they are listed in the report), the first:",
            report.problems.total
        );
        for problem in report.problems.listed.iter().take(5) {
            eprintln!(
                "  {}:{}: {} {}: {}",
                problem.file,
                problem.line,
                problem.code,
                problem.field.as_deref().unwrap_or("(row)"),
                problem.message
            );
        }
    }
    let format = match args.format {
        ReportFormat::Text => modelwatch_report::render::OutputFormat::Text,
        ReportFormat::Json => modelwatch_report::render::OutputFormat::Json,
        ReportFormat::Html => modelwatch_report::render::OutputFormat::Html,
    };
    let rendered = modelwatch_report::render::render(&report, format);
    match args.out {
        Some(path) => {
            std::fs::write(&path, rendered).with_context(|| format!("writing {}", path.display()))?
        }
        None => {
            use std::io::Write;
            std::io::stdout().write_all(rendered.as_bytes())?;
        }
    }
    Ok(())
}

fn main() {
    if let Err(error) = run(Cli::parse()) {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { listen, data, config } => {
            allocator::purge_sooner();
            init_logging();
            let config = load_config(config.as_ref())?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("modelwatch-http")
                // The request threads (parsing, mostly) run at a lower priority than
                // the writer: on a busy machine the writer, the one serial stage of
                // ingestion, gets a core whenever it has a group to commit.
                .on_thread_start(lower_priority)
                .build()
                .context("starting the async runtime")?;
            runtime.block_on(modelwatch_server::serve(
                config,
                ServeOptions {
                    listen,
                    data_dir: data,
                },
            ))?;
            Ok(())
        }
        Command::Demo(args) => {
            allocator::purge_sooner();
            init_logging();
            demo::run(args)
        }
        Command::Rules { config } => {
            let config = load_config(config.as_ref())?;
            let slos = config.slos().map_err(anyhow::Error::msg)?;
            let rules = config.rules().map_err(anyhow::Error::msg)?;
            print!("{}", modelwatch_server::promql::rule_file(&rules, &slos));
            Ok(())
        }
        Command::Dashboard { config, out } => {
            let config = load_config(config.as_ref())?;
            let slos = config.slos().map_err(anyhow::Error::msg)?;
            let rules = config.rules().map_err(anyhow::Error::msg)?;
            let dashboard = modelwatch_server::grafana::dashboard_json(&rules, &slos);
            match out {
                Some(path) => {
                    std::fs::write(&path, dashboard).with_context(|| format!("writing {}", path.display()))?
                }
                None => print!("{dashboard}"),
            }
            Ok(())
        }
        Command::Report(args) => report(args),
        Command::Check { config } => {
            let loaded = Config::load(&config)?;
            println!("{}: ok", config.display());
            let rules = loaded.rules().map_err(anyhow::Error::msg)?;
            println!(
                "{} alert rules, evaluated every {}:",
                rules.len(),
                loaded.alerts.evaluation_interval
            );
            for rule in &rules {
                println!("  {}", rule.id());
            }
            let slos = loaded.slos().map_err(anyhow::Error::msg)?;
            println!("{} SLOs:", slos.len());
            for slo in &slos {
                println!("  {} {} (objective {})", slo.model, slo.name, slo.objective);
            }
            println!(
                "{} receivers, {} remediation actions",
                loaded.receivers.len(),
                loaded.remediation.actions.len()
            );
            Ok(())
        }
    }
}
