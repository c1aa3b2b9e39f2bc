"""The rollout's durable state, its closed set of statuses, and its one transition table.

The state is a JSON document in the backend (a file locally, an annotation on the
RayService on Kubernetes); :meth:`RolloutState.load` reads one and
:meth:`RolloutState.dump` writes it back with the keys it had (fields never set are
left out, as the untyped dict of earlier versions did), so a state file written
before this module existed still loads.

Every status change goes through :func:`transition`, which looks the pair (status,
event) up in :data:`TRANSITIONS` and raises :class:`IllegalTransition` otherwise.
"""

from __future__ import annotations

import sys
import uuid
from datetime import datetime, timezone
from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_serializer

from shipyard.canary.plan import CanaryPlan
from shipyard.errors import ShipyardError

if sys.version_info >= (3, 11):
    from enum import StrEnum
else:  # pragma: no cover - Python 3.10

    class StrEnum(str, Enum):
        def __str__(self) -> str:
            return str(self.value)


__all__ = [
    "ACTIVE",
    "TERMINAL",
    "TRANSITIONS",
    "Command",
    "ControllerInfo",
    "Decision",
    "Event",
    "HistoryEntry",
    "IllegalTransition",
    "RolloutState",
    "Status",
    "Watch",
    "new_command",
    "transition",
]


class Status(StrEnum):
    IDLE = "idle"  # no rollout yet
    PENDING = "pending"  # accepted; the canary predictor is not loading yet
    STARTING = "starting"  # the canary predictor loads the new version
    PROGRESSING = "progressing"  # at a step's weight, analysing an interval
    PAUSED = "paused"  # held at its weight, by a person or for lack of traffic
    PROMOTING = "promoting"  # stable moves to the new version (resumable phases)
    ROLLING_BACK = "rolling_back"  # traffic back to stable, the canary emptied
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"


ACTIVE: frozenset[Status] = frozenset(
    {
        Status.PENDING,
        Status.STARTING,
        Status.PROGRESSING,
        Status.PAUSED,
        Status.PROMOTING,
        Status.ROLLING_BACK,
    }  # fmt: skip
)
TERMINAL: frozenset[Status] = frozenset({Status.PROMOTED, Status.ROLLED_BACK})


class Event(StrEnum):
    START = "start"  # a start command (or the registry watch) was accepted
    DEPLOY = "deploy"  # the canary predictor was given the new version
    READY = "ready"  # the canary predictor is healthy: the first step begins
    ADVANCE = "advance"  # a step passed: the next weight
    PAUSE = "pause"  # by a person, or after max_inconclusive thin intervals
    RESUME = "resume"
    PROMOTE = "promote"  # the last step passed, or a person skipped the rest
    PROMOTED = "promoted"  # every promotion phase done
    ROLLBACK = "rollback"  # failed checks, missing metrics, not ready, or a person
    ROLLED_BACK = "rolled_back"  # traffic on stable, the canary emptied


_ROLLBACK_FROM = (Status.PENDING, Status.STARTING, Status.PROGRESSING, Status.PAUSED,
                  Status.PROMOTING, Status.ROLLING_BACK)  # fmt: skip

TRANSITIONS: dict[tuple[Status, Event], Status] = {
    (Status.IDLE, Event.START): Status.PENDING,
    (Status.PROMOTED, Event.START): Status.PENDING,
    (Status.ROLLED_BACK, Event.START): Status.PENDING,
    (Status.PENDING, Event.DEPLOY): Status.STARTING,
    (Status.STARTING, Event.READY): Status.PROGRESSING,
    (Status.PROGRESSING, Event.ADVANCE): Status.PROGRESSING,
    (Status.PROGRESSING, Event.PAUSE): Status.PAUSED,
    (Status.PAUSED, Event.RESUME): Status.PROGRESSING,
    (Status.PROGRESSING, Event.PROMOTE): Status.PROMOTING,
    (Status.PAUSED, Event.PROMOTE): Status.PROMOTING,
    (Status.PROMOTING, Event.PROMOTED): Status.PROMOTED,
    **{(status, Event.ROLLBACK): Status.ROLLING_BACK for status in _ROLLBACK_FROM},
    (Status.ROLLING_BACK, Event.ROLLED_BACK): Status.ROLLED_BACK,
}
"""Every legal move: (from, event) → to. Anything else is refused."""


