#!/usr/bin/env bash
# Runs redis-server in the foreground for the local run: 127.0.0.1 only, no persistence.
#   REDIS_PORT (6379) and REDIS_DIR (var/redis) may be set. Installs the Debian package first
#   if redis-server is missing (deploy/redis/ensure.sh).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
port=${REDIS_PORT:-6379}
dir=${REDIS_DIR:-$root/var/redis}

"$here/ensure.sh"
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
server=$(command -v redis-server || echo /usr/bin/redis-server)

exec "$server" \
  --port "$port" \
  --bind 127.0.0.1 \
  --protected-mode yes \
  --daemonize no \
  --supervised no \
  --save '' \
  --appendonly no \
  --dir "$dir" \
  --logfile '' \
  --loglevel notice
