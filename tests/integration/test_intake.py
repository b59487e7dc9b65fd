"""The intake limit on the real broker: past `ACCOUNTS_MAX_SAGAS_IN_FLIGHT` sagas waiting on a
payment or an activation, new requests wait in Kafka, and each is taken as room frees."""

from collections.abc import Iterator

import pytest

from tests.support.client import Traveller, captures_of
from tests.support.infra import Platform, Process, wait_until

pytestmark = pytest.mark.integration

LIMIT = 2
RENEWALS = 6


@pytest.fixture
def limited_accounts(platform: Platform) -> Iterator[Process]:
    """Accounts restarted with a small intake limit; the usual one is back afterwards."""
    platform.processes["accounts"].stop()
    limited = platform.service_process("accounts")
    limited.env = {**limited.env, "ACCOUNTS_MAX_SAGAS_IN_FLIGHT": str(LIMIT)}
    platform.processes["accounts"] = limited.start()
    try:
        yield limited
    finally:
        limited.stop()
        platform.restart("accounts")


def test_new_requests_wait_while_the_sagas_in_flight_are_at_the_limit(
    platform: Platform, limited_accounts: Process
) -> None:
    """About 15 s: six `_slow` charges (2 s each) go through two at a time, and accounts is
    restarted before and after with another intake limit."""
    traveller = Traveller.register(platform)
    cards = [traveller.bind_new_card() for _ in range(RENEWALS)]
    log_start = limited_accounts.log_path.stat().st_size
    # `_slow` charges take about 2 s at the gateway: the first two hold the intake that long.
    renewals = [traveller.renew(iccid, "card_slow").json()["renewal_id"] for iccid in cards]
    most_in_flight = 0
    waited = 0

    def all_activated() -> bool:
        nonlocal most_in_flight, waited
        statuses = [traveller.get(f"/v1/renewals/{rid}").json()["status"] for rid in renewals]
        most_in_flight = max(
            most_in_flight, sum(status in ("PAYMENT_PENDING", "PAID") for status in statuses)
        )
        if most_in_flight == LIMIT:
            waited = max(waited, statuses.count("REQUESTED"))
        return all(status == "ACTIVATED" for status in statuses)

    wait_until(all_activated, timeout=120, what="every renewal activated")

    assert most_in_flight == LIMIT
    assert waited >= 1, "no request was seen waiting while the limit was reached"
    for renewal_id in renewals:
        assert len(captures_of(platform, renewal_id)) == 1
    log = limited_accounts.log_path.read_bytes()[log_start:].decode()
    assert "holding back new work (esim.renewal.requested" in log
    assert "taking new work" in log
