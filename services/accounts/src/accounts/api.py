"""The accounts HTTP API for frontends: users, tokens, plans, cards and renewals."""

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated
from uuid import NAMESPACE_URL, UUID, uuid4, uuid5

from esim_core.clock import as_utc, utcnow
from esim_core.web.problems import ProblemError
from esim_core.web.problems import problem_responses as problems
from esim_schemas import CardBound, Money, PaymentDetails, RenewalRequested
from fastapi import APIRouter, Depends, Header, Query, Request, Response, status
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from accounts.auth import AuthParts, client_address, guarded
from accounts.cardplans import card_status, plan_entry, plans_of
from accounts.domain import (
    NotCancellableError,
    SagaStatus,
)
from accounts.handlers import (
    RenewalSaga,
    fingerprint_of,
    record_step,
    saga_from_request,
)
from accounts.lifecycle_api import (
    build_lifecycle_router,
    priced_plan,
    promotion_problem,
    promotion_problems,
)
from accounts.planwatch import PlanWatcher, disable_auto_renew
from accounts.promotions import PromotionError, redeem
from accounts.schemas import (
    AutoRenewUpdate,
    CardBind,
    CardPublic,
    PlanHistoryEntry,
    PlanPublic,
    QueuedPlan,
    RenewalAccepted,
    RenewalCreate,
    RenewalPublic,
    TimelineStep,
    UserCreate,
    UserPublic,
    UserUpdate,
    user_public,
)
from accounts.store import Card, CardPlan, Plan, Renewal, RenewalStep, User
from accounts.tokens import TokenError

_KEYS = uuid5(NAMESPACE_URL, "https://esim.example/accounts/idempotency-keys")
oauth2 = OAuth2PasswordBearer(tokenUrl="/v1/auth/token", auto_error=False)


