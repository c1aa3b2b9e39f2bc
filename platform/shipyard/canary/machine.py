"""The rollout state machine of one application, driven by :meth:`Rollout.tick`.

A rollout moves the canary predictor through its plan's weights (5 → 25 → 50 → 100 %),
after an optional shadow phase (``plan.shadow`` > 0): that share of stable's records
is mirrored to the canary, clients keep getting stable's answers, and the interval is
judged on the shadow's errors, latency and disagreement with stable
(:func:`~shipyard.canary.analysis.analyze_shadow`) before any client sees the canary.
At each step the machine collects the routers' reports for one interval and advances
only when the canary had at least ``min_requests`` requests, its error rate was at
most ``max_error_rate`` and its p95 latency at most ``max_latency_ratio`` times
stable's. ``failure_threshold`` failed checks, an interval without any report, or a
canary not ready by ``ready_timeout_s`` roll back to 0 %.

An interval with too few canary requests is *inconclusive*, not failed (Argo Rollouts'
semantics): the step waits and the next interval adds to the same window; after
``max_inconclusive`` of them in a row the rollout pauses for a person, with the
reason. A healthy version is never rolled back for lack of traffic, and nothing is
promoted without enough of it. Latencies from the first ``warmup_s`` after a weight
change are left out of the comparison; the requests and errors still count.

Passing the last step promotes, in phases recorded in the state so that a restarted
controller finishes without repeating one: all traffic to the canary (``shift``);
stable loads the new version while it has no traffic (``stable``); traffic back to
stable and the canary emptied (``drain``); the registry's ``champion`` alias moved
(``registry``).

Time comes in through ``clock`` (monotonic: the intervals), ``now`` (wall time:
deadlines and timestamps) and ``sleep`` (the drains), so tests drive it by hand.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

from shipyard.canary.analysis import Check, RouterReport, Window, analyze, analyze_shadow
from shipyard.canary.plan import CanaryPlan
from shipyard.canary.state import (
    ACTIVE,
    Command,
    Decision,
    Event,
    HistoryEntry,
    RolloutState,
    Status,
    Watch,
    allowed,
    stamp,
    transition,
)
from shipyard.serve_backends import ServeBackend, get_app, put_app, wait_ready
from shipyard.serving import rollout_view, with_rollout

__all__ = ["DRAIN_S", "Registry", "Rollout"]

DRAIN_S = 2.0  # requests already routed to a variant are answered within this
_COMMANDS = {"pause": Event.PAUSE, "resume": Event.RESUME, "promote": Event.PROMOTE,
             "rollback": Event.ROLLBACK}  # fmt: skip


class Registry(Protocol):
    """What a rollout changes in the model registry (MLflow in the controller)."""

    def promoted(self, model: str, version: str) -> str: ...
    def rolled_back(self, model: str, version: str, reason: str) -> None: ...


class Rollout:
    """``state`` is the durable document; every decision saves it through the backend,
    so a restarted controller continues from it. ``registry`` is injected so that the
    machine itself stays free of MLflow."""

    def __init__(self, backend: ServeBackend, app: str, *, registry: Registry | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 now: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep,
                 poll_s: float = 1.0) -> None:  # fmt: skip
        self.backend = backend
        self.app = app
        self.registry = registry
        self.clock, self.now, self.sleep, self.poll_s = clock, now, sleep, poll_s
        self.window = Window()
        self.window_started = clock()
        # the warm-up runs from the first router report at the current weight (None: the
        # weight changed and no router has reported it yet): a router slow to reconfigure
        # on a loaded machine does not use the warm-up up
        self.weight_changed: float | None = float("-inf")
        self.state = RolloutState.load(backend.load_state(app), app)

    # -- bookkeeping ---------------------------------------------------------------------------
    @property
    def plan(self) -> CanaryPlan:
        assert self.state.plan is not None, "a rollout without a plan"
        return self.state.plan

    @property
    def status(self) -> Status:
        return self.state.status

    def save(self) -> None:
        self.backend.save_state(self.app, self.state.dump())

    def decide(self, action: str, reason: str, metrics: dict[str, Any] | None = None) -> None:
        decision = Decision(at=stamp(self.now()), action=action, weight=self.state.weight,
                            reason=reason)  # fmt: skip
        if metrics is not None:
            decision.metrics = metrics
        self.state.record(decision)
        self.save()

    def _to(self, event: Event) -> None:
        """Every status change goes through the table."""
        self.state.status = transition(self.state.status, event)

    def reset_window(self, *, keep: bool = False) -> None:
        """A new analysis interval; ``keep``: its requests add to the current window."""
        if not keep:
            self.window = Window()
        self.window_started = self.clock()

    def report(self, report: RouterReport | dict[str, Any]) -> None:
        """A router's report; the latencies count once the warm-up has passed."""
        if isinstance(report, dict):
            report = RouterReport.from_dict(report)
        # a report from before the current weight was applied belongs to the last step
        if (self.status == Status.PROGRESSING and report.weight == self.state.weight
                and report.shadow_weight == self.state.shadow_weight):  # fmt: skip
            if self.weight_changed is None:
                self.weight_changed = self.clock()
            warm = self.clock() - self.weight_changed >= self.plan.warmup_window_s
            self.window.add(report, latencies=warm)

    def _apply(self, **changes: Any) -> None:
        app = get_app(self.backend, self.app)
        if app is None:
            raise RuntimeError(f"application {self.app!r} is not deployed")
        put_app(self.backend, with_rollout(app, **changes), {})

    def _wait_ready(self, deployments: dict[str, int]) -> None:
        wait_ready(self.backend, self.app, deployments, timeout=self.plan.ready_timeout_s,
                   poll=self.poll_s)  # fmt: skip

    # -- restart -------------------------------------------------------------------------------
    def resume_after_restart(self, restarts: int) -> None:
        """Called when the controller (re)starts: re-apply what the state says, so a crash
        between a config change and its record leaves nothing half done."""
        status, state = self.status, self.state
        if status in (Status.PROGRESSING, Status.PAUSED):
            self._apply(canary_version=state.canary_version, canary_weight=state.weight,
                        shadow_weight=state.shadow_weight,
                        shadow_threshold=self.plan.decision_threshold)  # fmt: skip
            self.weight_changed = None
            at = (f"the shadow phase ({state.shadow_weight:g}% mirrored)" if state.shadow_weight
                  else f"step {state.step + 1}/{len(self.plan.steps)}, weight {state.weight:g}%")  # fmt: skip
            where = f"{at}, {status}; the analysis interval starts again"
        elif status == Status.PROMOTING:
            where = f"promotion, phase {state.promote_phase or 'shift'}"
        elif status in ACTIVE:
            where = str(status)
        else:
            where = ""
        if where and restarts:
            self.decide("resume", f"controller restarted (restart {restarts}); resuming at {where}")
        self.reset_window()

    # -- commands ------------------------------------------------------------------------------
    def handle(self, command: dict[str, Any] | Command | None) -> None:
        """Apply a command once (a command id seen before is ignored)."""
        if not command:
            return
        cmd = command if isinstance(command, Command) else Command.model_validate(command)
        if cmd.id == self.state.last_command_id:
            return
        self.state.last_command_id = cmd.id
        status = self.status
        if cmd.action == "start":
            self.start(cmd)
        elif cmd.action == "watch":
            self.state.watch = Watch(enabled=cmd.enabled, plan=cmd.plan or {}, seen=[])
            self.decide("watch", "registry watch " + ("on" if cmd.enabled else "off"))
        elif status not in ACTIVE:
            self.decide("refused", f"{cmd.action}: no rollout is in progress (status {status})")
        elif (event := _COMMANDS.get(cmd.action)) is None or not allowed(status, event):
            self.decide("refused", f"{cmd.action} does not apply while the rollout is {status}")
        elif (
            event == Event.ROLLBACK
            and status == Status.PROMOTING
            and (self.state.promote_phase not in (None, "shift"))
        ):  # stable already loads the new version: the promotion finishes
            self.decide("refused", f"rollback: stable already serves version "
                        f"{self.state.canary_version}; the promotion finishes")  # fmt: skip
        elif event == Event.PAUSE:
            self._to(event)
            self.decide("pause", "paused by the user; the weight stays")
        elif event == Event.RESUME:
            self._to(event)
            self.state.inconclusive_checks = 0
            self.reset_window()
            self.decide("resume", "resumed by the user; the analysis interval starts again")
        elif event == Event.PROMOTE:
            self._to(event)
            self.decide("promote", "promotion requested by the user; remaining steps skipped")
        else:
            self.rollback("rollback requested by the user")

    def start(self, cmd: Command) -> None:
        """A new rollout of ``cmd.version``, unless one is active, the version is stable's,
        or the application is not deployed (each refusal is a recorded decision)."""
        if self.status in ACTIVE:
            self.decide("refused", f"a rollout of version {self.state.canary_version} "
                        f"is already {self.status}")  # fmt: skip
            return
        app = get_app(self.backend, self.app)
        view = rollout_view(app) if app else None
        if view is None or cmd.version is None or view["stable_version"] == cmd.version:
            why = ("not deployed" if view is None else "no version given" if cmd.version is None
                   else "already the stable version")  # fmt: skip
            self.decide("refused", f"version {cmd.version}: {why}")
            return
        plan = CanaryPlan(**(cmd.plan or {}))
        old = self.state
        history = list(old.history)
        if old.canary_version:
            history.append(HistoryEntry(canary_version=old.canary_version, status=old.status,
                                        started_at=old.started_at, updated_at=old.updated_at))  # fmt: skip
        kept = {k: getattr(old, k) for k in ("watch", "last_command_id", "controller")
                if getattr(old, k) is not None}  # fmt: skip
        if "controller_restarts" in old.model_fields_set:
            kept["controller_restarts"] = old.controller_restarts
        self.state = RolloutState(
            **kept, app=self.app, model=cmd.model or self.app, history=history,
            stable_version=view["stable_version"], canary_version=cmd.version, plan=plan,
            status=transition(old.status, Event.START), step=-1, weight=0.0, failed_checks=0,
            inconclusive_checks=0, baseline_p95_ms=None, source=cmd.source,
            started_at=stamp(self.now()), decisions=[],
        )  # fmt: skip
        self.decide("start", f"canary of version {cmd.version} against stable "
                    f"{view['stable_version']}; steps {plan.steps}, interval {plan.interval_s:g}s")  # fmt: skip

    # -- the machine ---------------------------------------------------------------------------
    def tick(self) -> None:
        status = self.status
        if status == Status.PENDING:
            self._apply(canary_version=self.state.canary_version, canary_weight=0.0)
            self._to(Event.DEPLOY)
            self.state.ready_deadline = self.now() + self.plan.ready_timeout_s
            self.decide("deploy", f"canary predictor loading version {self.state.canary_version}")
        elif status == Status.STARTING:
            self._starting()
        elif status == Status.PROGRESSING:
            if self.clock() - self.window_started >= self.plan.interval_s:
                self._analyze()
        elif status == Status.PAUSED:
            self.reset_window()
        elif status == Status.PROMOTING:
            self.promote()
        elif status == Status.ROLLING_BACK:
            self.rollback(self.state.rollback_reason or "rolling back")

    def _starting(self) -> None:
        app_status = self.backend.app_status(self.app)
        deployed = app_status.config if app_status else None
        view = rollout_view(deployed) if deployed else None
        if (app_status and view and view["canary_version"] == self.state.canary_version
                and app_status.deployment_ready("canary")):  # fmt: skip
            self.decide("ready", "canary predictor is healthy")
            if self.plan.shadow > 0:
                self._shadow_phase()
            else:
                self._advance(0, Event.READY)
        elif self.now() > (self.state.ready_deadline or 0.0):
            dep = (app_status.deployments.get("canary") if app_status else None) or {}
            self.rollback(f"canary not ready after {self.plan.ready_timeout_s:g}s "
                          f"({dep.get('status', 'absent')}: {dep.get('message', '')})".strip())  # fmt: skip

    def _shadow_phase(self) -> None:
        plan = self.plan
        self._apply(canary_weight=0.0, shadow_weight=plan.shadow,
                    shadow_threshold=plan.decision_threshold)  # fmt: skip
        self._to(Event.READY)
        self.state.step, self.state.weight, self.state.inconclusive_checks = -1, 0.0, 0
        self.state.shadow_weight = plan.shadow
        self.weight_changed = None
        self.reset_window()
        self.decide("shadow", f"shadow phase: {plan.shadow:g}% of stable's records mirrored to "
                    f"version {self.state.canary_version}; clients get stable's answers")  # fmt: skip

    def _advance(self, step: int, event: Event = Event.ADVANCE) -> None:
        weight = self.plan.steps[step]
        if self.state.shadow_weight:  # the shadow phase ends where the live steps begin
            self._apply(canary_weight=weight, shadow_weight=0.0)
            self.state.shadow_weight = 0.0
        else:
            self._apply(canary_weight=weight)
        self._to(event)
        self.state.step, self.state.weight, self.state.inconclusive_checks = step, weight, 0
        self.weight_changed = None
        self.reset_window()
        self.decide("advance", f"step {step + 1}/{len(self.plan.steps)}: canary weight {weight:g}%")

    def _analyze(self) -> None:
        plan, state = self.plan, self.state
        judge = analyze_shadow if state.shadow_weight else analyze
        check = judge(self.window, plan, state.baseline_p95_ms)
        stable = check.metrics["stable"]
        if stable["requests"] >= plan.min_requests and stable["p95_ms"] is not None:
            state.baseline_p95_ms = stable["p95_ms"]
        if check.inconclusive and not check.missing:
            self._inconclusive(check)
            return
        state.inconclusive_checks = 0
        self.reset_window()
        if check.missing:
            self.rollback(f"missing metrics: {check.reason}", metrics=check.metrics)
        elif check.passed:
            self.decide("check_passed", check.reason, metrics=check.metrics)
            if state.step + 1 < len(plan.steps):
                self._advance(state.step + 1)
            else:
                self._to(Event.PROMOTE)
                self.decide("promote", "the last step passed its analysis")
                self.promote()
        else:
            state.failed_checks += 1
            self.decide("check_failed", f"{check.reason} (failed check "
                        f"{state.failed_checks}/{plan.failure_threshold})", metrics=check.metrics)  # fmt: skip
            if state.failed_checks >= plan.failure_threshold:
                self.rollback(f"{state.failed_checks} failed checks; last: {check.reason}")

    def _inconclusive(self, check: Check) -> None:
        """Too little canary traffic: the step waits and the next interval adds to this
        window; after ``max_inconclusive`` intervals in a row, a person decides."""
        plan = self.plan
        count = self.state.inconclusive_checks = self.state.inconclusive_checks + 1
        self.reset_window(keep=True)
        if count < plan.max_inconclusive:
            self.decide("inconclusive", f"{check.reason}: the step waits for more traffic "
                        f"(inconclusive {count}/{plan.max_inconclusive})", metrics=check.metrics)  # fmt: skip
            return
        self._to(Event.PAUSE)
        self.decide("pause", f"{check.reason} after {count} intervals: paused for a person; "
                    f"`shipyard canary resume|promote|rollback {self.app}` decides",
                    metrics=check.metrics)  # fmt: skip

    def promote(self) -> None:
        """Finish the promotion from the phase the state records."""
        state = self.state
        version = state.canary_version
        assert version is not None
        phase = state.promote_phase or "shift"
        if phase == "shift":
            if state.weight != 100.0 or state.shadow_weight:
                self._apply(canary_weight=100.0, shadow_weight=0.0)
                state.weight, state.shadow_weight = 100.0, 0.0
                self._wait_ready({"router": 1})
                self.sleep(DRAIN_S)  # requests already routed to stable are answered
            phase = state.promote_phase = "stable"
            self.decide("shift", "all traffic on the canary; stable loads the new version")
        if phase == "stable":
            self._apply(stable_version=version)
            self._wait_ready({"stable": 1})
            phase = state.promote_phase = "drain"
            self.decide("stable_loaded", f"stable serves version {version}")
        if phase == "drain":
            self._drain_canary()
            state.promote_phase = "registry"
            self.save()
        moved = self.registry.promoted(state.model or self.app, version) if self.registry else ""
        self._to(Event.PROMOTED)
        state.stable_version, state.finished_at = version, stamp(self.now())
        self.decide("promoted", f"stable now serves version {version}; {moved}".rstrip("; "))

    def _drain_canary(self) -> None:
        """Traffic off the canary first; only once every router has the new weight (and
        its requests in flight are answered) is the canary's model unloaded."""
        self._apply(canary_weight=0.0, shadow_weight=0.0)
        self.state.weight = self.state.shadow_weight = 0.0
        self._wait_ready({"router": 1})
        self.sleep(DRAIN_S)
        self._apply(canary_version=None)

    def rollback(self, reason: str, metrics: dict[str, Any] | None = None) -> None:
        self._to(Event.ROLLBACK)
        self.state.rollback_reason = reason
        self.save()
        self._drain_canary()
        if self.registry and self.state.canary_version:
            self.registry.rolled_back(self.state.model or self.app, self.state.canary_version,
                                      reason)  # fmt: skip
        self._to(Event.ROLLED_BACK)
        self.state.finished_at = stamp(self.now())
        self.decide("rolled_back", reason, metrics=metrics)
