"""``tiles.mosaic``: adjacent rasters as one VRT scene; what cannot share one grid is refused by name."""
from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine
from mosaic_tiles import SCENE, cut_grid, quantized, write_paletted, write_tile
from rasterio.enums import ColorInterp
from rasterio.windows import Window

from tiles.mosaic import MosaicError, input_at, plan_mosaic, write_vrt
from tiles.source import Scene


def test_a_cut_scene_mosaicked_again_is_the_scene_pixel_for_pixel(tmp_path):
    tiles = cut_grid(SCENE, tmp_path / "t")
    vrt = write_vrt(plan_mosaic(tiles[::-1]), tmp_path / "m.vrt")  # any order: placed by georeferencing
    with rasterio.open(vrt) as mosaic, rasterio.open(SCENE) as scene:
        assert (mosaic.transform, mosaic.shape, mosaic.crs) == (scene.transform, scene.shape, scene.crs)
        valid = scene.dataset_mask() > 0
        assert np.array_equal(mosaic.dataset_mask() > 0, valid)  # the tiles' own masks carried
        assert 0 < (~valid).sum()  # (the scene has masked pixels: they read 0 in the mosaic)
        assert np.array_equal(mosaic.read() * valid, scene.read() * valid)


@pytest.mark.parametrize("nodata", [None, 0])
def test_a_missing_tile_is_invalid_also_for_rgb_tiles_without_mask_or_nodata(tmp_path, nodata):
    """A VRT's pixels where no source lies read 0, valid unless the VRT says otherwise: RGB tiles
    without nodata or alpha get a mask band (0 in the gap), tiles with nodata keep it."""
    tiles = cut_grid(SCENE, tmp_path / "t", skip=("10",), masks=False)
    if nodata is not None:
        for path in tiles:
            with rasterio.open(path, "r+") as ds:
                ds.nodata = nodata
    plan = plan_mosaic(tiles)
    assert (plan.width, plan.height, plan.covered_fraction) == (768, 512, 0.75)
    vrt = write_vrt(plan, tmp_path / "m.vrt")
    with Scene(vrt) as scene:  # the file's own grid: straight reads
        _, valid = scene.read(Window(0, 0, 768, 512))
    assert not valid[:256, 384:].any() and valid[256:, 384:].mean() > 0.99 and valid[:, :384].mean() > 0.99
    with Scene(vrt, gsd=1.2) as scene:  # a working grid of the land-cover head's kind: warped reads
        _, valid = scene.read(Window(0, 0, scene.width, scene.height))
        col, row = ~scene.transform @ (plan.transform @ (384, 256))
    assert not valid[:int(row) - 1, int(col) + 1:].any() and valid[int(row) + 1:, :-1].all()  # (the last column overhangs)


def _shifted(transform: Affine, dx_px: float) -> Affine:
    return transform @ Affine.translation(dx_px, 0)


