"""Bring a raster computed on the working (target-GSD) grid back to the input's grid.

Why: users expect outputs that overlay their input pixel for pixel, whatever GSD the
model ran at. ``warp_to_grid`` reads the working raster through a ``WarpedVRT`` set to
the destination grid and writes the destination window by window (never the whole
scene in memory). Use nearest resampling for class maps, bilinear for probabilities.
When the grids already match, the file is copied block by block unchanged.

``bilinear_window`` is the fast path for the common case of two north-up grids in one
CRS that differ only in pixel size and origin (a working grid made by
``tiles.source.working_grid``): the resampling is separable, so it is two 1-D linear
interpolations in numpy over an array in memory, about ten times cheaper than GDAL's
warper reading a file through a WarpedVRT.

Usage::

    with Scene(path, gsd=0.3) as scene:
        ...  # predict on scene's grid -> work_classes.tif
        warp_to_grid("work_classes.tif", "classes.tif", *scene_source_grid(scene))
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from tiles.grid import tile_grid

if TYPE_CHECKING:  # tiles.source imports much more than this module needs
    from tiles.source import Scene

__all__ = ["warp_to_grid", "scene_source_grid", "axis_aligned", "bilinear_window"]

#: reads a window of the source grid -> (bands, h, w) float32 values (0 where there is no data)
WindowReader = Callable[[Window], np.ndarray]


def scene_source_grid(scene: Scene) -> tuple[CRS | None, Affine, int, int]:
    """(crs, transform, width, height) of a ``tiles.source.Scene``'s own file grid."""
    return scene.crs, scene.src_transform, scene.src_width, scene.src_height


def warp_to_grid(src_path: str | Path, dst_path: str | Path, crs: CRS | str | None, transform: Affine, width: int,
                 height: int, resampling: Resampling = Resampling.nearest, block: int = 1024) -> Path:
    """Resample ``src_path`` onto the grid (crs, transform, width, height) into a tiled GeoTIFF.

    Destination pixels outside the source get the source nodata (0 if it has none). When writing
    fails, ``dst_path`` is removed.
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
        except BaseException:  # a half-written raster must not pass for a finished one
            dst_path.unlink(missing_ok=True)
            raise
        finally:
            if reader is not src:
                reader.close()
    return dst_path


def _colormap(ds) -> dict | None:
    try:
        return ds.colormap(1)
    except ValueError:
        return None


def axis_aligned(src_transform: Affine, dst_transform: Affine) -> bool:
    """True when both grids are unrotated, so one maps onto the other axis by axis."""
    return all(abs(t.b) < 1e-12 and abs(t.d) < 1e-12 for t in (src_transform, dst_transform))


def _linear_taps(coords: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Two source indices, the weight of the second, and whether each coordinate lies on the source."""
    inside = (coords >= -0.5) & (coords < length - 0.5)
    c = np.clip(coords, 0.0, length - 1.0)
    i0 = np.minimum(np.floor(c).astype(np.int64), length - 1)
    i1 = np.minimum(i0 + 1, length - 1)
    return i0, i1, (c - i0).astype(np.float32), inside


def bilinear_window(read: WindowReader, src_shape: tuple[int, int], src_transform: Affine,
                    dst_transform: Affine, window: Window) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear values of the source grid at the pixel centres of ``window`` of the destination grid.

    Both grids must be in the same CRS and :func:`axis_aligned`. Returns ``(values (bands, h, w)
    float32, inside (h, w) bool)``: ``inside`` is False where a centre falls off the source raster
    (those values are 0); centres within half a pixel of the source edge take the edge pixels.
    """
    src_h, src_w = src_shape
    r0, c0 = int(window.row_off), int(window.col_off)
    h, w = int(window.height), int(window.width)
    cols = (dst_transform.c + (np.arange(c0, c0 + w) + 0.5) * dst_transform.a - src_transform.c) / src_transform.a - 0.5
    rows = (dst_transform.f + (np.arange(r0, r0 + h) + 0.5) * dst_transform.e - src_transform.f) / src_transform.e - 0.5
    ci0, ci1, cw, c_in = _linear_taps(cols, src_w)
    ri0, ri1, rw, r_in = _linear_taps(rows, src_h)
    inside = r_in[:, None] & c_in[None, :]
    top, bottom = int(min(ri0.min(), ri1.min())), int(max(ri0.max(), ri1.max())) + 1
    left, right = int(min(ci0.min(), ci1.min())), int(max(ci0.max(), ci1.max())) + 1
    data = np.asarray(read(Window(left, top, right - left, bottom - top)), dtype=np.float32)
    ri0, ri1, ci0, ci1 = ri0 - top, ri1 - top, ci0 - left, ci1 - left
    # lo + (hi - lo) * w, in place on the gathered copies: two full-size temporaries instead
    # of five (the class map of a 0.3 m scene: 6 bands x 1024^2 per block; ~2x faster)
    lo = data[:, ri0, :]
    by_rows = data[:, ri1, :]
    by_rows -= lo
    by_rows *= rw[None, :, None]
    by_rows += lo
    out = np.take(by_rows, ci0, axis=2)
    hi = np.take(by_rows, ci1, axis=2)
    hi -= out
    hi *= cw
    out += hi
    out[:, ~inside] = 0.0
    return out, inside
