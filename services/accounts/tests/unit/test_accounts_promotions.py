"""Promotions: limits per user and in all, the window, concurrent redemptions, release, the saga."""

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from accounts.catalogue.promotions import PromotionError, preview, redeem
from accounts.store import Promotion, PromotionUse, Redemption
from accounts_testkit import ICCID, Clock
from esim_core.clock import utcnow
from esim_core.persistence.db import Database
from esim_schemas import (
    ActivationFailed,
    PaymentFailed,
    PaymentRefunded,
    PaymentSettled,
    RenewalRequested,
)
from lifecycle_testkit import USER_ID, Service, events, start_service

NOW = utcnow()


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[Service]:
    running = await start_service(tmp_path / "accounts.sqlite", Clock(NOW))
    yield running
    await running.close()


async def add_promotion(database: Database, **fields: object) -> None:
    async with database.session() as session:
        session.add(Promotion(**fields))  # type: ignore[arg-type]


async def try_redeem(
    database: Database, code: str, user_id: str = USER_ID, renewal_id: str | None = None
) -> int | str:
    """The discount a redemption gets, or the kind of problem it meets."""
    try:
        async with database.session() as session:
            priced = await redeem(
                session,
                code,
                renewal_id=renewal_id or str(uuid.uuid4()),
                user_id=user_id,
                iccid=ICCID,
                price=9900,
                currency="CNY",
                now=NOW,
            )
    except PromotionError as error:
        return error.kind
    return priced.discount


async def counters(database: Database, code: str) -> tuple[int, dict[str, int]]:
    async with database.session() as session:
        promotion = await session.get(Promotion, code)
        assert promotion is not None
        uses = (await session.exec(PromotionUse.__table__.select())).all()  # type: ignore[attr-defined]
    return promotion.redeemed, {row.user_id: row.used for row in uses if row.code == code}


async def test_welcome10_is_ten_percent_once_per_user(service: Service) -> None:
    db = service.database
    assert await try_redeem(db, "welcome10 ") == 990
    assert await try_redeem(db, "WELCOME10") == "promo-used"
    assert await try_redeem(db, "WELCOME10", user_id="u-2") == 990
    assert await counters(db, "WELCOME10") == (2, {USER_ID: 1, "u-2": 1})


async def test_the_same_renewal_redeems_once(service: Service) -> None:
    renewal_id = str(uuid.uuid4())
    assert await try_redeem(service.database, "WELCOME10", renewal_id=renewal_id) == 990
    assert await try_redeem(service.database, "WELCOME10", renewal_id=renewal_id) == 990
    assert await counters(service.database, "WELCOME10") == (1, {USER_ID: 1})


async def test_a_total_limit_holds(service: Service) -> None:
    await add_promotion(
        service.database, code="LAUNCH", amount_off=500, currency="CNY", total_limit=2
    )
    results = [await try_redeem(service.database, "LAUNCH", user_id=f"u-{n}") for n in range(3)]
    assert results == [500, 500, "promo-exhausted"]


async def test_concurrent_redemptions_never_pass_the_limits(service: Service) -> None:
    await add_promotion(service.database, code="LAST", percent_off=50, total_limit=3)
    results = await asyncio.gather(
        *(try_redeem(service.database, "LAST", user_id=f"u-{n}") for n in range(10))
    )
    assert sorted(map(str, results)) == ["4950"] * 3 + ["promo-exhausted"] * 7
    assert (await counters(service.database, "LAST"))[0] == 3
    # One user racing themselves for a once-per-user code gets it once, and the total counts one.
    results = await asyncio.gather(*(try_redeem(service.database, "WELCOME10") for _ in range(6)))
    assert sorted(map(str, results)) == ["990"] + ["promo-used"] * 5
    assert await counters(service.database, "WELCOME10") == (1, {USER_ID: 1})


@pytest.mark.parametrize(
    ("window", "kind"),
    [
        ({"valid_from": NOW + timedelta(days=1)}, "promo-not-started"),
        ({"valid_until": NOW - timedelta(seconds=1)}, "promo-expired"),
    ],
)
async def test_outside_its_window_a_code_is_refused(
    service: Service, window: dict[str, object], kind: str
) -> None:
    await add_promotion(service.database, code="WINDOW", percent_off=20, **window)
    assert await try_redeem(service.database, "WINDOW") == kind
    assert await counters(service.database, "WINDOW") == (0, {})


async def test_unknown_and_foreign_currency_codes_are_refused(service: Service) -> None:
    await add_promotion(service.database, code="FIVE-USD", amount_off=500, currency="USD")
    assert await try_redeem(service.database, "NOPE") == "promo-unknown"
    assert await try_redeem(service.database, "FIVE-USD") == "promo-not-applicable"


async def test_a_discount_never_takes_the_total_to_zero(service: Service) -> None:
    await add_promotion(service.database, code="BIG", amount_off=50000, currency="CNY")
    assert await try_redeem(service.database, "BIG") == 9899


async def test_preview_redeems_nothing(service: Service) -> None:
    async with service.database.session() as session:
        priced = await preview(
            session, "WELCOME10", user_id=USER_ID, price=1500, currency="CNY", now=NOW
        )
    assert (priced.discount, priced.total) == (150, 1350)
    assert await counters(service.database, "WELCOME10") == (0, {})


def request(promo_code: str | None = "WELCOME10", **changes: object) -> RenewalRequested:
    fields: dict[str, object] = {
        "renewal_id": uuid.uuid4(),
        "user_id": USER_ID,
        "iccid": ICCID,
        "plan_code": "JP-30D-10GB",
        "payment": {"method": "alipay", "token": "alipay_ok"},
        "start": "after_current",
        "requested_at": NOW,
        "promo_code": promo_code,
    }
    return RenewalRequested.model_validate(fields | changes)


