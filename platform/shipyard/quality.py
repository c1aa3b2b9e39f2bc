"""Live model quality: what the served answers were worth once their labels arrived.

Labels arrive late (a chargeback weeks after the payment). A version registered with a
:class:`shipyard.contract.LabelSpec` names the table they land in, the request field
that joins an answer to its label, and the output scored. :func:`assess` joins the
inference log's answered rows (status 200) with the labels known by a clock
(``as_of``: a label counts once ``available_at <= as_of``), and per model version and
variant computes:

- the label coverage (labelled answers / answers);
- binary tasks: PR AUC (average precision, as the training gate computes it), ROC AUC,
  the Brier score, the expected calibration error (ten equal-width bins) and the mean
  score against the observed positive rate; regression: R², MAE, RMSE;
- the same metrics as of the end of each day up to ``as_of`` (``daily``): how the
  picture filled in as labels arrived;
- the version's gate (its ``gate.metric`` and ``gate.floor`` tags, set by the training
  pipeline's promotion gate) held against the live value on *mature* answers (their
  event at least ``maturity_days`` before the clock: labels that come late, such as
  frauds, have arrived; a younger answer's figures are provisional): a version whose
  mature labelled traffic (at least ``monitor.quality_min_labels`` answers, both classes
  present) is not above its floor raises an alert.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from shipyard.contract import LabelSpec
from shipyard.errors import ConfigError, DataError

__all__ = [
    "GATE_METRICS",
    "Quality",
    "assess",
    "binary_metrics",
    "join_labels",
    "read_labels",
    "regression_metrics",
    "resolve_source",
]

#: The gate's metric names (``gate.metric`` tags) and the live metric each one is.
GATE_METRICS = {"PR AUC": "pr_auc", "ROC AUC": "roc_auc", "R2": "r2"}
_DAILY_POINTS = 90
_BINS = 10


@dataclass
class Quality:
    """One version's and variant's answers held against the labels known by ``as_of``."""

    version: str
    variant: str
    as_of: str
    answered: int
    labelled: int
    metrics: dict[str, float | None] = field(default_factory=dict)
    calibration: list[dict[str, float]] = field(default_factory=list)
    daily: list[dict[str, Any]] = field(default_factory=list)
    gate_metric: str | None = None
    gate_floor: float | None = None
    conclusive: bool = False
    note: str = ""
    mature: int = 0  # labelled answers old enough for a verdict (LabelSpec.maturity_days)
    verdict: dict[str, float | None] = field(default_factory=dict)  # metrics on those

    @property
    def coverage(self) -> float:
        return self.labelled / self.answered if self.answered else 0.0

    @property
    def gate_value(self) -> float | None:
        key = GATE_METRICS.get(self.gate_metric or "")
        return self.verdict.get(key) if key else None

    @property
    def below_floor(self) -> bool:
        value = self.gate_value
        return bool(self.conclusive and value is not None and self.gate_floor is not None
                    and value <= self.gate_floor)  # fmt: skip

    @property
    def alerts(self) -> list[str]:
        if not self.below_floor:
            return []
        return [f"{self.variant} traffic's live {self.gate_metric} {self.gate_value:.4f} is not "
                f"above its gate's floor {self.gate_floor:.4f} ({self.mature:,} mature labelled "
                f"answers, labels known by {self.as_of})"]  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "variant": self.variant, "as_of": self.as_of,
                "answered": self.answered, "labelled": self.labelled,
                "coverage": self.coverage, "metrics": self.metrics,
                "calibration": self.calibration, "daily": self.daily,
                "gate_metric": self.gate_metric, "gate_floor": self.gate_floor,
                "mature": self.mature, "verdict": self.verdict,
                "gate_value": self.gate_value, "conclusive": self.conclusive,
                "note": self.note, "alerts": self.alerts}  # fmt: skip


def resolve_source(spec: LabelSpec, model: str, data_root: Path,
                   overrides: dict[str, str] | None = None) -> str:  # fmt: skip
    """Where ``model``'s labels are: ``overrides[model]`` (``monitor.label_sources``), else
    the spec's source; a relative path is under ``data_root``."""
    source = (overrides or {}).get(model) or spec.source
    if "://" in source or Path(source).is_absolute():
        return source
    return str(data_root / source)


