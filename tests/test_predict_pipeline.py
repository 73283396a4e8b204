"""`predict_scene` on real shared rasters: output contract, masks, odd inputs, seams, CLI."""
from __future__ import annotations

import json
import os
import re
import time
import warnings
from pathlib import Path
from xml.etree import ElementTree

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from PIL import Image
from rasterio import features
from rasterio.warp import transform_bounds
from rasterio.windows import Window
from typer.testing import CliRunner

import geoseg
from geoseg.card import code_version
from geoseg.cli import app
from geoseg.heads import load_heads
from geoseg.paths import data_root
from geoseg.pipeline import PredictError, PredictOptions, _head_plans, _stage_work, predict_scene
from geoseg.progress import stage_weights
from geoseg.tiled_inference import head_plan
from tiles.cog import is_valid_cog
from tiles.grid import TILE_MULTIPLE, context_margins, context_window, fit_tiles, stretched_size, tile_grid
from tiles.source import Scene

from test_predict_models import make_tiny_models, tiny_models  # noqa: F401  (shared fixture)
from test_tiles_stitch import geotiff_georeferencing_tags

RASTERS = data_root() / "rasters"
SCENE = data_root() / "buildings" / "kampala" / "kampala_z19_1.tif"


def options(models: dict, **kw) -> PredictOptions:
    base = dict(tile_size=256, overlap=32, model_dirs=models, device="cpu")
    base.update(kw)
    return PredictOptions(**base)


def input_valid(path: Path) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rasterio.open(path) as src:
            valid = src.dataset_mask() > 0
            data = src.read()
    if np.issubdtype(data.dtype, np.floating):
        valid &= np.isfinite(data).all(axis=0)
    return valid


def building_mask(gpkg: Path, transform, shape) -> np.ndarray:
    frame = gpd.read_file(gpkg)
    if len(frame) == 0:
        return np.zeros(shape, bool)
    return features.rasterize(((g, 1) for g in frame.geometry), out_shape=shape, transform=transform) > 0


@pytest.fixture(scope="module")
def scene_run(tiny_models, tmp_path_factory):
    out = tmp_path_factory.mktemp("scene")
    progress = []
    report = predict_scene(SCENE, out, options(tiny_models), progress=lambda f, s: progress.append((f, s)))
    return out, report, progress


def test_classmap_has_a_qgis_style_naming_its_classes(scene_run):
    """classmap.qml (QGIS's default style for classmap.tif): one entry per class, with the class
    map's own colours and names, and none for 0 (no data), instead of 256 unnamed palette values."""
    out, report, _ = scene_run
    root = ElementTree.parse(out / "classmap.qml").getroot()
    renderer = root.find("pipe/rasterrenderer")
    assert renderer.get("type") == "paletted" and renderer.get("band") == "1"
    with rasterio.open(out / "classmap.tif") as cm:
        names, colours = json.loads(cm.tags()["classes"]), cm.colormap(1)
    entries = renderer.findall("colorPalette/paletteEntry")
    assert [int(e.get("value")) for e in entries] == [1, 2, 3, 4, 5]
    for e in entries:
        value = int(e.get("value"))
        assert e.get("label") == names[str(value)] and e.get("alpha") == "255"
        assert e.get("color") == "#{:02x}{:02x}{:02x}".format(*colours[value][:3])
    assert "classmap.qml" in report["outputs"]


def test_classmap_band_says_what_it_holds(scene_run):
    """GIS tools list the class map's band by its description: without one QGIS showed "Band 1"."""
    out, _, _ = scene_run
    with rasterio.open(out / "classmap.tif") as cm:
        names = json.loads(cm.tags()["classes"])
        assert cm.descriptions == ("land-cover class: 1 building, 2 road, 3 vegetation, 4 water, 5 land; 0 nodata",)
    assert names["1"] == "building" and names["0"] == "nodata"


def test_docs_predict_md_names_every_field_of_report_json(scene_run):
    """Its report.json row left out ``device``, ``options``, ``grid``, ``postprocess``, ``mpx_per_s`` and
    ``outputs``, and said nothing of ``input_file``."""
    _, report, _ = scene_run
    doc = (Path(__file__).resolve().parents[1] / "docs" / "predict.md").read_text()
    row = next(line for line in doc.splitlines() if line.startswith("| `report.json` |"))
    assert not [key for key in report if f"`{key}`" not in row]


def test_outputs_on_a_real_scene(scene_run):
    out, report, progress = scene_run
    assert sorted(p.name for p in out.iterdir()) == ["buildings.geojson", "buildings.gpkg", "classmap.qml",
                                                     "classmap.tif", "report.json"]
    assert report["geoseg"] == {"version": geoseg.__version__, "code_version": code_version()}
    with rasterio.open(SCENE) as src, rasterio.open(out / "classmap.tif") as cm:
        assert (cm.crs, cm.transform, cm.width, cm.height) == (src.crs, src.transform, src.width, src.height)
        assert cm.dtypes[0] == "uint8" and cm.count == 1
        assert cm.colormap(1)[4][:3] == (0x1F, 0x78, 0xB4)  # water blue from the card
        assert cm.colormap(1)[0][3] == 0  # nodata transparent
        assert json.loads(cm.tags()["classes"])["1"] == "building"
        classes = cm.read(1)
        bounds = transform_bounds(src.crs, "EPSG:4326", *src.bounds, densify_pts=21)
        crs = src.crs
    assert is_valid_cog(out / "classmap.tif")
    assert ((classes > 0) == input_valid(SCENE)).all()  # 0 exactly outside the valid mask
    assert classes.max() <= 5
    gj = json.loads((out / "buildings.geojson").read_text())
    assert gj["type"] == "FeatureCollection" and "crs" not in gj
    assert len(gj["features"]) == report["counts"]["buildings"] >= 1
    for feat in gj["features"]:
        assert feat["id"] == feat["properties"]["id"]  # the Feature's own id too, as web maps key on it
        assert set(feat["properties"]) == {"id", "area_m2", "confidence", "source"}
        geom = shapely.geometry.shape(feat["geometry"])
        assert feat["geometry"]["type"] == "Polygon" and geom.is_valid
        minx, miny, maxx, maxy = geom.bounds
        assert bounds[0] - 1e-7 <= minx and maxx <= bounds[2] + 1e-7
        assert bounds[1] - 1e-7 <= miny and maxy <= bounds[3] + 1e-7
        assert set(feat["properties"]) >= {"id", "area_m2", "confidence", "source"}
        assert 0 <= feat["properties"]["confidence"] <= 1
    gpkg = gpd.read_file(out / "buildings.gpkg")
    assert gpkg.crs == crs and len(gpkg) == len(gj["features"])
    # area in true square metres: Web Mercator areas are inflated by 1/cos^2(latitude)
    lat = np.radians((bounds[1] + bounds[3]) / 2)
    expected = gpkg.geometry.area.to_numpy() * np.cos(lat) ** 2
    assert np.allclose(gpkg["area_m2"].to_numpy(), expected, rtol=0.02)
    assert report["models"]["buildings"]["name"] == "test-buildings"
    assert report["gsd"]["working_m"]["landcover"] == pytest.approx(0.6, rel=0.01)  # resampled to the card
    assert set(report["timings_s"]) >= {"landcover", "classmap", "buildings", "vectorize", "total"}
    fractions = [f for f, _ in progress]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and 1.0 not in fractions[:-1]


def crop(src_path: Path, dst: Path, window: Window, external_mask: bool = False) -> Path:
    with rasterio.open(src_path) as src:
        profile = src.profile | dict(width=int(window.width), height=int(window.height),
                                     transform=src.window_transform(window), tiled=False)
        profile.pop("blockxsize", None), profile.pop("blockysize", None)
        data = src.read(window=window)
        mask = src.dataset_mask(window=window)
        colorinterp = src.colorinterp
    env = {"GDAL_TIFF_INTERNAL_MASK": False} if external_mask else {}
    with rasterio.Env(**env), rasterio.open(dst, "w", **profile) as out:
        out.write(data)
        out.colorinterp = colorinterp
        if external_mask:
            out.write_mask(mask)
    return dst


def coarse_copy(path, metres: float, size: int = 64):
    """A ``size`` px crop of kampala_z19_1 georeferenced as ``metres`` EPSG:3857 units a pixel (near
    the equator: 0.4 % more than its ground metres on the ellipsoid)."""
    with rasterio.open(SCENE) as src:
        window = Window(200, 200, size, size)
        pixels, profile = src.read(window=window), dict(src.profile)
        corner = src.window_transform(window)
    for key in ("blockxsize", "blockysize", "jpeg_quality"):
        profile.pop(key, None)
    profile.update(width=size, height=size, tiled=False, compress="deflate", photometric="RGB",
                   transform=rasterio.Affine(metres, 0, corner.c, 0, -metres, corner.f))
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(pixels)
    return path


def float_with_nan(dst: Path) -> Path:
    with rasterio.open(RASTERS / "rasterio" / "cogeo.tif") as src:
        window = Window(300, 300, 200, 180)
        data = src.read(window=window).astype(np.float32) / 255.0
        profile = dict(driver="GTiff", width=200, height=180, count=3, dtype="float32", crs=src.crs,
                       transform=src.window_transform(window), nodata=float("nan"))
    data[:, 40:90, 20:120] = np.nan
    with rasterio.open(dst, "w", **profile) as out:
        out.write(data)
    return dst


