"""The accounts service's FastAPI app (which also runs its FastStream worker) and worker."""

from esim_core.settings import load_settings

from accounts.bootstrap import build
from accounts.settings import AccountsSettings

settings = load_settings(AccountsSettings)
runtime = build(settings).runtime
api = runtime.http_app("eSIM accounts", description="Users, cards, plans and renewals.")
worker = runtime.worker_app()
