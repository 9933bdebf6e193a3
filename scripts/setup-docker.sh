#!/usr/bin/env bash
# Docker for the sandbox end-to-end tests (__test__/e2e/sandbox.test.mjs): a running dockerd and
# OpenClaw's default sandbox image, made from Debian's packages alone (these machines reach no
# image registry). Safe to run again: each step is skipped when its result is there.
#
#   bash scripts/setup-docker.sh          # install, start dockerd if none runs, build missing images
#   bash scripts/setup-docker.sh --stop   # stop dockerd if (and only if) this script started it
#
# 1. docker.io and debootstrap from Debian (apt-get), when dockerd or debootstrap is missing;
# 2. dockerd, started in the background only when no daemon answers; its pid is recorded in
#    $STATE/dockerd.pid so --stop ends exactly the daemon this script started, never one that
#    was running before;
# 3. debian:bookworm-slim, when missing: `debootstrap --variant=minbase bookworm` and `docker
#    import` (the base image OpenClaw's Dockerfile starts FROM, without Docker Hub);
# 4. openclaw-sandbox:bookworm-slim (OpenClaw's default sandbox image), when missing or built from
#    another Dockerfile: scripts/sandbox-image.sh, the operator's setup (OpenClaw's documented
#    `docker build` for npm installs, read from the installed package), so the image follows the
#    OpenClaw version the tests run.
#
# Docker that cannot run here (no root, no kernel support, no registry for the packages) is not
# an error: the script says why, writes the reason to $STATE/unavailable, and exits 0; the
# sandbox tests then report themselves skipped with that reason. PIER_REQUIRE_DOCKER=1 makes it
# an error instead (for machines where docker must work, such as CI).
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE="${PIER_E2E_CACHE:-$HOME/.cache/pier-e2e}"
STATE="$CACHE/docker"
OPENCLAW_DOCS="$CACHE/openclaw/node_modules/openclaw/docs/gateway/sandboxing/images-and-setup.md"
BASE_IMAGE=debian:bookworm-slim
SANDBOX_IMAGE=openclaw-sandbox:bookworm-slim
MIRROR="${PIER_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
mkdir -p "$STATE"

step_started=$SECONDS
step() { step_started=$SECONDS; echo "setup-docker: $*"; }
done_step() { echo "setup-docker:   done in $((SECONDS - step_started)) s"; }

# A daemon this script started and that still runs (its recorded pid is a live dockerd).
ours() {
  local pid
  pid=$(cat "$STATE/dockerd.pid" 2>/dev/null) || return 1
  [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = dockerd ]
}

if [ "${1:-}" = "--stop" ]; then
  if ours; then
    pid=$(cat "$STATE/dockerd.pid")
    echo "setup-docker: stopping dockerd (pid $pid), which setup-docker.sh started"
    kill -TERM "$pid"
    # dockerd stops its containers first (up to 10 s each by default); wait for it to exit.
    for _ in $(seq 1 600); do [ -d "/proc/$pid" ] || break; sleep 0.1; done
    [ -d "/proc/$pid" ] && { echo "setup-docker: dockerd $pid did not stop within 60 s" >&2; exit 1; }
  else
    echo "setup-docker: no dockerd of setup-docker.sh runs; nothing stopped"
  fi
  rm -f "$STATE/dockerd.pid"
  exit 0
fi

rm -f "$STATE/unavailable"
unavailable() {
  echo "setup-docker: docker is not available: $1" >&2
  echo "$1" >"$STATE/unavailable"
  if [ "${PIER_REQUIRE_DOCKER:-}" = 1 ]; then exit 1; fi
  echo "setup-docker: the sandbox tests will be reported as skipped" >&2
  exit 0
}

daemon_answers() { docker info >/dev/null 2>&1; }

# 1. Packages.
if ! command -v dockerd >/dev/null 2>&1 || ! command -v debootstrap >/dev/null 2>&1 || ! command -v docker >/dev/null 2>&1; then
  [ "$(id -u)" = 0 ] || unavailable "docker.io and debootstrap are not installed, and installing them needs root"
  step "installing docker.io and debootstrap (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq docker.io debootstrap >/dev/null 2>&1 ||
    { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq docker.io debootstrap >/dev/null; } ||
    unavailable "apt-get install docker.io debootstrap failed"
  done_step
fi

# 2. The daemon.
if ! daemon_answers; then
  [ "$(id -u)" = 0 ] || unavailable "no docker daemon answers, and starting dockerd needs root"
  step "starting dockerd (log: $STATE/dockerd.log)"
  # setsid: the daemon outlives this script, in a session of its own, until --stop.
  setsid dockerd >"$STATE/dockerd.log" 2>&1 </dev/null &
  echo $! >"$STATE/dockerd.pid"
  for _ in $(seq 1 600); do
    daemon_answers && break
    ours || unavailable "dockerd exited at start: $(tail -n 1 "$STATE/dockerd.log")"
    sleep 0.1
  done
  daemon_answers || unavailable "dockerd did not answer within 60 s: $(tail -n 1 "$STATE/dockerd.log")"
  done_step
else
  ours && echo "setup-docker: dockerd (pid $(cat "$STATE/dockerd.pid"), started by setup-docker.sh) answers" ||
    echo "setup-docker: a docker daemon answers (not started by setup-docker.sh: left as it is)"
fi

# 3. The base image, from Debian's packages.
if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  command -v debootstrap >/dev/null 2>&1 || unavailable "debootstrap is not installed"
  [ "$(id -u)" = 0 ] || unavailable "$BASE_IMAGE is missing, and debootstrap needs root"
  step "building $BASE_IMAGE: debootstrap --variant=minbase bookworm ($MIRROR), docker import"
  root=$(mktemp -d "${TMPDIR:-/tmp}/pier-bookworm-XXXXXX")
  trap 'rm -rf "$root"' EXIT
  nice -n 10 debootstrap --variant=minbase bookworm "$root" "$MIRROR" >"$STATE/debootstrap.log" 2>&1 ||
    unavailable "debootstrap failed: $(tail -n 1 "$STATE/debootstrap.log")"
  tar -C "$root" -c . | docker import - "$BASE_IMAGE" >/dev/null
  rm -rf "$root"
  trap - EXIT
  done_step
fi

# 4. OpenClaw's sandbox image: the operator's script (scripts/sandbox-image.sh), with the OpenClaw
#    package the tests run.
[ -f "$OPENCLAW_DOCS" ] || unavailable "OpenClaw's sandbox docs are missing ($OPENCLAW_DOCS): run scripts/setup-e2e.sh first"
step "OpenClaw's sandbox image (scripts/sandbox-image.sh)"
out=$(nice -n 10 bash scripts/sandbox-image.sh "$CACHE/openclaw/node_modules/openclaw" 2>&1) || unavailable "${out##*$'\n'}"
echo "$out"
done_step

# A container really starts: the kernel, cgroups and the runtime work, not only the API.
step "checking that a container runs ($SANDBOX_IMAGE, no network)"
out=$(docker run --rm --network none "$SANDBOX_IMAGE" true 2>&1) || unavailable "a container does not start: $out"
done_step
echo "setup-docker: ready ($(docker version --format 'dockerd {{.Server.Version}}'), $SANDBOX_IMAGE)"
