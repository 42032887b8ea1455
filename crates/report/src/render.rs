//! The report as text (a terminal summary), JSON (every figure), or one
//! self-contained HTML page with charts drawn by `plotters` as inline SVG.

use std::fmt::Write as _;

use plotters::prelude::*;

use crate::{ModelReport, Report, Section};

/// How the report is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    Text,
    Json,
    Html,
}

pub fn render(report: &Report, format: OutputFormat) -> String {
    match format {
        OutputFormat::Text => text(report),
        OutputFormat::Json => {
            let mut json = serde_json::to_string_pretty(report).expect("reports serialize");
            json.push('\n');
            json
        }
        OutputFormat::Html => html(report),
    }
}

fn percent(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |value| format!("{:.2}%", value * 100.0))
}

fn number(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |value| format!("{value:.4}"))
}

fn seconds(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |value| format!("{:.1}ms", value * 1000.0))
}

/// The headline quality figure of a section and its name.
fn quality_headline(section: &Section) -> (&'static str, Option<f64>) {
    let performance = &section.performance.all;
    match &performance.regression {
        Some(regression) => ("MAE", regression.map(|report| report.mae)),
        None => ("accuracy", performance.accuracy),
    }
}

fn text(report: &Report) -> String {
    let mut out = String::new();
    let predictions: u64 = report.inputs.predictions.iter().map(|file| file.accepted).sum();
    let labels: u64 = report.inputs.labels.iter().map(|file| file.accepted).sum();
    let _ = writeln!(
        out,
        "modelwatch report: {predictions} predictions, {labels} label rows, windows of {}",
        report.window
    );
    let counts = &report.labels;
    let _ = writeln!(
        out,
        "labels: {} joined, {} duplicates, {} corrected, {} orphaned, {} unscorable",
        counts.joined, counts.duplicates, counts.corrected, counts.orphaned, counts.unscorable
    );
    if report.problems.total > 0 {
        let _ = writeln!(
            out,
            "{} rows could not be used, the first:",
            report.problems.total
        );
        for problem in report.problems.listed.iter().take(10) {
            let _ = writeln!(
                out,
                "  {}:{}: {} {}: {}",
                problem.file,
                problem.line,
                problem.code,
                problem.field.as_deref().unwrap_or("(row)"),
                problem.message
            );
        }
    }
    for (name, model) in &report.models {
        text_model(&mut out, name, model);
    }
    out
}

