"""`esimctl` against the running platform: a saga's timeline, errors, outboxes, dead letters."""

import json
import subprocess
import sys
import uuid
from typing import Any

import pytest

from tests.support.client import PlainKafka, Traveller, renewal_requested_event
from tests.support.infra import ROOT, SERVICES, Platform, wait_until

pytestmark = pytest.mark.integration


def esimctl(platform: Platform, *args: str) -> subprocess.CompletedProcess[str]:
    """Run `esimctl` as an operator would, pointed at this platform."""
    env = {
        **platform.common_env(),
        "OPERATOR_TOKEN": platform.operator_token,
        **{f"ESIMCTL_{name.upper()}_URL": platform.url(name) for name in SERVICES},
    }
    return subprocess.run(
        [sys.executable, "-m", "esimctl", *args],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def as_json(done: subprocess.CompletedProcess[str]) -> Any:
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def kafka_client(platform: Platform) -> Any:
    client = PlainKafka(platform.kafka)
    yield client
    client.close()


def test_sagas_show_prints_the_timeline_ending_activated(platform: Platform) -> None:
    """About 10 s: a renewal, then four `esimctl` runs, each a new Python process (some 2 s of
    imports on a loaded 2-core machine), as an operator runs it."""
    traveller = Traveller.register(platform)
    iccid = traveller.bind_new_card()
    renewal_id = traveller.renew(iccid).json()["renewal_id"]
    traveller.wait_for_status(renewal_id, "ACTIVATED", timeout=90)

    # A card is held, then captured once the plan is active: the capture ends the timeline.
    shown = wait_until(
        lambda: (
            (run := esimctl(platform, "sagas", "show", renewal_id)).returncode == 0
            and "payment (billing):\n  settled" in run.stdout
            and run
        ),
        what="the capture in the saga's report",
    )
    timeline = shown.stdout.split("timeline:")[1].split("events published")[0]
    steps = [line.split()[1:3] for line in timeline.strip().splitlines()]
    assert ["profile_activated", "ACTIVATED"] in steps, steps
    assert steps[-1] == ["payment_captured", "ACTIVATED"], steps
    assert "payment (billing):\n  settled" in shown.stdout
    assert "bundle (provisioning):\n  activated" in shown.stdout
    report = as_json(esimctl(platform, "sagas", "show", renewal_id, "--json"))
    assert report["saga"]["status"] == "ACTIVATED"
    assert report["payment"]["state"] == "settled"
    assert report["activation"]["bundle_state"] == "active"
    assert {e["type"] for e in report["saga"]["events"]} >= {"esim.payment.requested.v1"}
    # An ended saga can be neither retried nor compensated, and says so without a traceback.
    for action in ("retry", "compensate"):
        refused = esimctl(platform, "sagas", action, renewal_id)
        assert refused.returncode == 1
        assert "ACTIVATED" in refused.stderr and "Traceback" not in refused.stderr


def test_a_wrong_id_or_an_unreachable_service_is_one_sentence(platform: Platform) -> None:
    unknown = esimctl(platform, "sagas", "show", str(uuid.uuid4()))
    assert unknown.returncode == 1
    assert "no renewal" in unknown.stderr and "Traceback" not in unknown.stderr
    malformed = esimctl(platform, "sagas", "retry", "not-a-uuid")
    assert malformed.returncode == 2 and "not a renewal id" in malformed.stderr

    env = {"ESIMCTL_ACCOUNTS_URL": "http://127.0.0.1:9"}
    unreachable = subprocess.run(
        [sys.executable, "-m", "esimctl", "sagas", "stuck"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "OPERATOR_TOKEN": platform.operator_token, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert unreachable.returncode == 1
    assert "accounts is not reachable at http://127.0.0.1:9" in unreachable.stderr
    assert "Traceback" not in unreachable.stderr


def test_a_wrong_operator_token_is_refused(platform: Platform) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "esimctl", "outbox", "status"],
        cwd=ROOT,
        env={
            "PATH": "/usr/bin:/bin",
            "OPERATOR_TOKEN": "not-the-token-at-all",
            **{f"ESIMCTL_{name.upper()}_URL": platform.url(name) for name in SERVICES},
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "refused the operator token" in done.stdout + done.stderr


def test_outbox_status_and_stuck_answer_for_every_service(platform: Platform) -> None:
    """About 10 s: a renewal, and `esimctl` runs (a new process each) until every outbox drained."""

    def outboxes() -> dict[str, Any]:
        status: dict[str, Any] = as_json(esimctl(platform, "outbox", "status", "--json"))
        return status

    settled_before = outboxes()["billing"]["published_kept"]
    traveller = Traveller.register(platform)
    iccid = traveller.bind_new_card()
    renewal_id = traveller.renew(iccid).json()["renewal_id"]
    traveller.wait_for_status(renewal_id, "ACTIVATED", timeout=90)
    # The renewal's PaymentAuthorized and PaymentSettled (after the capture) are billing's only
    # events since.
    wait_until(
        lambda: outboxes()["billing"]["published_kept"] == settled_before + 2,
        what="billing's two events of the renewal",
    )
    wait_until(
        lambda: all(row["unpublished"] == 0 for row in outboxes().values()),
        timeout=30,
        what="every outbox drained",
    )
    status = outboxes()
    assert set(status) == set(SERVICES)
    assert status["billing"]["published_kept"] == settled_before + 2
    stuck = as_json(esimctl(platform, "sagas", "stuck", "--older-than", "0.001", "--json"))
    assert renewal_id not in {item["renewal_id"] for item in stuck}
    assert all(item["stuck"] for item in stuck), stuck


def test_dlq_replay_redelivers_a_dead_letter_once_its_cause_is_fixed(
    platform: Platform, kafka_client: PlainKafka
) -> None:
    """About 12 s: a dead letter, a renewal, and some six `esimctl` runs (a new process each)."""
    traveller = Traveller.register(platform)
    iccid = traveller.bind_new_card()
    renewal_id = str(uuid.uuid4())
    topic = platform.topic("esim.payment.failed")
    # A PaymentFailed for a renewal accounts does not know yet: dead-lettered.
    failed = {
        "specversion": "1.0",
        "id": str(uuid.uuid4()),
        "source": "/services/billing",
        "type": "esim.payment.failed.v1",
        "subject": iccid,
        "time": "2026-11-24T10:00:00.000Z",
        "datacontenttype": "application/json",
        "renewalid": renewal_id,
        "data": {
            "renewal_id": renewal_id,
            "payment_id": "pay_replayed",
            "iccid": iccid,
            "reason": "declined",
            "attempts": 1,
            "failed_at": "2026-11-24T10:00:01.000Z",
        },
    }
    kafka_client.send(topic, iccid, failed)
    kafka_client.records(
        f"{topic}.dlq",
        lambda r: r.value.startswith(b"{") and json.loads(r.value)["id"] == failed["id"],
    )
    listed = as_json(esimctl(platform, "dlq", "list", topic, "--json"))
    mine = [item for item in listed if item["key"] == iccid]
    assert mine and "not known to accounts" in mine[0]["headers"]["x-error"]
    position = f"{mine[0]['partition']}:{mine[0]['offset']}"
    shown = as_json(esimctl(platform, "dlq", "show", topic, position))
    assert shown["value"]["id"] == failed["id"]

    # The cause is fixed: the renewal now exists (and fails for real, declined).
    request = renewal_requested_event(
        user_id=traveller.user_id, iccid=iccid, token="card_declined", renewal_id=renewal_id
    )
    kafka_client.send(platform.topic("esim.renewal.requested"), iccid, request)
    traveller.wait_for_status(renewal_id, "PAYMENT_FAILED")

    replayed = esimctl(platform, "dlq", "replay", topic)
    assert replayed.returncode == 0, replayed.stderr

    def consumed() -> bool:
        saga = as_json(esimctl(platform, "sagas", "show", renewal_id, "--json"))["saga"]
        return any(step["event_id"] == failed["id"] for step in saga["timeline"])

    wait_until(consumed, timeout=60, what="the replayed PaymentFailed in the saga's timeline")
    again = [
        item
        for item in as_json(esimctl(platform, "dlq", "list", topic, "--json"))
        if item["key"] == iccid
    ]
    assert len(again) == 1  # handled this time, not dead-lettered a second time
