"""How much of the validation chips' ground the training chips also cover, from the chip footprints.

Why: ``geoseg tile --split val`` puts whatever scene it is given in validation. A validation scene of
the same ground as a training scene (the same block at another zoom, or the same file re-encoded)
gave validation chips whose ground was 99.9 % inside the training chips', and ``geoseg train``
reported ``metrics.val`` on them (and chose its weights on them) without a word: figures of memory,
not of generalisation. The data README says split by area, never by chip: the shared scenes show the
same buildings at three zooms. ``index.geojson`` records each chip's footprint in lon/lat
(``tiles.chips.footprint_lonlat``), so the check costs a few polygon unions.

Areas are measured in a Lambert azimuthal equal-area projection centred on each validation scene's
chips (lon/lat degrees are not areas: a degree of longitude shrinks with the latitude), with the
training chips that lie in the same hemisphere projected alike. Projecting vertex by vertex keeps a
chip across the antimeridian whole. Chips without a footprint (cut from images without
georeferencing, or chip sets from before footprints were recorded) and packs (``.npz``: no
footprints) are left out; with no footprint of either split the share is unknown (None).
"""
from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import shapely
from pyproj import Transformer
from pyproj.exceptions import ProjError
from shapely.errors import GEOSException
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry

__all__ = ["LEAK_SHARE", "Footprint", "GroundOverlap", "card_share", "chip_footprints", "chip_dir_overlap",
           "val_ground_in_train"]

#: above this share of the validation chips' ground inside the training chips', ``geoseg train`` warns.
#: Why 5 %: neighbouring blocks cut with ``--overlap`` or a few border chips touch a little; a validation
#: scene of the training ground at another zoom or date is 100 %, and any sizeable part of the validation
#: ground seen in training already flatters the val figures and the choice of weights made on them
LEAK_SHARE = 0.05
#: a training chip is projected with a validation scene's when all its corners lie within this angle of
#: the scene's centre (degrees): well inside the hemisphere, where the projection is faithful; farther
#: ground cannot overlap a validation scene's chips, which are far smaller
NEAR_DEG = 60.0


class Footprint(NamedTuple):
    """A chip's split, scene and footprint (a GeoJSON geometry in lon/lat degrees, None if unknown)."""

    split: str
    scene: str
    geometry: Mapping[str, Any] | None


@dataclass(frozen=True)
class GroundOverlap:
    """``share``: the part (0 to 1) of the validation chips' ground, each validation scene's counted
    once, that lies inside the training chips' ground; ``scenes``: ``(val scene, train scene, share)``
    for each pair whose ground meets, ``share`` that of the validation scene's ground inside the
    training scene's, largest first."""

    share: float
    scenes: tuple[tuple[str, str, float], ...]


def _unit_vectors(lonlat: np.ndarray) -> np.ndarray:
    lon, lat = np.radians(lonlat[:, 0]), np.radians(lonlat[:, 1])
    return np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], axis=1)


def _centre(geoms: list[BaseGeometry]) -> tuple[float, float]:
    """The lon/lat of the mean direction of the geometries' vertices (robust across the antimeridian)."""
    mean = _unit_vectors(np.concatenate([shapely.get_coordinates(g) for g in geoms])).mean(axis=0)
    return math.degrees(math.atan2(mean[1], mean[0])), math.degrees(math.atan2(mean[2], math.hypot(mean[0], mean[1])))


def _near(geom: BaseGeometry, centre: tuple[float, float]) -> bool:
    """Whether every vertex of ``geom`` lies within ``NEAR_DEG`` of ``centre`` on the sphere."""
    c = _unit_vectors(np.array([centre]))[0]
    return bool((_unit_vectors(shapely.get_coordinates(geom)) @ c >= math.cos(math.radians(NEAR_DEG))).all())


