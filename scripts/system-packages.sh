#!/usr/bin/env bash
# Install the system packages the test suite drives (redis-server, chromium, chromium-driver,
# rabbitmq-server, postgresql) with apt-get when missing and we may (root or passwordless sudo); otherwise
# say what to install and fail. Used by scripts/test.sh and scripts/test-python.sh.
set -euo pipefail

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
# The amqp:// tests use the machine's RabbitMQ, or start a private one from this package.
command -v rabbitmq-server >/dev/null 2>&1 || need+=(rabbitmq-server)
# The postgresql:// tests use the machine's PostgreSQL, or start a private one (initdb).
compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" >/dev/null || need+=(postgresql)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
    echo "$0: please install: ${need[*]} (apt-get install ${need[*]})" >&2
    exit 1
  fi
  echo "Installing system packages: ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