fn text_model(out: &mut String, name: &str, model: &ModelReport) {
    let whole = &model.whole;
    let _ = writeln!(
        out,
        "\n== {name} ({}; versions {}) from {} to {}",
        model.kind.unwrap_or("unknown kind"),
        model.versions.join(", "),
        model.start,
        model.end
    );
    let operations = &whole.operations;
    let latency = &operations.latency_seconds;
    let latency = if latency.p50.is_none() {
        "no latencies given".to_owned()
    } else {
        format!(
            "latency p50 {} p95 {} p99 {}",
            seconds(latency.p50),
            seconds(latency.p95),
            seconds(latency.p99)
        )
    };
    let _ = writeln!(
        out,
        "requests {}  error rate {}  timeout rate {}  {latency}",
        operations.requests,
        percent(operations.error_rate),
        percent(operations.timeout_rate),
    );
    if !whole.predictions.classes.is_empty() {
        let classes: Vec<String> = whole
            .predictions
            .classes
            .iter()
            .map(|(class, summary)| format!("{class} {:.1}%", summary.share * 100.0))
            .collect();
        let _ = writeln!(out, "classes: {}", classes.join(", "));
    }
    if let Some(confidence) = &whole.predictions.confidence {
        let _ = writeln!(
            out,
            "confidence: mean {}  p25 {}  low (<= 0.6) {}",
            number(confidence.mean),
            number(confidence.p25),
            percent(confidence.low_confidence_share)
        );
    }
    let performance = &whole.performance.all;
    let _ = write!(
        out,
        "quality: {} labeled of {} ({} coverage)",
        performance.sample_size,
        performance.predictions,
        percent(Some(performance.label_coverage))
    );
    match &performance.regression {
        Some(Some(regression)) => {
            let _ = writeln!(
                out,
                "  MAE {:.4}  RMSE {:.4}  MAPE {:.4}",
                regression.mae, regression.rmse, regression.mape
            );
        }
        Some(None) => out.push('\n'),
        None => {
            let _ = writeln!(
                out,
                "  accuracy {}  macro F1 {}  weighted F1 {}",
                number(performance.accuracy),
                number(performance.macro_average.map(|scores| scores.f1)),
                number(performance.weighted_average.map(|scores| scores.f1)),
            );
            for (class, scores) in &performance.per_class {
                let _ = writeln!(
                    out,
                    "  {class:>12}: precision {:.4}  recall {:.4}  F1 {:.4}  support {}",
                    scores.precision, scores.recall, scores.f1, scores.support
                );
            }
        }
    }
    if let Some(drift) = &whole.drift {
        let drifted: Vec<&str> = drift
            .features
            .iter()
            .filter(|(_, variable)| variable.drifted())
            .map(|(name, _)| name.as_str())
            .collect();
        let _ = writeln!(
            out,
            "drift against the reference ({} rows): {} of {} features drifted{}{}",
            model.reference_rows.unwrap_or(0),
            drift.dataset.drifted_features,
            drift.dataset.features_compared,
            if drifted.is_empty() { "" } else { ": " },
            drifted.join(", ")
        );
    }
    let (quality_name, _) = quality_headline(whole);
    let _ = writeln!(
        out,
        "\n{:<25} {:>10} {:>8} {:>9} {:>10} {:>9} {:>8}",
        "window start", "requests", "errors", "p99", quality_name, "coverage", "drifted"
    );
    for window in &model.windows {
        let (_, quality) = quality_headline(window);
        let drifted = window.drift.as_ref().map_or_else(
            || "-".to_owned(),
            |drift| {
                format!(
                    "{}/{}",
                    drift.dataset.drifted_features, drift.dataset.features_compared
                )
            },
        );
        let _ = writeln!(
            out,
            "{:<25} {:>10} {:>8} {:>9} {:>10} {:>9} {:>8}",
            window.start,
            window.operations.requests,
            percent(window.operations.error_rate),
            seconds(window.operations.latency_seconds.p99),
            number(quality),
            percent(Some(window.performance.all.label_coverage)),
            drifted
        );
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2em;color:#222}\
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}\
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}.charts{display:flex;flex-wrap:wrap;gap:1em}\
.problems td{text-align:left}h2{margin-top:2em;border-bottom:2px solid #444}";

fn html(report: &Report) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>modelwatch report</title>\
         <style>{STYLE}</style></head><body>\n<h1>modelwatch report</h1>\n"
    );
    let counts = &report.labels;
    let _ = writeln!(
        out,
        "<p>Windows of {}. Labels: {} joined, {} duplicates, {} corrected, {} orphaned, {} unscorable.</p>",
        escape(&report.window),
        counts.joined,
        counts.duplicates,
        counts.corrected,
        counts.orphaned,
        counts.unscorable
    );
    out.push_str("<table><tr><th>input</th><th>format</th><th>rows</th><th>accepted</th><th>duplicates</th><th>rejected</th></tr>\n");
    for file in report
        .inputs
        .predictions
        .iter()
        .chain(&report.inputs.labels)
        .chain(&report.inputs.reference)
    {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&file.path),
            file.format,
            file.rows,
            file.accepted,
            file.duplicates,
            file.rejected
        );
    }
    out.push_str("</table>\n");
    if report.problems.total > 0 {
        let _ = writeln!(
            out,
            "<p>{} rows could not be used; the first:</p><table class=\"problems\"><tr><th>file</th><th>line</th><th>code</th><th>field</th><th>message</th></tr>",
            report.problems.total
        );
        for problem in report.problems.listed.iter().take(50) {
            let _ = writeln!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&problem.file),
                problem.line,
                problem.code,
                escape(problem.field.as_deref().unwrap_or("")),
                escape(&problem.message)
            );
        }
        out.push_str("</table>\n");
    }
    for (name, model) in &report.models {
        html_model(&mut out, name, model);
    }
    out.push_str("</body></html>\n");
    out
}

