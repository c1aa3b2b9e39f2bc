"""``shipyard schedule ...``: commands the local platform's scheduler runs on a cron
expression or an interval, optionally only when a monitor check alerts (the library:
:mod:`shipyard.schedule`)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import click

__all__ = ["schedule"]


@click.group()
def schedule() -> None:
    """Run commands on a schedule (retraining, monitor checks) in the local platform."""


@schedule.command("add", context_settings={"ignore_unknown_options": True})
@click.argument("name")
@click.option("--cron", default=None, help="cron expression in UTC, e.g. '0 3 * * *'")
@click.option("--every", default=None, help="a fixed interval instead, e.g. 6h, 30m (>= 10s)")
@click.option("--if-alert", "if_alert", default=None, metavar="MODEL",
              help="run only when `shipyard monitor check MODEL` raises an alert then")  # fmt: skip
@click.option("--alert-hours", type=click.FloatRange(min=0.001, max=24 * 366), default=None,
              help="the traffic that check looks at (default: monitor.window_hours)")  # fmt: skip
@click.argument("command", nargs=-1, type=click.UNPROCESSED, required=True)
@click.pass_obj
def add_cmd(obj: Any, name: str, cron: str | None, every: str | None, if_alert: str | None,
            alert_hours: float | None, command: tuple[str, ...]) -> None:  # fmt: skip
    """Add schedule NAME running `shipyard COMMAND...`; several commands run in order
    when `--then` separates them (the first that fails ends the run), e.g.

    \b
    shipyard schedule add retrain --cron '0 3 * * *' --if-alert fraud-detector \\
      -- features build --then features materialize --then train --config configs/retrain.yaml
    """
    from shipyard.canary.plan import parse_duration
    from shipyard.schedule import add, next_fire

    every_s = None
    if every is not None:
        try:
            every_s = parse_duration(every)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--every") from None
    added = add(obj.settings, name, list(command), cron=cron, every_s=every_s, if_alert=if_alert,
                alert_hours=alert_hours)  # fmt: skip
    first = next_fire(added, dt.datetime.fromisoformat(added.created_at))
    click.echo(f"schedule {name}: `shipyard {' '.join(added.command)}` {added.when}; "
               f"first at {first:%Y-%m-%d %H:%M:%S} UTC")  # fmt: skip
    _warn_if_no_scheduler(obj.settings)


def _warn_if_no_scheduler(settings: Any) -> None:
    from shipyard.local import load_state

    comp = load_state(settings).components.get("scheduler")
    if comp is None or not comp.alive():
        click.echo("note: the scheduler is not running; `shipyard up` starts it", err=True)


@schedule.command("list")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@click.pass_obj
def list_cmd(obj: Any, as_json: bool) -> None:
    """The schedules, when each fires next and how its last run went."""
    from shipyard.schedule import load, next_fire

    found = load(obj.settings)
    if as_json:
        click.echo(json.dumps([s.model_dump() for s in found], indent=2))
        return
    if not found:
        click.echo("no schedules; add one with `shipyard schedule add NAME --cron ... -- COMMAND`")
    for s in found:
        since = dt.datetime.fromisoformat(s.last_fire or s.created_at)
        last = s.runs[-1] if s.runs else None
        click.echo(f"{s.name}: `shipyard {' '.join(s.command)}` {s.when}")
        click.echo(f"  next: {next_fire(s, since):%Y-%m-%d %H:%M:%S} UTC; last run: "
                   + (f"{last.started_at[:19]} {last.outcome}" if last else "never"))  # fmt: skip
    _warn_if_no_scheduler(obj.settings)


@schedule.command("show")
@click.argument("name")
@click.pass_obj
def show_cmd(obj: Any, name: str) -> None:
    """NAME's runs (the last 20): trigger, steps and their exit codes, outcome, log."""
    from shipyard.schedule import get

    s = get(obj.settings, name)
    click.echo(f"{s.name}: `shipyard {' '.join(s.command)}` {s.when}")
    for run in s.runs or []:
        codes = ", ".join(f"{st.argv[0]} {st.argv[1] if len(st.argv) > 1 else ''}".strip()
                          + f" -> {st.exit_code}" for st in run.steps)  # fmt: skip
        click.echo(
            f"  {run.started_at[:19]} {run.trigger:<6} {run.outcome} ({codes}); log {run.log}"
        )
    if not s.runs:
        click.echo("  no runs yet")


def _switch(on: bool) -> None:
    word = "enable" if on else "disable"

    @schedule.command(word, help="Fire NAME again on its schedule." if on else
                      "Stop NAME's fires (kept, with its runs; a run in progress finishes).")  # fmt: skip
    @click.argument("name")
    @click.pass_obj
    def switch_cmd(obj: Any, name: str) -> None:
        from shipyard.schedule import enable

        enable(obj.settings, name, on)
        click.echo(f"schedule {name}: {word}d")


_switch(False)
_switch(True)


@schedule.command("remove")
@click.argument("name")
@click.pass_obj
def remove_cmd(obj: Any, name: str) -> None:
    """Remove schedule NAME (a run in progress finishes)."""
    from shipyard.schedule import remove

    remove(obj.settings, name)
    click.echo(f"removed schedule {name}")


@schedule.command("run")
@click.argument("name")
@click.pass_obj
def run_cmd(obj: Any, name: str) -> None:
    """Run schedule NAME now, here, showing its output; recorded like a scheduled run.
    Exits 0 when it succeeded or was skipped (no alert), else 1."""
    from shipyard.schedule import run_now

    run = run_now(obj.settings, name, echo=click.echo)
    click.echo(f"schedule {name}: {run.outcome}; log {run.log}")
    if run.outcome.startswith("failed"):
        raise click.exceptions.Exit(1)
