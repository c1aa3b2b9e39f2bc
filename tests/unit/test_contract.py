"""The serving contract and the generic request path, without a cluster: contracts
from signatures and tags, request validation derived from them, the three request
formats, the model's input frame and named outputs, and a property-based fuzz of the
whole parse → validate path (every body is records or a RequestError, nothing else).

Two contracts: a made-up model that knows nothing of fraud (a price regression with
integer, optional, boolean and datetime inputs), and the fraud model's own.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mlflow.models import ModelSignature
from mlflow.types.schema import ColSpec, Schema, TensorSpec
from shipyard.contract import ServingContract, contract_from, contract_tags
from shipyard.errors import ConfigError

from services.predictor.app import model_frame, named_outputs
from services.router.formats import mlflow_records, oip_metadata, oip_records, predict_records
from services.router.schema import MAX_BATCH, RequestError, RequestSchema, parse_json

PRICE_SIGNATURE = ModelSignature(
    inputs=Schema([
        ColSpec("double", "sqft"), ColSpec("long", "rooms"), ColSpec("string", "city"),
        ColSpec("boolean", "garden", required=False), ColSpec("datetime", "listed"),
        ColSpec("double", "area_median_price", required=False),
    ]),
    outputs=Schema([ColSpec("double", "price")]),
)  # fmt: skip
PRICE_TAGS = contract_tags(
    feature_service="houses_v1", entity_keys=["area_id"], online_inputs=["area_median_price"],
    sticky_key="area_id", id_field="listing_id",
    constraints={"sqft": {"min": 1, "max": 100000}, "city": {"one_of": ["Oslo", "Lima"]},
                 "area_id": {"pattern": "a[0-9]+"}},
)  # fmt: skip
HOUSE = {"listing_id": 7, "area_id": "a12", "sqft": 80.5, "rooms": 3, "city": "Oslo",
         "garden": None, "listed": "2026-05-01T08:00:00+02:00"}  # fmt: skip


@pytest.fixture(scope="module")
def price() -> ServingContract:
    return contract_from("houses", "1", PRICE_SIGNATURE, PRICE_TAGS)


@pytest.fixture(scope="module")
def fraud() -> ServingContract:
    from mlflow.models import infer_signature

    from pipelines.training.model import FEATURE_INPUTS, serving_contract

    example = pd.DataFrame({c: [1.0, np.nan] for c in FEATURE_INPUTS}
                           | {"amount": [1.0, 2.0], "timestamp": ["2026-01-01T00:00:00Z"] * 2,
                              "category": ["grocery"] * 2, "country": ["US"] * 2})  # fmt: skip
    signature = infer_signature(example, pd.DataFrame({"fraud_probability": [0.1, 0.2]}))
    return contract_from("fraud", "3", signature, contract_tags(**serving_contract()))


def test_contract_from_signature_and_tags(price: ServingContract) -> None:
    assert [c.name for c in price.inputs][:3] == ["sqft", "rooms", "city"]
    assert {c.name: c.required for c in price.inputs}["garden"] is False
    assert price.feature_service == "houses_v1" and price.entity_keys == ["area_id"]
    assert price.outputs[0].name == "price" and price.sticky_key == "area_id"
    plain = contract_from("houses", "2", PRICE_SIGNATURE, {})  # registered without tags
    assert plain.feature_service is None and plain.sticky_key is None
    assert [f["name"] for f in RequestSchema(plain, online=True).describe()] == [
        c.name for c in PRICE_SIGNATURE.inputs.inputs
    ]  # every input from the request


@pytest.mark.parametrize(
    ("signature", "tags", "word"),
    [
        (None, {}, "no signature"),
        (ModelSignature(inputs=Schema([TensorSpec(np.dtype("float64"), (-1, 3))])), {},
         "unnamed inputs"),
        (PRICE_SIGNATURE, contract_tags(online_inputs=["nope"], feature_service="x",
                                        entity_keys=["k"]), "not signature inputs"),
        (PRICE_SIGNATURE, contract_tags(online_inputs=["sqft"]), "no feature service"),
        (PRICE_SIGNATURE, contract_tags(feature_service="x"), "needs entity keys"),
        (PRICE_SIGNATURE, contract_tags(sticky_key="user"), "not a request field"),
        (PRICE_SIGNATURE, contract_tags(constraints={"sqft": {"gt": 1}}), "unknown checks"),
        (PRICE_SIGNATURE, contract_tags(constraints={"city": {"pattern": "("}}), "invalid"),
        (PRICE_SIGNATURE, contract_tags(constraints={"ghost": {"min": 1}}), "not a request field"),
        (ModelSignature(PRICE_SIGNATURE.inputs, Schema([ColSpec("double", "status")])), {},
         "every answer uses"),
        (ModelSignature(Schema([ColSpec("double", "records")])), {}, "reads as a batch"),
        (ModelSignature(Schema([ColSpec("long", "n", required=False)])), {}, "log them as double"),
        (PRICE_SIGNATURE, contract_tags(feature_service="x", entity_keys=["k"],
                                        online_inputs=["rooms"]), "log them as double"),
        (PRICE_SIGNATURE, contract_tags(labels={"source": "l", "key": "ghost", "label": "y",
                                                "score": "price"}), "key 'ghost' is not a request"),
        (PRICE_SIGNATURE, contract_tags(labels={"source": "l", "key": "sqft", "label": "y",
                                                "score": "nope"}), "score 'nope' is not an output"),
        (PRICE_SIGNATURE, {"shipyard.labels": '{"source": "l", "key": "sqft"}'}, "label: Field"),
    ],
)  # fmt: skip
def test_inconsistent_contracts_are_refused_with_the_fix(signature: Any, tags: dict, word: str) -> None:  # fmt: skip
    with pytest.raises(ConfigError, match=word) as info:
        contract_from("m", "1", signature, tags)
    assert info.value.hint or "m version 1" in info.value.message


def test_a_good_record_is_converted_for_the_model(price: ServingContract) -> None:
    row, errors = RequestSchema(price, online=True).validate({**HOUSE, "rooms": 3.0, "x": 1})
    assert errors == []
    assert row == {"area_id": "a12", "sqft": 80.5, "rooms": 3, "city": "Oslo", "garden": None,
                   "listed": pd.Timestamp("2026-05-01T06:00:00").to_pydatetime(),
                   "listing_id": 7}  # fmt: skip
    assert "area_median_price" not in row  # the feature service's, not the client's


@pytest.mark.parametrize(
    ("changes", "field", "word"),
    [
        ({"sqft": ...}, "sqft", "is required"),
        ({"sqft": None}, "sqft", "must not be null"),
        ({"sqft": "80"}, "sqft", "must be a number"),
        ({"sqft": True}, "sqft", "must be a number"),
        ({"sqft": 0}, "sqft", "at least 1"),
        ({"sqft": [80]}, "sqft", "got an array"),
        ({"rooms": 2.5}, "rooms", "must be an integer"),
        ({"rooms": 2**70}, "rooms", "within"),
        ({"city": "Paris"}, "city", "one of Lima, Oslo"),
        ({"city": {"name": "Oslo"}}, "city", "must be a string"),
        ({"city": "\ud800"}, "city", "UTF-8"),
        ({"garden": "yes"}, "garden", "true or false"),
        ({"listed": "soon"}, "listed", "ISO 8601"),
        ({"listed": "0001-01-01T00:00:00"}, "listed", "outside"),
        ({"listed": "9999-12-31T23:59:59-01:00"}, "listed", "out of range"),
        ({"listed": "0001-01-01T00:00:00+01:00"}, "listed", "out of range"),
        ({"area_id": "b1"}, "area_id", "must match"),
        ({"area_id": ...}, "area_id", "is required"),
        ({"area_median_price": 5.0}, "area_median_price", "online feature store"),
    ],
)  # fmt: skip
def test_bad_fields_are_named(price: ServingContract, changes: dict, field: str, word: str) -> None:
    record = {k: v for k, v in {**HOUSE, **changes}.items() if v is not ...}
    row, errors = RequestSchema(price, online=True).validate(record, "records[2].")
    assert row is None
    assert [e["field"] for e in errors] == [f"records[2].{field}"], errors
    assert word in errors[0]["problem"], errors
    json.dumps(errors, allow_nan=False)  # always answerable


def test_without_online_features_the_client_sends_them(price: ServingContract) -> None:
    schema = RequestSchema(price, online=False)
    row, errors = schema.validate({**HOUSE, "area_median_price": 410000.0})
    assert not errors and row["area_median_price"] == 410000.0
    row, errors = schema.validate(HOUSE)  # optional: left to the model's imputation
    assert not errors and row["area_median_price"] is None


def test_odd_values_on_checked_fields_are_client_errors() -> None:
    from services.router.app import bucket

    contract = contract_from("m", "1", PRICE_SIGNATURE,
                             contract_tags(id_field="ref", constraints={"ref": {"format": "date-time"}}))  # fmt: skip
    _, errors = RequestSchema(contract, online=True).validate({**HOUSE, "ref": 12})
    assert [e["field"] for e in errors] == ["ref"]
    assert 0 <= bucket("\ud800") < 100  # a sticky key is hashed before it is validated


def test_fraud_contract_keeps_its_domain_checks(fraud: ServingContract) -> None:
    schema = RequestSchema(fraud, online=True)
    tx = {"transaction_id": "t1", "customer_id": "c_1", "merchant_id": "m_1", "amount": 12.5,
          "currency": "USD", "category": "grocery", "country": "US",
          "timestamp": "2026-08-14T10:00:00+02:00"}  # fmt: skip
    row, errors = schema.validate(tx)
    assert not errors and row["timestamp"] == "2026-08-14T08:00:00.000000Z"
    _, errors = schema.validate({**tx, "amount": -5, "category": "casino", "country": "usa",
                                 "customer_id": 42, "merchant_id": ""})  # fmt: skip
    assert {e["field"] for e in errors} == {"amount", "category", "country", "customer_id",
                                            "merchant_id"}  # fmt: skip


def test_the_fraud_contract_names_its_late_labels(fraud: ServingContract) -> None:
    assert fraud.labels is not None and fraud.labels.key == fraud.id_field == "transaction_id"
    assert (fraud.labels.label, fraud.labels.score, fraud.labels.task) == (
        "is_fraud", "fraud_probability", "binary")  # fmt: skip
    with pytest.raises(ConfigError, match="task"):
        contract_tags(
            labels={"source": "l", "key": "k", "label": "y", "score": "s", "task": "rank"}
        )


def test_predict_body_forms() -> None:
    records, single, name = predict_records({"a": 1})
    assert records == [{"a": 1}] and single and name(0) == ""
    records, single, name = predict_records({"records": [{"a": 1}, {"a": 2}]})
    assert len(records) == 2 and not single and name(1) == "records[1]."
    records, single, _ = predict_records([{"a": 1}])
    assert records == [{"a": 1}] and not single
    for body, status in [("x", 400), ({"records": []}, 422), ({"records": {}}, 422),
                         ({"records": [{}] * (MAX_BATCH + 1)}, 413)]:  # fmt: skip
        with pytest.raises(RequestError) as info:
            predict_records(body)
        assert info.value.status == status


def test_mlflow_scoring_formats_give_the_same_records() -> None:
    rows = [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]
    forms = [
        {"dataframe_records": rows},
        {"dataframe_split": {"columns": ["a", "b"], "data": [[1, "x"], [2, "y"]]}},
        {"dataframe_split": {"index": [5, 6], "columns": ["a", "b"], "data": [[1, "x"], [2, "y"]]}},
        {"instances": rows},
        {"inputs": rows},
        {"inputs": {"a": [1, 2], "b": ["x", "y"]}},
        {"instances": {"a": [1, 2], "b": ["x", "y"]}},
    ]  # fmt: skip
    for body in forms:
        assert mlflow_records(body)[0] == rows, body
    assert mlflow_records({"inputs": {"a": 1, "b": "x"}})[0] == [rows[0]]
    assert mlflow_records(forms[1])[1](1) == "dataframe_split.data[1]."


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ([], 400, None),
        ({}, 400, None),
        ({"dataframe_records": [], "inputs": []}, 400, None),
        ({"dataframe_records": [{"a": 1}], "extra": 1}, 400, None),
        ({"dataframe_records": [{"a": 1}], "params": {"k": 1}}, 422, "params"),
        ({"dataframe_split": {"columns": ["a"]}}, 422, "dataframe_split"),
        ({"dataframe_split": {"columns": ["a", "a"], "data": [[1, 2]]}}, 422,
         "dataframe_split.columns"),
        ({"dataframe_split": {"columns": ["a", "b"], "data": [[1]]}}, 422,
         "dataframe_split.data[0]"),
        ({"inputs": {"a": [1, 2], "b": [1]}}, 422, "inputs"),
        ({"inputs": {"a": [1], "b": 1}}, 422, "inputs"),
        ({"instances": "x"}, 422, "instances"),
        ({"dataframe_records": []}, 422, "dataframe_records"),
    ],
)  # fmt: skip
def test_bad_mlflow_bodies(body: Any, status: int, field: str | None) -> None:
    with pytest.raises(RequestError) as info:
        mlflow_records(body)
    assert info.value.status == status
    if field:
        assert info.value.body["fields"][0]["field"] == field


def test_oip_request_to_records_and_metadata(price: ServingContract) -> None:
    types = {f.name: f.type for f in RequestSchema(price, online=True).fields}
    body = {"id": "r1", "inputs": [
        {"name": "sqft", "shape": [2], "datatype": "FP64", "data": [80.5, 60]},
        {"name": "rooms", "shape": [2, 1], "datatype": "INT64", "data": [[3], [2]]},
        {"name": "city", "shape": [2], "datatype": "BYTES", "data": ["Oslo", "Lima"]},
    ], "outputs": [{"name": "price"}]}  # fmt: skip
    records, wanted, request_id = oip_records(body, types)
    assert records[1] == {"sqft": 60, "rooms": 2, "city": "Lima"}
    assert wanted == ["price"] and request_id == "r1"
    meta = oip_metadata("houses", ["1"], RequestSchema(price, online=True).describe(),
                        [("price", "double")])  # fmt: skip
    assert {i["name"]: i["datatype"] for i in meta["inputs"]}["rooms"] == "INT64"
    assert meta["outputs"] == [{"name": "price", "datatype": "FP64", "shape": [-1]}]


@pytest.mark.parametrize(
    ("tensor", "field"),
    [
        ({"name": "shoe", "shape": [1], "datatype": "FP64", "data": [1]}, "inputs[shoe]"),
        ({"name": "sqft", "shape": [1], "datatype": "BYTES", "data": ["1"]}, "inputs[sqft].datatype"),
        ({"name": "sqft", "shape": [1], "datatype": "FP99", "data": [1]}, "inputs[sqft].datatype"),
        ({"name": "sqft", "shape": [2], "datatype": "FP64", "data": [1]}, "inputs[sqft].data"),
        ({"name": "sqft", "shape": [1, 2], "datatype": "FP64", "data": [1, 2]}, "inputs[sqft].shape"),
        ({"name": "sqft", "shape": "1", "datatype": "FP64", "data": [1]}, "inputs[sqft].shape"),
        ({"name": "sqft", "shape": [1], "datatype": "FP64", "data": 1}, "inputs[sqft].data"),
        ({"shape": [1], "datatype": "FP64", "data": [1]}, "inputs[0].name"),
        ("sqft", "inputs[0]"),
    ],
)  # fmt: skip
def test_bad_oip_tensors_are_named(price: ServingContract, tensor: Any, field: str) -> None:
    types = {f.name: f.type for f in RequestSchema(price, online=True).fields}
    with pytest.raises(RequestError) as info:
        oip_records({"inputs": [tensor]}, types)
    assert info.value.status == 422
    assert info.value.body["fields"][0]["field"] == field


def test_model_frame_follows_the_signature(price: ServingContract) -> None:
    schema = RequestSchema(price, online=True)
    rows = [schema.validate(HOUSE)[0], schema.validate({**HOUSE, "garden": True, "rooms": 1})[0]]
    frame = model_frame(price, rows, {"area_median_price": [350000.0, None]})
    assert list(frame.columns) == [c.name for c in PRICE_SIGNATURE.inputs.inputs]
    assert frame["sqft"].dtype == np.float64 and frame["rooms"].dtype == np.int64
    assert str(frame["listed"].dtype).startswith("datetime64")
    assert math.isnan(frame["area_median_price"][1]) and frame["garden"].tolist() == [None, True]
    # MLflow's own enforcement accepts it
    from mlflow.models.utils import _enforce_schema

    _enforce_schema(frame, PRICE_SIGNATURE.inputs)


def test_outputs_are_named_by_the_signature(price: ServingContract) -> None:
    assert named_outputs(price, np.array([1.5, np.nan]), 2) == [{"price": 1.5}, {"price": None}]
    assert named_outputs(price, pd.DataFrame({"price": [2.0]}), 1) == [{"price": 2.0}]
    assert named_outputs(price, pd.Series([3.0]), 1) == [{"price": 3.0}]
    two = contract_from("m", "1", ModelSignature(PRICE_SIGNATURE.inputs,
                        Schema([ColSpec("double", "lo"), ColSpec("double", "hi")])), {})  # fmt: skip
    assert named_outputs(two, np.array([[1.0, 2.0]]), 1) == [{"lo": 1.0, "hi": 2.0}]
    bare = contract_from("m", "1", ModelSignature(PRICE_SIGNATURE.inputs), {})
    assert named_outputs(bare, np.array([[1, 2]]), 1) == [{"prediction": [1, 2]}]
    with pytest.raises(ValueError, match="rows"):
        named_outputs(price, np.array([1.0]), 2)


@pytest.mark.parametrize(
    "raw",
    [b"", b"{oops", b'{"a": NaN}', b'{"a": Infinity}', b'{"a": 1e999}', b"[" * 100000,
     b'"\xff"', b"1" * 5000],
)  # fmt: skip
def test_bodies_that_are_not_strict_json_are_400(raw: bytes) -> None:
    with pytest.raises(RequestError) as info:
        parse_json(raw)
    assert info.value.status == 400 and "JSON" in info.value.body["error"] or raw == b""


# -- property-based: any body, in any format, is records or a RequestError ---------------------
_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False,
                     allow_infinity=False), st.text(max_size=12),
                     st.sampled_from(["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00",
                                      "2026-08-14T10:00:00Z", "\ud800", "a12"]))  # fmt: skip
_json_values = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=20)  # fmt: skip
_field_names = st.sampled_from([*HOUSE, "area_median_price", "records", "inputs", "dataframe_split",
                                "dataframe_records", "instances", "columns", "data", "name",
                                "shape", "datatype", "x"])  # fmt: skip
_records = st.dictionaries(_field_names, _json_values, max_size=8)
_bodies = st.one_of(
    _json_values,
    _records,
    st.builds(lambda r: {"records": r}, st.lists(_records, max_size=3)),
    st.builds(lambda k, v: {k: v}, st.sampled_from(["dataframe_records", "dataframe_split",
                                                    "instances", "inputs"]), _json_values),
    st.builds(lambda names, data: {"inputs": [{"name": n, "shape": [len(data)], "datatype": "FP64",
                                               "data": data} for n in names]},
              st.lists(_field_names, max_size=3), st.lists(_scalars, max_size=3)),
)  # fmt: skip


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=_bodies)
def test_fuzz_every_body_is_records_or_a_client_error(price: ServingContract, body: Any) -> None:
    schema = RequestSchema(price, online=True)
    types = {f.name: f.type for f in schema.fields}
    for parse in (lambda b: predict_records(b)[0], lambda b: mlflow_records(b)[0],
                  lambda b: oip_records(b, types)[0]):  # fmt: skip
        try:
            records = parse(parse_json(json.dumps(body).encode()))
        except RequestError as exc:
            assert 400 <= exc.status < 500 and exc.body["error"]
            json.dumps(exc.body, allow_nan=False)
            continue
        for i, record in enumerate(records):
            row, errors = schema.validate(record, f"records[{i}].")
            assert (row is None) == bool(errors)
            json.dumps(errors, allow_nan=False)
            if row is not None:
                model_frame(price, [row], {"area_median_price": [None]})


@settings(max_examples=200, deadline=None)
@given(raw=st.binary(max_size=64))
def test_fuzz_raw_bytes_never_escape_as_anything_but_400(raw: bytes) -> None:
    try:
        parse_json(raw)
    except RequestError as exc:
        assert exc.status == 400


# -- challengers: may change flavor and features, not what the clients send or read ----------
def _spend() -> ServingContract:
    from mlflow.models import infer_signature

    from pipelines.spend.model import FEATURE_INPUTS, serving_contract

    example = pd.DataFrame({c: [1.0, np.nan] for c in FEATURE_INPUTS}
                           | {"as_of": ["2026-01-01T00:00:00Z"] * 2})  # fmt: skip
    signature = infer_signature(example)
    signature.outputs = Schema([ColSpec("double", "spend_next_7d")])
    return contract_from("customer-spend", "1", signature, contract_tags(**serving_contract()))


def test_request_fields_match_the_routers_schema(price: ServingContract, fraud: ServingContract) -> None:  # fmt: skip
    from shipyard.contract import request_fields

    for contract in (price, fraud, _spend()):
        for online in (True, False):
            fields = request_fields(contract, online=online)
            schema = RequestSchema(contract, online)
            assert {f["name"]: (f["type"], f["required"]) for f in schema.describe()} == {
                n: (c.type, c.required) for n, c in fields.items()
            }


def test_a_challenger_of_another_flavor_with_the_same_fields_is_compatible(fraud: ServingContract) -> None:  # fmt: skip
    from dataclasses import replace

    from shipyard.contract import Column, compatibility

    # other online features, another output type, another model inside: all fine
    other = replace(fraud, version="2", online_inputs=fraud.online_inputs[:-1],
                    inputs=[c for c in fraud.inputs if c.name != "amount_to_cust_mean_7d"]
                    + [Column("amount_to_cust_mean_7d", "double", False)],
                    outputs=[*fraud.outputs, Column("explanation", "any")])  # fmt: skip
    assert compatibility(fraud, other) == []
    # a looser check is fine
    looser = replace(
        fraud, constraints={k: v for k, v in fraud.constraints.items() if k != "country"}
    )
    assert compatibility(fraud, looser) == []


def test_an_incompatible_challenger_is_named_field_by_field(fraud: ServingContract) -> None:
    from shipyard.contract import compatibility

    problems = compatibility(fraud, _spend())
    text = "\n".join(problems)
    assert "as_of: the challenger requires it" in text
    assert "output fraud_probability: the champion's clients read it" in text
    # a request field the challenger reads from the store instead, a narrower check, a type
    from dataclasses import replace

    from shipyard.contract import Column

    inputs = [Column("amount", "string") if c.name == "amount" else c for c in fraud.inputs]
    odd = replace(fraud, version="3", inputs=inputs,
                  constraints={**fraud.constraints, "country": {"pattern": "[A-Z]{3}"}},
                  online_inputs=[*fraud.online_inputs, "category"])  # fmt: skip
    text = "\n".join(compatibility(fraud, odd))
    assert "amount: the challenger takes string; the champion's clients send double" in text
    assert "country: the challenger checks pattern='[A-Z]{3}'" in text
    assert "category: the champion's clients send it; the challenger reads it" in text


class _Dtypes:
    """A pyfunc that answers, per row, the dtypes of the frame it was given."""

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> Any:
        kinds = ",".join(f"{c}:{model_input[c].dtype}" for c in model_input.columns)
        return pd.DataFrame({"price": [float(len(kinds))] * len(model_input), "kinds": kinds})


class _DtypesNoContext:
    """The same, with predict taking no context (MLflow passes none then)."""

    def predict(self, model_input: pd.DataFrame) -> Any:
        return _Dtypes().predict(None, model_input)


@pytest.mark.parametrize("base", [_Dtypes, _DtypesNoContext])
def test_raw_predict_sees_what_mlflow_enforcement_gives(price: ServingContract, tmp_path,
                                                        base: type) -> None:  # fmt: skip
    """The predictor skips MLflow's per-call enforcement (the router validated against
    the same signature) and its wrapper's per-call look at predict's signature: the
    model must get the same frame either way, and a refused input still fails through
    the enforcing path as the client's mistake."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from services.predictor.app import _client_error, raw_predict

    class Dtypes(base, mlflow.pyfunc.PythonModel):  # type: ignore[misc, valid-type]
        pass

    mlflow.pyfunc.save_model(tmp_path / "m", python_model=Dtypes(), signature=PRICE_SIGNATURE)
    model = mlflow.pyfunc.load_model(str(tmp_path / "m"))
    schema = RequestSchema(price, online=True)
    rows = [schema.validate(HOUSE)[0], schema.validate({**HOUSE, "garden": True, "rooms": 1})[0]]
    frame = model_frame(price, rows, {"area_median_price": [350000.0, None]})
    fast = raw_predict(model)(frame)
    pd.testing.assert_frame_equal(fast, model.predict(frame))
    with pytest.raises(MlflowException) as refused:
        model.predict(frame.assign(rooms=["three", "one"]))
    assert _client_error(refused.value)


