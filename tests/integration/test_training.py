"""Training on the real local cluster: Ray Train (2 DDP workers) as a Ray job through
the CLI, tracked in the real MLflow server, registered, gated and aliased.

Runs share the session's features (``built``) and one registered model per
module, so versions and aliases can be followed from run to run.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.integration.conftest import TRAIN_EPOCHS, TRAINED_MODEL, Platform, train

pytestmark = pytest.mark.integration

MODEL = TRAINED_MODEL
EPOCHS = TRAIN_EPOCHS


def _train(platform: Platform, tmp: Path, **config: object) -> tuple[dict, str]:
    return train(platform, tmp, **config)


@pytest.fixture(scope="module")
def client(platform: Platform):  # type: ignore[no-untyped-def]
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=platform.mlflow)


@pytest.fixture(scope="module")
def first(trained: dict) -> dict:
    return trained


def _reused(client, first: dict) -> dict:  # type: ignore[no-untyped-def]
    """Later runs train on the first run's saved training set: the Feast join is
    proven once; repeating it would only cost minutes."""
    return {"training_set": client.get_run(first["run_id"]).data.tags["data.training_set"]}


def test_run_has_epochs_plots_model_lineage_and_the_version_is_aliased(
    first: dict, client, platform: Platform
) -> None:
    run = client.get_run(first["run_id"])
    assert run.info.status == "FINISHED"
    for key in ("train_loss", "val_loss", "val_roc_auc", "val_pr_auc"):
        steps = [m.step for m in client.get_metric_history(first["run_id"], key)]
        assert sorted(steps) == list(range(EPOCHS)), key
    artifacts = {a.path for a in client.list_artifacts(first["run_id"], "plots")}
    assert artifacts == {"plots/loss_curves.png", "plots/roc_curve.png", "plots/pr_curve.png"}
    assert {"workers", "epochs", "gate.pr_auc_floor"} <= set(run.data.params)
    tags = run.data.tags
    assert tags["feature_service"] == "fraud_model_v1"
    assert (
        tags["feature_views"] == "customer_features,merchant_features,transaction_amount_features"
    )
    assert len(tags["data.fingerprint"]) == 16 and tags["data.window_start"]
    assert tags["gate.passed"] == "True"
    assert int(tags["data.train_rows"]) > 10_000

    version = client.get_model_version(MODEL, first["version"])
    assert version.run_id == first["run_id"]
    assert set(first["aliases"]) == {"challenger", "champion"}  # the first passing version
    assert client.get_model_version_by_alias(MODEL, "champion").version == first["version"]
    assert version.tags["data.fingerprint"] == tags["data.fingerprint"]
    # the drift monitor's reference: the training data's profile, named by the version
    from shipyard.contract import read_contract, read_reference_profile

    profile = read_reference_profile(platform.mlflow, MODEL, first["version"])
    contract = read_contract(platform.mlflow, MODEL, first["version"])
    expected = {c.name for c in contract.inputs if c.type != "datetime"}
    assert {n for n, c in profile.columns.items() if c.role == "feature"} == expected
    assert profile.columns["fraud_probability"].role == "output"
    assert profile.columns["category"].kind == "categorical" and profile.rows > 10_000
    # It learned (the quality comparison with the baseline is on the demo's data).
    assert first["metrics"]["final_val_roc_auc"] > 0.8
    assert 0 < first["baseline"]["baseline_val_pr_auc"] <= 1

    shown = platform.run("models", "show", f"{MODEL}@champion")
    assert shown.returncode == 0, shown.stderr
    assert f"{MODEL} version {first['version']}" in shown.stdout
    assert "data.fingerprint" in shown.stdout and "gate          passed" in shown.stdout
    listed = platform.run("models", "list")
    assert MODEL in listed.stdout and "challenger,champion" in listed.stdout


def test_challenger_loads_in_a_fresh_process_and_predicts_the_same(
    first: dict, client, platform: Platform, tmp_path: Path
) -> None:
    local = client.download_artifacts(first["run_id"], "predictions/validation.parquet",
                                      str(tmp_path))  # fmt: skip
    script = (
        "import sys, mlflow, pandas as pd\n"
        f"mlflow.set_tracking_uri({platform.mlflow!r})\n"
        f"model = mlflow.pyfunc.load_model('models:/{MODEL}@challenger')\n"
        f"frame = pd.read_parquet({local!r})\n"
        "inputs = frame.drop(columns=['transaction_id', 'is_fraud', 'fraud_probability'])\n"
        "frame['reloaded'] = model.predict(inputs)['fraud_probability'].to_numpy()\n"
        f"frame.to_parquet({str(tmp_path / 'out.parquet')!r})\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = pd.read_parquet(tmp_path / "out.parquet")
    assert len(out) > 1000
    pd.testing.assert_series_equal(out["reloaded"], out["fraud_probability"], check_names=False,
                                   atol=1e-6, rtol=0)  # fmt: skip


def test_killed_worker_resumes_and_the_gate_refuses_shuffled_labels(
    first: dict, client, platform: Platform, tmp_path: Path
) -> None:
    """One job, two independent checks (a training job is the suite's costliest step):
    rank 1 kills itself in epoch 1 and the run resumes from the epoch-0 checkpoint;
    the labels are shuffled, so the gate must refuse the model and move no alias."""
    experiment = client.get_experiment_by_name(MODEL).experiment_id
    before = len(client.search_runs([experiment]))
    champion = client.get_model_version_by_alias(MODEL, "champion").version
    challenger = client.get_model_version_by_alias(MODEL, "challenger").version
    result, logs = _train(platform, tmp_path, fault_injection={"rank": 1, "epoch": 1},
                          shuffle_labels=True, **_reused(client, first))  # fmt: skip
    storage = Path(client.get_run(result["run_id"]).data.tags["data.training_set"]).parent
    assert (storage / "fault-injected").exists()  # the worker really died
    assert "resumed from the checkpoint of epoch 0" in logs
    assert len(client.search_runs([experiment])) == before + 1  # no duplicate run
    assert client.get_run(result["run_id"]).info.status == "FINISHED"
    for key in ("train_loss", "val_pr_auc"):
        steps = [m.step for m in client.get_metric_history(result["run_id"], key)]
        assert sorted(steps) == list(range(EPOCHS)), f"{key} steps {steps}"

    tags = client.get_run(result["run_id"]).data.tags
    first_tags = client.get_run(first["run_id"]).data.tags
    assert tags["data.fingerprint"] == first_tags["data.fingerprint"]  # same rows
    assert result["gate_passed"] is False and result["aliases"] == []
    refused = client.get_model_version(MODEL, result["version"])
    assert refused.tags["gate.passed"] == "False" and not refused.aliases
    assert client.get_model_version_by_alias(MODEL, "champion").version == champion
    assert client.get_model_version_by_alias(MODEL, "challenger").version == challenger


def test_a_crashed_training_job_leaves_its_run_failed(
    first: dict, client, platform: Platform, tmp_path: Path
) -> None:
    path = tmp_path / "crash.yaml"
    path.write_text(yaml.safe_dump({"model_name": MODEL, "experiment": MODEL, "epochs": 2,
                                    "max_failures": 0, "hidden": [8], **_reused(client, first),
                                    "fault_injection": {"rank": 1, "epoch": 1}}))  # fmt: skip
    result = platform.run("train", "--config", str(path), timeout=900)
    assert result.returncode != 0
    assert "error:" in result.stderr and "Traceback" not in result.stderr
    experiment = client.get_experiment_by_name(MODEL).experiment_id
    latest = client.search_runs([experiment], order_by=["attributes.start_time DESC"])[0]
    assert latest.info.status == "FAILED"
