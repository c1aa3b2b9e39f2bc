"""Feature math, validation and the pandas build, against an independent reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from shipyard.errors import DataError
from shipyard.settings import load_settings

from pipelines.data.generate import GenerateConfig, generate
from pipelines.features import compute
from pipelines.features.build import BuildConfig, build_pandas
from pipelines.features.store import repo_config
from pipelines.features.validate import check_files, row_reasons
from tests.features_support import (
    assert_features_equal,
    bad_rows,
    edge_cases,
    reference,
    ts,
    write_raw,
)

NOW = pd.Timestamp("2026-11-21", tz="UTC")


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    out = tmp_path_factory.mktemp("raw") / "tx"
    generate(GenerateConfig(rows=8000, seed=11, days=30), out)
    frame = pd.concat([pd.read_parquet(out), edge_cases()], ignore_index=True)
    return frame.drop(columns=[c for c in frame.columns if c == "date"])


def _features_at(raw: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
    cust = compute.customer_features(raw)
    merch = compute.merchant_features(raw)
    rows = rows.assign(event_timestamp=rows["event_timestamp"].dt.floor("s"))
    got = rows.merge(cust, on=["customer_id", "event_timestamp"], how="left")
    got = got.merge(merch, on=["merchant_id", "event_timestamp"], how="left")
    got.index = rows.index
    return got


def test_features_match_the_reference_for_sampled_and_edge_rows(raw: pd.DataFrame) -> None:
    rows = pd.concat(
        [raw.sample(250, random_state=3), raw[raw.transaction_id.str.contains("edge")]]
    )
    rows = rows.rename(columns={"timestamp": "event_timestamp"})
    rows = rows[["customer_id", "merchant_id", "event_timestamp", "amount"]]
    expected = reference(raw, rows).drop(columns=["amount_to_cust_mean_7d"])
    assert_features_equal(_features_at(raw, rows), expected)


def test_one_row_per_entity_and_time(raw: pd.DataFrame) -> None:
    cust = compute.customer_features(raw)
    assert not cust.duplicated(["customer_id", "event_timestamp"]).any()
    seconds = raw.assign(timestamp=raw["timestamp"].dt.floor("s"))
    assert len(cust) == len(seconds.drop_duplicates(["customer_id", "timestamp"]))


def test_edge_cases_by_hand(raw: pd.DataFrame) -> None:
    edge = raw[raw.transaction_id.str.contains("edge")].set_index("transaction_id")
    rows = edge.rename(columns={"timestamp": "event_timestamp"})
    got = _features_at(raw, rows[["customer_id", "merchant_id", "event_timestamp", "amount"]])
    first = got.loc["tx_edge_01"]
    assert first.cust_tx_count_7d == 0 and np.isnan(first.cust_secs_since_prev_tx)
    assert first.cust_amount_mean_7d == 0.0
    # 00:10:00.1 sees both transactions of the evening before, across midnight
    assert got.loc["tx_edge_03", "cust_tx_count_1h"] == 2
    # three in the same second (two in the same microsecond) share one customer row that
    # excludes all of them
    same_second = got.loc[["tx_edge_03", "tx_edge_04", "tx_edge_05"]]
    features = [c for c in same_second.columns if c.startswith("cust_")]
    assert (same_second[features].nunique(dropna=False) == 1).all()
    # [T - 1h, T) includes the transaction exactly an hour before
    assert got.loc["tx_edge_06", "cust_tx_count_1h"] == 5
    assert got.loc["tx_edge_06", "cust_amount_sum_1h"] == pytest.approx(150.0)
    assert got.loc["tx_edge_06", "cust_distinct_merchants_24h"] == 2
    assert got.loc["tx_edge_07", "cust_tx_count_7d"] == 1
    assert got.loc["tx_edge_07", "cust_secs_since_prev_tx"] == 7 * 86400
    # the fraud label lands within tx_edge_03's second: not yet known there
    assert got.loc["tx_edge_05", "merch_fraud_count_30d"] == 0
    assert got.loc["tx_edge_05", "merch_labeled_count_30d"] == 1
    assert got.loc["tx_edge_06", "merch_fraud_count_30d"] == 1
    assert got.loc["tx_edge_10", "cust_tx_count_24h"] == 0


def test_each_rule_has_its_reason() -> None:
    bad, expected = bad_rows(edge_cases())
    reasons = dict(zip(bad.transaction_id, row_reasons(bad, NOW), strict=True))
    for tid, reason in expected.items():
        if not tid.startswith("dup:"):
            assert reasons[tid] == reason, tid
    assert all(r is None for r in row_reasons(edge_cases(), NOW))


def test_unreadable_and_incomplete_files_fail_naming_file_and_column(tmp_path: Path) -> None:
    good = edge_cases()
    write_raw(good, tmp_path / "ok" / "a.parquet")
    assert len(check_files(tmp_path / "ok")) == 1

    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "b.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match=r"cannot read .*b\.parquet"):
        check_files(tmp_path / "junk")

    (tmp_path / "short").mkdir()
    pq.write_table(pa.Table.from_pandas(good.drop(columns=["currency"])),
                   tmp_path / "short" / "c.parquet")  # fmt: skip
    with pytest.raises(DataError, match=r"c\.parquet: required column 'currency' is missing"):
        check_files(tmp_path / "short")

    (tmp_path / "typed").mkdir()
    pq.write_table(pa.Table.from_pandas(good.astype({"amount": str})),
                   tmp_path / "typed" / "d.parquet")  # fmt: skip
    with pytest.raises(DataError, match=r"d\.parquet: column 'amount' has type string"):
        check_files(tmp_path / "typed")


@pytest.fixture
def planted(tmp_path: Path, raw: pd.DataFrame) -> tuple[Path, pd.DataFrame, dict[str, str]]:
    good = raw.sample(3000, random_state=5)
    good = pd.concat([good, raw[raw.transaction_id.str.contains("edge")]]).drop_duplicates(
        "transaction_id"
    )
    bad, expected = bad_rows(good)
    write_raw(good.iloc[:2000], tmp_path / "in" / "part-0.parquet")
    write_raw(pd.concat([good.iloc[2000:], bad]), tmp_path / "in" / "extra" / "part-1.parquet")
    return tmp_path / "in", good, expected


def _tables(root: Path) -> dict[str, pd.DataFrame]:
    out = {}
    for name in ("customer_features", "merchant_features"):
        frame = pd.read_parquet(root / name)
        keys = [c for c in frame.columns if c.endswith("_id")] + ["event_timestamp"]
        out[name] = frame.sort_values(keys).reset_index(drop=True)
    return out


def test_pandas_build_quarantines_every_bad_row_and_accepts_every_good_one(
    planted: tuple[Path, pd.DataFrame, dict[str, str]], tmp_path: Path
) -> None:
    source, good, expected = planted
    result = build_pandas(
        BuildConfig(input=source, out=tmp_path / "f", now=NOW), say=lambda m: None
    )
    assert result.rows_read == len(good) + len(expected)
    assert result.accepted == len(good)
    assert result.quarantined == {r: 1 for r in expected.values()}
    quarantine = pd.read_parquet(tmp_path / "f" / "quarantine")
    got = dict(zip(quarantine.transaction_id, quarantine.reason, strict=True))
    for tid, reason in expected.items():
        assert got[tid.removeprefix("dup:")] == reason
    # the duplicate that was kept is the earlier, original row
    dup_id = next(t for t in expected if t.startswith("dup:")).removeprefix("dup:")
    kept = quarantine[quarantine.transaction_id == dup_id]
    original = good[good.transaction_id == dup_id].iloc[0]
    assert (kept.timestamp > original.timestamp).all()
    seconds = good.assign(timestamp=good["timestamp"].dt.floor("s"))
    assert result.customer_rows == len(seconds.drop_duplicates(["customer_id", "timestamp"]))


def test_building_twice_gives_the_same_tables_and_incremental_matches_full(
    planted: tuple[Path, pd.DataFrame, dict[str, str]], tmp_path: Path
) -> None:
    source, _, _ = planted
    out = tmp_path / "f"
    build_pandas(BuildConfig(input=source, out=out, now=NOW), say=lambda m: None)
    first = _tables(out)
    build_pandas(BuildConfig(input=source, out=out, now=NOW), say=lambda m: None)
    second = _tables(out)
    for name in first:
        pd.testing.assert_frame_equal(first[name], second[name])

    since, until = ts("2026-08-11"), ts("2026-08-14")
    inc = build_pandas(BuildConfig(input=source, out=out, since=since, until=until, now=NOW),
                       say=lambda m: None)  # fmt: skip
    assert inc.since == since.isoformat()
    after = _tables(out)
    for name in first:
        pd.testing.assert_frame_equal(first[name], after[name])  # same rows, window rebuilt


def test_since_needs_until(tmp_path: Path, planted: tuple) -> None:
    with pytest.raises(DataError, match="--since and --until go together"):
        build_pandas(BuildConfig(input=planted[0], out=tmp_path / "f", since=ts("2026-08-01")),
                     say=lambda m: None)  # fmt: skip


def test_repo_config_per_profile(shipyard_env: dict[str, str], monkeypatch) -> None:
    local = repo_config(load_settings())
    assert local["online_store"]["type"] == "sqlite"
    assert local["registry"]["registry_type"] == "file"
    assert local["offline_store"]["type"] == "ray"
    assert local["batch_engine"]["type"] == "ray.engine"
    monkeypatch.setenv("SHIPYARD_PROFILE", "cluster")
    monkeypatch.setenv("SHIPYARD_FEATURES__REDIS", "redis.internal:6380")
    cluster = repo_config(load_settings())
    assert cluster["online_store"] == {"type": "redis", "connection_string": "redis.internal:6380"}
    assert cluster["registry"]["registry_type"] == "sql"
    assert cluster["registry"]["path"].startswith("postgresql+psycopg://")
