"""Contracts between the chart and the code it runs: the Serve config, the Feast repo
configuration, the RayJob entrypoints, the image's versions, and the canary
controller's Kubernetes permissions."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import click
import pytest
import tomllib
import yaml
from shipyard import serving
from shipyard.cli import cli
from shipyard.serve_backends import KubernetesBackend, get_app, put_app
from shipyard.settings import defaults

from pipelines.features.store import repo_config
from pipelines.training.config import load_config
from tests.helm.conftest import ROOT, one, render
from tests.k8s_schema import validate_cr
from tests.unit.test_serving import RecordingCustomObjects

MLFLOW = "http://shipyard-mlflow:5000"
FEAST_REPO = "/etc/shipyard/feast"


def _serve_settings(monitor: dict[str, Any] | None = None, **knobs: Any) -> Any:
    """The chart's install as settings: its MLflow, Feast repo and data mount, and
    ServeSettings' and MonitorSettings' own defaults for every knob not given, so a
    default changed on one side only (settings or values.yaml) fails the comparison."""
    return defaults(
        profile="cluster",
        data_root="/data",
        monitor=monitor or {},
        serve={
            "backend": "kubernetes",
            "tracking_uri": MLFLOW,
            "feature_repo": FEAST_REPO,
            **knobs,
        },
    )


def _serve_config_v2(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return yaml.safe_load(one(objects, "RayService")["spec"]["serveConfigV2"])


def _expected(settings: Any, models: list[tuple[str, str | None]]) -> dict[str, Any]:
    """What the local deploy builds for these (model, stable version) pairs."""
    return serving.serve_config(settings, [serving.app_config(settings, m, v) for m, v in models])


# Two models, the first pinned at install; the rollout test below renders the same.
PINNED = [{"name": "fraud-detector", "stableVersion": "3"},
          {"name": "customer-spend", "stableVersion": ""}]  # fmt: skip


@pytest.mark.parametrize(
    ("value_set", "sets", "models", "settings_kw"),
    [
        ("default", {}, [("fraud-detector", None), ("customer-spend", None)], {}),
        ("default", {"serve.models": PINNED}, [("fraud-detector", "3"), ("customer-spend", None)],
         {}),
        # a custom list, in another order, with a number as a version and every shared knob
        ("default", {"serve.models": [{"name": "Churn.v2_eu", "stableVersion": "12"},
                                      {"name": "customer-spend", "stableVersion": 7},
                                      {"name": "fraud-detector"}],
                     "serve.httpPort": "9000", "serve.maxBatchSize": "8",
                     "serve.batchWaitTimeoutS": 0.02, "serve.onlineFeatures": "false",
                     "serve.stableMinReplicas": 5, "serve.accessLog": "true"},
         [("Churn.v2_eu", "12"), ("customer-spend", "7"), ("fraud-detector", None)],
         {"http_port": 9000, "max_batch_size": 8, "batch_wait_timeout_s": 0.02,
          "online_features": False, "stable_min_replicas": 5, "access_log": True}),
        # the inference log in a bucket, sampled; and switched off
        ("default", {"serve.inferenceLog.uri": "s3://logs/shipyard",
                     "serve.inferenceLog.sampleRate": 0.25, "serve.inferenceLog.flushIntervalS": 30},
         [("fraud-detector", None), ("customer-spend", None)],
         {"monitor": {"log_uri": "s3://logs/shipyard", "log_sample_rate": 0.25,
                      "log_flush_interval_s": 30}}),
        ("default", {"serve.inferenceLog.enabled": "false"},
         [("fraud-detector", None), ("customer-spend", None)],
         {"monitor": {"inference_log": False}}),
        # a values file (ci/ci-values.yaml): three models, one version a YAML number
        ("ci", {}, [("fraud-detector", "3"), ("customer-spend", None), ("churn", "12")], {}),
    ],
)  # fmt: skip
def test_serve_config_v2_is_the_local_deploys_config(value_set: str, sets: dict[str, Any],
                                                     models: list[tuple[str, str | None]],
                                                     settings_kw: dict[str, Any]) -> None:  # fmt: skip
    rendered = _serve_config_v2(render(value_set, **sets))
    assert rendered == _expected(_serve_settings(**settings_kw), models)
    serving.validate_config(rendered)  # Ray Serve's own ServeDeploySchema


def test_serving_pods_run_serve_as_shipyard_up_does() -> None:
    """The serving cluster's Ray pods get the same data-plane environment as the local
    cluster (shipyard.serving.SERVE_RAY_ENV); the jobs cluster does not need it."""
    objects = render()

    def envs(obj: dict[str, Any]) -> list[dict[str, str]]:
        spec = obj["spec"].get("rayClusterConfig", obj["spec"])
        pods = [spec["headGroupSpec"]] + spec.get("workerGroupSpecs", [])
        return [{e["name"]: e.get("value") for e in c.get("env", [])}
                for p in pods for c in p["template"]["spec"]["containers"]
                if c["name"].startswith("ray-")]  # fmt: skip

    serving_envs = envs(one(objects, "RayService"))
    ray_env = [{k: v for k, v in e.items() if k in serving.SERVE_RAY_ENV or k.startswith(
        ("RAY_SERVE_", "RAY_worker_"))} for e in serving_envs]  # fmt: skip
    assert ray_env and all(e == serving.SERVE_RAY_ENV for e in ray_env), ray_env
    jobs = [o for o in objects if o["kind"] == "RayCluster"]
    assert jobs and not any("RAY_SERVE_THROUGHPUT_OPTIMIZED" in e for e in envs(jobs[0]))


def test_the_charts_serve_config_file_is_current() -> None:
    shipped = json.loads(serving.CHART_CONFIG.read_text())
    assert shipped == serving.chart_config(), "run `make chart` and commit the file"


def test_rollouts_patch_the_rendered_rayservice_within_its_role() -> None:
    """The canary controller's backend, on the RayService the chart renders: what it
    sends stays valid for the CRD and Serve, uses only the verbs the Role grants, and
    moves one model's rollout while the other model's application stays as rendered."""
    objects = render(**{"serve.models": PINNED})
    api = RecordingCustomObjects(one(objects, "RayService"))
    calls: list[str] = []
    for verb in ("get", "patch"):
        method = getattr(api, f"{verb}_namespaced_custom_object")
        setattr(api, f"{verb}_namespaced_custom_object",
                lambda *a, _m=method, _v=verb, **k: (calls.append(_v), _m(*a, **k))[1])  # fmt: skip
    backend = KubernetesBackend("shipyard", "shipyard-serve", api=api)
    other = get_app(backend, "customer-spend")
    app = get_app(backend, "fraud-detector")
    assert app is not None and serving.rollout_view(app)["stable_version"] == "3"
    canary = serving.with_rollout(app, canary_version="4", canary_weight=10)
    put_app(backend, canary, serving.serve_config(_serve_settings(), [canary]))
    backend.save_state("fraud-detector", {"status": "running", "weight": 10})
    assert not validate_cr(api.obj)
    config = yaml.safe_load(api.obj["spec"]["serveConfigV2"])
    serving.validate_config(config)
    assert [a["name"] for a in config["applications"]] == [
        "fraud-detector", "customer-spend", "oip-v2"]  # fmt: skip
    assert serving.rollout_view(get_app(backend, "fraud-detector") or {})["canary_weight"] == 10
    assert get_app(backend, "customer-spend") == other
    role = one(objects, "Role")["rules"][0]
    assert set(calls) <= set(role["verbs"]) and role["resourceNames"] == [backend.name]


def test_feast_config_map_is_the_cluster_profile_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    objects = render()
    text = one(objects, "ConfigMap", "shipyard-feast")["data"]["feature_store.yaml"]
    head = one(objects, "RayCluster")["spec"]["headGroupSpec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in head["containers"][0]["env"]}
    settings = defaults(profile="cluster", data_root=env["SHIPYARD_DATA_ROOT"], features={
        "project": env["SHIPYARD_FEATURES__PROJECT"],
        "registry_url": env["SHIPYARD_FEATURES__REGISTRY_URL"],
        "redis": env["SHIPYARD_FEATURES__REDIS"]})  # fmt: skip
    assert yaml.safe_load(text) == repo_config(settings)
    assert "${POSTGRES_PASSWORD}" in text and "${FEAST_REDIS_PASSWORD}" in text
    # Feast itself accepts the file, with the passwords the pods get from Secrets.
    from feast.repo_config import load_repo_config

    monkeypatch.setenv("POSTGRES_PASSWORD", "pw")
    monkeypatch.setenv("FEAST_REDIS_PASSWORD", "rpw")
    path = Path(__file__).parent / "_feature_store.yaml"
    try:
        path.write_text(text)
        config = load_repo_config(path.parent, path)
    finally:
        path.unlink(missing_ok=True)
    assert config.registry.path == "postgresql+psycopg://shipyard:pw@shipyard-postgres:5432/feast"
    assert config.online_store.connection_string == "shipyard-redis:6379,password=rpw"


def _parse_cli(argv: list[str]) -> tuple[click.Command, dict[str, Any]]:
    """Parse ``shipyard ...`` arguments as the CLI would, without running anything."""
    assert argv[0] == "shipyard", argv
    command: click.Command = cli
    name, args, parent = "shipyard", argv[1:], None
    while True:
        ctx = command.make_context(name, list(args), parent=parent)
        if not isinstance(command, click.Group):
            return command, ctx.params
        rest = [*ctx._protected_args, *ctx.args]
        name, sub, _ = command.resolve_command(ctx, rest)
        assert sub is not None, f"no command {rest[0]!r}"
        command, args, parent = sub, rest[1:], ctx


def test_rayjob_entrypoints_are_cli_commands_that_accept_their_arguments() -> None:
    objects = render("ci")
    jobs = {o["metadata"]["name"]: o for o in objects if o["kind"] == "RayJob"}
    assert set(jobs) == {"shipyard-features-ci", "shipyard-training-ci"}
    seen = []
    for job in jobs.values():
        for step in job["spec"]["entrypoint"].split(" && "):
            command, params = _parse_cli(shlex.split(step))
            seen.append(command.name)
            if "local" in params:
                assert params["local"], f"{step}: a RayJob's driver must run the work itself"
    assert seen == ["generate", "build", "apply", "materialize", "train"]
    # The training job reads its config from the mounted ConfigMap, and it validates.
    training = jobs["shipyard-training-ci"]
    path = re.search(r"--config (\S+)", training["spec"]["entrypoint"]).group(1)
    head = training["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    mount = next(m for m in head["containers"][0]["volumeMounts"] if m["name"] == "train-config")
    volume = next(v for v in head["volumes"] if v["name"] == "train-config")
    assert str(Path(path).parent) == mount["mountPath"]
    config_map = one(objects, "ConfigMap", volume["configMap"]["name"])
    text = config_map["data"][Path(path).name]
    tmp = Path(__file__).parent / "_train.yaml"
    try:
        tmp.write_text(text)
        assert load_config(tmp).workers == 2
    finally:
        tmp.unlink(missing_ok=True)


def test_image_versions_match_the_pins() -> None:
    dockerfile = (ROOT / "deploy" / "docker" / "Dockerfile").read_text()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", dockerfile, re.M))
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    ray_pin = next(re.search(r"==(\S+)", d).group(1) for d in pyproject["project"]["dependencies"]
                   if d.startswith("ray["))  # fmt: skip
    python = (ROOT / ".python-version").read_text().strip()
    assert args["RAY_VERSION"] == ray_pin
    from packaging.specifiers import SpecifierSet

    assert f"{python}.0" in SpecifierSet(pyproject["project"]["requires-python"])
    assert args["PYTHON_TAG"] == "py" + python.replace(".", "")
    assert re.search(r"^FROM rayproject/ray:\$\{RAY_VERSION\}-\$\{PYTHON_TAG\}-\$\{RAY_VARIANT\}$",
                     dockerfile, re.M)  # fmt: skip
    values = yaml.safe_load((ROOT / "deploy" / "helm" / "shipyard" / "values.yaml").read_text())
    assert values["ray"]["version"] == ray_pin
    for obj in render("ci"):
        if obj["kind"] in ("RayCluster", "RayJob", "RayService"):
            cluster = obj["spec"].get("rayClusterConfig") or obj["spec"].get("rayClusterSpec") \
                or obj["spec"]  # fmt: skip
            assert cluster["rayVersion"] == ray_pin
    constraints = (ROOT / "constraints.txt").read_text()
    assert f"\nray=={ray_pin}\n" in constraints


def _merge_with_live(tmp_path: Path, live_text: str, sets: dict[str, str]) -> dict[str, Any]:
    """The chart's serveConfigV2 helper given a live RayService's config, as on a `helm
    upgrade` (where `lookup` finds it; `helm template` has no cluster to look in). The
    chart is copied with one extra template that calls the helper on a fixed text."""
    import shutil

    from tests.helm.conftest import CHART, run_helm, template_args

    chart = tmp_path / "shipyard"
    shutil.copytree(CHART, chart)
    (chart / "live.yaml").write_text(live_text)
    (chart / "templates" / "zz-live.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: merged}\ndata:\n  config: |\n"
        '    {{- include "shipyard.serveConfig" (list . (.Files.Get "live.yaml")) | nindent 4 }}\n'
    )
    args = template_args([], sets)
    args[2] = str(chart)
    done = run_helm(*args, "--show-only", "templates/zz-live.yaml")
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(yaml.safe_load(done.stdout)["data"]["config"])


def test_an_upgrade_keeps_each_models_live_rollout_state(tmp_path: Path) -> None:
    """Per model: a live one keeps its user_config and canary bounds, one not live gets
    its values, and the args, the order and the set of models come from the values."""
    settings = _serve_settings(max_batch_size=8)
    sets = {"serve.maxBatchSize": "8",
            "serve.models": [{"name": "fraud-detector", "stableVersion": "1"},
                             {"name": "customer-spend", "stableVersion": "2"}]}  # fmt: skip
    fresh = {m: serving.app_config(settings, m, v)
             for m, v in (("fraud-detector", "1"), ("customer-spend", "2"))}  # fmt: skip
    # live, deployed under older values (batch size 32) by `shipyard deploy` and rollouts
    old = _serve_settings()
    fraud = serving.with_rollout(serving.app_config(old, "fraud-detector", "2"),
                                 stable_version="5", canary_version="6", canary_weight=30)  # fmt: skip
    spend = serving.with_rollout(serving.app_config(old, "customer-spend", "2"),
                                 stable_version="4")  # fmt: skip
    unlisted = serving.app_config(old, "other-model", "1")

    def merged(live_apps: list[dict[str, Any]]) -> dict[str, Any]:
        text = yaml.safe_dump(serving.serve_config(old, live_apps))
        out = _merge_with_live(tmp_path / "+".join(a["name"] for a in live_apps), text, sets)
        serving.validate_config(out)
        return out

    def rolled(model: str, **rollout: Any) -> dict[str, Any]:
        return serving.with_rollout(fresh[model], **rollout)

    # only fraud-detector is live (mid-canary): customer-spend gets its values
    one_live = merged([unlisted, fraud])
    assert serving.rollout_view(one_live["applications"][0]) == {
        "stable_version": "5", "canary_version": "6", "canary_weight": 30.0, "shadow_weight": 0.0}  # fmt: skip
    assert one_live == serving.serve_config(settings, [
        rolled("fraud-detector", stable_version="5", canary_version="6", canary_weight=30),
        fresh["customer-spend"]])  # fmt: skip
    # both live, in another order and in different states: each keeps its own
    both_live = merged([spend, unlisted, fraud])
    assert both_live == serving.serve_config(settings, [
        rolled("fraud-detector", stable_version="5", canary_version="6", canary_weight=30),
        rolled("customer-spend", stable_version="4")])  # fmt: skip
    assert [serving.rollout_view(a)["stable_version"] for a in both_live["applications"][:2]] \
        == ["5", "4"]  # fmt: skip
    # nothing live for these models, or an unreadable config: the values alone
    values_alone = serving.serve_config(settings, list(fresh.values()))
    for text in (yaml.safe_dump(serving.serve_config(old, [unlisted])), "applications: [oops",
                 ""):  # fmt: skip
        assert _merge_with_live(tmp_path / str(abs(hash(text))), text, sets) == values_alone
