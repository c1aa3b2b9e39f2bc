"""The fast online reader (shipyard.online) answers exactly what Feast's own
``get_online_features(...).to_dict()`` answers, on a real Feast store: the fraud
workload's repo applied, its latest feature rows written to the online store by
Feast (``write_to_online_store``, the write path materialization takes), read back
by both. SQLite always; Redis (with the Postgres SQL registry) when they run.
"""

from __future__ import annotations

import functools
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from shipyard.contract import Column, ServingContract
from shipyard.online import OnlineFeatures

from pipelines.data.generate import GenerateConfig, generate
from pipelines.features.build import BuildConfig, build_pandas
from pipelines.features.repo import FEATURE_SERVICE, SPEND_SERVICE
from tests.conftest import require_service

PANDAS_SERVICE = "fraud_pandas_odfv_test"


@dataclass
class Store:
    store: Any
    repo: Path
    customers: list[str]
    merchants: list[str]


def _pandas_ratio(inputs: pd.DataFrame) -> pd.DataFrame:
    import pandas as pd

    mean = inputs["cust_amount_mean_7d"].astype("float64")
    ratio = (inputs["amount"].astype("float64") / mean.where(mean > 0)).fillna(1.0)
    return pd.DataFrame({"amount_ratio_pandas": ratio})


@functools.cache
def _definitions(root: Path) -> list[Any]:
    """The workload's repo, plus a pandas-mode on-demand view and a service using it
    (the reader's other transform path). Built once per process: Feast's
    ``on_demand_feature_view`` decorator moves its function to ``__main__``, after
    which it cannot read the function's source a second time."""
    from feast import FeatureService, Field
    from feast.on_demand_feature_view import on_demand_feature_view
    from feast.types import Float64

    from pipelines.features.repo import definitions
    from pipelines.features.repo.sources import transaction_request

    objects = definitions(root)
    customer_view, merchant_view = objects[2], objects[3]
    pandas_view = on_demand_feature_view(
        sources=[customer_view[["cust_amount_mean_7d"]], transaction_request],
        schema=[Field(name="amount_ratio_pandas", dtype=Float64)], mode="pandas",
    )(_pandas_ratio)  # fmt: skip
    service = FeatureService(name=PANDAS_SERVICE,
                             features=[customer_view, merchant_view, pandas_view])  # fmt: skip
    return [*objects, pandas_view, service]


def _open(root: Path, profile: str, project: str) -> Iterator[Store]:
    from shipyard.settings import load_settings

    from pipelines.features import store as fs

    with pytest.MonkeyPatch.context() as mp:
        for key in [k for k in os.environ if k.startswith("SHIPYARD_")]:
            mp.delenv(key)
        mp.setenv("SHIPYARD_DATA_ROOT", str(root))
        mp.setenv("SHIPYARD_PROFILE", profile)
        mp.setenv("SHIPYARD_FEATURES__PROJECT", project)
        settings = load_settings()
        features = settings.features_dir
        if not (features / "customer_features").exists():
            generate(GenerateConfig(rows=1500, seed=5, days=14), root / "raw")
            build_pandas(BuildConfig(input=root / "raw", out=features), say=lambda m: None)
        store = fs.open_store(fs.write_repo(settings))
        store.apply(_definitions(features))
        latest = {}
        for view, key in (
            ("customer_features", "customer_id"),
            ("merchant_features", "merchant_id"),
        ):
            table = pd.read_parquet(features / view).drop(columns=["month"], errors="ignore")
            latest[key] = table.sort_values("event_timestamp").groupby(key).tail(1)
            store.write_to_online_store(view, latest[key])
        try:
            yield Store(store, Path(store.repo_path), sorted(latest["customer_id"].customer_id),
                        sorted(latest["merchant_id"].merchant_id))  # fmt: skip
        finally:
            fs.remove_project(store)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("online")