class IllegalTransition(ShipyardError):
    """An event that does not apply to the rollout's status."""

    def __init__(self, status: Status, event: Event) -> None:
        super().__init__(f"{event} does not apply while the rollout is {status}")
        self.status, self.event = status, event


def transition(status: Status | str, event: Event | str) -> Status:
    """The status after ``event``; raises :class:`IllegalTransition` if it is not legal."""
    status, event = Status(status), Event(event)
    try:
        return TRANSITIONS[(status, event)]
    except KeyError:
        raise IllegalTransition(status, event) from None


def allowed(status: Status | str, event: Event | str) -> bool:
    return (Status(status), Event(event)) in TRANSITIONS


def stamp(at: float | None = None) -> str:
    """A wall-clock time as the state writes it (ISO 8601, UTC, seconds)."""
    when = datetime.now(timezone.utc) if at is None else datetime.fromtimestamp(at, timezone.utc)
    return when.isoformat(timespec="seconds")


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Decision(_Doc):
    """One decision of the controller, with its reason: what `canary status` prints."""

    at: str
    action: str
    weight: float = 0.0
    reason: str
    metrics: dict[str, Any] | None = None


class Watch(_Doc):
    """Registry-driven mode: a new gated ``challenger`` starts a rollout with ``plan``."""

    enabled: bool = False
    plan: dict[str, Any] = Field(default_factory=dict)
    seen: list[str] = Field(default_factory=list)
    poll_s: float = 5.0


class ControllerInfo(_Doc):
    pid: int
    restarts: int = 0
    node: str | None = None


class HistoryEntry(_Doc):
    """An earlier rollout of the application, kept when the next one starts."""

    canary_version: str | None = None
    status: Status | None = None
    started_at: str | None = None
    updated_at: str | None = None


class RolloutState(_Doc):
    """The durable document of one application's rollouts."""

    app: str
    status: Status = Status.IDLE
    model: str | None = None
    stable_version: str | None = None
    canary_version: str | None = None
    plan: CanaryPlan | None = None
    step: int = -1
    weight: float = 0.0
    shadow_weight: float = 0.0  # > 0: the shadow phase, this share of records mirrored
    failed_checks: int = 0
    inconclusive_checks: int = 0
    baseline_p95_ms: float | None = None
    source: str | None = None  # cli | watch
    started_at: str | None = None
    updated_at: str | None = None
    finished_at: str | None = None
    decisions: list[Decision] = Field(default_factory=list)
    history: list[HistoryEntry] = Field(default_factory=list)
    watch: Watch | None = None
    last_command_id: str | None = None
    controller: ControllerInfo | None = None
    controller_restarts: int = 0
    promote_phase: str | None = None  # shift | stable | drain | registry
    ready_deadline: float | None = None  # wall time (epoch seconds)
    rollback_reason: str | None = None

    @field_serializer("plan")
    def _whole_plan(self, plan: CanaryPlan | None) -> dict[str, Any] | None:
        return plan.model_dump() if plan is not None else None  # every key, set or default

    @classmethod
    def load(cls, doc: dict[str, Any] | None, app: str) -> RolloutState:
        """The state as the backend stores it; none yet: an idle application."""
        return cls.model_validate(doc) if doc else cls(app=app, status=Status.IDLE)

    def dump(self) -> dict[str, Any]:
        """The JSON document, with only the keys that were ever set."""
        return self.model_dump(mode="json", exclude_unset=True)

    def record(self, decision: Decision) -> None:
        self.decisions = [*self.decisions, decision]  # assigned, so that it is dumped
        self.updated_at = decision.at


class Command(BaseModel):
    """What the CLI (or the registry watch) asks of the controller, through the backend."""

    model_config = ConfigDict(extra="ignore")

    id: str
    action: str  # start | pause | resume | promote | rollback | watch
    at: str | None = None
    version: str | None = None
    model: str | None = None
    plan: dict[str, Any] | None = None
    source: str = "cli"
    enabled: bool = True


def new_command(action: str, **data: Any) -> dict[str, Any]:
    """A command as the backend stores it (a new id: the controller applies each once)."""
    return {"id": uuid.uuid4().hex[:12], "action": action, "at": stamp(), **data}
