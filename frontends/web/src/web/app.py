"""The website's FastAPI app: sessions, language, security headers, metrics, the pages' routes."""

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.staticfiles import StaticFiles
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response

from web import i18n
from web.accounts import AccountsClient, AccountsUnavailableError, ApiProblemError, SignedOutError
from web.pages import account, cards, info, renew
from web.pages.common import CsrfError, session_of
from web.plan_names import plan_names
from web.problems import explain, unavailable
from web.render import environment, render
from web.sessions import SessionCodec
from web.settings import WebSettings

logger = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
#: No script but the site's own files, no inline script or style, no framing, forms only here.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "object-src 'none'"
)
OPERATIONS = ("/health/live", "/health/ready", "/metrics")

REQUESTS = Counter(
    "esim_web_requests_total", "Pages and posts answered, by route and status", ["route", "status"]
)
REQUEST_SECONDS = Histogram(
    "esim_web_request_seconds",
    "Time to answer a request, by route",
    ["route"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


def create_app(
    settings: WebSettings | None = None,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    clock: Callable[[], float] = time.time,
) -> FastAPI:
    """The website; `transport` stands in for the accounts API in tests."""
    settings = settings or WebSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await app.state.accounts.aclose()

    app = FastAPI(
        title="eSIM travellers' website",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    plan_names()  # the seller's file of plan names: a broken one stops the start, saying why
    app.state.settings = settings
    app.state.clock = clock
    app.state.accounts = AccountsClient(
        settings.accounts_url, settings.accounts_timeout_s, transport=transport
    )
    app.state.codec = SessionCodec(
        settings.cookie_key(),
        settings.csrf_key(),
        secure=settings.secure_cookies,
        max_age_s=settings.session_max_age_s,
    )
    app.state.templates = environment()
    FastAPIInstrumentor.instrument_app(
        app, excluded_urls=",".join(OPERATIONS), exclude_spans=["receive", "send"]
    )
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    for module in (info, account, cards, renew):
        app.include_router(module.router)
    _operations(app)
    _errors(app)

    @app.middleware("http")
    async def pages(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        codec: SessionCodec = request.app.state.codec
        session = codec.load(request)
        request.state.session = session
        i18n.use_locale(session.locale or i18n.negotiate(request.headers.get("accept-language")))
        response = await call_next(request)
        if session.changed and not request.url.path.startswith(("/static/", *OPERATIONS)):
            codec.store(session, response)
        _secure(response, request.url.path)
        route = getattr(request.scope.get("route"), "path", None) or "unmatched"
        REQUESTS.labels(route, str(response.status_code)).inc()
        REQUEST_SECONDS.labels(route).observe(time.perf_counter() - started)
        return response

    return app


def _secure(response: Response, path: str) -> None:
    headers = response.headers
    headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("Referrer-Policy", "same-origin")
    headers.setdefault("X-Frame-Options", "DENY")
    if path.startswith("/static/"):
        headers.setdefault("Cache-Control", "public, max-age=3600")
    else:
        # Pages show a traveller's own cards and payments: never kept by a shared cache.
        headers.setdefault("Cache-Control", "no-store")


def _operations(app: FastAPI) -> None:
    @app.get("/health/live", include_in_schema=False)
    async def live() -> dict[str, str]:
        return {"status": "ok", "service": "web"}

    @app.get("/health/ready", include_in_schema=False, response_model=None)
    async def ready(request: Request) -> Any:
        if await request.app.state.accounts.live():
            return {"status": "ready", "service": "web", "checks": {"accounts": "ok"}}
        return JSONResponse(
            {
                "type": "https://esim.example/problems/not-ready",
                "title": "Service Unavailable",
                "status": 503,
                "detail": "web is not ready: accounts does not answer",
                "checks": {"accounts": "unreachable"},
            },
            status_code=503,
            media_type="application/problem+json",
        )

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> Response:
        # Browsers ask for it whatever the page says; a 404 would be an error in their console.
        return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml")

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def _errors(app: FastAPI) -> None:
    async def signed_out(request: Request, _: Exception) -> Response:
        session = session_of(request)
        session.say(i18n._("Please sign in to continue."))
        session.sign_out()
        if request.headers.get("hx-request"):
            # htmx follows this header with a full page load instead of swapping a fragment.
            return Response(status_code=204, headers={"HX-Redirect": "/signin"})
        return RedirectResponse("/signin", status_code=303)

    async def forbidden(request: Request, error: Exception) -> Response:
        logger.warning("refused a form: %s", error)
        return render(
            request,
            "error.html",
            status_code=403,
            message=i18n._(
                "This form has expired or was sent from another site. Go back, reload the page "
                "and send it again."
            ),
        )

    async def no_answer(request: Request, _: Exception) -> Response:
        return render(request, "error.html", status_code=503, message=unavailable().general)

    async def problem(request: Request, error: Exception) -> Response:
        assert isinstance(error, ApiProblemError)
        said = explain(error)
        message = said.general or " ".join(said.fields.values())
        return render(request, "error.html", status_code=error.status, message=message)

    async def http_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, StarletteHTTPException)
        if error.status_code == 404:
            message = i18n._("There is no such page.")
        elif error.status_code == 422:
            message = i18n._("This address is not valid.")
        else:
            message = str(error.detail)
        return render(request, "error.html", status_code=error.status_code, message=message)

    app.add_exception_handler(SignedOutError, signed_out)
    app.add_exception_handler(CsrfError, forbidden)
    app.add_exception_handler(AccountsUnavailableError, no_answer)
    app.add_exception_handler(ApiProblemError, problem)
    app.add_exception_handler(StarletteHTTPException, http_error)
    # A path that does not parse (a renewal id that is no UUID) is a page that does not exist.
    app.add_exception_handler(
        RequestValidationError,
        lambda request, _: render(
            request, "error.html", status_code=404, message=i18n._("There is no such page.")
        ),
    )
