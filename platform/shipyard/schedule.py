"""Schedules of the local platform: ``shipyard schedule add|list|remove|run``, and the
scheduler process that ``shipyard up`` starts (``python -m shipyard.schedule``).

A schedule runs a Shipyard command (its CLI arguments, e.g. ``train --config
retrain.yaml``), or several in order (separated by ``--then``: ``features build --then
features materialize --then train``; the first that fails ends the run), at the times of a cron expression (UTC, croniter's syntax) or every
fixed interval, and with ``if_alert=MODEL`` only when ``shipyard monitor check MODEL``
raises an alert at that time (exit code 10: drift, data quality, or live quality at or
below the gate's floor; over ``alert_hours`` of traffic, default the settings'
``monitor.window_hours``). Retraining that rolls itself out is such a schedule: the
command trains on the latest window, the gate decides, a passing version becomes
``challenger`` and the registry watch (``shipyard canary watch MODEL``) starts its
rollout, shadow first if the watch's plan says so. A run that fails is recorded with
its exit code and log, and changes nothing that serves.

Commands run as children of the scheduler with the platform's settings
(``$SHIPYARD_SETTINGS_JSON``), one at a time. The state is
``<data_root>/run/schedules.json`` (the schedules, when each last fired, their last
runs), rewritten whole under a lock; each run's output goes to
``<data_root>/logs/schedules/<name>-<time>.log``. A fire missed while the platform was
down runs once when it is back, not once per miss. On Kubernetes the chart's
``RayCronJob`` (or its ``CronJob`` fallback) takes this role.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from shipyard.errors import ALERT_EXIT_CODE, ConfigError
from shipyard.settings import SETTINGS_ENV, Settings

__all__ = [
    "Run",
    "Schedule",
    "add",
    "enable",
    "get",
    "load",
    "next_fire",
    "remove",
    "run_now",
    "serve",
    "tick",
]

KEEP_RUNS = 20
MIN_EVERY_S = 10.0
#: commands a schedule may not run: they start, stop or schedule the platform itself
REFUSED = frozenset({"up", "down", "schedule", "demo"})
#: separates the steps of a schedule's command
THEN = "--then"
Say = Callable[[str], None]


class Step(BaseModel):
    argv: list[str]
    exit_code: int | None = None


class Run(BaseModel):
    """One run of a schedule: its steps (the alert check, the command) and outcome."""

    trigger: Literal["cron", "every", "manual"]
    started_at: str
    finished_at: str | None = None
    steps: list[Step] = Field(default_factory=list)
    outcome: str = "running"  # ok | skipped (no alert) | failed: ...
    log: str = ""


class Schedule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    command: list[str] = Field(min_length=1)
    cron: str | None = None
    every_s: float | None = Field(default=None, ge=MIN_EVERY_S)
    if_alert: str | None = None
    alert_hours: float | None = Field(default=None, gt=0, le=24 * 366)
    enabled: bool = True
    created_at: str
    last_fire: str | None = None
    runs: list[Run] = Field(default_factory=list)

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        from croniter import croniter

        if value is not None and not croniter.is_valid(value):
            raise ValueError(
                f"{value!r} is not a cron expression; e.g. '0 3 * * *' (03:00 UTC daily)"
            )
        return value

    @field_validator("command")
    @classmethod
    def _command(cls, argv: list[str]) -> list[str]:
        for step in split_steps(argv):
            if not step:
                raise ValueError(f"an empty step: `{THEN}` must sit between two commands")
            if step[0] in REFUSED:
                raise ValueError(f"a schedule cannot run `shipyard {step[0]}`")
        return argv

    @property
    def steps(self) -> list[list[str]]:
        return split_steps(self.command)

    @property
    def check(self) -> list[str] | None:
        """The alert check that gates the steps, if any."""
        if not self.if_alert:
            return None
        hours = ["--hours", f"{self.alert_hours:g}"] if self.alert_hours else []
        return ["monitor", "check", self.if_alert, *hours]

    @property
    def when(self) -> str:
        every = f"every {self.every_s:g}s" if self.every_s else f"cron '{self.cron}' (UTC)"
        check = self.check
        return (every + (f", if `{' '.join(check)}` alerts" if check else "")
                + ("" if self.enabled else " [disabled]"))  # fmt: skip


class Book(BaseModel):
    schedules: dict[str, Schedule] = Field(default_factory=dict)


def split_steps(argv: list[str]) -> list[list[str]]:
    """``a b --then c`` -> ``[[a, b], [c]]``."""
    steps: list[list[str]] = [[]]
    for word in argv:
        if word == THEN:
            steps.append([])
        else:
            steps[-1].append(word)
    return steps


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _path(settings: Settings) -> Path:
    return settings.run_dir / "schedules.json"


@contextlib.contextmanager
def _book(settings: Settings, write: bool = True) -> Iterator[Book]:
    """The schedules under an exclusive lock; rewritten whole (atomically) on exit."""
    path = _path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            book = Book.model_validate_json(path.read_text()) if path.exists() else Book()
        except (ValidationError, ValueError) as exc:
            raise ConfigError(f"the schedules file {path} is damaged: {exc}",
                              hint="fix or remove it; `shipyard schedule add` recreates it") from None  # fmt: skip
        yield book
        if write:
            tmp = path.with_suffix(".tmp")
            tmp.write_text(book.model_dump_json(indent=1))
            os.replace(tmp, path)


def load(settings: Settings) -> list[Schedule]:
    with _book(settings, write=False) as book:
        return list(book.schedules.values())


def add(settings: Settings, name: str, command: list[str], *, cron: str | None = None,
        every_s: float | None = None, if_alert: str | None = None,
        alert_hours: float | None = None) -> Schedule:  # fmt: skip
    """A new schedule (a name already taken is an error: remove it first)."""
    if (cron is None) == (every_s is None):
        raise ConfigError("a schedule needs exactly one of --cron and --every")
    if alert_hours is not None and not if_alert:
        raise ConfigError("--alert-hours needs --if-alert MODEL")
    _check_command(command)
    try:
        schedule = Schedule(name=name, command=command, cron=cron, every_s=every_s,
                            if_alert=if_alert, alert_hours=alert_hours,
                            created_at=_now().isoformat())  # fmt: skip
    except ValidationError as exc:
        names = {"every_s": "--every (seconds)", "cron": "--cron", "name": "NAME",
                 "command": "COMMAND", "alert_hours": "--alert-hours"}  # fmt: skip
        raise ConfigError("; ".join(f"{names.get(str(e['loc'][0]), e['loc'][0]) if e['loc'] else 'schedule'}: "
                                    f"{e['msg'].removeprefix('Value error, ')}"
                                    for e in exc.errors())) from None  # fmt: skip
    with _book(settings) as book:
        if name in book.schedules:
            raise ConfigError(f"a schedule named {name!r} exists",
                              hint=f"`shipyard schedule remove {name}` first, or pick another name")  # fmt: skip
        book.schedules[name] = schedule
    return schedule


def _check_command(command: list[str]) -> None:
    """Each step's first word must be one of the CLI's commands."""
    from shipyard.cli import cli

    if not command:
        raise ConfigError("a schedule needs a command, e.g. `-- train --config retrain.yaml`")
    known = sorted(set(cli.commands) - REFUSED)
    for step in split_steps(command):
        if not step:
            raise ConfigError(f"an empty step in `{' '.join(command)}`",
                              hint=f"`{THEN}` separates two commands: `features build {THEN} train`")  # fmt: skip
        if step[0] not in known:
            raise ConfigError(f"`shipyard {step[0]}` is not a command a schedule can run",
                              hint=f"commands: {', '.join(known)}")  # fmt: skip


def _named(book: Book, name: str) -> Schedule:
    if name not in book.schedules:
        raise ConfigError(f"no schedule named {name!r}",
                          hint=f"schedules: {', '.join(book.schedules) or 'none'}")  # fmt: skip
    return book.schedules[name]


def get(settings: Settings, name: str) -> Schedule:
    with _book(settings, write=False) as book:
        return _named(book, name)


def enable(settings: Settings, name: str, enabled: bool = True) -> Schedule:
    """Turn a schedule's fires on or off (a run in progress finishes and is recorded)."""
    with _book(settings) as book:
        _named(book, name).enabled = enabled
        return book.schedules[name]


