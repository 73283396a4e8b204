"""Tiling engine: windowed reading, GSD, masks, labels, chips, blending, COGs, batch runs (no torch).

The main names import from the package itself (``from tiles import Scene, tile_grid, BlendingWriter``;
docs/tiling.md has the whole inference loop). They are loaded on first use, not at ``import tiles``:
``tiles.splits`` must import where rasterio is not installed (the GPU machine), and ``geoseg --help``
must not pay for loading rasterio and GDAL.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from tiles.georeferencing_warnings import ignore_georeferencing_warnings

# once, at import, before any thread runs (tiles/georeferencing_warnings.py says why not at run time)
ignore_georeferencing_warnings()

#: public name -> the module that defines it
_EXPORTS = {
    "Scene": "tiles.source",
    "UnsupportedRaster": "tiles.errors",
    "Tile": "tiles.grid",
    "tile_grid": "tiles.grid",
    "BlendingWriter": "tiles.stitch",
    "warp_to_grid": "tiles.warp",
    "scene_source_grid": "tiles.warp",
    "write_cog": "tiles.cog",
    "colormap_from_hex": "tiles.cog",
    "is_valid_cog": "tiles.cog",
    "gsd_m": "tiles.gsd",
    "LabelIndex": "tiles.labels",
    "ChipOptions": "tiles.chips",
    "ChipRecord": "tiles.chips",
    "building_chips": "tiles.chips",
    "landcover_chips": "tiles.chips",
    "write_index": "tiles.chips",
    "MosaicError": "tiles.mosaic",
    "plan_mosaic": "tiles.mosaic",
    "write_vrt": "tiles.mosaic",
    "BatchReport": "tiles.batch",
    "run_batch": "tiles.batch",
}

__all__ = [
    "BatchReport", "BlendingWriter", "ChipOptions", "ChipRecord", "LabelIndex", "MosaicError", "Scene", "Tile",
    "UnsupportedRaster", "building_chips", "colormap_from_hex", "gsd_m", "is_valid_cog", "landcover_chips",
    "plan_mosaic", "run_batch", "scene_source_grid", "tile_grid", "warp_to_grid", "write_cog", "write_index",
    "write_vrt",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tiles' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # what type checkers and IDEs see; at run time __getattr__ loads them
    from tiles.batch import BatchReport, run_batch
    from tiles.chips import (
        ChipOptions,
        ChipRecord,
        building_chips,
        landcover_chips,
        write_index,
    )
    from tiles.cog import colormap_from_hex, is_valid_cog, write_cog
    from tiles.errors import UnsupportedRaster
    from tiles.grid import Tile, tile_grid
    from tiles.gsd import gsd_m
    from tiles.labels import LabelIndex
    from tiles.mosaic import MosaicError, plan_mosaic, write_vrt
    from tiles.source import Scene
    from tiles.stitch import BlendingWriter
    from tiles.warp import scene_source_grid, warp_to_grid
