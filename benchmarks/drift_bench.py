"""Benchmark: how often the drift detector alarms on traffic like its training data
(false alarms), and how often it finds a planted shift (detection), per window size.

    .venv/bin/python benchmarks/drift_bench.py [--rows 200000] [--seeds 500]

Generated transactions (``pipelines.data.generate``, one world): the reference
profile is the first 90 of 120 days (the training window), the request-time fields a
client sends (amount, category, country, hour of day). Each trial draws a window
from the last 30 days:

- ``same``:  as generated (the same world, later days): any alarm is a false one;
- ``mild``:  amounts x1.3;
- ``shift``: what the demo plants: amounts x3, and 30 % of the window from new
  merchants in a category never seen (``crypto``).

A trial alarms on dataset drift (half the features, Evidently's share) and, apart,
on any single feature's drift. Results: benchmarks/results/drift.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

RESULTS = Path(__file__).parent / "results"
FEATURES = ["amount", "category", "country", "hour"]


def _transactions(rows: int) -> pd.DataFrame:
    from pipelines.data.generate import GenerateConfig, generate

    with tempfile.TemporaryDirectory() as tmp:
        generate(GenerateConfig(rows=rows, seed=0), tmp)
        frame = pd.read_parquet(tmp)
    stamps = pd.to_datetime(frame["timestamp"], utc=True)
    frame["hour"] = stamps.dt.hour
    frame["day"] = (stamps - stamps.min()).dt.days
    return frame


def _window(later: pd.DataFrame, n: int, rng: np.random.Generator, kind: str) -> pd.DataFrame:
    w = later.sample(n, random_state=int(rng.integers(2**31))).reset_index(drop=True)
    if kind == "mild":
        w["amount"] = w["amount"] * 1.3
    elif kind == "shift":
        w["amount"] = w["amount"] * 3.0
        new = rng.random(n) < 0.3
        w["category"] = w["category"].astype(object).where(~new, "crypto")
    return w


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--seeds", type=int, default=500)
    parser.add_argument("--sizes", default="500,1000,5000")
    args = parser.parse_args(argv)
    from shipyard.drift import compare, profile_frame

    frame = _transactions(args.rows)
    train, later = frame[frame["day"] < 90], frame[frame["day"] >= 90]
    reference = profile_frame(train, FEATURES)
    rng = np.random.default_rng(0)
    cells = []
    for size in [int(s) for s in args.sizes.split(",")]:
        for kind in ("same", "mild", "shift"):
            began = time.perf_counter()
            dataset = any_feature = 0
            per_feature = dict.fromkeys(FEATURES, 0)
            psi: dict[str, list[float]] = {name: [] for name in FEATURES}
            for _ in range(args.seeds):
                report = compare(reference, _window(later, size, rng, kind))
                for c in report.columns:
                    psi[c.name].append(c.psi or 0.0)
                dataset += report.dataset_drift
                any_feature += bool(report.drifted_features)
                for name in report.drifted_features:
                    per_feature[name] += 1
            cell = {"window_rows": size, "traffic": kind, "trials": args.seeds,
                    "dataset_drift_rate": dataset / args.seeds,
                    "any_feature_drift_rate": any_feature / args.seeds,
                    "per_feature_rate": {k: v / args.seeds for k, v in per_feature.items()},
                    "median_psi": {k: round(float(np.median(v)), 4) for k, v in psi.items()},
                    "ms_per_compare": (time.perf_counter() - began) * 1000 / args.seeds}  # fmt: skip
            cells.append(cell)
            print(f"{size:>6} rows  {kind:<5}  dataset drift {cell['dataset_drift_rate']:6.1%}  "
                  f"any feature {cell['any_feature_drift_rate']:6.1%}  "
                  f"amount PSI {cell['median_psi']['amount']:.3f}  "
                  f"{cell['ms_per_compare']:.1f} ms/compare", flush=True)  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    out = {"command": " ".join([Path(sys.executable).name, *sys.argv]),
           "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "reference_rows": len(train), "features": FEATURES, "cells": cells}  # fmt: skip
    (RESULTS / "drift.json").write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
