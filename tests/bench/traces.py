"""Where a renewal's time goes, step by step: the services' spans along its path (`--trace`).

The bench's latency table says how long each hop took; this says what inside a hop took it.
With `--trace` (`make bench TRACE=1`) the bench's own stack exports its spans over OTLP/HTTP to
a receiver in the bench (`Receiver`), and for each platform phase the report shows one
renewal's path, the median of every renewal of the phase that took the same path:

- the path is the chain of spans from the span that published `ProfileActivated` up through
  its parents to the trace's root (the renewal's `process esim.renewal.requested`, or the
  HTTP request that asked for it): a consumer's span, its transaction, the relay's publish,
  the next service's consumer span, a due-work round, its transaction, and so on;
- a step is the time from one span of the path starting to the next one starting where the
  next starts inside it (a consumer's span to its transaction); else two steps, the span to
  its end and the wait after it until the next starts (a transaction, then the relay and the
  broker until the next service's consumer span); the steps add up to the whole path, and
  the last is the final publish, until the broker acked it;
- what else the step's span started in that stretch, its other children (a call to the
  payment sandbox, the relay's publish), is named beside it, with when it began in the
  stretch and how long it took.

What a step holds follows from its ends: from a transaction to a publish, the transaction's
work and commit, then the relay's wake and read; from a publish to a consumer's span, the
relay's send, the broker, the next service's fetch and its decoding of the event; from a
transaction to a due-work round, the commit, the due loop's wake and its claim.

Recording spans costs the services CPU (attributes, the exporter's thread): a traced run is
slower than an untraced one and is not appended to the history. Read the shares, not the
total.
"""

import gzip
import itertools
import statistics
import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

#: How often the services' span processors export (OTEL_BSP_SCHEDULE_DELAY, ms).
EXPORT_EVERY_MS = 1000


@dataclass(frozen=True)
class Span:
    """What the path needs of one exported span."""

    service: str
    name: str
    trace: str
    id: str
    parent: str
    start_ns: int
    end_ns: int


class Receiver:
    """An OTLP/HTTP trace endpoint (protobuf, gzip or not) keeping every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                request = ExportTraceServiceRequest()
                try:
                    request.ParseFromString(body)
                except Exception:  # a body that is not an export: say so, keep serving
                    self.send_error(400, "not an OTLP ExportTraceServiceRequest")
                    return
                receiver.add(spans_of(request))
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        """The traces endpoint to give the services (OTEL_EXPORTER_OTLP_TRACES_ENDPOINT)."""
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1/traces"

    def environment(self) -> dict[str, str]:
        """The settings that make a service export its spans here."""
        return {
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": self.endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": str(EXPORT_EVERY_MS),
        }

    def add(self, spans: Iterable[Span]) -> None:
        with self._lock:
            self.spans.extend(spans)

    def taken(self) -> list[Span]:
        """Every span received so far."""
        with self._lock:
            return list(self.spans)

    def __enter__(self) -> "Receiver":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def spans_of(request: ExportTraceServiceRequest) -> list[Span]:
    """The spans of one export, each with its resource's `service.name`."""
    found = []
    for resource_spans in request.resource_spans:
        service = next(
            (
                attribute.value.string_value
                for attribute in resource_spans.resource.attributes
                if attribute.key == "service.name"
            ),
            "?",
        )
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                found.append(
                    Span(
                        service,
                        span.name,
                        span.trace_id.hex(),
                        span.span_id.hex(),
                        span.parent_span_id.hex(),
                        span.start_time_unix_nano,
                        span.end_time_unix_nano,
                    )
                )
    return found


@dataclass(frozen=True)
class Step:
    """A stretch of the path, and what else its span started in it: (name, ms after the
    stretch began, ms it lasted)."""

    label: str
    ms: float
    beside: tuple[tuple[str, float, float], ...] = ()


