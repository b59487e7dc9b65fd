"""Structured logs: one JSON schema for every logger, ids bound once, secrets never written."""

import io
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from esim_core.observability.logs import JsonLines, bind_ids, clear_ids, configure_logging


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    out = io.StringIO()
    configure_logging("billing", level="INFO", stream=out, log_file="", console=False)
    yield out
    clear_ids()
    for handler in list(logging.getLogger().handlers):
        if getattr(handler, "esim_core.observability.logs", False):
            logging.getLogger().removeHandler(handler)


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_library_line_gets_the_schema(stream: io.StringIO) -> None:
    logging.getLogger("aiokafka.consumer").warning("rebalance in %s", "group billing")
    [line] = lines(stream)
    assert line["service"] == "billing"
    assert line["logger"] == "aiokafka.consumer"
    assert line["level"] == "warning"
    assert line["message"] == "rebalance in group billing"
    assert str(line["time"]).endswith("Z")


def test_bound_ids_travel_on_every_line_until_cleared(stream: io.StringIO) -> None:
    bind_ids(renewal_id="r-1", iccid="8944", event_id="e-1", event_type="x.v1", trace_id=None)
    logging.getLogger("billing.handlers").info("charging")
    structlog.get_logger("billing.charging").info("captured", attempts=1)
    clear_ids()
    logging.getLogger("billing.handlers").info("idle")
    first, second, third = lines(stream)
    for line in (first, second):
        assert {k: line[k] for k in ("renewal_id", "iccid", "event_id", "event_type")} == {
            "renewal_id": "r-1",
            "iccid": "8944",
            "event_id": "e-1",
            "event_type": "x.v1",
        }
        assert "trace_id" not in line
    assert second["attempts"] == 1 and second["logger"] == "billing.charging"
    assert "renewal_id" not in third


def test_secrets_are_never_written(stream: io.StringIO) -> None:
    log = structlog.get_logger("accounts.api")
    log.info("login", password="hunter2", token="card_secret_ok", payload={"reset_code": "123456"})
    text = stream.getvalue()
    assert "hunter2" not in text and "card_secret_ok" not in text and "123456" not in text
    [line] = lines(stream)
    assert line["password"] == "***" and line["payload"] == {"reset_code": "***"}


def test_an_exception_is_one_json_line(stream: io.StringIO) -> None:
    try:
        raise ValueError("bad input")
    except ValueError:
        logging.getLogger("billing").exception("failed")
    [line] = lines(stream)
    assert "ValueError: bad input" in str(line["exception"])


def test_the_file_stays_json_when_stdout_is_for_people(tmp_path: Path) -> None:
    out = io.StringIO()
    log_file = tmp_path / "log" / "billing.log"
    configure_logging("billing", stream=out, log_file=str(log_file), console=True)
    try:
        logging.getLogger("billing").info("hello %s", "there")
    finally:
        for handler in list(logging.getLogger().handlers):
            if getattr(handler, "esim_core.observability.logs", False):
                logging.getLogger().removeHandler(handler)
                handler.close()
    assert "hello there" in out.getvalue() and not out.getvalue().startswith("{")
    [line] = [json.loads(raw) for raw in log_file.read_text().splitlines()]
    assert line["message"] == "hello there"


def test_routine_library_chatter_stays_out_but_its_warnings_come_through(
    stream: io.StringIO,
) -> None:
    logging.getLogger("httpx").info("HTTP Request: POST http://payments/v1/charges")
    logging.getLogger("faststream.access.kafka").info("Received")
    logging.getLogger("alembic.runtime.plugins").info("setup plugin alembic.autogenerate.tables")
    logging.getLogger("httpx").warning("connection pool is full")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["message"] for line in lines] == ["connection pool is full"]


def test_a_connected_broker_keeps_its_routine_lines_out_and_its_errors_in(
    stream: io.StringIO,
) -> None:
    # FastStream sets the level of an access logger of its own when it connects; the broker is
    # given the configured one instead, whose level it leaves alone.
    from esim_core.messaging.kafka import make_broker
    from esim_core.settings import ServiceSettings

    settings = ServiceSettings(database_url="sqlite+aiosqlite:///:memory:", http_port=8001)
    broker = make_broker(settings, "logs-test")
    broker._setup_logger()  # what its first connection does
    assert logging.getLogger("faststream.access.kafka").level == logging.WARNING
    broker.config.logger.log("Received")  # as its middleware does for every batch
    broker.config.logger.log("Processed")
    broker.config.logger.log("ValueError: a handler failed", log_level=logging.ERROR)
    assert [line["message"] for line in lines(stream)] == ["ValueError: a handler failed"]


def test_a_standard_library_line_is_the_one_structlogs_formatter_would_write(
    stream: io.StringIO,
) -> None:
    """`JsonLines` renders records itself; structlog's full chain is the oracle, key for key."""
    [handler] = [h for h in logging.getLogger().handlers if getattr(h, "stream", None) is stream]
    direct = handler.formatter
    assert isinstance(direct, JsonLines)
    oracle = direct._structured
    bind_ids(renewal_id="r-1", iccid="8944", event_id=None, session_token="abc")
    logger = logging.getLogger("billing.handlers")
    records = [
        logger.makeRecord("billing.handlers", logging.WARNING, "f", 1, "late %s", ("x",), None)
    ]
    try:
        raise ValueError("bad input")
    except ValueError:
        records.append(
            logger.makeRecord("billing", logging.ERROR, "f", 1, "failed", (), sys.exc_info())
        )
    for record in records:
        ours, theirs = json.loads(direct.format(record)), json.loads(oracle.format(record))
        assert ours.pop("time").endswith("Z") and theirs.pop("time").endswith("Z")
        assert ours == theirs
        assert ours["session_token"] == "***"
