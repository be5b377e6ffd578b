#!/usr/bin/env python3
"""Paced HTTP/1.1 load for bench/rollout.sh: GET / at a fixed rate, every response logged.

Usage: rollout_load.py --port P [--host 127.0.0.1] [--rate 600] [--conns 16]
                       [--max-seconds 600] [--timeout 5] --log FILE

Sends `GET /` to 127.0.0.1:P over --conns keep-alive connections (asyncio,
stdlib only), paced to --rate requests per second in total: request i is due
at start + i/rate, whichever connection is free takes it; a connection that
falls behind sends at once to catch up, so the average rate holds through a
stall (the lateness is reported). Runs until SIGTERM or SIGINT, or
--max-seconds, then lets the requests in flight finish (at most --timeout).

Every request is one line of FILE (written at the end):

    SEND_S DONE_S STATUS VERSION KIND

SEND_S, DONE_S: wall-clock seconds (time.time() scale, µs); STATUS: the HTTP
status, 0 when there was none; VERSION: the `x-version` header, `-` when
absent; KIND: `ok` (2xx), `http` (non-2xx), `connect` (connection refused or
failed), `closed` (the connection ended before a whole response), `reset`
(an error reading or writing), `timeout` (no whole response within --timeout).
Everything but `ok` is a failed request.

Prints a one-line JSON summary on stdout, and one line on stderr.
"""
import argparse
import asyncio
import json
import signal
import sys
import time


