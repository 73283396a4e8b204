"""The path a request names inside the app, whatever prefix a reverse proxy serves it under.

uvicorn (``--root-path``, ``geoseg serve --root-path``) puts the root path in front of an ASGI
scope's ``path``, as the ASGI spec asks: ``/geoseg/v1/jobs``. The gates that act before a route
runs (API key, queue cap, signed tiles) compare paths, so they must strip it as Starlette's
router does, or they let every request behind a prefix through unchecked."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def route_path(scope: Mapping[str, Any]) -> str:
    """``scope["path"]`` without the scope's ``root_path`` prefix (unchanged when it has none)."""
    path, root = scope.get("path", ""), scope.get("root_path", "").rstrip("/")
    if root and (path == root or path.startswith(root + "/")):
        return path[len(root):] or "/"
    return path
