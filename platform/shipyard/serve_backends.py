"""Where a Serve config lives, and so where it is changed: two backends, one interface.

- :class:`LocalBackend`: the local Ray cluster. The config is read and written through
  Serve's REST API on the dashboard (``GET``/``PUT /api/serve/applications/``, what
  ``serve deploy`` uses). A PUT declares *every* application, so a change to one app
  reads the others back and keeps them.
- :class:`KubernetesBackend`: a RayService. The config is the CR's ``spec.serveConfigV2``
  (a YAML string), changed with a JSON merge patch through the Kubernetes API; KubeRay
  would overwrite a change made behind its back through the REST API. The API object
  is injectable (``CustomObjectsApi``-shaped), like dagster-ray's CRD client.

Each backend also keeps a rollout's durable state where it outlives the controller:
a JSON file under the run directory locally, an annotation on the RayService in a
cluster (so ``kubectl get rayservice -o yaml`` shows it too).
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml

from shipyard.errors import ShipyardError

__all__ = [
    "AppStatus",
    "KubernetesBackend",
    "LocalBackend",
    "ServeBackend",
    "ServeBackendError",
    "backend_from_spec",
]

SERVE_PATH = "/api/serve/applications/"
GROUP, VERSION, PLURAL = "ray.io", "v1", "rayservices"
STATE_ANNOTATION = "rollout.shipyard.io/{app}"
COMMAND_ANNOTATION = "command.rollout.shipyard.io/{app}"


class ServeBackendError(ShipyardError):
    """The Serve config could not be read or changed."""

    exit_code = 5


@dataclass
class AppStatus:
    name: str
    status: str  # RUNNING, DEPLOYING, DEPLOY_FAILED, UNHEALTHY, ...
    message: str = ""
    deployments: dict[str, dict[str, Any]] = field(default_factory=dict)
    # deployment -> {"status": ..., "replicas": n running or None where unknown}
    config: dict[str, Any] | None = None  # the deployed application config

    def deployment_ready(self, name: str, *, replicas: int = 1) -> bool:
        dep = self.deployments.get(name) or {}
        running = dep.get("replicas")
        enough = running is None or running >= replicas
        return self.status == "RUNNING" and dep.get("status") == "HEALTHY" and enough


class ServeBackend(Protocol):
    kind: str

    def read_config(self) -> dict[str, Any]: ...
    def write_config(self, config: dict[str, Any]) -> None: ...
    def app_status(self, app: str) -> AppStatus | None: ...
    def load_state(self, app: str) -> dict[str, Any] | None: ...
    def save_state(self, app: str, state: dict[str, Any]) -> None: ...
    def load_command(self, app: str) -> dict[str, Any] | None: ...
    def save_command(self, app: str, command: dict[str, Any]) -> None: ...
    def spec(self) -> dict[str, Any]: ...


def get_app(backend: ServeBackend, app: str) -> dict[str, Any] | None:
    for item in backend.read_config().get("applications", []):
        if item.get("name") == app:
            return copy.deepcopy(item)
    return None


def put_app(backend: ServeBackend, app_config: dict[str, Any], base: dict[str, Any]) -> None:
    """Replace (or add) one application, keeping every other one as deployed.
    ``base`` supplies the top-level options when no config exists yet."""
    put_apps(backend, [app_config], base)


def put_apps(backend: ServeBackend, apps: list[dict[str, Any]], base: dict[str, Any]) -> None:
    """Replace (or add) these applications in one write, keeping every other one."""
    config = backend.read_config() or {}
    if not config.get("applications"):
        config = {k: v for k, v in base.items() if k != "applications"}
        config["applications"] = []
    new = {a["name"]: a for a in apps}
    current = config["applications"]
    names = {a.get("name") for a in current}
    # in place, so the order (the chart's first application) never changes; new ones last
    config["applications"] = [new.get(a.get("name"), a) for a in current] + [
        a for a in apps if a["name"] not in names
    ]
    backend.write_config(config)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2, default=str)
    os.replace(tmp, path)  # atomic: a reader sees the old or the new state, never half


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


class LocalBackend:
    """The local cluster's Serve REST API; rollout state in ``<state_dir>/<app>.json``."""

    kind = "local"

    def __init__(self, dashboard: str, state_dir: str | Path, timeout: float = 30.0) -> None:
        self.dashboard = dashboard.rstrip("/")
        self.state_dir = Path(state_dir)
        self.timeout = timeout

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "dashboard": self.dashboard, "state_dir": str(self.state_dir)}

    def _call(self, method: str, refused: str, **kwargs: Any) -> Any:
        """One request to Serve's REST API; unreachable and non-200 are clear errors."""
        import requests

        try:
            resp = requests.request(method, self.dashboard + SERVE_PATH, timeout=self.timeout,
                                    **kwargs)  # fmt: skip
        except requests.RequestException as exc:
            raise ServeBackendError(
                f"cannot reach Serve's REST API at {self.dashboard}: {type(exc).__name__}",
                hint="start the local platform with `shipyard up`",
            ) from None
        if resp.status_code != 200:
            raise ServeBackendError(f"{refused} ({resp.status_code}): {resp.text[:500]}")
        return resp

    def _details(self) -> dict[str, Any]:
        return self._call("GET", "Serve's REST API failed").json()

    def read_config(self) -> dict[str, Any]:
        details = self._details()
        apps = [a["deployed_app_config"] for a in (details.get("applications") or {}).values()
                if a.get("deployed_app_config")]  # fmt: skip
        if not apps:
            return {}
        http = details.get("http_options") or {}
        return {
            "proxy_location": details.get("proxy_location") or "HeadOnly",
            "http_options": {k: http[k] for k in ("host", "port") if k in http},
            "applications": apps,
        }

    def write_config(self, config: dict[str, Any]) -> None:
        self._call("PUT", "Serve refused the config", json=config)

    def app_status(self, app: str) -> AppStatus | None:
        details = self._details()
        item = (details.get("applications") or {}).get(app)
        if item is None:
            return None
        deps = {}
        for name, dep in (item.get("deployments") or {}).items():
            running = sum(r.get("state") == "RUNNING" for r in dep.get("replicas") or [])
            deps[name] = {"status": dep.get("status"), "replicas": running,
                          "message": dep.get("message", "")}  # fmt: skip
        return AppStatus(app, item.get("status", "UNKNOWN"), item.get("message", ""), deps,
                         item.get("deployed_app_config"))  # fmt: skip

    def _path(self, app: str, suffix: str = "") -> Path:
        return self.state_dir / f"{app}{suffix}.json"

    def load_state(self, app: str) -> dict[str, Any] | None:
        return _read_json(self._path(app))

    def save_state(self, app: str, state: dict[str, Any]) -> None:
        _write_json(self._path(app), state)

    def load_command(self, app: str) -> dict[str, Any] | None:
        return _read_json(self._path(app, ".command"))

    def save_command(self, app: str, command: dict[str, Any]) -> None:
        _write_json(self._path(app, ".command"), command)


