"""The model's Serve application: an ingress router in front of two predictors.

``build_app(args)`` is the ``import_path`` target of the Serve config (``serve deploy``
format; the same file KubeRay embeds as ``serveConfigV2``). The application's args
never change after the first deploy; what changes during a rollout travels in
``user_config`` and reaches running replicas through ``reconfigure()``:

- router:    ``{"canary_weight": 0..100, "stable_version": "3", "canary_version": "4"}``
- predictor: ``{"model_version": "3"}`` (``null``: no model, the idle canary)

Ray Serve has no traffic split between deployments, so the router owns it (kept
small): a customer's bucket is a hash of ``customer_id`` in [0, 100); buckets below
the canary weight go to the canary. Raising the weight only adds buckets, so a
customer stays on one version as a rollout advances. The router counts requests,
errors and latencies per variant and pushes them every second to the rollout
controller (a named Ray actor) when one runs.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from ray import serve
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle
from starlette.requests import Request
from starlette.responses import JSONResponse

from services.predictor.app import Predictor
from services.router.schema import RequestError, parse_predict_body

__all__ = ["AppArgs", "Router", "bucket", "build_app", "controller_name"]

log = logging.getLogger("ray.serve")
CONTROLLER_NAMESPACE = "shipyard"
_LATENCY_SAMPLES = 5000  # per variant per report (one second); later ones are counted, not timed


class AppArgs(BaseModel):
    """The application's args: fixed for its lifetime (a change restarts every replica)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, description="registered model name")
    tracking_uri: str = Field(description="MLflow server the replicas load versions from")
    feature_repo: str = Field(default="", description="Feast repo directory (feature_store.yaml)")
    online_features: bool = Field(
        default=True, description="read features from Feast; false: from the request's `features`"
    )
    max_batch_size: int = Field(default=32, ge=1, le=1024)
    batch_wait_timeout_s: float = Field(default=0.005, ge=0, le=1)


def controller_name(app: str) -> str:
    return f"canary-{app}"


def bucket(key: str) -> float:
    """A stable position of ``key`` in [0, 100), with 0.01 resolution."""
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") % 10000) / 100.0


