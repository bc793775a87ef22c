#!/usr/bin/env bash
# Install everything the test suite needs on a fresh machine, then run it.
#   scripts/test.sh [pytest arguments...]
# System packages (redis-server, chromium, chromium-driver) are installed with apt-get when
# missing and we may (root or passwordless sudo); otherwise the script says what to install.
# The tests start their own redis-server on a free loopback port; nothing is assumed running.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
    echo "scripts/test.sh: please install: ${need[*]} (apt-get install ${need[*]})" >&2
    exit 1
  fi
  echo "Installing system packages: ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
"$VENV/bin/python" -m pip install -q -e '.[test,hiredis]'

exec "$VENV/bin/python" -m pytest "$@"
