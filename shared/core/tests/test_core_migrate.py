"""`python -m esim_core.persistence.migrate`: the migrations Job's command."""

import sqlite3
from pathlib import Path

import pytest
from esim_core.persistence import migrate


def test_the_job_brings_a_new_database_to_the_newest_revision(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = tmp_path / "notifier.sqlite"
    monkeypatch.setenv("NOTIFIER_DATABASE_URL", f"sqlite+aiosqlite:///{database}")
    assert migrate.main(["notifier"]) == 0
    with sqlite3.connect(database) as connection:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
        [(version,)] = connection.execute("SELECT version_num FROM alembic_version").fetchall()
    assert {"alembic_version", "outbox", "inbox"} <= tables
    assert version
    # Run again (a Job retried, a release without new revisions): nothing to do, no error.
    assert migrate.main(["notifier"]) == 0


def test_a_wrong_call_names_what_is_missing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert migrate.main(["payments"]) == 2
    assert "usage: python -m esim_core.persistence.migrate {accounts|billing|" in (
        capsys.readouterr().err
    )
    monkeypatch.delenv("BILLING_DATABASE_URL", raising=False)
    assert migrate.main(["billing"]) == 2
    assert "BILLING_DATABASE_URL is not set" in capsys.readouterr().err