@pytest.mark.parametrize("change, words", [
    ({"crs": "EPSG:32636"}, ["CRS EPSG:32636 differs from EPSG:3857", "gdalwarp -t_srs EPSG:3857"]),
    ({"scale": 2}, ["pixel size 0.597164 x 0.597164 differs from 0.298582 x 0.298582", "-tap"]),
    ({"dx": 0.5}, ["not on the pixel grid", "0.50 px in x"]),
    ({"rotate": 0.01}, ["not a north-up grid"]),
    ({"no_georeferencing": True}, ["not georeferenced"]),
    ({"crs_without_geotransform": True}, ["not georeferenced (no geotransform)"]),  # was "not a north-up grid"
    ({"bands": 5}, ["band count 5 differs from 3"]),  # (RGB and RGBA mix: a 4th band labelled alpha)
    ({"dtype": "uint16"}, ["data type uint16 differs from uint8"]),
    ({"nodata": 0}, ["nodata value 0.0 differs from None"]),
])
def test_rasters_that_cannot_share_one_grid_are_named_with_what_differs(tmp_path, change, words):
    first, second = cut_grid(SCENE, tmp_path / "t", 2, 1, masks=False)
    with rasterio.open(second) as src:
        data, t, crs = src.read(), src.transform, src.crs
    if "scale" in change:
        data, t = data[:, ::2, ::2], t @ Affine.scale(2)
    if "dx" in change:
        t = _shifted(t, change["dx"])
    if "rotate" in change:
        t = Affine(t.a, change["rotate"], t.c, change["rotate"], t.e, t.f)
    if change.get("no_georeferencing"):
        t, crs = Affine.identity(), None
    if change.get("crs_without_geotransform"):
        t = Affine.identity()
    if "bands" in change:
        data = np.concatenate([data, data[:change["bands"] - 3]])
    if "dtype" in change:
        data = data.astype(change["dtype"])
    odd = write_tile(tmp_path / "odd.tif", data, t, change.get("crs", crs),
                     **({"nodata": change["nodata"]} if "nodata" in change else {}))
    with pytest.raises(MosaicError) as caught:
        plan_mosaic([first, odd])
    message = str(caught.value)
    assert message.startswith(f"{odd}: ") and "\n" not in message, message
    for word in words:
        assert word in message, message


def test_a_pixel_size_within_a_tenth_of_a_pixel_across_the_tile_is_accepted_and_snapped(tmp_path):
    first, second = cut_grid(SCENE, tmp_path / "t", 2, 1, masks=False)
    with rasterio.open(second) as src:
        data, t = src.read(), src.transform
    drifting = write_tile(tmp_path / "drift.tif", data, Affine(t.a * (1 + 1e-5), 0, t.c + t.a * 0.05, 0, t.e, t.f),
                          "EPSG:3857")
    plan = plan_mosaic([first, drifting])
    assert [(tile.col, tile.row) for tile in plan.tiles] == [(0, 0), (384, 0)]


@pytest.mark.parametrize("invalid_by", ["mask", "nodata"])
def test_where_tiles_overlap_the_last_listed_is_read_where_it_is_valid(tmp_path, invalid_by):
    """The later tile's invalid collar (a reprojected tile's) does not hide the earlier tile's pixels."""
    nodata = {"nodata": 0} if invalid_by == "nodata" else {}
    with rasterio.open(SCENE) as src:
        a, b = Window(0, 0, 400, 300), Window(300, 200, 400, 300)
        earlier = np.maximum(src.read(window=a), 1)
        first = write_tile(tmp_path / "a.tif", earlier, src.window_transform(a), src.crs, **nodata)
        later = np.full((3, 300, 400), 7, np.uint8)
        collar = np.full((300, 400), 255, np.uint8)
        collar[:, :50] = 0  # its first 50 columns: no data
        if invalid_by == "nodata":
            later[:, :, :50] = 0
        second = write_tile(tmp_path / "b.tif", later, src.window_transform(b), src.crs,
                            collar if invalid_by == "mask" else None, **nodata)
    plan = plan_mosaic([first, second])
    assert plan.overlaps() == [(first, second)]
    with rasterio.open(write_vrt(plan, tmp_path / "m.vrt")) as vrt:
        pixels, valid = vrt.read(), vrt.dataset_mask() > 0
    assert np.array_equal(pixels[:, 200:300, 300:350], earlier[:, 200:300, 300:350])  # under b's collar: a
    assert (pixels[:, 200:300, 350:400] == 7).all() and (pixels[:, 300:, 350:] == 7).all()  # b's data: b
    assert valid[:300, :400].all() and valid[200:, 350:].all()
    assert not valid[:200, 400:].any() and not valid[300:, :300].any() and not valid[300:, 300:350].any()  # gaps


def test_tiles_in_a_folder_named_with_an_ampersand_and_accents_are_found(tmp_path):
    """Paths are XML text in the VRT: '&' escaped, UTF-8 whatever the locale's encoding."""
    tiles = cut_grid(SCENE, tmp_path / "Kampala & Entebbe é", 2, 1, masks=False)
    with rasterio.open(write_vrt(plan_mosaic(tiles), tmp_path / "m.vrt")) as vrt:
        assert sorted(vrt.files[1:]) == [str(p) for p in tiles] and vrt.read(1).any()


