"""The one place where the accounts service is wired: runtime, saga, plan watch, identity."""

import hashlib
import hmac
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import partial

from esim_core.clock import utcnow
from esim_core.messaging.consumer import Route
from esim_core.persistence.db import Database
from esim_core.persistence.migrations import service_migrations
from esim_core.service import ServiceRuntime
from esim_schemas import events
from redis.asyncio import Redis

from accounts.cards import plans as cardplans
from accounts.cards.inventory import import_cards
from accounts.catalogue.plans import seed_catalogue
from accounts.catalogue.promotions import seed_promotions
from accounts.domain import Deadlines
from accounts.identity.limits import RateLimiter
from accounts.identity.parts import Identity
from accounts.identity.passwords import Passwords, hashes_within, memory_limit_bytes
from accounts.identity.resets import ResetCodes
from accounts.identity.sessions import Sessions, purge_sessions
from accounts.identity.tokens import TokenIssuer
from accounts.lifecycle.planwatch import PlanWatcher, chain
from accounts.lifecycle.rules import LifecycleRules
from accounts.renewals.deadlines import sagas_in_flight, sweep_deadlines
from accounts.renewals.saga import RenewalSaga
from accounts.settings import DEV_JWT_SECRET, AccountsSettings
from accounts.store import TABLES, PlanWatch

logger = logging.getLogger(__name__)

# services/accounts/migrations: the Alembic scripts applied at start.
MIGRATIONS = service_migrations(__file__)


@dataclass(frozen=True)
class Accounts:
    """The wired service: what its consumers, loops and HTTP routes (`accounts.deps`) use."""

    settings: AccountsSettings
    runtime: ServiceRuntime
    saga: RenewalSaga
    watcher: PlanWatcher
    identity: Identity


