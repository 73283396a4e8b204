"""``Scene``: a raster opened for tiled reading, optionally resampled to a target GSD.

Why: every consumer (chips, inference, benchmarks) needs the same thing — uint8 RGB
windows plus a validity mask, read window by window, never the whole scene. With a
target GSD the scene is wrapped in a ``WarpedVRT`` in its own CRS with north-up
square-metre pixels (works for geographic CRSs, custom WKT and rotated transforms),
so tiles at 0.075 m and 0.3 m imagery look alike to the model. ``width``, ``height``,
``transform`` and ``crs`` describe the working grid (the VRT's when warped);
``src_*`` describe the file's own grid, which ``tiles.warp`` brings results back to.

Speed: GDAL's warper is slow at downsampling (zanzibar_z21_1, 33.5 Mpx to 0.3 m: 3.1 s). A
window of a north-up integer raster whose source pixels are all valid is read instead by
GDAL's decimating RasterIO from the full-resolution pixels (0.2-0.9 s for the same scene),
which gives the warper's pixels within 1-2 grey levels. Windows that hold masked pixels, and
rasters with nodata values, alpha bands, floats or rotation, still go through the warper.

Usage::

    with Scene(path, gsd=0.3) as scene:
        for tile in tile_grid(scene.width, scene.height, 512, 64):
            rgb, valid = scene.read(tile.read)   # (3,512,512) uint8, (512,512) bool

Threads: a ``Scene`` holds rasterio datasets, which are not safe to read from two threads at
once; give each thread its own ``Scene`` (or read on one thread, as the predict pipeline does).
"""
from __future__ import annotations

import math
import numbers
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import ColorInterp, MaskFlags, Resampling
from rasterio.env import get_gdal_config, set_gdal_config
from rasterio.errors import RasterioIOError
from rasterio.io import DatasetReader
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from tiles.errors import UnsupportedRaster
from tiles.grid import check_is_window
from tiles.gsd import gsd_m, has_lonlat, lonlat_in_projected_crs, metres_per_unit, pixel_size_m
from tiles.masks import alpha_mask_band, finite_only, window_valid_mask
from tiles.normalize import BandChoice, BandStats, dataset_bands, scene_stats, to_uint8
from tiles.palette import is_expanded, open_expanded
from tiles.rasterpath import as_raster_path, check_utf8_name, raster_name

__all__ = ["BLOCK_CACHE_BYTES", "Scene", "UnsupportedRaster", "cap_block_cache", "placed_crs", "working_grid"]

#: GDAL block cache for windowed reads. A row of 512 px building tiles (0.3 m, with context
#: margins) across an 8192 px wide 0.075 m RGB scene is ~50-60 MB of decompressed source
#: blocks; 128 MiB keeps the blocks that neighbouring windows and warp chunks share (64 MiB
#: made zanzibar_z21_1 1.5x slower, 128 MiB ran as fast as GDAL's default).
BLOCK_CACHE_BYTES = 128 * 2**20


def cap_block_cache(max_bytes: int = BLOCK_CACHE_BYTES) -> int:
    """Lower GDAL's process-wide block cache to ``max_bytes`` unless the user set GDAL_CACHEMAX;
    returns the cache size in force in bytes, or -1 when GDAL_CACHEMAX is the user's.

    Why: GDAL's default is 5 % of RAM (1.2 GB on a 24 GB machine) and every window read leaves
    its decompressed blocks in it, so a streaming reader's peak memory grows with the scene
    (zanzibar_z21_1, 33.5 Mpx: +200 MB, the whole decompressed scene) until that cap. Windows
    are read in row order, so a cache holding about one row of them loses no time.
    """
    if "GDAL_CACHEMAX" in os.environ:  # the user's choice (it may be "5%" or megabytes)
        return -1
    current = int(get_gdal_config("GDAL_CACHEMAX") or 0)
    if 0 < current <= max_bytes:
        return current
    set_gdal_config("GDAL_CACHEMAX", int(max_bytes))
    return int(max_bytes)


