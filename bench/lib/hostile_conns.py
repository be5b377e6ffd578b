#!/usr/bin/env python3
"""Hostile connections for bench/hostile.sh: many idle ones, or a slowloris.

Usage: hostile_conns.py idle --port P [--conns 25000] [--hold 15] [--concurrency 256]
       hostile_conns.py slowloris --target NAME=PORT [--target ...] [--conns 500]
                        [--duration 20] [--interval 2] [--reconnect-delay 1]

idle: opens --conns TCP connections to 127.0.0.1:P (at most --concurrency
connects at once, spread over the source addresses 127.0.0.1-4 so that
25k connections do not run out of ephemeral ports), sends nothing, and
holds them for --hold seconds after the last one opened, noting when the
server closes any. Then closes everything.

slowloris: per target, --conns connections, each sending the start of a
request head (`GET / HTTP/1.1`, `Host`) and then one more byte of a header
line that never ends every --interval seconds. A connection the server
closes (or answers) is opened again after --reconnect-delay seconds, until
--duration is over.

Every load is bounded: by the counts above, and by --hold / --duration (and
SIGTERM or SIGINT, which end it early). Prints one JSON line on stdout and
a one-line summary per target on stderr. Loopback only.
"""
import argparse
import asyncio
import errno
import json
import resource
import signal
import socket
import sys
import time

SOURCES = ["127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4"]
IP_BIND_ADDRESS_NO_PORT = 24  # <linux/in.h>: pick the port at connect, not at bind


def raise_nofile(need):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        target = need if hard == resource.RLIM_INFINITY else min(need, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def err_name(e):
    if isinstance(e, asyncio.TimeoutError):
        return "timeout"
    n = getattr(e, "errno", None)
    return errno.errorcode.get(n, str(n)) if n else type(e).__name__


def pct(values, q):
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))]


class Stop:
    def __init__(self):
        self.event = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.event.set)

    async def sleep(self, seconds):
        """Sleeps; returns True when told to stop."""
        try:
            await asyncio.wait_for(self.event.wait(), max(0.0, seconds))
            return True
        except asyncio.TimeoutError:
            return False


async def connect(port, i, timeout=10):
    loop = asyncio.get_running_loop()
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setblocking(False)
    try:
        s.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        s.bind((SOURCES[i % len(SOURCES)], 0))
        await asyncio.wait_for(loop.sock_connect(s, ("127.0.0.1", port)), timeout)
    except BaseException:
        s.close()
        raise
    return s


async def idle(a):
    limit = raise_nofile(a.conns + 256)
    if limit < a.conns + 64:
        sys.stderr.write(f"open-file limit {limit} is too low for {a.conns} connections\n")
        return 1
    stop = Stop()
    loop = asyncio.get_running_loop()
    sem = asyncio.Semaphore(a.concurrency)
    socks = {}  # fileno -> (socket, opened at)
    closed = []  # lifetimes of the connections the server closed
    errors = {}

    def on_readable(fd):
        s, opened = socks.pop(fd, (None, None))
        if s is None:
            return
        loop.remove_reader(fd)
        closed.append(time.monotonic() - opened)
        s.close()

    async def open_one(i):
        async with sem:
            if stop.event.is_set():
                return
            try:
                s = await connect(a.port, i)
            except (OSError, asyncio.TimeoutError) as e:
                k = err_name(e)
                errors[k] = errors.get(k, 0) + 1
                return
            fd = s.fileno()
            socks[fd] = (s, time.monotonic())
            loop.add_reader(fd, on_readable, fd)

    t0 = time.monotonic()
    await asyncio.gather(*(open_one(i) for i in range(a.conns)))
    open_s = time.monotonic() - t0
    opened = len(socks) + len(closed)
    await stop.sleep(a.hold)
    still_open = len(socks)
    for fd, (s, _) in list(socks.items()):
        loop.remove_reader(fd)
        s.close()
    res = {
        "mode": "idle", "port": a.port, "conns": a.conns, "opened": opened,
        "connect_errors": errors, "open_seconds": round(open_s, 2), "hold_seconds": a.hold,
        "closed_by_server": len(closed), "still_open": still_open,
        "lifetime_p50_s": round(pct(closed, 0.5), 2) if closed else None,
        "lifetime_max_s": round(max(closed), 2) if closed else None,
    }
    print(json.dumps(res))
    sys.stderr.write(
        f"[bench] idle :{a.port}: {opened} of {a.conns} opened in {open_s:.1f}s "
        f"(errors {errors or 'none'}), {len(closed)} closed by the server "
        f"(median after {res['lifetime_p50_s']} s), {still_open} still open after {a.hold}s\n"
    )
    return 0


