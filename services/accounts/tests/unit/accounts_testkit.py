"""Shared bits of the accounts unit tests."""

from esim_core.db import Database
from esim_core.outbox import OutboxMessage
from sqlmodel import col, select

ICCID = "8944500102198304826"
OTHER_ICCID = "8944500102198304834"
CODE = "LPA:1$smdp.sandbox.esim.local$ABC"


async def published(database: Database, event_type: str | None = None) -> list[OutboxMessage]:
    """The outbox rows, oldest first, optionally of one type."""
    async with database.session() as session:
        query = select(OutboxMessage).order_by(col(OutboxMessage.id))
        if event_type is not None:
            query = query.where(OutboxMessage.event_type == event_type)
        return list((await session.exec(query)).all())
