"""`geoseg eval`: hand-made cases with known answers, on real scene grids."""
from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
import shapely
from typer.testing import CliRunner

from geoseg.cli import app
from geoseg.evaluate import (
    EvaluationError,
    classmap_scores,
    confusion_matrix,
    evaluate_buildings,
    evaluate_classmap,
    match_polygons,
    pixel_scores,
    polygon_scores,
)
from geoseg.paths import data_root

from checks import classmap_prediction

SCENE = data_root() / "buildings" / "kampala" / "kampala_z19_1.tif"
LABELS = data_root() / "buildings" / "kampala" / "labels.geojson"


def test_pixel_scores_known_answer():
    pred = np.zeros((4, 4), bool)
    truth = np.zeros((4, 4), bool)
    pred[0:2, 0:2] = True  # 4 px
    truth[0:2, 1:3] = True  # 4 px, 2 shared
    s = pixel_scores(pred, truth)
    assert s["iou"] == pytest.approx(2 / 6)
    assert s["precision"] == pytest.approx(0.5) and s["recall"] == pytest.approx(0.5)
    assert s["f1"] == pytest.approx(0.5)
    valid = np.ones((4, 4), bool)
    valid[:, 0] = False  # the only false positive pixels are outside the valid area
    assert pixel_scores(pred, truth, valid)["precision"] == pytest.approx(1.0)


def test_polygon_matching_is_one_to_one_at_iou_half():
    truth = [shapely.box(0, 0, 10, 10), shapely.box(20, 0, 30, 10)]
    pred = [
        shapely.box(0, 0, 10, 8),  # IoU 0.8 with truth 0
        shapely.box(0, 0, 10, 7),  # IoU 0.7 with truth 0: a duplicate, must not match too
        shapely.box(25, 0, 35, 10),  # IoU 1/3 with truth 1: below threshold
    ]
    matches = match_polygons(pred, truth)
    assert [(p, t) for p, t, _ in matches] == [(0, 0)]
    assert matches[0][2] == pytest.approx(0.8)
    s = polygon_scores(pred, truth)
    assert (s["tp"], s["fp"], s["fn"]) == (1, 2, 1)
    assert s["f1"] == pytest.approx(2 * (1 / 3) * 0.5 / (1 / 3 + 0.5))
    assert polygon_scores([], [])["f1"] == pytest.approx(1.0)  # nothing to find, nothing found


def test_classmap_scores_ignore_unlabeled_truth():
    truth = np.array([[0, 1, 1], [2, 2, 3]])
    pred = np.array([[5, 1, 2], [2, 2, 0]])  # pixel (0,0) ignored; (1,2) predicted nodata counts as wrong
    cm = confusion_matrix(truth, pred, 6)
    s = classmap_scores(cm, {1: "building", 2: "road", 3: "vegetation"})
    assert s["pixels"] == 5
    assert s["overall_accuracy"] == pytest.approx(3 / 5)
    assert s["per_class"]["building"]["iou"] == pytest.approx(1 / 2)
    assert s["per_class"]["road"]["iou"] == pytest.approx(2 / 3)
    assert s["per_class"]["vegetation"]["iou"] == pytest.approx(0.0)
    assert "5" not in s["per_class"]  # predicted only on an ignored pixel
    assert s["miou"] == pytest.approx((1 / 2 + 2 / 3 + 0) / 3)
    with pytest.raises(EvaluationError):
        confusion_matrix(truth, pred, 4)


def _fake_prediction(tmp_path: Path, geoms, crs) -> Path:
    pred_dir = tmp_path / "pred"
    pred_dir.mkdir()
    (pred_dir / "report.json").write_text(json.dumps({"input": str(SCENE)}))
    gpd.GeoDataFrame({"id": np.arange(len(geoms))}, geometry=list(geoms), crs=crs).to_file(
        pred_dir / "buildings.gpkg", driver="GPKG", engine="pyogrio")
    return pred_dir


