"""The eSIM platform's signed callbacks: order completed, usage threshold reached.

A callback is taken only with a valid HMAC-SHA256 signature over `<timestamp>.<raw body>` and
a timestamp within the tolerance; anything else is 401 and changes nothing. Its id is stored
with its effects in one transaction and kept for `PROVISIONING_CALLBACK_RETENTION_S`, so a
repeat (the platform resending, freshly signed, or an attacker replaying within the tolerance)
is answered 200 and does nothing. Callbacks only speed things up: polling finds the same
changes when a callback is lost or refused.
"""

import hashlib
import hmac
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from esim_core.clock import utcnow
from esim_core.duework.loop import made_due
from esim_core.duework.purge import Retention
from esim_core.messaging.outbox import Outbox
from esim_core.persistence.db import Database
from esim_core.web.problems import ProblemError, problem_responses
from fastapi import APIRouter, Request
from prometheus_client import Counter
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from provisioning.domain import ActivationState
from provisioning.store import Activation, PlatformCallback, activation_state_of_order
from provisioning.usage import Observation, locked_bundle, observe, watch_card

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Esim-Signature"
TIMESTAMP_HEADER = "X-Esim-Timestamp"

CALLBACKS = Counter(
    "esim_provisioning_callbacks_total", "eSIM platform callbacks, by outcome", ["outcome"]
)


class CallbackRefusedError(ProblemError):
    """A callback whose signature or timestamp does not hold: 401, nothing changes."""

    def __init__(self, detail: str) -> None:
        super().__init__(401, detail, kind="callback-refused")


def verify(
    secret: bytes,
    body: bytes,
    timestamp: str | None,
    signature: str | None,
    now: datetime,
    *,
    tolerance_s: float,
) -> None:
    """Check a callback's signature and timestamp.

    The signature header may carry several `v1=<hex>` values (a secret being rotated); one must
    match. Compared in constant time.

    Raises:
        CallbackRefusedError: a missing, malformed, wrong or stale signature.
    """
    if not timestamp or not signature:
        raise CallbackRefusedError(f"the {SIGNATURE_HEADER} and {TIMESTAMP_HEADER} are required")
    try:
        sent = datetime.fromtimestamp(int(timestamp), UTC)
    except (ValueError, OverflowError, OSError):
        raise CallbackRefusedError(f"{TIMESTAMP_HEADER} is not a Unix time") from None
    expected = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    offered = [part.strip().removeprefix("v1=") for part in signature.split(",")]
    if not any(hmac.compare_digest(expected, candidate) for candidate in offered):
        raise CallbackRefusedError("the callback signature does not match")
    if abs((now - sent).total_seconds()) > tolerance_s:
        raise CallbackRefusedError(
            f"the callback was signed at {sent.isoformat()}, more than {tolerance_s:g} s from now"
        )


