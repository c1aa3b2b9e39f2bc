"""Where a batch job's time goes: the fixed costs of ``shipyard predict --batch`` (the Ray
job's start, Ray Data's start-up, Feast's join) against its cost per row.

    make demo   # or any running platform with the model registered and features built
    .venv/bin/python benchmarks/batch_profile.py [--model fraud-detector@champion] [--sizes 2000,100000]

Runs the whole job (``shipyard predict --batch ... --json``, a Ray job) on raw
transactions of the platform's data at each size, twice per size, interleaved, and
reads the phases the job reports (``shipyard.batch.main``): ``connect_s`` (joining
the cluster in the job's driver), ``read_s``, ``features_s`` (Feast's point-in-time
join), ``first_block_s`` (Ray Data's start-up: the actor pool started, one model load
per actor, the first block scored), ``score_s`` and ``write_s``; ``outside_s`` is the
CLI's wall time minus those (the CLI's start, resolving the version, the job's
submission, its driver's start and imports, the result's return). A straight line
through the sizes' medians gives each phase's fixed seconds (the intercept) and
microseconds per row (the slope). Results: benchmarks/results/batch-profile.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

RESULTS = Path(__file__).parent / "results"
PHASES = ["connect_s", "read_s", "features_s", "first_block_s", "score_s", "write_s"]


def run_job(model: str, source: Path, out: Path) -> dict:
    began = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "shipyard", "predict", "--batch", model,
                           "--input", str(source), "--out", str(out), "--json"],
                          capture_output=True, text=True)  # fmt: skip
    wall = time.perf_counter() - began
    if done.returncode != 0:
        raise SystemExit(f"the job failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    result = (json.loads(lines[-1].removeprefix("RESULT ")) if lines
              else json.loads(done.stdout[done.stdout.rindex("\n{") + 1 :]))  # fmt: skip
    phases = result["phases"]
    inside = sum(phases.get(k, 0.0) for k in PHASES if k != "first_block_s")
    return phases | {"wall_s": wall, "outside_s": wall - inside}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="fraud-detector@champion")
    parser.add_argument("--sizes", default="2000,100000")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS / "batch-profile.json")
    args = parser.parse_args()

    from shipyard.settings import load_settings

    settings = load_settings()
    sizes = [int(s) for s in args.sizes.split(",")]
    raw = pd.read_parquet(settings.raw_data_dir).drop(columns=["date"], errors="ignore")
    runs: dict[int, list[dict]] = {n: [] for n in sizes}
    with tempfile.TemporaryDirectory() as tmp:
        sources = {}
        for n in sizes:
            frame = raw.sample(min(n, len(raw)), random_state=0).reset_index(drop=True)
            frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True).dt.strftime(
                "%Y-%m-%dT%H:%M:%S.%fZ")  # fmt: skip
            sources[n] = Path(tmp) / f"rows-{n}.parquet"
            frame.to_parquet(sources[n], index=False)
        for r in range(args.repeats):
            for n in sizes:  # interleaved: a slow moment of the machine hits every size
                runs[n].append(run_job(args.model, sources[n], Path(tmp) / "out.parquet"))
                print(f"repeat {r + 1}, {n:,} rows: " + ", ".join(
                    f"{k} {v:.2f}" for k, v in runs[n][-1].items()), file=sys.stderr)  # fmt: skip
    keys = [*PHASES, "outside_s", "wall_s"]
    medians = {n: {k: statistics.median(run.get(k, 0.0) for run in runs[n]) for k in keys}
               for n in sizes}  # fmt: skip
    lo, hi = min(sizes), max(sizes)
    fit = {}
    for k in keys:
        slope = (medians[hi][k] - medians[lo][k]) / (hi - lo)
        fit[k] = {"fixed_s": round(medians[lo][k] - slope * lo, 2),
                  "us_per_row": round(slope * 1e6, 1)}  # fmt: skip
    record = {
        "benchmark": "batch-profile",
        "command": " ".join(["python benchmarks/batch_profile.py", *sys.argv[1:]]),
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "model": args.model,
        "median_seconds": {
            str(n): {k: round(v, 2) for k, v in medians[n].items()} for n in sizes
        },  # fmt: skip
        "fit": fit,
        "runs": {
            str(n): [{k: round(v, 3) for k, v in run.items()} for run in runs[n]] for n in sizes
        },  # fmt: skip
    }
    print(json.dumps(record, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
