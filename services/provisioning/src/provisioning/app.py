"""The provisioning service's FastAPI app (which also runs its FastStream worker) and worker."""

from esim_core.production import refuse_local_defaults
from esim_core.settings import load_settings
from esim_core.web.operator import load_operator_auth

from provisioning.api import http_app
from provisioning.bootstrap import build
from provisioning.settings import ProvisioningSettings

settings = load_settings(ProvisioningSettings)
operator = load_operator_auth()
# Before anything connects: production settings with a local run's value stop the process here.
refuse_local_defaults(settings, operator)
runtime = build(settings).runtime
api = http_app(runtime, operator)
worker = runtime.worker_app()
