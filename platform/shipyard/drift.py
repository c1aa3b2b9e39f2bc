"""Reference profiles and drift: what a model's training data looked like, and whether
what it serves now still looks like that.

A :class:`Profile` is saved with each registered version (``shipyard.contract.
register_model(reference=...)``): per column its null rate, and for a number its range,
decile bins and 200 quantiles (the empirical distribution, compressed), for a
category its frequencies. :func:`compare` holds a window of the inference log against
it, per column:

- drift: the population stability index over the reference's bins (PSI, Evidently's
  threshold 0.1) and a two-sample test (Kolmogorov-Smirnov against the reference's
  quantiles for numbers, chi-square against its frequencies for categories; p < 0.05);
  a column drifts when both say so, so that neither a small window's PSI noise nor a
  large window's hypersensitive test alarms alone. The dataset drifts when at least
  half of the features drift (Evidently's default share); the outputs' drift is
  prediction drift, reported apart.
- data quality: the null rate's rise over the reference's, the share of numbers
  outside the reference's range, the share of categories it never saw.

A window with fewer than ``min_rows`` rows is inconclusive: no verdict either way.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from shipyard.settings import DriftThresholds

__all__ = [
    "ColumnDrift",
    "ColumnProfile",
    "DriftReport",
    "DriftThresholds",
    "Profile",
    "compare",
    "profile_frame",
]

_QUANTILES = 200
_TOP_CATEGORIES = 100
_OTHER = "__other__"
_EPS = 1e-4  # a bin's share floor for PSI: an empty bin is rare, not impossible


@dataclass
class ColumnProfile:
    name: str
    kind: Literal["numeric", "categorical"]
    role: Literal["feature", "output"]
    count: int
    null_rate: float
    # numbers
    min: float | None = None
    max: float | None = None
    edges: list[float] = field(default_factory=list)  # inner bin edges (deciles, distinct)
    shares: list[float] = field(default_factory=list)  # per bin, len(edges) + 1
    quantiles: list[float] = field(default_factory=list)
    # categories
    frequencies: dict[str, float] = field(default_factory=dict)


@dataclass
class Profile:
    rows: int
    columns: dict[str, ColumnProfile]

    def to_json(self) -> str:
        return json.dumps({"rows": self.rows,
                           "columns": [asdict(c) for c in self.columns.values()]})  # fmt: skip

    @classmethod
    def from_json(cls, text: str) -> Profile:
        doc = json.loads(text)
        columns = [ColumnProfile(**c) for c in doc["columns"]]
        return cls(doc["rows"], {c.name: c for c in columns})


def _numeric(series: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)


def _bins(values: np.ndarray, edges: list[float]) -> np.ndarray:
    """Counts per bin: (-inf, e0), [e0, e1), ..., [e_last, inf)."""
    index = np.searchsorted(np.asarray(edges, dtype=float), values, side="right")
    return np.bincount(index, minlength=len(edges) + 1)


def _profile_column(name: str, series: pd.Series, role: str) -> ColumnProfile | None:
    count = len(series)
    nulls = series.isna()
    null_rate = float(nulls.mean()) if count else 0.0
    values = series[~nulls]
    if pd.api.types.is_datetime64_any_dtype(series):
        return None  # a time is not a distribution to hold the present against
    if _numeric(series):
        x = values.to_numpy(dtype=float)
        x = x[np.isfinite(x)]
        if not len(x):
            return ColumnProfile(name, "numeric", role, count, null_rate)  # type: ignore[arg-type]
        edges = sorted(set(np.quantile(x, np.linspace(0.1, 0.9, 9)).tolist()))
        shares = (_bins(x, edges) / len(x)).tolist()
        quantiles = np.quantile(x, (np.arange(_QUANTILES) + 0.5) / _QUANTILES).tolist()
        return ColumnProfile(name, "numeric", role, count, null_rate, float(x.min()),  # type: ignore[arg-type]
                             float(x.max()), edges, shares, quantiles)  # fmt: skip
    freq = values.astype(str).value_counts(normalize=True)
    top = freq.head(_TOP_CATEGORIES)
    frequencies = {str(k): float(v) for k, v in top.items()}
    if len(freq) > len(top):
        frequencies[_OTHER] = float(freq.iloc[len(top) :].sum())
    return ColumnProfile(name, "categorical", role, count, null_rate, frequencies=frequencies)  # type: ignore[arg-type]


def profile_frame(frame: pd.DataFrame, features: list[str], outputs: list[str] = ()) -> Profile:  # type: ignore[assignment]
    """The reference profile of ``features`` and ``outputs`` (columns of ``frame``
    that are absent or of a kind that has no distribution, such as times, are left
    out)."""
    columns: dict[str, ColumnProfile] = {}
    for role, names in (("feature", features), ("output", outputs)):
        for name in names:
            if name in frame.columns:
                profile = _profile_column(name, frame[name], role)
                if profile is not None:
                    columns[name] = profile
    return Profile(len(frame), columns)


@dataclass
class ColumnDrift:
    name: str
    kind: str
    role: str
    rows: int
    psi: float | None
    test: str
    p_value: float | None
    drifted: bool
    null_rate: float
    null_rate_reference: float
    out_of_range_share: float = 0.0
    unseen_share: float = 0.0
    unseen_examples: list[str] = field(default_factory=list)
    quality_issues: list[str] = field(default_factory=list)


@dataclass
class DriftReport:
    rows: int
    conclusive: bool
    columns: list[ColumnDrift]
    drifted_features: list[str]
    drift_share: float
    dataset_drift: bool
    prediction_drift: bool
    quality_issues: list[str]
    thresholds: dict[str, Any]

    @property
    def alerts(self) -> list[str]:
        """One line per reason to page someone."""
        out = []
        if self.dataset_drift:
            out.append(f"dataset drift: {len(self.drifted_features)} of "
                       f"{sum(c.role == 'feature' for c in self.columns)} features drifted "
                       f"({', '.join(self.drifted_features)})")  # fmt: skip
        if self.prediction_drift:
            names = [c.name for c in self.columns if c.role == "output" and c.drifted]
            out.append(f"prediction drift: {', '.join(names)}")
        out += self.quality_issues
        return out

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["alerts"] = self.alerts
        return doc


def _psi(reference: np.ndarray, current: np.ndarray) -> float:
    ref = np.maximum(np.asarray(reference, dtype=float), _EPS)
    cur = np.maximum(np.asarray(current, dtype=float), _EPS)
    ref, cur = ref / ref.sum(), cur / cur.sum()
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def _compare_column(ref: ColumnProfile, series: pd.Series, t: DriftThresholds) -> ColumnDrift:
    from scipy import stats

    n = len(series)
    nulls = series.isna()
    null_rate = float(nulls.mean()) if n else 0.0
    values = series[~nulls]
    out = ColumnDrift(ref.name, ref.kind, ref.role, n, None, "", None, False, null_rate,
                      ref.null_rate)  # fmt: skip
    if ref.kind == "numeric":
        out.test = "ks"
        x = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
        x = x[np.isfinite(x)]
        if len(x) and ref.quantiles:
            out.psi = _psi(np.asarray(ref.shares), _bins(x, ref.edges) / len(x))
            out.p_value = float(stats.ks_2samp(x, np.asarray(ref.quantiles)).pvalue)
            span = (ref.max or 0.0) - (ref.min or 0.0)
            slack = 1e-9 * max(1.0, abs(span))
            outside = (x < (ref.min or 0.0) - slack) | (x > (ref.max or 0.0) + slack)
            out.out_of_range_share = float(outside.mean())
    else:
        out.test = "chi2"
        seen = values.astype(str)
        known = [k for k in ref.frequencies if k != _OTHER]
        counts = seen.value_counts()
        unseen = counts[~counts.index.isin(ref.frequencies)]
        if _OTHER not in ref.frequencies and len(seen):
            out.unseen_share = float(unseen.sum() / len(seen))
            out.unseen_examples = [str(k) for k in unseen.index[:5]]
        if len(seen):
            observed = np.array([counts.get(k, 0) for k in known] + [unseen.sum()], dtype=float)
            expected = np.array([ref.frequencies[k] for k in known]
                                + [ref.frequencies.get(_OTHER, 0.0)])  # fmt: skip
            out.psi = _psi(expected, observed / observed.sum())
            expected = np.maximum(expected, _EPS)
            expected = expected / expected.sum() * observed.sum()
            if len(observed) > 1:
                out.p_value = float(stats.chisquare(observed, expected).pvalue)
    out.drifted = (out.psi is not None and out.p_value is not None
                   and out.psi >= t.psi and out.p_value < t.p_value)  # fmt: skip
    if null_rate - ref.null_rate > t.null_rate_increase:
        out.quality_issues.append(f"{ref.name}: null rate {null_rate:.1%} (reference "
                                  f"{ref.null_rate:.1%})")  # fmt: skip
    if out.out_of_range_share > t.out_of_range_share:
        out.quality_issues.append(f"{ref.name}: {out.out_of_range_share:.1%} outside the "
                                  f"reference range [{ref.min:g}, {ref.max:g}]")  # fmt: skip
    if out.unseen_share > t.unseen_share:
        out.quality_issues.append(f"{ref.name}: {out.unseen_share:.1%} unseen categories "
                                  f"(e.g. {', '.join(out.unseen_examples[:3])})")  # fmt: skip
    return out


def compare(reference: Profile, current: pd.DataFrame,
            thresholds: DriftThresholds | None = None) -> DriftReport:  # fmt: skip
    """The current window against the reference: per column, then for the data set."""
    t = thresholds or DriftThresholds()
    rows = len(current)
    conclusive = rows >= t.min_rows
    columns = [
        _compare_column(ref, current[name] if name in current else pd.Series([None] * rows), t)
        for name, ref in reference.columns.items()
    ]
    if not conclusive:
        for c in columns:
            c.drifted, c.quality_issues = False, []
    features = [c for c in columns if c.role == "feature"]
    drifted = [c.name for c in features if c.drifted]
    share = len(drifted) / len(features) if features else 0.0
    return DriftReport(
        rows=rows,
        conclusive=conclusive,
        columns=columns,
        drifted_features=drifted,
        drift_share=share,
        dataset_drift=conclusive and bool(features) and share >= t.drift_share,
        prediction_drift=conclusive and any(c.drifted for c in columns if c.role == "output"),
        quality_issues=[issue for c in columns for issue in c.quality_issues],
        thresholds=t.model_dump(),
    )
