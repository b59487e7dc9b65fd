"""The platform's uvicorn settings: a connection a caller keeps idle is still there to reuse."""

import socket
import threading
import time

import uvicorn
from esim_core.web.server import KEEP_ALIVE_S, server_config
from fastapi import FastAPI

REQUEST = b"GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def _answer(connection: socket.socket) -> bytes:
    received = b""
    while b'"pong"' not in received:
        chunk = connection.recv(4096)
        assert chunk, f"the server closed the connection; it had sent {received!r}"
        received += chunk
    return received


def test_a_connection_idle_past_uvicorns_own_keep_alive_is_still_open_and_answered() -> None:
    """Waits six seconds: the point is a connection left idle past uvicorn's default of 5 s,
    which is also how long httpx's pool keeps one; closed under a caller's next request, that
    request gets no answer at all (the website lost a password reset this way)."""
    assert KEEP_ALIVE_S > 60, "longer than an ingress (60 s) and our clients' pools keep one"
    app = FastAPI()

    @app.get("/ping")
    async def ping() -> str:
        return "pong"

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(server_config(app, "127.0.0.1", port, 10.0, lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            assert thread.is_alive(), "the server did not start"
            time.sleep(0.01)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
            connection.sendall(REQUEST)
            assert _answer(connection).startswith(b"HTTP/1.1 200")
            time.sleep(6)
            connection.sendall(REQUEST)
            assert _answer(connection).startswith(b"HTTP/1.1 200")
    finally:
        server.should_exit = True
        thread.join(timeout=10)
