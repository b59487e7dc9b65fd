"""The lifecycle over HTTP: promotion codes on renewals, quotes, a card's renewal history,
auto-renew with a monthly cap, and the queue in the card's status."""

import json
import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest
from accounts.catalogue.problems import document_promotion_problems
from accounts.catalogue.promotions import seed_promotions
from accounts.store import CardPlan, PlanWatch, Promotion, Renewal
from accounts_testkit import CODE, ICCID, OTHER_ICCID, published
from esim_core.clock import as_utc, utcnow
from esim_core.persistence.db import Database
from test_accounts_api import is_problem, login

PAY = {"method": "card", "token": "card_ok"}


@pytest.fixture
async def traveller(client: httpx.AsyncClient, database: Database) -> dict[str, str]:
    await seed_promotions(database)
    headers = await login(client)
    bound = await client.post(
        "/v1/cards", json={"iccid": ICCID, "activation_code": CODE}, headers=headers
    )
    assert bound.status_code == 201
    return headers


async def renew(client: httpx.AsyncClient, headers: dict[str, str], **body: Any) -> httpx.Response:
    return await client.post(
        f"/v1/cards/{ICCID}/renewals",
        json={"plan_code": "JP-30D-10GB", "payment": PAY} | body,
        headers=headers | {"Idempotency-Key": str(uuid.uuid4())},
    )


async def test_a_renewal_with_welcome10_shows_its_discount(
    client: httpx.AsyncClient, database: Database, traveller: dict[str, str]
) -> None:
    accepted = await renew(client, traveller, promo_code="welcome10")
    assert accepted.status_code == 202, accepted.text
    renewal_id = accepted.json()["renewal_id"]
    [requested] = await published(database, "esim.renewal.requested.v1")
    assert json.loads(requested.value)["data"]["promo_code"] == "welcome10"
    again = await renew(client, traveller, promo_code="WELCOME10")
    assert is_problem(again, 409)["type"] == "https://esim.example/problems/promo-used"
    # The saga prices it (its handler finds the redemption the API made) and shows it.
    async with database.session() as session:
        saga = await session.get(Renewal, renewal_id)
        assert saga is not None
        saga.price_amount, saga.currency, saga.discount_amount = 1260, "USD", 140
        saga.promo_code = "WELCOME10"
        session.add(saga)
    shown = (await client.get(f"/v1/renewals/{renewal_id}", headers=traveller)).json()
    assert shown["price"] == {"amount": 1260, "currency": "USD"}
    assert shown["discount"] == {"amount": 140, "currency": "USD"}
    assert shown["promo_code"] == "WELCOME10"


@pytest.mark.parametrize(
    ("promotion", "status", "kind"),
    [
        (None, 422, "promo-unknown"),
        ({"valid_until": utcnow() - timedelta(days=1)}, 422, "promo-expired"),
        ({"valid_from": utcnow() + timedelta(days=1)}, 422, "promo-not-started"),
        ({"total_limit": 0}, 409, "promo-exhausted"),
        ({"amount_off": 100, "currency": "CNY", "percent_off": None}, 422, "promo-not-applicable"),
    ],
)
async def test_a_code_that_cannot_be_had_is_a_problem_not_a_full_price(
    client: httpx.AsyncClient,
    database: Database,
    traveller: dict[str, str],
    promotion: dict[str, Any] | None,
    status: int,
    kind: str,
) -> None:
    if promotion is not None:
        async with database.session() as session:
            session.add(Promotion(**({"code": "SPRING", "percent_off": 5} | promotion)))
    for path, body in (
        ("renewals", {"payment": PAY}),
        ("quote", {}),
    ):
        answer = await client.post(
            f"/v1/cards/{ICCID}/{path}",
            json={"plan_code": "JP-30D-10GB", "promo_code": "SPRING"} | body,
            headers=traveller,
        )
        assert is_problem(answer, status)["type"] == f"https://esim.example/problems/{kind}"
    assert await published(database, "esim.renewal.requested.v1") == []


async def test_openapi_names_the_promotion_problems(client: httpx.AsyncClient) -> None:
    app = client._transport.app  # type: ignore[attr-defined]
    document_promotion_problems(app)
    document = app.openapi()
    answers = document["paths"]["/v1/cards/{iccid}/renewals"]["post"]["responses"]
    examples = answers["409"]["content"]["application/problem+json"]["examples"]
    assert {"promo-used", "promo-exhausted"} <= set(examples)
    quote = document["paths"]["/v1/cards/{iccid}/quote"]["post"]["responses"]
    assert "promo-unknown" in quote["422"]["content"]["application/problem+json"]["examples"]


