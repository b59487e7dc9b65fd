"""The renewals routes: a card's renewals (request one, list them), a renewal, its cancel."""

import base64
import binascii
import json
from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import UUID, uuid4

import sqlalchemy as sql
from esim_core import ids
from esim_core.clock import as_utc, utcnow
from esim_core.web.problems import ProblemError
from esim_core.web.problems import problem_responses as problems
from esim_schemas import PaymentDetails, RenewalRequested
from fastapi import APIRouter, Header, Query, Response, status
from sqlalchemy import and_, bindparam, or_
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from accounts.bodies import stored_money
from accounts.cards.binding import card_not_found, own_card
from accounts.catalogue.pricing import sale_price
from accounts.catalogue.problems import promotion_problem, promotion_problems
from accounts.catalogue.promotions import PromotionError, redeem
from accounts.deps import CurrentUser, DatabaseDep, OutboxDep, SagaDep
from accounts.domain import NotCancellableError, SagaStatus, payment_refusal
from accounts.renewals.models import (
    PaymentActionOut,
    RenewalAccepted,
    RenewalCreate,
    RenewalPage,
    RenewalPublic,
    RenewalSummary,
    TimelineStep,
)
from accounts.renewals.saga import fingerprint_of, record_step, saga_from_request
from accounts.store import SAGAS, Card, Plan, Renewal, RenewalStep, User

MAX_PAGE = 100
# What a renewal request over HTTP checks first, in one statement built once: the card's owner
# (no row: no such card), a renewal already under the request's key, and the plan's prices.
_RENEW_FACTS: sql.Select[*tuple[Any, ...]] = (
    sql.select(
        col(Card.user_id).label("owner"),
        col(Renewal.user_id).label("renewal_user_id"),
        col(Renewal.fingerprint),
        col(Renewal.status),
        col(Plan.available),
        col(Plan.prices),
    )
    .select_from(Card)
    .outerjoin(Renewal, col(Renewal.renewal_id) == bindparam("renewal_id"))
    .outerjoin(Plan, col(Plan.code) == bindparam("plan"))
    .where(col(Card.iccid) == bindparam("iccid"))
)
_KEYS = ids.namespace("accounts/idempotency-keys")

renewals_router = APIRouter(prefix="/v1", tags=["renewals"])


@renewals_router.post(
    "/cards/{iccid}/renewals",
    status_code=status.HTTP_202_ACCEPTED,
    responses=promotion_problems(401, 404, 409, 422),
)
async def renew(
    caller: CurrentUser,
    iccid: str,
    body: RenewalCreate,
    response: Response,
    database: DatabaseDep,
    outbox: OutboxDep,
    idempotency_key: Annotated[
        str | None, Header(min_length=1, max_length=255, description="retry-safe key")
    ] = None,
) -> RenewalAccepted:
    """Renew a card: the saga starts and runs asynchronously; follow it at the renewal URL.

    `payment.token` is required for `card`; PayPal and Alipay without one ask the buyer at the
    provider's page (the renewal shows `payment_action` while it waits).
    """
    refusal = payment_refusal(body.payment.method, body.payment.token, buyer_present=True)
    if refusal is not None:
        raise payment_field_problem("token", refusal)
    renewal_id = renewal_id_for(caller.id, idempotency_key)

    def repeated(
        user_id: str, fingerprint: str, status: str, request: RenewalRequested
    ) -> RenewalAccepted:
        if user_id != caller.id or fingerprint != fingerprint_of(request):
            raise ProblemError(
                409,
                "this Idempotency-Key was already used for a different renewal request",
                kind="idempotency-key-reused",
            )
        return accepted(response, renewal_id, status)

    request: RenewalRequested | None = None
    try:
        async with database.session() as unit:
            # The card's owner, a renewal under this key and the plan's prices: one statement.
            connection = await unit.connection()
            keys = {"iccid": iccid, "renewal_id": str(renewal_id), "plan": body.plan_code}
            found = (await connection.execute(_RENEW_FACTS, keys)).first()
            if found is None or found.owner != caller.id:
                raise card_not_found(iccid)
            request = RenewalRequested(
                renewal_id=renewal_id,
                user_id=caller.id,
                iccid=iccid,
                plan_code=body.plan_code,
                payment=PaymentDetails(
                    method=body.payment.method,
                    token=body.payment.token,
                    return_url=body.payment.return_url,
                ),
                start=body.start,
                requested_at=datetime.now(UTC),
                locale=caller.locale,
                channel="accounts-api",
                promo_code=body.promo_code,
            )
            if found.renewal_user_id is not None:
                return repeated(found.renewal_user_id, found.fingerprint, found.status, request)
            on_sale = found.prices if found.available else None
            price, currency = sale_price(body.plan_code, on_sale, caller.locale)
            if body.promo_code is not None:
                # Redeemed here, with the renewal, so a code that cannot be had is a 4xx
                # now; the saga finds the redemption and applies it.
                await redeem(
                    unit,
                    body.promo_code,
                    renewal_id=str(renewal_id),
                    user_id=caller.id,
                    iccid=iccid,
                    price=price,
                    currency=currency,
                    now=utcnow(),
                )
            saga = saga_from_request(request)
            record_step(unit, saga, "requested")
            await SAGAS.save(unit, saga)
            outbox.add(unit, request, event_id=requested_event_id(renewal_id))
    except (IntegrityError, PromotionError) as error:
        # The same key in a request running alongside this one, which stored the renewal
        # first (on PostgreSQL both get past the check above, and the other one holds the
        # code): answer as for a repeat.
        async with database.session() as unit:
            existing = await unit.get(Renewal, str(renewal_id))
        if existing is not None and request is not None:
            return repeated(existing.user_id, existing.fingerprint, existing.status, request)
        if isinstance(error, PromotionError):
            raise promotion_problem(error) from error
        raise
    return accepted(response, renewal_id, SagaStatus.REQUESTED)


