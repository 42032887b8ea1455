#!/usr/bin/env python3
"""Oracle for drift scores.

Generates a deterministic dataset (a baseline day and a current day for two
models) and computes every expected drift figure with scipy and numpy. The
output goes to `drift/` next to this script and is committed;
`crates/cli/tests/drift.rs` posts the events to the real binary and compares
its `/v1/models/{m}/drift` answers with `drift/expected.json`.

Regenerate (see drift/README.md):

    python3 -m venv target/oracle-venv
    target/oracle-venv/bin/pip install -r crates/cli/tests/oracle/requirements.txt
    target/oracle-venv/bin/python crates/cli/tests/oracle/generate_drift.py

What is exact and what is not:
- chi-square (scipy.stats.chisquare with the baseline's shares scaled to the
  window, as Evidently calls it), Jensen-Shannon
  (scipy.spatial.distance.jensenshannon) and PSI (numpy) on categories are
  exact. On numbers, PSI and Jensen-Shannon use modelwatch's documented
  binning (decile groups of 0.2% log bins), replicated below, and are exact
  for it; chi-square on numbers counts each bin (each distinct value, for
  the few-valued features it is meant for).
- KS (scipy.stats.ks_2samp) and the normed Wasserstein distance
  (scipy.stats.wasserstein_distance / max(np.std(reference), 0.001)) are
  computed here on the raw values; modelwatch computes them on its bins and
  reports an error bound, which the test checks.
"""

from __future__ import annotations

import bisect
import gzip
import json
import math
import os
import sys

import numpy as np
import scipy
from scipy import stats
from scipy.spatial.distance import jensenshannon

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "drift")

# modelwatch's bins: bin i of a positive magnitude holds (1.002^(i-1), 1.002^i].
LN_BIN_GROWTH = math.log(1.002)
SIGN_OFFSET = 1 << 32
PSI_GROUPS = 10
PSI_EMPTY_SHARE = 0.0001

T0 = 1790812800  # 2026-10-01T00:00:00Z
DAY = 86400


def bin_key(x: float) -> int:
    if x > 0:
        return SIGN_OFFSET + math.ceil(math.log(x) / LN_BIN_GROWTH)
    if x < 0:
        return -(SIGN_OFFSET + math.ceil(math.log(-x) / LN_BIN_GROWTH))
    return 0


def decile_groups(reference, current):
    ref_keys = [bin_key(x) for x in reference]
    cur_keys = [bin_key(x) for x in current]
    keys, counts = np.unique(np.array(ref_keys, dtype=np.int64), return_counts=True)
    total = int(counts.sum())
    edges = []
    cumulative = 0
    following = 1
    for key, count in zip(keys.tolist(), counts.tolist()):
        cumulative += count
        while following < PSI_GROUPS and cumulative >= following * total / PSI_GROUPS:
            if not edges or edges[-1] != key:
                edges.append(key)
            following += 1
    groups = len(edges) + 1
    ref_counts = np.zeros(groups)
    cur_counts = np.zeros(groups)
    for key in ref_keys:
        ref_counts[bisect.bisect_left(edges, key)] += 1
    for key in cur_keys:
        cur_counts[bisect.bisect_left(edges, key)] += 1
    return ref_counts, cur_counts


def psi_of(ref_counts, cur_counts) -> float:
    r = ref_counts / ref_counts.sum()
    c = cur_counts / cur_counts.sum()
    r = np.where(r == 0, PSI_EMPTY_SHARE, r)
    c = np.where(c == 0, PSI_EMPTY_SHARE, c)
    return float(np.sum((r - c) * np.log(r / c)))


def category_counts(reference, current):
    keys = sorted(set(reference) | set(current))
    ref = np.array([reference.count(k) for k in keys], dtype=float)
    cur = np.array([current.count(k) for k in keys], dtype=float)
    return ref, cur


def chi_square(ref_counts, cur_counts):
    expected = ref_counts * (cur_counts.sum() / ref_counts.sum())
    statistic, p_value = stats.chisquare(cur_counts, expected)
    return float(statistic), float(p_value)


def expect(method, reference, current, numeric):
    """The expected figures of `method` on raw `reference` and `current`."""
    if method == "ks":
        result = stats.ks_2samp(reference, current)
        return {"statistic": float(result.statistic), "p_value": float(result.pvalue)}
    if method == "wasserstein":
        norm = max(float(np.std(reference)), 0.001)
        return {"score": float(stats.wasserstein_distance(reference, current)) / norm}
    if numeric:
        if method == "chi_square":
            ref, cur = category_counts([bin_key(x) for x in reference], [bin_key(x) for x in current])
        else:
            ref, cur = decile_groups(reference, current)
    else:
        ref, cur = category_counts(list(reference), list(current))
    if method == "chi_square":
        statistic, p_value = chi_square(ref, cur)
        return {"statistic": statistic, "p_value": p_value, "score": p_value}
    if method == "psi":
        return {"score": psi_of(ref, cur)}
    if method == "jensen_shannon":
        return {"score": float(jensenshannon(ref, cur))}
    raise ValueError(method)


def default_method(reference, current, numeric):
    """Evidently's choice (SPEC section 4), with distinct values counted by bin."""
    if len(reference) <= 1000:
        if numeric and len({bin_key(x) for x in list(reference) + list(current)}) > 5:
            return "ks"
        return "chi_square"
    return "wasserstein" if numeric else "jensen_shannon"


def events(model, rows, start, prefix):
    """Rows spread evenly over one day from `start`."""
    out = []
    for index, row in enumerate(rows):
        event = {
            "prediction_id": f"{prefix}-{index}",
            "model": model,
            "version": "v1",
            "timestamp": start + (index + 0.5) * DAY / len(rows),
            "latency_seconds": 0.01,
            "status": "ok",
            "prediction": row["class"],
            "confidence": row["confidence"],
            "features": row["features"],
        }
        out.append(event)
    return out


