"""Problem answers of the accounts API as sentences beside the field they concern.

The one place where a problem's `type` and its field-level `errors` become words; routes pass
the result to their template as `errors` (field name to sentence) and `problem` (the form's).
"""

from dataclasses import dataclass, field

from web.accounts import ApiProblemError
from web.i18n import _


@dataclass
class FormErrors:
    """What to tell the traveller about a form: per field, and for the form as a whole."""

    fields: dict[str, str] = field(default_factory=dict)
    general: str | None = None

    def __bool__(self) -> bool:
        return bool(self.fields) or self.general is not None


def _kinds() -> dict[str, tuple[str | None, str]]:
    """Each problem kind: the form field it concerns (None: the whole form) and the sentence."""
    return {
        "email-taken": ("email", _("This e-mail address already has an account: sign in instead.")),
        "invalid-credentials": (None, _("The e-mail address or the password is wrong.")),
        "invalid-code": (
            "code",
            _("This code is wrong, already used or expired: ask for a new one if needed."),
        ),
        "card-taken": ("iccid", _("This card is already bound to another account.")),
        "card-not-found": (
            "iccid",
            _("No card has this ICCID and activation code: check both on the card's leaflet."),
        ),
        "unknown-plan": ("plan_code", _("This plan does not exist.")),
        "plan-not-available": ("plan_code", _("This plan is not on sale any more.")),
        "promo-unknown": ("promo_code", _("No promotion has this code.")),
        "promo-not-started": ("promo_code", _("This promotion has not started yet.")),
        "promo-expired": ("promo_code", _("This promotion has ended.")),
        "promo-not-applicable": (
            "promo_code",
            _("This promotion does not apply to a renewal paid in this currency."),
        ),
        "promo-exhausted": ("promo_code", _("This promotion has been used up.")),
        "promo-used": ("promo_code", _("You have already used this promotion.")),
        "not-cancellable": (
            None,
            _("This plan can no longer be cancelled: it has started or is not queued."),
        ),
        "cap-currency": ("cap_currency", _("The plan is not sold in the cap's currency.")),
        "idempotency-key-reused": (
            None,
            _("This form was already sent with other choices: start the renewal again."),
        ),
        "renewal-not-found": (None, _("No such renewal on your cards.")),
    }


def _validation(field_name: str, kind: str, message: str) -> str:
    """A validation error of one field, in words."""
    if kind == "missing":
        return _("This is required.")
    if field_name == "phone":
        return _("Write the number with +, the country code and the number, e.g. +8613800138000.")
    if field_name == "code":
        return _("The code is the 6 digits of the message we sent.")
    if field_name in ("password", "new_password") and "short" in kind:
        return _("The password needs at least 8 characters.")
    if field_name == "email":
        return _("This is not a valid e-mail address.")
    if field_name == "iccid":
        return _("An ICCID is the 19 or 20 digits printed on the card.")
    if field_name == "promo_code":
        return _("A promotion code is letters, digits, - and _ only.")
    if field_name == "token":
        return _("Choose a saved card, or a method that needs none.")
    if kind == "extra_forbidden":
        return _("This cannot be sent here.")
    # A rule the site does not know the words for: the API's own, which names the rule.
    return message


def explain(problem: ApiProblemError) -> FormErrors:
    """The sentences for a problem answer."""
    said = FormErrors()
    if problem.status == 429:
        seconds = problem.retry_after or 60
        said.general = _("Too many tries: wait {seconds} seconds and try again.").format(
            seconds=seconds
        )
        return said
    if problem.status == 422 and problem.errors:
        for item in problem.errors:
            path = [part for part in str(item.get("field", "")).split(".") if part]
            # body.payment.token -> token; body.monthly_cap.amount -> cap_amount
            while path and path[0] in ("body", "query", "path", "payment"):
                path.pop(0)
            name = "_".join(path) or "form"
            name = name.replace("monthly_cap_", "cap_")
            message = _validation(name, str(item.get("type", "")), str(item.get("message", "")))
            said.fields.setdefault(name, message)
        return said
    known = _kinds().get(problem.kind)
    if known is not None:
        concerns, sentence = known
        if concerns is None:
            said.general = sentence
        else:
            said.fields[concerns] = sentence
        return said
    if problem.status == 401:
        said.general = _("Please sign in again.")
    elif problem.status == 404:
        said.general = _("This was not found, or it is not yours.")
    else:
        said.general = _("This could not be done: {detail}").format(detail=problem.detail)
    return said


def unavailable() -> FormErrors:
    """What to say when accounts does not answer."""
    return FormErrors(general=_("The service is not answering just now: try again in a minute."))
