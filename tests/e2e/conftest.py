"""The kind end-to-end tests: opt-in, against a cluster that ``infra/kind/up.sh`` set up.

Every test here asks for the ``kind`` fixture, which skips with the reason when Docker,
kind, Helm or kubectl is missing, when ``SHIPYARD_E2E`` is not 1 (``infra/kind/e2e.sh``
sets it), or when the kind cluster does not exist. A failed test dumps the namespace's
objects and the end of every pod's logs under ``SHIPYARD_E2E_LOGS`` and names the folder
in its report.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import os
import re
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO

log = logging.getLogger("shipyard.e2e")

TOOLS = ("docker", "kind", "helm", "kubectl")
KUBE_VERSION = "1.35.0"  # infra/kind/cluster.yaml's node image
CHART = REPO / "deploy" / "helm" / "shipyard"
MLFLOW_URL = "http://127.0.0.1:30500"
SERVE_URL = "http://127.0.0.1:30800"
JOBS_DASHBOARD = "http://127.0.0.1:30265"
SERVE_DASHBOARD = "http://127.0.0.1:30266"


def fullname(release: str) -> str:
    """The chart's object-name prefix (what its ``shipyard.fullname`` helper computes)."""
    name = release if "shipyard" in release else f"{release}-shipyard"
    return name[:40].removesuffix("-")


def split_image(image: str) -> tuple[str, str]:
    """``shipyard/platform:dev`` -> repository and tag, as up.sh splits it."""
    if ":" in image.rsplit("/", 1)[-1]:
        repo, tag = image.rsplit(":", 1)
        return repo, tag
    return image, "dev"


@dataclass(frozen=True)
class Kind:
    """The kind cluster and the Shipyard release on it, from the environment."""

    cluster: str
    namespace: str
    release: str
    image: str
    timeout: float  # seconds per step
    logs: Path
    kubeconfig: Path | None = None

    @classmethod
    def from_env(cls) -> Kind:
        env = os.environ
        return cls(
            cluster=env.get("KIND_CLUSTER_NAME", "shipyard"),
            namespace=env.get("SHIPYARD_NAMESPACE", "shipyard"),
            release=env.get("SHIPYARD_RELEASE", "shipyard"),
            image=env.get("SHIPYARD_IMAGE", "shipyard/platform:dev"),
            timeout=float(env.get("SHIPYARD_E2E_TIMEOUT", "900")),
            logs=Path(env.get("SHIPYARD_E2E_LOGS", "/tmp/shipyard-e2e-logs")),
        )

    @property
    def context(self) -> str:
        return f"kind-{self.cluster}"

    @property
    def fullname(self) -> str:
        return fullname(self.release)

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.kubeconfig:
            env["KUBECONFIG"] = str(self.kubeconfig)
        return env

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True,
                timeout: float = 120) -> subprocess.CompletedProcess[str]:  # fmt: skip
        """kubectl on this cluster's context, in the release's namespace."""
        cmd = ["kubectl", "--context", self.context, "-n", self.namespace, *args]
        result = subprocess.run(cmd, input=stdin, capture_output=True, text=True,
                                env=self._env(), timeout=timeout)  # fmt: skip
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} failed: {result.stderr.strip()}")
        return result

    def get(self, kind: str, name: str) -> dict[str, Any]:
        return json.loads(self.kubectl("get", kind, name, "-o", "json").stdout)

    def render(self, templates: Sequence[str], *sets: str) -> str:
        """``helm template`` of some templates with the kind values, as up.sh installs."""
        repo, tag = split_image(self.image)
        cmd = ["helm", "template", self.release, str(CHART), "-n", self.namespace,
               "--kube-version", KUBE_VERSION,
               "-f", str(CHART / "values-kind.yaml"), "--set", f"image.repository={repo}",
               "--set", f"image.tag={tag}"]  # fmt: skip
        for value in sets:
            cmd += ["--set", value]
        for template in templates:
            cmd += ["--show-only", f"templates/{template}"]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, f"{' '.join(cmd)} failed: {result.stderr.strip()}"
        return result.stdout

    def ray_token(self) -> str:
        """The token both Ray clusters share (their dashboards and Job APIs need it)."""
        secret = self.get("secret", f"{self.fullname}-ray-token")
        return base64.b64decode(secret["data"]["auth_token"]).decode()

    def cli_env(self, data_root: Path) -> dict[str, str]:
        """What a user exports to drive this cluster with the shipyard CLI."""
        env = {k: v for k, v in self._env().items() if not k.startswith(("SHIPYARD_", "RAY_"))}
        env.update(
            SHIPYARD_PROFILE="cluster",
            SHIPYARD_DATA_ROOT=str(data_root),
            SHIPYARD_MLFLOW__TRACKING_URI=MLFLOW_URL,
            SHIPYARD_RAY__ADDRESS=JOBS_DASHBOARD,
            SHIPYARD_SERVE__BACKEND="kubernetes",
            SHIPYARD_SERVE__NAMESPACE=self.namespace,
            SHIPYARD_SERVE__RAYSERVICE=f"{self.fullname}-serve",
            SHIPYARD_SERVE__URL=SERVE_URL,
            SHIPYARD_SERVE__DASHBOARD_ADDRESS=SERVE_DASHBOARD,
            SHIPYARD_SERVE__TRACKING_URI=f"http://{self.fullname}-mlflow:5000",
            SHIPYARD_SERVE__FEATURE_REPO="/etc/shipyard/feast",
            # the Ray clients send the token only in token mode
            RAY_AUTH_MODE="token",
            RAY_AUTH_TOKEN=self.ray_token(),
        )
        return env

    def dump(self, label: str) -> tuple[Path, str]:
        """The namespace's objects and every pod's last 200 log lines, into a folder."""
        safe = re.sub(r"[^\w.-]", "_", label)
        out = self.logs / f"{time.strftime('%Y%m%d-%H%M%S')}-{safe}"
        out.mkdir(parents=True, exist_ok=True)
        objects = self.kubectl("get", "all,rayjobs,rayclusters,rayservices", "-o", "wide",
                               check=False).stdout  # fmt: skip
        (out / "get.txt").write_text(objects)
        for name, args in {
            "events.txt": ["get", "events", "--sort-by=.lastTimestamp"],
            "rayservices.yaml": ["get", "rayservices", "-o", "yaml"],  # rollout state too
            "rayjobs.yaml": ["get", "rayjobs", "-o", "yaml"],
        }.items():
            result = self.kubectl(*args, check=False)
            (out / name).write_text(result.stdout + result.stderr)
        pods = self.kubectl("get", "pods", "-o", "name", check=False).stdout.split()
        for pod in pods:
            result = self.kubectl("logs", pod, "--all-containers", "--prefix", "--tail=200",
                                  check=False)  # fmt: skip
            (out / f"logs-{pod.split('/')[-1]}.txt").write_text(result.stdout + result.stderr)
        return out, objects