@renewals_router.get("/cards/{iccid}/renewals", responses=problems(400, 401, 404, 422))
async def card_renewals(
    caller: CurrentUser,
    iccid: str,
    database: DatabaseDep,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="renewals per page")] = 20,
    cursor: Annotated[
        str | None, Query(max_length=512, description="`next_cursor` of the page before")
    ] = None,
) -> RenewalPage:
    """The card's renewals, newest first, a page at a time."""
    async with database.session() as unit:
        await own_card(unit, caller, iccid)
        query = select(Renewal).where(
            col(Renewal.iccid) == iccid, col(Renewal.user_id) == caller.id
        )
        if cursor is not None:
            created_at, renewal_id = decode_cursor(cursor)
            query = query.where(
                or_(
                    col(Renewal.created_at) < created_at,
                    and_(
                        col(Renewal.created_at) == created_at,
                        col(Renewal.renewal_id) < renewal_id,
                    ),
                )
            )
        query = query.order_by(col(Renewal.created_at).desc(), col(Renewal.renewal_id).desc())
        rows = list((await unit.exec(query.limit(limit + 1))).all())
    more = len(rows) > limit
    page = rows[:limit]
    return RenewalPage(
        items=[summary(row) for row in page],
        next_cursor=encode_cursor(page[-1]) if more else None,
    )


@renewals_router.post(
    "/renewals/{renewal_id}/cancel",
    status_code=status.HTTP_202_ACCEPTED,
    responses=problems(401, 404, 409, 422),
)
async def cancel_renewal(
    caller: CurrentUser,
    renewal_id: UUID,
    response: Response,
    database: DatabaseDep,
    saga: SagaDep,
) -> RenewalAccepted:
    """Cancel a queued plan that has not started: the bundle is cancelled at the platform
    and the payment refunded in full; the renewal ends `CANCELLED` (follow it at its URL).

    409 `not-cancellable` for anything else: a plan that is live or has started, a renewal
    that is not `ACTIVATED`, one already being cancelled, or one whose payment accounts
    has not seen confirmed yet (a moment after the activation, at most).
    """
    async with database.session() as unit:
        # Locked: two cancels of one renewal take turns, and the second one is refused.
        found = await own_renewal(unit, caller, renewal_id, lock=True)
        try:
            await saga.request_cancel(unit, found, utcnow())
        except NotCancellableError as refused:
            raise ProblemError(409, str(refused), kind="not-cancellable") from refused
    return accepted(response, renewal_id, found.status)


