"""`geoseg eval --coverage`: only the mapped part of a scene is scored (tiles.mapped_area).

Buildings predicted where nobody mapped were false positives. Real scene kampala_z19_1 and its
labels; the prediction is the labels lying well inside the scene plus small "houses" on label-free
ground of its east half; the coverage is the scene's west half, written in lon/lat.
"""
from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from checks import assert_one_line_error
from typer.testing import CliRunner

from geoseg.cli import app
from geoseg.evaluate import evaluate_buildings
from geoseg.paths import data_root

SCENE = data_root() / "buildings" / "kampala" / "kampala_z19_1.tif"
LABELS = data_root() / "buildings" / "kampala" / "labels.geojson"
runner = CliRunner()


def _scene_labels() -> tuple[rasterio.crs.CRS, shapely.Polygon, list, float]:
    """The scene's CRS, its box 5 m inside its edges, the labels within that box and its middle x."""
    with rasterio.open(SCENE) as src:
        crs, b = src.crs, src.bounds
    box = shapely.box(*b).buffer(-5)
    labels = gpd.read_file(LABELS).to_crs(crs)
    return crs, box, labels[labels.within(box)].geometry.tolist(), (b.left + b.right) / 2


def _prediction(tmp_path: Path) -> tuple[Path, int, list, float]:
    """A prediction folder: the labels inside the scene and 3 x 3 m boxes on label-free ground of the
    east half (x > middle + 10 m); returns it, the count of those boxes, the labels and the middle x."""
    crs, box, inside, mid = _scene_labels()
    taken = shapely.STRtree(gpd.read_file(LABELS).to_crs(crs).geometry.values)
    x0, y0, x1, y1 = box.bounds
    fakes = [shapely.box(x, y, x + 3, y + 3) for x in np.arange(mid + 10, x1 - 3, 9) for y in np.arange(y0, y1 - 3, 9)]
    fakes = [f for f in fakes if not taken.query(f.buffer(2), predicate="intersects").size][:12]
    assert len(fakes) == 12 and len(inside) >= 20
    pred_dir = tmp_path / "pred"
    pred_dir.mkdir()
    (pred_dir / "report.json").write_text(json.dumps({"input": str(SCENE)}))
    gpd.GeoDataFrame(geometry=inside + fakes, crs=crs).to_file(pred_dir / "buildings.gpkg", driver="GPKG",
                                                               engine="pyogrio")
    return pred_dir, len(fakes), inside, mid


def _west(path: Path, mid: float, crs) -> Path:
    with rasterio.open(SCENE) as src:
        b = src.bounds
    west = shapely.box(b.left - 20, b.bottom - 20, mid, b.top + 20)
    gpd.GeoDataFrame(geometry=[west], crs=crs).to_crs(4326).to_file(path)
    return path


def test_buildings_found_outside_the_coverage_are_no_false_positives(tmp_path):
    pred_dir, n_fake, inside, mid = _prediction(tmp_path)
    west = _west(tmp_path / "west.geojson", mid, gpd.read_file(pred_dir / "buildings.gpkg").crs)
    plain = evaluate_buildings(pred_dir, LABELS)
    assert plain["polygon"]["tp"] == len(inside) and plain["polygon"]["fp"] == n_fake
    assert plain["pixel"]["fp"] > 0
    assert not {"coverage", "mapped_pixels", "n_predicted_outside_coverage"} & set(plain)  # as ever without it
    mapped = evaluate_buildings(pred_dir, LABELS, coverage=west)
    # every prediction inside the mapped half is a label: nothing false is left, at either level
    assert mapped["polygon"]["fp"] == 0 and mapped["pixel"]["fp"] == 0
    assert mapped["pixel"]["precision"] == pytest.approx(1.0) and mapped["polygon"]["precision"] == pytest.approx(1.0)
    # the labels counted are those at least half west of the middle, as the predictions counted
    west_labels = [g for g in inside if shapely.intersection(g, shapely.box(mid - 1e4, -1e8, mid, 1e8)).area
                   >= 0.5 * g.area]
    assert mapped["polygon"]["tp"] == mapped["n_predicted"] == len(west_labels) > 0
    assert mapped["n_predicted_outside_coverage"] == len(inside) + n_fake - len(west_labels)
    assert mapped["n_truth"] < plain["n_truth"]
    assert 0.45 * plain["valid_pixels"] < mapped["mapped_pixels"] < 0.55 * plain["valid_pixels"]
    result = runner.invoke(app, ["eval", str(pred_dir), "--labels", str(LABELS), "--coverage", str(west)])
    assert result.exit_code == 0, result.output
    assert f"buildings inside west.geojson: {len(west_labels)} predicted" in result.stdout
    written = json.loads((pred_dir / "eval_buildings.json").read_text())
    assert written["coverage"] == str(west) and written["polygon"] == mapped["polygon"]


def test_a_bad_coverage_is_one_line(tmp_path):
    pred_dir, _, _, mid = _prediction(tmp_path)
    crs = gpd.read_file(pred_dir / "buildings.gpkg").crs
    with rasterio.open(SCENE) as src:
        b = src.bounds
    lines = tmp_path / "lines.gpkg"
    gpd.GeoDataFrame(geometry=[shapely.LineString([(b.left, b.bottom), (b.right, b.top)])], crs=crs).to_file(lines)
    far = tmp_path / "far.gpkg"  # 1 km north of the scene
    gpd.GeoDataFrame(geometry=[shapely.box(b.left, b.top + 1000, b.right, b.top + 1200)], crs=crs).to_file(far)
    cases = ((tmp_path / "nope.geojson", ("--coverage", "nope.geojson: no such file or folder")),
             (lines, ("lines.gpkg holds LineString features, not polygons",)),
             (far, ("the --coverage area (far.gpkg) does not overlap the valid pixels of the predicted scene "
                    "kampala_z19_1.tif",)))
    for given, words in cases:
        result = runner.invoke(app, ["eval", str(pred_dir), "--labels", str(LABELS), "--coverage", str(given)])
        assert_one_line_error(result, "eval", *words)
        assert not (pred_dir / "eval_buildings.json").exists()
    truth = runner.invoke(app, ["eval", str(pred_dir), "--truth", str(SCENE), "--coverage", str(far)])
    assert truth.exit_code == 2 and "--coverage says where building labels are complete" in truth.output