def skip_reason(env: Mapping[str, str] = os.environ) -> str | None:
    """Why the kind e2e cannot run here, or None when it can."""
    ci = (" (CI is set; a skip is still right: no kind cluster can run in CI here)"
          if env.get("CI") else "")  # fmt: skip
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        return (f"kind e2e needs {', '.join(missing)} on PATH (docker, kind, helm, kubectl; "
                f"see infra/kind/README.md){ci}")  # fmt: skip
    if env.get("SHIPYARD_E2E") != "1":
        return f"kind e2e is opt-in: set SHIPYARD_E2E=1 or run infra/kind/e2e.sh{ci}"
    cluster = env.get("KIND_CLUSTER_NAME", "shipyard")
    try:
        listed = subprocess.run(["kind", "get", "clusters"], capture_output=True, text=True,
                                timeout=60)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"`kind get clusters` failed: {exc}{ci}"
    if cluster not in listed.stdout.split():
        return (f"kind cluster {cluster!r} does not exist ({listed.stderr.strip() or 'not listed'});"
                f" create it with infra/kind/up.sh{ci}")  # fmt: skip
    return None


@pytest.fixture(scope="session")
def kind(tmp_path_factory: pytest.TempPathFactory) -> Kind:
    """The cluster, with a kubeconfig of its own (so the CLI's Kubernetes client and
    kubectl talk to it whatever the user's current context is)."""
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    cfg = Kind.from_env()
    kubeconfig = tmp_path_factory.mktemp("kube") / "config"
    got = subprocess.run(["kind", "get", "kubeconfig", "--name", cfg.cluster],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert got.returncode == 0, f"kind get kubeconfig failed: {got.stderr.strip()}"
    kubeconfig.write_text(got.stdout)
    kubeconfig.chmod(0o600)
    cluster = dataclasses.replace(cfg, kubeconfig=kubeconfig)
    ns = cluster.kubectl("get", "namespace", cluster.namespace, check=False)
    assert ns.returncode == 0, (f"namespace {cluster.namespace} is missing on {cluster.context}:"
                                f" run infra/kind/up.sh first ({ns.stderr.strip()})")  # fmt: skip
    return cluster


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """On a failed e2e test, dump the cluster's state and say where it went."""
    report = yield
    cluster = getattr(item, "funcargs", {}).get("kind")
    if report.failed and isinstance(cluster, Kind):
        try:
            folder, objects = cluster.dump(item.name)
            text = f"objects, events and the last 200 log lines of every pod: {folder}\n\n{objects}"
        except Exception as exc:  # noqa: BLE001 - never hide the test's own failure
            text = f"could not dump the cluster's logs: {exc}"
        report.sections.append(("kind cluster diagnostics", text))
        terminal = item.config.pluginmanager.get_plugin("terminalreporter")
        if terminal is not None:
            terminal.write_line(f"\nkind e2e diagnostics: {text.splitlines()[0]}")
    return report


def yaml_docs(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]
