"""The traveller's account against the real Redis, broker, notifier, SMTP sink and SMS sandbox.

Reset by code (mail and SMS), its expiry, attempt limit and single use, tokens dead after a
reset, refresh rotation and reuse detection, logout, 429 after failed logins, and the answer
when Redis is down.
"""

import email
import re
import uuid
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.support.client import texts_to
from tests.support.infra import Platform, Process, free_port, http_ok, port_open, wait_until

pytestmark = pytest.mark.integration

PASSWORD = "correct horse 1"


def register(platform: Platform, *, phone: str | None = None, locale: str = "en") -> dict[str, Any]:
    base = platform.url("accounts")
    address = f"id-{uuid.uuid4().hex[:10]}@example.com"
    body: dict[str, Any] = {"email": address, "password": PASSWORD, "locale": locale, "name": "Li"}
    if phone is not None:
        body["phone"] = phone
    created = httpx.post(f"{base}/v1/users", json=body)
    assert created.status_code == 201, created.text
    return {"email": address, "id": created.json()["id"], "phone": phone}


def sign_in(platform: Platform, address: str, password: str = PASSWORD) -> httpx.Response:
    return httpx.post(
        f"{platform.url('accounts')}/v1/auth/token",
        data={"username": address, "password": password},
    )


def refresh(platform: Platform, token: str) -> httpx.Response:
    return httpx.post(
        f"{platform.url('accounts')}/v1/auth/token",
        data={"grant_type": "refresh_token", "refresh_token": token},
    )


def me(platform: Platform, access: str) -> httpx.Response:
    return httpx.get(
        f"{platform.url('accounts')}/v1/users/me", headers={"Authorization": f"Bearer {access}"}
    )


def mails_to(platform: Platform, address: str) -> list[str]:
    """The plain-text bodies (and subjects) of the mails the sink received for an address."""
    found = []
    for path in sorted(Path(platform.mail_dir).glob("*.eml")):
        message = email.message_from_bytes(path.read_bytes(), policy=default_policy)
        if address in str(message["To"]):
            body = message.get_body(preferencelist=("plain",))
            text = body.get_content() if body is not None else ""
            found.append(f"{message['Subject']}\n{text}")
    return found


def code_in(text: str) -> str:
    match = re.search(r"\b(\d{6})\b", text)
    assert match is not None, text
    return match.group(1)


def ask_reset(platform: Platform, address: str) -> None:
    asked = httpx.post(
        f"{platform.url('accounts')}/v1/auth/password-reset", json={"email": address}
    )
    assert asked.status_code == 202, asked.text


def confirm(platform: Platform, address: str, code: str, new_password: str) -> httpx.Response:
    return httpx.post(
        f"{platform.url('accounts')}/v1/auth/password-reset/confirm",
        json={"email": address, "code": code, "new_password": new_password},
    )


def test_reset_by_mail_and_sms_ends_every_session(platform: Platform) -> None:
    phone = f"+86138{uuid.uuid4().int % 10**8:08d}"
    user = register(platform, phone=phone, locale="zh-CN")
    tokens = sign_in(platform, user["email"]).json()
    ask_reset(platform, user["email"])
    mailed = wait_until(lambda: mails_to(platform, user["email"]), what="the reset mail")
    texted = wait_until(lambda: texts_to(platform, phone), what="the reset SMS")
    assert "验证码" in mailed[0]
    code = code_in(texted[0])
    assert code_in(mailed[0].split("\n", 1)[1]) == code

    answer = confirm(platform, user["email"], code, "a brand new password")
    assert answer.status_code == 204, answer.text
    assert me(platform, tokens["access_token"]).status_code == 401
    assert refresh(platform, tokens["refresh_token"]).status_code == 401
    assert sign_in(platform, user["email"]).status_code == 401
    assert sign_in(platform, user["email"], "a brand new password").status_code == 200
    # The user hears that the password changed, on both channels.
    wait_until(lambda: len(mails_to(platform, user["email"])) >= 2, what="the changed notice")
    wait_until(lambda: len(texts_to(platform, phone)) >= 2, what="the changed SMS")
    # Used once.
    assert confirm(platform, user["email"], code, "yet another password").status_code == 400


