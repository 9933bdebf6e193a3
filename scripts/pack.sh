#!/usr/bin/env bash
# Packs the plugin the way it is published: the main package (JS, manifest, loader) and the
# per-platform binary package (napi-rs npm/ layout), into dist/. Expects a release build.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p dist
rm -f dist/*.tgz
cp pier-connector.linux-x64-gnu.node npm/linux-x64-gnu/
npm pack --silent --pack-destination dist >/dev/null
(cd npm/linux-x64-gnu && npm pack --silent --pack-destination ../../dist >/dev/null)
ls dist/*.tgz
