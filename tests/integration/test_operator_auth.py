"""Operator auth on the running services: 401 without the operator token, 200 with it."""

import os
import subprocess
import sys

import httpx
import pytest

from tests.support.client import Traveller
from tests.support.infra import ROOT, Platform, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def activated(platform: Platform) -> tuple[str, str]:
    """A renewal that went through, so every service has something to show: (renewal, iccid)."""
    traveller = Traveller.register(platform)
    iccid = traveller.bind_new_card()
    renewal_id = traveller.renew(iccid).json()["renewal_id"]
    traveller.wait_for_status(renewal_id, "ACTIVATED", timeout=90)
    return renewal_id, iccid


def operator_calls(platform: Platform, renewal_id: str, iccid: str) -> list[tuple[str, str]]:
    return [
        ("GET", f"{platform.url('billing')}/v1/payments/{renewal_id}"),
        ("GET", f"{platform.url('provisioning')}/v1/activations/{renewal_id}"),
        ("GET", f"{platform.url('provisioning')}/v1/activations?iccid={iccid}"),
        ("GET", f"{platform.url('notifier')}/v1/notifications?renewal_id={renewal_id}"),
    ]


def test_operator_endpoints_answer_401_without_the_token(
    platform: Platform, activated: tuple[str, str]
) -> None:
    for method, url in operator_calls(platform, *activated):
        for headers in ({}, {"Authorization": "Bearer not-the-operator-token"}):
            answer = httpx.request(method, url, headers=headers)
            assert answer.status_code == 401, (url, answer.text)
            assert answer.headers["content-type"] == "application/problem+json"
            assert answer.headers["www-authenticate"].startswith("Bearer")
    # A write is refused as well, before anything about the refund is looked at.
    retry = httpx.post(f"{platform.url('billing')}/v1/refunds/{activated[0]}/retry")
    assert retry.status_code == 401


def test_operator_endpoints_answer_with_the_token(
    platform: Platform, activated: tuple[str, str]
) -> None:
    renewal_id, _ = activated

    def answered() -> bool:
        return all(
            httpx.request(method, url, headers=platform.operator_headers).status_code == 200
            for method, url in operator_calls(platform, *activated)
        )

    # The notifier may still be writing its send log when the saga is already ACTIVATED.
    wait_until(answered, timeout=30, what="every operator endpoint to answer 200")
    payment = httpx.get(
        f"{platform.url('billing')}/v1/payments/{renewal_id}", headers=platform.operator_headers
    ).json()
    assert payment["state"] == "settled"


@pytest.mark.parametrize("service", ["accounts", "billing", "provisioning", "notifier"])
def test_health_metrics_and_the_api_document_stay_open(platform: Platform, service: str) -> None:
    base = platform.url(service)
    assert httpx.get(f"{base}/health/live").status_code == 200
    assert httpx.get(f"{base}/health/ready").status_code == 200
    assert httpx.get(f"{base}/metrics").status_code == 200
    document = httpx.get(f"{base}/openapi.json").json()
    guarded = [
        operation
        for path, item in document["paths"].items()
        if path.startswith("/v1/") and service != "accounts"
        for operation in item.values()
    ]
    for operation in guarded:
        assert "401" in operation["responses"], operation["operationId"]
        assert operation["security"] == [{"OperatorToken": []}]


@pytest.mark.parametrize("service", ["billing", "provisioning", "notifier"])
def test_a_service_without_a_token_refuses_to_start(service: str) -> None:
    """About 3 s a service alone; the bound is wide because under CI's five workers, with two
    platforms starting, a Python process importing a service took over a minute."""
    env = {key: value for key, value in os.environ.items() if key != "OPERATOR_TOKEN"}
    started = subprocess.run(
        [sys.executable, "-m", service],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert started.returncode != 0
    assert "OPERATOR_TOKEN: Field required" in started.stderr
