"""Test data for the feature pipeline, and an independent pandas reference.

The reference answers each (customer, merchant, timestamp, amount) row by brute
force over the raw transactions: filter the entity's events strictly before the
timestamp, then count and sum. It shares no code with ``pipelines.features``.
Times are compared at the platform's resolution, whole seconds (see
``pipelines/features/compute.py``): events in the same second are simultaneous.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.data.generate import SCHEMA

H = pd.Timedelta(hours=1)
D = pd.Timedelta(days=1)
WINDOWS = {"1h": H, "24h": D, "7d": 7 * D}


def ts(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def reference(raw: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
    """Expected features for each row of ``rows`` (customer_id, merchant_id,
    event_timestamp, amount), from the accepted raw transactions ``raw``."""
    raw = raw.assign(
        timestamp=raw["timestamp"].dt.floor("s"),
        label_available_at=raw["label_available_at"].dt.floor("s"),
    )
    by_customer = dict(tuple(raw.groupby("customer_id")))
    by_merchant = dict(tuple(raw.groupby("merchant_id")))
    empty = raw.iloc[0:0]
    out = []
    for row in rows.itertuples(index=False):
        t = row.event_timestamp.floor("s")
        rec: dict[str, float] = {}
        past = by_customer.get(row.customer_id, empty)
        past = past[past["timestamp"] < t]
        for name, width in WINDOWS.items():
            window = past[past["timestamp"] >= t - width]
            total = float(window["amount"].sum())
            rec[f"cust_tx_count_{name}"] = len(window)
            rec[f"cust_amount_sum_{name}"] = total
            rec[f"cust_amount_mean_{name}"] = total / len(window) if len(window) else 0.0
        rec["cust_distinct_merchants_24h"] = past.loc[
            past["timestamp"] >= t - D, "merchant_id"
        ].nunique()
        gap = (t - past["timestamp"].max()) if len(past) else None
        rec["cust_secs_since_prev_tx"] = (
            gap.total_seconds() if gap is not None and gap <= 30 * D else np.nan
        )
        m = by_merchant.get(row.merchant_id, empty)
        known = m[
            (m["timestamp"] >= t - 30 * D)
            & (m["timestamp"] < t)
            & m["is_fraud"].notna()
            & (m["label_available_at"] < t)
        ]
        frauds = int(known["is_fraud"].astype(bool).sum())
        rec["merch_labeled_count_30d"] = len(known)
        rec["merch_fraud_count_30d"] = frauds
        rec["merch_fraud_rate_30d"] = frauds / len(known) if len(known) else 0.0
        mean7 = rec["cust_amount_mean_7d"]
        rec["amount_to_cust_mean_7d"] = row.amount / mean7 if mean7 > 0 else 1.0
        out.append(rec)
    return pd.DataFrame(out, index=rows.index)


def assert_features_equal(got: pd.DataFrame, expected: pd.DataFrame, context: str = "") -> None:
    for column in expected.columns:
        a = got[column].to_numpy(dtype="float64")
        b = expected[column].to_numpy(dtype="float64")
        close = np.isclose(a, b, rtol=1e-9, atol=1e-6, equal_nan=True)
        if not close.all():
            i = int(np.flatnonzero(~close)[0])
            raise AssertionError(
                f"{context}{column}: {int((~close).sum())} row(s) differ, first at "
                f"{got.index[i]}: got {a[i]!r}, expected {b[i]!r}"
            )


def _tx(tid, cust, merch, when, amount=25.0, fraud=False, label=None, **kw) -> dict:
    when = ts(when)
    return {
        "transaction_id": tid,
        "customer_id": cust,
        "merchant_id": merch,
        "amount": amount,
        "currency": kw.get("currency", "USD"),
        "category": kw.get("category", "grocery"),
        "country": "US",
        "timestamp": when,
        "is_fraud": fraud,
        "label_available_at": ts(label) if label else when + 2 * D,
    }


def edge_cases() -> pd.DataFrame:
    """Good transactions that exercise the corners of point-in-time logic."""
    rows = [
        # c_edge_1's first transaction, late on 10 Aug; the rest straddle midnight.
        _tx("tx_edge_01", "c_edge_1", "m_edge_1", "2026-08-10 23:30:00", 10.0),
        _tx("tx_edge_02", "c_edge_1", "m_edge_2", "2026-08-10 23:50:00", 20.0),
        # several in the same second, two of them in the same microsecond
        _tx("tx_edge_03", "c_edge_1", "m_edge_1", "2026-08-11 00:10:00.100000", 30.0),
        _tx("tx_edge_04", "c_edge_1", "m_edge_2", "2026-08-11 00:10:00.200000", 40.0),
        _tx("tx_edge_05", "c_edge_1", "m_edge_1", "2026-08-11 00:10:00.200000", 50.0),
        # exactly one hour after the first: the window's lower bound is inclusive
        _tx("tx_edge_06", "c_edge_1", "m_edge_1", "2026-08-11 00:30:00", 60.0),
        _tx("tx_edge_07", "c_edge_1", "m_edge_3", "2026-08-18 00:30:00", 70.0),
        # m_edge_1 labels: one fraud whose label lands exactly at tx_edge_03's time
        _tx(
            "tx_edge_08",
            "c_edge_3",
            "m_edge_1",
            "2026-08-01 12:00:00",
            500.0,
            fraud=True,
            label="2026-08-11 00:10:00.100000",
        ),  # fmt: skip
        _tx(
            "tx_edge_09",
            "c_edge_3",
            "m_edge_1",
            "2026-08-02 12:00:00",
            15.0,
            label="2026-08-10 12:00:00",
        ),  # fmt: skip
        # a customer with a single transaction
        _tx("tx_edge_10", "c_edge_2", "m_edge_1", "2026-08-11 00:10:00.100000", 99.0),
    ]
    return _typed(pd.DataFrame(rows))


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    """The dtypes the generator's parquet reads back as."""
    for column in ("timestamp", "label_available_at"):
        frame[column] = pd.to_datetime(frame[column], utc=True).astype("datetime64[us, UTC]")
    return frame