fn html_model(out: &mut String, name: &str, model: &ModelReport) {
    let whole = &model.whole;
    let _ = writeln!(
        out,
        "<h2>{} <small>({}; versions {})</small></h2><p>{} to {}</p>",
        escape(name),
        model.kind.unwrap_or("unknown kind"),
        escape(&model.versions.join(", ")),
        escape(&model.start),
        escape(&model.end)
    );
    let operations = &whole.operations;
    let performance = &whole.performance.all;
    let _ = writeln!(
        out,
        "<table><tr><th>requests</th><th>error rate</th><th>timeout rate</th><th>latency p50</th><th>p95</th><th>p99</th>\
         <th>labeled</th><th>coverage</th><th>{}</th></tr><tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr></table>",
        quality_headline(whole).0,
        operations.requests,
        percent(operations.error_rate),
        percent(operations.timeout_rate),
        seconds(operations.latency_seconds.p50),
        seconds(operations.latency_seconds.p95),
        seconds(operations.latency_seconds.p99),
        performance.sample_size,
        percent(Some(performance.label_coverage)),
        number(quality_headline(whole).1),
    );
    if let Some(confusion) = &performance.confusion_matrix
        && !confusion.labels.is_empty()
    {
        out.push_str("<p>Confusion matrix over the whole range (rows: actual, columns: predicted).</p><table><tr><th></th>");
        for label in &confusion.labels {
            let _ = write!(out, "<th>{}</th>", escape(label));
        }
        out.push_str("</tr>");
        for (label, row) in confusion.labels.iter().zip(&confusion.matrix) {
            let _ = write!(out, "<tr><th>{}</th>", escape(label));
            for count in row {
                let _ = write!(out, "<td>{count}</td>");
            }
            out.push_str("</tr>");
        }
        out.push_str("</table>\n");
        out.push_str(
            "<table><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>",
        );
        for (class, scores) in &performance.per_class {
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{:.4}</td><td>{:.4}</td><td>{:.4}</td><td>{}</td></tr>",
                escape(class),
                scores.precision,
                scores.recall,
                scores.f1,
                scores.support
            );
        }
        out.push_str("</table>\n");
    }
    out.push_str("<div class=\"charts\">\n");
    let windows = &model.windows;
    let series =
        |value: &dyn Fn(&Section) -> Option<f64>| -> Vec<Option<f64>> { windows.iter().map(value).collect() };
    out.push_str(&chart(
        "requests per window",
        windows,
        &[(
            "requests",
            series(&|window| Some(window.operations.requests as f64)),
        )],
    ));
    out.push_str(&chart(
        "error and timeout rate",
        windows,
        &[
            ("error rate", series(&|window| window.operations.error_rate)),
            ("timeout rate", series(&|window| window.operations.timeout_rate)),
        ],
    ));
    out.push_str(&chart(
        "latency (seconds)",
        windows,
        &[
            ("p50", series(&|window| window.operations.latency_seconds.p50)),
            ("p95", series(&|window| window.operations.latency_seconds.p95)),
            ("p99", series(&|window| window.operations.latency_seconds.p99)),
        ],
    ));
    if performance.regression.is_some() {
        out.push_str(&chart(
            "regression error",
            windows,
            &[
                (
                    "MAE",
                    series(&|window| regression_of(window).map(|report| report.mae)),
                ),
                (
                    "RMSE",
                    series(&|window| regression_of(window).map(|report| report.rmse)),
                ),
            ],
        ));
    } else {
        out.push_str(&chart(
            "quality",
            windows,
            &[
                ("accuracy", series(&|window| window.performance.all.accuracy)),
                (
                    "macro F1",
                    series(&|window| window.performance.all.macro_average.map(|scores| scores.f1)),
                ),
            ],
        ));
    }
    out.push_str(&chart(
        "label coverage",
        windows,
        &[(
            "coverage",
            series(&|window| {
                (window.performance.all.predictions > 0).then_some(window.performance.all.label_coverage)
            }),
        )],
    ));
    if whole.drift.is_some() {
        out.push_str(&chart(
            "share of features drifted",
            windows,
            &[(
                "drifted share",
                series(&|window| {
                    window
                        .drift
                        .as_ref()
                        .and_then(|drift| drift.dataset.share_drifted)
                }),
            )],
        ));
    }
    out.push_str("</div>\n");
}

