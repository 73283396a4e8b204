"""`geoseg eval` on the command line: user errors are one line and a non-zero exit, never a traceback."""
from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import rasterio
import shapely
from typer.testing import CliRunner

from geoseg.cli import app
from geoseg.paths import data_root

from checks import assert_one_line_error, classmap_prediction

KAMPALA = data_root() / "buildings" / "kampala"
NAIROBI_LABELS = data_root() / "buildings" / "nairobi" / "labels.geojson"

def test_an_unwritable_json_path_is_a_one_line_error(tmp_path):
    pred_dir, truth = classmap_prediction(tmp_path)
    runner = CliRunner()
    # a folder that does not exist: refused before scoring
    missing = runner.invoke(app, ["eval", str(pred_dir), "--truth", str(truth), "--json", "/proc/nope/x.json"])
    assert_one_line_error(missing, "eval", "/proc/nope", "does not exist")
    assert "mIoU" not in missing.stdout
    # an existing folder that refuses the file: the scores are printed, then the write fails
    refused = runner.invoke(app, ["eval", str(pred_dir), "--truth", str(truth), "--json", "/proc/x.json"])
    assert_one_line_error(refused, "eval", "cannot write the scores to /proc/x.json")
    assert "mIoU" in refused.stdout
    # the default path, PRED_DIR/eval_classmap.json, taken by a folder
    (pred_dir / "eval_classmap.json").mkdir()
    default = runner.invoke(app, ["eval", str(pred_dir), "--truth", str(truth)])
    assert_one_line_error(default, "eval", "eval_classmap.json")
    ok = runner.invoke(app, ["eval", str(pred_dir), "--truth", str(truth), "--json", str(tmp_path / "s.json")])
    assert ok.exit_code == 0, ok.output
    assert json.loads((tmp_path / "s.json").read_text())["per_class"]["vegetation"]["iou"] == 0.5


def test_truth_that_does_not_overlap_the_prediction_is_an_error(tmp_path):
    pred_dir, _ = classmap_prediction(tmp_path)
    far = tmp_path / "far.tif"  # same CRS and size, 1 km away
    with rasterio.open(far, "w", driver="GTiff", width=8, height=4, count=1, dtype="uint8", crs="EPSG:3857",
                       transform=rasterio.Affine(1, 0, 1000, 0, -1, 4)) as ds:
        ds.write(np.full((4, 8), 3, np.uint8), 1)
    unlabeled = tmp_path / "zeros.tif"  # on the prediction's grid, all 0
    with rasterio.open(pred_dir / "classmap.tif") as src:
        profile = src.profile
    with rasterio.open(unlabeled, "w", **profile) as ds:
        ds.write(np.zeros((4, 8), np.uint8), 1)
    runner = CliRunner()
    for truth in (far, unlabeled):
        result = runner.invoke(app, ["eval", str(pred_dir), "--truth", str(truth)])
        assert_one_line_error(result, "eval", "does not overlap the prediction")
        assert not (pred_dir / "eval_classmap.json").exists()


def test_labels_of_another_city_are_an_error(tmp_path):
    pred_dir, labels = _kampala_prediction(tmp_path, 5)
    ok = CliRunner().invoke(app, ["eval", str(pred_dir), "--labels", str(KAMPALA / "labels.geojson")])
    assert ok.exit_code == 0, ok.output
    result = CliRunner().invoke(app, ["eval", str(pred_dir), "--labels", str(NAIROBI_LABELS)])
    assert_one_line_error(result, "eval", "do not overlap")


def test_a_geopackage_with_several_layers_is_read_by_its_building_layer(tmp_path):
    """GDAL reads a GeoPackage's first layer: with roads before buildings, `geoseg eval --labels` said
    "no building polygon" and `geoseg tile` "holds no polygon"; with parcels before buildings, the
    parcels would have been the buildings. The one polygon layer is read; two are a one-line error."""
    from shapely.geometry import LineString

    from tiles.labels import LabelIndex

    pred_dir, labels = _kampala_prediction(tmp_path, 5)
    mine = tmp_path / "mine.gpkg"
    x0, y0, x1, y1 = labels.total_bounds
    gpd.GeoDataFrame({"name": ["a road"]}, geometry=[LineString([(x0, y0), (x1, y1)])], crs=labels.crs).to_file(
        mine, layer="a_roads", driver="GPKG", engine="pyogrio")
    labels.to_file(mine, layer="buildings", driver="GPKG", engine="pyogrio")
    ok = CliRunner().invoke(app, ["eval", str(pred_dir), "--labels", str(mine)])
    assert ok.exit_code == 0, ok.output
    assert len(LabelIndex.from_files([mine], "EPSG:3857").polygons) == len(labels)
    labels.iloc[:3].to_file(mine, layer="parcels", driver="GPKG", engine="pyogrio")
    result = CliRunner().invoke(app, ["eval", str(pred_dir), "--labels", str(mine)])
    assert_one_line_error(result, "eval", "2 of them are polygons: save the building layer in a file of its own")


