"""A Kafka connection whose broker closed it fails as broken under uvloop (aiokafka issue 1038)."""

import asyncio

import pytest
import uvloop
from aiokafka import errors
from aiokafka.conn import AIOKafkaConnection
from aiokafka.protocol.metadata import MetadataRequest
from esim_core.messaging import broken_writes
from esim_core.messaging.kafka import client_options  # noqa: F401 (importing it installs)


async def _connection_the_broker_closed() -> AIOKafkaConnection:
    """An aiokafka connection over a uvloop TCP transport that the peer has closed."""

    async def close_at_once(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(close_at_once, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await reader.read()  # the broker's side closed: end of stream
    writer.transport.close()
    await asyncio.sleep(0.05)  # uvloop finishes closing the handle
    server.close()
    await server.wait_closed()
    connection = AIOKafkaConnection("127.0.0.1", port)
    # As connect() leaves them: the streams, and the task reading answers (over: end of stream).
    connection._reader, connection._writer = reader, writer
    read_task = asyncio.get_running_loop().create_future()
    read_task.set_result(None)
    connection._read_task = read_task
    return connection


def test_uvloop_raises_runtime_error_on_a_write_to_a_transport_the_peer_closed() -> None:
    """The premise: uvloop raises RuntimeError here, which aiokafka does not catch."""

    async def scenario() -> None:
        connection = await _connection_the_broker_closed()
        with pytest.raises(RuntimeError, match="unable to perform operation"):
            connection._writer.write(b"\0\0\0\0")

    uvloop.run(scenario())


def test_a_request_on_a_connection_the_broker_closed_is_a_kafka_connection_error() -> None:
    async def scenario() -> None:
        connection = await _connection_the_broker_closed()
        with pytest.raises(errors.KafkaConnectionError, match="broken"):
            connection.send(MetadataRequest([]))
        assert not connection.connected()  # closed, so the client connects anew

    uvloop.run(scenario())


def test_installing_twice_wraps_once() -> None:
    send = AIOKafkaConnection.send
    broken_writes.install()
    assert AIOKafkaConnection.send is send
