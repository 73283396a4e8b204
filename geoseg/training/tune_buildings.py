"""Tune the building post-processing (``geoseg.postprocess``) on the VALIDATION blocks only.

Why: the U2-Net is trained with a fixed decision rule (building = P(interior) + P(outline)
>= 0.5, min area 3 m²); the rule that gives the best polygons is an empirical question.
The model is run ONCE per validation scene (Nairobi block 2 and, since session 9, Zanzibar
block 2, all three zooms: the ``val`` split of ``tiles.splits``) and its blended
probabilities on the working grid are cached; each candidate setting is then scored through
the very code ``geoseg predict`` and ``geoseg eval`` run (``geoseg.footprints``' vectorisation
and writers, ``geoseg.evaluate.evaluate_buildings``), so a chosen setting means the same thing
in the product. Test areas (Kampala) are refused: they are scored once, afterwards, with
``geoseg predict`` + ``geoseg eval``.

    python -m geoseg.training.tune_buildings cache --out /tmp/tune-cache
    python -m geoseg.training.tune_buildings sweep --cache /tmp/tune-cache --json /tmp/tune.json

A team with its own building model tunes on its own validation scenes instead:
``cache --card CARD --scene mine/val/a.tif --scene mine/val/b.tif --labels mine/val/outlines.gpkg``
(each scene's ``labels.geojson`` when ``--labels`` is left out, the shared data's layout).

The search is coordinate-wise (the land-cover cue's threshold, threshold x morphology, min
area x seed ratio, seed erosion, distance split, the threshold again, the cue again; the cache
holds the land-cover head's P(building) on each scene's building grid for the cue); the
objective (``--objective``, default ``miou_f1``) is the mean over scenes of (binary pixel
mIoU + polygon F1) / 2 — see ``OBJECTIVES`` for why not pixel IoU.
"""
from __future__ import annotations

import argparse
import functools
import json
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, NoReturn

import geopandas as gpd
import numpy as np
import rasterio
import rasterio.errors
from affine import Affine
from rasterio.windows import Window

from geoseg.evaluate import EvaluationError, evaluate_buildings
from geoseg.paths import data_root
from geoseg.postprocess import BuildingPostprocess
from tiles.splits import (
    HELD_OUT_FOLDERS,
    block_label,
    buildings_split,
    scene_area,
    scene_split,
)

# 0.02/0.03 and 30/40 m² added after run 2 chose the ends of the old ranges (0.05, 20 m²);
# 0.01, a 3 px opening and 60 m² after session 3 chose the ends again (0.02, 2 px, 40 m²)
THRESHOLDS = (0.01, 0.02, 0.03) + tuple(round(t, 2) for t in np.arange(0.05, 0.801, 0.05))
MORPHOLOGY = ((0, 0), (1, 0), (0, 1), (1, 1), (2, 0), (3, 0))  # (opening_px, closing_px)
MIN_AREAS = (0.0, 1.0, 2.0, 3.0, 5.0, 8.0, 12.0, 20.0, 30.0, 40.0, 60.0)
SEED_RATIOS = (0.5, 0.75, 1.0, 1.5, 2.0, 3.0)
SEED_EROSIONS = (0, 1, 2, 3)  # px: splits rows of touching houses whose interiors touch
SPLIT_HEIGHTS = (0.0, 0.5, 1.0, 2.0, 3.0)  # px: distance-transform split (added when run 3 under-segmented)
#: land-cover P(building) joining as a seedless cue (0: off); added in session 6 when the land-cover
#: head's building class turned out to find the grey and concrete roofs the U2-Net misses
LANDCOVER_THRESHOLDS = (0.0, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95)


class TuningError(ValueError):
    """A tuning run that would break the split discipline or lacks its inputs."""


