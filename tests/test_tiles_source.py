"""GSD of real rasters in many CRSs, band rules, validity masks, resampling to a GSD."""
from __future__ import annotations

import math
import os
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from PIL import Image
from pyproj import Transformer
from rasterio.enums import ColorInterp
from rasterio.windows import Window

import tiles.palette
from tiles.errors import UnsupportedRaster
from tiles.gsd import dataset_gsd_m, pixel_size_m
from tiles.normalize import parse_bands
from tiles.source import Scene


def full(scene: Scene) -> tuple[np.ndarray, np.ndarray]:
    return scene.read(Window(0, 0, scene.width, scene.height))


def centre_lat(ds) -> float:
    x, y = ds.transform @ (ds.width / 2, ds.height / 2)
    return Transformer.from_crs(ds.crs, 4326, always_xy=True).transform(x, y)[1]


def test_gsd_geographic_is_metres_at_the_scene_latitude(rasters_dir: Path):
    with rasterio.open(rasters_dir / "rasterio/world.rgb.tif") as ds:
        dx, dy = pixel_size_m(ds.crs, ds.transform, ds.width, ds.height)
        lat = ds.transform.f + ds.transform.e * ds.height / 2
        assert dx == pytest.approx(ds.res[0] * 111_320 * math.cos(math.radians(lat)), rel=0.01)
        assert dy == pytest.approx(ds.res[1] * 110_574, rel=0.01)


def test_gsd_web_mercator_is_corrected_for_latitude(rasters_dir: Path):
    with rasterio.open(rasters_dir / "rasterio/cogeo.tif") as ds:
        expected = ds.res[0] * math.cos(math.radians(centre_lat(ds)))
        assert dataset_gsd_m(ds) == pytest.approx(expected, rel=0.005)
        assert abs(dataset_gsd_m(ds) - ds.res[0]) > 0.01 * ds.res[0]  # CRS units are not ground metres


def test_gsd_custom_wkt_equals_epsg_twin(rasters_dir: Path):
    with rasterio.open(rasters_dir / "rasterio/RGB.byte.tif") as a, rasterio.open(rasters_dir / "rasterio/RGB2.byte.tif") as b:
        assert a.crs.to_epsg() == 32618 and b.crs.to_epsg() is None  # RGB2 carries a custom WKT
        assert dataset_gsd_m(a) == pytest.approx(300, rel=0.005)
        assert dataset_gsd_m(b) == pytest.approx(dataset_gsd_m(a), rel=1e-6)


def test_gsd_esri_wkt_and_geostationary(rasters_dir: Path):
    with rasterio.open(rasters_dir / "rasterio/test_esri_wkt.tif") as ds:
        assert dataset_gsd_m(ds) == pytest.approx(ds.res[0], rel=0.02)
    with rasterio.open(rasters_dir / "rasterio/goes.tif") as ds:
        g = dataset_gsd_m(ds)
        assert g is not None and math.isfinite(g) and g > ds.res[0]  # off-nadir pixels are larger


def rotated_copy(src: Path, dst: Path, degrees: float) -> Path:
    with rasterio.open(src) as ds:
        profile = ds.profile
        profile.update(transform=ds.transform @ Affine.rotation(degrees))
        with rasterio.open(dst, "w", **profile) as out:
            out.write(ds.read())
    return dst


def test_rotated_raster_gsd_and_north_up_resampling(rasters_dir: Path, tmp_path: Path):
    src = rasters_dir / "rasterio/RGB.byte.tif"
    rot = rotated_copy(src, tmp_path / "rot.tif", 30)
    with rasterio.open(src) as a, rasterio.open(rot) as b:
        assert not b.transform.is_rectilinear
        assert dataset_gsd_m(b) == pytest.approx(dataset_gsd_m(a), rel=2e-3)
    with Scene(src) as plain, Scene(rot, gsd=600) as scene:
        assert scene.is_warped and scene.transform.b == 0 and scene.transform.d == 0
        assert scene.gsd == pytest.approx(600, rel=1e-3)
        _, valid = full(scene)
        _, valid0 = full(plain)
        # same ground, at 2x coarser pixels: valid ground area preserved
        assert valid.sum() * 4 == pytest.approx(valid0.sum(), rel=0.03)


