"""A rollout's plan: its steps and the analysis thresholds, validated at the boundary."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from shipyard.errors import ConfigError

__all__ = ["CanaryPlan", "parse_duration", "parse_plan"]


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
    """A rollout's steps and analysis thresholds.

    ``warmup_s``: after each weight change, the replicas that just got traffic are
    warming up (a healthy canary's first interval once failed its latency check at
    2.85x), so latencies reported during the first ``warmup_s`` are left out of the
    p95 comparison (at most half of each interval: :attr:`warmup_window_s`); requests
    and errors during the warm-up still count.
    """

    model_config = ConfigDict(extra="forbid")

    steps: list[float] = Field(default=[5.0, 25.0, 50.0, 100.0], min_length=1)
    interval_s: float = Field(default=30.0, ge=1, le=86400)
    max_error_rate: float = Field(default=0.01, ge=0, le=1)
    max_latency_ratio: float = Field(default=1.5, ge=1)
    min_requests: int = Field(default=20, ge=1)
    failure_threshold: int = Field(default=3, ge=1)
    max_inconclusive: int = Field(default=10, ge=1)
    ready_timeout_s: float = Field(default=180.0, ge=5)
    warmup_s: float = Field(default=5.0, ge=0)
    # A shadow phase before the live steps: this share (%) of stable's records is
    # mirrored to the canary, whose answers are compared with stable's and never reach
    # a client; it passes like a step (min_requests mirrored records, error rate,
    # latency) and when at most max_disagreement of the compared records fall on the
    # other side of decision_threshold. 0: no shadow phase.
    shadow: float = Field(default=0.0, ge=0, le=100)
    max_disagreement: float = Field(default=0.05, ge=0, le=1)
    decision_threshold: float = Field(default=0.5, allow_inf_nan=False)

    @field_validator("steps")
    @classmethod
    def _steps(cls, steps: list[float]) -> list[float]:
        if any(not 0 < s <= 100 for s in steps):
            raise ValueError(f"every step must be a weight in (0, 100], got {steps}")
        if any(b <= a for a, b in zip(steps, steps[1:], strict=False)):
            raise ValueError(f"steps must increase, got {steps}")
        return steps

    @property
    def warmup_window_s(self) -> float:
        """The warm-up actually applied: at most half an interval, so that every
        interval still judges latencies (a 4 s interval keeps its last 2 s)."""
        return min(self.warmup_s, self.interval_s / 2)


def parse_plan(**values: Any) -> CanaryPlan:
    """A plan from CLI-style values (``steps="5,25,50,100"``, ``interval="30s"``,
    ``warmup="5s"``)."""
    data = {k: v for k, v in values.items() if v is not None}
    try:
        if isinstance(data.get("steps"), str):
            data["steps"] = [float(s) for s in data["steps"].split(",") if s.strip()]
        for option in ("interval", "ready_timeout", "warmup"):
            if option in data:
                data[f"{option}_s"] = parse_duration(data.pop(option))
        return CanaryPlan(**data)
    except ValueError as exc:  # ValidationError is a ValueError
        if isinstance(exc, ValidationError):
            msg = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'plan'}: "
                f"{e['msg'].removeprefix('Value error, ')}"
                for e in exc.errors()
            )
        else:
            msg = str(exc)
        raise ConfigError(f"invalid canary plan: {msg}") from None
