"""The accounts service's FastAPI app (which also runs its FastStream worker) and worker."""

from esim_core.production import refuse_local_defaults
from esim_core.settings import load_settings
from esim_core.web.operator import load_operator_auth

from accounts.api import http_app
from accounts.bootstrap import build
from accounts.settings import AccountsSettings

settings = load_settings(AccountsSettings)
operator = load_operator_auth()
# Before anything connects: production settings with a local run's value stop the process here.
refuse_local_defaults(settings, operator)
accounts = build(settings)
runtime = accounts.runtime
api = http_app(accounts, operator)
worker = runtime.worker_app()