#: the longest side of a working grid (GDAL's raster sizes are C ints)
MAX_GRID_SIDE = 2**31 - 1


def working_grid(crs: CRS, transform: Affine, width: int, height: int, target_gsd: float) -> tuple[Affine, int, int]:
    """North-up grid in ``crs`` covering the raster footprint with ``target_gsd`` metre pixels, from
    its top-left corner (an axis the raster spans by at most half a pixel: centred on it)."""
    corners = [transform @ (c, r) for c, r in ((0, 0), (width, 0), (0, height), (width, height))]
    xs = [p[0] for p in corners]
    ys = [p[1] for p in corners]
    left, right, bottom, top = min(xs), max(xs), min(ys), max(ys)
    cx, cy = transform @ (width / 2.0, height / 2.0)
    step = max(abs(transform.a), abs(transform.b), abs(transform.d), abs(transform.e))
    mpu = metres_per_unit(crs, cx, cy, step)
    if mpu is None:
        raise UnsupportedRaster("cannot resample to a GSD: the CRS has no known relation to metres")
    rx, ry = target_gsd / mpu[0], target_gsd / mpu[1]
    out_w = max(1, math.ceil((right - left) / rx - 1e-6))
    out_h = max(1, math.ceil((top - bottom) / ry - 1e-6))
    if max(out_w, out_h) > MAX_GRID_SIDE:  # GDAL's sizes are C ints: it failed with an OverflowError
        raise UnsupportedRaster(f"a GSD of {target_gsd:g} m makes a {out_w} x {out_h} px grid, more than "
                                f"{MAX_GRID_SIDE} px a side")
    # a raster at most half a working pixel across (a 1-row strip of a 0.3 m scene at 1.1 m) would
    # have that pixel's centre off the raster, and a pixel is valid when its centre is on it: nothing
    # would be valid. Such an axis's one pixel is centred on the raster instead.
    if right - left <= rx / 2:
        left = (left + right - rx) / 2
    if top - bottom <= ry / 2:
        top = (top + bottom + ry) / 2
    return Affine(rx, 0.0, left, 0.0, -ry, top), out_w, out_h


def north_up(transform: Affine, width: int, height: int) -> tuple[Affine, int, int]:
    """The grid of a rectilinear raster's own pixels turned north-up (rows from the north, columns
    from the west): a south-up, east-left or axis-swapped (``a = e = 0``: turned 90 or 270 degrees)
    raster's pixels, each where it lies, none resampled."""
    corners = [transform @ (c, r) for c, r in ((0, 0), (width, height))]
    left, top = min(x for x, _ in corners), max(y for _, y in corners)
    if transform.a == 0 and transform.e == 0:  # columns run north-south: the grid's sides swap
        return Affine(abs(transform.b), 0.0, left, 0.0, -abs(transform.d), top), height, width
    return Affine(abs(transform.a), 0.0, left, 0.0, -abs(transform.e), top), width, height


def _decimates(src, bands: tuple[int, ...]) -> bool:
    """Whether resampled windows of ``src`` may be decimating reads (module docstring): north-up,
    integer, and masked by nothing or by a per-dataset mask that is not an alpha band."""
    t = src.transform
    if not (t.b == 0 and t.d == 0 and t.a > 0 and t.e < 0):
        return False
    if not np.issubdtype(np.dtype(src.dtypes[bands[0] - 1]), np.integer):
        return False
    every = src.mask_flag_enums  # one call: it builds every band's flags (TIFF allows 65,535 bands)
    flags = [every[b - 1] for b in bands]
    return (all(MaskFlags.all_valid in f for f in flags)
            or all(MaskFlags.per_dataset in f and MaskFlags.alpha not in f for f in flags))


