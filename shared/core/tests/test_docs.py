"""The services' API docs: `/docs` and `/redoc` load everything from the service, nothing else."""

import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from esim_core.service import ServiceRuntime
from esim_core.settings import ServiceSettings
from esim_core.web.docs import (
    A11Y_JS,
    ASSETS_DIR,
    CONTRAST_CSS,
    OWN,
    REDOC,
    SWAGGER_UI,
    install_offline_docs,
)
from fastapi import FastAPI

# Anything a page would fetch: src/href attributes and `url(...)`s, absolute or not.
REFERENCE = re.compile(r"""(?:src|href|spec-url)\s*=\s*["']([^"']+)["']""")
OUTSIDE = re.compile(r"(?:https?:)?//", re.IGNORECASE)


@pytest.fixture
def app(tmp_path: Path) -> FastAPI:
    """A service's app as every service builds it (`ServiceRuntime.http_app`), never started."""
    settings = ServiceSettings(
        database_url=f"sqlite+aiosqlite:///{tmp_path}/docs.sqlite", http_port=8000
    )
    return ServiceRuntime("docs", settings, tables=[]).http_app("eSIM docs test")


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://svc") as http:
        yield http


@pytest.mark.parametrize("path", ["/docs", "/redoc", "/docs/oauth2-redirect"])
async def test_a_docs_page_references_no_outside_host(client: httpx.AsyncClient, path: str) -> None:
    answer = await client.get(path)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/html")
    references = REFERENCE.findall(answer.text)
    outside = [ref for ref in references if OUTSIDE.match(ref)]
    assert outside == [], f"{path} loads from outside the service: {outside}"
    assert "cdn.jsdelivr.net" not in answer.text
    assert "fonts.googleapis.com" not in answer.text
    assert "fastapi.tiangolo.com" not in answer.text


async def test_swagger_ui_loads_its_script_and_style_from_the_service(
    client: httpx.AsyncClient,
) -> None:
    page = (await client.get("/docs")).text
    assert f'src="/docs/assets/{SWAGGER_UI}/swagger-ui-bundle.js"' in page
    assert f'href="/docs/assets/{SWAGGER_UI}/swagger-ui.css"' in page
    assert f'href="/docs/assets/{OWN}/{CONTRAST_CSS}"' in page
    assert f'src="/docs/assets/{OWN}/{A11Y_JS}"' in page
    assert "url: '/openapi.json'" in page
    # The validator badge would be an image from validator.swagger.io.
    assert '"validatorUrl": null' in page
    assert '"deepLinking": false' in page


async def test_redoc_loads_its_script_from_the_service(client: httpx.AsyncClient) -> None:
    page = (await client.get("/redoc")).text
    assert f'src="/docs/assets/{REDOC}/redoc.standalone.js"' in page
    assert 'spec-url="/openapi.json"' in page


@pytest.mark.parametrize(
    ("path", "media_type", "starts_with"),
    [
        (f"/docs/assets/{SWAGGER_UI}/swagger-ui-bundle.js", "text/javascript", b"/*!"),
        (f"/docs/assets/{SWAGGER_UI}/swagger-ui.css", "text/css", b".swagger-ui"),
        (f"/docs/assets/{SWAGGER_UI}/favicon-32x32.png", "image/png", b"\x89PNG"),
        (f"/docs/assets/{OWN}/{CONTRAST_CSS}", "text/css", b"/*"),
        (f"/docs/assets/{OWN}/{A11Y_JS}", "text/javascript", b"/*"),
    ],
)
async def test_the_vendored_assets_are_served(
    client: httpx.AsyncClient, path: str, media_type: str, starts_with: bytes
) -> None:
    answer = await client.get(path)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith(media_type)
    assert answer.content.startswith(starts_with)
    assert len(answer.content) == (ASSETS_DIR / path.removeprefix("/docs/assets/")).stat().st_size


async def test_redoc_is_served_without_its_logo_from_redoclys_cdn(
    client: httpx.AsyncClient,
) -> None:
    shipped = (ASSETS_DIR / REDOC / "redoc.standalone.js").read_bytes()
    answer = await client.get(f"/docs/assets/{REDOC}/redoc.standalone.js")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/javascript")
    assert b"https://cdn.redoc.ly/redoc/logo-mini.svg" in shipped  # as npm ships it
    assert b"cdn.redoc.ly" not in answer.content
    assert answer.content.startswith(b"/*!")
    assert abs(len(answer.content) - len(shipped)) < 100


@pytest.mark.parametrize("package", [SWAGGER_UI, REDOC])
def test_each_vendored_package_keeps_its_licence(package: str) -> None:
    assert (ASSETS_DIR / package / "LICENSE").is_file()


async def test_the_docs_pages_allow_scripts_from_the_service_only(
    client: httpx.AsyncClient,
) -> None:
    for path in ("/docs", "/redoc"):
        answer = await client.get(path)
        policy = answer.headers["content-security-policy"]
        directives = {
            name: value
            for name, _, value in (part.strip().partition(" ") for part in policy.split(";"))
            if name
        }
        assert directives["default-src"] == "'none'"
        assert "'unsafe-inline'" not in directives["script-src"]
        assert "'unsafe-eval'" not in directives["script-src"]
        assert directives["connect-src"] == "'self'"
        assert not OUTSIDE.search(policy)
        assert '<html lang="en">' in answer.text


async def test_swagger_uis_inline_start_up_is_allowed_by_its_hash(
    client: httpx.AsyncClient,
) -> None:
    answer = await client.get("/docs")
    assert "<script>" in answer.text
    assert "'sha256-" in answer.headers["content-security-policy"]


async def test_the_docs_follow_a_proxys_root_path(app: FastAPI) -> None:
    transport = httpx.ASGITransport(app=app, root_path="/accounts")
    async with httpx.AsyncClient(transport=transport, base_url="http://svc") as http:
        page = (await http.get("/docs")).text
    assert f'src="/accounts/docs/assets/{SWAGGER_UI}/swagger-ui-bundle.js"' in page
    assert "url: '/accounts/openapi.json'" in page


def test_an_app_with_fastapis_own_docs_is_refused() -> None:
    with pytest.raises(ValueError, match="docs_url=None"):
        install_offline_docs(FastAPI())


async def test_the_docs_pages_are_not_in_the_openapi_document(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert not [path for path in paths if path.startswith(("/docs", "/redoc"))]
