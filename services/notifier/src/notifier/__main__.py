"""`python -m notifier`: serve the notifier's HTTP API, consumers and send loop."""

from esim_core.service import serve

from notifier.app import api, settings

if __name__ == "__main__":
    serve(api, settings)