def build(
    settings: AccountsSettings,
    *,
    clock: Callable[[], datetime] = utcnow,
    redis: Redis | None = None,
) -> Accounts:
    """Wire the accounts service: its consumers, loops, seeding and what its routes use.

    Tests pass a `clock` to move the saga's deadlines on without waiting for them, and a
    `redis` (a fake) for the rate limits and reset codes.
    """
    runtime = ServiceRuntime("accounts", settings, TABLES, migrations=MIGRATIONS)
    deadlines = Deadlines(
        payment_s=settings.payment_deadline_s,
        activation_s=settings.activation_deadline_s,
        action_grace_s=settings.payment_action_grace_s,
    )
    rules = LifecycleRules(
        reminder_leads_s=settings.reminder_leads, auto_renew_lead_s=settings.auto_renew_lead
    )
    watcher = PlanWatcher(runtime.database, runtime.outbox, rules, clock=clock)
    # A hard decline of an auto-renewal and a promotion's release are commands of the saga's
    # decisions; the plan watch's own reactions run after the saga's, in its transaction.
    saga = RenewalSaga(
        runtime.outbox,
        deadlines,
        clock=clock,
        turn_off_auto_renew=watcher.turn_off_after_decline,
    )
    topics = runtime.topics
    # Every handler runs driver statements (`rows.Rows`, the outbox); the few that need the ORM
    # for an event (a promotion, auto-renew turned off) say so and get a session then.
    on_driver = partial(Route, on_driver=True)
    runtime.consume(
        topics.renewal_requested,
        [on_driver(events.RenewalRequested, saga.on_renewal_requested)],
    )
    runtime.consume(
        topics.payment_action_required,
        [on_driver(events.PaymentActionRequired, saga.on_payment_action_required)],
    )
    runtime.consume(
        topics.payment_authorized, [on_driver(events.PaymentAuthorized, saga.on_payment_authorized)]
    )
    runtime.consume(
        topics.payment_settled, [on_driver(events.PaymentSettled, saga.on_payment_settled)]
    )
    runtime.consume(
        topics.payment_failed, [on_driver(events.PaymentFailed, saga.on_payment_failed)]
    )
    runtime.consume(
        topics.profile_activated,
        [
            on_driver(
                events.ProfileActivated, chain(saga.on_profile_activated, watcher.on_plan_dated)
            )
        ],
    )
    runtime.consume(
        topics.activation_failed, [on_driver(events.ActivationFailed, saga.on_activation_failed)]
    )
    runtime.consume(
        topics.payment_refunded, [on_driver(events.PaymentRefunded, saga.on_payment_refunded)]
    )
    runtime.consume(
        topics.usage_updated,
        [
            on_driver(
                events.UsageUpdated, chain(cardplans.on_usage_updated, watcher.on_usage_updated)
            )
        ],
    )
    runtime.consume(
        topics.bundle_started,
        [on_driver(events.BundleStarted, chain(saga.on_bundle_started, watcher.on_plan_dated))],
    )
    runtime.consume(
        topics.bundle_ended,
        [on_driver(events.BundleEnded, chain(saga.on_bundle_ended, watcher.on_bundle_ended))],
    )
    runtime.consume(topics.data_low, [on_driver(events.DataLow, watcher.on_data_low)])
    runtime.consume(
        topics.bundle_cancelled,
        [
            on_driver(
                events.BundleCancelled, chain(saga.on_bundle_cancelled, watcher.on_bundle_cancelled)
            )
        ],
    )
    # Woken by the commits that make a watch due now (`made_due`: a used-up plan, a plan whose
    # lead has come, a card re-armed), not by every commit of the consumer: almost none does.
    runtime.due_work(PlanWatch, watcher.work, what="plan-watch", woken_by_commits=False)
    if settings.max_sagas_in_flight:
        # Past the limit, new requests wait in Kafka, and the CPU finishes the renewals begun.
        runtime.limit_intake(
            [topics.renewal_requested],
            lambda: sagas_in_flight(
                runtime.database, clock(), window_s=settings.in_flight_window_s
            ),
            settings.max_sagas_in_flight,
        )

    async def seed() -> None:
        await seed_catalogue(runtime.database)
        if settings.seed_promotions:
            await seed_promotions(runtime.database)
        if settings.cards_csv is not None:
            await import_cards(runtime.database, settings.cards_csv)

    runtime.produces(
        events.RenewalRequested,
        events.RenewalRejected,
        events.PaymentRequested,
        events.RefundRequested,
        events.BundleCancelRequested,
        events.CardBound,
        events.PasswordResetRequested,
        events.PasswordChanged,
        events.PlanExpiring,
        events.AutoRenewDisabled,
    )
    runtime.on_startup(seed)
    runtime.loop(
        "saga-deadlines",
        lambda: sweep_deadlines(runtime.database, saga),
        settings.deadline_sweep_interval_s,
        singleton=True,
    )
    if settings.jwt_secret.get_secret_value() == DEV_JWT_SECRET:
        logger.warning("ACCOUNTS_JWT_SECRET is not set: using the local development key")
    runtime.loop(
        "session-purge",
        lambda: purge_sessions(runtime.database, keep_s=settings.session_keep_s),
        settings.session_purge_interval_s,
        singleton=True,
    )
    identity = build_identity(settings, runtime.database, redis or runtime.redis)
    return Accounts(
        settings=settings, runtime=runtime, saga=saga, watcher=watcher, identity=identity
    )


def build_identity(settings: AccountsSettings, database: Database, redis: Redis) -> Identity:
    """Sessions, password hashing, rate limits and reset codes, configured from settings."""
    secret = settings.jwt_secret.get_secret_value()
    tokens = TokenIssuer(
        secret,
        access_ttl_s=settings.jwt_ttl_s,
        refresh_ttl_s=settings.refresh_ttl_s,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
    )
    pepper = hmac.new(secret.encode(), b"password-reset-code-digest", hashlib.sha256).digest()
    return Identity(
        sessions=Sessions(database, tokens),
        passwords=Passwords(
            time_cost=settings.password_time_cost,
            memory_kib=settings.password_memory_kib,
            at_once=settings.password_hashes_at_once
            or hashes_within(memory_limit_bytes(), settings.password_memory_kib),
        ),
        limiter=RateLimiter(redis),
        codes=ResetCodes(
            redis,
            pepper,
            ttl_s=settings.reset_code_ttl_s,
            max_tries=settings.reset_code_max_tries,
        ),
        sealer=settings.reset_code_sealer(),
    )
