"""The models a predict run needs, loaded once per process.

Why: a batch (several CLI inputs, a Dask worker's tasks, the service's standby worker) must not
load the same weights for every scene, and the land-cover head (with its GCN) is needed both for
the class map and for the building rules' land-cover cue. ``load_heads`` decides which heads a
run needs from the options and the cards alone; ``load_head_cached`` keeps them keyed by the
card's and weights' file identity, so an edited file is loaded again.
"""
from __future__ import annotations

import hashlib
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

from geoseg import card as cards
from geoseg.card import task_card_path
from geoseg.infer import load_head, resolve_device
from geoseg.notes import tell
from geoseg.options import PredictError, PredictOptions
from geoseg.postprocess import BuildingPostprocess, postprocess_from_card

__all__ = ["bands_of_models", "building_rules", "card_digests", "forget_heads", "gcn_card_mismatch",
           "has_building_class", "load_head_cached", "load_heads", "model_summary", "preload_heads", "task_card_path"]


def building_rules(card: dict[str, Any], options: PredictOptions, gsd_known: bool = True,
                   landcover_card: dict[str, Any] | None = None) -> BuildingPostprocess:
    """The building card's tuned post-processing, with the user's explicit values on top.

    Without a known GSD (no georeferencing, no ``--gsd``) the land-cover cue is off: both heads then
    run on the raw pixel grid, and a 1.1 m land-cover model on, say, 0.1 m pixels says nothing
    about roofs. It is off too when the land-cover model that runs has no 'building' class (a
    user's own class list, ``--model landcover=...``): there is no P(building) to read."""
    try:
        post = postprocess_from_card(card, options.building_threshold, options.min_area_m2)
    except ValueError as exc:
        raise PredictError(str(exc)) from exc
    cue = gsd_known and (landcover_card is None or has_building_class(landcover_card))
    return post if cue else replace(post, landcover_threshold=0.0)


def bands_of_models(options: PredictOptions) -> tuple[tuple[int, int, int], str] | None:
    """The bands the run's own models were trained to read as red, green, blue (``--model TASK=CARD``
    whose card's ``bands`` are not the default 1,2,3: chips cut with ``geoseg tile --bands``), and the
    card that says so; None when ``--bands`` is given (it wins) or no card names bands.

    One set of bands serves every read of the input (both heads, the valid mask, the nodata cut), so
    two cards naming different bands are a PredictError asking for ``--bands``. A card that cannot
    be read is left to ``load_heads``, which says why. Why: predict read the raster's own bands 1,2,3
    for a model trained on bands 4,3,2."""
    if options.bands is not None:
        return None
    named: dict[tuple[int, int, int], str] = {}
    for task, model_dir in sorted(options.model_dirs.items()):
        if not model_dir:
            continue
        try:
            path = cards.find_card(Path(model_dir), task)
            bands = cards.card_bands(cards.read_card(path))
        except (ValueError, OSError):
            continue
        if bands is not None:
            named.setdefault(bands, path.name)
    if len(named) > 1:
        shown = ", ".join(f"{name} bands {','.join(map(str, b))}" for b, name in named.items())
        raise PredictError(f"the models were trained on different bands ({shown}): every read of the input "
                           f"takes one set; give --bands R,G,B")
    return next(iter(named.items()), None)


def has_building_class(card: dict[str, Any]) -> bool:
    """Whether a land-cover card names a 'building' class (the building rules' land-cover cue)."""
    return any(c.get("name") == "building" for c in card.get("classes", []))