def test_a_lonlat_grid_of_squashed_pixels_is_resampled_though_its_mean_gsd_is_the_target(tmp_path: Path):
    """Pixels square in degrees are cos(latitude) narrower east-west: at 60 N, 0.21 x 0.42 m, whose
    geometric mean (0.297 m) is within 2 % of a 0.3 m model's GSD. The grid was read as it was, and the
    building model saw squashed buildings (17 % less building area than the same ground in UTM)."""
    from geoseg.paths import data_root

    degrees = 3.77e-6
    placed = tmp_path / "n60.tif"
    with rasterio.open(data_root() / "buildings" / "zanzibar" / "zanzibar_z19_1.tif") as src:
        pixels = src.read((1, 2, 3), window=Window(0, 0, 256, 256))
    with rasterio.open(placed, "w", driver="GTiff", width=256, height=256, count=3, dtype="uint8", crs="EPSG:4326",
                       transform=Affine(degrees, 0, 10.0, 0, -degrees, 60.0)) as dst:
        dst.write(pixels)
    with Scene(placed, gsd=0.3) as scene:
        east, north = pixel_size_m(scene.crs, scene.transform, scene.width, scene.height)
        across = pixel_size_m(scene.crs, scene.src_transform, scene.src_width, scene.src_height)
        assert abs(scene.native_gsd - 0.3) / 0.3 < 0.02 and across[1] / across[0] == pytest.approx(2, rel=0.01)
        assert scene.is_warped and (scene.width, scene.height) == (180, 359)
        assert east == pytest.approx(0.3, rel=0.01) and north == pytest.approx(0.3, rel=0.01)
        image, valid = full(scene)
        assert valid.mean() > 0.99 and image.std() > 10  # the scene's pixels, on ground-square ones


def test_no_crs_has_unknown_gsd_and_refuses_resampling(rasters_dir: Path):
    png = rasters_dir / "deepforest_neon/2019_YELL_2_541000_4977000_image_crop.png"
    with Scene(png) as scene:
        assert scene.gsd is None and scene.crs is None
    with pytest.raises(UnsupportedRaster, match="not georeferenced"):
        Scene(png, gsd=0.3)


def test_nodata_value_mask(rasters_dir: Path):
    path = rasters_dir / "rasterio/RGB.byte.tif"
    with Scene(path) as scene, rasterio.open(path) as ds:
        _, valid = full(scene)
        expected = (ds.read() != ds.nodata).any(axis=0)
    assert 0.3 < valid.mean() < 0.9
    np.testing.assert_array_equal(valid, expected)


def test_external_msk_and_alpha_masks(rasters_dir: Path):
    with Scene(rasters_dir / "rasterio/RGB2.byte.tif") as scene:
        _, valid = full(scene)
    with rasterio.open(rasters_dir / "rasterio/RGB2.byte.tif.msk") as msk:
        np.testing.assert_array_equal(valid, msk.read(1) > 0)
    with Scene(rasters_dir / "rasterio/RGBA.byte.tif") as scene, rasterio.open(rasters_dir / "rasterio/RGBA.byte.tif") as ds:
        _, valid = full(scene)
        np.testing.assert_array_equal(valid, ds.read(4) > 0)


def test_resampling_keeps_the_mask(rasters_dir: Path):
    for name in ("RGB2.byte.tif", "RGBA.byte.tif", "RGB.byte.tif"):
        with Scene(rasters_dir / "rasterio" / name) as a, Scene(rasters_dir / "rasterio" / name, gsd=600) as b:
            assert b.is_warped
            assert full(b)[1].mean() == pytest.approx(full(a)[1].mean(), abs=0.01)


@pytest.mark.parametrize("dtype,nodata", [("int16", -1), ("uint32", 0), ("float32", float("nan")),
                                          ("float32", -9999.0), ("float64", float("nan"))])
def test_resampling_keeps_the_nodata_of_every_dtype(rasters_dir: Path, tmp_path: Path, dtype: str, nodata: float):
    """The warper's added alpha band has the source's type, and GDAL takes an alpha band as the mask
    only when it is Byte or UInt16: a resampled int16, 32-bit or float raster read every pixel as
    valid (its nodata black), so its nodata tiles were run and its buildings weighed there."""
    with rasterio.open(rasters_dir / "rasterio/RGB.byte.tif") as ds:
        nodata_px = (ds.read() == ds.nodata).all(axis=0)
        data = ds.read().astype(dtype) * 10 + 5
        profile = ds.profile
    data[:, nodata_px] = nodata
    profile.update(dtype=dtype, nodata=nodata)
    path = tmp_path / f"{dtype}.tif"
    with rasterio.open(path, "w", **profile) as out:
        out.write(data)
    with Scene(path) as a, Scene(path, gsd=600) as b:
        assert b.is_warped
        native, resampled = full(a)[1].mean(), full(b)[1].mean()
    assert native == pytest.approx(1 - nodata_px.mean())
    assert resampled == pytest.approx(native, abs=0.01)


