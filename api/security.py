"""API-key check for every ``/v1`` route (header ``X-API-Key``, key from ``GEOSEG_API_KEY``), and the
signed URLs of a job's web-map tiles, which map libraries load as ``<img>`` (no headers)."""
from __future__ import annotations

import base64
import hashlib
import hmac
import re
from typing import Any
from urllib.parse import parse_qs
from uuid import UUID

from fastapi import HTTPException, Request, Security
from fastapi.security import APIKeyHeader

from api.asgi_paths import route_path
from api.json_answers import send_error

UNAUTHORIZED = "missing or wrong API key: send the header 'X-API-Key: <key>'"

api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False,
                              description="Required when the server sets GEOSEG_API_KEY.")


#: the query parameter of a signed tile URL (a keyed server's TileJSON and job links carry it)
TILE_SIGNATURE_PARAM = "sig"
#: any z/x/y, so that a signed URL of a malformed tile hears the route's 422 naming it, not "wrong API key"
#: (a web map's template mistake, e.g. TMS's {-y}); the signature still opens that job's tiles only
_TILE_PATH = re.compile(r"/v1/jobs/(?P<job>[^/]+)/tiles/[^/]+/[^/]+/[^/]+\.png\Z")


def tile_signature(api_key: str, job_id: str) -> str:
    """A read capability for ONE job's web-map tiles, derived from the key (HMAC-SHA256).

    Why: Leaflet and OpenLayers load tiles as ``<img>``, which cannot send ``X-API-Key``, and the
    key itself must never sit in a URL (logs, history, Referer). The signature opens that job's
    tiles only (no other job, no result file, no other route); it lasts until the job is removed
    or the key changes, like a share link."""
    mac = hmac.new(api_key.encode(), f"geoseg-tiles:{UUID(job_id)}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac[:18]).decode()


def is_signed_tile_request(method: str, path: str, query_string: bytes, api_key: str) -> bool:
    """Whether a GET/HEAD of a job's tile carries that job's signature (constant-time comparison)."""
    match = _TILE_PATH.match(path)
    if method not in ("GET", "HEAD") or match is None:
        return False
    sent = parse_qs(query_string.decode("latin-1")).get(TILE_SIGNATURE_PARAM, [""])[-1]
    try:
        expected = tile_signature(api_key, match["job"])
    except ValueError:  # not a job id: the route answers 422 to a keyed client
        return False
    return hmac.compare_digest(sent.encode(), expected.encode())


def require_api_key(request: Request, key: str | None = Security(api_key_header)) -> None:
    """401 unless the configured key is sent (or the request is a signed tile URL); constant-time comparison."""
    expected = request.app.state.settings.api_key
    if expected is None:
        return
    if is_signed_tile_request(request.method, route_path(request.scope), request.scope.get("query_string", b""),
                              expected):
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
        self.api_key = api_key
        self.expected = api_key.encode()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and route_path(scope).startswith("/v1") and scope["method"] != "OPTIONS":
            sent = dict(scope.get("headers") or []).get(b"x-api-key", b"")
            if not hmac.compare_digest(sent, self.expected) and not is_signed_tile_request(
                    scope["method"], route_path(scope), scope.get("query_string", b""), self.api_key):
                await send_error(send, 401, UNAUTHORIZED, {"WWW-Authenticate": "X-API-Key"})
                return
        await self.app(scope, receive, send)
