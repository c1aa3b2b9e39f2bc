"""Serving and canary rollouts on the real local cluster: Ray Serve through its REST
API, the MLflow registry, Feast's online store, and the in-cluster controller.

The fraud model, registered from the session's trained run: version 1 the champion
(the PyTorch MLP), version 2 a healthy challenger of another flavor (scikit-learn
trees trained on the same training set: a canary may change architecture), version
3 a planted faulty copy that fails on about half the transactions. Next to it, the
second reference workload (customer spend, trained by its own Ray job) is served and
canaried while the fraud model serves under load. Traffic is bounded loopback load
(``shipyard.traffic.Load``).
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests
from shipyard.canary import TERMINAL
from shipyard.traffic import Load

from pipelines.data.requests import random_transactions, transaction
from tests.integration.conftest import TRAINED_MODEL, Built, Platform

pytestmark = pytest.mark.integration

MODEL = f"it-serve-{uuid.uuid4().hex[:6]}"
GBT = f"it-gbt-{uuid.uuid4().hex[:6]}"
SPEND = f"it-spend-{uuid.uuid4().hex[:6]}"
# a quick plan: short intervals, thresholds wide enough for a busy 2-core machine
PLAN = ["--interval", "4s", "--min-requests", "5", "--max-latency-ratio", "4",
        "--failure-threshold", "3", "--ready-timeout", "120s"]  # fmt: skip


@pytest.fixture(scope="module", autouse=True)
def _apps_removed_at_the_end(platform: Platform) -> Iterator[None]:
    """The applications this module deployed leave the session's cluster with it: their
    replicas hold CPU (two stable replicas each) that later modules' training jobs
    need, two whole CPUs on one node."""
    yield
    from shipyard.serve_backends import LocalBackend

    backend = LocalBackend(platform.dashboard, platform.root / "run" / "rollouts")
    config = backend.read_config()
    ours = {MODEL, GBT, SPEND}
    if not any(a.get("name") in ours for a in config.get("applications", [])):
        return
    config["applications"] = [a for a in config["applications"] if a.get("name") not in ours]
    backend.write_config(config)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and any(backend.app_status(a) for a in ours):
        time.sleep(1)


@pytest.fixture(scope="module")
def client(platform: Platform):  # type: ignore[no-untyped-def]
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=platform.mlflow)


@pytest.fixture(scope="module")
def gbt_version(platform: Platform, trained: dict, client) -> str:  # type: ignore[no-untyped-def]
    """A second flavor on the same features: scikit-learn trees, logged with MLflow's
    sklearn flavor, registered through the same call as the MLP."""
    from pipelines.training.gbt import train_gbt

    saved = Path(client.get_run(trained["run_id"]).data.tags["data.training_set"])
    result = train_gbt(saved, platform.mlflow, GBT, say=lambda _: None)
    assert result.gate_passed and "champion" in result.aliases, result
    return result.version


@pytest.fixture(scope="module")
def versions(platform: Platform, trained: dict, gbt_version: str, client) -> dict[str, str]:  # type: ignore[no-untyped-def]
    import mlflow
    from shipyard.contract import REFERENCE_TAG, register_model

    from pipelines.training.chaos import register_faulty_version
    from pipelines.training.model import serving_contract

    mlp = client.get_model_version(TRAINED_MODEL, trained["version"]).source
    trees = client.get_model_version(GBT, gbt_version).source
    mlflow.set_tracking_uri(platform.mlflow)
    contract = serving_contract()  # the one registration call, as the training jobs make it

    def reference(name: str, version: str) -> dict[str, str]:  # the training run's profile
        return {REFERENCE_TAG: client.get_model_version(name, version).tags[REFERENCE_TAG]}

    champion = register_model(platform.mlflow, mlp, MODEL,
                              tags=reference(TRAINED_MODEL, trained["version"]), **contract)  # fmt: skip
    client.set_registered_model_alias(MODEL, "champion", champion)
    healthy = register_model(platform.mlflow, trees, MODEL,
                             tags={"gate.passed": "True", **reference(GBT, gbt_version)},
                             **contract)  # fmt: skip
    faulty = register_faulty_version(platform.mlflow, MODEL, str(healthy), error_share=0.5)
    return {"champion": str(champion), "healthy": str(healthy), "faulty": faulty}


@pytest.fixture(scope="module")
def customers(platform: Platform, built: Built, trained: dict) -> list[str]:
    """Customers with online features: the store is materialized (again, if the
    feature tests have not done it in this session)."""
    from pipelines.features.store import online_features, open_store

    known = sorted(built.good["customer_id"].unique())
    store = open_store(built.features / "repo" / "local")
    if online_features(store, known[0], "m_000001")["cust_tx_count_7d"] is None:
        result = platform.run("features", "materialize", timeout=600)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return [c for c in known if c.startswith("c_0")][:400]


@pytest.fixture(scope="module")
def served(platform: Platform, versions: dict[str, str], customers: list[str]) -> str:
    result = platform.run("deploy", f"{MODEL}@champion", timeout=400)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{MODEL} version {versions['champion']}" in result.stdout
    return f"{platform.serve}/{MODEL}"


def _state(platform: Platform, model: str = MODEL) -> dict:
    """The rollout's durable state as the controller wrote it (what `canary status`
    prints; read directly so polling does not start a CLI process each second)."""
    from shipyard.serve_backends import LocalBackend

    return LocalBackend(platform.dashboard, platform.root / "run" / "rollouts").load_state(
        model
    ) or {"status": "none", "decisions": []}


def _wait_for(platform: Platform, predicate, timeout: float, what: str,  # type: ignore[no-untyped-def]
              model: str = MODEL) -> dict:  # fmt: skip
    deadline = time.monotonic() + timeout
    state: dict = {}
    while time.monotonic() < deadline:
        state = _state(platform, model)
        if predicate(state):
            return state
        time.sleep(1.0)
    raise AssertionError(f"timed out waiting for {what}; state:\n{json.dumps(state, indent=1)}")


def test_predictions_over_http_equal_in_process(
    served: str, platform: Platform, built: Built, versions: dict[str, str], customers: list[str]
) -> None:
    assert requests.get(f"{served}/healthz", timeout=10).json()["status"] == "ready"
    about = requests.get(f"{served}/", timeout=10).json()
    assert about["variants"]["stable"] == {"model_version": versions["champion"],
                                           "weight_percent": 100.0}  # fmt: skip

    rows = built.good[built.good["customer_id"].isin(customers)].head(20)
    txs = [transaction(i, r.customer_id, r.merchant_id, float(r.amount)) for i, r in
           enumerate(rows.itertuples())] + [transaction(99, "c_nobody", "m_nobody", 10.0)]  # fmt: skip
    batch = requests.post(f"{served}/predict", json={"records": txs}, timeout=60)
    assert batch.status_code == 200, batch.text
    answers = batch.json()["predictions"]
    single = requests.post(f"{served}/predict", json=txs[0], timeout=30).json()
    assert single["fraud_probability"] == pytest.approx(answers[0]["fraud_probability"], abs=1e-6)
    assert answers[-1]["features_missing"] == ["customer", "merchant"]
    assert all(a["features_missing"] == [] for a in answers[:-1])
    assert {a["model_version"] for a in answers} == {versions["champion"]}

    # in this process: the same online features, the model loaded from the registry
    expected = _in_process(platform, built, MODEL, versions["champion"], txs)
    got = np.array([a["fraud_probability"] for a in answers])
    np.testing.assert_allclose(got, expected, atol=1e-6)


BAD = [
    (b"{oops", 400, None),
    (json.dumps(transaction(1, "c_1") | {"amount": -5}), 422, "amount"),
    (json.dumps({k: v for k, v in transaction(1, "c_1").items() if k != "customer_id"}), 422,
     "customer_id"),
    (json.dumps(transaction(1, "c_1") | {"amount": "12"}), 422, "amount"),
    (json.dumps(transaction(1, "c_1") | {"category": "casino"}), 422, "category"),
    (json.dumps(transaction(1, "c_1") | {"timestamp": "tomorrow"}), 422, "timestamp"),
    (json.dumps(transaction(1, "c_1") | {"timestamp": "0001-01-01T00:00:00"}), 422, "timestamp"),
    (json.dumps(transaction(1, "c_1") | {"cust_tx_count_7d": 3}), 422, "cust_tx_count_7d"),
    (json.dumps({"records": [transaction(1, "c_1"), {"amount": 1}]}), 422,
     "records[1].customer_id"),
]  # fmt: skip


def test_bad_input_is_a_4xx_naming_the_field_and_serving_goes_on(served: str) -> None:
    for body, status, field in BAD:
        resp = requests.post(f"{served}/predict", data=body, timeout=30)
        assert resp.status_code == status, (body, resp.text)
        doc = resp.json()
        assert doc["error"]
        if field:
            assert field in [f["field"] for f in doc["fields"]], doc
    assert requests.get(f"{served}/predict", timeout=10).status_code == 405
    assert requests.get(f"{served}/nowhere", timeout=10).status_code == 404
    ok = requests.post(f"{served}/predict", json=transaction(1, "c_1"), timeout=30)
    assert ok.status_code == 200 and 0 <= ok.json()["fraud_probability"] <= 1


@pytest.fixture(scope="module")
def gbt(platform: Platform, gbt_version: str, customers: list[str]) -> str:
    """The trees deployed as their own model, next to the MLP."""
    deployed = platform.run("deploy", f"{GBT}@champion", timeout=400)
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    return f"{platform.serve}/{GBT}"


def _in_process(platform: Platform, built: Built, model: str, version: str,
                txs: list[dict]) -> np.ndarray:  # fmt: skip
    """The oracle: the registry's model, loaded here, on the workload's own input frame
    from the same online features (not the serving path's code)."""
    import mlflow

    from pipelines.features.store import online_features, open_store
    from pipelines.training.model import REQUEST_INPUTS, to_model_input

    store = open_store(built.features / "repo" / "local")
    frame = pd.DataFrame([{**online_features(store, tx["customer_id"], tx["merchant_id"],
                                             tx["amount"]), **{k: tx[k] for k in REQUEST_INPUTS}}
                          for tx in txs])  # fmt: skip
    mlflow.set_tracking_uri(platform.mlflow)
    out = mlflow.pyfunc.load_model(f"models:/{model}/{version}").predict(to_model_input(frame))
    if isinstance(out, pd.DataFrame):
        return out["fraud_probability"].to_numpy()
    return np.asarray(out)[:, -1]  # predict_proba: the fraud class last


@pytest.mark.parametrize("flavor", ["pytorch-pyfunc", "sklearn"])
def test_every_request_format_answers_like_the_registry_model(
    flavor: str, request: pytest.FixtureRequest, platform: Platform, built: Built,
    customers: list[str],
) -> None:  # fmt: skip
    url = request.getfixturevalue("served" if flavor == "pytorch-pyfunc" else "gbt")
    name = url.rsplit("/", 1)[1]
    about = requests.get(f"{url}/", timeout=10).json()
    version = about["variants"]["stable"]["model_version"]
    assert about["split"] == "sticky per customer_id" and "fraud_model_v1" in about["features"]
    fields = [f["name"] for f in about["request_fields"]]
    rows = built.good[built.good["customer_id"].isin(customers)].head(6)
    txs = [transaction(i, r.customer_id, r.merchant_id, float(r.amount)) for i, r in
           enumerate(rows.itertuples())] + [transaction(99, "c_nobody", "m_nobody", 10.0)]  # fmt: skip
    expected = _in_process(platform, built, name, version, txs)
    meta = requests.get(f"{platform.serve}/{name}/v2/models/{name}", timeout=10).json()
    assert meta["name"] == name and meta["versions"] == [version]
    assert {i["name"] for i in meta["inputs"]} == set(fields)
    assert "fraud_probability" in {o["name"] for o in meta["outputs"]}
    ready = requests.get(f"{url}/v2/models/{name}/ready", timeout=10)
    assert ready.status_code == 200 and ready.json()["ready"] is True
    types = {i["name"]: i["datatype"] for i in meta["inputs"]}

    def post(path: str, body: dict) -> dict:
        resp = requests.post(f"{url}{path}", json=body, timeout=60)
        assert resp.status_code == 200, (path, resp.text[:500])
        return resp.json()

    got = {
        "predict records": [a["fraud_probability"] for a in
                            post("/predict", {"records": txs})["predictions"]],
        "predict one": [post("/predict", tx)["fraud_probability"] for tx in txs],
        "dataframe_records": [p["fraud_probability"] for p in
                              post("/invocations", {"dataframe_records": txs})["predictions"]],
        "dataframe_split": [p["fraud_probability"] for p in post("/invocations", {
            "dataframe_split": {"columns": fields, "data": [[tx.get(f) for f in fields]
                                                            for tx in txs]}})["predictions"]],
        "instances": [p["fraud_probability"] for p in
                      post("/invocations", {"instances": txs})["predictions"]],
        "inputs (columns)": [p["fraud_probability"] for p in post("/invocations", {
            "inputs": {f: [tx.get(f) for tx in txs] for f in fields}})["predictions"]],
    }  # fmt: skip
    oip = post(f"/v2/models/{name}/infer", {"id": "q1", "inputs": [
        {"name": f, "shape": [len(txs)], "datatype": types[f], "data": [tx.get(f) for tx in txs]}
        for f in fields]})  # fmt: skip
    assert oip["model_name"] == name and oip["model_version"] == version and oip["id"] == "q1"
    tensors = {o["name"]: o for o in oip["outputs"]}
    assert tensors["fraud_probability"]["shape"] == [len(txs)]
    assert tensors["variant"]["data"] == ["stable"] * len(txs)
    got["oip v2"] = tensors["fraud_probability"]["data"]
    # the root paths, as clients that take only host and port send them (the gateway)
    root = requests.post(f"{platform.serve}/v2/models/{name}/infer", timeout=60, json={
        "inputs": [{"name": f, "shape": [len(txs), 1], "datatype": types[f],
                    "data": [[tx.get(f)] for tx in txs]} for f in fields]})  # fmt: skip
    assert root.status_code == 200, root.text[:500]
    got["oip v2 at /v2"] = {o["name"]: o for o in root.json()["outputs"]}["fraud_probability"][
        "data"
    ]
    assert requests.get(f"{platform.serve}/v2/models/{name}", timeout=10).json() == meta
    assert requests.get(f"{platform.serve}/v2/models/{name}/ready", timeout=10).json()["ready"]
    nobody = requests.get(f"{platform.serve}/v2/models/no-such-model", timeout=10)
    assert nobody.status_code == 404 and "no-such-model" in nobody.json()["error"]
    for form, values in got.items():
        np.testing.assert_allclose(values, expected, atol=1e-6, err_msg=form)
    answers = post("/predict", {"records": txs})["predictions"]
    assert answers[-1]["features_missing"] == ["customer", "merchant"]
    assert all(a["features_missing"] == [] for a in answers[:-1])
    assert answers[0]["transaction_id"] == "t0" and answers[0]["model_version"] == version
    assert oip["parameters"]["features_missing"][-1] == "customer,merchant"


@pytest.mark.parametrize("flavor", ["pytorch-pyfunc", "sklearn"])
def test_malformed_requests_from_the_signature_are_4xx_naming_the_field(
    flavor: str, request: pytest.FixtureRequest, customers: list[str],
) -> None:  # fmt: skip
    """A table generated from each model's request fields (its signature and contract):
    missing, null, wrong type, extra nesting, wrong dataframe_split and tensor shapes."""
    url = request.getfixturevalue("served" if flavor == "pytorch-pyfunc" else "gbt")
    name = url.rsplit("/", 1)[1]
    about = requests.get(f"{url}/", timeout=10).json()
    good = transaction(1, customers[0])
    cases: list[tuple[str, object, str]] = []
    for spec in about["request_fields"]:
        field = spec["name"]
        if spec["type"] == "any":  # the echoed id takes any JSON value
            continue
        wrong = 123 if spec["type"] == "string" else "abc"
        cases += [("/predict", good | {field: wrong}, field),
                  ("/predict", good | {field: {"nested": good.get(field)}}, field),
                  ("/predict", {"records": [good, good | {field: [wrong]}]}, f"records[1].{field}"),
                  ("/invocations", {"dataframe_records": [good | {field: wrong}]},
                   f"dataframe_records[0].{field}")]  # fmt: skip
        if spec["required"]:
            cases += [("/predict", {k: v for k, v in good.items() if k != field}, field),
                      ("/predict", good | {field: None}, field)]  # fmt: skip
    fields = [f["name"] for f in about["request_fields"]]
    cases += [
        ("/invocations", {"dataframe_split": {"columns": fields, "data": [[1]]}},
         "dataframe_split.data[0]"),
        (f"/v2/models/{name}/infer", {"inputs": [{"name": "amount", "shape": [2],
                                                  "datatype": "FP64", "data": [1.0]}]},
         "inputs[amount].data"),
        (f"/v2/models/{name}/infer", {"inputs": [{"name": "amount", "shape": [1],
                                                  "datatype": "BYTES", "data": ["1"]}]},
         "inputs[amount].datatype"),
        (f"/v2/models/{name}/infer", {"inputs": [{"name": "amount", "shape": [1],
                                                  "datatype": "FP64", "data": [1.0]}]},
         "inputs[customer_id][0]"),
    ]  # fmt: skip
    with requests.Session() as session:
        for path, body, field in cases:
            resp = session.post(f"{url}{path}", json=body, timeout=30)
            assert 400 <= resp.status_code < 500, (path, body, resp.status_code, resp.text[:300])
            named = [f["field"] for f in resp.json().get("fields", [])]
            assert field in named, (path, body, resp.json())
        ok = session.post(f"{url}/predict", json=good, timeout=30)
    assert ok.status_code == 200 and 0 <= ok.json()["fraud_probability"] <= 1


def burst(
    url: str, bodies: list[dict], timeout_s: float = 60
) -> list[tuple[int, str | None, float]]:
    """Every body POSTed at once (one thread each, released together): per request its
    status, its Retry-After header and its seconds."""
    import threading

    start = threading.Barrier(len(bodies))

    def one(body: dict) -> tuple[int, str | None, float]:
        with requests.Session() as session:
            start.wait()
            began = time.monotonic()
            resp = session.post(url, json=body, timeout=timeout_s)
            return resp.status_code, resp.headers.get("Retry-After"), time.monotonic() - began

    with ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(one, bodies))


