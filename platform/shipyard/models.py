"""``shipyard models``: registered models, their versions, aliases, metrics, gate and lineage.

Read from the MLflow Model Registry over HTTP. A reference is ``NAME`` (the
latest version), ``NAME@ALIAS`` or ``NAME/VERSION``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from shipyard.errors import ConfigError, ShipyardError
from shipyard.settings import Settings

__all__ = ["ModelRef", "VersionInfo", "list_models", "parse_ref", "show"]

METRICS = ("final_val_pr_auc", "final_val_roc_auc", "baseline_val_pr_auc", "baseline_val_roc_auc")
_REF = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]*)(?:@(?P<alias>[A-Za-z0-9_-]+)|/(?P<version>\d+))?$")  # fmt: skip


class ModelNotFoundError(ShipyardError):
    """No such registered model, version or alias."""

    exit_code = 4


@dataclass
class ModelRef:
    name: str
    alias: str | None = None
    version: str | None = None


@dataclass
class VersionInfo:
    name: str
    version: str
    aliases: list[str]
    status: str
    created: int
    run_id: str
    run_url: str
    metrics: dict[str, float] = field(default_factory=dict)
    gate: dict[str, str] = field(default_factory=dict)
    lineage: dict[str, str] = field(default_factory=dict)
    run_status: str = ""


def parse_ref(ref: str) -> ModelRef:
    match = _REF.match(ref.strip())
    if not match:
        raise ConfigError(
            f"{ref!r} is not a model reference",
            hint="use NAME, NAME@ALIAS (e.g. fraud-detector@champion) or NAME/VERSION",
        )
    return ModelRef(match["name"], match["alias"], match["version"])


def _client(settings: Settings) -> Any:
    from mlflow import MlflowClient

    from shipyard.registry import check_server

    check_server(settings.tracking_uri)
    return MlflowClient(tracking_uri=settings.tracking_uri)


def _aliases_by_version(model: Any) -> dict[str, list[str]]:
    """From the registered model: version search results do not carry aliases."""
    out: dict[str, list[str]] = {}
    for alias, version in (model.aliases or {}).items():
        out.setdefault(str(version), []).append(alias)
    return {v: sorted(a) for v, a in out.items()}


def _describe(
    settings: Settings, client: Any, mv: Any, aliases: dict[str, list[str]]
) -> VersionInfo:
    tags = dict(mv.tags or {})
    info = VersionInfo(
        name=mv.name, version=str(mv.version), aliases=aliases.get(str(mv.version), []),
        status=mv.status, created=int(mv.creation_timestamp or 0), run_id=mv.run_id or "",
        run_url="",
        gate={k[len("gate."):]: v for k, v in tags.items() if k.startswith("gate.")},
        lineage={k: v for k, v in tags.items() if not k.startswith(("gate.", "mlflow."))},
    )  # fmt: skip
    if mv.run_id:
        run = client.get_run(mv.run_id)
        info.metrics = {k: v for k, v in run.data.metrics.items() if k in METRICS}
        info.run_status = run.info.status
        info.run_url = (f"{settings.tracking_uri}/#/experiments/{run.info.experiment_id}"
                        f"/runs/{mv.run_id}")  # fmt: skip
    return info


def list_models(settings: Settings) -> list[VersionInfo]:
    """Every version of every registered model, newest first within a model."""
    client = _client(settings)
    out: list[VersionInfo] = []
    for model in sorted(client.search_registered_models(), key=lambda m: m.name):
        versions = client.search_model_versions(f"name='{model.name}'")
        aliases = _aliases_by_version(model)
        for mv in sorted(versions, key=lambda v: -int(v.version)):
            out.append(_describe(settings, client, mv, aliases))
    return out


def show(settings: Settings, ref: str) -> VersionInfo:
    from mlflow.exceptions import MlflowException

    parsed = parse_ref(ref)
    client = _client(settings)
    try:
        if parsed.alias:
            mv = client.get_model_version_by_alias(parsed.name, parsed.alias)
        elif parsed.version:
            mv = client.get_model_version(parsed.name, parsed.version)
        else:
            versions = client.search_model_versions(f"name='{parsed.name}'")
            if not versions:
                raise MlflowException(f"no versions of {parsed.name}")
            mv = max(versions, key=lambda v: int(v.version))
    except MlflowException:
        known = ", ".join(m.name for m in client.search_registered_models()) or "none"
        raise ModelNotFoundError(
            f"no registered model version {ref!r}",
            hint=f"registered models: {known}; see `shipyard models list`",
        ) from None
    return _describe(settings, client, mv,
                     _aliases_by_version(client.get_registered_model(parsed.name)))  # fmt: skip
