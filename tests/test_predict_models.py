"""Tiny randomly initialised model cards for pipeline tests, and checks of ``geoseg.infer``.

Real trained weights may not be shipped when the tests run; the pipeline contract
(grids, masks, files, seams) does not depend on the weights, so tests use small
random models saved through the real card format.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from geoseg import card as cards
from geoseg.infer import OWN_MODEL, TileModel, load_head, refine_with_gcn
from geoseg.models.gcn import SuperpixelGCN
from geoseg.models.students import FastSegNet
from geoseg.paths import data_root
from geoseg.superpixels import n_node_features

NORMALISATION = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


def calibrate_buildings(model: FastSegNet, building_share: float) -> None:
    """Shift the head's biases so a random net calls ``building_share`` of a real scene 'building'.

    No training: one forward pass on a real tile picks the bias at that quantile, so the
    random (but image-dependent) features give building blobs of realistic extent.
    """
    with rasterio.open(data_root() / "buildings" / "kampala" / "kampala_z19_1.tif") as src:
        image = src.read(window=rasterio.windows.Window(0, 0, 256, 256))
    x = (torch.from_numpy(image).float()[None] / 255.0 - torch.tensor(NORMALISATION["mean"]).view(1, 3, 1, 1)) / \
        torch.tensor(NORMALISATION["std"]).view(1, 3, 1, 1)
    model.eval()
    with torch.no_grad():
        logits = model(x)[0]
        margin = (logits[0] - logits[1]).flatten()
        model.head.bias[1] += torch.quantile(margin, 1.0 - building_share)
        model.head.bias[2] -= 100.0  # no outline class: each blob is one building


def make_tiny_models(root: Path, landcover_gsd: float = 0.6, buildings_gsd: float = 0.3) -> dict[str, str]:
    """Save tiny random buildings / landcover / gcn models with cards; returns task -> card path."""
    torch.manual_seed(0)
    root = Path(root)
    out = {}
    # FastSegNet students: the cheapest architectures the card format knows (tests stay fast on 2 cores)
    arch = {"widths": [8, 8, 16, 16, 16], "depths": [1, 1, 1, 1]}
    b = FastSegNet(3, **arch)
    calibrate_buildings(b, building_share=0.3)
    out["buildings"] = str(cards.save_model(b, {
        "name": "test-buildings", "task": "buildings", "architecture": "FastSegNet",
        "arch_kwargs": {"n_classes": 3, **arch}, "classes": cards.BUILDING_CLASSES,
        "bands": [1, 2, 3], "normalisation": NORMALISATION, "gsd_m": buildings_gsd, "tile_size": 256,
    }, root / "buildings"))
    lc = FastSegNet(6, ignore_first_class=True, **arch)
    out["landcover"] = str(cards.save_model(lc, {
        "name": "test-landcover", "task": "landcover", "architecture": "FastSegNet",
        "arch_kwargs": {"n_classes": 6, "ignore_first_class": True, **arch}, "classes": cards.LANDCOVER_CLASSES,
        "bands": [1, 2, 3], "normalisation": NORMALISATION, "gsd_m": landcover_gsd, "tile_size": 256,
    }, root / "landcover"))
    widths = arch["widths"][1:]
    in_features = n_node_features(widths[0], 5)
    g = SuperpixelGCN(in_features=in_features, n_classes=6, hidden=16, n_layers=2)
    out["gcn"] = str(cards.save_model(g, {
        "name": "test-gcn", "task": "gcn", "architecture": "SuperpixelGCN",
        "arch_kwargs": {"in_features": in_features, "n_classes": 6, "hidden": 16, "n_layers": 2},
        "classes": cards.LANDCOVER_CLASSES, "normalisation": NORMALISATION,
        "graph": {"pixels_per_segment": 256}, "fusion": {"alpha": 0.5},
    }, root / "gcn"))
    return out


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, str]:
    return make_tiny_models(tmp_path_factory.mktemp("models"))


def real_tile(size: int = 128) -> np.ndarray:
    with rasterio.open(data_root() / "buildings" / "kampala" / "kampala_z19_1.tif") as src:
        return src.read(window=rasterio.windows.Window(64, 64, size, size))


def test_tile_model_gives_probabilities(tiny_models):
    model = TileModel(*load_head("buildings", model_dir=Path(tiny_models["buildings"])))
    tiles = np.stack([real_tile(), real_tile()[:, ::-1].copy()])
    probs = model.probabilities(tiles)
    assert probs.shape == (2, 3, 128, 128) and probs.dtype == np.float32
    assert np.allclose(probs.sum(1), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="uint8"):
        model.probabilities(tiles.astype(np.float32))


def test_gcn_refinement_keeps_a_distribution(tiny_models):
    lc = TileModel(*load_head("landcover", model_dir=Path(tiny_models["landcover"])), with_features=True)
    gcn, gcn_card = load_head("gcn", model_dir=Path(tiny_models["gcn"]))
    image = real_tile()
    probs, feats = lc.probabilities_and_features(image[None])
    assert feats.shape[-2:] == (128, 128)
    valid = np.ones((128, 128), bool)
    refined = refine_with_gcn(image, probs[0], feats[0], valid, gcn, gcn_card)
    assert refined.shape == probs[0].shape
    assert np.allclose(refined.sum(0), 1.0, atol=1e-4)
    assert np.all(refined[0] == 0)  # 'unlabeled' is never predicted
    # superpixels: the refined map is piecewise smoother than the CNN's
    assert len(np.unique(refined.argmax(0))) <= len(np.unique(probs[0].argmax(0))) + 1
    assert np.array_equal(refine_with_gcn(image, probs[0], feats[0], ~valid, gcn, gcn_card), probs[0])


def test_a_given_model_is_recorded_by_its_own_profile_not_the_runs(tmp_path):
    """``--model buildings=own.json --profile fast`` recorded the model's profile as 'fast' in
    report.json whatever it was (a U2-Net teacher too): --profile does not choose a given model. Its
    card's own ``profile`` is kept (a distilled student's 'fast'), else it is 'own model'."""
    paths = make_tiny_models(tmp_path / "m")
    _, card = load_head("buildings", profile="fast", model_dir=Path(paths["buildings"]))
    assert card["profile"] == OWN_MODEL
    student = json.loads(Path(paths["buildings"]).read_text()) | {"profile": "fast"}
    Path(paths["buildings"]).write_text(json.dumps(student))
    _, card = load_head("buildings", profile="accurate", model_dir=Path(paths["buildings"]))
    assert card["profile"] == "fast"


def test_fast_profile_falls_back_with_a_warning(monkeypatch, tmp_path):
    monkeypatch.setattr(cards, "weights_dir", lambda: tmp_path)
    paths = make_tiny_models(tmp_path / "m")
    accurate = cards.default_card_path("buildings").stem  # the accurate profile's card, no -fast beside it
    Path(paths["buildings"]).with_suffix(".pt").rename(tmp_path / f"{accurate}.pt")
    card = json.loads(Path(paths["buildings"]).read_text()) | {"name": accurate, "weights": f"{accurate}.pt"}
    (tmp_path / f"{accurate}.json").write_text(json.dumps(card))
    with pytest.warns(UserWarning, match="no fast student"):
        _, used = load_head("buildings", profile="fast")
    assert used["profile"] == "accurate"
    with pytest.raises(cards.ModelCardError, match="no landcover model"):
        load_head("landcover")


def test_onnx_runtime_matches_torch(tiny_models, tmp_path, monkeypatch):
    monkeypatch.setenv("GEOSEG_CACHE", str(tmp_path))
    module, card = load_head("landcover", model_dir=Path(tiny_models["landcover"]))
    tiles = np.stack([real_tile(96), real_tile(96)[:, :, ::-1].copy()])
    eager = TileModel(module, card, runtime="torch", with_features=True)
    onnx = TileModel(module, card, runtime="onnx", with_features=True)
    assert list(tmp_path.glob("onnx/*.onnx")), "the exported graph is cached"
    for a, b in zip(eager.probabilities_and_features(tiles), onnx.probabilities_and_features(tiles)):
        assert a.shape == b.shape
        assert np.allclose(a, b, atol=1e-4)
    with pytest.raises(ValueError, match="runtime"):
        TileModel(module, card, runtime="tensorrt")


def test_onnx_runtime_runs_when_the_cache_cannot_be_written(tiny_models, tmp_path, monkeypatch):
    """A read-only or missing home (containers, service accounts) made every CPU predict fail with
    'Read-only file system: ~/.cache'; the graph now goes to a private temp folder, with a warning."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")  # mkdir under a file fails even for root, unlike a chmod
    monkeypatch.setenv("GEOSEG_CACHE", str(blocker))
    module, card = load_head("buildings", model_dir=Path(tiny_models["buildings"]))
    with pytest.warns(UserWarning, match="GEOSEG_CACHE"):
        model = TileModel(module, card, runtime="onnx")
    tiles = np.stack([real_tile(96)])
    assert np.allclose(model.probabilities(tiles), TileModel(module, card, runtime="torch").probabilities(tiles),
                       atol=1e-4)


