"""``shipyard job submit --k8s``: a Ray job as a KubeRay ``RayJob`` custom resource.

The job runs on the chart's long-lived jobs RayCluster (``clusterSelector``), and the
KubeRay operator submits it over HTTP (``submissionMode: HTTPMode``), so no submitter
pod is needed. Unlike a plain Job API submission, the job is then a Kubernetes object:
``kubectl get rayjobs`` lists it, RBAC governs who may create it, and its status
outlives the dashboard. The code it runs is the image's; there is no working dir to
upload.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from shipyard.errors import ClusterUnreachableError, ConfigError, JobFailedError, JobNotFoundError
from shipyard.settings import Settings

__all__ = ["RayJobClient", "RayJobStatus", "manifest", "submit", "wait"]

GROUP, VERSION, PLURAL = "ray.io", "v1", "rayjobs"
# KubeRay's jobDeploymentStatus values after which nothing changes any more.
DEPLOYMENT_TERMINAL = {"Complete", "Failed", "ValidationFailed"}
# KubeRay names a RayJob's cluster and Job after it: a DNS-1035 label of at most 47.
_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,45}[a-z0-9])?$")


@dataclass
class RayJobStatus:
    name: str
    job_id: str
    deployment: str  # KubeRay's jobDeploymentStatus: Initializing, Running, Complete, ...
    job: str  # Ray's job status: PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED
    reason: str
    message: str

    @property
    def done(self) -> bool:
        return self.deployment in DEPLOYMENT_TERMINAL


class RayJobClient:
    """The RayJob resources of one namespace, through an injectable CustomObjectsApi."""

    def __init__(self, namespace: str, api: Any = None) -> None:
        self.namespace = namespace
        self._api = api

    @property
    def api(self) -> Any:
        if self._api is None:
            from shipyard.serve_backends import custom_objects_api

            self._api = custom_objects_api(ClusterUnreachableError)
        return self._api

    def _fail(self, what: str, exc: Exception) -> Exception:
        status = getattr(exc, "status", None)
        reason = getattr(exc, "reason", None) or str(exc).splitlines()[0]
        if status == 404 and what.startswith("read"):
            return JobNotFoundError(f"no RayJob {what.split()[-1]} in namespace {self.namespace}",
                                    hint="list them with `kubectl get rayjobs -n "
                                         f"{self.namespace}`")  # fmt: skip
        if status == 404:
            return ConfigError(f"cannot {what}: the RayJob resource is unknown ({reason})",
                               hint="install the KubeRay operator (v1.7.0) first")  # fmt: skip
        if status == 403:
            return ConfigError(f"cannot {what}: forbidden ({reason})",
                               hint="your Kubernetes user needs create/get on rayjobs.ray.io")  # fmt: skip
        if status == 409:
            return ConfigError(f"cannot {what}: a RayJob of that name exists",
                               hint="choose another --submission-id")  # fmt: skip
        if status == 422:
            return ConfigError(f"cannot {what}: the API server refused it: {exc}")
        return ClusterUnreachableError(f"cannot {what}: {reason}")

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        api = self.api  # credentials first: their error is clear as it is
        try:
            return api.create_namespaced_custom_object(GROUP, VERSION, self.namespace,
                                                       PLURAL, body)  # fmt: skip
        except Exception as exc:  # kubernetes.client.ApiException and transport errors
            raise self._fail(f"create RayJob {body['metadata']['name']}", exc) from None

    def get(self, name: str) -> dict[str, Any]:
        api = self.api
        try:
            return api.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL,
                                                    name)  # fmt: skip
        except Exception as exc:
            raise self._fail(f"read RayJob {name}", exc) from None

    def status(self, name: str) -> RayJobStatus:
        obj = self.get(name)
        st = obj.get("status") or {}
        return RayJobStatus(name=name, job_id=st.get("jobId") or obj["spec"].get("jobId", ""),
                            deployment=st.get("jobDeploymentStatus") or "New",
                            job=st.get("jobStatus") or "", reason=st.get("reason") or "",
                            message=st.get("message") or "")  # fmt: skip


def manifest(settings: Settings, entrypoint: Sequence[str] | str, *, name: str,
             runtime_env: dict[str, Any] | None = None, cluster: str | None = None,
             active_deadline_s: int | None = None) -> dict[str, Any]:  # fmt: skip
    """The RayJob for ``entrypoint`` on the jobs RayCluster; ``name`` is also the Ray
    job id, so `shipyard job logs NAME` finds it through the dashboard."""
    import shlex

    command = entrypoint if isinstance(entrypoint, str) else shlex.join(entrypoint)
    if not command.strip():
        raise ConfigError("no entrypoint given", hint="put the command after --")
    if not _NAME.match(name):
        raise ConfigError(f"RayJob name {name!r} is not a valid Kubernetes name",
                          hint="start with a letter; lowercase letters, digits and '-', "
                               "at most 47 (KubeRay's limit)")  # fmt: skip
    spec: dict[str, Any] = {
        "entrypoint": command,
        "jobId": name,
        "submissionMode": "HTTPMode",
        "clusterSelector": {"ray.io/cluster": cluster or settings.k8s.jobs_cluster},
        "metadata": {"shipyard": "cli"},
    }
    if runtime_env:
        spec["runtimeEnvYAML"] = yaml.safe_dump(runtime_env, sort_keys=True)
    if active_deadline_s:
        spec["activeDeadlineSeconds"] = int(active_deadline_s)
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "RayJob",
        "metadata": {
            "name": name,
            "namespace": settings.k8s.namespace,
            "labels": {"app.kubernetes.io/managed-by": "shipyard-cli"},
        },  # fmt: skip
        "spec": spec,
    }


def submit(settings: Settings, entrypoint: Sequence[str] | str, *, name: str | None = None,
           runtime_env: dict[str, Any] | None = None, cluster: str | None = None,
           active_deadline_s: int | None = None, api: Any = None) -> str:  # fmt: skip
    """Create the RayJob; returns its name."""
    name = name or f"shipyard-job-{uuid.uuid4().hex[:10]}"
    body = manifest(settings, entrypoint, name=name, runtime_env=runtime_env, cluster=cluster,
                    active_deadline_s=active_deadline_s)  # fmt: skip
    RayJobClient(settings.k8s.namespace, api).create(body)
    return name


def wait(settings: Settings, name: str, *, timeout: float | None = None, poll: float = 2.0,
         echo: Callable[[str], None] = print, api: Any = None) -> RayJobStatus:  # fmt: skip
    """Follow the RayJob until KubeRay marks it done, echoing each change; raises
    :class:`JobFailedError` unless the Ray job SUCCEEDED."""
    client = RayJobClient(settings.k8s.namespace, api)
    deadline = None if timeout is None else time.monotonic() + timeout
    seen = None
    while True:
        st = client.status(name)
        if (st.deployment, st.job) != seen:
            seen = (st.deployment, st.job)
            echo(f"RayJob {settings.k8s.namespace}/{name}: {st.deployment}"
                 + (f", job {st.job}" if st.job else ""))  # fmt: skip
        if st.done:
            if st.job == "SUCCEEDED":
                return st
            why = "; ".join(p for p in (st.reason, st.message) if p) or "no reason given"
            raise JobFailedError(
                f"RayJob {name} ended {st.deployment} with job status {st.job or 'unknown'}: {why}",
                hint=f"kubectl -n {settings.k8s.namespace} describe rayjob {name}; "
                f"the job's logs: `shipyard job logs {st.job_id or name}` (dashboard address)",
            )
        if deadline is not None and time.monotonic() > deadline:
            raise JobFailedError(
                f"RayJob {name} is still {st.deployment} after {timeout:.0f}s",
                hint=f"kubectl -n {settings.k8s.namespace} describe rayjob {name}",
            )
        time.sleep(poll)
