"""`geoseg predict --mosaic`: a grid of tiles predicted as the one scene they were cut from."""
from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import rasterio
import shapely
from checks import assert_one_line_error, assert_usage_error
from mosaic_tiles import SCENE, cut_grid, quantized, write_paletted, write_tile
from typer.testing import CliRunner

from geoseg.cli import app

FAST = ["--profile", "fast", "--device", "cpu"]


def _polygons(folder) -> set[bytes]:
    return {shapely.to_wkb(shapely.normalize(g)) for g in gpd.read_file(folder / "buildings.gpkg").geometry}


def test_a_grid_of_tiles_as_a_mosaic_gives_the_whole_scenes_outputs(tmp_path):
    """The tiles of kampala_z19_1 cut 2 x 2 (384 x 256 px each, on the 32 px grid the pipeline tiles on)
    give the whole scene's class map pixel for pixel and its very polygons, those across the cut lines
    included (measured: 56 of 56 identical; separately, each tile's folder cut such buildings in two)."""
    tiles = cut_grid(SCENE, tmp_path / "tiles")
    runner = CliRunner()
    result = runner.invoke(app, ["predict", str(tmp_path / "tiles"), "--out", str(tmp_path / "m"), "--mosaic", *FAST])
    assert result.exit_code == 0, result.output
    assert "mosaic of 4 rasters:" in result.stdout
    result = runner.invoke(app, ["predict", str(SCENE), "--out", str(tmp_path / "w"), *FAST])
    assert result.exit_code == 0, result.output

    m, w = tmp_path / "m", tmp_path / "w"
    assert sorted(p.name for p in m.iterdir()) == ["buildings.geojson", "buildings.gpkg", "classmap.qml",
                                                    "classmap.tif", "mosaic.vrt", "report.json"]
    with rasterio.open(m / "classmap.tif") as mosaic, rasterio.open(w / "classmap.tif") as whole, \
            rasterio.open(SCENE) as scene:
        assert (mosaic.crs, mosaic.transform, mosaic.shape) == (scene.crs, scene.transform, scene.shape)
        assert np.array_equal(mosaic.read(1), whole.read(1))
        cut_x = (scene.transform @ (384, 0))[0]
    assert _polygons(m) == _polygons(w)
    buildings = gpd.read_file(m / "buildings.gpkg")
    across = buildings[buildings.geometry.bounds.minx.lt(cut_x - 1) & buildings.geometry.bounds.maxx.gt(cut_x + 1)]
    assert len(across) >= 1  # one polygon each, reaching 1 m past the cut line on both sides
    # each building names the tile its representative point lies on, as one scene's name that scene
    assert set(buildings["source"]) == {p.name for p in tiles}
    for geometry, source in zip(buildings.geometry, buildings["source"]):
        with rasterio.open(tmp_path / "tiles" / source) as tile:
            assert shapely.box(*tile.bounds).contains(geometry.representative_point())
    assert set(gpd.read_file(m / "buildings.geojson")["source"]) == {p.name for p in tiles}

    report = json.loads((m / "report.json").read_text())
    assert report["input"] == str(m / "mosaic.vrt")
    # the VRT is kept in DIR (it opens the source mosaic in QGIS): the files a user keeps, listed
    assert report["outputs"] == sorted(p.name for p in m.iterdir() if p.name != "report.json") + ["report.json"]
    assert report["mosaic"]["inputs"] == [str(p) for p in tiles]
    assert report["mosaic"]["covered_fraction"] == 1.0 and report["mosaic"]["overlapping"] == []
    with rasterio.open(m / "mosaic.vrt") as vrt:  # absolute paths: opens from anywhere (QGIS)
        assert sorted(vrt.files[1:]) == [str(p) for p in tiles]


def test_a_missing_tile_is_nodata_without_buildings_and_class_0(tmp_path):
    """Three of four RGB tiles without mask, alpha or nodata: the missing one is a gap, not black ground."""
    tiles = cut_grid(SCENE, tmp_path / "tiles", skip=("10",), masks=False)
    result = CliRunner().invoke(app, ["predict", *map(str, tiles), "--out", str(tmp_path / "m"), "--mosaic", *FAST])
    assert result.exit_code == 0, result.output
    assert "warning: --mosaic: the 3 rasters cover 75.0% of the mosaic's 768 x 512 px rectangle" in result.stderr
    assert result.stderr.count("cover 75.0%") == 1  # told once, before the run
    warned = json.loads((tmp_path / "m" / "report.json").read_text())["warnings"]  # and kept where scripts read
    assert warned[0].startswith("--mosaic: the 3 rasters cover 75.0% of the mosaic's 768 x 512 px rectangle")
    with rasterio.open(tmp_path / "m" / "classmap.tif") as classmap:
        classes = classmap.read(1)
        assert classmap.shape == (512, 768)
        gap = shapely.box(*(classmap.transform @ (384, 256)), *(classmap.transform @ (768, 0)))
    assert (classes[:256, 384:] == 0).all() and (classes[:, :384] > 0).all()
    buildings = gpd.read_file(tmp_path / "m" / "buildings.gpkg")
    assert len(buildings) > 10 and buildings.geometry.intersection(gap).area.sum() == 0