def test_onnx_runtime_runs_without_a_home_folder_and_names_a_full_temp_folder(tiny_models, tmp_path, monkeypatch):
    """No HOME and a user id without a passwd entry (OpenShift's random ids, ``env -i``) ended every run
    with 'Could not determine home directory.'; it is a cache that cannot be written. And with the
    temp folder full too, the error was a bare 'No space left on device', naming no folder."""
    import errno

    from geoseg import infer

    monkeypatch.delenv("GEOSEG_CACHE", raising=False)

    def no_home():
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.setattr(Path, "home", staticmethod(no_home))
    module, card = load_head("buildings", model_dir=Path(tiny_models["buildings"]))
    with pytest.warns(UserWarning, match=r"~/.cache/geoseg \(no home folder\) is not writable .*no home folder"):
        model = TileModel(module, card, runtime="onnx")
    assert model.probabilities(np.stack([real_tile(96)])).shape[0] == 1

    def full(folder, name, head, with_features):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(infer, "_export_into", full)
    with pytest.warns(UserWarning), pytest.raises(OSError, match="No space left on device: exporting the model's "
                                                                 "ONNX graph into .*TMPDIR.*GEOSEG_CACHE") as raised:
        TileModel(module, card, runtime="onnx")
    assert raised.value.errno == errno.ENOSPC  # still told apart as a full disk


