"""A service's API docs (`/docs`, Swagger UI; `/redoc`, ReDoc) with every asset from the machine.

FastAPI's own docs pages load Swagger UI and ReDoc from a CDN (and a favicon and fonts from
other hosts): where those cannot be reached the page stays blank (`SwaggerUIBundle is not
defined`). Here the pages are FastAPI's (`get_swagger_ui_html`, `get_redoc_html`) pointed at the
pinned copies in `docs_assets/` (see its README: versions, licences, integrity), which the
service serves itself under `/docs/assets/`.

Each page carries a Content-Security-Policy that allows nothing from outside the service: its
one inline script (Swagger UI's start-up, written by FastAPI) is allowed by its SHA-256 hash,
not by `'unsafe-inline'`. Styles may be inline: both UIs set them at run time.
"""

import base64
import hashlib
import re
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

ASSETS_DIR = Path(__file__).with_name("docs_assets")
ASSETS_PATH = "/docs/assets"
SWAGGER_UI = "swagger-ui-5.36.0"
REDOC = "redoc-2.5.4"

DOCS_PATH = "/docs"
REDOC_PATH = "/redoc"
OAUTH2_REDIRECT_PATH = "/docs/oauth2-redirect"

OWN = "esim"  # our own additions, beside the vendored packages
CONTRAST_CSS = "swagger-ui-contrast.css"
A11Y_JS = "swagger-ui-a11y.js"

# Swagger UI's default `validatorUrl` shows a badge image fetched from validator.swagger.io:
# an outside host, so it is turned off. Deep links put a link inside each operation's
# expand button (two nested controls, which a screen reader cannot tell apart: axe's
# nested-interactive), so they are off too. The "obsidian" highlighting is the one of Swagger
# UI's themes whose colours all meet WCAG AA contrast on its background (the default, agate,
# does not).
SWAGGER_UI_PARAMETERS: dict[str, Any] = {
    "validatorUrl": None,
    "deepLinking": False,
    "syntaxHighlight": {"theme": "obsidian"},
}

# ReDoc 2 always shows Redocly's logo from cdn.redoc.ly in its menu. The vendored file stays
# as npm ships it; the service serves it with that one address replaced by an empty image, so
# the page fetches nothing from outside (the policy would block it, with a console error).
REDOC_SCRIPT = "redoc.standalone.js"
REDOC_LOGO = b"https://cdn.redoc.ly/redoc/logo-mini.svg"
EMPTY_IMAGE = b"data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg'/%3E"

_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)


def asset_url(root_path: str, package: str, name: str) -> str:
    """Where the service serves one vendored file, behind `root_path` (a proxy's prefix)."""
    return f"{root_path}{ASSETS_PATH}/{package}/{name}"


def content_security_policy(html: str) -> str:
    """The policy for a docs page: the service's own origin only, its inline scripts by hash.

    `connect-src 'self'` lets the page read `/openapi.json` and Swagger UI's "Try it out" call
    the service; `worker-src blob:` is ReDoc's search, which runs in a worker built from a blob.
    """
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(body.encode()).digest()).decode() + "'"
        for body in _INLINE_SCRIPT.findall(html)
    )
    script_src = f"'self' {hashes}".strip()
    return (
        "default-src 'none'; "
        f"script-src {script_src}; "
        "style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; "
        "font-src 'self' data:; "
        "connect-src 'self'; "
        "worker-src blob:; "
        "base-uri 'none'; "
        "form-action 'self'; "
        "frame-ancestors 'none'"
    )


def _page(response: HTMLResponse, stylesheet: str = "", script: str = "") -> HTMLResponse:
    """FastAPI's page with a language (screen readers need it), an added `stylesheet` (after
    the page's own, so it wins) and `script`, and the policy that fits it."""
    html = bytes(response.body).decode().replace("<html>", '<html lang="en">', 1)
    added = ""
    if stylesheet:
        added += f'<link type="text/css" rel="stylesheet" href="{stylesheet}">\n'
    if script:
        added += f'<script src="{script}"></script>\n'
    html = html.replace("</head>", f"{added}</head>", 1)
    return HTMLResponse(
        html,
        headers={
            "Content-Security-Policy": content_security_policy(html),
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
        },
    )


def install_offline_docs(app: FastAPI) -> None:
    """Serve `/docs`, `/docs/oauth2-redirect`, `/redoc` and their assets on `app`.

    `app` must have been built with `docs_url=None, redoc_url=None` so that FastAPI's CDN pages
    are not registered first.
    """
    if app.docs_url is not None or app.redoc_url is not None:
        raise ValueError("build the app with docs_url=None and redoc_url=None")
    if app.openapi_url is None:
        return  # no OpenAPI document, nothing to show
    redoc_script = (ASSETS_DIR / REDOC / REDOC_SCRIPT).read_bytes().replace(REDOC_LOGO, EMPTY_IMAGE)

    # Registered before the mount, which would otherwise answer with the file as shipped.
    @app.get(f"{ASSETS_PATH}/{REDOC}/{REDOC_SCRIPT}", include_in_schema=False)
    async def redoc_script_without_outside_logo() -> Response:
        return Response(
            redoc_script,
            media_type="text/javascript; charset=utf-8",
            headers={"Cache-Control": "public, max-age=86400"},
        )

    app.mount(ASSETS_PATH, StaticFiles(directory=ASSETS_DIR), name="docs-assets")

    @app.get(DOCS_PATH, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        parameters = {**SWAGGER_UI_PARAMETERS, **(app.swagger_ui_parameters or {})}
        return _page(
            get_swagger_ui_html(
                openapi_url=f"{root}{app.openapi_url}",
                title=f"{app.title} - Swagger UI",
                swagger_js_url=asset_url(root, SWAGGER_UI, "swagger-ui-bundle.js"),
                swagger_css_url=asset_url(root, SWAGGER_UI, "swagger-ui.css"),
                swagger_favicon_url=asset_url(root, SWAGGER_UI, "favicon-32x32.png"),
                oauth2_redirect_url=f"{root}{OAUTH2_REDIRECT_PATH}",
                init_oauth=app.swagger_ui_init_oauth,
                swagger_ui_parameters=parameters,
            ),
            stylesheet=asset_url(root, OWN, CONTRAST_CSS),
            script=asset_url(root, OWN, A11Y_JS),
        )

    @app.get(OAUTH2_REDIRECT_PATH, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return _page(get_swagger_ui_oauth2_redirect_html())

    @app.get(REDOC_PATH, include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return _page(
            get_redoc_html(
                openapi_url=f"{root}{app.openapi_url}",
                title=f"{app.title} - ReDoc",
                redoc_js_url=asset_url(root, REDOC, "redoc.standalone.js"),
                redoc_favicon_url=asset_url(root, SWAGGER_UI, "favicon-32x32.png"),
                with_google_fonts=False,
            )
        )
