"""Exceptions as messages for clients: the whole chain, since the outer one often says nothing.

rasterio wraps GDAL's reason ("IReadBlock failed ...", "Not a JPEG file ...") in a
``RasterioIOError`` that only says "Read failed. See previous exception for details.";
the previous exceptions are in ``__cause__``, never in ``str(exc)``, so a job error
or an upload refusal built from ``str(exc)`` alone hides the real cause.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def exception_chain(exc: BaseException) -> list[BaseException]:
    """``exc`` then its causes (``__cause__``, else an unsuppressed ``__context__``), outermost first."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not seen for seen in chain):
        chain.append(current)
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    return chain


def chain_messages(exc: BaseException) -> list[str]:
    """The messages of the chain, outermost first; one already contained in an earlier one
    (GDAL repeats the inner reasons in the outer ones) is left out."""
    kept: list[str] = []
    for link in exception_chain(exc):
        message = str(link).strip()
        if message and not any(message in earlier for earlier in kept):
            kept.append(message)
    return kept


def describe(exc: BaseException) -> str:
    """``Type: message; caused by: inner <- innermost`` for a job's ``error``."""
    head = f"{type(exc).__name__}: {str(exc).strip()}"
    causes = [m for m in chain_messages(exc) if m not in head]
    return head + (f"; caused by: {' <- '.join(causes)}" if causes else "")


#: where FastAPI found a bad request value -> how a client names it
_LOCATIONS = {"body": "form field", "query": "query parameter", "path": "path parameter",
              "header": "header", "cookie": "cookie"}


#: FastAPI's message for a file field that arrived as a text part
_EXPECTED_FILE = "Expected UploadFile"
_NOT_A_FILE = ("a text value, not a file: send the GeoTIFF as a file part with a file name (curl -F "
               "file=@scene.tif, not -F file=<scene.tif; httpx/requests files={'file': ('scene.tif', f)})")


def header_text(value: str) -> str:
    """A header value as its sender most likely wrote it. Why: HTTP headers arrive as bytes that
    Starlette decodes as latin-1, so a UTF-8 ``clé`` reads ``clÃ©``; bytes that are not UTF-8 keep
    their latin-1 reading (``repr`` then escapes any control character among them)."""
    try:
        return value.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return value


def describe_invalid_request(errors: Sequence[Mapping[str, Any]], content_type: str | None = None) -> str:
    """FastAPI's request-validation errors as one line, e.g. ``form field 'profile': Input should be
    'accurate' or 'fast' (got 'x')``: the service's other refusals are one string too, so a client
    reads every ``detail`` the same way (the structured list stays available as ``errors``).
    ``content_type``: the request's; a body that is not a form (the GeoTIFF's bytes as the whole
    body, JSON) is said to be one, since "form field 'file': Field required" alone puzzles."""
    parts = []
    media_type = header_text(content_type or "").split(";")[0].strip().lower()
    if any(error.get("loc", ("",))[0] == "body" for error in errors) and media_type != "multipart/form-data":
        parts.append(f"the body is {media_type or 'not typed'}, not multipart/form-data: send the GeoTIFF "
                     "as a form part named 'file' (curl -F file=@scene.tif, httpx/requests files=...)")
    for error in errors:
        where, *names = [str(part) for part in error.get("loc", ())] or ["request"]
        label = f"{_LOCATIONS.get(where, where)} {'.'.join(names)!r}" if names else _LOCATIONS.get(where, where)
        message = str(error.get("msg", "invalid value"))
        value = error.get("input")
        if _EXPECTED_FILE in message:
            # a part without a file name (curl -F file=<scene.tif, a client leaving the name out)
            # arrives as text: FastAPI's message echoed its bytes
            parts.append(f"{label}: {_NOT_A_FILE}")
            continue
        if error.get("type") != "missing" and isinstance(value, (str, int, float, bool)):
            shown = repr(header_text(value) if where == "header" and isinstance(value, str) else value)
            message += f" (got {shown[:60] + '...' if len(shown) > 60 else shown})"
        parts.append(f"{label}: {message}")
    return "invalid request: " + "; ".join(parts) + " (see /docs for the fields and their values)"
