"""`geoseg predict` on the command line: option checks, odd paths, batches, warnings, units."""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import socket
import zipfile
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import rasterio.shutil
from PIL import Image
from rasterio.windows import Window
from typer.testing import CliRunner

from geoseg.card import shipped_card_path
from geoseg.cli import app
from geoseg.paths import data_root
from geoseg.pipeline import PredictError, PredictOptions
from geoseg.postprocess import postprocess_from_card
from geoseg.strict_json import json_safe as _json_safe
from tiles.rasterpath import as_raster_path, raster_name, raster_stem
from tiles.source import Scene, working_grid

from checks import assert_one_line_error, assert_usage_error, unlabelled_bgr
from test_predict_pipeline import coarse_copy

KAMPALA = data_root() / "buildings" / "kampala"
SCENE = KAMPALA / "kampala_z19_1.tif"


@pytest.mark.parametrize("option, value, word", [
    ("--gsd", "inf", "--gsd"), ("--gsd", "nan", "--gsd"), ("--gsd", "0", "--gsd"),
    ("--simplify", "-1", "--simplify"), ("--simplify", "inf", "--simplify"), ("--simplify", "nan", "--simplify"),
    ("--min-area", "inf", "--min-area"), ("--min-area", "nan", "--min-area"), ("--min-area", "-1", "--min-area"),
])
def test_float_options_must_be_finite(tmp_path, option, value, word):
    result = CliRunner().invoke(app, ["predict", str(SCENE), "--out", str(tmp_path / "o"), option, value])
    assert_usage_error(result, "predict", word, "finite")
    assert not (tmp_path / "o").exists()


def test_zero_simplify_and_min_area_are_allowed():
    PredictOptions(simplify_m=0.0, min_area_m2=0.0, gsd=0.3).check()
    with pytest.raises(PredictError):
        PredictOptions(simplify_m=-0.1).check()


def test_options_of_the_wrong_type_from_python_name_the_field():
    """From Python, ``PredictOptions(tile_size="512")`` failed with "'<' not supported between instances of
    'str' and 'int'", and ``gsd="0.3"`` with "must be real number, not str"."""
    import numpy as np

    for options, says in [(dict(tile_size="512"), "PredictOptions.tile_size must be an integer, got '512'"),
                          (dict(gsd="0.3"), "PredictOptions.gsd must be a number or None, got '0.3'"),
                          (dict(batch_size=True), "PredictOptions.batch_size must be an integer or None, got True")]:
        with pytest.raises(PredictError, match=re.escape(says)):
            PredictOptions(**options).check()
    PredictOptions(tile_size=np.int64(256), gsd=np.float32(0.3), min_area_m2=5).check()  # NumPy scalars, ints


def test_report_values_are_strict_json():
    report = {"gsd": {"input_m": math.inf, "used_m": 0.3}, "tile_px": (512, float("nan")), "n": 3, "s": "x"}
    text = json.dumps(_json_safe(report), allow_nan=False)
    assert json.loads(text) == {"gsd": {"input_m": None, "used_m": 0.3}, "tile_px": [512, None], "n": 3, "s": "x"}


FAST = ["--profile", "fast", "--no-classmap", "--device", "cpu"]


def test_gdal_virtual_paths_are_predicted_alone_and_in_a_batch(tmp_path):
    scene = KAMPALA / "kampala_z19_2.tif"
    with zipfile.ZipFile(tmp_path / "k.zip", "w") as archive:
        archive.write(scene, "inner/kampala_z19_2.tif")
    virtual = f"/vsizip/{tmp_path}/k.zip/inner/kampala_z19_2.tif"  # /vsizip//tmp/...: the // must survive
    assert virtual.startswith("/vsizip//")
    runner = CliRunner()
    alone = runner.invoke(app, ["predict", virtual, "--out", str(tmp_path / "v"), *FAST])
    assert alone.exit_code == 0, alone.output
    plain = runner.invoke(app, ["predict", str(scene), "--out", str(tmp_path / "p"), *FAST])
    assert plain.exit_code == 0, plain.output
    report = json.loads((tmp_path / "v" / "report.json").read_text())
    assert report["input"] == virtual
    from_zip = gpd.read_file(tmp_path / "v" / "buildings.gpkg")
    from_file = gpd.read_file(tmp_path / "p" / "buildings.gpkg")
    assert len(from_zip) == len(from_file) > 0
    assert set(from_zip["source"]) == {"kampala_z19_2.tif"}
    # a batch names the virtual input's folder after its stem
    batch = runner.invoke(app, ["predict", virtual, str(SCENE), "--out", str(tmp_path / "b"), *FAST])
    assert batch.exit_code == 0, batch.output
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["batch.json", "kampala_z19_1", "kampala_z19_2"]
    assert len(gpd.read_file(tmp_path / "b" / "kampala_z19_2" / "buildings.gpkg")) == len(from_file)
    # eval reads the prediction's virtual input back
    scored = runner.invoke(app, ["eval", str(tmp_path / "v"), "--labels", str(KAMPALA / "labels.geojson")])
    assert scored.exit_code == 0, scored.output
    missing = runner.invoke(app, ["predict", f"/vsizip/{tmp_path}/k.zip/nope.tif", "--out", str(tmp_path / "n")])
    assert_one_line_error(missing, "predict", "input not found", "/vsizip//")


@pytest.mark.parametrize("location, name", [
    ("/vsizip//tmp/a.zip/dir/b.tif", "b.tif"), ("/vsicurl/https://h.org/x/b.tif?sig=1", "b.tif"),
    ("https://h.org/c.tif", "c.tif"), ("/tmp/d.tif", "d.tif"),
])
def test_raster_names_of_virtual_paths_and_urls(location, name):
    assert raster_name(location) == name
    assert raster_stem(location) == name[:-4]
    assert str(as_raster_path(location)) == location  # nothing collapsed


@pytest.mark.parametrize("location, name, stem, absolute", [
    ("GPKG:/d/two.gpkg:a", "two.gpkg:a", "two_a", "GPKG:/d/two.gpkg:a"),
    ("GPKG:two.gpkg:a", "two.gpkg:a", "two_a", "GPKG:{cwd}/two.gpkg:a"),
    ('NETCDF:"f.nc":var', "f.nc:var", "f_var", 'NETCDF:"{cwd}/f.nc":var'),
    ("netcdf:f.nc:Band2", "f.nc:Band2", "f_Band2", "netcdf:{cwd}/f.nc:Band2"),  # as rasterio lists them
    ('HDF5:"/d/a.h5"://grp/var', "a.h5:grp/var", "a_grp_var", 'HDF5:"/d/a.h5"://grp/var'),
    ("GTIFF_DIR:2:/d/a.tif", "a.tif:2", "a_2", "GTIFF_DIR:2:/d/a.tif"),
])
def test_subdataset_names_are_inputs_named_by_file_and_subdataset(location, name, stem, absolute):
    """A subdataset name stays a string (GDAL opens it), names its batch folder after the file and
    the subdataset, and has its file made absolute (a Dask worker's folder is another)."""
    import os

    from tiles.rasterpath import absolute_raster_path, is_subdataset, is_virtual

    assert is_subdataset(location) and is_virtual(location) and as_raster_path(location) == location
    assert (raster_name(location), raster_stem(location)) == (name, stem)
    assert absolute_raster_path(location) == absolute.format(cwd=os.getcwd())


def test_a_file_in_a_relative_archive_is_named_by_its_absolute_archive(tmp_path, monkeypatch):
    """report.json named ``/vsizip/in/a.zip/b.tif`` as typed, and ``geoseg eval`` run from another
    folder found the input gone (a subdataset name's file was already made absolute)."""
    from tiles.rasterpath import absolute_raster_path

    (tmp_path / "in").mkdir()
    with zipfile.ZipFile(tmp_path / "in" / "a.zip", "w") as archive:
        archive.writestr("sub/b.tif", b"not read here")
    (tmp_path / "in" / "plain.tif.gz").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    assert absolute_raster_path("/vsizip/in/a.zip/sub/b.tif") == f"/vsizip/{tmp_path}/in/a.zip/sub/b.tif"
    assert absolute_raster_path("/vsizip/{in/a.zip}/sub/b.tif") == f"/vsizip/{{{tmp_path}/in/a.zip}}/sub/b.tif"
    assert absolute_raster_path("/vsigzip/in/plain.tif.gz") == f"/vsigzip/{tmp_path}/in/plain.tif.gz"
    for unchanged in (f"/vsizip/{tmp_path}/in/a.zip/sub/b.tif", "/vsizip//vsicurl/https://h/a.zip/b.tif",
                      "/vsizip/gone/a.zip/b.tif", "/vsicurl/https://h/b.tif", "/vsimem/b.tif"):
        assert absolute_raster_path(unchanged) == unchanged


def test_dot_dot_after_a_linked_folder_means_what_the_shell_means(tmp_path, monkeypatch):
    """``os.path.abspath`` dropped ``latest/..`` as text: with ``latest`` a link to ``nas/2026/latest``,
    ``latest/../scene.tif`` (the shell's ``nas/2026/scene.tif``) read the ``scene.tif`` beside the link,
    and ``--out latest/../results`` wrote beside it too, exit 0."""
    import shutil

    from tiles.rasterpath import absolute_path

    nas, work = tmp_path / "nas" / "2026", tmp_path / "work"
    (nas / "latest").mkdir(parents=True)
    work.mkdir()
    shutil.copy(KAMPALA / "kampala_z19_2.tif", nas / "scene.tif")
    shutil.copy(KAMPALA / "kampala_z19_1.tif", work / "scene.tif")  # another scene where the text points
    (work / "latest").symlink_to(nas / "latest")
    monkeypatch.chdir(work)
    assert absolute_path("latest/../scene.tif") == str(nas / "scene.tif")
    assert absolute_path("latest/x/../../scene.tif") == str(nas / "scene.tif")
    assert absolute_path("latest/other.tif") == str(work / "latest" / "other.tif")  # the link's own name kept
    result = CliRunner().invoke(app, ["predict", "latest/../scene.tif", "--out", "latest/../results",
                                      *FAST])
    assert result.exit_code == 0, result.output
    report = json.loads((nas / "results" / "report.json").read_text())
    assert report["input"] == str(nas / "scene.tif") and not (work / "results").exists()


def test_a_missing_input_is_one_failure_of_the_batch(tmp_path):
    scene = KAMPALA / "kampala_z19_2.tif"
    missing = tmp_path / "nope.tif"
    result = CliRunner().invoke(app, ["predict", str(scene), str(missing), "--out", str(tmp_path / "b"), *FAST])
    assert result.exit_code == 1, result.output
    assert "1 predicted, 0 already done, 1 failed" in result.stdout
    assert result.stderr.strip().splitlines() == [f"geoseg predict: error: nope.tif: input not found: {missing}"]
    assert (tmp_path / "b" / "kampala_z19_2" / "buildings.gpkg").is_file()
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["batch.json", "kampala_z19_2"]  # nothing for nope
    alone = CliRunner().invoke(app, ["predict", str(missing), "--out", str(tmp_path / "c"), *FAST])
    assert_one_line_error(alone, "predict", "input not found", str(missing))
    assert not (tmp_path / "c").exists()


def test_too_few_bands_says_what_is_supported(tmp_path):
    with rasterio.open(SCENE) as src:
        profile = src.profile | {"count": 2, "photometric": "minisblack", "compress": "deflate"}
        data = src.read([1, 2])
    two = tmp_path / "two.tif"
    with rasterio.open(two, "w", **profile) as dst:
        dst.write(data)
    result = CliRunner().invoke(app, ["predict", str(two), "--out", str(tmp_path / "o"), *FAST])
    assert_one_line_error(result, "predict", "2 band(s): three bands (RGB) are needed", "--bands 1,1,1")


def test_a_grey_raster_is_read_as_rgb_with_repeated_bands(tmp_path):
    """A one-band grey raster (a black-and-white aerial photo, a panchromatic band) was refused with
    'convert this raster to RGB', naming no option; the refusal names --bands 1,1,1, which reads the
    band as red, green and blue, with a warning that the models learned from colour."""
    with rasterio.open(SCENE) as src:
        window = Window(0, 0, 256, 256)
        grey = src.read(2, window=window)
        profile = src.profile | {"count": 1, "photometric": "minisblack", "compress": "deflate", "width": 256,
                                 "height": 256, "transform": src.window_transform(window)}
    path = tmp_path / "grey.tif"
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(grey, 1)
    refused = CliRunner().invoke(app, ["predict", str(path), "--out", str(tmp_path / "o"), *FAST])
    assert_one_line_error(refused, "predict", "1 band(s)", "a grey (panchromatic) band is read as red, green and "
                          "blue with --bands 1,1,1", "trained on colour")
    result = CliRunner().invoke(app, ["predict", str(path), "--out", str(tmp_path / "o"), *FAST, "--bands", "1,1,1"])
    assert result.exit_code == 0, result.output
    assert "warning: bands 1,1,1 read one band as red, green and blue (grey imagery)" in result.stderr
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["bands"] == {"used": [1, 1, 1], "source": "requested", "count": 1}
    assert any("grey imagery" in w for w in report["warnings"]), report["warnings"]


def plain_png(path, window: tuple[int, int, int, int]):
    """A crop of a real scene saved as a PNG without georeferencing."""
    with rasterio.open(SCENE) as src:
        x, y, w, h = window
        Image.fromarray(np.moveaxis(src.read([1, 2, 3], window=Window(x, y, w, h)), 0, -1)).save(path)
    return path


def test_warnings_are_the_pipelines_notes_once_per_input_and_named_in_a_batch(tmp_path):
    a = plain_png(tmp_path / "a.png", (0, 0, 256, 192))
    b = plain_png(tmp_path / "b.png", (300, 200, 224, 256))
    runner = CliRunner()
    alone = runner.invoke(app, ["predict", str(a), "--out", str(tmp_path / "one"), "--profile", "fast"])
    assert alone.exit_code == 0, alone.output
    assert (tmp_path / "one" / "classmap.tif").is_file()  # the class map's writers warn without a CRS
    lines = alone.stderr.strip().splitlines()
    assert lines and all(line.startswith("warning: ") for line in lines), lines
    assert sum("input is not georeferenced" in line for line in lines) == 1
    # --min-area and --simplify are metres: without a pixel size they fall back to pixels, which is said
    assert sum("the input's pixel size is unknown, so the minimum building area (40 m², --min-area) and "
               "--simplify (0.3 m) cannot be measured: buildings under 4 pixels are dropped" in line
               for line in lines) == 1, lines
    assert not any("Affine.identity" in line or "'crs' was not provided" in line for line in lines), lines
    batch = runner.invoke(app, ["predict", str(a), str(b), "--out", str(tmp_path / "two"), "--profile", "fast"])
    assert batch.exit_code == 0, batch.output
    lines = batch.stderr.strip().splitlines()
    assert not any("Affine.identity" in line or "'crs' was not provided" in line for line in lines), lines
    for name in ("a.png", "b.png"):  # each input's own note, not one for the batch
        assert sum(line.startswith(f"warning: {name}: input is not georeferenced") for line in lines) == 1, lines
    assert all(line.startswith(("warning: a.png: ", "warning: b.png: ")) for line in lines), lines
    measured = runner.invoke(app, ["predict", str(a), "--out", str(tmp_path / "gsd"), "--profile", "fast",
                                   "--no-classmap", "--gsd", "0.3"])
    assert measured.exit_code == 0 and "pixel size is unknown" not in measured.stderr, measured.output


def test_a_world_file_without_a_crs_is_not_called_pixel_coordinates(tmp_path):
    # a PNG + .pgw (no .prj): the outputs are in the world file's coordinates; the warning said
    # "class map on the pixel grid ... building polygons in pixel coordinates"
    png = plain_png(tmp_path / "wf.png", (0, 0, 256, 192))
    (tmp_path / "wf.pgw").write_text("0.3\n0\n0\n-0.3\n500000.15\n9000000.15\n")  # pixel centre
    out = tmp_path / "o"
    result = CliRunner().invoke(app, ["predict", str(png), "--out", str(out), "--profile", "fast"])
    assert result.exit_code == 0, result.output
    assert "pixel coordinates" not in result.stderr and "world file" in result.stderr, result.stderr
    assert not (out / "buildings.geojson").exists()
    with rasterio.open(out / "classmap.tif") as cm:
        assert cm.crs is None and (cm.transform.c, cm.transform.f, cm.transform.a) == (500000.0, 9000000.3, 0.3)
    frame = gpd.read_file(out / "buildings.gpkg")
    assert len(frame) > 0
    x0, y0, x1, y1 = frame.total_bounds
    assert 500000 <= x0 and x1 <= 500000 + 256 * 0.3 and 9000000.3 - 192 * 0.3 <= y0 and y1 <= 9000000.3