def remove(settings: Settings, name: str) -> Schedule:
    with _book(settings) as book:
        _named(book, name)
        return book.schedules.pop(name)


def next_fire(schedule: Schedule, after: dt.datetime) -> dt.datetime:
    """The first time the schedule fires after ``after`` (aware, UTC)."""
    if schedule.every_s:
        return after + dt.timedelta(seconds=schedule.every_s)
    from croniter import croniter

    return croniter(schedule.cron, after).get_next(dt.datetime)


def _due(schedule: Schedule, now: dt.datetime) -> bool:
    since = dt.datetime.fromisoformat(schedule.last_fire or schedule.created_at)
    return schedule.enabled and next_fire(schedule, since) <= now


def run_now(settings: Settings, name: str, *, trigger: str = "manual",
            echo: Say | None = None) -> Run:  # fmt: skip
    """Run the schedule's steps now; each one's output goes to the run's log (and to
    ``echo``). The run is recorded, whatever its outcome."""
    schedule = get(settings, name)
    started = _now()
    folder = settings.logs_dir / "schedules"
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / f"{name}-{started:%Y%m%dT%H%M%S.%fZ}.log"
    run = Run(trigger=trigger, started_at=started.isoformat(), log=str(log))  # type: ignore[arg-type]
    env = dict(os.environ) | {SETTINGS_ENV: settings.model_dump_json()}
    check = schedule.check
    with open(log, "w") as out:
        for argv in [check, *schedule.steps]:
            if argv is None:
                continue
            step = Step(argv=argv)
            run.steps.append(step)
            step.exit_code = code = _child(argv, env, out, echo)
            if argv is check and code == 0:
                run.outcome = f"skipped: `{' '.join(check)}` raised no alert"
                break
            if argv is check and code != ALERT_EXIT_CODE:
                run.outcome = f"failed: `monitor check` exited {code}"
                break
            if argv is not check:
                if code != 0:
                    run.outcome = f"failed: `shipyard {' '.join(argv)}` exited {code}"
                    break
                run.outcome = "ok"
    run.finished_at = _now().isoformat()
    with _book(settings) as book:
        if name in book.schedules:  # removed meanwhile: nothing to record on
            kept = book.schedules[name]
            kept.runs = [*kept.runs, run][-KEEP_RUNS:]
    return run


