"""The bench's traced path (`--trace`): spans as the services export them, steps that add up."""

import urllib.error
import urllib.request

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from tests.bench.traces import Receiver, Span, paths, render, summarize

MS = 1_000_000


def test_the_receiver_keeps_what_an_sdk_exporter_sends_with_service_and_parents() -> None:
    with Receiver() as receiver:
        provider = TracerProvider(resource=Resource.create({"service.name": "billing"}))
        provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(receiver.endpoint)))
        tracer = provider.get_tracer("test")
        with (
            tracer.start_as_current_span("charging payment"),
            tracer.start_as_current_span("POST /stripe/v1"),
        ):
            pass
        provider.shutdown()
        spans = receiver.taken()
    by_name = {span.name: span for span in spans}
    assert set(by_name) == {"charging payment", "POST /stripe/v1"}
    assert {span.service for span in spans} == {"billing"}
    outer, inner = by_name["charging payment"], by_name["POST /stripe/v1"]
    assert inner.parent == outer.id and inner.trace == outer.trace
    assert outer.parent == ""
    assert outer.start_ns <= inner.start_ns <= inner.end_ns <= outer.end_ns


def test_the_receiver_refuses_a_body_that_is_not_an_export() -> None:
    with Receiver() as receiver:
        request = urllib.request.Request(receiver.endpoint, data=b"\xff\x00not protobuf")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=5)
        assert refused.value.code == 400
        assert receiver.taken() == []


def span(
    service: str,
    name: str,
    id_: str,
    parent: str,
    start_ms: float,
    end_ms: float,
    trace: str = "t1",
) -> Span:
    return Span(service, name, trace, id_, parent, int(start_ms * MS), int(end_ms * MS))


def renewal(trace: str, offset_ms: float, call_ms: float) -> list[Span]:
    """One renewal's spans as the services make them: a consumer's span, its transaction, the
    relay's publish and the next service's consumer span both under that transaction, a due
    round with the call and the transaction that records its answer, then the final publish;
    plus another service's consumer span of the same event, not on the path."""
    o, c, t = offset_ms, call_ms, trace
    return [
        span("accounts", "process a", f"{t}1", "", o + 0, o + 5, t),
        span("accounts", "db transaction", f"{t}2", f"{t}1", o + 0.5, o + 4.5, t),
        span("accounts", "publish b", f"{t}3", f"{t}2", o + 5, o + 9, t),
        span("billing", "process b", f"{t}4", f"{t}2", o + 12, o + 14, t),
        span("billing", "charging", f"{t}5", f"{t}4", o + 15, o + 30 + c, t),
        span("billing", "POST /pay", f"{t}6", f"{t}5", o + 16, o + 16 + c, t),
        span("billing", "db transaction", f"{t}7", f"{t}5", o + 20 + c, o + 25 + c, t),
        span("billing", "publish end", f"{t}8", f"{t}7", o + 26 + c, o + 29 + c, t),
        span("notifier", "process b", f"{t}9", f"{t}2", o + 11, o + 40, t),
    ]


def test_a_path_runs_from_the_root_to_the_end_span_and_its_steps_add_up() -> None:
    (path,) = paths(renewal("t1", 0, call_ms=6), "publish end")
    assert [(step.label, round(step.ms, 3)) for step in path] == [
        ("accounts: process a -> accounts: db transaction", 0.5),
        ("accounts: db transaction", 4.0),
        ("  then -> billing: process b", 7.5),
        ("billing: process b", 2.0),
        ("  then -> billing: charging", 1.0),
        ("billing: charging -> billing: db transaction", 11.0),
        ("billing: db transaction", 5.0),
        ("  then -> billing: publish end", 1.0),
        ("billing: publish end, until acknowledged", 3.0),
    ]
    assert sum(step.ms for step in path) == pytest.approx(35.0)
    # The relay's publish began 0.5 ms after the transaction ended (another service's consumer
    # of the same event, named with its service, 6.5 ms after), and the call 1 ms into the
    # round whose recording transaction ends that step.
    assert path[2].beside == (("publish b", 0.5, 4.0), ("notifier: process b", 6.5, 29.0))
    assert path[5].beside == (("POST /pay", 1.0, 6.0),)
    assert all(step.beside == () for index, step in enumerate(path) if index not in (2, 5))


def test_only_traces_whose_root_began_in_the_window_and_whose_chain_is_whole_count() -> None:
    early, late = renewal("t1", 0, call_ms=6), renewal("t2", 1000, call_ms=6)
    broken = [s for s in renewal("t3", 2000, call_ms=6) if s.name != "db transaction"]
    spans = early + late + broken
    assert len(paths(spans, "publish end")) == 2
    (only,) = paths(spans, "publish end", since_ns=500 * MS, until_ns=1500 * MS)
    assert only[0].label == "accounts: process a -> accounts: db transaction"
    assert paths(spans, "publish nothing") == []


def test_the_summary_takes_the_medians_of_the_most_common_path() -> None:
    spans = [s for index, call in enumerate((2, 4, 9)) for s in renewal(f"t{index}", 0, call)]
    other = [
        span("accounts", "process a", "x1", "", 0, 1, "x"),
        span("accounts", "publish end", "x2", "x1", 1, 2, "x"),
    ]
    summary = summarize(paths(spans + other, "publish end"))
    assert summary is not None
    assert (summary.traced, summary.taking) == (4, 3)
    label, p50, p90, beside = summary.rows[5]
    assert label == "billing: charging -> billing: db transaction"
    assert (p50, p90) == (9.0, 14.0)  # 5 ms besides a call of 2, 4 and 9 ms
    assert beside == "POST /pay at +1.0 for 4.0"
    assert summary.total_p50_ms == pytest.approx(33.0)
    text = render("kafka-1", summary)
    assert "kafka-1: the path of 3 of 4 traced renewals" in text
    assert "whole path" in text
    assert summarize([]) is None
    assert "no traced renewal" in render("kafka-1", None)
