"""Whole-pipeline accuracy on the held-out areas: what the README's accuracy tables quote.

    .venv/bin/python bench/accuracy.py --what buildings --profiles accurate,fast
    .venv/bin/python bench/accuracy.py --what landcover --profiles accurate
    .venv/bin/python bench/accuracy.py --what landcover --landcover-tile 5   # recipes' tile (in-sample now)
    .venv/bin/python bench/accuracy.py --what trees          # land cover off Dubai: Zürich's trees
    .venv/bin/python bench/accuracy.py --what buildings --profiles accurate --runtime int8
    .venv/bin/python bench/accuracy.py --what buildings --profiles fast --buildings-model CANDIDATE_DIR

buildings : ``predict_scene`` (no class map) + ``evaluate_buildings`` on the validation blocks
            (Nairobi block 2 and Zanzibar block 2, z19-z21: where rules are chosen; the shipped
            models before session 9 trained on Zanzibar-2) and the test area (the 6 Kampala
            scenes, 2 blocks x 3 zooms): pixel IoU and polygon F1 per scene and mean per set.
landcover : ``predict_scene --gsd 1.1 --no-buildings`` on the 9 Dubai tile-6 images (test;
            ``--landcover-tile 5``: the tile recipes were chosen on, in-sample for the shipped
            models, which trained on tiles 1-5), with
            ``--refine none`` and ``gcn``: confusion matrices pooled over the images (mIoU over
            the 5 classes) and the mean of the per-image mIoUs.
trees     : land cover on another continent: the 4 SWISSIMAGE tiles of Zürich (0.5 m, EPSG:2056)
            with detectree's tree / non-tree masks (``rasters/detectree_swissimage``), through
            ``predict_scene --no-buildings`` with ``--refine none`` and ``gcn``. The masks know
            trees only, the models "vegetation" (grass too), so the figures are the share of tree
            pixels called vegetation, the share of non-tree pixels called vegetation, what the
            tree pixels were called otherwise, and the vegetation class's IoU against trees.

Minutes on the 2-core CPU box (buildings about 4 per profile); not part of the test suite.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from geoseg.evaluate import classmap_scores, evaluate_buildings, evaluate_classmap  # noqa: E402
from geoseg.paths import data_root  # noqa: E402
from geoseg.pipeline import PredictOptions, predict_scene  # noqa: E402
from tiles.splits import block_label, buildings_split, scene_area  # noqa: E402


#: sets a shipped model trained on: its figures there are in-sample, not validation (printed beside them)
IN_SAMPLE = {
    ("accurate", "validation zanzibar-2"): "in-sample: the accurate head's U2-Net trained on zanzibar block 2",
    ("accurate", "landcover tile 5"): "in-sample: the shipped land-cover model and GCN trained on tiles 1-5",
    ("fast", "landcover tile 5"): "in-sample: the shipped land-cover student and its GCN trained on tiles 1-5",
}


def in_sample(profile: str, name: str, own_model: bool = False) -> str:
    """`` (in-sample: ...)`` after a figure of a set the profile's shipped model trained on, else ''."""
    note = None if own_model else IN_SAMPLE.get((profile, name))
    return f" ({note})" if note else ""


def building_sets(root: Path) -> dict[str, list[Path]]:
    """Validation scenes per block and test scenes per area, as ``tiles.splits`` assigns them."""
    sets: dict[str, list[Path]] = {}
    scenes = [(*scene_area(p), p) for p in Path(root, "buildings").glob("*/*.tif")]
    # block is None for a file outside the <area>_z<zoom>_<block> pattern: sort it as ""
    for area, block, path in sorted(scenes, key=lambda s: (s[0], s[1] or "", s[2].name)):
        split = buildings_split(area, block)
        if split != "train":
            sets.setdefault(f"validation {block_label(area, block)}" if split == "val" else f"test {area}", []).append(path)
    return dict(sorted(sets.items(), key=lambda item: item[0].startswith("test")))


def predict_buildings(scene, out: Path, profile: str, runtime: str = "auto", model: Path | None = None,
                      bands: tuple[int, int, int] | None = None) -> dict:
    """``predict_scene`` as the building figures run it (no class map); returns the report.
    ``model``: a candidate building model (card or folder) instead of the shipped one of ``profile``;
    its card's ``postprocess`` rules apply, as they would once shipped. ``bands``: ``--bands``."""
    model_dirs = {"buildings": str(model)} if model else {}
    return predict_scene(scene, Path(out), PredictOptions(classmap=False, profile=profile, runtime=runtime,
                                                          model_dirs=model_dirs, bands=bands))


