"""Sign-in, sessions, profile, rate limits and password reset, as a frontend sees them."""

import base64
import hashlib
import json
import secrets

import httpx
import jwt
import pytest
from accounts.identity.parts import Identity
from accounts.identity.sessions import purge_sessions
from accounts.store import User, UserSession
from accounts_testkit import CODE, ICCID, published
from conftest import SEAL_KEY
from esim_core.persistence.db import Database
from esim_core.sealing import Sealer
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlmodel import select

PASSWORD = "long enough"


async def sign_up(client: httpx.AsyncClient, email: str = "a@example.com", **extra: object) -> None:
    created = await client.post("/v1/users", json={"email": email, "password": PASSWORD, **extra})
    assert created.status_code == 201, created.text


async def sign_in(
    client: httpx.AsyncClient, email: str = "a@example.com", password: str = PASSWORD
) -> httpx.Response:
    return await client.post("/v1/auth/token", data={"username": email, "password": password})


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_password_grant_returns_refresh_token_and_expiry(client: httpx.AsyncClient) -> None:
    await sign_up(client, name="Li Wei")
    answer = await sign_in(client)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["token_type"] == "bearer" and body["expires_in"] == 600
    assert body["refresh_token"] and body["access_token"] != body["refresh_token"]
    me = await client.get("/v1/users/me", headers=bearer(body["access_token"]))
    assert me.json()["name"] == "Li Wei"
    # A refresh token is not an access token.
    assert (
        await client.get("/v1/users/me", headers=bearer(body["refresh_token"]))
    ).status_code == 401


async def test_refresh_rotates_and_a_reused_token_revokes_the_family(
    client: httpx.AsyncClient,
) -> None:
    await sign_up(client)
    first = (await sign_in(client)).json()
    rotated = await client.post(
        "/v1/auth/token",
        data={"grant_type": "refresh_token", "refresh_token": first["refresh_token"]},
    )
    assert rotated.status_code == 200, rotated.text
    second = rotated.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert (
        await client.get("/v1/users/me", headers=bearer(second["access_token"]))
    ).status_code == 200
    replay = await client.post(
        "/v1/auth/token",
        data={"grant_type": "refresh_token", "refresh_token": first["refresh_token"]},
    )
    assert replay.status_code == 401
    assert replay.headers["content-type"] == "application/problem+json"
    # The whole family is dead: the newest refresh token and its access token too.
    newest = await client.post(
        "/v1/auth/token",
        data={"grant_type": "refresh_token", "refresh_token": second["refresh_token"]},
    )
    assert newest.status_code == 401
    assert (
        await client.get("/v1/users/me", headers=bearer(second["access_token"]))
    ).status_code == 401
    # Another sign-in is a new family and works.
    assert (await sign_in(client)).status_code == 200


async def test_logout_ends_the_session(client: httpx.AsyncClient) -> None:
    await sign_up(client)
    tokens = (await sign_in(client)).json()
    other = (await sign_in(client)).json()
    out = await client.post("/v1/auth/logout", json={"refresh_token": tokens["refresh_token"]})
    assert out.status_code == 204
    again = await client.post(
        "/v1/auth/token",
        data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
    )
    assert again.status_code == 401
    assert (
        await client.get("/v1/cards", headers=bearer(tokens["access_token"]))
    ).status_code == 401
    # Only that session: another device stays signed in.
    assert (await client.get("/v1/cards", headers=bearer(other["access_token"]))).status_code == 200
    assert (
        await client.post("/v1/auth/logout", json={"refresh_token": tokens["refresh_token"]})
    ).status_code == 401


async def test_tokens_of_another_issuer_or_audience_are_refused(
    client: httpx.AsyncClient, identity: Identity
) -> None:

    await sign_up(client)
    access = (await sign_in(client)).json()["access_token"]
    claims = jwt.decode(access, options={"verify_signature": False})
    for change in ({"iss": "https://elsewhere"}, {"aud": "other-app"}):
        forged = jwt.encode({**claims, **change}, "k" * 40, algorithm="HS256")
        assert (await client.get("/v1/users/me", headers=bearer(forged))).status_code == 401
    for missing in ("jti", "iat", "exp", "iss", "aud"):
        forged = jwt.encode(
            {k: v for k, v in claims.items() if k != missing}, "k" * 40, algorithm="HS256"
        )
        assert (await client.get("/v1/users/me", headers=bearer(forged))).status_code == 401