def big_model(rng):
    """4000 baseline rows against 4000 drifted rows: the large-reference defaults."""
    def rows(n, drifted):
        amount = rng.lognormal(4.0 + (0.15 if drifted else 0.0), 0.8, n).round(2)
        balance = rng.normal(-50.0 + (40.0 if drifted else 0.0), 200.0, n).round(2)
        balance[rng.random(n) < 0.05] = 0.0
        age = rng.integers(18, 91, n).astype(float)
        tier = rng.choice([1.0, 2.0, 3.0], n, p=[0.5, 0.3, 0.2] if not drifted else [0.4, 0.35, 0.25])
        country = rng.choice(["DE", "FR", "US", "BR"], n,
                             p=[0.4, 0.3, 0.2, 0.1] if not drifted else [0.3, 0.3, 0.25, 0.15])
        classes = rng.choice(["0", "1", "2"], n, p=[0.6, 0.3, 0.1] if not drifted else [0.55, 0.3, 0.15])
        confidence = (0.5 + 0.5 * rng.beta(5.0 if not drifted else 4.0, 2.0, n)).round(4)
        out = []
        for i in range(n):
            a = float(amount[i])
            out.append({
                "class": str(classes[i]),
                "confidence": float(confidence[i]),
                "features": {
                    "amount": a, "amount_ks": a, "amount_psi": a, "amount_js": a,
                    "balance": float(balance[i]), "balance_psi": float(balance[i]),
                    "age": float(age[i]),
                    "tier": float(tier[i]), "tier_chi": float(tier[i]),
                    "country": str(country[i]), "country_chi": str(country[i]), "country_psi": str(country[i]),
                },
            })
        return out
    return rows(4000, False), rows(4000, True)


BIG_METHODS = {
    "amount_ks": "ks", "amount_psi": "psi", "amount_js": "jensen_shannon",
    "balance_psi": "psi", "tier_chi": "chi_square",
    "country_chi": "chi_square", "country_psi": "psi",
}


def small_model(rng):
    """800 baseline rows against 600: the small-reference defaults (KS, chi-square)."""
    def rows(n, shift):
        x = rng.normal(10.0 + shift, 2.0, n).round(3)
        level = rng.choice([0.0, 1.0, 2.0], n, p=[0.5, 0.3, 0.2] if shift == 0 else [0.46, 0.3, 0.24])
        color = rng.choice(["red", "green", "blue"], n, p=[0.5, 0.3, 0.2] if shift == 0 else [0.47, 0.3, 0.23])
        classes = rng.choice(["no", "yes"], n, p=[0.7, 0.3] if shift == 0 else [0.66, 0.34])
        confidence = (0.5 + 0.5 * rng.random(n)).round(4)
        return [{
            "class": str(classes[i]),
            "confidence": float(confidence[i]),
            "features": {"x": float(x[i]), "level": float(level[i]), "color": str(color[i])},
        } for i in range(n)]
    return rows(800, 0.0), rows(600, 0.25)


def expected_for(model, reference_rows, current_rows, methods):
    features = {}
    names = sorted(reference_rows[0]["features"])
    for name in names:
        reference = [row["features"][name] for row in reference_rows]
        current = [row["features"][name] for row in current_rows]
        numeric = isinstance(reference[0], float)
        method = methods.get(name) or default_method(reference, current, numeric)
        features[name] = {"method": method, **expect(method, np.array(reference) if numeric else reference,
                                                      np.array(current) if numeric else current, numeric)}
    predictions = {}
    reference = [row["class"] for row in reference_rows]
    current = [row["class"] for row in current_rows]
    method = default_method(reference, current, False)
    predictions["class"] = {"method": method, **expect(method, reference, current, False)}
    reference = np.array([row["confidence"] for row in reference_rows])
    current = np.array([row["confidence"] for row in current_rows])
    method = default_method(reference, current, True)
    predictions["confidence"] = {"method": method, **expect(method, reference, current, True)}
    return {"model": model, "reference_rows": len(reference_rows), "current_rows": len(current_rows),
            "features": features, "predictions": predictions}


def main() -> int:
    rng = np.random.default_rng(20261128)
    os.makedirs(OUT, exist_ok=True)
    big_reference, big_current = big_model(rng)
    small_reference, small_current = small_model(rng)
    all_events = (events("drift_big", big_reference, T0, "big-ref") + events("drift_big", big_current, T0 + DAY, "big-cur")
                  + events("drift_small", small_reference, T0, "small-ref")
                  + events("drift_small", small_current, T0 + DAY, "small-cur"))
    # Gzipped (mtime 0, so that regenerating gives the same bytes).
    with open(os.path.join(OUT, "events.ndjson.gz"), "wb") as raw:
        with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as out:
            for event in all_events:
                out.write((json.dumps(event, separators=(",", ":")) + "\n").encode())
    expected = {
        "generator": f"generate_drift.py with numpy {np.__version__}, scipy {scipy.__version__}",
        "baseline_from": T0, "baseline_to": T0 + DAY, "end": T0 + 2 * DAY, "window": "1d",
        "config_methods": BIG_METHODS,
        "models": [
            expected_for("drift_big", big_reference, big_current, BIG_METHODS),
            expected_for("drift_small", small_reference, small_current, {}),
        ],
    }
    with open(os.path.join(OUT, "expected.json"), "w") as out:
        json.dump(expected, out, indent=1, sort_keys=True)
        out.write("\n")
    print(f"wrote {len(all_events)} events and expected.json to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
