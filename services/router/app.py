"""The model's Serve application: an ingress router in front of two predictors.

``build_app(args)`` is the ``import_path`` target of the Serve config (``serve deploy``
format; the same file KubeRay embeds as ``serveConfigV2``). The application's args
never change after the first deploy; what changes during a rollout travels in
``user_config`` and reaches running replicas through ``reconfigure()``:

- router:    ``{"canary_weight": 0..100, "stable_version": "3", "canary_version": "4"}``
- predictor: ``{"model_version": "3"}`` (``null``: no model, the idle canary)

The router knows no model: it reads each version's serving contract from the
registry (``shipyard.contract``: the signature and ``shipyard.*`` tags) when
``reconfigure`` names it, validates requests against it, in Shipyard's, MLflow's and
the Open Inference Protocol's formats (``services.router.formats``), and hands each
validated record to a predictor.

Ray Serve has no traffic split between deployments, so the router owns it (kept
small): a record's bucket is a hash of the contract's sticky key (a customer, a
user) in [0, 100); buckets below the canary weight go to the canary. Raising the
weight only adds buckets, so a key stays on one version as a rollout advances. A
model without a sticky key is split per request. In a rollout's shadow phase
(``shadow_weight`` > 0 in ``user_config``) that share of stable's records is also sent
to the canary (``predict(row, shadow=True)``: logged as variant ``shadow``); the client
gets stable's answer without waiting for it, and the router compares the two answers
(``shipyard.canary.analysis.ShadowReport``). The router counts requests,
errors and latencies per variant and pushes them every second to the rollout
controller (a named Ray actor) when one runs.

The same loop exports them through Ray's metrics, so Prometheus scrapes them with the
rest of Ray's (``ray_`` prefixed; the chart's Grafana dashboard shows a rollout's
canary against stable): ``shipyard_requests{model,route,code}`` (HTTP requests by
status class), ``shipyard_predictions{model,version,variant,outcome}`` (records: ok,
error, shed, rejected) and ``shipyard_prediction_latency_ms{model,version,variant}``
(a histogram). Every 30 s it also reads the last ``monitor check``'s summary next to
the inference log (``shipyard.monitor.gauges_path``), and sets it every second (Ray
reports a gauge only when it was set since its last export) into gauges:
``shipyard_monitor_drift_share{model,version}``,
``shipyard_monitor_alerts{model,version}`` and
``shipyard_monitor_live_quality{model,version,variant,metric}``.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import hashlib
import json
import logging
import math
import random
import threading
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from ray import serve
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle
from shipyard.canary.analysis import RouterReport, ShadowReport, VariantReport
from shipyard.canary.controller import NAMESPACE as CONTROLLER_NAMESPACE
from shipyard.canary.controller import controller_name
from shipyard.contract import read_contract
from shipyard.inference_log import LogConfig
from shipyard.serving import BACKPRESSURE
from starlette.requests import Request
from starlette.responses import Response

from services.predictor.app import Predictor
from services.router.formats import (
    mlflow_records,
    oip_metadata,
    oip_records,
    oip_response,
    predict_records,
)
from services.router.schema import MAX_BODY_BYTES, RequestError, RequestSchema, parse_json

# what a 503 tells the client, as the proxy does when it sheds (serving.BACKPRESSURE)
RETRY_AFTER = {"Retry-After": str(BACKPRESSURE["retry_after_s"])}

__all__ = ["AppArgs", "Router", "bucket", "build_app", "controller_name", "json_response"]

log = logging.getLogger("ray.serve")


class AppArgs(BaseModel):
    """The application's args: fixed for its lifetime (a change restarts every replica)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, description="registered model name")
    tracking_uri: str = Field(description="MLflow server the replicas load versions from")
    feature_repo: str = Field(default="", description="Feast repo directory (feature_store.yaml)")
    online_features: bool = Field(
        default=True,
        description="read the contract's features from Feast; false: clients send them as "
        "fields of the request",
    )
    max_batch_size: int = Field(default=32, ge=1, le=1024)
    batch_wait_timeout_s: float = Field(default=0.0, ge=0, le=1)
    inference_log: LogConfig | None = Field(
        default=None, description="where the predictors record what they serve; null: nowhere"
    )


