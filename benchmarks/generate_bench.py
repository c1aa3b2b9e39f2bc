"""Benchmark: raw-transaction generation throughput and peak memory.

    .venv/bin/python benchmarks/generate_bench.py --rows 1000000 10000000

Each size runs in a fresh process so peak RSS (ru_maxrss) is per size; the
output directory is removed afterwards. Results go to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
from pipelines.data.generate import GenerateConfig, generate
rows, out = int(sys.argv[1]), sys.argv[2]
t = time.perf_counter()
res = generate(GenerateConfig(rows=rows, seed=1), out)
secs = time.perf_counter() - t
print(json.dumps({"rows": rows, "seconds": round(secs, 2), "rows_per_s": round(rows / secs),
                  "files": res.files, "fraud_rate": round(res.fraud_rate, 5),
                  "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}))
"""


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    args = parser.parse_args()
    results = []
    for rows in args.rows:
        out = Path(tempfile.mkdtemp(prefix="gen-bench-"))
        try:
            proc = subprocess.run([sys.executable, "-c", CHILD, str(rows), str(out / "tx")],
                                  capture_output=True, text=True, check=True)  # fmt: skip
            size = sum(f.stat().st_size for f in out.rglob("*.parquet"))
            row = json.loads(proc.stdout) | {"parquet_mb": round(size / 2**20)}
        finally:
            shutil.rmtree(out, ignore_errors=True)
        print(json.dumps(row))
        results.append(row)
    record = {
        "benchmark": "generate",
        "command": "python benchmarks/generate_bench.py --rows " + " ".join(map(str, args.rows)),
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "results": results,
    }
    dest = Path(__file__).parent / "results" / "generate.json"
    dest.parent.mkdir(exist_ok=True)
    dest.write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
