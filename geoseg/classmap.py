"""The land-cover class map: blended probabilities back on the input's exact grid, as a COG.

Why: heads run on a working grid (the card's GSD); users need ``classmap.tif`` on the input's own
grid (same CRS, transform, size), 0 outside the valid mask, with a colour table and class names
so that GIS tools show it (not a black 0..5 raster), and ``classmap.qml`` beside it, the style
QGIS loads by default (its legend then names the classes instead of listing 256 palette values).
"""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT

from geoseg.classmap_confidence import ConfidenceTally
from geoseg.tiled_inference import HeadResult
from tiles.cog import colormap_from_hex, write_cog
from tiles.grid import tile_grid
from tiles.qml import write_paletted_qml
from tiles.rasterpath import RasterPath
from tiles.source import Scene
from tiles.warp import axis_aligned, bilinear_window

__all__ = ["BLOCKS_SHARE", "band_description", "write_classmap"]

#: the part of the class map's progress that its blocks take; the rest is the COG copy with its
#: overviews, which says nothing while it runs (0.17-0.30 of the stage on zanzibar_z20_1,
#: nairobi_z21_1 and zanzibar_z21_1)
BLOCKS_SHARE = 0.8


def write_classmap(
    input_path: RasterPath, head: HeadResult, grid: dict, card: dict, work: Path, out_path: Path,
    progress: Callable[[float], None], confidence: ConfidenceTally | None = None,
) -> dict[str, int]:
    """Argmax land cover on the input's exact grid, 0 outside the valid mask; a COG with colours.
    Returns the pixels per class; ``confidence``, when given, tallies each block's maximum class
    probability over the pixels the map labels (``geoseg.classmap_confidence``)."""
    classes = card["classes"]
    width, height = grid["width"], grid["height"]
    profile = dict(driver="GTiff", width=width, height=height, count=1, dtype="uint8", nodata=0,
                   tiled=True, blockxsize=512, blockysize=512, compress="deflate", BIGTIFF="IF_SAFER")
    if grid["crs"] is not None:
        profile["crs"] = grid["crs"]
    # an input without a geotransform (a PNG, a JPEG) gives a class map without one too: written as
    # the identity (rows downwards), GIS tools drew it upside down beside the input; one placed by
    # GCPs or RPCs gives them to the class map, which GIS tools then place as they place the input
    pixel_grid = grid["crs"] is None and grid["transform"].is_identity
    if not pixel_grid:
        profile["transform"] = grid["transform"]
    counts = np.zeros(len(classes), dtype=np.int64)
    names = {str(c["index"]): c["name"] for c in classes}
    names["0"] = "nodata"
    plain = work / "classmap_plain.tif"
    vrt = probs_ds = None
    # same CRS, both grids unrotated: resample straight from the accumulators, no GDAL warp
    separable = head.warped and grid["crs"] == head.crs and axis_aligned(head.transform, grid["transform"])
    if head.warped and not separable:
        probs_path = work / "landcover_probs.tif"
        head.writer.finalise(probs_path=probs_path, probs_dtype="uint8")
        probs_ds = rasterio.open(probs_path)
        vrt = WarpedVRT(probs_ds, crs=grid["crs"], transform=grid["transform"], width=width, height=height,
                        resampling=Resampling.bilinear, nodata=0)
    blocks = tile_grid(width, height, 1024, 0)
    try:
        # the valid mask of the bands the heads read
        with Scene(input_path, bands=grid.get("bands")) as native, rasterio.open(plain, "w", **profile) as dst:
            if pixel_grid:
                _copy_ground_control(input_path, dst)
            dst.set_band_description(1, band_description(names))
            for i, block in enumerate(blocks):
                win = block.core
                _, valid = native.read(win)
                if separable:
                    probs, inside = bilinear_window(lambda w: head.writer.read(w)[0], (head.height, head.width),
                                                    head.transform, grid["transform"], win)
                    covered = inside & (probs.sum(axis=0) > 0)
                elif vrt is not None:
                    probs = vrt.read(window=win).astype(np.float32)
                    covered = probs.sum(axis=0) > 0
                else:
                    probs, covered = head.writer.read(win)
                out = np.argmax(probs, axis=0).astype(np.uint8)
                out[~(valid & covered)] = 0
                if confidence is not None:
                    confidence.add(probs, valid & covered)
                counts += np.bincount(out.ravel(), minlength=len(classes))[: len(classes)]
                dst.write(out, 1, window=win)
                progress(BLOCKS_SHARE * (i + 1) / len(blocks))
    finally:
        if vrt is not None:
            vrt.close()
            probs_ds.close()
    colours = [c["colour"] for c in sorted(classes, key=lambda c: c["index"])]
    colormap = colormap_from_hex(colours, nodata=None)
    colormap[0] = (0, 0, 0, 0)  # 0 = no data / outside the valid mask
    tags = {"classes": json.dumps(names), "model": card.get("name", ""), "nodata_class": "0"}
    write_cog(plain, out_path, colormap=colormap, tags=tags)
    # classmap.qml: QGIS's default style for classmap.tif, the classes by name (0 = no data left out)
    write_paletted_qml(out_path, [(i, names[str(i)], colormap[i]) for i in range(1, len(classes))])
    progress(1.0)
    return {names[str(i)]: int(n) for i, n in enumerate(counts)}


def band_description(names: dict[str, str]) -> str:
    """What the class map's band holds, for GIS tools' band lists (QGIS showed "Band 1"): its
    values and their classes, e.g. "land-cover class: 1 building, 2 road, ...; 0 nodata"."""
    classes = ", ".join(f"{i} {name}" for i, name in sorted(((int(k), v) for k, v in names.items()), key=lambda c: c[0])
                        if i != 0)
    return f"land-cover class: {classes}; 0 {names['0']}"


def _copy_ground_control(input_path: RasterPath, dst: rasterio.io.DatasetWriter) -> None:
    """The input's GCPs or RPCs, if any, onto the class map of its pixel grid (same pixels, same places)."""
    with rasterio.open(input_path) as src:
        gcps, gcp_crs = src.gcps
        rpcs = src.rpcs
    if gcps:
        dst.gcps = (gcps, gcp_crs)
    elif rpcs:
        dst.rpcs = rpcs
