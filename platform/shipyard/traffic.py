"""Bounded traffic for a served model (the demo, the tests): a few threads sending
transactions at a capped rate until stopped or until their time is up; every answer
is recorded as ``(time, status, variant, model_version)``."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import requests

__all__ = ["Load", "transaction"]


def transaction(i: int, customer: str, merchant: str = "m_000001", amount: float = 42.0) -> dict:
    """A valid ``POST /predict`` body."""
    return {"transaction_id": f"t{i}", "customer_id": customer, "merchant_id": merchant,
            "amount": amount, "currency": "USD", "category": "grocery", "country": "US",
            "timestamp": "2026-08-14T10:00:00Z"}  # fmt: skip


@dataclass
class Load:
    url: str  # .../predict
    customers: list[str]
    merchants: list[str] = field(default_factory=lambda: ["m_000001"])
    rate: float = 40.0  # requests per second, all threads together
    threads: int = 4
    max_seconds: float = 240.0  # stops by itself
    results: list[tuple[float, int, str, str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> Load:
        for n in range(self.threads):
            t = threading.Thread(target=self._run, args=(n,), daemon=True)
            t.start()
            self._workers.append(t)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for t in self._workers:
            t.join(timeout=30)

    def _run(self, n: int) -> None:
        rng = random.Random(n)
        session = requests.Session()
        period = self.threads / self.rate
        deadline = time.monotonic() + self.max_seconds
        i = 0
        while not self._stop.is_set() and time.monotonic() < deadline:
            began = time.monotonic()
            i += 1
            tx = transaction(n * 1_000_000 + i, rng.choice(self.customers),
                             rng.choice(self.merchants), round(rng.uniform(5, 500), 2))  # fmt: skip
            try:
                resp = session.post(self.url, json=tx, timeout=30)
                body = resp.json()
                row = (time.time(), resp.status_code, body.get("variant", ""),
                       str(body.get("model_version", "")))  # fmt: skip
            except (requests.RequestException, ValueError) as exc:
                row = (time.time(), 0, type(exc).__name__, "")
            self.results.append(row)
            self._stop.wait(max(0.0, period - (time.monotonic() - began)))

    def statuses(self) -> Counter:
        return Counter(r[1] for r in self.results)

    def failures(self) -> list[tuple[float, int, str, str]]:
        return [r for r in self.results if r[1] != 200]
