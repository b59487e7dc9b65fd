"""Signing up, in and out, a forgotten password, the profile and the language."""

from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from starlette.responses import Response

from web import i18n
from web.accounts import AccountsUnavailableError, ApiProblemError
from web.i18n import _
from web.pages.common import (
    anonymous,
    checked_form,
    local_path,
    see_other,
    session_of,
    text,
    traveller,
)
from web.problems import FormErrors, explain, unavailable
from web.render import render

router = APIRouter()
T = TypeVar("T")


def _form_page(
    request: Request,
    template: str,
    said: FormErrors,
    values: dict[str, Any],
    status: int,
    context: dict[str, Any],
) -> Response:
    return render(
        request,
        template,
        status_code=status,
        errors=said.fields,
        problem=said.general,
        values=values,
        **context,
    )


async def _through_form(
    request: Request,
    template: str,
    values: dict[str, Any],
    call: Callable[[], Awaitable[T]],
    problem_status: Callable[[ApiProblemError], int] = lambda problem: problem.status,
    **context: Any,
) -> T | Response:
    """What a form's call to accounts answers, or the form again saying what went wrong.

    A problem answer puts its field and general messages on the form (with the status
    `problem_status` gives); accounts not answering says so, with a 503. `context` is what
    else the form's template is given.
    """
    try:
        return await call()
    except ApiProblemError as problem:
        said = explain(problem)
        return _form_page(request, template, said, values, problem_status(problem), context)
    except AccountsUnavailableError:
        return _form_page(request, template, unavailable(), values, 503, context)


async def _sign_in(request: Request, email: str, password: str) -> None:
    """Password grant at accounts; the tokens and the traveller's language go in the session."""
    tokens = await anonymous(
        request,
        "POST",
        "/v1/auth/token",
        data={"grant_type": "password", "username": email, "password": password},
    )
    session = session_of(request)
    session.sign_in(tokens, email, now=request.app.state.clock())
    me = await traveller(request).call("GET", "/v1/users/me")
    session.locale = i18n.supported(me.get("locale")) or session.locale


@router.get("/signup")
async def signup_page(request: Request) -> Response:
    """The registration form."""
    return render(request, "signup.html", values={})


@router.post("/signup")
async def signup(request: Request) -> Response:
    """Register at accounts, then sign in with the same password."""
    form = await checked_form(request)
    values = {
        "email": text(form, "email"),
        "name": text(form, "name"),
        "phone": text(form, "phone"),
    }
    password = str(form.get("password") or "")
    body: dict[str, Any] = {
        "email": values["email"],
        "password": password,
        "locale": i18n.current_locale(),
    }
    if values["name"]:
        body["name"] = values["name"]
    if values["phone"]:
        body["phone"] = values["phone"]

    async def register() -> None:
        await anonymous(request, "POST", "/v1/users", json=body)
        await _sign_in(request, values["email"], password)

    refused = await _through_form(request, "signup.html", values, register)
    if isinstance(refused, Response):
        return refused
    session_of(request).say(_("Welcome! Your account is ready: bind your card to begin."))
    return see_other("/cards")


@router.get("/signin")
async def signin_page(request: Request) -> Response:
    """The sign-in form."""
    return render(request, "signin.html", values={})


@router.post("/signin")
async def signin(request: Request) -> Response:
    """Sign in with the e-mail and password (OAuth2 password grant at accounts)."""
    form = await checked_form(request)
    values = {"email": text(form, "email")}
    refused = await _through_form(
        request,
        "signin.html",
        values,
        lambda: _sign_in(request, values["email"], str(form.get("password") or "")),
        problem_status=lambda problem: problem.status if problem.status in (401, 422, 429) else 400,
    )
    if isinstance(refused, Response):
        return refused
    return see_other(local_path(text(form, "next"), "/cards"))


@router.post("/signout")
async def signout(request: Request) -> Response:
    """End the session here and at accounts."""
    await checked_form(request)
    # Accounts not answering: the cookie is forgotten all the same; the token then expires.
    with suppress(AccountsUnavailableError):
        await traveller(request).logout()
    session_of(request).say(_("You are signed out."))
    return see_other("/")


@router.get("/password/forgot")
async def forgot_page(request: Request) -> Response:
    """Ask for a reset code."""
    return render(request, "forgot.html", values={})


@router.post("/password/forgot")
async def forgot(request: Request) -> Response:
    """Ask accounts to send a code; the next page takes it (the address is kept in the form)."""
    form = await checked_form(request)
    values = {"email": text(form, "email")}
    refused = await _through_form(
        request,
        "forgot.html",
        values,
        lambda: anonymous(request, "POST", "/v1/auth/password-reset", json=values),
    )
    if isinstance(refused, Response):
        return refused
    return render(request, "reset.html", values=values, sent=True)


@router.get("/password/reset")
async def reset_page(request: Request) -> Response:
    """Enter the code and a new password."""
    return render(request, "reset.html", values={}, sent=False)


@router.post("/password/reset")
async def reset(request: Request) -> Response:
    """Set the new password with the code (sent in the body, never in a URL)."""
    form = await checked_form(request)
    values = {"email": text(form, "email")}
    body = {
        "email": values["email"],
        "code": text(form, "code"),
        "new_password": str(form.get("new_password") or ""),
    }
    refused = await _through_form(
        request,
        "reset.html",
        values,
        lambda: anonymous(request, "POST", "/v1/auth/password-reset/confirm", json=body),
        sent=False,
    )
    if isinstance(refused, Response):
        return refused
    session = session_of(request)
    session.sign_out()
    session.say(_("Your password is changed: sign in with the new one."))
    return see_other("/signin")


@router.get("/profile")
async def profile_page(request: Request) -> Response:
    """The traveller's name, phone, language and channels."""
    me = await traveller(request).call("GET", "/v1/users/me")
    return render(request, "profile.html", values=me)


@router.post("/profile")
async def profile(request: Request) -> Response:
    """Change the profile (PATCH /v1/users/me)."""
    form = await checked_form(request)
    locale = i18n.supported(text(form, "locale")) or i18n.current_locale()
    body: dict[str, Any] = {
        "locale": locale,
        "notify": {
            "email": form.get("notify_email") == "on",
            "sms": form.get("notify_sms") == "on",
        },
    }
    if text(form, "name"):
        body["name"] = text(form, "name")
    body["phone"] = text(form, "phone") or None
    values = {**body, "notify": body["notify"], "email": session_of(request).email}
    me = await _through_form(
        request,
        "profile.html",
        values,
        lambda: traveller(request).call("PATCH", "/v1/users/me", json=body),
    )
    if isinstance(me, Response):
        return me
    session = session_of(request)
    session.locale = i18n.supported(me.get("locale")) or locale
    i18n.use_locale(session.locale)
    session.say(_("Your profile is saved."))
    return see_other("/profile")


@router.post("/locale")
async def switch_locale(request: Request) -> Response:
    """The language switch of every page: remembered here, and in the profile when signed in."""
    form = await checked_form(request)
    locale = i18n.supported(text(form, "locale")) or i18n.DEFAULT_LOCALE
    session = session_of(request)
    session.locale = locale
    session.changed = True
    if session.signed_in:
        # Refused or not answered: the page still changes language; the profile keeps its own.
        with suppress(ApiProblemError, AccountsUnavailableError):
            await traveller(request).call("PATCH", "/v1/users/me", json={"locale": locale})
    return see_other(local_path(text(form, "next")))
