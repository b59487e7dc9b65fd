"""Accounts tables: users, the card inventory, the plan catalogue and the renewal saga."""

from datetime import datetime
from typing import Any

from esim_core.clock import utcnow
from sqlalchemy import JSON, Column, DateTime, UniqueConstraint, false, true
from sqlmodel import Field, SQLModel

from accounts.rows import Rows


def _time(**kwargs: Any) -> Any:
    return Field(sa_type=DateTime(timezone=True), **kwargs)


class User(SQLModel, table=True):
    """A traveller's account."""

    __tablename__ = "accounts_user"

    id: str = Field(primary_key=True, max_length=36)
    email: str = Field(unique=True, index=True, max_length=320)
    password_hash: str = Field(max_length=256)
    name: str | None = Field(default=None, max_length=128)
    phone: str | None = Field(default=None, max_length=32)
    locale: str = Field(default="en", max_length=8)
    notify_email: bool = Field(default=True, sa_column_kwargs={"server_default": true()})
    notify_sms: bool = Field(default=True, sa_column_kwargs={"server_default": true()})
    created_at: datetime = _time(default_factory=utcnow)
    password_changed_at: datetime | None = _time(default=None)


class UserSession(SQLModel, table=True):
    """One sign-in and the refresh tokens rotated from it (a family); revoked as a whole.

    Only the newest refresh token of a family works: one presented again after it was
    rotated is a stolen copy or a replay, and revokes the family (OAuth 2.0 Security BCP).
    """

    __tablename__ = "accounts_session"

    id: str = Field(primary_key=True, max_length=36)
    user_id: str = Field(index=True, max_length=36)
    refresh_jti: str = Field(max_length=36, description="the one refresh token that still works")
    created_at: datetime = _time(default_factory=utcnow)
    refreshed_at: datetime | None = _time(default=None)
    expires_at: datetime = _time()
    revoked_at: datetime | None = _time(default=None)
    revoked_reason: str | None = Field(default=None, max_length=32)


class Plan(SQLModel, table=True):
    """A plan of the catalogue, with a price per currency in minor units."""

    __tablename__ = "accounts_plan"

    code: str = Field(primary_key=True, max_length=64)
    name: str = Field(max_length=128)
    kind: str = Field(max_length=16)
    data_mb: int
    validity_days: int
    countries: list[str] = Field(sa_column=Column(JSON, nullable=False))
    prices: dict[str, int] = Field(sa_column=Column(JSON, nullable=False))
    available: bool = True


class Card(SQLModel, table=True):
    """An eSIM card of the inventory; bound to a user once they claim it with its code.

    What runs on it is in its `CardPlan` rows, not here.
    """

    __tablename__ = "accounts_card"

    iccid: str = Field(primary_key=True, max_length=20)
    activation_code: str = Field(max_length=256)
    user_id: str | None = Field(default=None, index=True, max_length=36)
    auto_renew: bool = False
    auto_renew_plan_code: str | None = Field(default=None, max_length=64)
    auto_renew_method: str | None = Field(default=None, max_length=16)
    auto_renew_token: str | None = Field(default=None, max_length=256, repr=False)
    auto_renew_return_url: str | None = Field(default=None, max_length=2048)
    auto_renew_cap_amount: int | None = Field(
        default=None, description="most auto-renewals may spend in a calendar month (minor units)"
    )
    auto_renew_cap_currency: str | None = Field(default=None, max_length=3)
    bound_at: datetime | None = _time(default=None)


class Renewal(SQLModel, table=True):
    """One renewal saga, keyed by its renewal_id."""

    __tablename__ = "accounts_renewal"

    renewal_id: str = Field(primary_key=True, max_length=36)
    fingerprint: str = Field(max_length=64)
    user_id: str = Field(index=True, max_length=64)
    iccid: str = Field(index=True, max_length=20)
    plan_code: str = Field(max_length=64)
    payment_method: str = Field(max_length=16)
    payment_token: str | None = Field(default=None, max_length=256, repr=False)
    payment_return_url: str | None = Field(
        default=None, max_length=2048, description="where the provider sends the buyer back"
    )
    start: str = Field(max_length=16)
    locale: str | None = Field(default=None, max_length=8)
    channel: str | None = Field(default=None, max_length=64)
    status: str = Field(max_length=24, index=True)
    price_amount: int | None = Field(default=None, description="what is charged, after discount")
    currency: str | None = Field(default=None, max_length=3)
    discount_amount: int | None = Field(default=None, description="what a promotion took off")
    promo_code: str | None = Field(default=None, max_length=32)
    data_mb: int | None = None
    validity_days: int | None = None
    payment_id: str | None = Field(default=None, max_length=64)
    payment_held: bool = Field(
        default=False,
        sa_column_kwargs={"server_default": false()},
        description="the payment is an authorization (money held), not yet captured",
    )
    action_url: str | None = Field(
        default=None, max_length=2048, description="where the buyer approves the payment"
    )
    action_expires_at: datetime | None = _time(default=None)
    activation_failure: str | None = Field(default=None, max_length=256)
    refund_requested: bool = False
    reason: str | None = Field(default=None, max_length=64)
    detail: str | None = Field(default=None, max_length=512)
    valid_from: datetime | None = _time(default=None)
    valid_until: datetime | None = _time(default=None)
    bundle_state: str | None = Field(default=None, max_length=16)
    deadline_at: datetime | None = _time(default=None, index=True)
    created_at: datetime = _time(default_factory=utcnow)
    updated_at: datetime = _time(default_factory=utcnow)


