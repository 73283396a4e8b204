"""The shipped weights are trained (not placeholders) and do their job on held-out areas."""
import numpy as np
import pytest
import rasterio
import torch
from PIL import Image

from geoseg.card import default_card_path, load_default, normalise, read_card
from geoseg.paths import data_root


@pytest.mark.parametrize("task", ["buildings", "landcover", "gcn"])
def test_shipped_cards_are_trained_and_report_test_metrics(task):
    card = read_card(default_card_path(task))
    assert card.get("weights"), "untrained placeholder shipped"
    assert card["metrics"]["test"] and card["metrics"]["command"]
    assert card["training"]["device"]


def _predict(model, card, chw_uint8):
    with torch.no_grad():
        return model(normalise(torch.from_numpy(np.ascontiguousarray(chw_uint8))[None], card)).argmax(1)[0].numpy()


def test_landcover_beats_the_majority_class_on_the_test_tile():
    model, card = load_default("landcover")
    root = data_root() / "landcover" / "dubai" / "tile_6"  # test tile: never trained or selected on
    img = np.asarray(Image.open(root / "image_part_002.jpg").convert("RGB"))[:256, :256]
    lab = np.asarray(Image.open(root / "image_part_002_label.png"))[:256, :256]
    pred = _predict(model, card, img.transpose(2, 0, 1))
    valid = lab > 0
    accuracy = (pred == lab)[valid].mean()
    majority = np.bincount(lab[valid]).max() / valid.sum()
    assert accuracy > majority + 0.1, (accuracy, majority)


def test_buildings_found_in_kampala():
    import geopandas as gpd
    from rasterio import features
    from rasterio.windows import Window

    model, card = load_default("buildings")
    root = data_root() / "buildings" / "kampala"  # test area
    with rasterio.open(root / "kampala_z19_1.tif") as src:
        win = Window(256, 0, 256, 256)
        img = src.read(window=win)
        transform = src.window_transform(win)
        gdf = gpd.read_file(root / "labels.geojson").set_crs(4326, allow_override=True).to_crs(src.crs)
    truth = features.rasterize(((g, 1) for g in gdf.geometry), out_shape=(256, 256), transform=transform) > 0
    pred = _predict(model, card, img) >= 1
    iou = (pred & truth).sum() / (pred | truth).sum()
    assert truth.mean() > 0.05 and iou > 0.25, iou


def test_shipped_cards_credit_every_source_of_their_weights():
    """A card whose network (or a member of it) started from ImageNet weights credits them, as the
    licence of those weights asks; session 26's fast building card first shipped without it."""
    from geoseg.paths import weights_dir
    from geoseg.training.distill import PRETRAINED_CREDIT

    cards = [read_card(p) for p in sorted(weights_dir().glob("*.json"))]
    lite = [c for c in cards if c.get("architecture") == "LiteUNet"
            or any(m.get("architecture") == "LiteUNet" for m in c.get("ensemble", {}).get("members", []))]
    assert {c["name"] for c in lite} >= {"buildings-u2net-fast", "buildings-u2net-lite0"}
    for card in lite:
        assert any(credit.startswith(PRETRAINED_CREDIT) for credit in card["credits"]), card["name"]
    for card in cards:
        assert any("OpenStreetMap" in c or "Humans in the Loop" in c or "MBRSC" in c for c in card["credits"]), card["name"]
