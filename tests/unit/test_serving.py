"""Serving pieces without a cluster (requests and contracts are in test_contract.py, the
canary's plan, analysis and state machine in test_canary_machine.py): the split, the
Serve config and its rollout changes, and the Kubernetes backend's RayService objects
(validated against the KubeRay v1.7.0 CRD schema)."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
import yaml
from shipyard.errors import ConfigError
from shipyard.serve_backends import KubernetesBackend, ServeBackendError, get_app, put_app
from shipyard.serving import app_config, rollout_view, serve_config, validate_config, with_rollout
from shipyard.settings import Settings

from tests.k8s_schema import validate_cr


@pytest.mark.parametrize("weight", [5.0, 10.0, 25.0, 50.0])
def test_split_share_is_close_to_the_weight_and_sticky(weight: float) -> None:
    from services.router.app import bucket

    keys = [f"c_{i:07d}" for i in range(20000)]
    share = sum(bucket(k) < weight for k in keys) / len(keys) * 100
    assert abs(share - weight) < 1.0
    # raising the weight only adds customers: nobody moves back to stable
    assert all(bucket(k) < 50.0 for k in keys if bucket(k) < weight)
    assert bucket("c_0000001") == bucket("c_0000001")


@pytest.fixture
def settings(tmp_path: Any) -> Settings:
    return Settings(data_root=tmp_path, serve={"feature_repo": "/repo"})


def test_serve_config_validates_and_rollouts_change_only_user_config(settings: Settings) -> None:
    from ray.serve._private.deploy_utils import get_app_code_version
    from ray.serve.schema import ServeApplicationSchema

    app = app_config(settings, "fraud-detector", "3")
    config = serve_config(settings, [app])
    validate_config(config)
    assert config["http_options"] == {"host": "127.0.0.1", "port": 8000}
    assert rollout_view(app) == {"stable_version": "3", "canary_version": None,
                                 "canary_weight": 0.0, "shadow_weight": 0.0}  # fmt: skip
    canary = with_rollout(app, canary_version="4", canary_weight=25)
    assert rollout_view(canary) == {"stable_version": "3", "canary_version": "4",
                                    "canary_weight": 25.0, "shadow_weight": 0.0}  # fmt: skip
    promoted = with_rollout(canary, stable_version="4", canary_version=None, canary_weight=0)
    # Serve restarts replicas when an app's code version changes; rollouts never change it
    versions = {get_app_code_version(ServeApplicationSchema.model_validate(a))
                for a in (app, canary, promoted)}  # fmt: skip
    assert len(versions) == 1
    assert {d["name"]: d["autoscaling_config"]["min_replicas"] for d in canary["deployments"]}[
        "canary"] == 1  # fmt: skip
    with pytest.raises(ConfigError, match="needs a canary version"):
        with_rollout(app, canary_weight=10)


class RecordingCustomObjects:
    """The part of kubernetes' CustomObjectsApi the backend calls, over one stored
    object, applying JSON merge patches as the API server does and recording them."""

    def __init__(self, obj: dict[str, Any] | None) -> None:
        self.obj = obj
        self.patches: list[dict[str, Any]] = []

    def get_namespaced_custom_object(self, group, version, namespace, plural, name):  # type: ignore[no-untyped-def]
        if self.obj is None or self.obj["metadata"]["name"] != name:
            err = RuntimeError("Not Found")
            err.status = 404  # type: ignore[attr-defined]
            raise err
        assert (group, version, plural) == ("ray.io", "v1", "rayservices")
        return copy.deepcopy(self.obj)

    def patch_namespaced_custom_object(self, group, version, namespace, plural, name, body,
                                       _content_type=None):  # type: ignore[no-untyped-def]  # fmt: skip
        assert _content_type == "application/merge-patch+json"
        self.patches.append(copy.deepcopy(body))
        self.obj = _merge(self.obj, body)
        return copy.deepcopy(self.obj)


def _merge(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _merge(out.get(key), value)
    return out


def _rayservice(serve_config_v2: str) -> dict[str, Any]:
    container = {"name": "ray-head", "image": "shipyard:0.1.0",
                 "resources": {"requests": {"cpu": "1", "memory": "2Gi"}}}  # fmt: skip
    return {
        "apiVersion": "ray.io/v1", "kind": "RayService",
        "metadata": {"name": "shipyard-serve", "namespace": "shipyard"},
        "spec": {
            "serveConfigV2": serve_config_v2,
            "rayClusterConfig": {
                "rayVersion": "2.60.0",
                "headGroupSpec": {"rayStartParams": {},
                                  "template": {"spec": {"containers": [container]}}},
            },
        },
        "status": {"activeServiceStatus": {"applicationStatuses": {"fraud-detector": {
            "status": "RUNNING", "serveDeploymentStatuses": {
                "router": {"status": "HEALTHY"}, "stable": {"status": "HEALTHY"},
                "canary": {"status": "HEALTHY"}}}}}},
    }  # fmt: skip


def test_kubernetes_backend_patches_serve_config_v2_with_valid_rayservices(
    settings: Settings,
) -> None:
    cluster = settings.model_copy(update={"profile": "cluster"})
    app = app_config(cluster, "fraud-detector", "3")
    config = serve_config(cluster, [app])
    assert config["proxy_location"] == "EveryNode"
    api = RecordingCustomObjects(_rayservice(yaml.safe_dump(config)))
    assert validate_cr(api.obj) == []
    backend = KubernetesBackend("shipyard", "shipyard-serve", api=api)

    assert get_app(backend, "fraud-detector") == app
    put_app(backend, with_rollout(app, canary_version="4", canary_weight=5), config)
    backend.save_state("fraud-detector", {"status": "progressing", "weight": 5.0})

    # exactly what was sent: a merge patch of serveConfigV2, then one of an annotation
    assert list(api.patches[0]) == ["spec"] and list(api.patches[0]["spec"]) == ["serveConfigV2"]
    assert list(api.patches[1]) == ["metadata"]
    sent = yaml.safe_load(api.patches[0]["spec"]["serveConfigV2"])
    validate_config(sent)
    assert rollout_view(sent["applications"][0])["canary_weight"] == 5.0
    assert validate_cr(api.obj) == [], "the patched RayService must match the CRD"
    assert backend.load_state("fraud-detector") == {"status": "progressing", "weight": 5.0}
    status = backend.app_status("fraud-detector")
    assert status is not None and status.deployment_ready("canary")
    assert rollout_view(status.config)["canary_version"] == "4"

    missing = KubernetesBackend("shipyard", "other", api=api)
    with pytest.raises(ServeBackendError, match="does not exist"):
        missing.read_config()


def test_on_kubernetes_the_controller_starts_in_the_serving_cluster(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`canary start` on Kubernetes: the controller job goes to the RayService's head
    (serve.dashboard_address, not the jobs cluster in ray.address) and reaches MLflow at
    the in-cluster address; the replicas get the same address in the app's args."""
    from shipyard import jobs
    from shipyard.canary import client
    from shipyard.settings import defaults

    settings = defaults(profile="cluster", ray={"address": "http://127.0.0.1:30265"},
                        mlflow={"tracking_uri": "http://127.0.0.1:30500"},
                        serve={"dashboard_address": "http://127.0.0.1:30266",
                               "tracking_uri": "http://shipyard-mlflow:5000",
                               "feature_repo": "/etc/shipyard/feast",
                               "url": "http://127.0.0.1:30800/"})  # fmt: skip
    calls: list[tuple[str, Any, Any]] = []
    monkeypatch.setattr(client, "_controller_alive", lambda address, model: False)
    monkeypatch.setattr(jobs, "submit_job", lambda s, entry, address=None, metadata=None:
                        calls.append(("submit", address, entry)) or "raysubmit_1")  # fmt: skip
    monkeypatch.setattr(jobs, "wait_for_job", lambda s, job_id, address=None:
                        calls.append(("wait", address, job_id)))  # fmt: skip
    client.ensure_controller(settings, "fraud-detector", echo=lambda _: None)
    (_, address, entry), (_, waited_at, _) = calls
    assert address == waited_at == "http://127.0.0.1:30266"
    assert entry[:3] == ["python", "-m", "shipyard.canary.controller"]
    assert entry[entry.index("--tracking-uri") + 1] == "http://shipyard-mlflow:5000"
    assert json.loads(entry[entry.index("--backend") + 1])["kind"] == "kubernetes"
    assert settings.serve_url == "http://127.0.0.1:30800"
    args = app_config(settings, "fraud-detector", "3")["args"]
    assert args["tracking_uri"] == "http://shipyard-mlflow:5000"
    assert args["feature_repo"] == "/etc/shipyard/feast"


def test_the_routers_window_counts_for_the_controller_and_for_the_metrics() -> None:
    from services.router.app import _Window

    window = _Window()
    for status, latency in [(200, 5.0), (200, 7.0), (500, 9.0), (503, 1.0), (422, 2.0)]:
        window.answered("canary", "4", status, latency)
    window.answered("stable", "3", 200, 3.0)
    window.request("predict", 200)
    window.request("predict", 422)
    window.request("predict", 200)
    answers, requests, _ = window.take_served()
    assert [(v, ver, o) for v, ver, o, _ in answers] == [
        ("canary", "4", "ok"), ("canary", "4", "ok"), ("canary", "4", "error"),
        ("canary", "4", "shed"), ("canary", "4", "rejected"), ("stable", "3", "ok")]  # fmt: skip
    assert requests == {("predict", "2xx"): 2, ("predict", "4xx"): 1}
    assert window.take_served() == ([], {}, {})  # taken once
    report = window.take()  # the controller's view: a shed record is not the model's error
    assert (report["canary"].requests, report["canary"].errors) == (4, 1)
    assert window.totals["stable"] == {"requests": 1, "errors": 0}
