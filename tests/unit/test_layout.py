"""The layout: `platform/` is a source root, never a package (the stdlib module must win),
and the platform imports nothing from the workloads."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import tomllib

from tests.conftest import REPO


def test_import_platform_is_the_standard_library_from_the_repo_root() -> None:
    code = (
        "import platform, sysconfig, os;"
        "std = sysconfig.get_paths()['stdlib'];"
        "assert os.path.dirname(platform.__file__) == std, platform.__file__;"
        "print(platform.system())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip()


def test_no_init_file_in_platform_and_no_platform_dir_under_tests() -> None:
    assert not (REPO / "platform" / "__init__.py").exists()
    assert not [p for p in (REPO / "tests").rglob("platform") if p.is_dir()]


def test_importing_shipyard_starts_nothing() -> None:
    code = (
        "import sys, shipyard, shipyard.cli, shipyard.local, shipyard.jobs;"
        "assert 'ray' not in sys.modules and 'mlflow' not in sys.modules, "
        "[m for m in sys.modules if m.split('.')[0] in ('ray','mlflow')][:3]"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def _lint_imports(root: Path) -> subprocess.CompletedProcess:
    """``lint-imports`` with the project's contracts, on the packages under ``root``."""
    lint = Path(sys.executable).with_name("lint-imports")
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([str(lint), "--config", str(root / "pyproject.toml"), "--no-cache"],
                          cwd=root, env=env, capture_output=True, text=True, timeout=120)  # fmt: skip


def _copy_tree(tmp: Path) -> Path:
    """The three root packages, as the contract sees them, plus the contract itself."""
    for name, source in (("shipyard", REPO / "platform" / "shipyard"),
                         ("services", REPO / "services"), ("pipelines", REPO / "pipelines")):  # fmt: skip
        shutil.copytree(source, tmp / name, ignore=shutil.ignore_patterns("__pycache__"))
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    lines = ["[tool.importlinter]", f"root_packages = {json.dumps(config['root_packages'])}"]
    for contract in config["contracts"]:
        lines.append("[[tool.importlinter.contracts]]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in contract.items()]
    (tmp / "pyproject.toml").write_text("\n".join(lines) + "\n")
    return tmp


def test_the_platform_imports_nothing_from_the_workloads_and_a_planted_import_fails(
    tmp_path: Path,
) -> None:
    """The import-layer contract (pyproject's [tool.importlinter], run by `make lint`):
    kept on the real tree, broken by one function-level import planted in a copy."""
    tree = _copy_tree(tmp_path)
    kept = _lint_imports(tree)
    assert kept.returncode == 0, kept.stdout + kept.stderr
    with (tree / "shipyard" / "traffic.py").open("a") as f:
        f.write("\n\ndef _planted():\n    from pipelines.data import requests\n\n"
                "    return requests\n")  # fmt: skip
    broken = _lint_imports(tree)
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert "shipyard.traffic -> pipelines.data.requests" in broken.stdout
