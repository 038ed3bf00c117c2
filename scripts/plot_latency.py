#!/usr/bin/env python3
"""Plots latency per decision against the number of policies, log-log, as an SVG:
clpe (median of the runs in each results file, one line per build the runs name) next
to the anchors (Cedar, Rego, floor) and the floor `clpe bench --floor` timed in the same
runs.

Files after the first ending in .tsv are `clpe-anchors` outputs (tools/anchors): the
anchors and clpe timed in one run on this machine, drawn dashed ("..., same run"; clpe's
point is its p50).

usage: plot_latency.py ANCHORS.tsv [RESULTS.jsonl | SAME-RUN.tsv]... OUT.svg
(standard library only)"""
import json
import math
import statistics
import sys
from collections import defaultdict


def tsv_rows(path):
    for line in open(path):
        if line.startswith("#") or line.startswith("rules"):
            continue
        parts = line.rstrip("\n").split("\t")
        if len(parts) >= 3:
            yield parts


def load(anchors_path, results_paths):
    series = defaultdict(dict)
    for parts in tsv_rows(anchors_path):
        series[parts[1]][int(parts[0])] = float(parts[2])
    same_run = defaultdict(list)
    for path in (p for p in results_paths if p.endswith(".tsv")):
        for parts in tsv_rows(path):
            # clpe's point is its p50 (the fourth column), the others' their mean.
            value = parts[3] if parts[1] == "clpe" else parts[2]
            same_run[(parts[1], int(parts[0]))].append(float(value))
    for (engine, n), values in same_run.items():
        series[f"{engine}, same run"][n] = statistics.mean(values)
    runs = defaultdict(list)
    floors = defaultdict(list)
    for path in (p for p in results_paths if not p.endswith(".tsv")):
        for line in open(path):
            r = json.loads(line)
            if r["workload"].startswith("acl-"):
                # Lines from before builds were recorded are of the plain release build.
                runs[(r.get("build", "release"), r["policies"])].append(r["latency_ns"]["p50"])
                if "floor_ns" in r:
                    floors[r["policies"]].append(r["floor_ns"])
    for (build, n), values in runs.items():
        series[f"clpe {build} (p50)"][n] = statistics.median(values)
    for n, values in floors.items():
        series["floor, in clpe bench"][n] = statistics.median(values)
    return series


def svg(series, out):
    width, height, left, right, top, bottom = 820, 500, 80, 230, 30, 60
    xs = sorted({n for s in series.values() for n in s})
    ys = [v for s in series.values() for v in s.values()]
    x0, x1 = math.log10(min(xs)), math.log10(max(xs))
    y0, y1 = math.floor(math.log10(min(ys))), math.ceil(math.log10(max(ys)))

    def px(n):
        return left + (math.log10(n) - x0) / max(x1 - x0, 1e-9) * (width - left - right)

    def py(v):
        return top + (y1 - math.log10(v)) / max(y1 - y0, 1e-9) * (height - top - bottom)

    colors = {"clpe pgo (p50)": "#d62728", "clpe release (p50)": "#ff7f0e", "floor": "#7f7f7f", "floor, in clpe bench": "#bcbd22", "cedar": "#1f77b4", "rego": "#2ca02c", "rego-indexed": "#9467bd"}
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">',
             f'<rect width="{width}" height="{height}" fill="white"/>',
             f'<text x="{left}" y="18" font-size="14">Latency per ACL decision vs number of policies (log-log)</text>']
    for e in range(y0, y1 + 1):
        y = py(10 ** e)
        label = {0: "1 ns", 3: "1 µs", 6: "1 ms", 9: "1 s"}.get(e, f"1e{e} ns")
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>')
        parts.append(f'<text x="{left - 8}" y="{y + 4:.1f}" text-anchor="end">{label}</text>')
    for n in xs:
        x = px(n)
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{height - bottom}" stroke="#eee"/>')
        parts.append(f'<text x="{x:.1f}" y="{height - bottom + 18}" text-anchor="middle">{n:,}</text>')
    parts.append(f'<text x="{(left + width - right) / 2}" y="{height - 15}" text-anchor="middle">access policies</text>')
    for i, (name, points) in enumerate(sorted(series.items())):
        base = name.removesuffix(", same run")
        color = colors.get(name, colors.get("clpe release (p50)" if base == "clpe" else base, "#000"))
        dash = ' stroke-dasharray="6,4"' if name.endswith(", same run") else ""
        pts = " ".join(f"{px(n):.1f},{py(v):.1f}" for n, v in sorted(points.items()))
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2"{dash} points="{pts}"/>')
        for n, v in sorted(points.items()):
            parts.append(f'<circle cx="{px(n):.1f}" cy="{py(v):.1f}" r="3" fill="{color}"/>')
        ly = top + 20 + 20 * i
        parts.append(f'<line x1="{width - right + 15}" x2="{width - right + 40}" y1="{ly}" y2="{ly}" stroke="{color}" stroke-width="2"{dash}/>')
        parts.append(f'<text x="{width - right + 45}" y="{ly + 4}">{name}</text>')
    parts.append("</svg>")
    open(out, "w").write("\n".join(parts) + "\n")


if __name__ == "__main__":
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    svg(load(sys.argv[1], sys.argv[2:-1]), sys.argv[-1])
