"""A write to a Kafka connection the broker closed is a broken connection, under uvloop too.

aiokafka (0.14) turns an `OSError` from writing a request into `KafkaConnectionError`, which
its callers handle: the group coordinator marks the coordinator dead, looks it up again and
carries on. Under uvloop, which the services run on, writing to a transport the peer has
closed raises `RuntimeError("unable to perform operation on <TCPTransport closed=True>")`
instead (aio-libs/aiokafka issue 1038, open). Nothing catches that: a consumer's coordination
task dies with it, and every `getmany` after that fails with "Unexpected error during
coordination" for as long as the process lives, so the service stops consuming while looking
alive. A broker restart under load is enough to hit it.

`install` makes aiokafka's connection treat that `RuntimeError` as the broken connection it
is, in the two places it writes: the connection is closed and `KafkaConnectionError` raised,
exactly what the library does for an `OSError` there. It wraps the methods once, at import of
`esim_core.messaging.kafka`, through which every Kafka client of the platform is built.
"""

import functools
from collections.abc import Callable
from typing import Any

from aiokafka import errors
from aiokafka.conn import AIOKafkaConnection, CloseReason

_INSTALLED = "_esim_broken_writes"


def install() -> None:
    """Wrap `AIOKafkaConnection.send` and `_send_sasl_token` (once; a second call is a no-op)."""
    for name in ("send", "_send_sasl_token"):
        method = getattr(AIOKafkaConnection, name)
        if not getattr(method, _INSTALLED, False):
            setattr(AIOKafkaConnection, name, _broken_write_is_a_connection_error(method))


def _broken_write_is_a_connection_error(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def write(self: AIOKafkaConnection, *args: Any, **kwargs: Any) -> Any:
        # Both methods write synchronously and return an awaitable: the RuntimeError, if any,
        # comes from this call, before anything was awaited.
        try:
            return method(self, *args, **kwargs)
        except RuntimeError as err:
            writer = self._writer
            if writer is not None and not writer.transport.is_closing():
                raise  # not a write to a closed transport: not this case
            self.close(reason=CloseReason.CONNECTION_BROKEN)
            raise errors.KafkaConnectionError(
                f"Connection at {self.host}:{self.port} broken: {err}"
            ) from err

    setattr(write, _INSTALLED, True)
    return write