def test_a_prediction_or_labels_that_cannot_be_read_are_named_as_what_they_are(tmp_path):
    """A labels file GDAL cannot read ended in GDAL's advice on '<DRIVER>:' path prefixes; a folder
    given as --labels was 'labels not found', and a PRED_DIR that does not exist 'not a geoseg
    predict output'."""
    pred_dir = tmp_path / "pred"
    pred_dir.mkdir()
    (pred_dir / "report.json").write_text(json.dumps({"input": str(KAMPALA / "kampala_z19_1.tif")}))
    gpd.read_file(KAMPALA / "labels.geojson").iloc[:5].to_file(pred_dir / "buildings.gpkg", driver="GPKG",
                                                                engine="pyogrio")
    (tmp_path / "junk.geojson").write_text("not json at all")
    runner = CliRunner()
    junk = runner.invoke(app, ["eval", str(pred_dir), "--labels", str(tmp_path / "junk.geojson")])
    assert_one_line_error(junk, "eval", f"{tmp_path / 'junk.geojson'}: cannot be read as vector labels")
    assert "DRIVER" not in junk.stderr
    folder = runner.invoke(app, ["eval", str(pred_dir), "--labels", str(tmp_path)])
    assert_one_line_error(folder, "eval", f"--labels {tmp_path} is a folder")
    missing = runner.invoke(app, ["eval", str(tmp_path / "nope"), "--labels", str(KAMPALA / "labels.geojson")])
    assert_one_line_error(missing, "eval", f"{tmp_path / 'nope'}: no such folder")
    (tmp_path / "empty").mkdir()
    empty = runner.invoke(app, ["eval", str(tmp_path / "empty"), "--labels", str(KAMPALA / "labels.geojson")])
    assert_one_line_error(empty, "eval", "is not a geoseg predict output (no report.json)")


def _kampala_prediction(tmp_path, n_buildings: int = 20):
    """A prediction folder of kampala_z19_1 whose buildings are the first ``n_buildings`` labels, and
    all its labels."""
    pred_dir = tmp_path / "pred"
    pred_dir.mkdir()
    (pred_dir / "report.json").write_text(json.dumps({"input": str(KAMPALA / "kampala_z19_1.tif")}))
    labels = gpd.read_file(KAMPALA / "labels.geojson")
    labels.iloc[:n_buildings].to_file(pred_dir / "buildings.gpkg", driver="GPKG", engine="pyogrio")
    return pred_dir, labels


def test_labels_layer_and_where_select_the_buildings_as_geoseg_tile_does(tmp_path):
    """A team's GeoPackage with a parcels layer beside the buildings, whose building layer also holds
    parking lots (`class`): `geoseg tile` took --labels-layer and --labels-where, `geoseg eval` took
    neither, so the chips' buildings could not be scored against (no such option, exit 2)."""
    pred_dir, labels = _kampala_prediction(tmp_path)
    mixed = labels.copy()
    mixed["class"] = ["parking" if i % 2 else "building" for i in range(len(mixed))]
    survey = tmp_path / "survey.gpkg"
    mixed.to_file(survey, layer="buildings", driver="GPKG", engine="pyogrio")
    gpd.GeoDataFrame(geometry=[shapely.box(*mixed.total_bounds)], crs=mixed.crs).to_file(
        survey, layer="parcels", driver="GPKG", engine="pyogrio")
    only = tmp_path / "only.gpkg"
    mixed[mixed["class"] == "building"].to_file(only, driver="GPKG", engine="pyogrio")
    runner = CliRunner()
    assert_one_line_error(runner.invoke(app, ["eval", str(pred_dir), "--labels", str(survey)]), "eval",
                          "2 of them are polygons", "--labels-layer")
    selected = runner.invoke(app, ["eval", str(pred_dir), "--labels", str(survey), "--labels-layer", "buildings",
                                   "--labels-where", "class = 'building'", "--json", str(tmp_path / "sel.json")])
    assert selected.exit_code == 0, selected.output
    alone = runner.invoke(app, ["eval", str(pred_dir), "--labels", str(only), "--json", str(tmp_path / "only.json")])
    assert alone.exit_code == 0, alone.output
    every = runner.invoke(app, ["eval", str(pred_dir), "--labels", str(survey), "--labels-layer", "buildings",
                                "--json", str(tmp_path / "all.json")])
    assert every.exit_code == 0, every.output
    sel, one, allf = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("sel", "only", "all"))
    assert sel["pixel"] == one["pixel"] and sel["n_truth"] == one["n_truth"] < allf["n_truth"]
    assert sel["labels_layer"] == "buildings" and sel["labels_where"] == "class = 'building'"


