"""Serving and canary rollouts on the real local cluster: Ray Serve through its REST
API, the MLflow registry, Feast's online store, and the in-cluster controller.

One model per module, registered from the session's trained run: version 1 the
champion, version 2 a healthy new version (the same trained weights, registered
again, as a retrained model that passed the gate would be), version 3 a planted
faulty copy that fails on about half the transactions. Traffic is bounded loopback
load (``shipyard.traffic.Load``).
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests
from shipyard.traffic import Load

from pipelines.data.requests import random_transactions, transaction
from tests.integration.conftest import TRAINED_MODEL, Built, Platform

pytestmark = pytest.mark.integration

MODEL = f"it-serve-{uuid.uuid4().hex[:6]}"
# a quick plan: short intervals, thresholds wide enough for a busy 2-core machine
PLAN = ["--interval", "4s", "--min-requests", "5", "--max-latency-ratio", "4",
        "--failure-threshold", "3", "--ready-timeout", "120s"]  # fmt: skip


@pytest.fixture(scope="module")
def client(platform: Platform):  # type: ignore[no-untyped-def]
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=platform.mlflow)


@pytest.fixture(scope="module")
def versions(platform: Platform, trained: dict, client) -> dict[str, str]:  # type: ignore[no-untyped-def]
    import mlflow
    from shipyard.contract import register_model

    from pipelines.training.chaos import register_faulty_version
    from pipelines.training.model import serving_contract

    source = client.get_model_version(TRAINED_MODEL, trained["version"]).source
    mlflow.set_tracking_uri(platform.mlflow)
    contract = serving_contract()  # the one registration call, as the training job makes it
    champion = register_model(platform.mlflow, source, MODEL, **contract)
    client.set_registered_model_alias(MODEL, "champion", champion)
    healthy = register_model(platform.mlflow, source, MODEL, tags={"gate.passed": "True"},
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


def _state(platform: Platform) -> dict:
    """The rollout's durable state as the controller wrote it (what `canary status`
    prints; read directly so polling does not start a CLI process each second)."""
    from shipyard.serve_backends import LocalBackend

    return LocalBackend(platform.dashboard, platform.root / "run" / "rollouts").load_state(
        MODEL
    ) or {"status": "none", "decisions": []}


def _wait_for(platform: Platform, predicate, timeout: float, what: str) -> dict:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    state: dict = {}
    while time.monotonic() < deadline:
        state = _state(platform)
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


GBT = f"it-gbt-{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="module")
def gbt(platform: Platform, trained: dict, client, customers: list[str]) -> str:  # type: ignore[no-untyped-def]
    """A second flavor on the same features: scikit-learn trees, logged with MLflow's
    sklearn flavor, registered through the same call, deployed next to the MLP."""
    from pipelines.training.gbt import train_gbt

    saved = Path(client.get_run(trained["run_id"]).data.tags["data.training_set"])
    result = train_gbt(saved, platform.mlflow, GBT, say=lambda _: None)
    assert result.gate_passed and "champion" in result.aliases, result
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


def test_good_canary_split_restart_and_promotion(
    served: str, platform: Platform, versions: dict[str, str], customers: list[str], client
) -> None:  # type: ignore[no-untyped-def]
    with Load(
        f"{served}/predict", random_transactions(customers), rate=25, threads=3, max_seconds=900
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

        def ask(chunk: list[str]) -> list[str]:
            body = {"records": [transaction(0, k) for k in chunk]}
            resp = requests.post(f"{served}/predict", json=body, timeout=60)
            assert resp.status_code == 200 and resp.json()["failed"] == 0, resp.text[:500]
            return [p["variant"] for p in resp.json()["predictions"]]

        with ThreadPoolExecutor(4) as pool:
            first = sum(pool.map(ask, [keys[i : i + 50] for i in range(0, 2000, 50)]), [])
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


def test_registry_watch_rolls_out_a_bad_challenger_and_rolls_it_back(
    served: str, platform: Platform, versions: dict[str, str], customers: list[str], client
) -> None:  # type: ignore[no-untyped-def]
    """The planted bad version passed the offline gate (as a model can that fails only
    online): the watch starts its rollout when `challenger` moves to it, the analysis
    rolls it back, and clients saw errors only from the canary's share."""
    champion = client.get_model_version_by_alias(MODEL, "champion").version
    client.set_model_version_tag(MODEL, versions["faulty"], "gate.passed", "True")
    watch = platform.run("canary", "watch", MODEL, "--steps", "20,50,100", *PLAN[:-4],
                         "--failure-threshold", "2", timeout=200)  # fmt: skip
    assert watch.returncode == 0, watch.stdout + watch.stderr
    assert "registry watch on" in watch.stdout
    with Load(
        f"{served}/predict", random_transactions(customers), rate=25, threads=3, max_seconds=600
    ) as load:
        client.set_registered_model_alias(MODEL, "challenger", versions["faulty"])
        state = _wait_for(platform, lambda s: s.get("canary_version") == versions["faulty"]
                          and s["status"] in ("promoted", "rolled_back"), 240, "the rollback")  # fmt: skip
        time.sleep(2)  # traffic after the rollback: stable only
        after = time.time()
        time.sleep(3)
    assert state["source"] == "watch"
    assert state["status"] == "rolled_back", json.dumps(state["decisions"], indent=1)
    assert "error rate" in state["decisions"][-1]["reason"]
    assert state["weight"] == 0.0 and state["step"] == 0  # never got past 20 %
    results = load.results
    errors = [r for r in results if r[1] != 200]
    assert errors and all(r[2] == "canary" and r[1] == 500 for r in errors), errors[:5]
    # clients saw about weight x failure share of errors while the canary had traffic
    during = [r for r in results if r[0] < after]
    assert len(errors) / len(during) < 0.2 * 0.5 + 0.05, (len(errors), len(during))
    assert all(r[1] == 200 and r[2] == "stable" for r in results if r[0] >= after)
    assert client.get_model_version_by_alias(MODEL, "champion").version == champion
    tags = client.get_model_version(MODEL, versions["faulty"]).tags
    assert tags["canary.result"] == "rolled_back"
    again = platform.run("canary", "rollback", MODEL)
    assert again.returncode != 0 and "no rollout" in again.stderr
    stop = platform.run("canary", "watch", MODEL, "--stop", timeout=200)
    assert stop.returncode == 0 and "registry watch off" in stop.stdout


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
