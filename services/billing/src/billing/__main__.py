"""`python -m billing`: serve the billing API and worker."""

from esim_core.observability.logs import configure_logging
from esim_core.observability.tracing import configure_tracing

# Before the app is imported: wiring it may already log (JSON lines, one
# schema; esim_core.observability.logs).
configure_logging("billing")
configure_tracing("billing")

from esim_core.web.server import serve  # noqa: E402

from billing.app import api, settings  # noqa: E402

serve(api, settings)
