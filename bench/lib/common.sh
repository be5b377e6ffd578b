# Helpers for bench/proxy.sh: logging, free ports, process start/stop,
# readiness polls with deadlines, and /proc readings (CPU ticks, RSS).
# Sourced, not run. Everything here talks to 127.0.0.1 only.

log() { printf '[bench] %s\n' "$*" >&2; }
warn() { printf '[bench] WARNING: %s\n' "$*" >&2; }
die() { printf '[bench] ERROR: %s\n' "$*" >&2; exit 1; }

# A free TCP port on 127.0.0.1 (bind port 0, read what the kernel chose).
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

now_ms() { date +%s%3N; }

# wait_for_line FILE REGEX TIMEOUT_S PID: wait until FILE has a line matching
# REGEX (extended), printing the first match; fail if PID dies or time runs out.
wait_for_line() {
    local file=$1 re=$2 timeout=$3 pid=$4 deadline line
    deadline=$(( $(now_ms) + timeout * 1000 ))
    while (( $(now_ms) < deadline )); do
        if line=$(grep -m1 -E "$re" "$file" 2>/dev/null); then
            printf '%s\n' "$line"
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.05
    done
    return 1
}

# wait_http URL TIMEOUT_S PID: poll until URL answers 200; fail if PID dies
# or the deadline passes. The poll interval is not a readiness mechanism.
wait_http() {
    local url=$1 timeout=$2 pid=$3 deadline code
    deadline=$(( $(now_ms) + timeout * 1000 ))
    while (( $(now_ms) < deadline )); do
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$url" 2>/dev/null || true)
        [[ $code == 200 ]] && return 0
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.05
    done
    return 1
}

# Children of a pid (nginx workers of their master).
children_of() { pgrep -P "$1" 2>/dev/null | tr '\n' ' ' || true; }