async def test_the_saga_charges_the_discounted_price(service: Service) -> None:
    data = request()
    await service.deliver(data)
    [payment] = await events(service, "esim.payment.requested.v1")
    assert payment["data"]["price"] == {"amount": 8910, "currency": "CNY"}
    assert payment["data"]["discount"] == {"amount": 990, "currency": "CNY"}
    assert payment["data"]["promo_code"] == "WELCOME10"


async def test_a_request_with_a_code_is_handled_once_in_a_session_and_logged_once(
    service: Service, caplog: pytest.LogCaptureFixture
) -> None:
    """Its redemption needs the ORM: the consumer's driver transaction hands it to a session
    before doing anything, so the timeline's log line is not written for a try rolled back."""
    data = request()
    with caplog.at_level(logging.INFO, logger="accounts.renewals.saga"):
        await service.deliver(data)
    steps = [r.getMessage() for r in caplog.records if str(data.renewal_id) in r.getMessage()]
    assert len([step for step in steps if ": requested, " in step]) == 1, steps
    assert len(await events(service, "esim.payment.requested.v1")) == 1


async def test_a_request_without_a_code_keeps_its_old_fingerprint_and_price(
    service: Service,
) -> None:
    await service.deliver(request(None))
    [payment] = await events(service, "esim.payment.requested.v1")
    assert payment["data"]["price"]["amount"] == 9900
    assert "discount" not in payment["data"] or payment["data"]["discount"] is None


@pytest.mark.parametrize(
    ("code", "detail"),
    [("NOPE", "no promotion NOPE exists"), ("WELCOME10", "already used promotion WELCOME10")],
)
async def test_a_kafka_request_with_a_bad_code_is_rejected_not_charged_in_full(
    service: Service, code: str, detail: str
) -> None:
    await service.deliver(request())  # WELCOME10 used once
    await service.deliver(request(code))
    [rejected] = await events(service, "esim.renewal.rejected.v1")
    assert rejected["data"]["reason"] == "invalid_request"
    assert detail in rejected["data"]["detail"]
    assert len(await events(service, "esim.payment.requested.v1")) == 1


async def redemption(service: Service, renewal_id: uuid.UUID) -> Redemption:
    async with service.database.session() as session:
        found = await session.get(Redemption, str(renewal_id))
    assert found is not None
    return found


async def test_a_failed_payment_gives_the_code_back(service: Service) -> None:
    data = request()
    await service.deliver(data)
    await service.deliver(
        PaymentFailed(
            renewal_id=data.renewal_id,
            payment_id="pay_1",
            iccid=ICCID,
            reason="declined",
            attempts=1,
            failed_at=NOW,
        )
    )
    assert (await redemption(service, data.renewal_id)).released_at is not None
    assert await counters(service.database, "WELCOME10") == (0, {USER_ID: 0})
    again = request()
    await service.deliver(again)
    assert (await redemption(service, again.renewal_id)).released_at is None


async def test_a_refund_gives_the_code_back_and_a_capture_keeps_it(service: Service) -> None:
    data = request()
    await service.deliver(data)
    settled = PaymentSettled(
        renewal_id=data.renewal_id,
        payment_id="pay_1",
        iccid=ICCID,
        plan={"code": "JP-30D-10GB", "data_mb": 10240, "validity_days": 30},  # type: ignore[arg-type]
        price={"amount": 8910, "currency": "CNY"},  # type: ignore[arg-type]
        method="alipay",
        provider_reference="ch_1",
        attempts=1,
        settled_at=NOW,
        start="after_current",
    )
    await service.deliver(settled)
    assert (await redemption(service, data.renewal_id)).released_at is None
    # The refund answers the one the saga asks for when the activation fails.
    await service.deliver(
        ActivationFailed(
            renewal_id=data.renewal_id,
            iccid=ICCID,
            reason="bundle_rejected",
            attempts=3,
            failed_at=NOW,
        )
    )
    await service.deliver(
        PaymentRefunded(
            renewal_id=data.renewal_id,
            payment_id="pay_1",
            refund_id="re_1",
            iccid=ICCID,
            price={"amount": 8910, "currency": "CNY"},  # type: ignore[arg-type]
            refunded_at=NOW,
        )
    )
    assert (await redemption(service, data.renewal_id)).released_at is not None
    assert (await counters(service.database, "WELCOME10"))[0] == 0


async def test_a_timed_out_unpaid_saga_gives_the_code_back(service: Service) -> None:
    from accounts.renewals.deadlines import sweep_deadlines

    data = request()
    await service.deliver(data)
    service.clock.advance(49 * 3600)
    assert await sweep_deadlines(service.database, service.accounts.saga) == 1
    assert (await redemption(service, data.renewal_id)).released_at is not None


async def test_a_request_taken_with_a_code_then_rejected_gives_the_code_back(
    service: Service,
) -> None:
    from accounts.renewals.saga import record_step, saga_from_request
    from accounts.store import Plan

    data = request()
    # As the API takes it: the code redeemed and the saga stored, in one transaction ...
    assert await try_redeem(service.database, "WELCOME10", renewal_id=str(data.renewal_id)) == 990
    async with service.database.session() as session:
        record_step(session, saga_from_request(data), "requested")
    # ... then the plan is withdrawn before the saga prices the request.
    async with service.database.session() as session:
        plan = await session.get(Plan, data.plan_code)
        assert plan is not None
        plan.available = False
        session.add(plan)
    await service.deliver(data)
    [rejected] = await events(service, "esim.renewal.rejected.v1")
    assert rejected["data"]["reason"] == "plan_not_available"
    assert (await redemption(service, data.renewal_id)).released_at is not None
    assert await counters(service.database, "WELCOME10") == (0, {USER_ID: 0})
