#!/usr/bin/env bash
# Installs the workspace into .venv exactly as uv.lock says, its bytecode compiled: `make sync`
# and `make run` (scripts/run-local.sh) both come here.
#
# Bytecode is compiled once here, not by each process: where PYTHONDONTWRITEBYTECODE is set (as
# on CI machines) Python never caches it, and every service, sandbox and tool process compiled
# some 400 modules from source as it started (0.7 s of its 2.4 s start). uv compiles the
# installed packages; compileall the project's own sources, which the venv links to (only the
# files changed since their last compile). Usage: UV=/path/to/uv scripts/sync.sh
set -euo pipefail
cd "$(dirname "$0")/.."
UV=${UV:-$(scripts/ensure-uv.sh)}
"$UV" sync --frozen --compile-bytecode
.venv/bin/python -m compileall -q -j0 shared services sandboxes tools frontends tests scripts >/dev/null
