#!/usr/bin/env bash
# Builds clpe with profile-guided optimisation into target/pgo/release/clpe.
#
# Why: a decision's hot code is about 25 KiB, under the 32 KiB instruction cache, but the
# plain build scatters it through large functions (the dispatcher's `decide` is 21 KiB,
# 4.5 KiB of it hot, in runs all over its length), so some of the cache's 64 sets get
# more than their 8 hot lines, which then miss on every decision (callgrind: 69 misses per
# allowed decision at 8 ways, 2.7 with the same 32 KiB fully associative). The profile
# lets LLVM put the hot blocks together, split the cold ones out of each function
# (`-enable-split-machine-functions`) and group hot functions (`.text.hot`, kept apart by
# the linker's `-z keep-text-section-prefix`).
#
# Training (the instrumented build): acl-1000 (with `--floor`, so that the floor `clpe
# bench --floor` times beside the engine is optimised as the engine is) and chain-10000
# from ../shared/bench, and every scenario. acl-100, acl-10000 and acl-100000 are not trained on: the figures
# measured on them come from workloads the profile has not seen.
#
#   scripts/pgo-build.sh            (about 15 minutes on 2 cores: two release builds)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
bench=$(cd ../shared/bench && pwd)
scenarios=$(cd ../shared/scenarios && pwd)

rustup component add llvm-tools >/dev/null 2>&1 || rustup component add llvm-tools-preview
sysroot=$(rustc --print sysroot)
profdata=$(find "$sysroot" -name llvm-profdata -type f | head -n 1)
[[ -x $profdata ]] || { echo "llvm-profdata not found under $sysroot" >&2; exit 1; }

raw=$root/target/pgo-profiles
rm -rf "$raw" && mkdir -p "$raw"

echo "== instrumented build ==" >&2
CARGO_TARGET_DIR=$root/target/pgo-gen RUSTFLAGS="-Cprofile-generate=$raw" \
  cargo build --release --locked -p clpe
gen=$root/target/pgo-gen/release/clpe
# Build scripts ran instrumented too: only the training's profile is kept.
rm -f "$raw"/*.profraw

echo "== training ==" >&2
# The scenarios load the example WASM agents: built first, as .ci/run does.
bash scripts/build-wasm-examples.sh >&2
trap 'echo "pgo-build: a training run failed (run it without >/dev/null to see why)" >&2' ERR
"$gen" bench --policies "$bench/acl-1000/policies.yaml" --events "$bench/acl-1000/events.jsonl" \
  --expected "$bench/acl-1000/expected.txt" --repeat 3 --floor >/dev/null
"$gen" bench --local-peer home --policies "$bench/chain-10000/policies.yaml" \
  --events "$bench/chain-10000/events.jsonl" >/dev/null
"$gen" test "$scenarios"/*.yaml tests/scenarios/*.yaml >/dev/null
"$profdata" merge -o "$raw/merged.profdata" "$raw"/*.profraw

echo "== optimised build ==" >&2
CARGO_TARGET_DIR=$root/target/pgo RUSTFLAGS="-Cprofile-use=$raw/merged.profdata \
-Cllvm-args=-enable-split-machine-functions -Clink-arg=-Wl,-z,keep-text-section-prefix" \
  cargo build --release --locked -p clpe
echo "built $root/target/pgo/release/clpe" >&2