def paths(
    spans: Sequence[Span], end: str, since_ns: int = 0, until_ns: int = 2**63
) -> list[list[Step]]:
    """Each trace's path to the span named `end`, for traces whose root began in the window.

    A trace whose chain of parents is broken (a span not exported) is left out.
    """
    traces: dict[str, dict[str, Span]] = {}
    for span in spans:
        traces.setdefault(span.trace, {})[span.id] = span
    children: dict[str, list[Span]] = {}
    for span in spans:
        children.setdefault(span.parent, []).append(span)
    found = []
    for by_id in traces.values():
        ends = sorted((s for s in by_id.values() if s.name == end), key=lambda s: s.start_ns)
        if not ends:
            continue
        chain = [ends[0]]
        while chain[-1].parent:
            parent = by_id.get(chain[-1].parent)
            if parent is None:
                break
            chain.append(parent)
        if chain[-1].parent or not since_ns <= chain[-1].start_ns < until_ns:
            continue
        chain.reverse()
        found.append(_steps(chain, children))
    return found


def _steps(chain: Sequence[Span], children: dict[str, list[Span]]) -> list[Step]:
    """The path's stretches: from a span's start to the next span's where that one starts
    inside it; else the span to its end, then the wait until the next one starts."""
    steps = []
    for span, following in itertools.pairwise(chain):
        others = sorted(
            (child for child in children.get(span.id, ()) if child.id != following.id),
            key=lambda s: s.start_ns,
        )
        if following.start_ns < span.end_ns:
            steps.append(_step(f"{_who(span)} -> {_who(following)}", span, following, others))
            continue
        steps.append(_step(_who(span), span, span, others, until=span.end_ns))
        steps.append(
            _step(f"  then -> {_who(following)}", span, following, others, since=span.end_ns)
        )
    last = chain[-1]
    steps.append(Step(f"{_who(last)}, until acknowledged", (last.end_ns - last.start_ns) / 1e6))
    return steps


def _step(
    label: str,
    span: Span,
    following: Span,
    others: Sequence[Span],
    since: int | None = None,
    until: int | None = None,
) -> Step:
    begin = span.start_ns if since is None else since
    finish = following.start_ns if until is None else until
    beside = tuple(
        (
            other.name if other.service == span.service else _who(other),
            (other.start_ns - begin) / 1e6,
            (other.end_ns - other.start_ns) / 1e6,
        )
        for other in others
        if begin <= other.start_ns < finish
    )
    return Step(label, (finish - begin) / 1e6, beside)


def _who(span: Span) -> str:
    return f"{span.service}: {span.name}"


@dataclass
class PathSummary:
    """The medians of the renewals that took the most common path."""

    traced: int
    taking: int
    rows: list[tuple[str, float, float, str]] = field(default_factory=list)
    total_p50_ms: float = 0.0


def summarize(found: Sequence[Sequence[Step]]) -> PathSummary | None:
    """Per step of the most common path: p50 and p90 ms, and the p50 of what ran beside it."""
    if not found:
        return None
    shapes = Counter(tuple(step.label for step in path) for path in found)
    shape, taking = shapes.most_common(1)[0]
    same = [path for path in found if tuple(step.label for step in path) == shape]
    summary = PathSummary(len(found), taking)
    for index, label in enumerate(shape):
        values = [path[index].ms for path in same]
        beside: dict[str, list[tuple[float, float]]] = {}
        for path in same:
            for name, at, ms in path[index].beside:
                beside.setdefault(name, []).append((at, ms))
        note = ", ".join(
            f"{name} at +{statistics.median(a for a, _ in seen):.1f} for"
            f" {statistics.median(ms for _, ms in seen):.1f}"
            for name, seen in beside.items()
            if len(seen) * 2 >= len(same)
        )
        summary.rows.append((label, statistics.median(values), _p90(values), note))
    summary.total_p50_ms = statistics.median(sum(step.ms for step in path) for path in same)
    return summary


def _p90(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))]


def render(phase: str, summary: PathSummary | None) -> str:
    """The phase's path as a table, or why there is none."""
    if summary is None:
        return f"{phase}: no traced renewal reached ProfileActivated"
    lines = [
        f"{phase}: the path of {summary.taking} of {summary.traced} traced renewals, from its"
        " first span to ProfileActivated acknowledged (ms; spans recorded, which costs CPU:"
        " read the shares)",
        f"{'step':<92} {'p50':>6} {'p90':>6}  beside it (p50)",
    ]
    for label, p50, p90, note in summary.rows:
        lines.append(f"{label:<92} {p50:6.1f} {p90:6.1f}  {note}")
    lines.append(f"{'whole path':<92} {summary.total_p50_ms:6.1f}")
    return "\n".join(lines)
