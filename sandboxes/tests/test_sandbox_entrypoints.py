"""The sandboxes start with ``python -m`` on their configured port and stop cleanly on signals.

Uvicorn re-raises SIGTERM once it has shut down gracefully, so the HTTP sandboxes end
"killed by SIGTERM", the exit status process managers expect; the log shows it was orderly.
"""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sandboxes.threaded import free_port

STARTUP_TIMEOUT = 10.0
HEALTH = b"GET /health/live HTTP/1.0\r\n\r\n"
HTTP_FAREWELL = "Application shutdown complete"


def first_reply(port: int, probe: bytes) -> bytes:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
                if probe:
                    conn.sendall(probe)
                return conn.recv(1024)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@pytest.mark.parametrize(
    ("module", "port_variable", "probe", "answer", "farewell"),
    [
        ("sandboxes.payment", "PAYMENT_SANDBOX_PORT", HEALTH, b"200", HTTP_FAREWELL),
        ("sandboxes.esim", "ESIM_SANDBOX_PORT", HEALTH, b"200", HTTP_FAREWELL),
        ("sandboxes.sms", "SMS_SANDBOX_PORT", HEALTH, b"200", HTTP_FAREWELL),
        ("sandboxes.smtp", "SMTP_SINK_PORT", b"", b"220", "SMTP sink stopped"),
    ],
)
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_serves_then_stops_on_signal(
    tmp_path: Path,
    module: str,
    port_variable: str,
    probe: bytes,
    answer: bytes,
    farewell: str,
    signum: signal.Signals,
) -> None:
    port = free_port()
    env = os.environ | {
        port_variable: str(port),
        "ESIM_SANDBOX_CARDS_CSV": str(tmp_path / "cards.csv"),
        "SMTP_SINK_DIR": str(tmp_path / "mail"),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", module],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        reply = first_reply(port, probe)
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=STARTUP_TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    assert answer in reply.split(b"\r\n")[0]
    assert process.returncode in (0, -signum), stderr.decode()
    assert farewell in stderr.decode()
