"""Vectorisation: separation of touching buildings, strip streaming, validity, real labels."""
from __future__ import annotations

import numpy as np
import pytest
import rasterio
import shapely
from rasterio import features

from geoseg.paths import data_root
from geoseg.regularize import regularize_buildings
from geoseg.vectorize import (
    VectorizeOptions,
    separate_buildings,
    vectorize_array,
    vectorize_strips,
)
from tiles.labels import LabelIndex, building_classes, instance_raster

from checks import walls_between

NO_SIMPLIFY = VectorizeOptions(min_area_px=1, simplify_px=0)


def classes_of(polygons: list, shape: tuple[int, int]) -> np.ndarray:
    """0/1/2 class raster of polygons, with the labelling rules the model is trained on."""
    return building_classes(instance_raster(np.asarray(polygons, dtype=object), rasterio.Affine.identity(), shape))


def random_buildings(shape: tuple[int, int], n: int, seed: int) -> list:
    rng = np.random.default_rng(seed)
    h, w = shape
    boxes = []
    for _ in range(n):
        y, x = rng.integers(0, h - 30), rng.integers(0, w - 30)
        bh, bw = rng.integers(5, 28, 2)
        boxes.append(shapely.box(x, y, x + bw, y + bh))
    return boxes


def test_touching_buildings_are_separated_by_their_interiors():
    a, b = shapely.box(10, 10, 30, 30), shapely.box(30, 12, 50, 28)  # shared wall at x = 30
    found = vectorize_array(classes_of([a, b], (50, 60)), options=NO_SIMPLIFY)
    assert len(found) == 2
    assert all(g.is_valid for g in found.geometries)
    # each polygon recovers its footprint, and they share the wall without overlapping
    for truth in (a, b):
        best = max(found.geometries, key=lambda g: g.intersection(truth).area)
        assert best.intersection(truth).area / best.union(truth).area > 0.85
    g1, g2 = found.geometries
    assert g1.intersection(g2).area == 0
    assert g1.distance(g2) == 0
    assert found.group[0] == found.group[1]  # they came from one connected component


def test_one_building_one_polygon_with_hole_kept():
    courtyard = shapely.box(10, 10, 50, 50).difference(shapely.box(22, 22, 38, 38))
    found = vectorize_array(classes_of([courtyard], (60, 60)), options=NO_SIMPLIFY)
    assert len(found) == 1
    poly = found.geometries[0]
    assert len(poly.interiors) == 1
    assert poly.intersection(courtyard).area / poly.union(courtyard).area > 0.85


def test_min_area_and_confidence():
    small, big = shapely.box(2, 2, 5, 5), shapely.box(20, 20, 40, 40)
    classes = classes_of([small, big], (50, 50))
    prob = np.where(classes > 0, 0.8, 0.1).astype(np.float32)
    prob[:, 30:] = np.where(classes[:, 30:] > 0, 0.6, 0.1)
    found = vectorize_array(classes, prob, VectorizeOptions(min_area_px=50, simplify_px=0))
    assert len(found) == 1
    inside = classes_of([found.geometries[0]], (50, 50)) > 0
    assert found.confidence[0] == pytest.approx(float(prob[inside].mean()), abs=0.05)
    assert 0.6 < found.confidence[0] < 0.8


@pytest.mark.parametrize("strip_rows, halo_rows", [(37, 8), (128, 16), (1000, 256)])
def test_strips_give_the_same_polygons_as_the_whole_raster(strip_rows, halo_rows):
    shape = (400, 300)
    buildings = random_buildings(shape, 120, seed=1) + [shapely.box(5, 3, 15, 390)]  # one taller than any halo
    classes = classes_of(buildings, shape)
    prob = np.random.default_rng(0).random(shape).astype(np.float32)
    whole = vectorize_array(classes, prob, NO_SIMPLIFY)
    strips = vectorize_strips(lambda a, b: (classes[a:b], prob[a:b]), shape[0],
                              VectorizeOptions(min_area_px=1, simplify_px=0, strip_rows=strip_rows,
                                               halo_rows=halo_rows))
    assert len(strips) == len(whole)
    key = lambda g: (round(g.area, 6), round(g.centroid.x, 6), round(g.centroid.y, 6))  # noqa: E731
    assert sorted(map(key, strips.geometries)) == sorted(map(key, whole.geometries))
    assert sorted(np.round(strips.confidence, 6)) == sorted(np.round(whole.confidence, 6))


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="2-D"):
        separate_buildings(np.zeros((2, 3, 3), np.uint8))
    with pytest.raises(ValueError, match="strip_rows"):
        vectorize_strips(lambda a, b: (np.zeros((b - a, 4), np.uint8), None), 10, VectorizeOptions(strip_rows=0))


