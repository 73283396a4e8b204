"""Superpixel region-adjacency graphs for the land-cover GCN (pure numpy / scikit-image).

Pipeline for one tile: SLIC superpixels -> first-order adjacency (4-connected pixels with
different labels) -> node features (CNN features and probabilities pooled per superpixel,
colour mean/std, position, size) -> edge weights ``exp(-|dc|^2 / 2 sc^2) * exp(-|dp|^2 / 2 sp^2)``
(spectral similarity times spatial proximity, Gaussian kernels).

``slic_zero=True`` (SLICO) adapts compactness per superpixel; with it skimage returns close
to the number of segments asked for, whereas plain SLIC on flat imagery often returns far
fewer (see tests).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

PRIOR_EPS = 1e-4


@dataclass(frozen=True)
class GraphParams:
    """Everything that defines how a tile becomes a graph (stored in the GCN's model card)."""

    pixels_per_segment: int = 256  # ~16x16 px superpixels
    compactness: float = 0.1  # SLICO: only used as the initial value
    sigma_colour: float = 0.1  # RGB distance on the 0..1 scale
    sigma_space: float = 1.5  # in units of the mean superpixel spacing

    def n_segments(self, height: int, width: int) -> int:
        return max(4, int(round(height * width / self.pixels_per_segment)))


@dataclass
class SuperpixelGraph:
    """Graph of one tile. ``edge_index`` holds both directions (2, 2E)."""

    segments: np.ndarray  # (H, W) int32, 0..n_nodes-1
    x: np.ndarray  # (n_nodes, F) float32
    edge_index: np.ndarray  # (2, 2E) int64
    edge_weight: np.ndarray  # (2E,) float32
    label_counts: np.ndarray | None = None  # (n_nodes, n_classes) labelled-pixel counts

    @property
    def n_nodes(self) -> int:
        return int(self.x.shape[0])


def slic_segments(image: np.ndarray, n_segments: int, compactness: float = 0.1) -> np.ndarray:
    """SLICO superpixels of an (H, W, 3) uint8 image -> (H, W) int32 labels 0..K-1 (consecutive)."""
    from skimage.segmentation import slic

    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) image, got shape {image.shape}")
    seg = slic(
        image,
        n_segments=n_segments,
        compactness=compactness,
        slic_zero=True,
        start_label=0,
        enforce_connectivity=True,
        channel_axis=-1,
    )
    _, inverse = np.unique(seg, return_inverse=True)
    return inverse.reshape(seg.shape).astype(np.int32)


def region_adjacency(segments: np.ndarray) -> np.ndarray:
    """Unique undirected first-order adjacencies (E, 2) with i < j, from 4-connected pixel pairs."""
    a = np.concatenate([segments[:, :-1].ravel(), segments[:-1, :].ravel()])
    b = np.concatenate([segments[:, 1:].ravel(), segments[1:, :].ravel()])
    diff = a != b
    pairs = np.stack([np.minimum(a[diff], b[diff]), np.maximum(a[diff], b[diff])], 1).astype(np.int64)
    if pairs.size == 0:
        return np.zeros((0, 2), np.int64)
    return np.unique(pairs, axis=0)


def pool_per_segment(segments: np.ndarray, values: np.ndarray, n_nodes: int | None = None) -> np.ndarray:
    """Mean of (C, H, W) ``values`` over each segment -> (K, C)."""
    k = int(segments.max()) + 1 if n_nodes is None else n_nodes
    flat = segments.ravel()
    counts = np.bincount(flat, minlength=k).astype(np.float64)
    out = np.stack([np.bincount(flat, weights=v.ravel(), minlength=k) for v in values.reshape(values.shape[0], -1)], 1)
    return (out / np.maximum(counts, 1)[:, None]).astype(np.float32)


def pool_per_segment_torch(segments: torch.Tensor, values: torch.Tensor, n_nodes: int) -> torch.Tensor:
    """Torch twin of :func:`pool_per_segment` (runs on the GPU): (C,H,W) -> (K,C) means."""
    flat = segments.reshape(-1).long()
    vals = values.reshape(values.shape[0], -1).t().float()
    sums = torch.zeros(n_nodes, vals.shape[1], device=vals.device).index_add_(0, flat, vals)
    counts = torch.bincount(flat, minlength=n_nodes).clamp_min(1).float()
    return sums / counts[:, None]


