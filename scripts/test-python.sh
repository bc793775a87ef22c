#!/usr/bin/env bash
# Run the test suite on one particular Python, in its own virtualenv .venv-VERSION.
#   scripts/test-python.sh VERSION [pytest arguments...]      e.g. scripts/test-python.sh 3.9 -x
# The interpreter is the newest ~/.pyenv/versions/VERSION.*/bin/python, else pythonVERSION on
# PATH. When there is none: under CI (CI=true) that is a failure (exit 1); elsewhere the run
# is skipped with a message and exit code 77. The virtualenv is reused when it is there and
# of the right version; pip is upgraded first (the pip bundled with 3.9 backtracks for many
# minutes over selenium's dependency tree) and the package is reinstalled every time.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -lt 1 ] || ! [[ $1 =~ ^3\.[0-9]+$ ]]; then
  echo "usage: $0 VERSION [pytest arguments...]   (VERSION like 3.9 or 3.13)" >&2
  exit 2
fi
VERSION=$1
shift
VENV=.venv-$VERSION

is_version() {  # is_version PYTHON: is it a working Python $VERSION?
  [ -x "$1" ] || command -v "$1" >/dev/null 2>&1 || return 1
  [ "$("$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" = "$VERSION" ]
}

PY=""
for candidate in $(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$VERSION".*/bin/python 2>/dev/null \
                   | sort -V -r) "python$VERSION"; do
  if is_version "$candidate"; then PY=$candidate; break; fi
done
if [ -z "$PY" ]; then
  msg="no Python $VERSION found (looked in ${PYENV_ROOT:-$HOME/.pyenv}/versions/$VERSION.* and for python$VERSION on PATH)"
  if [ "${CI:-}" = true ]; then
    echo "$0: FAIL: $msg; CI must test every supported Python" >&2
    exit 1
  fi
  echo "$0: SKIPPED: $msg" >&2
  exit 77
fi

scripts/system-packages.sh

if [ -x "$VENV/bin/python" ] && ! is_version "$VENV/bin/python"; then
  echo "$VENV is not a Python $VERSION virtualenv; recreating it"
  rm -rf "$VENV"
fi
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
echo "Python $VERSION: $("$VENV/bin/python" -c 'import sys; print(sys.version.split()[0])') in $VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
"$VENV/bin/python" -m pip install -q -e '.[test,hiredis]'

exec "$VENV/bin/python" -m pytest "$@"
