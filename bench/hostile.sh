#!/usr/bin/env bash
# Benchmark Hatoba under hostile conditions (the hardening issue).
#
#   bash bench/hostile.sh [--no-build] [--budget 15m] [--rate 300] [--conns 25000]
#                         [--slow-conns 500] [--deploys 100] [PHASE ...]
#
# PHASE (all by default, in this order):
#   baseline    300 req/s through the proxy, nothing else (10 s)
#   detect      a bad canary (20 % errors) on a service with no user traffic,
#               judged on generated traffic: time to detect and roll back
#   idle-api    300 req/s; 25k idle connections to the API
#   idle-proxy  300 req/s; 25k idle connections to the proxy
#   slowloris   300 req/s; a slowloris against the API and the proxy
#   dpkill      300 req/s; kill -9 of the data plane
#   rss         data-plane RSS after 1 deployment and after 100
#   ctrlc       300 req/s; SIGINT to `hatoba up` mid-canary, then a restart
#   diskfull    300 req/s; the state dir (a 4 MiB tmpfs) filled mid-rollout
# For each: the normal client's success rate, p99 and failures by kind, the
# healthy instances restarted (goal 0), the controller's and the data
# plane's fds and RSS after. Not a test and not run by CI. Loopback only;
# every load is bounded in count and time, the whole run by --budget.
# Everything it starts is stopped on exit, Ctrl-C included. Exit code: 0
# every goal met, 1 a phase went wrong, 3 a goal missed. See bench/README.md.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=bench/lib/common.sh
source "$ROOT/bench/lib/common.sh"

BUILD=1
BUDGET=15m
RATE=300
CONNS=25000
SLOW_CONNS=500
DEPLOYS=100
PHASES=()

usage() {
    sed -n '2,26p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

while (( $# )); do
    case $1 in
        --budget) BUDGET=${2:?--budget needs a value}; shift 2 ;;
        --rate) RATE=${2:?--rate needs a value}; shift 2 ;;
        --conns) CONNS=${2:?--conns needs a value}; shift 2 ;;
        --slow-conns) SLOW_CONNS=${2:?--slow-conns needs a value}; shift 2 ;;
        --deploys) DEPLOYS=${2:?--deploys needs a value}; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        -h|--help) usage; exit 0 ;;
        -*) usage >&2; die "unknown flag: $1" ;;
        *) PHASES+=("$1"); shift ;;
    esac
done
for v in RATE CONNS SLOW_CONNS DEPLOYS; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "--${v,,}: expected a positive integer, found '${!v}'"
done
[[ $BUDGET =~ ^([0-9]+)(s|m)$ ]] || die "--budget: expected e.g. 900s or 15m, found '$BUDGET'"
BUDGET_S=${BASH_REMATCH[1]}
[[ ${BASH_REMATCH[2]} == m ]] && BUDGET_S=$(( BUDGET_S * 60 ))

for tool in python3 curl fallocate mount umount; do
    command -v "$tool" >/dev/null || die "missing: $tool"
done
if [[ ${#PHASES[@]} -eq 0 || " ${PHASES[*]} " == *" diskfull "* ]]; then
    (( EUID == 0 )) || die "the diskfull phase mounts a tmpfs: run as root, or leave the phase out"
fi

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

# 25k connections each way: raise the open-file limit for us and for
# `hatoba up` and its data plane (they raise their soft limit to this hard one).
ulimit -Hn 1048576 2>/dev/null || ulimit -Hn 65536 2>/dev/null || true
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NOFILE=$(ulimit -n)
[[ $NOFILE == unlimited ]] || (( NOFILE >= CONNS + 1000 )) ||
    warn "open-file limit $NOFILE is low for $CONNS idle connections"

# ------------------------------------------------------- start and stop ----

OUT=$TARGET_DIR/bench/hostile-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUT"
CHILD=""

cleanup() {
    local rc=$? deadline d
    trap - EXIT INT TERM
    if [[ -n $CHILD ]] && kill -0 "$CHILD" 2>/dev/null; then
        kill -TERM "$CHILD" 2>/dev/null || true   # the driver stops its loads and hatoba up
        deadline=$(( $(now_ms) + 60000 ))
        while kill -0 "$CHILD" 2>/dev/null && (( $(now_ms) < deadline )); do sleep 0.1; done
        kill -KILL "$CHILD" 2>/dev/null || true
        wait "$CHILD" 2>/dev/null || true
    fi
    # Whatever the driver left (it was killed, or failed to stop something).
    if [[ -f $OUT/state-dirs.txt ]]; then
        while read -r d; do
            [[ -n $d && -d $d ]] || continue
            local -a left
            mapfile -t left < <(hatoba_leftovers "$d")
            if (( ${#left[@]} )); then
                log "stopping ${#left[@]} process(es) left in $d"
                stop_pids "${left[@]}"
            fi
            mountpoint -q "$d" 2>/dev/null && { umount "$d" || warn "cannot unmount $d"; }
            rm -rf "$d"
        done <"$OUT/state-dirs.txt"
    fi
    log "raw figures in $OUT"
    exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'log "terminated"; exit 143' TERM

log "results in $OUT (budget ${BUDGET_S}s, open-file limit $NOFILE)"
rc=0
python3 "$ROOT/bench/lib/hostile_run.py" --hatoba "$HATOBA" --demo "$DEMO" --out "$OUT" \
    --budget "$BUDGET_S" --rate "$RATE" --conns "$CONNS" --slow-conns "$SLOW_CONNS" \
    --deploys "$DEPLOYS" ${PHASES[@]+"${PHASES[@]}"} &
CHILD=$!
wait "$CHILD" || rc=$?
CHILD=""
exit "$rc"