def segment_geometry(segments: np.ndarray, n_nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """Centroids (K, 2) as (row, col) in pixels, and pixel counts (K,)."""
    h, w = segments.shape
    rows, cols = np.mgrid[0:h, 0:w]
    flat = segments.ravel()
    counts = np.bincount(flat, minlength=n_nodes).astype(np.float64)
    cy = np.bincount(flat, weights=rows.ravel(), minlength=n_nodes) / np.maximum(counts, 1)
    cx = np.bincount(flat, weights=cols.ravel(), minlength=n_nodes) / np.maximum(counts, 1)
    return np.stack([cy, cx], 1).astype(np.float32), counts.astype(np.float32)


def colour_stats(segments: np.ndarray, image: np.ndarray, n_nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-segment mean and std of RGB on the 0..1 scale, each (K, 3)."""
    rgb = image.astype(np.float32).transpose(2, 0, 1) / 255.0
    mean = pool_per_segment(segments, rgb, n_nodes)
    mean_sq = pool_per_segment(segments, rgb**2, n_nodes)
    std = np.sqrt(np.maximum(mean_sq - mean**2, 0.0))
    return mean, std


def edge_weights(
    edges: np.ndarray, colour_mean: np.ndarray, centroids: np.ndarray, spacing: float, params: GraphParams
) -> np.ndarray:
    """Gaussian spectral x spatial similarity of each undirected edge (E,)."""
    if len(edges) == 0:
        return np.zeros(0, np.float32)
    dc2 = ((colour_mean[edges[:, 0]] - colour_mean[edges[:, 1]]) ** 2).sum(1)
    dp2 = ((centroids[edges[:, 0]] - centroids[edges[:, 1]]) ** 2).sum(1) / max(spacing, 1e-6) ** 2
    w = np.exp(-dc2 / (2 * params.sigma_colour**2)) * np.exp(-dp2 / (2 * params.sigma_space**2))
    return w.astype(np.float32)


def label_counts(segments: np.ndarray, labels: np.ndarray, n_nodes: int, n_classes: int) -> np.ndarray:
    """(K, n_classes) count of labelled pixels of each class in each segment (class 0 = unlabeled, dropped)."""
    lab = labels.ravel().astype(np.int64)
    keep = (lab > 0) & (lab < n_classes)
    idx = segments.ravel()[keep].astype(np.int64) * n_classes + lab[keep]
    counts = np.bincount(idx, minlength=n_nodes * n_classes).reshape(n_nodes, n_classes)
    return counts.astype(np.float32)


def node_features(
    pooled_features: np.ndarray,
    pooled_probs: np.ndarray,
    colour_mean: np.ndarray,
    colour_std: np.ndarray,
    centroids: np.ndarray,
    counts: np.ndarray,
    shape: tuple[int, int],
) -> np.ndarray:
    """Concatenate node features; the LAST columns are the CNN prior log-probabilities (GCN contract)."""
    h, w = shape
    pos = centroids / np.array([max(h - 1, 1), max(w - 1, 1)], np.float32)
    size = np.log(np.maximum(counts, 1) / max(float(counts.mean()), 1.0))[:, None]  # relative: tile-size free
    prior = np.log(np.clip(pooled_probs, PRIOR_EPS, 1.0))
    return np.concatenate([pooled_features, colour_mean, colour_std, pos, size, prior], 1).astype(np.float32)


def n_node_features(feature_channels: int, n_prob_classes: int) -> int:
    """Width of :func:`node_features`' output."""
    return feature_channels + 3 + 3 + 2 + 1 + n_prob_classes


#: node-feature groups the GCN may read (layout of :func:`geoseg.superpixels.node_features`)
INPUT_SETS = {
    "all": ("cnn", "colour", "position", "size", "prior"),
    "no_position": ("cnn", "colour", "size", "prior"),
    "colour_prior": ("colour", "size", "prior"),
    "prior": ("prior",),
}


def reads_cnn_features(inputs: str) -> bool:
    """Whether a GCN reading ``INPUT_SETS[inputs]`` needs the CNN's feature maps (not just its probabilities)."""
    if inputs not in INPUT_SETS:
        raise ValueError(f"inputs must be one of {sorted(INPUT_SETS)}, got {inputs!r}")
    return "cnn" in INPUT_SETS[inputs]


def input_columns(in_features: int, n_prior: int, inputs: str = "all") -> torch.Tensor:
    """Indices of the node-feature columns of the groups in ``INPUT_SETS[inputs]``.

    Node features are ``[CNN features C | RGB mean 3 | RGB std 3 | position 2 | size 1 | prior P]``;
    every graph carries all of them (the card's ``in_features`` pins the CNN), a GCN may read a
    subset: position is chip-relative (256 px training chips vs larger predict windows) and the
    CNN features are where a GCN fitted on a few areas overfits them. A subset without CNN
    features is indexed from the end (negative indices), so graphs built with any CNN width,
    or with none (the predictor then skips the feature maps), give the same columns.
    """
    reads_features = reads_cnn_features(inputs)  # also validates the name
    if inputs == "all":  # any width: no layout assumed
        return torch.arange(in_features)
    c = in_features - 9 - n_prior
    if c < 0:
        raise ValueError(f"in_features {in_features} is narrower than the fixed node features ({9 + n_prior})")
    spans = {"cnn": (0, c), "colour": (c, c + 6), "position": (c + 6, c + 8), "size": (c + 8, c + 9),
             "prior": (c + 9, c + 9 + n_prior)}
    columns = torch.cat([torch.arange(*spans[g]) for g in INPUT_SETS[inputs]])
    return columns if reads_features else columns - in_features


@dataclass
class TileParts:
    """What a tile's graph needs that does not depend on the CNN (computable in a worker pool)."""

    segments: np.ndarray
    colour_mean: np.ndarray
    colour_std: np.ndarray
    centroids: np.ndarray
    counts: np.ndarray
    edges: np.ndarray  # (E, 2) undirected
    weights: np.ndarray  # (E,)
    label_counts: np.ndarray | None = None


def tile_parts(
    image: np.ndarray,
    params: GraphParams = GraphParams(),
    segments: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    n_classes: int = 6,
) -> TileParts:
    """Superpixels, colour statistics, geometry, adjacency and edge weights of one (H,W,3) uint8 tile."""
    h, w = image.shape[:2]
    if segments is None:
        segments = slic_segments(image, params.n_segments(h, w), params.compactness)
    k = int(segments.max()) + 1
    mean, std = colour_stats(segments, image, k)
    centroids, counts = segment_geometry(segments, k)
    edges = region_adjacency(segments)
    weights = edge_weights(edges, mean, centroids, float(np.sqrt(h * w / k)), params)
    lab = label_counts(segments, labels, k, n_classes) if labels is not None else None
    return TileParts(segments, mean, std, centroids, counts, edges, weights, lab)


def graph_from_parts(parts: TileParts, pooled_features: np.ndarray, pooled_probs: np.ndarray) -> SuperpixelGraph:
    """Graph from CNN-independent parts and the CNN outputs pooled per superpixel (pooling may run on a GPU)."""
    x = node_features(
        pooled_features, pooled_probs, parts.colour_mean, parts.colour_std, parts.centroids, parts.counts,
        parts.segments.shape,
    )
    e = parts.edges
    edge_index = np.concatenate([e.T, e.T[::-1]], 1) if len(e) else np.zeros((2, 0), np.int64)
    edge_weight = np.concatenate([parts.weights, parts.weights]).astype(np.float32)
    return SuperpixelGraph(parts.segments, x, np.ascontiguousarray(edge_index), edge_weight, parts.label_counts)


def build_graph(
    image: np.ndarray,
    features: np.ndarray,
    probs: np.ndarray,
    params: GraphParams = GraphParams(),
    segments: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    n_classes: int = 6,
) -> SuperpixelGraph:
    """Graph of one tile from the image (H,W,3 uint8), CNN features (C,H,W) and probs (P,H,W).

    ``probs`` holds the probabilities of the *predictable* classes (for land cover: 1..5).
    ``segments`` may be given (computed elsewhere); ``labels`` adds per-node label counts.
    """
    h, w = image.shape[:2]
    if features.shape[1:] != (h, w) or probs.shape[1:] != (h, w):
        raise ValueError(f"features {features.shape} / probs {probs.shape} do not match image {image.shape}")
    parts = tile_parts(image, params, segments, labels, n_classes)
    k = parts.counts.shape[0]
    pooled = pool_per_segment(parts.segments, np.concatenate([features, probs], 0), k)
    return graph_from_parts(parts, pooled[:, : features.shape[0]], pooled[:, features.shape[0] :])
