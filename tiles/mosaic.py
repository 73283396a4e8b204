"""Adjacent rasters read as one scene: a GDAL VRT mosaic over them.

Why: orthophotos are delivered as grids of tiles (a city as 1 km GeoTIFFs, XYZ tiles mosaicked
into blocks). Predicted one by one, a building crossing a tile line becomes two polygons cut at
it and the class maps are separate files. A VRT makes the tiles one raster that GDAL reads
window by window, so the single-scene pipeline (tile overlap, blending, building separation,
nodata, memory bounds) runs across the tile lines unchanged.

``plan_mosaic`` checks, before any work, that the rasters can share one pixel grid (one CRS,
north-up, the same pixel size and pixel grid, band count, data type, nodata, and the same bands
read as red, green, blue) and
places each on it; ``write_vrt`` writes the VRT. Gaps (a missing tile, tiles that do not cover
a rectangle) are invalid pixels: with a nodata value the VRT's bands start as nodata, else the
VRT gets a mask band made of each tile's own mask (0 where no tile lies), so RGB tiles without
nodata or alpha have their gaps masked too. Where tiles overlap, the last listed wins where it
has valid pixels (its nodata and masked pixels are transparent: the collars of reprojected tiles
do not hide their neighbours), as in ``gdalbuildvrt``. Paletted tiles (one band of colour-table
indices) are read as the RGBA their colour tables give, as a single paletted raster is
(``tiles.palette``): their VRT sources take each component from the tile's own table
(``ColorTableComponent``, what ``gdalbuildvrt -expand``-like VRTs hold), so tiles with different
tables mosaic, their nodata index and transparent entries are invalid. uint8 RGB tiles mix with
RGBA ones (paletted tiles included: edge tiles warped with an alpha band beside interior tiles with
a mask or none): the mosaic is RGBA, an RGB tile's alpha its own mask.

No ``osgeo`` bindings are needed: the VRT is XML written here.
"""
from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
import rasterio
import shapely
from affine import Affine
from rasterio.enums import ColorInterp
from rasterio.errors import RasterioIOError

from tiles.errors import UnsupportedRaster
from tiles.normalize import BandChoice, check_has_bands, select_bands
from tiles.palette import EXPANDED_COLORINTERP, is_paletted
from tiles.rasterpath import RasterPath, absolute_raster_path, is_virtual, raster_name

__all__ = ["GRID_TOLERANCE_PX", "MOSAIC_VRT", "Mosaic", "MosaicError", "MosaicTile", "plan_mosaic", "write_vrt"]

#: how far (in pixels) a tile's corners may sit from the mosaic's pixel grid: the VRT places
#: each tile on whole pixels, so this is the most a tile's pixels move
GRID_TOLERANCE_PX = 0.1

#: the VRT's name in ``geoseg predict --mosaic``'s output folder
MOSAIC_VRT = "mosaic.vrt"


class MosaicError(ValueError):
    """Rasters that cannot be read as one mosaic; the message names the file and what differs."""


@dataclass(frozen=True)
class MosaicTile:
    """One input raster and where it lies on the mosaic's pixel grid."""

    path: RasterPath
    col: int
    row: int
    width: int
    height: int
    block: tuple[int, int]  # (x, y) block size of band 1, for the VRT's source properties
    #: a paletted tile: its one band of indices is read through its colour table, as RGBA
    paletted: bool = False
    #: a paletted tile's nodata index (its pixels are left out: (0, 0, 0, 0), invalid)
    index_nodata: float | None = None
    #: an RGB tile in an RGBA mosaic: its alpha band is its mask
    alpha_from_mask: bool = False


@dataclass(frozen=True)
class _BandsRead:
    """A raster's bands as the mosaic reads them: a paletted band as the RGBA of its colour table."""

    count: int
    dtype: str
    nodata: float | None
    colorinterp: tuple
    descriptions: tuple
    paletted: bool

    @classmethod
    def of(cls, src) -> _BandsRead:
        if is_paletted(src):  # the expansion has no nodata value: the alpha says where there is none
            return cls(4, "uint8", None, EXPANDED_COLORINTERP, ("",) * 4, True)
        return cls(src.count, src.dtypes[0], src.nodata, tuple(src.colorinterp), tuple(src.descriptions), False)

    def count_text(self) -> str:
        return f"{self.count} (a paletted band read as RGBA)" if self.paletted else str(self.count)

    @property
    def rgba(self) -> bool:
        """uint8 red, green, blue and a last band of alpha (a paletted band's expansion included)."""
        return self.count == 4 and self.dtype == "uint8" and self.colorinterp[3] == ColorInterp.alpha

    @property
    def rgb(self) -> bool:
        """Three uint8 bands, none of them alpha."""
        return self.count == 3 and self.dtype == "uint8" and ColorInterp.alpha not in self.colorinterp