def test_an_input_georeferenced_by_gcps_only_is_told_to_warp_first(tmp_path):
    # QGIS places such a raster (it warps it on the fly); geoseg reads its pixel grid, so the
    # outputs would not sit on it: "not georeferenced" alone left the user guessing why
    from rasterio.control import GroundControlPoint

    with rasterio.open(SCENE) as src:
        pixels, t, crs = src.read([1, 2, 3], window=Window(0, 0, 160, 128)), src.transform, src.crs
    gcps = [GroundControlPoint(r, c, *(t * (c, r))) for r, c in [(0, 0), (0, 160), (128, 0), (128, 160)]]
    path = tmp_path / "gcp.tif"
    with rasterio.open(path, "w", driver="GTiff", width=160, height=128, count=3, dtype="uint8",
                       gcps=gcps, crs=crs) as dst:
        dst.write(pixels)
    result = CliRunner().invoke(app, ["predict", str(path), "--out", str(tmp_path / "o"), "--profile", "fast",
                                      "--no-classmap"])
    assert result.exit_code == 0, result.output
    lines = result.stderr.strip().splitlines()
    assert any("only GCPs" in line and "gdalwarp" in line for line in lines), lines
    assert not any("input is not georeferenced" in line for line in lines), lines  # one note, not two
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert any("gdalwarp" in w for w in report["warnings"])


def test_a_local_engineering_crs_gives_the_geopackage_and_class_map_in_it(tmp_path):
    # a drone survey's site grid in metres (LOCAL_CS): no longitude/latitude, so no GeoJSON, but a
    # known pixel size. It ended in "error: Error creating Transformer from CRS." after the models ran.
    from rasterio.crs import CRS
    from rasterio.transform import from_origin

    crs = CRS.from_wkt('LOCAL_CS["site grid",UNIT["metre",1],AXIS["Easting",EAST],AXIS["Northing",NORTH]]')
    with rasterio.open(SCENE) as src:
        pixels = src.read([1, 2, 3], window=Window(0, 0, 256, 256))
    path = tmp_path / "site.tif"
    with rasterio.open(path, "w", driver="GTiff", width=256, height=256, count=3, dtype="uint8", crs=crs,
                       transform=from_origin(1000, 2000, 0.3, 0.3)) as dst:
        dst.write(pixels)
    out = tmp_path / "o"
    result = CliRunner().invoke(app, ["predict", str(path), "--out", str(out), "--profile", "fast"])
    assert result.exit_code == 0, result.output
    assert "cannot be converted to longitude/latitude" in result.stderr
    assert not (out / "buildings.geojson").exists()
    report = json.loads((out / "report.json").read_text())
    assert report["gsd"]["input_m"] == pytest.approx(0.3)  # the CRS's own unit: the models see 0.3 m
    assert report["outputs"] == ["buildings.gpkg", "classmap.qml", "classmap.tif", "report.json"]
    frame = gpd.read_file(out / "buildings.gpkg")
    assert frame.crs is not None and frame.crs.equals(crs.to_wkt()) and len(frame) == report["counts"]["buildings"]
    assert len(frame) > 0  # planar areas in the site grid's metres
    np.testing.assert_allclose(frame["area_m2"], frame.area, atol=0.01)
    with rasterio.open(out / "classmap.tif") as cm:
        assert cm.crs == crs and cm.transform == from_origin(1000, 2000, 0.3, 0.3)


def test_gsd_override_scales_areas_like_the_minimum_area(tmp_path):
    """--gsd says what an input pixel really measures: area_m2, --min-area and the working GSD in
    report.json all use that measure, not the raster's georeferencing."""
    runner = CliRunner()
    for name, extra in (("native", []), ("override", ["--gsd", "0.6"])):
        result = runner.invoke(app, ["predict", str(SCENE), "--out", str(tmp_path / name), *FAST, *extra])
        assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "override" / "report.json").read_text())
    native_gsd, min_area = report["gsd"]["input_m"], report["postprocess"]["min_area_m2"]
    assert native_gsd == pytest.approx(0.3, rel=0.02) and min_area > 0
    card_gsd = report["models"]["buildings"]["gsd_m"]
    assert report["gsd"]["working_m"]["buildings"] == pytest.approx(card_gsd, rel=0.01)
    for name, scale in (("native", 1.0), ("override", (0.6 / native_gsd) ** 2)):
        frame = gpd.read_file(tmp_path / name / "buildings.gpkg")
        assert len(frame) > 10
        utm = frame.to_crs(frame.estimate_utm_crs()).area.to_numpy()
        np.testing.assert_allclose(frame["area_m2"].to_numpy(), utm * scale, rtol=1e-3, atol=0.02)
        assert (frame["area_m2"] >= min_area * 0.95).all(), frame["area_m2"].min()  # simplification nibbles


def strip_of(path, rows: int, out):
    """The first ``rows`` rows from row 200 of a real scene, georeferenced."""
    with rasterio.open(path) as src:
        window = Window(0, 200, src.width, rows)
        profile = src.profile | {"height": rows, "transform": src.window_transform(window)}
        with rasterio.open(out, "w", **profile) as dst:
            dst.write(src.read(window=window))
    return out


@pytest.mark.parametrize("rows", [1, 2])
def test_a_one_pixel_high_raster_gets_a_class_map(tmp_path, rows):
    """At the land-cover head's 1.1 m a 0.3 m row is under half a working pixel: the working row's
    centre fell off the raster, nothing was valid and the class map was all nodata."""
    path = strip_of(SCENE, rows, tmp_path / f"strip{rows}.tif")
    result = CliRunner().invoke(app, ["predict", str(path), "--out", str(tmp_path / "o"), "--profile", "fast",
                                      "--no-buildings", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "no building model run" in result.stdout  # the summary said "- buildings"
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["tiles"]["landcover"]["skipped_nodata"] == 0
    with rasterio.open(tmp_path / "o" / "classmap.tif") as cm:
        classes = cm.read(1)
    assert classes.shape == (rows, 768)
    assert (classes > 0).all(), "valid input pixels with no class"


def test_a_thin_rasters_working_pixel_is_centred_on_it(tmp_path):
    with rasterio.open(SCENE) as src:
        crs, t = src.crs, src.transform
    with Scene(strip_of(SCENE, 1, tmp_path / "one.tif"), gsd=1.1) as scene:
        assert scene.height == 1
        _, valid = scene.read(Window(0, 0, scene.width, 1))
        assert valid[:, :-1].all()  # the last column's centre may be past the raster's right edge
    # the row's centre is the raster's centre; a raster wider than half a pixel keeps its corner
    transform, _, height = working_grid(crs, t, 768, 1, 1.1)
    assert height == 1 and transform.f + transform.e / 2 == pytest.approx(t.f + t.e / 2)
    transform, _, _ = working_grid(crs, t, 768, 2, 1.1)
    assert (transform.c, transform.f) == (t.c, t.f)


def test_min_area_default_in_help_and_docs_is_the_shipped_cards():
    cards = {p: json.loads(shipped_card_path("buildings", p).read_text()) for p in ("accurate", "fast")}
    areas = {p: postprocess_from_card(card).min_area_m2 for p, card in cards.items()}
    help_text = " ".join(CliRunner().invoke(app, ["predict", "--help"]).output.replace("│", " ").split())
    assert f"{areas['accurate']:g} accurate, {areas['fast']:g} fast" in help_text
    docs = " ".join((Path(__file__).parents[1] / "docs" / "predict.md").read_text().split())
    assert f"{areas['accurate']:g} m² for the shipped accurate head, {areas['fast']:g} m²" in docs
    assert "[--min-area 3]" not in docs


def test_a_folder_is_a_batch_of_the_rasters_directly_inside_it(tmp_path):
    """Mapping teams point predict at a folder of scenes: its rasters (not sidecars, not sub-folders,
    which may hold earlier results) each get DIR/<stem>/; an empty folder is a one-line error."""
    scenes = tmp_path / "scenes"
    (scenes / "older-results" / "nested").mkdir(parents=True)
    with rasterio.open(KAMPALA / "kampala_z19_2.tif") as src:
        profile, pixels = src.profile, src.read(window=Window(0, 0, 128, 128))
        profile.update(width=128, height=128, transform=src.window_transform(Window(0, 0, 128, 128)))
    for name in ("a.tif", "B.TIF", "older-results/nested/c.tif"):
        with rasterio.open(scenes / name, "w", **profile) as dst:
            dst.write(pixels)
    # a sidecar that is part of the scene (a band's description): a and B are then not the same content
    (scenes / "a.tif.aux.xml").write_text('<PAMDataset><PAMRasterBand band="1"><Description>red</Description>'
                                          '</PAMRasterBand></PAMDataset>')
    (scenes / "notes.txt").write_text("not a raster")
    result = CliRunner().invoke(app, ["predict", str(scenes), "--out", str(tmp_path / "out"), *FAST])
    assert result.exit_code == 0, result.output
    assert "2 predicted, 0 already done, 0 failed" in result.stdout
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["B", "a", "batch.json"]
    assert all((tmp_path / "out" / stem / "report.json").is_file() for stem in ("a", "B"))
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not a raster")
    nothing = CliRunner().invoke(app, ["predict", str(empty), "--out", str(tmp_path / "o2"), *FAST])
    assert_one_line_error(nothing, "predict", "no rasters in folder", str(empty))


def test_a_folder_copied_from_a_mac_is_not_failed_by_its_hidden_appledouble_files(tmp_path):
    """macOS writes ``._a.tif`` (AppleDouble metadata, not a raster) beside each file it copies to a
    USB disk, a share or a zip: each was a failed input and the batch exited 1 with all scenes done."""
    _crops(tmp_path / "s", "a.tif")
    (tmp_path / "s" / "._a.tif").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        ")
    result = CliRunner().invoke(app, ["predict", str(tmp_path / "s"), "--out", str(tmp_path / "o"), *FAST])
    assert result.exit_code == 0 and "1 predicted, 0 already done, 0 failed" in result.stdout, result.output
    assert [e["input"] for e in json.loads((tmp_path / "o" / "batch.json").read_text())["inputs"]] == [
        str(tmp_path / "s" / "a.tif")]


def test_sidecars_a_shell_pattern_sweeps_in_are_left_out_of_the_batch(tmp_path):
    """``geoseg predict scenes/* --out r/``: the shell passes the sidecars too. The .aux.xml and .msk
    each failed (exit 1, every scene done) and the .ovr, a GeoTIFF of overviews, was predicted as an
    ungeoreferenced scene into r/a.tif/. A sidecar given without its raster fails as what it is (it was
    predicted: overviews without georeferencing, or buildings found in a mask read as grey imagery)."""
    _crops(tmp_path / "s", "a.tif", "b.tif")
    _crops(tmp_path / "t", "lone.tif")
    s = tmp_path / "s"
    with rasterio.open(s / "a.tif") as src:
        profile = src.profile | {"width": 64, "height": 64}
        del profile["transform"], profile["crs"]
        with rasterio.open(s / "a.tif.ovr", "w", **profile) as ovr:  # as GDAL's external overviews
            ovr.write(src.read(out_shape=(3, 64, 64)))
    (s / "a.tif.aux.xml").write_text("<PAMDataset/>")
    (s / "b.tif.msk").write_bytes((s / "a.tif.ovr").read_bytes())
    (s / "b.tfw").write_text("0.3\n0\n0\n-0.3\n0\n0\n")
    (tmp_path / "t" / "lone.tif").rename(tmp_path / "t" / "lone.tif.ovr")
    given = sorted(str(p) for p in s.iterdir())  # what the shell makes of s/*
    result = CliRunner().invoke(app, ["predict", *given, "--out", str(tmp_path / "o"), *FAST])
    assert result.exit_code == 0 and "2 predicted, 0 already done, 0 failed" in result.stdout, result.output
    summary = json.loads((tmp_path / "o" / "batch.json").read_text())
    assert [e["input"] for e in summary["inputs"]] == [str(s / "a.tif"), str(s / "b.tif")]
    assert summary["warnings"] == ["left out 4 sidecar files of the inputs (a.tif.aux.xml, a.tif.ovr, b.tfw, "
                                   "b.tif.msk): GDAL reads each with its raster"]
    assert f"warning: {summary['warnings'][0]}" in result.stderr
    alone = CliRunner().invoke(app, ["predict", str(s / "b.tif"), str(tmp_path / "t" / "lone.tif.ovr"), "--out",
                                     str(tmp_path / "o2"), *FAST])
    assert alone.exit_code == 1 and "1 predicted, 0 already done, 1 failed" in alone.stdout, alone.output
    assert ("lone.tif.ovr is the external overviews of lone.tif, which is not beside it, not a scene: predict "
            "lone.tif") in alone.output


def test_a_prediction_of_a_relative_path_is_scored_from_any_folder(tmp_path, monkeypatch):
    """report.json names a local input by its absolute path: eval, run from another folder, reads its grid."""
    (tmp_path / "scenes").mkdir()
    with rasterio.open(KAMPALA / "kampala_z19_1.tif") as src:
        window = Window(0, 0, 256, 256)
        profile, pixels = src.profile, src.read(window=window)
        profile.update(width=256, height=256, transform=src.window_transform(window))
    with rasterio.open(tmp_path / "scenes" / "k.tif", "w", **profile) as dst:
        dst.write(pixels)
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    result = runner.invoke(app, ["predict", "scenes/k.tif", "--out", "pred", *FAST])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "pred" / "report.json").read_text())["input"] == str(tmp_path / "scenes" / "k.tif")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    scored = runner.invoke(app, ["eval", "../pred", "--labels", str(KAMPALA / "labels.geojson")])
    assert scored.exit_code == 0, scored.output


