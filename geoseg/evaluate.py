"""Scores of a ``geoseg predict`` output folder against reference labels.

Buildings (``buildings.gpkg`` vs vector labels): pixel IoU / precision / recall / F1
inside the scene's valid area, and SpaceNet-style polygon F1 — a prediction and a
label match when their IoU >= 0.5, one-to-one, greedily by decreasing IoU. Only
labels lying mostly (>= 50 %) on valid pixels of the scene count as ground truth. With a
mapped area (``--coverage``, ``tiles.mapped_area``: where the labels are complete) only the
pixels inside it are scored, and only the labels and predicted buildings lying mostly (>= 50 %)
on valid pixels inside it count: a building found where nobody mapped is no false positive.

Class maps (``classmap.tif`` vs a class raster): confusion matrix streamed block by
block, per-class IoU, mIoU over classes present in truth or prediction, overall
accuracy; truth 0 (unlabeled) and the truth's no-data pixels are ignored, predicted 0
(no data) counts as wrong.
"""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import rasterio
import shapely
from rasterio import features
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT

from tiles.errors import UnsupportedRaster
from tiles.grid import tile_grid
from tiles.labels import LabelIndex, check_label_file, grid_bounds, is_vector_folder, points_and_lines_note
from tiles.mapped_area import MappedArea, check_coverage_file
from tiles.masks import raster_valid_mask
from tiles.normalize import dataset_bands
from tiles.palette import open_expanded
from tiles.rasterpath import RasterPath, as_raster_path, is_virtual, raster_exists, raster_name
from tiles.source import placed_crs

IOU_MATCH = 0.5


class EvaluationError(ValueError):
    """Inputs that cannot be compared, with a one-line reason."""


def pixel_scores(pred: np.ndarray, truth: np.ndarray, valid: np.ndarray | None = None) -> dict[str, float]:
    """IoU, precision, recall, F1 of two boolean masks (only where ``valid``)."""
    if pred.shape != truth.shape:
        raise EvaluationError(f"mask shapes differ: {pred.shape} vs {truth.shape}")
    if valid is not None:
        pred, truth = pred & valid, truth & valid
    tp = int(np.count_nonzero(pred & truth))
    fp = int(np.count_nonzero(pred & ~truth))
    fn = int(np.count_nonzero(~pred & truth))
    return _prf(tp, fp, fn) | {"iou": tp / (tp + fp + fn) if tp + fp + fn else 1.0}


def _prf(tp: int, fp: int, fn: int) -> dict[str, float]:
    precision = tp / (tp + fp) if tp + fp else (1.0 if fn == 0 else 0.0)
    recall = tp / (tp + fn) if tp + fn else (1.0 if fp == 0 else 0.0)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"tp": tp, "fp": fp, "fn": fn, "precision": precision, "recall": recall, "f1": f1}


def match_polygons(pred: list, truth: list, threshold: float = IOU_MATCH) -> list[tuple[int, int, float]]:
    """One-to-one matches ``(pred index, truth index, IoU)`` with IoU >= threshold, best first."""
    pred_arr = np.asarray(pred, dtype=object)
    truth_arr = np.asarray(truth, dtype=object)
    if pred_arr.size == 0 or truth_arr.size == 0:
        return []
    tree = shapely.STRtree(truth_arr)
    pi, ti = tree.query(pred_arr, predicate="intersects")
    if pi.size == 0:
        return []
    iou = _pairwise_iou(pred_arr[pi], truth_arr[ti])
    order = np.argsort(-iou, kind="stable")
    used_p, used_t, matches = set(), set(), []
    for k in order:
        if iou[k] < threshold:
            break
        p, t = int(pi[k]), int(ti[k])
        if p in used_p or t in used_t:
            continue
        used_p.add(p)
        used_t.add(t)
        matches.append((p, t, float(iou[k])))
    return matches


#: how ``evaluate_buildings`` counts, written into its output so a reader need not read this code
SCORING_RULES = {
    "polygon_match": f"one-to-one, greedy by IoU (highest first), IoU >= {IOU_MATCH}",
    "truth": "label polygons (multi-parts and repaired rings split into single polygons) with >= 50 % of their "
             "area on the scored pixels (valid, and inside --coverage when given)",
    "labels_left_out_edge": "labels partly on the scored pixels but under 50 %: not truth; a predicted polygon "
                            "matching no truth that lies >= 50 % on one is not counted (polygon n_ignored)",
    "pixels": "rasterised at pixel centres on the input's grid; only valid (and --coverage) pixels scored",
}


