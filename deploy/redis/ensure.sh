#!/usr/bin/env bash
# Installs redis-server (Debian package `redis-server`) if it is not there yet; does nothing otherwise.
# Runs apt-get non-interactively, through sudo only when not root. The package's own system
# service is stopped and disabled again right after installing it: the project runs its own
# redis-server in the foreground (deploy/redis/run.sh), which needs the port.
set -euo pipefail

if command -v redis-server >/dev/null 2>&1 || [ -x /usr/bin/redis-server ]; then
  exit 0
fi

say() { printf 'redis/ensure: %s\n' "$*" >&2; }
# shellcheck source=../../scripts/lib/apt.sh
. "$(dirname "$0")/../../scripts/lib/apt.sh"

apt_can_install "redis-server is missing" "Redis 7"
say "redis-server is missing; installing the Debian package"
apt_install -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold redis-server
# The package starts redis on 6379 at once; give the port back.
stop_service redis-server.service

if ! command -v redis-server >/dev/null 2>&1 && [ ! -x /usr/bin/redis-server ]; then
  say "apt-get finished but redis-server is still not on PATH"
  exit 1
fi
say "installed $(redis-server --version | awk '{print $3}')"
