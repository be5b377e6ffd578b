#!/usr/bin/env python3
"""Drive bench/hostile.sh: Hatoba under hostile conditions, one phase at a time.

Usage: hostile_run.py --hatoba BIN --demo BIN --out DIR --lib DIR
                      [--budget 900] [--rate 300] [--conns 25000] [--slow-conns 500]
                      [--deploys 100] [PHASE ...]

Phases (all by default, in this order): baseline detect idle-api idle-proxy
slowloris dpkill rss ctrlc diskfull. Each one prints its figures as it ends;
the summary table comes last, and everything goes to DIR/results.json.

Every `hatoba up` started here runs in a temporary state directory whose
path is appended to DIR/state-dirs.txt (and a tmpfs mount point to
DIR/mounts.txt) before it starts, so that bench/hostile.sh's cleanup finds
what is left even if this driver is killed. Exit code: 0 every goal met;
1 a phase went wrong (listed under "Problems"); 3 a goal missed.
"""
import argparse
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from rollout_run import Api, Fatal, parse_time  # noqa: E402

PHASES = ["baseline", "detect", "idle-api", "idle-proxy", "slowloris", "dpkill", "rss",
          "ctrlc", "diskfull"]
DETECT_RE = re.compile(r"^analysis failed|: failed \(|^analysis \S+ fail")
TERMINAL = {"succeeded", "failed", "aborted", "rolled_back"}
# Rough wall time of each phase, to skip what no longer fits the budget.
ESTIMATE = {"baseline": 15, "detect": 60, "idle-api": 45, "idle-proxy": 45, "slowloris": 35,
            "dpkill": 25, "rss": 240, "ctrlc": 50, "diskfull": 180}


def log(msg):
    sys.stderr.write(f"[bench] {msg}\n")
    sys.stderr.flush()


class Problem(Exception):
    pass


# ------------------------------------------------------------- processes ----


def proc_stats(pid):
    """(open fds, VmRSS kB) of a process, or (None, None) when it is gone."""
    if pid is None:
        return None, None
    try:
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        with open(f"/proc/{pid}/status") as f:
            rss = next((int(line.split()[1]) for line in f if line.startswith("VmRSS:")), None)
        return fds, rss
    except (OSError, StopIteration):
        return None, None


def dataplane_pid(state):
    """The `hatoba --state-dir STATE dataplane` process, found by its command line."""
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        args = [x.decode(errors="replace") for x in argv]
        if "dataplane" in args and state in args and "--state-dir" in args:
            return int(p)
    return None


def scope_pids(state):
    """Processes of a state directory: its data plane and its instances."""
    out = []
    for p in os.listdir("/proc"):
        if not p.isdigit() or int(p) == os.getpid():
            continue
        try:
            with open(f"/proc/{p}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue
        if f"HATOBA_SCOPE={state}".encode() in env:
            out.append(int(p))
    dp = dataplane_pid(state)
    if dp:
        out.append(dp)
    return out


class Up:
    """One `hatoba up` in a state directory, started and stopped here."""

    def __init__(self, b, state, spec, name):
        self.b, self.state, self.spec, self.name = b, state, spec, name
        self.proc = None
        self.api = None
        self.starts = 0

    def start(self, timeout=30):
        self.starts += 1
        logf = open(os.path.join(self.b.out, f"up-{self.name}-{self.starts}.log"), "w")
        # A background job of a non-interactive shell ignores SIGINT; Hatoba must not,
        # since the ctrlc phase sends it.
        self.proc = subprocess.Popen(
            [self.b.hatoba, "--state-dir", self.state, "up", "-f", self.spec],
            stdout=logf, stderr=subprocess.STDOUT,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        logf.close()
        self.started_at = time.time()
        deadline = time.time() + timeout
        last = None
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise Problem(f"hatoba up ({self.name}) exited with {self.proc.returncode} "
                              f"before it was ready: {self.log_tail()}")
            try:
                api = Api(self.state)
                api.get(f"/api/v1/services/{self.b.main_service(self)}")
                self.api = api
                return
            except (OSError, ValueError, KeyError, Fatal) as e:
                last = e
            time.sleep(0.05)
        raise Problem(f"hatoba up ({self.name}) not ready within {timeout}s: {last}")

    def log_tail(self, n=5):
        try:
            with open(os.path.join(self.b.out, f"up-{self.name}-{self.starts}.log")) as f:
                return " | ".join(f.read().splitlines()[-n:])
        except OSError:
            return ""

    @property
    def pid(self):
        return self.proc.pid if self.proc and self.proc.poll() is None else None

    def signal_and_wait(self, sig, timeout):
        """Sends sig; returns the seconds until it exited, or None."""
        t = time.time()
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=timeout)
            return time.time() - t
        except subprocess.TimeoutExpired:
            return None

    def stop(self):
        """Stops it (SIGTERM, SIGKILL after 30 s) and what it left; True when SIGKILL was needed."""
        killed = False
        if self.proc and self.proc.poll() is None:
            if self.signal_and_wait(signal.SIGTERM, 30) is None:
                log(f"hatoba up ({self.name}) still runs 30s after SIGTERM: SIGKILL")
                self.proc.kill()
                self.proc.wait()
                killed = True
        left = scope_pids(self.state)
        if left:
            log(f"stopping {len(left)} process(es) of {self.state} left after hatoba up")
            for p in left:
                try:
                    os.kill(p, signal.SIGKILL)
                except OSError:
                    pass
        return killed

    def instances(self, service):
        """{instance id: pid} of the running instances of a service."""
        d = self.api.get(f"/api/v1/services/{service}")
        return {i["id"]: i["pid"] for i in d["instances"] if i["state"] == "running"}, d

    def cli(self, *args, timeout=120):
        t = time.time()
        try:
            p = subprocess.run([self.b.hatoba, "--state-dir", self.state, *args],
                               capture_output=True, text=True, timeout=timeout)
            return p.returncode, p.stdout + p.stderr, time.time() - t
        except subprocess.TimeoutExpired as e:
            return None, f"timed out after {timeout}s: {e.stdout or ''}", time.time() - t


# ------------------------------------------------------------------ load ----


class Load:
    """The normal client: bench/lib/rollout_load.py at --rate req/s, every answer logged."""

    def __init__(self, b, port, label, rate=None, max_seconds=300):
        self.b, self.label = b, label
        self.path = os.path.join(b.out, f"load-{label}.log")
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(b.lib, "rollout_load.py"), "--port", str(port),
             "--rate", str(rate or b.a.rate), "--conns", "16", "--timeout", "5",
             "--max-seconds", str(max_seconds), "--log", self.path, "--label", label],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        b.children.append(self.proc)
        self.t0 = time.time()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            out, _ = self.proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        self.summary = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
        self.recs = []
        with open(self.path) as f:
            for line in f:
                s, d, st, v, k = line.split()
                self.recs.append((float(s), float(d), int(st), v, k))
        return self.recs


