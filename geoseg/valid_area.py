"""Cutting building polygons off the input raster's nodata pixels.

Why: buildings are found on the working grid, on the input's valid mask resampled there and
eroded by one pixel. That is not enough on the input grid: a working pixel coarser than the
input's spans input pixels on both sides of a nodata edge, and ``--regularize`` pushes walls
outwards by up to a tolerance. OSBS_029 (0.1 m, nodata 255, run at 0.3 m) had 141 building
pixels over nodata; kampala_z19_1 with ``--regularize``, 7. The polygons are therefore cut at the
input's own invalid pixels (GDAL's mask of the bands the models read, and non-finite floats),
traced exactly. Only blocks that hold a building are read, and an integer raster whose mask
says "all valid" is not read at all.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import shapely
from rasterio.enums import MaskFlags
from rasterio.windows import Window

from geoseg.polygonize import polygons_from_labels, through_affine
from tiles.grid import tile_grid
from tiles.masks import window_valid_mask
from tiles.normalize import dataset_bands
from tiles.palette import open_expanded

__all__ = ["all_valid", "cut_nodata"]


def all_valid(src, bands: tuple[int, ...]) -> bool:
    """Whether the header of ``src`` says its ``bands`` hold no invalid pixel (integers, and GDAL's mask
    "all valid": no nodata value, mask or alpha band): ``cut_nodata`` reads nothing of such a raster,
    and the cost model counts no cut (``geoseg.progress.StageWork.nodata_cut``)."""
    floating = np.issubdtype(np.dtype(src.dtypes[bands[0] - 1]), np.floating)
    every = src.mask_flag_enums  # one call: it builds every band's flags
    return not floating and all(MaskFlags.all_valid in every[b - 1] for b in bands)


def cut_nodata(geoms: np.ndarray, path: Path | str, block: int = 1024,
               bands: tuple[int, ...] | None = None) -> np.ndarray:
    """``geoms`` (in the input raster's CRS coordinates) minus the raster's invalid pixels.

    ``bands`` are those the models read (``--bands``; None: ``tiles.normalize.select_bands``'s choice):
    per-band nodata makes the mask depend on them. Geometries that meet no invalid pixel are
    returned as they are (the same objects).
    """
    geoms = np.asarray(geoms, dtype=object)
    if geoms.size == 0:
        return geoms
    with open_expanded(path) as src:  # a paletted raster's mask is its colour table's alpha
        bands = dataset_bands(src, bands).bands
        if all_valid(src, bands):
            return geoms
        floating = np.issubdtype(np.dtype(src.dtypes[bands[0] - 1]), np.floating)
        invalid = _invalid_polygons(src, bands, floating, geoms, block)
    if invalid.size == 0:
        return geoms
    hit_geom, hit_invalid = shapely.STRtree(invalid).query(geoms, predicate="intersects")
    order = np.argsort(hit_geom, kind="stable")
    hit_geom, hit_invalid = hit_geom[order], hit_invalid[order]
    starts = np.flatnonzero(np.r_[True, hit_geom[1:] != hit_geom[:-1]]) if hit_geom.size else hit_geom
    out = geoms.copy()
    for i, hits in zip(hit_geom[starts], np.split(hit_invalid, starts[1:])):  # one pass over the hits
        out[i] = shapely.difference(geoms[i], shapely.union_all(invalid[hits]))
    return out


def _invalid_polygons(src, bands: tuple[int, ...], floating: bool, geoms: np.ndarray, block: int) -> np.ndarray:
    """The invalid pixels of the blocks of ``src`` that some geometry reaches, as polygons in its CRS."""
    pixel_boxes = through_affine(shapely.envelope(geoms), ~src.transform)
    tree = shapely.STRtree(pixel_boxes)
    found = []
    for tile in tile_grid(src.width, src.height, block):
        window = tile.core
        col, row, w, h = int(window.col_off), int(window.row_off), int(window.width), int(window.height)
        if not tree.query(shapely.box(col, row, col + w, row + h), predicate="intersects").size:
            continue
        data = src.read(list(bands), window=window) if floating else None
        bad = ~window_valid_mask(src, Window(col, row, w, h), data, bands)
        if bad.any():
            polygons, _ = polygons_from_labels(bad.astype(np.int32), row_offset=row, col_offset=col)
            found.append(polygons)
    if not found:
        return np.empty(0, dtype=object)
    return through_affine(np.concatenate(found), src.transform)
