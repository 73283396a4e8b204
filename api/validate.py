"""Upload checks, run before a job is accepted: cheap, header-first, never a full read.

Order matters: signature, then GDAL header, then size limits (so a tiny sparse
file declaring 300000 x 300000 pixels is refused before any pixel is touched),
then georeferencing, bands and dtype, then the strip/tile sizes and extents from
the TIFF tags (too large to decode; past the end of the file), and finally one
block read at each end of the file to catch truncation.
"""
from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import rasterio
import tifffile
from rasterio.errors import RasterioError
from rasterio.windows import Window

from api.errors import chain_messages
from api.redact import redact_paths
from tiles.gsd import gsd_m, has_lonlat, lonlat_in_projected_crs
from tiles.lonlat_bounds import wgs84_bounds
from tiles.palette import is_paletted
from tiles.tiff_pages import LoopedTiff, tiff_pages

_CHUNK = 1024 * 1024
#: the first 4 bytes of a TIFF (classic or BigTIFF, either byte order)
TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_OTHER_FORMATS = {
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"GIF8": "a GIF image",
    b"%PDF": "a PDF document",
    b"PK\x03\x04": "a ZIP archive",
    b"\x00\x00\x00\x0cjP": "a JPEG 2000 image",
}
_CONVERT_HINT = ("Convert it to a georeferenced GeoTIFF first, e.g. "
                 "`gdal_translate -of COG -a_srs EPSG:<code> in out.tif`.")
