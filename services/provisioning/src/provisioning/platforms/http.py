"""HttpEsimPlatform: bundle orders and their follow-up over the eSIM platform's HTTP API."""

import asyncio
import logging
import math
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx
from esim_core.outside.transport import AiohttpTransport

from provisioning.platforms.port import (
    BundleCancellation,
    BundleOrder,
    BundleOrderRequest,
    BundleStatus,
    BundleUsage,
    CardUsage,
    OrderNotFoundError,
    PlatformRateLimitedError,
    PlatformRejectedError,
    PlatformUnavailableError,
    UnknownIccidError,
)

logger = logging.getLogger(__name__)

_TRANSIENT_STATUSES = frozenset({408, 425, 429})


class HttpEsimPlatform:
    """The platform's API: `POST /v1/bundles` (with Idempotency-Key), `GET /v1/bundles/{id}`,
    `POST /v1/bundles/{id}/cancel`, `GET /v1/cards/{iccid}/usage`.

    It maps answers onto the port: 404 on an order is an unknown card, 404 on a status an
    unknown order; 5xx, 408/425/429, timeouts, connection errors and garbled success answers are
    transient; other refusals (409 key conflict, 400/422) are rejections. It does not retry by
    itself; provisioning's activation loop decides how often.
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._timeout_s = timeout_s
        self._client = httpx.AsyncClient(
            base_url=base_url,
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 5.0)),
            # Tests give a MockTransport; otherwise aiohttp's pool (esim_core.outside.transport).
            transport=transport if transport is not None else AiohttpTransport(),
            headers={"User-Agent": "esim-provisioning", "Accept": "application/json"},
            follow_redirects=False,
        )

    async def order_bundle(self, request: BundleOrderRequest) -> BundleOrder:
        """Order a bundle; see `EsimPlatform.order_bundle`."""
        body = {
            "iccid": request.iccid,
            "bundle_code": request.bundle_code,
            "data_mb": request.data_mb,
            "validity_days": request.validity_days,
            "start": request.start,
            "reference": request.reference,
        }
        response = await self._send(
            "POST", "/v1/bundles", json=body, headers={"Idempotency-Key": request.idempotency_key}
        )
        status = response.status_code
        if response.is_success:
            document = _json(response)
            order_id = document.get("order_id")
            if not isinstance(order_id, str) or not order_id:
                # The order may exist; asking again under the same key returns it.
                raise PlatformUnavailableError(f"HTTP {status}: an order answer without order_id")
            state = document.get("status")
            if not isinstance(state, str) or not state:
                return BundleOrder(order_id=order_id, status="processing")
            return BundleOrder(
                order_id=order_id, status=state, bundle=_bundle(order_id, document, status)
            )
        message = _problem(response)
        if status == 404:
            raise UnknownIccidError(f"the platform does not know card {request.iccid}: {message}")
        _raise_for_transient(status, message)
        raise PlatformRejectedError(status, message)

    async def bundle_status(self, order_id: str) -> BundleStatus:
        """Where an order's bundle is; see `EsimPlatform.bundle_status`."""
        response = await self._send("GET", f"/v1/bundles/{quote(order_id, safe='')}")
        status = response.status_code
        if response.is_success:
            return _bundle(order_id, _json(response), status)
        message = _problem(response)
        if status == 404:
            raise OrderNotFoundError(404, f"order {order_id} is unknown: {message}")
        _raise_for_transient(status, message)
        raise PlatformRejectedError(status, message)

    async def cancel_bundle(self, order_id: str) -> BundleCancellation:
        """Cancel a bundle that has not started; see `EsimPlatform.cancel_bundle`."""
        response = await self._send("POST", f"/v1/bundles/{quote(order_id, safe='')}/cancel")
        status = response.status_code
        if response.is_success:
            document = _json(response)
            cancelled = document.get("cancelled")
            if not isinstance(cancelled, bool):
                # Whether the bundle will run is the whole answer: without it, ask again.
                raise PlatformUnavailableError(f"HTTP {status}: a cancel answer without cancelled")
            return BundleCancellation(
                order_id=order_id, cancelled=cancelled, bundle=_bundle(order_id, document, status)
            )
        message = _problem(response)
        if status == 404:
            raise OrderNotFoundError(404, f"order {order_id} is unknown: {message}")
        _raise_for_transient(status, message)
        raise PlatformRejectedError(status, message)

    async def card_usage(self, iccid: str, *, ended_within_s: float | None = None) -> CardUsage:
        """Every bundle of a card and its use; see `EsimPlatform.card_usage`."""
        params = {} if ended_within_s is None else {"ended_within_s": math.ceil(ended_within_s)}
        response = await self._send(
            "GET", f"/v1/cards/{quote(iccid, safe='')}/usage", params=params
        )
        status = response.status_code
        if response.is_success:
            return _card_usage(iccid, _json(response), status)
        message = _problem(response)
        if status == 404:
            raise UnknownIccidError(f"the platform does not know card {iccid}: {message}")
        if status == 429:
            raise PlatformRateLimitedError(
                f"HTTP 429: {message}", _retry_after(response.headers.get("Retry-After"))
            )
        _raise_for_transient(status, message)
        raise PlatformRejectedError(status, message)

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()

    async def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            # httpx times each phase (connect, write, read) on its own; this bounds the whole.
            async with asyncio.timeout(self._timeout_s):
                return await self._client.request(method, path, **kwargs)
        except TimeoutError as error:
            raise PlatformUnavailableError(
                f"no answer from the eSIM platform within {self._timeout_s:g} s"
            ) from error
        except httpx.TransportError as error:
            raise PlatformUnavailableError(
                f"eSIM platform unreachable ({type(error).__name__}: {error})"[:300]
            ) from error


