"""Blending, COG writing and warping back, on real scenes."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.enums import Resampling
from rasterio.windows import Window

from tiles.cog import colormap_from_hex, is_valid_cog, write_cog
from tiles.grid import tile_grid
from tiles.source import Scene
from tiles.stitch import BlendingWriter
from tiles.warp import scene_source_grid, warp_to_grid


def stitch_identity(scene: Scene, out: Path, size: int, overlap: int, bias: float = 0.0) -> None:
    """'Predict' each tile's own pixels (squeezed into [bias, 1 - bias] plus a random per-tile offset of up to
    ``bias``, so they stay probabilities) and blend them."""
    rng = np.random.default_rng(0)
    with BlendingWriter(scene.width, scene.height, 3, scene.transform, scene.crs, tmp_dir=out.parent) as bw:
        for t in tile_grid(scene.width, scene.height, size, overlap):
            rgb, valid = scene.read(t.read)
            probs = rgb.astype(np.float32) / 255.0 * np.float32(1 - 2 * bias) + np.float32(bias * (1 + rng.uniform(-1, 1)))
            bw.add(t.read, probs, valid)
        bw.finalise(probs_path=out, classes_path=out.with_name("classes.tif"))
    assert not list(out.parent.glob("geoseg-blend-*")), "temporary accumulators must be removed"


def test_identity_stitch_reproduces_the_scene_exactly(buildings_dir: Path, tmp_path: Path):
    path = buildings_dir / "kampala/kampala_z20_1.tif"  # 1536 x 1024, partial tiles at the edges
    out = tmp_path / "probs.tif"
    with Scene(path) as scene:
        stitch_identity(scene, out, size=384, overlap=80)
        ref, valid = scene.read(Window(0, 0, scene.width, scene.height))
    with rasterio.open(out) as ds, rasterio.open(path) as src:
        assert ds.transform == src.transform and ds.crs == src.crs and ds.shape == src.shape
        np.testing.assert_array_equal(ds.read(), ref)
    with rasterio.open(tmp_path / "classes.tif") as ds:
        classes = ds.read(1)
    assert (classes[~valid] == 255).all() and (classes[valid] < 3).all()
    np.testing.assert_array_equal(classes[valid], np.argmax(ref, axis=0)[valid])


def test_blending_removes_seams(buildings_dir: Path, tmp_path: Path):
    """Tiles that disagree (a different offset per tile) blend without jumps at tile borders."""
    with Scene(buildings_dir / "kampala/kampala_z19_1.tif") as scene:  # 768 x 512
        out = tmp_path / "biased.tif"
        stitch_identity(scene, out, size=256, overlap=64, bias=0.2)
        ref, _ = scene.read(Window(0, 0, scene.width, scene.height))
        borders = sorted({int(t.core.col_off) for t in tile_grid(scene.width, scene.height, 256, 64)} - {0})
    with rasterio.open(out) as ds:  # the blended offsets, in 0..255
        err = ds.read().astype(np.float32) - (ref.astype(np.float32) * (1 - 2 * 0.2) + 0.2 * 255)
    jumps = [np.abs(err[..., b] - err[..., b - 1]).mean() for b in borders]
    offsets = np.abs(err).mean()
    assert borders and offsets > 5  # tiles really disagree
    assert max(jumps) < 2.0  # but no step at the borders (hard cuts would step by ~offsets)


def test_add_rejects_wrong_shapes():
    with BlendingWriter(10, 10, 2) as bw:
        with pytest.raises(ValueError):
            bw.add(Window(0, 0, 4, 4), np.zeros((3, 4, 4), np.float32))


@pytest.mark.parametrize(("window", "probs", "valid", "says"), [
    (Window(0, 0, 4, 4), np.zeros((4, 4), np.float32), None, r"must be \(n_classes, height, width\) = \(2, 4, 4\).*got \(4, 4\)"),
    (Window(0, 0, 4, 4), np.zeros((4, 4, 2), np.float32), None, "channels last"),
    (Window(0, 0, 4, 4), np.full((2, 4, 4), 3.5, np.float32), None, r"not logits\), got values 3.5..3.5"),
    (Window(0, 0, 4, 4), np.full((2, 4, 4), np.nan, np.float32), None, "got values nan"),
    (Window(0, 0, 4, 4), np.full((2, 4, 4), 200, np.uint8), None, "float probabilities in \\[0, 1\\], got uint8"),
    (Window(0, 0, 4, 4), np.zeros((2, 4, 4), np.float32), np.ones(4, bool), r"valid must be .*\(4, 4\).*got \(4,\)"),
    (Window(12, 0, 4, 4), np.zeros((2, 4, 4), np.float32), None, "does not overlap the 10 x 10 px raster"),
    (Window(-4, 3, 4, 4), np.zeros((2, 4, 4), np.float32), None, "does not overlap"),
    (Window(0.5, 0, 4, 4), np.zeros((2, 4, 4), np.float32), None, "not whole pixels"),
])
def test_add_says_what_is_wrong(window, probs, valid, says):
    """Logits, NaN, 0-255 values, a (w,) mask or a window off the raster were blended without a word (a NaN
    made its pixels class 0; a (w,) mask was broadcast over every row; a window off the raster was dropped),
    and a 2-D array failed with 'not enough values to unpack'."""
    with BlendingWriter(10, 10, 2) as bw:
        with pytest.raises(ValueError, match=says):
            bw.add(window, probs, valid)
        with pytest.raises(ValueError, match="not inside the 10 x 10 px raster"):
            bw.read(Window(-2, 0, 4, 4))  # numpy would have read the last 2 columns
        bw.add(Window(-2, 8, 4, 4), np.full((2, 4, 4), 0.5, np.float32), np.ones((4, 4), np.uint8))  # past the edge: fine
        assert bw.read(Window(0, 8, 2, 2))[1].all()


def test_no_accumulator_folder_stays_behind(tmp_path: Path):
    """Neither after an exception inside the ``with`` nor when the memmaps cannot be made (a raster beyond
    what the file system can hold: the folder made before them stayed in the temp folder)."""
    with pytest.raises(RuntimeError, match="model failed"), BlendingWriter(64, 64, 3, tmp_dir=tmp_path) as bw:
        bw.add(Window(0, 0, 64, 64), np.full((3, 64, 64), 0.2, np.float32))
        raise RuntimeError("model failed")
    with pytest.raises(OSError):
        BlendingWriter(10**7, 10**7, 3, tmp_dir=tmp_path)  # 1.2 PB of accumulators
    assert not list(tmp_path.iterdir())


def test_finalise_refuses_a_nodata_that_is_a_class(tmp_path: Path):
    with BlendingWriter(8, 8, 3) as bw, pytest.raises(ValueError, match="nodata 2 must be a uint8 value that is not"):
        bw.finalise(classes_path=tmp_path / "classes.tif", nodata=2)
    assert not list(tmp_path.iterdir())


def test_cog_has_overviews_colour_table_and_tags(buildings_dir: Path, tmp_path: Path):
    with Scene(buildings_dir / "zanzibar/zanzibar_z20_2.tif") as scene:  # 3584 x 1024
        stitch_identity(scene, tmp_path / "probs.tif", size=512, overlap=64)
    cmap = colormap_from_hex(["#000000", "#ff0000", "#00ff00"])
    cog = write_cog(tmp_path / "classes.tif", tmp_path / "classmap.tif", colormap=cmap, tags={"model": "identity"})
    assert is_valid_cog(cog)
    with rasterio.open(cog) as ds, rasterio.open(tmp_path / "classes.tif") as src:
        assert ds.overviews(1) and ds.colormap(1)[1] == (255, 0, 0, 255) and ds.colormap(1)[255][3] == 0
        assert ds.tags()["model"] == "identity" and ds.nodata == 255
        np.testing.assert_array_equal(ds.read(1), src.read(1))
        assert set(np.unique(ds.read(1, out_shape=(256, 896)))) <= {0, 1, 2, 255}  # nearest overviews
        assert not src.overviews(1)  # the overviews come from write_cog


@pytest.mark.parametrize("shape", [(411, 634), (300, 3000), (2000, 1), (1, 3000)])
def test_cog_of_a_map_wider_than_one_block_has_overviews(tmp_path: Path, shape):
    # rio-cogeo's default stops halving when the SHORTER side fits a block: a 634 x 411 class map
    # or a long strip had no overviews, and GDAL's COG check warned
    from rio_cogeo.cogeo import cog_validate
    h, w = shape
    classes = (np.add.outer(np.arange(h) // 7, np.arange(w) // 5) % 3).astype(np.uint8)
    with rasterio.open(tmp_path / "plain.tif", "w", driver="GTiff", width=w, height=h, count=1, dtype="uint8",
                       nodata=0, tiled=True, blockxsize=256, blockysize=256, crs="EPSG:3857",
                       transform=rasterio.transform.from_origin(1000, 5000, 2, 2)) as dst:
        dst.write(classes, 1)
    cmap = colormap_from_hex(["#000000", "#ff0000", "#00ff00"], nodata=None)
    cog = write_cog(tmp_path / "plain.tif", tmp_path / "classmap.tif", colormap=cmap)
    valid, errors, warns = cog_validate(str(cog), quiet=True)
    # a 1-pixel line: nothing to halve across, so no overviews (GDAL warns), but a valid COG
    assert valid and not errors and (not warns or min(w, h) == 1), (errors, warns)
    with rasterio.open(cog) as ds:
        if min(w, h) == 1:
            assert not ds.overviews(1)
            return
        assert ds.overviews(1) and max(w, h) // ds.overviews(1)[-1] <= 512
        for level in range(len(ds.overviews(1))):
            with rasterio.open(cog, overview_level=level) as ov:
                assert ov.colormap(1)[1] == (255, 0, 0, 255)  # what QGIS draws when zoomed out
                assert set(np.unique(ov.read(1))) <= {0, 1, 2}  # nearest: no invented classes


def geotiff_georeferencing_tags(path: Path) -> set[int]:
    """The GeoTIFF tags that place a raster (ModelPixelScale, ModelTiepoint, ModelTransformation):
    none for a file without a geotransform, which rasterio reports as the identity all the same."""
    from PIL import Image

    with Image.open(path) as image:
        return set(image.tag_v2) & {33550, 33922, 34264}


@pytest.mark.parametrize("shape", [(300, 400), (1058, 1126)])
def test_cog_of_a_raster_without_georeferencing_has_no_geotransform(tmp_path: Path, shape):
    """rio-cogeo wrote the identity transform (rows downwards) into the COG of a PNG's class map:
    QGIS draws a raster without a geotransform at y 0..-height, and that one upside down at
    0..+height, so the class map did not lie on its input. It now has no geotransform either,
    and keeps its colours, tags, nodata and overviews."""
    h, w = shape
    with rasterio.open(tmp_path / "plain.tif", "w", driver="GTiff", width=w, height=h, count=1, dtype="uint8",
                       nodata=0, tiled=True, blockxsize=256, blockysize=256) as dst:
        dst.write((np.add.outer(np.arange(h) // 7, np.arange(w) // 5) % 3).astype(np.uint8), 1)
    assert not geotiff_georeferencing_tags(tmp_path / "plain.tif")
    cmap = colormap_from_hex(["#000000", "#ff0000", "#00ff00"], nodata=None)
    cog = write_cog(tmp_path / "plain.tif", tmp_path / "classmap.tif", colormap=cmap, tags={"model": "m"})
    assert not geotiff_georeferencing_tags(cog)
    assert is_valid_cog(cog)
    with rasterio.open(cog) as ds, rasterio.open(tmp_path / "plain.tif") as src:
        assert ds.crs is None and ds.transform.is_identity and ds.nodata == 0
        assert ds.colormap(1)[1] == (255, 0, 0, 255) and ds.tags()["model"] == "m"
        assert ds.tags()["OVERVIEW_RESAMPLING"] == "NEAREST"
        np.testing.assert_array_equal(ds.read(1), src.read(1))
        assert bool(ds.overviews(1)) == (max(w, h) > 512)
        assert ds.block_shapes[0] == (512, 512) or max(w, h) <= 512


def test_warp_back_to_the_input_grid(buildings_dir: Path, tmp_path: Path):
    path = buildings_dir / "kampala/kampala_z21_2.tif"  # 1024 px at 0.075 m
    with Scene(path, gsd=0.3) as scene:
        assert scene.is_warped and scene.width < 300
        stitch_identity(scene, tmp_path / "work.tif", size=128, overlap=16)
        back = warp_to_grid(tmp_path / "work.tif", tmp_path / "back.tif", *scene_source_grid(scene),
                            resampling=Resampling.bilinear)
        cls = warp_to_grid(tmp_path / "classes.tif", tmp_path / "cls_back.tif", *scene_source_grid(scene))
    with rasterio.open(back) as b, rasterio.open(path) as src, rasterio.open(cls) as c:
        assert b.transform == src.transform and b.shape == src.shape and b.crs == src.crs
        x, y = b.read().astype(np.float64), src.read().astype(np.float64)
        assert np.corrcoef(x.ravel(), y.ravel())[0, 1] > 0.9  # same picture, 4x blurred
        assert set(np.unique(c.read(1))) <= {0, 1, 2, 255}  # nearest: no invented classes
    same = warp_to_grid(tmp_path / "work.tif", tmp_path / "same.tif", scene.crs, scene.transform,
                        scene.width, scene.height)
    with rasterio.open(same) as a, rasterio.open(tmp_path / "work.tif") as b:
        np.testing.assert_array_equal(a.read(), b.read())


def test_a_colour_table_is_written_without_warnings_to_silence(tmp_path: Path, monkeypatch):
    """The class map's COG is written on a thread beside the building model. rio-cogeo warned 'color
    interpretation was set to Palette' and write_cog silenced it with warnings.catch_warnings, whose
    filters another thread's catch_warnings exit can reset mid-write; the warning then reached a batch's
    output. Here the reset is made to happen during cog_translate: no such warning may be raised."""
    import warnings

    import tiles.cog as cog

    src = tmp_path / "plain.tif"
    with rasterio.open(src, "w", driver="GTiff", width=64, height=64, count=1, dtype="uint8", tiled=True,
                       blockxsize=32, blockysize=32, crs="EPSG:32636",
                       transform=rasterio.Affine(1, 0, 500000, 0, -1, 0)) as ds:
        ds.write(np.arange(64 * 64, dtype=np.uint8).reshape(64, 64) % 3, 1)
    real = cog.cog_translate
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        outer = list(warnings.filters)

        def racing(*args, **kwargs):
            warnings.filters[:] = outer  # what another thread leaving its catch_warnings restores
            return real(*args, **kwargs)

        monkeypatch.setattr(cog, "cog_translate", racing)
        out = write_cog(src, tmp_path / "classmap.tif", colormap=colormap_from_hex(["#000000", "#ff0000", "#00ff00"]))
    assert not [w for w in caught if "color interpretation" in str(w.message)]
    with rasterio.open(out) as ds:
        assert ds.colorinterp[0].name == "palette" and ds.colormap(1)[1] == (255, 0, 0, 255) and is_valid_cog(out)


def test_finalise_leaves_no_half_written_file(tmp_path: Path, monkeypatch):
    """probs_dtype 'float16' failed after the class map was begun (an empty class map stayed), 'int16' wrote
    all-zero probabilities; a failure while writing blocks (disk full) left both files half-written."""
    with BlendingWriter(64, 64, 2) as bw:
        bw.add(Window(0, 0, 64, 64), np.full((2, 64, 64), 0.5, np.float32))
        for dtype in ("float16", "int16"):
            with pytest.raises(ValueError, match="probs_dtype must be 'uint8' or 'float32'"):
                bw.finalise(classes_path=tmp_path / "c.tif", probs_path=tmp_path / "p.tif", probs_dtype=dtype)
        calls = []

        def full_disk(window):
            calls.append(window)
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(bw, "read", full_disk)
        with pytest.raises(OSError, match="No space"):
            bw.finalise(classes_path=tmp_path / "c.tif", probs_path=tmp_path / "p.tif")
        assert calls and not list(tmp_path.iterdir())
        monkeypatch.undo()
        bw.finalise(classes_path=tmp_path / "c.tif", probs_path=tmp_path / "p.tif", probs_dtype="float32")
    with rasterio.open(tmp_path / "p.tif") as ds:
        assert ds.dtypes[0] == "float32" and np.allclose(ds.read(), 0.5)


def test_warp_to_grid_leaves_no_half_written_file(tmp_path: Path, monkeypatch):
    """A failure while warping blocks (disk full, a read error) left the destination half-written."""
    import tiles.warp

    src = tmp_path / "work.tif"
    with rasterio.open(src, "w", driver="GTiff", width=64, height=64, count=1, dtype="uint8", crs="EPSG:3857",
                       transform=rasterio.transform.from_origin(0, 0, 2, 2)) as ds:
        ds.write(np.ones((1, 64, 64), np.uint8))
    real = tiles.warp.tile_grid

    def failing_grid(*args, **kwargs):
        yield real(*args, **kwargs)[0]
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tiles.warp, "tile_grid", failing_grid)
    with pytest.raises(OSError, match="No space"):
        warp_to_grid(src, tmp_path / "back.tif", "EPSG:3857", rasterio.transform.from_origin(0, 0, 1, 1), 128, 128,
                     block=64)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["work.tif"]


@pytest.mark.skipif(not hasattr(os, "posix_fallocate"), reason="no posix_fallocate: sparse accumulators")
def test_the_accumulators_claim_their_disk_space_up_front(tmp_path: Path):
    """np.memmap made sparse files, whose blocks were claimed only as pages were written back: on a
    full disk the kernel then ended the process with SIGBUS (a batch died at once, exit 135, no word,
    batch.json 'running'). The blocks are now reserved when the writer is made, where a full disk
    is an OSError."""
    with BlendingWriter(300, 200, n_classes=3, tmp_dir=tmp_path) as bw:
        files = sorted(bw._dir.iterdir())
        assert [f.name for f in files] == ["sum.f32", "weight.f32"]
        for f, values in zip(files, (3 * 200 * 300, 200 * 300)):
            assert f.stat().st_size == 4 * values
            assert f.stat().st_blocks * 512 >= 4 * values, f"{f.name} is sparse"
        assert not bw._sum.any() and not bw._weight.any()


FULL_DISK = """
import sys
import numpy as np
from rasterio.windows import Window
from tiles.stitch import BlendingWriter
try:
    with BlendingWriter(1024, 1024, n_classes=3, tmp_dir=sys.argv[1]) as bw:
        bw.add(Window(0, 0, 1024, 1024), np.full((3, 1024, 1024), 0.5, np.float32))  # was SIGBUS