fn regression_of(section: &Section) -> Option<modelwatch_core::quality::RegressionReport> {
    section.performance.all.regression.flatten()
}

const CHART_WIDTH: u32 = 520;
const CHART_HEIGHT: u32 = 260;

/// One line chart of per-window values (gaps where a value is undefined),
/// as an inline SVG element.
fn chart(title: &str, windows: &[Section], lines: &[(&str, Vec<Option<f64>>)]) -> String {
    let mut svg = String::new();
    let values = lines
        .iter()
        .flat_map(|(_, values)| values.iter().flatten().copied());
    let (low, high) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(low, high), value| {
        (low.min(value), high.max(value))
    });
    let (low, high) = if low.is_finite() {
        (low.min(0.0), high)
    } else {
        (0.0, 1.0)
    };
    let high = if high > low { high * 1.05 } else { low + 1.0 };
    let count = windows.len().max(1);
    {
        let backend = SVGBackend::with_string(&mut svg, (CHART_WIDTH, CHART_HEIGHT));
        let root = backend.into_drawing_area();
        let drawn = (|| -> Result<(), Box<dyn std::error::Error + '_>> {
            root.fill(&WHITE)?;
            let mut chart = ChartBuilder::on(&root)
                .caption(title, ("sans-serif", 16))
                .margin(8)
                .x_label_area_size(28)
                .y_label_area_size(56)
                .build_cartesian_2d(0f64..(count as f64 - 1.0).max(1.0), low..high)?;
            chart
                .configure_mesh()
                .x_labels(6.min(count))
                .x_label_formatter(&|x| {
                    windows
                        .get(x.round().max(0.0) as usize)
                        .map(|window| window.start.get(..16).unwrap_or(&window.start).replace('T', " "))
                        .unwrap_or_default()
                })
                .label_style(("sans-serif", 10))
                .draw()?;
            for (index, (name, values)) in lines.iter().enumerate() {
                let color = Palette99::pick(index).to_rgba();
                // One segment per run of defined values.
                let mut runs: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
                for (position, value) in values.iter().enumerate() {
                    match value {
                        Some(value) => runs.last_mut().expect("a run").push((position as f64, *value)),
                        None => runs.push(Vec::new()),
                    }
                }
                let mut labelled = false;
                for run in runs.into_iter().filter(|run| !run.is_empty()) {
                    let points = run.clone();
                    let drawn = chart.draw_series(LineSeries::new(run, color.stroke_width(2)))?;
                    if !labelled {
                        drawn.label(*name).legend(move |(x, y)| {
                            PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
                        });
                        labelled = true;
                    }
                    chart.draw_series(
                        points
                            .into_iter()
                            .map(|point| Circle::new(point, 2, color.filled())),
                    )?;
                }
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .label_font(("sans-serif", 11))
                .draw()?;
            root.present()?;
            Ok(())
        })();
        if let Err(error) = drawn {
            return format!("<p>chart {title}: {}</p>", escape(&error.to_string()));
        }
    }
    // Inline SVG needs no namespace declaration: the page refers to nothing
    // outside itself, not even by name.
    svg.replace(" xmlns=\"http://www.w3.org/2000/svg\"", "")
}