def test_float_nan_pixels_are_invalid_and_stretched(rasters_dir: Path, tmp_path: Path):
    with rasterio.open(rasters_dir / "rasterio/RGB.byte.tif") as ds:
        data = ds.read().astype(np.float32) * 10.0 + 5.0
        profile = ds.profile
    data[:, 300:310, 400:420] = np.nan
    profile.update(dtype="float32", nodata=None)
    path = tmp_path / "float.tif"
    with rasterio.open(path, "w", **profile) as out:
        out.write(data)
    with Scene(path) as scene:
        rgb, valid = full(scene)
        assert scene.stats is not None
    assert not valid[300:310, 400:420].any() and valid[200, 400]
    assert rgb.dtype == np.uint8 and rgb[:, valid].max() == 255 and not rgb[:, ~valid].any()


def test_complex_data_is_refused(tmp_path: Path):
    path = tmp_path / "sar.tif"
    with rasterio.open(path, "w", driver="GTiff", width=8, height=8, count=3, dtype="complex64",
                       crs="EPSG:32618", transform=Affine(10, 0, 0, 0, -10, 0)) as out:
        out.write(np.ones((3, 8, 8), dtype=np.complex64))
    with pytest.raises(UnsupportedRaster, match="complex"):
        Scene(path)


def test_band_selection(rasters_dir: Path):
    with Scene(rasters_dir / "rasterio/RGBA.uint16.tif") as scene:
        assert scene.bands == (3, 2, 1)  # colour interpretation says B,G,R,A
    naip = rasters_dir / "opengeos_naip/m_4709963_se_14_1_20200831.tif"
    with Scene(naip) as rgb, Scene(naip, bands=(4, 3, 2)) as cir, rasterio.open(naip) as ds:
        assert rgb.bands == (1, 2, 3)
        win = Window(100, 100, 64, 64)
        data, valid = cir.read(win)
        np.testing.assert_array_equal(data[0][valid], ds.read(4, window=win)[valid])
    with pytest.raises(UnsupportedRaster, match="do not exist"):
        Scene(naip, bands=(1, 2, 5))


def _unlabelled(path: Path, descriptions: tuple[str | None, ...]) -> Path:
    """A small 4-band uint8 raster without colour labels (grey, undefined...), as BGRN products come,
    band i holding the value 10 * i; ``descriptions`` as GDAL's band descriptions."""
    from rasterio.enums import ColorInterp

    with rasterio.open(path, "w", driver="GTiff", width=32, height=32, count=4, dtype="uint8",
                       photometric="MINISBLACK", crs="EPSG:32636", transform=Affine(0.3, 0, 0, 0, -0.3, 0)) as out:
        out.write(np.stack([np.full((32, 32), 10 * i, np.uint8) for i in range(1, 5)]))
        out.colorinterp = (ColorInterp.gray, ColorInterp.undefined, ColorInterp.undefined, ColorInterp.undefined)
        for i, text in enumerate(descriptions, 1):
            if text is not None:
                out.set_band_description(i, text)
    return path


def test_bands_described_red_green_blue_are_read_as_such(tmp_path: Path):
    """A raster labelling no band by colour but describing them (GDAL descriptions) 'Blue', 'green',
    ' RED ', 'nir' is read as bands 3, 2, 1: it was read as 1, 2, 3 (blue as red)."""
    path = _unlabelled(tmp_path / "bgrn.tif", ("Blue", "green", " RED ", "nir"))
    with Scene(path) as scene:
        assert scene.bands == (3, 2, 1)
        assert scene.band_choice.as_dict() == {"used": [3, 2, 1], "source": "band descriptions", "count": 4}
        assert scene.band_choice.note is None
        rgb, _ = scene.read(Window(0, 0, 8, 8))
        assert rgb[:, 0, 0].tolist() == [30, 20, 10]
    with Scene(path, bands=(1, 2, 3)) as scene:  # an explicit request still wins
        assert scene.bands == (1, 2, 3) and scene.band_choice.source == "requested"


@pytest.mark.parametrize("descriptions", [("B2", "B3", "B4", "B8"), ("blue", "green", "red", "red"),
                                          ("band 3", "band 2", "band 1", None), (None, None, None, None)])
def test_band_descriptions_other_than_exact_colour_names_are_not_guessed_from(tmp_path: Path, descriptions):
    """Sensor band names ('B4'), a colour named twice or 'band 3' leave bands 1-3, with a note naming --bands:
    four or more unlabelled bands leave the order open (BGRN products store blue first)."""
    with Scene(_unlabelled(tmp_path / "x.tif", descriptions)) as scene:
        assert scene.bands == (1, 2, 3) and scene.band_choice.source == "default 1-3"
        assert "--bands" in scene.band_choice.note and "3,2,1" in scene.band_choice.note


def test_only_an_unlabelled_choice_among_four_bands_or_more_gets_a_note(rasters_dir: Path):
    with Scene(rasters_dir / "rasterio/RGBA.byte.tif") as rgba, Scene(rasters_dir / "rasterio/RGB.byte.tif") as rgb:
        assert rgba.band_choice.source == rgb.band_choice.source == "colour labels"
        assert rgba.band_choice.note is None and rgb.band_choice.note is None


