"""The rollout state machine on thin and bad traffic, without a cluster: an interval
with too few canary requests is inconclusive (the step waits and the next interval
adds to the window), a rollout that stays starved pauses for a person, a canary with
enough bad traffic is rolled back, and nothing is promoted without enough traffic.

The Serve config and the durable state live in an in-memory backend (the same
``ServeBackend`` interface as Serve's REST API and the RayService); time is a clock
the test advances."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from shipyard import canary
from shipyard.canary import CanaryPlan, Rollout, new_command
from shipyard.serve_backends import AppStatus, get_app
from shipyard.serving import app_config, rollout_view, serve_config
from shipyard.settings import Settings

APP = "m"


class MemoryBackend:
    kind = "memory"

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = copy.deepcopy(config)
        self.states: dict[str, dict[str, Any]] = {}
        self.commands: dict[str, dict[str, Any]] = {}

    def read_config(self) -> dict[str, Any]:
        return copy.deepcopy(self.config)

    def write_config(self, config: dict[str, Any]) -> None:
        self.config = copy.deepcopy(config)

    def app_status(self, app: str) -> AppStatus | None:
        deployed = get_app(self, app)
        ready = {d: {"status": "HEALTHY", "replicas": 1} for d in ("router", "stable", "canary")}
        return AppStatus(app, "RUNNING", deployments=ready, config=deployed)

    def load_state(self, app: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.states.get(app))

    def save_state(self, app: str, state: dict[str, Any]) -> None:
        self.states[app] = copy.deepcopy(state)

    def load_command(self, app: str) -> dict[str, Any] | None:
        return self.commands.get(app)

    def save_command(self, app: str, command: dict[str, Any]) -> None:
        self.commands[app] = command

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Registry:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def promoted(self, model: str, version: str) -> str:
        self.events.append(("promoted", version))
        return f"alias champion -> version {version}"

    def rolled_back(self, model: str, version: str, reason: str) -> None:
        self.events.append(("rolled_back", version))


@pytest.fixture
def machine(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> tuple[Rollout, Clock, Registry]:
    monkeypatch.setattr(canary, "DRAIN_S", 0.0)
    monkeypatch.setattr(canary, "wait_ready", lambda *a, **k: None)  # the backend is instant
    settings = Settings(data_root=tmp_path, serve={"feature_repo": "/repo"})
    backend = MemoryBackend(serve_config(settings, [app_config(settings, APP, "1")]))
    clock, registry = Clock(), Registry()
    rollout = Rollout(backend, APP, registry=registry, clock=clock)
    plan = CanaryPlan(steps=[10, 100], interval_s=10, min_requests=20, failure_threshold=2,
                      max_inconclusive=3, max_latency_ratio=2.0)  # fmt: skip
    rollout.handle(new_command("start", version="2", model=APP, plan=plan.model_dump()))
    rollout.tick()  # pending -> starting (the canary loads version 2)
    rollout.tick()  # starting -> progressing at 10 %
    assert rollout.status == "progressing" and rollout.state["weight"] == 10.0
    return rollout, clock, registry


def _interval(rollout: Rollout, clock: Clock, canary_n: int, canary_errors: int = 0,
              stable_n: int = 200, ms: float = 10.0) -> None:  # fmt: skip
    """One interval of router reports, then the controller's tick."""
    rollout.report({"weight": rollout.state["weight"], "variants": {
        "canary": {"requests": canary_n, "errors": canary_errors, "latencies_ms": [ms] * canary_n},
        "stable": {"requests": stable_n, "errors": 0, "latencies_ms": [ms] * stable_n}}})  # fmt: skip
    clock.now += 10.0
    rollout.tick()


def _actions(rollout: Rollout) -> list[str]:
    return [d["action"] for d in rollout.state["decisions"]]


def test_thin_traffic_waits_and_adds_up_instead_of_failing(machine: Any) -> None:
    rollout, clock, registry = machine
    _interval(rollout, clock, canary_n=8)
    _interval(rollout, clock, canary_n=8)
    assert rollout.status == "progressing" and rollout.state["weight"] == 10.0
    assert _actions(rollout)[-2:] == ["inconclusive", "inconclusive"]
    assert rollout.state["failed_checks"] == 0
    _interval(rollout, clock, canary_n=8)  # 24 requests in the window: judged, passed
    assert _actions(rollout)[-2:] == ["check_passed", "advance"]
    assert rollout.state["decisions"][-2]["metrics"]["canary"]["requests"] == 24
    assert rollout.state["weight"] == 100.0 and rollout.state["inconclusive_checks"] == 0
    _interval(rollout, clock, canary_n=5, stable_n=0)  # the last step: not promoted on 5
    assert rollout.status == "progressing" and _actions(rollout)[-1] == "inconclusive"
    _interval(rollout, clock, canary_n=30, stable_n=0)
    assert rollout.status == "promoted" and registry.events == [("promoted", "2")]
    assert rollout_view(get_app(rollout.backend, APP))["stable_version"] == "2"


def test_a_rollout_starved_of_traffic_pauses_for_a_person(machine: Any) -> None:
    rollout, clock, registry = machine
    for _ in range(3):
        _interval(rollout, clock, canary_n=2)
    assert rollout.status == "paused" and _actions(rollout)[-1] == "pause"
    assert "paused for a person" in rollout.state["decisions"][-1]["reason"]
    assert rollout.state["weight"] == 10.0 and registry.events == []  # kept, not rolled back
    rollout.handle(new_command("resume"))
    assert rollout.status == "progressing" and rollout.state["inconclusive_checks"] == 0
    _interval(rollout, clock, canary_n=25)
    assert _actions(rollout)[-2:] == ["check_passed", "advance"]


def test_enough_bad_traffic_rolls_back_even_after_waiting(machine: Any) -> None:
    rollout, clock, registry = machine
    _interval(rollout, clock, canary_n=10, canary_errors=5)  # inconclusive, though bad
    assert rollout.status == "progressing"
    _interval(rollout, clock, canary_n=10, canary_errors=5)  # 20 requests, 50 % errors
    assert _actions(rollout)[-1] == "check_failed" and rollout.state["failed_checks"] == 1
    _interval(rollout, clock, canary_n=25, canary_errors=10)
    assert rollout.status == "rolled_back" and registry.events == [("rolled_back", "2")]
    assert rollout_view(get_app(rollout.backend, APP))["canary_version"] is None


def test_slow_canary_fails_its_check_and_silence_rolls_back(machine: Any) -> None:
    rollout, clock, _ = machine
    rollout.report({"weight": 10.0, "variants": {
        "canary": {"requests": 30, "errors": 0, "latencies_ms": [50.0] * 30},
        "stable": {"requests": 200, "errors": 0, "latencies_ms": [10.0] * 200}}})  # fmt: skip
    clock.now += 10.0
    rollout.tick()
    assert (
        _actions(rollout)[-1] == "check_failed"
        and "latency" in rollout.state["decisions"][-1]["reason"]
    )
    clock.now += 10.0  # an interval without a single report from the router
    rollout.tick()
    assert (
        rollout.status == "rolled_back"
        and "missing metrics" in rollout.state["decisions"][-1]["reason"]
    )
