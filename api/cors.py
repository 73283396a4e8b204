"""Cross-origin access for web maps on other origins (``GEOSEG_CORS_ORIGINS``).

A web map on another origin reads result files by range (geotiff.js, OpenLayers' GeoTIFF
source), revalidates them, and probes them with HEAD: with a key, each of these is preflighted,
and CORS lets a page read only the response headers listed here (beyond the safelisted
Content-Type, Content-Length, Last-Modified, ...). A refused preflight is a JSON 400 with a
``detail`` naming what was refused, as every error of the service: Starlette answered
``text/plain`` "Disallowed CORS origin", which neither says which origin, method or header nor
what to change.
"""
from __future__ import annotations

import re

from fastapi import FastAPI
from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import JSONResponse, Response

CORS_METHODS = ["GET", "HEAD", "POST", "DELETE"]
CORS_REQUEST_HEADERS = ["X-API-Key", "Range", "If-Range", "If-None-Match", "If-Modified-Since", "If-Match",
                        "If-Unmodified-Since", "Idempotency-Key"]
CORS_EXPOSED_HEADERS = ["Accept-Ranges", "Content-Range", "Content-Disposition",
                        "ETag", "Location", "Retry-After"]


class CorsWithJsonRefusals(CORSMiddleware):
    """Starlette's CORS, whose refused preflight answers JSON with a ``detail``."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code != 400:
            return response
        origin = request_headers["origin"]
        method = request_headers["access-control-request-method"]
        asked = [h.strip() for h in request_headers.get("access-control-request-headers", "").split(",") if h.strip()]
        refused = []
        if not self.is_allowed_origin(origin=origin):
            refused.append(f"origin {origin!r} is not one the server allows (its operator lists the web "
                           "maps' origins in GEOSEG_CORS_ORIGINS)")
        if method not in self.allow_methods:
            refused.append(f"method {method!r} is not allowed (allowed: {', '.join(CORS_METHODS)})")
        if headers := [h for h in asked if h.lower() not in self.allow_headers]:
            refused.append(f"request header(s) {', '.join(headers)} are not allowed "
                           f"(allowed: {', '.join(CORS_REQUEST_HEADERS)})")
        if "access-control-request-private-network" in request_headers and not self.allow_private_network:
            refused.append("private-network access is not allowed")
        kept = {k: v for k, v in response.headers.items() if k not in ("content-length", "content-type")}
        return JSONResponse({"detail": f"cross-origin request refused: {'; '.join(refused)}"},
                            status_code=400, headers=kept)


def subdomains_pattern(origins: list[str]) -> str | None:
    """One regular expression for the ``scheme://*.host[:port]`` origins: ``*`` stands for one or more
    leading labels of the host (``https://*.example.org`` allows ``https://a.b.example.org``, not
    ``https://example.org`` nor ``https://evil-example.org``); None without such origins.

    Why: Starlette compares origins literally, so a wildcard origin was accepted and never matched."""
    patterns = [re.escape(scheme) + "://" + r"(?:[a-z0-9-]+\.)+" + re.escape(rest)
                for scheme, _, host in (o.partition("://") for o in origins if "*" in o and o != "*")
                for rest in [host.removeprefix("*.")]]
    return "|".join(f"(?:{p})" for p in patterns) or None


def add_cors(app: FastAPI, origins: list[str]) -> None:
    """Let pages on ``origins`` call the service (preflights included); compared in lower case, as browsers
    send them (``https://Map.example`` was accepted and matched no page)."""
    origins = [origin.lower() for origin in origins]
    app.add_middleware(CorsWithJsonRefusals, allow_origins=[o for o in origins if "*" not in o or o == "*"],
                       allow_origin_regex=subdomains_pattern(origins), allow_methods=CORS_METHODS,
                       allow_headers=CORS_REQUEST_HEADERS, expose_headers=CORS_EXPOSED_HEADERS)
