"""Assertions and small fixtures several test modules share (imported as ``from checks import ...``)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import rasterio
import shapely
from rasterio.enums import ColorInterp
from rasterio.windows import Window

CLASSES = {"0": "nodata", "1": "building", "2": "road", "3": "vegetation", "4": "water", "5": "land"}


def classmap_prediction(tmp_path: Path, truth: np.ndarray | None = None) -> tuple[Path, Path]:
    """A prediction folder holding an 8 x 4 class map (columns 0-3 building, 4-7 vegetation), and a
    truth raster on the same grid (``truth``, default all vegetation)."""
    pred_dir = tmp_path / "pred"
    pred_dir.mkdir()
    profile = dict(driver="GTiff", width=8, height=4, count=1, dtype="uint8", crs="EPSG:3857",
                   transform=rasterio.Affine(1, 0, 0, 0, -1, 4))
    pred = np.ones((4, 8), np.uint8)
    pred[:, 4:] = 3
    with rasterio.open(pred_dir / "classmap.tif", "w", **profile) as ds:
        ds.write(pred, 1)
        ds.update_tags(classes=json.dumps(CLASSES))
    with rasterio.open(tmp_path / "truth.tif", "w", **profile) as ds:
        ds.write(np.full((4, 8), 3, np.uint8) if truth is None else truth, 1)
    return pred_dir, tmp_path / "truth.tif"


def assert_one_line_error(result, command: str, *words: str) -> None:
    """A CLI user error: exit 1, no escaped Python error, one stderr line 'geoseg COMMAND: error: ...'."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception  # not an escaped Python error
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"geoseg {command}: error:"), result.stderr
    for word in words:
        assert word in lines[0], lines[0]


def assert_usage_error(result, command: str, *words: str) -> None:
    """A CLI usage error (an option's value or combination refused before any input is read): exit 2,
    one stderr line 'geoseg COMMAND: error: ... (see 'geoseg COMMAND --help')'."""
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), result.exception  # not an escaped Python error
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"geoseg {command}: error:"), result.stderr
    assert lines[0].endswith(f"(see 'geoseg {command} --help')"), lines[0]
    for word in words:
        assert word in lines[0], lines[0]


def walls_between(polygons: list) -> dict[tuple[int, int], tuple[float, float]]:
    """(i, j) -> (length of the boundary the two polygons share, area of their overlap), touching pairs."""
    geoms = np.asarray(polygons, dtype=object)
    left, right = shapely.STRtree(geoms).query(geoms, predicate="intersects")
    pair = left < right
    left, right = left[pair], right[pair]
    wall = shapely.length(shapely.intersection(shapely.boundary(geoms[left]), shapely.boundary(geoms[right])))
    overlap = shapely.area(shapely.intersection(geoms[left], geoms[right]))
    return {(int(i), int(j)): (float(w), float(o)) for i, j, w, o in zip(left, right, wall, overlap)}


def unlabelled_bgr(scene: Path, path: Path, nir: bool = False, size: int = 256) -> Path:
    """A crop of the RGB ``scene`` stored blue, green, red (+ a near-infrared stand-in band) without colour
    labels (grey, undefined, ...), as BGR/BGRN satellite products come; its RGB crop beside it as rgb.tif."""
    with rasterio.open(scene) as src:
        window = Window(0, 0, size, size)
        data, mask = src.read(window=window), src.dataset_mask(window=window)
        profile = {k: v for k, v in src.profile.items()
                   if k not in ("photometric", "compress", "jpeg_quality", "blockxsize", "blockysize", "interleave")}
        profile.update(width=size, height=size, transform=src.window_transform(window), compress="deflate")
    with rasterio.open(path.with_name("rgb.tif"), "w", **profile, photometric="RGB") as dst:
        dst.write(data)
        dst.write_mask(mask)
    stored = np.concatenate([data[::-1], data[:1]]) if nir else data[::-1]
    with rasterio.open(path, "w", **(profile | {"count": len(stored)}), photometric="MINISBLACK") as dst:
        dst.write(stored)
        dst.write_mask(mask)
        dst.colorinterp = (ColorInterp.gray, *[ColorInterp.undefined] * (len(stored) - 1))
    return path


def one_thread_cpu_seconds(models: list, x, repeats: list[int]) -> list[float]:
    """CPU seconds per forward of each model on ``x`` (one warm-up call first), with torch on one thread,
    side by side: the 2-core machine is shared, so process time is measured, not wall time."""
    import time

    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    seconds = []
    try:
        with torch.no_grad():
            for model, n in zip(models, repeats):
                model(x)
                start = time.process_time()
                for _ in range(n):
                    model(x)
                seconds.append((time.process_time() - start) / n)
    finally:
        torch.set_num_threads(threads)
    return seconds
