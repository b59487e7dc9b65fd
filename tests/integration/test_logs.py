"""The services' logs on a running platform: JSON lines of one schema, and no secrets."""

import json

import pytest

from tests.support.client import Traveller
from tests.support.infra import SERVICES, Platform

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
        assert platform.operator_token not in text
        assert traveller.token not in text
        assert "correct horse 1" not in text
