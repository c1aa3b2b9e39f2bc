"""Small process helpers: port checks, detached spawns, and stopping process trees.

``shipyard up`` starts long-lived processes that must outlive the CLI, and
``shipyard down`` must stop exactly those and nothing else. Each component is
spawned in a session of its own, so its process group names everything it
started; Ray workers that move to their own session are still its descendants.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
from collections.abc import Sequence
from pathlib import Path

import psutil

__all__ = ["create_time", "is_alive", "port_is_free", "spawn", "stop_tree", "tree_of"]


def port_is_free(host: str, port: int) -> bool:
    """True when nothing listens on ``host:port`` and it can be bound."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def spawn(argv: Sequence[str], log_path: Path, env: dict[str, str] | None = None) -> int:
    """Start ``argv`` detached (own session, output to ``log_path``); return its pid."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
            close_fds=True,
        )
    return proc.pid


def is_alive(pid: int, create_time: float | None = None) -> bool:
    """True when ``pid`` runs and, if given, was created at ``create_time``.

    The creation time guards against a recycled pid belonging to someone else.
    """
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            _reap(pid)
            return False
        return create_time is None or abs(proc.create_time() - create_time) < 1.0
    except psutil.Error:
        return False


def create_time(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def tree_of(pid: int) -> list[psutil.Process]:
    """The process ``pid``, its descendants, and the members of its process group."""
    found: dict[int, psutil.Process] = {}
    try:
        root = psutil.Process(pid)
        found[pid] = root
        for child in root.children(recursive=True):
            found[child.pid] = child
    except psutil.Error:
        return []
    try:
        pgid = os.getpgid(pid)
    except OSError:
        pgid = None
    if pgid == pid:  # our spawns lead their own group; never sweep someone else's
        for proc in psutil.process_iter():
            try:
                if proc.pid not in found and os.getpgid(proc.pid) == pgid:
                    found[proc.pid] = proc
                    for child in proc.children(recursive=True):
                        found.setdefault(child.pid, child)
            except (OSError, psutil.Error):
                continue
    return list(found.values())


def _reap(pid: int) -> None:
    """Collect an exited child of ours, so it does not linger as a zombie."""
    with contextlib.suppress(OSError):
        os.waitpid(pid, os.WNOHANG)


def stop_tree(pid: int, timeout: float = 30.0) -> int:
    """SIGTERM ``pid`` (which shuts its own children down), wait, then SIGKILL
    whatever of its tree is left. Returns how many processes were killed by force."""
    procs = tree_of(pid)
    if not procs:
        return 0
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(alive, timeout=5)
    _reap(pid)
    return len(alive)
