"""The local platform: a real multi-process Ray cluster and an MLflow server.

``up`` starts them as detached processes bound to loopback and records what it
started (pids, ports, logs) in ``<data_root>/run/platform.json``; ``status``
probes them; ``down`` stops exactly the recorded processes and their children.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import requests

from shipyard import _process
from shipyard.errors import ComponentStartError, PlatformError, PortInUseError, ShipyardError
from shipyard.settings import Settings

__all__ = [
    "Component",
    "ComponentStatus",
    "PlatformState",
    "down",
    "metrics_discovery_file",
    "status",
    "up",
]

Progress = Callable[[str], None]


@dataclass
class Component:
    """One process ``up`` started."""

    name: str
    pid: int
    create_time: float
    address: str
    log: str
    ports: dict[str, int] = field(default_factory=dict)

    def alive(self) -> bool:
        return _process.is_alive(self.pid, self.create_time)


@dataclass
class PlatformState:
    components: dict[str, Component] = field(default_factory=dict)
    already_running: list[str] = field(default_factory=list)

    @property
    def dashboard_url(self) -> str | None:
        head = self.components.get("ray-head")
        return head.address if head else None

    @property
    def mlflow_url(self) -> str | None:
        comp = self.components.get("mlflow")
        return comp.address if comp else None


@dataclass
class ComponentStatus:
    name: str
    up: bool
    address: str
    version: str = ""
    detail: str = ""


def _state_path(settings: Settings) -> Path:
    return settings.run_dir / "platform.json"


def load_state(settings: Settings) -> PlatformState:
    path = _state_path(settings)
    if not path.exists():
        return PlatformState()
    try:
        raw = json.loads(path.read_text())
        comps = {name: Component(**c) for name, c in raw.get("components", {}).items()}
    except (ValueError, TypeError) as exc:
        raise PlatformError(
            f"the platform state file {path} is corrupt ({exc})",
            hint="stop leftover processes by hand, then delete that file",
        ) from None
    return PlatformState(components=comps)


def _save_state(settings: Settings, state: PlatformState) -> None:
    path = _state_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    payload = {"components": {n: asdict(c) for n, c in state.components.items()}}
    tmp.write_text(json.dumps(payload, indent=2))
    tmp.replace(path)


@contextmanager
def _locked(settings: Settings) -> Iterator[None]:
    """Serialise up/down so two commands never start or stop the same things."""
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    with open(settings.run_dir / "platform.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _bin(name: str) -> str:
    """An executable from this interpreter's environment (the project's venv)."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        raise PlatformError(
            f"{name} is not installed next to {sys.executable}",
            hint="install the project with `make install` (or pip install -e .)",
        )
    return str(path)


def _child_env() -> dict[str, str]:
    """Environment for started processes: loopback Ray, this venv first on PATH.

    Job entrypoints such as ``python -m pipelines...`` then run with the project's
    interpreter, even when the venv was never activated.
    """
    env = dict(os.environ)
    env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # keep Ray on 127.0.0.1
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    # Ray 2.60 turns token auth on whenever ~/.ray/auth_token exists (any local
    # ray.init() writes one), and then our HTTP probes and job clients get 401s. The
    # local platform listens on loopback only; token auth belongs to the cluster chart.
    env["RAY_AUTH_MODE"] = "disabled"
    # `down` stops the whole cluster: no point draining the head for 30 s first.
    env.setdefault("RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S", "3")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    # Importing Feast points PROMETHEUS_MULTIPROC(ESS)_DIR at a temporary folder of this
    # process, which it deletes when this process exits: inherited by Ray, every replica
    # started afterwards would fail importing Feast (FileNotFoundError in
    # prometheus_client). Started processes get their own, or none.
    feast_metrics = sys.modules.get("feast.metrics")
    owned = getattr(feast_metrics, "_prometheus_mp_dir", None)
    if owned and getattr(feast_metrics, "_owns_mp_dir", False):
        for name in ("PROMETHEUS_MULTIPROCESS_DIR", "PROMETHEUS_MULTIPROC_DIR"):
            if env.get(name) == owned:
                del env[name]
    from shipyard.serving import SERVE_RAY_ENV

    for name, value in SERVE_RAY_ENV.items():  # how Serve's data plane runs; a user's own wins
        env.setdefault(name, value)
    return env


def _require_free(host: str, ports: dict[str, int]) -> None:
    for setting, port in ports.items():
        if not _process.port_is_free(host, port):
            env = "SHIPYARD_" + setting.upper().replace(".", "__")
            raise PortInUseError(
                f"port {port} on {host} is already in use (setting {setting})",
                hint=f"free it, or choose another port with {setting} in shipyard.yaml or {env}",
            )