USABLE_DTYPES = ("uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "float64")


class UploadRejected(Exception):
    """An upload we refuse: HTTP status and a message saying what is wrong and what to do."""

    def __init__(self, status_code: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail
        self.headers = headers


@dataclass(frozen=True)
class RasterLimits:
    max_side: int
    max_pixels: int
    #: one decoded strip or tile as stored (all bands when pixel-interleaved): a single-strip
    #: 30000 x 30000 file would need GBs
    max_block_bytes: int = 256 * 1024**2
    #: images (IFDs: full resolution, overviews, masks) in the file; a GeoTIFF has a few dozen. GDAL's
    #: first read of a file scans its chain in quadratic time: 10,000 took 86 s, 50,000 half an hour
    max_images: int = 1000
    #: strips or tiles of one image: a 1e9 px raster has ~15,000 tiles of 256 px, or ~95,000 one-row
    #: strips of three planes; 3.9 million 16 px tiles (an 86 MB upload) took 11 s and 0.5 GB to list
    max_blocks: int = 2**20
    #: bands: the service reads three, hyperspectral imagery has a few hundred; 20,000 (a 720 KB upload)
    #: took the upload check 100 s and 1.2 GB, and the worker's mask check an hour (TIFF allows 65,535)
    max_bands: int = 1024


def too_large_detail(max_bytes: int) -> str:
    """What a 413 for an upload past ``max_bytes`` says, whichever layer refuses it."""
    return (f"upload larger than the limit of {max_bytes} bytes; split the scene "
            "or ask the operator to raise GEOSEG_MAX_UPLOAD_MB")


def too_large(max_bytes: int) -> UploadRejected:
    """The 413 of an upload (a file part) past ``max_bytes``."""
    return UploadRejected(413, too_large_detail(max_bytes))


def copy_upload(source: BinaryIO, dest: Path, max_bytes: int) -> int:
    """Stream an upload to ``dest`` in 1 MiB chunks, refusing it past ``max_bytes``; fsync'd."""
    written = 0
    try:
        with open(dest, "wb") as out:
            while chunk := source.read(_CHUNK):
                written += len(chunk)
                if written > max_bytes:
                    raise too_large(max_bytes)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    return written


def check_signature(path: Path) -> None:
    """Refuse empty files and anything that is not a TIFF, naming what it looks like."""
    size = path.stat().st_size
    if size == 0:
        raise UploadRejected(400, "the uploaded file is empty; send a GeoTIFF in the multipart "
                                  "field 'file'")
    with open(path, "rb") as f:
        head = f.read(16)
    if head[:4] in TIFF_MAGIC:
        return
    for magic, what in _OTHER_FORMATS.items():
        if head.startswith(magic):
            raise UploadRejected(415, f"the file is {what}, not a GeoTIFF. {_CONVERT_HINT}")
    looks_text = all(32 <= b < 127 or b in (9, 10, 13) for b in head)
    what = "text" if looks_text else "not a TIFF (unknown signature)"
    raise UploadRejected(415, f"the file is {what}; only GeoTIFF uploads are accepted. {_CONVERT_HINT}")


def _crs_label(crs: rasterio.crs.CRS) -> str:
    epsg = crs.to_epsg()
    if epsg:
        return f"EPSG:{epsg}"
    authority = crs.to_authority()
    if authority:
        return ":".join(authority)
    name = re.search(r'^\w+\["([^"]+)"', crs.to_wkt())
    return name.group(1) if name else "custom"


def _crs_wkt(crs: rasterio.crs.CRS) -> str | None:
    """The WKT of a CRS without an authority code (``_crs_label`` names it only by its name, which
    may be ``unknown``: a custom transverse Mercator in US feet), so a client can tell what the
    scene is in; None for one named by its code."""
    return None if crs.to_epsg() or crs.to_authority() else crs.to_wkt()


def ground_sample_distance(src: rasterio.io.DatasetReader) -> float:
    """Metres per pixel at the scene centre, as ``geoseg predict`` measures it (``tiles.gsd.gsd_m``: the
    geometric mean of both pixel axes' geodesic lengths). The arithmetic mean said 0.385 m where the
    job's report.json said 0.352 m, for a lon/lat scene's 0.19 x 0.66 m pixels at 65 N."""
    gsd = gsd_m(src.crs, src.transform, src.width, src.height)
    if gsd is None or not np.isfinite(gsd) or gsd <= 0:
        raise ValueError("non-finite ground sample distance")
    return float(gsd)


def _bounds_wgs84(src: rasterio.io.DatasetReader) -> list[float] | None:
    """West, south, east, north as RFC 7946 writes a bbox (``tiles.lonlat_bounds``); None if unknown."""
    try:
        return [round(v, 7) for v in wgs84_bounds(src)]
    except Exception:  # noqa: BLE001 - e.g. geostationary corners off the globe
        return None


@dataclass(frozen=True)
class _PageLayout:
    """How one TIFF image (full resolution, overview or mask) is stored, from its tags."""

    chunk_width: int
    chunk_height: int
    chunk_bytes: int  # one strip or tile, decoded
    tiled: bool
    data_end: int  # the largest offset + byte count of its strips/tiles
    blocks: int  # strips or tiles, every plane's


def _read_layout(path: Path, max_images: int) -> list[_PageLayout]:
    """The real strip/tile layout of every image in the file, read from the TIFF tags; refused
    (422) past ``max_images`` images, before GDAL reads a pixel.

    GDAL cannot tell us this: it presents a big strip as 1-row virtual blocks, so
    ``block_shapes`` hides that decoding it needs the whole strip in memory.
    """
    try:
        layout = []
        with tifffile.TiffFile(path) as tif:
            for page in tiff_pages(tif):
                if len(layout) == max_images:
                    raise UploadRejected(422, f"the TIFF holds more than {max_images} images (full resolution, "
                                              "overviews, masks; a GeoTIFF has a few dozen), too many to read in "
                                              "reasonable time; keep the raster and its overviews: "
                                              "`gdal_translate -of COG in.tif out.tif`")
                chunk = tuple(int(n) for n in page.chunks)  # (rows, cols[, samples]); tiles may add depth
                bits = page.bitspersample if isinstance(page.bitspersample, int) else max(page.bitspersample)
                offsets = np.asarray(page.dataoffsets, dtype=np.int64)
                counts = np.asarray(page.databytecounts, dtype=np.int64)
                rows, cols = chunk[-3:-1] if page.samplesperpixel > 1 and page.planarconfig == 1 else chunk[-2:]
                layout.append(_PageLayout(
                    chunk_width=cols, chunk_height=rows,
                    chunk_bytes=int(np.prod(chunk, dtype=np.int64)) * max(1, -(-bits // 8)),
                    tiled=bool(page.is_tiled),
                    data_end=int((offsets + counts).max()) if offsets.size else 0, blocks=int(offsets.size)))
        return layout
    except UploadRejected:
        raise
    except LoopedTiff as exc:  # GDAL reads it (it stops at the loop): a rewrite mends it
        raise UploadRejected(400, f"the TIFF structure is damaged ({exc}); rewrite it, e.g. "
                                  "`gdal_translate -of COG in.tif out.tif`, and upload that") from exc
    except Exception as exc:  # noqa: BLE001 - tifffile raises several types on bad structure
        raise UploadRejected(400, f"the TIFF structure is damaged ({exc}); upload the complete "
                                  "file again") from exc


def _too_many_blocks(blocks: int, width: int, height: int, tiled: bool, max_blocks: int) -> str:
    kind = "tiles" if tiled else "strips"
    return (f"the raster is stored in {blocks} {kind} of {width} x {height} pixels, more than the {max_blocks} the "
            "service checks; retile it: `gdal_translate -co TILED=YES in.tif out.tif` (256 px tiles)")


def _check_blocks(layout: list[_PageLayout], max_block_bytes: int, max_blocks: int) -> None:
    """Refuse a strip or tile (of any image, overviews included) too large to decode safely, or an image
    of more strips or tiles than can be checked in reasonable time."""
    for page in layout:
        if page.blocks > max_blocks:
            raise UploadRejected(422, _too_many_blocks(page.blocks, page.chunk_width, page.chunk_height, page.tiled,
                                                       max_blocks))
        if page.chunk_bytes > max_block_bytes:
            kind = "tiles" if page.tiled else "strips"
            raise UploadRejected(422, f"the raster is stored in {kind} of {page.chunk_width} x "
                                      f"{page.chunk_height} pixels ({page.chunk_bytes / 2**20:.0f} MiB "
                                      f"decoded, the limit is {max_block_bytes / 2**20:.0f} MiB), too "
                                      "large to read safely; retile it: "
                                      "`gdal_translate -co TILED=YES in.tif out.tif`")


def _check_complete(layout: list[_PageLayout], size: int) -> None:
    """Every image, overview and mask block must lie inside the file (truncation check)."""
    needed = max((page.data_end for page in layout), default=0)
    if needed > size:
        raise UploadRejected(400, f"the GeoTIFF is truncated: its blocks need {needed} bytes but "
                                  f"{size} arrived; upload the complete file again")


#: most bytes one read of the block check decodes into (bands read a group at a time)
_BLOCK_CHECK_BYTES = 32 * 1024**2


def check_tiff_layout(path: Path, limits: RasterLimits) -> None:
    """From the TIFF tags, before GDAL decodes a pixel: refuse too many images, a strip or tile too
    large to decode, or blocks past the end of the file (truncated)."""
    layout = _read_layout(path, limits.max_images)
    _check_blocks(layout, limits.max_block_bytes, limits.max_blocks)
    _check_complete(layout, path.stat().st_size)


def _check_readable(src: rasterio.io.DatasetReader) -> None:
    """Decode the first and last block of every band: catches truncated files cheaply. One pixel of each
    is read (GDAL decodes its whole block into its cache): an array of the block was a second copy of it,
    256 MiB for a 316-byte upload declaring one 16384 px tile per band. The bands a group at a time, up
    to ``_BLOCK_CHECK_BYTES`` of their blocks: a read of all bands at once took a block's memory per band
    (2,000 bands of 512 px tiles, an 800 KB sparse upload: 0.5 GB; TIFF allows 65,535 bands)."""
    bh, bw = src.block_shapes[0]
    block_pixels = min(bw, src.width) * min(bh, src.height)
    last_col = ((src.width - 1) // bw) * bw
    last_row = ((src.height - 1) // bh) * bh
    windows = [Window(0, 0, 1, 1), Window(last_col, last_row, 1, 1)]
    group = max(1, _BLOCK_CHECK_BYTES // (block_pixels * max(np.dtype(d).itemsize for d in src.dtypes)))
    try:
        for window in windows:
            for first in range(0, src.count, group):
                src.read(list(src.indexes[first:first + group]), window=window)
    except RasterioError as exc:
        raise UploadRejected(400, f"the GeoTIFF is damaged or truncated (reading a block failed: "
                                  f"{' <- '.join(chain_messages(exc))}); upload the complete file "
                                  "again") from exc


def inspect_raster(path: Path, limits: RasterLimits) -> dict[str, Any]:
    """Open the upload as a GeoTIFF and return its summary, or raise ``UploadRejected``
    (whose detail calls the file upload.tif, never names its place on the server)."""
    try:
        return _inspect(path, limits)
    except UploadRejected as exc:
        detail = redact_paths(exc.detail, {path: "upload.tif", path.name: "upload.tif"})
        raise UploadRejected(exc.status_code, detail) from exc


def _inspect(path: Path, limits: RasterLimits) -> dict[str, Any]:
    check_signature(path)
    with rasterio.Env(GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR"):
        try:
            src = rasterio.open(path, driver="GTiff")
        except RasterioError as exc:
            raise UploadRejected(400, f"GDAL cannot open the file as a GeoTIFF ({exc}); it is "
                                      "damaged or truncated: upload the complete file") from exc
        with src:
            w, h = src.width, src.height
            if w > limits.max_side or h > limits.max_side or w * h > limits.max_pixels:
                raise UploadRejected(413, f"raster is {w} x {h} pixels; the limits are "
                                          f"{limits.max_side} pixels a side and {limits.max_pixels} "
                                          "pixels in all: cut it into smaller scenes")
            # the blocks GDAL's header gives (its strips may show as 1-row blocks: more, never fewer), before
            # tifffile lists every block's offset (3.9 million 16 px tiles: 11 s and 0.5 GB to list)
            bh, bw = src.block_shapes[0]
            planes = src.count if src.interleaving is not None and src.interleaving.name == "BAND" else 1
            declared = -(-w // max(1, bw)) * -(-h // max(1, bh)) * planes
            if declared > limits.max_blocks and bh > 1:
                raise UploadRejected(422, _too_many_blocks(declared, bw, bh, bool(src.profile.get("tiled")),
                                                           limits.max_blocks))
            if src.count > limits.max_bands:
                raise UploadRejected(413, f"raster has {src.count} bands; the limit is {limits.max_bands} (the "
                                          "models read three): send the bands they read, e.g. `gdal_translate "
                                          "-b 3 -b 2 -b 1 in.tif out.tif`")
            # GCPs or RPCs first: rasterio reports crs=None for a GCP-only file (the CRS is the GCPs'),
            # and assigning a CRS would not help it: it needs warping (an RPC-only one was told to assign
            # a CRS, then to set its corners with gdal_edit.py -a_ullr, which misplaces it)
            if src.transform.is_identity and (src.gcps[0] or src.rpcs):
                kind, rpc = ("GCPs", "") if src.gcps[0] else ("RPCs", " -rpc")
                raise UploadRejected(422, f"the raster has no geotransform; it has only {kind}: warp it "
                                          f"first, e.g. `gdalwarp{rpc} -t_srs EPSG:<code> in out`")
            if src.crs is None:
                raise UploadRejected(422, "the raster has no CRS; assign one, e.g. "
                                          "`gdal_edit.py -a_srs EPSG:<code> file.tif`")
            if not has_lonlat(src.crs):  # a local site grid: no RFC 7946 GeoJSON can be written
                raise UploadRejected(422, "the raster's CRS has no longitude/latitude (a local engineering "
                                          "grid?), and the service answers WGS84 GeoJSON: assign its real CRS "
                                          "(`gdal_edit.py -a_srs EPSG:<code> file.tif`), or run `geoseg predict`, "
                                          "which writes the GeoPackage and class map in the raster's own CRS")
            if src.transform.is_identity:
                raise UploadRejected(422, "the raster has no geotransform; set one with "
                                          "`gdal_edit.py -a_ullr ...`")
            degrees = lonlat_in_projected_crs(src.crs, src.transform, w, h)
            if degrees:  # a lon/lat grid labelled UTM: micrometre pixels, as geoseg predict refuses it
                raise UploadRejected(422, f"the raster: {degrees.replace('FILE', 'upload.tif')}")
            dtypes = set(src.dtypes)
            bad = sorted(dtypes - set(USABLE_DTYPES))
            if bad:
                raise UploadRejected(422, f"pixel type {', '.join(bad)} is not supported; use "
                                          f"one of {', '.join(USABLE_DTYPES)}")
            # a paletted band (PNG8-like GeoTIFF) is read as the RGBA its colour table gives (tiles.palette);
            # fewer than 3 bands are refused by api.intake.check_bands unless the job's `bands` reads them
            bands = 4 if is_paletted(src) else src.count
            try:
                gsd = ground_sample_distance(src)
            except Exception as exc:  # noqa: BLE001 - pyproj raises several types
                raise UploadRejected(422, f"cannot compute the pixel size in metres ({exc}); "
                                          "check the CRS and geotransform") from exc
            check_tiff_layout(path, limits)
            _check_readable(src)
            return {
                "width": w, "height": h, "bands": bands, "dtype": src.dtypes[0],
                "crs": _crs_label(src.crs), "crs_wkt": _crs_wkt(src.crs), "gsd_m": round(gsd, 4),
                "bounds_wgs84": _bounds_wgs84(src), "bytes": path.stat().st_size,
            }


def display_name(filename: str | None) -> str:
    """The client's file name, for display only (never used as a path)."""
    base = re.split(r"[\\/]", filename or "")[-1]
    clean = "".join(ch for ch in base if ch.isprintable())[:200]
    return clean or "upload.tif"


def discard(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
