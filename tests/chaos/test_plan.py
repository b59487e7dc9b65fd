"""The chaos plan: even the short CI run has a SIGTERM stop and crashes the broker and Redis."""

import itertools
import random

import pytest

from tests.chaos.mayhem import plan_actions


@pytest.mark.parametrize("seed", range(20))
def test_a_ninety_second_run_has_every_kind_of_crash_apart(seed: int) -> None:
    actions = plan_actions(90, random.Random(seed))

    kinds = [action.kind for action in actions]
    assert kinds.count("stop") >= 1
    assert kinds.count("kill") >= 1
    assert kinds.count("kill-broker") == kinds.count("kill-redis") == 1
    moments = [action.at_s for action in actions]
    assert moments == sorted(moments)
    assert all(0 < moment < 90 for moment in moments)
    # One outage at a time: every action has room before the next.
    assert all(later - earlier >= 5 for earlier, later in itertools.pairwise(moments))


def test_every_third_service_action_is_a_stop() -> None:
    actions = plan_actions(600, random.Random(7), broker=False, redis=False)

    assert [a.kind for a in actions][:6] == ["kill", "stop", "kill", "kill", "stop", "kill"]
    gaps = [b.at_s - a.at_s for a, b in itertools.pairwise(actions)]
    assert all(19.9 <= gap <= 30.1 for gap in gaps)


def test_no_broker_or_redis_crash_when_they_are_not_ours() -> None:
    actions = plan_actions(300, random.Random(3), broker=False, redis=False)

    assert {a.kind for a in actions} == {"kill", "stop"}
