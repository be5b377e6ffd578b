#!/usr/bin/env python3
"""Drive bench/rollout.sh's scenarios against a running `hatoba up`.

Usage: rollout_run.py --hatoba BIN --state-dir DIR --out DIR --ports rolling=P,bluegreen=P,canary=P
                      [--rate 600] [--conns 16] [--settle 2] [--ready-after 1]
                      [--probe-period 250ms] [--load-procs 1] [--up-pid PID]
                      [--only rolling,bluegreen,canary]

For each strategy in turn (one service each in the spec bench/rollout.sh
writes): deploys v1 without load, then starts a paced load on the service's
proxy address (bench/lib/rollout_load.py) that runs without a break through
every measured action of that strategy:

  rolling    deploy v2 (4 instances, maxSurge 1), then `hatoba rollback` (cold)
  bluegreen  deploy v2 (measured to the switch), `hatoba rollback` while the
             old colour is warm (it aborts the deployment in progress);
             deploy v2 again, `hatoba promote` (old colour stopped), then
             `hatoba rollback` (cold)
  canary     deploy v2 (25 % / 2 s / 50 % / 2 s), then `hatoba rollback` (cold)

Each action is a window of the load from the command's invocation to the
next action's (the last one ends --settle seconds after it finished). Per
window: requests, failed, achieved req/s. Per deployment: its events (API),
its duration, and each instance's start-up, measured here: from the
`instance_started` event to the first 200 from the instance's /ready, polled
every 10 ms. Per rollback: the time from the command's invocation to 100 %
of the traffic on the old version (the send time of the first request of the
run of old-version responses that lasts to the end of the window).

Writes every raw figure to --out (load logs, command outputs with times,
deployment details, results.json, table.txt) and prints the table.
Exit code: 0 all clean and every goal met; 1 a failed request or an action
that did not do what it should; 3 clean, but a time goal missed.
"""
import argparse
import datetime as dt
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

WARM_GOAL_S = 1.0
COLD_MARGIN_S = 1.0
TERMINAL = {"succeeded", "failed", "aborted", "rolled_back"}
INSTANCE_RE = re.compile(r"instance (\S+) of (\S+) on (\S+):(\d+) \(pid (\d+)\)")


def log(msg):
    sys.stderr.write(f"[bench] {msg}\n")
    sys.stderr.flush()


def parse_time(text):
    if text is None:
        return None
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class Fatal(Exception):
    pass


class ServerGone(Fatal):
    pass


UP_PID = None  # `hatoba up`'s pid, when given


