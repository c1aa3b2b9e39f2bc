"""``shipyard features apply``: register the workload's Feast definitions in the
store that the settings configure.

What the repo defines (entities, views, feature services) belongs to the workload,
named by ``workload.feature_definitions``; where its registry and stores live
belongs to the platform (:mod:`shipyard.feast_repo`). The heavy feature commands
(build, materialize, training-set) are the workload's own entrypoints
(:mod:`shipyard.workload`).
"""

from __future__ import annotations

from shipyard import workload
from shipyard.errors import ConfigError
from shipyard.feast_repo import open_store, write_repo
from shipyard.settings import Settings

__all__ = ["apply"]


def apply(settings: Settings) -> list[str]:
    """Register the entities, views and feature services; returns their names."""
    definitions = workload.load_object(settings, "feature_definitions")
    store = open_store(write_repo(settings), compute=False)  # registering computes nothing
    objects = list(definitions(settings.features_dir))
    try:
        store.apply(objects)
    except Exception as exc:  # the registry's own errors: connection, permissions
        raise ConfigError(
            f"feast apply failed for project {settings.features.project!r}: {exc}",
            hint="check features.registry_url / features.redis and that the servers run",
        ) from None
    return [f"{type(o).__name__} {o.name}" for o in objects]