def test_a_batch_rerun_with_other_options_or_inputs_predicts_again(tmp_path):
    """Resuming skips a folder only when its report.json says the same input and options: a changed
    option (or another input of the same stem) is predicted again, never silently reused; a folder
    that is no output of predict is left alone and that input fails."""
    with rasterio.open(KAMPALA / "kampala_z19_2.tif") as src:
        profile, pixels = src.profile, src.read(window=Window(0, 0, 128, 128))
        profile.update(width=128, height=128, transform=src.window_transform(Window(0, 0, 128, 128)))
    for name in ("s/a.tif", "s/b.tif", "t/a.tif"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        with rasterio.open(tmp_path / name, "w", **profile) as dst:
            # each another scene: a copy, under any name or in any folder, is copied, not predicted
            dst.write({"s/a.tif": pixels, "s/b.tif": pixels[:, ::-1], "t/a.tif": pixels[:, :, ::-1]}[name])
    out = tmp_path / "out"
    runner = CliRunner()

    def run(*args: str):
        return runner.invoke(app, ["predict", *args, "--out", str(out), *FAST])

    first = run(str(tmp_path / "s"))
    assert first.exit_code == 0 and "2 predicted, 0 already done, 0 failed" in first.stdout, first.output
    again = run(str(tmp_path / "s"))
    assert "0 predicted, 2 already done, 0 failed" in again.stdout, again.output
    squared = run(str(tmp_path / "s"), "--regularize")
    assert squared.exit_code == 0 and "2 predicted, 0 already done, 0 failed" in squared.stdout, squared.output
    assert "2 of them predicted again" in squared.stdout
    assert all(json.loads((out / s / "report.json").read_text())["options"]["regularize"] for s in "ab")
    assert sorted(p.name for p in out.iterdir()) == ["a", "b", "batch.json"]  # no .part / .old left behind
    other = run(str(tmp_path / "t" / "a.tif"), str(tmp_path / "s" / "b.tif"), "--regularize")
    assert "1 predicted, 1 already done, 0 failed" in other.stdout, other.output
    assert json.loads((out / "a" / "report.json").read_text())["input"] == str(tmp_path / "t" / "a.tif")
    (out / "c").mkdir()
    (out / "c" / "mine.txt").write_text("not a prediction")
    (tmp_path / "s" / "c.tif").write_bytes((tmp_path / "s" / "a.tif").read_bytes())
    taken = run(str(tmp_path / "s"), "--regularize")
    assert taken.exit_code == 1 and "1 predicted, 1 already done, 1 failed" in taken.stdout, taken.output  # a: from s/
    assert "geoseg predict: error: c.tif: " in taken.stderr and "not an output of geoseg predict" in taken.stderr
    assert (out / "c" / "mine.txt").read_text() == "not a prediction"


def test_one_file_given_twice_is_predicted_once_and_a_stem_clash_names_the_files(tmp_path):
    """A folder and a file inside it (or two spellings of one path) are one input, not a 'stem clash';
    two different files of one stem are refused naming both; two copies of one scene and name, one input."""
    with rasterio.open(KAMPALA / "kampala_z19_2.tif") as src:
        profile, pixels = src.profile, src.read(window=Window(0, 0, 128, 128))
        profile.update(width=128, height=128, transform=src.window_transform(Window(0, 0, 128, 128)))
    for name in ("s/a.tif", "t/a.tif"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        with rasterio.open(tmp_path / name, "w", **profile) as dst:
            dst.write(pixels if name == "s/a.tif" else pixels[:, ::-1])  # two scenes of one name
    runner = CliRunner()
    both = runner.invoke(app, ["predict", str(tmp_path / "s"), str(tmp_path / "s" / "a.tif"),
                               str(tmp_path / "t" / ".." / "s" / "a.tif"), "--out", str(tmp_path / "o"), *FAST])
    assert both.exit_code == 0 and "1 predicted, 0 already done, 0 failed" in both.stdout, both.output
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["a", "batch.json"]  # the batch layout: several were given
    one = runner.invoke(app, ["predict", str(tmp_path / "s" / "a.tif"), "--out", str(tmp_path / "one"), *FAST])
    speed = re.search(r"\((\S+) Mpx/s\)", one.stdout)  # to 2 decimals, a small scene's speed read 0.00
    assert one.exit_code == 0 and speed, one.output
    measured = json.loads((tmp_path / "one" / "report.json").read_text())["mpx_per_s"]
    assert speed.group(1) == f"{measured:.3g}" and float(speed.group(1)) > 0
    clash = runner.invoke(app, ["predict", str(tmp_path / "s" / "a.tif"), str(tmp_path / "t" / "a.tif"),
                                "--out", str(tmp_path / "c"), *FAST])
    assert_one_line_error(clash, "predict", "share the stem 'a'", str(tmp_path / "s" / "a.tif"),
                          str(tmp_path / "t" / "a.tif"), "both would write", "rename one")
    (tmp_path / "u").mkdir()
    with rasterio.open(tmp_path / "u" / "a.tif", "w", **profile) as dst:
        dst.write(pixels[:, :, ::-1])  # a third scene of that name
    three = runner.invoke(app, ["predict", str(tmp_path / "s" / "a.tif"), str(tmp_path / "t" / "a.tif"),
                                str(tmp_path / "u" / "a.tif"), "--out", str(tmp_path / "c"), *FAST])
    assert_one_line_error(three, "predict", "share the stem 'a'", str(tmp_path / "u" / "a.tif"),
                          "all 3 would write", "rename all but one")
    # the same scene of the same name in two folders (deliveries merged) is one input, said in a warning
    (tmp_path / "t" / "a.tif").write_bytes((tmp_path / "s" / "a.tif").read_bytes())
    twins = runner.invoke(app, ["predict", str(tmp_path / "s"), str(tmp_path / "t"), "--out", str(tmp_path / "d"),
                                *FAST])
    assert twins.exit_code == 0 and "1 predicted, 0 already done, 0 failed" in twins.stdout, twins.output
    assert (f"warning: {tmp_path / 't' / 'a.tif'} is the same scene as {tmp_path / 's' / 'a.tif'} (the same name and "
            f"content): predicted once, into {tmp_path / 'd' / 'a'}") in twins.stderr


@pytest.mark.parametrize("batch", [False, True])
def test_an_unusable_out_is_one_line_before_any_work(tmp_path, batch):
    (tmp_path / "file").write_text("a file")
    scenes = [str(SCENE)] + ([str(KAMPALA / "kampala_z19_2.tif")] if batch else [])
    runner = CliRunner()
    is_file = runner.invoke(app, ["predict", *scenes, "--out", str(tmp_path / "file"), *FAST])
    assert_one_line_error(is_file, "predict", f"--out {tmp_path / 'file'} is a file, not a folder")
    under_file = runner.invoke(app, ["predict", *scenes, "--out", str(tmp_path / "file" / "sub"), *FAST])
    assert_one_line_error(under_file, "predict", "cannot write into the --out folder", "Not a directory")
    assert "[Errno" not in under_file.stderr and not is_file.stdout


def test_ctrl_c_in_a_batch_keeps_finished_folders_and_says_how_to_resume(tmp_path, monkeypatch):
    import geoseg.commands.predict as command

    real = command._predict_into

    def interrupted(options, input_path, out_dir):
        if Path(input_path).name == "b.tif":
            (Path(out_dir) / "half.tif").parent.mkdir(parents=True, exist_ok=True)
            (Path(out_dir) / "half.tif").write_text("half written")
            raise KeyboardInterrupt
        return real(options, input_path, out_dir)

    monkeypatch.setattr(command, "_predict_into", interrupted)
    _crops(tmp_path / "s", "a.tif", "b.tif", "c.tif")
    result = CliRunner().invoke(app, ["predict", str(tmp_path / "s"), "--out", str(tmp_path / "o"), *FAST])
    assert result.exit_code == 130, result.output
    assert_stopped_after_the_first(result, tmp_path / "o", "interrupted", 130)


def test_sigterm_stops_a_batch_as_ctrl_c_does(tmp_path, monkeypatch):
    """timeout, a cancelled CI job or systemd end a batch with SIGTERM: Python died at once, leaving
    the input's .part folder, no word, and a batch.json saying 'running'."""
    import os
    import signal

    import geoseg.commands.predict as command

    class OldDefault(Exception):
        """Stands for Python's default action (the end of this test process) had SIGTERM not been handled."""

    def default(signum, frame):
        raise OldDefault

    real = command._predict_into

    def terminated_on_b(options, input_path, out_dir):
        if Path(input_path).name == "b.tif":
            Path(out_dir).mkdir(parents=True, exist_ok=True)
            os.kill(os.getpid(), signal.SIGTERM)
        return real(options, input_path, out_dir)

    monkeypatch.setattr(command, "_predict_into", terminated_on_b)
    previous = signal.signal(signal.SIGTERM, default)
    try:
        _crops(tmp_path / "s", "a.tif", "b.tif", "c.tif")
        result = CliRunner().invoke(app, ["predict", str(tmp_path / "s"), "--out", str(tmp_path / "o"), *FAST])
        assert signal.getsignal(signal.SIGTERM) is default  # given back after the command
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert result.exit_code == 143, (result.exception, result.output)
    assert_stopped_after_the_first(result, tmp_path / "o", "terminated", 143)


MODEL_FAILS_MIDWAY = r'''
import sys
import geoseg.infer as infer
calls = {"n": 0}
real = infer.TileModel.probabilities_and_features, infer.TileModel.probabilities

def failing(method):
    def call(self, images):
        calls["n"] += 1
        if calls["n"] == 2:  # the second batch of tiles: the reading thread is at work meanwhile
            raise MemoryError("out of memory in the model")
        return method(self, images)
    return call

infer.TileModel.probabilities_and_features, infer.TileModel.probabilities = map(failing, real)
from geoseg.cli import app
sys.argv = ["geoseg", "predict", *sys.argv[1:]]
sys.exit(app())
'''


def test_a_model_failing_midway_fails_its_input_and_the_batch_goes_on(tmp_path):
    # the tile-reading thread was left reading while the scene it read was closed: the process died
    # of a segmentation fault (exit 139), the batch's later inputs never ran and batch.json said
    # 'running'. The same crash followed most SIGTERMs during a model stage
    import subprocess
    import sys

    big = data_root() / "buildings" / "zanzibar" / "zanzibar_z21_1.tif"  # many batches of tiles
    _crops(tmp_path / "s", "b.tif")
    (tmp_path / "s" / "a.tif").symlink_to(big)
    done = subprocess.run([sys.executable, "-c", MODEL_FAILS_MIDWAY, str(tmp_path / "s"), "--out",
                           str(tmp_path / "o"), *FAST], capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, (done.returncode, done.stderr[-2000:])
    assert "a.tif: MemoryError: out of memory in the model" in done.stderr, done.stderr[-2000:]
    summary = json.loads((tmp_path / "o" / "batch.json").read_text())
    assert (summary["state"], summary["exit_code"]) == ("finished", 1)
    assert [e["status"] for e in summary["inputs"]] == ["failed", "done"]


def assert_stopped_after_the_first(result, out: Path, word: str, code: int) -> None:
    """A batch of a, b, c stopped while predicting b: one line saying how to resume, a's folder kept,
    no .b.part left, and batch.json saying so."""
    assert result.stderr.strip().splitlines()[-1] == (
        f"geoseg predict: {word}: finished folders are kept, run the same command again to resume")
    assert sorted(p.name for p in out.iterdir()) == ["a", "batch.json"]  # no .b.part left
    summary = json.loads((out / "batch.json").read_text())
    assert (summary["state"], summary["exit_code"]) == ("interrupted", code)
    assert [e["status"] for e in summary["inputs"]] == ["done", "pending", "pending"]


def _crops(folder: Path, *names: str) -> None:
    """128 px crops of a real scene, one per name, in ``folder``: each name its own pixels (a batch
    predicts copies of one scene once), a.tif the scene's, b.tif those upside down."""
    import zlib

    folder.mkdir(parents=True, exist_ok=True)
    with rasterio.open(KAMPALA / "kampala_z19_2.tif") as src:
        profile, pixels = src.profile, src.read(window=Window(0, 0, 128, 128))
        profile.update(width=128, height=128, transform=src.window_transform(Window(0, 0, 128, 128)))
    for name in names:
        with rasterio.open(folder / name, "w", **profile) as dst:
            dst.write(pixels if name == "a.tif" else pixels[:, ::-1] if name == "b.tif"
                      else np.roll(pixels, 1 + zlib.crc32(name.encode()) % 120, axis=2))


def test_a_batch_leaves_a_summary_a_script_reads_instead_of_its_output(tmp_path, monkeypatch):
    """Scripts and cron jobs had only the human output (a bar, counts, warning and error lines on two
    streams) to tell which inputs were predicted, skipped, redone or failed; DIR/batch.json says it
    per input, with the folder, seconds, buildings, warnings and a one-line error, and (since session 30)
    the command line a scheduler's retry runs again."""
    _crops(tmp_path / "s", "a.tif", "b.tif")
    (tmp_path / "s" / "broken.tif").write_bytes(b"not a raster")
    args = ["predict", str(tmp_path / "s"), "--out", str(tmp_path / "o"), *FAST]
    monkeypatch.setattr("sys.argv", ["/opt/venv/bin/geoseg", *args])  # as the process was started
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 1, first.output
    summary = json.loads((tmp_path / "o" / "batch.json").read_text())
    assert (summary["command"], summary["state"], summary["exit_code"]) == ("geoseg predict", "finished", 1)
    assert summary["argv"] == ["geoseg", *args]
    assert (summary["pid"], summary["host"]) == (os.getpid(), socket.gethostname())  # a pid names a process on a host
    assert summary["totals"] == {"inputs": 3, "done": 2, "redone": 0, "skipped": 0, "failed": 1, "pending": 0}
    a, _, broken = summary["inputs"]
    assert (a["input"], a["status"], a["output"]) == (str(tmp_path / "s" / "a.tif"), "done", str(tmp_path / "o" / "a"))
    assert a["buildings"] == len(gpd.read_file(tmp_path / "o" / "a" / "buildings.gpkg")) and a["seconds"] > 0
    assert (broken["status"], broken["output"], broken["buildings"]) == ("failed", None, None)
    assert broken["error"].startswith("PredictError: ") and "\n" not in broken["error"]
    _crops(tmp_path / "new", "c.tif")  # a new delivery of b, of other pixels: predicted again
    os.replace(tmp_path / "new" / "c.tif", tmp_path / "s" / "b.tif")
    (tmp_path / "s" / "broken.tif").unlink()
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    summary = json.loads((tmp_path / "o" / "batch.json").read_text())
    assert [(e["status"], e["buildings"] is not None) for e in summary["inputs"]] == [("skipped", True), ("redone", True)]
    assert summary["exit_code"] == 0 and summary["totals"]["inputs"] == 2


def test_one_input_and_a_batch_do_not_mix_their_layouts_in_one_out(tmp_path):
    """Re-running the one input a batch had failed, ``geoseg predict s/a.tif --out o``, wrote its files
    into o/ among the batch's folders (not o/a/), and batch.json still called it failed; a batch into
    the folder of one input's results put its folders among those files. Both are refused at once."""
    _crops(tmp_path / "s", "a.tif")
    batch = CliRunner().invoke(app, ["predict", str(tmp_path / "s"), "--out", str(tmp_path / "o"), *FAST])
    assert batch.exit_code == 0, batch.output
    before = sorted(p.name for p in (tmp_path / "o").iterdir())
    one = CliRunner().invoke(app, ["predict", str(tmp_path / "s" / "a.tif"), "--out", str(tmp_path / "o"), *FAST])
    assert_one_line_error(one, "predict", "holds a batch's results", f"--out {tmp_path / 'o' / 'a'}")
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == before
    # o/a holds one input's results, as a single input's --out does
    many = CliRunner().invoke(app, ["predict", str(tmp_path / "s"), "--out", str(tmp_path / "o" / "a"), *FAST])
    assert_one_line_error(many, "predict", "holds the results of one input")
    assert not (tmp_path / "o" / "a" / "batch.json").exists() and not (tmp_path / "o" / "a" / "a").exists()


def test_one_input_into_the_results_of_another_input_is_refused(tmp_path):
    """Scheduler array jobs, each task ``geoseg predict scene_$ID.tif --out results``: each replaced
    the last one's results without a word. The same input again (another version, moved) replaces them."""
    _crops(tmp_path / "s", "a.tif", "b.tif")
    out = tmp_path / "o"
    assert CliRunner().invoke(app, ["predict", str(tmp_path / "s" / "a.tif"), "--out", str(out), *FAST]).exit_code == 0
    before = (out / "report.json").read_bytes()
    other = CliRunner().invoke(app, ["predict", str(tmp_path / "s" / "b.tif"), "--out", str(out), *FAST])
    assert_one_line_error(other, "predict", f"{out} holds the results of another input, a.tif (report.json): b.tif's "
                                            f"would replace them", f"--out {tmp_path / 'b'}", f"remove {out} first")
    assert (out / "report.json").read_bytes() == before
    (tmp_path / "t").mkdir()
    (tmp_path / "s" / "a.tif").rename(tmp_path / "t" / "a.tif")
    again = CliRunner().invoke(app, ["predict", str(tmp_path / "t" / "a.tif"), "--out", str(out), *FAST])
    assert again.exit_code == 0, again.output
    # another scene of the same name elsewhere (y2023/ortho.tif, y2024/ortho.tif): refused too
    (tmp_path / "u").mkdir()
    with rasterio.open(tmp_path / "t" / "a.tif") as src:
        profile, pixels = src.profile, src.read(window=Window(0, 0, 96, 96))
        profile.update(width=96, height=96, transform=src.window_transform(Window(0, 0, 96, 96)))
    with rasterio.open(tmp_path / "u" / "a.tif", "w", **profile) as dst:
        dst.write(pixels)
    other_scene = CliRunner().invoke(app, ["predict", str(tmp_path / "u" / "a.tif"), "--out", str(out), *FAST])
    assert_one_line_error(other_scene, "predict", f"{out} holds the results of another scene of the same name, "
                                                  f"{tmp_path / 't' / 'a.tif'}")


def test_a_folder_missing_one_of_its_files_is_predicted_again_and_the_line_says_why(tmp_path):
    """A batch folder that lost one of its outputs (buildings.gpkg deleted) was predicted again, as it must
    be, but the line said only 'held results of other options, of another input or model, or of an
    earlier version of the file': none of which was the case."""
    _crops(tmp_path / "s", "a.tif")
    args = ["predict", str(tmp_path / "s"), "--out", str(tmp_path / "o"), *FAST]
    assert CliRunner().invoke(app, args).exit_code == 0
    (tmp_path / "o" / "a" / "buildings.gpkg").unlink()
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0 and (tmp_path / "o" / "a" / "buildings.gpkg").is_file(), again.output
    assert "1 of them predicted again" in again.stdout and "lacked one of its files" in again.stdout, again.stdout


def test_a_16_bit_scene_predicted_before_scaling_was_recorded_is_predicted_again(tmp_path):
    """A report without ``scaling`` (before session 28) of a uint16 input holds a stretch of it, which
    8-bit data in a wider type no longer gets: resuming predicts it again; a uint8 one stays done."""
    _crops(tmp_path / "s", "a.tif")
    with rasterio.open(tmp_path / "s" / "a.tif") as src:
        profile, pixels = dict(src.profile), src.read()
    profile = {k: v for k, v in profile.items() if k not in ("compress", "photometric", "jpeg_quality")}
    with rasterio.open(tmp_path / "s" / "wide.tif", "w", **(profile | {"dtype": "uint16"})) as dst:
        dst.write(pixels.astype(np.uint16) * 257)
    args = ["predict", str(tmp_path / "s"), "--out", str(tmp_path / "o"), *FAST]
    assert CliRunner().invoke(app, args).exit_code == 0
    for stem in ("a", "wide"):  # as an earlier geoseg wrote them
        report_path = tmp_path / "o" / stem / "report.json"
        report = json.loads(report_path.read_text())
        assert report["scaling"]["method"] == {"a": "as stored", "wide": "8-bit values"}[stem]
        del report["scaling"]
        report_path.write_text(json.dumps(report))
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0 and "1 predicted, 1 already done, 0 failed" in again.stdout, again.output
    assert "1 of them predicted again" in again.stdout and "(wide.tif)" in again.stdout, again.stdout
    assert "scaling" in json.loads((tmp_path / "o" / "wide" / "report.json").read_text())


def test_predict_and_tile_do_not_share_an_out(tmp_path):
    """``geoseg predict`` into a chip set's folder (and ``geoseg tile`` into a batch's) ran, writing among
    the other's files and replacing its batch.json: a script reading the chip set's summary read predict's."""
    _crops(tmp_path / "s", "a.tif")
    (tmp_path / "s" / "labels.geojson").write_bytes((KAMPALA / "labels.geojson").read_bytes())
    chips, results = tmp_path / "chips", tmp_path / "results"
    tiled = CliRunner().invoke(app, ["tile", str(tmp_path / "s"), "--out", str(chips), "--size", "128"])
    assert tiled.exit_code == 0, tiled.output
    into_chips = CliRunner().invoke(app, ["predict", str(tmp_path / "s"), "--out", str(chips), *FAST])
    assert_one_line_error(into_chips, "predict", "holds the output of geoseg tile")
    assert json.loads((chips / "batch.json").read_text())["command"] == "geoseg tile" and not (chips / "a").exists()
    predicted = CliRunner().invoke(app, ["predict", str(tmp_path / "s"), "--out", str(results), *FAST])
    assert predicted.exit_code == 0, predicted.output
    into_results = CliRunner().invoke(app, ["tile", str(tmp_path / "s"), "--out", str(results), "--size", "128"])
    assert_one_line_error(into_results, "tile", "holds the output of geoseg predict")
    assert not (results / "index.geojson").exists()


def test_the_batch_summary_is_rewritten_as_each_input_finishes(tmp_path, monkeypatch):
    """A batch killed half-way (kill -9, a lost machine) must leave a summary saying what finished:
    each job here reads the summary the batch wrote before it started."""
    import geoseg.commands.predict as command

    real, seen = command._predict_into, {}

    def predict_and_look(options, input_path, out_dir):
        seen[Path(input_path).name] = json.loads((tmp_path / "o" / "batch.json").read_text())
        return real(options, input_path, out_dir)

    monkeypatch.setattr(command, "_predict_into", predict_and_look)
    _crops(tmp_path / "s", "a.tif", "c.tif")
    result = CliRunner().invoke(app, ["predict", str(tmp_path / "s"), "--out", str(tmp_path / "o"), *FAST])
    assert result.exit_code == 0, result.output
    assert [e["status"] for e in seen["a.tif"]["inputs"]] == ["pending", "pending"]
    assert [e["status"] for e in seen["c.tif"]["inputs"]] == ["done", "pending"]
    assert seen["c.tif"]["state"] == "running" and seen["c.tif"]["exit_code"] is None
    assert not [p.name for p in (tmp_path / "o").iterdir() if p.name.endswith(".tmp")]


def test_relative_paths_reach_dask_workers_running_elsewhere(tmp_path, monkeypatch):
    """--scheduler tcp://...: the workers run in their own folder, so relative inputs and --out were
    'input not found' there (or, had the inputs existed, written under the worker's folder)."""
    from dask.distributed import LocalCluster

    (tmp_path / "s").mkdir()
    with rasterio.open(KAMPALA / "kampala_z19_2.tif") as src:
        profile, pixels = src.profile, src.read(window=Window(0, 0, 128, 128))
        profile.update(width=128, height=128, transform=src.window_transform(Window(0, 0, 128, 128)))
    for name in ("a.tif", "b.tif"):
        with rasterio.open(tmp_path / "s" / name, "w", **profile) as dst:
            dst.write(pixels if name == "a.tif" else pixels[:, ::-1])  # two scenes (a copy is copied)
    with LocalCluster(processes=True, n_workers=1, threads_per_worker=1, dashboard_address=None) as cluster:
        monkeypatch.chdir(tmp_path)  # after the workers started: they stay in the old folder
        result = CliRunner().invoke(app, ["predict", "s/a.tif", "s/b.tif", "--out", "o",
                                          "--scheduler", cluster.scheduler_address, *FAST])
    assert result.exit_code == 0 and "2 predicted, 0 already done, 0 failed" in result.stdout, result.output
    assert all((tmp_path / "o" / stem / "buildings.gpkg").is_file() for stem in "ab")


def test_a_scene_replaced_under_the_same_name_is_predicted_again(tmp_path):
    with rasterio.open(KAMPALA / "kampala_z19_2.tif") as src:
        profile, pixels = src.profile, src.read(window=Window(0, 0, 128, 128))
        profile.update(width=128, height=128, transform=src.window_transform(Window(0, 0, 128, 128)))
    (tmp_path / "s").mkdir()
    for name in ("a.tif", "b.tif"):
        with rasterio.open(tmp_path / "s" / name, "w", **profile) as dst:
            dst.write(pixels if name == "a.tif" else pixels[:, :, ::-1])  # two scenes (a copy is copied)
    runner = CliRunner()
    args = ["predict", str(tmp_path / "s"), "--out", str(tmp_path / "o"), *FAST]
    assert "2 predicted" in runner.invoke(app, args).stdout
    with rasterio.open(tmp_path / "s" / "b.tif", "w", **profile) as dst:  # a corrected delivery of b
        dst.write(pixels[:, ::-1])
    again = runner.invoke(app, args)
    assert "1 predicted, 1 already done, 0 failed" in again.stdout and "(b.tif)" in again.stdout, again.output
    report = json.loads((tmp_path / "o" / "b" / "report.json").read_text())
    assert report["input_file"]["modified_ns"] == (tmp_path / "s" / "b.tif").stat().st_mtime_ns
    (tmp_path / "s" / "b.tif").write_bytes(b"a broken delivery")  # predicted again, and failing
    broken = runner.invoke(app, args)
    assert broken.exit_code == 1 and "0 predicted, 1 already done, 1 failed" in broken.stdout, broken.output
    assert "predicted again" not in broken.stdout  # it was not: its old folder stays, and it failed
    entry = json.loads((tmp_path / "o" / "batch.json").read_text())["inputs"][1]
    assert (entry["status"], entry["output"], entry["previous_output"]) == ("failed", None, str(tmp_path / "o" / "b"))
    assert json.loads((tmp_path / "o" / "b" / "report.json").read_text()) == report


def test_a_vrt_whose_tile_was_replaced_is_predicted_again(tmp_path):
    """A VRT mosaic as a batch input: a tile of it redelivered changes its pixels but not the VRT's
    size or time, and the batch skipped it as already done, keeping the old tile's buildings."""
    from mosaic_tiles import SCENE as TILED, cut_grid, write_tile
    from tiles.mosaic import plan_mosaic, write_vrt

    tiles = cut_grid(TILED, tmp_path / "tiles", nx=2, ny=1)
    (tmp_path / "s").mkdir()
    write_vrt(plan_mosaic(tiles), tmp_path / "s" / "city.vrt")
    args = ["predict", str(tmp_path / "s"), "--out", str(tmp_path / "o"), *FAST]
    assert "1 predicted" in CliRunner().invoke(app, args).stdout
    assert "0 predicted, 1 already done" in CliRunner().invoke(app, args).stdout
    with rasterio.open(tiles[1]) as src:  # a corrected delivery of the second tile
        pixels, transform, crs = src.read(), src.transform, src.crs
    write_tile(tiles[1], pixels[:, ::-1].copy(), transform, crs)
    again = CliRunner().invoke(app, args)
    assert "1 predicted, 0 already done, 0 failed" in again.stdout and "(city.vrt)" in again.stdout, again.output
    sources = json.loads((tmp_path / "o" / "city" / "report.json").read_text())["input_file"]["sources"]
    assert [(s["path"], s["modified_ns"]) for s in sources] == [(str(t), t.stat().st_mtime_ns) for t in tiles]


def test_a_zip_replaced_under_the_same_name_is_predicted_again(tmp_path):
    """Inputs read from a zip (``/vsizip//s/z.zip/a.tif``) recorded no file at all (``input_file``
    null), and neither did a VRT mosaic of zipped tiles: a batch re-run after a new zip came skipped
    every scene as already done. report.json lists the zip in ``input_file.sources``."""
    from tiles.mosaic import plan_mosaic, write_vrt
    from tiles.rasterpath import vrt_sources

    with rasterio.open(KAMPALA / "kampala_z19_2.tif") as src:
        profile, pixels = src.profile, src.read(window=Window(0, 0, 128, 128))
        profile.update(width=128, height=128, transform=src.window_transform(Window(0, 0, 128, 128)))
    (tmp_path / "s").mkdir()
    zipped = tmp_path / "s" / "z.zip"

    def deliver(flipped: bool) -> None:
        with zipfile.ZipFile(zipped, "w") as archive:
            for name in ("a.tif", "b.tif"):
                with rasterio.open(tmp_path / name, "w", **profile) as dst:
                    dst.write(pixels[:, ::-1] if flipped and name == "b.tif" else pixels)
                archive.write(tmp_path / name, name)

    deliver(False)
    scenes = [f"/vsizip/{zipped}/a.tif", f"/vsizip/{zipped}/b.tif"]
    args = ["predict", *scenes, "--out", str(tmp_path / "o"), *FAST]
    assert "2 predicted" in CliRunner().invoke(app, args).stdout
    assert "0 predicted, 2 already done" in CliRunner().invoke(app, args).stdout
    deliver(True)  # a corrected delivery of b
    again = CliRunner().invoke(app, args)
    assert "2 predicted, 0 already done" in again.stdout and "(a.tif, b.tif)" in again.stdout, again.output
    recorded = json.loads((tmp_path / "o" / "b" / "report.json").read_text())["input_file"]
    assert recorded == {"sources": [{"path": str(zipped), "bytes": zipped.stat().st_size,
                                     "modified_ns": zipped.stat().st_mtime_ns}]}
    write_vrt(plan_mosaic(scenes), tmp_path / "m.vrt")  # a --mosaic's VRT over zipped tiles
    assert vrt_sources(tmp_path / "m.vrt") == [str(zipped)]


def test_a_vrt_whose_tile_is_missing_fails_naming_the_missing_file(tmp_path):
    """A VRT input whose tile was moved away failed as 'RasterioIOError: Read failed. See previous
    exception for details.': which file, and why, was on no line the user saw."""
    from mosaic_tiles import SCENE as TILED, cut_grid
    from tiles.mosaic import plan_mosaic, write_vrt

    tiles = cut_grid(TILED, tmp_path / "tiles", nx=2, ny=1)
    _crops(tmp_path / "s", "a.tif")
    write_vrt(plan_mosaic(tiles), tmp_path / "s" / "city.vrt")
    tiles[1].unlink()
    result = CliRunner().invoke(app, ["predict", str(tmp_path / "s"), "--out", str(tmp_path / "o"), *FAST])
    assert result.exit_code == 1 and "1 predicted, 0 already done, 1 failed" in result.stdout, result.output
    assert result.stderr.splitlines() == [
        f"geoseg predict: error: city.vrt: cannot read its pixels (a file it reads is missing): {tiles[1]}: "
        f"No such file or directory"], result.stderr


@pytest.mark.parametrize(("option", "says"), [
    (["--device", "tpu"], "--device must be auto, cpu or cuda, got 'tpu'"),
    (["--batch-size", "0"], "--batch-size must be >= 1, got 0"),
    (["--context", "-5"], "--context must be >= 0 pixels, got -5"),
])
def test_a_bad_device_batch_size_or_context_is_one_line_before_any_input_runs(tmp_path, option, says):
    """``--device tpu`` was found when each input loaded its models: a batch failed every input with
    'ValueError: device must be ...' and a single input drew its progress bar first."""
    result = CliRunner().invoke(app, ["predict", str(SCENE), str(KAMPALA / "kampala_z19_2.tif"),
                                      "--out", str(tmp_path / "o"), *FAST, *option])
    assert_usage_error(result, "predict", says)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(("option", "says"), [
    (["--model", "buildings=NOPE"], "no model directory or card at"),
    (["--bands", "1,2,9"], "band(s) 9 do not exist"),
])
def test_an_input_that_fails_leaves_no_progress_bar_above_its_error(tmp_path, option, says):
    """A model card that is not there (found once the run began) left the bar at '0.0% ... -:--:-- left'
    above the one-line error; then, without a terminal, an empty line on stdout (rich's last frame of
    the hidden bar), which a script capturing stdout got."""
    option = [o.replace("NOPE", str(tmp_path / "nope")) for o in option]
    result = CliRunner().invoke(app, ["predict", str(SCENE), "--out", str(tmp_path / "o"), *FAST, *option])
    assert_one_line_error(result, "predict", says)
    assert result.stdout == "", repr(result.stdout)


@pytest.mark.parametrize(("address", "inputs"), [("bogus", 2), ("tcp://127.0.0.1", 2), ("host:port", 2),
                                                 ("tcp:/host:8786", 1)])
def test_a_malformed_scheduler_address_is_one_line_before_any_work(tmp_path, address, inputs):
    """Also for one input (run in this process, whatever --scheduler says): its mistyped address was
    ignored without a word."""
    scenes = [str(SCENE), str(KAMPALA / "kampala_z19_2.tif")][:inputs]
    result = CliRunner().invoke(app, ["predict", *scenes, "--out", str(tmp_path / "o"), "--scheduler", address,
                                      *FAST])
    assert_usage_error(result, "predict", "--scheduler expects 'local', 'sync' or a Dask scheduler address", repr(address))
    assert not (tmp_path / "o").exists()



def test_a_scheduler_that_cannot_be_reached_is_one_line_without_an_empty_bar(tmp_path):
    """`--scheduler tcp://unreachable:8786` with several inputs drew the batch bar, then after Dask's
    connect timeout left it, empty at 0/N, above the one-line error (on stdout, which a script
    capturing it got). The cluster is now reached before the bar is drawn; the error says the timeout."""
    import socket

    import dask
    import distributed  # noqa: F401 -- its config defaults, before dask.config.set: they would go at its end

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _crops(tmp_path / "s", "a.tif", "b.tif")
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        result = CliRunner().invoke(app, ["predict", str(tmp_path / "s"), "--out", str(tmp_path / "o"),
                                          "--scheduler", f"tcp://127.0.0.1:{port}", *FAST])
    assert_one_line_error(result, "predict", f"tcp://127.0.0.1:{port}", "after 1 s")
    assert result.stdout == "", repr(result.stdout)
    summary = json.loads((tmp_path / "o" / "batch.json").read_text())
    assert (summary["state"], summary["exit_code"]) == ("aborted", 1) and "after 1 s" in summary["error"]


def test_a_scheduler_address_where_something_else_listens_is_one_line_not_a_hang(tmp_path):
    """`--scheduler tcp://host:8787` (the dashboard's port) or any service that accepts the connection
    and never answers in Dask's protocol hung the batch forever: Dask bounds the TCP connection by its
    connect timeout, not the handshake's reply. Now one line within about that timeout, exit 1."""
    import socket
    import time

    import dask
    import distributed  # noqa: F401 -- its config defaults, before dask.config.set: they would go at its end

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # accepts (the kernel's backlog), never answers
        address = f"tcp://127.0.0.1:{silent.getsockname()[1]}"
        _crops(tmp_path / "s", "a.tif", "b.tif")
        started = time.monotonic()
        with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
            result = CliRunner().invoke(app, ["predict", str(tmp_path / "s"), "--out", str(tmp_path / "o"),
                                              "--scheduler", address, *FAST])
        assert time.monotonic() - started < 30
    assert_one_line_error(result, "predict", f"no Dask scheduler answers at {address}", "nothing answered within",
                          "8786")
    assert result.stdout == ""
    assert json.loads((tmp_path / "o" / "batch.json").read_text())["state"] == "aborted"

def test_a_shell_pattern_that_matched_nothing_is_named_as_such(tmp_path):
    """bash passes 'scenes/*.tif' on unchanged when it matches no file."""
    pattern = str(tmp_path / "*.tif")
    result = CliRunner().invoke(app, ["predict", pattern, "--out", str(tmp_path / "o"), *FAST])
    assert_one_line_error(result, "predict", f"input not found: {pattern} (a shell pattern that matched no file?)")
    plain = CliRunner().invoke(app, ["predict", str(tmp_path / "a.tif"), "--out", str(tmp_path / "o"), *FAST])
    assert_one_line_error(plain, "predict", f"input not found: {tmp_path / 'a.tif'}")
    assert "matched no file" not in plain.stderr


@pytest.mark.parametrize("world_file", [False, True])
@pytest.mark.parametrize("skip, absent", [("--no-buildings", "building"), ("--no-classmap", "class map")])
def test_the_not_georeferenced_warning_names_only_the_outputs_written(tmp_path, skip, absent, world_file):
    # `geoseg predict image.jpg --no-buildings` warned about "building polygons in pixel coordinates in
    # buildings.gpkg", a file that run does not write (and a world file's note of "buildings.gpkg").
    a = plain_png(tmp_path / "a.png", (0, 0, 96, 96))
    if world_file:
        (tmp_path / "a.pgw").write_text("0.3\n0\n0\n-0.3\n1000\n2000\n")
    result = CliRunner().invoke(app, ["predict", str(a), "--out", str(tmp_path / "o"), "--profile", "fast",
                                      "--refine", "none", skip])
    assert result.exit_code == 0, result.output
    said = "input has a geotransform" if world_file else "input is not georeferenced"
    notes = [line for line in result.stderr.splitlines() if said in line]
    assert len(notes) == 1 and absent not in notes[0].replace("no GeoJSON", ""), notes


def test_bands_321_on_an_unlabelled_bgr_scene_gives_the_rgb_scenes_buildings(tmp_path):
    """BGR bands without colour labels were read as R, G, B (5-20 pt of pixel IoU lost, docs/predict.md's
    robustness table); ``--bands 3,2,1`` reads them right: the same buildings as the RGB original."""
    bgr = unlabelled_bgr(SCENE, tmp_path / "bgr.tif")
    runner = CliRunner()
    rgb = runner.invoke(app, ["predict", str(tmp_path / "rgb.tif"), "--out", str(tmp_path / "rgb"), *FAST])
    fixed = runner.invoke(app, ["predict", str(bgr), "--out", str(tmp_path / "fixed"), *FAST, "--bands", "3,2,1"])
    assert rgb.exit_code == 0 and fixed.exit_code == 0, rgb.output + fixed.output
    expected = gpd.read_file(tmp_path / "rgb" / "buildings.gpkg")
    got = gpd.read_file(tmp_path / "fixed" / "buildings.gpkg")
    assert len(expected) > 5
    assert len(got) == len(expected) and all(a.equals(b) for a, b in zip(got.geometry, expected.geometry))
    report = json.loads((tmp_path / "fixed" / "report.json").read_text())
    assert report["options"]["bands"] == [3, 2, 1]
    assert report["bands"] == {"used": [3, 2, 1], "source": "requested", "count": 3}
    assert json.loads((tmp_path / "rgb" / "report.json").read_text())["bands"]["source"] == "colour labels"


def test_an_unlabelled_four_band_scene_read_as_bands_1_to_3_says_so_and_names_bands(tmp_path):
    bgrn = unlabelled_bgr(SCENE, tmp_path / "bgrn.tif", nir=True, size=128)
    result = CliRunner().invoke(app, ["predict", str(bgrn), "--out", str(tmp_path / "o"), *FAST])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if "--bands" in line]
    assert len(lines) == 1 and lines[0].startswith("warning: bands 1, 2, 3 of 4 were read as red, green, blue")
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["bands"] == {"used": [1, 2, 3], "source": "default 1-3", "count": 4}
    assert any("--bands" in note for note in report["warnings"])


@pytest.mark.parametrize("value, words", [
    ("3,2", ["--bands expects three 1-based band numbers", "'3,2'"]),
    ("0,1,2", ["--bands expects three", "'0,1,2'"]), ("red,green,blue", ["--bands expects three"]),
    ("3,2,5", ["bands 3,2,5 were asked for", "the raster has 3 band(s): band(s) 5 do not exist"]),
])
def test_bad_bands_are_one_line_errors(tmp_path, value, words):
    """A malformed --bands is a usage error (exit 2); a band the raster lacks, found once it is read,
    fails the run (exit 1)."""
    bgr = unlabelled_bgr(SCENE, tmp_path / "bgr.tif", size=64)
    result = CliRunner().invoke(app, ["predict", str(bgr), "--out", str(tmp_path / "o"), *FAST, "--bands", value])
    (assert_one_line_error if "were asked for" in words[0] else assert_usage_error)(result, "predict", *words)
    assert not (tmp_path / "o").exists()  # neither a result nor an empty folder made by the failed run


def test_a_failed_run_keeps_an_out_folder_that_was_there(tmp_path):
    (tmp_path / "o").mkdir()
    result = CliRunner().invoke(app, ["predict", str(SCENE), "--out", str(tmp_path / "o"), *FAST, "--bands", "1,2,9"])
    assert_one_line_error(result, "predict", "band(s) 9 do not exist")
    assert (tmp_path / "o").is_dir()


def test_a_band_beyond_one_inputs_count_fails_that_input_of_the_batch_only(tmp_path):
    (tmp_path / "s").mkdir()
    four = unlabelled_bgr(SCENE, tmp_path / "s" / "four.tif", nir=True, size=96)
    (tmp_path / "s" / "rgb.tif").rename(tmp_path / "s" / "three.tif")
    result = CliRunner().invoke(app, ["predict", str(tmp_path / "s"), "--out", str(tmp_path / "b"), *FAST,
                                      "--bands", "4,3,2"])
    assert result.exit_code == 1, result.output
    assert "1 predicted, 0 already done, 1 failed" in result.stdout
    errors = [line for line in result.stderr.splitlines() if not line.startswith("warning:")]
    assert errors == ["geoseg predict: error: three.tif: bands 4,3,2 were asked for red, green, blue, but the "
                      "raster has 3 band(s): band(s) 4 do not exist"], result.stderr
    assert json.loads((tmp_path / "b" / four.stem / "report.json").read_text())["bands"]["used"] == [4, 3, 2]


def test_a_batch_rerun_with_other_bands_predicts_again(tmp_path):
    """A finished folder is reused only for the same bands: --bands changes what the models read."""
    (tmp_path / "s").mkdir()
    unlabelled_bgr(SCENE, tmp_path / "s" / "bgr.tif", size=96)
    out = tmp_path / "out"
    runner = CliRunner()

    def run(*args: str):
        result = runner.invoke(app, ["predict", str(tmp_path / "s"), "--out", str(out), *FAST, *args])
        assert result.exit_code == 0, result.output
        return result.stdout

    assert "2 predicted, 0 already done" in run()
    assert "0 predicted, 2 already done" in run()
    swapped = run("--bands", "3,2,1")
    assert "2 predicted, 0 already done" in swapped and "2 of them predicted again" in swapped
    assert json.loads((out / "bgr" / "report.json").read_text())["bands"]["used"] == [3, 2, 1]
    assert "0 predicted, 2 already done" in run("--bands", "3, 2, 1")
    assert "2 predicted, 0 already done" in run()  # back to the raster's own bands
    # a report written before --bands existed (no 'bands' option) is the raster's own choice: still current
    for folder in ("bgr", "rgb"):
        report = json.loads((out / folder / "report.json").read_text())
        del report["options"]["bands"], report["bands"]
        (out / folder / "report.json").write_text(json.dumps(report))
    assert "0 predicted, 2 already done" in run()


def test_every_read_of_the_input_takes_the_requested_bands(tmp_path, monkeypatch):
    """Both heads, the class map's valid mask and the nodata cut read the bands --bands names (the
    mask of per-band nodata depends on them), not the raster's own choice."""
    import geoseg.footprints
    import tiles.source

    bgr = unlabelled_bgr(SCENE, tmp_path / "bgr.tif", size=96)
    opened, cut = [], []
    scene_init, cut_nodata = tiles.source.Scene.__init__, geoseg.footprints.cut_nodata

    def recording_init(self, path, bands=None, *args, **kwargs):
        scene_init(self, path, bands, *args, **kwargs)
        opened.append(self.bands)

    def recording_cut(geoms, path, block=1024, bands=None):
        cut.append(bands)
        return cut_nodata(geoms, path, block, bands)

    monkeypatch.setattr(tiles.source.Scene, "__init__", recording_init)
    monkeypatch.setattr(geoseg.footprints, "cut_nodata", recording_cut)
    result = CliRunner().invoke(app, ["predict", str(bgr), "--out", str(tmp_path / "o"), "--profile", "fast",
                                      "--device", "cpu", "--bands", "3,2,1"])
    assert result.exit_code == 0, result.output
    # the first look, the two heads' tile plans (progress weights), two heads, the class map's mask
    assert len(opened) == 6 and set(opened) == {(3, 2, 1)}
    assert cut == [(3, 2, 1)]


def test_the_bar_estimates_the_time_left_and_ends_at_100_percent(tmp_path):
    """The bar showed the time elapsed only: on a 20-minute run a user had no idea how long was left.
    Without a terminal (nohup, a cluster job's log) it said nothing at all until the run was over."""
    import re

    from test_predict_models import make_tiny_models

    models = make_tiny_models(tmp_path / "models")
    cards = [arg for task, card in models.items() for arg in ("--model", f"{task}={card}")]
    result = CliRunner().invoke(app, ["predict", str(KAMPALA / "kampala_z19_2.tif"), "--out", str(tmp_path / "o"),
                                      "--device", "cpu", "--tile-size", "256", "--overlap", "32", *cards])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    logged = [line for line in lines if re.fullmatch(r"kampala_z19_2\.tif: \d+% \(\w+\), \d+ s, about \d+ s left", line)]
    shares = [int(line.split(": ")[1].split("%")[0]) for line in logged]
    assert len(logged) >= 2 and shares == sorted(set(shares)), lines
    bar = next(line for line in lines if "100.0%" in line)  # drawn once, at the end, without a terminal
    assert bar.endswith(" left"), bar


def test_a_model_retrained_in_place_predicts_the_batch_again(tmp_path):
    """``geoseg train ... --out models/ --name mine`` rewrites models/mine.json and mine.pt: a batch run
    again with ``--model buildings=models/mine.json`` skipped every folder as already done, keeping
    the old model's buildings. The card's and weights' digests in report.json tell them apart."""
    import shutil

    import torch

    shipped = shipped_card_path("buildings", "fast")
    models = tmp_path / "models"
    models.mkdir()
    card = models / "mine.json"
    card.write_text(shipped.read_text())
    shutil.copy(shipped.parent / json.loads(shipped.read_text())["weights"], models / json.loads(card.read_text())["weights"])
    _crops(tmp_path / "s", "a.tif")
    args = ["predict", str(tmp_path / "s"), "--out", str(tmp_path / "o"), *FAST, "--model", f"buildings={card}"]
    assert "1 predicted" in CliRunner().invoke(app, args).stdout
    assert "0 predicted, 1 already done" in CliRunner().invoke(app, args).stdout
    weights = models / json.loads(card.read_text())["weights"]
    state = torch.load(weights, map_location="cpu")
    first = next(k for k, v in state.items() if v.is_floating_point())
    state[first] = state[first] * 1.5  # retrained: other weights under the same name
    torch.save(state, weights)
    again = CliRunner().invoke(app, args)
    assert "1 predicted, 0 already done" in again.stdout and "(a.tif)" in again.stdout, again.output
    rules = json.loads(card.read_text())
    rules["postprocess"]["min_area_m2"] = 1.0  # retuned rules, same weights
    card.write_text(json.dumps(rules))
    assert "1 predicted, 0 already done" in CliRunner().invoke(app, args).stdout
    recorded = json.loads((tmp_path / "o" / "a" / "report.json").read_text())["models"]["buildings"]
    assert recorded["card_sha256"] == hashlib.sha256(card.read_bytes()).hexdigest()
    assert recorded["weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert "0 predicted, 1 already done" in CliRunner().invoke(app, args).stdout


def test_the_failures_of_a_batch_are_listed_in_the_order_given(tmp_path):
    """The failure lines came in the order the inputs failed: one whose folder is no output of predict
    fails before any runs, and on a Dask cluster the order changes from run to run, so two logs of
    one batch differed; they follow the inputs, as batch.json does."""
    _crops(tmp_path / "s", "b.tif")
    (tmp_path / "o" / "b").mkdir(parents=True)
    (tmp_path / "o" / "b" / "notes.txt").write_text("someone else's")
    result = CliRunner().invoke(app, ["predict", str(tmp_path / "s" / "a.tif"), str(tmp_path / "s" / "b.tif"),
                                      "--out", str(tmp_path / "o"), *FAST])
    assert result.exit_code == 1, result.output
    assert [line.removeprefix("geoseg predict: error: ").partition(":")[0]
            for line in result.stderr.splitlines()] == ["a.tif", "b.tif"], result.stderr


def test_a_vrt_given_with_the_rasters_it_reads_is_said_to_predict_them_twice(tmp_path):
    """A delivery folder often holds the tiles and the gdalbuildvrt index over them: ``predict scenes/``
    predicted every building twice (in the VRT's folder and the tile's) without a word."""
    from mosaic_tiles import SCENE as TILED, cut_grid
    from tiles.mosaic import plan_mosaic, write_vrt

    tiles = cut_grid(TILED, tmp_path / "s", nx=2, ny=1)
    write_vrt(plan_mosaic(tiles), tmp_path / "s" / "index.vrt")
    result = CliRunner().invoke(app, ["predict", str(tmp_path / "s"), "--out", str(tmp_path / "o"), *FAST])
    says = ("index.vrt reads 2 other inputs of this batch (t_00.tif, t_10.tif): their buildings are predicted "
            "twice, in index/ and in their own folders; give the VRT or the rasters it reads, not both")
    assert result.exit_code == 0 and f"warning: {says}" in result.stderr.splitlines(), result.output
    assert json.loads((tmp_path / "o" / "batch.json").read_text())["warnings"] == [says]


def test_a_folders_link_to_a_missing_scene_is_a_failed_input_not_left_out(tmp_path):
    """A folder of links into a share that is not mounted: the broken links were left out of the
    folder's rasters, so those scenes were never predicted and the batch said '1 predicted, 0 failed',
    exit 0. Each is an input that fails as not found, saying where the link points."""
    _crops(tmp_path / "s", "a.tif")
    (tmp_path / "s" / "b.tif").symlink_to(tmp_path / "share" / "b.tif")
    result = CliRunner().invoke(app, ["predict", str(tmp_path / "s"), "--out", str(tmp_path / "o"), *FAST])
    assert result.exit_code == 1 and "1 predicted, 0 already done, 1 failed" in result.stdout, result.output
    assert result.stderr.splitlines() == [
        f"geoseg predict: error: b.tif: input not found: {tmp_path / 's' / 'b.tif'} (a link to "
        f"{tmp_path / 'share' / 'b.tif'}, which does not exist: a share not mounted?)"], result.stderr


@pytest.mark.parametrize("suffix", [".tif", ".png"])
def test_a_paletted_raster_is_predicted_as_the_colours_it_stands_for(tmp_path, suffix):
    """A one-band raster of colour-table indices (PHOTOMETRIC=PALETTE GeoTIFF, PNG8) was refused as
    '1 band(s)'. It is read as the RGBA its colour table gives: the same class map and buildings as
    that RGBA written out, and its nodata index (transparent) is class 0, with no building on it."""
    with rasterio.open(SCENE) as src:
        window = Window(100, 100, 256, 224)
        rgb, profile = src.read([1, 2, 3], window=window), dict(src.profile, transform=src.window_transform(window))
    indexed = Image.fromarray(np.moveaxis(rgb, 0, -1)).quantize(63)
    index = np.array(indexed)
    rows, cols = np.mgrid[0:224, 0:256]
    corner = cols / 256 + rows / 224 < 0.5
    index[corner] = 63  # the nodata index, left out of the quantized colours
    table = np.zeros((256, 4), np.uint8)
    table[:63, :3] = np.reshape(indexed.getpalette()[:189], (63, 3))
    table[:63, 3] = 255
    profile.update(driver="GTiff", width=256, height=224, tiled=False, compress=None)
    paletted = tmp_path / "paletted.tif"
    with rasterio.open(paletted, "w", **dict(profile, count=1, photometric="palette", nodata=63)) as dst:
        dst.write(index, 1)
        dst.write_colormap(1, {i: tuple(int(v) for v in table[i]) for i in range(256)})
    if suffix == ".png":
        rasterio.shutil.copy(paletted, tmp_path / "paletted.png", driver="PNG")
        paletted = tmp_path / "paletted.png"
    with rasterio.open(tmp_path / "rgba.tif", "w", **dict(profile, count=4, photometric="rgb", alpha="yes")) as dst:
        dst.write(np.moveaxis(table[index], -1, 0))
    runner = CliRunner()
    options = ["--profile", "fast", "--device", "cpu"]
    got = runner.invoke(app, ["predict", str(paletted), "--out", str(tmp_path / "p"), *options])
    assert got.exit_code == 0, got.output
    expected = runner.invoke(app, ["predict", str(tmp_path / "rgba.tif"), "--out", str(tmp_path / "e"), *options])
    assert expected.exit_code == 0, expected.output
    with rasterio.open(tmp_path / "p" / "classmap.tif") as cm, rasterio.open(tmp_path / "e" / "classmap.tif") as ref:
        classes = cm.read(1)
        assert (cm.crs, cm.transform, cm.shape) == (ref.crs, ref.transform, ref.shape)
        assert (classes == ref.read(1)).all()
    assert ((classes == 0) == corner).all()
    buildings = gpd.read_file(tmp_path / "p" / "buildings.gpkg")
    reference = gpd.read_file(tmp_path / "e" / "buildings.gpkg")
    assert len(buildings) == len(reference) > 3
    report = json.loads((tmp_path / "p" / "report.json").read_text())
    assert report["bands"] == {"used": [1, 2, 3], "source": "colour table", "count": 1}
    assert all(a.equals(b) for a, b in zip(buildings.geometry, reference.geometry))
    # geoseg eval reads the paletted input as predict did: the same scores as the RGBA's
    scored = [runner.invoke(app, ["eval", str(tmp_path / d), "--labels", str(KAMPALA / "labels.geojson")]) for d in "pe"]
    assert scored[0].exit_code == 0, scored[0].output
    scores = [json.loads((tmp_path / d / "eval_buildings.json").read_text()) for d in "pe"]
    assert scores[0]["pixel"] == scores[1]["pixel"] and scores[0]["valid_pixels"] == (~corner).sum()


def test_metres_labelled_as_degrees_are_one_line_naming_the_crs(tmp_path):
    """A UTM or Web Mercator grid labelled EPSG:4326 puts its centre at latitude 39 000: predict
    stopped on an internal 'gsd must be a finite number of metres > 0 ..., got nan'."""
    with rasterio.open(SCENE) as src:
        window = Window(0, 0, 64, 64)
        profile = dict(src.profile, width=64, height=64, crs="EPSG:4326", transform=src.window_transform(window))
        pixels = src.read(window=window)
    with rasterio.open(tmp_path / "mislabelled.tif", "w", **profile) as dst:
        dst.write(pixels)
    result = CliRunner().invoke(app, ["predict", str(tmp_path / "mislabelled.tif"), "--out", str(tmp_path / "o"), *FAST])
    assert_one_line_error(result, "predict", "mislabelled.tif", "does not lie on the Earth", "EPSG:4326", "-a_srs")


def test_degrees_labelled_as_metres_are_one_line_naming_the_crs(tmp_path):
    """The reverse: a lon/lat grid labelled UTM lies within 180 m of the CRS's origin with pixels of
    2.7 micrometres. Predict read the 64 x 64 px crop as 0.2 x 0.2 mm, 1 x 1 px at the models' GSD,
    and wrote a class map and buildings of no meaning with only a warning about the scene's size."""
    with rasterio.open(SCENE) as src:
        pixels, profile = src.read(window=Window(0, 0, 64, 64)), dict(src.profile)
    profile.update(width=64, height=64, crs="EPSG:32636", transform=rasterio.Affine(2.7e-6, 0, 32.59, 0, -2.7e-6, 0.35))
    with rasterio.open(tmp_path / "degrees.tif", "w", **profile) as dst:
        dst.write(pixels)
    result = CliRunner().invoke(app, ["predict", str(tmp_path / "degrees.tif"), "--out", str(tmp_path / "o"), *FAST])
    assert_one_line_error(result, "predict", "degrees.tif: its coordinates (32.59 to 32.5902, 0.349827 to 0.35) look like "
                          "longitude/latitude, but its CRS EPSG:32636 is projected: so read, its pixels are 2.7e-06 m "
                          "across", "gdal_edit.py -a_srs EPSG:4326 degrees.tif")
    assert not (tmp_path / "o").exists()


def test_a_crs_without_a_geotransform_is_not_placed_at_the_crs_origin(tmp_path):
    """A raster naming a CRS but no geotransform (GDAL reads the identity) was taken as placed:
    its buildings went into buildings.geojson off West Africa, EPSG:3857's origin, with a 1 m GSD
    made up from the identity, and eval scored labels there. It is now not georeferenced: polygons
    in pixel coordinates in buildings.gpkg only, a note saying why, and eval refuses it."""
    with rasterio.open(SCENE) as src:
        pixels = src.read(window=Window(0, 0, 160, 128))
        profile = dict(src.profile, width=160, height=128, transform=rasterio.Affine.identity())
    path = tmp_path / "unplaced.tif"
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(pixels)
    with rasterio.open(path) as src:
        assert src.crs == "EPSG:3857" and src.transform.is_identity
    runner = CliRunner()
    result = runner.invoke(app, ["predict", str(path), "--out", str(tmp_path / "o"), *FAST])
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "o" / "buildings.geojson").exists()
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert any("has a CRS (EPSG:3857) but no geotransform" in w for w in report["warnings"]), report["warnings"]
    assert report["gsd"]["input_m"] is None
    buildings = gpd.read_file(tmp_path / "o" / "buildings.gpkg")
    assert len(buildings) and buildings.crs is None
    left, top, right, bottom = buildings.total_bounds
    assert 0 <= left and right <= 160 and 0 <= top and bottom <= 128  # pixel columns and rows
    scored = runner.invoke(app, ["eval", str(tmp_path / "o"), "--labels", str(KAMPALA / "labels.geojson")])
    assert_one_line_error(scored, "eval", "not georeferenced")


def test_an_overview_or_mask_sidecar_given_alone_is_named_as_its_rasters(tmp_path):
    """``x.tif.ovr`` opened as a raster of its own: predicted as a half-resolution scene without
    georeferencing (buildings in pixel coordinates, exit 0); ``x.tif.msk`` failed as '1 band(s)'.
    Both now fail in one line naming the raster they belong to."""
    scene = tmp_path / "scene.tif"
    with rasterio.open(SCENE) as src:
        profile = dict(src.profile, width=128, height=128, transform=src.window_transform(Window(0, 0, 128, 128)))
        pixels = src.read(window=Window(0, 0, 128, 128))
    with rasterio.open(scene, "w", **profile) as dst:
        dst.write(pixels)
    with rasterio.Env(TIFF_USE_OVR=True, GDAL_TIFF_INTERNAL_MASK=False), rasterio.open(scene, "r+") as dst:
        dst.build_overviews([2])
        dst.write_mask(np.full((128, 128), 255, np.uint8))
    runner = CliRunner()
    for sidecar, kind in (("scene.tif.ovr", "external overviews"), ("scene.tif.msk", "external mask")):
        assert (tmp_path / sidecar).exists()
        result = runner.invoke(app, ["predict", str(tmp_path / sidecar), "--out", str(tmp_path / "o"), *FAST])
        assert_one_line_error(result, "predict", f"{sidecar} is the {kind} of scene.tif", "predict scene.tif")
        assert not (tmp_path / "o").exists()
    # its raster not beside it: the mask was read as one grey band, whose hint (--bands 1,1,1) then
    # predicted buildings from the mask
    scene.rename(tmp_path / "elsewhere.tif")
    result = runner.invoke(app, ["predict", str(tmp_path / "scene.tif.msk"), "--out", str(tmp_path / "o"), *FAST])
    assert_one_line_error(result, "predict", "scene.tif.msk is the external mask of scene.tif, which is not beside it")


def test_a_raster_far_coarser_than_the_models_is_refused_in_one_line(tmp_path):
    """A continent in a few hundred pixels (world.rgb.tif, 78 km pixels) ran with only 'upsampled 2x
    only, expect poor results' and wrote outputs of no meaning. Past 10x a model's working GSD the
    run is refused before --out is made, naming both GSDs and the ways past it; a moderately coarse
    output asked alone still runs with the warning, and --allow-coarse runs it anyway."""
    runner = CliRunner()
    world = data_root() / "rasters" / "rasterio" / "world.rgb.tif"
    result = runner.invoke(app, ["predict", str(world), "--out", str(tmp_path / "w"), *FAST])
    assert_one_line_error(result, "predict", "input GSD 78 km is 260,030x the 0.3 m the buildings-u2net-fast model",
                          "use imagery of 3 m or finer", "--gsd METRES", "--allow-coarse")
    assert not (tmp_path / "w").exists()

    coarse = coarse_copy(tmp_path / "five_metres.tif", 5.0)  # 17x the buildings' 0.3 m, 4.5x land cover's 1.1 m
    fast = ["--profile", "fast", "--device", "cpu"]
    result = runner.invoke(app, ["predict", str(coarse), "--out", str(tmp_path / "c"), *fast])
    assert_one_line_error(result, "predict", "input GSD 4.98 m is 17x the 0.3 m",
                          "--no-buildings for the class map alone (the landcover-attresunet-fast model works at 1.1 m)")
    result = runner.invoke(app, ["predict", str(coarse), "--out", str(tmp_path / "c"), "--no-buildings", *fast])
    assert result.exit_code == 0, result.output
    assert "much coarser than the landcover-attresunet-fast model's 1.1 m" in result.stderr
    result = runner.invoke(app, ["predict", str(coarse), "--out", str(tmp_path / "a"), "--allow-coarse", *FAST])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "a" / "report.json").read_text())
    assert report["options"]["allow_coarse"] is True and any("much coarser" in w for w in report["warnings"])


