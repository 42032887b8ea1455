#!/usr/bin/env python3
"""Oracle for model-quality figures (ground truth joined on prediction_id).

Generates a deterministic dataset of predictions and delayed labels for two
models, simulates the server's label bookkeeping (held, duplicate, corrected,
orphan) and computes every expected figure with scikit-learn. The output goes
to `quality/` next to this script and is committed; `crates/cli/tests/quality.rs`
posts the NDJSON phases to the real binary and compares its answers with
`quality/expected.json`.

Regenerate (see quality/README.md):

    python3 -m venv target/oracle-venv
    target/oracle-venv/bin/pip install -r crates/cli/tests/oracle/requirements.txt
    target/oracle-venv/bin/python crates/cli/tests/oracle/generate_quality.py

The output is a pure function of SEED and the pinned library versions: running
the script twice gives byte-identical files.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import sklearn
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    mean_absolute_error,
    mean_absolute_percentage_error,
    mean_squared_error,
    precision_recall_fscore_support,
)

SEED = 20261101
OUT = Path(__file__).resolve().parent / "quality"
CONFIG_YAML = "labels:\n  early_label_ttl: 5s\n"

BASE = datetime(2026, 11, 1, tzinfo=timezone.utc)
BASE_MS = int(BASE.timestamp()) * 1000
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
SPAN_DAYS = 10

FD = "fraud_detector"
PM = "price_model"
FD_CLASSES = ["legit", "review", "fraud"]
# The labelling team also uses "chargeback", a class the model never predicts:
# the class list of a window is the union of predicted and actual classes.
CHARGEBACK = "chargeback"

rng = np.random.default_rng(SEED)


# ---------------------------------------------------------------------------
# Time helpers
# ---------------------------------------------------------------------------


def iso(ms: int, offset_minutes: int = 0) -> str:
    """RFC 3339 with a `Z` (or the given offset); milliseconds only when not 0."""
    tz = timezone(timedelta(minutes=offset_minutes))
    moment = datetime.fromtimestamp(ms // 1000, tz=timezone.utc).astimezone(tz)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if ms % 1000:
        text += f".{ms % 1000:03d}"
    if offset_minutes == 0:
        return text + "Z"
    sign = "+" if offset_minutes > 0 else "-"
    hours, minutes = divmod(abs(offset_minutes), 60)
    return f"{text}{sign}{hours:02d}:{minutes:02d}"


def at(day: int, hour: int = 0, minute: int = 0, second: int = 0) -> int:
    return BASE_MS + day * DAY_MS + hour * HOUR_MS + (minute * 60 + second) * 1000


def wire_timestamp(ms: int):
    """Mixes the accepted spellings: RFC 3339 (Z, offsets, milliseconds) and
    Unix seconds (integers, or fractions that are exact in binary)."""
    choice = rng.random()
    if choice < 0.45 and ms % 250 == 0:
        seconds = ms / 1000
        return int(seconds) if ms % 1000 == 0 else seconds
    if choice < 0.50:
        return iso(ms, int(rng.choice([60, -300, 330])))
    return iso(ms)


def window_ms(window: str) -> int:
    unit = window[-1]
    value = int(window[:-1])
    return value * {"h": HOUR_MS, "d": DAY_MS}[unit]


# ---------------------------------------------------------------------------
# Queries (defined first: the data gets events exactly on their bounds)
# ---------------------------------------------------------------------------

QUERIES = [
    # fraud_detector
    dict(model=FD, window="1h", end=at(2, 15)),
    dict(model=FD, window="1h", end=at(4, 11), version="v1"),
    dict(model=FD, window="1h", end=at(8, 20), segment="channel:web"),
    dict(model=FD, window="1d", end=at(3)),
    dict(model=FD, window="1d", end=at(5, 12), segment="channel:app"),
    dict(model=FD, window="3d", end=at(5, 12)),
    dict(model=FD, window="3d", end=at(6, 18), segment="region:eu"),
    dict(model=FD, window="7d", end=at(8)),
    dict(model=FD, window="7d", end=at(8), version="v1"),
    dict(model=FD, window="7d", end=at(8), version="v2"),
    dict(model=FD, window="7d", end=at(9, 6), version="v2", segment="region:apac"),
    dict(model=FD, window="10d", end=at(10)),
    dict(model=FD, window="10d", end=at(10), segment="region:us"),
    dict(model=FD, window="10d", end=at(11), version="v1", segment="channel:app"),
    # the outage: no event at all in this hour
    dict(model=FD, window="1h", end=at(6, 4)),
    # recent predictions, none labelled yet (no events forced onto its bounds)
    dict(model=FD, window="1h", end=at(9, 21), bounds=False),
    # before the first event
    dict(model=FD, window="1d", end=at(0)),
    # price_model
    dict(model=PM, window="1h", end=at(3, 14)),
    dict(model=PM, window="1d", end=at(4)),
    dict(model=PM, window="3d", end=at(7, 12), version="v2"),
    dict(model=PM, window="3d", end=at(7, 12), version="v1"),
    dict(model=PM, window="7d", end=at(9)),
    dict(model=PM, window="10d", end=at(10)),
    dict(model=PM, window="10d", end=at(10), segment="region:eu"),
    dict(model=PM, window="7d", end=at(10), version="v2", segment="tier:premium"),
    # only the event forced onto its start
    dict(model=PM, window="1d", end=at(11)),
    dict(model=PM, window="1h", end=at(9, 15)),
    # before the first event
    dict(model=PM, window="1d", end=at(0)),
]
# A few ends are given as Unix seconds, the other accepted spelling.
UNIX_END_QUERIES = {3, 11, 19, 22}


# ---------------------------------------------------------------------------
# Predictions
# ---------------------------------------------------------------------------


@dataclass
class Pred:
    id: str
    model: str
    version: str
    ts_ms: int
    status: str = "ok"
    prediction: object = None  # class string or float; None for error/timeout
    truth: object = None  # the actual value the labellers will report
    line: dict = field(default_factory=dict)
    segments: dict = field(default_factory=dict)
    labelable: bool = True
    forced_label: bool = False


def diurnal_weights() -> np.ndarray:
    hours = np.arange(24)
    return 0.35 + np.exp(-((hours - 14) ** 2) / 30.0) * 1.6


def random_times(count: int, day_weights: list[float], first_day: int = 0) -> list[int]:
    day_p = np.array(day_weights) / np.sum(day_weights)
    hour_p = diurnal_weights() / np.sum(diurnal_weights())
    times = []
    for _ in range(count):
        day = first_day + int(rng.choice(len(day_p), p=day_p))
        hour = int(rng.choice(24, p=hour_p))
        kind = rng.random()
        if kind < 0.03:  # exactly on the hour
            minute, second, milli = 0, 0, 0
        elif kind < 0.12:  # exactly on a minute
            minute, second, milli = int(rng.integers(60)), 0, 0
        else:
            minute, second = int(rng.integers(60)), int(rng.integers(60))
            milli = int(rng.choice([0, 0, 0, 250, 500, 750, int(rng.integers(1000))]))
        times.append(at(day, hour, minute, second) + milli)
    return times


def in_outage(ms: int) -> bool:
    return at(6, 2) <= ms < at(6, 5)


def version_for(model: str, ms: int) -> str:
    """v2 rolls out gradually from day 4 (fraud) / day 5 (price)."""
    start = at(4) if model == FD else at(5)
    if ms < start:
        return "v1"
    share_v2 = min(0.8, 0.3 + 0.1 * (ms - start) / DAY_MS)
    return "v2" if rng.random() < share_v2 else "v1"


def make_fraud(pid: str, ms: int, version: str, force_ok: bool = False) -> Pred:
    region = str(rng.choice(["eu", "us", "apac"], p=[0.45, 0.35, 0.2]))
    channel = str(rng.choice(["web", "app"], p=[0.55, 0.45]))
    segments = {"region": region}
    if rng.random() < 0.95:  # a few events lack the channel segment
        segments["channel"] = channel
    features = {
        "amount": round(float(rng.lognormal(3.5, 1.1)), 2),
        "account_age_days": int(rng.integers(0, 3650)),
        "tx_last_24h": int(rng.poisson(2.5)),
        "distance_km": round(float(rng.exponential(40.0)), 3),
        "hour_of_day": int((ms // HOUR_MS) % 24),
        "device": str(rng.choice(["ios", "android", "desktop"])),
        "country": str(rng.choice(["DE", "FR", "US", "IN", "JP", "BR"])),
        "new_device": bool(rng.random() < 0.15),
    }
    if rng.random() < 0.02:
        features["distance_km"] = None  # missing value
    latency = round(float(rng.lognormal(-4.0, 0.6)), 5)
    status = "ok"
    if not force_ok:
        roll = rng.random()
        if roll < 0.03:
            status = "error"
        elif roll < 0.045:
            status = "timeout"
    pred = Pred(pid, FD, version, ms, status=status, segments=segments)
    line = {"prediction_id": pid, "model": FD, "version": version, "timestamp": wire_timestamp(ms)}
    if status == "ok":
        truth = str(rng.choice(FD_CLASSES, p=[0.82, 0.11, 0.07]))
        accuracy = 0.92 if version == "v1" else 0.72
        if rng.random() < accuracy:
            predicted = truth
        else:
            predicted = str(rng.choice([c for c in FD_CLASSES if c != truth]))
        if truth == "fraud" and rng.random() < 0.15:
            truth = CHARGEBACK
        top = round(float(rng.uniform(0.51, 0.99)), 4)
        rest = 1.0 - top
        split = float(rng.uniform(0.0, 1.0))
        others = [c for c in FD_CLASSES if c != predicted]
        probabilities = {predicted: top, others[0]: round(rest * split, 4), others[1]: round(rest * (1 - split), 4)}
        probabilities = {c: probabilities[c] for c in FD_CLASSES}
        pred.prediction, pred.truth = predicted, truth
        line.update(latency_seconds=latency, status="ok", prediction=predicted, probabilities=probabilities)
    elif status == "error":
        line.update(
            latency_seconds=latency,
            status="error",
            error_type=str(rng.choice(["FeatureStoreTimeout", "ValueError"])),
        )
        pred.labelable = False
    else:
        line.update(latency_seconds=round(latency + 1.0, 5), status="timeout")
        pred.labelable = False
    line.update(features=features, segments=segments)
    pred.line = line
    return pred


def make_price(pid: str, ms: int, version: str, force_ok: bool = False) -> Pred:
    region = str(rng.choice(["eu", "us"], p=[0.6, 0.4]))
    tier = str(rng.choice(["basic", "premium"], p=[0.7, 0.3]))
    segments = {"region": region, "tier": tier}
    size = round(float(rng.uniform(20, 200)), 1)
    features = {
        "size_m2": size,
        "rooms": int(rng.integers(1, 7)),
        "age_years": int(rng.integers(0, 80)),
        "city": str(rng.choice(["berlin", "paris", "nyc", "austin"])),
        "distance_center_km": round(float(rng.exponential(6.0)), 2),
    }
    latency = round(float(rng.lognormal(-3.2, 0.5)), 5)
    status = "ok"
    if not force_ok and rng.random() < 0.025:
        status = "error"
    pred = Pred(pid, PM, version, ms, status=status, segments=segments)
    line = {"prediction_id": pid, "model": PM, "version": version, "timestamp": wire_timestamp(ms)}
    if status == "ok":
        roll = rng.random()
        if roll < 0.015:
            # near-zero true values (a giveaway listing, a data-entry slip)
            truth = float(rng.choice([0.004, 0.02, 0.15, 0.5]))
            predicted = round(truth + float(rng.normal(0, 0.3)), 3)
        else:
            truth = round(size * float(rng.uniform(2.5, 6.0)) * (1.6 if tier == "premium" else 1.0), 2)
            noise = 0.08 if version == "v1" else 0.15
            bias = 1.0 if version == "v1" else 1.06
            predicted = round(truth * bias * (1 + float(rng.normal(0, noise))), 2)
        pred.prediction, pred.truth = predicted, truth
        line.update(latency_seconds=latency, status="ok", prediction=predicted)
    else:
        line.update(latency_seconds=latency, status="error", error_type="OutOfRange")
        pred.labelable = False
    line.update(features=features, segments=segments)
    pred.line = line
    return pred


def build_predictions() -> list[Pred]:
    fd_times = [t for t in random_times(2250, [0.9, 1.0, 1.1, 1.0, 1.3, 1.4, 0.8, 1.2, 1.5, 1.1]) if not in_outage(t)]
    pm_times = random_times(1100, [0.6, 0.8, 1.0, 1.0, 1.1, 1.2, 1.0, 1.0, 1.3, 1.1])
    # Events exactly on every query bound: the start is in the window, the end is not.
    boundary = {FD: [], PM: []}
    for query in QUERIES:
        if not query.get("bounds", True):
            continue
        end = query["end"]
        start = end - window_ms(query["window"])
        for bound in (start, end):
            if BASE_MS <= bound < BASE_MS + SPAN_DAYS * DAY_MS + DAY_MS and not in_outage(bound):
                boundary[query["model"]].append(bound)
    preds: list[Pred] = []
    # Ids are assigned in time order, with the boundary events mixed in.
    for model, times, maker, prefix in ((FD, fd_times, make_fraud, "fd"), (PM, pm_times, make_price, "pm")):
        tagged = [(t, False) for t in times] + [(t, True) for t in sorted(set(boundary[model]))]
        tagged.sort()
        for index, (ms, forced) in enumerate(tagged):
            pid = f"{prefix}-{index + 1:06d}"
            pred = maker(pid, ms, version_for(model, ms), force_ok=forced)
            pred.forced_label = forced
            preds.append(pred)
    # Exactly one true value of 0 (sklearn's MAPE divides by eps there; so
    # does the server), on day 8 so that most windows are not dominated by it.
    zero = next(p for p in preds if p.model == PM and p.status == "ok" and at(8, 10) <= p.ts_ms and not p.forced_label)
    zero.truth, zero.prediction, zero.forced_label = 0.0, 0.35, True
    zero.line["prediction"] = 0.35
    return preds


# ---------------------------------------------------------------------------
# Labels
# ---------------------------------------------------------------------------


def business_for(pred: Pred):
    """Business outcomes on some labels: revenue and conversion for fraud, margin for price."""
    roll = rng.random()
    if pred.model == FD:
        if roll < 0.45:
            converted = int(pred.truth == "legit" and rng.random() < 0.8)
            return {"revenue": round(float(rng.uniform(5, 400)) * converted, 2), "converted": converted}
        if roll < 0.55:
            return {"revenue": round(float(rng.uniform(-50, 300)), 2)}
        return None
    if roll < 0.3:
        return {"margin": round(float(pred.truth) * float(rng.uniform(0.01, 0.05)), 2)}
    return None


def label_line(pid: str, actual, ts_ms, business) -> dict:
    line = {"prediction_id": pid, "actual": actual}
    if ts_ms is not None:
        line["timestamp"] = wire_timestamp(ts_ms)
    if business is not None:
        line["business"] = business
    return line


def different_actual(pred: Pred, current):
    if pred.model == FD:
        choices = [c for c in FD_CLASSES + [CHARGEBACK] if c != current]
        return str(rng.choice(choices))
    return round(float(current) * float(rng.uniform(0.7, 1.3)) + 1.0, 2)


def different_business(pred: Pred, current):
    if pred.model == FD:
        base = dict(current) if current else {"revenue": 0.0, "converted": 0}
        base["revenue"] = round(float(base.get("revenue", 0.0)) + float(rng.uniform(1, 50)), 2)
        return base
    return {"margin": round(float(rng.uniform(1, 40)), 2)}


@dataclass
class LabelState:
    """The server's bookkeeping, simulated line by line."""

    known: set  # prediction ids the server has seen
    stored: dict = field(default_factory=dict)  # id -> (actual, business) of joined labels
    held: dict = field(default_factory=dict)  # id -> (actual, business) awaiting a prediction
    totals: dict = field(default_factory=lambda: {"duplicates": 0, "corrected": 0})

    def post(self, lines: list[dict]) -> dict:
        answer = {"accepted": 0, "duplicates": 0, "corrected": 0, "held": 0}
        for line in lines:
            pid = line["prediction_id"]
            value = (line["actual"], json.dumps(line.get("business"), sort_keys=True))
            answer["accepted"] += 1
            if pid not in self.known:
                # The dataset never resends a held label: what a resend of a
                # held label should count as is not part of the contract.
                assert pid not in self.held, pid
                self.held[pid] = value
                answer["held"] += 1
            elif pid not in self.stored:
                self.stored[pid] = value
            elif self.stored[pid] == value:
                answer["duplicates"] += 1
            else:
                self.stored[pid] = value
                answer["corrected"] += 1
        self.totals["duplicates"] += answer["duplicates"]
        self.totals["corrected"] += answer["corrected"]
        return answer

    def predictions_arrive(self, ids: set) -> None:
        self.known |= ids
        for pid in list(self.held):
            if pid in ids:
                self.stored[pid] = self.held.pop(pid)


