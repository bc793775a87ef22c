#!/usr/bin/env bash
# Build the Sphinx docs with warnings as errors, from a virtualenv that has only the
# package and its `docs` extra (.venv-docs), so a page that needs more cannot pass.
#   scripts/build-docs.sh [output directory, default docs/_build/html]
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=.venv-docs
OUT=${1:-docs/_build/html}

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
"$VENV/bin/python" -m pip install -q -e '.[docs]'
exec "$VENV/bin/python" -m sphinx -W --keep-going -b html docs "$OUT"
