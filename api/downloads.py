"""Result files served from a descriptor opened by the route, so removing them cannot break a download.

Starlette's ``FileResponse`` stats and opens its file by path only while it is being sent,
after the route has returned and (for the body) after the headers went out: a job deleted or
expired in between gave a 500, or a body cut short of its ``Content-Length``. Once a file is
open, unlinking it is harmless on Linux (and POSIX in general): the inode and its data live
until the last descriptor is closed, so a download that has started always completes.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import datetime
from email.utils import formatdate, parsedate_to_datetime
from pathlib import Path
from typing import Any

from starlette.datastructures import Headers
from starlette.responses import (
    FileResponse,
    JSONResponse,
    MalformedRangeHeader,
    RangeNotSatisfiable,
    Response,
)
from starlette.types import Receive, Scope, Send

_PATHSEND = "http.response.pathsend"


class HeldFileResponse(FileResponse):
    """A ``FileResponse`` over a file opened now; its descriptor is closed once the response is sent.

    Starlette reads the file through ``/dev/fd/N`` (the descriptor held here), whatever it does
    internally (stat, open, ranges); the ASGI *pathsend* extension is withheld, since it would
    let the server reopen the file by its name.
    """

    def __init__(self, path: Path, **kwargs: Any) -> None:
        # held until the response is sent (closed in __call__); FileNotFoundError: the caller 404s
        self._handle = open(path, "rb")  # noqa: SIM115
        try:
            stat = os.fstat(self._handle.fileno())
            super().__init__(f"/dev/fd/{self._handle.fileno()}", stat_result=stat, **kwargs)
        except BaseException:
            self._handle.close()
            raise

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        extensions = scope.get("extensions") or {}
        if _PATHSEND in extensions:
            scope = {**scope, "extensions": {k: v for k, v in extensions.items() if k != _PATHSEND}}
        try:
            request = Headers(scope=scope)
            failed = precondition_failed(request, self.headers["etag"], self.stat_result.st_mtime)
            etag = self.current_copy(request) if scope["method"] in ("GET", "HEAD") else None
            range_error = self._range_error(request)
            if failed is not None:
                await precondition_failed_response(failed)(scope, receive, send)
            elif etag is not None:
                await not_modified(etag, self.headers)(scope, receive, send)
            elif isinstance(range_error, RangeNotSatisfiable):
                await unsatisfiable_range(request["range"], self.stat_result.st_size)(scope, receive, send)
            else:
                if isinstance(range_error, MalformedRangeHeader):
                    # another unit than bytes, or no valid byte range: ignored, the whole file is
                    # sent (RFC 9110 14.2: an origin server MUST ignore a range unit it does not
                    # understand); Starlette answered a text/plain 400 ("Only support bytes range")
                    scope = {**scope, "headers": [(k, v) for k, v in scope["headers"] if k.lower() != b"range"]}
                await super().__call__(scope, receive, send)
        finally:
            self._handle.close()

    def _range_error(self, request: Headers) -> Exception | None:
        """What Starlette's range parser makes of the request's ``Range``: None when it is absent,
        valid, or not used (a stale ``If-Range``: the whole file is sent in any case)."""
        http_range, if_range = request.get("range"), request.get("if-range")
        if http_range is None or (if_range is not None and not self._should_use_range(if_range)):
            return None
        try:
            self._parse_range_header(http_range, self.stat_result.st_size)
        except (MalformedRangeHeader, RangeNotSatisfiable) as exc:
            return exc
        return None

    def current_copy(self, request: Headers) -> str | None:
        """The ETag of a 304 when the client's cached copy is this file, else None (see ``current_copy``).
        Starlette's ``FileResponse`` sends these validators but ignores them, so a caching
        client re-downloaded every time."""
        return current_copy(request, self.headers["etag"], self.stat_result.st_mtime)


def unsatisfiable_range(http_range: str, size: int) -> Response:
    """The 416 of a byte range starting past the end of the file: JSON with a ``detail``, as every
    error of the service (Starlette's was an empty text/plain body), and ``Content-Range: */size``."""
    within = f"ask for bytes within 0-{size - 1}" if size else "it has no bytes to ask for"
    shown = http_range if len(http_range) <= 80 else f"{http_range[:80]}..."
    return JSONResponse({"detail": f"range {shown!r} starts past the end of the file, which has {size} "
                                   f"bytes: {within}"},
                        status_code=416, headers={"Content-Range": f"bytes */{size}"})


#: what a 304 repeats of its 200 (RFC 9110 15.4.5; Date is the server's): a cache replaces its
#: stored copy's fields with these, so one left out (Vary) would be lost from the copy
NOT_MODIFIED_FIELDS = ("cache-control", "content-location", "expires", "vary", "last-modified")


def not_modified(etag: str, ok_headers: Mapping[str, str]) -> Response:
    """The 304 of a current copy: ``etag`` as the client named it, and the fields of
    :data:`NOT_MODIFIED_FIELDS` that ``ok_headers``, the headers of its 200, hold. The 200's
    ``Vary`` is all the route's (``api.caching.result_cache_headers``), gzip's included."""
    lowered = {k.lower(): v for k, v in ok_headers.items()}
    return Response(status_code=304,
                    headers={"etag": etag, **{k: lowered[k] for k in NOT_MODIFIED_FIELDS if k in lowered}})


def precondition_failed(request: Headers, etag: str, mtime: float) -> str | None:
    """Why ``If-Match`` (else ``If-Unmodified-Since``) rules out the representation tagged ``etag``,
    last modified at ``mtime``; None when it is absent or holds (RFC 9110 13.1.1, 13.1.4, 13.2.2: evaluated
    before ``If-None-Match``). A client sends them to get exactly the copy it names, e.g. the rest
    of a download by range; they were ignored, so it got whatever the URL held. ``If-Match``
    compares strongly: a weak tag (``W/``, a gzipped copy's) never matches."""
    if_match = request.get("if-match")
    if if_match is not None:
        tags = [t.strip() for t in if_match.split(",")]
        if "*" in tags or etag in tags:
            return None
        return f"If-Match {_shown(if_match)} does not name this file, whose ETag is {etag}"
    if_unmodified_since = request.get("if-unmodified-since")
    since = _http_date(if_unmodified_since)  # an invalid date is ignored (RFC 9110 13.1.4)
    if since is None or int(mtime) <= int(since.timestamp()):
        return None
    return (f"the file was last modified at {formatdate(mtime, usegmt=True)}, after If-Unmodified-Since "
            f"{_shown(if_unmodified_since)}")


def _http_date(value: str | None) -> datetime | None:
    """An HTTP date header's instant; None when absent, invalid or without a time zone (RFC 9110
    5.6.7: a recipient ignores a date it cannot parse)."""
    if value is None:
        return None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return when if when.tzinfo is not None else None


def _shown(value: str) -> str:
    return repr(value if len(value) <= 80 else f"{value[:80]}...")


def precondition_failed_response(reason: str) -> Response:
    """The 412 of a failed ``If-Match`` / ``If-Unmodified-Since``, JSON as every error of the service."""
    return JSONResponse({"detail": f"precondition failed: {reason}"}, status_code=412)


def current_copy(request: Headers, etag: str, mtime: float) -> str | None:
    """The ETag of a 304 when the client's cached copy is the representation tagged ``etag`` (last
    modified at ``mtime``), else None (RFC 9110 13.1.2-3): ``If-None-Match`` (weak comparison, ``*``
    too), else ``If-Modified-Since``. The tag is returned as the client sent it: ``W/`` for the
    copy it got gzipped (api.compression), as that 200 would have said."""
    if_none_match = request.get("if-none-match")
    if if_none_match is not None:
        for tag in (t.strip() for t in if_none_match.split(",")):
            if tag == "*":
                return etag
            if tag.removeprefix("W/") == etag:
                return tag
        return None
    since = _http_date(request.get("if-modified-since"))  # an invalid date is ignored (RFC 9110 13.1.3)
    return etag if since is not None and int(since.timestamp()) >= int(mtime) else None