@dataclass
class CachedScene:
    """A scene's blended building probabilities on the model's working grid."""

    name: str
    input_path: Path
    labels_path: Path
    probs: np.ndarray  # float32 (3, h, w)
    covered: np.ndarray  # bool (h, w)
    transform: Affine
    crs: Any
    gsd: float | None  # working pixel, the Scene's measure
    native_gsd: float | None
    #: float32 (h, w): the land-cover head's P(building) on this grid, as the pipeline resamples it
    landcover: np.ndarray | None = None

    def landcover_rows(self, start: int, stop: int) -> np.ndarray:
        """What ``geoseg.footprints.landcover_cue`` returns, from the cache."""
        if self.landcover is None:
            raise TuningError(f"{self.name}: no land-cover cue cached (re-run the 'cache' step)")
        return self.landcover[start:stop]

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """``BlendingWriter.read`` over the cached arrays (what ``geoseg.footprints.vectorise_buildings`` calls)."""
        rows = slice(int(window.row_off), int(window.row_off) + int(window.height))
        cols = slice(int(window.col_off), int(window.col_off) + int(window.width))
        return self.probs[:, rows, cols], self.covered[rows, cols]


def validation_scenes(root: Path | None = None) -> list[Path]:
    """The building scenes of the validation split (tiles.splits), sorted."""
    root = Path(root) if root is not None else data_root() / "buildings"
    scenes = sorted(p for p in root.glob("*/*.tif") if buildings_split(*scene_area(p)) == "val")
    if not scenes:
        raise TuningError(f"no validation scene under {root} (to tune on your own: --scene PATH --labels PATH)")
    return scenes


def _refuse_test(path: Path) -> None:
    """Refuse a test scene: the shared data's by name (``kampala_*``) or by its bytes (a renamed copy),
    and a team's own held-out one kept in a ``test/`` folder (the README's ``mine/test/`` layout).
    Why: a rule chosen on the scenes that are scored afterwards would inflate their figures."""
    if buildings_split(*scene_area(path)) == "test" or scene_split(path, landcover=False) == "test":
        raise TuningError(f"{path.name} is a TEST scene: tuning on it is not allowed")
    if HELD_OUT_FOLDERS.get(path.parent.name.lower()) == "test":
        raise TuningError(f"{path.name} is kept in a folder named {path.parent.name} (held-out test scenes): "
                          f"tuning on it is not allowed")


def labels_beside(path: Path) -> Path:
    """Where a scene's building outlines lie in the shared data's layout: ``labels.geojson`` beside it."""
    return path.parent / "labels.geojson"


def check_scene(path: Path, labels_path: Path, work: Path | None = None) -> None:
    """Refuse, before the model runs (minutes a scene), a scene that is missing, a test scene or
    labels ``geoseg eval`` cannot score it against: an empty prediction of the scene is scored by
    ``evaluate_buildings``, the very code each setting is scored by afterwards, so missing labels,
    labels without polygons and labels off the scene fail here with eval's own reason."""
    from geoseg.footprints import write_buildings

    if not path.is_file():
        raise TuningError(f"no such scene: {path}" if not path.exists() else f"{path} is a folder: give a scene file")
    _refuse_test(path)
    try:
        with rasterio.open(path) as src:
            crs = src.crs
    except rasterio.errors.RasterioError as exc:
        raise TuningError(f"not a raster GDAL reads: {exc}") from None
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        out = Path(tmp)
        write_buildings(gpd.GeoDataFrame(geometry=[], crs=crs), out, georeferenced=False)
        (out / "report.json").write_text(json.dumps({"input": str(path)}))
        try:
            evaluate_buildings(out, labels_path)
        except EvaluationError as exc:
            raise TuningError(f"{path.name}: {exc}") from None


