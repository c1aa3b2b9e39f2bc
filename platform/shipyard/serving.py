"""``shipyard deploy`` and ``shipyard serve status``: one Serve application per model.

The Serve config is built here, in the ``serve deploy`` file format, and is the one
source of truth: locally it goes to Serve's REST API, on Kubernetes it is the
RayService's ``serveConfigV2``. Versions are resolved from an alias or a number once,
at deploy time, and recorded as numbers in the config; nothing re-resolves an alias
behind the user's back.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shipyard.errors import ConfigError
from shipyard.models import ModelNotFoundError, parse_ref
from shipyard.serve_backends import (
    KubernetesBackend,
    LocalBackend,
    ServeBackend,
    get_app,
    put_apps,
    wait_ready,
)
from shipyard.settings import Settings

__all__ = [
    "CHART_CONFIG",
    "IMPORT_PATH",
    "Resolved",
    "app_config",
    "backend_for",
    "deploy",
    "resolve_version",
    "rollout_view",
    "serve_config",
    "serve_status",
    "validate_config",
    "with_rollout",
]

IMPORT_PATH = "services.router.app:build_app"
GATEWAY_APP, GATEWAY_IMPORT_PATH = "oip-v2", "services.gateway.app:build_app"
#: Model names that would collide with the gateway's application or route.
RESERVED = frozenset({GATEWAY_APP, "v2"})
# The Serve config the Helm chart ships; its RayService fills in the install's values.
CHART_CONFIG = Path(__file__).resolve().parents[2] / "deploy/helm/shipyard/files/serve-config.json"
READY_TIMEOUT_S = 180.0

#: How Ray runs Serve's data plane wherever Shipyard starts Ray for serving: `shipyard
#: up` sets these in the local cluster's environment, and the chart's serving RayCluster
#: in its pods' (values.yaml `serve.rayEnv`, held equal to this by tests/helm).
SERVE_RAY_ENV = {
    # Ray Serve's throughput-optimized mode: calls between deployments over gRPC, user
    # code and the request router on the replica's own event loop, request-path logs
    # buffered, no copy of every log line to stderr (for the log monitor to tail), the
    # garbage collector frozen after start-up. Measured: -27 % CPU per request.
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
    # ... but keep Serve's HTTP proxy: without HAProxy, direct ingress makes each
    # model's ingress replica listen on its own port, and HAProxy binds every interface.
    "RAY_SERVE_ENABLE_DIRECT_INGRESS": "0",
    # Ray starts worker processes at nice 15, below its own daemons, the dashboard and
    # MLflow: the proxy and the replicas then lose the cores to background work.
    "RAY_worker_niceness": "0",
}
#: The answer to a request shed because a deployment's queue is full.
BACKPRESSURE = {"status_code": 503, "retry_after_s": 1}


@dataclass
class Resolved:
    model: str
    version: str
    ref: str  # what the user asked for: NAME@ALIAS, NAME/VERSION or NAME


def backend_for(settings: Settings) -> ServeBackend:
    if settings.serve_backend == "kubernetes":
        return KubernetesBackend(settings.serve.namespace, settings.serve.rayservice)
    from shipyard.local import dashboard_address

    return LocalBackend(dashboard_address(settings), settings.run_dir / "rollouts")


def resolve_version(settings: Settings, ref: str) -> Resolved:
    """A model reference to an explicit registered version number."""
    from shipyard.contract import read_contract
    from shipyard.models import show

    parsed = parse_ref(ref)
    if parsed.name in RESERVED:
        raise ConfigError(f"a model cannot be served under the name {parsed.name!r}",
                          hint=f"{', '.join(sorted(RESERVED))} are the OIP gateway's; "
                          "register the model under another name")  # fmt: skip
    info = show(settings, ref)
    if info.status != "READY":
        raise ModelNotFoundError(
            f"{parsed.name} version {info.version} is {info.status}, not READY"
        )
    # a version the generic path cannot serve (no signature, inconsistent tags) is
    # refused here, with the fix, instead of failing in the replicas
    read_contract(settings.tracking_uri, parsed.name, info.version)
    return Resolved(parsed.name, info.version, ref)


def feature_repo(settings: Settings) -> str:
    if settings.serve.feature_repo:
        return settings.serve.feature_repo
    from shipyard.feast_repo import write_repo

    return str(write_repo(settings))


def _logging(access_log: bool) -> dict[str, Any]:
    """Serve's logging: an access log line per request costs the proxy and every
    replica CPU on the hot path; the router's counts and Ray's metrics still count every
    request. Set at the top level (the controller and the proxies) and on each
    application (Serve gives it to every deployment that sets none)."""
    return {"enable_access_log": access_log}


def _predictor(name: str, version: str | None, *, idle: bool, replicas: int = 1) -> dict[str, Any]:  # fmt: skip
    return {
        "name": name,
        # requests a replica works on at once; the batcher groups them
        "max_ongoing_requests": 32,
        # waiting at a router replica: each record of an admitted request is one call,
        # so at least the largest batch request (1,000 records) fits; overload is shed
        # before, at the proxy (the router's own queue)
        "max_queued_requests": 1024,
        "backpressure_config": dict(BACKPRESSURE),
        "autoscaling_config": {
            "min_replicas": 0 if idle else replicas,
            "initial_replicas": 0 if idle else replicas,
            "max_replicas": max(4, replicas),
            "target_ongoing_requests": 16,
            "upscale_delay_s": 3,
            "downscale_delay_s": 60,
        },
        "graceful_shutdown_timeout_s": 20,
        "health_check_period_s": 5,
        "ray_actor_options": {"num_cpus": 0.25},
        "user_config": {"model_version": version},
    }


def inference_log_args(settings: Settings) -> dict[str, Any] | None:
    """The predictors' inference log (``shipyard.inference_log.LogConfig``), or None."""
    m = settings.monitor
    if not m.inference_log:
        return None
    return {"uri": settings.inference_log_uri, "sample_rate": m.log_sample_rate,
            "flush_interval_s": m.log_flush_interval_s,
            "max_buffered_rows": m.log_max_buffered_rows}  # fmt: skip


