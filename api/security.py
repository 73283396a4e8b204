"""API-key check for every ``/v1`` route (header ``X-API-Key``: the operator's key ``GEOSEG_API_KEY``, or
a client's from ``GEOSEG_API_KEYS_FILE``), who the caller is, and the signed URLs of a job's web-map
tiles, which map libraries load as ``<img>`` (no headers)."""
from __future__ import annotations

import base64
import hashlib
import hmac
import re
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs
from uuid import UUID

from fastapi import HTTPException, Request, Security
from fastapi.security import APIKeyHeader

from api.asgi_paths import route_path
from api.json_answers import send_error

if TYPE_CHECKING:
    from api.jobs import Job
    from api.settings import Settings

UNAUTHORIZED = "missing or wrong API key: send the header 'X-API-Key: <key>'"

api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False,
                              description="Required when the server sets GEOSEG_API_KEY or GEOSEG_API_KEYS_FILE.")


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


@dataclass(frozen=True)
class Caller:
    """Who sent a request. ``client`` None: the operator's key (``GEOSEG_API_KEY``) or an open server,
    which see every job; else a client of ``GEOSEG_API_KEYS_FILE``, which sees the jobs it submitted."""

    client: str | None = None

    def sees(self, job: Job) -> bool:
        """Whether this caller may see (read, delete) ``job``: the operator every job, a client its own."""
        return self.client is None or job.client == self.client


OPERATOR = Caller()


def _keys(settings: Settings) -> list[tuple[str | None, str]]:
    """(client, key) of every key the server knows, the operator's as client None."""
    return ([(None, settings.api_key)] if settings.api_key is not None else []) + list(settings.client_keys)


#: the client a job belongs to (None: the operator's), ``NO_JOB`` for an id the table does not hold
OwnerOf = Callable[[str], "str | None | object"]
NO_JOB = object()


def _signer_of_tile(method: str, path: str, query_string: bytes, settings: Settings,
                    owner_of: OwnerOf) -> Caller | None:
    """The caller whose key signed this GET/HEAD of a job's tile, if any: the operator's key, or that of
    the client the job belongs to (``owner_of``), the only two compared (constant time). Why only those:
    with a key per client, each tile URL cost an HMAC per client, anonymous ones too (10 ms at 1,000)."""
    match = _TILE_PATH.match(path)
    if method not in ("GET", "HEAD") or match is None:
        return None
    try:
        job_id = str(UUID(match["job"]))
    except ValueError:  # not a job id: the route answers 422 to a keyed client
        return None
    sent = parse_qs(query_string.decode("latin-1")).get(TILE_SIGNATURE_PARAM, [""])[-1].encode()
    if not sent:  # no signature: nothing to look up (an anonymous request read the job table)
        return None
    owner = owner_of(job_id)
    keys = [(None, settings.api_key)] if settings.api_key is not None else []
    own = dict(settings.client_keys).get(owner) if isinstance(owner, str) else None
    if own is not None:
        keys.append((owner, own))
    found = None
    for client, key in keys:
        if hmac.compare_digest(sent, tile_signature(key, job_id).encode()):
            found = Caller(client)
    return found


def identify(settings: Settings, sent_key: bytes, method: str, path: str, query_string: bytes,
             owner_of: OwnerOf) -> Caller | None:
    """Who sends ``sent_key`` (the ``X-API-Key`` header's bytes; b"" if none), or signed the tile URL
    (``owner_of``: whose a job is); None: nobody the server knows (401). Keys compared in constant time."""
    if not settings.keyed:
        return OPERATOR
    found = None
    for client, key in _keys(settings):
        if hmac.compare_digest(sent_key, key.encode()):
            found = Caller(client)
    return found or _signer_of_tile(method, path, query_string, settings, owner_of)


def owner_in(state: Any) -> OwnerOf:
    """``OwnerOf`` reading the job table of the app's ``state`` (``api.jobs.JobStore``). A table that
    cannot be read (locked, a full disk), or none yet, owns nothing: only the operator's key is then
    compared (the gate runs outside the routes' 503 for it: a locked table was a 500 there)."""
    def owner(job_id: str) -> str | None | object:
        store = getattr(state, "store", None)
        try:
            job = store.get(job_id) if store is not None else None
        except sqlite3.Error:
            return NO_JOB
        return NO_JOB if job is None else job.client
    return owner


def _unauthorized() -> HTTPException:
    return HTTPException(status_code=401, detail=UNAUTHORIZED, headers={"WWW-Authenticate": "X-API-Key"})


def require_api_key(request: Request, key: str | None = Security(api_key_header)) -> None:
    """401 unless a known key is sent (or the request is a signed tile URL); who sent it is ``caller_of``."""
    caller_of(request)


def caller_of(request: Request) -> Caller:
    """The request's caller (``identify``), kept on ``request.state``; 401 for an unknown key."""
    caller = getattr(request.state, "caller", None)
    if caller is None:
        caller = identify(request.app.state.settings, (request.headers.get("x-api-key") or "").encode("latin-1"),
                          request.method, route_path(request.scope), request.scope.get("query_string", b""),
                          owner_in(request.app.state))
        if caller is None:
            raise _unauthorized()
        request.state.caller = caller
    return caller


class ApiKeyGate:
    """ASGI gate: refuse keyless ``/v1`` requests before their body is read.

    The route dependency above documents the scheme in OpenAPI, but FastAPI parses a
    multipart body before it runs dependencies; without this gate an anonymous client
    could make the server spool gigabytes to disk before hearing 401.
    """

    def __init__(self, app: Any, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and route_path(scope).startswith("/v1") and scope["method"] != "OPTIONS":
            sent = dict(scope.get("headers") or []).get(b"x-api-key", b"")
            caller = identify(self.settings, sent, scope["method"], route_path(scope), scope.get("query_string", b""),
                              owner_in(scope["app"].state))
            if caller is None:
                await send_error(send, 401, UNAUTHORIZED, {"WWW-Authenticate": "X-API-Key"})
                return
            scope.setdefault("state", {})["caller"] = caller  # request.state.caller
        await self.app(scope, receive, send)
