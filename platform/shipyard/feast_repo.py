"""The Feast repo configuration, rendered from settings per profile, and opening it.

``<features>/repo/<profile>/feature_store.yaml`` is one file that every process (the
CLI, Ray jobs, the serving replicas) opens; ``feast -c <that folder> ...`` works on it
too. What the repo *defines* (entities, views, feature services) belongs to the
workload; where its registry and stores live belongs to the platform.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from shipyard.errors import ConfigError
from shipyard.settings import Settings

__all__ = ["open_store", "repo_config", "write_repo"]


def repo_config(settings: Settings) -> dict[str, Any]:
    """The ``feature_store.yaml`` content for the settings' profile."""
    root = settings.features_dir
    if settings.profile == "cluster":
        registry: dict[str, Any] = {
            "registry_type": "sql",
            "path": settings.features.registry_url,
            "cache_ttl_seconds": 60,
            "sqlalchemy_config_kwargs": {"echo": False, "pool_pre_ping": True},
        }
        online: dict[str, Any] = {"type": "redis", "connection_string": settings.features.redis}
        write_concurrency = 2
    else:
        registry = {"registry_type": "file", "path": str(root / "registry.db"),
                    "cache_ttl_seconds": 0}  # fmt: skip
        online = {"type": "sqlite", "path": str(root / "online.db")}
        write_concurrency = 1  # one writer for a SQLite file
    return {
        "project": settings.features.project,
        "provider": "local",
        "registry": registry,
        "online_store": online,
        "offline_store": {"type": "ray", "storage_path": str(root / "ray_storage")},
        "batch_engine": {"type": "ray.engine", "write_concurrency": write_concurrency},
        "entity_key_serialization_version": 3,
    }


def write_repo(settings: Settings) -> Path:
    """Render the repo configuration; returns the repo directory."""
    repo = settings.features_dir / "repo" / settings.profile
    repo.mkdir(parents=True, exist_ok=True)
    text = "# Rendered by shipyard from settings; edit settings, not this file.\n"
    text += yaml.safe_dump(repo_config(settings), sort_keys=False)
    target = repo / "feature_store.yaml"
    if not target.exists() or target.read_text() != text:
        target.write_text(text)
    return repo


def open_store(repo: Path, *, compute: bool = True) -> Any:
    """A FeatureStore on a rendered repo directory. ``compute=False``: with Feast's local
    batch engine instead of the repo's Ray engine, for what needs no compute (``apply``
    and online reads): the Ray engine initialises Ray as soon as it is built, which in a
    process outside a Ray job starts a private Ray instance for nothing."""
    from feast import FeatureStore, RepoConfig

    path = repo / "feature_store.yaml"
    if not path.is_file():
        raise ConfigError(
            f"no feature_store.yaml in {repo}", hint="run `shipyard features apply` first"
        )
    if compute:
        return FeatureStore(repo_path=str(repo))
    data = yaml.safe_load(path.read_text())
    data["batch_engine"] = {"type": "local"}
    return FeatureStore(repo_path=str(repo), config=RepoConfig(repo_path=repo, **data))
