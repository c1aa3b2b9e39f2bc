"""The canary, without a cluster: the plan, the analysis, the transition table, and the
rollout state machine through every transition.

The Serve config and the durable state live in an in-memory backend (the same
``ServeBackend`` interface as Serve's REST API and the RayService); time is a fake
monotonic clock, a fake wall clock and a fake sleep that the test advances; the
registry is a fake that records what it was told."""

from __future__ import annotations

import copy
import itertools
import json
from dataclasses import asdict
from typing import Any

import pytest
from shipyard.canary import (
    ACTIVE,
    TERMINAL,
    TRANSITIONS,
    CanaryPlan,
    Event,
    IllegalTransition,
    Rollout,
    RolloutState,
    RouterReport,
    ShadowReport,
    Status,
    VariantReport,
    Window,
    analyze,
    analyze_shadow,
    compare_answers,
    new_command,
    parse_duration,
    parse_plan,
    transition,
)
from shipyard.canary import machine as machine_module
from shipyard.errors import ConfigError
from shipyard.serve_backends import AppStatus, get_app, put_app
from shipyard.serving import app_config, rollout_view, serve_config, with_rollout
from shipyard.settings import Settings

APP = "m"


class Crash(Exception):
    """The controller's process dies here."""


class MemoryBackend:
    kind = "memory"

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = copy.deepcopy(config)
        self.states: dict[str, dict[str, Any]] = {}
        self.commands: dict[str, dict[str, Any]] = {}
        self.canary_ready = True
        self.writes = 0
        self.crash_on_write: int | None = None  # the n-th config write dies

    def read_config(self) -> dict[str, Any]:
        return copy.deepcopy(self.config)

    def write_config(self, config: dict[str, Any]) -> None:
        self.writes += 1
        if self.writes == self.crash_on_write:
            raise Crash(f"config write {self.writes}")
        self.config = copy.deepcopy(config)

    def app_status(self, app: str) -> AppStatus | None:
        deployed = get_app(self, app)
        if deployed is None:
            return None
        ready = {d: {"status": "HEALTHY", "replicas": 1} for d in ("router", "stable", "canary")}
        if not self.canary_ready:
            ready["canary"] = {"status": "UPDATING", "replicas": 0, "message": "loading"}
        return AppStatus(app, "RUNNING", deployments=ready, config=deployed)

    def load_state(self, app: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.states.get(app))

    def save_state(self, app: str, state: dict[str, Any]) -> None:
        json.dumps(state)  # what a backend stores is JSON
        self.states[app] = copy.deepcopy(state)

    def load_command(self, app: str) -> dict[str, Any] | None:
        return self.commands.get(app)

    def save_command(self, app: str, command: dict[str, Any]) -> None:
        self.commands[app] = command

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind}


class Time:
    """A monotonic clock, a wall clock and a sleep that moves both."""

    def __init__(self) -> None:
        self.mono, self.wall = 100.0, 1_700_000_000.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.mono

    def now(self) -> float:
        return self.wall

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.advance(seconds)

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += seconds


class Registry:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        self.crash = False

    def promoted(self, model: str, version: str) -> str:
        if self.crash:
            self.crash = False
            raise Crash("registry")
        self.events.append(("promoted", version))
        return f"alias champion -> version {version}"

    def rolled_back(self, model: str, version: str, reason: str) -> None:
        self.events.append(("rolled_back", version))


PLAN = CanaryPlan(steps=[10, 100], interval_s=10, min_requests=20, failure_threshold=2,
                  max_inconclusive=3, max_latency_ratio=2.0, warmup_s=0)  # fmt: skip


class World:
    """One application, its backend, time and registry; ``rollout`` is the controller's
    machine, ``restart()`` a new controller process on the same durable state."""

    def __init__(self, settings: Settings) -> None:
        self.backend = MemoryBackend(serve_config(settings, [app_config(settings, APP, "1")]))
        self.time, self.registry = Time(), Registry()
        self.rollout = self.restart()

    def restart(self) -> Rollout:
        self.rollout = Rollout(self.backend, APP, registry=self.registry, clock=self.time.clock,
                               now=self.time.now, sleep=self.time.sleep, poll_s=0.0)  # fmt: skip
        return self.rollout

    def start(self, plan: CanaryPlan = PLAN, version: str = "2") -> None:
        self.rollout.handle(new_command("start", version=version, model=APP,
                                        plan=plan.model_dump()))  # fmt: skip

    def command(self, action: str) -> None:
        self.rollout.handle(new_command(action))

    def interval(self, canary_n: int, canary_errors: int = 0, stable_n: int = 200,
                 ms: float = 10.0, canary_ms: float | None = None) -> None:  # fmt: skip
        """One interval of router reports, then the controller's tick."""
        self.report(canary_n, canary_errors, stable_n, ms, canary_ms)
        self.time.advance(PLAN.interval_s)
        self.rollout.tick()

    def report(self, canary_n: int, canary_errors: int = 0, stable_n: int = 200,
               ms: float = 10.0, canary_ms: float | None = None) -> None:  # fmt: skip
        self.rollout.report(RouterReport(weight=self.rollout.state.weight, variants={
            "canary": VariantReport(canary_n, canary_errors, [canary_ms or ms] * canary_n),
            "stable": VariantReport(stable_n, 0, [ms] * stable_n)}).to_dict())  # fmt: skip

    @property
    def serving(self) -> dict[str, Any]:
        return rollout_view(get_app(self.backend, APP))

    @property
    def saved(self) -> dict[str, Any]:
        return self.backend.states[APP]

    def actions(self) -> list[str]:
        return [d["action"] for d in self.saved["decisions"]]


