"""The workload's commands: entrypoints that settings name, run the way ``ray job
submit`` runs one.

``shipyard data generate``, ``features build|materialize|training-set|get``, ``train``
and ``demo`` know no model. Each runs a module that ``workload.*`` in the settings
names (the fraud workload, ``pipelines``, by default), passing the user's arguments
through. Such a module has:

- ``main(argv) -> int``, the entrypoint, as ``python -m MODULE ARGS`` runs it. Heavy
  commands submit it as a Ray job on the cluster and stream its logs, or with
  ``--local`` call it in this process (inside a RayJob: on that job's cluster); light
  ones (``data generate``, ``features get``, ``demo``) always call it here;
- optionally ``prepare(settings, argv) -> list[str]``, called in the CLI process before
  anything runs: it checks the arguments, so a mistake fails in one line before a job
  starts, and adds what the settings decide (paths, the rendered Feast repo);
- optionally ``report(argv, result, echo)``, which prints the entrypoint's result for
  a person. The result is the JSON document of the entrypoint's last ``RESULT {...}``
  output line (kept out of the output when the entrypoint runs here); ``--json``
  prints it instead.

The entrypoint reads the CLI's settings with ``shipyard.settings.load_settings()`` (they
travel as ``SHIPYARD_SETTINGS_JSON``). Modules are imported by name: configuration,
not a dependency, so the import-layer contract (the platform imports nothing from
``pipelines``) holds.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from types import ModuleType
from typing import Any

from shipyard import jobs
from shipyard.errors import ConfigError
from shipyard.settings import SETTINGS_ENV, Settings

__all__ = ["load", "load_object", "report", "run", "run_module", "runtime_env"]

Say = Callable[[str], None]
_RESULT = "RESULT {"


def load(settings: Settings, name: str) -> ModuleType:
    """The module that ``workload.<name>`` names."""
    module = getattr(settings.workload, name)
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(
            f"cannot import workload.{name}={module!r}: {exc}",
            hint=f"point workload.{name} (SHIPYARD_WORKLOAD__{name.upper()}) at an "
            "importable module of your workload",
        ) from None


def load_object(settings: Settings, name: str) -> Any:
    """The ``MODULE:ATTRIBUTE`` that ``workload.<name>`` names."""
    ref = getattr(settings.workload, name)
    module, _, attr = ref.partition(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(
            f"cannot load workload.{name}={ref!r}: {exc}",
            hint=f"point workload.{name} (SHIPYARD_WORKLOAD__{name.upper()}) at "
            "MODULE:FUNCTION of your workload",
        ) from None


def runtime_env(settings: Settings) -> dict[str, Any]:
    """The runtime env of a workload's Ray jobs: its worker setup hook and the settings."""
    env: dict[str, Any] = {"env_vars": {SETTINGS_ENV: settings.model_dump_json()}}
    if settings.workload.worker_setup_hook:
        env["worker_process_setup_hook"] = settings.workload.worker_setup_hook
    return env


def run(
    settings: Settings,
    name: str,
    argv: Sequence[str],
    *,
    local: bool,
    echo: Say = print,
) -> dict[str, Any] | None:
    """Run ``workload.<name>`` with ``argv``: as a Ray job, or in this process when
    ``local``. Returns the entrypoint's result document (None when it printed none);
    raises when the entrypoint fails."""
    return run_module(settings, load(settings, name), argv, local=local, echo=echo)


def run_module(
    settings: Settings,
    module: ModuleType,
    argv: Sequence[str],
    *,
    local: bool,
    echo: Say = print,
) -> dict[str, Any] | None:
    """:func:`run` for a module at hand (a workload running its own steps)."""
    args = list(argv)
    prepare = getattr(module, "prepare", None)
    if prepare is not None:
        args = list(prepare(settings, args))
    if local:
        return _run_here(settings, module, args)
    job_id = jobs.run_module(settings, module.__name__, args, echo=echo, what=module.__name__,
                             runtime_env=runtime_env(settings))  # fmt: skip
    result = _last_result(jobs.job_logs(settings, job_id))
    return None if result is None else {**result, "job_id": job_id}


def report(
    settings: Settings, name: str, argv: Sequence[str], result: dict[str, Any] | None, echo: Say
) -> None:
    """Print ``result`` through the module's ``report(argv, result, echo)``, if any."""
    show = getattr(load(settings, name), "report", None)
    if show is not None and result is not None:
        show(list(argv), result, echo)


def _run_here(settings: Settings, module: ModuleType, args: list[str]) -> dict[str, Any] | None:
    main = getattr(module, "main", None)
    if main is None:
        raise ConfigError(f"workload module {module.__name__} has no main(argv)")
    with _exported(settings), _capture() as tee:
        code = main(args)
    if code:
        raise SystemExit(code)  # the entrypoint has said why
    return tee.result


@contextlib.contextmanager
def _exported(settings: Settings) -> Iterator[None]:
    before = os.environ.get(SETTINGS_ENV)
    os.environ[SETTINGS_ENV] = settings.model_dump_json()
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(SETTINGS_ENV, None)
        else:
            os.environ[SETTINGS_ENV] = before


def _last_result(logs: str) -> dict[str, Any] | None:
    for line in reversed(logs.splitlines()):
        at = line.rfind(_RESULT)  # progress bars may share the line
        if at >= 0:
            return json.loads(line[at + len("RESULT ") :])
    return None


class _Tee:
    """Standard output passed through, minus the ``RESULT {...}`` line, which is kept."""

    def __init__(self, out: Any) -> None:
        self._out, self._line, self.result = out, "", None

    def write(self, text: str) -> int:
        for piece in text.splitlines(keepends=True):
            self._line += piece
            if self._line.endswith("\n"):
                line, self._line = self._line, ""
                if line.startswith(_RESULT):
                    self.result = _last_result(line)
                else:
                    self._out.write(line)
            elif not (_RESULT.startswith(self._line) or self._line.startswith(_RESULT)):
                self._out.write(self._line)  # not a result line: no need to hold it
                self._line = ""
        return len(text)

    def close(self) -> None:
        if self._line:
            self._out.write(self._line)
            self._line = ""

    def __getattr__(self, name: str) -> Any:  # flush, fileno, isatty, encoding
        return getattr(self._out, name)


@contextlib.contextmanager
def _capture() -> Iterator[_Tee]:
    tee = _Tee(sys.stdout)
    try:
        with contextlib.redirect_stdout(tee):  # type: ignore[type-var]
            yield tee
    finally:
        tee.close()
