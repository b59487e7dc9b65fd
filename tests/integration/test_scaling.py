"""Scaling out: two billing replicas share the topics' partitions; one is SIGKILLed mid-load and
the other takes its partitions and its claimed work over, with nothing lost or charged twice."""

from collections.abc import Iterator

import httpx
import pytest
from kafka import KafkaAdminClient

from tests.support.client import Traveller, captures_of
from tests.support.infra import Platform, Process, free_port, http_ok, wait_until

pytestmark = pytest.mark.integration

RENEWALS = 8


def group_members(platform: Platform, service: str) -> int:
    """How many replicas of `service` its consumer group holds once stable (0 while it is not)."""
    group = platform.group(service)
    admin = KafkaAdminClient(bootstrap_servers=platform.kafka)
    try:
        described = admin.describe_groups([group])[group]
        return len(described["members"]) if described["group_state"] == "Stable" else 0
    finally:
        admin.close()


@pytest.fixture
def second_billing(platform: Platform) -> Iterator[Process]:
    """Another billing replica on the same database, broker and group."""
    replica = platform.service_process("billing")
    port = free_port()
    replica.name = "billing-2"
    replica.env = {**replica.env, "BILLING_HTTP_PORT": str(port)}
    replica.log_path = platform.workdir / "billing-2.log"
    replica.ready = http_ok(f"http://127.0.0.1:{port}/health/ready")
    replica.start()
    try:
        yield replica
    finally:
        replica.stop()
        if platform.processes["billing"].popen is not None and (
            platform.processes["billing"].popen.poll() is not None
        ):
            platform.restart("billing")


def test_a_killed_replica_s_partitions_and_work_are_taken_over(
    platform: Platform, second_billing: Process
) -> None:
    """About 20 s: the group rebalances twice, and the charges the killed replica had claimed
    wait out their lease (15 s on the test platform)."""
    wait_until(lambda: group_members(platform, "billing") == 2, timeout=60, what="two members")
    traveller = Traveller.register(platform)
    cards = [traveller.bind_new_card() for _ in range(RENEWALS)]
    # `_slow` charges take about 2 s at the gateway: the replicas are mid-charge when one dies.
    renewals = [traveller.renew(iccid, "card_slow").json()["renewal_id"] for iccid in cards]

    def charging() -> bool:
        taken = [
            httpx.get(
                f"{platform.url('billing')}/v1/payments/{renewal_id}",
                headers=platform.operator_headers,
            ).status_code
            == 200
            for renewal_id in renewals
        ]
        return sum(taken) >= RENEWALS // 2

    wait_until(charging, timeout=60, what="billing to take half the payments")
    platform.processes["billing"].kill()

    for renewal_id in renewals:
        traveller.wait_for_status(renewal_id, "ACTIVATED", timeout=120)
    for renewal_id in renewals:
        captures = captures_of(platform, renewal_id)
        assert len(captures) == 1, (renewal_id, captures)
    assert second_billing.popen is not None and second_billing.popen.poll() is None
    wait_until(lambda: group_members(platform, "billing") == 1, timeout=60, what="one member")
