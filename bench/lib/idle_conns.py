#!/usr/bin/env python3
"""Memory of a proxy holding many idle keep-alive connections (bench/proxy.sh).

Usage: idle_conns.py --port PORT --pids "PID [PID...]" [--conns 1000] [--label NAME]
                     [--extra JSON_OBJECT]

Reads VmRSS of the given processes (summed), then opens --conns TCP
connections to 127.0.0.1:PORT one after the other, sends one keep-alive
`GET /` on each and reads the whole response, and keeps them all open and idle.
It waits for the RSS to settle (two equal readings 200 ms apart, at most 3 s),
reads it again, checks how many connections the proxy still holds open, closes
everything and prints one JSON line on stdout (with --extra's fields merged
in) and a one-line summary on stderr.
"""
import argparse
import json
import resource
import select
import socket
import sys
import time


def rss_kb(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except FileNotFoundError:
            pass
    return total


def raise_nofile(need):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        target = need if hard == resource.RLIM_INFINITY else min(need, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def read_response(sock):
    """Read one HTTP/1.1 response; return (status, keep_alive)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the response headers")
        buf += chunk
    head, body = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip().lower()
    if "content-length" in headers:
        need = int(headers["content-length"])
        while len(body) < need:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed inside the body")
            body += chunk
    elif headers.get("transfer-encoding") == "chunked":
        while not body.endswith(b"0\r\n\r\n"):
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed inside the chunked body")
            body += chunk
    keep_alive = headers.get("connection") != "close"
    return status, keep_alive


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pids", required=True, help="space-separated pids; RSS is summed")
    ap.add_argument("--conns", type=int, default=1000)
    ap.add_argument("--label", default="")
    ap.add_argument("--extra", default="{}", help="JSON object merged into the output")
    a = ap.parse_args()
    pids = [int(p) for p in a.pids.split()]

    limit = raise_nofile(a.conns + 64)
    if limit < a.conns + 16:
        sys.stderr.write(f"open-file limit {limit} is too low for {a.conns} connections\n")
        return 1

    before = rss_kb(pids)
    socks, errors, not_kept = [], 0, 0
    request = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: keep-alive\r\n\r\n"
    t0 = time.monotonic()
    for _ in range(a.conns):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(5)
        try:
            s.connect(("127.0.0.1", a.port))
            s.sendall(request)
            status, keep_alive = read_response(s)
            if status != 200:
                errors += 1
            if not keep_alive:
                not_kept += 1
            socks.append(s)
        except OSError as e:
            errors += 1
            s.close()
            if errors == 1:
                sys.stderr.write(f"{a.label}: connection failed: {e}\n")
    open_s = time.monotonic() - t0

    # Let the RSS settle: two equal readings 200 ms apart, at most 3 s.
    deadline = time.monotonic() + 3
    with_conns = rss_kb(pids)
    while time.monotonic() < deadline:
        time.sleep(0.2)
        again = rss_kb(pids)
        if again == with_conns:
            break
        with_conns = again

    # Which connections did the proxy keep open? Readable now means EOF or reset.
    still_open = 0
    for s in socks:
        r, _, _ = select.select([s], [], [], 0)
        if not r:
            still_open += 1
        else:
            try:
                if s.recv(1, socket.MSG_PEEK):
                    still_open += 1  # unexpected bytes, but open
            except OSError:
                pass
    for s in socks:
        s.close()

    res = {
        "label": a.label,
        "pids": pids,
        "conns": a.conns,
        "answered": len(socks),
        "errors": errors,
        "not_keep_alive": not_kept,
        "still_open": still_open,
        "open_seconds": round(open_s, 3),
        "rss_before_kb": before,
        "rss_with_conns_kb": with_conns,
        **json.loads(a.extra),
    }
    print(json.dumps(res))
    sys.stderr.write(
        f"[bench] {a.label:<8} RSS {before / 1024:.1f} MiB idle -> {with_conns / 1024:.1f} MiB "
        f"with {len(socks)} connections ({still_open} kept open, {errors} errors, "
        f"opened in {open_s:.2f}s)\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