def _polygons(footprints: Iterable[Footprint], split: str) -> dict[str, list[BaseGeometry]]:
    """The footprints of ``split`` that are polygons with an area, by scene (others are left out)."""
    found: dict[str, list[BaseGeometry]] = {}
    for fp in footprints:
        if fp.split != split or not fp.geometry:
            continue
        try:
            geom = shape(fp.geometry)
        except (ValueError, TypeError, KeyError, AttributeError):  # a malformed footprint says nothing
            continue
        if geom.geom_type in ("Polygon", "MultiPolygon") and not geom.is_empty:
            coords = shapely.get_coordinates(geom)
            if np.isfinite(coords).all():
                found.setdefault(fp.scene, []).append(geom)
    return found


def val_ground_in_train(footprints: Iterable[Footprint]) -> GroundOverlap | None:
    """The share of the validation chips' ground that the training chips cover, and which scenes meet.

    Each validation scene's chips are merged (their own overlaps counted once) and measured with the
    training chips in an equal-area projection centred on them; the shares are weighted by each
    validation scene's ground. None when no validation or no training chip has a footprint."""
    footprints = list(footprints)
    val, train = _polygons(footprints, "val"), _polygons(footprints, "train")
    if not val or not train:
        return None
    total = inside = 0.0
    pairs: list[tuple[str, str, float]] = []
    for val_scene, geoms in sorted(val.items()):
        lon0, lat0 = _centre(geoms)
        to_area = Transformer.from_crs("EPSG:4326", f"+proj=laea +lat_0={lat0} +lon_0={lon0} +datum=WGS84 +units=m",
                                       always_xy=True)

        def projected(gs: list[BaseGeometry]) -> BaseGeometry:
            # make_valid: a footprint whose corners warped into a bow-tie must not fail the union
            return shapely.make_valid(shapely.unary_union(
                [shapely.make_valid(shapely.transform(g, lambda xy: np.column_stack(to_area.transform(xy[:, 0], xy[:, 1]))))
                 for g in gs]))

        ground = projected(geoms)
        if not ground.area > 0:
            continue
        near = {scene: [g for g in gs if _near(g, (lon0, lat0))] for scene, gs in train.items()}
        trained = {scene: projected(gs) for scene, gs in near.items() if gs}
        total += ground.area
        if trained:
            inside += ground.intersection(shapely.unary_union(list(trained.values()))).area
        for train_scene, tground in trained.items():
            met = ground.intersection(tground).area / ground.area
            if met > 1e-6:  # neighbours sharing an edge meet in float noise (1e-16), no ground
                pairs.append((val_scene, train_scene, min(1.0, met)))
    if not total > 0:
        return None
    pairs.sort(key=lambda p: (-p[2], p[0], p[1]))
    return GroundOverlap(share=min(1.0, inside / total), scenes=tuple(pairs))


def chip_footprints(chips_dir: Path) -> list[Footprint]:
    """The footprints of a chip directory's written chips (``index.geojson``; windows skipped as
    invalid, never trained on, are left out)."""
    index = json.loads((Path(chips_dir) / "index.geojson").read_text())
    found = []
    for feature in index.get("features", []):
        props = feature.get("properties") or {}
        if props.get("image") and props.get("label"):
            found.append(Footprint(str(props.get("split")), str(props.get("scene") or props.get("chip_id")),
                                   feature.get("geometry")))
    return found


def chip_dir_overlap(path: Path) -> GroundOverlap | None:
    """:func:`val_ground_in_train` of a chip directory; None for a pack (``.npz``, no footprints) or
    an index that cannot be read (loading the chips then says what is wrong)."""
    path = Path(path)
    if not (path / "index.geojson").is_file():
        return None
    try:
        return val_ground_in_train(chip_footprints(path))
    except (OSError, ValueError, AttributeError, TypeError, ProjError, GEOSException):
        return None


def card_share(overlap: GroundOverlap | None) -> float | None:
    """The share as a card records it (``training.val_ground_in_train``): 4 decimals, None when unknown."""
    return None if overlap is None else round(overlap.share, 4)

