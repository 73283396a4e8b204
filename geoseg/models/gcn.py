"""Superpixel GCN node classifier (after DSSN-GCN, Ouyang & Li 2021).

Nodes are superpixels (features from :mod:`geoseg.superpixels`), edges their first-order
adjacency weighted by spectral and spatial similarity. The classifier is *residual over
the CNN*: it outputs ``prior + delta`` where ``prior`` is the superpixel's mean CNN
log-probability (given in the node features) and ``delta`` is learnt by the graph
convolutions. At initialisation ``delta`` is ~0, so the GCN starts as "majority vote of
the CNN inside each superpixel" and training only has to learn corrections from the
neighbourhood; this keeps it from ever being much worse than the CNN it refines.
"""
from __future__ import annotations

import os
import sys
import tempfile

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.nn import GCNConv

from geoseg.superpixels import input_columns, reads_cnn_features


def _remove_generated_sources() -> None:
    """Delete the ``propagate`` modules torch-geometric renders into the temp folder and never removes.

    Each process that builds a GCNConv leaves a ``torch_geometric.nn.conv...propagate_*.py`` file
    behind (``torch_geometric.template``, ``delete=False``): a service or batch run would pile up
    thousands. The modules are already imported; only their source files go.
    """
    tmp = os.path.realpath(tempfile.gettempdir())
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if (name.startswith("torch_geometric.") and path and os.path.dirname(os.path.realpath(path)) == tmp
                and os.path.basename(path).startswith(name + "_")):
            try:
                os.unlink(path)
            except OSError:
                pass


class SuperpixelGCN(nn.Module):
    """``n_layers`` GCNConv layers (edge-weighted, symmetric normalisation) + residual prior.

    ``forward(x, edge_index, edge_weight)`` -> node logits (N, n_classes), channel = class
    index (channel 0 "unlabeled" is pinned to -1e4 when ``ignore_first_class``).
    The last ``n_classes - 1`` (or ``n_classes``) columns of ``x`` must be the CNN prior
    log-probabilities of the node, as :func:`geoseg.superpixels.node_features` lays them out.
    """

    def __init__(
        self,
        in_features: int,
        n_classes: int = 6,
        hidden: int = 96,
        n_layers: int = 3,
        dropout: float = 0.2,
        ignore_first_class: bool = True,
        inputs: str = "all",
    ) -> None:
        super().__init__()
        if n_layers not in (2, 3):
            raise ValueError(f"n_layers must be 2 or 3, got {n_layers}")
        self.n_classes = n_classes
        self.ignore_first_class = ignore_first_class
        self.n_out = n_classes - 1 if ignore_first_class else n_classes
        self.inputs = inputs
        self.register_buffer("columns", input_columns(in_features, self.n_out, inputs), persistent=False)
        width = int(self.columns.numel())
        self.input_norm = nn.LayerNorm(width)
        dims = [width] + [hidden] * (n_layers - 1)
        self.convs = nn.ModuleList([GCNConv(a, b) for a, b in zip(dims[:-1], dims[1:])])
        self.out = GCNConv(hidden, self.n_out)
        nn.init.zeros_(self.out.lin.weight)
        nn.init.zeros_(self.out.bias)
        self.dropout = dropout
        _remove_generated_sources()

    @property
    def reads_cnn_features(self) -> bool:
        """False: the graphs need no CNN feature maps (any width, even zero, gives the same result)."""
        return reads_cnn_features(self.inputs)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, edge_weight: torch.Tensor | None = None) -> torch.Tensor:
        prior = x[:, -self.n_out :]
        h = self.input_norm(x if self.inputs == "all" else x[:, self.columns])
        for conv in self.convs:
            h = F.relu(conv(h, edge_index, edge_weight))
            h = F.dropout(h, self.dropout, self.training)
        logits = prior + self.out(h, edge_index, edge_weight)
        if self.ignore_first_class:
            logits = torch.cat([torch.full_like(logits[:, :1], -1e4), logits], 1)
        return logits


@torch.no_grad()
def refine_probabilities(
    gcn: SuperpixelGCN,
    gcn_card: dict,
    image_hwc: np.ndarray,
    features: np.ndarray,
    probs: np.ndarray,
    segments: np.ndarray | None = None,
) -> np.ndarray:
    """GCN refinement of one tile's CNN class probabilities.

    ``image_hwc`` (H,W,3) uint8; ``features`` (C,H,W) from ``AttResUNet.features``;
    ``probs`` (P,H,W) softmax probabilities of the predictable classes (land cover: classes
    1..5, i.e. softmax over the 6 logits without channel 0). Returns fused (P,H,W)
    probabilities: ``softmax(alpha * log p_cnn + (1 - alpha) * log p_gcn(node))`` with
    ``alpha = gcn_card['fusion']['alpha']`` (chosen on the validation tile).
    Compute it on a window with a margin and keep the core, so superpixels are not cut
    at tile borders.
    """

    from geoseg.superpixels import GraphParams, build_graph

    params = GraphParams(**gcn_card.get("graph", {}))
    graph = build_graph(image_hwc, features, probs, params, segments=segments)
    x = torch.from_numpy(graph.x)
    logits = gcn(x, torch.from_numpy(graph.edge_index), torch.from_numpy(graph.edge_weight))
    node_logp = torch.log_softmax(logits[:, -probs.shape[0] :], 1).numpy()
    alpha = float(gcn_card.get("fusion", {}).get("alpha", 0.0))
    return fuse_probabilities(probs, graph.segments, node_logp, alpha).astype(np.float32)


def fuse_probabilities(
    probs: np.ndarray, segments: np.ndarray, node_logp: np.ndarray, alpha: float
) -> np.ndarray:
    """softmax over classes of ``alpha * log probs + (1 - alpha) * node_logp[segments]`` -> (P,H,W)."""

    mix = (1.0 - alpha) * np.moveaxis(node_logp[segments], -1, 0)
    if alpha > 0:
        mix = mix + alpha * np.log(np.clip(probs, 1e-6, 1.0))
    mix = mix - mix.max(0, keepdims=True)
    e = np.exp(mix)
    return e / e.sum(0, keepdims=True)