async def test_profile_update(client: httpx.AsyncClient) -> None:
    await sign_up(client)
    headers = bearer((await sign_in(client)).json()["access_token"])
    changed = await client.patch(
        "/v1/users/me",
        headers=headers,
        json={
            "name": "Wei",
            "phone": "+8613800138000",
            "locale": "zh-CN",
            "notify": {"email": True, "sms": False},
        },
    )
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert (body["name"], body["phone"], body["locale"]) == ("Wei", "+8613800138000", "zh-CN")
    assert body["notify"] == {"email": True, "sms": False}
    assert body["created_at"].endswith("Z")
    me = (await client.get("/v1/users/me", headers=headers)).json()
    assert me == body
    bad = await client.patch("/v1/users/me", headers=headers, json={"phone": "0138 0013 8000"})
    assert bad.status_code == 422
    assert (await client.patch("/v1/users/me", json={"name": "x"})).status_code == 401
    cleared = await client.patch("/v1/users/me", headers=headers, json={"phone": None})
    assert cleared.json()["phone"] is None and cleared.json()["name"] == "Wei"


async def test_scrypt_hash_verifies_and_is_rehashed_as_argon2(
    client: httpx.AsyncClient, database: Database
) -> None:
    await sign_up(client)
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(PASSWORD.encode(), salt=salt, n=2**14, r=8, p=1, dklen=32)
    legacy = "$".join(
        [
            "scrypt",
            "16384",
            "8",
            "1",
            base64.b64encode(salt).decode(),
            base64.b64encode(digest).decode(),
        ]
    )
    async with database.session() as unit:
        user = (await unit.exec(select(User))).one()
        user.password_hash = legacy
        unit.add(user)
    assert (await sign_in(client, password="wrong password")).status_code == 401
    async with database.session() as unit:
        assert (await unit.get(User, user.id)).password_hash == legacy  # type: ignore[union-attr]
    assert (await sign_in(client)).status_code == 200
    async with database.session() as unit:
        stored = (await unit.get(User, user.id)).password_hash  # type: ignore[union-attr]
    assert stored.startswith("$argon2id$")
    assert (await sign_in(client)).status_code == 200


async def test_failed_logins_are_limited_per_account(client: httpx.AsyncClient) -> None:
    await sign_up(client)
    answers = [(await sign_in(client, password="wrong password")).status_code for _ in range(12)]
    assert answers[:10] == [401] * 10
    limited = await sign_in(client, password="wrong password")
    assert limited.status_code == 429
    assert int(limited.headers["Retry-After"]) >= 1
    assert limited.headers["content-type"] == "application/problem+json"
    # The right password is refused too while the account is limited.
    assert (await sign_in(client)).status_code == 429


async def test_redis_outage_fails_closed_with_a_problem(
    client: httpx.AsyncClient, identity: Identity, monkeypatch: pytest.MonkeyPatch
) -> None:
    await sign_up(client)

    async def down(*_: object, **__: object) -> object:
        raise RedisConnectionError("Connection refused")

    monkeypatch.setattr(identity.limiter._redis, "eval", down)
    for answer in (
        await sign_in(client),
        await client.post("/v1/auth/password-reset", json={"email": "a@example.com"}),
    ):
        assert answer.status_code == 503
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.headers["Retry-After"]
        assert "try again" in answer.json()["detail"]


async def _reset_code(database: Database, user_id: str) -> str:
    rows = await published(database, "esim.account.password-reset.v1")
    data = json.loads(rows[-1].value)["data"]
    return Sealer(SEAL_KEY).open(data["code_sealed"], user_id)


async def test_password_reset_by_code(client: httpx.AsyncClient, database: Database) -> None:
    await sign_up(client, phone="+8613800138000")
    tokens = (await sign_in(client)).json()
    user_id = (await client.get("/v1/users/me", headers=bearer(tokens["access_token"]))).json()[
        "id"
    ]
    unknown = await client.post("/v1/auth/password-reset", json={"email": "nobody@example.com"})
    asked = await client.post("/v1/auth/password-reset", json={"email": "A@example.com"})
    assert unknown.status_code == asked.status_code == 202
    assert unknown.json() == asked.json()
    rows = await published(database, "esim.account.password-reset.v1")
    assert len(rows) == 1
    data = json.loads(rows[0].value)["data"]
    code = await _reset_code(database, user_id)
    assert len(code) == 6 and code.isdigit()
    assert code not in rows[0].value.decode().replace(data["code_sealed"], "")
    assert data["phone"] == "+8613800138000" and data["code_expires_at"].endswith("Z")

    wrong = "000000" if code != "000000" else "111111"
    confirm = {"email": "a@example.com", "code": wrong, "new_password": "a new password"}
    bad = await client.post("/v1/auth/password-reset/confirm", json=confirm)
    assert bad.status_code == 400 and bad.json()["type"].endswith("/invalid-code")
    done = await client.post("/v1/auth/password-reset/confirm", json={**confirm, "code": code})
    assert done.status_code == 204, done.text
    # Used once only; every earlier token is dead; the new password works, the old does not.
    again = await client.post("/v1/auth/password-reset/confirm", json={**confirm, "code": code})
    assert again.status_code == 400
    assert (
        await client.get("/v1/users/me", headers=bearer(tokens["access_token"]))
    ).status_code == 401
    refresh = await client.post(
        "/v1/auth/token",
        data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
    )
    assert refresh.status_code == 401
    assert (await sign_in(client)).status_code == 401
    assert (await sign_in(client, password="a new password")).status_code == 200
    changed = await published(database, "esim.account.password-changed.v1")
    assert len(changed) == 1


