"""The raw-transaction generator: determinism, size, schema, fraud, label delays."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as pads
import pytest
from shipyard.errors import DataError

from pipelines.data.generate import CHUNK_ROWS, SCHEMA, GenerateConfig, generate


def read(path: Path) -> pd.DataFrame:
    table = pads.dataset(path, format="parquet", partitioning="hive").to_table()
    return table.to_pandas().sort_values("transaction_id").reset_index(drop=True)


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    """More than one chunk, so chunk boundaries are exercised."""
    out = tmp_path_factory.mktemp("gen") / "tx"
    generate(GenerateConfig(rows=CHUNK_ROWS + 20_001, seed=11, days=30), out)
    return out, read(out)


def test_exact_row_count_and_unique_ids(big: tuple[Path, pd.DataFrame]) -> None:
    _, df = big
    assert len(df) == CHUNK_ROWS + 20_001
    assert df["transaction_id"].is_unique


def test_schema(big: tuple[Path, pd.DataFrame]) -> None:
    out, _ = big
    files = sorted(out.glob("date=*/part-*.parquet"))
    assert files
    schema = pads.dataset(files[0], format="parquet").schema
    assert schema.equals(SCHEMA), schema
    assert (out / "_manifest.json").exists()


def test_same_seed_same_bytes_different_seed_different_data(tmp_path: Path) -> None:
    cfg = GenerateConfig(rows=30_000, seed=5)
    a, b = generate(cfg, tmp_path / "a"), generate(cfg, tmp_path / "b")
    files_a = sorted(p.relative_to(a.path) for p in a.path.rglob("*.parquet"))
    files_b = sorted(p.relative_to(b.path) for p in b.path.rglob("*.parquet"))
    assert files_a == files_b
    for rel in files_a:
        assert (a.path / rel).read_bytes() == (b.path / rel).read_bytes()
    c = generate(GenerateConfig(rows=30_000, seed=6), tmp_path / "c")
    assert not read(a.path).equals(read(c.path))


def test_timestamps_fall_in_the_period_and_in_their_partition(
    big: tuple[Path, pd.DataFrame],
) -> None:
    _, df = big
    start = datetime(2026, 7, 1, tzinfo=timezone.utc)
    assert df["timestamp"].min() >= pd.Timestamp(start)
    assert df["timestamp"].max() < pd.Timestamp(start) + pd.Timedelta(days=30)
    assert (df["timestamp"].dt.strftime("%Y-%m-%d") == df["date"].astype(str)).all()


def test_labels_are_known_only_after_the_transaction(big: tuple[Path, pd.DataFrame]) -> None:
    _, df = big
    delay = df["label_available_at"] - df["timestamp"]
    assert (delay >= pd.Timedelta(days=1)).all()
    assert (delay <= pd.Timedelta(days=90)).all()
    # chargebacks (fraud) take longer than settlement (legitimate) on average
    assert delay[df["is_fraud"]].mean() > delay[~df["is_fraud"]].mean()


def test_fraud_rate_is_plausible_and_patterns_are_planted(big: tuple[Path, pd.DataFrame]) -> None:
    _, df = big
    fraud = df["is_fraud"]
    assert 0.005 < fraud.mean() < 0.03
    # unusual amounts: fraud spends several times a customer's usual amount
    assert df.loc[fraud, "amount"].median() > 3 * df.loc[~fraud, "amount"].median()
    # foreign countries: fraud happens abroad far more often
    home = {"US", "CA", "GB", "DE", "FR", "ES", "NL", "AU"}
    abroad = ~df["country"].isin(home)
    assert abroad[fraud].mean() > 5 * abroad[~fraud].mean()
    # risky merchants: a few merchants carry most of the fraud
    by_merchant = df.groupby("merchant_id")["is_fraud"].sum().sort_values(ascending=False)
    top = by_merchant.head(int(len(by_merchant) * 0.1)).sum()
    assert top > 0.5 * fraud.sum()
    # bursts: fraud rows follow another transaction of the same customer within minutes
    ordered = df.sort_values(["customer_id", "timestamp"])
    gap = ordered.groupby("customer_id")["timestamp"].diff()
    quick = gap < pd.Timedelta(minutes=10)
    assert quick[ordered["is_fraud"]].mean() > 10 * quick[~ordered["is_fraud"]].mean()


def test_values_are_clean(big: tuple[Path, pd.DataFrame]) -> None:
    _, df = big
    assert (df["amount"] > 0).all()
    assert not df.isna().any().any()
    assert set(df["currency"]) <= {"USD", "CAD", "GBP", "EUR", "AUD"}
    assert np.isclose(df["amount"], df["amount"].round(2)).all()


def test_refuses_to_overwrite_without_flag_and_foreign_dirs(tmp_path: Path) -> None:
    out = tmp_path / "tx"
    generate(GenerateConfig(rows=1000), out)
    with pytest.raises(DataError, match="not empty"):
        generate(GenerateConfig(rows=1000), out)
    generate(GenerateConfig(rows=2000), out, overwrite=True)
    assert len(read(out)) == 2000
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("keep me")
    with pytest.raises(DataError, match="does not hold a generated dataset"):
        generate(GenerateConfig(rows=1000), foreign, overwrite=True)
    assert (foreign / "precious.txt").exists()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"rows": 0}, "rows must be a positive integer"), ({"rows": 10, "days": 0}, "days"),
     ({"rows": 10, "fraud_rate": 0.9}, "fraud_rate")],
)  # fmt: skip
def test_bad_config_names_the_field(kwargs: dict, message: str) -> None:
    with pytest.raises(DataError, match=message):
        GenerateConfig(**kwargs)


def test_extend_appends_a_shifted_world_after_the_end_and_leaves_the_data_alone(
    tmp_path: Path,
) -> None:
    import hashlib
    import json

    from pipelines.data.generate import Shift, extend

    def digests(root: Path) -> dict[str, str]:
        return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in root.rglob("*.parquet")}  # fmt: skip

    out = tmp_path / "tx"
    generate(GenerateConfig(rows=30_000, seed=5, days=30), out)
    before, base = digests(out), read(out)
    shift = Shift(new_merchants=40, new_share=0.5, amount_scale=3.0)
    added = extend(out, 10, shift=shift)
    after = digests(out)
    assert {k: after[k] for k in before} == before  # the existing files are untouched
    both = read(out)
    new = both[~both["transaction_id"].isin(base["transaction_id"])]
    assert len(new) == added.rows == 10_000  # the dataset's daily rate
    assert both["transaction_id"].is_unique
    end = pd.Timestamp("2026-07-31", tz="UTC")
    assert new["timestamp"].min() >= end > base["timestamp"].max()
    assert new["timestamp"].max() < end + pd.Timedelta(days=10)
    unseen = ~new["merchant_id"].isin(base["merchant_id"])
    legit = ~new["is_fraud"]
    assert 0.4 < unseen[legit].mean() < 0.6  # half the legitimate spending moved
    assert new["customer_id"].isin(base["customer_id"]).mean() > 0.99  # the same customers
    ratio = new["amount"].median() / base["amount"].median()
    assert 2.4 < ratio < 3.6, ratio
    assert 0.005 < new["is_fraud"].mean() < 0.03
    meta = json.loads((out / "_manifest.json").read_text())
    assert meta["rows"] == 30_000 and meta["extensions"][0]["shift"]["amount_scale"] == 3.0
    # the next extension follows this one; the same steps give the same bytes
    extend(out, 5)
    assert read(out)["timestamp"].max() >= end + pd.Timedelta(days=10)
    again = tmp_path / "again"
    generate(GenerateConfig(rows=30_000, seed=5, days=30), again)
    extend(again, 10, shift=shift)
    extend(again, 5)
    assert digests(again) == digests(out)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"new_share": 0.5}, "needs new_merchants"), ({"new_share": 1.5}, "new_share"),
     ({"amount_scale": 0}, "amount_scale"), ({"new_merchants": -1}, "new_merchants")],
)  # fmt: skip
def test_a_bad_shift_names_the_field(kwargs: dict, message: str) -> None:
    from pipelines.data.generate import Shift

    with pytest.raises(DataError, match=message):
        Shift(**kwargs)


def test_extend_needs_a_generated_dataset(tmp_path: Path) -> None:
    from pipelines.data.generate import extend

    with pytest.raises(DataError, match="does not hold a generated dataset"):
        extend(tmp_path, 3)
