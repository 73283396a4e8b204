"""What a set of training chips says about itself, for the model card: its one working GSD
(``gsd_m``, the scale ``geoseg predict`` resamples to), its chips' side (``tile_size``), the areas
each split holds, where the chips were read from, and whose data they are (``credits``).

Why here and not in the training loop: these are read from the chips alone, before and
whatever the training, and ``geoseg train`` checks the GSD before it starts. No torch.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from geoseg.card import CREDITS_BUILDINGS, CREDITS_LANDCOVER, LANDCOVER_CLASSES, landcover_card_classes
from geoseg.training.data import chip_blocks, chip_scene, same_gsd

# Not published; estimated at ~1.1 m (1.0-1.3 m) from a tennis-court pair, residential
# street widths and car lengths measured in pixels (docs/models.md).
DUBAI_GSD_M = 1.1

DUBAI_GSD_NOTE = ("Dubai imagery has no published GSD; ~1.1 m (1.0-1.3 m) estimated from tennis courts, "
                  "street widths and car lengths (docs/models.md)")


def working_gsd(data: dict[str, Any], estimate: float | None = None) -> tuple[float, bool]:
    """The chips' one GSD in metres and whether it is ``estimate`` (chips that carry none).

    The card's ``gsd_m`` is the scale ``geoseg predict`` resamples scenes to, so it must be the
    scale the model was trained at, not a constant. Mixed GSDs (or some chips with, some
    without) are refused: they have no single working scale.
    """
    gsd = np.asarray(data.get("gsd", np.full(len(data["split"]), np.nan)), np.float64)
    known = np.isfinite(gsd) & (gsd > 0)
    if not known.any():
        if estimate is None:
            raise ValueError("the chips carry no GSD (not georeferenced): cannot tell the model's working scale")
        return estimate, True
    if not known.all():
        raise ValueError(f"{int((~known).sum())} of {len(gsd)} chips carry no GSD: cut all chips at one --gsd")
    lo, hi = float(gsd.min()), float(gsd.max())
    if not same_gsd([lo, hi]):
        raise ValueError(f"chips of mixed GSD ({lo:.3g}-{hi:.3g} m): cut them at one --gsd (land-cover image + mask "
                         f"pairs, which --gsd cannot resample: into a chip folder per GSD, or resampled first)")
    return round(float(np.median(gsd)), 4), False


def with_stated_gsd(data: dict[str, Any], gsd: float | None, task: str) -> dict[str, Any]:
    """The chips, with ``gsd`` (``geoseg train --gsd``) as the GSD of chips that carry none; refused
    when they carry one, and without it for chips that carry none and are not Dubai's (whose ~1.1 m
    estimate the card records with its note).

    Why: a team's own land-cover images without georeferencing were trained into a card that said
    Dubai's estimated 1.1 m and its note, and ``geoseg predict`` then resampled its 0.3 m scenes to 1.1 m."""
    have = np.asarray(data.get("gsd", np.full(len(data["split"]), np.nan)), np.float64)
    known = np.isfinite(have) & (have > 0)
    if gsd is not None:
        if known.any():
            raise ValueError(f"the chips carry their own GSD ({float(np.median(have[known])):.3g} m): --gsd is for "
                             f"chips cut from images without georeferencing")
        return {**data, "gsd": np.full(len(data["split"]), float(gsd), np.float32)}
    if not known.any() and not (task == "landcover" and dubai_landcover(data)):
        raise ValueError("the chips carry no GSD (cut from images without georeferencing): give --gsd METRES, what "
                         "one of their pixels measures (the scale geoseg predict resamples scenes to for this model)")
    return data


def dubai_landcover(data: dict[str, Any]) -> bool:
    """Whether land-cover chips are the shared Dubai set's: its classes, and every chip cut from it
    (``dubai_tile_N`` chip names; a pack from before chip names were kept counts as it)."""
    chip_ids = np.asarray(data.get("chip_id", [])).astype(str).tolist()
    dubai_classes = [c["name"] for c in landcover_card_classes(data.get("classes"))] == [
        c["name"] for c in LANDCOVER_CLASSES]
    return dubai_classes and all(c.startswith("dubai_") for c in chip_ids)