@renewals_router.get("/renewals/{renewal_id}", responses=problems(401, 404, 422))
async def renewal(caller: CurrentUser, renewal_id: UUID, database: DatabaseDep) -> RenewalPublic:
    """A renewal's status and the timeline of its steps."""
    async with database.session(snapshot=True) as unit:  # the status and steps of one moment
        saga = await own_renewal(unit, caller, renewal_id)
        query = (
            select(RenewalStep)
            .where(RenewalStep.renewal_id == saga.renewal_id)
            .order_by(col(RenewalStep.id))
        )
        steps = (await unit.exec(query)).all()
    return RenewalPublic(
        renewal_id=UUID(saga.renewal_id),
        iccid=saga.iccid,
        plan_code=saga.plan_code,
        status=saga.status,
        start=saga.start,
        price=stored_money(saga.price_amount, saga.currency),
        discount=stored_money(saga.discount_amount, saga.currency),
        promo_code=saga.promo_code,
        reason=saga.reason,
        detail=saga.detail,
        valid_from=saga.valid_from,
        valid_until=saga.valid_until,
        bundle_state=saga.bundle_state,
        payment_action=payment_action_of(saga),
        created_at=saga.created_at,
        updated_at=saga.updated_at,
        timeline=[
            TimelineStep(step=s.step, status=s.status, at=s.at, detail=s.detail) for s in steps
        ],
    )


def accepted(response: Response, renewal_id: UUID, status: str) -> RenewalAccepted:
    """A renewal accepted (202): its status, and its URL in `Location` to follow it at."""
    response.headers["Location"] = f"/v1/renewals/{renewal_id}"
    return RenewalAccepted(renewal_id=renewal_id, status=status)


def payment_action_of(saga: Renewal) -> PaymentActionOut | None:
    """What the buyer must do at the provider, while the saga waits for it (else None)."""
    if (
        saga.status != SagaStatus.PAYMENT_ACTION_REQUIRED
        or saga.action_url is None
        or saga.action_expires_at is None
    ):
        return None
    return PaymentActionOut(type="redirect", url=saga.action_url, expires_at=saga.action_expires_at)


def payment_field_problem(field: str, detail: str, *, kind: str = "validation") -> ProblemError:
    """A 422 problem naming one field of the request's `payment` object."""
    name = f"body.payment.{field}"
    return ProblemError(
        422,
        f"The request is not valid: {name}: {detail}",
        kind=kind,
        errors=[{"field": name, "message": detail, "type": "value_error"}],
    )


async def own_renewal(
    unit: AsyncSession, caller: User, renewal_id: UUID, *, lock: bool = False
) -> Renewal:
    found = await unit.get(Renewal, str(renewal_id), with_for_update=lock)
    if found is None or found.user_id != caller.id:
        raise ProblemError(
            404, f"no renewal {renewal_id} on your account", kind="renewal-not-found"
        )
    return found


def encode_cursor(saga: Renewal) -> str:
    """An opaque cursor: the position of the last renewal of a page."""
    raw = json.dumps({"t": as_utc(saga.created_at).isoformat(), "id": saga.renewal_id})
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The position a cursor names, or a 400 problem for one this API did not hand out."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        position = json.loads(raw)
        return as_utc(datetime.fromisoformat(position["t"])), str(UUID(position["id"]))
    except (binascii.Error, ValueError, KeyError, TypeError) as error:
        raise ProblemError(
            400, "the cursor is not one this API handed out", kind="invalid-cursor"
        ) from error


def summary(saga: Renewal) -> RenewalSummary:
    """One renewal as a card's history lists it."""
    return RenewalSummary(
        renewal_id=UUID(saga.renewal_id),
        plan_code=saga.plan_code,
        status=saga.status,
        start=saga.start,
        channel=saga.channel,
        price=stored_money(saga.price_amount, saga.currency),
        discount=stored_money(saga.discount_amount, saga.currency),
        promo_code=saga.promo_code if saga.discount_amount is not None else None,
        valid_from=saga.valid_from,
        valid_until=saga.valid_until,
        created_at=saga.created_at,
        updated_at=saga.updated_at,
    )


def requested_event_id(renewal_id: UUID) -> str:
    """The id of the RenewalRequested that the HTTP API publishes for a renewal."""
    return ids.derived_id(_KEYS, f"requested:{renewal_id}")


def renewal_id_for(user_id: str, idempotency_key: str | None) -> UUID:
    """The renewal_id: the key itself when it is a UUID, else derived from the caller and key."""
    if idempotency_key is None:
        return uuid4()
    try:
        return UUID(idempotency_key)
    except ValueError:
        return UUID(ids.derived_id(_KEYS, f"{user_id}:{idempotency_key}"))