@pytest.fixture
def settings(tmp_path: Any) -> Settings:
    return Settings(data_root=tmp_path, serve={"feature_repo": "/repo"})


@pytest.fixture
def world(settings: Settings) -> World:
    return World(settings)


@pytest.fixture
def progressing(world: World) -> World:
    """A rollout of version 2 at its first step, 10 %."""
    world.start()
    world.rollout.tick()  # pending -> starting (the canary loads version 2)
    world.rollout.tick()  # starting -> progressing at 10 %
    assert world.rollout.status == Status.PROGRESSING and world.serving["canary_weight"] == 10.0
    return world


# -- the table ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("move", "to"), list(TRANSITIONS.items()), ids=lambda x: str(x))
def test_every_transition_of_the_table(move: tuple[Status, Event], to: Status) -> None:
    assert transition(*move) == to
    assert transition(str(move[0]), str(move[1])) == to  # as the JSON document spells them


ILLEGAL = [m for m in itertools.product(Status, Event) if m not in TRANSITIONS]


@pytest.mark.parametrize("move", ILLEGAL, ids=lambda m: f"{m[0]}-{m[1]}")
def test_every_other_move_is_refused(move: tuple[Status, Event]) -> None:
    with pytest.raises(IllegalTransition, match="does not apply while the rollout is"):
        transition(*move)


def test_statuses_are_a_closed_set() -> None:
    assert ACTIVE.isdisjoint(TERMINAL) and set(Status) == ACTIVE | TERMINAL | {Status.IDLE}
    assert not [m for m in TRANSITIONS if m[0] in TERMINAL and m[1] != Event.START]
    assert "promoted" in TERMINAL and "paused" in ACTIVE  # the JSON's strings match
    with pytest.raises(ValueError):
        Status("none")


def test_the_machine_changes_status_only_through_the_table(
    progressing: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[str, str]] = []
    real = machine_module.transition
    monkeypatch.setattr(machine_module, "transition",
                        lambda s, e: seen.append((str(s), str(e))) or real(s, e))  # fmt: skip
    progressing.interval(canary_n=30)
    progressing.interval(canary_n=30, stable_n=0)
    assert seen == [("progressing", "advance"), ("progressing", "promote"),
                    ("promoting", "promoted")]  # fmt: skip


# -- start -------------------------------------------------------------------------------------


def test_start_deploys_then_progresses_when_the_canary_is_ready(world: World) -> None:
    world.backend.canary_ready = False
    world.start()
    assert world.saved["status"] == "pending" and world.actions() == ["start"]
    world.rollout.tick()
    assert world.rollout.status == Status.STARTING and world.serving["canary_version"] == "2"
    assert world.serving["canary_weight"] == 0.0
    world.time.advance(30)
    world.rollout.tick()
    assert world.rollout.status == Status.STARTING  # still loading, before the deadline
    world.backend.canary_ready = True
    world.rollout.tick()
    assert world.rollout.status == Status.PROGRESSING and world.saved["step"] == 0
    assert world.actions() == ["start", "deploy", "ready", "advance"]
    assert world.serving["canary_weight"] == 10.0 and world.saved["weight"] == 10.0


def test_a_canary_not_ready_by_the_deadline_is_rolled_back(world: World) -> None:
    world.backend.canary_ready = False
    world.start(PLAN.model_copy(update={"ready_timeout_s": 60}))
    world.rollout.tick()
    world.time.advance(61)
    world.rollout.tick()
    assert world.rollout.status == Status.ROLLED_BACK
    assert "not ready after 60s (UPDATING: loading)" in world.saved["decisions"][-1]["reason"]
    assert world.serving == {
        "stable_version": "1",
        "canary_version": None,
        "canary_weight": 0.0,
        "shadow_weight": 0.0,
    }
    assert world.registry.events == [("rolled_back", "2")]