def _rgb_and_rgba(a: _BandsRead, b: _BandsRead) -> bool:
    """Whether ``a`` and ``b`` are RGB and RGBA, which mosaic as RGBA (the RGB tile's alpha its mask)."""
    return (a.rgb and b.rgba) or (a.rgba and b.rgb)


@dataclass(frozen=True)
class Mosaic:
    """The mosaic's grid and its tiles (in the order given: the last listed wins where they overlap)."""

    tiles: tuple[MosaicTile, ...]
    crs: rasterio.crs.CRS | None
    transform: Affine
    width: int
    height: int
    dtype: str
    count: int
    nodata: float | None
    colorinterp: tuple
    descriptions: tuple

    @property
    def covered_fraction(self) -> float:
        """Share of the mosaic's rectangle that some tile covers (the rest is nodata)."""
        boxes = [shapely.box(t.col, t.row, t.col + t.width, t.row + t.height) for t in self.tiles]
        return float(shapely.union_all(boxes).area) / (self.width * self.height)

    def summary(self) -> dict:
        """What report.json says of the mosaic: its inputs in order, where each lies on the mosaic's
        grid (column, row, width, height), the share of the rectangle they cover, the pairs that overlap."""
        return {"inputs": [mosaic_source_name(t.path) for t in self.tiles],
                "placement": [[t.col, t.row, t.width, t.height] for t in self.tiles],
                "covered_fraction": round(self.covered_fraction, 6),
                "overlapping": [[mosaic_source_name(a), mosaic_source_name(b)] for a, b in self.overlaps()]}

    def overlaps(self) -> list[tuple[RasterPath, RasterPath]]:
        """Pairs (earlier, later) of tiles that share pixels: the later one's pixels are read there."""
        boxes = np.array([shapely.box(t.col, t.row, t.col + t.width, t.row + t.height) for t in self.tiles])
        first, second = shapely.STRtree(boxes).query(boxes, predicate="intersects")
        pairs = sorted({(int(i), int(j)) for i, j in zip(first, second)
                        if i < j and shapely.intersection(boxes[i], boxes[j]).area > 0})  # not just an edge
        return [(self.tiles[i].path, self.tiles[j].path) for i, j in pairs]


def input_at(summary: dict, cols: np.ndarray, rows: np.ndarray, fallback: str) -> list[str]:
    """The input each point (``cols``, ``rows``: pixel coordinates on the mosaic's grid) lies on,
    from ``Mosaic.summary``: the last listed that covers it, as the VRT reads the last listed where
    tiles overlap; ``fallback`` for a point on none. Why: a building layer over a whole delivery
    should say which image each building came from (its date, its sensor), as one scene's says."""
    names = np.full(len(cols), fallback, dtype=object)
    for name, (col, row, width, height) in zip(summary["inputs"], summary["placement"]):
        names[(cols >= col) & (cols < col + width) & (rows >= row) & (rows < row + height)] = name
    return names.tolist()


