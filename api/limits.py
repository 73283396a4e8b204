"""ASGI middleware that caps request bodies, before and while they stream in.

FastAPI's form parsing would otherwise read an arbitrarily large upload to a
temporary file before any handler can refuse it.
"""
from __future__ import annotations

from typing import Any

from api.json_answers import send_error
from api.validate import too_large_detail

Scope = dict[str, Any]


class _TooLarge(Exception):
    pass


class BodySizeLimit:
    """Answer 413 when Content-Length, or the bytes actually received, exceed ``max_bytes``."""

    def __init__(self, app: Any, max_bytes: int, upload_limit: int | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        # What the refusal quotes: the upload limit the operator set (GEOSEG_MAX_UPLOAD_MB), not
        # ``max_bytes``, which adds room for the multipart envelope.
        self.upload_limit = max_bytes if upload_limit is None else upload_limit

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
        exceeded = False
        replaced = False

        async def limited_receive() -> dict[str, Any]:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    exceeded = True
                    raise _TooLarge
            return message

        async def guarded_send(message: dict[str, Any]) -> None:
            # The body parser may turn our exception into its own 400: answer 413 instead.
            nonlocal replaced
            if exceeded:
                if message["type"] == "http.response.start" and not replaced:
                    replaced = True
                    await self._refuse(send, 413, self._message())
                return
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except _TooLarge:
            if not replaced:
                await self._refuse(send, 413, self._message())

    def _message(self) -> str:
        # the refusal of a file part cut while it is received (api.upload_parts), to the byte
        return too_large_detail(self.upload_limit)

    @staticmethod
    async def _refuse(send: Any, status: int, detail: str) -> None:
        await send_error(send, status, detail, {"Connection": "close"})