def odd_raster(kind: str, tmp: Path) -> Path:
    r = RASTERS / "rasterio"
    if kind == "geographic":
        return crop(r / "world.rgb.tif", tmp / "world.tif", Window(100, 40, 200, 150))
    if kind == "uint16_rgba":
        return crop(r / "RGBA.uint16.tif", tmp / "u16.tif", Window(0, 120, 220, 200))
    if kind == "rgba_alpha":
        return crop(r / "alpha.tif", tmp / "alpha.tif", Window(0, 1023, 200, 200))
    if kind == "float_nan":
        return float_with_nan(tmp / "float.tif")
    if kind == "external_mask":
        path = crop(r / "RGB2.byte.tif", tmp / "msk.tif", Window(0, 200, 200, 200), external_mask=True)
        assert Path(str(path) + ".msk").exists()
        return path
    if kind == "no_georef_png":
        image = Image.open(RASTERS / "deepforest_neon" / "2019_YELL_2_541000_4977000_image_crop.png")
        image.convert("RGB").crop((0, 0, 240, 200)).save(tmp / "plain.png")
        return tmp / "plain.png"
    raise ValueError(kind)


def test_a_scene_narrower_than_the_networks_stride_is_warned(tiny_models, tmp_path):
    """A strip a few working pixels wide has no context for the model (the network downsamples by
    32): a 1 px row of nairobi_z19_1 agreed with the whole scene's class map on 72 % of its pixels,
    a 5 x 5 px crop on none. It still gets a class map, with a warning saying so."""
    kampala = data_root() / "buildings" / "kampala" / "kampala_z19_1.tif"
    narrow = crop(kampala, tmp_path / "strip.tif", Window(0, 100, 300, 8))  # 4 px high at 0.6 m
    wide = crop(kampala, tmp_path / "block.tif", Window(0, 100, 128, 128))  # 64 px at 0.6 m
    for path, warned in ((narrow, True), (wide, False)):
        report = predict_scene(path, tmp_path / path.stem, options(tiny_models, buildings=False, refine="none"))
        said = [w for w in report["warnings"] if "no context" in w]
        assert bool(said) == warned, report["warnings"]
        if warned:
            assert "150 x 4 px" in said[0] and "test-landcover" in said[0]
        with rasterio.open(tmp_path / path.stem / "classmap.tif") as cm, rasterio.open(path) as src:
            assert (cm.width, cm.height) == (src.width, src.height) and (cm.read(1) > 0).all()


@pytest.mark.parametrize("islands", ["one 3 x 3 px island", "islands of 1, 2 and 3 px and a 1 px line"])
def test_every_valid_pixel_gets_a_class_however_small_its_valid_area(tmp_path, islands):
    """A raster all nodata but for valid areas under a land-cover working pixel across (a 3 x 3 px
    island at 0.3 m, the head at 1.2 m) got class 0 there: the bilinear warper read no valid
    working pixel, so the only tile was skipped and the class map had no prediction for them.
    Each valid pixel now gets a class, and only they do."""
    with rasterio.open(SCENE) as src:
        window = Window(200, 100, 128, 128)
        profile = src.profile | {"width": 128, "height": 128, "transform": src.window_transform(window),
                                 "tiled": False, "compress": "deflate", "photometric": "RGB"}
        data = src.read(window=window)
    for key in ("blockxsize", "blockysize", "jpeg_quality"):
        profile.pop(key, None)
    mask = np.zeros((128, 128), np.uint8)
    mask[59:62, 59:62] = 255  # across working pixels, so no working pixel is mostly valid
    if islands != "one 3 x 3 px island":
        mask[12, 12] = mask[100:102, 20:22] = 255
        mask[90, 30:110] = 255
    path = tmp_path / "islands.tif"
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        dst.write_mask(mask)
    with Scene(path, gsd=1.2) as scene:  # (what made the class map 0 there: placed off working pixels' centres)
        _, valid = scene.read(Window(0, 0, scene.width, scene.height))
        assert not valid.any()
    models = make_tiny_models(tmp_path / "models", landcover_gsd=1.2)
    report = predict_scene(path, tmp_path / "out", options(models, buildings=False, refine="none"))
    with rasterio.open(tmp_path / "out" / "classmap.tif") as cm:
        assert np.array_equal(cm.read(1) > 0, mask > 0)
    assert any("1 of the test-landcover model's tiles hold valid pixels only in areas under about one 1.2 m "
               "working pixel" in w for w in report["warnings"]), report["warnings"]


def test_8_bit_data_saved_as_uint16_predicts_as_the_8_bit_scene(tiny_models, tmp_path):
    """x 257 (``gdal_translate -ot UInt16 -scale 0 255 0 65535``) is scaled back, not stretched: same buildings
    as the uint8 scene, report.json says how, and no stretch note; an offset copy is stretched."""
    plain = coarse_copy(tmp_path / "plain.tif", 0.3, size=256)
    with rasterio.open(plain) as src:
        data, profile = src.read(), dict(src.profile)
    copies = {}
    for name, values in (("x257", data.astype(np.uint16) * 257), ("offset", data.astype(np.uint16) * 257 + 7)):
        copies[name] = tmp_path / f"{name}.tif"
        with rasterio.open(copies[name], "w", **(profile | {"dtype": "uint16"})) as dst:
            dst.write(values)
    reports = {name: predict_scene(path, tmp_path / name, options(tiny_models, refine="none", classmap=False))
               for name, path in {"plain": plain, **copies}.items()}
    assert reports["plain"]["scaling"] == {"dtype": "uint8", "method": "as stored"}
    assert reports["x257"]["scaling"]["method"] == "8-bit values"
    assert reports["offset"]["scaling"]["method"] == "2-98 % stretch"
    assert not any("stretched" in w for name in ("plain", "x257") for w in reports[name]["warnings"])
    assert any(w.startswith("uint16 input stretched to 0-255") for w in reports["offset"]["warnings"])
    shapes = {name: gpd.read_file(tmp_path / name / "buildings.gpkg").geometry for name in reports}
    assert len(shapes["plain"]) > 0
    assert shapes["x257"].geom_equals(shapes["plain"]).all() and len(shapes["x257"]) == len(shapes["plain"])


ODD = ["geographic", "uint16_rgba", "rgba_alpha", "float_nan", "external_mask", "no_georef_png"]