@pytest.mark.parametrize("text, bands", [("3,2,1", (3, 2, 1)), (" 5, 3 ,2 ", (5, 3, 2)), ("1,1,1", (1, 1, 1))])
def test_parse_bands(text, bands):
    assert parse_bands(text) == bands


@pytest.mark.parametrize("text", ["3,2", "3,2,1,4", "0,1,2", "-1,2,3", "a,b,c", "3;2;1", "", "3.0,2,1"])
def test_parse_bands_refuses_anything_but_three_band_numbers(text):
    with pytest.raises(ValueError, match="--bands expects three 1-based band numbers"):
        parse_bands(text)


def test_not_a_raster_is_refused(tmp_path: Path):
    path = tmp_path / "notes.tif"
    path.write_text("not an image")
    with pytest.raises(UnsupportedRaster, match="cannot be opened as a raster"):
        Scene(path)



def test_a_truncated_file_says_why_its_pixels_cannot_be_read(tmp_path: Path):
    """A scene cut short in transfer opens (its header is whole) but its pixels do not: the error names
    the file and GDAL's reason, not rasterio's 'Read failed. See previous exception for details.'"""
    path = tmp_path / "cut.tif"
    rng = np.random.default_rng(0)
    with rasterio.open(path, "w", driver="GTiff", width=256, height=256, count=3, dtype="uint8",
                       compress="deflate", crs="EPSG:32636", transform=Affine(0.3, 0, 500000, 0, -0.3, 0)) as out:
        out.write(rng.integers(0, 255, (3, 256, 256), dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:40_000])
    with Scene(path) as scene, pytest.raises(UnsupportedRaster) as caught:
        scene.read(Window(0, 0, 256, 256))
    message = str(caught.value)
    assert message.startswith("cut.tif: cannot read its pixels") and "truncated" in message
    assert "previous exception" not in message and "\n" not in message

READ_ALL_TILES = """
import sys
from rasterio.windows import Window
from tiles.grid import tile_grid
from tiles.source import Scene, cap_block_cache
print(cap_block_cache(64 * 2**20))
def peak_mb():  # VmHWM: ru_maxrss would carry over the forking pytest process's own peak
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmHWM")) / 1024
with Scene(sys.argv[1], gsd=0.3) as scene:
    scene.read(Window(0, 0, 512, 512))
    before = peak_mb()
    for tile in tile_grid(scene.width, scene.height, 512, 64):
        scene.read(tile.read)
print(peak_mb() - before)
"""


def test_block_cache_cap_bounds_the_memory_of_streaming_reads(buildings_dir: Path):
    """Reading every tile of a 33.5 Mpx scene leaves its decompressed blocks in GDAL's cache
    (default 5 % of RAM) unless capped; GDAL_CACHEMAX set by the user is left alone."""
    scene = buildings_dir / "zanzibar" / "zanzibar_z21_1.tif"
    root = Path(__file__).resolve().parents[1]

    def run(env_cachemax: str | None) -> tuple[int, float]:
        env = {k: v for k, v in os.environ.items() if k != "GDAL_CACHEMAX"}
        if env_cachemax is not None:
            env["GDAL_CACHEMAX"] = env_cachemax
        out = subprocess.run([sys.executable, "-c", READ_ALL_TILES, str(scene)], cwd=root, env=env,
                             capture_output=True, text=True, check=True).stdout.split()
        return int(out[0]), float(out[1])

    capped_size, capped_growth = run(None)
    user_size, user_growth = run("1024")
    assert capped_size == 64 * 2**20 and user_size == -1
    assert capped_growth < 64  # MB: the cap, not the scene's ~100 MB of decompressed RGB
    assert user_growth > capped_growth + 40


def test_alpha_read_with_the_bands_equals_gdal_mask(rasters_dir: Path, buildings_dir: Path):
    """Warped scenes read their alpha with the bands (one warp pass): the same mask GDAL gives."""
    from tiles.masks import window_valid_mask

    cases = [(rasters_dir / "rasterio" / n, 600) for n in ("RGB2.byte.tif", "RGBA.byte.tif", "RGB.byte.tif")]
    cases += [(rasters_dir / "rasterio" / "RGBA.byte.tif", None),
              (buildings_dir / "zanzibar" / "zanzibar_z19_1.tif", 1.1)]
    shortcut = 0
    for path, gsd in cases:
        with Scene(path, gsd=gsd) as scene:
            shortcut += scene._alpha is not None
            window = Window(0, 0, scene.width, scene.height)
            rgb, valid = scene.read(window)
            expected = window_valid_mask(scene.dataset, window, None, scene.bands)
            np.testing.assert_array_equal(valid, expected, err_msg=path.name)
            assert not rgb[:, ~valid].any()
    assert shortcut >= 3  # the warped ones and the RGBA file


