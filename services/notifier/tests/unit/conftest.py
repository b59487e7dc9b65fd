"""Fixtures: a notifier wired to a FakeMailer and a SQLite file."""

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
from esim_core.testing import with_tables
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
    async with AsyncExitStack() as built:

        async def make(smtp: Mailer | None = None, **overrides: Any) -> Harness:
            chosen = smtp or mailer
            notifier = bootstrap.build(settings_for(tmp_path, **overrides), mailer=chosen, sms=sms)
            await built.enter_async_context(with_tables(notifier.runtime))
            return Harness(notifier, mailer)

        yield make


@pytest.fixture
async def harness(make_harness: Callable[..., Awaitable[Harness]]) -> Harness:
    return await make_harness()
