"""The training set: labelled transactions joined point-in-time with Feast features.

Entity rows are the raw transactions in the data window that pass the same
validation as the feature build (quarantined rows are not trained on; the build
reported them) and whose label is already known at the latest event in the data:
a label that arrives later cannot be used by a model trained now. Their features come
from Feast's ``get_historical_features`` for the model's feature service, on the
Ray offline store. The split is by time: the earliest part trains, the latest
validates, so validation never looks at the past of a training row's future.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from shipyard.errors import DataError

from pipelines.features import store
from pipelines.features.validate import _utc, check_files, row_reasons
from pipelines.training.model import FEATURE_INPUTS, REQUEST_INPUTS

__all__ = ["Split", "TrainingData", "labelled_transactions", "load_training_data", "split"]

_RAW = ["transaction_id", "customer_id", "merchant_id", "timestamp", "amount", "currency",
        "category", "country", "is_fraud", "label_available_at"]  # fmt: skip


@dataclass
class Split:
    train: pd.DataFrame
    val: pd.DataFrame
    split_at: pd.Timestamp


@dataclass
class TrainingData:
    frame: pd.DataFrame  # model inputs + is_fraud + transaction_id, ordered by time
    window: tuple[pd.Timestamp, pd.Timestamp]
    excluded: dict[str, int]  # rows not trained on, by reason
    fingerprint: str


def labelled_transactions(
    raw: Path,
    start: datetime | None,
    end: datetime | None,
    *,
    days: float | None = None,
    lag_days: float = 0.0,
) -> tuple[pd.DataFrame, dict[str, int], tuple[pd.Timestamp, pd.Timestamp]]:
    """Valid, de-duplicated transactions in [start, end) whose label is already known
    at the data's latest event (the present, for a model trained on it now). With
    ``days``, the window is instead the latest ``days`` days, ending ``lag_days`` before
    that event."""
    import pyarrow.dataset as ds

    check_files(raw)
    table = ds.dataset(raw, format="parquet", partitioning="hive").to_table(columns=_RAW)
    frame = table.to_pandas()
    reasons = row_reasons(frame, pd.Timestamp.now(tz="UTC"))
    excluded = {f"quarantined:{k}": int(v) for k, v in pd.Series(reasons).value_counts().items()}
    frame = frame[pd.isna(reasons)].copy()
    frame["timestamp"] = _utc(frame["timestamp"])
    frame["label_available_at"] = _utc(frame["label_available_at"])
    frame = frame.sort_values(["timestamp", "transaction_id"], kind="stable")
    dup = frame.duplicated("transaction_id", keep="first")
    if dup.any():
        excluded["quarantined:duplicate_transaction_id"] = int(dup.sum())
    frame = frame[~dup.to_numpy()]
    known_by = frame["timestamp"].max() + pd.Timedelta(1, "s")  # "now": the latest event
    lo = pd.Timestamp(start).tz_convert("UTC") if start else frame["timestamp"].min()
    hi = (
        pd.Timestamp(end).tz_convert("UTC")
        if end
        else frame["timestamp"].max() + pd.Timedelta(1, "s")
    )
    if days is not None:
        hi = known_by - pd.Timedelta(days=lag_days)
        lo = hi - pd.Timedelta(days=days)
    in_window = (frame["timestamp"] >= lo) & (frame["timestamp"] < hi)
    frame = frame[in_window]
    unknown = frame["label_available_at"] > known_by
    if unknown.any():
        excluded["label_not_yet_known"] = int(unknown.sum())
    frame = frame[~unknown.to_numpy()]
    if frame.empty:
        raise DataError(
            f"no labelled transactions in the window [{lo}, {hi})",
            hint="widen --start/--end (the config's start and end) or generate more data",
        )
    return frame.reset_index(drop=True), excluded, (lo, hi)


def load_training_data(repo: Path, raw: Path, start: datetime | None,
                       end: datetime | None, say: Any = print, *, days: float | None = None,
                       lag_days: float = 0.0) -> TrainingData:  # fmt: skip
    rows, excluded, window = labelled_transactions(raw, start, end, days=days, lag_days=lag_days)
    say(f"{len(rows):,} labelled transactions in [{window[0]}, {window[1]}); "
        f"not used: {excluded or 'none'}")  # fmt: skip
    feature_store = store.open_store(repo)
    try:
        feature_store.get_feature_service(store.FEATURE_SERVICE)
    except Exception:  # noqa: BLE001 - Feast raises its own not-found types
        raise DataError(
            f"feature service {store.FEATURE_SERVICE} is not registered",
            hint="run `shipyard features build` and `shipyard features apply` first",
        ) from None
    entities = rows.rename(columns={"timestamp": "event_timestamp"})
    say(f"point-in-time join through Feast ({store.FEATURE_SERVICE}, Ray offline store)")
    joined = store.training_set(feature_store, entities)
    joined = joined.rename(columns={"event_timestamp": "timestamp"})
    missing = [c for c in FEATURE_INPUTS if c not in joined.columns]
    if missing:
        raise DataError(f"the feature service returned no {', '.join(missing)}")
    if len(joined) != len(rows):
        raise DataError(f"the feature join returned {len(joined):,} rows for {len(rows):,}")
    frame = joined[["transaction_id", *FEATURE_INPUTS, *REQUEST_INPUTS, "is_fraud"]]
    frame = frame.sort_values(["timestamp", "transaction_id"], kind="stable").reset_index(drop=True)
    frame["is_fraud"] = frame["is_fraud"].astype(bool)
    return TrainingData(frame, window, excluded, fingerprint(frame))


def reuse_training_data(path: Path) -> TrainingData:
    """A training set saved by an earlier run: the same rows, so the same fingerprint."""
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - any reader failure
        raise DataError(f"cannot read training set {path}: {exc}",
                        hint="pass the data.training_set tag of an earlier run") from None  # fmt: skip
    missing = [c for c in ["transaction_id", *FEATURE_INPUTS, *REQUEST_INPUTS, "is_fraud"]
               if c not in frame.columns]  # fmt: skip
    if missing:
        raise DataError(f"training set {path} lacks column(s) {', '.join(missing)}")
    window = (frame["timestamp"].min(), frame["timestamp"].max() + pd.Timedelta(1, "s"))
    return TrainingData(frame, window, {}, fingerprint(frame))


def fingerprint(frame: pd.DataFrame) -> str:
    """A content hash of the training set (row order included): same data, same hash."""
    hashed = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    digest = hashlib.sha256(hashed.tobytes())
    digest.update(",".join(frame.columns).encode())
    return digest.hexdigest()[:16]


def split(frame: pd.DataFrame, validation_fraction: float) -> Split:
    """Train on the earlier rows, validate on the later ones, cut at one timestamp
    (rows of the same second stay on one side)."""
    split_at = frame["timestamp"].quantile(1.0 - validation_fraction)
    split_at = pd.Timestamp(split_at).floor("s")
    train = frame[frame["timestamp"] < split_at]
    val = frame[frame["timestamp"] >= split_at]
    for name, part in (("training", train), ("validation", val)):
        if part.empty or part["is_fraud"].nunique() < 2:
            raise DataError(
                f"the {name} split has {len(part):,} rows and "
                f"{int(part['is_fraud'].sum()) if len(part) else 0} frauds: both classes are needed",
                hint="widen the data window or change validation_fraction",
            )
    return Split(train.reset_index(drop=True), val.reset_index(drop=True), split_at)


def positives(frame: pd.DataFrame) -> int:
    return int(np.asarray(frame["is_fraud"]).sum())
