"""``shipyard monitor ...``: the inference log's traffic and drift, per model version
(the library: :mod:`shipyard.monitor`)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Any

import click

__all__ = ["monitor", "predict", "show"]


def _when(value: str | None) -> dt.datetime | None:
    if value is None:
        return None
    try:
        stamp = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not an ISO time; e.g. 2026-12-05T13:00:00Z"
        ) from None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=dt.UTC)


@click.group()
def monitor() -> None:
    """What the models served (the inference log), and drift against their training data."""


_window = [
    click.option("--hours", type=click.FloatRange(min=0.01), default=None,
                 help="the window's length (default: monitor.window_hours)"),
    click.option("--end", default=None, help="the window's end, ISO time (default: now)"),
    click.option("--labels-as-of", default=None,
                 help="live quality on the labels known by this ISO time (default: now)"),
    click.option("--json", "as_json", is_flag=True, help="print JSON"),
]  # fmt: skip


def _options(f: Any) -> Any:
    for option in reversed(_window):
        f = option(f)
    return f


@monitor.command("check")
@click.argument("model")
@_options
@click.pass_obj
def check_cmd(obj: Any, model: str, hours: float | None, end: str | None,
              labels_as_of: str | None, as_json: bool) -> None:  # fmt: skip
    """Check MODEL's recent traffic against each served version's reference profile
    and the labels known so far; log it to MLflow. Exit code 10 when it raises an
    alert (for a scheduler; errors exit 1-5)."""
    from shipyard.monitor import ALERT_EXIT_CODE, check

    result = check(obj.settings, model, end=_when(end), hours=hours, record=True,
                   labels_as_of=_when(labels_as_of))  # fmt: skip
    show(result, as_json, obj.settings)
    if result.alerts:
        raise click.exceptions.Exit(ALERT_EXIT_CODE)


@monitor.command("status")
@click.argument("model")
@_options
@click.pass_obj
def status_cmd(obj: Any, model: str, hours: float | None, end: str | None,
               labels_as_of: str | None, as_json: bool) -> None:  # fmt: skip
    """MODEL's recent traffic per version and variant, its drift, its live quality on
    the labels known so far, and its last recorded check (nothing is logged)."""
    from shipyard.monitor import check, last_check

    result = check(obj.settings, model, end=_when(end), hours=hours, record=False,
                   labels_as_of=_when(labels_as_of))  # fmt: skip
    show(result, as_json, obj.settings, last_check(obj.settings, model))


def show(result: Any, as_json: bool, settings: Any, last: dict[str, Any] | None = None, *,
         echo: Callable[[str], None] = click.echo) -> None:  # fmt: skip
    """Print a check (``shipyard.monitor.Check``) for a person, or as JSON."""
    if as_json:
        doc = result.to_dict() | ({"last_check": last} if last is not None else {})
        echo(json.dumps(doc, indent=2, default=str))
        return
    span = f"{result.start:%Y-%m-%d %H:%M} .. {result.end:%Y-%m-%d %H:%M} UTC"
    echo(f"{result.model}: {result.rows:,} records served {span}")
    if not result.rows:
        echo(f"  the inference log ({settings.inference_log_uri}) has nothing in this "
                   "window; send traffic, or widen it with --hours")  # fmt: skip
    for v in result.versions:
        variants = ", ".join(f"{k} {n:,}" for k, n in sorted(v.by_variant.items()))
        latency = (f"p50 {v.latency_p50_ms:.1f} ms, p95 {v.latency_p95_ms:.1f} ms"
                   if v.latency_p50_ms is not None else "")  # fmt: skip
        echo(f"  version {v.version}: {v.rows:,} ({variants}); errors {v.error_rate:.1%}; "
                   f"latency in the replica {latency}")  # fmt: skip
        d = v.drift
        if d is None:
            echo(f"    drift: {v.note}")
        elif not d.conclusive:
            echo(f"    drift: inconclusive, {d.rows:,} answered rows (fewer than "
                       f"{d.thresholds['min_rows']:,})")  # fmt: skip
        else:
            features = [c for c in d.columns if c.role == "feature"]
            echo(f"    drift: {len(d.drifted_features)} of {len(features)} features "
                       f"(share {d.drift_share:.2f}; dataset drift from "
                       f"{d.thresholds['drift_share']:.2f})"
                       + (f": {', '.join(d.drifted_features)}" if d.drifted_features else ""))  # fmt: skip
            top = sorted((c for c in d.columns if c.psi is not None), key=lambda c: -c.psi)[:5]
            echo("    largest PSI: " + ", ".join(f"{c.name} {c.psi:.3f}" for c in top))
            echo(f"    prediction drift: {'yes' if d.prediction_drift else 'no'}")
            for issue in d.quality_issues:
                echo(f"    quality: {issue}")
        _show_quality(v, echo)
    echo("  alerts: " + ("; ".join(result.alerts) if result.alerts else "none"))
    if result.run_id:
        echo(f"  logged to MLflow ({settings.tracking_uri}): experiment "
                   f"{settings.monitor.experiment!r}, run {result.run_id}")  # fmt: skip
    if last is not None:
        echo(f"  last recorded check: {last.get('at') or 'none'}; alerts: "
                   f"{last.get('alerts') or 'none'}")  # fmt: skip


_NAMES = {"pr_auc": "PR AUC", "roc_auc": "ROC AUC", "brier": "Brier", "ece": "ECE",
          "r2": "R2", "mae": "MAE", "rmse": "RMSE"}  # fmt: skip


def _show_quality(v: Any, echo: Callable[[str], None]) -> None:
    if not v.quality:
        echo(f"    live quality: {v.quality_note or 'no answered records'}")
        return
    echo(f"    live quality, labels known by {v.quality[0].as_of[:16]}: {v.quality_note}")
    for q in v.quality:
        shown = ", ".join(f"{_NAMES[k]} {val:.3f}" for k, val in q.metrics.items()
                          if k in _NAMES and val is not None)  # fmt: skip
        young = f", {q.labelled - q.mature:,} of them provisional" if q.mature < q.labelled else ""
        line = (f"      {q.variant}: {q.labelled:,} of {q.answered:,} answers labelled "
                f"({q.coverage:.1%}{young})" + (f"; {shown}" if shown else ""))  # fmt: skip
        if q.gate_metric and q.gate_floor is not None and q.conclusive:
            verdict = "BELOW" if q.below_floor else "above"
            line += f"; {verdict} the gate's floor ({q.gate_metric} {q.gate_floor:.3f})"
        echo(line)
        if q.note:
            echo(f"        {q.note}")


@click.command()
@click.option(
    "--batch",
    "model",
    required=True,
    metavar="MODEL[@ALIAS|/VERSION]",
    help="score a table with this registered version",
)
@click.option("--input", "input_", required=True, help="parquet file or folder, or a .csv file")
@click.option("--out", required=True, help="parquet file to write")
@click.option(
    "--timestamp-column",
    default=None,
    help="each row's time for point-in-time features (default: the contract's only datetime input)",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=1024)
@click.option(
    "--actors", type=click.IntRange(min=1), default=2, help="scoring actors, one model load each"
)
@click.option("--json", "as_json", is_flag=True, help="print the result document as JSON")
@click.pass_obj
def predict(obj: Any, model: str, input_: str, out: str, timestamp_column: str | None,
            batch_size: int, actors: int, as_json: bool) -> None:  # fmt: skip
    """Batch inference as a Ray job: a table scored on Ray Data with each row's
    point-in-time features from the Feast offline store (shipyard.batch)."""
    from shipyard import batch, workload

    argv = ["--model", model, "--input", input_, "--out", out, "--batch-size", str(batch_size),
            "--actors", str(actors)]  # fmt: skip
    if timestamp_column:
        argv += ["--timestamp-column", timestamp_column]
    result = workload.run_module(obj.settings, batch, argv, local=False, echo=click.echo)
    if as_json:
        click.echo(json.dumps(result, indent=2, default=str))
    elif result is not None:
        batch.report(argv, result, click.echo)
