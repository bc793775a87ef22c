#!/usr/bin/env bash
# Run the example app: a worker in the background and the web server in the foreground,
# both on the embedded SQLite broker (instance/tasks.sqlite3; no server to install).
# Stop with Ctrl-C: the server stops, then the worker shuts down warmly.
#
#   scripts/example.sh                  # http://127.0.0.1:5000
#   scripts/example.sh --port 8000      # options go to `flask run`
#   FLASK_TASKS_BROKER_URL=redis://localhost:6379/0 scripts/example.sh
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then
    "${PYTHON:-python3}" -m venv .venv
fi
if ! .venv/bin/python -c "import flask_tasks" 2>/dev/null; then
    .venv/bin/python -m pip install --quiet -e .
fi

# Job control puts the server and the worker in process groups of their own, so a
# Ctrl-C (or a SIGTERM) reaches this script only, and it stops them in order: the server,
# then the worker with one SIGTERM (a warm shutdown that finishes running tasks).
set -m
.venv/bin/flask --app example_app worker --pool threads --concurrency 4 &
worker=$!
.venv/bin/flask --app example_app run "$@" &
server=$!
stop() {
    trap - EXIT INT TERM HUP
    kill -INT "$server" 2>/dev/null || true
    kill -TERM "$worker" 2>/dev/null || true
    wait "$server" "$worker" 2>/dev/null || true
}
trap stop EXIT INT TERM HUP
wait "$server" || true
