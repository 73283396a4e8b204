"""API-key check for every ``/v1`` route (header ``X-API-Key``, key from ``GEOSEG_API_KEY``)."""
from __future__ import annotations

import hmac
import json
from typing import Any

from fastapi import HTTPException, Request, Security
from fastapi.security import APIKeyHeader

UNAUTHORIZED = "missing or wrong API key: send the header 'X-API-Key: <key>'"

api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False,
                              description="Required when the server sets GEOSEG_API_KEY.")


def require_api_key(request: Request, key: str | None = Security(api_key_header)) -> None:
    """401 unless the configured key is sent; constant-time comparison."""
    expected = request.app.state.settings.api_key
    if expected is None:
        return
    if key is None or not hmac.compare_digest(key.encode(), expected.encode()):
        raise HTTPException(status_code=401, detail=UNAUTHORIZED,
                            headers={"WWW-Authenticate": "X-API-Key"})


class ApiKeyGate:
    """ASGI gate: refuse keyless ``/v1`` requests before their body is read.

    The route dependency above documents the scheme in OpenAPI, but FastAPI parses a
    multipart body before it runs dependencies; without this gate an anonymous client
    could make the server spool gigabytes to disk before hearing 401.
    """

    def __init__(self, app: Any, api_key: str) -> None:
        self.app = app
        self.expected = api_key.encode()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/v1") and scope["method"] != "OPTIONS":
            sent = dict(scope.get("headers") or []).get(b"x-api-key", b"")
            if not hmac.compare_digest(sent, self.expected):
                body = json.dumps({"detail": UNAUTHORIZED}).encode()
                await send({"type": "http.response.start", "status": 401,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"content-length", str(len(body)).encode()),
                                        (b"www-authenticate", b"X-API-Key")]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)
