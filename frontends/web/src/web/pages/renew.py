"""Plans, the quote, paying, following a renewal to its end, receipts and cancelling."""

from typing import Any
from urllib.parse import quote
from uuid import UUID, uuid4

from fastapi import APIRouter, Request
from starlette.datastructures import FormData
from starlette.responses import Response

from web.accounts import AccountsUnavailableError, ApiProblemError
from web.i18n import _, babel_locale, current_locale
from web.outcomes import outcome
from web.pages.cards import CURRENCIES, card_path, currency_for, plans_by_code
from web.pages.common import anonymous, checked_form, see_other, session_of, text, traveller
from web.plan_names import localized
from web.problems import FormErrors, explain, unavailable
from web.render import render

router = APIRouter()

KINDS = ("daily", "monthly", "quarterly")
METHODS = ("card", "paypal", "alipay")


def test_cards(tokens: list[str]) -> list[tuple[str, str]]:
    """Each test card offered with what it does at the payment sandbox (CONTRACT.md, "Sandbox
    behaviour"): Stripe's own test payment methods, then the sandbox's suffixes; "" unknown."""
    named = {
        "pm_card_visa": _("approved"),
        "pm_card_mastercard": _("approved"),
        "pm_card_authenticationRequired": _("asks for 3-D Secure at the bank's page first"),
        "pm_card_chargeDeclined": _("declined"),
        "pm_card_chargeDeclinedInsufficientFunds": _(
            "declined for insufficient funds, after several tries"
        ),
        "pm_card_chargeDeclinedExpiredCard": _("declined: the card has expired"),
    }
    suffixes = {
        "_ok": _("approved"),
        "_action": _("asks for 3-D Secure at the bank's page first"),
        "_declined": _("declined"),
        "_insufficient": _("declined for insufficient funds, after several tries"),
        "_expired": _("declined: the card has expired"),
        "_flaky": _("approved after two passing errors"),
        "_slow": _("approved after a few seconds"),
    }

    def said(token: str) -> str:
        if token in named:
            return named[token]
        return next((text for end, text in suffixes.items() if token.endswith(end)), "")

    return [(token, said(token)) for token in tokens]


def country_names(codes: set[str]) -> list[tuple[str, str]]:
    """(code, name in the current language), sorted by name."""
    territories = babel_locale(current_locale()).territories
    return sorted(((code, territories.get(code, code)) for code in codes), key=lambda pair: pair[1])


async def _catalogue(request: Request) -> dict[str, Any]:
    """The plans filtered as the query asks (country, kind, currency), and the filters' choices."""
    currency = currency_for(request)
    every = await anonymous(request, "GET", "/v1/plans", params={"currency": currency})
    country = request.query_params.get("country", "").upper()
    kind = request.query_params.get("kind", "")
    shown = [
        localized(plan)
        for plan in every
        if (not country or country in plan["countries"])
        and (kind not in KINDS or plan["kind"] == kind)
    ]
    countries = {code for plan in every for code in plan["countries"]}
    return {
        "plans": shown,
        "countries": country_names(countries),
        "country": country,
        "kind": kind if kind in KINDS else "",
        "kinds": KINDS,
        "currency": currency,
        "currencies": CURRENCIES,
    }


@router.get("/plans")
async def plans_page(request: Request) -> Response:
    """The catalogue by country or region and kind, priced in the chosen currency."""
    return render(request, "plans.html", **await _catalogue(request))


@router.get("/cards/{iccid}/renew")
async def renew_page(request: Request, iccid: str) -> Response:
    """Choose the plan, when it starts, and a promotion code."""
    card = await traveller(request).call("GET", f"/v1/cards/{quote(iccid, safe='')}")
    return render(request, "renew.html", card=card, values={}, **await _catalogue(request))


