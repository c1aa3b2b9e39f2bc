"""The serving half of ``make demo``: a challenger, the champion served, a canary of the
challenger promoted step by step under traffic, a planted bad version rolled back,
and sample predictions. Every step uses the same library functions as the CLI."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import requests
from shipyard import serving
from shipyard.canary import TERMINAL, parse_plan
from shipyard.canary import client as rollouts
from shipyard.settings import Settings
from shipyard.traffic import Load

from pipelines.data.requests import random_transactions, transaction

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
        time.sleep(1.0)
    raise TimeoutError(f"the rollout of {model} did not end within {timeout:.0f}s")


def _traffic(raw: Path) -> tuple[list[str], list[str]]:
    import pyarrow.dataset as ds

    frame = (ds.dataset(raw, format="parquet", partitioning="hive")
             .to_table(columns=["customer_id", "merchant_id", "timestamp"]).to_pandas())  # fmt: skip
    recent = frame.sort_values("timestamp").tail(20000)
    return sorted(recent["customer_id"].unique()), sorted(recent["merchant_id"].unique())


def run_serving(settings: Settings, trained: dict[str, Any], raw: Path, start: datetime,
                say: Say, echo: Say, quiet: Say) -> dict[str, Any]:  # fmt: skip
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

    say("[8/12] retraining with another seed on the same training set: the challenger")
    challenger = train(settings, quiet, workers=2, start=start, seed=1, training_set=saved,
                       gate={"champion_tolerance": 0.05})  # fmt: skip
    say(f"      version {challenger['version']}: gate {'passed' if challenger['gate_passed'] else 'refused'}"
        f" ({challenger['gate_reason']}); aliases {', '.join(challenger['aliases']) or 'none'}")  # fmt: skip

    say(f"[9/12] deploying {model}@champion on Ray Serve (router + stable/canary predictors)")
    deployed = serving.deploy(settings, f"{model}@champion", echo=lambda m: say("      " + m))
    url = f"{deployed['route']}/predict"
    customers, merchants = _traffic(raw)

    say(f"[10/12] canary of {model}@challenger under traffic (~30 requests/s on loopback)")
    good: dict[str, Any] = {}
    bad: dict[str, Any] = {}
    body = random_transactions(customers, merchants)
    with Load(url, body, rate=30, threads=4, max_seconds=600) as load:
        if challenger["gate_passed"] and challenger["version"] != deployed["version"]:
            plan = parse_plan(steps="10,50,100", interval="8s", min_requests=20,
                              max_latency_ratio=2.0)  # fmt: skip
            rollouts.start(settings, model, "challenger", plan, echo=lambda m: say("      " + m))
            good = _follow(settings, model, echo)
        else:
            say("      no new challenger passed the gate; skipping its canary")
        mark = len(load.results)

        say("[11/12] planting a bad version (fails on ~half the transactions) and rolling it out")
        source = good.get("canary_version") or deployed["version"]
        faulty = register_faulty_version(settings.tracking_uri, model, source, error_share=0.5)
        say(f"      registered {model} version {faulty} (a faulty copy of version {source})")
        plan = parse_plan(steps="10,50,100", interval="5s", min_requests=10, failure_threshold=2)
        rollouts.start(settings, model, faulty, plan, echo=lambda m: say("      " + m))
        bad = _follow(settings, model, echo)
        time.sleep(2)
    first, second = load.results[:mark], load.results[mark:]
    say(f"      clients during the good canary: {len(first)} requests, "
        f"{sum(r[1] != 200 for r in first)} failed")  # fmt: skip
    say(f"      clients during the bad canary: {len(second)} requests, "
        f"{sum(r[1] != 200 for r in second)} failed (all on the canary, at 10 %)")  # fmt: skip

    say("[12/12] sample predictions over HTTP")
    samples = []
    for i, (cust, merch) in enumerate(zip(customers[-4:], merchants[-4:], strict=False)):
        tx = transaction(i, cust, merch, amount=[25.0, 180.0, 950.0, 4200.0][i])
        samples.append((tx, requests.post(url, json=tx, timeout=30).json()))
    tx = transaction(9, "c_new_customer", merchants[0], amount=60.0)
    samples.append((tx, requests.post(url, json=tx, timeout=30).json()))
    return {"url": url, "deployed": deployed, "challenger": challenger, "good": good,
            "bad": bad, "faulty": faulty, "samples": samples}  # fmt: skip


def summary(result: dict[str, Any], echo: Say) -> None:
    good, bad = result["good"], result["bad"]
    echo(f"  serving         POST {result['url']}")
    if good:
        echo(f"  canary          version {good['canary_version']}: {good['status']} "
             f"after {sum(d['action'] == 'check_passed' for d in good['decisions'])} passed checks")  # fmt: skip
    echo(f"  bad canary      version {result['faulty']}: {bad.get('status')} "
         f"({(bad.get('decisions') or [{}])[-1].get('reason', '')})")  # fmt: skip
    echo("  predictions:")
    echo(
        f"    {'customer':<16} {'amount':>8} {'fraud prob':>10} {'version':>7}  {'variant':<7} note"
    )
    for tx, answer in result["samples"]:
        note = ("no online features: " + ", ".join(answer["features_missing"])
                if answer.get("features_missing") else "")  # fmt: skip
        echo(f"    {tx['customer_id']:<16} {tx['amount']:>8.2f} "
             f"{answer.get('fraud_probability', float('nan')):>10.4f} "
             f"{answer.get('model_version', '-'):>7}  {answer.get('variant', '-'):<7} {note}")  # fmt: skip
    model = result["deployed"]["model"]
    echo(f"  try: shipyard serve status; shipyard canary status {model}")
