"""`python -m web`: serve the travellers' website."""

from esim_core.observability.logs import configure_logging
from esim_core.observability.tracing import configure_tracing

# Before the app is imported: wiring it may already log (JSON lines, one schema).
configure_logging("web")
configure_tracing("web")

import uvicorn  # noqa: E402
from esim_core.production import refuse_local_defaults  # noqa: E402
from esim_core.web.server import STOP_WATCHDOG_GRACE_S, BoundedServer  # noqa: E402

from web.app import create_app  # noqa: E402
from web.settings import WebSettings  # noqa: E402


def main() -> None:
    """Serve until SIGTERM or SIGINT, and exit within the stop bound."""
    settings = WebSettings()
    refuse_local_defaults(settings)
    config = uvicorn.Config(
        create_app(settings),
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,
        # A proxy in front of the site (an ingress) names the traveller in X-Forwarded-For;
        # uvicorn trusts FORWARDED_ALLOW_IPS for it (127.0.0.1 unless set).
        proxy_headers=True,
        timeout_graceful_shutdown=max(1, int(settings.stop_timeout_s / 4)),
    )
    BoundedServer(config, settings.stop_timeout_s + STOP_WATCHDOG_GRACE_S).run()


if __name__ == "__main__":
    main()
