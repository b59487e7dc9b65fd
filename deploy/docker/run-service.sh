#!/bin/sh
# Entry point of a service image: run $SERVICE with its <SERVICE>_HTTP_HOST and _HTTP_PORT
# defaulting to all interfaces and the image's HTTP_PORT (the settings' defaults are loopback).
set -eu
prefix=$(printf '%s' "$SERVICE" | tr 'a-z' 'A-Z')
eval "host=\${${prefix}_HTTP_HOST:-0.0.0.0} port=\${${prefix}_HTTP_PORT:-$HTTP_PORT}"
export "${prefix}_HTTP_HOST=$host" "${prefix}_HTTP_PORT=$port"
exec python -m "$SERVICE" "$@"