def test_each_point_names_the_last_listed_input_covering_it_else_the_fallback():
    """Where tiles overlap the VRT reads the last listed, so a building there is that tile's; a point
    in a gap (a building cannot be there, but a polygon's point may fall off a tile's edge) gets the
    fallback."""
    summary = {"inputs": ["/d/a.tif", "/d/b.tif"], "placement": [[0, 0, 10, 10], [5, 0, 10, 10]]}
    cols = np.array([2.0, 7.0, 12.0, 20.0, 9.999])
    rows = np.array([5.0, 5.0, 5.0, 5.0, 9.999])
    assert input_at(summary, cols, rows, "mosaic.vrt") == ["/d/a.tif", "/d/b.tif", "/d/b.tif", "mosaic.vrt",
                                                          "/d/b.tif"]


def test_paletted_tiles_are_mosaicked_as_the_rgba_of_their_own_colour_tables(tmp_path):
    """Paletted tiles (one band of colour-table indices) were refused as '1 band(s)', though one
    paletted raster is read as its RGBA. Each tile is read through its own table (here two different
    ones, a nodata index in one), pixel for pixel as ``vrt://?expand=rgba`` reads it, mask included;
    an RGBA tile mixes with them, and an RGB one is refused by name."""
    with rasterio.open(SCENE) as src:
        windows = [Window(0, 0, 384, 256), Window(384, 0, 384, 256)]
        rgbs = [src.read(window=w) for w in windows]
        transforms, crs = [src.window_transform(w) for w in windows], src.crs
    index_a, table_a = quantized(rgbs[0], 63)
    index_a[:40, :60] = 63  # the nodata index (transparent, left out)
    index_b, table_b = quantized(rgbs[1], 31)
    a = write_paletted(tmp_path / "a.tif", index_a, table_a, transforms[0], crs, nodata=63)
    b = write_paletted(tmp_path / "b.tif", index_b, table_b, transforms[1], crs)
    plan = plan_mosaic([a, b])
    assert (plan.count, plan.nodata, [t.paletted for t in plan.tiles]) == (4, None, [True, True])
    with rasterio.open(write_vrt(plan, tmp_path / "m.vrt")) as vrt:
        pixels, valid = vrt.read(), vrt.dataset_mask() > 0
        assert sorted(vrt.files[1:]) == [str(a), str(b)]  # the tiles themselves
    for path, cols in ((a, slice(0, 384)), (b, slice(384, 768))):
        with rasterio.open(f"vrt://{path}?expand=rgba") as expanded:
            assert np.array_equal(pixels[:, :, cols], expanded.read())
            assert np.array_equal(valid[:, cols], expanded.dataset_mask() > 0)
    assert not valid[:40, :60].any() and valid[40:, :].all()
    with Scene(tmp_path / "m.vrt") as scene:
        assert scene.bands == (1, 2, 3)

    rgba = write_tile(tmp_path / "rgba.tif", np.concatenate([rgbs[1], np.full((1, 256, 384), 255, np.uint8)]),
                      transforms[1], crs, photometric="RGB", alpha="YES")
    assert plan_mosaic([a, rgba]).count == 4
    wide = write_tile(tmp_path / "uint16.tif", rgbs[1].astype(np.uint16), transforms[1], crs)
    for first, second in ((a, wide), (wide, a)):
        with pytest.raises(MosaicError) as caught:
            plan_mosaic([first, second])
        assert str(caught.value).startswith(f"{second}: band count ") and "paletted" in str(caught.value)
        assert "gdal_translate -expand" in str(caught.value) and "\n" not in str(caught.value)