def polygon_scores(pred: list, truth: list, threshold: float = IOU_MATCH, ignored: list | None = None) -> dict[str, float]:
    """SpaceNet polygon precision / recall / F1 at IoU >= ``threshold``.

    ``ignored``: labels left out of the truth (a building mostly off the scene); a predicted polygon
    matching no truth that lies mostly (>= 50 % of its area) on one of them is neither a true nor a false
    positive (``n_ignored``). Why: the edge rule dropped the label but kept the prediction of its visible
    part, a false positive: a perfect prediction scored polygon F1 0.93-0.97."""
    matches = match_polygons(pred, truth, threshold)
    tp = len(matches)
    matched = {m[0] for m in matches}
    unmatched = [g for i, g in enumerate(pred) if i not in matched]
    n_ignored = int(_mostly_on(unmatched, ignored or []).sum())
    scores = _prf(tp, len(pred) - tp - n_ignored, len(truth) - tp)
    scores["mean_iou_of_matches"] = float(np.mean([m[2] for m in matches])) if matches else 0.0
    scores["n_ignored"] = n_ignored
    return scores


def _overlapping_pairs(polygons: list, threshold: float = IOU_MATCH) -> int:
    """How many pairs of ``polygons`` overlap at IoU >= ``threshold``: labels of one building twice (a file
    merged into itself), of which a prediction can match only one. Why: every outline duplicated made a
    perfect prediction score polygon F1 0.654, without a word."""
    if len(polygons) < 2:
        return 0
    arr = np.asarray(polygons, dtype=object)
    a, b = shapely.STRtree(arr).query(arr, predicate="intersects")
    pairs = a < b
    return int((_pairwise_iou(arr[a[pairs]], arr[b[pairs]]) >= threshold).sum())


