#!/usr/bin/env bash
# Benchmark Hatoba's proxy against nginx and HAProxy on this machine.
#
#   bash bench/proxy.sh [--rounds N] [--duration 8s] [--connections 50]
#                       [--idle-conns 1000] [--fixed-rate auto|N|0]
#                       [--no-install] [--no-build]
#
# Not a test and not run by CI. It installs nginx, HAProxy and wrk if missing
# (apt-get, with sudo when not root), builds hatoba and hatoba-demo-app in
# release, starts two demo-app backends and the three proxies over them (each
# on a free 127.0.0.1 port, configs and logs in a temporary directory, access
# logs off, keep-alive upstreams, round-robin), loads each target with wrk in
# alternating rounds, and prints medians, ratios and the verdict against the
# goal. Then, as information beside the verdict, it loads each proxy at one
# fixed request rate (oha -q, open loop; half the slowest proxy's wrk rate
# unless --fixed-rate says; 0 skips; oha is installed with cargo install
# when missing), and measures each proxy's RSS with N idle keep-alive
# connections.
# Figures go to target/bench/proxy-<date>.json. Everything it starts is
# stopped on exit, Ctrl-C included. See bench/README.md.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=bench/lib/common.sh
source "$ROOT/bench/lib/common.sh"

ROUNDS=5
DURATION=8s
CONNS=50
IDLE_CONNS=1000
INSTALL=1
BUILD=1
FIXED_RATE=auto

usage() {
    sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

while (( $# )); do
    case $1 in
        --rounds) ROUNDS=${2:?--rounds needs a value}; shift 2 ;;
        --rounds=*) ROUNDS=${1#*=}; shift ;;
        --duration) DURATION=${2:?--duration needs a value}; shift 2 ;;
        --duration=*) DURATION=${1#*=}; shift ;;
        --connections|-c) CONNS=${2:?--connections needs a value}; shift 2 ;;
        --connections=*) CONNS=${1#*=}; shift ;;
        --idle-conns) IDLE_CONNS=${2:?--idle-conns needs a value}; shift 2 ;;
        --idle-conns=*) IDLE_CONNS=${1#*=}; shift ;;
        --fixed-rate) FIXED_RATE=${2:?--fixed-rate needs a value}; shift 2 ;;
        --fixed-rate=*) FIXED_RATE=${1#*=}; shift ;;
        --no-install) INSTALL=0; shift ;;
        --no-build) BUILD=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "--rounds: expected a positive integer, found '$ROUNDS'"
[[ $CONNS =~ ^[1-9][0-9]*$ ]] || die "--connections: expected a positive integer, found '$CONNS'"
[[ $IDLE_CONNS =~ ^[0-9]+$ ]] || die "--idle-conns: expected an integer (0 skips), found '$IDLE_CONNS'"
[[ $FIXED_RATE == auto || $FIXED_RATE =~ ^[0-9]+$ ]] ||
    die "--fixed-rate: expected auto, a rate in requests per second, or 0 to skip, found '$FIXED_RATE'"
[[ $DURATION =~ ^([1-9][0-9]*)([smh]?)$ ]] || die "--duration: expected e.g. 8s, 1m, found '$DURATION'"
case ${BASH_REMATCH[2]} in
    m) DURATION_S=$(( BASH_REMATCH[1] * 60 )) ;;
    h) DURATION_S=$(( BASH_REMATCH[1] * 3600 )) ;;
    *) DURATION_S=${BASH_REMATCH[1]} ;;
esac

# ---------------------------------------------------------------- tools ----

SUDO=()
if (( EUID != 0 )); then SUDO=(sudo); fi

find_bin() {  # nginx and haproxy live in /usr/sbin, often not on a user's PATH
    command -v "$1" 2>/dev/null || { [[ -x /usr/sbin/$1 ]] && echo "/usr/sbin/$1"; } || true
}