# cpu_ticks PID...: utime+stime (fields 14 and 15 of /proc/PID/stat, clock
# ticks) summed over the given processes. A process's stat counts all its
# threads. The comm field may hold spaces, so split after its closing ')':
# the fields then start at field 3 (state), so utime is word 12, stime 13.
cpu_ticks() {
    local total=0 pid t
    for pid in "$@"; do
        t=$(awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$pid/stat" 2>/dev/null || true)
        total=$(( total + ${t:-0} ))
    done
    echo "$total"
}

# rss_kb PID...: VmRSS summed over the given processes, in kB.
rss_kb() {
    local total=0 pid kb
    for pid in "$@"; do
        kb=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
        total=$(( total + ${kb:-0} ))
    done
    echo "$total"
}

# stop_pids PID...: SIGTERM, wait up to 5 s (polling), then SIGKILL what is left.
stop_pids() {
    local pid alive deadline
    (( $# )) || return 0
    kill -TERM "$@" 2>/dev/null || true
    deadline=$(( $(now_ms) + 5000 ))
    while (( $(now_ms) < deadline )); do
        alive=0
        for pid in "$@"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        (( alive )) || break
        sleep 0.05
    done
    kill -KILL "$@" 2>/dev/null || true
    for pid in "$@"; do wait "$pid" 2>/dev/null || true; done
}

# Processes of a state directory that outlived its `hatoba up`: instances
# carry HATOBA_SCOPE=<state dir> in their environment, the data plane has
# `--state-dir <state dir> ... dataplane` on its command line. Builtins
# only, so no helper process of ours matches.
hatoba_leftovers() {
    local state=$1 p pid e
    local -a argv envv
    for p in /proc/[0-9]*; do
        pid=${p#/proc/}
        (( pid == $$ )) && continue
        mapfile -d "" -t argv 2>/dev/null <"$p/cmdline" || continue
        (( ${#argv[@]} )) || continue
        if [[ " ${argv[*]} " == *" --state-dir $state "*"dataplane"* ]]; then
            echo "$pid"
            continue
        fi
        mapfile -d "" -t envv 2>/dev/null <"$p/environ" || continue
        for e in "${envv[@]}"; do
            if [[ $e == "HATOBA_SCOPE=$state" ]]; then echo "$pid"; break; fi
        done
    done
}

# Stops a `hatoba up` (SIGTERM: it stops its instances and data plane;
# SIGKILL after 30 s), then whatever of its state directory is left, keeps
# the history, the data plane's log and the instances' logs in OUT, and
# removes the state directory.
stop_hatoba_up() {
    local up_pid=$1 state=$2 out=$3 deadline
    if [[ -n $up_pid ]] && kill -0 "$up_pid" 2>/dev/null; then
        log "stopping hatoba up (pid $up_pid): instances get their grace period"
        kill -TERM "$up_pid" 2>/dev/null || true
        deadline=$(( $(now_ms) + 30000 ))
        while kill -0 "$up_pid" 2>/dev/null && (( $(now_ms) < deadline )); do sleep 0.1; done
        if kill -0 "$up_pid" 2>/dev/null; then
            warn "hatoba up still runs 30s after SIGTERM: SIGKILL"
            kill -KILL "$up_pid" 2>/dev/null || true
        fi
        wait "$up_pid" 2>/dev/null || true
    fi
    local -a left
    mapfile -t left < <(hatoba_leftovers "$state")
    if (( ${#left[@]} )); then
        log "stopping ${#left[@]} process(es) of $state left after hatoba up: ${left[*]}"
        stop_pids "${left[@]}"
    fi
    cp "$state"/hatoba.db* "$state"/dataplane.log "$out/" 2>/dev/null || true
    [[ ! -d $state/logs ]] || cp -r "$state/logs" "$out/instance-logs" 2>/dev/null || true
    rm -rf "$state"
    log "raw figures in $out"
}

# Starts `hatoba --state-dir STATE up -f SPEC` in the background (its output
# in OUT/up.log), sets UP_PID, and returns once its server.json and token
# are written and parse; dies with the log's tail if it exits or is not
# ready within 30 s.
start_hatoba_up() {
    local hatoba=$1 state=$2 spec=$3 out=$4 deadline
    "$hatoba" --state-dir "$state" up -f "$spec" >"$out/up.log" 2>&1 &
    UP_PID=$!
    deadline=$(( $(now_ms) + 30000 ))
    until [[ -s $state/server.json && -s $state/token ]]; do
        if ! kill -0 "$UP_PID" 2>/dev/null; then
            tail -n 20 "$out/up.log" >&2 || true
            die "hatoba up exited before it was ready (log: $out/up.log)"
        fi
        (( $(now_ms) < deadline )) || die "hatoba up not ready within 30s (log: $out/up.log)"
        sleep 0.05
    done
    # server.json is written whole, but be sure it parses before a driver reads it.
    until python3 -c 'import json,sys; json.load(open(sys.argv[1]))' "$state/server.json" 2>/dev/null; do
        (( $(now_ms) < deadline )) || die "unreadable $state/server.json"
        sleep 0.05
    done
}

# For the Python drivers that load with aiohttp (api.sh, long_lived.sh):
# installs aiohttp when missing, then sets HATOBA to the given binary or
# the release build (built first when BUILD is 1) and TARGET_DIR.
prepare_aiohttp_bench() {
    python3 -c 'import aiohttp' 2>/dev/null || {
        log "installing aiohttp: python3 -m pip install aiohttp"
        python3 -m pip install -q aiohttp
    }
    case ${CARGO_TARGET_DIR:-} in
        "") TARGET_DIR=$ROOT/target ;;
        /*) TARGET_DIR=$CARGO_TARGET_DIR ;;
        *) TARGET_DIR=$ROOT/$CARGO_TARGET_DIR ;;
    esac
    HATOBA=${HATOBA:-$TARGET_DIR/release/hatoba}
    if (( BUILD )); then
        log "building: cargo build --release -p hatoba"
        cargo build --release -p hatoba
    fi
    [[ -x $HATOBA ]] || die "$HATOBA not found (build it: cargo build --release -p hatoba)"
}
