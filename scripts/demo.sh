#!/usr/bin/env bash
# The demo: installs what it needs (nats-server and the npm dev dependencies, then Node 24 and
# OpenClaw into the cache the end-to-end tests use), builds the addon, then runs scripts/demo.mjs:
# a CLI worker over ws:// against a real nats-server on loopback, then the plugin installed in a
# real OpenClaw gateway whose agent answers a Pier job. Every step is labelled; everything it
# starts is stopped and every temporary directory removed, on failure too.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/setup-e2e.sh
bash scripts/build.sh
NATS_SERVER_BIN="$(command -v nats-server)" node scripts/demo.mjs