def bad_rows(good: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, str]]:
    """One planted bad row per reason, and the expected reason by transaction id.
    The duplicate copies the id of ``good``'s first row."""
    base = _tx("tx_bad_00", "c_edge_9", "m_edge_9", "2026-08-05 10:00:00", 12.0)
    plants = {
        "tx_bad_01": ("null_key", {"customer_id": None}),
        "tx_bad_02": ("null_amount", {"amount": float("nan")}),
        "tx_bad_03": ("negative_amount", {"amount": -5.0}),
        "tx_bad_04": ("absurd_amount", {"amount": 5e9}),
        "tx_bad_05": ("unknown_currency", {"currency": "XYZ"}),
        "tx_bad_06": ("unknown_category", {"category": "weapons"}),
        "tx_bad_07": (
            "future_timestamp",
            {"timestamp": ts("2099-01-01"), "label_available_at": ts("2099-02-01")},
        ),  # fmt: skip
        "tx_bad_08": (
            "label_before_transaction",
            {"label_available_at": ts("2026-08-04 10:00:00")},
        ),  # fmt: skip
    }
    rows, expected = [], {}
    for tid, (reason, change) in plants.items():
        rows.append({**base, "transaction_id": tid, **change})
        expected[tid] = reason
    first = good.sort_values("timestamp").iloc[0].to_dict()
    dup = {**first, "timestamp": first["timestamp"] + H, "amount": first["amount"] + 1}
    rows.append(dup)
    expected[f"dup:{first['transaction_id']}"] = "duplicate_transaction_id"
    return _typed(pd.DataFrame(rows)), expected


def write_raw(frame: pd.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(frame[SCHEMA.names], schema=SCHEMA, preserve_index=False),
                   path)  # fmt: skip
    return path
