"""The whole platform loop on a kind cluster, through the interfaces a user has.

Pipelines run as RayJobs rendered from the chart and created with kubectl; the model
registry is MLflow's REST API on its NodePort; serving and canaries go through the
``shipyard`` CLI (Kubernetes backend: it patches the RayService) while bounded loopback
traffic (``shipyard.traffic.Load``) hits the Serve NodePort. One test function, because
each step needs the state the previous one left in the cluster.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from shipyard.canary import ACTIVE, TERMINAL
from shipyard.traffic import Load

from pipelines.data.requests import random_transactions, transaction
from tests.conftest import REPO
from tests.e2e.conftest import MLFLOW_URL, SERVE_URL, Kind, log, yaml_docs

pytestmark = pytest.mark.kind

MODEL = "fraud-detector"  # the chart's training config registers this name
OTHER_MODEL = "customer-spend"  # the other model of the chart's serve.models
# Ids the synthetic generator always makes (at least 100 customers and 50 merchants).
CUSTOMERS = [f"c_{i:07d}" for i in range(100)]
MERCHANTS = [f"m_{i:06d}" for i in range(50)]
# The chart's templates of each pipeline: the training config is a ConfigMap of its own.
FEATURES = ["rayjob-features.yaml"]
TRAINING = ["training-configmap.yaml", "rayjob-training.yaml"]
# Analysis thresholds loose enough for a laptop's kind cluster; errors still count.
PLAN = ["--steps", "10,50,100", "--interval", "10s", "--max-latency-ratio", "3",
        "--ready-timeout", "300s"]  # fmt: skip


def _cli() -> list[str]:
    """The venv's `shipyard` console script, as a user runs it."""
    script = Path(sys.executable).with_name("shipyard")
    return [str(script)] if script.exists() else [sys.executable, "-m", "shipyard"]