def test_a_model_with_params_keeps_mlflows_predict(tmp_path) -> None:
    """A params schema gives the model its params' defaults only through
    ``model.predict``: the fast path must not bypass it."""
    import mlflow
    from mlflow.models import infer_signature

    from services.predictor.app import raw_predict

    class Scaled(mlflow.pyfunc.PythonModel):
        def predict(self, context: Any, model_input: pd.DataFrame, params: dict | None = None) -> Any:  # fmt: skip
            return model_input["x"] * (params or {}).get("scale", 1.0)

    frame = pd.DataFrame({"x": [1.0, 2.0]})
    signature = infer_signature(frame, frame["x"], params={"scale": 10.0})
    mlflow.pyfunc.save_model(tmp_path / "m", python_model=Scaled(), signature=signature)
    model = mlflow.pyfunc.load_model(str(tmp_path / "m"))
    assert list(raw_predict(model)(frame)) == [10.0, 20.0] == list(model.predict(frame))


def test_batches_run_inline_while_short_and_in_a_thread_when_long() -> None:
    """The predictor's placement: the first batch is an inline probe; short batches
    stay on the loop; a long one sends the next to a thread, every 4th of which is an
    inline probe that brings them back once they are short again."""
    from services.predictor.app import Placement

    where = Placement(inline_below_s=0.005, probe_every=4)
    assert where.inline()  # first: a probe
    where.took(0.001)
    assert [where.inline() for _ in range(3)] == [True] * 3
    for _ in range(3):
        where.took(0.001)
    assert where.inline()
    where.took(0.2)  # one slow batch moves the average past the bound
    assert where.batch_s > 0.005
    assert [where.inline() for _ in range(4)] == [False, False, False, True]  # the 9th probes
    where.took(0.001)  # a probe's time replaces the average: short again
    assert where.inline() and where.inline()
    where.took(0.1)
    assert not where.inline()  # a slow batch sends the next ones to a thread again


def test_replayed_raw_transactions_are_valid_requests_with_their_ids(
    fraud: ServingContract, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    """The demo replays held-out raw transactions: each is a request the fraud contract
    accepts, with the transaction's own id (what its late label joins on)."""
    import json

    import pyarrow.dataset as ds

    from pipelines.data.generate import GenerateConfig, generate
    from pipelines.data.requests import replayed

    generate(GenerateConfig(rows=3000, seed=1, days=10), tmp_path / "raw", overwrite=True)
    frame = (
        ds.dataset(tmp_path / "raw", format="parquet", partitioning="hive").to_table().to_pandas()
    )
    body = replayed(frame.sort_values("timestamp"))
    schema = RequestSchema(fraud, online=True)
    for i in range(0, 3000, 97):
        record = json.loads(json.dumps(body(i, None)))  # as the client sends it
        row, errors = schema.validate(record)
        assert not errors, (record, errors)
    assert body(3000, None) == body(0, None)  # wraps around
    assert (
        body(5, None)["transaction_id"] == frame.sort_values("timestamp")["transaction_id"].iloc[5]
    )