def build_labels(preds: list[Pred]):
    by_id = {p.id: p for p in preds}
    last_ms = BASE_MS + SPAN_DAYS * DAY_MS
    labelled: list[Pred] = []
    for pred in preds:
        if not pred.labelable:
            continue
        if pred.forced_label:
            labelled.append(pred)
            continue
        # Recent predictions are less likely to be labelled yet; the last
        # twelve hours of fraud predictions have no label at all.
        age_days = (last_ms - pred.ts_ms) / DAY_MS
        if pred.model == FD and pred.ts_ms >= at(9, 12):
            continue
        probability = 0.78 if age_days > 2 else 0.55
        if rng.random() < probability:
            labelled.append(pred)

    order = rng.permutation(len(labelled))
    early_ids = {labelled[i].id for i in order[: int(0.06 * len(labelled))] if not labelled[i].forced_label}

    first_value = {}  # id -> the label line first sent
    early_lines, main_lines = [], []
    for pred in labelled:
        if pred.id in early_ids:
            # Sent before the prediction was logged; stamped a few seconds after it.
            ts = pred.ts_ms + int(rng.integers(1, 120)) * 1000
        else:
            delay = float(rng.choice([rng.uniform(60, 3600), rng.uniform(3600, 86400), rng.uniform(86400, 6 * 86400)]))
            ts = pred.ts_ms + int(delay) * 1000
        ts = None if rng.random() < 0.08 else ts  # the timestamp is optional
        line = label_line(pred.id, pred.truth, ts, business_for(pred))
        first_value[pred.id] = line
        (early_lines if pred.id in early_ids else main_lines).append((ts if ts is not None else pred.ts_ms, line))
    early_lines = [line for _, line in sorted(early_lines, key=lambda pair: (pair[0], pair[1]["prediction_id"]))]
    main_lines = [line for _, line in sorted(main_lines, key=lambda pair: (pair[0], pair[1]["prediction_id"]))]

    # Phase 3 also resends some of its own lines (a retrying client) and
    # carries labels for ids that were never predicted (orphans).
    main_ids = [line["prediction_id"] for line in main_lines]
    resend = set(rng.choice(main_ids, size=70, replace=False).tolist())
    phase3 = []
    for line in main_lines:
        phase3.append(line)
        if line["prediction_id"] in resend:
            phase3.append(dict(line))
    # Move each resend to a later random position (still after its original).
    for i in range(len(phase3) - 1, 0, -1):
        if phase3[i] is not phase3[i - 1] and phase3[i] == phase3[i - 1] and rng.random() < 0.7:
            duplicate = phase3.pop(i)
            phase3.insert(int(rng.integers(i, len(phase3) + 1)), duplicate)
    orphan_lines = []
    for k in range(45):
        if k % 3 == 2:
            orphan_lines.append(
                label_line(f"pm-9{k:05d}", round(float(rng.uniform(50, 900)), 2), at(int(rng.integers(1, 10)), 9), None)
            )
        else:
            business = {"revenue": 12.5, "converted": 1} if k % 5 == 0 else None
            orphan_lines.append(
                label_line(f"fd-9{k:05d}", str(rng.choice(FD_CLASSES)), at(int(rng.integers(1, 10)), 9), business)
            )
    for line in orphan_lines:
        phase3.insert(int(rng.integers(0, len(phase3) + 1)), line)

    # Phase 4: corrections, resends of earlier labels (early ones included),
    # resends of a corrected label's final value (duplicates) and of its old
    # value (a correction back), and second corrections.
    eligible = [line for line in main_lines if not by_id[line["prediction_id"]].forced_label]
    picks = rng.permutation(len(eligible))
    corrections_actual = [eligible[i] for i in picks[:70]]
    corrections_business = [eligible[i] for i in picks[70:95]]
    plain_resends = [eligible[i] for i in picks[95:130]]
    early_list = [first_value[i] for i in sorted(early_ids)]
    early_picks = rng.permutation(len(early_list))
    early_corrections = [early_list[i] for i in early_picks[:18]]
    early_resends = [early_list[i] for i in early_picks[18:40]]

    def corrected_line(original: dict, change_actual: bool) -> dict:
        pred = by_id[original["prediction_id"]]
        business = original.get("business")
        actual = original["actual"]
        if change_actual:
            actual = different_actual(pred, actual)
            roll = rng.random()
            if roll < 0.2:
                business = different_business(pred, business)
            elif roll < 0.25:
                business = None  # the correction carries no business values: they go
        else:
            business = different_business(pred, business)
        ts = pred.ts_ms + int(rng.integers(3, 9)) * DAY_MS
        return label_line(original["prediction_id"], actual, ts, business)

    phase4 = []
    final_correction = {}
    for original in corrections_actual:
        line = corrected_line(original, True)
        final_correction[original["prediction_id"]] = line
        phase4.append(line)
    for original in corrections_business:
        line = corrected_line(original, False)
        final_correction[original["prediction_id"]] = line
        phase4.append(line)
    for original in early_corrections:
        line = corrected_line(original, bool(rng.random() < 0.7))
        final_correction[original["prediction_id"]] = line
        phase4.append(line)
    phase4.extend(dict(line) for line in plain_resends)
    phase4.extend(dict(line) for line in early_resends)
    rng.shuffle(phase4)
    corrected_ids = sorted(final_correction)
    tail_picks = rng.permutation(len(corrected_ids))
    # resend of the final (corrected) value: a duplicate
    for i in tail_picks[:12]:
        phase4.append(dict(final_correction[corrected_ids[i]]))
    # resend of the value before the correction: a correction back
    for i in tail_picks[12:20]:
        phase4.append(dict(first_value[corrected_ids[i]]))
    # a second correction
    for i in tail_picks[20:26]:
        current = final_correction[corrected_ids[i]]
        phase4.append(corrected_line(current, True))

    return early_lines, phase3, phase4, orphan_lines


