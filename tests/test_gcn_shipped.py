"""The shipped GCN earns its place: on crops of the test tile (never fitted or selected on)
its fused map scores a higher mIoU than the AttResUNet alone."""
import numpy as np
import torch
from PIL import Image

from geoseg.card import load_default, normalise
from geoseg.models.gcn import refine_probabilities
from geoseg.paths import data_root
from geoseg.training.graphs import CLASS_NAMES
from geoseg.training.metrics import confusion, landcover_scores


def test_shipped_gcn_beats_the_cnn_alone_on_the_test_tile():
    cnn, card = load_default("landcover")
    gcn, gcn_card = load_default("gcn")
    root = data_root() / "landcover" / "dubai" / "tile_6"
    img = np.asarray(Image.open(root / "image_part_002.jpg").convert("RGB"))
    lab = np.asarray(Image.open(root / "image_part_002_label.png"))
    cm_cnn, cm_gcn = np.zeros((6, 6), np.int64), np.zeros((6, 6), np.int64)
    for r, c in ((0, 0), (256, 300), (520, 560)):
        crop, truth = img[r : r + 256, c : c + 256], lab[r : r + 256, c : c + 256]
        x = normalise(torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1)))[None], card)
        with torch.no_grad():
            feats = cnn.features(x)
            probs = torch.softmax(cnn.classify(feats)[0, 1:], 0).numpy()
        fused = refine_probabilities(gcn, gcn_card, np.ascontiguousarray(crop), feats[0].numpy(), probs)
        cm_cnn += confusion(probs.argmax(0) + 1, truth, 6, ignore=0)
        cm_gcn += confusion(fused.argmax(0) + 1, truth, 6, ignore=0)
    cnn_miou = landcover_scores(cm_cnn, CLASS_NAMES)["miou"]
    gcn_miou = landcover_scores(cm_gcn, CLASS_NAMES)["miou"]
    assert gcn_miou > cnn_miou, (cnn_miou, gcn_miou)


def test_fast_profile_refines_its_student_with_its_own_probabilities_only_gcn():
    """``--profile fast`` loads ``landcover-gcn-fast``: fitted on the student's probabilities, it
    reads no feature maps, and on test-tile crops it changes pixels without costing mIoU (its
    leave-one-tile-out CV gain was +0.01 pt: it ships as a neutral smoother, not as a gain)."""
    from geoseg.infer import TileModel, refine_with_gcn
    from geoseg.heads import load_heads
    from geoseg.pipeline import PredictOptions

    notes: list[str] = []
    heads = load_heads(PredictOptions(profile="fast", buildings=False, device="cpu"), "cpu", notes)
    gcn, gcn_card = heads["gcn"]
    assert gcn_card["name"] == "landcover-gcn-fast" and gcn_card["cnn"] == heads["landcover"][1]["name"]
    assert not gcn.reads_cnn_features and not notes
    student = TileModel(*heads["landcover"])
    root = data_root() / "landcover" / "dubai" / "tile_6"
    img = np.asarray(Image.open(root / "image_part_002.jpg").convert("RGB"))
    lab = np.asarray(Image.open(root / "image_part_002_label.png"))
    cm_cnn, cm_gcn = np.zeros((6, 6), np.int64), np.zeros((6, 6), np.int64)
    changed = 0.0
    for r, c in ((0, 0), (256, 300), (420, 460)):
        x = np.ascontiguousarray(img[r : r + 256, c : c + 256].transpose(2, 0, 1))
        truth = lab[r : r + 256, c : c + 256]
        probs = student.probabilities(x[None])[0]
        fused = refine_with_gcn(x, probs, np.zeros((0, 256, 256), np.float32), np.ones((256, 256), bool), gcn,
                                gcn_card)
        assert np.allclose(fused.sum(0), 1.0, atol=1e-4)
        changed += (fused.argmax(0) != probs.argmax(0)).mean() / 3
        cm_cnn += confusion(probs.argmax(0), truth, 6, ignore=0)
        cm_gcn += confusion(fused.argmax(0), truth, 6, ignore=0)
    assert changed > 0.001  # it does refine
    cnn_miou = landcover_scores(cm_cnn, CLASS_NAMES)["miou"]
    assert landcover_scores(cm_gcn, CLASS_NAMES)["miou"] >= cnn_miou - 0.01
