"""Cross-tile GCN refit: which node features a GCN reads, the CNN-output cache, and the
leave-one-area-out protocol end to end on a tiny pack of real Dubai chips."""
import json

import numpy as np
import pytest
import torch

from geoseg.card import LANDCOVER_CLASSES, load_model, save_model
from geoseg.models.attresunet import AttResUNet
from geoseg.models.gcn import SuperpixelGCN, input_columns, refine_probabilities
from geoseg.superpixels import GraphParams, build_graph, n_node_features, reads_cnn_features
from geoseg.training.graphs import cached_cnn_outputs, compute_parts, graphs_from_outputs, train_gcn

from dubai_crops import dubai_crops


def _crops(tile: str, n: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    return dubai_crops(tile, "image_part_002", n, size, start=(40, 50), step=(70, 80))


def _tiny_cnn() -> AttResUNet:
    torch.manual_seed(0)
    return AttResUNet(widths=(8, 16, 16, 16, 16)).eval()


NORM = {"mean": [0.5] * 3, "std": [0.25] * 3}


def test_input_columns_follow_the_node_feature_layout():
    rng = np.random.default_rng(0)
    image, _ = _crops("tile_2", 1, 32)
    feats = rng.normal(size=(4, 32, 32))
    probs = rng.dirichlet(np.ones(5), size=(32, 32)).transpose(2, 0, 1)
    g = build_graph(image[0].transpose(1, 2, 0).copy(), feats, probs)
    width = n_node_features(4, 5)
    assert g.x.shape[1] == width
    # CNN features are the first 4 columns, the prior the last 5, colour mean right after the CNN features
    assert np.allclose(g.x[:, input_columns(width, 5, "prior").numpy()], g.x[:, -5:])
    colour = g.x[:, input_columns(width, 5, "colour_prior").numpy()][:, :3]
    assert np.all((colour >= 0) & (colour <= 1)) and not np.allclose(colour, g.x[:, :3])
    assert len(input_columns(width, 5, "no_position")) == width - 2
    with pytest.raises(ValueError, match="inputs must be one of"):
        input_columns(width, 5, "everything")


def test_a_prior_only_gcn_ignores_the_cnn_features_and_an_all_input_gcn_does_not():
    torch.manual_seed(0)
    n, width = 12, n_node_features(4, 5)
    x = torch.randn(n, width)
    ei = torch.tensor([[i for i in range(n - 1)] + [i + 1 for i in range(n - 1)],
                       [i + 1 for i in range(n - 1)] + [i for i in range(n - 1)]])
    x2 = x.clone()
    x2[:, :4] += 5.0  # other CNN features, same prior
    for inputs, same in (("prior", True), ("all", False)):
        gcn = SuperpixelGCN(width, hidden=8, n_layers=2, dropout=0.0, inputs=inputs)
        torch.nn.init.normal_(gcn.out.lin.weight)  # a trained-looking correction (zero at init)
        gcn.eval()
        assert torch.allclose(gcn(x, ei), gcn(x2, ei)) is same, inputs


def test_a_gcn_without_cnn_inputs_gives_the_same_result_from_graphs_with_or_without_feature_maps():
    """colour_prior / prior GCNs index from the end: the predictor may skip the CNN's feature maps."""
    rng = np.random.default_rng(1)
    image, _ = _crops("tile_3", 1, 48)
    hwc = image[0].transpose(1, 2, 0).copy()
    probs = rng.dirichlet(np.ones(5), size=(48, 48)).transpose(2, 0, 1)
    with_maps = build_graph(hwc, rng.normal(size=(16, 48, 48)), probs)
    without = build_graph(hwc, np.zeros((0, 48, 48)), probs)
    assert without.x.shape[1] == n_node_features(0, 5) and np.array_equal(with_maps.x[:, 16:], without.x)
    torch.manual_seed(0)
    for inputs in ("colour_prior", "prior"):
        assert not reads_cnn_features(inputs)
        gcn = SuperpixelGCN(n_node_features(0, 5), hidden=8, n_layers=2, dropout=0.0, inputs=inputs)
        torch.nn.init.normal_(gcn.out.lin.weight)
        gcn.eval()
        outs = [gcn(torch.from_numpy(g.x), torch.from_numpy(g.edge_index), torch.from_numpy(g.edge_weight))
                for g in (with_maps, without)]
        assert torch.allclose(*outs, atol=1e-5), inputs
    assert reads_cnn_features("all") and reads_cnn_features("no_position")


def test_cnn_outputs_without_features_store_zero_channels_under_their_own_key(tmp_path):
    images, _ = _crops("tile_1", 3, 32)
    cnn = _tiny_cnn()
    full, probs = cached_cnn_outputs(cnn, NORM, images, tmp_path, "k", log=lambda m: None)
    slim, slim_probs = cached_cnn_outputs(cnn, NORM, images, tmp_path, "k", log=lambda m: None, features=False)
    assert full.shape[1] == cnn.feature_channels and slim.shape == (3, 0, 32, 32)
    assert np.array_equal(probs, slim_probs)
    assert json.loads((tmp_path / "meta.json").read_text())["key"] == "k:no-features"


def test_cnn_outputs_are_cached_and_recomputed_when_the_key_changes(tmp_path):
    images, _ = _crops("tile_2", 3, 32)
    cnn = _tiny_cnn()
    calls = []
    original = cnn.features
    cnn.features = lambda x: (calls.append(len(x)), original(x))[1]
    feats, probs = cached_cnn_outputs(cnn, NORM, images, tmp_path, "cnn-a", batch=2, log=lambda m: None)
    assert feats.shape == (3, 8, 32, 32) and probs.shape == (3, 5, 32, 32) and sum(calls) == 3
    assert np.allclose(probs.astype(np.float32).sum(1), 1.0, atol=1e-2)
    again, _ = cached_cnn_outputs(cnn, NORM, images, tmp_path, "cnn-a", batch=2, log=lambda m: None)
    assert sum(calls) == 3 and np.array_equal(again, feats)  # served from the cache
    cached_cnn_outputs(cnn, NORM, images, tmp_path, "cnn-b", batch=2, log=lambda m: None)
    assert sum(calls) == 6  # another CNN: computed again


def test_train_gcn_without_validation_keeps_the_last_epoch_and_fits(tmp_path):
    images, labels = _crops("tile_2", 3, 48)
    cnn = _tiny_cnn()
    feats, probs = cached_cnn_outputs(cnn, NORM, images, tmp_path, "k", log=lambda m: None)
    graphs = graphs_from_outputs(compute_parts(images, labels, GraphParams(pixels_per_segment=64)), feats, probs)
    arch = {"in_features": n_node_features(8, 5), "n_classes": 6, "hidden": 16, "n_layers": 2, "dropout": 0.0}
    _, short = train_gcn(graphs, [], arch, "cpu", epochs=2, lr=2e-2, log=lambda m: None)
    _, long = train_gcn(graphs, [], arch, "cpu", epochs=60, lr=2e-2, log=lambda m: None)
    assert short["epochs"] == 2 and long["epochs"] == 60 and "best_epoch" not in long
    assert long["final_loss"] < short["final_loss"]


def test_cross_tile_protocol_writes_a_card_whose_gcn_refines_a_tile(tmp_path):
    from geoseg.training.pack import encode_jpeg
    from geoseg.training.refit_gcn import ALPHAS, GcnRecipe, cross_tile

    chunks = [_crops(t, 2, 48) for t in ("tile_1", "tile_2", "tile_6")]
    images = np.concatenate([c[0] for c in chunks])
    labels = np.concatenate([c[1] for c in chunks])
    area = np.repeat(["tile_1", "tile_2", "tile_6"], 2)
    split = np.repeat(["train", "val", "test"], 2)
    blobs = [encode_jpeg(a) for a in images]
    np.savez_compressed(
        tmp_path / "lc.npz", jpeg=np.frombuffer(b"".join(blobs), np.uint8),
        jpeg_offsets=np.cumsum([0] + [len(b) for b in blobs]), labels=labels, split=split, area=area,
        chip_id=np.array([f"dubai_{a}_p002_r{k}" for k, a in enumerate(area)]), gsd=np.full(6, np.nan, np.float32),
        meta=np.array(json.dumps({"target": "landcover"})),
    )
    cnn_card = save_model(_tiny_cnn(), {
        "name": "tiny-lc", "task": "landcover", "architecture": "AttResUNet",
        "arch_kwargs": {"widths": [8, 16, 16, 16, 16]}, "classes": LANDCOVER_CLASSES, "gsd_m": 1.1,
        "normalisation": NORM}, tmp_path / "cnn")
    recipe = GcnRecipe(graph=GraphParams(pixels_per_segment=64), hidden=8, epochs=3, inputs="no_position")
    card = cross_tile(tmp_path / "lc.npz", cnn_card, tmp_path / "gcn", tmp_path / "cache", recipe, log=lambda m: None)
    assert set(card["training"]["cv_folds_miou_by_alpha"]) == {"tile_1", "tile_2"}  # the test area is no fold
    assert card["fusion"]["alpha"] in ALPHAS[:-1] and card["training"]["graphs"] == {"fit": 4, "test": 2}
    assert card["metrics"]["test"]["area"] == "Dubai tile_6" and card["graph"]["pixels_per_segment"] == 64
    gcn, loaded = load_model(tmp_path / "gcn")
    assert gcn.inputs == "no_position" and loaded["arch_kwargs"]["inputs"] == "no_position"
    cnn, _ = load_model(cnn_card)
    x = (torch.from_numpy(images[4:5]).float() / 255 - 0.5) / 0.25
    with torch.no_grad():
        feats = cnn.features(x)
        probs = torch.softmax(cnn.classify(feats)[:, 1:], 1)
    fused = refine_probabilities(gcn, loaded, images[4].transpose(1, 2, 0).copy(), feats[0].numpy(), probs[0].numpy())
    assert fused.shape == (5, 48, 48) and np.allclose(fused.sum(0), 1.0, atol=1e-4)


def test_building_a_gcn_leaves_no_generated_source_in_the_temp_folder(tmp_path):
    """torch-geometric renders GCNConv.propagate into $TMPDIR and keeps the file: one per process."""
    import os
    import subprocess
    import sys

    code = ("import torch\nfrom geoseg.models.gcn import SuperpixelGCN\n"
            "g = SuperpixelGCN(20, hidden=8, n_layers=2)\n"
            "print(g(torch.randn(4, 20), torch.tensor([[0, 1, 2], [1, 2, 3]])).shape[1])\n")
    done = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, TMPDIR=str(tmp_path)),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "6"  # the model still runs after its generated source is gone
    assert not list(tmp_path.glob("torch_geometric*"))
