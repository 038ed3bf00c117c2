#!/usr/bin/env python3
"""Summarizes docs/perf/results-<build>.jsonl (written by scripts/bench-workloads.sh): per workload
and thread count, the median and fastest of the runs; for the acl workloads, the floor
timed in the same runs (`clpe bench --floor`) and the ratio to it; for chain-10000, the 2-thread
speed-up of each side-by-side pair (1 thread, then 2) and their median.

    python3 scripts/summarize_bench.py docs/perf/results-pgo.jsonl
"""
import json
import statistics
import sys
from collections import defaultdict


def main(path):
    runs = defaultdict(list)
    chain = []
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            runs[(r["policies"], r["workload"], r["threads"])].append(r)
            if r["workload"] == "chain-10000":
                chain.append(r)
    print("workload        threads  p50 ns (fastest)  p90 ns  p99 ns  decisions/s  apply ms  MiB added  mismatches")
    for (_, workload, threads), rs in sorted(runs.items()):
        med = lambda f: statistics.median(f(r) for r in rs)
        print(
            f"{workload:15} {threads:7}  {med(lambda r: r['latency_ns']['p50']):6.0f} "
            f"({min(r['latency_ns']['p50'] for r in rs):6})  "
            f"{med(lambda r: r['latency_ns']['p90']):6.0f}  {med(lambda r: r['latency_ns']['p99']):6.0f}  "
            f"{med(lambda r: r['decisions_per_second']):11.0f}  {med(lambda r: r['apply_ms']):8.1f}  "
            f"{med(lambda r: r['memory_bytes']) / 1048576:9.1f}  {sum(r['mismatches'] for r in rs):10}"
        )
    floors = defaultdict(list)
    for (_, workload, _), rs in runs.items():
        floors[workload] += [r for r in rs if "floor_ns" in r]
    for workload, rs in sorted(floors.items(), key=lambda x: x[1][0]["policies"] if x[1] else 0):
        if rs:
            print(
                f"{workload:15} floor in the same runs: {statistics.median(r['floor_ns'] for r in rs):.0f} ns; "
                f"p50 / floor per run: {', '.join('%.2f' % r['floor_ratio'] for r in rs)}; "
                f"median {statistics.median(r['floor_ratio'] for r in rs):.2f}"
            )
    pairs = [
        (a, b)
        for a, b in zip(chain, chain[1:])
        if a["threads"] == 1 and b["threads"] == 2
    ]
    if pairs:
        ratios = [b["decisions_per_second"] / a["decisions_per_second"] for a, b in pairs]
        print(
            f"chain-10000 2 threads / 1 thread, per pair: "
            f"{', '.join(f'{x:.2f}' for x in ratios)}; median {statistics.median(ratios):.2f}"
        )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "docs/perf/results-release.jsonl")
