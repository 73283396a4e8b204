"""Square crops of a real Dubai land-cover image and its labels, for the GCN tests."""
from __future__ import annotations

import numpy as np
from PIL import Image

from geoseg.paths import data_root


def dubai_crops(tile: str, image: str, n: int, size: int, start: tuple[int, int],
                step: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """``n`` crops (uint8 (n, 3, size, size), labels (n, size, size)) along a diagonal of one image."""
    root = data_root() / "landcover" / "dubai" / tile
    img = np.asarray(Image.open(root / f"{image}.jpg").convert("RGB"))
    lab = np.asarray(Image.open(root / f"{image}_label.png"))
    corners = [(start[0] + step[0] * k, start[1] + step[1] * k) for k in range(n)]
    return (np.stack([img[r : r + size, c : c + size].transpose(2, 0, 1) for r, c in corners]).copy(),
            np.stack([lab[r : r + size, c : c + size] for r, c in corners]).copy())
