"""What a renewal costs accounts in database statements: a budget that fails when one is added.

A renewal as the bench makes it (`start=now`, a card payment, a live plan replaced) is handled
event by event through the service's consumer, and the statements each event runs are counted
(the transaction's BEGIN apart). Over HTTP the token check and the request are counted too.
When a change needs another statement, raise the figure here and say why in the commit.
"""

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from accounts.api import http_app
from accounts.bootstrap import build
from accounts.catalogue.plans import seed_catalogue
from accounts.settings import AccountsSettings
from accounts.store import Card, PlanWatch, User
from accounts_testkit import ICCID, Clock, Wired, wired_accounts
from conftest import OPERATOR_TOKEN, TEST_SETTINGS
from esim_core.duework.loop import work_due
from esim_core.messaging.consumer import MessageInfo
from esim_core.persistence.db import Database
from esim_core.web.operator import OperatorAuth
from esim_schemas import (
    BundleCancelled,
    EventData,
    PaymentSettled,
    ProfileActivated,
    RenewalRequested,
    new_event,
)
from fakeredis import FakeAsyncRedis
from sqlalchemy import event

NOW = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
PLAN = "JP-30D-10GB"


class Statements:
    """The statements a database runs from now on, BEGIN apart."""

    def __init__(self, database: Database) -> None:
        self.seen: list[str] = []
        event.listen(database.engine.sync_engine, "before_cursor_execute", self._count)

    def _count(self, _connection: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if not statement.startswith("BEGIN"):
            self.seen.append(statement)

    def take(self) -> list[str]:
        """The statements since the last take."""
        taken, self.seen = self.seen, []
        return taken


@pytest.fixture
async def wired() -> AsyncIterator[Wired]:
    async with wired_accounts(
        Clock(NOW), payment_deadline_s=3600, activation_deadline_s=3600
    ) as wired:
        database = wired.accounts.runtime.database
        await seed_catalogue(database)
        async with database.session() as session:
            session.add(User(id="u-1", email="u-1@example.com", password_hash="x"))
            session.add(Card(iccid=ICCID, activation_code="LPA:1$x$y", user_id="u-1"))
        yield wired


def renewal(renewal_id: uuid.UUID, replaced: uuid.UUID | None) -> list[EventData]:
    """What accounts consumes for one renewal: request, capture, activation, the old plan's end."""
    events: list[EventData] = [
        RenewalRequested(
            renewal_id=renewal_id,
            user_id="u-1",
            iccid=ICCID,
            plan_code=PLAN,
            payment={"method": "card", "token": "pm_card_visa"},
            start="now",
            requested_at=NOW,
        ),
        PaymentSettled(
            renewal_id=renewal_id,
            payment_id=f"pay_{renewal_id}",
            iccid=ICCID,
            plan={"code": PLAN, "data_mb": 10240, "validity_days": 30},
            price={"amount": 1900, "currency": "USD"},
            method="card",
            provider_reference="ch_1",
            attempts=1,
            settled_at=NOW,
            start="now",
        ),
        ProfileActivated(
            renewal_id=renewal_id,
            iccid=ICCID,
            plan_code=PLAN,
            data_mb=10240,
            valid_from=NOW,
            valid_until=NOW + timedelta(days=30),
            bundle_state="active",
            platform_reference="ord_1",
            activated_at=NOW,
        ),
    ]
    if replaced is not None:
        events.append(
            BundleCancelled(
                renewal_id=replaced,
                iccid=ICCID,
                plan_code=PLAN,
                reason="replaced",
                cancelled_at=NOW,
            )
        )
    return events


async def test_a_renewal_replacing_a_live_plan_stays_within_its_statement_budget(
    wired: Wired,
) -> None:
    database = wired.accounts.runtime.database
    offset = 0

    async def consume(data: EventData) -> None:
        nonlocal offset
        offset += 1
        topic = wired.accounts.runtime.topics.for_event(type(data))
        info = MessageInfo(topic=topic, partition=0, offset=offset, key=ICCID.encode())
        await wired.consumer.handle(new_event(data, source="/tests").to_json(), info)

    first = uuid.uuid4()
    for data in renewal(first, None):
        await consume(data)
    counted = Statements(database)
    spent: dict[str, int] = {}
    for data in renewal(uuid.uuid4(), first):
        await consume(data)
        spent[type(data).__name__] = len(counted.take())
    # Nothing is owed yet for a 30-day plan: the due work finds no row to work on.
    worked = await work_due(database, PlanWatch, wired.accounts.watcher.work, what="plan-watch")

    assert not wired.dead_letters.sent
    assert worked == 0
    assert spent == {
        # inbox, saga read, card+plan+owner read, saga insert, step, outbox
        "RenewalRequested": 6,
        # inbox, saga read, saga update, step
        "PaymentSettled": 4,
        # inbox, saga read, card plan read, saga update, watch read, step, plan and watch inserts
        "ProfileActivated": 8,
        # inbox, card plan read, saga read, saga update, watch read, rearm of the plans before,
        # step, plan and watch updates
        "BundleCancelled": 9,
    }


async def test_a_renewal_requested_over_http_takes_four_statements_after_the_token_check(
    tmp_path: Path,
) -> None:
    settings = AccountsSettings(
        **(TEST_SETTINGS | {"database_url": f"sqlite+aiosqlite:///{tmp_path}/accounts.sqlite"})
    )
    built = build(settings, redis=FakeAsyncRedis())
    database = built.runtime.database
    await database.create_tables(built.runtime.tables)
    await seed_catalogue(database)
    async with database.session() as session:
        session.add(Card(iccid=ICCID, activation_code="LPA:1$x$y"))
    app = http_app(built, OperatorAuth(OPERATOR_TOKEN))
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://accounts"
        ) as client:
            account = {"email": "a@example.com", "password": "long enough"}
            await client.post("/v1/users", json=account)
            login = {"username": account["email"], "password": account["password"]}
            token = (await client.post("/v1/auth/token", data=login)).json()["access_token"]
            headers = {"Authorization": f"Bearer {token}"}
            bound = await client.post(
                "/v1/cards", json={"iccid": ICCID, "activation_code": "LPA:1$x$y"}, headers=headers
            )
            assert bound.status_code < 300, bound.text
            counted = Statements(database)
            body = {"plan_code": PLAN, "payment": {"method": "card", "token": "pm_card_visa"}}
            answer = await client.post(f"/v1/cards/{ICCID}/renewals", json=body, headers=headers)
            statements = counted.take()
    finally:
        await database.close()
        await built.runtime.redis.aclose()

    assert answer.status_code == 202, answer.text
    # The token check (session and user), then card+renewal+plan read, saga, step, outbox.
    assert len(statements) == 5, statements
