"""The billing service's FastAPI app (which also runs its FastStream worker) and worker."""

from esim_core.settings import load_settings

from billing.bootstrap import build
from billing.settings import BillingSettings

settings = load_settings(BillingSettings)
runtime = build(settings).runtime
api = runtime.http_app(
    "eSIM billing", description="Payments, dunning and refunds; the ops view of each renewal's."
)
worker = runtime.worker_app()
