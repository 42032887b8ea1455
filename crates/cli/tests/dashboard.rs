//! The built-in dashboard in a real headless Chromium, against the real
//! binary with real traffic: three models (one with errors, one slow, one
//! regression) plus 97 with a single event, labels, and built-in alerts that
//! fire. The test loads the overview and a model page and checks that they
//! show what the JSON API answers (formatted as the pages format it), that
//! nothing went wrong in the browser (console errors, exceptions, failed or
//! refused requests), and saves screenshots under `target/test-artifacts/`.

mod browser;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use browser::{Browser, artifacts_dir};
use serde_json::{Value, json};
use support::{Server, content_type, unix_now_ms, wait_until};

const DEADLINE: Duration = Duration::from_secs(30);
const WIDTH: u32 = 1400;
const HEIGHT: u32 = 1000;
/// Events are spread over this many minutes before now: inside a 1h window
/// with a margin, however long the test runs.
const SPREAD_MINUTES: i64 = 50;
/// Models with one event each, besides the three real ones: 100 in all.
const BULK_MODELS: usize = 97;

// ---- the page's number formats, as dashboard.js writes them --------------

/// `MW.count`: 12345 -> "12,345".
fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// `MW.percent`: one decimal, two under 1%; "–" for null.
fn percent(value: &Value) -> String {
    match value.as_f64() {
        None => "\u{2013}".to_owned(),
        Some(x) if x != 0.0 && x.abs() < 0.01 => format!("{:.2}%", x * 100.0),
        Some(x) => format!("{:.1}%", x * 100.0),
    }
}

/// `MW.latency`: milliseconds under a second.
fn latency(value: &Value) -> String {
    match value.as_f64() {
        None => "\u{2013}".to_owned(),
        Some(seconds) if seconds < 1.0 => format!("{:.1} ms", seconds * 1000.0),
        Some(seconds) => format!("{seconds:.2} s"),
    }
}

/// `MW.rate`.
fn rate(value: &Value) -> String {
    match value.as_f64() {
        None => "\u{2013}".to_owned(),
        Some(x) if x > 0.0 && x < 0.01 => "<0.01".to_owned(),
        Some(x) if x >= 100.0 => format!("{x:.0}"),
        Some(x) => format!("{x:.2}"),
    }
}

/// `MW.number`: three decimals under 10, one under 100, none above.
fn number(value: &Value) -> String {
    match value.as_f64() {
        None => "\u{2013}".to_owned(),
        Some(x) if x.abs() >= 100.0 => format!("{x:.0}"),
        Some(x) if x.abs() >= 10.0 => format!("{x:.1}"),
        Some(x) => format!("{x:.3}"),
    }
}

#[test]
fn the_formats_match_the_pages() {
    assert_eq!(count(0), "0");
    assert_eq!(count(999), "999");
    assert_eq!(count(1000), "1,000");
    assert_eq!(count(1234567), "1,234,567");
    assert_eq!(percent(&json!(0.75)), "75.0%");
    assert_eq!(percent(&json!(0.0042)), "0.42%");
    assert_eq!(percent(&json!(0)), "0.0%");
    assert_eq!(percent(&Value::Null), "\u{2013}");
    assert_eq!(latency(&json!(0.0123)), "12.3 ms");
    assert_eq!(latency(&json!(1.5)), "1.50 s");
    assert_eq!(rate(&json!(0.1666)), "0.17");
    assert_eq!(rate(&json!(0.0006)), "<0.01");
    assert_eq!(rate(&json!(0)), "0.00");
    assert_eq!(number(&json!(2)), "2.000");
    assert_eq!(number(&json!(83.33)), "83.3");
}

// ---- traffic ---------------------------------------------------------------

const CONFIG: &str = "\
alerts:
  evaluation_interval: 1s
  rules:
    MLModelHighErrorRate: {for: 0s}
    MLModelHighLatency: {for: 0s}
slos:
  fraud_detector:
    availability: {target: 99.9, window: 30d}
    latency: {p99_target_ms: 100}
";

