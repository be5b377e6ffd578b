#!/usr/bin/env bash
# Data-plane memory across many deployments: RSS of `hatoba dataplane`
# after 1 deployment and after N of a tiny rolling service, and the size
# of its /metrics text. Loopback only; everything it starts it stops.
#
#   bench/memory.sh [N] [RETENTION]      (defaults: 100, 1h)
#   HATOBA=target/release/hatoba bench/memory.sh 100 2s
set -euo pipefail
N=${1:-100}
RETENTION=${2:-1h}
HATOBA=${HATOBA:-${CARGO_TARGET_DIR:-target}/debug/hatoba}
HATOBA=$(realpath "$HATOBA")
dir=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$dir/hatoba.yaml" <<YAML
app: bench
services:
  web:
    process: {command: $HATOBA, args: ["demo-app", "--version-label", "\${VERSION}"]}
    replicas: 1
    route: {listen: "127.0.0.1:$port"}
    health:
      readiness: {path: /ready, period: 100ms}
    drain: 100ms
    terminationGracePeriod: 2s
    strategy: {rolling: {maxSurge: 1, maxUnavailable: 0}}
retention: {metrics: $RETENTION}
YAML
"$HATOBA" --state-dir "$dir/state" up -f "$dir/hatoba.yaml" >"$dir/up.log" 2>&1 &
up=$!
cleanup() {
  kill -TERM "$up" 2>/dev/null || true
  wait "$up" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT
for _ in $(seq 100); do [ -s "$dir/state/server.json" ] && break; sleep 0.1; done
dp_pid() { tr -d '\n' <"$dir/state/dataplane.lock"; }
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$(dp_pid)/status"; }
metrics_bytes() {
  local admin
  admin=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["admin"])' "$dir/state/server.json")
  curl -s "http://$admin/metrics" | wc -c
}
deploy() {
  "$HATOBA" --state-dir "$dir/state" deploy web --version "v$1" --wait >/dev/null
  curl -s -o /dev/null "http://127.0.0.1:$port/"
}
deploy 1
echo "after 1 deployment:   data plane RSS $(rss_kb) kB, /metrics $(metrics_bytes) bytes"
for i in $(seq 2 "$N"); do deploy "$i"; done
echo "after $N deployments: data plane RSS $(rss_kb) kB, /metrics $(metrics_bytes) bytes (retention $RETENTION)"
