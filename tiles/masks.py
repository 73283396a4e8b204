"""Valid-pixel masks of raster windows.

Why: predictions over nodata and chips full of fill are the commonest tiling bugs.
GDAL already merges every way a raster can say "no data" (nodata value, alpha
band, internal or external ``.msk`` mask) into the dataset mask; we add NaN/inf
checks for float data, which GDAL only masks when NaN is declared as nodata.
"""
from __future__ import annotations

import numpy as np
from rasterio.enums import MaskFlags
from rasterio.windows import Window


def window_valid_mask(dataset, window: Window, data: np.ndarray | None = None,
                      bands: tuple[int, ...] | None = None) -> np.ndarray:
    """Boolean (h, w) mask of valid pixels of ``window`` (which must lie inside ``dataset``).

    ``data`` (bands, h, w), when given, also marks non-finite float pixels invalid.
    ``bands`` (1-based) lets masks shared by all bands (alpha, per-dataset ``.msk``)
    be read once from one band, and skips reading masks that say "all valid";
    per-band nodata masks still go through GDAL's dataset mask.
    """
    flags = [dataset.mask_flag_enums[b - 1] for b in (bands or range(1, dataset.count + 1))]
    h, w = int(window.height), int(window.width)
    if all(MaskFlags.all_valid in f for f in flags):
        valid = np.ones((h, w), dtype=bool)
    elif all(MaskFlags.per_dataset in f for f in flags):
        valid = dataset.read_masks(bands[0] if bands else 1, window=window) > 0
    else:
        valid = dataset.dataset_mask(window=window) > 0
    if data is not None and np.issubdtype(data.dtype, np.floating):
        valid &= np.isfinite(data).all(axis=0)
    return valid


def valid_fraction(valid: np.ndarray) -> float:
    """Fraction of True pixels (0.0 for an empty array)."""
    return float(valid.mean()) if valid.size else 0.0
