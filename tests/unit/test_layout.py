"""`platform/` is a source root, never a package: the stdlib module must win."""

from __future__ import annotations

import subprocess
import sys

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