fn timestamp(minutes_ago: i64, now_ms: i64) -> f64 {
    (now_ms - minutes_ago * 60_000 - 1_000) as f64 / 1000.0
}

/// fraud_detector: 600 events over 50 minutes, 1 in 12 failed (errors and
/// timeouts); classes "0" and "1" with confident predictions.
fn fraud_events(now_ms: i64) -> Vec<String> {
    (0..600)
        .map(|i: i64| {
            let mut event = json!({
                "prediction_id": format!("fraud-{i:05}"),
                "model": "fraud_detector",
                "version": if i < 200 { "v2" } else { "v3" },
                "timestamp": timestamp(i % SPREAD_MINUTES, now_ms),
                "latency_seconds": 0.008 + (i % 17) as f64 * 0.004,
                "features": {"amount": (i % 50) as f64 * 3.5, "country": if i % 3 == 0 { "DE" } else { "FR" }},
            });
            if i % 12 == 0 {
                if i % 24 == 0 {
                    event["status"] = json!("timeout");
                } else {
                    event["status"] = json!("error");
                    event["error_type"] = json!("ValueError");
                }
            } else {
                let class = if i % 2 == 0 { "0" } else { "1" };
                event["prediction"] = json!(class);
                event["confidence"] = json!(0.72 + (i % 25) as f64 * 0.011);
            }
            event.to_string()
        })
        .collect()
}

/// churn_model: 300 events, a third of them slow (p99 over 0.5 s), three
/// classes in equal shares.
fn churn_events(now_ms: i64) -> Vec<String> {
    let classes = ["stay", "leave", "upgrade"];
    (0..300)
        .map(|i: i64| {
            json!({
                "prediction_id": format!("churn-{i:05}"),
                "model": "churn_model",
                "version": "v1",
                "timestamp": timestamp(i % SPREAD_MINUTES, now_ms),
                "latency_seconds": if i % 3 == 0 { 0.7 + (i % 7) as f64 * 0.02 } else { 0.05 },
                "prediction": classes[(i % 3) as usize],
                "confidence": 0.8 + (i % 10) as f64 * 0.015,
            })
            .to_string()
        })
        .collect()
}

/// price_estimator: a healthy regression model.
fn price_events(now_ms: i64) -> Vec<String> {
    (0..120)
        .map(|i: i64| {
            json!({
                "prediction_id": format!("price-{i:05}"),
                "model": "price_estimator",
                "version": "v7",
                "timestamp": timestamp(i % SPREAD_MINUTES, now_ms),
                "latency_seconds": 0.02,
                "prediction": 100.0 + i as f64,
            })
            .to_string()
        })
        .collect()
}

/// Two events for each of the bulk models, of two classes (one class alone
/// would be a prediction skew).
fn bulk_events(now_ms: i64) -> Vec<String> {
    (0..BULK_MODELS * 2)
        .map(|i| {
            json!({
                "prediction_id": format!("bulk-{i:05}"),
                "model": format!("bulk_{:02}", i / 2),
                "timestamp": timestamp(1, now_ms),
                "latency_seconds": 0.01,
                "prediction": if i % 2 == 0 { "a" } else { "b" },
                "confidence": 0.9,
            })
            .to_string()
        })
        .collect()
}

/// Labels: fraud_detector's first 200 successful predictions, 3 in 4 right
/// (accuracy 0.75); churn_model's first 100, 9 in 10 right; price_estimator's
/// first 60, off by 2.
fn labels() -> Vec<String> {
    let mut lines = Vec::new();
    let mut labeled = 0;
    for i in 0..600i64 {
        if i % 12 == 0 || labeled == 200 {
            continue;
        }
        let predicted = if i % 2 == 0 { "0" } else { "1" };
        let wrong = if predicted == "0" { "1" } else { "0" };
        let actual = if labeled % 4 == 3 { wrong } else { predicted };
        lines.push(json!({"prediction_id": format!("fraud-{i:05}"), "actual": actual}).to_string());
        labeled += 1;
    }
    let classes = ["stay", "leave", "upgrade"];
    for i in 0..100i64 {
        let predicted = classes[(i % 3) as usize];
        let actual = if i % 10 == 9 {
            classes[((i + 1) % 3) as usize]
        } else {
            predicted
        };
        lines.push(json!({"prediction_id": format!("churn-{i:05}"), "actual": actual}).to_string());
    }
    for i in 0..60i64 {
        lines.push(json!({"prediction_id": format!("price-{i:05}"), "actual": 102.0 + i as f64}).to_string());
    }
    lines
}