@pytest.fixture(scope="module")
def sqlite(root: Path) -> Iterator[Store]:
    yield from _open(root, "local", f"online_{uuid.uuid4().hex[:8]}")


@pytest.fixture(scope="module")
def redis_store(root: Path) -> Iterator[Store]:
    require_service("Redis", "127.0.0.1", 6379)
    require_service("Postgres", "127.0.0.1", 5432)
    import redis

    project = f"online_{uuid.uuid4().hex[:10]}"
    yield from _open(root, "cluster", project)
    client = redis.Redis(host="127.0.0.1", port=6379)
    left = [k for k in client.scan_iter(count=1000) if k.endswith(project.encode())]
    if left:
        client.delete(*left)
    assert not [k for k in client.scan_iter(count=1000) if k.endswith(project.encode())]


def _contract(service: str, entity_keys: list[str], inputs: list[str]) -> ServingContract:
    return ServingContract("m", "1", [Column(n, "double") for n in inputs], [],
                           feature_service=service, entity_keys=entity_keys)  # fmt: skip


FRAUD = _contract(FEATURE_SERVICE, ["customer_id", "merchant_id"], ["amount"])


def _batches(s: Store) -> dict[str, list[dict[str, Any]]]:
    c, m = s.customers, s.merchants
    batch = [{"customer_id": c[i % len(c)], "merchant_id": m[(3 * i) % len(m)],
              "amount": 5.0 + 7.5 * i} for i in range(32)]  # fmt: skip
    batch[5] = {**batch[5], "customer_id": "c_unknown"}
    batch[9] = {**batch[9], "merchant_id": "m_unknown"}
    batch[17] = {**batch[17], "customer_id": "c_unknown", "merchant_id": "m_unknown"}
    batch[20] = dict(batch[3])  # repeated entities are read once, answered twice
    return {
        "known": [{"customer_id": c[0], "merchant_id": m[0], "amount": 42.0}],
        "unknown": [{"customer_id": "c_nobody", "merchant_id": "m_nobody", "amount": 3.0}],
        "mixed": [batch[0], batch[5], batch[9], batch[17]],
        "batch32": batch,
    }


def _expected_missing(values: dict[str, list[Any]], n: int) -> list[list[str]]:
    groups = {"customer": "cust_tx_count_7d", "merchant": "merch_fraud_rate_30d"}
    return [[g for g, f in groups.items() if values[f][i] is None] for i in range(n)]


def _same_as_feast(s: Store, contract: ServingContract, rows: list[dict[str, Any]]) -> Any:
    reader = OnlineFeatures.open(str(s.repo), contract)
    service = s.store.get_feature_service(contract.feature_service)
    expected = s.store.get_online_features(features=service, entity_rows=rows).to_dict()
    values, missing = reader.read(rows)
    assert set(values) == set(expected)
    for name, column in expected.items():
        assert values[name] == column, name
        assert [type(v) for v in values[name]] == [type(v) for v in column], name
    return values, missing


@pytest.mark.parametrize("case", ["known", "unknown", "mixed", "batch32"])
def test_sqlite_reader_equals_feast(sqlite: Store, case: str) -> None:
    rows = _batches(sqlite)[case]
    values, missing = _same_as_feast(sqlite, FRAUD, rows)
    assert missing == _expected_missing(values, len(rows))
    if case == "known":
        assert missing == [[]] and values["cust_tx_count_7d"][0] is not None
    if case == "unknown":
        assert missing == [["customer", "merchant"]]
        assert values["amount_to_cust_mean_7d"] == [1.0]  # no history: the view's default
    if case == "batch32":
        assert len(values["cust_tx_count_7d"]) == 32
        assert missing[5] == ["customer"] and missing[9] == ["merchant"]
        assert missing[17] == ["customer", "merchant"] and missing[20] == missing[3] == []


