#!/usr/bin/env bash
# Benchmark long-lived connections through deploys (#18): 50 WebSockets and
# 20 event streams open on an aiohttp app while v2 -> v3 is deployed with
# rolling, canary and blue-green, for an app that closes politely on SIGTERM
# (and is told it drains, `drain.notify`) and one that ignores SIGTERM.
#
#   bash bench/long_lived.sh [--ws 50] [--sse 20] [--drain 8] [--grace 3]
#                            [--only polite,ignore] [--no-build | --hatoba BIN]
#
# Not a test and not run by CI. Needs Python 3 with aiohttp (installed with
# pip when missing). Builds hatoba in release, runs `hatoba up` on a
# generated spec in a temporary state directory (everything on 127.0.0.1),
# prints per service: the deploy's duration with no client and with the
# streams open, messages lost, streams cut before their drain ended,
# streams that reconnected to an old version, and the deploy's outcome.
# Raw figures in target/bench/long-lived-<date>/. Exit 0: every goal met.
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
        --ws|--sse|--drain|--grace|--only) ARGS+=("$1" "${2:?$1 needs a value}"); shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --hatoba) HATOBA=${2:?--hatoba needs a path}; BUILD=0; shift 2 ;;
        -h|--help) sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument: $1" ;;
    esac
done

prepare_aiohttp_bench

OUT=$TARGET_DIR/bench/long-lived-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUT"
STATE=$(mktemp -d "${TMPDIR:-/tmp}/hatoba-ll.XXXXXX")
trap 'stop_hatoba_up "" "$STATE" "$OUT"' EXIT
log "results in $OUT"
python3 "$ROOT/bench/lib/long_lived_run.py" --hatoba "$HATOBA" --out "$OUT" --state "$STATE" "${ARGS[@]}" |
    tee "$OUT/table.txt"
exit "${PIPESTATUS[0]}"
