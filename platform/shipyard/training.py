"""``shipyard train``: the training pipeline as a Ray job (or in-process).

The CLI resolves everything the job needs from the user's settings into a job
spec file (the config, the MLflow server, the Feast repo, the raw data, the
checkpoint storage, the git commit), checks the MLflow server before submitting
anything, then streams the job's logs and returns its result.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from shipyard import jobs
from shipyard.errors import JobError
from shipyard.features import PIPELINE_RUNTIME_ENV
from shipyard.settings import Settings

Say = Callable[[str], None]

__all__ = ["train"]

_PROJECT = Path(__file__).resolve().parents[2]


def train(
    settings: Settings,
    *,
    config: Path | None = None,
    workers: int | None = None,
    epochs: int | None = None,
    local: bool = False,
    echo: Say = print,
    **overrides: Any,
) -> dict[str, Any]:
    """Train, register and gate a model; returns the job's result (run, version, gate)."""
    from pipelines.features import store
    from pipelines.training.config import load_config
    from shipyard.registry import check_server
    from pipelines.training.train import JobSpec, git_commit, run

    cfg = load_config(config, workers=workers, epochs=epochs, **overrides)
    check_server(settings.tracking_uri)
    spec = JobSpec(
        config=cfg.model_dump(mode="json"),
        tracking_uri=settings.tracking_uri,
        repo=str(store.write_repo(settings)),
        raw=str(settings.raw_data_dir),
        storage=settings.training_storage,
        git_commit=git_commit(_PROJECT),
    )
    if local:
        from pipelines.features._ray import connect

        connect(num_cpus=settings.ray.cpus_per_node)
        return run(spec, say=echo).__dict__
    path = (
        settings.run_dir
        / "train"
        / f"spec-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}.json"
    )
    spec.save(path)
    job_id = jobs.run_module(settings, "pipelines.training.train", ["--spec", str(path)],
                             echo=echo, what="train", runtime_env=PIPELINE_RUNTIME_ENV)  # fmt: skip
    for line in reversed(jobs.job_logs(settings, job_id).splitlines()):
        at = line.rfind("RESULT {")  # progress bars may share the line
        if at >= 0:
            return {**json.loads(line[at + len("RESULT ") :]), "job_id": job_id}
    raise JobError(f"training job {job_id} succeeded but printed no result",
                   hint=f"see `shipyard job logs {job_id}`")  # fmt: skip
