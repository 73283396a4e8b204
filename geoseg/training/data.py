"""Training data as arrays: from a chip directory (rasterio) or a packed ``.npz`` (no rasterio).

A dataset is a plain dict of numpy arrays, the form the GPU job and the distillation
module share (docs/ARCHITECTURE.md):
``images`` (N,3,H,W) uint8, ``labels`` (N,H,W) uint8, ``split``/``area``/``chip_id``
(N,) str, ``gsd`` (N,) float32, ``target`` (str: buildings | landcover), for land-cover
chips cut from masks with a ``classes.json``, ``classes`` (that list, ``tiles.classes``) and, for
chips cut with ``geoseg tile --bands``, ``bands`` (the 1-based bands read as red, green, blue).
"""
from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from tiles.classes import CLASSES_FILE, read_classes
from tiles.splits import block_label, scene_area

IGNORE_INDEX = {"buildings": 255, "landcover": 0}
#: GSDs that differ by more than this (relative) are not one working scale, and one model has one:
#: ``geoseg tile`` refuses such scenes without ``--gsd``, ``geoseg train`` such chips
SAME_GSD_TOLERANCE = 0.05


def same_gsd(values: list[float]) -> bool:
    """Whether GSDs in metres are one working scale (within ``SAME_GSD_TOLERANCE``)."""
    return not values or max(values) <= min(values) * (1 + SAME_GSD_TOLERANCE)


class ChipDataError(ValueError):
    """The chip directory or pack is missing or malformed."""


def read_index(chips_dir: Path) -> list[dict[str, Any]]:
    """Feature properties of the written chips of ``index.geojson`` (skipped windows, image null, dropped)."""
    index = Path(chips_dir) / "index.geojson"
    if not index.is_file():
        raise ChipDataError(f"{chips_dir} is not a chip directory: no index.geojson")
    features = json.loads(index.read_text()).get("features", [])
    props = [f["properties"] for f in features if f["properties"].get("image") and f["properties"].get("label")]
    if not props:
        raise ChipDataError(f"{index} lists no written chips")
    return props


def _pad_to(a: np.ndarray, h: int, w: int, fill: int) -> np.ndarray:
    if a.shape[-2:] == (h, w):
        return a
    pad = [(0, 0)] * (a.ndim - 2) + [(0, h - a.shape[-2]), (0, w - a.shape[-1])]
    return np.pad(a, pad, constant_values=fill)


def _read_chip(chips_dir: Path, name: str) -> np.ndarray:
    """One chip file's bands; a missing or unreadable one is a ChipDataError saying how to cut it again."""
    import rasterio  # lazy: the GPU machine has no rasterio and never calls this

    try:
        with rasterio.open(chips_dir / name) as src:
            return src.read()
    except rasterio.errors.RasterioError as exc:
        reason = str(exc).splitlines()[0].replace(f"{chips_dir / name}: ", "")
        raise ChipDataError(f"{chips_dir / name} cannot be read ({reason}): delete it and run the geoseg tile "
                            f"command that made {chips_dir} again (it cuts scenes whose chips are missing "
                            f"again)") from None


def load_chip_dir(chips_dir: Path) -> dict[str, Any]:
    """Read every chip of a chip directory into arrays (chips of unequal size are padded, labels with ignore)."""
    chips_dir = Path(chips_dir)
    props = read_index(chips_dir)
    targets = {p.get("target") for p in props}
    if len(targets) != 1 or next(iter(targets)) not in IGNORE_INDEX:
        raise ChipDataError(f"{chips_dir}: expected one target of {sorted(IGNORE_INDEX)}, got {targets}")
    target = next(iter(targets))
    images, labels = [], []
    for p in props:
        img, lab = _read_chip(chips_dir, p["image"]), _read_chip(chips_dir, p["label"])[0]
        if img.shape[0] != 3 or img.dtype != np.uint8 or lab.dtype != np.uint8 or img.shape[1:] != lab.shape:
            raise ChipDataError(f"chip {p['chip_id']}: image {img.shape} {img.dtype} / label {lab.shape} {lab.dtype}")
        images.append(img)
        labels.append(lab)
    h = max(a.shape[1] for a in images)
    w = max(a.shape[2] for a in images)
    fill = IGNORE_INDEX[target]
    data = {
        "images": np.stack([_pad_to(a, h, w, 0) for a in images]),
        "labels": np.stack([_pad_to(a, h, w, fill) for a in labels]),
        "split": np.array([p["split"] for p in props]),
        "area": np.array([str(p.get("area", "")) for p in props]),
        "chip_id": np.array([str(p["chip_id"]) for p in props]),
        "gsd": np.array([float(p.get("gsd") or np.nan) for p in props], np.float32),
        "target": target,
    }
    if (chips_dir / CLASSES_FILE).is_file():  # the masks' class list, recorded by geoseg tile
        data["classes"] = read_classes(chips_dir / CLASSES_FILE)
    bands = requested_bands(chips_dir, props)
    if bands is not None:
        data["bands"] = bands
    return data


