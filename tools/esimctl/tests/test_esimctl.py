"""esimctl without a platform: its output, its errors, where it finds services and the token."""

import asyncio
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from esimctl import cli
from esimctl.client import CtlError, Operator, find_token, service_urls
from typer.testing import CliRunner

RENEWAL = "5b0f2a4e-8d8b-4a53-9f5c-3d9a7f1e2c11"
TOKEN = "operator-token-for-esimctl-tests"

SAGA: dict[str, Any] = {
    "renewal_id": RENEWAL,
    "user_id": "u-1",
    "iccid": "8944500102198304826",
    "plan_code": "JP-30D-10GB",
    "status": "ACTIVATED",
    "terminal": True,
    "reason": None,
    "detail": None,
    "start": "now",
    "price": {"amount": 9900, "currency": "CNY"},
    "payment_method": "card",
    "payment_id": "pay_1",
    "refund_requested": False,
    "activation_failure": None,
    "bundle_state": "active",
    "valid_from": None,
    "valid_until": None,
    "deadline_at": None,
    "created_at": "2026-12-01T12:00:00Z",
    "updated_at": "2026-12-01T12:00:03Z",
    "stuck": None,
    "timeline": [
        {"step": "requested", "status": "REQUESTED", "at": "t0", "detail": None, "event_id": "e0"},
        {
            "step": "profile_activated",
            "status": "ACTIVATED",
            "at": "t1",
            "detail": "active",
            "event_id": "e1",
        },
    ],
    "events": [
        {
            "event_id": "p1",
            "type": "esim.payment.requested.v1",
            "topic": "esim.payment.requested",
            "created_at": "t0",
            "published_at": "t0",
        }
    ],
}
PAYMENT = {
    "state": "settled",
    "payment_id": "pay_1",
    "attempts": 1,
    "provider_reference": "ch_1",
    "failure_reason": None,
    "last_error": None,
}
ACTIVATION = {
    "state": "activated",
    "order_id": "ord_1",
    "bundle_state": "active",
    "valid_from": "a",
    "valid_until": "b",
    "attempts": 1,
    "last_error": None,
}

Handler = Callable[[httpx.Request], httpx.Response]


def problem(status: int, detail: str) -> httpx.Response:
    return httpx.Response(
        status, json={"status": status, "detail": detail}, headers={"content-type": "x"}
    )


@pytest.fixture
def calls() -> list[httpx.Request]:
    return []


@pytest.fixture
def serve(monkeypatch: pytest.MonkeyPatch, calls: list[httpx.Request]) -> Any:
    """Point esimctl at a fake platform whose answers the test gives as a handler."""

    def install(handler: Handler) -> None:
        def recorded(request: httpx.Request) -> httpx.Response:
            calls.append(request)
            return handler(request)

        operator = Operator(
            {
                name: f"http://{name}"
                for name in ("accounts", "billing", "provisioning", "notifier")
            },
            TOKEN,
            transport=httpx.MockTransport(recorded),
        )
        monkeypatch.setattr(cli, "make_operator", lambda: operator)

    return install


def run(*args: str) -> Any:
    return CliRunner().invoke(cli.app, list(args))


def platform_answers(request: httpx.Request) -> httpx.Response:
    routes = {
        ("accounts", f"/v1/operator/sagas/{RENEWAL}"): SAGA,
        ("billing", f"/v1/payments/{RENEWAL}"): PAYMENT,
        ("provisioning", f"/v1/activations/{RENEWAL}"): ACTIVATION,
    }
    body = routes.get((request.url.host, request.url.path))
    if body is None:
        return problem(404, f"nothing at {request.url.path}")
    return httpx.Response(200, json=body)


