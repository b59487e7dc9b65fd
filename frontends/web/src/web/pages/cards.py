"""The traveller's cards: status, binding, history with receipts, cancelling, auto-renew."""

from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from starlette.responses import Response

from web.accounts import AccountsUnavailableError, ApiProblemError
from web.i18n import _, current_locale
from web.pages.common import anonymous, checked_form, see_other, session_of, text, traveller
from web.plan_names import localized
from web.problems import FormErrors, explain, unavailable
from web.render import render

router = APIRouter()

CURRENCIES = ("CNY", "USD")


def currency_for(request: Request) -> str:
    """The currency prices are shown in: the one asked for, else the language's usual one."""
    asked = request.query_params.get("currency", "").upper()
    if asked in CURRENCIES:
        return asked
    return "CNY" if current_locale() == "zh-CN" else "USD"


async def plans_by_code(request: Request, currency: str) -> dict[str, dict[str, Any]]:
    """The catalogue in `currency`, by plan code (names for the codes a card shows)."""
    try:
        plans = await anonymous(request, "GET", "/v1/plans", params={"currency": currency})
    except (ApiProblemError, AccountsUnavailableError):
        return {}
    return {plan["code"]: localized(plan) for plan in plans}


#: The methods auto-renew can charge without the traveller present: a saved card, a PayPal vault.
AUTO_RENEW_METHODS = ("card", "paypal")


def card_path(iccid: str) -> str:
    """The page of one card."""
    return f"/cards/{quote(iccid, safe='')}"


@router.get("/cards")
async def cards_page(request: Request) -> Response:
    """Every card of the traveller, and the form to bind one."""
    cards = await traveller(request).call("GET", "/v1/cards")
    plans = await plans_by_code(request, currency_for(request))
    return render(request, "cards.html", cards=cards, plans=plans, values={})


@router.post("/cards")
async def bind(request: Request) -> Response:
    """Bind a card by its ICCID and activation code."""
    form = await checked_form(request)
    values = {
        "iccid": text(form, "iccid").replace(" ", ""),
        "activation_code": text(form, "activation_code"),
    }
    api = traveller(request)
    try:
        await api.call("POST", "/v1/cards", json=values)
    except (ApiProblemError, AccountsUnavailableError) as error:
        said = explain(error) if isinstance(error, ApiProblemError) else unavailable()
        status = error.status if isinstance(error, ApiProblemError) else 503
        cards = await api.call("GET", "/v1/cards")
        plans = await plans_by_code(request, currency_for(request))
        return render(
            request,
            "cards.html",
            status_code=status,
            cards=cards,
            plans=plans,
            values=values,
            errors=said.fields,
            problem=said.general,
        )
    session_of(request).say(_("The card is bound to your account."))
    return see_other(card_path(values["iccid"]))


async def _card_page(
    request: Request, iccid: str, said: FormErrors | None = None, status: int = 200
) -> Response:
    api = traveller(request)
    card = await api.call("GET", f"/v1/cards/{quote(iccid, safe='')}")
    currency = currency_for(request)
    plans = await plans_by_code(request, currency)
    said = said or FormErrors()
    return render(
        request,
        "card.html",
        status_code=status,
        card=card,
        plans=plans,
        currency=currency,
        currencies=CURRENCIES,
        card_tokens=request.app.state.settings.card_tokens(),
        errors=said.fields,
        problem=said.general,
    )


@router.get("/cards/{iccid}")
async def card_page(request: Request, iccid: str) -> Response:
    """One card: the live plan, data left and when it was measured, queued plans, auto-renew."""
    return await _card_page(request, iccid)


@router.get("/cards/{iccid}/history")
async def history_page(request: Request, iccid: str) -> Response:
    """The card's renewals, newest first, a page at a time, each with its receipt."""
    params = {"limit": "20"}
    cursor = request.query_params.get("after")
    if cursor:
        params["cursor"] = cursor
    page = await traveller(request).call(
        "GET", f"/v1/cards/{quote(iccid, safe='')}/renewals", params=params
    )
    plans = await plans_by_code(request, currency_for(request))
    return render(
        request,
        "history.html",
        iccid=iccid,
        renewals=page.get("items", []),
        next_cursor=page.get("next_cursor"),
        plans=plans,
    )


@router.post("/cards/{iccid}/auto-renew")
async def auto_renew(request: Request, iccid: str) -> Response:
    """Turn auto-renew on (a plan, a saved payment source, an optional monthly cap) or off."""
    form = await checked_form(request)
    enabled = form.get("enabled") == "on"
    body: dict[str, Any] = {"enabled": enabled}
    if enabled:
        method = text(form, "method") or "card"
        token = text(form, "token")
        # Auto-renew pays without the traveller: only a saved card or PayPal account can
        # (CONTRACT.md), said beside the field before accounts refuses it.
        if method not in AUTO_RENEW_METHODS:
            said = FormErrors(
                fields={
                    "method": _(
                        "Auto-renew pays without you: choose a card or PayPal (Alipay asks you "
                        "every time)."
                    )
                }
            )
            return await _card_page(request, iccid, said, 422)
        if not token:
            said = FormErrors(
                fields={
                    "token": _(
                        "Auto-renew pays without you, so it needs a saved card or PayPal account."
                    )
                }
            )
            return await _card_page(request, iccid, said, 422)
        body["plan_code"] = text(form, "plan_code")
        body["payment"] = {"method": method, "token": token}
        cap = text(form, "cap_amount")
        if cap:
            try:
                amount = round(float(cap) * 100)
            except ValueError:
                said = FormErrors(fields={"cap_amount": _("Write the cap as a number, e.g. 200.")})
                return await _card_page(request, iccid, said, 422)
            body["monthly_cap"] = {"amount": amount, "currency": text(form, "cap_currency")}
    try:
        await traveller(request).call(
            "PUT", f"/v1/cards/{quote(iccid, safe='')}/auto-renew", json=body
        )
    except ApiProblemError as problem:
        return await _card_page(request, iccid, explain(problem), problem.status)
    except AccountsUnavailableError:
        return await _card_page(request, iccid, unavailable(), 503)
    session_of(request).say(_("Auto-renew is on.") if enabled else _("Auto-renew is off."))
    return see_other(card_path(iccid))
