"""The one place where provisioning is wired: runtime, consumer, platform, loops, callbacks."""

from dataclasses import dataclass

from esim_core.messaging.consumer import Route
from esim_core.outside.retry import TryPolicy
from esim_core.persistence.migrations import service_migrations
from esim_core.service import ServiceRuntime
from esim_schemas import (
    ActivationFailed,
    BundleCancelled,
    BundleCancelRequested,
    BundleEnded,
    BundleStarted,
    DataLow,
    PaymentAuthorized,
    PaymentSettled,
    ProfileActivated,
    UsageUpdated,
)

from provisioning.activating import ActivationWorker
from provisioning.callbacks import CallbackReceiver, build_callback_router, callback_retention
from provisioning.cancelling import CancellationWorker
from provisioning.domain import FollowUpRules, UsageRules
from provisioning.handlers import Handlers
from provisioning.platforms import EsimPlatform
from provisioning.platforms.http import HttpEsimPlatform
from provisioning.settings import ProvisioningSettings
from provisioning.store import TABLES
from provisioning.usage import UsagePoller

# services/provisioning/migrations: the Alembic scripts applied at start.
MIGRATIONS = service_migrations(__file__)


@dataclass(frozen=True)
class Provisioning:
    """The wired service: its runtime, and the parts tests drive directly."""

    runtime: ServiceRuntime
    platform: EsimPlatform
    handlers: Handlers
    activations: ActivationWorker
    cancellations: CancellationWorker
    usage: UsagePoller
    callbacks: CallbackReceiver


def build_platform(settings: ProvisioningSettings) -> EsimPlatform:
    """The eSIM platform adapter that `PROVISIONING_ESIM_PLATFORM` names."""
    if settings.esim_platform == "http":
        return HttpEsimPlatform(
            settings.esim_platform_url,
            timeout_s=settings.platform_timeout_s,
        )
    raise ValueError(f"unknown eSIM platform adapter {settings.esim_platform!r}")


def build(
    settings: ProvisioningSettings,
    *,
    platform: EsimPlatform | None = None,
    tries: TryPolicy | None = None,
) -> Provisioning:
    """Wire provisioning; tests pass a fake `platform` and a `tries` policy without waits."""
    runtime = ServiceRuntime("provisioning", settings, TABLES, migrations=MIGRATIONS)
    chosen = runtime.adapter(platform, lambda: build_platform(settings))
    rules = FollowUpRules(
        poll_interval_s=settings.poll_interval_s,
        poll_interval_max_s=settings.poll_interval_max_s,
        retry_backoff_s=settings.retry_backoff_s,
        retry_backoff_max_s=settings.retry_backoff_max_s,
    )
    policy = tries or TryPolicy(
        attempts=settings.platform_attempts, wait_max_s=settings.platform_backoff_max_s
    )
    # Activations and cancellations are rounds at the same platform under the same rules.
    parts = (runtime.database, runtime.outbox, chosen, rules, policy)
    batch, lease_s = settings.worker_batch, settings.worker_lease_s
    activations = ActivationWorker(*parts, batch=batch, lease_s=lease_s)
    activations.usage_poll_after_s = settings.usage_poll_interval_s
    cancellations = CancellationWorker(*parts, batch=batch, lease_s=lease_s)
    usage = UsagePoller(
        runtime.database,
        runtime.outbox,
        chosen,
        UsageRules(
            interval_s=settings.usage_poll_interval_s,
            interval_max_s=settings.usage_poll_interval_max_s,
            retry_backoff_s=settings.retry_backoff_s,
            retry_backoff_max_s=settings.retry_backoff_max_s,
        ),
        policy,
        batch=settings.usage_poll_batch,
        lease_s=lease_s,
    )
    callbacks = CallbackReceiver(
        runtime.database,
        runtime.outbox,
        settings.callback_secret.get_secret_value(),
        tolerance_s=settings.callback_tolerance_s,
        poll_later_s=settings.usage_poll_interval_max_s,
        after_commit=runtime.wake,
    )
    handlers = Handlers(activation_deadline_s=settings.activation_deadline_s)

    runtime.consume_each(
        [
            # The second of the two payment events of a renewal (a held payment's capture comes
            # after ProfileActivated) is ignored before any transaction where it is known.
            Route(
                PaymentSettled,
                handlers.on_payment_settled,
                ignores=handlers.ignores,
                on_driver=True,
            ),
            # Card and PayPal payments are held until the plan is live: activate on the hold.
            Route(
                PaymentAuthorized,
                handlers.on_payment_authorized,
                ignores=handlers.ignores,
                on_driver=True,
            ),
            Route(BundleCancelRequested, handlers.on_bundle_cancel_requested),
        ]
    )
    # Woken by the commits that make their rows due now (`made_due`: a new activation or
    # cancellation, an order completed), not by every commit of the consumer; the usage watch
    # is never due at once after one, and looks at its interval.
    for worker in (activations, cancellations, usage):
        runtime.due_worker(worker, woken_by_commits=False)
    runtime.produces(
        ProfileActivated,
        ActivationFailed,
        UsageUpdated,
        DataLow,
        BundleStarted,
        BundleEnded,
        BundleCancelled,
    )
    runtime.routers.append(build_callback_router(callbacks))
    runtime.retain(callback_retention(settings.callback_retention_s))
    return Provisioning(
        runtime=runtime,
        platform=chosen,
        handlers=handlers,
        activations=activations,
        cancellations=cancellations,
        usage=usage,
        callbacks=callbacks,
    )
