"""HTTP errors as RFC 9457 problem details, for every service's FastAPI app, and their OpenAPI."""

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

logger = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


_EXAMPLES: dict[int, tuple[str, str]] = {
    400: ("invalid-request", "The request cannot be used as it is."),
    401: ("unauthorized", "An access token is required."),
    403: ("forbidden", "This is not yours to do."),
    404: ("not-found", "Nothing is known by that name."),
    409: ("conflict", "This conflicts with what is already stored."),
    422: ("validation", "The request is not valid: body.email: value is not a valid email"),
    429: ("rate-limited", "Too many requests; try again in 30 s."),
    503: ("unavailable", "A part this needs is unavailable; try again shortly."),
}
_HEADERS: dict[int, dict[str, Any]] = {
    401: {
        "WWW-Authenticate": {
            "description": "the authentication scheme to use",
            "schema": {"type": "string", "example": "Bearer"},
        }
    },
    429: {
        "Retry-After": {
            "description": "seconds to wait before trying again",
            "schema": {"type": "integer", "minimum": 1, "example": 30},
        }
    },
    503: {
        "Retry-After": {
            "description": "seconds to wait before trying again",
            "schema": {"type": "integer", "minimum": 1, "example": 5},
        }
    },
}
#: The problem details schema (`_PROBLEM_SCHEMA`), as a response's content refers to it; every
#: app with `install_problem_handlers` has it among its components.
PROBLEM_SCHEMA_REF = {"$ref": "#/components/schemas/Problem"}
_PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "RFC 9457 problem details",
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string", "description": "a URI naming the kind of problem"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string", "description": "what went wrong, for a person"},
        "errors": {
            "type": "array",
            "description": "the fields that are not valid (validation problems)",
            "items": {
                "type": "object",
                "required": ["field", "message", "type"],
                "properties": {
                    "field": {"type": "string"},
                    "message": {"type": "string"},
                    "type": {"type": "string"},
                },
            },
        },
    },
}


def problem_example(status: int, kind: str | None = None, detail: str | None = None) -> Any:
    """An example problem body of a status, for the OpenAPI document."""
    default_kind, default_detail = _EXAMPLES.get(status, ("error", "Something went wrong."))
    example: dict[str, Any] = {
        "type": f"https://esim.example/problems/{kind or default_kind}",
        "title": _TITLES.get(status, "Error"),
        "status": status,
        "detail": detail or default_detail,
    }
    if status == 422:
        example["errors"] = [
            {"field": "body.email", "message": "value is not a valid email", "type": "value_error"}
        ]
    return example


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for the problem answers an operation can give, with examples."""
    return {
        status: {
            "description": _TITLES.get(status, "Error"),
            "content": {
                PROBLEM_JSON: {
                    "schema": PROBLEM_SCHEMA_REF,
                    "example": problem_example(status),
                }
            },
            **({"headers": _HEADERS[status]} if status in _HEADERS else {}),
        }
        for status in statuses
    }


def document_problems(app: FastAPI) -> None:
    """Make the app's OpenAPI say what it answers on error: problem details, not FastAPI's own.

    Every operation that validates input answers 422 as a problem; the `Problem` schema is
    added for the responses that `problem_responses` declared.
    """

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)
        components["Problem"] = _PROBLEM_SCHEMA
        validation = problem_responses(422)[422]
        malformed = problem_responses(400)[400]
        for route, path in schema.get("paths", {}).items():
            for operation in path.values():
                responses = operation.get("responses", {})
                if "422" in responses:
                    responses["422"] = validation
                if "requestBody" in operation:
                    # A body that is not JSON (or not a form) at all is a 400 from FastAPI.
                    responses.setdefault("400", malformed)
            if route == "/metrics" and "get" in path:
                # The core's Prometheus route answers in the text exposition format.
                path["get"]["responses"]["200"]["content"] = {
                    "text/plain": {"schema": {"type": "string"}}
                }
            if route == "/health/ready" and "get" in path:
                # The core's readiness route answers a problem while a dependency is down.
                not_ready = problem_responses(503)[503]
                not_ready["description"] = "a database, Kafka or Redis does not answer"
                not_ready.pop("headers", None)
                path["get"]["responses"].setdefault("503", not_ready)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


class ProblemError(Exception):
    """An error answered as problem details; `kind` becomes the problem `type` URI's last part."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        kind: str | None = None,
        title: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.kind = kind
        self.title = title or _TITLES.get(status, "Error")
        self.headers = headers
        self.extra = extra


def problem_response(
    status: int,
    detail: str,
    *,
    kind: str | None = None,
    title: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    """A `application/problem+json` response."""
    body: dict[str, Any] = {
        "type": f"https://esim.example/problems/{kind}" if kind else "about:blank",
        "title": title or _TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
        **extra,
    }
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def allowed_methods(request: Request) -> list[str]:
    """Every method some route of the app serves on the request's path."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches(request.scope)
        if match != Match.NONE:
            methods.update(getattr(route, "methods", None) or ())
    return sorted(methods)


def install_problem_handlers(app: FastAPI) -> None:
    """Answer every error, including validation and unknown routes, as problem details."""

    async def on_problem(_: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, ProblemError)
        return problem_response(
            error.status,
            error.detail,
            kind=error.kind,
            title=error.title,
            headers=error.headers,
            **error.extra,
        )

    async def on_validation(_: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, RequestValidationError)
        errors = [
            {
                "field": ".".join(str(part) for part in item.get("loc", ())),
                "message": item.get("msg", "invalid"),
                "type": item.get("type", "value_error"),
            }
            for item in error.errors()
        ]
        summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
        return problem_response(
            422, f"The request is not valid: {summary}", kind="validation", errors=errors
        )

    async def on_http(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, StarletteHTTPException)
        headers = dict(error.headers) if error.headers else None
        if error.status_code == 405:
            # Starlette names the methods of the first route on the path only; a path served
            # by several routes (GET and PATCH /users/me) allows all of theirs.
            headers = {**(headers or {}), "Allow": ", ".join(allowed_methods(request))}
        return problem_response(error.status_code, str(error.detail), headers=headers)

    async def on_unexpected(request: Request, error: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(500, "An unexpected error occurred; it has been logged.")

    document_problems(app)
    app.add_exception_handler(ProblemError, on_problem)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_unexpected)
