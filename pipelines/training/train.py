"""The training job's driver: data → Ray Train (DDP) → MLflow run → registry → gate.

``python -m pipelines.training.train --spec FILE`` (a Ray job; ``shipyard train``
writes the spec) or :func:`run` in-process. The driver keeps the cluster-level
work: the point-in-time training set through Feast, the time split, fitting the
preprocessing on the training split only, the ``TorchTrainer`` with its scaling,
checkpoint and failure configs, then the model artifact, its registration and the
promotion gate. ``pipelines.training.loop`` holds only worker code.

Exactly one MLflow run per job: the driver opens it before training, rank 0 of
whichever worker group is alive logs into it, and the driver closes it FINISHED,
or FAILED when anything (including SIGTERM from ``shipyard job stop``) ends it.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipelines.training.config import TrainConfig

__all__ = ["JobSpec", "TrainResult", "main", "run"]


@dataclass
class JobSpec:
    """Everything the job needs, resolved from the user's settings by the CLI."""

    config: dict[str, Any]
    tracking_uri: str
    repo: str  # the rendered Feast repo (feature_store.yaml)
    raw: str  # raw transactions
    storage: str  # Ray Train checkpoints
    git_commit: str = "unknown"

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.__dict__, indent=2, default=str))

    @classmethod
    def load(cls, path: Path) -> JobSpec:
        return cls(**json.loads(Path(path).read_text()))


@dataclass
class TrainResult:
    run_id: str
    run_url: str
    model_name: str
    version: str
    aliases: list[str]
    gate_passed: bool
    gate_reason: str
    metrics: dict[str, float] = field(default_factory=dict)
    baseline: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0


def git_commit(directory: Path) -> str:
    try:
        out = subprocess.run(["git", "-C", str(directory), "rev-parse", "HEAD"],
                             capture_output=True, text=True, timeout=10)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def _pip_requirements() -> list[str]:
    import mlflow
    import sklearn
    import torch

    return [f"torch=={torch.__version__.split('+')[0]}", f"mlflow=={mlflow.__version__}",
            f"pandas=={pd.__version__}", f"numpy=={np.__version__}",
            f"scikit-learn=={sklearn.__version__}"]  # fmt: skip


def _dataset(x: np.ndarray, y: np.ndarray) -> Any:
    import ray.data
    from ray.data.extensions import TensorArray

    return ray.data.from_pandas(pd.DataFrame({"x": TensorArray(x), "y": y.astype(np.float32)}))


def _score(uri: str, frame: pd.DataFrame) -> float:
    import mlflow.pyfunc
    from sklearn.metrics import average_precision_score

    from pipelines.training.model import to_model_input

    model = mlflow.pyfunc.load_model(uri)
    probs = model.predict(to_model_input(frame))
    return float(average_precision_score(frame["is_fraud"], probs["fraud_probability"]))


