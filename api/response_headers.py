"""ASGI middleware that edits the headers of every HTTP answer as it starts.

Why a base class: the caching and compression layers each adjust headers that routes and
other middleware have set (``Cache-Control`` by default, a weak ``ETag`` once gzipped), and
must see every answer, including the refusals raised before any route runs.
"""
from __future__ import annotations

from typing import Any

from starlette.datastructures import MutableHeaders


class ResponseHeadersMiddleware:
    """Calls :meth:`edit` on the headers of each ``http.response.start``; other scopes pass through."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def edit(self, headers: MutableHeaders) -> None:
        raise NotImplementedError

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_edited(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                self.edit(MutableHeaders(raw=message["headers"]))
            await send(message)

        await self.app(scope, receive, send_edited)


class NoSniffing(ResponseHeadersMiddleware):
    """``X-Content-Type-Options: nosniff`` on every HTTP answer: a browser takes each file as the type the
    service names (GeoJSON, GeoTIFF, QML, PNG), never as HTML or script it guessed from the bytes (a
    GeoJSON's properties hold the client's file name)."""

    def edit(self, headers: MutableHeaders) -> None:
        headers["X-Content-Type-Options"] = "nosniff"