def _same_nodata(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return (math.isnan(a) and math.isnan(b)) or a == b


def _grid_offset(value: float) -> float:
    """Distance of ``value`` (in pixels) from the nearest whole pixel."""
    return abs(value - round(value))


def _open(path: RasterPath):
    try:
        return rasterio.open(path)
    except RasterioIOError as exc:
        raise MosaicError(f"{path}: cannot be opened as a raster ({' '.join(str(exc).split())})") from exc


def _check_alone(path: RasterPath, src) -> None:
    """What every raster of a mosaic needs on its own: bands, a north-up geotransform, one data type."""
    try:
        check_has_bands(src)
    except UnsupportedRaster as exc:
        raise MosaicError(f"{path}: {exc}") from exc
    t = src.transform
    if t.is_identity:  # GDAL's reading of a missing geotransform, with or without a CRS
        kind = "ground control points" if src.gcps[0] else "RPCs" if src.rpcs else None
        if kind:
            raise MosaicError(f"{path}: georeferenced by {kind} only, so its place in the mosaic is unknown; "
                              f"warp it first (gdalwarp{' -rpc' if kind == 'RPCs' else ''} in.tif out.tif)")
        raise MosaicError(f"{path}: not georeferenced (no geotransform), so its place in the mosaic is unknown")
    if not (t.b == 0 and t.d == 0 and t.a > 0 and t.e < 0):
        raise MosaicError(f"{path}: not a north-up grid (geotransform {tuple(round(v, 6) for v in t[:6])}): "
                          f"a mosaic needs north-up tiles; warp it first (gdalwarp in.tif out.tif)")
    if len(set(src.dtypes)) > 1:  # a VRT band has one type
        raise MosaicError(f"{path}: bands of different data types ({', '.join(src.dtypes)}) cannot be mosaicked")


def plan_mosaic(paths: Sequence[RasterPath], bands: tuple[int, ...] | None = None,
                tolerance_px: float = GRID_TOLERANCE_PX) -> Mosaic:
    """Check that ``paths`` can be one mosaic and place each on its grid (the first one's pixel grid,
    grown to hold them all). Raises ``MosaicError`` naming the first file that differs from the first
    one, and how; nothing is read but headers. ``bands`` (1-based, ``--bands``; None: each raster's
    own choice, ``tiles.normalize.select_bands``) must pick the same bands from every raster: the
    mosaic carries the first one's colour labels and band descriptions."""
    if not paths:
        raise MosaicError("a mosaic needs at least one raster")
    placed: list[tuple[RasterPath, Affine, int, int, tuple[int, int], _BandsRead, float | None]] = []
    ref = ref_path = None
    for path in paths:
        with _open(path) as src:
            _check_alone(path, src)
            read = _BandsRead.of(src)
            if ref is None:
                ref, ref_path = {"transform": src.transform, "crs": src.crs, "read": read,
                                 "bands": _band_choice(path, read, bands)}, path
            else:
                _check_like(path, src, read, ref, ref_path, bands, tolerance_px)
            placed.append((path, src.transform, src.width, src.height, tuple(src.block_shapes[0][::-1]), read,
                           src.nodata))
    rx, ry = ref["transform"].a, ref["transform"].e  # ry < 0
    x0, y0 = ref["transform"].c, ref["transform"].f
    # the mosaic's corner: the first tile's pixel grid, moved to the top-left-most tile
    cols = [round((t.c - x0) / rx) for _, t, *_ in placed]
    rows = [round((t.f - y0) / ry) for _, t, *_ in placed]
    left, top = min(cols), min(rows)
    count = max(read.count for *_, read, _ in placed)  # 4 where RGB tiles mix with RGBA ones
    tiles = tuple(MosaicTile(path, c - left, r - top, w, h, block, read.paletted,
                             nodata if read.paletted else None, alpha_from_mask=read.count < count)
                  for (path, _, w, h, block, read, nodata), c, r in zip(placed, cols, rows))
    width = max(t.col + t.width for t in tiles)
    height = max(t.row + t.height for t in tiles)
    transform = Affine(rx, 0.0, x0 + left * rx, 0.0, ry, y0 + top * ry)
    first: _BandsRead = ref["read"]
    colorinterp = first.colorinterp if first.count == count else (*first.colorinterp, ColorInterp.alpha)
    descriptions = first.descriptions + ("",) * (count - first.count)
    return Mosaic(tiles=tiles, crs=ref["crs"], transform=transform, width=width, height=height,
                  dtype=first.dtype, count=count, nodata=first.nodata,
                  colorinterp=colorinterp, descriptions=descriptions)


def _band_choice(path: RasterPath, read: _BandsRead, bands: tuple[int, ...] | None) -> BandChoice:
    try:
        return select_bands(read.count, read.colorinterp, read.dtype, bands, read.descriptions)
    except UnsupportedRaster as exc:
        raise MosaicError(f"{path}: {exc}") from exc


def _check_like(path: RasterPath, src, read: _BandsRead, ref: dict, ref_path: RasterPath,
                bands: tuple[int, ...] | None, tolerance_px: float) -> None:
    """``src`` (at ``path``, its bands as ``read``) must share ``ref``'s grid and bands; else one line
    saying what differs."""
    name = raster_name(ref_path)

    def differs(what: str, mine, theirs, advice: str = "") -> MosaicError:
        return MosaicError(f"{path}: {what} {mine} differs from {theirs} in {name}, the first input"
                           f"{'; ' + advice if advice else ''}")

    crs = src.crs
    if (crs is None) != (ref["crs"] is None) or (crs is not None and crs != ref["crs"]):
        to = ref["crs"].to_string() if ref["crs"] else None
        raise differs("CRS", crs.to_string() if crs else "(none)", to or "(none)",
                      f"reproject it first (gdalwarp -t_srs {to} in.tif out.tif)" if to else "")
    first: _BandsRead = ref["read"]
    if read.count != first.count and not _rgb_and_rgba(read, first):
        raise differs("band count", read.count_text(), first.count_text(),
                      "expand the paletted tiles to the others' bands first (gdal_translate -expand rgb|rgba "
                      "in.tif out.tif)" if read.paletted != first.paletted else "")
    if read.dtype != first.dtype:
        raise differs("data type", read.dtype, first.dtype)
    if not _same_nodata(read.nodata, first.nodata):
        raise differs("nodata value", read.nodata, first.nodata)
    choice = _band_choice(path, read, bands)
    if choice.bands != ref["bands"].bands:  # colour labels may differ when they pick the same bands
        raise differs("bands read as red, green, blue", f"{','.join(map(str, choice.bands))} ({choice.source})",
                      f"{','.join(map(str, ref['bands'].bands))} ({ref['bands'].source})",
                      "name them with --bands")
    t, r = src.transform, ref["transform"]
    # the drift the pixel size difference makes across this tile, in the first input's pixels
    drift = max(abs(t.a - r.a) * src.width / r.a, abs(t.e - r.e) * src.height / abs(r.e))
    if drift > tolerance_px:
        raise differs("pixel size", f"{t.a:.6g} x {abs(t.e):.6g}", f"{r.a:.6g} x {abs(r.e):.6g}",
                      f"resample it onto one grid first (gdalwarp -tr {r.a:.12g} {abs(r.e):.12g} -tap in.tif out.tif)")
    dx, dy = _grid_offset((t.c - r.c) / r.a), _grid_offset((t.f - r.f) / r.e)
    if max(dx, dy) > tolerance_px:
        raise MosaicError(f"{path}: not on the pixel grid of {name}, the first input (off by {dx:.2f} px in x, "
                          f"{dy:.2f} px in y; at most {tolerance_px:g} px is snapped); resample it onto one grid "
                          f"first (gdalwarp -tr {r.a:.12g} {abs(r.e):.12g} -tap in.tif out.tif)")


_GDAL_TYPES = {"uint8": "Byte", "int8": "Int8", "uint16": "UInt16", "int16": "Int16", "uint32": "UInt32",
               "int32": "Int32", "uint64": "UInt64", "int64": "Int64", "float32": "Float32", "float64": "Float64",
               "complex64": "CFloat32", "complex128": "CFloat64", "complex_int16": "CInt16"}


def _source(tile: MosaicTile, band: str, dtype: str, transparent: str | None, component: int | None = None) -> str:
    """One source element: ``band`` of ``tile`` (``'1'``, or ``'mask,1'``: its mask) at its place.
    ``transparent``, the element that leaves the tile's invalid pixels out (``<NODATA>``, or
    ``<UseMaskBand>``) so that they never hide an earlier tile's valid ones, makes it a
    ``ComplexSource``; None (no tile overlaps another), a ``SimpleSource``, which GDAL reads up to
    twice as fast (1024 tiles of 32 px warped to a quarter: 0.19 s against 0.38 s). ``component``
    (1-4: red, green, blue, alpha) reads a paletted band through its colour table (a ``ComplexSource``)."""
    path = str(absolute_raster_path(tile.path))
    bx, by = tile.block
    kind = "SimpleSource" if transparent is None and component is None else "ComplexSource"
    return (f"    <{kind}>\n"
            f"      <SourceFilename relativeToVRT=\"0\">{escape(path)}</SourceFilename>\n"
            f"      <SourceBand>{band}</SourceBand>\n"
            f"      <SourceProperties RasterXSize=\"{tile.width}\" RasterYSize=\"{tile.height}\" "
            f"DataType=\"{dtype}\" BlockXSize=\"{bx}\" BlockYSize=\"{by}\"/>\n"
            f"      <SrcRect xOff=\"0\" yOff=\"0\" xSize=\"{tile.width}\" ySize=\"{tile.height}\"/>\n"
            f"      <DstRect xOff=\"{tile.col}\" yOff=\"{tile.row}\" xSize=\"{tile.width}\" ySize=\"{tile.height}\"/>\n"
            + (f"      {transparent}\n" if transparent else "")
            + (f"      <ColorTableComponent>{component}</ColorTableComponent>\n" if component else "")
            + f"    </{kind}>\n")


def _paletted_source(tile: MosaicTile, component: int, overlapping: bool) -> str:
    """Component ``component`` (1-4: red, green, blue, alpha) of paletted ``tile``'s colour table, as
    ``vrt://?expand=rgba`` reads it: the nodata index left out (so (0, 0, 0, 0) there, and transparent
    where tiles overlap); without one, the tile's mask where tiles overlap."""
    if tile.index_nodata is not None:
        transparent = f"<NODATA>{_nodata_text(tile.index_nodata)}</NODATA>"
    else:
        transparent = "<UseMaskBand>true</UseMaskBand>" if overlapping else None
    return _source(tile, "1", "Byte", transparent, component)


def _band_source(tile: MosaicTile, band: int, dtype: str, transparent: str | None, overlapping: bool) -> str:
    """The source of ``tile`` in the mosaic's band ``band``: its own band, a component of its colour
    table (paletted), or its mask as the alpha band of an RGBA mosaic (an RGB tile; its 0s left out
    where tiles overlap, as the mask band's are)."""
    if tile.paletted:
        return _paletted_source(tile, band, overlapping)
    if tile.alpha_from_mask and band == 4:
        return _source(tile, "mask,1", dtype, "<NODATA>0</NODATA>" if overlapping else None)
    return _source(tile, str(band), dtype, transparent)


def _nodata_text(value: float) -> str:
    return "nan" if math.isnan(value) else repr(value)


def vrt_xml(mosaic: Mosaic) -> str:
    """The VRT of ``mosaic``: local tiles by absolute path (the VRT can be moved and opened in a GIS),
    virtual paths and URLs as given."""
    dtype = _GDAL_TYPES.get(mosaic.dtype)
    if dtype is None:
        raise MosaicError(f"data type {mosaic.dtype} cannot be mosaicked")
    t = mosaic.transform
    overlapping = bool(mosaic.overlaps())  # else no pixel has two sources: nothing to be transparent to
    parts = [f"<VRTDataset rasterXSize=\"{mosaic.width}\" rasterYSize=\"{mosaic.height}\">\n"]
    if mosaic.crs is not None:
        # no axis mapping attribute: GDAL then reads x, y in the traditional GIS order, as rasterio does
        parts.append(f"  <SRS>{escape(mosaic.crs.to_wkt())}</SRS>\n")
    parts.append(f"  <GeoTransform>{t.c!r}, {t.a!r}, {t.b!r}, {t.f!r}, {t.d!r}, {t.e!r}</GeoTransform>\n")
    for band in range(1, mosaic.count + 1):
        parts.append(f"  <VRTRasterBand dataType=\"{dtype}\" band=\"{band}\">\n")
        if mosaic.nodata is not None:
            parts.append(f"    <NoDataValue>{_nodata_text(mosaic.nodata)}</NoDataValue>\n")
        parts.append(f"    <ColorInterp>{mosaic.colorinterp[band - 1].name.capitalize()}</ColorInterp>\n")
        if mosaic.descriptions[band - 1]:
            parts.append(f"    <Description>{escape(mosaic.descriptions[band - 1])}</Description>\n")
        if not overlapping:
            transparent = None
        elif mosaic.nodata is not None:
            transparent = f"<NODATA>{_nodata_text(mosaic.nodata)}</NODATA>"
        else:  # the tile's own mask (GDAL >= 3.3)
            transparent = "<UseMaskBand>true</UseMaskBand>"
        parts.extend(_band_source(tile, band, dtype, transparent, overlapping) for tile in mosaic.tiles)
        parts.append("  </VRTRasterBand>\n")
    if mosaic.nodata is None:  # gaps must read invalid: a mask band of the tiles' masks, 0 elsewhere
        parts.append("  <MaskBand>\n  <VRTRasterBand dataType=\"Byte\">\n")
        # a tile's 0 (invalid) is transparent: the mask is valid wherever some tile is; a paletted
        # tile's mask is its colour table's alpha (its nodata index left out, so 0)
        parts.extend(_paletted_source(tile, 4, False) if tile.paletted
                     else _source(tile, "mask,1", "Byte", "<NODATA>0</NODATA>" if overlapping else None)
                     for tile in mosaic.tiles)
        parts.append("  </VRTRasterBand>\n  </MaskBand>\n")
    parts.append("</VRTDataset>\n")
    return "".join(parts)


def write_vrt(mosaic: Mosaic, path: Path) -> Path:
    """Write the VRT of ``mosaic`` to ``path`` (a temporary file renamed into place); returns ``path``."""
    path = Path(path)
    temp = path.with_name(f".{path.name}.partial")
    temp.write_text(vrt_xml(mosaic), encoding="utf-8")  # what GDAL reads an XML without a declaration as
    os.replace(temp, path)
    return path


def mosaic_source_name(path: RasterPath) -> str:
    """How a tile is listed (report.json): a local file by its absolute path, else as given."""
    return str(path) if is_virtual(path) else str(absolute_raster_path(path))