def test_an_input_just_over_the_coarse_limit_is_not_said_to_be_at_it():
    """rasterio's all-nodata.tif measures 3.00027 m: the refusal read 'input GSD 3 m is 10x ... (more
    than 10x ...): use imagery of 3 m or finer', which contradicts itself. Enough digits show it."""
    from geoseg.coarse_input import TooCoarse

    just_over = TooCoarse(3.0303, "buildings", "buildings-u2net", 0.3).reason()  # just over, with GSD_SLACK
    assert just_over.startswith("input GSD 3.03 m is 10.1x the 0.3 m"), just_over
    assert TooCoarse(3.00027, "buildings", "buildings-u2net", 0.3).reason().startswith("input GSD 3.0003 m is 10.001x")
    assert TooCoarse(4.98, "buildings", "buildings-u2net", 0.3).reason().startswith("input GSD 4.98 m is 17x")
    assert TooCoarse(12.1, "landcover", "landcover-attresunet", 1.1).reason().startswith("input GSD 12.1 m is 11x")


def test_statistics_a_gis_wrote_beside_a_scene_do_not_make_it_predicted_again(tmp_path):
    """QGIS, ArcGIS and ``gdalinfo -stats`` write ``scene.tif.aux.xml`` holding band statistics when a
    colleague browses a delivery: the next batch predicted the scene again, every night. geoseg reads
    no statistics of GDAL's; an .aux.xml that moves the georeferencing still counts."""
    from tiles.pam import statistics_only

    _crops(tmp_path / "s", "a.tif", "b.tif")
    args = ["predict", str(tmp_path / "s"), "--out", str(tmp_path / "o"), *FAST]
    runner = CliRunner()
    assert runner.invoke(app, args).exit_code == 0
    scene = tmp_path / "s" / "a.tif"
    with rasterio.open(scene) as src:
        src.stats(approx=False)  # GDAL keeps them in a.tif.aux.xml, as a GIS computing statistics does
    aux = tmp_path / "s" / "a.tif.aux.xml"
    assert statistics_only(aux) and "STATISTICS_MEAN" in aux.read_text()
    again = runner.invoke(app, args)
    assert "0 predicted, 2 already done, 0 failed" in again.stdout, again.output
    with rasterio.open(scene) as src:
        moved = src.transform * src.transform.translation(10, 0)
    geotransform = f"<GeoTransform>{', '.join(map(str, moved.to_gdal()))}</GeoTransform>"
    aux.write_text(aux.read_text().replace("<PAMDataset>", f"<PAMDataset>{geotransform}"))
    assert not statistics_only(aux)
    third = runner.invoke(app, args)
    assert "1 predicted, 1 already done, 0 failed" in third.stdout, third.output


