"""The local platform and Ray jobs, through the CLI, against a real cluster."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest
import requests

from tests.integration.conftest import Platform

pytestmark = pytest.mark.integration


def test_cluster_has_head_and_worker_node_on_loopback(platform: Platform) -> None:
    resp = requests.get(f"{platform.dashboard}/api/v0/nodes?detail=true", timeout=10)
    nodes = [n for n in resp.json()["data"]["result"]["result"] if n["state"] == "ALIVE"]
    assert len(nodes) == 2
    assert {n["node_ip"] for n in nodes} == {"127.0.0.1"}
    assert sum(bool(n["is_head_node"]) for n in nodes) == 1


def test_up_again_reports_what_runs_and_status_is_green(platform: Platform) -> None:
    again = platform.run("up", "--workers", "1")
    assert again.returncode == 0, again.stderr
    for name in ("ray-head", "ray-worker-1", "mlflow", "scheduler"):
        assert f"{name} is already running" in again.stderr
    status = platform.run("status")
    assert status.returncode == 0, status.stdout
    assert "2 node(s) alive" in status.stdout
    rows = json.loads(platform.run("status", "--json").stdout)
    assert {r["name"]: r["up"] for r in rows} == {"ray": True, "ray-worker-1": True, "mlflow": True,
                                                  "scheduler": True}  # fmt: skip
    assert next(r for r in rows if r["name"] == "ray")["version"] == "2.60.0"


def test_job_succeeds_and_its_logs_read_back(platform: Platform, tmp_path: Path) -> None:
    marker = f"hello-{uuid.uuid4().hex[:8]}"
    workdir = tmp_path / "wd"
    workdir.mkdir()
    (workdir / "job.py").write_text(
        "import ray\nray.init()\n"
        "@ray.remote\ndef node():\n    return ray.get_runtime_context().get_node_id()\n"
        f"print('{marker}', len(set(ray.get([node.remote() for _ in range(8)]))) > 0)\n"
    )
    submit = platform.run("job", "submit", "--working-dir", str(workdir), "--", "python", "job.py")
    assert submit.returncode == 0, submit.stderr
    job_id = submit.stdout.strip().splitlines()[-1]
    follow = platform.run("job", "logs", job_id, "--follow")
    assert f"{marker} True" in follow.stdout
    status = platform.run("job", "status", job_id)
    assert status.returncode == 0 and "SUCCEEDED" in status.stdout
    logs = platform.run("job", "logs", job_id)
    assert marker in logs.stdout
    assert job_id in platform.run("job", "list").stdout


def test_failing_job_reports_failed_with_reason(platform: Platform) -> None:
    result = platform.run(
        "job",
        "submit",
        "--wait",
        "--",
        "python",
        "-c",
        "import sys; print('about to fail'); sys.exit(3)",
    )
    assert result.returncode == 1
    assert "about to fail" in result.stdout  # the streamed logs
    assert "FAILED" in result.stderr and "exit code 3" in result.stderr
    assert "Traceback" not in result.stderr
    job_id = result.stdout.splitlines()[0].strip()
    status = platform.run("job", "status", job_id)
    assert status.returncode == 1 and "FAILED" in status.stdout


def test_bad_entrypoint_fails_with_reason(platform: Platform) -> None:
    result = platform.run("job", "submit", "--wait", "--", "no-such-command-xyz")
    assert result.returncode == 1
    assert "FAILED" in result.stderr and "not found" in result.stderr, (
        result.stdout,
        result.stderr,
    )


def test_runtime_env_file_and_stop(platform: Platform, tmp_path: Path) -> None:
    env_file = tmp_path / "env.yaml"
    env_file.write_text("env_vars:\n  SHIPYARD_TEST_VALUE: from-runtime-env\n")
    result = platform.run(
        "job", "submit", "--runtime-env", str(env_file), "--",
        "python", "-c", "import os, time; print(os.environ['SHIPYARD_TEST_VALUE'], flush=True); time.sleep(300)",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    job_id = result.stdout.strip()
    deadline = time.monotonic() + 90
    while "from-runtime-env" not in platform.run("job", "logs", job_id).stdout:
        assert time.monotonic() < deadline, "the job never printed its runtime env value"
        time.sleep(1)
    stop = platform.run("job", "stop", job_id, "--wait")
    assert stop.returncode == 0 and "STOPPED" in stop.stdout
    status = platform.run("job", "status", job_id)
    assert status.returncode == 1 and "STOPPED" in status.stdout


def test_summary_job_reads_generated_data_on_both_nodes(platform: Platform) -> None:
    raw = platform.root / f"raw-summary-{uuid.uuid4().hex[:6]}"  # the session's data root is shared
    gen = platform.run("data", "generate", "--rows", "20000", "--seed", "4", "--out", str(raw))
    assert gen.returncode == 0, gen.stderr
    report = platform.root / "summary.json"
    result = platform.run("job", "submit", "--wait", "--", "python", "-m", "pipelines.data.summary",
                          "--input", str(raw), "--out", str(report))  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads(report.read_text())
    manifest = json.loads((raw / "_manifest.json").read_text())
    assert summary["rows"] == 20000 and summary["fraud_rows"] == manifest["fraud_rows"]
    assert summary["ray_nodes"] == 2
    assert summary["min_label_delay_hours"] >= 24


def test_mlflow_server_logs_a_run_over_http_and_reads_it_back(
    platform: Platform, tmp_path: Path
) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=platform.mlflow)
    exp_id = client.create_experiment(f"it-{uuid.uuid4().hex[:8]}")
    run = client.create_run(exp_id, tags={"suite": "integration"})
    client.log_param(run.info.run_id, "lr", "0.01")
    for step, loss in enumerate([0.9, 0.5, 0.3]):
        client.log_metric(run.info.run_id, "loss", loss, step=step)
    client.log_text(run.info.run_id, "artifact body", "notes/readme.txt")
    client.set_terminated(run.info.run_id)

    fresh = MlflowClient(tracking_uri=platform.mlflow)
    got = fresh.get_run(run.info.run_id)
    assert got.data.params == {"lr": "0.01"}
    assert got.data.tags["suite"] == "integration"
    assert [m.value for m in fresh.get_metric_history(run.info.run_id, "loss")] == [0.9, 0.5, 0.3]
    assert got.info.status == "FINISHED"
    # artifacts go through the server's proxy into the local artifact root
    assert got.info.artifact_uri.startswith("mlflow-artifacts:")
    local = fresh.download_artifacts(run.info.run_id, "notes/readme.txt", str(tmp_path))
    assert Path(local).read_text() == "artifact body"
    stored = list((platform.root / "mlflow" / "artifacts").rglob("readme.txt"))
    assert len(stored) == 1
