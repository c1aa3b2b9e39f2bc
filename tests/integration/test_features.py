"""The feature pipeline and store on the real local cluster, for both profiles.

One build (a Ray job, through the CLI) over generated data plus planted edge cases
and bad rows; then each profile applies and materializes (Ray job, Feast's Ray
engine), checked against the offline tables, and the cluster profile answers a
point-in-time training set (Ray job, Ray offline store), checked against an
independent pandas reference. The cluster profile talks to the real
Postgres (SQL registry) and Redis (online store) on their default ports.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.features.build import BuildConfig, build_pandas
from pipelines.features.compute import CUSTOMER_FEATURES, MERCHANT_FEATURES
from pipelines.features.store import open_store, remove_project
from tests.conftest import require_service
from tests.features_support import assert_features_equal, reference
from tests.integration.conftest import Built, Platform

pytestmark = pytest.mark.integration


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    keys = [c for c in frame.columns if c.endswith("_id")] + ["event_timestamp"]
    return frame.drop(columns=["month"], errors="ignore").sort_values(keys).reset_index(drop=True)


def test_build_job_quarantines_planted_rows_and_agrees_with_pandas(
    built: Built, tmp_path: Path
) -> None:
    for reason in set(built.expected.values()):
        assert f"{reason}: 1" in built.output
    assert f"accepted {len(built.good):,}" in built.output
    quarantine = pd.read_parquet(built.features / "quarantine")
    assert sorted(quarantine.reason) == sorted(built.expected.values())

    baseline = build_pandas(BuildConfig(input=built.raw_dir, out=tmp_path), say=lambda m: None)
    assert baseline.accepted == len(built.good)
    for table in ("customer_features", "merchant_features"):
        ray_rows = _sorted(pd.read_parquet(built.features / table))
        pandas_rows = _sorted(pd.read_parquet(tmp_path / table))
        pd.testing.assert_frame_equal(ray_rows, pandas_rows, check_exact=False, atol=1e-6)


def _sample(built: Built) -> pd.DataFrame:
    good = built.good
    rows = pd.concat(
        [good.sample(120, random_state=21), good[good.transaction_id.str.contains("edge")]]
    )
    return rows.rename(columns={"timestamp": "event_timestamp"})[
        ["transaction_id", "customer_id", "merchant_id", "event_timestamp", "amount", "is_fraud"]
    ].reset_index(drop=True)


def _latest(features: Path, table: str, key: str) -> pd.DataFrame:
    frame = pd.read_parquet(features / table).sort_values("event_timestamp", kind="stable")
    return frame.groupby(key).tail(1).set_index(key).sort_index()


def _assert_online_is_latest_offline(repo: Path, features: Path) -> None:
    store = open_store(repo)
    for table, key, names in (
        ("customer_features", "customer_id", CUSTOMER_FEATURES),
        ("merchant_features", "merchant_id", MERCHANT_FEATURES),
    ):
        latest = _latest(features, table, key)
        online = store.get_online_features(
            features=[f"{table}:{n}" for n in names],
            entity_rows=[{key: k} for k in latest.index],
        ).to_df()
        online = online.set_index(key).loc[latest.index]
        assert not online[list(names)].isna().all(axis=1).any(), f"{table}: entities missing"
        assert_features_equal(online, latest[list(names)], context=f"{table} online vs offline: ")


def _check_training_set(platform: Platform, env: dict[str, str], built: Built, tmp: Path) -> None:
    rows = _sample(built)
    entities = tmp / "entities.parquet"
    rows.to_parquet(entities)
    out = tmp / "training.parquet"
    result = platform.run_env(env, "features", "training-set", "--entities", str(entities),
                              "--out", str(out), timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    got = pd.read_parquet(out)
    assert len(got) == len(rows)  # every entity row comes back, none duplicated
    got = got.set_index("transaction_id").loc[rows.transaction_id]
    got.index = rows.index
    assert (got["is_fraud"].to_numpy() == rows["is_fraud"].to_numpy()).all()  # labels ride along
    assert_features_equal(got, reference(built.good, rows), context="training set: ")


def _materialize(platform: Platform, env: dict[str, str]) -> None:
    result = platform.run_env(env, "features", "materialize", timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def test_local_profile_apply_materialize_and_get(platform: Platform, built: Built) -> None:
    """The local profile (file registry, SQLite). The point-in-time training set is
    checked on the cluster profile below: the offline store (Ray, over the same
    parquet) is the same on both, and the training tests join through it here."""
    env = platform.env
    applied = platform.run_env(env, "features", "apply")
    assert applied.returncode == 0, applied.stderr
    assert "applied FeatureService fraud_model_v1" in applied.stdout
    _materialize(platform, env)
    _assert_online_is_latest_offline(built.features / "repo" / "local", built.features)

    shown = platform.run_env(env, "features", "get", "--customer", "c_edge_1", "--merchant",
                             "m_edge_1", "--amount", "70")  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    # c_edge_1's latest row is tx_edge_07's: one transaction in the 7 days before it
    assert "cust_tx_count_7d" in shown.stdout and "amount_to_cust_mean_7d       1" in shown.stdout


def test_cluster_profile_on_postgres_and_redis(
    platform: Platform, built: Built, tmp_path: Path
) -> None:
    require_service("Postgres", "127.0.0.1", 5432)
    require_service("Redis", "127.0.0.1", 6379)
    project = f"test_{uuid.uuid4().hex[:10]}"
    env = {**platform.env, "SHIPYARD_PROFILE": "cluster", "SHIPYARD_FEATURES__PROJECT": project}
    repo = built.features / "repo" / "cluster"
    try:
        applied = platform.run_env(env, "features", "apply")
        assert applied.returncode == 0, applied.stderr
        assert "(cluster profile)" in applied.stdout
        config = (repo / "feature_store.yaml").read_text()
        assert "registry_type: sql" in config and "type: redis" in config
        _materialize(platform, env)
        _assert_online_is_latest_offline(repo, built.features)
        _check_training_set(platform, env, built, tmp_path)
    finally:
        if (repo / "feature_store.yaml").exists():
            remove_project(open_store(repo))


def test_bad_input_fails_before_any_job(platform: Platform, tmp_path: Path) -> None:
    (tmp_path / "x.parquet").write_bytes(b"garbage")
    result = platform.run("features", "build", "--input", str(tmp_path))
    assert result.returncode == 2
    assert "x.parquet" in result.stderr and "Traceback" not in result.stderr
    missing = platform.run("features", "training-set", "--entities", str(tmp_path / "no.parquet"),
                           "--out", str(tmp_path / "o.parquet"))  # fmt: skip
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    np.testing.assert_equal(missing.stdout, "")
