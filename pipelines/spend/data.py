"""The customer-spend training set: forecast points labelled with what followed.

A forecast point is a customer and a time ``T`` (``as_of``): a random moment up to
three days after one of the customer's transactions, so points fall where a client
would ask (customers active lately, at any time of day) and not on transaction
times. Its label is the customer's spend in ``[T, T + 7 days)``; only points whose
whole horizon lies inside the data are labelled. Raw rows get the feature build's
validation (quarantined rows are not counted; the build reported them).

Features come from Feast's ``get_historical_features`` for ``customer_spend_v1``
(Ray offline store): the latest customer row at or before ``T``, exactly what the
online store holds for that customer at ``T``, so training and serving see the same
values. The split is by time, with a horizon's gap: no training label covers the
validation period.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from shipyard.errors import DataError

from pipelines.features.validate import _utc, check_files, row_reasons
from pipelines.spend.model import FEATURE_INPUTS, HORIZON

__all__ = ["SpendData", "forecast_points", "load", "spend_after", "split"]

_SECOND = 1_000_000  # microseconds


@dataclass
class SpendData:
    frame: pd.DataFrame  # customer_id, as_of, features, spend_next_7d; ordered by as_of
    window: tuple[pd.Timestamp, pd.Timestamp]
    excluded: dict[str, int]
    fingerprint: str


def _valid_transactions(raw: Path) -> tuple[pd.DataFrame, dict[str, int]]:
    import pyarrow.dataset as ds

    check_files(raw)
    columns = ["transaction_id", "customer_id", "merchant_id", "timestamp", "amount", "currency",
               "category", "country", "is_fraud", "label_available_at"]  # fmt: skip
    frame = ds.dataset(raw, format="parquet", partitioning="hive").to_table(columns=columns)
    frame = frame.to_pandas()
    reasons = row_reasons(frame, pd.Timestamp.now(tz="UTC"))
    excluded = {f"quarantined:{k}": int(v) for k, v in pd.Series(reasons).value_counts().items()}
    frame = frame[pd.isna(reasons)]
    dup = frame.duplicated("transaction_id", keep="first").to_numpy()
    if dup.any():
        excluded["quarantined:duplicate_transaction_id"] = int(dup.sum())
    frame = frame[~dup][["customer_id", "timestamp", "amount"]].copy()
    frame["timestamp"] = _utc(frame["timestamp"])
    return frame.reset_index(drop=True), excluded


def spend_after(tx: pd.DataFrame, points: pd.DataFrame, horizon: pd.Timedelta) -> np.ndarray:
    """For each point (customer_id, as_of): the sum of that customer's amounts with
    ``as_of <= timestamp < as_of + horizon``. One sort and two ``searchsorted`` over
    composite (customer, time) keys; no per-customer loop."""
    codes, uniques = pd.factorize(tx["customer_id"], sort=True)
    t = tx["timestamp"].astype("datetime64[us, UTC]").astype("int64").to_numpy() // _SECOND
    starts = points["as_of"].astype("datetime64[us, UTC]").astype("int64").to_numpy() // _SECOND
    base = min(int(t.min()), int(starts.min()))
    # wide enough that no key range spills into the next customer's, points after the
    # last transaction included
    span = int(max(t.max(), starts.max()) - base) + int(horizon.total_seconds()) + 2
    keys = codes.astype(np.int64) * span + (t - base)
    order = np.argsort(keys, kind="stable")
    keys = keys[order]
    sums = np.concatenate([[0.0], np.cumsum(tx["amount"].to_numpy(np.float64)[order])])
    pcode = uniques.get_indexer(points["customer_id"])
    if (pcode < 0).any():
        raise DataError("forecast points for customers without transactions")
    start = starts - base
    lo = np.searchsorted(keys, pcode * span + start, side="left")
    hi = np.searchsorted(keys, pcode * span + start + int(horizon.total_seconds()), side="left")
    return sums[hi] - sums[lo]


def forecast_points(tx: pd.DataFrame, *, rows: int, seed: int) -> pd.DataFrame:
    """Up to ``rows`` labelled forecast points (see the module docstring)."""
    rng = np.random.default_rng(seed)
    end = tx["timestamp"].max() + pd.Timedelta(1, "s")
    anchors = tx.sample(n=min(len(tx), rows * 2), random_state=seed)
    offset = pd.to_timedelta(rng.uniform(0, 3 * 86400, len(anchors)).round(), unit="s")
    points = pd.DataFrame({"customer_id": anchors["customer_id"].to_numpy(),
                           "as_of": (anchors["timestamp"] + offset.to_numpy()).dt.floor("s")})  # fmt: skip
    points = points[points["as_of"] + HORIZON <= end].drop_duplicates()
    points = points.sample(n=min(rows, len(points)), random_state=seed)  # the whole timeline
    points = points.sort_values(["as_of", "customer_id"], kind="stable")
    points["spend_next_7d"] = spend_after(tx, points, HORIZON)
    return points.reset_index(drop=True)


def load(repo: Path, raw: Path, *, rows: int, seed: int, service: str,
         say: Any = print) -> SpendData:  # fmt: skip
    """Forecast points with their features, through Feast."""
    from pipelines.features import store

    tx, excluded = _valid_transactions(raw)
    if tx.empty:
        raise DataError(f"no valid transactions under {raw}",
                        hint="run `shipyard data generate` first")  # fmt: skip
    points = forecast_points(tx, rows=rows, seed=seed)
    if len(points) < 100:
        raise DataError(f"only {len(points)} forecast points: the data covers less than "
                        f"{HORIZON.days} days plus history", hint="generate more days of data")  # fmt: skip
    say(f"{len(points):,} forecast points from {len(tx):,} valid transactions "
        f"({points['as_of'].min():%Y-%m-%d} .. {points['as_of'].max():%Y-%m-%d}); "
        f"not used: {excluded or 'none'}")  # fmt: skip
    feature_store = store.open_store(repo)
    try:
        features = feature_store.get_feature_service(service)
    except Exception:  # noqa: BLE001 - Feast raises its own not-found types
        raise DataError(f"feature service {service} is not registered",
                        hint="run `shipyard features apply` first") from None  # fmt: skip
    say(f"point-in-time join through Feast ({service}, Ray offline store)")
    entities = points.rename(columns={"as_of": "event_timestamp"})
    joined = feature_store.get_historical_features(entity_df=entities, features=features).to_df()
    joined = joined.rename(columns={"event_timestamp": "as_of"})
    if len(joined) != len(points):
        raise DataError(f"the feature join returned {len(joined):,} rows for {len(points):,}")
    missing = [c for c in FEATURE_INPUTS if c not in joined.columns]
    if missing:
        raise DataError(f"the feature service returned no {', '.join(missing)}")
    frame = joined[["customer_id", "as_of", *FEATURE_INPUTS, "spend_next_7d"]]
    frame = frame.sort_values(["as_of", "customer_id"], kind="stable").reset_index(drop=True)
    hashed = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    window = (frame["as_of"].min(), frame["as_of"].max() + pd.Timedelta(1, "s"))
    return SpendData(frame, window, excluded, hashlib.sha256(hashed.tobytes()).hexdigest()[:16])


def split(frame: pd.DataFrame, validation_fraction: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Earlier points train, later ones validate, cut at one second; a training point's
    label ends before the cut (points in the horizon before it are left out), so no
    training label sees the validation period."""
    cut = pd.Timestamp(frame["as_of"].quantile(1.0 - validation_fraction)).floor("s")
    train, val = frame[frame["as_of"] + HORIZON <= cut], frame[frame["as_of"] >= cut]
    if len(train) < 50 or len(val) < 20:
        raise DataError(f"the split at {cut} leaves {len(train)} training and {len(val)} "
                        "validation points", hint="generate more data")  # fmt: skip
    return train.reset_index(drop=True), val.reset_index(drop=True)