def test_a_mask_added_beside_an_untouched_scene_has_its_folder_predicted_again(tmp_path):
    """A batch compared only the raster's size and time: a sidecar GDAL reads with it (an external
    mask, an .aux.xml moving its georeferencing) added or edited later kept the old folder, whose
    outputs no longer matched. The sidecars' sizes and times are recorded (when there are any)."""
    _crops(tmp_path / "s", "a.tif", "b.tif")
    args = ["predict", str(tmp_path / "s"), "--out", str(tmp_path / "o"), *FAST]
    runner = CliRunner()
    assert runner.invoke(app, args).exit_code == 0
    report = json.loads((tmp_path / "o" / "a" / "report.json").read_text())
    assert "sidecars" not in report["input_file"]  # none: the record is as before
    raster_time = (tmp_path / "s" / "a.tif").stat().st_mtime_ns
    half = np.zeros((128, 128), np.uint8)
    half[:, :64] = 255
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=False), rasterio.open(tmp_path / "s" / "a.tif", "r+") as dst:
        dst.write_mask(half)
    os.utime(tmp_path / "s" / "a.tif", ns=(raster_time, raster_time))  # the raster itself as it was
    assert (tmp_path / "s" / "a.tif.msk").is_file()
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "1 predicted, 1 already done, 0 failed" in again.stdout, again.output
    assert "1 of them predicted again" in again.stdout and "(a.tif)" in again.stdout, again.stdout
    recorded = json.loads((tmp_path / "o" / "a" / "report.json").read_text())["input_file"]["sidecars"]
    assert [Path(s["path"]).name for s in recorded] == ["a.tif.msk"]
    with rasterio.open(tmp_path / "s" / "a.tif") as src:
        edge_x = (src.transform * (64, 0))[0]  # the mask's edge, in the scene's CRS
    buildings = gpd.read_file(tmp_path / "o" / "a" / "buildings.gpkg")
    assert len(buildings) > 0 and buildings.total_bounds[2] <= edge_x + 1e-6  # none over the masked half
    third = runner.invoke(app, args)
    assert "0 predicted, 2 already done, 0 failed" in third.stdout, third.output


