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

if ! command -v apt-get >/dev/null 2>&1; then
  say "redis-server is missing and apt-get is not available; install Redis 7 yourself"
  exit 1
fi

as_root=()
if [ "$(id -u)" -ne 0 ]; then
  if ! command -v sudo >/dev/null 2>&1; then
    say "redis-server is missing; installing it needs root, and sudo is not available"
    exit 1
  fi
  # -n: never prompt (CI runs without stdin); fail clearly instead.
  as_root=(sudo -n)
fi

say "redis-server is missing; installing the Debian package"
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
  -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold redis-server >&2

# On a machine with systemd the package starts redis on 6379 at once; give the port back.
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
  "${as_root[@]}" systemctl disable --now redis-server.service >/dev/null 2>&1 || true
fi

if ! command -v redis-server >/dev/null 2>&1 && [ ! -x /usr/bin/redis-server ]; then
  say "apt-get finished but redis-server is still not on PATH"
  exit 1
fi
say "installed $(redis-server --version | awk '{print $3}')"