def test_buildings_against_real_labels_known_answer(tmp_path):
    with rasterio.open(SCENE) as src:
        crs, bounds = src.crs, src.bounds
    labels = gpd.read_file(LABELS).to_crs(crs)
    box = shapely.box(*bounds).buffer(-5)  # well inside the scene
    inside = labels[labels.within(box)].geometry.tolist()
    assert len(inside) >= 6
    perfect = evaluate_buildings(_fake_prediction(tmp_path, inside, crs), LABELS)
    assert perfect["polygon"]["precision"] == pytest.approx(1.0)
    assert perfect["pixel"]["precision"] == pytest.approx(1.0)
    n_truth = perfect["n_truth"]
    assert n_truth >= len(inside)
    # half of them -> exactly those match, recall drops to half/n_truth
    half = inside[: len(inside) // 2]
    (tmp_path / "b").mkdir()
    scores = evaluate_buildings(_fake_prediction(tmp_path / "b", half, crs), LABELS)
    assert scores["polygon"]["tp"] == len(half)
    assert scores["polygon"]["recall"] == pytest.approx(len(half) / n_truth)
    assert scores["pixel"]["recall"] < perfect["pixel"]["recall"]


def test_a_perfect_prediction_scores_one_whatever_the_scene_edge_cuts(tmp_path):
    """Labels mostly off the scene are no truth, but the prediction of their visible part counted as a
    false positive: the labels clipped to the scene (all a perfect model sees) scored polygon F1 0.93-0.97.
    Such a prediction now counts neither way (n_ignored); the output says which rules it counted by."""
    with rasterio.open(SCENE) as src:
        crs, bounds = src.crs, src.bounds
    frame = shapely.box(*bounds)
    labels = gpd.read_file(LABELS).to_crs(crs)
    clipped = [g for g in shapely.intersection(shapely.make_valid(labels.geometry.values), frame)
               if not g.is_empty and g.area > 0]
    scores = evaluate_buildings(_fake_prediction(tmp_path, clipped, crs), LABELS)
    assert scores["n_labels_left_out_edge"] > 0  # the scene's edge cuts buildings, mostly off it
    assert scores["polygon"]["n_ignored"] == scores["n_labels_left_out_edge"]
    assert (scores["polygon"]["fp"], scores["polygon"]["fn"], scores["polygon"]["f1"]) == (0, 0, pytest.approx(1.0))
    assert scores["rules"]["polygon_match"].endswith("IoU >= 0.5")
    # a prediction off every label is still a false positive, near the edge or not
    corners = [shapely.box(x, y, x + 3, y + 3) for x in (bounds.left + 1, bounds.right - 4)
               for y in (bounds.bottom + 1, bounds.top - 4)]
    stray = next(c for c in corners if not labels.geometry.intersects(c).any())
    (tmp_path / "b").mkdir()
    with_stray = evaluate_buildings(_fake_prediction(tmp_path / "b", [*clipped, stray], crs), LABELS)
    assert (with_stray["polygon"]["fp"], with_stray["polygon"]["n_ignored"]) == (1, scores["polygon"]["n_ignored"])


def test_only_the_labels_near_the_scene_are_read_and_the_scores_are_the_same(tmp_path, monkeypatch):
    """A team scores each scene against its country-wide file: eval read every feature of it for
    every scene. It now reads the features near the scene (as ``geoseg tile`` does), with the
    same scores as against the scene's own labels."""
    import pandas as pd

    import tiles.labels

    with rasterio.open(SCENE) as src:
        crs, bounds = src.crs, src.bounds
    labels = gpd.read_file(LABELS)
    inside = labels.to_crs(crs)[labels.to_crs(crs).within(shapely.box(*bounds).buffer(-5))].geometry.tolist()
    far = [labels.set_geometry(labels.geometry.translate(xoff=dx, yoff=dy)) for dx in (-2, 2) for dy in (-1, 1)]
    country = tmp_path / "country.gpkg"
    pd.concat([*far[:2], labels, *far[2:]]).to_file(country)
    read: list[int] = []
    plain_read = tiles.labels.read_labels
    monkeypatch.setattr(tiles.labels, "read_labels", lambda *a, **k: read.append(len(r := plain_read(*a, **k))) or r)
    pred = _fake_prediction(tmp_path, inside, crs)
    scores, alone = evaluate_buildings(pred, country), evaluate_buildings(pred, LABELS)
    assert read and max(read) <= len(labels) < 5 * len(labels)
    for key in ("pixel", "polygon", "n_truth", "n_predicted"):
        assert scores[key] == alone[key]


def test_classmap_against_truth_raster(tmp_path):
    truth = np.ones((4, 8), np.uint8)
    truth[:, 6:] = 3
    truth[0, :] = 0
    pred_dir, _ = classmap_prediction(tmp_path, truth)
    s = evaluate_classmap(pred_dir, tmp_path / "truth.tif")
    # labelled rows 1..3: building truth 6 px/row, predicted 4 -> IoU 4/6; vegetation 2 vs 4 -> 2/4
    assert s["per_class"]["building"]["iou"] == pytest.approx(4 / 6)
    assert s["per_class"]["vegetation"]["iou"] == pytest.approx(2 / 4)
    assert s["overall_accuracy"] == pytest.approx(6 / 8)
    result = CliRunner().invoke(app, ["eval", str(pred_dir), "--truth", str(tmp_path / "truth.tif")])
    assert result.exit_code == 0, result.output
    assert "mIoU" in result.output
    saved = json.loads((pred_dir / "eval_classmap.json").read_text())
    assert saved["miou"] == pytest.approx((4 / 6 + 2 / 4) / 2)


def test_eval_cli_errors_are_one_line(tmp_path):
    runner = CliRunner()
    both = runner.invoke(app, ["eval", str(tmp_path), "--labels", "a", "--truth", "b"])
    assert both.exit_code == 2
    missing = runner.invoke(app, ["eval", str(tmp_path), "--labels", str(LABELS)])
    assert missing.exit_code == 1
    assert "report.json" in missing.output and len(missing.output.strip().splitlines()) == 1


def _tiny_scene(tmp_path: Path) -> tuple[Path, rasterio.Affine]:
    """A 10 x 10 px scene of 1 m pixels in UTM 36N, all valid, and a prediction folder for it."""
    transform = rasterio.Affine(1, 0, 500000, 0, -1, 100010)
    with rasterio.open(tmp_path / "scene.tif", "w", driver="GTiff", width=10, height=10, count=3, dtype="uint8",
                       crs="EPSG:32636", transform=transform) as ds:
        ds.write(np.full((3, 10, 10), 100, np.uint8))
    pred_dir = tmp_path / "pred"
    pred_dir.mkdir()
    (pred_dir / "report.json").write_text(json.dumps({"input": str(tmp_path / "scene.tif")}))
    return pred_dir, transform


def test_buildings_by_hand_with_labels_in_another_crs_and_invalid_geometries(tmp_path):
    """Hand-computed scores; the labels are lon/lat (the prediction UTM), one label is a null geometry and
    one is invalid: two squares meeting at a corner plus a spike, which make_valid turns into a
    GeometryCollection(MultiPolygon, LineString): its two squares are ground truth."""
    pred_dir, transform = _tiny_scene(tmp_path)

    def px(*cells):  # (col, row) pixel corners -> a polygon in the scene's CRS
        return shapely.Polygon([transform @ c for c in cells])

    def rect(c0, r0, c1, r1):
        return px((c0, r0), (c1, r0), (c1, r1), (c0, r1))

    pred = [rect(0, 0, 4, 4), rect(6, 6, 9, 9)]  # 16 + 9 px
    gpd.GeoDataFrame(geometry=pred, crs="EPSG:32636").to_file(pred_dir / "buildings.gpkg")
    # 12 px (IoU 0.75 with the first), 9 px (IoU 1 with the second), 4 + 4 px unmatched
    spiky = px((0, 10), (2, 10), (2, 8), (4, 8), (4, 6), (2, 6), (2, 8), (2, 4), (2, 8), (0, 8), (0, 10))
    assert not spiky.is_valid and shapely.make_valid(spiky).geom_type == "GeometryCollection"
    labels = gpd.GeoDataFrame(geometry=[rect(0, 0, 4, 3), rect(6, 6, 9, 9), spiky, None], crs="EPSG:32636")
    labels.to_crs(4326).to_file(tmp_path / "labels.geojson", driver="GeoJSON")
    s = evaluate_buildings(pred_dir, tmp_path / "labels.geojson")
    tp, fp, fn = 12 + 9, 4, 8
    assert (s["pixel"]["tp"], s["pixel"]["fp"], s["pixel"]["fn"]) == (tp, fp, fn)
    assert s["pixel"]["iou"] == pytest.approx(21 / 33) and s["pixel"]["f1"] == pytest.approx(42 / 54)
    assert s["n_truth"] == 4 and s["n_predicted"] == 2
    g = s["polygon"]
    assert (g["tp"], g["fp"], g["fn"]) == (2, 0, 2)
    assert g["precision"] == 1 and g["recall"] == 0.5 and g["f1"] == pytest.approx(2 / 3)
    assert g["mean_iou_of_matches"] == pytest.approx(0.875, abs=1e-6)
    # the printed table says the same
    result = CliRunner().invoke(app, ["eval", str(pred_dir), "--labels", str(tmp_path / "labels.geojson")])
    assert result.exit_code == 0, result.output
    assert "2 predicted, 4 labelled" in result.stdout
    assert "0.636" in result.stdout and "0.778" in result.stdout and "0.667" in result.stdout


@pytest.mark.parametrize("dtype, nodata", [("uint8", 255), ("int16", -1), ("float32", float("nan"))])
def test_classmap_truth_nodata_is_ignored_like_unlabeled(tmp_path, dtype, nodata):
    """Truth pixels at the truth raster's nodata value are not scored (on the prediction's grid they
    were read raw: 255 ended in 'class index >= 6', -1 in a numpy error, NaN in a cast warning)."""
    pred_dir = tmp_path / "pred"
    pred_dir.mkdir()
    profile = dict(driver="GTiff", width=8, height=4, count=1, crs="EPSG:3857",
                   transform=rasterio.Affine(1, 0, 0, 0, -1, 4))
    pred = np.ones((4, 8), np.uint8)
    pred[:, 4:] = 3
    with rasterio.open(pred_dir / "classmap.tif", "w", dtype="uint8", **profile) as ds:
        ds.write(pred, 1)
        ds.update_tags(classes=json.dumps({"0": "nodata", "1": "building", "2": "road", "3": "vegetation",
                                           "4": "water", "5": "land"}))
    truth = np.full((4, 8), 3, dtype)
    truth[0, :] = nodata
    with rasterio.open(tmp_path / "truth.tif", "w", dtype=dtype, nodata=nodata, **profile) as ds:
        ds.write(truth, 1)
    s = evaluate_classmap(pred_dir, tmp_path / "truth.tif")
    # rows 1..3 scored: vegetation truth 24 px, predicted 12 of them; building predicted 12, truth 0
    assert s["pixels"] == 24 and s["overall_accuracy"] == pytest.approx(0.5)
    assert s["per_class"]["vegetation"]["iou"] == pytest.approx(0.5) and s["per_class"]["building"]["iou"] == 0
    assert s["miou"] == pytest.approx(0.25)
    truth[0, :] = -2 if dtype != "uint8" else 7
    with rasterio.open(tmp_path / "raw.tif", "w", dtype=dtype, **profile) as ds:  # no nodata declared
        ds.write(truth, 1)
    with pytest.raises(EvaluationError, match="class index" if dtype != "uint8" else
                       r"raw.tif holds 7, past the class map's classes \(0-5: 0 nodata, 1 building, .*declare it as "
                       r"the raster's nodata value \(gdal_edit.py -a_nodata 7\)"):
        evaluate_classmap(pred_dir, tmp_path / "raw.tif")


def test_labels_without_polygons_say_so(tmp_path):
    pred_dir, _ = _tiny_scene(tmp_path)
    gpd.GeoDataFrame(geometry=[shapely.box(500000, 100000, 500004, 100004)], crs="EPSG:32636").to_file(
        pred_dir / "buildings.gpkg")
    (tmp_path / "empty.geojson").write_text('{"type": "FeatureCollection", "features": []}')
    gpd.GeoDataFrame(geometry=[shapely.LineString([(33, 0.9), (33.1, 0.9)])], crs=4326).to_file(
        tmp_path / "lines.geojson", driver="GeoJSON")
    result = CliRunner().invoke(app, ["eval", str(pred_dir), "--labels", str(tmp_path / "empty.geojson")])
    assert result.exit_code == 1 and result.stderr.strip() == (
        f"geoseg eval: error: no building polygon in {tmp_path / 'empty.geojson'} (0 features): nothing to score against")
    # a layer of lines: refused as geoseg tile refuses it (tiles.labels.check_label_file)
    result = CliRunner().invoke(app, ["eval", str(pred_dir), "--labels", str(tmp_path / "lines.geojson")])
    assert result.exit_code == 1 and result.stderr.strip() == (
        "geoseg eval: error: lines.geojson holds LineString features, not building polygons (footprints)")


def test_labels_without_a_crs_in_metres_are_refused_not_read_as_lon_lat(tmp_path):
    """A shapefile without its .prj (UTM metres) was read as lon/lat: the transform gave infinite
    coordinates, a numpy warning, and a message about missing polygons."""
    pred_dir, _ = _tiny_scene(tmp_path)
    box = shapely.box(500000, 100000, 500004, 100004)
    gpd.GeoDataFrame(geometry=[box], crs="EPSG:32636").to_file(pred_dir / "buildings.gpkg")
    gpd.GeoDataFrame(geometry=[box]).to_file(tmp_path / "labels.shp")  # no CRS
    result = CliRunner().invoke(app, ["eval", str(pred_dir), "--labels", str(tmp_path / "labels.shp")])
    assert result.exit_code == 1
    assert result.stderr.strip() == ("geoseg eval: error: labels.shp has no CRS and its coordinates (x 500000..500004, "
                                     "y 100000..100004) are not longitude/latitude: give it its CRS (the .prj beside a "
                                     "shapefile, a GeoPackage's own) or reproject it to EPSG:4326")


@pytest.mark.parametrize("task", ["--labels", "--truth"])
def test_a_batch_output_folder_is_named_as_such(tmp_path, task):
    """geoseg eval results/ on a batch's --out (one prediction per sub-folder) said 'not a geoseg predict
    output' (--labels) or 'no classmap.tif (predicted with --no-classmap?)' (--truth)."""
    for stem in ("a", "b"):
        (tmp_path / "results" / stem).mkdir(parents=True)
        (tmp_path / "results" / stem / "report.json").write_text("{}")
    result = CliRunner().invoke(app, ["eval", str(tmp_path / "results"), task, str(LABELS)])
    assert result.exit_code == 1 and result.stderr.strip() == (
        f"geoseg eval: error: {tmp_path / 'results'} is a batch's output folder (2 predictions: a/, b/): "
        f"score each one, e.g. geoseg eval {tmp_path / 'results' / 'a'} ...")


def _half_valid_prediction(tmp_path: Path, data: np.ndarray, report: dict) -> Path:
    """A 10 x 10 float scene of ``data`` (NaN where it holds no data), and a prediction folder with
    ``report`` and one 3 x 3 building on the valid left half; labels.gpkg beside it adds one building
    on the right half."""
    transform = rasterio.Affine(1, 0, 500000, 0, -1, 100010)
    with rasterio.open(tmp_path / "scene.tif", "w", driver="GTiff", width=10, height=10, count=len(data),
                       dtype="float32", crs="EPSG:32636", transform=transform) as ds:
        ds.write(data)
    pred_dir = tmp_path / "pred"
    pred_dir.mkdir()
    (pred_dir / "report.json").write_text(json.dumps(report))

    def rect(c0, r0, c1, r1):
        return shapely.Polygon([transform @ c for c in ((c0, r0), (c1, r0), (c1, r1), (c0, r1))])

    gpd.GeoDataFrame(geometry=[rect(1, 1, 4, 4)], crs="EPSG:32636").to_file(pred_dir / "buildings.gpkg")
    gpd.GeoDataFrame(geometry=[rect(1, 1, 4, 4), rect(6, 6, 9, 9)], crs="EPSG:32636").to_file(
        tmp_path / "labels.gpkg")
    return pred_dir


def test_buildings_are_scored_off_a_float_scenes_nan_pixels_like_predict_reads_them(tmp_path):
    """A float scene's NaN pixels are nodata to predict (``tiles.masks.finite_only``: no model input, no
    building there) also when no nodata value is declared; eval took GDAL's mask alone, so NaN pixels
    counted as valid ground: their labels were misses and pixel IoU fell (a 0-1 float32 copy of
    nairobi_z19_2 with NaN on 18 % of it: 0.349 against 0.389 for the same buildings)."""
    data = np.full((3, 10, 10), 0.4, np.float32)
    data[:, :, 5:] = np.nan  # right half NaN, no nodata declared
    pred_dir = _half_valid_prediction(tmp_path, data, {"input": str(tmp_path / "scene.tif")})
    s = evaluate_buildings(pred_dir, tmp_path / "labels.gpkg")
    assert s["valid_pixels"] == 50
    assert (s["pixel"]["tp"], s["pixel"]["fp"], s["pixel"]["fn"]) == (9, 0, 0)
    assert s["n_truth"] == 1 and s["polygon"]["f1"] == 1.0


def test_buildings_are_scored_on_the_valid_pixels_of_the_bands_predict_read(tmp_path):
    """The valid area comes from the bands predict read (report.json's ``bands.used``, from --bands), not
    from bands 1-3: here band 4, read as blue with --bands 2,3,4, is NaN on the right half (no nodata
    declared), which predict reads as nodata; eval counted those pixels as valid ground."""
    data = np.full((4, 10, 10), 0.4, np.float32)
    data[3, :, 5:] = np.nan
    pred_dir = _half_valid_prediction(tmp_path, data, {
        "input": str(tmp_path / "scene.tif"), "options": {"bands": [2, 3, 4]},
        "bands": {"used": [2, 3, 4], "source": "requested", "count": 4}})
    s = evaluate_buildings(pred_dir, tmp_path / "labels.gpkg")
    assert s["valid_pixels"] == 50
    assert (s["pixel"]["tp"], s["pixel"]["fp"], s["pixel"]["fn"]) == (9, 0, 0)
    # a report without recorded bands (before --bands): the raster's own choice, bands 1-3, all valid
    (pred_dir / "report.json").write_text(json.dumps({"input": str(tmp_path / "scene.tif")}))
    assert evaluate_buildings(pred_dir, tmp_path / "labels.gpkg")["valid_pixels"] == 100


def test_overlapping_labels_are_each_ground_truth_whatever_their_order(tmp_path):
    """A building part inside its outline, or two surveys' outlines of one building: the labels were
    burnt into one raster, where a pixel went to the last one listed, so a label under a later one
    lost its area, fell under half on valid pixels and was no ground truth (by file order)."""
    with rasterio.open(SCENE) as src:
        crs, bounds = src.crs, src.bounds
    labels = gpd.read_file(LABELS).to_crs(crs)
    inside = labels[labels.within(shapely.box(*bounds).buffer(-5))]
    outlines = inside.iloc[:8].copy()
    outlines["geometry"] = outlines.geometry.buffer(1.0, join_style="mitre")  # each covers its label
    pred = _fake_prediction(tmp_path, inside.geometry.tolist(), crs)
    scores = []
    for name, parts in (("parts_first", [labels, outlines]), ("outlines_first", [outlines, labels])):
        path = tmp_path / f"{name}.gpkg"
        gpd.GeoDataFrame(pd.concat(parts), crs=crs).to_file(path, driver="GPKG", engine="pyogrio")
        # an outline and its part overlap at IoU >= 0.5: a prediction matches only one of them (a file merged
        # into itself made a perfect prediction score F1 0.654 without a word): said
        with pytest.warns(UserWarning, match=r"pairs? of the label polygons scored overlap at IoU >= 0.5"):
            scores.append(evaluate_buildings(pred, path))
    alone = evaluate_buildings(pred, LABELS)
    assert alone["n_label_pairs_overlapping"] == 0
    for s in scores:
        assert s["n_truth"] == alone["n_truth"] + len(outlines)  # every outline counts, and every part
        assert s["polygon"]["tp"] == len(inside) and s["pixel"] == scores[0]["pixel"]
        assert 0 < s["n_label_pairs_overlapping"] <= len(outlines)


def test_points_and_lines_among_the_footprints_are_named_when_scored(tmp_path):
    """An OSM export mixes building nodes and ways with footprints: they were dropped without a word, so the
    buildings they mark counted as none. The scores stay those of the footprints; a warning says how many."""
    with rasterio.open(SCENE) as src:
        crs, bounds = src.crs, src.bounds
    labels = gpd.read_file(LABELS)
    inside = labels.to_crs(crs)
    inside = inside[inside.within(shapely.box(*bounds).buffer(-5))].geometry.tolist()
    mixed = pd.concat([labels, gpd.GeoDataFrame(
        {"building": ["yes"] * 3},
        geometry=[labels.geometry.iloc[0].centroid, labels.geometry.iloc[1].centroid,
                  shapely.LineString(labels.geometry.iloc[2].exterior.coords)], crs=labels.crs)], ignore_index=True)
    mixed.to_file(tmp_path / "osm.geojson", driver="GeoJSON")
    pred_dir = _fake_prediction(tmp_path, inside, crs)
    result = CliRunner().invoke(app, ["eval", str(pred_dir), "--labels", str(tmp_path / "osm.geojson")])
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [
        "warning: osm.geojson: 3 of its features are points or lines, not footprints: they are left out, and the "
        "buildings they mark count as no building (building labels are polygons)"], result.stderr
    scores = json.loads((pred_dir / "eval_buildings.json").read_text())
    assert scores["polygon"]["precision"] == pytest.approx(1.0)
    plain = CliRunner().invoke(app, ["eval", str(pred_dir), "--labels", str(LABELS)])  # footprints alone: no warning
    assert plain.exit_code == 0 and plain.stderr == "", plain.output
    mixed.to_file(tmp_path / "osm.gpkg", layer="buildings")  # SQLite's SQL has no OGR_GEOMETRY: said too
    gpkg = CliRunner().invoke(app, ["eval", str(pred_dir), "--labels", str(tmp_path / "osm.gpkg")])
    assert gpkg.exit_code == 0 and gpkg.stderr.startswith(
        "warning: osm.gpkg: 3 of its features are points or lines"), gpkg.output


def test_a_report_that_cannot_be_read_or_an_input_replaced_since_is_named(tmp_path):
    """A truncated report.json said only 'Expecting value: line 2 column 1'; a scene replaced since it was
    predicted (another crop of one size) was scored against the old prediction, exit 0."""
    pred_dir, transform = _tiny_scene(tmp_path)
    gpd.GeoDataFrame(geometry=[shapely.box(500002, 100002, 500005, 100005)], crs="EPSG:32636").to_file(
        pred_dir / "buildings.gpkg", driver="GPKG", engine="pyogrio")
    gpd.GeoDataFrame(geometry=[shapely.box(500002, 100002, 500005, 100005)], crs="EPSG:32636").to_file(
        tmp_path / "labels.geojson", driver="GeoJSON", engine="pyogrio")
    (pred_dir / "report.json").write_text('{"input": ')
    with pytest.raises(EvaluationError, match=r"report.json cannot be read as geoseg predict's report .*predict it again"):
        evaluate_buildings(pred_dir, tmp_path / "labels.geojson")
    scene = tmp_path / "scene.tif"
    stat = scene.stat()
    record = {"input": str(scene), "input_file": {"bytes": stat.st_size + 1, "modified_ns": stat.st_mtime_ns}}
    (pred_dir / "report.json").write_text(json.dumps(record))
    with pytest.raises(EvaluationError, match="has changed since it was predicted"):
        evaluate_buildings(pred_dir, tmp_path / "labels.geojson")
    record["input_file"] = {"bytes": stat.st_size, "modified_ns": stat.st_mtime_ns - 10**9}
    (pred_dir / "report.json").write_text(json.dumps(record))
    with pytest.warns(UserWarning, match="was modified since it was predicted"):
        assert evaluate_buildings(pred_dir, tmp_path / "labels.geojson")["polygon"]["f1"] == 1


def test_labels_wrapped_in_collections_of_collections_are_read(tmp_path):
    """A building wrapped twice (GeometryCollection in a GeometryCollection) was dropped without a word."""
    pred_dir, _ = _tiny_scene(tmp_path)
    a, b = shapely.box(500001, 100001, 500004, 100004), shapely.box(500006, 100006, 500009, 100009)
    gpd.GeoDataFrame(geometry=[a, b], crs="EPSG:32636").to_file(pred_dir / "buildings.gpkg", driver="GPKG",
                                                                engine="pyogrio")
    nested = shapely.GeometryCollection([shapely.GeometryCollection([b])])
    (tmp_path / "labels.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {}, "geometry": shapely.geometry.mapping(g)}
        for g in gpd.GeoSeries([a, nested], crs="EPSG:32636").to_crs(4326)]}))
    scores = evaluate_buildings(pred_dir, tmp_path / "labels.geojson")
    assert scores["n_truth"] == 2 and scores["polygon"]["f1"] == pytest.approx(1.0)

