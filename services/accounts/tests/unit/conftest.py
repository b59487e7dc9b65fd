"""Accounts unit fixtures: a throwaway SQLite database, the outbox, the saga, the API.

Hypothesis profiles: `ci` (chosen when CI=true) replays the same examples on every run, so a red
CI is reproducible; `dev` (the default elsewhere) explores new examples each run and keeps
failing ones in `.hypothesis/`; `thorough` runs many more. `HYPOTHESIS_PROFILE` picks one.
A failing example is printed either way, with a `@reproduce_failure` blob.
"""

import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from accounts.api import build_router
from accounts.auth import AuthParts, build_auth_router
from accounts.handlers import RenewalSaga
from accounts.inventory import seed_catalogue
from accounts.limits import RateLimiter
from accounts.passwords import Passwords
from accounts.resets import ResetCodes
from accounts.sessions import Sessions
from accounts.settings import AccountsSettings
from accounts.store import TABLES, Card
from accounts.tokens import TokenIssuer
from accounts_testkit import CODE, ICCID, OTHER_ICCID
from esim_core.messaging.inbox import InboxEntry
from esim_core.messaging.outbox import Outbox, OutboxMessage
from esim_core.persistence.db import Database
from esim_core.sealing import Sealer
from esim_core.settings import Topics
from esim_core.web.problems import install_problem_handlers
from fakeredis import FakeAsyncRedis
from fastapi import FastAPI
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


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[Database]:
    db = Database(f"sqlite+aiosqlite:///{tmp_path}/accounts.sqlite")
    await db.create_tables([OutboxMessage, InboxEntry, *TABLES])
    await seed_catalogue(db)
    async with db.session() as session:
        session.add(Card(iccid=ICCID, activation_code=CODE))
        session.add(Card(iccid=OTHER_ICCID, activation_code=CODE))
    yield db
    await db.close()


@pytest.fixture
def outbox() -> Outbox:
    return Outbox("/services/accounts", Topics())


@pytest.fixture
def saga(outbox: Outbox) -> RenewalSaga:
    return RenewalSaga(outbox)


SEAL_KEY = "s" * 40


@pytest.fixture
def redis() -> FakeAsyncRedis:
    return FakeAsyncRedis()


@pytest.fixture
def accounts_settings(request: pytest.FixtureRequest) -> AccountsSettings:
    """The defaults, or those a test overrides with `indirect` parametrization."""
    return AccountsSettings(**getattr(request, "param", {}))


@pytest.fixture
def parts(
    database: Database, outbox: Outbox, redis: FakeAsyncRedis, accounts_settings: AccountsSettings
) -> AuthParts:
    tokens = TokenIssuer("k" * 40, access_ttl_s=600, refresh_ttl_s=3600)
    return AuthParts(
        database=database,
        outbox=outbox,
        sessions=Sessions(database, tokens),
        # The cheapest Argon2 parameters: the tests are about the flows, not the cost.
        passwords=Passwords(time_cost=1, memory_kib=8192),
        limiter=RateLimiter(redis),
        codes=ResetCodes(redis, b"pepper", ttl_s=900, max_tries=5),
        sealer=Sealer(SEAL_KEY),
        settings=accounts_settings,
    )


@pytest.fixture
async def client(parts: AuthParts, saga: RenewalSaga) -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    install_problem_handlers(app)
    # As uvicorn runs it (proxy_headers): X-Forwarded-For from the trusted local proxy counts.
    app.add_middleware(ProxyHeadersMiddleware, trusted_hosts="127.0.0.1")
    app.include_router(build_auth_router(parts))
    app.include_router(build_router(parts, saga))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://accounts") as http:
        yield http