def custom_objects_api(error: type[ShipyardError]) -> Any:
    """Kubernetes' CustomObjectsApi with the pod's credentials inside a cluster, else
    KUBECONFIG's; ``error`` says what is missing when there are none."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        try:
            config.load_kube_config()
        except (config.ConfigException, FileNotFoundError) as exc:
            raise error(
                f"no Kubernetes credentials: {exc}",
                hint="run inside the cluster, or point KUBECONFIG (or kubectl's current "
                "context) at it",
            ) from None
    return client.CustomObjectsApi()


class KubernetesBackend:
    """A RayService's ``serveConfigV2``, patched through the Kubernetes API."""

    kind = "kubernetes"

    def __init__(self, namespace: str, name: str, api: Any = None) -> None:
        self.namespace = namespace
        self.name = name
        self._api = api

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "namespace": self.namespace, "name": self.name}

    @property
    def api(self) -> Any:
        if self._api is None:
            self._api = custom_objects_api(ServeBackendError)
        return self._api

    def _where(self) -> str:
        return f"RayService {self.namespace}/{self.name}"

    def get(self) -> dict[str, Any]:
        try:
            return self.api.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL,
                                                         self.name)  # fmt: skip
        except Exception as exc:  # kubernetes.client.ApiException and transport errors
            status = getattr(exc, "status", None)
            if status == 404:
                raise ServeBackendError(
                    f"{self._where()} does not exist",
                    hint="install the Shipyard chart, or set serve.namespace / serve.rayservice",
                ) from None
            raise ServeBackendError(f"cannot read {self._where()}: {exc}") from None

    def patch(self, body: dict[str, Any]) -> dict[str, Any]:
        """A JSON merge patch (``application/merge-patch+json``) of the RayService."""
        try:
            return self.api.patch_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, self.name, body,
                _content_type="application/merge-patch+json",
            )  # fmt: skip
        except Exception as exc:
            raise ServeBackendError(f"cannot patch {self._where()}: {exc}") from None

    def read_config(self) -> dict[str, Any]:
        return _serve_config_of(self.get())

    def write_config(self, config: dict[str, Any]) -> None:
        self.patch({"spec": {"serveConfigV2": yaml.safe_dump(config, sort_keys=False)}})

    def app_status(self, app: str) -> AppStatus | None:
        obj = self.get()
        active = (obj.get("status") or {}).get("activeServiceStatus") or {}
        item = (active.get("applicationStatuses") or {}).get(app)
        if item is None:
            return None
        deps = {name: {"status": d.get("status"), "replicas": None, "message": d.get("message", "")}
                for name, d in (item.get("serveDeploymentStatuses") or {}).items()}  # fmt: skip
        config = next((a for a in _serve_config_of(obj).get("applications", [])
                       if a.get("name") == app), None)  # fmt: skip
        return AppStatus(app, item.get("status", "UNKNOWN"), item.get("message", ""), deps, config)

    def _annotation(self, key: str) -> dict[str, Any] | None:
        annotations = (self.get().get("metadata") or {}).get("annotations") or {}
        return json.loads(annotations[key]) if key in annotations else None

    def _annotate(self, key: str, value: dict[str, Any]) -> None:
        self.patch({"metadata": {"annotations": {key: json.dumps(value, default=str)}}})

    def load_state(self, app: str) -> dict[str, Any] | None:
        return self._annotation(STATE_ANNOTATION.format(app=app))

    def save_state(self, app: str, state: dict[str, Any]) -> None:
        self._annotate(STATE_ANNOTATION.format(app=app), state)

    def load_command(self, app: str) -> dict[str, Any] | None:
        return self._annotation(COMMAND_ANNOTATION.format(app=app))

    def save_command(self, app: str, command: dict[str, Any]) -> None:
        self._annotate(COMMAND_ANNOTATION.format(app=app), command)


