"""HttpEsimPlatform: bundle orders and their follow-up over the eSIM platform's HTTP API."""

import logging
import math
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx
from esim_core.outside.adapter import HttpAdapter, NonEmpty, problem
from pydantic import BaseModel, StrictBool

from provisioning.platforms import port

logger = logging.getLogger(__name__)


class _Order(BaseModel):
    order_id: NonEmpty
    status: str | None = None


class _Cancelled(BaseModel):
    cancelled: StrictBool


class _Status(BaseModel):
    status: NonEmpty


class HttpEsimPlatform(HttpAdapter):
    """The platform's API: `POST /v1/bundles` (with Idempotency-Key), `GET /v1/bundles/{id}`,
    `POST /v1/bundles/{id}/cancel`, `GET /v1/cards/{iccid}/usage`.

    It maps answers onto the port: 404 on an order is an unknown card, 404 on a status an
    unknown order; 5xx, 408/425/429, timeouts, connection errors and garbled success answers are
    transient; other refusals (409 key conflict, 400/422) are rejections. It does not retry by
    itself; provisioning's activation loop decides how often.
    """

    system = "esim_platform"
    called = "eSIM platform"
    unavailable = port.PlatformUnavailableError
    rejected = port.PlatformRejectedError
    default_headers = {"User-Agent": "esim-provisioning", "Accept": "application/json"}

    async def order_bundle(self, request: port.BundleOrderRequest) -> port.BundleOrder:
        """Order a bundle; see `EsimPlatform.order_bundle`."""
        body = {
            "iccid": request.iccid,
            "bundle_code": request.bundle_code,
            "data_mb": request.data_mb,
            "validity_days": request.validity_days,
            "start": request.start,
            "reference": request.reference,
        }
        response = await self.call(
            "POST", "/v1/bundles", json=body, headers={"Idempotency-Key": request.idempotency_key}
        )
        status = response.status_code
        if response.is_success:
            document = self.document(response)
            # Without order_id the order may exist; asking again under the same key returns it.
            order = self.validate(document, response, _Order, "an order answer without order_id")
            if not order.status:
                return port.BundleOrder(order_id=order.order_id, status="processing")
            return port.BundleOrder(
                order_id=order.order_id,
                status=order.status,
                bundle=self._bundle(order.order_id, document, response),
            )
        message = problem(response).text
        if status == 404:
            raise port.UnknownIccidError(
                f"the platform does not know card {request.iccid}: {message}"
            )
        raise self.refused(response, message)

    async def bundle_status(self, order_id: str) -> port.BundleStatus:
        """Where an order's bundle is; see `EsimPlatform.bundle_status`."""
        response = await self.call("GET", f"/v1/bundles/{quote(order_id, safe='')}")
        status = response.status_code
        if response.is_success:
            return self._bundle(order_id, self.document(response), response)
        message = problem(response).text
        if status == 404:
            raise port.OrderNotFoundError(404, f"order {order_id} is unknown: {message}")
        raise self.refused(response, message)

    async def cancel_bundle(self, order_id: str) -> port.BundleCancellation:
        """Cancel a bundle that has not started; see `EsimPlatform.cancel_bundle`."""
        response = await self.call("POST", f"/v1/bundles/{quote(order_id, safe='')}/cancel")
        status = response.status_code
        if response.is_success:
            document = self.document(response)
            # Whether the bundle will run is the whole answer: without it, ask again.
            answer = self.validate(
                document, response, _Cancelled, "a cancel answer without cancelled"
            )
            return port.BundleCancellation(
                order_id=order_id,
                cancelled=answer.cancelled,
                bundle=self._bundle(order_id, document, response),
            )
        message = problem(response).text
        if status == 404:
            raise port.OrderNotFoundError(404, f"order {order_id} is unknown: {message}")
        raise self.refused(response, message)

    async def card_usage(
        self, iccid: str, *, ended_within_s: float | None = None
    ) -> port.CardUsage:
        """Every bundle of a card and its use; see `EsimPlatform.card_usage`."""
        params = {} if ended_within_s is None else {"ended_within_s": math.ceil(ended_within_s)}
        response = await self.call("GET", f"/v1/cards/{quote(iccid, safe='')}/usage", params=params)
        status = response.status_code
        if response.is_success:
            return _card_usage(iccid, self.document(response), status)
        message = problem(response).text
        if status == 404:
            raise port.UnknownIccidError(f"the platform does not know card {iccid}: {message}")
        if status == 429:
            raise port.PlatformRateLimitedError(
                f"HTTP 429: {message}", _retry_after(response.headers.get("Retry-After"))
            )
        raise self.refused(response, message)

    def _bundle(
        self, order_id: str, document: dict[str, Any], response: httpx.Response
    ) -> port.BundleStatus:
        self.validate(document, response, _Status, "a bundle answer without a status")
        return _bundle(order_id, document)


def _bundle(order_id: str, document: dict[str, Any]) -> port.BundleStatus:
    data_mb = document.get("data_mb")
    reason = document.get("failure_reason")
    returned_id = document.get("order_id")
    return port.BundleStatus(
        order_id=returned_id if isinstance(returned_id, str) and returned_id else order_id,
        status=document["status"],
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


def _card_usage(iccid: str, document: dict[str, Any], http_status: int) -> port.CardUsage:
    as_of = _time(document.get("as_of"), "as_of", iccid) or datetime.now(UTC)
    bundles: list[port.BundleUsage] = []
    for item in document.get("bundles") or ():
        if not isinstance(item, dict):
            continue
        order_id, state = item.get("order_id"), item.get("status")
        data_mb, used = _count(item.get("data_mb")), _count(item.get("data_used_mb"))
        if not (isinstance(order_id, str) and isinstance(state, str)) or data_mb is None:
            logger.warning("card %s: a usage entry without order, status or size: %r", iccid, item)
            continue
        bundles.append(
            port.BundleUsage(
                order_id=order_id,
                status=state,
                data_mb=data_mb,
                data_used_mb=used or 0,
                valid_from=_time(item.get("valid_from"), "valid_from", order_id),
                valid_until=_time(item.get("valid_until"), "valid_until", order_id),
            )
        )
    if not bundles and "bundles" not in document:
        raise port.PlatformUnavailableError(f"HTTP {http_status}: a usage answer without bundles")
    return port.CardUsage(iccid=iccid, as_of=as_of, bundles=tuple(bundles))


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
