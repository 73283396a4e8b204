"""The optional ``mask`` part of an upload: the image's valid area, stored beside it as GDAL's
external mask (``input.tif.msk``), which every reader of the job's input then applies.

Why: a GeoTIFF whose valid area is an external ``scene.tif.msk`` lost it when uploaded alone
(one file per request), so its nodata area was predicted as imagery. The client's raster is not
stored as sent: GDAL ignores a ``.msk`` without its ``INTERNAL_MASK_FLAGS_<band>`` tags (a mask made
with any tool but GDAL's own), and a ``.msk`` replaces the image's nodata value and alpha band as
its mask. The stored one is written here with the tags, valid where the client's mask is non-zero
AND the image's own mask of the bands the job reads is valid: a mask part can only take area away.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import MaskFlags
from rasterio.errors import RasterioError

from api.errors import chain_messages
from api.validate import TIFF_MAGIC, RasterLimits, UploadRejected, check_tiff_layout
from tiles.masks import block_windows, window_valid_mask

#: what a mask part is, said in each refusal
_WANTED = ("send a one-band integer GeoTIFF of the image's size, 0 where the image has no data "
           "(GDAL's scene.tif.msk as it is, or any 0/255 raster)")
#: GDAL's mask flag of a mask shared by all bands
_GMF_PER_DATASET = 2


def sidecar_of(image: Path) -> Path:
    """Where GDAL looks for ``image``'s external mask."""
    return image.with_name(image.name + ".msk")


def check_mask_file(path: Path, width: int, height: int, limits: RasterLimits) -> None:
    """Refuse (4xx, one line naming the mask part) a mask that is empty, not a TIFF, damaged,
    stored in blocks too large to decode, not one band of integers, or not ``width`` x ``height``."""
    size = path.stat().st_size
    if size == 0:
        raise UploadRejected(400, f"the mask part is empty; {_WANTED}")
    with open(path, "rb") as f:
        if f.read(4) not in TIFF_MAGIC:
            raise UploadRejected(415, f"the mask part is not a TIFF; {_WANTED}")
    try:
        check_tiff_layout(path, limits)
    except UploadRejected as exc:
        raise UploadRejected(exc.status_code, f"the mask part: {exc.detail}") from exc
    try:
        with rasterio.Env(GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR"), rasterio.open(path, driver="GTiff") as src:
            shape, count, dtype = (src.width, src.height), src.count, src.dtypes[0]
    except RasterioError as exc:
        raise UploadRejected(400, f"the mask part cannot be read as a GeoTIFF ({exc}); {_WANTED}") from exc
    if shape != (width, height):
        raise UploadRejected(422, f"the mask is {shape[0]} x {shape[1]} pixels, the image {width} x {height}: "
                                  f"{_WANTED}")
    if count != 1 or not np.issubdtype(np.dtype(dtype), np.integer):
        raise UploadRejected(422, f"the mask has {count} band(s) of {dtype}; {_WANTED}")


def write_mask_sidecar(image: Path, mask: Path, bands: tuple[int, ...]) -> Path:
    """Write ``image``'s ``.msk`` (``sidecar_of``): valid where ``mask`` is non-zero and ``image``'s
    own mask of ``bands`` (1-based) is valid, tagged so that GDAL applies it to every band; read and
    written block by block (a paletted image's too: its RGBA expansion reads the ``.msk``). Refuses
    (422) an image whose own mask GDAL would read instead: an internal mask."""
    target = sidecar_of(image)
    try:
        with rasterio.Env(GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR"), \
                rasterio.open(image) as src, rasterio.open(mask) as client:
            flags = src.mask_flag_enums[bands[0] - 1]
            if MaskFlags.per_dataset in flags and MaskFlags.alpha not in flags:
                raise UploadRejected(422, "the image has an internal mask, which GDAL reads instead of a .msk: "
                                          "send it without a mask part, or rewrite it with the mask you want "
                                          "(e.g. rasterio's write_mask) and without the mask part")
            profile = {"driver": "GTiff", "width": src.width, "height": src.height, "count": 1, "dtype": "uint8",
                       "tiled": True, "blockxsize": 512, "blockysize": 512, "compress": "deflate"}
            with rasterio.open(target, "w", **profile) as out:
                out.update_tags(**{f"INTERNAL_MASK_FLAGS_{band}": str(_GMF_PER_DATASET)
                                   for band in range(1, src.count + 1)})
                for window in block_windows(src):
                    valid = window_valid_mask(src, window, bands=bands) & (client.read(1, window=window) != 0)
                    out.write(valid.astype(np.uint8) * 255, 1, window=window)
    except RasterioError as exc:
        target.unlink(missing_ok=True)
        raise UploadRejected(400, f"the mask part or the image cannot be read ({' <- '.join(chain_messages(exc))}); "
                                  "upload the complete files again") from exc
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return target
