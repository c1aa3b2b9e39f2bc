"""The customer-spend workload's logic, without a cluster: labels, forecast points,
the model's input contract and its serving contract."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from shipyard.contract import contract_from, contract_tags

from pipelines.spend.data import forecast_points, spend_after
from pipelines.spend.model import FEATURE_INPUTS, HORIZON, OUTPUT, serving_contract, to_model_input


def _transactions(n: int = 400, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2026-06-01", tz="UTC")
    return pd.DataFrame({
        "customer_id": rng.choice([f"c_{i}" for i in range(12)], n),
        "timestamp": start + pd.to_timedelta(rng.integers(0, 30 * 86400, n), unit="s"),
        "amount": rng.uniform(1, 300, n).round(2),
    })  # fmt: skip


def test_spend_after_is_the_sum_over_the_horizon_by_brute_force() -> None:
    tx = _transactions()
    rng = np.random.default_rng(0)
    points = pd.DataFrame({
        "customer_id": rng.choice(tx["customer_id"].unique(), 200),
        "as_of": pd.Timestamp("2026-05-30", tz="UTC")
        + pd.to_timedelta(rng.integers(0, 34 * 86400, 200), unit="s"),
    })  # fmt: skip
    # a point exactly on a transaction counts it; one exactly 7 days after does not
    first = tx.iloc[0]
    points.loc[len(points)] = [first["customer_id"], first["timestamp"]]
    points.loc[len(points)] = [first["customer_id"], first["timestamp"] - HORIZON]
    got = spend_after(tx, points, HORIZON)
    for (cust, at), value in zip(points.itertuples(index=False), got, strict=True):
        mine = tx[(tx["customer_id"] == cust) & (tx["timestamp"] >= at)
                  & (tx["timestamp"] < at + HORIZON)]  # fmt: skip
        assert value == pytest.approx(mine["amount"].sum(), abs=1e-6)


def test_a_point_after_the_last_transaction_sees_no_other_customers_spend() -> None:
    t0 = pd.Timestamp("2026-06-01", tz="UTC")
    tx = pd.DataFrame({"customer_id": ["a", "b", "b"], "amount": [1.0, 3.0, 100.0],
                       "timestamp": [t0, t0, t0 + pd.Timedelta(days=1)]})  # fmt: skip
    points = pd.DataFrame({"customer_id": ["a", "a"],
                           "as_of": [t0 + pd.Timedelta(days=3), t0]})  # fmt: skip
    assert spend_after(tx, points, HORIZON).tolist() == [0.0, 1.0]


def test_forecast_points_are_labelled_only_with_a_whole_horizon_inside_the_data() -> None:
    tx = _transactions(2000)
    points = forecast_points(tx, rows=300, seed=1)
    assert 0 < len(points) <= 300
    assert (points["as_of"] + HORIZON <= tx["timestamp"].max() + pd.Timedelta(1, "s")).all()
    assert points["as_of"].is_monotonic_increasing
    assert (points[OUTPUT] >= 0).all() and points[OUTPUT].gt(0).any()
    assert not points.duplicated(["customer_id", "as_of"]).any()
    again = forecast_points(tx, rows=300, seed=1)
    pd.testing.assert_frame_equal(points, again)  # the same seed, the same points


def test_model_input_and_serving_contract_agree() -> None:
    from mlflow.models import infer_signature
    from mlflow.types.schema import ColSpec, Schema

    frame = pd.DataFrame({c: [1, None] for c in FEATURE_INPUTS}
                         | {"as_of": ["2026-08-14T12:00:00+02:00", "2026-08-14T10:00:00Z"]})  # fmt: skip
    model_input = to_model_input(frame)
    assert list(model_input.columns) == [*FEATURE_INPUTS, "as_of"]
    assert model_input["as_of"].tolist() == ["2026-08-14T10:00:00.000000Z"] * 2
    assert model_input[list(FEATURE_INPUTS)].dtypes.eq("float64").all()
    signature = infer_signature(model_input)
    signature.outputs = Schema([ColSpec("double", OUTPUT)])
    contract = contract_from("customer-spend", "1", signature, contract_tags(**serving_contract()))
    assert contract.entity_keys == ["customer_id"] and contract.sticky_key == "customer_id"
    assert [o.name for o in contract.outputs] == [OUTPUT]
    assert set(contract.online_inputs) == set(FEATURE_INPUTS)


def test_the_split_leaves_a_horizon_between_training_labels_and_validation() -> None:
    from pipelines.spend.data import split

    points = forecast_points(_transactions(4000), rows=1500, seed=2)
    train, val = split(points, 0.2)
    assert (train["as_of"] + HORIZON <= val["as_of"].min()).all()
    assert len(train) + len(val) < len(points)  # the gap's points train nothing
