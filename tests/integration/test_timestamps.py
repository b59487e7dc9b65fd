"""Every time in every HTTP answer is RFC 3339 with an offset, read back from the database.

One walk through the platform touches each endpoint that shows a time, on whichever database the
session runs (`ESIM_TEST_DATABASE`: SQLite hands back naive datetimes, PostgreSQL aware ones).
"""

import re
from typing import Any

import httpx
import pytest

from tests.support.client import Traveller
from tests.support.infra import Platform, wait_until

pytestmark = pytest.mark.integration

LOOKS_LIKE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


def times_in(value: Any, path: str = "$") -> dict[str, str]:
    """Every string in a JSON document that reads as a date and time, by where it is."""
    found: dict[str, str] = {}
    if isinstance(value, dict):
        for key, item in value.items():
            found |= times_in(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found |= times_in(item, f"{path}[{index}]")
    elif isinstance(value, str) and LOOKS_LIKE_TIME.match(value):
        found[path] = value
    return found


def assert_offsets(what: str, response: httpx.Response) -> None:
    assert response.is_success, f"{what}: {response.status_code} {response.text}"
    found = times_in(response.json())
    assert found, f"{what} shows no time at all"
    wrong = {path: value for path, value in found.items() if not RFC3339.match(value)}
    assert wrong == {}, f"{what}: times without an RFC 3339 offset"


def test_every_endpoint_answers_times_with_an_offset(platform: Platform) -> None:
    accounts = platform.url("accounts")
    traveller = Traveller.register(platform)
    assert_offsets("GET /v1/users/me", traveller.get("/v1/users/me"))
    assert_offsets(
        "PATCH /v1/users/me",
        httpx.patch(f"{accounts}/v1/users/me", json={"name": "T"}, headers=traveller.headers),
    )
    created = httpx.post(
        f"{accounts}/v1/users",
        json={"email": f"t-{traveller.user_id[:8]}@example.com", "password": "long enough 1"},
    )
    assert_offsets("POST /v1/users", created)

    iccid = traveller.bind_new_card()
    accepted = traveller.renew(iccid, "card_ok")
    renewal_id = accepted.json()["renewal_id"]
    traveller.wait_for_status(renewal_id, "ACTIVATED")
    assert_offsets("GET /v1/renewals/{id}", traveller.get(f"/v1/renewals/{renewal_id}"))
    assert_offsets("GET /v1/cards/{iccid}", traveller.get(f"/v1/cards/{iccid}"))
    assert_offsets("GET /v1/cards", traveller.get("/v1/cards"))
    assert_offsets(
        "PUT /v1/cards/{iccid}/auto-renew",
        httpx.put(
            f"{accounts}/v1/cards/{iccid}/auto-renew",
            json={"enabled": False},
            headers=traveller.headers,
        ),
    )
    operator = platform.operator_headers
    assert_offsets(
        "GET billing /v1/payments/{id}",
        httpx.get(f"{platform.url('billing')}/v1/payments/{renewal_id}", headers=operator),
    )
    provisioning = platform.url("provisioning")
    assert_offsets(
        "GET provisioning /v1/activations/{id}",
        httpx.get(f"{provisioning}/v1/activations/{renewal_id}", headers=operator),
    )
    assert_offsets(
        "GET provisioning /v1/activations",
        httpx.get(f"{provisioning}/v1/activations", params={"iccid": iccid}, headers=operator),
    )

    def sent() -> httpx.Response | None:
        answer = httpx.get(
            f"{platform.url('notifier')}/v1/notifications",
            params={"iccid": iccid},
            headers=operator,
        )
        return answer if any(n["sent_at"] for n in answer.json()) else None

    assert_offsets("GET notifier /v1/notifications", wait_until(sent, what="a sent mail"))

    # A refund, for the refund endpoint: the platform fails every order for this card.
    failing = traveller.bind_new_card()
    faulted = httpx.post(
        f"{platform.url('esim')}/sandbox/faults", json={"iccid": failing, "mode": "fail"}
    )
    assert faulted.is_success, faulted.text
    refunded = traveller.renew(failing, "card_ok").json()["renewal_id"]
    traveller.wait_for_status(refunded, "REFUNDED", timeout=120)
    assert_offsets(
        "GET billing /v1/refunds/{id}",
        httpx.get(f"{platform.url('billing')}/v1/refunds/{refunded}", headers=operator),
    )
    assert_offsets("GET /v1/renewals/{id} (refunded)", traveller.get(f"/v1/renewals/{refunded}"))
