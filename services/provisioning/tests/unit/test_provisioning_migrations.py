"""Revision 0002 follows the bundles that went live before it, so they get alerts too."""

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from esim_core.persistence.migrations import alembic_config, upgrade_to_head_sync
from provisioning.bootstrap import MIGRATIONS


def test_bundles_activated_before_the_upgrade_are_followed(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/provisioning.sqlite"
    command.upgrade(alembic_config(url, MIGRATIONS), "0001")
    engine = sa.create_engine(f"sqlite:///{tmp_path}/provisioning.sqlite")
    try:
        with engine.begin() as connection:
            for number, state in enumerate(("activated", "activated", "failed", "following")):
                connection.execute(
                    sa.text(
                        "INSERT INTO provisioning_activation (id, renewal_id, payment_id, iccid, "
                        "plan_code, data_mb, validity_days, start, state, order_id, bundle_state,"
                        " valid_from, valid_until, attempts, polls, unavailable_rounds, "
                        "created_at, updated_at, deadline_at) VALUES (:id, :renewal, 'pay', "
                        ":iccid, 'JP-30D-10GB', 10240, 30, 'now', :state, :order, :bundle, "
                        "'2026-12-01 10:00:00.000000', '2026-12-31 10:00:00.000000', 1, 0, 0, "
                        "'2026-12-01 10:00:00', '2026-12-01 10:00:00', '2026-12-02 10:00:00')"
                    ),
                    {
                        "id": f"act_{number}",
                        "renewal": f"00000000-0000-0000-0000-00000000000{number}",
                        "iccid": "8944500102198304826",
                        "state": state,
                        "order": f"ord_{number}" if state != "failed" else None,
                        "bundle": "queued" if number == 1 else "active",
                    },
                )
        upgrade_to_head_sync(url, MIGRATIONS)
        with engine.connect() as connection:
            bundles = connection.execute(
                sa.text(
                    "SELECT order_id, first_state, status, alerted_pct FROM provisioning_bundle"
                )
            ).all()
            watches = connection.execute(
                sa.text("SELECT id, due_at FROM provisioning_usage_watch")
            ).all()
    finally:
        engine.dispose()
    assert sorted(bundles) == [("ord_0", "active", "active", 0), ("ord_1", "queued", "queued", 0)]
    [(iccid, due_at)] = watches
    assert iccid == "8944500102198304826" and due_at is not None