def predict_probabilities(input_path: Path, card_path: Path | None = None, work: Path | None = None,
                          profile: str = "accurate", labels_path: Path | None = None) -> CachedScene:
    """Run the building head (and the land-cover head, for its cue) over one scene exactly as
    ``predict_scene`` does; keep the probabilities. ``labels_path``: the outlines its settings are
    scored against (default: ``labels_beside`` the scene)."""
    from geoseg.ensemble_heads import head_models, run_mean_head
    from geoseg.footprints import landcover_cue
    from geoseg.heads import load_heads
    from geoseg.infer import TileModel, load_head
    from geoseg.options import PredictOptions
    from geoseg.tiled_inference import run_head
    from tiles.source import Scene

    input_path = Path(input_path)
    _refuse_test(input_path)
    options = PredictOptions(device="cpu", batch_size=1, profile=profile)
    with Scene(input_path) as scene:
        grid = dict(crs=scene.crs, transform=scene.src_transform, width=scene.src_width,
                    height=scene.src_height, native_gsd=scene.native_gsd)
    models = head_models(*load_head("buildings", profile, "cpu", card_path), device="cpu", runtime=options.runtime)
    # the land-cover head (with its GCN) exactly as the pipeline runs it for the class map
    heads = load_heads(replace(options, buildings=False), "cpu", [])
    landcover = TileModel(*heads["landcover"], device="cpu", runtime=options.runtime,
                          with_features="gcn" in heads and heads["gcn"][0].reads_cnn_features)
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        lc = run_head(input_path, landcover, options, grid["native_gsd"], grid, Path(tmp),
                      lambda f: None, [], gcn=heads.get("gcn"), mask_tiles=False)
        result = run_mean_head(input_path, models, options, grid["native_gsd"], grid, Path(tmp), lambda f: None, [])
        probs, covered = result.writer.read(Window(0, 0, result.width, result.height))
        probs = np.array(probs, dtype=np.float32)
        covered = np.array(covered)
        cue = np.array(landcover_cue(lc, result, landcover.card)(0, result.height), dtype=np.float32)
        result.writer.close()
        lc.writer.close()
    return CachedScene(input_path.stem, input_path, Path(labels_path) if labels_path else labels_beside(input_path),
                       probs, covered, result.transform, result.crs, result.gsd, grid["native_gsd"], cue)


def save_cache(scene: CachedScene, folder: Path) -> None:
    """``<name>.npz`` (probabilities as uint8 x 255 would bias thresholds: kept float16) + ``<name>.json``."""
    folder.mkdir(parents=True, exist_ok=True)
    extra = {} if scene.landcover is None else {"landcover": scene.landcover.astype(np.float16)}
    np.savez(folder / f"{scene.name}.npz", probs=scene.probs.astype(np.float16), covered=scene.covered, **extra)
    meta = {"input": str(scene.input_path), "labels": str(scene.labels_path), "transform": list(scene.transform)[:6],
            "crs": scene.crs.to_wkt() if scene.crs is not None else None, "gsd": scene.gsd,
            "native_gsd": scene.native_gsd}
    (folder / f"{scene.name}.json").write_text(json.dumps(meta, indent=2) + "\n")


def load_cache(folder: Path) -> list[CachedScene]:
    """Cached scenes of ``folder`` (refuses test scenes)."""
    scenes = []
    for meta_path in sorted(Path(folder).glob("*.json")):
        meta = json.loads(meta_path.read_text())
        input_path = Path(meta["input"])
        _refuse_test(input_path)
        arrays = np.load(meta_path.with_suffix(".npz"))
        crs = rasterio.crs.CRS.from_wkt(meta["crs"]) if meta["crs"] else None
        scenes.append(CachedScene(meta_path.stem, input_path, Path(meta["labels"]),
                                  arrays["probs"].astype(np.float32), arrays["covered"].astype(bool),
                                  Affine(*meta["transform"]), crs, meta["gsd"], meta["native_gsd"],
                                  arrays["landcover"].astype(np.float32) if "landcover" in arrays else None))
    if not scenes:
        raise TuningError(f"no cached scene in {folder}: run the 'cache' step first")
    return scenes


@functools.lru_cache(maxsize=64)
def _source_grid(input_path: Path) -> dict[str, Any]:
    """The input raster's own grid (the pipeline cuts polygons at its outline and nodata)."""
    with rasterio.open(input_path) as src:
        return {"transform": src.transform, "width": src.width, "height": src.height, "path": input_path}


def score(scene: CachedScene, post: BuildingPostprocess, work: Path) -> dict[str, Any]:
    """Scores of one setting on one cached scene, through the pipeline's vectoriser and ``geoseg eval``."""
    from geoseg.footprints import vectorise_buildings, write_buildings
    from geoseg.options import PredictOptions
    from geoseg.tiled_inference import HeadResult

    height, width = scene.covered.shape
    head = HeadResult(writer=scene, transform=scene.transform, crs=scene.crs, width=width, height=height,
                      gsd=scene.gsd, warped=False, tiles=0, tiles_skipped=0)
    grid = {"native_gsd": scene.native_gsd, **_source_grid(scene.input_path)}
    options = PredictOptions(classmap=False)
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        out = Path(tmp)
        frame = vectorise_buildings(head, options, scene.native_gsd, grid, lambda f: None, post,
                                    scene.landcover_rows)
        frame["source"] = scene.input_path.name
        write_buildings(frame, out, georeferenced=scene.crs is not None)
        (out / "report.json").write_text(json.dumps({"input": str(scene.input_path)}))
        scores = evaluate_buildings(out, scene.labels_path)
    pixel = scores["pixel"]
    tn = scores["valid_pixels"] - pixel["tp"] - pixel["fp"] - pixel["fn"]
    background_iou = tn / (tn + pixel["fp"] + pixel["fn"]) if tn + pixel["fp"] + pixel["fn"] else 1.0
    return {"scene": scene.name, "pixel_iou": pixel["iou"], "binary_miou": (pixel["iou"] + background_iou) / 2,
            "polygon_f1": scores["polygon"]["f1"], "n_predicted": scores["n_predicted"], "n_truth": scores["n_truth"]}


