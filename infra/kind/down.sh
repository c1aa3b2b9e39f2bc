#!/usr/bin/env bash
# Remove what infra/kind/up.sh made. Idempotent: nothing there is not an error.
#
#   infra/kind/down.sh                  # delete the whole kind cluster
#   infra/kind/down.sh --keep-cluster   # uninstall Shipyard and delete its namespace only
#
# The shared data folder /tmp/shipyard-kind-data stays; delete it by hand if unwanted.
set -euo pipefail

KIND_CLUSTER_NAME="${KIND_CLUSTER_NAME:-shipyard}"
SHIPYARD_NAMESPACE="${SHIPYARD_NAMESPACE:-shipyard}"
SHIPYARD_RELEASE="${SHIPYARD_RELEASE:-shipyard}"
SHIPYARD_WAIT_TIMEOUT="${SHIPYARD_WAIT_TIMEOUT:-600s}"
CONTEXT="kind-${KIND_CLUSTER_NAME}"

keep_cluster=0
case "${1:-}" in
  "") ;;
  --keep-cluster) keep_cluster=1 ;;
  -h | --help)
    sed -n '2,7p' "$0"
    exit 0
    ;;
  *)
    echo "error: unknown argument $1; usage: $0 [--keep-cluster]" >&2
    exit 2
    ;;
esac

for tool in kind kubectl helm; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "error: $tool is not on PATH (needed to tear down the kind cluster)" >&2
    exit 1
  fi
done

if ! kind get clusters 2>/dev/null | grep -qx "$KIND_CLUSTER_NAME"; then
  echo "no kind cluster named $KIND_CLUSTER_NAME; nothing to do"
  exit 0
fi

if [[ $keep_cluster -eq 0 ]]; then
  kind delete cluster --name "$KIND_CLUSTER_NAME"
  exit 0
fi

if helm status "$SHIPYARD_RELEASE" --kube-context "$CONTEXT" -n "$SHIPYARD_NAMESPACE" \
  >/dev/null 2>&1; then
  helm uninstall "$SHIPYARD_RELEASE" --kube-context "$CONTEXT" -n "$SHIPYARD_NAMESPACE" \
    --wait --timeout "$SHIPYARD_WAIT_TIMEOUT"
else
  echo "release $SHIPYARD_RELEASE is not installed in namespace $SHIPYARD_NAMESPACE"
fi
# The namespace also holds what the e2e tests created (RayJobs); KubeRay, still running
# in kuberay-system, removes their clusters as the namespace goes.
kubectl --context "$CONTEXT" delete namespace "$SHIPYARD_NAMESPACE" --ignore-not-found \
  --wait --timeout "$SHIPYARD_WAIT_TIMEOUT"
echo "Shipyard removed from kind cluster $KIND_CLUSTER_NAME; the cluster and KubeRay remain"
