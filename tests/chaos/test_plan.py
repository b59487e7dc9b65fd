"""The chaos plan: even the short CI run has a SIGTERM stop and crashes the broker and Redis."""

import itertools
import random
from pathlib import Path

import pytest

from tests.chaos.mayhem import Action, Plan, simulate
from tests.support.infra import Platform, service_of


def kinds_of(plan: Plan, took: float, longest: float = 1000) -> tuple[list[str], list[float]]:
    actions: list[Action] = []

    def record(action: Action) -> float:
        actions.append(action)
        return took

    moments = simulate(plan, record, longest=longest)
    return [action.kind for action in actions], moments


@pytest.mark.parametrize("took", [5.0, 12.0, 40.0])
@pytest.mark.parametrize("seed", range(10))
def test_a_ninety_second_run_has_every_kind_of_crash(seed: int, took: float) -> None:
    kinds, moments = kinds_of(Plan(90, random.Random(seed)), took)

    assert kinds.count("kill-broker") == kinds.count("kill-redis") == 1
    assert "stop" in kinds
    assert "kill" in kinds
    # One at a time: 20-30 s apart (10 s once the 90 s are over, for what is still owed), or
    # right after the one before when that took longer.
    gaps = [later - earlier for earlier, later in itertools.pairwise(moments)]
    assert all(gap >= min(10.0, took) for gap in gaps)
    assert moments[-1] < 90 + 3 * max(10.0, took)


def test_a_run_on_postgresql_kills_the_server_once_between_the_broker_and_redis() -> None:
    plan = Plan(300, random.Random(2), postgres=True)
    described = plan.describe()
    kinds = [action.kind for action in iter(lambda: plan.next(400), None)]

    assert described.index("kafka") < described.index("postgres") < described.index("redis")
    assert kinds[:3] == ["kill-broker", "kill-postgres", "kill-redis"]
    assert kinds.count("kill-postgres") == 1


@pytest.mark.parametrize("seed", range(5))
def test_a_ninety_second_run_on_postgresql_has_the_server_crash_too(seed: int) -> None:
    kinds, _ = kinds_of(Plan(90, random.Random(seed), postgres=True), 12.0)

    assert kinds.count("kill-postgres") == 1
    assert kinds.count("kill-broker") == kinds.count("kill-redis") == 1


def test_every_third_service_action_is_a_stop() -> None:
    kinds, moments = kinds_of(Plan(600, random.Random(7), broker=False, redis=False), 5.0)

    assert kinds[:6] == ["kill", "stop", "kill", "kill", "stop", "kill"]
    assert all(20 <= b - a <= 30 for a, b in itertools.pairwise(moments))
    assert moments[-1] < 600


def test_slow_restarts_make_fewer_crashes_not_closer_ones() -> None:
    kinds, moments = kinds_of(Plan(300, random.Random(1)), 45.0)

    assert all(b - a >= 45 for a, b in itertools.pairwise(moments))
    assert {"kill", "stop", "kill-broker", "kill-redis"} <= set(kinds)


def test_the_broker_and_redis_come_after_their_share_of_the_run() -> None:
    plan = Plan(300, random.Random(2))

    def at(elapsed: float) -> Action:
        action = plan.next(elapsed)
        assert action is not None
        return action

    early = [at(elapsed).kind for elapsed in (25, 50, 75, 100)]
    broker, between, redis = at(125), at(150), at(215)

    assert set(early) == {"kill", "stop"}
    assert broker == Action("kill-broker", "kafka")
    assert between.kind in {"kill", "stop"}
    assert redis == Action("kill-redis", "redis")
    assert plan.owed() == []
    assert plan.next(320) is None  # the run is over and owes nothing


def test_every_service_is_hit_in_four_service_actions() -> None:
    plan = Plan(600, random.Random(5), broker=False, redis=False)

    targets = []
    for elapsed in range(25, 225, 25):
        action = plan.next(elapsed)
        assert action is not None
        targets.append(action.target)

    assert (
        set(targets[:4]) == set(targets[4:]) == {"accounts", "billing", "provisioning", "notifier"}
    )


def test_no_broker_or_redis_crash_when_they_are_not_ours() -> None:
    kinds, _ = kinds_of(Plan(300, random.Random(3), broker=False, redis=False), 5.0)

    assert set(kinds) == {"kill", "stop"}


def test_with_replicas_each_process_is_hit_in_turn_one_at_a_time() -> None:
    replicas = Platform(Path("/unused"), "", "", replicas=2).service_processes
    plan = Plan(600, random.Random(5), broker=False, redis=False, targets=replicas)
    targets = [plan.next(10.0 * step) for step in range(8)]

    assert replicas == [
        "accounts", "accounts-2", "billing", "billing-2",
        "provisioning", "provisioning-2", "notifier", "notifier-2",
    ]  # fmt: skip
    assert sorted(action.target for action in targets if action is not None) == sorted(replicas)
    assert [service_of(name) for name in replicas[:2]] == ["accounts", "accounts"]
    assert service_of("esim") == "esim"