class _Window:
    """Per-variant counts since the last report."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.data: dict[str, dict[str, Any]] = {}
        self.totals: dict[str, dict[str, int]] = {}

    def record(self, variant: str, ok: bool, latency_ms: float) -> None:
        with self.lock:
            w = self.data.setdefault(variant, {"requests": 0, "errors": 0, "latencies_ms": []})
            w["requests"] += 1
            w["errors"] += 0 if ok else 1
            if len(w["latencies_ms"]) < _LATENCY_SAMPLES:
                w["latencies_ms"].append(round(latency_ms, 3))
            t = self.totals.setdefault(variant, {"requests": 0, "errors": 0})
            t["requests"] += 1
            t["errors"] += 0 if ok else 1

    def take(self) -> dict[str, dict[str, Any]]:
        with self.lock:
            data, self.data = self.data, {}
        return data


@serve.deployment
class Router:
    def __init__(self, stable: DeploymentHandle, canary: DeploymentHandle, model: str,
                 online_features: bool = True) -> None:  # fmt: skip
        self.handles = {"stable": stable, "canary": canary}
        self.model = model
        self.online_features = online_features
        self.app = serve.get_replica_context().app_name
        self.replica = serve.get_replica_context().replica_id.unique_id
        self.weight = 0.0
        self.versions: dict[str, str | None] = {"stable": None, "canary": None}
        self.window = _Window()
        self._stop = threading.Event()
        threading.Thread(target=self._report_loop, name="canary-metrics", daemon=True).start()

    def reconfigure(self, config: dict[str, Any]) -> None:
        weight = float(config.get("canary_weight", 0) or 0)
        if not 0 <= weight <= 100:
            raise ValueError(f"canary_weight must be within 0..100, got {weight}")
        self.weight = weight
        self.versions = {"stable": config.get("stable_version"),
                         "canary": config.get("canary_version")}  # fmt: skip
        log.info("router: canary weight %.1f%%, versions %s", self.weight, self.versions)

    def variant_for(self, customer_id: str) -> str:
        if self.weight <= 0 or self.versions["canary"] is None:
            return "stable"
        return "canary" if bucket(customer_id) < self.weight else "stable"

    # -- HTTP ----------------------------------------------------------------------------------
    async def __call__(self, request: Request) -> JSONResponse:
        path = request.url.path.rstrip("/")
        prefix = request.scope.get("root_path", "").rstrip("/")
        path = path[len(prefix) :] if prefix and path.startswith(prefix) else path
        if path == "/predict":
            if request.method != "POST":
                return _error(405, "use POST /predict with a JSON transaction")
            return await self._predict(request)
        if request.method != "GET":
            return _error(405, f"{request.method} is not allowed on {path or '/'}")
        if path == "/healthz":
            return await self._health()
        if path == "":
            return JSONResponse(self.describe())
        return _error(404, f"no route {path}; use POST /predict, GET /healthz or GET /")

    def describe(self) -> dict[str, Any]:
        weights = {"stable": 100.0 - self.weight, "canary": self.weight}
        if self.versions["canary"] is None:
            weights = {"stable": 100.0, "canary": 0.0}
        return {
            "model": self.model,
            "application": self.app,
            "variants": {
                v: {"model_version": self.versions[v], "weight_percent": weights[v]}
                for v in ("stable", "canary")
            },  # fmt: skip
            "split": "sticky per customer_id",
            "features": "Feast online store" if self.online_features else "from the request",
            "replica": self.replica,
            "served_by_this_replica": self.window.totals,
        }

    async def _health(self) -> JSONResponse:
        try:
            info = await self.handles["stable"].info.remote()
        except Exception as exc:  # noqa: BLE001 - readiness reports it
            return JSONResponse({"status": "not ready", "reason": str(exc)[:300]}, status_code=503)
        if not info["loaded"]:
            return JSONResponse({"status": "not ready", "reason": "stable has no model loaded",
                                 **info}, status_code=503)  # fmt: skip
        return JSONResponse({"status": "ready", "model": self.model,
                             "stable_version": info["model_version"]})  # fmt: skip

    async def _predict(self, request: Request) -> JSONResponse:
        try:
            txs, batch = parse_predict_body(await request.body(), self.online_features)
        except RequestError as exc:
            return JSONResponse(exc.body, status_code=exc.status)
        results = await asyncio.gather(*(self._one(tx.payload()) for tx in txs))
        if not batch:
            result = results[0]
            if "error" in result:
                status = 503 if result.pop("overloaded", False) else 500
                return JSONResponse(result, status_code=status)
            return JSONResponse(result)
        failed = sum("error" in r for r in results)
        for r in results:
            r.pop("overloaded", None)
        return JSONResponse({"predictions": results, "count": len(results), "failed": failed})

    async def _one(self, tx: dict[str, Any]) -> dict[str, Any]:
        variant = self.variant_for(tx["customer_id"])
        started = time.perf_counter()
        try:
            result = await self.handles[variant].predict.remote(tx)
        except BackPressureError:
            result = {"error": "the model is overloaded; retry later", "overloaded": True}
        except Exception as exc:  # noqa: BLE001 - a replica died: the client gets a 500
            result = {"error": f"{variant} predictor failed: {type(exc).__name__}"}
        latency = (time.perf_counter() - started) * 1000
        ok = "error" not in result
        if not result.get("overloaded"):
            self.window.record(variant, ok, latency)
        return {"transaction_id": tx["transaction_id"], **result, "variant": variant}

    # -- metrics to the rollout controller -----------------------------------------------------
    def _report_loop(self) -> None:
        import ray

        controller, looked, last = None, 0.0, None
        while not self._stop.wait(1.0):
            data = self.window.take()
            if last is not None and controller is not None:
                done, _ = ray.wait([last], timeout=0)
                if done:
                    try:
                        ray.get(done[0])
                    except Exception:  # noqa: BLE001 - the controller is gone: look it up again
                        controller = None
            if controller is None and time.monotonic() - looked > 3:
                looked = time.monotonic()
                try:
                    controller = ray.get_actor(controller_name(self.app),
                                               namespace=CONTROLLER_NAMESPACE)  # fmt: skip
                except ValueError:
                    controller = None
            if controller is None:
                continue
            report = {"replica": self.replica, "at": time.time(), "weight": self.weight,
                      "versions": dict(self.versions), "variants": data}  # fmt: skip
            last = controller.report.remote(report)

    def __del__(self) -> None:
        self._stop.set()


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def build_app(args: dict[str, Any]) -> Any:
    """The application from its typed args (``AppArgs``)."""
    parsed = AppArgs.model_validate(args)
    common = {"model": parsed.model, "tracking_uri": parsed.tracking_uri,
              "feature_repo": parsed.feature_repo, "online_features": parsed.online_features,
              "max_batch_size": parsed.max_batch_size,
              "batch_wait_timeout_s": parsed.batch_wait_timeout_s}  # fmt: skip
    stable = Predictor.options(name="stable").bind(variant="stable", **common)
    canary = Predictor.options(name="canary").bind(variant="canary", **common)
    return Router.options(name="router").bind(stable, canary, parsed.model, parsed.online_features)