#: selection objectives, per scene (averaged over scenes). ``miou_f1`` is the default: on the
#: validation block (40 % building pixels, a look the model underrates) calling everything
#: building wins pixel IoU (docs/models.md, training run 1), so the background must count too
OBJECTIVES: dict[str, Callable[[dict[str, Any]], float]] = {
    "miou_f1": lambda r: (r["binary_miou"] + r["polygon_f1"]) / 2,
    "iou_f1": lambda r: (r["pixel_iou"] + r["polygon_f1"]) / 2,
}
#: what each objective computes per scene, for ``--help`` and the model card
OBJECTIVE_TEXT = {"miou_f1": "(binary pixel mIoU + polygon F1 at IoU>=0.5) / 2",
                  "iou_f1": "(building pixel IoU + polygon F1 at IoU>=0.5) / 2"}


def objective(rows: list[dict[str, Any]], name: str = "miou_f1") -> float:
    """Selection objective ``name`` averaged over scenes."""
    return float(np.mean([OBJECTIVES[name](r) for r in rows]))


def evaluate_setting(scenes: list[CachedScene], post: BuildingPostprocess, work: Path,
                     objective_name: str = "miou_f1") -> dict[str, Any]:
    rows = [score(s, post, work) for s in scenes]
    return {"settings": post.as_dict(), "objective": objective(rows, objective_name),
            "pixel_iou": float(np.mean([r["pixel_iou"] for r in rows])),
            "binary_miou": float(np.mean([r["binary_miou"] for r in rows])),
            "polygon_f1": float(np.mean([r["polygon_f1"] for r in rows])), "scenes": rows}


def by_block(result: dict[str, Any], objective_name: str = "miou_f1") -> dict[str, dict[str, float]]:
    """A scored setting's means per validation block (``nairobi-2``, ``zanzibar-2``): a model that
    trained on one block can only be judged on the other (docs/models.md). A team's own scene
    (``cache --scene``), named like no block, is its own group."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in result["scenes"]:
        block = block_label(*scene_area(Path(f"{row['scene']}.tif"))) or row["scene"]
        groups.setdefault(block, []).append(row)
    return {name: {"objective": round(objective(rows, objective_name), 4),
                   **{k: round(float(np.mean([r[k] for r in rows])), 4) for k in ("pixel_iou", "binary_miou", "polygon_f1")}}
            for name, rows in sorted(groups.items())}


def write_rules(card_path: Path, chosen: dict[str, Any], default: dict[str, Any], tried: int, objective_name: str,
                commands: list[str]) -> None:
    """Put the chosen setting into the card's ``postprocess`` and how it was chosen into its metrics."""
    from geoseg.card import write_card

    def summary(r: dict[str, Any]) -> dict[str, Any]:
        return {"objective": round(r["objective"], 4), "pixel_iou": round(r["pixel_iou"], 4),
                "binary_miou": round(r["binary_miou"], 4), "polygon_f1": round(r["polygon_f1"], 4),
                "per_block": by_block(r, objective_name),
                "per_scene": {x["scene"]: {"pixel_iou": round(x["pixel_iou"], 4), "polygon_f1": round(x["polygon_f1"], 4)}
                              for x in r["scenes"]}}

    card_path = Path(card_path)
    card = json.loads(card_path.read_text())
    card["postprocess"] = dict(chosen["settings"])
    card.setdefault("metrics", {})["postprocess"] = {
        "selected_on": "validation only: " + ", ".join(x["scene"] for x in chosen["scenes"])
                       + " (whole scenes through the pipeline)",
        "objective": f"{objective_name}: mean over the scenes of {OBJECTIVE_TEXT[objective_name]}",
        "search": f"{tried} settings, coordinate-wise (geoseg.training.tune_buildings)",
        "validation": {"default": summary(default), "tuned": summary(chosen)},
        "commands": commands,
    }
    write_card(card, card_path)


