"""The monitor's summary of a log window: traffic per version and variant, errors,
latency, and drift against each version's own reference (the same report
``shipyard.drift.compare`` gives on the rows that version answered)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
from shipyard.drift import compare, profile_frame
from shipyard.inference_log import InferenceLog, LogConfig, read_log
from shipyard.monitor import summarize, window
from shipyard.settings import defaults

END = dt.datetime(2026, 12, 5, 12, tzinfo=dt.UTC)


def _serve(log: InferenceLog, version: str, amounts: np.ndarray, errors: int = 0) -> None:
    n = len(amounts)
    rows = [{"transaction_id": f"v{version}-{i}", "customer_id": f"c{i}"} for i in range(n)]
    columns = {"amount": amounts}
    answers: list[dict] = [{"score": float(a) / 1000, "model_version": version,
                            "features_missing": []} for a in amounts]  # fmt: skip
    for i in range(errors):
        answers[i] = {"error": "model version failed: boom", "model_version": version,
                      "status": 500}  # fmt: skip
    at = (END - dt.timedelta(hours=1)).timestamp()
    log.add(version, rows, columns, answers, [at + i / n for i in range(n)], [2.0 + i % 5 for i in range(n)])  # fmt: skip


def test_a_window_is_summarized_per_version_with_its_own_reference(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    uri = str(tmp_path / "log")
    stable = InferenceLog(LogConfig(uri=uri), "m", "stable", "a")
    canary = InferenceLog(LogConfig(uri=uri), "m", "canary", "b")
    _serve(stable, "1", rng.lognormal(3, 1, 900), errors=9)
    _serve(canary, "2", rng.lognormal(3, 1, 600) * 4)  # version 2 sees larger amounts
    stable.flush(), canary.flush()
    training = pd.DataFrame({"amount": rng.lognormal(3, 1, 5000)})
    training["score"] = training["amount"] / 1000
    profile = profile_frame(training, ["amount"], ["score"])
    start, end = window(END, 24)
    rows = read_log(uri, "m", start, end)
    result = summarize("m", rows, start, end, {"1": profile, "2": profile}.get, defaults())
    one, two = result.versions
    assert (one.version, one.rows, one.by_variant) == ("1", 900, {"stable": 900})
    assert (two.version, two.rows, two.by_variant) == ("2", 600, {"canary": 600})
    assert one.error_rate == 0.01 and two.error_rate == 0
    assert one.latency_p50_ms == 4.0 and one.latency_p95_ms == 6.0
    assert not one.drift.dataset_drift and two.drift.dataset_drift and two.drift.prediction_drift
    ok = rows[(rows["model_version"] == "1") & (rows["status"] == 200)]
    assert one.drift.drift_share == compare(profile, ok).drift_share
    assert one.drift.rows == 891  # drift is measured on answered records only
    assert result.alerts == [f"version 2: {a}" for a in two.drift.alerts] and result.alerts
    doc = result.to_dict()
    assert doc["versions"][1]["drift"]["dataset_drift"] and doc["alerts"] == result.alerts


def test_a_version_without_a_reference_is_reported_not_checked(tmp_path: Path) -> None:
    log = InferenceLog(LogConfig(uri=str(tmp_path)), "m", "stable", "a")
    _serve(log, "7", np.ones(10))
    log.flush()
    start, end = window(END, 24)
    result = summarize("m", read_log(str(tmp_path), "m", start, end), start, end,
                       lambda v: None, defaults())  # fmt: skip
    assert result.versions[0].drift is None and "without a reference" in result.versions[0].note
    assert result.alerts == []
    empty = summarize("m", read_log(str(tmp_path), "m", END, END), END, END, lambda v: None,
                      defaults())  # fmt: skip
    assert empty.rows == 0 and empty.versions == []


def test_alerts_are_posted_to_the_webhook_and_a_failing_one_is_an_error() -> None:
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    import pytest
    from shipyard.errors import ConfigError
    from shipyard.monitor import Check, _notify

    got: list[dict] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            got.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(500 if got[-1]["model"] == "broken" else 204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/alerts"
    try:
        _notify(url, Check("m", END - dt.timedelta(hours=1), END, 10, run_id="r1"))
        assert got[0] == {"model": "m", "window": [(END - dt.timedelta(hours=1)).isoformat(),
                                                   END.isoformat()], "alerts": [], "run_id": "r1"}  # fmt: skip
        with pytest.raises(ConfigError, match="webhook"):
            _notify(url, Check("broken", END, END, 0))
    finally:
        server.shutdown()


def test_the_gauges_summary_round_trips_beside_a_log_that_still_reads(tmp_path: Path) -> None:
    from shipyard.monitor import _write_gauges, gauges, gauges_path, read_gauges

    rng = np.random.default_rng(1)
    uri = str(tmp_path / "log")
    log = InferenceLog(LogConfig(uri=uri), "m", "stable", "a")
    _serve(log, "1", rng.lognormal(3, 1, 600))
    log.flush()
    training = pd.DataFrame({"amount": rng.lognormal(3, 1, 5000)})
    training["score"] = training["amount"] / 1000
    start, end = window(END, 24)
    rows = read_log(uri, "m", start, end)
    result = summarize("m", rows, start, end, lambda v: profile_frame(training, ["amount"], ["score"]),
                       defaults())  # fmt: skip
    path = gauges_path(uri, "m")
    assert read_gauges(path) is None
    _write_gauges(path, gauges(result))
    doc = read_gauges(path)
    assert doc["at"] == END.isoformat() and doc["versions"]["1"]["alerts"] == 0
    assert doc["versions"]["1"]["drift_share"] == result.versions[0].drift.drift_share
    assert len(read_log(uri, "m", start, end)) == 600  # the log's readers skip _monitor/
