"""within_round: the tries of one outside call inside a round of due work."""

from typing import Any

import pytest
from esim_core.outside import retry
from esim_core.outside.retry import TryPolicy, within_round


class Unavailable(Exception):
    """The transient kind."""


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr(retry.asyncio, "sleep", sleep)
    return slept


def failing(times: int, error: Exception) -> Any:
    calls = 0

    async def call() -> str:
        nonlocal calls
        calls += 1
        if calls <= times:
            raise error
        return f"answered on try {calls}"

    return call


async def test_an_answer_on_the_first_try_waits_for_nothing(waits: list[float]) -> None:
    policy = TryPolicy(attempts=4)
    assert await within_round("x", failing(0, Unavailable()), policy, Unavailable) == (
        "answered on try 1"
    )
    assert waits == []


async def test_transient_errors_are_tried_again_with_growing_jittered_waits(
    waits: list[float],
) -> None:
    policy = TryPolicy(attempts=4, wait_multiplier_s=0.1, wait_max_s=0.25)
    answer = await within_round("x", failing(3, Unavailable()), policy, Unavailable)
    assert answer == "answered on try 4"
    assert len(waits) == 3
    for wait, ceiling in zip(waits, [0.1, 0.2, 0.25], strict=True):
        assert 0 <= wait <= ceiling


async def test_the_last_transient_error_is_raised(waits: list[float]) -> None:
    with pytest.raises(Unavailable):
        await within_round("x", failing(9, Unavailable()), TryPolicy(attempts=3), Unavailable)
    assert len(waits) == 2


async def test_other_errors_are_not_tried_again(waits: list[float]) -> None:
    with pytest.raises(ValueError, match="refused"):
        await within_round("x", failing(1, ValueError("refused")), TryPolicy(), Unavailable)
    assert waits == []
