"""The e-mail texts, per template and locale: subjects, plain-text bodies and phrases, as data.

Placeholders are `str.format` names filled by `notifier.domain.render`. Every template exists
in every locale of `LOCALES`; a unit test holds that.
"""

from dataclasses import dataclass

# Chinese text uses full-width punctuation, as Chinese readers expect; ruff takes it for
# look-alikes of ASCII punctuation.
# ruff: noqa: RUF001


@dataclass(frozen=True)
class Template:
    """The subject and plain-text body of one e-mail in one locale."""

    subject: str
    body: str


LOCALES = ("en", "zh-CN")
DEFAULT_LOCALE = "en"

_SIGNATURE_EN = "Your eSIM team"
_SIGNATURE_ZH = "eSIM 团队"

TEMPLATES: dict[str, dict[str, Template]] = {
    "profile_activated.active": {
        "en": Template(
            subject="Your eSIM plan {plan_code} is active",
            body=(
                "Hello,\n"
                "\n"
                "your payment went through and your new plan is live on your eSIM.\n"
                "\n"
                "Plan: {plan_code}\n"
                "Data: {data}\n"
                "Valid from: {valid_from}\n"
                "Valid until: {valid_until}\n"
                "Card (ICCID): {iccid}\n"
                "\n"
                "Reference: {renewal_id}\n"
                "\n"
                f"Safe travels,\n{_SIGNATURE_EN}\n"
            ),
        ),
        "zh-CN": Template(
            subject="您的 eSIM 套餐 {plan_code} 已生效",
            body=(
                "您好：\n"
                "\n"
                "您的付款已成功，新套餐已在您的 eSIM 上生效。\n"
                "\n"
                "套餐：{plan_code}\n"
                "流量：{data}\n"
                "生效时间：{valid_from}\n"
                "到期时间：{valid_until}\n"
                "卡号（ICCID）：{iccid}\n"
                "\n"
                "订单号：{renewal_id}\n"
                "\n"
                f"祝您旅途愉快！\n{_SIGNATURE_ZH}\n"
            ),
        ),
    },
    "profile_activated.queued": {
        "en": Template(
            subject="Your eSIM plan {plan_code} is confirmed and queued",
            body=(
                "Hello,\n"
                "\n"
                "your payment went through. The new plan is queued behind your current plan: "
                "it starts by itself when the current one ends, so you stay connected.\n"
                "\n"
                "Plan: {plan_code}\n"
                "Data: {data}\n"
                "Valid from: {valid_from}\n"
                "Valid until: {valid_until}\n"
                "Card (ICCID): {iccid}\n"
                "\n"
                "Reference: {renewal_id}\n"
                "\n"
                f"Safe travels,\n{_SIGNATURE_EN}\n"
            ),
        ),
        "zh-CN": Template(
            subject="您的 eSIM 套餐 {plan_code} 已确认，排在当前套餐之后",
            body=(
                "您好：\n"
                "\n"
                "您的付款已成功。新套餐已排在您当前的套餐之后，"
                "当前套餐结束时自动生效，您的网络不会中断。\n"
                "\n"
                "套餐：{plan_code}\n"
                "流量：{data}\n"
                "生效时间：{valid_from}\n"
                "到期时间：{valid_until}\n"
                "卡号（ICCID）：{iccid}\n"
                "\n"
                "订单号：{renewal_id}\n"
                "\n"
                f"祝您旅途愉快！\n{_SIGNATURE_ZH}\n"
            ),
        ),
    },
    "payment_failed": {
        "en": Template(
            subject="Your eSIM renewal payment did not go through",
            body=(
                "Hello,\n"
                "\n"
                "we could not take the payment for your eSIM renewal: {reason}.\n"
                "Nothing was charged, and your current plan is unchanged.\n"
                "\n"
                "You can try again, or choose another payment method, in the app.\n"
                "\n"
                "Card (ICCID): {iccid}\n"
                "Reference: {renewal_id}\n"
                "\n"
                f"{_SIGNATURE_EN}\n"
            ),
        ),
        "zh-CN": Template(
            subject="您的 eSIM 续费付款未成功",
            body=(
                "您好：\n"
                "\n"
                "您的 eSIM 续费付款未能完成：{reason}。\n"
                "我们没有扣取任何费用，您当前的套餐保持不变。\n"
                "\n"
                "您可以在应用中重试，或换一种支付方式。\n"
                "\n"
                "卡号（ICCID）：{iccid}\n"
                "订单号：{renewal_id}\n"
                "\n"
                f"{_SIGNATURE_ZH}\n"
            ),
        ),
    },
    "payment_refunded": {
        "en": Template(
            subject="Your eSIM renewal was refunded: {amount}",
            body=(
                "Hello,\n"
                "\n"
                "we are sorry: the plan you bought could not be activated on your eSIM.\n"
                "We refunded {amount} to the payment method you used; depending on your "
                "bank it can take a few days to show.\n"
                "\n"
                "Card (ICCID): {iccid}\n"
                "Refund: {refund_id}\n"
                "Reference: {renewal_id}\n"
                "\n"
                f"{_SIGNATURE_EN}\n"
            ),
        ),
        "zh-CN": Template(
            subject="您的 eSIM 续费已退款：{amount}",
            body=(
                "您好：\n"
                "\n"
                "很抱歉，您购买的套餐未能在您的 eSIM 上激活。\n"
                "我们已将 {amount} 退回您付款时使用的支付方式，"
                "到账时间取决于您的银行，可能需要几天。\n"
                "\n"
                "卡号（ICCID）：{iccid}\n"
                "退款编号：{refund_id}\n"
                "订单号：{renewal_id}\n"
                "\n"
                f"{_SIGNATURE_ZH}\n"
            ),
        ),
    },
    "renewal_rejected": {
        "en": Template(
            subject="Your eSIM renewal was not accepted",
            body=(
                "Hello,\n"
                "\n"
                "we could not accept your renewal request: {reason}.\n"
                "Nothing was charged.\n"
                "\n"
                "Details: {detail}\n"
                "Card (ICCID): {iccid}\n"
                "Reference: {renewal_id}\n"
                "\n"
                f"{_SIGNATURE_EN}\n"
            ),
        ),
        "zh-CN": Template(
            subject="您的 eSIM 续费申请未被受理",
            body=(
                "您好：\n"
                "\n"
                "我们无法受理您的续费申请：{reason}。\n"
                "我们没有扣取任何费用。\n"
                "\n"
                "详情：{detail}\n"
                "卡号（ICCID）：{iccid}\n"
                "订单号：{renewal_id}\n"
                "\n"
                f"{_SIGNATURE_ZH}\n"
            ),
        ),
    },
    "data_low": {
        "en": Template(
            subject="Your eSIM has {remaining} of data left",
            body=(
                "Hello,\n"
                "\n"
                "you have used {threshold} % of the data of your plan {plan_code}: "
                "{remaining} are left.\n"
                "\n"
                "Renew or add a plan now, so you stay connected:\n"
                "{renew_url}\n"
                "\n"
                "Card (ICCID): {iccid}\n"
                "\n"
                f"Safe travels,\n{_SIGNATURE_EN}\n"
            ),
        ),
        "zh-CN": Template(
            subject="您的 eSIM 流量仅剩 {remaining}",
            body=(
                "您好：\n"
                "\n"
                "您的套餐 {plan_code} 已使用 {threshold}% 的流量，剩余 {remaining}。\n"
                "\n"
                "现在续费或加购套餐，保持网络畅通：\n"
                "{renew_url}\n"
                "\n"
                "卡号（ICCID）：{iccid}\n"
                "\n"
                f"祝您旅途愉快！\n{_SIGNATURE_ZH}\n"
            ),
        ),
    },
    "data_used_up": {
        "en": Template(
            subject="Your eSIM data is used up",
            body=(
                "Hello,\n"
                "\n"
                "the data of your plan {plan_code} is used up.\n"
                "\n"
                "Renew now to get back online:\n"
                "{renew_url}\n"
                "\n"
                "Card (ICCID): {iccid}\n"
                "\n"
                f"{_SIGNATURE_EN}\n"
            ),
        ),
        "zh-CN": Template(
            subject="您的 eSIM 流量已用完",
            body=(
                "您好：\n"
                "\n"
                "您的套餐 {plan_code} 的流量已用完。\n"
                "\n"
                "立即续费，恢复上网：\n"
                "{renew_url}\n"
                "\n"
                "卡号（ICCID）：{iccid}\n"
                "\n"
                f"{_SIGNATURE_ZH}\n"
            ),
        ),
    },
}

