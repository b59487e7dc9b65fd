"""The one place where billing is wired: runtime, consumers, provider adapters, loops, webhooks."""

import logging
from dataclasses import dataclass
from datetime import timedelta

from esim_core.messaging.consumer import Route
from esim_core.outside.retry import TryPolicy
from esim_core.persistence.migrations import service_migrations
from esim_core.service import ServiceRuntime
from esim_schemas import events

from billing.charging import ChargeWorker
from billing.domain import RetryRules
from billing.gateways.alipay import AlipayGateway
from billing.gateways.paypal import PayPalGateway
from billing.gateways.port import PaymentGateway
from billing.gateways.router import MethodRouter
from billing.gateways.stripe import StripeGateway
from billing.handlers import on_payment_requested, on_profile_activated, on_refund_requested
from billing.refunding import RefundWorker
from billing.settings import BillingSettings
from billing.store import TABLES
from billing.webhooks import build_webhook_router, webhook_inbox_retention

logger = logging.getLogger(__name__)

# services/billing/migrations: the Alembic scripts applied at start.
MIGRATIONS = service_migrations(__file__)


@dataclass(frozen=True)
class Billing:
    """The wired service: its runtime, and the parts tests drive directly."""

    runtime: ServiceRuntime
    gateway: MethodRouter
    charges: ChargeWorker
    refunds: RefundWorker
    rules: RetryRules


def build_gateway(settings: BillingSettings) -> MethodRouter:
    """One adapter per method, each pointed at its provider by the settings alone.

    Alipay needs its keys (`BILLING_ALIPAY_APP_PRIVATE_KEY[_FILE]` and
    `BILLING_ALIPAY_PUBLIC_KEY[_FILE]`; `scripts/alipay_keys.py` makes a local pair): without
    them billing takes card and PayPal only, says so at start, and refuses Alipay payments.
    """
    timeout_s = settings.gateway_timeout_s
    adapters: dict[str, PaymentGateway] = {
        "card": StripeGateway(
            api_key=settings.stripe_api_key.get_secret_value(),
            webhook_secret=settings.stripe_webhook_secret.get_secret_value(),
            base_url=settings.stripe_base_url,
            timeout_s=timeout_s,
            capture_window=timedelta(seconds=settings.capture_window_s),
        ),
        "paypal": PayPalGateway(
            settings.paypal_client_id,
            settings.paypal_client_secret.get_secret_value(),
            settings.paypal_base_url,
            settings.paypal_webhook_id,
            timeout_s,
        ),
    }
    private_key = settings.alipay_app_private_key_pem()
    public_key = settings.alipay_public_key_pem()
    if private_key and public_key:
        adapters["alipay"] = AlipayGateway(
            settings.alipay_app_id,
            private_key,
            public_key,
            settings.alipay_gateway_url,
            f"{settings.public_url.rstrip('/')}/webhooks/alipay",
            timeout_s=timeout_s,
            page_timeout=timedelta(minutes=max(1, int(settings.approval_expiry_s // 60))),
        )
    else:
        logger.error(
            "Alipay is not configured: set BILLING_ALIPAY_APP_PRIVATE_KEY_FILE and "
            "BILLING_ALIPAY_PUBLIC_KEY_FILE (`python scripts/alipay_keys.py --env` makes a "
            "local pair); Alipay payments are refused until then"
        )
    return MethodRouter(adapters)


def build(
    settings: BillingSettings,
    *,
    gateway: MethodRouter | None = None,
    tries: TryPolicy | None = None,
) -> Billing:
    """Wire billing; tests pass a `MethodRouter` of fakes and a `tries` policy without waits."""
    runtime = ServiceRuntime("billing", settings, TABLES, migrations=MIGRATIONS)
    _keep_tokens_out_of_logs(runtime)
    chosen = gateway if gateway is not None else build_gateway(settings)
    if gateway is None:
        # What the bootstrap opened it closes, once the loops that call it have ended.
        runtime.on_stop(chosen.aclose)
    rules = RetryRules(
        dunning_schedule_s=settings.dunning_schedule_s,
        max_unavailable_rounds=settings.max_transient_rounds,
        backoff_s=settings.retry_backoff_s,
        backoff_max_s=settings.retry_backoff_max_s,
        unknown_schedule_s=settings.unknown_schedule_s,
        approval_expiry_s=settings.approval_expiry_s,
        capture_window_s=settings.capture_window_s,
    )
    policy = tries or TryPolicy(
        attempts=settings.gateway_attempts, wait_max_s=settings.gateway_backoff_max_s
    )
    batch, lease_s = settings.worker_batch, settings.worker_lease_s
    db, outbox = runtime.database, runtime.outbox
    charges = ChargeWorker(db, outbox, chosen, rules, policy, batch=batch, lease_s=lease_s)
    refunds = RefundWorker(db, outbox, chosen, rules, policy, batch=batch, lease_s=lease_s)

    charges.return_url = settings.return_url

    runtime.consume_each(
        [
            Route(events.PaymentRequested, on_payment_requested, on_driver=True),
            Route(events.RefundRequested, on_refund_requested),
            Route(events.ProfileActivated, on_profile_activated, on_driver=True),
        ]
    )
    # Woken by the commits that make a payment or a refund due now (`made_due`: a new payment,
    # an activation's capture, a refund, a webhook's news), not by every commit: billing's
    # consumer also commits events that make nothing due, and each wake is a claim.
    for worker in (charges, refunds):
        runtime.due_worker(worker, woken_by_commits=False)
    runtime.routers.append(
        build_webhook_router(runtime.database, charges.flow, chosen, runtime.wake)
    )
    runtime.retain(webhook_inbox_retention(settings.webhook_retention_s))
    runtime.produces(
        events.PaymentActionRequired,
        events.PaymentAuthorized,
        events.PaymentSettled,
        events.PaymentFailed,
        events.PaymentRefunded,
    )
    return Billing(runtime=runtime, gateway=chosen, charges=charges, refunds=refunds, rules=rules)


def _keep_tokens_out_of_logs(runtime: ServiceRuntime) -> None:
    # Payment rows hold tokens, and SQL parameters travel far: SQLAlchemy puts them into error
    # messages (which the consumer logs and writes into dead-letter headers) and into its
    # statement log, and aiosqlite logs every call with its arguments at DEBUG.
    runtime.database.engine.sync_engine.hide_parameters = True
    logging.getLogger("aiosqlite").setLevel(max(logging.INFO, logging.getLogger("aiosqlite").level))
