"""Tracing with OpenTelemetry: one renewal is one trace through the four services.

The trace context travels the way the work does. An HTTP request (FastAPI's instrumentation)
or a consumed event (its CloudEvents `traceparent` attribute, else its Kafka header) opens a
span; every event the work adds to the outbox carries that span's `traceparent` in its value,
and the relay publishes it as the Kafka header too; due work (a charge, an activation, a send)
stores the `traceparent` of the transaction that created its row, and each round of it opens
a span under it. Calls to outside systems and database transactions are spans of their own,
and the outside call carries the W3C `traceparent` header.

Spans are exported only when the standard settings ask for it: `OTEL_TRACES_EXPORTER=otlp`
(or `console`), or an `OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`;
the OTLP/HTTP exporter reads the rest (`OTEL_EXPORTER_OTLP_HEADERS`, ...), the sampler
`OTEL_TRACES_SAMPLER`, the resource `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES`.
Without an exporter, spans are not recorded (no processor, no memory), but they still get
their ids: log lines carry `trace_id` and `span_id`, and events carry `traceparent`, so one
renewal's lines can be found with one query either way. `OTEL_SDK_DISABLED=true` turns even
that off.
"""

import logging
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import Link, NonRecordingSpan, Span, SpanContext, SpanKind, TraceFlags

from esim_core.settings import SettingsError

logger = logging.getLogger(__name__)

TRACER = trace.get_tracer("esim_core")
TRACEPARENT = "traceparent"
# W3C trace context, version 00: 32 and 16 lowercase hex digits, neither all zeros.
_TRACEPARENT = re.compile(rb"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_IN_VALUE = b'"traceparent":"'
_provider: TracerProvider | None = None
#: Whether spans are recorded (exported): only then are their attributes and links worth
#: building. False once `configure_tracing` installed a provider without exporters; True
#: before that (a test's own provider records).
_recording = True


def configure_tracing(
    service: str, environ: Mapping[str, str] = os.environ
) -> TracerProvider | None:
    """Install this process's tracer provider once, as the `OTEL_*` settings describe.

    Returns the provider (None when `OTEL_SDK_DISABLED` is true, or when one was installed
    before, as a test does with an in-memory exporter).

    Raises:
        SettingsError: `OTEL_TRACES_EXPORTER` or the OTLP protocol names what this service
            does not ship.
    """
    global _provider, _recording
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    if _provider is not None or _installed_elsewhere():
        return _provider
    exporters = _exporters(environ)
    _recording = bool(exporters)
    resource = Resource.create({"service.name": environ.get("OTEL_SERVICE_NAME") or service})
    # Not exporting: ids for logs and events, but no span is recorded (ALWAYS_OFF).
    provider = TracerProvider(resource=resource, sampler=None if exporters else ALWAYS_OFF)
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _provider = provider
    if exporters:
        names = ", ".join(type(exporter).__name__ for exporter in exporters)
        logger.info("tracing: spans of %s are exported by %s", service, names)
    return provider


def _installed_elsewhere() -> bool:
    return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


def _exporters(environ: Mapping[str, str]) -> list[Any]:
    named = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    wanted = [name.strip() for name in named.split(",") if name.strip()]
    if not wanted:
        wanted = ["otlp"] if endpoint else []
    exporters: list[Any] = []
    for name in wanted:
        if name == "none":
            continue
        if name == "otlp":
            protocol = environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get(
                "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
            )
            if protocol != "http/protobuf":
                raise SettingsError(
                    f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r}: this service exports OTLP over "
                    "HTTP only ('http/protobuf'); point it at the collector's HTTP port (4318)"
                )
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            traces = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            base = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
            # As the exporter reads them (headers, timeout, ... it takes from the environment).
            url = traces or (f"{base.rstrip('/')}/v1/traces" if base else None)
            exporters.append(OTLPSpanExporter(endpoint=url))
        elif name == "console":
            exporters.append(ConsoleSpanExporter())
        else:
            raise SettingsError(
                f"OTEL_TRACES_EXPORTER={named!r}: {name!r} is not one of otlp, console, none"
            )
    return exporters


def shutdown_tracing() -> None:
    """Export what is buffered and stop exporting (at the end of a service's stop)."""
    if _provider is not None:
        _provider.shutdown()


def current_traceparent() -> str | None:
    """The W3C `traceparent` of the span current here; None outside any span."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def parent_from(traceparent: str | bytes | None) -> Context | None:
    """A context whose span is the remote one `traceparent` names; None for none or a bad one."""
    if not traceparent:
        return None
    raw = traceparent.encode() if isinstance(traceparent, str) else traceparent
    found = _TRACEPARENT.fullmatch(raw.strip().lower())
    if found is None:
        return None
    trace_id, span_id = int(found[1], 16), int(found[2], 16)
    if not trace_id or not span_id:
        return None
    remote = SpanContext(
        trace_id, span_id, is_remote=True, trace_flags=TraceFlags(int(found[3], 16) & 1)
    )
    return trace.set_span_in_context(NonRecordingSpan(remote))


def traceparent_in(value: bytes) -> str | None:
    """The `traceparent` attribute of an event's JSON value, found without parsing all of it.

    The envelope's attributes come before its `data`, and a quote inside a JSON string is
    escaped, so the first unescaped `"traceparent":"` is the envelope's attribute.
    """
    start = value.find(_IN_VALUE)
    if start < 0:
        return None
    start += len(_IN_VALUE)
    found = _TRACEPARENT.match(value, start)
    return found[0].decode() if found is not None else None


@contextmanager
def span(
    name: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    parent: str | bytes | None = None,
    attributes: Mapping[str, Any] | None = None,
    links: Sequence[str | bytes | None] = (),
) -> Iterator[Span]:
    """A span current for the block: under `parent` (a traceparent) where one is given and
    valid, else under the span current here (a new trace where there is none); linked to the
    spans that `links` (traceparents) name. Attributes and links are left out where spans are
    not recorded (`recording`): nobody sees them, and a batch's links cost a parse each."""
    context = parent_from(parent) if parent is not None else None
    with TRACER.start_as_current_span(
        name,
        context=context,
        kind=kind,
        attributes=dict(attributes) if attributes and _recording else None,
        links=_links(links) if links and _recording else None,
    ) as current:
        yield current


def recording() -> bool:
    """Whether this process records spans: without an exporter it only keeps their ids."""
    return _recording


def _links(traceparents: Sequence[str | bytes | None]) -> list[Link]:
    found = []
    for traceparent in traceparents:
        context = parent_from(traceparent)
        if context is not None:
            found.append(Link(trace.get_current_span(context).get_span_context()))
    return found


def detached_span(
    name: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    parent: str | bytes | None = None,
    attributes: Mapping[str, Any] | None = None,
) -> Span:
    """A started span that is not made current, under `parent` or else a root; `end()` it."""
    context = parent_from(parent) or Context()
    return TRACER.start_span(
        name,
        context=context,
        kind=kind,
        attributes=dict(attributes) if attributes and _recording else None,
    )


def traceparent_field() -> Any:
    """The `traceparent` column of a due-work row: the trace context of the transaction that
    made the row due (the span current when the row is built), which its rounds continue."""
    from sqlmodel import Field

    return Field(
        default_factory=current_traceparent,
        max_length=64,
        description="the W3C trace context of the transaction that made it due; its rounds "
        "continue that trace (esim_core.observability.tracing)",
    )


def log_ids() -> dict[str, str]:
    """`trace_id` and `span_id` of the span current here, for a log line; empty outside one."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return {}
    return {"trace_id": f"{context.trace_id:032x}", "span_id": f"{context.span_id:016x}"}