def test_reflect_padding_mirrors_the_edge_and_stays_invalid(buildings_dir: Path):
    """Past the raster a ``reflect`` read mirrors the scene's edge (the same pixels whichever
    window asks), and those pixels stay invalid; inside it equals a plain read."""
    with Scene(buildings_dir / "nairobi" / "nairobi_z20_2.tif", gsd=0.3) as scene:
        w, h = scene.width, scene.height  # 1019 x 507: not multiples of 32
        assert w % 32 and h % 32
        rgb, valid = full(scene)
        edge = Window(w - 200, h - 100, 224, 128)
        zeros, zvalid = scene.read(edge)
        mirror, mvalid = scene.read(edge, pad="reflect")
        bigger, _ = scene.read(Window(w - 400, h - 300, 424, 328), pad="reflect")
        with pytest.raises(ValueError, match="pad"):
            scene.read(edge, pad="edge")
    np.testing.assert_array_equal(mvalid, zvalid)
    assert not mvalid[100:].any() and not mvalid[:, 200:].any()
    np.testing.assert_array_equal(mirror[:, :100, :200], zeros[:, :100, :200])
    assert not zeros[:, 100:].any()
    # column w + k holds column w - 1 - k, row h + k row h - 1 - k
    np.testing.assert_array_equal(mirror[:, :100, 200:], rgb[:, h - 100:, w - 1:w - 25:-1])
    np.testing.assert_array_equal(mirror[:, 100:, :200], rgb[:, h - 1:h - 29:-1, w - 200:])
    np.testing.assert_array_equal(bigger[:, 200:, 200:], mirror)  # another window, same padding


def _warped(path: Path, scene: Scene) -> tuple[np.ndarray, np.ndarray]:
    """What the warper makes of ``path`` on ``scene``'s working grid: uint8 RGB and validity."""
    from rasterio.enums import ColorInterp, Resampling
    from rasterio.vrt import WarpedVRT

    from tiles.normalize import to_uint8

    with rasterio.open(path) as src, WarpedVRT(src, crs=scene.crs, transform=scene.transform, width=scene.width,
                                                height=scene.height, resampling=Resampling.bilinear,
                                                add_alpha=ColorInterp.alpha not in src.colorinterp) as vrt:
        alpha = [i + 1 for i, c in enumerate(vrt.colorinterp) if c == ColorInterp.alpha]
        valid = vrt.read(alpha[0]) > 0
        return to_uint8(vrt.read(list(scene.bands)), scene.stats) * valid, valid


@pytest.mark.parametrize("name,gsd", [("zanzibar/zanzibar_z20_2.tif", 0.3), ("nairobi/nairobi_z20_2.tif", 0.3),
                                      ("zanzibar/zanzibar_z21_2.tif", 1.1), ("kampala/kampala_z21_2.tif", 0.3)])
def test_decimated_reads_give_the_warpers_pixels_and_mask(buildings_dir: Path, name: str, gsd: float):
    """North-up scenes are downsampled by decimating reads where their pixels are all valid: the
    warper's mask exactly (its last, part-covered row counts where its centre is inside) and its
    pixels: 99.9 % within 2 grey levels, a few (the part-covered edge, 15x downsampling) within 8;
    the same pixels whatever window reads them. kampala_z21_2 holds masked pixels, so its windows
    go through the warper."""
    path = buildings_dir / name
    with Scene(path, gsd=gsd) as scene:
        whole = Window(0, 0, scene.width, scene.height)
        decimated = scene._read_decimated(whole) is not None
        assert decimated == (not name.startswith("kampala"))
        rgb, valid = scene.read(whole)
        tiled = np.zeros_like(rgb)
        for r in range(0, scene.height, 160):
            for c in range(0, scene.width, 160):
                part, _ = scene.read(Window(c, r, 160, 160))
                h, w = min(160, scene.height - r), min(160, scene.width - c)
                tiled[:, r:r + h, c:c + w] = part[:, :h, :w]
    expected, expected_valid = _warped(path, scene)
    np.testing.assert_array_equal(valid, expected_valid)
    diff = np.abs(rgb.astype(int) - expected.astype(int))
    assert diff.max() <= (8 if decimated else 0)
    assert np.percentile(diff, 99.9) <= 2 and diff.mean() < 0.25
    np.testing.assert_array_equal(tiled, rgb)  # each working pixel maps to the same source pixels


