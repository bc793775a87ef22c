#!/usr/bin/env bash
# Install everything the test suite needs on a fresh machine, then run it.
#   scripts/test.sh [pytest arguments...]
# System packages (redis-server, chromium, chromium-driver) are installed with apt-get when
# missing and we may (root or passwordless sudo); otherwise the script says what to install.
# The tests start their own redis-server on a free loopback port; nothing is assumed running.
# The virtualenv also gets the lint tools (ruff, mypy) that .ci/run and `tox -e style` use.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

scripts/system-packages.sh

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
"$VENV/bin/python" -m pip install -q -e '.[test,hiredis,lint]'

exec "$VENV/bin/python" -m pytest "$@"
