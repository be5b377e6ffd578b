#!/usr/bin/env python3
"""Figures of bench/detect.sh, from the load logs and the deployments' events.

Imported by detect_run.py (`report(...)`); not run by itself.

Per run, in the service's load log, the run's window goes from its `hatoba
deploy` to the next run's (the last one to the end of the load):

- first canary request: the send time of the first request answered with the
  canary's `x-version`;
- 100 % on stable: the send time of the first request of the unbroken run of
  answers from stable's version that lasts to the end of the window (an
  injected 500 from stable counts as stable's; a failed request breaks it);
- time: first canary request -> 100 % on stable, the figure the goals are
  about; split into "verdict" (first canary request -> the analysis event
  that failed the canary) and "flip" (that event -> 100 % on stable);
- failed requests: anything but a whole response, or a non-2xx response
  without an `x-version` (the proxy's own 502/503/504); a 500 with the
  demo app's `x-version` is an error the scenario injects, counted apart.

Runs a lane aborted because analysis had not ended within its limit count as
not detected (time = infinity for the median and max).
"""
import json
import math
import os
import re
import statistics
from bisect import bisect_left

DETECT_RE = re.compile(r"^analysis failed|: failed \(|^analysis \S+ fail")
WEIGHT_RE = re.compile(r"weight (\d+)%")
ARGO_TYPICAL = {"interval_s": 60.0, "failure_limit": 3, "success_min": 0.95, "p95_max_ms": None}


def parse_time(text):
    import datetime as dt
    if text is None:
        return None
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def injected(r):
    return r[4] == "http" and r[2] == 500 and r[3] != "-"


def failed(r):
    return r[4] != "ok" and not injected(r)


def fmt_s(v):
    if v is None:
        return "—"
    if math.isinf(v):
        return "never"
    return f"{v:.2f}s" if v < 100 else f"{v:.0f}s"


def fmt_dur(s):
    if s >= 60 and s % 60 == 0:
        return f"{int(s // 60)}m"
    return f"{s:g}s"


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def events_of(run):
    return run.get("events") or []


def first_event(run, pred, after=None):
    for e in events_of(run):
        t = parse_time(e["at"])
        if (after is None or t >= after) and pred(e):
            return t, e
    return None, None


def weight_is(e, positive):
    if e["kind"] != "weight_changed":
        return False
    m = WEIGHT_RE.search(e["message"])
    return bool(m) and ((int(m.group(1)) > 0) == positive)


def detector(message):
    if message is None:
        return None
    if message.startswith("analysis failed: canary worse"):
        parts = []
        if re.search(r"errors: [^:]*: worse", message):
            parts.append("errors")
        if re.search(r"latency: [^:]*: slower", message):
            parts.append("latency")
        return "judge:" + ("+".join(parts) or "?")
    m = re.match(r"(\S+) = \S+: failed", message)
    if m:
        return "threshold:" + m.group(1)
    return "other"


def window_figures(run, recs, sends, t0, t1):
    lo, hi = bisect_left(sends, t0), bisect_left(sends, t1)
    w = recs[lo:hi]
    v, stable = run["version"], run["stable"]
    can = [r for r in w if r[3] == v]
    out = {
        "window": [t0, t1], "requests": len(w),
        "failed": sum(1 for r in w if failed(r)),
        "injected": sum(1 for r in w if injected(r)),
        "canary_requests": len(can),
        "canary_injected": sum(1 for r in can if injected(r)),
        "first_failures": [list(r) for r in w if failed(r)][:10],
        "first_canary": can[0][0] if can else None,
        "last_canary": can[-1][0] if can else None,
    }
    i = len(w)
    while i > 0 and w[i - 1][3] == stable:
        i -= 1
    out["back_on_stable"] = w[i][0] if 0 < len(w) and i < len(w) and can else None
    out["stable_tail_s"] = (w[-1][0] - w[i][0]) if i < len(w) else 0.0
    return out


