"""Superpixel graphs: adjacency and edge weights of a known segmentation, SLIC segment counts."""
import math

import numpy as np
import pytest
import torch
from PIL import Image

from geoseg.paths import data_root
from geoseg.superpixels import (
    GraphParams,
    build_graph,
    label_counts,
    n_node_features,
    pool_per_segment,
    pool_per_segment_torch,
    region_adjacency,
    slic_segments,
    tile_parts,
)

# 2x2 blocks of 2x2 pixels: 0 | 1 over 2 | 3 (no diagonal adjacency)
SEGMENTS = np.kron(np.array([[0, 1], [2, 3]]), np.ones((2, 2), int)).astype(np.int32)


def _image():
    colours = np.array([[100, 100, 100], [100, 100, 125.5], [200, 0, 0], [200, 0, 0]])
    return colours[SEGMENTS].astype(np.float64)


def test_first_order_adjacency_of_a_known_label_image():
    assert region_adjacency(SEGMENTS).tolist() == [[0, 1], [0, 2], [1, 3], [2, 3]]


def test_edge_weights_are_gaussian_in_colour_and_distance():
    params = GraphParams(sigma_colour=0.1, sigma_space=1.5)
    img = _image()
    parts = tile_parts(img.round().astype(np.uint8), params, segments=SEGMENTS)
    w = dict(zip(map(tuple, parts.edges.tolist()), parts.weights))
    # centroids 2 px apart = 1 superpixel spacing (sqrt(16 / 4)); colour distance of 0-1 = 25.5/255 = 0.1
    space = math.exp(-1 / (2 * 1.5**2))
    dc = (126 - 100) / 255  # uint8 rounding of 125.5
    assert w[(0, 1)] == pytest.approx(math.exp(-(dc**2) / (2 * 0.01)) * space, rel=1e-4)
    assert w[(2, 3)] == pytest.approx(space, rel=1e-5)  # same colour
    assert w[(0, 2)] < 1e-10  # grey vs red: no similarity
    assert parts.counts.tolist() == [4, 4, 4, 4]


def test_graph_features_and_label_counts():
    img = _image().round().astype(np.uint8)
    feats = np.stack([SEGMENTS * 1.0, np.ones_like(SEGMENTS, float)])
    probs = np.full((5, 4, 4), 0.2)
    labels = np.array([[1, 1, 2, 0], [1, 1, 2, 2], [3, 3, 5, 5], [3, 0, 5, 5]], np.uint8)
    g = build_graph(img, feats, probs, segments=SEGMENTS, labels=labels)
    assert g.x.shape == (4, n_node_features(2, 5))
    assert g.x[:, 0].tolist() == [0, 1, 2, 3]  # pooled feature = segment id
    assert np.allclose(g.x[:, -5:], np.log(0.2))  # prior log-probabilities are the last columns
    assert g.edge_index.shape == (2, 8)  # both directions
    assert g.label_counts[0].tolist() == [0, 4, 0, 0, 0, 0]
    assert g.label_counts[1].tolist() == [0, 0, 3, 0, 0, 0]  # the unlabeled pixel is not counted
    assert label_counts(SEGMENTS, labels, 4, 6).sum() == 14


def test_pooling_numpy_and_torch_agree():
    rng = np.random.default_rng(0)
    vals = rng.random((3, 4, 4)).astype(np.float32)
    a = pool_per_segment(SEGMENTS, vals)
    b = pool_per_segment_torch(torch.from_numpy(SEGMENTS), torch.from_numpy(vals), 4).numpy()
    assert np.allclose(a, b, atol=1e-6)
    assert np.allclose(a[0], vals[:, :2, :2].reshape(3, -1).mean(1))


def test_slico_gives_about_the_number_of_segments_asked_for():
    path = data_root() / "landcover" / "dubai" / "tile_4" / "image_part_005.jpg"
    img = np.asarray(Image.open(path).convert("RGB"))[:256, :256]
    seg = slic_segments(img, 256)
    n = int(seg.max()) + 1
    assert 0.75 * 256 <= n <= 1.25 * 256
    assert set(np.unique(seg)) == set(range(n))  # consecutive labels
    edges = region_adjacency(seg)
    assert len(edges) >= n - 1  # a connected tiling has at least a spanning tree of adjacencies
