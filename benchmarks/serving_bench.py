"""Benchmark: model serving, side by side in one run, at concurrency 1 and 16.

    SHIPYARD_DATA_ROOT=... .venv/bin/python benchmarks/serving_bench.py \
        --model fraud-detector --version 2 --requests 2000

Needs a running platform (``shipyard up``, the model registered, Feast online
features materialized); the settings come from the environment (``load_settings()``).
Every target serves the same registered version to the same transactions (a sample of
the raw data, so every customer and merchant is in the online store):

- ``a_inprocess``:  ``mlflow.pyfunc.load_model(...).predict(frame)`` in this process on
  one transaction's model input (built beforehand); concurrency 16 = 16 threads.
- ``b_bare``:       the same model behind a bare uvicorn + Starlette app (1 worker, a
  subprocess of this script on a free 127.0.0.1 port): ``json.loads`` of the
  transaction, the model input frame built as the predictor builds it, ``predict``
  in the thread pool.
- ``c_serve``:      Shipyard's Serve application (router, canary weight 0, features
  from the request, no Feast lookups), through the Serve HTTP proxy.
- ``d_canary10``:   the same with a canary predictor serving the same version at weight 10.
- ``e_feast``:      the Serve application reading features from Feast's online store.
- ``f_nobatch``:    the application of ``c_serve`` with ``max_batch_size`` 1, against
  ``c_serve`` (the default 32) at concurrency 16.

HTTP load is closed-loop: N threads, one ``requests.Session`` each, each sending its
share of the requests back to back; every target is warmed up first. Latency is per
request as the client sees it; throughput is successful requests over the wall time.
``c``/``d`` and ``c``/``f`` are measured interleaved (c, d, d, c in halves) so that
drift on a shared machine hits both alike. Torch uses 1 thread in this process and in
the bare server, as in the Serve replicas (Ray sets ``OMP_NUM_THREADS=1``); the bare
server runs at nice 15 (``--bare-nice``), as Ray runs its workers and so the Serve
replicas, so that neither side is favoured when other work shares the cores.

The benchmark deploys its own applications (``bench-*``) next to whatever is deployed,
through ``put_app`` (which keeps the other applications), and removes them at the end
by writing the config back without them. Results: benchmarks/results/serving.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).parent / "results"
CONCURRENCY = (1, 16)
APP_C, APP_D, APP_E, APP_F = "bench-c", "bench-d", "bench-e", "bench-f-nobatch"
BENCH_APPS = (APP_C, APP_D, APP_E, APP_F)
READY_TIMEOUT_S = 240.0
TARGETS = {
    "a_inprocess": "(a) in-process pyfunc predict",
    "b_bare": "(b) bare uvicorn + Starlette",
    "c_serve": "(c) Serve, canary 0, request features",
    "d_canary10": "(d) Serve, 10 % canary",
    "e_feast": "(e) Serve, Feast online lookups",
}


# -- the model input, as the predictor builds it from a request (online features off) ----------
_SCHEMA: dict[str, Any] = {}


def use_contract(tracking_uri: str, model: str, version: str) -> None:
    """The version's serving contract, read from the registry as the replicas read it."""
    from shipyard.contract import read_contract

    from services.router.schema import RequestSchema

    _SCHEMA["request"] = RequestSchema(read_contract(tracking_uri, model, version), online=False)


def model_frame(tx: dict[str, Any]) -> Any:
    from services.predictor.app import model_frame as frame_of

    schema = _SCHEMA["request"]
    row, errors = schema.validate(tx)
    if errors:
        raise ValueError(f"invalid request: {errors}")
    return frame_of(schema.contract, [row], None)


def _probability(result: Any) -> float:
    import pandas as pd

    if isinstance(result, pd.DataFrame):
        result = result["fraud_probability"]
    return float(list(result)[0])