def test_real_osm_footprints_round_trip():
    """OSM buildings of a real scene -> training-style class raster -> polygons close to the originals."""
    scene = data_root() / "buildings" / "zanzibar" / "zanzibar_z19_2.tif"
    with rasterio.open(scene) as src:
        transform, shape, crs = src.transform, (src.height, src.width), src.crs
        bounds = src.bounds
    index = LabelIndex.from_files([data_root() / "buildings" / "zanzibar" / "labels.geojson"], crs)
    polys = index.query(tuple(bounds))
    assert len(polys) > 20
    classes = building_classes(instance_raster(polys, transform, shape))
    found = vectorize_array(classes, options=VectorizeOptions(min_area_px=4, simplify_px=0.5))
    truth = features.rasterize(((p, 1) for p in polys), out_shape=shape, transform=transform) > 0
    pix = ~transform
    to_pixels = [shapely.transform(p, lambda xy: np.column_stack(pix @ (xy[:, 0], xy[:, 1]))) for p in polys]
    pred = features.rasterize(((g, 1) for g in found.geometries), out_shape=shape) > 0
    iou = (pred & truth).sum() / (pred | truth).sum()
    assert iou > 0.85
    assert all(g.is_valid and g.geom_type == "Polygon" for g in found.geometries)
    # touching OSM buildings stay apart: about one polygon per labelled building in the scene
    inside = [p for p in to_pixels if p.intersection(shapely.box(0, 0, shape[1], shape[0])).area > 20]
    assert 0.8 * len(inside) <= len(found) <= 1.2 * len(inside)


def test_regularize_squares_and_keeps_shared_walls():
    from shapely import affinity

    a, b = shapely.box(20, 20, 60, 50), shapely.box(60, 20, 90, 50)
    a, b = (affinity.rotate(g, 17, origin=(55, 35)) for g in (a, b))
    found = vectorize_array(classes_of([a, b], (100, 110)), options=NO_SIMPLIFY)
    assert len(found) == 2
    squared = regularize_buildings(found.geometries, found.group, 1.0)
    for g, truth in zip(squared, sorted([a, b], key=lambda t: -t.area)):
        assert g.is_valid and g.geom_type == "Polygon"
        assert len(g.exterior.coords) < len(found.geometries[0].exterior.coords)
    g1, g2 = squared
    assert g1.intersection(g2).area < 1.0  # no overlap
    assert g1.distance(g2) < 1e-6  # still touching
    assert g1.boundary.intersection(g2.boundary).length > 20  # along a wall, not at a point
    # the larger building came out a rectangle aligned with the true orientation
    big = max(squared, key=lambda g: g.area)
    xy = np.asarray(big.exterior.coords)
    d = np.diff(xy, axis=0)
    angles = np.degrees(np.arctan2(d[:, 1], d[:, 0])) % 90
    long = np.hypot(d[:, 0], d[:, 1]) > 3
    assert np.all(np.minimum(np.abs(angles[long] - 17), 90 - np.abs(angles[long] - 17)) < 3)


@pytest.mark.parametrize("density, seed", [(0.2, 0), (0.55, 1), (0.9, 2)])
def test_run_labelling_matches_ndimage_label(density, seed):
    """Components from row runs are ndimage.label's, numbering included; boxes are find_objects'."""
    from scipy import ndimage

    from geoseg.vectorize import components_of

    rng = np.random.default_rng(seed)
    classes = (rng.random((97, 131)) < density).astype(np.uint8) * rng.integers(1, 3, (97, 131)).astype(np.uint8)
    expected, n = ndimage.label(classes > 0)
    comps = components_of(classes)
    assert comps.n == n
    got = np.zeros(classes.shape, np.int64)
    got.ravel()[comps.pixel] = comps.label
    np.testing.assert_array_equal(got, expected)
    boxes = ndimage.find_objects(expected)
    assert [(s[0].start, s[0].stop, s[1].start, s[1].stop) for s in boxes] == list(
        zip(comps.top[1:], comps.bottom[1:], comps.left[1:], comps.right[1:]))


def test_pack_boxes_never_overlap():
    from geoseg.vectorize import pack_boxes

    rng = np.random.default_rng(3)
    heights, widths = rng.integers(1, 40, 300), rng.integers(1, 60, 300)
    ys, xs, height, width = pack_boxes(heights, widths)
    cover = np.zeros((height, width), np.int32)
    for y, x, h, w in zip(ys, xs, heights, widths):
        cover[y:y + h, x:x + w] += 1
    assert cover.max() == 1
    assert cover.sum() == (heights * widths).sum()
    assert cover.mean() > 0.6  # packed, not spread out


