"""Run a ``ProbabilityMean`` head member by member, each on its own tiles, and average the
stitched probabilities.

Why not one network on one set of tiles: the members were trained and validated with their
own tiling (the U2-Net on fixed 512 px windows without extra context, a LiteUNet student on
256 px tiles with 64 px of context, ``geoseg.training.distill.STUDENT_MIN_CONTEXT``). Run as
one module on the U2-Net's windows grown by the student's context, the ensemble cost +74 %
end to end (the U2-Net read 640 px instead of 512) and scored lower on validation (Nairobi-2
objective 0.3277 against 0.3421 member by member; docs/models.md, "After session 22").
A card says how each member tiles in ``arch_kwargs.members[i].tiling``; a card without it
runs as one module (``geoseg.models.ensemble``), as any other head.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.windows import Window
from torch import nn

from geoseg.card import TILING_KEYS
from geoseg.infer import TileModel
from geoseg.notes import tell
from geoseg.options import PredictOptions
from geoseg.progress import member_shares
from geoseg.tiled_inference import HeadResult, RasterPath, run_head

#: keys of the ensemble's card a member's must not inherit: an int8 graph quantised from the whole
#: ensemble (``geoseg.training.quantize``) is the one-module ensemble, not the member
WHOLE_HEAD_KEYS = ("int8_onnx",)


#: a member card's name (``member_cards``): the ensemble's name + ".member<i>"
MEMBER_NAME = re.compile(r"(\S+)\.member(\d+)\b")


def members_notes(said: list[str], architectures: list[str]) -> list[str]:
    """The notes of an ensemble's members as its user should read them: a note every member gave alike
    once, of the ensemble ("b-ens", not "b-ens.member0": no card holds that name); a note of one member
    only (a tile count of its own tiling), of that member by its architecture ("b-ens (LiteUNet member)")."""
    plain = [MEMBER_NAME.sub(r"\1", note) for note in said]
    out: list[str] = []
    for note, alike in zip(said, plain, strict=True):
        text = alike if plain.count(alike) > 1 else MEMBER_NAME.sub(
            lambda m: f"{m[1]} ({architectures[int(m[2])]} member)", note)
        if text not in out:
            out.append(text)
    return out


def member_cards(card: dict[str, Any]) -> list[dict[str, Any]] | None:
    """One card per member of an ensemble card whose members carry their own ``tiling``, else None.

    Each is the ensemble's card with the member's architecture and tiling (and a name of its own,
    so that the members' exported ONNX graphs do not share a cache entry)."""
    members = card.get("arch_kwargs", {}).get("members") if card.get("architecture") == "ProbabilityMean" else None
    if not members or not all("tiling" in m for m in members):
        return None
    records = card.get("ensemble", {}).get("members", [])
    out = []
    for i, member in enumerate(members):
        own = {k: v for k, v in card.items() if k not in TILING_KEYS + WHOLE_HEAD_KEYS}
        own |= {"name": f"{card['name']}.member{i}", "architecture": member["architecture"],
                "arch_kwargs": member.get("arch_kwargs", {})} | dict(member["tiling"])  # TILING_KEYS only (read_card)
        record = records[i] if i < len(records) else {}
        if record.get("int8_onnx"):  # the member's own quantised graph, checked against the weights it came from
            own |= {"int8_onnx": record["int8_onnx"], "int8_source_sha256": record.get("weights_sha256")}
        out.append(own)
    return out


def has_int8_graph(card: dict[str, Any]) -> bool:
    """Whether ``--runtime int8`` has a graph to run for this head (its own, or a member's)."""
    return bool(card.get("int8_onnx")) or any(
        m.get("int8_onnx") for m in card.get("ensemble", {}).get("members", []))


def head_models(module: nn.Module, card: dict[str, Any], device: str, runtime: str,
                notes: list[str] | None = None) -> list[TileModel]:
    """The TileModels a loaded head runs as: one per member of a member-tiled ensemble, else one."""
    cards = member_cards(card)
    if cards is None:
        return [TileModel(module, card, device=device, runtime=runtime, notes=notes)]
    return [TileModel(member, own, device=device, runtime=runtime, notes=notes)
            for member, own in zip(module.members, cards, strict=True)]


class MeanWriter:
    """The members' blending writers read as one: per pixel, the mean probability of the members
    that covered it (a tile skipped for nodata by one member leaves the others' say)."""

    def __init__(self, writers: list[Any]) -> None:
        self.writers = writers

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        total, count = None, None
        for writer in self.writers:
            probs, covered = writer.read(window)
            weighted = probs * covered
            total = weighted if total is None else total + weighted
            count = covered.astype(np.float32) if count is None else count + covered
        covered = count > 0
        return (total / np.where(covered, count, 1.0)).astype(np.float32, copy=False), covered

    def close(self) -> None:
        for writer in self.writers:
            writer.close()


def run_mean_head(
    input_path: RasterPath, models: list[TileModel], options: PredictOptions, input_gsd: float | None, grid: dict,
    work: Path, progress: Callable[[float], None], notes: list[str],
) -> HeadResult:
    """``run_head`` for each model in turn (progress shared), blended results averaged: one
    ``HeadResult`` on the first model's working grid (the members share the card's GSD)."""
    if len(models) == 1:
        return run_head(input_path, models[0], options, input_gsd, grid, work, progress, notes)
    results: list[HeadResult] = []
    said: list[str] = []  # the members' notes, told as ``members_notes`` words them
    shares = member_shares([model.card["architecture"] + ("-int8" if model.runtime == "int8" else "")
                            for model in models], models[0].device)
    try:
        for i, model in enumerate(models):
            start, share = sum(shares[:i]), shares[i]
            results.append(run_head(input_path, model, options, input_gsd, grid, work,
                                    lambda f, start=start, share=share: progress(start + f * share), said))
            if (results[-1].width, results[-1].height) != (results[0].width, results[0].height):
                raise ValueError("ensemble members ran on different working grids: their cards' GSDs differ")
    except BaseException:
        for result in results:
            result.writer.close()
        raise
    finally:
        for note in members_notes(said, [model.card["architecture"] for model in models]):
            tell(notes, note)
    first = results[0]
    return replace(first, writer=MeanWriter([r.writer for r in results]), members=tuple(results),
                   tiles=sum(r.tiles for r in results), tiles_skipped=sum(r.tiles_skipped for r in results))