@pytest.mark.parametrize(
    ("setup", "version", "reason"),
    [("active", "3", "is already progressing"), (None, "1", "already the stable version"),
     ("undeployed", "2", "not deployed")],
)  # fmt: skip
def test_start_is_refused(progressing: World, setup: str | None, version: str,
                          reason: str) -> None:  # fmt: skip
    world = progressing
    if setup != "active":
        world.command("rollback")
    if setup == "undeployed":
        world.backend.config["applications"] = []
    before = world.rollout.status
    world.start(version=version)
    assert world.actions()[-1] == "refused" and reason in world.saved["decisions"][-1]["reason"]
    assert world.rollout.status == before


def test_a_new_rollout_keeps_the_history_watch_and_controller(progressing: World) -> None:
    world = progressing
    world.command("watch")
    world.command("rollback")
    world.rollout.state.controller_restarts = 2
    world.start(version="3")
    saved = world.saved
    assert saved["status"] == "pending" and saved["canary_version"] == "3"
    assert saved["history"][0]["canary_version"] == "2"
    assert saved["history"][0]["status"] == "rolled_back"
    assert saved["watch"]["enabled"] and saved["controller_restarts"] == 2
    assert saved["decisions"][0]["action"] == "start" and len(saved["decisions"]) == 1


# -- analysis at each step ---------------------------------------------------------------------


def test_passing_every_step_promotes_and_moves_the_registry(progressing: World) -> None:
    world = progressing
    world.interval(canary_n=30)
    assert world.actions()[-2:] == ["check_passed", "advance"] and world.saved["weight"] == 100
    world.interval(canary_n=300, stable_n=0)  # at 100 %: compared with the stable baseline
    assert world.rollout.status == Status.PROMOTED
    assert world.actions()[-5:] == ["check_passed", "promote", "shift", "stable_loaded",
                                    "promoted"]  # fmt: skip
    assert world.registry.events == [("promoted", "2")]
    assert world.serving == {
        "stable_version": "2",
        "canary_version": None,
        "canary_weight": 0.0,
        "shadow_weight": 0.0,
    }
    assert world.saved["stable_version"] == "2" and world.saved["finished_at"]
    assert world.time.slept == [machine_module.DRAIN_S]  # the drain, through the fake sleep


def test_failed_checks_up_to_the_threshold_roll_back(progressing: World) -> None:
    world = progressing
    world.interval(canary_n=30, canary_errors=5)
    assert world.actions()[-1] == "check_failed" and world.saved["failed_checks"] == 1
    assert "(failed check 1/2)" in world.saved["decisions"][-1]["reason"]
    assert world.rollout.status == Status.PROGRESSING
    world.interval(canary_n=30, canary_ms=50.0)  # too slow: 5x stable's p95
    assert world.rollout.status == Status.ROLLED_BACK
    assert "2 failed checks; last: canary p95 latency" in world.saved["decisions"][-1]["reason"]
    assert world.registry.events == [("rolled_back", "2")]
    assert world.serving["canary_version"] is None and world.serving["canary_weight"] == 0.0


def test_an_interval_without_metrics_rolls_back(progressing: World) -> None:
    world = progressing
    world.time.advance(PLAN.interval_s)  # not a single report from the router
    world.rollout.tick()
    assert world.rollout.status == Status.ROLLED_BACK
    assert world.saved["decisions"][-1]["reason"].startswith("missing metrics")
    assert world.saved["decisions"][-1]["metrics"]["reports"] == 0


def test_a_report_for_another_weight_belongs_to_the_last_step(progressing: World) -> None:
    world = progressing
    world.rollout.report(RouterReport(weight=0.0, variants={
        "canary": VariantReport(50, 50, [1.0] * 50)}).to_dict())  # fmt: skip
    world.interval(canary_n=30)
    assert world.saved["decisions"][-2]["metrics"]["canary"]["requests"] == 30


def test_thin_traffic_waits_and_adds_up_instead_of_failing(progressing: World) -> None:
    world = progressing
    world.interval(canary_n=8)
    world.interval(canary_n=8)
    assert world.rollout.status == Status.PROGRESSING and world.saved["weight"] == 10.0
    assert world.actions()[-2:] == ["inconclusive", "inconclusive"]
    assert world.saved["failed_checks"] == 0 and world.saved["inconclusive_checks"] == 2
    world.interval(canary_n=8)  # 24 requests in the window: judged, passed
    assert world.actions()[-2:] == ["check_passed", "advance"]
    assert world.saved["decisions"][-2]["metrics"]["canary"]["requests"] == 24
    assert world.saved["weight"] == 100.0 and world.saved["inconclusive_checks"] == 0
    world.interval(canary_n=5, stable_n=0)  # the last step: not promoted on 5 requests
    assert world.rollout.status == Status.PROGRESSING and world.actions()[-1] == "inconclusive"
    world.interval(canary_n=30, stable_n=0)
    assert world.rollout.status == Status.PROMOTED and world.registry.events == [("promoted", "2")]


