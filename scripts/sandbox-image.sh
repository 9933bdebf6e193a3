#!/usr/bin/env bash
# OpenClaw's default sandbox image (openclaw-sandbox:bookworm-slim), which a Pier job with tools
# runs in, built as OpenClaw documents it for npm installs: the inline Dockerfile of its
# docs/gateway/sandboxing/images-and-setup.md, read from the installed OpenClaw package, so the
# image follows the OpenClaw version that runs it. (From an OpenClaw source checkout, its own
# scripts/sandbox-setup.sh does the same.) Shipped in the plugin's package: `openclaw doctor`
# names this file when the image is missing.
#
#   bash scripts/sandbox-image.sh [<openclaw package directory>]
#
# The OpenClaw package is the argument, else $OPENCLAW_PACKAGE, else the one the `openclaw`
# command on PATH runs from. Safe to run again: an image this script built from the same
# Dockerfile is kept (about a second, nothing built); one it built from another Dockerfile is
# rebuilt; one of the same name it did not build (no pier.dockerfile label: OpenClaw's own
# script, or yours) is left alone. Docker pulls the base image (debian:bookworm-slim) as usual.
# Exits non-zero with one line saying what is missing.
set -euo pipefail

IMAGE=openclaw-sandbox:bookworm-slim
say() { echo "sandbox-image: $*"; }
fail() {
  echo "sandbox-image: $*" >&2
  exit 1
}

command -v docker >/dev/null 2>&1 || fail "docker is not installed (Linux: apt-get install docker.io; macOS: Docker Desktop)"
docker version --format '{{.Server.Version}}' >/dev/null 2>&1 ||
  fail "no docker daemon answers ($(docker version 2>&1 >/dev/null | tail -n 1)); start it (Linux: systemctl start docker; macOS: open -a Docker)"

# The OpenClaw package: the directory above the `openclaw` command's real file whose
# package.json is OpenClaw's.
package="${1:-${OPENCLAW_PACKAGE:-}}"
if [ -z "$package" ]; then
  bin=$(command -v openclaw) || fail "no openclaw command on PATH: give the OpenClaw package directory (bash $0 <dir>)"
  package=$(dirname "$(readlink -f "$bin")")
  while [ "$package" != / ] && ! grep -qs '"name": *"openclaw"' "$package/package.json"; do package=$(dirname "$package"); done
fi
docs="$package/docs/gateway/sandboxing/images-and-setup.md"
[ -f "$docs" ] || fail "OpenClaw's sandbox docs are not at $docs: give the OpenClaw package directory (bash $0 <dir>)"
dockerfile=$(awk '
  /docker build -t openclaw-sandbox:bookworm-slim - <<.DOCKERFILE./ { inside = 1; next }
  inside && /^[[:space:]]*DOCKERFILE[[:space:]]*$/ { exit }
  inside { sub(/^    /, ""); print }
' "$docs")
[ -n "$dockerfile" ] || fail "no inline sandbox Dockerfile found in $docs"

# The label names the Dockerfile an image was built from: the cache key.
sha=$(printf '%s\n' "$dockerfile" | sha256sum | cut -c1-16)
built=$(docker image inspect -f '{{ index .Config.Labels "pier.dockerfile" }}' "$IMAGE" 2>/dev/null || echo missing)
if [ "$built" = "$sha" ]; then
  say "$IMAGE is up to date (OpenClaw's Dockerfile, sha256 $sha…); nothing to do"
  exit 0
fi
if [ "$built" != missing ] && { [ -z "$built" ] || [ "$built" = "<no value>" ]; }; then
  say "$IMAGE is there and was not built by this script: left as it is"
  exit 0
fi
say "building $IMAGE (OpenClaw's documented Dockerfile from $docs, sha256 $sha…)"
log=$(mktemp "${TMPDIR:-/tmp}/pier-sandbox-image-XXXXXX")
trap 'rm -f "$log"' EXIT
started=$SECONDS
printf '%s\n' "$dockerfile" | nice -n 10 docker build --label "pier.dockerfile=$sha" -t "$IMAGE" - >"$log" 2>&1 ||
  fail "docker build of $IMAGE failed: $(tail -n 3 "$log" | tr '\n' ' ')"
say "built $IMAGE in $((SECONDS - started)) s"
