#!/usr/bin/env bash
# The benchmark, in one command:   bench/run.sh [harness options...]
#
# Creates bench/.venv-peers (Flask-Tasks from this checkout, editable, plus the pinned peers
# of bench/requirements.txt), then runs `python -m bench.harness` with it, which starts a
# throwaway redis-server on a free loopback port and writes bench/RESULTS.md and
# bench/results.json. `bench/run.sh --help` lists the harness options.
# Needs Python 3.9+ and redis-server (installed with apt-get when missing and we may).
# The PostgreSQL and RabbitMQ configurations use the machine's servers (or throwaway ones,
# see bench/servers.py) and are skipped, with the reason in RESULTS.md, when neither works.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${BENCH_VENV:-bench/.venv-peers}

if ! command -v redis-server >/dev/null 2>&1 && [ -z "${REDIS_SERVER_BIN:-}" ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
    echo "bench/run.sh: please install redis-server (apt-get install redis-server)" >&2
    exit 1
  fi
  echo "Installing redis-server"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >/dev/null
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "Creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
install_log=$(mktemp)
if ! { "$VENV/bin/python" -m pip install -q --upgrade pip &&
       "$VENV/bin/python" -m pip install -q -r bench/requirements.txt -e '.[amqp,postgresql]'; } >"$install_log" 2>&1; then
  cat "$install_log" >&2
  echo "bench/run.sh: installing into $VENV failed (output above)" >&2
  exit 1
fi
rm -f "$install_log"

exec "$VENV/bin/python" -m bench.harness "$@"
