"""backoff: waits that grow by a factor up to a cap, cut at random by up to their jitter."""

import pytest
from esim_core.duework.backoff import backoff


def test_without_jitter_the_wait_grows_by_the_factor_up_to_the_cap() -> None:
    assert [backoff(n, 1.0, 10.0) for n in range(1, 7)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert [backoff(n, 0.5, 5.0, factor=1.5) for n in range(1, 4)] == [0.5, 0.75, 1.125]


def test_an_attempt_below_one_waits_the_first_wait() -> None:
    assert backoff(0, 3.0, 10.0) == 3.0


@pytest.mark.parametrize("jitter", [0.2, 0.25, 1.0])
def test_jitter_cuts_the_wait_by_at_most_its_share(jitter: float) -> None:
    waits = [backoff(3, 1.0, 10.0, jitter=jitter) for _ in range(500)]
    assert all((1 - jitter) * 4.0 <= wait <= 4.0 for wait in waits)
    # Spread, not one value: a stampede after an outage is what jitter is for.
    assert max(waits) - min(waits) > jitter * 4.0 / 2


def test_jitter_applies_to_the_capped_wait() -> None:
    waits = [backoff(20, 1.0, 10.0, jitter=0.25) for _ in range(200)]
    assert all(7.5 <= wait <= 10.0 for wait in waits)


def test_a_wait_after_thousands_of_failures_in_a_row_is_the_cap() -> None:
    # A loop that waits out an hour-long outage counts its failures past 2 ** 1024.
    assert backoff(5_000, 0.25, 5.0) == 5.0
    assert 2.5 <= backoff(10**9, 0.25, 5.0, jitter=0.5) <= 5.0
