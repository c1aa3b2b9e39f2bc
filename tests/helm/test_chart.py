"""The chart, rendered by the real helm binary: lint, schemas, and policies.

Every value set a user installs with (defaults, kind, the cloud examples, and CI's
everything-on set) must lint strictly, and every rendered object must validate against
the Kubernetes 1.35 schemas (the version infra/kind/cluster.yaml pins) or, for Ray
objects, the KubeRay v1.7.0 CRD schemas, with unknown fields as errors.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.helm.conftest import CHART, VALUE_SETS, one, render, run_helm, template_args
from tests.k8s_schema import validate_cr

K8S_VERSION = "1.35.0"
RAY_KINDS = {"RayCluster", "RayJob", "RayService", "RayCronJob"}


def test_lint_strict(value_set: str) -> None:
    args = ["lint", "--strict", str(CHART), "--namespace", "shipyard"]
    for path in VALUE_SETS[value_set]:
        args += ["--values", str(path)]
    done = run_helm(*args)
    assert done.returncode == 0, done.stdout + done.stderr


def test_default_install_has_every_part() -> None:
    kinds = {(o["kind"], o["metadata"]["name"]) for o in render()}
    for expected in [
        ("RayCluster", "shipyard-jobs"), ("RayService", "shipyard-serve"),
        ("Deployment", "shipyard-mlflow"), ("Service", "shipyard-mlflow"),
        ("PersistentVolumeClaim", "shipyard-mlflow-artifacts"),
        ("StatefulSet", "shipyard-postgres"), ("Deployment", "shipyard-redis"),
        ("ConfigMap", "shipyard-feast"), ("Secret", "shipyard-ray-token"),
        ("Role", "shipyard-canary-controller"), ("RoleBinding", "shipyard-canary-controller"),
        ("NetworkPolicy", "shipyard-default-deny"), ("PersistentVolumeClaim", "shipyard-data"),
    ]:  # fmt: skip
        assert expected in kinds, f"{expected} missing from the default install"
    # The pipeline RayJobs and the feature server are opt-in.
    assert not any(k == "RayJob" for k, _ in kinds)
    assert ("Deployment", "shipyard-feast") not in kinds


def test_every_object_validates(value_set: str) -> None:
    objects = render(value_set)
    assert objects
    for obj in objects:
        where = f"{obj['kind']} {obj['metadata']['name']} ({value_set})"
        if obj["kind"] in RAY_KINDS:
            errors = validate_cr(obj)
            assert not errors, f"{where} against the KubeRay v1.7.0 CRD:\n" + "\n".join(errors)
        else:
            try:
                kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{where} against Kubernetes {K8S_VERSION}: {exc.message} "
                            f"at {list(exc.path)}")  # fmt: skip


# -- policies ----------------------------------------------------------------------


def pod_specs(obj: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], bool]]:
    """(where, pod spec, long-running) for every pod an object makes."""
    kind, name, spec = obj["kind"], obj["metadata"]["name"], obj.get("spec", {})
    if kind in ("Deployment", "StatefulSet"):
        yield f"{kind} {name}", spec["template"]["spec"], True
    cluster = None
    if kind == "RayCluster":
        cluster = spec
    elif kind == "RayService":
        cluster = spec["rayClusterConfig"]
    elif kind in ("RayJob", "RayCronJob"):
        job = spec["jobTemplate"] if kind == "RayCronJob" else spec
        cluster = job["rayClusterSpec"]
        yield f"{kind} {name} submitter", job["submitterPodTemplate"]["spec"], False
    if cluster is not None:
        yield f"{kind} {name} head", cluster["headGroupSpec"]["template"]["spec"], True
        for group in cluster["workerGroupSpecs"]:
            yield f"{kind} {name} group {group['groupName']}", group["template"]["spec"], True


def test_pods_meet_the_restricted_pod_security_standard(value_set: str) -> None:
    pods = [p for o in render(value_set) for p in pod_specs(o)]
    assert len(pods) >= 6
    for where, pod, _ in pods:
        psc = pod.get("securityContext", {})
        assert psc.get("runAsNonRoot") is True, f"{where}: runAsNonRoot"
        assert psc.get("runAsUser", 1) != 0, f"{where}: runs as root"
        assert psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", f"{where}: seccomp"
        assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
        for vol in pod.get("volumes", []):
            assert "hostPath" not in vol, f"{where}: hostPath volume {vol['name']}"
        for c in pod["containers"] + pod.get("initContainers", []):
            csc = c.get("securityContext", {})
            cw = f"{where} container {c['name']}"
            assert csc.get("allowPrivilegeEscalation") is False, f"{cw}: privilege escalation"
            assert csc.get("capabilities", {}).get("drop") == ["ALL"], f"{cw}: capabilities"
            assert not csc.get("privileged"), f"{cw}: privileged"
            assert csc.get("runAsUser", 1) != 0, f"{cw}: runs as root"


def test_images_are_pinned_and_containers_bounded(value_set: str) -> None:
    for obj in render(value_set):
        for where, pod, long_running in pod_specs(obj):
            for c in pod["containers"]:
                cw = f"{where} container {c['name']}"
                image = c["image"]
                tag = image.rsplit(":", 1)[-1] if ":" in image.split("/")[-1] else ""
                assert tag and tag != "latest", f"{cw}: image {image} has no pinned tag"
                res = c.get("resources", {})
                for part in ("requests", "limits"):
                    assert {"cpu", "memory"} <= set(res.get(part, {})), f"{cw}: {part}"
                if long_running:
                    assert "readinessProbe" in c and "livenessProbe" in c, f"{cw}: probes"
        if obj["kind"] in RAY_KINDS:  # the autoscaler sidecar KubeRay adds
            spec = obj["spec"].get("jobTemplate") or obj["spec"]  # a RayCronJob's RayJob
            cluster = spec.get("rayClusterConfig") or spec.get("rayClusterSpec") or spec
            if cluster.get("enableInTreeAutoscaling"):
                opts = cluster["autoscalerOptions"]
                assert {"requests", "limits"} <= set(opts["resources"])
                assert opts["securityContext"]["allowPrivilegeEscalation"] is False


def _secret_values(objects: list[dict[str, Any]]) -> set[str]:
    values = set()
    for obj in objects:
        if obj["kind"] == "Secret":
            for v in (obj.get("data") or {}).values():
                values.add(base64.b64decode(v).decode())
            values.update((obj.get("stringData") or {}).values())
    return values


def test_no_plain_text_secrets(value_set: str) -> None:
    objects = render(value_set)
    secrets = _secret_values(objects)
    for obj in objects:
        if obj["kind"] == "Secret":
            continue
        text = json.dumps(obj)
        for value in secrets:
            assert value not in text, f"{obj['kind']} {obj['metadata']['name']} holds a secret"
        assert not re.search(r"://[^/\s:@]+:(?!\$\(|\$\{)[^@\s/]+@", text), \
            f"{obj['kind']} {obj['metadata']['name']} has a URL with a literal password"  # fmt: skip
        for where, pod, _ in pod_specs(obj):
            for c in pod["containers"]:
                for env in c.get("env", []):
                    if re.search(r"PASSWORD|TOKEN|SECRET", env["name"]):
                        assert "valueFrom" in env, f"{where}: {env['name']} is not from a Secret"


def test_network_policies_cover_every_pod() -> None:
    objects = render("ci")
    policies = [o for o in objects if o["kind"] == "NetworkPolicy"]
    deny = one(policies, "NetworkPolicy", "shipyard-default-deny")["spec"]
    assert deny["podSelector"]["matchLabels"] == {"app.kubernetes.io/instance": "shipyard"}
    assert deny["policyTypes"] == ["Ingress"] and "ingress" not in deny
    for obj in objects:
        for where, pod_spec, _ in pod_specs(obj):
            del pod_spec
            kind = obj["kind"]
            tmpl = obj["spec"].get("template") if kind in ("Deployment", "StatefulSet") else None
            labels = (tmpl or {}).get("metadata", {}).get("labels") if tmpl else None
            if labels is None:
                continue  # Ray pods: covered by the ray policy, checked below
            allowed = [p for p in policies if p["metadata"]["name"] != "shipyard-default-deny"
                       and all(labels.get(k) == v for k, v in
                               p["spec"]["podSelector"]["matchLabels"].items())]  # fmt: skip
            assert allowed, f"{where}: no policy lets anything reach it"
    ray_pods = {"app.kubernetes.io/instance": "shipyard", "ray.io/is-ray-node": "yes"}
    mlflow = one(policies, "NetworkPolicy", "shipyard-mlflow")["spec"]["ingress"]
    assert any(src.get("podSelector", {}).get("matchLabels") == ray_pods
               for rule in mlflow for src in rule.get("from", [])), "Ray pods cannot reach MLflow"  # fmt: skip
    ray = one(policies, "NetworkPolicy", "shipyard-ray")["spec"]["ingress"]
    operator = next(r for r in ray if any("namespaceSelector" in f and f["namespaceSelector"]
                                          for f in r.get("from", [])))  # fmt: skip
    assert {p["port"] for p in operator["ports"]} == {8265, 8000}  # dashboards, proxy health
    postgres = one(policies, "NetworkPolicy", "shipyard-postgres")["spec"]["ingress"]
    assert [p["port"] for p in postgres[0]["ports"]] == [5432]
    assert all("podSelector" in src for src in postgres[0]["from"]), "postgres open to all"
    redis = one(policies, "NetworkPolicy", "shipyard-redis")["spec"]["ingress"]
    assert all("podSelector" in src for src in redis[0]["from"]), "redis open to all"


def test_only_the_serving_pods_may_patch_the_rayservice() -> None:
    objects = render()
    role = one(objects, "Role")
    assert role["rules"] == [{"apiGroups": ["ray.io"], "resources": ["rayservices"],
                              "resourceNames": ["shipyard-serve"], "verbs": ["get", "patch"]}]  # fmt: skip
    binding = one(objects, "RoleBinding")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "shipyard-serve",
                                    "namespace": "shipyard"}]  # fmt: skip
    assert not [o for o in objects if o["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    objects = render("ci")
    for obj in objects:
        for where, pod, _ in pod_specs(obj):
            ray = obj["kind"] in RAY_KINDS and "submitter" not in where
            serving = obj["kind"] == "RayService"
            head = ray and where.endswith(" head")
            expected = "shipyard-serve" if serving else ("shipyard-ray" if ray else "shipyard")
            assert pod["serviceAccountName"] == expected, where
            # a token only where the API is called: KubeRay's autoscaler sidecar on the
            # heads, the canary controller anywhere in the serving cluster
            assert pod.get("automountServiceAccountToken") is (serving or head), where
    accounts = {o["metadata"]["name"]: o for o in objects if o["kind"] == "ServiceAccount"}
    assert set(accounts) == {"shipyard", "shipyard-ray", "shipyard-serve"}
    assert all(a["automountServiceAccountToken"] is False for a in accounts.values())


def test_upgrade_strategy_follows_the_gateway_class() -> None:
    assert one(render(), "RayService")["spec"]["upgradeStrategy"] == {"type": "NewCluster"}
    incremental = one(
        render(
            **{
                "serve.upgradeStrategy.gatewayClassName": "istio",
                "serve.upgradeStrategy.operatorFeatureGate": "true",
            }
        ),
        "RayService",
    )
    strategy = incremental["spec"]["upgradeStrategy"]
    assert strategy["type"] == "NewClusterWithIncrementalUpgrade"
    assert strategy["clusterUpgradeOptions"]["gatewayClassName"] == "istio"


def test_ray_clusters_authenticate_and_autoscale() -> None:
    objects = render("ci")
    for obj in objects:
        if obj["kind"] not in RAY_KINDS:
            continue
        spec = obj["spec"].get("jobTemplate") or obj["spec"]  # a RayCronJob's RayJob
        cluster = spec.get("rayClusterConfig") or spec.get("rayClusterSpec") or spec
        assert cluster["authOptions"] == {"mode": "token", "secretName": "shipyard-ray-token"}
        assert cluster["enableInTreeAutoscaling"] is True
        # KubeRay refuses a head declaring REDIS_PASSWORD when GCS fault tolerance is on
        head = cluster["headGroupSpec"]["template"]["spec"]["containers"][0]
        assert "REDIS_PASSWORD" not in {e["name"] for e in head["env"]}
    gcs = one(objects, "RayCluster")["spec"]["gcsFaultToleranceOptions"]
    assert gcs["redisAddress"] == "shipyard-redis:6379"
    assert gcs["redisPassword"]["valueFrom"]["secretKeyRef"]["name"] == "shipyard-redis"
    for job in (o for o in objects if o["kind"] == "RayJob"):
        spec = job["spec"]
        assert spec["shutdownAfterJobFinishes"] is True
        for key in ("ttlSecondsAfterFinished", "activeDeadlineSeconds", "backoffLimit"):
            assert isinstance(spec[key], int), f"{job['metadata']['name']}: {key}"


def test_kind_values_use_the_mapped_node_ports_and_shared_storage() -> None:
    objects = render("kind")
    ports = {(o["metadata"]["name"], p.get("nodePort")) for o in objects if o["kind"] == "Service"
             for p in o["spec"]["ports"]}  # fmt: skip
    assert ("shipyard-mlflow", 30500) in ports
    assert ("shipyard-jobs-dashboard", 30265) in ports
    assert ("shipyard-serve-dashboard", 30266) in ports
    serve_svc = one(objects, "Service", "shipyard-serve-http")["spec"]
    assert serve_svc["type"] == "NodePort" and serve_svc["ports"][0]["nodePort"] == 30800
    # the pods KubeRay marks ready to serve (its own serve-svc keeps no nodePort)
    assert serve_svc["selector"] == {
        "app.kubernetes.io/instance": "shipyard",
        "ray.io/serve": "true",
    }
    volume = one(objects, "PersistentVolume")["spec"]
    assert volume["hostPath"]["path"] == "/var/shipyard"
    assert "ReadWriteMany" in volume["accessModes"]
    claim = one(objects, "PersistentVolumeClaim", "shipyard-data")["spec"]
    assert claim["volumeName"] == one(objects, "PersistentVolume")["metadata"]["name"]


def test_external_services_replace_the_chart_ones() -> None:
    objects = render("eks")
    names = {(o["kind"], o["metadata"]["name"]) for o in objects}
    assert ("StatefulSet", "shipyard-postgres") not in names
    assert ("Deployment", "shipyard-redis") not in names
    assert ("Secret", "shipyard-postgres") not in names
    env = {e["name"]: e for e in one(objects, "Deployment", "shipyard-mlflow")["spec"]["template"][
        "spec"]["containers"][0]["env"]}  # fmt: skip
    assert "shipyard.abcdefghijkl.us-east-1.rds.amazonaws.com:5432" in \
        env["MLFLOW_BACKEND_STORE_URI"]["value"]  # fmt: skip
    assert env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "shipyard-rds",
                                                                     "key": "password"}  # fmt: skip
    assert env["MLFLOW_ARTIFACTS_DESTINATION"]["value"] == "s3://my-shipyard-bucket/mlflow"
    assert not any(o["kind"] == "PersistentVolumeClaim" and "artifacts" in o["metadata"]["name"]
                   for o in objects)  # fmt: skip


# -- bad values fail at render time, naming the values path ---------------------------


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        ({"ray.workerGroups.cpu.replicas": "-1"}, "/ray/workerGroups/cpu/replicas"),
        ({"serve.workerGroups.serve.maxReplicas": "-2"}, "/serve/workerGroups/serve/maxReplicas"),
        ({"ray.workerGroups.cpu.replicas": "9"}, "values.ray.workerGroups.cpu: replicas (9)"),
        ({"postgres.enabled": "false", "postgres.external.host": "db.example.com"},
         "values.postgres.existingSecret is required"),
        ({"postgres.enabled": "false"}, "values.postgres.external.host is required"),
        ({"redis.enabled": "false", "redis.external.host": "r"},
         "values.redis.existingSecret is required"),
        ({"profile": "local"}, "/profile"),
        ({"image.tag": "latest"}, "values.image.tag"),
        ({"serve.httpPort": "0"}, "/serve/httpPort"),
        ({"mlflw.port": "5000"}, "mlflw"),
        ({"mlflow.artifacts.destination": "ftp://x"}, "/mlflow/artifacts/destination"),
        ({"serve.models": [{"name": "fraud-detector", "stableVersion": "v3"}]},
         "/serve/models/0/stableVersion"),
        ({"serve.models": [{"name": "fraud-detector", "replicas": 2}]},
         "at '/serve/models/0': additional properties 'replicas' not allowed"),
        # `--set` on one entry replaces the whole list with an entry that has no name
        ({"serve.models[0].stableVersion": "3"}, "at '/serve/models/0': missing property 'name'"),
        ({"serve.upgradeStrategy.gatewayClassName": "istio"},
         "values.serve.upgradeStrategy.gatewayClassName (NewClusterWithIncrementalUpgrade) needs"),
        ({"jobs.features.enabled": "true", "jobs.runId": "a-very-long-run-id-1",
          "fullnameOverride": "a-release-name-of-thirty-chars"}, "longer than KubeRay's 47"),
    ],
)  # fmt: skip
def test_bad_values_fail_naming_the_path(sets: dict[str, str], message: str) -> None:
    done = run_helm(*template_args([], sets))
    assert done.returncode != 0, f"{sets} rendered"
    assert message in done.stderr, done.stderr


@pytest.mark.parametrize(
    ("models", "schema_says", "template_says"),
    [
        ([{"name": "fraud-detector"}, {"name": "customer-spend"},
          {"name": "fraud-detector", "stableVersion": "2"}], None,
         'values.serve.models lists "fraud-detector" twice (entries 0 and 2)'),
        ([{"name": "fraud-detector"}, {"name": "oip-v2"}], None,
         'values.serve.models[1].name "oip-v2" is reserved'),
        ([{"name": "v2"}], None, 'values.serve.models[0].name "v2" is reserved'),
        ([], "at '/serve/models': minItems", "values.serve.models must list at least one model"),
        ([{"name": "fraud detector"}], "at '/serve/models/0/name'",
         'values.serve.models[0].name "fraud detector" is not a model name'),
        # the name also keys the rollout annotation (rollout.shipyard.io/<name>)
        ([{"name": "fraud-"}], "at '/serve/models/0/name'",
         'values.serve.models[0].name "fraud-" is not a model name'),
        ([{"name": "m" * 64}], "at '/serve/models/0/name'", "is not a model name"),
    ],
)  # fmt: skip
def test_bad_models_fail_naming_the_path(models: list[dict[str, str]], schema_says: str | None,
                                          template_says: str) -> None:  # fmt: skip
    """Each model is one Serve application and route: names are unique, valid and not
    the OIP gateway's. The schema refuses what it can express; the template refuses all
    of it again, for installs that skip the schema."""
    args = template_args([], {"serve.models": models})
    done = run_helm(*args)
    assert done.returncode != 0, f"{models} rendered"
    assert (schema_says or template_says) in done.stderr, done.stderr
    done = run_helm(*args, "--skip-schema-validation")
    assert done.returncode != 0, f"{models} rendered without the schema"
    assert template_says in done.stderr, done.stderr


def test_notes_list_every_models_endpoint() -> None:
    """NOTES.txt, as `helm install` prints it: one endpoint per model, and the hint to
    deploy one for each model installed without a stable version."""
    args = template_args([CHART / "values-kind.yaml"],
                         {"serve.models": [{"name": "fraud-detector", "stableVersion": "3"},
                                           {"name": "customer-spend", "stableVersion": ""},
                                           {"name": "churn"}]})  # fmt: skip
    args[0] = "install"
    done = run_helm(*args, "--dry-run=client")
    assert done.returncode == 0, done.stderr
    notes = done.stdout.partition("NOTES:")[2]
    for model in ("fraud-detector", "customer-spend", "churn"):
        assert f"curl -s http://127.0.0.1:30800/{model}/healthz" in notes, notes
    hints = re.findall(r"then `shipyard deploy (\S+)@champion`", notes)
    assert hints == ["customer-spend", "churn"], notes


def _exported_metrics() -> set[str]:
    """The Prometheus names of the Ray metrics Shipyard's code defines (Ray adds the
    ``ray_`` prefix, ``_total`` to counters and the histogram's series)."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    names: set[str] = set()
    for path in [root / "services/router/app.py", root / "platform/shipyard/inference_log.py"]:
        for kind, name in re.findall(r'\b(Counter|Histogram|Gauge)\(\s*"(\w+)"', path.read_text()):
            suffixes = {"Counter": ["_total"], "Gauge": [""],
                        "Histogram": ["_bucket", "_count", "_sum"]}[kind]  # fmt: skip
            names |= {f"ray_{name}{s}" for s in suffixes}
    return names