@pytest.mark.parametrize("kind", ODD)
def test_odd_rasters(kind, tiny_models, tmp_path):
    path = odd_raster(kind, tmp_path)
    valid = input_valid(path)
    if kind in ("uint16_rgba", "rgba_alpha", "float_nan", "external_mask"):
        assert 0.05 < valid.mean() < 0.95, "the crop must hold both valid and nodata pixels"
    out = tmp_path / "out"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = predict_scene(path, out, options(tiny_models, gsd=0.3, refine="none"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rasterio.open(path) as src, rasterio.open(out / "classmap.tif") as cm:
            assert (cm.width, cm.height) == (src.width, src.height)
            assert cm.transform.almost_equals(src.transform)
            assert cm.crs == src.crs
            classes = cm.read(1)
            transform = src.transform
    assert ((classes > 0) == valid).all()
    on_nodata = building_mask(out / "buildings.gpkg", transform, valid.shape) & ~valid
    assert on_nodata.sum() == 0, "a building over nodata"
    if kind == "no_georef_png":
        assert not (out / "buildings.geojson").exists()
        # no geotransform, as the PNG: GIS tools then draw the class map on it, not upside down beside it
        assert not geotiff_georeferencing_tags(out / "classmap.tif")
        assert any("not georeferenced" in str(w.message) for w in caught)
        assert report["warnings"]
    else:
        assert (out / "buildings.geojson").exists()


@pytest.mark.parametrize("placed_by", ["GCPs", "RPCs"])
def test_the_class_map_of_a_raster_placed_by_gcps_or_rpcs_keeps_them(placed_by, tiny_models, tmp_path):
    """GIS tools place such a raster by warping it on the fly. Its class map had the identity
    transform and nothing else, so it lay apart from the input (upside down, in QGIS); it now
    carries the input's GCPs or RPCs, on the same pixel grid, and no geotransform."""
    from rasterio.control import GroundControlPoint
    from rasterio.rpc import RPC

    with rasterio.open(SCENE) as src:
        pixels, t, crs = src.read([1, 2, 3], window=Window(0, 0, 160, 128)), src.transform, src.crs
    if placed_by == "GCPs":
        place = {"gcps": [GroundControlPoint(r, c, *(t * (c, r))) for r, c in [(0, 0), (0, 160), (128, 0), (128, 160)]],
                 "crs": crs}
    else:  # longitude and latitude linear in column and row
        place = {"rpcs": RPC(height_off=1200, height_scale=500, lat_off=0.35, lat_scale=0.001, line_off=64,
                             line_scale=64, long_off=32.6, long_scale=0.001, samp_off=80, samp_scale=80,
                             line_num_coeff=[0, 0, -1] + [0] * 17, line_den_coeff=[1] + [0] * 19,
                             samp_num_coeff=[0, 1] + [0] * 18, samp_den_coeff=[1] + [0] * 19)}
    path = tmp_path / "placed.tif"
    with rasterio.open(path, "w", driver="GTiff", width=160, height=128, count=3, dtype="uint8", **place) as dst:
        dst.write(pixels)
    report = predict_scene(path, tmp_path / "o", options(tiny_models, refine="none"))
    assert any(f"only {placed_by}" in w and "class map keeps" in w for w in report["warnings"]), report["warnings"]
    with rasterio.open(path) as src, rasterio.open(tmp_path / "o" / "classmap.tif") as cm:
        assert (cm.width, cm.height) == (src.width, src.height) and cm.crs is None
        if placed_by == "GCPs":
            assert cm.gcps[1] == src.gcps[1]
            assert [(g.row, g.col, g.x, g.y) for g in cm.gcps[0]] == [(g.row, g.col, g.x, g.y) for g in src.gcps[0]]
        else:
            assert cm.rpcs.to_dict() == src.rpcs.to_dict()
    # no geotransform: no pixel scale or transformation (GeoTIFF stores the GCPs as its tiepoints)
    assert not geotiff_georeferencing_tags(tmp_path / "o" / "classmap.tif") - {33922}
    assert is_valid_cog(tmp_path / "o" / "classmap.tif")


def test_bad_inputs_give_clear_errors(tiny_models, tmp_path):
    with pytest.raises(PredictError, match="not found"):
        predict_scene(tmp_path / "missing.tif", tmp_path / "o", options(tiny_models))
    (tmp_path / "junk.tif").write_bytes(b"not a raster")
    with pytest.raises(PredictError, match="cannot be opened"):
        predict_scene(tmp_path / "junk.tif", tmp_path / "o", options(tiny_models))
    with pytest.raises(PredictError, match="overlap"):
        predict_scene(SCENE, tmp_path / "o", options(tiny_models, overlap=200))
    with pytest.raises(PredictError, match="nothing to do"):
        predict_scene(SCENE, tmp_path / "o", options(tiny_models, buildings=False, classmap=False))
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_cli_batch_is_resumable_and_reports_failures(tiny_models, tmp_path):
    a = crop(SCENE, tmp_path / "a.tif", Window(0, 0, 200, 200))
    b = crop(SCENE, tmp_path / "b.tif", Window(300, 200, 200, 200))
    bad = tmp_path / "c.tif"
    bad.write_bytes(b"junk")
    args = ["predict", str(a), str(b), str(bad), "--out", str(tmp_path / "out"), "--tile-size", "256",
            "--refine", "none", "--no-classmap", "--device", "cpu",
            "--model", f"buildings={tiny_models['buildings']}"]
    runner = CliRunner()
    first = runner.invoke(app, args)
    assert first.exit_code == 1
    assert "c.tif" in first.output
    assert (tmp_path / "out" / "a" / "buildings.gpkg").exists()
    assert not (tmp_path / "out" / "a" / "classmap.tif").exists()
    assert not (tmp_path / "out" / "c").exists()
    stamp = (tmp_path / "out" / "a" / "report.json").stat().st_mtime_ns
    bad.unlink()
    second = runner.invoke(app, args[:3] + args[4:])
    assert second.exit_code == 0, second.output
    assert "2 already done" in second.output
    assert (tmp_path / "out" / "a" / "report.json").stat().st_mtime_ns == stamp
    wrong = runner.invoke(app, ["predict", str(a), "--out", str(tmp_path / "x"), "--refine", "maybe"])
    assert wrong.exit_code == 2 and "refine" in wrong.output  # a usage error (exit 1 before session 31)


@pytest.mark.parametrize("name", ["zanzibar/zanzibar_z19_2", "nairobi/nairobi_z20_2"])
def test_result_does_not_depend_on_tile_size(tiny_models, tmp_path, name):
    """256 px and 1024 px tiles give the same buildings (IoU >= 0.95): blending + whole-raster vectorising.

    nairobi_z20_2 is 1019 x 507 px on the 0.3 m grid: its edge tiles used to start off the
    32 px grid and its short axis padded differently per tile size (``tiles.grid``,
    ``context_window``). The calibrated tiny model keeps this fast; ``bench/predict.py
    --what seams`` checks the shipped weights the same way.
    """
    scene = data_root() / "buildings" / f"{name}.tif"
    models = {"buildings": tiny_models["buildings"]}
    with rasterio.open(scene) as src:
        transform, shape = src.transform, (src.height, src.width)
    masks, counts = [], []
    for size in (256, 1024):
        out = tmp_path / str(size)
        report = predict_scene(scene, out, options(models, tile_size=size, overlap=64, classmap=False))
        masks.append(building_mask(out / "buildings.gpkg", transform, shape))
        counts.append(report["counts"]["buildings"])
    a, b = masks
    assert 0.02 < a.mean() < 0.9, "the comparison must be about real building masks"
    assert (a & b).sum() / (a | b).sum() >= 0.95
    assert abs(counts[0] - counts[1]) <= max(2, 0.05 * counts[1])


def test_a_cards_min_context_is_a_floor_on_the_context_margin():
    """512 px tiles of a 512 px model were read with no context: their 64 px overlap blended the
    window's last pixels. A card's ``min_context`` keeps a margin; small tiles keep their larger one."""
    tiles = fit_tiles(tile_grid(2048, 2048, 512, 64, align=TILE_MULTIPLE), 2048, 2048)
    assert context_margins(tiles, 2048, 2048, 512, None) == (0, 0)
    assert context_margins(tiles, 2048, 2048, 512, None, min_context=64) == (64, 64)
    small = fit_tiles(tile_grid(2048, 2048, 256, 64, align=TILE_MULTIPLE), 2048, 2048)
    assert context_margins(small, 2048, 2048, 512, None, min_context=64) == (128, 128)
    assert context_margins(tiles, 2048, 2048, 512, 16, min_context=64) == (16, 16)  # --context overrides


def test_fast_profile_at_the_default_tile_size_agrees_with_big_tiles(tmp_path):
    """The shipped student at 512 px tiles (the default) against 1024 px tiles on zanzibar_z19_1:
    without context around 512 px tiles the building masks agreed at IoU 0.935 (session 13);
    the fast cards' 64 px ``min_context`` brings it to 0.994 (``bench/predict.py --what seams``)."""
    scene = data_root() / "buildings" / "zanzibar" / "zanzibar_z19_1.tif"
    with rasterio.open(scene) as src:
        transform, shape = src.transform, (src.height, src.width)
    masks = []
    for size in (512, 1024):
        out = tmp_path / str(size)
        predict_scene(scene, out, PredictOptions(profile="fast", tile_size=size, classmap=False, refine="none",
                                                 device="cpu"))
        masks.append(building_mask(out / "buildings.gpkg", transform, shape))
    a, b = masks
    assert 0.02 < a.mean() < 0.9
    assert (a & b).sum() / (a | b).sum() >= 0.99


def test_a_cards_window_fixes_its_heads_tiles_whatever_the_tile_size(tmp_path):
    """A card's ``window`` tiles its head on its own grid: ``--tile-size`` / ``--overlap`` no longer
    move it (the other heads still follow them), and a bad window is refused when the card is read."""
    from geoseg.card import ModelCardError, read_card
    from geoseg.tiled_inference import plan_tiles

    card = {"tile_size": 512, "window": {"size": 512, "overlap": 64}}
    plans = [plan_tiles(2000, 1500, card, PredictOptions(tile_size=size, overlap=overlap))
             for size, overlap in ((256, 32), (1024, 128))]
    assert plans[0].tiles == plans[1].tiles and (plans[0].side_x, plans[0].my) == (plans[1].side_x, plans[1].my)
    assert plans[0].side_x in range(512, 641)  # the window's 512 px (stretched up to 1.25x at an edge)
    free = [plan_tiles(2000, 1500, {"tile_size": 512}, PredictOptions(tile_size=size)) for size in (256, 1024)]
    assert free[0].tiles != free[1].tiles
    for bad in ({"size": 512, "overlap": 256}, {"size": 16, "overlap": 0}, {"size": "512", "overlap": 64}, 512):
        path = tmp_path / "card.json"
        path.write_text(json.dumps({"name": "x", "task": "buildings", "architecture": "U2Net", "arch_kwargs": {},
                                    "classes": [], "normalisation": {}, "window": bad}))
        with pytest.raises(ModelCardError, match="window"):
            read_card(path)


def test_a_cards_max_upsampling_lets_its_head_reach_its_own_gsd_from_a_coarse_scene(tiny_models, tmp_path):
    """Inputs are upsampled 2x at most, so a 1 m scene reached a 0.3 m building head at 0.5 m, with a
    warning. A card's ``max_upsampling`` (4) lets its head work at its own 0.3 m: a 64 px crop of
    kampala_z19_1 said to be 1 m a pixel is 213 working px across instead of 128, with no warning. A
    bad value is refused when the card is read."""
    import shutil

    from geoseg.card import ModelCardError, read_card

    coarse = coarse_copy(tmp_path / "one_metre.tif", 1.0)
    capped = tmp_path / "capped"
    shutil.copytree(Path(tiny_models["buildings"]).parent, capped)
    card_path = capped / Path(tiny_models["buildings"]).name
    card = json.loads(card_path.read_text())
    card_path.write_text(json.dumps(card | {"max_upsampling": 4}))
    reports = {}
    for name, card_dir in (("default", tiny_models["buildings"]), ("capped", str(card_path))):
        models = dict(tiny_models, buildings=card_dir)
        reports[name] = predict_scene(coarse, tmp_path / name, options(models, classmap=False))
    widths = {name: r["tiles"]["buildings"]["working_width"] for name, r in reports.items()}
    expected = {"default": range(126, 131), "capped": range(210, 216)}  # 64 px at 1 m to 0.5 m / 0.3 m
    assert all(widths[name] in expected[name] for name in widths), widths
    assert any("upsampled 2x only" in w for w in reports["default"]["warnings"]), reports["default"]["warnings"]
    assert not any("upsampled" in w for w in reports["capped"]["warnings"]), reports["capped"]["warnings"]
    # the same through --gsd: a 0.3 m crop said to be 1 m a pixel
    fine = crop(SCENE, tmp_path / "fine.tif", Window(200, 200, 64, 64))
    for name, card_dir in (("default", tiny_models["buildings"]), ("capped", str(card_path))):
        report = predict_scene(fine, tmp_path / f"gsd_{name}", options(dict(tiny_models, buildings=card_dir),
                                                                       classmap=False, gsd=1.0))
        assert report["tiles"]["buildings"]["working_width"] in expected[name], (name, report["tiles"])
    # the time estimate and the refusal of a far coarser input count with the card's cap
    from geoseg.coarse_input import too_coarse
    from geoseg.pipeline import expected_seconds

    capped_options = options(dict(tiny_models, buildings=str(card_path)), classmap=False)
    assert expected_seconds(coarse, capped_options) > expected_seconds(coarse, options(tiny_models, classmap=False))
    assert "upsampled 4x at most" in too_coarse(5.0, capped_options).reason()
    assert "upsampled 2x at most" in too_coarse(5.0, options(tiny_models, classmap=False)).reason()
    for bad in (0.5, 20, "4", True):
        card_path.write_text(json.dumps(card | {"max_upsampling": bad}))
        with pytest.raises(ModelCardError, match="max_upsampling"):
            read_card(card_path)


def test_accurate_profile_buildings_do_not_depend_on_the_tile_size(tmp_path):
    """The shipped teacher's prediction depends on the window that holds a pixel: on nairobi_z19_2
    its building masks at 256 and 1024 px tiles agreed at IoU 0.917 (sessions 7-17), under the
    0.95 the predict issue asks. Its card's ``window`` runs it on 512 px tiles at any --tile-size.
    Since session 25 the accurate head averages it with a LiteUNet that follows the option with
    64 px of context, and the land-cover cue follows it too: 0.990 here (the U2-Net alone, 0.99+),
    held at 0.975, well above the goal."""
    scene = data_root() / "buildings" / "nairobi" / "nairobi_z19_2.tif"
    with rasterio.open(scene) as src:
        transform, shape = src.transform, (src.height, src.width)
    masks, reports = [], []
    for size in (256, 1024):
        out = tmp_path / str(size)
        reports.append(predict_scene(scene, out, PredictOptions(tile_size=size, classmap=False, device="cpu")))
        masks.append(building_mask(out / "buildings.gpkg", transform, shape))
    a, b = masks
    assert 0.02 < a.mean() < 0.9
    assert (a & b).sum() / (a | b).sum() >= 0.975
    assert all(r["tiles"]["buildings"]["window_from_card"] for r in reports)
    assert [r["tiles"]["buildings"]["tile_px"] for r in reports][0] == reports[1]["tiles"]["buildings"]["tile_px"]
    assert reports[0]["tiles"]["landcover"]["tile_px"] != reports[1]["tiles"]["landcover"]["tile_px"]


def test_gcn_for_other_features_is_skipped_with_a_warning(tiny_models, tmp_path):
    from geoseg import card as cards
    from geoseg.models.gcn import SuperpixelGCN

    other = cards.save_model(SuperpixelGCN(in_features=99, n_classes=6, hidden=8, n_layers=2), {
        "name": "other-gcn", "task": "gcn", "architecture": "SuperpixelGCN", "cnn": "some-teacher",
        "arch_kwargs": {"in_features": 99, "n_classes": 6, "hidden": 8, "n_layers": 2},
        "classes": cards.LANDCOVER_CLASSES, "normalisation": {"mean": [0, 0, 0], "std": [1, 1, 1]},
    }, tmp_path / "gcn")
    scene = data_root() / "buildings" / "kampala" / "kampala_z19_2.tif"
    models = dict(tiny_models, gcn=str(other))
    with pytest.warns(UserWarning, match="GCN refinement skipped"):
        report = predict_scene(scene, tmp_path / "out", options(models, buildings=False))
    assert "gcn" not in report["models"]
    assert any("some-teacher" in w for w in report["warnings"])
    assert (tmp_path / "out" / "classmap.tif").exists() and not (tmp_path / "out" / "buildings.gpkg").exists()


def test_regularize_gives_valid_non_overlapping_squared_outlines(tiny_models, tmp_path):
    scene = data_root() / "buildings" / "kampala" / "kampala_z19_1.tif"
    plain = predict_scene(scene, tmp_path / "plain", options(tiny_models, classmap=False))
    squared = predict_scene(scene, tmp_path / "squared", options(tiny_models, classmap=False, regularize=True))
    assert squared["options"]["regularize"] and squared["counts"]["buildings"] == plain["counts"]["buildings"]
    a = gpd.read_file(tmp_path / "plain" / "buildings.gpkg")
    b = gpd.read_file(tmp_path / "squared" / "buildings.gpkg")
    assert b.geometry.is_valid.all() and (b.geom_type == "Polygon").all()
    # fewer vertices, about the same area, and no two buildings overlap
    assert sum(len(g.exterior.coords) for g in b.geometry) < sum(len(g.exterior.coords) for g in a.geometry)
    assert b.area.sum() == pytest.approx(a.area.sum(), rel=0.15)
    tree = shapely.STRtree(b.geometry.values)
    left, right = tree.query(b.geometry.values, predicate="intersects")
    pairs = left < right
    overlap = shapely.area(shapely.intersection(b.geometry.values[left[pairs]], b.geometry.values[right[pairs]]))
    assert overlap.sum() < 1e-3 * b.area.sum()
    # squaring pushes walls outwards: they are cut off the scene's nodata (geoseg.valid_area)
    with rasterio.open(scene) as src:
        transform, shape = src.transform, (src.height, src.width)
    valid = input_valid(scene)
    assert (~valid).sum() > 100, "the scene must have nodata pixels for this check to mean anything"
    assert not (building_mask(tmp_path / "squared" / "buildings.gpkg", transform, shape) & ~valid).any()


def test_each_profile_uses_the_gcn_fitted_to_its_land_cover_model(tmp_path, monkeypatch):
    """--profile fast refines with ``landcover-gcn-fast`` (fitted on the student's features) when
    it ships; the accurate GCN, fitted on other features, is refused for that model, not misused."""
    import shutil

    from geoseg import card as cards
    from geoseg.models.gcn import SuperpixelGCN
    from geoseg.heads import load_heads
    from geoseg.superpixels import n_node_features

    from test_predict_models import make_tiny_models

    tiny = make_tiny_models(tmp_path / "tiny")
    weights = tmp_path / "weights"
    weights.mkdir()
    student = json.loads(Path(tiny["landcover"]).read_text())
    for name in ("landcover-attresunet", "landcover-attresunet-fast"):  # the same tiny student under both names
        shutil.copy(Path(tiny["landcover"]).parent / student["weights"], weights / f"{name}.pt")
        (weights / f"{name}.json").write_text(json.dumps(dict(student, name=name, weights=f"{name}.pt")))
    for name, in_features in (("landcover-gcn", 99), ("landcover-gcn-fast", n_node_features(8, 5))):
        cards.save_model(SuperpixelGCN(in_features=in_features, n_classes=6, hidden=8, n_layers=2), {
            "name": name, "task": "gcn", "architecture": "SuperpixelGCN", "cnn": "some-teacher",
            "arch_kwargs": {"in_features": in_features, "n_classes": 6, "hidden": 8, "n_layers": 2},
            "classes": cards.LANDCOVER_CLASSES, "normalisation": student["normalisation"],
        }, weights)
    monkeypatch.setattr(cards, "weights_dir", lambda: weights)

    notes: list[str] = []
    heads = load_heads(PredictOptions(profile="fast", buildings=False, device="cpu"), "cpu", notes)
    assert heads["gcn"][1]["name"] == "landcover-gcn-fast" and not notes
    notes = []
    heads = load_heads(PredictOptions(profile="accurate", buildings=False, device="cpu"), "cpu", notes)
    assert "gcn" not in heads and any("some-teacher" in n for n in notes)


def test_a_gcn_reading_only_probabilities_refines_its_own_cnn_without_feature_maps(tiny_models, tmp_path,
                                                                                   monkeypatch):
    """A colour_prior GCN (what ``refit_gcn --inputs colour_prior`` fits) is used only with the CNN
    it was fitted on, and the land-cover model then never computes its feature maps."""
    from geoseg import card as cards
    from geoseg.infer import TileModel
    from geoseg.models.gcn import SuperpixelGCN
    from geoseg.superpixels import n_node_features

    lc_name = json.loads(Path(tiny_models["landcover"]).read_text())["name"]
    width = n_node_features(0, 5)
    cards_for = {}
    for cnn in (lc_name, "some-teacher"):
        torch.manual_seed(0)
        gcn = SuperpixelGCN(in_features=width, n_classes=6, hidden=8, n_layers=2, inputs="colour_prior")
        torch.nn.init.normal_(gcn.out.lin.weight)  # a correction that changes classes (zero at init)
        cards_for[cnn] = cards.save_model(gcn, {
            "name": "landcover-gcn-fast", "task": "gcn", "architecture": "SuperpixelGCN", "cnn": cnn,
            "arch_kwargs": {"in_features": width, "n_classes": 6, "hidden": 8, "n_layers": 2,
                            "inputs": "colour_prior"},
            "classes": cards.LANDCOVER_CLASSES, "normalisation": {"mean": [0, 0, 0], "std": [1, 1, 1]},
            "graph": {"pixels_per_segment": 128}, "fusion": {"alpha": 0.0},
        }, tmp_path / cnn)

    def no_features(self, images):
        raise AssertionError("feature maps computed for a GCN that does not read them")

    monkeypatch.setattr(TileModel, "probabilities_and_features", no_features)
    scene = data_root() / "buildings" / "kampala" / "kampala_z19_2.tif"
    runs = {}
    for name, models in (("none", dict(tiny_models)), ("gcn", dict(tiny_models, gcn=str(cards_for[lc_name])))):
        report = predict_scene(scene, tmp_path / name, options(models, buildings=False, refine=name))
        with rasterio.open(tmp_path / name / "classmap.tif") as src:
            runs[name] = src.read(1)
        assert not any("GCN" in w for w in report["warnings"])
    assert report["models"]["gcn"]["name"] == "landcover-gcn-fast"
    assert (runs["gcn"] != runs["none"]).mean() > 0.01  # the GCN did refine
    with pytest.warns(UserWarning, match="GCN refinement skipped"):
        other = predict_scene(scene, tmp_path / "other",
                              options(dict(tiny_models, gcn=str(cards_for["some-teacher"])), buildings=False))
    assert any("some-teacher's probabilities" in w for w in other["warnings"])


def test_a_gcn_card_with_unknown_inputs_is_a_clear_error(tiny_models, tmp_path):
    card = json.loads(Path(tiny_models["gcn"]).read_text())
    card["arch_kwargs"]["inputs"] = "colours"
    (tmp_path / "gcn").mkdir()
    (tmp_path / "gcn" / Path(tiny_models["gcn"]).name).write_text(json.dumps(card))
    scene = data_root() / "buildings" / "kampala" / "kampala_z19_2.tif"
    with pytest.raises(PredictError, match="inputs must be one of"):
        predict_scene(scene, tmp_path / "out", options(dict(tiny_models, gcn=str(tmp_path / "gcn")), buildings=False))
    assert not (tmp_path / "out" / "classmap.tif").exists()


def test_a_disk_too_small_for_every_heads_accumulators_fails_before_any_head_runs(tiny_models, tmp_path,
                                                                                  monkeypatch):
    """Each blending writer checked its own space as it was made: a scene whose building
    accumulators did not fit failed only after its land cover had run (minutes on a big scene).
    The run now adds up every head's accumulators (the land cover's stays open for the class map
    while the building model's are filled) before any head runs."""
    import errno
    import shutil

    from geoseg import pipeline
    from tiles import stitch

    scene = crop(SCENE, tmp_path / "scene.tif", Window(0, 0, 700, 600))
    heads = load_heads(options(tiny_models), "cpu", [])
    with Scene(scene) as src:
        grid = {"width": src.width, "height": src.height, "native_gsd": src.native_gsd, "bands": src.bands}
    plans = _head_plans(scene, heads, options(tiny_models), grid["native_gsd"], grid)
    need = {task: stitch.accumulator_bytes(plan.width, plan.height, len(heads[task][1]["classes"]))
            for task, plan in plans.items()}
    # room for the land cover's accumulators, not for the building model's as well
    real = shutil.disk_usage
    monkeypatch.setattr(stitch.shutil, "disk_usage", lambda p: real(p)._replace(free=need["landcover"] + 1000))
    ran = []
    real_run_head = pipeline.run_head
    monkeypatch.setattr(pipeline, "run_head", lambda *a, **k: ran.append(a) or real_run_head(*a, **k))
    with pytest.raises(OSError) as err:
        predict_scene(scene, tmp_path / "out", options(tiny_models))
    assert err.value.errno == errno.ENOSPC and ran == []
    assert f"need {stitch.size_words(sum(need.values()))} on " in str(err.value)
    assert f"(land cover {stitch.size_words(need['landcover'])}, buildings " in str(err.value)
    assert str(tmp_path / "out") in str(err.value) and not (tmp_path / "out").exists()


def test_a_rerun_leaves_no_sidecar_of_the_old_outputs_to_be_read_over_the_new(tiny_models, tmp_path):
    """A GIS keeps an edited GeoPackage's pending changes in ``-wal`` beside it, and GDAL's statistics in
    ``classmap.tif.aux.xml``. A re-run replaced the files but not those: the next reader applied the old
    edit onto the new GeoPackage (41 of 60 buildings, integrity check failed) and read the old class
    map's statistics as the new one's."""
    import sqlite3

    scene = crop(SCENE, tmp_path / "scene.tif", Window(0, 0, 512, 512))
    out = tmp_path / "out"
    predict_scene(scene, out, options(tiny_models))
    editor = sqlite3.connect(out / "buildings.gpkg", isolation_level=None)  # QGIS, an edit not yet saved
    for name in ("ST_IsEmpty", "ST_MinX", "ST_MaxX", "ST_MinY", "ST_MaxY"):  # the GeoPackage's triggers call them
        editor.create_function(name, 1, lambda blob: 0)
    editor.execute("PRAGMA journal_mode=WAL")
    editor.execute("PRAGMA wal_autocheckpoint=0")
    editor.execute("DELETE FROM buildings WHERE id > 1")
    (out / "classmap.tif.aux.xml").write_text('<PAMDataset><PAMRasterBand band="1"><Metadata><MDI '
                                              'key="STATISTICS_MAXIMUM">5</MDI></Metadata></PAMRasterBand></PAMDataset>')
    assert (out / "buildings.gpkg-wal").stat().st_size > 0
    try:
        report = predict_scene(scene, out, options(tiny_models, regularize=True))
    finally:
        editor.close()
    assert not (out / "buildings.gpkg-wal").exists() and not (out / "classmap.tif.aux.xml").exists()
    reader = sqlite3.connect(f"file:{out / 'buildings.gpkg'}?mode=ro", uri=True)
    assert reader.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert reader.execute("SELECT COUNT(*) FROM buildings").fetchone()[0] == report["counts"]["buildings"] > 1
    with rasterio.open(out / "classmap.tif") as src:
        assert "STATISTICS_MAXIMUM" not in src.tags(1)


def test_class_map_written_beside_the_building_model_gives_the_same_outputs(tiny_models, tmp_path, monkeypatch):
    """The class map is written on a thread while the building model runs; the files must be what
    the one-stage-after-the-other order writes, and a failure there must surface, leaving nothing."""
    from geoseg import pipeline

    scene = crop(SCENE, tmp_path / "scene.tif", Window(0, 0, 700, 600))
    outs = {}
    for overlap in (False, True):
        monkeypatch.setattr(pipeline, "OVERLAP_CLASSMAP", overlap)
        outs[overlap] = tmp_path / f"overlap-{overlap}"
        predict_scene(scene, outs[overlap], options(tiny_models))
    with rasterio.open(outs[False] / "classmap.tif") as a, rasterio.open(outs[True] / "classmap.tif") as b:
        assert np.array_equal(a.read(), b.read()) and a.colormap(1) == b.colormap(1)
    assert (json.loads((outs[False] / "buildings.geojson").read_text())
            == json.loads((outs[True] / "buildings.geojson").read_text()))
    reports = [json.loads((outs[o] / "report.json").read_text()) for o in (False, True)]
    assert reports[0]["counts"] == reports[1]["counts"]

    def broken(*args, **kwargs):
        raise OSError("disk full while writing the class map")

    monkeypatch.setattr(pipeline, "write_classmap", broken)
    with pytest.raises(OSError, match="disk full"):
        predict_scene(scene, tmp_path / "broken", options(tiny_models))
    assert not (tmp_path / "broken").exists()  # no partial outputs, no staging folder, not the folder it made


def test_a_batch_loads_each_model_once_and_reloads_an_edited_card(tiny_models, tmp_path):
    """The next scene of a batch reuses the loaded heads; a card rewritten on disk is read again."""
    import shutil

    from geoseg.heads import load_heads

    folder = tmp_path / "buildings"
    shutil.copytree(Path(tiny_models["buildings"]).parent, folder)
    card_path = folder / Path(tiny_models["buildings"]).name
    opts = options({"buildings": str(card_path)}, classmap=False)
    first = load_heads(opts, "cpu", [])["buildings"]
    again = load_heads(opts, "cpu", [])["buildings"]
    assert again[0] is first[0] and again[1] == first[1]
    again[1]["name"] = "edited by a caller"  # each scene gets its own card dict
    assert load_heads(opts, "cpu", [])["buildings"][1]["name"] == first[1]["name"]
    card = json.loads(card_path.read_text())
    card_path.write_text(json.dumps(dict(card, name="renamed")))
    os.utime(card_path, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))  # a new mtime even on coarse clocks
    reloaded = load_heads(opts, "cpu", [])["buildings"]
    assert reloaded[0] is not first[0] and reloaded[1]["name"] == "renamed"


def test_the_service_standby_preloads_both_profiles_shipped_models():
    """``run_pipeline.warm`` (called by a standby worker) leaves every shipped head loaded, so a
    job's ``load_heads`` finds them in memory."""
    from api.pipeline_runner import run_pipeline
    from geoseg import heads as heads_module
    from geoseg.infer import resolve_device

    run_pipeline.warm()
    device = resolve_device("auto")  # what warm() and a job with default options load on
    for profile in ("accurate", "fast"):
        before = dict(heads_module._HEADS)
        heads = heads_module.load_heads(PredictOptions(profile=profile, device=device), device, [])
        assert set(heads) == {"landcover", "gcn", "buildings"}
        assert heads_module._HEADS == before  # nothing new was loaded
        cached = [head for head, _ in before.values()]
        assert all(any(module is c[0] for c in cached) for module, _ in heads.values())


@settings(max_examples=200, deadline=None)
@given(st.integers(40, 3000), st.integers(40, 3000), st.sampled_from([64, 128, 256, 300, 320, 496, 512, 1024]),
       st.sampled_from([0, 32, 50, 64]), st.sampled_from([None, 256, 512, 1024]), st.sampled_from([None, 10, 16, 40]))
def test_model_windows_hold_their_tile_and_start_on_the_32_px_grid(width, height, size, overlap, model_window,
                                                                   context):
    """The pipeline's context windows (tiles.grid.context_window): each holds its whole tile, and for tile
    sizes that are multiples of 32 starts on a multiple of 32 and reaches past the raster by
    less than 32 px where the raster is longer (--tile-size 496 or --context 10 must not crash)."""
    assume(overlap < size // 2)  # PredictOptions.check
    side_x = stretched_size(width, size, overlap, TILE_MULTIPLE, align=TILE_MULTIPLE)
    side_y = stretched_size(height, size, overlap, TILE_MULTIPLE, align=TILE_MULTIPLE)
    tiles = fit_tiles(tile_grid(width, height, side_x, overlap, size_y=side_y, align=TILE_MULTIPLE), width, height)
    my, mx = context_margins(tiles, width, height, model_window, context)
    shapes = set()
    for t in tiles:
        window, (rows, cols) = context_window(t.read, my, mx, width, height)
        shapes.add((window.height, window.width))
        if t.read.width % TILE_MULTIPLE == 0:
            assert window.col_off % TILE_MULTIPLE == 0
        if t.read.height % TILE_MULTIPLE == 0:
            assert window.row_off % TILE_MULTIPLE == 0
        assert 0 <= rows.start and rows.stop <= window.height and rows.stop - rows.start == t.read.height
        assert 0 <= cols.start and cols.stop <= window.width and cols.stop - cols.start == t.read.width
        assert window.col_off + window.width < max(width, window.width) + TILE_MULTIPLE
        assert window.row_off + window.height < max(height, window.height) + TILE_MULTIPLE
    assert len(shapes) == 1  # one window shape: tiles batch together


def test_buildings_stay_inside_the_input_when_the_working_grid_overhangs(tmp_path):
    """A 0.3 m scene run at 0.45 m: the working grid's last pixels reach past the raster's far
    edges; the polygons are cut at the raster's outline (nothing outside the input)."""
    scene = crop(SCENE, tmp_path / "crop.tif", Window(0, 0, 384, 320))  # 384 px * 0.2976 m / 0.45 m is not whole
    models = make_tiny_models(tmp_path / "models", buildings_gsd=0.45)
    report = predict_scene(scene, tmp_path / "out", options(models, refine="none", classmap=False))
    assert report["gsd"]["working_m"]["buildings"] == pytest.approx(0.45, rel=0.01)
    with rasterio.open(scene) as src:
        footprint = shapely.box(*src.bounds)
        lonlat = shapely.box(*transform_bounds(src.crs, "EPSG:4326", *src.bounds, densify_pts=21))
    gpkg = gpd.read_file(tmp_path / "out" / "buildings.gpkg")
    assert len(gpkg) >= 3
    touching = [g for g in gpkg.geometry if g.distance(footprint.exterior) < 0.01]
    assert touching, "the crop's edge must cut some buildings for this test to mean anything"
    assert all(footprint.buffer(1e-6).contains(g) for g in gpkg.geometry)
    gj = gpd.read_file(tmp_path / "out" / "buildings.geojson")
    assert all(lonlat.buffer(1e-9).contains(g) for g in gj.geometry)


def test_report_json_is_moved_into_place_last_and_an_old_one_first_removed(tiny_models, tmp_path, monkeypatch):
    """report.json marks a finished folder: while a re-run's files are moved into a folder that holds an
    earlier run, no report.json may stand beside a mix of old and new files."""
    a = crop(SCENE, tmp_path / "a.tif", Window(0, 0, 128, 128))
    out = tmp_path / "out"
    opts = options(tiny_models, refine="none")
    predict_scene(a, out, opts)
    moves: list[tuple[str, bool]] = []
    real_replace = os.replace

    def replace(src, dst):
        if Path(dst).parent == out:
            moves.append((Path(dst).name, (out / "report.json").exists()))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    predict_scene(a, out, opts)
    assert [name for name, _ in moves][-1] == "report.json" and len(moves) == 5  # with classmap.qml
    assert not any(report_there for _, report_there in moves)


def test_each_stage_has_the_share_of_the_bar_its_pixels_cost(scene_run, tiny_models):
    """Fixed weights gave the land-cover head 7 of 13.3 parts of the bar (with the GCN) on a grid a
    quarter of the building head's here (0.6 m against 0.3 m; 1.1 m with the shipped cards): half
    the bar went by in a tenth of the time, and the building head crawled through the rest."""
    _, _, progress = scene_run
    opts = options(tiny_models)
    heads = load_heads(opts, "cpu", [])
    with Scene(SCENE) as scene:
        grid = {"width": scene.width, "height": scene.height, "native_gsd": scene.native_gsd, "bands": scene.bands}
    work = _stage_work(SCENE, heads, _head_plans(SCENE, heads, opts, grid["native_gsd"], grid), opts, "cpu", grid)
    assert work.landcover_px == head_plan(SCENE, heads["landcover"][1], opts, grid["native_gsd"], grid).model_input_px
    weights = stage_weights(work, "cpu", opts.profile)
    total = sum(weights.values())
    landcover_done = max(f for f, s in progress if s == "landcover")
    assert landcover_done == pytest.approx(weights["landcover"] / total)
    assert weights["landcover"] < weights["buildings"]


def test_each_model_stage_is_announced_when_it_starts(scene_run):
    # a scene whose land-cover head ran in one batch said nothing until that head was done: a
    # service job showed stage 'starting' at 0 through the whole land-cover inference
    _, _, progress = scene_run
    assert progress[0] == (0.0, "landcover"), progress[:3]


def test_a_run_changes_no_warning_filters_on_any_thread(tiny_models, tmp_path, monkeypatch):
    """The class map is written on a thread beside the building head, and a Dask worker with several
    threads runs several scenes at once. Code on those threads silenced warnings with
    warnings.catch_warnings (rasterio's about a non-georeferenced input, the ONNX tracer's, numpy's
    about vertices off the Earth), which swaps the process-wide filter list: two threads in such
    blocks at once lose or leak each other's filters. Every change to the filters while a
    non-georeferenced PNG is predicted (class map and buildings, ONNX graphs exported afresh) is
    made by geoseg's own code is recorded: there must be none (libraries' own are theirs)."""
    import sys

    monkeypatch.setenv("GEOSEG_CACHE", str(tmp_path / "cache"))  # the ONNX export runs
    with rasterio.open(SCENE) as src:
        pixels = src.read([1, 2, 3], window=Window(0, 0, 256, 192))
    png = tmp_path / "plain.png"
    Image.fromarray(np.moveaxis(pixels, 0, -1)).save(png)
    changes: list[str] = []

    def record(what: str, frame) -> None:  # ``frame``: the code that makes the change
        module = frame.f_globals.get("__name__", "")
        if module.split(".")[0] in ("geoseg", "tiles", "api"):
            changes.append(f"{what} in {module}, line {frame.f_lineno}")

    class RecordedCatch(warnings.catch_warnings):
        def __enter__(self):
            record("catch_warnings", sys._getframe(1))
            return super().__enter__()

    def recorded(name):
        real = getattr(warnings, name)

        def change(*args, **kwargs):
            record(name, sys._getframe(1))
            return real(*args, **kwargs)
        return change

    monkeypatch.setattr(warnings, "catch_warnings", RecordedCatch)
    for name in ("filterwarnings", "simplefilter", "resetwarnings"):
        monkeypatch.setattr(warnings, name, recorded(name))
    report = predict_scene(png, tmp_path / "out", options(tiny_models, refine="none", runtime="onnx"))
    assert report["counts"]["classmap_pixels"] and "buildings" in report["counts"]
    assert any("not georeferenced" in w for w in report["warnings"])
    assert list((tmp_path / "cache" / "onnx").glob("*.onnx"))
    assert changes == []


def test_two_batch_jobs_on_one_worker_s_threads_each_return_their_own_notes(tiny_models, tmp_path, monkeypatch):
    """A Dask worker with several threads (``dask worker`` gives one per core) runs several
    ``geoseg predict`` batch jobs at once. Each job caught its notes with warnings.catch_warnings,
    which is process-wide: the second job's block took the first job's notes, and the first job's
    input was reported without any. Here job a enters first and finishes while job b runs."""
    import threading

    from geoseg import pipeline
    from geoseg.commands.predict import _predict_into

    with rasterio.open(SCENE) as src:
        pixels = np.moveaxis(src.read([1, 2, 3], window=Window(0, 0, 160, 128)), 0, -1)
    Image.fromarray(pixels).save(tmp_path / "a.png")  # not georeferenced
    Image.fromarray(pixels).save(tmp_path / "b.png")
    (tmp_path / "b.pgw").write_text("0.3\n0\n0\n-0.3\n500000.15\n9000000.15\n")  # a world file, no CRS
    a_in, b_in, a_done = threading.Event(), threading.Event(), threading.Event()
    real_load_heads = pipeline.load_heads

    def load_heads_in_turn(*args, **kwargs):  # inside predict_scene, so inside a job's catch block
        if threading.current_thread().name == "a":
            a_in.set()
            assert b_in.wait(60)  # b has entered too
        else:
            b_in.set()
            assert a_done.wait(120)  # a finishes while b runs
        return real_load_heads(*args, **kwargs)

    monkeypatch.setattr(pipeline, "load_heads", load_heads_in_turn)
    said: dict[str, list[str]] = {}
    opts = options(tiny_models, classmap=False, refine="none")

    def job(name: str) -> None:
        try:
            said[name] = _predict_into(opts, tmp_path / f"{name}.png", tmp_path / f"out-{name}")
        finally:
            if name == "a":
                a_done.set()

    a, b = threading.Thread(target=job, args=("a",), name="a"), threading.Thread(target=job, args=("b",), name="b")
    a.start()
    assert a_in.wait(60)
    b.start()
    a.join(180)
    b.join(180)
    assert [n for n in said["a"] if "input is not georeferenced" in n] and not [n for n in said["a"] if "world file" in n]
    assert [n for n in said["b"] if "world file" in n] and not [n for n in said["b"] if "not georeferenced" in n]


def test_a_landcover_model_without_a_building_class_turns_the_cue_off(tiny_models, tmp_path):
    """A user's land-cover model with its own classes (no 'building') beside a building card that
    uses the land-cover cue (the shipped accurate one does) failed at the end of the building head:
    "the building rules use the land-cover cue, but no land-cover head with a 'building' class ran".
    The cue is now off with a warning; without a class map that head is not even run."""
    def copy_card(task: str, **changes) -> str:
        src = Path(tiny_models[task])
        folder = tmp_path / task
        folder.mkdir()
        (folder / src.with_suffix(".pt").name).write_bytes(src.with_suffix(".pt").read_bytes())
        (folder / src.name).write_text(json.dumps(json.loads(src.read_text()) | changes))
        return str(folder / src.name)

    names = ["unlabeled", "built", "paved", "green", "water", "open"]
    models = {"buildings": copy_card("buildings", postprocess={"landcover_threshold": 0.5}),
              "landcover": copy_card("landcover", classes=[{"index": i, "name": n, "colour": "#123456"}
                                                           for i, n in enumerate(names)])}
    crop_path = crop(SCENE, tmp_path / "crop.tif", Window(0, 0, 256, 256))
    for classmap in (True, False):
        report = predict_scene(crop_path, tmp_path / f"out{classmap}", options(models, classmap=classmap,
                                                                                refine="none"))
        assert report["postprocess"]["landcover_threshold"] == 0.0
        assert any("has no 'building' class" in w for w in report["warnings"]), report["warnings"]
        assert ("landcover" in report["models"]) == classmap
    with rasterio.open(tmp_path / "outTrue" / "classmap.tif") as cm:
        assert json.loads(cm.tags()["classes"])["2"] == "paved"


def test_the_shipped_gcn_does_not_refine_a_users_own_land_cover_model(tmp_path, monkeypatch):
    """A user's land-cover model of the shipped architecture and classes (`geoseg train landcover`,
    then `--model landcover=...`) passed the GCN's shape check, so the shipped GCN, fitted on the
    shipped CNN's features, "refined" a map from features it had never seen. It is skipped with a
    warning now; a copy of the shipped card and weights elsewhere is still the shipped model."""
    import shutil

    import torch

    from geoseg import card as cards
    from geoseg.heads import load_heads
    from geoseg.models.gcn import SuperpixelGCN
    from geoseg.superpixels import n_node_features

    tiny = make_tiny_models(tmp_path / "tiny")
    weights = tmp_path / "weights"
    weights.mkdir()
    student = json.loads(Path(tiny["landcover"]).read_text())
    name = "landcover-attresunet-fast"
    shutil.copy(Path(tiny["landcover"]).parent / student["weights"], weights / f"{name}.pt")
    (weights / f"{name}.json").write_text(json.dumps(dict(student, name=name, weights=f"{name}.pt")))
    cards.save_model(SuperpixelGCN(in_features=n_node_features(8, 5), n_classes=6, hidden=8, n_layers=2), {
        "name": "landcover-gcn-fast", "task": "gcn", "architecture": "SuperpixelGCN", "cnn": name,
        "arch_kwargs": {"in_features": n_node_features(8, 5), "n_classes": 6, "hidden": 8, "n_layers": 2},
        "classes": cards.LANDCOVER_CLASSES, "normalisation": student["normalisation"],
    }, weights)
    monkeypatch.setattr(cards, "weights_dir", lambda: weights)
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in (f"{name}.json", f"{name}.pt"):
        shutil.copy(weights / f, copy / f)
    model, card = cards.load_model(weights / f"{name}.json")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01)
    retrained = cards.save_model(model, {k: v for k, v in card.items() if k != "card_path"}, tmp_path / "mine")

    def run(landcover: Path) -> tuple[dict, list[str]]:
        notes: list[str] = []
        heads = load_heads(PredictOptions(profile="fast", buildings=False, device="cpu",
                                          model_dirs={"landcover": str(landcover)}), "cpu", notes)
        return heads, notes

    heads, notes = run(copy / f"{name}.json")
    assert "gcn" in heads and not notes
    heads, notes = run(retrained)
    assert "gcn" not in heads and any("the shipped GCN was fitted on the shipped" in n for n in notes), notes


def test_the_class_map_thread_does_not_unsilence_the_model_export(tiny_models, tmp_path, monkeypatch):
    """The first run of a model (always, for a user's own) printed "warning: Converting a tensor to a
    Python boolean might cause the trace to be incorrect": the class-map thread entered and left
    ``warnings.catch_warnings`` while the building model's ONNX export, on the main thread, was
    inside its own, and on leaving restored filters without the export's "ignore". The two are
    ordered here as they met in that run (the thread leaves while the export runs)."""
    import threading

    from test_training_card_truth import TINY_U2NET

    from geoseg import card as cards
    from geoseg import classmap
    from geoseg.commands.warning_lines import recorded_warnings
    from geoseg.models.u2net import U2Net

    monkeypatch.setenv("GEOSEG_CACHE", str(tmp_path / "cache"))  # no exported graph yet
    thread_started, export_entered, thread_read = threading.Event(), threading.Event(), threading.Event()
    real_scene, real_export = classmap.Scene, torch.onnx.export

    def scene_after_the_export_began(*args, **kwargs):
        thread_started.set()
        export_entered.wait(30)
        try:
            return real_scene(*args, **kwargs)
        finally:
            thread_read.set()

    def export_while_the_thread_reads(*args, **kwargs):
        if thread_started.is_set():  # the building model's export, the class-map thread running
            export_entered.set()
            thread_read.wait(30)
            time.sleep(0.2)  # the thread leaves whatever it entered around its read
        return real_export(*args, **kwargs)

    monkeypatch.setattr(classmap, "Scene", scene_after_the_export_began)
    monkeypatch.setattr(torch.onnx, "export", export_while_the_thread_reads)
    torch.manual_seed(0)
    u2net = cards.save_model(U2Net(**TINY_U2NET), {
        "name": "tiny-u2net", "task": "buildings", "architecture": "U2Net", "arch_kwargs": TINY_U2NET,
        "classes": cards.BUILDING_CLASSES, "normalisation": {"mean": [0.5] * 3, "std": [0.25] * 3},
        "gsd_m": 0.3, "tile_size": 256}, tmp_path / "u2net")
    models = {"buildings": str(u2net), "landcover": tiny_models["landcover"]}
    crop_path = crop(SCENE, tmp_path / "crop.tif", Window(0, 0, 256, 256))
    with recorded_warnings() as caught:  # as `geoseg predict` shows them, "warning: ..."
        predict_scene(crop_path, tmp_path / "out", options(models, refine="none"))
    assert export_entered.is_set() and thread_read.is_set()
    assert not [w for w in caught if "trace" in str(w.message)], [str(w.message)[:80] for w in caught]


def _card_with_bands(card: str, bands: list[int], folder: Path) -> str:
    """A copy of a tiny model's card (and weights) whose ``bands`` say it was trained on ``bands``."""
    folder.mkdir()
    source = Path(card)
    (folder / source.with_suffix(".pt").name).write_bytes(source.with_suffix(".pt").read_bytes())
    copy = folder / source.name
    copy.write_text(json.dumps(json.loads(source.read_text()) | {"bands": bands}))
    return str(copy)


def test_predict_reads_the_bands_the_model_was_trained_on(tiny_models, tmp_path):
    """A model trained on chips cut with `geoseg tile --bands 4,3,2` (its card's bands 4,3,2) was fed
    the raster's bands 1,2,3: predict ignored the card's bands. Without --bands it reads the card's
    (the report says so), --bands still wins, and two cards naming different bands are one error."""
    rgb = crop(SCENE, tmp_path / "rgb.tif", Window(0, 0, 128, 128))
    with rasterio.open(rgb) as src:
        data, profile = src.read(), src.profile
    xbgr = tmp_path / "xbgr.tif"  # the same pixels stored X, B, G, R without colour labels
    with rasterio.open(xbgr, "w", **(profile | {"count": 4, "photometric": "MINISBLACK", "compress": "deflate"})) as dst:
        dst.write(np.concatenate([np.zeros_like(data[:1]), data[::-1]]))
    mine = _card_with_bands(tiny_models["buildings"], [4, 3, 2], tmp_path / "mine")
    base = {"classmap": False, "refine": "none"}
    report = predict_scene(xbgr, tmp_path / "card", options({"buildings": mine}, **base))
    assert report["bands"] == {"used": [4, 3, 2], "source": "model card test-buildings.json", "count": 4}
    predict_scene(rgb, tmp_path / "plain", options({"buildings": tiny_models["buildings"]}, **base))
    fed = gpd.read_file(tmp_path / "card/buildings.gpkg").geometry.to_wkb().tolist()
    assert fed and fed == gpd.read_file(tmp_path / "plain/buildings.gpkg").geometry.to_wkb().tolist()  # same input
    requested = predict_scene(xbgr, tmp_path / "asked", options({"buildings": mine}, bands=(1, 2, 3), **base))
    assert requested["bands"]["used"] == [1, 2, 3] and requested["bands"]["source"] == "requested"
    other = _card_with_bands(tiny_models["landcover"], [2, 3, 4], tmp_path / "other")
    with pytest.raises(PredictError, match="trained on different bands .*give --bands"):
        predict_scene(xbgr, tmp_path / "both", options({"buildings": mine, "landcover": other}, refine="none"))
    with pytest.raises(PredictError, match="the bands model card test-buildings.json was trained on"):
        predict_scene(rgb, tmp_path / "three", options({"buildings": mine}, **base))


def test_report_names_each_models_headline_metrics_not_its_tuning_history():
    """report.json repeats a card's validation and test figures; the tuning history the shipped
    building card keeps under ``metrics`` (13 KB of it) stays in the card, found by card_sha256."""
    from geoseg.card import read_card, shipped_card_path
    from geoseg.heads import model_summary

    path = shipped_card_path("buildings")
    card = read_card(path) | {"card_path": str(path)}
    summary = model_summary(card)
    assert set(card["metrics"]) > {"val", "test"}  # the card holds more than the report repeats
    assert summary["metrics"] == {"val": card["metrics"]["val"], "test": card["metrics"]["test"]}
    assert len(json.dumps(summary)) < 2000 and summary["card_sha256"]


def test_report_says_how_sure_the_class_map_is_over_its_labelled_pixels(scene_run):
    """report.json's ``classmap_confidence``: the mean of the per-pixel maximum class probability and
    the share under the floor, over exactly the pixels the class map labels (streamed while it is
    written), each a probability."""
    out, report, _ = scene_run
    conf = report["classmap_confidence"]
    with rasterio.open(out / "classmap.tif") as cm:
        labelled = int(np.count_nonzero(cm.read(1)))
    assert conf["pixels"] == labelled == sum(n for c, n in report["counts"]["classmap_pixels"].items() if c != "nodata")
    assert 0.2 <= conf["mean_max_probability"] <= 1  # the top of 5 classes' probabilities is at least 1/5
    assert 0 <= conf["low_confidence_share"] <= 1 and conf["low_confidence_floor"] == 0.5
    # Markov: the mean shortfall 1 - top is at least 0.5 x the share of pixels whose top is under 0.5
    assert conf["low_confidence_share"] * 0.5 <= 1 - conf["mean_max_probability"] + 1e-4


def test_a_failed_run_from_python_leaves_no_folder_and_a_file_for_out_dir_is_named(tmp_path):
    """From Python, an interrupted or failed predict_scene left the out_dir it had made, empty; an out_dir
    that is a file failed with FileExistsError from mkdir."""
    def stop(fraction, stage):
        if stage == "buildings":
            raise KeyboardInterrupt

    fast = PredictOptions(profile="fast", classmap=False, device="cpu")
    with pytest.raises(KeyboardInterrupt):
        predict_scene(SCENE, tmp_path / "new" / "out", fast, progress=stop)
    assert list(tmp_path.iterdir()) == [tmp_path / "new"] and list((tmp_path / "new").iterdir()) == []
    (tmp_path / "kept").mkdir()
    with pytest.raises(KeyboardInterrupt):  # a folder that was there stays
        predict_scene(SCENE, tmp_path / "kept", fast, progress=stop)
    assert (tmp_path / "kept").is_dir() and list((tmp_path / "kept").iterdir()) == []
    (tmp_path / "file").write_text("x")
    with pytest.raises(PredictError, match="file is a file: the outputs go into a folder"):
        predict_scene(SCENE, tmp_path / "file", fast)


def test_a_staging_folder_left_by_a_run_that_is_gone_is_removed_by_the_next(tiny_models, tmp_path):
    """A second Ctrl-C while the class map was still written (or kill -9) left ``.partial-*`` with its
    scratch in the output folder, and later runs there kept it for ever. The next run removes those of
    this host's runs that are gone; a live run's, another host's and an unnamed one stay."""
    import subprocess
    import sys

    from geoseg.staging import make_staging, remove_abandoned

    out = tmp_path / "out"
    out.mkdir()
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                           check=True).stdout.strip()

    def owned_by(folder, owner):
        return folder.rename(folder.with_name(folder.name.rsplit(".", 1)[0] + "." + owner))

    live = make_staging(out)
    assert re.fullmatch(rf"\.partial-[0-9a-f]{{8}}\.{os.getpid()}@[A-Za-z0-9.-]+", live.name), live.name
    host = live.name.rsplit("@", 1)[1]
    gone = owned_by(make_staging(out), f"{ended}@{host}")
    (gone / "classmap_plain.tif").write_bytes(b"x" * 1000)
    elsewhere = owned_by(make_staging(out), f"{ended}@another-host")
    odd = owned_by(make_staging(out), f"{'9' * 10}@{host}")  # no such pid: the system refuses to look
    unnamed = out / ".partial-0badf00d"
    unnamed.mkdir()
    assert remove_abandoned(out) == [gone]
    assert not gone.exists() and all(p.is_dir() for p in (live, elsewhere, odd, unnamed))
    owned_by(live, f"{ended}@{host}")  # as if made by the run that ended: the next predict_scene removes it
    report = predict_scene(crop(SCENE, tmp_path / "s.tif", Window(0, 0, 128, 128)), out,
                           options(tiny_models, buildings=False, refine="none"))
    assert sorted(p.name for p in out.glob(".partial-*")) == sorted([elsewhere.name, odd.name, unnamed.name])
    assert (out / "classmap.tif").is_file() and "report.json" in report["outputs"]
    # another host's is left, but named (a cluster task requeued on another node left it for ever, unsaid)
    assert any(w.startswith(f"{out} holds 1 staging folder of runs on other hosts ({elsewhere.name}): this run "
                            "cannot tell whether they still run") for w in report["warnings"]), report["warnings"]


