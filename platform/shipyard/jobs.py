"""Ray jobs through the Job Submission API (the dashboard on the head node).

The same functions drive the local cluster from ``shipyard up`` and a remote one
(``--address`` / ``ray.address``), so a pipeline is submitted the same way on a
laptop and on Kubernetes.
"""

from __future__ import annotations

import asyncio
import logging
import re
import shlex
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from shipyard.errors import (
    ClusterUnreachableError,
    ConfigError,
    JobError,
    JobFailedError,
    JobNotFoundError,
)
from shipyard.local import dashboard_address
from shipyard.settings import Settings

__all__ = [
    "JobInfo",
    "job_logs",
    "job_status",
    "list_jobs",
    "resolve_address",
    "stop_job",
    "submit_job",
    "tail_logs",
    "wait_for_job",
]

TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


@dataclass
class JobInfo:
    job_id: str
    status: str
    entrypoint: str
    message: str
    start_time: float | None
    end_time: float | None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


def resolve_address(settings: Settings, address: str | None = None) -> str:
    """The dashboard URL: explicit > ``ray.address`` > the local cluster."""
    return dashboard_address(settings, address)


def _client(address: str) -> Any:
    from ray.job_submission import JobSubmissionClient

    # The SDK sets its logger to INFO on import and logs every closed log stream.
    logging.getLogger("ray.dashboard.modules.job.sdk").setLevel(logging.WARNING)
    try:
        return JobSubmissionClient(address)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ClusterUnreachableError(
            f"cannot reach the Ray Job API at {address}: {_first_line(exc)}",
            hint="start the local platform with `shipyard up`, or pass the dashboard URL "
            "of a running cluster with --address (or ray.address in settings)",
        ) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _call(fn: Callable[..., Any], job_id: str, *args: Any) -> Any:
    try:
        return fn(job_id, *args)
    except RuntimeError as exc:
        text = str(exc)
        if "does not exist" in text or "404" in text:
            raise JobNotFoundError(
                f"no job {job_id!r} on this cluster",
                hint="list the jobs with `shipyard job list`",
            ) from None
        raise JobError(f"the Ray Job API failed for {job_id}: {_first_line(exc)}") from None


def load_runtime_env(path: str | Path) -> dict[str, Any]:
    """Read a runtime_env from a YAML or JSON file, checking its shape."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"runtime env file {path} does not exist") from None
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read runtime env file {path}: {_first_line(exc)}") from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"runtime env file {path} must hold a mapping (e.g. env_vars:, pip:), "
            f"got {type(data).__name__}"
        )
    return data


def submit_job(
    settings: Settings,
    entrypoint: Sequence[str] | str,
    *,
    address: str | None = None,
    working_dir: str | Path | None = None,
    runtime_env: dict[str, Any] | None = None,
    submission_id: str | None = None,
    metadata: dict[str, str] | None = None,
) -> str:
    """Submit a job; returns its submission id."""
    command = entrypoint if isinstance(entrypoint, str) else shlex.join(entrypoint)
    if not command.strip():
        raise JobError(
            "no entrypoint given", hint="put the command after --, e.g. -- python my_job.py"
        )
    env = dict(runtime_env or {})
    if working_dir is not None:
        wd = Path(working_dir).expanduser()
        if not wd.is_dir():
            raise JobError(
                f"working dir {wd} does not exist or is not a directory",
                hint="pass an existing directory with --working-dir",
            )
        env["working_dir"] = str(wd.resolve())
    url = resolve_address(settings, address)
    client = _client(url)
    try:
        return client.submit_job(
            entrypoint=command,
            runtime_env=env or None,
            submission_id=submission_id,
            metadata=metadata,
        )
    except (RuntimeError, ValueError, TypeError) as exc:
        raise JobError(f"the cluster at {url} refused the job: {_first_line(exc)}") from None


def _info(details: Any) -> JobInfo:
    status = getattr(details.status, "value", str(details.status))
    return JobInfo(
        job_id=details.submission_id or details.job_id or "",
        status=str(status),
        entrypoint=details.entrypoint,
        message=details.message or "",
        start_time=details.start_time / 1000 if details.start_time else None,
        end_time=details.end_time / 1000 if details.end_time else None,
    )


def job_status(settings: Settings, job_id: str, *, address: str | None = None) -> JobInfo:
    client = _client(resolve_address(settings, address))
    return _info(_call(client.get_job_info, job_id))


def list_jobs(settings: Settings, *, address: str | None = None) -> list[JobInfo]:
    client = _client(resolve_address(settings, address))
    try:
        jobs = [_info(d) for d in client.list_jobs()]
    except RuntimeError as exc:
        raise JobError(f"cannot list jobs: {_first_line(exc)}") from None
    return sorted(jobs, key=lambda j: j.start_time or 0)


def stop_job(settings: Settings, job_id: str, *, address: str | None = None) -> bool:
    """Ask the job to stop; True if it was running. Returns at once."""
    client = _client(resolve_address(settings, address))
    return bool(_call(client.stop_job, job_id))


def job_logs(settings: Settings, job_id: str, *, address: str | None = None) -> str:
    client = _client(resolve_address(settings, address))
    return str(_call(client.get_job_logs, job_id))


def tail_logs(settings: Settings, job_id: str, *, address: str | None = None) -> Iterator[str]:
    """Yield log chunks as the job writes them, until it ends."""
    client = _client(resolve_address(settings, address))
    _call(client.get_job_info, job_id)  # a clear error for an unknown id

    agen = client.tail_job_logs(job_id)
    loop = asyncio.new_event_loop()
    try:
        while True:
            try:
                chunk = loop.run_until_complete(agen.__anext__())
            except StopAsyncIteration:
                return
            except Exception as exc:  # the websocket dropped mid-stream
                raise JobError(f"lost the log stream of {job_id}: {_first_line(exc)}") from None
            yield chunk
    finally:
        loop.run_until_complete(agen.aclose())
        loop.close()


def wait_for_job(
    settings: Settings,
    job_id: str,
    *,
    address: str | None = None,
    timeout: float | None = None,
    poll: float = 1.0,
) -> JobInfo:
    """Wait for a terminal status; raises JobFailedError when it is not SUCCEEDED."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        info = job_status(settings, job_id, address=address)
        if info.terminal:
            break
        if deadline is not None and time.monotonic() > deadline:
            raise JobError(
                f"job {job_id} still {info.status} after {timeout:.0f}s",
                hint=f"follow it with `shipyard job logs {job_id} --follow`",
            )
        time.sleep(poll)
    if info.status != "SUCCEEDED":
        raise JobFailedError(
            f"job {job_id} {info.status}: {_reason(info.message, _final_logs(settings, job_id, address))}"
        )
    return info


