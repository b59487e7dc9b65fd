"""Fixtures: a notifier wired to a FakeMailer and a SQLite file."""

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from notifier import bootstrap
from notifier.mail import Mailer
from notifier_testkit import FakeMailer, FakeSms, Harness, settings_for


@pytest.fixture
def mailer() -> FakeMailer:
    return FakeMailer()


@pytest.fixture
def sms() -> FakeSms:
    return FakeSms()


@pytest.fixture
async def make_harness(
    tmp_path: Path, mailer: FakeMailer, sms: FakeSms
) -> AsyncIterator[Callable[..., Awaitable[Harness]]]:
    """Build a notifier with settings overridden by keyword; closes what it built."""
    built: list[Harness] = []

    async def make(smtp: Mailer | None = None, **overrides: Any) -> Harness:
        chosen = smtp or mailer
        notifier = bootstrap.build(settings_for(tmp_path, **overrides), mailer=chosen, sms=sms)
        await notifier.runtime.database.create_tables(notifier.runtime.tables)
        harness = Harness(notifier, mailer)
        built.append(harness)
        return harness

    yield make
    for harness in built:
        await harness.runtime.database.close()
        await harness.runtime.redis.aclose()


@pytest.fixture
async def harness(make_harness: Callable[..., Awaitable[Harness]]) -> Harness:
    return await make_harness()
