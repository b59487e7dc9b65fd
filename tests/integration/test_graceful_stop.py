"""SIGTERM under load: each service exits within its stop bound and leaves nothing unworked.

A stop may land on any line: a batch being consumed, a charge or an order in flight, an outbox
row not yet relayed. Whatever the stopping process consumed must still be worked, by it before
it exits or by the process that takes over, exactly once.
"""

import signal
import time
from collections import Counter

import httpx
import pytest

from tests.support.client import Traveller, captures_of, ledger
from tests.support.infra import SERVICES, Platform, wait_until

pytestmark = pytest.mark.integration

# ServiceSettings.stop_timeout_s (15 s), plus the time a Python process needs to exit.
STOP_BOUND_S = 15.0 + 5.0
# Tokens that keep rounds in flight when the signal comes: slow captures, retried captures.
TOKENS = ("card_ok", "paypal_slow", "alipay_flaky", "card_ok", "card_slow")
RENEWALS = 20


def stop_with_sigterm(platform: Platform, service: str) -> tuple[float, int]:
    """SIGTERM the service; returns how long it took to exit and its exit status."""
    popen = platform.processes[service].popen
    assert popen is not None and popen.poll() is None
    began = time.monotonic()
    popen.send_signal(signal.SIGTERM)
    try:
        status = popen.wait(STOP_BOUND_S + 15)
    finally:
        platform.processes[service].kill()  # only if it is still there
    return time.monotonic() - began, status


def in_flight(platform: Platform, service: str, renewal_ids: list[str]) -> bool:
    """Tell whether the service has begun working the burst (so the stop lands mid-load)."""
    if service == "billing":
        payments = ledger(platform, "payment")
        return bool(payments["authorizations"] or payments["captures"])
    if service == "provisioning":
        return any(ledger(platform, "esim", reference=r)["orders"] for r in renewal_ids[:5])
    return True  # accounts and the notifier are stopped right after the burst was sent


@pytest.mark.parametrize("service", SERVICES)
def test_sigterm_under_load_exits_in_bound_and_every_renewal_ends_once(
    platform: Platform, service: str
) -> None:
    """About 15 to 25 s each: 20 renewals, with slow and retried captures, are in flight when the
    service is stopped, and every one must end (and be confirmed) after it starts again."""
    traveller = Traveller.register(platform)
    cards = [traveller.bind_new_card() for _ in range(4)]
    renewal_ids: list[str] = []
    for index in range(RENEWALS):
        response = traveller.renew(cards[index % len(cards)], TOKENS[index % len(TOKENS)])
        assert response.status_code == 202, response.text
        renewal_ids.append(response.json()["renewal_id"])
    wait_until(lambda: in_flight(platform, service, renewal_ids), what=f"{service} at work")

    took, status = stop_with_sigterm(platform, service)
    assert status == 0 or status == -signal.SIGTERM or status == 128 + signal.SIGTERM, (
        f"{service} did not stop by itself (exit status {status})"
    )
    assert took <= STOP_BOUND_S, f"{service} took {took:.1f} s to stop on SIGTERM"
    platform.restart(service)

    for renewal_id in renewal_ids:
        traveller.wait_for_status(renewal_id, "ACTIVATED", timeout=120)
    for renewal_id in renewal_ids:
        assert len(captures_of(platform, renewal_id)) == 1
        assert len(ledger(platform, "esim", reference=renewal_id)["orders"]) == 1

    def confirmations() -> Counter[str]:
        sent: Counter[str] = Counter()
        for iccid in cards:
            listing = httpx.get(
                f"{platform.url('notifier')}/v1/notifications",
                params={"iccid": iccid},
                headers=platform.operator_headers,
            )
            listing.raise_for_status()
            for item in listing.json():
                if item["kind"] == "profile_activated" and item["status"] == "sent":
                    sent[item["renewal_id"]] += 1
        return sent

    wait_until(
        lambda: set(confirmations()) >= set(renewal_ids), timeout=120, what="every confirmation"
    )
    assert all(confirmations()[renewal_id] == 1 for renewal_id in renewal_ids)