def pct(values, q):
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))]


def window(recs, t0=None, t1=None):
    """Figures of the requests sent in [t0, t1)."""
    rs = [r for r in recs if (t0 is None or r[0] >= t0) and (t1 is None or r[0] < t1)]
    ok = [r for r in rs if r[4] == "ok"]
    lat = [(r[1] - r[0]) * 1000 for r in ok]
    kinds = {}
    for r in rs:
        if r[4] != "ok":
            k = r[4] if r[4] != "http" else f"http{r[2]}"
            kinds[k] = kinds.get(k, 0) + 1
    versions = {}
    for r in ok:
        versions[r[3]] = versions.get(r[3], 0) + 1
    span = (rs[-1][0] - rs[0][0]) if len(rs) > 1 else 0
    return {
        "requests": len(rs), "ok": len(ok), "failed": len(rs) - len(ok),
        "success_pct": round(100.0 * len(ok) / len(rs), 3) if rs else None,
        "p50_ms": round(pct(lat, 0.50), 1) if lat else None,
        "p99_ms": round(pct(lat, 0.99), 1) if lat else None,
        "max_ms": round(max(lat), 1) if lat else None,
        "failures": kinds, "versions": versions,
        "rate": round((len(rs) - 1) / span, 1) if span > 0 else None,
    }


def recovery(recs, t_action):
    """After t_action: the first failure's send time, and when the service answered
    again for good (the completion of the first request of the unbroken run of
    successes that lasts to the end), both relative to t_action."""
    after = [r for r in recs if r[0] >= t_action]
    fails = [r for r in after if r[4] != "ok"]
    if not fails:
        return {"first_failure_s": None, "answers_again_s": 0.0, "outage_s": 0.0}
    last_fail = max(r[0] for r in fails)
    again = next((r for r in after if r[0] > last_fail and r[4] == "ok"), None)
    first = min(r[0] for r in fails)
    return {
        "first_failure_s": round(first - t_action, 3),
        "answers_again_s": round(again[1] - t_action, 3) if again else None,
        "outage_s": round(again[1] - first, 3) if again else None,
    }


class ApiProbe:
    """GET /api/v1/services/SERVICE every 0.5 s in a thread: is the API usable?
    With a port instead: `GET /` on a new connection to 127.0.0.1:PORT every
    0.5 s (2 s timeout): can a new user still reach the proxy?"""

    def __init__(self, up, service, port=None):
        self.up, self.service, self.port = up, service, port
        self.results = []  # (ok, ms, error)
        self.stop_flag = threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        while not self.stop_flag.is_set():
            t = time.time()
            try:
                if self.port is None:
                    self.up.api.get(f"/api/v1/services/{self.service}")
                else:
                    c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                    try:
                        c.request("GET", "/")
                        status = c.getresponse().status
                    finally:
                        c.close()
                    if status != 200:
                        raise Fatal(f"status {status}")
                self.results.append((True, (time.time() - t) * 1000, None))
            except (OSError, Fatal, ValueError) as e:
                self.results.append((False, (time.time() - t) * 1000, type(e).__name__))
            self.stop_flag.wait(max(0.0, 0.5 - (time.time() - t)))

    def stop(self):
        self.stop_flag.set()
        self.t.join(timeout=10)
        ok = [ms for good, ms, _ in self.results if good]
        errs = {}
        for good, _, e in self.results:
            if not good:
                errs[e] = errs.get(e, 0) + 1
        return {"calls": len(self.results), "ok": len(ok), "errors": errs,
                "p99_ms": round(pct(ok, 0.99), 1) if ok else None}


# ------------------------------------------------------------------ spec ----