def test_a_rollout_starved_of_traffic_pauses_for_a_person(progressing: World) -> None:
    world = progressing
    for _ in range(3):
        world.interval(canary_n=2)
    assert world.rollout.status == Status.PAUSED and world.actions()[-1] == "pause"
    reason = world.saved["decisions"][-1]["reason"]
    assert "fewer than min_requests 20 after 3 intervals: paused for a person" in reason
    assert f"shipyard canary resume|promote|rollback {APP}" in reason
    assert world.saved["weight"] == 10.0 and world.registry.events == []  # kept, not rolled back
    world.interval(canary_n=50)  # paused: nothing is judged
    assert world.rollout.status == Status.PAUSED
    world.command("resume")
    assert world.rollout.status == Status.PROGRESSING and world.saved["inconclusive_checks"] == 0
    world.interval(canary_n=25)
    assert world.actions()[-2:] == ["check_passed", "advance"]
    assert world.saved["decisions"][-2]["metrics"]["canary"]["requests"] == 25  # a fresh window


def test_enough_bad_traffic_rolls_back_even_after_waiting(progressing: World) -> None:
    world = progressing
    world.interval(canary_n=10, canary_errors=5)  # inconclusive, though bad
    assert world.rollout.status == Status.PROGRESSING
    world.interval(canary_n=10, canary_errors=5)  # 20 requests, 50 % errors
    assert world.actions()[-1] == "check_failed" and world.saved["failed_checks"] == 1
    world.interval(canary_n=25, canary_errors=10)
    assert world.rollout.status == Status.ROLLED_BACK


def test_warm_up_latencies_are_left_out_but_its_errors_count(world: World) -> None:
    world.start(PLAN.model_copy(update={"warmup_s": 4.0, "max_error_rate": 0.05}))
    world.rollout.tick()
    world.rollout.tick()
    world.report(canary_n=30, canary_ms=40.0)  # the new replica warming up: slow
    world.time.advance(5)  # the warm-up is over
    world.report(canary_n=30, canary_ms=11.0)
    world.time.advance(5)
    world.rollout.tick()
    decision = world.saved["decisions"][-2]
    assert decision["action"] == "check_passed", decision
    assert decision["metrics"]["canary"]["requests"] == 60
    assert decision["metrics"]["canary"]["p95_ms"] == 11.0
    # errors in the warm-up count: 4 of 60 (6.7 %) fail a 5 % error rate
    world.report(canary_n=30, canary_errors=4, canary_ms=10.0)  # just after the advance
    world.time.advance(5)
    world.report(canary_n=30, stable_n=0)
    world.time.advance(5)
    world.rollout.tick()
    assert world.actions()[-1] == "check_failed"
    assert "error rate 6.67%" in world.saved["decisions"][-1]["reason"]


def test_the_warm_up_runs_from_the_first_report_at_the_new_weight(world: World) -> None:
    """A router slow to take the new weight (a loaded machine) does not use the warm-up up."""
    world.start(PLAN.model_copy(update={"warmup_s": 4.0, "interval_s": 20.0}))
    world.rollout.tick()
    world.rollout.tick()
    world.time.advance(6)  # no router has the new weight yet
    world.report(canary_n=30, canary_ms=40.0)  # the first report: the warm-up starts now
    world.time.advance(5)
    world.report(canary_n=30, canary_ms=11.0)
    world.time.advance(10)
    world.rollout.tick()
    decision = world.saved["decisions"][-2]
    assert decision["action"] == "check_passed", decision
    assert decision["metrics"]["canary"]["p95_ms"] == 11.0


def test_every_canary_latency_in_the_warm_up_is_inconclusive() -> None:
    window = Window()
    report = RouterReport(weight=10, variants={"canary": VariantReport(30, 0, [9.0] * 30),
                                               "stable": VariantReport(90, 0, [9.0] * 90)})  # fmt: skip
    window.add(report, latencies=False)
    check = analyze(window, PLAN, None)
    assert check.inconclusive and not check.passed and "warm-up" in check.reason


# -- commands ----------------------------------------------------------------------------------


def test_pause_and_resume(progressing: World) -> None:
    world = progressing
    world.command("pause")
    assert world.rollout.status == Status.PAUSED and world.actions()[-1] == "pause"
    assert world.serving["canary_weight"] == 10.0
    world.command("pause")
    assert world.actions()[-1] == "refused"
    assert (
        "pause does not apply while the rollout is paused" in world.saved["decisions"][-1]["reason"]
    )
    world.command("resume")
    assert world.rollout.status == Status.PROGRESSING and world.actions()[-1] == "resume"


