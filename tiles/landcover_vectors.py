"""Vector land-cover labels (polygons with a class attribute) -> class-index masks on an image's grid.

Why: teams keep land cover as polygons with a class field (``class = 'forest'``), not as rasters
on each image's grid; ``geoseg tile --target landcover`` took only class masks beside each image.
``--labels-class-field FIELD`` names the field: its values are matched to the chip set's
``classes.json`` by class name, else by class index (an integer, or its digits as text), and each
window of the image is rasterised from the polygons that meet it (class 0, unlabeled, where none
lies; where polygons overlap, the later feature of the file wins). A value that names no class
(a typo, a class missing from ``classes.json``, no value at all) is refused before any scene is
cut, in one line naming the values. The file is read by ``tiles.labels`` (layer, ``where``, CRS).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyogrio
import shapely
from affine import Affine
from rasterio import features
from rasterio.crs import CRS

from tiles.classes import CLASSES_FILE, find_classes_file, read_classes
from tiles.labels import (
    bounds_in,
    check_label_file,
    grid_bounds,
    polygon_layer,
    polygon_parts,
    read_labels,
)
from tiles.rasterpath import (
    RasterPath,
    as_raster_path,
    is_virtual,
    location_exists,
    raster_name,
)


def class_lookup(classes: list[dict[str, Any]]) -> dict[str, int]:
    """Class field value (as text) -> class index: each class's name and its index's digits."""
    lookup = {str(c["index"]): int(c["index"]) for c in classes}
    lookup.update({str(c["name"]): int(c["index"]) for c in classes})  # a name wins over an index's digits
    return lookup


def _as_text(value: Any) -> str | None:
    """A field value as ``class_lookup`` keys it (``3.0`` of a float field is 3); None for no value."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return None
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def class_indices(values: np.ndarray, classes: list[dict[str, Any]], where: str) -> np.ndarray:
    """The class index of each field value (uint8), or ValueError naming the values no class has."""
    lookup = class_lookup(classes)
    texts = [_as_text(v) for v in values]
    unknown = sorted({"(no value)" if t is None else repr(t) for t in texts if t not in lookup})
    if unknown:
        shown = ", ".join(unknown[:10]) + (", ..." if len(unknown) > 10 else "")
        names = ", ".join(f"{c['index']} {c['name']}" for c in classes)
        raise ValueError(f"{where}: class values {shown} are no class of the classes.json ({names}): "
                         f"fix the values or add the classes")
    return np.array([lookup[t] for t in texts], dtype=np.uint8)


def check_class_field(path: RasterPath, field: str, classes: list[dict[str, Any]], where: str | None = None,
                      layer: str | None = None) -> None:
    """What ``ClassPolygons.from_files`` would refuse of a file whatever the scene, reading only the
    field: those of ``tiles.labels.check_label_file``, a field the layer lacks, values no class has."""
    check_label_file(path, where, layer)
    chosen = polygon_layer(path, layer)
    fields = [str(f) for f in pyogrio.read_info(path, layer=chosen)["fields"]]
    if field not in fields:
        raise ValueError(f"{raster_name(path)} has no field {field!r} (its fields: {', '.join(fields) or 'none'})")
    frame = pyogrio.read_dataframe(path, layer=chosen, columns=[field], read_geometry=False, where=where)
    class_indices(frame[field].to_numpy(dtype=object), classes, f"{raster_name(path)} field {field}")


