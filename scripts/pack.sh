#!/usr/bin/env bash
# Packs the plugin the way it is published, napi-rs style: the per-platform binary package
# (npm/<platform>/) and the main package (JS, manifest, loader), whose package.json gains the
# optionalDependencies on the binary packages only in the packed copy, as `napi prepublish`
# does. Writes dist/*.tgz. Expects a release build.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p dist
rm -f dist/*.tgz
cp pier-connector.linux-x64-gnu.node npm/linux-x64-gnu/
(cd npm/linux-x64-gnu && npm pack --silent --pack-destination ../../dist >/dev/null)

cp package.json dist/package.json.orig
trap 'mv dist/package.json.orig package.json' EXIT
node -e '
  const fs = require("fs")
  const pkg = JSON.parse(fs.readFileSync("package.json", "utf8"))
  pkg.optionalDependencies = {}
  for (const dir of fs.readdirSync("npm")) {
    const sub = JSON.parse(fs.readFileSync(`npm/${dir}/package.json`, "utf8"))
    pkg.optionalDependencies[sub.name] = sub.version
  }
  fs.writeFileSync("package.json", JSON.stringify(pkg, null, 2) + "\n")
'
npm pack --silent --pack-destination dist >/dev/null
ls dist/*.tgz
