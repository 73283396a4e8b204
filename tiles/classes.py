"""Land-cover class lists: the ``classes.json`` beside a data set's masks.

Why: a land-cover model is only as good as its class list. The masks hold class indices, and
``classes.json`` (beside a mask or one folder up, as ``dubai/classes.json``) says what each index
is. ``geoseg tile`` copies the list into the chip directory so that ``geoseg train`` builds a
model with that many outputs and writes those names and colours into its card, which the class
map, its colour table and its QGIS style then follow. No rasterio here: the GPU job reads packs.

Format: a JSON list of ``{"index": int, "name": str, "colour": "#RRGGBB" (optional)}`` with
indices 0..K-1, each once; index 0 is "unlabeled", ignored in training and metrics (chips also
mark nodata and padding with 0).
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

CLASSES_FILE = "classes.json"
_HEX = re.compile(r"#[0-9A-Fa-f]{6}")


def find_classes_file(label_path: Path) -> Path | None:
    """The ``classes.json`` beside a mask or one folder up; None when there is none."""
    for folder in (label_path.parent, label_path.parent.parent):
        path = folder / CLASSES_FILE
        if path.is_file():
            return path
    return None


def check_class_list(classes: Any, where: str) -> list[dict[str, Any]]:
    """``classes`` as a list sorted by index, or ValueError saying what is wrong with it."""
    if not isinstance(classes, list) or not classes:
        raise ValueError(f"{where}: expected a JSON list of classes ({{\"index\": 0, \"name\": ...}})")
    for c in classes:
        if not isinstance(c, dict) or not isinstance(c.get("index"), int) or not isinstance(c.get("name"), str):
            raise ValueError(f"{where}: every class needs an integer index and a name, got {c!r}")  # noqa: TRY004 (bad file content)
        colour = c.get("colour")
        if colour is not None and not (isinstance(colour, str) and _HEX.fullmatch(colour)):
            raise ValueError(f"{where}: colour of class {c['index']} must look like #RRGGBB, got {colour!r}")
    ordered = sorted(classes, key=lambda c: c["index"])
    indices = [c["index"] for c in ordered]
    if indices != list(range(len(indices))):
        raise ValueError(f"{where}: class indices must be 0..{len(indices) - 1}, each once (0 = unlabeled), "
                         f"got {indices}")
    if len(ordered) < 3:
        raise ValueError(f"{where}: needs index 0 (unlabeled) and at least two classes to tell apart")
    return ordered


def read_classes(path: Path) -> list[dict[str, Any]]:
    """A checked class list from a ``classes.json``."""
    try:
        classes = json.loads(Path(path).read_text(encoding="utf-8-sig"))  # Notepad, PowerShell 5: a BOM
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc
    return check_class_list(classes, str(path))
