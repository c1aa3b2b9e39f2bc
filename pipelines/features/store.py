"""The fraud workload's operations on its Feast feature store: materialize, online
lookup, point-in-time training sets. The repo configuration (``feature_store.yaml``
from settings) and ``apply`` are the platform's (``shipyard.feast_repo``,
``shipyard.features``); they are re-exported here for the workload's modules.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
from shipyard.errors import DataError
from shipyard.feast_repo import open_store, repo_config, write_repo

from pipelines.features.compute import CUSTOMER_FEATURES, MERCHANT_FEATURES
from pipelines.features.repo import FEATURE_SERVICE

__all__ = [
    "FEATURE_SERVICE",
    "ENTITY_COLUMNS",
    "MaterializeResult",
    "materialize",
    "online_features",
    "open_store",
    "remove_project",
    "repo_config",
    "training_set",
    "write_repo",
]

ENTITY_COLUMNS = ("customer_id", "merchant_id", "event_timestamp", "amount")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclass
class MaterializeResult:
    end: str
    seconds: float
    views: list[str]


def _require_tables(root: Path) -> None:
    for table in ("customer_features", "merchant_features"):
        if not any((root / table).glob("month=*/*.parquet")):
            raise DataError(f"no {table} under {root}", hint="run `shipyard features build` first")


def materialize(repo: Path, end: datetime | None = None) -> MaterializeResult:
    """Load the latest feature row per entity (up to ``end``) into the online store,
    with Feast's Ray compute engine. Re-running writes the same values."""
    store = open_store(repo)
    end = end or datetime.now(timezone.utc)
    if end.tzinfo is None:
        end = end.replace(tzinfo=timezone.utc)
    views = [v.name for v in store.list_feature_views()]
    if not views:
        raise DataError("no feature views registered", hint="run `shipyard features apply` first")
    for view in store.list_feature_views():
        _require_tables(Path(view.batch_source.path).parent)
    started = time.perf_counter()
    store.materialize(start_date=_EPOCH, end_date=end, feature_views=views)
    return MaterializeResult(end.isoformat(), round(time.perf_counter() - started, 3), views)


def online_features(
    store: Any, customer_id: str, merchant_id: str, amount: float | None = None
) -> dict[str, Any]:
    """The model's online features for one transaction (request-time ones only when
    ``amount`` is given). Entities the store has never seen come back as None."""
    row: dict[str, Any] = {"customer_id": customer_id, "merchant_id": merchant_id}
    if amount is not None:
        row["amount"] = float(amount)
        features: Any = store.get_feature_service(FEATURE_SERVICE)
    else:
        features = [f"customer_features:{n}" for n in CUSTOMER_FEATURES]
        features += [f"merchant_features:{n}" for n in MERCHANT_FEATURES]
    result = store.get_online_features(features=features, entity_rows=[row]).to_dict()
    return {k: v[0] for k, v in result.items()}


def training_set(store: Any, entities: pd.DataFrame) -> pd.DataFrame:
    """Point-in-time correct features for each entity row, through Feast's
    ``get_historical_features`` on the Ray offline store.

    ``entities`` needs customer_id, merchant_id, event_timestamp (UTC) and amount;
    other columns (labels, ids) pass through unchanged.
    """
    missing = [c for c in ENTITY_COLUMNS if c not in entities.columns]
    if missing:
        raise DataError(
            f"entity rows lack column(s) {', '.join(missing)}",
            hint=f"entity rows need {', '.join(ENTITY_COLUMNS)}",
        )
    frame = entities.copy()
    ts = pd.to_datetime(frame["event_timestamp"], utc=True, errors="coerce")
    if ts.isna().any():
        bad = int(ts.isna().sum())
        raise DataError(f"{bad} entity row(s) have no valid event_timestamp")
    frame["event_timestamp"] = ts
    service = store.get_feature_service(FEATURE_SERVICE)
    job = store.get_historical_features(entity_df=frame, features=service)
    return job.to_df()


def read_entities(path: Path) -> pd.DataFrame:
    """Entity rows from parquet or CSV, named in the error when unreadable."""
    if not path.is_file():
        raise DataError(f"entities file {path} does not exist")
    try:
        if path.suffix == ".csv":
            return pd.read_csv(path)
        return pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - any reader failure
        raise DataError(f"cannot read entities file {path}: {exc}") from None


def remove_project(store: Any) -> None:
    """Delete this project's online tables and registry entries, and nothing else.

    ``FeatureStore.teardown()`` deletes *every* project in the registry, which is
    wrong for a registry shared by teams (the cluster profile's Postgres).
    """
    views = [*store.list_feature_views()]
    store.provider.teardown_infra(store.project, views, store.list_entities())
    store.registry.delete_project(store.project)
