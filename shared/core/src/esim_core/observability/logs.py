"""Structured logs: one JSON object a line, the same schema for every service and library.

Every record, from the services' own loggers and from uvicorn, aiokafka or SQLAlchemy alike,
is written (`JsonLines`) as: `time` (RFC 3339, UTC), `level`, `service`, `logger`,
`message`, and, where they are bound (`bind_ids`, `structlog.contextvars`), `renewal_id`,
`iccid`, `event_id`, `event_type`, and `trace_id`, `span_id` of the span current where the line
is written (esim_core.observability.tracing); an exception adds `exception`.
Values under names that hold secrets (password, token, code, authorization, ...) are replaced
by `***` before anything is written.

Lines go to stdout (what `make run`'s supervisor keeps in `var/log/<process>.log`, and what a
container runtime collects), and also to `LOG_FILE` when it is set. `LOG_FORMAT=console` makes
stdout readable for a person (the file stays JSON); `LOG_LEVEL` sets the level (INFO).
"""

import json
import logging
import os
import sys
import time
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from functools import lru_cache
from typing import IO, Any

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from esim_core.observability.tracing import log_ids

#: The ids a log line carries when they are known where it is written.
IDS = ("renewal_id", "iccid", "event_id", "event_type", "trace_id", "span_id")
#: Keys whose values are never written (matched case-insensitively, also as a suffix: `jwt_secret`).
SECRET_KEYS = ("password", "token", "secret", "authorization", "code", "cookie", "api_key")
_REDACTED = "***"
FASTSTREAM_LOGGERS = ("faststream", "faststream.access.kafka")
#: Libraries that log routine work at INFO; kept at WARNING.
NOISY_LOGGERS = ("httpx", "httpcore", "faststream.access.kafka", "alembic.runtime.plugins")
_HANDLER_MARK = "esim_core.observability.logs"


def bind_ids(**ids: str | None) -> None:
    """Bind ids to every line logged from this task on (contextvars: one per asyncio task)."""
    structlog.contextvars.bind_contextvars(
        **{key: value for key, value in ids.items() if value is not None}
    )


@contextmanager
def ids_bound(**ids: str | None) -> Iterator[None]:
    """Bind ids to the lines logged inside the block, then restore what was bound before."""
    with structlog.contextvars.bound_contextvars(
        **{key: value for key, value in ids.items() if value is not None}
    ):
        yield


def clear_ids() -> None:
    """Forget the ids bound in this context."""
    structlog.contextvars.clear_contextvars()


@lru_cache(maxsize=4096)
def _is_secret(key: str) -> bool:
    # Cached: every key of every line is asked, and the keys are a small set of names.
    lowered = key.lower()
    return any(lowered == name or lowered.endswith(f"_{name}") for name in SECRET_KEYS)


def redact(value: Any) -> Any:
    """`value` with the values under secret-looking keys replaced, at any depth."""
    if type(value) is str:  # most values, asked first: a Mapping check costs an ABC lookup
        return value
    if isinstance(value, Mapping):
        return {
            key: _REDACTED if _is_secret(str(key)) else redact(item) for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact(item) for item in value]
    return value