# Account messages: not about a card, so no ICCID; the code is filled in at send time only.
TEMPLATES["password_reset"] = {
    "en": Template(
        subject="Your eSIM password reset code",
        body=(
            "Hello,\n"
            "\n"
            "someone (we hope you) asked to reset the password of your eSIM account.\n"
            "\n"
            "Your code: {code}\n"
            "It works once, until {expires_at}.\n"
            "\n"
            "If it was not you, ignore this message: your password stays as it is.\n"
            "\n"
            f"{_SIGNATURE_EN}\n"
        ),
    ),
    "zh-CN": Template(
        subject="您的 eSIM 密码重置验证码",
        body=(
            "您好：\n"
            "\n"
            "有人（希望是您本人）申请重置您的 eSIM 账户密码。\n"
            "\n"
            "验证码：{code}\n"
            "仅可使用一次，有效期至 {expires_at}。\n"
            "\n"
            "如果不是您本人操作，请忽略本邮件，您的密码不会改变。\n"
            "\n"
            f"{_SIGNATURE_ZH}\n"
        ),
    ),
}
TEMPLATES["password_changed"] = {
    "en": Template(
        subject="Your eSIM password was changed",
        body=(
            "Hello,\n"
            "\n"
            "the password of your eSIM account was changed on {changed_at}, and every device\n"
            "that was signed in has been signed out.\n"
            "\n"
            "If you did not do this, reset your password at once and contact us.\n"
            "\n"
            f"{_SIGNATURE_EN}\n"
        ),
    ),
    "zh-CN": Template(
        subject="您的 eSIM 密码已更改",
        body=(
            "您好：\n"
            "\n"
            "您的 eSIM 账户密码已于 {changed_at} 更改，所有已登录的设备均已退出。\n"
            "\n"
            "如果这不是您本人操作，请立即重置密码并联系我们。\n"
            "\n"
            f"{_SIGNATURE_ZH}\n"
        ),
    ),
}

