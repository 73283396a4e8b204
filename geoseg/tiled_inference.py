"""One head over a scene: tiles with context, batched forward passes, Hann-blended on disk.

Why: every head (land cover, buildings) runs the same way on its own working grid (the input
resampled to the card's ``gsd_m``): tiles on the 32 px grid (``tiles.grid``), each read with
enough context for the model to see its card's window, tiles without a valid pixel skipped,
batches read in a background thread while the model computes, the optional GCN applied per
tile, and only each tile itself blended (``tiles.stitch.BlendingWriter``).
"""
from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from affine import Affine

from geoseg.card import MAX_UPSAMPLING, upsampling_cap
from geoseg.infer import TileModel, refine_with_gcn
from geoseg.options import PredictOptions
from tiles.grid import (
    TILE_MULTIPLE,
    Tile,
    context_margins,
    context_window,
    fit_tiles,
    stretched_size,
    tile_grid,
)
from tiles.rasterpath import RasterPath
from tiles.source import Scene
from tiles.stitch import BlendingWriter

__all__ = ["HeadResult", "MAX_UPSAMPLING", "TilePlan", "gsd_scale", "head_plan", "plan_tiles", "run_head",
           "scene_gsd", "upsampling_cap"]


@dataclass
class HeadResult:
    """A head's blended predictions on its working grid."""

    writer: BlendingWriter
    transform: Affine
    crs: Any
    width: int
    height: int
    gsd: float | None
    warped: bool
    tiles: int
    tiles_skipped: int
    context: tuple[int, int] = (0, 0)
    tile_px: tuple[int, int] = (0, 0)  # tile width, height on the working grid (before fitting to the raster)
    window_from_card: bool = False  # the card's ``window`` set the tiles, not --tile-size (``head_tiling``)
    #: an ensemble run member by member (``geoseg.ensemble_heads``): each member's own result
    members: tuple["HeadResult", ...] = ()


def gsd_scale(input_gsd: float | None, native_gsd: float | None) -> float:
    """What ``--gsd`` does to lengths: metres as the user measures them per metre as the file's
    georeferencing measures them (``input_gsd / native_gsd``; 1 when either is unknown)."""
    return input_gsd / native_gsd if input_gsd and native_gsd else 1.0


def scene_gsd(model_gsd: float | None, native_gsd: float | None, input_gsd: float | None,
              max_upsampling: float = MAX_UPSAMPLING) -> float | None:
    """Target GSD to open the Scene at, in the file's own measure (None: no resampling).

    With ``--gsd`` the user says one pixel is really ``input_gsd`` metres; the Scene
    measures ``native_gsd``, so the model's ``model_gsd`` maps to ``model_gsd * native / input``.
    Upsampling is capped at ``max_upsampling`` (a head's ``upsampling_cap``) so memory and time stay
    bounded.
    """
    if model_gsd is None or native_gsd is None or input_gsd is None:
        return None
    return max(model_gsd / gsd_scale(input_gsd, native_gsd), native_gsd / max_upsampling)


