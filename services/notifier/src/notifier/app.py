"""The notifier's FastAPI app (which runs its consumers and send loop) and its worker alone."""

from esim_core.settings import load_settings
from esim_core.web.operator import load_operator_auth

from notifier import bootstrap
from notifier.api import http_app
from notifier.settings import NotifierSettings

settings = load_settings(NotifierSettings)
operator = load_operator_auth()
runtime = bootstrap.build(settings).runtime
api = http_app(runtime, operator)
worker = runtime.worker_app()