@pytest.mark.parametrize("paused", [False, True])
def test_promote_skips_the_remaining_steps(progressing: World, paused: bool) -> None:
    world = progressing
    if paused:
        world.command("pause")
    world.command("promote")
    assert world.rollout.status == Status.PROMOTING
    world.rollout.tick()
    assert world.rollout.status == Status.PROMOTED and world.serving["stable_version"] == "2"
    assert world.registry.events == [("promoted", "2")]


@pytest.mark.parametrize("paused", [False, True])
def test_rollback_by_the_user(progressing: World, paused: bool) -> None:
    world = progressing
    if paused:
        world.command("pause")
    world.command("rollback")
    assert world.rollout.status == Status.ROLLED_BACK
    assert world.saved["decisions"][-1]["reason"] == "rollback requested by the user"
    assert world.saved["rollback_reason"] == "rollback requested by the user"
    assert world.serving == {
        "stable_version": "1",
        "canary_version": None,
        "canary_weight": 0.0,
        "shadow_weight": 0.0,
    }


def test_commands_that_do_not_apply_are_refused(world: World) -> None:
    world.command("pause")
    assert world.actions() == ["refused"]
    assert "no rollout is in progress (status idle)" in world.saved["decisions"][-1]["reason"]
    world.start()
    for action in ("promote", "resume", "dance"):
        world.command(action)
        assert world.actions()[-1] == "refused", action
        assert world.rollout.status == Status.PENDING


def test_a_command_is_applied_once(progressing: World) -> None:
    """The backend holds the last command; the controller reads it at every tick."""
    world = progressing
    world.backend.save_command(APP, new_command("pause"))
    for _ in range(3):
        world.rollout.handle(world.backend.load_command(APP))
        world.rollout.tick()
    assert world.rollout.status == Status.PAUSED
    assert world.actions()[-1] == "pause" and world.actions().count("refused") == 0
    assert world.saved["last_command_id"] == world.backend.commands[APP]["id"]
    world.rollout.handle(None)
    assert world.actions()[-1] == "pause"


def test_watch_turns_the_registry_watch_on_and_off(world: World) -> None:
    world.rollout.handle(new_command("watch", enabled=True, plan={"steps": [50, 100]}))
    assert world.saved["watch"] == {"enabled": True, "plan": {"steps": [50, 100]}, "seen": []}
    world.rollout.handle(new_command("watch", enabled=False))
    assert world.saved["watch"]["enabled"] is False and world.saved["status"] == "idle"


# -- the controller restarts -------------------------------------------------------------------


def test_resume_after_restart_reapplies_the_config(progressing: World) -> None:
    world = progressing
    world.command("pause")
    app = get_app(world.backend, APP)
    put_app(world.backend, with_rollout(app, canary_weight=0.0), {})  # a crash mid-change
    rollout = world.restart()
    assert rollout.status == Status.PAUSED and rollout.state.weight == 10.0
    rollout.resume_after_restart(1)
    assert world.serving["canary_weight"] == 10.0 and world.serving["canary_version"] == "2"
    assert world.actions()[-1] == "resume"
    assert (
        "controller restarted (restart 1); resuming at step 1/2, weight 10%, paused"
        in (world.saved["decisions"][-1]["reason"])
    )


@pytest.mark.parametrize(("crash", "phase"), [(1, "shift"), (2, "stable"), (3, "drain"),
                                              (4, "drain"), (None, "registry")])  # fmt: skip
def test_a_promotion_resumes_after_a_crash_in_each_phase(progressing: World, crash: int | None,
                                                         phase: str) -> None:  # fmt: skip
    world = progressing
    world.command("pause")
    world.command("promote")  # from 10 %: the shift phase changes the weight
    writes = world.backend.writes
    if crash is None:
        world.registry.crash = True
    else:
        world.backend.crash_on_write = writes + crash
    with pytest.raises(Crash):
        world.rollout.tick()
    assert (
        world.saved["status"] == "promoting" and world.saved.get("promote_phase", "shift") == phase
    )
    rollout = world.restart()
    rollout.resume_after_restart(1)
    assert f"resuming at promotion, phase {phase}" in world.saved["decisions"][-1]["reason"]
    rollout.tick()
    assert rollout.status == Status.PROMOTED and world.registry.events == [("promoted", "2")]
    assert world.serving == {
        "stable_version": "2",
        "canary_version": None,
        "canary_weight": 0.0,
        "shadow_weight": 0.0,
    }
    actions = world.actions()
    assert actions.count("shift") == 1 and actions.count("stable_loaded") == 1
    assert actions[-1] == "promoted"