@contextmanager
def _prefetch(items: Iterator, depth: int = 2) -> Iterator[Iterator]:
    """Iterate ``items`` produced by a background thread (GDAL reads release the GIL).

    The thread has stopped when the block ends, however it ends. Why: the thread reads the scene,
    which the caller closes right after; a model error or a SIGTERM ending the loop early left the
    thread reading a closed GDAL dataset, and the process died of a segmentation fault (exit 139:
    a batch's later inputs never ran, its batch.json left ``running``)."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    failure: list[BaseException] = []
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
        except BaseException as exc:  # re-raised in the consumer
            failure.append(exc)
        finally:
            put(done)

    def consume() -> Iterator:
        while True:
            item = q.get()
            if item is done:
                break
            yield item
        if failure:
            raise failure[0]

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    try:
        yield consume()
    finally:
        stop.set()
        thread.join()


@dataclass
class TilePlan:
    """How a head tiles its working grid: the tiles and the context read around each."""

    width: int  # the working grid
    height: int
    tiles: list[Tile]
    side_x: int  # tile width, height on the working grid (before fitting to the raster)
    side_y: int
    my: int  # context rows, columns read each side of a tile
    mx: int

    @property
    def model_input_px(self) -> int:
        """Pixels the model runs on (each tile's read window with its context): what a head's time
        follows, padding of a grid smaller than one tile included."""
        return sum((int(t.read.width) + 2 * self.mx) * (int(t.read.height) + 2 * self.my) for t in self.tiles)


def head_tiling(card: dict[str, Any], options: PredictOptions) -> tuple[int, int, bool]:
    """The tile side and overlap a head runs with, and whether its card fixed them.

    A card's ``window`` (``{"size": 512, "overlap": 64}``) fixes its head's tiles whatever
    ``--tile-size`` / ``--overlap`` say. Why: the shipped U2-Net teacher's prediction at a pixel
    depends on the window that holds it (512 px windows at other offsets disagree as much as
    other sizes do: docs/predict.md), so its building masks changed with ``--tile-size`` (256 vs
    1024 px agreed at 0.92-0.96 IoU on 5 of 8 scenes). On its own fixed grid of windows a head
    gives the same result at every tile size; the other heads keep following the options.
    """
    window = card.get("window")
    if window:
        return int(window["size"]), int(window["overlap"]), True
    return options.tile_size, options.overlap, False


def plan_tiles(width: int, height: int, card: dict[str, Any], options: PredictOptions) -> TilePlan:
    """The tiles of a ``width`` x ``height`` working grid for the head of ``card``."""
    size, overlap, _ = head_tiling(card, options)
    # sides stretched up to 1.25x where that saves an edge tile (less model input, same seams)
    # tiles and model windows start on multiples of TILE_MULTIPLE (tiles.grid: shift variance)
    side_x = stretched_size(width, size, overlap, TILE_MULTIPLE, align=TILE_MULTIPLE)
    side_y = stretched_size(height, size, overlap, TILE_MULTIPLE, align=TILE_MULTIPLE)
    tiles = fit_tiles(tile_grid(width, height, side_x, overlap, size_y=side_y, align=TILE_MULTIPLE),
                      width, height)
    my, mx = context_margins(tiles, width, height, card.get("tile_size"), options.context,
                             min_context=int(card.get("min_context", 0)))
    return TilePlan(width, height, tiles, side_x, side_y, my, mx)


def _open_working_grid(input_path: RasterPath, card: dict[str, Any], options: PredictOptions,
                       input_gsd: float | None, grid: dict) -> Scene:
    model_gsd = float(card["gsd_m"]) if card.get("gsd_m") else None
    return Scene(input_path, bands=grid.get("bands", options.bands),
                 gsd=scene_gsd(model_gsd, grid["native_gsd"], input_gsd, upsampling_cap(card)))


def head_plan(input_path: RasterPath, card: dict[str, Any], options: PredictOptions, input_gsd: float | None,
              grid: dict) -> TilePlan:
    """The tiles the head of ``card`` will run on, before it runs (the pipeline's progress weights)."""
    with _open_working_grid(input_path, card, options, input_gsd, grid) as scene:
        return plan_tiles(scene.width, scene.height, card, options)


def run_head(
    input_path: RasterPath, model: TileModel, options: PredictOptions, input_gsd: float | None, grid: dict,
    work: Path, progress: Callable[[float], None], notes: list[str], gcn: tuple | None = None,
    mask_tiles: bool = True,
) -> HeadResult:
    """Predict one head over the working grid into a BlendingWriter.

    ``mask_tiles``: blend only each tile's valid pixels (buildings); False blends whole tiles
    (land cover, whose class map must give every valid input pixel a class): such a head skips a
    tile only when no input pixel under it holds data, not when its working pixels read invalid,
    which a valid area under about one working pixel across does (``Scene.read_any_valid``)."""
    cap = upsampling_cap(model.card)
    target = scene_gsd(model.gsd_m, grid["native_gsd"], input_gsd, cap)
    if target is not None and model.gsd_m and input_gsd and input_gsd / cap > model.gsd_m * 1.01:
        notes.append(f"input GSD {input_gsd:.3g} m is much coarser than the {model.card.get('name')} model's "
                     f"{model.gsd_m:.3g} m: upsampled {cap:g}x only, expect poor results")
    with _open_working_grid(input_path, model.card, options, input_gsd, grid) as scene:
        if min(scene.width, scene.height) < TILE_MULTIPLE:  # less than one cell of the networks' coarsest map
            notes.append(f"the scene is {scene.width} x {scene.height} px at the {model.card.get('name')} model's "
                         f"working GSD, under the {TILE_MULTIPLE} px its network downsamples by: the model sees "
                         f"no context along that side, so its output there is little more than a guess")
        plan = plan_tiles(scene.width, scene.height, model.card, options)
        tiles, side_x, side_y, my, mx = plan.tiles, plan.side_x, plan.side_y, plan.my, plan.mx
        writer = BlendingWriter(scene.width, scene.height, model.n_classes, transform=scene.transform,
                                crs=scene.crs, tmp_dir=work)

        thin: list[int] = []  # tiles whose valid pixels only the averaging read finds

        def batches() -> Iterator:
            for i in range(0, len(tiles), options.batch_size):
                chunk = tiles[i:i + options.batch_size]
                windows = [context_window(t.read, my, mx, scene.width, scene.height) for t in chunk]
                reads = [scene.read(win, pad="reflect") for win, _ in windows]
                for k, (win, inner) in enumerate(windows):
                    if not mask_tiles and not reads[k][1][inner].any():
                        reads[k] = scene.read_any_valid(win, pad="reflect")
                        if reads[k][1][inner].any():
                            thin.append(i + k)
                yield i + len(chunk), chunk, reads, [inner for _, inner in windows]

        skipped = 0
        progress(0.0)  # the stage has begun (a scene of one batch would say nothing until its end)
        with _prefetch(batches()) as prefetched:
            for done, chunk, reads, inners in prefetched:
                keep = [k for k, (_, valid) in enumerate(reads) if valid[inners[k]].any()]
                skipped += len(chunk) - len(keep)
                if keep:
                    images = np.stack([reads[k][0] for k in keep])
                    if gcn is not None and model.with_features:
                        probs, feats = model.probabilities_and_features(images)
                    else:
                        probs = model.probabilities(images)
                        feats = np.zeros((len(images), 0, *images.shape[2:]), np.float32)
                    for j, k in enumerate(keep):
                        inner = inners[k]
                        p = probs[j][(slice(None), *inner)]
                        valid = reads[k][1][inner]
                        if gcn is not None:
                            p = refine_with_gcn(images[j][(slice(None), *inner)], p, feats[j][(slice(None), *inner)],
                                                valid, gcn[0], gcn[1])
                        # land cover predicts the whole tile (the input's own mask is applied on its grid
                        # later, so resampled edges keep a class); buildings only ever see valid pixels
                        writer.add(chunk[k].read, p, valid if mask_tiles else None)
                progress(done / len(tiles))
        if thin:
            notes.append(f"{len(thin)} of the {model.card.get('name')} model's tiles hold valid pixels only in areas "
                         f"under about one {scene.gsd:.3g} m working pixel across (islands of data in nodata): "
                         f"predicted from those few pixels, their classes are little more than a guess")
        return HeadResult(writer, scene.transform, scene.crs, scene.width, scene.height, scene.gsd,
                          scene.is_warped, len(tiles), skipped, (my, mx), (side_x, side_y),
                          head_tiling(model.card, options)[2])
