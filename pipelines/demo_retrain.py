"""The last act of ``make demo``: the world shifts, the monitor notices, and retraining
rolls itself out.

New data arrives in which new merchants have opened and taken a share of the spending
and amounts have grown (``pipelines.data.generate.extend`` with a ``Shift``); its first
days are replayed to the fraud model, which was trained on the old world, and
`shipyard monitor status` shows the drift alert. A schedule (`shipyard schedule add
retrain --if-alert ...`), run now rather than waiting for its time, checks for that
alert and runs the retraining pipeline: features build, materialize, and training on
the latest window (configs/retrain.yaml); the gate decides, the passing version becomes
``challenger``, and the registry watch (`shipyard canary watch`) rolls it out, a shadow
phase first, under the shifted traffic. `monitor status` then shows the new version's
traffic held against its own training data.

It runs after the rest of the demo, or on its own against a running demo platform:
``python -m pipelines.demo_retrain`` (the data is extended each time).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
from shipyard import monitor
from shipyard import schedule as schedules
from shipyard.canary import client as rollouts
from shipyard.canary import parse_plan
from shipyard.cli_monitor import show
from shipyard.errors import ShipyardError
from shipyard.settings import Settings
from shipyard.traffic import Load

from pipelines.data.generate import Shift, extend
from pipelines.data.requests import replayed

Say = Callable[[str], None]
PROJECT = Path(__file__).resolve().parents[1]
SHIFT = Shift(new_merchants=150, new_share=0.5, amount_scale=2.5)
SHIFT_DAYS = 35  # the retraining window (configs/retrain.yaml) lies inside the shift
REPLAY_DAYS = 4  # the shift's first days are what the clients send
SCHEDULE = "retrain"


def _shifted(raw: Path, since: dt.datetime) -> pd.DataFrame:
    """The shift's first ``REPLAY_DAYS`` days of transactions, in time order."""
    from pipelines.demo_serving import _traffic

    _, _, held = _traffic(raw, since)  # from ``since`` on, sorted by time
    return held[held["timestamp"] < pd.Timestamp(since) + pd.Timedelta(days=REPLAY_DAYS)]


def _hours_since(began: float) -> float:
    return max((time.monotonic() - began) / 3600 + 1 / 3600, 0.001)


