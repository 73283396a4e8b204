"""Band selection and dtype -> uint8 scaling with per-scene statistics.

Why: models take 3-band uint8 RGB. uint8 imagery passes through untouched. 8-bit imagery kept in a
wider type (uint16 values 0-255, x 257 after ``gdal_translate -ot UInt16 -scale 0 255 0 65535``, x 16,
x 256, or onto a 10-16 bit full scale; float 0-255 or 0-1 in steps of 1/255) is scaled back to the
very bytes it was: a stretch would give it another contrast, and the models' rules were tuned on
8-bit renderings. Other uint16 and float imagery (a sensor's 11-12 bits, reflectance) is stretched
per band between low/high percentiles computed once per scene (from a decimated read of the
full-resolution pixels, never the whole scene at full resolution), so every tile of a scene gets
the same scaling and there are no brightness seams.
"""
from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from rasterio.enums import ColorInterp, Resampling
from rasterio.io import DatasetReader
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from tiles.errors import UnsupportedRaster
from tiles.masks import bands_valid_mask, finite_only, window_valid_mask

RGB = (ColorInterp.red, ColorInterp.green, ColorInterp.blue)


#: how ``BandStats`` were chosen: the scene's percentiles, or the scale of 8-bit data in a wider type
STRETCH, EIGHT_BIT = "2-98 % stretch", "8-bit values"


@dataclass(frozen=True)
class BandStats:
    """Per-band bounds mapped onto 0..255, and how they were chosen (``STRETCH`` or ``EIGHT_BIT``)."""

    low: tuple[float, ...]
    high: tuple[float, ...]
    method: str = STRETCH

    def as_dict(self) -> dict:
        """What report.json records (``scaling``)."""
        return {"method": self.method, "low": list(self.low), "high": list(self.high)}


#: why a raster's bands were read as red, green, blue (report.json's ``bands.source``)
BAND_SOURCES = ("requested", "colour labels", "band descriptions", "default 1-3", "colour table")


@dataclass(frozen=True)
class BandChoice:
    """The 1-based bands read as red, green, blue, why they were chosen, and a note for the user when
    the choice is a guess worth checking (None otherwise)."""

    bands: tuple[int, int, int]
    source: str  # one of BAND_SOURCES, or "model card NAME" when a run's card chose (geoseg.pipeline)
    count: int  # bands in the raster
    note: str | None = None

    def as_dict(self) -> dict:
        """What report.json records."""
        return {"used": list(self.bands), "source": self.source, "count": self.count}


def parse_bands(text: str, option: str = "--bands") -> tuple[int, int, int]:
    """``"3,2,1"`` -> ``(3, 2, 1)``: three 1-based band numbers for red, green, blue.

    Why here: ``geoseg tile``, ``geoseg predict`` and the service's ``bands`` field take the same
    list, and the service must parse it without importing the models. ``option`` names the field
    in the ValueError raised for anything else.
    """
    parts = [p.strip() for p in str(text).split(",")]
    try:
        bands = tuple(int(p) for p in parts)
    except ValueError:
        bands = ()
    if len(bands) != 3 or any(b < 1 for b in bands):
        raise ValueError(f"{option} expects three 1-based band numbers for red, green and blue separated by "
                         f"commas, e.g. 3,2,1 for bands stored blue, green, red; got {text!r}")
    return bands  # type: ignore[return-value]


def _described_rgb(descriptions: tuple | None) -> tuple[int, int, int] | None:
    """Bands whose GDAL descriptions are exactly red, green and blue (case and spaces aside), each on
    one band only; None otherwise. Strict on purpose: 'B4' or 'Band 3' means a sensor's own numbering."""
    names = [(d or "").strip().lower() for d in (descriptions or ())]
    if any(names.count(colour) != 1 for colour in ("red", "green", "blue")):
        return None
    return names.index("red") + 1, names.index("green") + 1, names.index("blue") + 1