async def slowloris(a):
    targets = []
    for t in a.target:
        name, _, port = t.partition("=")
        targets.append((name, int(port)))
    raise_nofile(a.conns * len(targets) + 256)
    stop = Stop()
    end = time.monotonic() + a.duration
    stats = {
        name: {"port": port, "connects": 0, "connect_errors": {}, "closed_by_server": 0,
               "answered": {}, "lifetimes": [], "open_at_end": 0, "bytes_sent": 0}
        for name, port in targets
    }

    async def slot(name, port, i):
        st = stats[name]
        while not stop.event.is_set() and time.monotonic() < end:
            st["connects"] += 1
            try:
                s = await connect(port, i, timeout=5)
            except (OSError, asyncio.TimeoutError) as e:
                k = err_name(e)
                st["connect_errors"][k] = st["connect_errors"].get(k, 0) + 1
                if await stop.sleep(min(a.reconnect_delay, end - time.monotonic())):
                    return
                continue
            reader, writer = await asyncio.open_connection(sock=s)
            opened = time.monotonic()
            ended = False
            try:
                writer.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
                st["bytes_sent"] += 38
                while time.monotonic() < end and not stop.event.is_set():
                    try:
                        data = await asyncio.wait_for(reader.read(256), a.interval)
                    except asyncio.TimeoutError:
                        writer.write(b"x")
                        st["bytes_sent"] += 1
                        await writer.drain()
                        continue
                    # The server answered or closed: either way this connection is over.
                    if data:
                        line = data.split(b"\r\n", 1)[0].decode("latin-1")[:40]
                        st["answered"][line] = st["answered"].get(line, 0) + 1
                    ended = True
                    break
            except (OSError, ConnectionError):
                ended = True
            if ended:
                st["closed_by_server"] += 1
                st["lifetimes"].append(time.monotonic() - opened)
            else:
                st["open_at_end"] += 1
            writer.close()
            if ended and await stop.sleep(min(a.reconnect_delay, end - time.monotonic())):
                return

    await asyncio.gather(*(slot(n, p, i) for n, p in targets for i in range(a.conns)))
    out = {"mode": "slowloris", "conns_per_target": a.conns, "duration": a.duration,
           "interval": a.interval, "targets": {}}
    for name, st in stats.items():
        lt = st.pop("lifetimes")
        st["lifetime_p50_s"] = round(pct(lt, 0.5), 2) if lt else None
        st["lifetime_max_s"] = round(max(lt), 2) if lt else None
        out["targets"][name] = st
        sys.stderr.write(
            f"[bench] slowloris {name} :{st['port']}: {st['connects']} connects, "
            f"{st['closed_by_server']} ended by the server (median after {st['lifetime_p50_s']}s, "
            f"answers {st['answered'] or 'none'}), {st['open_at_end']} still open at the end, "
            f"connect errors {st['connect_errors'] or 'none'}\n"
        )
    print(json.dumps(out))
    return 0


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="mode", required=True)
    i = sub.add_parser("idle")
    i.add_argument("--port", type=int, required=True)
    i.add_argument("--conns", type=int, default=25000)
    i.add_argument("--hold", type=float, default=15)
    i.add_argument("--concurrency", type=int, default=256)
    s = sub.add_parser("slowloris")
    s.add_argument("--target", action="append", required=True, help="NAME=PORT")
    s.add_argument("--conns", type=int, default=500)
    s.add_argument("--duration", type=float, default=20)
    s.add_argument("--interval", type=float, default=2)
    s.add_argument("--reconnect-delay", type=float, default=1)
    a = ap.parse_args()
    return asyncio.run(idle(a) if a.mode == "idle" else slowloris(a))


if __name__ == "__main__":
    sys.exit(main())