def build_router(parts: AuthParts, saga: RenewalSaga) -> APIRouter:
    """The API's routes, bound to the service's database, outbox, sessions and saga."""
    router = APIRouter(prefix="/v1")
    database, outbox, settings = parts.database, parts.outbox, parts.settings
    watcher = PlanWatcher(database, outbox)

    # Every route opens its own unit of work and commits it before answering; none holds two at
    # once (on SQLite each takes the write lock, so nesting them would deadlock).
    async def current_user(token: Annotated[str | None, Depends(oauth2)]) -> User:
        challenge = {"WWW-Authenticate": "Bearer"}
        if not token:
            raise ProblemError(
                401, "an access token is required", kind="unauthorized", headers=challenge
            )
        try:
            return await parts.sessions.caller(token)
        except TokenError as error:
            raise ProblemError(401, str(error), kind="unauthorized", headers=challenge) from error

    Caller = Annotated[User, Depends(current_user)]

    async def own_card(unit: AsyncSession, caller: User, iccid: str) -> Card:
        card = await unit.get(Card, iccid)
        if card is None or card.user_id != caller.id:
            raise ProblemError(404, f"no card {iccid} on your account", kind="card-not-found")
        return card

    @router.post(
        "/users",
        status_code=status.HTTP_201_CREATED,
        tags=["users"],
        responses=problems(409, 422, 429, 503),
    )
    async def register(body: UserCreate, request: Request) -> UserPublic:
        """Register a traveller."""
        email = body.email.lower()
        async with guarded():
            await parts.limiter.hit(
                "registrations from this address",
                settings.limit_registrations_address,
                client_address(request),
            )
            await parts.limiter.hit("registrations", settings.limit_registrations_account, email)
        user = User(
            id=str(uuid4()),
            email=email,
            password_hash=await parts.passwords.hash(body.password),
            name=body.name,
            phone=body.phone,
            locale=body.locale,
        )
        try:
            async with database.session() as unit:
                if (await unit.exec(select(User).where(User.email == email))).first():
                    raise ProblemError(409, f"{email} is already registered", kind="email-taken")
                unit.add(user)
        except IntegrityError as error:
            raise ProblemError(409, f"{email} is already registered", kind="email-taken") from error
        return user_public(user)

    @router.get("/users/me", tags=["users"], responses=problems(401))
    async def me(caller: Caller) -> UserPublic:
        """The caller's account."""
        return user_public(caller)

    @router.patch("/users/me", tags=["users"], responses=problems(401, 422))
    async def update_me(caller: Caller, body: UserUpdate) -> UserPublic:
        """Change the caller's name, phone (E.164; null removes it), locale or channels."""
        given = body.model_fields_set
        async with database.session() as unit:
            user = await unit.get(User, caller.id)
            if user is None:
                raise ProblemError(401, "the caller no longer exists", kind="unauthorized")
            if "name" in given:
                user.name = body.name
            if "phone" in given:
                user.phone = body.phone
            if "locale" in given and body.locale is not None:
                user.locale = body.locale
            if "notify" in given and body.notify is not None:
                user.notify_email = body.notify.email
                user.notify_sms = body.notify.sms
            unit.add(user)
            # The notifier addresses people per card from CardBound: tell it again for each
            # card, so its messages follow the new phone, language and SMS choice.
            cards = (await unit.exec(select(Card).where(Card.user_id == user.id))).all()
            for card in cards:
                outbox.add(unit, card_bound(user, card.iccid))
        return user_public(user)

    @router.get("/plans", tags=["plans"], responses=problems(422))
    async def plans(
        country: Annotated[
            str | None, Query(pattern=r"^[A-Za-z]{2}$", description="ISO 3166 alpha-2")
        ] = None,
        currency: Annotated[str, Query(pattern=r"^(CNY|USD)$")] = "USD",
    ) -> list[PlanPublic]:
        """The plans on sale, optionally for one country."""
        async with database.session() as unit:
            query = select(Plan).where(col(Plan.available).is_(True)).order_by(col(Plan.code))
            rows = (await unit.exec(query)).all()
        wanted = country.upper() if country else None
        return [
            PlanPublic(
                code=plan.code,
                name=plan.name,
                kind=plan.kind,
                data_mb=plan.data_mb,
                validity_days=plan.validity_days,
                countries=plan.countries,
                price=Money(amount=plan.prices[currency], currency=currency),
            )
            for plan in rows
            if (wanted is None or wanted in plan.countries) and currency in plan.prices
        ]

    @router.post(
        "/cards",
        status_code=status.HTTP_201_CREATED,
        tags=["cards"],
        responses={
            200: {"description": "already bound to the caller"},
            **problems(401, 404, 409, 422),
        },
    )
    async def bind_card(body: CardBind, caller: Caller, response: Response) -> CardPublic:
        """Bind a card to the caller with the activation code printed with it."""
        async with database.session() as unit:
            # Locked: travellers binding one card at once take turns, so one of them owns it
            # and the others get 409 (PostgreSQL would otherwise let each overwrite the last).
            card = await unit.get(Card, body.iccid, with_for_update=True)
            if card is None or card.activation_code != body.activation_code:
                # One answer for both, so card numbers cannot be probed.
                raise ProblemError(
                    404, f"no card {body.iccid} with that activation code", kind="card-not-found"
                )
            if card.user_id == caller.id:
                response.status_code = status.HTTP_200_OK
                return card_public(card)
            if card.user_id is not None:
                raise ProblemError(
                    409, f"card {body.iccid} is bound to another account", kind="card-taken"
                )
            card.user_id = caller.id
            card.bound_at = utcnow()
            unit.add(card)
            outbox.add(unit, card_bound(caller, card.iccid))
        return card_public(card)

    @router.get("/cards", tags=["cards"], responses=problems(401))
    async def cards(caller: Caller) -> list[CardPublic]:
        """The caller's cards."""
        async with database.session() as unit:
            query = select(Card).where(Card.user_id == caller.id).order_by(col(Card.iccid))
            found = (await unit.exec(query)).all()
            plans = await plans_of(unit, [card.iccid for card in found])
            return [card_public(card, plans.get(card.iccid, ())) for card in found]

    @router.get("/cards/{iccid}", tags=["cards"], responses=problems(401, 404, 422))
    async def card(caller: Caller, iccid: str) -> CardPublic:
        """One of the caller's cards: plan, data left (as measured when), validity, queue."""
        async with database.session() as unit:
            found = await own_card(unit, caller, iccid)
            plans = await plans_of(unit, [iccid])
            return card_public(found, plans.get(iccid, ()))

    @router.get("/cards/{iccid}/plans", tags=["cards"], responses=problems(401, 404, 422))
    async def card_plans(caller: Caller, iccid: str) -> list[PlanHistoryEntry]:
        """The card's plans, newest first: queued, live, and those that expired or were used up."""
        async with database.session() as unit:
            await own_card(unit, caller, iccid)
            plans = (await plans_of(unit, [iccid])).get(iccid, [])
        now = utcnow()
        entries = [
            PlanHistoryEntry.model_validate(plan_entry(plan, now))
            for plan in plans
            if plan.valid_from is not None
        ]
        return sorted(entries, key=lambda entry: entry.valid_from, reverse=True)

    @router.put("/cards/{iccid}/auto-renew", tags=["cards"], responses=problems(401, 404, 422))
    async def auto_renew(caller: Caller, iccid: str, body: AutoRenewUpdate) -> CardPublic:
        """Turn automatic renewal on (with a plan and a way to pay) or off."""
        async with database.session() as unit:
            found = await own_card(unit, caller, iccid)
            if body.enabled:
                assert body.plan_code is not None and body.payment is not None
                plan = await unit.get(Plan, body.plan_code)
                if plan is None or not plan.available:
                    raise ProblemError(
                        422, f"plan {body.plan_code!r} is not on sale", kind="unknown-plan"
                    )
                cap = body.monthly_cap
                if cap is not None and cap.currency not in plan.prices:
                    raise ProblemError(
                        422,
                        f"plan {plan.code!r} is not sold in {cap.currency}, the cap's currency",
                        kind="cap-currency",
                    )
                found.auto_renew_plan_code = plan.code
                found.auto_renew_method = body.payment.method
                found.auto_renew_token = body.payment.token
                found.auto_renew_cap_amount = cap.amount if cap is not None else None
                found.auto_renew_cap_currency = cap.currency if cap is not None else None
                found.auto_renew = True
                # A plan whose auto-renew lead has passed already is renewed at once.
                await watcher.rearm(unit, iccid)
            else:
                disable_auto_renew(found)
            unit.add(found)
            plans = await plans_of(unit, [iccid])
        return card_public(found, plans.get(iccid, ()))

    @router.post(
        "/cards/{iccid}/renewals",
        status_code=status.HTTP_202_ACCEPTED,
        tags=["renewals"],
        responses=promotion_problems(401, 404, 409, 422),
    )
    async def renew(
        caller: Caller,
        iccid: str,
        body: RenewalCreate,
        response: Response,
        idempotency_key: Annotated[
            str | None, Header(min_length=1, max_length=255, description="retry-safe key")
        ] = None,
    ) -> RenewalAccepted:
        """Renew a card: the saga starts and runs asynchronously; follow it at the renewal URL."""
        renewal_id = renewal_id_for(caller.id, idempotency_key)

        def repeated(existing: Renewal, request: RenewalRequested) -> RenewalAccepted:
            if existing.user_id != caller.id or existing.fingerprint != fingerprint_of(request):
                raise ProblemError(
                    409,
                    "this Idempotency-Key was already used for a different renewal request",
                    kind="idempotency-key-reused",
                )
            response.headers["Location"] = f"/v1/renewals/{renewal_id}"
            return RenewalAccepted(renewal_id=renewal_id, status=existing.status)

        request: RenewalRequested | None = None
        try:
            async with database.session() as unit:
                found = await own_card(unit, caller, iccid)
                request = RenewalRequested(
                    renewal_id=renewal_id,
                    user_id=caller.id,
                    iccid=found.iccid,
                    plan_code=body.plan_code,
                    payment=PaymentDetails(method=body.payment.method, token=body.payment.token),
                    start=body.start,
                    requested_at=datetime.now(UTC),
                    locale=caller.locale,
                    channel="accounts-api",
                    promo_code=body.promo_code,
                )
                existing = await unit.get(Renewal, str(renewal_id))
                if existing is not None:
                    return repeated(existing, request)
                _, price, currency = await priced_plan(unit, body.plan_code, caller.locale)
                if body.promo_code is not None:
                    # Redeemed here, with the renewal, so a code that cannot be had is a 4xx
                    # now; the saga finds the redemption and applies it.
                    await redeem(
                        unit,
                        body.promo_code,
                        renewal_id=str(renewal_id),
                        user_id=caller.id,
                        iccid=found.iccid,
                        price=price,
                        currency=currency,
                        now=utcnow(),
                    )
                saga = saga_from_request(request)
                record_step(unit, saga, "requested")
                outbox.add(unit, request, event_id=requested_event_id(renewal_id))
        except (IntegrityError, PromotionError) as error:
            # The same key in a request running alongside this one, which stored the renewal
            # first (on PostgreSQL both get past the check above, and the other one holds the
            # code): answer as for a repeat.
            async with database.session() as unit:
                existing = await unit.get(Renewal, str(renewal_id))
            if existing is not None and request is not None:
                return repeated(existing, request)
            if isinstance(error, PromotionError):
                raise promotion_problem(error) from error
            raise
        response.headers["Location"] = f"/v1/renewals/{renewal_id}"
        return RenewalAccepted(renewal_id=renewal_id, status=SagaStatus.REQUESTED)

    async def own_renewal(
        unit: AsyncSession, caller: User, renewal_id: UUID, *, lock: bool = False
    ) -> Renewal:
        found = await unit.get(Renewal, str(renewal_id), with_for_update=lock)
        if found is None or found.user_id != caller.id:
            raise ProblemError(
                404, f"no renewal {renewal_id} on your account", kind="renewal-not-found"
            )
        return found

    @router.post(
        "/renewals/{renewal_id}/cancel",
        status_code=status.HTTP_202_ACCEPTED,
        tags=["renewals"],
        responses=problems(401, 404, 409, 422),
    )
    async def cancel_renewal(
        caller: Caller, renewal_id: UUID, response: Response
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
        response.headers["Location"] = f"/v1/renewals/{renewal_id}"
        return RenewalAccepted(renewal_id=renewal_id, status=found.status)

    @router.get("/renewals/{renewal_id}", tags=["renewals"], responses=problems(401, 404, 422))
    async def renewal(caller: Caller, renewal_id: UUID) -> RenewalPublic:
        """A renewal's status and the timeline of its steps."""
        async with database.session() as unit:
            saga = await own_renewal(unit, caller, renewal_id)
            query = (
                select(RenewalStep)
                .where(RenewalStep.renewal_id == saga.renewal_id)
                .order_by(col(RenewalStep.id))
            )
            steps = (await unit.exec(query)).all()
        price = (
            Money(amount=saga.price_amount, currency=saga.currency)
            if saga.price_amount is not None and saga.currency is not None
            else None
        )
        return RenewalPublic(
            renewal_id=UUID(saga.renewal_id),
            iccid=saga.iccid,
            plan_code=saga.plan_code,
            status=saga.status,
            start=saga.start,
            price=price,
            discount=(
                Money(amount=saga.discount_amount, currency=saga.currency)
                if saga.discount_amount is not None and saga.currency is not None
                else None
            ),
            promo_code=saga.promo_code,
            reason=saga.reason,
            detail=saga.detail,
            valid_from=_maybe_utc(saga.valid_from),
            valid_until=_maybe_utc(saga.valid_until),
            bundle_state=saga.bundle_state,
            created_at=as_utc(saga.created_at),
            updated_at=as_utc(saga.updated_at),
            timeline=[
                TimelineStep(step=s.step, status=s.status, at=as_utc(s.at), detail=s.detail)
                for s in steps
            ],
        )

    router.include_router(build_lifecycle_router(parts, current_user, own_card))
    return router


def requested_event_id(renewal_id: UUID) -> str:
    """The id of the RenewalRequested that the HTTP API publishes for a renewal."""
    return str(uuid5(_KEYS, f"requested:{renewal_id}"))


def renewal_id_for(user_id: str, idempotency_key: str | None) -> UUID:
    """The renewal_id: the key itself when it is a UUID, else derived from the caller and key."""
    if idempotency_key is None:
        return uuid4()
    try:
        return UUID(idempotency_key)
    except ValueError:
        return uuid5(_KEYS, f"{user_id}:{idempotency_key}")


def card_bound(user: User, iccid: str) -> CardBound:
    """Whom the notifier writes to about a card: the holder's address, phone and language."""
    return CardBound(
        user_id=user.id,
        iccid=iccid,
        email=user.email,
        phone=user.phone if user.notify_sms else None,
        locale=user.locale,
    )


def card_public(card: Card, plans: Sequence[CardPlan] = ()) -> CardPublic:
    """A card's status as the API shows it: from its plans as the platform measured them."""
    status = card_status(plans, utcnow())
    queued = [QueuedPlan.model_validate(item) for item in status.pop("queued")]
    return CardPublic(
        iccid=card.iccid,
        queued=queued,
        auto_renew=card.auto_renew,
        auto_renew_plan_code=card.auto_renew_plan_code,
        auto_renew_monthly_cap=(
            Money(amount=card.auto_renew_cap_amount, currency=card.auto_renew_cap_currency)
            if card.auto_renew_cap_amount is not None and card.auto_renew_cap_currency
            else None
        ),
        **status,
    )


def _maybe_utc(value: datetime | None) -> datetime | None:
    return as_utc(value) if value is not None else None
