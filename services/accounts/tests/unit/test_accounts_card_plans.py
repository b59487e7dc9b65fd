"""The card's status from what the platform measured: usage, plan switches, ends, history."""

import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from itertools import permutations
from typing import Any

import pytest
from accounts.cards import plans as cardplans
from accounts.store import Card, CardPlan
from accounts_testkit import ICCID
from esim_core.clock import utcnow
from esim_core.persistence.db import Database
from esim_schemas import (
    BundleEnded,
    BundleStarted,
    CloudEvent,
    EventData,
    ProfileActivated,
    UsageUpdated,
    new_event,
)
from sqlmodel.ext.asyncio.session import AsyncSession

NOW = utcnow()
DAY = timedelta(days=1)


def activated(renewal_id: uuid.UUID, start: datetime, state: str = "active") -> ProfileActivated:
    return ProfileActivated(
        renewal_id=renewal_id,
        iccid=ICCID,
        plan_code=f"PLAN-{str(renewal_id)[:4]}",
        data_mb=1000,
        valid_from=start,
        valid_until=start + 7 * DAY,
        bundle_state=state,  # type: ignore[arg-type]
        platform_reference="ord_1",
        activated_at=NOW,
    )


def usage(renewal_id: uuid.UUID, used: int, as_of: datetime) -> UsageUpdated:
    return UsageUpdated(
        iccid=ICCID, renewal_id=renewal_id, data_total_mb=1000, data_used_mb=used, as_of=as_of
    )


def ended(renewal_id: uuid.UUID, start: datetime, reason: str) -> BundleEnded:
    return BundleEnded(
        renewal_id=renewal_id,
        iccid=ICCID,
        plan_code=f"PLAN-{str(renewal_id)[:4]}",
        reason=reason,  # type: ignore[arg-type]
        valid_from=start,
        valid_until=start + 7 * DAY,
        platform_reference="ord_1",
        ended_at=NOW,
    )


def started(renewal_id: uuid.UUID, start: datetime) -> BundleStarted:
    return BundleStarted(
        renewal_id=renewal_id,
        iccid=ICCID,
        plan_code=f"PLAN-{str(renewal_id)[:4]}",
        data_mb=1000,
        valid_from=start,
        valid_until=start + 7 * DAY,
        platform_reference="ord_2",
        started_at=start,
    )


Handler = Callable[[AsyncSession, CloudEvent[Any]], Awaitable[None]]


async def deliver(database: Database, data: EventData) -> None:
    handlers: dict[type[EventData], Handler] = {
        UsageUpdated: cardplans.on_usage_updated,
        BundleStarted: cardplans.on_bundle_started,
        BundleEnded: cardplans.on_bundle_ended,
    }
    async with database.session() as session:
        if isinstance(data, ProfileActivated):
            await cardplans.record_activation(session, data)
        else:
            await handlers[type(data)](session, new_event(data, source="/services/test"))


async def status(database: Database, now: datetime = NOW) -> dict[str, Any]:
    async with database.session() as session:
        plans = (await cardplans.plans_of(session, [ICCID]))[ICCID]
    return cardplans.card_status(plans, now)


async def test_usage_shows_as_data_remaining_with_when_it_was_measured(
    database: Database,
) -> None:
    renewal = uuid.uuid4()
    await deliver(database, activated(renewal, NOW - DAY))
    await deliver(database, usage(renewal, 300, NOW - timedelta(minutes=1)))
    shown = await status(database)
    assert (shown["state"], shown["data_total_mb"], shown["data_remaining_mb"]) == (
        "active",
        1000,
        700,
    )
    assert shown["usage_as_of"] == NOW - timedelta(minutes=1)
    # An older measurement delivered late does not move the card back.
    await deliver(database, usage(renewal, 100, NOW - timedelta(minutes=5)))
    assert (await status(database))["data_remaining_mb"] == 700


async def test_a_used_up_plan_with_nothing_behind_is_depleted(database: Database) -> None:
    renewal = uuid.uuid4()
    await deliver(database, activated(renewal, NOW - DAY))
    await deliver(database, ended(renewal, NOW - DAY, "depleted"))
    shown = await status(database)
    assert (shown["state"], shown["data_remaining_mb"]) == ("depleted", 0)


