"""API-key check for every ``/v1`` route (header ``X-API-Key``, key from ``GEOSEG_API_KEY``)."""
from __future__ import annotations

import hmac

from fastapi import HTTPException, Request, Security
from fastapi.security import APIKeyHeader

api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False,
                              description="Required when the server sets GEOSEG_API_KEY.")


def require_api_key(request: Request, key: str | None = Security(api_key_header)) -> None:
    """401 unless the configured key is sent; constant-time comparison."""
    expected = request.app.state.settings.api_key
    if expected is None:
        return
    if key is None or not hmac.compare_digest(key.encode(), expected.encode()):
        raise HTTPException(status_code=401, detail="missing or wrong API key: send the header "
                                                    "'X-API-Key: <key>'",
                            headers={"WWW-Authenticate": "X-API-Key"})
