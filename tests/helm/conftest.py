"""Render the chart with the real ``helm`` binary (see tools.py) and parse the objects."""

from __future__ import annotations

import json
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helm.tools import binary

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "shipyard"
RELEASE, NAMESPACE = "shipyard", "shipyard"
# The value files a user installs with, by name; "default" is values.yaml alone.
VALUE_SETS = {
    "default": [],
    "kind": [CHART / "values-kind.yaml"],
    "gke": [CHART / "examples" / "values-gke.yaml"],
    "eks": [CHART / "examples" / "values-eks.yaml"],
    "ci": [CHART / "ci" / "ci-values.yaml"],
}


@cache
def helm() -> str:
    return binary("helm")


def run_helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([helm(), *args], capture_output=True, text=True, timeout=120)


class SetJson(str):
    """A value already written as JSON, for ``--set-json`` (a list or a map, which
    ``--set`` cannot express); a string, so a render can be cached by it."""


def template_args(values: list[Path], sets: dict[str, Any] | None = None) -> list[str]:
    """Strings go through ``--set`` (as a user types them), other values through
    ``--set-json`` (so a float stays a number, and a list such as serve.models is set
    whole)."""
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE]
    for path in values:
        args += ["--values", str(path)]
    for key, value in (sets or {}).items():
        if isinstance(value, SetJson):
            args += ["--set-json", f"{key}={value}"]
        elif isinstance(value, str):
            args += ["--set", f"{key}={value}"]
        else:
            args += ["--set-json", f"{key}={json.dumps(value)}"]
    return args


@cache
def _render(values: tuple[Path, ...], sets: tuple[tuple[str, Any], ...]) -> tuple[Any, ...]:
    done = run_helm(*template_args(list(values), dict(sets)))
    assert done.returncode == 0, f"helm template failed:\n{done.stderr}"
    return tuple(o for o in yaml.safe_load_all(done.stdout) if o)


def render(value_set: str = "default", **sets: Any) -> list[dict[str, Any]]:
    """The objects of ``helm template`` for a named value set plus ``--set`` pairs
    (keys with dots: pass them as ``**{"serve.httpPort": "9000"}``; a list or a map is
    set whole, as ``**{"serve.models": [{"name": "a"}]}``)."""
    frozen = ((k, SetJson(json.dumps(v)) if isinstance(v, list | dict) else v)
              for k, v in sets.items())  # fmt: skip
    return [dict(o) for o in _render(tuple(VALUE_SETS[value_set]), tuple(sorted(frozen)))]


def one(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind
             and (name is None or o["metadata"]["name"] == name)]  # fmt: skip
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


@pytest.fixture(params=sorted(VALUE_SETS))
def value_set(request: pytest.FixtureRequest) -> str:
    return request.param
