"""Bounded traffic for a served model (the demo, the tests): a few threads sending
request bodies at a capped rate until stopped or until their time is up; every answer
is recorded as ``(time, status, variant, model_version)``. The bodies come from the
caller's ``body(i, rng)``, so the load knows no model (the fraud workload's is
``pipelines.data.requests.random_transactions``)."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import requests

__all__ = ["Body", "Load"]

#: A request body for request number ``i``, drawn with the sending thread's ``rng``.
Body = Callable[[int, random.Random], dict[str, Any]]


@dataclass
class Load:
    url: str  # .../predict
    body: Body
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
            try:
                resp = session.post(self.url, json=self.body(n * 1_000_000 + i, rng), timeout=30)
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