def test_threaded_strips_give_exactly_the_serial_result():
    shape = (600, 250)
    buildings = random_buildings(shape, 200, seed=4) + [shapely.box(100, 20, 112, 580)]  # crosses many strips
    classes = classes_of(buildings, shape)
    prob = np.random.default_rng(1).random(shape).astype(np.float32)
    reads = []

    def read(a: int, b: int):
        reads.append((a, b))
        return classes[a:b], prob[a:b]

    runs = [vectorize_strips(read, shape[0], VectorizeOptions(strip_rows=64, halo_rows=8, workers=w))
            for w in (1, 3)]
    serial, threaded = runs
    assert len(serial) > 150
    assert [g.wkb for g in threaded.geometries] == [g.wkb for g in serial.geometries]
    assert threaded.confidence == serial.confidence
    assert threaded.group == serial.group
    # reads happen in order in the caller's thread: the threaded run asked for the same windows
    assert reads[:len(reads) // 2] == reads[len(reads) // 2:]
    with pytest.raises(ValueError, match="workers"):
        vectorize_strips(read, shape[0], VectorizeOptions(workers=0))


def test_noisy_classes_give_the_same_valid_polygons_in_strips_and_whole():
    """Ragged, noisy predictions (diagonal touches, holes, many seeds): strip height changes nothing."""
    from scipy import ndimage

    rng = np.random.default_rng(7)
    shape = (300, 260)
    smooth = ndimage.gaussian_filter(rng.random(shape), 1.5)
    classes = np.where(smooth > np.quantile(smooth, 0.7), np.where(rng.random(shape) < 0.5, 1, 2), 0).astype(np.uint8)
    prob = rng.random(shape).astype(np.float32)
    whole = vectorize_array(classes, prob, NO_SIMPLIFY)
    strips = vectorize_strips(lambda a, b: (classes[a:b], prob[a:b]), shape[0],
                              VectorizeOptions(min_area_px=1, simplify_px=0, strip_rows=23, halo_rows=4))
    assert len(whole) > 100
    assert all(g.is_valid and g.geom_type == "Polygon" for g in strips.geometries)
    key = lambda g: (round(g.area, 6), round(g.centroid.x, 6), round(g.centroid.y, 6))  # noqa: E731
    assert sorted(map(key, strips.geometries)) == sorted(map(key, whole.geometries))
    # every building pixel is covered exactly once
    cover = features.rasterize(((g, 1) for g in strips.geometries), out_shape=shape,
                               merge_alg=rasterio.enums.MergeAlg.add)
    assert np.array_equal(cover, (classes > 0).astype(cover.dtype))


def test_tracer_names_are_still_importable_from_vectorize():
    """``geoseg.polygonize`` was split out of this module: its public names stay importable here."""
    from geoseg import polygonize, vectorize

    for name in ("trace_polygons", "polygons_from_labels", "find_components", "Components"):
        assert getattr(vectorize, name) is getattr(polygonize, name)


def test_simplified_neighbours_keep_their_shared_walls_on_a_real_scene():
    """Kampala's OSM terraces -> training-style class raster -> polygons simplified at the default
    --simplify (0.3 m = 1 px): walls that neighbours shared stay shared, with no overlap and no gap.

    With each polygon simplified on its own, 15 pairs overlapped here and 2 of the 24 pairs
    sharing a wall still did (6 px of wall left of 105).
    """
    scene = data_root() / "buildings" / "kampala" / "kampala_z19_2.tif"
    with rasterio.open(scene) as src:
        transform, shape, crs, bounds = src.transform, (src.height, src.width), src.crs, src.bounds
    polys = LabelIndex.from_files([data_root() / "buildings" / "kampala" / "labels.geojson"], crs).query(tuple(bounds))
    classes = building_classes(instance_raster(polys, transform, shape))
    exact = vectorize_array(classes, options=VectorizeOptions(min_area_px=4, simplify_px=0))
    before = {k: w for k, (w, _) in walls_between(exact.geometries).items() if w >= 1}
    assert len(before) >= 20, "the scene must hold terraces for this test to mean anything"
    for found in (vectorize_array(classes, options=VectorizeOptions(min_area_px=4, simplify_px=1.0)),
                  vectorize_strips(lambda a, b: (classes[a:b], None), shape[0],
                                   VectorizeOptions(min_area_px=4, simplify_px=1.0, strip_rows=40, halo_rows=8))):
        assert len(found) == len(exact)
        assert all(g.is_valid and g.geom_type == "Polygon" for g in found.geometries)
        assert sum(len(g.exterior.coords) for g in found.geometries) < 0.4 * sum(
            len(g.exterior.coords) for g in exact.geometries)
        # simplified[i]: the outline of exact.geometries[i] (strips emit buildings in another order)
        simplified = [max(found.geometries, key=lambda g: g.intersection(e).area) for e in exact.geometries]
        after = walls_between(simplified)
        assert sum(overlap for _, overlap in after.values()) < 1e-9
        for (i, j), length in before.items():
            assert (i, j) in after, f"buildings {i} and {j} no longer touch"
            # a wall's ends stay put: a straightened pixel staircase keeps at least 1/sqrt(2) of its length
            assert after[i, j][0] >= 0.7 * length
            pair = simplified[i].union(simplified[j])  # and no sliver gap opened along it
            assert len(pair.interiors) == len(exact.geometries[i].union(exact.geometries[j]).interiors)


def test_masks_of_0_and_1_and_the_writers_255_are_read_as_a_library_user_passes_them():
    """From Python: a 0/1 uint8 mask is a mask (``~1`` is 254: an IndexError, or a casting error in the
    opening), and 255, what tiles.stitch.BlendingWriter writes where nothing was covered, is refused
    instead of vectorised as one more building."""
    from geoseg.postprocess import BuildingPostprocess
    from geoseg.postprocess import building_classes as decide
    from geoseg.vectorize import classes_from_probabilities

    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(3), size=(64, 64)).transpose(2, 0, 1).astype(np.float32)
    mask = rng.random((64, 64)) > 0.5
    np.testing.assert_array_equal(classes_from_probabilities(probs, mask.astype(np.uint8)),
                                  classes_from_probabilities(probs, mask))
    post = BuildingPostprocess(threshold=0.4, opening_px=1)
    for got, want in zip(decide(probs, mask.astype(np.uint8), post), decide(probs, mask, post)):
        np.testing.assert_array_equal(got, want)
    classes = np.zeros((64, 64), np.uint8)
    classes[10:20, 10:20] = 1
    assert len(vectorize_array(classes)) == 1
    classes[:, 60:] = 255
    with pytest.raises(ValueError, match=r"classes must be 0 \(background\), 1 \(interior\) or 2 \(outline\), "
                                         r"found 255 \(255: a BlendingWriter's uncovered pixels"):
        vectorize_array(classes)


