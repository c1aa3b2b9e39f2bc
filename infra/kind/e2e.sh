#!/usr/bin/env bash
# The kind end-to-end test: set the cluster up (infra/kind/up.sh, idempotent), then run
# tests/e2e against it. Extra arguments go to pytest; the exit code is pytest's.
#
#   infra/kind/e2e.sh                       # up + the whole loop
#   SHIPYARD_E2E_SKIP_UP=1 infra/kind/e2e.sh -x   # the cluster is already up
#
# Knobs: KIND_CLUSTER_NAME, SHIPYARD_NAMESPACE, SHIPYARD_RELEASE, SHIPYARD_IMAGE (as up.sh),
# SHIPYARD_E2E_TIMEOUT (seconds per step, default 900), SHIPYARD_E2E_LOGS (where failed
# tests dump cluster logs, default /tmp/shipyard-e2e-logs).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

export KIND_CLUSTER_NAME="${KIND_CLUSTER_NAME:-shipyard}"
export SHIPYARD_NAMESPACE="${SHIPYARD_NAMESPACE:-shipyard}"
export SHIPYARD_RELEASE="${SHIPYARD_RELEASE:-shipyard}"
export SHIPYARD_IMAGE="${SHIPYARD_IMAGE:-shipyard/platform:dev}"
export SHIPYARD_E2E_TIMEOUT="${SHIPYARD_E2E_TIMEOUT:-900}"
export SHIPYARD_E2E_LOGS="${SHIPYARD_E2E_LOGS:-/tmp/shipyard-e2e-logs}"
export SHIPYARD_E2E=1 # the tests are opt-in; this is the opt-in

if [[ "${SHIPYARD_E2E_SKIP_UP:-0}" != 1 ]]; then
  infra/kind/up.sh
fi

if [[ ! -x .venv/bin/pytest ]]; then
  echo "creating .venv with the test extras (make install-test)"
  make install-test
fi

# Live progress of the long test (its log lines), and the skip reasons if any.
exec .venv/bin/python -m pytest -m kind tests/e2e -v -rs --log-cli-level=INFO "$@"
