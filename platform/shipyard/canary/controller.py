"""The in-cluster rollout controller: one detached Ray actor per Serve application.

It lives in the cluster that runs Serve, not in the CLI: ``shipyard canary start``
submits ``python -m shipyard.canary.controller`` as a Ray job, which creates the actor
(``canary-<app>`` in namespace ``shipyard``, ``lifetime="detached"``,
``max_restarts=-1``) if it is not running, and exits. Ray restarts the actor when its
process dies; it then reloads the rollout's durable state from the backend and
continues. The routers push a :class:`~shipyard.canary.analysis.RouterReport` to it
once a second (:meth:`RolloutController.report`). A thread drives
:class:`~shipyard.canary.machine.Rollout` once a second. With no rollout in progress
and no registry watch, the actor ends itself.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import threading
import time
from typing import Any

from shipyard.canary.state import ACTIVE, Command, new_command

__all__ = [
    "NAMESPACE",
    "MlflowRegistry",
    "RolloutController",
    "actor_name",
    "controller_name",
    "ensure_controller",
    "main",
    "watch_picks",
]

NAMESPACE = "shipyard"
TICK_S = 1.0
log = logging.getLogger("shipyard.canary")


def controller_name(app: str) -> str:
    """The controller actor's name (in :data:`NAMESPACE`), where the routers report."""
    return f"canary-{app}"


actor_name = controller_name


class MlflowRegistry:
    """What a rollout changes in the registry: aliases and tags on the version."""

    def __init__(self, tracking_uri: str) -> None:
        from mlflow import MlflowClient

        self.tracking_uri = tracking_uri
        self.client = MlflowClient(tracking_uri=tracking_uri)

    def promoted(self, model: str, version: str) -> str:
        from shipyard.registry import CHAMPION

        self.client.set_registered_model_alias(model, CHAMPION, version)
        self.client.set_model_version_tag(model, version, "canary.result", "promoted")
        return f"alias {CHAMPION} -> version {version}"

    def rolled_back(self, model: str, version: str, reason: str) -> None:
        self.client.set_model_version_tag(model, version, "canary.result", "rolled_back")
        self.client.set_model_version_tag(model, version, "canary.reason", reason[:4000])

    def challenger(self, model: str) -> tuple[str, dict[str, str]] | None:
        """The version the ``challenger`` alias points at, with its tags."""
        from mlflow.exceptions import MlflowException

        from shipyard.registry import CHALLENGER

        try:
            mv = self.client.get_model_version_by_alias(model, CHALLENGER)
        except MlflowException:
            return None
        return str(mv.version), dict(mv.tags or {})