def register_log_source(settings: Settings, model: str) -> str | None:
    """The model's inference log as a Feast data source in the settings' feature repo
    (where the monitoring jobs and users join it); None when nothing is logged."""
    if not settings.monitor.inference_log:
        return None
    from shipyard.feast_repo import open_store, write_repo
    from shipyard.inference_log import register_source

    try:
        return register_source(open_store(write_repo(settings)), settings.inference_log_uri, model)
    except Exception as exc:  # the registry's own errors: connection, permissions
        raise ConfigError(
            f"could not register {model}'s inference log in the Feast registry: {exc}",
            hint="check features.registry_url and that the registry is reachable, or set "
            "monitor.inference_log: false",
        ) from None


def app_config(settings: Settings, model: str, stable_version: str | None) -> dict[str, Any]:
    """The application of one model, serving ``stable_version`` with no canary."""
    args = {"model": model, "tracking_uri": settings.serve_tracking_uri,
            "feature_repo": feature_repo(settings) if settings.serve.online_features else "",
            "online_features": settings.serve.online_features,
            "max_batch_size": settings.serve.max_batch_size,
            "batch_wait_timeout_s": settings.serve.batch_wait_timeout_s,
            "inference_log": inference_log_args(settings)}  # fmt: skip
    router = {
        "name": "router",
        # what a router replica holds at once: about half a second of what two stable
        # replicas score on 2 cores (~90 requests/s); more would only wait in line
        "max_ongoing_requests": 48,
        # beyond this many waiting at the proxy, the proxy answers 503 + Retry-After at
        # once instead of queueing (the client retries later or elsewhere)
        "max_queued_requests": 16,
        "backpressure_config": dict(BACKPRESSURE),
        "autoscaling_config": {
            "min_replicas": 1,
            "initial_replicas": 1,
            "max_replicas": 2,
            "target_ongoing_requests": 24,
        },  # fmt: skip
        "graceful_shutdown_timeout_s": 20,
        "ray_actor_options": {"num_cpus": 0.1},
        "user_config": {
            "canary_weight": 0.0,
            "stable_version": stable_version,
            "canary_version": None,
        },  # fmt: skip
    }
    app = {
        "name": model,
        "route_prefix": f"/{model}",
        "import_path": IMPORT_PATH,
        "args": args,
        "logging_config": _logging(settings.serve.access_log),
        "deployments": [
            router,
            _predictor(
                "stable", stable_version, idle=False, replicas=settings.serve.stable_min_replicas
            ),
            _predictor("canary", None, idle=True),
        ],  # fmt: skip
    }
    return app