def bucket(key: str) -> float:
    """A stable position of ``key`` in [0, 100), with 0.01 resolution."""
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return (int.from_bytes(digest, "big") % 10000) / 100.0


def _outcome(status: int) -> str:
    """An answer's outcome in the metrics: ok, rejected (4xx), shed (503), error (5xx)."""
    return ("ok" if status < 400 else "rejected" if status < 500
            else "shed" if status == 503 else "error")  # fmt: skip


class _Window:
    """Per-variant counts since the last report to the rollout controller, and what
    was served since the last export to Ray's metrics."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.data: dict[str, VariantReport] = {}
        self.totals: dict[str, dict[str, int]] = {}
        # (variant, version that answered, outcome, latency ms)
        self.answers: list[tuple[str, str, str, float]] = []
        self.requests: collections.Counter[tuple[str, str]] = collections.Counter()
        self.shadow = ShadowReport()
        self.compares: collections.Counter[tuple[str, str]] = collections.Counter()

    def shadowed(self, stable: dict[str, Any], shadow: dict[str, Any] | None, version: str,
                 latency_ms: float, output: str | None, threshold: float) -> None:  # fmt: skip
        """A mirrored record's shadow answer (None: the call failed) against stable's."""
        outcome = _outcome(500 if shadow is None else int(shadow.get("status", 200)))
        with self.lock:
            diff = self.shadow.record(stable, shadow, latency_ms, output, threshold)
            self.answers.append(("shadow", version, outcome, latency_ms))
            if diff is not None:
                self.compares[(version, "disagree" if diff[1] else "agree")] += 1

    def take_shadow(self) -> ShadowReport:
        with self.lock:
            shadow, self.shadow = self.shadow, ShadowReport()
        return shadow

    def answered(self, variant: str, version: str, status: int, latency_ms: float) -> None:
        """A predictor's answer: for the metrics, and for the controller unless shed (a
        client's mistake, 422, is not the model's error)."""
        with self.lock:
            self.answers.append((variant, version, _outcome(status), latency_ms))
            if status != 503:
                self.data.setdefault(variant, VariantReport()).record(status < 500, latency_ms)
                t = self.totals.setdefault(variant, {"requests": 0, "errors": 0})
                t["requests"] += 1
                t["errors"] += 0 if status < 500 else 1

    def request(self, route: str, status: int) -> None:
        with self.lock:
            self.requests[(route, f"{status // 100}xx")] += 1

    def take(self) -> dict[str, VariantReport]:
        with self.lock:
            data, self.data = self.data, {}
        return data

    def take_served(self) -> tuple[list[tuple[str, str, str, float]], collections.Counter,
                                   collections.Counter]:  # fmt: skip
        with self.lock:
            answers, self.answers = self.answers, []
            requests, self.requests = self.requests, collections.Counter()
            compares, self.compares = self.compares, collections.Counter()
        return answers, requests, compares


_ROUTES = {"/predict": "predict", "/invocations": "invocations"}
LATENCY_BOUNDARIES_MS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 30000]
GAUGES_EVERY_S = 30.0


class _Exporter:
    """The router's Ray metrics (see the module docstring), fed once a second from the
    window, and the monitor's gauges, read from its summary file every 30 s."""

    def __init__(self, model: str, gauges_path: str) -> None:
        from ray.util.metrics import Counter, Gauge, Histogram

        self.model, self.gauges_path = model, gauges_path
        self.requests = Counter("shipyard_requests", description="HTTP requests to a model's "
                                "router, by route and status class", tag_keys=("model", "route", "code"))  # fmt: skip
        self.predictions = Counter("shipyard_predictions", description="records a predictor "
                                   "answered: ok, error (5xx), shed (503), rejected (4xx)",
                                   tag_keys=("model", "version", "variant", "outcome"))  # fmt: skip
        self.latency = Histogram("shipyard_prediction_latency_ms", description="a record's "
                                 "latency in the router, from routing to the predictor's answer",
                                 boundaries=LATENCY_BOUNDARIES_MS,
                                 tag_keys=("model", "version", "variant"))  # fmt: skip
        self.compares = Counter("shipyard_shadow_comparisons", description="mirrored records "
                                "whose shadow answer agrees or disagrees with stable's at the "
                                "rollout's decision threshold",
                                tag_keys=("model", "version", "outcome"))  # fmt: skip
        self.drift = Gauge("shipyard_monitor_drift_share", description="share of a version's "
                           "features drifted in the last monitor check",
                           tag_keys=("model", "version"))  # fmt: skip
        self.alerts = Gauge("shipyard_monitor_alerts", description="alerts the last monitor "
                            "check raised for a version", tag_keys=("model", "version"))  # fmt: skip
        self.quality = Gauge("shipyard_monitor_live_quality", description="a variant's quality "
                             "on the labels known at the last monitor check (pr_auc, roc_auc, "
                             "brier, ece, r2, mae, rmse, coverage)",
                             tag_keys=("model", "version", "variant", "metric"))  # fmt: skip
        self._read_at, self._doc = 0.0, None

    def export(self, served: tuple[list[tuple[str, str, str, float]], collections.Counter,
                                   collections.Counter]) -> None:  # fmt: skip
        """What ``_Window.take_served`` gave, into the metrics."""
        answers, requests, compares = served
        for (version, outcome), n in compares.items():
            self.compares.inc(n, tags={"model": self.model, "version": version, "outcome": outcome})
        for (route, code), n in requests.items():
            self.requests.inc(n, tags={"model": self.model, "route": route, "code": code})
        counts: collections.Counter[tuple[str, str, str]] = collections.Counter()
        for variant, version, outcome, latency in answers:
            counts[(variant, version, outcome)] += 1
            self.latency.observe(latency, tags={"model": self.model, "variant": variant,
                                                "version": version})  # fmt: skip
        for (variant, version, outcome), n in counts.items():
            self.predictions.inc(n, tags={"model": self.model, "variant": variant,
                                          "version": version, "outcome": outcome})  # fmt: skip
        if self.gauges_path and time.monotonic() - self._read_at > GAUGES_EVERY_S:
            from shipyard.monitor import read_gauges

            self._read_at = time.monotonic()
            self._doc = read_gauges(self.gauges_path) or self._doc
        self._gauges()

    def _gauges(self) -> None:
        """Set every second: Ray's gauges report only what was set since the last export."""
        for version, v in ((self._doc or {}).get("versions") or {}).items():
            tags = {"model": self.model, "version": str(version)}
            self.alerts.set(float(v.get("alerts", 0)), tags=tags)
            if v.get("drift_share") is not None:
                self.drift.set(float(v["drift_share"]), tags=tags)
            for variant, metrics in (v.get("quality") or {}).items():
                for metric, value in metrics.items():
                    if value is not None:
                        self.quality.set(float(value), tags={**tags, "variant": variant,
                                                             "metric": metric})  # fmt: skip


