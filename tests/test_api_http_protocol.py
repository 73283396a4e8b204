"""A request's headers have a deadline (``api.http_protocol``): uvicorn timed a connection out only
between requests, so a client that connected and sent nothing, or its headers a byte at a time, held a
connection (and a file descriptor) for ever."""
from __future__ import annotations

import socket
import threading
import time

import httpx
import pytest
import uvicorn

from api.http_protocol import HeaderDeadlineH11, header_timeout_s


async def _hello(scope, receive, send):
    assert scope["type"] == "http"
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv("GEOSEG_HEADER_TIMEOUT_S", "0.5")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    served = uvicorn.Server(uvicorn.Config(_hello, host="127.0.0.1", port=port, http=HeaderDeadlineH11,
                                           lifespan="off", log_level="warning", timeout_keep_alive=5))
    thread = threading.Thread(target=served.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not served.started and time.monotonic() < deadline:
        time.sleep(0.02)
    yield port
    served.should_exit = True
    thread.join(timeout=10)


def _closed_after(sock: socket.socket, send_slowly: bytes = b"") -> float:
    """Seconds until the server closes ``sock`` (sending ``send_slowly`` a byte each 0.1 s meanwhile)."""
    start = time.monotonic()
    sock.settimeout(0.1)
    for byte in [send_slowly[i:i + 1] for i in range(len(send_slowly))] or [b""] * 50:
        if byte:
            try:
                sock.sendall(byte)
            except OSError:
                return time.monotonic() - start
        try:
            if sock.recv(1024) == b"":
                return time.monotonic() - start
        except TimeoutError:
            continue
    return float("inf")


def test_a_client_slow_with_its_headers_is_cut_off_and_a_prompt_one_is_served(server):
    with socket.create_connection(("127.0.0.1", server)) as silent:  # connects, sends nothing
        assert _closed_after(silent) < 2
    with socket.create_connection(("127.0.0.1", server)) as slow:  # slowloris: a byte every 0.1 s
        assert _closed_after(slow, b"GET / HTTP/1.1\r\nHost: x\r\nX-A: " + b"a" * 40) < 2
    with httpx.Client(base_url=f"http://127.0.0.1:{server}") as client:  # kept alive past the deadline
        assert client.get("/").text == "ok"
        time.sleep(0.8)
        assert client.get("/").text == "ok"


def test_the_deadline_is_a_setting(monkeypatch):
    monkeypatch.delenv("GEOSEG_HEADER_TIMEOUT_S", raising=False)
    assert header_timeout_s() == 30.0
    monkeypatch.setenv("GEOSEG_HEADER_TIMEOUT_S", "0")
    assert header_timeout_s() == 0.0
    for bad in ("nan", "-1", "abc"):  # "abc" said "could not convert string to float", naming no variable
        monkeypatch.setenv("GEOSEG_HEADER_TIMEOUT_S", bad)
        with pytest.raises(ValueError, match="GEOSEG_HEADER_TIMEOUT_S"):
            header_timeout_s()
