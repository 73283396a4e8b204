"""The class map's confidence statistics (``geoseg.classmap_confidence``) and the note for a scene
the shipped land-cover heads are unsure of."""
from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from geoseg.classmap_confidence import ConfidenceTally, uncertain_note
from geoseg.cli import app
from geoseg.paths import data_root
from geoseg.pipeline import PredictOptions, predict_scene


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
    # just under the bar: enough digits to show it (it read "0.850, under lc's 0.850")
    assert "probability 0.8495, under lc's 0.8500" in uncertain_note({"mean_max_probability": 0.84953}, card)
    assert "probability 0.840, under lc's 0.850" in uncertain_note({"mean_max_probability": 0.84}, card)


def test_the_shipped_fast_class_map_warns_off_dubai_and_not_on_a_dubai_validation_image(tmp_path):
    """The shipped heads learned from Dubai alone: on zanzibar_z19_1 the fast one calls 75 % of the
    scene water, with a mean class probability of 0.83, yet nothing said so. Its card's rule (chosen
    on Dubai tile 5 and the building scenes) now warns on the CLI and in report.json; the lowest of
    the tile-5 images (image_part_008, 0.87) passes without one."""
    zanzibar = data_root() / "buildings" / "zanzibar" / "zanzibar_z19_1.tif"
    result = CliRunner().invoke(app, ["predict", str(zanzibar), "--out", str(tmp_path / "z"), "--profile", "fast",
                                      "--no-buildings"])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if "class map is uncertain" in line]
    assert len(lines) == 1 and lines[0].startswith("warning: the land-cover class map is uncertain")
    report = json.loads((tmp_path / "z" / "report.json").read_text())
    assert report["classmap_confidence"]["mean_max_probability"] < 0.85
    assert any("class map is uncertain" in w for w in report["warnings"])

    dubai = data_root() / "landcover" / "dubai" / "tile_5" / "image_part_008.jpg"
    report = predict_scene(dubai, tmp_path / "d", PredictOptions(profile="fast", buildings=False, device="cpu"),
                           warn_notes=False)
    assert report["classmap_confidence"]["mean_max_probability"] > 0.85
    assert not [w for w in report["warnings"] if "uncertain" in w]


@pytest.mark.parametrize("rule", [{"mean_max_probability_below": 85}, {"mean_max_probability_below": "0.85"},
                                  {"below": 0.85}, 0.85])
def test_a_card_with_a_bad_uncertain_scene_rule_is_refused_when_read(rule, tmp_path):
    """Applied at the end of a run, a bad rule would have failed it after all its work: the card
    loader refuses it up front, naming the field."""
    from geoseg.card import ModelCardError, read_card, shipped_card_path

    card = json.loads(shipped_card_path("gcn", "fast").read_text()) | {"uncertain_scene": rule}
    path = tmp_path / "card.json"
    path.write_text(json.dumps(card))
    with pytest.raises(ModelCardError, match="uncertain_scene"):
        read_card(path)
