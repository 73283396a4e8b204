"""Validation/test metrics on label arrays (numpy; no rasterio, runs on the GPU machine).

These score training runs (model selection, model-card figures). ``geoseg.evaluate`` is
the user-facing evaluation of predicted rasters and polygons.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage


def confusion(pred: np.ndarray, truth: np.ndarray, n_classes: int, ignore: int | None) -> np.ndarray:
    """(n_classes, n_classes) counts, rows = truth, columns = prediction; ``ignore`` pixels dropped."""
    p = pred.ravel().astype(np.int64)
    t = truth.ravel().astype(np.int64)
    keep = (t < n_classes) & (p < n_classes)
    if ignore is not None:
        keep &= t != ignore
    return np.bincount(t[keep] * n_classes + p[keep], minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def iou_per_class(cm: np.ndarray) -> np.ndarray:
    """IoU of each class (NaN where the class is absent from both truth and prediction)."""
    tp = np.diag(cm).astype(np.float64)
    union = cm.sum(0) + cm.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / union, np.nan)


def landcover_scores(cm: np.ndarray, class_names: list[str]) -> dict[str, float | dict[str, float]]:
    """mIoU over classes 1.. (0 = unlabeled excluded), per-class IoU, overall accuracy."""
    sub = cm[1:, 1:]
    ious = iou_per_class(sub)
    return {
        "miou": float(np.nanmean(ious)),
        "iou": {name: (None if np.isnan(v) else round(float(v), 4)) for name, v in zip(class_names[1:], ious)},
        "overall_accuracy": float(np.diag(sub).sum() / max(sub.sum(), 1)),
    }


def building_iou(pred: np.ndarray, truth: np.ndarray, ignore: int = 255) -> tuple[int, int]:
    """(intersection, union) of building pixels (classes 1 interior + 2 outline), ignore dropped."""
    valid = truth != ignore
    p = (pred >= 1) & valid
    t = (truth >= 1) & (truth != ignore)
    return int((p & t).sum()), int((p | t).sum())


def class_boundaries(class_map: np.ndarray) -> np.ndarray:
    """Pixels whose right or lower neighbour has a different class."""
    b = np.zeros(class_map.shape, bool)
    b[:, :-1] |= class_map[:, :-1] != class_map[:, 1:]
    b[:-1, :] |= class_map[:-1, :] != class_map[1:, :]
    return b


def boundary_counts(pred: np.ndarray, truth: np.ndarray, tolerance: int = 2, ignore: int = 0) -> np.ndarray:
    """[matched predicted boundary px, predicted boundary px, matched true boundary px, true boundary px].

    A boundary pixel matches if the other map has a boundary within ``tolerance`` px;
    pixels at or next to ``ignore`` truth are left out. Sum counts over tiles, then F-score.
    """
    valid = truth != ignore
    valid = ndimage.binary_erosion(valid, iterations=1, border_value=1)
    bp = class_boundaries(pred) & valid
    bt = class_boundaries(truth) & valid
    if not bt.any() and not bp.any():
        return np.zeros(4, np.int64)
    dist_t = ndimage.distance_transform_edt(~bt) if bt.any() else np.full(bt.shape, np.inf)
    dist_p = ndimage.distance_transform_edt(~bp) if bp.any() else np.full(bp.shape, np.inf)
    return np.array([(dist_t[bp] <= tolerance).sum(), bp.sum(), (dist_p[bt] <= tolerance).sum(), bt.sum()], np.int64)


def boundary_f(counts: np.ndarray) -> float:
    """F-score from summed :func:`boundary_counts`."""
    precision = counts[0] / max(counts[1], 1)
    recall = counts[2] / max(counts[3], 1)
    return float(2 * precision * recall / max(precision + recall, 1e-9))