async def test_reset_code_stops_after_five_wrong_tries(
    client: httpx.AsyncClient, database: Database
) -> None:
    await sign_up(client)
    await client.post("/v1/auth/password-reset", json={"email": "a@example.com"})
    async with database.session() as unit:
        user = (await unit.exec(select(User))).one()
    code = await _reset_code(database, user.id)
    wrong = [c for c in ("000000", "111111", "222222", "333333", "444444", "555555") if c != code]
    body = {"email": "a@example.com", "new_password": "a new password"}
    for guess in wrong[:5]:
        answer = await client.post("/v1/auth/password-reset/confirm", json={**body, "code": guess})
        assert answer.status_code == 400
    late = await client.post("/v1/auth/password-reset/confirm", json={**body, "code": code})
    assert late.status_code == 400
    assert (await sign_in(client)).status_code == 200


async def test_reset_requests_are_limited_per_account(client: httpx.AsyncClient) -> None:
    await sign_up(client)
    answers = [
        (await client.post("/v1/auth/password-reset", json={"email": "a@example.com"})).status_code
        for _ in range(6)
    ]
    assert answers == [202] * 5 + [429]


@pytest.mark.parametrize(
    ("accounts_settings", "attempt"),
    [
        ({"limit_login_failures_address": "3/60"}, "failed login"),
        ({"limit_registrations_address": "3/60"}, "registration"),
        ({"limit_resets_address": "3/60"}, "reset request"),
    ],
    indirect=["accounts_settings"],
)
async def test_limits_per_client_address(client: httpx.AsyncClient, attempt: str) -> None:
    """Three a minute from one address, whichever accounts they name; another address is free."""

    async def once(n: int, address: str) -> int:
        headers = {"X-Forwarded-For": address}
        if attempt == "failed login":
            answer = await client.post(
                "/v1/auth/token",
                data={"username": f"u{n}@example.com", "password": "wrong password"},
                headers=headers,
            )
        elif attempt == "registration":
            answer = await client.post(
                "/v1/users",
                json={"email": f"u{n}@example.com", "password": PASSWORD},
                headers=headers,
            )
        else:
            answer = await client.post(
                "/v1/auth/password-reset", json={"email": f"u{n}@example.com"}, headers=headers
            )
        return answer.status_code

    first = [await once(n, "203.0.113.7") for n in range(4)]
    assert first[3] == 429 and 429 not in first[:3]
    assert await once(9, "203.0.113.8") != 429


@pytest.mark.parametrize(
    "accounts_settings", [{"limit_reset_confirmations_account": "3/60"}], indirect=True
)
async def test_reset_confirmations_are_limited_per_account(client: httpx.AsyncClient) -> None:
    await sign_up(client)
    body = {"email": "a@example.com", "code": "000000", "new_password": "a new password"}
    answers = [
        (await client.post("/v1/auth/password-reset/confirm", json=body)).status_code
        for _ in range(4)
    ]
    assert answers == [400, 400, 400, 429]


async def test_ended_sessions_are_purged_after_the_keep_time(
    client: httpx.AsyncClient, database: Database
) -> None:
    await sign_up(client)
    ended = (await sign_in(client)).json()
    live = (await sign_in(client)).json()
    await client.post("/v1/auth/logout", json={"refresh_token": ended["refresh_token"]})
    assert await purge_sessions(database, keep_s=3600) == 0  # ended just now: kept
    assert await purge_sessions(database, keep_s=0) == 1
    async with database.session() as unit:
        left = (await unit.exec(select(UserSession))).all()
    assert len(left) == 1
    assert (
        await client.get("/v1/users/me", headers=bearer(live["access_token"]))
    ).status_code == 200


async def test_a_profile_change_tells_the_notifier_again_about_each_card(
    client: httpx.AsyncClient, database: Database
) -> None:
    await sign_up(client)
    headers = bearer((await sign_in(client)).json()["access_token"])
    bound = await client.post(
        "/v1/cards", json={"iccid": ICCID, "activation_code": CODE}, headers=headers
    )
    assert bound.status_code == 201
    await client.patch(
        "/v1/users/me",
        headers=headers,
        json={"phone": "+8613800138000", "locale": "zh-CN"},
    )
    await client.patch(
        "/v1/users/me", headers=headers, json={"notify": {"email": True, "sms": False}}
    )
    rows = await published(database, "esim.card.bound.v1")
    data = [json.loads(row.value)["data"] for row in rows]
    assert [(d["iccid"], d.get("phone"), d["locale"]) for d in data] == [
        (ICCID, None, "en"),
        (ICCID, "+8613800138000", "zh-CN"),
        (ICCID, None, "zh-CN"),
    ]