def load_heads(options: PredictOptions, device: str, notes: list[str], gsd_known: bool = True) -> dict[str, tuple]:
    """The heads this run needs: the land-cover head (and its GCN) for the class map, and also for
    the building rules when the building card uses its P(building) (``landcover_threshold``)."""
    def load(task: str) -> tuple:
        model_dir = options.model_dirs.get(task)
        try:
            # the GCN is tiny and fed from numpy: it always runs on the CPU
            return load_head_cached(task, options.profile, "cpu" if task == "gcn" else device,
                                     Path(model_dir) if model_dir else None, notes)
        except (ValueError, OSError) as exc:
            raise PredictError(f"cannot load the {task} model: {exc}") from exc

    heads = {}
    if options.buildings:
        heads["buildings"] = load("buildings")
    card_cue = "buildings" in heads and building_rules(heads["buildings"][1], options).landcover_threshold > 0
    if card_cue and not gsd_known:
        notes.append("the land-cover cue of the building rules is off: the input's GSD is unknown (give --gsd)")
    if options.classmap or (card_cue and gsd_known):
        heads["landcover"] = load("landcover")
        if card_cue and gsd_known and not has_building_class(heads["landcover"][1]):
            notes.append(f"the land-cover cue of the building rules is off: the land-cover model "
                         f"{heads['landcover'][1].get('card_path', '')} has no 'building' class")
            if not options.classmap:  # it was loaded for the cue alone
                del heads["landcover"]
                return heads
        if options.refine == "gcn":
            # decide from the card alone: a GCN that cannot be used is not loaded (nor torch-geometric)
            reason = gcn_card_mismatch(heads["landcover"], options.model_dirs.get("gcn"), options.profile)
            if reason:
                notes.append(f"GCN refinement skipped: {reason}")
            else:
                heads["gcn"] = load("gcn")
    return heads


#: heads already loaded in this process, for the next scene of a batch (several CLI inputs, a
#: Dask worker's tasks): (task, profile, device, card and weight files' identity) -> (head, notes)
_HEADS: dict[tuple, tuple[tuple, list]] = {}
_HEADS_LOCK = threading.Lock()
_HEADS_MAX = 8


def _file_identity(path: Path) -> tuple:
    try:
        st = path.stat()
    except OSError:
        return (str(path), None)
    return (str(path.resolve()), st.st_mtime_ns, st.st_size)


def load_head_cached(task: str, profile: str, device: str, model_dir: Path | None,
                     notes: list[str] | None = None) -> tuple:
    """``load_head``, once per process for the same card and weights (an edited file is reloaded).

    What the first load said (a fast profile falling back) is told again on each use: into the
    run's ``notes``, else as a warning (``geoseg.notes``)."""
    try:
        path = cards.find_card(model_dir, task) if model_dir else cards.shipped_card_path(task, profile)
        weights = cards.read_card(path).get("weights")
    except (ValueError, OSError):
        return load_head(task, profile, device, model_dir, notes)  # its own, clear, error
    key = (task, profile, device, str(model_dir), _file_identity(path),
           _file_identity(path.parent / weights) if weights else None)
    with _HEADS_LOCK:
        cached = _HEADS.get(key)
        if cached is None:
            said: list[str] = []
            head = load_head(task, profile, device, model_dir, said)
            if len(_HEADS) >= _HEADS_MAX:
                _HEADS.pop(next(iter(_HEADS)))
            cached = _HEADS[key] = (head, said)
    (module, card), said = cached
    for message in said:
        tell(notes, message)
    return module, dict(card)


def forget_heads() -> None:
    """Drop the models kept by this process (the next scene loads them again, as a lone one does)."""
    with _HEADS_LOCK:
        _HEADS.clear()


def preload_heads(profile: str = "accurate", device: str = "auto") -> None:
    """Load the shipped heads of ``profile`` now, so the first scene does not wait for them
    (the service's standby worker calls this before its job arrives)."""
    load_heads(PredictOptions(profile=profile, device=device), resolve_device(device), [])


