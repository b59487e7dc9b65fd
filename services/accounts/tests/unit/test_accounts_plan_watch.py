"""Reminders and auto-renewal, through the consumer and the due work as bootstrap wires them."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from accounts.lifecycle.planwatch import auto_renewal_id
from accounts.store import Card, PlanWatch, Renewal
from accounts_testkit import ICCID, Clock
from esim_core.clock import utcnow
from esim_core.duework.loop import work_due
from esim_schemas import (
    BundleCancelled,
    BundleEnded,
    BundleStarted,
    DataLow,
    EventData,
    PaymentFailed,
    RenewalRequested,
    UsageUpdated,
)
from lifecycle_testkit import (
    DAY,
    USER_ID,
    Service,
    activated,
    events,
    set_auto_renew,
    start_service,
)

EXPIRING = "esim.plan.expiring.v1"
REQUESTED = "esim.renewal.requested.v1"
DISABLED = "esim.card.auto-renew-disabled.v1"


@pytest.fixture
def clock() -> Clock:
    return Clock(utcnow())


@pytest.fixture
async def service(tmp_path: Path, clock: Clock) -> AsyncIterator[Service]:
    running = await start_service(tmp_path / "accounts.sqlite", clock)
    yield running
    await running.close()


async def card(service: Service) -> Card:
    async with service.database.session() as session:
        found = await session.get(Card, ICCID)
    assert found is not None
    return found


async def test_a_daily_plan_gets_one_reminder_for_the_shortest_lead(service: Service) -> None:
    plan = activated(service.clock(), 1, plan_code="JP-1D-1GB")
    await service.deliver(plan)
    await service.sweep()
    await service.sweep()
    [reminder] = await events(service, EXPIRING)
    assert reminder["subject"] == ICCID
    assert reminder["data"] | {"valid_until": None} == {
        "iccid": ICCID,
        "user_id": USER_ID,
        "plan_code": "JP-1D-1GB",
        "valid_until": None,
        "days_left": 1,
        "renewal_id": str(plan.renewal_id),
        "auto_renew": False,
    }


async def test_a_monthly_plan_is_reminded_three_days_and_one_day_before(service: Service) -> None:
    await service.deliver(activated(service.clock(), 30))
    await service.sweep()
    assert await events(service, EXPIRING) == []
    service.clock.advance((27 * DAY).total_seconds())
    await service.sweep()
    service.clock.advance(DAY.total_seconds())
    await service.sweep()  # two days left: nothing new
    service.clock.advance(DAY.total_seconds())
    await service.sweep()
    service.clock.advance(3600)
    await service.sweep()
    assert [e["data"]["days_left"] for e in await events(service, EXPIRING)] == [3, 1]


async def test_each_reminder_goes_once_across_a_restart(
    service: Service, tmp_path: Path, clock: Clock
) -> None:
    plan = activated(clock(), 1, plan_code="JP-1D-1GB")
    first_id = await service.deliver(plan)
    await service.sweep()
    await service.close()
    restarted = await start_service(tmp_path / "accounts.sqlite", clock, fresh=False)
    try:
        # Redelivered after the restart, and the platform's start of the same plan: the plan is
        # looked at again, and owes nothing more.
        await restarted.deliver(plan, event_id=first_id)
        started = BundleStarted(
            renewal_id=plan.renewal_id,
            iccid=ICCID,
            plan_code=plan.plan_code,
            data_mb=plan.data_mb,
            valid_from=plan.valid_from,
            valid_until=plan.valid_until,
            platform_reference="ord_1",
            started_at=plan.valid_from,
        )
        await restarted.deliver(started)
        assert await restarted.sweep() == 1
        assert len(await events(restarted, EXPIRING)) == 1
    finally:
        await restarted.close()


async def test_no_reminder_while_a_later_plan_is_queued(service: Service) -> None:
    now = service.clock()
    current = activated(now, 30)
    await service.deliver(current)
    await service.deliver(activated(now + 30 * DAY, 30, state="queued"))
    for _ in range(4):
        service.clock.advance((7 * DAY).total_seconds())  # to 28 days: past the current's leads
        await service.sweep()
    assert [e["data"]["renewal_id"] for e in await events(service, EXPIRING)] == []


async def test_a_newly_queued_plan_supersedes_the_reminders_left(service: Service) -> None:
    now = service.clock()
    current = activated(now, 30)
    await service.deliver(current)
    service.clock.advance((27 * DAY).total_seconds())
    await service.sweep()
    await service.deliver(activated(now + 30 * DAY, 30, state="queued"))
    service.clock.advance((2 * DAY).total_seconds())
    await service.sweep()
    reminded = [
        (e["data"]["renewal_id"], e["data"]["days_left"]) for e in await events(service, EXPIRING)
    ]
    assert reminded == [(str(current.renewal_id), 3)]


async def test_a_cancelled_later_plan_makes_the_plan_before_it_last_again(service: Service) -> None:
    now = service.clock()
    current = activated(now, 30)
    queued = activated(now + 30 * DAY, 30, state="queued")
    await service.deliver(current)
    await service.deliver(queued)
    service.clock.advance((29 * DAY).total_seconds() + 3600)
    await service.sweep()
    assert await events(service, EXPIRING) == []
    await service.deliver(
        BundleCancelled(
            renewal_id=queued.renewal_id,
            iccid=ICCID,
            plan_code=queued.plan_code,
            reason="cancelled_by_user",
            cancelled_at=service.clock(),
        )
    )
    await service.sweep()
    [reminder] = await events(service, EXPIRING)
    assert (reminder["data"]["renewal_id"], reminder["data"]["days_left"]) == (
        str(current.renewal_id),
        1,
    )


async def test_two_replicas_send_one_reminder_and_one_auto_renewal(tmp_path: Path) -> None:
    # The real due loop's claim runs by the wall clock: a daily plan is due as it starts.
    clock = Clock(utcnow())
    first = await start_service(tmp_path / "accounts.sqlite", clock)
    second = await start_service(tmp_path / "accounts.sqlite", clock, fresh=False)
    try:
        await set_auto_renew(first, plan_code="JP-1D-1GB")
        plan = activated(clock(), 1, plan_code="JP-1D-1GB")
        await first.deliver(plan)
        rounds = [
            work_due(s.database, PlanWatch, s.accounts.watcher.work, what="plan-watch")
            for s in (first, second, first, second)
        ]
        await asyncio.gather(*rounds)
        # Even two rounds on one row at once (a lease that ran out mid-round) do it once.
        await asyncio.gather(
            first.accounts.watcher.work(str(plan.renewal_id)),
            second.accounts.watcher.work(str(plan.renewal_id)),
        )
        assert len(await events(first, EXPIRING)) == 1
        [renewal] = await events(first, REQUESTED)
        assert renewal["data"]["renewal_id"] == str(auto_renewal_id(str(plan.renewal_id)))
    finally:
        await first.close()
        await second.close()


async def test_auto_renew_queues_the_saved_plan_at_its_lead(service: Service) -> None:
    await set_auto_renew(service, plan_code="JP-30D-10GB", token="tok_card_ok")
    plan = activated(service.clock(), 30)
    await service.deliver(plan)
    await service.sweep()
    assert await events(service, REQUESTED) == []
    service.clock.advance((29 * DAY).total_seconds())
    await service.sweep()
    await service.sweep()
    [request] = await events(service, REQUESTED)
    data = request["data"]
    assert (data["start"], data["channel"], data["plan_code"]) == (
        "after_current",
        "auto_renew",
        "JP-30D-10GB",
    )
    assert data["payment"] == {"method": "card", "token": "tok_card_ok"}
    assert data["renewal_id"] == str(auto_renewal_id(str(plan.renewal_id)))
    [reminder] = [e for e in await events(service, EXPIRING) if e["data"]["days_left"] == 1]
    assert reminder["data"]["auto_renew"] is True
    # The saga exists at once (the card's renewals show it) and takes the request as its own.
    async with service.database.session() as session:
        saga = await session.get(Renewal, data["renewal_id"])
    assert saga is not None and saga.status == "REQUESTED"
    await service.deliver(RenewalRequested.model_validate(data), event_id=request["id"])
    async with service.database.session() as session:
        saga = await session.get(Renewal, data["renewal_id"])
    assert saga is not None and saga.status == "PAYMENT_PENDING"


async def test_a_daily_plan_queues_the_next_day_as_it_starts(service: Service) -> None:
    await set_auto_renew(service, plan_code="JP-1D-1GB")
    await service.deliver(activated(service.clock(), 1, plan_code="JP-1D-1GB"))
    await service.sweep()
    assert len(await events(service, REQUESTED)) == 1


async def test_turning_auto_renew_on_late_renews_at_once(service: Service) -> None:
    await service.deliver(activated(service.clock(), 30))
    service.clock.advance((29 * DAY).total_seconds() + 600)
    await service.sweep()
    assert await events(service, REQUESTED) == []
    await set_auto_renew(service)
    await service.sweep()
    assert len(await events(service, REQUESTED)) == 1


async def test_over_the_monthly_cap_auto_renew_turns_itself_off(service: Service) -> None:
    # JP-1D-1GB is 15.00 CNY: a cap of 20.00 allows one auto-renewal this month, not two.
    await set_auto_renew(service, plan_code="JP-1D-1GB", cap=2000)
    now = service.clock()
    first = activated(now, 1, plan_code="JP-1D-1GB")
    await service.deliver(first)
    await service.sweep()
    [request] = await events(service, REQUESTED)
    renewal_id = uuid.UUID(request["data"]["renewal_id"])
    await service.deliver(RenewalRequested.model_validate(request["data"]), event_id=request["id"])
    await service.deliver(
        activated(now + DAY, 1, renewal_id=renewal_id, state="queued", plan_code="JP-1D-1GB")
    )
    service.clock.advance(DAY.total_seconds() + 60)
    await service.sweep()
    assert len(await events(service, REQUESTED)) == 1
    [disabled] = await events(service, DISABLED)
    assert (disabled["data"]["reason"], disabled["data"]["user_id"]) == ("monthly_cap", USER_ID)
    assert not (await card(service)).auto_renew


async def test_a_cap_below_one_plan_renews_nothing(service: Service) -> None:
    await set_auto_renew(service, plan_code="JP-1D-1GB", cap=1000)
    await service.deliver(activated(service.clock(), 1, plan_code="JP-1D-1GB"))
    await service.sweep()
    assert await events(service, REQUESTED) == []
    assert [e["data"]["reason"] for e in await events(service, DISABLED)] == ["monthly_cap"]


def used_up(kind: str, renewal_id: uuid.UUID, now: object) -> EventData:
    if kind == "usage":
        return UsageUpdated(
            iccid=ICCID,
            renewal_id=renewal_id,
            data_total_mb=10240,
            data_used_mb=10240,
            as_of=now,  # type: ignore[arg-type]
        )
    if kind == "data_low":
        return DataLow(
            iccid=ICCID,
            renewal_id=renewal_id,
            threshold=100,
            data_remaining_mb=0,
            as_of=now,  # type: ignore[arg-type]
        )
    return BundleEnded(
        renewal_id=renewal_id,
        iccid=ICCID,
        plan_code="JP-30D-10GB",
        reason="depleted",
        valid_from=now,  # type: ignore[arg-type]
        valid_until=now + 30 * DAY,  # type: ignore[operator]
        platform_reference="ord_1",
        ended_at=now,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("kind", ["usage", "data_low", "bundle_ended"])
async def test_a_used_up_plan_renews_at_once_and_once(service: Service, kind: str) -> None:
    await set_auto_renew(service)
    plan = activated(service.clock(), 30)
    await service.deliver(plan)
    service.clock.advance(3 * DAY.total_seconds())
    await service.sweep()
    assert await events(service, REQUESTED) == []
    await service.deliver(used_up(kind, plan.renewal_id, service.clock()))
    await service.deliver(used_up(kind, plan.renewal_id, service.clock()))
    await service.sweep()
    service.clock.advance(26 * DAY.total_seconds() + 600)
    await service.sweep()
    [request] = await events(service, REQUESTED)
    assert request["data"]["renewal_id"] == str(auto_renewal_id(str(plan.renewal_id)))


async def test_a_used_up_plan_without_auto_renew_renews_nothing(service: Service) -> None:
    plan = activated(service.clock(), 30)
    await service.deliver(plan)
    await service.deliver(used_up("data_low", plan.renewal_id, service.clock()))
    await service.sweep()
    assert await events(service, REQUESTED) == []


async def failed_auto_renewal(
    service: Service, reason: str, *, change_payment: bool = False
) -> None:
    await set_auto_renew(service, plan_code="JP-1D-1GB", token="card_declined")
    await service.deliver(activated(service.clock(), 1, plan_code="JP-1D-1GB"))
    await service.sweep()
    [request] = await events(service, REQUESTED)
    await service.deliver(RenewalRequested.model_validate(request["data"]), event_id=request["id"])
    if change_payment:
        await set_auto_renew(service, plan_code="JP-1D-1GB", token="card_new_ok")
    failure = PaymentFailed(
        renewal_id=uuid.UUID(request["data"]["renewal_id"]),
        payment_id="pay_1",
        iccid=ICCID,
        reason=reason,  # type: ignore[arg-type]
        attempts=1,
        failed_at=service.clock(),
    )
    await service.deliver(failure)
    await service.deliver(failure)  # a redelivery under a new id changes nothing more


@pytest.mark.parametrize("reason", ["declined", "expired_method", "invalid_token"])
async def test_a_hard_decline_turns_auto_renew_off(service: Service, reason: str) -> None:
    await failed_auto_renewal(service, reason)
    assert not (await card(service)).auto_renew
    [disabled] = await events(service, DISABLED)
    assert disabled["data"]["reason"] == reason
    assert disabled["data"]["plan_code"] == "JP-1D-1GB"


async def test_a_soft_decline_leaves_auto_renew_on(service: Service) -> None:
    await failed_auto_renewal(service, "insufficient_funds")
    assert (await card(service)).auto_renew
    assert await events(service, DISABLED) == []


async def test_a_decline_of_a_payment_since_replaced_leaves_auto_renew_on(service: Service) -> None:
    await failed_auto_renewal(service, "declined", change_payment=True)
    assert (await card(service)).auto_renew
    assert await events(service, DISABLED) == []


async def test_ending_plans_are_not_reminded(service: Service) -> None:
    plan = activated(service.clock() - 29 * DAY, 30)
    await service.deliver(
        BundleEnded(
            renewal_id=plan.renewal_id,
            iccid=ICCID,
            plan_code=plan.plan_code,
            reason="expired",
            valid_from=plan.valid_from,
            valid_until=plan.valid_until,
            platform_reference="ord_1",
            ended_at=service.clock(),
        )
    )
    await service.deliver(plan)
    await service.sweep()
    assert await events(service, EXPIRING) == []


async def test_a_used_up_plan_is_worked_right_after_its_commit_not_at_the_next_look(
    tmp_path: Path, clock: Clock
) -> None:
    """The plan-watch loop, running, looks again only a minute later: the commit wakes it."""
    service = await start_service(
        tmp_path / "accounts.sqlite", clock, worker_interval_s=60, worker_idle_max_s=60
    )
    [loop] = [due for due in service.accounts.runtime.due_loops if due.what == "plan-watch"]
    task = asyncio.create_task(loop.run())
    try:
        await set_auto_renew(service)
        plan = activated(service.clock(), 30)
        await service.deliver(plan)
        await asyncio.sleep(0.2)  # its looks so far found nothing due: the next is a minute away
        assert await events(service, REQUESTED) == []

        await service.deliver(used_up("data_low", plan.renewal_id, service.clock()))

        for _ in range(50):
            if await events(service, REQUESTED):
                break
            await asyncio.sleep(0.1)
        [request] = await events(service, REQUESTED)
        assert request["data"]["renewal_id"] == str(auto_renewal_id(str(plan.renewal_id)))
    finally:
        await loop.stop(1.0)
        await task
        await service.close()
