"""Point-in-time feature math: vectorised numpy, shared by the Ray Data pipeline and the
single-process pandas baseline.

Every feature row describes an entity *as of* a time ``T`` and uses only events
strictly before ``T``:

- customer rows, one per distinct (customer, transaction time): counts and amount
  sums/means over ``[T - w, T)`` for w in 1 h, 24 h, 7 d; distinct merchants over
  ``[T - 24 h, T)``; seconds since the customer's previous transaction within the
  last 30 days (null when there is none);
- merchant rows, one per distinct (merchant, transaction time): the fraud rate over
  transactions in ``[T - 30 d, T)`` whose label was known before ``T``
  (``label_available_at < T``), with the counts behind it.

Time resolution is one second: transaction and label times are floored to the
second first, so transactions within the same second are simultaneous and share
one row that excludes all of them. Feast's Ray offline store floors feature
timestamps to the second before its point-in-time join; with finer rows, a later
transaction's row from the same second would be joined to an earlier one (a leak).
Because a row exists at every transaction second, the join (latest row with
``event_timestamp <= T``) returns exactly these values for a transaction at ``T``.

All windowed quantities reduce to one primitive: for each query (group, x), the
sum of weights of the elements of the same group with key < x. It is answered by
one sort of composite ``group * span + key`` integers and ``searchsorted``; an
interval feature (an element counts while ``s < T <= e``) is the difference of two
such prefix counts.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = [
    "CUSTOMER_FEATURES",
    "CUSTOMER_WINDOWS",
    "LOOKBACK",
    "MERCHANT_FEATURES",
    "MERCHANT_WINDOW",
    "PREV_TX_HORIZON",
    "customer_features",
    "merchant_features",
]

US = 1_000_000
HOUR = 3600 * US
DAY = 24 * HOUR
CUSTOMER_WINDOWS = {"1h": HOUR, "24h": DAY, "7d": 7 * DAY}
DISTINCT_WINDOW = DAY
PREV_TX_HORIZON = 30 * DAY
MERCHANT_WINDOW = 30 * DAY
# How much history before a build window a row can depend on.
LOOKBACK = max(max(CUSTOMER_WINDOWS.values()), PREV_TX_HORIZON, MERCHANT_WINDOW)

CUSTOMER_FEATURES: dict[str, str] = {
    **{f"cust_tx_count_{w}": "int64" for w in CUSTOMER_WINDOWS},
    **{f"cust_amount_sum_{w}": "float64" for w in CUSTOMER_WINDOWS},
    **{f"cust_amount_mean_{w}": "float64" for w in CUSTOMER_WINDOWS},
    "cust_distinct_merchants_24h": "int64",
    "cust_secs_since_prev_tx": "float64",
}
MERCHANT_FEATURES: dict[str, str] = {
    "merch_labeled_count_30d": "int64",
    "merch_fraud_count_30d": "int64",
    "merch_fraud_rate_30d": "float64",
}
_LIMIT = 2**62


def _micros(ts: pd.Series) -> np.ndarray:
    """Timestamps as int64 microseconds since the epoch (UTC), floored to the second."""
    if ts.dtype == np.int64:
        values = ts.to_numpy()
    else:
        values = ts.dt.tz_convert("UTC").astype("datetime64[us, UTC]").astype("int64").to_numpy()
    return values // US * US


def _prefix_sums(
    g_e: np.ndarray,
    k_e: np.ndarray,
    weights: list[np.ndarray],
    g_q: np.ndarray,
    k_qs: list[np.ndarray],
) -> list[list[np.ndarray]]:
    """For each query key array and each weight: sum of weights over elements with the
    same group and ``key < query key``. ``result[i][j]`` is query array i, weight j."""
    out = [[np.zeros(len(g_q), dtype=w.dtype) for w in weights] for _ in k_qs]
    if len(g_e) == 0 or len(g_q) == 0:
        return out
    lo = min(int(k_e.min()), *(int(k.min()) for k in k_qs))
    hi = max(int(k_e.max()), *(int(k.max()) for k in k_qs))
    span = hi - lo + 1
    n_groups = int(max(g_e.max(), g_q.max())) + 1
    if n_groups * span >= _LIMIT:  # split by group so composite keys stay in int64
        mid = n_groups // 2
        if mid == 0:
            raise ValueError("time span too large for microsecond keys")
        for sel_e, sel_q, base in ((g_e < mid, g_q < mid, 0), (g_e >= mid, g_q >= mid, mid)):
            part = _prefix_sums(
                g_e[sel_e] - base,
                k_e[sel_e],
                [w[sel_e] for w in weights],
                g_q[sel_q] - base,
                [k[sel_q] for k in k_qs],
            )
            for i in range(len(k_qs)):
                for j in range(len(weights)):
                    out[i][j][sel_q] = part[i][j]
        return out
    keys = g_e * span + (k_e - lo)
    order = np.argsort(keys, kind="stable")
    keys = keys[order]
    cums = [np.concatenate([np.zeros(1, dtype=w.dtype), np.cumsum(w[order])]) for w in weights]
    start = np.searchsorted(keys, g_q * span, side="left")
    for i, k_q in enumerate(k_qs):
        pos = np.searchsorted(keys, g_q * span + (k_q - lo), side="left")
        for j, cum in enumerate(cums):
            out[i][j] = cum[pos] - cum[start]
    return out


def _interval_counts(
    g: np.ndarray, s: np.ndarray, e: np.ndarray, w: np.ndarray, g_q: np.ndarray, t_q: np.ndarray
) -> np.ndarray:
    """Sum of w over elements of the query's group with ``s < T <= e``."""
    keep = s < e
    g, s, e, w = g[keep], s[keep], e[keep], w[keep]
    # #{s < T} - #{e < T}; for a valid interval e < T implies s < T.
    ((started,),) = _prefix_sums(g, s, [w], g_q, [t_q])
    ((ended,),) = _prefix_sums(g, e, [w], g_q, [t_q])
    return started - ended