def _raise_for_transient(status: int, message: str) -> None:
    if status >= 500 or status in _TRANSIENT_STATUSES:
        raise PlatformUnavailableError(f"HTTP {status}: {message}")


def _bundle(order_id: str, document: dict[str, Any], http_status: int) -> BundleStatus:
    state = document.get("status")
    if not isinstance(state, str) or not state:
        raise PlatformUnavailableError(f"HTTP {http_status}: a bundle answer without a status")
    data_mb = document.get("data_mb")
    reason = document.get("failure_reason")
    returned_id = document.get("order_id")
    return BundleStatus(
        order_id=returned_id if isinstance(returned_id, str) and returned_id else order_id,
        status=state,
        valid_from=_time(document.get("valid_from"), "valid_from", order_id),
        valid_until=_time(document.get("valid_until"), "valid_until", order_id),
        data_mb=data_mb
        if isinstance(data_mb, int) and not isinstance(data_mb, bool) and data_mb > 0
        else None,
        failure_reason=str(reason)[:128] if isinstance(reason, str) and reason else None,
    )


def _retry_after(value: str | None) -> float:
    """Seconds from a Retry-After header (seconds only); a missing or odd one means 1 s."""
    try:
        return min(3600.0, max(1.0, float(value))) if value else 1.0
    except ValueError:
        return 1.0


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _card_usage(iccid: str, document: dict[str, Any], http_status: int) -> CardUsage:
    as_of = _time(document.get("as_of"), "as_of", iccid) or datetime.now(UTC)
    bundles: list[BundleUsage] = []
    for item in document.get("bundles") or ():
        if not isinstance(item, dict):
            continue
        order_id, state = item.get("order_id"), item.get("status")
        data_mb, used = _count(item.get("data_mb")), _count(item.get("data_used_mb"))
        if not (isinstance(order_id, str) and isinstance(state, str)) or data_mb is None:
            logger.warning("card %s: a usage entry without order, status or size: %r", iccid, item)
            continue
        bundles.append(
            BundleUsage(
                order_id=order_id,
                status=state,
                data_mb=data_mb,
                data_used_mb=used or 0,
                valid_from=_time(item.get("valid_from"), "valid_from", order_id),
                valid_until=_time(item.get("valid_until"), "valid_until", order_id),
            )
        )
    if not bundles and "bundles" not in document:
        raise PlatformUnavailableError(f"HTTP {http_status}: a usage answer without bundles")
    return CardUsage(iccid=iccid, as_of=as_of, bundles=tuple(bundles))


def _time(value: Any, name: str, order_id: str) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        # Not worth failing a live bundle over: the caller falls back to the plan's dates.
        logger.warning("order %s: %s %r is not an RFC 3339 time; ignored", order_id, name, value)
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        document = response.json()
    except ValueError as error:
        raise PlatformUnavailableError(
            f"HTTP {response.status_code}: an answer that is not JSON"
        ) from error
    if not isinstance(document, dict):
        raise PlatformUnavailableError(
            f"HTTP {response.status_code}: an answer that is not an object"
        )
    return document


def _problem(response: httpx.Response) -> str:
    """A short text of an error answer: problem+json `detail` / `title`, or the reason phrase."""
    fallback = response.reason_phrase or f"HTTP {response.status_code}"
    try:
        document = response.json()
    except ValueError:
        return fallback
    if not isinstance(document, dict):
        return fallback
    error = document.get("error")
    source: dict[str, Any] = error if isinstance(error, dict) else document
    code = source.get("code")
    message = source.get("message") or document.get("detail") or document.get("title")
    text = str(message) if message else fallback
    if isinstance(code, str) and code:
        text = f"{code}: {text}"
    return text[:200]
