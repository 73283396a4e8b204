"""``copy_prediction``: one input's predict outputs given to another input of the same content.

Why: a batch holding the same scene under two names (``a.tif`` and ``copy_of_a.tif``, or a link)
ran the models on each. The second is now given the first's outputs (``tiles.same_content`` finds
it; ``tiles.batch.run_batch`` copies once the first is in place), each folder standing alone
(copies, not links: deleting or editing one leaves the other) and naming its own input, as a run
of its own would: report.json's ``input`` and ``input_file`` (what a later batch compares to skip
it), each building's ``source``; ``same_content_as`` names the input whose run made them.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from geoseg.options import PredictOptions
from geoseg.request_record import request_record
from geoseg.strict_json import json_safe
from tiles.rasterpath import RasterPath, raster_name

__all__ = ["copy_prediction"]

#: the outputs that name the input in their content; any other is copied byte for byte
_BUILDING_FILES = ("buildings.gpkg", "buildings.geojson")


def copy_prediction(source: Path, input_path: RasterPath, out_dir: Path, options: PredictOptions) -> list[str]:
    """Write into ``out_dir`` the outputs in ``source`` (a finished predict folder of another input
    with the same content), as made for ``input_path`` with ``options``; returns its report's
    warnings (as a batch job's ``_predict_into`` does). report.json is written last."""
    report = json.loads((source / "report.json").read_text())
    out_dir.mkdir(parents=True, exist_ok=True)
    names = [n for n in report.get("outputs", []) if n != "report.json"]
    for name in names:
        if name not in _BUILDING_FILES:
            shutil.copyfile(source / name, out_dir / name)
    if "buildings.gpkg" in names:
        _write_buildings_as(source, out_dir, raster_name(input_path), "buildings.geojson" in names)
    request = request_record(input_path, options)
    report = {**report, "input": request["input"], "input_file": request["input_file"],
              "same_content_as": report.get("same_content_as") or report.get("input")}  # whose run made them
    (out_dir / "report.json").write_text(json.dumps(json_safe(report), indent=2, default=str, allow_nan=False) + "\n")
    return list(dict.fromkeys(report.get("warnings", [])))


def _write_buildings_as(source: Path, out_dir: Path, name: str, geojson: bool) -> None:
    """``source``'s buildings written into ``out_dir`` by the pipeline's own writer, each building's
    ``source`` now ``name`` (the GeoPackage keeps the geometries' exact doubles, so the GeoJSON made
    from them is the one the pipeline wrote, but for that field)."""
    import geopandas as gpd

    from geoseg.footprints import write_buildings

    frame = gpd.read_file(source / "buildings.gpkg", layer="buildings", engine="pyogrio")
    frame["source"] = name
    write_buildings(frame, out_dir, geojson)