def _pack_meta(path: Path) -> dict[str, Any]:
    """A pack's metadata (``geoseg.training.pack``) without loading its arrays."""
    if not path.is_file():
        raise ChipDataError(f"no pack at {path}")
    with np.load(path, allow_pickle=False) as z:
        return json.loads(str(z["meta"]))


def chip_set_bands(path: Path) -> list[int] | None:
    """``requested_bands`` of a chip directory or pack from its index or metadata alone (no chip is
    read): what a command checks before its long work starts."""
    path = Path(path)
    if path.suffix == ".npz":
        return _pack_meta(path).get("bands")
    return requested_bands(path, read_index(path))


def chip_set_classes(path: Path) -> list[dict[str, Any]] | None:
    """The class list of a land-cover chip directory (its ``classes.json``) or pack (its metadata),
    None when it has none (Dubai's six, cut before ``geoseg tile`` recorded it); no chip is read."""
    path = Path(path)
    if path.suffix == ".npz":
        return _pack_meta(path).get("classes")
    return read_classes(path / CLASSES_FILE) if (path / CLASSES_FILE).is_file() else None


def chip_set_gsds(path: Path) -> np.ndarray:
    """Each chip's GSD in metres (NaN where a chip has none) of a chip directory or pack, read from its
    index or arrays without decoding a chip."""
    path = Path(path)
    if path.suffix == ".npz":
        if not path.is_file():
            raise ChipDataError(f"no pack at {path}")
        with np.load(path, allow_pickle=False) as z:
            return np.asarray(z["gsd"], np.float64)
    return np.array([float(p.get("gsd") or np.nan) for p in read_index(path)], np.float64)


def chip_set_ids(path: Path) -> list[str]:
    """The chips' names of a chip directory or pack, from its index or arrays without decoding a chip."""
    path = Path(path)
    if path.suffix == ".npz":
        if not path.is_file():
            raise ChipDataError(f"no pack at {path}")
        with np.load(path, allow_pickle=False) as z:
            return z["chip_id"].astype(str).tolist()
    return [str(p["chip_id"]) for p in read_index(path)]


def requested_bands(chips_dir: Path, props: list[dict[str, Any]]) -> list[int] | None:
    """The ``--bands`` the chips were cut with (their records' ``bands``), None when the rasters' own
    red, green, blue were read. Records written before ``bands`` was recorded say nothing: a chip
    set holds one option set (``geoseg tile`` refuses another), so the others speak for them.
    Why: ``geoseg train`` wrote 1,2,3 into every card, and predict fed the model other bands."""
    found = {tuple(p["bands"]) for p in props if p.get("bands")}
    if len(found) > 1:
        raise ChipDataError(f"{chips_dir}: chips cut with different --bands ({', '.join(map(str, sorted(found)))}): "
                            f"one model reads one set of bands; cut them into different chip folders")
    return list(next(iter(found))) if found else None


def _decode_jpeg(buf: bytes) -> np.ndarray:
    try:
        from PIL import Image

        return np.asarray(Image.open(io.BytesIO(buf)).convert("RGB"))
    except ImportError:  # pragma: no cover - the GPU machine always has one of the two
        import cv2

        bgr = cv2.imdecode(np.frombuffer(buf, np.uint8), cv2.IMREAD_COLOR)
        return bgr[:, :, ::-1]


def load_packed(npz_path: Path) -> dict[str, Any]:
    """Read a pack written by :func:`geoseg.training.pack.pack_chip_dir`."""
    npz_path = Path(npz_path)
    if not npz_path.is_file():
        raise ChipDataError(f"no pack at {npz_path}")
    with np.load(npz_path, allow_pickle=False) as z:
        offsets = z["jpeg_offsets"]
        blob = z["jpeg"].tobytes()
        images = np.stack(
            [_decode_jpeg(blob[offsets[i] : offsets[i + 1]]).transpose(2, 0, 1) for i in range(len(offsets) - 1)]
        )
        meta = json.loads(str(z["meta"]))
        return {
            "images": np.ascontiguousarray(images),
            "labels": z["labels"],
            "split": z["split"].astype(str),
            "area": z["area"].astype(str),
            "chip_id": z["chip_id"].astype(str),
            "gsd": z["gsd"],
            "target": meta["target"],
            "meta": meta,
            **({"classes": meta["classes"]} if meta.get("classes") else {}),
            **({"bands": meta["bands"]} if meta.get("bands") else {}),
        }


def load_dataset(path: Path) -> dict[str, Any]:
    """A chip directory or a ``.npz`` pack; ``source`` records which (the model card's training data),
    as an absolute path: a card says ``chips`` no more once it is read from another folder or machine."""
    path = Path(path)
    data = load_packed(path) if path.suffix == ".npz" else load_chip_dir(path)
    data["source"] = str(path.resolve())
    return data


