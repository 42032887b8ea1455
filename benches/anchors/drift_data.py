"""Data and reference figures for `modelwatch-bench drift` (nothing here is timed).

The shared anchors (../shared/anchors) time Evidently's DataDriftPreset (bench_evidently.py, kind
`drift`) and single statistics (bench_stats.py) on their own synthetic `fraud_detector` log
(gen_data.py, seed 42). So that modelwatch computes the same thing, this script takes that very
data and exports it:

1. `--n N`: the log of N predictions (gen_data.load(N), the same parquet cache that
   bench_evidently.py reads), split as bench_evidently.py splits it: reference = timestamp before
   day 7 (week 1), current = from day 7 on (week 2), the 8 gen_data.FEATURES of each. Under
   --out/n{N}_s{SEED}/:
     reference.csv, current.csv      the rows with a header line (the "files" of the end-to-end
                                     measurement), numbers in shortest round-trip form (pyarrow)
     {side}.{feature}.f64            each column as raw little-endian float64, in row order
   and the reference figures on the raw values, with scipy: for each feature np.std of the
   reference (ddof=0), scipy.stats.wasserstein_distance(reference, current), and the normed
   distance wasserstein / max(std, 0.001) that Evidently reports and modelwatch approximates.

2. `--stats-n M`: bench_stats.py's samples, built exactly as it builds them (feature 'amount' of
   gen_data.generate(int(M * 2.2), seed=42), week 1 and week 2, the first M of each). Under
   --out/stats_n{M}_s{SEED}/: amount.reference.f64, amount.current.f64, and the figures:
   scipy.stats.ks_2samp, wasserstein_distance, bench_stats.psi (numpy, 10 reference-quantile bins)
   and the PSI of modelwatch's documented binning (decile groups of its 0.2% log bins, replicated
   here as crates/cli/tests/oracle/generate_drift.py does), which modelwatch must match.

Everything is cached, keyed by the content of this script and of the anchor files it uses, so a
second run only reads it back.

Run:  python drift_data.py --anchors ../../../shared/anchors --out DIR [--n 1000000] [--stats-n 1000000]
Prints one JSON object (the directories and the reference figures) on stdout; progress on stderr.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time

FORMAT_VERSION = 1
SPLIT_DAYS = 7

# modelwatch's bins (crates/core/src/drift.rs): bin i of a positive magnitude holds
# (1.002^(i-1), 1.002^i]; keys order bins by value across signs.
LN_BIN_GROWTH = math.log(1.002)
SIGN_OFFSET = 1 << 32
PSI_GROUPS = 10
PSI_EMPTY_SHARE = 0.0001


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


def write_raw(path: str, array) -> None:
    import numpy as np
    np.ascontiguousarray(array, dtype="<f8").tofile(path + ".tmp")
    os.replace(path + ".tmp", path)


def normed_wasserstein(reference, current) -> dict:
    import numpy as np
    from scipy import stats
    std = float(np.std(reference))
    distance = float(stats.wasserstein_distance(reference, current))
    return {"std": std, "wasserstein": distance, "normed_wasserstein": distance / max(std, 0.001)}


def export_log(anchors: str, n: int, seed: int, out: str) -> dict:
    """Part 1: the week-1/week-2 split of gen_data.load(n), as bench_evidently.py's drift kind."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import gen_data
    started = time.perf_counter()
    preds, _ = gen_data.load(n, seed)
    log(f"anchor data n={n}: loaded in {time.perf_counter() - started:.1f} s ({gen_data.paths(n, seed)[0]})")
    split = gen_data.START + np.timedelta64(SPLIT_DAYS, "D")
    features = list(gen_data.FEATURES)
    sides = {
        "reference": preds.loc[preds.timestamp < split, features].reset_index(drop=True),
        "current": preds.loc[preds.timestamp >= split, features].reset_index(drop=True),
    }
    del preds
    files = {}
    for side, frame in sides.items():
        csv_path = os.path.join(out, f"{side}.csv")
        pacsv.write_csv(pa.Table.from_pandas(frame, preserve_index=False), csv_path + ".tmp")
        os.replace(csv_path + ".tmp", csv_path)
        files[side] = {"csv": csv_path, "rows": len(frame), "csv_bytes": os.path.getsize(csv_path)}
        for feature in features:
            write_raw(os.path.join(out, f"{side}.{feature}.f64"), frame[feature].to_numpy())
    log(f"exported {files['reference']['rows']:,} reference and {files['current']['rows']:,} current rows "
        f"to {out} in {time.perf_counter() - started:.1f} s (not timed)")
    started = time.perf_counter()
    reference = {}
    for feature in features:
        figures = normed_wasserstein(sides["reference"][feature].to_numpy(), sides["current"][feature].to_numpy())
        figures["drifted"] = figures["normed_wasserstein"] >= 0.1
        reference[feature] = figures
    log("reference normed Wasserstein: "
        + ", ".join(f"{name} {figures['normed_wasserstein']:.4f}" for name, figures in reference.items())
        + f" ({time.perf_counter() - started:.1f} s, not timed)")
    return {"n": n, "seed": seed, "features": features, "split_days": SPLIT_DAYS, "files": files,
            "reference": reference}


