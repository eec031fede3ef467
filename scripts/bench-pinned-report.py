#!/usr/bin/env python3
"""Tables and ratios for scripts/bench-pinned.sh.

    bench-pinned-report.py WORK SERVER_CORES LOAD_CORES [SUMMARY.json]
        reads WORK/raw.txt and the sluice-load result files WORK/{echo,sluice,off}-*.json,
        prints the tables and writes every figure to SUMMARY.json if given.
    bench-pinned-report.py --check SUMMARY.json [PROTOCOL ...]
        exits non-zero unless the summary parses and has, for each protocol, a
        server step and an echo-floor step with positive req/s, a
        CPU-per-request figure and no errors: what `make test` asks of a
        seconds-long smoke run. It checks no speed.
"""
import json
import os
import re
import sys


def load_runs(work):
    runs = []
    for name in sorted(os.listdir(work)):
        m = re.fullmatch(r"(echo|sluice|off)-([a-z0-9_]+)-(rest-json|rest-binary|grpc)\.json", name)
        if not m:
            continue
        kind, model, proto = m.groups()
        for r in json.load(open(os.path.join(work, name))):
            lat = r["latency_us"]
            runs.append({
                "server": {"echo": "echo floor", "sluice": "sluice", "off": "sluice, batching off"}[kind],
                "model": model,
                "protocol": proto,
                "concurrency": r["concurrency"],
                "rows_per_request": r["rows_per_request"],
                "req_per_s": r["throughput_rps"],
                "rows_per_s": r["throughput_rows_per_s"],
                "p50_us": lat["p50"],
                "p99_us": lat["p99"],
                "errors": r["error_count"],
                "cpu_us_per_req": r.get("server_cpu_us_per_request"),
            })
    return runs


def load_raw(work):
    raw = []
    path = os.path.join(work, "raw.txt")
    for line in open(path) if os.path.exists(path) else []:
        if line.startswith("raw "):
            kv = dict(f.split("=", 1) for f in line.split()[1:])
            raw.append({"model": kv["model"], "batch": int(kv["batch"]),
                        "sessions": int(kv["sessions"]), "rows_per_s": float(kv["rows_per_s"])})
    return raw


def ratio(a, b):
    return a / b if a is not None and b else None


def fmt(v, spec):
    return format(v, spec) if v is not None else "-"