@serve.deployment
class Router:
    def __init__(self, stable: DeploymentHandle, canary: DeploymentHandle, model: str,
                 tracking_uri: str = "", online_features: bool = True,
                 gauges_path: str = "") -> None:  # fmt: skip
        self.handles = {"stable": stable, "canary": canary}
        self.model = model
        self.tracking_uri = tracking_uri
        self.online_features = online_features
        self.app = serve.get_replica_context().app_name
        self.replica = serve.get_replica_context().replica_id.unique_id
        self.weight = 0.0
        self.shadow_weight, self.shadow_threshold = 0.0, 0.5
        self._mirrors: set[asyncio.Future] = set()  # shadow calls in flight (held, not GC'd)
        self.versions: dict[str, str | None] = {"stable": None, "canary": None}
        self.schemas: dict[str, RequestSchema] = {}  # by model version
        self.window = _Window()
        self.gauges_path = gauges_path
        self._stop = threading.Event()
        threading.Thread(target=self._report_loop, name="canary-metrics", daemon=True).start()

    def reconfigure(self, config: dict[str, Any]) -> None:
        weight = float(config.get("canary_weight", 0) or 0)
        if not 0 <= weight <= 100:
            raise ValueError(f"canary_weight must be within 0..100, got {weight}")
        versions = {"stable": config.get("stable_version"), "canary": config.get("canary_version")}
        versions = {k: None if v in (None, "") else str(v) for k, v in versions.items()}
        for version in versions.values():  # each version's contract, read once
            if version is not None and version not in self.schemas:
                contract = read_contract(self.tracking_uri, self.model, version)
                self.schemas[version] = RequestSchema(contract, self.online_features)
        shadow = float(config.get("shadow_weight", 0) or 0)
        if not 0 <= shadow <= 100:
            raise ValueError(f"shadow_weight must be within 0..100, got {shadow}")
        self.weight, self.versions = weight, versions
        self.shadow_weight = shadow if versions["canary"] is not None else 0.0
        self.shadow_threshold = float(config.get("shadow_threshold", 0.5))
        log.info("router: canary weight %.1f%%, shadow %.1f%%, versions %s", self.weight,
                 self.shadow_weight, self.versions)  # fmt: skip

    def schema(self, variant: str = "stable") -> RequestSchema | None:
        version = self.versions[variant]
        return self.schemas.get(version) if version is not None else None

    def variant_for(self, record: Any) -> str:
        """Sticky by the contract's key when the record has it, else per request."""
        if self.weight <= 0 or self.versions["canary"] is None:
            return "stable"
        stable = self.schema()
        key = stable.contract.sticky_key if stable is not None else None
        value = record.get(key) if key and isinstance(record, dict) else None
        if value is None or isinstance(value, (dict, list)):
            return "canary" if random.random() * 100 < self.weight else "stable"
        return "canary" if bucket(str(value)) < self.weight else "stable"

    # -- HTTP ----------------------------------------------------------------------------------
    async def __call__(self, request: Request) -> Response:
        path = request.url.path.rstrip("/")
        prefix = request.scope.get("root_path", "").rstrip("/")
        path = path[len(prefix) :] if prefix and path.startswith(prefix) else path
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > MAX_BODY_BYTES:
            self.window.request("other", 413)
            return _error(413, f"the body has {int(length):,} bytes; at most {MAX_BODY_BYTES:,}")
        body = await request.body() if request.method == "POST" else b""
        status, doc = await self.respond(request.method, path, body,
                                        request.headers.get("content-type", ""))  # fmt: skip
        self.window.request(_ROUTES.get(path, "v2" if path.startswith("/v2") else "other"), status)
        return _json(doc, status)

    async def respond(self, method: str, path: str, body: bytes = b"",
                     content_type: str = "") -> tuple[int, Any]:  # fmt: skip
        """One request, as ``(status, JSON document)``; the OIP gateway at ``/v2`` calls
        it too, so both routes answer alike."""
        v2 = f"/v2/models/{self.model}"
        try:
            if path in ("/predict", "/invocations", f"{v2}/infer"):
                if method != "POST":
                    return 405, {"error": f"use POST {path} with a JSON body"}
                return await self._post(path, body, content_type)
            if method != "GET":
                return 405, {"error": f"{method} is not allowed on {path or '/'}"}
            if path in ("/healthz", "/ping", f"{v2}/ready"):
                return await self._health(oip=path.endswith("/ready"))
            if path == v2:
                return self._metadata()
            if path == "":
                return 200, self.describe()
        except RequestError as exc:
            return exc.status, exc.body
        except Exception:  # noqa: BLE001 - a bug of ours: logged, and still a JSON answer
            log.exception("router: %s %s failed", method, path)
            return 500, {"error": "the router failed on this request; see the Serve logs"}
        return 404, {"error": f"no route {path}; use POST /predict, POST /invocations, "
                              f"POST {v2}/infer, GET {v2}, GET /healthz or GET /"}  # fmt: skip

    def describe(self) -> dict[str, Any]:
        weights = {"stable": 100.0 - self.weight, "canary": self.weight}
        if self.versions["canary"] is None:
            weights = {"stable": 100.0, "canary": 0.0}
        stable = self.schema()
        sticky = stable.contract.sticky_key if stable is not None else None
        return {
            "model": self.model,
            "application": self.app,
            "variants": {
                v: {"model_version": self.versions[v], "weight_percent": weights[v]}
                for v in ("stable", "canary")
            },  # fmt: skip
            "split": f"sticky per {sticky}" if sticky else "per request",
            "features": (
                f"Feast online store ({stable.contract.feature_service})"
                if stable is not None and stable.online
                else "from the request"
            ),  # fmt: skip
            "request_fields": stable.describe() if stable is not None else [],
            "outputs": [name for name, _ in self._outputs()],
            "replica": self.replica,
            "served_by_this_replica": self.window.totals,
        }

    def _outputs(self) -> list[tuple[str, str]]:
        stable = self.schema()
        return [(c.name, c.type) for c in stable.contract.outputs] if stable is not None else []

    def _loaded(self) -> RequestSchema:
        stable = self.schema()
        if stable is None:
            raise RequestError(503, f"{self.model} has no model version loaded yet; retry shortly")
        return stable

    def _metadata(self) -> tuple[int, Any]:
        stable = self._loaded()
        versions = [v for v in (self.versions["stable"], self.versions["canary"]) if v]
        return 200, oip_metadata(self.model, versions, stable.describe(), self._outputs())

    async def _health(self, oip: bool = False) -> tuple[int, Any]:
        try:
            info = await self.handles["stable"].info.remote()
        except Exception as exc:  # noqa: BLE001 - readiness reports it
            return 503, {"status": "not ready", "ready": False, "reason": str(exc)[:300]}
        if not info["loaded"]:
            return 503, {"status": "not ready", "ready": False,
                         "reason": "stable has no model loaded", **info}  # fmt: skip
        if oip:
            return 200, {"name": self.model, "ready": True}
        return 200, {"status": "ready", "model": self.model,
                     "stable_version": info["model_version"]}  # fmt: skip

    async def _post(self, path: str, raw: bytes, content_type: str) -> tuple[int, Any]:
        if content_type.startswith("text/csv"):
            raise RequestError(415, "send JSON (Content-Type: application/json); CSV is not taken")
        body = parse_json(raw)
        if path == "/predict":
            records, single, name = predict_records(body)
            results = await self._predict(records, name)
            if single:
                status = results[0].pop("status", 200)
                return status, results[0]
            # a failed record keeps its status (503: retry it later; 422: fix it; 500);
            # when every record was shed, the whole request is 503 with Retry-After
            failed = [r.get("status", 200) for r in results if "error" in r]
            shed = len(failed) == len(results) and set(failed) == {503}
            return 503 if shed else 200, {"predictions": results, "count": len(results),
                                          "failed": len(failed)}  # fmt: skip
        if path == "/invocations":
            records, name = mlflow_records(body)
            results = await self._predict(records, name)
            return _all_or_error(results, lambda: {"predictions": results})
        types = {f.name: f.type for f in self._loaded().fields}
        known = [*(name for name, _ in self._outputs()), "model_version", "variant"]
        records, wanted, request_id = oip_records(body, types, known)
        results = await self._predict(records, lambda i: f"#{i}#", oip=True)
        return _all_or_error(results, lambda: oip_response(self.model, results, self._outputs(),
                                                           wanted, request_id))  # fmt: skip

    async def _predict(self, records: list[Any], name: Any, oip: bool = False) -> list[dict]:
        """Route, validate (each record against its variant's contract) and predict."""
        self._loaded()
        variants = [self.variant_for(r) for r in records]
        rows, errors = [], []
        for i, (record, variant) in enumerate(zip(records, variants, strict=True)):
            row, problems = self.schema(variant).validate(record, name(i))  # type: ignore[union-attr]
            rows.append(row)
            errors += problems
        if errors:
            if oip:  # "#i#field" -> "inputs[field][i]"
                for e in errors:
                    i, _, field = e["field"][1:].partition("#")
                    e["field"] = f"inputs[{field}][{i}]" if field else f"inputs[{i}]"
            raise RequestError(422, "invalid request fields", errors)
        if len(rows) == 1:  # most requests: no task for gather to wrap
            return [await self._one(rows[0], variants[0])]
        return list(await asyncio.gather(*(self._one(row, v)
                                            for row, v in zip(rows, variants, strict=True))))  # fmt: skip

    async def _one(self, row: dict[str, Any], variant: str) -> dict[str, Any]:
        started = time.perf_counter()
        mirror = None
        if (
            variant == "stable"
            and self.shadow_weight > 0
            and random.random() * 100 < self.shadow_weight
        ):
            mirror = asyncio.ensure_future(self._mirror(row))  # runs beside stable's call
        try:
            result = await self.handles[variant].predict.remote(row)
        except BackPressureError:
            result = {"error": "the model is overloaded; retry later", "status": 503}
        except Exception as exc:  # noqa: BLE001 - a replica died: the client gets a 500
            result = {"error": f"{variant} predictor failed: {type(exc).__name__}", "status": 500}
        latency = (time.perf_counter() - started) * 1000
        status = result.get("status", 200)
        answered_by = result.get("model_version") or self.versions.get(variant) or ""
        self.window.answered(variant, str(answered_by), status, latency)
        if mirror is not None:  # compared when the shadow answers; the client never waits
            self._mirrors.add(mirror)
            mirror.add_done_callback(functools.partial(self._mirrored, result))
        schema = self.schema(variant)
        id_field = schema.contract.id_field if schema is not None else None
        head = {id_field: row[id_field]} if id_field and row.get(id_field) is not None else {}
        return {**head, **result, "variant": variant}

    async def _mirror(self, row: dict[str, Any]) -> tuple[dict[str, Any] | None, float]:
        """The canary's answer to a mirrored record (never a client's), and its latency."""
        started = time.perf_counter()
        try:
            answer = await self.handles["canary"].predict.remote(row, True)
        except BackPressureError:
            answer = {"error": "the shadow is overloaded", "status": 503}
        except Exception:  # noqa: BLE001 - counted as the shadow's error
            answer = None
        return answer, (time.perf_counter() - started) * 1000

    def _mirrored(self, stable: dict[str, Any], task: asyncio.Future) -> None:
        self._mirrors.discard(task)
        try:
            answer, latency = task.result()
            version = str((answer or {}).get("model_version") or self.versions["canary"] or "")
            self.window.shadowed(stable, answer, version, latency,
                                 self._compared_output(version), self.shadow_threshold)  # fmt: skip
        except Exception:  # noqa: BLE001 - a shadow never harms serving
            log.warning("router: comparing a shadow answer failed", exc_info=True)

    def _compared_output(self, version: str) -> str | None:
        """The output a shadow is compared on: the contract's labelled score, else its
        first numeric output."""
        schema = self.schemas.get(version)
        if schema is None:
            return None
        contract = schema.contract
        if contract.labels is not None:
            return contract.labels.score
        numeric = [
            c.name for c in contract.outputs if c.type in ("double", "float", "long", "integer")
        ]
        return numeric[0] if numeric else None

    # -- metrics to the rollout controller -----------------------------------------------------
    def _report_loop(self) -> None:
        import ray

        controller, looked, last = None, 0.0, None
        exporter: _Exporter | None = None
        failed = False
        while not self._stop.wait(1.0):
            served = self.window.take_served()  # taken each second, exported or not
            try:  # Ray's metrics: best effort, never in the way of the controller's reports
                exporter = exporter or _Exporter(self.model, self.gauges_path)
                exporter.export(served)
            except Exception:  # noqa: BLE001
                if not failed:  # once: a broken exporter must not flood the Serve log
                    log.warning("router: exporting metrics failed", exc_info=True)
                failed = True
            data = self.window.take()
            shadow = self.window.take_shadow()
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
            mirrored = shadow if (self.shadow_weight or shadow.requests or shadow.shed) else None
            report = RouterReport(weight=self.weight, variants=data, replica=self.replica,
                                  at=time.time(), versions=dict(self.versions),
                                  shadow_weight=self.shadow_weight, shadow=mirrored)  # fmt: skip
            last = controller.report.remote(report.to_dict())

    def __del__(self) -> None:
        self._stop.set()


