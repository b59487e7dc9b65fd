"""The CloudEvents 1.0 structured-mode JSON envelope that carries every event on Kafka."""

import json
from datetime import UTC, datetime
from typing import Any, Generic, Literal, TypeVar
from uuid import uuid4

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from esim_schemas.events import EVENTS_BY_TYPE, EventData
from esim_schemas.types import UtcDatetime

DataT = TypeVar("DataT", bound=EventData)


class Envelope(BaseModel):
    """The CloudEvents attributes; `data` stays raw until its type is known."""

    model_config = ConfigDict(extra="allow", frozen=True)

    specversion: Literal["1.0"]
    id: str = Field(min_length=1, max_length=256)
    source: str = Field(min_length=1, max_length=512)
    type: str = Field(min_length=1, max_length=256)
    subject: str | None = None
    time: UtcDatetime
    datacontenttype: Literal["application/json"] = "application/json"
    renewalid: str | None = None
    traceparent: str | None = None
    data: dict[str, Any]


class CloudEvent(BaseModel, Generic[DataT]):
    """A CloudEvent whose `data` is one of the contract's event models."""

    model_config = ConfigDict(extra="allow", frozen=True)

    specversion: Literal["1.0"] = "1.0"
    id: str = Field(default_factory=lambda: str(uuid4()), min_length=1, max_length=256)
    source: str = Field(min_length=1, max_length=512)
    type: str
    subject: str | None = None
    time: UtcDatetime = Field(default_factory=lambda: datetime.now(UTC))
    datacontenttype: Literal["application/json"] = "application/json"
    renewalid: str | None = None
    traceparent: str | None = None
    data: DataT

    def to_json(self) -> bytes:
        """Serialize to the UTF-8 JSON that goes on the wire, leaving out absent attributes."""
        return self.model_dump_json(exclude_none=True).encode()


class EventDecodeError(ValueError):
    """A message is not a valid contract event; the text says what is wrong with it."""

    def __init__(self, message: str, error_type: str) -> None:
        super().__init__(message)
        self.error_type = error_type


def new_event(
    data: DataT,
    *,
    source: str,
    event_id: str | None = None,
    time: datetime | None = None,
    traceparent: str | None = None,
) -> CloudEvent[DataT]:
    """Wrap event data in an envelope with its type, the ICCID as subject and the renewal id
    (and the W3C trace context it was produced in, where there is one)."""
    fields: dict[str, Any] = {
        "source": source,
        "type": data.event_type,
        "subject": data.subject(),
        "renewalid": data.renewal(),
        "data": data,
    }
    if event_id is not None:
        fields["id"] = event_id
    if time is not None:
        fields["time"] = time
    if traceparent is not None:
        fields["traceparent"] = traceparent
    model: Any = CloudEvent[type(data)]  # type: ignore[misc]
    event: CloudEvent[DataT] = model(**fields)
    return event


def decode_event(raw: bytes, expected: tuple[type[EventData], ...] = ()) -> CloudEvent[EventData]:
    """Parse and validate a wire message against the envelope and its event type.

    Args:
        raw: the Kafka message value.
        expected: the event models this consumer accepts; empty accepts any contract event.

    Raises:
        EventDecodeError: the value is not UTF-8 JSON, not a CloudEvent, of an unexpected type,
            or its data does not fit the type's schema.
    """
    try:
        document = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise EventDecodeError(f"not UTF-8 JSON: {error}", "undecodable") from error
    if not isinstance(document, dict):
        raise EventDecodeError("not a JSON object", "undecodable")
    try:
        envelope = Envelope.model_validate(document)
    except ValidationError as error:
        raise EventDecodeError(
            f"not a CloudEvents 1.0 envelope: {_summary(error)}", "invalid_envelope"
        ) from error
    model = EVENTS_BY_TYPE.get(envelope.type)
    if model is None or (expected and model not in expected):
        accepted = ", ".join(m.event_type for m in expected) or "a contract event type"
        raise EventDecodeError(
            f"unexpected event type {envelope.type!r}; expected {accepted}", "unexpected_type"
        )
    try:
        data = model.model_validate(envelope.data)
    except ValidationError as error:
        raise EventDecodeError(
            f"{envelope.type} data does not fit the schema: {_summary(error)}", "schema_invalid"
        ) from error
    attributes = envelope.model_dump(exclude={"data"})
    return CloudEvent[EventData].model_construct(**attributes, data=data)


def _summary(error: ValidationError) -> str:
    parts = []
    for item in error.errors(include_input=False, include_url=False)[:5]:
        location = ".".join(str(part) for part in item["loc"]) or "(root)"
        parts.append(f"{location}: {item['msg']}")
    return "; ".join(parts)
