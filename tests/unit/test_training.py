"""Training code without a cluster: config, preprocessing, the time split, entity rows,
the model artifact's round trip, and the CLI's errors before any job starts."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from shipyard.errors import ConfigError, DataError
from shipyard.models import parse_ref

from pipelines.training.config import load_config
from pipelines.training.data import labelled_transactions, split
from pipelines.training.model import (
    FEATURE_INPUTS,
    FraudMLP,
    FraudPyfunc,
    Preprocessor,
    to_model_input,
)
from tests.conftest import shipyard_cmd
from tests.features_support import bad_rows, write_raw


def _inputs(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({c: rng.exponential(5.0, n) for c in FEATURE_INPUTS})
    frame["cust_secs_since_prev_tx"] = np.where(
        rng.random(n) < 0.2, np.nan, rng.exponential(1e4, n)
    )
    frame["amount"] = rng.exponential(60.0, n)
    frame["timestamp"] = pd.Timestamp("2026-06-01", tz="UTC") + pd.to_timedelta(
        np.sort(rng.integers(0, 30 * 86400, n)), unit="s"
    )
    frame["category"] = rng.choice(["grocery", "fuel", "online_retail"], n)
    frame["country"] = rng.choice(["US", "BR"], n)
    frame["is_fraud"] = rng.random(n) < 0.1
    frame["transaction_id"] = [f"t{i}" for i in range(n)]
    return frame


def test_config_defaults_overrides_and_errors_that_name_the_field(tmp_path: Path) -> None:
    assert load_config().workers == 2
    path = tmp_path / "train.yaml"
    path.write_text("epochs: 7\ngate: {pr_auc_floor: 0.3}\n")
    cfg = load_config(path, workers=3, epochs=None)
    assert (cfg.epochs, cfg.workers, cfg.gate.pr_auc_floor) == (7, 3, 0.3)
    path.write_text("epochz: 7\n")
    with pytest.raises(ConfigError, match="epochz: Extra inputs are not permitted"):
        load_config(path)
    with pytest.raises(ConfigError, match="gate.pr_auc_floor"):
        load_config(None, gate={"pr_auc_floor": 2})
    with pytest.raises(ConfigError, match="fault_injection.rank 2 needs more than 2"):
        load_config(None, fault_injection={"rank": 2, "epoch": 1})
    path.write_text("- a list\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(path)


def test_preprocessor_fills_scales_encodes_and_round_trips() -> None:
    train = _inputs(2000)
    prep = Preprocessor.fit(train)
    x = prep.transform(train)
    assert x.shape == (2000, prep.width) and x.dtype == np.float32
    assert not np.isnan(x).any()
    numeric = len(prep.numeric)
    assert np.allclose(x[:, :numeric].mean(axis=0), 0, atol=1e-4)  # fitted on this split
    assert prep.indicators == ["cust_secs_since_prev_tx"]
    unseen = train.head(3).assign(category="jewellery", country="ZZ")
    tail = prep.transform(unseen)[:, -(len(prep.vocab["category"]) + len(prep.vocab["country"])) :]
    assert not tail.any()  # unseen categories encode as all zeros
    again = Preprocessor.from_dict(prep.to_dict())
    assert np.array_equal(again.transform(train), x)
    with pytest.raises(ValueError, match="lack column"):
        prep.transform(train.drop(columns=["amount"]))


def _reference_transform(prep: Preprocessor, frame: pd.DataFrame) -> np.ndarray:
    """The preprocessing as first written, column by column in pandas: the oracle the
    numpy version must equal."""
    from pipelines.training.model import _LOG

    raw = np.stack([pd.to_numeric(frame[c], errors="coerce").to_numpy(dtype=np.float64)
                    for c in prep.numeric], axis=1)  # fmt: skip
    gaps = np.isnan(raw)
    shaped = np.where(gaps, np.asarray(prep.fill), raw)
    for i, column in enumerate(prep.numeric):
        if column in _LOG:
            shaped[:, i] = np.log1p(np.clip(shaped[:, i], 0.0, None))
    parts = [(shaped - np.asarray(prep.mean)) / np.asarray(prep.std)]
    if prep.indicators:
        parts.append(gaps[:, [prep.numeric.index(c) for c in prep.indicators]].astype(np.float64))
    ts = pd.to_datetime(frame["timestamp"], utc=True, format="ISO8601")  # mixed offsets too
    hour = (ts.dt.hour + ts.dt.minute / 60.0).to_numpy(dtype=np.float64)
    parts.append(np.stack([np.sin(2 * np.pi * hour / 24), np.cos(2 * np.pi * hour / 24)], 1))
    for column, values in prep.vocab.items():
        codes = pd.Categorical(frame[column].astype("string"), categories=values).codes
        parts.append(np.eye(len(values) + 1)[codes][:, : len(values)])
    return np.concatenate(parts, axis=1).astype(np.float32)


def test_the_numpy_preprocessing_equals_the_pandas_reference_on_odd_inputs() -> None:
    train = _inputs(2000)
    prep = Preprocessor.fit(train)
    served = to_model_input(train.head(64))  # what the serving path hands the model
    odd = train.head(8).astype({"amount": object, "category": object}).copy()
    odd.loc[odd.index[0], "amount"] = "12.5"  # a numeric string
    odd.loc[odd.index[1], "amount"] = None
    odd.loc[odd.index[2], "category"] = None  # missing: all zeros
    odd.loc[odd.index[3], "category"] = "jewellery"  # unseen: all zeros
    odd["timestamp"] = ["2026-08-14T10:30:00Z", "2026-08-14T23:59:59.999999Z",
                        "2026-08-14T12:00:00+02:00", "2026-08-14T00:15:00-05:00",
                        "2026-08-14 10:00:00Z", "2026-08-14T10:00Z", "2026-08-14T07:45:12.5Z",
                        "2026-08-14T01:02:03.000000Z"]  # fmt: skip
    for frame in (train, served, odd, train.head(1), to_model_input(train.head(1))):
        np.testing.assert_allclose(prep.transform(frame), _reference_transform(prep, frame),
                                   rtol=1e-6, atol=1e-6)  # fmt: skip


def test_pyfunc_survives_pickling_and_predicts_probabilities() -> None:
    import cloudpickle

    frame = _inputs(500)
    prep = Preprocessor.fit(frame)
    net = FraudMLP(prep.width, [8], 0.0)
    model = FraudPyfunc(prep.to_dict(), {"width": prep.width, "hidden": [8], "dropout": 0.0},
                        net.state_dict())  # fmt: skip
    first = model.predict(None, frame)["fraud_probability"].to_numpy()
    loaded = cloudpickle.loads(cloudpickle.dumps(model))
    assert np.array_equal(loaded.predict(None, frame)["fraud_probability"].to_numpy(), first)
    assert ((first > 0) & (first < 1)).all()
    contract = to_model_input(frame)  # ISO strings and float64, as a JSON client sends
    assert contract["timestamp"].str.endswith("Z").all()
    assert np.allclose(model.predict(None, contract)["fraud_probability"], first, atol=1e-6)


def test_split_is_by_time_and_needs_both_classes() -> None:
    frame = _inputs(3000)
    parts = split(frame, 0.25)
    assert parts.train["timestamp"].max() < parts.split_at <= parts.val["timestamp"].min()
    assert len(parts.train) + len(parts.val) == len(frame)
    assert abs(len(parts.val) / len(frame) - 0.25) < 0.02
    no_fraud_late = frame.assign(is_fraud=frame.index < 100)
    with pytest.raises(DataError, match="validation split .* both classes"):
        split(no_fraud_late, 0.25)


def test_entity_rows_skip_quarantined_duplicates_and_labels_not_yet_known(tmp_path: Path) -> None:
    from pipelines.data.generate import GenerateConfig, generate

    raw = tmp_path / "raw"
    generate(GenerateConfig(rows=3000, seed=3, days=20), raw)
    good = pd.read_parquet(raw).drop(columns=["date"])
    bad, expected = bad_rows(good)
    write_raw(bad, raw / "planted" / "part-0.parquet")
    rows, excluded, (lo, hi) = labelled_transactions(raw, None, None)
    for reason in set(expected.values()):
        assert excluded[f"quarantined:{reason}"] >= 1, reason
    assert rows["transaction_id"].is_unique
    assert (rows["label_available_at"] <= hi).all()
    assert len(rows) + excluded.get("label_not_yet_known", 0) == len(good)
    assert excluded["label_not_yet_known"] > 0  # the latest frauds' labels arrive later
    with pytest.raises(DataError, match="no labelled transactions"):
        labelled_transactions(raw, pd.Timestamp("2000-01-01", tz="UTC"),
                              pd.Timestamp("2000-01-02", tz="UTC"))  # fmt: skip


def test_model_references_parse_and_bad_ones_say_the_forms() -> None:
    assert parse_ref("fraud-detector").version is None
    assert parse_ref("fraud-detector@champion").alias == "champion"
    assert parse_ref("fraud-detector/3").version == "3"
    with pytest.raises(ConfigError, match="NAME@ALIAS"):
        parse_ref("fraud detector@@x")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_train_and_models_fail_in_one_line_before_any_job(
    shipyard_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**shipyard_env, "SHIPYARD_MLFLOW__TRACKING_URI": f"http://127.0.0.1:{_free_port()}"}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*shipyard_cmd(), *args], capture_output=True, text=True, env=env,
                              timeout=60)  # fmt: skip

    down = run("train", "--epochs", "1")
    assert down.returncode == 3, down.stderr
    assert "MLflow tracking server at http://127.0.0.1:" in down.stderr
    assert "is not reachable" in down.stderr and "Traceback" not in down.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("hidden: [0]\n")
    invalid = run("train", "--config", str(bad))
    assert invalid.returncode == 2 and "hidden layer sizes must be positive" in invalid.stderr
    assert run("models", "show", "a b").returncode == 2
    assert run("models", "list").returncode == 3


def test_a_flipping_copy_answers_one_minus_p_on_its_share_and_as_its_source_elsewhere() -> None:
    """chaos.FaultyPyfunc(flip_share=...): the planted disagreeing version of the shadow
    tests flips every numeric output on a deterministic share of rows."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    from pipelines.training.chaos import FaultyPyfunc, _share

    rng = np.random.default_rng(0)
    x = pd.DataFrame({"a": rng.normal(size=400), "b": rng.normal(size=400)})
    fitted = LogisticRegression().fit(x, x["a"] + rng.normal(size=400) > 0)

    class Source:  # the wrapped version, as mlflow.pyfunc.load_model gives it
        def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
            p = fitted.predict_proba(frame)
            return pd.DataFrame({"legit_probability": p[:, 0], "fraud_probability": p[:, 1]})

    model = FaultyPyfunc(error_share=0.0, flip_share=0.3)
    model._inner = Source()
    out, source = model.predict(None, x), Source().predict(x)
    flipped = x.apply(_share, axis=1).to_numpy() < 0.3
    assert 0.2 < flipped.mean() < 0.4
    np.testing.assert_allclose(
        out["fraud_probability"][flipped], 1 - source["fraud_probability"][flipped]
    )
    np.testing.assert_allclose(
        out["legit_probability"][flipped], 1 - source["legit_probability"][flipped]
    )
    pd.testing.assert_frame_equal(out[~flipped], source[~flipped])


def test_a_latest_window_ends_its_lag_before_the_newest_event(tmp_path: Path) -> None:
    from pipelines.data.generate import GenerateConfig, generate

    raw = tmp_path / "raw"
    generate(GenerateConfig(rows=4000, seed=2, days=30), raw)
    newest = pd.read_parquet(raw)["timestamp"].max()
    rows, _, (lo, hi) = labelled_transactions(raw, None, None, days=10, lag_days=5)
    assert hi == newest + pd.Timedelta(1, "s") - pd.Timedelta(days=5)
    assert lo == hi - pd.Timedelta(days=10)
    assert rows["timestamp"].between(lo, hi, inclusive="left").all() and len(rows) > 1000
    assert load_config(None, window_days=21, window_lag_days=7).window_days == 21
    with pytest.raises(ConfigError, match="window_days replaces start and end"):
        load_config(None, window_days=21, start="2026-07-01T00:00:00Z")
    with pytest.raises(ConfigError, match="window_lag_days needs window_days"):
        load_config(None, window_lag_days=7)
    with pytest.raises(ConfigError, match="window_days"):
        load_config(None, window_days=0)
