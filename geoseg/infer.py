"""Running the segmentation heads over batches of uint8 tiles (torch, inference mode).

Why a module of its own: the pipeline should not care which runtime, device or
model family produces the per-pixel probabilities. ``TileModel`` turns a batch of
uint8 RGB tiles into float32 softmax probabilities (and, for the land-cover GCN
refinement, decoder features); ``refine_with_gcn`` re-labels one tile's
superpixels with the graph network. Models come from model cards
(``geoseg.card``); ``load_head`` picks the shipped card of a task and profile,
falling back from 'fast' to 'accurate' with a warning when no student ships.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from geoseg import card as cards

TASKS = ("buildings", "landcover", "gcn")


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when a GPU is visible, else 'cpu'; 'cuda' without a GPU is an error."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda requested but no CUDA GPU is available")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {device!r}")
    return device


def load_head(
    task: str, profile: str = "accurate", device: str = "cpu", model_dir: Path | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """The model of ``task`` from ``model_dir`` (a card or a folder of one) or the shipped weights.

    ``profile='fast'`` loads the ``*-fast`` student card when shipped; otherwise warns and
    uses the accurate model. The card gets ``profile`` set to what was actually used.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}")
    if profile not in ("fast", "accurate"):
        raise ValueError(f"profile must be 'fast' or 'accurate', got {profile!r}")
    if model_dir is not None:
        module, card = cards.load_model(model_dir, device=device)
        card["profile"] = profile
        return module, card
    used = profile
    if profile == "fast" and task != "gcn":
        if cards.default_card_path(task, "fast").is_file():
            module, card = cards.load_default(task, "fast", device=device)
            card["profile"] = "fast"
            return module, card
        warnings.warn(f"no fast student shipped for {task}: using the accurate model", stacklevel=2)
        used = "accurate"
    path = cards.default_card_path(task, "accurate")
    if not path.is_file():
        raise cards.ModelCardError(f"no {task} model shipped ({path.name} missing in {path.parent})")
    module, card = cards.load_model(path, device=device)
    card["profile"] = used
    return module, card


class TileModel:
    """One segmentation head ready for batched inference on uint8 RGB tiles."""

    def __init__(self, module: nn.Module, card: dict[str, Any], device: str = "cpu") -> None:
        self.module = module.eval().to(device)
        self.card = card
        self.device = device
        self.n_classes = len(card["classes"])
        norm = card["normalisation"]
        self._mean = torch.tensor(norm["mean"], dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self._std = torch.tensor(norm["std"], dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self._autocast = device == "cuda"

    @property
    def gsd_m(self) -> float | None:
        value = self.card.get("gsd_m")
        return float(value) if value else None

    def _input(self, images: np.ndarray) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3 or images.dtype != np.uint8:
            raise ValueError(f"expected uint8 (B, 3, H, W) tiles, got {images.dtype} {images.shape}")
        x = torch.from_numpy(np.ascontiguousarray(images)).to(self.device, non_blocking=True)
        return (x.float() / 255.0 - self._mean) / self._std

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """Softmax probabilities float32 (B, n_classes, H, W) of uint8 tiles (B, 3, H, W)."""
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=self._autocast):
            logits = self.module(self._input(images))
            if isinstance(logits, (list, tuple)):
                logits = logits[0]
            return torch.softmax(logits.float(), dim=1).cpu().numpy()

    def probabilities_and_features(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities and full-resolution decoder features (B, C, H, W) in one pass (for the GCN)."""
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=self._autocast):
            x = self._input(images)
            if hasattr(self.module, "forward_with_features"):
                logits, feats = self.module.forward_with_features(x)
            elif hasattr(self.module, "classify"):
                feats = self.module.features(x)
                logits = self.module.classify(feats)
            else:
                raise TypeError(f"{type(self.module).__name__} exposes no features for the GCN")
            if feats.shape[-2:] != x.shape[-2:]:
                feats = F.interpolate(feats.float(), size=x.shape[-2:], mode="bilinear", align_corners=False)
            probs = torch.softmax(logits.float(), dim=1)
            return probs.cpu().numpy(), feats.float().cpu().numpy()


def refine_with_gcn(
    image: np.ndarray,
    probs: np.ndarray,
    features: np.ndarray,
    valid: np.ndarray,
    gcn: nn.Module,
    gcn_card: dict[str, Any],
) -> np.ndarray:
    """Land-cover probabilities (C, H, W) of one tile fused with the GCN's per-superpixel classes.

    ``probs`` channel 0 is the never-predicted 'unlabeled' class; the graph sees classes
    1..C-1 (``geoseg.models.gcn.refine_probabilities``). Tiles without valid pixels pass through.
    """
    from geoseg.models.gcn import refine_probabilities

    if not valid.any():
        return probs
    predictable = probs[1:] / np.clip(probs[1:].sum(0, keepdims=True), 1e-6, None)
    with torch.inference_mode():
        fused = refine_probabilities(gcn, gcn_card, np.ascontiguousarray(np.moveaxis(image, 0, -1)), features,
                                     predictable)
    return np.concatenate([np.zeros_like(probs[:1]), fused.astype(np.float32)], 0)