def test_show_prints_state_timeline_payment_and_bundle(
    serve: Any, calls: list[httpx.Request]
) -> None:
    serve(platform_answers)
    done = run("sagas", "show", RENEWAL)
    assert done.exit_code == 0, done.output
    assert f"renewal {RENEWAL}  ACTIVATED  (ended)" in done.output
    assert "profile_activated" in done.output
    assert "payment (billing):\n  settled  pay_1" in done.output
    assert "bundle (provisioning):\n  activated  order ord_1" in done.output
    assert "refund (billing)" not in done.output  # none: billing answered 404
    assert "cancellation (provisioning)" not in done.output  # none asked: 404
    assert all(call.headers["authorization"] == f"Bearer {TOKEN}" for call in calls)


def test_show_prints_a_cancellation_when_there_is_one(serve: Any) -> None:
    cancellation = {
        "renewal_id": RENEWAL,
        "iccid": "8944500102198304826",
        "reason": "cancelled_by_user",
        "state": "refused",
        "order_id": "ord_1",
        "bundle_status": "active",
        "attempts": 1,
        "last_error": "the platform did not cancel: bundle active",
        "next_attempt_at": None,
        "created_at": "2026-11-24T10:00:00Z",
        "done_at": "2026-11-24T10:00:01Z",
    }

    def answers(request: httpx.Request) -> httpx.Response:
        if request.url.path == f"/v1/cancellations/{RENEWAL}":
            return httpx.Response(200, json=cancellation)
        return platform_answers(request)

    serve(answers)
    done = run("sagas", "show", RENEWAL)

    assert done.exit_code == 0, done.output
    assert (
        "cancellation (provisioning):\n  refused  cancelled_by_user  order ord_1  "
        "platform said active  rounds 1"
    ) in done.output


def test_show_of_an_unknown_renewal_is_one_sentence(serve: Any) -> None:
    serve(lambda request: problem(404, f"no renewal {RENEWAL} in accounts"))
    done = run("sagas", "show", RENEWAL)
    assert done.exit_code == 1
    assert done.output.strip() == f"esimctl: no renewal {RENEWAL} in accounts"


def test_a_malformed_id_is_a_usage_error_before_any_call(
    serve: Any, calls: list[httpx.Request]
) -> None:
    serve(platform_answers)
    done = run("sagas", "compensate", "12345")
    assert done.exit_code == 2
    assert "not a renewal id" in done.output
    assert calls == []


def test_an_unreachable_service_is_named_with_its_address(serve: Any) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("Connection refused", request=request)

    serve(refuse)
    done = run("sagas", "stuck")
    assert done.exit_code == 1
    assert "accounts is not reachable at http://accounts" in done.output
    assert "Traceback" not in done.output


def test_show_still_prints_the_saga_when_billing_is_down(serve: Any) -> None:
    def billing_down(request: httpx.Request) -> httpx.Response:
        if request.url.host == "billing":
            raise httpx.ConnectError("Connection refused", request=request)
        return platform_answers(request)

    serve(billing_down)
    done = run("sagas", "show", RENEWAL)
    assert done.exit_code == 1
    assert "ACTIVATED" in done.output
    assert "payment (billing):\n  unknown: billing is not reachable" in done.output


def test_a_refused_token_says_so(serve: Any) -> None:
    serve(lambda request: problem(401, "The operator token is not valid."))
    done = run("sagas", "retry", RENEWAL)
    assert done.exit_code == 1
    assert "accounts refused the operator token" in done.output


