"""AiohttpTransport against a real local server: what goes out, what comes back, what fails."""

import asyncio
import gzip
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
from aiohttp import web
from esim_core.outside.transport import AiohttpTransport

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Server:
    """An aiohttp server on a free port that answers with whatever handler a test sets."""

    def __init__(self) -> None:
        self.handler: Handler | None = None
        self.seen: list[tuple[web.Request, bytes]] = []
        self.peers: set[tuple[str, int]] = set()
        self.url = ""

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.seen.append((request, body))
        if request.transport is not None:
            self.peers.add(request.transport.get_extra_info("peername"))
        assert self.handler is not None
        return await self.handler(request)


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    served = Server()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", served.dispatch)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    served.url = f"http://127.0.0.1:{port}"
    yield served
    await runner.cleanup()


def client(base_url: str, *, timeout_s: float = 5.0) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=base_url,
        timeout=httpx.Timeout(timeout_s),
        transport=AiohttpTransport(max_connections=4),
        headers={"User-Agent": "esim-test"},
    )


async def test_a_json_post_goes_out_and_its_answer_comes_back(server: Server) -> None:
    async def created(_: web.Request) -> web.Response:
        return web.json_response({"id": "ch_1"}, status=201, reason="Created Now")

    server.handler = created
    async with client(server.url) as http:
        response = await http.post(
            "/v1/charges", json={"amount": 990}, headers={"Idempotency-Key": "charge:1"}
        )

    assert response.status_code == 201
    assert response.is_success and response.json() == {"id": "ch_1"}
    assert response.reason_phrase == "Created Now"
    assert response.headers["content-type"].startswith("application/json")
    [(request, body)] = server.seen
    assert (request.method, request.path) == ("POST", "/v1/charges")
    assert request.headers["Idempotency-Key"] == "charge:1"
    assert request.headers["User-Agent"] == "esim-test"
    assert request.headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"amount": 990}


async def test_an_escaped_path_and_a_query_stay_as_sent(server: Server) -> None:
    async def ok(_: web.Request) -> web.Response:
        return web.json_response({})

    server.handler = ok
    async with client(server.url) as http:
        await http.get("/v1/bundles/ord%2F..%2Fx", params={"iccid": "8944 5"})

    [(request, _)] = server.seen
    assert request.raw_path == "/v1/bundles/ord%2F..%2Fx?iccid=8944+5"


async def test_an_encoded_answer_is_decoded_once(server: Server) -> None:
    async def zipped(_: web.Request) -> web.Response:
        return web.Response(
            body=gzip.compress(b'{"status": "active"}'),
            headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
        )

    server.handler = zipped
    async with client(server.url) as http:
        response = await http.get("/v1/bundles/1")
    assert response.json() == {"status": "active"}


async def test_error_answers_are_answers(server: Server) -> None:
    async def declined(_: web.Request) -> web.Response:
        return web.json_response({"error": {"code": "declined"}}, status=402)

    server.handler = declined
    async with client(server.url) as http:
        response = await http.post("/v1/charges", json={})
    assert response.status_code == 402
    assert response.json() == {"error": {"code": "declined"}}


async def test_requests_share_a_bounded_pool(server: Server) -> None:
    async def ok(_: web.Request) -> web.Response:
        await asyncio.sleep(0.01)
        return web.json_response({})

    server.handler = ok
    async with client(server.url) as http:
        await asyncio.gather(*(http.get(f"/v1/x/{n}") for n in range(40)))
    assert len(server.seen) == 40
    assert 1 <= len(server.peers) <= 4


async def test_nothing_listening_is_a_connect_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connections are refused
        async with client(f"http://127.0.0.1:{port}") as http:
            with pytest.raises(httpx.ConnectError):
                await http.get("/v1/x")


async def test_a_server_that_hangs_up_is_a_transport_error(server: Server) -> None:
    async def hang_up(request: web.Request) -> web.Response:
        assert request.transport is not None
        request.transport.close()
        await asyncio.sleep(0.05)
        return web.json_response({})

    server.handler = hang_up
    async with client(server.url) as http:
        with pytest.raises(httpx.TransportError):
            await http.get("/v1/x")


async def test_a_silent_server_times_out_as_httpx_does(server: Server) -> None:
    async def silent(_: web.Request) -> web.Response:
        await asyncio.sleep(1)
        return web.json_response({})

    server.handler = silent
    async with client(server.url, timeout_s=0.1) as http:
        with pytest.raises(httpx.TimeoutException):
            await http.get("/v1/x")
