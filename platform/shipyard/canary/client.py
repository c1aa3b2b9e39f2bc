"""``shipyard canary ...``: the CLI's side of a rollout.

The CLI checks what it can up front (the application is deployed, the version exists
and differs from stable, the plan is valid), then hands a command to the in-cluster
controller: it writes the command into the backend's durable store and makes sure the
controller runs (a short Ray job that starts the actor if needed). It then waits
until the controller has acknowledged the command and returns the state, whose last
decision says what the controller did.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from shipyard.canary.plan import CanaryPlan
from shipyard.canary.state import ACTIVE, new_command
from shipyard.contract import check_challenger
from shipyard.errors import ConfigError, ShipyardError
from shipyard.serve_backends import get_app
from shipyard.serving import backend_for, resolve_version, rollout_view
from shipyard.settings import Settings

__all__ = ["NoApplicationError", "command", "ensure_controller", "start", "status", "watch"]


class NoApplicationError(ShipyardError):
    """The model has no Serve application yet."""

    exit_code = 4


def _app(settings: Settings, model: str) -> dict[str, Any]:
    app = get_app(backend_for(settings), model)
    if app is None:
        raise NoApplicationError(
            f"{model} is not deployed", hint=f"deploy it first: `shipyard deploy {model}@champion`"
        )
    return app


def ensure_controller(settings: Settings, model: str, echo: Callable[[str], None]) -> None:
    """Start the controller actor in the cluster that runs Serve, unless it runs. On
    Kubernetes that is the RayService's cluster (``serve.dashboard_address``), and the
    controller reaches MLflow at the in-cluster address (``serve.tracking_uri``)."""
    from shipyard.jobs import resolve_address, submit_job, wait_for_job

    address = resolve_address(settings, settings.serve.dashboard_address)
    if _controller_alive(address, model):
        return
    backend = backend_for(settings)
    entry = ["python", "-m", "shipyard.canary.controller", "--app", model,
             "--backend", json.dumps(backend.spec()), "--tracking-uri", settings.serve_tracking_uri]  # fmt: skip
    job_id = submit_job(settings, entry, address=address,
                        metadata={"shipyard": "canary controller"})  # fmt: skip
    echo(f"rollout controller for {model}: making sure it runs in the cluster (Ray job {job_id})")
    wait_for_job(settings, job_id, address=address)


def _controller_alive(dashboard: str, model: str) -> bool:
    """Through Ray's state API on the dashboard (HTTP): is the actor alive?"""
    from ray.util.state import list_actors

    from shipyard.canary.controller import NAMESPACE, controller_name

    try:
        actors = list_actors(address=dashboard, filters=[("name", "=", controller_name(model))],
                             limit=100, raise_on_missing_output=False)  # fmt: skip
    except Exception:  # noqa: BLE001 - unknown: the idempotent job decides
        return False
    return any(a.state in ("ALIVE", "RESTARTING") and a.ray_namespace == NAMESPACE for a in actors)


def _send(settings: Settings, model: str, cmd: dict[str, Any], echo: Callable[[str], None],
          timeout: float = 60.0) -> dict[str, Any]:  # fmt: skip
    backend = backend_for(settings)
    backend.save_command(model, cmd)
    ensure_controller(settings, model, echo)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = backend.load_state(model) or {}
        if state.get("last_command_id") == cmd["id"]:
            return state
        time.sleep(0.5)
    raise ShipyardError(
        f"the rollout controller did not take the {cmd['action']} command within {timeout:.0f}s",
        hint="see `shipyard canary status` and the controller's logs in the Ray dashboard",
    )


def _last_decision(state: dict[str, Any]) -> dict[str, Any]:
    decisions = state.get("decisions") or [{}]
    return decisions[-1]


def start(settings: Settings, model: str, version: str, plan: CanaryPlan, *,
          echo: Callable[[str], None] = print) -> dict[str, Any]:  # fmt: skip
    app = _app(settings, model)
    ref = f"{model}/{version}" if version.isdigit() else f"{model}@{version}"
    resolved = resolve_version(settings, ref)
    view = rollout_view(app)
    if resolved.version == view["stable_version"]:
        raise ConfigError(
            f"version {resolved.version} is already the stable version of {model}",
            hint="pick another version: `shipyard models list`",
        )
    # a challenger may change flavor and architecture, not what the clients send or read
    check_challenger(settings.tracking_uri, model, view["stable_version"], resolved.version,
                     online=bool(app.get("args", {}).get("online_features", True)))  # fmt: skip
    state = backend_for(settings).load_state(model) or {}
    if state.get("status") in ACTIVE:
        raise ConfigError(
            f"a rollout of {model} version {state.get('canary_version')} is {state['status']}",
            hint=f"finish it first: `shipyard canary promote|rollback {model}`",
        )
    cmd = new_command("start", version=resolved.version, model=model, plan=plan.model_dump())
    state = _send(settings, model, cmd, echo)
    decision = _last_decision(state)
    if decision.get("action") == "refused":
        raise ConfigError(f"the controller refused the rollout: {decision['reason']}")
    return state


def command(settings: Settings, model: str, action: str, *,
            echo: Callable[[str], None] = print) -> dict[str, Any]:  # fmt: skip
    """pause, resume, promote or rollback."""
    _app(settings, model)
    state = backend_for(settings).load_state(model) or {}
    if state.get("status") not in ACTIVE:
        raise ConfigError(
            f"no rollout of {model} is in progress (last: {state.get('status', 'none')})",
            hint=f"start one with `shipyard canary start {model} --version V`",
        )
    state = _send(settings, model, new_command(action), echo)
    decision = _last_decision(state)
    if decision.get("action") == "refused":
        raise ConfigError(f"the controller refused: {decision['reason']}")
    return state


def watch(settings: Settings, model: str, plan: CanaryPlan, *, enabled: bool = True,
          echo: Callable[[str], None] = print) -> dict[str, Any]:  # fmt: skip
    _app(settings, model)
    return _send(settings, model, new_command("watch", enabled=enabled, plan=plan.model_dump()),
                 echo)  # fmt: skip


def status(settings: Settings, model: str) -> dict[str, Any]:
    """The rollout's durable state, plus what the Serve config says right now."""
    backend = backend_for(settings)
    app = get_app(backend, model)
    state = dict(backend.load_state(model) or {"app": model, "status": "none"})
    state["serving"] = rollout_view(app) if app else None
    return state
