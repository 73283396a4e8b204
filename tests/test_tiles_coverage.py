"""`geoseg tile --coverage`: only the mapped part of a scene is labelled (tiles.mapped_area).

OSM building labels often cover part of a scene: without a mapped area the unmapped rest was cut
as background (houses nobody traced taught as "no building"). Real scene: kampala_z19_1 (768 x 512
px, 0.3 m, three 256 px columns), its labels, and a coverage polygon over its west half (x < 384 px)
written in lon/lat, so that it is reprojected as label files are.
"""
from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
import shapely
from checks import assert_one_line_error, assert_usage_error
from typer.testing import CliRunner

from geoseg.cli import app

runner = CliRunner()


def _scene(buildings_dir: Path) -> Path:
    return buildings_dir / "kampala/kampala_z19_1.tif"


def _half(buildings_dir: Path, path: Path, side: str) -> Path:
    """A GeoJSON (lon/lat) of the west or east half of kampala_z19_1, 20 m past its other edges."""
    with rasterio.open(_scene(buildings_dir)) as src:
        b, crs = src.bounds, src.crs
    mid = (b.left + b.right) / 2
    box = (shapely.box(b.left - 20, b.bottom - 20, mid, b.top + 20) if side == "west"
           else shapely.box(mid, b.bottom - 20, b.right + 20, b.top + 20))
    gpd.GeoDataFrame({"name": [side]}, geometry=[box], crs=crs).to_crs(4326).to_file(path)
    return path


def _tile(buildings_dir: Path, out: Path, *extra: str):
    return runner.invoke(app, ["tile", str(_scene(buildings_dir)), "--out", str(out), "--size", "256",
                               "--labels", str(buildings_dir / "kampala/labels.geojson"), *extra])


def _chips(out: Path) -> dict[str, dict]:
    return {f["properties"]["chip_id"]: f["properties"]
            for f in json.loads((out / "index.geojson").read_text())["features"]}


def _label(out: Path, props: dict) -> np.ndarray:
    with rasterio.open(out / props["label"]) as src:
        return src.read(1)


def test_pixels_outside_the_coverage_are_ignored_and_windows_outside_it_are_skipped(buildings_dir, tmp_path):
    plain, mapped = tmp_path / "plain", tmp_path / "mapped"
    assert _tile(buildings_dir, plain).exit_code == 0
    result = _tile(buildings_dir, mapped, "--coverage", str(_half(buildings_dir, tmp_path / "west.geojson", "west")))
    assert result.exit_code == 0, result.output
    assert "6 windows (4 ok, 0 empty, 2 skipped)" in result.output
    before, after = _chips(plain), _chips(mapped)
    assert all(p["status"] == "ok" and "mapped_fraction" not in p for p in before.values())  # as ever without it
    for chip_id, props in after.items():
        col = props["col"]
        if col == 2:  # x 512..768: wholly east of the mapped half, not written
            assert props["status"] == "skipped" and props["image"] is None and props["label"] is None
            # valid enough (--min-valid 0.5): skipped for the coverage alone
            assert props["mapped_fraction"] == 0 and props["valid_fraction"] > 0.9
            assert not (mapped / "images" / f"{chip_id}.tif").exists()
            assert not (mapped / "labels" / f"{chip_id}.tif").exists()
            continue
        old, new = _label(plain, before[chip_id]), _label(mapped, props)
        if col == 0:  # wholly mapped: the same label raster and count as without --coverage
            np.testing.assert_array_equal(new, old)
            assert props["n_objects"] == before[chip_id]["n_objects"]
            continue
        # x 256..512: the mapped half ends at x 384, column 128 of the chip
        np.testing.assert_array_equal(new[:, :128], old[:, :128])
        assert (new[:, 128:] == 255).all() and np.isin(old[:, 128:], (1, 2)).any()
        assert props["mapped_fraction"] == 0.5 or abs(props["mapped_fraction"] - 0.5) < 0.002
        assert 0 < props["n_objects"] < before[chip_id]["n_objects"]  # the buildings of the east half not counted