def test_retry_and_compensate_print_the_outcome_and_a_refusal(serve: Any) -> None:
    def act(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/retry"):
            return problem(409, f"renewal {RENEWAL} is PAID and waits for provisioning")
        assert request.url.params["reason"] == "gateway lost it"
        body = {"renewal_id": RENEWAL, "action": "compensate", "status": "TIMED_OUT"}
        return httpx.Response(202, json={**body, "outcome": "refund requested"})

    serve(act)
    refused = run("sagas", "retry", RENEWAL)
    assert refused.exit_code == 1 and "PAID" in refused.output
    done = run("sagas", "compensate", RENEWAL, "--reason", "gateway lost it")
    assert done.exit_code == 0, done.output
    assert f"compensate {RENEWAL}: refund requested (now TIMED_OUT)" in done.output


def test_stuck_lists_and_says_when_there_are_none(serve: Any) -> None:
    found = [{"renewal_id": RENEWAL, "status": "PAID", "iccid": "894", "stuck": "past deadline"}]
    answers = iter([found, []])
    serve(lambda request: httpx.Response(200, json=next(answers)))
    listed = run("sagas", "stuck", "--older-than", "60")
    assert f"{RENEWAL}  PAID" in listed.output and "1 stuck saga(s)" in listed.output
    assert run("sagas", "stuck").output.strip() == "no stuck sagas"


def test_outbox_status_reports_each_service_and_fails_if_one_is_missing(serve: Any) -> None:
    def outboxes(request: httpx.Request) -> httpx.Response:
        if request.url.host == "notifier":
            raise httpx.ConnectError("Connection refused", request=request)
        return httpx.Response(
            200,
            json={
                "service": request.url.host,
                "unpublished": 2,
                "oldest_unpublished_at": "t",
                "oldest_unpublished_age_s": 1.5,
                "published_kept": 7,
                "last_published_at": "t",
            },
        )

    serve(outboxes)
    done = run("outbox", "status")
    assert done.exit_code == 1
    assert "billing       unpublished 2" in done.output and "oldest 1.5 s" in done.output
    assert "notifier      unknown: notifier is not reachable" in done.output


def test_dlq_refuses_a_dead_letter_topic_and_a_bad_position() -> None:
    named = run("dlq", "list", "esim.payment.requested.dlq")
    assert named.exit_code == 2 and "name the original topic" in named.output
    bad = run("dlq", "show", "esim.payment.requested", "twelve")
    assert bad.exit_code == 2 and "<partition>:<offset>" in bad.output


def test_dlq_list_prints_each_dead_letter_with_its_error_or_says_there_are_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    letters: list[dict[str, Any]] = [
        {
            "partition": 0,
            "offset": 12,
            "key": "8944500102198304826",
            "headers": {"x-error-type": "ValidationError", "x-error": "price: field required"},
        }
    ]

    async def listed(kafka: Any, topic: str) -> list[dict[str, Any]]:
        assert topic == "esim.payment.requested"
        return list(letters)

    monkeypatch.setattr(cli, "_kafka", lambda action, timeout_s=60.0: asyncio.run(action(None)))
    monkeypatch.setattr(cli.dlq, "list_dead_letters", listed)
    done = run("dlq", "list", "esim.payment.requested")
    assert done.exit_code == 0
    assert done.output.splitlines() == [
        "0:12  key 8944500102198304826  ValidationError: price: field required",
        "1 dead letter(s); esimctl dlq show esim.payment.requested <partition>:<offset>",
    ]
    letters.clear()
    none = run("dlq", "list", "esim.payment.requested")
    assert none.output.strip() == "no dead letters on esim.payment.requested.dlq"


def test_dead_letter_values_hide_tokens_and_codes() -> None:
    value = {"data": {"payment": {"method": "card", "token": "card_secret_ok"}, "code": "123456"}}
    assert cli._redact(value) == {
        "data": {"payment": {"method": "card", "token": "***"}, "code": "***"}
    }


def test_service_addresses_come_from_the_environment() -> None:
    urls = service_urls({"ESIMCTL_BILLING_URL": "https://billing.ops/", "NOTIFIER_HTTP_PORT": "9"})
    assert urls == {
        "accounts": "http://127.0.0.1:8000",
        "billing": "https://billing.ops",
        "provisioning": "http://127.0.0.1:8002",
        "notifier": "http://127.0.0.1:9",
    }


def test_the_token_comes_from_the_environment_or_the_local_runs_file(tmp_path: Path) -> None:
    assert find_token({"OPERATOR_TOKEN": " t1 "}, tmp_path) == "t1"
    (tmp_path / "var").mkdir()
    (tmp_path / "var/operator.token").write_text("t2\n")
    below = tmp_path / "services/billing"
    below.mkdir(parents=True)
    assert find_token({}, below) == "t2"
    named = tmp_path / "elsewhere.token"
    named.write_text("t3")
    assert find_token({"ESIMCTL_TOKEN_FILE": str(named)}, tmp_path) == "t3"
    with pytest.raises(CtlError, match="no operator token"):
        find_token({"ESIMCTL_TOKEN_FILE": str(tmp_path / "absent")}, tmp_path)


UNKNOWN_PAYMENT = {
    "renewal_id": RENEWAL,
    "state": "unknown",
    "unknown_step": "capture",
    "unknown_since": "2026-12-01T12:00:00Z",
    "method": "paypal",
    "price": {"amount": 9900, "currency": "CNY"},
    "last_error": "GatewayUnavailableError: timeout",
    "capture_before": "2026-12-04T12:00:00Z",
    "capture_overdue_at": "2026-12-04T12:00:01Z",
}


def test_payments_unknown_lists_them_and_fails_while_there_are_any(
    serve: Any, calls: list[httpx.Request]
) -> None:
    answers = iter([[UNKNOWN_PAYMENT], []])
    serve(lambda request: httpx.Response(200, json=next(answers)))

    listed = run("payments", "unknown", "--all")
    assert listed.exit_code == 1
    assert f"{RENEWAL}  unknown (capture)  paypal 9900 CNY" in listed.output
    assert "1 payment(s) unknown" in listed.output
    assert calls[0].url.path == "/v1/payments/unknown" and calls[0].url.params["every"] == "true"
    none = run("payments", "unknown")
    assert none.exit_code == 0 and none.output.strip() == "no payments unknown"


def test_payments_overdue_names_the_capture_window(serve: Any) -> None:
    serve(lambda request: httpx.Response(200, json=[UNKNOWN_PAYMENT]))
    listed = run("payments", "overdue")
    assert listed.exit_code == 1
    assert "capture before 2026-12-04T12:00:00Z" in listed.output


def test_payments_reconcile_prints_every_difference_and_exits_non_zero(
    serve: Any, calls: list[httpx.Request]
) -> None:
    report = {
        "since": "2026-12-01T00:00:00Z",
        "checked_at": "2026-12-02T00:00:00Z",
        "provider_payments": 3,
        "billing_payments": 2,
        "differences": [
            {
                "kind": "unknown_capture",
                "method": "card",
                "reference": RENEWAL,
                "provider_reference": "pi_1",
                "billing": "no payment",
                "provider": "9900 CNY captured (captured)",
            }
        ],
    }
    answers = iter([report, report | {"differences": []}])
    serve(lambda request: httpx.Response(200, json=next(answers)))

    found = run("payments", "reconcile", "--since", "2026-12-01T00:00:00Z")
    assert found.exit_code == 1
    assert f"unknown_capture  card    {RENEWAL}" in found.output
    assert "1 difference(s) since 2026-12-01T00:00:00Z" in found.output
    assert calls[0].url.params["since"] == "2026-12-01T00:00:00Z"
    clean = run("payments", "reconcile")
    assert clean.exit_code == 0 and "0 difference(s)" in clean.output


def test_payments_reconcile_refuses_a_time_without_an_offset() -> None:
    refused = run("payments", "reconcile", "--since", "2026-12-01T00:00:00")
    assert refused.exit_code == 2 and "offset" in refused.output


def test_the_cli_starts_without_the_services_broker_framework() -> None:
    """A command needs no FastStream (only aiokafka's clients), and importing it is half of the
    CLI's start: one process, started fresh, so the import is the CLI's own."""
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, esimctl.cli; print('faststream' in sys.modules)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert loaded.stdout.strip() == "False"
