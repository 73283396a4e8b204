"""One scene's training chips as a batch job (``SceneJob``, picklable for ``tiles.batch`` and Dask):
the scene read at the chip options' GSD and bands, its labels (building polygons, land-cover class
masks or class polygons) placed on it, its chips written and their index features returned, and
the label files a re-run watches. ``geoseg tile`` builds the job and runs it over the scenes. With
``coverage`` (``--coverage``, ``tiles.mapped_area``) only the mapped part of each scene is labelled.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from affine import Affine

from tiles.chips import (
    ChipOptions,
    building_chips,
    landcover_chips,
    landcover_mask_path,
    vector_landcover_chips,
)
from tiles.chipset import ChipSet, options_key
from tiles.classes import CLASSES_FILE, read_classes
from tiles.labels import LabelIndex, grid_bounds
from tiles.landcover_vectors import ClassPolygons
from tiles.mapped_area import MappedArea
from tiles.rasterpath import (
    RasterPath,
    beside,
    folder_name,
    location_exists,
    parent_of,
    raster_name,
    raster_stem,
)
from tiles.source import Scene
from tiles.splits import scene_area, scene_split

#: ``SceneJob.target`` of land-cover chips (else buildings)
LANDCOVER = "landcover"


@dataclass(frozen=True)
class SceneJob:
    """Everything a worker needs to chip one scene (picklable)."""

    out: Path
    opts: ChipOptions
    target: str
    labels: tuple[RasterPath, ...] | None  # local files as Paths; /vsizip/... as strings
    split: str | None
    labels_where: str | None = None  # OGR SQL condition: the label features that are buildings
    labels_layer: str | None = None  # the building layer of label files with several
    labels_class_field: str | None = None  # land cover: the label polygons' class field
    coverage: RasterPath | None = None  # polygons of the area where the labels are complete

    def __call__(self, scene_path: RasterPath, part: Path) -> int:
        if self.target == LANDCOVER:
            features = self._landcover(scene_path)
        else:
            features = self._buildings(scene_path)
        part.write_text(json.dumps(features))
        return len(features)

    def _buildings(self, path: RasterPath) -> list[dict]:
        label_files = self.label_files(path)
        missing = [p for p in label_files if not location_exists(p)]
        name = raster_name(path)
        if missing:
            raise FileNotFoundError(f"{name}: label file {missing[0]} not found (use --labels)")
        area = scene_area(path)[0]
        with Scene(path, bands=self.opts.bands, gsd=self.opts.gsd) as scene:
            if scene.crs is None:
                raise ValueError(f"{name} has no CRS: vector labels cannot be placed")
            index = LabelIndex.from_files(label_files, scene.crs, self.labels_where, near=scene_box(scene, self.opts.size),
                                          layer=self.labels_layer)
            if not index.meets(grid_bounds(scene.transform, scene.width, scene.height)):
                files = ", ".join(raster_name(p) for p in label_files)
                if self.labels_where:
                    files += f" where {self.labels_where}"
                why = (f"{index.in_files} polygons in {files}, their extent misses the scene" if index.in_files
                       else f"{files} holds no polygon")
                raise ValueError(f"no label polygon overlaps {name} ({why})")
            mapped = self.mapped_area(scene, name)
            recs = list(building_chips(scene, index, self.out, self.opts, name, area,
                                       self.split or scene_split(path, landcover=False), chip_prefix(path, self.target),
                                       mapped))
            check_mapped_pixels(recs, mapped, name)
            return [r.to_feature() for r in recs]

    def _landcover(self, image: RasterPath) -> list[dict]:
        tile_dir = folder_name(image)
        prefix = chip_prefix(image, self.target)
        # vector land cover can be cut at --gsd (polygons have no resolution); class masks cannot
        with Scene(image, bands=self.opts.bands, gsd=self.opts.gsd if self.labels_class_field else None) as scene:
            if self.labels_class_field:  # vector land cover: polygons rasterised by tiles
                if scene.crs is None:
                    raise ValueError(f"{raster_name(image)} has no CRS: vector labels cannot be placed")
                polygons = ClassPolygons.from_files(
                    list(self.labels or ()), scene.crs, self.labels_class_field, read_classes(self.out / CLASSES_FILE),
                    self.labels_where, self.labels_layer, near=scene_box(scene, self.opts.size))
                if not polygons.meets(grid_bounds(scene.transform, scene.width, scene.height)):
                    files = ", ".join(raster_name(p) for p in self.labels or ())
                    raise ValueError(f"no land-cover polygon of {files}{f' where {self.labels_where}' if self.labels_where else ''} "
                                     f"overlaps {raster_name(image)}: its chips would all be unlabeled (another place, "
                                     f"or the wrong file)")
                mapped = self.mapped_area(scene, raster_name(image))
                recs = list(vector_landcover_chips(scene, polygons, self.out, self.opts,
                                                   f"{tile_dir}/{raster_name(image)}", prefix, tile_dir,
                                                   self.split or scene_split(image, landcover=True), mapped))
                check_mapped_pixels(recs, mapped, raster_name(image))
                return [r.to_feature() for r in recs]
            recs = landcover_chips(scene, landcover_mask_path(Path(image)), self.out, self.opts,
                                   f"{tile_dir}/{raster_name(image)}",
                                   chip_prefix=prefix, area=tile_dir,
                                   split=self.split or scene_split(image, landcover=True))
            return [r.to_feature() for r in recs]

    def mapped_area(self, scene: Scene, name: str) -> MappedArea | None:
        """The ``coverage`` polygons around ``scene`` in its CRS (None without ``coverage``); a
        coverage that does not overlap the scene is an error: none of its pixels could be labelled."""
        if self.coverage is None:
            return None
        if scene.crs is None:
            raise ValueError(f"{name} has no CRS: the --coverage area cannot be placed")
        mapped = MappedArea.read(self.coverage, scene.crs, near=scene_box(scene, self.opts.size))
        if not mapped.meets(grid_bounds(scene.transform, scene.width, scene.height)):
            raise ValueError(f"the --coverage area ({mapped.source}) does not overlap {name}: no pixel of it is "
                             f"mapped (another place, or the wrong file)")
        return mapped

    def chip_set(self) -> ChipSet:
        """This run's chip set in OUT: its options key (all that decides the chip files and records).
        The coverage goes with the labels (``coverage <file>``, only when given: keys of runs without
        it are as they were), so a re-run with another one cuts its scenes again, with a note."""
        labels = ([str(p) for p in self.labels or ()] + ([f"layer {self.labels_layer}"] if self.labels_layer else [])
                  + ([f"where {self.labels_where}"] if self.labels_where else [])
                  + ([f"class field {self.labels_class_field}"] if self.labels_class_field else [])
                  + ([f"coverage {self.coverage}"] if self.coverage is not None else []))
        return ChipSet(self.out, options_key(self.opts, self.target, labels, self.split))

    def watched_files(self, scene: RasterPath) -> list[RasterPath]:
        """The files whose change makes a re-run cut ``scene`` again: its label files and the coverage."""
        return self.label_files(scene) + ([self.coverage] if self.coverage is not None else [])

    def label_files(self, scene: RasterPath) -> list[RasterPath]:
        """The files a scene's labels come from (a re-run cuts the scene again when one changes): without
        ``--labels``, the ``labels.geojson`` beside it (in its archive: ``tiles.rasterpath.beside``)."""
        if self.target == LANDCOVER and not self.labels_class_field:
            return [landcover_mask_path(Path(scene))]
        return list(self.labels) if self.labels else [beside(scene, "labels.geojson")]


def check_mapped_pixels(records: list, mapped: MappedArea | None, name: str) -> None:
    """Refuse a scene whose windows valid enough all lie outside the mapped area (it meets the scene
    only on nodata, or between pixel centres): no chip would be written and no note would say why."""
    if mapped is None or any(r.status != "skipped" for r in records):
        return
    if any(r.mapped_fraction == 0 for r in records):
        # windows skipped for --min-valid are not scored against the area (mapped_fraction None)
        where = ("where the scene has no data, or in windows under --min-valid"
                 if any(r.mapped_fraction is None for r in records) else "where the scene has no data")
        raise ValueError(f"the --coverage area ({mapped.source}) holds no valid pixel of {name} in a window cut: no "
                         f"pixel of it is mapped (it meets the scene only {where})")


def scene_box(scene: Scene, margin: int) -> tuple[float, float, float, float]:
    """The scene's working grid and ``margin`` pixels around it (a chip size: windows padded past
    the edge of a small scene, the outline band of buildings across it), as (left, bottom, right,
    top) in its CRS: the ground whose label features a scene's chips need."""
    return grid_bounds(scene.transform @ Affine.translation(-margin, -margin), scene.width + 2 * margin,
                       scene.height + 2 * margin)


def chip_prefix(path: RasterPath, target: str) -> str:
    """How a scene's chip files are named before ``_rNNN_cNNN``: its stem (buildings; a subdataset's
    file and its own name, ``a_2`` for ``GTIFF_DIR:2:a.tif``) or ``<dataset>_<tile>_<image>`` (land
    cover, ``image_part_`` shortened to ``p``)."""
    if target == LANDCOVER:
        folder = parent_of(path)
        return f"{folder_name(folder)}_{raster_name(folder)}_{raster_stem(path)}".replace("image_part_", "p")
    return raster_stem(path)