def test_another_coverage_cuts_the_scene_again_with_a_note(buildings_dir, tmp_path):
    """The coverage is part of the chip set's options: a re-run with another (or none) does not keep
    the chips of the first silently; an edited coverage file cuts the scene again too."""
    out = tmp_path / "chips"
    west = _half(buildings_dir, tmp_path / "west.geojson", "west")
    east = _half(buildings_dir, tmp_path / "east.geojson", "east")
    assert _tile(buildings_dir, out, "--coverage", str(west)).exit_code == 0
    (key,) = [json.loads(p.read_text()) for p in (out / "parts").glob("*/options.json")]
    assert f"coverage {west}" in key[2]
    again = _tile(buildings_dir, out, "--coverage", str(west))
    assert again.exit_code == 0 and "1 already done" in again.output
    other = _tile(buildings_dir, out, "--coverage", str(east))
    assert other.exit_code == 0 and "0 already done" in other.output, other.output
    assert ("note: kampala_z19_1.tif: cut before with labels labels.geojson --coverage west.geojson, now with labels "
            "labels.geojson --coverage east.geojson") in other.stderr
    chips = _chips(out)
    assert len(chips) == 6  # listed once
    assert {p["col"]: p["status"] for p in chips.values()} == {0: "skipped", 1: "ok", 2: "ok"}
    assert not (out / "images/kampala_z19_1_r000_c000.tif").exists()  # the west cut's chip is gone, not left stale
    assert not (out / "labels/kampala_z19_1_r000_c000.tif").exists()
    _half(buildings_dir, east, "west")  # the file edited in place
    edited = _tile(buildings_dir, out, "--coverage", str(east))
    assert "kampala_z19_1.tif: east.geojson changed since it was cut, cut again" in edited.stderr, edited.output
    assert {p["col"]: p["status"] for p in _chips(out).values()} == {0: "ok", 1: "ok", 2: "skipped"}
    plain = _tile(buildings_dir, out)
    assert plain.exit_code == 0 and "--coverage east.geojson, now with labels labels.geojson" in plain.stderr
    assert all(p["status"] == "ok" and "mapped_fraction" not in p for p in _chips(out).values())


def test_a_bad_coverage_is_one_line(buildings_dir, tmp_path):
    """A missing file, a file with no polygon (points, an empty layer) before OUT is touched, and a
    coverage far from the scene (the scene's one failure line): never every window skipped, exit 0."""
    with rasterio.open(_scene(buildings_dir)) as src:
        crs, b = src.crs, src.bounds
    points = tmp_path / "points.gpkg"
    gpd.GeoDataFrame(geometry=[shapely.Point(b.left + 10, b.bottom + 10)], crs=crs).to_file(points)
    empty = tmp_path / "empty.geojson"
    empty.write_text('{"type": "FeatureCollection", "features": []}')
    for given, words in ((tmp_path / "nope.gpkg", ("--coverage", "nope.gpkg: no such file or folder")),
                         (points, ("points.gpkg holds Point features, not polygons",)),
                         (empty, ("empty.geojson holds no polygon",))):
        out = tmp_path / f"out_{given.stem}"
        assert_one_line_error(_tile(buildings_dir, out, "--coverage", str(given)), "tile", *words)
        assert not out.exists()
    far = tmp_path / "far.gpkg"  # 1 km north of the scene
    gpd.GeoDataFrame(geometry=[shapely.box(b.left, b.top + 1000, b.right, b.top + 1200)], crs=crs).to_file(far)
    result = _tile(buildings_dir, tmp_path / "far", "--coverage", str(far))
    assert result.exit_code == 1, result.output
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("geoseg tile: error: ")]
    assert "kampala_z19_1.tif" in line and "the --coverage area (far.gpkg) does not overlap kampala_z19_1.tif" in line
    assert not (tmp_path / "far/images").exists()
    masks = runner.invoke(app, ["tile", str(tmp_path), "--target", "landcover", "--out", str(tmp_path / "lc"),
                                "--coverage", str(far)])
    assert_usage_error(masks, "tile", "--coverage with --target landcover needs --labels-class-field")


def test_vector_landcover_is_unlabeled_outside_the_coverage(buildings_dir, tmp_path):
    """Land cover from class polygons takes the mapped area as buildings do: class 0 (unlabeled) outside."""
    scene = tmp_path / "scenes/scene.tif"
    scene.parent.mkdir()
    scene.write_bytes((buildings_dir / "kampala/kampala_z19_2.tif").read_bytes())  # 256 x 256 px
    with rasterio.open(scene) as src:
        b, crs, valid = src.bounds, src.crs, src.dataset_mask() > 0
    labels = tmp_path / "landcover.gpkg"
    gpd.GeoDataFrame({"class": ["trees"]}, geometry=[shapely.box(*b).buffer(10)], crs=crs).to_file(labels)
    (tmp_path / "classes.json").write_text(json.dumps([{"index": 0, "name": "unlabeled"}, {"index": 1, "name": "trees"},
                                                                 {"index": 2, "name": "fields"}]))
    north = tmp_path / "north.gpkg"  # rows 0..127
    gpd.GeoDataFrame(geometry=[shapely.box(b.left - 5, (b.bottom + b.top) / 2, b.right + 5, b.top + 5)],
                     crs=crs).to_file(north)
    out = tmp_path / "chips"
    result = runner.invoke(app, ["tile", str(scene.parent), "--target", "landcover", "--labels", str(labels),
                                 "--labels-class-field", "class", "--out", str(out), "--size", "128",
                                 "--coverage", str(north)])
    assert result.exit_code == 0, result.output
    chips = _chips(out)
    assert {p["row"]: p["status"] for p in chips.values()} == {0: "ok", 1: "skipped"}
    full = np.zeros((256, 256), np.uint8)
    for props in chips.values():
        if props["label"]:
            x, y, w, h = props["window"]
            full[y:y + h, x:x + w] = _label(out, props)
    expected = np.zeros((256, 256), np.uint8)
    expected[:128] = 1
    expected[~valid] = 0
    np.testing.assert_array_equal(full, expected)
