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
from accounts.handlers import RenewalSaga
from accounts.inventory import seed_catalogue
from accounts.security import TokenIssuer
from accounts.store import TABLES, Card
from accounts_testkit import CODE, ICCID, OTHER_ICCID
from esim_core.db import Database
from esim_core.http import install_problem_handlers
from esim_core.inbox import InboxEntry
from esim_core.outbox import Outbox, OutboxMessage
from esim_core.settings import Topics
from fastapi import FastAPI
from hypothesis import settings

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


@pytest.fixture
async def client(database: Database, outbox: Outbox) -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    install_problem_handlers(app)
    app.include_router(build_router(database, outbox, TokenIssuer("k" * 40, 600)))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://accounts") as http:
        yield http
