"""Tiny randomly initialised model cards for pipeline tests, and checks of ``geoseg.infer``.

Real trained weights may not be shipped when the tests run; the pipeline contract
(grids, masks, files, seams) does not depend on the weights, so tests use small
random models saved through the real card format.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from geoseg import card as cards
from geoseg.paths import data_root
from geoseg.infer import TileModel, load_head, refine_with_gcn
from geoseg.models.gcn import SuperpixelGCN
from geoseg.models.students import FastSegNet
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
        "graph_params": {"pixels_per_segment": 256},
    }, root / "gcn"))
    return out


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, str]:
    return make_tiny_models(tmp_path_factory.mktemp("models"))
