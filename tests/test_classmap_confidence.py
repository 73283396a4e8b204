"""The class map's confidence statistics (``geoseg.classmap_confidence``) and the note for a scene
the shipped land-cover heads are unsure of."""
from __future__ import annotations

import numpy as np
import pytest

from geoseg.classmap_confidence import ConfidenceTally, uncertain_note


def test_the_tally_normalises_each_pixel_and_counts_only_kept_ones():
    """Resampled probabilities may be uint8-scaled (sum 255) or drift from 1: each pixel's top class
    is taken as a share of its own total; pixels outside ``keep``, or with no score, count nowhere."""
    probs = np.zeros((3, 2, 2), np.float32)
    probs[:, 0, 0] = [0, 204, 51]      # uint8 scale: top 0.8
    probs[:, 0, 1] = [0, 0.3, 0.3]     # unnormalised tie: top 0.5, not under the floor
    probs[:, 1, 0] = [0, 0.4, 0.6]     # dropped by keep
    probs[:, 1, 1] = 0                 # no score: not counted
    keep = np.array([[True, True], [False, True]])
    tally = ConfidenceTally()
    tally.add(probs, keep)
    tally.add(np.full((3, 1, 1), 1 / 3, np.float32), np.ones((1, 1), bool))  # top 1/3: under the floor
    stats = tally.as_dict()
    assert stats["pixels"] == 3
    assert stats["mean_max_probability"] == pytest.approx((0.8 + 0.5 + 1 / 3) / 3, abs=1e-4)
    assert stats["low_confidence_share"] == pytest.approx(1 / 3, abs=1e-4)
    assert ConfidenceTally().as_dict()["mean_max_probability"] is None


def test_the_note_follows_the_cards_rule():
    card = {"name": "lc", "uncertain_scene": {"mean_max_probability_below": 0.85}}
    assert "uncertain" in uncertain_note({"mean_max_probability": 0.84}, card)
    assert uncertain_note({"mean_max_probability": 0.86}, card) is None
    assert uncertain_note({"mean_max_probability": 0.5}, {"name": "no rule"}) is None
    assert uncertain_note({"mean_max_probability": None}, card) is None