def _http_ok(url: str, timeout: float = 2.0) -> requests.Response | None:
    try:
        resp = requests.get(url, timeout=timeout)
    except requests.RequestException:
        return None
    return resp if resp.ok else None


def _wait_http(url: str, timeout: float, pid: int) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _http_ok(url):
            return True
        if not _process.is_alive(pid):
            return False
        time.sleep(0.5)
    return False


def alive_ray_nodes(dashboard_url: str) -> int | None:
    """Number of ALIVE nodes the cluster reports, or None if it does not answer."""
    resp = _http_ok(f"{dashboard_url}/api/v0/nodes?limit=1000&detail=false", timeout=5)
    if resp is None:
        return None
    try:
        rows = resp.json()["data"]["result"]["result"]
    except (ValueError, KeyError, TypeError):
        return None
    return sum(1 for row in rows if row.get("state") == "ALIVE")


def _log_tail(path: str, lines: int = 15) -> str:
    try:
        text = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(text[-lines:])


def _start_failed(comp: str, log: str, why: str) -> ComponentStartError:
    tail = _log_tail(log)
    detail = f"; last lines of {log}:\n{tail}" if tail else ""
    return ComponentStartError(
        f"{comp} did not start: {why}{detail}", hint=f"see the full log in {log}"
    )


def _start_head(settings: Settings, progress: Progress) -> Component:
    r, host = settings.ray, settings.host
    _require_free(
        host,
        {
            "ray.head_port": r.head_port,
            "ray.dashboard_port": r.dashboard_port,
            "ray.client_server_port": r.client_server_port,
            "ray.dashboard_agent_port": r.dashboard_agent_port,
        },
    )
    log = settings.logs_dir / "ray-head.log"
    argv = [
        _bin("ray"), "start", "--head", "--block",
        f"--node-ip-address={host}",
        f"--port={r.head_port}",
        f"--dashboard-host={host}",
        f"--dashboard-port={r.dashboard_port}",
        f"--ray-client-server-port={r.client_server_port}",
        f"--dashboard-agent-listen-port={r.dashboard_agent_port}",
        f"--min-worker-port={r.min_worker_port}",
        f"--max-worker-port={_worker_port_slice(settings, 0)[1]}",
        f"--object-store-memory={r.object_store_memory_mb * 1024 * 1024}",
        # A short temp dir: Ray's unix socket paths must stay under 108 bytes.
        f"--temp-dir={_ray_temp_dir(settings)}",
        "--disable-usage-stats",
    ]  # fmt: skip
    if r.cpus_per_node:
        argv.append(f"--num-cpus={r.cpus_per_node}")
    progress(f"starting Ray head on {host}:{r.head_port} ...")
    pid = _process.spawn(argv, log, env=_child_env())
    url = f"http://{host}:{r.dashboard_port}"
    if not _wait_http(f"{url}/api/version", r.start_timeout_s, pid):
        _process.stop_tree(pid, timeout=10)
        raise _start_failed("the Ray head", str(log), "its dashboard never answered")
    return Component(
        name="ray-head",
        pid=pid,
        create_time=_process.create_time(pid) or 0.0,
        address=url,
        log=str(log),
        ports={"gcs": r.head_port, "dashboard": r.dashboard_port},
    )


def metrics_discovery_file(settings: Settings) -> Path:
    """Ray's Prometheus service discovery file of the local platform (for
    ``file_sd_configs``): every node's metrics endpoint, Shipyard's metrics included."""
    return Path(_ray_temp_dir(settings)) / "prom_metrics_service_discovery.json"


def _ray_temp_dir(settings: Settings) -> str:
    path = settings.run_dir / "ray"
    if len(str(path)) > 40:
        # Keep it short but still ours alone: a per-data-root folder under /tmp.
        import hashlib

        digest = hashlib.sha1(str(settings.data_root).encode()).hexdigest()[:10]
        path = Path("/tmp") / f"shipyard-{digest}"
    return str(path)


def _worker_port_slice(settings: Settings, index: int) -> tuple[int, int]:
    """Split the worker port range so nodes on one machine never share a port."""
    r = settings.ray
    nodes = r.workers + 1
    size = (r.max_worker_port - r.min_worker_port + 1) // nodes
    if size < 8:
        raise PlatformError(
            f"ray worker port range {r.min_worker_port}-{r.max_worker_port} is too small "
            f"for {nodes} nodes",
            hint="widen ray.min_worker_port/ray.max_worker_port (8 ports per node at least)",
        )
    lo = r.min_worker_port + index * size
    return lo, lo + size - 1


