"""Model cards: save/load round trip, shipped weights, clear errors."""
import json
import warnings
from pathlib import Path

import pytest
import torch

from geoseg.card import (ModelCardError, default_card_path, load_default, load_model, normalise, save_model,
                         shipped_card_path)
from geoseg.models.u2net import U2Net


def _card(name="tiny-u2net"):
    return {"name": name, "task": "buildings", "architecture": "U2Net",
            "arch_kwargs": {"mid": 4, "out": 8}, "classes": [{"index": 0, "name": "background", "colour": "#000000"}],
            "normalisation": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}}


def test_save_then_load_round_trip_in_fp16(tmp_path):
    torch.manual_seed(0)
    model = U2Net(mid=4, out=8).eval()
    card_path = save_model(model, _card(), tmp_path)
    assert (tmp_path / "tiny-u2net.pt").is_file() and card_path.name == "tiny-u2net.json"
    written = json.loads(card_path.read_text())
    assert written["weights"] == "tiny-u2net.pt" and written["n_parameters"] > 0 and written["date"]
    loaded, card = load_model(tmp_path)
    assert not loaded.training
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        a, b = model(x), loaded(x)
    assert torch.allclose(a, b, atol=5e-2)  # fp16 storage
    assert card["name"] == "tiny-u2net"


def test_errors_are_clear(tmp_path):
    with pytest.raises(ModelCardError, match="not found"):
        load_model(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"name": "x"}))
    with pytest.raises(ModelCardError, match="lacks"):
        load_model(bad)
    c = _card("noweights")
    c["weights"] = "absent.pt"
    (tmp_path / "noweights.json").write_text(json.dumps(c))
    with pytest.raises(ModelCardError, match="absent.pt"):
        load_model(tmp_path / "noweights.json")
    with pytest.raises(ModelCardError, match="unknown task"):
        default_card_path("roads")
    for typo in ("Accurate", "FAST", None):  # each loaded the U2-Net teacher, neither profile's building head
        with pytest.raises(ModelCardError, match=f"unknown profile {typo!r}; expected 'accurate' or 'fast'"):
            default_card_path("buildings", typo)
        with pytest.raises(ModelCardError, match="unknown profile"):
            shipped_card_path("buildings", typo)


@pytest.mark.parametrize("task", ["buildings", "landcover", "gcn"])
def test_shipped_cards_load(task):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # untrained placeholders warn until the GPU weights ship
        model, card = load_default(task)
    assert card["task"] == task
    assert {c["index"] for c in card["classes"]} == set(range(len(card["classes"])))
    assert card["gsd_m"] > 0 and len(card["normalisation"]["mean"]) == 3
    assert any("OpenStreetMap" in c or "Humans in the Loop" in c for c in card["credits"])
    if card.get("weights"):
        assert (default_card_path(task).parent / card["weights"]).stat().st_size <= 16 * 2**20


def test_normalise_follows_the_card():
    img = torch.full((1, 3, 2, 2), 255, dtype=torch.uint8)
    out = normalise(img, _card())
    assert torch.allclose(out, torch.full_like(out, 2.0))
    # what tiles.Scene.read gives a library user: an array (it failed on 'ndarray' has no 'float')
    assert torch.allclose(normalise(img.numpy(), _card()), out)
    with pytest.raises(ValueError, match=r"float images in \[0, 1\]: the models read values of 0..255"):
        normalise(img.numpy() / 255.0, _card())  # it found no building, without a word


def test_a_card_is_strict_json_even_with_a_score_that_has_no_value(tmp_path):
    """A land-cover split with no labelled pixel scores mIoU NaN (an empty mean), and the card was
    written with a bare NaN: valid for Python, refused by JSON.parse, jq and most other readers."""
    import json as json_module

    import numpy as np

    from geoseg.card import write_card

    path = write_card({"name": "x", "metrics": {"test": {"miou": float("nan"), "oa": np.float32("inf"),
                                                         "iou": [0.5, np.float64("nan")]}}}, tmp_path / "c.json")

    def refuse(constant: str):
        raise ValueError(constant)

    card = json_module.loads(path.read_text(), parse_constant=refuse)
    assert card["metrics"]["test"] == {"miou": None, "oa": None, "iou": [0.5, None]}