def test_opening_an_ungeoreferenced_png_leaves_another_threads_warning_filters_alone(tmp_path, monkeypatch):
    """Scene silenced rasterio's NotGeoreferencedWarning inside warnings.catch_warnings, which swaps
    the process-wide filter list and puts back the one it found: another thread entering its own
    block while a Scene opened (the class map is written on a thread beside the building head) got
    Scene's filter in the list it saved, and put it back for good when it left (the other order
    loses that thread's filters). Here the other thread enters during the open and leaves after."""
    png = tmp_path / "plain.png"
    Image.fromarray(np.full((48, 64, 3), 90, np.uint8)).save(png)  # no georeferencing
    before = list(warnings.filters)
    opening, entered, leave = threading.Event(), threading.Event(), threading.Event()

    def other_thread() -> None:
        assert opening.wait(10)
        with warnings.catch_warnings():
            entered.set()
            assert leave.wait(10)

    real_open = rasterio.open

    def open_while_the_other_thread_enters(*args, **kwargs):
        opening.set()
        assert entered.wait(10)
        return real_open(*args, **kwargs)

    monkeypatch.setattr(tiles.palette.rasterio, "open", open_while_the_other_thread_enters)  # where Scene opens
    thread = threading.Thread(target=other_thread)
    thread.start()
    try:
        with Scene(png) as scene:
            assert scene.crs is None and (scene.width, scene.height) == (64, 48)
    finally:
        opening.set()
        leave.set()
        thread.join(10)
    assert warnings.filters == before


def test_a_library_user_is_not_told_of_missing_georeferencing_by_rasterio_but_keeps_other_warnings(tmp_path):
    """``Scene.crs`` is None says it (and geoseg predict's note): rasterio's warning for each open is
    ignored from ``import tiles`` on, by a filter that names it; the user's own warnings still show."""
    png = tmp_path / "plain.png"
    Image.fromarray(np.full((48, 64, 3), 90, np.uint8)).save(png)
    code = ("import warnings\n"
            "from tiles.source import Scene\n"
            f"Scene({str(png)!r}).close()\n"
            "import rasterio\n"
            f"rasterio.open({str(png)!r}).close()\n"
            "warnings.warn('mine', UserWarning)\n")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    env.pop("PYTHONWARNINGS", None)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "NotGeoreferencedWarning" not in done.stderr and "UserWarning: mine" in done.stderr, done.stderr


@pytest.mark.parametrize("gsd", [0, -300.0, float("nan"), float("inf"), "0.3"])
def test_a_gsd_that_is_not_a_positive_number_is_refused(rasters_dir: Path, gsd):
    """gsd=0 failed with ZeroDivisionError; a negative or NaN gsd read the file at its own GSD without a word."""
    with pytest.raises(ValueError, match="gsd must be a finite number of metres > 0"):
        Scene(rasters_dir / "rasterio/RGB.byte.tif", gsd=gsd)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts open files in /proc")
def test_a_scene_that_fails_to_open_closes_its_file(rasters_dir: Path):
    """A failure after the file was opened (here a working grid too big for GDAL, which was an OverflowError
    'value too large to convert to int') left the dataset open: the caller gets no Scene to close."""
    path = rasters_dir / "rasterio/RGB.byte.tif"

    def open_handles() -> int:
        return sum(1 for fd in Path("/proc/self/fd").iterdir() if os.path.realpath(fd) == str(path.resolve()))

    before = open_handles()
    with pytest.raises(UnsupportedRaster, match="RGB.byte.tif: a GSD of 1e-06 m makes a .* px grid, more than 2147483647 px a side") as caught:
        Scene(path, gsd=1e-6)
    assert caught.value.__traceback__ is not None and open_handles() == before  # frames kept alive: not the GC
    with Scene(path, gsd=np.float32(600)) as scene:  # numpy numbers are numbers
        assert scene.is_warped and abs(scene.gsd - 600) < 1


@pytest.mark.parametrize("window", [Window(0.5, 0, 8, 8), Window(0, 0, 8.4, 8), Window(0, 0, 0, 8)])
def test_read_refuses_a_window_that_is_not_whole_pixels(rasters_dir: Path, window):
    """A fractional window (``Window.from_bounds`` gives them) was truncated to whole pixels without a word; a
    zero-wide one failed inside rasterio."""
    with Scene(rasters_dir / "rasterio/RGB.byte.tif") as scene, pytest.raises(ValueError, match="not whole pixels"):
        scene.read(window)


