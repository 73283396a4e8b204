"""Shapes and output conventions of the three models (small widths: fast on CPU)."""
import pytest
import torch

from geoseg.models.attresunet import UNLABELED_LOGIT, AttResUNet
from geoseg.models.gcn import SuperpixelGCN
from geoseg.models.u2net import U2Net


@pytest.mark.parametrize("size", [(64, 64), (67, 93)])
def test_u2net_side_outputs_in_training_fused_in_eval(size):
    torch.manual_seed(0)
    model = U2Net(mid=4, out=8)
    x = torch.randn(2, 3, *size)
    model.train()
    outs = model(x)
    assert len(outs) == 7  # fused + 6 sides (deep supervision)
    assert all(o.shape == (2, 3, *size) for o in outs)
    model.eval()
    with torch.no_grad():
        fused = model(x)
    assert fused.shape == (2, 3, *size)
    assert not torch.all((fused >= 0) & (fused <= 1)), "logits, not sigmoid/softmax outputs"


def test_u2net_default_size_between_u2netp_and_16mib_fp16():
    n = sum(p.numel() for p in U2Net().parameters())
    assert 1.1e6 < n and n * 2 <= 16 * 2**20


def test_attresunet_logits_per_class_index_and_features():
    torch.manual_seed(0)
    model = AttResUNet(widths=(8, 16, 16, 24, 24)).eval()
    x = torch.randn(1, 3, 70, 45)
    with torch.no_grad():
        feats = model.features(x)
        logits = model(x)
    assert feats.shape == (1, 8, 70, 45)
    assert logits.shape == (1, 6, 70, 45)
    assert torch.all(logits[:, 0] == UNLABELED_LOGIT)
    assert logits.argmax(1).min() >= 1  # class 0 (unlabeled) is never predicted
    assert torch.allclose(model.classify(feats), logits)
    assert sum(p.numel() for p in AttResUNet().parameters()) * 2 <= 16 * 2**20


def test_gcn_starts_as_the_cnn_prior_and_outputs_per_node():
    torch.manual_seed(0)
    gcn = SuperpixelGCN(in_features=12, n_classes=6, hidden=16).eval()
    x = torch.randn(5, 12)
    edge_index = torch.tensor([[0, 1, 1, 2, 3, 4], [1, 0, 2, 1, 4, 3]])
    with torch.no_grad():
        out = gcn(x, edge_index, torch.ones(6))
    assert out.shape == (5, 6)
    # untrained: the output layer is zero, so the logits are exactly the prior columns
    assert torch.allclose(out[:, 1:], x[:, -5:])
    assert torch.all(out[:, 0] == -1e4)
    with pytest.raises(ValueError):
        SuperpixelGCN(in_features=12, n_layers=5)
