#!/usr/bin/env bash
# The whole test suite: formatting, lints, Rust tests, then the Node tests of the addon, the
# CLI and the OpenClaw plugin against real nats-server processes on loopback, including the
# end-to-end test in a real OpenClaw gateway (__test__/e2e/).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/setup-e2e.sh
export NATS_SERVER_BIN="$(command -v nats-server)"

echo "== cargo fmt --check"
cargo fmt --check
echo "== cargo clippy --all-targets --features addon -- -D warnings"
cargo clippy --quiet --all-targets --features addon -- -D warnings
echo "== cargo test"
cargo test --quiet
echo "== generated config files are current (scripts/gen-config.sh)"
node scripts/gen-config.mjs --check
echo "== the addon's embedded JS driver parses (src/binding/driver.js)"
node --check src/binding/driver.js
echo "== fuzz the inbound parser (cargo fuzz, ${PIER_FUZZ_SECONDS:-20} s)"
command -v cargo-fuzz >/dev/null 2>&1 || cargo install --quiet --locked cargo-fuzz@0.13.2
# cargo fuzz needs nightly compiler flags (sanitizers); this machine has the stable toolchain
# only, and RUSTC_BOOTSTRAP=1 lets stable accept them for this build.
RUSTC_BOOTSTRAP=1 cargo fuzz run parse_job -- -max_total_time="${PIER_FUZZ_SECONDS:-20}" -max_len=4096 2>&1 | tail -n 2
echo "== build the addon (release)"
bash scripts/build.sh
git diff --exit-code --quiet -- index.d.ts index.js 2>/dev/null || {
  echo "index.js / index.d.ts differ from the generated ones: commit the regenerated files" >&2
  git --no-pager diff --stat -- index.d.ts index.js >&2
  exit 1
}
echo "== node --test __test__/ (two lanes: scripts/node-tests.mjs)"
node scripts/node-tests.mjs
