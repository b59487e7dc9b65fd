"""`python -m notifier`: serve the notifier's HTTP API, consumers and send loop."""

from esim_core.observability.logs import configure_logging
from esim_core.observability.tracing import configure_tracing

# Before the app is imported: wiring it may already log (JSON lines, one
# schema; esim_core.observability.logs).
configure_logging("notifier")
configure_tracing("notifier")

from esim_core.web.server import serve  # noqa: E402

from notifier.app import api, settings  # noqa: E402

if __name__ == "__main__":
    serve(api, settings)