def _wait_for_rollout(settings: Settings, model: str, old: set[str],
                      timeout: float = 180.0) -> None:  # fmt: skip
    """Until the watch has started a rollout of a version not in ``old``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = rollouts.status(settings, model)
        if state.get("canary_version") not in old:
            return
        refused = [d for d in state.get("decisions") or [] if d.get("action") == "refused"]
        if refused and "watch" in refused[-1].get("reason", ""):
            raise ShipyardError(f"the registry watch refused: {refused[-1]['reason']}")
        time.sleep(1.0)
    raise TimeoutError(f"the registry watch started no rollout of {model} in {timeout:.0f}s")


def run_retrain(settings: Settings, model: str, url: str, say: Say, echo: Say,
                quiet: Say, first: int, total: int) -> dict[str, Any]:  # fmt: skip
    from pipelines.demo_serving import _failed, _follow

    raw = settings.raw_data_dir
    say(f"[{first}/{total}] the world shifts: {SHIFT.new_merchants} new merchants take "
        f"{SHIFT.new_share:.0%} of the spending and amounts grow {SHIFT.amount_scale:g}x")  # fmt: skip
    added = extend(raw, SHIFT_DAYS, shift=SHIFT)
    since = dt.datetime.fromisoformat(added.config["start"])
    say(f"      {added.rows:,} new transactions from {since:%Y-%m-%d}, {SHIFT_DAYS} days "
        f"({added.fraud_rows:,} fraud); the clients replay the first {REPLAY_DAYS} days")  # fmt: skip
    body = replayed(_shifted(raw, since))
    state = rollouts.status(settings, model)
    stable = state["serving"]["stable_version"]
    old = {stable, state.get("canary_version")}
    began = time.monotonic()
    with Load(url, body, rate=40, threads=16, max_seconds=45) as load:
        time.sleep(45)
    say(f"      clients: {len(load.results)} requests, {_failed(load.results)}, "
        f"served by version {stable}")  # fmt: skip
    time.sleep(settings.monitor.log_flush_interval_s + 1)  # the replicas' last log writes
    hours = _hours_since(began)
    say(f"      `shipyard monitor status {model} --hours {hours:.3f}` (this act's traffic):")
    before = monitor.check(settings, model, hours=hours, record=False)
    show(before, False, settings, echo=echo)
    if not before.alerts:
        raise ShipyardError(f"the shifted traffic raised no alert on {model}",
                            hint=f"see `shipyard monitor status {model}`")  # fmt: skip

    say(f"[{first + 1}/{total}] retraining that rolls itself out: a schedule that retrains when "
        "the monitor alerts, and the registry watch (shadow first, then 50%, 100%)")  # fmt: skip
    plan = parse_plan(steps="50,100", interval="8s", min_requests=20, max_latency_ratio=2.0,
                      shadow=50)  # fmt: skip
    rollouts.watch(settings, model, plan)
    say(f"      `shipyard canary watch {model} --shadow 50 --steps 50,100 --interval 8s`")
    config = PROJECT / "configs" / "retrain.yaml"
    command = ["features", "build", schedules.THEN, "features", "materialize", schedules.THEN,
               "train", "--config", str(config)]  # fmt: skip
    if SCHEDULE in {s.name for s in schedules.load(settings)}:
        schedules.remove(settings, SCHEDULE)
    alert_hours = _hours_since(began) + 0.005  # the check runs within seconds
    added_schedule = schedules.add(settings, SCHEDULE, command, every_s=86_400,
                                   if_alert=model, alert_hours=alert_hours)  # fmt: skip
    say(f"      `shipyard schedule add {SCHEDULE} --every 1d --if-alert {model} --alert-hours "
        f"{alert_hours:.3f} -- {' '.join(command)}`")  # fmt: skip
    say(f"      `shipyard schedule run {SCHEDULE}`: now, instead of in a day")
    run = schedules.run_now(settings, SCHEDULE, echo=_progress(say, quiet))
    say(f"      the run: {run.outcome} ({len(run.steps)} steps; log {run.log})")
    if run.outcome != "ok":
        raise ShipyardError(f"the retraining schedule failed: {run.outcome}", hint=f"see {run.log}")
    retrained = _latest_version(settings, model)
    if retrained.get("gate.passed") != "True":
        raise ShipyardError(f"the gate refused the retrained {model}: {retrained.get('gate.reason')}",
                            hint=f"see {run.log}")  # fmt: skip
    with Load(url, body, rate=40, threads=16, max_seconds=600) as load:
        _wait_for_rollout(settings, model, old)
        rolled = _follow(settings, model, echo)
        promoted_at = time.monotonic()
        time.sleep(45)  # about a day of the replayed transactions: a representative window
    say(f"      clients during the rollout: {len(load.results)} requests, {_failed(load.results)}")
    rollouts.watch(settings, model, plan, enabled=False)
    schedules.enable(settings, SCHEDULE, False)
    say(f"      the watch and the schedule are off again: `shipyard canary watch {model}` and "
        f"`shipyard schedule enable {SCHEDULE}` turn them on")  # fmt: skip
    if rolled.get("status") != "promoted":
        raise ShipyardError(f"the retrained version of {model} was not promoted: "
                            f"{rolled.get('status')}", hint=f"`shipyard canary status {model}`")  # fmt: skip
    time.sleep(settings.monitor.log_flush_interval_s + 1)
    hours = _hours_since(promoted_at)
    say(f"      `shipyard monitor status {model} --hours {hours:.3f}` (since the promotion):")
    after = monitor.check(settings, model, hours=hours, record=True)
    show(after, False, settings, echo=echo)
    return {"model": model, "schedule": added_schedule.name, "run": run.model_dump(), "rollout": rolled,
            "before": before.to_dict(), "after": after.to_dict(), "stable": stable}  # fmt: skip


def summary(result: dict[str, Any], echo: Say) -> None:
    rolled = result["rollout"]
    before = {v["version"]: v for v in result["before"]["versions"]}
    after = {v["version"]: v for v in result["after"]["versions"]}
    old, new = result["stable"], rolled.get("canary_version")

    def share(doc: dict[str, Any], version: str | None) -> str:
        drift = (doc.get(version or "") or {}).get("drift") or {}
        value = drift.get("drift_share")
        return "-" if value is None else f"{value:.0%}"

    echo(f"  shifted world   version {old}: {len(result['before']['alerts'])} alert(s) "
         f"(drifted inputs {share(before, old)}); schedule `{result['schedule']}` retrained: "
         f"{result['run']['outcome']}")  # fmt: skip
    echo(f"  retrained       version {new}: {rolled.get('status')} after a shadow phase and "
         f"{sum(d['action'] == 'check_passed' for d in rolled.get('decisions') or [])} passed "
         f"checks; since: {len(result['after']['alerts'])} alert(s) (drifted inputs "
         f"{share(after, new)})")  # fmt: skip
    echo(f"  try: shipyard schedule list; shipyard monitor status {result['model']}")


def _latest_version(settings: Settings, model: str) -> dict[str, str]:
    """The newest registered version's tags, and its number as ``version``."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=settings.tracking_uri)
    found = client.search_model_versions(f"name = '{model}'", order_by=["version_number DESC"],
                                         max_results=1)  # fmt: skip
    if not found:
        return {}
    return dict(found[0].tags or {}) | {"version": str(found[0].version)}


def _progress(say: Say, quiet: Say) -> Say:
    """The schedule run's output: the steps and the trainer's milestones, not every line."""

    def show_line(line: str) -> None:
        text = line.strip()
        if text.startswith("$ shipyard") or text.startswith("[train"):
            say("      " + text)
        elif text.startswith(("RESULT", "registered  ", "gate  ")):
            return
        elif any(k in text for k in ("accepted", "materialized", "gate", "alerts:")):
            quiet("        " + text)

    return show_line


def main(argv: list[str] | None = None) -> int:
    """The act on its own, against a running demo platform."""
    import sys

    from shipyard.settings import load_settings

    from pipelines.demo import _quiet

    del argv
    from shipyard import serving

    settings = load_settings()
    routes = {a["application"]: a["route"] for a in serving.serve_status(settings)}
    url = routes.get("fraud-detector")
    if not url:
        print("the fraud model is not served: run `make demo` first", file=sys.stderr)
        return 1

    def say(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    run_retrain(settings, "fraud-detector", f"{url}/predict", say, print, _quiet(print), 1, 2)
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
