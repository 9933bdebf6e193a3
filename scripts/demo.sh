#!/usr/bin/env bash
# The demo: installs what it needs, builds the addon, then runs a worker over ws:// against a
# real nats-server on loopback, publishes a few tasks and prints the results and the status.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
NATS_SERVER_BIN="$(command -v nats-server)" node scripts/demo.mjs
