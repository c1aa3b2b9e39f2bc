"""Canary rollouts: the plan, the analysis, and the rollout state machine.

A rollout moves the canary predictor through a plan of weights (5 → 25 → 50 → 100 %).
At each step the controller collects the router's per-variant counts for one
interval and advances only when the canary had at least ``min_requests`` requests,
its error rate was at most ``max_error_rate`` and its p95 latency at most
``max_latency_ratio`` times stable's. A failed check counts; ``failure_threshold``
failed checks, an interval without any metrics from the router, or a canary that is
not ready by ``ready_timeout_s`` roll back to 0 %.

An interval with fewer than ``min_requests`` canary requests is *inconclusive*, not
failed (Argo Rollouts' semantics): the step waits and the next interval adds to the
same window, so thin traffic is judged once there is enough of it; after
``max_inconclusive`` such intervals in a row the rollout pauses for a person. A
healthy version is never rolled back for lack of traffic, and nothing is promoted
without enough of it. Passing the last step promotes:
the stable predictor moves to the new version (in place, while the canary holds all
traffic), the MLflow alias ``champion`` follows, the canary is emptied.

:class:`Rollout` is the state machine; it runs inside the in-cluster controller actor
(``shipyard.canary_controller``) and keeps every decision, with its reason, in the
backend's durable state. The CLI never changes that state itself: it sends commands
(start, pause, resume, promote, rollback, watch) that the controller applies.
"""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from shipyard.errors import ConfigError
from shipyard.serve_backends import ServeBackend, get_app, put_app, wait_ready
from shipyard.serving import rollout_view, with_rollout

__all__ = [
    "ACTIVE",
    "CanaryPlan",
    "Check",
    "Rollout",
    "Window",
    "analyze",
    "parse_duration",
    "parse_plan",
]

ACTIVE = ("pending", "starting", "progressing", "paused", "promoting", "rolling_back")
TERMINAL = ("promoted", "rolled_back")
DRAIN_S = 2.0  # requests already routed to a variant are answered within this


def parse_duration(text: str | float | int) -> float:
    """``30s``, ``2m``, ``1.5`` (seconds) → seconds."""
    if isinstance(text, int | float):
        return float(text)
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*", str(text))
    if not match:
        raise ValueError(f"{text!r} is not a duration; use e.g. 30s, 2m, 500ms")
    value, unit = float(match[1]), match[2] or "s"
    return value * {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[unit]


class CanaryPlan(BaseModel):
    """A rollout's steps and analysis thresholds."""

    model_config = ConfigDict(extra="forbid")

    steps: list[float] = Field(default=[5.0, 25.0, 50.0, 100.0], min_length=1)
    interval_s: float = Field(default=30.0, ge=1, le=86400)
    max_error_rate: float = Field(default=0.01, ge=0, le=1)
    max_latency_ratio: float = Field(default=1.5, ge=1)
    min_requests: int = Field(default=20, ge=1)
    failure_threshold: int = Field(default=3, ge=1)
    max_inconclusive: int = Field(default=10, ge=1)
    ready_timeout_s: float = Field(default=180.0, ge=5)

    @field_validator("steps")
    @classmethod
    def _steps(cls, steps: list[float]) -> list[float]:
        if any(not 0 < s <= 100 for s in steps):
            raise ValueError(f"every step must be a weight in (0, 100], got {steps}")
        if any(b <= a for a, b in zip(steps, steps[1:], strict=False)):
            raise ValueError(f"steps must increase, got {steps}")
        return steps


def parse_plan(**values: Any) -> CanaryPlan:
    """A plan from CLI-style values (``steps="5,25,50,100"``, ``interval="30s"``)."""
    data = {k: v for k, v in values.items() if v is not None}
    try:
        if isinstance(data.get("steps"), str):
            data["steps"] = [float(s) for s in data["steps"].split(",") if s.strip()]
        if "interval" in data:
            data["interval_s"] = parse_duration(data.pop("interval"))
        if "ready_timeout" in data:
            data["ready_timeout_s"] = parse_duration(data.pop("ready_timeout"))
        return CanaryPlan(**data)
    except ValueError as exc:  # ValidationError is a ValueError
        if isinstance(exc, ValidationError):
            msg = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg'].removeprefix('Value error, ')}"
                for e in exc.errors()
            )
        else:
            msg = str(exc)
        raise ConfigError(f"invalid canary plan: {msg}") from None


