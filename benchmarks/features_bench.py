"""Benchmark: the feature pipeline (Ray Data vs single-process pandas) and Feast online
lookups (vs raw reads of the same keys from SQLite and Redis).

    .venv/bin/python benchmarks/features_bench.py pipeline --rows 1000000 10000000
    .venv/bin/python benchmarks/features_bench.py online --rows 200000 --lookups 2000

``pipeline``: per size, one dataset is generated, then each engine builds the
same feature tables from it in a fresh process, pandas first, Ray second (a
private local Ray with all cores), side by side. Wall time includes reading,
validation, both feature tables and writing; Ray's includes its start-up.

``online``: builds and materializes a store per profile (SQLite; Redis + Postgres
registry), then times, for one transaction (customer and merchant, every feature of
``fraud_model_v1`` including the on-demand one), Feast's ``get_online_features``,
Shipyard's reader (``shipyard.online.OnlineFeatures``: the provider's
``online_read`` per view, checked equal to Feast's answer first) and raw reads of the
same two keys (SQLite SELECT by primary key; Redis HGETALL).
Results go to benchmarks/results/features-*.json.
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
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).parent / "results"

BUILD_CHILD = r"""
import json, resource, sys, time
from pathlib import Path
from pipelines.features.build import BuildConfig, build, build_pandas
engine, source, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
t = time.perf_counter()
cfg = BuildConfig(input=source, out=out)
if engine == "ray":
    from pipelines.features._ray import connect
    connect(num_cpus=int(sys.argv[4]), object_store_memory=int(sys.argv[5]) << 20)
    res = build(cfg, say=lambda m: print(m, file=sys.stderr, flush=True))
else:
    res = build_pandas(cfg, say=lambda m: print(m, file=sys.stderr, flush=True))
