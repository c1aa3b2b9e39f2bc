"""``shipyard features ...``: the feature pipeline and store, run on the cluster.

Heavy steps (build, materialize, training-set) are Ray jobs on the cluster from
``shipyard up`` (or ``ray.address``), their logs streamed; ``local=True`` runs the
same code in this process on a private Ray instead. Light steps (apply, get) talk
to the registry and online store directly.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from pipelines.features._feast_fixes import SETUP_HOOK
from shipyard import jobs
from shipyard.errors import ConfigError, DataError
from shipyard.settings import Settings

Say = Callable[[str], None]
# Every pipeline job's Ray workers patch Feast's point-in-time join (see _feast_fixes).
PIPELINE_RUNTIME_ENV = {"worker_process_setup_hook": SETUP_HOOK}

__all__ = ["apply", "build", "get", "materialize", "training_set"]


def _run_job(settings: Settings, module: str, args: Sequence[str], echo: Say, what: str) -> str:
    return jobs.run_module(settings, module, args, echo=echo, what=what,
                           runtime_env=PIPELINE_RUNTIME_ENV)  # fmt: skip


def build(
    settings: Settings,
    *,
    input: Path | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    local: bool = False,
    echo: Say = print,
) -> dict[str, Any]:
    """Build the feature tables from raw transactions; returns the build manifest."""
    from pipelines.features.build import MANIFEST, BuildConfig
    from pipelines.features.build import build as ray_build
    from pipelines.features.validate import check_files

    source = (input or settings.raw_data_dir).expanduser().resolve()
    out = settings.features_dir
    cfg = BuildConfig(input=source, out=out, since=since, until=until)
    if (since is None) != (until is None):
        raise DataError(
            "--since and --until go together",
            hint="give both for an incremental build, or neither to rebuild everything",
        )
    check_files(source)  # fail here, before a job starts, on unreadable input
    if local:
        from pipelines.features._ray import connect

        connect(num_cpus=settings.ray.cpus_per_node)
        ray_build(cfg, say=echo)
    else:
        args = ["--input", str(source), "--out", str(out)]
        if since is not None and until is not None:
            args += ["--since", since.isoformat(), "--until", until.isoformat()]
        _run_job(settings, "pipelines.features.build", args, echo, "features-build")
    return json.loads((out / MANIFEST).read_text())


def apply(settings: Settings) -> list[str]:
    from pipelines.features import store

    return store.apply(settings)


def materialize(
    settings: Settings, *, end: datetime | None = None, local: bool = False, echo: Say = print
) -> None:
    from pipelines.features import store

    repo = store.write_repo(settings)
    if local:
        from pipelines.features._ray import connect
        from pipelines.features.jobs import materialize_main

        connect(num_cpus=settings.ray.cpus_per_node)
        materialize_main(repo, end.isoformat() if end else None)
        return
    args = ["materialize", "--repo", str(repo)]
    if end is not None:
        args += ["--end", end.isoformat()]
    _run_job(settings, "pipelines.features.jobs", args, echo, "features-materialize")


def get(
    settings: Settings, customer: str, merchant: str, amount: float | None = None
) -> dict[str, Any]:
    from pipelines.features import store

    feature_store = store.open_store(store.write_repo(settings))
    if not feature_store.list_feature_views():
        raise ConfigError(
            f"no feature views registered in project {settings.features.project!r}",
            hint="run `shipyard features apply` and `shipyard features materialize` first",
        )
    return store.online_features(feature_store, customer, merchant, amount)


def training_set(
    settings: Settings, *, entities: Path, out: Path, local: bool = False, echo: Say = print
) -> Path:
    from pipelines.features import store

    repo = store.write_repo(settings)
    entities, out = entities.expanduser().resolve(), out.expanduser().resolve()
    store.read_entities(entities)  # unreadable input fails here, not in a job
    if local:
        from pipelines.features._ray import connect
        from pipelines.features.jobs import training_set_main

        connect(num_cpus=settings.ray.cpus_per_node)
        training_set_main(repo, entities, out)
    else:
        args = ["training-set", "--repo", str(repo), "--entities", str(entities), "--out",
                str(out)]  # fmt: skip
        _run_job(settings, "pipelines.features.jobs", args, echo, "features-training-set")
    return out