def _other_bands_mask(src, bands: tuple[int, ...]) -> bool:
    """Whether bands of ``src`` other than ``bands`` carry masks of their own (a nodata value) that
    GDAL's warper would merge into the warped mask: it calls a pixel valid where any band is."""
    others = set(range(1, src.count + 1)) - set(bands)
    if not others:
        return False
    # one call: it builds every band's flags, and read once per band it made 20,000 bands an hour's check
    every = src.mask_flag_enums
    return any(MaskFlags.nodata in every[b - 1] for b in others)


def _band_subset(src, path, bands: tuple[int, ...]):
    """``src``'s bands ``bands`` (each once, in order) as a dataset of their own (GDAL's
    ``vrt://...?bands=``: nodata and per-dataset masks kept), None where the location cannot
    take a ``vrt://`` query (it holds a ``?``)."""
    if "?" in str(path) or not isinstance(path, (str, os.PathLike)):
        return None
    return open_expanded(f"vrt://{os.fspath(path)}?bands={','.join(map(str, bands))}")


def _axis_pieces(start: int, length: int, scale: float, src_length: int) -> list[tuple[int, int, float, float]]:
    """Working pixels ``[start, start + length)`` along one axis as (offset in the window, count,
    source start, source length): the pixels wholly inside the raster, then the last one if its
    centre is inside it (the warper's rule). Pixels past that are left out (invalid)."""
    whole = int(math.floor(src_length / scale + 1e-9))
    pieces = []
    a, b = start, min(start + length, whole)
    if b > a:
        pieces.append((a - start, b - a, a * scale, (b - a) * scale))
    if start <= whole < start + length and (whole + 0.5) * scale < src_length - 1e-9:
        pieces.append((whole - start, 1, whole * scale, src_length - whole * scale))
    return pieces


def _all_valid(src, box: tuple[tuple[int, int], tuple[int, int]], bands: tuple[int, ...]) -> bool:
    """True when every pixel of ``src`` in ``box`` ((row start, stop), (col start, stop), clipped to
    the raster) is valid."""
    if MaskFlags.all_valid in src.mask_flag_enums[bands[0] - 1]:
        return True
    (r0, r1), (c0, c1) = box
    r0, c0, r1, c1 = max(r0, 0), max(c0, 0), min(r1, src.height), min(c1, src.width)
    return bool(src.read_masks(bands[0], window=Window(c0, r0, c1 - c0, r1 - r0)).all())


