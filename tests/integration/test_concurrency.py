"""Requests that race each other: the answers are the same on SQLite and on PostgreSQL.

SQLite runs one write transaction at a time; PostgreSQL runs them side by side (read committed),
so a check-then-write that is safe on the first needs a row lock or a unique key on the second.
"""

import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.support.client import Traveller, next_card
from tests.support.infra import Platform

pytestmark = pytest.mark.integration

RACERS = 6


def test_one_card_bound_by_several_travellers_at_once_has_one_owner(platform: Platform) -> None:
    """About 8 s: six users are registered first, each registration hashing a password."""
    travellers = [Traveller.register(platform) for _ in range(RACERS)]
    iccid, code = next_card(platform)

    def bind(traveller: Traveller) -> httpx.Response:
        return httpx.post(
            f"{platform.url('accounts')}/v1/cards",
            json={"iccid": iccid, "activation_code": code},
            headers=traveller.headers,
            timeout=30,
        )

    with ThreadPoolExecutor(RACERS) as pool:
        answers = list(pool.map(bind, travellers))

    codes = sorted(answer.status_code for answer in answers)
    assert codes == [201] + [409] * (RACERS - 1), [a.text for a in answers]
    [owner] = [t for t, a in zip(travellers, answers, strict=True) if a.status_code == 201]
    assert owner.get(f"/v1/cards/{iccid}").status_code == 200
    others = [t for t in travellers if t is not owner]
    assert all(t.get(f"/v1/cards/{iccid}").status_code == 404 for t in others)


def test_one_idempotency_key_sent_several_times_at_once_starts_one_renewal(
    platform: Platform,
) -> None:
    traveller = Traveller.register(platform)
    iccid = traveller.bind_new_card()
    key = f"retry-{uuid.uuid4()}"

    with ThreadPoolExecutor(RACERS) as pool:
        answers = list(pool.map(lambda _: traveller.renew(iccid, key=key), range(RACERS)))

    assert [a.status_code for a in answers] == [202] * RACERS, [a.text for a in answers]
    [renewal_id] = {answer.json()["renewal_id"] for answer in answers}
    saga = traveller.wait_for_status(renewal_id, "ACTIVATED")
    assert [step["step"] for step in saga["timeline"]].count("requested") == 1
