#!/usr/bin/env bash
# Regenerates everything derived from the Rust `Config` (src/config.rs): config.schema.json
# (by a unit test), then the manifest, README table, CLI flags and the PierConfig type
# (scripts/gen-config.mjs). Run it after changing a config field, then rebuild the addon
# (scripts/build.sh) so index.d.ts follows.
set -euo pipefail
cd "$(dirname "$0")/.."
# The crate (and so the schema dump) compiles only with a pier_config.rs: derive from the
# schema at hand first, then from the fresh one.
node scripts/gen-config.mjs
PIER_REGENERATE=1 cargo test --quiet --lib config_schema >/dev/null
node scripts/gen-config.mjs