def test_a_run_that_fails_stops_its_class_map_at_the_next_block(tiny_models, tmp_path, monkeypatch):
    """The class map is written on a thread beside the building model; a run that failed or was
    interrupted there waited for it to finish (15-19 s on a 12288 px scene after Ctrl-C), and a second
    Ctrl-C during that wait left the staging folder behind."""
    import geoseg.pipeline

    blocks: list[float] = []
    real_write = geoseg.pipeline.write_classmap

    def slow_write(*args, **kwargs):
        progress = args[6]

        def counted(fraction):
            blocks.append(fraction)
            time.sleep(0.3)
            progress(fraction)
        return real_write(*args[:6], counted, *args[7:], **kwargs)

    def failing_buildings(*args, **kwargs):
        time.sleep(0.5)  # the class map has begun
        raise RuntimeError("the building model failed")

    monkeypatch.setattr(geoseg.pipeline, "write_classmap", slow_write)
    monkeypatch.setattr(geoseg.pipeline, "run_mean_head", failing_buildings)
    monkeypatch.setattr(geoseg.pipeline, "OVERLAP_CLASSMAP", True)
    scene = crop(data_root() / "buildings" / "kampala" / "kampala_z21_1.tif", tmp_path / "s.tif",
                 Window(0, 0, 2048, 2048))  # four 1024 px blocks of class map
    with pytest.raises(RuntimeError, match="the building model failed"):
        predict_scene(scene, tmp_path / "out", options(tiny_models, refine="none", tile_size=512))
    assert 1 <= len(blocks) < 4, blocks  # 4 blocks of 1024 px: it stopped at the next one
    assert not (tmp_path / "out").exists()
