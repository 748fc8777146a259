#!/usr/bin/env bash
# Fuzz smoke test, run by .ci/run: builds every fuzz target on the stable
# toolchain and runs each for a fixed number of inputs, starting from its
# committed seeds. It proves the targets build and hold on their seeds and a
# few thousand mutations; it is not a fuzzing campaign (see fuzz/README.md).
#
# FUZZ_SMOKE_RUNS sets the inputs per target.
set -euo pipefail
cd "$(dirname "$0")"
runs=${FUZZ_SMOKE_RUNS:-5000}

if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi
# cargo-fuzz passes nightly-only flags to rustc; stable accepts them with this.
export RUSTC_BOOTSTRAP=1

# Unoptimized with debug assertions and overflow checks, without
# AddressSanitizer: the build is what takes the time, and the code under
# test is safe Rust.
build_flags=(--dev --sanitizer none)

start=$SECONDS
cargo fuzz build "${build_flags[@]}"
echo "fuzz smoke: built every target in $((SECONDS - start)) s"

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for target in $(cargo fuzz list); do
  mkdir -p "$scratch/$target"
  # The first directory receives new inputs; seeds/ is only read.
  cargo fuzz run "${build_flags[@]}" "$target" "$scratch/$target" "seeds/$target" -- \
    -runs="$runs" -max_len=4096 -seed=1 2>"$scratch/$target.log" || {
    tail -n 40 "$scratch/$target.log"
    echo "fuzz smoke: target $target failed" >&2
    exit 1
  }
  echo "fuzz smoke: $target: $(grep -E '^Done' "$scratch/$target.log")"
done
echo "fuzz smoke: done in $((SECONDS - start)) s"