async def add_plan(
    database: Database, *, state: str, starts_in: timedelta, days: float, used_mb: int = 0
) -> None:
    """A plan of the card as the platform measured it (a minute ago)."""
    now = utcnow()
    async with database.session() as session:
        session.add(
            CardPlan(
                renewal_id=str(uuid.uuid4()),
                iccid=ICCID,
                plan_code="JP-30D-10GB",
                data_mb=10240,
                state=state,
                valid_from=now + starts_in,
                valid_until=now + starts_in + timedelta(days=days),
                data_used_mb=used_mb,
                usage_as_of=now - timedelta(minutes=1),
            )
        )


async def live_plan(database: Database, *, days_left: float, used_mb: int) -> None:
    await add_plan(
        database,
        state="active",
        starts_in=timedelta(days=days_left - 30),
        days=30,
        used_mb=used_mb,
    )


async def test_a_quote_says_what_start_now_forfeits(
    client: httpx.AsyncClient, database: Database, traveller: dict[str, str]
) -> None:
    await live_plan(database, days_left=12.5, used_mb=4000)
    now_quote = await client.post(
        f"/v1/cards/{ICCID}/quote",
        json={"plan_code": "JP-1D-1GB", "start": "now", "promo_code": "WELCOME10"},
        headers=traveller,
    )
    assert now_quote.status_code == 200, now_quote.text
    quoted = now_quote.json()
    assert quoted["forfeits"] == {"data_mb": 6240, "days": 12}
    assert (quoted["price"], quoted["discount"], quoted["total"]) == (
        {"amount": 250, "currency": "USD"},
        {"amount": 25, "currency": "USD"},
        {"amount": 225, "currency": "USD"},
    )
    starts = as_utc(_parse(quoted["valid_from"]))
    assert abs((starts - utcnow()).total_seconds()) < 60
    assert _parse(quoted["valid_until"]) - _parse(quoted["valid_from"]) == timedelta(days=1)
    later = (
        await client.post(
            f"/v1/cards/{ICCID}/quote", json={"plan_code": "JP-1D-1GB"}, headers=traveller
        )
    ).json()
    assert later["forfeits"] == {"data_mb": 0, "days": 0}
    assert later["discount"] == {"amount": 0, "currency": "USD"}
    assert abs((_parse(later["valid_from"]) - utcnow()).total_seconds() - 12.5 * 86400) < 60
    # Nothing was charged or redeemed: the code still works for a renewal.
    assert (await renew(client, traveller, promo_code="WELCOME10")).status_code == 202


async def test_a_quote_after_current_starts_after_the_last_queued_plan(
    client: httpx.AsyncClient, database: Database, traveller: dict[str, str]
) -> None:
    await live_plan(database, days_left=2, used_mb=0)
    now = utcnow()
    await add_plan(database, state="queued", starts_in=timedelta(days=2), days=30)
    quoted = (
        await client.post(
            f"/v1/cards/{ICCID}/quote", json={"plan_code": "JP-30D-10GB"}, headers=traveller
        )
    ).json()
    assert abs((_parse(quoted["valid_from"]) - (now + timedelta(days=32))).total_seconds()) < 1
    assert _parse(quoted["valid_until"]) - _parse(quoted["valid_from"]) == timedelta(days=30)
    status = (await client.get(f"/v1/cards/{ICCID}", headers=traveller)).json()
    [queued] = status["queued"]
    assert set(queued) == {"renewal_id", "plan_code", "data_mb", "valid_from", "valid_until"}
    assert "usage_as_of" in status


async def test_a_quote_for_no_live_plan_starts_now_and_forfeits_nothing(
    client: httpx.AsyncClient, traveller: dict[str, str]
) -> None:
    quoted = (
        await client.post(
            f"/v1/cards/{ICCID}/quote",
            json={"plan_code": "JP-1D-1GB", "start": "now"},
            headers=traveller,
        )
    ).json()
    assert quoted["forfeits"] == {"data_mb": 0, "days": 0}


async def test_quotes_follow_the_renewal_rules(
    client: httpx.AsyncClient, traveller: dict[str, str]
) -> None:
    body = {"plan_code": "JP-1D-1GB"}
    is_problem(
        await client.post(f"/v1/cards/{OTHER_ICCID}/quote", json=body, headers=traveller), 404
    )
    stranger = await login(client, "s@example.com")
    is_problem(await client.post(f"/v1/cards/{ICCID}/quote", json=body, headers=stranger), 404)
    is_problem(await client.post(f"/v1/cards/{ICCID}/quote", json=body), 401)
    unknown = await client.post(
        f"/v1/cards/{ICCID}/quote", json={"plan_code": "NOPE"}, headers=traveller
    )
    assert is_problem(unknown, 422)["type"].endswith("/unknown-plan")  # type: ignore[union-attr]
    bad = await client.post(
        f"/v1/cards/{ICCID}/quote",
        json={"plan_code": "JP-1D-1GB", "start": "soon"},
        headers=traveller,
    )
    is_problem(bad, 422)


