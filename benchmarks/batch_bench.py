"""Benchmark: batch inference on Ray Data against a single-process loop over the same
model, side by side in one run.

    make demo   # or any running platform with the model registered and features built
    .venv/bin/python benchmarks/batch_bench.py [--model fraud-detector@champion] [--rows 50000]

Rows are raw transactions of the platform's data (``<data_root>/raw/transactions``),
each at its own time. This script joins the local cluster as a driver and times:

- ``features``: the point-in-time join through Feast's offline store (``shipyard.batch.
  with_features``), which both paths need;
- ``single``: one process, the model loaded once, ``predict`` over batches of
  ``--batch-size`` rows in a loop (what a user would write without Ray);
- ``ray``: ``shipyard.batch``'s scoring: ``map_batches`` over ``--actors`` actors, one
  model load each, then collected in row order;
- ``job``: the whole ``shipyard predict --batch`` (a Ray job: reading, features,
  scoring, writing), for reference.

Rows/s of ``ray`` over ``single`` is the ratio; both score the same joined rows, and the
outputs are checked equal (atol 1e-6). Results: benchmarks/results/batch.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

RESULTS = Path(__file__).parent / "results"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="fraud-detector@champion")
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS / "batch.json")
    args = parser.parse_args()

    import mlflow
    import ray
    from shipyard import batch
    from shipyard.serving import resolve_version
    from shipyard.settings import load_settings

    settings = load_settings()
    resolved = resolve_version(settings, args.model)
    raw = pd.read_parquet(settings.raw_data_dir).drop(columns=["date"], errors="ignore")
    frame = raw.sample(min(args.rows, len(raw)), random_state=0).reset_index(drop=True)
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True).dt.strftime(
        "%Y-%m-%dT%H:%M:%S.%fZ"
    )
    contract = batch._check_fields(settings.tracking_uri, resolved.model, resolved.version,
                                   list(frame.columns))  # fmt: skip
    hook = settings.workload.worker_setup_hook
    from ray._private import ray_constants

    # a driver on the local platform's node: keep Ray from resolving 127.0.0.1 to the
    # machine's address, where the loopback-bound cluster does not listen
    ray_constants.ENABLE_RAY_CLUSTER = False
    ray.init(address=f"127.0.0.1:{settings.ray.head_port}", _node_ip_address="127.0.0.1",
             log_to_driver=False,
             runtime_env={"worker_process_setup_hook": hook} if hook else None)  # fmt: skip
    batch._connect(settings)
    timings: dict[str, float] = {}
    try:
        began = time.perf_counter()
        joined = batch.with_features(settings, contract, frame, None)
        timings["features_s"] = time.perf_counter() - began

        mlflow.set_tracking_uri(settings.tracking_uri)
        began = time.perf_counter()
        scorer = batch.Scorer(settings.tracking_uri, resolved.model, resolved.version)
        timings["single_load_s"] = time.perf_counter() - began
        began = time.perf_counter()
        parts = [scorer(joined.iloc[i : i + args.batch_size])
                 for i in range(0, len(joined), args.batch_size)]  # fmt: skip
        single = pd.concat(parts, ignore_index=True)
        timings["single_s"] = time.perf_counter() - began

        began = time.perf_counter()
        indexed = joined.assign(__row=np.arange(len(joined)))
        scored = ray.data.from_pandas(batch.blocks(indexed, args.batch_size, args.actors)).map_batches(
            batch.Scorer, fn_constructor_args=(settings.tracking_uri, resolved.model,
                                               resolved.version),
            batch_size=args.batch_size, batch_format="pandas", concurrency=args.actors,
            num_cpus=0.5,
        ).to_pandas().sort_values("__row").reset_index(drop=True)  # fmt: skip
        timings["ray_s"] = time.perf_counter() - began
    finally:
        ray.shutdown()
    outputs = [c.name for c in contract.outputs if c.name in single.columns]
    for name in outputs:
        np.testing.assert_allclose(scored[name].to_numpy(float), single[name].to_numpy(float),
                                   atol=1e-6)  # fmt: skip

    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "rows.parquet"
        frame.to_parquet(source, index=False)
        began = time.perf_counter()
        job = subprocess.run([sys.executable, "-m", "shipyard", "predict", "--batch", args.model,
                              "--input", str(source), "--out", str(Path(tmp) / "out.parquet"),
                              "--actors", str(args.actors), "--batch-size", str(args.batch_size),
                              "--json"], capture_output=True, text=True)  # fmt: skip
        timings["job_s"] = time.perf_counter() - began
        if job.returncode != 0:
            print(job.stdout[-2000:] + job.stderr[-2000:], file=sys.stderr)
            return 1
    n = len(frame)
    record = {
        "benchmark": "batch",
        "command": " ".join(["python benchmarks/batch_bench.py", *sys.argv[1:]]),
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "model": f"{resolved.model} version {resolved.version}",
        "rows": n,
        "batch_size": args.batch_size,
        "actors": args.actors,
        "seconds": {k: round(v, 2) for k, v in timings.items()},
        "rows_per_s": {
            "single": round(n / timings["single_s"]),
            "ray": round(n / timings["ray_s"]),
            "features": round(n / timings["features_s"]),
            "job": round(n / timings["job_s"]),
        },  # fmt: skip
        "ray_over_single": round(timings["single_s"] / timings["ray_s"], 3),
        "outputs_equal_atol": 1e-6,
    }
    print(json.dumps(record, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
