#!/usr/bin/env bash
# Compares two builds of clpe on one workload, the way this VM allows: its speed moves in
# phases of seconds to minutes, and each core has its own, so a comparison is fair only
# between runs made one right after the other on the same core. Each core runs N pairs of
# short runs (A then B, then B then A, ...); the figure is the median over all pairs of
# B's median latency over A's.
#   scripts/compare-builds.sh N WORKLOAD BIN_A BIN_B   (e.g. 60 acl-10000 old/clpe new/clpe)
# REPEAT (default 2) passes over an acl workload's events per run; chain-10000 runs once.
set -euo pipefail
n=$1 workload=$2 a=$3 b=$4
bench=$(cd "$(dirname "$0")/../../shared/bench" && pwd)
case $workload in
  chain-*) extra=(--local-peer home --repeat 1) ;;
  *) extra=(--expected "$bench/$workload/expected.txt" --repeat "${REPEAT:-2}") ;;
esac
run() { # core binary -> "p50 mismatches"
  taskset -c "$1" "$2" bench --json --policies "$bench/$workload/policies.yaml" \
    --events "$bench/$workload/events.jsonl" "${extra[@]}" |
    python3 -c "import json,sys; d=json.load(sys.stdin); print(d['latency_ns']['p50'], d['mismatches'])"
}
pairs() { # core -> one "A B" line per pair
  for i in $(seq "$n"); do
    if ((i % 2)); then x=$(run "$1" "$a"); y=$(run "$1" "$b"); else y=$(run "$1" "$b"); x=$(run "$1" "$a"); fi
    echo "$x $y"
  done
}
out=$(mktemp -d)
pairs 0 >"$out/0" &
pairs 1 >"$out/1" &
wait
cat "$out/0" "$out/1" | python3 -c '
import statistics, sys
ratios, a_all, b_all = [], [], []
for line in sys.stdin:
    a, ma, b, mb = line.split()
    if ma != "0" or mb != "0":
        sys.exit(f"decisions differ from expected.txt: {line.strip()}")
    a_all.append(int(a)); b_all.append(int(b)); ratios.append(int(b) / int(a))
ratios.sort()
q = lambda f: ratios[int(f * (len(ratios) - 1))]
print(f"pairs {len(ratios)}  A median {statistics.median(a_all)} ns  B median {statistics.median(b_all)} ns  "
      f"B/A median {statistics.median(ratios):.3f} (quartiles {q(0.25):.3f}-{q(0.75):.3f})")
'
rm -r "$out"
