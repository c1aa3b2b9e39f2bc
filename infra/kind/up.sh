#!/usr/bin/env bash
# Shipyard on a local kind cluster: create the cluster, build and load the platform
# image, install the KubeRay operator (it brings the CRDs) and the Shipyard chart,
# then wait until MLflow, the jobs RayCluster and the serving RayService are ready.
# Idempotent: run it again to reuse the cluster and upgrade the releases.
#
#   infra/kind/up.sh                      # from any directory
#   KIND_CLUSTER_NAME=dev SHIPYARD_IMAGE=shipyard/platform:mine infra/kind/up.sh
#
# Needs docker, kind, helm and kubectl. infra/kind/down.sh removes it again.
set -euo pipefail

KIND_CLUSTER_NAME="${KIND_CLUSTER_NAME:-shipyard}"
SHIPYARD_NAMESPACE="${SHIPYARD_NAMESPACE:-shipyard}"
SHIPYARD_RELEASE="${SHIPYARD_RELEASE:-shipyard}"
SHIPYARD_IMAGE="${SHIPYARD_IMAGE:-shipyard/platform:dev}"
KUBERAY_VERSION="${KUBERAY_VERSION:-1.7.0}"
SHIPYARD_WAIT_TIMEOUT="${SHIPYARD_WAIT_TIMEOUT:-600s}"
SHIPYARD_PSS="${SHIPYARD_PSS-restricted}" # Pod Security level the namespace enforces; empty: none

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

DATA_DIR=/tmp/shipyard-kind-data # infra/kind/cluster.yaml mounts it into every node
CONTEXT="kind-${KIND_CLUSTER_NAME}"
NS="$SHIPYARD_NAMESPACE"
CHART=deploy/helm/shipyard
STEPS=8

# The chart's fullname: the release name, plus "-shipyard" unless it already says so.
if [[ "$SHIPYARD_RELEASE" == *shipyard* ]]; then
  FULLNAME="$SHIPYARD_RELEASE"
else
  FULLNAME="${SHIPYARD_RELEASE}-shipyard"
fi
FULLNAME="${FULLNAME:0:40}" # the chart truncates to 40 characters
FULLNAME="${FULLNAME%-}"

# shipyard/platform:dev -> repository shipyard/platform, tag dev (a registry port is
# not a tag: localhost:5000/platform has none, so it gets `dev`).
if [[ "${SHIPYARD_IMAGE##*/}" == *:* ]]; then
  IMAGE_REPO="${SHIPYARD_IMAGE%:*}"
  IMAGE_TAG="${SHIPYARD_IMAGE##*:}"
else
  IMAGE_REPO="$SHIPYARD_IMAGE"
  IMAGE_TAG=dev
  SHIPYARD_IMAGE="${IMAGE_REPO}:${IMAGE_TAG}"
fi

# The environment of the shipyard CLI for this cluster (also: up.sh --print-env).
print_env() {
  cat <<EOF
export SHIPYARD_PROFILE=cluster
export SHIPYARD_MLFLOW__TRACKING_URI=http://127.0.0.1:30500
export SHIPYARD_RAY__ADDRESS=http://127.0.0.1:30265
export SHIPYARD_SERVE__BACKEND=kubernetes
export SHIPYARD_SERVE__NAMESPACE=$NS
export SHIPYARD_SERVE__RAYSERVICE=${FULLNAME}-serve
export SHIPYARD_SERVE__URL=http://127.0.0.1:30800
export SHIPYARD_SERVE__DASHBOARD_ADDRESS=http://127.0.0.1:30266
export SHIPYARD_SERVE__TRACKING_URI=http://${FULLNAME}-mlflow:5000
export SHIPYARD_SERVE__FEATURE_REPO=/etc/shipyard/feast
export SHIPYARD_K8S__NAMESPACE=$NS
export SHIPYARD_K8S__JOBS_CLUSTER=${FULLNAME}-jobs
export RAY_AUTH_MODE=token
export RAY_AUTH_TOKEN="\$(kubectl --context $CONTEXT -n $NS get secret ${FULLNAME}-ray-token -o jsonpath='{.data.auth_token}' | base64 -d)"
EOF
}