def report(work, server_cores, load_cores, out):
    runs, raw = load_runs(work), load_raw(work)
    best = {}
    for r in raw:
        if r["rows_per_s"] > best.get(r["model"], {"rows_per_s": 0})["rows_per_s"]:
            best[r["model"]] = r
    cores = raw[0]["sessions"] if raw else 1
    floor = {(r["model"], r["protocol"], r["concurrency"]): r
             for r in runs if r["server"] == "echo floor"}
    print(f"server on cores {server_cores}, generator on cores {load_cores}")
    print()
    print("raw ONNX Runtime on the server's cores (one session per core), rows/s")
    for r in raw:
        star = " (best)" if best.get(r["model"]) is r else ""
        print(f"  {r['model']:<6} batch {r['batch']:>3}: {r['rows_per_s']:>10.0f}{star}")
    print()
    head = (f"{'server':<21} {'model':<6} {'protocol':<11} {'c':>3} {'req/s':>8} {'rows/s':>8} "
            f"{'p50 µs':>7} {'p99 µs':>7} {'CPU µs/req':>10} {'busy':>5} {'÷ floor':>7} {'p50 - floor':>11} "
            f"{'÷ raw':>6} {'÷ floor-lim':>11}")
    print(head)
    for r in runs:
        # Each protocol against its own floor. gRPC is also held against the
        # REST binary (HTTP/1.1) floor, as runs before the gRPC floor were;
        # a summary without a gRPC floor falls back to that one.
        fp = r["protocol"]
        f = floor.get((r["model"], fp, r["concurrency"]))
        http1 = floor.get((r["model"], "rest-binary", r["concurrency"]))
        if f is None and fp == "grpc":
            fp, f = "rest-binary", http1
        b = best.get(r["model"])
        r["floor_protocol"] = fp if f else None
        # Share of the server's cores the process kept busy: below ~95% the
        # generator, not the server, set the pace.
        r["server_busy"] = (r["cpu_us_per_req"] * r["req_per_s"] / 1e6 / cores
                            if r["cpu_us_per_req"] is not None else None)
        r["cpu_vs_floor"] = ratio(r["cpu_us_per_req"], f and f["cpu_us_per_req"]) if r["server"] != "echo floor" else None
        r["p50_minus_floor_us"] = (r["p50_us"] - f["p50_us"]) if f and r["server"] != "echo floor" else None
        if r["protocol"] == "grpc" and r["server"] != "echo floor":
            r["cpu_vs_http1_floor"] = ratio(r["cpu_us_per_req"], http1 and http1["cpu_us_per_req"])
            r["p50_minus_http1_floor_us"] = (r["p50_us"] - http1["p50_us"]) if http1 else None
        r["rows_vs_raw_best"] = ratio(r["rows_per_s"], b and b["rows_per_s"]) if r["server"] != "echo floor" else None
        r["rows_vs_floor_limited"] = None
        if b and f and f["cpu_us_per_req"] and r["rows_per_request"] == 1 and r["server"] != "echo floor":
            # CPU µs a row costs raw ORT, plus the floor's CPU µs per request, on `sessions` cores.
            raw_cpu_us = b["sessions"] * 1e6 / b["rows_per_s"]
            limit = b["sessions"] * 1e6 / (raw_cpu_us + f["cpu_us_per_req"])
            r["floor_limited_rows_per_s"] = limit
            r["rows_vs_floor_limited"] = r["rows_per_s"] / limit
            if r["protocol"] == "grpc" and http1 and http1["cpu_us_per_req"]:
                limit1 = b["sessions"] * 1e6 / (raw_cpu_us + http1["cpu_us_per_req"])
                r["rows_vs_http1_floor_limited"] = r["rows_per_s"] / limit1
        print(f"{r['server']:<21} {r['model']:<6} {r['protocol']:<11} {r['concurrency']:>3} "
              f"{r['req_per_s']:>8.0f} {r['rows_per_s']:>8.0f} {r['p50_us']:>7} {r['p99_us']:>7} "
              f"{fmt(r['cpu_us_per_req'], '.1f'):>10} {fmt(r['server_busy'], '.0%'):>5} {fmt(r['cpu_vs_floor'], '.2f'):>7} "
              f"{fmt(r['p50_minus_floor_us'], 'd'):>11} {fmt(r['rows_vs_raw_best'], '.0%'):>6} "
              f"{fmt(r['rows_vs_floor_limited'], '.0%'):>11}"
              + (f"  ERRORS {r['errors']}" if r["errors"] else ""))

    on = {(r["protocol"], r["concurrency"]): r for r in runs
          if r["server"] == "sluice" and r["model"] == "dense"}
    off = [r for r in runs if r["server"] == "sluice, batching off"]
    if off:
        print()
        print("dense, batching on ÷ off (same cores, same run)")
        for r in off:
            o = on.get((r["protocol"], r["concurrency"]))
            if o:
                print(f"  {r['protocol']:<11} c={r['concurrency']:<3} rows/s {o['rows_per_s']:>7.0f} ÷ "
                      f"{r['rows_per_s']:>7.0f} = {o['rows_per_s'] / r['rows_per_s']:.2f}x   "
                      f"CPU µs/req {fmt(o['cpu_us_per_req'], '.1f')} vs {fmt(r['cpu_us_per_req'], '.1f')}")

    # The issue-21 targets, as ratios of figures from this run.
    print()
    print("targets (server on the cores above; saturated = the highest concurrency run)")
    sluice = {(r["model"], r["protocol"], r["concurrency"]): r for r in runs if r["server"] == "sluice"}
    cs = sorted({r["concurrency"] for r in runs})
    top = cs[-1] if cs else None
    for p in ("rest-binary", "grpc"):
        r = sluice.get(("iris", p, top))
        if r:
            also = (f"; ÷ REST binary floor {fmt(r.get('cpu_vs_http1_floor'), '.2f')}"
                    if p == "grpc" else "")
            print(f"  iris c={top} {p}: CPU ÷ echo floor ({r['floor_protocol']}) "
                  f"{fmt(r['cpu_vs_floor'], '.2f')} (target ≤ 1.25){also}")
    j, b = sluice.get(("dense", "rest-json", top)), sluice.get(("dense", "rest-binary", top))
    if j and b:
        print(f"  dense c={top} REST JSON CPU ÷ REST binary CPU: "
              f"{fmt(ratio(j['cpu_us_per_req'], b['cpu_us_per_req']), '.2f')} (target ≤ 1.5)")
    for p in ("rest-binary", "grpc"):
        r = sluice.get(("dense", p, top))
        if r:
            also = (f"; with the REST binary floor {fmt(r.get('rows_vs_http1_floor_limited'), '.0%')}"
                    if p == "grpc" else "")
            print(f"  dense c={top} {p}: rows/s ÷ floor-limited ({r['floor_protocol']}) "
                  f"{fmt(r['rows_vs_floor_limited'], '.0%')} (target ≥ 85%){also}")
    if 1 in cs and top != 1:
        for m in ("iris", "dense"):
            for p in ("rest-json", "rest-binary", "grpc"):
                r1, rt = sluice.get((m, p, 1)), sluice.get((m, p, top))
                if r1 and rt:
                    also = (f" (REST binary floor: {fmt(r1.get('p50_minus_http1_floor_us'), 'd')})"
                            if p == "grpc" else "")
                    # The floor's own c=1 ÷ saturated: what wake-ups cost a
                    # server that does nothing else.
                    f1, ft = floor.get((m, p, 1)), floor.get((m, p, top))
                    own = ratio(f1 and f1["cpu_us_per_req"], ft and ft["cpu_us_per_req"])
                    print(f"  {m} c=1 {p}: p50 - floor p50 {fmt(r1['p50_minus_floor_us'], 'd')} µs{also} (target ≤ 30); "
                          f"CPU c=1 ÷ c={top} {fmt(ratio(r1['cpu_us_per_req'], rt['cpu_us_per_req']), '.2f')} (target ≤ 2; "
                          f"the echo floor's own {fmt(own, '.2f')})")
    if out:
        with open(out, "w") as fh:
            json.dump({"server_cores": server_cores, "load_cores": load_cores,
                       "raw": raw, "runs": runs}, fh, indent=1)
        print(f"\nwrote {out}")


def check(path, protocols):
    s = json.load(open(path))
    assert s["raw"] and all(r["rows_per_s"] > 0 for r in s["raw"]), "no raw ONNX Runtime figures"
    for p in protocols or ("rest-json", "rest-binary", "grpc"):
        for server in ("sluice", "echo floor"):
            rs = [r for r in s["runs"] if r["protocol"] == p and r["server"] == server]
            assert rs, f"no {server} step for {p}"
            for r in rs:
                assert r["req_per_s"] > 0 and r["errors"] == 0, f"{server} {p}: {r}"
                assert r["cpu_us_per_req"] is not None and r["cpu_us_per_req"] >= 0, f"{server} {p}: no CPU figure"
                assert r["p50_us"] > 0, f"{server} {p}: no latency"
        if p == "grpc":
            assert any(r["floor_protocol"] == "grpc" and r["cpu_vs_floor"] is not None
                       for r in s["runs"] if r["protocol"] == p), "gRPC not held against the gRPC floor"
    print(f"bench-pinned smoke: {path} parses, {len(s['runs'])} steps, every protocol measured")


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "--check":
        check(sys.argv[2], sys.argv[3:])
    else:
        report(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else None)
