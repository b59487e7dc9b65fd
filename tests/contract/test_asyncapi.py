"""The committed AsyncAPI document is what the services' FastStream apps describe today."""

import importlib.util
import json
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "generate_asyncapi", ROOT / "scripts/generate_asyncapi.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_asyncapi_matches_the_apps() -> None:
    module = generator()
    assert module.TARGET.read_text() == module.document(), "run `make schemas`"


def test_every_contract_topic_has_a_channel() -> None:
    document = json.loads((ROOT / "shared/schemas/asyncapi.json").read_text())
    addresses = {channel["address"] for channel in document["channels"].values()}
    for topic in (
        "esim.renewal.requested",
        "esim.payment.requested",
        "esim.payment.settled",
        "esim.payment.failed",
        "esim.profile.activated",
        "esim.activation.failed",
        "esim.refund.requested",
        "esim.payment.refunded",
        "esim.renewal.rejected",
    ):
        assert topic in addresses
