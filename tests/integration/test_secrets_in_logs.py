"""No password, reset code, sealed code or token in any log line or dead letter of the platform.

Runs the sign-in and reset flows (wrong and right passwords, refresh, logout, reset by mail and
SMS, a wrong and a right code), then reads every process's log and the flows' dead-letter topics.
"""

import json
import re
import uuid
from pathlib import Path

import httpx
import pytest

from tests.support.client import PlainKafka, cloudevent
from tests.support.infra import Platform, wait_until

pytestmark = pytest.mark.integration


def test_no_secret_is_logged_or_dead_lettered(platform: Platform) -> None:
    base = platform.url("accounts")
    address = f"secrets-{uuid.uuid4().hex[:10]}@example.com"
    phone = f"+44770{uuid.uuid4().int % 10**7:07d}"
    password, new_password = f"pw-{uuid.uuid4().hex}", f"npw-{uuid.uuid4().hex}"
    created = httpx.post(
        f"{base}/v1/users", json={"email": address, "password": password, "phone": phone}
    )
    assert created.status_code == 201, created.text
    user_id = created.json()["id"]
    secrets: dict[str, str] = {"password": password, "new password": new_password}

    wrong = f"wrong-{uuid.uuid4().hex}"
    assert httpx.post(f"{base}/v1/auth/token", data={"username": address, "password": wrong})
    secrets["wrong password"] = wrong
    tokens = httpx.post(
        f"{base}/v1/auth/token", data={"username": address, "password": password}
    ).json()
    rotated = httpx.post(
        f"{base}/v1/auth/token",
        data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
    ).json()
    httpx.post(f"{base}/v1/auth/logout", json={"refresh_token": rotated["refresh_token"]})
    for name, value in (("access", tokens), ("rotated", rotated)):
        secrets[f"{name} access token"] = value["access_token"]
        secrets[f"{name} refresh token"] = value["refresh_token"]

    httpx.post(f"{base}/v1/auth/password-reset", json={"email": address})

    def texts() -> list[str]:
        listed = httpx.get(f"{platform.url('sms')}/sandbox/messages", params={"to": phone})
        return [item["text"] for item in listed.json()]

    code = re.search(r"\b(\d{6})\b", wait_until(texts, what="the reset SMS")[0])
    assert code is not None
    secrets["reset code"] = code.group(1)
    bad = "000000" if code.group(1) != "000000" else "111111"
    for guess in (bad, code.group(1)):
        httpx.post(
            f"{base}/v1/auth/password-reset/confirm",
            json={"email": address, "code": guess, "new_password": new_password},
        )
    # The notifier has handled both events once the password-changed SMS is there.
    wait_until(lambda: len(texts()) >= 2, what="the password-changed SMS")
    login = httpx.post(
        f"{base}/v1/auth/token", data={"username": address, "password": new_password}
    )
    assert login.status_code == 200
    secrets["new access token"] = login.json()["access_token"]

    kafka = PlainKafka(platform.kafka)
    try:
        reset = kafka.records(
            platform.topic("esim.account.password-reset"),
            lambda r: cloudevent(r)["data"]["user_id"] == user_id,
        )
        sealed = cloudevent(reset[0])["data"]["code_sealed"]
        secrets["sealed code"] = sealed
        # What any reader of the topic sees: the code is nowhere in the event but sealed.
        assert code.group(1) not in json.dumps(cloudevent(reset[0])).replace(sealed, "")
        dead = [
            record.value.decode(errors="replace")
            for topic in ("esim.account.password-reset", "esim.account.password-changed")
            for record in kafka.records(
                platform.topic(topic) + ".dlq", lambda _: True, at_least=0, timeout=10
            )
        ]
    finally:
        kafka.close()

    logs = {
        path.name: path.read_text(errors="replace") for path in Path(platform.workdir).glob("*.log")
    }
    assert {"accounts.log", "notifier.log", "sms-sandbox.log", "smtp.log"} <= set(logs)
    assert address in logs["notifier.log"] or user_id in logs["notifier.log"]  # logs were read
    leaks = []
    for what, secret in secrets.items():
        pattern = re.compile(rf"(?<![0-9A-Za-z]){re.escape(secret)}(?![0-9A-Za-z])")
        leaks += [f"{what} in {name}" for name, text in logs.items() if pattern.search(text)]
        leaks += [f"{what} in a dead letter" for text in dead if pattern.search(text)]
    assert leaks == []