def coordinate_search(
    scenes: list[CachedScene], work: Path, start: BuildingPostprocess = BuildingPostprocess(),
    log: Callable[[str], None] = print, objective_name: str = "miou_f1",
    fixed: dict[str, float] | None = None,
) -> tuple[BuildingPostprocess, list[dict[str, Any]]]:
    """Land-cover cue, threshold x morphology, min area x seed ratio, seed erosion x seed ratio, distance
    split, threshold and cue again; best by the objective.

    The stages run twice: from the start as given, and with the cue held off until the last stage; the
    better end wins (their settings are scored once). Why: the search is greedy, and a cue chosen first
    is one the later stages then fit; in session 23 that path ended 3 points of objective below the
    cue-off rules it never reached (docs/models.md, "Session 23").

    ``fixed`` holds settings out of the search (e.g. ``{"landcover_threshold": 0.93}``): every candidate
    carries them. Why: a rule registered before a model's figures may keep a part of the shipped rules
    that the validation block cannot judge (docs/models.md, "After run 6")."""
    tried: dict[tuple, dict[str, Any]] = {}
    pinned = dict(fixed or {})

    def run(candidates: Iterable[BuildingPostprocess], stage: str, pins: dict[str, float]) -> BuildingPostprocess:
        best = None
        for post in candidates:
            post = replace(post, **pins)
            key = tuple(asdict(post).values())
            if key not in tried:
                t = time.perf_counter()
                tried[key] = evaluate_setting(scenes, post, work, objective_name) | {"stage": stage}
                r = tried[key]
                log(f"{stage:11s} {_fmt(post)}  obj {r['objective']:.4f}  IoU {r['pixel_iou']:.4f}  "
                    f"mIoU {r['binary_miou']:.4f}  F1 {r['polygon_f1']:.4f}  ({time.perf_counter() - t:.1f} s)")
            if best is None or tried[key]["objective"] > tried[best]["objective"]:
                best = key
        return BuildingPostprocess(**tried[best]["settings"])

    def path(pins: dict[str, float]) -> BuildingPostprocess:
        best = run([start], "default", pins)
        best = run([replace(best, landcover_threshold=c) for c in LANDCOVER_THRESHOLDS] + [best], "landcover", pins)
        best = run([replace(best, threshold=t, opening_px=o, closing_px=c) for t in THRESHOLDS for o, c in MORPHOLOGY]
                   + [best], "thr x morph", pins)
        best = run([replace(best, min_area_m2=a, seed_ratio=s) for a in MIN_AREAS for s in SEED_RATIOS] + [best],
                   "area x seed", pins)
        best = run([replace(best, seed_erosion_px=e, seed_ratio=s) for e in SEED_EROSIONS for s in SEED_RATIOS]
                   + [best], "seeds", pins)
        best = run([replace(best, split_h_px=h) for h in SPLIT_HEIGHTS] + [best], "split", pins)
        best = run([replace(best, threshold=t) for t in THRESHOLDS] + [best], "threshold", pins)
        # the last stage frees the cue (unless the caller pinned it)
        return run([replace(best, landcover_threshold=c) for c in LANDCOVER_THRESHOLDS] + [best], "landcover",
                   pinned)

    ends = [path(pinned)]
    if "landcover_threshold" not in pinned:
        ends.append(path(pinned | {"landcover_threshold": 0.0}))
    best = max(ends, key=lambda post: tried[tuple(asdict(post).values())]["objective"])
    return best, list(tried.values())


