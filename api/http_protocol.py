"""uvicorn's HTTP/1.1 protocol with a deadline for a request's headers.

Why: uvicorn times a connection out only between requests (``timeout_keep_alive``, armed when a
response completes and cancelled by any byte that arrives). A client that connects and sends nothing,
or sends its headers a byte at a time, held a connection, and its file descriptor, for ever: a few
hundred such (slowloris) exhausted the server's 1024 and every upload, status poll and /healthz
failed. Here each request's headers must be complete within ``GEOSEG_HEADER_TIMEOUT_S`` seconds of
the connection being made, or of the previous response: the connection is closed otherwise. A body
is not timed here (``GEOSEG_UPLOAD_IDLE_S`` answers an upload that stops arriving).
"""
from __future__ import annotations

import asyncio
import os

from uvicorn.protocols.http.h11_impl import H11Protocol

#: seconds a client has to send a request's headers (a proxy's is shorter: nginx's client_header_timeout, 60 s)
DEFAULT_HEADER_TIMEOUT_S = 30.0


def header_timeout_s() -> float:
    """``GEOSEG_HEADER_TIMEOUT_S``, else ``DEFAULT_HEADER_TIMEOUT_S``; 0 turns the deadline off."""
    raw = os.environ.get("GEOSEG_HEADER_TIMEOUT_S", "").strip()
    try:
        value = float(raw) if raw else DEFAULT_HEADER_TIMEOUT_S
    except ValueError:  # "could not convert string to float: 'abc'" named no variable
        value = float("nan")
    if not value >= 0:  # NaN too
        raise ValueError(f"GEOSEG_HEADER_TIMEOUT_S={raw!r} must be a number of seconds >= 0 (0: no deadline)")
    return value


class HeaderDeadlineH11(H11Protocol):
    """``H11Protocol`` closing a connection whose next request's headers are not in within the deadline."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._deadline: asyncio.TimerHandle | None = None
        self._arm()

    def _arm(self) -> None:
        self._disarm()
        timeout = header_timeout_s()
        if timeout > 0:
            self._deadline = self.loop.call_later(timeout, self._headers_too_slow)

    def _disarm(self) -> None:
        if getattr(self, "_deadline", None) is not None:
            self._deadline.cancel()
            self._deadline = None

    def _headers_too_slow(self) -> None:
        self._deadline = None
        if not self.transport.is_closing() and (self.cycle is None or self.cycle.response_complete):
            self.transport.close()  # no request under way: nothing to answer

    def handle_events(self) -> None:
        super().handle_events()
        if self.cycle is not None and not self.cycle.response_complete:
            self._disarm()  # a request's headers are in: the app has it

    def on_response_complete(self) -> None:
        if not self.transport.is_closing():
            self._arm()  # the next request's headers, on a kept-alive connection: before a pipelined one's
        super().on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)