class CallbackReceiver:
    """Applies verified callbacks; each in one transaction with its id."""

    def __init__(
        self,
        database: Database,
        outbox: Outbox,
        secret: str,
        *,
        tolerance_s: float,
        poll_later_s: float,
        after_commit: Callable[[], None] | None = None,
    ) -> None:
        self.database = database
        self.outbox = outbox
        self.secret = secret.encode()
        self.tolerance_s = tolerance_s
        self.poll_later_s = poll_later_s
        # Wakes the due-work loops: an order completion makes its activation due now.
        self.after_commit = after_commit

    async def receive(self, body: bytes, headers: dict[str, str]) -> dict[str, str]:
        """Verify and apply one callback; returns what became of it.

        Raises:
            CallbackRefusedError: the signature or timestamp does not hold.
            ProblemError: 400 for a signed body that is not a callback.
        """
        now = utcnow()
        try:
            verify(
                self.secret,
                body,
                headers.get(TIMESTAMP_HEADER.lower()),
                headers.get(SIGNATURE_HEADER.lower()),
                now,
                tolerance_s=self.tolerance_s,
            )
        except CallbackRefusedError as refused:
            CALLBACKS.labels("refused").inc()
            logger.warning("eSIM platform callback refused: %s", refused.detail)
            raise
        document = _document(body)
        callback_id, kind = str(document["id"]), str(document["type"])
        if not await self._may_apply(kind, document):
            # Nothing it could change (an order activated already, a kind not followed): no
            # write transaction, which on SQLite would queue behind every other writer.
            CALLBACKS.labels("ignored").inc()
            return {"status": "ignored", "id": callback_id}
        try:
            async with self.database.session() as session:
                if await session.get(PlatformCallback, callback_id) is not None:
                    CALLBACKS.labels("duplicate").inc()
                    return {"status": "duplicate", "id": callback_id}
                iccid = document.get("iccid")
                session.add(
                    PlatformCallback(
                        id=callback_id,
                        kind=kind[:64],
                        iccid=str(iccid)[:20] if iccid else None,
                        received_at=now,
                    )
                )
                outcome = await self._apply(session, kind, document, now)
        except IntegrityError:
            # The same callback taken by another request at the same moment; that one applied it.
            CALLBACKS.labels("duplicate").inc()
            return {"status": "duplicate", "id": callback_id}
        if outcome == "applied" and self.after_commit is not None:
            self.after_commit()
        CALLBACKS.labels(outcome).inc()
        logger.info("eSIM platform callback %s (%s): %s", callback_id, kind, outcome)
        return {"status": outcome, "id": callback_id}

    async def _may_apply(self, kind: str, document: dict[str, Any]) -> bool:
        """Whether a verified callback could change anything, read without a write lock.

        An `order.completed` only matters while its activation follows the order; a repeat
        or a stale one is answered as ignored, as `_apply` would, without recording its id
        (applying it again later changes nothing either: the activation is looked at anew).
        """
        order_id = document.get("order_id")
        if not isinstance(order_id, str) or kind not in ("order.completed", "usage.threshold"):
            return False
        if kind != "order.completed":
            return True
        async with self.database.session() as session:
            state = await activation_state_of_order(session, order_id)
        return state == ActivationState.FOLLOWING

    async def _apply(
        self, session: AsyncSession, kind: str, document: dict[str, Any], now: datetime
    ) -> str:
        order_id = document.get("order_id")
        if not isinstance(order_id, str):
            return "ignored"
        if kind == "order.completed":
            activation = (
                await session.exec(select(Activation).where(col(Activation.order_id) == order_id))
            ).first()
            if activation is None or activation.state != ActivationState.FOLLOWING:
                return "ignored"
            # The activation loop looks now instead of at its next poll, and decides as ever.
            activation.due_at = now
            session.add(activation)
            made_due(session, Activation)
            return "applied"
        if kind == "usage.threshold":
            bundle = await locked_bundle(session, order_id)
            if bundle is None:
                return "ignored"  # not live here yet; the poll after activation catches up
            if bundle.cancelled_at is not None:
                return "ignored"  # cancelled or replaced: nothing more to tell about it
            seen = Observation(
                order_id=order_id,
                status=str(document.get("status") or bundle.status),
                data_used_mb=_count(document.get("data_used_mb"), bundle.data_used_mb),
                as_of=_moment(document.get("occurred_at")) or now,
                data_mb=_count(document.get("data_mb"), bundle.data_mb),
                valid_from=_moment(document.get("valid_from")),
                valid_until=_moment(document.get("valid_until")),
            )
            observe(self.outbox, session, bundle, seen)
            await watch_card(session, bundle.iccid, now + timedelta(seconds=self.poll_later_s))
            return "applied"
        return "ignored"


def callback_retention(keep_s: float) -> Retention:
    """The window of taken callbacks' ids (`received_at`, indexed): a repeat within is dropped."""
    return Retention("callback", PlatformCallback, "received_at", keep_s)


def _document(body: bytes) -> dict[str, Any]:
    try:
        document = json.loads(body)
    except ValueError:
        raise ProblemError(400, "the callback body is not JSON", kind="invalid-callback") from None
    if not isinstance(document, dict) or not document.get("id") or not document.get("type"):
        raise ProblemError(400, "a callback needs an id and a type", kind="invalid-callback")
    return document


def _count(value: Any, fallback: int) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return fallback


def _moment(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def build_callback_router(receiver: CallbackReceiver) -> APIRouter:
    """`POST /callbacks/esim`: outside `/v1/` (no operator token); the signature is the auth."""
    router = APIRouter(tags=["callbacks"])

    @router.post("/callbacks/esim", responses=problem_responses(400, 401))
    async def esim_callback(request: Request) -> dict[str, str]:
        """Take a signed callback of the eSIM platform; 401 for a bad signature or timestamp."""
        body = await request.body()
        return await receiver.receive(body, {k.lower(): v for k, v in request.headers.items()})

    return router
