"""A second flavor on the fraud model's inputs: scikit-learn gradient-boosted trees.

It proves that the serving path knows no model: a scikit-learn pipeline (no PyTorch,
no custom pyfunc), logged with MLflow's own ``sklearn`` flavor, registered through
the same call as the MLP (``shipyard.contract.register_model`` with the same serving
contract), and served by the same router and predictors with no code of its own.

Trained in one process on a training set an MLP run saved (its ``data.training_set``
tag), with the same time split::

    python -m pipelines.training.gbt --training-set PATH --tracking-uri URL [--name fraud-gbt]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["GbtResult", "hour_features", "train_gbt"]

OUTPUTS = ("legit_probability", "fraud_probability")
_TRUSTED = ["sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"]


def hour_features(frame: pd.DataFrame) -> np.ndarray:
    """The hour of day of ISO 8601 timestamps as sin/cos (a module-level function, so
    the pickled pipeline finds it through the model's code path)."""
    ts = pd.to_datetime(frame.iloc[:, 0], utc=True, format="ISO8601")
    hour = (ts.dt.hour + ts.dt.minute / 60.0).to_numpy(dtype=np.float64)
    return np.stack([np.sin(2 * np.pi * hour / 24), np.cos(2 * np.pi * hour / 24)], 1)


def _pipeline(seed: int) -> Any:
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer, OneHotEncoder

    from pipelines.training.model import FEATURE_INPUTS

    columns = ColumnTransformer([
        ("numbers", "passthrough", [*FEATURE_INPUTS, "amount"]),  # the trees take NaN as is
        ("hour", FunctionTransformer(hour_features), ["timestamp"]),
        ("codes", OneHotEncoder(handle_unknown="ignore", sparse_output=False),
         ["category", "country"]),
    ])  # fmt: skip
    trees = HistGradientBoostingClassifier(max_iter=150, learning_rate=0.1, max_leaf_nodes=31,
                                           class_weight="balanced", random_state=seed)  # fmt: skip
    return Pipeline([("columns", columns), ("trees", trees)])


@dataclass
class GbtResult:
    model: str
    version: str
    run_id: str
    metrics: dict[str, float]
    gate_passed: bool
    gate_reason: str
    aliases: list[str]


def _score(uri: str, frame: pd.DataFrame) -> float:
    import mlflow.pyfunc
    from sklearn.metrics import average_precision_score

    from pipelines.training.model import to_model_input

    probs = np.asarray(mlflow.pyfunc.load_model(uri).predict(to_model_input(frame)))
    return float(
        average_precision_score(frame["is_fraud"], probs[:, -1] if probs.ndim == 2 else probs)
    )


def train_gbt(training_set: Path, tracking_uri: str, name: str = "fraud-gbt", *,
              validation_fraction: float = 0.2, seed: int = 0, pr_auc_floor: float = 0.05,
              say: Any = print) -> GbtResult:  # fmt: skip
    """Fit, log with the sklearn flavor, register with the fraud contract, gate."""
    import mlflow
    import mlflow.sklearn
    from mlflow import MlflowClient
    from mlflow.models import infer_signature
    from mlflow.types.schema import ColSpec, Schema
    from shipyard.contract import register_model
    from shipyard.registry import check_server
    from sklearn.metrics import average_precision_score, roc_auc_score

    from pipelines.training import data, tracking
    from pipelines.training.model import serving_contract, to_model_input

    check_server(tracking_uri)
    started = time.monotonic()
    loaded = data.reuse_training_data(training_set)
    parts = data.split(loaded.frame, validation_fraction)
    x_train, x_val = to_model_input(parts.train), to_model_input(parts.val)
    say(f"[gbt 1/3] fitting gradient-boosted trees on {len(x_train):,} rows")
    pipeline = _pipeline(seed).fit(x_train, parts.train["is_fraud"].to_numpy())
    probs = pipeline.predict_proba(x_val)[:, 1]
    y_val = parts.val["is_fraud"].to_numpy()
    metrics = {"final_val_pr_auc": float(average_precision_score(y_val, probs)),
               "final_val_roc_auc": float(roc_auc_score(y_val, probs))}  # fmt: skip
    say(f"[gbt 2/3] validation PR AUC {metrics['final_val_pr_auc']:.3f}, "
        f"ROC AUC {metrics['final_val_roc_auc']:.3f}")  # fmt: skip

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(name)
    example = x_train.head(5)
    signature = infer_signature(example)
    signature.outputs = Schema([ColSpec("double", n) for n in OUTPUTS])
    with mlflow.start_run(run_name=f"gbt seed {seed}") as run:
        mlflow.log_params({"seed": seed, "validation_fraction": validation_fraction,
                           "training_set": str(training_set), "flavor": "sklearn"})  # fmt: skip
        mlflow.log_metrics(metrics)
        info = mlflow.sklearn.log_model(
            pipeline, name="model", signature=signature, input_example=example,
            pyfunc_predict_fn="predict_proba",
            # the skops format refuses types it cannot vouch for; these are ours
            skops_trusted_types=[f"{__name__}.hour_features", *_TRUSTED],
            code_paths=[str(Path(__file__).resolve().parents[1])],
        )  # fmt: skip
    say("[gbt 3/3] registering it with the fraud model's serving contract, and the gate")
    reference = x_train.assign(**dict(zip(OUTPUTS, pipeline.predict_proba(x_train).T, strict=True)))
    version = register_model(tracking_uri, info.model_uri, name, **serving_contract(),
                             reference=reference,
                             tags={"data.training_set": str(training_set),
                                   "data.fingerprint": loaded.fingerprint})  # fmt: skip
    client = MlflowClient(tracking_uri=tracking_uri)
    verdict = tracking.gate(client, name, metrics["final_val_pr_auc"], parts.val, pr_auc_floor,
                            0.02, _score)  # fmt: skip
    for key, value in verdict.as_tags().items():
        client.set_tag(run.info.run_id, key, value)
        client.set_model_version_tag(name, version, key, value)
    aliases = tracking.set_aliases(client, name, version, verdict)
    say(f"      registered {name} version {version} in {time.monotonic() - started:.0f}s; "
        f"aliases moved: {', '.join(aliases) or 'none'}")  # fmt: skip
    return GbtResult(name, version, run.info.run_id, metrics, verdict.passed, verdict.reason,
                     aliases)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    import json

    from shipyard.errors import ShipyardError

    from pipelines._cli import fail

    parser = argparse.ArgumentParser(prog="python -m pipelines.training.gbt")
    parser.add_argument("--training-set", required=True, type=Path)
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--name", default="fraud-gbt")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    # through the module, not __main__, so the pickled pipeline names its functions by path
    from pipelines.training import gbt

    try:
        result = gbt.train_gbt(args.training_set, args.tracking_uri, args.name, seed=args.seed)
    except ShipyardError as exc:
        return fail(exc, 2)
    print(json.dumps(asdict(result), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