def spec_text(demo, ports, services):
    """The spec: `web` (the service under 300 req/s, canary without analysis),
    `quiet` (no user traffic; analysis with generated traffic), `tiny` (one
    instance, rolling, fast probes: the 100 deployments)."""
    out = ["# Generated by bench/hostile.sh.", "app: hostile-bench", "services:"]
    if "web" in services:
        out += [
            "  web:",
            "    process:",
            f"      command: {demo}",
            '      args: ["--version-label", "${VERSION}"]',
            '      env: {DEMO_ERROR_RATE: "${ERROR_RATE:-0}"}',
            "    replicas: 2",
            f"    route: {{listen: 127.0.0.1:{ports['web']}}}",
            "    health:",
            "      readiness: {path: /ready, period: 250ms, timeout: 1s, failureThreshold: 3}",
            "      liveness: {path: /health, period: 1s, timeout: 1s, failureThreshold: 3}",
            "    progressDeadline: 1m",
            "    terminationGracePeriod: 5s",
            "    drain: 2s",
            "    strategy:",
            "      canary:",
            "        steps:",
            "          - setWeight: 20",
            "          - pause: {duration: 15s}",
            "          - setWeight: 50",
            "          - pause: {duration: 15s}",
        ]
    if "quiet" in services:
        out += [
            "  quiet:",
            "    process:",
            f"      command: {demo}",
            '      args: ["--version-label", "${VERSION}"]',
            '      env: {DEMO_ERROR_RATE: "${ERROR_RATE:-0}"}',
            "    replicas: 2",
            f"    route: {{listen: 127.0.0.1:{ports['quiet']}}}",
            "    health:",
            "      readiness: {path: /ready, period: 250ms, timeout: 1s, failureThreshold: 3}",
            "    progressDeadline: 2m",
            "    terminationGracePeriod: 5s",
            "    drain: 1s",
            "    strategy:",
            "      canary:",
            "        steps:",
            "          - setWeight: 20",
            "          - pause: {duration: 1m}",
            "        analysis: {templates: [generated]}",
        ]
    if "tiny" in services:
        out += [
            "  tiny:",
            "    process:",
            f"      command: {demo}",
            '      args: ["--version-label", "${VERSION}"]',
            "    replicas: 1",
            f"    route: {{listen: 127.0.0.1:{ports['tiny']}}}",
            "    health:",
            "      readiness: {path: /ready, period: 50ms, timeout: 1s, failureThreshold: 3}",
            "    progressDeadline: 30s",
            "    terminationGracePeriod: 2s",
            "    drain: 100ms",
            "    strategy:",
            "      rolling: {maxSurge: 1, maxUnavailable: 0}",
        ]
    if "quiet" in services:
        out += [
            "analysis:",
            "  templates:",
            "    generated:",
            "      traffic: {minRequests: 20, generate: {path: /, rate: 10}}",
            "      metrics:",
            "        - name: success-rate",
            "          interval: 1s",
            "          successCondition: result >= 0.95",
            "          failureLimit: 1",
            "          provider:",
            "            builtin: {metric: success-rate, window: 10s}",
        ]
    return "\n".join(out) + "\n"


