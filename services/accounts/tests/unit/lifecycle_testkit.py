"""The accounts service as bootstrap wires it, over a SQLite file, with a clock tests move on."""

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from accounts.bootstrap import Accounts, build
from accounts.catalogue.plans import seed_catalogue
from accounts.catalogue.promotions import seed_promotions
from accounts.settings import AccountsSettings
from accounts.store import Card, PlanWatch, Renewal, User
from accounts_testkit import ICCID, Clock, RecordingPublisher, published
from esim_core.messaging.consumer import EventConsumer, MessageInfo
from esim_schemas import EventData, ProfileActivated, new_event
from sqlmodel import col, select

USER_ID = "u-1"
DAY = timedelta(days=1)


@dataclass
class Service:
    """One accounts process: its wiring, its consumer and the clock its rules run by."""

    accounts: Accounts
    consumer: EventConsumer
    clock: Clock
    offsets: list[int] = field(default_factory=lambda: [0])

    @property
    def database(self) -> Any:
        return self.accounts.runtime.database

    async def deliver(self, data: EventData, event_id: str | None = None) -> str:
        """Hand an event to the consumer as Kafka would; returns its id.

        A ProfileActivated of a renewal the test did not request gets a paid saga first.
        """
        if isinstance(data, ProfileActivated):
            await self._paid_saga(data)
        envelope = new_event(data, source="/tests", event_id=event_id)
        self.offsets[0] += 1
        info = MessageInfo(
            topic=self.accounts.runtime.topics.for_event(type(data)),
            partition=0,
            offset=self.offsets[0],
            key=ICCID.encode(),
        )
        await self.consumer.handle(envelope.to_json(), info)
        dead: Any = self.consumer.publisher
        assert not dead.sent, f"dead-lettered: {dead.sent[-1][2]}"
        return envelope.id

    async def _paid_saga(self, data: ProfileActivated) -> None:
        async with self.database.session() as session:
            if await session.get(Renewal, str(data.renewal_id)) is not None:
                return
            session.add(
                Renewal(
                    renewal_id=str(data.renewal_id),
                    fingerprint="-",
                    user_id=USER_ID,
                    iccid=data.iccid,
                    plan_code=data.plan_code,
                    payment_method="card",
                    start="after_current",
                    status="PAID",
                    payment_id=f"pay_{data.renewal_id}",
                )
            )

    async def sweep(self) -> int:
        """Work every plan row due by the service's clock, as the due loop would."""
        async with self.database.session() as session:
            due = (
                await session.exec(
                    select(PlanWatch.id).where(
                        col(PlanWatch.due_at).is_not(None), col(PlanWatch.due_at) <= self.clock()
                    )
                )
            ).all()
        for key in due:
            await self.accounts.watcher.work(key)
        return len(due)

    async def close(self) -> None:
        await self.database.close()
        await self.accounts.runtime.redis.aclose()


async def start_service(
    path: Path, clock: Clock, *, fresh: bool = True, **settings: Any
) -> Service:
    """Build accounts over the database file at `path` (a second call is a restart or a replica)."""
    options: dict[str, Any] = {
        "database_url": f"sqlite+aiosqlite:///{path}",
        "cards_csv": "",
        "consumer_retries": 1,
    }
    accounts = build(AccountsSettings(**(options | settings)), clock=clock)
    runtime = accounts.runtime
    if fresh:
        await runtime.database.create_tables(runtime.tables)
        await seed_catalogue(runtime.database)
        await seed_promotions(runtime.database)
        async with runtime.database.session() as session:
            session.add(
                User(id=USER_ID, email="u-1@example.com", password_hash="x", locale="zh-CN")
            )
            session.add(Card(iccid=ICCID, activation_code="LPA:1$x$y", user_id=USER_ID))
    consumer = runtime.subscribe()
    assert consumer is not None
    consumer.publisher = RecordingPublisher()
    return Service(accounts, consumer, clock)


def activated(
    start: datetime,
    days: int,
    *,
    renewal_id: uuid.UUID | None = None,
    state: str = "active",
    plan_code: str = "JP-30D-10GB",
) -> ProfileActivated:
    return ProfileActivated(
        renewal_id=renewal_id or uuid.uuid4(),
        iccid=ICCID,
        plan_code=plan_code,
        data_mb=10240,
        valid_from=start,
        valid_until=start + days * DAY,
        bundle_state=state,  # type: ignore[arg-type]
        platform_reference="ord_1",
        activated_at=start,
    )


async def events(service: Service, event_type: str) -> list[dict[str, Any]]:
    """The CloudEvents of a type in the service's outbox, oldest first."""
    return [json.loads(row.value) for row in await published(service.database, event_type)]


async def set_auto_renew(service: Service, on: bool = True, **card: Any) -> None:
    async with service.database.session() as session:
        found = await session.get(Card, ICCID)
        assert found is not None
        found.auto_renew = on
        found.auto_renew_plan_code = card.get("plan_code", "JP-30D-10GB")
        found.auto_renew_method = "card"
        found.auto_renew_token = card.get("token", "card_ok")
        found.auto_renew_cap_amount = card.get("cap")
        found.auto_renew_cap_currency = "CNY" if card.get("cap") is not None else None
        session.add(found)
        await service.accounts.watcher.rearm(session, ICCID)
