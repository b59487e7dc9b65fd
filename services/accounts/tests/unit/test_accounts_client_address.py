"""Which address a per-address limit counts: the traveller's behind a trusted proxy, else the peer.

The travellers' website calls accounts for every traveller, passing each one's address in
`X-Forwarded-For`. uvicorn (`FORWARDED_ALLOW_IPS`) believes that header only from the peers it
trusts; here the same middleware runs in front of the app as uvicorn runs it.
"""

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import httpx
import pytest
from accounts.api import http_app
from accounts.bootstrap import Accounts
from esim_core.web.operator import OperatorAuth
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

LIMIT = {"limit_login_failures_address": "3/60"}
# A Kubernetes pod network, as deploy/k8s/base/accounts.yaml trusts it, and a website pod in it.
POD_NETWORK = "10.244.0.0/16"
WEBSITE_POD = "10.244.3.7"

Client = Callable[[str, str], AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def client_from(accounts: Accounts) -> Client:
    """A client of the app whose TCP peer is `peer`, behind uvicorn's trust of `trusted`."""

    @asynccontextmanager
    async def connect(peer: str, trusted: str) -> AsyncIterator[httpx.AsyncClient]:
        app = http_app(accounts, OperatorAuth("operator-token-for-the-client-address-tests"))
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=trusted)
        transport = httpx.ASGITransport(app=app, client=(peer, 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://accounts") as http:
            yield http

    return connect


async def failed_login(http: httpx.AsyncClient, n: int, traveller: str | None) -> int:
    headers = {"X-Forwarded-For": traveller} if traveller else {}
    answer = await http.post(
        "/v1/auth/token",
        data={"username": f"u{n}@example.com", "password": "wrong password"},
        headers=headers,
    )
    return answer.status_code


@pytest.mark.parametrize("accounts_settings", [LIMIT], indirect=True)
async def test_behind_the_trusted_website_each_traveller_has_a_limit_of_their_own(
    client_from: Client,
) -> None:
    async with client_from(WEBSITE_POD, POD_NETWORK) as website:
        first = [await failed_login(website, n, "198.51.100.10") for n in range(4)]
        assert first == [401, 401, 401, 429]
        # Another traveller through the same website is not held back by the first one.
        assert await failed_login(website, 9, "198.51.100.11") == 401


@pytest.mark.parametrize("accounts_settings", [LIMIT], indirect=True)
async def test_an_untrusted_peer_cannot_pick_its_address_with_x_forwarded_for(
    client_from: Client,
) -> None:
    async with client_from("203.0.113.50", POD_NETWORK) as outsider:
        answers = [await failed_login(outsider, n, f"198.51.100.{20 + n}") for n in range(4)]
    # Four different claimed addresses, one peer: the fourth attempt is over the peer's limit.
    assert answers == [401, 401, 401, 429]


@pytest.mark.parametrize("accounts_settings", [LIMIT], indirect=True)
async def test_a_trusted_proxy_without_the_header_is_counted_as_itself(
    client_from: Client,
) -> None:
    async with client_from(WEBSITE_POD, POD_NETWORK) as website:
        answers = [await failed_login(website, n, None) for n in range(4)]
    assert answers == [401, 401, 401, 429]


@pytest.mark.parametrize("accounts_settings", [LIMIT], indirect=True)
async def test_the_local_runs_trust_covers_the_website_on_127_0_0_1(
    client_from: Client,
) -> None:
    """`scripts/run-local.sh` trusts 127.0.0.1, the address the website calls accounts from."""
    async with client_from("127.0.0.1", "127.0.0.1") as website:
        assert [await failed_login(website, n, "192.0.2.1") for n in range(4)][3] == 429
        assert await failed_login(website, 9, "192.0.2.2") == 401
