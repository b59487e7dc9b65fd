"""The rules: what each bundle status means, poll and retry pacing, ids and keys."""

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from provisioning.domain import (
    FollowUpRules,
    activation_id_for,
    event_id,
    failure_reason,
    next_due,
    order_key,
    poll_delay,
    retry_delay,
    verdict,
)

RULES = FollowUpRules(
    poll_interval_s=0.5, poll_interval_max_s=5.0, retry_backoff_s=1.0, retry_backoff_max_s=120.0
)


@pytest.mark.parametrize(
    ("status", "meaning"),
    [
        ("processing", "pending"),
        ("active", "activated"),
        ("queued", "activated"),
        ("depleted", "activated"),
        ("expired", "activated"),
        ("failed", "failed"),
        ("revoked", "failed"),
        ("ACTIVE", "unexpected"),
        ("", "unexpected"),
    ],
)
def test_what_a_bundle_status_means(status: str, meaning: str) -> None:
    assert verdict(status) == meaning


def test_the_failure_reason_is_the_platforms_where_it_gives_one() -> None:
    assert failure_reason("failed", "bundle_rejected") == "bundle_rejected"
    assert failure_reason("failed", None) == "bundle_failed"
    assert failure_reason("revoked", None) == "bundle_revoked"


def test_polls_back_off_gently_up_to_the_cap() -> None:
    delays = [poll_delay(polls, RULES) for polls in range(8)]
    assert delays[:3] == [0.5, 0.75, 1.125]
    assert delays == sorted(delays)
    assert delays[-1] == 5.0


def test_retries_double_with_jitter_up_to_the_cap() -> None:
    for rounds, base in [(1, 1.0), (2, 2.0), (3, 4.0), (10, 120.0)]:
        delay = retry_delay(rounds, RULES)
        assert 0.75 * base <= delay <= base


def test_the_next_round_is_capped_at_the_deadline() -> None:
    now = datetime(2026, 11, 24, tzinfo=UTC)
    assert next_due(now, 5, now + timedelta(seconds=60)) == now + timedelta(seconds=5)
    assert next_due(now, 500, now + timedelta(seconds=60)) == now + timedelta(seconds=60)


def test_ids_and_keys_derive_from_the_renewal() -> None:
    renewal_id = uuid.uuid4()
    assert order_key(renewal_id) == f"bundle:{renewal_id}"
    assert activation_id_for(renewal_id) == activation_id_for(str(renewal_id))
    assert activation_id_for(renewal_id) != activation_id_for(uuid.uuid4())
    assert event_id("profile-activated", renewal_id) != event_id("activation-failed", renewal_id)