def server_alive():
    if UP_PID is None:
        return True
    try:
        os.kill(UP_PID, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{UP_PID}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


CHILDREN = []  # every process started here, stopped on the way out


def stop_children():
    for p in CHILDREN:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.time() + 5
    for p in CHILDREN:
        try:
            p.wait(timeout=max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


# ------------------------------------------------------------------ API ----


class Api:
    def __init__(self, state_dir):
        with open(os.path.join(state_dir, "server.json")) as f:
            info = json.load(f)
        with open(os.path.join(state_dir, "token")) as f:
            self.token = f.read().strip()
        host, port = info["api"].rsplit(":", 1)
        self.host, self.port = host, int(port)
        self.info = info

    def get(self, path):
        c = http.client.HTTPConnection(self.host, self.port, timeout=5)
        try:
            c.request("GET", path, headers={"Authorization": f"Bearer {self.token}"})
            r = c.getresponse()
            body = r.read()
            if r.status != 200:
                raise Fatal(f"GET {path}: {r.status} {body[:200]!r}")
            return json.loads(body)
        finally:
            c.close()

    def detail(self, dep_id):
        return self.get(f"/api/v1/deployments/{dep_id}")


def ready_200(host, port):
    c = http.client.HTTPConnection(host, port, timeout=0.5)
    try:
        c.request("GET", "/ready")
        return c.getresponse().status == 200
    except OSError:
        return False
    finally:
        c.close()


class Watch:
    """Follows one deployment through the API: its events as they come, and
    the start-up of every instance it starts (started event -> /ready 200)."""

    def __init__(self, api, dep_id, out_dir):
        self.api, self.id, self.out_dir = api, dep_id, out_dir
        self.detail = None
        self.seen = {}  # event message -> first time we saw it (wall)
        self.instances = {}  # id -> dict
        self.lock = threading.Lock()
        self.stop_flag = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        n = 0
        errors = 0
        while not self.stop_flag.is_set():
            try:
                d = self.api.detail(self.id)
            except (OSError, Fatal, ValueError) as e:
                errors += 1
                if errors in (1, 10, 100):
                    log(f"watch {self.id}: {e} ({errors} errors)")
                time.sleep(0.2)
                continue
            now = time.time()
            with self.lock:
                self.detail = d
                for e in d["events"][n:]:
                    self.seen.setdefault(e["message"], now)
                    m = INSTANCE_RE.search(e["message"]) if e["kind"] == "instance_started" else None
                    if m and m.group(1) not in self.instances:
                        inst = {
                            "id": m.group(1), "version": m.group(2),
                            "addr": f"{m.group(3)}:{m.group(4)}", "pid": int(m.group(5)),
                            "started": parse_time(e["at"]), "seen": now, "ready": None,
                        }
                        self.instances[inst["id"]] = inst
                        threading.Thread(target=self.probe, args=(inst,), daemon=True).start()
                n = len(d["events"])
            if d["deployment"]["status"] in TERMINAL:
                break
            time.sleep(0.05)

    def probe(self, inst):
        host, port = inst["addr"].rsplit(":", 1)
        deadline = time.time() + 120
        while time.time() < deadline and not self.stop_flag.is_set():
            t = time.time()
            if ready_200(host, int(port)):
                inst["ready"] = t if inst["ready"] is None else inst["ready"]
                # The request went out at t; the instance became ready in (t - 10 ms, t].
                return
            time.sleep(max(0.0, 0.010 - (time.time() - t)))

    def event_time(self, pattern):
        """`at` of the first event whose message matches pattern."""
        with self.lock:
            for e in (self.detail or {}).get("events", []):
                if re.search(pattern, e["message"]):
                    return parse_time(e["at"])
        return None

    def wait(self, pred, timeout):
        deadline = time.time() + timeout
        while time.time() < deadline:
            with self.lock:
                d = self.detail
            if d is not None and pred(d):
                return d
            if not server_alive():
                self.stop_flag.set()
                raise ServerGone(f"hatoba up (pid {UP_PID}) exited while deployment {self.id} ran")
            time.sleep(0.02)
        return None

    def wait_event(self, pattern, timeout):
        return self.wait(
            lambda d: d["deployment"]["status"] in TERMINAL
            or any(re.search(pattern, e["message"]) for e in d["events"]),
            timeout,
        )

    def wait_terminal(self, timeout):
        return self.wait(lambda d: d["deployment"]["status"] in TERMINAL, timeout)

    def finish(self, grace=3.0):
        """Stop watching; a last look at the detail; write it out."""
        deadline = time.time() + grace
        while time.time() < deadline and any(i["ready"] is None for i in self.instances.values()):
            time.sleep(0.02)
        self.stop_flag.set()
        self.thread.join(timeout=2)
        try:
            d = self.api.detail(self.id)
            with self.lock:
                self.detail = d
        except (OSError, Fatal, ValueError):
            pass
        with open(os.path.join(self.out_dir, f"deployment-{self.id}.json"), "w") as f:
            json.dump({"detail": self.detail, "instances": list(self.instances.values())}, f, indent=2)
        return self.detail

    def startups(self):
        out = []
        for i in self.instances.values():
            s = None if i["ready"] is None or i["started"] is None else i["ready"] - i["started"]
            out.append({**i, "startup_s": s})
        return out


def union_length(intervals):
    total, end = 0.0, None
    for a, b in sorted(intervals):
        if end is None or a > end:
            total += b - a
            end = b
        elif b > end:
            total += b - end
            end = b
    return total


# ------------------------------------------------------------- commands ----


class Cli:
    """One `hatoba` command in the background, every output line timed."""

    def __init__(self, hatoba, state_dir, out_dir, name, args):
        self.name = name
        self.argv = [hatoba, "--state-dir", state_dir, *args]
        self.lines = []
        self.invoked = time.time()
        self.proc = subprocess.Popen(
            self.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        CHILDREN.append(self.proc)
        self.path = os.path.join(out_dir, f"cli-{name}.txt")
        self.t = threading.Thread(target=self.read, daemon=True)
        self.t.start()

    def read(self):
        for line in self.proc.stdout:
            self.lines.append((time.time(), line.rstrip("\n")))

    def wait_id(self, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            for _, line in self.lines:
                m = re.search(r"deployment (d-\S+)", line)
                if m:
                    return m.group(1)
            if self.proc.poll() is not None:
                self.t.join(timeout=1)
                for _, line in self.lines:
                    m = re.search(r"deployment (d-\S+)", line)
                    if m:
                        return m.group(1)
                return None
            time.sleep(0.01)
        return None

    def wait(self, timeout):
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        self.t.join(timeout=2)
        return rc

    def kill(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def save(self):
        with open(self.path, "w") as f:
            f.write("$ " + " ".join(self.argv) + f"\n# invoked at {self.invoked:.6f}\n")
            for t, line in self.lines:
                f.write(f"[{t - self.invoked:8.3f}s] {line}\n")
            f.write(f"# exit code {self.proc.poll()}\n")

    def text(self):
        return "\n".join(line for _, line in self.lines)


# ----------------------------------------------------------------- load ----


class LoadRun:
    def __init__(self, script, port, rate, conns, procs, out_dir, label, max_seconds):
        self.logs, self.procs, self.summaries = [], [], []
        self.label = label
        for k in range(procs):
            logf = os.path.join(out_dir, f"load-{label}-{k}.log")
            self.logs.append(logf)
            self.procs.append(subprocess.Popen(
                [sys.executable, script, "--port", str(port), "--rate", str(rate / procs),
                 "--conns", str(max(1, conns // procs)), "--max-seconds", str(max_seconds),
                 "--log", logf, "--label", f"{label}#{k}" if procs > 1 else label],
                stdout=subprocess.PIPE, text=True,
            ))
            CHILDREN.append(self.procs[-1])

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                out, _ = p.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
                raise Fatal("the load generator did not stop within 30s of SIGTERM")
            if p.returncode != 0 or not out.strip():
                raise Fatal(f"the load generator failed (exit {p.returncode})")
            self.summaries.append(json.loads(out.strip().splitlines()[-1]))
        recs = []
        for logf in self.logs:
            with open(logf) as f:
                for line in f:
                    s, d, st, v, k = line.split()
                    recs.append((float(s), float(d), int(st), v, k))
        recs.sort()
        return recs

    def alive(self):
        return all(p.poll() is None for p in self.procs)


def window_stats(recs, t0, t1):
    w = [r for r in recs if t0 <= r[0] < t1]
    failed = [r for r in w if r[4] != "ok"]
    kinds = {}
    for r in failed:
        key = r[4] if r[4] != "http" else f"http {r[2]}"
        kinds[key] = kinds.get(key, 0) + 1
    versions = {}
    for r in w:
        versions[r[3]] = versions.get(r[3], 0) + 1
    span = t1 - t0
    return {
        "from": t0, "to": t1, "seconds": span, "requests": len(w), "failed": len(failed),
        "failed_kinds": kinds, "versions": versions,
        "rps": len(w) / span if span > 0 else None,
        "first_failures": [list(r) for r in failed[:20]],
    }


def time_to_all(recs, t0, t1, version):
    """Seconds from t0 until every request sent is answered by `version`,
    through t1; None if that never happens. Also how long the all-`version`
    run lasted and how many requests it holds."""
    w = [r for r in recs if t0 <= r[0] < t1]
    if not w:
        return None
    i = len(w)
    while i > 0 and w[i - 1][4] == "ok" and w[i - 1][3] == version:
        i -= 1
    if i == len(w):
        return None
    first = w[i][0]
    return {"seconds": max(0.0, first - t0), "at": first, "run_s": w[-1][0] - first,
            "run_requests": len(w) - i, "other_before": i}


# -------------------------------------------------------------- scenario ----


class Bench:
    def __init__(self, a):
        self.a = a
        self.api = Api(a.state_dir)
        self.ports = dict(kv.split("=") for kv in a.ports.split(","))
        self.results = {"meta": {}, "strategies": []}
        self.problems = []
        self.n = 0

    def cli(self, name, *args):
        self.n += 1
        return Cli(self.a.hatoba, self.a.state_dir, self.a.out, f"{self.n:02d}-{name}", list(args))

    def problem(self, text):
        log(f"PROBLEM: {text}")
        self.problems.append(text)

    def action(self, strat, kind, label, cmd, version_from, version_to, wait_pattern=None,
               timeout=180):
        """Runs one deploy/rollback command and follows its deployment.
        Ends when the deployment is terminal, or (wait_pattern) at the first
        event matching it: the command may still be following then."""
        c = cmd
        act = {"strategy": strat, "kind": kind, "label": label, "argv": c.argv[1:],
               "invoked": c.invoked, "from": version_from, "to": version_to}
        dep_id = c.wait_id()
        if dep_id is None:
            c.wait(10)
            c.save()
            rc = c.proc.poll()
            # Exit 0 without a deployment: done some other way (measured
            # from the traffic alone); anything else: refused.
            act.update(refused=rc != 0, exit_code=rc, output=c.text(), instances=[],
                       startup_sum_s=0.0, startup_wall_s=0.0)
            return act, c, None
        w = Watch(self.api, dep_id, self.a.out)
        if wait_pattern:
            d = w.wait_event(wait_pattern, timeout)
        else:
            d = w.wait_terminal(timeout)
        if d is None:
            self.problem(f"{label}: deployment {dep_id} not done within {timeout}s")
        act["deployment"] = dep_id
        return act, c, w

    def close_action(self, act, c, w, wait_pattern=None):
        if w is None:
            return act
        d = w.finish()
        if d is None:
            self.problem(f"{act['label']}: deployment {w.id} could not be read from the API")
            return act
        dep = d["deployment"]
        act["status"] = dep["status"]
        act["reason"] = dep.get("reason")
        act["strategy_recorded"] = dep["strategy"]
        act["record_started"] = parse_time(dep["started_at"])
        act["record_finished"] = parse_time(dep.get("finished_at"))
        act["record_duration_ms"] = dep.get("duration_ms")
        act["events"] = [(parse_time(e["at"]) - act["invoked"], e["kind"], e["message"])
                         for e in d["events"]]
        if wait_pattern:
            t_end = w.event_time(wait_pattern)
            act["end_label"] = "to the switch"
        else:
            t_end = act["record_finished"]
            act["end_label"] = "to succeeded" if dep["status"] == "succeeded" else f"to {dep['status']}"
        act["ended"] = t_end
        act["duration_s"] = None if t_end is None else t_end - act["invoked"]
        ups = w.startups()
        act["instances"] = ups
        measured = [u["startup_s"] for u in ups if u["startup_s"] is not None]
        act["startup_sum_s"] = sum(measured) if measured else 0.0
        act["startup_wall_s"] = union_length(
            [(u["started"], u["ready"]) for u in ups if u["startup_s"] is not None])
        act["startup_unmeasured"] = len(ups) - len(measured)
        if act["startup_unmeasured"]:
            self.problem(f"{act['label']}: {act['startup_unmeasured']} instance(s) never answered "
                         f"200 on /ready while watched")
        return act

    def settle(self, load):
        time.sleep(self.a.settle)
        if not load.alive():
            raise Fatal("the load generator stopped early")

    def initial(self, strat, svc):
        c = self.cli(f"{strat}-deploy-v1", "deploy", svc, "--version", "v1", "--wait")
        act, c, w = self.action(strat, "initial", f"{strat}: first deploy v1 (no load)", c, None, "v1")
        c.wait(60)
        c.save()
        act = self.close_action(act, c, w)
        if act.get("status") != "succeeded":
            raise Fatal(f"{strat}: the first deployment of v1 did not succeed: {act.get('status')} "
                        f"{act.get('reason') or ''}\n{c.text()}")
        log(f"{strat}: v1 deployed in {act['duration_s']:.2f}s (no load)")
        return act

    def run_strategy(self, strat):
        svc = strat
        port = int(self.ports[strat])
        actions = [self.initial(strat, svc)]
        load = LoadRun(self.a.load_script, port, self.a.rate, self.a.conns, self.a.load_procs,
                       self.a.out, strat, max_seconds=900)
        load_started = time.time()
        log(f"{strat}: load {self.a.rate:.0f} req/s over {self.a.conns} connections "
            f"on 127.0.0.1:{port}")
        try:
            self.settle(load)
            if strat == "bluegreen":
                self.bluegreen(svc, load, actions)
            else:
                self.deploy_then_rollback(strat, svc, load, actions)
            self.settle(load)
        except Fatal as e:
            self.problem(f"{strat}: {e}")
        finally:
            load_ended = time.time()
            recs = load.stop()
        # Windows: baseline, then each measured action up to the next one.
        timed = [a for a in actions if a["kind"] != "initial"]
        bounds = [a["invoked"] for a in timed] + [load_ended]
        total = window_stats(recs, 0, float("inf"))
        res = {"strategy": strat, "service": svc, "port": port,
               "load": {"summaries": load.summaries, **total},
               "baseline": window_stats(recs, load_started, bounds[0]),
               "actions": actions}
        for a, t1 in zip(timed, bounds[1:]):
            a["window"] = window_stats(recs, a["invoked"], t1)
            if a["kind"] == "rollback" and not a.get("refused"):
                a["to_old"] = time_to_all(recs, a["invoked"], t1, a["to"])
                cold = bool(a.get("instances"))
                a["temperature"] = "cold" if cold else "warm"
                start = a.get("startup_wall_s") or 0.0
                a["goal_s"] = start + COLD_MARGIN_S if cold else WARM_GOAL_S
                t = a["to_old"]["seconds"] if a["to_old"] else None
                a["goal_met"] = t is not None and t < a["goal_s"]
                if a["to_old"] is None:
                    self.problem(f"{a['label']}: traffic never went 100 % to {a['to']} in its window")
        for s in load.summaries:
            if s["late_over_10ms"] > 0.01 * max(1, s["requests"]):
                self.problem(f"{strat}: the load generator ran late on {s['late_over_10ms']} "
                             f"requests (max {s['max_late_ms']} ms): it may not hold the rate")
        rate = sum(s["achieved_rate"] or 0 for s in load.summaries)
        if rate < 0.95 * self.a.rate:
            self.problem(f"{strat}: the load reached {rate:.0f} req/s, below the {self.a.rate:.0f} asked")
        return res

    def deploy_then_rollback(self, strat, svc, load, out):
        c = self.cli(f"{strat}-deploy-v2", "deploy", svc, "--version", "v2", "--wait")
        act, c, w = self.action(strat, "deploy", f"{strat}: deploy v2", c, "v1", "v2")
        c.wait(30)
        c.save()
        out.append(self.close_action(act, c, w))
        if act.get("status") != "succeeded":
            self.problem(f"{strat}: deploy v2 ended {act.get('status')}: {act.get('reason')}")
        log(f"{strat}: deploy v2 {act.get('status')} in {fmt_s(act.get('duration_s'))}")
        self.settle(load)
        c = self.cli(f"{strat}-rollback", "rollback", svc)
        act, c, w = self.action(strat, "rollback", f"{strat}: rollback", c, "v2", "v1")
        c.wait(30)
        c.save()
        out.append(self.close_action(act, c, w))
        if act.get("refused"):
            self.problem(f"{strat}: `hatoba rollback` refused (exit {act['exit_code']}): {act['output']}")
        elif act.get("status") != "succeeded":
            self.problem(f"{strat}: rollback ended {act.get('status')}: {act.get('reason')}")
        log(f"{strat}: rollback {act.get('status', 'refused')} in {fmt_s(act.get('duration_s'))}")
        return

    def bluegreen(self, svc, load, out):
        strat = "bluegreen"
        switch = r"switching all traffic to the new colour|canary weight 100%"
        # 1. deploy v2: measured to the switch; the old colour stays warm.
        dep = self.cli("bluegreen-deploy-v2", "deploy", svc, "--version", "v2", "--wait")
        act, dep, w = self.action(strat, "deploy", "bluegreen: deploy v2", dep, "v1", "v2",
                                  wait_pattern=switch)
        out.append(self.close_action(act, dep, w, wait_pattern=switch))
        if act.get("ended") is None:
            self.problem(f"bluegreen: deploy v2 never switched: {act.get('status')} {act.get('reason')}")
        log(f"bluegreen: deploy v2 switched in {fmt_s(act.get('duration_s'))}")
        self.settle(load)
        # 2. warm rollback while the old colour runs. `hatoba rollback` while
        # the deployment of v2 is still in progress (its old colour warm for
        # the scale-down delay) aborts it: traffic goes back in one swap.
        c = self.cli("bluegreen-rollback-warm", "rollback", svc)
        rc = c.wait(60)
        c.save()
        if rc == 0 and "aborting it" in c.text():
            ab = {"strategy": strat, "kind": "rollback",
                  "label": "bluegreen: rollback, old colour warm",
                  "argv": c.argv[1:], "invoked": c.invoked, "from": "v2", "to": "v1",
                  "deployment": dep.wait_id(1), "exit_code": rc}
            d = self.watch_existing(dep)
            ab["status"] = d["deployment"]["status"] if d else None
            ab["ended"] = parse_time(d["deployment"].get("finished_at")) if d else None
            ab["duration_s"] = None if ab["ended"] is None else ab["ended"] - ab["invoked"]
            ab["end_label"] = f"to {ab['status']}"
            ab["instances"], ab["startup_sum_s"], ab["startup_wall_s"] = [], 0.0, 0.0
            out.append(ab)
        else:
            act = {"strategy": strat, "kind": "rollback",
                   "label": "bluegreen: rollback, old colour warm", "argv": c.argv[1:],
                   "invoked": c.invoked, "from": "v2", "to": "v1", "refused": True,
                   "exit_code": rc, "output": c.text(), "instances": [],
                   "startup_sum_s": 0.0, "startup_wall_s": 0.0, "goal_met": False}
            self.problem(f"bluegreen: `hatoba rollback` while the old colour is warm: exit {rc}: "
                         f"{c.text().strip()}")
            out.append(act)
        if dep.wait(30) is None:
            self.problem("bluegreen: the deploy of v2 still runs 30s after the warm rollback")
            dep.kill()
        dep.save()
        log("bluegreen: warm rollback done")
        self.settle(load)
        # 3. deploy v2 again and promote (old colour stopped), then a cold rollback.
        dep = self.cli("bluegreen-deploy-v2-again", "deploy", svc, "--version", "v2", "--wait")
        act, dep, w = self.action(strat, "deploy", "bluegreen: deploy v2 again, then promote",
                                  dep, "v1", "v2", wait_pattern=switch)
        out.append(self.close_action(act, dep, w, wait_pattern=switch))
        self.settle(load)
        self.end_scale_down(svc, "bluegreen-promote", dep)
        self.settle(load)
        c = self.cli("bluegreen-rollback-cold", "rollback", svc)
        act, c, w = self.action(strat, "rollback", "bluegreen: rollback, old colour stopped",
                                c, "v2", "v1", wait_pattern=switch)
        if act.get("refused"):
            self.problem(f"bluegreen: cold `hatoba rollback` refused (exit {act['exit_code']}): "
                         f"{act['output'].strip()}")
            out.append(act)
            return
        out.append(self.close_action(act, c, w, wait_pattern=switch))
        log(f"bluegreen: cold rollback switched in {fmt_s(act.get('duration_s'))}")
        self.settle(load)
        self.end_scale_down(svc, "bluegreen-rollback-cold-promote", c)
        return

    def watch_existing(self, cmd):
        """The detail of the deployment a command follows, once terminal."""
        dep_id = cmd.wait_id(1)
        if not dep_id:
            return None
        w = Watch(self.api, dep_id, self.a.out)
        d = w.wait_terminal(30)
        w.finish(grace=0)
        return d

    def end_scale_down(self, svc, name, follower):
        """`hatoba promote` ends a blue-green deployment's scale-down delay
        while the deployment is still in progress, then waits for its end,
        so that the next rollback is cold. `deploy --wait` returns once the
        new version serves, before that end: the deployment's status says
        whether it still runs, not the command."""
        dep_id = follower.wait_id(1)
        if dep_id is None:
            follower.save()
            return
        try:
            status = self.api.detail(dep_id)["deployment"]["status"]
        except (OSError, Fatal, ValueError) as e:
            self.problem(f"{follower.name}: cannot read deployment {dep_id}: {e}")
            return
        if status in TERMINAL:
            follower.save()
            return
        c = self.cli(name, "promote", svc)
        rc = c.wait(30)
        c.save()
        if rc != 0:
            self.problem(f"`hatoba promote {svc}` exited {rc}: {c.text()}")
        w = Watch(self.api, dep_id, self.a.out)
        if w.wait_terminal(30) is None:
            self.problem(f"deployment {dep_id}: not ended 30s after `hatoba promote`")
        w.finish(grace=0)
        if follower.wait(30) is None:
            self.problem(f"{follower.name}: still running 30s after `hatoba promote`")
            follower.kill()
        follower.save()

    def run(self):
        only = self.a.only.split(",")
        for strat in ("rolling", "bluegreen", "canary"):
            if strat not in only:
                continue
            if not server_alive():
                self.problem(f"{strat}: not run: hatoba up (pid {UP_PID}) is gone")
                continue
            try:
                self.results["strategies"].append(self.run_strategy(strat))
            except Fatal as e:
                self.problem(f"{strat}: {e}")
        return self.report()

    # ----------------------------------------------------------- report ----

    def report(self):
        a = self.a
        lines = []
        p = lines.append
        strategies = self.results["strategies"]
        p("")
        p(f"Rollouts under load: {a.rate:.0f} req/s paced over {a.conns} keep-alive connections "
          f"per strategy; demo app ready {a.ready_after:g}s after it binds; readiness probe every "
          f"{a.probe_period}; instances are "
          + ("Docker containers." if a.runtime == "docker" else "local processes."))
        p("duration: command invoked -> deployment succeeded (blue-green: -> traffic switched; the "
          "deployment itself runs on through the scale-down delay).")
        p("start-ups: instance_started event -> first 200 on its /ready (polled every 10 ms): "
          "sum over the instances, and wall time with at least one starting.")
        p("requests/failed/req/s: from the command to the next one (or the end of the load); "
          "failed = connection errors + non-2xx.")
        p("")
        hdr = (f"{'deploy':<40} {'duration':>9} {'':<14} {'start-ups':>9} {'wall':>6} {'inst':>4} "
               f"{'requests':>8} {'failed':>6} {'req/s':>5}")
        p(hdr)
        p("-" * len(hdr))
        for s in strategies:
            for act in s["actions"]:
                if act["kind"] == "rollback":
                    continue
                wdw = act.get("window") or {}
                p(f"{act['label']:<40} {fmt_s(act.get('duration_s')):>9} {act.get('end_label', ''):<14} "
                  f"{fmt_s(act.get('startup_sum_s')):>9} {fmt_s(act.get('startup_wall_s')):>6} "
                  f"{len(act.get('instances', [])):>4} {wdw.get('requests', '—'):>8} "
                  f"{wdw.get('failed', '—'):>6} {fmt_rps(wdw.get('rps')):>5}"
                  + ("  <-- FAILED REQUESTS" if wdw.get("failed") else ""))
        p("")
        p("to 100% old: command invoked -> the first request of the unbroken run of old-version "
          "answers that lasts to the end of its window.")
        p("goal: < 1 s warm (old instances still up); < start-up wall + 1 s cold (old instances "
          "started again). done: -> deployment succeeded (blue-green: -> switched).")
        p("")
        hdr = (f"{'rollback':<44} {'kind':<4} {'to 100% old':>11} {'goal':>8} {'met':>4} "
               f"{'done':>6} {'start-up':>8} {'requests':>8} {'failed':>6} {'req/s':>5}")
        p(hdr)
        p("-" * len(hdr))
        goals_missed = 0
        for s in strategies:
            for act in s["actions"]:
                if act["kind"] != "rollback":
                    continue
                if act.get("refused"):
                    goals_missed += 1
                    first = (act["output"].strip().splitlines() or [""])[0]
                    p(f"{act['label']:<44} warm REFUSED: exit {act['exit_code']}, {first}")
                    continue
                wdw = act.get("window") or {}
                t = act.get("to_old")
                met = act.get("goal_met")
                goals_missed += not met
                p(f"{act['label']:<44} {act.get('temperature', '?'):<4} "
                  f"{fmt_s(t['seconds'] if t else None):>11} {'< ' + fmt_s(act.get('goal_s')):>8} "
                  f"{'yes' if met else 'NO':>4} {fmt_s(act.get('duration_s')):>6} "
                  f"{fmt_s(act.get('startup_wall_s')):>8} {wdw.get('requests', '—'):>8} "
                  f"{wdw.get('failed', '—'):>6} {fmt_rps(wdw.get('rps')):>5}"
                  + ("  <-- FAILED REQUESTS" if wdw.get("failed") else ""))
        p("")
        hdr = (f"{'whole load':<10} {'requests':>8} {'failed':>6} {'req/s':>5} {'seconds':>7} "
               f"{'late>10ms':>9} {'max late':>8} {'conns':>5}  failures by kind")
        p(hdr)
        p("-" * len(hdr))
        failed_total = 0
        for s in strategies:
            ld = s["load"]
            sums = ld["summaries"]
            late = sum(x["late_over_10ms"] for x in sums)
            maxlate = max((x["max_late_ms"] for x in sums), default=0)
            conns = sum(x["connects"] for x in sums)
            rate = sum(x["achieved_rate"] or 0 for x in sums)
            secs = max((x["last_send"] or 0) - (x["first_send"] or 0) for x in sums) if sums else 0
            failed_total += ld["failed"]
            p(f"{s['strategy']:<10} {ld['requests']:>8} {ld['failed']:>6} {rate:>5.0f} {secs:>6.1f}s "
              f"{late:>9} {maxlate:>6.0f}ms {conns:>5}  "
              f"{json.dumps(ld['failed_kinds']) if ld['failed'] else '-'}")
        p("")
        if self.problems:
            p("Problems:")
            for x in self.problems:
                p(f"  - {x}")
            p("")
        ran = {s["strategy"] for s in strategies}
        broken = bool(self.problems) or ran != set(a.only.split(","))
        if failed_total:
            p(f"Verdict: FAIL: {failed_total} failed request(s)")
        elif broken:
            p("Verdict: FAIL: see the problems above")
        elif goals_missed:
            p(f"Verdict: 0 failed requests; {goals_missed} rollback goal(s) missed")
        else:
            p("Verdict: PASS: 0 failed requests, every rollback goal met")
        text = "\n".join(lines) + "\n"
        sys.stdout.write(text)
        with open(os.path.join(a.out, "table.txt"), "w") as f:
            f.write(text)
        self.results["problems"] = self.problems
        self.results["meta"].update(
            rate=a.rate, conns=a.conns, settle_s=a.settle, ready_after_s=a.ready_after,
            runtime=a.runtime,
            load_procs=a.load_procs, probe_period=a.probe_period, ports=self.ports,
            server=self.api.info,
        )
        self.results["failed_requests"] = failed_total
        self.results["goals_missed"] = goals_missed
        with open(os.path.join(a.out, "results.json"), "w") as f:
            json.dump(self.results, f, indent=1, default=str)
            f.write("\n")
        if failed_total or broken:
            return 1
        return 3 if goals_missed else 0


def fmt_rps(v):
    return "—" if v is None else f"{v:.0f}"


def fmt_s(v):
    return "—" if v is None else f"{v:.2f}s"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--hatoba", required=True)
    ap.add_argument("--state-dir", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--ports", required=True)
    ap.add_argument("--rate", type=float, default=600)
    ap.add_argument("--conns", type=int, default=16)
    ap.add_argument("--settle", type=float, default=2)
    ap.add_argument("--ready-after", type=float, default=1)
    ap.add_argument("--probe-period", default="250ms")
    ap.add_argument("--load-procs", type=int, default=1)
    ap.add_argument("--only", default="rolling,bluegreen,canary")
    ap.add_argument("--runtime", default="process", choices=["process", "docker"])
    ap.add_argument("--up-pid", type=int, help="hatoba up's pid: stop waiting when it is gone")
    ap.add_argument("--load-script", default=os.path.join(os.path.dirname(__file__), "rollout_load.py"))
    a = ap.parse_args()
    global UP_PID
    UP_PID = a.up_pid

    def on_term(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    try:
        return Bench(a).run()
    finally:
        stop_children()


if __name__ == "__main__":
    sys.exit(main())
