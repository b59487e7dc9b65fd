"""The accounts HTTP API: what a frontend sees, including every error as problem details."""

import json
import uuid

import httpx
import pytest
from accounts_testkit import CODE, ICCID, OTHER_ICCID, published
from esim_core.persistence.db import Database


async def login(client: httpx.AsyncClient, email: str = "a@example.com") -> dict[str, str]:
    created = await client.post("/v1/users", json={"email": email, "password": "long enough"})
    assert created.status_code == 201, created.text
    token = await client.post("/v1/auth/token", data={"username": email, "password": "long enough"})
    assert token.status_code == 200
    return {"Authorization": f"Bearer {token.json()['access_token']}"}


def is_problem(response: httpx.Response, status: int) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, object] = response.json()
    assert body["status"] == status
    assert body["detail"]
    return body


async def test_register_login_and_me(client: httpx.AsyncClient) -> None:
    headers = await login(client)
    me = await client.get("/v1/users/me", headers=headers)
    assert me.status_code == 200
    assert me.json()["email"] == "a@example.com"
    assert "password" not in me.text and "password_hash" not in me.text


async def test_registration_errors(client: httpx.AsyncClient) -> None:
    await login(client)
    again = await client.post(
        "/v1/users", json={"email": "A@example.com", "password": "long enough"}
    )
    assert "already registered" in str(is_problem(again, 409)["detail"])
    bad = await client.post("/v1/users", json={"email": "nope", "password": "pw-sEcr"})
    fields = {error["field"] for error in is_problem(bad, 422)["errors"]}  # type: ignore[attr-defined]
    assert fields == {"body.email", "body.password"}
    assert "pw-sEcr" not in bad.text
    not_json = await client.post(
        "/v1/users", content=b"{", headers={"content-type": "application/json"}
    )
    is_problem(not_json, 422)


async def test_wrong_password_and_missing_token(client: httpx.AsyncClient) -> None:
    await login(client)
    wrong = await client.post(
        "/v1/auth/token", data={"username": "a@example.com", "password": "x" * 9}
    )
    is_problem(wrong, 401)
    assert is_problem(await client.get("/v1/cards"), 401)
    garbage = await client.get("/v1/cards", headers={"Authorization": "Bearer abc"})
    assert "not valid" in str(is_problem(garbage, 401)["detail"])


async def test_bind_card_publishes_card_bound(
    client: httpx.AsyncClient, database: Database
) -> None:
    headers = await login(client)
    wrong = await client.post(
        "/v1/cards", json={"iccid": ICCID, "activation_code": "nope"}, headers=headers
    )
    is_problem(wrong, 404)
    bad = await client.post(
        "/v1/cards", json={"iccid": "123", "activation_code": CODE}, headers=headers
    )
    is_problem(bad, 422)
    bound = await client.post(
        "/v1/cards", json={"iccid": ICCID, "activation_code": CODE}, headers=headers
    )
    assert bound.status_code == 201
    again = await client.post(
        "/v1/cards", json={"iccid": ICCID, "activation_code": CODE}, headers=headers
    )
    assert again.status_code == 200
    [event] = await published(database, "esim.card.bound.v1")
    assert json.loads(event.value)["data"]["email"] == "a@example.com"

    other = await login(client, "b@example.com")
    taken = await client.post(
        "/v1/cards", json={"iccid": ICCID, "activation_code": CODE}, headers=other
    )
    is_problem(taken, 409)
    is_problem(await client.get(f"/v1/cards/{ICCID}", headers=other), 404)


async def test_renewal_is_accepted_once_per_idempotency_key(
    client: httpx.AsyncClient, database: Database
) -> None:
    headers = await login(client)
    await client.post("/v1/cards", json={"iccid": ICCID, "activation_code": CODE}, headers=headers)
    body = {"plan_code": "JP-30D-10GB", "payment": {"method": "card", "token": "card_ok"}}
    key = str(uuid.uuid4())
    first = await client.post(
        f"/v1/cards/{ICCID}/renewals", json=body, headers=headers | {"Idempotency-Key": key}
    )
    assert first.status_code == 202
    assert first.json() == {"renewal_id": key, "status": "REQUESTED"}
    replay = await client.post(
        f"/v1/cards/{ICCID}/renewals", json=body, headers=headers | {"Idempotency-Key": key}
    )
    assert replay.json() == first.json()
    other_body = body | {"plan_code": "JP-1D-1GB"}
    conflict = await client.post(
        f"/v1/cards/{ICCID}/renewals", json=other_body, headers=headers | {"Idempotency-Key": key}
    )
    is_problem(conflict, 409)
    [requested] = await published(database, "esim.renewal.requested.v1")
    assert requested.key == ICCID

    saga = await client.get(f"/v1/renewals/{key}", headers=headers)
    assert saga.status_code == 200
    assert saga.json()["timeline"][0]["step"] == "requested"
    assert "card_ok" not in saga.text
    stranger = await login(client, "c@example.com")
    is_problem(await client.get(f"/v1/renewals/{key}", headers=stranger), 404)


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"plan_code": "NOPE", "payment": {"method": "card", "token": "card_ok"}}, 422),
        ({"plan_code": "RU-30D-10GB", "payment": {"method": "card", "token": "card_ok"}}, 422),
        ({"plan_code": "JP-1D-1GB", "payment": {"method": "cash", "token": "x"}}, 422),
        (
            {"plan_code": "JP-1D-1GB", "payment": {"method": "card", "token": "card_ok"}, "x": 1},
            422,
        ),
        ({"plan_code": "JP-1D-1GB"}, 422),
    ],
)
async def test_bad_renewal_requests(
    client: httpx.AsyncClient, body: dict[str, object], status: int
) -> None:
    headers = await login(client)
    await client.post("/v1/cards", json={"iccid": ICCID, "activation_code": CODE}, headers=headers)
    is_problem(await client.post(f"/v1/cards/{ICCID}/renewals", json=body, headers=headers), status)


async def test_renewing_a_card_that_is_not_yours(client: httpx.AsyncClient) -> None:
    headers = await login(client)
    body = {"plan_code": "JP-1D-1GB", "payment": {"method": "card", "token": "card_ok"}}
    is_problem(
        await client.post(f"/v1/cards/{OTHER_ICCID}/renewals", json=body, headers=headers), 404
    )


async def test_plans_by_country_and_currency(client: httpx.AsyncClient) -> None:
    japan = (await client.get("/v1/plans", params={"country": "jp", "currency": "CNY"})).json()
    codes = {plan["code"] for plan in japan}
    assert {"JP-1D-1GB", "JP-30D-10GB", "JP-90D-30GB", "ASIA-30D-15GB"} <= codes
    assert "RU-30D-10GB" not in codes and "EU-30D-20GB" not in codes
    assert {plan["price"]["currency"] for plan in japan} == {"CNY"}
    assert {plan["kind"] for plan in japan} == {"daily", "monthly", "quarterly"}
    is_problem(await client.get("/v1/plans", params={"country": "Japan"}), 422)
