"""Schedules (``shipyard.schedule``): when they fire, what a run records, and the
commands and expressions they refuse. Runs start the real CLI as child processes."""

from __future__ import annotations

import datetime as dt
import socket
import threading
from pathlib import Path

import pytest
from shipyard.errors import ConfigError
from shipyard.schedule import (
    add,
    enable,
    heartbeat_path,
    load,
    next_fire,
    remove,
    run_now,
    serve,
    tick,
)
from shipyard.settings import Settings

T0 = dt.datetime(2026, 12, 5, 10, 0, tzinfo=dt.UTC)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    with socket.socket() as s:  # a port nothing listens on: MLflow is "down"
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return Settings(data_root=tmp_path, mlflow={"port": port})


def test_cron_and_interval_fire_times() -> None:
    from shipyard.schedule import Schedule

    nightly = Schedule(name="n", command=["train"], cron="0 3 * * *", created_at=T0.isoformat())
    assert next_fire(nightly, T0) == dt.datetime(2026, 12, 6, 3, 0, tzinfo=dt.UTC)
    hourly = Schedule(name="h", command=["train"], every_s=3600, created_at=T0.isoformat())
    assert next_fire(hourly, T0) == T0 + dt.timedelta(hours=1)


@pytest.mark.parametrize(
    ("kwargs", "command", "word"),
    [({"cron": "61 * * * *"}, ["train"], "is not a cron expression"),
     ({"every_s": 2}, ["train"], "--every"),
     ({}, ["train"], "exactly one of --cron and --every"),
     ({"cron": "* * * * *", "every_s": 60}, ["train"], "exactly one"),
     ({"every_s": 60}, ["up"], "not a command a schedule can run"),
     ({"every_s": 60}, ["schedule", "list"], "not a command a schedule can run"),
     ({"every_s": 60}, ["trian"], "commands: canary")],
)  # fmt: skip
def test_bad_schedules_are_refused_naming_what_is_wrong(
    settings: Settings, kwargs: dict, command: list[str], word: str
) -> None:
    with pytest.raises(ConfigError, match=word):
        add(settings, "s", command, **kwargs)
    assert load(settings) == []


def test_a_missed_schedule_fires_once_and_records_its_run(settings: Settings) -> None:
    add(settings, "often", ["canary", "--help"], every_s=60)
    with pytest.raises(ConfigError, match="exists"):
        add(settings, "often", ["train"], every_s=60)
    created = dt.datetime.fromisoformat(load(settings)[0].created_at)
    assert tick(settings, created + dt.timedelta(seconds=30)) == []  # not due yet
    runs = tick(settings, created + dt.timedelta(hours=5))  # 300 fires missed: one run
    assert [r.outcome for r in runs] == ["ok"] and runs[0].trigger == "every"
    (kept,) = load(settings)
    assert kept.last_fire == (created + dt.timedelta(hours=5)).isoformat()
    assert kept.runs[-1].steps[0].exit_code == 0 and "Usage: shipyard canary" in Path(
        kept.runs[-1].log).read_text()  # fmt: skip
    assert tick(settings, created + dt.timedelta(hours=5, seconds=30)) == []
    enable(settings, "often", False)
    assert tick(settings, created + dt.timedelta(days=2)) == []  # disabled: no fire
    assert "[disabled]" in load(settings)[0].when


def test_a_failing_command_or_alert_check_is_recorded_and_stops_the_run(settings: Settings) -> None:
    add(settings, "broken", ["train", "--no-such-option"], every_s=60)
    run = run_now(settings, "broken")
    assert run.outcome == "failed: `shipyard train --no-such-option` exited 2"
    assert run.trigger == "manual"
    add(settings, "guarded", ["canary", "--help"], every_s=60, if_alert="fraud")
    guarded = run_now(settings, "guarded")  # MLflow is down: the check fails, nothing trains
    assert guarded.outcome == "failed: `monitor check` exited 3"
    assert [s.argv for s in guarded.steps] == [["monitor", "check", "fraud"]]
    assert "not reachable" in Path(guarded.log).read_text()
    assert remove(settings, "broken").name == "broken"
    with pytest.raises(ConfigError, match="no schedule named 'broken'"):
        run_now(settings, "broken")
    assert [s.name for s in load(settings)] == ["guarded"]


def test_the_scheduler_loop_beats_and_stops(settings: Settings) -> None:
    stop = threading.Event()
    loop = threading.Thread(target=serve, args=(settings, 0.05, stop))
    loop.start()
    try:
        for _ in range(100):
            if heartbeat_path(settings).exists():
                break
            threading.Event().wait(0.05)
        assert heartbeat_path(settings).exists()
    finally:
        stop.set()
        loop.join(10)
    assert not loop.is_alive()


def test_steps_run_in_order_until_one_fails_and_the_alert_window_is_passed_on(
    settings: Settings,
) -> None:
    from shipyard.schedule import THEN, split_steps

    assert split_steps(["a", "b", THEN, "c"]) == [["a", "b"], ["c"]]
    add(settings, "chain", ["canary", "--help", THEN, "train", "--no-such-option", THEN,
                            "models", "--help"], every_s=60)  # fmt: skip
    run = run_now(settings, "chain")
    assert [s.argv for s in run.steps] == [["canary", "--help"], ["train", "--no-such-option"]]
    assert [s.exit_code for s in run.steps] == [0, 2]  # the third never ran
    assert run.outcome == "failed: `shipyard train --no-such-option` exited 2"
    add(settings, "fine", ["canary", "--help", THEN, "models", "--help"], every_s=60)
    seen: list[str] = []
    assert run_now(settings, "fine", echo=seen.append).outcome == "ok"
    assert "$ shipyard models --help" in seen and "Usage: shipyard models" in "\n".join(seen)
    add(settings, "gated", ["train"], every_s=60, if_alert="fraud", alert_hours=0.5)
    (gated,) = [s for s in load(settings) if s.name == "gated"]
    assert gated.check == ["monitor", "check", "fraud", "--hours", "0.5"]
    assert "if `monitor check fraud --hours 0.5` alerts" in gated.when
    for command, word in [(["train", THEN], "empty step"), ([THEN, "train"], "empty step"),
                          (["train", THEN, "down"], "not a command a schedule can run")]:  # fmt: skip
        with pytest.raises(ConfigError, match=word):
            add(settings, "bad", command, every_s=60)
    with pytest.raises(ConfigError, match="--alert-hours needs --if-alert"):
        add(settings, "bad", ["train"], every_s=60, alert_hours=1)
