#!/usr/bin/env bash
# Benchmark how fast canary analysis catches a bad canary, and that it leaves good ones alone.
#
#   bash bench/detect.sh [--runs 20] [--good-runs 50] [--rate 200] [--services 5]
#                        [--observe 30s] [--connections 16] [--no-build]
#
# Not a test and not run by CI. Under --rate req/s per service through
# Hatoba's proxy, with the canary held at 10 % (1 of 2 instances) and a
# background analysis with the builtin provider (loose thresholds; the
# statistical canary-vs-stable judge does the work), measures, over --runs
# runs each, the time from the canary's first request to 100 % of the
# traffic back on stable for: (a) a canary answering 20 % errors, (b) one
# 300 ms slower, (c) one at 2 % errors against a stable at 0.5 %; and, over
# --good-runs runs of a canary like its stable held --observe at 10 % and
# then aborted, the false aborts. Goals: (a) and (b) median < 5 s, (c)
# median <= 60 s, 0 false aborts, 0 failed requests. Prints the figures
# beside what the same analysis would take with Argo Rollouts' interval and
# failureLimit (computed, not measured). Several services run in parallel
# (--services, each with its own load), each doing its runs one after the
# other. Raw data in target/bench/detect-<date>/. Stops everything it
# started on exit, Ctrl-C included. Exit code: 0 every goal met; 1 a failed
# request or a run that went wrong; 3 clean, but a goal missed.
# See bench/README.md.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=bench/lib/common.sh
source "$ROOT/bench/lib/common.sh"

RUNS=20
GOOD_RUNS=50
RATE=200
SERVICES=5
OBSERVE=30s
CONNS=16
BUILD=1

usage() {
    sed -n '2,23p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

while (( $# )); do
    case $1 in
        --runs) RUNS=${2:?--runs needs a value}; shift 2 ;;
        --runs=*) RUNS=${1#*=}; shift ;;
        --good-runs) GOOD_RUNS=${2:?--good-runs needs a value}; shift 2 ;;
        --good-runs=*) GOOD_RUNS=${1#*=}; shift ;;
        --rate) RATE=${2:?--rate needs a value}; shift 2 ;;
        --rate=*) RATE=${1#*=}; shift ;;
        --services) SERVICES=${2:?--services needs a value}; shift 2 ;;
        --services=*) SERVICES=${1#*=}; shift ;;
        --observe) OBSERVE=${2:?--observe needs a value}; shift 2 ;;
        --observe=*) OBSERVE=${1#*=}; shift ;;
        --connections|-c) CONNS=${2:?--connections needs a value}; shift 2 ;;
        --connections=*) CONNS=${1#*=}; shift ;;
        --no-build) BUILD=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done
[[ $RUNS =~ ^[0-9]+$ ]] || die "--runs: expected a number, found '$RUNS'"
[[ $GOOD_RUNS =~ ^[0-9]+$ ]] || die "--good-runs: expected a number, found '$GOOD_RUNS'"
(( RUNS + GOOD_RUNS > 0 )) || die "--runs and --good-runs are both 0: nothing to do"
[[ $RATE =~ ^[1-9][0-9]*$ ]] || die "--rate: expected a positive integer, found '$RATE'"
[[ $CONNS =~ ^[1-9][0-9]*$ ]] || die "--connections: expected a positive integer, found '$CONNS'"
[[ $SERVICES =~ ^[0-9]+$ ]] && (( SERVICES >= 2 && SERVICES <= 16 )) ||
    die "--services: expected 2 to 16 (at least one clean and one noisy stable), found '$SERVICES'"
[[ $OBSERVE =~ ^([0-9]+)(s|m)$ ]] || die "--observe: expected e.g. 30s, 1m, found '$OBSERVE'"
case ${BASH_REMATCH[2]} in
    s) OBSERVE_S=${BASH_REMATCH[1]} ;;
    m) OBSERVE_S=$(( BASH_REMATCH[1] * 60 )) ;;
esac
(( OBSERVE_S > 0 )) || die "--observe must be above 0"
(( RUNS >= 20 )) || warn "--runs $RUNS is below the 20 runs the issue asks for"
(( GOOD_RUNS >= 50 )) || warn "--good-runs $GOOD_RUNS is below the 50 runs the issue asks for"
(( RATE == 200 )) || warn "--rate $RATE: the goals are stated for 200 req/s"

for tool in python3 curl; do
    command -v "$tool" >/dev/null || die "missing: $tool (apt-get install -y $tool)"
done