def analyse_run(run, recs, sends, t1):
    f = window_figures(run, recs, sends, run["invoked"], t1)
    run.update(f)
    t_det, e_det = first_event(run, lambda e: e["kind"] == "analysis"
                               and bool(DETECT_RE.search(e["message"])))
    run["verdict_at"] = t_det
    run["verdict_message"] = e_det["message"] if e_det else None
    run["detector"] = detector(run["verdict_message"])
    t_on, _ = first_event(run, lambda e: weight_is(e, True))
    t_off, _ = first_event(run, lambda e: weight_is(e, False), after=t_on)
    run["weight_on_at"], run["weight_off_at"] = t_on, t_off
    fc, back = run["first_canary"], run["back_on_stable"]
    run["time_s"] = (back - fc) if fc is not None and back is not None else None
    run["verdict_s"] = (t_det - fc) if fc is not None and t_det is not None else None
    run["flip_s"] = (t_off - t_det) if t_off is not None and t_det is not None else None
    run["flip_load_s"] = (back - t_det) if back is not None and t_det is not None else None
    ab = run.get("abort_invoked")
    run["abort_to_stable_s"] = (back - ab) if back is not None and ab is not None else None
    run["abort_to_weight0_s"] = (t_off - ab) if t_off is not None and ab is not None else None


def argo_lines(meta):
    """What the same analysis would take with Argo Rollouts' interval and
    failureLimit: computed from the parameters, not measured."""
    an = meta["analysis"]
    configs = [
        ("this spec's analysis in Argo",
         {"interval_s": an["interval_s"], "failure_limit": an["failure_limit"],
          "success_min": an["success_min"], "p95_max_ms": an["p95_max_ms"]},
         f"interval {an['interval']}, failureLimit {an['failure_limit']} (Argo's default), "
         f"success-rate >= {an['success_min']}, latency-p95 < {an['p95_max_ms']}"),
        ("typical Argo template", ARGO_TYPICAL,
         f"interval {fmt_dur(ARGO_TYPICAL['interval_s'])}, failureLimit "
         f"{ARGO_TYPICAL['failure_limit']}, success-rate >= {ARGO_TYPICAL['success_min']}, "
         "no latency metric"),
    ]
    out = []
    for _name, cfg, desc in configs:
        out.append(f"  with {desc}:")
        best = (cfg["failure_limit"] + 1) * cfg["interval_s"]
        for key, s in meta["scenarios"].items():
            sr = 1.0 - s["error_rate"]
            p95 = s["latency_ms"] + 1.0  # the demo app answers in about a millisecond
            fails = []
            passes = []
            if sr < cfg["success_min"]:
                fails.append(f"success rate {sr:.2f} < {cfg['success_min']}")
            else:
                passes.append(f"success rate {sr:.2f} >= {cfg['success_min']}")
            if cfg["p95_max_ms"] is not None:
                if p95 >= cfg["p95_max_ms"]:
                    fails.append(f"p95 ~{p95:.0f} ms >= {cfg['p95_max_ms']}")
                else:
                    passes.append(f"p95 ~{p95:.0f} ms < {cfg['p95_max_ms']}")
            if fails:
                verdict = (f">= {fmt_dur(best)} ((failureLimit+1) x interval; {', '.join(fails)})")
            else:
                verdict = f"never ({', '.join(passes)})"
                if s["latency_ms"] and cfg["p95_max_ms"] is None:
                    verdict += (f"; with a p95 threshold under ~{s['latency_ms']:.0f} ms: "
                                f">= {fmt_dur(best)}")
                elif s["error_rate"] and cfg["success_min"] <= sr:
                    verdict += (f"; with a threshold above {sr:.2f} (e.g. >= 0.99): "
                                f">= {fmt_dur(best)}")
            out.append(f"    {s['label']:<40} {verdict}")
    return out