def test_tiles_that_cannot_share_one_grid_are_refused_before_out_is_made(tmp_path):
    first, second = cut_grid(SCENE, tmp_path / "tiles", 2, 1, masks=False)
    with rasterio.open(second) as src:
        data, transform = src.read(), src.transform
    other_crs = write_tile(tmp_path / "utm.tif", data, transform, "EPSG:32636")
    resampled = write_tile(tmp_path / "coarse.tif", data[:, ::2, ::2], transform @ rasterio.Affine.scale(2), "EPSG:3857")
    runner = CliRunner()
    for odd, says in ((other_crs, "CRS EPSG:32636 differs from EPSG:3857 in t_00.tif"),
                      (resampled, "pixel size 0.597164 x 0.597164 differs from 0.298582 x 0.298582")):
        result = runner.invoke(app, ["predict", str(first), str(odd), "--out", str(tmp_path / "o"), "--mosaic", *FAST])
        assert_one_line_error(result, "predict", f"--mosaic: {odd}: {says}")
        assert not (tmp_path / "o").exists()


def test_mosaic_with_a_scheduler_is_refused(tmp_path):
    result = CliRunner().invoke(app, ["predict", str(SCENE), "--out", str(tmp_path / "o"), "--mosaic",
                                      "--scheduler", "local"])
    assert_usage_error(result, "predict", "--mosaic", "--scheduler", "leave it out")
    assert not (tmp_path / "o").exists()


def test_mosaic_with_the_default_scheduler_named_runs(tmp_path):
    """``--scheduler sync`` is the default, yet naming it beside --mosaic was refused as a scheduler."""
    result = CliRunner().invoke(app, ["predict", str(SCENE), "--out", str(tmp_path / "o"), "--mosaic",
                                      "--scheduler", "sync", *FAST])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "o" / "mosaic.vrt").is_file()


def test_a_failed_mosaic_run_leaves_the_earlier_vrt_as_it_was(tmp_path, monkeypatch):
    """The VRT is the input the folder's report names: a run that fails must not swap it."""
    import geoseg.pipeline

    def fails(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(geoseg.pipeline, "predict_scene", fails)
    tiles = cut_grid(SCENE, tmp_path / "tiles", 2, 1, masks=False)
    out = tmp_path / "o"
    out.mkdir()
    (out / "mosaic.vrt").write_text("<earlier/>")
    result = CliRunner().invoke(app, ["predict", *map(str, tiles), "--out", str(out), "--mosaic", *FAST])
    assert_one_line_error(result, "predict", "disk full")
    assert (out / "mosaic.vrt").read_text() == "<earlier/>"
    result = CliRunner().invoke(app, ["predict", *map(str, tiles), "--out", str(tmp_path / "new"), "--mosaic", *FAST])
    assert_one_line_error(result, "predict", "disk full")
    assert not (tmp_path / "new").exists()


def test_paletted_tiles_as_a_mosaic_give_the_whole_paletted_scenes_outputs(tmp_path):
    """A paletted scene (one band of colour-table indices, a nodata index over a corner) cut in two,
    the second tile's colour table reordered: --mosaic refused them as '1 band(s)'. It gives the
    whole paletted scene's class map and polygons, class 0 on the nodata index."""
    with rasterio.open(SCENE) as src:
        rgb, transform, crs = src.read(), src.transform, src.crs
    index, table = quantized(rgb, 63)
    index[:64, :96] = 63
    whole = write_paletted(tmp_path / "whole.tif", index, table, transform, crs, nodata=63)
    order = np.random.default_rng(0).permutation(64)  # tile b's table: the same colours, other indices
    new_table = table.copy()
    new_table[order] = table[:64]
    (tmp_path / "t").mkdir()
    a = write_paletted(tmp_path / "t" / "a.tif", index[:, :384], table, transform, crs, nodata=63)
    b = write_paletted(tmp_path / "t" / "b.tif", order[index[:, 384:]].astype(np.uint8), new_table,
                       transform @ rasterio.Affine.translation(384, 0), crs, nodata=int(order[63]))
    runner = CliRunner()
    result = runner.invoke(app, ["predict", str(a), str(b), "--out", str(tmp_path / "m"), "--mosaic", *FAST])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["predict", str(whole), "--out", str(tmp_path / "w"), *FAST])
    assert result.exit_code == 0, result.output
    with rasterio.open(tmp_path / "m" / "classmap.tif") as mosaic, rasterio.open(tmp_path / "w" / "classmap.tif") as one:
        classes = mosaic.read(1)
        assert (mosaic.transform, mosaic.shape) == (one.transform, one.shape)
        assert np.array_equal(classes, one.read(1))
    assert (classes[:64, :96] == 0).all() and (classes[64:] > 0).all()
    assert _polygons(tmp_path / "m") == _polygons(tmp_path / "w") and len(_polygons(tmp_path / "w")) > 10
