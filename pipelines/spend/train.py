"""Train the customer-spend model: a plain Ray job (no DDP), tracked in MLflow,
registered through the same call and gated by the same promotion gate as the fraud
model.

As a workload entrypoint (``prepare``/``main``/``report``, see ``shipyard.workload``)::

    SHIPYARD_WORKLOAD__TRAIN=pipelines.spend.train shipyard train [--rows N] [--seed S]

submits it as a Ray job on the platform (``--local``: in this process), or directly::

    python -m pipelines.spend.train --repo DIR --raw DIR --tracking-uri URL

Steps: forecast points labelled with the next 7 days' spend, their features by a
point-in-time join through Feast (``customer_spend_v1``, Ray offline store),
gradient-boosted trees fitted in the job's driver, the run and the model logged
(``mlflow.sklearn``), the version registered with its serving contract, the gate
(validation R² above a floor and no worse than the champion's on the same rows),
aliases.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["SpendResult", "main", "prepare", "report", "train"]

NAME = "customer-spend"
_TRUSTED = ["sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
            "sklearn._loss.link.LogLink", "sklearn._loss.loss.HalfPoissonLoss"]  # fmt: skip


@dataclass
class SpendResult:
    model_name: str
    version: str
    run_id: str
    run_url: str
    metrics: dict[str, float]
    rows: int
    gate_passed: bool
    gate_reason: str
    aliases: list[str]


def _r2(uri: str, frame: pd.DataFrame) -> float:
    """A registered version's R² on ``frame`` (the gate's score)."""
    import mlflow.pyfunc
    from sklearn.metrics import r2_score

    from pipelines.spend.model import to_model_input

    pred = np.asarray(mlflow.pyfunc.load_model(uri).predict(to_model_input(frame)))
    return float(r2_score(frame["spend_next_7d"], pred.reshape(len(frame), -1)[:, 0]))


def train(repo: Path, raw: Path, tracking_uri: str, *, name: str = NAME, rows: int = 40_000,
          seed: int = 0, validation_fraction: float = 0.2, r2_floor: float = 0.0,
          tolerance: float = 0.02, say: Callable[[str], None] = print) -> SpendResult:  # fmt: skip
    import mlflow
    import mlflow.sklearn
    from mlflow import MlflowClient
    from mlflow.models import infer_signature
    from mlflow.types.schema import ColSpec, Schema
    from shipyard.contract import register_model
    from shipyard.registry import check_server
    from sklearn.metrics import mean_absolute_error, r2_score

    from pipelines.features.repo import SPEND_SERVICE
    from pipelines.spend import data
    from pipelines.spend.model import OUTPUT, pipeline, serving_contract, to_model_input
    from pipelines.training import tracking

    check_server(tracking_uri)
    started = time.monotonic()
    say("[spend 1/5] labelled forecast points and their features")
    loaded = data.load(repo, raw, rows=rows, seed=seed, service=SPEND_SERVICE, say=say)
    train_part, val = data.split(loaded.frame, validation_fraction)
    x_train, x_val = to_model_input(train_part), to_model_input(val)
    y_train, y_val = train_part[OUTPUT].to_numpy(), val[OUTPUT].to_numpy()
    say(f"[spend 2/5] fitting gradient-boosted trees (Poisson loss) on {len(x_train):,} points")
    model = pipeline(seed).fit(x_train, y_train)
    pred = model.predict(x_val)
    naive = np.nan_to_num(val["cust_amount_sum_7d"].to_numpy(np.float64))  # last week again
    metrics = {"val_r2": float(r2_score(y_val, pred)), "val_mae": float(mean_absolute_error(y_val, pred)),
               "baseline_val_mae": float(mean_absolute_error(y_val, naive)),
               "val_mean_spend": float(np.mean(y_val))}  # fmt: skip
    say(f"[spend 3/5] validation R2 {metrics['val_r2']:.3f}, MAE {metrics['val_mae']:.1f} "
        f"(last week's spend as the forecast: MAE {metrics['baseline_val_mae']:.1f})")  # fmt: skip

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(name)
    example = x_train.head(5)
    signature = infer_signature(example)
    signature.outputs = Schema([ColSpec("double", OUTPUT)])
    with mlflow.start_run(run_name=f"spend seed {seed}") as run:
        mlflow.log_params({"seed": seed, "rows": len(loaded.frame), "flavor": "sklearn",
                           "validation_fraction": validation_fraction, "horizon_days": 7,
                           "feature_service": SPEND_SERVICE, "r2_floor": r2_floor})  # fmt: skip
        mlflow.log_metrics(metrics)
        info = mlflow.sklearn.log_model(
            model, name="model", signature=signature, input_example=example,
            # the skops format refuses types it cannot vouch for; these are ours
            skops_trusted_types=["pipelines.spend.model.calendar_features", *_TRUSTED],
            code_paths=[str(Path(__file__).resolve().parents[1])],
        )  # fmt: skip
    url = (
        f"{tracking_uri.rstrip('/')}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
    )
    say(f"MLflow run {run.info.run_id}: {url}")
    say(f"[spend 4/5] registering {name} with its serving contract")
    reference = x_train.assign(**{OUTPUT: model.predict(x_train)})
    version = register_model(tracking_uri, info.model_uri, name, **serving_contract(),
                             reference=reference,
                             tags={"data.fingerprint": loaded.fingerprint,
                                   "data.window": f"{loaded.window[0]}/{loaded.window[1]}"})  # fmt: skip
    client = MlflowClient(tracking_uri=tracking_uri)
    verdict = tracking.gate(client, name, metrics["val_r2"], val, r2_floor, tolerance, _r2,
                            metric="R2")  # fmt: skip
    for key, value in verdict.as_tags().items():
        client.set_tag(run.info.run_id, key, value)
        client.set_model_version_tag(name, version, key, value)
    aliases = tracking.set_aliases(client, name, version, verdict)
    say(f"[spend 5/5] gate {'PASSED' if verdict.passed else 'REFUSED'}: {verdict.reason}; "
        f"version {version} in {time.monotonic() - started:.0f}s, aliases "
        f"{', '.join(aliases) or 'none'}")  # fmt: skip
    return SpendResult(name, version, run.info.run_id, url, metrics, len(loaded.frame),
                       verdict.passed, verdict.reason, aliases)  # fmt: skip


def _parser(prog: str, *, job: bool) -> argparse.ArgumentParser:
    from pipelines._cli import int_range

    parser = argparse.ArgumentParser(prog=prog, description="Train the customer-spend model.")
    parser.add_argument("--name", default=NAME, help=f"registered model name (default {NAME})")
    parser.add_argument("--rows", type=int_range(200, 2_000_000), default=40_000,
                        help="forecast points to train and validate on (default 40000)")  # fmt: skip
    parser.add_argument("--seed", type=int_range(0), default=0,
                        help="draws the forecast points (the trees are deterministic)")  # fmt: skip
    parser.add_argument("--gate-tolerance", type=float, default=0.02,
                        help="how far below the champion's validation R2 still passes (0.02)")  # fmt: skip
    for option in ("--repo", "--raw", "--tracking-uri"):
        parser.add_argument(option, required=job, help=argparse.SUPPRESS if not job else None)
    return parser


def prepare(settings: Any, argv: list[str]) -> list[str]:
    """The CLI side: check the arguments and the MLflow server before a job starts,
    and add what the settings decide (the rendered Feast repo, the raw data, MLflow)."""
    from shipyard.feast_repo import write_repo
    from shipyard.registry import check_server

    args = _parser("shipyard train (customer-spend)", job=False).parse_args(argv)
    check_server(settings.tracking_uri)
    if not 0 <= args.gate_tolerance <= 1:
        from shipyard.errors import ConfigError

        raise ConfigError(f"--gate-tolerance {args.gate_tolerance} is not in [0, 1]")
    return ["--name", args.name, "--rows", str(args.rows), "--seed", str(args.seed),
            "--gate-tolerance", repr(args.gate_tolerance),
            "--repo", str(write_repo(settings)), "--raw", str(settings.raw_data_dir),
            "--tracking-uri", settings.tracking_uri]  # fmt: skip


def report(argv: list[str], result: dict[str, Any], echo: Callable[[str], None]) -> None:
    from pipelines._cli import report_training

    metrics = result["metrics"]
    report_training(result, f"R2 {metrics['val_r2']:.4f}, MAE {metrics['val_mae']:.2f} "
                    f"(last week's spend: MAE {metrics['baseline_val_mae']:.2f})", echo)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    import os

    from shipyard.errors import ShipyardError

    from pipelines._cli import fail
    from pipelines.features._ray import connect

    args = _parser("python -m pipelines.spend.train", job=True).parse_args(argv)
    import logging

    # the steps and the run's URL are printed here; MLflow's own chatter is left out
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    # through the module, not __main__, so the logged pipeline names its functions by path
    from pipelines.spend import train as spend

    try:
        connect()
        result = spend.train(Path(args.repo), Path(args.raw), args.tracking_uri, name=args.name,
                             rows=args.rows, seed=args.seed, tolerance=args.gate_tolerance, say=lambda m: print(m, flush=True))  # fmt: skip
    except ShipyardError as exc:
        return fail(exc, 2)
    print("RESULT " + json.dumps(asdict(result), default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
