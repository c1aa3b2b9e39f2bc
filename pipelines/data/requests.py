"""Request bodies for the served reference models (``POST /<model>/predict``): the
demo's and the tests' traffic (``shipyard.traffic.Load`` takes :func:`random_transactions`
for the fraud model, :func:`random_forecasts` for customer spend)."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["forecast", "random_forecasts", "random_transactions", "replayed", "transaction"]


def transaction(i: int, customer: str, merchant: str = "m_000001", amount: float = 42.0) -> dict:
    """A valid ``POST /predict`` body."""
    return {"transaction_id": f"t{i}", "customer_id": customer, "merchant_id": merchant,
            "amount": amount, "currency": "USD", "category": "grocery", "country": "US",
            "timestamp": "2026-08-14T10:00:00Z"}  # fmt: skip


def random_transactions(
    customers: Sequence[str], merchants: Sequence[str] = ("m_000001",)
) -> Callable[[int, random.Random], dict[str, Any]]:
    """``body(i, rng)`` for a load: a transaction of a random customer and merchant."""

    def body(i: int, rng: random.Random) -> dict[str, Any]:
        return transaction(i, rng.choice(customers), rng.choice(merchants),
                           round(rng.uniform(5, 500), 2))  # fmt: skip

    return body


def replayed(rows: Any) -> Callable[[int, random.Random], dict[str, Any]]:
    """``body(i, rng)`` for a load: the i-th of ``rows`` (raw transactions, a DataFrame;
    in order, wrapping around) as its client sent it. Replaying transactions held out of
    training sends what the model never saw, with the same ids as the labels that
    arrive for them later (``label_available_at``), so live quality can be measured."""
    fields = ["transaction_id", "customer_id", "merchant_id", "amount", "currency", "category",
              "country"]  # fmt: skip
    stamps = rows["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ").tolist()
    records = [dict(zip(fields, values, strict=True), timestamp=stamp)
               for values, stamp in zip(rows[fields].itertuples(index=False), stamps, strict=True)]  # fmt: skip
    if not records:
        raise ValueError("no transactions to replay")

    def body(i: int, rng: random.Random) -> dict[str, Any]:
        return records[i % len(records)]

    return body


def forecast(customer: str, as_of: str = "2026-08-14T10:00:00Z") -> dict:
    """A valid ``POST /customer-spend/predict`` body."""
    return {"customer_id": customer, "as_of": as_of}


def random_forecasts(customers: Sequence[str]) -> Callable[[int, random.Random], dict[str, Any]]:
    """``body(i, rng)`` for a load: a 7-day spend forecast for a random customer, at a
    random hour."""

    def body(i: int, rng: random.Random) -> dict[str, Any]:
        return forecast(rng.choice(customers), f"2026-08-{rng.randint(1, 28):02d}T"
                        f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00Z")  # fmt: skip

    return body
