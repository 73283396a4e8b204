"""Cloud-Optimised GeoTIFFs with overviews, colour tables and tags.

Why: class maps with values 0..6 and no colour table look black in GIS, and COGs
without overviews are slow to serve. ``write_cog`` turns a finished (tiled) raster
into a validated COG via rio-cogeo: DEFLATE, 512 px blocks, internal overviews
(nearest for class maps so no invented classes, average for continuous data),
optional colour table on band 1 and free-form tags (model, classes, version...).

Usage::

    write_cog("classes_tmp.tif", "classmap.tif", colormap=colormap_from_hex(["#000000", "#ff0000"]),
              tags={"classes": '["background","building"]'})
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import rasterio
import rasterio.shutil
from rasterio.enums import ColorInterp
from rio_cogeo.cogeo import cog_translate, cog_validate
from rio_cogeo.profiles import cog_profiles

__all__ = ["check_tags", "colormap_from_hex", "is_pixel_grid", "is_valid_cog", "overview_levels", "write_cog"]


def colormap_from_hex(colours: list[str], nodata: int | None = 255) -> dict[int, tuple[int, int, int, int]]:
    """GDAL colour table {index: (r, g, b, a)} from '#rrggbb' strings, one per class; ``nodata`` transparent.

    Raises ``ValueError`` for a colour that is not #rrggbb, more than the 256 entries of a uint8 table,
    and a ``nodata`` index that is a class (its colour was replaced by transparent without a word).
    """
    if isinstance(colours, str):  # a lone string was read character by character ('#' is not #rrggbb)
        raise TypeError(f"colours must be a list of '#rrggbb' strings, one per class, got the string {colours!r}")
    if len(colours) > 256:
        raise ValueError(f"{len(colours)} colours: a uint8 class map's colour table holds 256")
    if nodata is not None and nodata < len(colours):
        raise ValueError(f"nodata {nodata} is the index of class {nodata} (of {len(colours)} colours): "
                         f"pick a nodata past the classes, or nodata=None")
    table = {}
    for i, hexcol in enumerate(colours):
        h = hexcol.lstrip("#")
        if len(h) != 6 or not all(c in "0123456789abcdefABCDEF" for c in h):
            raise ValueError(f"colour {hexcol!r} is not #rrggbb")
        table[i] = (int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16), 255)
    if nodata is not None:
        table[nodata] = (0, 0, 0, 0)
    return table


def write_cog(src_path: str | Path, dst_path: str | Path, colormap: dict | None = None,
              tags: dict[str, str] | None = None, resampling: str | None = None) -> Path:
    """Write ``src_path`` as a COG at ``dst_path`` (atomically: temp file then rename).

    ``src_path`` is taken for a work file and changed: ``colormap`` is written into it first (band 1
    becomes a palette band), and so are ``tags`` for a source without a geotransform. Give it a
    scratch copy of a file you keep (a COG you made before cannot be the source: GDAL refuses to
    break its layout).

    ``resampling`` for overviews defaults to "nearest" for integer data and
    "average" for float data. Overviews halve the raster until its longer side fits one
    512 px block (GDAL's COG driver does the same): rio-cogeo's default stops when the
    *shorter* side fits, so a 634 x 411 map or a 8192 x 400 strip had none at all.

    A source without a geotransform (``is_pixel_grid``: no CRS, identity transform) is copied by
    GDAL's COG driver, which writes no geotransform where the source has none and keeps its GCPs
    or RPCs.
    """
    src_path, dst_path = Path(src_path), Path(dst_path)
    check_tags(tags)
    if colormap is not None:
        # the colour table goes into the source (a work file), which rio-cogeo then copies: given to
        # cog_translate, it warns "color interpretation was set to Palette", and silencing that with
        # warnings.catch_warnings is not thread-safe (the class map is written on a thread beside the
        # building model: tiles/georeferencing_warnings.py says why)
        with rasterio.open(src_path, "r+") as src:
            src.write_colormap(1, colormap)
            src.colorinterp = [ColorInterp.palette] + list(src.colorinterp[1:])
    tmp = dst_path.with_name(dst_path.name + ".part")
    try:
        with rasterio.open(src_path) as src:
            dtype = src.dtypes[0]
            if resampling is None:
                resampling = "average" if dtype.startswith("float") else "nearest"
            profile = cog_profiles.get("deflate")
            profile.update(blockxsize=512, blockysize=512)
            if dtype.startswith("float"):
                profile["predictor"] = 3
            levels = overview_levels(src.width, src.height, 512)
            pixel_grid = is_pixel_grid(src)
            if not pixel_grid:
                cog_translate(src, str(tmp), profile, additional_cog_metadata=tags or None,
                              overview_resampling=resampling, overview_level=levels, in_memory=False, quiet=True,
                              use_cog_driver=False)
        if pixel_grid:  # without a geotransform: GDAL's COG driver keeps it so
            _copy_pixel_grid_cog(src_path, tmp, tags, resampling, levels)
    except BaseException:  # a half-written file must not stay beside the output
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(dst_path)
    return dst_path


def is_pixel_grid(src: rasterio.io.DatasetReader) -> bool:
    """True for a raster without a geotransform: no CRS and the identity transform (what rasterio
    reports for a PNG, or for a raster placed by ground control points or RPCs only)."""
    return src.crs is None and src.transform.is_identity


def _copy_pixel_grid_cog(src_path: Path, dst: Path, tags: dict[str, str] | None, resampling: str,
                         levels: int) -> None:
    """The COG of a raster without a geotransform, by GDAL's COG driver, which leaves it out as the
    source has none, and copies the source's GCPs or RPCs, if any, as they are.

    Why: rio-cogeo copies through a WarpedVRT, which wrote the identity transform (pixel size +1,
    rows downwards) into such a file, and warps a raster that has GCPs onto a new grid. GIS tools
    placed the first as a georeferenced south-up raster: QGIS draws a file without a geotransform
    at y 0..-height, and that one flipped at y 0..+height, so the class map of a PNG lay upside
    down beside it.
    """
    options: dict[str, str | int] = {"BLOCKSIZE": 512, "COMPRESS": "DEFLATE", "BIGTIFF": "IF_SAFER",
                                     "OVERVIEW_RESAMPLING": resampling.upper()}
    options |= {"OVERVIEW_COUNT": levels} if levels else {"OVERVIEWS": "NONE"}
    # the tags go into the source (a work file), which the driver copies, as rio-cogeo writes them
    with rasterio.open(src_path, "r+") as work:
        work.update_tags(**(tags or {}), OVERVIEW_RESAMPLING=resampling.upper())
        if work.dtypes[0].startswith("float"):
            options["PREDICTOR"] = "FLOATING_POINT"
    rasterio.shutil.copy(src_path, dst, driver="COG", **options)


def check_tags(tags: Mapping[str, str] | None) -> None:
    """Refuse tags that are not a mapping of str to str, naming the culprit.

    Why: rio-cogeo fails deep inside (``dict.update() argument after ** must be a mapping``) on a
    set such as ``{...}`` or a list of pairs, and GDAL stores a number as its ``str()``, which the
    reader then gets back as a string it did not write.
    """
    if tags is None:
        return
    if not isinstance(tags, Mapping):
        raise TypeError(f"tags must be a mapping of str to str (e.g. {{'classes': json.dumps(names)}}), "
                        f"got {type(tags).__name__}")
    bad = {k: v for k, v in tags.items() if not (isinstance(k, str) and isinstance(v, str))}
    if bad:
        shown = ", ".join(f"{k!r}: {type(v).__name__}" for k, v in list(bad.items())[:3])
        raise TypeError(f"tags must map str to str (serialise other values, e.g. with json.dumps): {shown}")


def overview_levels(width: int, height: int, block: int = 512) -> int:
    """How many 2x overviews it takes for the longer side to fit one ``block``, as long as the
    shorter side still halves (a 1-pixel-wide column's overviews would all be 1 pixel wide: GDAL's
    COG check then reads a decimation of 1 and calls the file invalid)."""
    levels = 0
    while max(width, height) > block << levels and min(width, height) >= 2 << levels:
        levels += 1
    return levels


def is_valid_cog(path: str | Path) -> bool:
    """True when GDAL's COG rules hold (tiled, overviews after the main image, ...)."""
    valid, _errors, _warnings = cog_validate(str(path), quiet=True)
    return bool(valid)
