"""Inductive training of the superpixel GCN on graphs of many land-cover tiles.

1. CNN-independent graph parts (SLIC, colour stats, adjacency, edge weights, label counts)
   per chip, in a process pool (they cost CPU, not GPU).
2. The trained AttResUNet runs once per chip; its features and class probabilities are
   pooled per superpixel on the device.
3. The GCN is trained full-batch on the disjoint union of the training graphs with a
   soft cross-entropy against each node's labelled-pixel class counts (exactly the pixel
   cross-entropy of painting the node's prediction onto its pixels).
4. The fusion weight ``alpha`` (CNN vs GCN log-probabilities) is chosen on held-out chips.
"""
from __future__ import annotations

import copy
import json
import pickle
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from multiprocessing.pool import AsyncResult, Pool
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from geoseg.models.gcn import SuperpixelGCN
from geoseg.superpixels import GraphParams, SuperpixelGraph, TileParts, graph_from_parts, pool_per_segment_torch, tile_parts
from geoseg.training.metrics import boundary_counts, boundary_f, confusion, landcover_scores

Log = Callable[[str], None]
N_CLASSES = 6
CLASS_NAMES = ["unlabeled", "building", "road", "vegetation", "water", "land"]


def _parts_worker(args: tuple[np.ndarray, np.ndarray | None, GraphParams]) -> TileParts:
    image_chw, labels, params = args
    return tile_parts(np.ascontiguousarray(image_chw.transpose(1, 2, 0)), params, labels=labels, n_classes=N_CLASSES)


def start_parts(pool: Pool, images: np.ndarray, labels: np.ndarray, params: GraphParams) -> AsyncResult:
    """Queue the graph parts of every chip in ``pool`` (returns immediately)."""
    return pool.map_async(_parts_worker, [(images[i], labels[i], params) for i in range(len(images))], chunksize=4)


def compute_parts(
    images: np.ndarray, labels: np.ndarray | None, params: GraphParams, workers: int = 1
) -> list[TileParts]:
    """Graph parts of every chip, in order: serially, or in ``workers`` forked processes (GPU machine)."""
    jobs = [(images[i], None if labels is None else labels[i], params) for i in range(len(images))]
    if workers <= 1:
        return [_parts_worker(job) for job in jobs]
    import multiprocessing as mp  # noqa: PLC0415

    with mp.get_context("fork").Pool(workers) as pool:
        return pool.map(_parts_worker, jobs, chunksize=4)


