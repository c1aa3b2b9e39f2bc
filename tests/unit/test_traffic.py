"""The demo's and the tests' traffic is open loop: a slow endpoint does not lower the
offered rate, and a load that falls behind says so instead of hiding it."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from shipyard.traffic import BACKLOG, Load


class _Slow(BaseHTTPRequestHandler):
    delay_s = 0.2

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers.get("content-length", 0)))
        time.sleep(self.delay_s)
        body = json.dumps({"variant": "stable", "model_version": "1"}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def slow_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/predict"
    finally:
        server.shutdown()
        server.server_close()


def _body(i: int, rng: object) -> dict[str, int]:
    return {"i": i}


def test_a_slow_endpoint_still_gets_the_offered_rate(slow_url: str) -> None:
    # 200 ms an answer: a closed loop of 2 threads would send 10 a second, not 25
    with Load(slow_url, _body, rate=25, threads=8, max_seconds=1.2) as load:
        time.sleep(1.6)
    assert load.statuses() == {200: 30}
    assert {r[2:] for r in load.results} == {("stable", "1")}


def test_a_load_that_falls_behind_records_what_it_skipped(slow_url: str) -> None:
    with Load(slow_url, _body, rate=40, threads=1, backlog=2, max_seconds=0.5) as load:
        time.sleep(1.0)
    skipped = [r for r in load.results if r[2] == BACKLOG]
    assert skipped and all(r[1] == 0 for r in skipped)
    assert len(load.results) <= 20 and load.statuses()[200] >= 2


def test_bad_rates_are_refused() -> None:
    with pytest.raises(ValueError, match="rate"):
        Load("http://127.0.0.1:9/", _body, rate=0)