def score_buildings(out: Path, labels: Path) -> tuple[float, float]:
    """(pixel IoU, polygon F1) of a prediction folder, by ``geoseg.evaluate.evaluate_buildings``."""
    scores = evaluate_buildings(Path(out), labels)
    return scores["pixel"]["iou"], scores["polygon"]["f1"]


def bench_buildings(profile: str, root: Path, runtime: str = "auto", model: Path | None = None) -> None:
    """``model``: see ``predict_buildings``."""
    for name, scenes in building_sets(root).items():
        ious, f1s = [], []
        for scene in scenes:
            with tempfile.TemporaryDirectory() as out:
                predict_buildings(scene, Path(out), profile, runtime, model)
                iou, f1 = score_buildings(Path(out), scene.parent / "labels.geojson")
            ious.append(iou)
            f1s.append(f1)
            print(f"  {scene.name}: pixel IoU {ious[-1]:.4f} polygon F1 {f1s[-1]:.4f}", flush=True)
        print(f"{profile} ({runtime}) {name}: mean pixel IoU {statistics.mean(ious):.4f} polygon F1 {statistics.mean(f1s):.4f}"
              f"{in_sample(profile, name, model is not None)}", flush=True)


def bench_landcover(profile: str, root: Path, tile: int = 6) -> None:
    images = sorted((root / "landcover" / "dubai" / f"tile_{tile}").glob("image_part_*.jpg"))
    for refine in ("none", "gcn"):
        pooled, per_image = None, []
        for image in images:
            with tempfile.TemporaryDirectory() as out:
                predict_scene(image, Path(out), PredictOptions(buildings=False, gsd=1.1, refine=refine,
                                                               profile=profile))
                scores = evaluate_classmap(Path(out), image.with_name(image.stem + "_label.png"))
            cm = np.asarray(scores["confusion"])
            pooled = cm if pooled is None else pooled + cm
            per_image.append(scores["miou"])
        print(f"tile {tile}, {profile} --refine {refine}: pooled mIoU {classmap_scores(pooled)['miou']:.4f}, "
              f"mean per image {statistics.mean(per_image):.4f} {np.round(per_image, 3).tolist()}"
              f"{in_sample(profile, f'landcover tile {tile}')}", flush=True)


def bench_trees(profile: str, root: Path) -> None:
    """Land cover on Zürich's tree masks (a check of generalisation, not a tuning set)."""
    import rasterio

    folder = root / "rasters" / "detectree_swissimage"
    masks = sorted((folder / "response_img").glob("*.tif"))
    for refine in ("none", "gcn"):
        counts = np.zeros((2, 256), np.int64)  # truth (0 non-tree, 1 tree) x predicted class
        for mask in masks:
            with tempfile.TemporaryDirectory() as out:
                predict_scene(folder / "img" / mask.name, Path(out),
                              PredictOptions(buildings=False, refine=refine, profile=profile))
                with rasterio.open(Path(out) / "classmap.tif") as cm, rasterio.open(mask) as truth:
                    pred, tree = cm.read(1), truth.read(1)
                    names = {int(k): v for k, v in json.loads(cm.tags()["classes"]).items()}
            for k in (0, 1):
                counts[k] += np.bincount(pred[tree == k], minlength=256)
        veg = next(k for k, v in names.items() if v == "vegetation")
        trees, others = counts[1].sum(), counts[0].sum()
        iou = counts[1, veg] / (trees + counts[0, veg])
        called = ", ".join(f"{names[k]} {counts[1, k] / trees:.3f}" for k in sorted(names) if k and k != veg)
        print(f"{profile} --refine {refine}: {len(masks)} tiles, {trees} tree / {others} other pixels; tree pixels "
              f"called vegetation {counts[1, veg] / trees:.3f}, other pixels called vegetation "
              f"{counts[0, veg] / others:.3f}, vegetation IoU vs trees {iou:.3f}; trees otherwise called: {called}",
              flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--what", default="buildings,landcover")
    parser.add_argument("--profiles", default="accurate,fast")
    parser.add_argument("--runtime", default="auto", help="buildings: auto | onnx | int8 (PredictOptions.runtime)")
    parser.add_argument("--buildings-model", type=Path, default=None,
                        help="buildings: score this model card or folder instead of the profile's shipped one")
    parser.add_argument("--landcover-tile", type=int, default=6,
                        help="landcover: the Dubai tile scored (6: test, the default; 5: the tile recipes were chosen on, "
                             "in-sample for the shipped models, which trained on tiles 1-5)")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    root = data_root()
    for profile in args.profiles.split(","):
        if "buildings" in args.what:
            bench_buildings(profile, root, args.runtime, args.buildings_model)
        if "landcover" in args.what:
            bench_landcover(profile, root, args.landcover_tile)
        if "trees" in args.what:
            bench_trees(profile, root)


if __name__ == "__main__":
    main()
