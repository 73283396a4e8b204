"""Inputs far coarser than the models' working GSD: refused before any work, unless asked for.

Why: each head runs at its card's GSD (buildings 0.3 m, land cover 1.1 m for the shipped models),
and upsampling is capped (``geoseg.card.upsampling_cap``: 2x unless a card says more). A raster of a
continent in a few hundred pixels (world.rgb.tif: 78 km pixels, 260 000x the building model's
0.3 m) ran with only the warning "upsampled 2x only, expect poor results" and wrote a class map
and buildings of no meaning. Past ``MAX_COARSER`` times a head's working GSD what the head maps
(a house, a road) lies under one input pixel, so such a run is refused with one line naming both
GSDs and what to do; between the head's cap and ``MAX_COARSER`` the warning stays. The CLI (one input or
a batch: that input fails), ``predict_scene`` and the service's upload check
(``api.intake``, 422 at submit) all ask ``too_coarse``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from geoseg import card as cards
from geoseg.card import MAX_UPSAMPLING, task_card_path, upsampling_cap
from geoseg.options import PredictOptions

__all__ = ["GSD_SLACK", "MAX_COARSER", "TooCoarse", "requested_cards", "too_coarse"]

#: an input more than this many times coarser than a head's working GSD is refused
MAX_COARSER = 10.0
#: how far over ``MAX_COARSER`` an input may measure and still count as at it: GSDs are measured on
#: the ground, so a nominal 3 m UTM pixel measures 3.001 m near its zone's central meridian (scale
#: 0.9996), and 3 m imagery (PlanetScope) was refused as "10.004x ... use imagery of 3 m or finer"
GSD_SLACK = 0.01


def _length(metres: float, digits: int = 3) -> str:
    return f"{metres / 1000:.{digits}g} km" if metres >= 1000 else f"{metres:.{digits}g} m"


def _digits_apart(value: float, limit: float) -> int:
    """The fewest significant digits (3 at least) that tell ``value`` from ``limit``. Why: a 3.0003 m
    input, just over a 3 m limit, read "input GSD 3 m is 10x ... (more than 10x ...): use imagery of
    3 m or finer", which contradicts itself."""
    digits = 3
    while digits < 9 and f"{value:.{digits}g}" == f"{limit:.{digits}g}":
        digits += 1
    return digits


@dataclass(frozen=True)
class TooCoarse:
    """An input too coarse for one head the run asked for (the most outmatched one)."""

    input_gsd: float
    task: str  # buildings | landcover
    model: str
    model_gsd: float
    #: the other head asked for, when its model is within the limit: (task, model, its GSD)
    within: tuple[str, str, float] | None = None
    max_upsampling: float = MAX_UPSAMPLING  # the head's cap (``upsampling_cap``), for the message

    @property
    def ratio(self) -> float:
        return self.input_gsd / self.model_gsd

    def reason(self) -> str:
        """What is wrong, without naming options (the CLI and the service name theirs)."""
        what = "a house" if self.task == "buildings" else "a road or a house"
        ratio = f"{self.ratio:,.0f}"
        if round(self.ratio) <= MAX_COARSER:  # just over the limit: as many digits as show it
            ratio = f"{self.ratio:.{_digits_apart(self.ratio, MAX_COARSER)}g}"
        digits = _digits_apart(self.input_gsd, MAX_COARSER * self.model_gsd)
        return (f"input GSD {_length(self.input_gsd, digits)} is {ratio}x the {self.model_gsd:.3g} m the "
                f"{self.model} model works at (more than {MAX_COARSER:g}x: {what} is at most a pixel or two "
                f"across, and inputs are upsampled {self.max_upsampling:g}x at most)")

    def advice(self, only: str, georeferencing: str | None, anyway: str, verb: str = "give") -> str:
        """``reason`` and the ways past it: finer imagery, ``only`` (how to ask for the other output
        alone, offered when its head is within the limit), ``georeferencing`` (how to say the pixels
        are finer than the georeferencing says; None where there is no such option), ``anyway``; ``verb``
        says how the user gives them (``give`` options, ``send`` form fields)."""
        ways = []
        if self.within is not None:
            task, model, gsd = self.within
            ways.append(f"{only} for the {'class map' if task == 'landcover' else 'buildings'} alone "
                        f"(the {model} model works at {gsd:.3g} m)")
        if georeferencing:
            ways.append(f"{georeferencing} if the georeferencing misstates the pixel size")
        ways.append(f"{anyway} to predict it anyway")
        listed = ", ".join(ways[:-1]) + " or " + ways[-1] if len(ways) > 1 else ways[0]
        return f"{self.reason()}: use imagery of {_length(MAX_COARSER * self.model_gsd)} or finer, or {verb} {listed}"


def requested_cards(options: PredictOptions) -> dict[str, dict[str, Any]]:
    """The cards of the heads whose outputs ``options`` ask for (buildings; land cover for the class
    map), read from their files without loading weights; a card that cannot be read is left out
    (loading it says why)."""
    found = {}
    for task, wanted in (("buildings", options.buildings), ("landcover", options.classmap)):
        if not wanted:
            continue
        try:
            found[task] = cards.read_card(task_card_path(task, options))
        except (ValueError, OSError):
            continue
    return found


def too_coarse(input_gsd: float | None, options: PredictOptions) -> TooCoarse | None:
    """The head ``input_gsd`` (metres; None: unknown, nothing to compare) is too coarse for, or None
    (also with ``options.allow_coarse``)."""
    if input_gsd is None or options.allow_coarse:
        return None
    found = requested_cards(options)
    gsds = {task: (str(card.get("name", task)), float(card["gsd_m"])) for task, card in found.items() if card.get("gsd_m")}
    over = {task: input_gsd / gsd for task, (_, gsd) in gsds.items()
            if input_gsd / gsd > MAX_COARSER * (1 + GSD_SLACK)}
    if not over:
        return None
    task = max(over, key=over.get)
    within = next(((t, *gsds[t]) for t in gsds if t not in over), None)
    return TooCoarse(input_gsd, task, *gsds[task], within=within, max_upsampling=upsampling_cap(found[task]))