def test_a_paletted_raster_at_a_location_with_a_query_is_read_as_its_rgba(tmp_path, buildings_dir):
    """GDAL ends a ``vrt://`` string's path at its first '?', so a paletted raster at such a location
    (a URL's query, ``https://h/a.tif?sig=x``; here a local name holding one) was opened as it is and
    refused as '1 band(s)'. It is read as the same RGBA, mask and grid as ``vrt://?expand=rgba`` gives."""
    from mosaic_tiles import quantized, write_paletted

    with rasterio.open(buildings_dir / "kampala" / "kampala_z19_1.tif") as src:
        window = Window(0, 0, 96, 64)
        index, table = quantized(src.read(window=window), 31)
        transform, crs = src.window_transform(window), src.crs
    index[:10, :20] = 31  # the nodata index: (0, 0, 0, 0), invalid
    plain = write_paletted(tmp_path / "plain.tif", index, table, transform, crs, nodata=31)
    queried = write_paletted(tmp_path / "a.tif?sig=x", index, table, transform, crs, nodata=31)
    with Scene(queried) as scene, Scene(plain) as reference:
        assert scene.band_choice.source == "colour table" and scene.transform == reference.transform
        rgb, valid = scene.read(Window(0, 0, 96, 64))
        expected_rgb, expected_valid = reference.read(Window(0, 0, 96, 64))
    assert np.array_equal(rgb, expected_rgb) and np.array_equal(valid, expected_valid)
    assert not valid[:10, :20].any() and valid[10:].all()
    with tiles.palette.open_expanded(queried) as expanded, rasterio.open(f"vrt://{plain}?expand=rgba") as vrt:
        assert expanded.crs == vrt.crs and np.array_equal(expanded.read(), vrt.read())


def _with_extra_bands(src_path: Path, out: Path, extra: list[np.ndarray], rgb_nodata: np.ndarray | None = None,
                      colorinterp: list | None = None) -> Path:
    """``src_path``'s RGB with ``extra`` bands after them, nodata 0; ``rgb_nodata``: pixels where
    the RGB bands are set to nodata."""
    with rasterio.open(src_path) as ds:
        rgb = ds.read([1, 2, 3])
        profile = {"driver": "GTiff", "width": ds.width, "height": ds.height, "count": 3 + len(extra),
                   "dtype": "uint8", "crs": ds.crs, "transform": ds.transform, "nodata": 0, "tiled": True,
                   "compress": "deflate", "photometric": "MINISBLACK"}
    rgb = np.maximum(rgb, 1)
    if rgb_nodata is not None:
        rgb[:, rgb_nodata] = 0
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(np.concatenate([rgb, np.stack(extra)]))
        if colorinterp:
            dst.colorinterp = colorinterp
    return out