# ---------------------------------------------------------------------------
# Expected figures
# ---------------------------------------------------------------------------


def classification_figures(y_true: list[str], y_pred: list[str]) -> dict:
    if not y_true:
        return {
            "accuracy": None,
            "per_class": {},
            "macro": None,
            "weighted": None,
            "confusion_matrix": {"labels": [], "matrix": []},
        }
    labels = sorted(set(y_true) | set(y_pred))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, average=None, zero_division=0
    )
    per_class = {
        label: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, label in enumerate(labels)
    }
    averages = {}
    for average in ("macro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, labels=labels, average=average, zero_division=0)
        averages[average] = {"precision": float(p), "recall": float(r), "f1": float(f)}
    matrix = confusion_matrix(y_true, y_pred, labels=labels)
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "per_class": per_class,
        "macro": averages["macro"],
        "weighted": averages["weighted"],
        "confusion_matrix": {"labels": labels, "matrix": [[int(v) for v in row] for row in matrix]},
    }


def regression_figures(y_true: list[float], y_pred: list[float]):
    if not y_true:
        return None
    return {
        "mae": float(mean_absolute_error(y_true, y_pred)),
        "rmse": float(math.sqrt(mean_squared_error(y_true, y_pred))),
        "mape": float(mean_absolute_percentage_error(y_true, y_pred)),
    }


