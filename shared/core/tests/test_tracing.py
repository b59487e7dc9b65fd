"""Tracing: the trace context goes from a consumed event or a due row to the events it causes."""

import io
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from esim_core.duework.leases import LocalLock
from esim_core.duework.loop import work_due
from esim_core.messaging.consumer import EventConsumer, MessageInfo, Route
from esim_core.messaging.inbox import InboxEntry
from esim_core.messaging.outbox import Outbox, OutboxMessage, OutboxRelay
from esim_core.observability import tracing
from esim_core.observability.logs import configure_logging
from esim_core.outside.transport import TimedTransport
from esim_core.persistence.db import Database
from esim_core.settings import SettingsError, Topics
from esim_core.testing import temporary_database
from esim_schemas import CloudEvent, RenewalRejected, RenewalRequested, new_event
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from sqlmodel import Field, SQLModel, select
from sqlmodel.ext.asyncio.session import AsyncSession
from test_core_messaging import FakePublisher

ICCID = "8944500102198304826"
TRACE = "0af7651916cd43dd8448eb211c80319c"
PARENT = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE}-{PARENT}-01"


class DueThing(SQLModel, table=True):
    """A due-work row that keeps the trace context it was made due in."""

    __tablename__ = "test_due_thing"

    id: str = Field(primary_key=True)
    due_at: datetime | None = None
    lease_until: datetime | None = None
    traceparent: str | None = Field(default_factory=tracing.current_traceparent)


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(tracing, "TRACER", provider.get_tracer("test"))
    yield exporter
    provider.shutdown()


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[Database]:
    async with temporary_database(tmp_path, [OutboxMessage, InboxEntry, DueThing]) as db:
        yield db


def request(traceparent: str | None) -> CloudEvent[RenewalRequested]:
    data = RenewalRequested(
        renewal_id=uuid.uuid4(),
        user_id="u-1",
        iccid=ICCID,
        plan_code="JP-1D-1GB",
        payment={"method": "card", "token": "card_ok"},
        start="now",
        requested_at=datetime.now(UTC),
    )
    return new_event(data, source="/tests", traceparent=traceparent)


def named(exporter: InMemorySpanExporter, prefix: str) -> list[ReadableSpan]:
    return [span for span in exporter.get_finished_spans() if span.name.startswith(prefix)]


def rejection() -> RenewalRejected:
    return RenewalRejected(
        renewal_id=uuid.uuid4(), iccid=ICCID, reason="unknown_plan", detail="no such plan"
    )


async def test_a_consumed_event_continues_its_trace_into_what_it_publishes(
    database: Database, spans: InMemorySpanExporter
) -> None:
    outbox = Outbox("/services/test", Topics())
    out = io.StringIO()
    configure_logging("test", stream=out, log_file="", console=False)
    seen: list[str | None] = []

    async def handler(session: AsyncSession, event: CloudEvent[Any]) -> None:
        seen.append(tracing.current_traceparent())
        tracing.logger.info("handling it")
        outbox.add(session, rejection())

    consumer = EventConsumer(
        name="test",
        subscriptions={"esim.renewal.requested": [Route(RenewalRequested, handler)]},
        database=database,
        publisher=FakePublisher(),  # type: ignore[arg-type]
    )
    info = MessageInfo(topic="esim.renewal.requested", partition=0, offset=3, key=ICCID.encode())
    await consumer.handle(request(TRACEPARENT).to_json(), info)

    [consumed] = named(spans, "process esim.renewal.requested")
    assert consumed.kind == SpanKind.CONSUMER
    assert consumed.parent is not None and consumed.parent.span_id == int(PARENT, 16)
    assert f"{consumed.context.trace_id:032x}" == TRACE
    assert seen[0] is not None and seen[0].split("-")[1] == TRACE
    async with database.session() as session:
        [row] = (await session.exec(select(OutboxMessage))).all()
    stored = json.loads(row.value)["traceparent"]
    assert stored.split("-")[1] == TRACE
    [line] = [json.loads(text) for text in out.getvalue().splitlines() if "handling it" in text]
    assert line["trace_id"] == TRACE and len(line["span_id"]) == 16

    # The relay publishes the event with its trace context as the W3C header too.
    publisher = FakePublisher()
    relay = OutboxRelay(database, outbox, publisher, LocalLock())  # type: ignore[arg-type]
    assert await relay.relay_once() == 1
    [sent] = publisher.sent
    assert sent["headers"]["traceparent"] == stored
    [published] = named(spans, "publish esim.renewal.rejected")
    assert published.kind == SpanKind.PRODUCER
    assert f"{published.context.trace_id:032x}" == TRACE


async def test_an_event_without_a_trace_context_starts_one_and_a_header_one_is_taken(
    database: Database, spans: InMemorySpanExporter
) -> None:
    traces: list[str] = []

    async def handler(session: AsyncSession, event: CloudEvent[Any]) -> None:
        traceparent = tracing.current_traceparent()
        assert traceparent is not None
        traces.append(traceparent.split("-")[1])

    consumer = EventConsumer(
        name="test",
        subscriptions={"esim.renewal.requested": [Route(RenewalRequested, handler)]},
        database=database,
        publisher=FakePublisher(),  # type: ignore[arg-type]
    )
    topic = "esim.renewal.requested"
    await consumer.handle(request(None).to_json(), MessageInfo(topic, 0, 1, None))
    header = MessageInfo(topic, 0, 2, None, traceparent=TRACEPARENT.encode())
    await consumer.handle(request(None).to_json(), header)
    bad = MessageInfo(topic, 0, 3, None, traceparent=b"00-zz-nonsense-01")
    await consumer.handle(request(None).to_json(), bad)
    assert traces[0] != TRACE and traces[1] == TRACE and traces[2] not in (TRACE, traces[0])


