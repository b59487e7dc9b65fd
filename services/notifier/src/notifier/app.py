"""The notifier's FastAPI app (which runs its consumers and send loop) and its worker alone."""

from esim_core.settings import load_settings

from notifier import bootstrap
from notifier.api import notifications_router
from notifier.settings import NotifierSettings

settings = load_settings(NotifierSettings)
runtime = bootstrap.build(settings).runtime
api = runtime.http_app(
    "eSIM notifier",
    routers=[notifications_router(runtime.database)],
    description="Tells travellers by e-mail what happened to their renewals.",
)
worker = runtime.worker_app()
