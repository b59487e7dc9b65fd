"""A service killed with SIGKILL in the middle of a renewal: the renewal still ends right."""

import httpx
import pytest

from tests.support.client import Traveller, captures_of, ledger
from tests.support.infra import Platform, wait_until

pytestmark = pytest.mark.integration


def test_accounts_killed_after_accepting_a_renewal(platform: Platform) -> None:
    """About 15 s: accounts starts again, and the broker hands the killed consumer's partitions on
    only once its session (10 s) has run out."""
    traveller = Traveller.register(platform)
    iccid = traveller.bind_new_card()
    renewal_id = traveller.renew(iccid, "card_slow").json()["renewal_id"]
    platform.processes["accounts"].kill()
    platform.restart("accounts")

    traveller.wait_for_status(renewal_id, "ACTIVATED", timeout=90)
    assert len(captures_of(platform, renewal_id)) == 1


def test_billing_killed_while_charging(platform: Platform) -> None:
    """About 20 s: the charge the killed billing had claimed is taken up again only when its lease
    (15 s on the test platform) runs out."""
    traveller = Traveller.register(platform)
    iccid = traveller.bind_new_card()
    renewal_id = traveller.renew(iccid, "card_slow").json()["renewal_id"]
    wait_until(
        lambda: (
            httpx.get(
                f"{platform.url('billing')}/v1/payments/{renewal_id}",
                headers=platform.operator_headers,
            ).status_code
            == 200
        ),
        what="billing to take the payment",
    )
    platform.processes["billing"].kill()  # the sandbox is still holding the slow charge
    platform.restart("billing")

    traveller.wait_for_status(renewal_id, "ACTIVATED", timeout=90)
    assert len(captures_of(platform, renewal_id)) == 1


def test_provisioning_killed_while_following_an_activation(platform: Platform) -> None:
    """About 12 s: a slow activation (5 s at the sandbox) and a restart of provisioning."""
    traveller = Traveller.register(platform)
    iccid = traveller.bind_new_card()
    httpx.post(f"{platform.url('esim')}/sandbox/faults", json={"iccid": iccid, "mode": "slow"})
    renewal_id = traveller.renew(iccid, "card_ok").json()["renewal_id"]
    wait_until(
        lambda: ledger(platform, "esim", reference=renewal_id)["orders"],
        what="the bundle order",
    )
    platform.processes["provisioning"].kill()
    platform.restart("provisioning")

    traveller.wait_for_status(renewal_id, "ACTIVATED", timeout=90)
    assert len(ledger(platform, "esim", reference=renewal_id)["orders"]) == 1
    assert len(captures_of(platform, renewal_id)) == 1


def test_notifier_killed_before_confirming(platform: Platform) -> None:
    """About 12 s: the renewal ends while the notifier is down, then the notifier starts again
    and its consumer group settles before the mail goes out."""
    traveller = Traveller.register(platform)
    iccid = traveller.bind_new_card()
    platform.processes["notifier"].kill()
    renewal_id = traveller.renew(iccid, "card_ok").json()["renewal_id"]
    traveller.wait_for_status(renewal_id, "ACTIVATED")
    platform.restart("notifier")

    def mails() -> list[str]:
        return [
            p.read_text(errors="replace")
            for p in platform.mail_dir.glob("*.eml")
            if iccid in p.read_text(errors="replace")
        ]

    wait_until(mails, what="the confirmation mail")
    listing = httpx.get(
        f"{platform.url('notifier')}/v1/notifications",
        params={"iccid": iccid},
        headers=platform.operator_headers,
    )
    assert listing.status_code == 200
    assert len(mails()) == 1
