"""Shared test set-up. Nothing here starts processes; see tests/integration/conftest.py."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def shipyard_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A private data root, and no settings leaking in from the developer's shell."""
    for key in list(os.environ):
        if key.startswith("SHIPYARD_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("SHIPYARD_DATA_ROOT", str(tmp_path / "root"))
    return dict(os.environ)


def shipyard_cmd() -> list[str]:
    return [sys.executable, "-m", "shipyard"]


def pytest_configure(config: pytest.Config) -> None:
    # Feast may ray.init() a private Ray in this process (e.g. tearing down a test
    # project); Ray 2.60 would then switch token auth on machine-wide by writing
    # ~/.ray/auth_token. Subprocesses get their env from the fixtures, not this.
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """In CI a run in which no test passed is a failure, not a green build."""
    if os.environ.get("CI") and exitstatus == 0:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        passed = len(reporter.stats.get("passed", [])) if reporter else 0
        if passed == 0:
            session.exitstatus = 1


def require_service(name: str, host: str, port: int) -> None:
    """Skip when a backing service is down, except in CI, where that is a failure."""
    import socket

    try:
        socket.create_connection((host, port), timeout=2).close()
    except OSError as exc:
        message = f"{name} is not reachable on {host}:{port} ({exc})"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI must provide it")
        pytest.skip(message)
