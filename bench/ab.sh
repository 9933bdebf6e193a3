#!/usr/bin/env bash
# A/B benchmark: this checkout's addon against the addon built from REV (default: HEAD~1),
# native-echo and JS-handler cells at N = 1, 16, 256, interleaved (PIER_BENCH_ROUNDS rounds,
# default 5; medians; PIER_BENCH_N=256 runs only that N; PIER_BENCH_CHECKS=1 adds this build with
# a daily budget and senders' shares set, never reached, and CPU per job). Prints a Markdown
# table. Not part of the tests.
#   bash bench/ab.sh ba28932
set -euo pipefail
cd "$(dirname "$0")/.."
REV="${1:-HEAD~1}"
BASE_DIR="${PIER_AB_DIR:-/tmp/pier-ab}"
bash scripts/setup.sh
bash scripts/build.sh
cargo build --quiet --release --examples
rm -rf "$BASE_DIR/src"
git worktree add -f --detach "$BASE_DIR/src" "$REV" >/dev/null
trap 'git worktree remove --force "$BASE_DIR/src"' EXIT
# Builds from before the `addon` feature always contained the binding.
FEATURES=()
grep -q '^addon = ' "$BASE_DIR/src/Cargo.toml" && FEATURES=(--features addon)
(cd "$BASE_DIR/src" && CARGO_TARGET_DIR="$BASE_DIR/target" cargo build --quiet --release --lib "${FEATURES[@]}")
cp "$BASE_DIR/target/release/libpier_connector.so" "$BASE_DIR/baseline.node"
NATS_SERVER_BIN="$(command -v nats-server)" PIER_BENCH_AB="$BASE_DIR/baseline.node" node bench/run.mjs
