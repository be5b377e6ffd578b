#!/usr/bin/env python3
"""bench/api.sh's driver: the control plane's API under load.

Usage: api_run.py --hatoba BIN --out DIR --state DIR [--clients 100]
                  [--seconds 10] [--subscribers 200] [--idle 1000]
                  [--baseline OLD_BIN]

Starts `hatoba up` on a spec of one canary service (the demo app,
`hatoba demo-app`, 2 instances; 50 % for 3 s, then 100 %), deploys v1, and
measures, all on 127.0.0.1:

1. reads: --clients concurrent clients, each sending `GET
   /api/v1/status`, then `GET /api/v1/deployments?limit=20` (the history),
   then one service's detail, one deployment's detail, then `GET
   /api/v1/health` (the API's floor: no operation behind it), for
   --seconds: requests/s and p50/p99 of each; with --baseline, the same
   reads (service, deployment, health) first on the API before #15 (the
   binary given, same spec), side by side;
2. the event stream: --subscribers clients follow `GET /api/v1/events`
   through a canary deployment of v2; every one must get every event of it,
   once, in order (goal: 0 lost, 0 out of order); the time from an
   event's `at` to its arrival (median, p99);
3. a data-plane kill -9 under load (8 clients on the service's address):
   connections refused before the data plane is back (goal 0), and cut;
4. --idle subscribers that read nothing: `hatoba up`'s resident memory
   before and with them, and a read still answered.

Writes results.json and prints a table. Exit 0 every goal met, 1 not.
"""
import argparse
import asyncio
import datetime as dt
import json
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import time

import aiohttp

import up_proc


def log(msg):
    sys.stderr.write(f"[bench] {msg}\n")
    sys.stderr.flush()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def ts(text):
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class Api:
    def __init__(self, state):
        info = json.load(open(os.path.join(state, "server.json")))
        self.base = f"http://{info['api']}"
        self.headers = {"Authorization": "Bearer " + open(os.path.join(state, "token")).read().strip()}


# What each read asks, by API: `v1` is this build's; `old` the API before
# the control plane v2 (#15: hand-written routes under /v1, no history or
# status of every service), for --baseline. `DEPLOYMENT` is replaced by
# the id of the deployment of v1.
READS = {
    "v1": [("status", "/api/v1/status"), ("history", "/api/v1/deployments?limit=20"),
           ("service", "/api/v1/services/web"), ("deployment", "/api/v1/deployments/DEPLOYMENT"),
           ("health", "/api/v1/health")],
    "old": [("service", "/v1/services/web"), ("deployment", "/v1/deployments/DEPLOYMENT"),
            ("health", "/v1/health")],
}


async def reads(api, clients, seconds, deployment, kind="v1"):
    paths = [(name, path.replace("DEPLOYMENT", deployment)) for name, path in READS[kind]]
    lat = {name: [] for name, _ in paths}
    errors = 0
    stop = time.monotonic() + seconds

    async def client(session):
        nonlocal errors
        while time.monotonic() < stop:
            for name, path in paths:
                t = time.monotonic()
                try:
                    async with session.get(api.base + path, headers=api.headers) as r:
                        await r.read()
                        if r.status != 200:
                            errors += 1
                            continue
                except aiohttp.ClientError:
                    errors += 1
                    continue
                lat[name].append((time.monotonic() - t) * 1000)

    # One request per connection, as the API serves them (keep-alive off).
    conn = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=conn) as session:
        await asyncio.gather(*(client(session) for _ in range(clients)))
    return {name: {"requests": len(v), "per_s": round(len(v) / seconds, 1),
                   "p50_ms": round(pct(v, 50), 2), "p99_ms": round(pct(v, 99), 2)}
            for name, v in lat.items()} | {"errors": errors}


async def subscribe(api, session, after, got, done):
    url = f"{api.base}/api/v1/events?after={after}"
    async with session.get(url, headers=api.headers, timeout=aiohttp.ClientTimeout(total=None, sock_read=None)) as r:
        if r.status != 200:
            raise RuntimeError(f"events: {r.status}")
        data = None
        async for raw in r.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("data: "):
                data = line[6:]
            elif line == "" and data is not None:
                e = json.loads(data)
                got.append((e["id"], e["kind"], time.time() - ts(e["at"])))
                data = None
                if e["kind"] == "status_changed" and e["data"].get("to") in ("succeeded", "failed", "aborted", "rolled_back"):
                    return
            if done.is_set():
                return