def test_the_valid_mask_is_the_chosen_bands_own(rasters_dir: Path, tmp_path: Path):
    """GDAL's dataset mask ORs every band's nodata (and the warper's mask did too), and rasterio read a
    4-band raster whose band 1 is red as RGBA: a band the scene does not read decided which of its
    pixels were valid. Bands 1-3 nodata on the left half, band 5 with data everywhere: the left half
    read valid (black ground) at the file's GSD and resampled; a 4-band R,G,B,NIR raster whose NIR is
    0 everywhere read as holding no valid pixel. Now only the chosen bands' masks count."""
    src_path = rasters_dir / "rasterio/cogeo.tif"  # real 0.6 m imagery, all valid
    with rasterio.open(src_path) as ds:
        height, width = ds.height, ds.width
    left = np.zeros((height, width), bool)
    left[:, : width // 2] = True
    band = np.full((height, width), 77, np.uint8)
    five = _with_extra_bands(src_path, tmp_path / "five.tif", [band, band], rgb_nodata=left)
    for gsd in (None, 1.2):
        with Scene(five, bands=(1, 2, 3), gsd=gsd) as scene:
            _, valid = full(scene)
            assert scene.is_warped == (gsd is not None)
            columns = valid.shape[1]
            assert not valid[:, : columns // 2 - 2].any() and valid[:-1, columns // 2 + 2:-1].all(), gsd
    with Scene(five, bands=(4, 5, 4), gsd=1.2) as scene:  # the bands with data: all valid
        assert full(scene)[1][:-1, :-1].all()
    nir = _with_extra_bands(src_path, tmp_path / "nir.tif", [np.zeros((height, width), np.uint8)],
                            colorinterp=[ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.undefined])
    for gsd in (None, 1.2):
        with Scene(nir, gsd=gsd) as scene:
            assert scene.bands == (1, 2, 3) and full(scene)[1][:-1, :-1].all(), gsd


@pytest.mark.parametrize("name, scale", [("zanzibar/zanzibar_z19_2.tif", 40), ("kampala/kampala_z19_1.tif", None)])
def test_overviews_do_not_change_what_a_scene_reads(buildings_dir: Path, tmp_path: Path, name: str, scale):
    """The same pixels with and without overviews give the same tiles: an averaged overview's
    narrower histogram moved a uint16 scene's stretch (1792 px: its stats are a decimated read)."""
    with rasterio.open(buildings_dir / name) as src:
        data, mask, profile = src.read(), src.read_masks(1), src.profile
    if scale is not None:
        data = data.astype(np.uint16) * scale + 7
    profile.update(dtype=data.dtype.name, compress="deflate", photometric="rgb", tiled=True,
                   blockxsize=256, blockysize=256)
    paths = [tmp_path / "bare.tif", tmp_path / "overviews.tif"]
    for path in paths:
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(data)
            dst.write_mask(mask)
            if path.stem == "overviews":
                dst.build_overviews([2, 4, 8], rasterio.enums.Resampling.average)
    with Scene(paths[0], gsd=1.1) as bare, Scene(paths[1], gsd=1.1) as overviews:
        assert bare.stats == overviews.stats
        (a, valid_a), (b, valid_b) = full(bare), full(overviews)
    assert np.array_equal(valid_a, valid_b) and np.array_equal(a, b)


@pytest.mark.parametrize("flip", ["south-up", "east-left", "transposed"])
def test_rows_stored_south_up_reach_a_model_north_up_at_its_gsd(buildings_dir: Path, tmp_path: Path, flip: str):
    """At the GSD a head works at, a south-up (or east-left) raster was read as stored: the building head
    saw it upside down, and its footprints met those of the same scene stored north-up by 0.52 pixel
    IoU, while the land-cover head (another GSD, warped) turned it north-up. It is now the same pixels
    turned north-up, none resampled."""
    with rasterio.open(buildings_dir / "kampala/kampala_z19_2.tif") as src:
        data, mask, profile, t = src.read(), src.dataset_mask(), dict(src.profile), src.transform
    for key in ("blockxsize", "blockysize", "jpeg_quality"):
        profile.pop(key, None)
    profile.update(tiled=False, compress="deflate", photometric="RGB")
    if flip == "south-up":
        stored = Affine(t.a, 0, t.c, 0, -t.e, t.f + t.e * profile["height"])
        pixels, valid = data[:, ::-1], mask[::-1]
    elif flip == "east-left":
        stored = Affine(-t.a, 0, t.c + t.a * profile["width"], 0, t.e, t.f)
        pixels, valid = data[:, :, ::-1], mask[:, ::-1]
    else:  # columns along the north-south axis: a 90 degree turn (Affine.is_rectilinear holds for it)
        stored = Affine(0, t.a, t.c, t.e, 0, t.f)
        pixels, valid = data.transpose(0, 2, 1), mask.T
    for name, transform, bands, m in (("north.tif", t, data, mask), ("flipped.tif", stored, pixels, valid)):
        with rasterio.open(tmp_path / name, "w", **{**profile, "transform": transform}) as dst:
            dst.write(bands)
            dst.write_mask(m)
    with Scene(tmp_path / "north.tif", gsd=0.3) as north, Scene(tmp_path / "flipped.tif", gsd=0.3) as turned:
        assert turned.transform == north.transform and (turned.width, turned.height) == (north.width, north.height)
        (a, valid_a), (b, valid_b) = full(north), full(turned)
    assert np.array_equal(a, b) and np.array_equal(valid_a, valid_b)


def test_a_closed_scene_or_a_grid_tile_is_named_as_the_mistake(buildings_dir: Path):
    """Read after close, rasterio's "Dataset is closed" came out as 'cannot read its pixels (truncated or
    corrupt file?)', blaming the file; a Tile given for its window failed with "no attribute 'col_off'"."""
    from tiles.grid import tile_grid
    from tiles.source import Scene

    with Scene(buildings_dir / "kampala/kampala_z19_2.tif") as scene:
        tile = next(iter(tile_grid(scene.width, scene.height, 64, 0)))
        with pytest.raises(TypeError, match=r"got Tile \(a tile_grid Tile: pass tile.read\)"):
            scene.read(tile)
        assert scene.read(tile.read)[0].shape == (3, 64, 64)
    with pytest.raises(ValueError, match="kampala_z19_2.tif: this Scene is closed"):
        scene.read(tile.read)


def test_the_mask_checks_read_the_band_flags_once_whatever_the_band_count():
    """``mask_flag_enums`` builds every band's flags at each call: read once per band, a 720 KB upload of
    20,000 bands kept a worker an hour in ``_other_bands_mask`` (0.16 s a call)."""
    from rasterio.enums import MaskFlags
    from rasterio.transform import from_origin

    from tiles.source import _decimates, _other_bands_mask

    class ManyBands:
        count, calls = 500, 0
        dtypes = ("uint8",) * 500
        transform = from_origin(0, 0, 1, 1)

        @property
        def mask_flag_enums(self):
            self.calls += 1
            return [[MaskFlags.nodata]] * self.count

    src = ManyBands()
    assert _other_bands_mask(src, (1, 2, 3)) is True and src.calls == 1
    src.calls = 0
    assert _decimates(src, (1, 2, 3)) is False and src.calls == 1