def run_module(
    settings: Settings,
    module: str,
    args: Sequence[str],
    *,
    echo: Callable[[str], None],
    what: str,
    runtime_env: dict[str, Any] | None = None,
) -> str:
    """``python -m module args`` as a job: submit, stream its logs to ``echo``, wait.

    Returns the job id; raises :class:`JobFailedError` when the job does not succeed.
    """
    entry = ["python", "-m", module, *args]
    job_id = submit_job(settings, entry, metadata={"shipyard": what}, runtime_env=runtime_env)
    echo(f"submitted Ray job {job_id}: {' '.join(entry)}")
    for chunk in tail_logs(settings, job_id):
        echo(chunk.rstrip("\n"))
    wait_for_job(settings, job_id)
    return job_id


def _final_logs(settings: Settings, job_id: str, address: str | None, grace: float = 10.0) -> str:
    """The job's logs once its last lines have landed: the file may trail the status."""
    deadline = time.monotonic() + grace
    logs = ""
    while True:
        try:
            logs = job_logs(settings, job_id, address=address)
        except JobError:
            return logs
        if (_last_line(logs) and not _mid_traceback(logs)) or time.monotonic() > deadline:
            return logs
        time.sleep(0.5)


# A worker's log line carries its origin, "(RayTrainWorker pid=123) ...".
_ORIGIN = re.compile(r"^\([^()]*pid=\d+[^()]*\)\s*")


def _scaffolding(line: str) -> bool:
    """A traceback's header, a frame, or a caret line: not the error itself."""
    line = _ORIGIN.sub("", line.strip())
    return line.startswith(("Traceback (most recent call last)", 'File "')) or (
        bool(line) and not line.strip("^~ ")
    )


def _last_line(logs: str) -> str:
    """The job's own last output line, skipping the job manager's bookkeeping lines
    (which may land after the entrypoint's output) and a traceback's scaffolding (the
    error itself is the line that names it)."""
    for raw in reversed(logs.splitlines()):
        line = _ORIGIN.sub("", raw.strip())
        if (
            not line
            or line.startswith("Running entrypoint for job")
            or "job_manager.py" in line
            or _scaffolding(raw)
        ):
            continue
        return raw.strip()
    return ""


def _mid_traceback(logs: str) -> bool:
    """Logs read while a traceback is still arriving end in its scaffolding."""
    lines = [ln for ln in logs.splitlines() if ln.strip()]
    return bool(lines) and _scaffolding(lines[-1])


def _reason(message: str, logs: str) -> str:
    """Ray's message, plus the job's last log line, which usually names the error."""
    lines = [ln.strip() for ln in message.strip().splitlines() if ln.strip()]
    head = lines[0] if lines else "no reason given"
    if head.endswith(":"):  # Ray's "...last available logs (truncated ...):" preamble
        head = head[:-1]
    last = _last_line(logs)
    if last:
        head = f"{head}; last log line: {last}"
    return head[:800]