# Text messages: short, one segment where the alphabet allows.
SMS_TEMPLATES: dict[str, dict[str, str]] = {
    "password_reset": {
        "en": "eSIM: your password reset code is {code}. It works once, for 15 minutes.",
        "zh-CN": "【eSIM】您的密码重置验证码为 {code}，15 分钟内有效，仅可使用一次。",
    },
    "password_changed": {
        "en": "eSIM: your password was changed and every device signed out. Not you? Reset it now.",
        "zh-CN": "【eSIM】您的密码已更改，所有设备均已退出。如非本人操作，请立即重置密码。",
    },
    "data_low": {
        "en": "eSIM: {threshold}% of your {plan_code} data is used. Renew: {renew_url}",
        "zh-CN": "【eSIM】您的套餐 {plan_code} 已使用 {threshold}% 流量。续费：{renew_url}",
    },
    "data_used_up": {
        "en": "eSIM: your {plan_code} data is used up. Renew to get back online: {renew_url}",
        "zh-CN": "【eSIM】您的套餐 {plan_code} 流量已用完。续费即可恢复上网：{renew_url}",
    },
}

# Words for the contract's reason codes; `other` covers a code added to the contract later.
PAYMENT_FAILURE_REASONS: dict[str, dict[str, str]] = {
    "en": {
        "declined": "your bank or payment provider declined it",
        "insufficient_funds": "there were not enough funds",
        "expired_method": "the payment method has expired",
        "provider_unavailable": "the payment provider could not be reached, even after retries",
        "invalid_token": "the payment details were not valid",
        "other": "the payment provider refused it",
    },
    "zh-CN": {
        "declined": "您的银行或支付机构拒绝了这笔付款",
        "insufficient_funds": "账户余额不足",
        "expired_method": "支付方式已过期",
        "provider_unavailable": "多次尝试后仍无法连接支付机构",
        "invalid_token": "支付信息无效",
        "other": "支付机构拒绝了这笔付款",
    },
}

REJECTION_REASONS: dict[str, dict[str, str]] = {
    "en": {
        "unknown_card": "we do not know this card",
        "card_not_owned": "this card is not bound to your account",
        "unknown_plan": "the plan you chose does not exist",
        "plan_not_available": "the plan you chose is not available for this card right now",
        "conflicting_duplicate": "a different request with the same reference was already made",
        "invalid_request": "the request was incomplete or not valid",
        "other": "the request could not be accepted",
    },
    "zh-CN": {
        "unknown_card": "我们找不到这张卡",
        "card_not_owned": "这张卡未绑定到您的账户",
        "unknown_plan": "您选择的套餐不存在",
        "plan_not_available": "您选择的套餐目前不适用于这张卡",
        "conflicting_duplicate": "已有一个订单号相同但内容不同的申请",
        "invalid_request": "申请内容不完整或无效",
        "other": "申请无法受理",
    },
}

MONTHS_EN = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

# Timestamps are shown in UTC: the notifier does not know the traveller's time zone.
DATE_FORMATS: dict[str, str] = {
    "en": "{day} {month_name} {year}, {hour:02d}:{minute:02d} UTC",
    "zh-CN": "{year}年{month}月{day}日 {hour:02d}:{minute:02d}（UTC）",
}
