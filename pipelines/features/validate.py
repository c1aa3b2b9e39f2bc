"""What a raw transaction must look like before it may feed a feature.

Two levels:

- a *file* that is unreadable, lacks a required column, or has a column of the
  wrong type stops the build at once, naming the file and the column;
- a *row* that breaks a value rule is quarantined with a reason (never dropped
  silently, never fatal). The first rule a row breaks is its reason.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from shipyard.errors import DataError

__all__ = [
    "CATEGORIES",
    "CURRENCIES",
    "MAX_AMOUNT",
    "REASONS",
    "REQUIRED",
    "check_files",
    "id_hash",
    "row_reasons",
]

CURRENCIES = frozenset({"USD", "CAD", "GBP", "EUR", "AUD"})
CATEGORIES = frozenset({"grocery", "restaurant", "fuel", "transport", "online_retail",
                        "electronics", "travel", "entertainment", "jewelry", "gift_cards"})  # fmt: skip
MAX_AMOUNT = 1_000_000.0  # no card transaction is larger; beyond it is a unit or parsing error

# Column -> a predicate on its arrow type, and what we expect in words.
REQUIRED: dict[str, tuple[object, str]] = {
    "transaction_id": (pa.types.is_string, "string"),
    "customer_id": (pa.types.is_string, "string"),
    "merchant_id": (pa.types.is_string, "string"),
    "amount": (lambda t: pa.types.is_floating(t) or pa.types.is_integer(t), "number"),
    "currency": (pa.types.is_string, "string"),
    "category": (pa.types.is_string, "string"),
    "country": (pa.types.is_string, "string"),
    "timestamp": (pa.types.is_timestamp, "timestamp"),
    "is_fraud": (pa.types.is_boolean, "boolean (null = not labelled yet)"),
    "label_available_at": (pa.types.is_timestamp, "timestamp (null = not labelled yet)"),
}

# In the order they are checked; a row gets the first that applies.
REASONS = (
    "null_key",
    "null_amount",
    "negative_amount",
    "absurd_amount",
    "unknown_currency",
    "unknown_category",
    "future_timestamp",
    "label_before_transaction",
    "duplicate_transaction_id",  # decided across the whole input, see build.py
)


def check_files(root: Path) -> list[Path]:
    """All parquet files under ``root``, each readable and with every required column."""
    if not root.exists():
        raise DataError(f"input {root} does not exist", hint="run `shipyard data generate` first")
    files = [root] if root.is_file() else sorted(root.rglob("*.parquet"))
    if not files:
        raise DataError(f"no parquet files under {root}", hint="point --input at raw transactions")
    for path in files:
        try:
            schema = pq.read_schema(path)
        except Exception as exc:  # noqa: BLE001 - any reader failure means "unreadable"
            raise DataError(
                f"cannot read {path}: {exc}", hint="replace or remove the file and build again"
            ) from None
        for column, (is_ok, expected) in REQUIRED.items():
            if column not in schema.names:
                raise DataError(
                    f"{path}: required column {column!r} is missing",
                    hint=f"every input file needs: {', '.join(REQUIRED)}",
                )
            actual = schema.field(column).type
            if not is_ok(actual) and not pa.types.is_null(actual):
                raise DataError(
                    f"{path}: column {column!r} has type {actual}, expected {expected}",
                    hint="fix the file's schema and build again",
                )
    return files


def _utc(values: pd.Series) -> pd.Series:
    if values.dt.tz is None:
        return values.dt.tz_localize("UTC")
    return values.dt.tz_convert("UTC")


def row_reasons(batch: pd.DataFrame, now: pd.Timestamp) -> np.ndarray:
    """The quarantine reason of each row (object array, None for a good row)."""
    n = len(batch)
    reason = np.full(n, None, dtype=object)
    undecided = np.ones(n, dtype=bool)

    def mark(mask: np.ndarray, name: str) -> None:
        hit = undecided & mask
        reason[hit] = name
        undecided[hit] = False

    keys = ["transaction_id", "customer_id", "merchant_id"]
    null_key = batch["timestamp"].isna().to_numpy()
    for key in keys:
        col = batch[key]
        null_key |= (col.isna() | (col.astype("string").str.strip() == "")).fillna(True).to_numpy()
    mark(null_key, "null_key")
    amount = pd.to_numeric(batch["amount"], errors="coerce").astype("float64").to_numpy()
    mark(np.isnan(amount), "null_amount")
    with np.errstate(invalid="ignore"):
        mark(amount < 0, "negative_amount")
        mark(~(amount <= MAX_AMOUNT), "absurd_amount")  # also catches +inf
    mark(~batch["currency"].isin(CURRENCIES).to_numpy(), "unknown_currency")
    mark(~batch["category"].isin(CATEGORIES).to_numpy(), "unknown_category")
    ts = _utc(batch["timestamp"])
    mark((ts > now).fillna(False).to_numpy(), "future_timestamp")
    lab = _utc(batch["label_available_at"])
    mark((lab < ts).fillna(False).to_numpy(), "label_before_transaction")
    return reason


def id_hash(ids: pd.Series) -> np.ndarray:
    """A 64-bit hash per transaction id, for finding duplicates without shuffling ids."""
    return pd.util.hash_array(ids.astype(object).to_numpy(), categorize=False)