def expected_answer(frame: pd.DataFrame, query: dict) -> dict:
    end = query["end"]
    start = end - window_ms(query["window"])
    rows = frame[(frame.model == query["model"]) & (frame.ts_ms >= start) & (frame.ts_ms < end) & frame.scored]
    if "version" in query:
        rows = rows[rows.version == query["version"]]
    if "segment" in query:
        key, value = query["segment"].split(":", 1)
        rows = rows[rows.segments.map(lambda segments: segments.get(key) == value)]
    labelled = rows[rows.has_label]
    predictions, sample_size = len(rows), len(labelled)
    answer = {
        "model": query["model"],
        "window": query["window"],
        "end": iso(end),
        "version": query.get("version"),
        "segment": query.get("segment"),
        "sample_size": sample_size,
        "predictions": predictions,
        "label_coverage": sample_size / predictions if predictions else 0.0,
    }
    y_true, y_pred = list(labelled.actual), list(labelled.prediction)
    if query["model"] == FD:
        answer.update(classification_figures(y_true, y_pred))
    else:
        answer.update(
            accuracy=None,
            per_class={},
            macro=None,
            weighted=None,
            confusion_matrix=None,
            regression=regression_figures([float(v) for v in y_true], [float(v) for v in y_pred]),
        )
    names = sorted({name for business in labelled.business if business for name in business})
    if names:
        answer["business"] = {}
        for name in names:
            total = float(sum(float(business.get(name, 0.0)) if business else 0.0 for business in labelled.business))
            answer["business"][name] = {"sum": total, "per_prediction": total / sample_size}
    return answer