def bin_keys(values):
    """modelwatch's bin key of every value (drift.rs bin_key), vectorized."""
    import numpy as np
    magnitude = np.abs(values)
    with np.errstate(divide="ignore"):
        index = np.ceil(np.log(magnitude) / LN_BIN_GROWTH)
    keys = np.where(values > 0, SIGN_OFFSET + index, -(SIGN_OFFSET + index))
    return np.where(values == 0, 0, keys).astype(np.int64)


def modelwatch_psi(reference, current) -> float:
    """PSI over decile groups of log bins, as drift.rs decile_groups + psi define it."""
    import numpy as np
    reference_keys, current_keys = bin_keys(reference), bin_keys(current)
    keys, counts = np.unique(reference_keys, return_counts=True)
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
    edges = np.array(edges, dtype=np.int64)
    groups = len(edges) + 1
    # bisect_left: the first group whose edge is at or above the key.
    r = np.bincount(np.searchsorted(edges, reference_keys, side="left"), minlength=groups) / len(reference)
    c = np.bincount(np.searchsorted(edges, current_keys, side="left"), minlength=groups) / len(current)
    r = np.where(r == 0, PSI_EMPTY_SHARE, r)
    c = np.where(c == 0, PSI_EMPTY_SHARE, c)
    return float(np.sum((r - c) * np.log(r / c)))


def export_stats(m: int, seed: int, out: str) -> dict:
    """Part 2: bench_stats.py's 'amount' samples and the statistics it computes on them."""
    import numpy as np
    from scipy import stats
    import bench_stats
    import gen_data
    started = time.perf_counter()
    # Exactly bench_stats.main's samples.
    preds, _ = gen_data.generate(int(m * 2.2), seed=seed)
    split = gen_data.START + np.timedelta64(SPLIT_DAYS, "D")
    reference = preds.loc[preds.timestamp < split, "amount"].to_numpy()[:m].copy()
    current = preds.loc[preds.timestamp >= split, "amount"].to_numpy()[:m].copy()
    assert reference.shape[0] == m and current.shape[0] == m
    del preds
    write_raw(os.path.join(out, "amount.reference.f64"), reference)
    write_raw(os.path.join(out, "amount.current.f64"), current)
    ks = stats.ks_2samp(reference, current)
    figures = {
        "n": m,
        "seed": seed,
        "feature": "amount",
        "ks_statistic": float(ks.statistic),
        "ks_pvalue": float(ks.pvalue),
        **normed_wasserstein(reference, current),
        "psi_numpy_10q": float(bench_stats.psi(reference, current)),
        "psi_modelwatch_binning": modelwatch_psi(reference, current),
    }
    log(f"bench_stats samples m={m}: KS D={figures['ks_statistic']:.5f}, numpy PSI {figures['psi_numpy_10q']:.5f}, "
        f"PSI on modelwatch's binning {figures['psi_modelwatch_binning']:.5f} "
        f"({time.perf_counter() - started:.1f} s, not timed)")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--anchors", required=True, help="the shared anchors' folder")
    parser.add_argument("--out", required=True)
    parser.add_argument("--n", type=int, help="total predictions of the log (reference + current)")
    parser.add_argument("--stats-n", type=int, help="size of each of bench_stats.py's samples")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    anchors = os.path.abspath(args.anchors)
    sys.path.insert(0, anchors)
    anchor_file = lambda name: os.path.join(anchors, name)  # noqa: E731
    here = os.path.abspath(__file__)
    result = {}
    parts = []
    if args.n:
        parts.append(("log", f"n{args.n}_s{args.seed}", [here, anchor_file("gen_data.py")],
                      lambda out: export_log(anchors, args.n, args.seed, out)))
    if args.stats_n:
        parts.append(("stats", f"stats_n{args.stats_n}_s{args.seed}",
                      [here, anchor_file("gen_data.py"), anchor_file("bench_stats.py")],
                      lambda out: export_stats(args.stats_n, args.seed, out)))
    for name, folder, sources, compute in parts:
        out = os.path.join(os.path.abspath(args.out), folder)
        os.makedirs(out, exist_ok=True)
        key = {"format": FORMAT_VERSION, "folder": folder, "digest": file_digest(*sources)}
        path = os.path.join(out, "export.json")
        export = read_json(path)
        if not export or export.get("key") != key:
            export = {"key": key, **compute(out)}
            write_json(path, export)
        result[name] = {"dir": out, **export}
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
