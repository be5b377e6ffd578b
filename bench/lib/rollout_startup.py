#!/usr/bin/env python3
"""Start-to-ready of the demo app as a process and as a Docker container.

Usage: rollout_startup.py --binary BIN --image IMAGE --out DIR [--runs 5]
                          [--docker-socket PATH]   # default: DOCKER_HOST's, else /var/run/docker.sock

The same binary (bench/rollout.sh puts BIN, with the libraries it needs,
in IMAGE `FROM scratch`) is started --runs times each way, one at a time,
and polled on /ready every 10 ms until the first 200:

  process    fork+exec of BIN with PORT set -> first 200 on /ready
  container  POST /containers/create -> POST /containers/{id}/start ->
             first 200 on /ready through the port the engine published on
             127.0.0.1, the calls Hatoba's Docker runtime makes (through the
             Engine API on its Unix socket, as Hatoba does; no docker CLI)

The container's figure is split into create, start (until the start call
returns) and ready (from there to the first 200). Each instance is
stopped and removed before the next run. Prints a table, writes
startup.json to --out. Exit code: 0, or 1 when an instance never became
ready within 30 s.
"""
import argparse
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time

READY_LIMIT_S = 30.0
LABEL = "hatoba.bench"


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout=30):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.unix_path)
        self.sock = s


class Engine:
    def __init__(self, path):
        self.path = path

    def call(self, method, url, body=None, ok=(200, 201, 204, 304)):
        c = UnixHTTPConnection(self.path)
        try:
            data = None if body is None else json.dumps(body)
            headers = {"Content-Type": "application/json"} if data is not None else {}
            c.request(method, url, body=data, headers=headers)
            r = c.getresponse()
            text = r.read()
            if r.status not in ok:
                raise RuntimeError(f"{method} {url}: {r.status} {text[:300]!r}")
            return json.loads(text) if text else None
        finally:
            c.close()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def ready_200(port):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=0.5)
    try:
        c.request("GET", "/ready")
        return c.getresponse().status == 200
    except OSError:
        return False
    finally:
        c.close()


def wait_ready(port, alive):
    """Seconds until the first 200 on /ready (polled every 10 ms), from now."""
    t0 = time.time()
    while time.time() - t0 < READY_LIMIT_S:
        t = time.time()
        if ready_200(port):
            return t - t0
        if not alive():
            return None
        time.sleep(max(0.0, 0.010 - (time.time() - t)))  # poll interval: every 10 ms
    return None


def process_run(binary):
    port = free_port()
    env = dict(os.environ, PORT=str(port))
    t0 = time.time()
    p = subprocess.Popen([binary, "--version-label", "bench"], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        waited = wait_ready(port, lambda: p.poll() is None)
        total = None if waited is None else time.time() - t0
    finally:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    return {"total_s": total}


def container_run(engine, image, run_label):
    body = {
        "Image": image,
        "Cmd": ["--version-label", "bench"],
        "Env": ["PORT=8080"],
        "Labels": {LABEL: run_label},
        "ExposedPorts": {"8080/tcp": {}},
        "HostConfig": {
            "PortBindings": {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": ""}]},
            "Init": True,
        },
    }
    t0 = time.time()
    created = engine.call("POST", "/containers/create", body)
    cid = created["Id"]
    t1 = time.time()
    try:
        engine.call("POST", f"/containers/{cid}/start")
        t2 = time.time()
        info = engine.call("GET", f"/containers/{cid}/json")
        port = int(info["NetworkSettings"]["Ports"]["8080/tcp"][0]["HostPort"])

        def alive():
            return engine.call("GET", f"/containers/{cid}/json")["State"]["Running"]

        waited = wait_ready(port, alive)
        t3 = time.time()
        return {"create_s": t1 - t0, "start_s": t2 - t1,
                "ready_s": None if waited is None else t3 - t2,
                "total_s": None if waited is None else t3 - t0}
    finally:
        engine.call("DELETE", f"/containers/{cid}?force=true", ok=(200, 204, 404))


def stats(values):
    v = [x for x in values if x is not None]
    if not v:
        return {"n": 0}
    return {"n": len(v), "median": statistics.median(v), "min": min(v), "max": max(v)}


def ms(x):
    return "—" if x is None else f"{x * 1000:.0f} ms"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("--image", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--runs", type=int, default=5)
    host = os.environ.get("DOCKER_HOST", "")
    ap.add_argument("--docker-socket", default=host[len("unix://"):] if host.startswith("unix://")
                    else "/var/run/docker.sock")
    a = ap.parse_args()
    engine = Engine(a.docker_socket)
    run_label = f"startup-{os.getpid()}"
    procs, conts = [], []
    try:
        for _ in range(a.runs):
            procs.append(process_run(a.binary))
            conts.append(container_run(engine, a.image, run_label))
    finally:
        # Whatever happened: none of this run's containers left.
        try:
            left = engine.call("GET", "/containers/json?all=true&filters="
                               + json.dumps({"label": [f"{LABEL}={run_label}"]}).replace(" ", ""))
            for c in left or []:
                engine.call("DELETE", f"/containers/{c['Id']}?force=true", ok=(200, 204, 404))
        except (OSError, RuntimeError) as e:
            sys.stderr.write(f"[bench] could not list leftover containers: {e}\n")
    res = {
        "runs": a.runs,
        "process": {"total": stats([p["total_s"] for p in procs]), "raw": procs},
        "container": {k: stats([c[f"{k}_s"] for c in conts]) for k in ("create", "start", "ready", "total")},
    }
    res["container"]["raw"] = conts
    with open(os.path.join(a.out, "startup.json"), "w") as f:
        json.dump(res, f, indent=1)
    lines = [
        "",
        f"Start-to-ready of one instance, the same binary, {a.runs} runs each (median, min-max):",
        f"{'':<34} {'median':>8} {'min':>8} {'max':>8}",
    ]

    def row(name, s):
        lines.append(f"{name:<34} {ms(s.get('median')):>8} {ms(s.get('min')):>8} {ms(s.get('max')):>8}")

    row("process: exec -> /ready 200", res["process"]["total"])
    row("container: create -> /ready 200", res["container"]["total"])
    row("  create (API call)", res["container"]["create"])
    row("  start (API call)", res["container"]["start"])
    row("  started -> /ready 200", res["container"]["ready"])
    sys.stdout.write("\n".join(lines) + "\n")
    failed = any(p["total_s"] is None for p in procs) or any(c["total_s"] is None for c in conts)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