async def _quote_page(
    request: Request, iccid: str, form: FormData, said: FormErrors | None, status: int
) -> Response:
    """The quote of the chosen plan, and the payment form under it."""
    choice = {
        "plan_code": text(form, "plan_code"),
        "start": "now" if text(form, "start") == "now" else "after_current",
        "currency": text(form, "currency") if text(form, "currency") in CURRENCIES else "USD",
    }
    promo = text(form, "promo_code")
    body: dict[str, Any] = {"plan_code": choice["plan_code"], "start": choice["start"]}
    if promo:
        body["promo_code"] = promo
    api = traveller(request)
    path = f"/v1/cards/{quote(iccid, safe='')}"
    try:
        quoted = await api.call("POST", f"{path}/quote", json=body)
    except (ApiProblemError, AccountsUnavailableError) as error:
        refused = explain(error) if isinstance(error, ApiProblemError) else unavailable()
        card = await api.call("GET", path)
        request.scope["query_string"] = f"currency={choice['currency']}".encode()
        return render(
            request,
            "renew.html",
            status_code=error.status if isinstance(error, ApiProblemError) else 503,
            card=card,
            values={**choice, "promo_code": promo},
            errors=refused.fields,
            problem=refused.general,
            **await _catalogue(request),
        )
    card = await api.call("GET", path)
    plans = await plans_by_code(request, choice["currency"])
    said = said or FormErrors()
    return render(
        request,
        "quote.html",
        status_code=status,
        card=card,
        quote=quoted,
        plan=plans.get(
            choice["plan_code"], {"code": choice["plan_code"], "name": choice["plan_code"]}
        ),
        choice={**choice, "promo_code": quoted.get("promo_code") or promo},
        methods=METHODS,
        method=text(form, "method") or "card",
        token=text(form, "token"),
        card_tokens=test_cards(request.app.state.settings.card_tokens()),
        renewal_key=text(form, "renewal_key") or str(uuid4()),
        errors=said.fields,
        problem=said.general,
    )


@router.post("/cards/{iccid}/quote")
async def quote_step(request: Request, iccid: str) -> Response:
    """What the renewal would cost and give (nothing is charged), then how to pay."""
    form = await checked_form(request)
    return await _quote_page(request, iccid, form, None, 200)


def _renewal_key(form: FormData) -> str:
    # The key the quote page minted: sending the form twice renews once (same key, same body).
    key = text(form, "renewal_key")
    try:
        return str(UUID(key))
    except ValueError:
        return str(uuid4())


@router.post("/cards/{iccid}/renewals")
async def pay(request: Request, iccid: str) -> Response:
    """Ask for the renewal; the buyer then follows it (and approves at the provider if asked)."""
    form = await checked_form(request)
    key = _renewal_key(form)
    method = text(form, "method")
    if method not in METHODS:
        said = FormErrors(fields={"method": _("Choose how to pay.")})
        return await _quote_page(request, iccid, form, said, 422)
    settings = request.app.state.settings
    payment: dict[str, Any] = {
        "method": method,
        "return_url": f"{settings.public_url.rstrip('/')}/renewals/{key}",
    }
    token = text(form, "token")
    if method == "card":
        if not token:
            said = FormErrors(fields={"token": _("Choose a saved card.")})
            return await _quote_page(request, iccid, form, said, 422)
        payment["token"] = token
    # PayPal and Alipay go to the provider's page for the buyer's approval: the saved-card
    # field is the card's alone, so a card typed there before switching to PayPal is not sent
    # to PayPal as a saved account (it would be refused as an invalid source).
    body: dict[str, Any] = {
        "plan_code": text(form, "plan_code"),
        "start": "now" if text(form, "start") == "now" else "after_current",
        "payment": payment,
    }
    if text(form, "promo_code"):
        body["promo_code"] = text(form, "promo_code")
    api = traveller(request)
    path = f"/v1/cards/{quote(iccid, safe='')}/renewals"
    try:
        accepted = await api.call("POST", path, json=body, headers={"Idempotency-Key": key})
    except ApiProblemError as problem:
        return await _quote_page(request, iccid, form, explain(problem), problem.status)
    except AccountsUnavailableError:
        return await _quote_page(request, iccid, form, unavailable(), 503)
    return see_other(f"/renewals/{accepted['renewal_id']}")