case ${CARGO_TARGET_DIR:-} in
    "") TARGET_DIR=$ROOT/target ;;
    /*) TARGET_DIR=$CARGO_TARGET_DIR ;;
    *) TARGET_DIR=$ROOT/$CARGO_TARGET_DIR ;;
esac
DEMO=$TARGET_DIR/release/hatoba-demo-app
HATOBA=$TARGET_DIR/release/hatoba

if (( BUILD )); then
    log "building: cargo build --release -p hatoba -p hatoba-demo-app"
    cargo build --release -p hatoba -p hatoba-demo-app
fi
[[ -x $DEMO ]] || die "$DEMO not found (build it: cargo build --release -p hatoba-demo-app)"
[[ -x $HATOBA ]] || die "$HATOBA not found (build it: cargo build --release -p hatoba)"
for sub in up deploy abort analysis; do
    "$HATOBA" "$sub" --help >/dev/null 2>&1 || die "this hatoba build has no \`hatoba $sub\`"
done

# ------------------------------------------------------- start and stop ----

OUT=$TARGET_DIR/bench/detect-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUT"
# The state directory holds the data plane's unix socket: keep its path short.
STATE=$(mktemp -d "${TMPDIR:-/tmp}/hatoba-detect.XXXXXX")
UP_PID=""
CHILD=""

cleanup() {
    local rc=$? deadline
    trap - EXIT INT TERM
    if [[ -n $CHILD ]] && kill -0 "$CHILD" 2>/dev/null; then
        kill -TERM "$CHILD" 2>/dev/null || true   # the driver stops its loads and commands
        deadline=$(( $(now_ms) + 15000 ))
        while kill -0 "$CHILD" 2>/dev/null && (( $(now_ms) < deadline )); do sleep 0.1; done
        kill -KILL "$CHILD" 2>/dev/null || true
        wait "$CHILD" 2>/dev/null || true
    fi
    if [[ -n $UP_PID ]] && kill -0 "$UP_PID" 2>/dev/null; then
        "$HATOBA" --state-dir "$STATE" history -n 1000 >"$OUT/history.txt" 2>&1 || true
        "$HATOBA" --state-dir "$STATE" history -n 1000 -o json >"$OUT/history.json" 2>/dev/null || true
    fi
    stop_hatoba_up "$UP_PID" "$STATE" "$OUT"
    exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'log "terminated"; exit 143' TERM

# ----------------------------------------------------------------- spec ----

# About 3 in 5 services run a stable at 0.5 % errors ((c) and half the good
# canaries), the others a clean stable ((a), (b) and the other good ones):
# (c)'s runs are the long ones.
NOISY=$(( (SERVICES * 3 + 4) / 5 ))
(( NOISY < SERVICES )) || NOISY=$(( SERVICES - 1 ))
declare -a NAMES=() PORTS=()
for (( i = 1; i <= SERVICES; i++ )); do
    if (( i <= NOISY )); then NAMES+=("noisy$i"); else NAMES+=("clean$(( i - NOISY ))"); fi
    while :; do
        port=$(free_port)
        [[ " ${PORTS[*]} " == *" $port "* ]] || break
    done
    PORTS+=("$port")
done
SVC_ARG=""
for (( i = 0; i < SERVICES; i++ )); do
    SVC_ARG+="${SVC_ARG:+,}${NAMES[i]}=${PORTS[i]}"
done

SPEC=$OUT/hatoba.yaml
python3 "$ROOT/bench/lib/detect_run.py" spec --demo "$DEMO" --services "$SVC_ARG" --out "$SPEC"
"$HATOBA" validate -f "$SPEC" >"$OUT/validate.txt" 2>&1 || {
    cat "$OUT/validate.txt" >&2
    die "the generated spec is invalid: $SPEC"
}

# ------------------------------------------------------------------ run ----

log "results in $OUT; state in $STATE"
start_hatoba_up "$HATOBA" "$STATE" "$SPEC" "$OUT"
log "hatoba up (pid $UP_PID): ${SVC_ARG//,/ }"

rc=0
python3 "$ROOT/bench/lib/detect_run.py" run --hatoba "$HATOBA" --state-dir "$STATE" --out "$OUT" \
    --services "$SVC_ARG" --rate "$RATE" --conns "$CONNS" --runs "$RUNS" \
    --good-runs "$GOOD_RUNS" --observe "$OBSERVE_S" --up-pid "$UP_PID" &
CHILD=$!
wait "$CHILD" || rc=$?
CHILD=""
exit "$rc"