def _serve_config_of(rayservice: dict[str, Any]) -> dict[str, Any]:
    return yaml.safe_load((rayservice.get("spec") or {}).get("serveConfigV2") or "") or {}


def backend_from_spec(spec: dict[str, Any], api: Any = None) -> ServeBackend:
    """Rebuild a backend from :meth:`spec` (how the in-cluster controller gets its own)."""
    if spec.get("kind") == "local":
        return LocalBackend(spec["dashboard"], spec["state_dir"])
    if spec.get("kind") == "kubernetes":
        return KubernetesBackend(spec["namespace"], spec["name"], api=api)
    raise ServeBackendError(f"unknown serve backend {spec.get('kind')!r}")


def wait_ready(backend: ServeBackend, app: str, deployments: dict[str, int], *,
               timeout: float, poll: float = 1.0) -> AppStatus:  # fmt: skip
    """Until the app runs and each named deployment is HEALTHY with at least the given
    number of running replicas, twice in a row (a just-written config may still show
    the previous state once)."""
    deadline = time.monotonic() + timeout
    streak, status = 0, None
    while time.monotonic() < deadline:
        status = backend.app_status(app)
        ok = status is not None and all(
            status.deployment_ready(d, replicas=n) for d, n in deployments.items()
        )
        streak = streak + 1 if ok else 0
        if streak >= 2:
            return status  # type: ignore[return-value]
        if status is not None and status.status == "DEPLOY_FAILED":
            break
        time.sleep(poll)
    what = status.message if status else "the application does not exist"
    detail = {d: (status.deployments.get(d) if status else None) for d in deployments}
    raise ServeBackendError(
        f"application {app!r} not ready after {timeout:.0f}s: "
        f"{status.status if status else 'absent'} {what} {detail}".strip()
    )