def customer_features(tx: pd.DataFrame, since_us: int | None = None) -> pd.DataFrame:
    """Customer feature rows for the distinct (customer, timestamp) pairs in ``tx``.

    ``tx`` needs customer_id, merchant_id, amount and timestamp. Rows before
    ``since_us`` serve as history only; no feature row is emitted for them.
    """
    cust_codes, cust_uniques = pd.factorize(tx["customer_id"], sort=False)
    t = _micros(tx["timestamp"])
    amount = tx["amount"].to_numpy(dtype="float64")
    g = cust_codes.astype("int64")

    q = pd.DataFrame({"g": g, "t": t}).drop_duplicates().sort_values(["g", "t"], kind="stable")
    g_q = q["g"].to_numpy()
    t_q = q["t"].to_numpy()

    windows = list(CUSTOMER_WINDOWS.items())
    k_qs = [t_q] + [t_q - w for _, w in windows]
    ones = np.ones(len(g), dtype="int64")
    sums = _prefix_sums(g, t, [ones, amount], g_q, k_qs)
    cols: dict[str, np.ndarray] = {}
    for i, (name, _) in enumerate(windows, start=1):
        count = sums[0][0] - sums[i][0]
        total = sums[0][1] - sums[i][1]
        cols[f"cust_tx_count_{name}"] = count
        cols[f"cust_amount_sum_{name}"] = total
        with np.errstate(invalid="ignore", divide="ignore"):
            cols[f"cust_amount_mean_{name}"] = np.where(
                count > 0, total / np.maximum(count, 1), 0.0
            )

    # Distinct merchants over [T - 24 h, T): the last visit of each (customer, merchant)
    # before T counts while T is in (t_i, min(next visit, t_i + 24 h)].
    merch_codes = pd.factorize(tx["merchant_id"], sort=False)[0].astype("int64")
    order = np.lexsort((t, merch_codes, g))
    gs, ms, ts = g[order], merch_codes[order], t[order]
    nxt = np.full(len(ts), np.iinfo(np.int64).max, dtype="int64")
    same = (gs[1:] == gs[:-1]) & (ms[1:] == ms[:-1])
    nxt[:-1][same] = ts[1:][same]
    end = np.minimum(nxt, ts + DISTINCT_WINDOW)
    cols["cust_distinct_merchants_24h"] = _interval_counts(
        gs, ts, end, np.ones(len(ts), dtype="int64"), g_q, t_q
    )

    prev = np.empty(len(t_q), dtype="float64")
    prev[0:1] = np.nan
    prev[1:] = np.where(g_q[1:] == g_q[:-1], (t_q[1:] - t_q[:-1]) / US, np.nan)
    prev[prev > PREV_TX_HORIZON / US] = np.nan
    cols["cust_secs_since_prev_tx"] = prev

    out = pd.DataFrame(
        {
            "customer_id": np.asarray(cust_uniques, dtype=object)[g_q],
            "event_timestamp": pd.to_datetime(t_q, unit="us", utc=True),
            **cols,
        }
    )
    if since_us is not None:
        out = out[t_q >= since_us]
    return out.astype({k: v for k, v in CUSTOMER_FEATURES.items()}).reset_index(drop=True)


def merchant_features(tx: pd.DataFrame, since_us: int | None = None) -> pd.DataFrame:
    """Merchant feature rows for the distinct (merchant, timestamp) pairs in ``tx``.

    ``tx`` needs merchant_id, timestamp, is_fraud and label_available_at; a null
    label means "not labelled (yet)" and never counts.
    """
    codes, uniques = pd.factorize(tx["merchant_id"], sort=False)
    g = codes.astype("int64")
    t = _micros(tx["timestamp"])
    q = pd.DataFrame({"g": g, "t": t}).drop_duplicates().sort_values(["g", "t"], kind="stable")
    g_q, t_q = q["g"].to_numpy(), q["t"].to_numpy()

    labeled = tx["is_fraud"].notna().to_numpy() & tx["label_available_at"].notna().to_numpy()
    lab = np.zeros(len(tx), dtype="int64")
    if labeled.any():
        lab[labeled] = _micros(tx["label_available_at"][labeled])
    fraud = tx["is_fraud"].fillna(False).to_numpy(dtype=bool).astype("int64")
    # A labelled transaction i counts at T while lab_i < T <= t_i + 30 d.
    gl, sl, el = g[labeled], lab[labeled], t[labeled] + MERCHANT_WINDOW
    n_lab = _interval_counts(gl, sl, el, np.ones(len(gl), dtype="int64"), g_q, t_q)
    n_fraud = _interval_counts(gl, sl, el, fraud[labeled], g_q, t_q)
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = np.where(n_lab > 0, n_fraud / np.maximum(n_lab, 1), 0.0)
    out = pd.DataFrame(
        {
            "merchant_id": np.asarray(uniques, dtype=object)[g_q],
            "event_timestamp": pd.to_datetime(t_q, unit="us", utc=True),
            "merch_labeled_count_30d": n_lab,
            "merch_fraud_count_30d": n_fraud,
            "merch_fraud_rate_30d": rate,
        }
    )
    if since_us is not None:
        out = out[t_q >= since_us]
    return out.astype(MERCHANT_FEATURES).reset_index(drop=True)
