"""The notifier's HTTP API: what it sent (or tried to send) for a card or a renewal."""

from typing import Annotated
from uuid import UUID

from esim_core.clock import as_utc
from esim_core.observability.telemetry import refresh_on_scrape, scrape_gauges
from esim_core.persistence.db import Database
from esim_core.service import ServiceRuntime
from esim_core.web.operator import OperatorAuth, outbox_router
from esim_core.web.problems import ProblemError, problem_responses
from esim_schemas.types import Iccid, UtcDatetime
from fastapi import APIRouter, FastAPI, Query
from pydantic import BaseModel, Field
from sqlmodel import col, select

from notifier.store import Notification


class NotificationPublic(BaseModel):
    """One notification as the API shows it; never the message body."""

    id: str
    kind: str = Field(description="profile_activated, payment_failed, payment_refunded, ...")
    channel: str = Field(description="email or sms")
    recipient: str | None = Field(description="the address it went to; null until a send round")
    subject: str | None
    status: str = Field(description="pending, sent, failed or undeliverable")
    detail: str | None = Field(description="why it is waiting, failed or undeliverable")
    locale: str | None
    iccid: str | None = Field(description="the card it is about; null for account messages")
    renewal_id: str | None
    event_id: str = Field(description="the CloudEvents id of the event it is about")
    created_at: UtcDatetime
    sent_at: UtcDatetime | None

    @classmethod
    def of(cls, row: Notification) -> "NotificationPublic":
        """The public view of a stored notification."""
        return cls(
            id=row.id,
            kind=row.kind,
            channel=row.channel,
            recipient=row.recipient,
            subject=row.subject,
            status=row.status,
            detail=row.detail,
            locale=row.locale,
            iccid=row.iccid,
            renewal_id=row.renewal_id,
            event_id=row.event_id,
            created_at=as_utc(row.created_at),
            sent_at=as_utc(row.sent_at),
        )


def notifications_router(database: Database) -> APIRouter:
    """`GET /v1/notifications?iccid=` (or `?renewal_id=`), newest first."""
    router = APIRouter(prefix="/v1", tags=["notifications"])

    @router.get("/notifications", responses=problem_responses(401, 422))
    async def list_notifications(
        iccid: Annotated[
            Iccid | None,
            Query(description="the card's ICCID: 19 or 20 digits with a valid Luhn check digit"),
        ] = None,
        renewal_id: Annotated[UUID | None, Query(description="a renewal's id")] = None,
        limit: Annotated[int, Query(ge=1, le=500, description="at most this many")] = 100,
    ) -> list[NotificationPublic]:
        """List the notifications for a card or a renewal (or both at once), newest first."""
        if iccid is None and renewal_id is None:
            raise ProblemError(
                422,
                "Give the card's ICCID (?iccid=) or a renewal id (?renewal_id=).",
                kind="validation",
                errors=[{"field": "query.iccid", "message": "required", "type": "missing"}],
            )
        query = select(Notification)
        if iccid is not None:
            query = query.where(col(Notification.iccid) == iccid)
        if renewal_id is not None:
            query = query.where(col(Notification.renewal_id) == str(renewal_id))
        query = query.order_by(col(Notification.created_at).desc(), col(Notification.id)).limit(
            limit
        )
        async with database.session() as session:
            rows = (await session.exec(query)).all()
        return [NotificationPublic.of(row) for row in rows]

    return router


def http_app(runtime: ServiceRuntime, operator: OperatorAuth) -> FastAPI:
    """The HTTP surface: health and metrics open, the send log behind the operator token."""
    app = runtime.http_app(
        "eSIM notifier",
        routers=[
            operator.guard(
                notifications_router(runtime.database),
                outbox_router(runtime.database, runtime.name),
            )
        ],
        description="Tells travellers by e-mail what happened to their renewals.",
    )
    return refresh_on_scrape(app, scrape_gauges(runtime))
