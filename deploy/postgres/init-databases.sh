#!/usr/bin/env bash
# PostgreSQL init script (/docker-entrypoint-initdb.d/, run once on an empty data directory):
# one database per service, each owned by a login role of the same name, so no service can
# read another's tables.
#   ESIM_DATABASES            comma-separated names (default accounts,billing,provisioning,notifier)
#   <NAME>_DB_PASSWORD        that role's password (default: the name; set real ones outside demos)
# Safe to run again: existing roles and databases are left alone.
set -euo pipefail

IFS=',' read -r -a databases <<<"${ESIM_DATABASES:-accounts,billing,provisioning,notifier}"
for raw in "${databases[@]}"; do
  name=$(printf '%s' "$raw" | tr -d '[:space:]')
  [ -n "$name" ] || continue
  if ! [[ "$name" =~ ^[a-z_][a-z0-9_]*$ ]]; then
    echo "init-databases: '$name' is not a plain lower-case identifier" >&2
    exit 1
  fi
  password_var="$(printf '%s' "$name" | tr '[:lower:]' '[:upper:]')_DB_PASSWORD"
  password="${!password_var:-$name}"
  echo "init-databases: role and database '$name'"
  psql -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" --dbname "${POSTGRES_DB:-postgres}" \
    --set=name="$name" --set=password="$password" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', :'name', :'password')
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'name') \gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'name', :'name')
WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'name') \gexec
SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC', :'name') \gexec
SQL
done
