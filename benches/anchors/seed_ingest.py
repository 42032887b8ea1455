"""Anchor for the ingestion benchmark: the seed's way of recording prediction events.

The seed (shared/seed/000_72e917d70e4dc2c8.txt) instruments a prediction service with
prometheus_client: for every prediction, `MonitoredPredictor.predict` does

    prediction_requests.labels(model_name, model_version).inc()
    prediction_latency.labels(model_name).observe(duration)          # always, in a finally
    prediction_class_distribution.labels(model_name, predicted_class).inc()
    prediction_confidence.labels(model_name, predicted_class).observe(max_confidence)
    prediction_errors.labels(model_name, error_type).inc()          # only when predict raises

This script replays the events that the Rust benchmark sent to modelwatch (an NDJSON file it
wrote; reading it is not timed) through those same updates, in one process, and prints one JSON
line per variant with events/s:

  seed_record            the five metric updates per event, `.labels(**kw)` resolved on every
                         call as in the seed, values taken from the event (the anchor's best
                         case: no JSON, no model call, no timing);
  seed_predictor         the seed's `MonitoredPredictor` class verbatim around a replay model
                         that returns the event's class and probabilities (and raises for error
                         events), so the latency observed is the seed's own perf_counter timing;
  seed_parse_and_record  json.loads of each NDJSON line, then the updates of seed_record: what a
                         Python process receiving these events would do at least.

The anchor persists nothing: the counters live in process memory and are lost on exit, whereas
modelwatch commits every event durably to SQLite before it answers.

Run:  python seed_ingest.py --events-file EVENTS.ndjson [--events N] [--variants a,b,c]
"""
from __future__ import annotations

import argparse
import builtins
import gc
import json
import sys
import time
from contextlib import contextmanager
from importlib import metadata

from prometheus_client import CollectorRegistry, Counter, Histogram

LATENCY_BUCKETS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]
CONFIDENCE_BUCKETS = [0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99]
ALL_VARIANTS = ("seed_record", "seed_predictor", "seed_parse_and_record")


def seed_metrics(registry: CollectorRegistry) -> dict:
    """The seed's metric definitions (names, labels and buckets exactly as in metrics.py)."""
    return dict(
        prediction_requests=Counter(
            "ml_prediction_requests_total", "Total prediction requests",
            ["model_name", "model_version"], registry=registry),
        prediction_latency=Histogram(
            "ml_prediction_latency_seconds", "Prediction latency",
            ["model_name"], buckets=LATENCY_BUCKETS, registry=registry),
        prediction_errors=Counter(
            "ml_prediction_errors_total", "Total prediction errors",
            ["model_name", "error_type"], registry=registry),
        prediction_confidence=Histogram(
            "ml_prediction_confidence", "Model confidence scores",
            ["model_name", "predicted_class"], buckets=CONFIDENCE_BUCKETS, registry=registry),
        prediction_class_distribution=Counter(
            "ml_prediction_class_total", "Predictions by class",
            ["model_name", "predicted_class"], registry=registry),
    )


def requests_recorded(registry: CollectorRegistry) -> int:
    total = 0
    for family in registry.collect():
        if family.name == "ml_prediction_requests":
            total += sum(int(s.value) for s in family.samples if s.name.endswith("_total"))
    return total


def event_tuple(event: dict) -> tuple:
    """The fields the seed's metrics use; None for class and probabilities on errors."""
    probabilities = event.get("probabilities")
    error_type = event.get("error_type") if event.get("status") == "error" else None
    return (
        event["model"],
        event.get("version", ""),
        float(event.get("latency_seconds", 0.0)),
        error_type,
        event.get("prediction"),
        list(probabilities.values()) if probabilities else None,
    )


def load_events(path: str, limit: int | None) -> list[tuple]:
    events = []
    with open(path, "rb") as file:
        for line in file:
            if not line.strip():
                continue
            events.append(event_tuple(json.loads(line)))
            if limit is not None and len(events) >= limit:
                break
    return events