def check_chips_have_labels(data: dict[str, Any], task: str, source: Path | str) -> None:
    """Refuse (ValueError, one line) train chips without a pixel of any class to learn (buildings: no
    building pixel; land cover: every pixel unlabeled) and val chips without one to choose on.

    Why: building chips that are all ``empty`` (labels of another place, a layer filtered to nothing)
    trained to the end and wrote a card (val binary mIoU 0.0, a model that never saw a roof), and
    land-cover val chips all unlabeled scored NaN at every validation."""
    wanted = {"buildings": "building pixel", "landcover": "labelled pixel"}[task]
    for split, use in (("train", "nothing to learn"), ("val", "nothing to choose the model on")):
        labels = data["labels"][data["split"] == split]
        has = (labels == 1) | (labels == 2) if task == "buildings" else labels != IGNORE_INDEX[task]
        if not has.any():
            raise ValueError(f"{source}: its {len(labels)} {split} chips hold no {wanted}: {use}"
                             + (" (are they cut from scenes your labels cover?)" if task == "buildings" else ""))


def _subset(data: dict[str, Any], keep: np.ndarray) -> dict[str, Any]:
    """The chips where ``keep`` is True (per-chip arrays indexed, everything else kept)."""
    return {k: (v[keep] if isinstance(v, np.ndarray) and len(v) == len(keep) else v) for k, v in data.items()}


def select(data: dict[str, Any], split: str) -> dict[str, Any]:
    """The chips of one split (arrays indexed, scalars kept)."""
    return _subset(data, data["split"] == split)


def first_per_split(data: dict[str, Any], n: int) -> dict[str, Any]:
    """The first ``n`` chips of each split (arrays indexed, scalars kept): GPU-job dry runs on a CPU."""
    keep = np.zeros(len(data["split"]), bool)
    for split in np.unique(data["split"]):
        keep[np.flatnonzero(data["split"] == split)[:n]] = True
    return _subset(data, keep)


#: a chip id is ``<scene stem>_r<row>_c<col>`` (``geoseg tile``)
_CHIP_SCENE = re.compile(r"^(?P<scene>.+)_r\d+_c\d+$")


def chip_scene(chip_id: str) -> str:
    """The name of the scene a chip was cut from: its id less the grid cell (``_r000_c001``)."""
    m = _CHIP_SCENE.match(str(chip_id))
    return m["scene"] if m else str(chip_id)


def chip_blocks(data: dict[str, Any]) -> np.ndarray:
    """Each chip's block label (``zanzibar-2``; the area alone where its scene has no block)."""
    out = []
    for chip_id, area in zip(data["chip_id"], data["area"]):
        found, block = scene_area(Path(chip_scene(chip_id)))
        out.append(block_label(str(area), block if found == area else None))
    return np.array(out, dtype=str)


def resplit(data: dict[str, Any], train: set[str], val: set[str]) -> dict[str, Any]:
    """The chips re-split by block: ``train`` and ``val`` name block labels (``nairobi-2``) or
    whole areas (``zanzibar``); chips of neither are dropped. The test split stays as packed and
    can be named in neither, so that no choice of split lets a test area into training or
    selection (the cross-city recipe choice of scripts/device_cities.py)."""
    blocks = chip_blocks(data)
    areas = np.asarray(data["area"]).astype(str)
    test = data["split"] == "test"

    def member(names: set[str]) -> np.ndarray:
        return np.isin(blocks, list(names)) | np.isin(areas, list(names))

    in_train, in_val = member(train), member(val)
    if (in_train & in_val).any():
        raise ValueError(f"blocks in both train and val: {sorted(set(blocks[in_train & in_val]))}")
    if ((in_train | in_val) & test).any():
        raise ValueError(f"test chips cannot be re-split: {sorted(set(blocks[(in_train | in_val) & test]))}")
    if not in_train.any() or not in_val.any():
        raise ValueError(f"no chips for train {sorted(train)} or val {sorted(val)} (blocks: {sorted(set(blocks))})")
    keep = in_train | in_val | test
    out = _subset(data, keep)
    out["split"] = np.where(in_train, "train", np.where(in_val, "val", "test"))[keep]
    return out


def channel_stats(images: np.ndarray, max_pixels: int = 2_000_000) -> tuple[list[float], list[float]]:
    """Per-band mean and std on the 0..1 scale (subsampled) for the model card's normalisation."""
    flat = images.transpose(1, 0, 2, 3).reshape(images.shape[1], -1)
    step = max(1, flat.shape[1] // max_pixels)
    sample = flat[:, ::step].astype(np.float64) / 255.0
    return sample.mean(1).round(4).tolist(), np.maximum(sample.std(1), 1e-3).round(4).tolist()