def _child(argv: list[str], env: dict[str, str], out: Any, echo: Say | None) -> int:
    out.write(f"$ shipyard {' '.join(argv)}\n")
    out.flush()
    if echo is not None:
        echo(f"$ shipyard {' '.join(argv)}")
    proc = subprocess.Popen([sys.executable, "-m", "shipyard", *argv], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    assert proc.stdout is not None
    for line in proc.stdout:
        out.write(line)
        out.flush()
        if echo is not None:
            echo(line.rstrip("\n"))
    return proc.wait()


def tick(settings: Settings, now: dt.datetime | None = None) -> list[Run]:
    """Fire each schedule that is due at ``now`` (once, however many fires it missed)."""
    now = now or _now()
    with _book(settings) as book:
        due = [s for s in book.schedules.values() if _due(s, now)]
        for s in due:
            s.last_fire = now.isoformat()
    return [run_now(settings, s.name, trigger="every" if s.every_s else "cron") for s in due]


def heartbeat_path(settings: Settings) -> Path:
    return settings.run_dir / "scheduler.heartbeat"


def serve(settings: Settings, poll_s: float = 5.0, stop: threading.Event | None = None) -> None:
    """The scheduler: a tick every ``poll_s`` seconds until stopped; a heartbeat file
    says it is alive (``shipyard status``)."""
    stop = stop or threading.Event()
    beat = heartbeat_path(settings)
    while not stop.is_set():
        beat.parent.mkdir(parents=True, exist_ok=True)
        beat.write_text(json.dumps({"pid": os.getpid(), "at": _now().isoformat()}))
        try:
            tick(settings)
        except Exception as exc:  # noqa: BLE001 - said in its log, retried next time; never dies
            print(f"scheduler: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        stop.wait(poll_s)


def main(argv: list[str] | None = None) -> int:
    from shipyard.settings import load_settings

    del argv
    serve(load_settings())
    return 0


if __name__ == "__main__":
    sys.exit(main())
