#!/usr/bin/env bash
# One entry point for a fresh machine: installs what ringbolt needs, then runs
#   ./run.sh demo   - a local 3-node cluster doing real work (ringbolt demo)
#   ./run.sh test   - the default test suite
#   ./run.sh lint   - ruff + mypy
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}

setup() {
  # Debian tools used by tests and benchmarks: redis-cli/redis-benchmark, ip/tc.
  if ! command -v redis-cli >/dev/null 2>&1 || ! command -v ip >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      apt-get update -qq >/dev/null 2>&1 || true
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-tools iproute2 >/dev/null 2>&1 \
        || echo "warning: could not install redis-tools/iproute2; tests that need them will skip" >&2
    fi
  fi
  "$PY" -m pip install -q --disable-pip-version-check -e '.[dev]' 2>&1 | grep -v 'Running pip as the' || true
  "$PY" -c 'import ringbolt' || { echo "error: ringbolt did not install" >&2; exit 1; }
}

cmd=${1:-help}; shift || true
case "$cmd" in
  demo) setup; exec "$PY" -m ringbolt demo "$@" ;;
  test) setup; exec "$PY" -m pytest -q "$@" ;;
  lint) setup; "$PY" -m ruff check ringbolt tests && exec "$PY" -m mypy ;;
  setup) setup ;;
  *) echo "usage: ./run.sh demo|test|lint|setup [args...]" >&2; exit 2 ;;
esac