def test_a_burst_beyond_the_queues_is_shed_at_once(served: str, customers: list[str]) -> None:
    """Short queues: 240 requests at once on an application that holds 64 a router
    replica (48 at the router, 16 waiting at the proxy): what does not fit is answered
    503 with Retry-After within seconds, everything else gets its prediction, nothing waits
    for a client timeout, and serving goes on. How many are shed depends on how fast
    the replicas drain while the client's threads still send (39 of 240 in one CI run,
    over 60 in others), so the test asks for some, not for a number."""
    bodies = [transaction(i, customers[i % len(customers)]) for i in range(240)]
    answers = burst(f"{served}/predict", bodies)
    statuses = Counter(a[0] for a in answers)
    assert set(statuses) <= {200, 503}, statuses
    shed = [a for a in answers if a[0] == 503]
    assert shed and statuses[200] >= 48, statuses
    assert {a[1] for a in shed} == {"1"}  # Retry-After: 1
    # within seconds, not behind the queued work or a client timeout (60 s); 240 at once
    # saturate the proxy's loop too: 0.2-0.3 s medians, 2.3 s once with 320 on a slow day
    assert float(np.median([a[2] for a in shed])) < 3.0, sorted(a[2] for a in shed)
    after = requests.post(f"{served}/predict", json=bodies[0], timeout=30)
    assert after.status_code == 200, after.text


