// The overview page (/): every model's health in one request to
// /v1/dashboard/overview, whatever the number of models.
"use strict";

(() => {
  const { el, replace } = MW;
  const MAX_ALERT_ROWS = 10;
  let last = null;

  function summaryTile(label, value, extraClass) {
    return el("div", { class: "tile " + (extraClass || "") }, el("div", { class: "label" }, label), el("div", { class: "value" }, value));
  }

  function modelLink(model) {
    const span = MW.currentWindow();
    const query = span === MW.WINDOWS[0] ? "" : "?window=" + span;
    return el("a", { href: "/models/" + encodeURIComponent(model) + query }, model);
  }

  function render(overview) {
    const models = overview.models;
    const critical = models.filter((m) => m.health === "critical").length;
    const warning = models.filter((m) => m.health === "warning").length;
    replace(document.getElementById("summary"),
      summaryTile("models", MW.count(models.length)),
      summaryTile("critical", MW.count(critical), critical ? "critical" : ""),
      summaryTile("warning", MW.count(warning), warning ? "warning" : ""),
      summaryTile("firing alerts", MW.count(overview.firing), overview.firing ? "critical" : ""),
      summaryTile("pending alerts", MW.count(overview.pending), overview.pending ? "warning" : ""));

    document.getElementById("accuracy-head").textContent = "accuracy (" + overview.quality_window + ")";

    // Every active alert, across models.
    const alerts = models.flatMap((m) => m.alerts.map((a) => ({ ...a, model: m.model })));
    alerts.sort((a, b) => (a.state === b.state ? 0 : a.state === "firing" ? -1 : 1) || a.model.localeCompare(b.model));
    const alertsContainer = document.getElementById("active-alerts");
    if (alerts.length === 0) {
      replace(alertsContainer, el("p", { class: "empty" }, "No alert is pending or firing."));
    } else {
      // Firing first; a long list is cut so that the models stay in view.
      const hidden = alerts.slice(MAX_ALERT_ROWS);
      const more = hidden.length === 0 ? null : el("p", { class: "hint" },
        "and " + MW.count(hidden.length) + " more (" + MW.count(hidden.filter((a) => a.state === "firing").length) + " firing, " +
        MW.count(hidden.filter((a) => a.state === "pending").length) + " pending): see the models below");
      const table = el("table", { class: "alerts" },
        el("thead", {}, el("tr", {}, el("th", {}, "state"), el("th", {}, "alert"), el("th", {}, "model"), el("th", { class: "num" }, "value"), el("th", {}, "since"))),
        el("tbody", {}, alerts.slice(0, MAX_ALERT_ROWS).map((a) => el("tr", { dataset: { alert: a.name, model: a.model, state: a.state } },
          el("td", {}, MW.severityBadge(a.severity, a.state)),
          el("td", { class: "alert-name" }, a.name),
          el("td", {}, modelLink(a.model)),
          el("td", { class: "num" }, MW.number(a.value)),
          el("td", {}, MW.time(a.active_since))))));
      replace(alertsContainer, table, more);
    }

    const filter = document.getElementById("filter").value.trim().toLowerCase();
    const shown = models.filter((m) => !filter || m.model.toLowerCase().includes(filter));
    const rows = shown.map((m) => {
      const budgets = m.slos.map((s) => s.error_budget_remaining).filter(MW.isNumber);
      const worstBudget = budgets.length ? Math.min(...budgets) : null;
      const budgetCell = el("td", { class: "num" + (worstBudget !== null && worstBudget <= 0 ? " bad" : ""), dataset: { field: "slo_budget" } }, MW.percent(worstBudget));
      if (m.slos.length) budgetCell.title = m.slos.map((s) => s.name + ": " + MW.percent(s.error_budget_remaining)).join("\n");
      const firing = m.alerts.filter((a) => a.state === "firing").map((a) => a.name);
      const pending = m.alerts.filter((a) => a.state === "pending").map((a) => a.name);
      const healthCell = el("td", {}, MW.healthBadge(m.health));
      if (m.reasons.length) healthCell.title = m.reasons.join("\n");
      return el("tr", { dataset: { model: m.model, health: m.health } },
        healthCell,
        el("td", { class: "model", dataset: { field: "model" } }, modelLink(m.model), m.kind ? el("span", { class: "kind" }, m.kind) : null),
        el("td", { class: "versions" }, m.versions.join(", ")),
        el("td", { class: "num", dataset: { field: "requests" } }, MW.count(m.requests)),
        el("td", { class: "num", dataset: { field: "requests_per_second" } }, MW.rate(m.requests_per_second)),
        el("td", { class: "num" + (m.error_rate > 0.01 ? " bad" : ""), dataset: { field: "error_rate" } }, MW.percent(m.error_rate)),
        el("td", { class: "num", dataset: { field: "latency_p99" } }, MW.latency(m.latency_p99_seconds)),
        el("td", { class: "num", dataset: { field: "accuracy" } }, MW.percent(m.accuracy)),
        el("td", { class: "num", dataset: { field: "label_coverage" }, title: MW.count(m.sample_size) + " labels" }, MW.percent(m.label_coverage)),
        budgetCell,
        el("td", { class: "alert-names", dataset: { field: "alerts" } },
          firing.map((name) => el("span", { class: "chip firing" }, name)),
          pending.map((name) => el("span", { class: "chip pending" }, name))));
    });
    replace(document.querySelector("#models tbody"), rows);
    document.getElementById("no-models").hidden = models.length !== 0;
  }

  async function refresh() {
    const span = MW.currentWindow();
    const answer = await MW.getJson("/v1/dashboard/overview?window=" + encodeURIComponent(span));
    if (!answer.ok) {
      MW.banner("Cannot read /v1/dashboard/overview: " + (answer.error || "HTTP " + answer.status));
      return false;
    }
    MW.banner(null);
    last = answer.body;
    render(last);
    return true;
  }

  const run = MW.loop(refresh);
  MW.windowSelector(() => run());
  document.getElementById("filter").addEventListener("input", () => {
    if (last) render(last);
  });
})();
