"""Data and reference figures for `modelwatch-bench quality` (nothing here is timed).

The shared anchors (../shared/anchors: bench_join.py, bench_rolling.py) time the seed's ground-truth
evaluation on a deterministic synthetic `fraud_detector` log from their own `gen_data.py`. So that
modelwatch computes the same thing, this script takes that very log (gen_data.load, same seed, the
same parquet cache) and

1. exports it as flat little-endian arrays that the Rust benchmark turns into NDJSON events:
     predictions.timestamp_ns.i64   event time, ns since the Unix epoch
     predictions.version.u8         index into export.json "versions"
     predictions.features.f64       N x 8, row-major, in export.json "features" order
     predictions.class.u8           predicted class (0/1)
     predictions.confidence.f64     max(p, 1 - p)
     labels.prediction.i64          row of the labelled prediction (its id is 'p%09d' % row)
     labels.actual.u8               actual class (0/1)
     labels.timestamp_ns.i64        label arrival time, ns since the Unix epoch
   Labels stay in the anchor's order, which is arrival order.

2. computes the reference figures with the anchors' own functions, unrounded:
     --expect quality   bench_join.evaluate_with_ground_truth (pandas merge + the 4 sklearn metrics)
                        over the 7-day window ending at the end of the log, and over the whole log
                        (which is what bench_join.py times);
     --expect rolling   bench_rolling.monitor_rolling_accuracy as of each of the 14 day ends.
   The anchors select predictions with (end - window, end]; modelwatch's windows are
   [end - window, end). Both selections are computed, and how many predictions sit exactly on a
   boundary (where they could differ) is reported.

Everything is cached under --out/n{N}_s{SEED}/, keyed by the content of this script and of the
anchor files it uses, so a second run only reads it back.

Run:  python quality_data.py --anchors ../../../shared/anchors --n 1000000 --out DIR \
          [--expect quality] [--expect rolling]
Prints one JSON object (the paths and the reference figures) on stdout; progress on stderr.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time

FORMAT_VERSION = 1
WINDOW_DAYS = 7


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def file_digest(*paths: str) -> str:
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as file:
            digest.update(file.read())
    return digest.hexdigest()[:16]


def read_json(path: str):
    try:
        with open(path) as file:
            return json.load(file)
    except (OSError, ValueError):
        return None


def write_json(path: str, value) -> None:
    with open(path + ".tmp", "w") as file:
        json.dump(value, file, indent=1)
    os.replace(path + ".tmp", path)


class Log:
    """The anchor's log, loaded once and only if some part is not cached."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed = n, seed
        self._frames = None

    def frames(self):
        if self._frames is None:
            import gen_data
            started = time.perf_counter()
            gen_data.ensure(self.n, self.seed)
            generated = time.perf_counter()
            self._frames = gen_data.load(self.n, self.seed)
            log(f"anchor data n={self.n}: ensure {generated - started:.1f} s, "
                f"read parquet {time.perf_counter() - generated:.1f} s ({gen_data.paths(self.n, self.seed)[0]})")
        return self._frames


def export_arrays(frames, out: str) -> dict:
    import numpy as np
    import gen_data
    preds, labels = frames
    n = len(preds)
    rows = preds["prediction_id"].str.slice(1).astype(np.int64).to_numpy()
    if not np.array_equal(rows, np.arange(n, dtype=np.int64)):
        raise SystemExit("gen_data's prediction ids are no longer 'p%09d' of the row number")
    timestamps = preds["timestamp"].to_numpy().astype("datetime64[ns]").view(np.int64)
    versions = sorted(preds["model_version"].unique().tolist())
    version_codes = np.searchsorted(np.array(versions, dtype=object), preds["model_version"].to_numpy())
    classes = preds["predicted_class"].to_numpy()
    actual = labels["actual_class"].to_numpy()
    if not (np.isin(classes, [0, 1]).all() and np.isin(actual, [0, 1]).all()):
        raise SystemExit("gen_data's classes are no longer 0/1")
    label_rows = labels["prediction_id"].str.slice(1).astype(np.int64).to_numpy()
    label_timestamps = labels["label_timestamp"].to_numpy().astype("datetime64[ns]").view(np.int64)
    arrays = {
        "predictions.timestamp_ns.i64": timestamps.astype("<i8"),
        "predictions.version.u8": version_codes.astype("u1"),
        "predictions.features.f64": np.ascontiguousarray(preds[gen_data.FEATURES].to_numpy("<f8")),
        "predictions.class.u8": classes.astype("u1"),
        "predictions.confidence.f64": preds["confidence"].to_numpy("<f8"),
        "labels.prediction.i64": label_rows.astype("<i8"),
        "labels.actual.u8": actual.astype("u1"),
        "labels.timestamp_ns.i64": label_timestamps.astype("<i8"),
    }
    for name, array in arrays.items():
        array.tofile(os.path.join(out, name + ".tmp"))
        os.replace(os.path.join(out, name + ".tmp"), os.path.join(out, name))
    return {
        "predictions": n,
        "labels": len(labels),
        "versions": versions,
        "features": list(gen_data.FEATURES),
        "classes": ["0", "1"],
        "start_ns": int(np.datetime64(gen_data.START, "ns").view(np.int64)),
        "days": gen_data.DAYS,
        "first_timestamp_ns": int(timestamps.min()),
        "last_timestamp_ns": int(timestamps.max()),
    }


def window_masks(timestamps, start, end):
    """(anchor's (start, end], modelwatch's [start, end))."""
    return (timestamps > start) & (timestamps <= end), (timestamps >= start) & (timestamps < end)


def plain(metrics: dict) -> dict:
    return {key: (int(value) if key == "n" else float(value)) for key, value in metrics.items()}


