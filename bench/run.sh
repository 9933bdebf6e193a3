#!/usr/bin/env bash
# The benchmark (not part of the tests): builds the addon and the Rust load generator and raw
# responder in release mode, then runs bench/run.mjs, which writes bench/RESULTS.md.
# PIER_BENCH_QUICK=1 runs shorter scenarios.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
cargo build --quiet --release --examples
NATS_SERVER_BIN="$(command -v nats-server)" node bench/run.mjs