def test_vectorize_options_out_of_range_are_refused():
    with pytest.raises(ValueError, match="min_area_px and simplify_px must be >= 0"):
        VectorizeOptions(simplify_px=-1)
    with pytest.raises(ValueError, match="strip_rows, halo_rows and workers must be >= 1"):
        VectorizeOptions(workers=0)
    with pytest.raises(ValueError, match="strip_rows, halo_rows and workers must be >= 1"):
        VectorizeOptions(halo_rows=0)  # vectorize_strips refused it later


def test_a_wide_scenes_strips_hold_no_more_pixels_than_an_8192_px_wide_ones():
    """A strip is as wide as the scene, and 2048 rows of a 32768 px wide one took the vectoriser to 2.38 GB
    of process memory where an 8192 px square took 1.24-1.34 GB. The rows shrink with the width, down to
    256; the polygons do not change (the strips test above)."""
    from geoseg.vectorize import MIN_STRIP_ROWS, STRIP_PIXELS, strip_rows_for

    assert [strip_rows_for(w) for w in (512, 8192, 16384, 32768, 10**6)] == [2048, 2048, 1024, 512, MIN_STRIP_ROWS]
    shape = (1200, 4096)
    classes = classes_of(random_buildings(shape, 400, seed=3), shape)
    widest = []

    def read(a, b):
        widest.append((b - a) * shape[1])
        return classes[a:b], None

    options = VectorizeOptions(min_area_px=1, simplify_px=0, strip_rows=strip_rows_for(shape[1] * 8), halo_rows=16)
    found = vectorize_strips(read, shape[0], options)
    assert len(found) == len(vectorize_array(classes, None, NO_SIMPLIFY))
    assert options.strip_rows == 512 and max(widest) <= (512 + 1 + 64) * shape[1], max(widest)
    assert STRIP_PIXELS == 2048 * 8192


def test_the_pipeline_gives_the_vectoriser_strips_for_the_scenes_width(monkeypatch):
    """The rows come from the working grid's width (geoseg.footprints), not VectorizeOptions' default."""
    import geoseg.footprints
    from geoseg.postprocess import BuildingPostprocess

    class Seen(Exception):
        pass

    def capture(read, height, options, progress):
        raise Seen(options.strip_rows)

    monkeypatch.setattr(geoseg.footprints.vectorize, "vectorize_strips", capture)

    class Head:
        width, height, gsd, writer = 32768, 100, 0.3, None

    from geoseg.options import PredictOptions

    with pytest.raises(Seen) as seen:
        geoseg.footprints.vectorise_buildings(Head(), PredictOptions(), 0.3, {"native_gsd": 0.3, "crs": None},
                                              lambda f: None, BuildingPostprocess())
    assert seen.value.args == (512,)