def _back_from_provider(request: Request) -> None:
    """Tell the buyer back from a provider's page what happens next (once, as a flash)."""
    query = request.query_params
    # Stripe's 3-D Secure return says `redirect_status=failed`, PayPal's cancel page is our
    # return page with `cancelled=true` (billing's choice); Alipay's return says nothing of it.
    if query.get("redirect_status") == "failed" or query.get("cancelled") == "true":
        said = _(
            "You did not approve the payment, so nothing is charged. This page shows the "
            "renewal's end as soon as the provider confirms it."
        )
    else:
        said = _("Welcome back from the payment provider: this page follows your renewal.")
    session_of(request).say(said)


@router.get("/renewals/return")
async def provider_return(request: Request) -> Response:
    """Where a provider sends back a buyer whose renewal named no return page of its own
    (billing's default `return_url`): to the renewal where the provider names it, else to
    the cards, whose history lists it."""
    _back_from_provider(request)
    # Alipay names the renewal (`out_trade_no`); Stripe and PayPal only their own ids.
    try:
        renewal_id = UUID(request.query_params.get("out_trade_no", ""))
    except ValueError:
        return see_other("/cards")
    return see_other(f"/renewals/{renewal_id}")


@router.get("/renewals/{renewal_id}")
async def renewal_page(request: Request, renewal_id: UUID) -> Response:
    """A renewal's progress until it ends; htmx asks again by itself, a reload works too."""
    if request.url.query and not request.headers.get("hx-request"):
        # Back from a payment provider, whose parameters (order ids, tokens) stay off the page.
        _back_from_provider(request)
        return see_other(f"/renewals/{renewal_id}")
    renewal = await traveller(request).call("GET", f"/v1/renewals/{renewal_id}")
    said = outcome(renewal)
    plans = await plans_by_code(request, (renewal.get("price") or {}).get("currency", "USD"))
    template = (
        "partials/renewal_status.html" if request.headers.get("hx-request") else "renewal.html"
    )
    response = render(
        request,
        template,
        renewal=renewal,
        outcome=said,
        action=renewal.get("payment_action")
        if renewal.get("status") == "PAYMENT_ACTION_REQUIRED"
        else None,
        plan=plans.get(str(renewal.get("plan_code")), {}),
    )
    response.headers["Vary"] = "HX-Request"
    return response


@router.get("/renewals/{renewal_id}/receipt")
async def receipt_page(request: Request, renewal_id: UUID) -> Response:
    """The receipt of a paid renewal, printable."""
    renewal = await traveller(request).call("GET", f"/v1/renewals/{renewal_id}")
    plans = await plans_by_code(request, (renewal.get("price") or {}).get("currency", "USD"))
    return render(
        request,
        "receipt.html",
        renewal=renewal,
        outcome=outcome(renewal),
        plan=plans.get(str(renewal.get("plan_code")), {}),
    )


@router.post("/renewals/{renewal_id}/cancel")
async def cancel(request: Request, renewal_id: UUID) -> Response:
    """Cancel a queued plan, once the traveller ticked that it cannot be undone."""
    form = await checked_form(request)
    back = text(form, "iccid")
    session = session_of(request)
    if form.get("understood") != "on":
        session.say(_("Tick the box to confirm: a cancelled plan cannot be restored."))
        return see_other(card_path(back) if back else f"/renewals/{renewal_id}")
    try:
        await traveller(request).call("POST", f"/v1/renewals/{renewal_id}/cancel")
    except ApiProblemError as problem:
        said = explain(problem)
        session.say(said.general or next(iter(said.fields.values()), ""))
        return see_other(card_path(back) if back else f"/renewals/{renewal_id}")
    except AccountsUnavailableError:
        session.say(unavailable().general or "")
        return see_other(card_path(back) if back else f"/renewals/{renewal_id}")
    session.say(_("The queued plan is being cancelled; the refund follows."))
    return see_other(f"/renewals/{renewal_id}")