def test_a_rollback_resumes_after_a_crash(progressing: World) -> None:
    world = progressing
    world.backend.crash_on_write = world.backend.writes + 1
    with pytest.raises(Crash):
        world.command("rollback")
    assert world.saved["status"] == "rolling_back"
    rollout = world.restart()
    rollout.resume_after_restart(1)
    rollout.tick()
    assert rollout.status == Status.ROLLED_BACK
    assert world.saved["decisions"][-1]["reason"] == "rollback requested by the user"
    assert world.serving["canary_version"] is None


def test_no_rollback_once_stable_loads_the_new_version(progressing: World) -> None:
    world = progressing
    world.command("promote")
    world.backend.crash_on_write = world.backend.writes + 2  # in the stable phase
    with pytest.raises(Crash):
        world.rollout.tick()
    world.restart().resume_after_restart(1)
    world.command("rollback")
    assert world.actions()[-1] == "refused" and world.rollout.status == Status.PROMOTING
    world.rollout.tick()
    assert world.rollout.status == Status.PROMOTED


# -- the durable document ----------------------------------------------------------------------

TODAY = {
    "watch": {"enabled": True, "plan": {}, "seen": ["3"]},
    "last_command_id": "a1b2c3d4e5f6",
    "history": [{"canary_version": "3", "status": "rolled_back",
                 "started_at": "2025-11-20T10:00:00+00:00", "updated_at": "2025-11-20T10:05:00+00:00"}],
    "controller": {"pid": 4242, "restarts": 1, "node": "abc123"},
    "controller_restarts": 1,
    "app": "fraud-detector", "model": "fraud-detector", "stable_version": "1",
    "canary_version": "4", "plan": CanaryPlan().model_dump(exclude={"warmup_s"}),
    "status": "promoting", "step": 3, "weight": 100.0, "failed_checks": 1,
    "inconclusive_checks": 0, "baseline_p95_ms": 12.5, "source": "watch",
    "started_at": "2025-11-21T10:00:00+00:00",
    "decisions": [
        {"at": "2025-11-21T10:00:00+00:00", "action": "start", "weight": 0.0, "reason": "canary"},
        {"at": "2025-11-21T10:01:00+00:00", "action": "check_passed", "weight": 5.0,
         "reason": "ok", "metrics": {"canary": {"requests": 30}, "reports": 10}},
    ],
    "updated_at": "2025-11-21T10:01:00+00:00", "ready_deadline": 1763719380.5,
    "promote_phase": "drain", "rollback_reason": "x", "finished_at": None,
}  # fmt: skip


def test_a_state_document_of_today_loads_and_dumps_with_the_same_keys() -> None:
    state = RolloutState.load(copy.deepcopy(TODAY), "fraud-detector")
    assert state.status == Status.PROMOTING and state.controller and state.controller.pid == 4242
    assert state.plan is not None and state.plan.warmup_s == 5.0  # an older plan: the default
    dumped = state.dump()
    assert set(dumped) == set(TODAY)
    assert dumped["decisions"] == TODAY["decisions"] and dumped["history"] == TODAY["history"]
    assert {k: v for k, v in dumped.items() if k != "plan"} == {
        k: v for k, v in TODAY.items() if k != "plan"}  # fmt: skip
    assert json.loads(json.dumps(dumped))["status"] == "promoting"
    idle = RolloutState.load({"app": "m", "status": "idle"}, "m")
    assert idle.dump() == {"app": "m", "status": "idle"}
    assert RolloutState.load(None, "m").dump() == {"app": "m", "status": "idle"}
    with pytest.raises(ValueError, match="status"):
        RolloutState.load({"app": "m", "status": "sleeping"}, "m")


def test_the_router_report_round_trips() -> None:
    variant = VariantReport()
    variant.record(True, 12.3456)
    variant.record(False, 30.0)
    report = RouterReport(weight=25.0, variants={"canary": variant}, replica="r1", at=1.5,
                          versions={"stable": "1", "canary": "2"})  # fmt: skip
    wire = report.to_dict()
    assert wire == {"weight": 25.0, "replica": "r1", "at": 1.5, "shadow_weight": 0.0,
                    "shadow": None, "versions": {"stable": "1", "canary": "2"},
                    "variants": {"canary": {"requests": 2, "errors": 1,
                                            "latencies_ms": [12.346, 30.0]}}}  # fmt: skip
    assert RouterReport.from_dict(json.loads(json.dumps(wire))) == report


# -- plan and analysis -------------------------------------------------------------------------


def _window(canary: tuple[int, int, float], stable: tuple[int, int, float]) -> Window:
    w = Window()
    for name, (n, errors, ms) in (("canary", canary), ("stable", stable)):
        w.add(RouterReport(weight=0, variants={name: VariantReport(n, errors, [ms] * n)}))
    return w


