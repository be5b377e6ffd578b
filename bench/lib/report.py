#!/usr/bin/env python3
"""Summarise a bench/proxy.sh run: medians per target, ratios, verdict, memory.

Usage: report.py --runs RUNS.jsonl --memory MEMORY.jsonl --meta META.json --out RESULT.json

RUNS.jsonl holds one line per wrk run (bench/lib/wrk_parse.py), MEMORY.jsonl
one line per proxy (bench/lib/idle_conns.py plus the RSS figures the script
adds). Prints the tables on stdout and writes everything as one JSON document.
"""
import argparse
import json
import statistics
import sys

ORDER = ["direct", "hatoba", "nginx", "haproxy"]
LABEL = {
    "direct": "demo app direct (1 backend)",
    "hatoba": "hatoba proxy",
    "nginx": "nginx",
    "haproxy": "HAProxy",
}
RSS_GOAL_MIB = 30


def load_lines(path):
    try:
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        return []


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(v, spec, unit=""):
    return "—" if v is None else f"{v:{spec}}{unit}"


def summarise(runs):
    out = {}
    for target in ORDER:
        rs = [r for r in runs if r["target"] == target]
        if not rs:
            continue
        out[target] = {
            "rounds": len(rs),
            "rps": med(r["rps"] for r in rs),
            "rps_min": min(r["rps"] for r in rs),
            "rps_max": max(r["rps"] for r in rs),
            "p50_ms": med(r["p50_ms"] for r in rs),
            "p99_ms": med(r["p99_ms"] for r in rs),
            "cpu_us_per_req": med(r["cpu_us_per_req"] for r in rs),
            "errors": sum(r["errors"] for r in rs),
            "non_2xx": sum(r["non_2xx"] for r in rs),
            "socket_errors": sum(sum(r["socket_errors"].values()) for r in rs),
        }
        splits = [r.get("backend_split") for r in rs if r.get("backend_split")]
        if splits:
            b1 = sum(s[0] for s in splits)
            b2 = sum(s[1] for s in splits)
            out[target]["backend_share"] = [b1 / (b1 + b2), b2 / (b1 + b2)] if b1 + b2 else None
    return out


