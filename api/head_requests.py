"""HEAD answered with exactly the headers its GET would have (RFC 9110 9.3.2).

Why not let each route answer HEAD: what the headers say is decided by the layers around the
route from the body it sends. The gzip layer (``api.compression``) compresses a body of at
least 1 KiB for a client that accepts gzip, and then adds ``Content-Encoding``, ``Vary``, the
compressed ``Content-Length`` (or none, for a streamed file) and a weak ``ETag``. A result
file's HEAD sends no body at all, so it went out with the headers of the file as stored: a
browser or a cache checking a GeoJSON with HEAD was told a size and a strong ETag that its GET
contradicted. So a HEAD runs as the GET, the same layers decide its headers, and its body is
dropped: the whole of a one-piece body (JSON), only the first piece of a streamed file (the
headers are final once it went out; the rest is neither read nor compressed).
"""
from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class _HeadersSent(Exception):
    """Stops a streamed GET behind a HEAD once its headers went out (never leaves :class:`HeadAsGet`)."""


class HeadAsGet:
    """Runs a HEAD as a GET and sends its start (status, headers) with an empty body."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return
        ended = False

        async def send_headers_only(message: Message) -> None:
            nonlocal ended
            if message["type"] == "http.response.start":
                await send(message)
            elif message["type"] in ("http.response.body", "http.response.pathsend") and not ended:
                ended = True
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                if message.get("more_body", False):
                    raise _HeadersSent  # a streamed body: the rest would be read for nothing

        try:
            await self.app({**scope, "method": "GET"}, receive, send_headers_only)
        except _HeadersSent:
            pass
