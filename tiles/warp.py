"""Bring a raster computed on the working (target-GSD) grid back to the input's grid.

Why: users expect outputs that overlay their input pixel for pixel, whatever GSD the
model ran at. ``warp_to_grid`` reads the working raster through a ``WarpedVRT`` set to
the destination grid and writes the destination window by window (never the whole
scene in memory). Use nearest resampling for class maps, bilinear for probabilities.
When the grids already match, the file is copied block by block unchanged.

Usage::

    with Scene(path, gsd=0.3) as scene:
        ...  # predict on scene's grid -> work_classes.tif
        warp_to_grid("work_classes.tif", "classes.tif", *scene_source_grid(scene))
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT

from tiles.grid import tile_grid

__all__ = ["warp_to_grid", "scene_source_grid"]


def scene_source_grid(scene) -> tuple:
    """(crs, transform, width, height) of a ``tiles.source.Scene``'s own file grid."""
    return scene.crs, scene.src_transform, scene.src_width, scene.src_height


def warp_to_grid(src_path: str | Path, dst_path: str | Path, crs, transform: Affine, width: int, height: int,
                 resampling: Resampling = Resampling.nearest, block: int = 1024) -> Path:
    """Resample ``src_path`` onto the grid (crs, transform, width, height) into a tiled GeoTIFF.

    Destination pixels outside the source get the source nodata (0 if it has none).
    """
    dst_path = Path(dst_path)
    with rasterio.open(src_path) as src:
        nodata = src.nodata
        profile = dict(driver="GTiff", width=width, height=height, count=src.count, dtype=src.dtypes[0],
                       tiled=True, blockxsize=512, blockysize=512, compress="deflate", BIGTIFF="IF_SAFER",
                       transform=transform, nodata=nodata)
        if crs is not None:
            profile["crs"] = crs
        same = (src.width, src.height) == (width, height) and src.transform.almost_equals(transform)
        if same:
            reader = src
        else:
            if src.crs is None or crs is None:
                raise ValueError("both grids need a CRS to be resampled onto each other")
            reader = WarpedVRT(src, crs=crs, transform=transform, width=width, height=height,
                               resampling=resampling, nodata=nodata if nodata is not None else 0)
        try:
            with rasterio.open(dst_path, "w", **profile) as dst:
                cmap = _colormap(src)
                if cmap:
                    dst.write_colormap(1, cmap)
                for tile in tile_grid(width, height, block, 0):
                    data = reader.read(window=tile.core)
                    dst.write(np.asarray(data), window=tile.core)
        finally:
            if reader is not src:
                reader.close()
    return dst_path


def _colormap(ds) -> dict | None:
    try:
        return ds.colormap(1)
    except ValueError:
        return None