def test_fuzzed_requests_never_get_a_5xx(served: str, customers: list[str]) -> None:
    """Random bodies and bytes on every endpoint: a 2xx, or a 4xx with an error body;
    never a 5xx, a non-JSON answer or a dropped connection. Bounded: 300 requests."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    name = served.rsplit("/", 1)[1]
    base = transaction(1, customers[0])
    scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                        st.text(max_size=20), st.sampled_from(["2026-13-01", "1e999", "NaN",
                        "0001-01-01T00:00:00", "9999-12-31T23:59:59Z", "\ud800"]))  # fmt: skip
    values = st.recursive(scalars, lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
        max_leaves=12)  # fmt: skip
    record = st.builds(lambda changes: base | changes,
                       st.dictionaries(st.sampled_from([*base, "cust_tx_count_7d"]), values,
                                       max_size=4))  # fmt: skip
    body = st.one_of(
        record.map(lambda r: ("/predict", json.dumps(r, allow_nan=True).encode())),
        st.lists(record, max_size=3).map(
            lambda rs: ("/predict", json.dumps({"records": rs}).encode())),
        st.tuples(st.sampled_from(["dataframe_records", "instances", "inputs"]),
                  st.lists(record, max_size=3)).map(
            lambda kv: ("/invocations", json.dumps({kv[0]: kv[1]}).encode())),
        st.builds(lambda rs, cut: ("/invocations", json.dumps({"dataframe_split": {
            "columns": list(base), "data": [list(r.values())[:cut] for r in rs]}}).encode()),
            st.lists(record, max_size=3), st.integers(0, len(base))),
        st.lists(st.tuples(st.sampled_from(list(base)), st.lists(scalars, max_size=3),
                           st.sampled_from(["FP64", "BYTES", "INT64", "BOOL", "FP7"])),
                 max_size=4).map(lambda ts: (f"/v2/models/{name}/infer", json.dumps({"inputs": [
            {"name": n, "shape": [len(d)], "datatype": t, "data": d} for n, d, t in ts]},
            allow_nan=True).encode())),
        st.tuples(st.sampled_from(["/predict", "/invocations", f"/v2/models/{name}/infer"]),
                  st.one_of(st.binary(max_size=40), values.map(lambda v: json.dumps(v).encode()),
                            st.just(b"[" * 5000), st.just(b'{"amount": NaN}'))),
    )  # fmt: skip
    seen: Counter = Counter()
    session = requests.Session()

    @settings(max_examples=300, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(case=body)
    def check(case: tuple[str, bytes]) -> None:
        path, raw = case
        resp = session.post(f"{served}{path}", data=raw, timeout=30,
                            headers={"Content-Type": "application/json"})  # fmt: skip
        seen[resp.status_code] += 1
        assert resp.status_code < 500, (path, raw[:300], resp.status_code, resp.text[:300])
        doc = resp.json()  # always JSON
        if resp.status_code >= 400:
            assert doc.get("error"), doc

    check()
    session.close()
    assert seen[200] and sum(n for s, n in seen.items() if 400 <= s < 500), seen
    ok = requests.post(f"{served}/predict", json=base, timeout=30)
    assert ok.status_code == 200, ok.text


def test_good_canary_of_another_flavor_split_restart_and_promotion(
    served: str, platform: Platform, versions: dict[str, str], customers: list[str], client
) -> None:  # type: ignore[no-untyped-def]
    """PyTorch champion, scikit-learn challenger: the canary changes architecture."""
    import mlflow

    mlflow.set_tracking_uri(platform.mlflow)
    flavors = {v: set(mlflow.models.get_model_info(f"models:/{MODEL}/{versions[v]}").flavors)
               for v in ("champion", "healthy")}  # fmt: skip
    assert "sklearn" in flavors["healthy"] and "sklearn" not in flavors["champion"], flavors
    with Load(
        f"{served}/predict", random_transactions(customers), rate=25, threads=8, max_seconds=900
    ) as load:
        started = platform.run("canary", "start", MODEL, "--version", versions["healthy"],
                               "--steps", "30,100", *PLAN, "--interval", "8s",
                               timeout=200)  # fmt: skip
        assert started.returncode == 0, started.stdout + started.stderr
        _wait_for(platform, lambda s: s["status"] == "progressing", 150, "the first step")
        paused = platform.run("canary", "pause", MODEL)
        assert paused.returncode == 0, paused.stdout + paused.stderr
        weight = _state(platform)["weight"]
        assert weight == 30.0  # paused within the first step's 8 s

        # split accuracy at the paused weight: 2000 distinct customers (in batch requests,
        # each transaction routed on its own); repeated customers stick to their version
        keys = [f"split_{i:05d}" for i in range(2000)]

        def ask(chunk: list[str]) -> list[dict]:
            body = {"records": [transaction(SPLIT_IDS + int(k[6:]), k) for k in chunk]}
            resp = requests.post(f"{served}/predict", json=body, timeout=60)
            assert resp.status_code == 200 and resp.json()["failed"] == 0, resp.text[:500]
            return resp.json()["predictions"]

        with ThreadPoolExecutor(4) as pool:
            answers = sum(pool.map(ask, [keys[i : i + 50] for i in range(0, 2000, 50)]), [])
        first = [a["variant"] for a in answers]
        _logged_as_answered(platform, answers)
        share = first.count("canary") / len(first) * 100
        assert abs(share - weight) <= 3.0, (share, weight)
        for key, variant in zip(keys[:40], first[:40], strict=True):
            resp = requests.post(f"{served}/predict", json=transaction(1, key), timeout=30)
            assert resp.json()["variant"] == variant, "a customer moved between versions"

        # the controller dies mid-rollout; Ray restarts it and it resumes from its state
        pid = _state(platform)["controller"]["pid"]
        os.kill(pid, signal.SIGKILL)
        state = _wait_for(platform, lambda s: any(
            d["action"] == "resume" and "restart 1" in d["reason"] for d in s["decisions"]),
            90, "the restarted controller")  # fmt: skip
        assert state["controller"]["pid"] != pid
        assert state["status"] == "paused" and state["weight"] == weight
        resumed = platform.run("canary", "resume", MODEL)
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr

        state = _wait_for(platform, lambda s: s["status"] in ("promoted", "rolled_back"), 240,
                          "the end of the rollout")  # fmt: skip
        time.sleep(2)
    assert state["status"] == "promoted", json.dumps(state["decisions"], indent=1)
    shown = platform.run("canary", "status", MODEL)
    assert shown.returncode == 0 and "promoted" in shown.stdout and "check_passed" in shown.stdout
    actions = [d["action"] for d in state["decisions"]]
    assert actions.count("advance") >= 2 and "pause" in actions and "check_passed" in actions
    failures = load.failures()
    assert not failures, f"{len(failures)} failed requests during the rollout: {failures[:5]}"
    served_by = Counter((r[2], r[3]) for r in load.results)
    assert served_by[("canary", versions["healthy"])] > 0
    assert client.get_model_version_by_alias(MODEL, "champion").version == versions["healthy"]
    about = requests.get(f"{served}/", timeout=10).json()
    assert about["variants"]["stable"]["model_version"] == versions["healthy"]
    assert about["variants"]["canary"]["model_version"] is None
    status = platform.run("serve", "status")
    assert f"stable v{versions['healthy']}  100%" in status.stdout, status.stdout
    # the canary's replicas stopped (graceful: they wrote what they held), the stable
    # ones moved version in place: every logged row still once, the split's rows intact
    _logged_as_answered(platform, answers)


SPLIT_IDS = 500_000  # transaction ids t500000.. for the split's records, unique in the module


def _logged_as_answered(platform: Platform, answers: list[dict]) -> None:
    """The inference log holds each answered record exactly once, as answered: its
    variant, version and score, with the online features the model used."""
    from shipyard.inference_log import read_log

    ids = {a["transaction_id"] for a in answers}
    deadline = time.monotonic() + 60
    while True:  # replicas write every second (conftest); wait for the last writes
        log = read_log(str(platform.root / "inference-log"), MODEL)
        mine = log[log["transaction_id"].isin(ids)]
        if len(mine) >= len(ids) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert log["log_id"].is_unique
    assert len(mine) == len(ids) and mine["transaction_id"].is_unique, (len(mine), len(ids))
    got = mine.set_index("transaction_id").loc[[a["transaction_id"] for a in answers]]
    assert list(got["variant"]) == [a["variant"] for a in answers]
    assert list(got["model_version"]) == [a["model_version"] for a in answers]
    assert (got["status"] == 200).all() and got["error"].isna().all()
    np.testing.assert_allclose(got["fraud_probability"], [a["fraud_probability"] for a in answers],
                               atol=1e-6)  # fmt: skip
    assert got["customer_id"].str.startswith("split_").all()  # the request's fields
    assert got["cust_tx_count_7d"].isna().all()  # the features used: none for split_* customers
    assert all("customer" in list(m) for m in got["features_missing"])
    assert (got["latency_ms"] > 0).all()


def _plant_labels(platform: Platform, log: pd.DataFrame, now: pd.Timestamp) -> pd.DataFrame:
    """Labels for the served transactions, as chargebacks arrive: a noisy function of
    the score (both classes, an imperfect model), known over the next ten days; a fifth
    never labelled."""
    rng = np.random.default_rng(5)
    ids = log[log["transaction_id"].notna() & (log["status"] == 200)]
    ids = ids.drop_duplicates("transaction_id")  # a record without an id meets no label
    noisy = ids["fraud_probability"].to_numpy() + rng.normal(0, 0.25, len(ids))
    labels = pd.DataFrame({
        "transaction_id": ids["transaction_id"].to_numpy(),
        "is_fraud": noisy > np.quantile(noisy, 0.8),
        "label_available_at": now + pd.to_timedelta(rng.uniform(0, 10, len(ids)), "D"),
    })[rng.random(len(ids)) < 0.8]  # fmt: skip
    (platform.root / "labels").mkdir(exist_ok=True)
    labels.to_parquet(platform.root / "labels" / "fraud.parquet", index=False)
    return labels


def test_monitor_check_reports_the_served_traffic_and_records_it(
    served: str, platform: Platform, versions: dict[str, str], client
) -> None:  # type: ignore[no-untyped-def]
    """After the canary: `monitor check` over the last hour counts what the log holds
    per version and variant, computes each version's drift against its own training
    profile (the same report as shipyard.drift on the same rows) and its live quality on
    the labels known by the clock (the same as sklearn on a join made here), logs it to
    MLflow, and its exit code says whether it alerted."""
    from shipyard.contract import read_reference_profile
    from shipyard.drift import compare
    from shipyard.inference_log import read_log
    from shipyard.monitor import ALERT_EXIT_CODE
    from sklearn.metrics import average_precision_score

    now = pd.Timestamp.now(tz="UTC")
    labels = _plant_labels(platform, read_log(str(platform.root / "inference-log"), MODEL), now)
    clock = (now + pd.Timedelta(days=5)).isoformat()
    # the healthy version's gate floor, as if its gate had asked for a PR AUC that these
    # noisy labels cannot give
    client.set_model_version_tag(MODEL, versions["healthy"], "gate.metric", "PR AUC")
    client.set_model_version_tag(MODEL, versions["healthy"], "gate.floor", "0.99")
    env = platform.env | {"SHIPYARD_MONITOR__LABEL_SOURCES":
                          json.dumps({MODEL: str(platform.root / "labels" / "fraud.parquet")})}  # fmt: skip
    result = platform.run_env(env, "monitor", "check", MODEL, "--hours", "1", "--json",
                              "--labels-as-of", clock)  # fmt: skip
    assert result.returncode in (0, ALERT_EXIT_CODE), result.stdout[-2000:] + result.stderr[-2000:]
    doc = json.loads(result.stdout)
    assert (result.returncode == ALERT_EXIT_CODE) == bool(doc["alerts"])
    log = read_log(str(platform.root / "inference-log"), MODEL,
                   pd.Timestamp(doc["start"]), pd.Timestamp(doc["end"]))  # fmt: skip
    assert doc["rows"] == len(log) > 2000
    by_version = {v["version"]: v for v in doc["versions"]}
    assert set(by_version) == {versions["champion"], versions["healthy"]}
    known = labels[labels["label_available_at"] <= pd.Timestamp(clock)]
    for version, part in log.groupby("model_version"):
        got = by_version[version]
        assert got["by_variant"] == part["variant"].value_counts().to_dict()
        profile = read_reference_profile(platform.mlflow, MODEL, version)
        expected = compare(profile, part[part["status"] == 200])
        assert got["drift"]["drift_share"] == pytest.approx(expected.drift_share)
        assert got["drift"]["drifted_features"] == expected.drifted_features
        quality = {q["variant"]: q for q in got["quality"]}
        assert set(quality) == set(part.loc[part["status"] == 200, "variant"])
        for variant, q in quality.items():
            mine = part[(part["variant"] == variant) & (part["status"] == 200)]
            joined = mine.merge(known, on="transaction_id")
            assert (q["answered"], q["labelled"]) == (len(mine), len(joined))
            if joined["is_fraud"].nunique() == 2:
                assert q["metrics"]["pr_auc"] == pytest.approx(
                    average_precision_score(joined["is_fraud"], joined["fraud_probability"])
                )
        if version == versions["healthy"]:
            conclusive = [q for q in quality.values() if q["conclusive"]]
            assert conclusive and all(q["alerts"] for q in conclusive)
            assert result.returncode == ALERT_EXIT_CODE
    run = client.get_run(doc["run_id"])
    assert run.data.tags["shipyard.monitor.model"] == MODEL
    assert run.data.metrics["rows"] == len(log)
    assert f"v{versions['healthy']}.drift_share" in run.data.metrics
    assert f"v{versions['healthy']}.stable.live_coverage" in run.data.metrics
    assert any(
        a.path.startswith("quality/") for a in client.list_artifacts(doc["run_id"], "quality")
    )
    status = platform.run_env(env, "monitor", "status", MODEL, "--hours", "1")
    assert status.returncode == 0, status.stderr
    assert (
        f"version {versions['healthy']}:" in status.stdout
        and "last recorded check" in status.stdout
        and "answers labelled" in status.stdout
    )
    bad = platform.run("monitor", "check", MODEL, "--end", "yesterday")
    assert bad.returncode == 2 and "not an ISO time" in bad.stderr


def test_a_shadow_phase_compares_answers_no_client_sees_and_rolls_a_disagreeing_version_back(
    served: str, platform: Platform, customers: list[str]
) -> None:
    """A copy of stable that flips its scores (1 - p) on a third of the records, in a
    shadow phase: every client gets stable's answer; the shadow's answers land in the
    log as variant ``shadow``; on the records it does not flip it answers exactly as
    stable (difference 0); the router's count of disagreements equals one made here
    from the log's pairs; the shadow check fails and the version is rolled back before
    any client saw it."""
    from shipyard.inference_log import read_log

    from pipelines.training.chaos import register_faulty_version

    stable = _state(platform)["stable_version"]
    flipped = register_faulty_version(platform.mlflow, MODEL, stable, error_share=0.0,
                                      flip_share=0.3)  # fmt: skip
    transactions = random_transactions(customers)

    def body(i: int, rng: random.Random) -> dict:
        return {**transactions(i, rng), "transaction_id": f"sh{i}"}  # unique in the module

    with Load(f"{served}/predict", body, rate=25, threads=8, max_seconds=300) as load:
        started = platform.run("canary", "start", MODEL, "--version", flipped, *PLAN,
                               "--shadow", "100", "--steps", "100", "--interval", "8s",
                               "--max-disagreement", "0.05", "--failure-threshold", "1",
                               timeout=200)  # fmt: skip
        assert started.returncode == 0, started.stdout + started.stderr
        state = _wait_for(platform, lambda s: s["status"] in TERMINAL, 200, "the shadow's verdict")
    assert state["status"] == "rolled_back", state["decisions"][-3:]
    actions = [d["action"] for d in state["decisions"]]
    assert "shadow" in actions and "advance" not in actions  # no client ever saw it
    assert "disagrees with stable" in state["decisions"][-1]["reason"]
    assert load.results and all(r[1] == 200 for r in load.results), load.failures()[:5]
    assert {r[2] for r in load.results} == {"stable"} and {r[3] for r in load.results} == {stable}
    # the router's comparisons against the log's pairs: each mirrored record once
    deadline = time.monotonic() + 90
    while True:
        log = read_log(str(platform.root / "inference-log"), MODEL)
        mine = log[log["transaction_id"].astype(str).str.startswith("sh")]
        pairs = mine[mine["variant"] == "stable"].merge(
            mine[mine["variant"] == "shadow"], on="transaction_id", suffixes=("", "_shadow")
        )
        pairs = pairs[(pairs["status"] == 200) & (pairs["status_shadow"] == 200)]
        split = (pairs["fraud_probability"] >= 0.5) != (pairs["fraud_probability_shadow"] >= 0.5)
        samples = _scrape(platform, "ray_shipyard_shadow_comparisons_total")
        got = {o: sum(_total(samples, model=MODEL, version=flipped, outcome=o).values())
               for o in ("agree", "disagree")}  # fmt: skip
        want = {"agree": float((~split).sum()), "disagree": float(split.sum())}
        if got == want or time.monotonic() > deadline:
            break
        time.sleep(3)
    assert (mine[mine["variant"] == "shadow"]["model_version"] == flipped).all()
    assert got == want and 0.15 < want["disagree"] / len(pairs) < 0.45, (got, want, len(pairs))
    diff = (pairs["fraud_probability"] - pairs["fraud_probability_shadow"]).abs()
    same = ~np.isclose(pairs["fraud_probability_shadow"], 1 - pairs["fraud_probability"])
    assert (diff[same] < 1e-9).all()  # where it does not flip, it answers as stable


def _scrape(platform: Platform, name: str) -> list[tuple[dict[str, str], float]]:
    """Every sample of ``name`` on every Ray node of the platform, found through Ray's
    Prometheus service discovery file, as Prometheus would scrape them."""
    import re

    import requests
    from shipyard.local import metrics_discovery_file
    from shipyard.settings import defaults

    path = metrics_discovery_file(defaults(data_root=platform.root))
    targets = [t for group in json.loads(path.read_text()) for t in group["targets"]]
    samples = []
    pattern = re.compile(rf"^{re.escape(name)}\{{(.*)\}} (\S+)$")
    for target in targets:
        try:
            text = requests.get(f"http://{target}/metrics", timeout=10).text
        except requests.RequestException:
            continue  # a target of a process that ended
        for line in text.splitlines():
            match = pattern.match(line)
            if match:
                labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(1)))
                samples.append((labels, float(match.group(2))))
    return samples


def _total(samples: list[tuple[dict[str, str], float]], **want: str) -> dict[tuple, float]:
    out: dict[tuple, float] = {}
    for labels, value in samples:
        if all(labels.get(k) == v for k, v in want.items()):
            key = (labels.get("version"), labels.get("variant"))
            out[key] = out.get(key, 0.0) + value
    return out


def test_ray_metrics_count_what_the_log_holds_and_carry_the_monitors_gauges(
    served: str, platform: Platform, versions: dict[str, str]
) -> None:
    """Prometheus sees, through Ray's metrics, each version's and variant's answers as
    many as the inference log holds, their latency histogram, and the last recorded
    monitor check's drift share (the router reads it next to the log)."""
    from shipyard.inference_log import read_log
    from shipyard.monitor import gauges_path, read_gauges

    gauges = read_gauges(gauges_path(str(platform.root / "inference-log"), MODEL))
    assert gauges is not None, "the monitor test records a check first"
    drift = {
        v: g["drift_share"] for v, g in gauges["versions"].items() if g["drift_share"] is not None
    }
    deadline = time.monotonic() + 120
    while True:  # the router exports each second, Ray's agent every few, gauges every 30 s
        log = read_log(str(platform.root / "inference-log"), MODEL)  # the last writes land
        ok = log[log["status"] == 200].groupby(["model_version", "variant"]).size()
        expected = {k: float(v) for k, v in ok.items()}
        got = _total(_scrape(platform, "ray_shipyard_predictions_total"), model=MODEL, outcome="ok")
        shares = {labels["version"]: value for labels, value in
                  _scrape(platform, "ray_shipyard_monitor_drift_share") if labels.get("model") == MODEL}  # fmt: skip
        close = shares.keys() == drift.keys() and all(
            abs(shares[v] - drift[v]) < 1e-9 for v in drift)  # fmt: skip
        if (got == expected and close) or time.monotonic() > deadline:
            break
        time.sleep(3)
    assert got == expected
    assert shares == pytest.approx(drift)
    counts = _total(_scrape(platform, "ray_shipyard_prediction_latency_ms_count"), model=MODEL)
    assert sum(counts.values()) >= sum(expected.values())  # errors and sheds have latency too
    codes = {labels["code"] for labels, _ in _scrape(platform, "ray_shipyard_requests_total")
             if labels.get("model") == MODEL}  # fmt: skip
    assert {"2xx", "4xx"} <= codes  # the bad-input tests' 4xx are counted


