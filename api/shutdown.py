"""The answer to a request the server cuts off as it stops: a JSON 503 with ``Retry-After``.

uvicorn, stopping (SIGTERM: a restart, a deploy), waits ``timeout_graceful_shutdown`` (``GRACEFUL_SHUTDOWN_S`` in
``geoseg.commands.serve``) for the requests in flight, then cancels them. One that had not answered yet
(an upload still arriving, a ``/v1/segment`` waiting for its job) got uvicorn's own
``500 Internal Server Error`` in text/plain: no ``detail`` (a client reading it, as the documented
one does, failed decoding it) and a status that says "bug", where "come back" is the truth.
"""
from __future__ import annotations

import asyncio
import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.asgi_paths import route_path
from api.json_answers import send_error

#: seconds a cut-off client should wait: a restart of the server, roughly
SHUTDOWN_RETRY_AFTER_S = 10

CUT_OFF_DETAIL = ("the server is shutting down (a restart or a stop) and cut this request off before "
                  "answering it: send it again after Retry-After seconds")
#: what became of a cut-off submission, by route: it may have been queued before the cut
CUT_OFF_SUBMISSION = {
    "/v1/jobs": ("; a submission cut off as it was queued may have been queued: send an Idempotency-Key "
                 "to retry it safely"),
    "/v1/segment": ("; its job may have been queued: it then runs once the server is back, listed by "
                    "GET /v1/jobs (kind 'segment') until deleted"),
}


def cut_off_detail(scope: Scope) -> str:
    """The 503's ``detail`` for the request of ``scope``."""
    extra = CUT_OFF_SUBMISSION.get(route_path(scope), "") if scope.get("method") == "POST" else ""
    return CUT_OFF_DETAIL + extra


class CutOffAtShutdown:
    """ASGI middleware (outside all but CORS and NoSniffing): a request cancelled before its answer started
    gets a JSON 503 with ``Retry-After``; the cancellation then goes on as it came."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except asyncio.CancelledError:
            if not started:
                try:
                    await send_error(send, 503, cut_off_detail(scope),
                                     {"Retry-After": str(SHUTDOWN_RETRY_AFTER_S), "Cache-Control": "no-store",
                                      "Connection": "close"})
                except Exception:  # noqa: BLE001 -- a client already gone: the cancellation still goes on
                    pass
            raise


class CutOffLogLine(logging.Filter):
    """uvicorn's log of a request ``CutOffAtShutdown`` answered, ``Exception in ASGI application`` and the
    whole traceback of its cancellation, as one line saying what happened.

    Why: a stop with two requests in flight wrote 164 lines of tracebacks, read as a crash by whoever
    reads the log, for requests that got the intended 503."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, asyncio.CancelledError) and str(record.msg).startswith("Exception in ASGI application"):
            record.msg, record.args = "a request in flight was cut off by the server's stop: answered 503 to retry", ()
            record.exc_info, record.exc_text, record.levelno, record.levelname = None, None, logging.WARNING, "WARNING"
        return True


def quiet_cut_off_requests(logger: logging.Logger | None = None) -> None:
    """Install ``CutOffLogLine`` on uvicorn's error logger (once)."""
    logger = logger or logging.getLogger("uvicorn.error")
    if not any(isinstance(f, CutOffLogLine) for f in logger.filters):
        logger.addFilter(CutOffLogLine())

