"""Which working-grid pixels are building, and which of them seed a separate building.

Why a module of its own: these few rules turn the U2-Net's blended probabilities into the
class raster ``geoseg.vectorize`` polygonises, and they are tuned on validation data
(``python -m geoseg.training.tune_buildings``). The tuned values travel in the building model card
(``"postprocess": {...}``), so the pipeline and the tuning script run this same code and a
retrained model ships its own settings. A card without the field keeps the historical
behaviour (``BuildingPostprocess()``).

Rules, in order, on one strip of probabilities ``(3, h, w)`` (background, interior, outline):
1. building where P(interior) + P(outline) >= ``threshold`` (on valid pixels only);
2. optional binary opening (removes specks and thin spurs such as dirt tracks), then
   closing (fills pinholes and notches), by ``opening_px`` / ``closing_px`` steps of the
   4-neighbour cross; the valid mask is applied again afterwards;
3. a building pixel is interior (a seed) where P(interior) >= ``seed_ratio`` x P(outline),
   else outline; optionally the seeds are eroded by ``seed_erosion_px`` steps of the cross, so
   a thin bridge of interior between two touching houses no longer joins their seeds (a house
   whose seed vanishes stays one polygon); optionally (``split_h_px`` > 0) the seeds are also cut
   along the watershed lines of the footprint's distance transform between its h-maxima, so
   two houses whose interiors merge through a neck narrower than both (a shared wall the model
   did not draw) get a seed each, while a plain rectangle keeps one; ``geoseg.vectorize`` splits
   a component between its interior seeds;
4. buildings under ``min_area_m2`` are dropped by the vectoriser.

Optionally (``landcover_threshold`` > 0) a second cue joins rule 1: pixels where the
land-cover head's P(building), resampled onto the building grid, reaches that threshold are
building too. The land-cover head (AttResUNet, Dubai) finds the grey, white and concrete roofs
the U2-Net misses, at 1.1 m; so its pixels only ever extend or add buildings as *outline*:
they join a U2-Net building's seed or form a building of their own, but never seed a split.

Every rule but the distance split looks at most ``context_rows`` rows away; the distance split
looks at whole components, and is exact because the vectoriser only emits a component whose
rows all lie inside the window its classes were computed on.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np
from scipy import ndimage

from geoseg import vectorize

_CROSS = ndimage.generate_binary_structure(2, 1)


@dataclass(frozen=True)
class BuildingPostprocess:
    """Post-processing settings of the building head (defaults = behaviour before tuning)."""

    threshold: float = 0.5
    min_area_m2: float = 3.0
    seed_ratio: float = 1.0
    opening_px: int = 0
    closing_px: int = 0
    seed_erosion_px: int = 0
    #: minimum height (px) of a distance-transform maximum that gets a seed of its own (0: off)
    split_h_px: float = 0.0
    #: land-cover P(building) from which a pixel is building too, seedless (0: off; see module docstring)
    landcover_threshold: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"building threshold must be in (0, 1), got {self.threshold}")
        if not self.min_area_m2 >= 0:
            raise ValueError(f"min_area_m2 must be >= 0, got {self.min_area_m2}")
        if not 0 <= self.split_h_px <= 16:
            raise ValueError(f"split_h_px must be in [0, 16], got {self.split_h_px}")
        if not 0.0 <= self.landcover_threshold < 1.0:
            raise ValueError(f"landcover_threshold must be in [0, 1), got {self.landcover_threshold}")
        if not self.seed_ratio > 0:
            raise ValueError(f"seed_ratio must be > 0, got {self.seed_ratio}")
        for name in ("opening_px", "closing_px", "seed_erosion_px"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 8:
                raise ValueError(f"{name} must be an integer in [0, 8], got {value!r}")

    @property
    def context_rows(self) -> int:
        """Rows of context each side of a strip for the morphology to be exact at strip borders."""
        return 2 * (self.opening_px + self.closing_px) + self.seed_erosion_px

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def postprocess_from_card(card: dict[str, Any], threshold: float | None = None,
                          min_area_m2: float | None = None) -> BuildingPostprocess:
    """Settings from the card's optional ``postprocess`` field; explicit user values win.

    Unknown keys or bad values raise ``ValueError`` naming the card (a typo must not be
    silently ignored: it would ship untuned settings). How the values were chosen is
    recorded in the card's ``metrics``, not here.
    """
    raw = card.get("postprocess") or {}
    if not isinstance(raw, dict):
        raise ValueError(f"model card {card.get('name', '?')}: 'postprocess' must be an object, got {raw!r}")
    known = {f.name for f in fields(BuildingPostprocess)}
    settings = {k: v for k, v in raw.items() if k in known}
    unknown = sorted(k for k in raw if k not in known)
    if unknown:
        raise ValueError(f"model card {card.get('name', '?')}: unknown postprocess keys {unknown}; "
                         f"known: {sorted(known)}")
    try:
        post = BuildingPostprocess(**settings)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"model card {card.get('name', '?')}: {exc}") from exc
    if threshold is not None:
        post = replace(post, threshold=float(threshold))
    if min_area_m2 is not None:
        post = replace(post, min_area_m2=float(min_area_m2))
    return post


def building_classes(probs: np.ndarray, valid: np.ndarray, post: BuildingPostprocess,
                     landcover: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(classes uint8 0/1/2, building probability float32)`` of a ``(3, h, w)`` probability strip.

    ``valid`` (h, w) marks pixels that may be building (the pipeline passes the covered mask
    eroded by one pixel). For exact results at strip borders the strip must carry
    ``post.context_rows`` rows of context each side; the caller crops them afterwards.
    ``landcover`` (h, w): the land-cover head's P(building) on the same pixels, required when
    ``post.landcover_threshold`` is set.
    """
    if probs.ndim != 3 or probs.shape[0] != 3:
        raise ValueError(f"expected (3, h, w) building probabilities, got shape {probs.shape}")
    valid = np.asarray(valid, bool)  # a 0/1 uint8 mask failed in the opening's `mask &= valid`
    if valid.shape != probs.shape[1:]:
        raise ValueError(f"valid mask shape {valid.shape} != probability shape {probs.shape[1:]}")
    building = np.where(valid, 1.0 - probs[0], 0.0).astype(np.float32)
    mask = seeded = building >= post.threshold
    if post.landcover_threshold:
        if landcover is None or landcover.shape != building.shape:
            raise ValueError("landcover_threshold is set: the land-cover P(building) of the strip is needed")
        cue = np.where(valid, landcover, 0.0).astype(np.float32)
        mask = seeded | (cue >= post.landcover_threshold)
        building = np.maximum(building, cue)
    if post.opening_px:
        mask = ndimage.binary_opening(mask, _CROSS, iterations=post.opening_px, border_value=0)
    if post.closing_px:
        # border_value 1: the raster edge does not erode what the closing dilated
        mask = ndimage.binary_dilation(mask, _CROSS, iterations=post.closing_px)
        mask = ndimage.binary_erosion(mask, _CROSS, iterations=post.closing_px, border_value=1)
    if post.opening_px or post.closing_px:
        mask &= valid
    if post.seed_ratio == 1.0:
        classes = vectorize.classes_from_probabilities(probs, mask)
    else:
        classes = np.where(probs[1] >= post.seed_ratio * probs[2], vectorize.INTERIOR,
                           vectorize.OUTLINE).astype(np.uint8)
        classes[~mask] = vectorize.BACKGROUND
    if post.landcover_threshold:
        classes[mask & ~seeded] = vectorize.OUTLINE  # the land-cover cue never seeds a split
    if post.seed_erosion_px:
        seeds = classes == vectorize.INTERIOR
        kept = ndimage.binary_erosion(seeds, _CROSS, iterations=post.seed_erosion_px, border_value=1)
        classes[seeds & ~kept] = vectorize.OUTLINE
    if post.split_h_px:
        classes[distance_split_lines(classes != vectorize.BACKGROUND, post.split_h_px)
                & (classes == vectorize.INTERIOR)] = vectorize.OUTLINE
    return classes, building


def distance_split_lines(mask: np.ndarray, h: float) -> np.ndarray:
    """Pixels on the watershed lines of ``-EDT(mask)`` between its h-maxima: where a footprint narrows.

    Each regional maximum of the distance to the background that stands ``h`` px above the
    saddle joining it to a higher one marks one building; the one-pixel lines between their
    catchments are returned. A convex footprint has a single maximum, hence no line.
    """
    from skimage.morphology import h_maxima
    from skimage.segmentation import watershed

    if not mask.any():
        return np.zeros(mask.shape, bool)
    distance = ndimage.distance_transform_edt(mask).astype(np.float32)
    markers, n = ndimage.label(h_maxima(distance, h), structure=np.ones((3, 3), bool))
    if n < 2:
        return np.zeros(mask.shape, bool)
    basins = watershed(-distance, markers, mask=mask, watershed_line=True)
    return mask & (basins == 0)
