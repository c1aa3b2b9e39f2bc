"""``shipyard monitor check|status``: what a model served, and whether it still looks
like what it was trained on.

``check`` reads a window of the inference log (``shipyard.inference_log``), and for
each model version served in it holds the rows against that version's reference
profile (``shipyard.drift``, saved at registration) and, when the version names where
its labels arrive, against the labels known so far (``shipyard.quality``: live PR AUC,
ROC AUC, calibration and coverage per variant, and the gate's floor). Each check is
logged to MLflow, in one monitoring run per model (experiment ``monitor.experiment``):
a metric per window end (rows, error rate, latency, the drift share, each column's
PSI), the live-quality metrics at the labels' clock (a step per day), the report and a
plot of the quality as labels arrived. Alerts (dataset drift, prediction drift, data
quality, live quality at or below the gate's floor) go to the log, to the CLI's exit
code (:data:`ALERT_EXIT_CODE`) for a scheduler, and to ``monitor.webhook_url`` as JSON
when one is set. ``status`` shows the same without recording it, and the last check.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from shipyard.drift import DriftReport, Profile, compare
from shipyard.errors import ALERT_EXIT_CODE, ConfigError
from shipyard.inference_log import read_log
from shipyard.quality import Quality
from shipyard.settings import Settings

__all__ = [
    "ALERT_EXIT_CODE",
    "Check",
    "VersionCheck",
    "check",
    "gauges",
    "gauges_path",
    "last_check",
    "read_gauges",
    "summarize",
    "window",
]

log = logging.getLogger(__name__)


@dataclass
class VersionCheck:
    """One model version's traffic in the window, and its drift against its reference."""

    version: str
    rows: int
    by_variant: dict[str, int]
    error_rate: float
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    drift: DriftReport | None  # None: registered without a reference profile
    note: str = ""
    quality: list[Quality] = field(default_factory=list)  # per variant, on its labels
    quality_note: str = ""

    @property
    def alerts(self) -> list[str]:
        found = [
            *(self.drift.alerts if self.drift else []),
            *(a for q in self.quality for a in q.alerts),
        ]
        return [f"version {self.version}: {a}" for a in found]


@dataclass
class Check:
    model: str
    start: dt.datetime
    end: dt.datetime
    rows: int
    versions: list[VersionCheck] = field(default_factory=list)
    run_id: str | None = None

    @property
    def alerts(self) -> list[str]:
        return [a for v in self.versions for a in v.alerts]

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["start"], doc["end"] = self.start.isoformat(), self.end.isoformat()
        for v, version in zip(doc["versions"], self.versions, strict=True):
            v["alerts"] = version.alerts
            v["quality"] = [q.to_dict() for q in version.quality]
            if version.drift is not None:
                v["drift"]["alerts"] = version.drift.alerts
        doc["alerts"] = self.alerts
        return doc


def window(end: dt.datetime | None, hours: float) -> tuple[dt.datetime, dt.datetime]:
    end = end or dt.datetime.now(dt.UTC)
    end = end if end.tzinfo else end.replace(tzinfo=dt.UTC)
    return end - dt.timedelta(hours=hours), end


def summarize(model: str, rows: pd.DataFrame, start: dt.datetime, end: dt.datetime,
              profile_for: Callable[[str], Profile | None],
              settings: Settings) -> Check:  # fmt: skip
    """The check of ``rows`` (log rows of the window): per version served, its traffic
    and, on the rows it answered (status 200), its drift against ``profile_for(v)``."""
    out = Check(model, start, end, len(rows))
    if rows.empty:
        return out
    for version, part in rows.groupby(rows["model_version"].astype(str), sort=True):
        ok = part[part["status"] == 200]
        latency = part["latency_ms"].to_numpy(dtype=float)
        profile = profile_for(str(version))
        drift = compare(profile, ok, settings.monitor.drift) if profile is not None else None
        out.versions.append(VersionCheck(
            version=str(version), rows=len(part),
            by_variant={str(k): int(v) for k, v in part["variant"].value_counts().items()},
            error_rate=float((part["status"] >= 500).mean()),
            latency_p50_ms=float(np.percentile(latency, 50)) if len(latency) else None,
            latency_p95_ms=float(np.percentile(latency, 95)) if len(latency) else None,
            drift=drift,
            note="" if profile is not None else "registered without a reference profile: no "
            "drift check (pass reference= to shipyard.contract.register_model)",
        ))  # fmt: skip
    return out