def select_bands(count: int, colorinterp: tuple, dtype: str, requested: tuple[int, ...] | None = None,
                 descriptions: tuple | None = None) -> BandChoice:
    """The bands to read as R, G, B (1-based) and why.

    Rules: an explicit request wins (checked against ``count``); otherwise bands labelled
    red/green/blue by colour interpretation, in that order (e.g. BGRA files); otherwise bands whose
    descriptions are exactly 'red', 'green', 'blue' (the band names some products carry in their
    metadata, as GDAL reports them); otherwise bands 1-3 (RGBA, RGB+NIR), with a note when four or
    more bands other than alpha leave the order open (BGRN products store blue first). Complex
    data raise UnsupportedRaster, and so do fewer than three bands unless requested: a grey band is
    read as red, green and blue only when asked (``1,1,1``), naming the grey band in the refusal.
    """
    if np.issubdtype(np.dtype(dtype), np.complexfloating) or dtype.startswith("complex"):
        raise UnsupportedRaster(f"complex data ({dtype}, e.g. SAR) is not supported: convert to amplitude first")
    if requested is not None:
        if len(requested) != 3:
            raise UnsupportedRaster(f"exactly three bands are needed, got {requested}")
        bad = [b for b in requested if not 1 <= b <= count]
        if bad:
            raise UnsupportedRaster(f"bands {','.join(str(b) for b in requested)} were asked for red, green, blue, "
                                    f"but the raster has {count} band(s): band(s) {', '.join(map(str, bad))} "
                                    f"do not exist")
        return BandChoice(tuple(int(b) for b in requested), "requested", count)  # type: ignore[arg-type]
    if count < 3:
        grey = next((i + 1 for i, ci in enumerate(colorinterp) if ci != ColorInterp.alpha), 1)
        raise UnsupportedRaster(
            f"{count} band(s): three bands (RGB) are needed: RGB or RGBA, bands labelled red, green and blue "
            f"in any order (e.g. BGRA), or bands 1-3 of a multiband raster; a grey (panchromatic) band is read "
            f"as red, green and blue with --bands {grey},{grey},{grey} (the service's 'bands' field), though the "
            f"models were trained on colour imagery"
        )
    if all(ci in colorinterp for ci in RGB):
        return BandChoice(tuple(colorinterp.index(ci) + 1 for ci in RGB), "colour labels", count)  # type: ignore[arg-type]
    described = _described_rgb(descriptions)
    if described is not None:
        return BandChoice(described, "band descriptions", count)
    note = None
    if sum(ci != ColorInterp.alpha for ci in colorinterp) >= 4:
        note = (f"bands 1, 2, 3 of {count} were read as red, green, blue: the raster labels no band by colour; "
                f"if they are stored in another order, give it with --bands R,G,B (the service's 'bands' field), "
                f"e.g. --bands 3,2,1 for blue, green, red, near-infrared")
    return BandChoice((1, 2, 3), "default 1-3", count, note)


def check_has_bands(dataset: DatasetReader | WarpedVRT) -> None:
    """Raise UnsupportedRaster for a dataset without raster bands of its own, naming what it holds.

    Why: a container of several rasters (a GeoPackage with two raster tables, a NetCDF or HDF5 file
    with several variables) opens as a dataset of 0 bands whose rasters are subdatasets; predict
    failed on it with Python's 'tuple index out of range'. Each subdataset name opens as an input
    (``tiles.rasterpath``), quoted here as a shell needs it (``'NETCDF:"a.nc":var'``)."""
    if dataset.count:
        return
    subdatasets = list(dataset.subdatasets)
    if not subdatasets:
        raise UnsupportedRaster("no raster bands: nothing to predict")
    shown = ", ".join(subdatasets[:4]) + (f" and {len(subdatasets) - 4} more" if len(subdatasets) > 4 else "")
    raise UnsupportedRaster(f"no raster bands of its own but {len(subdatasets)} rasters (subdatasets: {shown}): "
                            f"give the one to read by its name as the input, e.g. {shlex.quote(subdatasets[0])}")


def dataset_bands(dataset: DatasetReader | WarpedVRT, requested: tuple[int, ...] | None = None) -> BandChoice:
    """``select_bands`` for an open rasterio dataset (its colour interpretation and descriptions)."""
    check_has_bands(dataset)
    return select_bands(dataset.count, tuple(dataset.colorinterp), dataset.dtypes[0], requested,
                        tuple(dataset.descriptions))