class Load:
    def __init__(self, a):
        self.a = a
        self.interval = 1.0 / a.rate
        self.records = []
        self.stopping = False
        self.request = (
            f"GET / HTTP/1.1\r\nHost: {a.host}:{a.port}\r\nUser-Agent: hatoba-bench-rollout\r\n\r\n"
        ).encode()
        self.max_late = 0.0
        self.late_10ms = 0
        self.connects = 0
        # In flight per connection: (deadline, writer), for the watchdog.
        self.inflight = {}

    def wall(self, mono):
        return self.wall0 + (mono - self.mono0)

    async def connect(self):
        self.connects += 1
        return await asyncio.open_connection(self.a.host, self.a.port)

    async def one(self, conn_id, reader, writer):
        """One request on an open connection -> (status, version, kind, keep)."""
        loop = self.loop
        self.inflight[conn_id] = (loop.time() + self.a.timeout, writer)
        try:
            writer.write(self.request)
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as e:
            return 0, "-", ("closed" if not self.timed_out(conn_id) else "timeout"), False
        except (ConnectionError, OSError, asyncio.LimitOverrunError):
            return 0, "-", ("reset" if not self.timed_out(conn_id) else "timeout"), False
        lines = head.split(b"\r\n")
        try:
            status = int(lines[0].split(b" ", 2)[1])
        except (IndexError, ValueError):
            return 0, "-", "reset", False
        version = "-"
        length = None
        chunked = False
        keep = True
        for line in lines[1:]:
            k, sep, v = line.partition(b":")
            if not sep:
                continue
            k = k.strip().lower()
            if k == b"x-version":
                version = v.strip().decode("latin-1") or "-"
            elif k == b"content-length":
                length = int(v.strip())
            elif k == b"transfer-encoding" and b"chunked" in v.lower():
                chunked = True
            elif k == b"connection" and v.strip().lower() == b"close":
                keep = False
        try:
            if chunked:
                while True:
                    size_line = await reader.readuntil(b"\r\n")
                    size = int(size_line.split(b";")[0].strip(), 16)
                    await reader.readexactly(size + 2)
                    if size == 0:
                        break
            elif length:
                await reader.readexactly(length)
            elif length is None and status not in (204, 304):
                keep = False  # body until close; we never read it
        except asyncio.IncompleteReadError:
            return status, version, ("closed" if not self.timed_out(conn_id) else "timeout"), False
        except (ConnectionError, OSError, ValueError):
            return status, version, ("reset" if not self.timed_out(conn_id) else "timeout"), False
        finally:
            self.inflight.pop(conn_id, None)
        kind = "ok" if 200 <= status < 300 else "http"
        return status, version, kind, keep

    def timed_out(self, conn_id):
        return conn_id in self.expired

    async def worker(self, conn_id):
        loop = self.loop
        reader = writer = None
        while not self.stopping:
            due = self.next_due
            self.next_due += self.interval
            if due > self.end_mono:
                break
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
                if self.stopping:
                    break
            else:
                late = -delay
                if late > self.max_late:
                    self.max_late = late
                if late > 0.010:
                    self.late_10ms += 1
            sent = loop.time()
            if writer is None:
                try:
                    reader, writer = await asyncio.wait_for(self.connect(), self.a.timeout)
                except (OSError, asyncio.TimeoutError) as e:
                    kind = "timeout" if isinstance(e, asyncio.TimeoutError) else "connect"
                    self.records.append((self.wall(sent), self.wall(loop.time()), 0, "-", kind))
                    reader = writer = None
                    continue
            self.expired.discard(conn_id)
            status, version, kind, keep = await self.one(conn_id, reader, writer)
            self.inflight.pop(conn_id, None)
            self.records.append((self.wall(sent), self.wall(loop.time()), status, version, kind))
            if not keep or kind not in ("ok", "http"):
                writer.close()
                reader = writer = None
        if writer is not None:
            writer.close()

    async def watchdog(self):
        while True:
            await asyncio.sleep(0.05)
            now = self.loop.time()
            for conn_id, (deadline, writer) in list(self.inflight.items()):
                if now > deadline:
                    self.expired.add(conn_id)
                    self.inflight.pop(conn_id, None)
                    writer.transport.abort()

    def stop(self):
        self.stopping = True

    async def run(self):
        self.loop = asyncio.get_running_loop()
        self.expired = set()
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.loop.add_signal_handler(sig, self.stop)
        self.mono0 = self.loop.time()
        self.wall0 = time.time()
        self.start = self.mono0 + 0.05
        self.next_due = self.start
        self.end_mono = self.start + self.a.max_seconds
        dog = asyncio.ensure_future(self.watchdog())
        workers = [asyncio.ensure_future(self.worker(i)) for i in range(self.a.conns)]
        stopper = asyncio.ensure_future(self.stop_at_end())
        await asyncio.gather(*workers)
        self.stopped = self.loop.time()
        stopper.cancel()
        dog.cancel()

    async def stop_at_end(self):
        await asyncio.sleep(self.end_mono - self.loop.time() + 0.01)
        self.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--rate", type=float, default=600)
    ap.add_argument("--conns", type=int, default=16)
    ap.add_argument("--max-seconds", type=float, default=600)
    ap.add_argument("--timeout", type=float, default=5)
    ap.add_argument("--log", required=True)
    ap.add_argument("--label", default="load")
    a = ap.parse_args()
    if a.rate <= 0 or a.conns <= 0 or a.max_seconds <= 0:
        sys.stderr.write("--rate, --conns and --max-seconds must be positive\n")
        return 2
    load = Load(a)
    cpu0 = time.process_time()
    asyncio.run(load.run())
    cpu = time.process_time() - cpu0
    recs = sorted(load.records)
    with open(a.log, "w") as f:
        for s, d, st, v, k in recs:
            f.write(f"{s:.6f} {d:.6f} {st} {v} {k}\n")
    kinds, versions = {}, {}
    for r in recs:
        kinds[r[4]] = kinds.get(r[4], 0) + 1
        versions[r[3]] = versions.get(r[3], 0) + 1
    elapsed = (recs[-1][0] - recs[0][0]) if len(recs) > 1 else 0.0
    failed = sum(n for k, n in kinds.items() if k != "ok")
    summary = {
        "label": a.label,
        "port": a.port,
        "target_rate": a.rate,
        "conns": a.conns,
        "requests": len(recs),
        "failed": failed,
        "kinds": kinds,
        "versions": versions,
        "first_send": recs[0][0] if recs else None,
        "last_send": recs[-1][0] if recs else None,
        "achieved_rate": (len(recs) - 1) / elapsed if elapsed > 0 else None,
        "max_late_ms": round(load.max_late * 1000, 1),
        "late_over_10ms": load.late_10ms,
        "connects": load.connects,
        "cpu_s": round(cpu, 3),
    }
    print(json.dumps(summary))
    rate = summary["achieved_rate"]
    sys.stderr.write(
        f"[bench] load {a.label}: {len(recs)} requests, {failed} failed, "
        f"{'—' if rate is None else f'{rate:.0f}'} req/s (target {a.rate:.0f}), "
        f"{load.connects} connections, max lateness {summary['max_late_ms']} ms, "
        f"CPU {cpu:.2f}s\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