def _gdal_reason(exc: BaseException) -> str:
    """GDAL's first complaint behind a rasterio error (the cause at the bottom of its chain)."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return " ".join(str(exc).split())


def _unreadable(name: str, exc: BaseException) -> str:
    """The one-line reason a raster's pixels cannot be read, GDAL's own complaint included (rasterio
    says only "Read failed. See previous exception for details")."""
    reason = _gdal_reason(exc)
    hint = "a file it reads is missing" if "No such file or directory" in reason else "truncated or corrupt file?"
    return f"{name}: cannot read its pixels ({hint}): {reason}"


def placed_crs(dataset):
    """The CRS that places ``dataset``'s pixels on the ground, None when nothing does: no CRS, or a
    CRS without a geotransform (GDAL reads a missing one as the identity, which would put the
    raster at the CRS's origin, 1 unit per pixel: EPSG:3857's is off West Africa)."""
    if not dataset.crs or dataset.transform.is_identity:
        return None
    return dataset.crs


def _off_earth(name: str, crs, transform: Affine, width: int, height: int) -> str:
    """Why a raster whose CRS places points on Earth cannot be placed: its grid does not lie on it
    in that CRS (a UTM grid labelled EPSG:4326 reads its metres as degrees, latitudes past 90)."""
    x, y = transform @ (width / 2, height / 2)
    return (f"{name}: its centre ({x:.10g}, {y:.10g}) does not lie on the Earth in its CRS {crs.to_string()}: "
            f"the CRS does not fit its coordinates (metres labelled as degrees?); set the right one "
            f"(gdal_edit.py -a_srs EPSG:XXXX {name}) or warp it")


class Scene:
    """A raster opened for windowed uint8 RGB reads (see module docstring)."""

    def __init__(self, path: str | Path, bands: tuple[int, ...] | None = None, gsd: float | None = None,
                 gsd_tolerance: float = 0.02, resampling: Resampling = Resampling.bilinear):
        if gsd is not None and not (isinstance(gsd, numbers.Real) and math.isfinite(gsd) and gsd > 0):
            # 0 divided by zero, a negative or NaN gsd read the file at its own GSD without a word
            raise ValueError(f"gsd must be a finite number of metres > 0 (or None: the file's own), got {gsd!r}")
        self.path = as_raster_path(path)  # GDAL virtual paths and URLs stay strings
        self.name = raster_name(path)
        check_utf8_name(self.path)
        try:  # without georeferencing rasterio warns: tiles.georeferencing_warnings ignores it
            self._src = open_expanded(self.path)  # a paletted raster as the RGBA it stands for
        except RasterioIOError as exc:
            raise UnsupportedRaster(f"{self.path}: cannot be opened as a raster ({exc})") from exc
        self._vrt: WarpedVRT | None = None
        self._full = None  # the file opened without overviews, for decimating reads and the stretch
        self._warp: dict = {}  # the WarpedVRT's grid (crs, transform, width, height, add_alpha) when warped
        self._any_vrt: WarpedVRT | None = None  # the working grid by averaging, for ``read_any_valid``
        self._subset = None  # the chosen bands alone, warped instead of ``_src`` (``_other_bands_mask``)
        try:  # what is open is closed again when the rest fails (the caller gets no Scene to close)
            self._open_grid(bands, gsd, gsd_tolerance, resampling)
        except BaseException:
            self.close()
            raise

    def _open_grid(self, bands: tuple[int, ...] | None, gsd: float | None, gsd_tolerance: float,
                   resampling: Resampling) -> None:
        """Bands, statistics and the working grid of the open file (the rest of ``__init__``)."""
        src = self._src
        try:
            #: which bands are read as red, green, blue and why (``tiles.normalize.select_bands``)
            self.band_choice: BandChoice = dataset_bands(src, bands)
            if is_expanded(src) and self.band_choice.source == "colour labels":  # the file's one band
                self.band_choice = replace(self.band_choice, source="colour table", count=1)
            self.bands = self.band_choice.bands
            #: the data type of the bands read (``stats`` says how it becomes uint8)
            self.dtype: str = src.dtypes[self.bands[0] - 1]
            if self.dtype != "uint8":
                # the stretch is read from the full-resolution pixels the tiles are: an averaged
                # overview's narrower histogram moved it (a uint16 scene's 2 % bound 2566 with
                # overviews, 2407 without), so the same pixels gave other classes with overviews
                self._full = open_expanded(self.path, OVERVIEW_LEVEL="NONE")
            self.stats: BandStats | None = scene_stats(self._full or src, self.bands)
        except UnsupportedRaster as exc:
            raise UnsupportedRaster(f"{self.name}: {exc}") from exc
        except RasterioIOError as exc:  # the first read: a VRT whose tile is gone, a corrupt overview
            raise UnsupportedRaster(_unreadable(self.name, exc)) from exc
        self.src_width, self.src_height = src.width, src.height
        self.src_transform, self.crs = src.transform, placed_crs(src)
        #: a CRS the file names without a geotransform to place it by (not used: ``crs`` is None)
        self.unplaced_crs = src.crs if src.crs and self.crs is None else None
        #: without a geotransform, what georeferences the file instead ("GCPs", "RPCs"), which is not
        #: used: such a raster is read on its pixel grid (warp it first, e.g. ``gdalwarp``)
        self.ground_control = None if self.crs else ("GCPs" if src.gcps[0] else "RPCs" if src.rpcs else None)
        self.native_gsd = gsd_m(self.crs, src.transform, src.width, src.height)
        if self.native_gsd is None and self.crs is not None and has_lonlat(self.crs):
            raise UnsupportedRaster(_off_earth(self.name, self.crs, src.transform, src.width, src.height))
        degrees = lonlat_in_projected_crs(self.crs, src.transform, src.width, src.height)
        if degrees:  # the reverse: degrees labelled as metres
            raise UnsupportedRaster(f"{self.name}: {degrees.replace('FILE', self.name)}")
        #: the GSD asked for (None: the file's own grid); ``gsd`` is the one measured on the working grid
        self.target_gsd = gsd
        self._ds = src
        #: the chosen bands' indices in ``_ds`` (other than ``bands`` when a band subset is warped)
        self._ds_bands = self.bands
        self._scale: tuple[float, float] | None = None  # source pixels per working pixel, when decimating
        self._resampling = resampling
        if gsd is not None:
            if self.native_gsd is None:
                raise UnsupportedRaster(f"{self.name}: not georeferenced, cannot resample to {gsd} m")
            t = src.transform
            # rows along the north-south axis (a = e = 0: turned 90 or 270 degrees, or transposed), for
            # which Affine.is_rectilinear holds too, turn exactly as a flip does; any other b or d rotates
            swapped = t.a == 0 and t.e == 0 and t.b != 0 and t.d != 0
            rotated = (t.b != 0 or t.d != 0) and not swapped
            # south-up, east-left or swapped pixels at the working GSD: the same pixels turned north-up,
            # as the warp of another GSD turns them (a model read them upside down or sideways: the
            # building head's footprints of a south-up copy of a scene met those of the scene by 0.52
            # pixel IoU, of a transposed copy by 0.40)
            flipped = not rotated and (swapped or t.a < 0 or t.e > 0)
            # each axis: a lon/lat grid's pixels are cos(latitude) narrower east-west, and the mean of two
            # axes within the tolerance (0.21 x 0.42 m at 60 N) left the building model on squashed pixels
            # (17 % less building area than the same ground in UTM)
            axes = pixel_size_m(self.crs, src.transform, src.width, src.height) or (self.native_gsd,)
            resampled = max(abs(size - gsd) for size in axes) / gsd > gsd_tolerance
            if rotated or flipped or resampled:
                try:
                    transform, width, height = (working_grid(self.crs, src.transform, src.width, src.height, gsd)
                                                if rotated or resampled else north_up(src.transform, src.width,
                                                                                      src.height))
                except UnsupportedRaster as exc:
                    raise UnsupportedRaster(f"{self.name}: {exc}") from exc
                if _other_bands_mask(src, self.bands):
                    # the warper's mask ORs every band's nodata: warp the chosen bands alone, so a
                    # band the job does not read does not make its nodata pixels valid
                    unique = tuple(dict.fromkeys(self.bands))
                    self._subset = _band_subset(src, self.path, unique)
                    if self._subset is not None:
                        self._ds_bands = tuple(unique.index(b) + 1 for b in self.bands)
                warped = self._subset or src
                self._warp = {"crs": self.crs, "transform": transform, "width": width, "height": height,
                              "add_alpha": ColorInterp.alpha not in warped.colorinterp}
                # a turn alone moves whole pixels: nearest keeps each one (bilinear blended neighbours of a
                # transposed raster, GDAL's transformer being a hair off the pixel centres)
                turn_only = not (rotated or resampled)
                self._vrt = WarpedVRT(warped, resampling=Resampling.nearest if turn_only else resampling,
                                      **self._warp)
                self._ds = self._vrt
                at_corner = (transform.c, transform.f) == (src.transform.c, src.transform.f)  # not centred
                if _decimates(src, self.bands) and at_corner:
                    # the working grid starts at the raster's corner: working pixel (c, r) covers
                    # source columns [c * fx, (c + 1) * fx) and rows [r * fy, (r + 1) * fy)
                    self._scale = (transform.a / src.transform.a, transform.e / src.transform.e)
                    if self._full is None:  # overviews change pixels
                        self._full = open_expanded(self.path, OVERVIEW_LEVEL="NONE")
        self._alpha = alpha_mask_band(self._ds, self._ds_bands)
        if (self._alpha is None and self._vrt is not None and self._warp["add_alpha"]
                and MaskFlags.alpha not in self._vrt.mask_flag_enums[self._ds_bands[0] - 1]):
            # the alpha band the warper added has the source's type, and GDAL takes an alpha band as
            # the mask only when it is Byte or UInt16: for int16, 32-bit and float rasters it is read
            # with the bands here, else every pixel reads valid (nodata as black ground)
            self._alpha = self._vrt.count
        self.width, self.height = self._ds.width, self._ds.height
        self.transform = self._ds.transform
        self.gsd = gsd_m(self.crs, self.transform, self.width, self.height) if self.crs else None

    @property
    def is_warped(self) -> bool:
        """True when reads come from a resampled grid rather than the file's own."""
        return self._vrt is not None

    @property
    def dataset(self) -> DatasetReader | WarpedVRT:
        """The rasterio dataset reads come from (the WarpedVRT when warped; windows read by
        decimation come from the file itself)."""
        return self._ds

    def window_transform(self, window: Window) -> Affine:
        """Affine transform of a (possibly boundless) window of the working grid."""
        return self.transform @ Affine.translation(window.col_off, window.row_off)

    def read(self, window: Window, pad: str = "zeros") -> tuple[np.ndarray, np.ndarray]:
        """uint8 (3, h, w) RGB and bool (h, w) validity for ``window``; outside pixels are invalid.

        ``pad``: what the RGB holds outside the raster: ``zeros``, or ``reflect`` (the raster's
        edge mirrored; what a model is shown past the edge of a scene: black padding moves the
        global-pooled channel attention of the land-cover network for the whole tile).
        """
        if pad not in ("zeros", "reflect"):
            raise ValueError(f"pad must be 'zeros' or 'reflect', got {pad!r}")
        check_is_window(window)
        if self._src.closed:  # rasterio's "Dataset is closed" came out as a truncated or corrupt file
            raise ValueError(f"{self.name}: this Scene is closed (read inside its `with` block, or open it again)")
        parts = (window.col_off, window.row_off, window.width, window.height)
        if any(float(v) != int(v) for v in parts) or window.width <= 0 or window.height <= 0:
            # a fractional window (Window.from_bounds) was cut to whole pixels here, off by up to one
            raise ValueError(f"{self.name}: {window} is not whole pixels of positive size "
                             f"(round it first: window.round_offsets().round_lengths())")
        try:
            return self._read(window, pad)
        except RasterioIOError as exc:  # rasterio's own message is "Read failed. See previous exception"
            raise UnsupportedRaster(_unreadable(self.name, exc)) from exc

    def read_any_valid(self, window: Window, pad: str = "zeros") -> tuple[np.ndarray, np.ndarray]:
        """``read``, where a working pixel is valid when any source pixel under it is, and holds
        their average (GDAL's ``average`` warp, which weighs invalid pixels out); on the file's
        own grid, ``read`` itself.

        Why: the bilinear warper calls a working pixel valid only where enough of its kernel is
        valid, so a valid area under about one working pixel across (a 3 x 3 px island at 0.3 m
        read at the land-cover head's 1.1 m) reads as no data at all, and a head skipping tiles
        without a valid pixel left those input pixels without a prediction (class 0 in the class
        map, where the input has data). Slower than ``read``: for windows ``read`` finds empty."""
        if self._vrt is None:
            return self.read(window, pad)
        if self._any_vrt is None:
            self._any_vrt = WarpedVRT(self._subset or self._src, resampling=Resampling.average, **self._warp)
        try:
            return self._read(window, pad, self._any_vrt)
        except RasterioIOError as exc:
            raise UnsupportedRaster(_unreadable(self.name, exc)) from exc

    def _read(self, window: Window, pad: str, warped: WarpedVRT | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``read`` from the working grid, or from ``warped``, a WarpedVRT of the same grid and bands."""
        h, w = int(window.height), int(window.width)
        c0, r0 = int(window.col_off), int(window.row_off)
        valid = np.zeros((h, w), dtype=bool)
        x0, y0 = max(c0, 0), max(r0, 0)
        x1, y1 = min(c0 + w, self.width), min(r0 + h, self.height)
        if x1 <= x0 or y1 <= y0:
            return np.zeros((3, h, w), dtype=np.uint8), valid
        inner = Window(x0, y0, x1 - x0, y1 - y0)
        dataset = warped or self._ds  # a WarpedVRT of the same layout: the same alpha band
        decimated = self._read_decimated(inner) if self._scale is not None and warped is None else None
        if decimated is not None:
            data, ok = decimated
        elif self._alpha is None:
            data = dataset.read(list(self._ds_bands), window=inner)
            ok = window_valid_mask(dataset, inner, data, self._ds_bands)
        else:  # one read: a second one for the mask would warp the source a second time
            data = dataset.read([*self._ds_bands, self._alpha], window=inner)
            data, ok = data[:-1], finite_only(data[-1] > 0, data[:-1])
        scaled = to_uint8(data, self.stats)
        if not ok.all():
            scaled = scaled * ok
        valid[y0 - r0:y1 - r0, x0 - c0:x1 - c0] = ok
        widths = ((0, 0), (y0 - r0, r0 + h - y1), (x0 - c0, c0 + w - x1))
        return np.pad(scaled, widths, mode="symmetric" if pad == "reflect" else "constant"), valid

    def _read_decimated(self, inner: Window) -> tuple[np.ndarray, np.ndarray] | None:
        """Bands and validity of a window of the working grid by decimating reads; None where
        its source pixels are not all valid (the warper then weighs them out).

        The grid's last column and row may cover only part of a source pixel's worth of raster;
        like the warper's, such a pixel is valid when its centre lies inside the raster, and it
        is read from the part it covers.
        """
        fx, fy = self._scale
        x0, y0, w, h = int(inner.col_off), int(inner.row_off), int(inner.width), int(inner.height)
        xs, ys = _axis_pieces(x0, w, fx, self.src_width), _axis_pieces(y0, h, fy, self.src_height)
        if not xs or not ys:
            return None
        # the source pixels under the window, grown by the resampling kernel's reach
        reach = math.ceil(max(fx, fy)) + 1
        box = ((math.floor(ys[0][2]) - reach, math.ceil(ys[-1][2] + ys[-1][3]) + reach),
               (math.floor(xs[0][2]) - reach, math.ceil(xs[-1][2] + xs[-1][3]) + reach))
        if not _all_valid(self._full, box, self.bands):
            return None
        data = np.zeros((len(self.bands), h, w), dtype=self._full.dtypes[self.bands[0] - 1])
        ok = np.zeros((h, w), dtype=bool)
        for oy, oh, sy, sh in ys:
            for ox, ow, sx, sw in xs:
                data[:, oy:oy + oh, ox:ox + ow] = self._full.read(
                    list(self.bands), window=Window(sx, sy, sw, sh), out_shape=(len(self.bands), oh, ow),
                    resampling=self._resampling)
                ok[oy:oy + oh, ox:ox + ow] = True
        return data, ok

    def close(self) -> None:
        if self._vrt is not None:
            self._vrt.close()
        if self._any_vrt is not None:
            self._any_vrt.close()
        if self._full is not None:
            self._full.close()
        if self._subset is not None:
            self._subset.close()
        self._src.close()

    def __enter__(self) -> "Scene":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
