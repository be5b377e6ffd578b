#!/usr/bin/env python3
"""The fixed-rate phase of bench/proxy.sh: latency at the same offered load.

  fixed_rate.py parse OHA.json --target T --round N --rate R   -> one JSON line
  fixed_rate.py rate RUNS.jsonl                                -> the rate to use
  fixed_rate.py summary FIXED.jsonl                            -> a table on stdout

wrk keeps 50 requests in flight and measures each target at its own
saturation, so a faster proxy is measured under more load. Here every proxy
gets the same request rate (oha -q, open loop, with --latency-correction so
a stall counts against every request it delayed), well below what the
slowest of them sustains: the latency that is left is the proxy's own.
Information beside the verdict, not part of it.
"""
import json
import statistics
import sys

PROXIES = ["hatoba", "nginx", "haproxy"]
LABEL = {"hatoba": "hatoba proxy", "nginx": "nginx", "haproxy": "HAProxy"}


def parse(path, target, rnd, rate):
    with open(path) as f:
        d = json.load(f)
    s, p = d["summary"], d["latencyPercentiles"]
    codes = d.get("statusCodeDistribution", {})
    ok = sum(n for c, n in codes.items() if str(c).startswith("2"))
    errors = sum(d.get("errorDistribution", {}).values())
    ms = lambda v: None if v is None else v * 1000.0  # noqa: E731
    return {
        "target": target,
        "round": rnd,
        "rate": rate,
        "rps": s.get("requestsPerSec"),
        "p50_ms": ms(p.get("p50")),
        "p90_ms": ms(p.get("p90")),
        "p99_ms": ms(p.get("p99")),
        "p999_ms": ms(p.get("p99.9")),
        "ok": ok,
        "failed": errors + sum(n for c, n in codes.items() if not str(c).startswith("2")),
    }


def rate(runs_path):
    """Half the lowest median closed-loop rate among the proxies, in thousands."""
    with open(runs_path) as f:
        runs = [json.loads(line) for line in f if line.strip()]
    medians = [
        statistics.median(r["rps"] for r in runs if r["target"] == t)
        for t in PROXIES
        if any(r["target"] == t for r in runs)
    ]
    if not medians:
        return 0
    return max(1000, int(min(medians) / 2 // 1000 * 1000))


def summary(path):
    with open(path) as f:
        runs = [json.loads(line) for line in f if line.strip()]
    if not runs:
        print("fixed rate: no runs")
        return
    med = lambda t, k: statistics.median(  # noqa: E731
        r[k] for r in runs if r["target"] == t and r[k] is not None
    )
    targets = [t for t in PROXIES if any(r["target"] == t for r in runs)]
    n = max(r["round"] for r in runs)
    print(
        f"\nLatency at a fixed rate: {runs[0]['rate']} req/s to each target, "
        f"medians over {n} round(s) (oha -q, open loop, latency-corrected; information, not the verdict)\n"
    )
    print(f"{'target':<16}{'req/s':>9}{'p50':>9}{'p90':>9}{'p99':>9}{'p99.9':>9}{'failed':>8}")
    print("-" * 69)
    for t in targets:
        failed = sum(r["failed"] for r in runs if r["target"] == t)
        print(
            f"{LABEL[t]:<16}{med(t, 'rps'):>9.0f}{med(t, 'p50_ms'):>7.2f}ms{med(t, 'p90_ms'):>7.2f}ms"
            f"{med(t, 'p99_ms'):>7.2f}ms{med(t, 'p999_ms'):>7.2f}ms{failed:>8}"
        )
    if "hatoba" not in targets:
        return
    h99 = med("hatoba", "p99_ms")
    for peer in ("nginx", "haproxy"):
        if peer not in targets:
            continue
        p99 = med(peer, "p99_ms")
        rounds = {r["round"] for r in runs}
        at_or_below = sum(
            1
            for k in rounds
            if (h := next((r["p99_ms"] for r in runs if r["round"] == k and r["target"] == "hatoba"), None)) is not None
            and (o := next((r["p99_ms"] for r in runs if r["round"] == k and r["target"] == peer), None)) is not None
            and h <= o
        )
        print(
            f"Hatoba/{LABEL[peer]:<8} p99 {h99 / p99:.2f}x "
            f"(at or below in {at_or_below}/{len(rounds)} rounds)"
        )


def main():
    if len(sys.argv) >= 3 and sys.argv[1] == "parse":
        args = sys.argv[3:]
        opts = dict(zip(args[::2], args[1::2]))
        print(json.dumps(parse(sys.argv[2], opts["--target"], int(opts["--round"]), int(opts["--rate"]))))
    elif len(sys.argv) == 3 and sys.argv[1] == "rate":
        print(rate(sys.argv[2]))
    elif len(sys.argv) == 3 and sys.argv[1] == "summary":
        summary(sys.argv[2])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
