#!/usr/bin/env bash
# The website's message catalogues (frontends/web): extract every message of the templates and the
# Python code into messages.pot, then merge it into each locale's messages.po. Translate the new
# entries (msgstr "") by hand; frontends/web/tests/test_web_messages.py fails while one is missing.
# The .po files are compiled in memory when the site starts (web/i18n.py): no .mo is committed.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root/frontends/web"
pybabel="$root/.venv/bin/pybabel"
"$pybabel" extract -F babel.cfg -k _ -k gettext_ --no-location --sort-output --omit-header \
  --project esim-web --version 0.1.0 -o src/web/locales/messages.pot .
"$pybabel" update -i src/web/locales/messages.pot -d src/web/locales -D messages -l zh_CN \
  --no-fuzzy-matching --ignore-obsolete --width 100