def test_the_grafana_dashboard_ships_for_the_sidecar_and_queries_what_is_exported() -> None:
    cm = one(render(), "ConfigMap", "shipyard-grafana-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(cm["data"]["shipyard-models.json"])
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 10
    used = {m for e in exprs for m in re.findall(r"\b(ray_shipyard_\w+)", e)}
    exported = _exported_metrics()
    assert used and used <= exported, f"queried but never exported: {sorted(used - exported)}"
    panels = {p["title"] for p in dashboard["panels"]}
    assert {"Error rate (5xx) by variant", "Latency p50 / p95 by variant",
            "Drifted feature share by version", "Live quality on the labels known so far"} <= panels  # fmt: skip
    folder = render(**{"serve.grafanaDashboard.annotations.grafana_folder": "Shipyard"})
    cm = one(folder, "ConfigMap", "shipyard-grafana-dashboard")
    assert cm["metadata"]["annotations"] == {"grafana_folder": "Shipyard"}
    off = render(**{"serve.grafanaDashboard.enabled": "false"})
    assert not [o for o in off if o["metadata"]["name"] == "shipyard-grafana-dashboard"]


def test_retraining_is_a_ray_cron_job_only_behind_its_feature_gate() -> None:
    objects = render("ci")
    cron = one(objects, "RayCronJob", "shipyard-retraining")
    assert cron["spec"]["schedule"] == "0 3 * * *" and cron["spec"]["timeZone"] == "Europe/Berlin"
    job = cron["spec"]["jobTemplate"]
    entry = job["entrypoint"]
    assert entry.startswith("shipyard monitor check 'fraud-detector'") or entry.startswith(
        'shipyard monitor check "fraud-detector"')  # fmt: skip
    assert "rc -eq 10" in entry
    steps = entry.split("then ", 1)[1].split(";", 1)[0].split(" && ")
    assert steps == ["shipyard features build --local", "shipyard features apply",
                     "shipyard features materialize --local",
                     "shipyard train --local --config /etc/shipyard/train/train.yaml"]  # fmt: skip
    head = job["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    volume = next(v for v in head["volumes"] if v["name"] == "train-config")
    assert volume["configMap"]["name"] == "shipyard-retrain"
    config = yaml.safe_load(one(objects, "ConfigMap", "shipyard-retrain")["data"]["train.yaml"])
    assert config["window_days"] == 28 and config["window_lag_days"] == 7 and "epochs" in config
    one_off = one(objects, "ConfigMap", "shipyard-train-ci")  # the one-off job keeps its own
    assert "window_days" not in yaml.safe_load(one_off["data"]["train.yaml"])
    every = one(render("ci", **{"jobs.retraining.ifAlert": "",
                                "jobs.retraining.refreshFeatures": "false"}), "RayCronJob")  # fmt: skip
    assert every["spec"]["jobTemplate"]["entrypoint"].startswith("shipyard train --local")
    assert not [o for o in render() if o["kind"] == "RayCronJob"]  # off by default
    done = run_helm(*template_args(VALUE_SETS["default"], {"jobs.retraining.enabled": "true"}))
    assert done.returncode != 0 and "RayCronJob feature gate" in done.stderr