# -- (b): the bare server, run as `serving_bench.py --bare-server PORT URI MODEL VERSION` ------
def bare_server(port: int, tracking_uri: str, model_name: str, version: str) -> None:
    import mlflow
    import torch
    import uvicorn
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    torch.set_num_threads(1)
    mlflow.set_tracking_uri(tracking_uri)
    model = mlflow.pyfunc.load_model(f"models:/{model_name}/{version}")
    use_contract(tracking_uri, model_name, version)

    def forward(tx: dict[str, Any]) -> float:
        return _probability(model.predict(model_frame(tx)))

    async def predict(request: Request) -> JSONResponse:
        try:
            tx = json.loads(await request.body())
        except ValueError as exc:
            return JSONResponse({"error": f"not JSON: {exc}"}, status_code=400)
        prob = await run_in_threadpool(forward, tx)
        return JSONResponse({"transaction_id": tx.get("transaction_id"),
                             "fraud_probability": prob, "model_version": version})  # fmt: skip

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ready"})

    app = Starlette(routes=[Route("/predict", predict, methods=["POST"]),
                            Route("/healthz", healthz)])  # fmt: skip
    uvicorn.run(app, host="127.0.0.1", port=port, workers=1, log_level="warning",
                access_log=False)  # fmt: skip


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_bare(settings: Any, model: str, version: str,
                nice: int) -> tuple[subprocess.Popen, str]:  # fmt: skip
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, __file__, "--bare-server", str(port), settings.tracking_uri, model,
         version],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        preexec_fn=(lambda: os.nice(nice)) if nice else None,
    )  # fmt: skip
    return proc, f"http://127.0.0.1:{port}"


def _wait_http(url: str, timeout: float, proc: subprocess.Popen | None = None) -> None:
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(
                f"bare server exited {proc.returncode}: {proc.stderr.read()[-2000:]}"
            )
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} not ready after {timeout:.0f}s")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


# -- transactions -----------------------------------------------------------------------------
def _transactions(settings: Any, count: int) -> list[dict[str, Any]]:
    """``count`` transactions sampled from the raw data, each with its online features
    (read once, here, from the same Feast store the ``e`` application reads)."""
    import pandas as pd
    from shipyard.serving import feature_repo

    from pipelines.features.store import FEATURE_SERVICE, open_store
    from pipelines.training.model import FEATURE_INPUTS

    raw = pd.read_parquet(settings.raw_data_dir, columns=["customer_id", "merchant_id", "amount",
                          "currency", "category", "country", "timestamp"])  # fmt: skip
    picks = raw.sample(count, random_state=0, replace=len(raw) < count).reset_index(drop=True)
    store = open_store(Path(feature_repo(settings)))
    rows = [{"customer_id": r.customer_id, "merchant_id": r.merchant_id, "amount": float(r.amount)}
            for r in picks.itertuples()]  # fmt: skip
    online = store.get_online_features(features=store.get_feature_service(FEATURE_SERVICE),
                                       entity_rows=rows).to_dict()  # fmt: skip
    txs = []
    for i, r in enumerate(picks.itertuples()):
        features = {}
        for c in FEATURE_INPUTS:
            v = online[c][i]
            features[c] = None if v is None or (isinstance(v, float) and np.isnan(v)) else float(v)
        ts = pd.Timestamp(r.timestamp).tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        txs.append({"transaction_id": f"bench-{i}", "customer_id": r.customer_id,
                    "merchant_id": r.merchant_id, "amount": float(r.amount),
                    "currency": r.currency, "category": r.category, "country": r.country,
                    "timestamp": ts, **features})  # fmt: skip
    missing = sum(all(t[c] is None for c in FEATURE_INPUTS) for t in txs)
    if missing:
        print(f"warning: {missing} of {count} sampled transactions have no online features")
    return txs


# -- load -------------------------------------------------------------------------------------
Sender = Callable[[Any], tuple[int, str | None]]  # item -> (status, variant)


