"""HttpAdapter: the base of every adapter to an outside HTTP system (pooled, bounded, timed).

The payment gateway, the eSIM platform and the SMS provider each say what they send and what
the answers mean for their port; how a call is made is said here once: aiohttp's pool under
httpx (`esim_core.outside.transport`), every call timed in `esim_outside_call_seconds` and traced
as a CLIENT span (`telemetry.TimedTransport`), a bound on the whole call, which statuses are
worth another try, what a problem answer says, and replies validated by pydantic models.
"""

import asyncio
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, TypeVar

import httpx
from pydantic import (
    BaseModel,
    StrictBool,
    StringConstraints,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
)

from esim_core.outside.errors import RejectedError
from esim_core.outside.transport import TimedTransport

ReplyT = TypeVar("ReplyT", bound=BaseModel)

# Besides the system's own faults (5xx): a timeout, too early, throttled.
TRANSIENT_STATUSES = frozenset({408, 425, 429})

NonEmpty = Annotated[str, StringConstraints(min_length=1)]
"""A string an answer must not leave empty (an id, a status)."""


def _none_if_invalid(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    try:
        return handler(value)
    except ValidationError:
        return None


IF_VALID = WrapValidator(_none_if_invalid)
"""Marks a reply's field that is not worth failing the answer over: garbled, it reads None."""


def is_transient(status: int) -> bool:
    """Tell whether an answer's status means a later try may succeed."""
    return status >= 500 or status in TRANSIENT_STATUSES


class Problem(BaseModel):
    """What an error answer says: a code, whether the system says to retry, and a message."""

    code: str | None = None
    retryable: bool = False
    message: str

    @property
    def text(self) -> str:
        """The code and message in one short line."""
        return (f"{self.code}: {self.message}" if self.code else self.message)[:200]


class _ErrorFields(BaseModel):
    code: str | None = None
    message: str | None = None
    retryable: StrictBool | None = None


class _ProblemDocument(_ErrorFields):
    """`{"error": {"code", "message", "retryable"}}`, or an RFC 9457 problem with extensions."""

    error: _ErrorFields | None = None
    detail: str | None = None
    title: str | None = None


def problem(response: httpx.Response) -> Problem:
    """What an error answer says; its reason phrase where the body says nothing readable."""
    fallback = response.reason_phrase or f"HTTP {response.status_code}"
    try:
        document = _ProblemDocument.model_validate_json(response.content)
    except ValidationError:
        return Problem(message=fallback)
    source = document.error or document
    message = source.message or document.detail or document.title or fallback
    return Problem(
        code=source.code or None, retryable=source.retryable is True, message=message[:200]
    )


class HttpAdapter:
    """One pooled, timed client to an outside system, and the rules every such call follows.

    Subclasses name the system and the port's transient error; they build requests and map
    answers with `call`, `reply`, `is_transient` and `problem`.

    Args:
        base_url: the system's root URL.
        timeout_s: the bound on a whole call, connecting included.
        transport: tests give a `MockTransport`; by default aiohttp's pool. Either way every
            call is timed and traced.
        headers: sent with every request, over the class's `default_headers`.
        auth: HTTP basic credentials, if the system takes them.
    """

    system: ClassVar[str]
    """The `system` label of `esim_outside_call_seconds`, e.g. `payment_gateway`."""
    called: ClassVar[str]
    """How errors name the system, e.g. `eSIM platform`."""
    unavailable: ClassVar[type[Exception]]
    """The port's error for "no answer, try again later", built from one message."""
    rejected: ClassVar[type[RejectedError]] = RejectedError
    """The port's error for a refusal that another try will not change (see `refused`)."""
    default_headers: ClassVar[Mapping[str, str]] = {}
    """Sent with every request (e.g. the User-Agent); `headers` given to the constructor win."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
    ) -> None:
        self.timeout_s = timeout_s
        self._client = httpx.AsyncClient(
            base_url=base_url,
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 5.0)),
            transport=TimedTransport(self.system, transport),
            headers={**self.default_headers, **(headers or {})},
            auth=auth,
            follow_redirects=False,
        )

    async def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Make one call; `kwargs` are httpx's (`json`, `data`, `params`, `headers`).

        Raises:
            unavailable: no answer within `timeout_s`, or the system could not be reached.
        """
        try:
            # httpx times each phase (connect, write, read) on its own; this bounds the whole.
            async with asyncio.timeout(self.timeout_s):
                return await self._client.request(method, path, **kwargs)
        except TimeoutError as error:
            raise self.unavailable(
                f"no answer from the {self.called} within {self.timeout_s:g} s"
            ) from error
        except httpx.RequestError as error:
            raise self.unavailable(
                f"{self.called} unreachable ({type(error).__name__}: {error})"[:300]
            ) from error

    def refused(self, response: httpx.Response, message: str) -> Exception:
        """The port's error for an error answer: `unavailable` if transient, else `rejected`.

        `message` says what the answer said (`problem(response).text`, or more); the caller
        raises the result, after mapping the statuses its port gives a meaning of their own.
        """
        status = response.status_code
        if is_transient(status):
            return self.unavailable(f"HTTP {status}: {message}")
        return self.rejected(status, message)

    def reply(self, response: httpx.Response, model: type[ReplyT], lacking: str) -> ReplyT:
        """A success answer as `model`.

        Raises:
            unavailable: the answer is not a JSON object, or not a valid `model` (`lacking`
                says what it lacks). The call may have worked: asking again tells.
        """
        return self.validate(self.document(response), response, model, lacking)

    def document(self, response: httpx.Response) -> dict[str, Any]:
        """A success answer's JSON object, for validating as more than one model.

        Raises:
            unavailable: the answer is not JSON, or not an object.
        """
        try:
            document = response.json()
        except ValueError as error:
            raise self.unavailable(
                f"HTTP {response.status_code}: an answer that is not JSON"
            ) from error
        if not isinstance(document, dict):
            raise self.unavailable(f"HTTP {response.status_code}: an answer that is not an object")
        return document

    def validate(
        self, document: dict[str, Any], response: httpx.Response, model: type[ReplyT], lacking: str
    ) -> ReplyT:
        """`document` (of `response`) as `model`; raises `unavailable` saying what it lacks."""
        try:
            return model.model_validate(document)
        except ValidationError as error:
            raise self.unavailable(f"HTTP {response.status_code}: {lacking}") from error

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()
