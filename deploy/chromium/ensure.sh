#!/usr/bin/env bash
# Installs headless Chromium and its WebDriver (Debian packages `chromium` and `chromium-driver`)
# if either is missing; does nothing otherwise. The browser tests (tests/browser) drive them
# through Selenium. Runs apt-get non-interactively, through sudo only when not root.
# Prints nothing on stdout; the paths are where tests/browser/conftest.py looks for them.
set -euo pipefail

say() { printf 'chromium/ensure: %s\n' "$*" >&2; }

have() { [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; }

if have; then
  exit 0
fi

# shellcheck source=../../scripts/lib/apt.sh
. "$(dirname "$0")/../../scripts/lib/apt.sh"

apt_can_install "chromium or chromium-driver is missing" "Chromium and its chromedriver"
say "chromium or chromium-driver is missing; installing the Debian packages"
# Fonts with CJK glyphs: the website's Chinese pages must render as text in the screenshots.
apt_install chromium chromium-driver fonts-noto-cjk

if ! have; then
  say "apt-get finished but /usr/bin/chromium or /usr/bin/chromedriver is still missing"
  exit 1
fi
say "installed $(/usr/bin/chromium --version 2>/dev/null || echo chromium)"
