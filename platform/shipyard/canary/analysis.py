"""What the routers report, and the verdict on one analysis interval.

Every router replica pushes a :class:`RouterReport` to the rollout controller once a
second: per variant (``stable``, ``canary``), the requests, errors and a sample of
latencies since its last report, and in a shadow phase the :class:`ShadowReport`: the
mirrored records the canary answered, and how its answers differ from stable's on the
same records. It crosses a Ray actor call as a plain dict, built
(:meth:`RouterReport.to_dict`) and parsed (:meth:`RouterReport.from_dict`) here only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from shipyard.canary.plan import CanaryPlan

__all__ = [
    "Check",
    "RouterReport",
    "ShadowReport",
    "VariantReport",
    "Window",
    "analyze",
    "analyze_shadow",
    "compare_answers",
]

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
class ShadowReport:
    """Mirrored records since the router's last report: the shadow's answers (never a
    client's) against stable's on the same record. ``compared``: both answered and the
    compared output is a number in both; ``disagreements``: of those, how many fall on
    the other side of the decision threshold; the absolute differences of the scores."""

    requests: int = 0
    errors: int = 0
    shed: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    compared: int = 0
    disagreements: int = 0
    abs_diff_sum: float = 0.0
    abs_diff_max: float = 0.0

    def record(self, stable: dict[str, Any], shadow: dict[str, Any] | None, latency_ms: float,
               output: str | None, threshold: float) -> tuple[float, bool] | None:  # fmt: skip
        """One mirrored record: ``shadow`` is None when the call itself failed. Returns
        the comparison (:func:`compare_answers`), None when there was none."""
        status = 500 if shadow is None else int(shadow.get("status", 200))
        if status == 503:
            self.shed += 1  # the shadow was overloaded: not the version's error
            return None
        self.requests += 1
        if status >= 500:
            self.errors += 1
        if len(self.latencies_ms) < LATENCY_SAMPLES:
            self.latencies_ms.append(round(latency_ms, 3))
        diff = compare_answers(stable, shadow, output, threshold) if shadow else None
        if diff is not None:
            self.compared += 1
            self.disagreements += int(diff[1])
            self.abs_diff_sum += diff[0]
            self.abs_diff_max = max(self.abs_diff_max, diff[0])
        return diff

    def add(self, other: ShadowReport) -> None:
        self.requests += other.requests
        self.errors += other.errors
        self.shed += other.shed
        self.latencies_ms.extend(other.latencies_ms)
        self.compared += other.compared
        self.disagreements += other.disagreements
        self.abs_diff_sum += other.abs_diff_sum
        self.abs_diff_max = max(self.abs_diff_max, other.abs_diff_max)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> ShadowReport:
        data = data or {}
        return cls(int(data.get("requests", 0)), int(data.get("errors", 0)),
                   int(data.get("shed", 0)), [float(x) for x in data.get("latencies_ms") or []],
                   int(data.get("compared", 0)), int(data.get("disagreements", 0)),
                   float(data.get("abs_diff_sum", 0.0)), float(data.get("abs_diff_max", 0.0)))  # fmt: skip


def compare_answers(stable: dict[str, Any], shadow: dict[str, Any], output: str | None,
                    threshold: float) -> tuple[float, bool] | None:  # fmt: skip
    """``(|difference|, disagree)`` of ``output`` in two answers to one record (disagree:
    on opposite sides of ``threshold``, a score at it counting as positive), or None when
    either answer failed or holds no number there."""
    if output is None or "error" in stable or "error" in shadow:
        return None
    a, b = stable.get(output), shadow.get(output)
    if not isinstance(a, int | float) or not isinstance(b, int | float) or isinstance(a, bool):
        return None
    if a != a or b != b:  # NaN
        return None
    return abs(float(a) - float(b)), (a >= threshold) != (b >= threshold)


@dataclass
class RouterReport:
    """One router replica's report to the controller (the wire format is its dict)."""

    weight: float  # the canary weight the router applied while counting
    variants: dict[str, VariantReport] = field(default_factory=dict)
    replica: str = ""
    at: float = 0.0  # the router's wall time
    versions: dict[str, str | None] = field(default_factory=dict)
    shadow_weight: float = 0.0  # the share of stable's records mirrored to the canary
    shadow: ShadowReport | None = None

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
            shadow_weight=float(data.get("shadow_weight", 0.0) or 0.0),
            shadow=ShadowReport.from_dict(data["shadow"]) if data.get("shadow") else None,
        )