fn get_json(server: &Server, path: &str) -> Value {
    let (status, _, body) = server.get(path);
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|error| panic!("GET {path}: {error}: {body}"))
}

fn firing(server: &Server) -> BTreeSet<(String, String)> {
    get_json(server, "/v1/alerts")["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|alert| alert["state"] == "firing")
        .map(|alert| {
            (
                alert["name"].as_str().unwrap().to_owned(),
                alert["model"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn start_server_with_traffic(directory: &std::path::Path) -> Server {
    let config = directory.join("config.yaml");
    std::fs::write(&config, CONFIG).unwrap();
    let server = Server::builder(&directory.join("data"))
        .arg("--config")
        .arg(config.to_str().unwrap())
        .start();
    let now_ms = unix_now_ms();
    for (lines, expected) in [
        (fraud_events(now_ms), 600),
        (churn_events(now_ms), 300),
        (price_events(now_ms), 120),
        (bulk_events(now_ms), 2 * BULK_MODELS as u64),
    ] {
        let (status, answer) = server.post_ndjson("/v1/predictions", &lines);
        assert_eq!(
            (status, answer["accepted"].as_u64()),
            (200, Some(expected)),
            "{answer}"
        );
    }
    let labels = labels();
    let (status, answer) = server.post_ndjson("/v1/labels", &labels);
    assert_eq!(
        (status, answer["accepted"].as_u64(), answer["held"].as_u64()),
        (200, Some(labels.len() as u64), Some(0)),
        "{answer}"
    );
    let wanted: BTreeSet<(String, String)> = [
        ("MLModelHighErrorRate", "fraud_detector"),
        ("MLModelHighLatency", "churn_model"),
    ]
    .into_iter()
    .map(|(name, model)| (name.to_owned(), model.to_owned()))
    .collect();
    assert!(
        wait_until(DEADLINE, || firing(&server).is_superset(&wanted)),
        "the alerts did not fire: {:?}",
        get_json(&server, "/v1/alerts")
    );
    server
}

// ---- screenshots -------------------------------------------------------------

/// Saves the PNG and checks that it shows something: the size asked for,
/// many distinct colours, and no colour covering nearly all of it.
fn check_screenshot(png_bytes: &[u8], name: &str) {
    let path = artifacts_dir().join(name);
    std::fs::write(&path, png_bytes).unwrap();
    let mut decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().expect("the screenshot is a PNG");
    let mut pixels = vec![0; reader.output_buffer_size().expect("a bounded PNG")];
    let frame = reader.next_frame(&mut pixels).expect("decode the screenshot");
    assert_eq!((frame.width, frame.height), (WIDTH, HEIGHT), "{}", path.display());
    let channels = frame.color_type.samples();
    assert!(channels >= 3, "{:?}", frame.color_type);
    let mut colours: BTreeMap<[u8; 3], usize> = BTreeMap::new();
    for pixel in pixels[..frame.buffer_size()].chunks_exact(channels) {
        *colours.entry([pixel[0], pixel[1], pixel[2]]).or_default() += 1;
    }
    let total = (frame.width * frame.height) as usize;
    let commonest = colours.values().copied().max().unwrap_or(0);
    assert!(
        colours.len() >= 50,
        "{} has only {} colours: blank or nearly",
        path.display(),
        colours.len()
    );
    assert!(
        commonest * 100 < total * 90,
        "{}: one colour covers {}% of it",
        path.display(),
        commonest * 100 / total
    );
}

fn assert_no_problems(browser: &Browser, page: &str) {
    let problems = browser.problems();
    assert!(
        problems.lines.is_empty(),
        "the {page} page had problems:\n{}\nchromium log:\n{}",
        problems.lines.join("\n"),
        browser.log()
    );
}

// ---- the pages -------------------------------------------------------------

const OVERVIEW_ROWS: &str = r##"(() => {
  const rows = {};
  for (const tr of document.querySelectorAll("#models tbody tr")) {
    const cells = { health: tr.dataset.health };
    for (const td of tr.querySelectorAll("[data-field]")) cells[td.dataset.field] = td.textContent;
    rows[tr.dataset.model] = cells;
  }
  const alerts = [...document.querySelectorAll("#active-alerts tr[data-alert]")]
    .map((tr) => [tr.dataset.alert, tr.dataset.model, tr.dataset.state]);
  return { rows, alerts, text: document.body.innerText };
})()"##;

const MODEL_PAGE: &str = r##"(() => {
  const tiles = {};
  for (const tile of document.querySelectorAll("#tiles .tile")) {
    tiles[tile.dataset.field] = { label: tile.querySelector(".label").textContent, value: tile.querySelector(".value").textContent };
  }
  const points = {};
  for (const figure of document.querySelectorAll("figure.chart")) points[figure.id] = Number(figure.dataset.points);
  return {
    title: document.getElementById("model-name").textContent,
    tiles,
    points,
    plots: document.querySelectorAll("figure.chart .uplot canvas").length,
    alerts: [...document.querySelectorAll("#model-alerts tr[data-alert]")].map((tr) => [tr.dataset.alert, tr.dataset.state]),
    history: [...document.querySelectorAll("#history tr[data-alert]")].map((tr) => tr.dataset.alert),
    slos: [...document.querySelectorAll("#slos tr[data-slo]")].map((tr) => tr.dataset.slo),
    drift: document.getElementById("drift").innerText,
    refreshes: Number(document.body.dataset.refreshes || 0),
  };
})()"##;

fn points_with(timeseries: &Value, field: &str) -> u64 {
    timeseries["points"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|point| point[field].as_u64().unwrap() > 0)
        .count() as u64
}

#[test]
fn the_dashboard_shows_what_the_api_answers_in_chromium() {
    let directory = tempfile::tempdir().unwrap();
    let server = start_server_with_traffic(directory.path());
    let mut browser = Browser::start(WIDTH, HEIGHT);

    // ---- the overview: one API request per refresh for 100 models.
    browser.navigate(&server.url("/"));
    browser.wait_for(
        "document.body.dataset.state === 'ready'",
        DEADLINE,
        "document.body.dataset.state",
    );
    let page = browser.evaluate(OVERVIEW_ROWS);
    let overview = get_json(&server, "/v1/dashboard/overview?window=1h");
    let rows = page["rows"].as_object().unwrap();
    assert_eq!(rows.len(), 3 + BULK_MODELS, "{}", page["text"]);
    for model in get_json(&server, "/v1/models")["models"].as_array().unwrap() {
        let name = model["model"].as_str().unwrap();
        assert!(rows.contains_key(name), "{name} is not on the overview: {page}");
    }
    for (model, expected_health) in [
        ("fraud_detector", "critical"),
        ("churn_model", "warning"),
        ("price_estimator", "ok"),
    ] {
        let row = &rows[model];
        let operations = get_json(&server, &format!("/v1/models/{model}/operations?window=1h"));
        let performance = get_json(&server, &format!("/v1/models/{model}/performance?window=7d"));
        let entry = overview["models"]
            .as_array()
            .unwrap()
            .iter()
            .find(|entry| entry["model"] == model)
            .unwrap();
        // The overview endpoint agrees with the per-model endpoints…
        assert_eq!(entry["requests"], operations["requests"], "{model}");
        assert_eq!(entry["error_rate"], operations["error_rate"], "{model}");
        assert_eq!(
            entry["latency_p99_seconds"], operations["latency_seconds"]["p99"],
            "{model}"
        );
        assert_eq!(entry["accuracy"], performance["accuracy"], "{model}");
        assert_eq!(entry["health"], expected_health, "{model}: {entry}");
        // …and the page shows them.
        let shown = |field: &str| row[field].as_str().unwrap_or_default().to_owned();
        assert_eq!(shown("health"), expected_health, "{model}");
        assert_eq!(
            shown("requests"),
            count(operations["requests"].as_u64().unwrap()),
            "{model}"
        );
        assert_eq!(
            shown("requests_per_second"),
            rate(&operations["requests_per_second"]),
            "{model}"
        );
        assert_eq!(shown("error_rate"), percent(&operations["error_rate"]), "{model}");
        assert_eq!(
            shown("latency_p99"),
            latency(&operations["latency_seconds"]["p99"]),
            "{model}"
        );
        assert_eq!(shown("accuracy"), percent(&performance["accuracy"]), "{model}");
        assert_eq!(
            shown("label_coverage"),
            percent(&json!(performance["label_coverage"])),
            "{model}"
        );
    }
    assert_eq!(rows["fraud_detector"]["requests"], "600");
    assert_eq!(rows["fraud_detector"]["accuracy"], "75.0%");
    assert_eq!(rows["churn_model"]["accuracy"], "90.0%");
    assert_eq!(rows["price_estimator"]["accuracy"], "\u{2013}");
    assert_eq!(rows["bulk_42"]["requests"], "2");
    assert_eq!(rows["bulk_42"]["requests_per_second"], "<0.01");
    assert_eq!(rows["bulk_42"]["health"], "ok");
    assert!(
        rows["fraud_detector"]["alerts"]
            .as_str()
            .unwrap()
            .contains("MLModelHighErrorRate"),
        "{page}"
    );
    let shown_alerts = page["alerts"].as_array().unwrap();
    assert!(
        shown_alerts.contains(&json!(["MLModelHighErrorRate", "fraud_detector", "firing"])),
        "{page}"
    );
    assert!(
        shown_alerts.contains(&json!(["MLModelHighLatency", "churn_model", "firing"])),
        "{page}"
    );
    let api_requests: Vec<String> = browser
        .requested_urls()
        .into_iter()
        .filter(|url| url.contains("/v1/"))
        .collect();
    assert!(
        !api_requests.is_empty()
            && api_requests
                .iter()
                .all(|url| url.contains("/v1/dashboard/overview")),
        "the overview asked for more than its one endpoint: {api_requests:?}"
    );
    check_screenshot(&browser.screenshot(), "dashboard-overview.png");
    assert_no_problems(&browser, "overview");

    // ---- fraud_detector's page.
    let before = browser.requested_urls().len();
    browser.navigate(&server.url("/models/fraud_detector"));
    browser.wait_for(
        "document.body.dataset.state === 'ready' && document.querySelectorAll('figure.chart .uplot').length === 6",
        DEADLINE,
        "[document.body.dataset.state, document.querySelectorAll('figure.chart .uplot').length]",
    );
    let page = browser.evaluate(MODEL_PAGE);
    let operations = get_json(&server, "/v1/models/fraud_detector/operations?window=1h");
    let performance = get_json(&server, "/v1/models/fraud_detector/performance?window=1h");
    let timeseries = get_json(&server, "/v1/models/fraud_detector/timeseries?window=1h");
    let slo = get_json(&server, "/v1/models/fraud_detector/slo");
    assert_eq!(page["title"], "fraud_detector");
    let tile = |field: &str| {
        page["tiles"][field]["value"]
            .as_str()
            .unwrap_or("absent")
            .to_owned()
    };
    assert_eq!(page["tiles"]["requests"]["label"], "requests (1h)");
    assert_eq!(tile("requests"), count(operations["requests"].as_u64().unwrap()));
    assert_eq!(tile("error_rate"), percent(&operations["error_rate"]));
    assert_eq!(tile("timeout_rate"), percent(&operations["timeout_rate"]));
    assert_eq!(
        tile("latency_p99"),
        latency(&operations["latency_seconds"]["p99"])
    );
    assert_eq!(tile("accuracy"), percent(&performance["accuracy"]));
    assert_eq!(tile("accuracy"), "75.0%");
    assert_eq!(tile("macro_f1"), percent(&performance["macro"]["f1"]));
    assert_eq!(tile("label_coverage"), percent(&performance["label_coverage"]));
    let worst_budget = slo["slos"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|slo| slo["error_budget_remaining"].as_f64())
        .fold(f64::INFINITY, f64::min);
    assert_eq!(tile("slo_budget"), percent(&json!(worst_budget)));
    // The timeseries adds up to the window, and every chart got its points.
    let summed: u64 = timeseries["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|point| point["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(summed, operations["requests"].as_u64().unwrap());
    assert_eq!(
        timeseries["points"]
            .as_array()
            .unwrap()
            .iter()
            .map(|point| point["labeled"].as_u64().unwrap())
            .sum::<u64>(),
        performance["sample_size"].as_u64().unwrap()
    );
    let with_requests = points_with(&timeseries, "requests");
    assert!(with_requests >= SPREAD_MINUTES as u64 - 1, "{timeseries}");
    assert_eq!(page["points"]["chart-throughput"], with_requests);
    assert_eq!(page["points"]["chart-latency"], with_requests);
    assert_eq!(
        page["points"]["chart-quality"],
        points_with(&timeseries, "labeled")
    );
    assert!(page["points"]["chart-quality"].as_u64().unwrap() > 10, "{page}");
    assert_eq!(page["points"]["chart-classes"], with_requests);
    let predictions = get_json(&server, "/v1/models/fraud_detector/predictions?window=1h");
    assert_eq!(
        page["points"]["chart-confidence"],
        predictions["confidence"]["count"]
    );
    assert_eq!(page["points"]["chart-confidence"], 550);
    assert!(page["plots"].as_u64().unwrap() >= 6, "{page}");
    assert!(
        page["alerts"]
            .as_array()
            .unwrap()
            .contains(&json!(["MLModelHighErrorRate", "firing"])),
        "{page}"
    );
    assert!(
        page["history"]
            .as_array()
            .unwrap()
            .contains(&json!("MLModelHighErrorRate")),
        "{page}"
    );
    assert_eq!(page["slos"], json!(["availability", "latency_p99"]));
    // The drift panel shows every feature the drift API compares.
    let drift_requests: Vec<String> = browser.requested_urls()[before..]
        .iter()
        .filter(|url| url.contains("/drift"))
        .cloned()
        .collect();
    assert!(!drift_requests.is_empty(), "the page did not ask for drift");
    let drift_text = page["drift"].as_str().unwrap();
    assert!(drift_text.contains("baseline"), "{page}");
    let drift = get_json(&server, "/v1/models/fraud_detector/drift?window=1h");
    let features = drift["features"].as_object().expect("drift features");
    assert!(!features.is_empty(), "{drift}");
    for (feature, figures) in features {
        assert!(
            drift_text.contains(feature.as_str()),
            "{feature} not in the drift panel: {drift_text}"
        );
        if let Some(method) = figures["method"].as_str() {
            assert!(
                drift_text.contains(method),
                "{method} not in the drift panel: {drift_text}"
            );
        }
    }
    check_screenshot(&browser.screenshot(), "dashboard-model.png");

    // ---- another window: the figures follow it.
    let refreshes = page["refreshes"].as_u64().unwrap();
    browser.evaluate(
        "[...document.querySelectorAll('#windows button')].find((b) => b.textContent === '24h').click()",
    );
    browser.wait_for(
        &format!(
            "Number(document.body.dataset.refreshes) > {refreshes} && document.querySelector('#tiles [data-field=requests] .label').textContent === 'requests (24h)'"
        ),
        DEADLINE,
        "document.querySelector('#tiles [data-field=requests] .label').textContent",
    );
    let page = browser.evaluate(MODEL_PAGE);
    let timeseries = get_json(&server, "/v1/models/fraud_detector/timeseries?window=24h");
    assert_eq!(timeseries["step"], "15m");
    assert_eq!(
        page["points"]["chart-throughput"],
        points_with(&timeseries, "requests")
    );
    assert_eq!(
        browser.evaluate("location.search"),
        json!("?window=24h"),
        "the window is kept in the URL"
    );
    assert_no_problems(&browser, "model");

    // ---- a regression model: MAE and RMSE instead of accuracy, no class chart.
    browser.navigate(&server.url("/models/price_estimator"));
    browser.wait_for(
        "document.body.dataset.state === 'ready' && document.getElementById('model-name').textContent === 'price_estimator'",
        DEADLINE,
        "document.body.dataset.state",
    );
    let page = browser.evaluate(MODEL_PAGE);
    let performance = get_json(&server, "/v1/models/price_estimator/performance?window=1h");
    assert_eq!(
        page["tiles"]["mae"]["value"],
        number(&performance["regression"]["mae"])
    );
    assert_eq!(page["tiles"]["mae"]["value"], "2.000");
    assert_eq!(
        page["tiles"]["rmse"]["value"],
        number(&performance["regression"]["rmse"])
    );
    assert!(page["tiles"].get("accuracy").is_none(), "{page}");
    assert_eq!(
        browser.evaluate("document.getElementById('chart-classes').hidden"),
        json!(true)
    );
    let timeseries = get_json(&server, "/v1/models/price_estimator/timeseries?window=1h");
    assert_eq!(
        page["points"]["chart-quality"],
        points_with(&timeseries, "labeled")
    );
    // The 60 labeled predictions were made over 50 distinct minutes.
    assert_eq!(page["points"]["chart-quality"], SPREAD_MINUTES, "{page}");
    assert_no_problems(&browser, "regression model");
}

#[test]
fn pages_and_assets_are_served_with_their_types_and_cache_headers() {
    let directory = tempfile::tempdir().unwrap();
    let server = Server::start(&directory.path().join("data"));
    for (path, expected_type, expected_cache) in [
        ("/", "text/html; charset=utf-8", "no-cache"),
        ("/models/anything", "text/html; charset=utf-8", "no-cache"),
        (
            "/assets/dashboard.js",
            "text/javascript; charset=utf-8",
            "no-cache",
        ),
        ("/assets/dashboard.css", "text/css; charset=utf-8", "no-cache"),
        ("/assets/favicon.svg", "image/svg+xml", "no-cache"),
        (
            "/assets/uplot-1.6.32/uPlot.iife.min.js",
            "text/javascript; charset=utf-8",
            "public, max-age=31536000, immutable",
        ),
        (
            "/assets/uplot-1.6.32/uPlot.min.css",
            "text/css; charset=utf-8",
            "public, max-age=31536000, immutable",
        ),
        (
            "/assets/uplot-1.6.32/LICENSE",
            "text/plain; charset=utf-8",
            "public, max-age=31536000, immutable",
        ),
    ] {
        let (status, headers, body) = server.get(path);
        assert_eq!(status, 200, "{path}");
        assert_eq!(content_type(&headers), expected_type, "{path}");
        assert_eq!(headers["cache-control"], expected_cache, "{path}");
        assert!(!body.is_empty(), "{path}");
        let etag = headers["etag"].to_str().unwrap().to_owned();
        let (status, _, body) = server.get_with_headers(path, &[("If-None-Match", &etag)]);
        assert_eq!((status, body.as_str()), (304, ""), "{path}");
    }
    let (_, headers, body) = server.get("/");
    assert!(
        headers["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'self'")
    );
    assert!(body.contains("/assets/overview.js"), "{body}");
    let (_, _, license) = server.get("/assets/uplot-1.6.32/LICENSE");
    assert!(license.contains("MIT"), "{license}");
    let (status, _, _) = server.get("/assets/nothing.js");
    assert_eq!(status, 404);
    assert_eq!(
        get_json(&server, "/v1/dashboard/capabilities")["drift"],
        json!(true)
    );
    let overview = get_json(&server, "/v1/dashboard/overview");
    assert_eq!(overview["models"], json!([]));
    assert_eq!(overview["window"], "1h");
}
