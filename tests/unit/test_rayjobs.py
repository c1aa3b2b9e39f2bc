"""``shipyard job submit --k8s``: the RayJob it creates, how it follows it, its errors.

The Kubernetes API is a recording stand-in for ``CustomObjectsApi`` (no cluster can
run here); what it receives is validated against the KubeRay v1.7.0 RayJob CRD.
"""

from __future__ import annotations

import copy
import os
from typing import Any

import pytest
import yaml
from shipyard import rayjobs
from shipyard.errors import ClusterUnreachableError, ConfigError, JobFailedError, JobNotFoundError
from shipyard.settings import defaults

from tests.k8s_schema import validate_cr
from tests.unit.test_cli import run

SETTINGS = defaults(k8s={"namespace": "ml", "jobs_cluster": "shipyard-jobs"})


class ApiError(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


class FakeRayJobs:
    """Creates RayJobs, then plays back the statuses KubeRay would set, one per read."""

    def __init__(self, statuses: list[dict[str, Any]] | None = None,
                 error: ApiError | None = None) -> None:  # fmt: skip
        self.created: list[tuple[str, dict[str, Any]]] = []
        self.statuses = list(statuses or [])
        self.error = error

    def create_namespaced_custom_object(self, group, version, namespace, plural, body):  # type: ignore[no-untyped-def]
        assert (group, version, plural) == ("ray.io", "v1", "rayjobs")
        if self.error:
            raise self.error
        self.created.append((namespace, copy.deepcopy(body)))
        return body

    def get_namespaced_custom_object(self, group, version, namespace, plural, name):  # type: ignore[no-untyped-def]
        if not any(b["metadata"]["name"] == name for _, b in self.created):
            raise ApiError(404, "Not Found")
        body = copy.deepcopy(self.created[-1][1])
        body["status"] = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        return body


def test_manifest_is_a_valid_rayjob_on_the_jobs_cluster() -> None:
    env = {"env_vars": {"A": "1"}, "pip": ["six"]}
    body = rayjobs.manifest(SETTINGS, ["python", "-m", "pkg.mod", "--x", "a b"], name="nightly-1",
                            runtime_env=env, active_deadline_s=600)  # fmt: skip
    assert validate_cr(body) == []
    spec = body["spec"]
    assert spec["entrypoint"] == "python -m pkg.mod --x 'a b'"
    assert spec["submissionMode"] == "HTTPMode"  # no submitter pod
    assert spec["clusterSelector"] == {"ray.io/cluster": "shipyard-jobs"}
    assert spec["jobId"] == "nightly-1" and spec["activeDeadlineSeconds"] == 600
    assert yaml.safe_load(spec["runtimeEnvYAML"]) == env
    assert body["metadata"]["namespace"] == "ml"
    # a cluster-selecting RayJob must not ask KubeRay to tear the shared cluster down
    assert "shutdownAfterJobFinishes" not in spec


@pytest.mark.parametrize(("entry", "name", "message"), [
    ([], "ok", "no entrypoint"), (["true"], "Bad_Name", "not a valid Kubernetes name"),
    (["true"], "x" * 48, "not a valid Kubernetes name"),
    (["true"], "1st-run", "not a valid Kubernetes name")])  # fmt: skip
def test_manifest_refuses_bad_input(entry: list[str], name: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        rayjobs.manifest(SETTINGS, entry, name=name)


def test_submit_then_wait_until_succeeded() -> None:
    api = FakeRayJobs([
        {"jobDeploymentStatus": "Initializing"},
        {"jobDeploymentStatus": "Running", "jobStatus": "PENDING", "jobId": "j1"},
        {"jobDeploymentStatus": "Running", "jobStatus": "RUNNING", "jobId": "j1"},
        {"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED", "jobId": "j1"},
    ])  # fmt: skip
    name = rayjobs.submit(SETTINGS, ["shipyard", "train", "--local"], api=api)
    assert name.startswith("shipyard-job-") and api.created[0][0] == "ml"
    lines: list[str] = []
    status = rayjobs.wait(SETTINGS, name, poll=0, echo=lines.append, api=api)
    assert status.job == "SUCCEEDED" and status.job_id == "j1"
    assert [line.split(": ", 1)[1] for line in lines] == [
        "Initializing",
        "Running, job PENDING",
        "Running, job RUNNING",
        "Complete, job SUCCEEDED",
    ]


def test_a_failed_job_raises_with_kuberays_reason() -> None:
    api = FakeRayJobs([{"jobDeploymentStatus": "Failed", "jobStatus": "FAILED",
                        "reason": "AppFailed", "message": "exit code 3"}])  # fmt: skip
    name = rayjobs.submit(SETTINGS, ["false"], name="broken", api=api)
    with pytest.raises(JobFailedError, match="ended Failed with job status FAILED: AppFailed; "
                       "exit code 3") as err:  # fmt: skip
        rayjobs.wait(SETTINGS, name, poll=0, echo=lambda _: None, api=api)
    assert "kubectl -n ml describe rayjob broken" in (err.value.hint or "")


def test_wait_gives_up_at_the_timeout() -> None:
    api = FakeRayJobs([{"jobDeploymentStatus": "Initializing"}])
    name = rayjobs.submit(SETTINGS, ["sleep", "1000"], name="slow", api=api)
    with pytest.raises(JobFailedError, match="still Initializing after 0s"):
        rayjobs.wait(SETTINGS, name, timeout=0.0, poll=0, echo=lambda _: None, api=api)


@pytest.mark.parametrize(("status", "error", "message"), [
    (404, ConfigError, "the RayJob resource is unknown"), (403, ConfigError, "forbidden"),
    (409, ConfigError, "exists"), (500, ClusterUnreachableError, "cannot create")])  # fmt: skip
def test_api_errors_are_explained(status: int, error: type, message: str) -> None:
    api = FakeRayJobs(error=ApiError(status, "boom"))
    with pytest.raises(error, match=message):
        rayjobs.submit(SETTINGS, ["true"], name="x", api=api)


def test_reading_an_unknown_rayjob_is_not_found() -> None:
    with pytest.raises(JobNotFoundError, match="no RayJob nope in namespace ml"):
        rayjobs.wait(SETTINGS, "nope", api=FakeRayJobs(), echo=lambda _: None)


def test_cli_refuses_a_working_dir_and_needs_credentials(tmp_path: Any) -> None:
    env = {**os.environ, "KUBECONFIG": str(tmp_path / "missing"), "HOME": str(tmp_path)}
    done = run("job", "submit", "--k8s", "--working-dir", str(tmp_path), "--", "true", env=env)
    assert done.returncode == 2
    assert "--working-dir cannot be used with --k8s" in done.stderr
    assert "Traceback" not in done.stderr
    done = run("job", "submit", "--k8s", "--", "true", env=env)
    assert done.returncode != 0 and "no Kubernetes credentials" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 2  # error + hint
