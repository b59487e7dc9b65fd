"""CONTRACT.md's event table, as data: the fields each event must carry, and their JSON types.

A change to the models that drops, renames or retypes one of these fails the contract tests;
adding optional fields does not.
"""

MONEY = "object"
TABLE: dict[str, dict[str, str]] = {
    "esim.renewal.requested.v1": {
        "renewal_id": "string",
        "user_id": "string",
        "iccid": "string",
        "plan_code": "string",
        "payment": "object",
        "start": "string",
        "requested_at": "string",
        "locale?": "string",
        "channel?": "string",
    },
    "esim.renewal.rejected.v1": {
        "renewal_id": "string",
        "iccid": "string",
        "user_id?": "string",
        "reason": "string",
        "detail": "string",
    },
    "esim.payment.requested.v1": {
        "renewal_id": "string",
        "user_id": "string",
        "iccid": "string",
        "plan": "object",
        "price": MONEY,
        "payment": "object",
        "start": "string",
    },
    "esim.payment.settled.v1": {
        "renewal_id": "string",
        "payment_id": "string",
        "iccid": "string",
        "plan": "object",
        "price": MONEY,
        "method": "string",
        "provider_reference": "string",
        "attempts": "integer",
        "settled_at": "string",
        "start": "string",
    },
    "esim.payment.failed.v1": {
        "renewal_id": "string",
        "payment_id": "string",
        "iccid": "string",
        "reason": "string",
        "attempts": "integer",
        "failed_at": "string",
    },
    "esim.profile.activated.v1": {
        "renewal_id": "string",
        "iccid": "string",
        "plan_code": "string",
        "data_mb": "integer",
        "valid_from": "string",
        "valid_until": "string",
        "bundle_state": "string",
        "platform_reference": "string",
        "activated_at": "string",
    },
    "esim.activation.failed.v1": {
        "renewal_id": "string",
        "iccid": "string",
        "reason": "string",
        "attempts": "integer",
        "failed_at": "string",
    },
    "esim.refund.requested.v1": {
        "renewal_id": "string",
        "payment_id": "string",
        "iccid": "string",
        "price": MONEY,
        "reason": "string",
    },
    "esim.payment.refunded.v1": {
        "renewal_id": "string",
        "payment_id": "string",
        "refund_id": "string",
        "iccid": "string",
        "price": MONEY,
        "refunded_at": "string",
    },
    "esim.plan.expiring.v1": {
        "iccid": "string",
        "user_id": "string",
        "plan_code": "string",
        "valid_until": "string",
        "days_left": "integer",
    },
    "esim.account.password-reset.v1": {
        "user_id": "string",
        "email": "string",
        "code_expires_at": "string",
    },
}
ENUMS: dict[tuple[str, str], set[str]] = {
    ("esim.renewal.requested.v1", "start"): {"now", "after_current"},
    ("esim.renewal.requested.v1", "locale"): {"zh-CN", "en"},
    ("esim.renewal.rejected.v1", "reason"): {
        "unknown_card",
        "card_not_owned",
        "unknown_plan",
        "plan_not_available",
        "conflicting_duplicate",
        "invalid_request",
    },
    ("esim.payment.failed.v1", "reason"): {
        "declined",
        "insufficient_funds",
        "expired_method",
        "provider_unavailable",
        "invalid_token",
    },
    ("esim.profile.activated.v1", "bundle_state"): {"active", "queued"},
}
TOPICS: dict[str, str] = {
    "esim.renewal.requested.v1": "esim.renewal.requested",
    "esim.renewal.rejected.v1": "esim.renewal.rejected",
    "esim.payment.requested.v1": "esim.payment.requested",
    "esim.payment.settled.v1": "esim.payment.settled",
    "esim.payment.failed.v1": "esim.payment.failed",
    "esim.profile.activated.v1": "esim.profile.activated",
    "esim.activation.failed.v1": "esim.activation.failed",
    "esim.refund.requested.v1": "esim.refund.requested",
    "esim.payment.refunded.v1": "esim.payment.refunded",
    "esim.plan.expiring.v1": "esim.plan.expiring",
    "esim.account.password-reset.v1": "esim.account.password-reset",
}
