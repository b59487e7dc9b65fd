"""Operator auth: the token guard, its 401 problem answers, its OpenAPI and its setting."""

from collections.abc import AsyncIterator

import httpx
import pytest
from esim_core.settings import SettingsError
from esim_core.web.operator import OperatorAuth, OperatorSettings, load_operator_auth
from esim_core.web.problems import install_problem_handlers
from fastapi import APIRouter, FastAPI

TOKEN = "op-test-token-4c1d9e0b7a52"


def ops_router() -> APIRouter:
    router = APIRouter(prefix="/v1")

    @router.get("/things")
    async def things() -> list[str]:
        return ["a"]

    return router


@pytest.fixture
def app() -> FastAPI:
    app = FastAPI()
    install_problem_handlers(app)

    @app.get("/health/live")
    async def live() -> dict[str, str]:
        return {"status": "ok"}

    app.include_router(OperatorAuth(TOKEN).guard(ops_router()))
    return app


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://svc") as http:
        yield http


async def test_without_a_token_the_answer_is_a_401_problem(client: httpx.AsyncClient) -> None:
    answer = await client.get("/v1/things")
    assert answer.status_code == 401
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.headers["www-authenticate"].startswith("Bearer")
    body = answer.json()
    assert body["status"] == 401
    assert body["type"].endswith("/operator-unauthorized")


@pytest.mark.parametrize(
    "header",
    [
        f"Bearer {TOKEN}x",
        f"Bearer {TOKEN[:-1]}",
        "Bearer ",
        f"Basic {TOKEN}",
        TOKEN,
    ],
)
async def test_a_wrong_token_or_scheme_is_refused(client: httpx.AsyncClient, header: str) -> None:
    answer = await client.get("/v1/things", headers={"Authorization": header})
    assert answer.status_code == 401
    assert "www-authenticate" in answer.headers
    assert TOKEN not in answer.text


async def test_the_operator_token_lets_the_request_through(client: httpx.AsyncClient) -> None:
    answer = await client.get("/v1/things", headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 200
    assert answer.json() == ["a"]


async def test_health_stays_open(client: httpx.AsyncClient) -> None:
    assert (await client.get("/health/live")).status_code == 200


def test_openapi_documents_the_scheme_and_the_401(app: FastAPI) -> None:
    document = app.openapi()
    operation = document["paths"]["/v1/things"]["get"]
    assert operation["security"] == [{"OperatorToken": []}]
    answer = operation["responses"]["401"]["content"]["application/problem+json"]
    assert answer["schema"] == {"$ref": "#/components/schemas/Problem"}
    assert document["components"]["schemas"]["Problem"]["required"] == [
        "type",
        "title",
        "status",
        "detail",
    ]
    assert answer["example"]["type"] == "https://esim.example/problems/operator-unauthorized"
    assert document["components"]["securitySchemes"]["OperatorToken"]["scheme"] == "bearer"
    assert "security" not in document["paths"]["/health/live"]["get"]


def test_an_unset_token_stops_the_service_with_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OPERATOR_TOKEN", raising=False)
    with pytest.raises(SettingsError, match=r"OPERATOR_TOKEN: Field required") as raised:
        load_operator_auth()
    assert "var/operator.token" in str(raised.value)


def test_a_short_token_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPERATOR_TOKEN", "short")
    with pytest.raises(SettingsError, match=r"OPERATOR_TOKEN: .*at least 16"):
        load_operator_auth()


def test_the_token_is_read_and_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPERATOR_TOKEN", TOKEN)
    assert OperatorSettings().operator_token.get_secret_value() == TOKEN  # type: ignore[call-arg]
    auth = load_operator_auth()
    assert TOKEN not in repr(auth)
    assert TOKEN not in repr(OperatorSettings())  # type: ignore[call-arg]
