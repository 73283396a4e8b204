"""Model cards (JSON beside each weight file) and loading of models from them.

A card says everything a consumer needs to run a model correctly: architecture and its
kwargs, classes and colours, input bands and normalisation, working GSD, how it was
trained and how well it scores. Weights are stored as fp16 state dicts (half the size,
no measurable accuracy change for inference) and loaded back as float32.

No rasterio/typer/fastapi imports here: this module also runs on the GPU machine. torch is imported
by the functions that build, load or save a module: reading and checking cards does not need it, and
the service's server process (which checks its ``--models`` folder) never loads torch.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from geoseg.notes import tell
from geoseg.paths import REPO_ROOT, weights_dir
from geoseg.strict_json import json_safe

if TYPE_CHECKING:
    import torch
    from torch import nn

    from geoseg.options import PredictOptions

CREDITS_BUILDINGS = [
    "Imagery: OpenAerialMap / Open Imagery Network contributors, CC BY 4.0",
    "Building labels: (c) OpenStreetMap contributors, ODbL 1.0 (via HOT fAIr ramp data)",
]
CREDITS_LANDCOVER = [
    "Imagery and masks: 'Semantic segmentation of aerial imagery', Humans in the Loop, "
    "MBRSC satellite imagery of Dubai (open data, commonly listed CC0 1.0)",
]

BUILDING_CLASSES = [
    {"index": 0, "name": "background", "colour": "#000000"},
    {"index": 1, "name": "building", "colour": "#E31A1C"},
    {"index": 2, "name": "outline", "colour": "#FDBF6F"},
]
LANDCOVER_CLASSES = [
    {"index": 0, "name": "unlabeled", "colour": "#9B9B9B"},
    {"index": 1, "name": "building", "colour": "#E31A1C"},
    {"index": 2, "name": "road", "colour": "#6E6E6E"},
    {"index": 3, "name": "vegetation", "colour": "#33A02C"},
    {"index": 4, "name": "water", "colour": "#1F78B4"},
    {"index": 5, "name": "land", "colour": "#D8B365"},
]

#: the bands of a card trained on the rasters' own red, green, blue (every shipped card): ``geoseg
#: predict`` then reads each raster's own choice (colour labels, band descriptions, else 1-3)
DEFAULT_BANDS = [1, 2, 3]


def card_bands(card: dict[str, Any]) -> tuple[int, int, int] | None:
    """The 1-based bands a card's model was trained to read as red, green, blue (its chips were cut
    with ``geoseg tile --bands``), None for ``DEFAULT_BANDS`` (the raster's own choice).
    Why: a model trained on bands 4,3,2 of a 4-band product was fed the raster's bands 1,2,3."""
    bands = card.get("bands")
    if not bands or list(bands) == DEFAULT_BANDS:
        return None
    return tuple(int(b) for b in bands)  # type: ignore[return-value]


#: colours for classes whose classes.json gives none (ColorBrewer Paired, then Dark2)
CLASS_PALETTE = ["#E31A1C", "#1F78B4", "#33A02C", "#FF7F00", "#6A3D9A", "#B15928", "#A6CEE3", "#B2DF8A",
                 "#FB9A99", "#FDBF6F", "#CAB2D6", "#FFFF99", "#1B9E77", "#D95F02", "#7570B3", "#E7298A"]


def landcover_card_classes(classes: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """The ``classes`` of a land-cover card trained on chips with this class list (``geoseg tile``
    copies the masks' ``classes.json``, checked by ``tiles.classes``); None -> the Dubai list.

    Dubai's own ``classes.json`` (the same names, no ``colour``) keeps the display colours above:
    its ``source_colour`` are the colours of the original masks. Other lists keep their ``colour``,
    or get one from ``CLASS_PALETTE``; index 0 is unlabeled and drawn grey.
    """
    dubai_names = [c["name"] for c in classes or []] == [c["name"] for c in LANDCOVER_CLASSES]
    if classes is None or (dubai_names and not any(c.get("colour") for c in classes)):
        return [dict(c) for c in LANDCOVER_CLASSES]
    return [{"index": c["index"], "name": c["name"],
             "colour": c.get("colour") or ("#9B9B9B" if c["index"] == 0
                                           else CLASS_PALETTE[(c["index"] - 1) % len(CLASS_PALETTE)])}
            for c in sorted(classes, key=lambda c: c["index"])]


# Name of the shipped model card (without .json) for each default task.
DEFAULT_NAMES = {
    "buildings": "buildings-u2net",
    "landcover": "landcover-attresunet",
    "gcn": "landcover-gcn",
}


#: a profile's card where it is not ``DEFAULT_NAMES[task]`` (+ ``-fast``): since session 25 the accurate
#: building head averages the U2-Net with a LiteUNet (``geoseg.ensemble_heads``; docs/models.md, "GPU run 9"),
#: while ``buildings-u2net`` stays the teacher the students distil from and the name a trained U2-Net takes
PROFILE_NAMES = {("buildings", "accurate"): "buildings-u2net-lite0"}


#: the tasks a card can be for (``geoseg predict --model TASK=CARD``)
MODEL_TASKS = tuple(DEFAULT_NAMES)


class ModelCardError(ValueError):
    """A model card or its weights are missing or inconsistent."""


def parse_model_specs(specs: list[str], what: str = "--model", value: str = "CARD") -> dict[str, str]:
    """``TASK=VALUE`` items (``geoseg predict --model``: a card or folder; a service job's ``model``
    field: a model's name) -> {task: value}; ``ValueError`` naming ``what`` on a malformed one."""
    models = {}
    for spec in specs:
        task, sep, given = spec.partition("=")
        if not sep or task not in MODEL_TASKS or not given:
            raise ValueError(f"{what} expects TASK={value} with TASK {'|'.join(MODEL_TASKS)}, got {spec!r}")
        models[task] = given
    return models


def build_module(architecture: str, arch_kwargs: dict[str, Any]) -> nn.Module:
    """Instantiate the architecture a card names (imports kept lazy: the GCN needs torch-geometric)."""
    if architecture == "U2Net":
        from geoseg.models.u2net import U2Net

        return U2Net(**arch_kwargs)
    if architecture == "AttResUNet":
        from geoseg.models.attresunet import AttResUNet

        kwargs = dict(arch_kwargs)
        if "widths" in kwargs:
            kwargs["widths"] = tuple(kwargs["widths"])
        return AttResUNet(**kwargs)
    if architecture == "SuperpixelGCN":
        from geoseg.models.gcn import SuperpixelGCN

        return SuperpixelGCN(**arch_kwargs)
    if architecture == "FastSegNet":
        from geoseg.models.students import FastSegNet  # owned by the distillation engineer

        return FastSegNet(**arch_kwargs)
    if architecture == "LiteUNet":
        from geoseg.models.lite_unet import LiteUNet

        return LiteUNet(**arch_kwargs)
    if architecture == "ProbabilityMean":
        from geoseg.models.ensemble import ProbabilityMean

        members = arch_kwargs.get("members")
        if not isinstance(members, list) or not all(isinstance(m, dict) and "architecture" in m for m in members):
            raise ModelCardError("a ProbabilityMean card needs arch_kwargs.members: a list of "
                                 "{\"architecture\": ..., \"arch_kwargs\": ...}")
        if any(m["architecture"] == "ProbabilityMean" for m in members):
            raise ModelCardError("a ProbabilityMean member cannot be an ensemble itself")
        return ProbabilityMean([build_module(m["architecture"], m.get("arch_kwargs", {})) for m in members])
    raise ModelCardError(f"unknown architecture {architecture!r}")


def code_version(repo: Path = REPO_ROOT) -> str:
    """Git sha of the checkout whose top is ``repo`` (``+dirty`` if a tracked file is modified: the sha
    alone would claim code that did not run), else $GEOSEG_CODE_VERSION, else 'unknown'.

    Only a checkout rooted at ``repo`` counts: an installed geoseg's ``repo`` is site-packages, and a
    virtualenv inside the user's own git project would otherwise stamp that project's commit."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], check=False, cwd=repo, capture_output=True, text=True,
                              timeout=5).stdout.strip()

    try:
        top = git("rev-parse", "--show-toplevel")
        if top and Path(top).resolve() == Path(repo).resolve():
            sha = git("rev-parse", "--short=12", "HEAD")
            if sha:
                changed = git("status", "--porcelain", "--untracked-files=no")
                return f"{sha}+dirty" if changed else sha
    except (OSError, subprocess.SubprocessError):
        pass
    return os.environ.get("GEOSEG_CODE_VERSION", "unknown")


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def fp16_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """State dict with floating tensors in fp16 on CPU (integers such as BN counters kept)."""
    import torch

    return {
        k: (v.detach().to("cpu", torch.float16) if v.is_floating_point() else v.detach().cpu())
        for k, v in model.state_dict().items()
    }


def save_model(model: nn.Module, card: dict[str, Any], out_dir: Path) -> Path:
    """Write ``<name>.pt`` (fp16) and ``<name>.json`` into ``out_dir``; returns the card path."""
    import torch

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = card["name"]
    card = dict(card)
    card["weights"] = f"{name}.pt"
    card.setdefault("date", utc_now())
    card.setdefault("code_version", code_version())
    card["n_parameters"] = int(sum(p.numel() for p in model.parameters()))
    tmp = out_dir / f".{name}.pt.tmp"
    torch.save(fp16_state_dict(model), tmp)
    tmp.replace(out_dir / f"{name}.pt")
    return write_card(card, out_dir / f"{name}.json")


def write_card(card: dict[str, Any], path: Path) -> Path:
    """Write a card atomically (temp file then rename), as strict JSON: a score that has no value
    (NaN: no labelled pixel of any class to score) is written null, not ``NaN``, which JSON parsers
    other than Python's refuse."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(json_safe(card), indent=2, default=_json_default, allow_nan=False) + "\n")
    tmp.replace(path)
    return path


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def read_json(path: Path) -> Any:
    """A JSON file a person may have edited: Notepad and PowerShell 5 save UTF-8 with a byte-order mark,
    which ``json`` refuses ('Unexpected UTF-8 BOM')."""
    return json.loads(Path(path).read_text(encoding="utf-8-sig"))


def read_card(path: Path) -> dict[str, Any]:
    """Read and check a card's required keys."""
    path = Path(path)
    if not path.is_file():
        raise ModelCardError(f"model card not found: {path}")
    try:
        card = read_json(path)
    except json.JSONDecodeError as exc:
        raise ModelCardError(f"model card {path} is not valid JSON: {exc}") from exc
    missing = [k for k in ("name", "task", "architecture", "arch_kwargs", "classes", "normalisation") if k not in card]
    if missing:
        raise ModelCardError(f"model card {path} lacks {missing}")
    _check_shapes(card, path)
    _check_window(card.get("window"), path)
    _check_member_tiling(card, path)
    _check_uncertain_scene(card.get("uncertain_scene"), path)
    _check_max_upsampling(card.get("max_upsampling"), path)
    return card


#: never upsample the input more than this per axis (a 30 m scene must not become a 0.3 m one),
#: unless the head's card says otherwise (``upsampling_cap``)
MAX_UPSAMPLING = 2.0


def upsampling_cap(card: dict[str, Any]) -> float:
    """How far the head of ``card`` upsamples a coarse input, per axis: the card's ``max_upsampling``,
    else ``MAX_UPSAMPLING``. Why per card: a head that gives its polygons back when a 1 m scene
    reaches it at its own 0.3 m (docs/predict.md, robustness) can say so without making every head
    pay the 11x pixels. Here, not in ``geoseg.tiled_inference``: the service's upload check
    (``geoseg.coarse_input``) reads it in a process that never imports torch."""
    return float(card.get("max_upsampling") or MAX_UPSAMPLING)


#: card keys that say how a head tiles (``geoseg.tiled_inference.plan_tiles``); an ensemble's members
#: each keep their own (``arch_kwargs.members[i].tiling``, ``geoseg.ensemble_heads``)
TILING_KEYS = ("window", "tile_size", "min_context")


def _check_member_tiling(card: dict[str, Any], path: Path) -> None:
    """An ensemble member's ``tiling`` holds tiling keys only: anything else there (a ``max_upsampling``
    of one member) would put the members on different working grids, which failed only after a member
    had run, blaming their GSDs."""
    kwargs = card.get("arch_kwargs")
    members = kwargs.get("members") if card.get("architecture") == "ProbabilityMean" and isinstance(kwargs, dict) else None
    for i, member in enumerate(members if isinstance(members, list) else []):
        tiling = member.get("tiling", {}) if isinstance(member, dict) else {}
        other = sorted(set(tiling) - set(TILING_KEYS)) if isinstance(tiling, dict) else ["(not an object)"]
        if other:
            raise ModelCardError(f"model card {path}: member {i}'s tiling may hold only {', '.join(TILING_KEYS)}, "
                                 f"not {', '.join(other)} (the members share one working grid: give such a key "
                                 f"to the ensemble's card)")
        _check_window(tiling.get("window"), path)


def _check_shapes(card: dict[str, Any], path: Path) -> None:
    """The classes, the networks' ``n_classes`` (an ensemble's members' too), the normalisation and
    the GSD of a card must agree: an edited card failed with torch's words (a multi-line state-dict
    dump, 'the size of tensor a (3) must match ...') or only after inference had started."""
    classes, kwargs = card["classes"], card["arch_kwargs"]
    if not isinstance(classes, list) or not classes:
        raise ModelCardError(f"model card {path}: classes must be a list of the classes, got {classes!r}")
    nets = [kwargs] if isinstance(kwargs, dict) else []
    if card["architecture"] == "ProbabilityMean" and isinstance(kwargs, dict):
        nets = [m.get("arch_kwargs", {}) for m in kwargs.get("members", []) if isinstance(m, dict)]
    for net in nets:
        n = net.get("n_classes") if isinstance(net, dict) else None
        if n is not None and n != len(classes):
            raise ModelCardError(f"model card {path}: arch_kwargs.n_classes is {n} but classes lists {len(classes)}")
    norm, channels = card["normalisation"], (kwargs.get("in_channels", 3) if isinstance(kwargs, dict) else 3)
    stats = [norm.get(k) for k in ("mean", "std")] if isinstance(norm, dict) else [None, None]
    if not all(isinstance(v, list) and len(v) == channels
               and all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v)
               for v in stats) or not all(x > 0 for x in stats[1]):
        raise ModelCardError(f"model card {path}: normalisation must be {{\"mean\": [{channels} numbers], \"std\": "
                             f"[{channels} numbers > 0]}}, got {norm!r}")
    gsd = card.get("gsd_m")
    if gsd is not None and (isinstance(gsd, bool) or not isinstance(gsd, (int, float)) or not 0 < gsd < 1e6):
        raise ModelCardError(f"model card {path}: gsd_m must be a positive number of metres, got {gsd!r}")


def _check_max_upsampling(cap: Any, path: Path) -> None:
    """A card's optional ``max_upsampling`` (``upsampling_cap``) must be a number from 1 to 10:
    past ``geoseg.coarse_input.MAX_COARSER`` an input is refused anyway."""
    if cap is None:
        return
    if isinstance(cap, bool) or not isinstance(cap, (int, float)) or not 1 <= cap <= 10:
        raise ModelCardError(f"model card {path}: max_upsampling must be a number from 1 to 10, got {cap!r}")


def _check_uncertain_scene(rule: Any, path: Path) -> None:
    """A card's optional ``uncertain_scene`` rule (``geoseg.classmap_confidence``) must hold a
    probability, or a run would fail at its end, after all its work, when the rule is applied."""
    if rule is None:
        return
    below = rule.get("mean_max_probability_below") if isinstance(rule, dict) else None
    if isinstance(below, bool) or not isinstance(below, (int, float)) or not 0 <= below <= 1:
        raise ModelCardError(f"model card {path}: uncertain_scene must be {{\"mean_max_probability_below\": "
                             f"a probability in [0, 1], ...}}, got {rule!r}")


def _check_window(window: Any, path: Path) -> None:
    """A card's optional ``window`` (the fixed tiles of its head: ``geoseg.tiled_inference.head_tiling``)
    must be what ``--tile-size`` / ``--overlap`` accept: size >= 32, 0 <= overlap < size / 2."""
    if window is None:
        return
    size, overlap = (window.get("size"), window.get("overlap")) if isinstance(window, dict) else (None, None)
    if not (isinstance(size, int) and isinstance(overlap, int) and size >= 32 and 0 <= overlap < size // 2):
        raise ModelCardError(f"model card {path}: window must be {{\"size\": >= 32, \"overlap\": 0 <= o < size/2}} "
                             f"(whole pixels), got {window!r}")


def find_card(model_dir_or_card: Path, task: str | None = None) -> Path:
    """A card path from a card path or a directory holding exactly one card (of ``task``, when
    given: ``geoseg train buildings|landcover --out models/`` puts both tasks' cards in one folder)."""
    p = Path(model_dir_or_card)
    if p.suffix == ".json":
        return p
    if not p.is_dir():
        raise ModelCardError(f"no model directory or card at {p}")
    cards = sorted(c for c in p.glob("*.json") if not c.name.startswith("."))
    cards = [c for c in cards if looks_like_card(c)]
    if task is not None and len(cards) > 1:
        of_task = [c for c in cards if read_json(c).get("task") == task]
        if not of_task:
            raise ModelCardError(f"{p} holds no {task} model card among {[c.name for c in cards]}")
        cards = of_task
    if len(cards) != 1:
        kind = f" {task}" if task else ""
        raise ModelCardError(f"{p} holds {len(cards)}{kind} model cards {[c.name for c in cards]}; pass the card path")
    return cards[0]


def find_task_card(model_dir_or_card: Path, task: str) -> Path:
    """The card of ``task`` at ``model_dir_or_card`` (``find_card``), refused when it is another
    task's: a card of another task ran to the end of the head's tiles and failed on its output's
    shape ("expected (3, h, w) building probabilities")."""
    path = find_card(model_dir_or_card, task)
    other = read_card(path).get("task")
    if other != task:
        raise ModelCardError(f"{path} is a {other} model card, not a {task} one")
    return path


def weights_path(card_path: Path, card: dict[str, Any]) -> Path | None:
    """The weight file a card names, beside it (None for an untrained placeholder, whose
    ``weights`` is null); ``ModelCardError`` when it is not there."""
    if not card.get("weights"):
        return None
    path = Path(card_path).parent / card["weights"]
    if not path.is_file():
        raise ModelCardError(f"weights {path} named by {card_path} not found")
    return path


def looks_like_card(path: Path) -> bool:
    """Whether a JSON file reads as a model card (its architecture and arguments)."""
    try:
        data = read_json(path)
    except (OSError, ValueError):  # not JSON, or not UTF-8 (a UTF-16 file from PowerShell)
        return False
    return isinstance(data, dict) and "architecture" in data and "arch_kwargs" in data


def load_model(model_dir_or_card: Path | str, device: str = "cpu",
               notes: list[str] | None = None, task: str | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Load a model and its card; the model is float32, in eval mode, on ``device`` (``task``: the
    card of that task in a directory holding several, ``find_card``).

    A card whose ``weights`` is null is an *untrained placeholder*: the module is built with
    a fixed seed and ``notes`` are told, else a warning is raised (lets integrators run before
    weights ship).
    """
    import torch

    card_path = find_card(Path(model_dir_or_card), task)
    card = read_card(card_path)
    wpath = weights_path(card_path, card)
    if wpath is None:
        tell(notes, f"model card {card_path.name} has no weights: untrained placeholder (seed 0)")
        torch.manual_seed(0)
    try:
        model = build_module(card["architecture"], card["arch_kwargs"])
    except ModelCardError:
        raise
    except (TypeError, ValueError) as exc:  # arch_kwargs another architecture's: one line, not torch's
        raise ModelCardError(f"model card {card_path}: {card['architecture']} cannot be built from its arch_kwargs "
                             f"({exc})") from exc
    if wpath is not None:
        state = torch.load(wpath, map_location="cpu", weights_only=True)
        state = {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:  # torch's message is a line per parameter: its first mismatch
            first = next((line.strip() for line in str(exc).splitlines()[1:] if line.strip()), str(exc))
            first = first if len(first) <= 300 else first[:300] + " ..."  # a list of every missing key
            raise ModelCardError(f"weights {wpath} do not match the {card['architecture']} its card {card_path.name} "
                                 f"describes (architecture or arch_kwargs edited, or another card's weights): "
                                 f"{first}") from exc
    model.eval().to(device)
    card["card_path"] = str(card_path)
    return model, card


def weights_sha256(card: dict[str, Any]) -> str | None:
    """SHA-256 of the weight file a loaded card names (None without one): what derived files, such
    as an int8 graph, record so they are never used with other weights."""
    if not card.get("weights") or not card.get("card_path"):
        return None
    path = Path(card["card_path"]).parent / card["weights"]
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def default_card_path(task: str, profile: str = "accurate") -> Path:
    """Path of the shipped card for ``task`` (buildings | landcover | gcn); ``profile='fast'`` -> ``*-fast``."""
    if task not in DEFAULT_NAMES:
        raise ModelCardError(f"unknown task {task!r}; expected one of {sorted(DEFAULT_NAMES)}")
    if profile not in ("accurate", "fast"):  # 'Accurate' or 'FAST' loaded the U2-Net, neither profile's head
        raise ModelCardError(f"unknown profile {profile!r}; expected 'accurate' or 'fast'")
    name = PROFILE_NAMES.get((task, profile)) or DEFAULT_NAMES[task] + ("-fast" if profile == "fast" else "")
    return weights_dir() / f"{name}.json"


def shipped_card_path(task: str, profile: str = "accurate") -> Path:
    """The card ``profile`` uses for ``task``: its ``*-fast`` card when shipped, else the accurate one.

    One rule for loading a head (``geoseg.infer.load_head``) and for checking, before loading,
    that the GCN fits the land-cover model (``geoseg.heads``)."""
    default_card_path(task, profile)  # an unknown profile is refused, not read as the accurate one
    fast = default_card_path(task, "fast")
    return fast if profile == "fast" and fast.is_file() else default_card_path(task)


def task_card_path(task: str, options: PredictOptions) -> Path:
    """The card a run with ``options`` loads for ``task``: ``--model``'s, else the shipped one of the
    profile. Here, not in ``geoseg.heads`` (which imports torch): the service's upload check
    (``geoseg.coarse_input``) reads cards in the server process, which must not load torch."""
    model_dir = options.model_dirs.get(task)
    return find_task_card(Path(model_dir), task) if model_dir else shipped_card_path(task, options.profile)


def load_default(task: str, profile: str = "accurate", device: str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Load the shipped model for ``task`` from ``geoseg/weights``."""
    return load_model(default_card_path(task, profile), device=device)


def normalise(images: torch.Tensor | np.ndarray, card: dict[str, Any]) -> torch.Tensor:
    """uint8 (B,3,H,W) (or float 0..255) -> float input the model expects, per the card.

    A NumPy array (what ``tiles.Scene.read`` gives) is taken as a tensor; one of floats no higher
    than 1 is refused: the models read 0..255, and a [0, 1] image normalised as such found no building."""
    import torch

    if isinstance(images, np.ndarray):  # was: 'numpy.ndarray' object has no attribute 'float'
        if np.issubdtype(images.dtype, np.floating) and images.size and 0.0 < float(np.nanmax(images)) <= 1.0:
            raise ValueError("float images in [0, 1]: the models read values of 0..255 (uint8, or floats x 255)")
        images = torch.as_tensor(images)
    norm = card["normalisation"]
    mean = torch.tensor(norm["mean"], dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    std = torch.tensor(norm["std"], dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    return (images.float() / 255.0 - mean) / std