def test_analysis_verdicts() -> None:
    plan = CanaryPlan(min_requests=20, max_error_rate=0.05, max_latency_ratio=2.0)
    assert analyze(_window((50, 1, 10.0), (500, 0, 9.0)), plan, None).passed
    few = analyze(_window((5, 0, 10.0), (500, 0, 9.0)), plan, None)
    assert not few.passed and not few.missing and few.inconclusive
    assert "fewer than min_requests" in few.reason
    errors = analyze(_window((50, 10, 10.0), (500, 0, 9.0)), plan, None)
    assert not errors.passed and not errors.inconclusive and "error rate 20.00%" in errors.reason
    slow = analyze(_window((50, 0, 50.0), (500, 0, 10.0)), plan, None)
    assert not slow.passed and "5.00x" in slow.reason
    # at 100 % stable has no traffic: compare with the last stable baseline
    assert not analyze(_window((50, 0, 50.0), (0, 0, 0.0)), plan, 10.0).passed
    assert analyze(_window((50, 0, 12.0), (0, 0, 0.0)), plan, 10.0).passed
    missing = analyze(Window(), plan, None)
    assert missing.missing and not missing.passed


def test_plan_parsing_names_the_bad_value() -> None:
    plan = parse_plan(steps="10,50,100", interval="2m", max_error_rate=0.02, warmup="10s")
    assert plan.steps == [10, 50, 100] and plan.interval_s == 120 and plan.warmup_s == 10
    assert parse_plan().warmup_s == 5.0 and parse_plan(warmup="0").warmup_s == 0
    assert parse_plan(interval="4s").warmup_window_s == 2.0  # at most half an interval
    assert parse_duration("500ms") == 0.5
    for bad, word in [({"steps": "50,10"}, "increase"), ({"steps": "0,100"}, "(0, 100]"),
                      ({"interval": "soon"}, "duration"), ({"min_requests": 0}, "min_requests"),
                      ({"max_latency_ratio": 0.5}, "max_latency_ratio"),
                      ({"warmup": "-1s"}, "duration"), ({"warmup_s": -1}, "warmup_s"),
                      ({"decision_threshold": float("nan")}, "decision_threshold"),
                      ({"shadow": 101}, "shadow")]:  # fmt: skip
        with pytest.raises(ConfigError, match="invalid canary plan") as info:
            parse_plan(**bad)
        assert word in str(info.value)


@pytest.mark.parametrize(
    ("version", "tags", "stable", "seen", "picked"),
    [
        ("3", {"gate.passed": "True"}, "2", [], True),
        ("3", {"gate.passed": "False"}, "2", [], False),  # the gate refused it
        ("3", {}, "2", [], False),  # never gated
        ("3", {"gate.passed": "True", "canary.result": "rolled_back"}, "2", [], False),
        ("3", {"gate.passed": "True"}, "2", ["3"], False),  # this watch saw it already
        ("2", {"gate.passed": "True"}, "2", [], False),  # already stable
        # older than stable (the champion before a promotion, still `challenger`): going
        # back is a person's decision, never the watch's
        ("1", {"gate.passed": "True"}, "2", [], False),
        ("10", {"gate.passed": "True"}, "9", [], True),  # numbers, not strings
        ("3", {"gate.passed": "True"}, None, [], True),
    ],
)
def test_the_registry_watch_picks_only_new_gated_versions(
    version: str, tags: dict, stable: str | None, seen: list[str], picked: bool
) -> None:
    from shipyard.canary.controller import watch_picks

    assert watch_picks(version, tags, stable=stable, seen=seen) is picked


# -- shadow ------------------------------------------------------------------------------------

SHADOW = PLAN.model_copy(update={"shadow": 50.0, "max_disagreement": 0.05})


def _mirrored(n: int, disagree: int = 0, errors: int = 0, shed: int = 0) -> ShadowReport:
    """``n`` mirrored records: ``errors`` failed, ``disagree`` of the rest on the other
    side of 0.5 from stable's score (0.4 against 0.6), the others 0.1 apart."""
    report = ShadowReport()
    for i in range(n):
        stable = {"score": 0.4, "model_version": "1"}
        if i < errors:
            shadow = {"error": "boom", "status": 500}
        else:
            shadow = {"score": 0.6 if i < errors + disagree else 0.3, "model_version": "2"}
        report.record(stable, shadow, 12.0, "score", 0.5)
    for _ in range(shed):
        report.record({"score": 0.4}, {"error": "overloaded", "status": 503}, 1.0, "score", 0.5)
    return report


