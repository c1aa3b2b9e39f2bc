"""``shipyard train``: the fraud training job as the platform runs it (``workload.train``).

:func:`prepare` runs in the CLI process: it validates the training config, checks the
MLflow server (unreachable: one error, nothing started), and resolves everything the
job needs from the settings into a job spec file (the config, the MLflow server, the
Feast repo, the raw data, the checkpoint storage, the git commit). The job itself is
``pipelines.training.train`` (``python -m pipelines.training.job --spec FILE`` runs it).
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from shipyard.feast_repo import write_repo
from shipyard.registry import check_server
from shipyard.settings import Settings

from pipelines._cli import int_range, report_training
from pipelines.training.config import load_config
from pipelines.training.train import JobSpec, git_commit, main

__all__ = ["main", "prepare", "report", "write_spec"]

_PROJECT = Path(__file__).resolve().parents[2]


def write_spec(settings: Settings, config: Path | None = None, **overrides: Any) -> Path:
    """The job spec for ``config`` with ``overrides`` on top, saved under the run dir."""
    cfg = load_config(config, **overrides)
    check_server(settings.tracking_uri)
    spec = JobSpec(
        config=cfg.model_dump(mode="json"),
        tracking_uri=settings.tracking_uri,
        repo=str(write_repo(settings)),
        raw=str(settings.raw_data_dir),
        storage=settings.training_storage,
        git_commit=git_commit(_PROJECT),
    )
    stamp = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
    path = settings.run_dir / "train" / f"spec-{stamp}.json"
    spec.save(path)
    return path


def prepare(settings: Settings, argv: list[str]) -> list[str]:
    parser = argparse.ArgumentParser(prog="shipyard train")
    parser.add_argument("--config", type=Path, default=None,
                        help="training config (YAML/JSON); see configs/train.yaml")  # fmt: skip
    parser.add_argument("--workers", type=int_range(1, 64), default=None,
                        help="Ray Train workers")  # fmt: skip
    parser.add_argument("--epochs", type=int_range(1, 1000), default=None)
    parser.add_argument("--spec", type=Path, default=None, help="a job spec written before")
    args = parser.parse_args(argv)
    if args.spec is not None:
        check_server(settings.tracking_uri)
        return ["--spec", str(args.spec)]
    path = write_spec(settings, args.config, workers=args.workers, epochs=args.epochs)
    return ["--spec", str(path)]


def report(argv: list[str], result: dict[str, Any], echo: Callable[[str], None]) -> None:
    metrics = result["metrics"]
    report_training(result, f"PR AUC {metrics['final_val_pr_auc']:.4f}, "
                    f"ROC AUC {metrics['final_val_roc_auc']:.4f}", echo)  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
