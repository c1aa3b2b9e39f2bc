"""Request bodies for the served reference models (``POST /<model>/predict``): the
demo's and the tests' traffic (``shipyard.traffic.Load`` takes :func:`random_transactions`
for the fraud model, :func:`random_forecasts` for customer spend)."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["forecast", "random_forecasts", "random_transactions", "transaction"]


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