def test_a_cached_graph_that_cannot_be_loaded_is_exported_again_with_a_warning(tiny_models, tmp_path, monkeypatch):
    """A cached graph left truncated (a full disk while another process exported it) failed every
    run, for ever, with ONNX Runtime's INVALID_PROTOBUF and no word of the cache."""
    monkeypatch.setenv("GEOSEG_CACHE", str(tmp_path))
    module, card = load_head("buildings", model_dir=Path(tiny_models["buildings"]))
    reference = TileModel(module, card, runtime="onnx")
    (cached,) = tmp_path.glob("onnx/*.onnx")
    cached.write_bytes(cached.read_bytes()[:1000])
    with pytest.warns(UserWarning, match=f"the cached ONNX graph {cached} cannot be loaded .*remove it"):
        model = TileModel(module, card, runtime="onnx")
    tiles = np.stack([real_tile(96)])
    assert np.allclose(model.probabilities(tiles), reference.probabilities(tiles), atol=1e-6)
    # a failure that is not the file's (an operator, memory) is not blamed on the cache: exporting again
    # would fail alike, and the user was sent to delete a healthy cache
    import onnxruntime as ort

    def refuse(*args, **kwargs):
        raise RuntimeError("Could not find an implementation for SomeOp(99) node")

    monkeypatch.setattr(ort, "InferenceSession", refuse)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(RuntimeError, match="SomeOp"):
            TileModel(module, card, runtime="onnx")


def test_onnx_workers_do_not_busy_wait_between_runs(tiny_models, tmp_path, monkeypatch):
    """Reads and the class map run beside the model on the same cores: ORT's idle workers must
    not spin; the switch (for benchmarks) is honoured."""
    from geoseg import infer

    monkeypatch.setenv("GEOSEG_CACHE", str(tmp_path))
    module, card = load_head("buildings", model_dir=Path(tiny_models["buildings"]))
    for spinning, expected in ((False, "0"), (True, "1")):
        monkeypatch.setattr(infer, "ORT_SPINNING", spinning)
        model = TileModel(module, card, runtime="onnx")
        options = model._session.get_session_options()
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == expected
        assert model.probabilities(real_tile(64)[None]).shape == (1, 3, 64, 64)


def test_a_card_of_another_task_is_refused_before_loading(tiny_models):
    """`--model buildings=LANDCOVER_CARD` ran the land-cover model over every tile, then failed on
    "expected (3, h, w) building probabilities"; `--model landcover=BUILDINGS_CARD` said "U2Net
    exposes no features for the GCN"."""
    with pytest.raises(cards.ModelCardError, match="is a landcover model card, not a buildings one"):
        load_head("buildings", model_dir=Path(tiny_models["landcover"]))
    with pytest.raises(cards.ModelCardError, match="is a buildings model card, not a landcover one"):
        load_head("landcover", model_dir=Path(tiny_models["buildings"]).parent)


def test_a_folder_of_both_tasks_cards_gives_each_task_its_own(tiny_models, tmp_path):
    """`geoseg train buildings --out models/` and `geoseg train landcover --out models/` (README's
    layout) leave two cards in one folder; `--model buildings=models` then failed with "models
    holds 2 model cards"."""
    for task in ("buildings", "landcover"):
        card = Path(tiny_models[task])
        for f in (card, card.with_suffix(".pt")):
            (tmp_path / f.name).write_bytes(f.read_bytes())
    assert load_head("buildings", model_dir=tmp_path)[1]["task"] == "buildings"
    assert load_head("landcover", model_dir=tmp_path)[1]["task"] == "landcover"
    with pytest.raises(cards.ModelCardError, match="holds 2 model cards"):
        cards.find_card(tmp_path)
    with pytest.raises(cards.ModelCardError, match="holds no gcn model card among"):
        load_head("gcn", model_dir=tmp_path)