@dataclass
class Window:
    """The router's reports over one analysis interval (or several, while the step
    waits for enough canary traffic)."""

    reports: int = 0
    requests: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    latencies: dict[str, list[float]] = field(default_factory=dict)
    shadow: ShadowReport = field(default_factory=ShadowReport)

    def add(self, report: RouterReport, *, latencies: bool = True) -> None:
        """``latencies=False`` during a warm-up: the counts go in, the timings do not."""
        self.reports += 1
        if report.shadow is not None:
            mirrored = report.shadow
            if not latencies:
                mirrored = ShadowReport(**{**asdict(mirrored), "latencies_ms": []})
            self.shadow.add(mirrored)
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
    early = _counts("canary", f"canary had {canary['requests']} requests", canary, window,
                    plan, metrics)  # fmt: skip
    if early is not None:
        return early
    if canary["p95_ms"] is None:  # every canary request fell in the warm-up
        return Check(False, False, "no canary latency outside the warm-up yet", metrics,
                     inconclusive=True)  # fmt: skip
    slow, latency = _latency("canary", canary, stable, plan, baseline_p95_ms, metrics)
    if slow is not None:
        return slow
    return Check(True, False, f"canary {canary['requests']} requests, error rate "
                 f"{canary['error_rate']:.2%}, {latency}", metrics)  # fmt: skip


def _counts(who: str, had: str, candidate: dict[str, Any], window: Window, plan: CanaryPlan,
            metrics: dict[str, Any]) -> Check | None:  # fmt: skip
    """The verdict before latency: no reports (missing), too few requests (inconclusive),
    too many errors (failed); None when the interval goes on to be judged."""
    if window.reports == 0:
        return Check(False, True, "no metrics from the router during the interval", metrics)
    if candidate["requests"] < plan.min_requests:
        return Check(False, False, f"{had}, fewer than min_requests {plan.min_requests}",
                     metrics, inconclusive=True)  # fmt: skip
    if candidate["error_rate"] > plan.max_error_rate:
        return Check(False, False, f"{who} error rate {candidate['error_rate']:.2%} is above "
                     f"{plan.max_error_rate:.2%}", metrics)  # fmt: skip
    return None


def _latency(who: str, candidate: dict[str, Any], stable: dict[str, Any], plan: CanaryPlan,
             baseline_p95_ms: float | None, metrics: dict[str, Any]) -> tuple[Check | None, str]:  # fmt: skip
    """The candidate's p95 against stable's (or the last measured one): a failed Check
    when above ``max_latency_ratio``, and the text for a passing one."""
    enough_stable = stable["requests"] >= plan.min_requests and stable["p95_ms"] is not None
    reference = stable["p95_ms"] if enough_stable else baseline_p95_ms
    if not reference or candidate["p95_ms"] is None:
        return None, "no stable latency to compare"
    ratio = candidate["p95_ms"] / reference
    metrics["latency_ratio"] = round(ratio, 3)
    if ratio > plan.max_latency_ratio:
        return Check(False, False, f"{who} p95 latency {candidate['p95_ms']:.1f} ms is "
                     f"{ratio:.2f}x stable's {reference:.1f} ms, above "
                     f"{plan.max_latency_ratio:.2f}x", metrics), ""  # fmt: skip
    return None, f"p95 {ratio:.2f}x stable's"


def _shadow_summary(s: ShadowReport) -> dict[str, Any]:
    lat = s.latencies_ms
    return {
        "requests": s.requests,
        "errors": s.errors,
        "shed": s.shed,
        "error_rate": round(s.errors / s.requests, 4) if s.requests else None,
        "p50_ms": round(float(np.percentile(lat, 50)), 2) if lat else None,
        "p95_ms": round(float(np.percentile(lat, 95)), 2) if lat else None,
        "compared": s.compared,
        "disagreements": s.disagreements,
        "disagreement_rate": round(s.disagreements / s.compared, 4) if s.compared else None,
        "mean_abs_diff": round(s.abs_diff_sum / s.compared, 6) if s.compared else None,
        "max_abs_diff": round(s.abs_diff_max, 6) if s.compared else None,
    }


def analyze_shadow(window: Window, plan: CanaryPlan, baseline_p95_ms: float | None) -> Check:
    """One shadow interval's verdict: the canary answered mirrored records while clients
    got stable's answers. It passes when the shadow's error rate, its p95 latency
    against stable's and its disagreement with stable (answers on the other side of the
    decision threshold) are within the plan."""
    shadow, stable = _shadow_summary(window.shadow), window.summary("stable")
    metrics = {"shadow": shadow, "stable": stable, "reports": window.reports}
    early = _counts("shadow", f"the shadow answered {shadow['requests']} mirrored records",
                    shadow, window, plan, metrics)  # fmt: skip
    if early is not None:
        return early
    rate = shadow["disagreement_rate"]
    if rate is not None and rate > plan.max_disagreement:
        return Check(False, False, f"the shadow disagrees with stable on {rate:.2%} of "
                     f"{shadow['compared']} records (threshold {plan.decision_threshold:g}), "
                     f"above {plan.max_disagreement:.2%}", metrics)  # fmt: skip
    slow, latency = _latency("shadow", shadow, stable, plan, baseline_p95_ms, metrics)
    if slow is not None:
        return slow
    agreement = ("no comparable output" if rate is None else
                 f"disagreement {rate:.2%} of {shadow['compared']}, mean |diff| "
                 f"{shadow['mean_abs_diff']:.4f}, max {shadow['max_abs_diff']:.4f}")  # fmt: skip
    return Check(True, False, f"shadow {shadow['requests']} mirrored records, error rate "
                 f"{shadow['error_rate']:.2%}, {agreement}, {latency}", metrics)  # fmt: skip