def _edited(tmp_path: Path, edit) -> Path:
    """The shipped U2-Net's card, edited by ``edit``, beside a copy of its weights."""
    import shutil

    card = json.loads(default_card_path("buildings").with_name("buildings-u2net.json").read_text())
    edit(card)
    shutil.copy(default_card_path("buildings").with_name("buildings-u2net.pt"), tmp_path / "buildings-u2net.pt")
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(card))
    return path


@pytest.mark.parametrize("edit, words", [
    (lambda c: c["arch_kwargs"].update(n_classes=2), "arch_kwargs.n_classes is 2 but classes lists 3"),
    (lambda c: c.update(classes=c["classes"][:2]), "arch_kwargs.n_classes is 3 but classes lists 2"),
    (lambda c: c["normalisation"].update(mean=[0.5, 0.5]), 'normalisation must be {"mean": [3 numbers]'),
    (lambda c: c["normalisation"].update(std=[0.1, 0.0, 0.1]), "[3 numbers > 0]"),
    (lambda c: c["normalisation"].update(std=[0.1, 0.1, True]), "[3 numbers > 0]"),
    (lambda c: c["normalisation"].update(mean=[0.5, float("nan"), 0.5]), 'normalisation must be {"mean": [3 numbers]'),
    (lambda c: c.update(gsd_m=0), "gsd_m must be a positive number of metres, got 0"),
    (lambda c: c.update(architecture="AttResUNet"), "AttResUNet cannot be built from its arch_kwargs"),
    (lambda c: c["arch_kwargs"].update(mid=16), "do not match the U2Net its card edited.json describes"),
])
def test_an_edited_card_fails_to_load_in_one_line(tmp_path, edit, words):
    """Such cards failed with torch's multi-line state-dict dump, 'the size of tensor a (3) must match ...'
    once inference ran, or loaded (a GSD of 0)."""
    with pytest.raises(ModelCardError) as caught:
        load_model(_edited(tmp_path, edit))
    assert words in str(caught.value) and "\n" not in str(caught.value)


def test_a_file_that_is_not_utf8_is_no_card(tmp_path):
    """``geoseg tile`` asks it of every JSON in its --out: a UTF-16 file from PowerShell ended the run with
    "'utf-8' codec can't decode byte 0xff"."""
    from geoseg.card import looks_like_card

    (tmp_path / "data.json").write_bytes('{"architecture": "U2Net", "arch_kwargs": {}}'.encode("utf-16"))
    assert not looks_like_card(tmp_path / "data.json")


def test_a_card_or_class_list_saved_with_a_bom_is_read(tmp_path):
    """Notepad and PowerShell 5 save UTF-8 with a byte-order mark: a shipped card edited there, or a
    team's classes.json, was refused as 'not valid JSON (Unexpected UTF-8 BOM)'."""
    from geoseg.card import find_card, looks_like_card, read_card
    from tiles.classes import read_classes

    shipped = default_card_path("buildings")
    card = tmp_path / shipped.name
    card.write_bytes(b"\xef\xbb\xbf" + shipped.read_bytes().replace(b"\n", b"\r\n"))
    assert read_card(card)["name"] == json.loads(shipped.read_text())["name"] and looks_like_card(card)
    other = tmp_path / "landcover.json"  # geoseg train's --out holds both tasks' cards: found by task
    other.write_bytes(b"\xef\xbb\xbf" + default_card_path("landcover").read_bytes())
    assert find_card(tmp_path, "buildings") == card and find_card(tmp_path, "landcover") == other
    classes = tmp_path / "classes.json"
    listed = [{"index": i, "name": name} for i, name in enumerate(("unlabeled", "built", "natural"))]
    classes.write_text("\ufeff" + json.dumps(listed), encoding="utf-8")
    assert [c["name"] for c in read_classes(classes)] == ["unlabeled", "built", "natural"]