def test_labels_where_or_layer_that_selects_nothing_is_one_line_not_a_score(tmp_path):
    """A condition that matches no feature must not be scored as zero truth (nor pass a bad layer name);
    the refusals are geoseg tile's, and --labels-where/--labels-layer without --labels are usage errors."""
    pred_dir, labels = _kampala_prediction(tmp_path)
    mine = tmp_path / "mine.gpkg"
    labels.assign(**{"class": "building"}).to_file(mine, layer="buildings", driver="GPKG", engine="pyogrio")
    runner = CliRunner()
    args = ["eval", str(pred_dir), "--labels", str(mine)]
    assert_one_line_error(runner.invoke(app, [*args, "--labels-where", "class = 'house'"]), "eval",
                          "no feature of mine.gpkg matches where \"class = 'house'\"")
    assert_one_line_error(runner.invoke(app, [*args, "--labels-where", "kind = 'house'"]), "eval",
                          "mine.gpkg: cannot select features where \"kind = 'house'\"", "fields:", "class")
    assert_one_line_error(runner.invoke(app, [*args, "--labels-layer", "houses"]), "eval",
                          "mine.gpkg has no layer 'houses' (its layers: buildings)")
    assert not (pred_dir / "eval_buildings.json").exists()
    (tmp_path / "cm").mkdir()
    pred_dir_cm, truth = classmap_prediction(tmp_path / "cm")
    usage = runner.invoke(app, ["eval", str(pred_dir_cm), "--truth", str(truth), "--labels-where", "class = 'x'"])
    assert usage.exit_code == 2 and "--labels-where selects building labels" in usage.stderr


def test_labels_in_an_esri_file_geodatabase_are_scored_as_geoseg_tile_reads_them(tmp_path):
    """`geoseg tile --labels survey.gdb` reads an Esri File Geodatabase (a folder GDAL reads as one vector
    source); `geoseg eval` refused it as 'is a folder', so the chips' buildings could not be scored."""
    pred_dir, labels = _kampala_prediction(tmp_path)
    survey = tmp_path / "survey.gdb"
    labels.to_file(survey, driver="OpenFileGDB", layer="buildings", engine="pyogrio")
    runner = CliRunner()
    result = runner.invoke(app, ["eval", str(pred_dir), "--labels", str(survey), "--json", str(tmp_path / "gdb.json")])
    assert result.exit_code == 0, result.output
    plain = runner.invoke(app, ["eval", str(pred_dir), "--labels", str(KAMPALA / "labels.geojson"), "--json",
                                str(tmp_path / "plain.json")])
    assert plain.exit_code == 0, plain.output
    gdb, geojson = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("gdb", "plain"))
    assert gdb["pixel"] == geojson["pixel"] and gdb["n_truth"] == geojson["n_truth"]


def test_labels_in_a_zip_by_gdal_virtual_path_are_scored_as_geoseg_tile_reads_them(tmp_path):
    """`geoseg tile --labels /vsizip//d/l.zip/labels.gpkg` reads labels in an archive; eval's --labels, a
    Path, made the // one / and said 'labels not found'. A member the archive lacks is one line."""
    import zipfile

    pred_dir, labels = _kampala_prediction(tmp_path)
    labels.to_crs(32636).to_file(tmp_path / "labels.gpkg", driver="GPKG", engine="pyogrio")
    with zipfile.ZipFile(tmp_path / "delivery.zip", "w") as archive:
        archive.write(tmp_path / "labels.gpkg", "survey/labels.gpkg")
    runner = CliRunner()
    zipped = runner.invoke(app, ["eval", str(pred_dir), "--labels", f"/vsizip/{tmp_path}/delivery.zip/survey/labels.gpkg",
                                 "--json", str(tmp_path / "zip.json")])
    assert zipped.exit_code == 0, zipped.output
    plain = runner.invoke(app, ["eval", str(pred_dir), "--labels", str(tmp_path / "labels.gpkg"), "--json",
                                str(tmp_path / "plain.json")])
    assert plain.exit_code == 0, plain.output
    got, want = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("zip", "plain"))
    assert got["pixel"] == want["pixel"] and got["polygon"] == want["polygon"] and got["n_truth"] == want["n_truth"] > 0
    missing = runner.invoke(app, ["eval", str(pred_dir), "--labels", f"/vsizip/{tmp_path}/delivery.zip/labels.gpkg"])
    assert_one_line_error(missing, "eval", "delivery.zip/labels.gpkg", "cannot be read as vector labels")