async def test_a_due_round_continues_the_trace_its_row_was_made_due_in(
    database: Database, spans: InMemorySpanExporter
) -> None:
    with tracing.span("consume", parent=TRACEPARENT):
        async with database.session() as session:
            session.add(DueThing(id="a", due_at=datetime.now(UTC)))
    async with database.session() as session:
        session.add(DueThing(id="b", due_at=datetime.now(UTC)))  # outside any span
    worked: dict[str, str | None] = {}

    async def work(row: Any) -> None:
        worked[row.id] = tracing.current_traceparent()

    assert await work_due(database, DueThing, work, what="testing", rows=True) == 2
    assert worked["a"] is not None and worked["a"].split("-")[1] == TRACE
    assert worked["b"] is not None and worked["b"].split("-")[1] != TRACE
    rounds = named(spans, "testing")
    assert sorted(f"{span.context.trace_id:032x}" == TRACE for span in rounds) == [False, True]


async def test_an_outside_call_is_a_client_span_and_sends_its_traceparent(
    spans: InMemorySpanExporter,
) -> None:
    received: list[str | None] = []

    def answer(request: httpx.Request) -> httpx.Response:
        received.append(request.headers.get("traceparent"))
        return httpx.Response(503)

    transport = TimedTransport("gateway", httpx.MockTransport(answer))
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as client:
        with tracing.span("round", parent=TRACEPARENT):
            await client.post("/v1/charges/ch_1")
    [call] = named(spans, "POST /v1/charges")
    assert call.kind == SpanKind.CLIENT
    assert call.attributes is not None and call.attributes["http.response.status_code"] == 503
    assert received[0] is not None
    assert received[0] == f"00-{TRACE}-{call.context.span_id:016x}-01"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b'{"id":"1","traceparent":"' + TRACEPARENT.encode() + b'","data":{}}', TRACEPARENT),
        (b'{"id":"1","data":{"detail":"\\"traceparent\\":\\"x"}}', None),
        (b'{"id":"1","traceparent":"01-nonsense","data":{}}', None),
        (b"{}", None),
    ],
)
def test_the_traceparent_of_a_stored_value(value: bytes, expected: str | None) -> None:
    assert tracing.traceparent_in(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "garbage",
        f"00-{'0' * 32}-{PARENT}-01",
        f"00-{TRACE}-{'0' * 16}-01",
        f"00-{TRACE}-{PARENT}",
    ],
)
def test_a_missing_or_bad_traceparent_gives_no_parent(value: str | None) -> None:
    assert tracing.parent_from(value) is None


def test_exporters_follow_the_standard_settings() -> None:
    assert tracing._exporters({}) == []
    assert tracing._exporters({"OTEL_TRACES_EXPORTER": "none"}) == []
    [console] = tracing._exporters({"OTEL_TRACES_EXPORTER": "console"})
    assert type(console).__name__ == "ConsoleSpanExporter"
    endpoint = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}
    [otlp] = tracing._exporters(endpoint)
    assert type(otlp).__name__ == "OTLPSpanExporter"
    with pytest.raises(SettingsError, match="OTEL_TRACES_EXPORTER"):
        tracing._exporters({"OTEL_TRACES_EXPORTER": "zipkin"})
    with pytest.raises(SettingsError, match="http/protobuf"):
        tracing._exporters(endpoint | {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})


def test_the_sdk_can_be_switched_off() -> None:
    assert tracing.configure_tracing("test", {"OTEL_SDK_DISABLED": "true"}) is None


def test_spans_reach_an_otlp_receiver_over_http() -> None:
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    received: list[bytes] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        endpoint = f"http://127.0.0.1:{server.server_port}"
        [exporter] = tracing._exporters({"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint})
        provider = TracerProvider(resource=Resource.create({"service.name": "billing"}))
        provider.add_span_processor(BatchSpanProcessor(exporter))
        with provider.get_tracer("test").start_as_current_span("charge", context=None):
            pass
        assert provider.force_flush(10_000)
        provider.shutdown()
    finally:
        server.shutdown()
    request = ExportTraceServiceRequest()
    request.ParseFromString(received[0])
    [resource_spans] = request.resource_spans
    names = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
    assert names["service.name"] == "billing"
    assert [s.name for s in resource_spans.scope_spans[0].spans] == ["charge"]


def test_without_an_exporter_spans_keep_ids_but_skip_attributes_and_links() -> None:
    import subprocess
    import sys

    script = """
from esim_core.observability import tracing
from opentelemetry import trace
assert tracing.recording()
tracing.configure_tracing("billing", {})
assert not tracing.recording()
parent = "00-" + "a" * 32 + "-" + "b" * 16 + "-01"
with tracing.span("round", parent=parent, attributes={"k": "v"}, links=[parent]) as current:
    context = current.get_span_context()
    assert f"{context.trace_id:032x}" == "a" * 32 and not current.is_recording()
    assert tracing.log_ids()["trace_id"] == "a" * 32
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    exporting = "from esim_core.observability import tracing\n" + (
        "tracing.configure_tracing('billing', {'OTEL_TRACES_EXPORTER': 'console'})\n"
        "assert tracing.recording()\n"
    )
    done = subprocess.run([sys.executable, "-c", exporting], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