def check(settings: Settings, model: str, *, end: dt.datetime | None = None,
          hours: float | None = None, record: bool = True,
          labels_as_of: dt.datetime | None = None) -> Check:  # fmt: skip
    """Check the model's last ``hours`` of traffic (default: ``monitor.window_hours``)
    up to ``end`` (default: now), its live quality on the labels known by
    ``labels_as_of`` (default: now); ``record``: log it to MLflow and notify the webhook."""
    from mlflow import MlflowClient

    from shipyard.contract import read_reference_profile
    from shipyard.registry import check_server

    check_server(settings.tracking_uri)  # profiles and records live there: one clear error
    start, end = window(end, hours or settings.monitor.window_hours)
    rows = read_log(settings.inference_log_uri, model, start, end)
    client = MlflowClient(tracking_uri=settings.tracking_uri)
    tags: dict[str, dict[str, str]] = {}  # each version's, read once

    def tags_of(version: str) -> dict[str, str]:
        if version not in tags:
            tags[version] = client.get_model_version(model, version).tags or {}
        return tags[version]

    def profile_for(version: str) -> Profile | None:
        return read_reference_profile(settings.tracking_uri, model, version, tags_of(version))

    result = summarize(model, rows, start, end, profile_for, settings)
    clock = labels_as_of or dt.datetime.now(dt.UTC)
    clock = clock if clock.tzinfo else clock.replace(tzinfo=dt.UTC)
    _live_quality(settings, result, rows, clock, tags_of)
    if record:
        result.run_id = _record(settings, result)
        for alert in result.alerts:
            log.warning("%s: %s", model, alert)
        if result.alerts and settings.monitor.webhook_url:
            _notify(settings.monitor.webhook_url, result)
    return result


def _live_quality(settings: Settings, result: Check, rows: pd.DataFrame, clock: dt.datetime,
                  tags_of: Callable[[str], dict[str, str]]) -> None:  # fmt: skip
    """Each version's quality on the labels known by ``clock``, where its registration
    says where they arrive (``shipyard.labels``); its gate from its ``gate.*`` tags."""
    from shipyard.contract import TAG, label_spec
    from shipyard.quality import assess, read_labels, resolve_source

    labels: dict[tuple[str, str], pd.DataFrame] = {}
    for v in result.versions:
        tags = tags_of(v.version)
        raw = tags.get(f"{TAG}labels")
        if not raw:
            v.quality_note = ("registered without a label source: no live quality (register "
                              "with labels=LabelSpec(...), shipyard.contract)")  # fmt: skip
            continue
        spec = label_spec(raw, f"{result.model} version {v.version}: tag {TAG}labels")
        uri = resolve_source(spec, result.model, settings.data_root, settings.monitor.label_sources)
        part = rows[rows["model_version"].astype(str) == v.version]
        cache = (uri, spec.model_dump_json())
        if cache not in labels:
            keys = rows[spec.key].dropna().unique() if spec.key in rows.columns else []
            labels[cache] = read_labels(uri, spec, keys)
        floor = tags.get("gate.floor")
        gate = (tags.get("gate.metric") or None, float(floor) if floor else None)
        v.quality = assess(part, labels[cache], spec, clock, version=v.version, gate=gate,
                           min_labels=settings.monitor.quality_min_labels)  # fmt: skip
        v.quality_note = f"labels from {uri} ({spec.label} by {spec.key})"


