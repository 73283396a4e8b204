"""Job runners the API tests inject instead of the real pipeline (they run in worker processes).

They honour the pipeline contract (``runner(input, out_dir, options, progress) -> report``)
and write real files from the real uploaded raster: the footprint as a building
polygon (GeoJSON in WGS84, GeoPackage in the source CRS), a small class map with a
colour table, and a report. The test at the bottom checks the fakes themselves.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.warp import transform_geom
from shapely.geometry import box, shape

from tiles.qml import write_paletted_qml

SLEEP_ENV = "GEOSEG_TEST_RUNNER_SECONDS"


def footprint_runner(input_path: Path, out_dir: Path, options: dict[str, Any], progress) -> dict[str, Any]:
    """Fast fake: the scene footprint is 'the building'."""
    progress(0.1, "reading")
    seconds = float(os.environ.get(SLEEP_ENV, "0"))
    steps = max(1, int(seconds / 0.2))
    for i in range(steps if seconds else 0):
        time.sleep(seconds / steps)
        progress(0.1 + 0.7 * (i + 1) / steps, "inference")
    with rasterio.open(input_path) as src:
        footprint = box(*src.bounds)
        crs, transform, width, height = src.crs, src.transform, src.width, src.height
    written = []
    if options.get("buildings", True):
        import geopandas as gpd  # here: the failing/crashing fakes start faster without it

        geom = transform_geom(crs, "EPSG:4326", footprint.__geo_interface__)
        fc = {"type": "FeatureCollection",
              "features": [{"type": "Feature", "geometry": geom, "properties": {"confidence": 1.0}}]}
        (out_dir / "buildings.geojson").write_text(json.dumps(fc))
        gpd.GeoDataFrame({"confidence": [1.0]}, geometry=[footprint], crs=crs).to_file(
            out_dir / "buildings.gpkg", driver="GPKG")
        written += ["buildings.geojson", "buildings.gpkg"]
    if options.get("classmap", True):
        profile = dict(driver="GTiff", width=width, height=height, count=1, dtype="uint8",
                       crs=crs, transform=transform, tiled=True, compress="deflate")
        with rasterio.open(out_dir / "classmap.tif", "w", **profile) as dst:
            dst.write(np.ones((1, height, width), dtype="uint8"))
            dst.write_colormap(1, {0: (0, 0, 0, 255), 1: (255, 0, 0, 255)})
        write_paletted_qml(out_dir / "classmap.tif", [(1, "building", (255, 0, 0, 255))])
        written += ["classmap.tif", "classmap.qml"]
    report = {"input": input_path.name, "options": options, "outputs": written, "n_buildings": 1}
    (out_dir / "report.json").write_text(json.dumps(report))
    progress(1.0, "done")
    return report


def reading_runner(input_path: Path, out_dir: Path, options: dict[str, Any], progress) -> dict[str, Any]:
    """Decodes every pixel first, as the pipeline does: a corrupt block fails as in production."""
    progress(0.1, "reading")
    with rasterio.open(input_path) as src:
        src.read()
    return footprint_runner(input_path, out_dir, options, progress)


def failing_runner(input_path: Path, out_dir: Path, options: dict[str, Any], progress) -> dict[str, Any]:
    """Fails like an unusable input (a ValueError): no retry expected."""
    progress(0.2, "reading")
    raise ValueError("no valid pixel in the scene")


def crashing_runner(input_path: Path, out_dir: Path, options: dict[str, Any], progress) -> dict[str, Any]:
    """Dies like an out-of-memory kill mid-write (a partial output left behind): retried, then failed."""
    progress(0.2, "inference")
    partial = out_dir / ".partial-classmap"
    partial.mkdir()
    (partial / "probs.tif").write_bytes(b"\0" * 4096)
    os._exit(137)


def freezing_runner(input_path: Path, out_dir: Path, options: dict[str, Any], progress) -> dict[str, Any]:
    """Freezes the whole process (heartbeat included), like a worker wedged in native code."""
    import signal

    progress(0.3, "inference")
    os.kill(os.getpid(), signal.SIGSTOP)
    return {}


def hanging_runner(input_path: Path, out_dir: Path, options: dict[str, Any], progress) -> dict[str, Any]:
    """An upload named ``hang*.tif`` blocks for ever with the process alive (its heartbeat thread
    beats on), like a deadlock in native code that released the GIL; others run as usual."""
    import threading

    if str(options.get("_input_name") or "").startswith("hang"):
        progress(0.3, "inference")
        threading.Event().wait()
    return footprint_runner(input_path, out_dir, options, progress)


#: colours of the class map ``classes_runner`` writes: 0 (no data) transparent, as geoseg's class maps
CLASS_COLOURS = {0: (0, 0, 0, 0), 1: (230, 25, 75, 255), 2: (60, 180, 75, 255), 3: (0, 130, 200, 255)}


def classes_runner(input_path: Path, out_dir: Path, options: dict[str, Any], progress) -> dict[str, Any]:
    """A class map like geoseg's (a COG with overviews, nodata 0 transparent): a no-data left quarter,
    then classes 1, 2 and 3 in horizontal bands; the rest as ``footprint_runner``. An upload named
    ``hang*.tif`` blocks for ever, as with ``hanging_runner``."""
    report = hanging_runner(input_path, out_dir, {**options, "classmap": False}, progress)
    if options.get("classmap", True):
        from tiles.cog import write_cog

        with rasterio.open(input_path) as src:
            profile = {"driver": "GTiff", "width": src.width, "height": src.height, "count": 1, "dtype": "uint8",
                       "nodata": 0, "crs": src.crs, "transform": src.transform, "tiled": True,
                       "blockxsize": 256, "blockysize": 256}
        rows = np.arange(profile["height"])[:, None] * 3 // profile["height"] + 1
        classes = np.broadcast_to(rows, (profile["height"], profile["width"])).astype("uint8").copy()
        classes[:, : profile["width"] // 4] = 0
        plain = out_dir / "classmap_plain.tif"
        with rasterio.open(plain, "w", **profile) as dst:
            dst.write(classes, 1)
        write_cog(plain, out_dir / "classmap.tif", colormap=CLASS_COLOURS)
        plain.unlink()
        report["outputs"].append("classmap.tif")
    return report


def progress_write_fails_once_runner(input_path: Path, out_dir: Path, options: dict[str, Any],
                                     progress) -> dict[str, Any]:
    """The job table refuses one progress write (locked past its timeout), then works again."""
    import sqlite3

    from api.jobs import JobStore

    real = JobStore.set_progress

    def refuse_once(self, *args, **kwargs):
        JobStore.set_progress = real
        raise sqlite3.OperationalError("database is locked")

    JobStore.set_progress = refuse_once
    return footprint_runner(input_path, out_dir, options, progress)


def test_footprint_runner_writes_all_outputs(tmp_path):
    from geoseg.paths import data_root

    scene = data_root() / "buildings/kampala/kampala_z19_2.tif"
    seen = []
    report = footprint_runner(scene, tmp_path, {"buildings": True, "classmap": True},
                              lambda f, s: seen.append((f, s)))
    assert sorted(report["outputs"]) == ["buildings.geojson", "buildings.gpkg", "classmap.qml", "classmap.tif"]
    fc = json.loads((tmp_path / "buildings.geojson").read_text())
    lon, lat = shape(fc["features"][0]["geometry"]).centroid.coords[0]
    assert 32 < lon < 33 and 0 < lat < 1  # Kampala, in lon/lat order
    assert seen[-1] == (1.0, "done")
