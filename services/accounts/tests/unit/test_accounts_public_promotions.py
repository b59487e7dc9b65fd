"""`GET /v1/promotions`: the public promotions running now, for anyone, with cache headers."""

from datetime import timedelta

import httpx
from accounts.catalogue.promotions import seed_promotions
from accounts.store import Promotion
from esim_core.clock import utcnow
from esim_core.persistence.db import Database


async def add(database: Database, *promotions: Promotion) -> None:
    async with database.session() as session:
        for promotion in promotions:
            session.add(promotion)


async def test_the_seeded_welcome10_is_listed_without_signing_in(
    client: httpx.AsyncClient, database: Database
) -> None:
    await seed_promotions(database)
    answer = await client.get("/v1/promotions")
    assert answer.status_code == 200
    assert answer.json() == [
        {
            "code": "WELCOME10",
            "percent_off": 10,
            "amount_off": None,
            "valid_from": None,
            "valid_until": None,
            "per_user_limit": 1,
        }
    ]
    assert answer.headers["cache-control"] == "public, max-age=60"


async def test_only_public_running_promotions_with_uses_left_are_listed(
    client: httpx.AsyncClient, database: Database
) -> None:
    now = utcnow()
    await add(
        database,
        Promotion(code="PRIVATE5", percent_off=5),
        Promotion(code="SPRING", percent_off=15, public=True, valid_from=now + timedelta(days=30)),
        Promotion(code="WINTER", percent_off=20, public=True, valid_until=now - timedelta(days=1)),
        Promotion(code="LAUNCH", percent_off=30, public=True, total_limit=2, redeemed=2),
        Promotion(
            code="TEN-CNY",
            amount_off=1000,
            currency="CNY",
            public=True,
            valid_from=now - timedelta(days=1),
            valid_until=now + timedelta(days=7),
        ),
        Promotion(code="ALWAYS", percent_off=5, public=True, total_limit=10, redeemed=3),
    )
    listed = (await client.get("/v1/promotions")).json()
    # The soonest ending first; those without an end after them.
    assert [promotion["code"] for promotion in listed] == ["TEN-CNY", "ALWAYS"]
    fixed = listed[0]
    assert fixed["percent_off"] is None
    assert fixed["amount_off"] == {"amount": 1000, "currency": "CNY"}
    assert fixed["valid_from"].endswith("Z") and fixed["valid_until"].endswith("Z")
    assert fixed["per_user_limit"] is None


async def test_a_promotion_ending_soon_shortens_how_long_the_list_may_be_cached(
    client: httpx.AsyncClient, database: Database
) -> None:
    now = utcnow()
    await add(
        database,
        Promotion(
            code="FLASH", percent_off=50, public=True, valid_until=now + timedelta(seconds=20)
        ),
    )
    answer = await client.get("/v1/promotions")
    assert [promotion["code"] for promotion in answer.json()] == ["FLASH"]
    max_age = int(answer.headers["cache-control"].removeprefix("public, max-age="))
    assert 0 <= max_age <= 20


async def test_a_public_promotion_about_to_start_shortens_the_cache_too(
    client: httpx.AsyncClient, database: Database
) -> None:
    now = utcnow()
    await add(
        database,
        Promotion(code="SOON", percent_off=5, public=True, valid_from=now + timedelta(seconds=30)),
    )
    answer = await client.get("/v1/promotions")
    assert answer.json() == []
    max_age = int(answer.headers["cache-control"].removeprefix("public, max-age="))
    assert 0 <= max_age <= 30


async def test_seeding_lists_a_welcome10_kept_from_before_promotions_could_be_public(
    client: httpx.AsyncClient, database: Database
) -> None:
    await add(database, Promotion(code="WELCOME10", percent_off=10, per_user_limit=1))
    assert (await client.get("/v1/promotions")).json() == []
    await seed_promotions(database)
    assert [p["code"] for p in (await client.get("/v1/promotions")).json()] == ["WELCOME10"]


async def test_the_list_is_in_the_openapi_document_without_security(
    client: httpx.AsyncClient,
) -> None:
    spec = (await client.get("/openapi.json")).json()
    operation = spec["paths"]["/v1/promotions"]["get"]
    assert "security" not in operation
    schema = spec["components"]["schemas"]["PromotionPublic"]
    assert set(schema["properties"]) == {
        "code",
        "percent_off",
        "amount_off",
        "valid_from",
        "valid_until",
        "per_user_limit",
    }
