"""The billing service's FastAPI app (which also runs its FastStream worker) and worker."""

from esim_core.production import refuse_local_defaults
from esim_core.settings import load_settings
from esim_core.web.operator import load_operator_auth

from billing.api import http_app
from billing.bootstrap import build
from billing.settings import BillingSettings

settings = load_settings(BillingSettings)
operator = load_operator_auth()
# Before anything connects: production settings with a local run's value stop the process here.
refuse_local_defaults(settings, operator)
billing = build(settings)
runtime = billing.runtime
api = http_app(runtime, operator, billing.gateway, billing.rules)
worker = runtime.worker_app()
