#!/usr/bin/env bash
# Count the user-space instructions Hatoba's proxy spends per request.
#
#   bash bench/instructions.sh [--requests N] [--top K] [--no-build]
#
# Not a test and not run by CI. Wall-clock figures on a shared 2-core machine
# swing by tens of percent between runs; instruction counts do not. This runs
# `hatoba proxy` (one thread) under `valgrind --tool=callgrind` twice over one
# hatoba-demo-app backend, drives N/3 and then N keep-alive requests through
# it with a Python client, and prints (count(N) - count(N/3)) / (2N/3): the
# instructions of one request, start-up and shutdown cancelled out. The same
# binary gives the same figure to within about 1 %, so two builds can be
# compared by running this on each. It also prints the K functions with the
# most instructions of their own in the larger run. Needs valgrind (apt-get
# install valgrind) and Python 3.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=bench/lib/common.sh
source "$ROOT/bench/lib/common.sh"

REQUESTS=6000
TOP=25
BUILD=1
while (( $# )); do
    case $1 in
        --requests) REQUESTS=${2:?--requests needs a value}; shift 2 ;;
        --top) TOP=${2:?--top needs a value}; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        -h|--help) sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument: $1" ;;
    esac
done
[[ $REQUESTS =~ ^[0-9]+$ ]] && (( REQUESTS >= 300 )) ||
    die "--requests: expected an integer of at least 300, found '$REQUESTS'"
[[ $TOP =~ ^[0-9]+$ ]] || die "--top: expected an integer, found '$TOP'"
command -v valgrind >/dev/null || die "valgrind is missing (apt-get install -y valgrind)"
command -v callgrind_annotate >/dev/null || die "callgrind_annotate is missing (it comes with valgrind)"

case ${CARGO_TARGET_DIR:-} in
    "") TARGET_DIR=$ROOT/target ;;
    /*) TARGET_DIR=$CARGO_TARGET_DIR ;;
    *) TARGET_DIR=$ROOT/$CARGO_TARGET_DIR ;;
esac
if (( BUILD )); then
    log "building: cargo build --release -p hatoba -p hatoba-demo-app"
    cargo build --release -p hatoba -p hatoba-demo-app
fi
HATOBA=$TARGET_DIR/release/hatoba
DEMO=$TARGET_DIR/release/hatoba-demo-app
[[ -x $HATOBA && -x $DEMO ]] || die "$HATOBA or $DEMO not found (build them, or drop --no-build)"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/hatoba-instr.XXXXXX")
PIDS=()
cleanup() {
    local rc=$?
    trap - EXIT
    (( ${#PIDS[@]} )) && stop_pids "${PIDS[@]}"
    rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT

env -u DEMO_CRASH_AFTER -u DEMO_FAIL_HEALTH -u DEMO_STARTUP_DELAY -u DEMO_READY_AFTER \
    -u DEMO_SLOW_SHUTDOWN \
    "$DEMO" --host 127.0.0.1 --port 0 --version-label v1 \
    --error-rate 0 --latency 0s --jitter 0s >"$TMP/backend.log" 2>&1 &
PIDS+=("$!")
line=$(wait_for_line "$TMP/backend.log" 'listening on 127\.0\.0\.1:[0-9]+' 10 "$!") ||
    die "the demo app did not start: $(tail -n 5 "$TMP/backend.log")"
BACKEND=${line##*:}

# load PORT COUNT: COUNT GETs over one keep-alive connection, each checked.
load() {
    python3 - "$1" "$2" <<'EOF'
import http.client, sys
port, count = int(sys.argv[1]), int(sys.argv[2])
c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
for i in range(count):
    c.request("GET", "/")
    r = c.getresponse()
    r.read()
    if r.status != 200:
        sys.exit(f"request {i}: status {r.status}")
EOF
}

# measure COUNT: instructions of a proxy that served COUNT requests.
measure() {
    local count=$1 dir=$TMP/run-$1 port pid
    mkdir -p "$dir"
    port=$(free_port)
    cat >"$dir/routes.toml" <<EOF
listen = "127.0.0.1:$port"
service = "instructions"
threads = 1

[[group]]
role = "stable"
version = "v1"
weight = 100
backends = ["127.0.0.1:$BACKEND"]
EOF
    (cd "$dir" && exec valgrind --tool=callgrind --callgrind-out-file="$dir/callgrind.out" \
        "$HATOBA" proxy --routes "$dir/routes.toml") >"$dir/proxy.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    wait_for_line "$dir/proxy.log" "listening on 127\.0\.0\.1:$port" 120 "$pid" >/dev/null ||
        die "the proxy did not start under valgrind: $(tail -n 5 "$dir/proxy.log")"
    load "$port" 50 # connect, fill the pool: not part of the difference
    load "$port" "$count"
    kill -INT "$pid"
    wait "$pid" || true
    [[ -s $dir/callgrind.out ]] || die "no callgrind output: $(tail -n 5 "$dir/proxy.log")"
    callgrind_annotate "$dir/callgrind.out" 2>/dev/null |
        awk '/PROGRAM TOTALS/ && !done { gsub(",", "", $1); print $1; done = 1 }'
}

small=$(( REQUESTS / 3 ))
log "callgrind run 1: $small requests"
a=$(measure "$small")
log "callgrind run 2: $REQUESTS requests"
b=$(measure "$REQUESTS")
per=$(( (b - a) / (REQUESTS - small) ))
printf 'instructions: %s for %d requests, %s for %d\n' "$a" "$small" "$b" "$REQUESTS"
printf 'per request: %d user-space instructions (one proxy thread)\n' "$per"
if (( TOP > 0 )); then
    printf '\nfunctions with the most instructions of their own (%d requests):\n' "$REQUESTS"
    callgrind_annotate "$TMP/run-$REQUESTS/callgrind.out" 2>/dev/null |
        awk -v top="$TOP" '/^-+$/ { rule++; next } rule >= 3 && NF && shown < top { print; shown++ }'
fi
