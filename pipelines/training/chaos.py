"""Planted bad versions, for proving that a canary rollout rolls a bad model back.

:func:`register_faulty_version` registers a real new version of a model that wraps an
existing version and, on purpose, fails on a deterministic share of transactions,
answers slowly, and/or flips its scores (``1 - p``) on another deterministic share (a
version that disagrees with its source, for shadow traffic). It is an ordinary MLflow pyfunc: the serving code cannot tell
it from a good one, which is the point. Its version carries ``chaos.*`` tags so
nobody mistakes it for a trained model.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd

__all__ = ["FaultyPyfunc", "register_faulty_version"]


class PlantedFault(RuntimeError):
    """The failure a faulty version raises on purpose."""


def _share(row: pd.Series) -> float:
    """A row's place in [0, 1], from all its values: the same input fails every time,
    whatever the model's inputs are."""
    key = "|".join(f"{name}={row[name]}" for name in sorted(row.index))
    return int(hashlib.md5(key.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


class FaultyPyfunc(mlflow.pyfunc.PythonModel):
    """Wraps a model; fails for rows whose hash falls below ``error_share``; answers
    ``1 - p`` for each numeric output of the rows whose hash falls in the next
    ``flip_share``; sleeps ``delay_s`` per call."""

    def __init__(self, error_share: float = 0.0, delay_s: float = 0.0,
                 flip_share: float = 0.0) -> None:  # fmt: skip
        self.error_share = error_share
        self.delay_s = delay_s
        self.flip_share = flip_share
        self._inner: Any = None

    def load_context(self, context: Any) -> None:
        self._inner = mlflow.pyfunc.load_model(context.artifacts["inner"])

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> Any:
        if self.delay_s:
            time.sleep(self.delay_s)
        share = model_input.apply(_share, axis=1).to_numpy()
        bad = share < self.error_share
        if bad.any():
            raise PlantedFault(f"planted failure on {int(bad.sum())} of {len(model_input)} rows")
        out = self._inner.predict(model_input)
        flip = share < self.error_share + getattr(self, "flip_share", 0.0)
        if flip.any():
            if isinstance(out, pd.DataFrame):
                out = out.copy()
                for col in out.select_dtypes("number").columns:
                    out.loc[flip, col] = 1.0 - out.loc[flip, col]
            else:
                out = np.array(out, dtype=float, copy=True)
                out[flip] = 1.0 - out[flip]
        return out


def register_faulty_version(tracking_uri: str, model: str, source_version: str, *,
                            error_share: float = 0.5, delay_s: float = 0.0,
                            flip_share: float = 0.0) -> str:  # fmt: skip
    """Register a faulty copy of ``model/source_version``; returns the new version."""
    from mlflow import MlflowClient

    from pipelines.training.train import _pip_requirements

    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri)
    source = client.get_model_version(model, source_version)
    with tempfile.TemporaryDirectory() as tmp:
        inner = mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{model}/{source_version}", dst_path=str(Path(tmp) / "inner")
        )
        mlflow.set_experiment(f"{model}-chaos")
        with mlflow.start_run(run_name=f"faulty copy of v{source_version}") as run, \
                warnings.catch_warnings():  # fmt: skip
            warnings.simplefilter("ignore", UserWarning)  # "no input example": it wraps one
            mlflow.set_tags({"chaos.error_share": error_share, "chaos.delay_s": delay_s,
                             "chaos.flip_share": flip_share,
                             "chaos.source_version": source_version})  # fmt: skip
            code = str(Path(__file__).resolve().parents[1])
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=FaultyPyfunc(error_share, delay_s, flip_share),
                artifacts={"inner": inner},
                code_paths=[code],
                pip_requirements=_pip_requirements(),
                # the same inputs and outputs, so it serves through the same contract
                signature=mlflow.models.get_model_info(
                    f"models:/{model}/{source_version}"
                ).signature,
            )
    contract = {k: v for k, v in (source.tags or {}).items() if k.startswith("shipyard.")}
    mv = mlflow.register_model(info.model_uri, model, tags={**contract,
        "chaos.error_share": str(error_share), "chaos.delay_s": str(delay_s),
        "chaos.flip_share": str(flip_share),
        "chaos.source_version": source_version, "chaos.run_id": run.info.run_id,
        "source.run_id": source.run_id or "",
    })  # fmt: skip
    return str(mv.version)