class RenewalStep(SQLModel, table=True):
    """One step of a saga's timeline: what happened, when, and the status it led to."""

    __tablename__ = "accounts_renewal_step"
    __table_args__ = (UniqueConstraint("renewal_id", "step", "event_id"),)

    id: int | None = Field(default=None, primary_key=True)
    renewal_id: str = Field(index=True, max_length=36)
    step: str = Field(max_length=64)
    status: str = Field(max_length=24)
    event_id: str = Field(default="", max_length=256)
    detail: str | None = Field(default=None, max_length=512)
    at: datetime = _time(default_factory=utcnow)


class CardPlan(SQLModel, table=True):
    """One bundle of a card, from its activation on: dates, state and measured use; the history.

    Filled by whichever of ProfileActivated, BundleStarted, BundleEnded and UsageUpdated comes
    first, so its terms may be missing until the activation arrives.
    """

    __tablename__ = "accounts_card_plan"

    renewal_id: str = Field(primary_key=True, max_length=36)
    iccid: str = Field(index=True, max_length=20)
    plan_code: str | None = Field(default=None, max_length=64)
    data_mb: int | None = None
    state: str | None = Field(default=None, max_length=16)
    valid_from: datetime | None = _time(default=None)
    valid_until: datetime | None = _time(default=None)
    data_used_mb: int | None = None
    usage_as_of: datetime | None = _time(default=None)
    started_at: datetime | None = _time(default=None)
    ended_at: datetime | None = _time(default=None)
    updated_at: datetime = _time(default_factory=utcnow)


class PlanWatch(SQLModel, table=True):
    """The lifecycle's due work for one plan of a card: its reminders and its auto-renewal.

    Durable due work (`due_at`, `lease_until`) keyed by the plan's renewal_id: what was done is
    kept on the row (`reminded_lead_s`, `auto_renewal_id`), so a reminder or an auto-renewal
    happens once per plan across restarts and replicas.
    """

    __tablename__ = "accounts_plan_watch"

    id: str = Field(primary_key=True, max_length=36, description="the plan's renewal_id")
    iccid: str = Field(index=True, max_length=20)
    plan_code: str = Field(max_length=64)
    valid_from: datetime = _time()
    valid_until: datetime = _time()
    reminded_lead_s: int | None = Field(
        default=None, description="the shortest reminder lead sent (or passed over) so far"
    )
    auto_renewal_id: str | None = Field(
        default=None, max_length=36, description="the auto-renewal requested for this plan"
    )
    depleted: bool = False
    ended: bool = False
    due_at: datetime | None = _time(default=None, index=True)
    lease_until: datetime | None = _time(default=None)
    updated_at: datetime = _time(default_factory=utcnow)


class Promotion(SQLModel, table=True):
    """A promotion code of the catalogue: a percentage or a fixed amount off, with limits.

    `redeemed` counts redemptions held or captured; it only moves in one guarded UPDATE, so the
    total limit holds under concurrent redemptions on SQLite and PostgreSQL alike.
    """

    __tablename__ = "accounts_promotion"

    code: str = Field(primary_key=True, max_length=32)
    percent_off: int | None = Field(default=None, description="1-100, or null for a fixed amount")
    amount_off: int | None = Field(default=None, description="minor units of `currency`")
    currency: str | None = Field(default=None, max_length=3)
    valid_from: datetime | None = _time(default=None)
    valid_until: datetime | None = _time(default=None)
    per_user_limit: int | None = Field(default=None, description="redemptions per user; null: any")
    total_limit: int | None = Field(default=None, description="redemptions in all; null: any")
    redeemed: int = 0
    public: bool = Field(
        default=False,
        sa_column_kwargs={"server_default": false()},
        description="shown to everyone on GET /v1/promotions while it runs; a code that is "
        "not public works only for those it was given to",
    )


class PromotionUse(SQLModel, table=True):
    """How many redemptions of a code one user holds: the per-user limit's guarded counter."""

    __tablename__ = "accounts_promotion_use"

    code: str = Field(primary_key=True, max_length=32)
    user_id: str = Field(primary_key=True, max_length=64)
    used: int = 0


class Redemption(SQLModel, table=True):
    """A promotion applied to one renewal (once: keyed by the renewal); released if unpaid."""

    __tablename__ = "accounts_redemption"

    renewal_id: str = Field(primary_key=True, max_length=36)
    code: str = Field(index=True, max_length=32)
    user_id: str = Field(index=True, max_length=64)
    iccid: str = Field(max_length=20)
    discount_amount: int
    currency: str = Field(max_length=3)
    released_at: datetime | None = _time(default=None)
    created_at: datetime = _time(default_factory=utcnow)


TABLES: list[type[SQLModel]] = [
    User,
    UserSession,
    Plan,
    Card,
    Renewal,
    RenewalStep,
    CardPlan,
    PlanWatch,
    Promotion,
    PromotionUse,
    Redemption,
]


# The rows the consumer's handlers read and write by key, with Core (`accounts.rows`).
#: The renewal sagas.
SAGAS: Rows[Renewal] = Rows(Renewal)
#: The travellers' accounts (built from a read, for the caller of every request).
USERS: Rows[User] = Rows(User)
#: The cards' plans, one per bundle.
CARD_PLANS: Rows[CardPlan] = Rows(CardPlan)
#: The plan watch's rows, one per plan.
PLAN_WATCHES: Rows[PlanWatch] = Rows(PlanWatch)
