"""Idempotency-Key handling shared by the HTTP sandboxes."""

import hashlib
import json
from typing import Annotated

from fastapi import Depends, Header, Response
from pydantic import BaseModel

from sandboxes.problems import ProblemError

IDEMPOTENCY_KEY_HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
MAX_KEY_LENGTH = 255


def fingerprint(body: BaseModel) -> str:
    """Return a digest of a request body that ignores key order and whitespace.

    Only the digest is kept, so a stored key never holds a payment token.

    Args:
        body: The validated request body.
    """
    canonical = json.dumps(body.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _require_key(
    key: Annotated[str | None, Header(alias=IDEMPOTENCY_KEY_HEADER)] = None,
) -> str:
    if key is None or not key.strip():
        raise ProblemError(
            400,
            f"The {IDEMPOTENCY_KEY_HEADER} header is required.",
            code="missing_idempotency_key",
        )
    if len(key) > MAX_KEY_LENGTH:
        raise ProblemError(
            400,
            f"The {IDEMPOTENCY_KEY_HEADER} header is longer than {MAX_KEY_LENGTH} characters.",
            code="invalid_idempotency_key",
        )
    return key


IdempotencyKey = Annotated[str, Depends(_require_key)]


def conflict(key: str) -> ProblemError:
    """Return the 409 problem for a key reused with a different body.

    Args:
        key: The reused idempotency key.
    """
    return ProblemError(
        409,
        f"{IDEMPOTENCY_KEY_HEADER} {key!r} was already used with a different request body.",
        code="idempotency_conflict",
    )


def mark_replayed(response: Response, replayed: bool) -> None:
    """Answer a replayed key 200 with `Idempotent-Replayed: true`; a first call keeps its status.

    Args:
        response: The route's response, whose status and headers FastAPI sends.
        replayed: Whether the key's first answer is being given again.
    """
    if replayed:
        response.status_code = 200
        response.headers[REPLAYED_HEADER] = "true"
