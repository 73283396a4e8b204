"""How sure the land-cover head was of the class map it wrote, per scene (report.json's
``classmap_confidence``).

Why: the shipped land-cover heads learned from Dubai alone; off Dubai (the Zanzibar, Nairobi and
Kampala building scenes) they still write a confident-looking class map (zanzibar_z19_1: 69 %
vegetation from the accurate head, 75 % water from the fast one), with nothing to tell a GIS
analyst it is unreliable. The per-pixel maximum class probability, tallied block by block while
the class map is written (no extra pass over the scene, no memory that grows with it), says how
sure the head was. A land-cover card may hold an ``uncertain_scene`` rule measured on its own
validation tiles (docs/models.md, "Class-map confidence"); a scene below it gets a note.
"""
from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["LOW_CONFIDENCE_FLOOR", "ConfidenceTally", "uncertain_note"]

#: a pixel whose most likely class has less than this probability counts as low-confidence
LOW_CONFIDENCE_FLOOR = 0.5


class ConfidenceTally:
    """Running sums of the per-pixel maximum class probability over the class map's valid pixels."""

    def __init__(self, floor: float = LOW_CONFIDENCE_FLOOR) -> None:
        self.floor = floor
        self.pixels = 0
        self._sum = 0.0
        self._low = 0

    def add(self, probs: np.ndarray, keep: np.ndarray) -> None:
        """One block: ``probs`` (n_classes, h, w) class scores (normalised here: a resampled block
        may sum to 255 or stray from 1), ``keep`` (h, w) the pixels the class map labels."""
        total = probs.sum(axis=0)
        keep = keep & (total > 0)
        if not keep.any():
            return
        top = probs.max(axis=0)[keep] / total[keep]
        self.pixels += int(top.size)
        self._sum += float(top.sum(dtype=np.float64))
        self._low += int(np.count_nonzero(top < self.floor))

    def as_dict(self) -> dict[str, Any]:
        """``mean_max_probability`` and ``low_confidence_share`` in [0, 1] (None without a valid pixel)."""
        return {
            "mean_max_probability": round(self._sum / self.pixels, 4) if self.pixels else None,
            "low_confidence_share": round(self._low / self.pixels, 4) if self.pixels else None,
            "low_confidence_floor": self.floor,
            "pixels": self.pixels,
        }


def uncertain_note(confidence: dict[str, Any], card: dict[str, Any]) -> str | None:
    """The note for a scene the class map is unsure of by ``card``'s ``uncertain_scene`` rule
    (``{"mean_max_probability_below": x, ...}``), or None (no rule, no valid pixel, or above it)."""
    rule = card.get("uncertain_scene")
    mean = confidence.get("mean_max_probability")
    if not rule or mean is None or "mean_max_probability_below" not in rule:
        return None
    below = float(rule["mean_max_probability_below"])
    if mean >= below:
        return None
    digits = 3  # as many as tell the mean from the bar (0.8495 read "0.850, under 0.850")
    while digits < 9 and f"{mean:.{digits}f}" == f"{below:.{digits}f}":
        digits += 1
    return (f"the land-cover class map is uncertain for this scene (mean class probability {mean:.{digits}f}, under "
            f"{card.get('name', 'the model')}'s {below:.{digits}f}): the imagery looks unlike the model's training data; "
            f"treat its classes with caution (docs/models.md, 'Class-map confidence')")
