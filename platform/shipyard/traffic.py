"""Bounded traffic for a served model (the demo, the tests): requests sent open loop at
a fixed rate until stopped or until their time is up; every answer is recorded as
``(time, status, variant, model_version)``. The bodies come from the caller's
``body(i, rng)``, so the load knows no model (the fraud workload's is
``pipelines.data.requests.random_transactions``).

Open loop: a pacer thread releases request ``i`` at ``start + i / rate`` whatever the
answers of earlier ones, and up to ``threads`` senders carry them, so a slow answer
does not slow the offered rate (a closed loop of a few threads does: at 100 ms a
request, four threads cannot offer more than 40 requests a second). When every sender
is busy and ``backlog`` requests already wait, a due request is not sent and is
recorded with status 0 and ``client-backlog``: the load never hides that it fell
behind.
"""

from __future__ import annotations

import queue
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import requests

__all__ = ["BACKLOG", "Body", "Load"]

#: A request body for request number ``i``, drawn with the sending thread's ``rng``.
Body = Callable[[int, random.Random], dict[str, Any]]
BACKLOG = "client-backlog"


@dataclass
class Load:
    url: str  # .../predict
    body: Body
    rate: float = 40.0  # requests per second offered, whatever the answers
    threads: int = 16  # senders: requests in flight at most
    max_seconds: float = 240.0  # stops by itself
    backlog: int = 4096  # due requests waiting for a sender before they are skipped
    timeout_s: float = 30.0
    results: list[tuple[float, int, str, str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)
    _due: queue.Queue[int | None] = field(init=False)

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.threads < 1:
            raise ValueError(f"rate must be > 0 and threads >= 1, got {self.rate}, {self.threads}")
        self._due = queue.Queue(maxsize=self.backlog)

    def __enter__(self) -> Load:
        for n in range(self.threads):
            t = threading.Thread(target=self._send, args=(n,), daemon=True, name=f"load-{n}")
            t.start()
            self._workers.append(t)
        pacer = threading.Thread(target=self._pace, daemon=True, name="load-pacer")
        pacer.start()
        self._workers.append(pacer)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for _ in range(self.threads):  # wake the senders
            try:
                self._due.put_nowait(None)
            except queue.Full:
                break
        for t in self._workers:
            t.join(timeout=self.timeout_s)

    def _pace(self) -> None:
        start = time.monotonic()
        deadline = start + self.max_seconds
        i = 0
        while not self._stop.is_set():
            due = start + i / self.rate
            if due >= deadline:
                break
            if self._stop.wait(max(0.0, due - time.monotonic())):
                break
            try:
                self._due.put_nowait(i)
            except queue.Full:
                self.results.append((time.time(), 0, BACKLOG, ""))
            i += 1
        for _ in range(self.threads):  # time is up: the senders finish what is due, then end
            while not self._stop.is_set():
                try:
                    self._due.put(None, timeout=0.2)
                    break
                except queue.Full:
                    continue

    def _send(self, n: int) -> None:
        rng = random.Random(n)
        session = requests.Session()
        while True:
            try:
                i = self._due.get(timeout=0.2)
            except queue.Empty:
                if self._stop.is_set():
                    return
                continue
            if i is None or self._stop.is_set():
                return
            try:
                resp = session.post(self.url, json=self.body(i, rng), timeout=self.timeout_s)
                body = resp.json()
                row = (time.time(), resp.status_code, body.get("variant", ""),
                       str(body.get("model_version", "")))  # fmt: skip
            except (requests.RequestException, ValueError) as exc:
                row = (time.time(), 0, type(exc).__name__, "")
            self.results.append(row)

    def statuses(self) -> Counter:
        return Counter(r[1] for r in self.results)

    def failures(self) -> list[tuple[float, int, str, str]]:
        return [r for r in self.results if r[1] != 200]