install_missing() {
    local -a missing=()
    [[ -n $(find_bin nginx) ]] || missing+=(nginx)
    [[ -n $(find_bin haproxy) ]] || missing+=(haproxy)
    [[ -n $(find_bin wrk) ]] || missing+=(wrk)
    command -v curl >/dev/null || missing+=(curl)
    command -v python3 >/dev/null || missing+=(python3)
    command -v pgrep >/dev/null || missing+=(procps)
    (( ${#missing[@]} )) || return 0
    if (( ! INSTALL )); then
        die "missing: ${missing[*]} (run without --no-install, or: apt-get install -y ${missing[*]})"
    fi
    if (( ${#SUDO[@]} )) && ! command -v sudo >/dev/null; then
        die "missing: ${missing[*]}, and not root without sudo; install them: apt-get install -y ${missing[*]}"
    fi
    log "installing: ${SUDO[*]} apt-get install -y ${missing[*]}"
    if ! "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"; then
        log "install failed; refreshing the package lists: ${SUDO[*]} apt-get update"
        "${SUDO[@]}" apt-get update
        "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
    fi
}

install_missing
NGINX=$(find_bin nginx)
HAPROXY=$(find_bin haproxy)
WRK=$(find_bin wrk)
[[ -n $NGINX && -n $HAPROXY && -n $WRK ]] || die "nginx, haproxy or wrk still missing after install"

case ${CARGO_TARGET_DIR:-} in
    "") TARGET_DIR=$ROOT/target ;;
    /*) TARGET_DIR=$CARGO_TARGET_DIR ;;
    *) TARGET_DIR=$ROOT/$CARGO_TARGET_DIR ;;
esac
DEMO=$TARGET_DIR/release/hatoba-demo-app
HATOBA=$TARGET_DIR/release/hatoba

HATOBA_SKIP=""
if (( BUILD )); then
    log "building: cargo build --release -p hatoba -p hatoba-demo-app"
    if ! cargo build --release -p hatoba -p hatoba-demo-app; then
        warn "building hatoba failed (see above); building the demo app alone and skipping hatoba"
        log "building: cargo build --release -p hatoba-demo-app"
        cargo build --release -p hatoba-demo-app
        HATOBA_SKIP="hatoba failed to build"
    fi
fi
[[ -x $DEMO ]] || die "$DEMO not found (build it: cargo build --release -p hatoba-demo-app)"
if [[ -z $HATOBA_SKIP ]]; then
    if [[ ! -x $HATOBA ]]; then
        HATOBA_SKIP="$HATOBA not found"
    elif ! "$HATOBA" proxy --help >/dev/null 2>&1; then
        HATOBA_SKIP="hatoba proxy not available in this build"
    fi
fi
if [[ -n $HATOBA_SKIP ]]; then
    log "$HATOBA_SKIP: skipping"
fi

NPROC=$(nproc)
CLK_TCK=$(getconf CLK_TCK)

# ------------------------------------------------------- start and stop ----

TMP=$(mktemp -d "${TMPDIR:-/tmp}/hatoba-bench.XXXXXX")
PIDS=()          # everything we started, stopped in reverse order on exit

cleanup() {
    local rc=$? i pid
    trap - EXIT INT TERM
    local -a all=()
    [[ -n ${CHILD:-} ]] && all+=("$CHILD")  # a wrk or python run in progress
    for (( i = ${#PIDS[@]} - 1; i >= 0; i-- )); do
        pid=${PIDS[i]}
        # nginx workers are children of the master: stop them too.
        # shellcheck disable=SC2207
        all+=("$pid" $(children_of "$pid"))
    done
    if (( ${#all[@]} )); then
        log "stopping ${#PIDS[@]} process(es) we started"
        stop_pids "${all[@]}"
    fi
    rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT

# bounded SECONDS OUTPUT FILE CMD...: run CMD with a time limit, in the
# background while the shell waits for it, so that Ctrl-C reaches our INT trap
# at once (bash runs no trap when a foreground wrk handles the SIGINT itself).
# OUTPUT is `all` (stdout and stderr to FILE) or `append` (stdout appended to
# FILE, stderr to ours). The redirections stay on CMD, so our own messages,
# the traps' included, still reach the terminal.
CHILD=""
bounded() {
    local limit=$1 output=$2 file=$3 rc=0
    shift 3
    case $output in
        all) timeout -k 5 "$limit" "$@" >"$file" 2>&1 & ;;
        append) timeout -k 5 "$limit" "$@" >>"$file" & ;;
        *) die "bounded: unknown output mode $output" ;;
    esac
    CHILD=$!
    wait "$CHILD" || rc=$?
    CHILD=""
    return "$rc"
}
trap 'log "interrupted"; exit 130' INT
trap 'log "terminated"; exit 143' TERM

# Many connections: raise the open-file limit for us and what we start.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NOFILE=$(ulimit -n)
[[ $NOFILE == unlimited ]] && NOFILE=65536
(( NOFILE >= 2 * IDLE_CONNS + 200 )) ||
    warn "open-file limit $NOFILE is low for $IDLE_CONNS idle connections"
# Connection limit for nginx (worker_connections, preallocated: keep it modest,
# it shows in the RSS) and HAProxy (maxconn): the idle connections, the load's
# client and upstream connections, and headroom. A proxied connection takes two
# descriptors (client and upstream), so stay below half the open-file limit.
MAXCONN=$(( IDLE_CONNS + 2 * CONNS + 256 ))
(( MAXCONN < 1024 )) && MAXCONN=1024
(( MAXCONN > (NOFILE - 200) / 2 )) && MAXCONN=$(( (NOFILE - 200) / 2 ))

fail_start() {  # NAME LOGFILE
    warn "$1 did not become ready; the end of its log ($2):"
    tail -n 20 "$2" >&2 || true
    exit 1
}

declare -A PORT=() CPU_PIDS=() RSS_PIDS=() RSS_FRESH=()

start_backend() {  # NAME -> PORT[NAME], CPU_PIDS[NAME]
    local name=$1 logf=$TMP/$1.log pid line
    # Flags override any DEMO_* / PORT / VERSION in the caller's environment;
    # the knobs that have no neutral flag value are removed from it.
    env -u DEMO_CRASH_AFTER -u DEMO_FAIL_HEALTH -u DEMO_STARTUP_DELAY -u DEMO_READY_AFTER \
        -u DEMO_SLOW_SHUTDOWN \
        "$DEMO" --host 127.0.0.1 --port 0 --version-label v1 \
        --error-rate 0 --latency 0s --jitter 0s >"$logf" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    line=$(wait_for_line "$logf" 'listening on 127\.0\.0\.1:[0-9]+' 10 "$pid") || fail_start "$name" "$logf"
    PORT[$name]=${line##*:}
    wait_http "http://127.0.0.1:${PORT[$name]}/" 10 "$pid" || fail_start "$name" "$logf"
    CPU_PIDS[$name]=$pid
    RSS_PIDS[$name]=$pid
    log "$name: hatoba-demo-app pid $pid on 127.0.0.1:${PORT[$name]}"
}

start_nginx() {
    local dir=$TMP/nginx port pid deadline workers
    mkdir -p "$dir"
    port=$(free_port)
    cat >"$dir/nginx.conf" <<EOF
# Generated by bench/proxy.sh; every path is inside $dir.
worker_processes $NPROC;
worker_rlimit_nofile $NOFILE;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections $MAXCONN; }
http {
    access_log off;
    client_body_temp_path $dir/client_body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    # Do not close client connections every 1000 requests (the default):
    # neither HAProxy nor Hatoba does.
    keepalive_requests 100000000;
    keepalive_timeout 75s;
    upstream backends {
        server 127.0.0.1:${PORT[b1]};
        server 127.0.0.1:${PORT[b2]};
        keepalive 64;
        keepalive_requests 100000000;
    }
    server {
        listen 127.0.0.1:$port;
        location / {
            proxy_pass http://backends;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
    "$NGINX" -t -q -e "$dir/error.log" -p "$dir/" -c "$dir/nginx.conf" ||
        fail_start nginx "$dir/error.log"
    "$NGINX" -e "$dir/error.log" -p "$dir/" -c "$dir/nginx.conf" -g 'daemon off;' \
        >"$dir/stdout.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    wait_http "http://127.0.0.1:$port/" 10 "$pid" || fail_start nginx "$dir/error.log"
    deadline=$(( $(now_ms) + 10000 ))
    while workers=$(children_of "$pid"); workers=${workers% }; (( $(wc -w <<<"$workers") < NPROC )); do
        (( $(now_ms) < deadline )) || fail_start "nginx workers" "$dir/error.log"
        sleep 0.05
    done
    PORT[nginx]=$port
    CPU_PIDS[nginx]="$pid $workers"
    RSS_PIDS[nginx]=$workers
    log "nginx: master pid $pid, workers $workers on 127.0.0.1:$port"
}

start_haproxy() {
    local dir=$TMP/haproxy port pid
    mkdir -p "$dir"
    port=$(free_port)
    cat >"$dir/haproxy.cfg" <<EOF
# Generated by bench/proxy.sh. No logging.
global
    nbthread $NPROC
    maxconn $MAXCONN

defaults
    mode http
    maxconn $MAXCONN
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-request 10s
    timeout http-keep-alive 60s

frontend bench
    bind 127.0.0.1:$port
    default_backend backends

backend backends
    balance roundrobin
    server b1 127.0.0.1:${PORT[b1]}
    server b2 127.0.0.1:${PORT[b2]}
EOF
    "$HAPROXY" -c -q -f "$dir/haproxy.cfg" >"$dir/check.log" 2>&1 || fail_start haproxy "$dir/check.log"
    "$HAPROXY" -db -f "$dir/haproxy.cfg" >"$dir/haproxy.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    wait_http "http://127.0.0.1:$port/" 10 "$pid" || fail_start haproxy "$dir/haproxy.log"
    PORT[haproxy]=$port
    CPU_PIDS[haproxy]=$pid
    RSS_PIDS[haproxy]=$pid
    log "haproxy: pid $pid on 127.0.0.1:$port"
}

start_hatoba() {
    local dir=$TMP/hatoba port admin pid
    mkdir -p "$dir"
    port=$(free_port)
    admin=$(free_port)
    cat >"$dir/routes.toml" <<EOF
# Generated by bench/proxy.sh.
listen = "127.0.0.1:$port"
admin = "127.0.0.1:$admin"
service = "bench"

[[group]]
role = "stable"
version = "v1"
weight = 100
backends = ["127.0.0.1:${PORT[b1]}", "127.0.0.1:${PORT[b2]}"]
EOF
    # Run from the temporary directory so nothing lands in the repository.
    (cd "$dir" && exec "$HATOBA" proxy --routes "$dir/routes.toml") >"$dir/proxy.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    wait_for_line "$dir/proxy.log" "listening on 127\.0\.0\.1:$port" 10 "$pid" >/dev/null ||
        fail_start "hatoba proxy" "$dir/proxy.log"
    wait_http "http://127.0.0.1:$port/" 10 "$pid" || fail_start "hatoba proxy" "$dir/proxy.log"
    PORT[hatoba]=$port
    PORT[hatoba_admin]=$admin
    CPU_PIDS[hatoba]=$pid
    RSS_PIDS[hatoba]=$pid
    log "hatoba: proxy pid $pid on 127.0.0.1:$port (admin 127.0.0.1:$admin)"
}

# Application requests a backend has answered (its /metrics, which does not count itself).
backend_count() {
    curl -s --max-time 2 "http://127.0.0.1:$1/metrics" |
        awk '/^http_requests_total\{/ { n += $2 } END { printf "%d\n", n }'
}

check_alive() {  # TARGET
    local pid
    for pid in ${CPU_PIDS[$1]} ${CPU_PIDS[b1]} ${CPU_PIDS[b2]}; do
        kill -0 "$pid" 2>/dev/null || die "$1: process $pid died (logs in $TMP are removed on exit)"
    done
}

run_wrk() {  # TARGET SECONDS OUTFILE
    bounded $(( $2 + 30 )) all "$3" \
        "$WRK" -t1 -c"$CONNS" -d"$2"s --latency "http://127.0.0.1:${PORT[$1]}/"
}

# ------------------------------------------------------------------ run ----

log "temporary directory: $TMP"
start_backend b1
start_backend b2
TARGETS=(direct)
PORT[direct]=${PORT[b1]}
CPU_PIDS[direct]=${CPU_PIDS[b1]}
if [[ -z $HATOBA_SKIP ]]; then
    start_hatoba
    TARGETS+=(hatoba)
fi
start_nginx
start_haproxy
TARGETS+=(nginx haproxy)
for t in hatoba nginx haproxy; do
    [[ -n ${RSS_PIDS[$t]:-} ]] && RSS_FRESH[$t]=$(rss_kb ${RSS_PIDS[$t]})
done

log "warming up each target for 1s"
for t in "${TARGETS[@]}"; do
    check_alive "$t"
    run_wrk "$t" 1 "$TMP/warmup-$t.txt" || warn "$t: warm-up wrk failed: $(tail -n 3 "$TMP/warmup-$t.txt")"
done

RUNS=$TMP/runs.jsonl
: >"$RUNS"
n=${#TARGETS[@]}
log "$ROUNDS round(s) of wrk -t1 -c$CONNS -d$DURATION over: ${TARGETS[*]} (order rotated per round)"
for (( r = 0; r < ROUNDS; r++ )); do
    for (( i = 0; i < n; i++ )); do
        t=${TARGETS[(i + r) % n]}
        check_alive "$t"
        out=$TMP/wrk-$t-$r.txt
        a1=$(backend_count "${PORT[b1]}"); a2=$(backend_count "${PORT[b2]}")
        c0=$(cpu_ticks ${CPU_PIDS[$t]})
        run_wrk "$t" "$DURATION_S" "$out" || warn "$t: wrk exited with an error: $(tail -n 3 "$out")"
        c1=$(cpu_ticks ${CPU_PIDS[$t]})
        z1=$(backend_count "${PORT[b1]}"); z2=$(backend_count "${PORT[b2]}")
        python3 "$ROOT/bench/lib/wrk_parse.py" "$out" --target "$t" --round "$(( r + 1 ))" \
            --cpu-ticks "$(( c1 - c0 ))" --clk-tck "$CLK_TCK" \
            --backend-split "$(( z1 - a1 ))" "$(( z2 - a2 ))" >>"$RUNS" ||
            die "$t: cannot read wrk's output: $(cat "$out")"
    done
done

# -------------------------------------------------------- fixed rate ----

FIXED=$TMP/fixed.jsonl
: >"$FIXED"
find_oha() {
    command -v oha 2>/dev/null || { [[ -x ${CARGO_HOME:-$HOME/.cargo}/bin/oha ]] && echo "${CARGO_HOME:-$HOME/.cargo}/bin/oha"; } || true
}
OHA=$(find_oha)
if [[ $FIXED_RATE != 0 && -z $OHA ]]; then
    if (( INSTALL )); then
        log "installing oha for the fixed-rate phase: cargo install oha --locked (a few minutes, once)"
        cargo install oha --locked >"$TMP/oha-install.log" 2>&1 ||
            warn "cargo install oha failed: $(tail -n 3 "$TMP/oha-install.log")"
        OHA=$(find_oha)
    fi
    [[ -n $OHA ]] || warn "fixed-rate phase skipped: oha not found (cargo install oha --locked)"
fi
if [[ $FIXED_RATE != 0 && -n $OHA ]]; then
    RATE=$FIXED_RATE
    [[ $RATE == auto ]] && RATE=$(python3 "$ROOT/bench/lib/fixed_rate.py" rate "$RUNS")
    PROXIES=()
    for t in hatoba nginx haproxy; do [[ -n ${PORT[$t]:-} ]] && PROXIES+=("$t"); done
    m=${#PROXIES[@]}
    log "$ROUNDS round(s) at a fixed $RATE req/s: oha -c$CONNS -q$RATE -z$DURATION over: ${PROXIES[*]}"
    for (( r = 0; r < ROUNDS; r++ )); do
        for (( i = 0; i < m; i++ )); do
            t=${PROXIES[(i + r) % m]}
            check_alive "$t"
            out=$TMP/oha-$t-$r.json
            bounded $(( DURATION_S + 30 )) all "$out" "$OHA" -z "$DURATION" -c "$CONNS" -q "$RATE" \
                --latency-correction --wait-ongoing-requests-after-deadline --no-tui \
                --output-format json "http://127.0.0.1:${PORT[$t]}/" ||
                warn "$t: oha exited with an error: $(tail -c 300 "$out")"
            python3 "$ROOT/bench/lib/fixed_rate.py" parse "$out" --target "$t" \
                --round "$(( r + 1 ))" --rate "$RATE" >>"$FIXED" ||
                warn "$t: cannot read oha's output: $(tail -c 300 "$out")"
        done
    done
fi

MEMORY=$TMP/memory.jsonl
: >"$MEMORY"
if (( IDLE_CONNS > 0 )); then
    log "memory: RSS of each proxy with $IDLE_CONNS idle keep-alive connections"
    for t in hatoba nginx haproxy; do
        [[ -n ${RSS_PIDS[$t]:-} ]] || continue
        check_alive "$t"
        bounded 120 append "$MEMORY" python3 "$ROOT/bench/lib/idle_conns.py" --port "${PORT[$t]}" \
            --pids "${RSS_PIDS[$t]}" --conns "$IDLE_CONNS" --label "$t" \
            --extra "{\"rss_fresh_kb\": ${RSS_FRESH[$t]:-null}}" ||
            warn "$t: the idle-connection measurement failed"
    done
fi

# ----------------------------------------------------------------- report ----

OUT_DIR=$TARGET_DIR/bench
mkdir -p "$OUT_DIR"
OUT=$OUT_DIR/proxy-$(date -u +%Y%m%dT%H%M%SZ).json
hatoba_version=""
[[ -z $HATOBA_SKIP ]] && hatoba_version=$("$HATOBA" --version 2>&1 | head -n1 || true)
META_DATE=$(date -u +%FT%TZ) META_ROUNDS=$ROUNDS META_DURATION=$DURATION META_CONNS=$CONNS \
META_NPROC=$NPROC META_CLK=$CLK_TCK META_SKIP=$HATOBA_SKIP META_IDLE=$IDLE_CONNS \
META_ORDER="${TARGETS[*]}" \
META_NGINX=$("$NGINX" -v 2>&1 | head -n1) \
META_HAPROXY=$("$HAPROXY" -v 2>&1 | head -n1) \
META_WRK=$("$WRK" -v 2>&1 | head -n1 || true) \
META_HATOBA=$hatoba_version \
META_GIT=$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown) \
META_KERNEL=$(uname -r) \
python3 - >"$TMP/meta.json" <<'EOF'
import json, os
e = os.environ
print(json.dumps({
    "date": e["META_DATE"], "rounds": int(e["META_ROUNDS"]), "duration": e["META_DURATION"],
    "connections": int(e["META_CONNS"]), "nproc": int(e["META_NPROC"]),
    "clk_tck": int(e["META_CLK"]), "idle_conns": int(e["META_IDLE"]),
    "targets": e["META_ORDER"].split(), "hatoba_skip_reason": e["META_SKIP"] or None,
    "versions": {"nginx": e["META_NGINX"], "haproxy": e["META_HAPROXY"], "wrk": e["META_WRK"],
                 "hatoba": e["META_HATOBA"] or None, "git": e["META_GIT"], "kernel": e["META_KERNEL"]},
}))
EOF
python3 "$ROOT/bench/lib/report.py" --runs "$RUNS" --memory "$MEMORY" --meta "$TMP/meta.json" --out "$OUT"
if [[ -s $FIXED ]]; then
    python3 "$ROOT/bench/lib/fixed_rate.py" summary "$FIXED"
    cp "$FIXED" "${OUT%.json}-fixed-rate.jsonl"
fi