@dataclass
class Window:
    """The router's reports over one analysis interval."""

    reports: int = 0
    requests: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    latencies: dict[str, list[float]] = field(default_factory=dict)

    def add(self, report: dict[str, Any]) -> None:
        self.reports += 1
        for variant, data in (report.get("variants") or {}).items():
            self.requests[variant] = self.requests.get(variant, 0) + int(data["requests"])
            self.errors[variant] = self.errors.get(variant, 0) + int(data["errors"])
            self.latencies.setdefault(variant, []).extend(data.get("latencies_ms") or [])

    def summary(self, variant: str) -> dict[str, Any]:
        n = self.requests.get(variant, 0)
        lat = self.latencies.get(variant) or []
        return {
            "requests": n,
            "errors": self.errors.get(variant, 0),
            "error_rate": round(self.errors.get(variant, 0) / n, 4) if n else None,
            "p50_ms": round(float(np.percentile(lat, 50)), 2) if lat else None,
            "p95_ms": round(float(np.percentile(lat, 95)), 2) if lat else None,
        }


@dataclass
class Check:
    passed: bool
    missing: bool  # no metrics at all: the router did not report
    reason: str
    metrics: dict[str, Any]
    inconclusive: bool = False  # too few canary requests to judge: wait for more


def analyze(window: Window, plan: CanaryPlan, baseline_p95_ms: float | None) -> Check:
    """One interval's verdict on the canary."""
    canary, stable = window.summary("canary"), window.summary("stable")
    metrics = {"canary": canary, "stable": stable, "reports": window.reports}
    if window.reports == 0:
        return Check(False, True, "no metrics from the router during the interval", metrics)
    if canary["requests"] < plan.min_requests:
        return Check(False, False, f"canary had {canary['requests']} requests, fewer than "
                     f"min_requests {plan.min_requests}", metrics, inconclusive=True)  # fmt: skip
    if canary["error_rate"] > plan.max_error_rate:
        return Check(False, False, f"canary error rate {canary['error_rate']:.2%} is above "
                     f"{plan.max_error_rate:.2%}", metrics)  # fmt: skip
    reference = stable["p95_ms"] if stable["requests"] >= plan.min_requests else baseline_p95_ms
    if reference:
        ratio = canary["p95_ms"] / reference
        metrics["latency_ratio"] = round(ratio, 3)
        if ratio > plan.max_latency_ratio:
            return Check(False, False, f"canary p95 latency {canary['p95_ms']:.1f} ms is "
                         f"{ratio:.2f}x stable's {reference:.1f} ms, above "
                         f"{plan.max_latency_ratio:.2f}x", metrics)  # fmt: skip
        latency = f"p95 {ratio:.2f}x stable's"
    else:
        latency = "no stable latency to compare"
    return Check(True, False, f"canary {canary['requests']} requests, error rate "
                 f"{canary['error_rate']:.2%}, {latency}", metrics)  # fmt: skip


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def new_command(action: str, **data: Any) -> dict[str, Any]:
    return {"id": uuid.uuid4().hex[:12], "action": action, "at": _now(), **data}


