"""The notifier's FastAPI app (which runs its consumers and send loop) and its worker alone."""

from esim_core.production import refuse_local_defaults
from esim_core.settings import load_settings
from esim_core.web.operator import load_operator_auth

from notifier import bootstrap
from notifier.api import http_app
from notifier.settings import NotifierSettings

settings = load_settings(NotifierSettings)
operator = load_operator_auth()
# Before anything connects: production settings with a local run's value stop the process here.
refuse_local_defaults(settings, operator)
runtime = bootstrap.build(settings).runtime
api = http_app(runtime, operator)
worker = runtime.worker_app()
