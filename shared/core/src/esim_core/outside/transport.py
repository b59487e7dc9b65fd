"""An httpx transport over aiohttp's connection pool, for the adapters of outside systems.

The adapters (payment gateway, eSIM platform) speak httpx: its request and response types, its
errors, `MockTransport` in their tests. httpx's own pool (httpcore on anyio) took about 1 ms of
CPU per request with 50 in flight, most of a charge's or an order's work; over aiohttp's pool
the same httpx calls take about 0.3 ms (client and a local server together, measured side by
side). This transport keeps the httpx surface and sends through aiohttp: bodies are read whole
(the answers are small JSON documents), errors become httpx's transport errors, and content
encoding is left to httpx."""

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import aiohttp
import httpx
from opentelemetry.trace import SpanKind, StatusCode

from esim_core.observability.metrics import OUTSIDE_CALL_SECONDS
from esim_core.observability.tracing import TRACEPARENT, current_traceparent, span

# Framing headers aiohttp writes itself, from the body it is given and the URL.
_FRAMING = frozenset({"host", "content-length", "transfer-encoding", "connection"})


class AiohttpTransport(httpx.AsyncBaseTransport):
    """Sends httpx requests over one pooled aiohttp session, made on first use.

    Args:
        max_connections: open connections at most (requests beyond wait for one).
        keepalive_s: how long an idle connection is kept for the next request.
    """

    def __init__(self, *, max_connections: int = 100, keepalive_s: float = 15.0) -> None:
        self._max_connections = max_connections
        self._keepalive_s = keepalive_s
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        # Made inside the running loop: aiohttp binds a session to the loop it is made in.
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=self._max_connections, keepalive_timeout=self._keepalive_s
                ),
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,  # httpx decodes by Content-Encoding, as with its own pool
                skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept", "Content-Type"),
            )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send one request; raises httpx's `TransportError` kinds as httpx's own pool would."""
        timeouts: dict[str, Any] = request.extensions.get("timeout", {})
        headers = [
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in request.headers.raw
            if name.decode("latin-1").lower() not in _FRAMING
        ]
        body = await request.aread()
        try:
            async with self._client().request(
                request.method,
                str(request.url),
                headers=headers,
                data=body or None,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    sock_connect=timeouts.get("connect"),
                    sock_read=timeouts.get("read"),
                ),
            ) as response:
                content = await response.read()
                return httpx.Response(
                    response.status,
                    headers=[
                        (name.decode("latin-1"), value.decode("latin-1"))
                        for name, value in response.raw_headers
                    ],
                    content=content,
                    request=request,
                    extensions={
                        "http_version": b"HTTP/1.1",
                        "reason_phrase": (response.reason or "").encode("latin-1"),
                    },
                )
        except aiohttp.ClientConnectorError as error:
            raise httpx.ConnectError(str(error), request=request) from error
        except aiohttp.ServerTimeoutError as error:
            raise httpx.ReadTimeout(str(error) or "read timed out", request=request) from error
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError) as error:
            raise httpx.RemoteProtocolError(str(error), request=request) from error
        except aiohttp.ClientResponseError as error:  # a malformed answer
            raise httpx.RemoteProtocolError(str(error), request=request) from error
        except aiohttp.ClientError as error:
            raise httpx.ReadError(f"{type(error).__name__}: {error}", request=request) from error
        except TimeoutError as error:  # aiohttp's timeouts not raised as ServerTimeoutError
            raise httpx.TimeoutException(str(error) or "timed out", request=request) from error

    async def aclose(self) -> None:
        """Close the pooled connections."""
        if self._session is not None and not self._session.closed:
            await self._session.close()
            # Let the connections' transports close before the loop may end.
            await asyncio.sleep(0)
        self._session = None


class TimedTransport(httpx.AsyncBaseTransport):
    """A transport that times each call, to its answer, in `esim_outside_call_seconds`.

    `operation` is the method and the path's first two segments (`POST /v1/charges`), so ids in
    paths do not become labels.
    """

    def __init__(self, system: str, inner: httpx.AsyncBaseTransport | None = None) -> None:
        self.system = system
        # By default the adapters' own transport: aiohttp's pool (esim_core.outside.transport).
        self.inner = inner or AiohttpTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Forward the request, timing it until the answer's headers arrived (a CLIENT span,
        whose context goes out as the request's `traceparent` header)."""
        with outside_call(self.system, request.method, request.url.host, request.url.path) as call:
            if call.traceparent is not None:
                request.headers[TRACEPARENT] = call.traceparent
            response = await self.inner.handle_async_request(request)
            call.answered(response.status_code)
            return response

    async def aclose(self) -> None:
        """Close the wrapped transport."""
        await self.inner.aclose()


class OutsideCall:
    """One call being timed (`outside_call`): the `traceparent` to send, and its answer."""

    def __init__(self, current: Any, traceparent: str | None) -> None:
        self._span = current
        self.traceparent = traceparent
        self.outcome = "error"

    def answered(self, status: int) -> None:
        """Record the answer's HTTP status (5xx marks the span an error)."""
        self.outcome = f"{status // 100}xx"
        self._span.set_attribute("http.response.status_code", status)
        if status >= 500:
            self._span.set_status(StatusCode.ERROR)


@contextmanager
def outside_call(system: str, method: str, host: str | None, path: str) -> Iterator[OutsideCall]:
    """Time one call to an outside system in `esim_outside_call_seconds`, in a CLIENT span.

    For clients that are not httpx (`TimedTransport` uses it for those that are). The
    operation is the method and the path's first two segments (`POST /v1/charges`), so ids in
    paths do not become labels; the call's `traceparent` is the one to send with it. A call
    that raises is an `error` (a `timeout` for a timeout) unless `answered` was called.
    """
    segments = [part for part in path.split("/") if part][:2]
    operation = f"{method} /{'/'.join(segments)}"
    started = time.perf_counter()
    attributes = {
        "http.request.method": method,
        "server.address": host or "",
        "url.template": operation.split(" ", 1)[1],
        "peer.service": system,
    }
    with span(operation, kind=SpanKind.CLIENT, attributes=attributes) as current:
        call = OutsideCall(current, current_traceparent())
        try:
            yield call
        except (httpx.TimeoutException, TimeoutError):
            call.outcome = "timeout"
            raise
        finally:
            OUTSIDE_CALL_SECONDS.labels(system, operation, call.outcome).observe(
                time.perf_counter() - started
            )
