"""What every route uses: the session, the traveller's API, the checked form, redirects."""

from typing import Any
from urllib.parse import urlsplit

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse

from web.accounts import AccountsClient, Traveller
from web.sessions import Session


class CsrfError(Exception):
    """A form without this session's CSRF token, or posted from another site."""


def session_of(request: Request) -> Session:
    """The request's session (loaded by the session middleware)."""
    session: Session = request.state.session
    return session


def client_ip(request: Request) -> str:
    """The traveller's address (uvicorn resolves it where the site is itself behind a proxy)."""
    return request.client.host if request.client else "127.0.0.1"


def accounts(request: Request) -> AccountsClient:
    """The process's accounts client."""
    client: AccountsClient = request.app.state.accounts
    return client


def traveller(request: Request) -> Traveller:
    """The accounts API as the signed-in traveller."""
    return Traveller(
        accounts(request), session_of(request), client_ip(request), request.app.state.clock
    )


async def anonymous(request: Request, method: str, path: str, **kwargs: Any) -> Any:
    """A call that needs no sign-in (registration, sign-in, reset, plans, promotions)."""
    return await accounts(request).call(method, path, client_ip=client_ip(request), **kwargs)


def same_origin(request: Request) -> bool:
    """Whether a post comes from this site: `Sec-Fetch-Site` and `Origin` where the browser sends
    them (a browser posting across sites always sends one of them)."""
    if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    if origin is None:
        # An older browser or a non-browser client: the CSRF token alone decides.
        return True
    ours = {request.app.state.settings.public_url.rstrip("/"), str(request.base_url).rstrip("/")}
    return origin.rstrip("/") in ours


async def checked_form(request: Request) -> FormData:
    """The posted form, once its CSRF token and origin are this site's.

    Raises:
        CsrfError: answered 403 by the app.
    """
    form = await request.form()
    token = form.get("csrf_token")
    if not same_origin(request):
        raise CsrfError("posted from another site")
    given = token if isinstance(token, str) else None
    if not request.app.state.codec.csrf_valid(session_of(request), given):
        raise CsrfError("missing or wrong CSRF token")
    return form


def text(form: FormData, name: str) -> str:
    """A text field of a form, stripped ('' when absent or a file)."""
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def see_other(path: str) -> RedirectResponse:
    """The answer to a post that worked: go and see the page (303)."""
    return RedirectResponse(path, status_code=303)


def local_path(target: str, default: str = "/") -> str:
    """`target` if it is a path on this site, else `default` (no open redirect)."""
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return default
    return target
