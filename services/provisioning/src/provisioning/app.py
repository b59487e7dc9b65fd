"""The provisioning service's FastAPI app (which also runs its FastStream worker) and worker."""

from esim_core.settings import load_settings

from provisioning.bootstrap import build
from provisioning.settings import ProvisioningSettings

settings = load_settings(ProvisioningSettings)
runtime = build(settings).runtime
api = runtime.http_app(
    "eSIM provisioning",
    description="Bundle orders at the eSIM platform and their follow-up; the ops view of each "
    "renewal's activation.",
)
worker = runtime.worker_app()