def _shadow_report(world: World, report: ShadowReport, stable_n: int = 200,
                   shadow_weight: float | None = None) -> None:  # fmt: skip
    state = world.rollout.state
    world.rollout.report(RouterReport(
        weight=state.weight, variants={"stable": VariantReport(stable_n, 0, [10.0] * stable_n)},
        shadow_weight=state.shadow_weight if shadow_weight is None else shadow_weight,
        shadow=report).to_dict())  # fmt: skip


def _shadow_interval(world: World, report: ShadowReport) -> None:
    _shadow_report(world, report)
    world.time.advance(PLAN.interval_s)
    world.rollout.tick()


def test_the_comparison_of_two_answers() -> None:
    assert compare_answers({"p": 0.4}, {"p": 0.6}, "p", 0.5) == (pytest.approx(0.2), True)
    assert compare_answers({"p": 0.5}, {"p": 0.9}, "p", 0.5) == (pytest.approx(0.4), False)
    assert compare_answers({"p": 0.1}, {"error": "x", "status": 500}, "p", 0.5) is None
    assert compare_answers({"p": 0.1}, {"p": "high"}, "p", 0.5) is None
    assert compare_answers({"p": 0.1}, {"p": float("nan")}, "p", 0.5) is None
    assert compare_answers({"p": 0.1}, {"p": 0.2}, None, 0.5) is None
    report = _mirrored(100, disagree=7, errors=3, shed=4)
    assert (report.requests, report.errors, report.shed, report.compared,
            report.disagreements) == (100, 3, 4, 97, 7)  # fmt: skip
    assert report.abs_diff_max == pytest.approx(0.2)
    assert ShadowReport.from_dict(asdict(report)) == report


@pytest.mark.parametrize(
    ("report", "passed", "word"),
    [(_mirrored(100, disagree=3), True, "disagreement 3.00% of 100"),
     (_mirrored(100, disagree=6), False, "disagrees with stable on 6.00%"),
     (_mirrored(100, errors=2), False, "shadow error rate 2.00%"),
     (_mirrored(5), None, "fewer than min_requests"),
     (_mirrored(0, shed=50), None, "fewer than min_requests")],
)  # fmt: skip
def test_a_shadow_interval_is_judged_on_errors_and_disagreement(
    report: ShadowReport, passed: bool | None, word: str
) -> None:
    window = Window()
    window.add(RouterReport(weight=0.0, variants={"stable": VariantReport(200, 0, [10.0] * 200)},
                            shadow_weight=50.0, shadow=report))  # fmt: skip
    check = analyze_shadow(window, SHADOW, None)
    assert word in check.reason
    assert check.inconclusive if passed is None else check.passed is passed
    assert check.metrics["shadow"]["compared"] == report.compared


def test_a_shadow_phase_precedes_the_steps_and_clients_never_see_the_canary(world: World) -> None:
    world.start(SHADOW)
    world.rollout.tick()
    world.rollout.tick()  # ready: the shadow phase, not the first step
    assert world.serving == {"stable_version": "1", "canary_version": "2", "canary_weight": 0.0,
                             "shadow_weight": 50.0}  # fmt: skip
    assert world.actions()[-1] == "shadow" and world.rollout.state.step == -1
    _shadow_report(world, _mirrored(100, disagree=90), shadow_weight=0.0)  # not this phase's:
    _shadow_interval(world, _mirrored(100, disagree=2))  # left out of the verdict
    assert world.actions()[-2:] == ["check_passed", "advance"]
    assert world.serving == {"stable_version": "1", "canary_version": "2", "canary_weight": 10.0,
                             "shadow_weight": 0.0}  # fmt: skip
    shadow = world.saved["decisions"][-2]["metrics"]["shadow"]
    assert shadow["disagreements"] == 2 and shadow["compared"] == 100
    world.interval(canary_n=30)
    world.interval(canary_n=30, stable_n=0)
    assert world.rollout.status == Status.PROMOTED


def test_a_disagreeing_shadow_is_rolled_back_before_any_client_sees_it(world: World) -> None:
    world.start(SHADOW.model_copy(update={"failure_threshold": 2}))
    world.rollout.tick()
    world.rollout.tick()
    _shadow_interval(world, _mirrored(100, disagree=20))
    world.restart().resume_after_restart(1)  # a restart mid-shadow re-applies the phase
    assert world.serving["shadow_weight"] == 50.0 and world.serving["canary_weight"] == 0.0
    _shadow_interval(world, _mirrored(100, disagree=20))
    assert world.rollout.status == Status.ROLLED_BACK
    assert "disagrees with stable on 20.00%" in world.saved["decisions"][-1]["reason"]
    assert world.serving == {"stable_version": "1", "canary_version": None, "canary_weight": 0.0,
                             "shadow_weight": 0.0}  # fmt: skip
    assert world.registry.events == [("rolled_back", "2")]