def decimated_shape(width: int, height: int, max_side: int) -> tuple[int, int]:
    """(height, width) of a read that fits in ``max_side`` keeping the aspect ratio."""
    scale = min(1.0, max_side / max(width, height))
    return max(1, round(height * scale)), max(1, round(width * scale))


#: pixels per read when the whole raster is scanned for valid pixels (a mask strip of 1 MB)
SCAN_PIXELS = 2**20


def scene_stats(dataset: DatasetReader | WarpedVRT, bands: tuple[int, ...], max_side: int = 1024,
                percentiles: tuple[float, float] = (2.0, 98.0)) -> BandStats | None:
    """The bounds mapped onto 0..255, from a decimated read (GDAL uses overviews if ``dataset`` has
    them: ``tiles.source.Scene`` passes one opened with ``OVERVIEW_LEVEL=NONE``, since averaged
    overviews have a narrower histogram than the pixels the tiles are read from): 8-bit data in a
    wider type scaled back to its bytes (``eight_bit_scale``), else the percentile stretch.

    Returns None for uint8 data (no scaling needed). Raises UnsupportedRaster when the
    raster holds no valid pixel. A decimated read samples every few pixels and can miss thin
    valid areas (a 2 px wide strip in a 4096 px raster), so when it finds none the raster is
    scanned at full resolution, strip by strip, before the raster is called empty.
    """
    h, w = decimated_shape(dataset.width, dataset.height, max_side)
    mask = bands_valid_mask(dataset, bands, out_shape=(h, w))
    dtype = dataset.dtypes[bands[0] - 1]
    data = None
    if dtype != "uint8":
        data = dataset.read(list(bands), out_shape=(len(bands), h, w), resampling=Resampling.nearest)
        mask = finite_only(mask, data)
    if mask.any():
        values = data[:, mask] if data is not None else np.zeros((len(bands), 0))
    elif (h, w) != (dataset.height, dataset.width):
        values = _scan_valid(dataset, bands, collect=data is not None, max_values=h * w)
    else:
        values = None
    if values is None:
        raise UnsupportedRaster("no valid pixels: the raster is entirely nodata/masked")
    if data is None:
        return None
    nbits = dataset.tags(bands[0], ns="IMAGE_STRUCTURE").get("NBITS")  # GTiff's NBITS is a band's
    scale = eight_bit_scale(values, dtype, int(nbits) if str(nbits).isdigit() else None)
    if scale is not None:  # 8-bit data in a wider type: back to its own bytes, no stretch
        n = len(bands)
        return BandStats((0.0,) * n, (255.0 * scale,) * n, EIGHT_BIT)
    low, high = [], []
    for band in values:
        lo, hi = np.percentile(band.astype(np.float64), percentiles)
        if hi <= lo:
            hi = lo + 1.0
        low.append(float(lo))
        high.append(float(hi))
    return BandStats(tuple(low), tuple(high))


def scaling_record(dtype: str, stats: BandStats | None) -> dict:
    """report.json's ``scaling``: the input's data type and how it became the models' bytes."""
    return {"dtype": dtype, **(stats.as_dict() if stats is not None else {"method": "as stored"})}


def stretch_note(dtype: str, stats: BandStats | None) -> str | None:
    """A word for the user when a scene was stretched (None otherwise): the models see other
    contrast than in an 8-bit rendering of it, and the bounds say what they saw."""
    if stats is None or stats.method != STRETCH:
        return None
    bounds = ", ".join(f"{lo:.6g}-{hi:.6g}" for lo, hi in zip(stats.low, stats.high))
    return (f"{dtype} input stretched to 0-255 per band between its 2nd and 98th percentiles ({bounds}): "
            "the models see other contrast than an 8-bit rendering of it has, which can cost accuracy "
            "(docs/predict.md); to predict a rendering of your choice, convert it to 8 bits first")


#: how far from a whole step a float value may be and still count as 8-bit data (float32 of v / 255)
_STEP_TOLERANCE = 1e-3
#: full scales 8-bit data is widened to by ``gdal_translate -scale 0 255 0 F`` (10-16 bits, 32768 of
#: 15-bit editors; 65535 is also x 257): values rint(byte x F / 255)
FULL_SCALES = (1023, 2047, 4095, 16383, 32767, 32768, 65535)
#: values checked before the whole sample, so data that is not 8-bit is told in one short pass
_PREFIX = 4096