def gateway_config(access_log: bool = False) -> dict[str, Any]:
    """The Open Inference Protocol's root paths (``/v2/models/NAME/...``) for every
    model: a small application that forwards to each model's router."""
    return {
        "name": GATEWAY_APP,
        "route_prefix": "/v2",
        "import_path": GATEWAY_IMPORT_PATH,
        "args": {},
        "logging_config": _logging(access_log),
        "deployments": [{
            "name": "gateway",
            "max_ongoing_requests": 256,
            "max_queued_requests": 64,
            "backpressure_config": dict(BACKPRESSURE),
            "autoscaling_config": {"min_replicas": 1, "initial_replicas": 1, "max_replicas": 2,
                                   "target_ongoing_requests": 64},
            "graceful_shutdown_timeout_s": 20,
            "ray_actor_options": {"num_cpus": 0.05},
        }],
    }  # fmt: skip


def serve_config(settings: Settings, apps: list[dict[str, Any]]) -> dict[str, Any]:
    """The whole ``serve deploy`` document: the models' applications and the OIP
    gateway. Locally one HTTP proxy on the head, bound to loopback; in a cluster a
    proxy on every node, on all interfaces of the pod."""
    local = settings.serve_backend == "local"
    if apps and all(a.get("name") != GATEWAY_APP for a in apps):
        apps = [*apps, gateway_config(settings.serve.access_log)]
    return {
        "proxy_location": "HeadOnly" if local else "EveryNode",
        "http_options": {
            "host": settings.host if local else "0.0.0.0",
            "port": settings.serve.http_port,
        },  # fmt: skip
        "logging_config": _logging(settings.serve.access_log),  # the controller and proxies
        "applications": apps,
    }


def chart_config() -> dict[str, Any]:
    """The Serve config the Helm chart's RayService starts from: this module's config
    for the cluster profile, with no model loaded yet. The chart sets the model, the
    stable version, the MLflow URL, the Feast repo path, the port, batching and the
    inference log from its values (deploy/helm/shipyard/templates/rayservice.yaml); everything else, such as
    replica bounds and queue limits, comes from here, so the two cannot drift."""
    from shipyard.settings import defaults

    settings = defaults(profile="cluster", data_root="/data", serve={"backend": "kubernetes",
                        "tracking_uri": "http://mlflow:5000", "feature_repo": "/etc/shipyard/feast"})  # fmt: skip
    return serve_config(settings, [app_config(settings, "MODEL", None)])


def write_chart_config(path: Path = CHART_CONFIG) -> Path:
    path.write_text(json.dumps(chart_config(), indent=2, sort_keys=True) + "\n")
    return path


def validate_config(config: dict[str, Any]) -> None:
    """Ray Serve's own schema for the ``serve deploy`` format."""
    import warnings

    from pydantic import ValidationError

    with warnings.catch_warnings():  # Ray's schema module trips a pydantic deprecation
        warnings.simplefilter("ignore", DeprecationWarning)
        from ray.serve.schema import ServeDeploySchema

    try:
        ServeDeploySchema.model_validate(config)
    except ValidationError as exc:
        raise ConfigError(f"invalid Serve config: {exc}") from None


def _deployment(app: dict[str, Any], name: str) -> dict[str, Any]:
    for dep in app["deployments"]:
        if dep["name"] == name:
            return dep
    raise ConfigError(f"application {app.get('name')!r} has no deployment {name!r}")


def rollout_view(app: dict[str, Any]) -> dict[str, Any]:
    """Versions and weight as the config records them."""
    router = _deployment(app, "router")["user_config"]
    return {
        "stable_version": _deployment(app, "stable")["user_config"].get("model_version"),
        "canary_version": _deployment(app, "canary")["user_config"].get("model_version"),
        "canary_weight": float(router.get("canary_weight") or 0.0),
        "shadow_weight": float(router.get("shadow_weight") or 0.0),
    }


_UNSET: Any = object()