async def stream(api, hatoba, state, subscribers):
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        async with session.get(f"{api.base}/api/v1/events?follow=false&limit=1", headers=api.headers) as r:
            after = (await r.json())["last_id"] or 0
        done = asyncio.Event()
        gots = [[] for _ in range(subscribers)]
        tasks = [asyncio.ensure_future(subscribe(api, session, after, g, done)) for g in gots]
        await asyncio.sleep(1)  # pacing: the subscribers' streams open before the deployment
        began = time.time()
        p = await asyncio.to_thread(subprocess.run, [hatoba, "--state-dir", state, "deploy", "web",
                                                     "--version", "v2", "--wait=complete"],
                                    capture_output=True, text=True)
        took = time.time() - began
        try:
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 30)
        except asyncio.TimeoutError:
            done.set()
    ids = [[i for i, _, _ in g] for g in gots]
    reference = max(ids, key=len)
    lost = sum(len(set(reference) - set(x)) for x in ids)
    disorder = sum(1 for x in ids if x != sorted(x) or len(x) != len(set(x)))
    delays = [d * 1000 for g in gots for _, _, d in g]
    return {"deploy_exit": p.returncode, "deploy_s": round(took, 2), "events": len(reference),
            "subscribers": subscribers, "lost": lost, "out_of_order_or_repeated": disorder,
            "delay_median_ms": round(statistics.median(delays), 2) if delays else None,
            "delay_p99_ms": round(pct(delays, 99), 2) if delays else None}


def data_plane_pid(state):
    state = os.path.abspath(state)
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            args = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
        except OSError:
            continue
        if b"dataplane" in args and any(state.encode() in a for a in args):
            return int(pid)
    return None


async def kill_data_plane(port, state):
    counts = {"ok": 0, "refused": 0, "cut": 0, "other": 0}
    stop = asyncio.Event()

    async def client(session):
        while not stop.is_set():
            try:
                async with session.get(f"http://127.0.0.1:{port}/") as r:
                    await r.read()
                    counts["ok" if r.status == 200 else "other"] += 1
            except aiohttp.ClientConnectorError:
                counts["refused"] += 1
            except (aiohttp.ClientError, ConnectionError):
                counts["cut"] += 1

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, force_close=True)) as session:
        tasks = [asyncio.ensure_future(client(session)) for _ in range(8)]
        await asyncio.sleep(2)  # pacing: load before the kill
        first = data_plane_pid(state)
        if first is None:
            raise RuntimeError("no data plane process found")
        os.kill(first, signal.SIGKILL)
        deadline = time.time() + 30
        while time.time() < deadline:
            pid = data_plane_pid(state)
            if pid and pid != first:
                break
            await asyncio.sleep(0.05)  # poll interval
        await asyncio.sleep(3)  # pacing: load after the restart
        stop.set()
        await asyncio.gather(*tasks)
    return counts


async def idle(api, up_pid, n):
    before = rss_kib(up_pid)
    socks = []
    for _ in range(n):
        r, w = await asyncio.open_connection(*api.base[7:].rsplit(":", 1))
        w.write(f"GET /api/v1/events HTTP/1.1\r\nHost: x\r\n{list(api.headers)[0]}: {list(api.headers.values())[0]}\r\n\r\n".encode())
        socks.append((r, w))
    await asyncio.sleep(2)  # pacing: the server has taken them all
    with_them = rss_kib(up_pid)
    t = time.monotonic()
    async with aiohttp.ClientSession() as s:
        async with s.get(api.base + "/api/v1/status", headers=api.headers) as r:
            status = r.status
    read_ms = (time.monotonic() - t) * 1000
    for _, w in socks:
        w.close()
    return {"idle_subscribers": n, "rss_before_kib": before, "rss_with_kib": with_them,
            "per_subscriber_bytes": round((with_them - before) * 1024 / max(n, 1)),
            "status_answer": status, "status_ms": round(read_ms, 1)}


def deploy_v1(hatoba, state):
    """Deploys v1 of `web` and waits for it; its deployment id."""
    subprocess.run([hatoba, "--state-dir", state, "deploy", "web", "--version", "v1", "--wait"],
                   check=True, capture_output=True)
    out = subprocess.run([hatoba, "--state-dir", state, "history", "web", "-o", "json"],
                         check=True, capture_output=True, text=True).stdout
    rows = json.loads(out)
    rows = rows.get("deployments", rows) if isinstance(rows, dict) else rows
    return rows[0]["id"]


