"""Data migrations: 0002 gives plans activated before it their rows, 0004 watches known plans."""

from pathlib import Path

import sqlalchemy as sa
from accounts.bootstrap import MIGRATIONS
from alembic import command
from esim_core.persistence.migrations import alembic_config, upgrade_to_head_sync


def test_plans_activated_before_the_upgrade_get_their_rows(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/accounts.sqlite"
    command.upgrade(alembic_config(url, MIGRATIONS), "0001")
    engine = sa.create_engine(f"sqlite:///{tmp_path}/accounts.sqlite")
    try:
        with engine.begin() as connection:
            for number, status in enumerate(("ACTIVATED", "PAYMENT_FAILED")):
                connection.execute(
                    sa.text(
                        "INSERT INTO accounts_renewal (renewal_id, fingerprint, user_id, iccid, "
                        "plan_code, payment_method, start, status, data_mb, validity_days, "
                        "refund_requested, valid_from, valid_until, bundle_state, created_at, "
                        "updated_at) VALUES (:renewal, 'f', 'u', '8944500102198304826', "
                        "'JP-30D-10GB', 'card', 'now', :status, 10240, 30, 0, "
                        "'2026-12-01 10:00:00.000000', '2026-12-31 10:00:00.000000', 'queued', "
                        "'2026-12-01 10:00:00', '2026-12-01 10:00:00')"
                    ),
                    {"renewal": f"00000000-0000-0000-0000-00000000000{number}", "status": status},
                )
        upgrade_to_head_sync(url, MIGRATIONS)
        with engine.connect() as connection:
            plans = connection.execute(
                sa.text("SELECT renewal_id, plan_code, data_mb, state FROM accounts_card_plan")
            ).all()
    finally:
        engine.dispose()
    assert plans == [("00000000-0000-0000-0000-000000000000", "JP-30D-10GB", 10240, "queued")]


def test_plans_known_before_0004_are_watched_from_the_upgrade_on(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/accounts.sqlite"
    command.upgrade(alembic_config(url, MIGRATIONS), "0003")
    engine = sa.create_engine(f"sqlite:///{tmp_path}/accounts.sqlite")
    try:
        with engine.begin() as connection:
            for number, state in enumerate(("active", "queued", "expired")):
                connection.execute(
                    sa.text(
                        "INSERT INTO accounts_card_plan (renewal_id, iccid, plan_code, data_mb, "
                        "state, valid_from, valid_until, updated_at) VALUES (:renewal, "
                        "'8944500102198304826', 'JP-30D-10GB', 10240, :state, "
                        "'2026-12-01 10:00:00.000000', '2026-12-31 10:00:00.000000', "
                        "'2026-12-01 10:00:00')"
                    ),
                    {"renewal": f"00000000-0000-0000-0000-00000000000{number}", "state": state},
                )
        upgrade_to_head_sync(url, MIGRATIONS)
        with engine.connect() as connection:
            watched = connection.execute(
                sa.text("SELECT id, due_at IS NOT NULL, ended FROM accounts_plan_watch ORDER BY id")
            ).all()
    finally:
        engine.dispose()
    assert watched == [
        ("00000000-0000-0000-0000-000000000000", 1, 0),
        ("00000000-0000-0000-0000-000000000001", 1, 0),
    ]
