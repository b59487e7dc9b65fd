"""Writes shared/schemas/asyncapi.json from the four services' FastStream apps (`make schemas`).

With `--check`, only compares and exits 1 when the committed document is out of date.
"""

import json
import sys
from pathlib import Path

from esim_core.service import ServiceRuntime
from faststream.specification import AsyncAPI

TARGET = Path(__file__).resolve().parents[1] / "shared/schemas/asyncapi.json"


def runtimes() -> list[ServiceRuntime]:
    """Each service wired as it runs, with its default settings (nothing is connected)."""
    from accounts.bootstrap import build as build_accounts
    from accounts.settings import AccountsSettings
    from billing.bootstrap import build as build_billing
    from billing.settings import BillingSettings
    from notifier.bootstrap import build as build_notifier
    from notifier.settings import NotifierSettings
    from provisioning.bootstrap import build as build_provisioning
    from provisioning.settings import ProvisioningSettings

    built = [
        build_accounts(AccountsSettings()),
        build_billing(BillingSettings()),
        build_provisioning(ProvisioningSettings()),
        build_notifier(NotifierSettings()),
    ]
    return [item if isinstance(item, ServiceRuntime) else item.runtime for item in built]


def document() -> str:
    """The AsyncAPI 3.0 document of the whole platform, as stable JSON text."""
    brokers = []
    for runtime in runtimes():
        runtime.subscribe()
        brokers.append(runtime.broker)
    spec = AsyncAPI(
        *brokers,
        title="eSIM plan renewal platform",
        version="1.0.0",
        description="Events between accounts, billing, provisioning and notifier (CONTRACT.md).",
    ).to_specification()
    return json.dumps(spec.to_jsonable(), indent=2, sort_keys=True) + "\n"


def main() -> int:
    """Write the document, or check it with `--check`."""
    text = document()
    current = TARGET.read_text() if TARGET.exists() else None
    if "--check" in sys.argv[1:]:
        if current != text:
            print(f"{TARGET} is out of date: run `make schemas`")
            return 1
        return 0
    TARGET.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