def write_ndjson(path: Path, lines: list[dict]) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as out:
        for line in lines:
            out.write(json.dumps(line, separators=(",", ":")) + "\n")


def main() -> None:
    preds = build_predictions()
    early, phase3, phase4, orphans = build_labels(preds)
    prediction_lines = [p.line for p in preds]
    # Logged roughly in time order, but the shipper interleaves the two
    # models' streams and delivers some events out of order.
    order = np.argsort([p.ts_ms + int(rng.integers(-2, 3)) * 60_000 for p in preds], kind="stable")
    prediction_lines = [prediction_lines[i] for i in order]

    state = LabelState(known=set())
    answers = [state.post(early)]
    state.predictions_arrive({p.id for p in preds})
    answers.append(state.post(phase3))
    answers.append(state.post(phase4))
    assert answers[0]["held"] == len(early)
    orphan_ids = set(state.held)
    assert orphan_ids == {line["prediction_id"] for line in orphans}

    by_id = {p.id: p for p in preds}
    final = {pid: (actual, json.loads(business)) for pid, (actual, business) in state.stored.items()}
    frame = pd.DataFrame(
        [{
            "id": p.id,
            "model": p.model,
            "version": p.version,
            "ts_ms": p.ts_ms,
            "scored": p.status == "ok" and p.prediction is not None,
            "prediction": p.prediction,
            "segments": p.segments,
            "has_label": p.id in final,
            "actual": final[p.id][0] if p.id in final else None,
            "business": final[p.id][1] if p.id in final else None,
        }
        for p in preds]
    )
    assert all(by_id[pid].labelable for pid in final)

    queries = []
    for index, query in enumerate(QUERIES):
        entry = {"name": f"q{index + 1:02d}", "model": query["model"], "window": query["window"]}
        entry["end"] = query["end"] // 1000 if index in UNIX_END_QUERIES else iso(query["end"])
        for key in ("version", "segment"):
            if key in query:
                entry[key] = query[key]
        entry["expect"] = expected_answer(frame, query)
        queries.append(entry)

    phase_names = ["1_early_labels.ndjson", "3_labels.ndjson", "4_corrections.ndjson"]
    OUT.mkdir(parents=True, exist_ok=True)
    write_ndjson(OUT / phase_names[0], early)
    write_ndjson(OUT / "2_predictions.ndjson", prediction_lines)
    write_ndjson(OUT / phase_names[1], phase3)
    write_ndjson(OUT / phase_names[2], phase4)

    scored = frame[frame.scored]
    joined_by_model = {model: int(scored[(scored.model == model) & scored.has_label].shape[0]) for model in (FD, PM)}
    expected = {
        "generator": {
            "script": "generate_quality.py",
            "seed": SEED,
            "numpy": np.__version__,
            "pandas": pd.__version__,
            "scikit_learn": sklearn.__version__,
        },
        "config": CONFIG_YAML,
        "phases": [
            {"file": phase_names[0], "path": "/v1/labels", "lines": len(early), "expect": answers[0]},
            {
                "file": "2_predictions.ndjson",
                "path": "/v1/predictions",
                "lines": len(prediction_lines),
                "expect": {"accepted": len(prediction_lines), "duplicates": 0},
            },
            {"file": phase_names[1], "path": "/v1/labels", "lines": len(phase3), "expect": answers[1]},
            {"file": phase_names[2], "path": "/v1/labels", "lines": len(phase4), "expect": answers[2]},
        ],
        "final_stats": {
            "joined": len(state.stored),
            "held": 0,
            "orphaned": len(orphan_ids),
            "duplicates": state.totals["duplicates"],
            "corrected": state.totals["corrected"],
        },
        "joined_by_model": joined_by_model,
        "dataset": {
            "predictions": {model: int((frame.model == model).sum()) for model in (FD, PM)},
            "scored_predictions": {model: int((scored.model == model).sum()) for model in (FD, PM)},
            "errors": int(sum(1 for p in preds if p.status == "error")),
            "timeouts": int(sum(1 for p in preds if p.status == "timeout")),
            "label_lines": {"early": len(early), "main": len(phase3), "corrections_phase": len(phase4)},
            "orphan_labels": len(orphans),
        },
        "queries": queries,
    }
    with (OUT / "expected.json").open("w", encoding="utf-8", newline="\n") as out:
        json.dump(expected, out, indent=1)
        out.write("\n")
    print(json.dumps({k: expected[k] for k in ("phases", "final_stats", "joined_by_model", "dataset")}, indent=1))


if __name__ == "__main__":
    main()
