#!/usr/bin/env bash
# Builds the native addon (release) and regenerates index.js / index.d.ts.
set -euo pipefail
cd "$(dirname "$0")/.."
npx napi build --platform --release --features addon --js index.js --dts index.d.ts
