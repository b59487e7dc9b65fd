"""Fixtures: billing wired to a FakeGateway and a SQLite file, with tries that never wait."""

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from billing import bootstrap
from billing.bootstrap import Billing
from billing.settings import BillingSettings
from billing_testkit import FakeGateway, router_of
from esim_core.outside.retry import TryPolicy
from esim_core.persistence.db import Database
from esim_core.testing import with_tables

NO_WAIT = TryPolicy(attempts=4, wait_multiplier_s=0, wait_max_s=0)


def settings_for(tmp_path: Path, **overrides: Any) -> BillingSettings:
    values: dict[str, Any] = {
        "database_url": f"sqlite+aiosqlite:///{tmp_path}/billing.sqlite",
        "dunning_schedule_s": (30.0, 120.0, 600.0),
        "max_transient_rounds": 5,
    }
    return BillingSettings(**(values | overrides))


@pytest.fixture
def gateway() -> FakeGateway:
    return FakeGateway()


@pytest.fixture
async def billing(tmp_path: Path, gateway: FakeGateway) -> AsyncIterator[Billing]:
    built = bootstrap.build(settings_for(tmp_path), gateway=router_of(gateway), tries=NO_WAIT)
    async with with_tables(built.runtime):
        yield built


@pytest.fixture
def database(billing: Billing) -> Database:
    database: Database = billing.runtime.database
    return database