except OSError as exc:
    print(exc.strerror)
"""


def test_a_full_disk_is_an_oserror_not_sigbus(tmp_path: Path):
    """On a 1 MB file system, a 16 MB writer: OSError, not the death of the process by SIGBUS."""
    import subprocess
    import sys

    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)],
                                           capture_output=True, check=False).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        run = subprocess.run([sys.executable, "-c", FULL_DISK, str(disk)], capture_output=True, text=True,
                             timeout=120, check=False, env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
        assert run.returncode == 0, (run.returncode, run.stderr[-500:])
        assert run.stdout.strip().startswith("No space left on device")
        assert list(disk.iterdir()) == []  # the accumulators' folder removed
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def test_accumulators_bigger_than_the_free_space_fail_at_once_claiming_nothing(tmp_path: Path, monkeypatch):
    """Reserving more than the disk holds was not refused up front: blocks were claimed (glibc's
    fallback writes zeros) until the disk was full, for every process on it. Now an OSError
    (ENOSPC) saying how much is needed, before any block is claimed."""
    import errno
    import shutil

    from tiles import stitch

    real = shutil.disk_usage
    monkeypatch.setattr(stitch.shutil, "disk_usage", lambda p: real(p)._replace(free=100_000))
    allocated = []
    monkeypatch.setattr(stitch, "_zeros_on_disk", lambda path, shape: allocated.append(path))
    with pytest.raises(OSError) as err:
        BlendingWriter(300, 200, n_classes=3, tmp_dir=tmp_path)
    assert err.value.errno == errno.ENOSPC and allocated == []
    assert str(err.value) == (f"[Errno 28] No space left on device: the blending accumulators need 0.96 MB on the "
                              f"file system mounted at {_mount_of(tmp_path)} ({tmp_path}), 0.1 MB are free")
    assert list(tmp_path.iterdir()) == []


def test_a_reservation_the_system_refuses_names_the_file_system_and_the_size(tmp_path: Path, monkeypatch):
    """Under a file-size limit (``ulimit -f``) the whole message was "[Errno 27] File too large"."""
    import errno

    from tiles import stitch

    def refused(fd, offset, length):
        raise OSError(errno.EFBIG, os.strerror(errno.EFBIG))

    monkeypatch.setattr(stitch.os, "posix_fallocate", refused)
    with pytest.raises(OSError) as err:
        BlendingWriter(300, 200, n_classes=3, tmp_dir=tmp_path)
    assert err.value.errno == errno.EFBIG
    assert str(err.value).startswith("[Errno 27] File too large (a file-size limit: `ulimit -f`?): reserving 0.72 MB "
                                     f"for a blending accumulator on the file system mounted at {_mount_of(tmp_path)} "
                                     f"({tmp_path}/"), str(err.value)


def _mount_of(path: Path) -> Path:
    """The mount point of the file system ``path`` is on (``os.path.ismount`` upwards)."""
    path = path.resolve()
    while not os.path.ismount(path):
        path = path.parent
    return path


def test_a_writer_dropped_without_close_removes_its_folder_and_a_closed_one_says_so(tmp_path):
    """A notebook's writer used without `with` left 4 x (classes + 1) bytes a pixel in the temp folder
    once dropped; used after close it failed with "no attribute '_sum'"; given a grid Tile it failed
    with "no attribute 'col_off'"."""
    import gc

    bw = BlendingWriter(64, 64, 3, tmp_dir=tmp_path)
    tile = next(iter(tile_grid(64, 64, 32, 0)))
    with pytest.raises(TypeError, match=r"expected a rasterio Window, got Tile \(a tile_grid Tile: pass tile.read\)"):
        bw.add(tile, np.full((3, 32, 32), 1 / 3, np.float32))
    bw.add(tile.read, np.full((3, 32, 32), 1 / 3, np.float32))
    assert len(list(tmp_path.iterdir())) == 1
    del bw
    gc.collect()
    assert list(tmp_path.iterdir()) == []
    with BlendingWriter(64, 64, 3, tmp_dir=tmp_path) as closed:
        pass
    assert list(tmp_path.iterdir()) == []
    for use in (lambda: closed.add(tile.read, np.full((3, 32, 32), 1 / 3, np.float32)),
                lambda: closed.finalise(classes_path=tmp_path / "c.tif")):
        with pytest.raises(ValueError, match="this BlendingWriter is closed"):
            use()