if [[ "${1:-}" == "--print-env" ]]; then
  print_env
  exit 0
fi

step=0
say() {
  step=$((step + 1))
  echo "[${step}/${STEPS}] $*"
}

k() { kubectl --context "$CONTEXT" "$@"; }

# What a failed wait needs to be understood: the objects, why pods are not ready, and
# the end of every pod's logs (the operator's too: it explains Ray clusters that stall).
diagnose() {
  echo "---- diagnostics: namespace $NS of kind cluster $KIND_CLUSTER_NAME ----" >&2
  k -n "$NS" get pods,rayclusters,rayjobs,rayservices -o wide >&2 || true
  k -n "$NS" get events --sort-by=.lastTimestamp 2>/dev/null | tail -n 40 >&2 || true
  local line pod phase ready
  while IFS=$'\t' read -r pod phase ready; do
    [[ -z "$pod" || "$phase" == Succeeded ]] && continue
    if [[ -z "$ready" || "$ready" == *false* ]]; then
      echo "---- describe pod/$pod ($phase, not ready) ----" >&2
      k -n "$NS" describe pod "$pod" >&2 || true
    fi
  done < <(k -n "$NS" get pods -o \
    jsonpath='{range .items[*]}{.metadata.name}{"\t"}{.status.phase}{"\t"}{.status.containerStatuses[*].ready}{"\n"}{end}' \
    2>/dev/null || true)
  for line in $(k -n "$NS" get pods -o name 2>/dev/null || true); do
    echo "---- logs $line (last 200 lines) ----" >&2
    k -n "$NS" logs "$line" --all-containers --prefix --tail=200 >&2 || true
  done
  echo "---- KubeRay operator (last 200 lines) ----" >&2
  k -n kuberay-system logs deployment/kuberay-operator --tail=200 >&2 || true
}

# From the chart install on, a failure dumps diagnostics before exiting non-zero.
DIAGNOSE=0
on_exit() {
  local rc=$?
  if [[ $rc -ne 0 && $DIAGNOSE -eq 1 ]]; then
    diagnose
    echo "infra/kind/up.sh failed (exit $rc); diagnostics above" >&2
  fi
  exit "$rc"
}
trap on_exit EXIT

say "checking the tools: docker, kind, helm, kubectl"
where() { # bash 3 (macOS) has no associative arrays
  case "$1" in
    docker) echo "https://docs.docker.com/get-docker/" ;;
    kind) echo "https://kind.sigs.k8s.io/docs/user/quick-start/#installation" ;;
    helm) echo "https://helm.sh/docs/intro/install/" ;;
    kubectl) echo "https://kubernetes.io/docs/tasks/tools/" ;;
  esac
}
for tool in docker kind helm kubectl; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "error: $tool is not on PATH; install it: $(where "$tool")" >&2
    exit 1
  fi
done
if ! docker info >/dev/null 2>&1; then
  echo "error: docker is installed but its engine does not answer; start Docker first" >&2
  exit 1
fi

say "shared data folder $DATA_DIR (mounted at /var/shipyard on every node)"
mkdir -p "$DATA_DIR"
chmod 0777 "$DATA_DIR" # pods run as uid 1000, not root

if kind get clusters 2>/dev/null | grep -qx "$KIND_CLUSTER_NAME"; then
  say "kind cluster $KIND_CLUSTER_NAME exists; reusing it"
else
  say "creating kind cluster $KIND_CLUSTER_NAME (infra/kind/cluster.yaml)"
  kind create cluster --name "$KIND_CLUSTER_NAME" --config infra/kind/cluster.yaml \
    --wait "$SHIPYARD_WAIT_TIMEOUT"
fi

