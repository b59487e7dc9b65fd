"""The one place where billing is wired: runtime, consumers, gateway adapter, loops."""

import logging
from dataclasses import dataclass

from esim_core.messaging.consumer import Route
from esim_core.outside.retry import TryPolicy
from esim_core.persistence.migrations import service_migrations
from esim_core.service import ServiceRuntime
from esim_schemas import (
    PaymentFailed,
    PaymentRefunded,
    PaymentRequested,
    PaymentSettled,
    RefundRequested,
)

from billing.charging import ChargeWorker
from billing.domain import RetryRules
from billing.gateways import ChargingGateway
from billing.gateways.http import HttpPaymentGateway
from billing.handlers import on_payment_requested, on_refund_requested
from billing.refunding import RefundWorker
from billing.settings import BillingSettings
from billing.store import TABLES

# services/billing/migrations: the Alembic scripts applied at start.
MIGRATIONS = service_migrations(__file__)


@dataclass(frozen=True)
class Billing:
    """The wired service: its runtime, and the parts tests drive directly."""

    runtime: ServiceRuntime
    gateway: ChargingGateway
    charges: ChargeWorker
    refunds: RefundWorker


def build_gateway(settings: BillingSettings) -> ChargingGateway:
    """The gateway adapter that `BILLING_PAYMENT_GATEWAY` names.

    Every method (card, PayPal, Alipay) goes through the one HTTP adapter today; a provider
    with an adapter of its own would be chosen here, per method if need be.
    """
    if settings.payment_gateway == "http":
        return HttpPaymentGateway(
            settings.payment_gateway_url,
            timeout_s=settings.gateway_timeout_s,
        )
    raise ValueError(f"unknown payment gateway adapter {settings.payment_gateway!r}")


def build(
    settings: BillingSettings,
    *,
    gateway: ChargingGateway | None = None,
    tries: TryPolicy | None = None,
) -> Billing:
    """Wire billing; tests pass a fake `gateway` and a `tries` policy without waits."""
    runtime = ServiceRuntime("billing", settings, TABLES, migrations=MIGRATIONS)
    _keep_tokens_out_of_logs(runtime)
    chosen = runtime.adapter(gateway, lambda: build_gateway(settings))
    rules = RetryRules(
        dunning_schedule_s=settings.dunning_schedule_s,
        max_unavailable_rounds=settings.max_transient_rounds,
        backoff_s=settings.retry_backoff_s,
        backoff_max_s=settings.retry_backoff_max_s,
    )
    policy = tries or TryPolicy(
        attempts=settings.gateway_attempts, wait_max_s=settings.gateway_backoff_max_s
    )
    batch, lease_s = settings.worker_batch, settings.worker_lease_s
    db, outbox = runtime.database, runtime.outbox
    charges = ChargeWorker(db, outbox, chosen, rules, policy, batch=batch, lease_s=lease_s)
    refunds = RefundWorker(db, outbox, chosen, rules, policy, batch=batch, lease_s=lease_s)

    runtime.consume_each(
        [Route(PaymentRequested, on_payment_requested), Route(RefundRequested, on_refund_requested)]
    )
    for worker in (charges, refunds):
        runtime.due_worker(worker)
    runtime.produces(PaymentSettled, PaymentFailed, PaymentRefunded)
    return Billing(runtime=runtime, gateway=chosen, charges=charges, refunds=refunds)


def _keep_tokens_out_of_logs(runtime: ServiceRuntime) -> None:
    # Payment rows hold tokens, and SQL parameters travel far: SQLAlchemy puts them into error
    # messages (which the consumer logs and writes into dead-letter headers) and into its
    # statement log, and aiosqlite logs every call with its arguments at DEBUG.
    runtime.database.engine.sync_engine.hide_parameters = True
    logging.getLogger("aiosqlite").setLevel(max(logging.INFO, logging.getLogger("aiosqlite").level))
