#!/usr/bin/env bash
# Proves that vendor/async-nats is the async-nats crate published on crates.io plus the
# patches/async-nats-*.patch files (applied in name order), and nothing else:
#
#  1. cargo itself gets the published .crate: a throwaway project in a temp dir depends on
#     `async-nats = "=<version>"` (the version of vendor/async-nats/Cargo.toml) and runs
#     `cargo fetch`, which verifies the download against the registry index's checksum. The
#     project's Cargo.lock seeds the throwaway one, so every other crate resolves to versions
#     already in ~/.cargo/registry: a warm run needs no network (`--offline` first; online only
#     when something is missing).
#  2. The .crate file's sha256 must equal the checksum cargo wrote to the throwaway Cargo.lock,
#     and that file (not cargo's unpacked copy, which cargo does not re-verify) is unpacked.
#  3. The parts the vendored copy leaves out on purpose are removed (VENDOR_DROPS below, each
#     with its reason; listed paths, not diff exclusions, so a file added back fails too).
#  4. Every patches/async-nats-*.patch is applied with `git apply` (no fuzz), in name order.
#  5. The result must equal vendor/async-nats byte for byte, except the two paths in
#     VENDOR_ONLY below.
# Prints one line on success; on failure, the differences, and exits 1. Compiles nothing.
set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."
root=$PWD
crate=async-nats
vendor=vendor/$crate

# Removed from the published crate before comparing, with the reason the vendored copy lacks it:
VENDOR_DROPS=(
  Cargo.toml.orig         # written by `cargo package` (the author's manifest before cargo normalized it); cargo never reads it
  Cargo.lock              # the crate's own lockfile; cargo ignores it when the crate is a dependency
  tests benches examples  # upstream's test, bench and example targets: never built for a dependency (their tables leave Cargo.toml below)
  CHANGELOG.md dependencies.md           # upstream's documents, not part of the build
  .cargo-feature-check.sh .cargo-hack-check.sh  # upstream's CI scripts, not part of the build
)
# Cargo.toml: the published manifest minus its [[example]], [[test]] and [[bench]] tables (they
# name the files dropped above; cargo rejects a manifest whose explicit targets are missing).
# Everything else in it (dependencies, features, versions) must be unchanged.
# .cargo_vcs_info.json (also written by `cargo package`) is kept in vendor/ and compared.

# In vendor/async-nats but not in the crate, and not compared:
VENDOR_ONLY=(
  PIER.md  # this project's note: why the crate is vendored and how to update it
  target   # build output if cargo was ever run inside vendor/ (git-ignored)
)

version=$(sed -n '/^\[package\]/,/^\[/ s/^version = "\([^"]*\)"$/\1/p' "$vendor/Cargo.toml" | head -n 1)
[ -n "$version" ] || { echo "check-vendor: no [package] version in $vendor/Cargo.toml" >&2; exit 1; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/check-vendor.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# 1. The throwaway project, resolved from the project's own lockfile where it can be.
mkdir -p "$tmp/probe/src"
: >"$tmp/probe/src/lib.rs"
cat >"$tmp/probe/Cargo.toml" <<EOF
[package]
name = "vendor-check-probe"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
$crate = "=$version"

[workspace]
EOF
cp Cargo.lock "$tmp/probe/Cargo.lock"
host=$(rustc -vV | sed -n 's/^host: //p')
fetch() { cargo fetch --quiet --manifest-path "$tmp/probe/Cargo.toml" --target "$host" "$@"; }
if ! fetch --offline 2>/dev/null; then
  fetch 2>"$tmp/fetch.err" || { cat "$tmp/fetch.err" >&2; echo "check-vendor: cargo fetch of $crate $version failed" >&2; exit 1; }
fi

# 2. The .crate file, checked against the checksum cargo recorded from the registry index.
sum=$(awk -v n="$crate" -v v="$version" '
  /^\[\[package\]\]/ { name = ""; ver = "" }
  $1 == "name" { name = $3 } $1 == "version" { ver = $3 }
  $1 == "checksum" && name == "\"" n "\"" && ver == "\"" v "\"" { gsub(/"/, "", $3); print $3 }
' "$tmp/probe/Cargo.lock")
[ -n "$sum" ] || { echo "check-vendor: no registry checksum for $crate $version in the resolved lockfile" >&2; exit 1; }
file=""
for f in "${CARGO_HOME:-$HOME/.cargo}"/registry/cache/*/"$crate-$version.crate"; do
  [ -f "$f" ] && [ "$(sha256sum <"$f" | cut -d' ' -f1)" = "$sum" ] && { file=$f; break; }
done
[ -n "$file" ] || { echo "check-vendor: no $crate-$version.crate in cargo's registry cache with sha256 $sum" >&2; exit 1; }

mkdir "$tmp/published"
tar -xzf "$file" -C "$tmp/published"
pub=$tmp/published/$crate-$version
[ -d "$pub" ] || { echo "check-vendor: $file does not unpack to $crate-$version/" >&2; exit 1; }

# 3. What the vendored copy leaves out.
for p in "${VENDOR_DROPS[@]}"; do
  [ -e "$pub/$p" ] || { echo "check-vendor: the published crate has no $p any more: update VENDOR_DROPS in $0" >&2; exit 1; }
  rm -rf "${pub:?}/$p"
done
awk '/^\[/ { drop = ($0 ~ /^\[\[(example|test|bench)\]\]$/) } !drop' "$pub/Cargo.toml" >"$tmp/Cargo.toml" && mv "$tmp/Cargo.toml" "$pub/Cargo.toml"

# 4. The patches, in name order; each comes with its upstream pull request text beside it.
shopt -s nullglob
patches=(patches/"$crate"-*.patch)
git -C "$tmp/published" init --quiet
for p in "${patches[@]}"; do
  [ -f "${p%.patch}.md" ] || { echo "check-vendor: $p has no ${p%.patch}.md (the upstream pull request text)" >&2; exit 1; }
  git -C "$tmp/published" apply --directory="$crate-$version" "$root/$p" 2>"$tmp/apply.err" || {
    cat "$tmp/apply.err" >&2
    echo "check-vendor: $p does not apply to $crate $version (after the patches before it in name order)" >&2
    exit 1
  }
done

# 5. Byte-for-byte comparison with vendor/.
cp -a "$vendor" "$tmp/vendored"
for p in "${VENDOR_ONLY[@]}"; do rm -rf "${tmp:?}/vendored/$p"; done
if ! diff -r --no-dereference "$pub" "$tmp/vendored" >/dev/null 2>&1; then
  echo "check-vendor: $vendor is not $crate $version from crates.io + ${patches[*]:-no patches}:" >&2
  (cd "$tmp" && diff -ru --no-dereference "published/$crate-$version" vendored | head -n 60) >&2 || true
  exit 1
fi
n=${#patches[@]}
names=$(printf '%s\n' "${patches[@]}" | sed "s|^patches/$crate-||; s|\.patch\$||" | paste -sd, - | sed 's/,/, /g')
echo "$vendor = $crate $version + $n patch$([ "$n" = 1 ] || echo es)${names:+ ($names)}"
