"""A fix for Feast 0.67's Ray offline store point-in-time join, installed in every
Ray worker of our jobs (``worker_process_setup_hook``).

Feast's broadcast join sorts the feature rows by ``(entity key, timestamp)`` and
then calls ``pandas.merge_asof(..., by=key)``, which needs the right side sorted
by the timestamp alone; it always raises, and Feast falls back to
``_manual_point_in_time_join``, a Python loop over every entity row that scans
every feature row: quadratic (150 s for 19k rows, over half an hour for 70k).
This replaces that fallback with the same join done by ``merge_asof`` on
correctly sorted frames: for each entity row, the latest feature row of the same
key with ``timestamp <= the row's``, ties broken by the later row, as the loop
does. List or object-typed features keep Feast's own loop.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["SETUP_HOOK", "install", "point_in_time_join"]

SETUP_HOOK = "pipelines.features._feast_fixes.install"
_ROW, _TS = "__shipyard_row", "__shipyard_ts"


def point_in_time_join(
    batch: pd.DataFrame,
    features: pd.DataFrame,
    join_keys: list[str],
    feature_join_keys: list[str],
    timestamp_field: str,
    requested: list[str],
) -> pd.DataFrame:
    """``batch`` with ``requested`` features as of each row's timestamp (NaN when none)."""
    import numpy as np
    import pandas as pd

    feats = [f for f in requested if f in features.columns]
    right = features[[*feature_join_keys, timestamp_field, *feats]].copy()
    right = right.rename(columns={timestamp_field: _TS})
    right_keys = [f"__shipyard_key_{i}" for i in range(len(feature_join_keys))]
    right = right.rename(columns=dict(zip(feature_join_keys, right_keys, strict=True)))
    left = batch.drop(columns=[c for c in feats if c in batch.columns]).copy()
    left[_ROW] = np.arange(len(left))
    left[_TS] = left[timestamp_field]
    for key, rkey in zip(join_keys, right_keys, strict=True):
        if left[key].dtype != right[rkey].dtype:
            left[key], right[rkey] = left[key].astype(str), right[rkey].astype(str)
    merged = pd.merge_asof(
        left.sort_values(_TS, kind="mergesort"),
        right.sort_values(_TS, kind="mergesort"),
        on=_TS,
        left_by=join_keys,
        right_by=right_keys,
        direction="backward",
        allow_exact_matches=True,
    )
    merged = merged.sort_values(_ROW).drop(columns=[_ROW, _TS, *right_keys])
    merged.index = batch.index
    for feat in requested:
        if feat not in merged.columns:
            merged[feat] = np.nan
    return merged


_MODULE = "feast.infra.offline_stores.contrib.ray_offline_store.ray"


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Patches the Feast module right after it is first imported, so a worker that
    never joins never pays for importing Feast."""

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name != _MODULE:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_and_patch(module: Any) -> None:
            exec_module(module)
            _patch(module)

        spec.loader.exec_module = exec_and_patch  # type: ignore[method-assign]
        return spec


def install() -> None:
    """Patch Feast's fallback join in this process, now if Feast's Ray offline store
    is loaded, else when it is (idempotent; cheap: imports nothing)."""
    module = sys.modules.get(_MODULE)
    if module is not None:
        _patch(module)
    elif not any(isinstance(f, _PatchOnImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _PatchOnImport())


def _patch(ray_store: Any) -> None:
    processor = ray_store.RayDataProcessor
    if getattr(processor, "_shipyard_patched", False):
        return
    original = processor._manual_point_in_time_join

    def _manual_point_in_time_join(self: Any, batch_df: pd.DataFrame, features_df: pd.DataFrame,
                                   join_keys: list[str], feature_join_keys: list[str],
                                   timestamp_field: str, requested_feats: list[str]) -> pd.DataFrame:  # fmt: skip
        scalar = all(
            f not in features_df.columns or features_df[f].dtype != object for f in requested_feats
        )
        if not scalar or len(join_keys) != len(feature_join_keys) or not join_keys:
            return original(self, batch_df, features_df, join_keys, feature_join_keys,
                            timestamp_field, requested_feats)  # fmt: skip
        return point_in_time_join(batch_df, features_df, join_keys, feature_join_keys,
                                  timestamp_field, requested_feats)  # fmt: skip

    processor._shipyard_original_join = original  # kept: tests use it as the oracle
    processor._manual_point_in_time_join = _manual_point_in_time_join
    processor._shipyard_patched = True