class ClassPolygons:
    """Land-cover polygons with their class indices, in one CRS, with a spatial index."""

    def __init__(self, polygons: np.ndarray, class_ids: np.ndarray):
        self.polygons = polygons
        self.class_ids = class_ids
        self.tree = shapely.STRtree(polygons)

    @classmethod
    def from_files(cls, paths: list[RasterPath], crs: CRS, field: str, classes: list[dict[str, Any]],
                   where: str | None = None, layer: str | None = None,
                   near: tuple[float, float, float, float] | None = None) -> ClassPolygons:
        """Read the polygons of vector files (any OGR format; no CRS means WGS84) into ``crs`` with the
        class index of their ``field`` value. ``near``: a box (left, bottom, right, top) in ``crs``:
        only the features around it are read (``tiles.labels.LabelIndex.from_files`` does the same)."""
        polygons, ids = [], []
        for path in map(as_raster_path, paths):
            declared = pyogrio.read_info(path, layer=polygon_layer(path, layer)).get("crs")
            file_crs = CRS.from_user_input(declared) if declared else CRS.from_epsg(4326)  # as LabelIndex reads it
            bbox = bounds_in(crs, file_crs, near) if near is not None else None
            frame = read_labels(path, where, bbox=bbox, layer=layer).sort_index()  # file order: the later wins
            if field not in frame.columns:
                raise ValueError(f"{raster_name(path)} has no field {field!r}")
            frame = frame.set_crs(file_crs, allow_override=True).to_crs(crs)
            values = class_indices(frame[field].to_numpy(dtype=object), classes, f"{raster_name(path)} field {field}")
            parts, source = polygon_parts(np.asarray(frame.geometry.values, dtype=object))
            polygons.append(parts)
            ids.append(values[source])
        return cls(np.concatenate(polygons) if polygons else np.empty(0, dtype=object),
                   np.concatenate(ids) if ids else np.empty(0, dtype=np.uint8))

    def meets(self, bounds: tuple[float, float, float, float]) -> bool:
        """Whether a polygon meets the box (left, bottom, right, top): a scene no polygon meets would be
        cut into chips that are all unlabeled (another place, or the wrong file)."""
        return bool(self.tree.query(shapely.box(*bounds), predicate="intersects").size)

    def mask(self, transform: Affine, shape: tuple[int, int]) -> np.ndarray:
        """uint8 class indices of a window (0 = unlabeled where no polygon lies)."""
        h, w = shape
        found = np.sort(self.tree.query(shapely.box(*grid_bounds(transform, w, h)), predicate="intersects"))
        if found.size == 0:
            return np.zeros(shape, dtype=np.uint8)
        pairs = ((self.polygons[i], int(self.class_ids[i])) for i in found)
        return features.rasterize(pairs, out_shape=shape, transform=transform, fill=0, dtype="uint8")


def check_vector_landcover(labels: list[RasterPath], field: str, chips_dir: Path, where: str | None = None,
                           layer: str | None = None) -> Path:
    """Check vector land-cover label files before any scene is cut (``check_class_field`` of each
    against the class list) and return the ``classes.json`` they are matched to
    (``vector_classes_file``); ValueError, one line."""
    for path in labels:
        if not location_exists(path):  # a folder may be one (an Esri File Geodatabase, x.gdb/)
            raise ValueError(f"--labels {path}: no such file or folder")
    classes_file = vector_classes_file(labels, chips_dir)
    classes = read_classes(classes_file)
    for path in labels:
        check_class_field(as_raster_path(path), field, classes, where, layer)
    return classes_file


def vector_classes_file(labels: list[RasterPath], chips_dir: Path) -> Path:
    """The ``classes.json`` that names vector land-cover labels' classes: beside the (first) label file
    or one folder up, as beside a class mask, else the one the chip set already holds (only that one for
    a label file read from an archive, ``/vsizip//a.zip/l.gpkg``); ValueError (one line) when there is none."""
    first = labels[0]
    held = chips_dir / CLASSES_FILE
    if is_virtual(first):  # in an archive: only the chip set's
        found = held if held.is_file() else None
        where = f"in the --out chip set ({first} is read from an archive, where it is not looked for)"
    else:
        found = find_classes_file(Path(first)) or (held if held.is_file() else None)
        where = "beside it or one folder up (or in the --out chip set)"
    if found is None:
        raise ValueError(f"{raster_name(first)}: no {CLASSES_FILE} {where} to match its class values to: write one "
                         f"([{{\"index\": 0, \"name\": \"unlabeled\"}}, {{\"index\": 1, \"name\": \"forest\"}}, ...])")
    return found
