"""Structural validation of custom resources against the KubeRay CRD schemas.

The CRDs' ``openAPIV3Schema`` is turned into a JSON Schema the way the API server
treats it: a field the schema does not declare is an error (unless the object says
``x-kubernetes-preserve-unknown-fields``), ``x-kubernetes-int-or-string`` accepts
either. The CRDs come from ``../shared/kuberay/v1.7.0/crds`` (KubeRay's release).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import yaml

CRD_DIR = Path(__file__).resolve().parents[2] / "shared" / "kuberay" / "v1.7.0" / "crds"
_FILES = {"RayCluster": "ray.io_rayclusters.yaml", "RayJob": "ray.io_rayjobs.yaml",
          "RayService": "ray.io_rayservices.yaml", "RayCronJob": "ray.io_raycronjobs.yaml"}  # fmt: skip


def _structural(node: Any) -> Any:
    if isinstance(node, list):
        return [_structural(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _structural(v) for k, v in node.items() if not k.startswith("x-kubernetes")}
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if (
        node.get("type") == "object"
        and "properties" in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        out.setdefault("additionalProperties", False)
    return out


@cache
def crd_schema(kind: str, version: str = "v1") -> dict[str, Any]:
    doc = yaml.safe_load((CRD_DIR / _FILES[kind]).read_text())
    for v in doc["spec"]["versions"]:
        if v["name"] == version:
            schema = _structural(v["schema"]["openAPIV3Schema"])
            # metadata is validated by the API server's ObjectMeta, not the CRD
            schema["properties"]["metadata"] = {"type": "object"}
            return schema
    raise KeyError(f"{kind} has no version {version}")


def validate_cr(obj: dict[str, Any]) -> list[str]:
    """Every schema violation of ``obj``, as ``path: message``; empty when valid."""
    import jsonschema

    validator = jsonschema.Draft7Validator(crd_schema(obj["kind"], obj["apiVersion"].split("/")[1]))
    return [f"{'.'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message}"
            for e in validator.iter_errors(obj)]  # fmt: skip