class Loop:
    """The cluster, the CLI's environment, and the RayJobs this run created."""

    def __init__(self, kind: Kind, env: dict[str, str]) -> None:
        self.kind = kind
        self.env = env
        self.created: list[str] = []

    def shipyard(self, *args: str, timeout: float | None = None) -> subprocess.CompletedProcess:
        """Run the CLI; a non-zero exit fails the test with its output."""
        result = subprocess.run([*_cli(), *args], capture_output=True, text=True, cwd=REPO,
                                env=self.env, timeout=timeout or self.kind.timeout)  # fmt: skip
        assert result.returncode == 0, (
            f"shipyard {' '.join(args)} exited {result.returncode}:\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
        return result

    def render(self, templates: list[str], *sets: str) -> str:
        """A pipeline RayJob (and the config it reads) from the chart."""
        # no retries: a flaky pipeline fails the test instead of hiding behind a retry
        return self.kind.render(templates, "jobs.backoffLimit=0", *sets)

    def run(self, manifest: str) -> str:
        """Create a rendered RayJob and wait until it SUCCEEDED; returns its name."""
        jobs = [d for d in yaml_docs(manifest) if d.get("kind") == "RayJob"]
        assert len(jobs) == 1, f"expected one RayJob in the rendered template, got {len(jobs)}"
        name = jobs[0]["metadata"]["name"]
        log.info("      creating RayJob %s", name)
        self.kind.kubectl("create", "-f", "-", stdin=manifest)
        self.created.append(manifest)
        return self.wait_rayjob(name)

    def wait_rayjob(self, name: str) -> str:
        deadline = time.monotonic() + self.kind.timeout
        seen: tuple[Any, ...] = ()
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            status = self.kind.get("rayjob", name).get("status") or {}
            job, deployment = status.get("jobStatus"), status.get("jobDeploymentStatus")
            if (job, deployment) != seen:
                seen = (job, deployment)
                log.info("      RayJob %s: job %s, deployment %s", name, job, deployment)
            if job == "SUCCEEDED":
                return name
            if job in ("FAILED", "STOPPED") or deployment in ("Failed", "ValidationFailed"):
                pytest.fail(f"RayJob {name} {job or deployment}: {status.get('message') or ''}"
                            f"\n{self._submitter_logs(name)}")  # fmt: skip
            time.sleep(5)
        pytest.fail(f"RayJob {name} did not succeed within {self.kind.timeout:.0f}s "
                    f"(SHIPYARD_E2E_TIMEOUT); status: {json.dumps(status)}\n"
                    f"{self._submitter_logs(name)}")  # fmt: skip

    def _submitter_logs(self, name: str) -> str:
        """The end of the job's own output (KubeRay's submitter Job has its name)."""
        out = self.kind.kubectl("logs", f"job/{name}", "--tail=60", check=False)
        return f"last lines of job/{name}:\n{out.stdout or out.stderr}"

    def rollout(self) -> dict[str, Any]:
        return json.loads(self.shipyard("canary", "status", MODEL, "--json").stdout)

    def follow(self) -> dict[str, Any]:
        """Poll `shipyard canary status --json` until the rollout ends; log decisions."""
        deadline = time.monotonic() + self.kind.timeout
        seen, state = 0, {}
        while time.monotonic() < deadline:
            state = self.rollout()
            for d in (state.get("decisions") or [])[seen:]:
                log.info("      %s %-13s %5g%%  %s", d["at"], d["action"], d.get("weight", 0),
                         d["reason"])  # fmt: skip
            seen = len(state.get("decisions") or [])
            if state.get("status") in TERMINAL:
                return state
            time.sleep(5)
        pytest.fail(f"the rollout of {MODEL} did not end within {self.kind.timeout:.0f}s; "
                    f"state: {json.dumps(state, default=str)[-3000:]}")  # fmt: skip

    def cleanup(self) -> None:
        for manifest in self.created:
            self.kind.kubectl("delete", "--wait=false", "--ignore-not-found", "-f", "-",
                              stdin=manifest, check=False)  # fmt: skip


def _versions(client: Any) -> set[str]:
    return {v.version for v in client.search_model_versions(f"name='{MODEL}'")}


def _new_version(client: Any, before: set[str]) -> str:
    new = _versions(client) - before
    assert len(new) == 1, f"expected the job to register one new {MODEL} version, got {new}"
    return new.pop()


def _champion(client: Any) -> str:
    return client.get_model_version_by_alias(MODEL, "champion").version


def _wait_served(url: str, version: str, timeout: float) -> dict[str, Any]:
    """Until the app answers health-ready and a prediction comes from ``version``."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            health = requests.get(f"{url}/healthz", timeout=10)
            resp = requests.post(f"{url}/predict", json=transaction(0, CUSTOMERS[1]), timeout=30)
            last = f"healthz {health.status_code} {health.text[:200]}; predict {resp.status_code}"
            if resp.status_code == 200 and resp.json().get("model_version") == version:
                return resp.json()
        except requests.RequestException as exc:
            last = f"{type(exc).__name__}: {exc}"
        time.sleep(3)
    pytest.fail(f"{url} did not serve version {version} within {timeout:.0f}s; last: {last}")


def test_full_loop_on_kind(kind: Kind, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow import MlflowClient

    from pipelines.training.chaos import register_faulty_version

    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    loop = Loop(kind, kind.cli_env(tmp_path / "root"))
    client = MlflowClient(tracking_uri=MLFLOW_URL)
    # unique, and short: the chart allows 20 characters, "-challenger" included
    run_id = f"e2e{int(time.time()) % 16**6:06x}"
    app = f"{SERVE_URL}/{MODEL}"

    log.info("[1/6] feature pipeline RayJob (run %s)", run_id)
    loop.run(loop.render(FEATURES, "jobs.features.enabled=true", f"jobs.runId={run_id}"))

    log.info("[2/6] training RayJob")
    before = _versions(client)
    loop.run(loop.render(TRAINING, "jobs.training.enabled=true", f"jobs.runId={run_id}"))
    trained = _new_version(client, before)

    log.info("[3/6] the registry has a champion (trained version %s)", trained)
    resp = requests.get(f"{MLFLOW_URL}/api/2.0/mlflow/registered-models/alias",
                        params={"name": MODEL, "alias": "champion"}, timeout=30)  # fmt: skip
    assert resp.status_code == 200, resp.text
    champion = resp.json()["model_version"]["version"]
    assert champion.isdigit()

    log.info("[4/6] shipyard deploy %s@champion (version %s)", MODEL, champion)
    if loop.rollout().get("status") in ACTIVE:  # left over from an interrupted earlier run
        loop.shipyard("canary", "rollback", MODEL)
        loop.follow()
    deployed = loop.shipyard("deploy", f"{MODEL}@champion")
    assert f"{MODEL} version {champion}" in deployed.stdout, deployed.stdout
    answer = _wait_served(app, champion, kind.timeout)
    assert 0.0 <= answer["fraud_probability"] <= 1.0, answer
    # the chart's other model is an application and route of its own, in any state
    other = requests.get(f"{SERVE_URL}/{OTHER_MODEL}", timeout=30)
    assert other.status_code == 200 and other.json()["model"] == OTHER_MODEL, other.text
    answers = [requests.post(f"{app}/predict", json=transaction(i, c, m, 80.0), timeout=30)
               for i, (c, m) in enumerate(zip(CUSTOMERS[:20], MERCHANTS[:20], strict=True))]  # fmt: skip
    assert all(r.status_code == 200 for r in answers), [r.text for r in answers][:3]
    assert all(0.0 <= r.json()["fraud_probability"] <= 1.0 for r in answers)
    # the replicas read the Feast online store (Redis) that the feature job materialized
    assert any("customer" not in r.json().get("features_missing", []) for r in answers), [
        r.json() for r in answers[:3]
    ]

    log.info("[5/6] a challenger (seed 7) and its canary under traffic")
    before = _versions(client)
    manifest = loop.render(
        TRAINING, "jobs.training.enabled=true", "jobs.training.config.seed=7",
        # as the demo's challenger: another seed may land a little below the champion
        "jobs.training.config.gate.champion_tolerance=0.05", f"jobs.runId={run_id}-challenger",
    )  # fmt: skip
    assert re.search(r"\bseed\W+7\b", manifest), "the training config must travel with the RayJob"
    loop.run(manifest)
    challenger = _new_version(client, before)
    aliases = client.get_model_version(MODEL, challenger).aliases
    # the gate moved `challenger` to it; if it refused, roll the version out by number
    ref = "challenger" if "challenger" in aliases else challenger
    log.info("      version %s registered, aliases %s", challenger, aliases or "none")
    with Load(f"{app}/predict", random_transactions(CUSTOMERS, MERCHANTS), rate=20, threads=8,
              max_seconds=kind.timeout) as load:  # fmt: skip
        loop.shipyard("canary", "start", MODEL, "--version", ref, *PLAN, "--min-requests", "10",
                      "--failure-threshold", "3")  # fmt: skip
        good = loop.follow()
        time.sleep(2)
    assert good["status"] == "promoted", json.dumps(good.get("decisions"), indent=1)
    assert good["canary_version"] == challenger
    failures = load.failures()
    assert not failures, f"{len(failures)} of {len(load.results)} requests failed: {failures[:5]}"
    assert any(r[2] == "canary" and r[3] == challenger for r in load.results)
    assert _champion(client) == challenger
    about = requests.get(f"{app}/", timeout=10).json()
    assert about["variants"]["stable"]["model_version"] == challenger, about

    log.info("[6/6] a planted bad version, rolled out and rolled back")
    faulty = register_faulty_version(MLFLOW_URL, MODEL, challenger, error_share=0.5)
    log.info("      registered version %s, a faulty copy of %s", faulty, challenger)
    with Load(f"{app}/predict", random_transactions(CUSTOMERS, MERCHANTS), rate=20, threads=8,
              max_seconds=kind.timeout) as load:  # fmt: skip
        loop.shipyard("canary", "start", MODEL, "--version", faulty, *PLAN, "--min-requests", "5",
                      "--failure-threshold", "2")  # fmt: skip
        bad = loop.follow()
        time.sleep(3)  # requests already routed to the canary drain
        after = time.time()
        time.sleep(3)
    assert bad["status"] == "rolled_back", json.dumps(bad.get("decisions"), indent=1)
    assert bad["canary_version"] == faulty
    assert "error rate" in bad["decisions"][-1]["reason"], bad["decisions"][-1]
    errors = load.failures()
    assert errors, "the faulty version never answered a client: was it ever routed to?"
    assert all(r[1] == 500 and r[2] == "canary" for r in errors), errors[:5]
    assert all(r[1] == 200 and r[2] == "stable" for r in load.results if r[0] >= after)
    assert _champion(client) == challenger
    assert client.get_model_version(MODEL, faulty).tags.get("canary.result") == "rolled_back"

    loop.cleanup()  # only after a pass: a failed run leaves its RayJobs for inspection
