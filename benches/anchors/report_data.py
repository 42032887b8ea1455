"""Files for timing `modelwatch report` at scale, and the pandas approach on the same files.

Exports the shared anchors' synthetic fraud_detector log (gen_data.load: the parquet cache that
bench_join.py times) as the report's CSV (and, with --ndjson, NDJSON; with --parquet, Parquet)
inputs:

  predictions.csv  prediction_id, version, timestamp (Unix seconds), prediction, confidence,
                   the 8 features (the model is given with `--model fraud_detector`)
  labels.csv       prediction_id, actual, timestamp (label arrival, Unix seconds), arrival order

  predictions.parquet, labels.parquet: the same columns, as pandas types them (timestamp a
                   TIMESTAMP(NANOS) column, prediction and actual int64), written by
                   DataFrame.to_parquet with its defaults (pyarrow, snappy, 1Mi-row row groups)

With --pandas it then times the seed's approach *from the same files*: pd.read_csv of both,
the merge on prediction_id, and the four scikit-learn metrics over the whole log and each day
(what the report's quality part computes), printing one JSON object.

Run:  /tmp/anchorvenv/bin/python report_data.py --anchors ../../../shared/anchors --n 10000000 \
          --out DIR [--ndjson] [--parquet] [--pandas]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--anchors", required=True)
    ap.add_argument("--n", type=int, default=10_000_000)
    ap.add_argument("--out", required=True)
    ap.add_argument("--ndjson", action="store_true")
    ap.add_argument("--parquet", action="store_true", help="also (or only) write the Parquet files")
    ap.add_argument("--pandas", action="store_true")
    a = ap.parse_args()
    sys.path.insert(0, os.path.abspath(a.anchors))
    import numpy as np
    import pandas as pd
    import gen_data

    os.makedirs(a.out, exist_ok=True)
    pred_path = os.path.join(a.out, "predictions.csv")
    label_path = os.path.join(a.out, "labels.csv")
    if a.parquet:
        parquet_preds = os.path.join(a.out, "predictions.parquet")
        parquet_labels = os.path.join(a.out, "labels.parquet")
        if not (os.path.exists(parquet_preds) and os.path.exists(parquet_labels)):
            preds, labels = gen_data.load(a.n)
            out = pd.DataFrame({"prediction_id": preds["prediction_id"], "version": preds["model_version"],
                                "timestamp": preds["timestamp"], "prediction": preds["predicted_class"],
                                "confidence": preds["confidence"]})
            for name in gen_data.FEATURES:
                out[name] = preds[name]
            started = time.perf_counter()
            out.to_parquet(parquet_preds + ".tmp", index=False)
            os.replace(parquet_preds + ".tmp", parquet_preds)
            pd.DataFrame({"prediction_id": labels["prediction_id"], "actual": labels["actual_class"],
                          "timestamp": labels["label_timestamp"]}).to_parquet(parquet_labels + ".tmp", index=False)
            os.replace(parquet_labels + ".tmp", parquet_labels)
            print(f"wrote Parquet in {time.perf_counter() - started:.1f} s", file=sys.stderr)
            del preds, labels, out
        if not (a.ndjson or a.pandas or os.path.exists(pred_path)):
            return
    if not (os.path.exists(pred_path) and os.path.exists(label_path)):
        preds, labels = gen_data.load(a.n)
        seconds = preds["timestamp"].to_numpy().astype("datetime64[ns]").view(np.int64) / 1e9
        out = pd.DataFrame({"prediction_id": preds["prediction_id"], "version": preds["model_version"],
                            "timestamp": seconds, "prediction": preds["predicted_class"],
                            "confidence": preds["confidence"]})
        for name in gen_data.FEATURES:
            out[name] = preds[name]
        started = time.perf_counter()
        out.to_csv(pred_path + ".tmp", index=False, float_format="%.17g")
        os.replace(pred_path + ".tmp", pred_path)
        label_seconds = labels["label_timestamp"].to_numpy().astype("datetime64[ns]").view(np.int64) / 1e9
        pd.DataFrame({"prediction_id": labels["prediction_id"], "actual": labels["actual_class"],
                      "timestamp": label_seconds}).to_csv(label_path + ".tmp", index=False, float_format="%.17g")
        os.replace(label_path + ".tmp", label_path)
        print(f"wrote CSV in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    if a.ndjson:
        import csv
        for name, path in (("predictions", pred_path), ("labels", label_path)):
            target = os.path.join(a.out, name + ".ndjson")
            if os.path.exists(target):
                continue
            with open(path) as source, open(target + ".tmp", "w") as sink:
                reader = csv.DictReader(source)
                for row in reader:
                    if name == "predictions":
                        event = {"prediction_id": row["prediction_id"], "model": "fraud_detector",
                                 "version": row["version"], "timestamp": float(row["timestamp"]),
                                 "prediction": row["prediction"], "confidence": float(row["confidence"]),
                                 "features": {f: float(row[f]) for f in gen_data.FEATURES}}
                    else:
                        event = {"prediction_id": row["prediction_id"], "actual": row["actual"],
                                 "timestamp": float(row["timestamp"])}
                    sink.write(json.dumps(event, separators=(",", ":")) + "\n")
            os.replace(target + ".tmp", target)
    if a.pandas:
        from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score
        accuracy_score(np.array([0, 1]), np.array([0, 1]))
        started = time.perf_counter()
        preds = pd.read_csv(pred_path)
        labels = pd.read_csv(label_path)
        read_s = time.perf_counter() - started
        merged = preds.merge(labels, on="prediction_id", how="inner", suffixes=("", "_label"))
        def metrics(frame):
            y_true, y_pred = frame["actual"], frame["prediction"]
            return {"accuracy": accuracy_score(y_true, y_pred), "precision": precision_score(y_true, y_pred),
                    "recall": recall_score(y_true, y_pred), "f1": f1_score(y_true, y_pred), "n": len(frame)}
        whole = metrics(merged)
        day = (merged["timestamp"] // 86400).astype(np.int64)
        daily = {int(d): metrics(frame) for d, frame in merged.groupby(day)}
        total_s = time.perf_counter() - started
        print(json.dumps({"n": len(preds), "labels": len(labels), "read_csv_s": read_s, "total_s": total_s,
                          "whole": whole, "days": len(daily)}))


if __name__ == "__main__":
    main()
