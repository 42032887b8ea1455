// modelwatch dashboard: what both pages share (fetching, formatting, the
// window selector, the refresh loop). Plain browser JavaScript, no build step.
"use strict";

const MW = (() => {
  const WINDOWS = ["1h", "24h", "7d", "30d"];
  const REFRESH_MS = 10000;
  const NONE = "\u2013"; // shown for a figure that does not exist (no data)

  /** GETs JSON; never throws: {ok, status, body} or {ok: false, error}. */
  async function getJson(path) {
    try {
      const response = await fetch(path, { headers: { Accept: "application/json" } });
      let body = null;
      try {
        body = await response.json();
      } catch (_) {
        body = null;
      }
      return { ok: response.ok, status: response.status, body };
    } catch (error) {
      return { ok: false, status: 0, body: null, error: String(error) };
    }
  }

  function isNumber(x) {
    return typeof x === "number" && Number.isFinite(x);
  }

  /** 12345 -> "12,345". */
  function count(n) {
    if (!isNumber(n)) return NONE;
    return String(Math.round(n)).replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  }

  /** 0.753 -> "75.3%"; under 1% two decimals (0.0042 -> "0.42%"). */
  function percent(x) {
    if (!isNumber(x)) return NONE;
    const digits = x !== 0 && Math.abs(x) < 0.01 ? 2 : 1;
    return (x * 100).toFixed(digits) + "%";
  }

  /** Requests per second ("<0.01" rather than a misleading 0.00). */
  function rate(x) {
    if (!isNumber(x)) return NONE;
    if (x > 0 && x < 0.01) return "<0.01";
    return x >= 100 ? x.toFixed(0) : x.toFixed(2);
  }

  /** Seconds -> "12.3 ms" or "1.25 s". */
  function latency(seconds) {
    if (!isNumber(seconds)) return NONE;
    return seconds < 1 ? (seconds * 1000).toFixed(1) + " ms" : seconds.toFixed(2) + " s";
  }

  /** A plain number with up to 3 decimals (burn rates, scores). */
  function number(x) {
    if (!isNumber(x)) return NONE;
    return Math.abs(x) >= 100 ? x.toFixed(0) : x.toFixed(Math.abs(x) >= 10 ? 1 : 3);
  }

  /** RFC 3339 -> local "YYYY-MM-DD HH:MM:SS". */
  function time(text) {
    if (!text) return NONE;
    const date = new Date(text);
    if (Number.isNaN(date.getTime())) return text;
    const pad = (n) => String(n).padStart(2, "0");
    return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} ` +
      `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
  }

  /** Builds an element: el("td", {class: "num", dataset: {field: "x"}}, "text", child…). */
  function el(tag, attributes, ...children) {
    const element = document.createElement(tag);
    for (const [key, value] of Object.entries(attributes || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "dataset") Object.assign(element.dataset, value);
      else if (key === "class") element.className = value;
      else if (key === "text") element.textContent = value;
      else element.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      element.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return element;
  }

  function replace(container, ...children) {
    container.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined));
  }

  /** The window in the URL (?window=24h), or 1h. */
  function currentWindow() {
    const asked = new URLSearchParams(location.search).get("window");
    return WINDOWS.includes(asked) ? asked : WINDOWS[0];
  }

  function setQuery(key, value) {
    const url = new URL(location.href);
    if (value) url.searchParams.set(key, value);
    else url.searchParams.delete(key);
    history.replaceState(null, "", url);
  }

  /** Fills #windows with the window buttons; onChange(window) on a click. */
  function windowSelector(onChange) {
    const container = document.getElementById("windows");
    const render = () => {
      const active = currentWindow();
      replace(container, WINDOWS.map((w) => {
        const button = el("button", { type: "button", class: w === active ? "active" : "", "aria-pressed": String(w === active) }, w);
        button.addEventListener("click", () => {
          setQuery("window", w);
          render();
          onChange(w);
        });
        return button;
      }));
    };
    render();
  }

  function banner(message) {
    const element = document.getElementById("banner");
    element.hidden = !message;
    element.textContent = message || "";
  }

  /**
   * Runs `refresh` now and every REFRESH_MS after the previous run ended;
   * `refresh` returns whether it succeeded. The body's data-state becomes
   * "ready" after the first success (and data-refreshes counts them).
   */
  function loop(refresh) {
    let timer = null;
    let running = false;
    let again = false;
    const run = async () => {
      if (running) {
        again = true;
        return;
      }
      running = true;
      clearTimeout(timer);
      let ok = false;
      try {
        ok = await refresh();
      } catch (error) {
        banner("The dashboard failed to render: " + error);
      }
      running = false;
      const updated = document.getElementById("updated");
      if (ok) {
        updated.textContent = "updated " + time(new Date().toISOString()).slice(11) + " \u00b7 every " + REFRESH_MS / 1000 + " s";
        document.body.dataset.refreshes = String(Number(document.body.dataset.refreshes || 0) + 1);
        document.body.dataset.state = "ready";
      }
      if (again) {
        again = false;
        run();
      } else {
        timer = setTimeout(run, REFRESH_MS);
      }
    };
    run();
    return run;
  }

  function healthBadge(health) {
    return el("span", { class: "health " + health, title: health }, health);
  }

  function severityBadge(severity, state) {
    return el("span", { class: "sev " + (state === "pending" ? "pending" : severity || "none") }, state === "pending" ? "pending" : severity || "alert");
  }

  return { WINDOWS, NONE, getJson, count, percent, rate, latency, number, time, el, replace, currentWindow, setQuery, windowSelector, banner, loop, healthBadge, severityBadge, isNumber };
})();