@torch.no_grad()
def cnn_outputs(
    model: nn.Module, norm: dict[str, list[float]], images_u8: np.ndarray, device: str, features: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """CNN features (B,C,H,W) and probabilities of classes 1..5 (B,5,H,W), float32 on device.

    AttResUNet (``features`` + ``classify``) or a student (``forward_with_features``, whose
    1/4-resolution features are upsampled bilinearly, as ``geoseg.infer`` does at predict time).
    ``features=False`` returns zero channels (B,0,H,W) and skips that upsampling.
    """
    model.eval()
    mean = torch.tensor(norm["mean"], device=device).view(1, -1, 1, 1)
    std = torch.tensor(norm["std"], device=device).view(1, -1, 1, 1)
    x = (torch.as_tensor(images_u8).to(device).float() / 255.0 - mean) / std
    ctx = torch.autocast("cuda", dtype=torch.bfloat16) if device.startswith("cuda") else torch.autocast("cpu", enabled=False)
    with ctx:
        if hasattr(model, "forward_with_features"):
            logits, feats = model.forward_with_features(x)
        else:
            feats = model.features(x)
            logits = model.classify(feats)
    if not features:
        feats = feats.new_zeros((feats.shape[0], 0, *x.shape[-2:]))
    elif feats.shape[-2:] != x.shape[-2:]:
        feats = F.interpolate(feats.float(), size=x.shape[-2:], mode="bilinear", align_corners=False)
    probs = torch.softmax(logits.float()[:, 1:], 1)
    return feats.float(), probs


def build_graphs(
    model: nn.Module, norm: dict, images: np.ndarray, parts: Sequence[TileParts], device: str, batch: int = 16,
    deadline: float | None = None, keep_probs: list[np.ndarray] | None = None,
) -> list[SuperpixelGraph]:
    """Graphs of chips (CNN pooled per superpixel on ``device``); stops early past ``deadline``.

    ``keep_probs``, if given, receives each chip's CNN probabilities (5,H,W) as float16, so an
    evaluation can reuse them instead of running the CNN again (CPU refits).
    """
    graphs = []
    for i in range(0, len(images), batch):
        if deadline is not None and time.monotonic() > deadline:
            break
        feats, probs = cnn_outputs(model, norm, images[i : i + batch], device)
        if keep_probs is not None:
            keep_probs.extend(probs.cpu().numpy().astype(np.float16))
        both = torch.cat([feats, probs], 1)
        for j in range(both.shape[0]):
            p = parts[i + j]
            seg = torch.from_numpy(p.segments).to(device)
            pooled = pool_per_segment_torch(seg, both[j], p.counts.shape[0]).cpu().numpy()
            c = feats.shape[1]
            graphs.append(graph_from_parts(p, pooled[:, :c], pooled[:, c:]))
    return graphs


def cached_cnn_outputs(
    model: nn.Module, norm: dict, images: np.ndarray, cache_dir: Path, key: str, device: str = "cpu",
    batch: int = 8, log: Log = print, features: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """CNN features (N,C,H,W) and class 1..5 probabilities (N,5,H,W) of every image, float16 memmaps.

    ``features=False`` stores zero feature channels (N,0,H,W), for a GCN that reads only
    colours and probabilities: ~13x less disk for a 64-channel CNN.

    One CNN pass per chip is the slow part of a CPU refit (~0.6 s per 256 px chip on one core);
    the outputs are written once under ``cache_dir`` and reused while ``key`` (which CNN, which
    chips) and the array shapes match, so GCN experiments iterate on the cheap graph part only.
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    meta_path, f_path, p_path = cache_dir / "meta.json", cache_dir / "feats.npy", cache_dir / "probs.npy"
    n, _, h, w = images.shape
    key = key if features else f"{key}:no-features"
    if meta_path.is_file() and json.loads(meta_path.read_text()) == {"key": key, "n": int(n), "complete": True}:
        feats, probs = np.load(f_path, mmap_mode="r"), np.load(p_path, mmap_mode="r")
        if feats.shape[0] == n and feats.shape[2:] == (h, w) and probs.shape == (n, 5, h, w):
            return feats, probs
    meta_path.unlink(missing_ok=True)
    channels = int(getattr(model, "feature_channels")) if features else 0
    feats = np.lib.format.open_memmap(f_path, "w+", np.float16, (n, channels, h, w))
    probs = np.lib.format.open_memmap(p_path, "w+", np.float16, (n, 5, h, w))
    t0 = time.monotonic()
    for i in range(0, n, batch):
        f, p = cnn_outputs(model, norm, images[i : i + batch], device, features)
        feats[i : i + len(f)] = f.cpu().numpy().astype(np.float16)
        probs[i : i + len(p)] = p.cpu().numpy().astype(np.float16)
        if (i // batch) % 10 == 0:
            log(f"  cnn outputs {i + len(f)}/{n} ({time.monotonic() - t0:.0f}s)")
    feats.flush()
    probs.flush()
    meta_path.write_text(json.dumps({"key": key, "n": int(n), "complete": True}))
    return np.load(f_path, mmap_mode="r"), np.load(p_path, mmap_mode="r")


def cached_parts(
    images: np.ndarray, labels: np.ndarray | None, params: GraphParams, cache_dir: Path, key: str, workers: int = 1
) -> list[TileParts]:
    """:func:`compute_parts` of every chip, pickled under ``cache_dir`` per ``params`` (SLIC of
    ~800 chips takes minutes on a shared CPU; a local cache of our own objects, never downloaded)."""
    path = Path(cache_dir) / "parts_{}_{}_{}_{}.pkl".format(*asdict(params).values())
    if path.is_file():
        stored = pickle.loads(path.read_bytes())
        if stored.get("key") == key and len(stored["parts"]) == len(images):
            return stored["parts"]
    parts = compute_parts(images, labels, params, workers)
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps({"key": key, "parts": parts}))
    return parts


def graphs_from_outputs(parts: Sequence[TileParts], feats: np.ndarray, probs: np.ndarray) -> list[SuperpixelGraph]:
    """Graphs of chips from their CNN-independent parts and cached CNN outputs (same order)."""
    graphs = []
    for p, f, pr in zip(parts, feats, probs):
        both = torch.from_numpy(np.concatenate([f, pr]).astype(np.float32))
        pooled = pool_per_segment_torch(torch.from_numpy(p.segments), both, p.counts.shape[0]).numpy()
        graphs.append(graph_from_parts(p, pooled[:, : f.shape[0]], pooled[:, f.shape[0] :]))
    return graphs


@dataclass
class GraphBatch:
    x: torch.Tensor
    edge_index: torch.Tensor
    edge_weight: torch.Tensor
    label_counts: torch.Tensor | None


def collate(graphs: Sequence[SuperpixelGraph], device: str) -> GraphBatch:
    """Disjoint union of graphs (node indices offset) on ``device``."""
    offsets = np.cumsum([0] + [g.n_nodes for g in graphs])
    x = torch.from_numpy(np.concatenate([g.x for g in graphs])).to(device)
    ei = torch.from_numpy(np.concatenate([g.edge_index + o for g, o in zip(graphs, offsets[:-1])], 1)).to(device)
    ew = torch.from_numpy(np.concatenate([g.edge_weight for g in graphs])).to(device)
    lc = None
    if all(g.label_counts is not None for g in graphs):
        lc = torch.from_numpy(np.concatenate([g.label_counts for g in graphs])).to(device)
    return GraphBatch(x, ei, ew, lc)


def soft_node_loss(logits: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Pixel-weighted CE: -sum(counts * log_softmax) / sum(counts) (class 0 has zero counts)."""
    logp = torch.log_softmax(logits, 1)
    return -(counts * logp).sum() / counts.sum().clamp_min(1.0)


def node_miou(logits: torch.Tensor, counts: torch.Tensor) -> float:
    """Pixel mIoU over classes 1..5 of painting each node's argmax onto its labelled pixels."""
    pred = logits.argmax(1)
    cm = torch.zeros(N_CLASSES, N_CLASSES, device=logits.device)
    cm.index_add_(1, pred, counts.t())  # rows truth, columns prediction
    return float(landcover_scores(cm.cpu().numpy().astype(np.int64), CLASS_NAMES)["miou"])


def train_gcn(
    train_graphs: Sequence[SuperpixelGraph],
    val_graphs: Sequence[SuperpixelGraph],
    arch_kwargs: dict[str, Any],
    device: str,
    budget_s: float | None = None,
    epochs: int | None = None,
    lr: float = 5e-3,
    seed: int = 0,
    log: Log = print,
    weight_decay: float = 5e-4,
) -> tuple[SuperpixelGCN, dict[str, Any]]:
    """Full-batch training until ``epochs`` or ``budget_s`` (whichever comes first).

    With ``val_graphs`` it keeps the best validation epoch; with none (cross-validated epoch
    count, see ``geoseg.training.refit_gcn``) it keeps the last.
    """
    if budget_s is None and epochs is None:
        raise ValueError("give budget_s and/or epochs")
    torch.manual_seed(seed)
    gcn = SuperpixelGCN(**arch_kwargs).to(device)
    tr = collate(train_graphs, device)
    va = collate(val_graphs, device) if len(val_graphs) else None
    opt = torch.optim.AdamW(gcn.parameters(), lr=lr, weight_decay=weight_decay)
    t0 = time.monotonic()

    def val_score() -> float:
        if va is None:
            return float("nan")
        gcn.eval()
        with torch.no_grad():
            s = node_miou(gcn(va.x, va.edge_index, va.edge_weight), va.label_counts)
        gcn.train()
        return s

    prior_score = val_score()  # the initial GCN is exactly "mean CNN probability per superpixel"
    best, best_state, best_epoch, history = prior_score, copy.deepcopy(gcn.state_dict()), 0, []
    epoch = 0
    gcn.train()
    while (epochs is None or epoch < epochs) and (budget_s is None or time.monotonic() - t0 < budget_s):
        logits = gcn(tr.x, tr.edge_index, tr.edge_weight)
        loss = soft_node_loss(logits, tr.label_counts)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        epoch += 1
        if va is not None and epoch % 10 == 0:
            s = val_score()
            history.append({"epoch": epoch, "loss": round(float(loss.detach()), 4), "val_node_miou": round(s, 4)})
            if s > best:
                best, best_state, best_epoch = s, copy.deepcopy(gcn.state_dict()), epoch
    if va is None:
        gcn.eval()
        log(f"  gcn: {epoch} epochs in {time.monotonic() - t0:.1f}s, final loss {float(loss.detach()):.4f}")
        return gcn, {"epochs": epoch, "seconds": round(time.monotonic() - t0, 1),
                     "final_loss": round(float(loss.detach()), 4)}
    gcn.load_state_dict(best_state)
    gcn.eval()
    log(f"  gcn: {epoch} epochs in {time.monotonic() - t0:.1f}s, val node mIoU {prior_score:.4f} (superpixel mean) -> {best:.4f} (epoch {best_epoch})")
    return gcn, {
        "epochs": epoch,
        "seconds": round(time.monotonic() - t0, 1),
        "val_node_miou_superpixel_mean": round(prior_score, 4),
        "val_node_miou": round(best, 4),
        "best_epoch": best_epoch,
        "history": history[-20:],
    }


@torch.no_grad()
def evaluate_refinement(
    model: nn.Module,
    norm: dict,
    gcn: SuperpixelGCN,
    images: np.ndarray,
    labels: np.ndarray,
    graphs: Sequence[SuperpixelGraph],
    alphas: Sequence[float],
    device: str,
    boundary: bool = False,
    batch: int = 16,
    cached_probs: Sequence[np.ndarray] | None = None,
) -> dict[float, dict[str, Any]]:
    """Pixel scores of ``softmax(a * log p_cnn + (1 - a) * log p_gcn)`` for each ``a`` (1.0 = CNN alone).

    ``cached_probs`` (from :func:`build_graphs`' ``keep_probs``) replaces the CNN pass.
    """
    gcn.eval()
    cms = {a: np.zeros((N_CLASSES, N_CLASSES), np.int64) for a in alphas}
    bcs = {a: np.zeros(4, np.int64) for a in alphas}
    for i in range(0, len(graphs), batch):
        if cached_probs is not None:
            probs = torch.from_numpy(np.stack(cached_probs[i : i + batch]).astype(np.float32)).to(device)
        else:
            _, probs = cnn_outputs(model, norm, images[i : i + batch], device)
        logp_cnn = torch.log(probs.clamp_min(1e-6))
        for j in range(probs.shape[0]):
            g = graphs[i + j]
            node_logits = gcn(torch.from_numpy(g.x).to(device), torch.from_numpy(g.edge_index).to(device),
                              torch.from_numpy(g.edge_weight).to(device))
            node_logp = torch.log_softmax(node_logits[:, 1:], 1)
            seg = torch.from_numpy(g.segments).to(device).long()
            painted = node_logp[seg].permute(2, 0, 1)
            truth = labels[i + j]
            for a in alphas:
                mix = a * logp_cnn[j] + (1 - a) * painted
                pred = (mix.argmax(0) + 1).cpu().numpy()
                cms[a] += confusion(pred, truth, N_CLASSES, ignore=0)
                if boundary:
                    bcs[a] += boundary_counts(pred, truth)
    out = {}
    for a in alphas:
        s = landcover_scores(cms[a], CLASS_NAMES)
        if boundary:
            s["boundary_f_2px"] = boundary_f(bcs[a])
        out[a] = s
    return out