say "building the platform image $SHIPYARD_IMAGE (deploy/docker/Dockerfile)"
docker build -f deploy/docker/Dockerfile -t "$SHIPYARD_IMAGE" .

say "loading $SHIPYARD_IMAGE into the kind nodes"
kind load docker-image "$SHIPYARD_IMAGE" --name "$KIND_CLUSTER_NAME"

say "installing the KubeRay operator $KUBERAY_VERSION (namespace kuberay-system)"
if ! out="$(helm repo add kuberay https://ray-project.github.io/kuberay-helm/ 2>&1)"; then
  if [[ "$out" != *"already exists"* ]]; then
    echo "$out" >&2
    exit 1
  fi
fi
helm repo update kuberay
helm upgrade --install kuberay-operator kuberay/kuberay-operator \
  --kube-context "$CONTEXT" --version "$KUBERAY_VERSION" \
  --namespace kuberay-system --create-namespace \
  --wait --timeout "$SHIPYARD_WAIT_TIMEOUT"

DIAGNOSE=1
# The namespace enforces the "restricted" Pod Security Standard, so a pod of the chart
# (or one KubeRay adds) that breaks it is refused at admission, not silently admitted.
k create namespace "$NS" --dry-run=client -o yaml | k apply -f - >/dev/null
if [[ -n "$SHIPYARD_PSS" ]]; then
  k label namespace "$NS" --overwrite \
    "pod-security.kubernetes.io/enforce=$SHIPYARD_PSS" \
    "pod-security.kubernetes.io/warn=$SHIPYARD_PSS" >/dev/null
fi
say "installing Shipyard (release $SHIPYARD_RELEASE, namespace $NS, image $IMAGE_REPO:$IMAGE_TAG)"
helm upgrade --install "$SHIPYARD_RELEASE" "$CHART" \
  --kube-context "$CONTEXT" --namespace "$NS" --create-namespace \
  -f "$CHART/values-kind.yaml" \
  --set image.repository="$IMAGE_REPO" --set image.tag="$IMAGE_TAG" \
  --wait --timeout "$SHIPYARD_WAIT_TIMEOUT"

say "waiting for MLflow, the jobs RayCluster and the serving RayService"
k -n "$NS" wait "deployment/${FULLNAME}-mlflow" --for=condition=Available \
  --timeout="$SHIPYARD_WAIT_TIMEOUT"
k -n "$NS" wait "raycluster/${FULLNAME}-jobs" --for=jsonpath='{.status.state}'=ready \
  --timeout="$SHIPYARD_WAIT_TIMEOUT"
# Ready once every Serve application is RUNNING: one per model in serve.models, and the
# OIP gateway (they start with no model loaded: still RUNNING).
k -n "$NS" wait "rayservice/${FULLNAME}-serve" --for=condition=Ready \
  --timeout="$SHIPYARD_WAIT_TIMEOUT"
DIAGNOSE=0

cat <<EOF

Shipyard is up on kind cluster $KIND_CLUSTER_NAME (context $CONTEXT, namespace $NS).
  MLflow UI            http://127.0.0.1:30500
  Serve endpoints      POST http://127.0.0.1:30800/<model>/predict (one per model in serve.models)
  Ray dashboard, jobs  http://127.0.0.1:30265
  Ray dashboard, serve http://127.0.0.1:30266

Both Ray clusters use token authentication, with one token (the dashboards ask for it):
  kubectl --context $CONTEXT -n $NS get secret ${FULLNAME}-ray-token -o jsonpath='{.data.auth_token}' | base64 -d

To use the shipyard CLI against this cluster:
$(print_env | sed 's/^/  /')
  kubectl config use-context $CONTEXT   # \`shipyard deploy\` / \`canary\` patch the RayService
Then: shipyard deploy fraud-detector@champion; shipyard canary status fraud-detector
End-to-end test: infra/kind/e2e.sh; remove it all: infra/kind/down.sh
EOF
