"""The notifier's HTTP API: what it sent (or tried to send) for a card or a renewal."""

from typing import Annotated
from uuid import UUID

from esim_core.persistence.db import Database
from esim_core.service import ServiceRuntime
from esim_core.web.operator import OperatorAuth
from esim_core.web.problems import ProblemError, problem_responses
from esim_core.web.rows import IccidFilter, Limit, newest_rows, row_view
from esim_schemas.types import UtcDatetime
from fastapi import APIRouter, FastAPI, Query
from pydantic import BaseModel, Field

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
        return row_view(cls, row)


def notifications_router(database: Database) -> APIRouter:
    """`GET /v1/notifications?iccid=` (or `?renewal_id=`), newest first."""
    router = APIRouter(prefix="/v1", tags=["notifications"])

    @router.get("/notifications", responses=problem_responses(401, 422))
    async def list_notifications(
        iccid: IccidFilter = None,
        renewal_id: Annotated[UUID | None, Query(description="a renewal's id")] = None,
        limit: Limit = 100,
    ) -> list[NotificationPublic]:
        """List the notifications for a card or a renewal (or both at once), newest first."""
        if iccid is None and renewal_id is None:
            raise ProblemError(
                422,
                "Give the card's ICCID (?iccid=) or a renewal id (?renewal_id=).",
                kind="validation",
                errors=[{"field": "query.iccid", "message": "required", "type": "missing"}],
            )
        filters = [
            (Notification.iccid, iccid),
            (Notification.renewal_id, str(renewal_id) if renewal_id is not None else None),
        ]
        rows = await newest_rows(database, Notification, filters, limit)
        return [NotificationPublic.of(row) for row in rows]

    return router


def http_app(runtime: ServiceRuntime, operator: OperatorAuth) -> FastAPI:
    """The HTTP surface: health and metrics open, the send log behind the operator token."""
    return runtime.operator_app(
        "eSIM notifier",
        operator,
        notifications_router(runtime.database),
        description="Tells travellers by e-mail what happened to their renewals.",
    )
