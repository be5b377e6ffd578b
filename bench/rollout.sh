#!/usr/bin/env bash
# Benchmark Hatoba's rollouts under load: rolling, blue-green, canary, rollback.
#
#   bash bench/rollout.sh [--rate 600] [--duration 2s] [--connections 16]
#                         [--ready-after 1s] [--probe-period 250ms] [--load-procs 1]
#                         [--only rolling,bluegreen,canary] [--no-build]
#                         [--runtime process|docker]
#
# Not a test and not run by CI. Builds hatoba and hatoba-demo-app in release,
# writes a spec with three services (rolling: 4 instances, maxSurge 1,
# maxUnavailable 0; blue-green: 2 instances, switch at once, old colour kept
# 5 minutes; canary: 4 instances, 25 % / pause 2s / 50 % / pause 2s), each on
# a free 127.0.0.1 route port, and starts `hatoba up` on it. Then, per
# strategy, deploys v1, starts a paced load (--rate req/s through the
# service's proxy address, every response counted, --duration of load before
# and after each action) and, under it, deploys v2 and rolls back (warm and
# cold for blue-green). Prints each deploy's duration beside the sum of its
# instances' start-up times, and each rollback's time to 100 % of the traffic
# on the old version. Raw figures go to target/bench/rollout-<date>/.
# Everything it starts is stopped on exit, Ctrl-C included. Exit code: 0
# clean and every goal met, 1 a failed request or a step that went wrong,
# 3 clean but a rollback goal missed. See bench/README.md.
#
# --runtime docker: the same services as Docker containers of the local
# engine (`docker:`), one image `FROM scratch` with hatoba-demo-app and the
# libraries it needs, made by `hatoba build` (no registry) and tagged for
# v2; first, the start-to-ready of one container beside the same binary as
# a process (bench/lib/rollout_startup.py). The image and every container
# of the run are removed on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=bench/lib/common.sh
source "$ROOT/bench/lib/common.sh"

RATE=600
DURATION=2s
CONNS=16
READY_AFTER=1s
PROBE_PERIOD=250ms
ONLY=rolling,bluegreen,canary
LOAD_PROCS=1
BUILD=1
RUNTIME=process

usage() {
    sed -n '2,30p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

while (( $# )); do
    case $1 in
        --rate) RATE=${2:?--rate needs a value}; shift 2 ;;
        --rate=*) RATE=${1#*=}; shift ;;
        --duration) DURATION=${2:?--duration needs a value}; shift 2 ;;
        --duration=*) DURATION=${1#*=}; shift ;;
        --connections|-c) CONNS=${2:?--connections needs a value}; shift 2 ;;
        --connections=*) CONNS=${1#*=}; shift ;;
        --ready-after) READY_AFTER=${2:?--ready-after needs a value}; shift 2 ;;
        --ready-after=*) READY_AFTER=${1#*=}; shift ;;
        --probe-period) PROBE_PERIOD=${2:?--probe-period needs a value}; shift 2 ;;
        --probe-period=*) PROBE_PERIOD=${1#*=}; shift ;;
        --only) ONLY=${2:?--only needs a value}; shift 2 ;;
        --only=*) ONLY=${1#*=}; shift ;;
        --load-procs) LOAD_PROCS=${2:?--load-procs needs a value}; shift 2 ;;
        --load-procs=*) LOAD_PROCS=${1#*=}; shift ;;
        --no-build) BUILD=0; shift ;;
        --runtime) RUNTIME=${2:?--runtime needs a value}; shift 2 ;;
        --runtime=*) RUNTIME=${1#*=}; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done
[[ $RATE =~ ^[1-9][0-9]*$ ]] || die "--rate: expected a positive integer, found '$RATE'"
[[ $CONNS =~ ^[1-9][0-9]*$ ]] || die "--connections: expected a positive integer, found '$CONNS'"
[[ $LOAD_PROCS =~ ^[1-9][0-9]*$ ]] || die "--load-procs: expected a positive integer, found '$LOAD_PROCS'"
(( CONNS >= LOAD_PROCS )) || die "--connections must be at least --load-procs"
[[ $ONLY =~ ^(rolling|bluegreen|canary)(,(rolling|bluegreen|canary))*$ ]] ||
    die "--only: expected a comma-separated list of rolling, bluegreen, canary, found '$ONLY'"
[[ $RUNTIME == process || $RUNTIME == docker ]] ||
    die "--runtime: expected process or docker, found '$RUNTIME'"

seconds_of() {  # NAME VALUE: 500ms, 2s, 1m -> seconds (decimal) on stdout
    [[ $2 =~ ^([0-9]+)(ms|s|m)$ ]] || die "$1: expected e.g. 500ms, 2s, 1m, found '$2'"
    case ${BASH_REMATCH[2]} in
        ms) awk -v n="${BASH_REMATCH[1]}" 'BEGIN { printf "%g\n", n / 1000 }' ;;
        s) echo "${BASH_REMATCH[1]}" ;;
        m) echo $(( BASH_REMATCH[1] * 60 )) ;;
    esac
}
SETTLE_S=$(seconds_of --duration "$DURATION")
READY_AFTER_S=$(seconds_of --ready-after "$READY_AFTER")
seconds_of --probe-period "$PROBE_PERIOD" >/dev/null
[[ $SETTLE_S != 0 ]] || die "--duration must be above 0"
(( RATE >= 500 )) || warn "--rate $RATE is below the 500 req/s the goal is stated for"

