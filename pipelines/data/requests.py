"""Request bodies for the served fraud model (``POST /<model>/predict``): the demo's
and the tests' traffic (``shipyard.traffic.Load`` takes :func:`random_transactions`)."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["random_transactions", "transaction"]


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