def _trace_ids(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    # The span current where the line is logged (a request, an event, a round): its ids.
    if "trace_id" not in event:
        event.update(log_ids())
    return event


def _redact_secrets(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    return {key: _REDACTED if _is_secret(key) else redact(item) for key, item in event.items()}


def _schema(service: str) -> Processor:
    def shape(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
        record = event.pop("_record", None)
        event.pop("_from_structlog", None)
        shaped: MutableMapping[str, Any] = {
            "time": event.pop("timestamp", None),
            "level": str(event.pop("level", "info")).lower(),
            "service": service,
            "logger": event.pop("logger", None) or (record.name if record is not None else None),
            "message": str(event.pop("event", "")),
        }
        for key in IDS:
            if key in event:
                shaped[key] = event.pop(key)
        for key in ("exception", "stack"):
            if key in event:
                shaped[key] = event.pop(key)
        shaped.update(event)  # anything else bound or passed as a keyword
        return dict(shaped)

    return shape


class JsonLines(logging.Formatter):
    """The schema's JSON line for a standard library record, rendered straight from the record.

    What structlog's `ProcessorFormatter` with the shared chain writes for such a record, without
    its per-record work: no copy of the record, no chain of processors, no event dict reshaped
    twice. The services and the libraries log through the standard library, every line of a
    renewal passes here, and that work was a sixth of accounts' CPU. A record structlog made
    (`structlog.get_logger`) goes to `structured`, the full formatter, as before.
    """

    def __init__(self, service: str, structured: logging.Formatter) -> None:
        super().__init__()
        self._service = service
        self._structured = structured
        # The last second formatted and its text, one tuple: handlers on other threads (stdout,
        # the file) share this formatter, and each reads or replaces the pair whole.
        self._second: tuple[int, str] = (-1, "")

    def _time(self, created: float) -> str:
        # RFC 3339 in UTC to the microsecond; the part up to the second is formatted once a second.
        second = int(created)
        known, prefix = self._second
        if second != known:
            prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = (second, prefix)
        return f"{prefix}.{int((created - second) * 1e6):06d}Z"

    def format(self, record: logging.LogRecord) -> str:
        if hasattr(record, "_logger"):  # structlog's wrap_for_formatter marks its records
            return self._structured.format(record)
        line: dict[str, Any] = {
            "time": self._time(record.created),
            "level": record.levelname.lower(),
            "service": self._service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        bound = structlog.contextvars.get_contextvars()
        if "trace_id" not in bound:
            bound.update(log_ids())
        for key in IDS:
            if key in bound:
                line[key] = redact(bound.pop(key))
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack_info"] = record.stack_info
        for key, value in bound.items():  # anything else bound
            line[key] = _REDACTED if _is_secret(key) else redact(value)
        return json.dumps(line, default=str)


def configure_logging(
    service: str,
    *,
    level: str | None = None,
    stream: IO[str] | None = None,
    log_file: str | None = None,
    console: bool | None = None,
) -> None:
    """Send every log record of this process through the one JSON schema.

    Args:
        service: the process's name, on every line.
        level: the root level; `LOG_LEVEL` or INFO by default.
        stream: where lines go; stdout by default.
        log_file: a file to append JSON lines to as well; `LOG_FILE` by default.
        console: human-readable lines on `stream` (`LOG_FORMAT=console`); files stay JSON.
    """
    level = (level or os.environ.get("LOG_LEVEL") or "INFO").upper()
    log_file = log_file if log_file is not None else os.environ.get("LOG_FILE") or None
    if console is None:
        console = os.environ.get("LOG_FORMAT", "json").lower() == "console"
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        _trace_ids,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        _redact_secrets,
    ]
    json_formatter = JsonLines(
        service,
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                _schema(service),
                structlog.processors.JSONRenderer(default=str),
            ],
        ),
    )
    handlers: list[logging.Handler] = []
    out = logging.StreamHandler(stream or sys.stdout)
    if console:
        out.setFormatter(
            structlog.stdlib.ProcessorFormatter(
                foreign_pre_chain=shared,
                processors=[
                    structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.dev.ConsoleRenderer(colors=False),
                ],
            )
        )
    else:
        out.setFormatter(json_formatter)
    handlers.append(out)
    if log_file:
        os.makedirs(os.path.dirname(os.path.abspath(log_file)), exist_ok=True)
        to_file = logging.FileHandler(log_file, encoding="utf-8")
        to_file.setFormatter(json_formatter)
        handlers.append(to_file)
    # What the schema never writes, the standard library need not gather for every record: the
    # caller's file and line (a walk up the stack), the thread's and the process's names. The
    # switches are the ones the logging HOWTO's "Optimization" section names.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(handler)
        handler.close()
    for handler in handlers:
        setattr(handler, _HANDLER_MARK, True)
        root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)  # warnings become records too, not plain lines on stderr
    # Libraries' chatter at INFO: httpx logs every request ("HTTP Request: POST ..."), several
    # lines a renewal, FastStream every batch it hands over, and Alembic each of its plugins at
    # every start (seven lines before the service's first); the services log the outcomes that
    # matter themselves. Their warnings and errors still come through.
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
    # uvicorn's own loggers would otherwise keep their handlers and plain format.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    # FastStream's loggers never propagate, and add a coloured stdout handler unless they find
    # one on stdout already: give them ours first.
    for name in FASTSTREAM_LOGGERS:
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        for handler in handlers:
            logger.addHandler(handler)
        logger.propagate = False
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
