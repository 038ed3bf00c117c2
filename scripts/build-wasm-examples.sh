#!/usr/bin/env bash
# Builds the example WASM agents (examples/wasm-agents/*) for wasm32-unknown-unknown and
# copies them to <repo>/target/wasm-agents/<name>.wasm, whatever CARGO_TARGET_DIR says.
# Adds the rustup target when it is missing. The .wasm files are built, never committed.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target=wasm32-unknown-unknown
examples="$repo/examples/wasm-agents"
out="$repo/target/wasm-agents"
build="$repo/target/wasm-agents-build"

if ! rustup target list --installed 2>/dev/null | grep -qx "$target"; then
    echo "build-wasm-examples: adding the rustup target $target" >&2
    rustup target add "$target"
fi

locked=()
if [[ -f "$examples/Cargo.lock" ]]; then
    locked=(--locked)
fi

cargo build --release "${locked[@]}" \
    --manifest-path "$examples/Cargo.toml" \
    --target "$target" \
    --target-dir "$build"

mkdir -p "$out"
for dir in "$examples"/*/; do
    name="$(basename "$dir")"
    [[ -f "$dir/Cargo.toml" ]] || continue
    wasm="$build/$target/release/${name//-/_}.wasm"
    cp "$wasm" "$out/$name.wasm"
    echo "built $out/$name.wasm ($(wc -c <"$out/$name.wasm") bytes)"
done
