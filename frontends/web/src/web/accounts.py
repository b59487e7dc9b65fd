"""The one client of the accounts HTTP API: problems as exceptions, tokens refreshed on expiry.

Every call carries the traveller's address in `X-Forwarded-For` (accounts trusts the website as
a proxy, so its per-address limits count per traveller) and the request's `traceparent`.
"""

import logging
import time
from collections.abc import Callable
from typing import Any

import httpx
from opentelemetry.propagate import inject

from web.sessions import Session

logger = logging.getLogger(__name__)

#: Refresh a little before the access token's end, so a call never races its expiry.
REFRESH_MARGIN_S = 15.0


class AccountsUnavailableError(Exception):
    """Accounts did not answer (refused, timed out) or answered with a server error."""


class SignedOutError(Exception):
    """The session has no working tokens any more: the traveller must sign in again."""


class ApiProblemError(Exception):
    """An RFC 9457 problem answer of the accounts API."""

    def __init__(
        self,
        status: int,
        kind: str,
        detail: str,
        errors: list[dict[str, Any]] | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(f"{status} {kind}: {detail}")
        self.status = status
        self.kind = kind
        self.detail = detail
        self.errors = errors or []
        self.retry_after = retry_after

    @classmethod
    def from_response(cls, response: httpx.Response) -> "ApiProblemError":
        """The problem a response describes (a body that is not a problem still gives one)."""
        try:
            body = response.json()
        except ValueError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        kind = str(body.get("type") or "about:blank").rstrip("/").rsplit("/", 1)[-1]
        retry = response.headers.get("Retry-After")
        errors = body.get("errors")
        return cls(
            response.status_code,
            "" if kind == "about:blank" else kind,
            str(body.get("detail") or response.reason_phrase),
            errors if isinstance(errors, list) else [],
            int(retry) if retry and retry.isdigit() else None,
        )


class AccountsClient:
    """Calls the accounts API for the website; one connection pool per process."""

    def __init__(
        self, base_url: str, timeout_s: float, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"), timeout=timeout_s, transport=transport
        )

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def call(
        self,
        method: str,
        path: str,
        *,
        client_ip: str,
        token: str | None = None,
        json: Any = None,
        data: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        """One call; the JSON answer (None for an empty one).

        Raises:
            ApiProblemError: accounts answered 4xx.
            AccountsUnavailableError: no answer, or a 5xx.
        """
        sent = {"Accept": "application/json", "X-Forwarded-For": client_ip, **(headers or {})}
        if token:
            sent["Authorization"] = f"Bearer {token}"
        inject(sent)
        try:
            response = await self._http.request(
                method, path, json=json, data=data, params=params, headers=sent
            )
        except httpx.HTTPError as error:
            logger.warning("accounts did not answer %s %s: %s", method, path, type(error).__name__)
            raise AccountsUnavailableError(str(error)) from error
        if response.status_code >= 500:
            logger.warning("accounts answered %s to %s %s", response.status_code, method, path)
            raise AccountsUnavailableError(f"accounts answered {response.status_code}")
        if response.status_code >= 400:
            raise ApiProblemError.from_response(response)
        if not response.content:
            return None
        return response.json()

    async def live(self) -> bool:
        """Whether accounts answers its liveness probe."""
        try:
            response = await self._http.get("/health/live", timeout=3.0)
        except httpx.HTTPError:
            return False
        return response.status_code == 200


class Traveller:
    """The accounts API as one signed-in traveller: their tokens, kept fresh, their address."""

    def __init__(
        self,
        client: AccountsClient,
        session: Session,
        client_ip: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.session = session
        self.client_ip = client_ip
        self.clock = clock

    async def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """A call with the traveller's access token, refreshed first when it has expired.

        Raises:
            SignedOutError: no session, or its refresh token no longer works.
        """
        if not self.session.signed_in:
            raise SignedOutError("not signed in")
        if self.session.expires_at - REFRESH_MARGIN_S <= self.clock():
            await self.refresh()
        try:
            return await self.client.call(
                method, path, client_ip=self.client_ip, token=self.session.access_token, **kwargs
            )
        except ApiProblemError as problem:
            if problem.status != 401:
                raise
        # Revoked or expired early (a password reset elsewhere): one refresh, one more try.
        await self.refresh()
        try:
            return await self.client.call(
                method, path, client_ip=self.client_ip, token=self.session.access_token, **kwargs
            )
        except ApiProblemError as problem:
            if problem.status == 401:
                self.session.sign_out()
                raise SignedOutError("the session was ended") from problem
            raise

    async def refresh(self) -> None:
        """Trade the refresh token for new tokens; a refused one ends the session."""
        try:
            tokens = await self.client.call(
                "POST",
                "/v1/auth/token",
                client_ip=self.client_ip,
                data={
                    "grant_type": "refresh_token",
                    "refresh_token": self.session.refresh_token or "",
                },
            )
        except ApiProblemError as problem:
            self.session.sign_out()
            raise SignedOutError("the refresh token was refused") from problem
        self.session.keep_tokens(tokens, now=self.clock())

    async def logout(self) -> None:
        """End the session at accounts (its refresh token stops working) and here."""
        refresh = self.session.refresh_token
        self.session.sign_out()
        if refresh:
            try:
                await self.client.call(
                    "POST",
                    "/v1/auth/logout",
                    client_ip=self.client_ip,
                    json={"refresh_token": refresh},
                )
            except ApiProblemError as problem:
                # Already ended there (expired, reset): nothing is left to end.
                logger.info("logout answered %s", problem.status)
