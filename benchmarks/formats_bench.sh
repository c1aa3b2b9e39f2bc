#!/usr/bin/env bash
# The three request formats of one served model, side by side in one run, with wrk
# (a compiled load generator: it does not eat the CPU it measures):
#
#   benchmarks/formats_bench.sh [BASE_URL] [MODEL] [SECONDS]
#
# Needs a model deployed (e.g. after `make demo`: http://127.0.0.1:8000 fraud-detector)
# and `wrk` (Debian: apt-get install wrk). Sends one valid fraud transaction (online
# features from Feast) as Shipyard's `POST /MODEL/predict`, as an OIP v2 request on the
# application's own route, and as the same OIP request through the `/v2` gateway, at
# concurrency 1 and 16. Results: benchmarks/results/formats.txt.
set -euo pipefail
BASE=${1:-http://127.0.0.1:8000}
MODEL=${2:-fraud-detector}
SECONDS_PER_CELL=${3:-10}
OUT="$(dirname "$0")/results/formats.txt"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
command -v wrk >/dev/null || { echo "error: wrk is not installed (apt-get install wrk)" >&2; exit 2; }

TX='"customer_id": "c_0001152", "merchant_id": "m_000323", "amount": 55.2, "category": "grocery", "country": "US", "timestamp": "2026-08-14T10:00:00Z"'
tensor() { printf '{"name": "%s", "shape": [1], "datatype": "%s", "data": [%s]}' "$1" "$2" "$3"; }
OIP="{\"inputs\": [$(tensor customer_id BYTES '"c_0001152"'), $(tensor merchant_id BYTES '"m_000323"'), $(tensor amount FP64 55.2), $(tensor category BYTES '"grocery"'), $(tensor country BYTES '"US"'), $(tensor timestamp BYTES '"2026-08-14T10:00:00Z"')]}"
script() { printf 'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\nwrk.body = [[%s]]\n' "$1" > "$TMP/$2.lua"; }
script "{\"transaction_id\": \"t1\", $TX}" predict
script "$OIP" oip

{
  echo "# $0 $* ($(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cores, wrk -t1, ${SECONDS_PER_CELL}s per cell)"
  printf '%-58s %4s %10s %10s %10s %8s\n' target c req/s p50 p99 non2xx
  for c in 1 16; do
    for target in "predict $BASE/$MODEL/predict" "oip $BASE/$MODEL/v2/models/$MODEL/infer" \
                  "oip $BASE/v2/models/$MODEL/infer"; do
      set -- $target
      wrk -t1 -c"$c" -d"${SECONDS_PER_CELL}s" --latency -s "$TMP/$1.lua" "$2" > "$TMP/out"
      rps=$(awk '/Requests\/sec/ {print $2}' "$TMP/out")
      p50=$(awk '$1 == "50%" {print $2}' "$TMP/out")
      p99=$(awk '$1 == "99%" {print $2}' "$TMP/out")
      bad=$(awk '/Non-2xx/ {print $NF}' "$TMP/out")
      printf '%-58s %4s %10s %10s %10s %8s\n' "${2#"$BASE"}" "$c" "$rps" "$p50" "$p99" "${bad:-0}"
    done
  done
} | tee "$OUT"