secs = time.perf_counter() - t
print(json.dumps({"engine": engine, "seconds": round(secs, 2), "rows_read": res.rows_read,
                  "customer_rows": res.customer_rows, "merchant_rows": res.merchant_rows,
                  "driver_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}))
"""


def _machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def _record(name: str, command: str, results: Any) -> None:
    record = {
        "benchmark": name,
        "command": command,
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": _machine(),
        "results": results,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(record, indent=2) + "\n")


def pipeline(rows_list: list[int], cpus: int, object_store_mb: int) -> list[dict]:
    from pipelines.data.generate import GenerateConfig, generate

    results = []
    for rows in rows_list:
        work = Path(tempfile.mkdtemp(prefix="feat-bench-"))
        try:
            source = work / "raw"
            generate(GenerateConfig(rows=rows, seed=1), source)
            row: dict[str, Any] = {"rows": rows}
            for engine in ("pandas", "ray"):
                out = work / f"out-{engine}"
                proc = subprocess.run(
                    [sys.executable, "-c", BUILD_CHILD, engine, str(source), str(out), str(cpus),
                     str(object_store_mb)],
                    capture_output=True, text=True,
                )  # fmt: skip
                if proc.returncode != 0:
                    raise SystemExit(f"{engine} build failed:\n{proc.stderr[-4000:]}")
                line = next(
                    x for x in reversed(proc.stdout.splitlines()) if x.startswith('{"engine')
                )
                res = json.loads(line)
                row[engine] = res | {"rows_per_s": round(rows / res["seconds"])}
                shutil.rmtree(out, ignore_errors=True)
                print(json.dumps({"rows": rows, engine: row[engine]}), flush=True)
            row["ray_over_pandas"] = round(row["ray"]["seconds"] / row["pandas"]["seconds"], 3)
            results.append(row)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    if len(results) > 1:
        first, last = results[0], results[-1]
        scale = last["rows"] / first["rows"]
        for engine in ("pandas", "ray"):
            growth = last[engine]["seconds"] / first[engine]["seconds"]
            results.append({f"{engine}_time_growth": round(growth, 2), "row_growth": scale})
    return results


def _percentiles(samples: list[float]) -> dict[str, float]:
    ms = np.array(samples) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3),
            "p99_ms": round(float(np.percentile(ms, 99)), 3),
            "mean_ms": round(float(ms.mean()), 3)}  # fmt: skip


def _time(fn, n: int) -> dict[str, float]:
    for _ in range(min(50, n)):  # warm caches and connections
        fn()
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return _percentiles(samples)


def _key(name: str, value: str) -> Any:
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    return EntityKey(join_keys=[name], entity_values=[Value(string_val=value)])


def _bench_profile(profile: str, picks: list[dict], lookups: int) -> dict:
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.infra.online_stores.helpers import _redis_key
    from shipyard.contract import Column, ServingContract
    from shipyard.features import apply
    from shipyard.online import OnlineFeatures
    from shipyard.settings import load_settings

    from pipelines.features import store as fs

    os.environ["SHIPYARD_PROFILE"] = profile
    os.environ["SHIPYARD_FEATURES__PROJECT"] = f"bench_{uuid.uuid4().hex[:8]}"
    settings = load_settings()
    project = settings.features.project
    apply(settings)
    repo = fs.write_repo(settings)
    fs.materialize(repo)
    store = fs.open_store(repo)
    service = store.get_feature_service(fs.FEATURE_SERVICE)
    rows = iter(picks * 2)

    def feast_lookup() -> None:
        store.get_online_features(features=service, entity_rows=[next(rows)]).to_dict()

    contract = ServingContract("bench", "0", [Column("amount", "double")], [],
                               feature_service=fs.FEATURE_SERVICE,
                               entity_keys=["customer_id", "merchant_id"])  # fmt: skip
    reader = OnlineFeatures.open(str(repo), contract, store=store)
    for pick in picks[:50]:  # the same answer as Feast's, or the timing means nothing
        expected = store.get_online_features(features=service, entity_rows=[pick]).to_dict()
        if reader.read([pick])[0] != expected:
            raise SystemExit(f"shipyard.online differs from Feast for {pick}")
    fast_rows = iter(picks * 2)

    def fast_lookup() -> None:
        reader.read([next(fast_rows)])

    keys = iter(picks * 2)
    entities = (("customer_features", "customer_id"), ("merchant_features", "merchant_id"))
    if profile == "local":
        import sqlite3

        conn = sqlite3.connect(str(settings.features_dir / "online.db"))

        def raw_lookup() -> None:
            p = next(keys)
            for view, name in entities:
                conn.execute(
                    f"SELECT feature_name, value, event_ts FROM {project}_{view} "
                    "WHERE entity_key = ?",
                    (serialize_entity_key(_key(name, p[name]), 3),),
                ).fetchall()
    else:
        import redis

        host, port = settings.features.redis.split(",")[0].split(":")
        client = redis.Redis(host=host, port=int(port))

        def raw_lookup() -> None:
            p = next(keys)
            for _, name in entities:
                client.hgetall(_redis_key(project, _key(name, p[name]), 3))

    try:
        sdk = _time(feast_lookup, lookups)
        fast = _time(fast_lookup, lookups)
        raw = _time(raw_lookup, lookups)
        return {
            "profile": profile,
            "lookups": lookups,
            "feast_get_online_features": sdk,
            "shipyard_online_read": fast,
            "raw_read_same_keys": raw,
            "p50_over_raw": {"feast": round(sdk["p50_ms"] / raw["p50_ms"], 1),
                             "shipyard_online": round(fast["p50_ms"] / raw["p50_ms"], 1)},
        }  # fmt: skip
    finally:
        fs.remove_project(store)


def online(rows: int, lookups: int) -> list[dict]:
    import pandas as pd
    from shipyard.settings import load_settings

    from pipelines.data.generate import GenerateConfig, generate
    from pipelines.features._ray import connect
    from pipelines.features.build import BuildConfig, build

    work = Path(tempfile.mkdtemp(prefix="online-bench-"))
    results = []
    try:
        os.environ["SHIPYARD_DATA_ROOT"] = str(work)
        generate(GenerateConfig(rows=rows, seed=2), work / "raw")
        connect(num_cpus=os.cpu_count())
        features = load_settings().features_dir
        build(BuildConfig(input=work / "raw", out=features), say=lambda m: None)
        raw = pd.read_parquet(work / "raw", columns=["customer_id", "merchant_id", "amount"])
        picks = raw.sample(lookups, random_state=0, replace=True).to_dict("records")
        for profile in ("local", "cluster"):
            row = _bench_profile(profile, picks, lookups)
            print(json.dumps(row), flush=True)
            results.append(row)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return results


def main() -> int:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="part", required=True)
    p = sub.add_parser("pipeline")
    p.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    p.add_argument("--cpus", type=int, default=os.cpu_count())
    p.add_argument("--object-store-mb", type=int, default=4096)
    o = sub.add_parser("online")
    o.add_argument("--rows", type=int, default=200_000)
    o.add_argument("--lookups", type=int, default=2000)
    args = parser.parse_args()
    command = "python benchmarks/features_bench.py " + " ".join(sys.argv[1:])
    if args.part == "pipeline":
        _record("features-pipeline", command, pipeline(args.rows, args.cpus, args.object_store_mb))
    else:
        _record("features-online", command, online(args.rows, args.lookups))
    return 0


if __name__ == "__main__":
    sys.exit(main())