def parse_fixed(items: Iterable[str]) -> dict[str, float]:
    """``["landcover_threshold=0.93", ...]`` -> settings held out of the search; a name that is not a
    setting, a value that is not a number, or a value the rules refuse is a ValueError."""
    defaults = BuildingPostprocess().as_dict()
    fixed: dict[str, float] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or name not in defaults:
            raise ValueError(f"--fix {item!r}: expected NAME=VALUE with NAME one of {', '.join(sorted(defaults))}")
        try:
            fixed[name] = float(value)
        except ValueError:
            raise ValueError(f"--fix {item!r}: {value!r} is not a number") from None
        if isinstance(defaults[name], int):
            if not fixed[name].is_integer():
                raise ValueError(f"--fix {item!r}: {name} takes whole pixels")
            fixed[name] = int(fixed[name])
    try:
        replace(BuildingPostprocess(), **fixed)  # the rules' own checks (e.g. threshold in (0, 1))
    except ValueError as e:
        raise ValueError(f"--fix: {e}") from None
    return fixed


def _fmt(post: BuildingPostprocess) -> str:
    return (f"t={post.threshold:.2f} area={post.min_area_m2:g} seed={post.seed_ratio:g} "
            f"erode={post.seed_erosion_px} split={post.split_h_px:g} open={post.opening_px} close={post.closing_px} "
            f"lc={post.landcover_threshold:g}")


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line, ``PROG STEP: error: ... (see 'PROG STEP --help')``, as geoseg's commands
    print theirs. Why: scripts and CI logs read one line per failure (geoseg.cli)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def cache_plan(scenes: list[Path], labels: Path | None) -> list[tuple[Path, Path]]:
    """(scene, labels) of each scene to cache: the given ``--scene`` ones (with ``--labels``, else
    ``labels_beside`` each), or the shared validation blocks; refused ones raise TuningError."""
    if not scenes:
        if labels is not None:
            raise TuningError("--labels goes with --scene: the shared validation scenes have their own")
        return [(path, labels_beside(path)) for path in validation_scenes()]
    plan = []
    for path in scenes:
        if labels is None and path.is_file() and not labels_beside(path).exists():
            raise TuningError(f"no labels for {path}: give --labels (building outlines, any vector file "
                              f"geoseg eval --labels reads) or put a labels.geojson beside it")
        plan.append((path, labels if labels is not None else labels_beside(path)))
    names = [path.stem for path in scenes]
    if twice := sorted({n for n in names if names.count(n) > 1}):
        raise TuningError(f"two scenes named {twice[0]}: their caches would overwrite each other (rename one)")
    return plan


def main(argv: list[str] | None = None) -> int:
    ap = _Parser(prog="python -m geoseg.training.tune_buildings", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="step", required=True)
    c = sub.add_parser("cache", help="run the building model once per validation scene; cache probabilities")
    c.add_argument("--out", type=Path, required=True)
    c.add_argument("--scene", type=Path, action="append", default=[], metavar="PATH",
                   help="a validation scene of your own (repeatable; default: the shared data's validation blocks, "
                        "Nairobi-2 and Zanzibar-2); test scenes are refused")
    c.add_argument("--labels", type=Path, default=None, metavar="PATH",
                   help="building outlines of the --scene ones (any vector file geoseg eval --labels reads, any CRS; "
                        "default: labels.geojson beside each scene)")
    c.add_argument("--card", type=Path, default=None, help="building model card (default: the shipped one)")
    c.add_argument("--threads", type=int, default=2)
    c.add_argument("--profile", choices=("accurate", "fast"), default="accurate",
                   help="which shipped heads (the accurate ones or the students) to cache")
    s = sub.add_parser("sweep", help="score settings on the cached validation scenes; print the best")
    s.add_argument("--cache", type=Path, required=True)
    s.add_argument("--json", type=Path, default=None, help="write every scored setting here")
    s.add_argument("--objective", choices=sorted(OBJECTIVES), default="miou_f1",
                   help="; ".join(f"{k}: {v}" for k, v in OBJECTIVE_TEXT.items()))
    s.add_argument("--card", type=Path, default=None,
                   help="write the chosen setting into this model card's postprocess (and how, into its metrics)")
    s.add_argument("--only", action="append", default=[], metavar="PREFIX",
                   help="score only the cached scenes whose name starts with PREFIX (repeatable), e.g. nairobi: "
                        "the block a model never saw when it trained on the other")
    s.add_argument("--min-pixel-iou", type=float, default=None, metavar="IOU",
                   help="choose the best objective among the tried settings whose pixel IoU is at least IOU "
                        "(e.g. the model being replaced: a rule that trades pixel IoU for polygon F1 is not chosen)")
    s.add_argument("--fix", action="append", default=[], metavar="NAME=VALUE",
                   help="keep a setting out of the search (repeatable), e.g. landcover_threshold=0.93")
    args = ap.parse_args(argv)
    try:
        return _cache(args) if args.step == "cache" else _sweep(ap, args)
    # one line for the user, as geoseg's commands print theirs: a TuningError, a bad card (ModelCardError),
    # a scene the models cannot read (UnsupportedRaster), a file that cannot be read or written
    except (ValueError, OSError, rasterio.errors.RasterioError) as exc:
        print(f"{ap.prog} {args.step}: error: {exc}", file=sys.stderr)
        return 1


