"""A real scene cut into a grid of GeoTIFF tiles, as orthophotos are delivered (the mosaic tests)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.windows import Window

from geoseg.paths import data_root

#: 768 x 512 px at 0.3 m (EPSG:3857, JPEG with an internal mask)
SCENE = data_root() / "buildings" / "kampala" / "kampala_z19_1.tif"


def cut_grid(scene: Path, out: Path, nx: int = 2, ny: int = 2, skip: tuple[str, ...] = (),
             masks: bool = True) -> list[Path]:
    """``scene`` cut into ``nx`` x ``ny`` tiles ``out/t_<col><row>.tif`` (RGB, deflate), with the
    scene's mask (``masks``) or none (RGB without nodata or alpha); tiles named in ``skip`` (e.g.
    ``"10"``: column 1, row 0) are left out. Returns the tiles written, in name order."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    with rasterio.open(scene) as src:
        xs = [round(i * src.width / nx) for i in range(nx + 1)]
        ys = [round(j * src.height / ny) for j in range(ny + 1)]
        for i in range(nx):
            for j in range(ny):
                if f"{i}{j}" in skip:
                    continue
                window = Window(xs[i], ys[j], xs[i + 1] - xs[i], ys[j + 1] - ys[j])
                path = out / f"t_{i}{j}.tif"
                write_tile(path, src.read(window=window), src.window_transform(window), src.crs,
                           src.dataset_mask(window=window) if masks else None)
                written.append(path)
    return sorted(written)


def write_tile(path: Path, data: np.ndarray, transform: Affine, crs, mask: np.ndarray | None = None,
               **profile) -> Path:
    """A GeoTIFF of ``data`` (bands, h, w) labelled RGB for three uint8 bands."""
    kwargs = {"driver": "GTiff", "width": data.shape[2], "height": data.shape[1], "count": data.shape[0],
              "dtype": data.dtype.name, "crs": crs, "transform": transform, "compress": "deflate"}
    if data.shape[0] == 3 and data.dtype == np.uint8:
        kwargs["photometric"] = "RGB"
    with rasterio.open(path, "w", **(kwargs | profile)) as dst:
        dst.write(data)
        if mask is not None:
            dst.write_mask(mask)
    return path


def write_paletted(path: Path, index: np.ndarray, table: np.ndarray, transform: Affine, crs,
                   nodata: int | None = None) -> Path:
    """A one-band ``PHOTOMETRIC=PALETTE`` GeoTIFF of ``index`` (h, w) with colour table ``table``
    (256, 4) and, optionally, a nodata index."""
    profile = {"driver": "GTiff", "width": index.shape[1], "height": index.shape[0], "count": 1, "dtype": "uint8",
               "crs": crs, "transform": transform, "photometric": "palette"}
    with rasterio.open(path, "w", **profile, **({"nodata": nodata} if nodata is not None else {})) as dst:
        dst.write(index, 1)
        dst.write_colormap(1, {i: tuple(int(v) for v in table[i]) for i in range(256)})
    return path


def quantized(rgb: np.ndarray, colours: int = 63) -> tuple[np.ndarray, np.ndarray]:
    """``rgb`` (3, h, w) uint8 as colour-table indices (h, w) and their table (256, 4): ``colours``
    opaque entries, the rest transparent black."""
    from PIL import Image

    image = Image.fromarray(np.moveaxis(rgb, 0, -1)).quantize(colours)
    table = np.zeros((256, 4), np.uint8)
    table[:colours, :3] = np.reshape(image.getpalette()[:3 * colours], (colours, 3))
    table[:colours, 3] = 255
    return np.array(image), table