def _find_run(client: Any, exp_id: str, model: str) -> Any:
    found = client.search_runs([exp_id], filter_string=f"tags.`shipyard.monitor.model` = '{model}'",
                               max_results=1, order_by=["attributes.start_time ASC"])  # fmt: skip
    return found[0] if found else None


def _run_for(client: Any, experiment: str, model: str) -> str:
    """The model's monitoring run: one per model, found by its tag, created once."""
    exp = client.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp is not None else client.create_experiment(experiment)
    found = _find_run(client, exp_id, model)
    if found is not None:
        return found.info.run_id
    run = client.create_run(exp_id, run_name=f"monitor {model}",
                            tags={"shipyard.monitor.model": model})  # fmt: skip
    return run.info.run_id


def last_check(settings: Settings, model: str) -> dict[str, Any]:
    """The last recorded check of ``model``: its window's end, alerts and run."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=settings.tracking_uri)
    exp = client.get_experiment_by_name(settings.monitor.experiment)
    run = _find_run(client, exp.experiment_id, model) if exp is not None else None
    if run is None:
        return {"at": None, "alerts": None, "run_id": None}
    tags = run.data.tags
    return {"at": tags.get("shipyard.monitor.last_check"),
            "alerts": tags.get("shipyard.monitor.alerts"), "run_id": run.info.run_id}  # fmt: skip


def _record(settings: Settings, result: Check) -> str:
    """Metrics at the window's end (step: hours since the epoch, so that checks of the
    same hour replace each other), and the report as ``checks/<end>.json``."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    client = MlflowClient(tracking_uri=settings.tracking_uri)
    run_id = _run_for(client, settings.monitor.experiment, result.model)
    at = int(result.end.timestamp() * 1000)
    step = int(result.end.timestamp() // 3600)
    metrics = {"rows": float(result.rows)}
    for v in result.versions:
        p = f"v{v.version}."
        metrics |= {p + "rows": v.rows, p + "error_rate": v.error_rate}
        if v.latency_p95_ms is not None:
            metrics[p + "latency_p95_ms"] = v.latency_p95_ms
        if v.drift is not None and v.drift.conclusive:
            metrics |= {p + "drift_share": v.drift.drift_share,
                        p + "dataset_drift": float(v.drift.dataset_drift),
                        p + "prediction_drift": float(v.drift.prediction_drift)}  # fmt: skip
            for c in v.drift.columns:
                if c.psi is not None:
                    metrics[f"{p}psi.{c.name}"] = c.psi
    batch = [Metric(_metric_name(k), float(val), at, step) for k, val in metrics.items()]
    quality = [q for v in result.versions for q in v.quality]
    if quality:
        clock = pd.Timestamp(quality[0].as_of)
        q_at, q_step = int(clock.timestamp() * 1000), int(clock.timestamp() // 86400)
        for q in quality:
            p = f"v{q.version}.{q.variant}.live_"
            values = {"coverage": q.coverage, "labelled": q.labelled, **q.metrics}
            batch += [Metric(_metric_name(p + k), float(val), q_at, q_step)
                      for k, val in values.items() if val is not None]  # fmt: skip
    client.log_batch(run_id, metrics=batch)
    stamp = result.end.strftime("%Y%m%dT%H%M%SZ")
    client.log_text(run_id, json.dumps(result.to_dict(), indent=1, default=str),
                    f"checks/{stamp}.json")  # fmt: skip
    if any(q.daily for q in quality):
        _plot_quality(client, run_id, result.model, quality, f"quality/{stamp}.png")
    _write_gauges(gauges_path(settings.inference_log_uri, result.model), gauges(result))
    client.set_tag(run_id, "shipyard.monitor.alerts", "; ".join(result.alerts)[:4000] or "none")
    client.set_tag(run_id, "shipyard.monitor.last_check", result.end.isoformat())
    return run_id


def gauges_path(log_uri: str, model: str) -> str:
    """Where the last recorded check's summary lies, for the routers' gauges: next to
    the model's inference log (``_monitor/``: the log's readers skip it)."""
    from shipyard.inference_log import log_path

    return f"{log_path(log_uri, model)}/_monitor/gauges.json"


def gauges(result: Check) -> dict[str, Any]:
    """The check's figures that the routers export as Ray metrics."""
    versions: dict[str, Any] = {}
    for v in result.versions:
        drift = v.drift.drift_share if v.drift is not None and v.drift.conclusive else None
        quality = {q.variant: {**{k: val for k, val in q.metrics.items() if val is not None},
                               "coverage": q.coverage} for q in v.quality}  # fmt: skip
        versions[v.version] = {"alerts": len(v.alerts), "drift_share": drift, "quality": quality}
    return {"at": result.end.isoformat(), "model": result.model, "versions": versions}


def _write_gauges(path: str, doc: dict[str, Any]) -> None:
    from pyarrow import fs

    filesystem, where = fs.FileSystem.from_uri(path)
    folder = where.rsplit("/", 1)[0]
    filesystem.create_dir(folder, recursive=True)
    tmp = f"{folder}/.gauges.json.tmp"
    with filesystem.open_output_stream(tmp) as out:
        out.write(json.dumps(doc).encode())
    filesystem.move(tmp, where)


def read_gauges(path: str) -> dict[str, Any] | None:
    """The summary :func:`gauges` wrote last, or None when there is none (yet)."""
    from pyarrow import fs

    try:
        filesystem, where = fs.FileSystem.from_uri(path)
        with filesystem.open_input_stream(where) as src:
            return json.loads(src.read())
    except (FileNotFoundError, OSError, ValueError):
        return None


def _plot_quality(client: Any, run_id: str, model: str, quality: list[Quality], path: str) -> None:
    """Each variant's gate metric (or PR AUC / R²) and label coverage as of each day."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    try:
        for q in quality:
            if not q.daily:
                continue
            days = [pd.Timestamp(d["as_of"]) for d in q.daily]
            key = _plotted(q)
            top.plot(days, [d.get(key) for d in q.daily], marker=".",
                     label=f"v{q.version} {q.variant} {key}")  # fmt: skip
            bottom.plot(days, [d["coverage"] for d in q.daily], marker=".",
                        label=f"v{q.version} {q.variant}")  # fmt: skip
            if q.gate_floor is not None and key == _plotted(q, gate_only=True):
                top.axhline(q.gate_floor, linestyle="--", color="grey")
        top.set(
            title=f"{model}: live quality as labels arrived", ylabel="metric (gate floor dashed)"
        )
        bottom.set(xlabel="labels known by", ylabel="label coverage")
        top.legend(fontsize="small")
        bottom.legend(fontsize="small")
        fig.autofmt_xdate()
        client.log_figure(run_id, fig, path)
    finally:
        plt.close(fig)


def _plotted(q: Quality, gate_only: bool = False) -> str | None:
    from shipyard.quality import GATE_METRICS

    key = GATE_METRICS.get(q.gate_metric or "")
    if key or gate_only:
        return key
    return "pr_auc" if "pr_auc" in q.metrics else "r2"


def _metric_name(name: str) -> str:
    """MLflow's metric names: letters, digits and ``_-./ `` only."""
    return "".join(c if c.isalnum() or c in "_-./ " else "_" for c in name)


def _notify(url: str, result: Check) -> None:
    """POST the alerts; a webhook that fails is an error the scheduler sees."""
    import requests

    body = {"model": result.model, "window": [result.start.isoformat(), result.end.isoformat()],
            "alerts": result.alerts, "run_id": result.run_id}  # fmt: skip
    try:
        resp = requests.post(url, json=body, timeout=10)
        resp.raise_for_status()
    except requests.RequestException as exc:
        raise ConfigError(f"the alert webhook {url} failed: {exc}",
                          hint="check monitor.webhook_url; the check itself is in MLflow") from None  # fmt: skip