def with_rollout(app: dict[str, Any], *, stable_version: Any = _UNSET,
                 canary_version: Any = _UNSET, canary_weight: Any = _UNSET,
                 shadow_weight: Any = _UNSET, shadow_threshold: Any = _UNSET) -> dict[str, Any]:  # fmt: skip
    """A copy of ``app`` with versions, the canary weight and the shadow share (records
    of stable mirrored to the canary, compared at ``shadow_threshold``) changed. Only
    ``user_config`` and the canary's replica bounds move, so Serve reconfigures running
    replicas in place (the application's args, and so its code version, stay the same)."""
    new = copy.deepcopy(app)
    view = rollout_view(new)
    stable = view["stable_version"] if stable_version is _UNSET else stable_version
    canary = view["canary_version"] if canary_version is _UNSET else canary_version
    weight = view["canary_weight"] if canary_weight is _UNSET else float(canary_weight)
    shadow = view["shadow_weight"] if shadow_weight is _UNSET else float(shadow_weight)
    router_now = _deployment(app, "router")["user_config"]
    threshold = (float(router_now.get("shadow_threshold", 0.5)) if shadow_threshold is _UNSET
                 else float(shadow_threshold))  # fmt: skip
    if canary is None and (weight > 0 or shadow > 0):
        raise ConfigError("a canary or shadow weight above 0 needs a canary version")
    _deployment(new, "stable")["user_config"] = {"model_version": stable}
    canary_dep = _deployment(new, "canary")
    canary_dep["user_config"] = {"model_version": canary}
    bounds = canary_dep.setdefault("autoscaling_config", {})
    bounds["min_replicas"] = 0 if canary is None else 1
    bounds["initial_replicas"] = bounds["min_replicas"]
    router = {"canary_weight": weight, "stable_version": stable, "canary_version": canary}
    if shadow > 0 or "shadow_weight" in router_now:
        router |= {"shadow_weight": shadow, "shadow_threshold": threshold}
    _deployment(new, "router")["user_config"] = router
    return new


def deploy(settings: Settings, ref: str, *, wait: bool = True, dry_run: bool = False,
           echo: Callable[[str], None] = print) -> dict[str, Any]:  # fmt: skip
    """Deploy ``ref`` as the stable version of its model's application, or move the
    stable predictor of a running application to it in place (no new replicas)."""
    resolved = resolve_version(settings, ref)
    backend = backend_for(settings)
    current = None if dry_run else get_app(backend, resolved.model)
    if current is not None:
        view = rollout_view(current)
        if view["canary_version"] is not None:
            raise ConfigError(
                f"a canary of {resolved.model} version {view['canary_version']} is in progress",
                hint=f"finish it first: `shipyard canary promote|rollback {resolved.model}`",
            )
        app = with_rollout(current, stable_version=resolved.version, canary_weight=0.0)
    else:
        app = app_config(settings, resolved.model, resolved.version)
    config = serve_config(settings, [app])
    validate_config(config)
    if not dry_run:
        register_log_source(settings, resolved.model)
    result = {"model": resolved.model, "version": resolved.version, "ref": ref,
              "application": app["name"], "route": f"{settings.serve_url}{app['route_prefix']}",
              "config": config, "backend": backend.kind}  # fmt: skip
    if dry_run:
        return result
    echo(f"deploying {resolved.model} version {resolved.version} (from {ref}) "
         f"through the {backend.kind} backend ...")  # fmt: skip
    started = time.monotonic()
    put_apps(backend, [app, gateway_config(settings.serve.access_log)], config)
    if wait:
        wait_ready(backend, app["name"], {"router": 1, "stable": 1}, timeout=READY_TIMEOUT_S)
        echo(f"ready in {time.monotonic() - started:.0f}s: POST {result['route']}/predict")
    return result


def serve_status(settings: Settings) -> list[dict[str, Any]]:
    """Each application: status, deployments with replicas, versions and weights."""
    backend = backend_for(settings)
    out = []
    for app in backend.read_config().get("applications", []):
        status = backend.app_status(app["name"])
        view = rollout_view(app) if {d["name"] for d in app.get("deployments", [])} >= {
            "router", "stable", "canary"} else {}  # fmt: skip
        rollout = backend.load_state(app["name"])
        out.append({
            "application": app["name"],
            "kind": "gateway" if app["name"] == GATEWAY_APP else "model",
            "route": f"{settings.serve_url}{app.get('route_prefix', '/')}",
            "status": status.status if status else "ABSENT",
            "message": status.message if status else "",
            "deployments": status.deployments if status else {},
            **view,
            "rollout": (rollout or {}).get("status"),
        })  # fmt: skip
    return out
