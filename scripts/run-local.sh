#!/usr/bin/env bash
# `make run`: the whole platform as local processes (see Procfile.local and CONTRACT.md's table).
#
# Makes uv available, syncs the workspace venv, fetches the Kafka jars and installs redis-server
# (each only the first time), then hands over to scripts/supervise.py, which starts Kafka,
# Redis, the sandboxes, the four services and the travellers' website (http://127.0.0.1:8080,
# printed first) with one log per process in var/log/, waits until all answer
# (RUN_LOCAL_TIMEOUT, 180 s), restarts one that dies (with a back-off), and stops them all on
# Ctrl-C or SIGTERM.
# RUN_LOCAL_ONLY="kafka redis smtp payment-sandbox esim-sandbox sms-sandbox" starts just those (e.g. to run a
# service from an IDE against the rest).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

step() { printf '==> %s\n' "$*"; }

python=$(command -v python3 || true)
if [ -z "$python" ]; then
  echo "run-local: python3 is required" >&2
  exit 1
fi

# A local run: the services accept the local defaults below (loopback addresses, the sandboxes,
# demo secrets), which they refuse at start anywhere else (esim_core/production.py).
export ESIM_ENV=local
# Shared addresses, derived from the port variables unless given outright.
export KAFKA_PORT=${KAFKA_PORT:-9092}
export REDIS_PORT=${REDIS_PORT:-6379}
export KAFKA_BOOTSTRAP_SERVERS=${KAFKA_BOOTSTRAP_SERVERS:-127.0.0.1:$KAFKA_PORT}
# One broker holds one copy of each topic; a service grows a topic found with fewer partitions
# than declared (esim_core.messaging.topics), as production leaves to `esimctl topics apply`.
export KAFKA_TOPIC_REPLICATION=${KAFKA_TOPIC_REPLICATION:-1}
export KAFKA_TOPIC_GROW_PARTITIONS=${KAFKA_TOPIC_GROW_PARTITIONS:-true}
export REDIS_URL=${REDIS_URL:-redis://127.0.0.1:$REDIS_PORT/0}
export SMTP_SINK_DIR=${SMTP_SINK_DIR:-$root/var/mail}
export SMTP_SINK_PORT=${SMTP_SINK_PORT:-1025}
export PAYMENT_SANDBOX_PORT=${PAYMENT_SANDBOX_PORT:-8010}
export ESIM_SANDBOX_PORT=${ESIM_SANDBOX_PORT:-8011}
export SMS_SANDBOX_PORT=${SMS_SANDBOX_PORT:-8012}
export NOTIFIER_SMTP_HOST=${NOTIFIER_SMTP_HOST:-127.0.0.1}
export NOTIFIER_SMTP_PORT=${NOTIFIER_SMTP_PORT:-$SMTP_SINK_PORT}
# Billing pays at each provider's own API, served by the payment sandbox; the sandbox's
# providers call billing back on its webhooks (CONTRACT.md, "Payments, the way each provider
# takes them").
export BILLING_STRIPE_BASE_URL=${BILLING_STRIPE_BASE_URL:-http://127.0.0.1:$PAYMENT_SANDBOX_PORT/stripe}
export BILLING_PAYPAL_BASE_URL=${BILLING_PAYPAL_BASE_URL:-http://127.0.0.1:$PAYMENT_SANDBOX_PORT/paypal}
export BILLING_ALIPAY_GATEWAY_URL=${BILLING_ALIPAY_GATEWAY_URL:-http://127.0.0.1:$PAYMENT_SANDBOX_PORT/alipay/gateway.do}
export BILLING_PUBLIC_URL=${BILLING_PUBLIC_URL:-http://127.0.0.1:${BILLING_HTTP_PORT:-8001}}
export PAYMENT_SANDBOX_WEBHOOK_URL=${PAYMENT_SANDBOX_WEBHOOK_URL:-$BILLING_PUBLIC_URL}
export PROVISIONING_ESIM_PLATFORM_URL=${PROVISIONING_ESIM_PLATFORM_URL:-http://127.0.0.1:$ESIM_SANDBOX_PORT}
# The sandbox calls provisioning back, signed with the secret both sides share.
export ESIM_SANDBOX_CALLBACK_URL=${ESIM_SANDBOX_CALLBACK_URL:-http://127.0.0.1:${PROVISIONING_HTTP_PORT:-8002}/callbacks/esim}
export NOTIFIER_SMS_GATEWAY_URL=${NOTIFIER_SMS_GATEWAY_URL:-http://127.0.0.1:$SMS_SANDBOX_PORT}
# Work in progress on this one machine: past 400 sagas waiting on a payment or an activation
# (some ten seconds of its capacity), new requests wait in Kafka while the begun ones finish.
export ACCOUNTS_MAX_SAGAS_IN_FLIGHT=${ACCOUNTS_MAX_SAGAS_IN_FLIGHT:-400}
# The travellers' website: plain http on this machine, so its cookies cannot be Secure here; its
# secrets are random per run unless given (a restart signs everyone out, which is fine locally).
export WEB_HTTP_PORT=${WEB_HTTP_PORT:-8080}
export WEB_ACCOUNTS_URL=${WEB_ACCOUNTS_URL:-http://127.0.0.1:${ACCOUNTS_HTTP_PORT:-8000}}
export WEB_PUBLIC_URL=${WEB_PUBLIC_URL:-http://127.0.0.1:$WEB_HTTP_PORT}
export WEB_SECURE_COOKIES=${WEB_SECURE_COOKIES:-false}
# The proxies whose X-Forwarded-For uvicorn believes (every service; what counts for accounts'
# per-address rate limits): the travellers' website (127.0.0.1:8080) calls accounts from
# 127.0.0.1 and passes each traveller's address on, so limits count per traveller, not per site.
export FORWARDED_ALLOW_IPS=${FORWARDED_ALLOW_IPS:-127.0.0.1}
export PYTHONUNBUFFERED=1

# Fail fast, before any download, when something already holds one of the ports.
only=${RUN_LOCAL_ONLY:-}
"$python" scripts/supervise.py --procfile Procfile.local --only "$only" --check-ports

step "uv"
UV=$(scripts/ensure-uv.sh)
export UV
step "uv sync --frozen --compile-bytecode"
scripts/sync.sh
step "Alipay's key pairs (var/alipay)"
# The merchant app's pair and the sandbox's (Alipay's), made once; settings already given win.
eval "$("$UV" run --frozen python scripts/alipay_keys.py --env var/alipay)"
step "Kafka jars (deploy/kafka/lib)"
scripts/ensure-java-maven.sh
deploy/kafka/fetch.sh
step "redis-server"
deploy/redis/ensure.sh
mkdir -p var/log var/db var/mail var/redis var/kafka "$SMTP_SINK_DIR"

# The operator token of the services' operator endpoints (CONTRACT.md, "Operator endpoints"):
# OPERATOR_TOKEN when it is set, else a new random one each run, kept in var/operator.token
# (readable by this user only) for esimctl and curl, and given to the services.
if [ -z "${OPERATOR_TOKEN:-}" ]; then
  rm -f var/operator.token
  (umask 077 && "$python" -c 'import secrets; print(secrets.token_urlsafe(32))' >var/operator.token)
  OPERATOR_TOKEN=$(cat var/operator.token)
  export OPERATOR_TOKEN RUN_LOCAL_OPERATOR_TOKEN_FILE=var/operator.token
else
  rm -f var/operator.token
fi

step "starting the local stack (logs in var/log/)"
exec "$python" scripts/supervise.py --procfile Procfile.local --only "$only" --log-dir var/log \
  --timeout "${RUN_LOCAL_TIMEOUT:-180}"