class Rollout:
    """The state machine of one application's rollouts, driven by :meth:`tick`.

    ``state`` is the durable document; every change is saved through the backend
    before the next tick, so a restarted controller continues from it. ``on_promote``
    and ``on_result`` touch the registry (aliases, tags); they are injected so the
    machine itself stays free of MLflow.
    """

    def __init__(self, backend: ServeBackend, app: str, *, registry: Any = None,
                 clock: Any = time.monotonic) -> None:  # fmt: skip
        self.backend = backend
        self.app = app
        self.registry = registry
        self.clock = clock
        self.window = Window()
        self.window_started = clock()
        self.state: dict[str, Any] = backend.load_state(app) or {"app": app, "status": "idle"}

    # -- bookkeeping ---------------------------------------------------------------------------
    @property
    def plan(self) -> CanaryPlan:
        return CanaryPlan(**self.state["plan"])

    @property
    def status(self) -> str:
        return self.state.get("status", "idle")

    def decide(self, action: str, reason: str, **extra: Any) -> None:
        entry = {"at": _now(), "action": action, "weight": self.state.get("weight", 0.0),
                 "reason": reason, **extra}  # fmt: skip
        self.state.setdefault("decisions", []).append(entry)
        self.state["updated_at"] = entry["at"]
        self.backend.save_state(self.app, self.state)

    def reset_window(self, *, keep: bool = False) -> None:
        """A new analysis interval; ``keep``: its requests add to the current window."""
        if not keep:
            self.window = Window()
        self.window_started = self.clock()

    def report(self, report: dict[str, Any]) -> None:
        # a report from before the current weight was applied belongs to the last step
        if self.status == "progressing" and float(report.get("weight", -1)) == float(
            self.state.get("weight", -2)
        ):
            self.window.add(report)

    def _apply(self, **changes: Any) -> None:
        app = get_app(self.backend, self.app)
        if app is None:
            raise RuntimeError(f"application {self.app!r} is not deployed")
        put_app(self.backend, with_rollout(app, **changes), {})

    # -- restart -------------------------------------------------------------------------------
    def resume_after_restart(self, restarts: int) -> None:
        """Called when the controller (re)starts: re-apply what the state says, so a crash
        between a config change and its record leaves nothing half done."""
        status = self.status
        if status in ("progressing", "paused"):
            self._apply(canary_version=self.state["canary_version"],
                        canary_weight=self.state["weight"])  # fmt: skip
            where = (f"step {self.state['step'] + 1}/{len(self.plan.steps)}, weight "
                     f"{self.state['weight']:g}%, {status}; the analysis interval starts again")  # fmt: skip
        elif status == "promoting":
            where = f"promotion, phase {self.state.get('promote_phase', 'shift')}"
        elif status in ACTIVE:
            where = status
        else:
            where = ""
        if where and restarts:
            self.decide("resume", f"controller restarted (restart {restarts}); resuming at {where}")
        self.reset_window()

    # -- commands ------------------------------------------------------------------------------
    def handle(self, command: dict[str, Any] | None) -> None:
        if not command or command.get("id") == self.state.get("last_command_id"):
            return
        self.state["last_command_id"] = command["id"]
        action = command.get("action")
        active = self.status in ACTIVE
        if action == "start":
            self._start(command)
        elif action == "watch":
            self.state["watch"] = {"enabled": bool(command.get("enabled", True)),
                                   "plan": command.get("plan") or {}, "seen": []}  # fmt: skip
            self.decide("watch", "registry watch " + ("on" if command.get("enabled", True)
                                                       else "off"))  # fmt: skip
        elif not active:
            self.decide("refused", f"{action}: no rollout is in progress (status {self.status})")
        elif action == "pause" and self.status == "progressing":
            self.state["status"] = "paused"
            self.decide("pause", "paused by the user; the weight stays")
        elif action == "resume" and self.status == "paused":
            self.state["status"] = "progressing"
            self.state["inconclusive_checks"] = 0
            self.reset_window()
            self.decide("resume", "resumed by the user; the analysis interval starts again")
        elif action == "promote":
            self.state["status"] = "promoting"
            self.decide("promote", "promotion requested by the user; remaining steps skipped")
        elif action == "rollback":
            self.rollback("rollback requested by the user")
        else:
            self.decide("refused", f"{action} does not apply while the rollout is {self.status}")

    def _start(self, command: dict[str, Any]) -> None:
        if self.status in ACTIVE:
            self.decide("refused", f"a rollout of version {self.state.get('canary_version')} "
                        f"is already {self.status}")  # fmt: skip
            return
        app = get_app(self.backend, self.app)
        view = rollout_view(app) if app else None
        if view is None or view["stable_version"] == command["version"]:
            why = "not deployed" if view is None else "already the stable version"
            self.decide("refused", f"version {command['version']}: {why}")
            return
        plan = CanaryPlan(**(command.get("plan") or {}))
        kept = ("watch", "last_command_id", "history", "controller", "controller_restarts")
        keep = {k: self.state[k] for k in kept if k in self.state}
        history = keep.setdefault("history", [])
        if self.state.get("canary_version"):
            history.append({k: self.state.get(k) for k in
                            ("canary_version", "status", "started_at", "updated_at")})  # fmt: skip
        self.state = {
            **keep, "app": self.app, "model": command.get("model", self.app),
            "stable_version": view["stable_version"], "canary_version": command["version"],
            "plan": plan.model_dump(), "status": "pending", "step": -1, "weight": 0.0,
            "failed_checks": 0, "inconclusive_checks": 0, "baseline_p95_ms": None, "source": command.get("source", "cli"),
            "started_at": _now(), "decisions": [],
        }  # fmt: skip
        self.decide("start", f"canary of version {command['version']} against stable "
                    f"{view['stable_version']}; steps {plan.steps}, interval {plan.interval_s:g}s")  # fmt: skip

    # -- the machine ---------------------------------------------------------------------------
    def tick(self) -> None:
        status = self.status
        if status == "pending":
            self._apply(canary_version=self.state["canary_version"], canary_weight=0.0)
            self.state["status"] = "starting"
            self.state["ready_deadline"] = time.time() + self.plan.ready_timeout_s
            self.decide(
                "deploy", f"canary predictor loading version {self.state['canary_version']}"
            )
        elif status == "starting":
            app_status = self.backend.app_status(self.app)
            deployed = app_status and app_status.config and rollout_view(app_status.config)
            if (app_status and deployed and deployed["canary_version"] == self.state["canary_version"]
                    and app_status.deployment_ready("canary")):  # fmt: skip
                self.decide("ready", "canary predictor is healthy")
                self._advance(0)
            elif time.time() > self.state["ready_deadline"]:
                dep = (app_status.deployments.get("canary") if app_status else None) or {}
                self.rollback(f"canary not ready after {self.plan.ready_timeout_s:g}s "
                              f"({dep.get('status', 'absent')}: {dep.get('message', '')})".strip())  # fmt: skip
        elif status == "progressing":
            if self.clock() - self.window_started >= self.plan.interval_s:
                self._analyze()
        elif status == "paused":
            self.reset_window()
        elif status == "promoting":
            self.promote()
        elif status == "rolling_back":
            self.rollback(self.state.get("rollback_reason", "rolling back"))

    def _advance(self, step: int) -> None:
        weight = self.plan.steps[step]
        self._apply(canary_weight=weight)
        self.state.update(status="progressing", step=step, weight=weight, inconclusive_checks=0)
        self.reset_window()
        self.decide("advance", f"step {step + 1}/{len(self.plan.steps)}: canary weight {weight:g}%")

    def _analyze(self) -> None:
        plan = self.plan
        check = analyze(self.window, plan, self.state.get("baseline_p95_ms"))
        stable = check.metrics["stable"]
        if stable["requests"] >= plan.min_requests:
            self.state["baseline_p95_ms"] = stable["p95_ms"]
        if check.inconclusive and not check.missing:
            self._inconclusive(check)
            return
        self.state["inconclusive_checks"] = 0
        self.reset_window()
        if check.missing:
            self.rollback(f"missing metrics: {check.reason}", metrics=check.metrics)
        elif check.passed:
            self.decide("check_passed", check.reason, metrics=check.metrics)
            if self.state["step"] + 1 < len(plan.steps):
                self._advance(self.state["step"] + 1)
            else:
                self.state["status"] = "promoting"
                self.decide("promote", "the last step passed its analysis")
                self.promote()
        else:
            self.state["failed_checks"] += 1
            self.decide("check_failed", f"{check.reason} (failed check "
                        f"{self.state['failed_checks']}/{plan.failure_threshold})",
                        metrics=check.metrics)  # fmt: skip
            if self.state["failed_checks"] >= plan.failure_threshold:
                self.rollback(f"{self.state['failed_checks']} failed checks; last: {check.reason}")

    def _inconclusive(self, check: Check) -> None:
        """Too few canary requests: the step waits and the next interval adds to this
        window; after ``max_inconclusive`` intervals in a row, a person decides."""
        plan = self.plan
        count = self.state["inconclusive_checks"] = self.state.get("inconclusive_checks", 0) + 1
        self.reset_window(keep=True)
        if count < plan.max_inconclusive:
            self.decide("inconclusive", f"{check.reason}: the step waits for more traffic "
                        f"(inconclusive {count}/{plan.max_inconclusive})", metrics=check.metrics)  # fmt: skip
            return
        self.state["status"] = "paused"
        self.decide("pause", f"{check.reason} after {count} intervals: paused for a person; "
                    f"`shipyard canary resume|promote|rollback {self.app}` decides",
                    metrics=check.metrics)  # fmt: skip

    def promote(self) -> None:
        """Phases recorded in the state, so a controller restarted mid-way finishes the
        job without repeating one: all traffic to the canary; stable reloads the new
        version in place while it has no traffic; traffic back to stable and the canary
        emptied; the registry's ``champion`` alias moved."""
        version = self.state["canary_version"]
        wait = self.plan.ready_timeout_s
        phase = self.state.get("promote_phase", "shift")
        if phase == "shift":
            if self.state.get("weight") != 100.0:
                self._apply(canary_weight=100.0)
                self.state["weight"] = 100.0
                wait_ready(self.backend, self.app, {"router": 1}, timeout=wait)
                time.sleep(DRAIN_S)  # requests already routed to stable are answered
            phase = self.state["promote_phase"] = "stable"
            self.decide("shift", "all traffic on the canary; stable loads the new version")
        if phase == "stable":
            self._apply(stable_version=version)
            wait_ready(self.backend, self.app, {"stable": 1}, timeout=wait)
            phase = self.state["promote_phase"] = "drain"
            self.decide("stable_loaded", f"stable serves version {version}")
        if phase == "drain":
            self._drain_canary()
            self.state["promote_phase"] = "registry"
            self.backend.save_state(self.app, self.state)
        moved = self.registry.promoted(self.state["model"], version) if self.registry else ""
        self.state.update(status="promoted", stable_version=version, finished_at=_now())
        self.decide("promoted", f"stable now serves version {version}; {moved}".rstrip("; "))

    def _drain_canary(self) -> None:
        """Traffic off the canary first; only once every router has the new weight (and
        its requests in flight are answered) is the canary's model unloaded."""
        self._apply(canary_weight=0.0)
        self.state["weight"] = 0.0
        wait_ready(self.backend, self.app, {"router": 1}, timeout=self.plan.ready_timeout_s)
        time.sleep(DRAIN_S)
        self._apply(canary_version=None)

    def rollback(self, reason: str, **extra: Any) -> None:
        self.state.update(status="rolling_back", rollback_reason=reason)
        self.backend.save_state(self.app, self.state)
        self._drain_canary()
        if self.registry:
            self.registry.rolled_back(self.state["model"], self.state["canary_version"], reason)
        self.state.update(status="rolled_back", finished_at=_now())
        self.decide("rolled_back", reason, **extra)
