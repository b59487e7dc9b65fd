"""docs/contract.md stays true: its events, topics, HTTP operations and ports are the code's."""

import re
from pathlib import Path
from typing import Any

import pytest
from esim_schemas import DEFAULT_TOPICS, EVENT_MODELS

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "contract.md"
# What is named under "Not built yet" is, by definition, not in the code.
BUILT = PAGE.read_text(encoding="utf-8").split("## Not built yet")[0]
OPERATION = re.compile(r"`(GET|POST|PUT|PATCH|DELETE) (/v1/[^`]*)`")


def section(title: str) -> str:
    """The text of one `## ` section of the page."""
    start = BUILT.index(f"## {title}")
    end = BUILT.find("\n## ", start + 1)
    return BUILT[start : end if end != -1 else None]


def test_the_readme_links_the_page() -> None:
    assert "(docs/contract.md)" in (ROOT / "README.md").read_text(encoding="utf-8")


def test_every_event_type_named_exists_and_every_one_is_named() -> None:
    named = set(re.findall(r"`(esim\.[a-z.-]+\.v\d+)`", BUILT))
    types = {model.event_type for model in EVENT_MODELS}
    assert named - types == set(), "named on the page but not in shared/schemas"
    assert types - named == set(), "in shared/schemas but not on the page"


def test_every_topic_named_is_a_default_topic_and_every_one_is_named() -> None:
    table = section("Events and topics")
    named = {name for name in re.findall(r"^\| `(esim\.[a-z.-]+)` \|", table, flags=re.MULTILINE)}
    topics = set(DEFAULT_TOPICS.values())
    assert named == topics


@pytest.fixture(autouse=True)
def operator_token(monkeypatch: pytest.MonkeyPatch) -> None:
    """The apps refuse to be built without one (esim_core.web.operator), and on their local
    defaults unless the run is a local one (esim_core.production)."""
    monkeypatch.setenv("OPERATOR_TOKEN", "contract-page-test-operator-token")
    monkeypatch.setenv("ESIM_ENV", "local")


def _operations(app_module: str) -> set[tuple[str, str]]:
    module = __import__(f"{app_module}.app", fromlist=["api"])
    spec: dict[str, Any] = module.api.openapi()
    return {
        (method.upper(), path)
        for path, operations in spec["paths"].items()
        for method in operations
        if path.startswith("/v1/")
    }


def test_the_accounts_table_is_the_accounts_api() -> None:
    listed = set(OPERATION.findall(section("Accounts HTTP API")))
    traveller = {op for op in _operations("accounts") if not op[1].startswith("/v1/operator/")}
    assert listed == traveller


@pytest.mark.parametrize("service", ["accounts", "billing", "provisioning", "notifier"])
def test_the_operator_table_is_each_operator_api(service: str) -> None:
    rows = [
        line
        for line in section("Operator HTTP APIs").splitlines()
        if line.startswith(f"| {service} |")
    ]
    listed = {found for row in rows for found in OPERATION.findall(row)}
    operations = _operations(service)
    if service == "accounts":
        operations = {op for op in operations if op[1].startswith("/v1/operator/")}
    assert listed == operations


def test_every_problem_status_listed_is_documented_in_openapi() -> None:
    module = __import__("accounts.app", fromlist=["api"])
    spec: dict[str, Any] = module.api.openapi()
    for line in section("Accounts HTTP API").splitlines():
        found = OPERATION.search(line)
        if found is None:
            continue
        method, path = found.groups()
        listed = set(re.findall(r"\b([1-5]\d\d)\b", line.rsplit("|", 2)[-2]))
        documented = set(spec["paths"][path][method.lower()]["responses"])
        assert listed == documented, f"{method} {path}"


def test_local_ports_are_the_defaults() -> None:
    from accounts.settings import AccountsSettings
    from billing.settings import BillingSettings
    from notifier.settings import NotifierSettings
    from provisioning.settings import ProvisioningSettings
    from sandboxes.esim import EsimSandboxSettings
    from sandboxes.payment import PaymentSandboxSettings
    from sandboxes.sms import SmsSandboxSettings

    table = section("The local run")
    ports = {
        variable: int(port) for port, variable in re.findall(r":(\d+)`? \| `([A-Z_]+)` \|", table)
    }
    assert ports["ACCOUNTS_HTTP_PORT"] == AccountsSettings().http_port
    assert ports["BILLING_HTTP_PORT"] == BillingSettings().http_port
    assert ports["PROVISIONING_HTTP_PORT"] == ProvisioningSettings().http_port
    assert ports["NOTIFIER_HTTP_PORT"] == NotifierSettings().http_port
    assert ports["PAYMENT_SANDBOX_PORT"] == PaymentSandboxSettings.port
    assert ports["ESIM_SANDBOX_PORT"] == EsimSandboxSettings.port
    assert ports["SMS_SANDBOX_PORT"] == SmsSandboxSettings.port
    sandboxes = section("Sandboxes")
    assert f"127.0.0.1:{SmsSandboxSettings.port}`" in sandboxes
