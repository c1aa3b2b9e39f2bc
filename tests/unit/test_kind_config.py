"""The kind cluster config and scripts: the pins, ports and mounts that the chart's
values-kind.yaml and the kind e2e rely on, checked without Docker."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from typing import Any

import pytest
import yaml

from tests.conftest import REPO

KIND = REPO / "infra" / "kind"
VALUES_KIND = REPO / "deploy" / "helm" / "shipyard" / "values-kind.yaml"
K8S_MINOR = (1, 35)  # the Kubernetes version tests/helm validates manifests against
KUBERAY_VERSION = "1.7.0"  # the operator whose CRDs are in ../shared/kuberay/v1.7.0
NODE_PORTS = {30500, 30800, 30265, 30266}  # MLflow, Serve, jobs dashboard, serve dashboard
DATA_MOUNT = "/var/shipyard"
SCRIPTS = ["up.sh", "down.sh", "e2e.sh"]


@pytest.fixture(scope="module")
def cluster() -> dict[str, Any]:
    return yaml.safe_load((KIND / "cluster.yaml").read_text())


def test_every_node_runs_the_same_pinned_kubernetes_1_35_image(cluster: dict[str, Any]) -> None:
    images = {node.get("image") for node in cluster["nodes"]}
    assert len(images) == 1, f"every node must run one image, got {images}"
    image = images.pop()
    match = re.fullmatch(r"kindest/node:v(\d+)\.(\d+)\.(\d+)(@sha256:[0-9a-f]{64})?", image or "")
    assert match, f"node image must be kindest/node with an explicit vX.Y.Z tag, got {image!r}"
    assert (int(match[1]), int(match[2])) == K8S_MINOR, image
    from tests.e2e.conftest import KUBE_VERSION  # what the e2e renders the chart for

    assert image.startswith(f"kindest/node:v{KUBE_VERSION}"), (image, KUBE_VERSION)


def test_one_control_plane_and_two_workers(cluster: dict[str, Any]) -> None:
    assert cluster["apiVersion"] == "kind.x-k8s.io/v1alpha4" and cluster["kind"] == "Cluster"
    roles = [node["role"] for node in cluster["nodes"]]
    assert sorted(roles) == ["control-plane", "worker", "worker"]


def test_node_ports_reach_the_host_on_loopback_only(cluster: dict[str, Any]) -> None:
    """Mapped on the control plane (kube-proxy forwards a NodePort from any node)."""
    (plane,) = [n for n in cluster["nodes"] if n["role"] == "control-plane"]
    mappings = plane.get("extraPortMappings") or []
    assert {m["containerPort"] for m in mappings} == NODE_PORTS
    for m in mappings:
        assert m["hostPort"] == m["containerPort"], m
        assert m.get("listenAddress") == "127.0.0.1", m
        assert m.get("protocol", "TCP") == "TCP", m


def test_every_node_mounts_the_same_shared_data_folder(cluster: dict[str, Any]) -> None:
    host_paths = set()
    for node in cluster["nodes"]:
        mounts = [m for m in node.get("extraMounts") or [] if m["containerPath"] == DATA_MOUNT]
        assert len(mounts) == 1, f"{node['role']} node does not mount {DATA_MOUNT}"
        host_paths.add(mounts[0]["hostPath"])
    assert len(host_paths) == 1, host_paths
    # up.sh creates that folder world-writable before kind mounts it
    assert f"DATA_DIR={host_paths.pop()}" in (KIND / "up.sh").read_text()


@pytest.mark.parametrize("script", SCRIPTS)
def test_scripts_are_executable_and_parse(script: str) -> None:
    path = KIND / script
    assert os.access(path, os.X_OK), f"chmod +x infra/kind/{script}"
    assert path.read_text().startswith("#!/usr/bin/env bash\n")
    bash = shutil.which("bash")
    assert bash, "bash is needed to check the scripts"
    result = subprocess.run([bash, "-n", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_up_pins_the_kuberay_version_of_the_crd_schemas() -> None:
    from tests.k8s_schema import CRD_DIR

    text = (KIND / "up.sh").read_text()
    match = re.search(r'^KUBERAY_VERSION="\$\{KUBERAY_VERSION:-([^}]+)\}"$', text, re.MULTILINE)
    assert match, "up.sh must default KUBERAY_VERSION"
    assert match[1] == KUBERAY_VERSION
    assert CRD_DIR.parent.name == f"v{KUBERAY_VERSION}"  # what tests/helm validates against
    assert "infra/kind/cluster.yaml" in text and "set -euo pipefail" in text


def _ints(node: Any) -> set[int]:
    if isinstance(node, dict):
        return set().union(*(_ints(v) for v in node.values())) if node else set()
    if isinstance(node, list):
        return set().union(*(_ints(v) for v in node)) if node else set()
    return {node} if isinstance(node, int) and not isinstance(node, bool) else set()


def test_values_kind_uses_every_mapped_node_port(cluster: dict[str, Any]) -> None:
    """A port kind maps but no Service claims (or the reverse) is a dead address."""
    assert VALUES_KIND.exists(), f"{VALUES_KIND.relative_to(REPO)} is missing"
    (plane,) = [n for n in cluster["nodes"] if n["role"] == "control-plane"]
    mapped = {m["containerPort"] for m in plane["extraPortMappings"]}
    values = yaml.safe_load(VALUES_KIND.read_text())
    missing = mapped - _ints(values)
    assert not missing, f"values-kind.yaml sets no nodePort {sorted(missing)}"


def test_the_e2e_uses_real_canary_options() -> None:
    """The CLI flags the kind e2e passes exist (it cannot run here to find out)."""
    from click.testing import CliRunner
    from shipyard.cli import cli

    from tests.e2e.test_kind import PLAN

    result = CliRunner().invoke(cli, ["canary", "start", "--help"])
    assert result.exit_code == 0, result.output
    for flag in [*PLAN[::2], "--version", "--min-requests", "--failure-threshold"]:
        assert flag in result.output, flag


def test_the_e2e_skips_with_a_reason_unless_opted_in() -> None:
    from tests.e2e.conftest import skip_reason

    reason = skip_reason({"CI": "true"})
    assert reason and "CI" in reason
    assert "SHIPYARD_E2E=1" in reason or "on PATH" in reason
