"""``json_safe``: a value made fit for strict JSON before it is written (model cards, report.json).

Why: Python's ``json`` writes NaN and Infinity, which other JSON readers refuse; a score with no
value (no labelled pixel to score) or a GSD that cannot be measured is written ``null`` instead.
"""
from __future__ import annotations

from typing import Any

import numpy as np


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float (numpy's too) replaced by None, containers walked."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (float, np.floating)) and not np.isfinite(value):
        return None
    return value
