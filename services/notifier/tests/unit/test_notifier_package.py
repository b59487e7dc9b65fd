"""The notifier's wheel (what the image installs) carries its templates and migrations."""

import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest
from notifier.domain import NotificationKind
from notifier.messages import LOCALES, PARTS

ROOT = Path(__file__).resolve().parents[4]


def uv() -> str:
    """`uv run` names itself in UV; a bare pytest finds the one `make` installed in .tools/."""
    installed = sorted(ROOT.glob(".tools/uv-*/bin/uv"))
    found = (
        os.environ.get("UV") or shutil.which("uv") or (str(installed[-1]) if installed else None)
    )
    if found is None:
        pytest.skip("uv is not installed (scripts/ensure-uv.sh installs it; `make test` does)")
    return found


def test_the_wheel_carries_every_template_and_migration(tmp_path: Path) -> None:
    built = subprocess.run(
        [uv(), "build", "--package", "esim-notifier", "--wheel", "--out-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    [wheel] = tmp_path.glob("esim_notifier-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())

    for locale in LOCALES:
        for kind in NotificationKind:
            for part in PARTS:
                assert f"notifier/templates/{locale}/{kind}.{part}" in names
        for shared in ("_layout.txt", "_layout.html", "_words.j2"):
            assert f"notifier/templates/{locale}/{shared}" in names
    assert {
        "notifier/templates/common/_mail.html",
        "notifier/templates/common/_macros.html",
    } <= names
    assert any(name.startswith("notifier/migrations/versions/0003") for name in names)
