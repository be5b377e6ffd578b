#!/usr/bin/env python3
"""Turn one wrk run (`wrk --latency` output) into one JSON line for bench/proxy.sh.

Usage: wrk_parse.py WRK_OUTPUT --target NAME --round N --cpu-ticks T --clk-tck HZ
                    [--backend-split N1 N2]

Reads Requests/sec, the request count, the latency distribution (p50, p99),
socket errors and non-2xx/3xx responses; adds the CPU the target spent during
the run (clock ticks -> microseconds per request) and how many requests each
backend answered meanwhile. Prints the JSON line on stdout and a one-line
summary on stderr. Exits 1 when the output has no Requests/sec line.
"""
import argparse
import json
import re
import sys

UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0, "h": 3600000.0}


def to_ms(text):
    m = re.fullmatch(r"([0-9.]+)(us|ms|s|m|h)", text)
    if not m:
        raise ValueError(f"unknown wrk time {text!r}")
    return float(m.group(1)) * UNITS_MS[m.group(2)]


def fmt_ms(v):
    return "—" if v is None else f"{v:.2f}ms"


def parse(out):
    rps = re.search(r"^Requests/sec:\s+([0-9.]+)", out, re.M)
    if not rps:
        return None
    res = {"rps": float(rps.group(1))}
    m = re.search(r"^\s*(\d+) requests in ([0-9.]+\w+)", out, re.M)
    res["requests"] = int(m.group(1)) if m else None
    res["elapsed_ms"] = to_ms(m.group(2)) if m else None
    dist = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", out, re.M))
    res["p50_ms"] = to_ms(dist["50"]) if "50" in dist else None
    res["p99_ms"] = to_ms(dist["99"]) if "99" in dist else None
    sock = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    res["socket_errors"] = (
        dict(zip(("connect", "read", "write", "timeout"), map(int, sock.groups())))
        if sock
        else {"connect": 0, "read": 0, "write": 0, "timeout": 0}
    )
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    res["non_2xx"] = int(non2xx.group(1)) if non2xx else 0
    res["errors"] = res["non_2xx"] + sum(res["socket_errors"].values())
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("wrk_output")
    ap.add_argument("--target", required=True)
    ap.add_argument("--round", type=int, required=True)
    ap.add_argument("--cpu-ticks", type=int, required=True)
    ap.add_argument("--clk-tck", type=int, required=True)
    ap.add_argument("--backend-split", type=int, nargs=2, metavar=("N1", "N2"))
    a = ap.parse_args()
    with open(a.wrk_output, encoding="utf-8", errors="replace") as f:
        out = f.read()
    res = parse(out)
    if res is None:
        sys.stderr.write(f"wrk gave no Requests/sec line:\n{out}\n")
        return 1
    res = {"target": a.target, "round": a.round, **res}
    res["cpu_s"] = a.cpu_ticks / a.clk_tck
    res["cpu_us_per_req"] = (
        res["cpu_s"] * 1e6 / res["requests"] if res["requests"] else None
    )
    if a.backend_split:
        res["backend_split"] = a.backend_split
    print(json.dumps(res))
    cpu = res["cpu_us_per_req"]
    sock = ", ".join(f"{k} {v}" for k, v in res["socket_errors"].items() if v) or "none"
    errs = f"  ERRORS {res['errors']} (non-2xx {res['non_2xx']}; socket: {sock})" if res["errors"] else ""
    sys.stderr.write(
        f"[bench] round {a.round} {a.target:<8} {res['rps']:>9.0f} req/s  "
        f"p50 {fmt_ms(res['p50_ms'])}  p99 {fmt_ms(res['p99_ms'])}  "
        f"CPU {'—' if cpu is None else f'{cpu:.1f}'} µs/req{errs}\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
