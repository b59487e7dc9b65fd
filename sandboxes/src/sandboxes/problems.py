"""RFC 9457 problem details: the one error shape every sandbox answers with."""

import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

logger = logging.getLogger("sandboxes.problems")

PROBLEM_MEDIA_TYPE = "application/problem+json"


class ProblemResponse(JSONResponse):
    """A JSON response sent as ``application/problem+json``."""

    media_type = PROBLEM_MEDIA_TYPE


class ProblemError(Exception):
    """A request ended in a problem that the client should see as problem details.

    When ``code`` is set the body also carries ``error: {code, retryable, message}``,
    the machine-readable part gateway clients branch on.
    """

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        code: str | None = None,
        retryable: bool = False,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.code = code
        self.retryable = retryable
        self.headers = dict(headers or {})


def problem_body(
    status: int,
    detail: str,
    *,
    code: str | None = None,
    retryable: bool = False,
    errors: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Build a problem details document.

    Args:
        status: The HTTP status code.
        detail: A human-readable explanation of this occurrence.
        code: A stable machine-readable error code, added as ``error.code``.
        retryable: Whether repeating the same request may succeed, added as ``error.retryable``.
        errors: Field-level validation errors.
    """
    body: dict[str, Any] = {
        "type": f"urn:esim-sandbox:problem:{code}" if code else "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
    }
    if code:
        body["error"] = {"code": code, "retryable": retryable, "message": detail}
    if errors is not None:
        body["errors"] = errors
    return body


def _validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    # The offending input is left out on purpose: it may be a payment token.
    return [
        {"loc": list(error.get("loc", ())), "msg": error.get("msg", ""), "type": error.get("type")}
        for error in exc.errors()
    ]


async def _on_problem(_: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, ProblemError)
    body = problem_body(exc.status, exc.detail, code=exc.code, retryable=exc.retryable)
    return ProblemResponse(body, status_code=exc.status, headers=exc.headers)


async def _on_validation(_: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, RequestValidationError)
    body = problem_body(
        422,
        "The request is not valid; see errors.",
        code="invalid_request",
        errors=_validation_errors(exc),
    )
    return ProblemResponse(body, status_code=422)


async def _on_http(_: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, StarletteHTTPException)
    body = problem_body(exc.status_code, str(exc.detail))
    return ProblemResponse(body, status_code=exc.status_code, headers=exc.headers)


async def _on_unexpected(request: Request, exc: Exception) -> ProblemResponse:
    logger.exception("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return ProblemResponse(problem_body(500, "The sandbox failed unexpectedly."), status_code=500)


def install_problem_handlers(app: FastAPI) -> None:
    """Make every error the app returns a problem details document.

    Args:
        app: The application to configure.
    """
    app.add_exception_handler(ProblemError, _on_problem)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(StarletteHTTPException, _on_http)
    app.add_exception_handler(Exception, _on_unexpected)
