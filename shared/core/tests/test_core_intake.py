"""The intake limit: new work's partitions paused at the limit, resumed below it, never overshot."""

import logging
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiokafka import TopicPartition
from esim_core.messaging.consumer import fetch_batch
from esim_core.messaging.intake import LOG_EVERY_S, Intake

REQUESTS = "esim.renewal.requested"
SETTLED = "esim.payment.settled"


@dataclass
class Record:
    topic: str
    partition: int = 0


@dataclass
class FakeConsumer:
    """What `fetch_batch` and `Intake` use of an AIOKafkaConsumer."""

    assigned: set[TopicPartition]
    waiting: list[Record] = field(default_factory=list)
    paused_now: set[TopicPartition] = field(default_factory=set)
    fetches: list[tuple[int, int]] = field(default_factory=list)

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    def paused(self) -> set[TopicPartition]:
        return set(self.paused_now)

    def pause(self, *partitions: TopicPartition) -> None:
        self.paused_now |= set(partitions)

    def resume(self, *partitions: TopicPartition) -> None:
        self.paused_now -= set(partitions)

    async def getmany(self, *, timeout_ms: int, max_records: int) -> dict[Any, list[Record]]:
        self.fetches.append((timeout_ms, max_records))
        ready = [
            record
            for record in self.waiting
            if TopicPartition(record.topic, record.partition) not in self.paused_now
        ][:max_records]
        for record in ready:
            self.waiting.remove(record)
        return {"all": ready}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Counted:
    """The work in flight as the service would count it; `fail` makes the count raise."""

    def __init__(self, value: int) -> None:
        self.value = value
        self.calls = 0
        self.fail = False

    async def __call__(self) -> int:
        self.calls += 1
        if self.fail:
            raise ConnectionError("database unreachable")
        return self.value


def partitions(topic: str, *numbers: int) -> set[TopicPartition]:
    return {TopicPartition(topic, number) for number in numbers}


def consumer_with(requests: int, settled: int) -> FakeConsumer:
    return FakeConsumer(
        assigned=partitions(REQUESTS, 0, 1) | partitions(SETTLED, 0, 1),
        waiting=[Record(REQUESTS, n % 2) for n in range(requests)]
        + [Record(SETTLED, n % 2) for n in range(settled)],
    )


async def test_at_the_limit_new_work_waits_while_the_rest_flows() -> None:
    counted = Counted(10)
    intake = Intake("accounts", [REQUESTS], counted, limit=10, clock=Clock())
    consumer = consumer_with(requests=5, settled=3)

    records = await fetch_batch(consumer, max_records=100, intake=intake)  # type: ignore[arg-type]

    assert [record.topic for record in records] == [SETTLED] * 3
    assert intake.held
    assert consumer.paused_now == partitions(REQUESTS, 0, 1)
    # A held intake is looked at again soon, not after a whole poll.
    assert consumer.fetches == [(intake.recheck_ms, 100)]


async def test_below_the_limit_a_fetch_takes_no_more_than_the_room_left() -> None:
    clock = Clock()
    counted = Counted(7)
    intake = Intake("accounts", [REQUESTS], counted, limit=10, clock=clock)
    consumer = consumer_with(requests=8, settled=0)

    first = await fetch_batch(consumer, max_records=100, intake=intake)  # type: ignore[arg-type]
    assert len(first) == 3  # the room left: 10 - 7
    # Before the next count, what was taken counts against the room: nothing more comes.
    second = await fetch_batch(consumer, max_records=100, intake=intake)  # type: ignore[arg-type]
    assert second == ()
    assert intake.held and consumer.paused_now == partitions(REQUESTS, 0, 1)

    # Sagas ended meanwhile: the next count opens the intake again, in order.
    counted.value = 4
    clock.now += intake.check_s
    third = await fetch_batch(consumer, max_records=100, intake=intake)  # type: ignore[arg-type]
    assert len(third) == 5  # the five left, within the room of six
    assert not intake.held and not consumer.paused_now


async def test_the_count_is_asked_at_most_every_check_interval() -> None:
    clock = Clock()
    counted = Counted(0)
    intake = Intake("accounts", [REQUESTS], counted, limit=1000, check_s=0.5, clock=clock)
    consumer = consumer_with(requests=0, settled=0)
    for _ in range(5):
        await fetch_batch(consumer, max_records=100, intake=intake)  # type: ignore[arg-type]
    assert counted.calls == 1
    clock.now += 0.5
    await fetch_batch(consumer, max_records=100, intake=intake)  # type: ignore[arg-type]
    assert counted.calls == 2


async def test_a_failed_count_keeps_the_intake_as_it_was() -> None:
    clock = Clock()
    counted = Counted(10)
    intake = Intake("accounts", [REQUESTS], counted, limit=10, clock=clock)
    consumer = consumer_with(requests=2, settled=0)
    await fetch_batch(consumer, max_records=100, intake=intake)  # type: ignore[arg-type]
    assert intake.held

    counted.fail = True
    clock.now += intake.check_s
    records = await fetch_batch(consumer, max_records=100, intake=intake)  # type: ignore[arg-type]
    assert records == () and intake.held

    counted.fail, counted.value = False, 0
    clock.now += intake.check_s
    records = await fetch_batch(consumer, max_records=100, intake=intake)  # type: ignore[arg-type]
    assert len(records) == 2 and not intake.held


async def test_partitions_assigned_by_a_rebalance_are_held_too() -> None:
    counted = Counted(10)
    intake = Intake("accounts", [REQUESTS], counted, limit=10, clock=Clock())
    consumer = consumer_with(requests=0, settled=0)
    await fetch_batch(consumer, max_records=100, intake=intake)  # type: ignore[arg-type]
    consumer.assigned |= partitions(REQUESTS, 2)
    consumer.waiting.append(Record(REQUESTS, 2))

    records = await fetch_batch(consumer, max_records=100, intake=intake)  # type: ignore[arg-type]

    assert records == ()
    assert consumer.paused_now == partitions(REQUESTS, 0, 1, 2)


def test_a_limit_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Intake("accounts", [REQUESTS], Counted(0), limit=0)


async def test_an_intake_turning_often_logs_one_line_each_way_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    counted = Counted(10)
    intake = Intake("accounts", [REQUESTS], counted, limit=10, clock=clock)
    consumer = consumer_with(requests=0, settled=0)
    caplog.set_level(logging.INFO, logger="esim_core.messaging.intake")
    for turn in range(10):  # held, open, held, ... within 10 s
        counted.value = 10 if turn % 2 == 0 else 0
        await fetch_batch(consumer, max_records=100, intake=intake)  # type: ignore[arg-type]
        clock.now += 1
    lines = [record.getMessage() for record in caplog.records if record.levelno == logging.INFO]
    assert [line.split(":")[1].split("(")[0].strip() for line in lines] == [
        "holding back new work",
        "taking new work",
    ]

    clock.now += LOG_EVERY_S
    counted.value = 10
    await fetch_batch(consumer, max_records=100, intake=intake)  # type: ignore[arg-type]
    assert "8 turns without a line before this" in caplog.records[-1].getMessage()
