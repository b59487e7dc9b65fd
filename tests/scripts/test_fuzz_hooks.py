"""scripts/fuzz_hooks.py: forged webhook bodies aimed at real payments, and the 400 they get."""

import importlib.util
import json
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

HOOKS = Path(__file__).resolve().parents[2] / "scripts" / "fuzz_hooks.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fuzz_hooks_under_test", HOOKS)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


hooks = _load()


def on(path: str, method: str = "POST") -> SimpleNamespace:
    return SimpleNamespace(operation=SimpleNamespace(path=path), path=path, method=method)


def answered(status: int) -> SimpleNamespace:
    return SimpleNamespace(status_code=status, text_lossy=lambda: '{"received":true}')


@pytest.fixture(autouse=True)
def targets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "FUZZ_WEBHOOK_TARGETS",
        json.dumps({"stripe": "r-card", "paypal": "r-pp", "alipay": "r-ali"}),
    )


def test_a_stripe_shaped_body_claims_the_target_was_authorized() -> None:
    body: dict[str, Any] = {"id": "evt_1", "type": "x", "data": {"object": {"id": "pi_1"}}}

    mapped = hooks.map_body(on("/webhooks/stripe"), body)

    assert mapped["data"]["object"] == {
        "id": "pi_1",
        "object": "payment_intent",
        "status": "requires_capture",
        "metadata": {"reference": "r-card"},
    }


def test_paypal_and_alipay_bodies_name_their_targets() -> None:
    paypal = hooks.map_body(on("/webhooks/paypal"), {"resource": {}})
    alipay = hooks.map_body(on("/webhooks/alipay"), {"sign": "x"})

    assert paypal["resource"]["custom_id"] == "r-pp"
    assert paypal["resource"]["purchase_units"] == [{"reference_id": "r-pp"}]
    assert alipay == {"sign": "x", "out_trade_no": "r-ali", "trade_status": "TRADE_SUCCESS"}


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/webhooks/stripe", [1, 2]),  # a negative case: not an object, left as drawn
        ("/webhooks/stripe", {"data": "x"}),
        ("/v1/payments/unknown", {"resource": {}}),
    ],
)
def test_bodies_without_the_providers_shape_or_off_the_webhooks_are_left_alone(
    path: str, body: object
) -> None:
    before = json.dumps(body)

    assert json.dumps(hooks.map_body(on(path), body)) == before


def test_a_webhook_answer_other_than_400_fails_the_check() -> None:
    with pytest.raises(AssertionError, match="answered 200, not 400"):
        hooks.forged_webhook_refused(None, answered(200), on("/webhooks/alipay"))
    with pytest.raises(AssertionError, match="answered 500"):
        hooks.forged_webhook_refused(None, answered(500), on("/webhooks/stripe"))


def test_a_400_from_a_webhook_or_any_answer_elsewhere_passes_the_check() -> None:
    assert hooks.forged_webhook_refused(None, answered(400), on("/webhooks/paypal")) is None
    assert hooks.forged_webhook_refused(None, answered(200), on("/v1/payments/unknown")) is None


def test_another_method_on_a_webhook_may_be_refused_with_405() -> None:
    assert (
        hooks.forged_webhook_refused(None, answered(405), on("/webhooks/stripe", "TRACE")) is None
    )