def chip_window(data: dict[str, Any]) -> int:
    """The card's ``tile_size``: the side in pixels of the chips (``geoseg tile --size``, the largest
    when they differ), the window the model was validated and tested on; ``geoseg predict`` reads at
    least this much around every tile (``tiles.grid.context_margins``).

    Why: every trained card said 512 whatever the chips were cut at, so a model validated on 1024 px
    chips ran on 512 px windows, and one trained on 256 px chips was read 512 px windows at
    ``--tile-size 256``: neither what it was chosen on."""
    return int(max(np.asarray(data["images"]).shape[-2:]))


#: folder names that say which split a scene is for, not where it lies (``mine/train/``, README)
SPLIT_FOLDERS = frozenset({"train", "val", "test"})


def chip_places(data: dict[str, Any]) -> np.ndarray:
    """Each chip's place as a card names it: its block (``nairobi-2``), or its scene's area or tile
    (``tile_5``); its scene (``ortho_north``) where that area is a folder named after a split.

    Why: a team that keeps its scenes in ``mine/train/`` and ``mine/val/`` (as the README shows) got a
    card whose splits said ``{"train": "train", "val": "val"}`` and credits ``(areas train, val)``:
    nothing about which ground it was trained and chosen on."""
    if "chip_id" not in data or "area" not in data:
        return np.asarray(data.get("area", data["split"])).astype(str)
    chip_ids = np.asarray(data["chip_id"]).astype(str).tolist()
    return np.array([chip_scene(chip_id) if name in SPLIT_FOLDERS else name
                     for name, chip_id in zip(chip_blocks(data).tolist(), chip_ids)], dtype=str)


def data_splits(data: dict[str, Any]) -> dict[str, str]:
    """What each split of these chips holds (:func:`chip_places`), read from the chips themselves so
    that the card never claims other data."""
    names = chip_places(data)
    splits = np.asarray(data["split"]).astype(str)
    return {s: " + ".join(sorted(set(names[splits == s].tolist()))) or "none" for s in ("train", "val", "test")}


def data_source(data: dict[str, Any]) -> str:
    """The chip directory or pack the chips were read from (``load_dataset``), else the pack's source."""
    return str(data.get("source") or data.get("meta", {}).get("source") or "chips (arrays given in code)")


#: the areas of the shared building data (docs: data README); their chips carry its credits
SHARED_BUILDING_AREAS = frozenset({"zanzibar", "nairobi", "kampala"})


def shared_scene_names(data: dict[str, Any]) -> bool:
    """Whether every chip was cut from a scene named as the shared data's (``nairobi_z19_1``); chips
    without ids (arrays given in code) count by their area alone.

    Why: a chip's area is its scene's folder when the name does not say it, so a team's own
    ``nairobi/ortho_2024.tif`` chips were credited to OpenAerialMap and OpenStreetMap."""
    if "chip_id" not in data:
        return True
    blocks = chip_blocks(data)
    areas = np.asarray(data["area"]).astype(str)
    return bool(all(b != a for b, a in zip(blocks.tolist(), areas.tolist())))


def data_credits(data: dict[str, Any], task: str) -> list[str]:
    """The card's ``credits``: the shared data's licences when every chip comes from it (the three
    building areas; Dubai's ``dubai_tile_N`` land-cover chips with its classes), else a line saying
    they are not recorded. Why: a model trained on a user's own imagery and labels was credited to
    OpenAerialMap and OpenStreetMap (or Humans in the Loop), claiming data it never saw."""
    areas = sorted(set(np.asarray(data["area"]).astype(str).tolist()))
    if task == "buildings" and set(areas) <= SHARED_BUILDING_AREAS and shared_scene_names(data):
        return list(CREDITS_BUILDINGS)
    if task == "landcover" and dubai_landcover(data):
        return list(CREDITS_LANDCOVER)
    places = sorted(set(chip_places(data).tolist()))
    return [f"Training data: {data_source(data)} (areas {', '.join(places)}); its licences were not recorded"]