def test_batch_predictions_equal_online_ones_at_the_same_feature_time(
    served: str, platform: Platform, built: Built, customers: list[str], tmp_path: Path
) -> None:
    """`shipyard predict --batch` (a Ray job: Feast's point-in-time join, Ray Data actors)
    scores rows as the endpoint does: at a time after every feature row, the features
    as of each row's time are the online store's, so the scores agree to 1e-6. Every row
    comes back, in order, with the version."""
    rows = built.good[built.good["customer_id"].isin(customers)].head(60)
    txs = [transaction(700_000 + i, r.customer_id, r.merchant_id, float(r.amount))
           | {"timestamp": "2026-12-01T10:00:00Z"} for i, r in enumerate(rows.itertuples())]  # fmt: skip
    txs.append(
        transaction(700_999, "c_nobody", "m_nobody", 10.0) | {"timestamp": "2026-12-01T10:00:00Z"}
    )
    source = tmp_path / "rows.parquet"
    pd.DataFrame(txs).to_parquet(source, index=False)
    out = tmp_path / "scored.parquet"
    result = platform.run("predict", "--batch", f"{MODEL}@champion", "--input", str(source),
                          "--out", str(out), "--actors", "1", "--batch-size", "16", "--json",
                          timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out_text = "\n" + result.stdout
    doc = json.loads(out_text[out_text.rindex("\n{\n") + 1 :])  # from the last top-level {
    scored = pd.read_parquet(out)
    assert doc["rows"] == len(scored) == len(txs)
    phases = doc["phases"]  # where the job's time went, as benchmarks/batch_profile.py reads it
    assert set(phases) == {"connect_s", "read_s", "features_s", "first_block_s", "score_s",
                           "write_s"}  # fmt: skip
    assert 0 < phases["first_block_s"] <= phases["score_s"]
    inside = phases["read_s"] + phases["features_s"] + phases["score_s"] + phases["write_s"]
    assert inside <= doc["seconds"] + 0.01
    assert scored["transaction_id"].tolist() == [t["transaction_id"] for t in txs]
    online = requests.post(f"{served}/predict", json={"records": txs}, timeout=60).json()
    versions = {p["model_version"] for p in online["predictions"]}
    assert set(scored["model_version"]) == versions == {doc["version"]}
    np.testing.assert_allclose(scored["fraud_probability"],
                               [p["fraud_probability"] for p in online["predictions"]], atol=1e-6)  # fmt: skip

    missing = tmp_path / "lacking.parquet"
    pd.DataFrame(txs).drop(columns="amount").to_parquet(missing, index=False)
    bad = platform.run("predict", "--batch", f"{MODEL}@champion", "--input", str(missing),
                       "--out", str(out))  # fmt: skip
    assert bad.returncode == 2 and "lacks the request field(s) amount" in bad.stderr
    nowhere = platform.run("predict", "--batch", MODEL, "--input", str(tmp_path / "no.parquet"),
                           "--out", str(out))  # fmt: skip
    assert nowhere.returncode == 2 and "does not exist" in nowhere.stderr


@pytest.fixture(scope="module")
def spend(platform: Platform, trained: dict, client) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """The second reference workload, trained by its own Ray job through `shipyard
    train` (the settings name its entrypoint), registered and gated by the same calls;
    then a healthy version 2 (the same model registered again, as a retrained one that
    passed the gate would be) and a planted faulty version 3."""
    from shipyard.contract import register_model

    from pipelines.spend.model import serving_contract
    from pipelines.training.chaos import register_faulty_version

    env = {**platform.env, "SHIPYARD_WORKLOAD__TRAIN": "pipelines.spend.train"}
    result = platform.run_env(env, "train", "--name", SPEND, "--rows", "3000", "--json",
                              timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    doc = json.loads(result.stdout[result.stdout.index("{\n") :])
    assert doc["gate_passed"] and "champion" in doc["aliases"], doc
    assert "R2" in doc["gate_reason"] and doc["metrics"]["val_r2"] > 0
    source = client.get_model_version(SPEND, doc["version"]).source
    healthy = register_model(platform.mlflow, source, SPEND, tags={"gate.passed": "True"},
                             **serving_contract())  # fmt: skip
    faulty = register_faulty_version(platform.mlflow, SPEND, str(healthy), error_share=0.5)
    return {"champion": doc["version"], "healthy": str(healthy), "faulty": faulty}


def test_an_incompatible_challenger_is_refused_naming_the_fields(
    served: str, platform: Platform, spend: dict[str, str], client
) -> None:  # type: ignore[no-untyped-def]
    """The spend model registered as a version of the fraud model: nothing changes."""
    from shipyard.contract import REFERENCE_TAG, contract_tags, register_model

    from pipelines.spend.model import serving_contract

    registered = client.get_model_version(SPEND, spend["champion"])
    tags = {k: v for k, v in registered.tags.items() if k.startswith("shipyard.")}
    assert tags.pop(REFERENCE_TAG).endswith("/shipyard/reference_profile.json")  # its training data
    assert tags == contract_tags(**serving_contract())
    source = registered.source
    wrong = register_model(platform.mlflow, source, MODEL, **serving_contract())
    before = _state(platform)
    refused = platform.run("canary", "start", MODEL, "--version", wrong)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert f"version {wrong} cannot replace" in refused.stderr
    assert "as_of: the challenger requires it" in refused.stderr
    assert "output fraud_probability" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert _state(platform) == before  # no command was sent


def test_a_second_model_canaries_next_to_the_first_without_touching_it(
    served: str, platform: Platform, spend: dict[str, str], customers: list[str], client
) -> None:  # type: ignore[no-untyped-def]
    """customer-spend is deployed next to the fraud model and canaried while the fraud
    model serves under load: the fraud clients see no error and no version change; the
    healthy canary promotes; a planted bad version, rolled out by the registry watch
    when `challenger` moves to it, rolls back on its errors."""
    from pipelines.data.requests import random_forecasts

    deployed = platform.run("deploy", f"{SPEND}@champion", timeout=400)
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    url = f"{platform.serve}/{SPEND}"
    fraud_version = requests.get(f"{served}/", timeout=10).json()["variants"]["stable"][
        "model_version"
    ]
    status = platform.run("serve", "status")
    assert MODEL in status.stdout and SPEND in status.stdout, status.stdout
    fraud_rollout = _state(platform)
    with Load(f"{served}/predict", random_transactions(customers), rate=15, threads=8,
              max_seconds=600) as fraud, \
         Load(f"{url}/predict", random_forecasts(customers), rate=20, threads=8,
              max_seconds=600) as load:  # fmt: skip
        started = platform.run("canary", "start", SPEND, "--version", spend["healthy"],
                               "--steps", "50,100", *PLAN, timeout=200)  # fmt: skip
        assert started.returncode == 0, started.stdout + started.stderr
        good = _wait_for(platform, lambda s: s["status"] in ("promoted", "rolled_back"), 240,
                         "the healthy canary", SPEND)  # fmt: skip
        assert good["status"] == "promoted", json.dumps(good["decisions"], indent=1)
        mark = time.time()

        client.set_model_version_tag(SPEND, spend["faulty"], "gate.passed", "True")
        watch = platform.run("canary", "watch", SPEND, "--steps", "20,50,100", *PLAN[:-4],
                             "--failure-threshold", "2", timeout=200)  # fmt: skip
        assert watch.returncode == 0 and "registry watch on" in watch.stdout, watch.stderr
        client.set_registered_model_alias(SPEND, "challenger", spend["faulty"])
        bad = _wait_for(platform, lambda s: s.get("canary_version") == spend["faulty"]
                        and s["status"] in ("promoted", "rolled_back"), 240, "the rollback", SPEND)  # fmt: skip
        time.sleep(2)  # traffic after the rollback: stable only
        after = time.time()
        time.sleep(3)
    # the fraud model: untouched by either rollout
    assert fraud.results and not fraud.failures(), fraud.failures()[:5]
    assert {(r[2], r[3]) for r in fraud.results} == {("stable", fraud_version)}
    assert _state(platform) == fraud_rollout  # its rollout state: not a decision added
    # the healthy canary served, then took over
    assert any(r[2] == "canary" and r[3] == spend["healthy"] for r in load.results if r[0] < mark)
    assert not [r for r in load.results if r[0] < mark and r[1] != 200]
    assert client.get_model_version_by_alias(SPEND, "champion").version == spend["healthy"]
    # the bad one: rolled back on its errors, before its second step, by the watch
    assert bad["source"] == "watch" and bad["status"] == "rolled_back", bad["decisions"]
    assert "error rate" in bad["decisions"][-1]["reason"]
    assert bad["weight"] == 0.0 and bad["step"] == 0
    errors = [r for r in load.results if r[1] != 200]
    assert errors and all(r[2] == "canary" and r[1] == 500 for r in errors), errors[:5]
    during = [r for r in load.results if mark <= r[0] < after]
    assert len(errors) / len(during) < 0.2 * 0.5 + 0.05, (len(errors), len(during))
    assert all(r[1] == 200 and r[2] == "stable" for r in load.results if r[0] >= after)
    assert client.get_model_version_by_alias(SPEND, "champion").version == spend["healthy"]
    assert client.get_model_version(SPEND, spend["faulty"]).tags["canary.result"] == "rolled_back"
    again = platform.run("canary", "rollback", SPEND)
    assert again.returncode != 0 and "no rollout" in again.stderr
    stop = platform.run("canary", "watch", SPEND, "--stop", timeout=200)
    assert stop.returncode == 0 and "registry watch off" in stop.stdout
    answer = requests.post(f"{url}/predict", json={"customer_id": customers[0],
                           "as_of": "2026-08-14T10:00:00Z"}, timeout=30).json()  # fmt: skip
    assert answer["spend_next_7d"] >= 0 and answer["customer_id"] == customers[0]
    assert answer["model_version"] == spend["healthy"] and answer["features_missing"] == []


def test_a_scheduled_retraining_that_fails_leaves_serving_untouched(
    served: str, platform: Platform, customers: list[str], client, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """The platform's scheduler fires a retraining schedule; the training job fails (a
    window with no data) and is recorded with its exit code and log, while clients keep
    getting the same stable version, no version is registered and no alias moves."""
    config = tmp_path / "broken.yaml"
    config.write_text("start: '2099-01-01T00:00:00Z'\nend: '2099-02-01T00:00:00Z'\nepochs: 1\n")
    stable = _state(platform)["stable_version"]
    champion = client.get_model_version_by_alias(MODEL, "champion").version
    latest = max(int(v.version) for v in client.search_model_versions(f"name='{MODEL}'"))
    status = platform.run("status")
    assert "scheduler" in status.stdout and status.returncode == 0, status.stdout + status.stderr

    def runs() -> list[dict]:
        listed = platform.run("schedule", "list", "--json")
        assert listed.returncode == 0, listed.stderr
        return next(s for s in json.loads(listed.stdout) if s["name"] == "retrain")["runs"]

    body = random_transactions(customers)
    with Load(f"{served}/predict", body, rate=10, threads=4, max_seconds=400) as load:
        added = platform.run("schedule", "add", "retrain", "--every", "10s", "--",
                             "train", "--config", str(config))  # fmt: skip
        assert added.returncode == 0, added.stdout + added.stderr
        deadline = time.monotonic() + 300
        while not runs() and time.monotonic() < deadline:
            if json.loads(platform.run("schedule", "list", "--json").stdout)[0]["last_fire"]:
                platform.run("schedule", "disable", "retrain")  # this fire only
            time.sleep(3)
        done = runs()
    platform.run("schedule", "remove", "retrain")
    assert done, "the scheduler never ran the schedule"
    run = done[-1]
    assert run["trigger"] == "every" and run["outcome"].startswith(
        "failed: `shipyard train --config"
    )
    assert "error:" in Path(run["log"]).read_text()
    assert load.results and all(r[1] == 200 for r in load.results), load.failures()[:5]
    assert {r[3] for r in load.results} == {stable}
    assert client.get_model_version_by_alias(MODEL, "champion").version == champion
    assert max(int(v.version) for v in client.search_model_versions(f"name='{MODEL}'")) == latest


def test_canary_cli_refuses_bad_requests(served: str, platform: Platform, versions: dict) -> None:
    same = platform.run("canary", "start", MODEL, "--version", versions["healthy"])
    assert same.returncode == 2 and "already the stable version" in same.stderr
    plan = platform.run("canary", "start", MODEL, "--version", "1", "--steps", "50,10")
    assert plan.returncode == 2 and "steps must increase" in plan.stderr
    missing = platform.run("canary", "start", "no-such-model", "--version", "1")
    assert missing.returncode == 4 and "not deployed" in missing.stderr
    unknown = platform.run("canary", "start", MODEL, "--version", "999")
    assert unknown.returncode == 4 and "999" in unknown.stderr


def test_dry_run_prints_the_serve_config(platform: Platform, served: str, tmp_path: Path) -> None:
    import yaml

    result = platform.run("deploy", f"{MODEL}@champion", "--dry-run")
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    app = config["applications"][0]
    assert app["import_path"] == "services.router.app:build_app"
    assert {d["name"] for d in app["deployments"]} == {"router", "stable", "canary"}