def _all(test: Callable[[np.ndarray], np.ndarray], values: np.ndarray) -> bool:
    """``test`` holds for every value (a prefix first: wide data fails there, cheaply)."""
    return bool(test(values[:_PREFIX]).all() and test(values).all())


def eight_bit_scale(values: np.ndarray, dtype: str, nbits: int | None = None) -> float | None:
    """The factor k such that ``values`` / k, rounded, are the bytes of 8-bit data kept in a wider
    type, or None (data of more than 8 bits: stretch it).

    The brightest byte must be 128-255, as in any 8-bit rendering of a scene: a dark 11-bit tile
    whose values stay under 256, or a constant raster, is not taken for 8-bit data. Integers:
    k = 1 for values 0-255; else their greatest common divisor (x 257 from ``gdal_translate -ot
    UInt16 -scale 0 255 0 65535``, x 256 from a shift, x 16); else a full scale F of
    ``FULL_SCALES`` when every value is rint(byte x F / 255) (``-scale 0 255 0 4095``), k = F / 255.
    Floats: k = 1/255 for 0-1 in steps of 1/255, k = 1 for whole numbers 0-255. A sensor's values
    share none of these; neither do 8-bit data widened and then resampled (stretched, as before).
    ``values``: the valid pixels' (bands, n) sample the stretch would be read from; ``nbits``: the
    file's ``NBITS`` (above 8: never 8-bit data).
    """
    if values.size == 0 or (nbits is not None and nbits > 8) or np.dtype(dtype).itemsize == 1:
        return None  # int8: no 8-bit rendering is signed
    low, high = float(values.min()), float(values.max())
    if low < 0:
        return None
    flat = values.ravel()
    if np.issubdtype(np.dtype(dtype), np.integer):
        if high <= 255:
            return 1.0 if high >= 128 else None
        ints = flat.astype(np.int64)
        divisor = int(np.gcd.reduce(ints))
        if 128 <= high / divisor <= 255:
            return float(divisor)
        for full in FULL_SCALES:
            if full * 128 / 255 <= high <= full and _all(
                    lambda v: np.rint(np.rint(v * (255 / full)) * (full / 255)) == v, ints):
                return full / 255
        return None
    as_float = flat.astype(np.float64)
    for k, top in ((1.0 / 255.0, 1.0), (1.0, 255.0)):
        if top * 128 / 255 <= high <= top and _all(
                lambda v: np.abs(v / k - np.rint(v / k)) <= _STEP_TOLERANCE, as_float):
            return k
    return None


def _scan_valid(dataset, bands: tuple[int, ...], collect: bool, max_values: int) -> np.ndarray | None:
    """(bands, n) values of valid pixels found by reading the raster in full-resolution strips of
    ``SCAN_PIXELS`` (memory stays bounded); at most ``max_values`` of them, none when not
    ``collect`` (the scan then stops at the first valid pixel). None when there is none."""
    rows = max(1, SCAN_PIXELS // dataset.width)
    found: list[np.ndarray] = []
    count = 0
    for row in range(0, dataset.height, rows):
        window = Window(0, row, dataset.width, min(rows, dataset.height - row))
        valid = window_valid_mask(dataset, window, bands=bands)
        if not valid.any():
            continue
        if not collect:
            return np.zeros((len(bands), 0))
        data = dataset.read(list(bands), window=window)
        valid = finite_only(valid, data)
        found.append(data[:, valid][:, : max_values - count])
        count += found[-1].shape[1]
        if count >= max_values:
            break
    return np.concatenate(found, axis=1) if found else None


def to_uint8(data: np.ndarray, stats: BandStats | None) -> np.ndarray:
    """Scale (bands, h, w) data to uint8 with ``stats`` (None: data must already be uint8)."""
    if stats is None:
        if data.dtype != np.uint8:
            raise ValueError(f"no statistics given for {data.dtype} data")
        return data
    lo = np.asarray(stats.low, dtype=np.float32)[:, None, None]
    hi = np.asarray(stats.high, dtype=np.float32)[:, None, None]
    scaled = (data.astype(np.float32) - lo) * (255.0 / (hi - lo))
    scaled = np.nan_to_num(scaled, nan=0.0, posinf=255.0, neginf=0.0)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
