#!/usr/bin/env bash
# Makes `uv` available and prints its absolute path on stdout (messages go to stderr).
#
#   1. $UV, if it names an executable uv;
#   2. `uv` on PATH;
#   3. the project-local copy in .tools/uv-<version>/ (installed by an earlier run);
#   4. otherwise installs the pinned uv wheel from PyPI into .tools/uv-<version>/ with
#      `python3 -m pip install --target` (no root, no venv module, works on
#      Debian's externally-managed Python) and prints that.
#
# Usage: UV="$(scripts/ensure-uv.sh)" && "$UV" sync --frozen
# UV_VERSION overrides the pinned version; ENSURE_UV_LOCAL=1 skips PATH and uses .tools/.
set -euo pipefail

uv_version=${UV_VERSION:-0.13.9}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tools="$root/.tools"
local_dir="$tools/uv-$uv_version"
local_uv="$local_dir/bin/uv"

say() { printf 'ensure-uv: %s\n' "$*" >&2; }

works() { [ -n "$1" ] && [ -x "$1" ] && "$1" --version >/dev/null 2>&1; }

if [ "${ENSURE_UV_LOCAL:-0}" != 1 ]; then
  if [ -n "${UV:-}" ] && works "${UV}"; then
    printf '%s\n' "$UV"
    exit 0
  fi
  if found=$(command -v uv 2>/dev/null) && works "$found"; then
    printf '%s\n' "$found"
    exit 0
  fi
fi

if works "$local_uv"; then
  printf '%s\n' "$local_uv"
  exit 0
fi

python=$(command -v python3 || true)
if [ -z "$python" ]; then
  say "uv is not on PATH and python3 is missing; install python3 and python3-pip (apt-get install python3-pip)"
  exit 1
fi
if ! "$python" -m pip --version >/dev/null 2>&1; then
  say "uv is not on PATH and '$python -m pip' is unavailable; install python3-pip (apt-get install python3-pip)"
  exit 1
fi

mkdir -p "$tools"
# Nothing in .tools/ belongs in git (nor in ruff's view of the tree).
[ -f "$tools/.gitignore" ] || printf '*\n' >"$tools/.gitignore"
# Several callers (make, the supervisor) may race here: one installs, the others wait.
exec 9>"$tools/.uv.lock"
if command -v flock >/dev/null 2>&1; then
  flock 9
fi
if works "$local_uv"; then
  printf '%s\n' "$local_uv"
  exit 0
fi

say "uv is not on PATH; installing uv==$uv_version from PyPI into $local_dir"
staging=$(mktemp -d "$tools/uv.staging.XXXXXX")
trap 'rm -rf "$staging"' EXIT
if ! PIP_ROOT_USER_ACTION=ignore "$python" -m pip install --quiet --disable-pip-version-check --no-input --no-deps \
  --no-warn-script-location --target "$staging" "uv==$uv_version" >&2; then
  say "pip could not install uv==$uv_version"
  exit 1
fi
if ! works "$staging/bin/uv"; then
  say "the uv wheel did not provide a working bin/uv under $staging"
  exit 1
fi
# Keep only the binaries: no Python package lying around in the tree for linters to find.
rm -rf "$local_dir"
mkdir -p "$local_dir"
mv "$staging/bin" "$local_dir/bin"
say "uv $("$local_uv" --version | awk '{print $2}') installed"
printf '%s\n' "$local_uv"