def gcn_card_mismatch(landcover: tuple, model_dir: str | Path | None, profile: str = "accurate") -> str | None:
    """Why the GCN card (``model_dir`` or the profile's shipped one) cannot refine this land-cover model, or None."""
    from geoseg.superpixels import n_node_features, reads_cnn_features

    try:
        path = cards.find_card(Path(model_dir), "gcn") if model_dir else cards.shipped_card_path("gcn", profile)
        gcn_card = cards.read_card(path)
    except (ValueError, OSError) as exc:
        raise PredictError(f"cannot load the gcn model: {exc}") from exc
    try:  # a card's inputs it cannot read; an OSError here is the machine's (no temp folder for torch's imports),
        # no PredictError, which the service takes for the input's fault and fails the job for at once
        reads_features = reads_cnn_features(gcn_card.get("arch_kwargs", {}).get("inputs", "all"))
    except ValueError as exc:
        raise PredictError(f"cannot load the gcn model: {exc}") from exc
    module, card = landcover
    if model_dir is None and not _shipped_weights(card, profile):
        # the shipped GCN learnt corrections to one CNN's features/probabilities: a user's own
        # land-cover model of the same shape passed the checks below and was "refined" by it
        return (f"the shipped GCN was fitted on the shipped {gcn_card.get('cnn', '?')}, not on "
                f"{card.get('card_path', card.get('name'))} (give --model gcn=CARD fitted on it, or --refine none)")
    if not reads_features:
        # fitted on one CNN's probabilities (their calibration, the fusion weight): that CNN only
        if gcn_card.get("cnn") != card.get("name"):
            return f"the GCN was fitted on {gcn_card.get('cnn', '?')}'s probabilities, not {card.get('name')}'s"
        return None
    channels = getattr(module, "feature_channels", None)
    expected = gcn_card.get("arch_kwargs", {}).get("in_features")
    if channels is None or expected is None:
        return None
    if n_node_features(channels, len(card["classes"]) - 1) != expected:
        return (f"the GCN was trained on another model's features ({gcn_card.get('cnn', '?')}), "
                f"not {card.get('name')}'s {channels} channels")
    return None


def _shipped_weights(card: dict[str, Any], profile: str) -> bool:
    """Whether a loaded land-cover card runs the weights shipped for ``profile`` (by content: a
    copy of the shipped card elsewhere is still the shipped model)."""
    shipped = cards.shipped_card_path("landcover", profile)
    if card.get("card_path") and Path(card["card_path"]).resolve() == shipped.resolve():
        return True
    try:
        shipped_card = cards.read_card(shipped) | {"card_path": str(shipped)}
    except (ValueError, OSError):
        return False
    return cards.weights_sha256(card) is not None and cards.weights_sha256(card) == cards.weights_sha256(shipped_card)


#: the card's ``metrics`` entries report.json repeats: its validation and test figures
REPORTED_METRICS = ("val", "test")


def model_summary(card: dict[str, Any]) -> dict[str, Any]:
    """What report.json says of a model: its card's description, and the digests of its card and
    weight files (``card_digests``) when it was loaded from a card."""
    keys = ("name", "architecture", "profile", "weights", "gsd_m", "tile_size", "date", "code_version")
    summary = {k: card.get(k) for k in keys if k in card}
    metrics = card.get("metrics")
    if isinstance(metrics, dict):  # the headline figures; the card (card_sha256) keeps its tuning history
        summary["metrics"] = {k: metrics[k] for k in REPORTED_METRICS if k in metrics}
    if card.get("card_path"):
        summary |= card_digests(Path(card["card_path"]))
    return summary


#: file identity (path, mtime, size) -> SHA-256: each card and weight file hashed once per process
_DIGESTS: dict[tuple, str] = {}


def _sha256(path: Path) -> str | None:
    identity = _file_identity(path)
    if identity[1] is None:
        return None
    digest = _DIGESTS.get(identity)
    if digest is None:
        digest = _DIGESTS[identity] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digest


def card_digests(card_path: Path) -> dict[str, str | None]:
    """``card_sha256`` and ``weights_sha256``: SHA-256 of a card file and of the weights it names.

    Why: a batch skips a folder made from the same input with the same options, and ``--model
    buildings=models/mine.json`` names the same path after ``geoseg train ... --name mine`` has
    retrained it in place (or an upgrade ships other weights): the folders of the old model were
    skipped as already done. Digests, not file times: a reinstall rewrites the files unchanged."""
    weights = cards.read_card(card_path).get("weights")
    return {"card_sha256": _sha256(card_path),
            "weights_sha256": _sha256(card_path.parent / weights) if weights else None}
