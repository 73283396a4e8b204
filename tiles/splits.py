"""Which split (train/val/test) a scene's chips belong to, and the area it comes from.

Why: the same buildings appear at three zooms, so splitting by chip would leak test
ground into training. Splits are by AREA or block (docs/ARCHITECTURE.md):
buildings — kampala = test, nairobi block 2 and zanzibar block 2 = val, everything else train
(since session 9: Nairobi-2 alone is one dense block where nearly every prediction merges, so it
cannot judge how well buildings are separated; Zanzibar-2 has detached houses);
Dubai land cover — tile 1-4 train, 5 val, 6 test. Unknown areas default to train.
These rules are the shared data set's: ``scene_split`` applies them to its files (known by their
bytes, ``tiles.shared_scenes``), and puts every other scene in train, whatever its name.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path
from collections.abc import Callable
from typing import IO

from tiles.archived import ArchivedFile, archived_file
from tiles.rasterpath import (
    RasterPath,
    folder_name,
    is_virtual,
    parent_of,
    raster_name,
    raster_stem,
    subdataset_file,
)
from tiles.shared_scenes import SHARED_SCENE_SIZES, SHARED_SCENES

_SCENE = re.compile(r"^(?P<area>[A-Za-z]+)_z(?P<zoom>\d+)_(?P<block>\d+)$")
_DUBAI_TILE = re.compile(r"^tile_(?P<n>\d+)$")


def scene_area(path: RasterPath) -> tuple[str, str | None]:
    """(area, block) of a buildings scene ``<area>_z<zoom>_<block>.tif``; else (parent dir, None).
    A scene in an archive or a subdataset: its folder there, or its file's (``tiles.rasterpath``)."""
    m = _SCENE.match(raster_stem(path))
    if m:
        return m["area"], m["block"]
    return folder_name(path), None


def block_label(area: str, block: str | None) -> str:
    """How reports name a scene's block: ``nairobi-2``; the area alone where it has no block."""
    return f"{area}-{block}" if block else area


def buildings_split(area: str, block: str | None) -> str:
    """Split of a buildings scene by area/block."""
    if area == "kampala":
        return "test"
    if area in ("nairobi", "zanzibar") and block == "2":
        return "val"
    return "train"


def landcover_split(tile_dir: str) -> str:
    """Split of a Dubai image by its ``tile_N`` folder."""
    m = _DUBAI_TILE.match(tile_dir)
    if not m:
        return "train"
    n = int(m["n"])
    return "test" if n == 6 else "val" if n == 5 else "train"


def shared_scene(path: RasterPath) -> Path | None:
    """``path``'s place in the shared data set (``buildings/kampala/kampala_z19_1.tif``) when its
    bytes are one of its scene files', else None. A file read from a local zip, tar or gzip file
    (``/vsizip//a.zip/b.tif``) is known by its own bytes, a subdataset (``GTIFF_DIR:2:b.tif``, an
    overview of the same ground) by its file's; a URL is none.

    A file whose size no shared file has is none of them and is not read: hashing a user's
    multi-GB scene only to learn that took seconds (1.26 GB: 2.9 s from disk)."""
    found_bytes = _scene_bytes(path)
    if found_bytes is None:
        return None
    size, open_file = found_bytes
    if size not in SHARED_SCENE_SIZES and not (is_virtual(path) and size in {s % 2**32 for s in SHARED_SCENE_SIZES}):
        return None  # a gzip file stores its size modulo 2**32
    with open_file() as file:
        found = SHARED_SCENES.get(stream_sha256(file))
    return Path(found.path) if found is not None else None


def _scene_bytes(path: RasterPath) -> ArchivedFile | None:
    """The size of a scene's bytes and how to read them (``tiles.archived``); None where they cannot
    be read here (a URL, a file that is gone)."""
    inner = subdataset_file(path)
    if inner is not None:
        return _scene_bytes(inner)
    if is_virtual(path):
        return archived_file(path)
    local = Path(path)
    try:
        return local.stat().st_size, lambda: open(local, "rb")
    except OSError:
        return None


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes (hex), read by MiB."""
    with open(path, "rb") as file:
        return stream_sha256(file)


def stream_sha256(file: IO[bytes], advance: Callable[[int], None] | None = None) -> str:
    """The SHA-256 of an open file's bytes from where it stands (hex), read by MiB; each block's size
    told to ``advance`` (a progress bar) when given."""
    digest = hashlib.sha256()
    for block in iter(lambda: file.read(2**20), b""):
        digest.update(block)
        if advance is not None:
            advance(len(block))
    return digest.hexdigest()


def scene_split(path: RasterPath, landcover: bool) -> str:
    """The split of a scene ``geoseg tile`` cuts without ``--split``: the shared data set's rules for
    its files, by their place in it (a renamed copy of a Kampala scene is still test), and train
    for any other scene.

    Why: the rules read names, so a user's ``kampala_z19_7.tif``, a ``kampala/`` folder or a
    ``tile_6/`` folder of their own had its chips put in test, and ``geoseg train`` then found no
    train chips ('got 0 train, 4 val') and named ``--split``, which the user had used."""
    shared = shared_scene(path)
    if shared is None:
        return "train"
    if landcover:
        return landcover_split(shared.parent.name)
    return buildings_split(*scene_area(shared))


#: folder names that hold a team's held-out scenes (``mine/val/``, ``mine/test/``: the README's layout)
HELD_OUT_FOLDERS = {"val": "val", "valid": "val", "validation": "val", "test": "test"}


def check_held_out_folders(paths: list[RasterPath]) -> None:
    """Refuse, for a run without ``--split``, scenes kept in a folder named after a held-out split
    (``HELD_OUT_FOLDERS``) that are none of the shared data's files: their chips would go to train.

    Why: ``geoseg tile mine/`` over the README's ``mine/train/``, ``mine/val/``, ``mine/test/`` put the
    test scenes into training with no word, and every figure measured on them was then inflated."""
    held = [(path, HELD_OUT_FOLDERS[folder_name(path).lower()]) for path in paths
            if folder_name(path).lower() in HELD_OUT_FOLDERS and shared_scene(path) is None]
    if held:
        path, split = held[0]
        more = f" (and {len(held) - 1} more scene{'s' if len(held) > 2 else ''} in such folders)" if len(held) > 1 else ""
        raise ValueError(f"{raster_name(path)} is kept in a folder named {folder_name(path)}{more}, but without "
                         f"--split its chips would go to train: cut each such folder on its own with its split "
                         f"(geoseg tile {parent_of(path)} --split {split} ...), or give --split train to train on it")


def name_split_note(path: RasterPath, landcover: bool) -> str | None:
    """A note when ``path`` is named like a held-out scene of the shared data set (a ``kampala_*``
    scene, a ``tile_6/`` image) but is none of its files, so its chips go to train.

    Why: a changed or re-encoded copy of a shared test scene is no longer recognised by its bytes,
    and putting test ground into training silently would inflate every figure measured on it.
    Names are read first, so an ordinary scene is never hashed twice (nor once, unless its size is a
    shared file's)."""
    by_name = landcover_split(folder_name(path)) if landcover else buildings_split(*scene_area(path))
    if by_name == "train" or shared_scene(path) is not None:
        return None
    return (f"{raster_name(path)} is named like the shared data's {by_name} ground but is not one of its files: "
            f"its chips go to train (--split {by_name} to hold it out)")
