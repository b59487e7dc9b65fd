"""Accounts unit fixtures: the service as its bootstrap wires it over fakes, and its API.

Hypothesis profiles: `ci` (chosen when CI=true) replays the same examples on every run, so a red
CI is reproducible; `dev` (the default elsewhere) explores new examples each run and keeps
failing ones in `.hypothesis/`; `thorough` runs many more. `HYPOTHESIS_PROFILE` picks one.
A failing example is printed either way, with a `@reproduce_failure` blob.
"""

import os
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from accounts.api import http_app
from accounts.bootstrap import Accounts, build
from accounts.catalogue.plans import seed_catalogue
from accounts.identity.parts import Identity
from accounts.renewals.saga import RenewalSaga
from accounts.settings import AccountsSettings
from accounts.store import Card
from accounts_testkit import CODE, ICCID, OTHER_ICCID
from esim_core.clock import utcnow
from esim_core.messaging.outbox import Outbox
from esim_core.persistence.db import Database
from esim_core.web.operator import OperatorAuth
from fakeredis import FakeAsyncRedis
from hypothesis import settings
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

# A saga example runs dozens of transactions: 120 keep the module under 10 s on an idle 2-core
# machine (and near 30 s when others load it hard).
EXAMPLES = 120
settings.register_profile(
    "ci", max_examples=EXAMPLES, deadline=None, derandomize=True, database=None, print_blob=True
)
settings.register_profile("dev", max_examples=EXAMPLES, deadline=None, print_blob=True)
settings.register_profile("thorough", max_examples=3000, deadline=None, print_blob=True)
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") == "true" else "dev")
)


SEAL_KEY = "s" * 40
OPERATOR_TOKEN = "operator-token-for-the-unit-tests"
# Known keys for the tests that forge or open them, and the cheapest Argon2 parameters: the
# tests are about the flows, not the cost.
TEST_SETTINGS: dict[str, Any] = {
    "jwt_secret": "k" * 40,
    "jwt_ttl_s": 600,
    "refresh_ttl_s": 3600,
    "RESET_CODE_KEY": SEAL_KEY,
    "password_time_cost": 1,
    "password_memory_kib": 8192,
    "cards_csv": "",
}


@pytest.fixture
def clock() -> Callable[[], datetime]:
    """The clock the saga and the plan watch run by; a module stops it with its own."""
    return utcnow


@pytest.fixture
def redis() -> FakeAsyncRedis:
    return FakeAsyncRedis()


@pytest.fixture
def accounts_settings(request: pytest.FixtureRequest, tmp_path: Path) -> AccountsSettings:
    """The test settings, or those a test overrides with `indirect` parametrization."""
    database_url = f"sqlite+aiosqlite:///{tmp_path}/accounts.sqlite"
    overrides = getattr(request, "param", {})
    return AccountsSettings(**(TEST_SETTINGS | {"database_url": database_url} | overrides))


@pytest.fixture
async def accounts(
    accounts_settings: AccountsSettings, clock: Callable[[], datetime], redis: FakeAsyncRedis
) -> AsyncIterator[Accounts]:
    """Accounts as its bootstrap wires it, over a fake Redis and a throwaway SQLite database."""
    built = build(accounts_settings, clock=clock, redis=redis)
    database = built.runtime.database
    await database.create_tables(built.runtime.tables)
    await seed_catalogue(database)
    async with database.session() as session:
        session.add(Card(iccid=ICCID, activation_code=CODE))
        session.add(Card(iccid=OTHER_ICCID, activation_code=CODE))
    yield built
    await database.close()
    await built.runtime.redis.aclose()


@pytest.fixture
def database(accounts: Accounts) -> Database:
    return accounts.runtime.database


@pytest.fixture
def outbox(accounts: Accounts) -> Outbox:
    return accounts.runtime.outbox


@pytest.fixture
def saga(accounts: Accounts) -> RenewalSaga:
    return accounts.saga


@pytest.fixture
def identity(accounts: Accounts) -> Identity:
    return accounts.identity


@pytest.fixture
async def client(accounts: Accounts) -> AsyncIterator[httpx.AsyncClient]:
    """The service's HTTP app as the bootstrap and `http_app` assemble it."""
    app = http_app(accounts, OperatorAuth(OPERATOR_TOKEN))
    # As uvicorn runs it (proxy_headers): X-Forwarded-For from the trusted local proxy counts.
    app.add_middleware(ProxyHeadersMiddleware, trusted_hosts="127.0.0.1")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://accounts") as http:
        yield http