def _start_worker(settings: Settings, index: int, progress: Progress) -> Component:
    r, host = settings.ray, settings.host
    lo, hi = _worker_port_slice(settings, index)
    log = settings.logs_dir / f"ray-worker-{index}.log"
    argv = [
        sys.executable, "-m", "shipyard._raynode",
        f"--gcs-address={host}:{r.head_port}",
        f"--node-ip-address={host}",
        f"--min-worker-port={lo}",
        f"--max-worker-port={hi}",
        f"--object-store-memory={r.object_store_memory_mb * 1024 * 1024}",
    ]  # fmt: skip
    if r.cpus_per_node:
        argv.append(f"--num-cpus={r.cpus_per_node}")
    progress(f"starting Ray worker node {index} ...")
    pid = _process.spawn(argv, log, env=_child_env())
    return Component(
        name=f"ray-worker-{index}",
        pid=pid,
        create_time=_process.create_time(pid) or 0.0,
        address=f"{host}:{r.head_port}",
        log=str(log),
    )


def _start_mlflow(settings: Settings, progress: Progress) -> Component:
    m, host = settings.mlflow, settings.host
    _require_free(host, {"mlflow.port": m.port})
    store = settings.mlflow_dir
    (store / "artifacts").mkdir(parents=True, exist_ok=True)
    log = settings.logs_dir / "mlflow.log"
    argv = [
        _bin("mlflow"), "server",
        "--host", host,
        "--port", str(m.port),
        "--workers", str(m.workers),
        "--backend-store-uri", f"sqlite:///{store / 'mlflow.db'}",
        "--serve-artifacts",
        "--artifacts-destination", str(store / "artifacts"),
    ]  # fmt: skip
    progress(f"starting MLflow server on {host}:{m.port} ...")
    pid = _process.spawn(argv, log, env=_child_env())
    url = f"http://{host}:{m.port}"
    if not _wait_http(f"{url}/health", m.start_timeout_s, pid):
        _process.stop_tree(pid, timeout=10)
        raise _start_failed("the MLflow server", str(log), f"{url}/health never answered")
    return Component(
        name="mlflow",
        pid=pid,
        create_time=_process.create_time(pid) or 0.0,
        address=url,
        log=str(log),
        ports={"http": m.port},
    )


def _start_scheduler(settings: Settings, progress: Progress) -> Component:
    """The scheduler (``shipyard.schedule``): runs the schedules' commands with these
    settings; alive once it writes its first heartbeat."""
    from shipyard.schedule import heartbeat_path
    from shipyard.settings import SETTINGS_ENV

    log = settings.logs_dir / "scheduler.log"
    beat = heartbeat_path(settings)
    beat.unlink(missing_ok=True)
    progress("starting the scheduler ...")
    env = _child_env() | {SETTINGS_ENV: settings.model_dump_json()}
    pid = _process.spawn([sys.executable, "-m", "shipyard.schedule"], log, env=env)
    deadline = time.monotonic() + 60
    while not beat.exists():
        if time.monotonic() > deadline or not _process.is_alive(pid):
            _process.stop_tree(pid, timeout=10)
            raise _start_failed("the scheduler", str(log), "it never wrote its heartbeat")
        time.sleep(0.2)
    return Component(name="scheduler", pid=pid, create_time=_process.create_time(pid) or 0.0,
                     address=str(settings.run_dir / "schedules.json"), log=str(log), ports={})  # fmt: skip


def _wait_nodes(settings: Settings, url: str, expected: int, workers: list[Component]) -> None:
    deadline = time.monotonic() + settings.ray.start_timeout_s
    while time.monotonic() < deadline:
        if (alive_ray_nodes(url) or 0) >= expected:
            return
        for comp in workers:
            if not comp.alive():
                raise _start_failed(comp.name, comp.log, "its process exited")
        time.sleep(0.5)
    raise ComponentStartError(
        f"only {alive_ray_nodes(url) or 0} of {expected} Ray nodes joined within "
        f"{settings.ray.start_timeout_s:.0f}s",
        hint=f"see the logs in {settings.logs_dir}",
    )