for tool in python3 curl; do
    command -v "$tool" >/dev/null || die "missing: $tool (apt-get install -y $tool)"
done
if [[ $RUNTIME == docker ]]; then
    for tool in docker ldd; do
        command -v "$tool" >/dev/null || die "missing: $tool (needed by --runtime docker)"
    done
    docker info >/dev/null 2>&1 || die "--runtime docker: no Docker Engine answers \`docker info\`"
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
for sub in up deploy rollback abort promote; do
    "$HATOBA" "$sub" --help >/dev/null 2>&1 || die "this hatoba build has no \`hatoba $sub\`"
done

# ------------------------------------------------------- start and stop ----

OUT=$TARGET_DIR/bench/rollout-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUT"
# The state directory holds the data plane's unix socket: keep its path short.
STATE=$(mktemp -d "${TMPDIR:-/tmp}/hatoba-rollout.XXXXXX")
UP_PID=""
CHILD=""
# --runtime docker: the image's name (its tags are removed on exit).
IMAGE=hatoba-bench-demo-$$

cleanup() {
    local rc=$? pid deadline
    trap - EXIT INT TERM
    if [[ -n $CHILD ]] && kill -0 "$CHILD" 2>/dev/null; then
        kill -TERM "$CHILD" 2>/dev/null || true   # the driver stops its load and commands
        deadline=$(( $(now_ms) + 10000 ))
        while kill -0 "$CHILD" 2>/dev/null && (( $(now_ms) < deadline )); do sleep 0.1; done
        kill -KILL "$CHILD" 2>/dev/null || true
        wait "$CHILD" 2>/dev/null || true
    fi
    local scope=$STATE
    stop_hatoba_up "$UP_PID" "$STATE" "$OUT"
    if [[ $RUNTIME == docker ]]; then
        # What `hatoba up` did not stop (it was killed): by its scope label.
        docker ps -aq --filter "label=hatoba.scope=$scope" | xargs -r docker rm -f >/dev/null 2>&1 || true
        docker rmi -f "$IMAGE:v1" "$IMAGE:v2" >/dev/null 2>&1 || true
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'log "terminated"; exit 143' TERM

# ----------------------------------------------------------------- spec ----

P_ROLLING=$(free_port)
P_BLUEGREEN=$(free_port)
P_CANARY=$(free_port)
while [[ $P_BLUEGREEN == "$P_ROLLING" ]]; do P_BLUEGREEN=$(free_port); done
while [[ $P_CANARY == "$P_ROLLING" || $P_CANARY == "$P_BLUEGREEN" ]]; do P_CANARY=$(free_port); done

SPEC=$OUT/hatoba.yaml
workload() {  # the demo app, as a process or as a container of $IMAGE
    if [[ $RUNTIME == docker ]]; then
        cat <<EOF
    docker:
      image: "$IMAGE:\${VERSION}"
      build: {context: ctx}
      port: 8080
      args: ["--version-label", "\${VERSION}", "--ready-after", "$READY_AFTER"]
EOF
    else
        cat <<EOF
    process:
      command: $DEMO
      args: ["--version-label", "\${VERSION}", "--ready-after", "$READY_AFTER"]
EOF
    fi
}
service() {  # NAME PORT REPLICAS STRATEGY-YAML (indented 6)
    cat <<EOF
  $1:
$(workload)
    replicas: $3
    route: {listen: 127.0.0.1:$2}
    health:
      readiness: {path: /ready, period: $PROBE_PERIOD, timeout: 1s, failureThreshold: 3, successThreshold: 1}
      liveness: {path: /health, period: 5s, timeout: 2s, failureThreshold: 3}
    progressDeadline: 1m
    terminationGracePeriod: 5s
    drain: 5s
    strategy:
$4
EOF
}
{
    echo "# Generated by bench/rollout.sh; one service per strategy, each on its own route port."
    echo "app: rollout-bench"
    echo "services:"
    service rolling "$P_ROLLING" 4 "      rolling: {maxSurge: 1, maxUnavailable: 0}"
    service bluegreen "$P_BLUEGREEN" 2 "      blueGreen: {autoPromotionSeconds: 0, scaleDownDelay: 5m}"
    service canary "$P_CANARY" 4 "      canary:
        steps:
          - setWeight: 25
          - pause: {duration: 2s}
          - setWeight: 50
          - pause: {duration: 2s}"
} >"$SPEC"
"$HATOBA" validate -f "$SPEC" >"$OUT/validate.txt" 2>&1 || {
    cat "$OUT/validate.txt" >&2
    die "the generated spec is invalid: $SPEC"
}

# ------------------------------------------------------------------ run ----

if [[ $RUNTIME == docker ]]; then
    # The build context: hatoba-demo-app and the shared libraries it needs
    # at their own paths, for an image FROM scratch (nothing is pulled).
    CTX=$OUT/ctx
    mkdir -p "$CTX/rootfs"
    cp "$DEMO" "$CTX/rootfs/hatoba-demo-app"
    while read -r lib; do
        mkdir -p "$CTX/rootfs$(dirname "$lib")"
        cp "$lib" "$CTX/rootfs$lib"
    done < <(ldd "$DEMO" 2>/dev/null | grep -o '/[^ ]*' || true)
    cat >"$CTX/Dockerfile" <<'EOF'
FROM scratch
COPY rootfs/ /
ENV DEMO_HOST=0.0.0.0
ENTRYPOINT ["/hatoba-demo-app"]
EOF
    log "building the image $IMAGE:v1 with hatoba build (FROM scratch, no registry)"
    "$HATOBA" --state-dir "$STATE" build rolling --version v1 -f "$SPEC" >"$OUT/build.txt" 2>&1 || {
        tail -n 20 "$OUT/build.txt" >&2
        die "hatoba build failed (log: $OUT/build.txt)"
    }
    docker tag "$IMAGE:v1" "$IMAGE:v2"
    python3 "$ROOT/bench/lib/rollout_startup.py" --binary "$DEMO" --image "$IMAGE:v1" \
        --out "$OUT" --runs 5 | tee "$OUT/startup.txt" ||
        die "start-up comparison failed (see $OUT/startup.json)"
fi

log "results in $OUT; state in $STATE ($RUNTIME runtime)"
start_hatoba_up "$HATOBA" "$STATE" "$SPEC" "$OUT"
log "hatoba up (pid $UP_PID): rolling on :$P_ROLLING, bluegreen on :$P_BLUEGREEN, canary on :$P_CANARY"

rc=0
python3 "$ROOT/bench/lib/rollout_run.py" --hatoba "$HATOBA" --state-dir "$STATE" --out "$OUT" \
    --ports "rolling=$P_ROLLING,bluegreen=$P_BLUEGREEN,canary=$P_CANARY" \
    --rate "$RATE" --conns "$CONNS" --settle "$SETTLE_S" --ready-after "$READY_AFTER_S" \
    --probe-period "$PROBE_PERIOD" --load-procs "$LOAD_PROCS" --only "$ONLY" --up-pid "$UP_PID" \
    --runtime "$RUNTIME" &
CHILD=$!
wait "$CHILD" || rc=$?
CHILD=""
"$HATOBA" --state-dir "$STATE" history -n 50 >"$OUT/history.txt" 2>&1 || true
"$HATOBA" --state-dir "$STATE" history -n 50 -o json >"$OUT/history.json" 2>/dev/null || true
exit "$rc"
