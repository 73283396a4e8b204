"""The JSON error answers the service's ASGI gates write themselves, in FastAPI's bytes.

The gates (body size, API key, queue cap, shutdown) answer before any route, so outside FastAPI's
exception handlers; each wrote its body with ``json.dumps``, whose ``", "``/``": "`` separators and
``\\uXXXX`` escapes differ from ``JSONResponse``'s compact UTF-8: the same 413 came in two forms,
depending on whether Content-Length or the received bytes crossed the limit. Every answer here is a
``JSONResponse``, so all of the service's error bodies serialise one way.
"""
from __future__ import annotations

from collections.abc import Mapping

from fastapi.responses import JSONResponse
from starlette.types import Send


def error_answer(status: int, detail: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    """``{"detail": detail}`` with ``status``, as every route's refusal is written."""
    return JSONResponse({"detail": detail}, status_code=status, headers=dict(headers) if headers else None)


async def send_error(send: Send, status: int, detail: str, headers: Mapping[str, str] | None = None) -> None:
    """Send :func:`error_answer` through an ASGI ``send`` (a gate has no ``Request`` to answer)."""
    answer = error_answer(status, detail, headers)
    await send({"type": "http.response.start", "status": answer.status_code, "headers": answer.raw_headers})
    await send({"type": "http.response.body", "body": answer.body})
