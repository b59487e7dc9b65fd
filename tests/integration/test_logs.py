"""The services' logs on a running platform: JSON lines of one schema, and no secrets."""

import json
from typing import Any

import pytest

from tests.support.client import PlainKafka, Traveller, cloudevent
from tests.support.infra import SERVICES, Platform, wait_until

pytestmark = pytest.mark.integration

SCHEMA = {"time", "level", "service", "logger", "message"}


def test_every_service_logs_json_lines_of_one_schema_without_secrets(platform: Platform) -> None:
    traveller = Traveller.register(platform)
    iccid = traveller.bind_new_card()
    renewal_id = traveller.renew(iccid, "card_ok").json()["renewal_id"]
    traveller.wait_for_status(renewal_id, "ACTIVATED", timeout=90)

    for service in SERVICES:
        text = platform.processes[service].log_path.read_text(errors="replace")
        lines = [line for line in text.splitlines() if line.strip()]
        assert lines, f"{service} logged nothing"
        for line in lines:
            record = json.loads(line)  # fails on any plain-text line
            assert set(record) >= SCHEMA, record
            assert record["service"] == service
            # FastStream's routine "Received" and "Processed" for every batch stay out.
            routine = record["level"] in ("debug", "info")
            assert not (routine and record["logger"].startswith("faststream.access")), record
        assert platform.operator_token not in text
        assert traveller.token not in text
        assert "correct horse 1" not in text


def test_a_renewal_over_http_is_one_trace_in_all_four_services_logs(platform: Platform) -> None:
    traveller = Traveller.register(platform)
    iccid = traveller.bind_new_card()
    renewal_id = traveller.renew(iccid, "card_ok").json()["renewal_id"]
    traveller.wait_for_status(renewal_id, "ACTIVATED", timeout=90)

    kafka = PlainKafka(platform.kafka)
    try:
        [activated] = kafka.records(
            platform.topic("esim.profile.activated"),
            lambda record: cloudevent(record)["data"]["renewal_id"] == renewal_id,
            timeout=60,
        )
    finally:
        kafka.close()
    event = cloudevent(activated)
    trace_id = event["traceparent"].split("-")[1]
    assert dict(activated.headers or ())["traceparent"].decode() == event["traceparent"]

    def lines_of(service: str) -> list[dict[str, Any]]:
        text = platform.processes[service].log_path.read_text(errors="replace")
        records = [json.loads(line) for line in text.splitlines() if line.strip()]
        return [r for r in records if r.get("renewal_id") == renewal_id]

    # The notifier logs its send; give the last hop a moment to write it.
    wait_until(lambda: bool(lines_of("notifier")), timeout=30, what="the notifier's lines")
    for service in SERVICES:
        lines = lines_of(service)
        assert lines, f"{service} logged nothing about renewal {renewal_id}"
        assert {line.get("trace_id") for line in lines} == {trace_id}, (service, lines)
