"""What the routers report, and the verdict on one analysis interval.

Every router replica pushes a :class:`RouterReport` to the rollout controller once a
second: per variant (``stable``, ``canary``), the requests, errors and a sample of
latencies since its last report. It crosses a Ray actor call as a plain dict, built
(:meth:`RouterReport.to_dict`) and parsed (:meth:`RouterReport.from_dict`) here only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from shipyard.canary.plan import CanaryPlan

__all__ = ["Check", "RouterReport", "VariantReport", "Window", "analyze"]

LATENCY_SAMPLES = 5000  # per variant per report; later requests are counted, not timed


@dataclass
class VariantReport:
    """One variant's counts since the router's last report."""

    requests: int = 0
    errors: int = 0
    latencies_ms: list[float] = field(default_factory=list)

    def record(self, ok: bool, latency_ms: float) -> None:
        self.requests += 1
        self.errors += 0 if ok else 1
        if len(self.latencies_ms) < LATENCY_SAMPLES:
            self.latencies_ms.append(round(latency_ms, 3))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VariantReport:
        return cls(int(data.get("requests", 0)), int(data.get("errors", 0)),
                   [float(x) for x in data.get("latencies_ms") or []])  # fmt: skip


@dataclass
class RouterReport:
    """One router replica's report to the controller (the wire format is its dict)."""

    weight: float  # the canary weight the router applied while counting
    variants: dict[str, VariantReport] = field(default_factory=dict)
    replica: str = ""
    at: float = 0.0  # the router's wall time
    versions: dict[str, str | None] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RouterReport:
        return cls(
            weight=float(data.get("weight", -1)),
            variants={
                name: VariantReport.from_dict(v) for name, v in (data.get("variants") or {}).items()
            },  # fmt: skip
            replica=str(data.get("replica", "")),
            at=float(data.get("at", 0.0)),
            versions=dict(data.get("versions") or {}),
        )


@dataclass
class Window:
    """The router's reports over one analysis interval (or several, while the step
    waits for enough canary traffic)."""

    reports: int = 0
    requests: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    latencies: dict[str, list[float]] = field(default_factory=dict)

    def add(self, report: RouterReport, *, latencies: bool = True) -> None:
        """``latencies=False`` during a warm-up: the counts go in, the timings do not."""
        self.reports += 1
        for variant, data in report.variants.items():
            self.requests[variant] = self.requests.get(variant, 0) + data.requests
            self.errors[variant] = self.errors.get(variant, 0) + data.errors
            samples = self.latencies.setdefault(variant, [])
            if latencies:
                samples.extend(data.latencies_ms)

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
    inconclusive: bool = False  # too little canary traffic to judge: wait for more


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
    if canary["p95_ms"] is None:  # every canary request fell in the warm-up
        return Check(False, False, "no canary latency outside the warm-up yet", metrics,
                     inconclusive=True)  # fmt: skip
    enough_stable = stable["requests"] >= plan.min_requests and stable["p95_ms"] is not None
    reference = stable["p95_ms"] if enough_stable else baseline_p95_ms
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
