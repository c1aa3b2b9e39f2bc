"""MLflow: the one run per training job, its plots, the registered version, the gate.

Everything goes through the tracking server over HTTP (``MlflowClient(uri)``);
nothing is written to a file store behind its back.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from shipyard.registry import CHALLENGER, CHAMPION, TrackingError, check_server

__all__ = [
    "EpochLogger",
    "GateVerdict",
    "TrackingError",
    "check_server",
    "gate",
    "log_plots",
    "set_aliases",
]


class EpochLogger:
    """Rank 0's per-epoch metrics, one batch request per epoch, step = epoch."""

    def __init__(self, uri: str, run_id: str) -> None:
        from mlflow import MlflowClient
        from mlflow.entities import Metric

        self._metric = Metric
        self.client = MlflowClient(tracking_uri=uri)
        self.run_id = run_id
        self.client.get_run(run_id)  # connect now (and check the run), not in epoch 1

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        now = int(time.time() * 1000)
        batch = [self._metric(k, float(v), now, epoch) for k, v in metrics.items() if k != "epoch"]
        self.client.log_batch(self.run_id, metrics=batch)


@contextmanager
def _figure(client: Any, run_id: str, path: str, size: tuple[int, int] = (5, 5)) -> Iterator[Any]:
    """An axes to draw on; the figure is logged to the run as ``path`` and closed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=size)
    try:
        yield ax
        ax.legend()
        client.log_figure(run_id, fig, path)
    finally:
        plt.close(fig)


def log_plots(client: Any, run_id: str, history: dict[str, list[float]], y: np.ndarray,
              p: np.ndarray) -> None:  # fmt: skip
    """Loss curves, and the ROC and PR curves of the final model on validation."""
    from sklearn.metrics import precision_recall_curve, roc_curve

    with _figure(client, run_id, "plots/loss_curves.png", (6, 4)) as ax:
        for key in ("train_loss", "val_loss"):
            if history.get(key):
                ax.plot(range(1, len(history[key]) + 1), history[key], marker="o", label=key)
        ax.set(xlabel="epoch", ylabel="weighted BCE loss", title="loss")
    fpr, tpr, _ = roc_curve(y, p)
    with _figure(client, run_id, "plots/roc_curve.png") as ax:
        ax.plot(fpr, tpr, label="model")
        ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance")
        ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (validation)")
    precision, recall, _ = precision_recall_curve(y, p)
    with _figure(client, run_id, "plots/pr_curve.png") as ax:
        ax.plot(recall, precision, label="model")
        ax.axhline(float(np.mean(y)), linestyle="--", color="grey", label="base rate")
        ax.set(xlabel="recall", ylabel="precision", title="precision-recall (validation)")


@dataclass
class GateVerdict:
    passed: bool
    reason: str
    metric: str  # what is compared, higher is better: "PR AUC", "R2", ...
    value: float
    floor: float
    champion_version: str | None
    champion_value: float | None
    tolerance: float

    def as_tags(self) -> dict[str, str]:
        return {f"gate.{k}": "" if v is None else str(v) for k, v in asdict(self).items()}


def champion_version(client: Any, name: str) -> Any | None:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None  # no registered model yet, or no champion alias


def gate(client: Any, name: str, value: float, val: pd.DataFrame, floor: float,
         tolerance: float, score: Any, *, metric: str = "PR AUC") -> GateVerdict:  # fmt: skip
    """The promotion gate of every workload: pass when the validation ``metric``
    (higher is better) beats the floor and is no worse than the champion's on the
    *same* validation rows (minus the tolerance). ``score(model_uri, frame)`` gives a
    version's metric on ``frame``."""
    champ = champion_version(client, name)
    champ_value = score(f"models:/{name}/{champ.version}", val) if champ is not None else None
    what = f"validation {metric}"
    if value <= floor:
        reason = f"{what} {value:.4f} is not above the floor {floor:.4f}"
        passed = False
    elif champ_value is not None and value < champ_value - tolerance:
        reason = (f"{what} {value:.4f} is below champion v{champ.version}'s "
                  f"{champ_value:.4f} minus the tolerance {tolerance:.4f}")  # fmt: skip
        passed = False
    else:
        reason = f"{what} {value:.4f} is above the floor {floor:.4f}"
        if champ_value is not None:
            reason += (
                f" and within {tolerance:.4f} of champion v{champ.version} ({champ_value:.4f})"
            )
        else:
            reason += "; there is no champion yet"
        passed = True
    return GateVerdict(passed, reason, metric, value, floor, champ.version if champ else None,
                       champ_value, tolerance)  # fmt: skip


def set_aliases(client: Any, name: str, version: str, verdict: GateVerdict) -> list[str]:
    """``challenger`` for a passing version; ``champion`` too when there is none yet."""
    if not verdict.passed:
        return []
    client.set_registered_model_alias(name, CHALLENGER, version)
    moved = [CHALLENGER]
    if verdict.champion_version is None:
        client.set_registered_model_alias(name, CHAMPION, version)
        moved.append(CHAMPION)
    return moved