def read_labels(uri: str, spec: LabelSpec, keys: Iterable[Any]) -> pd.DataFrame:
    """The labels of ``keys`` from the parquet file or folder at ``uri``: columns
    ``key``, ``label``, ``available_at`` (UTC; the epoch when the spec has none).
    Rows without a label are not labels. A key labelled twice keeps each row; the join
    takes the latest one known by its clock."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    wanted = [spec.key, spec.label] + ([spec.available_at] if spec.available_at else [])
    try:
        data = ds.dataset(uri, format="parquet")
    except (FileNotFoundError, pa.ArrowInvalid, OSError) as exc:
        raise ConfigError(f"cannot read labels at {uri}: {exc}",
                          hint="set monitor.label_sources.<model> to the labels' parquet "
                          "file or folder, or register the version with its labels' source") from None  # fmt: skip
    missing = [c for c in wanted if c not in data.schema.names]
    if missing:
        raise ConfigError(f"the labels at {uri} lack the column(s) {', '.join(missing)}",
                          hint=f"its columns are {', '.join(data.schema.names)}")  # fmt: skip
    keys = pa.array(sorted({str(k) for k in keys if k is not None}), type=pa.string())
    key_field = pc.field(spec.key)
    if not pa.types.is_string(data.schema.field(spec.key).type):
        key_field = key_field.cast(pa.string())
    table = data.to_table(
        columns=wanted, filter=key_field.isin(keys) & pc.field(spec.label).is_valid()
    )
    frame = table.to_pandas()
    out = pd.DataFrame({"key": frame[spec.key].astype(str), "label": frame[spec.label]})
    if spec.available_at:
        out["available_at"] = pd.to_datetime(frame[spec.available_at], utc=True)
    else:
        out["available_at"] = pd.Timestamp(0, tz="UTC")
    return out


def join_labels(rows: pd.DataFrame, labels: pd.DataFrame, spec: LabelSpec,
                as_of: pd.Timestamp) -> pd.DataFrame:  # fmt: skip
    """``rows`` (answered log rows) with ``label`` and ``available_at``: each row's latest
    label known by ``as_of``, NaN where none is."""
    known = labels[labels["available_at"] <= as_of].sort_values("available_at", kind="stable")
    known = known.drop_duplicates("key", keep="last").set_index("key")
    keys = (
        rows[spec.key].astype(str)
        if spec.key in rows.columns
        else pd.Series(index=rows.index, dtype=str)
    )
    out = rows.copy()
    out["label"] = keys.map(known["label"])  # aligned on rows' index: no object arrays
    out["available_at"] = keys.map(known["available_at"])
    return out


def _ap(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(y, p))


def binary_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float | None]:
    """PR AUC and ROC AUC (None with one class only), Brier, ECE, mean score, positive rate."""
    from sklearn.metrics import brier_score_loss, roc_auc_score

    y = np.asarray(y, dtype=float)
    p = np.clip(np.asarray(p, dtype=float), 0.0, 1.0)
    both = len(np.unique(y)) == 2
    return {
        "pr_auc": _ap(y, p) if both else None,
        "roc_auc": float(roc_auc_score(y, p)) if both else None,
        "brier": float(brier_score_loss(y, p)) if len(y) else None,
        "ece": _ece(y, p) if len(y) else None,
        "mean_score": float(p.mean()) if len(y) else None,
        "positive_rate": float(y.mean()) if len(y) else None,
    }


def regression_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float | None]:
    y = np.asarray(y, dtype=float)
    p = np.asarray(p, dtype=float)
    if not len(y):
        return {"r2": None, "mae": None, "rmse": None, "mean_label": None, "mean_prediction": None}
    sst = float(((y - y.mean()) ** 2).sum())
    return {
        "r2": 1.0 - float(((y - p) ** 2).sum()) / sst if sst > 0 else None,
        "mae": float(np.abs(y - p).mean()),
        "rmse": float(np.sqrt(((y - p) ** 2).mean())),
        "mean_label": float(y.mean()),
        "mean_prediction": float(p.mean()),
    }


def _bins(p: np.ndarray) -> np.ndarray:
    return np.minimum((p * _BINS).astype(int), _BINS - 1)


def _ece(y: np.ndarray, p: np.ndarray) -> float:
    """Expected calibration error: the answers' weighted |mean score - positive rate|
    over ten equal-width score bins."""
    b = _bins(p)
    total = 0.0
    for i in np.unique(b):
        m = b == i
        total += m.sum() * abs(p[m].mean() - y[m].mean())
    return float(total / len(y))


def _calibration(y: np.ndarray, p: np.ndarray) -> list[dict[str, float]]:
    b = _bins(p)
    return [{"bin": i / _BINS, "answers": int((b == i).sum()), "mean_score": float(p[b == i].mean()),
             "positive_rate": float(y[b == i].mean())} for i in np.unique(b)]  # fmt: skip


def _metrics(spec: LabelSpec, y: np.ndarray, p: np.ndarray) -> dict[str, float | None]:
    return binary_metrics(y, p) if spec.task == "binary" else regression_metrics(y, p)


def _labels_as(spec: LabelSpec, values: pd.Series) -> np.ndarray:
    if spec.task == "binary":
        v = values.astype(float).to_numpy()
        if not np.isin(v, (0.0, 1.0)).all():
            raise DataError(f"binary labels in {spec.label!r} must be 0/1 or true/false; "
                            f"found {sorted(set(v[~np.isin(v, (0.0, 1.0))]))[:5]}")  # fmt: skip
        return v
    return values.astype(float).to_numpy()


def _known(part: pd.DataFrame, labels: pd.DataFrame, spec: LabelSpec,
           at: pd.Timestamp) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """The labels and scores of ``part``'s answers labelled by ``at``, and which of them
    are mature (their event ``maturity_days`` or more before ``at``)."""
    joined = join_labels(part, labels, spec, at)
    known = joined[joined["label"].notna() & joined[spec.score].notna()]
    if spec.event_time and spec.event_time in known.columns:
        event = pd.to_datetime(known[spec.event_time], utc=True, errors="coerce", format="ISO8601")
    else:
        event = pd.to_datetime(known["served_at"], utc=True) if "served_at" in known else None
    if event is None:
        mature = np.ones(len(known), dtype=bool)
    else:
        mature = (event + pd.Timedelta(days=spec.maturity_days) <= at).to_numpy(dtype=bool)
    return (_labels_as(spec, known["label"]), known[spec.score].astype(float).to_numpy(),
            mature)  # fmt: skip


def _days(first: pd.Timestamp, as_of: pd.Timestamp) -> list[pd.Timestamp]:
    """Ends of the UTC days from ``first``'s day up to ``as_of`` (the last point is
    ``as_of`` itself), at most 90 of them (the latest)."""
    ends = list(pd.date_range(first.normalize() + pd.Timedelta(days=1), as_of, freq="D"))
    ends = [e for e in ends if e < as_of] + [as_of]
    return ends[-_DAILY_POINTS:]


def assess(rows: pd.DataFrame, labels: pd.DataFrame, spec: LabelSpec, as_of: dt.datetime,
           *, version: str, gate: tuple[str | None, float | None] = (None, None),
           min_labels: int = 200) -> list[Quality]:  # fmt: skip
    """Per variant of ``rows`` (one version's log rows; only answered ones count), its
    quality on the labels known by ``as_of``, with the daily series and the gate's
    verdict."""
    at = pd.Timestamp(as_of)
    at = at.tz_localize("UTC") if at.tzinfo is None else at.tz_convert("UTC")
    answered = rows[rows["status"] == 200] if "status" in rows.columns else rows
    if spec.score not in answered.columns:
        raise DataError(f"the inference log has no output {spec.score!r} for version {version}",
                        hint="the labels' score must be one of the model's outputs")  # fmt: skip
    # only what the joins read: each day of the series joins again
    used = [c for c in dict.fromkeys([spec.key, spec.score, "variant", spec.event_time, "served_at"])
            if c and c in answered.columns]  # fmt: skip
    answered = answered[used]
    out = []
    for variant, part in answered.groupby(answered["variant"].astype(str), sort=True):
        y, p, ripe = _known(part, labels, spec, at)
        ym = y[ripe]
        metrics = _metrics(spec, y, p)
        q = Quality(version=version, variant=str(variant), as_of=at.isoformat(),
                    answered=len(part), labelled=len(y), metrics=metrics,
                    gate_metric=gate[0], gate_floor=gate[1], mature=len(ym),
                    verdict=metrics if ripe.all() else _metrics(spec, ym, p[ripe]))  # fmt: skip
        if spec.task == "binary" and len(y):
            q.calibration = _calibration(y, np.clip(p, 0, 1))
        mine = labels[
            labels["key"].isin(part[spec.key].astype(str)) & (labels["available_at"] <= at)
        ]
        if len(y):  # each day's picture: the labels known by its end, corrections included
            for end in _days(mine["available_at"].min(), at):
                dy, dp, _ = _known(part, labels, spec, end) if end < at else (y, p, ripe)
                q.daily.append({"as_of": end.isoformat(), "labelled": len(dy),
                                "coverage": len(dy) / len(part), **_metrics(spec, dy, dp)})  # fmt: skip
        if len(ym) < min_labels:
            young = (f", {len(y) - len(ym):,} of them younger than {spec.maturity_days:g} days "
                     "(provisional)") if len(ym) < len(y) else ""  # fmt: skip
            q.note = (f"{len(ym):,} mature labelled answers{young}, fewer than {min_labels:,} "
                      "(monitor.quality_min_labels): no verdict yet")  # fmt: skip
        elif spec.task == "binary" and len(np.unique(ym)) < 2:
            q.note = "the labelled answers hold one class only: no verdict yet"
        else:
            q.conclusive = True
        if gate[0] and gate[0] not in GATE_METRICS:
            q.note = (q.note + "; " if q.note else "") + (
                f"the gate's metric {gate[0]!r} is not one computed live "
                f"({', '.join(GATE_METRICS)})")  # fmt: skip
        out.append(q)
    return out