def report(out_dir, meta, lanes, runs, problems):
    problems = list(problems)
    lines = []
    p = lines.append
    loads = []
    for lane in lanes:
        recs = lane.records
        sends = [r[0] for r in recs]
        mine = sorted((r for r in runs if r["service"] == lane.name), key=lambda r: r["invoked"])
        for i, run in enumerate(mine):
            if "deployment" not in run:
                continue
            t1 = mine[i + 1]["invoked"] if i + 1 < len(mine) else (lane.load_ended or float("inf"))
            analyse_run(run, recs, sends, t1)
            if run["first_canary"] is None:
                problems.append(f"{lane.name} {run['version']} ({run['deployment']}): no request "
                                f"was answered by the canary")
            elif run["back_on_stable"] is None:
                problems.append(f"{lane.name} {run['version']} ({run['deployment']}): traffic never "
                                f"went 100 % back to {run['stable']} within its window")
        kinds = {}
        for r in recs:
            if failed(r):
                k = r[4] if r[4] != "http" else f"http {r[2]}"
                kinds[k] = kinds.get(k, 0) + 1
        summ = lane.load.summaries[0] if lane.load and lane.load.summaries else {}
        loads.append({
            "service": lane.name, "requests": len(recs),
            "failed": sum(kinds.values()), "failed_kinds": kinds,
            "injected": sum(1 for r in recs if injected(r)),
            "first_failures": [list(r) for r in recs if failed(r)][:20],
            "summary": summ,
        })
        if summ and summ.get("late_over_10ms", 0) > 0.01 * max(1, summ.get("requests", 0)):
            problems.append(f"{lane.name}: the load generator ran late on {summ['late_over_10ms']} "
                            f"requests (max {summ['max_late_ms']} ms)")
        if summ and (summ.get("achieved_rate") or 0) < 0.95 * meta["rate"]:
            problems.append(f"{lane.name}: the load reached {summ.get('achieved_rate') or 0:.0f} "
                            f"req/s, below the {meta['rate']:.0f} asked")

    nsvc = len(meta["services"])
    p("")
    p(f"Detection: {meta['rate']:.0f} req/s per service through Hatoba's proxy, canary at "
      f"{meta['canary_weight']} % (1 of 2 instances), {nsvc} services in parallel, "
      f"{meta['elapsed_s'] / 60:.1f} min.")
    an = meta["analysis"]
    p(f"Analysis (background, builtin provider): success-rate >= {an['success_min']} and "
      f"latency-p95 < {an['p95_max_ms']} ms every {an['interval']} over {an['window']}: loose on "
      f"purpose; the statistical canary-vs-stable judge is what catches (b) and (c).")
    p("time: the canary's first request -> 100 % of the traffic back on stable, both send times in "
      "the load log (the canary gets a request every ~50 ms at 10 % of 200 req/s: the instant it "
      "stops is known to about that).")
    p("verdict: median of the first canary request -> the event that failed the canary; flip: "
      "median of that event -> the `new version weight 0%` event (server side).")
    p("")
    hdr = (f"{'scenario':<38} {'runs':>4} {'median':>8} {'max':>8} {'goal':<13} {'met':>3} "
           f"{'verdict':>8} {'flip':>6} {'failed req':>10}  caught by")
    p(hdr)
    p("-" * len(hdr))
    summary = {"scenarios": {}}
    goals_missed = []
    for key, s in meta["scenarios"].items():
        rs = [r for r in runs if r["scenario"] == key and "deployment" in r]
        times = []
        for r in rs:
            if r.get("missed"):
                times.append(float("inf"))
            elif r.get("time_s") is not None:
                times.append(r["time_s"])
        med = median(times)
        mx = max(times) if times else None
        met = (med is not None and len(times) == len(rs) and len(rs) >= 1
               and (med <= s["goal_s"] if s.get("goal_le") else med < s["goal_s"]))
        if not met:
            goals_missed.append(f"{s['label']}: {s['goal']}, measured median {fmt_s(med)}")
        caught = {}
        for r in rs:
            k = "not detected" if r.get("missed") else (r.get("detector") or "?")
            caught[k] = caught.get(k, 0) + 1
        fails = sum(r.get("failed", 0) for r in rs)
        within = sum(1 for t in times if t <= s["goal_s"])
        summary["scenarios"][key] = {
            "label": s["label"], "runs": len(rs), "median_s": med, "max_s": mx,
            "min_s": min(times) if times else None,
            "goal": s["goal"], "met": met, "within_goal": within,
            "verdict_median_s": median([r.get("verdict_s") for r in rs if not r.get("missed")]),
            "verdict_max_s": max([r["verdict_s"] for r in rs if r.get("verdict_s") is not None],
                                 default=None),
            "flip_median_s": median([r.get("flip_s") for r in rs if not r.get("missed")]),
            "flip_max_s": max([r["flip_s"] for r in rs if r.get("flip_s") is not None and
                               not r.get("missed")], default=None),
            "caught_by": caught, "failed_requests": fails,
        }
        sm = summary["scenarios"][key]
        p(f"{s['label']:<38} {len(rs):>4} {fmt_s(med):>8} {fmt_s(mx):>8} {s['goal']:<13} "
          f"{'yes' if met else 'NO':>3} {fmt_s(sm['verdict_median_s']):>8} "
          f"{fmt_s(sm['flip_median_s']):>6} {fails:>10}  "
          + ", ".join(f"{k} {n}" for k, n in sorted(caught.items())))
    p("")
    for key, s in meta["scenarios"].items():
        sm = summary["scenarios"][key]
        if sm["runs"]:
            p(f"  {s['label']}: min {fmt_s(sm['min_s'])}, {sm['within_goal']}/{sm['runs']} within "
              f"{fmt_dur(s['goal_s'])}; verdict max {fmt_s(sm['verdict_max_s'])}, flip max "
              f"{fmt_s(sm['flip_max_s'])}")
    # Good canaries.
    good = [r for r in runs if r["scenario"] == "good" and "deployment" in r]
    false = [r for r in good if r.get("false_abort")]
    by_profile = {}
    for r in good:
        by_profile[r["profile"]] = by_profile.get(r["profile"], 0) + 1
    gfail = sum(r.get("failed", 0) for r in good)
    ab = median([r.get("abort_to_weight0_s") for r in good if not r.get("false_abort")])
    abmax = max([r["abort_to_weight0_s"] for r in good if r.get("abort_to_weight0_s") is not None
                 and not r.get("false_abort")], default=None)
    p("")
    p(f"Good canaries (same knobs as their stable), {meta['observe_s']:g}s each at "
      f"{meta['canary_weight']} %, then `hatoba abort`: {len(good)} runs "
      f"({by_profile.get('clean', 0)} vs a clean stable, {by_profile.get('noisy', 0)} vs a stable "
      f"at 0.5 % errors): false aborts {len(false)} (goal 0): {'met' if not false else 'NOT MET'}; "
      f"failed requests {gfail}; `hatoba abort` invoked -> weight 0% event: median {fmt_s(ab)}, "
      f"max {fmt_s(abmax)}")
    false_ok = not false and len(good) >= 1
    if not false_ok:
        goals_missed.append(f"good canaries: {len(false)} false abort(s) in {len(good)} runs")
    for r in false:
        p(f"  FALSE ABORT: {r['service']} {r['version']} deployment {r['deployment']}: "
          f"{r.get('reason')} after {fmt_s(r.get('verdict_s'))}; {r.get('verdict_message')}")
        p(f"    measurements: {r.get('analysis_file')}")
        for line in (r.get("analysis_text") or "").splitlines()[-6:]:
            p(f"      {line}")
    missed = [r for r in runs if r.get("missed")]
    for r in missed:
        p(f"  NOT DETECTED within {fmt_s(r['limit_s'])} of the canary's weight: {r['service']} "
          f"{r['version']} deployment {r['deployment']} (aborted by the bench); "
          f"measurements: {r.get('analysis_file')}")
    summary["good"] = {"runs": len(good), "by_profile": by_profile, "false_aborts": len(false),
                       "false_abort_deployments": [r["deployment"] for r in false],
                       "failed_requests": gfail, "abort_to_weight0_median_s": ab,
                       "abort_to_weight0_max_s": abmax}
    # The whole load.
    p("")
    hdr = (f"{'load':<8} {'requests':>9} {'failed':>6} {'injected 500':>12} {'req/s':>5} "
           f"{'late>10ms':>9} {'max late':>8}  failures by kind")
    p(hdr)
    p("-" * len(hdr))
    total_failed = 0
    for ld in loads:
        sm = ld["summary"]
        total_failed += ld["failed"]
        p(f"{ld['service']:<8} {ld['requests']:>9} {ld['failed']:>6} {ld['injected']:>12} "
          f"{(sm.get('achieved_rate') or 0):>5.0f} {sm.get('late_over_10ms', 0):>9} "
          f"{sm.get('max_late_ms', 0):>6.0f}ms  "
          f"{json.dumps(ld['failed_kinds']) if ld['failed'] else '-'}")
    p("failed = no whole response, or a non-2xx without the app's x-version (the proxy's own "
      "errors); injected 500 = the demo app's errors the scenarios ask for (not failures).")
    # Argo.
    p("")
    p("Argo Rollouts, the same measurements judged by interval and failureLimit: COMPUTED, not "
      "measured. The analysis fails at the (failureLimit+1)-th failed measurement, taken one "
      "interval apart; the first one that sees canary traffic comes one interval after the "
      "canary's first request, so at best (failureLimit+1) x interval after it (plus the lag of "
      "the query's window); a condition the bad canary still passes never fails it. "
      "failureLimit defaults to 0 in Argo; interval has no default (one measurement).")
    lines.extend(argo_lines(meta))
    p("")
    if problems:
        p("Problems:")
        for x in problems:
            p(f"  - {x}")
        p("")
    if total_failed:
        p(f"Verdict: FAIL: {total_failed} failed request(s)"
          + (f"; goals missed: {'; '.join(goals_missed)}" if goals_missed else ""))
        rc = 1
    elif problems:
        p("Verdict: FAIL: see the problems above"
          + (f"; goals missed: {'; '.join(goals_missed)}" if goals_missed else ""))
        rc = 1
    elif goals_missed:
        p(f"Verdict: 0 failed requests; goals missed: {'; '.join(goals_missed)}")
        rc = 3
    else:
        p("Verdict: PASS: every goal met, 0 false aborts, 0 failed requests")
        rc = 0
    text = "\n".join(lines) + "\n"
    print(text, end="", flush=True)
    with open(os.path.join(out_dir, "table.txt"), "w") as f:
        f.write(text)
    with open(os.path.join(out_dir, "runs.tsv"), "w") as f:
        cols = ["service", "scenario", "version", "deployment", "status", "reason", "time_s",
                "verdict_s", "flip_s", "flip_load_s", "abort_to_weight0_s", "abort_to_stable_s", "detector", "canary_requests",
                "canary_injected", "failed", "false_abort", "missed"]
        f.write("\t".join(cols) + "\n")
        for r in sorted(runs, key=lambda r: r.get("invoked", 0)):
            f.write("\t".join("" if r.get(c) is None else
                              (f"{r[c]:.3f}" if isinstance(r.get(c), float) else str(r[c]))
                              for c in cols) + "\n")
    summary.update(failed_requests=total_failed, goals_missed=goals_missed, problems=problems,
                   loads=loads)
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump({"meta": meta, "summary": summary, "runs": runs}, f, indent=1, default=str)
        f.write("\n")
    return rc
