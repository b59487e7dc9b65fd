"""`python -m web`: serve the travellers' website."""

from esim_core.observability.logs import configure_logging
from esim_core.observability.tracing import configure_tracing

# Before the app is imported: wiring it may already log (JSON lines, one schema).
configure_logging("web")
configure_tracing("web")

from esim_core.production import refuse_local_defaults  # noqa: E402
from esim_core.web.server import (  # noqa: E402
    STOP_WATCHDOG_GRACE_S,
    BoundedServer,
    server_config,
)

from web.app import create_app  # noqa: E402
from web.settings import WebSettings  # noqa: E402


def main() -> None:
    """Serve until SIGTERM or SIGINT, and exit within the stop bound."""
    settings = WebSettings()
    refuse_local_defaults(settings)
    config = server_config(
        create_app(settings),
        settings.http_host,
        settings.http_port,
        settings.stop_timeout_s,
        # A proxy in front of the site (an ingress) names the traveller in X-Forwarded-For;
        # uvicorn trusts FORWARDED_ALLOW_IPS for it (127.0.0.1 unless set).
        proxy_headers=True,
    )
    BoundedServer(config, settings.stop_timeout_s + STOP_WATCHDOG_GRACE_S).run()


if __name__ == "__main__":
    main()
