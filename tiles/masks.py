"""Valid-pixel masks of raster windows.

Why: predictions over nodata and chips full of fill are the commonest tiling bugs.
GDAL already merges every way a raster can say "no data" (nodata value, alpha
band, internal or external ``.msk`` mask) into the dataset mask; we add NaN/inf
checks for float data, which GDAL only masks when NaN is declared as nodata.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
from rasterio.enums import ColorInterp, MaskFlags, Resampling
from rasterio.io import DatasetReader
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window


def window_valid_mask(dataset: DatasetReader | WarpedVRT, window: Window, data: np.ndarray | None = None,
                      bands: tuple[int, ...] | None = None) -> np.ndarray:
    """Boolean (h, w) mask of valid pixels of ``window`` (which must lie inside ``dataset``):
    ``bands_valid_mask`` of ``bands`` (1-based; None: every band). ``data`` (bands, h, w), when
    given, also marks non-finite float pixels invalid."""
    return finite_only(bands_valid_mask(dataset, bands, window=window), data)


def bands_valid_mask(dataset: DatasetReader | WarpedVRT, bands: tuple[int, ...] | None = None,
                     window: Window | None = None, out_shape: tuple[int, int] | None = None) -> np.ndarray:
    """Boolean mask of the pixels valid in ``bands`` (1-based; None: every band) of ``window``
    (None: the whole raster), read at ``out_shape`` (nearest) when given: a mask shared by all
    bands (alpha band, internal or ``.msk`` mask) read once from one band, none read where GDAL
    says "all valid", per-band masks (a nodata value) valid where any of ``bands`` is.

    Why: GDAL's dataset mask ORs the masks of every band, and rasterio's ``dataset_mask`` takes
    band 4 of a 4-band raster whose band 1 is red as its alpha, so a band the job does not read
    decided what it read: a raster whose bands 1-3 are all nodata but whose band 5 has data was
    predicted as black ground, and an RGB + fourth band of fill refused as holding no valid pixel."""
    chosen = tuple(dict.fromkeys(bands or range(1, dataset.count + 1)))
    every = dataset.mask_flag_enums  # one call: it builds every band's flags (TIFF allows 65,535 bands)
    flags = [every[b - 1] for b in chosen]
    if out_shape is None:
        out_shape = ((int(window.height), int(window.width)) if window is not None
                     else (dataset.height, dataset.width))
    if all(MaskFlags.all_valid in f for f in flags):
        return np.ones(out_shape, dtype=bool)
    if all(MaskFlags.per_dataset in f for f in flags):
        chosen = chosen[:1]  # one mask for every band
    valid = np.zeros(out_shape, dtype=bool)
    for band in chosen:
        valid |= dataset.read_masks(band, window=window, out_shape=out_shape, resampling=Resampling.nearest) > 0
    return valid


def raster_valid_mask(dataset: DatasetReader | WarpedVRT, bands: tuple[int, ...], strip_pixels: int = 2**20) -> np.ndarray:
    """Boolean (height, width) mask of the whole raster's valid pixels, as the tiles read them:
    ``window_valid_mask`` of ``bands`` (1-based), with non-finite pixels of float data invalid
    also when no nodata value says so. Read in strips of about ``strip_pixels``, so a float
    raster's bands are never held whole (the mask is)."""
    floating = np.issubdtype(np.dtype(dataset.dtypes[bands[0] - 1]), np.floating)
    valid = np.empty((dataset.height, dataset.width), dtype=bool)
    rows = max(1, strip_pixels // max(1, dataset.width))
    for row in range(0, dataset.height, rows):
        window = Window(0, row, dataset.width, min(rows, dataset.height - row))
        data = dataset.read(list(bands), window=window) if floating else None
        valid[row:row + int(window.height)] = window_valid_mask(dataset, window, data, bands)
    return valid


def has_valid_pixel(dataset: DatasetReader | WarpedVRT, bands: tuple[int, ...],
                    chunks: Iterable[tuple[Window, bytes | None]] | None = None, strip_pixels: int = 2**20) -> bool:
    """Whether any pixel of ``bands`` (1-based) is valid by ``raster_valid_mask``'s rule, read at
    full resolution until the first valid one. No read at all for integer bands GDAL marks all
    valid. ``chunks``: the raster's stored chunks as (window, key of its bytes or None), as
    ``tiles.tiff_chunks.stored_chunks`` gives them: a chunk whose key was read already is not read
    again; without them the raster is read in windows of whole blocks (about ``strip_pixels``).

    Why: a service must refuse an all-nodata upload at once (the worker failed its job later),
    whatever its size; a decimated read can miss a thin valid strip, so only a full-resolution one
    refuses, and the chunks' keys make that a few reads for a fill-valued raster."""
    floating = np.issubdtype(np.dtype(dataset.dtypes[bands[0] - 1]), np.floating)
    every = dataset.mask_flag_enums  # one call: it builds every band's flags
    if not floating and all(MaskFlags.all_valid in every[b - 1] for b in bands):
        return True
    seen: set[bytes] = set()
    for window, key in chunks if chunks is not None else ((w, None) for w in block_windows(dataset, strip_pixels)):
        if key is not None:
            if key in seen:  # the same bytes as a chunk found all invalid
                continue
            seen.add(key)
        data = dataset.read(list(bands), window=window) if floating else None
        if window_valid_mask(dataset, window, data, bands).any():
            return True
    return False


def block_windows(dataset: DatasetReader | WarpedVRT, max_pixels: int = 2**20) -> Iterator[Window]:
    """``dataset``'s windows of whole blocks (a row of blocks, cut across into runs of about
    ``max_pixels``), row by row: each block is decoded once, not once per strip that crosses it."""
    block_height, block_width = dataset.block_shapes[0]
    block_height, block_width = max(1, min(block_height, dataset.height)), max(1, min(block_width, dataset.width))
    rows = block_height * max(1, max_pixels // (block_height * dataset.width))
    cols = block_width * max(1, max_pixels // (rows * block_width))
    for row in range(0, dataset.height, rows):
        for col in range(0, dataset.width, cols):
            yield Window(col, row, min(cols, dataset.width - col), min(rows, dataset.height - row))


def finite_only(valid: np.ndarray, data: np.ndarray | None) -> np.ndarray:
    """``valid`` with non-finite pixels of float ``data`` (bands, h, w) marked invalid, in place."""
    if data is not None and np.issubdtype(data.dtype, np.floating):
        valid &= np.isfinite(data).all(axis=0)
    return valid


def alpha_mask_band(dataset: DatasetReader | WarpedVRT, bands: tuple[int, ...]) -> int | None:
    """1-based index of the uint8 alpha band that is the selected bands' mask, else None.

    Why: such a mask can be read in the same call as the bands (``alpha > 0`` is GDAL's own
    mask then). Through a WarpedVRT a separate mask read runs the warper over the source a
    second time unless GDAL's block cache still holds every source block (zanzibar_z21_1 down
    to 1.1 m: half the time with a small cache).
    """
    every = dataset.mask_flag_enums  # one call: it builds every band's flags
    flags = [every[b - 1] for b in bands]
    if not all(MaskFlags.per_dataset in f and MaskFlags.alpha in f for f in flags):
        return None
    alphas = [i + 1 for i, ci in enumerate(dataset.colorinterp) if ci == ColorInterp.alpha]
    if len(alphas) != 1 or dataset.dtypes[alphas[0] - 1] != "uint8":
        return None  # GDAL rescales wider alpha bands into its mask; leave that to it
    return alphas[0]


def valid_fraction(valid: np.ndarray) -> float:
    """Fraction of True pixels (0.0 for an empty array)."""
    return float(valid.mean()) if valid.size else 0.0
