"""Accounts unit fixtures: a throwaway SQLite database, the outbox, the saga, the API."""

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
