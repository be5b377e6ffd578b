#!/usr/bin/env bash
# Benchmark the control plane's API (#15): reads under 100 concurrent
# clients, 200 event-stream subscribers through a canary, a data-plane
# kill -9 under load, 1,000 idle subscribers.
#
#   bash bench/api.sh [--clients 100] [--seconds 10] [--subscribers 200]
#                     [--idle 1000] [--no-build | --hatoba BIN]
#                     [--baseline OLD_BIN]
#
# --baseline: a release `hatoba` built from before the control plane v2
# (commit 9f48ca1: `git worktree add /tmp/base 9f48ca1 && cd /tmp/base &&
# cargo build --release`): the same reads on its API first, side by side.
#
# Not a test and not run by CI. Needs Python 3 with aiohttp (installed with
# pip when missing). Builds hatoba in release, runs `hatoba up` in a
# temporary state directory (everything on 127.0.0.1) and prints the
# figures; raw ones in target/bench/api-<date>/. Exit 0: every goal met.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=bench/lib/common.sh
source "$ROOT/bench/lib/common.sh"

BUILD=1
HATOBA=""
ARGS=()
while (( $# )); do
    case $1 in
        --clients|--seconds|--subscribers|--idle|--baseline) ARGS+=("$1" "${2:?$1 needs a value}"); shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --hatoba) HATOBA=${2:?--hatoba needs a path}; BUILD=0; shift 2 ;;
        -h|--help) sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument: $1" ;;
    esac
done

prepare_aiohttp_bench

OUT=$TARGET_DIR/bench/api-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUT"
STATE=$(mktemp -d "${TMPDIR:-/tmp}/hatoba-api.XXXXXX")
trap 'stop_hatoba_up "" "$STATE" "$OUT"' EXIT
log "results in $OUT"
python3 "$ROOT/bench/lib/api_run.py" --hatoba "$HATOBA" --out "$OUT" --state "$STATE" "${ARGS[@]}" |
    tee "$OUT/table.txt"
exit "${PIPESTATUS[0]}"
