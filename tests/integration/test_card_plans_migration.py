"""Accounts' revision 0005 keeps every card reading the same once its plans live only in rows.

On a database made by the old revisions, some cards read from their own columns (no plan row
counted) and some from their plan rows. After the upgrade every card must read, through the one
reader left, what the old reader showed, at once and as its plans run out, on SQLite and on
PostgreSQL. The old reader is written out here as it was, so this test does not depend on it.
"""

import asyncio
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from accounts.bootstrap import MIGRATIONS
from accounts.cards.plans import card_status, plans_of
from accounts.store import CardPlan
from alembic import command
from esim_core.clock import as_utc
from esim_core.persistence.db import Database
from esim_core.persistence.migrations import alembic_config, upgrade_to_head

from tests.support.infra import DATABASE_MODES, postgres

pytestmark = pytest.mark.integration

T0 = datetime(2026, 12, 10, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
MOMENTS = [T0 + days * DAY for days in (0, 10, 25, 26, 40, 60, 75, 150)]
"""When each card is read: now, and as its live and queued plans start and end."""


Plan = tuple[int, datetime, int]
"""A plan on a card's columns: its renewal's number, its start, and how many days it runs."""


@dataclass
class OldCard:
    """A card as revision 0004 kept it: its columns, and its plan rows."""

    iccid: str
    state: str = "inactive"
    plan_code: str | None = None
    data_total_mb: int = 0
    data_remaining_mb: int = 0
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    last_renewal_id: str | None = None
    queued: list[dict[str, Any]] = field(default_factory=list)
    rows: list[CardPlan] = field(default_factory=list)


def renewal(number: int) -> str:
    return f"00000000-0000-0000-0000-{number:012d}"


def old_card(
    number: int,
    current: Plan | None = None,
    *queued: Plan,
    used_mb: int = 0,
    rows: Sequence[dict[str, Any]] = (),
) -> OldCard:
    """A card whose columns the old `apply_bundle` set: a live plan (ProfileActivated active)
    and queued ones (ProfileActivated queued); with plan rows of these renewal numbers."""
    card = OldCard(f"894400000000000000{number:02d}")
    if current is not None:
        plan, starts, days = current
        card.state, card.plan_code, card.last_renewal_id = "active", f"PLAN-{plan}", renewal(plan)
        card.data_total_mb, card.data_remaining_mb = 10240, 10240 - used_mb
        card.valid_from, card.valid_until = starts, starts + days * DAY
    for plan, starts, days in queued:
        card.queued.append(
            {
                "renewal_id": renewal(plan),
                "plan_code": f"PLAN-{plan}",
                "data_mb": 5120,
                "valid_from": starts.isoformat(),
                "valid_until": (starts + days * DAY).isoformat(),
            }
        )
    card.rows = [
        CardPlan(**{**fields, "renewal_id": renewal(fields["renewal_id"]), "iccid": card.iccid})
        for fields in rows
    ]
    return card


def old_cards() -> list[OldCard]:
    """Cards with live, queued, ended and all-cancelled plans, with rows and without."""
    live = (T0 - 5 * DAY, 30)
    return [
        old_card(1),
        old_card(2, (1, *live), used_mb=6240),
        old_card(3, (2, *live), (3, T0 + 25 * DAY, 30), (4, T0 + 55 * DAY, 7)),
        old_card(4, (5, T0 - 40 * DAY, 30)),
        old_card(5, (6, T0 - 70 * DAY, 30), (7, T0 - 40 * DAY, 30)),
        old_card(6, None, (8, T0 + 3 * DAY, 30)),
        # Its one row was queued, then cancelled: the columns showed the live plan.
        old_card(
            7,
            (9, *live),
            rows=[
                {
                    "renewal_id": 10,
                    "plan_code": "PLAN-10",
                    "data_mb": 5120,
                    "state": "cancelled",
                    "valid_from": T0 + 25 * DAY,
                    "valid_until": T0 + 55 * DAY,
                }
            ],
        ),
        # Usage of the live plan came before any of its dates: the row did not count.
        old_card(
            8,
            (11, *live),
            rows=[
                {"renewal_id": 11, "state": "active", "data_used_mb": 100, "usage_as_of": T0 - DAY}
            ],
        ),
        # A row counted: the old reader showed the rows alone, whatever the columns said.
        old_card(
            9,
            (12, *live),
            (13, T0 + 25 * DAY, 30),
            rows=[
                {
                    "renewal_id": 14,
                    "plan_code": "PLAN-14",
                    "data_mb": 2048,
                    "state": "expired",
                    "valid_from": T0 - 40 * DAY,
                    "valid_until": T0 - 10 * DAY,
                }
            ],
        ),
        old_card(
            10,
            (15, *live),
            rows=[
                {
                    "renewal_id": 15,
                    "plan_code": "PLAN-15",
                    "data_mb": 10240,
                    "state": "active",
                    "valid_from": T0 - 5 * DAY,
                    "valid_until": T0 + 25 * DAY,
                    "data_used_mb": 1000,
                    "usage_as_of": T0 - DAY,
                }
            ],
        ),
    ]


def old_reader(plans: list[CardPlan], card: sa.Row[Any], now: datetime) -> dict[str, Any]:
    """The old `card_status(plans) or effective_status(card)`: a card read from its rows as soon
    as one of them counted (its start and plan known, and not cancelled), else its columns."""
    if any(p.valid_from is not None and p.plan_code and p.state != "cancelled" for p in plans):
        return card_status(plans, now)
    return old_columns_status(card, now)


def old_columns_status(card: sa.Row[Any], now: datetime) -> dict[str, Any]:
    """The old `effective_status`: the columns, with queued plans whose start came moved up."""
    status: dict[str, Any] = {
        "plan_code": card.plan_code,
        "state": card.state,
        "data_total_mb": card.data_total_mb,
        "data_remaining_mb": card.data_remaining_mb,
        "valid_from": as_utc(card.valid_from) if card.valid_from is not None else None,
        "valid_until": as_utc(card.valid_until) if card.valid_until is not None else None,
        "queued": list(card.queued or []),
    }
    while status["queued"]:
        head = status["queued"][0]
        starts = datetime.fromisoformat(head["valid_from"])
        current_end = status["valid_until"]
        if starts > now or (current_end is not None and current_end > now):
            break
        status.update(
            plan_code=head["plan_code"],
            state="active",
            data_total_mb=int(head["data_mb"]),
            data_remaining_mb=int(head["data_mb"]),
            valid_from=starts,
            valid_until=datetime.fromisoformat(head["valid_until"]),
            queued=status["queued"][1:],
        )
    if status["state"] == "active" and status["valid_until"] and status["valid_until"] <= now:
        status["state"] = "expired"
    return status


def _moment(value: datetime | str) -> datetime:
    return as_utc(datetime.fromisoformat(value) if isinstance(value, str) else value)


def shown(status: dict[str, Any]) -> dict[str, Any]:
    """A status as the API shows it: times as instants, a missing measurement time as none."""
    queued = [
        {
            **item,
            "valid_from": _moment(item["valid_from"]),
            "valid_until": _moment(item["valid_until"]),
        }
        for item in status["queued"]
    ]
    return {"usage_as_of": None, **status, "queued": queued}


@pytest.fixture(params=DATABASE_MODES)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty accounts database on SQLite, or on a PostgreSQL server of the test's own."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path}/accounts.sqlite"
        return
    with postgres(tmp_path) as urls:
        yield urls["accounts"]


async def readings(database: Database, iccids: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Each card's status at each of MOMENTS, through today's reader."""
    async with database.session() as session:
        plans = await plans_of(session, iccids)
    return {
        iccid: [shown(card_status(plans.get(iccid, []), now)) for now in MOMENTS]
        for iccid in iccids
    }


async def test_every_card_reads_the_same_after_its_columns_go(database_url: str) -> None:
    await asyncio.to_thread(command.upgrade, alembic_config(database_url, MIGRATIONS), "0004")
    cards = old_cards()
    iccids = [card.iccid for card in cards]
    database = Database(database_url)
    try:
        async with database.engine.begin() as connection:
            table = await connection.run_sync(
                lambda sync: sa.Table("accounts_card", sa.MetaData(), autoload_with=sync)
            )
            for card in cards:
                await connection.execute(
                    table.insert().values(
                        iccid=card.iccid,
                        activation_code="LPA:1$x$y",
                        auto_renew=False,
                        state=card.state,
                        plan_code=card.plan_code,
                        data_total_mb=card.data_total_mb,
                        data_remaining_mb=card.data_remaining_mb,
                        valid_from=card.valid_from,
                        valid_until=card.valid_until,
                        last_renewal_id=card.last_renewal_id,
                        queued=card.queued,
                    )
                )
        async with database.session() as session:
            session.add_all(plan for card in cards for plan in card.rows)
        async with database.engine.connect() as connection:
            columns = {card.iccid: card for card in await connection.execute(sa.select(table))}
        async with database.session() as session:
            rows = await plans_of(session, iccids)
        before = {
            iccid: [shown(old_reader(rows.get(iccid, []), columns[iccid], now)) for now in MOMENTS]
            for iccid in iccids
        }

        await upgrade_to_head(database_url, MIGRATIONS)

        assert await readings(database, iccids) == before
        async with database.engine.connect() as connection:
            left = await connection.run_sync(
                lambda sync: {
                    column["name"] for column in sa.inspect(sync).get_columns("accounts_card")
                }
            )
    finally:
        await database.close()
    assert not left & {"state", "plan_code", "data_remaining_mb", "valid_until", "queued"}
    shown_states = {status["state"] for statuses in before.values() for status in statuses}
    assert shown_states == {"inactive", "active", "expired"}
    assert any(status["queued"] for statuses in before.values() for status in statuses)