def test_on_demand_values_are_the_views_formula(sqlite: Store) -> None:
    rows = _batches(sqlite)["batch32"]
    values, _ = _same_as_feast(sqlite, FRAUD, rows)
    for i, row in enumerate(rows):
        mean = values["cust_amount_mean_7d"][i]
        want = row["amount"] / mean if mean is not None and mean > 0 else 1.0
        assert values["amount_to_cust_mean_7d"][i] == want
    assert len(set(values["amount_to_cust_mean_7d"])) > 5  # not all defaults


def test_pandas_mode_view_and_a_service_without_one(sqlite: Store) -> None:
    rows = _batches(sqlite)["mixed"]
    values, _ = _same_as_feast(sqlite, _contract(PANDAS_SERVICE, FRAUD.entity_keys, ["amount"]),
                               rows)  # fmt: skip
    assert values["amount_ratio_pandas"][1] == 1.0
    spend = _contract(SPEND_SERVICE, ["customer_id"], [])
    values, missing = _same_as_feast(
        sqlite, spend, [{"customer_id": r["customer_id"]} for r in rows]
    )
    assert missing == [[], ["customer"], [], ["customer"]]
    assert "merch_fraud_rate_30d" not in values


def test_request_fields_must_be_in_the_contract(sqlite: Store) -> None:
    with pytest.raises(ValueError, match="needs request field\\(s\\) amount"):
        OnlineFeatures.open(str(sqlite.repo), _contract(FEATURE_SERVICE, FRAUD.entity_keys, []))
    reader = OnlineFeatures.open(str(sqlite.repo), FRAUD)
    assert reader.request_fields == ["amount"] and reader.entity_keys == FRAUD.entity_keys


def test_join_keys_must_be_the_contracts_entity_keys(sqlite: Store) -> None:
    """A feature service keyed by an entity the model does not take fails at load,
    naming the key, not at every batch as a KeyError."""
    with pytest.raises(ValueError, match="keyed by merchant_id.*entity keys \\(customer_id\\)"):
        OnlineFeatures.open(str(sqlite.repo), _contract(FEATURE_SERVICE, ["customer_id"],
                                                        ["amount"]))  # fmt: skip


@pytest.mark.parametrize("case", ["known", "unknown", "mixed", "batch32"])
def test_redis_reader_equals_feast(redis_store: Store, case: str) -> None:
    rows = _batches(redis_store)[case]
    values, missing = _same_as_feast(redis_store, FRAUD, rows)
    assert missing == _expected_missing(values, len(rows))
    reader = OnlineFeatures.open(str(redis_store.repo), FRAUD)
    assert all(reader.read(rows) == (values, missing) for _ in range(3))  # reads leave no trace
    assert [len(v.features) for v in reader.views] == [11, 3]


def test_python_mode_view_equals_the_pandas_one_offline(root: Path) -> None:
    """Offline, Feast applies an on-demand view with ``transform_arrow`` on the joined
    training table (RetrievalJob.to_arrow), in either mode: the python-mode view gives
    the pandas formula's values there, on odd inputs too."""
    import pyarrow as pa

    objects = _definitions((root / "features").resolve())  # the stores' own, once
    python_view = next(o for o in objects if o.name == "transaction_amount_features")
    pandas_view = next(o for o in objects if o.name == "_pandas_ratio")
    assert python_view.mode == "python"
    nan, inf = float("nan"), float("inf")
    means = [10.0, 0.0, -3.0, None, nan, 1e-300, inf, 2.5, 7.0, 3.0]
    amounts = [25.0, 5.0, 5.0, 5.0, 5.0, 1e10, 5.0, 0.0, None, nan]
    table = pa.table({"customer_id": [f"c{i}" for i in range(10)], "amount": amounts,
                      "cust_amount_mean_7d": means})  # fmt: skip
    got = python_view.transform_arrow(table, False)["amount_to_cust_mean_7d"].to_pylist()
    want = pandas_view.transform_arrow(table, False)["amount_ratio_pandas"].to_pylist()
    assert got == want and got[:4] == [2.5, 1.0, 1.0, 1.0]