async def test_the_history_lists_renewals_newest_first_a_page_at_a_time(
    client: httpx.AsyncClient, traveller: dict[str, str]
) -> None:
    made = [(await renew(client, traveller)).json()["renewal_id"] for _ in range(5)]
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = (
            await client.get(f"/v1/cards/{ICCID}/renewals", params=params, headers=traveller)
        ).json()
        pages += 1
        seen += [item["renewal_id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(made)) and pages == 3
    first = (await client.get(f"/v1/cards/{ICCID}/renewals", headers=traveller)).json()["items"][0]
    assert {"status", "plan_code", "price", "discount", "start", "created_at", "updated_at"} <= set(
        first
    )
    assert first["status"] == "REQUESTED"


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 101}, {"cursor": "not-a-cursor"}])
async def test_the_history_refuses_bad_pages(
    client: httpx.AsyncClient, traveller: dict[str, str], params: dict[str, Any]
) -> None:
    answer = await client.get(f"/v1/cards/{ICCID}/renewals", params=params, headers=traveller)
    assert answer.status_code in (400, 422)
    is_problem(answer, answer.status_code)


async def test_the_history_is_the_owners_only(
    client: httpx.AsyncClient, traveller: dict[str, str]
) -> None:
    stranger = await login(client, "s@example.com")
    is_problem(await client.get(f"/v1/cards/{ICCID}/renewals", headers=stranger), 404)


async def test_auto_renew_keeps_a_monthly_cap_and_looks_at_the_plans_again(
    client: httpx.AsyncClient, database: Database, traveller: dict[str, str]
) -> None:
    now = utcnow()
    async with database.session() as session:
        session.add(
            PlanWatch(
                id=str(uuid.uuid4()),
                iccid=ICCID,
                plan_code="JP-30D-10GB",
                valid_from=now,
                valid_until=now + timedelta(hours=5),
            )
        )
    body = {
        "enabled": True,
        "plan_code": "JP-1D-1GB",
        "payment": PAY,
        "monthly_cap": {"amount": 5000, "currency": "CNY"},
    }
    on = await client.put(f"/v1/cards/{ICCID}/auto-renew", json=body, headers=traveller)
    assert on.status_code == 200, on.text
    assert on.json()["auto_renew_monthly_cap"] == {"amount": 5000, "currency": "CNY"}
    async with database.session() as session:
        [watched] = (await session.exec(PlanWatch.__table__.select())).all()  # type: ignore[attr-defined]
    assert watched.due_at is not None  # looked at again: a plan past its lead renews at once
    bad_cap = body | {"monthly_cap": {"amount": 0, "currency": "CNY"}}
    is_problem(
        await client.put(f"/v1/cards/{ICCID}/auto-renew", json=bad_cap, headers=traveller), 422
    )
    off = await client.put(
        f"/v1/cards/{ICCID}/auto-renew", json={"enabled": False}, headers=traveller
    )
    assert off.json()["auto_renew_monthly_cap"] is None and off.json()["auto_renew"] is False


def _parse(value: str) -> Any:
    from datetime import datetime

    return datetime.fromisoformat(value)


async def test_a_repeated_request_with_a_code_redeems_it_once(
    client: httpx.AsyncClient, database: Database, traveller: dict[str, str]
) -> None:
    body = {"plan_code": "JP-30D-10GB", "payment": PAY, "promo_code": "WELCOME10"}
    headers = traveller | {"Idempotency-Key": "same-key"}
    first = await client.post(f"/v1/cards/{ICCID}/renewals", json=body, headers=headers)
    again = await client.post(f"/v1/cards/{ICCID}/renewals", json=body, headers=headers)
    assert first.status_code == again.status_code == 202
    assert first.json() == again.json()
    async with database.session() as session:
        promotion = await session.get(Promotion, "WELCOME10")
    assert promotion is not None and promotion.redeemed == 1
    other_code = body | {"promo_code": "OTHER"}
    conflict = await client.post(f"/v1/cards/{ICCID}/renewals", json=other_code, headers=headers)
    assert is_problem(conflict, 409)["type"].endswith("/idempotency-key-reused")  # type: ignore[union-attr]
