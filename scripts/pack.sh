#!/usr/bin/env bash
# Packs this checkout for installs without a registry, after the README's build (scripts/build.sh):
#   dist/pier-connector-<version>.tgz  a plain `npm pack`: the package's `files`, with this
#       platform's binary (pier-connector.<platform>.node) inside and no optional dependencies,
#       so `openclaw plugins install npm-pack:<tgz>` needs no registry;
#   dist/pier-connector/  the same files unpacked, for `openclaw plugins install <dir>` (OpenClaw
#       copies a directory whole, so installing the checkout itself would copy target/).
# The published packages (a thin main package plus one binary package per platform) are made by
# the release pipeline with `napi artifacts` and `napi pre-publish` (.github/workflows/CI.yml).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! ls pier-connector.*.node >/dev/null 2>&1; then
  echo "pack: no pier-connector.<platform>.node in $(pwd): run scripts/build.sh first" >&2
  exit 1
fi
# PIER_PACK_DIR: another output directory than dist/ (each test file packs into its own, so
# test files running side by side never replace a directory a gateway has loaded).
out="${PIER_PACK_DIR:-dist}"
mkdir -p "$out"
rm -rf "$out/pier-connector" "$out"/pier-connector-*.tgz
tgz=$(npm pack --silent --pack-destination "$out" | tail -n 1)
mkdir "$out/pier-connector"
tar xzf "$out/$tgz" -C "$out/pier-connector" --strip-components=1
echo "$out/$tgz"
echo "$out/pier-connector/"