def record_event(m, model_name, model_version, latency, error_type, predicted_class, probabilities):
    """One event, the seed's way (the body of MonitoredPredictor.predict minus the model)."""
    m["prediction_requests"].labels(model_name=model_name, model_version=model_version).inc()
    m["prediction_latency"].labels(model_name=model_name).observe(latency)
    if error_type is not None:
        m["prediction_errors"].labels(model_name=model_name, error_type=error_type).inc()
        return
    m["prediction_class_distribution"].labels(model_name=model_name, predicted_class=predicted_class).inc()
    max_confidence = float(max(probabilities))
    m["prediction_confidence"].labels(model_name=model_name, predicted_class=predicted_class).observe(
        max_confidence)


def run_seed_record(events: list[tuple]) -> tuple[float, CollectorRegistry]:
    registry = CollectorRegistry()
    m = seed_metrics(registry)
    started = time.perf_counter()
    for event in events:
        record_event(m, *event)
    return time.perf_counter() - started, registry


def exception_class(name: str) -> type:
    """The exception whose type name the seed records as error_type."""
    builtin = getattr(builtins, name, None)
    if isinstance(builtin, type) and issubclass(builtin, Exception):
        return builtin
    return type(name, (Exception,), {})


class ReplayModel:
    """Answers with the current event's class and probabilities, or raises its error."""

    def __init__(self):
        self.event = None
        self.errors: dict[str, type] = {}

    def predict(self, rows):
        error_type = self.event[3]
        if error_type is not None:
            cls = self.errors.get(error_type) or self.errors.setdefault(error_type, exception_class(error_type))
            raise cls("replayed error")
        return [self.event[4]]

    def predict_proba(self, rows):
        return [self.event[5]]


def make_monitored_predictor(m: dict):
    """The seed's MonitoredPredictor, verbatim except that the metrics come from `m`."""
    prediction_requests = m["prediction_requests"]
    prediction_latency = m["prediction_latency"]
    prediction_errors = m["prediction_errors"]
    prediction_confidence = m["prediction_confidence"]
    prediction_class_distribution = m["prediction_class_distribution"]

    class MonitoredPredictor:
        def __init__(self, model, model_name: str, model_version: str):
            self.model = model
            self.model_name = model_name
            self.model_version = model_version

        @contextmanager
        def track_latency(self):
            start = time.perf_counter()
            try:
                yield
            finally:
                duration = time.perf_counter() - start
                prediction_latency.labels(model_name=self.model_name).observe(duration)

        def predict(self, features: dict) -> dict:
            prediction_requests.labels(
                model_name=self.model_name,
                model_version=self.model_version
            ).inc()

            try:
                with self.track_latency():
                    prediction = self.model.predict([features])
                    confidence = self.model.predict_proba([features])

                # Track outputs
                predicted_class = str(prediction[0])
                prediction_class_distribution.labels(
                    model_name=self.model_name,
                    predicted_class=predicted_class
                ).inc()

                max_confidence = float(max(confidence[0]))
                prediction_confidence.labels(
                    model_name=self.model_name,
                    predicted_class=predicted_class
                ).observe(max_confidence)

                return {
                    "prediction": predicted_class,
                    "confidence": max_confidence
                }

            except Exception as e:
                prediction_errors.labels(
                    model_name=self.model_name,
                    error_type=type(e).__name__
                ).inc()
                raise

    return MonitoredPredictor


def run_seed_predictor(events: list[tuple]) -> tuple[float, CollectorRegistry]:
    registry = CollectorRegistry()
    MonitoredPredictor = make_monitored_predictor(seed_metrics(registry))
    model = ReplayModel()
    # One predictor per (model, version), as a service would hold; created outside the timing.
    predictors = {}
    for event in events:
        key = (event[0], event[1])
        if key not in predictors:
            predictors[key] = MonitoredPredictor(model, event[0], event[1])
    features: dict = {}
    started = time.perf_counter()
    for event in events:
        model.event = event
        try:
            predictors[(event[0], event[1])].predict(features)
        except Exception:
            pass  # the service would answer 500; the seed has recorded the error
    return time.perf_counter() - started, registry


