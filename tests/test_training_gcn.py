"""The GCN learns inductively: fitted on graphs of some Dubai chips, it corrects a
systematically wrong CNN prior on graphs of other chips; fusion rule edge cases."""
import numpy as np
import torch

from geoseg.models.gcn import fuse_probabilities
from geoseg.superpixels import GraphParams, graph_from_parts, n_node_features, pool_per_segment
from geoseg.training.graphs import compute_parts, train_gcn

from dubai_crops import dubai_crops


def _chips(tile, n=3, size=64):
    return dubai_crops(tile, "image_part_003", n, size, start=(60, 80), step=(90, 110))


def _graphs_with_confused_prior(images, labels, params):
    """A 'CNN' that calls water (4) land (5) and land water: its prior is wrong there."""
    swap = np.array([0, 1, 2, 3, 5, 4])
    graphs = []
    for parts, lab in zip(compute_parts(images, labels, params), labels):
        wrong = swap[lab]
        probs = np.full((5,) + lab.shape, 0.05)
        for k in range(5):
            probs[k][wrong == k + 1] = 0.8
        feats = np.zeros((2,) + lab.shape)  # uninformative CNN features
        pooled = pool_per_segment(parts.segments, np.concatenate([feats, probs]))
        graphs.append(graph_from_parts(parts, pooled[:, :2], pooled[:, 2:]))
    return graphs


def test_gcn_trained_on_some_chips_corrects_the_prior_on_others():
    params = GraphParams(pixels_per_segment=64)
    fit_imgs, fit_labs = _chips("tile_4")
    new_imgs, new_labs = _chips("tile_3")
    assert {4, 5} <= set(np.unique(fit_labs)) and {4, 5} & set(np.unique(new_labs))
    fit = _graphs_with_confused_prior(fit_imgs, fit_labs, params)
    new = _graphs_with_confused_prior(new_imgs, new_labs, params)
    arch = {"in_features": n_node_features(2, 5), "n_classes": 6, "hidden": 32, "n_layers": 2, "dropout": 0.0}
    torch.manual_seed(0)
    gcn, hist = train_gcn(fit, new, arch, "cpu", epochs=60, lr=2e-2, log=lambda s: None)
    assert hist["val_node_miou"] > hist["val_node_miou_superpixel_mean"] + 0.1, hist


def test_fusion_extremes():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(5), size=(4, 4)).transpose(2, 0, 1)
    segments = np.kron(np.array([[0, 1], [1, 0]]), np.ones((2, 2), int))
    node_logp = np.log(np.array([[0.6, 0.1, 0.1, 0.1, 0.1], [0.1, 0.1, 0.1, 0.1, 0.6]]))
    assert np.allclose(fuse_probabilities(probs, segments, node_logp, 1.0), probs, atol=1e-5)
    only_gcn = fuse_probabilities(probs, segments, node_logp, 0.0)
    assert np.allclose(only_gcn[:, 0, 0], np.exp(node_logp[0])) and np.allclose(only_gcn[:, 0, 2], np.exp(node_logp[1]))
    assert np.allclose(fuse_probabilities(probs, segments, node_logp, 0.5).sum(0), 1.0)


def test_refit_gcn_on_held_out_chips_writes_a_loadable_card(tmp_path):
    import json

    from geoseg.card import LANDCOVER_CLASSES, load_model, save_model
    from geoseg.models.attresunet import AttResUNet
    from geoseg.training.pack import encode_jpeg
    from geoseg.training.refit_gcn import ALPHAS, refit

    images, labels = _chips("tile_5", n=4, size=48)
    ids = ["dubai_tile_5_p001_r0", "dubai_tile_5_p002_r0", "dubai_tile_5_p006_r0", "dubai_tile_6_p001_r0"]
    splits = np.array(["val", "val", "val", "test"])
    blobs = [encode_jpeg(a) for a in images]
    np.savez_compressed(
        tmp_path / "lc.npz", jpeg=np.frombuffer(b"".join(blobs), np.uint8),
        jpeg_offsets=np.cumsum([0] + [len(b) for b in blobs]), labels=labels, split=splits, area=splits,
        chip_id=np.array(ids), gsd=np.full(4, np.nan, np.float32), meta=np.array(json.dumps({"target": "landcover"})),
    )
    torch.manual_seed(0)
    cnn_card = save_model(AttResUNet(widths=(8, 16, 16, 16, 16)), {
        "name": "tiny-lc", "task": "landcover", "architecture": "AttResUNet",
        "arch_kwargs": {"widths": [8, 16, 16, 16, 16]}, "classes": LANDCOVER_CLASSES, "gsd_m": 1.1,
        "normalisation": {"mean": [0.5] * 3, "std": [0.25] * 3}}, tmp_path / "cnn")
    card = refit(tmp_path / "lc.npz", cnn_card, tmp_path / "gcn", epochs=3, budget_s=30, log=lambda s: None)
    assert card["training"]["graphs"] == {"fit": 2, "selection": 1, "test": 1}
    assert card["fusion"]["alpha"] in ALPHAS and card["cnn"] == "tiny-lc"
    gcn, loaded = load_model(tmp_path / "gcn")
    assert loaded["metrics"]["test"]["cnn_only"]["miou"] >= 0 and gcn.n_classes == 6


def test_parts_in_worker_processes_match_the_serial_ones():
    images, labels = _chips("tile_5")
    params = GraphParams(pixels_per_segment=128)
    serial = compute_parts(images, labels, params)
    parallel = compute_parts(images, labels, params, workers=2)
    assert len(serial) == len(parallel) == len(images)
    for a, b in zip(serial, parallel):
        assert np.array_equal(a.segments, b.segments) and np.array_equal(a.edges, b.edges)
        assert np.allclose(a.weights, b.weights) and np.array_equal(a.label_counts, b.label_counts)
