"""ASGI middleware that caps request bodies, before and while they stream in, and gives up on
a body that stops arriving.

FastAPI's form parsing would otherwise read an arbitrarily large upload to a
temporary file before any handler can refuse it, and wait for ever on a client that sent half
of one and stopped (each such request held its part file open).
"""
from __future__ import annotations

import asyncio
from typing import Any

from api.json_answers import send_error
from api.validate import too_large_detail

Scope = dict[str, Any]


class _Refused(Exception):
    """The body is refused while it streams in: ``status`` and ``detail`` are the answer."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


async def _within(seconds: float, receive: Any) -> dict[str, Any]:
    """``await receive()``, or TimeoutError after ``seconds``. In this task (``asyncio.timeout``,
    Python 3.11): through ``asyncio.wait_for``'s task, the cancellation of a server stopping no longer
    reached ``api.shutdown``'s 503 (the client got no answer). Python 3.10 has only ``wait_for``, so
    there an upload cut off by a stopping server may get no answer (untested: no 3.10 here)."""
    if hasattr(asyncio, "timeout"):
        async with asyncio.timeout(seconds):
            return await receive()
    try:
        return await asyncio.wait_for(receive(), seconds)
    except asyncio.TimeoutError as exc:  # not TimeoutError itself before 3.11
        raise TimeoutError from exc


class BodySizeLimit:
    """Answer 413 when Content-Length, or the bytes actually received, exceed ``max_bytes``; 408
    when no byte of a body still coming arrives for ``idle_s`` seconds (None: wait for ever)."""

    def __init__(self, app: Any, max_bytes: int, upload_limit: int | None = None,
                 idle_s: float | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        # What the refusal quotes: the upload limit the operator set (GEOSEG_MAX_UPLOAD_MB), not
        # ``max_bytes``, which adds room for the multipart envelope.
        self.upload_limit = max_bytes if upload_limit is None else upload_limit
        self.idle_s = idle_s

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            try:
                too_big = int(declared) > self.max_bytes
            except ValueError:
                await self._refuse(send, 400, "invalid Content-Length header")
                return
            if too_big:
                await self._refuse(send, 413, self._message())
                return
        received = 0
        refused: _Refused | None = None
        replaced = False
        body_done = False

        async def limited_receive() -> dict[str, Any]:
            nonlocal received, refused, body_done
            if body_done or self.idle_s is None:  # after the body: a wait for a disconnect, not timed
                message = await receive()
            else:
                try:
                    message = await _within(self.idle_s, receive)
                except TimeoutError:
                    refused = _Refused(408, f"the upload stalled: no byte of it arrived for {self.idle_s:g} s "
                                            f"(GEOSEG_UPLOAD_IDLE_S); send it again")
                    raise refused from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                body_done = not message.get("more_body", False)
                if received > self.max_bytes:
                    refused = _Refused(413, self._message())
                    raise refused
            return message

        async def guarded_send(message: dict[str, Any]) -> None:
            # The body parser may turn our exception into its own 400: answer ours instead.
            nonlocal replaced
            if refused is not None:
                if message["type"] == "http.response.start" and not replaced:
                    replaced = True
                    await self._refuse(send, refused.status, refused.detail)
                return
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except _Refused as exc:
            if not replaced:
                await self._refuse(send, exc.status, exc.detail)

    def _message(self) -> str:
        # the refusal of a file part cut while it is received (api.upload_parts), to the byte
        return too_large_detail(self.upload_limit)

    @staticmethod
    async def _refuse(send: Any, status: int, detail: str) -> None:
        await send_error(send, status, detail, {"Connection": "close"})
