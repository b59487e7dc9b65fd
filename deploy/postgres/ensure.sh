#!/usr/bin/env bash
# Installs PostgreSQL (Debian package `postgresql`) if its server binaries are not there yet; does
# nothing otherwise. Runs apt-get non-interactively, through sudo only when not root.
# It only installs: it starts no cluster. The integration tests (ESIM_TEST_DATABASE=postgres) run
# their own throwaway server from these binaries (tests/support/infra.py), and a policy-rc.d that
# forbids service starts keeps the package from starting Debian's default cluster while it installs.
set -euo pipefail

say() { printf 'postgres/ensure: %s\n' "$*" >&2; }
# shellcheck source=../../scripts/lib/apt.sh
. "$(dirname "$0")/../../scripts/lib/apt.sh"

have_server() {
  compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null \
    && compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null
}

if have_server; then
  exit 0
fi

apt_can_install "PostgreSQL is missing" "PostgreSQL 14+"

# invoke-rc.d asks /usr/sbin/policy-rc.d whether a package may start its service; exit 101 means
# "no". Put one in place for the install unless the machine already has its own policy.
policy=/usr/sbin/policy-rc.d
own_policy=false
if [ ! -e "$policy" ]; then
  "${as_root[@]}" sh -c "printf '#!/bin/sh\nexit 101\n' > $policy && chmod 755 $policy"
  own_policy=true
fi
cleanup() {
  if [ "$own_policy" = true ]; then
    "${as_root[@]}" rm -f "$policy" || true
  fi
}
trap cleanup EXIT

say "PostgreSQL is missing; installing the Debian package"
apt_install -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold postgresql
# A policy of the machine's own may still have let the cluster start.
stop_service postgresql.service

if ! have_server; then
  say "apt-get finished but /usr/lib/postgresql/*/bin/{initdb,postgres} are still missing"
  exit 1
fi
say "installed $(ls -d /usr/lib/postgresql/*/bin/postgres | sort -V | tail -n 1)"