def test_a_folder_batch_leaves_out_an_earlier_predict_s_outputs_in_it(tmp_path):
    """``geoseg predict s/a.tif --out s`` wrote classmap.tif beside a.tif; a batch of ``s`` then predicted
    the class map as a scene (read through its colour table as RGB). It is left out, with a word."""
    _crops(tmp_path / "s", "a.tif")
    runner = CliRunner()
    assert runner.invoke(app, ["predict", str(tmp_path / "s" / "a.tif"), "--out", str(tmp_path / "s"),
                               "--profile", "fast", "--device", "cpu"]).exit_code == 0
    assert (tmp_path / "s" / "classmap.tif").is_file()
    result = runner.invoke(app, ["predict", str(tmp_path / "s"), "--out", str(tmp_path / "o"), *FAST])
    assert result.exit_code == 0 and "1 predicted, 0 already done, 0 failed" in result.stdout, result.output
    assert "classmap.tif: the output of an earlier geoseg predict into that folder" in result.stderr, result.stderr
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["a", "batch.json"]


def test_a_tile_size_alone_under_twice_the_default_overlap_says_to_lower_the_overlap(tmp_path):
    """``--tile-size 64`` alone failed as '--overlap must be in [0, tile_size/2), got 64', naming an option
    the user had not given; it now names both and what to give."""
    result = CliRunner().invoke(app, ["predict", str(SCENE), "--out", str(tmp_path / "o"), "--tile-size", "64", *FAST])
    assert_usage_error(result, "predict", "--overlap 64 must be under half the tile size (64 // 2 = 32; "
                          "--overlap is 64 unless given)", "a smaller --overlap or a --tile-size of at least 130")
    assert not (tmp_path / "o").exists()