def _cache(args: argparse.Namespace) -> int:
    """The ``cache`` step: every scene and its labels are checked before the first one is run."""
    plan = cache_plan(args.scene, args.labels)
    for path, labels in plan:
        check_scene(path, labels)
    import torch

    torch.set_num_threads(args.threads)
    for path, labels in plan:
        t = time.perf_counter()
        scene = predict_probabilities(path, args.card, profile=args.profile, labels_path=labels)
        save_cache(scene, args.out)
        print(f"{path.name}: working grid {scene.covered.shape[1]}x{scene.covered.shape[0]}, "
              f"{time.perf_counter() - t:.1f} s")
    return 0


def _sweep(ap: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """The ``sweep`` step."""
    try:
        fixed = parse_fixed(args.fix)
    except ValueError as e:
        ap.error(str(e))
    scenes = load_cache(args.cache)
    if args.only:
        scenes = [s for s in scenes if s.name.startswith(tuple(args.only))]
        if not scenes:
            ap.error(f"--only {' '.join(args.only)}: no cached scene in {args.cache} starts with that")
    with tempfile.TemporaryDirectory(prefix="geoseg-tune-") as work:
        best, rows = coordinate_search(scenes, Path(work), objective_name=args.objective, fixed=fixed)
    default = rows[0]
    chosen = next(r for r in rows if r["settings"] == best.as_dict())
    if args.min_pixel_iou is not None:
        allowed = [r for r in rows if r["pixel_iou"] >= args.min_pixel_iou]
        if not allowed:
            ap.error(f"--min-pixel-iou {args.min_pixel_iou}: no tried setting reaches it (best "
                     f"{max(r['pixel_iou'] for r in rows):.4f})")
        chosen = max(allowed, key=lambda r: r["objective"])
        best = BuildingPostprocess(**chosen["settings"])
    print(f"validation scenes: {', '.join(s.name for s in scenes)}")
    for label, r in (("default", default), ("chosen", chosen)):
        per = "  ".join(f"{x['scene']} IoU {x['pixel_iou']:.3f} F1 {x['polygon_f1']:.3f}" for x in r["scenes"])
        print(f"{label:8s} {_fmt(BuildingPostprocess(**r['settings']))}: {args.objective} {r['objective']:.4f}, "
              f"pixel IoU {r['pixel_iou']:.4f}, binary mIoU {r['binary_miou']:.4f}, "
              f"polygon F1 {r['polygon_f1']:.4f} | {per}")
        for block, m in by_block(r, args.objective).items():
            print(f"{'':8s} {block}: {args.objective} {m['objective']:.4f}, pixel IoU {m['pixel_iou']:.4f}, "
                  f"polygon F1 {m['polygon_f1']:.4f}")
    if args.json:
        args.json.write_text(json.dumps({"objective": args.objective, "chosen": best.as_dict(),
                                         "default": default, "best": chosen,
                                         "tried": rows}, indent=1) + "\n")
    if args.card:
        write_rules(args.card, chosen, default, len(rows), args.objective, [
            "python -m geoseg.training.tune_buildings cache --out CACHE --card <this card without postprocess>",
            "python -m geoseg.training.tune_buildings sweep --cache CACHE --card <this card>"
            + (f" --objective {args.objective}" if args.objective != "miou_f1" else "")
            + "".join(f" --only {p}" for p in args.only)
            + (f" --min-pixel-iou {args.min_pixel_iou:g}" if args.min_pixel_iou is not None else "")
            + "".join(f" --fix {k}={v:g}" for k, v in fixed.items())])
        print(f"rules written into {args.card}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