def ratio(a, b):
    return a / b if a is not None and b else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", required=True)
    ap.add_argument("--memory", required=True)
    ap.add_argument("--meta", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    runs = load_lines(a.runs)
    memory = load_lines(a.memory)
    with open(a.meta) as f:
        meta = json.load(f)
    summary = summarise(runs)

    p = print
    p()
    p(f"Medians over {meta['rounds']} round(s), wrk -t1 -c{meta['connections']} -d{meta['duration']} "
      f"({meta['nproc']} cores; CPU = the target's own processes, all threads)")
    p()
    hdr = f"{'target':<29} {'req/s':>9} {'(min-max)':>17} {'p50':>9} {'p99':>9} {'CPU µs/req':>10} {'errors':>7}  split b1/b2"
    p(hdr)
    p("-" * len(hdr))
    for target, s in summary.items():
        flag = "  <-- ERRORS" if s["errors"] else ""
        share = s.get("backend_share")
        split = f"{share[0]*100:.0f}/{share[1]*100:.0f}" if share else "—"
        p(f"{LABEL[target]:<29} {s['rps']:>9.0f} {s['rps_min']:>8.0f}-{s['rps_max']:<8.0f} "
          f"{fmt(s['p50_ms'], '.2f', 'ms'):>9} {fmt(s['p99_ms'], '.2f', 'ms'):>9} "
          f"{fmt(s['cpu_us_per_req'], '.1f'):>10} {s['errors']:>7}  {split:>5}{flag}")
    flagged = [t for t, s in summary.items() if s["errors"]]
    if flagged:
        p()
        for t in flagged:
            s = summary[t]
            p(f"WARNING: {LABEL[t]} had {s['non_2xx']} non-2xx/3xx responses and "
              f"{s['socket_errors']} socket errors over all rounds; its figures are suspect.")

    result = {"meta": meta, "targets": summary, "runs": runs, "memory": memory}

    # Ratios and verdict.
    p()
    h, n, x = summary.get("hatoba"), summary.get("nginx"), summary.get("haproxy")
    verdict = None
    if h is None:
        p(f"Verdict: not measured ({meta.get('hatoba_skip_reason') or 'hatoba proxy not run'}).")
    else:
        ratios = {}
        for name, other in (("nginx", n), ("haproxy", x)):
            if other:
                ratios[name] = {
                    "throughput": ratio(h["rps"], other["rps"]),
                    "p99": ratio(h["p99_ms"], other["p99_ms"]),
                    "cpu_per_req": ratio(h["cpu_us_per_req"], other["cpu_us_per_req"]),
                }
                r = ratios[name]
                p(f"Hatoba/{LABEL[name]:<8} throughput {fmt(r['throughput'], '.2f', 'x')}  "
                  f"p99 {fmt(r['p99'], '.2f', 'x')}  CPU/req {fmt(r['cpu_per_req'], '.2f', 'x')}")
        others = [o for o in (n, x) if o]
        if others:
            best_rps = max(o["rps"] for o in others)
            best_p99 = min(o["p99_ms"] for o in others if o["p99_ms"] is not None)
            thr_ok = h["rps"] >= best_rps
            p99_ok = h["p99_ms"] is not None and h["p99_ms"] <= best_p99
            clean = h["errors"] == 0
            # Round by round, against the peers measured in the same round:
            # how often Hatoba matched the better one (throughput, p99) and
            # each one (p99).
            wins = p99_wins = 0
            p99_wins_vs = {"nginx": 0, "haproxy": 0}
            rounds = sorted({r["round"] for r in runs})
            for rnd in rounds:
                byt = {r["target"]: r for r in runs if r["round"] == rnd}
                peers = [t for t in ("nginx", "haproxy") if t in byt]
                if "hatoba" not in byt or not peers:
                    continue
                hr = byt["hatoba"]
                wins += hr["rps"] >= max(byt[t]["rps"] for t in peers)
                p99s = [byt[t]["p99_ms"] for t in peers if byt[t]["p99_ms"] is not None]
                if hr["p99_ms"] is not None and p99s:
                    p99_wins += hr["p99_ms"] <= min(p99s)
                    for t in peers:
                        if byt[t]["p99_ms"] is not None:
                            p99_wins_vs[t] += hr["p99_ms"] <= byt[t]["p99_ms"]
            verdict = {
                "goal": "Hatoba throughput >= the better of nginx and HAProxy, p99 no worse than the better p99, no errors",
                "throughput_ok": thr_ok,
                "p99_ok": p99_ok,
                "no_errors": clean,
                "pass": thr_ok and p99_ok and clean,
                "throughput_rounds_won": wins,
                "p99_rounds_won": p99_wins,
                "p99_rounds_at_or_below": p99_wins_vs,
                "rounds": len(rounds),
            }
            p(f"Goal: throughput >= the better of nginx/HAProxy ({best_rps:.0f} req/s), "
              f"p99 <= the better p99 ({best_p99:.2f}ms), no errors")
            p(f"  throughput {h['rps']:.0f} req/s: {'OK' if thr_ok else 'NOT MET'}"
              f" (won {wins}/{len(rounds)} rounds)")
            vs = ", ".join(f"{LABEL[t]}'s in {k}/{len(rounds)}"
                           for t, k in p99_wins_vs.items() if summary.get(t))
            p(f"  p99 {fmt(h['p99_ms'], '.2f', 'ms')}: {'OK' if p99_ok else 'NOT MET'}"
              f" (at or below the better p99 in {p99_wins}/{len(rounds)} rounds; {vs})")
            p(f"  errors {h['errors']}: {'OK' if clean else 'NOT MET'}")
            p(f"Verdict: {'PASS' if verdict['pass'] else 'FAIL'}")
        result["ratios"] = ratios
    result["verdict"] = verdict

    # Memory.
    if memory:
        p()
        p(f"RSS with idle keep-alive connections (VmRSS; nginx = its workers summed)")
        hdr = f"{'proxy':<14} {'fresh':>10} {'after load':>11} {'+N idle conns':>14} {'conns':>6} {'kept open':>10}"
        p(hdr)
        p("-" * len(hdr))
        for m in memory:
            mib = lambda kb: fmt(kb / 1024 if kb is not None else None, '.1f', ' MiB')
            p(f"{LABEL.get(m['label'], m['label']):<14} {mib(m.get('rss_fresh_kb')):>10} "
              f"{mib(m['rss_before_kb']):>11} {mib(m['rss_with_conns_kb']):>14} "
              f"{m['answered']:>6} {m['still_open']:>10}"
              + ("  <-- errors" if m["errors"] else ""))
        hm = next((m for m in memory if m["label"] == "hatoba"), None)
        if hm:
            ok = hm["rss_with_conns_kb"] / 1024 < RSS_GOAL_MIB and hm["still_open"] == hm["conns"]
            result["memory_goal"] = {"goal_mib": RSS_GOAL_MIB, "pass": ok}
            p(f"Goal: Hatoba RSS with {hm['conns']} idle connections < {RSS_GOAL_MIB} MiB "
              f"(all kept open): {'PASS' if ok else 'FAIL'}")
        else:
            p(f"Goal: Hatoba RSS < {RSS_GOAL_MIB} MiB: not measured.")

    with open(a.out, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    p()
    p(f"Figures written to {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