def test_reset_code_expires_and_stops_after_five_wrong_tries(platform: Platform) -> None:
    user = register(platform)
    store = redis.Redis.from_url(platform.redis)
    key = f"esim:accounts:reset-code:{user['id']}"

    ask_reset(platform, user["email"])
    first = code_in(wait_until(lambda: mails_to(platform, user["email"]), what="a code")[0])
    assert 0 < store.ttl(key) <= 900
    assert store.hget(key, "digest") not in (None, first.encode())  # only a digest is kept
    # Expiry is Redis's TTL: let it run out now instead of in 15 minutes.
    store.pexpire(key, 1)
    wait_until(lambda: not store.exists(key), what="the code to expire")
    assert confirm(platform, user["email"], first, "a brand new password").status_code == 400

    ask_reset(platform, user["email"])
    second = code_in(
        wait_until(lambda: mails_to(platform, user["email"])[1:], what="a second code")[0]
    )
    wrong = [c for c in ("000000", "111111", "222222", "333333", "444444", "555555") if c != second]
    for guess in wrong[:5]:
        answer = confirm(platform, user["email"], guess, "a brand new password")
        assert answer.status_code == 400
        assert answer.json()["type"].endswith("/invalid-code")
    assert confirm(platform, user["email"], second, "a brand new password").status_code == 400
    assert sign_in(platform, user["email"]).status_code == 200


def test_refresh_rotation_reuse_and_logout(platform: Platform) -> None:
    user = register(platform)
    first = sign_in(platform, user["email"]).json()
    assert first["expires_in"] > 0 and first["refresh_token"]
    second = refresh(platform, first["refresh_token"]).json()
    assert me(platform, second["access_token"]).status_code == 200
    assert refresh(platform, first["refresh_token"]).status_code == 401  # reused
    assert refresh(platform, second["refresh_token"]).status_code == 401  # family revoked
    assert me(platform, second["access_token"]).status_code == 401

    session = sign_in(platform, user["email"]).json()
    out = httpx.post(
        f"{platform.url('accounts')}/v1/auth/logout",
        json={"refresh_token": session["refresh_token"]},
    )
    assert out.status_code == 204
    assert refresh(platform, session["refresh_token"]).status_code == 401
    assert me(platform, session["access_token"]).status_code == 401


def test_failed_logins_answer_429_with_retry_after(platform: Platform) -> None:
    user = register(platform)
    statuses = [sign_in(platform, user["email"], "wrong password").status_code for _ in range(10)]
    assert statuses == [401] * 10
    limited = sign_in(platform, user["email"], "wrong password")
    assert limited.status_code == 429
    assert int(limited.headers["Retry-After"]) >= 1
    assert limited.headers["content-type"] == "application/problem+json"


def test_redis_down_fails_closed_with_a_problem(platform: Platform, tmp_path: Path) -> None:
    """A second accounts replica on a Redis of its own, which then stops."""
    redis_port, http_port = free_port(), free_port()
    own_redis = Process(
        "redis-for-outage",
        ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", ""],
        {},
        tmp_path / "redis.log",
        lambda: port_open(redis_port),
    ).start()
    replica = platform.service_process("accounts")
    replica.env.update(
        {
            "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
            "ACCOUNTS_HTTP_PORT": str(http_port),
            "ACCOUNTS_DATABASE_URL": platform.database_url("accounts"),
        }
    )
    replica.name, replica.log_path = "accounts-outage", tmp_path / "accounts.log"
    replica.ready = http_ok(f"http://127.0.0.1:{http_port}/health/ready")
    replica.start()
    try:
        user = register(platform)
        base = f"http://127.0.0.1:{http_port}"
        own_redis.stop()
        login = httpx.post(
            f"{base}/v1/auth/token", data={"username": user["email"], "password": PASSWORD}
        )
        reset = httpx.post(f"{base}/v1/auth/password-reset", json={"email": user["email"]})
        for answer in (login, reset):
            assert answer.status_code == 503, answer.text
            assert answer.headers["content-type"] == "application/problem+json"
            assert answer.headers["Retry-After"]
            assert answer.json()["type"].endswith("/rate-limiter-unavailable")
    finally:
        replica.stop()
        own_redis.stop()
