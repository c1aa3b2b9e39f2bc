"""The serving half of ``make demo``: a challenger, the champion served, a canary of the
challenger promoted step by step under traffic, a planted bad version rolled back;
then the second reference model (customer spend) trained by its own Ray job, served
next to the fraud model, and a canary of it while both models take traffic; sample
predictions of both. Every step uses the same library functions as the CLI."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import requests
from shipyard import serving
from shipyard.canary import TERMINAL, parse_plan
from shipyard.canary import client as rollouts
from shipyard.errors import ShipyardError
from shipyard.settings import Settings
from shipyard.traffic import Load

from pipelines.data.requests import forecast, random_forecasts, replayed, transaction

Say = Callable[[str], None]


def _follow(settings: Settings, model: str, echo: Say, timeout: float = 420.0) -> dict[str, Any]:
    """Print the controller's decisions as they happen, until the rollout ends."""
    seen, state = 0, {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = rollouts.status(settings, model)
        for d in (state.get("decisions") or [])[seen:]:
            echo(
                f"      {d['at'][11:19]}  {d['action']:<13} {d.get('weight', 0):>4g}%  {d['reason']}"
            )
        seen = len(state.get("decisions") or [])
        if state.get("status") in TERMINAL:
            return state
        if state.get("status") == "paused":  # waits for a person: the demo cannot go on
            raise ShipyardError(f"the rollout of {model} paused: {(state.get('decisions') or [{}])[-1].get('reason', '')}",
                                hint=f"see `shipyard canary status {model}`")  # fmt: skip
        time.sleep(1.0)
    raise TimeoutError(f"the rollout of {model} did not end within {timeout:.0f}s")


def _failed(results: list[tuple[float, int, str, str]]) -> str:
    """How many requests failed, and how: ``0 failed``, or ``20 failed (500 from the
    canary x20)``; a status 0 is the client's own (an exception, or a load that fell
    behind)."""
    kinds = Counter(f"{r[1]} from the {r[2]}" if r[1] else r[2] for r in results if r[1] != 200)
    if not kinds:
        return "0 failed"
    return (
        f"{sum(kinds.values())} failed ({', '.join(f'{k} x{n}' for k, n in kinds.most_common())})"
    )


def _traffic(raw: Path, held_out_from: datetime) -> tuple[list[str], list[str], Any]:
    """The recent customers and merchants, and the transactions held out of training
    (from ``held_out_from`` on, in time order): what the clients replay."""
    import pyarrow.dataset as ds

    frame = (ds.dataset(raw, format="parquet", partitioning="hive").to_table(
        columns=["transaction_id", "customer_id", "merchant_id", "amount", "currency",
                 "category", "country", "timestamp"]).to_pandas())  # fmt: skip
    frame = frame.sort_values("timestamp", kind="stable")
    recent = frame.tail(20000)
    held = frame[frame["timestamp"] >= held_out_from]
    return sorted(recent["customer_id"].unique()), sorted(recent["merchant_id"].unique()), held


def run_serving(settings: Settings, trained: dict[str, Any], raw: Path, start: datetime,
                end: datetime, say: Say, echo: Say, quiet: Say) -> dict[str, Any]:  # fmt: skip
    import logging
    import os

    from mlflow import MlflowClient

    from pipelines.demo import train
    from pipelines.training.chaos import register_faulty_version

    # the demo's own process: MLflow's progress bars and run links would drown the steps
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    model = trained["model_name"]
    client = MlflowClient(tracking_uri=settings.tracking_uri)
    saved = client.get_run(trained["run_id"]).data.tags["data.training_set"]

    say("[8/17] retraining with another seed on the same training set: the challenger")
    challenger = train(settings, quiet, workers=2, start=start, seed=1, training_set=saved,
                       gate={"champion_tolerance": 0.05})  # fmt: skip
    say(f"      version {challenger['version']}: gate {'passed' if challenger['gate_passed'] else 'refused'}"
        f" ({challenger['gate_reason']}); aliases {', '.join(challenger['aliases']) or 'none'}")  # fmt: skip

    say(f"[9/17] deploying {model}@champion on Ray Serve (router + stable/canary predictors)")
    deployed = serving.deploy(settings, f"{model}@champion", echo=lambda m: say("      " + m))
    url = f"{deployed['route']}/predict"
    customers, merchants, held = _traffic(raw, end)

    say(f"[10/17] shadow, then canary of {model}@challenger under traffic (40 requests/s, open "
        f"loop, on loopback): the {len(held):,} held-out transactions, replayed in order")  # fmt: skip
    good: dict[str, Any] = {}
    bad: dict[str, Any] = {}
    body = replayed(held)
    with Load(url, body, rate=40, threads=16, max_seconds=600) as load:
        if challenger["gate_passed"] and challenger["version"] != deployed["version"]:
            # shadow first: half of stable's records mirrored, compared, never answered
            plan = parse_plan(steps="10,50,100", interval="8s", min_requests=20,
                              max_latency_ratio=2.0, shadow=50, max_disagreement=0.1)  # fmt: skip
            rollouts.start(settings, model, "challenger", plan, echo=lambda m: say("      " + m))
            good = _follow(settings, model, echo)
        else:
            say("      no new challenger passed the gate; skipping its canary")
        mark = len(load.results)

        say("[11/17] planting a bad version (fails on ~half the transactions) and rolling it out")
        source = good.get("canary_version") or deployed["version"]
        faulty = register_faulty_version(settings.tracking_uri, model, source, error_share=0.5)
        say(f"      registered {model} version {faulty} (a faulty copy of version {source})")
        plan = parse_plan(steps="10,50,100", interval="5s", min_requests=10, failure_threshold=2)
        rollouts.start(settings, model, faulty, plan, echo=lambda m: say("      " + m))
        bad = _follow(settings, model, echo)
        time.sleep(2)
    first, second = load.results[:mark], load.results[mark:]
    say(f"      clients during the good canary: {len(first)} requests, {_failed(first)}")
    say(f"      clients during the bad canary: {len(second)} requests, {_failed(second)}")

    spend = run_spend(settings, model, url, body, customers, say, echo, quiet)

    say("[14/17] sample predictions over HTTP")
    samples = []
    for i, (cust, merch) in enumerate(zip(customers[-4:], merchants[-4:], strict=False)):
        tx = transaction(i, cust, merch, amount=[25.0, 180.0, 950.0, 4200.0][i])
        samples.append((tx, requests.post(url, json=tx, timeout=30).json()))
    tx = transaction(9, "c_new_customer", merchants[0], amount=60.0)
    samples.append((tx, requests.post(url, json=tx, timeout=30).json()))
    for cust in [*customers[-3:], "c_new_customer"]:
        ask = forecast(cust, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        spend["samples"].append((ask, requests.post(spend["url"], json=ask, timeout=30).json()))
    monitored = watch(settings, model, say, echo)
    return {"url": url, "deployed": deployed, "challenger": challenger, "good": good,
            "bad": bad, "faulty": faulty, "samples": samples, "spend": spend,
            "monitor": monitored}  # fmt: skip


def watch(settings: Settings, model: str, say: Say, echo: Say) -> dict[str, Any]:
    """What the model served, held against its training data (drift) and, as their
    labels arrive (chargebacks take days to weeks), against the truth: `shipyard monitor
    status` the day after the last replayed transaction, then a recorded `monitor check`
    45 days later, when every answer's labels have matured (the contract's 30 days)."""
    from shipyard import monitor
    from shipyard.cli_monitor import show
    from shipyard.inference_log import read_log

    time.sleep(settings.monitor.log_flush_interval_s + 1)  # the replicas' last log writes
    say(f"[15/17] what {model} served: drift, and live quality as the labels arrive")
    served = read_log(settings.inference_log_uri, model)
    last = pd.to_datetime(served["timestamp"], utc=True, format="ISO8601").max().to_pydatetime()
    early = last + timedelta(days=1)
    say(f"      a day after the last replayed transaction ({early:%Y-%m-%d}): "
        "`shipyard monitor status`")  # fmt: skip
    show(monitor.check(settings, model, hours=1, labels_as_of=early, record=False), False,
         settings, echo=echo)  # fmt: skip
    late = last + timedelta(days=45)
    say(f"      45 days after ({late:%Y-%m-%d}), every label in: `shipyard monitor check`")
    result = monitor.check(settings, model, hours=1, labels_as_of=late, record=True)
    show(result, False, settings, echo=echo)
    return result.to_dict()


def run_spend(settings: Settings, fraud_model: str, fraud_url: str, fraud_body: Any,
              customers: list[str], say: Say, echo: Say, quiet: Say) -> dict[str, Any]:  # fmt: skip
    """The second model: trained by its own Ray job (a plain one, no DDP), deployed
    next to the fraud model as its own application, and a retrained version canaried
    while both models take traffic. Nothing in the platform knows it."""
    from shipyard import workload

    from pipelines.spend import train as spend_train

    say("[12/17] a second model, customer spend over the next 7 days (scikit-learn, its own "
        "feature service), trained by a Ray job and deployed next to the fraud model")  # fmt: skip
    first = workload.run_module(settings, spend_train, ["--rows", "10000"], local=False,
                                echo=quiet) or {}  # fmt: skip
    model = first["model_name"]
    say(f"      {model} version {first['version']}: validation R2 "
        f"{first['metrics']['val_r2']:.3f}; gate {'passed' if first['gate_passed'] else 'refused'}"
        f"; aliases {', '.join(first['aliases']) or 'none'}")  # fmt: skip
    deployed = serving.deploy(settings, f"{model}@champion", echo=lambda m: say("      " + m))
    url = f"{deployed['route']}/predict"

    say(f"[13/17] retraining {model} with another seed, and a canary of it while both models "
        "take traffic")  # fmt: skip
    second = workload.run_module(settings, spend_train, ["--rows", "10000", "--seed", "1",
                                                         "--gate-tolerance", "0.05"],
                                 local=False, echo=quiet) or {}  # fmt: skip
    say(f"      version {second['version']}: gate {'passed' if second['gate_passed'] else 'refused'}"
        f" ({second['gate_reason']})")  # fmt: skip
    good: dict[str, Any] = {}
    fraud_version = rollouts.status(settings, fraud_model)["serving"]["stable_version"]
    with Load(fraud_url, fraud_body, rate=15, threads=8, max_seconds=600) as fraud, \
            Load(url, random_forecasts(customers), rate=25, threads=8, max_seconds=600) as load:  # fmt: skip
        if second["gate_passed"] and second["version"] != deployed["version"]:
            plan = parse_plan(steps="20,100", interval="8s", min_requests=20,
                              max_latency_ratio=2.0)  # fmt: skip
            rollouts.start(settings, model, second["version"], plan,
                           echo=lambda m: say("      " + m))  # fmt: skip
            good = _follow(settings, model, echo)
        else:
            say("      the retrained version did not pass the gate; skipping its canary")
        time.sleep(1)
    versions = sorted({r[3] for r in fraud.results if r[1] == 200})
    say(f"      {model} clients: {len(load.results)} requests, {_failed(load.results)}")
    say(f"      fraud-model clients meanwhile: {len(fraud.results)} requests, "
        f"{_failed(fraud.results)}, served by version(s) "
        f"{', '.join(versions)} "
        f"({'untouched' if set(versions) <= {fraud_version} else 'CHANGED'})")  # fmt: skip
    return {
        "url": url,
        "model": model,
        "first": first,
        "second": second,
        "good": good,
        "samples": [],
    }


def _missing(answer: dict[str, Any]) -> str:
    missing = answer.get("features_missing")
    return "no online features: " + ", ".join(missing) if missing else ""


def summary(result: dict[str, Any], echo: Say) -> None:
    good, bad = result["good"], result["bad"]
    echo(f"  serving         POST {result['url']}")
    if good:
        echo(f"  canary          version {good['canary_version']}: {good['status']} "
             f"after {sum(d['action'] == 'check_passed' for d in good['decisions'])} passed checks"
             " (the first in shadow)")  # fmt: skip
    echo(f"  bad canary      version {result['faulty']}: {bad.get('status')} "
         f"({(bad.get('decisions') or [{}])[-1].get('reason', '')})")  # fmt: skip
    echo("  predictions:")
    echo(
        f"    {'customer':<16} {'amount':>8} {'fraud prob':>10} {'version':>7}  {'variant':<7} note"
    )
    for tx, answer in result["samples"]:
        note = _missing(answer)
        echo(f"    {tx['customer_id']:<16} {tx['amount']:>8.2f} "
             f"{answer.get('fraud_probability', float('nan')):>10.4f} "
             f"{answer.get('model_version', '-'):>7}  {answer.get('variant', '-'):<7} {note}")  # fmt: skip
    spend = result["spend"]
    echo(f"  second model    POST {spend['url']}  ({spend['model']}, scikit-learn, "
         f"R2 {spend['first']['metrics']['val_r2']:.3f})")  # fmt: skip
    if spend["good"]:
        echo(f"  its canary      version {spend['good']['canary_version']}: "
             f"{spend['good']['status']} after "
             f"{sum(d['action'] == 'check_passed' for d in spend['good']['decisions'])} passed checks")  # fmt: skip
    echo(f"    {'customer':<16} {'as of':<20} {'spend next 7d':>13} {'version':>7}  note")
    for ask, answer in spend["samples"]:
        note = _missing(answer)
        echo(f"    {ask['customer_id']:<16} {ask['as_of']:<20} "
             f"{answer.get('spend_next_7d', float('nan')):>13.2f} "
             f"{answer.get('model_version', '-'):>7}  {note}")  # fmt: skip
    model = result["deployed"]["model"]
    monitored = result.get("monitor") or {}
    echo(f"  monitoring      {len(monitored.get('alerts') or [])} alert(s) in the last check; "
         f"`shipyard monitor status {model}`")  # fmt: skip
    echo(
        f"  try: shipyard serve status; shipyard canary status {model}; "
        f"shipyard canary status {spend['model']}"
    )
