"""Progress of one predict run as one 0..1 fraction that moves with the time the run takes.

Why: the CLI's bar and the service's job ``progress`` only give a usable estimate of the time
left when equal shares of them take about equal time. Each stage's share is the work it has:
the pixels it handles (a head's model input, the input grid for the class map, the building grid
for vectorisation and writing) times a cost per megapixel measured per device and profile
(``STAGE_COSTS``). Stages that run at once (the class map beside the building model) add up:
the fraction is the cost-weighted sum of every stage's own fraction, so it never goes back and
reaches 1 only when every stage is done.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["MEMBER_COSTS", "STAGE_COSTS", "StageCosts", "StageProgress", "StageWork", "member_shares", "run_seconds",
           "stage_weights", "tracing_share"]

Progress = Callable[[float, str], None]


@dataclass(frozen=True)
class StageCosts:
    """Seconds per megapixel of each stage's work (the ratios matter, not the machine's speed)."""

    read: float  # per input Mpx, each head (reading and resampling the input to its working grid)
    landcover: float  # per Mpx of land-cover model input, CNN alone
    gcn: float  # added per Mpx of land-cover model input when the GCN refines it (superpixels, graph)
    buildings: float  # per Mpx of building model input
    buildings_int8: float  # the same with --runtime int8 (the accurate card's int8 graph)
    classmap: float  # per input Mpx: resampling, argmax, COG
    vectorize: float  # per Mpx of the building grid (tracing), plus ``cut`` per input Mpx
    regularize: float  # added per Mpx of the building grid with --regularize (~7 ms a building)
    write: float  # per Mpx of the building grid: GeoPackage and GeoJSON
    #: per input Mpx: the cut at the input's invalid pixels (``geoseg.valid_area``), which reads GDAL's
    #: mask, not the bands, of the blocks holding a building, and nothing of an all-valid integer raster
    #: (``StageWork.nodata_cut``): the vectorise stage of a 0.075 m scene took 0.0-0.14 s more than its
    #: ground's at 0.3 m on a quiet box (nairobi_1, zanzibar_2: 15-16 Mpx more; up to 0.4 s loaded),
    #: where a band read (``read``, as counted before) gave 0.5 s
    cut: float = 0.005
    #: the share of the shorter of the class map and the building branch (model, vectorising) that
    #: running them side by side (a thread) hides from a run's time (``run_seconds``). Where one is much
    #: the longer the other runs within it: the fast profile's 0.075 m scenes took the land cover plus
    #: the class map (nairobi_z21_1: 0.48 + 2.05 of 2.59 s, 0.54 + 2.26 of 2.88 s), the building branch
    #: inside; where they are alike they share the 2 cores (fast at 0.15 m: the building model 1.19 s
    #: against 0.82 s at 0.3 m), and U2-Net's two threads leave the class map less room (accurate
    #: nairobi_z21_1: the building head 2.2, 8.1 and 2.2 s longer than at 0.3 m beside class maps of
    #: 4.5, 9.4 and 9.9 s). 0.75 for both CPU profiles: over 8 batches of session 24 the median
    #: actual/expected of 0.075 m scenes came within 0.85-1.16x of the 0.3 m ones' on a quiet box
    #: (0.63-0.77x where other work loaded it, which slows the models more), 0.5 and 1.0 moving that by
    #: about 0.1 (docs/predict.md, the batch bar's time left)
    beside: float = 0.0


#: CPU: 2 threads, ONNX Runtime, models loaded, on an idle box: the stage timings of
#: docs/predict.md's speed table (zanzibar_z19_1: building head, land cover + GCN, class map,
#: vectorise) over the pixels each stage handles; reading, the GCN's part, --regularize, the nodata cut
#: and writing from report.json's timings_s on zanzibar_z19_1, zanzibar_z20_1 (the same ground at 0.15 m)
#: and nairobi_z21_1 (0.075 m), both profiles, with and without the GCN (session 15; the box under
#: other work moved the absolute figures up to 2x, so those were scaled to the idle ones).
#: CUDA: the H200 run of docs/predict.md (same scene, torch, bf16) for the model stages and the
#: class map and vectorising; the other CPU-side stages as on the CPU.
#: Since session 25 the accurate building head runs the U2-Net (3.3, int8 1.7) and a LiteUNet (as the fast
#: student, 0.28; on CUDA 0.056 + 0.03) each on its own tiles: their sum (+5 to +25 % end to end on the CPU in
#: bench/predict.py --what speed; not timed on a GPU). Since session 26 the fast building head is a LiteUNet too:
#: its stage took 2.07 s against the FastSegNet's 2.03 s on zanzibar_z19_1 in one run, so its cost stayed.
#: Session 31 (the building costs were stale: a QA pass found the time left half the truth midway through an
#: 8192 px scene, fast profile, and 2.8x under on 12288 px), zanzibar_z19_1 on the idle box, 2 runs each: the
#: accurate building stage 15.35-15.82 s (int8 12.36-12.91 s) over its 2.51 Mpx of U2-Net tiles, the fast
#: one 2.40-2.55 s over its 3.78 Mpx; an 8192 px square scene's fast stage 84.6 s over 115.6 Mpx (0.73, the
#: class map running beside it).
STAGE_COSTS: dict[tuple[str, str], StageCosts] = {
    ("cpu", "accurate"): StageCosts(read=0.03, landcover=4.0, gcn=2.0, buildings=6.2, buildings_int8=5.0,
                                    classmap=0.16, vectorize=0.09, regularize=0.15, write=0.015, beside=0.75),
    ("cpu", "fast"): StageCosts(read=0.03, landcover=0.5, gcn=2.0, buildings=0.65, buildings_int8=0.65,
                                classmap=0.16, vectorize=0.09, regularize=0.15, write=0.015, beside=0.75),
    ("cuda", "accurate"): StageCosts(read=0.03, landcover=1.5, gcn=2.0, buildings=0.086, buildings_int8=0.086,
                                     classmap=0.16, vectorize=0.16, regularize=0.15, write=0.015),
    ("cuda", "fast"): StageCosts(read=0.03, landcover=1.5, gcn=2.0, buildings=0.03, buildings_int8=0.03,
                                 classmap=0.13, vectorize=0.13, regularize=0.15, write=0.015),
}


#: an ensemble member's time on one scene by its card's architecture (``-int8``: its int8 graph), per device:
#: its share of the building stage's progress. The members had equal shares, so the accurate profile's
#: U2-Net filled half the stage's bar in 86 % of its time (the time left at 31 %: 214 s said, 134 s true).
#: Seconds on zanzibar_z19_1, each member on its own tiles (2.51 Mpx of the U2-Net's, 3.78 Mpx of the
#: LiteUNet's). CPU: the idle box, each member timed alone in the run, 2 runs (session 31): U2-Net 13.1-13.7 s
#: (int8 10.0-10.4 s), LiteUNet 2.15-2.5 s. CUDA: the H200's 0.056 and 0.03 s/Mpx above, times those Mpx.
MEMBER_COSTS: dict[tuple[str, str], float] = {
    ("cpu", "U2Net"): 13.4, ("cpu", "U2Net-int8"): 10.2, ("cpu", "LiteUNet"): 2.3,
    ("cuda", "U2Net"): 0.056 * 2.51, ("cuda", "LiteUNet"): 0.03 * 3.78,
}


def member_shares(members: list[str], device: str) -> list[float]:
    """Each ensemble member's share of the building stage (``members``: their ``MEMBER_COSTS`` names), by
    its cost on ``device``; equal shares when one of them has no measured cost."""
    if not members:
        return []
    costs = [MEMBER_COSTS.get((device, name)) for name in members]
    if any(c is None for c in costs):
        return [1.0 / len(members)] * len(members)
    total = sum(costs)
    return [c / total for c in costs]


@dataclass(frozen=True)
class StageWork:
    """The pixels each stage of one run handles (None: the stage does not run)."""

    input_px: int
    landcover_px: int | None = None  # land-cover model input
    gcn: bool = False
    classmap: bool = False
    buildings_px: int | None = None  # building model input
    building_grid_px: int | None = None
    int8: bool = False
    regularize: bool = False
    #: the input may have invalid pixels (a nodata value, a mask or alpha band, floats), which the
    #: polygons are cut at, reading its mask again; an all-valid integer raster is not read for it
    nodata_cut: bool = True


def _costs(device: str, profile: str) -> StageCosts:
    return STAGE_COSTS.get(("cuda" if device == "cuda" else "cpu", profile), STAGE_COSTS[("cpu", "accurate")])


def stage_weights(work: StageWork, device: str, profile: str) -> dict[str, float]:
    """Expected seconds of each stage that runs (in the order they start), and of writing."""
    costs = _costs(device, profile)
    mpx = 1e-6
    read = costs.read * work.input_px * mpx
    cut = costs.cut * work.input_px * mpx if work.nodata_cut else 0.0
    weights: dict[str, float] = {}
    if work.landcover_px is not None:
        weights["landcover"] = read + (costs.landcover + (costs.gcn if work.gcn else 0.0)) * work.landcover_px * mpx
        if work.classmap:
            weights["classmap"] = costs.classmap * work.input_px * mpx
    write = 0.0
    if work.buildings_px is not None:
        grid = (work.building_grid_px or 0) * mpx
        weights["buildings"] = read + (costs.buildings_int8 if work.int8 else costs.buildings) * work.buildings_px * mpx
        weights["vectorize"] = (costs.vectorize + (costs.regularize if work.regularize else 0.0)) * grid + cut
        write = costs.write * grid
    # report.json and the renames: a sliver, so that the bar's end is the outputs in place
    weights["write"] = write + 0.01 * sum(weights.values())
    return weights


def run_seconds(work: StageWork, device: str, profile: str, side_by_side: bool = True) -> float:
    """Expected seconds of the stages of one run together: ``stage_weights``' sum, less the part of the
    class map that runs hidden beside the building branch (``StageCosts.beside``; ``side_by_side``:
    the class map is written on a thread beside the building model, ``geoseg.pipeline.OVERLAP_CLASSMAP``).

    Why: the sum counted a 0.075 m scene's class map, written at the input's resolution, on top of the
    building model it runs beside, and a batch's time left weighed such scenes too heavy against their
    ground at 0.3 m (fast: 3.85-4.13x the work expected, 1.4-3.6x measured; accurate 1.78 against
    1.1-1.8; now 3.3-3.5 and 1.33-1.35)."""
    weights = stage_weights(work, device, profile)
    total = sum(weights.values())
    if side_by_side and "classmap" in weights and "buildings" in weights:
        branch = weights["buildings"] + weights["vectorize"]
        total -= _costs(device, profile).beside * min(weights["classmap"], branch)
    return total


def tracing_share(work: StageWork, device: str, profile: str) -> float:
    """The share of the vectorize stage that tracing the outlines takes (the rest: squaring them
    with --regularize, then the cut at the input's nodata)."""
    costs = _costs(device, profile)
    grid = (work.building_grid_px or 0) * 1e-6
    cut = costs.cut * work.input_px * 1e-6 if work.nodata_cut else 0.0
    total = (costs.vectorize + (costs.regularize if work.regularize else 0.0)) * grid + cut
    return costs.vectorize * grid / total if total > 0 else 1.0


class StageProgress:
    """Maps per-stage fractions onto one 0..1 progress callback: the weighted sum of every stage's
    own fraction (each kept from going back). The stage named is the latest in ``weights``' order
    that has begun and is not done: the class map, written in the background, does not take the
    name from the building model in front of it.
    """

    def __init__(self, progress: Progress | None, weights: dict[str, float]) -> None:
        self.progress = progress
        self.weights = {name: max(w, 0.0) for name, w in weights.items()}
        self.total = sum(self.weights.values()) or 1.0
        self.fractions: dict[str, float] = {}
        self.lock = threading.Lock()

    def __call__(self, stage: str, fraction: float) -> None:
        if self.progress is None or stage not in self.weights:
            return
        with self.lock:
            fraction = min(max(fraction, 0.0), 1.0)
            self.fractions[stage] = max(self.fractions.get(stage, 0.0), fraction)
            self._report(stage)

    def finish(self) -> None:
        """Every stage done: the run's outputs are in place (1.0 exactly)."""
        if self.progress is None:
            return
        with self.lock:
            self.fractions.update((name, 1.0) for name in self.weights)
            self._report(next(reversed(self.weights), ""))

    def _report(self, stage: str) -> None:
        if all(self.fractions.get(name) == 1.0 for name in self.weights):
            value = 1.0  # exactly, whatever the rounding of the sum
        else:
            value = min(sum(self.weights[n] * f for n, f in self.fractions.items()) / self.total, 1.0)
        running = [name for name in self.weights if self.fractions.get(name, 1.0) < 1.0]
        self.progress(value, running[-1] if running else stage)
