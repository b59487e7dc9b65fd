"""Pages from the Jinja2 templates: autoescaped, in the request's language, with its CSRF token.

One template per page under `templates/`, a base layout, and partials for what htmx swaps.
"""

from functools import cache
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse

from web import i18n
from web.outcomes import status_label, step_label


@cache
def environment() -> Environment:
    """The templates' environment: every template autoescaped, gettext from the request.

    One per process, shared by every app built in it: nothing in it depends on an app's settings,
    and a template is compiled once, not once per app (the unit tests build an app per test and
    spent a tenth of their event loop's time compiling the same templates again).
    """
    env = Environment(
        loader=PackageLoader("web", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        extensions=["jinja2.ext.i18n"],
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.install_gettext_callables(  # type: ignore[attr-defined]  # added by the i18n extension
        gettext=i18n.gettext_, ngettext=i18n.ngettext_, newstyle=True
    )
    env.filters.update(
        money=i18n.format_money,
        data=i18n.format_data,
        day=i18n.format_day,
        moment=i18n.format_moment,
        countries=i18n.format_countries,
        status=status_label,
        step=step_label,
    )
    env.globals.update(languages=i18n.LANGUAGE_NAMES, html_lang=i18n.html_lang)
    return env


def render(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """A page in the request's language, with what every page shows (session, switch, token)."""
    state = request.app.state
    session = request.state.session
    base = {
        "request": request,
        "locale": i18n.current_locale(),
        "session": session,
        "signed_in": session.signed_in,
        "csrf_token": state.codec.csrf_token(session),
        "flash": session.take_flash(),
        "here": _here(request),
        "poll_s": state.settings.poll_interval_s,
        "errors": {},
        "problem": None,
    }
    html = state.templates.get_template(template).render({**base, **context})
    return HTMLResponse(html, status_code=status_code)


def _here(request: Request) -> str:
    # Where the language switch comes back to: the path and the query (never a secret: none
    # is ever put in a URL by this site).
    query = request.url.query
    return request.url.path + (f"?{query}" if query else "")