class _Json(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        try:
            text = json.dumps(content, ensure_ascii=True, allow_nan=False, default=_plain)
        except ValueError:  # a non-finite number in an answer: null, as JSON has no NaN
            text = json.dumps(_finite(content), ensure_ascii=True, default=_plain)
        return text.encode("ascii")


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def json_response(content: Any, status: int = 200) -> Response:
    """JSON as strict as a client expects: ASCII, no NaN (null instead), numpy as plain
    numbers; a 503 says when to retry."""
    return _json(content, status)


def _json(content: Any, status: int = 200) -> Response:
    headers = RETRY_AFTER if status == 503 else None
    return _Json(content, status_code=status, headers=headers)


def _error(status: int, message: str) -> Response:
    return _json({"error": message}, status)


def _all_or_error(results: list[dict[str, Any]], ok: Any) -> tuple[int, Any]:
    """MLflow and OIP clients take a request whole: any failed record fails it, with
    the worst status (503 overloaded, then 500, then 422) and every record's answer."""
    statuses = [r.pop("status", 200) for r in results]
    failed = [s for s in statuses if s != 200]
    if not failed:
        return 200, ok()
    status = 503 if 503 in failed else 500 if 500 in failed else max(failed)
    first = next(r for r in results if "error" in r)
    return status, {"error": f"{len(failed)} of {len(results)} records failed; first: "
                             f"{first['error']}", "error_code": "BAD_REQUEST" if status < 500
                    else "INTERNAL_ERROR", "predictions": results}  # fmt: skip


def build_app(args: dict[str, Any]) -> Any:
    """The application from its typed args (``AppArgs``)."""
    parsed = AppArgs.model_validate(args)
    common = {"model": parsed.model, "tracking_uri": parsed.tracking_uri,
              "feature_repo": parsed.feature_repo, "online_features": parsed.online_features,
              "max_batch_size": parsed.max_batch_size,
              "batch_wait_timeout_s": parsed.batch_wait_timeout_s,
              "inference_log": parsed.inference_log.model_dump()
              if parsed.inference_log is not None else None}  # fmt: skip
    stable = Predictor.options(name="stable").bind(variant="stable", **common)
    canary = Predictor.options(name="canary").bind(variant="canary", **common)
    gauges = ""
    if parsed.inference_log is not None:
        from shipyard.monitor import gauges_path

        gauges = gauges_path(parsed.inference_log.uri, parsed.model)
    return Router.options(name="router").bind(
        stable, canary, parsed.model, parsed.tracking_uri, parsed.online_features, gauges
    )