def _closed_loop(make_sender: Callable[[], Sender], items: list[Any], conc: int,
                 n: int) -> dict[str, Any]:  # fmt: skip
    """``conc`` threads send ``n`` requests in all, each its share back to back."""
    shares = [n // conc + (1 if k < n % conc else 0) for k in range(conc)]
    barrier = threading.Barrier(conc + 1)
    out: list[dict[str, Any]] = [{} for _ in range(conc)]

    def worker(k: int) -> None:
        send = make_sender()
        lat, statuses, variants = [], Counter(), Counter()
        offset = k * 7919
        barrier.wait()
        for j in range(shares[k]):
            item = items[(offset + j) % len(items)]
            t = time.perf_counter()
            try:
                status, variant = send(item)
            except Exception as exc:  # noqa: BLE001 - counted, never fatal
                status, variant = 0, type(exc).__name__
            elapsed = time.perf_counter() - t
            statuses[status] += 1
            if status == 200:
                lat.append(elapsed)
                if variant:
                    variants[variant] += 1
        out[k] = {"latencies": lat, "statuses": statuses, "variants": variants}

    with ThreadPoolExecutor(max_workers=conc) as pool:
        futures = [pool.submit(worker, k) for k in range(conc)]
        barrier.wait()
        began = time.perf_counter()
        for f in futures:
            f.result()
        wall = time.perf_counter() - began
    merged: dict[str, Any] = {"latencies": [], "statuses": Counter(), "variants": Counter(),
                              "wall_s": wall}  # fmt: skip
    for part in out:
        merged["latencies"] += part["latencies"]
        merged["statuses"] += part["statuses"]
        merged["variants"] += part["variants"]
    return merged


def _summary(runs: list[dict[str, Any]], conc: int) -> dict[str, Any]:
    lat = [x for r in runs for x in r["latencies"]]
    statuses: Counter = sum((r["statuses"] for r in runs), Counter())
    variants: Counter = sum((r["variants"] for r in runs), Counter())
    wall = sum(r["wall_s"] for r in runs)
    total = sum(statuses.values())
    ms = np.array(lat) * 1000 if lat else np.array([np.nan])
    row = {
        "concurrency": conc,
        "requests": total,
        "ok": len(lat),
        "errors": {str(k): v for k, v in sorted(statuses.items()) if k != 200},
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "mean_ms": round(float(ms.mean()), 2),
        "throughput_rps": round(len(lat) / wall, 1),
        "wall_s": round(wall, 2),
    }
    if variants:
        row["variants"] = dict(sorted(variants.items()))
    return row


def _warm(n: int, conc: int) -> int:
    return max(20, 2 * conc, n // 10)


def _measure(make_sender: Callable[[], Sender], items: list[Any], conc: int, n: int) -> dict:
    _closed_loop(make_sender, items, conc, _warm(n, conc))
    return _summary([_closed_loop(make_sender, items, conc, n)], conc)


def _interleaved(a: tuple[Callable[[], Sender], list[Any]], b: tuple[Callable[[], Sender], list[Any]],
                 conc: int, n: int) -> tuple[dict, dict]:  # fmt: skip
    """A and B in halves, A B B A, each warmed up first: drift hits both alike."""
    for make, items in (a, b):
        _closed_loop(make, items, conc, _warm(n, conc))
    half = [n // 2, n - n // 2]
    runs_a = [_closed_loop(*a, conc, half[0])]
    runs_b = [_closed_loop(*b, conc, half[0])]
    runs_b.append(_closed_loop(*b, conc, half[1]))
    runs_a.append(_closed_loop(*a, conc, half[1]))
    return _summary(runs_a, conc), _summary(runs_b, conc)


def _http(url: str) -> Callable[[], Sender]:
    def make() -> Sender:
        import requests

        session = requests.Session()
        headers = {"Content-Type": "application/json"}

        def send(body: bytes) -> tuple[int, str | None]:
            resp = session.post(url, data=body, headers=headers, timeout=60)
            variant = resp.json().get("variant") if resp.status_code == 200 else None
            return resp.status_code, variant

        return send

    return make


def _inprocess(model: Any) -> Callable[[], Sender]:
    def make() -> Sender:
        def send(frame: Any) -> tuple[int, str | None]:
            _probability(model.predict(frame))
            return 200, None

        return send

    return make


# -- Serve applications -----------------------------------------------------------------------
def _bench_app(settings: Any, model: str, version: str, name: str, *, online: bool,
               max_batch_size: int | None = None, canary_weight: float = 0.0) -> dict[str, Any]:  # fmt: skip
    from shipyard.serving import app_config, with_rollout

    s = settings.model_copy(deep=True)
    s.serve.online_features = online
    if max_batch_size is not None:
        s.serve.max_batch_size = max_batch_size
    app = copy.deepcopy(app_config(s, model, version))
    app["name"], app["route_prefix"] = name, f"/{name}"
    if canary_weight:
        app = with_rollout(app, canary_version=version, canary_weight=canary_weight)
    return app


def _replicas(backend: Any, name: str) -> dict[str, Any]:
    status = backend.app_status(name)
    return {d: v.get("replicas") for d, v in (status.deployments if status else {}).items()}


def _replica_nice(backend: Any, name: str) -> dict[str, int | None]:
    """The scheduler niceness of each deployment's first replica process."""
    import psutil

    app = (backend._details().get("applications") or {}).get(name) or {}
    out: dict[str, int | None] = {}
    for dep, info in (app.get("deployments") or {}).items():
        pids = [r.get("pid") for r in info.get("replicas") or [] if r.get("pid")]
        try:
            out[dep] = psutil.Process(pids[0]).nice() if pids else None
        except psutil.Error:
            out[dep] = None
    return out


def _others(backend: Any) -> dict[str, Any]:
    """Other applications' status and replica ids: proof they were left alone."""
    details = backend._details()
    out = {}
    for name, app in (details.get("applications") or {}).items():
        if name in BENCH_APPS:
            continue
        ids = sorted(r.get("replica_id", "") for d in (app.get("deployments") or {}).values()
                     for r in d.get("replicas") or [])  # fmt: skip
        out[name] = {"status": app.get("status"), "replica_ids": ids}
    return out


def _deploy(settings: Any, backend: Any, apps: list[dict[str, Any]]) -> float:
    from shipyard.serve_backends import put_app, wait_ready
    from shipyard.serving import serve_config, validate_config

    started = time.monotonic()
    for app in apps:
        config = serve_config(settings, [app])
        validate_config(config)
        put_app(backend, app, config)
    for app in apps:
        need = {"router": 1, "stable": 1}
        if any(d["name"] == "canary" and d["user_config"].get("model_version")
               for d in app["deployments"]):  # fmt: skip
            need["canary"] = 1
        wait_ready(backend, app["name"], need, timeout=READY_TIMEOUT_S)
        _wait_http(f"{settings.serve_url}{app['route_prefix']}/healthz", 60)
    return round(time.monotonic() - started, 1)


def _remove(backend: Any, names: tuple[str, ...] | list[str]) -> None:
    """Write the config back without these applications; every other one is kept."""
    config = backend.read_config()
    apps = config.get("applications") or []
    keep = [a for a in apps if a.get("name") not in names]
    if len(keep) == len(apps):
        return
    config["applications"] = keep
    backend.write_config(config)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if all(backend.app_status(n) is None for n in names):
            return
        time.sleep(1)
    print(f"warning: {', '.join(names)} still listed 120 s after removal", flush=True)


# -- report -----------------------------------------------------------------------------------
def _machine() -> dict[str, Any]:
    mem = ""
    try:
        kb = int(next(x for x in Path("/proc/meminfo").read_text().splitlines()
                      if x.startswith("MemTotal")).split()[1])  # fmt: skip
        mem = f", {kb / 1024 / 1024:.0f} GiB"
    except (OSError, StopIteration, ValueError):
        pass
    import mlflow
    import ray

    return {
        "summary": f"{platform.machine()}, {os.cpu_count()} cores{mem}, "
        f"Python {platform.python_version()}",
        "ray": ray.__version__,
        "mlflow": mlflow.__version__,
        "loadavg_at_start": os.getloadavg(),
    }


def _ratio(x: float, y: float) -> float:
    return round(x / y, 3) if y else float("nan")


def _table(results: dict[str, Any]) -> str:
    lines = [f"{'target':40} {'conc':>4} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8} {'errors':>8}"]
    for key, rows in results.items():
        for row in rows.values():
            errors = sum(row["errors"].values())
            label = TARGETS.get(key, key)
            lines.append(f"{label:40} {row['concurrency']:>4} {row['p50_ms']:>8.2f} "
                         f"{row['p99_ms']:>8.2f} {row['throughput_rps']:>8.1f} {errors:>8}")  # fmt: skip
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="fraud-detector")
    parser.add_argument("--version", default="2")
    parser.add_argument("--requests", type=int, default=2000,
                        help="measured requests per cell at concurrency 16")  # fmt: skip
    parser.add_argument("--requests-c1", type=int, default=None,
                        help="measured requests per cell at concurrency 1 (default: --requests / 4)")  # fmt: skip
    parser.add_argument("--bare-nice", type=int, default=15,
                        help="niceness of the bare server (Ray starts its workers, and so "
                        "the Serve replicas, at 15)")  # fmt: skip
    parser.add_argument("--transactions", type=int, default=256,
                        help="distinct transactions sampled from the raw data")  # fmt: skip
    parser.add_argument("--bare-server", nargs=4, metavar=("PORT", "URI", "MODEL", "VERSION"),
                        help=argparse.SUPPRESS)  # fmt: skip
    args = parser.parse_args()
    if args.bare_server:
        port, uri, model, version = args.bare_server
        bare_server(int(port), uri, model, version)
        return 0

    import mlflow
    import torch
    from shipyard.serving import backend_for, resolve_version
    from shipyard.settings import load_settings

    def _term(*_: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _term)
    settings = load_settings()
    model, version = args.model, str(args.version)
    resolved = resolve_version(settings, f"{model}/{version}")  # READY, or it stops here
    counts = {1: args.requests_c1 or max(1, args.requests // 4), 16: args.requests}
    command = "python benchmarks/serving_bench.py " + " ".join(sys.argv[1:])
    began = time.monotonic()
    machine = _machine()
    backend = backend_for(settings)
    others_before = _others(backend)
    _remove(backend, BENCH_APPS)  # left over from an interrupted run
    print(f"{model} version {resolved.version}; requests per cell: c1 {counts[1]}, c16 {counts[16]}; "
          f"Serve at {settings.serve_url}", flush=True)  # fmt: skip

    from pipelines.training.model import FEATURE_INPUTS

    use_contract(settings.tracking_uri, model, resolved.version)
    txs = _transactions(settings, args.transactions)
    with_features = [json.dumps(t).encode() for t in txs]
    without = [json.dumps({k: v for k, v in t.items() if k not in FEATURE_INPUTS}).encode()
               for t in txs]  # fmt: skip
    frames = [model_frame(t) for t in txs]

    results: dict[str, dict[str, Any]] = {k: {} for k in TARGETS}
    replicas: dict[str, Any] = {}
    deploy_s: dict[str, float] = {}
    loadavg: dict[str, Any] = {}
    bare = None
    try:
        torch.set_num_threads(1)
        mlflow.set_tracking_uri(settings.tracking_uri)
        pyfunc = mlflow.pyfunc.load_model(f"models:/{model}/{version}")
        for conc in CONCURRENCY:
            results["a_inprocess"][f"c{conc}"] = _measure(
                _inprocess(pyfunc), frames, conc, counts[conc]
            )
            print(json.dumps({"a_inprocess": results["a_inprocess"][f"c{conc}"]}), flush=True)
        # then (b) starts while (c) and (d) deploy; nothing is measured meanwhile
        bare, bare_url = _start_bare(settings, model, version, args.bare_nice)
        app_c = _bench_app(settings, model, version, APP_C, online=False)
        app_d = _bench_app(settings, model, version, APP_D, online=False, canary_weight=10)
        deploy_s["c+d"] = _deploy(settings, backend, [app_c, app_d])
        _wait_http(f"{bare_url}/healthz", 120, bare)
        import psutil

        nice = {"bench_client": psutil.Process().nice(), "bare_server": psutil.Process(bare.pid).nice(),
                "serve_replicas": {APP_C: _replica_nice(backend, APP_C)}}  # fmt: skip
        print(f"deployed {APP_C}, {APP_D} in {deploy_s['c+d']}s; bare server up; "
              f"niceness {json.dumps(nice)}", flush=True)  # fmt: skip
        url = {k: f"{settings.serve_url}/{n}/predict" for k, n in
               (("c_serve", APP_C), ("d_canary10", APP_D), ("e_feast", APP_E), ("f", APP_F))}  # fmt: skip
        for conc in CONCURRENCY:
            n = counts[conc]
            results["b_bare"][f"c{conc}"] = _measure(
                _http(f"{bare_url}/predict"), with_features, conc, n
            )
            c_row, d_row = _interleaved((_http(url["c_serve"]), with_features),
                                        (_http(url["d_canary10"]), with_features), conc, n)  # fmt: skip
            results["c_serve"][f"c{conc}"], results["d_canary10"][f"c{conc}"] = c_row, d_row
            replicas[f"c{conc}"] = {
                APP_C: _replicas(backend, APP_C),
                APP_D: _replicas(backend, APP_D),
            }
            loadavg[f"b-d c{conc}"] = os.getloadavg()
            for key in ("b_bare", "c_serve", "d_canary10"):
                print(json.dumps({key: results[key][f"c{conc}"]}), flush=True)
        _stop(bare)
        _remove(backend, [APP_D])

        # (f) batching off vs on at concurrency 16, interleaved with (c) (on: the default)
        app_f = _bench_app(settings, model, version, APP_F, online=False, max_batch_size=1)
        deploy_s["f"] = _deploy(settings, backend, [app_f])
        on, off = _interleaved((_http(url["c_serve"]), with_features),
                               (_http(url["f"]), with_features), 16, counts[16])  # fmt: skip
        batching = {"max_batch_size_default": {"max_batch_size": settings.serve.max_batch_size, **on},
                    "max_batch_size_1": {"max_batch_size": 1, **off}}  # fmt: skip
        replicas["f c16"] = {APP_C: _replicas(backend, APP_C), APP_F: _replicas(backend, APP_F)}
        loadavg["f c16"] = os.getloadavg()
        print(json.dumps({"batching": batching}), flush=True)
        _remove(backend, [APP_C, APP_F])

        # (e) Feast online lookups
        app_e = _bench_app(settings, model, version, APP_E, online=True)
        deploy_s["e"] = _deploy(settings, backend, [app_e])
        for conc in CONCURRENCY:
            results["e_feast"][f"c{conc}"] = _measure(
                _http(url["e_feast"]), without, conc, counts[conc]
            )
            print(json.dumps({"e_feast": results["e_feast"][f"c{conc}"]}), flush=True)
        replicas["e"] = {APP_E: _replicas(backend, APP_E)}
        loadavg["e"] = os.getloadavg()
    finally:
        if bare is not None:
            _stop(bare)
        _remove(backend, BENCH_APPS)
    others_after = _others(backend)

    r = results
    ratios = {
        "c_over_b_p50": {c: _ratio(r["c_serve"][c]["p50_ms"], r["b_bare"][c]["p50_ms"]) for c in ("c1", "c16")},
        "d_over_c_p50": {c: _ratio(r["d_canary10"][c]["p50_ms"], r["c_serve"][c]["p50_ms"]) for c in ("c1", "c16")},
        "e_over_c_p50": {c: _ratio(r["e_feast"][c]["p50_ms"], r["c_serve"][c]["p50_ms"]) for c in ("c1", "c16")},
        "b_over_a_p50": {c: _ratio(r["b_bare"][c]["p50_ms"], r["a_inprocess"][c]["p50_ms"]) for c in ("c1", "c16")},
        "batching_throughput_on_over_off_c16": _ratio(
            batching["max_batch_size_default"]["throughput_rps"],
            batching["max_batch_size_1"]["throughput_rps"]),
    }  # fmt: skip
    goals = {
        "c_over_b_p50_le_5x": {"target": 5.0, "values": ratios["c_over_b_p50"],
                               "met": all(v <= 5.0 for v in ratios["c_over_b_p50"].values())},
        "d_over_c_p50_le_1.10x": {"target": 1.10, "values": ratios["d_over_c_p50"],
                                  "met": all(v <= 1.10 for v in ratios["d_over_c_p50"].values())},
        "batching_raises_throughput_c16": {
            "values": ratios["batching_throughput_on_over_off_c16"],
            "met": ratios["batching_throughput_on_over_off_c16"] > 1.0},
    }  # fmt: skip
    errors = {
        f"{k} {c}": row["errors"]
        for k, rows in r.items()
        for c, row in rows.items()
        if row["errors"]
    }
    errors.update({f"batching {k}": v["errors"] for k, v in batching.items() if v["errors"]})
    record = {
        "benchmark": "serving",
        "command": command,
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine["summary"],
        "machine_detail": machine | {"loadavg_during": loadavg, "loadavg_at_end": os.getloadavg()},
        "model": model,
        "version": resolved.version,
        "requests_per_cell": {"c1": counts[1], "c16": counts[16]},
        "warmup_per_cell": {"c1": _warm(counts[1], 1), "c16": _warm(counts[16], 16)},
        "transactions": args.transactions,
        "serve": {
            "url": settings.serve_url,
            "max_batch_size": settings.serve.max_batch_size,
            "batch_wait_timeout_s": settings.serve.batch_wait_timeout_s,
            "applications": list(BENCH_APPS),
        },  # fmt: skip
        "deploy_seconds": deploy_s,
        "niceness": nice,
        "results": r,
        "batching_c16": batching,
        "ratios": ratios,
        "goals": goals,
        "errors": errors,
        "replicas_after": replicas,
        "other_applications_untouched": others_before == others_after,
        "other_applications": {"before": others_before, "after": others_after},
        "total_seconds": round(time.monotonic() - began, 1),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "serving.json").write_text(json.dumps(record, indent=2) + "\n")

    print()
    print(_table(r))
    for key, row in batching.items():
        print(f"(f) batching {key:31} {16:>4} {row['p50_ms']:>8.2f} {row['p99_ms']:>8.2f} "
              f"{row['throughput_rps']:>8.1f} {sum(row['errors'].values()):>8}")  # fmt: skip
    print()
    for name, goal in goals.items():
        print(f"goal {name:34} {json.dumps(goal['values'])}: {'met' if goal['met'] else 'NOT met'}")
    print(f"e/c p50 (Feast lookups): {json.dumps(ratios['e_over_c_p50'])}")
    if errors:
        print(f"non-200 answers: {json.dumps(errors)}")
    if others_before != others_after:
        print("warning: another application's status or replicas changed during the run")
    print(f"total {record['total_seconds']}s; written to {RESULTS / 'serving.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