class RolloutController:
    """The actor. Its constructor (re)loads the state, so a restart resumes."""

    def __init__(self, app: str, backend_spec: dict[str, Any], tracking_uri: str) -> None:
        import ray

        from shipyard.canary.machine import Rollout
        from shipyard.canary.state import ControllerInfo
        from shipyard.serve_backends import backend_from_spec

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
        self.app = app
        self.registry = MlflowRegistry(tracking_uri)
        self.rollout = Rollout(backend_from_spec(backend_spec), app, registry=self.registry)
        self.lock = threading.Lock()
        state = self.rollout.state
        restarts = ray.get_runtime_context().was_current_actor_reconstructed
        self.restarts = state.controller_restarts + int(restarts)
        state.controller = ControllerInfo(pid=os.getpid(), restarts=self.restarts,
                                          node=ray.get_runtime_context().get_node_id())  # fmt: skip
        state.controller_restarts = self.restarts
        self.rollout.save()
        with self.lock:
            self.rollout.resume_after_restart(self.restarts)
        self.next_watch = 0.0
        threading.Thread(target=self._loop, name="rollout", daemon=True).start()

    def ping(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "status": str(self.rollout.status)}

    def report(self, report: dict[str, Any]) -> None:
        """A router's :class:`RouterReport`, as its dict."""
        with self.lock:
            self.rollout.report(report)

    def _loop(self) -> None:
        idle_since: float | None = None
        while True:
            time.sleep(TICK_S)
            try:
                with self.lock:
                    self.rollout.handle(self.rollout.backend.load_command(self.app))
                    self.rollout.tick()
                    self._watch()
                    busy = self.rollout.status in ACTIVE
                    watching = (
                        self.rollout.state.watch is not None and self.rollout.state.watch.enabled
                    )
            except Exception as exc:  # noqa: BLE001 - keep control; record and retry next tick
                log.exception("rollout tick failed")
                with contextlib.suppress(Exception):  # the backend itself is down: retry
                    self.rollout.decide("error", f"{type(exc).__name__}: {exc}"[:500])
                time.sleep(5)
                continue
            if busy or watching:
                idle_since = None
            elif idle_since is None:
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since > 10:  # commands sent just now still land
                import ray

                log.info("no rollout and no watch: the controller ends")
                ray.kill(ray.get_runtime_context().current_actor, no_restart=True)
                return

    def _watch(self) -> None:
        """Registry-driven mode: a new challenger that passed the gate starts a rollout."""
        watch = self.rollout.state.watch
        if watch is None or not watch.enabled or self.rollout.status in ACTIVE:
            return
        if time.monotonic() < self.next_watch:
            return
        self.next_watch = time.monotonic() + watch.poll_s
        model = self.rollout.state.model or self.app
        found = self.registry.challenger(model)
        if found is None:
            return
        version, tags = found
        from shipyard.serve_backends import get_app
        from shipyard.serving import rollout_view

        app = get_app(self.rollout.backend, self.app)
        stable = rollout_view(app)["stable_version"] if app else None
        if not watch_picks(version, tags, stable=stable, seen=watch.seen):
            return
        from shipyard.contract import check_challenger
        from shipyard.errors import ConfigError

        if stable is None:
            return  # nothing served yet: there is no rollout to start
        try:  # the same check as `canary start`: the clients of stable must not break
            check_challenger(self.registry.tracking_uri, model, str(stable), version,
                             online=bool((app or {}).get("args", {}).get("online_features", True)))  # fmt: skip
        except ConfigError as exc:
            watch.seen = [*watch.seen, version]  # refused for good; any other error retries
            self.rollout.decide("refused", f"watch: challenger {exc}"[:4000])
            return
        watch.seen = [*watch.seen, version]
        cmd = new_command("start", version=version, model=model, plan=watch.plan, source="watch")
        self.rollout.start(Command.model_validate(cmd))


def watch_picks(version: str, tags: dict[str, str], *, stable: str | None,
                seen: list[str]) -> bool:  # fmt: skip
    """Whether the registry watch rolls ``version`` (where ``challenger`` points) out:
    a version registered after the stable one (going back to an older version is a
    person's decision), whose gate passed, never rolled out nor seen by this watch."""
    if not version.isdigit() or version in seen or version == stable:
        return False
    if stable is not None and stable.isdigit() and int(version) < int(stable):
        return False
    return tags.get("gate.passed") == "True" and "canary.result" not in tags


def ensure_controller(app: str, backend_spec: dict[str, Any], tracking_uri: str) -> dict[str, Any]:
    """Start the controller actor unless it runs; returns its ping. Needs ``ray.init``."""
    import ray

    actor = (
        ray.remote(RolloutController)
        .options(
            name=controller_name(app),
            namespace=NAMESPACE,
            lifetime="detached",
            get_if_exists=True,
            max_restarts=-1,
            max_task_retries=0,
            num_cpus=0,
            max_concurrency=4,
        )  # fmt: skip
        .remote(app, backend_spec, tracking_uri)
    )
    return ray.get(actor.ping.remote(), timeout=120)


def main(argv: list[str] | None = None) -> int:
    """``python -m shipyard.canary.controller --app A --backend JSON --tracking-uri U``:
    run as a Ray job on the cluster that runs Serve."""
    parser = argparse.ArgumentParser(prog="python -m shipyard.canary.controller")
    parser.add_argument("--app", required=True)
    parser.add_argument("--backend", required=True, help="the backend spec, JSON")
    parser.add_argument("--tracking-uri", required=True)
    args = parser.parse_args(argv)
    import ray

    ray.init(address="auto", namespace=NAMESPACE, logging_level=logging.WARNING)
    ping = ensure_controller(args.app, json.loads(args.backend), args.tracking_uri)
    print(f"CONTROLLER {json.dumps({'app': args.app, **ping})}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