def test_a_card_with_no_plan_that_ran_or_waits_reads_inactive() -> None:
    cancelled = CardPlan(
        renewal_id=str(uuid.uuid4()),
        iccid=ICCID,
        plan_code="JP-30D-10GB",
        data_mb=10240,
        state="cancelled",
        valid_from=NOW + DAY,
        valid_until=NOW + 31 * DAY,
    )
    measured_before_its_activation = CardPlan(
        renewal_id=str(uuid.uuid4()), iccid=ICCID, data_used_mb=10
    )
    for plans in ([], [cancelled, measured_before_its_activation]):
        assert cardplans.card_status(plans, NOW) == {
            "plan_code": None,
            "state": "inactive",
            "data_total_mb": 0,
            "data_remaining_mb": 0,
            "usage_as_of": None,
            "valid_from": None,
            "valid_until": None,
            "queued": [],
        }


async def test_an_expired_plan_with_nothing_behind_reads_expired(database: Database) -> None:
    renewal = uuid.uuid4()
    await deliver(database, activated(renewal, NOW - DAY))
    assert (await status(database, NOW + 7 * DAY))["state"] == "expired"


@pytest.mark.parametrize("order", list(permutations(range(4))))
async def test_the_queued_plan_becomes_current_in_any_delivery_order(
    database: Database, order: tuple[int, ...]
) -> None:
    first, second = uuid.uuid4(), uuid.uuid4()
    events: list[EventData] = [
        activated(first, NOW - DAY),
        activated(second, NOW + 6 * DAY, state="queued"),
        ended(first, NOW - DAY, "depleted"),
        started(second, NOW - timedelta(hours=1)),
    ]
    for index in order:
        await deliver(database, events[index])
    shown = await status(database)
    assert shown["plan_code"] == f"PLAN-{str(second)[:4]}"
    assert shown["state"] == "active" and shown["queued"] == []
    async with database.session() as session:
        plans = (await cardplans.plans_of(session, [ICCID]))[ICCID]
    states = {plan.renewal_id: cardplans.state_at(plan, NOW) for plan in plans}
    assert states == {str(first): "depleted", str(second): "active"}


async def test_the_api_shows_usage_and_the_history(database: Database, client: Any) -> None:
    from accounts_testkit import CODE

    created = await client.post(
        "/v1/users", json={"email": "plans@example.com", "password": "a long password"}
    )
    assert created.status_code == 201
    token = (
        await client.post(
            "/v1/auth/token", data={"username": "plans@example.com", "password": "a long password"}
        )
    ).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    bound = await client.post(
        "/v1/cards", json={"iccid": ICCID, "activation_code": CODE}, headers=headers
    )
    assert bound.status_code == 201
    first, second = uuid.uuid4(), uuid.uuid4()
    await deliver(database, activated(first, NOW - 8 * DAY))
    await deliver(database, activated(second, NOW - DAY))
    await deliver(database, ended(first, NOW - 8 * DAY, "expired"))
    await deliver(database, usage(second, 250, NOW))
    card = (await client.get(f"/v1/cards/{ICCID}", headers=headers)).json()
    assert card["data_remaining_mb"] == 750 and card["usage_as_of"] is not None
    assert card["plan_code"] == f"PLAN-{str(second)[:4]}"
    history = (await client.get(f"/v1/cards/{ICCID}/plans", headers=headers)).json()
    assert [(h["renewal_id"], h["state"]) for h in history] == [
        (str(second), "active"),
        (str(first), "expired"),
    ]
    async with database.session() as session:
        assert await session.get(Card, ICCID) is not None


async def test_two_events_of_one_bundle_in_one_batch_make_one_row(database: Database) -> None:
    renewal = uuid.uuid4()
    # As the consumer handles a batch: one transaction, no autoflush between handlers.
    async with database.session() as session:
        with session.no_autoflush:
            await cardplans.on_usage_updated(
                session, new_event(usage(renewal, 100, NOW), source="/services/test")
            )
            await cardplans.record_activation(session, activated(renewal, NOW - DAY))
            await cardplans.on_usage_updated(
                session, new_event(usage(renewal, 200, NOW), source="/services/test")
            )
    shown = await status(database)
    assert (shown["data_remaining_mb"], shown["state"]) == (800, "active")
