"""``--runtime int8``: the shipped int8 U2-Net graph, its staleness check, and the quantiser."""
from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from rasterio.windows import Window

from geoseg import card as cards
from geoseg.ensemble_heads import has_int8_graph, head_models
from geoseg.infer import TileModel, int8_graph, load_head
from geoseg.pipeline import PredictError, PredictOptions
from geoseg.training.quantize import calibration_tiles, quantize_head
from tiles.source import Scene


def building_mask(probs: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    return probs[:, 1] + probs[:, 2] >= threshold


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


@pytest.fixture(scope="module")
def kampala_tile(buildings_dir: Path) -> np.ndarray:
    """A 512 px tile of the TEST area (the graph was calibrated on training areas only)."""
    with Scene(buildings_dir / "kampala" / "kampala_z19_1.tif") as scene:
        rgb, valid = scene.read(Window(0, 0, 512, 512))
    assert valid.mean() > 0.9
    return rgb[None]


U2NET_CARD = cards.weights_dir() / "buildings-u2net.json"


def test_shipped_int8_graph_agrees_with_float32(kampala_tile: np.ndarray):
    module, card = cards.load_model(U2NET_CARD)
    assert int8_graph(card) is not None, "the U2-Net's card ships an int8 graph made from its weights"
    fp32 = TileModel(module, card, runtime="onnx")
    int8 = TileModel(module, card, runtime="int8")
    assert (fp32.runtime, int8.runtime) == ("onnx", "int8")
    a, b = fp32.probabilities(kampala_tile), int8.probabilities(kampala_tile)
    assert b.shape == a.shape and np.allclose(b.sum(axis=1), 1.0, atol=1e-3)
    assert building_mask(a).mean() > 0.05  # a tile with buildings, so the agreement means something
    assert mask_iou(building_mask(a), building_mask(b)) > 0.9


def test_int8_falls_back_to_float32_where_no_graph_fits():
    module, card = load_head("landcover", "accurate")
    assert TileModel(module, card, runtime="int8", with_features=True).runtime == "onnx"
    module, card = load_head("buildings", "fast")
    assert int8_graph(card) is None and TileModel(module, card, runtime="int8").runtime == "onnx"
    with pytest.raises(ValueError, match="CPU only"):
        TileModel(module, card, device="cuda", runtime="int8")
    with pytest.raises(PredictError, match="--runtime"):
        PredictOptions(runtime="int9").check()


def test_the_accurate_ensemble_runs_its_u2net_member_through_that_graph_and_refuses_a_stale_one(tmp_path: Path):
    """The accurate head averages the U2-Net with a LiteUNet; ``--runtime int8`` runs the U2-Net member
    through the U2-Net's graph (its record's weights are the ones the graph was made from), the
    student in float32; a record naming other source weights keeps the graph out."""
    module, card = load_head("buildings", "accurate")
    assert card["architecture"] == "ProbabilityMean" and has_int8_graph(card)
    assert [m.runtime for m in head_models(module, card, "cpu", "int8")] == ["int8", "onnx"]
    assert [m.runtime for m in head_models(module, card, "cpu", "auto")] == ["onnx", "onnx"]
    source = Path(card["card_path"])
    raw = json.loads(source.read_text())
    raw["ensemble"]["members"][0]["weights_sha256"] = "0" * 64  # as if the U2-Net had been retrained since
    for name in (raw["weights"], raw["ensemble"]["members"][0]["int8_onnx"]["file"]):
        shutil.copy(source.parent / name, tmp_path / name)
    (tmp_path / source.name).write_text(json.dumps(raw))
    module, card = cards.load_model(tmp_path / source.name)
    with pytest.warns(UserWarning, match="other weights"):
        assert [m.runtime for m in head_models(module, card, "cpu", "int8")] == ["onnx", "onnx"]
    # the record right, but the graph beside it re-quantised since (here: another file of that name)
    raw = json.loads(source.read_text())
    (tmp_path / source.name).write_text(json.dumps(raw))
    graph = tmp_path / raw["ensemble"]["members"][0]["int8_onnx"]["file"]
    graph.write_bytes(graph.read_bytes() + b"\0")
    module, card = cards.load_model(tmp_path / source.name)
    with pytest.warns(UserWarning, match="other weights"):
        assert [m.runtime for m in head_models(module, card, "cpu", "int8")] == ["onnx", "onnx"]
    graph.unlink()
    with pytest.warns(UserWarning, match="not found: that member runs float32"):
        assert [m.runtime for m in head_models(module, card, "cpu", "int8")] == ["onnx", "onnx"]


def test_the_accurate_ensembles_u2net_member_is_the_shipped_u2net():
    """What lets the member use the U2-Net's int8 graph: its weights are the U2-Net's (stored fp16)."""
    ensemble, card = load_head("buildings", "accurate")
    u2net, _ = cards.load_model(U2NET_CARD)
    assert card["ensemble"]["members"][0]["weights_sha256"] == cards.weights_sha256(cards.read_card(U2NET_CARD)
                                                                                   | {"card_path": str(U2NET_CARD)})
    mine, theirs = ensemble.members[0].state_dict(), u2net.state_dict()
    assert mine.keys() == theirs.keys()
    for name, tensor in theirs.items():
        if tensor.is_floating_point():  # fp16 storage: relative error under 2**-10
            assert (mine[name] - tensor).abs().max() <= 1e-3 * tensor.abs().max() + 1e-6, name
        else:
            assert (mine[name] == tensor).all(), name


def test_a_graph_made_from_other_weights_is_not_used(tmp_path: Path):
    source = U2NET_CARD
    for name in (source.name, "buildings-u2net.pt", "buildings-u2net.int8.onnx"):
        shutil.copy(source.parent / name, tmp_path / name)
    card_path = tmp_path / source.name
    raw = json.loads(card_path.read_text())
    raw["int8_onnx"]["weights_sha256"] = "0" * 64  # as if the weights had been retrained since
    card_path.write_text(json.dumps(raw))
    module, card = cards.load_model(card_path)
    with pytest.warns(UserWarning, match="other weights"):
        assert TileModel(module, card, runtime="int8").runtime == "onnx"


def test_quantize_head_writes_a_working_graph_and_records_it(tmp_path: Path, buildings_dir: Path,
                                                             kampala_tile: np.ndarray):
    """The quantiser on the building student (small, so quick): graph beside the weights, card updated."""
    source = cards.shipped_card_path("buildings", "fast")
    raw = json.loads(source.read_text())
    for name in (source.name, raw["weights"]):
        shutil.copy(source.parent / name, tmp_path / name)
    scenes = [buildings_dir / "zanzibar" / "zanzibar_z19_1.tif"]
    assert len(calibration_tiles(scenes, 0.3, 512, per_scene=2)) == 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = quantize_head(tmp_path / source.name, scenes)
    assert out.parent == tmp_path and out.is_file()
    module, card = cards.load_model(tmp_path / source.name)
    assert card["int8_onnx"]["file"] == out.name and int8_graph(card) == out
    assert card["int8_onnx"]["calibration"]["scenes"] == ["zanzibar_z19_1.tif"]
    fp32, int8 = TileModel(module, card, runtime="onnx"), TileModel(module, card, runtime="int8")
    assert int8.runtime == "int8"
    a, b = fp32.probabilities(kampala_tile), int8.probabilities(kampala_tile)
    assert mask_iou(building_mask(a), building_mask(b)) > 0.8