def _pairwise_iou(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """IoU of ``left[i]`` and ``right[i]`` for each i (0 where both are empty)."""
    inter = shapely.area(shapely.intersection(left, right))
    union = shapely.area(left) + shapely.area(right) - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _mostly_on(geoms: list, others: list, share: float = 0.5) -> np.ndarray:
    """For each of ``geoms``, whether at least ``share`` of its area lies on one of ``others``."""
    found = np.zeros(len(geoms), dtype=bool)
    if not geoms or not others:
        return found
    geoms_arr, others_arr = np.asarray(geoms, dtype=object), np.asarray(others, dtype=object)
    gi, oi = shapely.STRtree(others_arr).query(geoms_arr, predicate="intersects")
    if gi.size:
        inter = shapely.area(shapely.intersection(geoms_arr[gi], others_arr[oi]))
        area = shapely.area(geoms_arr[gi])
        found[np.unique(gi[inter >= share * np.maximum(area, 1e-12)])] = True
    return found


def confusion_matrix(truth: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    """(n, n) pixel counts, rows = truth, columns = prediction; an index >= n is an error."""
    if truth.shape != pred.shape:
        raise EvaluationError(f"class raster shapes differ: {truth.shape} vs {pred.shape}")
    t = truth.astype(np.int64).ravel()
    p = pred.astype(np.int64).ravel()
    if t.size and (t.max() >= n_classes or p.max() >= n_classes):
        raise EvaluationError(f"class index >= {n_classes} found (truth max {t.max()}, prediction max {p.max()})")
    return np.bincount(t * n_classes + p, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def classmap_scores(confusion: np.ndarray, names: dict[int, str] | None = None) -> dict[str, Any]:
    """Per-class IoU, mIoU and overall accuracy, ignoring truth class 0."""
    cm = confusion.astype(np.float64).copy()
    cm[0, :] = 0  # truth 0 = unlabeled: ignored
    n = cm.shape[0]
    tp = np.diag(cm)
    per_class = {}
    for c in range(1, n):
        truth_c, pred_c = cm[c, :].sum(), cm[:, c].sum()
        if truth_c + pred_c == 0:
            continue  # absent from both: no IoU
        name = (names or {}).get(c, str(c))
        per_class[name] = {"iou": tp[c] / (truth_c + pred_c - tp[c]), "truth_pixels": int(truth_c),
                           "predicted_pixels": int(pred_c)}
    total = cm.sum()
    return {
        "per_class": per_class,
        "miou": float(np.mean([v["iou"] for v in per_class.values()])) if per_class else 0.0,
        "overall_accuracy": float(tp[1:].sum() / total) if total else 0.0,
        "pixels": int(total),
        "confusion": confusion.tolist(),
    }


def _open(path: RasterPath):
    return rasterio.open(path)


def _report(pred_dir: Path) -> dict[str, Any]:
    path = pred_dir / "report.json"
    if not pred_dir.exists():
        raise EvaluationError(f"{pred_dir}: no such folder")
    if not path.is_file():
        scenes = sorted(d.name for d in pred_dir.glob("*/") if (d / "report.json").is_file()) if pred_dir.is_dir() else []
        if scenes:  # the --out of a batch: one prediction per sub-folder
            shown = ", ".join(f"{s}/" for s in scenes[:3]) + (", ..." if len(scenes) > 3 else "")
            raise EvaluationError(f"{pred_dir} is a batch's output folder ({len(scenes)} predictions: {shown}): "
                                  f"score each one, e.g. geoseg eval {pred_dir / scenes[0]} ...")
        raise EvaluationError(f"{pred_dir} is not a geoseg predict output (no report.json)")
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError) as exc:  # a truncated file said only "Expecting value: line 2 column 1"
        raise EvaluationError(f"{path} cannot be read as geoseg predict's report ({exc}): predict it again") from None
    if not isinstance(report, dict) or not isinstance(report.get("input"), str):
        raise EvaluationError(f"{path} is not geoseg predict's report (no input named in it): predict it again")
    _check_input_unchanged(report)
    return report


def _check_input_unchanged(report: dict[str, Any]) -> None:
    """Refuse an input whose size differs from the one predicted (report.json's ``input_file``), warn of one
    only modified since. Why: eval reads the input's grid and valid pixels; a scene replaced since (another
    crop of one size) was scored against the old prediction with exit 0: polygon F1 0.81 became 0.29."""
    recorded, name = report.get("input_file"), report["input"]
    if not isinstance(recorded, dict) or is_virtual(name) or not os.path.isfile(name):
        return
    stat = os.stat(name)
    if recorded.get("bytes") is not None and recorded["bytes"] != stat.st_size:
        raise EvaluationError(f"the predicted input {name} has changed since it was predicted ({stat.st_size} bytes, "
                              f"{recorded['bytes']} then): predict it again, then score it")
    if recorded.get("modified_ns") is not None and recorded["modified_ns"] != stat.st_mtime_ns:
        warnings.warn(f"the predicted input {name} was modified since it was predicted (same size): if its "
                      f"pixels changed, predict it again before scoring", stacklevel=3)


def _predicted_bands(report: dict[str, Any]) -> tuple[int, ...] | None:
    """The bands predict read as red, green, blue (its report's ``bands.used``, else its ``--bands``);
    None for reports before they were recorded (the raster's own choice, as predict made it then).
    Why: per-band nodata makes the valid mask depend on the bands."""
    used = (report.get("bands") or {}).get("used") or (report.get("options") or {}).get("bands")
    return tuple(int(b) for b in used) if used else None


def evaluate_buildings(pred_dir: Path, labels_path: RasterPath, where: str | None = None,
                       layer: str | None = None, coverage: RasterPath | None = None) -> dict[str, Any]:
    """Pixel and polygon scores of ``pred_dir/buildings.gpkg`` against vector labels.

    ``where`` (an OGR SQL condition, ``class = 'building'``) and ``layer`` (the building layer of a
    file of several) select the buildings as ``geoseg tile --labels-where/--labels-layer`` do: the
    file is checked and read by the same code (``tiles.labels``), so a team scores against the very
    polygons it trained on. Why: only the first polygon layer and every feature could be scored.
    ``labels_path`` may be a GDAL virtual path (``/vsizip//d/labels.zip/labels.gpkg``), as geoseg
    tile's ``--labels``: a ``Path`` made its ``//`` one ``/``, and eval said "labels not found".
    ``coverage``: a vector file of the area where the labels are complete (``geoseg tile --coverage``):
    pixels outside it are left out as invalid ones are, and so are the labels and predicted buildings
    that do not lie mostly (>= 50 % of their area) on the pixels scored."""
    pred_dir, labels_path = Path(pred_dir), as_raster_path(labels_path)
    report = _report(pred_dir)
    gpkg = pred_dir / "buildings.gpkg"
    if not gpkg.is_file():
        raise EvaluationError(f"no buildings.gpkg in {pred_dir} (predicted with --no-buildings?)")
    if isinstance(labels_path, Path):  # a virtual path is checked by opening it, below
        if labels_path.is_dir() and not is_vector_folder(labels_path):  # an Esri x.gdb/ is read, as geoseg tile reads it
            raise EvaluationError(f"--labels {labels_path} is a folder: give the labels file")
        if not labels_path.exists():
            raise EvaluationError(f"labels not found: {labels_path}")
    try:  # before the scene's mask is read: not a vector file, points, a where it cannot answer or that matches nothing
        check_label_file(labels_path, where, layer)
    except ValueError as exc:
        raise EvaluationError(str(exc)) from exc
    if note := points_and_lines_note(labels_path, where, layer):
        warnings.warn(note, stacklevel=2)
    if coverage is not None:
        try:
            check_coverage_file(coverage)
        except ValueError as exc:
            raise EvaluationError(str(exc)) from exc
    input_path = as_raster_path(report["input"])  # a GDAL virtual path stays a string
    if not raster_exists(input_path):
        raise EvaluationError(f"the predicted input {input_path} is gone: its grid and valid mask are needed")
    with open_expanded(input_path) as src:  # a paletted input as predict read it: RGBA
        if placed_crs(src) is None:  # no CRS, or a CRS without a geotransform
            raise EvaluationError("the prediction is not georeferenced: vector labels cannot be placed on it")
        crs, transform, shape = src.crs, src.transform, (src.height, src.width)
        try:  # the pixels predict reads as valid (a float scene's NaN too, declared nodata or not)
            bands = dataset_bands(src, _predicted_bands(report)).bands
        except UnsupportedRaster as exc:
            raise EvaluationError(f"the predicted input {input_path}: {exc}") from exc
        valid = raster_valid_mask(src, bands)
    pred = gpd.read_file(gpkg, engine="pyogrio")
    # only the label features near the scene are read (a country-wide file was read whole for each
    # scene); a multi-layer file gives its building layer; a file without a CRS is lon/lat (RFC 7946)
    try:
        index = LabelIndex.from_files(labels_path, crs, where, near=grid_bounds(transform, shape[1], shape[0]),
                                      layer=layer)
    except ValueError as exc:
        raise EvaluationError(str(exc)) from exc
    pred = pred.to_crs(crs) if pred.crs is not None else pred.set_crs(crs)
    label_geoms = _polygons(index.polygons)
    if index.in_files == 0:
        raise EvaluationError(f"no building polygon in {labels_path} ({index.in_files} features): nothing to score against")
    pred_geoms = _polygons(pred.geometry.values)
    truth_mask = _rasterize(label_geoms, transform, shape)
    if not (truth_mask & valid).any():  # scores of 0 (or 1) against nothing would read as a result
        raise EvaluationError(f"none of the {index.in_files} label polygons lies on the prediction's valid "
                              f"pixels: the labels do not overlap the predicted scene")
    pred_mask = _rasterize(pred_geoms, transform, shape)
    scored, mapped = valid, {}
    pixel_area = abs(transform.a * transform.e - transform.b * transform.d)
    if coverage is not None:  # pixels: those inside; polygons (below): those at least half inside
        scored = _mapped_pixels(coverage, crs, transform, valid, input_path)
        outside = _fraction_on_valid(pred_geoms, transform, shape, scored, pixel_area) < 0.5
        mapped = {"coverage": str(coverage), "mapped_pixels": int(scored.sum()),
                  "n_predicted_outside_coverage": int(outside.sum())}
        pred_geoms = pred_geoms[~outside]
    pixel = pixel_scores(pred_mask, truth_mask, scored)
    # ground truth for polygon F1: labels mostly on valid pixels of this scene (inside the mapped area)
    on_scored = _fraction_on_valid(label_geoms, transform, shape, scored, pixel_area)
    in_scene = on_scored >= 0.5
    truth = list(label_geoms[in_scene])
    edge = label_geoms[~in_scene & (on_scored > 0)]  # buildings mostly off the scene: neither to find nor to miss
    polygon = polygon_scores(list(pred_geoms), truth, ignored=list(edge))
    twins = _overlapping_pairs(truth)
    if twins:
        warnings.warn(f"{twins} pair{'s' if twins > 1 else ''} of the label polygons scored overlap at IoU >= "
                      f"{IOU_MATCH} (duplicates?): a prediction matches one of each pair, and the other counts as "
                      f"a building missed", stacklevel=2)
    return {"task": "buildings", "prediction": str(pred_dir), "labels": str(labels_path),
            **({"labels_layer": layer} if layer is not None else {}),
            **({"labels_where": where} if where is not None else {}),
            "pixel": pixel, "polygon": polygon, "n_predicted": len(pred_geoms), "n_truth": len(truth),
            "n_labels_left_out_edge": len(edge), "n_label_pairs_overlapping": twins,
            "valid_pixels": int(valid.sum()), **mapped,
            "rules": SCORING_RULES}


def _mapped_pixels(coverage: RasterPath, crs, transform, valid: np.ndarray, input_path: RasterPath) -> np.ndarray:
    """The grid's valid pixels inside the ``--coverage`` area; one line when there is none (the area
    does not overlap the scene, or only its nodata)."""
    shape = valid.shape
    bounds = grid_bounds(transform, shape[1], shape[0])
    try:
        area = MappedArea.read(coverage, crs, near=bounds)
    except ValueError as exc:
        raise EvaluationError(str(exc)) from exc
    inside = area.mask(transform, shape) & valid if area.meets(bounds) else np.zeros(shape, dtype=bool)
    if not inside.any():
        raise EvaluationError(f"the --coverage area ({area.source}) does not overlap the valid pixels of the "
                              f"predicted scene {raster_name(input_path)}: nothing to score")
    return inside


def _polygons(geoms: np.ndarray) -> np.ndarray:
    """The valid polygons in ``geoms``: each made valid, then taken apart down to single polygons (an
    invalid ring can become a GeometryCollection holding a MultiPolygon: one level was not enough)."""
    parts = shapely.make_valid(np.asarray(geoms, dtype=object))
    while True:
        parts = shapely.get_parts(parts)
        nested = shapely.get_type_id(parts) >= 4  # Multi* and GeometryCollection
        if not nested.any():
            break
    return np.asarray([p for p in parts if p.geom_type == "Polygon" and not p.is_empty], dtype=object)


def _rasterize(geoms: np.ndarray, transform, shape: tuple[int, int]) -> np.ndarray:
    if len(geoms) == 0:
        return np.zeros(shape, dtype=bool)
    return features.rasterize(((g, 1) for g in geoms), out_shape=shape, transform=transform, dtype="uint8") > 0


def _fraction_on_valid(geoms: np.ndarray, transform, shape, valid: np.ndarray, pixel_area: float) -> np.ndarray:
    """Share of each polygon's area that falls on valid pixels of the grid.

    Overlapping polygons are burnt in separate passes: burnt together, a pixel went to the last one
    listed, so a label under a later one (a building part inside its outline, a duplicate) lost that
    area, fell under half on valid pixels and was no ground truth: the scores changed with the
    labels' order in the file."""
    fractions = np.zeros(len(geoms))
    area_px = np.maximum(shapely.area(geoms) / pixel_area, 1.0) if len(geoms) else fractions
    for group in _disjoint_groups(geoms):
        ids = features.rasterize(((geoms[i], k + 1) for k, i in enumerate(group)), out_shape=shape,
                                 transform=transform, dtype="int32")
        on_valid = np.bincount(ids[valid].ravel(), minlength=len(group) + 1)[1:]
        fractions[group] = np.minimum(on_valid / area_px[group], 1.0)
    return fractions


def _disjoint_groups(geoms: np.ndarray) -> list[np.ndarray]:
    """Indices of ``geoms`` in groups whose polygons do not overlap (touching is not overlapping):
    greedily, each polygon into the first group holding none it overlaps. One group when none do."""
    if len(geoms) == 0:
        return []
    left, right = shapely.STRtree(geoms).query(geoms, predicate="intersects")
    pairs = left < right
    left, right = left[pairs], right[pairs]
    overlap = shapely.area(shapely.intersection(geoms[left], geoms[right])) > 0
    neighbours: dict[int, list[int]] = {}
    for a, b in zip(left[overlap].tolist(), right[overlap].tolist()):
        neighbours.setdefault(b, []).append(a)
    group_of = np.zeros(len(geoms), dtype=np.int64)
    for i in range(len(geoms)):
        taken = {int(group_of[j]) for j in neighbours.get(i, ())}
        group_of[i] = next(g for g in range(len(taken) + 1) if g not in taken)
    return [np.flatnonzero(group_of == g) for g in range(int(group_of.max()) + 1)]


def _class_indices(truth: np.ma.MaskedArray, truth_path: RasterPath, n_classes: int | None = None,
                   names: dict[int, str] | None = None) -> np.ndarray:
    """Truth class indices, 0 (ignored) where the truth raster has no data (its nodata value, mask or
    NaN), as the resampled path already does; a value that is no class index is an error."""
    data = np.ma.getdata(truth)
    ignored = np.ma.getmaskarray(truth)
    if np.issubdtype(data.dtype, np.floating):
        ignored = ignored | ~np.isfinite(data)
    values = data[~ignored]
    bad = values[(values < 0) | (values != np.floor(values))] if values.size else values
    if bad.size:
        raise EvaluationError(f"truth raster {truth_path} holds {bad.flat[0]:g}, not a class index (integers >= 0, "
                              f"0 unlabeled); mark no-data pixels with the raster's nodata value")
    if n_classes is not None and values.size and values.max() >= n_classes:
        # it said only "class index >= 6 found (truth max 255, ...)": a 255 of undeclared nodata, most often
        shown = ", ".join(f"{k} {v}" for k, v in sorted((names or {}).items()))
        raise EvaluationError(f"truth raster {truth_path} holds {values.max():g}, past the class map's classes "
                              f"(0-{n_classes - 1}{': ' + shown if shown else ''}); if it marks no data, declare "
                              f"it as the raster's nodata value (gdal_edit.py -a_nodata {values.max():g})")
    return np.where(ignored, 0, data).astype(np.int64)


def evaluate_classmap(pred_dir: Path, truth_path: RasterPath) -> dict[str, Any]:
    """Per-class IoU, mIoU, OA of ``pred_dir/classmap.tif`` against a class raster."""
    pred_dir, truth_path = Path(pred_dir), as_raster_path(truth_path)
    classmap = pred_dir / "classmap.tif"
    if not classmap.is_file():
        if not (pred_dir / "report.json").is_file():
            _report(pred_dir)  # says whether it is a batch's folder or no prediction at all
        raise EvaluationError(f"no classmap.tif in {pred_dir} (predicted with --no-classmap?)")
    if not raster_exists(truth_path):
        raise EvaluationError(f"truth raster not found: {truth_path}")
    with _open(classmap) as pred_ds, _open(truth_path) as truth_ds:
        names = {int(k): v for k, v in json.loads(pred_ds.tags().get("classes", "{}")).items()}
        n_classes = max(names) + 1 if names else 256
        same_grid = (truth_ds.width, truth_ds.height) == (pred_ds.width, pred_ds.height) and (
            truth_ds.crs is None or pred_ds.crs is None or truth_ds.transform.almost_equals(pred_ds.transform))
        if same_grid:
            reader = truth_ds
        elif truth_ds.crs is not None and pred_ds.crs is not None:
            reader = WarpedVRT(truth_ds, crs=pred_ds.crs, transform=pred_ds.transform, width=pred_ds.width,
                               height=pred_ds.height, resampling=Resampling.nearest, nodata=0)
        else:
            raise EvaluationError(f"truth {truth_ds.width}x{truth_ds.height} and prediction "
                                  f"{pred_ds.width}x{pred_ds.height} differ and cannot be resampled (no CRS)")
        confusion = np.zeros((n_classes, n_classes), dtype=np.int64)
        try:
            for tile in tile_grid(pred_ds.width, pred_ds.height, 1024, 0):
                pred = pred_ds.read(1, window=tile.core)
                truth = _class_indices(reader.read(1, window=tile.core, masked=True), truth_path, n_classes, names)
                confusion += confusion_matrix(truth, pred, n_classes)
        finally:
            if reader is not truth_ds:
                reader.close()
    if not confusion[1:, :].any():  # truth 0 is unlabeled: nothing was scored
        raise EvaluationError("no labelled truth pixel (class > 0) falls on the class map: the truth raster does "
                              "not overlap the prediction (or is unlabeled, 0, all over it)")
    scores = classmap_scores(confusion, names)
    return {"task": "classmap", "prediction": str(pred_dir), "truth": str(truth_path)} | scores