def baseline_scores(train: pd.DataFrame, val: pd.DataFrame) -> dict[str, float]:
    """A trivial baseline: logistic regression on request-time fields only."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import average_precision_score, roc_auc_score

    def design(frame: pd.DataFrame, columns: list[str] | None = None) -> pd.DataFrame:
        ts = pd.to_datetime(frame["timestamp"], utc=True)
        hour = ts.dt.hour + ts.dt.minute / 60
        parts = pd.DataFrame({"log_amount": np.log1p(frame["amount"].astype(float)),
                              "hour_sin": np.sin(2 * np.pi * hour / 24),
                              "hour_cos": np.cos(2 * np.pi * hour / 24)})  # fmt: skip
        dummies = pd.get_dummies(frame[["category", "country"]].astype(str), dtype=float)
        out = pd.concat([parts.reset_index(drop=True), dummies.reset_index(drop=True)], axis=1)
        return out.reindex(columns=columns, fill_value=0.0) if columns is not None else out

    x_train = design(train)
    model = LogisticRegression(max_iter=1000).fit(x_train, train["is_fraud"])
    p = model.predict_proba(design(val, list(x_train.columns)))[:, 1]
    return {"baseline_val_roc_auc": float(roc_auc_score(val["is_fraud"], p)),
            "baseline_val_pr_auc": float(average_precision_score(val["is_fraud"], p))}  # fmt: skip


def run(spec: JobSpec, say: Any = print) -> TrainResult:
    import ray.data
    from mlflow import MlflowClient

    from pipelines.training import tracking

    cfg = TrainConfig.model_validate(spec.config)
    tracking.check_server(spec.tracking_uri)
    ray.data.DataContext.get_current().enable_progress_bars = False  # they garble job logs
    began = time.monotonic()
    client = MlflowClient(tracking_uri=spec.tracking_uri)
    experiment = client.get_experiment_by_name(cfg.experiment)
    experiment_id = (
        experiment.experiment_id if experiment else client.create_experiment(cfg.experiment)
    )
    run_ = client.create_run(experiment_id, tags={
        "mlflow.runName": f"{cfg.model_name}-{time.strftime('%Y%m%d-%H%M%S')}",
        "mlflow.source.git.commit": spec.git_commit, "shipyard.model": cfg.model_name,
    })  # fmt: skip
    run_id = run_.info.run_id
    run_url = f"{spec.tracking_uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
    say(f"MLflow run {run_id}: {run_url}")

    def on_term(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    try:
        result = _train(spec, cfg, client, run_id, say)
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    result.run_url, result.seconds = run_url, round(time.monotonic() - began, 1)
    return result


def _train(spec: JobSpec, cfg: TrainConfig, client: Any, run_id: str, say_: Any) -> TrainResult:
    import mlflow
    import ray.train
    import torch
    from mlflow.models import infer_signature
    from ray.train.torch import TorchTrainer
    from shipyard.contract import register_model

    from pipelines.features import store
    from pipelines.training import data, tracking
    from pipelines.training.loop import STATE, train_loop_per_worker
    from pipelines.training.model import FraudPyfunc, Preprocessor, serving_contract, to_model_input

    began = time.monotonic()

    def say(message: str) -> None:
        say_(
            f"{message}  [{time.monotonic() - began:.0f}s]" if message.startswith("[") else message
        )

    client.log_dict(run_id, cfg.model_dump(mode="json"), "config.json")
    flat = pd.json_normalize(cfg.model_dump(mode="json"), sep=".").iloc[0].to_dict()
    client.log_batch(run_id, params=[mlflow.entities.Param(k, str(v)[:500])
                                     for k, v in flat.items()])  # fmt: skip

    say("[train 1/4] building the training set")
    if cfg.training_set:
        say(f"      reusing the training set {cfg.training_set}")
        loaded = data.reuse_training_data(Path(cfg.training_set))
    else:
        loaded = data.load_training_data(Path(spec.repo), Path(spec.raw), cfg.start, cfg.end,
                                          say, days=cfg.window_days,
                                          lag_days=cfg.window_lag_days)  # fmt: skip
    saved = Path(spec.storage) / run_id / "training_set.parquet"
    saved.parent.mkdir(parents=True, exist_ok=True)
    loaded.frame.to_parquet(saved, index=False)
    parts = data.split(loaded.frame, cfg.validation_fraction)
    train, val = parts.train, parts.val
    labels = train["is_fraud"].to_numpy().copy()
    if cfg.shuffle_labels:
        np.random.default_rng(cfg.seed).shuffle(labels)
    views = ",".join(sorted(v.name for v in store.open_store(Path(spec.repo))
                            .get_feature_service(store.FEATURE_SERVICE).feature_view_projections))  # fmt: skip
    lineage = {
        "feature_service": store.FEATURE_SERVICE, "feature_views": views,
        "data.window_start": str(loaded.window[0]), "data.window_end": str(loaded.window[1]),
        "data.split_at": str(parts.split_at), "data.fingerprint": loaded.fingerprint,
        "data.train_rows": str(len(train)), "data.val_rows": str(len(val)),
        "data.train_frauds": str(int(labels.sum())),
        "data.val_frauds": str(data.positives(val)),
        "data.excluded": json.dumps(loaded.excluded), "git_commit": spec.git_commit,
        "labels_shuffled": str(cfg.shuffle_labels).lower(), "data.training_set": str(saved),
    }  # fmt: skip
    for key, value in lineage.items():
        client.set_tag(run_id, key, value)
    say(f"      train {len(train):,} rows ({int(labels.sum())} frauds) before {parts.split_at}, "
        f"validate {len(val):,} rows ({data.positives(val)} frauds); "
        f"fingerprint {loaded.fingerprint}")  # fmt: skip

    say("[train 2/4] fitting the preprocessing on the training split")
    prep = Preprocessor.fit(train)
    x_train, x_val = prep.transform(train), prep.transform(val)
    positives = max(int(labels.sum()), 1)
    pos_weight = float(min((len(labels) - positives) / positives, 50.0) ** 0.5)

    say(f"[train 3/4] TorchTrainer: {cfg.workers} worker(s) x {cfg.epochs} epoch(s), DDP")
    storage = Path(spec.storage)
    loop_config = {
        "width": prep.width, "hidden": cfg.hidden, "dropout": cfg.dropout,
        "learning_rate": cfg.learning_rate, "weight_decay": cfg.weight_decay,
        "batch_size": cfg.batch_size, "epochs": cfg.epochs, "seed": cfg.seed,
        "pos_weight": pos_weight, "threads": max(1, int(cfg.cpus_per_worker)),
        "run_id": run_id, "tracking_uri": spec.tracking_uri,
        "fault_injection": cfg.fault_injection.model_dump() if cfg.fault_injection else None,
        "fault_marker": str(storage / run_id / "fault-injected"),
    }  # fmt: skip
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        scaling_config=ray.train.ScalingConfig(
            num_workers=cfg.workers,
            use_gpu=False,
            resources_per_worker={"CPU": cfg.cpus_per_worker},
        ),  # fmt: skip
        run_config=ray.train.RunConfig(
            name=run_id,
            storage_path=str(storage),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=cfg.checkpoints_to_keep),
            failure_config=ray.train.FailureConfig(max_failures=cfg.max_failures),
        ),  # fmt: skip
        datasets={
            "train": _dataset(x_train, labels),
            "val": _dataset(x_val, val["is_fraud"].to_numpy()),
        },
        dataset_config=ray.train.DataConfig(datasets_to_split=["train"]),
    )
    fitted = trainer.fit()
    if fitted.checkpoint is None:
        raise RuntimeError("training ended without a checkpoint")
    with fitted.checkpoint.as_directory() as folder:
        state = torch.load(Path(folder) / STATE, weights_only=False)

    say("[train 4/4] logging the model, registering it, and running the promotion gate")
    arch = {"width": prep.width, "hidden": cfg.hidden, "dropout": cfg.dropout}
    pyfunc = FraudPyfunc(prep.to_dict(), arch, state["model"])
    inputs = to_model_input(val)
    probs = pyfunc.predict_proba(inputs)
    from sklearn.metrics import average_precision_score, roc_auc_score

    y_val = val["is_fraud"].to_numpy()
    final = {"final_val_roc_auc": float(roc_auc_score(y_val, probs)),
             "final_val_pr_auc": float(average_precision_score(y_val, probs))}  # fmt: skip
    base = baseline_scores(train.assign(is_fraud=labels), val)
    client.log_batch(run_id, metrics=[mlflow.entities.Metric(k, v, int(time.time() * 1000), 0)
                                      for k, v in {**final, **base}.items()])  # fmt: skip
    history = {k: [m.value for m in sorted(client.get_metric_history(run_id, k),
                                           key=lambda m: m.step)]
               for k in ("train_loss", "val_loss")}  # fmt: skip
    tracking.log_plots(client, run_id, history, y_val, probs)
    with tempfile.TemporaryDirectory() as folder:  # inputs + predictions, to reproduce
        path = Path(folder) / "validation.parquet"
        inputs.assign(transaction_id=val["transaction_id"], is_fraud=val["is_fraud"],
                      fraud_probability=probs).to_parquet(path, index=False)  # fmt: skip
        client.log_artifact(run_id, str(path), "predictions")

    example = inputs.head(5)
    signature = infer_signature(example, pyfunc.predict(None, example))
    pipelines_dir = Path(__file__).resolve().parents[1]
    mlflow.set_tracking_uri(spec.tracking_uri)
    with mlflow.start_run(run_id=run_id, nested=False) as active:
        info = mlflow.pyfunc.log_model(
            name="model", python_model=pyfunc, signature=signature, input_example=example,
            code_paths=[str(pipelines_dir)], pip_requirements=_pip_requirements(),
        )  # fmt: skip
        assert active.info.run_id == run_id
    # the training data as the model saw it, and its answers on it: the drift monitor's
    # reference (a sample; profiling it takes seconds)
    seen = to_model_input(train.sample(min(len(train), 100_000), random_state=0))
    reference = pd.concat([seen, pyfunc.predict(None, seen)], axis=1)
    version = register_model(spec.tracking_uri, info.model_uri, cfg.model_name, tags=lineage,
                             reference=reference, **serving_contract())  # fmt: skip

    verdict = tracking.gate(client, cfg.model_name, final["final_val_pr_auc"], val,
                            cfg.gate.pr_auc_floor, cfg.gate.champion_tolerance, _score)  # fmt: skip
    for key, value in verdict.as_tags().items():
        client.set_tag(run_id, key, value)
        client.set_model_version_tag(cfg.model_name, version, key, value)
    aliases = tracking.set_aliases(client, cfg.model_name, version, verdict)
    say(f"      registered {cfg.model_name} version {version}; gate "
        f"{'PASSED' if verdict.passed else 'REFUSED'}: {verdict.reason}")  # fmt: skip
    say(f"      aliases moved: {', '.join(aliases) if aliases else 'none'}")
    return TrainResult(run_id, "", cfg.model_name, version, aliases, verdict.passed,
                       verdict.reason, final, base)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    from shipyard.errors import ShipyardError

    from pipelines._cli import fail

    parser = argparse.ArgumentParser(prog="python -m pipelines.training.train")
    parser.add_argument("--spec", required=True, type=Path)
    args = parser.parse_args(argv)
    try:
        spec = JobSpec.load(args.spec)
        from pipelines.features._ray import connect

        connect()
        result = run(spec)
    except ShipyardError as exc:
        return fail(exc, 2)
    print("RESULT " + json.dumps(result.__dict__), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
