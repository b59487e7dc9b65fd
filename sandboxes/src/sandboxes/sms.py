"""SMS gateway sandbox: takes text messages the way HTTP SMS providers do, and lists them."""

import logging
import re
import uuid
from dataclasses import dataclass, field
from typing import Annotated, ClassVar, Literal

from fastapi import APIRouter, FastAPI, Form, Header, Query, Response
from pydantic import BaseModel

from sandboxes.problems import ProblemError, install_problem_handlers
from sandboxes.serving import EnvSettings, app_state, health_router, serve
from sandboxes.timestamps import Clock, Timestamp, utc_now

logger = logging.getLogger("sandboxes.sms")

E164 = re.compile(r"\+[1-9][0-9]{6,14}")


@dataclass(frozen=True)
class SmsSandboxSettings(EnvSettings):
    """Where the SMS sandbox listens."""

    env_prefix: ClassVar[str] = "SMS_SANDBOX_"

    host: str = "127.0.0.1"
    port: int = 8012


class Message(BaseModel):
    """A message the provider accepted, as its API answers it."""

    sid: str
    status: Literal["queued"] = "queued"
    to: str
    sender: str
    body: str
    date_created: Timestamp


class Received(BaseModel):
    """A received message, as `GET /sandbox/messages` lists it."""

    to: str
    text: str
    received_at: Timestamp
    sender: str
    sid: str


@dataclass
class Inbox:
    """What the sandbox received, and the answer given per idempotency key."""

    clock: Clock
    messages: list[Message] = field(default_factory=list)
    by_key: dict[str, Message] = field(default_factory=dict)

    def take(self, to: str, sender: str, body: str, key: str | None) -> tuple[Message, bool]:
        """Record a message once per key; returns it and whether it was new."""
        if key is not None and key in self.by_key:
            return self.by_key[key], False
        message = Message(
            sid=f"SM{uuid.uuid4().hex}", to=to, sender=sender, body=body, date_created=self.clock()
        )
        self.messages.append(message)
        if key is not None:
            self.by_key[key] = message
        return message, True


InboxDep = Annotated[Inbox, app_state("inbox")]
router = APIRouter()


@router.post("/v1/messages", status_code=201, tags=["messages"])
async def send_message(
    inbox: InboxDep,
    response: Response,
    to: Annotated[str, Form(alias="To", description="E.164 number")],
    sender: Annotated[str, Form(alias="From", min_length=1, max_length=16)],
    body: Annotated[str, Form(alias="Body", min_length=1, max_length=1600)],
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> Message:
    """Accept one message for delivery; the same Idempotency-Key answers the first message."""
    if E164.fullmatch(to) is None:
        raise ProblemError(400, f"'To' is not an E.164 number: {to[:32]!r}", code="invalid_to")
    message, new = inbox.take(to, sender, body, idempotency_key)
    if not new:
        response.status_code = 200
    # The text may be a one-time code: the log says only that a message came.
    logger.info("message %s for %s accepted (%s)", message.sid, to, "new" if new else "replayed")
    return message


@router.get("/sandbox/messages", tags=["sandbox"])
async def messages(
    inbox: InboxDep, to: Annotated[str | None, Query(description="E.164 number")] = None
) -> list[Received]:
    """What the sandbox received, oldest first, optionally for one number."""
    return [
        Received(to=m.to, text=m.body, received_at=m.date_created, sender=m.sender, sid=m.sid)
        for m in inbox.messages
        if to is None or m.to == to
    ]


def create_app(*, clock: Clock = utc_now) -> FastAPI:
    """Build the SMS gateway sandbox app (it keeps what it receives in memory).

    Args:
        clock: The source of `received_at` times.
    """
    app = FastAPI(
        title="SMS gateway sandbox",
        description="POST /v1/messages (form To, From, Body) as an HTTP SMS provider takes them; "
        "GET /sandbox/messages?to= lists what it received.",
    )
    app.state.inbox = Inbox(clock)
    install_problem_handlers(app)
    app.include_router(router)
    app.include_router(health_router)
    return app


def main() -> None:
    """Serve the SMS sandbox on SMS_SANDBOX_HOST:SMS_SANDBOX_PORT."""
    settings = SmsSandboxSettings.from_env()
    serve(create_app(), settings.host, settings.port)


if __name__ == "__main__":
    main()
