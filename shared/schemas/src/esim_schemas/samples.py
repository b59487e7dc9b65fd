"""One valid sample of each contract event, as a consumer should expect it on the wire."""

from typing import Any
from uuid import NAMESPACE_URL, uuid5

_RENEWAL = "5b0f6f2e-8a55-4c1e-9d1a-6f7e2b9c4d10"
_ICCID = "8944500102198304826"
_USER = "0d3c9a63-5d7e-4f0b-9b8e-2a3f1c7d6e54"
_PLAN = {"code": "JP-30D-10GB", "data_mb": 10240, "validity_days": 30}
_PRICE = {"amount": 9900, "currency": "CNY"}
# The one bundle the samples follow: activated, started, then used up.
_BUNDLE = {
    "renewal_id": _RENEWAL,
    "iccid": _ICCID,
    "plan_code": "JP-30D-10GB",
    "data_mb": 10240,
    "valid_from": "2026-12-01T00:00:00.000Z",
    "valid_until": "2026-12-31T00:00:00.000Z",
}

SAMPLE_DATA: dict[str, dict[str, Any]] = {
    "esim.renewal.requested.v1": {
        "renewal_id": _RENEWAL,
        "user_id": _USER,
        "iccid": _ICCID,
        "plan_code": "JP-30D-10GB",
        "payment": {"method": "alipay", "token": "alipay_ok"},
        "start": "after_current",
        "requested_at": "2026-11-23T10:15:00.000Z",
        "locale": "zh-CN",
        "channel": "mobile-app",
    },
    "esim.renewal.rejected.v1": {
        "renewal_id": _RENEWAL,
        "iccid": _ICCID,
        "user_id": _USER,
        "reason": "unknown_plan",
        "detail": "plan 'JP-31D' does not exist",
    },
    "esim.payment.requested.v1": {
        "renewal_id": _RENEWAL,
        "user_id": _USER,
        "iccid": _ICCID,
        "plan": _PLAN,
        "price": _PRICE,
        "payment": {"method": "alipay", "token": "alipay_ok"},
        "start": "after_current",
    },
    "esim.payment.settled.v1": {
        "renewal_id": _RENEWAL,
        "payment_id": "pay_1f6e0c1e0b7a5d3c",
        "iccid": _ICCID,
        "plan": _PLAN,
        "price": _PRICE,
        "method": "alipay",
        "provider_reference": "ch_7d1b9a",
        "attempts": 1,
        "settled_at": "2026-11-23T10:15:01.000Z",
        "start": "after_current",
    },
    "esim.payment.failed.v1": {
        "renewal_id": _RENEWAL,
        "payment_id": "pay_1f6e0c1e0b7a5d3c",
        "iccid": _ICCID,
        "reason": "declined",
        "attempts": 1,
        "failed_at": "2026-11-23T10:15:01.000Z",
    },
    "esim.payment.action-required.v1": {
        "renewal_id": _RENEWAL,
        "payment_id": "pay_1f6e0c1e0b7a5d3c",
        "iccid": _ICCID,
        "method": "paypal",
        "action": {
            "type": "redirect",
            "url": "https://www.paypal.com/checkoutnow?token=5O190127TN364715T",
        },
        "expires_at": "2026-11-23T10:45:01.000Z",
    },
    "esim.payment.authorized.v1": {
        "renewal_id": _RENEWAL,
        "payment_id": "pay_1f6e0c1e0b7a5d3c",
        "iccid": _ICCID,
        "plan": _PLAN,
        "price": _PRICE,
        "method": "card",
        "provider_reference": "pi_3MtwBwLkdIwHu7ix28a3tqPa",
        "authorized_at": "2026-11-23T10:15:01.000Z",
        "capture_before": "2026-11-30T10:15:01.000Z",
        "start": "after_current",
    },
    "esim.profile.activated.v1": {
        **_BUNDLE,
        "bundle_state": "queued",
        "platform_reference": "ord_4c2a",
        "activated_at": "2026-11-23T10:15:02.000Z",
    },
    "esim.activation.failed.v1": {
        "renewal_id": _RENEWAL,
        "iccid": _ICCID,
        "reason": "bundle_rejected",
        "attempts": 1,
        "failed_at": "2026-11-23T10:15:02.000Z",
    },
    "esim.refund.requested.v1": {
        "renewal_id": _RENEWAL,
        "payment_id": "pay_1f6e0c1e0b7a5d3c",
        "iccid": _ICCID,
        "price": _PRICE,
        "reason": "activation failed: bundle_rejected",
    },
    "esim.payment.refunded.v1": {
        "renewal_id": _RENEWAL,
        "payment_id": "pay_1f6e0c1e0b7a5d3c",
        "refund_id": "re_2b8c",
        "iccid": _ICCID,
        "price": _PRICE,
        "refunded_at": "2026-11-23T10:15:03.000Z",
    },
    "esim.plan.expiring.v1": {
        "iccid": _ICCID,
        "user_id": _USER,
        "plan_code": "JP-30D-10GB",
        "valid_until": "2026-12-31T00:00:00.000Z",
        "days_left": 3,
    },
    "esim.account.password-reset.v1": {
        "user_id": _USER,
        "email": "traveller@example.com",
        "code_expires_at": "2026-11-23T10:30:00.000Z",
        "phone": "+8613800000000",
        "locale": "zh-CN",
        "code_sealed": "v1.c2VhbGVkLWNvZGUtc2FtcGxlLW5vdC1hLXJlYWwtb25l",
    },
    "esim.account.password-changed.v1": {
        "user_id": _USER,
        "email": "traveller@example.com",
        "phone": "+8613800000000",
        "locale": "zh-CN",
        "changed_at": "2026-11-23T10:20:00.000Z",
    },
    "esim.card.bound.v1": {
        "user_id": _USER,
        "iccid": _ICCID,
        "email": "traveller@example.com",
        "phone": "+8613800000000",
        "locale": "zh-CN",
    },
    "esim.usage.updated.v1": {
        "iccid": _ICCID,
        "renewal_id": _RENEWAL,
        "data_total_mb": 10240,
        "data_used_mb": 8192,
        "as_of": "2026-12-10T08:00:00.000Z",
        "plan_code": "JP-30D-10GB",
        "bundle_status": "active",
    },
    "esim.data.low.v1": {
        "iccid": _ICCID,
        "renewal_id": _RENEWAL,
        "threshold": 90,
        "data_remaining_mb": 1024,
        "as_of": "2026-12-10T08:00:00.000Z",
        "data_total_mb": 10240,
        "plan_code": "JP-30D-10GB",
    },
    "esim.bundle.started.v1": {
        **_BUNDLE,
        "platform_reference": "ord_4c2a",
        "started_at": "2026-12-01T00:00:01.000Z",
    },
    "esim.bundle.ended.v1": {
        "renewal_id": _RENEWAL,
        "iccid": _ICCID,
        "plan_code": "JP-30D-10GB",
        "reason": "depleted",
        "valid_from": "2026-12-01T00:00:00.000Z",
        "valid_until": "2026-12-31T00:00:00.000Z",
        "platform_reference": "ord_4c2a",
        "ended_at": "2026-12-20T14:00:00.000Z",
    },
    "esim.bundle.cancelled.v1": {
        "renewal_id": _RENEWAL,
        "iccid": _ICCID,
        "plan_code": "JP-30D-10GB",
        "reason": "cancelled_by_user",
        "cancelled_at": "2026-11-24T09:00:00.000Z",
        "platform_reference": "ord_4c2a",
    },
    "esim.bundle.cancel-requested.v1": {
        "renewal_id": _RENEWAL,
        "iccid": _ICCID,
        "reason": "cancelled_by_user",
        "requested_at": "2026-11-24T08:59:59.000Z",
    },
    "esim.card.auto-renew-disabled.v1": {
        "iccid": _ICCID,
        "user_id": _USER,
        "reason": "declined",
        "renewal_id": _RENEWAL,
        "plan_code": "JP-30D-10GB",
        "disabled_at": "2026-12-30T00:00:05.000Z",
    },
}


def sample_event(event_type: str) -> dict[str, Any]:
    """The sample CloudEvent of a type, envelope included."""
    data = SAMPLE_DATA[event_type]
    event: dict[str, Any] = {
        "specversion": "1.0",
        "id": str(uuid5(NAMESPACE_URL, f"https://esim.example/samples/{event_type}")),
        "source": "/services/sample",
        "type": event_type,
        "subject": data.get("iccid"),
        "time": "2026-11-23T10:15:30.123Z",
        "datacontenttype": "application/json",
        "data": data,
    }
    if "renewal_id" in data:
        event["renewalid"] = data["renewal_id"]
    return {key: value for key, value in event.items() if value is not None}
