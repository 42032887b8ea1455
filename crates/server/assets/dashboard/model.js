// The page of one model (/models/{model}): figures and charts over the
// selected window, SLOs, drift and alerts. Charts are uPlot's.
"use strict";

(() => {
  const { el, replace } = MW;
  const model = decodeURIComponent(location.pathname.split("/")[2] || "");
  const COLORS = ["#2563eb", "#f59e0b", "#dc2626", "#059669", "#7c3aed", "#db2777", "#0891b2", "#65a30d", "#9ca3af"];
  const MAX_CLASS_SERIES = 8;
  const BURN_WINDOWS = ["5m", "30m", "1h", "2h", "6h", "1d", "3d"];
  const charts = {};
  let capabilities = null;

  document.title = model + " \u00b7 modelwatch";
  document.getElementById("model-name").textContent = model;

  const encoded = encodeURIComponent(model);
  const currentVersion = () => new URLSearchParams(location.search).get("version") || "";

  // ---- charts ------------------------------------------------------------

  /** Creates or updates the uPlot chart in figure #id. */
  function chart(id, series, data, options) {
    const figure = document.getElementById(id);
    const signature = JSON.stringify(series.map((s) => s.label)) + (options.bars ? "bars" : "");
    const width = Math.max(280, figure.clientWidth - 24);
    const existing = charts[id];
    if (existing && existing.signature === signature) {
      existing.range = options.range;
      existing.plot.setData(data);
      return;
    }
    if (existing) existing.plot.destroy();
    const state = { signature, range: options.range, plot: null };
    const axes = [
      options.bars
        ? { values: (u, ticks) => ticks.map((i) => options.labels[i] ?? ""), splits: () => options.labels.map((_, i) => i), grid: { show: false } }
        : {},
      { values: (u, ticks) => ticks.map(options.axis || String), size: 56 },
    ];
    const opts = {
      width,
      height: 190,
      legend: { live: !options.bars },
      cursor: { drag: { x: !options.bars, y: false } },
      scales: {
        x: options.bars
          ? { time: false, range: () => [-0.5, options.labels.length - 0.5] }
          : { time: true, range: () => state.range },
        y: { range: options.yRange || ((u, min, max) => [0, max > 0 ? max * 1.1 : 1]) },
      },
      axes,
      series: [
        options.bars ? { label: "confidence", value: (u, i) => (i == null ? MW.NONE : options.ranges[i]) } : { label: "time" },
        ...series.map((s, index) => ({
          label: s.label,
          stroke: s.color || COLORS[index % COLORS.length],
          width: options.bars ? 0 : 1.6,
          dash: s.dash,
          fill: options.bars || s.fill ? (s.color || COLORS[index % COLORS.length]) + (options.bars ? "cc" : "22") : undefined,
          paths: options.bars ? uPlot.paths.bars({ size: [0.7, 80] }) : undefined,
          // A value with no neighbour draws no line: mark it with a dot.
          points: { show: false, size: 6, fill: s.color || COLORS[index % COLORS.length], filter: options.bars ? null : isolatedPoints },
          spanGaps: false,
          value: (u, v) => (v == null ? MW.NONE : s.format ? s.format(v) : String(v)),
        })),
      ],
    };
    const holder = figure.querySelector(".plot") || figure.appendChild(el("div", { class: "plot" }));
    holder.replaceChildren();
    state.plot = new uPlot(opts, data, holder);
    charts[id] = state;
  }

  /** The indices of values whose neighbours are both missing. */
  function isolatedPoints(u, seriesIndex) {
    const values = u.data[seriesIndex];
    const isolated = [];
    for (let i = 0; i < values.length; i++) {
      if (values[i] != null && (i === 0 || values[i - 1] == null) && (i === values.length - 1 || values[i + 1] == null)) isolated.push(i);
    }
    return isolated.length ? isolated : null;
  }

  function resizeCharts() {
    for (const [id, state] of Object.entries(charts)) {
      const figure = document.getElementById(id);
      state.plot.setSize({ width: Math.max(280, figure.clientWidth - 24), height: 190 });
    }
  }

  function caption(id, text) {
    document.querySelector("#" + id + " figcaption").textContent = text;
  }

  function note(id, text, points) {
    const figure = document.getElementById(id);
    figure.dataset.points = String(points);
    let p = figure.querySelector(".note");
    if (!text) {
      if (p) p.remove();
      return;
    }
    if (!p) p = figure.appendChild(el("p", { class: "note" }));
    p.textContent = text;
  }

  const ms = (v) => (v == null ? null : v * 1000);
  const pct = (v) => (v == null ? null : v * 100);
  const fmtMs = (v) => v.toFixed(1) + " ms";
  const fmtPct = (v) => v.toFixed(2) + "%";

  function renderCharts(ts, predictions) {
    const points = ts.points;
    const x = points.map((p) => Date.parse(p.start) / 1000);
    const range = [Date.parse(ts.start) / 1000, Date.parse(ts.end) / 1000];
    const withRequests = points.filter((p) => p.requests > 0).length;
    const step = " \u00b7 step " + ts.step;

    chart("chart-throughput", [{ label: "req/s", fill: true, format: (v) => v.toFixed(3) }],
      [x, points.map((p) => p.requests_per_second)], { range });
    note("chart-throughput", withRequests ? null : "No request in this window" + step, withRequests);

    chart("chart-latency", [
      { label: "p50", format: fmtMs },
      { label: "p95", format: fmtMs, dash: [5, 4] },
      { label: "p99", format: fmtMs },
    ], [x, points.map((p) => ms(p.latency_seconds.p50)), points.map((p) => ms(p.latency_seconds.p95)), points.map((p) => ms(p.latency_seconds.p99))],
    { range, axis: (v) => v + " ms" });
    note("chart-latency", withRequests ? null : "No latency in this window", withRequests);

    chart("chart-errors", [
      { label: "error rate", color: COLORS[2], format: fmtPct },
      { label: "timeout rate", color: COLORS[1], format: fmtPct },
    ], [x, points.map((p) => pct(p.error_rate)), points.map((p) => pct(p.timeout_rate))],
    { range, axis: (v) => v + "%" });
    note("chart-errors", withRequests ? null : "No request in this window", withRequests);

    // Class shares: the most frequent classes, the rest as "other".
    const totals = {};
    for (const p of points) for (const [c, n] of Object.entries(p.classes)) totals[c] = (totals[c] || 0) + n;
    const ranked = Object.keys(totals).sort((a, b) => totals[b] - totals[a] || a.localeCompare(b));
    const shown = ranked.slice(0, MAX_CLASS_SERIES);
    const rest = ranked.slice(MAX_CLASS_SERIES);
    const classSeries = shown.map((c) => ({ label: c, format: fmtPct }));
    const classData = shown.map((c) => points.map((p) => {
      const all = Object.values(p.classes).reduce((a, b) => a + b, 0);
      return all ? ((p.classes[c] || 0) / all) * 100 : null;
    }));
    if (rest.length) {
      classSeries.push({ label: "other (" + rest.length + ")", color: COLORS[8], format: fmtPct });
      classData.push(points.map((p) => {
        const all = Object.values(p.classes).reduce((a, b) => a + b, 0);
        return all ? (rest.reduce((a, c) => a + (p.classes[c] || 0), 0) / all) * 100 : null;
      }));
    }
    const regression = ts.kind === "regression";
    document.getElementById("chart-classes").hidden = regression;
    caption("chart-confidence", regression ? "Output distribution (window)" : "Confidence distribution (window)");
    caption("chart-quality", regression ? "MAE and RMSE" : "Accuracy, macro F1, label coverage");
    const classified = points.filter((p) => Object.keys(p.classes).length).length;
    if (classSeries.length) {
      chart("chart-classes", classSeries, [x, ...classData], { range, axis: (v) => v + "%", yRange: () => [0, 100] });
    }
    note("chart-classes", classSeries.length ? null : ts.kind === "regression" ? "A regression model predicts no class" : "No class predicted in this window", classified);

    // Confidence: the seed's buckets, from the window's cumulative counts.
    const confidence = predictions && predictions.confidence;
    if (confidence) {
      // Each bar is named by its lower bound on the axis, by its range in the legend.
      const labels = [];
      const ranges = [];
      const counts = [];
      let previous = 0;
      let lower = null;
      for (const bucket of confidence.buckets) {
        labels.push(lower === null ? "\u2264 " + bucket.le : lower + "+");
        ranges.push(lower === null ? "\u2264 " + bucket.le : lower + "\u2013" + bucket.le);
        counts.push(bucket.count - previous);
        previous = bucket.count;
        lower = bucket.le;
      }
      labels.push(lower + "+");
      ranges.push("> " + lower);
      counts.push(confidence.count - previous);
      chart("chart-confidence", [{ label: "predictions", color: COLORS[0], format: (v) => MW.count(v) }],
        [labels.map((_, i) => i), counts], { bars: true, labels, ranges });
      note("chart-confidence", "mean " + confidence.mean.toFixed(3) + " \u00b7 p25 " + MW.number(confidence.p25) + " \u00b7 at most 0.6: " + MW.percent(confidence.low_confidence_share), confidence.count);
    } else if (predictions && predictions.regression) {
      const r = predictions.regression;
      note("chart-confidence", "mean " + MW.number(r.mean) + ", std " + MW.number(r.std) + ", p50 " + MW.number(r.p50) + ", p95 " + MW.number(r.p95) + ", p99 " + MW.number(r.p99), r.count);
    } else {
      note("chart-confidence", "No confidence in this window", 0);
    }

    const labeled = points.filter((p) => p.labeled > 0).length;
    if (ts.kind === "regression") {
      chart("chart-quality", [
        { label: "MAE", format: (v) => MW.number(v) },
        { label: "RMSE", format: (v) => MW.number(v) },
      ], [x, points.map((p) => p.mae), points.map((p) => p.rmse)], { range });
    } else {
      chart("chart-quality", [
        { label: "accuracy", color: COLORS[3], format: fmtPct },
        { label: "macro F1", color: COLORS[4], format: fmtPct },
        { label: "label coverage", color: COLORS[8], format: fmtPct },
      ], [x, points.map((p) => pct(p.accuracy)), points.map((p) => pct(p.macro_f1)), points.map((p) => pct(p.label_coverage))],
      { range, axis: (v) => v + "%", yRange: () => [0, 100] });
    }
    note("chart-quality", labeled ? null : "No label yet for the predictions of this window", labeled);
  }

  // ---- panels ------------------------------------------------------------

  function tile(field, label, value, extraClass, title) {
    return el("div", { class: "tile " + (extraClass || ""), dataset: { field }, title }, el("div", { class: "label" }, label), el("div", { class: "value" }, value));
  }

  function renderTiles(ops, perf, slo, span) {
    const tiles = [
      tile("requests", "requests (" + span + ")", MW.count(ops.requests)),
      tile("requests_per_second", "req/s", MW.rate(ops.requests_per_second)),
      tile("error_rate", "error rate", MW.percent(ops.error_rate), ops.error_rate > 0.01 ? "critical" : ""),
      tile("timeout_rate", "timeout rate", MW.percent(ops.timeout_rate)),
      tile("latency_p50", "p50 latency", MW.latency(ops.latency_seconds.p50)),
      tile("latency_p99", "p99 latency", MW.latency(ops.latency_seconds.p99), ops.latency_seconds.p99 > 0.5 ? "warning" : ""),
    ];
    if (perf.kind === "regression") {
      const r = perf.regression || {};
      tiles.push(tile("mae", "MAE", MW.number(r.mae)), tile("rmse", "RMSE", MW.number(r.rmse)));
    } else {
      tiles.push(
        tile("accuracy", "accuracy", MW.percent(perf.accuracy), "", MW.count(perf.sample_size) + " labeled predictions"),
        tile("macro_f1", "macro F1", MW.percent(perf.macro ? perf.macro.f1 : null)));
    }
    tiles.push(tile("label_coverage", "label coverage", MW.percent(perf.label_coverage), "", MW.count(perf.sample_size) + " of " + MW.count(perf.predictions)));
    const budgets = (slo ? slo.slos : []).map((s) => s.error_budget_remaining).filter(MW.isNumber);
    if (budgets.length) {
      const worst = Math.min(...budgets);
      tiles.push(tile("slo_budget", "SLO budget left", MW.percent(worst), worst <= 0 ? "critical" : worst < 0.25 ? "warning" : ""));
    }
    replace(document.getElementById("tiles"), tiles);
  }

  function renderAlerts(alerts) {
    const mine = alerts.filter((a) => a.model === model);
    const panel = document.getElementById("model-alerts-panel");
    panel.hidden = mine.length === 0;
    replace(document.getElementById("model-alerts"), mine.length === 0 ? [] : el("table", { class: "alerts" },
      el("thead", {}, el("tr", {}, el("th", {}, "state"), el("th", {}, "alert"), el("th", { class: "num" }, "value"), el("th", {}, "since"), el("th", {}, "summary"))),
      el("tbody", {}, mine.map((a) => el("tr", { dataset: { alert: a.name, state: a.state } },
        el("td", {}, MW.severityBadge(a.labels && a.labels.severity, a.state)),
        el("td", { class: "alert-name" }, a.name),
        el("td", { class: "num" }, MW.number(a.value)),
        el("td", {}, MW.time(a.fired_at || a.active_since)),
        el("td", {}, (a.annotations && a.annotations.summary) || ""))))));
  }

  function renderHistory(entries) {
    const mine = entries.filter((e) => e.alert.model === model).slice(0, 25);
    replace(document.getElementById("history"), mine.length === 0 ? el("p", { class: "empty" }, "No alert of this model has changed state yet.") : el("table", { class: "history" },
      el("thead", {}, el("tr", {}, el("th", {}, "at"), el("th", {}, "alert"), el("th", {}, "change"), el("th", { class: "num" }, "value"))),
      el("tbody", {}, mine.map((e) => el("tr", { dataset: { alert: e.alert.name } },
        el("td", {}, MW.time(e.at)),
        el("td", { class: "alert-name" }, e.alert.name),
        el("td", {}, el("span", { class: "state " + e.from }, e.from), " \u2192 ", el("span", { class: "state " + e.to }, e.to)),
        el("td", { class: "num" }, MW.number(e.alert.value)))))));
  }

  function burnClass(rate) {
    if (!MW.isNumber(rate)) return "";
    return rate > 14.4 ? "bad" : rate > 1 ? "warn" : "";
  }

  function renderSlos(slo) {
    const container = document.getElementById("slos");
    if (!slo || slo.slos.length === 0) {
      replace(container, el("p", { class: "empty" }, "No SLO is configured for this model (the config's slos: block)."));
      return;
    }
    replace(container, el("table", { class: "slos" },
      el("thead", {}, el("tr", {}, el("th", {}, "SLO"), el("th", { class: "num" }, "objective"), el("th", {}, "budget left"),
        BURN_WINDOWS.map((w) => el("th", { class: "num", title: "burn rate over " + w }, w)))),
      el("tbody", {}, slo.slos.map((s) => {
        const left = s.error_budget_remaining;
        const width = MW.isNumber(left) ? Math.max(0, Math.min(1, left)) * 100 : 0;
        return el("tr", { dataset: { slo: s.name } },
          el("td", {}, s.name, el("span", { class: "kind" }, s.window)),
          el("td", { class: "num" }, MW.percent(s.objective)),
          el("td", { class: "budget" + (MW.isNumber(left) && left <= 0 ? " bad" : "") },
            el("span", { class: "meter" }, el("span", { class: "fill", dataset: { width: String(width) } })),
            el("span", { class: "budget-value" }, MW.percent(left))),
          BURN_WINDOWS.map((w) => el("td", { class: "num " + burnClass(s.burn_rates[w]) }, MW.number(s.burn_rates[w]))));
      }))),
    el("p", { class: "hint" }, "Burn rate 1 spends the budget exactly over the SLO's window; the page alert is at 14.4 (1h and 5m)."));
    // Widths through the CSSOM: the page's CSP forbids inline style attributes.
    for (const fill of container.querySelectorAll(".fill")) fill.style.width = fill.dataset.width + "%";
  }

  async function renderDrift(span, version) {
    const container = document.getElementById("drift");
    if (!capabilities || !capabilities.drift) {
      replace(container, el("p", { class: "empty", dataset: { drift: "unavailable" } }, "drift not available: this build of modelwatch has no drift API"));
      return;
    }
    const query = "?window=" + encodeURIComponent(span) + (version ? "&version=" + encodeURIComponent(version) : "");
    const answer = await MW.getJson("/v1/models/" + encoded + "/drift" + query);
    if (!answer.ok || !answer.body) {
      replace(container, el("p", { class: "empty", dataset: { drift: "unavailable" } }, "drift not available (" + (answer.error || "HTTP " + answer.status) + ")"));
      return;
    }
    const drift = answer.body;
    const rows = [];
    for (const [group, entries] of [["feature", drift.features || {}], ["prediction", drift.predictions || {}]]) {
      for (const [name, d] of Object.entries(entries)) rows.push({ group, name, ...d });
    }
    rows.sort((a, b) => (b.drifted === true) - (a.drifted === true) || (b.score / b.threshold || 0) - (a.score / a.threshold || 0));
    const baseline = drift.baseline || {};
    const withPValues = rows.some((r) => MW.isNumber(r.p_value));
    replace(container,
      el("p", { class: "hint" },
        "baseline: " + (baseline.kind === "frozen" ? "frozen window" : "previous window") + " " + MW.time(baseline.from) + " \u2192 " + MW.time(baseline.to) +
        " (" + MW.count(baseline.rows) + " rows) \u00b7 current: " + MW.count(drift.rows) + " rows \u00b7 drifted features: " +
        MW.count(drift.drifted_features) + " (" + MW.percent(drift.share_drifted) + ")"),
      el("table", { class: "drift" },
        el("thead", {}, el("tr", {}, el("th", {}, "name"), el("th", {}, "method"), el("th", { class: "num" }, "score"), el("th", { class: "num" }, "threshold"), withPValues ? el("th", { class: "num" }, "p-value") : null, el("th", {}, ""))),
        el("tbody", {}, rows.map((r) => el("tr", { dataset: { feature: r.name } },
          el("td", {}, r.name, el("span", { class: "kind" }, r.group === "prediction" ? "prediction" : r.type || "")),
          el("td", {}, r.method || ""),
          el("td", { class: "num" + (r.drifted ? " bad" : "") }, MW.number(r.score)),
          el("td", { class: "num" }, MW.number(r.threshold)),
          withPValues ? el("td", { class: "num" }, MW.number(r.p_value)) : null,
          el("td", {}, r.drifted ? el("span", { class: "chip firing" }, "drifted") : el("span", { class: "chip ok" }, "ok")))))));
  }

  function renderVersions(models) {
    const entry = models && models.models.find((m) => m.model === model);
    const select = document.getElementById("version");
    const wanted = currentVersion();
    const versions = entry ? entry.versions : [];
    const options = [el("option", { value: "" }, "all")].concat(versions.map((v) => el("option", { value: v }, v)));
    replace(select, options);
    select.value = versions.includes(wanted) ? wanted : "";
    document.getElementById("model-kind").textContent = entry && entry.kind ? entry.kind : "";
  }

  // ---- refresh -----------------------------------------------------------

  async function refresh() {
    if (!capabilities) {
      const answer = await MW.getJson("/v1/dashboard/capabilities");
      capabilities = answer.ok ? answer.body : { drift: false };
    }
    const span = MW.currentWindow();
    const version = currentVersion();
    const query = "?window=" + encodeURIComponent(span) + (version ? "&version=" + encodeURIComponent(version) : "");
    const base = "/v1/models/" + encoded;
    const [models, ts, ops, predictions, perf, slo, alerts, history] = await Promise.all([
      MW.getJson("/v1/models"),
      MW.getJson(base + "/timeseries" + query),
      MW.getJson(base + "/operations" + query),
      MW.getJson(base + "/predictions" + query),
      MW.getJson(base + "/performance" + query),
      MW.getJson(base + "/slo"),
      MW.getJson("/v1/alerts"),
      MW.getJson("/v1/alerts/history?limit=500"),
    ]);
    const content = document.getElementById("content");
    if (ts.status === 404) {
      MW.banner("modelwatch has no model named \u201c" + model + "\u201d" + (version ? " or it has no version \u201c" + version + "\u201d" : "") + ".");
      content.hidden = true;
      return true;
    }
    content.hidden = false;
    for (const [name, answer] of [["timeseries", ts], ["operations", ops], ["predictions", predictions], ["performance", perf]]) {
      if (!answer.ok) {
        MW.banner("Cannot read /" + name + ": " + (answer.error || "HTTP " + answer.status));
        return false;
      }
    }
    MW.banner(null);
    if (models.ok) renderVersions(models.body);
    renderTiles(ops.body, perf.body, slo.ok ? slo.body : null, span);
    renderAlerts(alerts.ok ? alerts.body.alerts : []);
    renderCharts(ts.body, predictions.body);
    renderSlos(slo.ok ? slo.body : null);
    renderHistory(history.ok ? history.body.entries : []);
    await renderDrift(span, version);
    return true;
  }

  const back = document.getElementById("back");
  const updateBackLink = () => {
    back.href = "/" + (MW.currentWindow() === MW.WINDOWS[0] ? "" : "?window=" + MW.currentWindow());
  };
  updateBackLink();
  const run = MW.loop(refresh);
  MW.windowSelector(() => {
    updateBackLink();
    run();
  });
  document.getElementById("version").addEventListener("change", (event) => {
    MW.setQuery("version", event.target.value);
    run();
  });
  let resizeTimer = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(resizeCharts, 150);
  });
})();
