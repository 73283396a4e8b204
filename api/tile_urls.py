"""The URLs, ETags and caching of a job's web-map tiles, named by the renderer that drew them.

Why: a tile is served ``immutable`` for a year, so a client never asks for its URL again. Its
bytes depend on the class map (never rewritten once the job succeeded), z/x/y and the renderer
(``tiles.xyz``: colours, resampling, PNG encoding; GDAL's warper). The URL and the ETag named only
the first two, so after an upgrade that draws tiles otherwise, clients kept the old pictures for
good, and revalidating one got a 304. So the tile URL template handed out (``links.tiles``, the
TileJSON) carries ``v=`` the renderer's version (:func:`tile_version`: the package version and
``tiles.xyz.renderer_fingerprint``), the ETag includes it, and only a URL naming the current
version is immutable: a hand-made URL without ``v`` (or an old one) is revalidated on each use.
"""
from __future__ import annotations

import functools
import hashlib
import os

from api.caching import RESULT_CACHE_CONTROL
from api.security import TILE_SIGNATURE_PARAM, tile_signature
from geoseg import __version__
from tiles.xyz import renderer_fingerprint

#: the query parameter naming the renderer version a tile URL was handed out for
TILE_VERSION_PARAM = "v"
#: what a tile URL not naming the current renderer gets: kept, but revalidated (ETag) at each use
UNVERSIONED_TILE_CACHE_CONTROL = "private, no-cache"


@functools.cache
def tile_version() -> str:
    """12 hex digits naming how this server draws tiles: geoseg's version and the renderer's
    fingerprint (its code, GDAL, Pillow), so either changing gives tiles new URLs and ETags."""
    return hashlib.sha256(f"{__version__}\0{renderer_fingerprint()}".encode()).hexdigest()[:12]


def tile_template(template: str, job_id: str, api_key: str | None) -> str:
    """A tile URL template (``.../tiles/{z}/{x}/{y}.png``) as the server hands it out: with the
    renderer version, and on a keyed server the job's tile signature (``api.security``), so that
    maps loading tiles as ``<img>`` need no header."""
    query = f"{TILE_VERSION_PARAM}={tile_version()}"
    if api_key is not None:
        query += f"&{TILE_SIGNATURE_PARAM}={tile_signature(api_key, job_id)}"
    return f"{template}?{query}"


def tile_etag(classmap: os.stat_result, z: int, x: int, y: int) -> str:
    """The strong ETag of tile z/x/y: the class map's identity, the tile and the renderer version."""
    key = f"{classmap.st_mtime}-{classmap.st_size}-{z}/{x}/{y}-{tile_version()}"
    return '"' + hashlib.md5(key.encode(), usedforsecurity=False).hexdigest() + '"'


def tile_cache_control(requested_version: str | None) -> str:
    """``immutable`` for a URL naming the current renderer version; revalidated at each use otherwise."""
    return RESULT_CACHE_CONTROL if requested_version == tile_version() else UNVERSIONED_TILE_CACHE_CONTROL
