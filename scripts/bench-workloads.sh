#!/usr/bin/env bash
# Runs `clpe bench` (release) on every shared workload and writes one JSON line per run
# to docs/perf/results-<build>.jsonl, then redraws docs/perf/latency.svg from every
# build's file.
#   scripts/bench-workloads.sh [RUNS]   (default 3 runs per workload; the median is plotted)
# CLPE=path picks the binary (e.g. target/pgo/release/clpe from scripts/pgo-build.sh); by
# default the plain release build, built first. Each line records which one ran (`build`).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
bench=../shared/bench
if [[ -z ${CLPE:-} ]]; then
  cargo build --release --locked -p clpe >/dev/null
  CLPE=target/release/clpe
fi
case $CLPE in
  *pgo*) build=pgo ;;
  *) build=release ;;
esac
out=docs/perf/results-$build.jsonl
: > "$out"
for n in 100 1000 10000 100000; do
  for _ in $(seq "$runs"); do
    line=$("$CLPE" bench --json --policies "$bench/acl-$n/policies.yaml" \
      --events "$bench/acl-$n/events.jsonl" --expected "$bench/acl-$n/expected.txt" --repeat 10 --floor)
    echo "{\"workload\":\"acl-$n\",\"policies\":$n,\"build\":\"$build\",${line#\{}" >> "$out"
  done
done
# 1 and 2 threads interleaved, run after run: the VM's speed drifts from minute to
# minute, so a ratio is fair only between runs made side by side.
for _ in $(seq "$runs"); do
  for threads in 1 2; do
    line=$("$CLPE" bench --json --local-peer home --threads "$threads" --repeat 3 \
      --policies "$bench/chain-10000/policies.yaml" --events "$bench/chain-10000/events.jsonl")
    echo "{\"workload\":\"chain-10000\",\"policies\":10000,\"build\":\"$build\",${line#\{}" >> "$out"
  done
done
python3 scripts/plot_latency.py "$bench/anchors.tsv" docs/perf/results-*.jsonl docs/perf/anchors-same-run.tsv docs/perf/latency.svg
python3 scripts/summarize_bench.py "$out"
echo "wrote $out and docs/perf/latency.svg"