def up(
    settings: Settings, workers: int | None = None, progress: Progress = lambda _msg: None
) -> PlatformState:
    """Start the local platform (idempotent). Returns what runs, and what already ran."""
    if settings.profile != "local":
        raise PlatformError(
            f"`shipyard up` starts the local platform, but the profile is {settings.profile!r}",
            hint="on Kubernetes install the Helm chart instead, or set profile: local",
        )
    if workers is not None:
        settings = settings.model_copy(
            update={"ray": settings.ray.model_copy(update={"workers": workers})}
        )
    with _locked(settings):
        state = load_state(settings)
        running = {n: c for n, c in state.components.items() if c.alive()}
        ray_names = ["ray-head"] + [f"ray-worker-{i}" for i in range(1, settings.ray.workers + 1)]
        started: list[Component] = []
        new = PlatformState(components=dict(running))
        new.already_running = sorted(running)
        try:
            head = running.get("ray-head")
            if head is None:
                # A head restart invalidates its old workers; stop any stragglers.
                for name in [n for n in running if n.startswith("ray-worker-")]:
                    _process.stop_tree(running[name].pid)
                    new.components.pop(name)
                    new.already_running.remove(name)
                head = _start_head(settings, progress)
                started.append(head)
                new.components[head.name] = head
            pending = []
            for index, name in enumerate(ray_names[1:], start=1):
                if name not in new.components:
                    comp = _start_worker(settings, index, progress)
                    started.append(comp)
                    pending.append(comp)
                    new.components[name] = comp
            if pending:
                expected = sum(1 for n in new.components if n.startswith("ray-"))
                _wait_nodes(settings, head.address, expected, pending)
            if "mlflow" not in new.components:
                comp = _start_mlflow(settings, progress)
                started.append(comp)
                new.components[comp.name] = comp
            if "scheduler" not in new.components:
                comp = _start_scheduler(settings, progress)
                started.append(comp)
                new.components[comp.name] = comp
        except BaseException:
            for comp in reversed(started):
                _process.stop_tree(comp.pid, timeout=15)
            _save_state(settings, PlatformState(components=running))
            raise
        _save_state(settings, new)
        return new


def down(settings: Settings, progress: Progress = lambda _msg: None) -> list[str]:
    """Stop exactly what ``up`` started (workers, then head, then MLflow)."""
    with _locked(settings):
        state = load_state(settings)
        order = sorted(
            state.components.values(),
            key=lambda c: (
                -1
                if c.name == "scheduler"  # first: it starts jobs on the rest
                else 0
                if c.name.startswith("ray-worker")
                else 1
                if c.name == "ray-head"
                else 2
            ),
        )
        stopped = []
        for comp in order:
            if comp.alive():
                progress(f"stopping {comp.name} (pid {comp.pid}) ...")
                _process.stop_tree(comp.pid, timeout=40)
                stopped.append(comp.name)
        _state_path(settings).unlink(missing_ok=True)
        return stopped


def dashboard_address(
    settings: Settings, address: str | None = None, state: PlatformState | None = None
) -> str:
    """The Ray dashboard URL: explicit > ``ray.address`` > the local cluster's."""
    if address:
        return address if "://" in address else f"http://{address}"
    if settings.ray.address:
        return settings.ray.address
    head = (state or load_state(settings)).dashboard_url
    return head or f"http://{settings.host}:{settings.ray.dashboard_port}"


def status(settings: Settings) -> list[ComponentStatus]:
    """Probe each component: the local ones from the state file, or remote addresses."""
    out: list[ComponentStatus] = []
    state = load_state(settings)
    dashboard = dashboard_address(settings, state=state)
    resp = _http_ok(f"{dashboard.rstrip('/')}/api/version")
    version = resp.json().get("ray_version", "") if resp is not None else ""
    nodes = alive_ray_nodes(dashboard.rstrip("/")) if resp is not None else None
    out.append(
        ComponentStatus(
            "ray", resp is not None, dashboard, version,
            f"{nodes} node(s) alive" if nodes is not None else "dashboard does not answer",
        )
    )  # fmt: skip
    if not settings.ray.address:
        for comp in state.components.values():
            if comp.name.startswith("ray-worker-"):
                alive = comp.alive()
                out.append(
                    ComponentStatus(comp.name, alive, comp.address, version,
                                    f"pid {comp.pid}" if alive else "process gone")
                )  # fmt: skip
    tracking = (
        settings.mlflow.tracking_uri
        or state.mlflow_url
        or (f"http://{settings.host}:{settings.mlflow.port}")
    )
    tracking = tracking.rstrip("/")
    health = _http_ok(f"{tracking}/health")
    ver = _http_ok(f"{tracking}/version") if health is not None else None
    out.append(
        ComponentStatus(
            "mlflow", health is not None, tracking, ver.text.strip() if ver is not None else "",
            "" if health is not None else "server does not answer",
        )
    )  # fmt: skip
    scheduler = state.components.get("scheduler")
    if scheduler is not None and not settings.ray.address:
        alive = scheduler.alive()
        out.append(ComponentStatus("scheduler", alive, scheduler.address, "",
                                   _schedules(settings) if alive else "process gone"))  # fmt: skip
    return out


def _schedules(settings: Settings) -> str:
    from shipyard.schedule import load

    try:
        found = load(settings)
    except ShipyardError as exc:
        return str(exc)
    return f"{len(found)} schedule(s)" + (f": {', '.join(s.name for s in found)}" if found else "")