def quality_reference(frames) -> dict:
    import numpy as np
    import bench_join
    import gen_data
    preds, labels = frames
    timestamps = preds["timestamp"].to_numpy()
    end = np.datetime64(gen_data.START, "ns") + np.timedelta64(gen_data.DAYS, "D")
    windows = {}
    for name, days in (("7d", WINDOW_DAYS), ("whole_log", gen_data.DAYS)):
        start = end - np.timedelta64(days, "D")
        anchor_mask, ours_mask = window_masks(timestamps, start, end)
        started = time.perf_counter()
        if name == "whole_log":
            # Exactly what bench_join.py times: the whole frames, no filter.
            metrics, _, _, merged = bench_join.evaluate_with_ground_truth(preds, labels)
            if not anchor_mask.all():
                raise SystemExit("the log is no longer inside 14 days from gen_data.START")
        else:
            metrics, _, _, merged = bench_join.evaluate_with_ground_truth(preds[anchor_mask], labels)
        cm = np.bincount(2 * merged["actual_class"].to_numpy() + merged["predicted_class"].to_numpy(),
                         minlength=4).reshape(2, 2)
        entry = {
            "window": f"{days}d",
            "start_ns": int(start.view(np.int64)),
            "end_ns": int(end.view(np.int64)),
            "anchor": plain(metrics),
            "confusion_matrix": cm.tolist(),
            "predictions_in_window_ours": int(ours_mask.sum()),
            "predictions_in_window_anchor": int(anchor_mask.sum()),
            "predictions_on_a_boundary": int((anchor_mask != ours_mask).sum()),
        }
        if entry["predictions_on_a_boundary"]:
            ours, _, _, _ = bench_join.evaluate_with_ground_truth(preds[ours_mask], labels)
            entry["ours_convention"] = plain(ours)
        windows[name] = entry
        log(f"reference {name}: n={metrics['n']:,} accuracy={metrics['accuracy']:.6f} "
            f"({time.perf_counter() - started:.1f} s, not timed)")
        del merged
    return windows


def rolling_reference(frames) -> dict:
    import numpy as np
    import pandas as pd
    import bench_rolling
    import gen_data
    preds, labels = frames
    days = [pd.Timestamp(gen_data.START) + pd.Timedelta(days=d) for d in range(1, gen_data.DAYS + 1)]
    started = time.perf_counter()
    anchor = [bench_rolling.monitor_rolling_accuracy(preds, labels, window_days=WINDOW_DAYS, as_of=day)
              for day in days]
    # The same, selected with modelwatch's [start, end) and with sample sizes.
    merged = preds[["prediction_id", "timestamp", "predicted_class"]].merge(
        labels, on="prediction_id", how="inner")
    timestamps = merged["timestamp"].to_numpy()
    arrived = merged["label_timestamp"].to_numpy()
    correct = merged["predicted_class"].to_numpy() == merged["actual_class"].to_numpy()
    label_times = labels["label_timestamp"].to_numpy()
    out = []
    for day, accuracy in zip(days, anchor):
        end = np.datetime64(day.to_datetime64(), "ns")
        start = end - np.timedelta64(WINDOW_DAYS, "D")
        anchor_mask, ours_mask = window_masks(timestamps, start, end)
        ours = (arrived <= end) & ours_mask
        out.append({
            "end_ns": int(end.view(np.int64)),
            "labels_arrived": int((label_times <= end).sum()),
            "anchor_accuracy": accuracy,
            "ours_convention_accuracy": float(correct[ours].mean()) if ours.any() else None,
            "sample_size_ours": int(ours.sum()),
            "predictions_on_a_boundary": int((anchor_mask != ours_mask).sum()),
        })
    log(f"reference rolling: 14 accuracies {[round(x, 4) for x in anchor]} "
        f"({time.perf_counter() - started:.1f} s, not timed)")
    return {"window": f"{WINDOW_DAYS}d", "days": out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--anchors", required=True, help="the shared anchors' folder")
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", required=True)
    parser.add_argument("--expect", action="append", default=[], choices=["quality", "rolling"])
    args = parser.parse_args()
    anchors = os.path.abspath(args.anchors)
    sys.path.insert(0, anchors)
    anchor_file = lambda name: os.path.join(anchors, name)  # noqa: E731
    out = os.path.join(os.path.abspath(args.out), f"n{args.n}_s{args.seed}")
    os.makedirs(out, exist_ok=True)
    here = os.path.abspath(__file__)
    data_key = {"format": FORMAT_VERSION, "n": args.n, "seed": args.seed,
                "digest": file_digest(here, anchor_file("gen_data.py"))}
    source = Log(args.n, args.seed)

    export_path = os.path.join(out, "export.json")
    export = read_json(export_path)
    if not export or export.get("key") != data_key:
        started = time.perf_counter()
        export = {"key": data_key, **export_arrays(source.frames(), out)}
        write_json(export_path, export)
        log(f"exported {export['predictions']:,} predictions and {export['labels']:,} labels "
            f"to {out} in {time.perf_counter() - started:.1f} s (not timed)")

    result = {"dir": out, "export": export}
    parts = {"quality": ("bench_join.py", quality_reference),
             "rolling": ("bench_rolling.py", rolling_reference)}
    for part in args.expect:
        anchor_script, compute = parts[part]
        key = {**data_key, "anchor": file_digest(anchor_file(anchor_script), anchor_file("common.py"))}
        path = os.path.join(out, f"expected_{part}.json")
        expected = read_json(path)
        if not expected or expected.get("key") != key:
            expected = {"key": key, "reference": compute(source.frames())}
            write_json(path, expected)
        result[part] = expected["reference"]
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