def test_nominal_3_m_utm_imagery_is_not_refused_as_coarser_than_3_m(tmp_path):
    """A 3 m UTM raster near its zone's central meridian measures 3.001 m on the ground (scale 0.9996)
    and was refused as '10.004x ... use imagery of 3 m or finer' (PlanetScope-style deliveries); 1 %
    over the limit counts as at it, and past that the refusal stays."""
    from geoseg.coarse_input import too_coarse
    from geoseg.pipeline import PredictOptions
    from tiles.gsd import dataset_gsd_m

    path = tmp_path / "utm3m.tif"
    with rasterio.open(path, "w", driver="GTiff", width=64, height=64, count=3, dtype="uint8", crs="EPSG:32636",
                       transform=rasterio.Affine(3.0, 0, 500_000, 0, -3.0, 40_000)) as dst:  # 33E, on the equator
        dst.write(np.full((3, 64, 64), 120, np.uint8))
    with rasterio.open(path) as src:
        measured = dataset_gsd_m(src)
    assert 3.0 < measured < 3.003
    options = PredictOptions(profile="fast")
    assert too_coarse(measured, options) is None
    assert too_coarse(3.05, options) is not None and too_coarse(3.05, options).task == "buildings"


def test_a_file_of_several_rasters_names_them_and_each_is_predicted_by_its_name(tmp_path):
    """A GeoPackage with two raster tables (as a NetCDF or HDF5 file of several variables) opens as
    a dataset of 0 bands whose rasters are subdatasets: predict failed with Python's 'tuple index
    out of range'. One line names the subdatasets, and each name is an input (as GDAL opens it; it
    was refused as 'input not found ... extract it first'), its batch folder named after the file and
    the subdataset (two_a), the progress lines showing 'two.gpkg:a' (rich made ':a:' an emoji)."""
    with rasterio.open(SCENE) as src:
        window = Window(0, 0, 64, 64)
        pixels, transform, crs = src.read(window=window), src.window_transform(window), src.crs
    container = tmp_path / "two.gpkg"
    for table in ("a", "b"):
        with rasterio.open(container, "w", driver="GPKG", width=64, height=64, count=3, dtype="uint8", crs=crs,
                           transform=transform, RASTER_TABLE=table, APPEND_SUBDATASET="YES" if table == "b" else "NO") as dst:
            dst.write(pixels)
    runner = CliRunner()
    result = runner.invoke(app, ["predict", str(container), "--out", str(tmp_path / "o"), *FAST])
    first, second = f"GPKG:{container}:a", f"GPKG:{container}:b"
    assert_one_line_error(result, "predict", "two.gpkg: no raster bands of its own but 2 rasters (subdatasets: "
                          f"{first}, {second})", f"give the one to read by its name as the input, e.g. {first}")
    assert not (tmp_path / "o").exists()
    result = runner.invoke(app, ["predict", first, second, "--out", str(tmp_path / "o"), *FAST])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["batch.json", "two_a", "two_b"]
    assert json.loads((tmp_path / "o" / "two_b" / "report.json").read_text())["input"] == second
    assert "two.gpkg:a" in result.output and "\N{NEGATIVE SQUARED LATIN CAPITAL LETTER A}" not in result.output
    result = runner.invoke(app, ["predict", f"GPKG:{container}:c", "--out", str(tmp_path / "c"), *FAST])
    assert_one_line_error(result, "predict", f"input not found: GPKG:{container}:c (GDAL found no such subdataset")