async def amain(args):
    port = free_port()
    spec = os.path.join(args.out, "hatoba.yaml")
    with open(spec, "w") as f:
        f.write(f"""app: api-bench
services:
  web:
    process:
      command: {args.hatoba}
      args: ["demo-app", "--version-label", "${{VERSION}}"]
    replicas: 2
    route: {{listen: 127.0.0.1:{port}}}
    health:
      readiness: {{path: /ready, period: 200ms}}
    drain: 2s
    strategy:
      canary:
        steps:
          - setWeight: 50
          - pause: {{duration: 3s}}
""")
    res = {}
    if args.baseline:
        # The same spec and reads on the API before #15, first, in a state
        # directory of its own.
        state = os.path.join(args.out, "baseline-state")
        base = await up_proc.start(args.baseline, state, spec, os.path.join(args.out, "baseline-up.log"))
        try:
            deployment = deploy_v1(args.baseline, state)
            log(f"baseline reads ({args.baseline}): {args.clients} clients for {args.seconds}s")
            res["baseline_reads"] = await reads(Api(state), args.clients, args.seconds, deployment, "old")
        finally:
            up_proc.stop(base)
    up = await up_proc.start(args.hatoba, args.state, spec, os.path.join(args.out, "up.log"))
    try:
        api = Api(args.state)
        deployment = deploy_v1(args.hatoba, args.state)
        log(f"reads: {args.clients} clients for {args.seconds}s")
        res["reads"] = await reads(api, args.clients, args.seconds, deployment)
        log(f"event stream: {args.subscribers} subscribers through a canary")
        res["stream"] = await stream(api, args.hatoba, args.state, args.subscribers)
        log("data plane kill -9 under load")
        res["kill"] = await kill_data_plane(port, args.state)
        log(f"{args.idle} idle subscribers")
        res["idle"] = await idle(api, up.pid, args.idle)
        return res
    finally:
        up_proc.stop(up)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--hatoba", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--state", required=True)
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--subscribers", type=int, default=200)
    ap.add_argument("--idle", type=int, default=1000)
    ap.add_argument("--baseline", default="",
                    help="a hatoba binary from before #15 (e.g. commit 9f48ca1): the same reads on its API")
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    res = asyncio.run(amain(args))
    json.dump(res, open(os.path.join(args.out, "results.json"), "w"), indent=2)
    r = res["reads"]
    b = res.get("baseline_reads", {})
    print(f"{'read':<10} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}   ({args.clients} clients, errors {r['errors']})"
          + (f"   before #15: {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}  p99 ratio  (errors {b['errors']})" if b else ""))
    for k, _ in READS["v1"]:
        line = f"{k:<10} {r[k]['per_s']:>8} {r[k]['p50_ms']:>8} {r[k]['p99_ms']:>8}"
        if k in b:
            ratio = r[k]["p99_ms"] / b[k]["p99_ms"] if b[k]["p99_ms"] else float("nan")
            line += f"   {'':<12}{b[k]['per_s']:>8} {b[k]['p50_ms']:>8} {b[k]['p99_ms']:>8}  {ratio:>8.2f}x"
        print(line)
    s = res["stream"]
    print(f"stream: {s['subscribers']} subscribers, {s['events']} events of the canary each, lost {s['lost']}, "
          f"out of order/repeated {s['out_of_order_or_repeated']}, delay median {s['delay_median_ms']} ms, p99 {s['delay_p99_ms']} ms "
          f"(deploy exit {s['deploy_exit']}, {s['deploy_s']} s)")
    k = res["kill"]
    print(f"data-plane kill -9 under load: {k['ok']} ok, {k['refused']} refused, {k['cut']} cut, {k['other']} other")
    i = res["idle"]
    print(f"idle subscribers: {i['idle_subscribers']}, hatoba up RSS {i['rss_before_kib']} -> {i['rss_with_kib']} KiB "
          f"({i['per_subscriber_bytes']} B each); status answered {i['status_answer']} in {i['status_ms']} ms")
    met = (r["errors"] == 0 and s["lost"] == 0 and s["out_of_order_or_repeated"] == 0 and s["deploy_exit"] == 0
           and k["refused"] == 0 and i["status_answer"] == 200)
    print(f"goals (no read error, every event to every subscriber in order, 0 refused at a data-plane kill, "
          f"reads answered with 1,000 idle subscribers): {'met' if met else 'MISSED'}")
    sys.exit(0 if met else 1)


if __name__ == "__main__":
    main()
