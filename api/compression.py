"""gzip for what browsers fetch whole: JSON answers, the GeoJSON, the GeoPackage, report.json.

A building layer's GeoJSON shrinks about 6x (72 KB -> 12 KB for a 768 x 768 px scene, and
the GeoJSON of a large scene runs to tens of MB), which a web map fetching it over a network
feels. Left as they are: partial content (206; GDAL and other range readers address bytes of
the file itself), the COG (its tiles are deflate-compressed already), and any client that does
not send ``Accept-Encoding: gzip`` (GDAL's /vsicurl/, curl without ``--compressed``).
The decision is made from the body a route sends, so a HEAD reaches this layer as its GET
(``api.head_requests``): a result file's HEAD has no body and got the uncompressed headers.
"""
from __future__ import annotations

from fastapi import FastAPI
from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware.gzip import (
    DEFAULT_EXCLUDED_CONTENT_TYPES,
    GZipMiddleware,
    GZipResponder,
    IdentityResponder,
)
from starlette.responses import FileResponse
from starlette.types import Message, Receive, Scope, Send

from api.response_headers import ResponseHeadersMiddleware

#: compressed by their format: gzip would spend CPU for nothing
ALREADY_COMPRESSED = (*DEFAULT_EXCLUDED_CONTENT_TYPES, "image/tiff")
MINIMUM_SIZE = 1024
LEVEL = 6  # zlib's default: level 9 costs about twice the CPU for 1-2 % less on GeoJSON


def may_compress(media_type: str) -> bool:
    """Whether the gzip layer compresses a body of ``media_type`` for a client that accepts gzip
    (when the body is large enough): the answer then varies with ``Accept-Encoding``."""
    kind = media_type.partition(";")[0].strip().lower()
    return not {kind, kind.partition("/")[0] + "/*"} & set(ALREADY_COMPRESSED)


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an ``Accept-Encoding`` value lets the answer be gzipped: ``gzip`` (or ``x-gzip``)
    listed with a q-value above 0 (RFC 9110 12.5.3). Starlette looked for the letters ``gzip``
    anywhere, so ``gzip;q=0`` (a client refusing gzip) got gzip."""
    for member in accept_encoding.split(","):
        coding, *params = (part.strip() for part in member.split(";"))
        if coding.lower() not in ("gzip", "x-gzip"):
            continue
        q = next((p.split("=", 1)[1].strip() for p in params if p.lower().startswith("q=")), "1")
        try:
            return float(q) > 0
        except ValueError:
            return False  # not a q-value: the member is not an acceptance
    return False


class NegotiatedGZip(GZipMiddleware):
    """Starlette's gzip, applied only when :func:`accepts_gzip` says the client takes it. A route
    may name ``Accept-Encoding`` in its ``Vary`` already (a result file's, so that its 304 has it
    too, ``api.caching``): Starlette's own is then not added a second time."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if accepts_gzip(Headers(scope=scope).get("accept-encoding", "")):
            responder = GZipResponder(self.app, self.minimum_size, compresslevel=self.compresslevel,
                                      thread_minimum_size=self.thread_minimum_size,
                                      exclude_content_types=self.exclude_content_types)
        else:
            responder = IdentityResponder(self.app, self.minimum_size,
                                          exclude_content_types=self.exclude_content_types)

        async def send_vary_once(message: Message) -> None:
            if message["type"] == "http.response.start":
                _name_each_vary_once(MutableHeaders(raw=message["headers"]))
            await send(message)

        await responder(scope, receive, send_vary_once)


def _name_each_vary_once(headers: MutableHeaders) -> None:
    """``Vary`` with each field name once (compared case-insensitively, the first spelling kept)."""
    names: dict[str, str] = {}
    for value in headers.getlist("vary"):
        for name in (n.strip() for n in value.split(",")):
            if name:
                names.setdefault(name.lower(), name)
    if names:
        headers["vary"] = ", ".join(names.values())


class WeakEtagWhenEncoded(ResponseHeadersMiddleware):
    """A gzip body is another representation of the file, so its ETag is made weak (RFC 9110
    8.8.1): ``If-None-Match`` (weak comparison) still revalidates it, while ``If-Range`` with it
    answers the whole file rather than byte ranges a client would splice into compressed bytes."""

    def edit(self, headers: MutableHeaders) -> None:
        etag = headers.get("etag")
        if "content-encoding" in headers and etag and not etag.startswith("W/"):
            headers["etag"] = f"W/{etag}"


def add_compression(app: FastAPI) -> None:
    """gzip responses for clients that accept it (inside the middlewares added after this)."""
    # a result file streams in FileResponse.chunk_size pieces: each is compressed off the event loop
    app.add_middleware(NegotiatedGZip, minimum_size=MINIMUM_SIZE, compresslevel=LEVEL,
                       thread_minimum_size=FileResponse.chunk_size, exclude_content_types=ALREADY_COMPRESSED)
    app.add_middleware(WeakEtagWhenEncoded)