def test_rgb_tiles_mix_with_rgba_and_paletted_ones_as_rgba_their_alpha_their_mask(tmp_path):
    """An RGB tile beside an RGBA one (an edge tile warped with an alpha band) or a paletted one was
    refused ('band count 3 differs from 4'). The mosaic is RGBA: the RGB tile's alpha is its own mask
    (here masking a corner), the others' alpha theirs; listed either way round."""
    with rasterio.open(SCENE) as src:
        windows = [Window(0, 0, 384, 256), Window(384, 0, 384, 256)]
        rgbs = [src.read(window=w) for w in windows]
        transforms, crs = [src.window_transform(w) for w in windows], src.crs
    mask = np.full((256, 384), 255, np.uint8)
    mask[:30, :40] = 0
    rgb = write_tile(tmp_path / "rgb.tif", rgbs[0], transforms[0], crs, mask)
    alpha = np.full((1, 256, 384), 255, np.uint8)
    alpha[0, -20:, -30:] = 0
    rgba = write_tile(tmp_path / "rgba.tif", np.concatenate([rgbs[1], alpha]), transforms[1], crs,
                      photometric="RGB", alpha="YES")
    index, table = quantized(rgbs[1], 63)
    index[-20:, -30:] = 63
    paletted = write_paletted(tmp_path / "p.tif", index, table, transforms[1], crs, nodata=63)
    for second, expanded in ((rgba, str(rgba)), (paletted, f"vrt://{paletted}?expand=rgba")):
        for order in ((rgb, second), (second, rgb)):
            plan = plan_mosaic(order)
            assert plan.count == 4 and [t.alpha_from_mask for t in plan.tiles] == [t == rgb for t in order]
            with rasterio.open(write_vrt(plan, tmp_path / "m.vrt")) as vrt, rasterio.open(expanded) as other:
                pixels, valid = vrt.read(), vrt.dataset_mask() > 0
                assert vrt.colorinterp[3] == ColorInterp.alpha
                assert np.array_equal(pixels[:, :, 384:], other.read())
            assert np.array_equal(pixels[:3, :, :384], rgbs[0]) and np.array_equal(pixels[3, :, :384], mask)
            assert np.array_equal(valid[:, :384], mask > 0)
            assert not valid[-20:, -30:].any() and valid[:-20, 384:].all()
            with Scene(tmp_path / "m.vrt") as scene:
                assert scene.bands == (1, 2, 3)


def test_where_paletted_tiles_overlap_the_later_ones_nodata_index_shows_the_earlier_tile(tmp_path):
    """A paletted tile's nodata index is transparent in the VRT as a nodata value is: the collar of
    the later tile does not hide the earlier one, and the gaps stay invalid."""
    with rasterio.open(SCENE) as src:
        a, b = Window(0, 0, 400, 300), Window(300, 200, 400, 300)
        index_a, table_a = quantized(src.read(window=a), 63)
        index_b, table_b = quantized(src.read(window=b), 63)
        index_b[:, :50] = 63  # the later tile's first 50 columns: its nodata index
        first = write_paletted(tmp_path / "a.tif", index_a, table_a, src.window_transform(a), src.crs, nodata=63)
        second = write_paletted(tmp_path / "b.tif", index_b, table_b, src.window_transform(b), src.crs, nodata=63)
    with rasterio.open(write_vrt(plan_mosaic([first, second]), tmp_path / "m.vrt")) as vrt, \
            rasterio.open(f"vrt://{first}?expand=rgba") as earlier, rasterio.open(f"vrt://{second}?expand=rgba") as later:
        pixels, valid = vrt.read(), vrt.dataset_mask() > 0
        a_rgba, b_rgba = earlier.read(), later.read()
    assert np.array_equal(pixels[:, 200:300, 300:350], a_rgba[:, 200:300, 300:350])  # under b's collar: a
    assert np.array_equal(pixels[:, 200:500, 350:700], b_rgba[:, :, 50:])
    assert valid[:300, :400].all() and valid[200:, 350:].all()
    assert not valid[:200, 400:].any() and not valid[300:, 300:350].any()