def test_a_copy_or_a_link_of_an_input_is_predicted_once_and_given_its_outputs(tmp_path, monkeypatch):
    """A folder holding a.tif, a byte-identical copy_of_a.tif (cp) and a link to a.tif under another
    name ran the models on a and its copy, and left the link out without a word. Each name now gets
    its folder, the models run once: the others get copies (not links), naming their own input."""

    _crops(tmp_path / "s", "a.tif", "b.tif")
    s = tmp_path / "s"
    (s / "copy_of_a.tif").write_bytes((s / "a.tif").read_bytes())
    (s / "link.tif").symlink_to(s / "a.tif")
    ran = _record_runs(monkeypatch)
    out = tmp_path / "o"
    result = CliRunner().invoke(app, ["predict", str(s), "--out", str(out), "--profile", "fast", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "2 predicted, 2 copied (the same content as another input), 0 already done, 0 failed" in result.stdout
    assert "copy_of_a.tif: the same content as a.tif, outputs copied" in result.stdout
    assert ran == ["a.tif", "b.tif"]
    assert sorted(p.name for p in out.iterdir()) == ["a", "b", "batch.json", "copy_of_a", "link"]
    first = json.loads((out / "a" / "report.json").read_text())
    for name in ("copy_of_a", "link"):
        report = json.loads((out / name / "report.json").read_text())
        assert report["input"] == str(s / f"{name}.tif") and report["same_content_as"] == str(s / "a.tif")
        assert report["counts"] == first["counts"] and report["counts"]["buildings"] > 0
        for f in report["outputs"]:
            assert not (out / name / f).is_symlink() and not os.path.samefile(out / name / f, out / "a" / f)
        assert (out / name / "classmap.tif").read_bytes() == (out / "a" / "classmap.tif").read_bytes()
        geojson = json.loads((out / name / "buildings.geojson").read_text())
        assert {f["properties"]["source"] for f in geojson["features"]} == {f"{name}.tif"}
        assert gpd.read_file(out / name / "buildings.gpkg")["source"].unique().tolist() == [f"{name}.tif"]
    entries = {Path(e["input"]).name: e for e in json.loads((out / "batch.json").read_text())["inputs"]}
    assert entries["copy_of_a.tif"]["status"] == "done" and entries["copy_of_a.tif"]["same_content_as"] == str(s / "a.tif")
    assert entries["b.tif"]["same_content_as"] is None
    again = CliRunner().invoke(app, ["predict", str(s), "--out", str(out), "--profile", "fast", "--device", "cpu"])
    assert "0 predicted, 4 already done, 0 failed" in again.stdout, again.output
    assert ran == ["a.tif", "b.tif"]


def test_inputs_failing_fast_are_not_finished_scenes_in_the_batch_time_left(tmp_path):
    """Two unreadable files first, then real scenes: the log said 'about 0 s left' after each failure,
    the rate of inputs that took no time, before scenes that take the real time."""
    s = tmp_path / "s"
    s.mkdir()
    (s / "0_broken.tif").write_bytes(b"not a raster")
    (s / "1_broken.tif").write_bytes(b"not a raster either")
    with rasterio.open(KAMPALA / "kampala_z19_2.tif") as src:
        profile, pixels = src.profile, src.read(window=Window(0, 0, 128, 128))
        profile.update(width=128, height=128, transform=src.window_transform(Window(0, 0, 128, 128)))
    for name, rows in (("2_real.tif", pixels), ("3_real.tif", pixels[:, ::-1])):
        with rasterio.open(s / name, "w", **profile) as dst:
            dst.write(rows)
    result = CliRunner().invoke(app, ["predict", str(s), "--out", str(tmp_path / "o"), *FAST])
    assert result.exit_code == 1, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("predict 1/4 0_broken.tif: failed (0 s): ") and "cannot be opened as a raster" in lines[0]
    assert lines[1].startswith("predict 2/4 1_broken.tif: failed (0 s): ")
    assert lines[2].startswith("predict 3/4 2_real.tif: done (") and lines[2].endswith(" s left)")


def test_the_first_time_left_of_a_batch_leaves_out_the_model_loading(tmp_path, monkeypatch):
    """The first input's seconds included loading the models, so the first estimate was too high by
    the load time: two inputs of one size, models that take 3 s more to load, and the first line said
    about as many seconds left as the first input took."""
    import re
    import time

    import geoseg.heads

    _crops(tmp_path / "s", "a.tif", "b.tif")
    load_head = geoseg.heads.load_head
    monkeypatch.setattr(geoseg.heads, "load_head", lambda *a, **k: time.sleep(3.0) or load_head(*a, **k))
    geoseg.heads.forget_heads()  # loaded by this batch's first input, as in a fresh process
    result = CliRunner().invoke(app, ["predict", str(tmp_path / "s"), "--out", str(tmp_path / "o"), *FAST])
    assert result.exit_code == 0, result.output
    first = re.fullmatch(r"predict 1/2 a\.tif: done \((\d+) s, about (\d+) s left\)", result.stdout.splitlines()[0])
    assert first, result.stdout
    loading = json.loads((tmp_path / "o" / "a" / "report.json").read_text())["timings_s"]["load_models"]
    assert loading >= 3.0
    took, left = int(first[1]), int(first[2])
    assert left <= took - 2, (took, left, loading)


def _record_runs(monkeypatch) -> list[str]:
    """The names of the inputs ``predict_scene`` runs from now on (the models run), in order."""
    import geoseg.pipeline

    ran: list[str] = []
    predict_scene = geoseg.pipeline.predict_scene
    monkeypatch.setattr(geoseg.pipeline, "predict_scene",
                        lambda p, *a, **k: ran.append(raster_name(p)) or predict_scene(p, *a, **k))
    return ran


def test_a_copy_of_a_scene_an_earlier_batch_predicted_into_the_out_takes_its_outputs(tmp_path, monkeypatch):
    """A delivery re-sent under new names, predicted into the same --out: each copy of a scene already
    predicted there ran the models again."""

    _crops(tmp_path / "s", "a.tif")
    _crops(tmp_path / "t", "b.tif")
    (tmp_path / "t" / "a_resent.tif").write_bytes((tmp_path / "s" / "a.tif").read_bytes())
    out = tmp_path / "o"
    assert CliRunner().invoke(app, ["predict", str(tmp_path / "s"), "--out", str(out), *FAST]).exit_code == 0
    ran = _record_runs(monkeypatch)
    later = CliRunner().invoke(app, ["predict", str(tmp_path / "t"), "--out", str(out), *FAST])
    assert later.exit_code == 0, later.output
    assert ran == ["b.tif"] and "1 predicted, 1 copied" in later.stdout
    report = json.loads((out / "a_resent" / "report.json").read_text())
    assert (report["input"], report["same_content_as"]) == (str(tmp_path / "t" / "a_resent.tif"),
                                                            str(tmp_path / "s" / "a.tif"))
    # out/a holds a's outputs of other options: nothing to copy, predicted
    other = CliRunner().invoke(app, ["predict", str(tmp_path / "t"), "--out", str(out), *FAST, "--regularize"])
    assert other.exit_code == 0 and ran == ["b.tif", "a_resent.tif", "b.tif"], other.output


def test_a_copy_added_under_a_name_sorting_first_takes_the_predicted_scenes_outputs(tmp_path, monkeypatch):
    """The first given of inputs of one content runs, the others copy it: a copy added beside a scene
    already predicted, its name sorting before it (a_copy.tif beside m.tif), was that first, and ran
    the models again for outputs m's folder held."""

    _crops(tmp_path / "s", "m.tif")
    out = tmp_path / "o"
    assert CliRunner().invoke(app, ["predict", str(tmp_path / "s"), "--out", str(out), *FAST]).exit_code == 0
    (tmp_path / "s" / "a_copy.tif").write_bytes((tmp_path / "s" / "m.tif").read_bytes())
    ran = _record_runs(monkeypatch)
    later = CliRunner().invoke(app, ["predict", str(tmp_path / "s"), "--out", str(out), *FAST])
    assert later.exit_code == 0, later.output
    assert ran == [] and "0 predicted, 1 copied (the same content as another input), 1 already done" in later.stdout
    report = json.loads((out / "a_copy" / "report.json").read_text())
    assert report["same_content_as"] == str(tmp_path / "s" / "m.tif")


def test_a_scene_moved_since_an_earlier_batch_takes_its_outputs_from_the_record(tmp_path, monkeypatch):
    """A delivery re-sent under new names or into another folder, the old files gone: the earlier
    folders' inputs were not there to compare with, so each scene ran the models again. Their
    report.json now records the input's content (size, SHA-256s), which finds it."""
    import shutil


    _crops(tmp_path / "s", "a.tif", "b.tif")
    out = tmp_path / "o"
    assert CliRunner().invoke(app, ["predict", str(tmp_path / "s"), "--out", str(out), *FAST]).exit_code == 0
    counts = {name: json.loads((out / name / "report.json").read_text())["counts"] for name in ("a", "b")}
    recorded = json.loads((out / "a" / "report.json").read_text())["input_content"]
    assert recorded["sha256"] == hashlib.sha256((tmp_path / "s" / "a.tif").read_bytes()).hexdigest()
    (tmp_path / "t").mkdir()
    (tmp_path / "u").mkdir()
    shutil.move(tmp_path / "s" / "a.tif", tmp_path / "t" / "a_resent.tif")  # renamed
    shutil.move(tmp_path / "s" / "b.tif", tmp_path / "u" / "b.tif")  # the same name in another folder
    ran = _record_runs(monkeypatch)
    args = ["predict", str(tmp_path / "t"), str(tmp_path / "u"), "--out", str(out), *FAST]
    later = CliRunner().invoke(app, args)
    assert later.exit_code == 0, later.output
    assert ran == [] and "0 predicted, 2 copied (the same content as another input), 0 already done" in later.stdout
    assert f"b.tif: the same content as {tmp_path / 's' / 'b.tif'}, outputs copied" in later.stdout  # not 'as b.tif'
    for folder, now, was in (("a_resent", tmp_path / "t" / "a_resent.tif", tmp_path / "s" / "a.tif"),
                             ("b", tmp_path / "u" / "b.tif", tmp_path / "s" / "b.tif")):
        report = json.loads((out / folder / "report.json").read_text())
        assert (report["input"], report["same_content_as"]) == (str(now), str(was))
        assert report["counts"] == counts[was.stem] and report["input_content"]["sha256"] == hashlib.sha256(
            now.read_bytes()).hexdigest()
    again = CliRunner().invoke(app, args)
    assert "0 predicted, 2 already done, 0 failed" in again.stdout and ran == [], again.output
    # a report of an earlier version records no content: the moved scene is predicted, as before
    for folder in ("a", "a_resent"):
        report = json.loads((out / folder / "report.json").read_text())
        del report["input_content"]
        (out / folder / "report.json").write_text(json.dumps(report))
    (tmp_path / "v").mkdir()
    shutil.move(tmp_path / "t" / "a_resent.tif", tmp_path / "v" / "a_third.tif")
    old = CliRunner().invoke(app, ["predict", str(tmp_path / "v"), str(tmp_path / "u"), "--out", str(out), *FAST])
    assert old.exit_code == 0 and ran == ["a_third.tif"], old.output


def test_a_batch_says_it_reads_same_size_inputs_through_before_its_bar_only_when_long(tmp_path, monkeypatch):
    """Two same-size multi-GB scenes: minutes of reading (SHA-256) before the bar, with no word. Real
    crops here (a band they lack fails each at once: no model runs), the threshold lowered."""
    import tiles.hashing_progress

    _crops(tmp_path / "s", "a.tif")
    (tmp_path / "s" / "copy_of_a.tif").write_bytes((tmp_path / "s" / "a.tif").read_bytes())
    args = ["predict", str(tmp_path / "s"), "--out", str(tmp_path / "o"), *FAST, "--bands", "4,4,4"]
    quiet = CliRunner().invoke(app, args)
    assert quiet.exit_code == 1 and "reading" not in quiet.stdout, quiet.output  # small files: nothing more
    monkeypatch.setattr(tiles.hashing_progress, "QUIET_BYTES", 1)
    told = CliRunner().invoke(app, args)
    size = 2 * (tmp_path / "s" / "a.tif").stat().st_size
    assert told.stdout.splitlines()[0] == (f"predict: reading 2 inputs through ({size / 1e3:.1f} kB, SHA-256) to find "
                                           f"those of the same content"), told.output


def test_a_copy_made_again_for_other_options_is_not_said_to_be_predicted_again(tmp_path):
    _crops(tmp_path / "s", "a.tif")
    (tmp_path / "s" / "copy_of_a.tif").write_bytes((tmp_path / "s" / "a.tif").read_bytes())
    args = ["predict", str(tmp_path / "s"), "--out", str(tmp_path / "o"), *FAST]
    assert CliRunner().invoke(app, args).exit_code == 0
    again = CliRunner().invoke(app, [*args, "--regularize"])
    assert "1 predicted, 1 copied (the same content as another input), 0 already done" in again.stdout, again.output
    assert "2 of them predicted or copied again: their folders" in again.stdout


def _scenes_of_one_size(folder: Path) -> dict:
    """a.tif and b.tif, 128 px crops of a real scene saved uncompressed (new pixels keep a file's
    length) in ``folder``; returns their profile and pixels."""
    folder.mkdir()
    with rasterio.open(KAMPALA / "kampala_z19_2.tif") as src:
        window = Window(0, 0, 128, 128)
        pixels = src.read(window=window)
        profile = dict(driver="GTiff", width=128, height=128, count=3, dtype="uint8", crs=src.crs,
                       transform=src.window_transform(window))
    for name, data in (("a.tif", pixels), ("b.tif", pixels[:, ::-1])):
        with rasterio.open(folder / name, "w", **profile) as dst:
            dst.write(data)
    return {"profile": profile, "pixels": pixels}


def _touch(*paths: Path) -> None:
    for path in paths:
        os.utime(path, ns=(1_700_000_000_000_000_000,) * 2)


def test_a_touched_scene_of_the_same_bytes_stays_done_and_a_changed_one_is_predicted_again(tmp_path):
    """A copy without -p, a bucket sync or a touch gives every scene a new modification time: a batch
    predicted them all again. A scene whose bytes are those its folder's report.json records (SHA-256)
    stays done, said in a note, and its report takes the new time (a later run reads nothing through);
    one of the same size with other bytes is predicted again."""
    made = _scenes_of_one_size(tmp_path / "s")
    args = ["predict", str(tmp_path / "s"), "--out", str(tmp_path / "o"), *FAST]
    runner = CliRunner()
    assert runner.invoke(app, args).exit_code == 0
    before = (tmp_path / "s" / "b.tif").read_bytes()
    with rasterio.open(tmp_path / "s" / "b.tif", "w", **made["profile"]) as dst:  # b's pixels changed in place
        dst.write(made["pixels"][:, :, ::-1])
    assert len((tmp_path / "s" / "b.tif").read_bytes()) == len(before) and (tmp_path / "s" / "b.tif").read_bytes() != before
    _touch(tmp_path / "s" / "a.tif", tmp_path / "s" / "b.tif")
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "1 predicted, 1 already done, 0 failed" in again.stdout, again.output
    assert "1 of them predicted again" in again.stdout and "(b.tif)" in again.stdout, again.stdout
    assert ("warning: 1 input modified since predicted, of the same content (read through): kept as done (a.tif)"
            in again.stderr), again.stderr
    report = json.loads((tmp_path / "o" / "a" / "report.json").read_text())
    assert report["input_file"]["modified_ns"] == 1_700_000_000_000_000_000
    third = runner.invoke(app, args)
    assert "0 predicted, 2 already done" in third.stdout and "modified since predicted" not in third.stderr
    # a file rewritten while the others were read through: its state is not recorded as checked
    from geoseg.request_record import refresh_input_file

    seen, text = report["input_file"], (tmp_path / "o" / "a" / "report.json").read_text()
    os.utime(tmp_path / "s" / "a.tif", ns=(1_800_000_000_000_000_000,) * 2)
    assert not refresh_input_file(tmp_path / "o" / "a", tmp_path / "s" / "a.tif", seen)
    assert (tmp_path / "o" / "a" / "report.json").read_text() == text
    # nor when the report cannot be written (a full disk; here its staged copy's name is taken): False,
    # and the batch goes on to predict it again
    now = {**seen, "modified_ns": 1_800_000_000_000_000_000}
    (tmp_path / "o" / "a" / ".report.json.refresh").mkdir()
    assert not refresh_input_file(tmp_path / "o" / "a", tmp_path / "s" / "a.tif", now)
    assert (tmp_path / "o" / "a" / "report.json").read_text() == text
    (tmp_path / "o" / "a" / ".report.json.refresh").rmdir()
    assert refresh_input_file(tmp_path / "o" / "a", tmp_path / "s" / "a.tif", now)
    assert json.loads((tmp_path / "o" / "a" / "report.json").read_text())["input_file"] == now


def test_a_touched_sidecar_is_trusted_only_when_its_content_is_recorded(tmp_path, monkeypatch):
    """A scene's .aux.xml (whose content report.json records) touched with it: kept; edited to other
    bytes of the same length: predicted again. A sidecar GDAL reads whose content no record keeps (a
    .tab or an RPC text beside a raster; here the .aux.xml passed for one) is trusted by its time only."""
    import geoseg.request_record as request_record

    _scenes_of_one_size(tmp_path / "s")
    aux = tmp_path / "s" / "a.tif.aux.xml"
    aux.write_text('<PAMDataset><Metadata><MDI key="delivery">1</MDI></Metadata></PAMDataset>')
    args = ["predict", str(tmp_path / "s"), "--out", str(tmp_path / "o"), *FAST]
    runner = CliRunner()
    assert runner.invoke(app, args).exit_code == 0
    recorded = json.loads((tmp_path / "o" / "a" / "report.json").read_text())["input_file"]
    assert [Path(s["path"]).name for s in recorded["sidecars"]] == ["a.tif.aux.xml"]
    _touch(tmp_path / "s" / "a.tif", aux)
    kept = runner.invoke(app, args)
    assert "0 predicted, 2 already done" in kept.stdout and "kept as done (a.tif)" in kept.stderr, kept.output
    os.utime(aux, ns=(1_600_000_000_000_000_000,) * 2)
    folder, scene, options = tmp_path / "o" / "a", tmp_path / "s" / "a.tif", PredictOptions(
        profile="fast", classmap=False, device="cpu")  # FAST's
    assert request_record.touched_only(folder, scene, options) is not None  # the .aux.xml's content is recorded
    monkeypatch.setattr(request_record, "recorded_sidecars", lambda path: [])
    assert request_record.touched_only(folder, scene, options) is None
    monkeypatch.undo()
    aux.write_text('<PAMDataset><Metadata><MDI key="delivery">2</MDI></Metadata></PAMDataset>')
    os.utime(aux, ns=(1_650_000_000_000_000_000,) * 2)  # edited at another time than recorded
    edited = runner.invoke(app, args)
    assert "1 predicted, 1 already done" in edited.stdout and "kept as done" not in edited.stderr, edited.output


def test_an_input_changed_while_it_was_hashed_keeps_no_content_record(tmp_path, monkeypatch):
    """predict_scene takes the input's size and time, checks it, then hashes it: a file replaced in
    between had the new bytes' digest recorded beside the old time, and a later touch-only check
    would have trusted outputs of the old file."""
    import geoseg.pipeline as pipeline

    _scenes_of_one_size(tmp_path / "s")
    scene = tmp_path / "s" / "a.tif"
    hashed = pipeline.content_record

    def hashed_then_replaced(path):
        record = hashed(path)
        os.utime(scene, ns=(1_700_000_000_000_000_000,) * 2)
        return record

    options = PredictOptions(profile="fast", classmap=False, device="cpu")
    pipeline.predict_scene(scene, tmp_path / "kept", options, record_content=True)
    assert "input_content" in json.loads((tmp_path / "kept" / "report.json").read_text())
    monkeypatch.setattr(pipeline, "content_record", hashed_then_replaced)
    pipeline.predict_scene(scene, tmp_path / "dropped", options, record_content=True)
    assert "input_content" not in json.loads((tmp_path / "dropped" / "report.json").read_text())


def test_an_unattended_batch_names_a_file_that_is_not_utf8_and_leaves_home_alone(tmp_path):
    """A scene copied from a Windows share or an old zip (café.tif in Latin-1) failed with "'utf-8' codec
    can't encode character '\\udce9' ... surrogates not allowed", alone without even naming the file; and
    ONNX Runtime 1.2x+ wrote a device id and a database under ~/.cache/Microsoft (with a read-only HOME, a
    coloured 'Failed to persist telemetry' line in every run's stderr). A real process: the variable is read
    when onnxruntime is imported, and its streams carry the name's raw bytes."""
    import subprocess
    import sys

    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "good.tif").write_bytes((KAMPALA / "kampala_z19_1.tif").read_bytes())  # not a copy of it
    latin = Path(os.fsdecode(bytes(tmp_path / "s") + b"/caf\xe9.tif"))
    latin.write_bytes((KAMPALA / "kampala_z19_2.tif").read_bytes())
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "ORT_DISABLE_TELEMETRY"}
    env |= {"HOME": str(home), "GEOSEG_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1",
            "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-m", "geoseg", "predict", str(tmp_path / "s"), "--out", str(tmp_path / "o"),
                           *FAST], capture_output=True, encoding="utf-8", errors="surrogateescape", timeout=300,
                          stdin=subprocess.DEVNULL, env=env)
    assert done.returncode == 1 and "1 predicted, 0 already done, 1 failed" in done.stdout, done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith("geoseg predict: error: caf") and line.endswith(
        ".tif: its file name is not UTF-8 (the bytes caf\\xe9.tif: Latin-1 from a Windows share or an old zip?), "
        "which GDAL cannot open: rename it to UTF-8, e.g. convmv -f latin1 -t utf8 --notest FILE"), line
    assert list(home.rglob("*")) == [], list(home.rglob("*"))


def test_a_reader_gone_from_stdout_or_a_full_log_disk_does_not_stop_the_run(tmp_path):
    """rich ended the process on a broken pipe: ``geoseg predict ... | head -1`` exited 1 with nothing
    written (a batch's batch.json stayed 'running'), and ``> /dev/full`` failed the scene with 'No
    space left on device'. Progress is a view: the runs finish, exit 0, their outputs written."""
    import subprocess
    import sys

    scene = KAMPALA / "kampala_z19_2.tif"
    command = [sys.executable, "-m", "geoseg", "predict", str(scene), str(scene.with_name("kampala_z19_1.tif")),
               "--out", str(tmp_path / "piped"), *FAST]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL) as run:
        run.stdout.readline()
        run.stdout.close()  # head -1
        stderr = run.stderr.read().decode()
        assert run.wait(timeout=300) == 0, stderr
    assert "Error" not in stderr and "Traceback" not in stderr, stderr
    summary = json.loads((tmp_path / "piped" / "batch.json").read_text())
    assert (summary["state"], summary["exit_code"]) == ("finished", 0)
    assert (tmp_path / "piped" / "kampala_z19_1" / "buildings.gpkg").is_file()
    if Path("/dev/full").exists():
        with open("/dev/full", "w") as full:
            done = subprocess.run([*command[:5], "--out", str(tmp_path / "full"), *FAST], stdout=full,
                                  stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, timeout=300)
        assert done.returncode == 0, done.stderr.decode()
        assert (tmp_path / "full" / "buildings.gpkg").is_file()


def test_a_carriage_return_from_windows_line_ends_is_named(tmp_path):
    """A cron script or a list of scenes saved with Windows line ends: ``--out results\\r`` made that
    folder, ran every model, then failed each input writing its GeoPackage (an SQLite error, the \\r
    unseen); ``ok.tif\\r`` was 'input not found: .../ok.tif' with the \\r overwriting the line's start."""
    scene = KAMPALA / "kampala_z19_2.tif"
    out = tmp_path / "results\r"
    result = CliRunner().invoke(app, ["predict", str(scene), "--out", str(out), *FAST])
    assert_usage_error(result, "predict", f"--out {str(out)!r} holds a control character", "dos2unix")
    assert not out.exists()
    from geoseg.commands.outdir import check_printable_path
    check_printable_path("Résultats\u00a0juin \u65e5\u672c")  # a no-break space, CJK: printed as they are
    listed = f"{SCENE}\r"
    result = CliRunner().invoke(app, ["predict", str(scene), listed, "--out", str(tmp_path / "b"), *FAST])
    assert result.exit_code == 1, result.output
    assert result.stderr.strip().split("\n") == [
        f"geoseg predict: error: 'kampala_z19_1.tif\\r': input not found: {listed!r} (its name holds a control "
        f"character: a list saved with Windows line ends? dos2unix it)"]


def test_a_bar_with_no_stdout_or_a_closed_one_draws_nowhere(monkeypatch):
    """Started with stdout closed (``>&-``, pythonw) ``sys.stdout`` is None: rich drew nowhere; the
    bar's stream must too, and one closed meanwhile must not stop the run either."""
    import io
    import sys

    from tiles.progress_console import progress_console

    monkeypatch.setattr(sys, "stdout", None)
    progress_console().print("drawn nowhere")
    closed = io.StringIO()
    monkeypatch.setattr(sys, "stdout", closed)
    console = progress_console()
    closed.close()
    console.print("a line after the stream closed")


def test_a_link_loop_a_dangling_out_link_and_scenes_in_subfolders_are_named(tmp_path):
    """A loop of links was 'a link to loop.tif, which does not exist: a share not mounted?'; an --out
    that is a link to a share not mounted, 'cannot write into the --out folder: File exists'; a folder
    whose scenes lie in its sub-folders, 'no rasters in folder' with no word of them."""
    (tmp_path / "loopA.tif").symlink_to("loopB.tif")
    (tmp_path / "loopB.tif").symlink_to("loopA.tif")
    looped = CliRunner().invoke(app, ["predict", str(tmp_path / "loopA.tif"), "--out", str(tmp_path / "o"), *FAST])
    assert_one_line_error(looped, "predict", "(a link to loopB.tif that leads back to itself: a loop of links)")
    (tmp_path / "share").symlink_to(tmp_path / "not-mounted")
    dangling = CliRunner().invoke(app, ["predict", str(SCENE), "--out", str(tmp_path / "share"), *FAST])
    assert_one_line_error(dangling, "predict", f"is a link to {tmp_path / 'not-mounted'}, which does not exist")
    for sub in ("2026-01", "2026-02"):
        (tmp_path / "delivery" / sub).mkdir(parents=True)
    nested = CliRunner().invoke(app, ["predict", str(tmp_path / "delivery"), "--out", str(tmp_path / "o"), *FAST])
    assert_one_line_error(nested, "predict", "only directly in it, not in its folders (2026-01, 2026-02)")
