"""Build a ``ProbabilityMean`` head (``geoseg.models.ensemble``) from trained models' cards.

Why a step of its own: an ensemble is trained by nobody; it is written from its members (one
fp16 weight file, one card), then its post-processing rules are tuned on validation like any
building head's (``geoseg.training.tune_buildings``), because the average is smoother than
either member and the shipped thresholds of a member do not fit it.

    python -m geoseg.training.ensemble --out DIR --name buildings-ensemble \\
        geoseg/weights/buildings-u2net.json path/to/buildings-lite0.json

The members must read the same input (bands, normalisation, working GSD) and predict the same
classes: their probabilities are averaged class by class. Each member keeps its own tiling
(``window``, ``tile_size``, ``min_context``) in ``arch_kwargs.members[i].tiling``: predict runs
it on its own tiles (``geoseg.ensemble_heads``); the card's top-level tiling is the first member's.
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any

from torch import nn

from geoseg import card as cards
from geoseg.card import MAX_UPSAMPLING, TILING_KEYS, upsampling_cap
from geoseg.models.ensemble import ProbabilityMean
from tiles.splits import file_sha256

#: card keys every member must share (what the pipeline feeds the one head and reads from it)
SHARED_KEYS = ("task", "classes", "bands", "normalisation", "gsd_m")

#: card keys taken from the first member (its tiling too: what a one-module run and the progress plan use)
FIRST_MEMBER_KEYS = ("task", "classes", "bands", "input", "normalisation", "gsd_m", "tile_size", "window",
                     "min_context", "output", "ignore_index")


def _member_record(card: dict[str, Any]) -> dict[str, Any]:
    """What the ensemble card keeps of a member: enough to find its provenance."""
    training = card.get("training", {})
    return {
        "name": card["name"],
        "architecture": card["architecture"],
        "weights_sha256": cards.weights_sha256(card),
        "n_parameters": card.get("n_parameters"),
        "teacher": card.get("teacher"),
        "training": {k: training[k] for k in ("data", "splits", "device", "steps", "minutes", "pretrained", "loss")
                     if k in training},
        "code_version": card.get("code_version"),
        "date": card.get("date"),
        **({"int8_onnx": _member_graph(card)} if card.get("int8_onnx") else {}),
    }


def _member_graph(card: dict[str, Any]) -> dict[str, Any]:
    """A member's int8 graph entry, with the graph file's SHA-256: the graph is copied beside the
    ensemble's card (``main``), and ``geoseg.infer.int8_graph`` refuses a file changed since."""
    graph = Path(card["card_path"]).parent / card["int8_onnx"]["file"]
    return card["int8_onnx"] | {"graph_sha256": file_sha256(graph) if graph.is_file() else None}


def build_ensemble(card_paths: list[Path], name: str) -> tuple[nn.Module, dict[str, Any]]:
    """The averaged head of the models at ``card_paths`` and its card (without post-processing rules)."""
    if len(card_paths) < 2:
        raise ValueError(f"an ensemble needs at least 2 member cards, got {len(card_paths)}")
    loaded = [cards.load_model(path) for path in card_paths]
    first = loaded[0][1]
    for _, card in loaded[1:]:
        for key in SHARED_KEYS:
            if card.get(key) != first.get(key):
                raise ValueError(f"members disagree on {key!r}: {first['name']} has {first.get(key)!r}, "
                                 f"{card['name']} has {card.get(key)!r}")
    for _, card in loaded:
        if card["architecture"] == "ProbabilityMean":
            raise ValueError(f"{card['name']} is an ensemble itself: give its members")
    model = ProbabilityMean([module for module, _ in loaded])
    card = {key: first[key] for key in FIRST_MEMBER_KEYS if key in first}
    card |= {
        "name": name,
        "architecture": "ProbabilityMean",
        # each member keeps its own tiles in predict (geoseg.ensemble_heads: as it was trained and tuned)
        "arch_kwargs": {"members": [{"architecture": c["architecture"], "arch_kwargs": c["arch_kwargs"],
                                     "tiling": {k: c[k] for k in TILING_KEYS if k in c}}
                                    for _, c in loaded]},
        "ensemble": {
            "combine": "log of the mean of the members' softmax probabilities (equal weights, none tuned)",
            "members": [_member_record(c) for _, c in loaded],
        },
        "credits": sorted({credit for _, c in loaded for credit in c.get("credits", [])}),
    }
    # the members share one working grid: upsample no further than the most cautious member's card allows
    cap = min(upsampling_cap(c) for _, c in loaded)
    if cap != MAX_UPSAMPLING:
        card["max_upsampling"] = cap
    return model, card


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("members", type=Path, nargs="+", help="the members' model cards (the first one's tiling is used)")
    ap.add_argument("--out", type=Path, required=True, help="folder for NAME.pt and NAME.json")
    ap.add_argument("--name", required=True, help="the ensemble's model name")
    args = ap.parse_args(argv)
    try:
        model, card = build_ensemble(args.members, args.name)
    except (ValueError, OSError) as exc:
        ap.error(str(exc))
    path = cards.save_model(model, card, args.out)
    for source, record in zip(args.members, card["ensemble"]["members"], strict=True):
        graph = cards.find_card(source).parent / record["int8_onnx"]["file"] if "int8_onnx" in record else None
        if graph is not None and graph.is_file() and graph.parent.resolve() != args.out.resolve():
            shutil.copy(graph, args.out / graph.name)  # beside the ensemble's card, where predict looks
    print(f"{path}: {len(args.members)} members, {sum(p.numel() for p in model.parameters()):,} parameters")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