def run_seed_parse_and_record(path: str, limit: int | None) -> tuple[float, CollectorRegistry, int]:
    """json.loads + record, timed per chunk so that reading the file stays out of the timing."""
    registry = CollectorRegistry()
    m = seed_metrics(registry)
    elapsed = 0.0
    count = 0
    chunk_lines = 100_000
    with open(path, "rb") as file:
        while limit is None or count < limit:
            lines = []
            for line in file:
                lines.append(line)
                if len(lines) >= chunk_lines:
                    break
            if limit is not None:
                lines = lines[: limit - count]
            if not lines:
                break
            loads = json.loads
            started = time.perf_counter()
            for line in lines:
                event = loads(line)
                probabilities = event.get("probabilities")
                record_event(
                    m,
                    event["model"],
                    event.get("version", ""),
                    event.get("latency_seconds", 0.0),
                    event.get("error_type") if event.get("status") == "error" else None,
                    event.get("prediction"),
                    probabilities.values() if probabilities else None,
                )
            elapsed += time.perf_counter() - started
            count += len(lines)
    return elapsed, registry, count


def python_loop_ns(iterations: int = 3_000_000, repeats: int = 3) -> float:
    """The calibration of shared/anchors/calibrate.py: ns per `s += i` iteration (median).

    The shared anchors were measured where this took 41-47 ns; a higher figure here means a
    slower (or busier) machine than theirs, so compare ratios, not absolute rates.
    """
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        s = 0
        for i in range(iterations):
            s += i
        timings.append((time.perf_counter() - started) * 1e9 / iterations)
    return sorted(timings)[len(timings) // 2]


CALIBRATION: dict = {}


def emit(variant: str, events: int, seconds: float, registry: CollectorRegistry) -> None:
    print(json.dumps({
        "name": f"anchor_{variant}",
        "events": events,
        "seconds": round(seconds, 4),
        "events_per_second": round(events / seconds, 1) if seconds > 0 else None,
        "ns_per_event": round(seconds * 1e9 / events, 1) if events else None,
        "requests_recorded": requests_recorded(registry),
        "persists": False,
        "processes": 1,
        "python": sys.version.split()[0],
        "prometheus_client": metadata.version("prometheus_client"),
        **CALIBRATION,
    }), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events-file", required=True, help="NDJSON prediction events, one a line")
    parser.add_argument("--events", type=int, default=None, help="use only the first N events")
    parser.add_argument("--variants", default=",".join(ALL_VARIANTS))
    args = parser.parse_args()
    variants = [v for v in args.variants.split(",") if v]
    unknown = set(variants) - set(ALL_VARIANTS)
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}; choose from {ALL_VARIANTS}")

    CALIBRATION["python_loop_ns"] = round(python_loop_ns(), 1)
    CALIBRATION["python_loop_ns_reference_machine"] = "41-47"
    started = time.perf_counter()
    events = load_events(args.events_file, args.events)
    print(f"loaded {len(events)} events in {time.perf_counter() - started:.1f} s (not timed)",
          file=sys.stderr, flush=True)
    # The replay list is an artifact of the benchmark (a service holds one event at a time):
    # freeze it so that the cyclic collector does not rescan millions of tuples.
    gc.collect()
    gc.freeze()
    for variant in variants:
        if variant == "seed_record":
            seconds, registry = run_seed_record(events)
            emit(variant, len(events), seconds, registry)
        elif variant == "seed_predictor":
            seconds, registry = run_seed_predictor(events)
            emit(variant, len(events), seconds, registry)
        elif variant == "seed_parse_and_record":
            seconds, registry, count = run_seed_parse_and_record(args.events_file, args.events)
            emit(variant, count, seconds, registry)


if __name__ == "__main__":
    main()