def answers(port):
    """Whether 127.0.0.1:PORT answers `GET /` with 200 within 1 s."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
    try:
        c.request("GET", "/")
        return c.getresponse().status == 200
    except OSError:
        return False
    finally:
        c.close()


def free_port(taken=()):
    import socket
    while True:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        p = s.getsockname()[1]
        s.close()
        if p not in taken:
            return p


# ----------------------------------------------------------------- bench ----


class Bench:
    def __init__(self, a):
        self.a = a
        self.hatoba, self.out, self.lib = a.hatoba, a.out, a.lib
        self.children = []
        self.results = {}
        self.rows = []
        self.problems = []
        self.goals = []  # (what, met)
        self.deadline = time.time() + a.budget
        self.up = None

    def main_service(self, up):
        return "web"

    def new_state(self, prefix):
        # The data plane's unix socket lives in the state directory: keep the path short.
        d = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
        with open(os.path.join(self.out, "state-dirs.txt"), "a") as f:
            f.write(d + "\n")
        return d

    def write_spec(self, name, ports, services):
        path = os.path.join(self.out, f"hatoba-{name}.yaml")
        with open(path, "w") as f:
            f.write(spec_text(self.a.demo, ports, services))
        p = subprocess.run([self.hatoba, "validate", "-f", path], capture_output=True, text=True)
        if p.returncode != 0:
            raise Problem(f"the generated spec {path} is invalid: {p.stdout}{p.stderr}")
        return path

    def deploy(self, up, service, version, *extra, timeout=90):
        rc, text, secs = up.cli("deploy", service, "--version", version, "--wait", *extra,
                                timeout=timeout)
        if rc != 0:
            raise Problem(f"deploy {service} {version}: exit {rc}: {text.strip()[-300:]}")
        return secs

    def setup(self):
        taken = set()
        self.ports = {}
        for s in ("web", "quiet", "tiny"):
            self.ports[s] = free_port(taken)
            taken.add(self.ports[s])
        self.state = self.new_state("hb-hostile.")
        spec = self.write_spec("main", self.ports, ("web", "quiet", "tiny"))
        self.up = Up(self, self.state, spec, "main")
        self.up.start()
        log(f"hatoba up (pid {self.up.pid}) in {self.state}: web :{self.ports['web']}, "
            f"quiet :{self.ports['quiet']}, tiny :{self.ports['tiny']}")
        for s in ("web", "quiet"):
            self.deploy(self.up, s, "v1")
        self.deploy(self.up, "tiny", "t001")
        self.tiny_deploys = 1
        self.rss_after_1 = None

    def figures_after(self, fig):
        up = self.up
        cf, cr = proc_stats(up.pid)
        dp = dataplane_pid(up.state)
        df, dr = proc_stats(dp)
        fig.update({"ctl_fds": cf, "ctl_rss_kb": cr, "dp_fds": df, "dp_rss_kb": dr, "dp_pid": dp})
        return fig

    def restarted(self, before, after):
        """Instances that ran before and no longer run (or run with another pid) after."""
        return sorted(i for i, pid in before.items() if after.get(i) != pid)

    def row(self, phase, load, restarted, fig, note):
        if "new_conns" in fig:
            a, n = fig["api"], fig["new_conns"]
            note += (f" | API calls ok {a['ok']}/{a['calls']}; new connections to the proxy "
                     f"ok {n['ok']}/{n['calls']} (p99 {n['p99_ms']} ms, errors {n['errors'] or 'none'})")
        self.rows.append((phase, load, restarted, fig, note))

    # -------------------------------------------------------------- phases ----

    def hostile_phase(self, phase, run_hostile, settle=2.0):
        """300 req/s on web; run_hostile() between two snapshots of web's instances."""
        up = self.up
        before, _ = up.instances("web")
        cf0, cr0 = proc_stats(up.pid)
        df0, dr0 = proc_stats(dataplane_pid(up.state))
        load = Load(self, self.ports["web"], phase)
        time.sleep(settle)
        probe = ApiProbe(up, "web")
        fresh = ApiProbe(up, "web", port=self.ports["web"])
        t0 = time.time()
        detail = run_hostile()
        t1 = time.time()
        time.sleep(settle)
        api = probe.stop()
        new_conns = fresh.stop()
        recs = load.stop()
        self.last_recs = recs
        after, d = up.instances("web")
        w = window(recs, t0, t1)
        fig = self.figures_after({"during": w, "whole_load": window(recs), "api": api,
                                  "new_conns": new_conns,
                                  "restarted_healthy": self.restarted(before, after),
                                  "recent_restarts": d["recent_restarts"],
                                  "ctl_fds_before": cf0, "ctl_rss_kb_before": cr0,
                                  "dp_fds_before": df0, "dp_rss_kb_before": dr0,
                                  "hostile": detail, "seconds": round(t1 - t0, 1)})
        return fig

    def run_helper(self, args, timeout):
        return self.run_helpers([args], timeout)[0]

    def run_helpers(self, argvs, timeout):
        """Runs hostile_conns.py once per argv, at the same time; their JSON lines."""
        procs = []
        for args in argvs:
            p = subprocess.Popen([sys.executable, os.path.join(self.lib, "hostile_conns.py"), *args],
                                 stdout=subprocess.PIPE, text=True)
            self.children.append(p)
            procs.append(p)
        deadline = time.time() + timeout
        res = []
        for p in procs:
            try:
                out, _ = p.communicate(timeout=max(1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                p.send_signal(signal.SIGTERM)
                out, _ = p.communicate(timeout=30)
            lines = out.strip().splitlines()
            res.append(json.loads(lines[-1]) if lines else {"error": f"exit {p.returncode}, no output"})
        return res

    def phase_baseline(self):
        fig = self.hostile_phase("baseline", lambda: time.sleep(10) or {})
        self.row("baseline", fig["during"], fig["restarted_healthy"], fig, "nothing hostile, 10 s")
        return fig

    def phase_idle(self, target):
        port = self.up.api.port if target == "api" else self.ports["web"]
        n, hold = self.a.conns, 15

        def hostile():
            # One process holds at most the open-file limit: split the connections.
            import resource
            per = max(1000, resource.getrlimit(resource.RLIMIT_NOFILE)[0] - 1000)
            k = -(-n // per)
            parts = self.run_helpers([["idle", "--port", str(port), "--conns", str(n // k + (i < n % k)),
                                       "--hold", str(hold)] for i in range(k)], timeout=hold + 120)
            out = {"processes": k, "opened": 0, "closed_by_server": 0, "still_open": 0,
                   "connect_errors": {}, "open_seconds": 0, "lifetime_p50_s": None}
            for h in parts:
                for key in ("opened", "closed_by_server", "still_open"):
                    out[key] += h.get(key) or 0
                for e, c in (h.get("connect_errors") or {}).items():
                    out["connect_errors"][e] = out["connect_errors"].get(e, 0) + c
                out["open_seconds"] = max(out["open_seconds"], h.get("open_seconds") or 0)
                if h.get("lifetime_p50_s") is not None:
                    out["lifetime_p50_s"] = max(out["lifetime_p50_s"] or 0, h["lifetime_p50_s"])
            out["parts"] = parts
            return out
        fig = self.hostile_phase(f"idle-{target}", hostile)
        h = fig["hostile"]
        note = (f"{h.get('opened')}/{n} opened in {h.get('open_seconds')}s "
                f"(connect errors {h.get('connect_errors') or 'none'}), "
                f"{h.get('closed_by_server')} cut (median {h.get('lifetime_p50_s')}s), "
                f"{h.get('still_open')} open after {hold}s")
        self.row(f"idle-{target}", fig["during"], fig["restarted_healthy"], fig, note)
        return fig

    def phase_idle_api(self):
        return self.phase_idle("api")

    def phase_idle_proxy(self):
        return self.phase_idle("proxy")

    def phase_slowloris(self):
        n, dur = self.a.slow_conns, 20

        def hostile():
            return self.run_helper(
                ["slowloris", "--target", f"api={self.up.api.port}",
                 "--target", f"proxy={self.ports['web']}", "--conns", str(n),
                 "--duration", str(dur), "--interval", "2", "--reconnect-delay", "1"],
                timeout=dur + 60)
        fig = self.hostile_phase("slowloris", hostile)
        t = fig["hostile"].get("targets", {})
        note = "; ".join(
            f"{k}: {v['connects']} connects, cut after {v['lifetime_p50_s']}s median, "
            f"{v['open_at_end']} open at end" for k, v in t.items())
        self.row("slowloris", fig["during"], fig["restarted_healthy"], fig,
                 f"{n} per target, 1 byte/2s, {dur}s: {note}")
        return fig

    def phase_dpkill(self):
        up = self.up
        info = {}

        def hostile():
            dp = dataplane_pid(up.state)
            if dp is None:
                raise Problem("dpkill: no data plane process found")
            info["old_pid"] = dp
            info["t_kill"] = time.time()
            os.kill(dp, signal.SIGKILL)
            deadline = time.time() + 30
            while time.time() < deadline:
                new = dataplane_pid(up.state)
                if new and new != dp:
                    info["new_pid"] = new
                    info["new_pid_after_s"] = round(time.time() - info["t_kill"], 3)
                    break
                time.sleep(0.02)
            # Let the load see the service come back (or not) for a while.
            end = time.time() + 8
            while time.time() < end:
                time.sleep(0.1)
            return info
        fig = self.hostile_phase("dpkill", hostile)
        fig["recovery"] = recovery(self.last_recs, info["t_kill"])
        r = fig["recovery"]
        note = (f"new data plane after {info.get('new_pid_after_s')}s; first failure at "
                f"+{r['first_failure_s']}s, answers again at +{r['answers_again_s']}s")
        self.row("dpkill", fig["during"], fig["restarted_healthy"], fig, note)
        return fig

    def phase_detect(self):
        up = self.up
        t = time.time()
        rc, text, _ = up.cli("deploy", "quiet", "--version", "v2", "--set", "ERROR_RATE=0.2",
                             "--wait", timeout=150)
        secs = time.time() - t
        m = re.search(r"deployment (d-\S+)", text)
        fig = {"cli_exit": rc, "cli_seconds": round(secs, 2), "cli_tail": text.strip()[-400:]}
        if m:
            d = up.api.get(f"/api/v1/deployments/{m.group(1)}")
            dep = d["deployment"]
            fig["status"] = dep["status"]
            fig["reason"] = dep.get("reason")
            t0 = parse_time(dep["started_at"])
            ev = [(parse_time(e["at"]) - t0, e["kind"], e["message"]) for e in d["events"]]
            fig["events"] = [(round(a, 3), k, msg) for a, k, msg in ev]
            weight = next((a for a, k, msg in ev if k == "weight_changed"
                           and re.search(r"weight [1-9]", msg)), None)
            failed = next((a for a, k, msg in ev if DETECT_RE.search(msg)), None)
            back = next((a for a, k, msg in ev if k == "weight_changed"
                         and re.search(r"weight 0%", msg)), None)
            fig.update({"weight_set_s": weight, "failed_s": failed, "weight_0_s": back})
            fig["detect_s"] = round(failed - weight, 3) if failed is not None and weight is not None else None
            fig["to_rolled_back_s"] = round(back - weight, 3) if back is not None and weight is not None else None
            fig["analysis"] = up.cli("analysis", m.group(1))[1][-2000:]
        note = (f"{fig.get('status')}: canary weight set -> failed verdict {fig.get('detect_s')}s, "
                f"-> weight 0% {fig.get('to_rolled_back_s')}s; reason: {fig.get('reason')}")
        self.row("detect", None, None, self.figures_after(fig), note)
        if fig.get("status") != "rolled_back":
            self.problems.append(f"detect: the bad canary ended {fig.get('status')}, not rolled_back")
        return fig

    def phase_rss(self):
        up = self.up
        n = self.a.deploys
        load = Load(self, self.ports["tiny"], "rss-tiny", rate=50, max_seconds=self.remaining() + 30)
        samples = []

        def sample():
            dp = dataplane_pid(up.state)
            time.sleep(1.0)  # let the old instance's drain and the table swap settle
            df, dr = proc_stats(dp)
            cf, cr = proc_stats(up.pid)
            samples.append({"deployments": self.tiny_deploys, "dp_rss_kb": dr, "dp_fds": df,
                            "ctl_rss_kb": cr, "ctl_fds": cf})
        sample()
        durations = []
        stopped_early = None
        while self.tiny_deploys < n:
            if self.remaining() < 40:
                stopped_early = f"budget: stopped after {self.tiny_deploys} deployments"
                break
            self.tiny_deploys += 1
            durations.append(self.deploy(up, "tiny", f"t{self.tiny_deploys:03d}", timeout=60))
            if self.tiny_deploys in (10, 25, 50, 75) or self.tiny_deploys == n:
                sample()
        recs = load.stop()
        first, last = samples[0], samples[-1]
        growth = (last["dp_rss_kb"] - first["dp_rss_kb"]) / first["dp_rss_kb"] * 100
        cgrowth = (last["ctl_rss_kb"] - first["ctl_rss_kb"]) / first["ctl_rss_kb"] * 100
        fig = self.figures_after({
            "samples": samples, "dp_growth_pct": round(growth, 1), "ctl_growth_pct": round(cgrowth, 1),
            "deploy_s_p50": round(pct(durations, 0.5), 2) if durations else None,
            "tiny_load": window(recs), "stopped_early": stopped_early})
        met = growth <= 10 and not stopped_early
        self.goals.append((f"data-plane RSS after {last['deployments']} deployments within 10 % "
                           f"of after {first['deployments']}: {growth:+.1f} %", met))
        note = (f"data plane {first['dp_rss_kb'] / 1024:.1f} MiB after {first['deployments']} -> "
                f"{last['dp_rss_kb'] / 1024:.1f} MiB after {last['deployments']} ({growth:+.1f} %); "
                f"controller {first['ctl_rss_kb'] / 1024:.1f} -> {last['ctl_rss_kb'] / 1024:.1f} MiB "
                f"({cgrowth:+.1f} %)" + (f"; {stopped_early}" if stopped_early else ""))
        self.row("rss", fig["tiny_load"], None, fig, note)
        return fig

    def canary_weight_set(self, up, dep_id, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            d = up.api.get(f"/api/v1/deployments/{dep_id}")
            if any(e["kind"] == "weight_changed" and re.search(r"weight [1-9]", e["message"])
                   for e in d["events"]):
                return d
            if d["deployment"]["status"] in TERMINAL:
                raise Problem(f"deployment {dep_id} ended {d['deployment']['status']} "
                              "before its canary got weight")
            time.sleep(0.05)
        raise Problem(f"deployment {dep_id}: no canary weight within {timeout}s")

    def start_deploy(self, up, service, version):
        rc, text, _ = up.cli("deploy", service, "--version", version, timeout=30)
        m = re.search(r"deployment (d-\S+)", text)
        if rc != 0 or not m:
            raise Problem(f"deploy {service} {version}: exit {rc}: {text.strip()[-300:]}")
        return m.group(1)

    def phase_ctrlc(self):
        up = self.up
        version = "v2c"
        load = Load(self, self.ports["web"], "ctrlc")
        time.sleep(2)
        dep = self.start_deploy(up, "web", version)
        self.canary_weight_set(up, dep)
        time.sleep(1)
        old_pid = up.pid
        t_int = time.time()
        stop_s = up.signal_and_wait(signal.SIGINT, 60)
        if stop_s is None:
            load.stop()
            raise Problem("ctrlc: hatoba up still runs 60s after SIGINT")
        t_restart = time.time()
        up.start()
        ready_s = time.time() - t_restart
        # Wait for the service to answer 200 again, at most 60 s (the load
        # measures it; this only decides when to stop the load).
        deadline = time.time() + 60
        while time.time() < deadline and not answers(self.ports["web"]):
            time.sleep(0.1)
        time.sleep(4)
        recs = load.stop()
        after_v = window(recs, t_restart)["versions"]
        d = up.api.get(f"/api/v1/deployments/{dep}")
        rec = recovery(recs, t_int)
        fig = self.figures_after({
            "old_pid": old_pid, "new_pid": up.pid, "stop_s": round(stop_s, 3),
            "api_ready_after_restart_s": round(ready_s, 3), "during": window(recs, t_int),
            "recovery_from_sigint": rec, "while_stopping": window(recs, t_int, t_restart),
            "after_restart": window(recs, t_restart),
            "answers_again_after_restart_s": (round(rec["answers_again_s"] - (t_restart - t_int), 3)
                                              if rec["answers_again_s"] else None),
            "canary_status": d["deployment"]["status"], "canary_reason": d["deployment"].get("reason"),
            "versions_after_restart": after_v})
        ws, ar = fig["while_stopping"]["failures"], fig["after_restart"]["failures"]
        note = (f"stop took {stop_s:.1f}s; first failure +{rec['first_failure_s']}s after SIGINT; "
                f"failures SIGINT->exit {ws or 0}, after the restart {ar or 0}; "
                f"answers again {fig['answers_again_after_restart_s']}s after the restart "
                f"({rec['answers_again_s']}s after SIGINT); canary {version} "
                f"{fig['canary_status']}; served after: {after_v}")
        self.row("ctrlc", fig["during"], "n/a (stop)", fig, note)
        return fig

    def phase_diskfull(self):
        mnt = self.new_state("hb-full.")
        with open(os.path.join(self.out, "mounts.txt"), "a") as f:
            f.write(mnt + "\n")
        p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", mnt],
                           capture_output=True, text=True)
        if p.returncode != 0:
            raise Problem(f"diskfull: cannot mount a tmpfs on {mnt} (root needed): {p.stderr.strip()}")
        port = free_port(set(self.ports.values()))
        spec = self.write_spec("diskfull", {"web": port}, ("web",))
        up = Up(self, mnt, spec, "diskfull")
        fig = {"mount": mnt, "size": "4m"}
        try:
            up.start()
            self.deploy(up, "web", "v1")
            before, _ = up.instances("web")
            load = Load(self, port, "diskfull")
            time.sleep(2)
            dep = self.start_deploy(up, "web", "v2")
            self.canary_weight_set(up, dep)
            time.sleep(1)
            filler = os.path.join(mnt, "filler")
            st = os.statvfs(mnt)
            free = st.f_bavail * st.f_frsize
            subprocess.run(["fallocate", "-l", str(free), filler], capture_output=True)
            subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "oflag=append", "conv=notrunc",
                            "bs=4k", "status=none"], capture_output=True)
            t_fill = time.time()
            st = os.statvfs(mnt)
            fig["avail_after_fill"] = st.f_bavail * st.f_frsize
            log(f"diskfull: {mnt} filled ({free} bytes), {fig['avail_after_fill']} left; "
                "held until the deployment ends (at most 45s)")
            statuses = []
            probe = ApiProbe(up, "web")
            while time.time() < t_fill + 45:
                try:
                    d = up.api.get(f"/api/v1/deployments/{dep}")
                    s = (d["deployment"]["status"], d["deployment"].get("reason"))
                    if not statuses or statuses[-1][1:] != s:
                        statuses.append((round(time.time() - t_fill, 2),) + s)
                    if s[0] in TERMINAL:
                        break
                except (OSError, Fatal, ValueError) as e:
                    statuses.append((round(time.time() - t_fill, 2), "api-error", str(e)[:100]))
                time.sleep(0.25)
            _, d_full = up.instances("web")
            fig["problem_while_full"] = d_full.get("problem")
            fig["route_while_full"] = d_full.get("route")
            fig["instances_while_full"] = [(i["id"], i["state"], i["in_route"])
                                           for i in d_full["instances"]]
            os.unlink(filler)
            t_free = time.time()
            after_free, _ = up.instances("web")
            fig["restarted_healthy"] = self.restarted(before, after_free)
            log("diskfull: freed; waiting for the deployment to end and a new one to succeed")
            deadline = time.time() + 30
            while time.time() < deadline:
                d = up.api.get(f"/api/v1/deployments/{dep}")
                if d["deployment"]["status"] in TERMINAL:
                    break
                time.sleep(0.2)
            fig["v2_status"] = d["deployment"]["status"]
            fig["v2_reason"] = d["deployment"].get("reason")
            fig["v2_ended_after_free_s"] = round(time.time() - t_free, 2)
            fig["v2_events"] = [(round(parse_time(e["at"]) - t_fill, 2), e["kind"], e["message"])
                                for e in d["events"]]
            fig["v2_events_while_full"] = sum(1 for e in fig["v2_events"]
                                              if 0 <= e[0] < t_free - t_fill)
            fig["full_seconds"] = round(t_free - t_fill, 2)
            fig["up_log_enospc"] = [ln for ln in up.log_tail(400).split(" | ")
                                    if re.search(r"No space|ENOSPC|full|cannot write", ln)][:10]
            # Recovered: a new deployment goes through (a conflict is retried).
            rc, text = None, ""
            t_v3 = time.time()
            while time.time() < t_free + 45:
                rc, text, _ = up.cli("deploy", "web", "--version", "v3", "--wait", timeout=90)
                if rc != 5:
                    break
                time.sleep(0.5)
            fig["v3_exit"] = rc
            fig["v3_tail"] = text.strip()[-300:]
            fig["v3_seconds"] = round(time.time() - t_v3, 2)
            fig["recovered_after_free_s"] = round(time.time() - t_free, 2) if rc == 0 else None
            api = probe.stop()
            recs = load.stop()
            after, d2 = up.instances("web")
            # v1's instances are replaced by v3's on purpose; count the ones that went before v3.
            fig["statuses_while_full"] = statuses
            fig["api_while_full"] = api
            fig["during_full"] = window(recs, t_fill, t_free)
            fig["after_free"] = window(recs, t_free)
            fig["whole_load"] = window(recs)
            fig["problem_after"] = d2.get("problem")
            fig["route_after"] = d2.get("route")
            cf, cr = proc_stats(up.pid)
            dpp = dataplane_pid(mnt)
            df, dr = proc_stats(dpp)
            fig.update({"ctl_fds": cf, "ctl_rss_kb": cr, "dp_fds": df, "dp_rss_kb": dr,
                        "up_alive": up.pid is not None, "v1_instances_before": before})
        finally:
            fig["stop_needed_sigkill"] = up.stop()
            subprocess.run(["umount", mnt], capture_output=True)
            shutil.rmtree(mnt, ignore_errors=True)
        note = (f"full for {fig.get('full_seconds')}s from the canary's first weight: v2 ended "
                f"{fig.get('v2_status')} ({fig.get('v2_reason')}), "
                f"{fig.get('v2_events_while_full')} of its events recorded while full; "
                f"{fig['during_full']['success_pct']} % ok while full; problem shown: "
                f"{fig.get('problem_while_full')!r}; up alive: {fig.get('up_alive')}; after "
                f"freeing, v2 ended in {fig.get('v2_ended_after_free_s')}s and deploy v3 --wait "
                f"(canary, 30 s of pauses) exited {fig.get('v3_exit')} in {fig.get('v3_seconds')}s; "
                f"stopping hatoba up needed SIGKILL: {fig.get('stop_needed_sigkill')}")
        self.goals.append(("diskfull: after the disk is freed, a new deployment succeeds "
                           f"(deploy v3 exit {fig.get('v3_exit')})", fig.get("v3_exit") == 0))
        self.goals.append(("diskfull: hatoba up stops on SIGTERM within 30 s",
                           not fig.get("stop_needed_sigkill")))
        self.row("diskfull", fig["during_full"], fig.get("restarted_healthy"), fig, note)
        return fig

    # ---------------------------------------------------------------- run ----

    def remaining(self):
        return self.deadline - time.time()

    def run(self, phases):
        main_phases = [p for p in phases if p != "diskfull"]
        if main_phases:
            self.setup()
        for ph in phases:
            if self.remaining() < ESTIMATE[ph] * (0.3 if ph == "rss" else 1):
                self.problems.append(f"{ph}: skipped, {self.remaining():.0f}s left of the budget")
                log(f"=== {ph}: skipped ({self.remaining():.0f}s of the budget left)")
                continue
            log(f"=== {ph}")
            t = time.time()
            try:
                fig = getattr(self, "phase_" + ph.replace("-", "_"))()
                fig["phase_seconds"] = round(time.time() - t, 1)
                self.results[ph] = fig
                for k, v in fig.items():
                    if k in ("events", "v2_events", "analysis", "samples", "statuses_while_full"):
                        continue
                    log(f"  {k}: {json.dumps(v)[:300]}")
            except (Problem, Fatal, OSError, ValueError, KeyError) as e:
                self.problems.append(f"{ph}: {type(e).__name__}: {e}")
                log(f"{ph} went wrong: {e}")
                if self.up and self.up.proc and self.up.proc.poll() is not None and ph != phases[-1]:
                    log("hatoba up is gone: starting it again for the next phases")
                    try:
                        self.up.start()
                    except Problem as e2:
                        self.problems.append(f"restart after {ph}: {e2}")
                        break
        if self.up:
            self.up.stop()

    def stop_children(self):
        for p in self.children:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.children:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()

    def report(self):
        def mib(kb):
            return "-" if kb is None else f"{kb / 1024:.1f}"
        hdr = (f"{'phase':<11} {'requests':>8} {'ok %':>8} {'p99 ms':>7} {'failures':<24} "
               f"{'healthy restarted':>17} {'ctl fds':>7} {'ctl MiB':>7} {'dp fds':>6} {'dp MiB':>6}")
        lines = [hdr, "-" * len(hdr)]
        for phase, w, restarted, fig, note in self.rows:
            if w:
                fails = ",".join(f"{k}:{v}" for k, v in sorted(w["failures"].items())) or "0"
                cols = f"{w['requests']:>8} {w['success_pct'] if w['success_pct'] is not None else '-':>8} " \
                       f"{w['p99_ms'] if w['p99_ms'] is not None else '-':>7} {fails:<24}"
            else:
                cols = f"{'-':>8} {'-':>8} {'-':>7} {'-':<24}"
            r = restarted if isinstance(restarted, str) else ("-" if restarted is None else len(restarted))
            lines.append(f"{phase:<11} {cols} {r:>17} {fig.get('ctl_fds') or '-':>7} "
                         f"{mib(fig.get('ctl_rss_kb')):>7} {fig.get('dp_fds') or '-':>6} "
                         f"{mib(fig.get('dp_rss_kb')):>6}")
        lines.append("")
        for phase, _, _, _, note in self.rows:
            lines.append(f"{phase}: {note}")
        for phase, _, restarted, _, _ in self.rows:
            if isinstance(restarted, list):
                self.goals.append((f"{phase}: healthy instances restarted = {len(restarted)}",
                                   len(restarted) == 0))
        lines.append("")
        lines.append("Goals:")
        for what, met in self.goals:
            lines.append(f"  {'met   ' if met else 'MISSED'} {what}")
        if self.problems:
            lines.append("Problems:")
            lines += [f"  - {p}" for p in self.problems]
        text = "\n".join(lines)
        print(text)
        with open(os.path.join(self.out, "table.txt"), "w") as f:
            f.write(text + "\n")
        with open(os.path.join(self.out, "results.json"), "w") as f:
            json.dump({"args": vars(self.a), "results": self.results, "goals": self.goals,
                       "problems": self.problems}, f, indent=2, default=str)
        if self.problems:
            return 1
        return 0 if all(m for _, m in self.goals) else 3


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--hatoba", required=True)
    ap.add_argument("--demo", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--lib", default=os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--budget", type=float, default=900)
    ap.add_argument("--rate", type=int, default=300)
    ap.add_argument("--conns", type=int, default=25000)
    ap.add_argument("--slow-conns", type=int, default=500)
    ap.add_argument("--deploys", type=int, default=100)
    ap.add_argument("phases", nargs="*")
    a = ap.parse_args()
    phases = a.phases or PHASES
    bad = [p for p in phases if p not in PHASES]
    if bad:
        sys.stderr.write(f"unknown phase(s) {', '.join(bad)}: expected some of {' '.join(PHASES)}\n")
        return 2
    phases = [p for p in PHASES if p in phases]  # the documented order
    b = Bench(a)

    def on_signal(sig, _frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_signal)
    try:
        b.run(phases)
    except KeyboardInterrupt:
        b.problems.append("interrupted")
    except Problem as e:
        b.problems.append(str(e))
        log(f"ERROR: {e}")
    finally:
        b.stop_children()
        if b.up:
            b.up.stop()
    return b.report()


if __name__ == "__main__":
    sys.exit(main())
